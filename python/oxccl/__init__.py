"""oxccl for Python: collectives on numpy arrays through liboxccl's C ABI (ctypes, no
compiled extension).

    import numpy as np, oxccl
    comm = oxccl.Comm.from_env()            # under rankrun (OXCCL_RANK, ...)
    grad = np.ones(1000, np.float32)
    comm.all_reduce(grad, op="avg")         # in place
    everyone = comm.all_gather(np.array([comm.rank]))
    req = comm.iall_reduce(grad)            # non-blocking; req.wait()
    parts = comm.all_to_all(x)              # block j of x to rank j (x.size % size == 0)
    mine = comm.reduce_scatter_v(g, None, counts)   # uneven blocks; counts[i] per rank

The exchange collectives (``all_to_all``, ``all_to_all_v``, ``gather``, ``scatter``,
``all_gather_v``, ``reduce_scatter_v``, each with an ``i`` form; also spelled ``alltoall``,
``alltoallv``, ``allgatherv``, ``reduce_scatterv``) take counts and displacements in elements,
one per rank, as any integer sequence (passed to C as ``size_t`` arrays); in place is a view:
``gather(recv[root], recv, root)``, ``scatter(send, send[root], root)``,
``all_gather_v(recv[d:d + c], recv, counts, displs)``,
``reduce_scatter_v(send, send[first:first + c], counts)``.

Arrays must be C-contiguous; outputs writeable. Element types follow the array's dtype
(int8, uint8, int32, uint32, int64, uint64, float16, float32, float64); bfloat16 data is
passed as a uint16 array with ``dtype=oxccl.BFLOAT16``, fp8 data as a uint8 array with
``dtype=oxccl.FLOAT8_E4M3`` or ``oxccl.FLOAT8_E5M2`` (ml_dtypes' ``float8_e4m3fn`` and
``float8_e5m2`` arrays are recognised). The bitwise ops ("band", "bor", "bxor") take integer
arrays only. Every failure raises
:class:`OxcclError` with the library's message (rank, peer, operation).
"""

import ctypes
import threading

import numpy as np

def _checkout_version():
    """The version in the checkout's ffi/Cargo.toml, for a package used in place."""
    import os
    import re
    toml = os.path.join(os.path.dirname(__file__), "..", "..", "ffi", "Cargo.toml")
    try:
        with open(toml) as f:
            m = re.search(r'^version = "([^"]+)"', f.read(), re.M)
        return m.group(1) if m else "unknown"
    except OSError:
        return "unknown"


try:  # written by `pip install ./python` (python/setup.py) from the crate's version
    from ._version import __version__
except ImportError:
    __version__ = _checkout_version()

from ._lib import (CONFIG_MAGIC, CONFIG_UNDEF_INT, UNIQUE_ID_BYTES, ConfigStruct, UniqueIdStruct,
                   load)

__all__ = [
    "Comm", "Request", "OxcclError", "PreMulSum", "group", "unique_id", "version", "__version__",
    "INT8", "UINT8", "INT32", "UINT32", "INT64", "UINT64",
    "FLOAT16", "FLOAT32", "FLOAT64", "BFLOAT16", "FLOAT8_E4M3", "FLOAT8_E5M2",
    "SUM", "PROD", "MAX", "MIN", "AVG", "BAND", "BOR", "BXOR", "UNIQUE_ID_BYTES",
]

_lib = load()

# oxcclDataType_t and oxcclRedOp_t, numbered as NCCL's.
(INT8, UINT8, INT32, UINT32, INT64, UINT64, FLOAT16, FLOAT32, FLOAT64, BFLOAT16,
 FLOAT8_E4M3, FLOAT8_E5M2) = range(12)
SUM, PROD, MAX, MIN, AVG, BAND, BOR, BXOR = range(8)
_OPS = {"sum": SUM, "prod": PROD, "max": MAX, "min": MIN, "avg": AVG,
        "band": BAND, "bor": BOR, "bxor": BXOR}
