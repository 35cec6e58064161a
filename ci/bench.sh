#!/usr/bin/env bash
# The main job of the README: a multi-rank collective benchmark on localhost over the
# default transport (tcp), one process per rank started by rankrun, printed as nccl-tests
# prints it (rank 0 prints).
#   ci/bench.sh [RANKS] [extra oxccl-perf options]
set -euo pipefail
cd "$(dirname "$0")/.."
ranks=${1:-2}
shift || true
cargo build --release --locked --bin oxccl-perf --bin rankrun
exec target/release/rankrun -n "$ranks" \
    target/release/oxccl-perf --op allreduce -b 8 -e 64M -f 4 "$@"
