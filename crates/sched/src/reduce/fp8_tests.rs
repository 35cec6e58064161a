//! Conversion tests for [`F8E4M3`] and [`F8E5M2`], checked against definitions that do not
//! share code with the conversions: each pattern's value computed from the OCP format
//! definition, and narrowing as "the nearest of the sorted list of finite values".

use super::{F8E4M3, F8E5M2};

/// One format's definition, written out independently of `fp8.rs`.
struct Def {
    name: &'static str,
    mbits: u32,
    bias: i32,
    /// Infinity and NaNs in the all-ones exponent (E5M2), or only `S.1111.111` NaN (E4M3).
    ieee: bool,
    to_f32: fn(u8) -> f32,
    from_f32: fn(f32) -> u8,
}

const E4M3: Def = Def {
    name: "e4m3",
    mbits: 3,
    bias: 7,
    ieee: false,
    to_f32: |b| F8E4M3(b).to_f32(),
    from_f32: |x| F8E4M3::from_f32(x).to_bits(),
};

const E5M2: Def = Def {
    name: "e5m2",
    mbits: 2,
    bias: 15,
    ieee: true,
    to_f32: |b| F8E5M2(b).to_f32(),
    from_f32: |x| F8E5M2::from_f32(x).to_bits(),
};

impl Def {
    fn is_nan(&self, b: u8) -> bool {
        let exp_all_ones = (b & 0x7f) >> self.mbits == (0x7f >> self.mbits);
        let man = b & ((1 << self.mbits) - 1);
        if self.ieee {
            exp_all_ones && man != 0
        } else {
            b & 0x7f == 0x7f
        }
    }

    fn is_inf(&self, b: u8) -> bool {
        self.ieee && b & 0x7f == 0x7f & !((1 << self.mbits) - 1)
    }

    /// The exact value of a pattern, in f64, from the format's definition.
    fn value(&self, b: u8) -> f64 {
        let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
        let exp = i32::from((b & 0x7f) >> self.mbits);
        let man = f64::from(b & ((1 << self.mbits) - 1));
        let scale = f64::from(1u32 << self.mbits);
        if self.is_nan(b) {
            f64::NAN
        } else if self.is_inf(b) {
            sign * f64::INFINITY
        } else if exp == 0 {
            sign * man / scale * 2f64.powi(1 - self.bias)
        } else {
            sign * (1.0 + man / scale) * 2f64.powi(exp - self.bias)
        }
    }

    /// Every finite non-negative value with its pattern, ascending.
    fn finite(&self) -> Vec<(f64, u8)> {
        let mut v: Vec<(f64, u8)> = (0..0x80u8)
            .filter(|&b| !self.is_nan(b) && !self.is_inf(b))
            .map(|b| (self.value(b), b))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    }

    fn max(&self) -> (f64, u8) {
        let f = self.finite();
        f[f.len() - 1]
    }

    /// Narrowing by definition: the nearest finite value, ties to the even pattern,
    /// saturating at the largest finite value; NaN handled by the caller.
    fn reference_narrow(&self, finite: &[(f64, u8)], x: f32) -> u8 {
        let sign = if x.is_sign_negative() { 0x80 } else { 0 };
        let a = f64::from(x).abs();
        let (max, max_bits) = finite[finite.len() - 1];
        if a >= max {
            return max_bits | sign;
        }
        let i = finite.partition_point(|(v, _)| *v < a);
        let (hi, hi_bits) = finite[i];
        if hi == a || i == 0 {
            return hi_bits | sign;
        }
        let (lo, lo_bits) = finite[i - 1];
        let bits = match (a - lo).total_cmp(&(hi - a)) {
            std::cmp::Ordering::Less => lo_bits,
            std::cmp::Ordering::Greater => hi_bits,
            std::cmp::Ordering::Equal if lo_bits & 1 == 0 => lo_bits,
            std::cmp::Ordering::Equal => hi_bits,
        };
        bits | sign
    }
}

