//! Entry points for ids, communicators and errors: version, unique id, init (from an id or
//! the environment), split, destroy, abort, count, rank, async error, error strings.

use std::os::raw::{c_char, c_int};

use oxccl_core::{Communicator, Config, Error, UniqueId};

use crate::boundary::{
    comm_last_error, guard, guard_str, out_ptr, thread_last_error, write_out, Ctx,
};
use crate::config::{apply, oxcclConfig_t};
use crate::handles;
use crate::types::{
    code_of, describe, oxcclComm_t, oxcclResult_t, oxcclUniqueId, ResultArg, OXCCL_SPLIT_NOCOLOR,
    OXCCL_UNIQUE_ID_BYTES, OXCCL_VERSION_CODE,
};

/// Resolves `comm` and makes its failures this communicator's last error too.
pub(crate) fn resolve(
    ctx: &mut Ctx,
    comm: oxcclComm_t,
) -> oxccl_core::Result<std::sync::Arc<handles::CommEntry>> {
    let e = handles::comm(comm)?;
    ctx.comm = Some(e.clone());
    Ok(e)
}

/// Writes `OXCCL_VERSION_CODE` (major * 10000 + minor * 100 + patch) to `version`.
#[no_mangle]
pub extern "C" fn oxcclGetVersion(version: *mut c_int) -> oxcclResult_t {
    guard("oxcclGetVersion", |_| {
        out_ptr(version, "version")?;
        // SAFETY: checked non-null; the caller passes an int to write.
        unsafe { write_out(version, OXCCL_VERSION_CODE) };
        Ok(())
    })
}

/// Creates a job id and starts its rendezvous store in this process (listening on
/// `OXCCL_ROOT_ADDR`, else the interface `OXCCL_SOCKET_IFNAME` picks). Call it on one rank
/// and ship the 128 bytes to the others.
#[no_mangle]
pub extern "C" fn oxcclGetUniqueId(uniqueId: *mut oxcclUniqueId) -> oxcclResult_t {
    guard("oxcclGetUniqueId", |_| {
        out_ptr(uniqueId, "uniqueId")?;
        let id = UniqueId::new()?;
        let mut out = oxcclUniqueId {
            internal: [0; OXCCL_UNIQUE_ID_BYTES],
        };
        for (o, b) in out.internal.iter_mut().zip(id.as_bytes()) {
            *o = *b as c_char;
        }
        // SAFETY: checked non-null; the caller passes an oxcclUniqueId to fill.
        unsafe { write_out(uniqueId, out) };
        Ok(())
    })
}

/// Joins the communicator of `nranks` ranks named by `commId` as `rank` (0..nranks-1).
/// Collective: every rank calls it with the same id and count.
#[no_mangle]
pub extern "C" fn oxcclCommInitRank(
    comm: *mut oxcclComm_t,
    nranks: c_int,
    commId: oxcclUniqueId,
    rank: c_int,
) -> oxcclResult_t {
    guard("oxcclCommInitRank", |_| {
        out_ptr(comm, "comm")?;
        check_rank(nranks, rank)?;
        // SAFETY: NULL: no config.
        unsafe { init_rank(comm, nranks, &commId, rank, std::ptr::null()) }
    })
}

/// As `oxcclCommInitRank`, with settings: the fields `config` sets override the `OXCCL_*`
/// variables (NULL: the variables alone). Initialize `config` with
/// `OXCCL_CONFIG_INITIALIZER`.
#[no_mangle]
pub extern "C" fn oxcclCommInitRankConfig(
    comm: *mut oxcclComm_t,
    nranks: c_int,
    commId: oxcclUniqueId,
    rank: c_int,
    config: *mut oxcclConfig_t,
) -> oxcclResult_t {
    guard("oxcclCommInitRankConfig", |_| {
        out_ptr(comm, "comm")?;
        check_rank(nranks, rank)?;
        // SAFETY: the caller passes NULL or an initialized config.
        unsafe { init_rank(comm, nranks, &commId, rank, config) }
    })
}

