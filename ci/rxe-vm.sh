#!/usr/bin/env bash
# ci/rxe-vm.sh SCRIPT [ARGS...]
#
# Runs SCRIPT (with bash, as root, in the current directory, with the current environment)
# inside a throw-away VM that has two SoftRoCE devices, and exits with its status. The host
# kernel needs no RDMA support: the VM boots Debian's own kernel package (which ships
# rdma_rxe) under qemu, with the host's / as its root file system (9p, read-only, under a
# tmpfs overlay that is discarded), so host-built binaries run inside unchanged.
#
# In the guest:  veth0 10.99.0.1 <-> veth1 10.99.0.2, rxe0 on veth0, rxe1 on veth1.
# Exit status:   SCRIPT's; 125 when the VM itself failed (no boot, no rxe, timeout).
# Guest output:  on the serial console, streamed to stdout (kernel errors included).
#
# Host packages (Debian): qemu-system-x86 busybox-static cpio kmod xz-utils binutils
#   rdma-core ibverbs-providers (and perftest for ib_write_bw); the kernel .deb is fetched
#   with `apt-get download` and cached.
# Knobs: RXE_VM_DIR (cache, default /tmp/oxccl-rxe-vm), RXE_VM_TIMEOUT (seconds, 1800),
#   RXE_VM_MEM (2G), RXE_VM_SMP (2), RXE_VM_KERNEL (package, default: what
#   linux-image-amd64 depends on).
#
# Pitfalls this handles (each cost a failed boot once):
# * the kernel .deb has no modules.dep: run depmod on the unpacked tree;
# * rxe computes its ICRC with crc32: load crc32_generic/crc32-pclmul, or rdma link add fails;
# * two rxe devices on one host: 10.99.0.1 -> 10.99.0.2 would go through lo, and the RoCE
#   path's netdev must be the GID's, so policy routing sends it over the veth pair
#   (and accept_local / rp_filter let the looped-back packets in);
# * rxe only works in the initial network namespace;
# * the RoCE v2 IPv4 GID appears a moment after the address: wait for it;
# * a veth hands each packet to the backlog of the CPU that sent it, and rxe sends one
#   queue pair's packets from whichever CPU runs its task: with 2 vCPUs a flow arrives out
#   of order, every reordering costs a go-back-N retry, and 7 in a row without an ACK end
#   the queue pair ("transport retry counter exceeded": 30 retries per bench run, one CI
#   failure). RPS on the veths steers each flow to one CPU, in order, as a real network
#   delivers it: no retries left;
# * libfabric's verbs provider connects through rdma_cm: rdma_ucm gives /dev/infiniband/rdma_cm;
# * booting the uncompressed vmlinux through its PVH entry saves seconds of TCG time.
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: $0 SCRIPT [ARGS...]" >&2; exit 2; }
say() { echo "[rxe-vm] $*" >&2; }
CACHE=${RXE_VM_DIR:-/tmp/oxccl-rxe-vm}
TIMEOUT=${RXE_VM_TIMEOUT:-1800}
WANT_MODULES="crc32_generic crc32-pclmul virtio_pci 9pnet_virtio 9p overlay veth rdma_rxe rdma_ucm sch_netem"
mkdir -p "$CACHE"

kernel_package() {
    if [ -n "${RXE_VM_KERNEL:-}" ]; then echo "$RXE_VM_KERNEL"; return; fi
    local p
    p=$(apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9].*-amd64$/ { print $2; exit }')
    if [ -z "$p" ] && [ "$(id -u)" = 0 ]; then   # a fresh machine without package lists
        apt-get update -qq >&2
        p=$(apt-cache depends linux-image-amd64 2>/dev/null |
            awk '/Depends: linux-image-[0-9].*-amd64$/ { print $2; exit }')
    fi
    echo "$p"
}

# The guest's first program: mount the host's root and hand over to stage 2 inside it.
guest_init() {
    cat <<'EOF'
#!/bin/busybox sh
B=/bin/busybox
$B mkdir -p /proc /sys /dev /host /rw /root
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
note() { $B echo "[rxe-vm init] $*" > /dev/ttyS0; }
halt() { note "$*"; $B poweroff -f; }
for m in $($B cat /modules.order); do $B insmod "/modules/$m" || note "insmod $m failed"; done
n=0
until [ -e /sys/bus/virtio/drivers/9pnet_virtio ] && [ "$($B ls /sys/bus/virtio/drivers/9pnet_virtio | $B grep -c virtio)" -ge 2 ]; do
    n=$((n + 1)); [ $n -lt 400 ] || halt "no 9p devices"; $B sleep 0.05
done
$B mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostfs /host || halt "mount hostfs"
$B mount -t tmpfs -o mode=0755 tmpfs /rw || halt "tmpfs"
$B mkdir -p /rw/up /rw/work
$B mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/up,workdir=/rw/work /root || halt "overlay"
for d in proc sys dev run; do $B mkdir -p /root/$d; done
$B mount -t proc proc /root/proc
$B mount -t sysfs sysfs /root/sys
$B mount -t devtmpfs devtmpfs /root/dev
$B mkdir -p /root/dev/shm /root/dev/pts
$B ln -sf /proc/self/fd /root/dev/fd
$B ln -sf /proc/self/fd/0 /root/dev/stdin
$B ln -sf /proc/self/fd/1 /root/dev/stdout
$B ln -sf /proc/self/fd/2 /root/dev/stderr
$B mount -t tmpfs -o mode=1777 tmpfs /root/dev/shm
$B mount -t devpts devpts /root/dev/pts
$B mount -t tmpfs -o mode=0755 tmpfs /root/run
$B mkdir -p /root/run/oxvm
$B mount -t 9p -o trans=virtio,version=9p2000.L,cache=none,msize=512000 oxrun /root/run/oxvm || halt "mount oxrun"
$B chroot /root /bin/bash /run/oxvm/stage2.sh < /dev/null > /dev/ttyS0 2>&1
$B sync
$B poweroff -f
EOF
}

