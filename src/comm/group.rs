//! Grouped calls (NCCL's `ncclGroupStart`/`ncclGroupEnd`): calls collected first and run
//! as one schedule, so that small allreduces of a group cost about one latency (they are
//! fused, see `stage`), sends and receives of a group cannot wait on each other, and the
//! rest progress together. Also the pre-multiplied sums (NCCL's `ncclRedOpCreatePreMulSum`).

use std::marker::PhantomData;

use super::{Call, Communicator};
use crate::algo::Kind;
use crate::error::Result;
use crate::reduce::{Element, ReduceOp};

/// Calls collected to run together; made by [`Communicator::group`]. Nothing runs until the
/// group ends, and the buffers stay borrowed (for `'b`) until then; a group that is never
/// run does nothing.
pub struct Group<'c, 'b> {
    comm: &'c Communicator,
    calls: Vec<Call>,
    _buffers: PhantomData<&'b mut [u8]>,
}

fn scalar<T: Element>(x: T) -> [u8; 8] {
    let mut s = [0u8; 8];
    let b = bytemuck::bytes_of(&x);
    s[..b.len()].copy_from_slice(b);
    s
}

impl<'b> Group<'_, 'b> {
    fn push(&mut self, c: Call) -> Result<()> {
        self.calls.push(c);
        Ok(())
    }

    /// [`Communicator::all_reduce`], run when the group ends.
    pub fn all_reduce<T: Element>(
        &mut self,
        send: &'b [T],
        recv: &'b mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        let c = self
            .comm
            .checked(Kind::AllReduce, op, 0, send.len(), send, recv)?;
        self.push(c)
    }

    /// [`Communicator::all_reduce_in_place`], run when the group ends.
    pub fn all_reduce_in_place<T: Element>(
        &mut self,
        buf: &'b mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        let p = buf.as_mut_ptr();
        let c = self.comm.call(Kind::AllReduce, op, 0, buf.len(), p, p);
        self.push(c)
    }

    /// [`Communicator::all_reduce_premul`], run when the group ends.
    pub fn all_reduce_premul<T: Element>(
        &mut self,
        send: &'b [T],
        recv: &'b mut [T],
        scale: T,
    ) -> Result<()> {
        let mut c = self
            .comm
            .checked(Kind::AllReduce, ReduceOp::Sum, 0, send.len(), send, recv)?;
        c.scale = Some(scalar(scale));
        self.push(c)
    }

    /// [`Communicator::all_gather`], run when the group ends.
    pub fn all_gather<T: Element>(&mut self, send: &'b [T], recv: &'b mut [T]) -> Result<()> {
        let c = self
            .comm
            .checked(Kind::AllGather, ReduceOp::Sum, 0, send.len(), send, recv)?;
        self.push(c)
    }

    /// [`Communicator::reduce_scatter`], run when the group ends.
    pub fn reduce_scatter<T: Element>(
        &mut self,
        send: &'b [T],
        recv: &'b mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        let c = self
            .comm
            .checked(Kind::ReduceScatter, op, 0, recv.len(), send, recv)?;
        self.push(c)
    }

    /// [`Communicator::broadcast`], run when the group ends.
    pub fn broadcast<T: Element>(&mut self, buf: &'b mut [T], root: usize) -> Result<()> {
        self.comm.check_root(Kind::Broadcast, root, "root")?;
        let p = buf.as_mut_ptr();
        let c = self
            .comm
            .call(Kind::Broadcast, ReduceOp::Sum, root, buf.len(), p, p);
        self.push(c)
    }

    /// [`Communicator::reduce`], run when the group ends.
    pub fn reduce<T: Element>(
        &mut self,
        send: &'b [T],
        recv: &'b mut [T],
        op: ReduceOp,
        root: usize,
    ) -> Result<()> {
        let c = self
            .comm
            .checked(Kind::Reduce, op, root, send.len(), send, recv)?;
        self.push(c)
    }

    /// [`Communicator::all_to_all`], run when the group ends.
    pub fn all_to_all<T: Element>(&mut self, send: &'b [T], recv: &'b mut [T]) -> Result<()> {
        let count = self.comm.block(Kind::AllToAll, send.len())?;
        let c = self.comm.call(
            Kind::AllToAll,
            ReduceOp::Sum,
            0,
            count,
            send.as_ptr(),
            recv.as_mut_ptr(),
        );
        let c = self.comm.validated::<T>(c, send.len(), recv.len())?;
        self.push(c)
    }

    /// [`Communicator::send`], run when the group ends (with the group's receives, so a
    /// pair of ranks can exchange).
    pub fn send<T: Element>(&mut self, buf: &'b [T], peer: usize) -> Result<()> {
        self.comm.check_peer(Kind::Send, peer)?;
        let c = self.comm.call(
            Kind::Send,
            ReduceOp::Sum,
            peer,
            buf.len(),
            buf.as_ptr(),
            std::ptr::null_mut(),
        );
        self.push(c)
    }

    /// [`Communicator::recv`], run when the group ends.
    pub fn recv<T: Element>(&mut self, buf: &'b mut [T], peer: usize) -> Result<()> {
        self.comm.check_peer(Kind::Recv, peer)?;
        let c = self.comm.call(
            Kind::Recv,
            ReduceOp::Sum,
            peer,
            buf.len(),
            std::ptr::null(),
            buf.as_mut_ptr(),
        );
        self.push(c)
    }

    /// Number of calls collected so far.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call was collected.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Runs the collected calls together and waits for them.
    pub fn run(self) -> Result<()> {
        let calls = self.calls;
        // SAFETY: every call was checked against its slices, which stay borrowed for 'b,
        // beyond this synchronous run.
        unsafe { self.comm.run_blocking_group(calls) }
    }
}

