//! Allgather: a pipelined ring for large blocks, Bruck's dissemination for small ones.
//! Block `r` of the receive buffer holds rank `r`'s input.

use super::chunks::{nchunks, part};
use super::ring::{span, RingView};
use super::{BufId, Plan, ScheduleBuilder};

/// Ring allgather: N-1 steps, each forwarding the block received in the step before.
pub fn ring(p: &Plan, b: &mut ScheduleBuilder) {
    let v = RingView::new(p);
    let nch = nchunks(p.count, p.chunk_elems());
    let block = |q: usize, j: usize| {
        let (o, l) = part(p.count, nch, j);
        (p.ring[q] * p.count + o, l)
    };
    let mut last: Vec<Option<u32>> = vec![None; nch];
    let mut first_sends = Vec::with_capacity(nch);
    for s in 0..v.n - 1 {
        for (j, l) in last.iter().enumerate() {
            let r = block(v.back(s), j);
            if r.1 == 0 {
                continue;
            }
            let src = if s == 0 {
                span(p, BufId::Send, part(p.count, nch, j))
            } else {
                span(p, BufId::Recv, r)
            };
            let id = b.send(v.next, src, b.channel(j), &[*l]);
            if s == 0 {
                first_sends.push(id);
            }
        }
        for (j, l) in last.iter_mut().enumerate() {
            let r = block(v.back(s + 1), j);
            if r.1 > 0 {
                *l = Some(b.recv(v.prev, span(p, BufId::Recv, r), b.channel(j), &[]));
            }
        }
    }
    // The own block, behind the first sends (which read the send buffer, not this copy).
    let own = |(o, l)| {
        let src = span(p, BufId::Send, (o, l));
        (src, span(p, BufId::Recv, (p.rank * p.count + o, l)))
    };
    b.copy_behind(p.count, nch, own, &first_sends);
}

/// Bruck's allgather: in round k (distance d = 2^k) rank r sends the blocks it holds,
/// r..r+cnt-1, to r-d and receives r+d..r+d+cnt-1 from r+d. ceil(log2 N) rounds, any N.
pub fn bruck(p: &Plan, b: &mut ScheduleBuilder) {
    let n = p.size;
    let r = p.rank;
    let mut deps = vec![Some(b.copy(
        span(p, BufId::Send, (0, p.count)),
        span(p, BufId::Recv, (r * p.count, p.count)),
        &[],
    ))];
    let mut d = 1;
    while d < n {
        let cnt = d.min(n - d);
        let to = (r + n - d) % n;
        let from = (r + d) % n;
        for (first, len) in runs(r, cnt, n) {
            let s = span(p, BufId::Recv, (first * p.count, len * p.count));
            b.send(to, s, 0, &deps);
        }
        let mut got = Vec::new();
        for (first, len) in runs(from, cnt, n) {
            let s = span(p, BufId::Recv, (first * p.count, len * p.count));
            got.push(Some(b.recv(from, s, 0, &[])));
        }
        deps.extend(got);
        d *= 2;
    }
}

/// Blocks first..first+cnt (mod n) as at most two contiguous runs (first, len).
fn runs(first: usize, cnt: usize, n: usize) -> Vec<(usize, usize)> {
    let head = cnt.min(n - first);
    let mut v = vec![(first, head)];
    if cnt > head {
        v.push((0, cnt - head));
    }
    v
}
