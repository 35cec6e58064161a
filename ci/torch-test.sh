#!/usr/bin/env bash
# The PyTorch backend's tests: installs the `oxccl` and `oxccl-torch` packages (pip install
# ./python ./python/torch) into a venv holding torch, then runs python/torch/tests under
# rankrun at 2 and 4 ranks, the DDP example under rankrun and torchrun, and an import check
# from outside the checkout. The last line is "torch-tests: N passed, M failed, K skipped"
# (ci/lib.sh); the exit status is non-zero when anything failed.
#
# The venv lives outside the checkout, at $OXCCL_TORCH_VENV (default
# /var/tmp/oxccl-torch-venv). It is reused when it exists and imports torch; otherwise it is
# made afresh with torch from ../shared/torch/requirements-torch-cpu.txt
# ($OXCCL_TORCH_REQUIREMENTS), installed with --no-deps (the CPU-usable subset of PyPI's CUDA
# build: 2.5 GB download, about a minute).
#
# Needs python3 (with venv), cargo and g++; network access to PyPI when the venv is new.
# usage: ci/torch-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=${OXCCL_TORCH_VENV:-/var/tmp/oxccl-torch-venv}
reqs=${OXCCL_TORCH_REQUIREMENTS:-$root/../shared/torch/requirements-torch-cpu.txt}
py=$venv/bin/python
unset PYTHONPATH
# 2 to 4 ranks on a small machine: one intra-op thread each (torchrun's default too).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export PIP_DISABLE_PIP_VERSION_CHECK=1

start=$(date +%s)
if [ -x "$py" ] && "$py" -c 'import torch' 2>/dev/null; then
    echo "== reusing $venv (torch $("$py" -c 'import torch; print(torch.__version__)'))"
else
    if [ ! -f "$reqs" ]; then
        echo "ci/torch-test.sh: $reqs not found (set OXCCL_TORCH_REQUIREMENTS)" >&2
        exit 2
    fi
    echo "== creating $venv with torch from $reqs"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$py" -m pip install -q --no-deps -r "$reqs"
fi
"$py" -m pip install -q ninja numpy expecttest

echo "== pip install ./python ./python/torch"
"$py" -m pip install -q ./python ./python/torch
echo "== cargo build --release --bin rankrun"
cargo build --release --locked --bin rankrun
rankrun=$root/target/release/rankrun
echo "   ready after $(( $(date +%s) - start )) s"

source ci/lib.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# run NAME COMMAND...: a test script that prints "... N passed, N failed" itself.
run_suite() {
    local name=$1
    shift
    echo "== $name"
    local t0 rc=0
    t0=$(date +%s)
    "$@" >"$log" 2>&1 || rc=$?
    grep -v -e 'Work::is_success API is being deprecated' "$log" | tail -n 30
    local line
    line=$(grep -E '^[^ ].* [0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1 || true)
    if [ -n "$line" ]; then
        local p f
        p=$(sed -E 's/.* ([0-9]+) passed, ([0-9]+) failed$/\1/' <<<"$line")
        f=$(sed -E 's/.* ([0-9]+) passed, ([0-9]+) failed$/\2/' <<<"$line")
        passed=$((passed + p))
        failed=$((failed + f))
        if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
            echo "   $name: exit status $rc"
            failed=$((failed + 1))
        fi
    else
        echo "   $name: no summary line (exit status $rc)"
        failed=$((failed + 1))
    fi
    echo "   ($(( $(date +%s) - t0 )) s)"
}

# What checks show of their output: not torch's deprecation chatter.
show() {
    grep -v -e 'Work::is_success API is being deprecated' -e '^W.*run.py' -e '^\*\*\*' || true
}

check "import from / (installed packages)" \
    bash -c "cd / && '$py' -c 'import oxccl, oxccl_torch; print(oxccl.__version__, oxccl_torch.__version__, oxccl_torch.library_path())'"
for n in 2 4; do
    run_suite "test_ops, $n ranks" \
        "$rankrun" -n "$n" --timeout 900 "$py" -W ignore python/torch/tests/test_ops.py
    run_suite "test_ddp, $n ranks" \
        "$rankrun" -n "$n" --timeout 900 "$py" -W ignore python/torch/tests/test_ddp.py
    run_suite "test_fsdp, $n ranks" \
        "$rankrun" -n "$n" --timeout 900 "$py" -W ignore python/torch/tests/test_fsdp.py
done
# PyTorch's own distributed suite (the one upstream runs for gloo) with BACKEND=oxccl.
run_suite "torch's distributed_test _DistTestBase, 2 ranks (torch_suite.py)" \
    env OMP_NUM_THREADS=1 timeout 1200 "$py" -W ignore python/torch/tests/torch_suite.py
# A rank SIGKILLed mid-training: rankrun would end the job, so the script starts its 3 ranks.
run_suite "test_kill, 3 ranks (its own launcher)" \
    timeout 600 "$py" -W ignore python/torch/tests/test_kill.py
check "examples/ddp_train.py under rankrun -n 2 (equal to gloo)" \
    bash -c "'$rankrun' -n 2 --timeout 300 '$py' -W ignore python/torch/examples/ddp_train.py --steps 100 --check-gloo | tee /dev/stderr | grep -q 'difference from the gloo run: 0$'"
check "examples/ddp_train.py under torchrun --nproc-per-node 2" \
    timeout 300 "$venv/bin/torchrun" --nproc-per-node 2 python/torch/examples/ddp_train.py --steps 100

echo "torch tests took $(( $(date +%s) - start )) s in all"
summary torch-tests
