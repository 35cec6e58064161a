//! Element arithmetic the kernels are built from: one monomorphic function per (type, op),
//! small enough to inline into the slice loops, with no branches that would stop
//! vectorisation.
//!
//! Integers wrap. Float `max`/`min` follow IEEE 754-2019 `maximum`/`minimum`: a NaN operand
//! makes the result NaN, and `-0.0` counts as less than `+0.0`, so both are commutative
//! (apart from which NaN payload survives when both are NaN).

use crate::reduce::{Bf16, F16, F8E4M3, F8E5M2};

/// Arithmetic on one native element type.
pub(crate) trait Arith: bytemuck::Pod {
    /// `a + b` (wrapping for integers).
    fn add(a: Self, b: Self) -> Self;
    /// `a * b` (wrapping for integers).
    fn mul(a: Self, b: Self) -> Self;
    /// The larger of `a` and `b`.
    fn max(a: Self, b: Self) -> Self;
    /// The smaller of `a` and `b`.
    fn min(a: Self, b: Self) -> Self;
    /// `self / n` for a rank count `n >= 1`: truncating for integers, in the type's own
    /// precision for floats.
    fn div_count(self, n: usize) -> Self;
}

macro_rules! int_arith {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            #[inline(always)]
            fn add(a: Self, b: Self) -> Self { a.wrapping_add(b) }
            #[inline(always)]
            fn mul(a: Self, b: Self) -> Self { a.wrapping_mul(b) }
            #[inline(always)]
            fn max(a: Self, b: Self) -> Self { Ord::max(a, b) }
            #[inline(always)]
            fn min(a: Self, b: Self) -> Self { Ord::min(a, b) }
            #[inline]
            fn div_count(self, n: usize) -> Self {
                match <$t>::try_from(n) {
                    // n >= 1, so neither division by zero nor MIN / -1 can happen.
                    Ok(d) => self.checked_div(d).unwrap_or(self),
                    // A count beyond the type's range: the quotient still fits, it is
                    // 0 or -1 (MIN / (MAX + 1)).
                    Err(_) => (i128::from(self) / n as i128) as $t,
                }
            }
        }
    )*};
}
int_arith!(i8, u8, i32, u32, i64, u64);

macro_rules! float_arith {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            #[inline(always)]
            fn add(a: Self, b: Self) -> Self { a + b }
            #[inline(always)]
            fn mul(a: Self, b: Self) -> Self { a * b }
            #[inline(always)]
            fn max(a: Self, b: Self) -> Self {
                // Selects, not branches: the loops over slices vectorise (in place too).
                let r = if a > b { a } else { b };
                // Equal: only +0/-0 differ, and +0 (sign bit clear) is the larger.
                let r = if a == b { <$t>::from_bits(a.to_bits() & b.to_bits()) } else { r };
                // At least one NaN; the sum is a (quiet) NaN.
                if a.is_nan() | b.is_nan() { a + b } else { r }
            }
            #[inline(always)]
            fn min(a: Self, b: Self) -> Self {
                // As `max`: -0 is the smaller of two zeros, NaN in gives NaN out.
                let r = if a < b { a } else { b };
                let r = if a == b { <$t>::from_bits(a.to_bits() | b.to_bits()) } else { r };
                if a.is_nan() | b.is_nan() { a + b } else { r }
            }
            #[inline]
            fn div_count(self, n: usize) -> Self { self / n as $t }
        }
    )*};
}
float_arith!(f32, f64);

/// A 16- or 8-bit float reduced by widening to `f32`.
pub(crate) trait HalfFloat: bytemuck::Pod {
    /// The exact `f32` value.
    fn widen(self) -> f32;
    /// `x` rounded to nearest even (with the type's own overflow rule).
    fn narrow(x: f32) -> Self;
}

macro_rules! half_float {
    ($($t:ty),*) => {$(
        impl HalfFloat for $t {
            #[inline(always)]
            fn widen(self) -> f32 {
                self.to_f32()
            }
            #[inline(always)]
            fn narrow(x: f32) -> Self {
                <$t>::from_f32(x)
            }
        }
    )*};
}
half_float!(F16, Bf16, F8E4M3, F8E5M2);
