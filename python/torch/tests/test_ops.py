"""Every operation of the oxccl torch backend, for every dtype and reduction it supports,
against gloo's result in the same process (bitwise), plus refused arguments, failures,
timeouts and sub-groups. Run on every rank:

    target/release/rankrun -n 2 python python/torch/tests/test_ops.py
    target/release/rankrun -n 4 python python/torch/tests/test_ops.py

Reductions use small integer values (as floats for the floating types), whose sums and
products are exact in every dtype, so results are bitwise equal whatever order the two
libraries add in. Random floats are compared bitwise at 2 ranks (a + b == b + a) and within
rounding at more (gloo and oxccl associate sums differently); oxccl's own results must still
be bitwise identical on every rank and from run to run. Where gloo lacks an operation
(integer AVG, PREMUL_SUM, some dtypes), the reference is computed locally from every rank's
regenerated input; the summary says how many checks had gloo as reference.
"""

import datetime
import time
import zlib

import torch
import torch.distributed as dist

from common import Suite, close, first_error, same

FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
INTS = [torch.int8, torch.uint8, torch.int32, torch.int64]
DTYPES = FLOATS + INTS + [torch.bool]
OPS = {
    "float": ["SUM", "PRODUCT", "MIN", "MAX", "AVG", "PREMUL_SUM"],
    "int": ["SUM", "PRODUCT", "MIN", "MAX", "AVG", "BAND", "BOR", "BXOR"],
    "bool": ["SUM", "PRODUCT", "MIN", "MAX", "BAND", "BOR", "BXOR"],
}
FACTOR = 0.5
N = 13  # odd, small
BIG = 70001  # several chunks and channels

suite = Suite("test_ops")
rank, size, gloo = suite.rank, suite.size, suite.gloo
stats = {"gloo": 0, "local": 0, "local_names": set()}


def kind(dt):
    return "bool" if dt == torch.bool else "float" if dt.is_floating_point else "int"


def exact(dt, numel, seed):
    """Small integers (0/1 for bool, 0..4 for uint8, -4..4 otherwise): every sum and product
    of up to 4 of them is exact in every dtype."""
    g = torch.Generator().manual_seed(seed)
    if dt == torch.bool:
        return torch.randint(0, 2, (numel,), generator=g).bool()
    lo = 0 if dt == torch.uint8 else -4
    return torch.randint(lo, 5, (numel,), generator=g).to(dt)


def seed(*parts):
    """A seed from `parts`, the same in every process (str hashes are salted per process)."""
    return zlib.crc32(repr(parts).encode()) % (2 ** 31)


def redop(op):
    if op == "PREMUL_SUM":
        return dist._make_nccl_premul_sum(FACTOR)
    return getattr(dist.ReduceOp, op)


def local_reduce(op, xs):
    """The reduction of the ranks' inputs `xs`, computed exactly (wide type, then cast)."""
    dt = xs[0].dtype
    if dt == torch.bool:
        op = {"SUM": "MAX", "PRODUCT": "MIN"}.get(op, op)
    wide = torch.float64 if dt.is_floating_point else torch.int64
    w = [x.to(wide) for x in xs]
    if op == "PREMUL_SUM":
        w = [x * FACTOR for x in w]
    f = {"SUM": torch.add, "PREMUL_SUM": torch.add, "AVG": torch.add, "PRODUCT": torch.mul,
         "MIN": torch.minimum, "MAX": torch.maximum, "BAND": torch.bitwise_and,
         "BOR": torch.bitwise_or, "BXOR": torch.bitwise_xor}[op]
    acc = w[0].clone()
    for x in w[1:]:
        acc = f(acc, x)
    if op == "AVG":
        acc = acc / len(xs) if dt.is_floating_point else torch.div(acc, len(xs),
                                                                  rounding_mode="trunc")
    return acc.to(dt)


def for_gloo(x, op):
    """gloo's input and op for `op` (gloo has no PREMUL_SUM: scale locally, then sum)."""
    if op == "PREMUL_SUM":
        return (x.double() * FACTOR).to(x.dtype), dist.ReduceOp.SUM
    return x.clone(), redop(op)


