"""Self-test of the Python binding, one rank per process under a launcher:

    rankrun -n 4 python3 -m oxccl.selftest

Checks every call on numpy arrays of every type (bfloat16 as uint16 bits) and every
reduction, in place and out of place, blocking and non-blocking, odd counts and count 0,
send/recv, split, errors, against results computed with numpy. Exit status 0 on success;
each rank prints one summary line.
"""

import sys
import time

import numpy as np

import oxccl

TYPES = [np.int8, np.uint8, np.int32, np.uint32, np.int64, np.uint64,
         np.float16, np.float32, np.float64, "bfloat16"]
OPS = ["sum", "prod", "max", "min", "avg"]
COUNTS = [0, 1, 7, 1001]


def to_bf16(x):
    """float values (exact in bfloat16) -> uint16 bfloat16 bits."""
    return (np.asarray(x, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def gen(op, rank, n):
    """Small integers whose reductions over up to 8 ranks are exact in every type."""
    i = np.arange(n, dtype=np.int64)
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
    """Values as an array of type t (bfloat16: uint16 bits) and the dtype argument."""
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
                send, dt = typed(t, gen(op, r, n), gen(op, r, n).astype(np.float64))
                want = reduced(t, op, size, n)
                what = "%s %s count %d" % (t if isinstance(t, str) else np.dtype(t).name, op, n)
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
                big_ints = np.concatenate([gen(op, r, n * size)]) if n else np.zeros(0, np.int64)
                big, _ = typed(t, big_ints, big_ints.astype(np.float64))
                full = reduced(t, op, size, n * size)
                out = comm.reduce_scatter(big, op=op, dtype=dt)
                c.same(out, full[r * n:(r + 1) * n], "reduce_scatter " + what)
                req = comm.ireduce_scatter(big, np.empty_like(out), op=op, dtype=dt)
                while not req.test():
                    time.sleep(0.0005)
                c.same(req.result, full[r * n:(r + 1) * n], "ireduce_scatter " + what)
            # Data movement.
            what = "%s count %d" % (t if isinstance(t, str) else np.dtype(t).name, n)
            mine, dt = typed(t, (np.arange(n) * 3 + r * 13) % 100)
            everyone = np.stack([typed(t, (np.arange(n) * 3 + q * 13) % 100)[0]
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
    dead = comm.split(0)
    dead.destroy()
    try:
        dead.barrier()
        c.check(False, "use after destroy accepted")
    except oxccl.OxcclError as e:
        c.check(e.code == 5, "use after destroy: %s" % e)


def main():
    t0 = time.time()
    comm = oxccl.Comm.from_env()
    c = Checker(comm.rank)
    structure(comm, c)
    collectives(comm, c)
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
