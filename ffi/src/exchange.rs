//! The exchange collectives' entry points: alltoall(v), gather, scatter, allgatherv and
//! reduce-scatterv, blocking and `...Async`, in the argument order of NCCL 2.28
//! (`ncclAlltoAll`, `ncclGather`, `ncclScatter`) and RCCL (`ncclAllToAllv`).

use std::os::raw::{c_int, c_void};

use oxccl_core::{Block, Blocks, CollKind, Error, Result};

use crate::boundary::{guard, Ctx};
use crate::coll::{blocking, nonblocking, Args};
use crate::comm::resolve as resolve_comm;
use crate::types::{oxcclComm_t, oxcclRequest_t, oxcclResult_t, DataTypeArg, RedOpArg};

/// An array of one `size_t` per rank, read from C.
///
/// # Safety
/// `p`, when not NULL, must point to `n` readable `size_t` values.
unsafe fn per_rank(p: *const usize, n: usize, what: &str) -> Result<Vec<usize>> {
    if p.is_null() {
        return Err(Error::invalid_argument(format!("{what} is NULL")));
    }
    // SAFETY: the caller's contract: one entry per rank.
    Ok(unsafe { std::slice::from_raw_parts(p, n) }.to_vec())
}

fn blocks(counts: &[usize], displs: &[usize]) -> Vec<Block> {
    counts
        .iter()
        .zip(displs)
        .map(|(&len, &off)| Block { off, len })
        .collect()
}

fn packed(counts: &[usize]) -> Vec<Block> {
    let mut off = 0usize;
    counts
        .iter()
        .map(|&len| {
            let b = Block { off, len };
            off = off.saturating_add(len);
            b
        })
        .collect()
}

/// The count arrays of an uneven call, read once the communicator's size is known.
#[derive(Clone, Copy)]
enum Vectors {
    AllToAllV {
        sendcounts: *const usize,
        sdispls: *const usize,
        recvcounts: *const usize,
        rdispls: *const usize,
    },
    AllGatherV {
        recvcounts: *const usize,
        displs: *const usize,
    },
    ReduceScatterV {
        recvcounts: *const usize,
    },
}

/// Reads `v` for `comm`'s size into `a.blocks`, and runs `a`.
fn uneven(
    ctx: &mut Ctx,
    comm: oxcclComm_t,
    mut a: Args,
    v: Vectors,
    request: Option<*mut oxcclRequest_t>,
) -> Result<()> {
    let e = resolve_comm(ctx, comm)?;
    let (rank, n) = (e.comm.rank(), e.comm.size());
    let what = oxccl_core::engine::kind_name(a.kind);
    let ctx_err =
        |x: Error| Error::invalid_argument(format!("rank {rank}: {what}: {}", x.message()));
    drop(e);
    let read = |p: *const usize, what: &str| {
        // SAFETY: the C caller passes one entry per rank in each array, as the API says.
        unsafe { per_rank(p, n, what) }.map_err(ctx_err)
    };
    a.blocks = match v {
        Vectors::AllToAllV {
            sendcounts,
            sdispls,
            recvcounts,
            rdispls,
        } => Blocks {
            send: blocks(&read(sendcounts, "sendcounts")?, &read(sdispls, "sdispls")?),
            recv: blocks(&read(recvcounts, "recvcounts")?, &read(rdispls, "rdispls")?),
        },
        Vectors::AllGatherV { recvcounts, displs } => Blocks {
            send: Vec::new(),
            recv: blocks(&read(recvcounts, "recvcounts")?, &read(displs, "displs")?),
        },
        Vectors::ReduceScatterV { recvcounts } => Blocks {
            send: packed(&read(recvcounts, "recvcounts")?),
            recv: Vec::new(),
        },
    };
    crate::coll::run(ctx, comm, a, request)
}

fn args(kind: CollKind, s: *const c_void, r: *mut c_void, count: usize, dt: DataTypeArg) -> Args {
    Args {
        kind,
        send: s,
        recv: r,
        count,
        dtype: dt,
        op: None,
        root: None,
        blocks: Blocks::default(),
    }
}

fn rooted(
    kind: CollKind,
    s: *const c_void,
    r: *mut c_void,
    count: usize,
    dt: DataTypeArg,
    root: c_int,
) -> Args {
    Args {
        root: Some(root),
        ..args(kind, s, r, count, dt)
    }
}

