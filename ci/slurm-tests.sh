#!/usr/bin/env bash
# The Slurm launcher test, which needs root and daemons of its own (tests/launch.rs and
# tests/launch/rooted.rs have the rest, network namespaces and Open MPI included): a real
# single-node Slurm (munge, slurmctld, slurmd on localhost) runs srun -n 4 collectives_check,
# rank 0 serving the store at the port derived from the job and step ids. Creates
# everything under a temporary directory and removes it (daemons stopped by PID) on exit.
# The packages come from ci/packages.sh.
#   ci/slurm-tests.sh            (as root; prints "slurm-tests: N passed, M failed, K skipped")
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/lib.sh

if [ "$(id -u)" != 0 ] || ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    skip "srun -n 4 collectives_check" "needs root and slurm-wlm, munge (ci/packages.sh)"
    summary slurm-tests
    exit
fi

echo "== build the example (release)"
cargo build --release --locked --example collectives_check
CHECK=$PWD/target/release/examples/collectives_check

D=$(mktemp -d /tmp/oxccl-slurm.XXXXXX)
PIDS=()

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
    rm -rf "$D"
}
trap cleanup EXIT

# --- single-node Slurm --------------------------------------------------------------
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
    bad "starting Slurm"
    sed 's/^/    /' "$D/slurm-setup.out" | tail -40
fi

summary slurm-tests
