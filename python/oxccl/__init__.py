"""oxccl for Python: collectives on numpy arrays through liboxccl's C ABI (ctypes, no
compiled extension).

    import numpy as np, oxccl
    comm = oxccl.Comm.from_env()            # under rankrun (OXCCL_RANK, ...)
    grad = np.ones(1000, np.float32)
    comm.all_reduce(grad, op="avg")         # in place
    everyone = comm.all_gather(np.array([comm.rank]))
    req = comm.iall_reduce(grad)            # non-blocking; req.wait()

Arrays must be C-contiguous; outputs writeable. Element types follow the array's dtype
(int8, uint8, int32, uint32, int64, uint64, float16, float32, float64); bfloat16 data is
passed as a uint16 array with ``dtype=oxccl.BFLOAT16``, fp8 data as a uint8 array with
``dtype=oxccl.FLOAT8_E4M3`` or ``oxccl.FLOAT8_E5M2`` (ml_dtypes' ``float8_e4m3fn`` and
``float8_e5m2`` arrays are recognised). The bitwise ops ("band", "bor", "bxor") take integer
arrays only. Every failure raises
:class:`OxcclError` with the library's message (rank, peer, operation).
"""

import ctypes

import numpy as np

from ._lib import UNIQUE_ID_BYTES, UniqueIdStruct, load

__all__ = [
    "Comm", "Request", "OxcclError", "unique_id", "version",
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


class Comm:
    """A communicator: ``Comm.from_env()``, or ``Comm(nranks, unique_id_bytes, rank)``."""

    def __init__(self, nranks, uid, rank):
        if len(uid) != UNIQUE_ID_BYTES:
            raise ValueError("a unique id has %d bytes, not %d" % (UNIQUE_ID_BYTES, len(uid)))
        s = UniqueIdStruct.from_buffer_copy(bytes(uid))
        h = ctypes.c_void_p()
        _check(_lib.oxcclCommInitRank(ctypes.byref(h), int(nranks), s, int(rank)))
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

    def split(self, color, key=None):
        """Collective: ranks with the same ``color`` form a new Comm ordered by ``key`` (default
        this rank); ``color=None`` or -1 joins none and returns None."""
        h = ctypes.c_void_p()
        c = -1 if color is None else int(color)
        k = self.rank if key is None else int(key)
        _check(_lib.oxcclCommSplit(self._handle(), c, k, ctypes.byref(h)))
        return Comm._wrap(h) if h.value else None

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

    def _run(self, fn, prep):
        args, _keep, out = prep
        _check(fn(*args, self._handle()))
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
