#!/usr/bin/env bash
# One process per rank (rankrun) on the backends without a VM: libfabric's tcp (tcp;ofi_rxm)
# and shm providers through the fabric backend, and oxccl's own shm backend:
#   1. collectives_check (allreduce, allgather, broadcast; exact results) at 2, 3, 4 ranks
#      (native shm: 1, 2, 3, 4, 8);
#   2. a rank SIGKILLed mid-allreduce: rankrun ends within 5 s, naming it, and the
#      survivors' own errors name rank 2, and the killed rank's shm region is removed (native
#      shm: /dev/shm holds as many entries after as before; its regions are unnamed memfds).
#      (A shm survivor stuck on a lock the killed rank held says so itself and ends with
#      status 70: its last line is the library's "oxccl: ..." rather than the example's.)
# libfabric1 comes from ci/packages.sh; without it the fabric runs skip.
#   ci/fabric-tests.sh            (prints "fabric-tests: N passed, M failed, K skipped")
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/lib.sh

BACKENDS="fabric:tcp fabric:shm shm:"
if ! ldconfig -p | grep -q 'libfabric\.so\.1 '; then
    skip "the fabric backend's processes" "libfabric.so.1 is not installed (ci/packages.sh)"
    BACKENDS="shm:"
fi

echo "== build rankrun and the example (release)"
cargo build --release --locked --bin rankrun --example collectives_check
RANKRUN=$PWD/target/release/rankrun
CHECK=$PWD/target/release/examples/collectives_check
D=$(mktemp -d /tmp/oxccl-fabric.XXXXXX)
JOB=
cleanup() {
    if [ -n "$JOB" ]; then kill "$JOB" 2>/dev/null || true; fi
    rm -rf "$D"
}
trap cleanup EXIT

export OXCCL_TIMEOUT=30
shm_entries() { ls /dev/shm 2>/dev/null | wc -l; }
for backend in $BACKENDS; do
    export OXCCL_TRANSPORT=${backend%%:*}
    # The fabric runs test libfabric itself: no shared memory beside it (OXCCL_SHM).
    export OXCCL_SHM=$([ "$OXCCL_TRANSPORT" = fabric ] && echo 0 || echo 1)
    prov=${backend#*:}
    what="$OXCCL_TRANSPORT${prov:+($prov)}"
    counts="2 3 4"
    if [ -z "$prov" ]; then counts="1 2 3 4 8"; fi
    for n in $counts; do
        name="$what collectives_check, $n processes"
        if OXCCL_FABRIC_PROVIDER=$prov timeout 120 "$RANKRUN" -n "$n" "$CHECK" \
            --count 70000 --iters 3 >"$D/out" 2>&1 && grep -q "$n ranks OK" "$D/out"; then
            ok "$name"
        else
            cat "$D/out"
            bad "$name"
        fi
    done

    name="$what: rank 2 SIGKILLed mid-allreduce"
    before=$(shm_entries)
    # --linger 6: the survivors get time to notice and report the death themselves on a
    # loaded machine (twice, with other jobs busy on both cores, shm survivors needed more
    # than 3 s) before rankrun stops them; they normally end within 0.2 s.
    OXCCL_FABRIC_PROVIDER=$prov "$RANKRUN" -n 4 --linger 6 --tag-output "$CHECK" --loop 120 \
        --count 100000 >"$D/kill.out" 2>"$D/kill.err" &
    JOB=$!
    for _ in $(seq 300); do
        [ "$(grep -o looping "$D/kill.out" | wc -l)" -ge 4 ] && break
        sleep 0.1
    done
    pid=$(sed -n 's/^\[2\] rank 2 pid \([0-9]*\) looping.*/\1/p' "$D/kill.out")
    if [ -z "$pid" ]; then
        cat "$D/kill.out" "$D/kill.err"
        bad "$name (ranks never looped)"
        kill "$JOB" 2>/dev/null || true
        JOB=
        continue
    fi
    t0=$(date +%s.%N)
    kill -9 "$pid"
    for _ in $(seq 300); do kill -0 "$JOB" 2>/dev/null || break; sleep 0.1; done
    t1=$(date +%s.%N)
    if kill -0 "$JOB" 2>/dev/null; then
        kill "$JOB" 2>/dev/null || true
        bad "$name (rankrun still running 30 s after the kill)"
        JOB=
        continue
    fi
    wait "$JOB" || true
    JOB=
    took=$(echo "$t1 - $t0" | bc)
    named=1
    for r in 1 3; do
        grep "^\[$r\] \(collectives_check\|oxccl\):" "$D/kill.err" | grep -q "rank 2" || named=0
    done
    # rankrun removes the shm region a killed rank could not (16 MiB of memory each).
    leftover=$(ls /dev/shm 2>/dev/null | grep -c "^$pid:" || true)
    if [ -z "$prov" ] && [ "$(shm_entries)" != "$before" ]; then
        leftover="$(( $(shm_entries) - before )) new in /dev/shm"
    fi
    if [ "$(echo "$took < 8" | bc)" = 1 ] && [ $named = 1 ] && [ "$leftover" = 0 ] &&
        grep -q "rank 2 (pid $pid on localhost) was killed by signal 9" "$D/kill.err"; then
        ok "$name (ended after ${took}s)"
        grep "\(collectives_check\|oxccl\):" "$D/kill.err" | sed 's/^/    /'
    else
        cat "$D/kill.err"
        bad "$name (ended after ${took}s; survivors named rank 2: $named; shm regions left: $leftover)"
    fi
done

summary fabric-tests
