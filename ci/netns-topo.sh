#!/usr/bin/env bash
# Two emulated hosts: network namespaces joined by a veth pair whose rate is limited with a
# tbf qdisc on both ends (RATE each way; loopback inside each namespace is not limited).
# 4 ranks are dealt round-robin (--map-by node: ranks 0, 2 on host A, 1, 3 on host B) and
# time a SIZE allreduce with topology-aware mapping on and off, in one run; rank 0 prints
# bus bandwidths and the on/off ratios, and the dumped rings are printed after.
#   sudo ci/netns-topo.sh            # needs root (ip netns, tc); builds the example
# Knobs: RATE (1gbit), SIZE (16M; a list such as 8,64K,1M,16M for a sweep), ITERS (5),
# ALGOS (auto,ring,hier), OUT (directory for logs, dumps and oxccl-perf-style tables).
# Exit status: 0 when the run succeeded and the ring ratio reached MIN_RATIO (1.7).
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-1gbit}
SIZE=${SIZE:-16M}
ITERS=${ITERS:-5}
ALGOS=${ALGOS:-auto,ring,hier}
MIN_RATIO=${MIN_RATIO:-1.7}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
tag="oxtopo$$"
A="${tag}a"
B="${tag}b"
pids=()

cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cargo build --release --locked --example mapping_bench
bin=target/release/examples/mapping_bench

# 10.231.7.0/24 exists only inside the two namespaces.
ip netns add "$A"
ip netns add "$B"
ip link add veth0 netns "$A" type veth peer name veth0 netns "$B"
ip -n "$A" addr add 10.231.7.1/24 dev veth0
ip -n "$B" addr add 10.231.7.2/24 dev veth0
for ns in "$A" "$B"; do
    ip -n "$ns" link set lo up
    ip -n "$ns" link set veth0 up
    # A 512 KiB bucket lets one TCP stream fill the link (128 KiB gave 87% of it); packets
    # may queue for 20 ms.
    tc -n "$ns" qdisc add dev veth0 root tbf rate "$RATE" burst 512kb latency 20ms
done

secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
port=$((20000 + $$ % 20000))
for r in 0 1 2 3; do
    if ((r % 2 == 0)); then ns=$A; else ns=$B; fi
    serve=""
    if ((r == 0)); then serve="--serve"; fi
    ip netns exec "$ns" env OXCCL_RANK=$r OXCCL_WORLD_SIZE=4 \
        OXCCL_ROOT="10.231.7.1:$port" OXCCL_JOB_SECRET="$secret" \
        OXCCL_TIMEOUT="${OXCCL_TIMEOUT:-60}" OXCCL_SPIN="${OXCCL_SPIN:-200}" \
        timeout 300 "$bin" $serve -s "$SIZE" -w 2 -n "$ITERS" --algos "$ALGOS" \
        --dump "$OUT/topo" --tables "$OUT" >"$OUT/rank$r.log" 2>&1 &
    pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
        echo "rank $i failed:" >&2
        cat "$OUT/rank$i.log" >&2
        status=1
    fi
done
pids=()
cat "$OUT/rank0.log"
((status == 0)) || exit 1
for m in on off; do
    ring=$(tr -d '\n ' <"$OUT/topo-$m.json" | grep -o '"ring":\[[0-9,]*\]')
    crossings=$(tr -d '\n ' <"$OUT/topo-$m.json" | grep -o '"network_crossings":[0-9]*')
    echo "mapping $m: $ring $crossings"
done
echo "dumps: $OUT/topo-on.json $OUT/topo-off.json"
ratio=$(grep -o 'on/off at [0-9]* B, ring: [0-9.]*' "$OUT/rank0.log" | awk '{print $NF}')
if awk -v r="$ratio" -v m="$MIN_RATIO" 'BEGIN { exit !(r >= m) }'; then
    echo "ring busbw ratio mapping on/off: ${ratio}x (goal >= ${MIN_RATIO}x): OK"
else
    echo "ring busbw ratio mapping on/off: ${ratio}x is below the goal ${MIN_RATIO}x" >&2
    exit 1
fi
