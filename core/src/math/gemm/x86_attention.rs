//! The two inner loops of causal attention on x86-64 (AVX-512F, or AVX2 + FMA + F16C),
//! chosen at run time: the dot products of the query heads that share a key/value head
//! with the cached keys, and their probability-weighted sums of the cached values, for
//! heads of 16, 32, 64 or 128 dimensions (SmolLM2: 64, three query heads a key/value
//! head; the tiny llama fixture of the conformance tests: 16). Each cached row is loaded
//! once for every query head of its group (up to [`GROUP`] at a time), so a decoding step
//! reads its cache once instead of once a head. Keys and values lie `stride` values apart
//! in the cache (every key/value head of a position side by side), `f32` or half
//! precision ([`KvSlice`], widened on load), read where they are.
//!
//! The portable loops in [`crate::nn::attention`] take every other shape and CPU; these
//! run 16 (or 8) lanes with fused multiply-adds, so their sums round differently (a few
//! units in the last place). Each output depends only on its own row's inputs and the
//! number of keys it reads, so results are the same for any thread count.
//!
//! Soundness: a kernel runs only after [`super::cpu`] saw its instruction set, and the
//! entry points check every slice against the shape before any pointer is formed.
#![allow(unsafe_code)]

use core::arch::x86_64::{
    __m128, __m256, __m256i, __m512, _mm256_castps256_ps128, _mm256_cvtph_ps,
    _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_hadd_ps, _mm256_loadu_ps, _mm256_loadu_si256,
    _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps, _mm512_add_ps, _mm512_castpd_ps,
    _mm512_castps512_ps128, _mm512_castps_pd, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_reduce_add_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_shuffle_f32x4,
    _mm512_storeu_ps, _mm512_unpackhi_pd, _mm512_unpackhi_ps, _mm512_unpacklo_pd,
    _mm512_unpacklo_ps, _mm_add_ps, _mm_cvtss_f32, _mm_loadu_si128, _mm_movehl_ps, _mm_shuffle_ps,
    _mm_storeu_ps,
};

use super::cpu::{avx2_fma_available, avx512_available, f16c_available};
use crate::nn::attention::KvSlice;

/// Keys scored per pass: each head's four sums are reduced together.
const KEYS: usize = 4;
/// Most query heads one pass serves (a larger group is taken in passes of about equal
/// size).
const GROUP: usize = 4;
/// Vectors of a head's width accumulated per pass over the values (so that `GROUP` heads'
/// sums stay in registers).
const CHUNK: usize = 4;

/// The instruction set a call runs on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Isa {
    Avx512,
    Avx2,
}

/// The kernels' instruction set on this CPU, if any.
fn isa() -> Option<Isa> {
    if avx512_available() {
        Some(Isa::Avx512)
    } else if avx2_fma_available() && f16c_available() {
        Some(Isa::Avx2)
    } else {
        None
    }
}

/// The first value's address of a cache slice, its length, and whether it holds halves.
fn raw(rows: KvSlice<'_>) -> (*const u8, usize, bool) {
    match rows {
        KvSlice::F32(s) => (s.as_ptr().cast(), s.len(), false),
        KvSlice::F16(s) => (s.as_ptr().cast(), s.len(), true),
    }
}

/// Heads `h` and the rows per head `n` of a call with `heads_len = h · d` and
/// `rows_len = h · n` values, if the shape is one the kernels cover (`d` 16, 32, 64, 128).
fn shape(heads_len: usize, rows_len: usize, d: usize) -> Option<(usize, usize)> {
    if !matches!(d, 16 | 32 | 64 | 128) {
        return None;
    }
    super::attention_shape(heads_len, rows_len, d)
}

/// The heads of the next pass when `rem` are left: passes of about equal size, at most
/// [`GROUP`] each.
fn pass(rem: usize) -> usize {
    rem.div_ceil(rem.div_ceil(GROUP))
}