#[test]
fn widening_matches_definition_for_every_pattern() {
    for d in [E4M3, E5M2] {
        for b in 0..=u8::MAX {
            let got = (d.to_f32)(b);
            let want = d.value(b);
            let what = format!("{} {b:#04x}", d.name);
            if d.is_nan(b) {
                assert!(got.is_nan(), "{what}");
            } else {
                assert_eq!(f64::from(got), want, "{what}");
            }
            assert_eq!(got.is_sign_negative(), b & 0x80 != 0, "sign of {what}");
        }
    }
    // The spec's landmarks.
    assert_eq!(F8E4M3::MAX.to_f32(), 448.0);
    assert_eq!(F8E4M3(0x01).to_f32(), 2f32.powi(-9));
    assert_eq!(F8E4M3(0x08).to_f32(), 2f32.powi(-6));
    assert_eq!(F8E4M3(0x78).to_f32(), 256.0); // exponent 1111 is still a number
    assert!(F8E4M3(0x7f).to_f32().is_nan() && F8E4M3(0xff).to_f32().is_nan());
    assert_eq!(F8E5M2::MAX.to_f32(), 57344.0);
    assert_eq!(F8E5M2(0x01).to_f32(), 2f32.powi(-16));
    assert_eq!(F8E5M2(0x04).to_f32(), 2f32.powi(-14));
    assert_eq!(F8E5M2::INFINITY.to_f32(), f32::INFINITY);
    assert_eq!(F8E5M2(0xfc).to_f32(), f32::NEG_INFINITY);
    for nan in [0x7d, 0x7e, 0x7f, 0xfd, 0xfe, 0xff] {
        assert!(F8E5M2(nan).to_f32().is_nan(), "{nan:#04x}");
    }
    // E5M2 is the upper byte of an f16.
    for b in 0..=u8::MAX {
        let h = crate::reduce::F16(u16::from(b) << 8).to_f32();
        assert_eq!(F8E5M2(b).to_f32().to_bits(), h.to_bits(), "{b:#04x}");
    }
}

#[test]
fn every_pattern_round_trips_through_f32() {
    for d in [E4M3, E5M2] {
        for b in 0..=u8::MAX {
            let back = (d.from_f32)((d.to_f32)(b));
            let what = format!("{} {b:#04x} -> {back:#04x}", d.name);
            if d.is_nan(b) {
                assert!(d.is_nan(back), "{what}");
                assert_eq!(back & 0x80, b & 0x80, "sign of {what}");
            } else if d.is_inf(b) {
                // Saturating narrowing: infinity becomes the largest finite value.
                assert_eq!(back, d.max().1 | (b & 0x80), "{what}");
            } else {
                assert_eq!(back, b, "{what}");
            }
        }
    }
}

/// Every pair of neighbouring finite values (of either sign): the midpoint ties to the even
/// pattern, and the f32 values one ulp either side of it go to the nearer neighbour.
#[test]
fn rounding_at_every_midpoint() {
    for d in [E4M3, E5M2] {
        let finite = d.finite();
        for sign in [0u8, 0x80] {
            for w in finite.windows(2) {
                let ((va, a), (vb, b)) = (w[0], w[1]);
                let (a, b) = (a | sign, b | sign);
                let s = if sign == 0 { 1.0 } else { -1.0 };
                let mid = s * (va + vb) / 2.0;
                let mid32 = mid as f32;
                assert_eq!(f64::from(mid32), mid, "midpoint must be exact");
                let even = if a & 1 == 0 { a } else { b };
                let what = format!("{} {a:#04x}/{b:#04x}", d.name);
                assert_eq!((d.from_f32)(mid32), even, "tie {what}");
                let toward_a = f32::from_bits(mid32.to_bits() - 1);
                let toward_b = f32::from_bits(mid32.to_bits() + 1);
                assert_eq!((d.from_f32)(toward_a), a, "below mid {what}");
                assert_eq!((d.from_f32)(toward_b), b, "above mid {what}");
            }
        }
    }
}

#[test]
fn narrowing_matches_definition_across_f32() {
    for d in [E4M3, E5M2] {
        let finite = d.finite();
        let check = |x: f32| {
            let got = (d.from_f32)(x);
            if x.is_nan() {
                assert!(d.is_nan(got), "{} {:#010x}", d.name, x.to_bits());
                assert_eq!(got & 0x80 != 0, x.is_sign_negative());
            } else {
                let want = d.reference_narrow(&finite, x);
                assert_eq!(got, want, "{} {:#010x} ({x:e})", d.name, x.to_bits());
            }
        };
        // Every exponent and sign with mantissas that hit each rounding case, then a stride
        // through all of the f32 space.
        for hi in 0..=0x1ffu32 {
            for lo in [
                0u32, 1, 0x7_ffff, 0x8_0000, 0x8_0001, 0xf_ffff, 0x10_0000, 0x10_0001, 0x17_ffff,
                0x18_0000, 0x20_0000, 0x3f_ffff, 0x40_0000, 0x40_0001, 0x60_0000, 0x7f_ffff,
            ] {
                check(f32::from_bits(hi << 23 | lo));
            }
        }
        let mut bits = 0u32;
        for _ in 0..1_000_000 {
            check(f32::from_bits(bits));
            bits = bits.wrapping_add(4_294_967_291 / 999_983);
        }
    }
}