/// Sends block j (`count` elements) of `sendbuff` to rank j and receives rank i's block
/// into block i of `recvbuff` (both `nranks * count` elements; they must not overlap).
#[no_mangle]
pub extern "C" fn oxcclAlltoAll(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: DataTypeArg,
    comm: oxcclComm_t,
) -> oxcclResult_t {
    let a = args(CollKind::AllToAll, sendbuff, recvbuff, count, datatype);
    blocking("oxcclAlltoAll", comm, a)
}

/// `oxcclAlltoAll`, started in the background.
#[no_mangle]
pub extern "C" fn oxcclAlltoAllAsync(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: DataTypeArg,
    comm: oxcclComm_t,
    request: *mut oxcclRequest_t,
) -> oxcclResult_t {
    let a = args(CollKind::AllToAll, sendbuff, recvbuff, count, datatype);
    nonblocking("oxcclAlltoAllAsync", comm, a, request)
}

/// Sends `sendcounts[j]` elements at `sendbuff + sdispls[j]` to rank j and receives
/// `recvcounts[i]` elements from rank i at `recvbuff + rdispls[i]` (counts and
/// displacements in elements, one entry per rank; receive blocks must not overlap). Rank
/// j's `recvcounts[i]` must equal rank i's `sendcounts[j]`: both ranks of a pair that
/// disagree fail with `oxcclInvalidUsage`.
#[no_mangle]
pub extern "C" fn oxcclAlltoAllv(
    sendbuff: *const c_void,
    sendcounts: *const usize,
    sdispls: *const usize,
    recvbuff: *mut c_void,
    recvcounts: *const usize,
    rdispls: *const usize,
    datatype: DataTypeArg,
    comm: oxcclComm_t,
) -> oxcclResult_t {
    let a = args(CollKind::AllToAllV, sendbuff, recvbuff, 0, datatype);
    let v = Vectors::AllToAllV {
        sendcounts,
        sdispls,
        recvcounts,
        rdispls,
    };
    guard("oxcclAlltoAllv", |ctx| uneven(ctx, comm, a, v, None))
}

/// `oxcclAlltoAllv`, started in the background (the count arrays are read before it
/// returns).
#[no_mangle]
pub extern "C" fn oxcclAlltoAllvAsync(
    sendbuff: *const c_void,
    sendcounts: *const usize,
    sdispls: *const usize,
    recvbuff: *mut c_void,
    recvcounts: *const usize,
    rdispls: *const usize,
    datatype: DataTypeArg,
    comm: oxcclComm_t,
    request: *mut oxcclRequest_t,
) -> oxcclResult_t {
    let a = args(CollKind::AllToAllV, sendbuff, recvbuff, 0, datatype);
    let v = Vectors::AllToAllV {
        sendcounts,
        sdispls,
        recvcounts,
        rdispls,
    };
    guard("oxcclAlltoAllvAsync", |ctx| {
        uneven(ctx, comm, a, v, Some(request))
    })
}

/// Gathers `sendcount` elements from every rank into the root's `recvbuff` (`nranks *
/// sendcount` elements, in rank order; read at the root only). In place at the root:
/// `sendbuff == recvbuff + root * sendcount`.
#[no_mangle]
pub extern "C" fn oxcclGather(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    sendcount: usize,
    datatype: DataTypeArg,
    root: c_int,
    comm: oxcclComm_t,
) -> oxcclResult_t {
    let a = rooted(
        CollKind::Gather,
        sendbuff,
        recvbuff,
        sendcount,
        datatype,
        root,
    );
    blocking("oxcclGather", comm, a)
}

/// `oxcclGather`, started in the background.
#[no_mangle]
pub extern "C" fn oxcclGatherAsync(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    sendcount: usize,
    datatype: DataTypeArg,
    root: c_int,
    comm: oxcclComm_t,
    request: *mut oxcclRequest_t,
) -> oxcclResult_t {
    let a = rooted(
        CollKind::Gather,
        sendbuff,
        recvbuff,
        sendcount,
        datatype,
        root,
    );
    nonblocking("oxcclGatherAsync", comm, a, request)
}