def gloo_try(fn):
    """fn() over gloo, or None where gloo refuses it (the same on every rank)."""
    try:
        return fn()
    except (RuntimeError, ValueError, TypeError):
        return None


def compare(got, local, glo, what):
    """Checks `got` against the local reference and, where gloo ran, against gloo."""
    if glo is not None:
        stats["gloo"] += 1
        return first_error(same(got, glo, what + " vs gloo"), same(got, local, what + " vs exact"))
    stats["local"] += 1
    stats["local_names"].add(suite.current)
    return same(got, local, what + " vs exact")


# --- reductions ------------------------------------------------------------------------------

def t_allreduce(dt, op, numel):
    xs = [exact(dt, numel, seed("ar", dt, op, k)) for k in range(size)]
    got = xs[rank].clone()
    dist.all_reduce(got, op=redop(op))
    g, gop = for_gloo(xs[rank], op)
    glo = gloo_try(lambda: (dist.all_reduce(g, op=gop, group=gloo), g)[1])
    return compare(got, local_reduce(op, xs), glo, "allreduce")


def t_reduce(dt, op, root):
    xs = [exact(dt, N, seed("red", dt, op, k)) for k in range(size)]
    got = xs[rank].clone()
    dist.reduce(got, dst=root, op=redop(op))
    g, gop = for_gloo(xs[rank], op)
    glo = gloo_try(lambda: (dist.reduce(g, dst=root, op=gop, group=gloo), g)[1])
    if rank != root:  # oxccl reduces in place and writes the root's tensor only
        return same(got, xs[rank], "non-root tensor")
    return compare(got, local_reduce(op, xs), glo, "reduce")


def t_reduce_scatter(dt, op, counts):
    # ins[k][j]: rank k's block for rank j
    ins = [[exact(dt, counts[j], seed("rs", dt, op, k, j)) for j in range(size)]
           for k in range(size)]
    out = torch.empty(counts[rank], dtype=dt)
    dist.reduce_scatter(out, [t.clone() for t in ins[rank]], op=redop(op))
    g = torch.empty(counts[rank], dtype=dt)
    gins = [for_gloo(t, op) for t in ins[rank]]
    glo = gloo_try(lambda: (dist.reduce_scatter(g, [t for t, _ in gins], op=gins[0][1],
                                                group=gloo), g)[1])
    return compare(out, local_reduce(op, [ins[k][rank] for k in range(size)]), glo,
                   "reduce_scatter")


def t_reduce_scatter_tensor(dt, op):
    xs = [exact(dt, N * size, seed("rst", dt, op, k)) for k in range(size)]
    out = torch.empty(N, dtype=dt)
    dist.reduce_scatter_tensor(out, xs[rank].clone(), op=redop(op))
    g = torch.empty(N, dtype=dt)
    gx, gop = for_gloo(xs[rank], op)
    glo = gloo_try(lambda: (dist.reduce_scatter_tensor(g, gx, op=gop, group=gloo), g)[1])
    want = local_reduce(op, [x[rank * N:(rank + 1) * N] for x in xs])
    return compare(out, want, glo, "reduce_scatter_tensor")


def t_allreduce_coalesced(dt, op, how):
    xss = [[exact(dt, n, seed("arc", dt, op, k, i)) for i, n in enumerate((N, 1, 300))]
           for k in range(size)]
    got = [t.clone() for t in xss[rank]]
    if how == "all_reduce_coalesced":
        dist.all_reduce_coalesced(got, op=redop(op))
    else:  # torch's coalescing manager: its fast path calls allreduce_coalesced
        with dist._coalescing_manager(device=torch.device("cpu"), async_ops=True) as cm:
            for t in got:
                dist.all_reduce(t, op=redop(op))
        cm.wait()
    errs = []
    for i, t in enumerate(got):
        g = xss[rank][i].clone()
        glo = gloo_try(lambda: (dist.all_reduce(g, op=redop(op), group=gloo), g)[1])
        errs.append(compare(t, local_reduce(op, [x[i] for x in xss]), glo, "tensor %d" % i))
    return first_error(*errs)