#[test]
fn saturation_at_the_largest_finite_value() {
    for (x, want) in [
        (448.0, 0x7e),
        (463.999, 0x7e),
        (464.0, 0x7e), // tie between 448 (even) and 480 (not a value): 448
        (464.001, 0x7e),
        (480.0, 0x7e),
        (1e6, 0x7e),
        (f32::MAX, 0x7e),
        (f32::INFINITY, 0x7e),
        (-448.0, 0xfe),
        (-1e30, 0xfe),
        (f32::NEG_INFINITY, 0xfe),
    ] {
        assert_eq!(F8E4M3::from_f32(x).to_bits(), want, "e4m3 {x}");
    }
    for (x, want) in [
        (57344.0, 0x7b),
        (61439.99, 0x7b),
        (61440.0, 0x7b), // tie rounding up past the largest value: saturates
        (65536.0, 0x7b),
        (f32::MAX, 0x7b),
        (f32::INFINITY, 0x7b),
        (-57344.0, 0xfb),
        (-61440.0, 0xfb),
        (f32::NEG_INFINITY, 0xfb),
    ] {
        assert_eq!(F8E5M2::from_f32(x).to_bits(), want, "e5m2 {x}");
    }
    // NaN stays NaN with its sign.
    assert_eq!(F8E4M3::from_f32(f32::NAN), F8E4M3::NAN);
    assert_eq!(F8E4M3::from_f32(-f32::NAN).to_bits(), 0xff);
    assert_eq!(F8E5M2::from_f32(f32::NAN), F8E5M2::NAN);
    assert_eq!(F8E5M2::from_f32(-f32::NAN).to_bits(), 0xfe);
    assert_eq!(F8E5M2::from_f32(f32::from_bits(0x7f80_0001)), F8E5M2::NAN);
}

#[test]
fn subnormals_and_underflow() {
    // E4M3: subnormals are m * 2^-9.
    let t = 2f32.powi(-9);
    for (x, want) in [
        (t, 0x01),
        (-t, 0x81),
        (3.0 * t, 0x03),
        (t / 2.0, 0x00),  // tie with zero: even
        (-t / 2.0, 0x80), // signed zero
        (t * 0.500_001, 0x01),
        (1.5 * t, 0x02),
        (2.5 * t, 0x02),
        (7.0 * t, 0x07),
        (7.5 * t, 0x08), // rounds up into the smallest normal
        (2f32.powi(-6), 0x08),
        (f32::from_bits(1), 0x00),
        (1e-30, 0x00),
        (-0.0, 0x80),
    ] {
        assert_eq!(F8E4M3::from_f32(x).to_bits(), want, "e4m3 {x:e}");
    }
    // E5M2: subnormals are m * 2^-16.
    let t = 2f32.powi(-16);
    for (x, want) in [
        (t, 0x01),
        (-t, 0x81),
        (t / 2.0, 0x00),
        (t * 0.500_001, 0x01),
        (1.5 * t, 0x02),
        (2.5 * t, 0x02),
        (3.0 * t, 0x03),
        (3.5 * t, 0x04), // rounds up into the smallest normal
        (2f32.powi(-14), 0x04),
        (-f32::MIN_POSITIVE, 0x80),
    ] {
        assert_eq!(F8E5M2::from_f32(x).to_bits(), want, "e5m2 {x:e}");
    }
}

#[test]
fn ordinary_values() {
    assert_eq!(F8E4M3::from_f32(1.0).to_bits(), 0x38);
    assert_eq!(F8E4M3::from_f32(-2.0).to_bits(), 0xc0);
    assert_eq!(F8E4M3::from_f32(0.1).to_bits(), 0x1d); // 0.1015625
    assert_eq!(F8E4M3::from_bits(0x38).to_f32(), 1.0);
    assert_eq!(F8E5M2::from_f32(1.0).to_bits(), 0x3c);
    assert_eq!(F8E5M2::from_f32(-2.0).to_bits(), 0xc0);
    assert_eq!(F8E5M2::from_f32(0.1).to_bits(), 0x2e); // 0.09375
    assert_eq!(F8E5M2::from_bits(0x3c).to_f32(), 1.0);
    assert_eq!(F8E4M3::default().to_f32(), 0.0);
}
