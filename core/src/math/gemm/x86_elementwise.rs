//! The elementwise steps of the forward pass on AVX-512F (x86-64), chosen at run time:
//! softmax, GELU, SiLU / SwiGLU, layer and RMS norm, sixteen lanes at a time (the first
//! three over one exponential) with fused multiply-adds. Same algorithms and constants as the portable versions in
//! [`crate::nn`] (range reduction to `2^n · p(f)`, the degree-6 polynomial, Abramowitz and
//! Stegun's `erf`), in about half the instructions: the polynomials as fused multiply-adds,
//! `2^n` by `vscalefps`, softmax's maximum and sum as vector reductions. The fused roundings
//! make results differ from the portable ones by a few units in the last place (tested);
//! like the product kernels, they are the same for any thread count.
//!
//! Soundness: a kernel runs only after [`super::cpu`] saw AVX-512F; every pointer is
//! inside its slice (whole vectors below `len`, the last partial one masked).
#![allow(unsafe_code)]

use core::arch::x86_64::{
    __m512, __mmask16, _mm512_abs_ps, _mm512_add_ps, _mm512_and_si512, _mm512_andnot_si512,
    _mm512_castps_si512, _mm512_castsi512_ps, _mm512_div_ps, _mm512_fmadd_ps, _mm512_fnmadd_ps,
    _mm512_mask_add_ps, _mm512_mask_loadu_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps,
    _mm512_maskz_sub_ps, _mm512_mul_ps, _mm512_or_si512, _mm512_reduce_add_ps, _mm512_set1_epi32,
    _mm512_set1_ps, _mm512_setzero_ps, _mm512_sqrt_ps, _mm512_sub_ps,
};

use super::cpu::avx512_available;
use super::x86_products::lanes;

/// `e^x` in sixteen lanes, the argument clamped to `[-87, 88]` as [`fast_exp`] does:
/// `n = round(x · log2 e)`, `f = x - n · ln 2` (two constants), `p(f)` the same degree-6
/// Taylor polynomial by Horner's rule in fused multiply-adds, then `p · 2^n`.
///
/// [`fast_exp`]: crate::nn::activation::fast_exp
#[target_feature(enable = "avx512f")]
#[inline]
fn exp16(x: __m512) -> __m512 {
    let x = ops::min(ops::max(x, _mm512_set1_ps(-87.0)), _mm512_set1_ps(88.0));
    let n = ops::round(_mm512_mul_ps(x, _mm512_set1_ps(core::f32::consts::LOG2_E)));
    let f = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
    let f = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), f);
    let c = |v: f32| _mm512_set1_ps(v);
    let mut p = _mm512_fmadd_ps(f, c(0.001_388_889), c(0.008_333_334));
    p = _mm512_fmadd_ps(p, f, c(0.041_666_668));
    p = _mm512_fmadd_ps(p, f, c(0.166_666_67));
    p = _mm512_fmadd_ps(p, f, c(0.5));
    p = _mm512_fmadd_ps(p, f, c(1.0));
    p = _mm512_fmadd_ps(p, f, c(1.0));
    ops::scale(p, n)
}

/// The instructions of these kernels that Miri does not interpret (it runs this module's
/// tests to check every memory access, `scripts/test`): under Miri the same operation
/// lane by lane in scalar code, elsewhere the instruction.
mod ops {
    use core::arch::x86_64::__m512;
    #[cfg(not(miri))]
    use core::arch::x86_64::{
        _mm512_max_ps, _mm512_min_ps, _mm512_reduce_max_ps, _mm512_roundscale_ps, _mm512_scalef_ps,
    };

