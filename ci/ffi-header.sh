#!/usr/bin/env bash
# Generates the C header ffi/include/oxccl.h from the ffi crate with cbindgen.
#
#   ci/ffi-header.sh                 rewrite ffi/include/oxccl.h
#   ci/ffi-header.sh --check [DIR]   regenerate from DIR (default ffi) into a temporary file
#                                    and fail, printing the difference, if DIR/include/oxccl.h
#                                    differs: a signature changed without regenerating.
#
# cbindgen is installed with `cargo install` (pinned version, so output is stable) when
# missing. It reads ffi/src/lib.rs and the modules it declares; nothing is compiled.
set -euo pipefail
cd "$(dirname "$0")/.."
CBINDGEN_VERSION=0.29.4

check=0
if [ "${1:-}" = "--check" ]; then
    check=1
    shift
fi
dir=$(cd "${1:-ffi}" && pwd)

if [ "$(cbindgen --version 2>/dev/null || true)" != "cbindgen $CBINDGEN_VERSION" ]; then
    echo "installing cbindgen $CBINDGEN_VERSION"
    cargo install cbindgen --version "$CBINDGEN_VERSION" --locked --quiet
fi

gen() {
    (cd "$dir" && cbindgen --quiet --config cbindgen.toml --output "$1" src/lib.rs)
}

if [ "$check" = 0 ]; then
    gen "$dir/include/oxccl.h"
    echo "wrote $dir/include/oxccl.h"
    exit 0
fi

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
gen "$tmp"
if ! diff -u "$dir/include/oxccl.h" "$tmp"; then
    echo "FAIL: $dir/include/oxccl.h is stale: run ci/ffi-header.sh and commit the result" >&2
    exit 1
fi
echo "ok: $dir/include/oxccl.h matches the sources"
