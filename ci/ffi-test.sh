#!/usr/bin/env bash
# The C ABI and the Python binding, as ci/test.sh runs them:
#   1. the committed header matches the sources, and the check fails on a stale copy;
#   2. clippy and the unit tests of the ffi crate;
#   3. install under a temporary prefix (ci/ffi-install.sh) and use its oxccl.pc;
#   4. C tests compiled by gcc -Wall -Wextra -Werror, linked against liboxccl.a, at 1..8
#      ranks, one rank per process; then the same against liboxccl.so under AddressSanitizer;
#   5. python3 -m oxccl.selftest and the data-parallel SGD example at 4 ranks (numpy from pip),
#      and the SGD example's replica check failing when one replica is perturbed.
# Ranks start through rankrun when it is built (target/release/rankrun), else through
# ffi/tests/launch.py, which sets the same variables.
#
# usage: ci/ffi-test.sh [MAX_RANKS]   (default 8)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
max=${1:-8}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
t_start=$SECONDS
source ci/lib.sh
pass() { ok "$@"; }
fail() { bad "$@"; }

echo "== ffi: header freshness"
if ci/ffi-header.sh --check; then pass "header matches the sources"; else fail "stale header"; fi
# A signature changed without regenerating must be caught.
cp -r ffi "$work/stale"
sed -i 's/pub extern "C" fn oxcclBarrier(comm: oxcclComm_t)/pub extern "C" fn oxcclBarrier(comm: oxcclComm_t, flags: c_int)/' \
    "$work/stale/src/coll.rs"
grep -q 'oxcclBarrier(comm: oxcclComm_t, flags: c_int)' "$work/stale/src/coll.rs"
if ci/ffi-header.sh --check "$work/stale" >"$work/stale.log" 2>&1; then
    fail "the freshness check passed a stale header"
elif grep -q '^+oxcclResult_t oxcclBarrier(oxcclComm_t comm, int flags);' "$work/stale.log" &&
    grep -q 'is stale' "$work/stale.log"; then
    pass "the freshness check fails on a changed signature"
else
    fail "unexpected output of the stale check"; cat "$work/stale.log"
fi

echo "== ffi: clippy and unit tests"
cargo clippy -p oxccl-ffi --all-targets --locked -- -D warnings
cargo test -p oxccl-ffi --locked

echo "== ffi: install under a prefix"
ci/ffi-install.sh "$work/prefix"
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' ffi/Cargo.toml | head -n1)
if [ "$(pkg-config --modversion oxccl)" = "$version" ]; then pass "oxccl.pc (version $version)"; else fail "oxccl.pc"; fi

echo "== ffi: compile the C tests (gcc -Wall -Wextra -Werror)"
cflags="-std=c11 -pthread -D_DEFAULT_SOURCE -Wall -Wextra -Werror -Wpedantic -O1 -g $(pkg-config --cflags oxccl)"
static_libs="$work/prefix/lib/liboxccl.a $(pkg-config --libs-only-l --static oxccl | sed 's/-loxccl//')"
tests="test_bad_input test_api test_exchange test_group"
for t in $tests; do
    # shellcheck disable=SC2086
    gcc $cflags "ffi/tests/$t.c" -o "$work/$t" $static_libs
    # shellcheck disable=SC2086
    gcc $cflags -fsanitize=address -fno-omit-frame-pointer "ffi/tests/$t.c" -o "$work/$t.asan" \
        $(pkg-config --libs oxccl) -Wl,-rpath,"$work/prefix/lib"
done
# (Outputs captured first: `grep -q` closing a pipe early would fail the pipeline.)
asan_deps=$(ldd "$work/test_api.asan")
static_deps=$(ldd "$work/test_api")
if grep -q libasan <<<"$asan_deps" && grep -q "liboxccl.so.0" <<<"$asan_deps"; then
    pass "ASan build runs against liboxccl.so (by its soname)"
else
    fail "ASan build is not instrumented or not linked to liboxccl.so"
fi
if grep -q liboxccl <<<"$static_deps"; then
    fail "the static build loads liboxccl.so"
else
    pass "the static build carries liboxccl.a"
fi

# The sanitizer setup is live: the same flags catch a one-byte heap overflow.
printf '%s\n' '#include <stdlib.h>' \
    'int main(void) { volatile char *p = malloc(8); p[8] = 1; free((void *)p); return 0; }' \
    >"$work/canary.c"
gcc -O1 -g -fsanitize=address "$work/canary.c" -o "$work/canary"
if "$work/canary" >"$work/canary.log" 2>&1 || ! grep -q "heap-buffer-overflow" "$work/canary.log"; then
    fail "AddressSanitizer did not report a heap overflow"
else
    pass "AddressSanitizer reports a heap overflow (canary)"
fi

launch() {
    local n=$1
    shift
    if [ -x target/release/rankrun ]; then
        target/release/rankrun -n "$n" --timeout 300 -- "$@"
    else
        python3 ffi/tests/launch.py -n "$n" --timeout 300 --lib "$work/prefix/lib/liboxccl.so" -- "$@"
    fi
}

# Several ranks share two cores: sleeping instead of spinning keeps them moving; bounded waits.
export OXCCL_SPIN=0 OXCCL_TIMEOUT=60 OXCCL_ROOT_ADDR=127.0.0.1
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0
for variant in static asan; do
    suffix=""
    [ "$variant" = asan ] && suffix=".asan"
    for n in $(seq 1 "$max"); do
        for t in $tests; do
            log="$work/$t.$variant.$n.log"
            s=$SECONDS
            if launch "$n" "$work/$t$suffix" >"$log" 2>&1 && ! grep -q "Sanitizer" "$log"; then
                pass "$t ($variant) at $n ranks in $((SECONDS - s)) s"
            else
                fail "$t ($variant) at $n ranks"
                tail -n 40 "$log" >&2
            fi
        done
    done
done

echo "== python: selftest and data-parallel SGD at 4 ranks"
if ! python3 -c "import numpy" 2>/dev/null; then
    python3 -m pip install --quiet numpy
fi
export PYTHONPATH="$PWD/python" OXCCL_LIBRARY="$work/prefix/lib/liboxccl.so"
if launch 4 python3 -m oxccl.selftest >"$work/py.log" 2>&1 && [ "$(grep -o 'passed, 0 failed' "$work/py.log" | wc -l)" = 4 ]; then
    pass "python3 -m oxccl.selftest at 4 ranks"
else
    fail "python selftest"; tail -n 40 "$work/py.log" >&2
fi
if launch 4 python3 python/examples/dp_sgd.py >"$work/sgd.log" 2>&1 && grep -q "replicas bitwise identical" "$work/sgd.log"; then
    pass "dp_sgd.py at 4 ranks: $(grep -o 'mean loss .* (from .*)' "$work/sgd.log")"
else
    fail "dp_sgd.py"; tail -n 40 "$work/sgd.log" >&2
fi
if launch 4 python3 python/examples/dp_sgd.py --perturb 2 --steps 5 >"$work/sgd-bad.log" 2>&1; then
    fail "dp_sgd.py did not notice a perturbed replica"
elif grep -Eq "replica of rank [0-9]+ differs in 1 of" "$work/sgd-bad.log"; then
    pass "dp_sgd.py notices a replica one ulp off"
else
    fail "dp_sgd.py --perturb: unexpected output"; tail -n 20 "$work/sgd-bad.log" >&2
fi

echo "ffi took $((SECONDS - t_start)) s"
summary ffi
