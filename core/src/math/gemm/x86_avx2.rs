//! Kernels for x86-64 CPUs with AVX2 + FMA but not AVX-512 (most PCs), on 8-lane vectors:
//! the in-place product and the panel rotation (the bodies behind
//! `x86_products::weights_in_place` and `x86_blocks::panel_blocks`), the adapter's
//! block-diagonal row kernels (contiguous and strided blocks), the transposing weight
//! pack and an 8 × 8 register transpose. Every output is the same chain of fused
//! multiply-adds from zero, in the same order, as in the AVX-512 kernels, so the two
//! families give the same bits (the pack: the portable pack's). Without them such a CPU
//! transposed every weight panel at every product (73% of MiniLM's forward at 16 tokens)
//! and rotated an unmerged adapter's inputs through the portable loops.
//!
//! Soundness rests on the same two local facts as the other x86 kernels: a kernel runs
//! only after [`avx2_fma_available`] holds, and every pointer lies inside a slice whose
//! length the entry point checked against the shape.
#![allow(unsafe_code)]

use core::arch::x86_64::{
    __m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    _mm_prefetch, _MM_HINT_T1,
};

use super::cpu::avx2_fma_available;
use super::x86_products::{chunk_prefetch, Out};

/// Weight rows of one tile: 6 rows by 16 inputs is 12 accumulators, two input vectors
/// and a broadcast weight in the 16 `ymm` registers.
const W_ROWS: usize = 6;
/// Weight rows per chunk (a multiple of [`W_ROWS`]), kept in L2 while every input group
/// passes over them.
const CHUNK_ROWS: usize = 48;

/// `y[t · stride + o] = scale[o] · Σ_k W[o][k] · X[t][k] + bias[o]` for `t < n`, `o < rows`,
/// `W` (`rows × cols`, row-major, any alignment) read where it lies, `X` packed in panels
/// of `super::panel_side(n)` inputs: `x86_products::weights_in_place`'s kernel for CPUs
/// with AVX2 + FMA but not AVX-512, tiles of 6 weight rows by 16 inputs, each sum a chain
/// over `k` from zero. As there, the next chunk of weight rows (after the last, `next`: the
/// bytes the caller reads next) is prefetched into L2 over the tiles of the first input
/// group, one line per `k` step.
///
/// # Safety
/// AVX2 and FMA must be available, and the operands hold what the shape addresses
/// (`super::in_place_shape_ok`). `next` may be any range (prefetches never fault).
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn weights_in_place_avx2(
    w_ptr: *const f32,
    [rows, cols]: [usize; 2],
    xt: &[f32],
    n: usize,
    y: &mut [f32],
    stride: usize,
    [scale, bias]: [Option<&[f32]>; 2],
    (after_ptr, after_len): (*const u8, usize),
) {
    let side = super::panel_side(n);
    let mut c0 = 0;
    while c0 < rows {
        let chunk = CHUNK_ROWS.min(rows - c0);
        let (pf, pf_lines) = chunk_prefetch(
            w_ptr,
            [rows, cols],
            [c0, chunk, CHUNK_ROWS],
            (after_ptr, after_len),
        );
        for g in 0..n.div_ceil(side) {
            let t0 = g * side;
            let tokens = side.min(n - t0);
            let mut o0 = c0;
            while o0 < c0 + chunk {
                let valid = W_ROWS.min(c0 + chunk - o0);
                // The tile's share of the prefetch: the next chunk's lines of its own rows
                // (`cols / 16` lines a row), in the first input group's first half.
                let first = (o0 - c0) * cols / 16;
                // The last tile takes what is left, up to a line per `k` step.
                let share = if o0 + valid == c0 + chunk {
                    cols
                } else {
                    valid * cols / 16
                };
                let lines = if g == 0 {
                    pf_lines.saturating_sub(first).min(share)
                } else {
                    0
                };
                // The tile's weight rows stay in L1 across the panel's two halves.
                for h in 0..tokens.div_ceil(16) {
                    let out = Out {
                        y: y.as_mut_ptr().wrapping_add((t0 + 16 * h) * stride + o0),
                        stride,
                        tokens: (tokens - 16 * h).min(16),
                        scale: scale.map(|s| s.as_ptr().wrapping_add(o0)),
                        bias: bias.map(|b| b.as_ptr().wrapping_add(o0)),
                    };
                    let pf = (pf.wrapping_add(first * 64), if h == 0 { lines } else { 0 });
                    // SAFETY: AVX2 and FMA are available (the caller's contract); rows o0
                    // .. o0 + valid of W (inside the checked `rows · cols`), values 16h .. 16h +
                    // 16 of each `k` row of panel g of `xt` (inside the checked `groups ·
                    // side · cols`), outputs of inputs t0 + 16h .. + tokens and columns o0
                    // .. o0 + valid of y (inside the checked span), scale and bias values
                    // o0 .. o0 + valid (checked `rows` long). Prefetches never fault.
                    unsafe {
                        let w = w_ptr.wrapping_add(o0 * cols);
                        let xt = xt.as_ptr().wrapping_add(g * side * cols + 16 * h);
                        if out.tokens > 8 {
                            tile_rows::<2>(valid, w, [cols, side], xt, out, pf)
                        } else {
                            tile_rows::<1>(valid, w, [cols, side], xt, out, pf)
                        }
                    }
                }
                o0 += valid;
            }
        }
        c0 += chunk;
    }
}

