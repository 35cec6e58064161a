//! The typed collective calls on slices, their checks, and the byte sizes each kind implies.

use super::{Call, Communicator};
use crate::algo::Kind;
use crate::engine::kind_name;
use crate::error::{Error, Result};
use crate::reduce::{DataType, Element, ReduceOp};

/// Bytes of the send and receive buffers of `call` at `rank` (see [`Kind`]).
pub(crate) fn buffer_bytes(call: &Call, rank: usize, size: usize) -> Result<(usize, usize)> {
    let e = call.dtype.size();
    let over = || {
        Error::invalid_argument(format!(
            "rank {rank}: {}: count {} of {} overflows the address space",
            kind_name(call.kind),
            call.count,
            call.dtype.name()
        ))
    };
    if call.kind.reduces() {
        call.op
            .check(call.dtype)
            .map_err(|e| args(rank, call.kind, e.message().to_string()))?;
    }
    if call.kind.uneven() {
        return super::exchange::uneven_bytes(call, rank, size);
    }
    let one = call.count.checked_mul(e).ok_or_else(over)?;
    let all = one.checked_mul(size).ok_or_else(over)?;
    Ok(match call.kind {
        Kind::AllReduce | Kind::Send | Kind::Recv => (one, one),
        Kind::AllGather => (one, all),
        Kind::ReduceScatter => (all, one),
        Kind::Broadcast => (if rank == call.root { one } else { 0 }, one),
        Kind::Reduce => (one, if rank == call.root { one } else { 0 }),
        Kind::Barrier => (0, 0),
        Kind::AllToAll => (all, all),
        Kind::Gather => (one, if rank == call.root { all } else { 0 }),
        Kind::Scatter => (if rank == call.root { all } else { 0 }, one),
        Kind::AllToAllV | Kind::AllGatherV | Kind::ReduceScatterV => (0, 0),
    })
}

pub(super) fn args(rank: usize, kind: Kind, msg: String) -> Error {
    Error::invalid_argument(format!("rank {rank}: {}: {msg}", kind_name(kind)))
}

impl Communicator {
    pub(super) fn call<T: Element>(
        &self,
        kind: Kind,
        op: ReduceOp,
        root: usize,
        count: usize,
        send: *const T,
        recv: *mut T,
    ) -> Call {
        Call {
            kind,
            dtype: T::DTYPE,
            op,
            root,
            count,
            send: send as *const u8,
            recv: recv as *mut u8,
            blocks: Default::default(),
            scale: None,
        }
    }

    pub(super) fn check_root(&self, kind: Kind, root: usize, what: &str) -> Result<()> {
        if root >= self.size() {
            return Err(args(
                self.rank(),
                kind,
                format!("{what} {root} is out of range for {} ranks", self.size()),
            ));
        }
        Ok(())
    }

    fn check_len(&self, kind: Kind, what: &str, have: usize, want: usize) -> Result<()> {
        if have != want {
            return Err(args(
                self.rank(),
                kind,
                format!("{what} buffer has {have} elements, needs {want}"),
            ));
        }
        Ok(())
    }

    pub(super) fn checked<T: Element>(
        &self,
        kind: Kind,
        op: ReduceOp,
        root: usize,
        count: usize,
        send: &[T],
        recv: &mut [T],
    ) -> Result<Call> {
        let n = self.size();
        match kind {
            Kind::AllReduce => self.check_len(kind, "receive", recv.len(), count)?,
            Kind::AllGather => self.check_len(kind, "receive", recv.len(), count * n)?,
            Kind::ReduceScatter => self.check_len(kind, "send", send.len(), count * n)?,
            Kind::Broadcast => {
                self.check_root(kind, root, "root")?;
                if self.rank() == root {
                    self.check_len(kind, "send", send.len(), count)?;
                }
            }
            Kind::Reduce => {
                self.check_root(kind, root, "root")?;
                if self.rank() == root {
                    self.check_len(kind, "receive", recv.len(), count)?;
                }
            }
            _ => {}
        }
        Ok(self.call(kind, op, root, count, send.as_ptr(), recv.as_mut_ptr()))
    }

    /// Element-wise reduction of every rank's `send` into every rank's `recv`.
    pub fn all_reduce<T: Element>(&self, send: &[T], recv: &mut [T], op: ReduceOp) -> Result<()> {
        let c = self.checked(Kind::AllReduce, op, 0, send.len(), send, recv)?;
        // SAFETY: lengths checked; the borrows keep both buffers alive and unaliased.
        unsafe { self.run_blocking(c) }
    }

    /// [`Communicator::all_reduce`] in place.
    pub fn all_reduce_in_place<T: Element>(&self, buf: &mut [T], op: ReduceOp) -> Result<()> {
        let p = buf.as_mut_ptr();
        // SAFETY: send and receive are the same live buffer, which in-place calls allow.
        unsafe { self.run_blocking(self.call(Kind::AllReduce, op, 0, buf.len(), p, p)) }
    }

