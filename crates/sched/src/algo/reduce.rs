//! Reduce to a root (binomial tree or pipelined chain) and the tree allreduce built from a
//! tree reduce followed by a tree broadcast. The root's result is the only one computed and
//! it is then copied out, so every rank ends bitwise identical.

use super::bcast::Binomial;
use super::chunks::{nchunks, part};
use super::ring::{span, RingView};
use super::{BufId, Plan, ScheduleBuilder, Span};

/// Reduces chunk by chunk up the binomial tree into `acc(j)`; returns, per chunk, the step
/// after which the chunk is final at this rank (and, off the root, the send to the parent).
fn tree_up(
    p: &Plan,
    b: &mut ScheduleBuilder,
    t: &Binomial,
    nch: usize,
    acc: &dyn Fn(usize) -> Span,
) -> (Vec<Option<u32>>, Vec<Option<u32>>) {
    let mut children = t.children();
    children.reverse(); // smallest subtree first: it is ready first
    let parent = t.parent();
    let mut done = vec![None; nch];
    let mut sent = vec![None; nch];
    for j in 0..nch {
        let mine = span(p, BufId::Send, part(p.count, nch, j));
        let mut cur = mine;
        let mut last = None;
        for &c in &children {
            last = Some(b.recv_reduce(c, acc(j), cur, b.channel(j), &[last]));
            cur = acc(j);
        }
        if p.avg && parent.is_none() {
            last = Some(b.finalize(cur, &[last]));
        }
        if let Some(up) = parent {
            sent[j] = Some(b.send(up, cur, b.channel(j), &[last]));
        }
        done[j] = last;
    }
    (done, sent)
}

/// Binomial-tree reduce to `plan.root`; ranks other than the root accumulate in scratch.
pub fn binomial(p: &Plan, b: &mut ScheduleBuilder) {
    let t = Binomial::new(p);
    let nch = nchunks(p.count, p.chunk_elems());
    let is_root = t.parent().is_none();
    let scratch = if is_root {
        None
    } else {
        Some(b.scratch(p.count * p.elem))
    };
    let acc = move |j: usize| {
        let (o, l) = part(p.count, nch, j);
        match scratch {
            Some(s) => Span::new(BufId::Scratch, s.off + o * p.elem, l * p.elem),
            None => span(p, BufId::Recv, (o, l)),
        }
    };
    tree_up(p, b, &t, nch, &acc);
}

/// Tree allreduce: binomial reduce to rank 0 in the receive buffer, then binomial broadcast
/// of the result; each chunk's broadcast waits for that chunk's reduce.
pub fn allreduce_tree(p: &Plan, b: &mut ScheduleBuilder) {
    let mut q = p.clone();
    q.root = 0;
    let t = Binomial::new(&q);
    let nch = nchunks(p.count, p.chunk_elems());
    let acc = |j: usize| span(p, BufId::Recv, part(p.count, nch, j));
    let (done, sent) = tree_up(&q, b, &t, nch, &acc);
    let children = t.children();
    for j in 0..nch {
        let dst = acc(j);
        let ready = match t.parent() {
            // The result overwrites bytes this rank sent up: wait for that send.
            Some(up) => Some(b.recv(up, dst, b.channel(j), &[sent[j], done[j]])),
            None => done[j],
        };
        for &c in &children {
            b.send(c, dst, b.channel(j), &[ready]);
        }
    }
}

/// Chain reduce along the ring, ending at the root: each rank adds its input to what the
/// previous one sent and passes it on, chunk by chunk.
pub fn chain(p: &Plan, b: &mut ScheduleBuilder) {
    let v = RingView::new(p);
    let root_pos = p.ring.iter().position(|&r| r == p.root).unwrap_or(p.root);
    let i = (v.pos + 2 * v.n - root_pos - 1) % v.n;
    let nch = nchunks(p.count, p.chunk_elems());
    let is_root = i == v.n - 1;
    let scratch = if is_root || i == 0 {
        None
    } else {
        Some(b.scratch(p.count * p.elem))
    };
    for j in 0..nch {
        let (o, l) = part(p.count, nch, j);
        let mine = span(p, BufId::Send, (o, l));
        if i == 0 {
            b.send(v.next, mine, b.channel(j), &[]);
            continue;
        }
        let acc = match scratch {
            Some(s) => Span::new(BufId::Scratch, s.off + o * p.elem, l * p.elem),
            None => span(p, BufId::Recv, (o, l)),
        };
        let rr = b.recv_reduce(v.prev, acc, mine, b.channel(j), &[]);
        if is_root {
            if p.avg {
                b.finalize(acc, &[Some(rr)]);
            }
        } else {
            b.send(v.next, acc, b.channel(j), &[Some(rr)]);
        }
    }
}
