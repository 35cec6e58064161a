//! Hierarchical allreduce over hosts ([`Plan::hosts`]), in three pipelined phases:
//!
//! 1. inside each host, a ring reduce-scatter: the data is cut into K segments (K = ranks
//!    on the smallest host) and segment k ends reduced at the host's local rank k, its
//!    leader (with K below the host's size, K chains share the host's ring);
//! 2. between hosts, the K leader groups (local rank k of every host, one group per rail on
//!    hosts that are alike) each allreduce their segment: a ring, or double binary trees
//!    (each half of the segment up and down its own tree);
//! 3. inside each host, a ring allgather spreads every segment from its leader.
//!
//! Each element is reduced once, at its last hop, and then copied, so every rank ends
//! bitwise identical. Chunk j of a phase depends only on the pieces of the phase before that
//! overlap it, so the phases overlap in time.

use std::borrow::Cow;

use super::chunks::{nchunks, part};
use super::ring::span;
use super::tree::double_btree;
use super::{BufId, Plan, ScheduleBuilder};

/// The steps that last wrote (or, for sends, read) element ranges of this rank's buffers.
#[derive(Default)]
struct Ledger(Vec<(usize, usize, u32)>);

impl Ledger {
    fn add(&mut self, (off, len): (usize, usize), step: Option<u32>) {
        if let (true, Some(s)) = (len > 0, step) {
            self.0.push((off, off + len, s));
        }
    }

    /// Entries must not overlap; sorted, they are found by binary search.
    fn seal(&mut self) {
        self.0.sort_unstable();
    }

    /// The steps whose ranges overlap `(off, len)`.
    fn over(&self, (off, len): (usize, usize)) -> Vec<Option<u32>> {
        let i = self.0.partition_point(|e| e.1 <= off);
        self.0[i..]
            .iter()
            .take_while(|e| e.0 < off + len)
            .map(|e| Some(e.2))
            .collect()
    }
}

/// `p.hosts` if it is a partition of the ranks into non-empty hosts, else one host holding
/// the ring.
fn groups(p: &Plan) -> Cow<'_, [Vec<usize>]> {
    let mut seen = vec![false; p.size];
    let mut total = 0;
    let ok = !p.hosts.is_empty()
        && p.hosts.iter().all(|h| {
            total += h.len();
            !h.is_empty()
                && h.iter()
                    .all(|&r| r < p.size && !std::mem::replace(&mut seen[r], true))
        })
        && total == p.size;
    if ok {
        Cow::Borrowed(&p.hosts)
    } else {
        Cow::Owned(vec![(0..p.size).map(|i| p.at(i)).collect()])
    }
}

/// What the three phases share.
struct Ctx<'a> {
    p: &'a Plan,
    /// This rank's host index and local index.
    hi: usize,
    li: usize,
    /// Ranks on this host, hosts, leader groups.
    l: usize,
    h: usize,
    k: usize,
    nch1: usize,
}

impl Ctx<'_> {
    /// Segment `k`: (offset, length) in elements.
    fn seg(&self, k: usize) -> (usize, usize) {
        part(self.p.count, self.k, k)
    }

    /// Chunk `j` of segment `k`, the unit of phases 1 and 3.
    fn piece(&self, k: usize, j: usize) -> (usize, usize) {
        let (o, n) = self.seg(k);
        let (a, m) = part(n, self.nch1, j);
        (o + a, m)
    }
}

/// The hierarchical allreduce; `tree` picks double binary trees between hosts.
pub fn allreduce(p: &Plan, b: &mut ScheduleBuilder, tree: bool) {
    let groups = groups(p);
    let Some((hi, li)) = groups
        .iter()
        .enumerate()
        .find_map(|(h, g)| g.iter().position(|&r| r == p.rank).map(|i| (h, i)))
    else {
        return; // not reached: `groups` always holds every rank
    };
    let k = groups.iter().map(Vec::len).min().unwrap_or(1);
    let c = Ctx {
        p,
        hi,
        li,
        l: groups[hi].len(),
        h: groups.len(),
        k,
        nch1: nchunks(part(p.count, k, 0).1, p.chunk_elems()),
    };
    let local = &groups[hi];
    let (sent1, final1) = intra_reduce_scatter(&c, b, local);
    let mut done = final1;
    if c.li < c.k && c.h > 1 {
        let leaders: Vec<usize> = groups.iter().map(|g| g[c.li]).collect();
        done = if tree {
            leaders_trees(&c, b, &leaders, &done)
        } else {
            leaders_ring(&c, b, &leaders, &done)
        };
    }
    intra_allgather(&c, b, local, &sent1, &done);
}