    /// Every rank's `send` (same length on all ranks) into `recv`, in rank order.
    pub fn all_gather<T: Element>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        let c = self.checked(Kind::AllGather, ReduceOp::Sum, 0, send.len(), send, recv)?;
        // SAFETY: lengths checked.
        unsafe { self.run_blocking(c) }
    }

    /// Allgather in place: this rank's input is block `rank` of `buf` (`buf.len() / size`
    /// elements each).
    pub fn all_gather_in_place<T: Element>(&self, buf: &mut [T]) -> Result<()> {
        let count = self.block(Kind::AllGather, buf.len())?;
        let p = buf.as_mut_ptr();
        // SAFETY: the send block lies inside the receive buffer at the rank's slot.
        let s = unsafe { p.add(self.rank() * count) };
        // SAFETY: both pointers lie in `buf`, borrowed mutably for the whole call.
        unsafe { self.run_blocking(self.call(Kind::AllGather, ReduceOp::Sum, 0, count, s, p)) }
    }

    /// Reduces every rank's `send` (size x `recv.len()` elements) and leaves block `rank`
    /// of the result in `recv`.
    pub fn reduce_scatter<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        let c = self.checked(Kind::ReduceScatter, op, 0, recv.len(), send, recv)?;
        // SAFETY: lengths checked.
        unsafe { self.run_blocking(c) }
    }

    /// Reduce-scatter in place: the result lands in block `rank` of `buf`.
    pub fn reduce_scatter_in_place<T: Element>(&self, buf: &mut [T], op: ReduceOp) -> Result<()> {
        let count = self.block(Kind::ReduceScatter, buf.len())?;
        let p = buf.as_mut_ptr();
        // SAFETY: the receive block lies inside the send buffer at the rank's slot.
        let r = unsafe { p.add(self.rank() * count) };
        // SAFETY: both pointers lie in `buf`, borrowed mutably for the whole call.
        unsafe { self.run_blocking(self.call(Kind::ReduceScatter, op, 0, count, p, r)) }
    }

    /// The root's `buf` into every rank's `buf`.
    pub fn broadcast<T: Element>(&self, buf: &mut [T], root: usize) -> Result<()> {
        self.check_root(Kind::Broadcast, root, "root")?;
        let p = buf.as_mut_ptr();
        // SAFETY: in place; the length is the count.
        unsafe {
            self.run_blocking(self.call(Kind::Broadcast, ReduceOp::Sum, root, buf.len(), p, p))
        }
    }

    /// The root's `send` into every rank's `recv` (`send` is read at the root only).
    pub fn broadcast_into<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
        root: usize,
    ) -> Result<()> {
        let c = self.checked(Kind::Broadcast, ReduceOp::Sum, root, recv.len(), send, recv)?;
        // SAFETY: lengths checked.
        unsafe { self.run_blocking(c) }
    }

    /// Reduction of every rank's `send` into the root's `recv` (`recv` is written at the
    /// root only, and may be empty elsewhere).
    pub fn reduce<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
        root: usize,
    ) -> Result<()> {
        let c = self.checked(Kind::Reduce, op, root, send.len(), send, recv)?;
        // SAFETY: lengths checked.
        unsafe { self.run_blocking(c) }
    }

    /// [`Communicator::reduce`] in place.
    pub fn reduce_in_place<T: Element>(
        &self,
        buf: &mut [T],
        op: ReduceOp,
        root: usize,
    ) -> Result<()> {
        self.check_root(Kind::Reduce, root, "root")?;
        let p = buf.as_mut_ptr();
        // SAFETY: in place.
        unsafe { self.run_blocking(self.call(Kind::Reduce, op, root, buf.len(), p, p)) }
    }

    /// Sends `buf` to `peer`, which must call [`Communicator::recv`] with the same length.
    pub fn send<T: Element>(&self, buf: &[T], peer: usize) -> Result<()> {
        self.check_peer(Kind::Send, peer)?;
        let c = self.call(
            Kind::Send,
            ReduceOp::Sum,
            peer,
            buf.len(),
            buf.as_ptr(),
            std::ptr::null_mut(),
        );
        // SAFETY: the buffer is borrowed for the call.
        unsafe { self.run_blocking(c) }
    }

    /// Receives into `buf` from `peer`.
    pub fn recv<T: Element>(&self, buf: &mut [T], peer: usize) -> Result<()> {
        self.check_peer(Kind::Recv, peer)?;
        let c = self.call(
            Kind::Recv,
            ReduceOp::Sum,
            peer,
            buf.len(),
            std::ptr::null(),
            buf.as_mut_ptr(),
        );
        // SAFETY: the buffer is borrowed for the call.
        unsafe { self.run_blocking(c) }
    }

    /// Returns once every rank has entered the barrier.
    pub fn barrier(&self) -> Result<()> {
        let c = Call {
            kind: Kind::Barrier,
            dtype: DataType::U8,
            op: ReduceOp::Sum,
            root: 0,
            count: 0,
            send: std::ptr::null(),
            recv: std::ptr::null_mut(),
            blocks: Default::default(),
            scale: None,
        };
        // SAFETY: no buffers.
        unsafe { self.run_blocking(c) }
    }

    pub(super) fn check_peer(&self, kind: Kind, peer: usize) -> Result<()> {
        self.check_root(kind, peer, "peer")?;
        if peer == self.rank() {
            return Err(args(self.rank(), kind, "peer is this rank itself".into()));
        }
        Ok(())
    }

    pub(super) fn block(&self, kind: Kind, len: usize) -> Result<usize> {
        if len % self.size() != 0 {
            return Err(args(
                self.rank(),
                kind,
                format!(
                    "buffer of {len} elements does not split into {} equal blocks",
                    self.size()
                ),
            ));
        }
        Ok(len / self.size())
    }
}
