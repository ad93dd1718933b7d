//! The f32 product kernels (x86-64), chosen at run time. AVX-512: tiles of up to 12 rows
//! by 32 columns of `C`, 24 accumulators in `zmm` registers, one fused multiply-add per
//! broadcast `A` value and 16-column half of the `B` row; with it, the transposing
//! weight-panel pack, and the same tile turned around for `x · Wᵀ` with the weights read
//! where they lie ([`weights_in_place`]: weight values broadcast, the inputs packed).
//! AVX2 + FMA: tiles of 6 rows by 16 columns for CPUs without AVX-512.
//!
//! Soundness rests on two local facts, checked in this file: a kernel runs only after
//! [`super::cpu`] has seen the CPU and the operating system support its instructions,
//! and every pointer it reads or writes lies inside a slice whose length [`matmul`]
//! (or [`pack_transposed`], [`matmul_avx2`]) checked against the shape (masked loads and
//! stores never touch lanes past a row's used width).
#![allow(unsafe_code)]

use core::arch::x86_64::{
    __m512, __mmask16, _mm512_add_ps, _mm512_fmadd_ps, _mm512_mask_storeu_ps,
    _mm512_maskz_loadu_ps, _mm512_mul_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm_prefetch,
    _MM_HINT_T1,
};

use super::cpu::{avx2_fma_available, avx512_available};
use super::Product;

/// Rows of `C` per tile.
const MR: usize = 12;
/// Columns of `C` per tile (two 16-lane vectors).
const NR: usize = 32;

/// `C = A · B` (or `+=`) with the AVX-512 kernel.
///
/// Sound for any input: returns without touching `c` unless [`avx512_available`] holds
/// and every operand holds the elements `p` addresses (the caller normally checked both).
///
/// `next` is memory the caller reads after this product (the next weight panel): its
/// cache lines are prefetched into L2 spread over the tiles, so streaming a weight matrix
/// from DRAM overlaps with arithmetic instead of following it.
pub(super) fn matmul(p: &Product, a: &[f32], b: &[f32], c: &mut [f32], next: super::RowsRef<'_>) {
    if !avx512_available() || p.check(a.len(), b.len(), c.len()).is_err() {
        return;
    }
    let (next_ptr, next_len) = next.byte_range();
    let next_lines = next_len.div_ceil(64);
    let tiles = p.m.div_ceil(MR) * p.n.div_ceil(NR);
    let per_tile = next_lines.div_ceil(tiles.max(1));
    let mut fetched = 0usize;
    let mut j0 = 0;
    while j0 < p.n {
        let cols = NR.min(p.n - j0);
        let mut i0 = 0;
        while i0 < p.m {
            let rows = MR.min(p.m - i0);
            let lines = per_tile
                .min(2 * p.k)
                .min(next_lines.saturating_sub(fetched));
            let at = Tile {
                i0,
                j0,
                cols,
                prefetch: next_ptr.wrapping_add(fetched * 64),
                prefetch_lines: lines,
            };
            fetched += lines;
            // SAFETY: AVX-512F is available (checked above), and `Tile` addresses rows
            // `i0 .. i0 + rows` and columns `j0 .. j0 + cols` of operands whose spans were
            // checked against `p` (rows <= m - i0, cols <= n - j0).
            unsafe {
                match rows {
                    12 => tile::<12>(p, a, b, c, at),
                    11 => tile::<11>(p, a, b, c, at),
                    10 => tile::<10>(p, a, b, c, at),
                    9 => tile::<9>(p, a, b, c, at),
                    8 => tile::<8>(p, a, b, c, at),
                    7 => tile::<7>(p, a, b, c, at),
                    6 => tile::<6>(p, a, b, c, at),
                    5 => tile::<5>(p, a, b, c, at),
                    4 => tile::<4>(p, a, b, c, at),
                    3 => tile::<3>(p, a, b, c, at),
                    2 => tile::<2>(p, a, b, c, at),
                    _ => tile::<1>(p, a, b, c, at),
                }
            }
            i0 += rows;
        }
        j0 += cols;
    }
}