def t_allreduce_other(dt, op):
    """dtypes gloo lacks (fp8, uint32, uint64): against the exact local result. fp8 data are
    integers small enough that every partial sum is exact (e5m2 has 3 significant bits)."""
    lim = 2 if dt == torch.float8_e5m2 else 4
    xs = [torch.randint(-lim if dt.is_floating_point else 0, lim + 1, (N,),
                        generator=torch.Generator().manual_seed(seed("aro", dt, op, k))).to(dt)
          for k in range(size)]
    got = xs[rank].clone()
    dist.all_reduce(got, op=redop(op))
    if dt.is_floating_point:
        want = local_reduce(op, [x.float() for x in xs]).to(dt)
    else:
        want = local_reduce(op, [x.to(torch.int64) for x in xs]).to(dt)
    stats["local"] += 1
    stats["local_names"].add(suite.current)
    return same(got, want, "allreduce")


def t_random_sum(dt, numel):
    """Random floats: bitwise equal to gloo at 2 ranks, within rounding beyond; identical on
    every rank and from run to run."""
    x = torch.randn(numel, generator=torch.Generator().manual_seed(seed("rnd", rank))).to(dt)
    a, b = x.clone(), x.clone()
    dist.all_reduce(a)
    dist.all_reduce(b)
    g = x.clone()
    dist.all_reduce(g, group=gloo)
    everyone = [torch.empty_like(a) for _ in range(size)]
    dist.all_gather(everyone, a, group=gloo)
    errs = [same(a, b, "second run"), same(a, everyone[0], "rank 0's result")]
    if size == 2:
        errs.append(same(a, g, "vs gloo"))
    else:
        tol = {torch.float32: 1e-5, torch.float64: 1e-12, torch.float16: 2e-3,
               torch.bfloat16: 2e-2}[dt]
        errs.append(close(a, g, tol, tol * size, "vs gloo"))
    return first_error(*errs)


# --- data movement ---------------------------------------------------------------------------

def t_broadcast(dt, root):
    x = exact(dt, N, seed("bc", dt, rank))
    got, g = x.clone(), x.clone()
    dist.broadcast(got, src=root)
    dist.broadcast(g, src=root, group=gloo)
    stats["gloo"] += 1
    return first_error(same(got, g, "vs gloo"),
                       same(got, exact(dt, N, seed("bc", dt, root)), "vs root's"))


def t_all_gather(dt):
    x = exact(dt, N, seed("ag", dt, rank))
    out = [torch.empty(N, dtype=dt) for _ in range(size)]
    g = [torch.empty(N, dtype=dt) for _ in range(size)]
    dist.all_gather(out, x)
    dist.all_gather(g, x, group=gloo)
    stats["gloo"] += 1
    return first_error(*[same(out[k], g[k], "block %d vs gloo" % k) for k in range(size)],
                       *[same(out[k], exact(dt, N, seed("ag", dt, k)), "block %d" % k)
                         for k in range(size)])


def t_all_gather_into_tensor(dt, in_place):
    x = exact(dt, N, seed("agt", dt, rank))
    out = torch.empty(N * size, dtype=dt)
    if in_place:
        out[rank * N:(rank + 1) * N] = x
        dist.all_gather_into_tensor(out, out[rank * N:(rank + 1) * N])
    else:
        dist.all_gather_into_tensor(out, x)
    g = torch.empty(N * size, dtype=dt)
    glo = gloo_try(lambda: (dist.all_gather_into_tensor(g, x, group=gloo), g)[1])
    want = torch.cat([exact(dt, N, seed("agt", dt, k)) for k in range(size)])
    return compare(out, want, glo, "all_gather_into_tensor")


