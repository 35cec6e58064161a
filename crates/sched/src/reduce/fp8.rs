//! 8-bit floating-point element types of the OCP 8-bit floating point specification (the
//! formats NCCL calls `ncclFloat8e4m3` and `ncclFloat8e5m2`): [`F8E4M3`] and [`F8E5M2`].
//!
//! Both are stored as their bits and only converted to and from `f32`; the kernels widen to
//! `f32`, compute there and narrow once per step, as for the 16-bit floats.
//!
//! * E4M3: 1 sign, 4 exponent (bias 7), 3 mantissa bits. No infinities; `S.1111.111` is NaN,
//!   so the largest finite value is 448 (`S.1111.110`). Subnormals are `m * 2^-9`.
//! * E5M2: 1 sign, 5 exponent (bias 15), 2 mantissa bits, IEEE 754-like: `S.11111.00` is
//!   infinity, `S.11111.mm` (mm != 0) NaN, the largest finite value is 57344. Subnormals are
//!   `m * 2^-16`. (E5M2 is the upper byte of an f16.)
//!
//! Widening is exact: every finite value, infinity and the sign of zero come through, NaN
//! stays NaN of the same sign (an E5M2 NaN keeps its payload bits).
//!
//! Narrowing behaves as CUDA's `__nv_cvt_float_to_fp8` with `__NV_SATFINITE`, so results
//! match what NCCL computes on a GPU: round to nearest, ties to even (subnormals included);
//! every magnitude that rounds past the largest finite value, infinity included, becomes
//! the largest finite value of the same sign; NaN becomes NaN of the same sign (`S.1111.111`
//! for E4M3, the quiet `S.11111.10` for E5M2).
//!
//! The conversions are branch-free (selects only), so loops over blocks of values
//! auto-vectorise.

/// OCP FP8 E4M3 (1 sign, 4 exponent, 3 mantissa bits; no infinities), stored as its bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(transparent)]
pub struct F8E4M3(pub u8);

/// OCP FP8 E5M2 (1 sign, 5 exponent, 2 mantissa bits; with infinities), stored as its bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(transparent)]
pub struct F8E5M2(pub u8);

/// `f32` sign bit.
const F32_SIGN: u32 = 0x8000_0000;
/// `f32` infinity; every magnitude above it is NaN.
const F32_INF: u32 = 0x7f80_0000;

/// One 8-bit format: the parameters [`widen`] and [`narrow`] are written in.
struct Format {
    /// Mantissa bits.
    mbits: u32,
    /// Exponent bias.
    bias: u32,
    /// Whether the all-ones exponent holds infinity and NaNs (E5M2) rather than numbers
    /// (E4M3, where only `S.1111.111` is NaN).
    ieee_specials: bool,
    /// Bits of the largest finite magnitude.
    max: u32,
    /// Bits of the NaN that narrowing produces (sign added separately).
    nan: u32,
}

const E4M3: Format = Format {
    mbits: 3,
    bias: 7,
    ieee_specials: false,
    max: 0x7e,
    nan: 0x7f,
};

const E5M2: Format = Format {
    mbits: 2,
    bias: 15,
    ieee_specials: true,
    max: 0x7b,
    nan: 0x7e,
};

/// The exact `f32` of the 8-bit pattern `b` in format `f`.
#[inline(always)]
fn widen(b: u8, f: &Format) -> f32 {
    let h = u32::from(b);
    let sign = (h & 0x80) << 24;
    // Exponent and mantissa fields moved to their f32 positions.
    let shifted = (h & 0x7f) << (23 - f.mbits);
    let rebias = (127 - f.bias) << 23;
    // 2^(1 - bias), the smallest normal value, as f32 bits.
    let min_normal = (128 - f.bias) << 23;

    let normal = shifted + rebias;
    // Subnormal: read the mantissa as if it had the smallest normal exponent, then take away
    // the implicit leading one; both steps are exact.
    let sub = (f32::from_bits(shifted + min_normal) - f32::from_bits(min_normal)).to_bits();
    let exp_field = h & 0x7f & !((1 << f.mbits) - 1);
    let all_ones = 0x7f & !((1 << f.mbits) - 1);
    let mag = if f.ieee_specials && exp_field == all_ones {
        // Infinity (mantissa 0) or NaN, payload kept.
        F32_INF | ((h & ((1 << f.mbits) - 1)) << (23 - f.mbits))
    } else if !f.ieee_specials && h & 0x7f == 0x7f {
        0x7fc0_0000
    } else if exp_field == 0 {
        sub
    } else {
        normal
    };
    f32::from_bits(mag | sign)
}

/// `x` rounded to format `f`: nearest, ties to even; saturating at the largest finite value.
#[inline(always)]
fn narrow(x: f32, f: &Format) -> u8 {
    let bits = x.to_bits();
    let sign = (bits & F32_SIGN) >> 24;
    let abs = bits & !F32_SIGN;
    let shift = 23 - f.mbits;

    // Subnormal or zero result: adding 2^(24 - bias - mbits), whose f32 ulp is the format's
    // subnormal step 2^(1 - bias - mbits), lets the FPU's round-to-nearest-even do the
    // rounding; the low bits are the result (at most 1 << mbits, rounding up into the
    // smallest normal, which is the right encoding).
    let magic = (151 - f.bias - f.mbits) << 23;
    let tiny = (f32::from_bits(abs) + f32::from_bits(magic))
        .to_bits()
        .wrapping_sub(magic);

    // Normal result: rebias, then add just under half an ulp plus the lowest kept bit, so
    // exact halves round up only from odd mantissas. Anything past the largest finite
    // value (infinity included: no overflow of the u32) is clamped to it below.
    let odd = (abs >> shift) & 1;
    let rebias = (127 - f.bias) << 23;
    let normal = abs
        .wrapping_sub(rebias)
        .wrapping_add((1 << (shift - 1)) - 1 + odd)
        >> shift;

    let min_normal = (128 - f.bias) << 23;
    let r = if abs > F32_INF {
        f.nan
    } else if abs < min_normal {
        tiny
    } else {
        normal.min(f.max)
    };
    (r | sign) as u8
}

macro_rules! fp8_type {
    ($t:ident, $fmt:expr, $maxval:literal) => {
        impl $t {
            #[doc = concat!("The largest finite value, ", stringify!($maxval), ".")]
            pub const MAX: $t = $t($fmt.max as u8);
            /// The NaN that narrowing produces.
            pub const NAN: $t = $t($fmt.nan as u8);

            /// The value with these bits.
            pub const fn from_bits(bits: u8) -> $t {
                $t(bits)
            }

            /// The bits of this value.
            pub const fn to_bits(self) -> u8 {
                self.0
            }

            /// Rounds `x` to the nearest value (ties to even); magnitudes beyond the largest
            /// finite value, infinity included, become that value with `x`'s sign, and NaN
            /// stays NaN (as CUDA's conversion with `__NV_SATFINITE`).
            #[inline]
            pub fn from_f32(x: f32) -> $t {
                $t(narrow(x, &$fmt))
            }

            /// The exact `f32` value.
            #[inline]
            pub fn to_f32(self) -> f32 {
                widen(self.0, &$fmt)
            }
        }
    };
}

fp8_type!(F8E4M3, E4M3, 448);
fp8_type!(F8E5M2, E5M2, 57344);

impl F8E5M2 {
    /// Positive infinity (only produced by [`F8E5M2::from_bits`]: narrowing saturates).
    pub const INFINITY: F8E5M2 = F8E5M2(0x7c);
}

#[cfg(test)]
#[path = "fp8_tests.rs"]
mod tests;