/// Weight rows of one tile of [`weights_in_place`].
const W_ROWS: usize = 12;
/// Weight rows per chunk of [`weights_in_place`] (a multiple of `W_ROWS`).
const CHUNK_ROWS: usize = 48;

/// `y[t · stride + o] = scale[o] · Σ_k W[o][k] · X[t][k] + bias[o]` for `t < n`, `o < rows`,
/// with `W` (`rows × cols`, row-major) read in place, each value broadcast, and `X` given
/// packed (`xt`: with `s = super::panel_side(n)`, 32 or for a batch of at most 16 inputs
/// 16, panel `g` of `cols × s` values at `g · s · cols` holds `X[s·g + j][k]` at `k · s +
/// j`). Tiles of 12 weight rows by 32 inputs (24 accumulators, as [`matmul`]'s), transposed
/// in registers on the way out. Each sum runs over `k` in order from zero, as [`matmul`]'s
/// does, so the two agree to the last bit.
///
/// Sound for any input: returns `false`, touching nothing, unless AVX-512F (or, on a CPU
/// without it, AVX2 + FMA: `x86_avx2`'s tiles, the same bits) is available and every
/// operand holds what the shape addresses.
#[allow(clippy::too_many_arguments)]
pub(super) fn weights_in_place(
    w: super::RowsRef<'_>,
    rows: usize,
    cols: usize,
    xt: &[f32],
    n: usize,
    y: &mut [f32],
    stride: usize,
    [scale, bias]: [Option<&[f32]>; 2],
    next: super::RowsRef<'_>,
) -> bool {
    let wide = avx512_available();
    in_place_on(wide, w, [rows, cols], xt, n, y, stride, [scale, bias], next)
}

/// [`weights_in_place`] on the AVX-512 tiles (`wide`) or the AVX2 ones; `false`, touching
/// nothing, when this CPU lacks that kernel's features or an operand is short.
#[allow(clippy::too_many_arguments)]
pub(super) fn in_place_on(
    wide: bool,
    w: super::RowsRef<'_>,
    [rows, cols]: [usize; 2],
    xt: &[f32],
    n: usize,
    y: &mut [f32],
    stride: usize,
    [scale, bias]: [Option<&[f32]>; 2],
    next: super::RowsRef<'_>,
) -> bool {
    let (w_ptr, w_len) = w.raw_parts();
    let side = super::panel_side(n);
    let groups = n.div_ceil(side);
    let runs = if wide {
        avx512_available()
    } else {
        avx2_fma_available()
    };
    if !runs || !super::in_place_shape_ok([rows, cols, n, stride], w_len, xt, y, [scale, bias]) {
        return false;
    }
    if !wide {
        // SAFETY: AVX2 and FMA are available and every operand was checked above.
        unsafe {
            super::x86_avx2::weights_in_place_avx2(
                w_ptr,
                [rows, cols],
                xt,
                n,
                y,
                stride,
                [scale, bias],
                next.byte_range(),
            )
        };
        return true;
    }
    // Weight rows in chunks of `CHUNK_ROWS` (kept in L2 while every input group passes
    // over them, so that consecutive tiles complete the same output cache lines); the
    // next chunk (or, after the last, what the caller reads next) is prefetched over the
    // tiles of the first input group, one line per `k` step.
    let (after_ptr, after_len) = next.byte_range();
    let mut c0 = 0;
    while c0 < rows {
        let chunk = CHUNK_ROWS.min(rows - c0);
        let (pf, pf_lines) = chunk_prefetch(
            w_ptr,
            [rows, cols],
            [c0, chunk, CHUNK_ROWS],
            (after_ptr, after_len),
        );
        for g in 0..groups {
            let t0 = g * side;
            let mut o0 = c0;
            while o0 < c0 + chunk {
                let valid = W_ROWS.min(c0 + chunk - o0);
                let out = Out {
                    y: y.as_mut_ptr().wrapping_add(t0 * stride + o0),
                    stride,
                    tokens: side.min(n - t0),
                    scale: scale.map(|s| s.as_ptr().wrapping_add(o0)),
                    bias: bias.map(|b| b.as_ptr().wrapping_add(o0)),
                };
                // This tile's share of the prefetch: the next chunk's lines from its row
                // o0 - c0 on (`cols / 16` lines a row).
                let first = (o0 - c0) * cols / 16;
                let lines = if g == 0 {
                    pf_lines.saturating_sub(first).min(cols)
                } else {
                    0
                };
                // SAFETY: AVX-512F is available (checked above); rows o0 .. o0 + valid of
                // W (inside the checked `rows · cols`), panel g of `xt` (inside the
                // checked `groups · side · cols`), outputs of inputs t0 .. t0 + tokens and
                // columns o0 .. o0 + valid of y (inside the checked span), scale and bias
                // values o0 .. o0 + valid (checked `rows` long). Prefetches never fault.
                unsafe {
                    let (w, xt) = (
                        w_ptr.wrapping_add(o0 * cols),
                        xt.as_ptr().wrapping_add(g * side * cols),
                    );
                    let pf = (pf.wrapping_add(first * 64), lines);
                    // A group of at most 16 inputs takes the one-vector tile (the
                    // two-vector one would compute as many lanes again for nothing).
                    if out.tokens > 16 {
                        tile_rows::<2>(valid, w, [cols, side], xt, out, pf)
                    } else {
                        tile_rows::<1>(valid, w, [cols, side], xt, out, pf)
                    }
                };
                o0 += valid;
            }
        }
        c0 += chunk;
    }
    true
}