/// Phase 1. Returns what this rank sent (for the writes of phase 3 to wait on) and, at a
/// leader, the steps that finished its segment (finalised when the host is alone).
#[allow(clippy::needless_range_loop)] // j numbers chunks of several segments, not items
fn intra_reduce_scatter(c: &Ctx<'_>, b: &mut ScheduleBuilder, g: &[usize]) -> (Ledger, Ledger) {
    let (p, l, li) = (c.p, c.l, c.li);
    let mut sent = Ledger::default();
    let mut fin = Ledger::default();
    if l > 1 {
        let (next, prev) = (g[(li + 1) % l], g[(li + l - 1) % l]);
        let mut last = vec![vec![None; c.nch1]; c.k];
        for s in 0..l - 1 {
            // Segment k's chain starts at local rank k+1 and ends at k: at step s this rank
            // passes on the segment whose chain it is s hops into, and receives the next.
            let ks = (li + 2 * l - s - 1) % l;
            if ks < c.k {
                for j in 0..c.nch1 {
                    let r = c.piece(ks, j);
                    if r.1 > 0 {
                        let buf = if s == 0 { BufId::Send } else { BufId::Recv };
                        let st = b.send(next, span(p, buf, r), b.channel(j), &[last[ks][j]]);
                        sent.add(r, Some(st));
                    }
                }
            }
            let kr = (li + 2 * l - s - 2) % l;
            if kr < c.k {
                for j in 0..c.nch1 {
                    let r = c.piece(kr, j);
                    if r.1 > 0 {
                        let (dst, mine) = (span(p, BufId::Recv, r), span(p, BufId::Send, r));
                        last[kr][j] = Some(b.recv_reduce(prev, dst, mine, b.channel(j), &[]));
                    }
                }
            }
        }
        if li < c.k {
            for j in 0..c.nch1 {
                let r = c.piece(li, j);
                let mut st = last[li][j];
                if p.avg && c.h == 1 && r.1 > 0 {
                    st = Some(b.finalize(span(p, BufId::Recv, r), &[st]));
                }
                fin.add(r, st);
            }
        }
    }
    sent.seal();
    fin.seal();
    (sent, fin)
}

/// Phase 2 with a ring: the leaders allreduce segment `li` (reduce-scatter then allgather
/// over the hosts). Returns the steps after which each piece is final here.
fn leaders_ring(c: &Ctx<'_>, b: &mut ScheduleBuilder, lg: &[usize], f1: &Ledger) -> Ledger {
    let (p, h, hi) = (c.p, c.h, c.hi);
    let input = if c.l > 1 { BufId::Recv } else { BufId::Send };
    let (o, n) = c.seg(c.li);
    let nch = nchunks(part(n, h, 0).1, p.chunk_elems());
    let piece = |q: usize, j: usize| {
        let (a, m) = part(n, h, q);
        let (x, y) = part(m, nch, j);
        (o + a + x, y)
    };
    let back = |x: usize| (hi + 2 * h - x % h) % h;
    let (next, prev) = (lg[(hi + 1) % h], lg[(hi + h - 1) % h]);
    let mut last: Vec<Option<u32>> = vec![None; nch];
    let mut rs_sent = vec![vec![None; nch]; h - 1];
    for (s, sent) in rs_sent.iter_mut().enumerate() {
        for (j, st) in sent.iter_mut().enumerate() {
            let r = piece(back(s + 1), j);
            if r.1 > 0 {
                let buf = if s == 0 { input } else { BufId::Recv };
                let mut deps = f1.over(r);
                deps.push(last[j]);
                *st = Some(b.send(next, span(p, buf, r), b.channel(j), &deps));
            }
        }
        for (j, l) in last.iter_mut().enumerate() {
            let r = piece(back(s + 2), j);
            if r.1 > 0 {
                let (dst, mine) = (span(p, BufId::Recv, r), span(p, input, r));
                *l = Some(b.recv_reduce(prev, dst, mine, b.channel(j), &f1.over(r)));
            }
        }
    }
    let mut fin = Ledger::default();
    for (j, l) in last.iter_mut().enumerate() {
        let r = piece(hi, j);
        if p.avg && r.1 > 0 {
            *l = Some(b.finalize(span(p, BufId::Recv, r), &[*l]));
        }
        fin.add(r, *l);
    }
    for (s, sent) in rs_sent.iter().enumerate() {
        for (j, l) in last.iter().enumerate() {
            let r = piece(back(s), j);
            if r.1 > 0 {
                b.send(next, span(p, BufId::Recv, r), b.channel(j), &[*l]);
            }
        }
        for (j, l) in last.iter_mut().enumerate() {
            let r = piece(back(s + 1), j);
            if r.1 > 0 {
                // Overwrites what reduce-scatter step s sent: wait for that send.
                *l = Some(b.recv(prev, span(p, BufId::Recv, r), b.channel(j), &[sent[j]]));
                fin.add(r, *l);
            }
        }
    }
    fin.seal();
    fin
}

