//! The exchange collectives: alltoall(v), gather, scatter, allgatherv and reduce-scatterv,
//! their typed calls on slices, and the checks of their blocks (counts, displacements,
//! overlaps) shared with the raw path.

use super::calls::args;
use super::{Call, Communicator};
use crate::algo::{Block, Blocks, Kind};
use crate::error::{Error, Result};
use crate::reduce::{Element, ReduceOp};

/// Elements to bytes, or an error naming the argument.
fn bytes_of(rank: usize, kind: Kind, what: &str, elems: usize, e: usize) -> Result<usize> {
    elems
        .checked_mul(e)
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(|| {
            args(
                rank,
                kind,
                format!("{what} of {elems} elements overflows the address space"),
            )
        })
}

/// The furthest element a list of blocks reaches, checking `off + len` for overflow.
fn extent(rank: usize, kind: Kind, what: &str, blocks: &[Block]) -> Result<usize> {
    let mut end = 0usize;
    for (j, b) in blocks.iter().enumerate() {
        let e = b.off.checked_add(b.len).ok_or_else(|| {
            args(
                rank,
                kind,
                format!(
                    "{what}[{j}]: displacement {} + count {} overflows",
                    b.off, b.len
                ),
            )
        })?;
        end = end.max(e);
    }
    Ok(end)
}

/// Byte lengths of the send and receive buffers of an uneven-count call.
pub(crate) fn uneven_bytes(call: &Call, rank: usize, size: usize) -> Result<(usize, usize)> {
    let (k, e) = (call.kind, call.dtype.size());
    let b = &call.blocks;
    let need = |v: &[Block], what: &str| -> Result<()> {
        if v.len() != size {
            return Err(args(
                rank,
                k,
                format!(
                    "{what} has {} entries, needs one per rank ({size})",
                    v.len()
                ),
            ));
        }
        Ok(())
    };
    match k {
        Kind::AllToAllV => {
            need(&b.send, "sendcounts/sdispls")?;
            need(&b.recv, "recvcounts/rdispls")?;
            let s = extent(rank, k, "send block", &b.send)?;
            let r = extent(rank, k, "receive block", &b.recv)?;
            Ok((
                bytes_of(rank, k, "send buffer", s, e)?,
                bytes_of(rank, k, "receive buffer", r, e)?,
            ))
        }
        Kind::AllGatherV => {
            need(&b.recv, "recvcounts/displs")?;
            let r = extent(rank, k, "receive block", &b.recv)?;
            let own = b.recv[rank].len;
            Ok((
                bytes_of(rank, k, "send buffer", own, e)?,
                bytes_of(rank, k, "receive buffer", r, e)?,
            ))
        }
        Kind::ReduceScatterV => {
            need(&b.send, "recvcounts")?;
            let s = extent(rank, k, "send block", &b.send)?;
            Ok((
                bytes_of(rank, k, "send buffer", s, e)?,
                bytes_of(rank, k, "receive buffer", b.send[rank].len, e)?,
            ))
        }
        _ => Err(Error::internal(format!("rank {rank}: {k:?} has no blocks"))),
    }
}

/// Buffers at least this large are checked to exist (their last byte mapped) before
/// anything is built for them: a count no buffer can have (from C, where a pointer and a
/// count are all there is) would otherwise grow a schedule until memory runs out. One
/// `mincore` call, against a transfer of milliseconds.
const CHECK_MAPPED_BYTES: usize = 16 << 20;

/// Whether the page holding byte `addr` is mapped in this process.
fn mapped(addr: usize) -> bool {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let base = addr & !(page.max(1) - 1);
    let mut v = 0u8;
    // SAFETY: mincore only reads the mapping state of [base, base + 1) and writes one byte
    // to `v`; an unmapped range is its ENOMEM, not a fault.
    unsafe { libc::mincore(base as *mut libc::c_void, 1, &mut v) == 0 }
}

