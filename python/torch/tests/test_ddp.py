"""DistributedDataParallel over oxccl against the same run over gloo, in the same process
(same seeds, same data, 50 steps): final parameters compared bitwise.

    target/release/rankrun -n 2 python python/torch/tests/test_ddp.py
    target/release/rankrun -n 4 python python/torch/tests/test_ddp.py

Two models:

* "exact": a linear layer (2 MiB of parameters, so several gradient buckets) trained with an
  L1 loss on small-integer data, SGD with lr 1/128 from weights on a 1/256 grid. Its gradients
  are small integers and every sum of them is exact, so the parameters are bitwise equal to
  gloo's at any number of ranks: this checks DDP's whole path (parameter broadcast, buckets,
  futures, averaging, comm hooks) bit for bit.
* "mlp": a ReLU MLP (1.1 MiB) with cross-entropy and SGD with momentum on random data. At 2
  ranks it is bitwise equal to gloo (a + b == b + a); beyond, the two libraries associate the
  gradient sums differently, so it is compared within rounding, and must be bitwise identical
  on every rank and from one oxccl run to the next.
"""

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP

from common import Suite, close, first_error, same

STEPS = 50

suite = Suite("test_ddp")
rank, size, gloo = suite.rank, suite.size, suite.gloo


def exact_model():
    m = nn.Linear(512, 1024)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.round(p * 256) / 256)
    return m


def exact_batch(step):
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randint(-2, 3, (8, 512), generator=g).float()
    y = torch.randint(-2, 3, (8, 1024), generator=g).float()
    return x, y


def mlp_model():
    return nn.Sequential(nn.Linear(32, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                         nn.Linear(512, 10))


def mlp_batch(step):
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(16, 32, generator=g), torch.randint(0, 10, (16,), generator=g)


MODELS = {
    "exact": (exact_model, exact_batch, lambda out, y: (out - y).abs().sum(),
              dict(lr=1.0 / 128)),
    "mlp": (mlp_model, mlp_batch, nn.functional.cross_entropy, dict(lr=0.05, momentum=0.9)),
}
HOOKS = {
    None: None,
    "allreduce_hook": default_hooks.allreduce_hook,
    "fp16_compress_hook": default_hooks.fp16_compress_hook,
}


def train(name, pg, hook=None):
    make, batch, loss_fn, sgd = MODELS[name]
    torch.manual_seed(100 + rank)  # ranks start apart: DDP's broadcast must align them
    model = make()
    ddp = DDP(model, process_group=pg, bucket_cap_mb=0.25)
    if hook is not None:
        ddp.register_comm_hook(pg, HOOKS[hook])
    opt = torch.optim.SGD(ddp.parameters(), **sgd)
    for step in range(STEPS):
        x, y = batch(step)
        opt.zero_grad()
        loss_fn(ddp(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def compare_params(a, b, what, tol=None):
    errs = []
    for i, (p, q) in enumerate(zip(a, b)):
        if tol is None:
            errs.append(same(p, q, "%s parameter %d" % (what, i)))
        else:
            errs.append(close(p, q, tol, tol, "%s parameter %d" % (what, i)))
    return first_error(*errs)


def in_sync(params):
    """The parameters are bitwise identical on every rank."""
    flat = torch.cat([p.flatten() for p in params])
    everyone = [torch.empty_like(flat) for _ in range(size)]
    dist.all_gather(everyone, flat, group=gloo)
    return first_error(*[same(flat, everyone[k], "parameters vs rank %d's" % k)
                         for k in range(size)])


def t_exact(hook):
    ox = train("exact", None, hook)  # the default group: oxccl
    gl = train("exact", gloo, hook)
    return first_error(compare_params(ox, gl, "oxccl vs gloo"), in_sync(ox))


def t_mlp(hook):
    ox = train("mlp", None, hook)
    ox2 = train("mlp", None, hook)
    gl = train("mlp", gloo, hook)
    vs_gloo = compare_params(ox, gl, "oxccl vs gloo", None if size == 2 else 1e-4)
    if suite.verbose and rank == 0:
        d = max((p - q).abs().max().item() for p, q in zip(ox, gl))
        n = sum(int((p != q).sum()) for p, q in zip(ox, gl))
        print("mlp, hook %s: %d of %d parameters differ from gloo's, by at most %g"
              % (hook, n, sum(p.numel() for p in ox), d), flush=True)
    return first_error(vs_gloo, compare_params(ox, ox2, "oxccl run 2"), in_sync(ox))


for hook in HOOKS:
    suite.check("ddp exact model, hook %s" % hook, t_exact, hook)
for hook in (None, "allreduce_hook"):
    suite.check("ddp mlp, hook %s" % hook, t_mlp, hook)
suite.finish()
