//! x86-64 fast paths, chosen at run time: the portable slice loops recompiled for AVX2, and
//! f16 conversion with the F16C instructions.
//!
//! Both compute exactly what the portable code computes (the same `f32`/`f64`/integer
//! operations, never fused; `vcvtps2ph` with an explicit round-to-nearest-even, which quiets
//! NaNs and keeps their top payload bits just as [`F16::from_f32`] does), so ranks on
//! different CPUs agree bit for bit.

use std::arch::x86_64::{
    __m256, _mm256_cvtph_ps, _mm256_cvtps_ph, _mm_loadu_si128, _mm_storeu_si128,
    _MM_FROUND_TO_NEAREST_INT,
};
use std::marker::PhantomData;

use crate::reduce::slices::{Half, SliceKernel, HALF_LANES};
use crate::reduce::F16;

/// Lanes of one F16C conversion.
const LANES: usize = 8;

/// Whether the AVX2 versions of the loops can run here (the answer is cached by `std`).
#[inline]
pub(crate) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2") && !portable_only()
}

#[cfg(test)]
thread_local! {
    /// Set by tests to run the portable loops on this thread even where AVX2 exists.
    pub(crate) static PORTABLE_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[inline(always)]
fn portable_only() -> bool {
    #[cfg(test)]
    return PORTABLE_ONLY.with(|p| p.get());
    #[cfg(not(test))]
    false
}

/// [`SliceKernel::combine_into`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn avx2_into<K: SliceKernel>(k: &K, acc: &mut [K::Elem], incoming: &[K::Elem]) {
    k.combine_into(acc, incoming);
}

/// [`SliceKernel::combine_to`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn avx2_to<K: SliceKernel>(
    k: &K,
    dst: &mut [K::Elem],
    local: &[K::Elem],
    incoming: &[K::Elem],
) {
    k.combine_to(dst, local, incoming);
}

/// f16 combined through the F16C conversion instructions. Only [`F16c::detect`] makes one,
/// so holding one proves that the CPU has F16C and AVX2.
pub(crate) struct F16c<F> {
    op: F,
}

impl<F: Fn(f32, f32) -> f32> F16c<F> {
    /// The kernel for `op`, if this CPU has F16C and AVX2.
    pub(crate) fn detect(op: F) -> Option<F16c<F>> {
        (is_x86_feature_detected!("f16c") && is_x86_feature_detected!("avx2") && !portable_only())
            .then_some(F16c { op })
    }
}

impl<F: Fn(f32, f32) -> f32> SliceKernel for F16c<F> {
    type Elem = F16;

    fn combine_into(&self, acc: &mut [F16], incoming: &[F16]) {
        // SAFETY: `detect` checked F16C and AVX2 before making `self`.
        unsafe { f16c_into(&self.op, acc, incoming) }
    }

    fn combine_to(&self, dst: &mut [F16], local: &[F16], incoming: &[F16]) {
        // SAFETY: as above.
        unsafe { f16c_to(&self.op, dst, local, incoming) }
    }
}

/// # Safety
/// The CPU must support F16C and AVX2.
#[target_feature(enable = "avx2,f16c")]
unsafe fn f16c_into<F: Fn(f32, f32) -> f32>(op: &F, acc: &mut [F16], incoming: &[F16]) {
    let mut acc = acc.chunks_exact_mut(HALF_LANES);
    let mut inc = incoming.chunks_exact(HALF_LANES);
    for (a, b) in (&mut acc).zip(&mut inc) {
        // SAFETY: same features as this function.
        unsafe {
            let w = combine_block(op, widen_block(a), widen_block(b));
            narrow_block(a, w);
        }
    }
    Half(op, PhantomData).combine_into(acc.into_remainder(), inc.remainder());
}

