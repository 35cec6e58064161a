"""FSDP2 (`torch.distributed.fsdp.fully_shard`) on CPU over oxccl against the same run over
gloo, in the same process (same seed, same data, 20 steps of SGD): the final full parameters
(gathered with `DTensor.full_tensor()`) and every step's loss are compared.

    target/release/rankrun -n 2 python python/torch/tests/test_fsdp.py
    target/release/rankrun -n 4 python python/torch/tests/test_fsdp.py

FSDP2 shards each parameter on dim 0 (padding the last shard), all-gathers the shards
before forward and again in backward (`all_gather_into_tensor`, in place), and
reduce-scatters the gradients (`reduce_scatter_tensor`). For float32 gradients it asks for
ReduceOp.AVG; with `set_force_sum_reduction_for_comms(True)` it sums and divides afterwards.
The mesh is built from an existing group (`DeviceMesh.from_group(group, "cpu")`): the oxccl
default group, or a gloo group of the same ranks.

Two models:

* "exact": three Linear layers (each its own FSDP unit) reading disjoint slices of the input,
  their outputs summed, trained with an L1 loss on small-integer data, SGD lr 1/128, weights
  starting on a 1/256 grid. Each layer's gradient is sign(out - y) x^T, small integers, so
  every sum and the division by 2 or 4 ranks are exact: bitwise equal to gloo at any number
  of ranks. Also with bf16 parameters (fp32 reduction): the gradients are still integers.
* "mlp": a ReLU MLP whose widths do not divide by 4 (padded shards) with cross-entropy on
  random data. Bitwise equal to gloo at 2 ranks (a + b == b + a); beyond, the two libraries
  associate the sums differently, so it is compared within 1e-4 (the largest difference is
  printed with OXCCL_TORCH_TEST_VERBOSE=1), and must be bitwise equal from one oxccl run to
  the next.
"""

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from common import Suite, close, first_error, same

STEPS = 20

suite = Suite("test_fsdp")
rank, size, gloo = suite.rank, suite.size, suite.gloo