    /// Lane-wise maximum (`vmaxps`: the second operand where either is NaN).
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) fn max(a: __m512, b: __m512) -> __m512 {
        #[cfg(not(miri))]
        return _mm512_max_ps(a, b);
        #[cfg(miri)]
        lanes2(a, b, |x, y| if x > y { x } else { y })
    }

    /// Lane-wise minimum (`vminps`).
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) fn min(a: __m512, b: __m512) -> __m512 {
        #[cfg(not(miri))]
        return _mm512_min_ps(a, b);
        #[cfg(miri)]
        lanes2(a, b, |x, y| if x < y { x } else { y })
    }

    /// Each lane rounded to the nearest integer, ties to even.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) fn round(a: __m512) -> __m512 {
        // imm 8: round to nearest, precision exception suppressed.
        #[cfg(not(miri))]
        return _mm512_roundscale_ps::<8>(a);
        #[cfg(miri)]
        lanes2(a, a, |x, _| libm::rintf(x))
    }

    /// `a · 2^n` lane by lane (`n` integral).
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) fn scale(a: __m512, n: __m512) -> __m512 {
        #[cfg(not(miri))]
        return _mm512_scalef_ps(a, n);
        #[cfg(miri)]
        lanes2(a, n, |x, e| libm::ldexpf(x, e as i32))
    }

    /// The largest lane.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) fn reduce_max(a: __m512) -> f32 {
        #[cfg(not(miri))]
        return _mm512_reduce_max_ps(a);
        #[cfg(miri)]
        {
            let v = lanes(a);
            v.iter()
                .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
        }
    }

    #[cfg(miri)]
    fn lanes(a: __m512) -> [f32; 16] {
        // SAFETY: `__m512` and `[f32; 16]` have the same size, and every bit pattern is
        // valid for both.
        unsafe { core::mem::transmute(a) }
    }

    #[cfg(miri)]
    fn lanes2(a: __m512, b: __m512, f: impl Fn(f32, f32) -> f32) -> __m512 {
        let (a, b) = (lanes(a), lanes(b));
        let out: [f32; 16] = core::array::from_fn(|i| f(a[i], b[i]));
        // SAFETY: as in `lanes`.
        unsafe { core::mem::transmute(out) }
    }
}

/// `row = softmax(scale · row)` in place ([`crate::nn::attention::softmax`]'s kernel),
/// returning the row's largest value and the sum of the exponentials it divided by.
/// Returns `None`, touching nothing, unless AVX-512F is available.
pub(super) fn softmax(row: &mut [f32], scale: f32) -> Option<[f32; 2]> {
    if !avx512_available() {
        return None;
    }
    // SAFETY: AVX-512F is available (checked just above).
    Some(unsafe { softmax_avx512(row, scale) })
}

#[target_feature(enable = "avx512f")]
fn softmax_avx512(row: &mut [f32], scale: f32) -> [f32; 2] {
    let len = row.len();
    let ptr = row.as_mut_ptr();
    let mut top = _mm512_set1_ps(f32::NEG_INFINITY);
    for (i, mask) in vectors(len) {
        // SAFETY: lanes i .. i + 16 masked to < len: inside `row`.
        let v = unsafe { _mm512_mask_loadu_ps(top, mask, ptr.wrapping_add(i)) };
        top = ops::max(top, v);
    }
    let top = ops::reduce_max(top);
    let max = _mm512_set1_ps(top);
    let scale_v = _mm512_set1_ps(scale);
    let mut sum = _mm512_setzero_ps();
    for (i, mask) in vectors(len) {
        let p = ptr.wrapping_add(i);
        // SAFETY: as above; the store is masked the same way.
        unsafe {
            let v = _mm512_maskz_loadu_ps(mask, p);
            let e = exp16(_mm512_mul_ps(_mm512_sub_ps(v, max), scale_v));
            sum = _mm512_mask_add_ps(sum, mask, sum, e);
            _mm512_mask_storeu_ps(p, mask, e);
        }
    }
    let total = _mm512_reduce_add_ps(sum);
    let inv = _mm512_set1_ps(1.0 / total);
    for (i, mask) in vectors(len) {
        let p = ptr.wrapping_add(i);
        // SAFETY: as above.
        unsafe {
            _mm512_mask_storeu_ps(p, mask, _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, p), inv))
        };
    }
    [top, total]
}

/// Exact GELU, `0.5·x·(1 + erf(x/√2))`, in place ([`crate::nn::activation::gelu`]'s
/// kernel). Returns `false`, touching nothing, unless AVX-512F is available.
pub(super) fn gelu(x: &mut [f32]) -> bool {
    if !avx512_available() {
        return false;
    }
    // SAFETY: AVX-512F is available (checked just above).
    unsafe { map_avx512::<true>(x, None) };
    true
}

