//! The reduction kernels on byte buffers: `acc = op(acc, incoming)`,
//! `dst = op(local, incoming)`, the final division of `Avg` and the scaling of a pre-multiplied
//! sum (`dst = src * scalar`).
//!
//! The data type and operation are matched once per call; each (type, op) pair then runs its
//! own monomorphic loop (see `slices`), which the compiler vectorises. Buffers may start at
//! any address.
//!
//! Lengths: callers pass equal lengths that are whole multiples of `dtype.size()`. If they do
//! not, the kernels do not panic: they process the whole elements of the shortest buffer and
//! leave every other byte untouched.
//!
//! `f16`, `bf16` and the fp8 types are widened to `f32` in blocks, combined there and rounded
//! back once per call (round to nearest even), so each step of a reduction rounds exactly once.
//!
//! The bitwise operations combine the raw bits of each element as an unsigned integer of its
//! width. They are defined for integer types only and callers reject them for floats
//! ([`ReduceOp::check`]); a float that arrives anyway has its raw bits combined the same way,
//! which is deterministic and cannot fail.

use std::marker::PhantomData;
use std::ops::{BitAnd, BitOr, BitXor};

use bytemuck::Pod;

use crate::reduce::arith::{Arith, HalfFloat};
use crate::reduce::slices::{
    bytes_into, bytes_to, map_bytes, map_bytes_to, Half, Native, SliceKernel,
};
use crate::reduce::{Bf16, DataType, ReduceOp, F16, F8E4M3, F8E5M2};

/// Runs `$body` with `$f` bound to `$t`'s function for the arithmetic `$op` (`Avg` adds), one
/// monomorphic copy of `$body` per operation. `dispatch` has taken the bitwise operations
/// elsewhere before this runs; for them the arm does nothing, so no loop is compiled for them.
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
            ReduceOp::BAnd | ReduceOp::BOr | ReduceOp::BXor => {}
        }
    };
}

/// `acc[i] = op(acc[i], incoming[i])` for every element.
///
/// `Avg` adds (see [`finalize_avg`]); integers wrap; float `max`/`min` return NaN if either
/// side is NaN and order `-0.0` below `+0.0`; the bitwise operations act on the raw bits
/// (integer types only: see [`ReduceOp::check`]). Buffers may have any alignment. With unequal
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
/// `f64`: division in the type's own precision. `f16`/`bf16`/fp8: widened to `f32`, divided
/// and rounded once. `nranks == 0` leaves the buffer unchanged; a trailing partial element is
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
        DataType::F16 => avg_half::<F16>(buf, nranks),
        DataType::Bf16 => avg_half::<Bf16>(buf, nranks),
        DataType::F8E4M3 => avg_half::<F8E4M3>(buf, nranks),
        DataType::F8E5M2 => avg_half::<F8E5M2>(buf, nranks),
    }
}

fn avg_half<H: HalfFloat>(buf: &mut [u8], nranks: usize) {
    let d = nranks as f32;
    map_bytes::<H>(buf, |x| H::narrow(x.widen() / d))
}

/// `dst[i] = src[i] * scalar` for every element: the scaling of NCCL's pre-multiplied sum
/// (`ncclRedOpCreatePreMulSum`), applied to each rank's input before it is summed.
///
/// `scalar` is one element of `dtype` in native byte order. Integers multiply with
/// wrap-around; `f32` and `f64` in their own precision; `f16`, `bf16` and the fp8 types are
/// widened to `f32`, multiplied (exactly) and rounded once (nearest even, with the type's own
/// overflow rule). `dst` and `src` should have equal lengths that are a whole number of
/// elements; otherwise only the whole elements of the shorter one are written and every other
/// byte is left untouched. A `scalar` shorter than one element writes nothing; bytes past its
/// first element are ignored. Buffers may have any alignment.
pub fn scale_to(dtype: DataType, dst: &mut [u8], src: &[u8], scalar: &[u8]) {
    scale(dtype, dst, Some(src), scalar);
}

