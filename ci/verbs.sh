#!/usr/bin/env bash
# The verbs backend tested for real: builds the verbs test binary, oxccl-perf, rankrun and
# collectives_check on the host, boots one SoftRoCE VM (ci/rxe-vm.sh) and runs
# ci/verbs-guest.sh inside it (the verbs test suite, the fabric backend over libfabric's
# verbs;ofi_rxm, then oxccl-perf next to ib_write_bw). The host packages it needs come
# from ci/packages.sh; without them it says which are missing and fails.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs="qemu-system-x86 busybox-static cpio kmod xz-utils binutils iproute2 rdma-core
      ibverbs-providers perftest libfabric1 librdmacm1"
missing=$(for p in $pkgs; do dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null |
    grep -q '^install ok installed' || echo "$p"; done)
if [ -n "$missing" ]; then
    echo "ci/verbs.sh needs these packages (ci/packages.sh installs them): $(echo $missing)" >&2
    exit 1
fi
echo "== building the verbs tests, oxccl-perf and the collectives bench"
tests=$(cargo test --locked --test verbs --no-run --message-format=json 2>/dev/null |
    grep '"kind":\["test"\]' | grep '"name":"verbs"' |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$tests" ] || { echo "could not build tests/verbs.rs" >&2; exit 1; }
cargo build --locked --release --bin oxccl-perf --bin rankrun --example collectives_check
bench=$(cargo bench --locked --bench collectives --no-run --message-format=json 2>/dev/null |
    grep '"kind":\["bench"\]' | grep '"name":"collectives"' |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$bench" ] || { echo "could not build benches/collectives.rs" >&2; exit 1; }
echo "== booting the SoftRoCE VM"
r=$PWD/target/release
exec ci/rxe-vm.sh ci/verbs-guest.sh "$tests" "$r/oxccl-perf" "$r/rankrun" \
    "$r/examples/collectives_check" "$bench"