/// Phase 2 with double binary trees: half t of segment `li` is reduced up tree t to its
/// root and broadcast back down. Tree t uses channels 2j+t, so with two channels the two
/// trees never share a connection.
fn leaders_trees(c: &Ctx<'_>, b: &mut ScheduleBuilder, lg: &[usize], f1: &Ledger) -> Ledger {
    let (p, hi) = (c.p, c.hi);
    let input = if c.l > 1 { BufId::Recv } else { BufId::Send };
    let (o, n) = c.seg(c.li);
    let nch = nchunks(part(n, 2, 0).1, p.chunk_elems());
    let mut fin = Ledger::default();
    for (t, tr) in double_btree(c.h).iter().enumerate() {
        let (a, m) = part(n, 2, t);
        let piece = |j: usize| {
            let (x, y) = part(m, nch, j);
            (o + a + x, y)
        };
        let parent = tr.parent[hi].map(|x| lg[x]);
        let children: Vec<usize> = tr.children[hi].iter().map(|&x| lg[x]).collect();
        let mut done = vec![None; nch];
        let mut sent = vec![None; nch];
        for j in 0..nch {
            let r = piece(j);
            if r.1 == 0 {
                continue;
            }
            let ch = b.channel(2 * j + t);
            let ready = f1.over(r);
            let mut cur = span(p, input, r);
            let mut last = None;
            for &x in &children {
                let mut deps = ready.clone();
                deps.push(last);
                last = Some(b.recv_reduce(x, span(p, BufId::Recv, r), cur, ch, &deps));
                cur = span(p, BufId::Recv, r);
            }
            if p.avg && parent.is_none() {
                last = Some(b.finalize(cur, &[last]));
            }
            if let Some(up) = parent {
                let mut deps = ready.clone();
                deps.push(last);
                sent[j] = Some(b.send(up, cur, ch, &deps));
            }
            done[j] = last;
        }
        for j in 0..nch {
            let r = piece(j);
            if r.1 == 0 {
                continue;
            }
            let ch = b.channel(2 * j + t);
            let ready = match parent {
                // Overwrites what went up: wait for that send.
                Some(up) => Some(b.recv(up, span(p, BufId::Recv, r), ch, &[sent[j], done[j]])),
                None => done[j],
            };
            for &x in &children {
                b.send(x, span(p, BufId::Recv, r), ch, &[ready]);
            }
            fin.add(r, ready);
        }
    }
    fin.seal();
    fin
}

/// Phase 3: each segment travels from its leader around the host's ring. `sent` holds this
/// rank's phase-1 sends (the receives overwrite those bytes), `done` the leader's final
/// pieces.
#[allow(clippy::needless_range_loop)] // as in `intra_reduce_scatter`
fn intra_allgather(
    c: &Ctx<'_>,
    b: &mut ScheduleBuilder,
    g: &[usize],
    sent: &Ledger,
    done: &Ledger,
) {
    let (p, l, li) = (c.p, c.l, c.li);
    if l < 2 {
        return;
    }
    let (next, prev) = (g[(li + 1) % l], g[(li + l - 1) % l]);
    let mut last = vec![vec![None; c.nch1]; c.k];
    for s in 0..l - 1 {
        let ks = (li + l - s) % l;
        if ks < c.k {
            for j in 0..c.nch1 {
                let r = c.piece(ks, j);
                if r.1 > 0 {
                    let deps = if s == 0 {
                        done.over(r)
                    } else {
                        vec![last[ks][j]]
                    };
                    b.send(next, span(p, BufId::Recv, r), b.channel(j), &deps);
                }
            }
        }
        let kr = (li + 2 * l - s - 1) % l;
        if kr < c.k {
            for j in 0..c.nch1 {
                let r = c.piece(kr, j);
                if r.1 > 0 {
                    let st = b.recv(prev, span(p, BufId::Recv, r), b.channel(j), &sent.over(r));
                    last[kr][j] = Some(st);
                }
            }
        }
    }
}