/// Calls `$kernel::<M, G, HALF>(args)` for `M = $m` (one of the listed widths, in
/// vectors), `G = $g` (1 to [`GROUP`]) and `HALF = $half`.
macro_rules! dispatch {
    ($kernel:ident, [$($w:literal),*], $m:expr, $g:expr, $half:expr, $args:tt) => {
        match $m {
            $($w => dispatch!(@group $kernel, $w, $g, $half, $args),)*
            _ => {}
        }
    };
    (@group $kernel:ident, $w:literal, $g:expr, $half:expr, ($($arg:expr),*)) => {
        match ($g, $half) {
            (1, false) => $kernel::<$w, 1, false>($($arg),*),
            (2, false) => $kernel::<$w, 2, false>($($arg),*),
            (3, false) => $kernel::<$w, 3, false>($($arg),*),
            (_, false) => $kernel::<$w, 4, false>($($arg),*),
            (1, true) => $kernel::<$w, 1, true>($($arg),*),
            (2, true) => $kernel::<$w, 2, true>($($arg),*),
            (3, true) => $kernel::<$w, 3, true>($($arg),*),
            (_, true) => $kernel::<$w, 4, true>($($arg),*),
        }
    };
}

/// `scores[r · n + j] = q_r · keys[j · stride ..][..d]` for the `h = q.len() / d` heads
/// of `q` and every `j < n = scores.len() / h`. Returns `false`, touching nothing, for a
/// head size or CPU these kernels do not cover, or slices that do not fit the shape.
pub(super) fn key_dots(
    q: &[f32],
    d: usize,
    keys: KvSlice<'_>,
    stride: usize,
    scores: &mut [f32],
) -> bool {
    let Some((heads, n)) = shape(q.len(), scores.len(), d) else {
        return false;
    };
    let (kp, len, half) = raw(keys);
    let Some(isa) = isa().filter(|_| super::cache_rows_fit(len, n, d, stride)) else {
        return false;
    };
    let mut h = 0;
    while h < heads {
        let g = pass(heads - h);
        let (qp, sp) = (q[h * d..].as_ptr(), scores[h * n..].as_mut_ptr());
        // SAFETY: the instruction set is available; `q` holds heads `h .. h + g` of `d`
        // values from `qp`, `scores` their `g` rows of `n` from `sp`, and the keys hold
        // `n` rows of `d` values `stride` apart (checked above).
        unsafe {
            match isa {
                Isa::Avx512 => {
                    dispatch!(
                        key_dots_avx512,
                        [1, 2, 4, 8],
                        d / 16,
                        g,
                        half,
                        (qp, kp, stride, n, sp)
                    )
                }
                Isa::Avx2 => {
                    dispatch!(
                        key_dots_avx2,
                        [2, 4, 8, 16],
                        d / 8,
                        g,
                        half,
                        (qp, kp, stride, n, sp)
                    )
                }
            }
        }
        h += g;
    }
    true
}

/// `out[r · d ..][..d] = Σ_j p[r · n + j] · values[j · stride ..][..d]` for the
/// `h = out.len() / d` heads of `out` and `n = p.len() / h`. Returns `false`, touching
/// nothing, as [`key_dots`] does.
pub(super) fn value_sum(
    p: &[f32],
    d: usize,
    values: KvSlice<'_>,
    stride: usize,
    out: &mut [f32],
) -> bool {
    let Some((heads, n)) = shape(out.len(), p.len(), d) else {
        return false;
    };
    let (vp, len, half) = raw(values);
    let Some(isa) = isa().filter(|_| super::cache_rows_fit(len, n, d, stride)) else {
        return false;
    };
    let mut h = 0;
    while h < heads {
        let g = pass(heads - h);
        let (pp, op) = (p[h * n..].as_ptr(), out[h * d..].as_mut_ptr());
        // SAFETY: as in `key_dots`: `g` rows of `n` probabilities from `pp`, `g` heads of
        // `d` outputs from `op`, `n` value rows of `d` values `stride` apart.
        unsafe {
            match isa {
                Isa::Avx512 => {
                    dispatch!(
                        value_sum_avx512,
                        [1, 2, 4, 8],
                        d / 16,
                        g,
                        half,
                        (pp, n, vp, stride, op)
                    )
                }
                Isa::Avx2 => {
                    dispatch!(
                        value_sum_avx2,
                        [2, 4, 8, 16],
                        d / 8,
                        g,
                        half,
                        (pp, n, vp, stride, op)
                    )
                }
            }
        }
        h += g;
    }
    true
}

