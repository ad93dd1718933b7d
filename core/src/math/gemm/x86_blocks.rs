//! The adapter's block-diagonal kernels (x86-64, AVX-512): `x <- F x` for the rotation
//! factors of a GS chain, blocks on contiguous runs of each row (the first factor) or on
//! strided entries (the second), in place or from a source row.
//!
//! Soundness rests on the same two local facts as the product kernels: a kernel runs
//! only after [`super::cpu::avx512_available`] holds, and every pointer lies inside a
//! slice whose length the entry point checked against the shape.
#![allow(unsafe_code)]

use core::arch::x86_64::{
    __m512, _mm512_fmadd_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_setzero_ps,
};

use super::cpu::avx512_available;
use super::x86_products::{lanes, transpose_4x4_in_lanes};

/// `x <- F x` (or `F^T x`) for every row of `x` (`rows × n`), where `F` is block-diagonal
/// with `k = n / B` blocks of `B × B` on contiguous runs of each row, stored column-major
/// one after the other (`blocks[j·B² + t·B + c]` = entry `(c, t)` of block `j`).
///
/// `16 / B` blocks share one 16-lane vector: per block entry `t`, an in-lane shuffle
/// broadcasts `x[t]` of each block across its lanes ([`block_entries`]) and one fused
/// multiply-add adds column `t`. Blocks are the outer loop within a band of rows, so
/// their coefficients stay in registers across the band.
///
/// Sound for any input: returns `false`, touching nothing, unless AVX-512F is available,
/// `B` is 4, 8 or 16, `n` is a multiple of 16, `x` is whole rows and `blocks` holds `n·B`.
pub(crate) fn contiguous_blocks<const B: usize>(
    x: &mut [f32],
    n: usize,
    blocks: &[f32],
    transpose: bool,
) -> bool {
    if !contiguous_shape_ok::<B>(x.len(), n, blocks) {
        return false;
    }
    // One raw pointer for the whole call: every access derives from it (a fresh
    // `as_mut_ptr` per row would retag `x` and invalidate the others).
    let xp = x.as_mut_ptr();
    // SAFETY: AVX-512F is available; the shapes were checked above; reading and writing
    // through the same pointer is the in-place case.
    unsafe { contiguous_blocks_avx512::<B>(xp, xp, x.len() / n, n, blocks, transpose) };
    true
}

/// What both contiguous-block entry points require: AVX-512F, `B` in {4, 8, 16}, `n` a
/// multiple of 16, `len` whole rows of `n`, and `n·B` coefficients.
fn contiguous_shape_ok<const B: usize>(len: usize, n: usize, blocks: &[f32]) -> bool {
    avx512_available()
        && matches!(B, 4 | 8 | 16)
        && n != 0
        && n.is_multiple_of(16)
        && len.is_multiple_of(n)
        && blocks.len() >= n * B
}

/// As [`contiguous_blocks`], reading the rows from `src` and writing them to `dst` (same
/// length): the first factor of a rotation without a copy of its input first.
pub(crate) fn contiguous_blocks_from<const B: usize>(
    src: &[f32],
    dst: &mut [f32],
    n: usize,
    blocks: &[f32],
    transpose: bool,
) -> bool {
    if src.len() != dst.len() || !contiguous_shape_ok::<B>(src.len(), n, blocks) {
        return false;
    }
    // SAFETY: AVX-512F is available; the shapes were checked above; `src` and `dst` are
    // distinct borrows of equal length.
    unsafe {
        contiguous_blocks_avx512::<B>(
            src.as_ptr(),
            dst.as_mut_ptr(),
            src.len() / n,
            n,
            blocks,
            transpose,
        )
    };
    true
}

