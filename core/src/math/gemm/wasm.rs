//! The WebAssembly SIMD128 kernel: tiles of [`MR`] rows of `C` by [`NR`] columns held in
//! `v128` accumulators, written with the `core::arch::wasm32` intrinsics (no `unsafe`:
//! loads and stores go through slices).
//!
//! The tile is 4 × 16: 16 accumulators, four `B` vectors and one broadcast `A` value per
//! step of `k`, and two steps per loop iteration. A browser's JIT gives this loop 16 vector
//! registers on x86-64, and it is bound by how many instructions it issues, not by its
//! arithmetic: per step of `k` the 4 × 16 tile needs 4 broadcasts and 4 loads for 16
//! multiply-adds, where the earlier 6 × 8 tile needed 6 and 2 for 12; unrolling by two
//! halves the loop's own bookkeeping. Measured in V8 (`bench/browser/minilm-node.mjs`: the
//! least CPU time of 12 MiniLM forwards at 134 tokens, three alternating runs per build):
//! 6 × 8 111-119 ms, 4 × 16 103-106 ms, 4 × 16 unrolled by two 96-98 ms (docs/wasm.md).
//! Relaxed SIMD's fused multiply-add took about 3% more off, not enough for a second module. Same sums in the same `k` order as the
//! portable kernel (a multiply, then an add: wasm SIMD128 has no fused multiply-add), so
//! the results are identical to the last bit.
//!
//! [`pack_transposed`] transposes `W` into the kernel's panel 4 × 4 values at a time
//! (four `v128` rows, eight shuffles), the same products `s[j] · W[j][k]` as the portable
//! packing, which moves one value at a time.

use core::arch::wasm32::{
    f32x4, f32x4_add, f32x4_extract_lane, f32x4_mul, f32x4_splat, i32x4_shuffle, v128,
};

use super::{Product, RowsRef};

/// Rows of `C` computed together.
const MR: usize = 4;
/// `v128` vectors per tile row.
const NV: usize = 4;
/// Columns of `C` computed together.
const NR: usize = 4 * NV;

/// `C = A · B` (or `+=`) on the whole `NR`-column tiles of `C`; returns the columns done
/// (the caller runs the portable kernel on the rest). The caller has checked every length
/// against `p`.
pub(super) fn matmul(p: &Product, a: &[f32], b: &[f32], c: &mut [f32]) -> usize {
    if p.b_stride < NR {
        return 0;
    }
    let full = p.n - p.n % NR;
    let mut j0 = 0;
    while j0 < full {
        let mut i0 = 0;
        while i0 < p.m {
            if p.m - i0 >= MR {
                tile::<MR>(p, a, b, c, i0, j0);
                i0 += MR;
            } else {
                tile::<1>(p, a, b, c, i0, j0);
                i0 += 1;
            }
        }
        j0 += NR;
    }
    full
}

/// One `R × NR` tile of `C` at `(i0, j0)`.
#[inline(always)]
fn tile<const R: usize>(p: &Product, a: &[f32], b: &[f32], c: &mut [f32], i0: usize, j0: usize) {
    let k = p.k;
    let Some(rows) = p.a_rows::<R>(a, i0) else {
        return;
    };
    let mut acc = [[f32x4_splat(0.0); NV]; R];
    let b = b.get(j0..).unwrap_or(&[]);
    let stride = p.b_stride;
    // One step of `k`: the tile's `B` row times each `A` row's value at `kk`.
    let mut step = |kk: usize| -> bool {
        let Some(bw) = b.get(kk * stride..).and_then(<[f32]>::first_chunk::<NR>) else {
            return false;
        };
        let bv: [v128; NV] =
            core::array::from_fn(|v| f32x4(bw[4 * v], bw[4 * v + 1], bw[4 * v + 2], bw[4 * v + 3]));
        for (acc_r, row) in acc.iter_mut().zip(rows.iter()) {
            let x = f32x4_splat(row.get(kk).copied().unwrap_or(0.0));
            for (o, w) in acc_r.iter_mut().zip(bv.iter()) {
                *o = f32x4_add(*o, f32x4_mul(x, *w));
            }
        }
        true
    };
    // Two steps per iteration: half the loop's bookkeeping per product.
    let mut kk = 0;
    while kk + 1 < k {
        if !(step(kk) && step(kk + 1)) {
            return;
        }
        kk += 2;
    }
    if kk < k && !step(kk) {
        return;
    }
    for (r, acc_r) in acc.iter().enumerate() {
        let s = (i0 + r) * p.c_stride + j0;
        let Some(out) = c.get_mut(s..s + NR) else {
            continue;
        };
        for (o4, v) in out.chunks_exact_mut(4).zip(acc_r.iter()) {
            let lanes = [
                f32x4_extract_lane::<0>(*v),
                f32x4_extract_lane::<1>(*v),
                f32x4_extract_lane::<2>(*v),
                f32x4_extract_lane::<3>(*v),
            ];
            if p.accumulate {
                o4.iter_mut().zip(lanes).for_each(|(o, x)| *o += x);
            } else {
                o4.copy_from_slice(&lanes);
            }
        }
    }
}

