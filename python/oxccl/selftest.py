"""Self-test of the Python binding, one rank per process under a launcher:

    rankrun -n 4 python3 -m oxccl.selftest

Checks every call on numpy arrays of every type (bfloat16 as uint16 bits, fp8 as uint8
bits) and every reduction (the bitwise ones on integer types), in place and out of place,
blocking and non-blocking, odd counts and count 0, send/recv, the exchange collectives
(alltoall, alltoallv, gather, scatter, allgatherv, reduce-scatterv) with uneven counts,
zeros and gapped displacements, split, errors (a mismatch reaching every rank), against
results computed with numpy. Exit status 0 on success; each rank prints one summary line.
"""

import math
import sys
import time

import numpy as np

import oxccl

FP8 = {"float8_e4m3": oxccl.FLOAT8_E4M3, "float8_e5m2": oxccl.FLOAT8_E5M2}
TYPES = [np.int8, np.uint8, np.int32, np.uint32, np.int64, np.uint64,
         np.float16, np.float32, np.float64, "bfloat16"] + list(FP8)
OPS = ["sum", "prod", "max", "min", "avg", "band", "bor", "bxor"]
BITWISE = ("band", "bor", "bxor")
COUNTS = [0, 1, 7, 1001]


def name_of(t):
    return t if isinstance(t, str) else np.dtype(t).name


def applies(t, op):
    """The bitwise operations take integer types only."""
    return op not in BITWISE or (not isinstance(t, str) and np.issubdtype(t, np.integer))


