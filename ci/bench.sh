#!/usr/bin/env bash
# The main job of the README: a multi-rank collective benchmark on localhost over the
# default transport (tcp), printed as nccl-tests prints it.
#   ci/bench.sh [RANKS] [extra oxccl-perf options]
set -euo pipefail
cd "$(dirname "$0")/.."
ranks=${1:-2}
shift || true
cargo build --release --locked --bin oxccl-perf
exec target/release/oxccl-perf --threads "$ranks" --op allreduce -b 8 -e 64M -f 4 "$@"