/// `x·σ(x)` in place, or `silu(x) · up` where `up` is given ([`crate::nn::activation`]'s
/// `silu` and `swiglu` kernel; `up` at least as long as `x`). Returns `false`, touching
/// nothing, unless AVX-512F is available and `up` is long enough.
pub(super) fn silu(x: &mut [f32], up: Option<&[f32]>) -> bool {
    if !avx512_available() || up.is_some_and(|u| u.len() < x.len()) {
        return false;
    }
    // SAFETY: AVX-512F is available, `up` holds `x.len()` values (both checked above).
    unsafe { map_avx512::<false>(x, up) };
    true
}

/// Layer norm (`bias` given) or RMS norm (`bias` absent) of one row in place:
/// `x <- (x - mean) / sqrt(var + eps) · w + b`, or `x <- x / sqrt(mean(x²) + eps) · w`
/// ([`crate::nn::norm`]'s kernel). Returns `false`, touching nothing, unless AVX-512F is
/// available and `w` (and `bias`) are as long as the row.
pub(super) fn norm(row: &mut [f32], w: &[f32], bias: Option<&[f32]>, eps: f32) -> bool {
    if !avx512_available() || w.len() < row.len() || bias.is_some_and(|b| b.len() < row.len()) {
        return false;
    }
    // SAFETY: AVX-512F is available, `w` and `bias` hold the row's length (checked above).
    unsafe { norm_avx512(row, w, bias, eps) };
    true
}

/// The body of [`norm`].
///
/// # Safety
/// AVX-512F must be available; `w` and `bias` (if given) must hold `row.len()` values.
#[target_feature(enable = "avx512f")]
unsafe fn norm_avx512(row: &mut [f32], w: &[f32], bias: Option<&[f32]>, eps: f32) {
    let len = row.len();
    let ptr = row.as_mut_ptr();
    // SAFETY (every access below): lanes i .. i + 16 masked to < len, inside `row`, `w`
    // and `bias` (the caller's contract).
    let load =
        |p: *const f32, i: usize, mask| unsafe { _mm512_maskz_loadu_ps(mask, p.wrapping_add(i)) };
    let mean = match bias {
        Some(_) => {
            let mut acc = _mm512_setzero_ps();
            for (i, mask) in vectors(len) {
                acc = _mm512_add_ps(acc, load(ptr, i, mask));
            }
            _mm512_reduce_add_ps(acc) / len as f32
        }
        None => 0.0,
    };
    let mean_v = _mm512_set1_ps(mean);
    let mut acc = _mm512_setzero_ps();
    for (i, mask) in vectors(len) {
        // Masked-off lanes are zero after the subtraction too.
        let d = _mm512_maskz_sub_ps(mask, load(ptr, i, mask), mean_v);
        acc = _mm512_fmadd_ps(d, d, acc);
    }
    let var = _mm512_set1_ps(_mm512_reduce_add_ps(acc) / len as f32 + eps);
    let inv = _mm512_div_ps(_mm512_set1_ps(1.0), _mm512_sqrt_ps(var));
    for (i, mask) in vectors(len) {
        let scaled = _mm512_mul_ps(_mm512_sub_ps(load(ptr, i, mask), mean_v), inv);
        let y = match bias {
            Some(b) => {
                _mm512_fmadd_ps(scaled, load(w.as_ptr(), i, mask), load(b.as_ptr(), i, mask))
            }
            None => _mm512_mul_ps(scaled, load(w.as_ptr(), i, mask)),
        };
        // SAFETY: as above.
        unsafe { _mm512_mask_storeu_ps(ptr.wrapping_add(i), mask, y) };
    }
}

/// `x[i] = f(x[i])`, times `up[i]` where `up` is given; `f` is GELU if `GELU`, else SiLU.
///
/// # Safety
/// AVX-512F must be available; `up`, if given, must hold `x.len()` values.
#[target_feature(enable = "avx512f")]
unsafe fn map_avx512<const GELU: bool>(x: &mut [f32], up: Option<&[f32]>) {
    let len = x.len();
    let ptr = x.as_mut_ptr();
    for (i, mask) in vectors(len) {
        let p = ptr.wrapping_add(i);
        // SAFETY: lanes i .. i + 16 masked to < len: inside `x`, and inside `up` (the
        // caller's contract); the store is masked the same way.
        unsafe {
            let v = _mm512_maskz_loadu_ps(mask, p);
            let mut y = if GELU { gelu16(v) } else { silu16(v) };
            if let Some(u) = up {
                y = _mm512_mul_ps(y, _mm512_maskz_loadu_ps(mask, u.as_ptr().wrapping_add(i)));
            }
            _mm512_mask_storeu_ps(p, mask, y);
        }
    }
}