/// Sixteen cached values from value `at` on, widened to `f32`.
///
/// # Safety
/// AVX-512F available; values `at .. at + 16` lie inside the slice `base` starts (of
/// halves when `HALF`, else of `f32`s).
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load16<const HALF: bool>(base: *const u8, at: usize) -> __m512 {
    // SAFETY: the caller's.
    unsafe {
        if HALF {
            widen16(_mm256_loadu_si256(base.add(2 * at).cast()))
        } else {
            _mm512_loadu_ps(base.add(4 * at).cast())
        }
    }
}

/// Sixteen halves widened to `f32` (exactly): one instruction; under Miri, which does not
/// interpret it, lane by lane (the loads Miri checks are the same).
#[target_feature(enable = "avx512f")]
#[inline]
fn widen16(h: __m256i) -> __m512 {
    #[cfg(not(miri))]
    {
        core::arch::x86_64::_mm512_cvtph_ps(h)
    }
    #[cfg(miri)]
    {
        // SAFETY: 32 bytes either way; every bit pattern is a `u16`.
        let bits: [u16; 16] = unsafe { core::mem::transmute(h) };
        let f = bits.map(crate::quant::f16_to_f32);
        // SAFETY: `f` holds 16 values.
        unsafe { _mm512_loadu_ps(f.as_ptr()) }
    }
}

/// Eight cached values from value `at` on, widened to `f32`.
///
/// # Safety
/// AVX2, FMA and F16C available; values `at .. at + 8` lie inside the slice `base`
/// starts (of halves when `HALF`, else of `f32`s).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load8<const HALF: bool>(base: *const u8, at: usize) -> __m256 {
    // SAFETY: the caller's.
    unsafe {
        if HALF {
            _mm256_cvtph_ps(_mm_loadu_si128(base.add(2 * at).cast()))
        } else {
            _mm256_loadu_ps(base.add(4 * at).cast())
        }
    }
}

/// The lane sums of four vectors, `[Σ a[0], Σ a[1], Σ a[2], Σ a[3]]`: each 128-bit
/// quarter transposed and summed in place, then the four quarters folded (13 instructions
/// where four separate reductions take about 32).
#[target_feature(enable = "avx512f")]
#[inline]
fn sum4_512(a: [__m512; 4]) -> __m128 {
    // Per quarter: [a0 + a2, b0 + b2, a1 + a3, b1 + b3], and the same of c and d.
    let ab = _mm512_add_ps(
        _mm512_unpacklo_ps(a[0], a[1]),
        _mm512_unpackhi_ps(a[0], a[1]),
    );
    let cd = _mm512_add_ps(
        _mm512_unpacklo_ps(a[2], a[3]),
        _mm512_unpackhi_ps(a[2], a[3]),
    );
    // Per quarter: the sums of its four lanes of a, b, c and d, in that order.
    let (ab, cd) = (_mm512_castps_pd(ab), _mm512_castps_pd(cd));
    let q = _mm512_add_ps(
        _mm512_castpd_ps(_mm512_unpacklo_pd(ab, cd)),
        _mm512_castpd_ps(_mm512_unpackhi_pd(ab, cd)),
    );
    // The four quarters added: halves swapped, then neighbours.
    let x = _mm512_add_ps(q, _mm512_shuffle_f32x4::<0x4e>(q, q));
    let y = _mm512_add_ps(x, _mm512_shuffle_f32x4::<0xb1>(x, x));
    _mm512_castps512_ps128(y)
}

/// [`sum4_512`] for eight-lane vectors: three horizontal adds and one of the two halves.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn sum4_256(a: [__m256; 4]) -> __m128 {
    let ab = _mm256_hadd_ps(a[0], a[1]);
    let cd = _mm256_hadd_ps(a[2], a[3]);
    let s = _mm256_hadd_ps(ab, cd);
    _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s))
}

/// The sum of the eight lanes of `v`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn sum8(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ps(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

