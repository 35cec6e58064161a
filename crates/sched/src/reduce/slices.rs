//! Typed slice loops and the byte-buffer plumbing around them.
//!
//! A [`SliceKernel`] is one (type, op) pair applied to typed slices of equal length. The
//! `bytes_*` functions turn byte buffers into typed slices: in place when the addresses suit
//! the element type, otherwise through small aligned stack blocks (one extra copy in cache,
//! never a read out of bounds). Either way the typed loop runs through [`best_into`] /
//! [`best_to`], which pick a wider instruction set when the CPU has one; the arithmetic and
//! therefore the result bits are the same on every path.

use std::marker::PhantomData;

use bytemuck::{Pod, Zeroable};

use crate::reduce::arith::HalfFloat;

/// Elements per stack block on the unaligned path (at most 2 KiB per block).
const BLOCK: usize = 256;
/// Elements per `f32` block on the 16- and 8-bit float path.
pub(crate) const HALF_LANES: usize = 64;

/// One (type, op) pair applied to typed slices; extra elements of a longer slice are ignored.
pub(crate) trait SliceKernel {
    /// The element type.
    type Elem: Pod;
    /// `acc[i] = op(acc[i], incoming[i])`.
    fn combine_into(&self, acc: &mut [Self::Elem], incoming: &[Self::Elem]);
    /// `dst[i] = op(local[i], incoming[i])`.
    fn combine_to(&self, dst: &mut [Self::Elem], local: &[Self::Elem], incoming: &[Self::Elem]);
}

/// A native type combined directly.
pub(crate) struct Native<T, F>(pub F, pub PhantomData<T>);

impl<T: Pod, F: Fn(T, T) -> T> SliceKernel for Native<T, F> {
    type Elem = T;

    // Always inlined so that the loop is compiled inside the wider-ISA wrappers too.
    #[inline(always)]
    fn combine_into(&self, acc: &mut [T], incoming: &[T]) {
        for (a, b) in acc.iter_mut().zip(incoming) {
            *a = (self.0)(*a, *b);
        }
    }

    #[inline(always)]
    fn combine_to(&self, dst: &mut [T], local: &[T], incoming: &[T]) {
        for ((d, a), b) in dst.iter_mut().zip(local).zip(incoming) {
            *d = (self.0)(*a, *b);
        }
    }
}

/// A 16- or 8-bit float combined in `f32` blocks of [`HALF_LANES`].
pub(crate) struct Half<H, F>(pub F, pub PhantomData<H>);

impl<H: HalfFloat, F: Fn(f32, f32) -> f32> Half<H, F> {
    /// `op(x, y)` in `f32` for at most [`HALF_LANES`] elements (the shorter length counts).
    #[inline(always)]
    fn widened(&self, x: &[H], y: &[H]) -> [f32; HALF_LANES] {
        let mut wx = [0f32; HALF_LANES];
        let mut wy = [0f32; HALF_LANES];
        for (w, h) in wx.iter_mut().zip(x) {
            *w = h.widen();
        }
        for (w, h) in wy.iter_mut().zip(y) {
            *w = h.widen();
        }
        for (a, b) in wx.iter_mut().zip(&wy) {
            *a = (self.0)(*a, *b);
        }
        wx
    }
}

#[inline(always)]
fn narrow_block<H: HalfFloat>(out: &mut [H], w: &[f32; HALF_LANES]) {
    for (h, w) in out.iter_mut().zip(w) {
        *h = H::narrow(*w);
    }
}

impl<H: HalfFloat, F: Fn(f32, f32) -> f32> SliceKernel for Half<H, F> {
    type Elem = H;

    #[inline(always)]
    fn combine_into(&self, acc: &mut [H], incoming: &[H]) {
        // Exact chunks give the loops a constant trip count; the remainder takes the same path.
        let mut acc = acc.chunks_exact_mut(HALF_LANES);
        let mut inc = incoming.chunks_exact(HALF_LANES);
        for (a, b) in (&mut acc).zip(&mut inc) {
            let w = self.widened(a, b);
            narrow_block(a, &w);
        }
        let (a, b) = (acc.into_remainder(), inc.remainder());
        let w = self.widened(a, b);
        narrow_block(a, &w);
    }

    #[inline(always)]
    fn combine_to(&self, dst: &mut [H], local: &[H], incoming: &[H]) {
        let mut dst = dst.chunks_exact_mut(HALF_LANES);
        let mut loc = local.chunks_exact(HALF_LANES);
        let mut inc = incoming.chunks_exact(HALF_LANES);
        for ((d, a), b) in (&mut dst).zip(&mut loc).zip(&mut inc) {
            narrow_block(d, &self.widened(a, b));
        }
        let d = dst.into_remainder();
        narrow_block(d, &self.widened(loc.remainder(), inc.remainder()));
    }
}

/// `k.combine_into` on the widest instruction set this CPU offers.
#[inline]
fn best_into<K: SliceKernel>(k: &K, acc: &mut [K::Elem], incoming: &[K::Elem]) {
    #[cfg(target_arch = "x86_64")]
    if crate::reduce::x86::has_avx2() {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { crate::reduce::x86::avx2_into(k, acc, incoming) };
        return;
    }
    k.combine_into(acc, incoming);
}

/// `k.combine_to` on the widest instruction set this CPU offers.
#[inline]
fn best_to<K: SliceKernel>(k: &K, dst: &mut [K::Elem], local: &[K::Elem], incoming: &[K::Elem]) {
    #[cfg(target_arch = "x86_64")]
    if crate::reduce::x86::has_avx2() {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { crate::reduce::x86::avx2_to(k, dst, local, incoming) };
        return;
    }
    k.combine_to(dst, local, incoming);
}

