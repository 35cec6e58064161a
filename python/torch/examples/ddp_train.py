"""Data-parallel training of a small MLP with DistributedDataParallel over the oxccl backend.

    torchrun --nproc-per-node 2 python/torch/examples/ddp_train.py
    target/release/rankrun -n 2 python python/torch/examples/ddp_train.py
    srun -n 4 python python/torch/examples/ddp_train.py          # with MASTER_ADDR/PORT set

Every rank trains on its own shard of a synthetic classification task; DDP averages the
gradients with oxccl's allreduce. `--check-gloo` trains the same model a second time over a
gloo group and prints how far the parameters are from oxccl's (0 at 2 ranks).
"""

import argparse
import time

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

# Optional once `pip install ./python/torch` has registered the backend's entry point;
# needed when the package is only on PYTHONPATH.
import oxccl_torch  # noqa: F401


def make_model():
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def batch(step, rank, size=32):
    """Rank `rank`'s batch at `step`: points near one of 10 centres, labelled by centre."""
    g = torch.Generator().manual_seed(step * 9973 + rank)
    centres = torch.randn(10, 64, generator=torch.Generator().manual_seed(7)) * 0.3
    y = torch.randint(0, 10, (size,), generator=g)
    return centres[y] + torch.randn(size, 64, generator=g), y


def train(args, group, rank):
    torch.manual_seed(args.seed)
    model = make_model()
    ddp = DDP(model, process_group=group)
    opt = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=0.9)
    t0 = time.monotonic()
    for step in range(args.steps):
        x, y = batch(step, rank)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(ddp(x), y)
        loss.backward()
        opt.step()
        if rank == 0 and (step % args.log_every == 0 or step == args.steps - 1):
            print("step %4d  loss %.4f" % (step, loss.item()), flush=True)
    return [p.detach().clone() for p in model.parameters()], time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--check-gloo", action="store_true",
                    help="train again over gloo and compare the parameters")
    args = ap.parse_args()

    dist.init_process_group("oxccl")  # env://: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    rank, size = dist.get_rank(), dist.get_world_size()
    if rank == 0:
        print("oxccl backend, %d ranks, liboxccl %s" % (size, oxccl_torch.library_path()),
              flush=True)
    params, secs = train(args, None, rank)
    if rank == 0:
        print("%d steps in %.2f s" % (args.steps, secs), flush=True)
    if args.check_gloo:
        gloo = dist.new_group(backend="gloo")
        ref, _ = train(args, gloo, rank)
        diff = max((p - q).abs().max().item() for p, q in zip(params, ref))
        if rank == 0:
            print("largest difference from the gloo run: %g" % diff, flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