/// What the tiles of an in-place product prefetch while they pass over the chunk of weight
/// rows `c0 .. c0 + chunk` (of `rows × cols`, chunks of `chunk_rows`): the next chunk, or after
/// the last one `after` (what the caller reads next); its start and its count of cache lines.
/// Shared by the AVX-512 and AVX2 products. Only addresses: nothing is read here.
pub(super) fn chunk_prefetch(
    w_ptr: *const f32,
    [rows, cols]: [usize; 2],
    [c0, chunk, chunk_rows]: [usize; 3],
    after: (*const u8, usize),
) -> (*const u8, usize) {
    let (start, len) = if c0 + chunk < rows {
        (
            w_ptr.wrapping_add((c0 + chunk) * cols).cast::<u8>(),
            chunk_rows.min(rows - c0 - chunk) * cols * 4,
        )
    } else {
        after
    };
    (start, len.div_ceil(64))
}

/// Where a tile of an in-place product writes: `tokens` rows of its outputs from `y`,
/// `stride` apart, with the output scale and bias of those columns.
#[derive(Clone, Copy)]
pub(super) struct Out {
    pub(super) y: *mut f32,
    pub(super) stride: usize,
    pub(super) tokens: usize,
    pub(super) scale: Option<*const f32>,
    pub(super) bias: Option<*const f32>,
}

/// [`tile_in_place`] for `valid` (1 ..= 12) weight rows.
///
/// # Safety
/// As [`tile_in_place`] with `R = valid`.
#[target_feature(enable = "avx512f")]
unsafe fn tile_rows<const V: usize>(
    valid: usize,
    w: *const f32,
    k: [usize; 2],
    xt: *const f32,
    out: Out,
    pf: (*const u8, usize),
) {
    // SAFETY: the caller's contract, for `valid` rows.
    unsafe {
        match valid {
            12 => tile_in_place::<12, V>(w, k, xt, out, pf),
            11 => tile_in_place::<11, V>(w, k, xt, out, pf),
            10 => tile_in_place::<10, V>(w, k, xt, out, pf),
            9 => tile_in_place::<9, V>(w, k, xt, out, pf),
            8 => tile_in_place::<8, V>(w, k, xt, out, pf),
            7 => tile_in_place::<7, V>(w, k, xt, out, pf),
            6 => tile_in_place::<6, V>(w, k, xt, out, pf),
            5 => tile_in_place::<5, V>(w, k, xt, out, pf),
            4 => tile_in_place::<4, V>(w, k, xt, out, pf),
            3 => tile_in_place::<3, V>(w, k, xt, out, pf),
            2 => tile_in_place::<2, V>(w, k, xt, out, pf),
            _ => tile_in_place::<1, V>(w, k, xt, out, pf),
        }
    }
}