/// [`tile_in_place`] for `valid` (1 ..= 6) weight rows.
///
/// # Safety
/// As [`tile_in_place`] with `R = valid`.
#[target_feature(enable = "avx2,fma")]
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
            6 => tile_in_place::<6, V>(w, k, xt, out, pf),
            5 => tile_in_place::<5, V>(w, k, xt, out, pf),
            4 => tile_in_place::<4, V>(w, k, xt, out, pf),
            3 => tile_in_place::<3, V>(w, k, xt, out, pf),
            2 => tile_in_place::<2, V>(w, k, xt, out, pf),
            _ => tile_in_place::<1, V>(w, k, xt, out, pf),
        }
    }
}

/// One tile of [`weights_in_place_avx2`]: `R` (1 ..= 6) weight rows from `w` (`k` values
/// each, any alignment) by the `8 · V` (`V` = 1 or 2) inputs at `xt` (value `kk · side + i`
/// is input `i`'s feature `kk`), the outputs scaled, biased and stored by lane.
///
/// # Safety
/// AVX2 and FMA must be available; `w` must address `R` rows of `k` readable `f32`s, `xt`
/// values `kk · side .. kk · side + 8V` for every `kk < k`, and `out` its `tokens` (at most
/// `8V`) rows of `R` writable values (and `R` scale and bias values).
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_in_place<const R: usize, const V: usize>(
    w: *const f32,
    [k, side]: [usize; 2],
    xt: *const f32,
    out: Out,
    (pf, pf_lines): (*const u8, usize),
) {
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    for kk in 0..k {
        if kk < pf_lines {
            _mm_prefetch::<_MM_HINT_T1>(pf.wrapping_add(kk * 64).cast::<i8>());
        }
        // SAFETY: values kk · side .. kk · side + 8V of the panel.
        let x: [__m256; V] = core::array::from_fn(|v| unsafe {
            _mm256_loadu_ps(xt.wrapping_add(kk * side + 8 * v))
        });
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: value kk < k of row r < R (unaligned read).
            let wv = _mm256_set1_ps(unsafe { w.wrapping_add(r * k + kk).read_unaligned() });
            for (a, x) in a.iter_mut().zip(&x) {
                *a = _mm256_fmadd_ps(wv, *x, *a);
            }
        }
    }
    // Lanes are inputs: out through a small array, a value at a time (R · 8V stores
    // against the k · R · V multiply-adds above).
    let mut sums = [[0.0f32; 16]; R];
    for (s, a) in sums.iter_mut().zip(&acc) {
        for (v, part) in a.iter().enumerate() {
            // SAFETY: 8 values at 8v < 16 of a 16-value array.
            unsafe { _mm256_storeu_ps(s.as_mut_ptr().wrapping_add(8 * v), *part) };
        }
    }
    for t in 0..out.tokens.min(8 * V) {
        let row = out.y.wrapping_add(t * out.stride);
        for (r, s) in sums.iter().enumerate() {
            let mut v = s[t];
            // SAFETY: scale and bias hold R values; output (t, r) is inside the caller's
            // rows. Multiplied, then added, as the AVX-512 kernel does.
            unsafe {
                if let Some(sc) = out.scale {
                    v *= *sc.wrapping_add(r);
                }
                if let Some(b) = out.bias {
                    v += *b.wrapping_add(r);
                }
                *row.wrapping_add(r) = v;
            }
        }
    }
}

