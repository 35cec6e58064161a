//! Kernel tests: every type and op against a per-element scalar reference, on aligned and
//! misaligned buffers, plus the edge cases (wrap-around, NaN, signed zeros, truncating
//! averages, per-step rounding of 16- and 8-bit floats, fp8 saturation, bitwise operations,
//! ragged lengths) and the scaling of pre-multiplied sums.

use super::{finalize_avg, reduce_into, reduce_to, scale_in_place, scale_to};
use crate::reduce::{Bf16, DataType, ReduceOp, F16, F8E4M3, F8E5M2};

const LENGTHS: [usize; 5] = [0, 1, 7, 1000, 4099];

/// Runs `f` on the portable loops only (`true`) or on the best this CPU has (`false`).
fn on_path(portable: bool, f: impl FnOnce()) {
    #[cfg(target_arch = "x86_64")]
    crate::reduce::x86::PORTABLE_ONLY.with(|p| p.set(portable));
    #[cfg(not(target_arch = "x86_64"))]
    let _ = portable; // only one path here
    f();
    #[cfg(target_arch = "x86_64")]
    crate::reduce::x86::PORTABLE_ONLY.with(|p| p.set(false));
}
const SENTINEL: u8 = 0xa5;

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A float drawn from a small set, so that ties, signed zeros and specials are common.
fn float_value(rng: &mut Rng) -> f64 {
    match rng.next() % 32 {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3 => 0.0,
        4 => -0.0,
        5 => 1e-6,
        6 => -3e4,
        _ => (rng.next() % 257) as f64 / 8.0 - 16.0,
    }
}

/// `n` random elements of `dtype`, as bytes.
fn random_elements(dtype: DataType, n: usize, rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * dtype.size());
    for _ in 0..n {
        match dtype {
            DataType::F32 => out.extend((float_value(rng) as f32).to_ne_bytes()),
            DataType::F64 => out.extend(float_value(rng).to_ne_bytes()),
            DataType::F16 => out.extend(F16::from_f32(float_value(rng) as f32).0.to_ne_bytes()),
            DataType::Bf16 => out.extend(Bf16::from_f32(float_value(rng) as f32).0.to_ne_bytes()),
            // Half of them any bit pattern (NaNs and E5M2 infinities included).
            DataType::F8E4M3 if rng.next() % 2 == 0 => {
                out.push(F8E4M3::from_f32(float_value(rng) as f32).0)
            }
            DataType::F8E5M2 if rng.next() % 2 == 0 => {
                out.push(F8E5M2::from_f32(float_value(rng) as f32).0)
            }
            _ => out.extend(&rng.next().to_ne_bytes()[..dtype.size()]),
        }
    }
    out
}

macro_rules! int_ref {
    ($t:ty, $op:expr, $x:expr, $y:expr) => {{
        let a = <$t>::from_ne_bytes($x.try_into().unwrap());
        let b = <$t>::from_ne_bytes($y.try_into().unwrap());
        let r = match $op {
            ReduceOp::Sum => a.wrapping_add(b),
            ReduceOp::Prod => a.wrapping_mul(b),
            ReduceOp::Max => std::cmp::max(a, b),
            ReduceOp::Min => std::cmp::min(a, b),
            ReduceOp::Avg | ReduceOp::BAnd | ReduceOp::BOr | ReduceOp::BXor => unreachable!(),
        };
        r.to_ne_bytes().to_vec()
    }};
}

macro_rules! float_ref {
    ($t:ty, $op:expr, $a:expr, $b:expr) => {{
        let (a, b): ($t, $t) = ($a, $b);
        let both_zero = a == 0.0 && b == 0.0;
        let either_neg = a.is_sign_negative() || b.is_sign_negative();
        let both_neg = a.is_sign_negative() && b.is_sign_negative();
        match $op {
            ReduceOp::Sum => a + b,
            ReduceOp::Prod => a * b,
            _ if a.is_nan() || b.is_nan() => <$t>::NAN,
            ReduceOp::Max if both_zero => {
                if both_neg {
                    -0.0
                } else {
                    0.0
                }
            }
            ReduceOp::Min if both_zero => {
                if either_neg {
                    -0.0
                } else {
                    0.0
                }
            }
            ReduceOp::Max => {
                if a > b {
                    a
                } else {
                    b
                }
            }
            ReduceOp::Min => {
                if a < b {
                    a
                } else {
                    b
                }
            }
            ReduceOp::Avg | ReduceOp::BAnd | ReduceOp::BOr | ReduceOp::BXor => unreachable!(),
        }
    }};
}