fn check_rank(nranks: c_int, rank: c_int) -> oxccl_core::Result<()> {
    if nranks < 1 {
        return Err(Error::invalid_argument(format!(
            "rank {rank}: nranks {nranks} must be at least 1"
        )));
    }
    if rank < 0 || rank >= nranks {
        return Err(Error::invalid_argument(format!(
            "rank {rank} is out of range for {nranks} ranks (0..={})",
            nranks - 1
        )));
    }
    Ok(())
}

/// Joins as `rank` with the environment's settings and `config`'s.
///
/// # Safety
/// `comm` checked non-null; `config` NULL or an initialized config.
unsafe fn init_rank(
    comm: *mut oxcclComm_t,
    nranks: c_int,
    commId: &oxcclUniqueId,
    rank: c_int,
    config: *const oxcclConfig_t,
) -> oxccl_core::Result<()> {
    let bytes: Vec<u8> = commId.internal.iter().map(|&c| c as u8).collect();
    let id = UniqueId::from_bytes(&bytes).map_err(|e| e.context(format!("rank {rank}: commId")))?;
    // SAFETY: forwarded.
    let cfg = unsafe { apply(config, Config::from_env()?) }
        .map_err(|e| e.context(format!("rank {rank}: config")))?;
    let c = Communicator::init_with_config(&id, rank as usize, nranks as usize, cfg)?;
    let h = handles::add_comm(c);
    // SAFETY: checked non-null by the caller.
    unsafe { write_out(comm, h) };
    Ok(())
}

/// Joins the communicator that the launcher's environment describes (rankrun's `OXCCL_*`
/// variables; torchrun, Slurm and Open MPI variables where oxccl's `from_env` reads them).
#[no_mangle]
pub extern "C" fn oxcclCommInitFromEnv(comm: *mut oxcclComm_t) -> oxcclResult_t {
    guard("oxcclCommInitFromEnv", |_| {
        out_ptr(comm, "comm")?;
        let c = Communicator::from_env()?;
        let h = handles::add_comm(c);
        // SAFETY: checked non-null.
        unsafe { write_out(comm, h) };
        Ok(())
    })
}

/// Collective over `comm`: ranks with the same `color` form a new communicator, ordered by
/// `key` then by rank. `color` `OXCCL_SPLIT_NOCOLOR` (-1) joins none and gets NULL. The new
/// communicator has `comm`'s settings, with the fields `config` sets (NULL: inherit all).
#[no_mangle]
pub extern "C" fn oxcclCommSplit(
    comm: oxcclComm_t,
    color: c_int,
    key: c_int,
    newcomm: *mut oxcclComm_t,
    config: *mut oxcclConfig_t,
) -> oxcclResult_t {
    guard("oxcclCommSplit", |ctx| {
        let e = resolve(ctx, comm)?;
        out_ptr(newcomm, "newcomm")?;
        if color < OXCCL_SPLIT_NOCOLOR {
            return Err(Error::invalid_argument(format!(
                "rank {}: color {color} must be >= 0, or OXCCL_SPLIT_NOCOLOR (-1)",
                e.comm.rank()
            )));
        }
        let cfg = if config.is_null() {
            None
        } else {
            // SAFETY: the caller passes NULL or an initialized config.
            Some(
                unsafe { apply(config, e.comm.config().clone()) }
                    .map_err(|x| x.context(format!("rank {}: config", e.comm.rank())))?,
            )
        };
        let h = match e.comm.split_with_config(color, key, cfg)? {
            Some(c) => handles::add_comm(c),
            None => std::ptr::null_mut(),
        };
        // SAFETY: checked non-null.
        unsafe { write_out(newcomm, h) };
        Ok(())
    })
}

