#!/usr/bin/env bash
# Runs inside the SoftRoCE VM of ci/rxe-vm.sh (called by ci/verbs.sh):
#   ci/verbs-guest.sh TEST_BINARY PERF_BINARY
# 1. the verbs test suite (tests/verbs.rs, every test, one at a time);
# 2. the benchmark: ib_write_bw from rxe1 to rxe0, then oxccl-perf's 2-rank allreduce over
#    verbs (rank 0 on rxe0, rank 1 on rxe1), at 1, 4 and 16 MiB, in this same boot, and
#    oxccl's bus bandwidth as a fraction of ib_write_bw's (throughput under TCG is tiny
#    and noisy: only ratios measured side by side mean anything).
# Exit status: the tests' and the benchmark's (a wrong result fails); the ratio is reported.
set -uo pipefail
tests=$1 perf=$2
rc=0
echo "== verbs tests (SoftRoCE)"
t0=$(date +%s)
RUST_BACKTRACE=1 "$tests" --include-ignored --test-threads 1 || rc=1
echo "== verbs tests took $(( $(date +%s) - t0 ))s"

declare -A wire
echo "== ib_write_bw rxe1 -> rxe0 (one QP, RDMA write)"
for spec in 1M:20 4M:8 16M:4; do
    size=${spec%%:*} iters=${spec##*:}
    bytes=$(( ${size%M} << 20 ))
    ib_write_bw -d rxe0 -x 1 -s "$bytes" -n "$iters" -F --report_gbits > /tmp/bw-server.log 2>&1 &
    server=$!
    sleep 1
    line=$(timeout 120 ib_write_bw -d rxe1 -x 1 -s "$bytes" -n "$iters" -F --report_gbits 10.99.0.1 2>&1 |
        awk -v b="$bytes" '$1 == b { print; exit }')
    timeout 10 tail --pid=$server -f /dev/null
    kill $server 2>/dev/null
    wait $server 2>/dev/null
    gbits=$(echo "$line" | awk '{ print $4 }')
    if [ -z "$gbits" ]; then
        echo "ib_write_bw at $size failed:"; cat /tmp/bw-server.log; rc=1; continue
    fi
    wire[$size]=$gbits
    echo "ib_write_bw $size: $gbits Gb/s"
done

echo "== oxccl-perf allreduce, 2 ranks over verbs (rxe0 + rxe1)"
OXCCL_TRANSPORT=verbs OXCCL_SPIN=200 "$perf" --threads 2 --op allreduce -b 1M -e 16M -f 4 -w 1 -n 4 \
    | tee /tmp/perf.log || rc=1
echo "== oxccl busbw / ib_write_bw bandwidth"
printf '%10s %14s %14s %14s %8s\n' size "ib_write GB/s" "busbw out GB/s" "busbw in GB/s" ratio
for size in 1M 4M 16M; do
    bytes=$(( ${size%M} << 20 ))
    read -r out in < <(awk -v b="$bytes" '$1 == b { print $8, $12 }' /tmp/perf.log)
    w=${wire[$size]:-}
    if [ -z "$w" ] || [ -z "${out:-}" ]; then echo "$size: missing data"; continue; fi
    awk -v s="$size" -v w="$w" -v o="$out" -v i="$in" 'BEGIN {
        g = w / 8; best = (o > i) ? o : i
        printf "%10s %14.4f %14.4f %14.4f %7.0f%%\n", s, g, o, i, 100 * best / g }'
done
exit $rc
