//! Collective entry points, blocking and `...Async`, in NCCL's argument order. Each one
//! checks its arguments and hands a [`RawCall`] to the communicator.

use std::os::raw::{c_int, c_void};

use oxccl_core::{Blocks, CollKind, DataType, Error, RawCall, ReduceOp, Result};

use crate::boundary::{guard, out_ptr, write_out, Ctx};
use crate::comm::resolve as resolve_comm;
use crate::handles::{self, ReqEntry};
use crate::types::{data_type, oxcclComm_t, oxcclRequest_t, oxcclResult_t, DataTypeArg, RedOpArg};

/// One call as C gave it, before checks.
pub(crate) struct Args {
    pub kind: CollKind,
    pub send: *const c_void,
    pub recv: *mut c_void,
    pub count: usize,
    pub dtype: DataTypeArg,
    /// `None` where the collective has no reduction.
    pub op: Option<RedOpArg>,
    /// Root or peer, where the collective has one.
    pub root: Option<c_int>,
    /// Per-rank blocks of the uneven-count collectives (empty otherwise).
    pub blocks: Blocks,
}

/// Checks `a` and runs it on `comm`, blocking, or as a request written to `request`.
pub(crate) fn run(
    ctx: &mut Ctx,
    comm: oxcclComm_t,
    a: Args,
    request: Option<*mut oxcclRequest_t>,
) -> Result<()> {
    let e = resolve_comm(ctx, comm)?;
    let (rank, size) = (e.comm.rank(), e.comm.size());
    let what = oxccl_core::engine::kind_name(a.kind);
    let bad = |m: String| Error::invalid_argument(format!("rank {rank}: {what}: {m}"));
    if let Some(r) = request {
        out_ptr(r, "request")?;
    }
    let dtype = data_type(a.dtype).map_err(|e| bad(e.message().to_string()))?;
    let (op, scale) = match a.op {
        Some(o) => {
            crate::premul::resolve_op(&e, o, dtype).map_err(|e| bad(e.message().to_string()))?
        }
        None => (ReduceOp::Sum, None),
    };
    let root = match a.root {
        None => 0,
        Some(r) => match usize::try_from(r) {
            Ok(r) if r < size => r,
            _ => {
                let role = if matches!(a.kind, CollKind::Send | CollKind::Recv) {
                    "peer"
                } else {
                    "root"
                };
                return Err(bad(format!("{role} {r} is out of range for {size} ranks")));
            }
        },
    };
    check_extent(&a, dtype, size).map_err(bad)?;
    let call = RawCall {
        kind: a.kind,
        dtype,
        op,
        root,
        count: a.count,
        send: a.send as *const u8,
        recv: a.recv as *mut u8,
        blocks: a.blocks,
        scale,
    };
    if crate::group::active() {
        if request.is_some() {
            return Err(Error::invalid_usage(format!(
                "rank {rank}: {what}: an ...Async call inside a group: use the blocking form, \
                 which oxcclGroupEnd runs with the group"
            )));
        }
        e.comm.check_raw_call(&call)?;
        crate::group::push(e.clone(), call);
        return Ok(());
    }
    match request {
        None => {
            // SAFETY: the C caller promises the buffers for the sizes NCCL's API implies,
            // for the duration of the call.
            unsafe { e.comm.run_raw(call) }
        }
        Some(out) => {
            // SAFETY: the C caller promises the buffers until the request is finished
            // (oxcclWait, or oxcclTest reporting done).
            let req = unsafe { e.comm.submit_raw(call) }?;
            // SAFETY: `req` borrows `e.comm`, and the entry keeps `e` alive.
            let entry = unsafe { ReqEntry::new(req, e.clone()) };
            let h = handles::add_request(entry);
            // SAFETY: checked non-null above.
            unsafe { write_out(out, h) };
            Ok(())
        }
    }
}