/// Frees `comm` after its queued calls finish (requests still outstanding keep it alive
/// until they are waited on). NULL is a no-op; a destroyed handle is `oxcclInvalidUsage`.
#[no_mangle]
pub extern "C" fn oxcclCommDestroy(comm: oxcclComm_t) -> oxcclResult_t {
    guard("oxcclCommDestroy", |_| {
        if comm.is_null() {
            return Ok(());
        }
        drop(handles::remove_comm(comm)?);
        Ok(())
    })
}

/// Aborts `comm`: its blocked and queued calls fail promptly, peers waiting on this rank
/// get `oxcclRemoteError`, and the handle is freed. NULL is a no-op.
#[no_mangle]
pub extern "C" fn oxcclCommAbort(comm: oxcclComm_t) -> oxcclResult_t {
    guard("oxcclCommAbort", |_| {
        if comm.is_null() {
            return Ok(());
        }
        let e = handles::remove_comm(comm)?;
        e.comm.abort();
        drop(e);
        Ok(())
    })
}

/// Writes the number of ranks of `comm` to `count`.
#[no_mangle]
pub extern "C" fn oxcclCommCount(comm: oxcclComm_t, count: *mut c_int) -> oxcclResult_t {
    guard("oxcclCommCount", |ctx| {
        let e = resolve(ctx, comm)?;
        out_ptr(count, "count")?;
        let n = c_int::try_from(e.comm.size())
            .map_err(|_| Error::internal("rank count exceeds int"))?;
        // SAFETY: checked non-null.
        unsafe { write_out(count, n) };
        Ok(())
    })
}

/// Writes this process's rank in `comm` to `rank`.
#[no_mangle]
pub extern "C" fn oxcclCommUserRank(comm: oxcclComm_t, rank: *mut c_int) -> oxcclResult_t {
    guard("oxcclCommUserRank", |ctx| {
        let e = resolve(ctx, comm)?;
        out_ptr(rank, "rank")?;
        let r = c_int::try_from(e.comm.rank()).map_err(|_| Error::internal("rank exceeds int"))?;
        // SAFETY: checked non-null.
        unsafe { write_out(rank, r) };
        Ok(())
    })
}

/// Writes the first error `comm` met (`oxcclSuccess` if none) to `asyncError`. Once set,
/// every later call on `comm` fails with it; destroy or abort the communicator.
#[no_mangle]
pub extern "C" fn oxcclCommGetAsyncError(
    comm: oxcclComm_t,
    asyncError: *mut oxcclResult_t,
) -> oxcclResult_t {
    guard("oxcclCommGetAsyncError", |ctx| {
        let e = resolve(ctx, comm)?;
        out_ptr(asyncError, "asyncError")?;
        let code = e
            .comm
            .async_error()
            .map_or(oxcclResult_t::oxcclSuccess, |err| code_of(err.kind()));
        // SAFETY: checked non-null.
        unsafe { write_out(asyncError, code) };
        Ok(())
    })
}

/// A static description of `result` ("unknown result code" for a value outside the list).
#[no_mangle]
pub extern "C" fn oxcclGetErrorString(result: ResultArg) -> *const c_char {
    guard_str(|| describe(result).as_ptr(), c"unknown result code")
}

/// The message of the last failed call: the calling thread's when `comm` is NULL, else the
/// communicator's. Empty when there is none. The string belongs to the calling thread (a
/// communicator's message is copied for it): it stays valid until this thread's next
/// `oxcclGetLastError` or its next failed call, whatever other threads do meanwhile.
#[no_mangle]
pub extern "C" fn oxcclGetLastError(comm: oxcclComm_t) -> *const c_char {
    guard_str(
        || {
            if comm.is_null() {
                return thread_last_error();
            }
            match handles::comm(comm) {
                Ok(e) => comm_last_error(&e),
                Err(_) => {
                    c"oxcclGetLastError: the communicator handle is not live (destroyed, aborted, or never created)"
                        .as_ptr()
                }
            }
        },
        c"oxcclGetLastError: internal error",
    )
}
