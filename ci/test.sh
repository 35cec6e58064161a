#!/usr/bin/env bash
# The test command of the README: format and lint checks, then every test (unit tests,
# the schedule simulator, the mem and TCP collective matrices, failure cases, launching).
# Needs the Rust toolchain, a C compiler and python3 (with venv). ci/packages.sh first
# installs, as root, every Debian package the tests use (libfabric1, iproute2, Slurm, Open
# MPI, the SoftRoCE VM's qemu and rdma-core, a font); elsewhere the tests that need a
# missing one skip and say so. The C ABI step installs cbindgen (cargo install) and numpy
# (pip). The scripts count their checks with one harness (ci/lib.sh).
# The PyTorch backend (ci/torch-test.sh) runs in a venv outside the checkout
# (/var/tmp/oxccl-torch-venv), made once with torch from ../shared/torch and reused.
# The verbs backend's suite and benchmark, and the fabric backend on libfabric's verbs
# provider, run inside a SoftRoCE VM (ci/verbs.sh).
# As root, ci/netns-topo.sh measures topology-aware mapping on two emulated hosts.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
echo "== packages (one step, before the tests)"
ci/packages.sh
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
echo "== launch tests: rankrun and the launcher contracts with real processes (as root also"
echo "   two network namespaces, and Open MPI's mpirun)"
cargo test --locked --test launch -- --test-threads 1
echo "== a real single-node Slurm (root and packages)"
ci/slurm-tests.sh
echo "== one process per rank: fabric (tcp and shm providers) and native shm, a killed rank"
ci/fabric-tests.sh
echo "== oxccl-perf smoke run (2 ranks over tcp, then over shared memory, results checked)"
OXCCL_SHM=0 cargo run --release --locked --bin oxccl-perf -- --threads 2 --op all -b 8 -e 1M -f 32 -w 1 -n 3
OXCCL_TRANSPORT=shm cargo run --release --locked --bin oxccl-perf -- --threads 2 --op all -b 8 -e 1M -f 32 -w 1 -n 3
echo "== oxccl-perf --csv (the peers suite's lines): the suite's sizes within -b and -e, checked"
csv=$(OXCCL_SHM=0 target/release/oxccl-perf --threads 2 --csv --op allreduce,broadcast -b 8 -e 1K -t 0.01)
echo "$csv"
[ "$(echo "$csv" | grep -c ',ok,')" = 4 ] || { echo "oxccl-perf --csv: expected 4 checked lines"; exit 1; }
echo "== the bare TCP exchange (tools/bare-tcp: no library, the machine's own loopback figure)"
gcc -O2 -Wall -Wextra -Werror -o target/bare-tcp-exchange tools/bare-tcp/exchange.c
target/bare-tcp-exchange -n 5 -k 2 -C reno 64K 1M
if [ "$(nproc)" -ge 2 ]; then target/bare-tcp-exchange -n 200 --spin --pin --oneway 8; fi
echo "== call_timeline (each rank's start and end of 8-byte calls; its MPI twin where mpicc is)"
cargo build --release --locked --bin rankrun --example call_timeline
OXCCL_SHM=0 target/release/rankrun -n 2 target/release/examples/call_timeline broadcast
if command -v mpicc >/dev/null; then
    mpicc -O2 -Wall -Wextra -Werror -o target/mpi-timeline tools/call-timeline/mpi_timeline.c
fi
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
