//! The reduction kernels on byte buffers: `acc = op(acc, incoming)`,
//! `dst = op(local, incoming)` and the final division of `Avg`.
//!
//! The data type and operation are matched once per call; each (type, op) pair then runs its
//! own monomorphic loop (see `slices`), which the compiler vectorises. Buffers may start at
//! any address.
//!
//! Lengths: callers pass equal lengths that are whole multiples of `dtype.size()`. If they do
//! not, the kernels do not panic: they process the whole elements of the shortest buffer and
//! leave every other byte untouched.
//!
//! `f16` and `bf16` are widened to `f32` in blocks, combined there and rounded back once per
//! call (round to nearest even), so each step of a reduction rounds exactly once.

use std::marker::PhantomData;

use crate::reduce::arith::{Arith, HalfFloat};
use crate::reduce::slices::{bytes_into, bytes_to, map_bytes, Half, Native, SliceKernel};
use crate::reduce::{Bf16, DataType, ReduceOp, F16};

/// Runs `$body` with `$f` bound to `$t`'s function for `$op` (`Avg` adds), one monomorphic
/// copy of `$body` per operation.
macro_rules! with_op {
    ($t:ty, $op:expr, |$f:ident| $body:expr) => {
        match $op.step_op() {
            ReduceOp::Sum | ReduceOp::Avg => {
                let $f = <$t as Arith>::add;
                $body
            }
            ReduceOp::Prod => {
                let $f = <$t as Arith>::mul;
                $body
            }
            ReduceOp::Max => {
                let $f = <$t as Arith>::max;
                $body
            }
            ReduceOp::Min => {
                let $f = <$t as Arith>::min;
                $body
            }
        }
    };
}

/// `acc[i] = op(acc[i], incoming[i])` for every element.
///
/// `Avg` adds (see [`finalize_avg`]); integers wrap; float `max`/`min` return NaN if either
/// side is NaN and order `-0.0` below `+0.0`. Buffers may have any alignment. With unequal
/// lengths or a length that is not a multiple of `dtype.size()`, only the whole elements of
/// the shorter buffer are reduced.
pub fn reduce_into(dtype: DataType, op: ReduceOp, acc: &mut [u8], incoming: &[u8]) {
    dispatch(dtype, op, Job::Into { acc, incoming });
}

/// `dst[i] = op(local[i], incoming[i])` for every element, with the rules of
/// [`reduce_into`]. With unequal lengths only the whole elements of the shortest of the
/// three buffers are written.
pub fn reduce_to(dtype: DataType, op: ReduceOp, dst: &mut [u8], local: &[u8], incoming: &[u8]) {
    dispatch(
        dtype,
        op,
        Job::To {
            dst,
            local,
            incoming,
        },
    );
}

/// Divides every element of `buf` by `nranks`, the last step of [`ReduceOp::Avg`].
///
/// Integers: truncating division (toward zero) of the wrapped sum, as NCCL does. `f32` and
/// `f64`: division in the type's own precision. `f16`/`bf16`: widened to `f32`, divided and
/// rounded once. `nranks == 0` leaves the buffer unchanged; a trailing partial element is
/// left untouched.
pub fn finalize_avg(dtype: DataType, buf: &mut [u8], nranks: usize) {
    if nranks == 0 {
        return;
    }
    match dtype {
        DataType::I8 => map_bytes::<i8>(buf, |x| x.div_count(nranks)),
        DataType::U8 => map_bytes::<u8>(buf, |x| x.div_count(nranks)),
        DataType::I32 => map_bytes::<i32>(buf, |x| x.div_count(nranks)),
        DataType::U32 => map_bytes::<u32>(buf, |x| x.div_count(nranks)),
        DataType::I64 => map_bytes::<i64>(buf, |x| x.div_count(nranks)),
        DataType::U64 => map_bytes::<u64>(buf, |x| x.div_count(nranks)),
        DataType::F32 => {
            let d = nranks as f32;
            map_bytes::<f32>(buf, |x| x / d)
        }
        DataType::F64 => {
            let d = nranks as f64;
            map_bytes::<f64>(buf, |x| x / d)
        }
        DataType::F16 => {
            let d = nranks as f32;
            map_bytes::<F16>(buf, |x| F16::narrow(x.widen() / d))
        }
        DataType::Bf16 => {
            let d = nranks as f32;
            map_bytes::<Bf16>(buf, |x| Bf16::narrow(x.widen() / d))
        }
    }
}

/// One call's buffers, carried through the type and op dispatch.
enum Job<'a> {
    Into {
        acc: &'a mut [u8],
        incoming: &'a [u8],
    },
    To {
        dst: &'a mut [u8],
        local: &'a [u8],
        incoming: &'a [u8],
    },
}

impl Job<'_> {
    fn run<K: SliceKernel>(self, k: K) {
        match self {
            Job::Into { acc, incoming } => bytes_into(&k, acc, incoming),
            Job::To {
                dst,
                local,
                incoming,
            } => bytes_to(&k, dst, local, incoming),
        }
    }
}

fn dispatch(dtype: DataType, op: ReduceOp, job: Job<'_>) {
    match dtype {
        DataType::I8 => native::<i8>(op, job),
        DataType::U8 => native::<u8>(op, job),
        DataType::I32 => native::<i32>(op, job),
        DataType::U32 => native::<u32>(op, job),
        DataType::I64 => native::<i64>(op, job),
        DataType::U64 => native::<u64>(op, job),
        DataType::F32 => native::<f32>(op, job),
        DataType::F64 => native::<f64>(op, job),
        DataType::F16 => f16(op, job),
        DataType::Bf16 => half::<Bf16>(op, job),
    }
}

fn native<T: Arith>(op: ReduceOp, job: Job<'_>) {
    with_op!(T, op, |f| job.run(Native(f, PhantomData)))
}

fn half<H: HalfFloat>(op: ReduceOp, job: Job<'_>) {
    with_op!(f32, op, |f| job.run(Half::<H, _>(f, PhantomData)))
}

fn f16(op: ReduceOp, job: Job<'_>) {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::reduce::x86::F16c;
        with_op!(f32, op, |f| match F16c::detect(f) {
            Some(k) => job.run(k),
            None => job.run(Half::<F16, _>(f, PhantomData)),
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    half::<F16>(op, job)
}

#[cfg(test)]
#[path = "kernel_tests.rs"]
mod tests;
