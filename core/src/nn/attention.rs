//! Scaled dot-product attention: bidirectional over a whole input (BERT), and causal
//! with grouped key/value heads over a cache of past positions (llama).

use super::activation::fast_exp;
use crate::math::gemm;
#[cfg(feature = "bert")]
use crate::math::gemm::{matmul, pack_transposed, Product, RowsRef};
use crate::{Error, Result};

/// Multi-head self-attention over `t` tokens without masking (every token is real):
/// `ctx = softmax(q k^T / sqrt(d)) v` per head, as two dense products per head on the
/// `gemm` kernels. `kt` needs `t · hidden` values (`k` transposed, so each head's `k^T`
/// is a strided operand) and `scores` `t · t` (one head's attention matrix at a time).
///
/// # Errors
/// [`Error::BufferTooSmall`] for short buffers.
#[cfg(feature = "bert")]
pub fn attention(
    [q, k, v]: [&[f32]; 3],
    t: usize,
    hidden: usize,
    heads: usize,
    ctx: &mut [f32],
    kt: &mut [f32],
    scores: &mut [f32],
) -> Result<()> {
    let need = t * hidden;
    if k.len() < need || kt.len() < need || scores.len() < t * t {
        return Err(Error::BufferTooSmall {
            needed: need.max(t * t),
            got: kt.len().min(scores.len()),
        });
    }
    pack_transposed(RowsRef::F32(&k[..need]), t, hidden, kt, t)?;
    attention_rows(q, kt, v, t, hidden, heads, 0, t, ctx, scores)
}

/// Query rows `r0 .. r1` of [`attention`] after `k` was packed transposed into `kt`
/// (`hidden × t`): writes `ctx` rows `r0 .. r1` into `ctx_rows` (`(r1 - r0) × hidden`),
/// with `scores` holding `(r1 - r0) · t` values. Each output is computed as by the whole
/// attention, so rows can be split across threads.
///
/// # Errors
/// [`Error::BufferTooSmall`] for short buffers.
#[cfg(feature = "bert")]
#[allow(clippy::too_many_arguments)]
pub fn attention_rows(
    q: &[f32],
    kt: &[f32],
    v: &[f32],
    t: usize,
    hidden: usize,
    heads: usize,
    r0: usize,
    r1: usize,
    ctx_rows: &mut [f32],
    scores: &mut [f32],
) -> Result<()> {
    let d = hidden / heads;
    let scale = 1.0 / libm::sqrtf(d as f32);
    let m = r1.saturating_sub(r0);
    if scores.len() < m * t || ctx_rows.len() < m * hidden || q.len() < r1 * hidden {
        return Err(Error::BufferTooSmall {
            needed: m * t,
            got: scores.len(),
        });
    }
    let scores = &mut scores[..m * t];
    let q = &q[r0 * hidden..];
    for h in 0..heads {
        let off = h * d;
        // scores = q_h · k_h^T
        let qk = Product {
            m,
            n: t,
            k: d,
            a_stride: hidden,
            b_stride: t,
            c_stride: t,
            accumulate: false,
        };
        matmul(
            &qk,
            q.get(off..).unwrap_or(&[]),
            kt.get(off * t..).unwrap_or(&[]),
            scores,
        )?;
        for row in scores.chunks_exact_mut(t) {
            softmax(row, scale);
        }
        // ctx_h = softmax · v_h
        let pv = Product {
            m,
            n: d,
            k: t,
            a_stride: t,
            b_stride: hidden,
            c_stride: hidden,
            accumulate: false,
        };
        matmul(
            &pv,
            scores,
            v.get(off..).unwrap_or(&[]),
            ctx_rows.get_mut(off..).unwrap_or(&mut []),
        )?;
    }
    Ok(())
}

/// Shape of a causal attention with grouped key/value heads: `heads` query heads of
/// width `head_dim` share `kv_heads` key/value heads (`heads % kv_heads == 0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CausalShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