def t_all_gather_coalesced(dt):
    # torch's layout: one output list per rank, holding that rank's copy of every input.
    xs = [exact(dt, n, seed("agc", dt, rank, i)) for i, n in enumerate((N, 2))]
    outs = [[torch.empty(x.numel(), dtype=dt) for x in xs] for _ in range(size)]
    dist.all_gather_coalesced(outs, xs)
    g = [[torch.empty_like(x) for x in xs] for _ in range(size)]
    glo = gloo_try(lambda: (dist.all_gather_coalesced(g, xs, group=gloo), g)[1])
    errs = []
    for k in range(size):
        for i, x in enumerate(xs):
            want = exact(dt, x.numel(), seed("agc", dt, k, i))
            what = "rank %d's tensor %d" % (k, i)
            errs.append(compare(outs[k][i], want, glo and glo[k][i], what))
    return first_error(*errs)


def t_all_gather_into_tensor_coalesced(dt):
    xs = [exact(dt, n, seed("agtc", dt, rank, i)) for i, n in enumerate((N, 5))]
    outs = [torch.empty(x.numel() * size, dtype=dt) for x in xs]
    with dist._coalescing_manager(device=torch.device("cpu"), async_ops=True) as cm:
        for o, x in zip(outs, xs):
            dist.all_gather_into_tensor(o, x)
    cm.wait()
    errs = []
    for i, (o, x) in enumerate(zip(outs, xs)):
        g = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(g, x, group=gloo)
        stats["gloo"] += 1
        errs.append(same(o, torch.cat(g), "tensor %d vs gloo" % i))
    return first_error(*errs)


