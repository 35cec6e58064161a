//! Ring algorithms: allreduce as reduce-scatter then allgather, and reduce-scatter alone.
//!
//! Positions, not ranks, walk the ring (`plan.ring`), so a topology-aware order changes who
//! talks to whom without changing the steps. Each segment is cut into pipelining chunks; chunk
//! `j` of every step travels on channel `j % nchannels`, and a chunk's next step depends only on
//! the same chunk's previous step, so several chunks are in flight at once.

use super::chunks::{nchunks, part};
use super::{BufId, Plan, ScheduleBuilder, Span};

/// The ring seen from one rank.
pub(super) struct RingView {
    pub n: usize,
    pub pos: usize,
    pub next: usize,
    pub prev: usize,
}

impl RingView {
    pub fn new(p: &Plan) -> RingView {
        let n = p.size;
        let pos = p.ring.iter().position(|&r| r == p.rank).unwrap_or(p.rank);
        RingView {
            n,
            pos,
            next: p.ring[(pos + 1) % n],
            prev: p.ring[(pos + n - 1) % n],
        }
    }

    /// The position `back` places before this one.
    pub fn back(&self, back: usize) -> usize {
        (self.pos + self.n * 2 - back % self.n) % self.n
    }
}

/// Elements to a byte span.
pub(super) fn span(p: &Plan, buf: BufId, (off, len): (usize, usize)) -> Span {
    Span::new(buf, off * p.elem, len * p.elem)
}

/// Ring allreduce: N-1 reduce-scatter steps, then N-1 allgather steps.
#[allow(clippy::needless_range_loop)] // steps and chunks are positions in the ring, not items
pub fn allreduce(p: &Plan, b: &mut ScheduleBuilder) {
    let v = RingView::new(p);
    let n = v.n;
    let maxseg = part(p.count, n, 0).1;
    let nch = nchunks(maxseg, p.chunk_elems());
    let sub = |q: usize, j: usize| {
        let (so, sl) = part(p.count, n, q);
        let (o, l) = part(sl, nch, j);
        (so + o, l)
    };
    // Reduce-scatter: at step s send segment pos-s-1, receive and reduce segment pos-s-2.
    let mut last: Vec<Option<u32>> = vec![None; nch];
    let mut rs_send: Vec<Vec<Option<u32>>> = vec![vec![None; nch]; n - 1];
    for s in 0..n - 1 {
        for j in 0..nch {
            let r = sub(v.back(s + 1), j);
            if r.1 == 0 {
                continue;
            }
            let src = span(p, if s == 0 { BufId::Send } else { BufId::Recv }, r);
            rs_send[s][j] = Some(b.send(v.next, src, b.channel(j), &[last[j]]));
        }
        for (j, l) in last.iter_mut().enumerate() {
            let r = sub(v.back(s + 2), j);
            if r.1 == 0 {
                continue;
            }
            let (dst, local) = (span(p, BufId::Recv, r), span(p, BufId::Send, r));
            *l = Some(b.recv_reduce(v.prev, dst, local, b.channel(j), &[]));
        }
    }
    if p.avg {
        for (j, l) in last.iter_mut().enumerate() {
            let r = sub(v.pos, j);
            if r.1 > 0 {
                *l = Some(b.finalize(span(p, BufId::Recv, r), &[*l]));
            }
        }
    }
    // Allgather: at step s send segment pos-s, receive segment pos-s-1 in place. The receive
    // overwrites bytes the reduce-scatter step s sent, so it waits for that send.
    for (s, sent) in rs_send.iter().enumerate() {
        for (j, l) in last.iter().enumerate() {
            let r = sub(v.back(s), j);
            if r.1 > 0 {
                b.send(v.next, span(p, BufId::Recv, r), b.channel(j), &[*l]);
            }
        }
        for (j, l) in last.iter_mut().enumerate() {
            let r = sub(v.back(s + 1), j);
            if r.1 > 0 {
                *l = Some(b.recv(v.prev, span(p, BufId::Recv, r), b.channel(j), &[sent[j]]));
            }
        }
    }
}

/// Ring reduce-scatter: block `r` of the send buffer (count elements each) ends reduced at
/// rank `r`. Partial sums travel through scratch blocks.
#[allow(clippy::needless_range_loop)] // as in `allreduce`
pub fn reduce_scatter(p: &Plan, b: &mut ScheduleBuilder) {
    let v = RingView::new(p);
    let n = v.n;
    let nch = nchunks(p.count, p.chunk_elems());
    let block = |q: usize, j: usize| {
        let (o, l) = part(p.count, nch, j);
        (p.ring[q] * p.count + o, l)
    };
    let scratch: Vec<Span> = (0..n).map(|_| b.scratch(p.count * p.elem)).collect();
    // Where the partial sum of position q lives at this rank.
    let partial = |q: usize, j: usize| {
        let (o, l) = part(p.count, nch, j);
        Span::new(BufId::Scratch, scratch[q].off + o * p.elem, l * p.elem)
    };
    let mut last: Vec<Option<u32>> = vec![None; nch];
    for s in 0..n - 1 {
        for j in 0..nch {
            let q = v.back(s + 1);
            let r = block(q, j);
            if r.1 == 0 {
                continue;
            }
            let src = if s == 0 {
                span(p, BufId::Send, r)
            } else {
                partial(q, j)
            };
            b.send(v.next, src, b.channel(j), &[last[j]]);
        }
        for (j, l) in last.iter_mut().enumerate() {
            let q = v.back(s + 2);
            let r = block(q, j);
            if r.1 == 0 {
                continue;
            }
            let dst = if s == n - 2 {
                span(p, BufId::Recv, part(p.count, nch, j))
            } else {
                partial(q, j)
            };
            *l = Some(b.recv_reduce(v.prev, dst, span(p, BufId::Send, r), b.channel(j), &[]));
        }
    }
    if p.avg {
        for (j, l) in last.iter().enumerate() {
            let r = part(p.count, nch, j);
            if r.1 > 0 {
                b.finalize(span(p, BufId::Recv, r), &[*l]);
            }
        }
    }
}