/// A bitwise `op` on two elements, byte by byte (the same as on the whole raw bits), for
/// every type: integers by definition, floats as the kernels promise for calls that skip
/// [`ReduceOp::check`].
fn bitwise_reference(op: ReduceOp, x: &[u8], y: &[u8]) -> Option<Vec<u8>> {
    let f: fn(u8, u8) -> u8 = match op {
        ReduceOp::BAnd => |a, b| a & b,
        ReduceOp::BOr => |a, b| a | b,
        ReduceOp::BXor => |a, b| a ^ b,
        _ => return None,
    };
    Some(x.iter().zip(y).map(|(a, b)| f(*a, *b)).collect())
}

/// `op(x, y)` for one element, written out the slow, obvious way.
fn reference_element(dtype: DataType, op: ReduceOp, x: &[u8], y: &[u8]) -> Vec<u8> {
    if let Some(r) = bitwise_reference(op, x, y) {
        return r;
    }
    let op = op.step_op();
    let u16_of = |b: &[u8]| u16::from_ne_bytes(b.try_into().unwrap());
    match dtype {
        DataType::I8 => int_ref!(i8, op, x, y),
        DataType::U8 => int_ref!(u8, op, x, y),
        DataType::I32 => int_ref!(i32, op, x, y),
        DataType::U32 => int_ref!(u32, op, x, y),
        DataType::I64 => int_ref!(i64, op, x, y),
        DataType::U64 => int_ref!(u64, op, x, y),
        DataType::F32 => {
            let f = |b: &[u8]| f32::from_ne_bytes(b.try_into().unwrap());
            float_ref!(f32, op, f(x), f(y)).to_ne_bytes().to_vec()
        }
        DataType::F64 => {
            let f = |b: &[u8]| f64::from_ne_bytes(b.try_into().unwrap());
            float_ref!(f64, op, f(x), f(y)).to_ne_bytes().to_vec()
        }
        DataType::F16 => {
            let f = |b: &[u8]| F16(u16_of(b)).to_f32();
            let r = float_ref!(f32, op, f(x), f(y));
            F16::from_f32(r).0.to_ne_bytes().to_vec()
        }
        DataType::Bf16 => {
            let f = |b: &[u8]| Bf16(u16_of(b)).to_f32();
            let r = float_ref!(f32, op, f(x), f(y));
            Bf16::from_f32(r).0.to_ne_bytes().to_vec()
        }
        DataType::F8E4M3 => {
            let r = float_ref!(f32, op, F8E4M3(x[0]).to_f32(), F8E4M3(y[0]).to_f32());
            vec![F8E4M3::from_f32(r).0]
        }
        DataType::F8E5M2 => {
            let r = float_ref!(f32, op, F8E5M2(x[0]).to_f32(), F8E5M2(y[0]).to_f32());
            vec![F8E5M2::from_f32(r).0]
        }
    }
}

fn reference(dtype: DataType, op: ReduceOp, a: &[u8], b: &[u8]) -> Vec<u8> {
    let s = dtype.size();
    a.chunks_exact(s)
        .zip(b.chunks_exact(s))
        .flat_map(|(x, y)| reference_element(dtype, op, x, y))
        .collect()
}

fn is_nan(dtype: DataType, b: &[u8]) -> bool {
    match dtype {
        DataType::F32 => f32::from_ne_bytes(b.try_into().unwrap()).is_nan(),
        DataType::F64 => f64::from_ne_bytes(b.try_into().unwrap()).is_nan(),
        DataType::F16 => F16(u16::from_ne_bytes(b.try_into().unwrap()))
            .to_f32()
            .is_nan(),
        DataType::Bf16 => Bf16(u16::from_ne_bytes(b.try_into().unwrap()))
            .to_f32()
            .is_nan(),
        DataType::F8E4M3 => F8E4M3(b[0]).to_f32().is_nan(),
        DataType::F8E5M2 => F8E5M2(b[0]).to_f32().is_nan(),
        _ => false,
    }
}

/// Equal bit for bit, except that any NaN matches any NaN after an arithmetic `op` (a bitwise
/// one must match exactly).
fn assert_same(dtype: DataType, op: ReduceOp, got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if op.is_bitwise() {
        assert_eq!(got, want, "{what}");
        return;
    }
    let s = dtype.size();
    for (i, (g, w)) in got.chunks(s).zip(want.chunks(s)).enumerate() {
        if is_nan(dtype, w) {
            assert!(
                is_nan(dtype, g),
                "{what}: element {i}: want NaN, got {g:02x?}"
            );
        } else {
            assert_eq!(g, w, "{what}: element {i}");
        }
    }
}

