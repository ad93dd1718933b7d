//! The WebAssembly SIMD128 kernels of attention over an `f32` key/value cache: the scores
//! of a group of query heads against their keys, and the probability-weighted sums of
//! their values (`nn::attention`'s `key_dots` and `value_sum`, which LLVM left mostly
//! scalar for SIMD128). Each output is the portable code's arithmetic, to the last bit:
//! a score sums its products in eight lanes (two `v128`), reduced as
//! `((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7))`; an output value adds four
//! positions' products at a time as `(p0 a + p1 b) + (p2 e + p3 f)`, then the rest one
//! at a time. Half-precision caches and head widths that are not a multiple of 8 stay on
//! the portable code (`false`). The softmax between them ([`softmax`]) is the portable
//! `softmax_stats` four lanes at a time: the same exponential, sum and scaling.

use core::arch::wasm32::{
    f32x4, f32x4_add, f32x4_extract_lane, f32x4_mul, f32x4_pmax, f32x4_pmin, f32x4_splat,
    f32x4_sub, i32x4_add, i32x4_shl, i32x4_splat, v128,
};

use crate::nn::activation::fast_exp;
use crate::nn::attention::KvSlice;

/// `q` as `h` heads of `d` values and `scores` as `h` rows of `n`, or `None` when the
/// kernels do not take them (`d` a multiple of 8).
fn shape(heads_len: usize, rows_len: usize, d: usize) -> Option<(usize, usize)> {
    if !d.is_multiple_of(8) {
        return None;
    }
    super::attention_shape(heads_len, rows_len, d)
}

/// The `f32` cache rows if `n` rows of `d` values `stride` apart lie in them.
fn rows(cache: KvSlice<'_>, n: usize, d: usize, stride: usize) -> Option<&[f32]> {
    let KvSlice::F32(rows) = cache else {
        return None;
    };
    super::cache_rows_fit(rows.len(), n, d, stride).then_some(rows)
}

/// Four values of `x` from `at` as one vector (the callers checked the lengths; zeros
/// otherwise).
#[inline(always)]
fn load(x: &[f32], at: usize) -> v128 {
    match x.get(at..at + 4) {
        Some(&[a, b, c, e]) => f32x4(a, b, c, e),
        _ => f32x4_splat(0.0),
    }
}

/// `scores[r · n + j] = q_r · keys[j · stride ..][..d]` (see `gemm::key_dots_wide`).
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
    let Some(keys) = rows(keys, n, d, stride) else {
        return false;
    };
    // What the portable code adds for the part of a head past its whole chunks of 8:
    // nothing here, summed as it sums it.
    let tail: f32 = [0f32; 0].iter().sum();
    for (qh, row) in q
        .chunks_exact(d)
        .zip(scores.chunks_exact_mut(n))
        .take(heads)
    {
        let mut j = 0;
        while j < n {
            let g = (n - j).min(4);
            let mut acc = [[f32x4_splat(0.0); 2]; 4];
            for c in (0..d).step_by(8) {
                let (q0, q1) = (load(qh, c), load(qh, c + 4));
                for (u, acc) in acc.iter_mut().enumerate().take(g) {
                    let at = (j + u) * stride + c;
                    acc[0] = f32x4_add(acc[0], f32x4_mul(q0, load(keys, at)));
                    acc[1] = f32x4_add(acc[1], f32x4_mul(q1, load(keys, at + 4)));
                }
            }
            for (u, acc) in acc.iter().enumerate().take(g) {
                if let Some(o) = row.get_mut(j + u) {
                    *o = eight_lane_sum(*acc) + tail;
                }
            }
            j += g;
        }
    }
    true
}

/// Output values per pass of [`value_sum`]: eight vectors held in registers.
const OUT_CHUNK: usize = 32;

/// `out[r · d ..][..d] = Σ_j p[r · n + j] · values[j · stride ..][..d]` (see
/// `gemm::value_sum_wide`).
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
    let Some(values) = rows(values, n, d, stride) else {
        return false;
    };
    if n == 0 {
        out.fill(0.0);
        return true;
    }
    let fours = n - n % 4;
    for (ph, oh) in p.chunks_exact(n).zip(out.chunks_exact_mut(d)).take(heads) {
        let mut o0 = 0;
        while o0 < d {
            let w = (d - o0).min(OUT_CHUNK) / 4;
            let mut acc = [f32x4_splat(0.0); OUT_CHUNK / 4];
            let mut j = 0;
            while j < fours {
                let pj = [
                    f32x4_splat(ph[j]),
                    f32x4_splat(ph[j + 1]),
                    f32x4_splat(ph[j + 2]),
                    f32x4_splat(ph[j + 3]),
                ];
                for (i, acc) in acc.iter_mut().enumerate().take(w) {
                    let at = j * stride + o0 + 4 * i;
                    let a = f32x4_mul(pj[0], load(values, at));
                    let b = f32x4_mul(pj[1], load(values, at + stride));
                    let e = f32x4_mul(pj[2], load(values, at + 2 * stride));
                    let f = f32x4_mul(pj[3], load(values, at + 3 * stride));
                    *acc = f32x4_add(*acc, f32x4_add(f32x4_add(a, b), f32x4_add(e, f)));
                }
                j += 4;
            }
            for (j, &pj) in ph.iter().enumerate().skip(fours) {
                let pj = f32x4_splat(pj);
                for (i, acc) in acc.iter_mut().enumerate().take(w) {
                    let v = load(values, j * stride + o0 + 4 * i);
                    *acc = f32x4_add(*acc, f32x4_mul(pj, v));
                }
            }
            for (i, acc) in acc.iter().enumerate().take(w) {
                if let Some(dst) = oh.get_mut(o0 + 4 * i..o0 + 4 * i + 4) {
                    let mut lanes = [0f32; 4];
                    store(&mut lanes, *acc);
                    dst.copy_from_slice(&lanes);
                }
            }
            o0 += 4 * w;
        }
    }
    true
}

