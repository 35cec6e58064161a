//! Gather and scatter: a binomial tree for small blocks (log2 N hops; inner ranks forward
//! their subtree's blocks through scratch) and the linear form for large ones (the root
//! exchanges with every rank directly, chunked over the channels).
//!
//! Ranks are numbered relative to the root (v = rank - root mod N), so a subtree is a run of
//! consecutive ranks; a run that wraps past rank N-1 travels as two messages, cut at the
//! wrap on both ends.

use super::chunks::{nchunks, part};
use super::{BufId, Plan, ScheduleBuilder, Span};

/// The binomial tree in ranks relative to the root.
struct Tree {
    n: usize,
    root: usize,
    v: usize,
}

impl Tree {
    fn new(p: &Plan) -> Tree {
        Tree {
            n: p.size,
            root: p.root,
            v: (p.rank + p.size - p.root) % p.size,
        }
    }

    fn real(&self, v: usize) -> usize {
        (v + self.root) % self.n
    }

    /// How many consecutive relative ranks the subtree of `v` holds.
    fn extent(&self, v: usize) -> usize {
        let low = if v == 0 {
            self.n.next_power_of_two()
        } else {
            v & v.wrapping_neg()
        };
        low.min(self.n - v)
    }

    fn parent(&self) -> Option<usize> {
        (self.v != 0).then(|| self.real(self.v - (self.v & self.v.wrapping_neg())))
    }

    /// Children as relative ranks, largest subtree first.
    fn children(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let mut m = self.extent(self.v).next_power_of_two() / 2;
        while m > 0 {
            if self.v + m < self.n {
                out.push(self.v + m);
            }
            m /= 2;
        }
        out
    }

    /// Relative ranks first..first+len as runs of consecutive real ranks: (real rank of the
    /// run's start, offset in the run list, length).
    fn runs(&self, first: usize, len: usize) -> Vec<(usize, usize, usize)> {
        let start = self.real(first);
        let head = len.min(self.n - start);
        let mut v = vec![(start, 0, head)];
        if len > head {
            v.push((0, head, len - head));
        }
        v
    }
}

fn elems(p: &Plan, buf: BufId, base: usize, (off, len): (usize, usize)) -> Span {
    Span::new(buf, base + off * p.elem, len * p.elem)
}

/// Binomial gather: each rank collects its subtree's blocks (relative order) in scratch,
/// then sends them to its parent; the root receives straight into its buffer.
pub fn gather_binomial(p: &Plan, b: &mut ScheduleBuilder) {
    let t = Tree::new(p);
    let c = p.count;
    let ext = t.extent(t.v);
    let is_root = t.v == 0;
    // Where relative rank u's block lands at this rank.
    let hold = if is_root || ext == 1 {
        None
    } else {
        Some(b.scratch(ext * c * p.elem))
    };
    let mut deps = Vec::new();
    let own = elems(p, BufId::Send, 0, (0, c));
    match hold {
        Some(s) => deps.push(Some(b.copy(
            own,
            elems(p, BufId::Scratch, s.off, (0, c)),
            &[],
        ))),
        None if is_root => {
            let dst = elems(p, BufId::Recv, 0, (p.rank * c, c));
            deps.push(Some(b.copy(own, dst, &[])));
        }
        None => {}
    }
    for u in t.children() {
        for (real, at, len) in t.runs(u, t.extent(u)) {
            let dst = match hold {
                Some(s) => elems(p, BufId::Scratch, s.off, ((u - t.v + at) * c, len * c)),
                None => elems(p, BufId::Recv, 0, (real * c, len * c)),
            };
            deps.push(Some(b.recv(t.real(u), dst, 0, &[])));
        }
    }
    if let Some(parent) = t.parent() {
        for (_, at, len) in t.runs(t.v, ext) {
            let src = match hold {
                Some(s) => elems(p, BufId::Scratch, s.off, (at * c, len * c)),
                None => own,
            };
            b.send(parent, src, 0, &deps);
        }
    }
}

/// Binomial scatter: the root sends each child its subtree's blocks; inner ranks receive
/// theirs into scratch, keep their own block and pass the rest down.
pub fn scatter_binomial(p: &Plan, b: &mut ScheduleBuilder) {
    let t = Tree::new(p);
    let c = p.count;
    let ext = t.extent(t.v);
    let is_root = t.v == 0;
    let own_dst = elems(p, BufId::Recv, 0, (0, c));
    // Where this rank's subtree's blocks come from when it forwards them.
    let hold = if is_root || ext == 1 {
        None
    } else {
        Some(b.scratch(ext * c * p.elem))
    };
    let mut got = Vec::new();
    if let Some(parent) = t.parent() {
        for (_, at, len) in t.runs(t.v, ext) {
            let dst = match hold {
                Some(s) => elems(p, BufId::Scratch, s.off, (at * c, len * c)),
                None => own_dst,
            };
            got.push(Some(b.recv(parent, dst, 0, &[])));
        }
    }
    match hold {
        Some(s) => {
            b.copy(elems(p, BufId::Scratch, s.off, (0, c)), own_dst, &got);
        }
        None if is_root => {
            b.copy(elems(p, BufId::Send, 0, (p.rank * c, c)), own_dst, &[]);
        }
        None => {}
    }
    for u in t.children() {
        for (real, at, len) in t.runs(u, t.extent(u)) {
            let src = match hold {
                Some(s) => elems(p, BufId::Scratch, s.off, ((u - t.v + at) * c, len * c)),
                None => elems(p, BufId::Send, 0, (real * c, len * c)),
            };
            b.send(t.real(u), src, 0, &got);
        }
    }
}

/// Linear gather: every rank sends its block to the root, chunked over the channels.
pub fn gather_linear(p: &Plan, b: &mut ScheduleBuilder) {
    let c = p.count;
    let nch = nchunks(c, p.chunk_elems());
    if p.rank != p.root {
        for j in 0..nch {
            let src = elems(p, BufId::Send, 0, part(c, nch, j));
            b.send(p.root, src, b.channel(j), &[]);
        }
        return;
    }
    b.copy(
        elems(p, BufId::Send, 0, (0, c)),
        elems(p, BufId::Recv, p.rank * c * p.elem, (0, c)),
        &[],
    );
    for k in 1..p.size {
        let from = (p.root + k) % p.size;
        for j in 0..nch {
            let dst = elems(p, BufId::Recv, from * c * p.elem, part(c, nch, j));
            b.recv(from, dst, b.channel(j), &[]);
        }
    }
}

/// Linear scatter: the root sends every rank its block, chunked over the channels.
pub fn scatter_linear(p: &Plan, b: &mut ScheduleBuilder) {
    let c = p.count;
    let nch = nchunks(c, p.chunk_elems());
    if p.rank != p.root {
        for j in 0..nch {
            let dst = elems(p, BufId::Recv, 0, part(c, nch, j));
            b.recv(p.root, dst, b.channel(j), &[]);
        }
        return;
    }
    b.copy(
        elems(p, BufId::Send, p.rank * c * p.elem, (0, c)),
        elems(p, BufId::Recv, 0, (0, c)),
        &[],
    );
    for k in 1..p.size {
        let to = (p.root + k) % p.size;
        for j in 0..nch {
            let src = elems(p, BufId::Send, to * c * p.elem, part(c, nch, j));
            b.send(to, src, b.channel(j), &[]);
        }
    }
}
