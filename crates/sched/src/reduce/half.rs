//! 16-bit floating-point element types: IEEE 754 binary16 ([`F16`]) and bfloat16 ([`Bf16`]).
//!
//! Both are stored as their bits and only converted to and from `f32`; the kernels widen to
//! `f32`, compute there and narrow once per step. Narrowing rounds to nearest, ties to even,
//! overflows to infinity and turns every NaN into a quiet NaN of the same sign (keeping the
//! top payload bits). Widening is exact and keeps NaN payloads bit for bit.
//!
//! The conversions are branch-free (selects only), so loops over blocks of values
//! auto-vectorise.

/// IEEE 754 binary16 (1 sign, 5 exponent, 10 mantissa bits), stored as its bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(transparent)]
pub struct F16(pub u16);

/// bfloat16 (the upper 16 bits of an `f32`: 1 sign, 8 exponent, 7 mantissa bits), stored as
/// its bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(transparent)]
pub struct Bf16(pub u16);

const F32_SIGN: u32 = 0x8000_0000;
const F32_EXP: u32 = 0x7f80_0000;
/// f32 bias (127) minus f16 bias (15), in f32 exponent position.
const REBIAS: u32 = 112 << 23;
/// 2^-14, the smallest normal f16, as f32 bits.
const F16_MIN_NORMAL_AS_F32: u32 = 0x3880_0000;
/// 2^16 as f32 bits: every magnitude from here up is infinity (or NaN) in f16.
const F16_OVERFLOW_AS_F32: u32 = 0x4780_0000;
/// 0.5 as f32 bits; its ulp is 2^-24, the f16 subnormal step.
const HALF_AS_F32: u32 = 0x3f00_0000;

impl F16 {
    /// Positive infinity.
    pub const INFINITY: F16 = F16(0x7c00);
    /// The canonical quiet NaN.
    pub const NAN: F16 = F16(0x7e00);
    /// The largest finite value, 65504.
    pub const MAX: F16 = F16(0x7bff);

    /// The value with these bits.
    pub const fn from_bits(bits: u16) -> F16 {
        F16(bits)
    }

    /// The bits of this value.
    pub const fn to_bits(self) -> u16 {
        self.0
    }

    /// Rounds `x` to the nearest f16 (ties to even); out-of-range values become infinity and
    /// NaN becomes a quiet NaN.
    #[inline]
    pub fn from_f32(x: f32) -> F16 {
        let bits = x.to_bits();
        let sign = bits & F32_SIGN;
        let abs = bits ^ sign;

        // Subnormal or zero result: adding 0.5 lines the value up with a 2^-24 ulp, so the
        // FPU's own round-to-nearest-even does the rounding; the low bits are the result.
        // The difference is at most 0x400 (rounding up into the smallest normal).
        let tiny = (f32::from_bits(abs) + f32::from_bits(HALF_AS_F32))
            .to_bits()
            .wrapping_sub(HALF_AS_F32);

        // Normal result: rebias, then add just under half an f16 ulp plus the lowest kept
        // bit, so exact halves round up only from odd mantissas. A carry into the exponent
        // is the right answer, up to and including infinity.
        let odd = (abs >> 13) & 1;
        let normal = abs.wrapping_sub(REBIAS).wrapping_add(0xfff + odd) >> 13;

        let nan = 0x7e00 | ((abs >> 13) & 0x3ff);

        let h = if abs > F32_EXP {
            nan
        } else if abs >= F16_OVERFLOW_AS_F32 {
            0x7c00
        } else if abs < F16_MIN_NORMAL_AS_F32 {
            tiny
        } else {
            normal
        };
        F16((h | (sign >> 16)) as u16)
    }

    /// The exact `f32` value (NaN payloads are kept as they are).
    #[inline]
    pub fn to_f32(self) -> f32 {
        let h = u32::from(self.0);
        let sign = (h & 0x8000) << 16;
        let exp = h & 0x7c00;
        let shifted = (h & 0x7fff) << 13;

        let normal = shifted + REBIAS;
        // Infinity and NaN: the exponent field must become all ones.
        let special = shifted + 2 * REBIAS;
        // Subnormal: read the mantissa as if it had exponent -14, then take away the implicit
        // 2^-14; both steps are exact.
        let sub = (f32::from_bits(shifted + F16_MIN_NORMAL_AS_F32)
            - f32::from_bits(F16_MIN_NORMAL_AS_F32))
        .to_bits();

        let bits = if exp == 0x7c00 {
            special
        } else if exp == 0 {
            sub
        } else {
            normal
        };
        f32::from_bits(bits | sign)
    }
}

impl Bf16 {
    /// Positive infinity.
    pub const INFINITY: Bf16 = Bf16(0x7f80);
    /// The canonical quiet NaN.
    pub const NAN: Bf16 = Bf16(0x7fc0);
    /// The largest finite value.
    pub const MAX: Bf16 = Bf16(0x7f7f);

    /// The value with these bits.
    pub const fn from_bits(bits: u16) -> Bf16 {
        Bf16(bits)
    }

    /// The bits of this value.
    pub const fn to_bits(self) -> u16 {
        self.0
    }

    /// Rounds `x` to the nearest bf16 (ties to even); out-of-range values become infinity and
    /// NaN becomes a quiet NaN.
    #[inline]
    pub fn from_f32(x: f32) -> Bf16 {
        let bits = x.to_bits();
        let quiet_nan = (bits >> 16) | 0x0040;
        // Cannot overflow: the largest non-NaN pattern is 0xff80_0000 (-inf).
        let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16;
        let h = if x.is_nan() { quiet_nan } else { rounded };
        Bf16(h as u16)
    }

    /// The exact `f32` value (NaN payloads are kept as they are).
    #[inline]
    pub fn to_f32(self) -> f32 {
        f32::from_bits(u32::from(self.0) << 16)
    }
}

#[cfg(test)]
#[path = "half_tests.rs"]
mod tests;