/// Eight lanes held as two vectors (lanes 0-3, then 4-7) summed as the portable code sums
/// its eight: `((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7))` (`crate::math::sum`,
/// the attention's `dots`).
#[inline(always)]
fn eight_lane_sum([lo, hi]: [v128; 2]) -> f32 {
    let v = f32x4_add(lo, hi);
    (f32x4_extract_lane::<0>(v) + f32x4_extract_lane::<1>(v))
        + (f32x4_extract_lane::<2>(v) + f32x4_extract_lane::<3>(v))
}

/// `v`'s four lanes into `out`.
#[inline(always)]
fn store(out: &mut [f32; 4], v: v128) {
    *out = [
        f32x4_extract_lane::<0>(v),
        f32x4_extract_lane::<1>(v),
        f32x4_extract_lane::<2>(v),
        f32x4_extract_lane::<3>(v),
    ];
}

/// `row = softmax(scale · row)` in place, returning the row's largest value and the sum of
/// the exponentials it divided by: the portable `softmax_stats` (the maximum, then
/// `fast_exp((x - max) · scale)` with each operation of [`fast_exp`] on four lanes, the sum
/// in eight lanes reduced as `crate::math::sum` reduces them, the products by the sum's
/// inverse), so the same bits wherever the maximum is not a tie of `+0` and `-0` (whose
/// sign either code may keep; the exponentials do not depend on it).
pub(super) fn softmax(row: &mut [f32], scale: f32) -> [f32; 2] {
    let mut lanes = f32x4_splat(f32::NEG_INFINITY);
    let mut fours = row.chunks_exact(4);
    for c in &mut fours {
        lanes = f32x4_pmax(lanes, f32x4(c[0], c[1], c[2], c[3]));
    }
    let max = fours.remainder().iter().fold(
        (f32x4_extract_lane::<0>(lanes).max(f32x4_extract_lane::<1>(lanes)))
            .max(f32x4_extract_lane::<2>(lanes).max(f32x4_extract_lane::<3>(lanes))),
        |m, &v| m.max(v),
    );
    let (vmax, vscale) = (f32x4_splat(max), f32x4_splat(scale));
    let mut fours = row.chunks_exact_mut(4);
    for c in &mut fours {
        let x = f32x4_mul(f32x4_sub(f32x4(c[0], c[1], c[2], c[3]), vmax), vscale);
        let mut e = [0f32; 4];
        store(&mut e, exp4(x));
        c.copy_from_slice(&e);
    }
    for s in fours.into_remainder() {
        *s = fast_exp((*s - max) * scale);
    }
    let mut acc = [f32x4_splat(0.0); 2];
    let mut eights = row.chunks_exact(8);
    for c in &mut eights {
        acc[0] = f32x4_add(acc[0], f32x4(c[0], c[1], c[2], c[3]));
        acc[1] = f32x4_add(acc[1], f32x4(c[4], c[5], c[6], c[7]));
    }
    let tail: f32 = eights.remainder().iter().sum();
    let total = eight_lane_sum(acc) + tail;
    let inv = 1.0 / total;
    row.iter_mut().for_each(|s| *s *= inv);
    [max, total]
}

/// [`fast_exp`] on four lanes, operation for operation.
#[inline(always)]
fn exp4(x: v128) -> v128 {
    // clamp(-87, 88): x below -87 becomes -87, above 88 becomes 88.
    let x = f32x4_pmin(f32x4_splat(88.0), f32x4_pmax(f32x4_splat(-87.0), x));
    let shifted = f32x4_add(
        f32x4_mul(x, f32x4_splat(core::f32::consts::LOG2_E)),
        f32x4_splat(12_582_912.0),
    );
    let n = f32x4_sub(shifted, f32x4_splat(12_582_912.0));
    let f = f32x4_sub(
        f32x4_sub(x, f32x4_mul(n, f32x4_splat(0.693_145_75))),
        f32x4_mul(n, f32x4_splat(1.428_606_8e-6)),
    );
    let c = |v: f32| f32x4_splat(v);
    let step = |k: f32, inner: v128| f32x4_add(c(k), f32x4_mul(f, inner));
    let p = step(
        1.0,
        step(
            1.0,
            step(
                0.5,
                step(
                    0.166_666_67,
                    step(0.041_666_668, step(0.008_333_334, c(0.001_388_889))),
                ),
            ),
        ),
    );
    f32x4_mul(p, i32x4_shl(i32x4_add(shifted, i32x4_splat(127)), 23))
}
