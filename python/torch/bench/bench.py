"""torch.distributed over oxccl against gloo, side by side in one run (not part of CI):

* 64 MiB float32 all_reduce: bus bandwidth (nccl-tests' busbw: bytes * 2(n-1)/n / time),
  median of a few iterations, each started after a gloo barrier;
* 8-byte all_reduce (2 float32) latency: median of ~200 back-to-back calls;
* one DDP training step (forward, backward with DDP's bucketed allreduces, SGD step) of a
  25.2M-parameter MLP (Linear 4096x4096, 4096x2048, 2048x16; batch 16), median of ~10 steps
  after warm-up, beside the same step without DDP (the compute alone);
* where the 8-byte call's time goes: Python's loop, an eager torch op, the all_reduce's
  issue (async_op=True) and its wait (over oxccl and over gloo), and the same allreduce made directly on
  liboxccl through the `oxccl` package (its numpy wrapper, and a bare ctypes call), on a
  second communicator of the same ranks.

Every time is per iteration, the slowest rank's (max over ranks), then the median.

    OMP_NUM_THREADS=1 target/release/rankrun -n 2 $VENV/bin/python python/torch/bench/bench.py
    OMP_NUM_THREADS=1 target/release/rankrun -n 4 $VENV/bin/python python/torch/bench/bench.py

Options: --bw-mib, --bw-iters, --lat-iters, --ddp-steps, --ddp-warmup, --ddp-batch,
--no-ddp, --no-breakdown. Run it on a quiet machine (`uptime`): the ranks share its cores.
"""

import argparse
import ctypes
import datetime
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

import oxccl
import oxccl_torch  # noqa: F401  (registers the backend when only on PYTHONPATH)

clock = time.perf_counter


def slowest(times, gloo):
    """Per iteration, the slowest rank's time; then the median (seconds)."""
    t = torch.tensor(times, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=gloo)
    return statistics.median(t.tolist())


def allreduce_times(pg, t, iters, warmup, gloo, barrier):
    for _ in range(warmup):
        dist.all_reduce(t, group=pg)
    times = []
    for _ in range(iters):
        if barrier:
            dist.barrier(group=gloo)
        t0 = clock()
        dist.all_reduce(t, group=pg)
        times.append(clock() - t0)
    return times


def make_model():
    return nn.Sequential(nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 2048), nn.ReLU(),
                         nn.Linear(2048, 16))


