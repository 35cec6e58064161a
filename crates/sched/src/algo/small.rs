//! Latency-bound schedules: recursive-doubling allreduce, dissemination barrier,
//! point-to-point, and the local-only cases (one rank, or nothing to move).

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