/// The four values of `w` from element `at`, as one vector.
#[inline(always)]
fn load4(w: RowsRef<'_>, at: usize) -> Option<v128> {
    match w {
        RowsRef::F32(v) => {
            let x = v.get(at..)?.first_chunk::<4>()?;
            Some(f32x4(x[0], x[1], x[2], x[3]))
        }
        RowsRef::LeBytes(v) => {
            let x = v.get(4 * at..)?.first_chunk::<16>()?;
            let f = |i: usize| f32::from_le_bytes([x[i], x[i + 1], x[i + 2], x[i + 3]]);
            Some(f32x4(f(0), f(4), f(8), f(12)))
        }
    }
}

/// Writes the lanes of `v` to `out[..4]`.
#[inline(always)]
fn store4(out: &mut [f32], v: v128) {
    if let Some(o) = out.first_chunk_mut::<4>() {
        *o = [
            f32x4_extract_lane::<0>(v),
            f32x4_extract_lane::<1>(v),
            f32x4_extract_lane::<2>(v),
            f32x4_extract_lane::<3>(v),
        ];
    }
}

/// `panel[k · stride + j] = s[j] · W[j][k]` (`s` = `scale`, or 1) for `W` of `rows ×
/// cols`, both multiples of 4; `false`, touching nothing, for other shapes (the portable
/// packing takes them). The caller has checked every span.
pub(super) fn pack_transposed(
    w: RowsRef<'_>,
    rows: usize,
    cols: usize,
    scale: Option<&[f32]>,
    panel: &mut [f32],
    stride: usize,
) -> bool {
    if !rows.is_multiple_of(4) || !cols.is_multiple_of(4) {
        return false;
    }
    for j0 in (0..rows).step_by(4) {
        let s: [v128; 4] = core::array::from_fn(|jj| {
            f32x4_splat(scale.and_then(|s| s.get(j0 + jj)).copied().unwrap_or(1.0))
        });
        for k0 in (0..cols).step_by(4) {
            let r: [v128; 4] = core::array::from_fn(|jj| {
                let v = load4(w, (j0 + jj) * cols + k0).unwrap_or(f32x4_splat(0.0));
                f32x4_mul(v, s[jj])
            });
            // Transpose: column kk of the 4 × 4 block becomes panel row k0 + kk.
            let t0 = i32x4_shuffle::<0, 4, 1, 5>(r[0], r[1]);
            let t1 = i32x4_shuffle::<2, 6, 3, 7>(r[0], r[1]);
            let t2 = i32x4_shuffle::<0, 4, 1, 5>(r[2], r[3]);
            let t3 = i32x4_shuffle::<2, 6, 3, 7>(r[2], r[3]);
            let cols4 = [
                i32x4_shuffle::<0, 1, 4, 5>(t0, t2),
                i32x4_shuffle::<2, 3, 6, 7>(t0, t2),
                i32x4_shuffle::<0, 1, 4, 5>(t1, t3),
                i32x4_shuffle::<2, 3, 6, 7>(t1, t3),
            ];
            for (kk, v) in cols4.into_iter().enumerate() {
                let at = (k0 + kk) * stride + j0;
                if let Some(out) = panel.get_mut(at..) {
                    store4(out, v);
                }
            }
        }
    }
    true
}
