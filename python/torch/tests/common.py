"""Shared by the oxccl torch tests: a suite that runs named checks on every rank, agrees on
each outcome over gloo, and prints one summary line on rank 0.

Each test file is a plain script started by a launcher on every rank, e.g.

    target/release/rankrun -n 4 python python/torch/tests/test_ops.py

A check is a function returning None (pass) or a string (what differed); an exception fails
it. Every rank runs every check, so the collectives stay in step even when one fails.
"""

import datetime
import os
import sys
import traceback

import torch
import torch.distributed as dist

import oxccl_torch  # noqa: F401  (registers the "oxccl" backend)

TIMEOUT = datetime.timedelta(seconds=float(os.environ.get("OXCCL_TORCH_TEST_TIMEOUT", "120")))


class Suite:
    """The default process group is oxccl's; `gloo` is a gloo group of the same ranks."""

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0
        self.failures = []
        self.current = None
        self.only = os.environ.get("OXCCL_TORCH_TEST_ONLY")  # substring filter on names
        dist.init_process_group("oxccl", timeout=TIMEOUT)
        self.rank = dist.get_rank()
        self.size = dist.get_world_size()
        self.gloo = dist.new_group(backend="gloo", timeout=TIMEOUT)
        self.verbose = os.environ.get("OXCCL_TORCH_TEST_VERBOSE") == "1"

    def check(self, name, fn, *args, **kwargs):
        if self.only and self.only not in name:
            return
        ok, detail = True, ""
        self.current = name
        try:
            r = fn(*args, **kwargs)
            if r is not None:
                ok, detail = False, str(r)
        except Exception as e:  # noqa: BLE001  (any failure of the check is reported)
            ok = False
            detail = "%s: %s" % (type(e).__name__, e)
            if self.verbose:
                traceback.print_exc()
        flag = torch.tensor([1 if ok else 0], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=self.gloo)
        if flag.item() == 1:
            self.passed += 1
            if self.verbose and self.rank == 0:
                print("ok   %s" % name, flush=True)
        else:
            self.failed += 1
            self.failures.append(name)
            if not ok:
                print("rank %d: FAIL %s: %s" % (self.rank, name, detail[:2000]), flush=True)

    def finish(self):
        """Prints the summary on rank 0, tears the groups down, exits 1 on any failure."""
        dist.barrier(group=self.gloo)
        if self.rank == 0:
            if self.failures:
                print("%s: failed: %s" % (self.name, ", ".join(self.failures)), flush=True)
            print("%s at %d ranks: %d passed, %d failed"
                  % (self.name, self.size, self.passed, self.failed), flush=True)
        dist.destroy_process_group()
        sys.exit(1 if self.failed else 0)


def bits(t):
    """A tensor's bit pattern, for bitwise comparison (NaN-safe)."""
    t = t.contiguous()
    if t.dtype == torch.bool:
        return t.to(torch.uint8)
    if t.is_floating_point():
        return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])
    return t


def same(got, want, what="result"):
    """None when `got` and `want` are bitwise equal, else a description of the first
    difference."""
    if got.dtype != want.dtype or got.shape != want.shape:
        return "%s: %s %s, expected %s %s" % (what, got.dtype, tuple(got.shape), want.dtype,
                                             tuple(want.shape))
    g, w = bits(got), bits(want)
    if torch.equal(g, w):
        return None
    diff = (g != w).flatten().nonzero()
    i = int(diff[0])
    return "%s: %d of %d elements differ, first at %d: %r, expected %r" % (
        what, diff.numel(), got.numel(), i, got.flatten()[i].item(), want.flatten()[i].item())


def close(got, want, rtol, atol, what="result"):
    """None when `got` is within tolerance of `want`."""
    if torch.allclose(got.double(), want.double(), rtol=rtol, atol=atol):
        return None
    d = (got.double() - want.double()).abs().max().item()
    return "%s: max difference %g beyond rtol %g, atol %g" % (what, d, rtol, atol)


def first_error(*results):
    for r in results:
        if r is not None:
            return r
    return None