/// # Safety
/// AVX-512F available, `B` in {4, 8, 16}, `n % 16 == 0`, `src` readable and `dst`
/// writable for `rows · n` values (the same pointer for in place, or non-overlapping),
/// `blocks.len() >= n·B`.
// Register arrays indexed by row: explicit indices keep them in registers.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f")]
unsafe fn contiguous_blocks_avx512<const B: usize>(
    src: *const f32,
    xp: *mut f32,
    rows: usize,
    n: usize,
    blocks: &[f32],
    transpose: bool,
) {
    use core::arch::x86_64::{_mm512_loadu_ps, _mm512_storeu_ps};
    // Rows in bands of 8: every column group passes over the band's rows, and the
    // coefficients of a group are rebuilt per band (a few loads and lane moves; for `F^T
    // x` with blocks other than 8 × 8 a gather, which therefore takes all rows as one
    // band). Few rows per band keep few streams in flight: rows 1536 wide sit 6 KiB
    // apart, so 16 rows read and 16 written at one column fall into a handful of L1 sets
    // (the contiguous factor of a 1536-wide rotation took 1.5x as long with bands of 16).
    let band = match (transpose, B) {
        (true, 8) => 16,
        (true, _) => rows,
        (false, _) => 8,
    };
    let mut r0 = 0;
    while r0 < rows {
        let r1 = rows.min(r0 + band);
        let mut v0 = 0;
        while v0 < n {
            // coef[t] lane l: entry (l % B, t) of block (v0 + l) / B, or entry (t, l % B)
            // for the transpose.
            let cv: [__m512; B] = if !transpose {
                // SAFETY: the 16 / B blocks of this group are the B·16 values at v0·B,
                // inside `blocks` (n·B values, v0 + 16 <= n).
                unsafe { columns::<B>(blocks.as_ptr().wrapping_add(v0 * B)) }
            } else if B == 8 {
                // SAFETY: as above; rows of a block are the columns transposed in registers.
                let cols = unsafe { columns::<B>(blocks.as_ptr().wrapping_add(v0 * B)) };
                let mut eight = [_mm512_setzero_ps(); 8];
                eight.copy_from_slice(&cols[..8]);
                let rows8 = transpose_8x8_halves(eight);
                core::array::from_fn(|t| rows8[t % 8])
            } else {
                let first = v0 / B;
                let mut coef = [[0.0f32; 16]; B];
                for (t, ct) in coef.iter_mut().enumerate() {
                    for (l, v) in ct.iter_mut().enumerate() {
                        let at = (first + l / B) * B * B + (l % B) * B + t;
                        *v = blocks.get(at).copied().unwrap_or(0.0);
                    }
                }
                // SAFETY: `coef[t]` is 16 values.
                core::array::from_fn(|t| unsafe { _mm512_loadu_ps(coef[t].as_ptr()) })
            };
            // Four rows at a time: four independent multiply-add chains hide the latency
            // (every store unconditional, so the accumulators stay in registers); the last
            // rows of the band one at a time.
            let mut r = r0;
            while r + 4 <= r1 {
                let p: [*mut f32; 4] = core::array::from_fn(|i| xp.wrapping_add((r + i) * n + v0));
                // SAFETY: rows r .. r + 4 <= rows, columns v0 .. v0 + 16 <= n: inside `src`.
                let xv: [__m512; 4] = core::array::from_fn(|i| unsafe {
                    _mm512_loadu_ps(src.wrapping_add((r + i) * n + v0))
                });
                let e: [[__m512; B]; 4] = core::array::from_fn(|i| block_entries::<B>(xv[i]));
                let mut acc = [_mm512_setzero_ps(); 4];
                for t in 0..B {
                    for i in 0..4 {
                        acc[i] = _mm512_fmadd_ps(e[i][t], cv[t], acc[i]);
                    }
                }
                for i in 0..4 {
                    // SAFETY: as for the loads; the four rows are distinct.
                    unsafe { _mm512_storeu_ps(p[i], acc[i]) };
                }
                r += 4;
            }
            while r < r1 {
                let p = xp.wrapping_add(r * n + v0);
                // SAFETY: row r < rows, columns v0 .. v0 + 16 <= n: inside `src`.
                let xv = unsafe { _mm512_loadu_ps(src.wrapping_add(r * n + v0)) };
                let e = block_entries::<B>(xv);
                let mut acc = _mm512_setzero_ps();
                for (et, c) in e.iter().zip(&cv) {
                    acc = _mm512_fmadd_ps(*et, *c, acc);
                }
                // SAFETY: as for the load.
                unsafe { _mm512_storeu_ps(p, acc) };
                r += 1;
            }
            v0 += 16;
        }
        r0 = r1;
    }
}