/// One tile of [`weights_in_place`]: `R` (1 ..= 12) weight rows from `w` (`k` values
/// each, any alignment) by the first `16 · V` (`V` = 1 or 2) inputs of one packed panel
/// `xt` (`side` values a feature).
///
/// # Safety
/// AVX-512F must be available; `w` must address `R` rows of `k` readable `f32`s, `xt`
/// `side · k` values (`16 · V <= side`), and `out` its `tokens` (at most `16 · V`) rows
/// of `R` writable values (and as many scale and bias values).
#[target_feature(enable = "avx512f")]
unsafe fn tile_in_place<const R: usize, const V: usize>(
    w: *const f32,
    [k, side]: [usize; 2],
    xt: *const f32,
    out: Out,
    prefetch: (*const u8, usize),
) {
    use core::arch::x86_64::_mm512_loadu_ps;
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    let (pf, pf_lines) = prefetch;
    for kk in 0..k {
        if kk < pf_lines {
            _mm_prefetch::<_MM_HINT_T1>(pf.wrapping_add(kk * 64).cast::<i8>());
        }
        // SAFETY: values kk · side .. kk · side + 16 · V of the panel's side · k.
        let x: [__m512; V] = core::array::from_fn(|v| unsafe {
            _mm512_loadu_ps(xt.wrapping_add(kk * side + 16 * v))
        });
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: value kk < k of row r < R (unaligned read).
            let wv = _mm512_set1_ps(unsafe { w.wrapping_add(r * k + kk).read_unaligned() });
            for (a, x) in a.iter_mut().zip(&x) {
                *a = _mm512_fmadd_ps(wv, *x, *a);
            }
        }
    }
    if V == 1 {
        // Rows 0 .. R (zero past R) of tokens 0-15: after the transpose, lanes 0 .. R of
        // vector t hold token t's outputs.
        let block = core::array::from_fn(|i| acc.get(i).map_or(_mm512_setzero_ps(), |a| a[0]));
        // SAFETY: AVX-512F is available; outputs 0 .. R of the tile's columns, with their
        // scale and bias, for at most 16 tokens.
        unsafe { store_rows::<1>(transpose_16x16(block), out, 0, R) };
        return;
    }
    // Rows 8b .. 8b + 8 (zero past R) of tokens 0-15, then of tokens 16-31: after the
    // transpose, lanes 0-7 of vector t hold token t's outputs, lanes 8-15 token t + 16's.
    for b in 0..R.div_ceil(8) {
        let rows = (R - 8 * b).min(8);
        let block = core::array::from_fn(|i| {
            acc.get(8 * b + i % 8)
                .and_then(|a| a.get(i / 8))
                .copied()
                .unwrap_or(_mm512_setzero_ps())
        });
        // SAFETY: AVX-512F is available; outputs 8b .. 8b + rows of the tile's columns,
        // with their scale and bias.
        unsafe { store_rows::<2>(transpose_16x16(block), out, 8 * b, rows) };
    }
}

