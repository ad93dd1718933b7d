//! Rotary position embeddings (RoPE) on adjacent pairs: element pairs `(2i, 2i+1)` of
//! each head are rotated by `θ_i = pos · base^(-2i/n)`. This is the layout llama.cpp's
//! converter gives llama files (it permutes the Q and K rows of Hugging Face checkpoints,
//! whose "rotate half" pairs `(i, i + d/2)`, into adjacent pairs).

/// Writes `cos θ_i` and `sin θ_i` for position `pos` into `cos`, `sin` (`n_dims / 2`
/// values each), for RoPE over the first `n_dims` elements of each head with frequency
/// base `base`.
pub fn rope_angles(pos: usize, n_dims: usize, base: f32, cos: &mut [f32], sin: &mut [f32]) {
    let half = n_dims / 2;
    // θ_i = pos · base^(-2i/n): the exponent step as a power, as the reference computes it.
    let step = libm::powf(base, -2.0 / n_dims as f32);
    let mut theta = pos as f32;
    for (c, s) in cos.iter_mut().zip(sin.iter_mut()).take(half) {
        *c = libm::cosf(theta);
        *s = libm::sinf(theta);
        theta *= step;
    }
}

/// Rotates the first `n_dims` elements of each head of `x` (`heads` heads of `head_dim`
/// values, contiguous) by the angles of [`rope_angles`], in adjacent pairs.
pub fn rope_apply(x: &mut [f32], head_dim: usize, n_dims: usize, cos: &[f32], sin: &[f32]) {
    let half = n_dims / 2;
    for head in x.chunks_exact_mut(head_dim) {
        for ((pair, c), s) in head[..2 * half]
            .chunks_exact_mut(2)
            .zip(cos.iter().take(half))
            .zip(sin.iter())
        {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * c - b * s;
            pair[1] = a * s + b * c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{rope_angles, rope_apply};

    #[test]
    fn rope_matches_float64_rotation_and_keeps_norms() {
        let (d, n, base) = (8usize, 6usize, 10_000.0f32);
        let x0: [f32; 16] = core::array::from_fn(|i| (i as f32 * 0.37).sin() + 0.1);
        for pos in [0usize, 1, 7, 1000] {
            let (mut c, mut s) = ([0.0f32; 3], [0.0f32; 3]);
            rope_angles(pos, n, base, &mut c, &mut s);
            let mut x = x0;
            rope_apply(&mut x, d, n, &c, &s);
            for h in 0..2 {
                for i in 0..3 {
                    let th = pos as f64 * f64::from(base).powf(-2.0 * i as f64 / n as f64);
                    let (a, b) = (
                        f64::from(x0[h * d + 2 * i]),
                        f64::from(x0[h * d + 2 * i + 1]),
                    );
                    let want = [a * th.cos() - b * th.sin(), a * th.sin() + b * th.cos()];
                    for k in 0..2 {
                        let got = f64::from(x[h * d + 2 * i + k]);
                        assert!((got - want[k]).abs() < 2e-4, "pos {pos} head {h} pair {i}");
                    }
                }
                // Elements past n_dims are untouched.
                assert_eq!(x[h * d + 6..h * d + 8], x0[h * d + 6..h * d + 8]);
            }
            if pos == 0 {
                assert_eq!(x, x0);
            }
        }
    }
}
