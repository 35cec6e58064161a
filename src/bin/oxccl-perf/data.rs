//! Input patterns and the expected results, exact for every type and op.

use oxccl::{Bf16, Element, ReduceOp, F16};

/// An element the tool can fill and check.
pub trait Val: Element + Default {
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    const FLOAT: bool;
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

/// Rank `r`'s input at element `i` (small integers: every sum, product, min and max of them
/// is exact in every type, whatever the order of operations).
pub fn input(op: ReduceOp, n: usize, r: usize, i: usize) -> f64 {
    match op {
        ReduceOp::Prod => {
            if i % n == r {
                2.0
            } else {
                1.0
            }
        }
        _ => ((i * 7 + r * 3) % 4) as f64,
    }
}

/// The reduction over all ranks at element `i`.
pub fn reduced(op: ReduceOp, n: usize, i: usize, float: bool) -> f64 {
    let vals = (0..n).map(|r| input(op, n, r, i));
    match op {
        ReduceOp::Sum => vals.sum(),
        ReduceOp::Prod => vals.product(),
        ReduceOp::Max => vals.fold(f64::MIN, f64::max),
        ReduceOp::Min => vals.fold(f64::MAX, f64::min),
        ReduceOp::Avg => {
            let s: f64 = vals.sum();
            if float {
                s / n as f64
            } else {
                (s / n as f64).trunc()
            }
        }
    }
}

/// Whether `got` is the expected value (averages of floats are rounded once in the
/// element's precision, so they get a relative tolerance).
pub fn same<T: Val>(got: T, want: f64, op: ReduceOp) -> bool {
    let g = got.to_f64();
    if T::FLOAT && op == ReduceOp::Avg {
        return (g - want).abs() <= 1e-2 * want.abs().max(1.0);
    }
    g == want
}