/// Bytes at a chosen offset from an 8-byte-aligned start, surrounded by sentinels.
struct Buf {
    backing: Vec<u64>,
    off: usize,
    len: usize,
}

impl Buf {
    fn new(data: &[u8], off: usize) -> Buf {
        let words = (off + data.len() + 8) / 8 + 1;
        let mut b = Buf {
            backing: vec![u64::from_ne_bytes([SENTINEL; 8]); words],
            off,
            len: data.len(),
        };
        b.bytes_mut().copy_from_slice(data);
        b
    }
    fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.backing)[self.off..self.off + self.len]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.backing)[self.off..self.off + self.len]
    }
    /// The sentinels around the window are intact.
    fn check_guards(&self, what: &str) {
        let all: &[u8] = bytemuck::cast_slice(&self.backing);
        let mut outside = all[..self.off].iter().chain(&all[self.off + self.len..]);
        assert!(outside.all(|&b| b == SENTINEL), "{what}: wrote outside");
    }
}

/// Every (type, op, length) with fresh random inputs, on both code paths.
fn for_each_case(seed: u64, mut case: impl FnMut(DataType, ReduceOp, &[u8], &[u8], &str)) {
    let mut rng = Rng(seed);
    for portable in [false, true] {
        on_path(portable, || {
            for dtype in DataType::ALL {
                for op in ReduceOp::ALL {
                    for n in LENGTHS {
                        let a = random_elements(dtype, n, &mut rng);
                        let b = random_elements(dtype, n, &mut rng);
                        let what = format!("{dtype:?} {op:?} n={n} portable={portable}");
                        case(dtype, op, &a, &b, &what);
                    }
                }
            }
        });
    }
}

#[test]
fn reduce_into_matches_reference_for_every_type_op_length_alignment() {
    for_each_case(1, |dtype, op, a, b, what| {
        let want = reference(dtype, op, a, b);
        for (acc_off, inc_off) in [(0, 0), (1, 1), (0, 1), (3, 0)] {
            let what = format!("{what} offsets={acc_off},{inc_off}");
            let mut acc = Buf::new(a, acc_off);
            let inc = Buf::new(b, inc_off);
            reduce_into(dtype, op, acc.bytes_mut(), inc.bytes());
            assert_same(dtype, op, acc.bytes(), &want, &what);
            acc.check_guards(&what);
        }
    });
}

#[test]
fn reduce_to_matches_reference_for_every_type_op_length_alignment() {
    for_each_case(2, |dtype, op, a, b, what| {
        let want = reference(dtype, op, a, b);
        for (dst_off, loc_off, inc_off) in [(0, 0, 0), (1, 1, 1), (0, 1, 2), (3, 0, 5)] {
            let what = format!("{what} offsets={dst_off},{loc_off},{inc_off}");
            let mut dst = Buf::new(&vec![0x5a; a.len()], dst_off);
            let local = Buf::new(a, loc_off);
            let inc = Buf::new(b, inc_off);
            reduce_to(dtype, op, dst.bytes_mut(), local.bytes(), inc.bytes());
            assert_same(dtype, op, dst.bytes(), &want, &what);
            assert_eq!(local.bytes(), a, "{what}: local changed");
            dst.check_guards(&what);
        }
    });
}