/// GELU of sixteen lanes: `erf(z)`, `z = x/√2`, as `1 - t·q(t)·e^(-z²)` with
/// `t = 1 / (1 + 0.3275911·|z|)`, its sign restored, then `0.5·x + 0.5·x·erf`.
#[target_feature(enable = "avx512f")]
#[inline]
fn gelu16(x: __m512) -> __m512 {
    let c = |v: f32| _mm512_set1_ps(v);
    let z = _mm512_mul_ps(x, c(core::f32::consts::FRAC_1_SQRT_2));
    let a = _mm512_abs_ps(z);
    let t = _mm512_div_ps(c(1.0), _mm512_fmadd_ps(a, c(0.327_591_1), c(1.0)));
    let mut q = _mm512_fmadd_ps(t, c(1.061_405_4), c(-1.453_152_1));
    q = _mm512_fmadd_ps(q, t, c(1.421_413_7));
    q = _mm512_fmadd_ps(q, t, c(-0.284_496_74));
    q = _mm512_fmadd_ps(q, t, c(0.254_829_6));
    let e = exp16(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), a), a));
    let y = _mm512_fnmadd_ps(_mm512_mul_ps(q, t), e, c(1.0));
    // copysign(y, z): y's magnitude bits, z's sign bit.
    let sign = _mm512_set1_epi32(i32::MIN);
    let erf = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_andnot_si512(sign, _mm512_castps_si512(y)),
        _mm512_and_si512(sign, _mm512_castps_si512(z)),
    ));
    let half = _mm512_mul_ps(x, c(0.5));
    _mm512_fmadd_ps(half, erf, half)
}

/// SiLU of sixteen lanes, `x / (1 + e^-x)`.
#[target_feature(enable = "avx512f")]
#[inline]
fn silu16(x: __m512) -> __m512 {
    let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
    _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0), e))
}

/// The vectors of a `len`-long slice: start index and lane mask (all sixteen lanes but
/// in a last partial vector).
fn vectors(len: usize) -> impl Iterator<Item = (usize, __mmask16)> {
    (0..len).step_by(16).map(move |i| (i, lanes(len - i)))
}

