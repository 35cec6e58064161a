"""Loading liboxccl and declaring its C signatures for ctypes (ffi/include/oxccl.h)."""

import ctypes
import ctypes.util
import os

UNIQUE_ID_BYTES = 128


class UniqueIdStruct(ctypes.Structure):
    """oxcclUniqueId: 128 opaque bytes, passed by value."""

    _fields_ = [("internal", ctypes.c_char * UNIQUE_ID_BYTES)]


CONFIG_MAGIC = 0x6F78636C
CONFIG_UNDEF_INT = -(2**31)


class ConfigStruct(ctypes.Structure):
    """oxcclConfig_t (ffi/src/config.rs): settings of one communicator."""

    _fields_ = [
        ("size", ctypes.c_size_t),
        ("magic", ctypes.c_uint32),
        ("version", ctypes.c_uint32),
        ("timeoutMs", ctypes.c_int),
        ("nChannels", ctypes.c_int),
        ("transport", ctypes.c_char_p),
        ("algo", ctypes.c_char_p),
        ("commName", ctypes.c_char_p),
    ]


def _candidates():
    env = os.environ.get("OXCCL_LIBRARY")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "lib", "liboxccl.so")  # bundled by `pip install ./python`
    repo = os.path.dirname(os.path.dirname(here))
    for profile in ("release", "debug"):
        yield os.path.join(repo, "target", profile, "liboxccl.so")
    found = ctypes.util.find_library("oxccl")
    if found:
        yield found
    yield "liboxccl.so"


def load():
    """The library: $OXCCL_LIBRARY, else the one bundled in the package (oxccl/lib/), else
    this checkout's target/, else the system's."""
    errors = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            errors.append("%s: %s" % (path, e))
            continue
        _declare(lib)
        return lib
    raise ImportError(
        "oxccl: cannot load liboxccl.so (set OXCCL_LIBRARY to its path, or install it with "
        "ci/ffi-install.sh): " + "; ".join(errors or ["not found"])
    )


def _declare(lib):
    P, I, Z = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    PP = ctypes.POINTER(ctypes.c_void_p)
    PI = ctypes.POINTER(ctypes.c_int)
    ZP = ctypes.POINTER(ctypes.c_size_t)
    sigs = {
        "oxcclGetVersion": [PI],
        "oxcclGetUniqueId": [ctypes.POINTER(UniqueIdStruct)],
        "oxcclCommInitRank": [PP, I, UniqueIdStruct, I],
        "oxcclCommInitFromEnv": [PP],
        "oxcclCommSplit": [P, I, I, PP, P],
        "oxcclCommDestroy": [P],
        "oxcclCommAbort": [P],
        "oxcclCommCount": [P, PI],
        "oxcclCommUserRank": [P, PI],
        "oxcclCommGetAsyncError": [P, PI],
        "oxcclAllReduce": [P, P, Z, I, I, P],
        "oxcclBroadcast": [P, P, Z, I, I, P],
        "oxcclReduce": [P, P, Z, I, I, I, P],
        "oxcclAllGather": [P, P, Z, I, P],
        "oxcclReduceScatter": [P, P, Z, I, I, P],
        "oxcclSend": [P, Z, I, I, P],
        "oxcclRecv": [P, Z, I, I, P],
        "oxcclBarrier": [P],
        "oxcclAllReduceAsync": [P, P, Z, I, I, P, PP],
        "oxcclBroadcastAsync": [P, P, Z, I, I, P, PP],
        "oxcclReduceAsync": [P, P, Z, I, I, I, P, PP],
        "oxcclAllGatherAsync": [P, P, Z, I, P, PP],
        "oxcclReduceScatterAsync": [P, P, Z, I, I, P, PP],
        "oxcclSendAsync": [P, Z, I, I, P, PP],
        "oxcclRecvAsync": [P, Z, I, I, P, PP],
        "oxcclBarrierAsync": [P, PP],
        "oxcclAlltoAll": [P, P, Z, I, P],
        "oxcclAlltoAllv": [P, ZP, ZP, P, ZP, ZP, I, P],
        "oxcclGather": [P, P, Z, I, I, P],
        "oxcclScatter": [P, P, Z, I, I, P],
        "oxcclAllGatherv": [P, Z, P, ZP, ZP, I, P],
        "oxcclReduceScatterv": [P, P, ZP, I, I, P],
        "oxcclAlltoAllAsync": [P, P, Z, I, P, PP],
        "oxcclAlltoAllvAsync": [P, ZP, ZP, P, ZP, ZP, I, P, PP],
        "oxcclGatherAsync": [P, P, Z, I, I, P, PP],
        "oxcclScatterAsync": [P, P, Z, I, I, P, PP],
        "oxcclAllGathervAsync": [P, Z, P, ZP, ZP, I, P, PP],
        "oxcclReduceScattervAsync": [P, P, ZP, I, I, P, PP],
        "oxcclWait": [P],
        "oxcclTest": [P, PI],
        "oxcclGroupStart": [],
        "oxcclGroupEnd": [],
        "oxcclRedOpCreatePreMulSum": [PI, P, I, I, P],
        "oxcclRedOpDestroy": [I, P],
        "oxcclCommInitRankConfig": [PP, I, UniqueIdStruct, I, ctypes.POINTER(ConfigStruct)],
    }
    for name, args in sigs.items():
        f = getattr(lib, name)
        f.argtypes = args
        f.restype = ctypes.c_int
    for name, args in {"oxcclGetErrorString": [I], "oxcclGetLastError": [P]}.items():
        f = getattr(lib, name)
        f.argtypes = args
        f.restype = ctypes.c_char_p
