//! Typed reduction kernels: the data types and operations oxccl reduces, and the loops that
//! combine a received chunk with a local one.
//!
//! Owns: [`DataType`], [`ReduceOp`], [`Element`], the f16/bf16 conversions and the kernels.
//! May not touch: transports, schedules, the engine.
//!
//! Every kernel computes `op(local, incoming)` element by element in one fixed order, so
//! every rank that applies the same steps gets bitwise identical results. f16 and bf16 are
//! widened to f32 for each step and rounded once per step (round to nearest even).

mod arith;
mod dtype;
mod half;
mod kernels;
mod slices;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use dtype::{DataType, Element, ReduceOp};
pub use half::{Bf16, F16};
pub use kernels::{finalize_avg, reduce_into, reduce_to};
