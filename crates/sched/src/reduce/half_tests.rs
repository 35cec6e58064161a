//! Conversion tests for [`F16`] and [`Bf16`], checked against definitions that do not share
//! code with the conversions: the ordered list of all finite f16 values, and bf16 as "the
//! upper 16 bits of an f32, rounded to nearest even".

use super::{Bf16, F16};

fn is_f16_nan(h: u16) -> bool {
    h & 0x7c00 == 0x7c00 && h & 0x03ff != 0
}

/// The exact value of an f16 bit pattern, computed in f64 from the format's definition.
fn f16_reference_value(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let man = f64::from(h & 0x3ff);
    match exp {
        0 => sign * man * 2f64.powi(-24),
        0x1f if man == 0.0 => sign * f64::INFINITY,
        0x1f => f64::NAN,
        e => sign * (1.0 + man / 1024.0) * 2f64.powi(e - 15),
    }
}

#[test]
fn f16_to_f32_matches_definition_for_every_pattern() {
    for h in 0..=u16::MAX {
        let got = F16(h).to_f32();
        let want = f16_reference_value(h);
        if is_f16_nan(h) {
            assert!(got.is_nan(), "{h:#06x}");
            assert_eq!(got.is_sign_negative(), h & 0x8000 != 0, "{h:#06x}");
        } else {
            assert_eq!(f64::from(got), want, "{h:#06x}");
            assert_eq!(got.is_sign_negative(), h & 0x8000 != 0, "{h:#06x}");
        }
    }
}

#[test]
fn f16_round_trips_every_pattern() {
    for h in 0..=u16::MAX {
        let back = F16::from_f32(F16(h).to_f32()).to_bits();
        if is_f16_nan(h) {
            assert!(is_f16_nan(back), "{h:#06x} -> {back:#06x}");
            assert_eq!(back & 0x8000, h & 0x8000, "sign of {h:#06x}");
            assert_eq!(back & 0x0200, 0x0200, "quiet bit of {h:#06x}");
            // The payload survives apart from the quiet bit.
            assert_eq!(back & 0x01ff, h & 0x01ff, "payload of {h:#06x}");
        } else {
            assert_eq!(back, h);
        }
    }
}

/// Every pair of neighbouring finite f16 values (of either sign): the midpoint, and the f32
/// values just either side of it, must round the way round-to-nearest-even says.
#[test]
fn f16_rounding_at_every_midpoint() {
    for sign in [0u16, 0x8000] {
        // Positive finite patterns are ordered by value; 0x7bff is the largest.
        for lo in 0..0x7bffu16 {
            let (a, b) = (lo | sign, (lo + 1) | sign);
            let va = f16_reference_value(a);
            let vb = f16_reference_value(b);
            let mid = (va + vb) / 2.0;
            let mid32 = mid as f32;
            assert_eq!(
                f64::from(mid32),
                mid,
                "midpoint of {a:#06x} must be exact in f32"
            );
            let even = if lo & 1 == 0 { a } else { b };
            assert_eq!(
                F16::from_f32(mid32).to_bits(),
                even,
                "tie {a:#06x}/{b:#06x}"
            );

            // One f32 ulp towards a (resp. b): no longer a tie.
            let toward_zero = f32::from_bits(mid32.to_bits() - 1);
            let away = f32::from_bits(mid32.to_bits() + 1);
            assert_eq!(
                F16::from_f32(toward_zero).to_bits(),
                a,
                "below mid {a:#06x}"
            );
            assert_eq!(F16::from_f32(away).to_bits(), b, "above mid {a:#06x}");
        }
    }
}

#[test]
fn f16_subnormals_and_underflow() {
    let tiny = 2f32.powi(-24); // smallest f16 subnormal
    assert_eq!(F16::from_f32(tiny).to_bits(), 0x0001);
    assert_eq!(F16::from_f32(-tiny).to_bits(), 0x8001);
    assert_eq!(F16::from_f32(3.0 * tiny).to_bits(), 0x0003);
    // Half of the smallest subnormal ties to even (zero); anything above rounds up.
    assert_eq!(F16::from_f32(tiny / 2.0).to_bits(), 0x0000);
    assert_eq!(F16::from_f32(-tiny / 2.0).to_bits(), 0x8000);
    assert_eq!(F16::from_f32(tiny * 0.500_001).to_bits(), 0x0001);
    assert_eq!(F16::from_f32(1.5 * tiny).to_bits(), 0x0002);
    assert_eq!(F16::from_f32(2.5 * tiny).to_bits(), 0x0002);
    // Largest subnormal, and rounding up from it into the smallest normal.
    assert_eq!(F16::from_f32(1023.0 * tiny).to_bits(), 0x03ff);
    assert_eq!(F16::from_f32(1023.5 * tiny).to_bits(), 0x0400);
    assert_eq!(F16::from_f32(2f32.powi(-14)).to_bits(), 0x0400);
    // f32 subnormals and very small normals become signed zero.
    assert_eq!(F16::from_f32(f32::from_bits(1)).to_bits(), 0x0000);
    assert_eq!(F16::from_f32(-f32::MIN_POSITIVE).to_bits(), 0x8000);
    assert_eq!(F16::from_f32(1e-30).to_bits(), 0x0000);
    assert_eq!(F16::from_f32(-0.0).to_bits(), 0x8000);
    assert_eq!(F16(0x0001).to_f32(), tiny);
    assert_eq!(F16(0x83ff).to_f32(), -1023.0 * tiny);
}