# Unpacks the kernel package and builds the initramfs (busybox, the modules, init);
# cached by package and content.
prepare_kernel() {
    local pkg deb tree kver mods key tmp
    pkg=$(kernel_package)
    [ -n "$pkg" ] || { say "cannot tell which kernel package to use (apt-cache depends linux-image-amd64)"; return 1; }
    key=$( { echo "$pkg $WANT_MODULES"; guest_init; } | md5sum | cut -c1-10)
    KDIR="$CACHE/$pkg-$key"
    [ -s "$KDIR/initramfs.gz" ] && return 0
    for t in busybox cpio depmod qemu-system-x86_64 xz; do
        command -v "$t" >/dev/null || { say "missing host tool: $t"; return 1; }
    done
    deb=$(ls "$CACHE"/"$pkg"_*.deb 2>/dev/null | head -1)
    if [ -z "$deb" ]; then
        (cd "$CACHE" && apt-get download "$pkg" >&2) || { say "apt-get download $pkg failed"; return 1; }
        deb=$(ls "$CACHE"/"$pkg"_*.deb | head -1)
    fi
    tmp=$(mktemp -d "$CACHE/build.XXXXXX")
    tree="$tmp/pkg"
    dpkg-deb -x "$deb" "$tree" || return 1
    kver=$(ls "$tree/lib/modules")
    depmod -b "$tree" "$kver" || return 1
    mods="$tree/lib/modules/$kver"
    # Modules in dependency order: each after everything it needs.
    declare -A deps=() path=() seen=()
    local line name file
    while IFS= read -r line; do
        file=${line%%:*}; name=${file##*/}; name=${name%%.ko*}; name=${name//-/_}
        path[$name]=$file; deps[$name]=${line#*:}
    done < "$mods/modules.dep"
    : > "$tmp/order"
    visit() {
        local n=${1//-/_} d dn
        [ -n "${seen[$n]:-}" ] && return 0
        [ -n "${path[$n]:-}" ] || { say "kernel $kver has no module $1"; return 1; }
        seen[$n]=1
        for d in ${deps[$n]}; do dn=${d##*/}; visit "${dn%%.ko*}" || return 1; done
        echo "${path[$n]}" >> "$tmp/order"
    }
    for name in $WANT_MODULES; do visit "$name" || return 1; done
    mkdir -p "$tmp/ird/bin" "$tmp/ird/modules"
    cp "$(command -v busybox)" "$tmp/ird/bin/busybox"
    while read -r file; do cp "$mods/$file" "$tmp/ird/modules/"; basename "$file"; done \
        < "$tmp/order" > "$tmp/ird/modules.order"
    guest_init > "$tmp/ird/init"
    chmod 755 "$tmp/ird/init"
    mkdir -p "$tmp/out"
    (cd "$tmp/ird" && find . | cpio -o -H newc --quiet | gzip -1) > "$tmp/out/initramfs.gz" || return 1
    cp "$tree/boot/vmlinuz-$kver" "$tmp/out/vmlinuz"
    # The bzImage holds an xz-compressed ELF kernel; booted directly via its PVH note, it
    # skips the real-mode setup and the decompressor.
    local at
    at=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$tmp/out/vmlinuz" | head -1 | cut -d: -f1)
    if [ -n "$at" ]; then
        tail -c +$((at + 1)) "$tmp/out/vmlinuz" | xz -dc --single-stream > "$tmp/out/vmlinux" 2>/dev/null
        readelf -n "$tmp/out/vmlinux" 2>/dev/null | grep -q 'Xen.*0x00000012' || rm -f "$tmp/out/vmlinux"
    fi
    rm -rf "$KDIR"
    mv "$tmp/out" "$KDIR"
    rm -rf "$tmp"
    say "prepared kernel $kver in $KDIR"
}

exec 8> "$CACHE/.lock"
flock 8
prepare_kernel || { say "kernel preparation failed"; exit 125; }
flock -u 8

RUN=$(mktemp -d "$CACHE/run.XXXXXX")
QEMU=
cleanup() { [ -n "$QEMU" ] && kill "$QEMU" 2>/dev/null; rm -rf "$RUN"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# What stage 2 runs: the caller's environment, directory and command.
env -0 > "$RUN/env"
printf '%s\0' "$PWD" "$@" > "$RUN/argv"

cat > "$RUN/stage2.sh" <<'EOF'
# Stage 2, as root inside the host's file system: network, SoftRoCE, then the command.
R=/run/oxvm
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
stty -F /dev/ttyS0 -opost 2>/dev/null
fail() { echo "[rxe-vm] $*"; echo 125 > $R/rc; exit 0; }
ip link set lo up
ip link add veth0 type veth peer name veth1 || fail "veth"
ip addr add 10.99.0.1/24 dev veth0
ip addr add 10.99.0.2/24 dev veth1
ip link set veth0 up
ip link set veth1 up
# Both addresses are local, so the kernel would deliver 0.1 -> 0.2 through lo; rxe wants
# the route's netdev to be the GID's. Route each direction over its veth instead, and
# move the local table below these rules.
ip route add 10.99.0.2/32 dev veth0 table 100
ip route add 10.99.0.1/32 dev veth1 table 101
ip rule add pref 10 iif lo from 10.99.0.1 to 10.99.0.2 lookup 100
ip rule add pref 11 iif lo from 10.99.0.2 to 10.99.0.1 lookup 101
ip rule add pref 1000 lookup local
ip rule del pref 0 lookup local
for i in all default veth0 veth1; do
    echo 1 > /proc/sys/net/ipv4/conf/$i/accept_local
    echo 0 > /proc/sys/net/ipv4/conf/$i/rp_filter
done
# One CPU per flow (RPS over all CPUs), so no queue pair sees its packets reordered.
cpus=$(printf '%x' $(( (1 << $(nproc)) - 1 )))
for v in veth0 veth1; do echo "$cpus" > /sys/class/net/$v/queues/rx-0/rps_cpus; done
rdma link add rxe0 type rxe netdev veth0 || fail "rdma link add rxe0"
rdma link add rxe1 type rxe netdev veth1 || fail "rdma link add rxe1"
for _ in $(seq 200); do
    g0=$(cat /sys/class/infiniband/rxe0/ports/1/gids/1 2>/dev/null)
    g1=$(cat /sys/class/infiniband/rxe1/ports/1/gids/1 2>/dev/null)
    case "$g0$g1" in *ffff:0a63:0001*ffff:0a63:0002*) break;; esac
    sleep 0.05
done
case "$g0$g1" in *ffff:0a63:0001*ffff:0a63:0002*) ;; *) fail "RoCE v2 GIDs did not appear";; esac
while IFS= read -r -d '' kv; do
    case "$kv" in PWD=*|OLDPWD=*|SHLVL=*|_=*|TMPDIR=*) ;; *) export "$kv";; esac