/// Refuses counts whose byte size overflows, or buffers that would wrap the address space
/// (a slice of them could not exist).
fn check_extent(a: &Args, dtype: DataType, size: usize) -> std::result::Result<(), String> {
    let factor = match a.kind {
        CollKind::AllGather | CollKind::ReduceScatter | CollKind::AllToAll => size,
        CollKind::Gather | CollKind::Scatter => size,
        _ => 1,
    };
    let over = || {
        format!(
            "count {} of {} ({} bytes each{}) overflows the address space",
            a.count,
            dtype.name(),
            dtype.size(),
            if factor > 1 {
                format!(", times {factor} ranks")
            } else {
                String::new()
            }
        )
    };
    let bytes = a
        .count
        .checked_mul(dtype.size())
        .and_then(|b| b.checked_mul(factor))
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(over)?;
    for p in [a.send as usize, a.recv as usize] {
        if p != 0 && p.checked_add(bytes).is_none() {
            return Err(over());
        }
    }
    Ok(())
}

pub(crate) fn blocking(name: &str, comm: oxcclComm_t, a: Args) -> oxcclResult_t {
    guard(name, |ctx| run(ctx, comm, a, None))
}

pub(crate) fn nonblocking(
    name: &str,
    comm: oxcclComm_t,
    a: Args,
    request: *mut oxcclRequest_t,
) -> oxcclResult_t {
    guard(name, |ctx| run(ctx, comm, a, Some(request)))
}

fn allreduce(
    s: *const c_void,
    r: *mut c_void,
    count: usize,
    dt: DataTypeArg,
    op: RedOpArg,
) -> Args {
    Args {
        kind: CollKind::AllReduce,
        send: s,
        recv: r,
        count,
        dtype: dt,
        op: Some(op),
        root: None,
        blocks: Blocks::default(),
    }
}

fn broadcast(s: *const c_void, r: *mut c_void, count: usize, dt: DataTypeArg, root: c_int) -> Args {
    Args {
        kind: CollKind::Broadcast,
        send: s,
        recv: r,
        count,
        dtype: dt,
        op: None,
        root: Some(root),
        blocks: Blocks::default(),
    }
}

fn reduce(
    s: *const c_void,
    r: *mut c_void,
    count: usize,
    dt: DataTypeArg,
    op: RedOpArg,
    root: c_int,
) -> Args {
    Args {
        kind: CollKind::Reduce,
        send: s,
        recv: r,
        count,
        dtype: dt,
        op: Some(op),
        root: Some(root),
        blocks: Blocks::default(),
    }
}

fn allgather(s: *const c_void, r: *mut c_void, count: usize, dt: DataTypeArg) -> Args {
    Args {
        kind: CollKind::AllGather,
        send: s,
        recv: r,
        count,
        dtype: dt,
        op: None,
        root: None,
        blocks: Blocks::default(),
    }
}

fn reduce_scatter(
    s: *const c_void,
    r: *mut c_void,
    count: usize,
    dt: DataTypeArg,
    op: RedOpArg,
) -> Args {
    Args {
        kind: CollKind::ReduceScatter,
        send: s,
        recv: r,
        count,
        dtype: dt,
        op: Some(op),
        root: None,
        blocks: Blocks::default(),
    }
}

fn send(s: *const c_void, count: usize, dt: DataTypeArg, peer: c_int) -> Args {
    Args {
        kind: CollKind::Send,
        send: s,
        recv: std::ptr::null_mut(),
        count,
        dtype: dt,
        op: None,
        root: Some(peer),
        blocks: Blocks::default(),
    }
}

fn recv(r: *mut c_void, count: usize, dt: DataTypeArg, peer: c_int) -> Args {
    Args {
        kind: CollKind::Recv,
        send: std::ptr::null(),
        recv: r,
        count,
        dtype: dt,
        op: None,
        root: Some(peer),
        blocks: Blocks::default(),
    }
}

