#!/usr/bin/env bash
# Runs inside the SoftRoCE VM of ci/rxe-vm.sh (called by ci/verbs.sh):
#   ci/verbs-guest.sh TEST_BINARY PERF_BINARY RANKRUN COLLECTIVES_CHECK [BENCH]
# 1. the verbs test suite (tests/verbs.rs, every test, one at a time);
# 2. the fabric backend on libfabric's verbs provider (verbs;ofi_rxm): collectives_check
#    at 2 and 3 processes under rankrun, rank r on rxe(r % 2), and one oxccl-perf
#    allreduce line at 2 processes (its times printed); any failure fails the run;
# 3. the benchmark, in this same boot: ib_write_bw from rxe1 to rxe0 (one RC QP, RDMA
#    write), and oxccl-perf's 2-rank float allreduce over verbs (rank 0 on rxe0, rank 1
#    on rxe1), at 1, 4 and 16 MiB, alternating, VERBS_BENCH_ROUNDS times (default 3);
#    the medians, and oxccl's bus bandwidth as a fraction of ib_write_bw's bandwidth.
#    Under TCG throughput is tiny and noisy: only ratios measured side by side mean
#    anything. ib_write_bw -b (both directions at once, 4 MiB) is shown too: software
#    RoCE is CPU-bound, so both directions together get about what one gets alone, and an
#    allreduce moves data both ways.
# 4. `cargo bench --bench collectives` (BENCH, its executable) over verbs: 2 ranks on rxe0
#    and rxe1, allreduce, allgather, broadcast and reduce-scatter at 8 B to 4 MiB.
# Checks are counted by ci/lib.sh; the last lines are the medians and
# "verbs-guest: N passed, M failed, K skipped". Exit status: non-zero when the tests,
# oxccl-perf or the bench failed (a wrong result fails); the ratio is reported.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
# Everything here tests the RDMA paths: no shared memory beside them (OXCCL_SHM).
export OXCCL_SHM=0
tests=$1 perf=$2 rankrun=$3 check=$4 bench=${5:-}
rounds=${VERBS_BENCH_ROUNDS:-3}
echo "== verbs tests (SoftRoCE)"
t0=$(date +%s)
if RUST_BACKTRACE=1 "$tests" --include-ignored --test-threads 1; then
    ok "the verbs test suite (tests/verbs.rs, the conformance suite on verbs included)"
else
    bad "the verbs test suite"
fi
echo "== verbs tests took $(( $(date +%s) - t0 ))s"

echo "== OXCCL_DEBUG=INFO of a 2-process verbs job (rank r on rxe(r % 2))"
if OXCCL_TRANSPORT=verbs OXCCL_DEBUG=INFO OXCCL_TIMEOUT=60 timeout 120 "$rankrun" -n 2 \
    --root 10.99.0.1 bash -c 'OXCCL_SOCKET_IFNAME=veth$((OXCCL_RANK % 2)) exec "$0" "$@"' \
    "$check" --count 1000 --iters 1 > /tmp/debug.log 2>&1 &&
    grep -q "2 ranks OK" /tmp/debug.log && grep -q "oxccl INFO NET verbs: device" /tmp/debug.log &&
    grep -q "oxccl INFO INIT rank 1 of 2: transport verbs" /tmp/debug.log; then
    grep "oxccl INFO" /tmp/debug.log | sed 's/^/    /'
    ok "OXCCL_DEBUG=INFO shows the version, the verbs devices (GID index, MTU) and the ring"
else
    cat /tmp/debug.log
    bad "OXCCL_DEBUG=INFO of a verbs job"
fi

echo "== fabric backend on verbs;ofi_rxm (libfabric $(fi_info --version | sed -n 's/^libfabric: //p'))"
t0=$(date +%s)
# fabric_job N PROGRAM ARGS...: N processes, rank r bound to veth(r % 2), that is rxe(r % 2).
# rxm asks for a completion queue of 256 entries per FI_UNIVERSE_SIZE (default 1024);
# SoftRoCE allows 32767.
fabric_job() {
    local n=$1
    shift
    OXCCL_TRANSPORT=fabric OXCCL_FABRIC_PROVIDER=verbs OXCCL_TIMEOUT=60 FI_UNIVERSE_SIZE=64 \
        timeout 300 "$rankrun" -n "$n" --root 10.99.0.1 \
        bash -c 'OXCCL_SOCKET_IFNAME=veth$((OXCCL_RANK % 2)) exec "$0" "$@"' "$@"
}
for n in 2 3; do
    if fabric_job "$n" "$check" --count 70000 --iters 3 > /tmp/fabric.log 2>&1 &&
        grep -q "$n ranks OK" /tmp/fabric.log; then
        ok "fabric(verbs) collectives_check, $n processes"
    else
        cat /tmp/fabric.log
        bad "fabric(verbs) collectives_check, $n processes"
    fi
done
if fabric_job 2 "$perf" --op allreduce -b 1M -e 4M -f 4 -w 1 -n 2 > /tmp/fabric.log 2>&1; then
    # size, out-of-place time (6), in-place time (10); busbw = size / time for 2 ranks
    awk '$1 ~ /^[0-9]+$/ && $NF == "allreduce" {
        t = ($6 < $10) ? $6 : $10
        printf "fabric(verbs) allreduce, 2 processes: %d MiB in %.0f us (in place %.0f us), %.1f MB/s busbw\n",
            $1 / 1048576, $6, $10, $1 / t }' /tmp/fabric.log
