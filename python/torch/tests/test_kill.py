"""A rank dies (SIGKILL) in the middle of DDP training over oxccl: every survivor must raise,
within 5 s of the kill, an error that names the dead rank, and then end by itself.

    python python/torch/tests/test_kill.py        # no launcher: it starts its 3 ranks itself

rankrun stops the whole job when a rank dies, so this script is its own launcher: it starts 3
processes of itself with torch's env:// variables (RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1,
a free MASTER_PORT), lets them train, and judges what they report. For each case one rank
writes the time and SIGKILLs itself (os.kill(os.getpid(), 9)) at the start of step KILL_STEP,
after a few DDP steps; the survivors are then in the gradient allreduce of that step. Each
survivor records the time its step raised and the message (oxccl's, through
torch.distributed.DistBackendError), then destroys the process group (on a watchdog) and
exits. The survivors' group timeout is 60 s, so a survivor that is only freed by the
timeout fails the 5 s check rather than hanging the test; the driver kills whatever is left
after 120 s per case.

Checks per case (dead rank 2, 1, 0: the last, a middle one, and rank 0, which holds torch's
TCPStore and oxccl's bootstrap store):
* the survivors raise within 5 s of the kill, naming "rank <dead>";
* every process ends by itself (survivors exit 0, after destroy_process_group returned
  within 10 s; the dead rank by signal 9).

It prints one line, "test_kill at 3 ranks: N passed, N failed", and exits 1 on failure.
OXCCL_TORCH_TEST_VERBOSE=1 prints every survivor's message and delay.
"""

import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

WORLD = 3
KILL_STEP = 4
STEPS = 40          # the survivors would train this long if nothing failed
DETECT_S = 5.0      # survivors must raise within this many seconds of the kill
DESTROY_S = 10.0    # ... and destroy their process group within this many seconds
CASE_S = 120.0      # the driver's limit per case
CASES = [2, 1, 0]   # the dead rank


# --- a rank ----------------------------------------------------------------------------------

def write_json(path, obj):
    tmp = path + ".tmp"
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def worker():
    import torch
    import torch.distributed as dist
    import torch.nn as nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    import oxccl_torch  # noqa: F401

    rank = int(os.environ["RANK"])
    dead = int(os.environ["OXCCL_KILLTEST_DEAD"])
    out = os.environ["OXCCL_KILLTEST_DIR"]
    torch.set_num_threads(1)
    dist.init_process_group("oxccl", timeout=datetime.timedelta(seconds=60))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    result = {"rank": rank, "error": None}
    for step in range(STEPS):
        if rank == dead and step == KILL_STEP:
            write_json(os.path.join(out, "killed"), {"rank": rank, "time": time.time()})
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            g = torch.Generator().manual_seed(step * 10 + rank)
            x, y = torch.randn(32, 64, generator=g), torch.randint(0, 10, (32,), generator=g)
            opt.zero_grad()
            nn.functional.cross_entropy(ddp(x), y).backward()
            opt.step()
        except Exception as e:  # noqa: BLE001  (whatever the survivor gets is judged)
            result.update(time=time.time(), step=step, error=type(e).__name__,
                          message=str(e)[:4000])
            break
    result["steps_done"] = step
    write_json(os.path.join(out, "rank%d" % rank), result)
    # The group must come down by itself after the failure; a watchdog ends the process if
    # it does not (the driver then sees exit status 3).
    threading.Timer(DESTROY_S, lambda: os._exit(3)).start()
    t0 = time.time()
    try:
        dist.destroy_process_group()
        result["destroy"] = "ok"
    except Exception as e:  # noqa: BLE001
        result["destroy"] = "%s: %s" % (type(e).__name__, str(e)[:500])
    result["destroy_s"] = time.time() - t0
    write_json(os.path.join(out, "rank%d" % rank), result)
    sys.stdout.flush()
    os._exit(0)


# --- the driver ------------------------------------------------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            lines = [ln for ln in f.read().splitlines()
                     if "Work::is_success API is being deprecated" not in ln]
        return "\n".join("      " + ln for ln in lines[-n:])
    except OSError:
        return "      (no output)"


