"""Data-parallel SGD with oxccl: every rank trains the same small numpy model (a two-layer
tanh network for regression) on its own shard of the data; after each backward pass the
gradients are averaged across ranks with one allreduce, so that every replica takes the
same step. The replicas must stay bitwise identical: every few steps all ranks gather their
parameters and compare the bytes.

    rankrun -n 4 python3 python/examples/dp_sgd.py [--steps 200]

Exit status 0 when the replicas stayed identical and the loss fell.
"""

import argparse
import sys

import numpy as np

import oxccl

IN, HIDDEN = 8, 32


def init_params(seed):
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((IN, HIDDEN)) / np.sqrt(IN)).astype(np.float32),
        np.zeros(HIDDEN, np.float32),
        (rng.standard_normal((HIDDEN, 1)) / np.sqrt(HIDDEN)).astype(np.float32),
        np.zeros(1, np.float32),
    ]


def shard(rank, n):
    """This rank's data: a fixed nonlinear target plus noise, drawn from the rank's seed."""
    rng = np.random.default_rng(1000 + rank)
    x = rng.standard_normal((n, IN)).astype(np.float32)
    w = np.linspace(-1, 1, IN, dtype=np.float32)
    y = (np.sin(x @ w) + 0.1 * rng.standard_normal(n)).astype(np.float32)[:, None]
    return x, y


def loss_and_grads(params, x, y):
    w1, b1, w2, b2 = params
    h = np.tanh(x @ w1 + b1)
    pred = h @ w2 + b2
    err = pred - y
    loss = float(np.mean(err * err))
    d = (2.0 / len(x)) * err
    gw2 = h.T @ d
    gb2 = d.sum(axis=0)
    dh = (d @ w2.T) * (1 - h * h)
    gw1 = x.T @ dh
    gb1 = dh.sum(axis=0)
    return loss, [gw1.astype(np.float32), gb1.astype(np.float32),
                  gw2.astype(np.float32), gb2.astype(np.float32)]


def flat(arrays):
    return np.concatenate([a.ravel() for a in arrays])


def unflat(v, like):
    out, i = [], 0
    for a in like:
        out.append(v[i:i + a.size].reshape(a.shape))
        i += a.size
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--check-every", type=int, default=10)
    ap.add_argument("--perturb", type=int, default=-1, metavar="RANK",
                    help="change one parameter of RANK by one ulp (shows that the check bites)")
    a = ap.parse_args()

    comm = oxccl.Comm.from_env()
    rank, size = comm.rank, comm.size
    # Different seeds on purpose: the broadcast below is what makes the replicas equal.
    params = init_params(seed=rank)
    v = flat(params)
    comm.broadcast(v, root=0)
    params = unflat(v, params)
    if rank == a.perturb:
        params[0][0, 0] = np.nextafter(params[0][0, 0], np.float32(np.inf))

    x, y = shard(rank, 1024)
    rng = np.random.default_rng(7 + rank)
    first = last = None
    identical_checks = 0
    for step in range(a.steps):
        idx = rng.integers(0, len(x), a.batch)
        loss, grads = loss_and_grads(params, x[idx], y[idx])
        g = flat(grads)
        comm.all_reduce(g, op="avg")  # the data-parallel step: one allreduce of all grads
        params = [p - np.float32(a.lr) * q for p, q in zip(params, unflat(g, params))]

        # The mean loss over ranks, for the log.
        mean_loss = float(comm.all_reduce(np.array([loss], np.float64), op="avg")[0])
        first = mean_loss if first is None else first
        last = mean_loss
        if step % a.check_every == 0 or step == a.steps - 1:
            mine = flat(params)
            everyone = comm.all_gather(mine)
            for r in range(size):
                if everyone[r].tobytes() != mine.tobytes():
                    diff = int(np.count_nonzero(everyone[r].view(np.uint32) != mine.view(np.uint32)))
                    print("rank %d: step %d: replica of rank %d differs in %d of %d parameters"
                          % (rank, step, r, diff, mine.size), file=sys.stderr)
                    return 1
            identical_checks += 1
        if rank == 0 and step % 50 == 0:
            print("step %4d  mean loss %.5f" % (step, mean_loss))

    digest = flat(params).view(np.uint32)
    if rank == 0:
        print("step %4d  mean loss %.5f (from %.5f)" % (a.steps - 1, last, first))
        print("replicas bitwise identical at %d checks over %d steps on %d ranks "
              "(parameter checksum %08x)"
              % (identical_checks, a.steps, size, int(np.bitwise_xor.reduce(digest))))
    comm.destroy()
    if not last < 0.5 * first:
        print("rank %d: the loss did not fall enough (%.5f -> %.5f)" % (rank, first, last),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