/// The same steps on AVX2 + FMA (CPUs without AVX-512; session 15): eight lanes, the same
/// algorithms, constants and fused multiply-adds lane for lane (`2^n` built in the exponent
/// bits, exact like `vscalefps` for the clamped range), the last partial vector through a
/// small buffer. Layer and RMS norm stay portable there (1% of a forward).
pub(super) mod avx2 {
    use core::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_and_ps, _mm256_andnot_ps, _mm256_div_ps, _mm256_fmadd_ps,
        _mm256_fnmadd_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_or_ps, _mm256_set1_ps,
        _mm256_setzero_ps, _mm256_storeu_ps, _mm256_sub_ps,
    };

    use super::super::cpu::avx2_fma_available;

    /// `e^x` in eight lanes: `super::exp16`'s steps.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn exp8(x: __m256) -> __m256 {
        let c = |v: f32| _mm256_set1_ps(v);
        let x = ops::min(ops::max(x, c(-87.0)), c(88.0));
        let n = ops::round(_mm256_mul_ps(x, c(core::f32::consts::LOG2_E)));
        let f = _mm256_fnmadd_ps(n, c(0.693_145_75), x);
        let f = _mm256_fnmadd_ps(n, c(1.428_606_8e-6), f);
        let mut p = _mm256_fmadd_ps(f, c(0.001_388_889), c(0.008_333_334));
        p = _mm256_fmadd_ps(p, f, c(0.041_666_668));
        p = _mm256_fmadd_ps(p, f, c(0.166_666_67));
        p = _mm256_fmadd_ps(p, f, c(0.5));
        p = _mm256_fmadd_ps(p, f, c(1.0));
        p = _mm256_fmadd_ps(p, f, c(1.0));
        _mm256_mul_ps(p, ops::pow2(n))
    }

    /// GELU of eight lanes: `super::gelu16`'s steps.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn gelu8(x: __m256) -> __m256 {
        let c = |v: f32| _mm256_set1_ps(v);
        let sign = c(-0.0);
        let z = _mm256_mul_ps(x, c(core::f32::consts::FRAC_1_SQRT_2));
        let a = _mm256_andnot_ps(sign, z);
        let t = _mm256_div_ps(c(1.0), _mm256_fmadd_ps(a, c(0.327_591_1), c(1.0)));
        let mut q = _mm256_fmadd_ps(t, c(1.061_405_4), c(-1.453_152_1));
        q = _mm256_fmadd_ps(q, t, c(1.421_413_7));
        q = _mm256_fmadd_ps(q, t, c(-0.284_496_74));
        q = _mm256_fmadd_ps(q, t, c(0.254_829_6));
        let e = exp8(_mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), a), a));
        let y = _mm256_fnmadd_ps(_mm256_mul_ps(q, t), e, c(1.0));
        let erf = _mm256_or_ps(_mm256_andnot_ps(sign, y), _mm256_and_ps(sign, z));
        let half = _mm256_mul_ps(x, c(0.5));
        _mm256_fmadd_ps(half, erf, half)
    }

    /// SiLU of eight lanes, `x / (1 + e^-x)`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn silu8(x: __m256) -> __m256 {
        let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
        _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e))
    }

    /// Runs `f` on every eight values of `x` (the last partial vector copied through a
    /// zero-padded buffer), multiplied by `up`'s where given.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn map(x: &mut [f32], up: Option<&[f32]>, f: impl Fn(__m256) -> __m256) {
        let mut chunks = x.chunks_exact_mut(8);
        let mut i = 0;
        for c in &mut chunks {
            // SAFETY: `c` holds 8 values (and `up` from `i` on, checked by the callers).
            unsafe {
                let mut y = f(_mm256_loadu_ps(c.as_ptr()));
                if let Some(u) = up.and_then(|u| u.get(i..i + 8)) {
                    y = _mm256_mul_ps(y, _mm256_loadu_ps(u.as_ptr()));
                }
                _mm256_storeu_ps(c.as_mut_ptr(), y);
            }
            i += 8;
        }
        let tail = chunks.into_remainder();
        if tail.is_empty() {
            return;
        }
        let (mut buf, mut ubuf) = ([0.0f32; 8], [0.0f32; 8]);
        buf[..tail.len()].copy_from_slice(tail);
        let u = up.and_then(|u| u.get(i..i + tail.len()));
        if let Some(u) = u {
            ubuf[..u.len()].copy_from_slice(u);
        }
        // SAFETY: both buffers hold 8 values.
        unsafe {
            let mut y = f(_mm256_loadu_ps(buf.as_ptr()));
            if u.is_some() {
                y = _mm256_mul_ps(y, _mm256_loadu_ps(ubuf.as_ptr()));
            }
            _mm256_storeu_ps(buf.as_mut_ptr(), y);
        }
        let n = tail.len();
        tail.copy_from_slice(&buf[..n]);
    }

    /// Exact GELU in place; `false`, touching nothing, without AVX2 + FMA.
    pub(in super::super) fn gelu(x: &mut [f32]) -> bool {
        if !avx2_fma_available() {
            return false;
        }
        // SAFETY: AVX2 and FMA are available (checked just above).
        unsafe { map(x, None, |v| gelu8(v)) };
        true
    }

    /// SiLU in place, times `up` where given (SwiGLU); `false`, touching nothing, without
    /// AVX2 + FMA or for an `up` shorter than `x`.
    pub(in super::super) fn silu(x: &mut [f32], up: Option<&[f32]>) -> bool {
        if !avx2_fma_available() || up.is_some_and(|u| u.len() < x.len()) {
            return false;
        }
        // SAFETY: AVX2 and FMA are available (checked just above).
        unsafe { map(x, up, |v| silu8(v)) };
        true
    }

    /// `row = softmax(scale · row)` in place, returning the row's largest value and the
    /// sum of the exponentials; `None`, touching nothing, without AVX2 + FMA.
    pub(in super::super) fn softmax(row: &mut [f32], scale: f32) -> Option<[f32; 2]> {
        if !avx2_fma_available() {
            return None;
        }
        // SAFETY: AVX2 and FMA are available (checked just above).
        Some(unsafe { softmax_avx2(row, scale) })
    }

    #[target_feature(enable = "avx2,fma")]
    fn softmax_avx2(row: &mut [f32], scale: f32) -> [f32; 2] {
        if row.is_empty() {
            return [f32::NEG_INFINITY, 0.0];
        }
        let whole = row.len() / 8 * 8;
        let mut top = _mm256_set1_ps(f32::NEG_INFINITY);
        for c in row[..whole].chunks_exact(8) {
            // SAFETY: 8 values.
            top = ops::max(top, unsafe { _mm256_loadu_ps(c.as_ptr()) });
        }
        let max = row[whole..]
            .iter()
            .fold(ops::reduce_max(top), |m, &x| if x > m { x } else { m });
        let (max_v, scale_v) = (_mm256_set1_ps(max), _mm256_set1_ps(scale));
        // The partial vector through a buffer padded with the maximum (its lanes' values
        // are left out of the sum below).
        let mut buf = [max; 8];
        buf[..row.len() - whole].copy_from_slice(&row[whole..]);
        let mut sum = _mm256_setzero_ps();
        for c in row[..whole].chunks_exact_mut(8) {
            // SAFETY: 8 values.
            unsafe {
                let e = exp8(_mm256_mul_ps(
                    _mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), max_v),
                    scale_v,
                ));
                sum = _mm256_add_ps(sum, e);
                _mm256_storeu_ps(c.as_mut_ptr(), e);
            }
        }
        // SAFETY: 8 values.
        unsafe {
            let e = exp8(_mm256_mul_ps(
                _mm256_sub_ps(_mm256_loadu_ps(buf.as_ptr()), max_v),
                scale_v,
            ));
            _mm256_storeu_ps(buf.as_mut_ptr(), e);
        }
        let tail = &mut row[whole..];
        let n = tail.len();
        tail.copy_from_slice(&buf[..n]);
        let total = ops::lanes(sum).iter().sum::<f32>() + tail.iter().sum::<f32>();
        let inv = 1.0 / total;
        let inv_v = _mm256_set1_ps(inv);
        for c in row[..whole].chunks_exact_mut(8) {
            // SAFETY: 8 values.
            unsafe {
                _mm256_storeu_ps(
                    c.as_mut_ptr(),
                    _mm256_mul_ps(_mm256_loadu_ps(c.as_ptr()), inv_v),
                )
            };
        }
        row[whole..].iter_mut().for_each(|v| *v *= inv);
        [max, total]
    }

    /// `super::ops` for eight lanes: what Miri cannot interpret, in scalar code under Miri.
    mod ops {
        use core::arch::x86_64::__m256;
        #[cfg(not(miri))]
        use core::arch::x86_64::{
            _mm256_add_epi32, _mm256_castsi256_ps, _mm256_cvtps_epi32, _mm256_max_ps,
            _mm256_min_ps, _mm256_round_ps, _mm256_set1_epi32, _mm256_slli_epi32,
        };

        /// Lane-wise maximum (`vmaxps`: the second operand where either is NaN).
        #[target_feature(enable = "avx2")]
        #[inline]
        pub(super) fn max(a: __m256, b: __m256) -> __m256 {
            #[cfg(not(miri))]
            return _mm256_max_ps(a, b);
            #[cfg(miri)]
            lanes2(a, b, |x, y| if x > y { x } else { y })
        }

        /// Lane-wise minimum (`vminps`).
        #[target_feature(enable = "avx2")]
        #[inline]
        pub(super) fn min(a: __m256, b: __m256) -> __m256 {
            #[cfg(not(miri))]
            return _mm256_min_ps(a, b);
            #[cfg(miri)]
            lanes2(a, b, |x, y| if x < y { x } else { y })
        }

        /// Each lane rounded to the nearest integer, ties to even.
        #[target_feature(enable = "avx2")]
        #[inline]
        pub(super) fn round(a: __m256) -> __m256 {
            // imm 8: round to nearest, precision exception suppressed.
            #[cfg(not(miri))]
            return _mm256_round_ps::<8>(a);
            #[cfg(miri)]
            lanes2(a, a, |x, _| libm::rintf(x))
        }

        /// `2^n` lane by lane for integral `n` in `[-126, 127]` (the exponent bits).
        #[target_feature(enable = "avx2")]
        #[inline]
        pub(super) fn pow2(n: __m256) -> __m256 {
            #[cfg(not(miri))]
            return _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
                _mm256_cvtps_epi32(n),
                _mm256_set1_epi32(127),
            )));
            #[cfg(miri)]
            lanes2(n, n, |e, _| libm::ldexpf(1.0, e as i32))
        }

        /// The largest lane.
        #[target_feature(enable = "avx2")]
        #[inline]
        pub(super) fn reduce_max(a: __m256) -> f32 {
            lanes(a)
                .iter()
                .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
        }

        /// The eight lanes.
        #[target_feature(enable = "avx2")]
        #[inline]
        pub(super) fn lanes(a: __m256) -> [f32; 8] {
            let mut v = [0.0f32; 8];
            // SAFETY: `v` holds 8 values.
            unsafe { core::arch::x86_64::_mm256_storeu_ps(v.as_mut_ptr(), a) };
            v
        }

        #[cfg(miri)]
        #[target_feature(enable = "avx2")]
        fn lanes2(a: __m256, b: __m256, f: impl Fn(f32, f32) -> f32) -> __m256 {
            let (a, b) = (lanes(a), lanes(b));
            let out: [f32; 8] = core::array::from_fn(|i| f(a[i], b[i]));
            // SAFETY: `out` holds 8 values.
            unsafe { core::arch::x86_64::_mm256_loadu_ps(out.as_ptr()) }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failure is a panic with its location
mod tests {
    extern crate std;
    use std::vec::Vec;

    use crate::nn::activation::{fast_erf, fast_exp};

    fn values(n: usize, seed: u64, spread: f32) -> Vec<f32> {
        let mut v = crate::nn::attention::tests::values(n, seed);
        v.iter_mut().for_each(|x| *x *= spread);
        v
    }

    /// Relative difference, with absolute differences below `floor` counted as equal.
    fn close(a: f32, b: f32, rel: f32, floor: f32) -> bool {
        (a - b).abs() <= floor.max(rel * b.abs())
    }

    /// A family's GELU, SiLU / SwiGLU and softmax.
    type Kernels = (
        fn(&mut [f32]) -> bool,
        fn(&mut [f32], Option<&[f32]>) -> bool,
        fn(&mut [f32], f32) -> Option<[f32; 2]>,
    );

    /// The AVX2 kernels (CPUs without AVX-512) against the portable functions on every
    /// length, as the AVX-512 ones below.
    #[test]
    fn avx2_kernels_match_the_portable_functions_on_every_length() {
        if !super::super::cpu::avx2_fma_available() {
            return;
        }
        let avx2: Kernels = (super::avx2::gelu, super::avx2::silu, super::avx2::softmax);
        for len in [1usize, 5, 7, 8, 9, 15, 16, 17, 100, 128, 130] {
            for spread in [4.0, 300.0] {
                activations_match(avx2, len, spread);
            }
        }
        // The exponential's clamp, as the portable one.
        let mut x = [-1000.0f32, -87.0, -20.0, 0.0, 1.0, 88.0, 500.0, 3.0, -2.0];
        let want: Vec<f32> = x.iter().map(|&v| v / (1.0 + fast_exp(-v))).collect();
        assert!(super::avx2::silu(&mut x, None));
        for (&y, &w) in x.iter().zip(&want) {
            assert!(y.is_finite() && close(y, w, 4e-6, 1e-30), "{y} vs {w}");
        }
        assert_eq!(
            super::avx2::softmax(&mut [], 1.0),
            Some([f32::NEG_INFINITY, 0.0])
        );
        assert!(!super::avx2::silu(&mut [1.0, 2.0], Some(&[1.0])));
    }

    /// `gelu`, `silu` (with and without `up`) and `softmax` of a family on `len` values
    /// spread over `±spread`, against the portable functions.
    fn activations_match((gelu, silu, softmax): Kernels, len: usize, spread: f32) {
        let x = values(len, len as u64, spread);
        let mut g = x.clone();
        assert!(gelu(&mut g));
        for (&v, &y) in x.iter().zip(&g) {
            let want = 0.5 * v * (1.0 + fast_erf(v * core::f32::consts::FRAC_1_SQRT_2));
            assert!(
                close(y, want, 4e-6, 1e-7),
                "gelu({v}) = {y}, portable {want}"
            );
        }
        let up = values(len, 7 + len as u64, 3.0);
        let (mut s, mut w) = (x.clone(), x.clone());
        assert!(silu(&mut s, None));
        assert!(silu(&mut w, Some(&up)));
        for ((&v, &u), (&y, &yu)) in x.iter().zip(&up).zip(s.iter().zip(&w)) {
            let want = v / (1.0 + fast_exp(-v));
            assert!(
                close(y, want, 4e-6, 1e-30),
                "silu({v}) = {y}, portable {want}"
            );
            assert!(close(yu, want * u, 4e-6, 1e-30), "swiglu({v}, {u})");
        }
        let mut p = x.clone();
        let [top, sum] = softmax(&mut p, 0.7).unwrap();
        let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let e: Vec<f32> = x.iter().map(|&v| fast_exp((v - max) * 0.7)).collect();
        let total: f32 = e.iter().sum();
        assert_eq!(top, max);
        assert!(
            close(sum, total, 4e-6, 1e-30),
            "softmax's sum {sum} vs {total}"
        );
        for (&y, &ei) in p.iter().zip(&e) {
            assert!(
                close(y, ei / total, 4e-6, 1e-30),
                "softmax {y} vs {}",
                ei / total
            );
        }
        assert!((p.iter().map(|&v| f64::from(v)).sum::<f64>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn kernels_match_the_portable_functions_on_every_length() {
        if !super::avx512_available() {
            return;
        }
        let shapes = [1usize, 5, 15, 16, 17, 31, 32, 33, 100, 128, 130]
            .into_iter()
            .flat_map(|len| [(len, 4.0), (len, 300.0)]);
        for (len, spread) in shapes {
            let x = values(len, len as u64, spread);
            activations_match((super::gelu, super::silu, super::softmax), len, spread);
            // Layer and RMS norm against their definitions in float64.
            let (w, b) = (values(len, 3, 2.0), values(len, 5, 1.0));
            let n = len as f64;
            let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = x
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n;
            let ms = x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / n;
            let (mut ln, mut rms) = (x.clone(), x.clone());
            assert!(super::norm(&mut ln, &w, Some(&b), 1e-5));
            assert!(super::norm(&mut rms, &w, None, 1e-5));
            for i in 0..len {
                let (xi, wi) = (f64::from(x[i]), f64::from(w[i]));
                let want_ln = (xi - mean) / (var + 1e-5).sqrt() * wi + f64::from(b[i]);
                let want_rms = xi / (ms + 1e-5).sqrt() * wi;
                assert!((f64::from(ln[i]) - want_ln).abs() < 1e-5, "layer norm {i}");
                assert!((f64::from(rms[i]) - want_rms).abs() < 1e-5, "rms norm {i}");
            }
        }
        // Short weights or biases: refused, the row untouched.
        let mut row = [1.0f32, 2.0, 3.0];
        assert!(!super::norm(&mut row, &[1.0; 2], None, 1e-5));
        assert!(!super::norm(&mut row, &[1.0; 3], Some(&[0.0; 2]), 1e-5));
        assert_eq!(row, [1.0, 2.0, 3.0]);
    }

    #[test]
    fn exp_clamps_as_the_portable_one() {
        if !super::avx512_available() {
            return;
        }
        let mut x = [-1000.0f32, -87.0, -20.0, 0.0, 1.0, 88.0, 500.0];
        let want: Vec<f32> = x.iter().map(|&v| v / (1.0 + fast_exp(-v))).collect();
        assert!(super::silu(&mut x, None));
        for (&y, &w) in x.iter().zip(&want) {
            assert!(y.is_finite() && close(y, w, 4e-6, 1e-30), "{y} vs {w}");
        }
        // An empty slice touches nothing and is no error.
        assert_eq!(super::softmax(&mut [], 1.0), Some([f32::NEG_INFINITY, 0.0]));
        assert!(!super::silu(&mut [1.0, 2.0], Some(&[1.0])));
    }
}
