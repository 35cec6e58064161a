#!/usr/bin/env bash
# Builds the C library in release mode and installs it under PREFIX:
#
#   PREFIX/include/oxccl.h
#   PREFIX/lib/liboxccl.so.X.Y.Z  (+ liboxccl.so.ABI and liboxccl.so links), liboxccl.a
#   PREFIX/lib/pkgconfig/oxccl.pc
#
# usage: ci/ffi-install.sh PREFIX
# Then: cc app.c $(PKG_CONFIG_PATH=PREFIX/lib/pkgconfig pkg-config --cflags --libs oxccl)
# (static: link PREFIX/lib/liboxccl.a with `pkg-config --libs --static oxccl`'s extra libs).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 1 ]; then
    echo "usage: $0 PREFIX" >&2
    exit 2
fi
mkdir -p "$1"
prefix=$(cd "$1" && pwd)
cargo build --release --locked -p oxccl-ffi
target=${CARGO_TARGET_DIR:-target}/release

version=$(sed -n 's/^version = "\(.*\)"/\1/p' ffi/Cargo.toml | head -n1)
major=${version%%.*}
minor=${version#*.}
minor=${minor%%.*}
if [ "$major" = 0 ]; then abi="0.$minor"; else abi="$major"; fi
# What a program linking liboxccl.a needs besides it (as rustc reports for staticlibs).
native_libs="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"

install -d "$prefix/include" "$prefix/lib/pkgconfig"
install -m 644 ffi/include/oxccl.h "$prefix/include/oxccl.h"
install -m 644 "$target/liboxccl.a" "$prefix/lib/liboxccl.a"
install -m 755 "$target/liboxccl.so" "$prefix/lib/liboxccl.so.$version"
ln -sf "liboxccl.so.$version" "$prefix/lib/liboxccl.so.$abi"
ln -sf "liboxccl.so.$abi" "$prefix/lib/liboxccl.so"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" -e "s|@NATIVE_LIBS@|$native_libs|" \
    ffi/oxccl.pc.in > "$prefix/lib/pkgconfig/oxccl.pc"
echo "installed oxccl $version under $prefix"
