//! The two inner loops of causal attention on x86-64 (AVX-512F, or AVX2 + FMA), chosen at
//! run time: a query's dot products with the cached keys, and the probability-weighted sum
//! of the cached values, for a head of 16, 32, 64 or 128 dimensions (SmolLM2: 64; the tiny
//! llama fixture of the conformance tests: 16). Keys and values lie `stride` floats apart
//! in the cache (every key-value head of a position side by side), read where they are.
//! The portable loops in [`crate::nn::attention`] take every other shape; these run 16 (or
//! 8) lanes with fused multiply-adds, so their sums round differently (a few units in the
//! last place). Each output depends only on its own row's inputs, so results are the same
//! for any thread count.
//!
//! Soundness: a kernel runs only after [`super::cpu`] saw its instruction set, and the
//! entry points check every slice against the shape before any pointer is formed.
#![allow(unsafe_code)]

use core::arch::x86_64::{
    __m256, __m512, _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_fmadd_ps,
    _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps, _mm512_add_ps,
    _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_reduce_add_ps, _mm512_set1_ps, _mm512_setzero_ps,
    _mm512_storeu_ps, _mm_add_ps, _mm_cvtss_f32, _mm_movehl_ps, _mm_shuffle_ps,
};

use super::cpu::{avx2_fma_available, avx512_available};

/// Keys scored per pass: four independent sums share each load of the query.
const KEYS: usize = 4;

/// Whether `src` holds `n` rows of `d` values `stride` apart (the last row need not be
/// followed by a whole stride).
fn rows_fit(src: &[f32], n: usize, d: usize, stride: usize) -> bool {
    n == 0
        || (stride >= d
            && (n - 1)
                .checked_mul(stride)
                .and_then(|x| x.checked_add(d))
                .is_some_and(|need| need <= src.len()))
}

/// `scores[j] = q · keys[j · stride ..][..q.len()]` for every `j < scores.len()`.
/// Returns `false`, touching nothing, for a head size or CPU these kernels do not cover,
/// or slices that do not fit the shape.
pub(super) fn key_dots(q: &[f32], keys: &[f32], stride: usize, scores: &mut [f32]) -> bool {
    let d = q.len();
    if !rows_fit(keys, scores.len(), d, stride) {
        return false;
    }
    if avx512_available() {
        // SAFETY: AVX-512F is available; `keys` holds `scores.len()` rows of `d` values
        // `stride` apart (checked above) and `q` is `d` long.
        unsafe {
            match d {
                16 => key_dots_avx512::<1>(q, keys, stride, scores),
                32 => key_dots_avx512::<2>(q, keys, stride, scores),
                64 => key_dots_avx512::<4>(q, keys, stride, scores),
                128 => key_dots_avx512::<8>(q, keys, stride, scores),
                _ => return false,
            }
        }
        return true;
    }
    if avx2_fma_available() {
        // SAFETY: AVX2 and FMA are available; the slices fit the shape as above.
        unsafe {
            match d {
                16 => key_dots_avx2::<2>(q, keys, stride, scores),
                32 => key_dots_avx2::<4>(q, keys, stride, scores),
                64 => key_dots_avx2::<8>(q, keys, stride, scores),
                128 => key_dots_avx2::<16>(q, keys, stride, scores),
                _ => return false,
            }
        }
        return true;
    }
    false
}

/// `out = Σ_j p[j] · values[j · stride ..][..out.len()]` over every `j < p.len()`.
/// Returns `false`, touching nothing, as [`key_dots`] does.
pub(super) fn value_sum(p: &[f32], values: &[f32], stride: usize, out: &mut [f32]) -> bool {
    let d = out.len();
    if !rows_fit(values, p.len(), d, stride) {
        return false;
    }
    if avx512_available() {
        // SAFETY: AVX-512F is available; `values` holds `p.len()` rows of `d` values
        // `stride` apart (checked above) and `out` is `d` long.
        unsafe {
            match d {
                16 => value_sum_avx512::<1>(p, values, stride, out),
                32 => value_sum_avx512::<2>(p, values, stride, out),
                64 => value_sum_avx512::<4>(p, values, stride, out),
                128 => value_sum_avx512::<8>(p, values, stride, out),
                _ => return false,
            }
        }
        return true;
    }
    if avx2_fma_available() {
        // SAFETY: AVX2 and FMA are available; the slices fit the shape as above.
        unsafe {
            match d {
                16 => value_sum_avx2::<2>(p, values, stride, out),
                32 => value_sum_avx2::<4>(p, values, stride, out),
                64 => value_sum_avx2::<8>(p, values, stride, out),
                _ => return false,
            }
        }
        return true;
    }
    false
}