/// # Safety
/// The CPU must support F16C and AVX2.
#[target_feature(enable = "avx2,f16c")]
unsafe fn f16c_to<F: Fn(f32, f32) -> f32>(
    op: &F,
    dst: &mut [F16],
    local: &[F16],
    incoming: &[F16],
) {
    let mut dst = dst.chunks_exact_mut(HALF_LANES);
    let mut loc = local.chunks_exact(HALF_LANES);
    let mut inc = incoming.chunks_exact(HALF_LANES);
    for ((d, a), b) in (&mut dst).zip(&mut loc).zip(&mut inc) {
        // SAFETY: same features as this function.
        unsafe {
            let w = combine_block(op, widen_block(a), widen_block(b));
            narrow_block(d, w);
        }
    }
    Half(op, PhantomData).combine_to(dst.into_remainder(), loc.remainder(), inc.remainder());
}

/// `op` on each lane of two widened blocks.
#[inline(always)]
fn combine_block<F: Fn(f32, f32) -> f32>(
    op: &F,
    x: [f32; HALF_LANES],
    y: [f32; HALF_LANES],
) -> [f32; HALF_LANES] {
    let mut out = x;
    for (a, b) in out.iter_mut().zip(&y) {
        *a = op(*a, *b);
    }
    out
}

/// The first [`HALF_LANES`] elements of `src` as `f32` (zeros past its end).
///
/// # Safety
/// The CPU must support F16C and AVX2.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn widen_block(src: &[F16]) -> [f32; HALF_LANES] {
    let mut out: [__m256; HALF_LANES / LANES] = bytemuck::Zeroable::zeroed();
    for (o, c) in out.iter_mut().zip(src.chunks_exact(LANES)) {
        // SAFETY: `c` holds exactly LANES f16, the 16 bytes the unaligned load reads.
        *o = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(c.as_ptr().cast())) };
    }
    bytemuck::cast::<[__m256; HALF_LANES / LANES], [f32; HALF_LANES]>(out)
}

/// Rounds `w` to f16 (nearest even) into the first [`HALF_LANES`] elements of `dst`.
///
/// # Safety
/// The CPU must support F16C and AVX2.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn narrow_block(dst: &mut [F16], w: [f32; HALF_LANES]) {
    let w = bytemuck::cast::<[f32; HALF_LANES], [__m256; HALF_LANES / LANES]>(w);
    for (v, c) in w.iter().zip(dst.chunks_exact_mut(LANES)) {
        // SAFETY: `c` holds exactly LANES f16, the 16 bytes the unaligned store writes.
        unsafe {
            _mm_storeu_si128(
                c.as_mut_ptr().cast(),
                _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(*v),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reduce::arith::Arith;

    /// The F16C path against the portable one, bit for bit, with every f16 pattern on each
    /// side of every op.
    #[test]
    fn f16c_matches_portable_conversion_bit_for_bit() {
        let all: Vec<F16> = (0..=u16::MAX).map(F16).collect();
        // Pair each pattern with patterns from all over the range.
        let other: Vec<F16> = (0..=u16::MAX)
            .map(|i| F16(i.wrapping_mul(40_503).rotate_left(7)))
            .collect();
        let ops: [fn(f32, f32) -> f32; 4] = [
            <f32 as Arith>::add,
            <f32 as Arith>::mul,
            <f32 as Arith>::max,
            <f32 as Arith>::min,
        ];
        for op in ops {
            let Some(hw) = F16c::detect(op) else {
                return; // nothing to compare on this CPU
            };
            let sw = Half(op, PhantomData);
            for (x, y) in [(&all, &other), (&other, &all)] {
                let mut want = vec![F16(0); x.len()];
                sw.combine_to(&mut want, x, y);
                let mut got = vec![F16(0); x.len()];
                hw.combine_to(&mut got, x, y);
                assert_eq!(got, want);
                let mut acc = x.clone();
                hw.combine_into(&mut acc, y);
                assert_eq!(acc, want);
            }
        }
    }
}
