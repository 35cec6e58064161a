//! `oxcclRedOpCreatePreMulSum` / `oxcclRedOpDestroy` (NCCL's pre-multiplied sums): an op
//! number, owned by one communicator, that sums every rank's input times a scalar of one
//! data type. Numbers are unique in the process, so an op used on a communicator that did
//! not create it is named as such.

use std::collections::BTreeSet;
use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use oxccl_core::{DataType, Error, ReduceOp, Result};

use crate::boundary::{guard, out_ptr, write_out};
use crate::comm::resolve as resolve_comm;
use crate::handles::CommEntry;
use crate::types::{
    data_type, oxcclComm_t, oxcclNumOps, oxcclResult_t, red_op, DataTypeArg, RedOpArg,
};

/// Where the scalar of a pre-multiplied sum lives, numbered as NCCL's
/// `ncclScalarResidence_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum oxcclScalarResidence_t {
    /// In device memory, read when the call runs: oxccl has no device memory, so this is
    /// refused with `oxcclInvalidArgument`.
    oxcclScalarDevice = 0,
    /// In host memory, read once by `oxcclRedOpCreatePreMulSum`.
    oxcclScalarHostImmediate = 1,
}

/// `oxcclScalarResidence_t` as an argument (any `int` a caller passes is checked).
pub type ResidenceArg = c_int;

static NEXT_OP: AtomicI32 = AtomicI32::new(oxcclNumOps);
static LIVE: Mutex<BTreeSet<c_int>> = Mutex::new(BTreeSet::new());

fn live() -> std::sync::MutexGuard<'static, BTreeSet<c_int>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// The op `raw` for a call of `dtype` on `e`: a built-in one, or one of `e`'s pre-multiplied
/// sums (as `Sum` with its scalar).
pub(crate) fn resolve_op(
    e: &CommEntry,
    raw: RedOpArg,
    dtype: DataType,
) -> Result<(ReduceOp, Option<[u8; 8]>)> {
    if raw < oxcclNumOps {
        return Ok((red_op(raw)?, None));
    }
    let ops = e.premul.lock().unwrap_or_else(|p| p.into_inner());
    match ops.get(&raw) {
        Some(&(t, s)) if t == dtype => Ok((ReduceOp::Sum, Some(s))),
        Some(&(t, _)) => Err(Error::invalid_argument(format!(
            "op {raw} is a pre-multiplied sum of {}, used with {}",
            t.name(),
            dtype.name()
        ))),
        None if live().contains(&raw) => Err(Error::invalid_argument(format!(
            "op {raw} is a pre-multiplied sum of another communicator"
        ))),
        None => Err(Error::invalid_argument(format!(
            "op {raw} is not an oxcclRedOp_t (valid: 0..=7, oxcclSum..oxcclBxor, or an op \
             of oxcclRedOpCreatePreMulSum not yet destroyed)"
        ))),
    }
}

/// Creates an op that sums every rank's input times `*scalar` (one element of `datatype`),
/// for calls of `datatype` on `comm`; writes its number to `op`. The scalar is read now
/// (`oxcclScalarHostImmediate`). Each rank scales its own input once, rounding once, so all
/// ranks get bitwise identical results. Destroy it with `oxcclRedOpDestroy`.
#[no_mangle]
pub extern "C" fn oxcclRedOpCreatePreMulSum(
    op: *mut RedOpArg,
    scalar: *mut c_void,
    datatype: DataTypeArg,
    residence: ResidenceArg,
    comm: oxcclComm_t,
) -> oxcclResult_t {
    guard("oxcclRedOpCreatePreMulSum", |ctx| {
        let e = resolve_comm(ctx, comm)?;
        let rank = e.comm.rank();
        let bad = |m: String| Error::invalid_argument(format!("rank {rank}: {m}"));
        out_ptr(op, "op")?;
        let dtype = data_type(datatype).map_err(|x| bad(x.message().to_string()))?;
        match residence {
            1 => {}
            0 => {
                return Err(bad(
                    "residence oxcclScalarDevice: oxccl reads scalars from host memory only \
                     (use oxcclScalarHostImmediate)"
                        .into(),
                ))
            }
            r => {
                return Err(bad(format!(
                    "residence {r} is not an oxcclScalarResidence_t (valid: 0, 1)"
                )))
            }
        }
        if scalar.is_null() {
            return Err(bad("scalar is NULL".into()));
        }
        let mut s = [0u8; 8];
        // SAFETY: the caller passes one element of `datatype` at `scalar`.
        unsafe { std::ptr::copy_nonoverlapping(scalar as *const u8, s.as_mut_ptr(), dtype.size()) };
        let n = NEXT_OP.fetch_add(1, Ordering::Relaxed);
        if n < oxcclNumOps {
            return Err(bad(
                "no pre-multiplied sum numbers left in this process".into()
            ));
        }
        e.premul
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(n, (dtype, s));
        live().insert(n);
        // SAFETY: checked non-null.
        unsafe { write_out(op, n) };
        Ok(())
    })
}

/// Destroys an op of `oxcclRedOpCreatePreMulSum` on `comm`; calls may not use it after.
#[no_mangle]
pub extern "C" fn oxcclRedOpDestroy(op: RedOpArg, comm: oxcclComm_t) -> oxcclResult_t {
    guard("oxcclRedOpDestroy", |ctx| {
        let e = resolve_comm(ctx, comm)?;
        let rank = e.comm.rank();
        let gone = e
            .premul
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&op);
        if gone.is_none() {
            return Err(Error::invalid_argument(format!(
                "rank {rank}: op {op} is not a pre-multiplied sum of this communicator"
            )));
        }
        live().remove(&op);
        Ok(())
    })
}