/// [`key_dots`] for `G` heads of `16 · M` values: [`KEYS`] keys at a time, each key
/// vector loaded once for the `G` heads.
///
/// # Safety
/// AVX-512F available; `q` holds `G · 16 · M` values, `scores` `G` rows of `n`, and
/// `keys` `n` rows of `16 · M` values `stride` apart (halves when `HALF`).
#[allow(clippy::needless_range_loop)] // lanes of registers, indexed as the loads are
#[target_feature(enable = "avx512f")]
unsafe fn key_dots_avx512<const M: usize, const G: usize, const HALF: bool>(
    q: *const f32,
    keys: *const u8,
    stride: usize,
    n: usize,
    scores: *mut f32,
) {
    let d = 16 * M;
    let mut j = 0;
    // SAFETY (every access below): vector `c < M` of head `r < G` lies inside `q`, of row
    // `j < n` inside `keys`, and score `j < n` of row `r < G` inside `scores`.
    while j + KEYS <= n {
        let mut acc = [[_mm512_setzero_ps(); KEYS]; G];
        for c in 0..M {
            let qc: [__m512; G] =
                core::array::from_fn(|r| unsafe { _mm512_loadu_ps(q.add(r * d + 16 * c)) });
            for u in 0..KEYS {
                let k = unsafe { load16::<HALF>(keys, (j + u) * stride + 16 * c) };
                for r in 0..G {
                    acc[r][u] = _mm512_fmadd_ps(qc[r], k, acc[r][u]);
                }
            }
        }
        for (r, a) in acc.into_iter().enumerate() {
            unsafe { _mm_storeu_ps(scores.add(r * n + j), sum4_512(a)) };
        }
        j += KEYS;
    }
    while j < n {
        let mut acc = [_mm512_setzero_ps(); G];
        for c in 0..M {
            let k = unsafe { load16::<HALF>(keys, j * stride + 16 * c) };
            for (r, a) in acc.iter_mut().enumerate() {
                let qc = unsafe { _mm512_loadu_ps(q.add(r * d + 16 * c)) };
                *a = _mm512_fmadd_ps(qc, k, *a);
            }
        }
        for (r, a) in acc.into_iter().enumerate() {
            unsafe { *scores.add(r * n + j) = _mm512_reduce_add_ps(a) };
        }
        j += 1;
    }
}

/// [`key_dots`] for `G` heads of `8 · M` values on AVX2 + FMA (+ F16C for halves).
///
/// # Safety
/// AVX2, FMA and F16C available; the pointers as for [`key_dots_avx512`] with
/// `8 · M`-value heads.
#[allow(clippy::needless_range_loop)] // lanes of registers, indexed as the loads are
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn key_dots_avx2<const M: usize, const G: usize, const HALF: bool>(
    q: *const f32,
    keys: *const u8,
    stride: usize,
    n: usize,
    scores: *mut f32,
) {
    let d = 8 * M;
    let mut j = 0;
    // SAFETY (every access below): as in `key_dots_avx512`, with 8-value vectors.
    while j + KEYS <= n {
        let mut acc = [[_mm256_setzero_ps(); KEYS]; G];
        for c in 0..M {
            let qc: [__m256; G] =
                core::array::from_fn(|r| unsafe { _mm256_loadu_ps(q.add(r * d + 8 * c)) });
            for u in 0..KEYS {
                let k = unsafe { load8::<HALF>(keys, (j + u) * stride + 8 * c) };
                for r in 0..G {
                    acc[r][u] = _mm256_fmadd_ps(qc[r], k, acc[r][u]);
                }
            }
        }
        for (r, a) in acc.into_iter().enumerate() {
            unsafe { _mm_storeu_ps(scores.add(r * n + j), sum4_256(a)) };
        }
        j += KEYS;
    }
    while j < n {
        let mut acc = [_mm256_setzero_ps(); G];
        for c in 0..M {
            let k = unsafe { load8::<HALF>(keys, j * stride + 8 * c) };
            for (r, a) in acc.iter_mut().enumerate() {
                let qc = unsafe { _mm256_loadu_ps(q.add(r * d + 8 * c)) };
                *a = _mm256_fmadd_ps(qc, k, *a);
            }
        }
        for (r, a) in acc.into_iter().enumerate() {
            unsafe { *scores.add(r * n + j) = sum8(a) };
        }
        j += 1;
    }
}

