//! Input patterns and the expected results, exact for every type and op.

use oxccl::{Bf16, Element, ReduceOp, F16, F8E4M3, F8E5M2};

/// An element the tool can fill and check.
pub trait Val: Element + Default {
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    const FLOAT: bool;
    /// Too narrow for sums of many small integers to be exact (fp8): reductions get sparse
    /// inputs (see [`input`]).
    const NARROW: bool = false;
    /// Relative error allowed in a float average (one rounding of the quotient).
    const AVG_TOL: f64 = 1e-2;
}

macro_rules! val {
    ($($t:ty, $float:expr);*) => {$(
        impl Val for $t {
            fn from_f64(v: f64) -> Self { v as $t }
            fn to_f64(self) -> f64 { self as f64 }
            const FLOAT: bool = $float;
        }
    )*};
}
val!(i8, false; u8, false; i32, false; u32, false; i64, false; u64, false; f32, true; f64, true);

impl Val for F16 {
    fn from_f64(v: f64) -> Self {
        F16::from_f32(v as f32)
    }
    fn to_f64(self) -> f64 {
        f64::from(self.to_f32())
    }
    const FLOAT: bool = true;
}

impl Val for Bf16 {
    fn from_f64(v: f64) -> Self {
        Bf16::from_f32(v as f32)
    }
    fn to_f64(self) -> f64 {
        f64::from(self.to_f32())
    }
    const FLOAT: bool = true;
}

impl Val for F8E4M3 {
    fn from_f64(v: f64) -> Self {
        F8E4M3::from_f32(v as f32)
    }
    fn to_f64(self) -> f64 {
        f64::from(self.to_f32())
    }
    const FLOAT: bool = true;
    const NARROW: bool = true;
    const AVG_TOL: f64 = 0.07; // 3 mantissa bits: half an ulp is 2^-4
}

impl Val for F8E5M2 {
    fn from_f64(v: f64) -> Self {
        F8E5M2::from_f32(v as f32)
    }
    fn to_f64(self) -> f64 {
        f64::from(self.to_f32())
    }
    const FLOAT: bool = true;
    const NARROW: bool = true;
    const AVG_TOL: f64 = 0.13; // 2 mantissa bits: half an ulp is 2^-3
}

/// Rank `r`'s input at element `i` (small integers: every sum, product, min, max and bitwise
/// combination of them is exact in every type, whatever the order of operations). With
/// `sparse` (fp8 reductions, whose sums of many small integers round), sums and averages
/// get one nonzero input per element, so that they are exact too.
pub fn input(op: ReduceOp, n: usize, r: usize, i: usize, sparse: bool) -> f64 {
    match op {
        ReduceOp::Prod => {
            if i % n == r {
                2.0
            } else {
                1.0
            }
        }
        ReduceOp::Sum | ReduceOp::Avg if sparse && i % n != r => 0.0,
        _ => ((i * 7 + r * 3) % 4) as f64,
    }
}

/// The reduction over all ranks at element `i`, for `T`'s inputs.
pub fn reduced<T: Val>(op: ReduceOp, n: usize, i: usize) -> f64 {
    let vals = (0..n).map(|r| input(op, n, r, i, T::NARROW));
    // Inputs are small non-negative integers.
    let bits = vals.clone().map(|v| v as u64);
    match op {
        ReduceOp::Sum => vals.sum(),
        ReduceOp::Prod => vals.product(),
        ReduceOp::Max => vals.fold(f64::MIN, f64::max),
        ReduceOp::Min => vals.fold(f64::MAX, f64::min),
        ReduceOp::Avg => {
            let s: f64 = vals.sum();
            if T::FLOAT {
                s / n as f64
            } else {
                (s / n as f64).trunc()
            }
        }
        ReduceOp::BAnd => bits.fold(u64::MAX, |a, b| a & b) as f64,
        ReduceOp::BOr => bits.fold(0, |a, b| a | b) as f64,
        ReduceOp::BXor => bits.fold(0, |a, b| a ^ b) as f64,
    }
}

/// Whether `got` is the expected value (averages of floats are rounded once in the
/// element's precision, so they get a relative tolerance).
pub fn same<T: Val>(got: T, want: f64, op: ReduceOp) -> bool {
    let g = got.to_f64();
    if T::FLOAT && op == ReduceOp::Avg {
        return (g - want).abs() <= T::AVG_TOL * want.abs().max(1.0);
    }
    g == want
}

/// What the data-movement ops (alltoall, gather, scatter) send from rank `src` to rank `dst`
/// at element `k` of the block: 0..=7, exact in every type, and for one `dst` and `k`
/// different for each of 8 consecutive sources, for one `src` and `k` for each of 8
/// consecutive destinations, so that a block taken from the wrong rank or delivered to the
/// wrong one is seen (whatever the block length).
pub fn moved(src: usize, dst: usize, k: usize) -> f64 {
    ((k * 7 + src * 3 + dst * 5) % 8) as f64
}

/// What the data-movement ops' outputs hold before the call: outside 0..=7 in every type
/// (unsigned ones included, where -1 would be 0).
pub const UNWRITTEN: f64 = 100.0;
