//! Calls on raw pointers, for bindings to other languages (the C ABI). The typed methods
//! check buffer lengths through slices; here the caller promises them.

use super::{Call, Communicator, Request};
use crate::algo::Kind;
use crate::engine::kind_name;
use crate::error::{Error, Result};
use crate::reduce::{DataType, ReduceOp};

/// One call on raw buffers. Buffer sizes follow [`CollKind`](crate::CollKind)'s table: for
/// example an allgather reads `count` elements at `send` and writes `count x size` at `recv`.
#[derive(Debug, Clone)]
pub struct RawCall {
    /// The collective (`Send`/`Recv` for point-to-point, with `root` the peer).
    pub kind: Kind,
    /// Element type.
    pub dtype: DataType,
    /// Reduction (ignored where none applies).
    pub op: ReduceOp,
    /// Root rank (broadcast, reduce) or peer (send, recv).
    pub root: usize,
    /// Element count, as NCCL counts it for the collective.
    pub count: usize,
    /// Input (may be null where this rank reads nothing, or the count is 0).
    pub send: *const u8,
    /// Output (may be null where this rank writes nothing, or the count is 0).
    pub recv: *mut u8,
    /// The per-rank blocks of alltoallv, allgatherv and reduce-scatterv (empty for the
    /// other kinds; see [`Blocks`](crate::Blocks)).
    pub blocks: crate::algo::Blocks,
    /// For a pre-multiplied sum (NCCL's `ncclRedOpCreatePreMulSum`): the scalar, one
    /// element of `dtype` in native byte order at the start of the array; the call reduces
    /// `send x scalar` with `Sum`. `None` for every other op.
    pub scale: Option<[u8; 8]>,
}

impl Communicator {
    fn check_raw(&self, c: &RawCall) -> Result<Call> {
        let (rank, size) = (self.rank(), self.size());
        let bad =
            |m: String| Error::invalid_argument(format!("rank {rank}: {}: {m}", kind_name(c.kind)));
        let rooted = c.kind.rooted() || matches!(c.kind, Kind::Send | Kind::Recv);
        if rooted && c.root >= size {
            return Err(bad(format!(
                "root/peer {} is out of range for {size} ranks",
                c.root
            )));
        }
        if matches!(c.kind, Kind::Send | Kind::Recv) && c.root == rank {
            return Err(bad("peer is this rank itself".into()));
        }
        let call = Call {
            kind: c.kind,
            dtype: c.dtype,
            op: c.op,
            root: c.root,
            count: c.count,
            send: c.send,
            recv: c.recv,
            blocks: c.blocks.clone(),
            scale: c.scale,
        };
        let (s, r) = super::calls::buffer_bytes(&call, rank, size)?;
        // A send only reads and a receive only writes: the other pointer may be null.
        let (s, r) = match c.kind {
            Kind::Send => (s, 0),
            Kind::Recv => (0, r),
            _ => (s, r),
        };
        if s > 0 && c.send.is_null() {
            return Err(bad(format!(
                "send buffer is NULL but {s} bytes are read from it"
            )));
        }
        if r > 0 && c.recv.is_null() {
            return Err(bad(format!(
                "receive buffer is NULL but {r} bytes are written to it"
            )));
        }
        super::exchange::check_call(&call, rank, (s, r))?;
        Ok(call)
    }

    /// Checks a raw call as [`Communicator::run_raw`] would, without running it (a group
    /// collects its calls first).
    pub fn check_raw_call(&self, call: &RawCall) -> Result<()> {
        self.check_raw(call).map(|_| ())
    }

    /// Runs raw calls together, as NCCL runs the calls between `ncclGroupStart` and
    /// `ncclGroupEnd` (see [`Communicator::group`]), and blocks until all are done.
    ///
    /// # Safety
    /// As [`Communicator::run_raw`], for every call.
    pub unsafe fn run_raw_group(&self, calls: &[RawCall]) -> Result<()> {
        let mut checked = Vec::with_capacity(calls.len());
        for c in calls {
            checked.push(self.check_raw(c)?);
        }
        // SAFETY: forwarded.
        unsafe { self.run_blocking_group(checked) }
    }

    /// Runs a call on raw buffers and blocks until it is done.
    ///
    /// # Safety
    /// The buffers must be valid for the sizes the call implies until it returns; the
    /// receive buffer must not be used by anyone else meanwhile (it may overlap the send
    /// buffer as in-place calls do).
    pub unsafe fn run_raw(&self, call: RawCall) -> Result<()> {
        let c = self.check_raw(&call)?;
        // SAFETY: forwarded.
        unsafe { self.run_blocking(c) }
    }

    /// Starts a call on raw buffers; the request completes it.
    ///
    /// # Safety
    /// As [`Communicator::run_raw`], until the request is finished (waited on, tested done,
    /// or dropped).
    pub unsafe fn submit_raw(&self, call: RawCall) -> Result<Request<'_>> {
        let c = self.check_raw(&call)?;
        // SAFETY: forwarded.
        unsafe { self.submit(c) }
    }
}