/// [`value_sum`] for `G` heads of `16 · M` values: the width in chunks of [`CHUNK`]
/// vectors, each value vector loaded once for the `G` heads; a lone head keeps even and
/// odd rows in two sets of sums (two chains a vector), added at the end.
///
/// # Safety
/// AVX-512F available; `p` holds `G` rows of `n`, `out` `G · 16 · M` values, and `values`
/// `n` rows of `16 · M` values `stride` apart (halves when `HALF`).
#[allow(clippy::needless_range_loop)] // lanes of registers, indexed as the loads are
#[target_feature(enable = "avx512f")]
unsafe fn value_sum_avx512<const M: usize, const G: usize, const HALF: bool>(
    p: *const f32,
    n: usize,
    values: *const u8,
    stride: usize,
    out: *mut f32,
) {
    let d = 16 * M;
    // SAFETY (every access below): probability `j < n` of row `r < G` lies inside `p`,
    // vector `c < M` of row `j < n` inside `values`, of head `r < G` inside `out`.
    for c0 in (0..M).step_by(CHUNK) {
        let w = CHUNK.min(M - c0);
        let mut acc = [[_mm512_setzero_ps(); CHUNK]; G];
        let mut odd = [_mm512_setzero_ps(); CHUNK];
        let mut j = 0;
        if G == 1 {
            while j + 2 <= n {
                let (a, b) = unsafe { (_mm512_set1_ps(*p.add(j)), _mm512_set1_ps(*p.add(j + 1))) };
                for c in 0..w {
                    let va = unsafe { load16::<HALF>(values, j * stride + 16 * (c0 + c)) };
                    let vb = unsafe { load16::<HALF>(values, (j + 1) * stride + 16 * (c0 + c)) };
                    acc[0][c] = _mm512_fmadd_ps(a, va, acc[0][c]);
                    odd[c] = _mm512_fmadd_ps(b, vb, odd[c]);
                }
                j += 2;
            }
        }
        while j < n {
            let v: [__m512; CHUNK] = core::array::from_fn(|c| {
                if c < w {
                    unsafe { load16::<HALF>(values, j * stride + 16 * (c0 + c)) }
                } else {
                    _mm512_setzero_ps()
                }
            });
            for (r, sums) in acc.iter_mut().enumerate() {
                let a = unsafe { _mm512_set1_ps(*p.add(r * n + j)) };
                for c in 0..w {
                    sums[c] = _mm512_fmadd_ps(a, v[c], sums[c]);
                }
            }
            j += 1;
        }
        for (r, sums) in acc.iter().enumerate() {
            for c in 0..w {
                let s = if G == 1 {
                    _mm512_add_ps(sums[c], odd[c])
                } else {
                    sums[c]
                };
                unsafe { _mm512_storeu_ps(out.add(r * d + 16 * (c0 + c)), s) };
            }
        }
    }
}

