//! The uneven-count collectives ([`Plan::blocks`]): alltoallv by pairwise exchange, and
//! allgatherv and reduce-scatterv on the ring, each rank's block cut into its own chunks.
//!
//! Every pair that talks exchanges at least one (possibly empty) message, so ranks agree on
//! the number of messages whatever the counts, and a disagreement about counts shows as a
//! message of the wrong size or count word instead of a hang.

use super::alltoall::{pairwise_blocks, reduce_scatter_blocks};
use super::chunks::{nchunks, part};
use super::ring::RingView;
use super::{Algo, Block, BufId, Kind, Plan, ScheduleBuilder, Span};

/// Builds the schedule of an uneven-count call.
pub fn build(p: &Plan, b: &mut ScheduleBuilder) {
    let ok = |v: &[Block]| v.len() == p.size;
    match p.kind {
        Kind::AllToAllV if ok(&p.blocks.send) && ok(&p.blocks.recv) => {
            pairwise_blocks(p, b, &p.blocks.send, &p.blocks.recv, true)
        }
        Kind::AllGatherV if ok(&p.blocks.recv) => allgatherv(p, b, &p.blocks.recv),
        Kind::ReduceScatterV if ok(&p.blocks.send) && p.algo == Algo::Pairwise => {
            reduce_scatter_blocks(p, b, &p.blocks.send)
        }
        Kind::ReduceScatterV if ok(&p.blocks.send) => reduce_scatterv(p, b, &p.blocks.send),
        _ => {}
    }
}

fn span(p: &Plan, buf: BufId, base: usize, (off, len): (usize, usize)) -> Span {
    Span::new(buf, (base + off) * p.elem, len * p.elem)
}

/// Ring allgatherv: at step s send the block of position pos-s (first the own input), and
/// receive the block of position pos-s-1 in place; each block travels in its own chunks.
fn allgatherv(p: &Plan, b: &mut ScheduleBuilder, recv: &[Block]) {
    let own = recv[p.rank];
    let ce = p.chunk_elems();
    let v = RingView::new(p);
    let mut got: Vec<u32> = Vec::new();
    let mut first_sends = Vec::new();
    for s in 0..v.n.saturating_sub(1) {
        let q = p.ring[v.back(s)];
        let blk = recv[q];
        let nch = nchunks(blk.len, ce);
        for j in 0..nch {
            let src = if s == 0 {
                span(p, BufId::Send, 0, part(blk.len, nch, j))
            } else {
                span(p, BufId::Recv, blk.off, part(blk.len, nch, j))
            };
            let id = b.send(v.next, src, b.channel(j), &[got.get(j).copied()]);
            if s == 0 {
                first_sends.push(id);
            }
        }
        let blk = recv[p.ring[v.back(s + 1)]];
        let nch = nchunks(blk.len, ce);
        got = (0..nch)
            .map(|j| {
                let dst = span(p, BufId::Recv, blk.off, part(blk.len, nch, j));
                b.recv(v.prev, dst, b.channel(j), &[])
            })
            .collect();
    }
    // The own block, behind the first sends (which read the send buffer, not this copy).
    let at = |r| (span(p, BufId::Send, 0, r), span(p, BufId::Recv, own.off, r));
    b.copy_behind(own.len, nchunks(own.len, ce), at, &first_sends);
}

/// Ring reduce-scatterv: block q of the send buffer ends reduced at rank q; partial sums of
/// each block travel around the ring through scratch.
fn reduce_scatterv(p: &Plan, b: &mut ScheduleBuilder, send: &[Block]) {
    let me = send[p.rank];
    if p.size == 1 {
        b.copy(
            span(p, BufId::Send, me.off, (0, me.len)),
            span(p, BufId::Recv, 0, (0, me.len)),
            &[],
        );
        return;
    }
    let v = RingView::new(p);
    let n = v.n;
    let ce = p.chunk_elems();
    let partial: Vec<Span> = (0..n).map(|q| b.scratch(send[q].len * p.elem)).collect();
    let mut last: Vec<u32> = Vec::new();
    for s in 0..n - 1 {
        let q = p.ring[v.back(s + 1)];
        let blk = send[q];
        let nch = nchunks(blk.len, ce);
        for j in 0..nch {
            let r = part(blk.len, nch, j);
            let src = if s == 0 {
                span(p, BufId::Send, blk.off, r)
            } else {
                Span::new(BufId::Scratch, partial[q].off + r.0 * p.elem, r.1 * p.elem)
            };
            b.send(v.next, src, b.channel(j), &[last.get(j).copied()]);
        }
        let q = p.ring[v.back(s + 2)];
        let blk = send[q];
        let nch = nchunks(blk.len, ce);
        last = (0..nch)
            .map(|j| {
                let r = part(blk.len, nch, j);
                let dst = if s == n - 2 {
                    span(p, BufId::Recv, 0, r)
                } else {
                    Span::new(BufId::Scratch, partial[q].off + r.0 * p.elem, r.1 * p.elem)
                };
                let local = span(p, BufId::Send, blk.off, r);
                b.recv_reduce(v.prev, dst, local, b.channel(j), &[])
            })
            .collect();
    }
    if p.avg {
        let nch = nchunks(me.len, ce);
        for (j, l) in last.iter().enumerate().take(nch) {
            let r = part(me.len, nch, j);
            if r.1 > 0 {
                b.finalize(span(p, BufId::Recv, 0, r), &[Some(*l)]);
            }
        }
    }
}