/// Entry `t` of each lane's block broadcast across that block's lanes, for every `t <
/// B` (`16 / B` blocks of `B` in `x`). One lane-crossing shuffle per group of four
/// entries brings the group into every 128-bit lane of its block; in-lane `vpermilps`
/// then splat each entry. This CPU family issues in-lane shuffles beside the
/// multiply-adds, where a `vpermps` per entry competes with them for the same pipes.
#[target_feature(enable = "avx512f")]
#[inline]
fn block_entries<const B: usize>(x: __m512) -> [__m512; B] {
    use core::arch::x86_64::_mm512_shuffle_f32x4;
    let splat4 = |v: __m512| {
        [
            in_lane_splat::<0x00>(v),
            in_lane_splat::<0x55>(v),
            in_lane_splat::<0xAA>(v),
            in_lane_splat::<0xFF>(v),
        ]
    };
    match B {
        4 => {
            let e = splat4(x);
            core::array::from_fn(|t| e[t % 4])
        }
        8 => {
            // 128-bit lanes (0, 0, 2, 2) and (1, 1, 3, 3): each block's first and
            // second group of four in both of its lanes.
            let lo = splat4(_mm512_shuffle_f32x4::<0xA0>(x, x));
            let hi = splat4(_mm512_shuffle_f32x4::<0xF5>(x, x));
            core::array::from_fn(|t| if t < 4 { lo[t % 4] } else { hi[t % 4] })
        }
        _ => {
            let q = [
                splat4(_mm512_shuffle_f32x4::<0x00>(x, x)),
                splat4(_mm512_shuffle_f32x4::<0x55>(x, x)),
                splat4(_mm512_shuffle_f32x4::<0xAA>(x, x)),
                splat4(_mm512_shuffle_f32x4::<0xFF>(x, x)),
            ];
            core::array::from_fn(|t| q[(t / 4) % 4][t % 4])
        }
    }
}

/// `vpermilps` with an immediate, written as an instruction: LLVM's shuffle combiner
/// would otherwise fold it with the lane moves of [`block_entries`] into one lane-crossing
/// permute per entry, the very cost this avoids. Under Miri (no inline assembly) the
/// intrinsic.
#[target_feature(enable = "avx512f")]
#[inline]
fn in_lane_splat<const IMM: i32>(v: __m512) -> __m512 {
    #[cfg(not(miri))]
    {
        let out: __m512;
        // SAFETY: `vpermilps` with an immediate reads and writes registers only; AVX-512F
        // is enabled for this function.
        unsafe {
            core::arch::asm!(
                "vpermilps {o}, {v}, {imm}",
                o = lateout(zmm_reg) out,
                v = in(zmm_reg) v,
                imm = const IMM,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        out
    }
    #[cfg(miri)]
    {
        core::arch::x86_64::_mm512_permute_ps::<IMM>(v)
    }
}

/// Transposes the two 8 × 8 matrices held in the 256-bit halves of `r` (row `i` of each
/// in half `h` of `r[i]`): unpacks, in-lane shuffles, then 128-bit lane moves.
#[target_feature(enable = "avx512f")]
pub(super) fn transpose_8x8_halves(r: [__m512; 8]) -> [__m512; 8] {
    use core::arch::x86_64::_mm512_shuffle_f32x4;
    // u[4q + c] lane L (of each 128-bit lane) = column 4L + c of rows 4q .. 4q + 4.
    let u = transpose_4x4_in_lanes(r);
    // Column c of the 8 rows: 128-bit lane (c / 4) of u[c % 4] and u[4 + c % 4] in each half.
    core::array::from_fn(|c| {
        let (a, b) = (u[c % 4], u[4 + c % 4]);
        let v = if c < 4 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xDD>(a, b)
        };
        _mm512_shuffle_f32x4::<0xD8>(v, v)
    })
}

/// Column `t` of each of the `16 / B` consecutive column-major `B × B` blocks at `p`, as
/// one vector per `t` (lanes `i·B .. (i+1)·B` from block `i`).
///
/// # Safety
/// AVX-512F available, `B` in {4, 8, 16}, `p` points at `16·B` readable values.
#[target_feature(enable = "avx512f")]
unsafe fn columns<const B: usize>(p: *const f32) -> [__m512; B] {
    use core::arch::x86_64::{
        _mm256_loadu_pd, _mm512_castpd256_pd512, _mm512_castpd_ps, _mm512_insertf64x4,
        _mm512_loadu_ps, _mm512_shuffle_f32x4,
    };
    if B == 8 {
        // Two blocks; column t is the 8 values at 8t of each, the second inserted into the
        // upper half (two loads and an insert, no shuffle of whole vectors).
        return core::array::from_fn(|t| {
            // SAFETY: 8t + 8 <= 64 and 64 + 8t + 8 <= 128 = 16·B values.
            let (a, b) = unsafe {
                (
                    _mm256_loadu_pd(p.wrapping_add(8 * t).cast()),
                    _mm256_loadu_pd(p.wrapping_add(64 + 8 * t).cast()),
                )
            };
            _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castpd256_pd512(a), b))
        });
    }
    // z[i] = values 16·i .. 16·i + 16.
    // SAFETY: i < B, so 16·i + 16 <= 16·B.
    let z: [__m512; B] =
        core::array::from_fn(|i| unsafe { _mm512_loadu_ps(p.wrapping_add(16 * i)) });
    core::array::from_fn(|t| match B {
        // One block: column t is z[t].
        16 => z[t],
        // Four blocks z[0..4]; column t is 128-bit lane t of each: lanes (t, t) of z[0],
        // z[1] and of z[2], z[3], then joined.
        _ => {
            let (lo, hi) = match t {
                0 => (
                    _mm512_shuffle_f32x4::<0x00>(z[0], z[1]),
                    _mm512_shuffle_f32x4::<0x00>(z[2], z[3]),
                ),
                1 => (
                    _mm512_shuffle_f32x4::<0x55>(z[0], z[1]),
                    _mm512_shuffle_f32x4::<0x55>(z[2], z[3]),
                ),
                2 => (
                    _mm512_shuffle_f32x4::<0xAA>(z[0], z[1]),
                    _mm512_shuffle_f32x4::<0xAA>(z[2], z[3]),
                ),
                _ => (
                    _mm512_shuffle_f32x4::<0xFF>(z[0], z[1]),
                    _mm512_shuffle_f32x4::<0xFF>(z[2], z[3]),
                ),
            };
            // lo = [z0.t, z0.t, z1.t, z1.t], hi = [z2.t, z2.t, z3.t, z3.t] -> lanes 0, 2 of
            // each: [z0.t, z1.t, z2.t, z3.t].
            _mm512_shuffle_f32x4::<0x88>(lo, hi)
        }
    })
}