_DTYPES = {
    np.dtype(np.int8): INT8, np.dtype(np.uint8): UINT8,
    np.dtype(np.int32): INT32, np.dtype(np.uint32): UINT32,
    np.dtype(np.int64): INT64, np.dtype(np.uint64): UINT64,
    np.dtype(np.float16): FLOAT16, np.dtype(np.float32): FLOAT32,
    np.dtype(np.float64): FLOAT64,
}
_SIZES = [1, 1, 4, 4, 8, 8, 2, 4, 8, 2, 1, 1]
# Array dtypes from ml_dtypes (or jax/torch exports of them) recognised by name.
_NAMED = {"bfloat16": BFLOAT16, "float8_e4m3fn": FLOAT8_E4M3, "float8_e5m2": FLOAT8_E5M2}
_RESULTS = {
    0: "oxcclSuccess", 2: "oxcclSystemError", 3: "oxcclInternalError",
    4: "oxcclInvalidArgument", 5: "oxcclInvalidUsage", 6: "oxcclRemoteError",
    7: "oxcclInProgress", 8: "oxcclTimeout",
}


class OxcclError(RuntimeError):
    """A failed call: ``code`` is the oxcclResult_t, ``name`` its name, the message the
    library's explanation (oxcclGetLastError)."""

    def __init__(self, code, message):
        self.code = code
        self.name = _RESULTS.get(code, "unknown result %d" % code)
        super().__init__("%s: %s" % (self.name, message))


def _check(code):
    if code != 0:
        msg = _lib.oxcclGetLastError(None)
        raise OxcclError(code, msg.decode(errors="replace") if msg else "")


def version():
    """The library's version code (major * 10000 + minor * 100 + patch)."""
    v = ctypes.c_int()
    _check(_lib.oxcclGetVersion(ctypes.byref(v)))
    return v.value


def unique_id():
    """A new job id (128 bytes) whose rendezvous store runs in this process: make it on one
    rank and send the bytes to the others, then every rank calls ``Comm(nranks, id, rank)``."""
    s = UniqueIdStruct()
    _check(_lib.oxcclGetUniqueId(ctypes.byref(s)))
    return bytes(s)  # all 128 bytes (the field itself would stop at a NUL)


def _op(op):
    if isinstance(op, str):
        if op.lower() not in _OPS:
            raise ValueError("unknown reduction op %r (sum, prod, max, min, avg, band, bor, bxor)"
                             % op)
        return _OPS[op.lower()]
    return int(op)


def _array(a, what, writeable=False):
    if not isinstance(a, np.ndarray):
        raise TypeError("%s must be a numpy array, not %s" % (what, type(a).__name__))
    if not a.flags.c_contiguous:
        raise ValueError("%s must be C-contiguous (use np.ascontiguousarray)" % what)
    if writeable and not a.flags.writeable:
        raise ValueError("%s must be writeable" % what)
    return a


def _dtype(a, dtype):
    if dtype is not None:
        dt = int(dtype)
        if 0 <= dt < len(_SIZES) and a.itemsize != _SIZES[dt]:
            raise ValueError("dtype %d has %d-byte elements but the array's are %d bytes"
                             % (dt, _SIZES[dt], a.itemsize))
        return dt
    if a.dtype.name in _NAMED:
        return _NAMED[a.dtype.name]
    try:
        return _DTYPES[a.dtype]
    except KeyError:
        raise TypeError("arrays of %s are not supported (int8..uint64, float16/32/64; "
                        "bfloat16 as uint16 with dtype=oxccl.BFLOAT16; fp8 as uint8 with "
                        "dtype=oxccl.FLOAT8_E4M3 or FLOAT8_E5M2)" % a.dtype) from None


def _count(a, dt):
    return a.nbytes // _SIZES[dt] if 0 <= dt < len(_SIZES) else a.size


def _ptr(a):
    return ctypes.c_void_p(a.ctypes.data) if a is not None and a.nbytes else None


def _sizes(a):
    """A size_t array (np.uintp) as a `const size_t *`."""
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_size_t))


def _same_type(a, b, what):
    if a.dtype != b.dtype:
        raise TypeError("%s: arrays of %s and %s" % (what, a.dtype, b.dtype))


