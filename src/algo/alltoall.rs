//! Alltoall: pairwise exchange (size-1 rounds, one partner each, chunked over the channels)
//! for large blocks, and Bruck's log-step algorithm for small ones. Block j of the send
//! buffer goes to rank j; block i of the receive buffer comes from rank i; the own block is
//! a local copy.

use super::chunks::{nchunks, part};
use super::{pair_word, Block, BufId, Plan, ScheduleBuilder, Span};

/// Rounds of the pairwise exchange a send may run ahead of the receives: enough to keep
/// every link busy, few enough that one rank is not flooded by all its peers at once.
const WINDOW: usize = 4;

/// The partner this rank sends to and the one it receives from in round `k` (1..n): on a
/// power of two both are rank XOR k (pairs exchange, each rank talks to one peer per
/// round); otherwise rank+k and rank-k, so every rank is the target of exactly one rank in
/// each round (no hot spot).
pub(super) fn partners(rank: usize, n: usize, k: usize) -> (usize, usize) {
    if n.is_power_of_two() {
        (rank ^ k, rank ^ k)
    } else {
        ((rank + k) % n, (rank + n - k) % n)
    }
}

fn bytes(p: &Plan, buf: BufId, blk: Block, (o, l): (usize, usize)) -> Span {
    Span::new(buf, (blk.off + o) * p.elem, l * p.elem)
}

/// One exchange of the pairwise schedule: `sblk` to `to`, `rblk` from `from`, each cut into
/// chunks spread over the channels. Every pair exchanges at least one (possibly empty)
/// message, so both ends always agree on when the call is over. Returns the last receive.
fn exchange(
    p: &Plan,
    b: &mut ScheduleBuilder,
    (to, sblk): (usize, Block),
    (from, rblk): (usize, Block),
    words: Option<(u64, u64)>,
    after: Option<u32>,
) -> Option<u32> {
    let ce = p.chunk_elems();
    let ns = nchunks(sblk.len, ce);
    for j in 0..ns {
        let id = b.send(
            to,
            bytes(p, BufId::Send, sblk, part(sblk.len, ns, j)),
            b.channel(j),
            &[after],
        );
        if let Some((w, _)) = words {
            b.set_word(id, w);
        }
    }
    let nr = nchunks(rblk.len, ce);
    let mut last = None;
    for j in 0..nr {
        let id = b.recv(
            from,
            bytes(p, BufId::Recv, rblk, part(rblk.len, nr, j)),
            b.channel(j),
            &[],
        );
        if let Some((_, w)) = words {
            b.set_word(id, w);
        }
        last = Some(id);
    }
    last
}

/// Pairwise exchange over per-rank blocks (`send[j]` goes to rank j, `recv[i]` comes from
/// rank i). With `check`, every message carries the pair's counts (see [`pair_word`]).
pub(super) fn pairwise_blocks(
    p: &Plan,
    b: &mut ScheduleBuilder,
    send: &[Block],
    recv: &[Block],
    check: bool,
) {
    let (n, r) = (p.size, p.rank);
    let (Some(&own_s), Some(&own_r)) = (send.get(r), recv.get(r)) else {
        return;
    };
    if own_s.len > 0 {
        let l = own_s.len.min(own_r.len);
        b.copy(
            bytes(p, BufId::Send, own_s, (0, l)),
            bytes(p, BufId::Recv, own_r, (0, l)),
            &[],
        );
    }
    let mut recvs: Vec<Option<u32>> = Vec::with_capacity(n);
    for k in 1..n {
        let (to, from) = partners(r, n, k);
        let (sb, rb) = (send[to], recv[from]);
        let words = check.then(|| {
            (
                pair_word(sb.len, recv[to].len),
                pair_word(rb.len, send[from].len),
            )
        });
        let after = if k > WINDOW {
            recvs[k - 1 - WINDOW]
        } else {
            None
        };
        recvs.push(exchange(p, b, (to, sb), (from, rb), words, after));
    }
}

/// Pairwise alltoall of `count` elements per rank.
pub fn pairwise(p: &Plan, b: &mut ScheduleBuilder) {
    let blocks: Vec<Block> = (0..p.size)
        .map(|j| Block {
            off: j * p.count,
            len: p.count,
        })
        .collect();
    pairwise_blocks(p, b, &blocks, &blocks, false);
}

/// Bruck's alltoall: rotate so that block i is bound for rank+i, then in round k (distance
/// d = 2^k) send every block whose index has bit k set to rank+d and receive the same
/// indices from rank-d (packed into one message through scratch); finally block i, which
/// came from rank-i, is copied to its place. ceil(log2 N) messages per rank instead of N-1,
/// each about half the data: for small blocks.
pub fn bruck(p: &Plan, b: &mut ScheduleBuilder) {
    let (n, r) = (p.size, p.rank);
    let bb = p.count * p.elem;
    let tmp = b.scratch(n * bb);
    let slot = |i: usize| Span::new(BufId::Scratch, tmp.off + i * bb, bb);
    // last[i]: the step that last wrote tmp block i.
    let mut last: Vec<Option<u32>> = (0..n)
        .map(|i| {
            let src = Span::new(BufId::Send, ((r + i) % n) * bb, bb);
            Some(b.copy(src, slot(i), &[]))
        })
        .collect();
    let mut d = 1;
    while d < n {
        let idx: Vec<usize> = (1..n).filter(|i| i & d != 0).collect();
        let out = b.scratch(idx.len() * bb);
        let inc = b.scratch(idx.len() * bb);
        let at = |s: Span, k: usize| Span::new(BufId::Scratch, s.off + k * bb, bb);
        let packs: Vec<Option<u32>> = idx
            .iter()
            .enumerate()
            .map(|(k, &i)| Some(b.copy(slot(i), at(out, k), &[last[i]])))
            .collect();
        b.send((r + d) % n, out, 0, &packs);
        let got = b.recv((r + n - d) % n, inc, 0, &[]);
        for (k, &i) in idx.iter().enumerate() {
            last[i] = Some(b.copy(at(inc, k), slot(i), &[Some(got), packs[k]]));
        }
        d *= 2;
    }
    for (i, l) in last.iter().enumerate() {
        let dst = Span::new(BufId::Recv, ((r + n - i) % n) * bb, bb);
        b.copy(slot(i), dst, &[*l]);
    }
}