/// Causal attention of `t` new tokens at positions `past .. past + t` over a cache that
/// already holds their keys and values at rows `0 .. past + t` (`k_cache`, `v_cache`:
/// `(positions, kv_heads · head_dim)` row-major). Token `i` attends to positions
/// `0 ..= past + i`. `q` is `(t, heads · head_dim)`, `out` the same shape; `scores`
/// needs `past + t` values.
///
/// # Errors
/// [`Error::BufferTooSmall`] / [`Error::LengthMismatch`] for short buffers.
#[allow(clippy::too_many_arguments)]
pub fn causal_attention(
    shape: CausalShape,
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    t: usize,
    past: usize,
    out: &mut [f32],
    scores: &mut [f32],
) -> Result<()> {
    let CausalShape {
        heads,
        kv_heads,
        head_dim: d,
    } = shape;
    let (qw, kvw) = (heads * d, kv_heads * d);
    let len = past + t;
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(Error::LengthMismatch {
            expected: heads,
            found: kv_heads,
        });
    }
    if q.len() < t * qw
        || out.len() < t * qw
        || k_cache.len() < len * kvw
        || v_cache.len() < len * kvw
    {
        return Err(Error::LengthMismatch {
            expected: len * kvw,
            found: k_cache.len().min(v_cache.len()),
        });
    }
    if scores.len() < len {
        return Err(Error::BufferTooSmall {
            needed: len,
            got: scores.len(),
        });
    }
    let group = heads / kv_heads;
    let scale = 1.0 / libm::sqrtf(d as f32);
    for i in 0..t {
        let seen = past + i + 1;
        for h in 0..heads {
            let kv = (h / group) * d;
            let qh = &q[i * qw + h * d..][..d];
            let sc = &mut scores[..seen];
            if !gemm::key_dots_wide(qh, &k_cache[kv..], kvw, sc) {
                // Keys four at a time: four independent sums share the loads of `qh`.
                let mut fours = sc.chunks_exact_mut(4);
                for (c, s4) in (&mut fours).enumerate() {
                    let keys = core::array::from_fn(|u| &k_cache[(4 * c + u) * kvw + kv..][..d]);
                    s4.copy_from_slice(&dot4(qh, keys));
                }
                let done = seen - fours.into_remainder().len();
                for (j, s) in sc.iter_mut().enumerate().skip(done) {
                    *s = crate::math::dot(qh, &k_cache[j * kvw + kv..][..d]);
                }
            }
            softmax(sc, scale);
            let oh = &mut out[i * qw + h * d..][..d];
            if gemm::value_sum_wide(sc, &v_cache[kv..], kvw, oh) {
                continue;
            }
            oh.fill(0.0);
            // Values four at a time: one pass over the output per four rows.
            let mut fours = sc.chunks_exact(4);
            for (c, p) in (&mut fours).enumerate() {
                let vr: [&[f32]; 4] =
                    core::array::from_fn(|u| &v_cache[(4 * c + u) * kvw + kv..][..d]);
                for ((((o, a), b), e), f) in
                    oh.iter_mut().zip(vr[0]).zip(vr[1]).zip(vr[2]).zip(vr[3])
                {
                    *o += (p[0] * a + p[1] * b) + (p[2] * e + p[3] * f);
                }
            }
            let done = seen - fours.remainder().len();
            for (j, &p) in sc.iter().enumerate().skip(done) {
                let vr = &v_cache[j * kvw + kv..][..d];
                for (o, v) in oh.iter_mut().zip(vr) {
                    *o += p * v;
                }
            }
        }
    }
    Ok(())
}

/// The dot products of `q` with four keys of its length, in eight lanes each (the
/// arithmetic of [`crate::math::dot`] for each key).
#[inline]
fn dot4(q: &[f32], k: [&[f32]; 4]) -> [f32; 4] {
    let mut acc = [[0f32; 8]; 4];
    let (q8, _) = q.as_chunks::<8>();
    for (acc, k) in acc.iter_mut().zip(k) {
        for (x, y) in q8.iter().zip(k.as_chunks::<8>().0) {
            lanes8(acc, x, y);
        }
    }
    let whole = q8.len() * 8;
    core::array::from_fn(|u| {
        let a = &acc[u];
        let tail: f32 = q[whole..]
            .iter()
            .zip(&k[u][whole..])
            .map(|(x, y)| x * y)
            .sum();
        ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + tail
    })
}

/// `acc[l] += x[l] · y[l]` for the eight lanes.
#[inline(always)]
fn lanes8(acc: &mut [f32; 8], x: &[f32; 8], y: &[f32; 8]) {
    for l in 0..8 {
        acc[l] += x[l] * y[l];
    }
}

/// `row = softmax(scale · row)` in place, in three passes that each vectorise (maximum
/// and sum over eight lanes, the exponentials branch-free); on x86-64 CPUs with AVX-512 a
/// kernel with fused multiply-adds and vector reductions (same formula, a few units in
/// the last place apart).
pub fn softmax(row: &mut [f32], scale: f32) {
    if crate::math::gemm::softmax_wide(row, scale) {
        return;
    }
    // 32 independent lanes, so that the maxima do not form one serial chain (the maximum
    // does not depend on the order it is taken in).
    let mut lanes = [f32::NEG_INFINITY; 32];
    let mut chunks = row.chunks_exact(32);
    for c in &mut chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = m.max(v);
        }
    }
    // Halve the lanes in place (16, 8, 4, 2, 1): each step is one vector maximum, where a
    // fold over the 32 would be 32 dependent scalar ones (half the softmax's time).
    let mut width = lanes.len();
    while width > 1 {
        width /= 2;
        let (low, high) = lanes.split_at_mut(width);
        for (m, &v) in low.iter_mut().zip(high.iter()) {
            *m = m.max(v);
        }
    }
    let max = chunks.remainder().iter().fold(lanes[0], |m, &v| m.max(v));
    for s in row.iter_mut() {
        *s = fast_exp((*s - max) * scale);
    }
    let inv = 1.0 / crate::math::sum(row);
    row.iter_mut().for_each(|s| *s *= inv);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failure is a panic with its location
