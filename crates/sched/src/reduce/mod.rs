//! Typed reduction kernels: the data types and operations oxccl reduces, the loops that
//! combine a received chunk with a local one, and the bulk copy the engine and the
//! transports use ([`copy_bytes`]).
//!
//! Owns: [`DataType`], [`ReduceOp`], [`Element`], the f16/bf16/fp8 conversions, the
//! kernels and the copy.
//! May not touch: transports, schedules, the engine.
//!
//! Every kernel computes `op(local, incoming)` element by element in one fixed order, so
//! every rank that applies the same steps gets bitwise identical results. f16, bf16 and the
//! fp8 types are widened to f32 for each step and rounded once per step (round to nearest
//! even). The bitwise operations are defined for integer types only ([`ReduceOp::check`]).

mod arith;
mod copy;
mod dtype;
mod fp8;
mod half;
mod kernels;
mod slices;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use copy::copy_bytes;
pub use dtype::{DataType, Element, ReduceOp};
pub use fp8::{F8E4M3, F8E5M2};
pub use half::{Bf16, F16};
pub use kernels::{finalize_avg, reduce_into, reduce_to, scale_in_place, scale_to};
