#!/usr/bin/env bash
# Launcher tests that need root and Debian packages (tests/launch.rs has the rest):
#   1. two "hosts" as network namespaces joined by a veth pair:
#      rankrun --hosts A:2,B:2 --rsh 'ip netns exec {host}' -n 4, the allreduce crossing the veth;
#   2. a real single-node Slurm (munge, slurmctld, slurmd on localhost): srun -n 4;
#   3. Open MPI: mpirun -n 4 -x OXCCL_ROOT=...
# Installs its packages with apt-get, creates everything under a temporary directory and in
# namespaces named after its PID, and removes all of it (daemons stopped by PID) on exit.
#   ci/launch-tests.sh            (as root; prints "N passed, M failed")
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "launch-tests: needs root (network namespaces, Slurm daemons); not run"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
need=()
for p in iproute2 slurm-wlm munge openmpi-bin; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "== apt-get install ${need[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

echo "== build rankrun and the example (release)"
cargo build --release --locked --bin rankrun --example collectives_check
RANKRUN=$PWD/target/release/rankrun
CHECK=$PWD/target/release/examples/collectives_check

D=$(mktemp -d /tmp/oxccl-launch.XXXXXX)
NS_A=oxl$$a
NS_B=oxl$$b
PIDS=()
passed=0
failed=0

cleanup() {
    # Daemons this script started, by PID: let their children (slurmstepd) finish first,
    # then SIGTERM, then SIGKILL after a bounded wait.
    for _ in $(seq 50); do
        busy=0
        for p in "${PIDS[@]}"; do pgrep -P "$p" >/dev/null && busy=1; done
        [ $busy = 0 ] && break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do
        alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$NS_A" 2>/dev/null || true
    ip netns del "$NS_B" 2>/dev/null || true
    rm -rf "$D"
}
trap cleanup EXIT

# Functions run by check() are in an `if` condition, where `set -e` does not apply: each
# step that must pass says `|| return 1`.
check() { # NAME COMMAND... : runs it, counts it, shows its output
    local name=$1
    shift
    if "$@" >"$D/out" 2>&1; then
        echo "ok: $name"
        sed 's/^/    /' "$D/out" | tail -8
        passed=$((passed + 1))
    else
        echo "FAILED: $name"
        sed 's/^/    /' "$D/out" | tail -40
        failed=$((failed + 1))
    fi
}

# --- 1. network namespaces ---------------------------------------------------------------
# 10.213.77.0/24 lives only inside the two namespaces this script creates.
ns_setup() {
    ip netns add "$NS_A"
    ip netns add "$NS_B"
    ip link add "${NS_A}v" type veth peer name "${NS_B}v"
    ip link set "${NS_A}v" netns "$NS_A"
    ip link set "${NS_B}v" netns "$NS_B"
    ip -n "$NS_A" addr add 10.213.77.1/24 dev "${NS_A}v"
    ip -n "$NS_B" addr add 10.213.77.2/24 dev "${NS_B}v"
    for n in "$NS_A" "$NS_B"; do ip -n "$n" link set lo up; done
    ip -n "$NS_A" link set "${NS_A}v" up
    ip -n "$NS_B" link set "${NS_B}v" up
}

veth_rx_bytes() {
    ip netns exec "$NS_B" cat "/sys/class/net/${NS_B}v/statistics/rx_bytes"
}

netns_allreduce() {
    local before after count=1000000
    before=$(veth_rx_bytes)
    # rankrun runs in A and serves the store on A's veth address; ranks 0,1 start in A and
    # ranks 2,3 in B, all through the agent.
    ip netns exec "$NS_A" timeout 120 "$RANKRUN" --hosts "$NS_A:2,$NS_B:2" \
        --rsh 'ip netns exec {host}' -n 4 --tag-output --timeout 100 \
        "$CHECK" --count $count --iters 2 | tee "$D/ns.out" || return 1
    grep -q '^\[0\] collectives_check: 4 ranks OK' "$D/ns.out" || return 1
    after=$(veth_rx_bytes)
    echo "bytes received over the veth by $NS_B: $((after - before))"
    # Each iteration moves at least one 4 MB float vector into B for the allreduce alone.
    [ $((after - before)) -gt $((count * 4)) ]
}

netns_rank_failure() {
    # A rank in B exits 3: rankrun names it and its host and passes the status on.
    set +e
    ip netns exec "$NS_A" timeout 60 "$RANKRUN" --hosts "$NS_A:2,$NS_B:2" \
        --rsh 'ip netns exec {host}' -n 4 "$CHECK" --exit 3:3 2>"$D/ns.err"
    local rc=$?
    set -e
    cat "$D/ns.err"
    [ $rc = 3 ] && grep -q "rank 3 (pid [0-9]* on $NS_B) exited with status 3" "$D/ns.err"
}