/// Stores `rows` outputs from column `c0` of a tile of [`tile_in_place`] from its
/// transposed block `col`, scaled and biased. For `V = 2` (`rows` 1 ..= 8): token `t`'s
/// outputs in lanes 0-7 of vector `t`, token `t + 16`'s in lanes 8-15; for `V = 1` (`rows`
/// 1 ..= 16): token `t`'s in lanes 0 .. rows of vector `t`. Always inlined, as
/// [`transpose_16x16`].
///
/// # Safety
/// AVX-512F must be available; `out` must address its `tokens` rows of at least
/// `c0 + rows` writable values, and as many scale and bias values.
#[inline(always)]
unsafe fn store_rows<const V: usize>(col: [__m512; 16], out: Out, c0: usize, rows: usize) {
    use core::arch::x86_64::_mm512_shuffle_f32x4;
    let m = lanes(rows);
    let m_hi = m << 8;
    // SAFETY: AVX-512F is available; `rows` scale and bias values from `c0` and the
    // outputs named below (the caller's contract), every access masked to them.
    unsafe {
        // The `rows` values (for `V = 2` the same in both halves).
        let both = |p: *const f32| {
            let v = _mm512_maskz_loadu_ps(m, p.wrapping_add(c0));
            if V == 2 {
                _mm512_shuffle_f32x4::<0x44>(v, v)
            } else {
                v
            }
        };
        let s = out.scale.map(both);
        let b = out.bias.map(both);
        let y = out.y.wrapping_add(c0);
        for (t, v) in col.iter().enumerate() {
            let mut v = *v;
            if let Some(s) = s {
                v = _mm512_mul_ps(v, s);
            }
            if let Some(b) = b {
                v = _mm512_add_ps(v, b);
            }
            // Output row t < tokens: `rows` values (masked).
            if t < out.tokens {
                _mm512_mask_storeu_ps(y.wrapping_add(t * out.stride), m, v);
            }
            // Output row t + 16 < tokens: lanes 8 .. 8 + rows stored 8 values before the
            // row's first (masked-off lanes are not touched).
            if V == 2 && t + 16 < out.tokens {
                _mm512_mask_storeu_ps(
                    y.wrapping_add((t + 16) * out.stride).wrapping_sub(8),
                    m_hi,
                    v,
                );
            }
        }
    }
}

/// Where one tile of `C` sits: rows from `i0`, columns `j0 .. j0 + cols` (`cols <= NR`).
#[derive(Clone, Copy)]
struct Tile {
    i0: usize,
    j0: usize,
    cols: usize,
    /// First of `prefetch_lines` (at most `2k`) cache lines to prefetch, one or two per
    /// `k` step.
    prefetch: *const u8,
    prefetch_lines: usize,
}

/// Lane mask of the first `n` of 16 lanes (`n` may exceed 16).
pub(super) fn lanes(n: usize) -> __mmask16 {
    if n >= 16 {
        0xFFFF
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// One `R × cols` tile.
///
/// # Safety
/// AVX-512F must be available; rows `t.i0 .. t.i0 + R` and columns `t.j0 .. t.j0 + t.cols`
/// must be inside the checked spans of `a`, `b` and `c` for the shape `p`.
#[target_feature(enable = "avx512f")]
unsafe fn tile<const R: usize>(p: &Product, a: &[f32], b: &[f32], c: &mut [f32], t: Tile) {
    let (m0, m1) = (lanes(t.cols), lanes(t.cols.saturating_sub(16)));
    // Pointer arithmetic wraps (never UB on its own); only in-span lanes are dereferenced.
    let a0 = a.as_ptr().wrapping_add(t.i0 * p.a_stride);
    let b0 = b.as_ptr().wrapping_add(t.j0);
    let c0 = c.as_mut_ptr().wrapping_add(t.i0 * p.c_stride + t.j0);
    let mut acc: [[__m512; 2]; R] = [[_mm512_setzero_ps(); 2]; R];
    for kk in 0..p.k {
        // Lines kk and k + kk: up to two per step. A hint only: prefetching never
        // faults, and the lines are inside `next`.
        if kk < t.prefetch_lines {
            _mm_prefetch::<_MM_HINT_T1>(t.prefetch.wrapping_add(kk * 64).cast::<i8>());
        }
        if p.k + kk < t.prefetch_lines {
            _mm_prefetch::<_MM_HINT_T1>(t.prefetch.wrapping_add((p.k + kk) * 64).cast::<i8>());
        }
        let brow = b0.wrapping_add(kk * p.b_stride);
        // SAFETY: row kk < k of B, columns j0 .. j0 + cols: in B's checked span; lanes
        // past `cols` are masked off and not read.
        let (w0, w1) = unsafe {
            (
                _mm512_maskz_loadu_ps(m0, brow),
                _mm512_maskz_loadu_ps(m1, brow.wrapping_add(16)),
            )
        };
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: row i0 + r < m and column kk < k of A: in A's checked span.
            let x = _mm512_set1_ps(unsafe { *a0.wrapping_add(r * p.a_stride + kk) });
            acc_r[0] = _mm512_fmadd_ps(x, w0, acc_r[0]);
            acc_r[1] = _mm512_fmadd_ps(x, w1, acc_r[1]);
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        let row = c0.wrapping_add(r * p.c_stride);
        let (mut v0, mut v1) = (acc_r[0], acc_r[1]);
        // SAFETY: columns j0 .. j0 + cols of row i0 + r < m of C: in C's checked span
        // (which `c: &mut` makes exclusive); lanes past `cols` are masked off.
        unsafe {
            if p.accumulate {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, row));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, row.wrapping_add(16)));
            }
            _mm512_mask_storeu_ps(row, m0, v0);
            _mm512_mask_storeu_ps(row.wrapping_add(16), m1, v1);
        }
    }
}