/// `x <- F x` (or `F^T x`) for every row of `x` (`rows × n`), where `F`'s `k = n / b`
/// blocks read strided entries: block `j` reads `x[j], x[j + k], ..., x[j + (b-1)k]` (the
/// second GS factor), with coefficients interleaved across blocks
/// (`blocks[(c·b + t)·k + j]` = entry `(c, t)` of block `j`). Sixteen blocks per vector:
/// `b²` fused multiply-adds per 16 blocks, all `b` inputs loaded before any output is
/// stored, so it works in place.
///
/// Sound for any input: returns `false`, touching nothing, unless AVX-512F is available,
/// `2 <= b <= 16`, `b` divides `n`, `x` is whole rows and `blocks` holds `n·b` values.
pub(crate) fn strided_blocks(
    x: &mut [f32],
    n: usize,
    b: usize,
    blocks: &[f32],
    transpose: bool,
) -> bool {
    if !avx512_available()
        || !(2..=16).contains(&b)
        || n == 0
        || !n.is_multiple_of(b)
        || !x.len().is_multiple_of(n)
        || blocks.len() < n * b
    {
        return false;
    }
    // SAFETY: AVX-512F is available; the shapes were checked above.
    unsafe {
        match b {
            4 if x.len() > n => strided_blocks_avx512::<4, 4>(x, n, blocks, transpose),
            4 => strided_blocks_avx512::<4, 1>(x, n, blocks, transpose),
            8 if x.len() > n => strided_blocks_avx512::<8, 4>(x, n, blocks, transpose),
            8 => strided_blocks_avx512::<8, 1>(x, n, blocks, transpose),
            16 => strided_blocks_avx512::<16, 1>(x, n, blocks, transpose),
            _ => strided_blocks_any(x, n, b, blocks, transpose),
        }
    }
    true
}