impl Communicator {
    /// Runs the calls `f` makes on the group together, as NCCL runs the calls between
    /// `ncclGroupStart` and `ncclGroupEnd`: small allreduces of one type and op become one
    /// (a group of 64 allreduces of 1 KiB costs about what one of 64 KiB does), sends and
    /// receives progress together, and everything else is merged into one schedule. Every
    /// rank must make the same grouped calls. If `f` fails, nothing runs.
    ///
    /// ```no_run
    /// # fn demo(comm: &oxccl::Communicator) -> oxccl::Result<()> {
    /// let (mut a, mut b) = (vec![1.0f32; 256], vec![2.0f32; 256]);
    /// comm.group(|g| {
    ///     g.all_reduce_in_place(&mut a, oxccl::ReduceOp::Sum)?;
    ///     g.all_reduce_in_place(&mut b, oxccl::ReduceOp::Sum)
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn group<'b>(&self, f: impl FnOnce(&mut Group<'_, 'b>) -> Result<()>) -> Result<()> {
        let mut g = Group {
            comm: self,
            calls: Vec::new(),
            _buffers: PhantomData,
        };
        f(&mut g)?;
        g.run()
    }

    /// A pre-multiplied sum (NCCL's `ncclRedOpCreatePreMulSum`, PyTorch's `PREMUL_SUM`):
    /// every rank's `send` times `scale`, summed into every rank's `recv`. Each rank scales
    /// its own input once (in the element type, rounding once), then the sum runs as any
    /// other, so all ranks get bitwise identical results.
    pub fn all_reduce_premul<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
        scale: T,
    ) -> Result<()> {
        self.premul(Kind::AllReduce, 0, send.len(), send, recv, scale)
    }

    /// [`Communicator::reduce_scatter`] of a pre-multiplied sum.
    pub fn reduce_scatter_premul<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
        scale: T,
    ) -> Result<()> {
        self.premul(Kind::ReduceScatter, 0, recv.len(), send, recv, scale)
    }

    /// [`Communicator::reduce`] of a pre-multiplied sum.
    pub fn reduce_premul<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
        scale: T,
        root: usize,
    ) -> Result<()> {
        self.premul(Kind::Reduce, root, send.len(), send, recv, scale)
    }

    /// Checks and runs a pre-multiplied sum of `kind`.
    fn premul<T: Element>(
        &self,
        kind: Kind,
        root: usize,
        count: usize,
        send: &[T],
        recv: &mut [T],
        scale: T,
    ) -> Result<()> {
        let mut c = self.checked(kind, ReduceOp::Sum, root, count, send, recv)?;
        c.scale = Some(scalar(scale));
        // SAFETY: lengths checked; the borrows keep both buffers alive and unaliased.
        unsafe { self.run_blocking(c) }
    }

    /// Runs `calls` together on this thread, after any non-blocking calls issued before.
    ///
    /// # Safety
    /// As [`Communicator::run_blocking`], for every call.
    pub(crate) unsafe fn run_blocking_group(&self, calls: Vec<Call>) -> Result<()> {
        let Some(first) = calls.first() else {
            return Ok(());
        };
        let _entry = self.shared.enter(first.kind)?;
        // SAFETY: forwarded; the slot is waited on before returning.
        if let Some(slot) = unsafe { self.submit_group_if_busy(&calls) }? {
            return slot.wait_result();
        }
        let mut st = super::lock(&self.state);
        // SAFETY: forwarded.
        unsafe { super::execute(&self.shared, &mut st, &calls) }
    }
}