def t_reduce_scatter_tensor_coalesced(dt):
    xs = [exact(dt, n * size, seed("rstc", dt, rank, i)) for i, n in enumerate((N, 3))]
    outs = [torch.empty(x.numel() // size, dtype=dt) for x in xs]
    with dist._coalescing_manager(device=torch.device("cpu"), async_ops=True) as cm:
        for o, x in zip(outs, xs):
            dist.reduce_scatter_tensor(o, x)
    cm.wait()
    errs = []
    for i, (o, x) in enumerate(zip(outs, xs)):
        g = x.clone()
        dist.all_reduce(g, group=gloo)
        stats["gloo"] += 1
        n = o.numel()
        errs.append(same(o, g[rank * n:(rank + 1) * n], "tensor %d vs gloo" % i))
    return first_error(*errs)


def t_gather(dt, root, single):
    x = exact(dt, N, seed("ga", dt, rank))
    want = [exact(dt, N, seed("ga", dt, k)) for k in range(size)]
    if single:
        out = torch.empty(N * size, dtype=dt) if rank == root else None
        dist.gather_into_tensor(x, out, dst=root)
        return same(out, torch.cat(want)) if rank == root else None
    out = [torch.empty(N, dtype=dt) for _ in range(size)] if rank == root else None
    dist.gather(x, out, dst=root)
    g = [torch.empty(N, dtype=dt) for _ in range(size)] if rank == root else None
    dist.gather(x, g, dst=root, group=gloo)
    stats["gloo"] += 1
    if rank != root:
        return None
    return first_error(*[same(out[k], g[k], "block %d vs gloo" % k) for k in range(size)],
                       *[same(out[k], want[k], "block %d" % k) for k in range(size)])


def t_scatter(dt, root):
    ins = [exact(dt, N, seed("sc", dt, k)) for k in range(size)]
    out, g = torch.empty(N, dtype=dt), torch.empty(N, dtype=dt)
    dist.scatter(out, [t.clone() for t in ins] if rank == root else None, src=root)
    dist.scatter(g, [t.clone() for t in ins] if rank == root else None, src=root, group=gloo)
    stats["gloo"] += 1
    return first_error(same(out, g, "vs gloo"), same(out, ins[rank]))


def t_all_to_all(dt):
    # ins[k][j]: rank k's block for rank j, of k + j + 1 elements
    ins = [[exact(dt, k + j + 1, seed("a2a", dt, k, j)) for j in range(size)]
           for k in range(size)]
    out = [torch.empty(k + rank + 1, dtype=dt) for k in range(size)]
    dist.all_to_all(out, [t.clone() for t in ins[rank]])
    g = [torch.empty(k + rank + 1, dtype=dt) for k in range(size)]
    glo = gloo_try(lambda: (dist.all_to_all(g, [t.clone() for t in ins[rank]], group=gloo), g)[1])
    errs = [same(out[k], ins[k][rank], "block from %d" % k) for k in range(size)]
    if glo is not None:
        stats["gloo"] += 1
        errs += [same(out[k], glo[k], "block from %d vs gloo" % k) for k in range(size)]
    else:
        stats["local"] += 1
        stats["local_names"].add(suite.current)
    return first_error(*errs)


def t_all_to_all_single(dt, uneven):
    cols = 3
    if uneven:  # rows rank k sends to rank j: (k + 2j) % 3 (zero-sized blocks included)
        rows = lambda k, j: (k + 2 * j) % 3  # noqa: E731
    else:
        rows = lambda k, j: 2  # noqa: E731
    ins = [exact(dt, sum(rows(k, j) for j in range(size)) * cols, seed("a2as", dt, k)).view(-1, cols)
           for k in range(size)]
    in_splits = [rows(rank, j) for j in range(size)]
    out_splits = [rows(k, rank) for k in range(size)]
    out = torch.empty(sum(out_splits), cols, dtype=dt)
    g = torch.empty(sum(out_splits), cols, dtype=dt)
    kw = dict(output_split_sizes=out_splits, input_split_sizes=in_splits) if uneven else {}
    dist.all_to_all_single(out, ins[rank], **kw)
    glo = gloo_try(lambda: (dist.all_to_all_single(g, ins[rank], group=gloo, **kw), g)[1])
    parts = []
    for k in range(size):
        start = sum(rows(k, j) for j in range(rank))
        parts.append(ins[k][start:start + rows(k, rank)])
    return compare(out, torch.cat(parts), glo, "all_to_all_single")


def t_p2p(dt, how):
    numel = 100003 if how == "isend-large" else N
    nxt, prv = (rank + 1) % size, (rank - 1) % size
    x = exact(dt, numel, seed("p2p", dt, rank))
    got = torch.empty(numel, dtype=dt)
    if how == "batch":
        ops = [dist.P2POp(dist.isend, x, nxt), dist.P2POp(dist.irecv, got, prv)]
        for w in dist.batch_isend_irecv(ops):
            w.wait()
    elif how.startswith("isend"):  # every rank sends first: oxccl starts both together
        a = dist.isend(x, nxt)
        b = dist.irecv(got, prv)
        b.wait()
        a.wait()
    else:  # blocking, in an order that cannot deadlock
        if rank % 2 == 0:
            dist.send(x, nxt)
            dist.recv(got, prv)
        else:
            dist.recv(got, prv)
            dist.send(x, nxt)
    return same(got, exact(dt, numel, seed("p2p", dt, prv)), "received from %d" % prv)


def t_p2p_patterns(how):
    """Sends/receives that oxccl defers: started by polling, by a collective, one pair after
    another."""
    nxt, prv = (rank + 1) % size, (rank - 1) % size
    xs = [torch.full((N,), float(100 * rank + i)) for i in range(2)]
    got = [torch.empty(N) for _ in range(2)]
    if how == "poll":
        a, b = dist.isend(xs[0], nxt), dist.irecv(got[0], prv)
        t0 = time.monotonic()
        while not b.is_completed():
            if time.monotonic() - t0 > 60:
                return "irecv never completed"
        a.wait()
        got[1] = xs[1] - 100 * (rank - prv)  # only the first is exchanged
    elif how == "collective":
        a, b = dist.isend(xs[0], nxt), dist.irecv(got[0], prv)
        y = torch.ones(3)
        dist.all_reduce(y)  # starts the deferred pair first
        b.wait()
        a.wait()
        got[1] = xs[1] - 100 * (rank - prv)
        if not bool((y == size).all()):
            return "allreduce %r" % y
    else:  # one pair after another, each waited on
        works = []
        for i in range(2):
            works += [dist.isend(xs[i], nxt), dist.irecv(got[i], prv)]
            works[-1].wait()
        for w in works:
            w.wait()
    return first_error(*[same(got[i], torch.full((N,), float(100 * prv + i)), "message %d" % i)
                         for i in range(2)])


def t_barrier():
    dist.barrier()
    w = dist.barrier(async_op=True)
    w.wait()
    return None


def t_objects():
    objs = [None] * size
    dist.all_gather_object(objs, {"rank": rank, "name": "r%d" % rank})
    lst = [{"root": rank}, "x" * rank]
    dist.broadcast_object_list(lst, src=0)
    return first_error(
        None if objs == [{"rank": k, "name": "r%d" % k} for k in range(size)] else repr(objs),
        None if lst == [{"root": 0}, ""] else repr(lst))


def t_other_dtypes():
    """Operations that only move data take any dtype (as bytes)."""
    errs = []
    for dt in (torch.int16, torch.complex64, torch.uint16):
        x = (torch.arange(N) + 100 * rank).to(dt)
        b = x.clone()
        dist.broadcast(b, src=size - 1)
        errs.append(same(b, (torch.arange(N) + 100 * (size - 1)).to(dt), "broadcast %s" % dt))
        out = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(out, x)
        errs += [same(out[k], (torch.arange(N) + 100 * k).to(dt), "all_gather %s" % dt)
                 for k in range(size)]
    return first_error(*errs)


def t_async():
    xs = [torch.full((1000,), float(rank + i)) for i in range(8)]
    works = [dist.all_reduce(x, async_op=True) for x in xs]
    futs = [w.get_future() for w in works]
    then = futs[0].then(lambda f: f.value()[0] * 2)
    for w in reversed(works):
        w.wait()
    errs = []
    for i, x in enumerate(xs):
        want = float(sum(k + i for k in range(size)))
        errs.append(None if bool((x == want).all()) else "tensor %d: %r" % (i, x[0].item()))
        errs.append(None if futs[i].value()[0] is not None and bool((futs[i].value()[0] == want).all())
                    else "future %d" % i)
        errs.append(None if works[i].is_completed() and works[i].is_success() else "work %d" % i)
    errs.append(None if bool((then.wait() == 2 * float(sum(range(size)))).all()) else "then")
    return first_error(*errs)


# --- refused arguments, failures, timeouts ---------------------------------------------------

def raises(fn, exc, words):
    try:
        fn()
    except exc as e:
        if all(w in str(e) for w in words):
            return None
        return "raised %s without %r: %s" % (type(e).__name__, words, e)
    except Exception as e:  # noqa: BLE001
        return "raised %s, not %s: %s" % (type(e).__name__, exc.__name__, e)
    return "did not raise"


def t_refused():
    t = torch.ones(4)
    errs = [
        raises(lambda: dist.all_reduce(torch.ones(4, dtype=torch.int16)), TypeError,
               ["reductions of Short are not supported"]),
        raises(lambda: dist.all_reduce(torch.ones(4, dtype=torch.complex64), op=dist.ReduceOp.MAX),
               (TypeError, ValueError, RuntimeError), []),
        raises(lambda: dist.all_reduce(t, op=dist.ReduceOp.BAND), ValueError,
               ["BAND needs integer or bool tensors"]),
        raises(lambda: dist.all_reduce(torch.ones(4, dtype=torch.bool), op=dist.ReduceOp.AVG),
               ValueError, ["AVG is not defined for bool"]),
        raises(lambda: dist.all_reduce(torch.ones(4, dtype=torch.int32),
                                       op=dist._make_nccl_premul_sum(2.0)),
               ValueError, ["PREMUL_SUM is supported for floating-point tensors only"]),
        raises(lambda: dist.all_reduce(torch.ones(4, 4).t()), ValueError, ["not contiguous"]),
        raises(lambda: dist.reduce_scatter_tensor(torch.empty(3), torch.empty(3 * size + 1)),
               ValueError, ["elements"]),
        raises(lambda: dist.all_to_all_single(torch.empty(size, 2), torch.empty(size, 2),
                                              [1] * (size + 1), [1] * size),
               ValueError, ["split sizes"]),
        raises(lambda: dist.send(t, (rank + 1) % size, tag=7), ValueError, ["tag 7"]),
        raises(lambda: dist.recv(t), Exception, ["any source"]),
    ]
    # The communicator is still usable after refused calls.
    x = torch.full((3,), float(rank))
    dist.all_reduce(x)
    errs.append(None if bool((x == float(sum(range(size)))).all()) else "allreduce after: %r" % x)
    return first_error(*errs)


def t_remote_failure():
    """Ranks 0 and 1 disagree on an alltoallv's counts: both raise RuntimeError with oxccl's
    message (the group is then failed, and destroyed)."""
    bad = dist.new_group(backend="oxccl")
    splits_in = [1] * size
    splits_out = [1] * size
    if rank == 1:
        splits_out[0] = 2  # expects 2 rows from rank 0, which sends 1
    inp = torch.zeros(sum(splits_in), 2)
    out = torch.zeros(sum(splits_out), 2)
    err = None
    try:
        dist.all_to_all_single(out, inp, splits_out, splits_in, group=bad)
        if rank in (0, 1):
            err = "rank %d: no error" % rank
    except RuntimeError as e:
        if rank in (0, 1) and "mismatched counts" not in str(e):
            err = "message without oxccl's explanation: %s" % e
    dist.destroy_process_group(bad)
    return err


def t_timeout():
    """Rank 0 alone enters a barrier of a group with a 3 s timeout: it raises within it."""
    slow = dist.new_group(backend="oxccl", timeout=datetime.timedelta(seconds=3))
    err = None
    if rank == 0:
        t0 = time.monotonic()
        try:
            dist.barrier(group=slow)
            err = "no error"
        except RuntimeError as e:
            dt = time.monotonic() - t0
            if not 2.0 <= dt <= 30.0:
                err = "raised after %.1f s" % dt
            elif "oxcclTimeout" not in str(e) and "oxcclRemoteError" not in str(e):
                err = "unexpected error: %s" % e
    dist.barrier(group=gloo)
    dist.destroy_process_group(slow)
    return err


# --- groups ----------------------------------------------------------------------------------

def t_split_group(split):
    pg = dist.split_group(split_ranks=split)
    mine = next(s for s in split if rank in s)
    x = torch.full((5,), float(rank + 1))
    dist.all_reduce(x, group=pg)
    errs = [None if dist.get_rank(pg) == mine.index(rank) else "group rank %d" % dist.get_rank(pg),
            None if bool((x == float(sum(k + 1 for k in mine))).all()) else "sum %r" % x[0].item()]
    if len(mine) > 1:  # ordering inside the group: broadcast from group rank 0 = mine[0]
        b = torch.full((2,), float(rank))
        dist.broadcast(b, group_src=0, group=pg)
        errs.append(None if bool((b == float(mine[0])).all()) else "broadcast %r" % b[0].item())
    dist.destroy_process_group(pg)
    return first_error(*errs)


def t_new_group(ranks):
    pg = dist.new_group(ranks=ranks, backend="oxccl")
    if rank not in ranks:
        return None
    x = torch.full((3,), float(rank + 1))
    dist.all_reduce(x, group=pg)
    g = [torch.empty(1) for _ in ranks]
    dist.all_gather(g, torch.tensor([float(rank)]), group=pg)
    return first_error(
        None if bool((x == float(sum(k + 1 for k in ranks))).all()) else "sum %r" % x[0].item(),
        # new_group orders its ranks by global rank (split_group keeps the given order)
        None if [int(t.item()) for t in g] == sorted(ranks) else "order %r" % g)


# --- the run ---------------------------------------------------------------------------------

for dt in DTYPES:
    for op in OPS[kind(dt)]:
        suite.check("allreduce %s %s" % (dt, op), t_allreduce, dt, op, N)
        suite.check("reduce %s %s" % (dt, op), t_reduce, dt, op, size - 1)
        suite.check("reduce_scatter %s %s" % (dt, op), t_reduce_scatter, dt, op, [N] * size)
        suite.check("reduce_scatter uneven %s %s" % (dt, op), t_reduce_scatter, dt, op,
                    [k % 3 for k in range(size)][::-1] if size > 2 else [0, 5])
        suite.check("reduce_scatter_tensor %s %s" % (dt, op), t_reduce_scatter_tensor, dt, op)
    suite.check("allreduce %s SUM large" % dt, t_allreduce, dt, "SUM", BIG)
    suite.check("all_reduce_coalesced %s" % dt, t_allreduce_coalesced, dt, "SUM",
                "all_reduce_coalesced")
    suite.check("coalescing manager all_reduce %s" % dt, t_allreduce_coalesced, dt,
                "MAX", "manager")
    for root in sorted({0, size - 1}):
        suite.check("broadcast %s root %d" % (dt, root), t_broadcast, dt, root)
        suite.check("gather %s root %d" % (dt, root), t_gather, dt, root, False)
        suite.check("gather_into_tensor %s root %d" % (dt, root), t_gather, dt, root, True)
        suite.check("scatter %s root %d" % (dt, root), t_scatter, dt, root)
    suite.check("all_gather %s" % dt, t_all_gather, dt)
    suite.check("all_gather_into_tensor %s" % dt, t_all_gather_into_tensor, dt, False)
    suite.check("all_gather_into_tensor in place %s" % dt, t_all_gather_into_tensor, dt, True)
    suite.check("all_gather_coalesced %s" % dt, t_all_gather_coalesced, dt)
    suite.check("all_gather_into_tensor coalesced %s" % dt, t_all_gather_into_tensor_coalesced, dt)
    if dt != torch.bool:
        suite.check("reduce_scatter_tensor coalesced %s" % dt, t_reduce_scatter_tensor_coalesced, dt)
    suite.check("all_to_all %s" % dt, t_all_to_all, dt)
    suite.check("all_to_all_single %s" % dt, t_all_to_all_single, dt, False)
    suite.check("all_to_all_single splits %s" % dt, t_all_to_all_single, dt, True)
    for how in ("batch", "isend", "blocking"):
        suite.check("send/recv %s %s" % (how, dt), t_p2p, dt, how)
for dt in (torch.float8_e4m3fn, torch.float8_e5m2):
    for op in ("SUM", "MIN", "MAX"):
        suite.check("allreduce %s %s" % (dt, op), t_allreduce_other, dt, op)
for dt in (torch.uint32, torch.uint64):
    for op in ("SUM", "MAX", "BOR"):
        suite.check("allreduce %s %s" % (dt, op), t_allreduce_other, dt, op)
for dt in FLOATS:
    suite.check("allreduce random %s" % dt, t_random_sum, dt, N)
    suite.check("allreduce random %s large" % dt, t_random_sum, dt, BIG)
suite.check("send/recv isend-large", t_p2p, torch.float32, "isend-large")
for how in ("poll", "collective", "sequence"):
    suite.check("send/recv deferred, %s" % how, t_p2p_patterns, how)
suite.check("barrier", t_barrier)
suite.check("objects", t_objects)
suite.check("other dtypes as bytes", t_other_dtypes)
suite.check("async works and futures", t_async)
suite.check("refused arguments", t_refused)
suite.check("remote failure carries oxccl's message", t_remote_failure)
suite.check("timeout", t_timeout)
suite.check("split_group singletons", t_split_group, [[k] for k in range(size)])
suite.check("split_group reversed", t_split_group, [list(reversed(range(size)))])
if size >= 4:
    suite.check("split_group halves", t_split_group, [[0, 1], [2, 3]] + [[k] for k in range(4, size)])
    suite.check("split_group interleaved", t_split_group, [[2, 0], [3, 1]] + [[k] for k in range(4, size)])
    suite.check("new_group [0, 1]", t_new_group, [0, 1])
suite.check("new_group reversed", t_new_group, list(reversed(range(size))))
suite.check("allreduce after everything", t_allreduce, torch.float32, "SUM", N)

if rank == 0:
    print("references: gloo %d, exact local only %d" % (stats["gloo"], stats["local"]), flush=True)
    if suite.verbose:
        print("local only: " + ", ".join(sorted(stats["local_names"])), flush=True)
suite.finish()