fn barrier() -> Args {
    Args {
        kind: CollKind::Barrier,
        send: std::ptr::null(),
        recv: std::ptr::null_mut(),
        count: 0,
        dtype: DataType::U8 as DataTypeArg,
        op: None,
        root: None,
        blocks: Blocks::default(),
    }
}

/// Reduces `count` elements of every rank's `sendbuff` with `op` into every rank's
/// `recvbuff` (`sendbuff == recvbuff`: in place).
#[no_mangle]
pub extern "C" fn oxcclAllReduce(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: DataTypeArg,
    op: RedOpArg,
    comm: oxcclComm_t,
) -> oxcclResult_t {
    blocking(
        "oxcclAllReduce",
        comm,
        allreduce(sendbuff, recvbuff, count, datatype, op),
    )
}

/// Copies `count` elements of the root's `sendbuff` into every rank's `recvbuff`
/// (`sendbuff` is read at the root only; `sendbuff == recvbuff`: in place).
#[no_mangle]
pub extern "C" fn oxcclBroadcast(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: DataTypeArg,
    root: c_int,
    comm: oxcclComm_t,
) -> oxcclResult_t {
    blocking(
        "oxcclBroadcast",
        comm,
        broadcast(sendbuff, recvbuff, count, datatype, root),
    )
}

/// Reduces `count` elements of every rank's `sendbuff` into the root's `recvbuff`
/// (`recvbuff` is written at the root only).
#[no_mangle]
pub extern "C" fn oxcclReduce(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: DataTypeArg,
    op: RedOpArg,
    root: c_int,
    comm: oxcclComm_t,
) -> oxcclResult_t {
    blocking(
        "oxcclReduce",
        comm,
        reduce(sendbuff, recvbuff, count, datatype, op, root),
    )
}

/// Gathers `sendcount` elements from every rank into `recvbuff` (`nranks * sendcount`
/// elements, in rank order). In place: `sendbuff == recvbuff + rank * sendcount`.
#[no_mangle]
pub extern "C" fn oxcclAllGather(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    sendcount: usize,
    datatype: DataTypeArg,
    comm: oxcclComm_t,
) -> oxcclResult_t {
    blocking(
        "oxcclAllGather",
        comm,
        allgather(sendbuff, recvbuff, sendcount, datatype),
    )
}

/// Reduces every rank's `sendbuff` (`nranks * recvcount` elements) and leaves block `rank`
/// in `recvbuff`. In place: `recvbuff == sendbuff + rank * recvcount`.
#[no_mangle]
pub extern "C" fn oxcclReduceScatter(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    recvcount: usize,
    datatype: DataTypeArg,
    op: RedOpArg,
    comm: oxcclComm_t,
) -> oxcclResult_t {
    blocking(
        "oxcclReduceScatter",
        comm,
        reduce_scatter(sendbuff, recvbuff, recvcount, datatype, op),
    )
}

/// Sends `count` elements to `peer`, which calls `oxcclRecv` with the same count and type.
#[no_mangle]
pub extern "C" fn oxcclSend(
    sendbuff: *const c_void,
    count: usize,
    datatype: DataTypeArg,
    peer: c_int,
    comm: oxcclComm_t,
) -> oxcclResult_t {
    blocking("oxcclSend", comm, send(sendbuff, count, datatype, peer))
}

/// Receives `count` elements from `peer`.
#[no_mangle]
pub extern "C" fn oxcclRecv(
    recvbuff: *mut c_void,
    count: usize,
    datatype: DataTypeArg,
    peer: c_int,
    comm: oxcclComm_t,
) -> oxcclResult_t {
    blocking("oxcclRecv", comm, recv(recvbuff, count, datatype, peer))
}

/// Returns once every rank of `comm` has entered the barrier.
#[no_mangle]
pub extern "C" fn oxcclBarrier(comm: oxcclComm_t) -> oxcclResult_t {
    blocking("oxcclBarrier", comm, barrier())
}