/// `P <- F P` for the first `16 · halves` inputs of a feature-major panel `P` (`n` rows
/// of `stride` values), `F` block-diagonal with `B × B` blocks on contiguous rows or on
/// rows `j, j + n / B, ...` (`STRIDED`): `x86_blocks::panel_blocks`'s kernel for CPUs with
/// AVX2 + FMA but not AVX-512, eight inputs to a vector, the same operations per value.
///
/// # Safety
/// AVX2 and FMA must be available; `panel` must address `n · stride` values and `blocks`
/// `n · B`, `n` a multiple of `B`, `16 · halves <= stride`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn panel_blocks_avx2<const B: usize, const STRIDED: bool>(
    panel: *mut f32,
    n: usize,
    [halves, stride]: [usize; 2],
    blocks: *const f32,
) {
    let k = n / B;
    for j in 0..k {
        // Row t of block j, and where entry (c, t)'s coefficient is.
        let rows: [*mut f32; B] = core::array::from_fn(|t| {
            panel.wrapping_add(super::panel_row::<B, STRIDED>(j, t, k) * stride)
        });
        let coef =
            |c: usize, t: usize| blocks.wrapping_add(super::panel_coef::<B, STRIDED>(j, [c, t], k));
        for q in 0..2 * halves {
            // SAFETY: rows of block j (< n), values 8q .. 8q + 8 <= 16 · halves <= stride.
            let src: [__m256; B] =
                core::array::from_fn(|t| unsafe { _mm256_loadu_ps(rows[t].add(8 * q)) });
            for (c, out) in rows.iter().enumerate() {
                let mut acc = _mm256_setzero_ps();
                for (t, s) in src.iter().enumerate() {
                    // SAFETY: coefficient index < n · B.
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(unsafe { *coef(c, t) }), *s, acc);
                }
                // SAFETY: row c of block j (< n), values 8q .. 8q + 8 <= stride.
                unsafe { _mm256_storeu_ps(out.add(8 * q), acc) };
            }
        }
    }
}

/// `dst <- F src` (or `F^T src`) for every row (`rows × n`, `dst` may be `src`), `F`
/// block-diagonal with `k = n / B` blocks of `B × B` on contiguous runs of each row,
/// stored column-major one after the other (`blocks[j·B² + t·B + c]` = entry `(c, t)` of
/// block `j`), as `x86_blocks::contiguous_blocks` on AVX-512: each output one chain of
/// fused multiply-adds over its block's entries, `x[t]` broadcast against column `t`.
/// Rows go in bands of 8 so that a block's columns, loaded once, serve the band.
///
/// Sound for any input: returns `false`, touching nothing, unless AVX2 and FMA are
/// available, `B` is 8 or 16, `n` a multiple of `B`, `src` and `dst` whole rows of the
/// same length (`None` for in place) and `blocks` holds `n·B` values.
pub(super) fn contiguous_blocks<const B: usize>(
    src: Option<&[f32]>,
    dst: &mut [f32],
    n: usize,
    blocks: &[f32],
    transpose: bool,
) -> bool {
    if !avx2_fma_available()
        || !matches!(B, 8 | 16)
        || n == 0
        || !n.is_multiple_of(B)
        || !dst.len().is_multiple_of(n)
        || src.is_some_and(|s| s.len() != dst.len())
        || blocks.len() < n * B
    {
        return false;
    }
    let rows = dst.len() / n;
    let out = dst.as_mut_ptr();
    let from = src.map_or(out.cast_const(), <[f32]>::as_ptr);
    // SAFETY: AVX2 and FMA are available; the shapes were checked above; `from` is `out`
    // (in place) or a distinct slice of the same length.
    unsafe { contiguous_blocks_avx2::<B>(from, out, rows, n, blocks, transpose) };
    true
}

