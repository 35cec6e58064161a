//! Broadcast: a binomial tree (log2 N hops, for small messages), the linear broadcast (the
//! root sends to every rank itself: one hop, for small messages where a hop costs more than
//! a send, as when ranks share CPUs) and a pipelined chain along the ring (every link busy at
//! once, for large messages).

use super::chunks::{nchunks, part};
use super::ring::{span, RingView};
use super::{BufId, Plan, ScheduleBuilder};

/// The binomial tree rooted at `root`, in virtual ranks v = (position - root's position)
/// mod N, positions taken along the ring (so the lowest levels join ring neighbours, which
/// share a host): parent of v is v minus its lowest set bit; children are v + m for m below
/// that bit.
pub(super) struct Binomial<'a> {
    pub n: usize,
    root_pos: usize,
    pub v: usize,
    plan: &'a Plan,
}

impl Binomial<'_> {
    pub fn new(p: &Plan) -> Binomial<'_> {
        let root_pos = p.pos(p.root);
        Binomial {
            n: p.size,
            root_pos,
            v: (p.pos(p.rank) + p.size - root_pos) % p.size,
            plan: p,
        }
    }

    fn real(&self, v: usize) -> usize {
        self.plan.at((v + self.root_pos) % self.n)
    }

    /// Parent rank, none at the root.
    pub fn parent(&self) -> Option<usize> {
        (self.v != 0).then(|| self.real(self.v - (self.v & self.v.wrapping_neg())))
    }

    /// Child ranks, largest subtree first.
    pub fn children(&self) -> Vec<usize> {
        let top = if self.v == 0 {
            self.n.next_power_of_two()
        } else {
            self.v & self.v.wrapping_neg()
        };
        let mut out = Vec::new();
        let mut m = top / 2;
        while m > 0 {
            if self.v + m < self.n {
                out.push(self.real(self.v + m));
            }
            m /= 2;
        }
        out
    }
}

/// Binomial-tree broadcast, pipelined in chunks.
pub fn binomial(p: &Plan, b: &mut ScheduleBuilder) {
    let t = Binomial::new(p);
    let nch = nchunks(p.count, p.chunk_elems());
    let children = t.children();
    let parent = t.parent();
    let mut first_sends = Vec::with_capacity(nch);
    for j in 0..nch {
        let r = part(p.count, nch, j);
        let (src, dep) = match parent {
            Some(up) => {
                let dst = span(p, BufId::Recv, r);
                (dst, Some(b.recv(up, dst, b.channel(j), &[])))
            }
            None => (span(p, BufId::Send, r), None),
        };
        for (k, &c) in children.iter().enumerate() {
            let id = b.send(c, src, b.channel(j), &[dep]);
            if k == 0 {
                first_sends.push(id);
            }
        }
    }
    if parent.is_none() {
        root_copy(p, b, nch, &first_sends);
    }
}

/// Linear broadcast: the root sends the whole buffer to every other rank, in ring order
/// from its successor, chunked over the channels; every other rank receives from the root.
/// No rank forwards, so the last rank has its data one hop after the root's N-1 sends.
pub fn linear(p: &Plan, b: &mut ScheduleBuilder) {
    let nch = nchunks(p.count, p.chunk_elems());
    if p.rank != p.root {
        for j in 0..nch {
            let dst = span(p, BufId::Recv, part(p.count, nch, j));
            b.recv(p.root, dst, b.channel(j), &[]);
        }
        return;
    }
    let root_pos = p.pos(p.root);
    let mut first_sends = Vec::with_capacity(nch);
    for k in 1..p.size {
        let to = p.at((root_pos + k) % p.size);
        for j in 0..nch {
            let id = b.send(
                to,
                span(p, BufId::Send, part(p.count, nch, j)),
                b.channel(j),
                &[],
            );
            if k == 1 {
                first_sends.push(id);
            }
        }
    }
    root_copy(p, b, nch, &first_sends);
}

/// The root's own copy of an out-of-place broadcast, behind its first sends (which read
/// the send buffer); nothing when the call is in place.
fn root_copy(p: &Plan, b: &mut ScheduleBuilder, nch: usize, sends: &[u32]) {
    let at = |r| (span(p, BufId::Send, r), span(p, BufId::Recv, r));
    b.copy_behind(p.count, nch, at, sends);
}

/// Chain broadcast along the ring starting at the root, pipelined in chunks.
pub fn chain(p: &Plan, b: &mut ScheduleBuilder) {
    let v = RingView::new(p);
    let root_pos = p.ring.iter().position(|&r| r == p.root).unwrap_or(p.root);
    let i = (v.pos + v.n - root_pos) % v.n;
    let nch = nchunks(p.count, p.chunk_elems());
    let mut first_sends = Vec::with_capacity(nch);
    for j in 0..nch {
        let r = part(p.count, nch, j);
        let (src, dep) = if i == 0 {
            (span(p, BufId::Send, r), None)
        } else {
            let dst = span(p, BufId::Recv, r);
            (dst, Some(b.recv(v.prev, dst, b.channel(j), &[])))
        };
        if i + 1 < v.n {
            first_sends.push(b.send(v.next, src, b.channel(j), &[dep]));
        }
    }
    if i == 0 {
        root_copy(p, b, nch, &first_sends);
    }
}
