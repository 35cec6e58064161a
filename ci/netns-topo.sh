#!/usr/bin/env bash
# Two emulated hosts: network namespaces joined by a veth pair whose rate is limited with a
# tbf qdisc on both ends (RATE each way; loopback inside each namespace is not limited).
# rankrun deals 4 ranks round-robin (--map-by node: ranks 0, 2 on host A, 1, 3 on host B);
# examples/mapping_bench times a SIZE allreduce with topology-aware mapping on and off in the
# same job; rank 0 prints bus bandwidths and the on/off ratios, then the dumped rings.
#   ci/netns-topo.sh            (as root, with iproute2 from ci/packages.sh; about 20 s)
# Knobs: RATE (1gbit), SIZE (16M; a list such as 8,64K,1M,16M for a sweep), ITERS (3) calls
# per round and the best of ROUNDS (3) rounds (a round slowed by other work does not count),
# ALGOS (auto,ring,hier), OUT (directory for logs, dumps and oxccl-perf-style tables),
# MIN_RATIO (1.7): the run fails when the ring's busbw ratio on/off is below it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ] || ! command -v tc >/dev/null; then
    echo "netns-topo: skipped: needs root and iproute2's ip and tc (ci/packages.sh)"
    exit 0
fi

RATE=${RATE:-1gbit}
SIZE=${SIZE:-16M}
ITERS=${ITERS:-3}
ROUNDS=${ROUNDS:-3}
ALGOS=${ALGOS:-auto,ring,hier}
MIN_RATIO=${MIN_RATIO:-1.7}
OUT=${OUT:-$(mktemp -d /tmp/oxccl-topo.XXXXXX)}
mkdir -p "$OUT"
A="oxt$$a"
B="oxt$$b"

cleanup() {
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cargo build --release --locked --bin rankrun --example mapping_bench
RANKRUN=$PWD/target/release/rankrun
BENCH=$PWD/target/release/examples/mapping_bench

# 10.231.7.0/24 exists only inside the two namespaces.
ip netns add "$A"
ip netns add "$B"
ip link add "${A}v" type veth peer name "${B}v"
ip link set "${A}v" netns "$A"
ip link set "${B}v" netns "$B"
ip -n "$A" addr add 10.231.7.1/24 dev "${A}v"
ip -n "$B" addr add 10.231.7.2/24 dev "${B}v"
for ns in "$A" "$B"; do
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "${ns}v" up
    # A 512 KiB bucket lets one TCP stream fill the link (128 KiB gave 87% of it); packets
    # may queue for 20 ms.
    tc -n "$ns" qdisc add dev "${ns}v" root tbf rate "$RATE" burst 512kb latency 20ms
done

# rankrun runs in A and serves the job's store on A's veth address; every rank starts
# through 'ip netns exec'. OXCCL_* variables reach the ranks.
status=0
OXCCL_TIMEOUT=${OXCCL_TIMEOUT:-60} OXCCL_SPIN=${OXCCL_SPIN:-200} \
    ip netns exec "$A" timeout 300 "$RANKRUN" --hosts "$A:2,$B:2" --map-by node -n 4 \
    --rsh 'ip netns exec {host}' --timeout 280 \
    "$BENCH" -s "$SIZE" -w 2 -n "$ITERS" -r "$ROUNDS" --algos "$ALGOS" \
    --dump "$OUT/topo" --tables "$OUT" >"$OUT/job.log" 2>&1 || status=$?
cat "$OUT/job.log"
if [ "$status" != 0 ]; then
    echo "netns-topo: the job failed (status $status)" >&2
    exit 1
fi
for m in on off; do
    ring=$(tr -d '\n ' <"$OUT/topo-$m.json" | grep -o '"ring":\[[0-9,]*\]')
    crossings=$(tr -d '\n ' <"$OUT/topo-$m.json" | grep -o '"network_crossings":[0-9]*')
    echo "mapping $m: $ring $crossings"
done
echo "dumps: $OUT/topo-on.json $OUT/topo-off.json"
ratio=$(grep -o 'on/off at [0-9]* B, ring: [0-9.]*' "$OUT/job.log" | awk '{print $NF}')
if [ -n "$ratio" ] && awk -v r="$ratio" -v m="$MIN_RATIO" 'BEGIN { exit !(r >= m) }'; then
    echo "ring busbw ratio mapping on/off: ${ratio}x (goal >= ${MIN_RATIO}x): OK"
else
    echo "ring busbw ratio mapping on/off: '${ratio}' is below the goal ${MIN_RATIO}x" >&2
    exit 1
fi