/// The body of [`contiguous_blocks`].
///
/// # Safety
/// AVX2 and FMA available, `B` 8 or 16, `n % B == 0`, `src` readable and `dst` writable
/// for `rows · n` values (the same pointer, or not overlapping), `blocks.len() >= n·B`.
#[target_feature(enable = "avx2,fma")]
unsafe fn contiguous_blocks_avx2<const B: usize>(
    src: *const f32,
    dst: *mut f32,
    rows: usize,
    n: usize,
    blocks: &[f32],
    transpose: bool,
) {
    const BAND: usize = 8;
    let mut r0 = 0;
    while r0 < rows {
        let r1 = rows.min(r0 + BAND);
        for j in 0..n / B {
            // cols[t][h]: entries (8h .. 8h + 8, t) of block j (for the transpose, entries
            // (t, 8h .. 8h + 8), gathered).
            let mut cols = [[_mm256_setzero_ps(); 2]; B];
            for (t, col) in cols.iter_mut().enumerate() {
                for (h, v) in col.iter_mut().enumerate().take(B / 8) {
                    let at = |c: usize| j * B * B + if transpose { c * B + t } else { t * B + c };
                    *v = if transpose {
                        let g: [f32; 8] = core::array::from_fn(|l| {
                            blocks.get(at(8 * h + l)).copied().unwrap_or(0.0)
                        });
                        // SAFETY: 8 values of a local array.
                        unsafe { _mm256_loadu_ps(g.as_ptr()) }
                    } else {
                        // SAFETY: entries at(8h) .. at(8h) + 8 < n·B, inside `blocks`.
                        unsafe { _mm256_loadu_ps(blocks.as_ptr().wrapping_add(at(8 * h))) }
                    };
                }
            }
            for r in r0..r1 {
                let (x, y) = (
                    src.wrapping_add(r * n + j * B),
                    dst.wrapping_add(r * n + j * B),
                );
                let mut acc = [_mm256_setzero_ps(); 2];
                for (t, col) in cols.iter().enumerate() {
                    // SAFETY: value j·B + t < n of row r < rows.
                    let xt = _mm256_set1_ps(unsafe { *x.wrapping_add(t) });
                    for h in 0..B / 8 {
                        acc[h] = _mm256_fmadd_ps(xt, col[h], acc[h]);
                    }
                }
                for (h, a) in acc.iter().enumerate().take(B / 8) {
                    // SAFETY: values j·B + 8h .. + 8 <= n of row r; every input of the
                    // block was read above.
                    unsafe { _mm256_storeu_ps(y.wrapping_add(8 * h), *a) };
                }
            }
        }
        r0 = r1;
    }
}

/// `x <- F x` (or `F^T x`) for every row of `x` (`rows × n`), `F`'s `k = n / B` blocks
/// reading strided entries (block `j`: `x[j], x[j + k], ...`), coefficients interleaved
/// across blocks (`blocks[(c·B + t)·k + j]` = entry `(c, t)` of block `j`), as
/// `x86_blocks::strided_blocks` on AVX-512: eight blocks per vector, all `B` inputs
/// loaded before any output is stored (in place).
///
/// Sound for any input: returns `false`, touching nothing, unless AVX2 and FMA are
/// available, `B` is 4, 8 or 16, `k` a nonzero multiple of 8, `x` whole rows and `blocks`
/// holds `n·B` values.
pub(super) fn strided_blocks<const B: usize>(
    x: &mut [f32],
    n: usize,
    blocks: &[f32],
    transpose: bool,
) -> bool {
    let k = n / B;
    if !avx2_fma_available()
        || !matches!(B, 4 | 8 | 16)
        || k == 0
        || !n.is_multiple_of(B)
        || !k.is_multiple_of(8)
        || !x.len().is_multiple_of(n)
        || blocks.len() < n * B
    {
        return false;
    }
    // SAFETY: AVX2 and FMA are available; the shapes were checked above.
    unsafe { strided_blocks_avx2::<B>(x.as_mut_ptr(), x.len() / n, n, blocks, transpose) };
    true
}

/// The body of [`strided_blocks`].
///
/// # Safety
/// AVX2 and FMA available, `B` in {4, 8, 16}, `k = n / B` a multiple of 8, `x` writable
/// for `rows · n` values, `blocks.len() >= n·B`.
#[target_feature(enable = "avx2,fma")]
unsafe fn strided_blocks_avx2<const B: usize>(
    x: *mut f32,
    rows: usize,
    n: usize,
    blocks: &[f32],
    transpose: bool,
) {
    let k = n / B;
    // Entry (c, t) sits at (c·B + t)·k + j, or (t·B + c)·k + j for the transpose.
    let (step, next_c) = if transpose { (B * k, k) } else { (k, B * k) };
    for r in 0..rows {
        let row = x.wrapping_add(r * n);
        for j0 in (0..k).step_by(8) {
            // SAFETY: entries t·k + j0 .. + 8 <= n of row r.
            let g: [__m256; B] =
                core::array::from_fn(|t| unsafe { _mm256_loadu_ps(row.wrapping_add(t * k + j0)) });
            let mut first = blocks.as_ptr().wrapping_add(j0);
            for c in 0..B {
                let mut acc = _mm256_setzero_ps();
                let mut wp = first;
                for gt in &g {
                    // SAFETY: entry·k + j0 .. + 8 with entry < B²: inside `blocks`.
                    acc = _mm256_fmadd_ps(unsafe { _mm256_loadu_ps(wp) }, *gt, acc);
                    wp = wp.wrapping_add(step);
                }
                first = first.wrapping_add(next_c);
                // SAFETY: entries c·k + j0 .. + 8 of row r; every input of these blocks is
                // already in `g`.
                unsafe { _mm256_storeu_ps(row.wrapping_add(c * k + j0), acc) };
            }
        }
    }
}

