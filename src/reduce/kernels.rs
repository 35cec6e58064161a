//! PLACEHOLDER (to be replaced): reduction kernels.
use crate::reduce::{DataType, ReduceOp};
/// `acc[i] = op(acc[i], incoming[i])`. Lengths equal, a multiple of `dtype.size()`.
pub fn reduce_into(dtype: DataType, op: ReduceOp, acc: &mut [u8], incoming: &[u8]) {
    let _ = (dtype, op, acc, incoming);
}
/// `dst[i] = op(local[i], incoming[i])`. Lengths equal, a multiple of `dtype.size()`.
pub fn reduce_to(dtype: DataType, op: ReduceOp, dst: &mut [u8], local: &[u8], incoming: &[u8]) {
    let _ = (dtype, op, dst, local, incoming);
}
/// Divides every element of `buf` by `nranks` (integers truncate toward zero).
pub fn finalize_avg(dtype: DataType, buf: &mut [u8], nranks: usize) {
    let _ = (dtype, buf, nranks);
}
