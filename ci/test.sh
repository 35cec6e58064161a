#!/usr/bin/env bash
# The test command of the README: format and lint checks, then every test (unit tests,
# the schedule simulator, the mem and TCP collective matrices, failure cases), then the
# verbs backend's suite and benchmark inside a SoftRoCE VM (ci/verbs.sh, which installs
# qemu, rdma-core and perftest with apt-get when run as root).
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
cargo test --locked --test verbs
echo "== oxccl-perf smoke run (2 ranks over tcp, results checked)"
cargo run --release --locked --bin oxccl-perf -- --threads 2 --op all -b 8 -e 1M -f 32 -w 1 -n 3
echo "== verbs backend on SoftRoCE in a VM (tests, then oxccl-perf beside ib_write_bw)"
ci/verbs.sh