/// `oxcclAllReduce`, started in the background; finish it with `oxcclWait`/`oxcclTest`.
#[no_mangle]
pub extern "C" fn oxcclAllReduceAsync(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: DataTypeArg,
    op: RedOpArg,
    comm: oxcclComm_t,
    request: *mut oxcclRequest_t,
) -> oxcclResult_t {
    let a = allreduce(sendbuff, recvbuff, count, datatype, op);
    nonblocking("oxcclAllReduceAsync", comm, a, request)
}

/// `oxcclBroadcast`, started in the background.
#[no_mangle]
pub extern "C" fn oxcclBroadcastAsync(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: DataTypeArg,
    root: c_int,
    comm: oxcclComm_t,
    request: *mut oxcclRequest_t,
) -> oxcclResult_t {
    let a = broadcast(sendbuff, recvbuff, count, datatype, root);
    nonblocking("oxcclBroadcastAsync", comm, a, request)
}

/// `oxcclReduce`, started in the background.
#[no_mangle]
pub extern "C" fn oxcclReduceAsync(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: DataTypeArg,
    op: RedOpArg,
    root: c_int,
    comm: oxcclComm_t,
    request: *mut oxcclRequest_t,
) -> oxcclResult_t {
    let a = reduce(sendbuff, recvbuff, count, datatype, op, root);
    nonblocking("oxcclReduceAsync", comm, a, request)
}

/// `oxcclAllGather`, started in the background.
#[no_mangle]
pub extern "C" fn oxcclAllGatherAsync(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    sendcount: usize,
    datatype: DataTypeArg,
    comm: oxcclComm_t,
    request: *mut oxcclRequest_t,
) -> oxcclResult_t {
    let a = allgather(sendbuff, recvbuff, sendcount, datatype);
    nonblocking("oxcclAllGatherAsync", comm, a, request)
}

/// `oxcclReduceScatter`, started in the background.
#[no_mangle]
pub extern "C" fn oxcclReduceScatterAsync(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    recvcount: usize,
    datatype: DataTypeArg,
    op: RedOpArg,
    comm: oxcclComm_t,
    request: *mut oxcclRequest_t,
) -> oxcclResult_t {
    let a = reduce_scatter(sendbuff, recvbuff, recvcount, datatype, op);
    nonblocking("oxcclReduceScatterAsync", comm, a, request)
}

/// `oxcclSend`, in the background. Sends and receives issued back to back start together
/// at the next `oxcclWait`/`oxcclTest` or blocking call (as an NCCL group), so a pair of
/// ranks can exchange without deadlock.
#[no_mangle]
pub extern "C" fn oxcclSendAsync(
    sendbuff: *const c_void,
    count: usize,
    datatype: DataTypeArg,
    peer: c_int,
    comm: oxcclComm_t,
    request: *mut oxcclRequest_t,
) -> oxcclResult_t {
    nonblocking(
        "oxcclSendAsync",
        comm,
        send(sendbuff, count, datatype, peer),
        request,
    )
}

/// `oxcclRecv`, in the background (grouped as `oxcclSendAsync`).
#[no_mangle]
pub extern "C" fn oxcclRecvAsync(
    recvbuff: *mut c_void,
    count: usize,
    datatype: DataTypeArg,
    peer: c_int,
    comm: oxcclComm_t,
    request: *mut oxcclRequest_t,
) -> oxcclResult_t {
    nonblocking(
        "oxcclRecvAsync",
        comm,
        recv(recvbuff, count, datatype, peer),
        request,
    )
}

/// `oxcclBarrier`, in the background.
#[no_mangle]
pub extern "C" fn oxcclBarrierAsync(
    comm: oxcclComm_t,
    request: *mut oxcclRequest_t,
) -> oxcclResult_t {
    nonblocking("oxcclBarrierAsync", comm, barrier(), request)
}