/// [`value_sum`] for `G` heads of `8 · M` values on AVX2 + FMA (+ F16C for halves): the
/// width in chunks of [`CHUNK`] vectors, each value vector loaded once for the `G` heads.
///
/// # Safety
/// AVX2, FMA and F16C available; the pointers as for [`value_sum_avx512`] with
/// `8 · M`-value heads.
#[allow(clippy::needless_range_loop)] // lanes of registers, indexed as the loads are
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn value_sum_avx2<const M: usize, const G: usize, const HALF: bool>(
    p: *const f32,
    n: usize,
    values: *const u8,
    stride: usize,
    out: *mut f32,
) {
    let d = 8 * M;
    // SAFETY (every access below): as in `value_sum_avx512`, with 8-value vectors.
    for c0 in (0..M).step_by(CHUNK) {
        let w = CHUNK.min(M - c0);
        let mut acc = [[_mm256_setzero_ps(); CHUNK]; G];
        for j in 0..n {
            let v: [__m256; CHUNK] = core::array::from_fn(|c| {
                if c < w {
                    unsafe { load8::<HALF>(values, j * stride + 8 * (c0 + c)) }
                } else {
                    _mm256_setzero_ps()
                }
            });
            for (r, sums) in acc.iter_mut().enumerate() {
                let a = unsafe { _mm256_set1_ps(*p.add(r * n + j)) };
                for c in 0..w {
                    sums[c] = _mm256_fmadd_ps(a, v[c], sums[c]);
                }
            }
        }
        for (r, sums) in acc.iter().enumerate() {
            for c in 0..w {
                unsafe { _mm256_storeu_ps(out.add(r * d + 8 * (c0 + c)), sums[c]) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::{key_dots, value_sum};
    use crate::nn::attention::KvSlice;
    use crate::quant::{f16_to_f32, f32_to_f16};
    use std::{vec, vec::Vec};

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    #[test]
    fn kernels_match_float64_sums_for_every_head_size_group_count_and_cache_type() {
        let counts: &[usize] = if cfg!(miri) {
            &[0, 1, 5]
        } else {
            &[0, 1, 3, 4, 5, 9, 33]
        };
        let groups: &[usize] = if cfg!(miri) {
            &[1, 3, 5]
        } else {
            &[1, 2, 3, 4, 5, 7, 9]
        };
        for d in [16usize, 32, 64, 128] {
            let stride = 3 * d + 5;
            for &g in groups {
                for &n in counts {
                    let len = if n == 0 { 0 } else { (n - 1) * stride + d };
                    let rows = data(len, 7);
                    let halves: Vec<u16> = rows.iter().map(|&x| f32_to_f16(x)).collect();
                    let widened: Vec<f32> = halves.iter().map(|&h| f16_to_f32(h)).collect();
                    for (cache, exact) in [
                        (KvSlice::F32(&rows), &rows),
                        (KvSlice::F16(&halves), &widened),
                    ] {
                        let q = data(g * d, 11);
                        let mut scores = vec![f32::NAN; g * n];
                        if key_dots(&q, d, cache, stride, &mut scores) {
                            for (i, s) in scores.iter().enumerate() {
                                let (r, j) = (i / n.max(1), i % n.max(1));
                                let want: f64 = (0..d)
                                    .map(|c| {
                                        f64::from(q[r * d + c]) * f64::from(exact[j * stride + c])
                                    })
                                    .sum();
                                assert!(
                                    (f64::from(*s) - want).abs() < 1e-4,
                                    "d {d} g {g} n {n} head {r} key {j}"
                                );
                            }
                        }
                        let p = data(g * n, 3);
                        let mut out = vec![f32::NAN; g * d];
                        if value_sum(&p, d, cache, stride, &mut out) {
                            for (i, o) in out.iter().enumerate() {
                                let (r, c) = (i / d, i % d);
                                let want: f64 = (0..n)
                                    .map(|j| {
                                        f64::from(p[r * n + j]) * f64::from(exact[j * stride + c])
                                    })
                                    .sum();
                                assert!(
                                    (f64::from(*o) - want).abs() < 1e-4,
                                    "d {d} g {g} n {n} head {r} lane {c}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn shapes_the_kernels_do_not_cover_are_left_to_the_caller() {
        let rows = vec![1.0f32; 200];
        let mut s = vec![0.0f32; 3];
        let keys = KvSlice::F32(&rows);
        // head size 48; rows past the slice; a stride shorter than the head; scores that
        // are not whole rows of the heads
        assert!(!key_dots(&[1.0; 48], 48, keys, 64, &mut s));
        assert!(!key_dots(&[1.0; 64], 64, keys, 100, &mut s));
        assert!(!key_dots(&[1.0; 64], 64, keys, 32, &mut s));
        assert!(!key_dots(&[1.0; 128], 64, keys, 64, &mut s));
        let mut out = vec![0.0f32; 64];
        assert!(!value_sum(&[1.0; 3], 64, keys, 100, &mut out));
        assert!(!value_sum(&[1.0; 3], 32, keys, 64, &mut out));
        assert_eq!(s, [0.0; 3]);
        assert_eq!(out, [0.0; 64]);
    }
}