/// [`key_dots`] for `q.len() == 16 · M`.
///
/// # Safety
/// AVX-512F available; `keys` holds `scores.len()` rows of `16 · M` values `stride` apart.
#[target_feature(enable = "avx512f")]
unsafe fn key_dots_avx512<const M: usize>(
    q: &[f32],
    keys: &[f32],
    stride: usize,
    scores: &mut [f32],
) {
    let (qp, kp, n) = (q.as_ptr(), keys.as_ptr(), scores.len());
    // SAFETY (every load below): vector `c < M` of row `j < n` starts at
    // `j · stride + 16 · c` and ends within the row, inside `keys`; `q` is `16 · M` long.
    let qv: [__m512; M] = core::array::from_fn(|c| unsafe { _mm512_loadu_ps(qp.add(16 * c)) });
    let mut j = 0;
    while j + KEYS <= n {
        let mut acc = [_mm512_setzero_ps(); KEYS];
        for (c, &qc) in qv.iter().enumerate() {
            for (u, a) in acc.iter_mut().enumerate() {
                let k = unsafe { _mm512_loadu_ps(kp.add((j + u) * stride + 16 * c)) };
                *a = _mm512_fmadd_ps(qc, k, *a);
            }
        }
        for (u, a) in acc.into_iter().enumerate() {
            scores[j + u] = _mm512_reduce_add_ps(a);
        }
        j += KEYS;
    }
    while j < n {
        let mut a = _mm512_setzero_ps();
        for (c, &qc) in qv.iter().enumerate() {
            let k = unsafe { _mm512_loadu_ps(kp.add(j * stride + 16 * c)) };
            a = _mm512_fmadd_ps(qc, k, a);
        }
        scores[j] = _mm512_reduce_add_ps(a);
        j += 1;
    }
}

/// [`value_sum`] for `out.len() == 16 · M`: even and odd rows in two sets of
/// accumulators (`2 · M` independent chains), added at the end.
///
/// # Safety
/// AVX-512F available; `values` holds `p.len()` rows of `16 · M` values `stride` apart.
#[target_feature(enable = "avx512f")]
unsafe fn value_sum_avx512<const M: usize>(
    p: &[f32],
    values: &[f32],
    stride: usize,
    out: &mut [f32],
) {
    let (vp, n) = (values.as_ptr(), p.len());
    let mut even = [_mm512_setzero_ps(); M];
    let mut odd = [_mm512_setzero_ps(); M];
    let mut j = 0;
    // SAFETY (every load below): vector `c < M` of row `j < n` lies inside `values`.
    while j + 2 <= n {
        let (a, b) = (_mm512_set1_ps(p[j]), _mm512_set1_ps(p[j + 1]));
        for c in 0..M {
            let va = unsafe { _mm512_loadu_ps(vp.add(j * stride + 16 * c)) };
            let vb = unsafe { _mm512_loadu_ps(vp.add((j + 1) * stride + 16 * c)) };
            even[c] = _mm512_fmadd_ps(a, va, even[c]);
            odd[c] = _mm512_fmadd_ps(b, vb, odd[c]);
        }
        j += 2;
    }
    if j < n {
        let a = _mm512_set1_ps(p[j]);
        for (c, e) in even.iter_mut().enumerate() {
            let va = unsafe { _mm512_loadu_ps(vp.add(j * stride + 16 * c)) };
            *e = _mm512_fmadd_ps(a, va, *e);
        }
    }
    let op = out.as_mut_ptr();
    for c in 0..M {
        // SAFETY: `out` is `16 · M` long.
        unsafe { _mm512_storeu_ps(op.add(16 * c), _mm512_add_ps(even[c], odd[c])) };
    }
}