/// `panel[k · stride + j] = s[j] · W[j][k]` for `j < rows`, `k < cols` (`W` row-major,
/// `rows × cols`; `s` = `scale`, or 1): 16 × 16 blocks loaded as rows, transposed in
/// registers, stored as panel rows.
///
/// Sound for any input: returns `false`, touching nothing, unless AVX-512F is available,
/// `w` holds `rows · cols` values, `panel` holds `cols` rows of `stride >= rows` values and
/// `scale` (if any) `rows` values.
pub(super) fn pack_transposed(
    w: super::RowsRef<'_>,
    rows: usize,
    cols: usize,
    scale: Option<&[f32]>,
    panel: &mut [f32],
    stride: usize,
) -> bool {
    pack_on(avx512_available(), w, [rows, cols], scale, panel, stride)
}

/// [`pack_transposed`] on the AVX-512 kernel (`wide`) or, for CPUs without it, the AVX2 one
/// (`x86_avx2::pack_avx2`, 8 × 8 blocks; the same values); `false`, touching nothing, when
/// this CPU lacks that kernel's features or an operand is short.
pub(super) fn pack_on(
    wide: bool,
    w: super::RowsRef<'_>,
    [rows, cols]: [usize; 2],
    scale: Option<&[f32]>,
    panel: &mut [f32],
    stride: usize,
) -> bool {
    let (w_ptr, w_len) = w.raw_parts();
    let panel_need = Product::span(cols, rows, stride);
    let runs = if wide {
        avx512_available()
    } else {
        avx2_fma_available()
    };
    if !runs
        || rows.checked_mul(cols).is_none_or(|n| n > w_len)
        || panel_need.is_none_or(|n| n > panel.len())
        || scale.is_some_and(|s| s.len() < rows)
    {
        return false;
    }
    if !wide {
        // SAFETY: AVX2 is available; the spans of `w`, `panel` and `scale` were checked above.
        unsafe {
            super::x86_avx2::pack_avx2(w_ptr, [rows, cols], scale, panel.as_mut_ptr(), stride)
        };
        return true;
    }
    let mut j0 = 0;
    while j0 < rows {
        let mut k0 = 0;
        while k0 < cols {
            // SAFETY: AVX-512F is available; the block covers rows j0 .. j0 + 16 (only those
            // < rows are read) and columns k0 .. k0 + 16 (masked to < cols) of W, whose
            // `rows · cols` values were checked, and the matching panel cells, checked
            // against the panel span.
            unsafe { transpose_block(w_ptr, rows, cols, scale, panel, stride, [j0, k0]) };
            k0 += 16;
        }
        j0 += 16;
    }
    true
}