def run_case(dead, verbose):
    """Returns [(check name, None or what failed)]."""
    d = tempfile.mkdtemp(prefix="oxccl-killtest-")
    port = free_port()
    procs = []
    try:
        for r in range(WORLD):
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("OXCCL_RANK", "OXCCL_WORLD_SIZE", "OXCCL_LOCAL_",
                                        "OXCCL_JOB_SECRET", "TORCHELASTIC_"))}
            env.update(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(WORLD),
                       LOCAL_WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(port), OXCCL_KILLTEST_DEAD=str(dead),
                       OXCCL_KILLTEST_DIR=d, OMP_NUM_THREADS="1")
            env.pop("OXCCL_ROOT", None)
            env.setdefault("OXCCL_ROOT_ADDR", "127.0.0.1")  # one host: stay on loopback
            log = open(os.path.join(d, "out%d" % r), "w")
            procs.append(subprocess.Popen(
                [sys.executable, "-W", "ignore", os.path.abspath(__file__), "--rank"],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            log.close()
        deadline = time.monotonic() + CASE_S
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.2)
        hung = [r for r, p in enumerate(procs) if p.poll() is None]
        for r in hung:
            procs[r].kill()
        for p in procs:
            p.wait()

        killed = read_json(os.path.join(d, "killed"))
        survivors = [r for r in range(WORLD) if r != dead]
        raised, ended = [], []
        if killed is None:
            raised.append("rank %d never reached step %d (exit status %s)"
                          % (dead, KILL_STEP, procs[dead].returncode))
        for r in survivors:
            res = read_json(os.path.join(d, "rank%d" % r))
            if res is None:
                raised.append("rank %d reported nothing (exit status %s)"
                              % (r, procs[r].returncode))
                continue
            if res["error"] is None:
                raised.append("rank %d trained %d steps without an error"
                              % (r, res["steps_done"] + 1))
            elif killed is not None:
                delay = res["time"] - killed["time"]
                msg = res["message"]
                if verbose:
                    print("  dead %d: rank %d raised %s at step %d after %.2f s: %s"
                          % (dead, r, res["error"], res["step"], delay, msg[:600]), flush=True)
                if delay > DETECT_S:
                    raised.append("rank %d raised %.1f s after the kill (limit %g s): %s"
                                  % (r, delay, DETECT_S, msg[:300]))
                if ("rank %d" % dead) not in msg:
                    raised.append("rank %d's error does not name rank %d: %s: %s"
                                  % (r, dead, res["error"], msg[:600]))
            if r in hung:
                ended.append("rank %d still running after %g s: killed" % (r, CASE_S))
            elif procs[r].returncode != 0:
                ended.append("rank %d exit status %d%s" % (
                    r, procs[r].returncode,
                    " (destroy_process_group took over %g s)" % DESTROY_S
                    if procs[r].returncode == 3 else ""))
            elif res.get("destroy") != "ok":
                ended.append("rank %d: destroy_process_group: %s" % (r, res.get("destroy")))
        if procs[dead].returncode != -signal.SIGKILL:
            ended.append("rank %d (the one to die) exit status %s"
                         % (dead, procs[dead].returncode))
        if raised or ended:
            for r in range(WORLD):
                print("  dead %d: rank %d's output:\n%s" % (dead, r, tail(os.path.join(d, "out%d" % r))),
                      flush=True)
        name = "rank %d killed at step %d" % (dead, KILL_STEP)
        return [("%s: survivors raise within %g s naming it" % (name, DETECT_S),
                 "; ".join(raised) or None),
                ("%s: every process ends by itself" % name, "; ".join(ended) or None)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(d, ignore_errors=True)


def main():
    verbose = os.environ.get("OXCCL_TORCH_TEST_VERBOSE") == "1"
    only = os.environ.get("OXCCL_TORCH_TEST_ONLY")
    passed = failed = 0
    failures = []
    for dead in CASES:
        if only and only not in "rank %d killed at step %d" % (dead, KILL_STEP):
            continue
        t0 = time.monotonic()
        for name, err in run_case(dead, verbose):
            if err is None:
                passed += 1
                if verbose:
                    print("ok   %s" % name, flush=True)
            else:
                failed += 1
                failures.append(name)
                print("FAIL %s: %s" % (name, err[:3000]), flush=True)
        if verbose:
            print("  (case took %.1f s)" % (time.monotonic() - t0), flush=True)
    if failures:
        print("test_kill: failed: %s" % ", ".join(failures), flush=True)
    print("test_kill at %d ranks: %d passed, %d failed" % (WORLD, passed, failed), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    if sys.argv[1:] == ["--rank"]:
        worker()
    else:
        main()