done < $R/env
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
mapfile -d '' argv < $R/argv
cd "${argv[0]}" || { echo 126 > $R/rc; exit 0; }
echo "[rxe-vm] up after $(cut -d' ' -f1 /proc/uptime)s: $(ls /sys/class/infiniband | tr '\n' ' ')"
bash "${argv[@]:1}" < /dev/null
echo $? > $R/rc
EOF

KIMG=$KDIR/vmlinuz
[ -f "$KDIR/vmlinux" ] && KIMG=$KDIR/vmlinux
T0=$(date +%s)
timeout -k 10 "$TIMEOUT" qemu-system-x86_64 \
    -accel tcg,thread=multi -cpu max -machine pc \
    -m "${RXE_VM_MEM:-2G}" -smp "${RXE_VM_SMP:-2}" \
    -nodefaults -no-user-config -display none -vga none -nic none -no-reboot \
    -chardev stdio,id=con,signal=off -serial chardev:con \
    -fsdev local,id=hostfs,path=/,security_model=none,readonly=on,multidevs=remap \
    -device virtio-9p-pci,fsdev=hostfs,mount_tag=hostfs \
    -fsdev local,id=oxrun,path="$RUN",security_model=none \
    -device virtio-9p-pci,fsdev=oxrun,mount_tag=oxrun \
    -kernel "$KIMG" -initrd "$KDIR/initramfs.gz" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 oops=panic mitigations=off tsc=reliable" \
    < /dev/null &
QEMU=$!
wait "$QEMU"
QRC=$?
QEMU=
[ "$QRC" = 124 ] && say "timed out after ${TIMEOUT}s"
RC=125
[ -s "$RUN/rc" ] && RC=$(cat "$RUN/rc")
say "exit $RC after $(( $(date +%s) - T0 ))s (qemu status $QRC)"
exit "$RC"