/// One 16 × 16 block of [`pack_transposed`] at row `j0`, column `k0` of `W`.
///
/// # Safety
/// AVX-512F must be available; `w` must point at `rows · cols` readable `f32`s (any
/// alignment), `scale` hold `rows` values if present, and `panel` hold
/// `(cols - 1) · stride + rows` values.
#[target_feature(enable = "avx512f")]
unsafe fn transpose_block(
    w: *const f32,
    rows: usize,
    cols: usize,
    scale: Option<&[f32]>,
    panel: &mut [f32],
    stride: usize,
    [j0, k0]: [usize; 2],
) {
    let kmask = lanes(cols - k0);
    let jmask = lanes(rows - j0);
    // r[i] = W[j0 + i][k0 .. k0 + 16] (zero past the last row or column).
    let r: [__m512; 16] = core::array::from_fn(|i| {
        if j0 + i < rows {
            // SAFETY: row j0 + i < rows, columns masked to < cols.
            unsafe { _mm512_maskz_loadu_ps(kmask, w.wrapping_add((j0 + i) * cols + k0)) }
        } else {
            _mm512_setzero_ps()
        }
    });
    // SAFETY: AVX-512F is available (this function's contract).
    let col = unsafe { transpose_16x16(r) };
    // SAFETY: scale values j0 .. j0 + 16, masked to < rows: inside `scale`.
    let sv = scale.map(|s| unsafe { _mm512_maskz_loadu_ps(jmask, s.as_ptr().wrapping_add(j0)) });
    let base = panel.as_mut_ptr().wrapping_add(k0 * stride + j0);
    for (k, v) in col.iter().enumerate().take(cols - k0) {
        let v = match sv {
            Some(s) => _mm512_mul_ps(*v, s),
            None => *v,
        };
        // SAFETY: panel row k0 + k < cols, cells j0 .. j0 + 16 masked to < rows <= stride.
        unsafe { _mm512_mask_storeu_ps(base.wrapping_add(k * stride), jmask, v) };
    }
}

/// The 16 × 16 transpose of `r` in registers: lane `i` of result `k` is lane `k` of `r[i]`.
/// Always inlined (a call would pass the 16 registers through memory), hence no
/// `target_feature` of its own.
///
/// # Safety
/// AVX-512F must be available (every caller is an AVX-512F function).
#[inline(always)]
unsafe fn transpose_16x16(r: [__m512; 16]) -> [__m512; 16] {
    use core::arch::x86_64::_mm512_shuffle_f32x4;
    // SAFETY: AVX-512F is available (the caller's contract); register operations only.
    unsafe {
        // Within each 128-bit lane l, u[4q + c] holds column 4l + c of rows 4q .. 4q + 4.
        let u = transpose_4x4_in_lanes(r);
        // Gather the four 128-bit lanes of each column: v[c] / v[c + 4] pick lanes
        // {0, 2} / {1, 3} of rows 0-7 and 8-15, the final shuffle joins them.
        let lo: [__m512; 8] = core::array::from_fn(|i| {
            let (c, half) = (i % 4, i / 4);
            _mm512_shuffle_f32x4::<0x88>(u[c + 8 * half], u[c + 4 + 8 * half])
        });
        let hi: [__m512; 8] = core::array::from_fn(|i| {
            let (c, half) = (i % 4, i / 4);
            _mm512_shuffle_f32x4::<0xDD>(u[c + 8 * half], u[c + 4 + 8 * half])
        });
        core::array::from_fn(|k| {
            let c = k % 4;
            match k / 4 {
                0 => _mm512_shuffle_f32x4::<0x88>(lo[c], lo[c + 4]),
                1 => _mm512_shuffle_f32x4::<0x88>(hi[c], hi[c + 4]),
                2 => _mm512_shuffle_f32x4::<0xDD>(lo[c], lo[c + 4]),
                _ => _mm512_shuffle_f32x4::<0xDD>(hi[c], hi[c + 4]),
            }
        })
    }
}

/// The first two stages of every in-register transpose here: pairs of rows interleaved,
/// then pairs of pairs, so that within each 128-bit lane `l` the result's vector `4q + c`
/// holds column `4l + c` of rows `4q .. 4q + 4` (`N` rows, a multiple of 4).
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) fn transpose_4x4_in_lanes<const N: usize>(r: [__m512; N]) -> [__m512; N] {
    use core::arch::x86_64::{_mm512_shuffle_ps, _mm512_unpackhi_ps, _mm512_unpacklo_ps};
    let t: [__m512; N] = core::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    core::array::from_fn(|i| {
        let (q, c) = (i / 4, i % 4);
        let (a, b) = (t[4 * q + c / 2], t[4 * q + 2 + c / 2]);
        // Low or high 64-bit halves of each 128-bit lane of a and b.
        if c % 2 == 0 {
            _mm512_shuffle_ps::<0x44>(a, b)
        } else {
            _mm512_shuffle_ps::<0xEE>(a, b)
        }
    })
}

