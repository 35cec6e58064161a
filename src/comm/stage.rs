//! What happens to a group of calls before their schedules are built: pre-multiplied sums
//! get their scaled input (a copy: the caller's send buffer is only read), and small
//! allreduces of one type and op are fused into one call on a packed buffer, so that a group
//! of many small allreduces costs about one latency instead of one each (what NCCL's
//! grouped launches and DDP's buckets buy).

use super::calls::buffer_bytes;
use super::Call;
use crate::algo::Kind;
use crate::error::Result;
use crate::reduce::{copy_bytes, scale_to, ReduceOp};

/// Largest packed buffer (bytes) of fused allreduces.
pub(crate) const FUSE_MAX_BYTES: usize = 256 << 10;

/// Largest collective (bytes) that is fused (allreduce) or runs side by side with the rest
/// of its group. Measured at 2 ranks over tcp, 64 calls each (`oxccl-perf --calls 64`):
/// fused and side by side, 1 KiB calls took 14-20x less time than one by one, 16 KiB 2.4x,
/// but 64 KiB 0.7x: past a few tens of KiB a call is bandwidth-bound, and the copies and
/// the competition of concurrent calls cost more than the latencies saved.
pub(crate) const SMALL_BYTES: usize = 32 << 10;

/// Splits a staged group into runs: first every send and receive with every small
/// collective (they progress together: one latency for all, and sends and receives cannot
/// wait on each other), then each large collective alone, in the group's order (side by
/// side, large collectives only compete for the links and the cache). Every rank splits its
/// identical group identically.
pub(crate) fn batches(st: &Staged, rank: usize, size: usize) -> Vec<Vec<usize>> {
    let mut first = Vec::new();
    let mut rest = Vec::new();
    for (i, c) in st.calls.iter().enumerate() {
        let big = !matches!(c.kind, Kind::Send | Kind::Recv)
            && !st.fused.contains(&i)
            && buffer_bytes(c, rank, size).map_or(0, |(s, r)| s.max(r)) > SMALL_BYTES;
        if big {
            rest.push(vec![i]);
        } else {
            first.push(i);
        }
    }
    let mut out = Vec::with_capacity(rest.len() + 1);
    if !first.is_empty() {
        out.push(first);
    }
    out.extend(rest);
    out
}

/// Where one fused call's result goes back to.
struct Unpack {
    /// Index of the packed buffer in [`Staged::buffers`].
    buf: usize,
    /// (offset in the packed buffer, destination, length) per fused call.
    parts: Vec<(usize, *mut u8, usize)>,
}

/// The calls to run, with the memory they borrow from this stage.
pub(crate) struct Staged {
    /// The calls as the engine runs them.
    pub calls: Vec<Call>,
    /// Scaled inputs and packed buffers; the calls point into them.
    buffers: Vec<Vec<u8>>,
    unpack: Vec<Unpack>,
    /// Indices of the fused calls (made of small ones, so they count as small).
    fused: Vec<usize>,
}

impl Staged {
    /// Copies the fused results back to the callers' receive buffers.
    ///
    /// # Safety
    /// The original calls' receive buffers must still be valid (the caller's contract).
    pub(crate) unsafe fn finish(&self) {
        for u in &self.unpack {
            let src = &self.buffers[u.buf];
            for &(off, dst, len) in &u.parts {
                if len > 0 {
                    // SAFETY: `off + len` lies in the packed buffer (built so); `dst` is the
                    // caller's receive buffer of `len` bytes, which nothing else touches.
                    unsafe { copy_bytes(src.as_ptr().add(off), dst, len) };
                }
            }
        }
    }
}

/// Applies pre-multiplied sums and fuses small allreduces (see the module doc).
///
/// # Safety
/// Every call's buffers must be valid for the sizes its kind implies.
pub(crate) unsafe fn stage(calls: &[Call], rank: usize, size: usize) -> Result<Staged> {
    let mut out = Staged {
        calls: Vec::with_capacity(calls.len()),
        buffers: Vec::new(),
        unpack: Vec::new(),
        fused: Vec::new(),
    };
    for call in calls {
        let mut c = call.clone();
        if let Some(scalar) = c.scale.take() {
            let (s, _) = buffer_bytes(&c, rank, size)?;
            let mut t = vec![0u8; s];
            if s > 0 {
                // SAFETY: the caller's send buffer holds `s` bytes.
                let src = unsafe { std::slice::from_raw_parts(c.send, s) };
                scale_to(c.dtype, &mut t, src, &scalar[..c.dtype.size()]);
            }
            c.send = t.as_ptr();
            c.op = ReduceOp::Sum;
            out.buffers.push(t);
        }
        out.calls.push(c);
    }
    if out.calls.len() > 1 {
        fuse(&mut out, rank, size)?;
    }
    Ok(out)
}

fn fusable(c: &Call) -> bool {
    c.kind == Kind::AllReduce && c.count * c.dtype.size() <= SMALL_BYTES
}

/// Replaces every set of two or more fusable allreduces of one type and op by one call on
/// a packed buffer, placed where the first of them was.
fn fuse(st: &mut Staged, rank: usize, size: usize) -> Result<()> {
    let mut i = 0;
    while i < st.calls.len() {
        let head = &st.calls[i];
        if !fusable(head) {
            i += 1;
            continue;
        }
        let (dtype, op) = (head.dtype, head.op);
        // Members up to FUSE_MAX_BYTES in all: beyond that, one large allreduce plus the
        // copies in and out costs more than separate calls.
        let mut room = FUSE_MAX_BYTES;
        let members: Vec<usize> = (i..st.calls.len())
            .filter(|&j| {
                let c = &st.calls[j];
                let b = c.count * c.dtype.size();
                let take = fusable(c) && c.dtype == dtype && c.op == op && b <= room;
                if take {
                    room -= b;
                }
                take
            })
            .collect();
        if members.len() < 2 {
            i += 1;
            continue;
        }
        let e = dtype.size();
        let total: usize = members.iter().map(|&j| st.calls[j].count).sum();
        let mut packed = vec![0u8; total * e];
        let mut parts = Vec::with_capacity(members.len());
        let mut off = 0;
        for &j in &members {
            let c = &st.calls[j];
            let (len, _) = buffer_bytes(c, rank, size)?;
            if len > 0 {
                // SAFETY: the call's send buffer holds `len` bytes; the packed buffer has
                // room for every member.
                unsafe { copy_bytes(c.send, packed.as_mut_ptr().add(off), len) };
            }
            parts.push((off, c.recv, len));
            off += len;
        }
        let mut fused = st.calls[i].clone();
        fused.count = total;
        fused.send = packed.as_ptr();
        fused.recv = packed.as_mut_ptr();
        st.buffers.push(packed);
        st.unpack.push(Unpack {
            buf: st.buffers.len() - 1,
            parts,
        });
        st.calls[i] = fused;
        for &j in members.iter().skip(1).rev() {
            st.calls.remove(j);
        }
        st.fused.push(i);
        i += 1;
    }
    Ok(())
}