/// The 8 × 8 transpose of eight `ymm` rows: vector `j` of the result holds entry `j` of
/// every row.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn transpose_8x8(r: [__m256; 8]) -> [__m256; 8] {
    use core::arch::x86_64::{
        _mm256_permute2f128_ps, _mm256_shuffle_ps, _mm256_unpackhi_ps, _mm256_unpacklo_ps,
    };
    let t: [__m256; 8] = core::array::from_fn(|i| {
        let (a, b) = (r[2 * (i / 2)], r[2 * (i / 2) + 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_ps(a, b)
        } else {
            _mm256_unpackhi_ps(a, b)
        }
    });
    // s[4g + m]: rows 4g .. 4g + 4, columns m (low lane) and m + 4 (high lane).
    let s: [__m256; 8] = core::array::from_fn(|i| {
        let (g, m) = (i / 4, i % 4);
        let (a, b) = (t[4 * g + (m / 2)], t[4 * g + 2 + (m / 2)]);
        if m % 2 == 0 {
            _mm256_shuffle_ps::<0x44>(a, b)
        } else {
            _mm256_shuffle_ps::<0xEE>(a, b)
        }
    });
    core::array::from_fn(|j| {
        if j < 4 {
            _mm256_permute2f128_ps::<0x20>(s[j], s[4 + j])
        } else {
            _mm256_permute2f128_ps::<0x31>(s[j - 4], s[j])
        }
    })
}

/// `panel[k · stride + j] = s[j] · W[j][k]` (`s` = `scale`, or 1) for `W` of `rows × cols`
/// (any alignment): `x86_products::pack_transposed`'s kernel for CPUs with AVX2 but not
/// AVX-512, 8 × 8 blocks scaled and transposed in registers, the ragged edges one value at a
/// time (the same products as the portable packing).
///
/// # Safety
/// AVX2 available; `w` readable for `rows · cols` values (any alignment), `panel` writable
/// for `(cols - 1) · stride + rows` values with `stride >= rows`, `scale` (if any) `rows`
/// values long.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn pack_avx2(
    w: *const f32,
    [rows, cols]: [usize; 2],
    scale: Option<&[f32]>,
    panel: *mut f32,
    stride: usize,
) {
    use core::arch::x86_64::_mm256_mul_ps;
    let s = |j: usize| scale.and_then(|s| s.get(j)).copied().unwrap_or(1.0);
    let (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
    for j0 in (0..r8).step_by(8) {
        let sv: [__m256; 8] = core::array::from_fn(|jj| _mm256_set1_ps(s(j0 + jj)));
        for k0 in (0..c8).step_by(8) {
            // SAFETY: rows j0 .. j0 + 8 <= rows, values k0 .. k0 + 8 <= cols of each.
            let r: [__m256; 8] = core::array::from_fn(|jj| {
                _mm256_mul_ps(
                    unsafe { _mm256_loadu_ps(w.wrapping_add((j0 + jj) * cols + k0)) },
                    sv[jj],
                )
            });
            for (kk, v) in transpose_8x8(r).iter().enumerate() {
                // SAFETY: panel row k0 + kk < cols, values j0 .. j0 + 8 <= rows <= stride.
                unsafe { _mm256_storeu_ps(panel.wrapping_add((k0 + kk) * stride + j0), *v) };
            }
        }
    }
    // The edges: rows past the last whole block of 8 (every column), then the columns past
    // it (the other rows).
    let one = |j: usize, k: usize| {
        // SAFETY: j < rows, k < cols: inside `w` and `panel` (checked by the caller).
        unsafe {
            *panel.wrapping_add(k * stride + j) =
                s(j) * w.wrapping_add(j * cols + k).read_unaligned();
        }
    };
    for j in r8..rows {
        for k in 0..cols {
            one(j, k);
        }
    }
    for j in 0..r8 {
        for k in c8..cols {
            one(j, k);
        }
    }
}