class ExactNet(nn.Module):
    """out = a(x[:, :256]) + b(x[:, 256:384]) + c(x[:, 384:448]): every layer's gradient is an
    integer matrix, whatever the other layers' weights."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(256, 512)
        self.b = nn.Linear(128, 512)
        self.c = nn.Linear(64, 512, bias=False)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.round(p * 256) / 256)

    def forward(self, x):
        return self.a(x[:, :256]) + self.b(x[:, 256:384]) + self.c(x[:, 384:448])


def exact_batch(step):
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randint(-2, 3, (8, 448), generator=g).float()
    y = torch.randint(-2, 3, (8, 512), generator=g).float()
    return x, y


def mlp_model():
    return nn.Sequential(nn.Linear(32, 250), nn.ReLU(), nn.Linear(250, 250), nn.ReLU(),
                         nn.Linear(250, 10))


def mlp_batch(step):
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(16, 32, generator=g), torch.randint(0, 10, (16,), generator=g)


def l1(out, y):
    return (out.float() - y).abs().sum()


MODELS = {
    "exact": (ExactNet, exact_batch, l1, dict(lr=1.0 / 128)),
    "mlp": (mlp_model, mlp_batch, nn.functional.cross_entropy, dict(lr=0.05, momentum=0.9)),
}


def train(name, pg, force_sum=False, bf16=False):
    """20 steps of FSDP2 over `pg` (None: the default group); returns the full parameters and
    the losses."""
    make, batch, loss_fn, sgd = MODELS[name]
    torch.manual_seed(100)  # the same full model on every rank, as FSDP expects
    model = make()
    mesh = DeviceMesh.from_group(pg if pg is not None else dist.group.WORLD, "cpu")
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if bf16 else MixedPrecisionPolicy()
    for m in model.children():
        if any(True for _ in m.parameters()):
            fully_shard(m, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    if force_sum:
        model.set_force_sum_reduction_for_comms(True)
    opt = torch.optim.SGD(model.parameters(), **sgd)
    losses = []
    for step in range(STEPS):
        x, y = batch(step)
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.detach().clone())
    full = [p.full_tensor().detach().clone() for p in model.parameters()]
    return full, torch.stack(losses)


def compare(a, b, what, tol=None):
    (pa, la), (pb, lb) = a, b
    errs = []
    for i, (p, q) in enumerate(zip(pa, pb)):
        if tol is None:
            errs.append(same(p, q, "%s parameter %d" % (what, i)))
        else:
            errs.append(close(p, q, tol, tol, "%s parameter %d" % (what, i)))
    if tol is None:
        errs.append(same(la, lb, "%s losses" % what))
    if len(pa) != len(pb):
        errs.append("%s: %d parameters, expected %d" % (what, len(pa), len(pb)))
    return first_error(*errs)


def max_diff(a, b):
    (pa, _), (pb, _) = a, b
    d = max((p.double() - q.double()).abs().max().item() for p, q in zip(pa, pb))
    n = sum(int((p != q).sum()) for p, q in zip(pa, pb))
    return d, n, sum(p.numel() for p in pa)


def in_sync(run):
    """The full parameters are bitwise identical on every rank."""
    flat = torch.cat([p.flatten().float() for p in run[0]])
    everyone = [torch.empty_like(flat) for _ in range(size)]
    dist.all_gather(everyone, flat, group=gloo)
    return first_error(*[same(flat, everyone[k], "parameters vs rank %d's" % k)
                         for k in range(size)])


def sharded():
    """fully_shard really shards: each rank holds 1/size of the first layer's weight."""
    torch.manual_seed(100)
    model = ExactNet()
    full = model.a.weight.detach().clone()
    fully_shard(model.a, mesh=DeviceMesh.from_group(dist.group.WORLD, "cpu"))
    local = model.a.weight.to_local()
    chunk = -(-512 // size)  # torch.chunk's split: the last shards may be short or empty
    mine = full[rank * chunk:(rank + 1) * chunk]
    return first_error(
        None if local.shape == mine.shape
        else "local shard %s, expected %s" % (tuple(local.shape), tuple(mine.shape)),
        same(local, mine, "local shard"),
        same(model.a.weight.full_tensor(), full, "full_tensor()"))


def gloo_reference(name, force_sum=False, bf16=False):
    """gloo's run with the same reductions (FSDP's AVG, which gloo takes in torch 2.15, or
    SUM then a division); should gloo refuse AVG, it sums (the division by 2 or 4 afterwards
    is exact for the exact model)."""
    try:
        return train(name, gloo, force_sum, bf16), "SUM" if force_sum else "AVG"
    except (RuntimeError, ValueError) as e:
        if force_sum:
            raise
        if rank == 0 and suite.verbose:
            print("gloo refuses FSDP's default reduction (%s); using force_sum" % e, flush=True)
        return train(name, gloo, True, bf16), "SUM"


def t_exact(force_sum, bf16=False):
    ox = train("exact", None, force_sum, bf16)
    gl, how = gloo_reference("exact", force_sum, bf16)
    if suite.verbose and rank == 0:
        d, n, total = max_diff(ox, gl)
        print("exact, force_sum %s, bf16 %s (gloo %s): %d of %d parameters differ, by at most %g"
              % (force_sum, bf16, how, n, total, d), flush=True)
    return first_error(compare(ox, gl, "oxccl vs gloo"), in_sync(ox))


def t_mlp(force_sum):
    ox = train("mlp", None, force_sum)
    ox2 = train("mlp", None, force_sum)
    gl, how = gloo_reference("mlp", force_sum)
    d, n, total = max_diff(ox, gl)
    if suite.verbose and rank == 0:
        print("mlp, force_sum %s (gloo %s): %d of %d parameters differ from gloo's, by at most %g"
              % (force_sum, how, n, total, d), flush=True)
    return first_error(compare(ox, gl, "oxccl vs gloo", None if size == 2 else 1e-4),
                       compare(ox2, ox, "oxccl run 2"), in_sync(ox))


suite.check("fsdp shards parameters", sharded)
for force_sum in (False, True):
    suite.check("fsdp exact model, force_sum %s" % force_sum, t_exact, force_sum)
    suite.check("fsdp mlp, force_sum %s" % force_sum, t_mlp, force_sum)
suite.check("fsdp exact model, bf16 params", t_exact, False, True)
suite.finish()