echo "== network namespaces $NS_A, $NS_B joined by a veth pair"
ns_setup
check "rankrun --rsh 'ip netns exec {host}' -n 4 allreduce across the veth" netns_allreduce
check "a failing rank in a namespace is named with its host" netns_rank_failure

# --- 2. single-node Slurm --------------------------------------------------------------
# Two free consecutive ports below the kernel's ephemeral range, so that no outgoing
# connection of another test can take them between this check and slurmctld's bind.
free_port_pair() {
    python3 - <<'PY'
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(200):
    p = random.randrange(20000, max(20002, low - 2))
    try:
        for q in (p, p + 1):
            s = socket.socket()
            s.bind(("0.0.0.0", q))
            s.close()
    except OSError:
        continue
    print(p)
    break
PY
}

slurm_setup() {
    local host
    host=$(hostname -s)
    mkdir -p "$D/munge" "$D/slurm/state" "$D/slurm/spool"
    chmod 700 "$D/munge"
    head -c 1024 /dev/urandom >"$D/munge/munge.key"
    chmod 400 "$D/munge/munge.key"
    munged -F --force --socket="$D/munge/sock" --key-file="$D/munge/munge.key" \
        --pid-file="$D/munge/pid" --log-file="$D/munge/log" --seed-file="$D/munge/seed" &
    PIDS+=($!)
    local port
    port=$(free_port_pair 2>/dev/null || true)
    [ -n "$port" ] || port=$((20000 + $$ % 12000))
    cat >"$D/slurm.conf" <<EOF
ClusterName=oxccl
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$D/munge/sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$D/slurm/state
SlurmdSpoolDir=$D/slurm/spool
SlurmctldPidFile=$D/slurm/slurmctld.pid
SlurmdPidFile=$D/slurm/slurmd.pid
SlurmctldLogFile=$D/slurm/slurmctld.log
SlurmdLogFile=$D/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/linear
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SlurmdTimeout=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=ci Nodes=ALL Default=YES MaxTime=10 State=UP OverSubscribe=YES
EOF
    export SLURM_CONF=$D/slurm.conf
    for _ in $(seq 50); do [ -S "$D/munge/sock" ] && break; sleep 0.1; done
    slurmctld -D -i -f "$SLURM_CONF" >"$D/slurm/slurmctld.out" 2>&1 &
    local ctld=$!
    PIDS+=($ctld)
    slurmd -D -f "$SLURM_CONF" >"$D/slurm/slurmd.out" 2>&1 &
    PIDS+=($!)
    # At most 60 s in all: sinfo waits on an absent controller, so each call is bounded too,
    # and a controller that exited (its port taken, say) ends the wait at once.
    local deadline=$((SECONDS + 60))
    while [ $SECONDS -lt $deadline ] && kill -0 "$ctld" 2>/dev/null; do
        if timeout 5 sinfo -h -o %T 2>/dev/null | grep -q idle; then return 0; fi
        sleep 0.5
    done
    echo "Slurm did not come up:"
    sinfo 2>&1 || true
    tail -20 "$D/slurm/slurmctld.log" "$D/slurm/slurmd.log" "$D/munge/log" 2>/dev/null || true
    return 1
}

slurm_srun() {
    # No OXCCL_ROOT: rank 0 serves the store on the step's first node, at the port derived
    # from the job and step ids. -O: four tasks may share the machine's cores.
    timeout 120 srun -n 4 -O --time=2 --kill-on-bad-exit=1 \
        "$CHECK" --count 100000 | tee "$D/srun.out" || return 1
    grep -q 'collectives_check: 4 ranks OK' "$D/srun.out" || return 1
    grep -q 'started by srun, local size 4' "$D/srun.out"
}

echo "== single-node Slurm ($(hostname -s))"
if slurm_setup >"$D/slurm-setup.out" 2>&1; then
    check "srun -n 4 collectives_check" slurm_srun
else
    echo "FAILED: starting Slurm"
    sed 's/^/    /' "$D/slurm-setup.out" | tail -40
    failed=$((failed + 1))
fi

# --- 3. Open MPI -----------------------------------------------------------------------
mpirun_check() {
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo $((30000 + $$ % 2000)))
    timeout 120 mpirun --allow-run-as-root --oversubscribe -n 4 \
        -x OXCCL_ROOT="127.0.0.1:$port" "$CHECK" --count 100000 | tee "$D/mpirun.out" || return 1
    grep -q 'collectives_check: 4 ranks OK' "$D/mpirun.out" || return 1
    grep -q 'started by mpirun, local size 4' "$D/mpirun.out"
}

echo "== Open MPI"
check "mpirun -n 4 -x OXCCL_ROOT=... collectives_check" mpirun_check

echo "launch-tests: $passed passed, $failed failed"
[ "$failed" = 0 ]