fn ints<T: bytemuck::Pod>(v: &[T]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

#[test]
fn integers_wrap_around() {
    let mut acc = ints(&[127i8, -128, 100]);
    reduce_into(
        DataType::I8,
        ReduceOp::Sum,
        &mut acc,
        &ints(&[1i8, -1, 100]),
    );
    assert_eq!(acc, ints(&[-128i8, 127, -56]));

    let mut acc = ints(&[255u8, 16]);
    reduce_into(DataType::U8, ReduceOp::Prod, &mut acc, &ints(&[2u8, 16]));
    assert_eq!(acc, ints(&[254u8, 0]));

    let mut dst = vec![0u8; 8];
    reduce_to(
        DataType::I32,
        ReduceOp::Avg,
        &mut dst,
        &ints(&[i32::MAX, 5]),
        &ints(&[1i32, -5]),
    );
    assert_eq!(dst, ints(&[i32::MIN, 0]));

    let mut acc = ints(&[u64::MAX, 1 << 63]);
    reduce_into(DataType::U64, ReduceOp::Prod, &mut acc, &ints(&[3u64, 2]));
    assert_eq!(acc, ints(&[u64::MAX - 2, 0]));
}

#[test]
fn avg_truncates_integers_toward_zero() {
    let mut buf = ints(&[-7i32, 7, -8, 0, i32::MIN]);
    finalize_avg(DataType::I32, &mut buf, 2);
    assert_eq!(buf, ints(&[-3i32, 3, -4, 0, i32::MIN / 2]));

    let mut buf = ints(&[-7i64, 9]);
    finalize_avg(DataType::I64, &mut buf, 4);
    assert_eq!(buf, ints(&[-1i64, 2]));

    let mut buf = ints(&[250u8, 7]);
    finalize_avg(DataType::U8, &mut buf, 3);
    assert_eq!(buf, ints(&[83u8, 2]));

    // Rank counts beyond the element type's range.
    let mut buf = ints(&[-128i8, 127, -127]);
    finalize_avg(DataType::I8, &mut buf, 128);
    assert_eq!(buf, ints(&[-1i8, 0, 0]));
    let mut buf = ints(&[255u8]);
    finalize_avg(DataType::U8, &mut buf, 300);
    assert_eq!(buf, ints(&[0u8]));

    // Zero ranks: nothing to divide by, nothing changes.
    let mut buf = ints(&[5i32]);
    finalize_avg(DataType::I32, &mut buf, 0);
    assert_eq!(buf, ints(&[5i32]));
}

#[test]
fn avg_of_floats_divides_in_own_precision() {
    let mut buf = ints(&[3.0f32, -1.0, 1.0]);
    finalize_avg(DataType::F32, &mut buf, 2);
    assert_eq!(buf, ints(&[1.5f32, -0.5, 0.5]));

    let mut buf = ints(&[1.0f64]);
    finalize_avg(DataType::F64, &mut buf, 3);
    assert_eq!(buf, ints(&[1.0f64 / 3.0]));

    // 1/3 rounded once to f16 and bf16.
    let mut buf = ints(&[F16::from_f32(1.0), F16::from_f32(-6.0)]);
    finalize_avg(DataType::F16, &mut buf, 3);
    assert_eq!(buf, ints(&[F16(0x3555), F16::from_f32(-2.0)]));
    let mut buf = ints(&[Bf16::from_f32(1.0)]);
    finalize_avg(DataType::Bf16, &mut buf, 3);
    assert_eq!(buf, ints(&[Bf16(0x3eab)]));

    // Misaligned buffer, more than one block.
    let vals: Vec<f64> = (0..1000).map(f64::from).collect();
    let mut backing = vec![0u8; 8001];
    backing[1..].copy_from_slice(bytemuck::cast_slice(&vals));
    finalize_avg(DataType::F64, &mut backing[1..], 4);
    let want: Vec<f64> = vals.iter().map(|v| v / 4.0).collect();
    assert_eq!(&backing[1..], bytemuck::cast_slice::<f64, u8>(&want));
}

#[test]
fn float_max_min_nan_and_signed_zero() {
    let nan = f32::NAN;
    let a = ints(&[nan, 1.0, 0.0, -0.0, 0.0, f32::NEG_INFINITY]);
    let b = ints(&[1.0f32, nan, -0.0, 0.0, 0.0, -1.0]);
    for (x, y) in [(&a, &b), (&b, &a)] {
        let mut max = vec![0u8; a.len()];
        reduce_to(DataType::F32, ReduceOp::Max, &mut max, x, y);
        let max: &[f32] = bytemuck::cast_slice(&max);
        assert!(max[0].is_nan() && max[1].is_nan());
        assert_eq!(
            max[2..].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            [0, 0, 0, (-1.0f32).to_bits()]
        );

        let mut min = vec![0u8; a.len()];
        reduce_to(DataType::F32, ReduceOp::Min, &mut min, x, y);
        let min: &[f32] = bytemuck::cast_slice(&min);
        assert!(min[0].is_nan() && min[1].is_nan());
        let neg0 = (-0.0f32).to_bits();
        assert_eq!(
            min[2..].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            [neg0, neg0, 0, f32::NEG_INFINITY.to_bits()]
        );
    }
}

#[test]
fn half_floats_round_once_per_step() {
    // f16 has spacing 2 in [2048, 4096): every +1 is a tie and goes to the even mantissa.
    let mut acc = ints(&[F16::from_f32(2048.0), F16::from_f32(2050.0)]);
    let one = ints(&[F16::from_f32(1.0); 2]);
    for _ in 0..3 {
        reduce_into(DataType::F16, ReduceOp::Sum, &mut acc, &one);
    }
    // Rounded each step: 2048 stays, 2050 -> 2052 -> 2052 -> 2052 (2053 ties to 2052).
    assert_eq!(acc, ints(&[F16::from_f32(2048.0), F16::from_f32(2052.0)]));

    // bf16 has spacing 2 in [256, 512).
    let mut acc = ints(&[Bf16::from_f32(256.0), Bf16::from_f32(258.0)]);
    let one = ints(&[Bf16::from_f32(1.0); 2]);
    for _ in 0..3 {
        reduce_into(DataType::Bf16, ReduceOp::Sum, &mut acc, &one);
    }
    assert_eq!(acc, ints(&[Bf16::from_f32(256.0), Bf16::from_f32(260.0)]));

    // Overflow in one step gives infinity; a product rounds once.
    let mut dst = vec![0u8; 4];
    let big = ints(&[F16::MAX, F16::from_f32(3.0)]);
    let other = ints(&[F16::from_f32(16.0), F16::from_f32(1.0 / 3.0)]);
    reduce_to(DataType::F16, ReduceOp::Sum, &mut dst, &big, &other);
    assert_eq!(
        dst,
        ints(&[F16::INFINITY, F16::from_f32(3.0 + F16(0x3555).to_f32())])
    );
    reduce_to(DataType::F16, ReduceOp::Prod, &mut dst, &big, &other);
    assert_eq!(
        dst,
        ints(&[F16::INFINITY, F16::from_f32(3.0 * F16(0x3555).to_f32())])
    );
}

#[test]
fn ragged_lengths_use_the_whole_element_prefix() {
    // acc holds 2.5 floats, incoming 3: the two whole elements they share are reduced.
    let mut acc = ints(&[1.0f32, 2.0, 3.0]);
    acc.truncate(10);
    let inc = ints(&[10.0f32, 20.0, 30.0]);
    reduce_into(DataType::F32, ReduceOp::Sum, &mut acc, &inc);
    let mut want = ints(&[11.0f32, 22.0, 3.0]);
    want.truncate(10);
    assert_eq!(acc, want);

    // dst shorter than the inputs: only dst's elements are written.
    let mut dst = vec![0u8; 5];
    reduce_to(
        DataType::I32,
        ReduceOp::Sum,
        &mut dst,
        &ints(&[1i32, 2]),
        &ints(&[5i32, 6]),
    );
    assert_eq!(&dst[..4], &ints(&[6i32])[..]);
    assert_eq!(dst[4], 0);

    // incoming shorter than local: the result stops there.
    let mut dst = vec![0u8; 16];
    reduce_to(
        DataType::F64,
        ReduceOp::Max,
        &mut dst,
        &ints(&[1.0f64, 2.0]),
        &ints(&[3.0f64]),
    );
    assert_eq!(&dst[..8], &ints(&[3.0f64])[..]);
    assert_eq!(&dst[8..], &[0u8; 8]);

    // Less than one element: nothing happens.
    let mut acc = vec![1u8, 2, 3];
    reduce_into(DataType::I32, ReduceOp::Sum, &mut acc, &[9, 9, 9, 9]);
    assert_eq!(acc, [1, 2, 3]);
}

#[test]
fn bitwise_ops_on_integers() {
    let a = ints(&[-1i8, 0x55, -128, 0x0f]);
    let b = ints(&[0x3ci8, 0x0f, 1, -16]);
    for (op, want) in [
        (ReduceOp::BAnd, [0x3ci8, 0x05, 0, 0]),
        (ReduceOp::BOr, [-1i8, 0x5f, -127, -1]),
        (ReduceOp::BXor, [-0x3di8, 0x5a, -127, -1]),
    ] {
        let mut acc = a.clone();
        reduce_into(DataType::I8, op, &mut acc, &b);
        assert_eq!(acc, ints(&want), "{op:?}");
    }

    let a = ints(&[u64::MAX, 0xf0f0_0000_0000_0001, 0]);
    let b = ints(&[1u64 << 63, 0x0ff0_0000_0000_0003, 7]);
    let mut dst = vec![0u8; a.len()];
    reduce_to(DataType::U64, ReduceOp::BAnd, &mut dst, &a, &b);
    assert_eq!(dst, ints(&[1u64 << 63, 0x00f0_0000_0000_0001, 0]));
    reduce_to(DataType::U64, ReduceOp::BOr, &mut dst, &a, &b);
    assert_eq!(dst, ints(&[u64::MAX, 0xfff0_0000_0000_0003, 7]));
    reduce_to(DataType::U64, ReduceOp::BXor, &mut dst, &a, &b);
    assert_eq!(dst, ints(&[u64::MAX >> 1, 0xff00_0000_0000_0002, 7]));

    // A reduction over several "ranks" in a fixed order: x ^ x ^ y == y, and so on.
    let x = ints(&[0x1234_5678u32, 0xdead_beef]);
    let y = ints(&[0x0f0f_0f0fu32, 0]);
    let mut acc = x.clone();
    for inc in [&x, &y] {
        reduce_into(DataType::U32, ReduceOp::BXor, &mut acc, inc);
    }
    assert_eq!(acc, y);
    let mut acc = ints(&[-1i32, -1]);
    for inc in [&x, &y] {
        reduce_into(DataType::I32, ReduceOp::BAnd, &mut acc, inc);
    }
    assert_eq!(acc, ints(&[0x0204_0608u32, 0]));
    // Avg's division never touches a bitwise result.
    assert_eq!(ReduceOp::BOr.step_op(), ReduceOp::BOr);
}

#[test]
fn bitwise_ops_on_floats_are_harmless() {
    // Callers reject these (ReduceOp::check); the kernels still must not panic and must give
    // the same bits everywhere: the raw bits are combined.
    for dtype in DataType::ALL.into_iter().filter(|d| d.is_float()) {
        assert!(ReduceOp::BAnd.check(dtype).is_err());
        let mut rng = Rng(dtype as u64);
        let a = random_elements(dtype, 100, &mut rng);
        let b = random_elements(dtype, 100, &mut rng);
        for op in [ReduceOp::BAnd, ReduceOp::BOr, ReduceOp::BXor] {
            let mut acc = a.clone();
            reduce_into(dtype, op, &mut acc, &b);
            assert_eq!(acc, reference(dtype, op, &a, &b), "{dtype:?} {op:?}");
        }
    }
}

fn e4m3(v: &[f32]) -> Vec<u8> {
    v.iter().map(|&x| F8E4M3::from_f32(x).0).collect()
}

fn e5m2(v: &[f32]) -> Vec<u8> {
    v.iter().map(|&x| F8E5M2::from_f32(x).0).collect()
}

#[test]
fn fp8_rounds_once_per_step_and_saturates() {
    // E4M3 has spacing 2 in [16, 32): every +1 is a tie that goes to the even mantissa.
    // 16 + 1 = 17 -> 16 (1.000 is even), for ever; 18 + 1 = 19 -> 20, then 21 -> 20.
    let mut acc = e4m3(&[16.0, 18.0, 440.0, -448.0]);
    let inc = e4m3(&[1.0, 1.0, 16.0, -448.0]);
    for _ in 0..3 {
        reduce_into(DataType::F8E4M3, ReduceOp::Sum, &mut acc, &inc);
    }
    // 440 is not a value: it is 448 already; sums past 448 saturate, never NaN.
    assert_eq!(acc, e4m3(&[16.0, 20.0, 448.0, -448.0]));
    assert_eq!(acc[2], F8E4M3::MAX.0);

    // E5M2 has spacing 2 in [8, 16): 8 + 1 ties to 8, 10 + 1 ties to 12.
    let mut acc = e5m2(&[8.0, 10.0, 57344.0, 1.0]);
    let inc = vec![
        F8E5M2::from_f32(1.0).0,
        F8E5M2::from_f32(1.0).0,
        F8E5M2::from_f32(57344.0).0,
        F8E5M2::INFINITY.0,
    ];
    reduce_into(DataType::F8E5M2, ReduceOp::Sum, &mut acc, &inc);
    // An infinite input saturates too (CUDA's __NV_SATFINITE).
    assert_eq!(acc, vec![0x48, 0x4a, F8E5M2::MAX.0, F8E5M2::MAX.0]);
    assert_eq!(F8E5M2(0x48).to_f32(), 8.0);
    assert_eq!(F8E5M2(0x4a).to_f32(), 12.0);

    // Products round once: 3 * 3 = 9 is exact in E4M3 and a tie between 8 and 10 in E5M2.
    let mut dst = vec![0u8; 2];
    reduce_to(
        DataType::F8E4M3,
        ReduceOp::Prod,
        &mut dst,
        &e4m3(&[3.0, -0.5]),
        &e4m3(&[3.0, 0.75]),
    );
    assert_eq!(dst, e4m3(&[9.0, -0.375]));
    reduce_to(
        DataType::F8E5M2,
        ReduceOp::Prod,
        &mut dst,
        &e5m2(&[3.0, -0.5]),
        &e5m2(&[3.0, 0.75]),
    );
    assert_eq!(dst, e5m2(&[8.0, -0.375]));

    // Max/min: NaN wins, -0 below +0.
    let a = vec![F8E4M3::NAN.0, 0x00, 0x80];
    let b = e4m3(&[1.0, -0.0, 2.0]);
    let mut max = vec![0u8; 3];
    reduce_to(DataType::F8E4M3, ReduceOp::Max, &mut max, &a, &b);
    assert_eq!(max, vec![F8E4M3::NAN.0, 0x00, F8E4M3::from_f32(2.0).0]);
    let mut min = vec![0u8; 3];
    reduce_to(DataType::F8E4M3, ReduceOp::Min, &mut min, &b, &a);
    assert_eq!(min, vec![F8E4M3::NAN.0, 0x80, 0x80]);
}

#[test]
fn fp8_avg_divides_in_f32_and_rounds_once() {
    // 1/3: E4M3 0.34375 (0x2b), E5M2 0.3125 (0x35).
    let mut buf = e4m3(&[1.0, -6.0, 448.0]);
    finalize_avg(DataType::F8E4M3, &mut buf, 3);
    assert_eq!(
        buf,
        vec![
            0x2b,
            F8E4M3::from_f32(-2.0).0,
            F8E4M3::from_f32(448.0 / 3.0).0
        ]
    );
    assert_eq!(F8E4M3(0x2b).to_f32(), 0.34375);
    let mut buf = e5m2(&[1.0, -6.0]);
    finalize_avg(DataType::F8E5M2, &mut buf, 3);
    assert_eq!(buf, vec![0x35, F8E5M2::from_f32(-2.0).0]);
    assert_eq!(F8E5M2(0x35).to_f32(), 0.3125);
    // NaN stays NaN; a subnormal result is rounded exactly.
    let mut buf = vec![F8E5M2::NAN.0, 0x01];
    finalize_avg(DataType::F8E5M2, &mut buf, 2);
    assert_eq!(buf, vec![F8E5M2::NAN.0, 0x00]); // 2^-17 ties to zero
    let mut buf = vec![0x03];
    finalize_avg(DataType::F8E4M3, &mut buf, 2);
    assert_eq!(buf, vec![0x02]); // 1.5 * 2^-9 ties to 2 * 2^-9
}

/// `x * s` for one element, the slow, obvious way.
fn scale_reference(dtype: DataType, x: &[u8], s: &[u8]) -> Vec<u8> {
    macro_rules! int {
        ($t:ty) => {
            <$t>::from_ne_bytes(x.try_into().unwrap())
                .wrapping_mul(<$t>::from_ne_bytes(s.try_into().unwrap()))
                .to_ne_bytes()
                .to_vec()
        };
    }
    let u16_of = |b: &[u8]| u16::from_ne_bytes(b.try_into().unwrap());
    match dtype {
        DataType::I8 => int!(i8),
        DataType::U8 => int!(u8),
        DataType::I32 => int!(i32),
        DataType::U32 => int!(u32),
        DataType::I64 => int!(i64),
        DataType::U64 => int!(u64),
        DataType::F32 => {
            let f = |b: &[u8]| f32::from_ne_bytes(b.try_into().unwrap());
            (f(x) * f(s)).to_ne_bytes().to_vec()
        }
        DataType::F64 => {
            let f = |b: &[u8]| f64::from_ne_bytes(b.try_into().unwrap());
            (f(x) * f(s)).to_ne_bytes().to_vec()
        }
        DataType::F16 => {
            let f = |b: &[u8]| F16(u16_of(b)).to_f32();
            F16::from_f32(f(x) * f(s)).0.to_ne_bytes().to_vec()
        }
        DataType::Bf16 => {
            let f = |b: &[u8]| Bf16(u16_of(b)).to_f32();
            Bf16::from_f32(f(x) * f(s)).0.to_ne_bytes().to_vec()
        }
        DataType::F8E4M3 => {
            vec![F8E4M3::from_f32(F8E4M3(x[0]).to_f32() * F8E4M3(s[0]).to_f32()).0]
        }
        DataType::F8E5M2 => {
            vec![F8E5M2::from_f32(F8E5M2(x[0]).to_f32() * F8E5M2(s[0]).to_f32()).0]
        }
    }
}

#[test]
fn scale_matches_reference_for_every_type_length_alignment() {
    let mut rng = Rng(7);
    for dtype in DataType::ALL {
        for n in LENGTHS {
            for _ in 0..3 {
                let src = random_elements(dtype, n, &mut rng);
                let scalar = random_elements(dtype, 1, &mut rng);
                let want: Vec<u8> = src
                    .chunks_exact(dtype.size())
                    .flat_map(|x| scale_reference(dtype, x, &scalar))
                    .collect();
                for (dst_off, src_off) in [(0, 0), (1, 1), (0, 3), (5, 0)] {
                    let what = format!("{dtype:?} n={n} offsets={dst_off},{src_off}");
                    let mut dst = Buf::new(&vec![0x5a; src.len()], dst_off);
                    let s = Buf::new(&src, src_off);
                    scale_to(dtype, dst.bytes_mut(), s.bytes(), &scalar);
                    assert_same(dtype, ReduceOp::Prod, dst.bytes(), &want, &what);
                    assert_eq!(s.bytes(), &src[..], "{what}: src changed");
                    dst.check_guards(&what);

                    let mut buf = Buf::new(&src, dst_off);
                    scale_in_place(dtype, buf.bytes_mut(), &scalar);
                    assert_same(dtype, ReduceOp::Prod, buf.bytes(), &want, &what);
                    buf.check_guards(&what);
                }
            }
        }
    }
}

#[test]
fn scale_edge_cases() {
    // Integers wrap; floats round once.
    let mut buf = ints(&[100i8, -3, 64]);
    scale_in_place(DataType::I8, &mut buf, &ints(&[3i8]));
    assert_eq!(buf, ints(&[44i8, -9, -64]));
    let mut dst = vec![0u8; 8];
    scale_to(
        DataType::U32,
        &mut dst,
        &ints(&[u32::MAX, 7]),
        &ints(&[2u32]),
    );
    assert_eq!(dst, ints(&[u32::MAX - 1, 14]));
    let mut buf = ints(&[F16::from_f32(3.0), F16::MAX]);
    scale_in_place(DataType::F16, &mut buf, &ints(&[F16(0x3555)]));
    assert_eq!(
        buf,
        ints(&[
            F16::from_f32(3.0 * F16(0x3555).to_f32()),
            F16::from_f32(65504.0 * F16(0x3555).to_f32())
        ])
    );
    let mut buf = ints(&[F16::MAX]);
    scale_in_place(DataType::F16, &mut buf, &ints(&[F16::from_f32(2.0)]));
    assert_eq!(buf, ints(&[F16::INFINITY]));
    let mut buf = e4m3(&[256.0, 0.5]);
    scale_in_place(DataType::F8E4M3, &mut buf, &e4m3(&[2.0]));
    assert_eq!(buf, e4m3(&[448.0, 1.0])); // saturates
    let mut buf = ints(&[1.0f64, -2.0]);
    scale_in_place(DataType::F64, &mut buf, &ints(&[0.1f64]));
    assert_eq!(buf, ints(&[0.1f64, -0.2]));

    // A scalar shorter than one element writes nothing; extra scalar bytes are ignored.
    let mut buf = ints(&[5i32, 6]);
    scale_in_place(DataType::I32, &mut buf, &[2, 0, 0]);
    assert_eq!(buf, ints(&[5i32, 6]));
    scale_in_place(DataType::I32, &mut buf, &ints(&[2i32, 99]));
    assert_eq!(buf, ints(&[10i32, 12]));
    let mut dst = vec![0u8; 8];
    scale_to(DataType::F32, &mut dst, &ints(&[1.0f32]), &[]);
    assert_eq!(dst, vec![0u8; 8]);

    // Ragged lengths: the whole elements both buffers hold; nothing else is touched.
    let mut dst = vec![0u8; 10];
    scale_to(
        DataType::I32,
        &mut dst,
        &ints(&[1i32, 2, 3]),
        &ints(&[3i32]),
    );
    assert_eq!(&dst[..8], &ints(&[3i32, 6])[..]);
    assert_eq!(&dst[8..], &[0, 0]);
    let mut dst = vec![0u8; 12];
    scale_to(DataType::I32, &mut dst, &ints(&[1i32]), &ints(&[3i32]));
    assert_eq!(dst, [ints(&[3i32]), vec![0u8; 8]].concat());
}
