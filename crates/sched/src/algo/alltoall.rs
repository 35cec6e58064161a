//! Alltoall: pairwise exchange (size-1 rounds, one partner each, chunked over the channels)
//! for large blocks, and Bruck's log-step algorithm for small ones. Block j of the send
//! buffer goes to rank j; block i of the receive buffer comes from rank i; the own block is
//! a local copy.

use super::chunks::{nchunks, part};
use super::{pair_word, Block, BufId, Plan, ScheduleBuilder, Span};

/// Rounds of the pairwise exchange a send may run ahead of the receives: enough to keep
/// every link busy, few enough that one rank is not flooded by all its peers at once.
const WINDOW: usize = 4;

/// Chunks in a block from which one round alone keeps the connections busy, and rounds
/// run one ahead only: more rounds at once only multiply the data in flight, which then
/// leaves the caches (tcp, 128 KiB chunks, alternating launches: 4 ranks, 16 MiB blocks
/// 31.6 against 34.6 ms; 8 ranks, 8 MiB blocks 68.8 against 71.1 ms; with 4 MiB blocks
/// the window of four was faster).
const BIG_BLOCK_CHUNKS: usize = 64;

/// The window for blocks of `block` elements on average.
fn window(p: &Plan, block: usize) -> usize {
    if nchunks(block, p.chunk_elems()) >= BIG_BLOCK_CHUNKS {
        1
    } else {
        WINDOW
    }
}

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
/// message, so both ends always agree on when the call is over. Returns the sends and the
/// last receive.
fn exchange(
    p: &Plan,
    b: &mut ScheduleBuilder,
    (to, sblk): (usize, Block),
    (from, rblk): (usize, Block),
    words: Option<(u64, u64)>,
    after: Option<u32>,
) -> (Vec<u32>, Option<u32>) {
    let ce = p.chunk_elems();
    let ns = nchunks(sblk.len, ce);
    let mut sends = Vec::with_capacity(ns);
    for j in 0..ns {
        let id = b.send(
            to,
            bytes(p, BufId::Send, sblk, part(sblk.len, ns, j)),
            b.channel(j),
            &[after],
        );
        sends.push(id);
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
    (sends, last)
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
    let mut recvs: Vec<Option<u32>> = Vec::with_capacity(n);
    let mut first_sends: Vec<u32> = Vec::new();
    let ahead = window(p, send.iter().map(|b| b.len).sum::<usize>() / n.max(1));
    for k in 1..n {
        let (to, from) = partners(r, n, k);
        let (sb, rb) = (send[to], recv[from]);
        let words = check.then(|| {
            (
                pair_word(sb.len, recv[to].len),
                pair_word(rb.len, send[from].len),
            )
        });
        let after = if k > ahead {
            recvs[k - 1 - ahead]
        } else {
            None
        };
        let (sent, got) = exchange(p, b, (to, sb), (from, rb), words, after);
        if first_sends.is_empty() {
            first_sends = sent;
        }
        recvs.push(got);
    }
    own_copy(p, b, (own_s, own_r), &first_sends);
}

/// The own block, copied chunk by chunk behind the first round's sends (see
/// [`ScheduleBuilder::copy_behind`]).
fn own_copy(p: &Plan, b: &mut ScheduleBuilder, (own_s, own_r): (Block, Block), sends: &[u32]) {
    let l = own_s.len.min(own_r.len);
    let at = |r| {
        (
            bytes(p, BufId::Send, own_s, r),
            bytes(p, BufId::Recv, own_r, r),
        )
    };
    b.copy_behind(l, nchunks(l, p.chunk_elems()), at, sends);
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

/// Direct reduce-scatter over per-rank blocks (`send[j]` is rank j's block of the input):
/// in round k send block `to` to its owner and receive-reduce this rank's block from `from`
/// (the partners of the pairwise exchange), each block in its own chunks. Every rank moves
/// (n-1)/n of the data as in the ring, but in one step of latency instead of n-1: each block
/// is reduced where it ends, in the order the rounds give (each result is computed by one
/// rank only, so no two ranks need agree on the order).
pub(super) fn reduce_scatter_blocks(p: &Plan, b: &mut ScheduleBuilder, send: &[Block]) {
    let (n, r) = (p.size, p.rank);
    let Some(&mine) = send.get(r) else {
        return;
    };
    let ce = p.chunk_elems();
    let nch = nchunks(mine.len, ce);
    let own = Block {
        off: 0,
        len: mine.len,
    };
    let mut last: Vec<Option<u32>> = vec![None; nch];
    if n == 1 {
        let id = b.copy(
            bytes(p, BufId::Send, mine, (0, mine.len)),
            bytes(p, BufId::Recv, own, (0, mine.len)),
            &[],
        );
        last = vec![Some(id); nch];
    }
    for k in 1..n {
        let (to, from) = partners(r, n, k);
        let blk = send[to];
        let ns = nchunks(blk.len, ce);
        for j in 0..ns {
            let src = bytes(p, BufId::Send, blk, part(blk.len, ns, j));
            b.send(to, src, b.channel(j), &[]);
        }
        for (j, l) in last.iter_mut().enumerate() {
            let c = part(mine.len, nch, j);
            let dst = bytes(p, BufId::Recv, own, c);
            // The first partial sum starts from this rank's own input.
            let local = if k == 1 {
                bytes(p, BufId::Send, mine, c)
            } else {
                dst
            };
            *l = Some(b.recv_reduce(from, dst, local, b.channel(j), &[*l]));
        }
    }
    if p.avg {
        for (j, l) in last.iter().enumerate() {
            let c = part(mine.len, nch, j);
            if c.1 > 0 {
                b.finalize(bytes(p, BufId::Recv, own, c), &[*l]);
            }
        }
    }
}

/// Direct reduce-scatter of `count` elements per rank (see [`reduce_scatter_blocks`]).
pub fn reduce_scatter_direct(p: &Plan, b: &mut ScheduleBuilder) {
    let blocks: Vec<Block> = (0..p.size)
        .map(|j| Block {
            off: j * p.count,
            len: p.count,
        })
        .collect();
    reduce_scatter_blocks(p, b, &blocks);
}