/// The sum of the eight lanes of `v`.
#[target_feature(enable = "avx2,fma")]
fn sum8(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ps(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

/// [`key_dots`] for `q.len() == 8 · M` on AVX2 + FMA.
///
/// # Safety
/// AVX2 and FMA available; `keys` holds `scores.len()` rows of `8 · M` values `stride`
/// apart.
#[target_feature(enable = "avx2,fma")]
unsafe fn key_dots_avx2<const M: usize>(
    q: &[f32],
    keys: &[f32],
    stride: usize,
    scores: &mut [f32],
) {
    let (qp, kp, n) = (q.as_ptr(), keys.as_ptr(), scores.len());
    let mut j = 0;
    // SAFETY (every load below): vector `c < M` of row `j < n` lies inside `keys`; `q` is
    // `8 · M` long.
    while j + KEYS <= n {
        let mut acc = [_mm256_setzero_ps(); KEYS];
        for c in 0..M {
            let qc = unsafe { _mm256_loadu_ps(qp.add(8 * c)) };
            for (u, a) in acc.iter_mut().enumerate() {
                let k = unsafe { _mm256_loadu_ps(kp.add((j + u) * stride + 8 * c)) };
                *a = _mm256_fmadd_ps(qc, k, *a);
            }
        }
        for (u, a) in acc.into_iter().enumerate() {
            scores[j + u] = sum8(a);
        }
        j += KEYS;
    }
    while j < n {
        let mut a = _mm256_setzero_ps();
        for c in 0..M {
            let qc = unsafe { _mm256_loadu_ps(qp.add(8 * c)) };
            let k = unsafe { _mm256_loadu_ps(kp.add(j * stride + 8 * c)) };
            a = _mm256_fmadd_ps(qc, k, a);
        }
        scores[j] = sum8(a);
        j += 1;
    }
}

/// [`value_sum`] for `out.len() == 8 · M` (at most 64) on AVX2 + FMA: `M` accumulators,
/// one chain each.
///
/// # Safety
/// AVX2 and FMA available; `values` holds `p.len()` rows of `8 · M` values `stride`
/// apart.
#[target_feature(enable = "avx2,fma")]
unsafe fn value_sum_avx2<const M: usize>(
    p: &[f32],
    values: &[f32],
    stride: usize,
    out: &mut [f32],
) {
    let vp = values.as_ptr();
    let mut acc = [_mm256_setzero_ps(); M];
    for (j, &pj) in p.iter().enumerate() {
        let a = _mm256_set1_ps(pj);
        for (c, s) in acc.iter_mut().enumerate() {
            // SAFETY: vector `c < M` of row `j < p.len()` lies inside `values`.
            let v = unsafe { _mm256_loadu_ps(vp.add(j * stride + 8 * c)) };
            *s = _mm256_fmadd_ps(a, v, *s);
        }
    }
    let op = out.as_mut_ptr();
    for (c, s) in acc.into_iter().enumerate() {
        // SAFETY: `out` is `8 · M` long.
        unsafe { _mm256_storeu_ps(op.add(8 * c), s) };
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::{key_dots, value_sum};
    use std::{vec, vec::Vec};

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    #[test]
    fn kernels_match_float64_sums_on_every_head_size_and_count() {
        let counts: &[usize] = if cfg!(miri) {
            &[0, 1, 5]
        } else {
            &[0, 1, 3, 4, 5, 9, 33]
        };
        for d in [16usize, 32, 64, 128] {
            let stride = 3 * d + 5;
            for &n in counts {
                let rows = data(n.max(1) * stride, 7);
                let rows = &rows[..if n == 0 { 0 } else { (n - 1) * stride + d }];
                let q = data(d, 11);
                let mut scores = vec![0.0f32; n];
                if key_dots(&q, rows, stride, &mut scores) {
                    for (j, s) in scores.iter().enumerate() {
                        let want: f64 = (0..d)
                            .map(|c| f64::from(q[c]) * f64::from(rows[j * stride + c]))
                            .sum();
                        assert!((f64::from(*s) - want).abs() < 1e-4, "d {d} n {n} key {j}");
                    }
                }
                let p = data(n, 3);
                let mut out = vec![f32::NAN; d];
                if value_sum(&p, rows, stride, &mut out) {
                    for (c, o) in out.iter().enumerate() {
                        let want: f64 = (0..n)
                            .map(|j| f64::from(p[j]) * f64::from(rows[j * stride + c]))
                            .sum();
                        assert!((f64::from(*o) - want).abs() < 1e-4, "d {d} n {n} lane {c}");
                    }
                }
            }
        }
    }

    #[test]
    fn shapes_the_kernels_do_not_cover_are_left_to_the_caller() {
        let rows = vec![1.0f32; 200];
        let mut s = vec![0.0f32; 3];
        // head size 48; rows past the slice; a stride shorter than the head
        assert!(!key_dots(&[1.0; 48], &rows, 64, &mut s));
        assert!(!key_dots(&[1.0; 64], &rows, 100, &mut s));
        assert!(!key_dots(&[1.0; 64], &rows, 32, &mut s));
        let mut out = vec![0.0f32; 64];
        assert!(!value_sum(&[1.0; 3], &rows, 100, &mut out));
        assert_eq!(s, [0.0; 3]);
        assert_eq!(out, [0.0; 64]);
    }
}