def to_bf16(x):
    """float values (exact in bfloat16) -> uint16 bfloat16 bits."""
    return (np.asarray(x, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def to_fp8(x, kind):
    """float values -> OCP fp8 bits (nearest, ties to even, saturating to the largest
    finite value, as oxccl narrows), as a uint8 array."""
    mbits, bias, maxbits = (3, 7, 0x7E) if kind == "float8_e4m3" else (2, 15, 0x7B)
    vals = np.asarray(x, np.float64).ravel()
    out = np.empty(vals.size, np.uint8)
    for i, v in enumerate(vals.tolist()):
        sign = 0x80 if math.copysign(1.0, v) < 0 else 0
        a = abs(v)
        if a < 2.0 ** (1 - bias):
            bits = int(round(a / 2.0 ** (1 - bias - mbits)))  # round() ties to even
        else:
            m, e = math.frexp(a)  # a = m * 2**e, 0.5 <= m < 1
            q = int(round((2 * m - 1) * (1 << mbits)))
            e -= 1
            if q == 1 << mbits:
                q, e = 0, e + 1
            eb = e + bias
            bits = maxbits if eb > maxbits >> mbits else min((eb << mbits) | q, maxbits)
        out[i] = sign | bits
    return out


def _mix(z):
    """splitmix64's finaliser on a uint64 array."""
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def gen(op, rank, n, t=None):
    """Small integers whose reductions over up to 8 ranks are exact in every type; full-width
    bit patterns for the bitwise ops (dense for band, sparse for bor); for fp8 values whose
    every partial result is exact (sums of magnitudes up to 2 in E4M3 and 1 in E5M2, powers
    of two for prod, -5..5 for max and min)."""
    i = np.arange(n, dtype=np.int64)
    if t in FP8:
        if op == "prod":
            return np.array([0.5, 1.0, 2.0])[(i + rank) % 3]
        if op in ("max", "min"):
            return ((i * 7 + rank * 5) % 11 - 5).astype(np.float64)
        k = 5 if t == "float8_e4m3" else 3
        return ((i + 2 * rank) % k - k // 2).astype(np.float64)
    if op in BITWISE:
        u = np.arange(n, dtype=np.uint64)
        salt = ((rank + 1) * 0xD1B54A32D192ED03 + BITWISE.index(op)) % (1 << 64)
        h = _mix(u * np.uint64(0x9E3779B97F4A7C15) + np.uint64(salt))
        if op == "band":
            return h | _mix(h + np.uint64(1))
        if op == "bor":
            return h & _mix(h + np.uint64(1)) & _mix(h + np.uint64(2))
        return h
    if op == "prod":
        return 1 + (i + rank) % 2
    if op == "avg":
        return i % 5 + rank
    return (i * 7 + rank * 5) % 11


def expected(op, size, n):
    vals = np.stack([gen(op, r, n) for r in range(size)]) if n else np.zeros((size, 0), np.int64)
    if op in ("sum", "avg"):
        out = vals.sum(axis=0)
    elif op == "prod":
        out = vals.prod(axis=0)
    elif op == "max":
        out = vals.max(axis=0)
    else:
        out = vals.min(axis=0)
    return out, op == "avg"


def typed(t, ints, halves=None):
    """Values as an array of type t (bfloat16: uint16 bits; fp8: uint8 bits) and the dtype
    argument."""
    if t in FP8:
        return to_fp8(ints if halves is None else halves, t), FP8[t]
    if t == "bfloat16":
        return to_bf16(ints if halves is None else halves), oxccl.BFLOAT16
    if np.issubdtype(t, np.integer):
        return np.asarray(ints).astype(np.uint64).astype(t), None
    return np.asarray(ints if halves is None else halves).astype(t), None


class Checker:
    def __init__(self, rank):
        self.rank, self.passed, self.failed = rank, 0, 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print("[rank %d] FAIL %s" % (self.rank, what), file=sys.stderr)

    def same(self, got, want, what):
        self.check(got.shape == want.shape and got.tobytes() == want.tobytes(), what)


def reduced(t, op, size, n):
    if t in FP8 or op in BITWISE:
        vals = [gen(op, r, n, t) for r in range(size)]
        if op in BITWISE:
            f = {"band": np.bitwise_and, "bor": np.bitwise_or, "bxor": np.bitwise_xor}[op]
            return typed(t, f.reduce(np.stack(vals), axis=0) if n else np.zeros(0, np.uint64))[0]
        v = np.stack(vals) if n else np.zeros((size, 0))
        out = {"prod": np.prod, "max": np.max, "min": np.min}.get(op, np.sum)(v, axis=0)
        if op == "avg":  # widened to float32, divided once, rounded to the type
            out = (out.astype(np.float32) / np.float32(size)).astype(np.float64)
        return typed(t, out)[0]
    out, avg = expected(op, size, n)
    if avg:
        if t == "bfloat16" or not np.issubdtype(t, np.integer):
            return typed(t, out // size, out / size)[0]
        return typed(t, out // size)[0]
    return typed(t, out, out.astype(np.float64))[0]


def collectives(comm, c):
    r, size = comm.rank, comm.size
    for n in COUNTS:
        for t in TYPES:
            for op in OPS:
                if not applies(t, op):
                    continue
                send, dt = typed(t, gen(op, r, n, t), gen(op, r, n, t).astype(np.float64))
                want = reduced(t, op, size, n)
                what = "%s %s count %d" % (name_of(t), op, n)
                # all_reduce: out of place, in place, non-blocking.
                out = comm.all_reduce(send, np.empty_like(send), op=op, dtype=dt)
                c.same(out, want, "all_reduce " + what)
                buf = send.copy()
                comm.all_reduce(buf, op=op, dtype=dt)
                c.same(buf, want, "all_reduce in place " + what)
                req = comm.iall_reduce(send, np.empty_like(send), op=op, dtype=dt)
                c.same(req.wait(), want, "iall_reduce " + what)
                # reduce at the last rank.
                root = size - 1
                out = comm.reduce(send, np.zeros_like(send), op=op, root=root, dtype=dt)
                if r == root:
                    c.same(out, want, "reduce " + what)
                # reduce_scatter: rank r gets block r.
                big_ints = gen(op, r, n * size, t)
                big, _ = typed(t, big_ints, big_ints.astype(np.float64))
                full = reduced(t, op, size, n * size)
                out = comm.reduce_scatter(big, op=op, dtype=dt)
                c.same(out, full[r * n:(r + 1) * n], "reduce_scatter " + what)
                req = comm.ireduce_scatter(big, np.empty_like(out), op=op, dtype=dt)
                while not req.test():
                    time.sleep(0.0005)
                c.same(req.result, full[r * n:(r + 1) * n], "ireduce_scatter " + what)
            # Data movement.
            what = "%s count %d" % (name_of(t), n)
            mine, dt = moved(t, (np.arange(n) * 3 + r * 13) % 100)
            everyone = np.stack([moved(t, (np.arange(n) * 3 + q * 13) % 100)[0]
                                 for q in range(size)])
            c.same(comm.all_gather(mine, dtype=dt), everyone, "all_gather " + what)
            c.same(comm.iall_gather(mine, dtype=dt).wait(), everyone, "iall_gather " + what)
            buf = mine.copy() if r == 0 else np.zeros_like(mine)
            comm.broadcast(buf, root=0, dtype=dt)
            c.same(buf, everyone[0], "broadcast " + what)
            out = comm.ibroadcast(mine, root=size - 1, recv=np.zeros_like(mine), dtype=dt).wait()
            c.same(out, everyone[size - 1], "ibroadcast " + what)
            if size > 1:
                nxt, prv = (r + 1) % size, (r - 1) % size
                got = np.zeros_like(mine)
                rs = comm.isend(mine, nxt, dtype=dt)
                rr = comm.irecv(got, prv, dtype=dt)
                rr.wait()
                rs.wait()
                c.same(got, everyone[prv], "isend/irecv " + what)


def moved(t, ints):
    """Data-movement values (< 100) as type t and the dtype argument; fp8 elements get them
    as their bit patterns (finite in both formats)."""
    if t in FP8:
        return np.asarray(ints).astype(np.uint8), FP8[t]
    return typed(t, ints)


SENTINEL = 111  # exact in every type (fp8: a finite bit pattern)


def gapped(counts, order, gap):
    """Displacements placing the blocks in `order`, block j after gap(j) elements, and the
    total length (a 2-element tail included)."""
    displs, end = [0] * len(counts), 0
    for j in order:
        end += gap(j)
        displs[j] = end
        end += counts[j]
    return displs, end + 2


def exchanges(comm, c):
    """alltoall(v), gather, scatter, allgatherv and reduce-scatterv, blocking and
    non-blocking, in place where defined, against numpy."""
    r, size = comm.rank, comm.size
    last = size - 1

    def val(src, dst, k):
        return (src * 37 + dst * 11 + np.asarray(k) * 3) % 100

    for n in COUNTS:
        ar = np.arange(n)
        for t in TYPES:
            what = "%s count %d" % (name_of(t), n)
            # all_to_all: block j of send to rank j.
            send, dt = moved(t, np.concatenate([val(r, j, ar) for j in range(size)]))
            want = moved(t, np.concatenate([val(i, r, ar) for i in range(size)]))[0]
            c.same(comm.all_to_all(send, dtype=dt), want, "all_to_all " + what)
            c.same(comm.iall_to_all(send, np.empty_like(send), dtype=dt).wait(), want,
                   "iall_to_all " + what)

            # all_to_all_v: uneven counts with zeros; send blocks in reverse rank order, receive
            # blocks even ranks first, both with gaps that must stay untouched.
            def cnt(i, j):
                return 0 if n == 0 or (i + 2 * j) % 4 == 1 else n + (i * 3 + j) % 5
            sc = [cnt(r, j) for j in range(size)]
            rc = [cnt(i, r) for i in range(size)]
            sd, s_end = gapped(sc, range(size - 1, -1, -1), lambda j: 1 + j % 3)
            rd, r_end = gapped(rc, list(range(0, size, 2)) + list(range(1, size, 2)),
                               lambda i: 2 + i % 2)
            s_ints = np.full(s_end, SENTINEL)
            w_ints = np.full(r_end, SENTINEL)
            for j in range(size):
                s_ints[sd[j]:sd[j] + sc[j]] = val(r, j, np.arange(sc[j]))
                w_ints[rd[j]:rd[j] + rc[j]] = val(j, r, np.arange(rc[j]))
            send = moved(t, s_ints)[0]
            want = moved(t, w_ints)[0]
            before = send.copy()
            got = comm.all_to_all_v(send, sc, sd, moved(t, np.full(r_end, SENTINEL))[0], rc, rd,
                                    dtype=dt)
            c.same(got, want, "all_to_all_v " + what)
            c.same(send, before, "all_to_all_v leaves send " + what)
            req = comm.ialltoallv(send, np.array(sc, np.uint64), np.array(sd),
                                  moved(t, np.full(r_end, SENTINEL))[0], rc, rd, dtype=dt)
            c.same(req.wait(), want, "ialltoallv " + what)

            # gather: at the last rank out of place, at rank 0 in place (own block of recv).
            mine = moved(t, val(r, 99, ar))[0]
            everyone = np.stack([moved(t, val(q, 99, ar))[0] for q in range(size)])
            out = comm.gather(mine, root=last, dtype=dt)
            if r == last:
                c.same(out, everyone, "gather " + what)
            else:
                c.check(out is None, "gather returns None away from the root " + what)
            if r == 0:
                buf = np.zeros_like(everyone)
                buf[0] = mine
                comm.igather(buf[0], buf, root=0, dtype=dt).wait()
                c.same(buf, everyone, "igather in place " + what)
            else:
                comm.igather(mine, root=0, dtype=dt).wait()

            # scatter: from rank 0 out of place, from the last rank in place.
            got = comm.scatter(everyone if r == 0 else None, np.zeros_like(mine), root=0,
                               dtype=dt)
            c.same(got, everyone[r], "scatter " + what)
            if r == last:
                src = everyone.copy()
                got = comm.iscatter(src, src[last], root=last, dtype=dt).wait()
                c.same(src, everyone, "iscatter in place " + what)
            else:
                got = comm.iscatter(None, np.zeros_like(mine), root=last, dtype=dt).wait()
                c.same(got, everyone[r], "iscatter " + what)

            # all_gather_v: zeros at ranks 1, 4, 7; blocks in reverse order with gaps; in place
            # for the non-blocking form.
            counts = [0 if n == 0 or j % 3 == 1 else n + 2 * j for j in range(size)]
            displs, end = gapped(counts, range(size - 1, -1, -1), lambda j: 1 + j % 2)
            w_ints = np.full(end, SENTINEL)
            for j in range(size):
                w_ints[displs[j]:displs[j] + counts[j]] = val(j, 50, np.arange(counts[j]))
            want = moved(t, w_ints)[0]
            own = moved(t, val(r, 50, np.arange(counts[r])))[0]
            recv = moved(t, np.full(end, SENTINEL))[0]
            c.same(comm.all_gather_v(own, recv, counts, displs, dtype=dt), want,
                   "all_gather_v " + what)
            recv = moved(t, np.full(end, SENTINEL))[0]
            recv[displs[r]:displs[r] + counts[r]] = own
            comm.iallgatherv(recv[displs[r]:displs[r] + counts[r]], recv, counts, displs,
                             dtype=dt).wait()
            c.same(recv, want, "iall_gather_v in place " + what)

            # reduce_scatter_v: zeros at ranks 2, 5; every op that applies; in place for the
            # non-blocking form.
            counts = [0 if n == 0 or j % 3 == 2 else n + j for j in range(size)]
            first, total = sum(counts[:r]), sum(counts)
            for op in OPS:
                if not applies(t, op):
                    continue
                ow = "%s %s" % (what, op)
                g = gen(op, r, total, t)
                send, dt = typed(t, g, g.astype(np.float64))
                full = reduced(t, op, size, total)
                want = full[first:first + counts[r]]
                c.same(comm.reduce_scatter_v(send, None, counts, op=op, dtype=dt), want,
                       "reduce_scatter_v " + ow)
                comm.ireduce_scatterv(send, send[first:first + counts[r]], counts, op=op,
                                      dtype=dt).wait()
                c.same(send[first:first + counts[r]], want, "ireduce_scatter_v in place " + ow)


def structure(comm, c):
    r, size = comm.rank, comm.size
    c.check(oxccl.version() >= 100, "version")
    c.check(comm.async_error() == 0, "async error on a healthy communicator")
    comm.barrier()
    comm.ibarrier().wait()
    # A second communicator from a unique id made on rank 0, ranks reversed.
    uid = np.frombuffer(oxccl.unique_id(), np.uint8).copy() if r == 0 else np.zeros(128, np.uint8)
    comm.broadcast(uid, root=0)
    with oxccl.Comm(size, uid.tobytes(), size - 1 - r) as c2:
        c.check(c2.rank == size - 1 - r and c2.size == size, "Comm(nranks, id, rank)")
        got = c2.all_gather(np.array([r], np.int32))
        c.same(got.ravel(), np.arange(size, dtype=np.int32)[::-1], "reversed ranks")
    # Split by parity.
    half = comm.split(r % 2, key=-r)
    members = list(range(r % 2, size, 2))
    c.check(half.size == len(members) and half.rank == members[::-1].index(r), "split ranks")
    s = half.all_reduce(np.array([r], np.int64))
    c.check(int(s[0]) == sum(members), "split sum")
    half.destroy()
    none = comm.split(None if r == 0 else 1)
    c.check((none is None) == (r == 0), "split with no colour")
    if none is not None:
        none.barrier()
        none.destroy()
    # Errors carry the library's explanation.
    try:
        comm.broadcast(np.zeros(4, np.float32), root=size)
        c.check(False, "root out of range accepted")
    except oxccl.OxcclError as e:
        c.check(e.code == 4 and "root %d is out of range" % size in str(e), "root error: %s" % e)
    try:
        comm.all_reduce(np.zeros(4, np.float32), op="mean")
        c.check(False, "bad op accepted")
    except ValueError as e:
        c.check("unknown reduction op" in str(e), "op error: %s" % e)
    try:
        comm.all_reduce(np.zeros(4, np.float32), op=9)
        c.check(False, "bad op number accepted")
    except oxccl.OxcclError as e:
        c.check(e.code == 4 and "is not an oxcclRedOp_t" in str(e), "op number error: %s" % e)
    try:
        comm.all_reduce(np.zeros((4, 4), np.float32)[:, 0])
        c.check(False, "strided array accepted")
    except ValueError as e:
        c.check("C-contiguous" in str(e), "contiguity error: %s" % e)
    try:
        comm.all_reduce(np.zeros(4, np.float32), op="band")
        c.check(False, "band on float accepted")
    except oxccl.OxcclError as e:
        c.check(e.code == 4 and "band is defined for integer types only, not float" in str(e),
                "band on float: %s" % e)
    bits = comm.all_reduce(np.array([1 << r], np.uint32), op="bor")
    c.check(int(bits[0]) == (1 << size) - 1, "bor of the ranks' bits")
    # The exchange collectives' errors: the library's, and blocks past an array's end.
    counts = [1] * size
    try:
        comm.all_gather_v(np.zeros(2, np.float32), np.zeros(size, np.float32), counts)
        c.check(False, "allgatherv with sendcount != recvcounts[rank] accepted")
    except oxccl.OxcclError as e:
        c.check(e.code == 4 and "sendcount 2 differs from recvcounts[%d] = 1" % r in str(e),
                "allgatherv sendcount: %s" % e)
    if size > 1:
        try:
            comm.all_gather_v(np.zeros(2, np.float32), np.zeros(2 * size, np.float32),
                              [2] * size, list(range(size)))
            c.check(False, "overlapping receive blocks accepted")
        except oxccl.OxcclError as e:
            c.check(e.code == 4 and "overlap" in str(e), "overlapping blocks: %s" % e)
    try:
        comm.all_to_all_v(np.zeros(size, np.float32), counts, None,
                          np.zeros(size - 1, np.float32), counts, None)
        c.check(False, "a receive block past the end accepted")
    except ValueError as e:
        c.check("receive block %d" % (size - 1) in str(e), "block past the end: %s" % e)
    try:
        comm.reduce_scatter_v(np.zeros(size + 1, np.float32), None, counts)
        c.check(False, "reduce_scatter_v with a wrong send size accepted")
    except ValueError as e:
        c.check("recvcounts add up to %d" % size in str(e), "reduce_scatter_v size: %s" % e)
    try:
        comm.gather(np.zeros(2, np.float32), root=size)
        c.check(False, "gather root out of range accepted")
    except oxccl.OxcclError as e:
        c.check(e.code == 4 and "root %d is out of range" % size in str(e), "gather root: %s" % e)
    dead = comm.split(0)
    dead.destroy()
    try:
        dead.barrier()
        c.check(False, "use after destroy accepted")
    except oxccl.OxcclError as e:
        c.check(e.code == 5, "use after destroy: %s" % e)


def grouped(comm, c):
    """Groups, pre-multiplied sums and per-communicator settings."""
    r, n = comm.rank, comm.size
    bufs = [np.full(256, (k + r) % 5, dtype=np.float32) for k in range(64)]
    ints = np.arange(10, dtype=np.int32) + r
    with oxccl.group():
        for b in bufs:
            comm.all_reduce(b)
        comm.all_reduce(ints, op="max")
        c.check(bufs[0][0] == r % 5, "a grouped call ran before the group ended")
    for k, b in enumerate(bufs):
        c.check(b[0] == sum((k + q) % 5 for q in range(n)), "grouped allreduce %d" % k)
    c.same(ints, np.arange(10, dtype=np.int32) + n - 1, "grouped max")
    # A group of temporaries: their arrays live until the group ends.
    with oxccl.group():
        out = comm.all_reduce(np.ones(8, dtype=np.float64), np.zeros(8))
    c.same(out, np.full(8, float(n)), "grouped temporaries")
    try:
        with oxccl.group():
            comm.iall_reduce(np.ones(4, dtype=np.float32))
        c.check(False, "an async call inside a group was accepted")
    except oxccl.OxcclError as e:
        c.check(e.code == 5 and "inside a group" in str(e), "async in a group: %s" % e)
    # Pre-multiplied sums: each input scaled once, the same bits on every rank.
    op = comm.premul_sum(0.37, np.float32)
    x = ((np.arange(1001) * 31 + r * 17) % 97).astype(np.float32) / np.float32(7.3)
    y = comm.all_reduce(x, np.zeros_like(x), op=op)
    first = comm.broadcast(y.copy(), root=0)
    c.same(y, first, "premul sum bitwise equal on every rank")
    opi = comm.premul_sum(-3, np.int32)
    yi = comm.all_reduce(np.arange(10, dtype=np.int32) + r, np.zeros(10, dtype=np.int32), op=opi)
    want = sum(-3 * (np.arange(10, dtype=np.int32) + q) for q in range(n))
    c.same(yi, want.astype(np.int32), "premul sum int32")
    try:
        comm.all_reduce(np.ones(4, dtype=np.int32), op=op)
        c.check(False, "a float premul op accepted for int32")
    except oxccl.OxcclError as e:
        c.check(e.code == 4 and "used with int32" in str(e), "premul type: %s" % e)
    op.destroy()
    opi.destroy()
    # Settings per communicator, and a split with its own.
    uid = comm.broadcast(np.frombuffer(oxccl.unique_id() if r == 0 else bytes(128),
                                       dtype=np.uint8).copy(), root=0)
    named = oxccl.Comm(n, uid.tobytes(), r, timeout=30.0, channels=3, algo="ring",
                       name="selftest")
    s = named.all_reduce(np.ones(1000, dtype=np.float32))
    c.check(s[999] == n, "configured communicator")
    t = named.split(0, algo="tree")
    c.check(t.all_reduce(np.ones(3, dtype=np.int64))[2] == n, "split with settings")
    try:
        named.split(0, channels=0)
        c.check(False, "a split with 0 channels accepted")
    except oxccl.OxcclError as e:
        c.check(e.code == 4 and "nChannels 0" in str(e), "bad split setting: %s" % e)
    t.destroy()
    named.destroy()


def job_wide_failure(comm, c):
    """A mismatch reaches every rank: the last rank broadcasts where the others allreduce,
    and every rank's call fails with InvalidUsage and the same cause, on a split-off
    communicator (the failure sticks to it, as its async error)."""
    r, n = comm.rank, comm.size
    if n < 2:
        return
    bad = comm.split(0)
    x = np.ones(100, dtype=np.float32)
    try:
        if r == n - 1:
            bad.broadcast(x, root=0)
        else:
            bad.all_reduce(x)
        bad.barrier()
        c.check(False, "mismatched calls succeeded")
    except oxccl.OxcclError as e:
        c.check(e.code == 5 and "mismatched calls" in str(e), "job-wide mismatch: %s" % e)
    c.check(bad.async_error() == 5, "async error after a mismatch: %d" % bad.async_error())
    bad.destroy()


def main():
    t0 = time.time()
    comm = oxccl.Comm.from_env()
    c = Checker(comm.rank)
    structure(comm, c)
    collectives(comm, c)
    exchanges(comm, c)
    grouped(comm, c)
    job_wide_failure(comm, c)
    comm.barrier()
    comm.destroy()
    # One write per line: ranks share the output file, and unbuffered output
    # (PYTHONUNBUFFERED) would write the text and its newline separately.
    sys.stdout.write("[rank %d/%d] oxccl selftest: %d passed, %d failed (%.1f s)\n"
                     % (c.rank, comm.size, c.passed, c.failed, time.time() - t0))
    sys.stdout.flush()
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
