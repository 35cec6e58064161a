#!/usr/bin/env bash
# The test command of the README: format and lint checks, then every test (unit tests,
# the schedule simulator, the mem and TCP collective matrices, failure cases, launching).
# Needs the Rust toolchain and a C compiler; ci/launch-tests.sh installs, as root, the
# Debian packages its launcher tests need (iproute2, slurm-wlm, munge, openmpi-bin); the C
# ABI step needs gcc and python3 and installs cbindgen (cargo install) and numpy (pip);
# libfabric1 is installed here for the fabric backend's tests (which skip without it, except
# under CI).
# The PyTorch backend (ci/torch-test.sh) runs in a venv outside the checkout
# (/var/tmp/oxccl-torch-venv), made once with torch from ../shared/torch and reused.
# The verbs backend's suite and benchmark, and the fabric backend on libfabric's verbs
# provider, run inside a SoftRoCE VM (ci/verbs.sh, which installs qemu, rdma-core and
# perftest with apt-get when run as root).
# As root, ci/netns-topo.sh measures topology-aware mapping on two emulated hosts
# (installing iproute2 if needed).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# The fabric backend loads libfabric at run time; its tests need the library (only the
# runtime package: the committed bindings need no headers).
if [ "$(id -u)" = 0 ] && ! ldconfig -p | grep -q 'libfabric\.so\.1 '; then
    echo "== installing libfabric1"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends libfabric1 >/dev/null
fi
# The figure tool (tools/plot) draws text with a TrueType font.
if [ "$(id -u)" = 0 ] && [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    echo "== installing fonts-dejavu-core"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends fonts-dejavu-core >/dev/null
fi
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --all-targets --locked -- -D warnings
# The fuzz targets the libFuzzer crate (fuzz/) builds on.
cargo clippy --lib --features fuzzing --locked -- -D warnings
cargo clippy -p oxccl-plot --all-targets --locked -- -D warnings
# The sans-IO core (schedules, the call state machine and its simulator, kernels).
cargo clippy -p oxccl-sched --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --locked --lib --bins
cargo test --locked -p oxccl-plot
cargo test --locked -p oxccl-sched
cargo test --locked --doc
cargo test --locked --test collectives -- --test-threads 1
cargo test --locked --test verbs
echo "== launch tests: rankrun and the launcher contracts with real processes"
cargo test --locked --test launch -- --test-threads 1
echo "== launch tests needing root and packages (network namespaces, Slurm, Open MPI)"
ci/launch-tests.sh
echo "== one process per rank: fabric (tcp and shm providers) and native shm, a killed rank"
ci/fabric-tests.sh
echo "== oxccl-perf smoke run (2 ranks over tcp, then over shared memory, results checked)"
OXCCL_SHM=0 cargo run --release --locked --bin oxccl-perf -- --threads 2 --op all -b 8 -e 1M -f 32 -w 1 -n 3
OXCCL_TRANSPORT=shm cargo run --release --locked --bin oxccl-perf -- --threads 2 --op all -b 8 -e 1M -f 32 -w 1 -n 3
echo "== cargo bench --bench collectives (2 ranks over tcp, then shm; nccl-tests-style busbw)"
OXCCL_SHM=0 cargo bench --locked --bench collectives
OXCCL_TRANSPORT=shm cargo bench --locked --bench collectives
echo "== C ABI and Python binding (header freshness, C tests at 1..8 ranks, ASan, Python)"
ci/ffi-test.sh
echo "== PyTorch backend: pip packages, every op against gloo, DDP (venv reused when it survives)"
ci/torch-test.sh
echo "== verbs backend on SoftRoCE in a VM (tests, then oxccl-perf beside ib_write_bw)"
ci/verbs.sh
echo "== topology-aware mapping on two emulated hosts (rankrun --map-by node, 1 Gbit/s veth)"
ci/netns-topo.sh
