//! Host-memory helpers of the CPU fast paths: reading a tensor back, and the matrix product
//! kernel (`gemm`, the crate Burn's `flex` backend uses) with strided operands.

use burn::prelude::*;

/// A tensor's values, row-major, on the host.
pub fn host_values<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, String> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| format!("reading a tensor back from the device: {e:?}"))
}

/// `dst[m, n] (+)= lhs[m, k] @ rhs[k, n]`, `dst` row-major; `lhs` and `rhs` are given with their
/// row and column strides, so a transposed operand is read in place.
pub(crate) fn matmul(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
    (lhs, lhs_rs, lhs_cs): (&[f32], usize, usize),
    (rhs, rhs_rs, rhs_cs): (&[f32], usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // The kernel reads raw pointers: check every index it can touch lies inside the slices.
    assert!(dst.len() >= m * n, "matmul: destination too small");
    assert!(
        lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs,
        "matmul: left operand too small"
    );
    assert!(
        rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs,
        "matmul: right operand too small"
    );
    // SAFETY: the bounds are checked above; `dst` does not alias `lhs` or `rhs` (a `&mut` and
    // two `&` borrows); strides are non-negative and fit in isize because the slices exist.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