/// Rows of `C` per tile of the AVX2 kernel.
const AVX2_MR: usize = 6;
/// Columns of `C` per tile of the AVX2 kernel (two 8-lane vectors).
const AVX2_NR: usize = 16;

/// `C = A · B` (or `+=`) with the AVX2 + FMA kernel for the columns of whole 16-column
/// tiles; returns how many columns it computed (a multiple of 16, 0 when the CPU lacks
/// AVX2 or FMA): the caller finishes the rest.
///
/// Sound for any input: computes nothing unless AVX2 and FMA are available and every
/// operand holds the elements `p` addresses.
pub(super) fn matmul_avx2(p: &Product, a: &[f32], b: &[f32], c: &mut [f32]) -> usize {
    if !avx2_fma_available() || p.check(a.len(), b.len(), c.len()).is_err() {
        return 0;
    }
    let whole = p.n / AVX2_NR * AVX2_NR;
    let mut j0 = 0;
    while j0 < whole {
        let mut i0 = 0;
        while i0 < p.m {
            let rows = AVX2_MR.min(p.m - i0);
            // SAFETY: AVX2 and FMA are available; rows i0 .. i0 + rows <= m and columns
            // j0 .. j0 + 16 <= n lie in the spans checked above.
            unsafe {
                match rows {
                    6 => tile_avx2::<6>(p, a, b, c, [i0, j0]),
                    5 => tile_avx2::<5>(p, a, b, c, [i0, j0]),
                    4 => tile_avx2::<4>(p, a, b, c, [i0, j0]),
                    3 => tile_avx2::<3>(p, a, b, c, [i0, j0]),
                    2 => tile_avx2::<2>(p, a, b, c, [i0, j0]),
                    _ => tile_avx2::<1>(p, a, b, c, [i0, j0]),
                }
            }
            i0 += rows;
        }
        j0 += AVX2_NR;
    }
    whole
}

/// One `R × 16` tile of the AVX2 kernel at row `i0`, column `j0`.
///
/// # Safety
/// AVX2 and FMA available; rows `i0 .. i0 + R` and columns `j0 .. j0 + 16` inside the
/// checked spans of `a`, `b` and `c`.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const R: usize>(
    p: &Product,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    [i0, j0]: [usize; 2],
) {
    use core::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps,
        _mm256_setzero_ps, _mm256_storeu_ps,
    };
    let a0 = a.as_ptr().wrapping_add(i0 * p.a_stride);
    let b0 = b.as_ptr().wrapping_add(j0);
    let c0 = c.as_mut_ptr().wrapping_add(i0 * p.c_stride + j0);
    let mut acc: [[__m256; 2]; R] = [[_mm256_setzero_ps(); 2]; R];
    for kk in 0..p.k {
        let brow = b0.wrapping_add(kk * p.b_stride);
        // SAFETY: row kk < k of B, columns j0 .. j0 + 16 <= n.
        let (w0, w1) = unsafe { (_mm256_loadu_ps(brow), _mm256_loadu_ps(brow.wrapping_add(8))) };
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: row i0 + r < m, column kk < k of A.
            let x = unsafe { _mm256_broadcast_ss(&*a0.wrapping_add(r * p.a_stride + kk)) };
            acc_r[0] = _mm256_fmadd_ps(x, w0, acc_r[0]);
            acc_r[1] = _mm256_fmadd_ps(x, w1, acc_r[1]);
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        let row = c0.wrapping_add(r * p.c_stride);
        // SAFETY: row i0 + r < m, columns j0 .. j0 + 16 <= n of C (exclusive via `c`).
        unsafe {
            let (mut v0, mut v1) = (acc_r[0], acc_r[1]);
            if p.accumulate {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(row));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(row.wrapping_add(8)));
            }
            _mm256_storeu_ps(row, v0);
            _mm256_storeu_ps(row.wrapping_add(8), v1);
        }
    }
}