class Request:
    """A non-blocking call; keeps its arrays alive until it is finished."""

    def __init__(self, handle, keep, result):
        self._h = handle
        self._keep = keep
        self._result = result

    def wait(self):
        """Blocks until the call is over; returns its output array."""
        if self._h is None:
            return self._result
        h, self._h = self._h, None
        try:
            _check(_lib.oxcclWait(h))
        finally:
            self._keep = None
        return self._result

    def test(self):
        """True once the call is over (then the request is released)."""
        if self._h is None:
            return True
        done = ctypes.c_int()
        try:
            _check(_lib.oxcclTest(self._h, ctypes.byref(done)))
        except OxcclError:
            self._h = None
            self._keep = None
            raise
        if done.value:
            self._h = None
            self._keep = None
        return bool(done.value)

    @property
    def result(self):
        """The output array (complete once ``wait`` returned or ``test`` gave True)."""
        return self._result

    def __del__(self):
        if getattr(self, "_h", None) is not None:
            try:
                _lib.oxcclWait(self._h)
            except Exception:  # interpreter shutdown: nothing left to report to
                pass


def _config(timeout=None, channels=None, transport=None, algo=None, name=None):
    """An oxcclConfig_t from keyword settings (None: unset, the OXCCL_* variables or the
    parent communicator decide), or None when nothing is set."""
    if all(v is None for v in (timeout, channels, transport, algo, name)):
        return None
    c = ConfigStruct()
    c.size = ctypes.sizeof(c)
    c.magic = CONFIG_MAGIC
    c.version = version()
    c.timeoutMs = CONFIG_UNDEF_INT if timeout is None else int(round(timeout * 1000))
    c.nChannels = CONFIG_UNDEF_INT if channels is None else int(channels)
    c.transport = None if transport is None else transport.encode()
    c.algo = None if algo is None else algo.encode()
    c.commName = None if name is None else name.encode()
    return c


class _Group(threading.local):
    """The calling thread's open groups: depth and the arrays their calls use."""

    def __init__(self):
        self.depth = 0
        self.keep = []


_group = _Group()


class group:
    """``with oxccl.group(): ...``: the calls made inside run together when the outermost
    group ends (oxcclGroupStart/End), as NCCL's groups; small allreduces become one.
    Outputs are written at the end of the ``with`` block; the arrays are kept alive until
    then. Async calls are refused inside a group."""

    def __enter__(self):
        _check(_lib.oxcclGroupStart())
        _group.depth += 1
        return self

    def __exit__(self, *exc):
        _group.depth -= 1
        try:
            _check(_lib.oxcclGroupEnd())
        finally:
            if _group.depth == 0:
                _group.keep = []
        return False


class PreMulSum:
    """A pre-multiplied sum op (oxcclRedOpCreatePreMulSum): every rank's input times
    ``scalar`` (of ``dtype``), summed. Pass it as ``op=``; ``destroy()`` frees it."""

    def __init__(self, comm, scalar, dtype):
        self._comm = comm
        buf = np.array([scalar], dtype=dtype)
        dt = _dtype(buf, None)
        v = ctypes.c_int()
        _check(_lib.oxcclRedOpCreatePreMulSum(ctypes.byref(v), buf.ctypes.data_as(ctypes.c_void_p),
                                              dt, 1, comm._handle()))
        self.op = v.value

    def __int__(self):
        return self.op

    def destroy(self):
        if self.op is not None:
            op, self.op = self.op, None
            _check(_lib.oxcclRedOpDestroy(op, self._comm._handle()))


