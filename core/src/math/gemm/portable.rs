//! The portable kernel: tiles of up to [`MR`] rows of `C` by [`NR`] columns, accumulated
//! in fixed-size arrays that LLVM keeps in vector registers on every target.

use super::{Product, RowsRef};

/// Rows of `C` computed together (each `A` value is loaded once per tile row).
const MR: usize = 6;
/// Columns of `C` computed together: two AVX2 vectors, four WebAssembly or NEON vectors.
const NR: usize = 16;

/// `C = A · B` (or `+=`); the caller has checked every length against `p`.
pub(super) fn matmul(p: &Product, a: &[f32], b: &[f32], c: &mut [f32]) {
    let mut j0 = 0;
    while j0 < p.n {
        let cols = NR.min(p.n - j0);
        let mut i0 = 0;
        // Whole tiles of MR rows, then the last rows one at a time (two instances of the
        // tile code in all: small on a microcontroller).
        while i0 < p.m {
            if p.m - i0 >= MR {
                tile::<MR>(p, a, b, c, i0, j0, cols);
                i0 += MR;
            } else {
                tile::<1>(p, a, b, c, i0, j0, cols);
                i0 += 1;
            }
        }
        j0 += cols;
    }
}

/// One `R × cols` tile of `C` at `(i0, j0)`, `cols <= NR`.
#[inline(always)]
fn tile<const R: usize>(
    p: &Product,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    i0: usize,
    j0: usize,
    cols: usize,
) {
    let k = p.k;
    let Some(rows) = p.a_rows::<R>(a, i0) else {
        return;
    };
    let mut acc = [[0.0f32; NR]; R];
    let b = b.get(j0..).unwrap_or(&[]);
    if cols == NR && p.b_stride >= NR {
        // Full tile: B's rows as exact 16-value arrays, no branch in the loop.
        for (kk, brow) in b.chunks(p.b_stride).take(k).enumerate() {
            let Some(bv) = brow.first_chunk::<NR>() else {
                return;
            };
            step(&mut acc, &rows, kk, bv);
        }
    } else {
        // Last, narrower tile: each row's used columns copied, the rest zero.
        let mut bv = [0.0f32; NR];
        for (kk, brow) in b.chunks(p.b_stride.max(1)).take(k).enumerate() {
            for (j, v) in bv.iter_mut().enumerate().take(cols) {
                *v = brow.get(j).copied().unwrap_or(0.0);
            }
            step(&mut acc, &rows, kk, &bv);
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        let s = (i0 + r) * p.c_stride + j0;
        if let Some(out) = c.get_mut(s..s + cols) {
            if p.accumulate {
                out.iter_mut().zip(acc_r).for_each(|(o, v)| *o += v);
            } else {
                out.copy_from_slice(&acc_r[..cols]);
            }
        }
    }
}

/// `acc[r] += A[r][kk] · bv` for the tile's rows.
#[inline(always)]
fn step<const R: usize>(acc: &mut [[f32; NR]; R], rows: &[&[f32]; R], kk: usize, bv: &[f32; NR]) {
    for (acc_r, row) in acc.iter_mut().zip(rows.iter()) {
        let x = row[kk];
        for (o, w) in acc_r.iter_mut().zip(bv) {
            *o += x * w;
        }
    }
}

/// `panel[k · stride + j] = s[j] · W[j][k]` (`s` = `scale`, or 1); the caller has checked
/// every span. Tiles of 8 × 8: eight `W` row segments decoded contiguously into a local
/// tile, then written out as eight panel-row segments.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "wasm32",
    target_arch = "aarch64"
))]
#[allow(clippy::needless_range_loop)] // `kk` indexes the tile's inner dimension
pub(super) fn pack_transposed(
    w: RowsRef<'_>,
    rows: usize,
    cols: usize,
    scale: Option<&[f32]>,
    panel: &mut [f32],
    stride: usize,
) {
    const T: usize = 8;
    let mut j0 = 0;
    while j0 < rows {
        let jn = (rows - j0).min(T);
        let s: [f32; T] =
            core::array::from_fn(|jj| scale.and_then(|s| s.get(j0 + jj)).copied().unwrap_or(1.0));
        let mut k0 = 0;
        while k0 < cols {
            let kn = (cols - k0).min(T);
            let mut tile = [[0.0f32; T]; T];
            for (jj, t) in tile.iter_mut().enumerate().take(jn) {
                let start = (j0 + jj) * cols + k0;
                if kn == T {
                    // A whole segment: a copy of known length, which LLVM inlines (with
                    // a run-time length each segment was a call to `memcpy`: 55% of
                    // MiniLM's forward at 16 tokens on the portable kernels).
                    w.read_array(start, t);
                } else {
                    w.read_into(start, &mut t[..kn]);
                }
            }
            for kk in 0..kn {
                let at = (k0 + kk) * stride + j0;
                if let Some(out) = panel.get_mut(at..at + jn) {
                    for (jj, o) in out.iter_mut().enumerate() {
                        *o = tile[jj][kk] * s[jj];
                    }
                }
            }
            k0 += T;
        }
        j0 += T;
    }
}

/// `panel[k · stride + j] = s[j] · W[j][k]` (`s` = `scale`, or 1); the caller has checked
/// every span. The compact loop for targets where code size matters more than packing
/// speed (microcontrollers): one element at a time, panel rows in order.
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "wasm32",
    target_arch = "aarch64"
)))]
pub(super) fn pack_transposed(
    w: RowsRef<'_>,
    rows: usize,
    cols: usize,
    scale: Option<&[f32]>,
    panel: &mut [f32],
    stride: usize,
) {
    for (k, prow) in panel.chunks_mut(stride).take(cols).enumerate() {
        for (j, v) in prow.iter_mut().take(rows).enumerate() {
            let mut x = [0.0f32];
            w.read_into(j * cols + k, &mut x);
            *v = x[0] * scale.and_then(|s| s.get(j)).copied().unwrap_or(1.0);
        }
    }
}
