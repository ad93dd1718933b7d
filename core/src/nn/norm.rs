//! Layer norm (BERT) and RMS norm (llama), row by row, in place.

/// Layer norm of one row: `x <- (x - mean) / sqrt(var + eps) · w + b`. `w` and `b` have
/// the row's length. On x86-64 CPUs with AVX-512 a kernel with fused multiply-adds
/// computes it (same formula, a few units in the last place apart).
pub fn layer_norm(row: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    if crate::math::gemm::norm_wide(row, w, Some(b), eps) {
        return;
    }
    let h = row.len();
    // Lane-wise sums (they vectorise; a plain `sum` is one serial chain).
    let mean = crate::math::sum(row) / h as f32;
    let mut dev = [0.0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (d, v) in dev.iter_mut().zip(c) {
            *d += (v - mean) * (v - mean);
        }
    }
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    let var = (crate::math::sum(&dev) + tail) / h as f32;
    let inv = 1.0 / libm::sqrtf(var + eps);
    for ((v, wv), bv) in row.iter_mut().zip(w.iter()).zip(b.iter()) {
        *v = (*v - mean) * inv * wv + bv;
    }
}

/// RMS norm of one row: `x <- x / sqrt(mean(x²) + eps) · w`. `w` has the row's length
/// (AVX-512 kernel where the CPU has one, as [`layer_norm`]).
pub fn rms_norm(row: &mut [f32], w: &[f32], eps: f32) {
    if crate::math::gemm::norm_wide(row, w, None, eps) {
        return;
    }
    let h = row.len();
    let mut acc = [0.0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    let ms = (crate::math::sum(&acc) + tail) / h as f32;
    let inv = 1.0 / libm::sqrtf(ms + eps);
    for (v, wv) in row.iter_mut().zip(w) {
        *v = *v * inv * wv;
    }
}

#[cfg(test)]
mod tests {
    use super::{layer_norm, rms_norm};

    fn row(n: usize, seed: u32) -> [f32; 37] {
        let mut r = [0.0f32; 37];
        let mut s = seed;
        for v in r.iter_mut().take(n) {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *v = (s >> 8) as f32 / (1u32 << 24) as f32 * 6.0 - 3.0;
        }
        r
    }

    #[test]
    fn norms_match_float64_references() {
        for n in [1usize, 7, 8, 9, 37] {
            let x = row(n, n as u32);
            let w = row(n, 99);
            let b = row(n, 7);
            let x64: [f64; 37] = core::array::from_fn(|i| f64::from(x[i]));
            let mean = x64[..n].iter().sum::<f64>() / n as f64;
            let var = x64[..n]
                .iter()
                .map(|v| (v - mean) * (v - mean))
                .sum::<f64>()
                / n as f64;
            let mut ln = x;
            layer_norm(&mut ln[..n], &w[..n], &b[..n], 1e-5);
            for i in 0..n {
                let want =
                    (x64[i] - mean) / (var + 1e-5).sqrt() * f64::from(w[i]) + f64::from(b[i]);
                assert!(
                    (f64::from(ln[i]) - want).abs() < 1e-4,
                    "layer norm n={n} i={i}"
                );
            }
            let ms = x64[..n].iter().map(|v| v * v).sum::<f64>() / n as f64;
            let mut rn = x;
            rms_norm(&mut rn[..n], &w[..n], 1e-5);
            for i in 0..n {
                let want = x64[i] / (ms + 1e-5).sqrt() * f64::from(w[i]);
                assert!(
                    (f64::from(rn[i]) - want).abs() < 1e-5,
                    "rms norm n={n} i={i}"
                );
            }
        }
    }
}
