#!/usr/bin/env python3
"""Starts N ranks of a program as local processes, with rankrun's environment contract.

    launch.py -n N [--timeout SECS] [--lib PATH] [--] PROGRAM [ARGS...]

A small stand-in for `rankrun -n N` (which scripts use instead when it is built): this
process creates the job's rendezvous store through liboxccl's oxcclGetUniqueId (the store
runs in a thread of this process), then starts every rank with OXCCL_RANK,
OXCCL_WORLD_SIZE, OXCCL_LOCAL_RANK, OXCCL_LOCAL_SIZE, OXCCL_ROOT (host:port) and
OXCCL_JOB_SECRET set. Output is each rank's own. When a rank fails, the others are
stopped (SIGTERM, then SIGKILL) and the failure is reported; the whole job is bounded by
--timeout. Exit status: 0 when every rank exits 0, else 1 (124 on timeout).
"""

import argparse
import ctypes
import ipaddress
import os
import signal
import subprocess
import sys
import time

ID_BYTES = 128


def default_lib():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    for profile in ("release", "debug"):
        p = os.path.join(root, "target", profile, "liboxccl.so")
        if os.path.exists(p):
            return p
    return "liboxccl.so"


def make_store(lib_path):
    """Creates a job id in this process; returns (root "host:port", secret hex)."""
    os.environ.setdefault("OXCCL_ROOT_ADDR", "127.0.0.1")
    lib = ctypes.CDLL(lib_path)
    buf = ctypes.create_string_buffer(ID_BYTES)
    lib.oxcclGetUniqueId.argtypes = [ctypes.c_void_p]
    lib.oxcclGetUniqueId.restype = ctypes.c_int
    lib.oxcclGetLastError.argtypes = [ctypes.c_void_p]
    lib.oxcclGetLastError.restype = ctypes.c_char_p
    if lib.oxcclGetUniqueId(buf) != 0:
        raise SystemExit("launch: oxcclGetUniqueId failed: %s" % lib.oxcclGetLastError(None).decode())
    b = buf.raw
    # Layout (src/bootstrap/unique_id.rs): family at 5, port (big-endian) at 6..8,
    # address at 8..24, job secret at 32..64.
    port = int.from_bytes(b[6:8], "big")
    if b[5] == 4:
        host = str(ipaddress.IPv4Address(b[8:12]))
    else:
        host = "[%s]" % ipaddress.IPv6Address(b[8:24])
    return lib, "%s:%d" % (host, port), b[32:64].hex()


def stop(procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 3
    for p in procs:
        while p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if p.poll() is None:
            p.kill()
            p.wait()


def describe(code):
    return "was killed by signal %d" % -code if code < 0 else "exited with status %d" % code


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, required=True, help="number of ranks")
    ap.add_argument("--timeout", type=float, default=300, help="seconds before the job is stopped")
    ap.add_argument("--lib", default=None, help="path of liboxccl.so")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if a.n < 1 or not cmd:
        ap.error("need -n >= 1 and a program")
    _lib, root, secret = make_store(a.lib or default_lib())
    procs = []
    for r in range(a.n):
        env = dict(os.environ)
        env.update(
            OXCCL_RANK=str(r),
            OXCCL_WORLD_SIZE=str(a.n),
            OXCCL_LOCAL_RANK=str(r),
            OXCCL_LOCAL_SIZE=str(a.n),
            OXCCL_ROOT=root,
            OXCCL_JOB_SECRET=secret,
        )
        procs.append(subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL))
    deadline = time.monotonic() + a.timeout
    status = 0
    while True:
        codes = [p.poll() for p in procs]
        failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            r, c = failed[0]
            print("launch: rank %d %s; stopping the other ranks" % (r, describe(c)), file=sys.stderr)
            status = 1
            break
        if all(c == 0 for c in codes):
            break
        if time.monotonic() > deadline:
            left = [r for r, c in enumerate(codes) if c is None]
            print("launch: timeout after %gs; ranks %s still running" % (a.timeout, left), file=sys.stderr)
            status = 124
            break
        time.sleep(0.02)
    stop(procs)
    return status


if __name__ == "__main__":
    sys.exit(main())
