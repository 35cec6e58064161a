#!/usr/bin/env bash
# The test command of the README: format and lint checks, then every test (unit tests,
# the schedule simulator, the mem and TCP collective matrices, failure cases), and, as root
# with iproute2, the topology-aware mapping on two emulated hosts (ci/netns-topo.sh).
# Needs only the Rust toolchain and a C compiler; installs nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --locked --lib --bins
cargo test --locked --doc
cargo test --locked --test collectives -- --test-threads 1
echo "== oxccl-perf smoke run (2 ranks over tcp, results checked)"
cargo run --release --locked --bin oxccl-perf -- --threads 2 --op all -b 8 -e 1M -f 32 -w 1 -n 3
echo "== topology-aware mapping on two emulated hosts (network namespaces, 1 Gbit/s veth)"
if [ "$(id -u)" = 0 ] && command -v tc >/dev/null && ip netns add "oxccl-probe$$" 2>/dev/null; then
    ip netns del "oxccl-probe$$"
    ci/netns-topo.sh
else
    echo "SKIPPED: needs root, iproute2 (ip, tc) and permission to create network namespaces"
fi