pub(crate) mod tests {
    extern crate std;
    #[cfg(feature = "bert")]
    use super::attention;
    use super::{causal_attention, softmax, CausalShape};
    use std::vec;
    use std::vec::Vec;

    /// `n` pseudo-random values in `[-1, 1)` from `seed` (shared by the kernels' tests).
    pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// softmax(q k^T / sqrt(d)) v for one head over keys `0..=last`, in f64.
    fn reference(q: &[f32], ks: &[&[f32]], vs: &[&[f32]]) -> Vec<f64> {
        let d = q.len();
        let s: Vec<f64> = ks
            .iter()
            .map(|k| {
                q.iter()
                    .zip(*k)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum::<f64>()
                    / (d as f64).sqrt()
            })
            .collect();
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
        let z: f64 = e.iter().sum();
        let mut out = vec![0.0f64; d];
        for (p, v) in e.iter().zip(vs) {
            for (o, x) in out.iter_mut().zip(*v) {
                *o += p / z * f64::from(*x);
            }
        }
        out
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut r = values(13, 3);
        softmax(&mut r, 0.7);
        let s: f32 = r.iter().sum();
        assert!((s - 1.0).abs() < 1e-6);
    }

    #[cfg(feature = "bert")]
    #[test]
    fn bidirectional_attention_matches_reference() {
        let (t, heads, d) = (5, 3, 4);
        let h = heads * d;
        let (q, k, v) = (values(t * h, 1), values(t * h, 2), values(t * h, 3));
        let mut ctx = vec![0.0f32; t * h];
        let (mut kt, mut scores) = (vec![0.0f32; t * h], vec![0.0f32; t * t]);
        attention([&q, &k, &v], t, h, heads, &mut ctx, &mut kt, &mut scores).unwrap();
        for i in 0..t {
            for hd in 0..heads {
                let ks: Vec<&[f32]> = (0..t).map(|j| &k[j * h + hd * d..][..d]).collect();
                let vs: Vec<&[f32]> = (0..t).map(|j| &v[j * h + hd * d..][..d]).collect();
                let want = reference(&q[i * h + hd * d..][..d], &ks, &vs);
                for (a, b) in ctx[i * h + hd * d..][..d].iter().zip(want) {
                    assert!((f64::from(*a) - b).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn causal_grouped_attention_matches_reference_and_prefill_equals_steps() {
        let shape = CausalShape {
            heads: 6,
            kv_heads: 2,
            head_dim: 4,
        };
        let (qw, kvw) = (24, 8);
        let (past, t) = (3, 4);
        let len = past + t;
        let (q, kc, vc) = (
            values(t * qw, 5),
            values(len * kvw, 6),
            values(len * kvw, 7),
        );
        let mut out = vec![0.0f32; t * qw];
        let mut scores = vec![0.0f32; len];
        causal_attention(shape, &q, &kc, &vc, t, past, &mut out, &mut scores).unwrap();
        for i in 0..t {
            for h in 0..6 {
                let g = h / 3;
                let ks: Vec<&[f32]> = (0..=past + i)
                    .map(|j| &kc[j * kvw + g * 4..][..4])
                    .collect();
                let vs: Vec<&[f32]> = (0..=past + i)
                    .map(|j| &vc[j * kvw + g * 4..][..4])
                    .collect();
                let want = reference(&q[i * qw + h * 4..][..4], &ks, &vs);
                for (a, b) in out[i * qw + h * 4..][..4].iter().zip(want) {
                    assert!((f64::from(*a) - b).abs() < 1e-5, "token {i} head {h}");
                }
            }
            // The same token alone, with the cache cut at its position, gives the same row.
            let mut one = vec![0.0f32; qw];
            causal_attention(
                shape,
                &q[i * qw..][..qw],
                &kc[..(past + i + 1) * kvw],
                &vc[..(past + i + 1) * kvw],
                1,
                past + i,
                &mut one,
                &mut scores,
            )
            .unwrap();
            assert_eq!(one, out[i * qw..][..qw]);
        }
        let bad = CausalShape {
            kv_heads: 4,
            ..shape
        };
        assert!(causal_attention(bad, &q, &kc, &vc, t, past, &mut out, &mut scores).is_err());
    }
}