def ddp_step_times(pg, args, rank, gloo):
    """Per-step times of DDP over `pg`, or of the bare model when `pg` is False."""
    torch.manual_seed(0)
    model = make_model()
    net = model if pg is False else DDP(model, process_group=pg)
    opt = torch.optim.SGD(net.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(args.ddp_batch, 4096, generator=g)
    y = torch.randint(0, 16, (args.ddp_batch,), generator=g)
    times = []
    for i in range(args.ddp_warmup + args.ddp_steps):
        dist.barrier(group=gloo)
        t0 = clock()
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        if i >= args.ddp_warmup:
            times.append(clock() - t0)
    del net, model, opt
    return times


def breakdown(args, rank, size, gloo):
    """Where an 8-byte all_reduce over oxccl spends its time; rows of (what, seconds)."""
    n = args.lat_iters
    t = torch.zeros(2)
    rows = []

    times = []
    for _ in range(n):
        t0 = clock()
        times.append(clock() - t0)
    rows.append(("Python loop + clock (floor)", slowest(times, gloo)))

    times = []
    for _ in range(n):
        t0 = clock()
        t.add_(0)
        times.append(clock() - t0)
    rows.append(("torch eager op, t.add_(0)", slowest(times, gloo)))

    for name, pg in (("oxccl", None), ("gloo", gloo)):
        for _ in range(10):
            dist.all_reduce(t, group=pg)
        issue, wait, total = [], [], []
        for _ in range(n):
            t0 = clock()
            w = dist.all_reduce(t, group=pg, async_op=True)
            t1 = clock()
            w.wait()
            t2 = clock()
            issue.append(t1 - t0)
            wait.append(t2 - t1)
            total.append(t2 - t0)
        rows.append(("torch all_reduce(async_op=True) over %s: issue" % name,
                     slowest(issue, gloo)))
        rows.append(("  then Work.wait()", slowest(wait, gloo)))
        rows.append(("  issue + wait", slowest(total, gloo)))

    # The same allreduce straight on liboxccl, on a second communicator of these ranks.
    uid = [oxccl.unique_id() if rank == 0 else None]
    dist.broadcast_object_list(uid, src=0, group=gloo)
    comm = oxccl.Comm(size, uid[0], rank)
    a = np.zeros(2, np.float32)
    for _ in range(10):
        comm.all_reduce(a)
    times = []
    for _ in range(n):
        t0 = clock()
        comm.all_reduce(a)
        times.append(clock() - t0)
    rows.append(("oxccl package: comm.all_reduce(numpy)", slowest(times, gloo)))

    fn = oxccl._lib.oxcclAllReduce
    p = ctypes.c_void_p(a.ctypes.data)
    h = comm._handle()
    times = []
    for _ in range(n):
        t0 = clock()
        rc = fn(p, p, 2, oxccl.FLOAT32, oxccl.SUM, h)
        times.append(clock() - t0)
        if rc != 0:
            raise RuntimeError("oxcclAllReduce returned %d" % rc)
    rows.append(("bare ctypes oxcclAllReduce (C call + ~1 us ctypes)", slowest(times, gloo)))
    dist.barrier(group=gloo)
    comm.destroy()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bw-mib", type=int, default=64)
    ap.add_argument("--bw-iters", type=int, default=7)
    ap.add_argument("--lat-iters", type=int, default=200)
    ap.add_argument("--ddp-steps", type=int, default=10)
    ap.add_argument("--ddp-warmup", type=int, default=3)
    ap.add_argument("--ddp-batch", type=int, default=16)
    ap.add_argument("--no-ddp", action="store_true")
    ap.add_argument("--no-breakdown", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    timeout = datetime.timedelta(seconds=600)
    dist.init_process_group("oxccl", timeout=timeout)
    rank, size = dist.get_rank(), dist.get_world_size()
    gloo = dist.new_group(backend="gloo", timeout=timeout)
    groups = [("oxccl", None), ("gloo", gloo)]
    out = []  # (what, {backend: value}, unit)

    def say(*a):
        if rank == 0:
            print(*a, flush=True)

    say("# %d ranks, torch %s, oxccl %s, OMP threads %d, load average %s"
        % (size, torch.__version__, oxccl.__version__, torch.get_num_threads(),
           " ".join("%.2f" % v for v in os.getloadavg())))

    nbytes = args.bw_mib << 20
    big = torch.zeros(nbytes // 4)
    row = {}
    for name, pg in groups:
        t = slowest(allreduce_times(pg, big, args.bw_iters, 2, gloo, True), gloo)
        row[name] = (t, nbytes * 2 * (size - 1) / size / t / 1e9)
    out.append(("all_reduce %d MiB float32: time" % args.bw_mib,
                {k: "%.1f ms" % (v[0] * 1e3) for k, v in row.items()}))
    out.append(("all_reduce %d MiB float32: busbw" % args.bw_mib,
                {k: "%.2f GB/s" % v[1] for k, v in row.items()}))
    say("# bandwidth done")
    del big

    small = torch.zeros(2)
    row = {}
    for name, pg in groups:
        row[name] = slowest(allreduce_times(pg, small, args.lat_iters, 20, gloo, False), gloo)
    out.append(("all_reduce 8 bytes: latency (median of %d)" % args.lat_iters,
                {k: "%.1f us" % (v * 1e6) for k, v in row.items()}))
    say("# latency done")

    if not args.no_ddp:
        nparams = sum(p.numel() for p in make_model().parameters())
        local = slowest(ddp_step_times(False, args, rank, gloo), gloo)
        row = {}
        for name, pg in groups:
            row[name] = slowest(ddp_step_times(pg, args, rank, gloo), gloo)
        what = "DDP step, %.1fM-param MLP, batch %d (median of %d)" % (
            nparams / 1e6, args.ddp_batch, args.ddp_steps)
        out.append((what, {k: "%.0f ms" % (v * 1e3) for k, v in row.items()}))
        out.append(("  same step without DDP (compute only)",
                    {k: "%.0f ms" % (local * 1e3) for k in row}))
        out.append(("  DDP's cost over compute",
                    {k: "%.0f ms" % ((v - local) * 1e3) for k, v in row.items()}))
        say("# DDP done")

    rows = [] if args.no_breakdown else breakdown(args, rank, size, gloo)

    if rank == 0:
        w = max(len(r[0]) for r in out) + 2
        print("\n%-*s %14s %14s" % (w, "%d ranks" % size, "oxccl", "gloo"))
        for what, vals in out:
            print("%-*s %14s %14s" % (w, what, vals["oxccl"], vals["gloo"]))
        if rows:
            print("\n8-byte all_reduce, where the time goes (median, slowest rank):")
            for what, v in rows:
                print("  %-52s %8.1f us" % (what, v * 1e6))
        sys.stdout.flush()
    dist.barrier(group=gloo)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