/// Whether two byte ranges share a byte.
fn overlap(a: *const u8, alen: usize, b: *const u8, blen: usize) -> bool {
    let (a, b) = (a as usize, b as usize);
    alen > 0 && blen > 0 && a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

/// The checks beyond sizes: the blocks a call writes must not overlap each other, the send
/// and receive buffers may overlap only in a documented in-place layout, and the counts a
/// rank gives for itself must agree.
pub(crate) fn check_call(call: &Call, rank: usize, lens: (usize, usize)) -> Result<()> {
    let (k, e) = (call.kind, call.dtype.size());
    let bad = |m: String| args(rank, k, m);
    let b = &call.blocks;
    if matches!(k, Kind::AllToAllV | Kind::AllGatherV) {
        let mut live: Vec<(usize, usize)> = b
            .recv
            .iter()
            .enumerate()
            .filter(|(_, x)| x.len > 0)
            .map(|(j, x)| (j, x.off))
            .collect();
        live.sort_unstable_by_key(|&(_, off)| off);
        for w in live.windows(2) {
            let (i, j) = (w[0].0, w[1].0);
            if b.recv[i].end() > b.recv[j].off {
                return Err(bad(format!(
                    "receive blocks {i} (displacement {}, count {}) and {j} (displacement {}, \
                     count {}) overlap",
                    b.recv[i].off, b.recv[i].len, b.recv[j].off, b.recv[j].len
                )));
            }
        }
    }
    if k == Kind::AllToAllV && b.send[rank].len != b.recv[rank].len {
        return Err(bad(format!(
            "sendcounts[{rank}] = {} but recvcounts[{rank}] = {}: a rank's block to itself \
             must have one size",
            b.send[rank].len, b.recv[rank].len
        )));
    }
    if k == Kind::AllGatherV && call.count != b.recv[rank].len {
        return Err(bad(format!(
            "sendcount {} differs from recvcounts[{rank}] = {}",
            call.count, b.recv[rank].len
        )));
    }
    // The in-place layouts: the own input block inside the output (gather, allgatherv) or
    // the own output block inside the input (scatter, reduce-scatterv).
    let (s, r) = lens;
    for (what, p, len) in [
        ("send", call.send as usize, s),
        ("receive", call.recv as usize, r),
    ] {
        if len > 0 && (p.checked_add(len).is_none() || len > isize::MAX as usize) {
            return Err(bad(format!(
                "the {what} buffer of {len} bytes would wrap the address space"
            )));
        }
        if len >= CHECK_MAPPED_BYTES && !mapped(p + len - 1) {
            return Err(bad(format!(
                "the {what} buffer of {len} bytes at {p:#x} cannot exist (its last byte is not \
                 mapped): is the count right?"
            )));
        }
    }
    if !overlap(call.send, s, call.recv, r) {
        return Ok(());
    }
    let at = |base: *const u8, off_elems: usize| (base as usize).wrapping_add(off_elems * e);
    let in_place = match k {
        Kind::Gather => call.send as usize == at(call.recv, rank * call.count),
        Kind::AllGatherV => call.send as usize == at(call.recv, b.recv[rank].off),
        Kind::Scatter => call.recv as usize == at(call.send, rank * call.count),
        Kind::ReduceScatterV => call.recv as usize == at(call.send, b.send[rank].off),
        // No in-place form: a block received could overwrite one not yet sent.
        Kind::AllToAll | Kind::AllToAllV => false,
        Kind::AllReduce | Kind::Reduce | Kind::Broadcast => std::ptr::eq(call.send, call.recv),
        Kind::AllGather => call.send as usize == at(call.recv, rank * call.count),
        Kind::ReduceScatter => call.recv as usize == at(call.send, rank * call.count),
        Kind::Send | Kind::Recv | Kind::Barrier => return Ok(()),
    };
    if in_place {
        return Ok(());
    }
    Err(bad(
        "the send and receive buffers overlap, and not in the in-place layout (own block at \
         its rank's place)"
            .into(),
    ))
}

/// Blocks from counts and displacements, or an error naming the argument.
fn blocks(
    rank: usize,
    kind: Kind,
    (cn, counts): (&str, &[usize]),
    (dn, displs): (&str, &[usize]),
) -> Result<Vec<Block>> {
    if counts.len() != displs.len() {
        return Err(args(
            rank,
            kind,
            format!(
                "{cn} has {} entries but {dn} has {}",
                counts.len(),
                displs.len()
            ),
        ));
    }
    Ok(counts
        .iter()
        .zip(displs)
        .map(|(&len, &off)| Block { off, len })
        .collect())
}

/// Rank-order blocks of `counts` laid end to end.
fn packed(rank: usize, kind: Kind, counts: &[usize]) -> Result<Vec<Block>> {
    let mut off = 0usize;
    let mut v = Vec::with_capacity(counts.len());
    for (j, &len) in counts.iter().enumerate() {
        v.push(Block { off, len });
        off = off
            .checked_add(len)
            .ok_or_else(|| args(rank, kind, format!("recvcounts overflow at entry {j}")))?;
    }
    Ok(v)
}

impl Communicator {
    /// Checks `call` and runs it: slices must hold at least what the call reads and writes.
    fn run_checked<T: Element>(&self, call: Call, send_len: usize, recv_len: usize) -> Result<()> {
        let call = self.validated::<T>(call, send_len, recv_len)?;
        // SAFETY: the slices hold the bytes the call touches (checked) and are borrowed for
        // the whole call.
        unsafe { self.run_blocking(call) }
    }

    /// Checks `call` against slices of `send_len` and `recv_len` elements.
    pub(super) fn validated<T: Element>(
        &self,
        call: Call,
        send_len: usize,
        recv_len: usize,
    ) -> Result<Call> {
        let (rank, size) = (self.rank(), self.size());
        let (s, r) = super::calls::buffer_bytes(&call, rank, size)?;
        let e = std::mem::size_of::<T>();
        for (what, have, want) in [("send", send_len, s), ("receive", recv_len, r)] {
            if have.saturating_mul(e) < want {
                return Err(args(
                    rank,
                    call.kind,
                    format!(
                        "{what} buffer has {have} elements, needs {}",
                        want / e.max(1)
                    ),
                ));
            }
        }
        check_call(&call, rank, (s, r))?;
        Ok(call)
    }

    /// Alltoall: block j of `send` goes to rank j, block i of `recv` comes from rank i
    /// (`send.len() == recv.len()`, a multiple of the rank count).
    pub fn all_to_all<T: Element>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        let k = Kind::AllToAll;
        let count = self.block(k, send.len())?;
        if recv.len() != send.len() {
            return Err(args(
                self.rank(),
                k,
                format!(
                    "receive buffer has {} elements, needs {} like the send buffer",
                    recv.len(),
                    send.len()
                ),
            ));
        }
        let c = self.call(k, ReduceOp::Sum, 0, count, send.as_ptr(), recv.as_mut_ptr());
        self.run_checked::<T>(c, send.len(), recv.len())
    }

    /// Alltoallv (MPI_Alltoallv): `send_counts[j]` elements at `send_displs[j]` go to rank
    /// j; `recv_counts[i]` elements from rank i land at `recv_displs[i]`. Counts and
    /// displacements are in elements; receive blocks must not overlap. Rank j's
    /// `recv_counts[i]` must equal rank i's `send_counts[j]`.
    pub fn all_to_all_v<T: Element>(
        &self,
        send: &[T],
        send_counts: &[usize],
        send_displs: &[usize],
        recv: &mut [T],
        recv_counts: &[usize],
        recv_displs: &[usize],
    ) -> Result<()> {
        let (k, rank) = (Kind::AllToAllV, self.rank());
        let mut c = self.call(k, ReduceOp::Sum, 0, 0, send.as_ptr(), recv.as_mut_ptr());
        c.blocks = Blocks {
            send: blocks(
                rank,
                k,
                ("sendcounts", send_counts),
                ("sdispls", send_displs),
            )?,
            recv: blocks(
                rank,
                k,
                ("recvcounts", recv_counts),
                ("rdispls", recv_displs),
            )?,
        };
        self.run_checked::<T>(c, send.len(), recv.len())
    }

    /// Gather: the root's `recv` (size x `send.len()` elements; empty elsewhere) gets every
    /// rank's `send`, in rank order.
    pub fn gather<T: Element>(&self, send: &[T], recv: &mut [T], root: usize) -> Result<()> {
        self.check_root(Kind::Gather, root, "root")?;
        let c = self.call(
            Kind::Gather,
            ReduceOp::Sum,
            root,
            send.len(),
            send.as_ptr(),
            recv.as_mut_ptr(),
        );
        self.run_checked::<T>(c, send.len(), recv.len())
    }

    /// Gather in place: at the root `buf` holds size blocks and this rank's input is its
    /// own block; elsewhere `buf` is the input.
    pub fn gather_in_place<T: Element>(&self, buf: &mut [T], root: usize) -> Result<()> {
        self.check_root(Kind::Gather, root, "root")?;
        let p = buf.as_mut_ptr();
        let (count, send) = if self.rank() == root {
            let count = self.block(Kind::Gather, buf.len())?;
            // SAFETY: block `rank` lies inside `buf`.
            (count, unsafe { p.add(self.rank() * count) } as *const T)
        } else {
            (buf.len(), p as *const T)
        };
        let c = self.call(Kind::Gather, ReduceOp::Sum, root, count, send, p);
        let n = buf.len();
        self.run_checked::<T>(c, n, n)
    }

    /// Scatter: rank r's `recv` gets block r of the root's `send` (size x `recv.len()`
    /// elements; ignored elsewhere).
    pub fn scatter<T: Element>(&self, send: &[T], recv: &mut [T], root: usize) -> Result<()> {
        self.check_root(Kind::Scatter, root, "root")?;
        let c = self.call(
            Kind::Scatter,
            ReduceOp::Sum,
            root,
            recv.len(),
            send.as_ptr(),
            recv.as_mut_ptr(),
        );
        self.run_checked::<T>(c, send.len(), recv.len())
    }

    /// Scatter in place: at the root `buf` holds size blocks and keeps its own; elsewhere
    /// `buf` receives the rank's block.
    pub fn scatter_in_place<T: Element>(&self, buf: &mut [T], root: usize) -> Result<()> {
        self.check_root(Kind::Scatter, root, "root")?;
        let p = buf.as_mut_ptr();
        let (count, recv) = if self.rank() == root {
            let count = self.block(Kind::Scatter, buf.len())?;
            // SAFETY: block `rank` lies inside `buf`.
            (count, unsafe { p.add(self.rank() * count) })
        } else {
            (buf.len(), p)
        };
        let c = self.call(Kind::Scatter, ReduceOp::Sum, root, count, p, recv);
        let n = buf.len();
        self.run_checked::<T>(c, n, n)
    }

    /// Allgatherv: every rank's `send` lands in every rank's `recv`, rank i's block
    /// (`counts[i]` elements) at `displs[i]`. All ranks pass the same counts and
    /// displacements, and `send.len() == counts[rank]`.
    pub fn all_gather_v<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<()> {
        let (k, rank) = (Kind::AllGatherV, self.rank());
        let mut c = self.call(
            k,
            ReduceOp::Sum,
            0,
            send.len(),
            send.as_ptr(),
            recv.as_mut_ptr(),
        );
        c.blocks.recv = blocks(rank, k, ("recvcounts", counts), ("displs", displs))?;
        self.run_checked::<T>(c, send.len(), recv.len())
    }

    /// Reduce-scatterv (MPI_Reduce_scatter): `send` holds size blocks laid end to end in
    /// rank order, block i of `counts[i]` elements; rank r's `recv` gets block r of the
    /// reduction. All ranks pass the same counts.
    pub fn reduce_scatter_v<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        op: ReduceOp,
    ) -> Result<()> {
        let (k, rank) = (Kind::ReduceScatterV, self.rank());
        let mut c = self.call(k, op, 0, 0, send.as_ptr(), recv.as_mut_ptr());
        c.blocks.send = packed(rank, k, counts)?;
        self.run_checked::<T>(c, send.len(), recv.len())
    }
}
