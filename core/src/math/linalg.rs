//! Dense kernels: dot product and matrix-vector product, written so that LLVM
//! vectorises them on every target (eight independent accumulators, no `unsafe`).

use crate::{Error, Result};

/// Dot product of the common prefix of `a` and `b`.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Sum of `a`, accumulated in eight lanes (so it vectorises) and then pairwise.
pub fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut chunks = a.chunks_exact(8);
    for x in &mut chunks {
        for l in 0..8 {
            acc[l] += x[l];
        }
    }
    let tail: f32 = chunks.remainder().iter().sum();
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `y = W x` for a row-major `W` of shape `(rows, cols)`.
///
/// # Errors
/// [`Error::LengthMismatch`] when the slice lengths do not fit the shape. Never panics.
pub fn gemv(w: &[f32], rows: usize, cols: usize, x: &[f32], y: &mut [f32]) -> Result<()> {
    if x.len() != cols {
        return Err(Error::LengthMismatch {
            expected: cols,
            found: x.len(),
        });
    }
    if y.len() != rows {
        return Err(Error::LengthMismatch {
            expected: rows,
            found: y.len(),
        });
    }
    match rows.checked_mul(cols) {
        Some(t) if t == w.len() => {}
        _ => {
            return Err(Error::LengthMismatch {
                expected: rows.saturating_mul(cols),
                found: w.len(),
            })
        }
    }
    if cols == 0 {
        y.fill(0.0);
        return Ok(());
    }
    for (yi, row) in y.iter_mut().zip(w.chunks_exact(cols)) {
        *yi = dot(row, x);
    }
    Ok(())
}

/// `dst[c·rows + r] = src[r·cols + c]`: writes the transpose of a row-major `rows × cols`
/// matrix into `dst` (`cols × rows`). Both must hold at least `rows·cols` values.
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    // Short buffers leave `dst` as it is (callers size both from the same shape).
    let _ = super::gemm::pack_transposed(super::gemm::RowsRef::F32(src), rows, cols, dst, rows);
}