/// [`strided_blocks`] for a compile-time block size `B`, `R` rows at a time (each
/// coefficient vector, loaded once, serves `R` rows).
///
/// # Safety
/// As [`strided_blocks_any`] with `b = B`.
// Register arrays indexed by row: explicit indices keep them in registers.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f")]
unsafe fn strided_blocks_avx512<const B: usize, const R: usize>(
    x: &mut [f32],
    n: usize,
    blocks: &[f32],
    transpose: bool,
) {
    let k = n / B;
    let rows = x.len() / n;
    // One raw pointer for the whole call (see `contiguous_blocks_avx512`).
    let xp = x.as_mut_ptr();
    // Whole groups of R rows here (every store unconditional, so the accumulators stay in
    // registers); the last rows one at a time.
    let full = rows / R * R;
    let mut r = 0;
    while r < full {
        let row: [*mut f32; R] = core::array::from_fn(|i| xp.wrapping_add((r + i) * n));
        let mut j0 = 0;
        while j0 < k {
            let mask = lanes(k - j0);
            // SAFETY: entries t·k + j0 .. (masked to < k) of rows < rows: inside `x`.
            let g: [[__m512; B]; R] = core::array::from_fn(|i| {
                core::array::from_fn(|t| unsafe {
                    _mm512_maskz_loadu_ps(mask, row[i].wrapping_add(t * k + j0))
                })
            });
            // Entry (c, t) of these blocks sits at (c·B + t)·k + j0, or (t·B + c)·k + j0
            // for the transpose: one pointer, stepped by `step` along t.
            let (step, next_c) = if transpose { (B * k, k) } else { (k, B * k) };
            let mut first = blocks.as_ptr().wrapping_add(j0);
            for c in 0..B {
                let mut acc = [_mm512_setzero_ps(); R];
                let mut wp = first;
                for t in 0..B {
                    // SAFETY: wp = blocks + entry·k + j0 with entry < B²; lanes masked to
                    // < k: inside `blocks` (n·B values).
                    let w = unsafe { _mm512_maskz_loadu_ps(mask, wp) };
                    for i in 0..R {
                        acc[i] = _mm512_fmadd_ps(w, g[i][t], acc[i]);
                    }
                    wp = wp.wrapping_add(step);
                }
                first = first.wrapping_add(next_c);
                for i in 0..R {
                    // SAFETY: entries c·k + j0 .. (masked) of row r + i < rows; every input of
                    // these blocks is already in `g`.
                    unsafe { _mm512_mask_storeu_ps(row[i].wrapping_add(c * k + j0), mask, acc[i]) };
                }
            }
            j0 += 16;
        }
        r += R;
    }
    if full < rows {
        if let Some(tail) = x.get_mut(full * n..) {
            // SAFETY: the same shapes, on whole rows of `x`.
            unsafe { strided_blocks_avx512::<B, 1>(tail, n, blocks, transpose) };
        }
    }
}

/// # Safety
/// AVX-512F available, `2 <= b <= 16`, `n % b == 0`, `x.len() % n == 0`,
/// `blocks.len() >= n·b`.
#[target_feature(enable = "avx512f")]
unsafe fn strided_blocks_any(x: &mut [f32], n: usize, b: usize, blocks: &[f32], transpose: bool) {
    let k = n / b;
    let rows = x.len() / n;
    let xp = x.as_mut_ptr();
    for r in 0..rows {
        let row = xp.wrapping_add(r * n);
        let mut j0 = 0;
        while j0 < k {
            let mask = lanes(k - j0);
            let mut g = [_mm512_setzero_ps(); 16];
            for (t, gt) in g.iter_mut().enumerate().take(b) {
                // SAFETY: entries t·k + j0 .. (masked to < k): inside row r.
                *gt = unsafe { _mm512_maskz_loadu_ps(mask, row.wrapping_add(t * k + j0)) };
            }
            for c in 0..b {
                let mut acc = _mm512_setzero_ps();
                for (t, gt) in g.iter().enumerate().take(b) {
                    let entry = if transpose { t * b + c } else { c * b + t };
                    // SAFETY: entry·k + j0 .. (masked to < k) < n·b: inside `blocks`.
                    let w = unsafe {
                        _mm512_maskz_loadu_ps(mask, blocks.as_ptr().wrapping_add(entry * k + j0))
                    };
                    acc = _mm512_fmadd_ps(w, *gt, acc);
                }
                // SAFETY: entries c·k + j0 .. (masked to < k): inside row r; every input
                // of these blocks is already in `g`.
                unsafe { _mm512_mask_storeu_ps(row.wrapping_add(c * k + j0), mask, acc) };
            }
            j0 += 16;
        }
    }
}