#[test]
fn f16_overflow_and_specials() {
    assert_eq!(F16::from_f32(65504.0), F16::MAX);
    assert_eq!(F16::from_f32(65519.996), F16::MAX);
    // 65520 is the tie between 65504 (odd mantissa) and 65536 (not representable): infinity.
    assert_eq!(F16::from_f32(65520.0), F16::INFINITY);
    assert_eq!(F16::from_f32(-65520.0).to_bits(), 0xfc00);
    assert_eq!(F16::from_f32(1e10), F16::INFINITY);
    assert_eq!(F16::from_f32(f32::MAX), F16::INFINITY);
    assert_eq!(F16::from_f32(f32::INFINITY), F16::INFINITY);
    assert_eq!(F16::from_f32(f32::NEG_INFINITY).to_bits(), 0xfc00);
    assert_eq!(F16::INFINITY.to_f32(), f32::INFINITY);
    assert_eq!(F16::from_f32(f32::NAN), F16::NAN);
    // A signalling f32 NaN comes out quiet, with its top payload bits.
    let snan = f32::from_bits(0xff80_2000);
    assert!(snan.is_nan());
    assert_eq!(F16::from_f32(snan).to_bits(), 0xfe01);
    // NaN whose payload lives only in bits narrowing drops: still NaN.
    assert_eq!(F16::from_f32(f32::from_bits(0x7f80_0001)).to_bits(), 0x7e00);
    assert_eq!(F16::from_bits(0x3c00).to_f32(), 1.0);
    assert_eq!(F16::from_f32(1.0).to_bits(), 0x3c00);
    assert_eq!(F16::from_f32(-2.0).to_bits(), 0xc000);
    assert_eq!(F16::from_f32(0.1).to_bits(), 0x2e66);
}

/// bf16 by its definition: drop the low 16 bits of the f32 with round-to-nearest-even, done
/// in u64 so that nothing can overflow.
fn bf16_reference(x: f32) -> u16 {
    let bits = u64::from(x.to_bits());
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let (hi, lo) = (bits >> 16, bits & 0xffff);
    let up = lo > 0x8000 || (lo == 0x8000 && hi & 1 == 1);
    (hi + u64::from(up)) as u16
}

#[test]
fn bf16_matches_definition() {
    // Every exponent and sign, with low halves that hit each rounding case, plus a stride
    // through all of the f32 space.
    let lows = [
        0x0000u32, 0x0001, 0x7fff, 0x8000, 0x8001, 0xffff, 0x1234, 0xc000,
    ];
    for hi in 0..=u16::MAX {
        for lo in lows {
            let x = f32::from_bits(u32::from(hi) << 16 | lo);
            assert_eq!(
                Bf16::from_f32(x).to_bits(),
                bf16_reference(x),
                "{:#010x}",
                x.to_bits()
            );
        }
    }
    let mut bits = 0u32;
    for _ in 0..2_000_000 {
        let x = f32::from_bits(bits);
        assert_eq!(
            Bf16::from_f32(x).to_bits(),
            bf16_reference(x),
            "{bits:#010x}"
        );
        bits = bits.wrapping_add(2_147_483_647 / 1_000_003);
    }
}

#[test]
fn bf16_round_trips_and_specials() {
    for h in 0..=u16::MAX {
        let x = Bf16(h).to_f32();
        assert_eq!(x.to_bits(), u32::from(h) << 16);
        let back = Bf16::from_f32(x).to_bits();
        if x.is_nan() {
            assert_eq!(back, h | 0x40, "{h:#06x}");
        } else {
            assert_eq!(back, h, "{h:#06x}");
        }
    }
    // Ties go to even.
    assert_eq!(
        Bf16::from_f32(f32::from_bits(0x3f80_8000)).to_bits(),
        0x3f80
    );
    assert_eq!(
        Bf16::from_f32(f32::from_bits(0x3f81_8000)).to_bits(),
        0x3f82
    );
    assert_eq!(
        Bf16::from_f32(f32::from_bits(0xbf80_8001)).to_bits(),
        0xbf81
    );
    // Overflow to infinity; the largest finite value stays.
    assert_eq!(Bf16::from_f32(f32::MAX), Bf16::INFINITY);
    assert_eq!(Bf16::from_f32(f32::from_bits(0x7f7f_7fff)), Bf16::MAX);
    assert_eq!(Bf16::from_f32(f32::NEG_INFINITY).to_bits(), 0xff80);
    // Subnormals round like everything else.
    assert_eq!(
        Bf16::from_f32(f32::from_bits(0x0000_8000)).to_bits(),
        0x0000
    );
    assert_eq!(
        Bf16::from_f32(f32::from_bits(0x0001_8000)).to_bits(),
        0x0002
    );
    assert_eq!(Bf16::from_f32(f32::NAN), Bf16::NAN);
    assert_eq!(Bf16::from_bits(0x3f80).to_f32(), 1.0);
}