/// `buf[i] = buf[i] * scalar` for every element, with the rules of [`scale_to`].
pub fn scale_in_place(dtype: DataType, buf: &mut [u8], scalar: &[u8]) {
    scale(dtype, buf, None, scalar);
}

/// `dst = src * scalar`, or `dst *= scalar` without `src`.
fn scale(dtype: DataType, dst: &mut [u8], src: Option<&[u8]>, scalar: &[u8]) {
    match dtype {
        DataType::I8 => scale_native::<i8>(dst, src, scalar),
        DataType::U8 => scale_native::<u8>(dst, src, scalar),
        DataType::I32 => scale_native::<i32>(dst, src, scalar),
        DataType::U32 => scale_native::<u32>(dst, src, scalar),
        DataType::I64 => scale_native::<i64>(dst, src, scalar),
        DataType::U64 => scale_native::<u64>(dst, src, scalar),
        DataType::F32 => scale_native::<f32>(dst, src, scalar),
        DataType::F64 => scale_native::<f64>(dst, src, scalar),
        DataType::F16 => scale_half::<F16>(dst, src, scalar),
        DataType::Bf16 => scale_half::<Bf16>(dst, src, scalar),
        DataType::F8E4M3 => scale_half::<F8E4M3>(dst, src, scalar),
        DataType::F8E5M2 => scale_half::<F8E5M2>(dst, src, scalar),
    }
}

/// The first element of `bytes`, if it holds one.
fn first_element<T: Pod>(bytes: &[u8]) -> Option<T> {
    bytes
        .get(..std::mem::size_of::<T>())
        .map(bytemuck::pod_read_unaligned)
}

fn map_into_or_to<T: Pod>(dst: &mut [u8], src: Option<&[u8]>, f: impl Fn(T) -> T) {
    match src {
        Some(src) => map_bytes_to::<T>(dst, src, f),
        None => map_bytes::<T>(dst, f),
    }
}

fn scale_native<T: Arith>(dst: &mut [u8], src: Option<&[u8]>, scalar: &[u8]) {
    if let Some(s) = first_element::<T>(scalar) {
        map_into_or_to::<T>(dst, src, |x| T::mul(x, s));
    }
}

fn scale_half<H: HalfFloat>(dst: &mut [u8], src: Option<&[u8]>, scalar: &[u8]) {
    if let Some(s) = first_element::<H>(scalar) {
        let s = s.widen();
        map_into_or_to::<H>(dst, src, |x| H::narrow(x.widen() * s));
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
    if let Some(b) = BitOp::of(op) {
        // Raw bits as unsigned integers of the element's width: the same bits for signed and
        // unsigned types, and a harmless, deterministic answer for floats (which callers
        // reject before this).
        return match dtype.size() {
            1 => bitwise::<u8>(b, job),
            2 => bitwise::<u16>(b, job),
            4 => bitwise::<u32>(b, job),
            _ => bitwise::<u64>(b, job),
        };
    }
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
        DataType::F8E4M3 => half::<F8E4M3>(op, job),
        DataType::F8E5M2 => half::<F8E5M2>(op, job),
    }
}

/// A bitwise operation.
#[derive(Clone, Copy)]
enum BitOp {
    And,
    Or,
    Xor,
}

impl BitOp {
    fn of(op: ReduceOp) -> Option<BitOp> {
        match op {
            ReduceOp::BAnd => Some(BitOp::And),
            ReduceOp::BOr => Some(BitOp::Or),
            ReduceOp::BXor => Some(BitOp::Xor),
            ReduceOp::Sum | ReduceOp::Prod | ReduceOp::Max | ReduceOp::Min | ReduceOp::Avg => None,
        }
    }
}

fn bitwise<T>(b: BitOp, job: Job<'_>)
where
    T: Pod + BitAnd<Output = T> + BitOr<Output = T> + BitXor<Output = T>,
{
    match b {
        BitOp::And => job.run(Native(|x: T, y: T| x & y, PhantomData)),
        BitOp::Or => job.run(Native(|x: T, y: T| x | y, PhantomData)),
        BitOp::Xor => job.run(Native(|x: T, y: T| x ^ y, PhantomData)),
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