/// `P <- F P` for a feature-major panel `P` of `n` rows (features) of `stride` values,
/// of which the first `16 · halves` (inputs) are rotated, `F` block-diagonal with
/// `k = n / B` blocks of `B × B`: block `j` combines rows `j·B .. j·B + B` (`STRIDED =
/// false`, coefficients `blocks[j·B² + t·B + c]` for entry `(c, t)`) or rows
/// `j, j + k, ...` (`STRIDED`, coefficients `blocks[(c·B + t)·k + j]`), and writes each
/// output row back where its source row of the same index was. Per block and 16-input
/// half the `B` source rows are loaded into registers, then each output row is one chain
/// of `B` fused multiply-adds (entries in order `t = 0 .. B`) with broadcast
/// coefficients: no shuffles.
///
/// Sound for any input: returns `false`, touching nothing, unless AVX-512F (or, on a CPU
/// without it, AVX2 + FMA: `x86_avx2`'s kernel, the same bits) is available, `B` is 4, 8
/// or 16, `n` is a multiple of `B`, `16 · halves <= stride`, `panel` holds `n · stride`
/// values and `blocks` `n · B`.
pub(crate) fn panel_blocks<const B: usize, const STRIDED: bool>(
    panel: &mut [f32],
    n: usize,
    shape: [usize; 2],
    blocks: &[f32],
) -> bool {
    panel_on::<B, STRIDED>(avx512_available(), panel, n, shape, blocks)
}

/// [`panel_blocks`] on the AVX-512 kernel (`wide`) or the AVX2 one; `false`, touching
/// nothing, when this CPU lacks that kernel's features or the shape does not fit.
pub(super) fn panel_on<const B: usize, const STRIDED: bool>(
    wide: bool,
    panel: &mut [f32],
    n: usize,
    [halves, stride]: [usize; 2],
    blocks: &[f32],
) -> bool {
    let runs = if wide {
        avx512_available()
    } else {
        super::cpu::avx2_fma_available()
    };
    if !runs || !super::panel_shape_ok::<B>(panel.len(), n, [halves, stride], blocks) {
        return false;
    }
    let (p, c) = (panel.as_mut_ptr(), blocks.as_ptr());
    // SAFETY: the kernel's features are available; every row index below is < n (j < k,
    // t < B: j·B + t < n, j + t·k < n), every value index < 16 · halves <= stride, every
    // coefficient index < n · B; `panel` and `blocks` were checked to hold those.
    unsafe {
        if wide {
            panel_blocks_avx512::<B, STRIDED>(p, n, [halves, stride], c)
        } else {
            super::x86_avx2::panel_blocks_avx2::<B, STRIDED>(p, n, [halves, stride], c)
        }
    };
    true
}

/// The body of [`panel_blocks`].
///
/// # Safety
/// AVX-512F must be available; `panel` must address `n · stride` values and `blocks`
/// `n · B`, `n` a multiple of `B`, `16 · halves <= stride`.
#[target_feature(enable = "avx512f")]
unsafe fn panel_blocks_avx512<const B: usize, const STRIDED: bool>(
    panel: *mut f32,
    n: usize,
    [halves, stride]: [usize; 2],
    blocks: *const f32,
) {
    use core::arch::x86_64::{_mm512_loadu_ps, _mm512_set1_ps, _mm512_storeu_ps};
    let k = n / B;
    for j in 0..k {
        // Row t of block j, and where entry (c, t)'s coefficient is.
        let rows: [*mut f32; B] = core::array::from_fn(|t| {
            panel.wrapping_add(super::panel_row::<B, STRIDED>(j, t, k) * stride)
        });
        let coef =
            |c: usize, t: usize| blocks.wrapping_add(super::panel_coef::<B, STRIDED>(j, [c, t], k));
        for h in 0..halves {
            // SAFETY: rows of block j (< n), values 16h .. 16h + 16 <= stride.
            let src: [__m512; B] =
                core::array::from_fn(|t| unsafe { _mm512_loadu_ps(rows[t].add(16 * h)) });
            for (c, out) in rows.iter().enumerate() {
                let mut acc = _mm512_setzero_ps();
                for (t, s) in src.iter().enumerate() {
                    // SAFETY: coefficient index < n · B.
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(unsafe { *coef(c, t) }), *s, acc);
                }
                // SAFETY: row c of block j (< n), values 16h .. 16h + 16 <= stride.
                unsafe { _mm512_storeu_ps(out.add(16 * h), acc) };
            }
        }
    }
}
