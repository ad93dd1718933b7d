//! Element-wise activations and the fast exponential they share with softmax.

/// In-place ReLU.
pub fn relu(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}

/// Exact GELU, `0.5·x·(1 + erf(x/√2))` (HF BERT's `gelu`), in place. On x86-64 CPUs with
/// AVX-512 a kernel with fused multiply-adds computes the same formula (to a few units in
/// the last place).
pub fn gelu(x: &mut [f32]) {
    if crate::math::gemm::gelu_wide(x) {
        return;
    }
    for v in x {
        *v = 0.5 * *v * (1.0 + fast_erf(*v * core::f32::consts::FRAC_1_SQRT_2));
    }
}

/// SiLU (swish), `x·σ(x)`, in place (AVX-512 kernel where the CPU has one, as [`gelu`]).
pub fn silu(x: &mut [f32]) {
    if crate::math::gemm::silu_wide(x, None) {
        return;
    }
    for v in x {
        *v = silu1(*v);
    }
}

/// `silu(gate) · up`, written into `gate` (the SwiGLU feed-forward's gating); pairs past
/// the shorter slice are left as they are.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    if crate::math::gemm::silu_wide(&mut gate[..n], Some(&up[..n])) {
        return;
    }
    for (g, u) in gate.iter_mut().zip(up) {
        *g = silu1(*g) * u;
    }
}

#[inline(always)]
fn silu1(v: f32) -> f32 {
    // σ(v) = 1 / (1 + e^-v); `fast_exp` clamps its argument, so no overflow.
    v / (1.0 + fast_exp(-v))
}

/// `e^x` for `x <= 0` (softmax arguments) and moderate positive `x`, branch-free so loops
/// over it vectorise: `2^n · p(f)` with `n = round(x·log2 e)`, `f = x - n·ln 2` (split in two
/// constants) and a degree-6 polynomial; relative error below 3e-7 on `[-87, 88]`, 0 below.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest with the 1.5·2^23 trick (no `floor` in core, and it vectorises):
    // `shifted`'s bits are 0x4B40_0000 + n, so `n` comes back as an integer without a
    // float-to-int conversion (whose saturation would keep the loop scalar).
    let shifted = x * core::f32::consts::LOG2_E + 12_582_912.0;
    let n = shifted - 12_582_912.0;
    let f = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (0.166_666_67
                    + f * (0.041_666_668 + f * (0.008_333_334 + f * 0.001_388_889)))));
    // 2^n: (0x4B40_0000 + n + 127) << 23 keeps the low 9 bits, n + 127 in 1 ..= 254.
    p * f32::from_bits(shifted.to_bits().wrapping_add(127) << 23)
}

/// `erf(x)`, branch-free (Abramowitz and Stegun 7.1.26, with [`fast_exp`]): absolute error
/// below 1e-6 in f32 (measured 5.8e-7 against libm), far inside the model tolerances.
#[inline(always)]
pub fn fast_erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * fast_exp(-a * a);
    y.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::{fast_erf, fast_exp, gelu, relu, silu, swiglu};

    #[test]
    fn fast_exp_matches_libm() {
        let mut worst = 0.0f32;
        let mut x = -87.0f32;
        while x < 20.0 {
            let (a, b) = (fast_exp(x), libm::expf(x));
            worst = worst.max(((a - b) / b).abs());
            x += 0.001_3;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(fast_exp(-200.0), fast_exp(-87.0));
        assert!(fast_exp(-87.0) > 0.0 && fast_exp(-87.0) < 2e-38);
    }

    #[test]
    fn fast_erf_matches_libm() {
        let mut worst = 0.0f32;
        let mut x = -6.0f32;
        while x < 6.0 {
            worst = worst.max((fast_erf(x) - libm::erff(x)).abs());
            x += 0.000_7;
        }
        assert!(worst < 1e-6, "absolute error {worst}");
    }

    #[test]
    fn activations_match_their_definitions() {
        let xs = [-30.0f32, -3.5, -1.0, -0.25, 0.0, 0.5, 2.0, 7.0, 40.0];
        let (mut r, mut g, mut s) = (xs, xs, xs);
        relu(&mut r);
        gelu(&mut g);
        silu(&mut s);
        for (i, &x) in xs.iter().enumerate() {
            let x64 = f64::from(x);
            assert_eq!(r[i], x.max(0.0));
            let gelu_ref = 0.5 * x64 * (1.0 + libm::erf(x64 / core::f64::consts::SQRT_2));
            assert!(
                (f64::from(g[i]) - gelu_ref).abs() < 2e-6 * (1.0 + x64.abs()),
                "gelu({x})"
            );
            let silu_ref = x64 / (1.0 + libm::exp(-x64));
            assert!(
                (f64::from(s[i]) - silu_ref).abs() < 1e-6 * (1.0 + x64.abs()),
                "silu({x})"
            );
        }
        let mut gate = [1.0f32, -2.0];
        swiglu(&mut gate, &[3.0, 0.5]);
        let want = [3.0 / (1.0 + libm::exp(-1.0)), -1.0 / (1.0 + libm::exp(2.0))];
        for (a, b) in gate.iter().zip(want) {
            assert!((f64::from(*a) - b).abs() < 1e-6);
        }
    }
}