/// Whole-element byte length common to all `lens`.
fn whole_len<T>(lens: &[usize]) -> usize {
    let size = std::mem::size_of::<T>();
    let shortest = lens.iter().copied().min().unwrap_or(0);
    shortest - shortest % size
}

fn is_aligned<T>(bytes: &[u8]) -> bool {
    (bytes.as_ptr() as usize) % std::mem::align_of::<T>() == 0
}

/// `acc = op(acc, incoming)` on the whole elements the two byte buffers share.
pub(crate) fn bytes_into<K: SliceKernel>(k: &K, acc: &mut [u8], incoming: &[u8]) {
    let n = whole_len::<K::Elem>(&[acc.len(), incoming.len()]);
    let (acc, incoming) = (&mut acc[..n], &incoming[..n]);
    if is_aligned::<K::Elem>(acc) && is_aligned::<K::Elem>(incoming) {
        if let (Ok(a), Ok(b)) = (
            bytemuck::try_cast_slice_mut(&mut *acc),
            bytemuck::try_cast_slice(incoming),
        ) {
            best_into(k, a, b);
            return;
        }
    }
    let step = BLOCK * std::mem::size_of::<K::Elem>();
    let mut x = [K::Elem::zeroed(); BLOCK];
    let mut y = [K::Elem::zeroed(); BLOCK];
    for (a, b) in acc.chunks_mut(step).zip(incoming.chunks(step)) {
        let m = a.len() / std::mem::size_of::<K::Elem>();
        let (x, y) = (&mut x[..m], &mut y[..m]);
        bytemuck::cast_slice_mut(&mut *x).copy_from_slice(a);
        bytemuck::cast_slice_mut(&mut *y).copy_from_slice(b);
        best_into(k, x, y);
        a.copy_from_slice(bytemuck::cast_slice(x));
    }
}

/// `dst = op(local, incoming)` on the whole elements the three byte buffers share.
pub(crate) fn bytes_to<K: SliceKernel>(k: &K, dst: &mut [u8], local: &[u8], incoming: &[u8]) {
    let n = whole_len::<K::Elem>(&[dst.len(), local.len(), incoming.len()]);
    let (dst, local, incoming) = (&mut dst[..n], &local[..n], &incoming[..n]);
    if is_aligned::<K::Elem>(dst) && is_aligned::<K::Elem>(local) && is_aligned::<K::Elem>(incoming)
    {
        if let (Ok(d), Ok(a), Ok(b)) = (
            bytemuck::try_cast_slice_mut(&mut *dst),
            bytemuck::try_cast_slice(local),
            bytemuck::try_cast_slice(incoming),
        ) {
            best_to(k, d, a, b);
            return;
        }
    }
    let step = BLOCK * std::mem::size_of::<K::Elem>();
    let mut x = [K::Elem::zeroed(); BLOCK];
    let mut y = [K::Elem::zeroed(); BLOCK];
    for ((d, a), b) in dst
        .chunks_mut(step)
        .zip(local.chunks(step))
        .zip(incoming.chunks(step))
    {
        let m = d.len() / std::mem::size_of::<K::Elem>();
        let (x, y) = (&mut x[..m], &mut y[..m]);
        bytemuck::cast_slice_mut(&mut *x).copy_from_slice(a);
        bytemuck::cast_slice_mut(&mut *y).copy_from_slice(b);
        best_into(k, x, y);
        d.copy_from_slice(bytemuck::cast_slice(x));
    }
}

/// `x = f(x)` for every whole element of `buf`, at any alignment.
pub(crate) fn map_bytes<T: Pod>(buf: &mut [u8], f: impl Fn(T) -> T) {
    let n = whole_len::<T>(&[buf.len()]);
    let buf = &mut buf[..n];
    if is_aligned::<T>(buf) {
        if let Ok(v) = bytemuck::try_cast_slice_mut::<u8, T>(&mut *buf) {
            for x in v {
                *x = f(*x);
            }
            return;
        }
    }
    let mut tmp = [T::zeroed(); BLOCK];
    for chunk in buf.chunks_mut(BLOCK * std::mem::size_of::<T>()) {
        let t = &mut tmp[..chunk.len() / std::mem::size_of::<T>()];
        bytemuck::cast_slice_mut(&mut *t).copy_from_slice(chunk);
        for x in t.iter_mut() {
            *x = f(*x);
        }
        chunk.copy_from_slice(bytemuck::cast_slice(t));
    }
}

/// `dst = f(src)` for every whole element the two buffers share, at any alignment.
pub(crate) fn map_bytes_to<T: Pod>(dst: &mut [u8], src: &[u8], f: impl Fn(T) -> T) {
    let n = whole_len::<T>(&[dst.len(), src.len()]);
    let (dst, src) = (&mut dst[..n], &src[..n]);
    if is_aligned::<T>(dst) && is_aligned::<T>(src) {
        if let (Ok(d), Ok(s)) = (
            bytemuck::try_cast_slice_mut::<u8, T>(&mut *dst),
            bytemuck::try_cast_slice::<u8, T>(src),
        ) {
            for (d, s) in d.iter_mut().zip(s) {
                *d = f(*s);
            }
            return;
        }
    }
    let step = BLOCK * std::mem::size_of::<T>();
    let mut tmp = [T::zeroed(); BLOCK];
    for (d, s) in dst.chunks_mut(step).zip(src.chunks(step)) {
        let t = &mut tmp[..d.len() / std::mem::size_of::<T>()];
        bytemuck::cast_slice_mut(&mut *t).copy_from_slice(s);
        for x in t.iter_mut() {
            *x = f(*x);
        }
        d.copy_from_slice(bytemuck::cast_slice(t));
    }
}
