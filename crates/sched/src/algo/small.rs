//! Latency-bound schedules: recursive-doubling allreduce, recursive-halving reduce-scatter,
//! dissemination barrier, point-to-point, and the local-only cases (one rank, or nothing to
//! move).

use super::chunks::{nchunks, part};
use super::ring::span;
use super::{BufId, Kind, Plan, ScheduleBuilder, Span};

/// One rank, or zero elements: at most a local copy.
pub fn local_only(p: &Plan, b: &mut ScheduleBuilder) {
    if p.count == 0 {
        return;
    }
    match p.kind {
        Kind::AllReduce
        | Kind::AllGather
        | Kind::ReduceScatter
        | Kind::Broadcast
        | Kind::Reduce
        | Kind::AllToAll
        | Kind::Gather
        | Kind::Scatter => {
            let whole = (0, p.count);
            b.copy(
                span(p, BufId::Send, whole),
                span(p, BufId::Recv, whole),
                &[],
            );
        }
        Kind::Send
        | Kind::Recv
        | Kind::Barrier
        | Kind::AllToAllV
        | Kind::AllGatherV
        | Kind::ReduceScatterV => {}
    }
}

/// Recursive-doubling allreduce: log2(P) exchanges of the whole buffer with partner
/// `pos ^ 2^k` among the largest power of two P <= N (positions along the ring, so the first
/// rounds stay inside a host); the N-P extra positions first hand their input to pos-P and
/// get the result back at the end. Both partners of an exchange apply the
/// same commutative operation to the same two operands, so all ranks stay bitwise identical.
pub fn allreduce_rd(p: &Plan, b: &mut ScheduleBuilder) {
    let n = p.size;
    let r = p.pos(p.rank);
    let pw = if n.is_power_of_two() {
        n
    } else {
        n.next_power_of_two() / 2
    };
    let extra = n - pw;
    let nch = nchunks(p.count, p.chunk_elems());
    for j in 0..nch {
        let part_j = part(p.count, nch, j);
        let mine = span(p, BufId::Send, part_j);
        let out = span(p, BufId::Recv, part_j);
        let ch = b.channel(j);
        if r >= pw {
            let s = b.send(p.at(r - pw), mine, ch, &[]);
            b.recv(p.at(r - pw), out, ch, &[Some(s)]);
            continue;
        }
        let mut cur: Span = mine;
        let mut last = None;
        if r < extra {
            last = Some(b.recv_reduce(p.at(r + pw), out, mine, ch, &[]));
            cur = out;
        }
        let mut mask = 1;
        while mask < pw {
            let partner = p.at(r ^ mask);
            let s = b.send(partner, cur, ch, &[last]);
            // The result overwrites what was just sent: wait for the send.
            last = Some(b.recv_reduce(partner, out, cur, ch, &[Some(s), last]));
            cur = out;
            mask <<= 1;
        }
        if p.avg {
            last = Some(b.finalize(out, &[last]));
        }
        if r < extra {
            b.send(p.at(r + pw), out, ch, &[last]);
        }
    }
}

/// Recursive-halving reduce-scatter on a power-of-two rank count: log2 N rounds instead of
/// N-1 messages. Blocks are taken in ring-position order (straight from the send buffer when
/// the ring is in rank order, else from a copy in scratch); in the round of distance d (N/2
/// down to 1) a rank's current range of 2d blocks splits in two, it keeps the half holding
/// its own block, sends the other half to position pos ^ d, and reduces that partner's copy
/// of its half into scratch; the last round writes the rank's block to the receive buffer.
/// Each rank's block is reduced only there, so nothing is compared across ranks.
pub fn reduce_scatter_halving(p: &Plan, b: &mut ScheduleBuilder) {
    let (n, r, c, e) = (p.size, p.pos(p.rank), p.count, p.elem);
    let blk = c * e;
    let work = b.scratch(n * blk);
    let at = |buf: BufId, block: usize, (o, l): (usize, usize)| {
        let base = if buf == BufId::Scratch { work.off } else { 0 };
        Span::new(buf, base + block * blk + o * e, l * e)
    };
    let in_order = (0..n).all(|q| p.at(q) == q);
    let mut deps: Vec<Option<u32>> = Vec::new();
    if !in_order {
        for q in 0..n {
            let src = Span::new(BufId::Send, p.at(q) * blk, blk);
            deps.push(Some(b.copy(src, at(BufId::Scratch, q, (0, c)), &[])));
        }
    }
    let mut from = if in_order {
        BufId::Send
    } else {
        BufId::Scratch
    };
    let (mut lo, mut d) = (0, n / 2);
    while d >= 1 {
        let partner = p.at(r ^ d);
        let (keep, give) = if r & d == 0 {
            (lo, lo + d)
        } else {
            (lo + d, lo)
        };
        let len = d * c;
        let ns = nchunks(len, p.chunk_elems());
        let mut next = Vec::with_capacity(ns);
        for j in 0..ns {
            let piece = part(len, ns, j);
            let ch = b.channel(j);
            b.send(partner, at(from, give, piece), ch, &deps);
            let dst = if d == 1 {
                span(p, BufId::Recv, piece)
            } else {
                at(BufId::Scratch, keep, piece)
            };
            let local = at(from, keep, piece);
            next.push(Some(b.recv_reduce(partner, dst, local, ch, &deps)));
        }
        deps = next;
        from = BufId::Scratch;
        lo = keep;
        d /= 2;
    }
    if p.avg {
        b.finalize(span(p, BufId::Recv, (0, c)), &deps);
    }
}

/// Dissemination barrier: in round k each rank signals rank+2^k and waits for rank-2^k.
pub fn barrier(p: &Plan, b: &mut ScheduleBuilder) {
    let n = p.size;
    let empty = Span::new(BufId::Send, 0, 0);
    let mut last = None;
    let mut d = 1;
    while d < n {
        b.send((p.rank + d) % n, empty, 0, &[last]);
        last = Some(b.recv((p.rank + n - d) % n, Span::new(BufId::Recv, 0, 0), 0, &[]));
        d *= 2;
    }
}

/// Point-to-point: the message is cut into chunks spread over the channels.
pub fn p2p(p: &Plan, b: &mut ScheduleBuilder) {
    let nch = nchunks(p.count, p.chunk_elems());
    for j in 0..nch {
        let r = part(p.count, nch, j);
        if p.kind == Kind::Send {
            b.send(p.root, span(p, BufId::Send, r), b.channel(j), &[]);
        } else {
            b.recv(p.root, span(p, BufId::Recv, r), b.channel(j), &[]);
        }
    }
}