else
    cat /tmp/fabric.log
    bad "fabric(verbs) oxccl-perf"
fi
echo "== fabric backend took $(( $(date +%s) - t0 ))s"

# ib_write_bw SIZE ITERS [-b] -> MB/s (10^6 bytes); one retry, then nothing (logs kept)
ib_bw() {
    local try server out
    for try in 1 2; do
        ib_write_bw -d rxe0 -x 1 -s "$1" -n "$2" -F --report_gbits ${3:-} > /tmp/bw-server.log 2>&1 &
        server=$!
        sleep 1
        timeout 120 ib_write_bw -d rxe1 -x 1 -s "$1" -n "$2" -F --report_gbits ${3:-} 10.99.0.1 \
            > /tmp/bw-client.log 2>&1
        timeout 10 tail --pid=$server -f /dev/null
        kill $server 2>/dev/null
        wait $server 2>/dev/null
        out=$(awk -v b="$1" '$1 == b { printf "%.3f\n", $4 * 125; exit }' /tmp/bw-client.log)
        if [ -n "$out" ]; then echo "$out"; return; fi
        sleep 1
    done
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }

echo "== benchmark: $rounds rounds of ib_write_bw and oxccl-perf (MB/s = 10^6 bytes/s)"
t0=$(date +%s)
: > /tmp/bench.dat
for round in $(seq "$rounds"); do
    for spec in 1:20 4:8 16:5; do
        mib=${spec%%:*} iters=${spec##*:} bytes=$(( ${spec%%:*} << 20 ))
        uni=$(ib_bw "$bytes" "$iters")
        # The reference tool failing twice leaves a gap in the table, not a failed run.
        [ -n "$uni" ] || { echo "ib_write_bw failed at $mib MiB:"; cat /tmp/bw-server.log /tmp/bw-client.log; }
        echo "$mib uni ${uni:-nan}" >> /tmp/bench.dat
        if [ "$mib" = 4 ]; then
            bi=$(ib_bw "$bytes" "$iters" -b)
            echo "$mib bi ${bi:-nan}" >> /tmp/bench.dat
        fi
    done
    OXCCL_TRANSPORT=verbs OXCCL_SPIN=200 "$perf" --threads 2 --op allreduce -b 1M -e 16M -f 4 \
        -w 1 -n 2 > /tmp/perf.log 2>&1 || { cat /tmp/perf.log; bad "oxccl-perf over verbs, round $round"; }
    # busbw = size / time for 2 ranks; columns: size ... out-of-place time (6), in-place (10)
    awk '$1 ~ /^[0-9]+$/ && $NF == "allreduce" {
        t = ($6 < $10) ? $6 : $10; printf "%d oxccl %.3f\n", $1 / 1048576, $1 / t }' \
        /tmp/perf.log >> /tmp/bench.dat
    echo "round $round: $(tail -n 7 /tmp/bench.dat | awk '{ printf "%sM %s=%s  ", $1, $2, $3 }')"
done
echo "== medians over $rounds rounds (took $(( $(date +%s) - t0 ))s)"
printf '%8s %16s %16s %16s %12s\n' size "ib_write_bw" "ib_write_bw -b" "oxccl busbw" "busbw/ib_bw"
for mib in 1 4 16; do
    m() { awk -v s="$mib" -v k="$1" '$1 == s && $2 == k && $3 != "nan" { print $3 }' /tmp/bench.dat | median; }
    uni=$(m uni) bi=$(m bi) ox=$(m oxccl)
    awk -v s="$mib MiB" -v u="${uni:-0}" -v b="${bi:-0}" -v o="${ox:-0}" 'BEGIN {
        bs = (b > 0) ? sprintf("%11.1f MB/s", b) : sprintf("%16s", "-")
        printf "%8s %11.1f MB/s %s %11.1f MB/s %11.0f%%\n", s, u, bs, o, (u > 0) ? 100 * o / u : 0 }'
done
if [ -n "$bench" ]; then
    echo "== cargo bench --bench collectives over verbs (2 ranks: rxe0, rxe1)"
    t0=$(date +%s)
    OXCCL_TRANSPORT=verbs OXCCL_SPIN=200 OXCCL_BENCH_HCAS=rxe0,rxe1 OXCCL_BENCH_MB=16 \
        timeout 600 "$bench" --bench 8 64K 1M 4M || bad "the collectives bench over verbs"
    echo "== the collectives bench took $(( $(date +%s) - t0 ))s"
fi
# Go-back-N retries in this boot (ci/rxe-vm.sh keeps flows in order, so there should be
# only those of the dead-peer tests): the counters rxe keeps, where not zero.
echo "== rxe retry counters: $(cd /sys/class/infiniband && for f in */ports/1/hw_counters/{out_of_seq_request,rcvd_seq_err,completer_retry_err,retry_exceeded_err}; do
    v=$(cat "$f" 2>/dev/null) && [ "${v:-0}" != 0 ] && printf '%s=%s ' "${f%%/*}:${f##*/}" "$v"; done)"
summary verbs-guest