class Comm:
    """A communicator: ``Comm.from_env()``, or ``Comm(nranks, unique_id_bytes, rank)``;
    keyword settings (``timeout`` seconds, ``channels``, ``transport``, ``algo``, ``name``)
    override the OXCCL_* variables for this communicator."""

    def __init__(self, nranks, uid, rank, **config):
        if len(uid) != UNIQUE_ID_BYTES:
            raise ValueError("a unique id has %d bytes, not %d" % (UNIQUE_ID_BYTES, len(uid)))
        s = UniqueIdStruct.from_buffer_copy(bytes(uid))
        h = ctypes.c_void_p()
        cfg = _config(**config)
        if cfg is None:
            _check(_lib.oxcclCommInitRank(ctypes.byref(h), int(nranks), s, int(rank)))
        else:
            _check(_lib.oxcclCommInitRankConfig(ctypes.byref(h), int(nranks), s, int(rank),
                                                ctypes.byref(cfg)))
        self._set(h)

    @classmethod
    def from_env(cls):
        """Joins the job the launcher's environment describes (rankrun's OXCCL_* variables)."""
        h = ctypes.c_void_p()
        _check(_lib.oxcclCommInitFromEnv(ctypes.byref(h)))
        return cls._wrap(h)

    @classmethod
    def _wrap(cls, h):
        c = cls.__new__(cls)
        c._set(h)
        return c

    def _set(self, h):
        self._h = h
        r, n = ctypes.c_int(), ctypes.c_int()
        _check(_lib.oxcclCommUserRank(h, ctypes.byref(r)))
        _check(_lib.oxcclCommCount(h, ctypes.byref(n)))
        self.rank, self.size = r.value, n.value

    def _handle(self):
        if self._h is None:
            raise OxcclError(5, "the communicator was destroyed or aborted")
        return self._h

    # Life cycle.
    def destroy(self):
        """Frees the communicator (idempotent)."""
        if getattr(self, "_h", None) is not None:
            h, self._h = self._h, None
            _check(_lib.oxcclCommDestroy(h))

    close = destroy

    def abort(self):
        """Aborts: blocked and queued calls fail, peers get a remote error; frees it."""
        if self._h is not None:
            h, self._h = self._h, None
            _check(_lib.oxcclCommAbort(h))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()

    def __del__(self):
        if getattr(self, "_h", None) is not None:
            try:
                _lib.oxcclCommDestroy(self._h)
            except Exception:  # interpreter shutdown
                pass
            self._h = None

    def async_error(self):
        """The first error this communicator met, as an oxcclResult_t (0: none)."""
        v = ctypes.c_int()
        _check(_lib.oxcclCommGetAsyncError(self._handle(), ctypes.byref(v)))
        return v.value

    def last_error(self):
        """The message of the last failed call on this communicator ('' if none)."""
        return _lib.oxcclGetLastError(self._handle()).decode(errors="replace")

    def split(self, color, key=None, **config):
        """Collective: ranks with the same ``color`` form a new Comm ordered by ``key`` (default
        this rank); ``color=None`` or -1 joins none and returns None. Keyword settings as
        ``Comm``'s override this communicator's."""
        h = ctypes.c_void_p()
        c = -1 if color is None else int(color)
        k = self.rank if key is None else int(key)
        cfg = _config(**config)
        _check(_lib.oxcclCommSplit(self._handle(), c, k, ctypes.byref(h),
                                   None if cfg is None else ctypes.byref(cfg)))
        return Comm._wrap(h) if h.value else None

    def premul_sum(self, scalar, dtype):
        """A pre-multiplied sum op for calls of ``dtype`` on this communicator."""
        return PreMulSum(self, scalar, dtype)

    # Argument preparation shared by blocking and non-blocking forms.
    def _allreduce(self, send, recv, op, dtype):
        _array(send, "send")
        recv = send if recv is None else _array(recv, "recv", True)
        _array(recv, "recv", True)
        _same_type(send, recv, "all_reduce")
        if recv.size != send.size:
            raise ValueError("all_reduce: recv has %d elements, send %d" % (recv.size, send.size))
        dt = _dtype(send, dtype)
        return (_ptr(send), _ptr(recv), _count(send, dt), dt, _op(op)), (send, recv), recv

    def _broadcast(self, buf, root, recv, dtype):
        _array(buf, "buf")
        recv = buf if recv is None else recv
        _array(recv, "recv", True)
        _same_type(buf, recv, "broadcast")
        if recv.size != buf.size:
            raise ValueError("broadcast: recv has %d elements, buf %d" % (recv.size, buf.size))
        dt = _dtype(recv, dtype)
        return (_ptr(buf), _ptr(recv), _count(recv, dt), dt, int(root)), (buf, recv), recv

    def _reduce(self, send, recv, op, root, dtype):
        _array(send, "send")
        recv = send if recv is None else _array(recv, "recv", True)
        _array(recv, "recv", True)
        _same_type(send, recv, "reduce")
        if self.rank == root and recv.size != send.size:
            raise ValueError("reduce: recv has %d elements, send %d" % (recv.size, send.size))
        dt = _dtype(send, dtype)
        args = (_ptr(send), _ptr(recv), _count(send, dt), dt, _op(op), int(root))
        return args, (send, recv), recv

    def _allgather(self, send, recv, dtype):
        _array(send, "send")
        if recv is None:
            recv = np.empty((self.size,) + send.shape, send.dtype)
        _array(recv, "recv", True)
        _same_type(send, recv, "all_gather")
        if recv.size != send.size * self.size:
            raise ValueError("all_gather: recv has %d elements, needs %d x %d ranks"
                             % (recv.size, send.size, self.size))
        dt = _dtype(send, dtype)
        return (_ptr(send), _ptr(recv), _count(send, dt), dt), (send, recv), recv

    def _reducescatter(self, send, recv, op, dtype):
        _array(send, "send")
        if send.size % self.size:
            raise ValueError("reduce_scatter: send has %d elements, not a multiple of %d ranks"
                             % (send.size, self.size))
        if recv is None:
            recv = np.empty(send.size // self.size, send.dtype)
        _array(recv, "recv", True)
        _same_type(send, recv, "reduce_scatter")
        if recv.size * self.size != send.size:
            raise ValueError("reduce_scatter: recv has %d elements, needs send's %d / %d ranks"
                             % (recv.size, send.size, self.size))
        dt = _dtype(send, dtype)
        return (_ptr(send), _ptr(recv), _count(recv, dt), dt, _op(op)), (send, recv), recv

    def _p2p(self, a, peer, dtype, writeable):
        _array(a, "buffer", writeable)
        dt = _dtype(a, dtype)
        return (_ptr(a), _count(a, dt), dt, int(peer)), (a,), a

    # The exchange collectives. Counts and displacements are in elements, one per rank,
    # passed as size_t arrays; every block is checked to lie inside its array here, the
    # rest (overlaps, disagreeing counts, in-place layouts) by the library.
    def _vector(self, v, what):
        """A per-rank list of counts or displacements as a size_t array."""
        a = np.asarray(v)
        if a.shape != (self.size,):
            raise ValueError("%s must have one entry per rank (%d), not shape %s"
                             % (what, self.size, a.shape))
        if a.size and (not np.issubdtype(a.dtype, np.integer) or (a < 0).any()):
            raise ValueError("%s must be non-negative integers" % what)
        return np.ascontiguousarray(a, dtype=np.uintp)

    def _displs(self, displs, counts, what):
        """``displs``, or the blocks of ``counts`` end to end when it is None."""
        if displs is None:
            return np.concatenate(([0], np.cumsum(counts[:-1], dtype=np.uintp))).astype(np.uintp)
        return self._vector(displs, what)

    @staticmethod
    def _within(a, dt, counts, displs, what, name):
        n = _count(a, dt) if a is not None else 0
        for j, (c, d) in enumerate(zip(counts.tolist(), displs.tolist())):
            if c and d + c > n:
                raise ValueError("%s: %s block %d (displacement %d + count %d) ends past its "
                                 "%d elements" % (what, name, j, d, c, n))

    def _alltoall(self, send, recv, dtype):
        _array(send, "send")
        if send.size % self.size:
            raise ValueError("all_to_all: send has %d elements, not a multiple of %d ranks"
                             % (send.size, self.size))
        if recv is None:
            recv = np.empty_like(send)
        _array(recv, "recv", True)
        _same_type(send, recv, "all_to_all")
        if recv.size != send.size:
            raise ValueError("all_to_all: recv has %d elements, send %d" % (recv.size, send.size))
        dt = _dtype(send, dtype)
        count = _count(send, dt) // self.size
        return (_ptr(send), _ptr(recv), count, dt), (send, recv), recv

    def _alltoallv(self, send, sendcounts, sdispls, recv, recvcounts, rdispls, dtype):
        _array(send, "send")
        _array(recv, "recv", True)
        _same_type(send, recv, "all_to_all_v")
        dt = _dtype(send, dtype)
        sc = self._vector(sendcounts, "sendcounts")
        rc = self._vector(recvcounts, "recvcounts")
        sd = self._displs(sdispls, sc, "sdispls")
        rd = self._displs(rdispls, rc, "rdispls")
        self._within(send, dt, sc, sd, "all_to_all_v", "send")
        self._within(recv, dt, rc, rd, "all_to_all_v", "receive")
        args = (_ptr(send), _sizes(sc), _sizes(sd), _ptr(recv), _sizes(rc), _sizes(rd), dt)
        return args, (send, recv, sc, sd, rc, rd), recv

    def _gather(self, send, recv, root, dtype):
        _array(send, "send")
        root = int(root)
        if self.rank == root:
            if recv is None:
                recv = np.empty((self.size,) + send.shape, send.dtype)
            _array(recv, "recv", True)
            _same_type(send, recv, "gather")
            if recv.size != send.size * self.size:
                raise ValueError("gather: recv has %d elements, needs %d x %d ranks"
                                 % (recv.size, send.size, self.size))
        elif recv is not None:
            _array(recv, "recv")
        dt = _dtype(send, dtype)
        # Away from the root the receive buffer is not used: NULL.
        r = _ptr(recv) if self.rank == root else None
        return (_ptr(send), r, _count(send, dt), dt, root), (send, recv), recv

    def _scatter(self, send, recv, root, dtype):
        root = int(root)
        if recv is None:
            if send is None:
                raise ValueError("scatter: recv is needed away from the root (or a send array "
                                 "to take its shape from)")
            _array(send, "send")
            if send.size % self.size:
                raise ValueError("scatter: send has %d elements, not a multiple of %d ranks"
                                 % (send.size, self.size))
            shape = send.shape[1:] if send.ndim > 1 and send.shape[0] == self.size else (
                send.size // self.size,)
            recv = np.empty(shape, send.dtype)
        _array(recv, "recv", True)
        dt = _dtype(recv, dtype)
        if self.rank == root:
            if send is None:
                raise ValueError("scatter: the root needs a send array")
            _array(send, "send")
            _same_type(send, recv, "scatter")
            if send.size != recv.size * self.size:
                raise ValueError("scatter: send has %d elements, needs %d x %d ranks"
                                 % (send.size, recv.size, self.size))
        # Away from the root the send buffer is not read: NULL.
        s = _ptr(send) if self.rank == root else None
        return (s, _ptr(recv), _count(recv, dt), dt, root), (send, recv), recv

    def _allgatherv(self, send, recv, recvcounts, displs, dtype):
        _array(send, "send")
        dt = _dtype(send, dtype)
        rc = self._vector(recvcounts, "recvcounts")
        ds = self._displs(displs, rc, "displs")
        if recv is None:
            end = max((d + c for c, d in zip(rc.tolist(), ds.tolist())), default=0)
            recv = np.empty(end * _SIZES[dt] // send.itemsize if 0 <= dt < len(_SIZES) else end,
                            send.dtype)
        _array(recv, "recv", True)
        _same_type(send, recv, "all_gather_v")
        self._within(recv, dt, rc, ds, "all_gather_v", "receive")
        args = (_ptr(send), _count(send, dt), _ptr(recv), _sizes(rc), _sizes(ds), dt)
        return args, (send, recv, rc, ds), recv

    def _reducescatterv(self, send, recv, recvcounts, op, dtype):
        _array(send, "send")
        dt = _dtype(send, dtype)
        rc = self._vector(recvcounts, "recvcounts")
        total, mine = int(rc.sum()), int(rc[self.rank])
        if _count(send, dt) != total:
            raise ValueError("reduce_scatter_v: send has %d elements, recvcounts add up to %d"
                             % (_count(send, dt), total))
        if recv is None:
            recv = np.empty(mine * _SIZES[dt] // send.itemsize if 0 <= dt < len(_SIZES) else mine,
                            send.dtype)
        _array(recv, "recv", True)
        _same_type(send, recv, "reduce_scatter_v")
        if _count(recv, dt) != mine:
            raise ValueError("reduce_scatter_v: recv has %d elements, recvcounts[%d] is %d"
                             % (_count(recv, dt), self.rank, mine))
        args = (_ptr(send), _ptr(recv), _sizes(rc), dt, _op(op))
        return args, (send, recv, rc), recv

    def _run(self, fn, prep):
        args, keep, out = prep
        _check(fn(*args, self._handle()))
        if _group.depth > 0:
            # Runs at the end of the group: its arrays must live until then.
            _group.keep.append(keep)
        return out

    def _start(self, fn, prep):
        args, keep, out = prep
        h = ctypes.c_void_p()
        _check(fn(*args, self._handle(), ctypes.byref(h)))
        return Request(h, keep, out)

    # Blocking calls: each returns its output array.
    def all_reduce(self, send, recv=None, op="sum", dtype=None):
        """Reduction of every rank's ``send`` into ``recv`` (default: in place)."""
        return self._run(_lib.oxcclAllReduce, self._allreduce(send, recv, op, dtype))

    def broadcast(self, buf, root=0, recv=None, dtype=None):
        """The root's ``buf`` into every rank's ``recv`` (default: ``buf``, in place)."""
        return self._run(_lib.oxcclBroadcast, self._broadcast(buf, root, recv, dtype))

    def reduce(self, send, recv=None, op="sum", root=0, dtype=None):
        """Reduction into the root's ``recv`` (default: in place)."""
        return self._run(_lib.oxcclReduce, self._reduce(send, recv, op, root, dtype))

    def all_gather(self, send, recv=None, dtype=None):
        """Every rank's ``send`` in rank order; ``recv`` defaults to a new (size, ...) array."""
        return self._run(_lib.oxcclAllGather, self._allgather(send, recv, dtype))

    def reduce_scatter(self, send, recv=None, op="sum", dtype=None):
        """Block ``rank`` of the reduction of every rank's ``send``."""
        return self._run(_lib.oxcclReduceScatter, self._reducescatter(send, recv, op, dtype))

    def send(self, buf, peer, dtype=None):
        """Sends ``buf`` to ``peer``."""
        return self._run(_lib.oxcclSend, self._p2p(buf, peer, dtype, False))

    def recv(self, buf, peer, dtype=None):
        """Receives into ``buf`` from ``peer``."""
        return self._run(_lib.oxcclRecv, self._p2p(buf, peer, dtype, True))

    def barrier(self):
        """Returns once every rank has entered it."""
        _check(_lib.oxcclBarrier(self._handle()))

    def all_to_all(self, send, recv=None, dtype=None):
        """Block j of ``send`` (``send.size / size`` elements) to rank j; block i of ``recv``
        (default: a new array like ``send``) from rank i. The arrays must not overlap."""
        return self._run(_lib.oxcclAlltoAll, self._alltoall(send, recv, dtype))

    def all_to_all_v(self, send, sendcounts, sdispls, recv, recvcounts, rdispls, dtype=None):
        """``sendcounts[j]`` elements at ``send[sdispls[j]:]`` to rank j; ``recvcounts[i]``
        elements from rank i into ``recv[rdispls[i]:]`` (flat element offsets; a
        displacement list of None lays the blocks end to end). Rank j's ``recvcounts[i]``
        must equal rank i's ``sendcounts[j]``."""
        return self._run(_lib.oxcclAlltoAllv, self._alltoallv(
            send, sendcounts, sdispls, recv, recvcounts, rdispls, dtype))

    def gather(self, send, recv=None, root=0, dtype=None):
        """Every rank's ``send`` into the root's ``recv`` (default: a new (size, ...) array)
        in rank order; returns it at the root, ``recv`` (untouched) elsewhere. In place at
        the root: ``send`` is the root's own block of ``recv`` (e.g. ``recv[root]``)."""
        return self._run(_lib.oxcclGather, self._gather(send, recv, root, dtype))

    def scatter(self, send, recv=None, root=0, dtype=None):
        """Block r of the root's ``send`` (size blocks) into rank r's ``recv``; away from the
        root ``send`` may be None (then ``recv`` is needed). In place at the root: ``recv``
        is the root's own block of ``send``."""
        return self._run(_lib.oxcclScatter, self._scatter(send, recv, root, dtype))

    def all_gather_v(self, send, recv, recvcounts, displs=None, dtype=None):
        """Rank i's ``send`` (``recvcounts[i]`` elements) into every rank's ``recv`` at flat
        offset ``displs[i]`` (default: end to end; ``recv=None`` allocates). In place:
        ``send`` is this rank's block of ``recv``."""
        return self._run(_lib.oxcclAllGatherv,
                         self._allgatherv(send, recv, recvcounts, displs, dtype))

    def reduce_scatter_v(self, send, recv, recvcounts, op="sum", dtype=None):
        """Block ``rank`` (``recvcounts[rank]`` elements; ``send`` holds the blocks end to
        end in rank order) of the reduction of every rank's ``send``; ``recv=None``
        allocates. In place: ``recv`` is this rank's block of ``send``."""
        return self._run(_lib.oxcclReduceScatterv,
                         self._reducescatterv(send, recv, recvcounts, op, dtype))

    # Non-blocking calls: each returns a Request whose wait() gives the output array.
    def iall_reduce(self, send, recv=None, op="sum", dtype=None):
        """Non-blocking :meth:`all_reduce`."""
        return self._start(_lib.oxcclAllReduceAsync, self._allreduce(send, recv, op, dtype))

    def ibroadcast(self, buf, root=0, recv=None, dtype=None):
        """Non-blocking :meth:`broadcast`."""
        return self._start(_lib.oxcclBroadcastAsync, self._broadcast(buf, root, recv, dtype))

    def ireduce(self, send, recv=None, op="sum", root=0, dtype=None):
        """Non-blocking :meth:`reduce`."""
        return self._start(_lib.oxcclReduceAsync, self._reduce(send, recv, op, root, dtype))

    def iall_gather(self, send, recv=None, dtype=None):
        """Non-blocking :meth:`all_gather`."""
        return self._start(_lib.oxcclAllGatherAsync, self._allgather(send, recv, dtype))

    def ireduce_scatter(self, send, recv=None, op="sum", dtype=None):
        """Non-blocking :meth:`reduce_scatter`."""
        return self._start(_lib.oxcclReduceScatterAsync,
                           self._reducescatter(send, recv, op, dtype))

    def isend(self, buf, peer, dtype=None):
        """Non-blocking :meth:`send` (starts with the next wait/test, grouped with recvs)."""
        return self._start(_lib.oxcclSendAsync, self._p2p(buf, peer, dtype, False))

    def irecv(self, buf, peer, dtype=None):
        """Non-blocking :meth:`recv`."""
        return self._start(_lib.oxcclRecvAsync, self._p2p(buf, peer, dtype, True))

    def ibarrier(self):
        """Non-blocking :meth:`barrier`."""
        h = ctypes.c_void_p()
        _check(_lib.oxcclBarrierAsync(self._handle(), ctypes.byref(h)))
        return Request(h, (), None)

    def iall_to_all(self, send, recv=None, dtype=None):
        """Non-blocking :meth:`all_to_all`."""
        return self._start(_lib.oxcclAlltoAllAsync, self._alltoall(send, recv, dtype))

    def iall_to_all_v(self, send, sendcounts, sdispls, recv, recvcounts, rdispls, dtype=None):
        """Non-blocking :meth:`all_to_all_v`."""
        return self._start(_lib.oxcclAlltoAllvAsync, self._alltoallv(
            send, sendcounts, sdispls, recv, recvcounts, rdispls, dtype))

    def igather(self, send, recv=None, root=0, dtype=None):
        """Non-blocking :meth:`gather`."""
        return self._start(_lib.oxcclGatherAsync, self._gather(send, recv, root, dtype))

    def iscatter(self, send, recv=None, root=0, dtype=None):
        """Non-blocking :meth:`scatter`."""
        return self._start(_lib.oxcclScatterAsync, self._scatter(send, recv, root, dtype))

    def iall_gather_v(self, send, recv, recvcounts, displs=None, dtype=None):
        """Non-blocking :meth:`all_gather_v`."""
        return self._start(_lib.oxcclAllGathervAsync,
                           self._allgatherv(send, recv, recvcounts, displs, dtype))

    def ireduce_scatter_v(self, send, recv, recvcounts, op="sum", dtype=None):
        """Non-blocking :meth:`reduce_scatter_v`."""
        return self._start(_lib.oxcclReduceScattervAsync,
                           self._reducescatterv(send, recv, recvcounts, op, dtype))

    # The C and MPI spellings of the exchange collectives.
    alltoall, ialltoall = all_to_all, iall_to_all
    alltoallv, ialltoallv = all_to_all_v, iall_to_all_v
    allgatherv, iallgatherv = all_gather_v, iall_gather_v
    reduce_scatterv, ireduce_scatterv = reduce_scatter_v, ireduce_scatter_v