/// Sends block r (`recvcount` elements) of the root's `sendbuff` (`nranks * recvcount`
/// elements, read at the root only) to rank r's `recvbuff`. In place at the root:
/// `recvbuff == sendbuff + root * recvcount`.
#[no_mangle]
pub extern "C" fn oxcclScatter(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    recvcount: usize,
    datatype: DataTypeArg,
    root: c_int,
    comm: oxcclComm_t,
) -> oxcclResult_t {
    let a = rooted(
        CollKind::Scatter,
        sendbuff,
        recvbuff,
        recvcount,
        datatype,
        root,
    );
    blocking("oxcclScatter", comm, a)
}

/// `oxcclScatter`, started in the background.
#[no_mangle]
pub extern "C" fn oxcclScatterAsync(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    recvcount: usize,
    datatype: DataTypeArg,
    root: c_int,
    comm: oxcclComm_t,
    request: *mut oxcclRequest_t,
) -> oxcclResult_t {
    let a = rooted(
        CollKind::Scatter,
        sendbuff,
        recvbuff,
        recvcount,
        datatype,
        root,
    );
    nonblocking("oxcclScatterAsync", comm, a, request)
}

/// Gathers every rank's `sendbuff` into every rank's `recvbuff`, rank i's block
/// (`recvcounts[i]` elements) at `displs[i]` (in elements). Every rank passes the same
/// arrays, and `sendcount == recvcounts[rank]`. In place: `sendbuff == recvbuff +
/// displs[rank]`.
#[no_mangle]
pub extern "C" fn oxcclAllGatherv(
    sendbuff: *const c_void,
    sendcount: usize,
    recvbuff: *mut c_void,
    recvcounts: *const usize,
    displs: *const usize,
    datatype: DataTypeArg,
    comm: oxcclComm_t,
) -> oxcclResult_t {
    let a = args(
        CollKind::AllGatherV,
        sendbuff,
        recvbuff,
        sendcount,
        datatype,
    );
    let v = Vectors::AllGatherV { recvcounts, displs };
    guard("oxcclAllGatherv", |ctx| uneven(ctx, comm, a, v, None))
}

/// `oxcclAllGatherv`, started in the background (the arrays are read before it returns).
#[no_mangle]
pub extern "C" fn oxcclAllGathervAsync(
    sendbuff: *const c_void,
    sendcount: usize,
    recvbuff: *mut c_void,
    recvcounts: *const usize,
    displs: *const usize,
    datatype: DataTypeArg,
    comm: oxcclComm_t,
    request: *mut oxcclRequest_t,
) -> oxcclResult_t {
    let a = args(
        CollKind::AllGatherV,
        sendbuff,
        recvbuff,
        sendcount,
        datatype,
    );
    let v = Vectors::AllGatherV { recvcounts, displs };
    guard("oxcclAllGathervAsync", |ctx| {
        uneven(ctx, comm, a, v, Some(request))
    })
}

/// Reduces every rank's `sendbuff` (the ranks' blocks end to end in rank order, block i
/// of `recvcounts[i]` elements) with `op` and leaves block `rank` in `recvbuff`
/// (MPI_Reduce_scatter). Every rank passes the same counts. In place: `recvbuff ==
/// sendbuff + recvcounts[0] + ... + recvcounts[rank-1]`.
#[no_mangle]
pub extern "C" fn oxcclReduceScatterv(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    recvcounts: *const usize,
    datatype: DataTypeArg,
    op: RedOpArg,
    comm: oxcclComm_t,
) -> oxcclResult_t {
    let a = Args {
        op: Some(op),
        ..args(CollKind::ReduceScatterV, sendbuff, recvbuff, 0, datatype)
    };
    let v = Vectors::ReduceScatterV { recvcounts };
    guard("oxcclReduceScatterv", |ctx| uneven(ctx, comm, a, v, None))
}

/// `oxcclReduceScatterv`, started in the background (the counts are read before it
/// returns).
#[no_mangle]
pub extern "C" fn oxcclReduceScattervAsync(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    recvcounts: *const usize,
    datatype: DataTypeArg,
    op: RedOpArg,
    comm: oxcclComm_t,
    request: *mut oxcclRequest_t,
) -> oxcclResult_t {
    let a = Args {
        op: Some(op),
        ..args(CollKind::ReduceScatterV, sendbuff, recvbuff, 0, datatype)
    };
    let v = Vectors::ReduceScatterV { recvcounts };
    guard("oxcclReduceScattervAsync", |ctx| {
        uneven(ctx, comm, a, v, Some(request))
    })
}
