//! Q8_1 activations quantized with AVX-512: the same arithmetic as the portable
//! `act::quantize_q8_1` (the largest magnitude, `d = amax / 127`, each value times `1 /
//! d` plus or minus one half, truncated toward zero; `s = d · Σ q`), sixteen lanes at a
//! time, so both give the same bytes.

use core::arch::x86_64::{
    __m512, __m512i, _mm512_abs_ps, _mm512_add_epi32, _mm512_add_ps, _mm512_and_si512,
    _mm512_castps_si512, _mm512_castsi512_ps, _mm512_cvtsepi32_epi8, _mm512_cvttps_epi32,
    _mm512_loadu_ps, _mm512_max_ps, _mm512_mul_ps, _mm512_or_si512, _mm512_reduce_add_epi32,
    _mm512_reduce_max_ps, _mm512_set1_epi32, _mm512_set1_ps, _mm_storeu_si128,
};

use super::super::act::Q8_1_BYTES;

/// Quantizes `x` (a multiple of 32 values) into Q8_1 blocks in `out` (at least
/// `x.len() / 32` blocks); `false` (nothing written) without AVX-512 F/BW/VL or with
/// other lengths.
pub(in crate::quant) fn quantize_q8_1(x: &[f32], out: &mut [u8]) -> bool {
    // Miri implements too few AVX-512 instructions for this one (`vmaxps` on zmm); its
    // only memory accesses are two loads from a 32-value chunk and two 16-byte stores
    // into a 40-byte one, both sized by `chunks_exact`.
    if cfg!(miri)
        || !crate::math::gemm::cpu::avx512_int8_available()
        || !x.len().is_multiple_of(32)
        || out.len() < x.len() / 32 * Q8_1_BYTES
    {
        return false;
    }
    // SAFETY: the CPU and OS support AVX-512 F/BW/VL (checked); every access goes
    // through the checked slices below.
    unsafe { blocks(x, out) };
    true
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn blocks(x: &[f32], out: &mut [u8]) {
    for (x, b) in x.chunks_exact(32).zip(out.chunks_exact_mut(Q8_1_BYTES)) {
        // SAFETY: `x` is 32 values (two 16-lane loads); `b` is 40 bytes, the quants
        // written at 8..24 and 24..40 (16 bytes each).
        unsafe {
            let v0 = _mm512_loadu_ps(x.as_ptr());
            let v1 = _mm512_loadu_ps(x.as_ptr().add(16));
            let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let scale = _mm512_set1_ps(id);
            let (q0, q1) = (round(v0, scale), round(v1, scale));
            let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
            _mm_storeu_si128(b.as_mut_ptr().add(8).cast(), _mm512_cvtsepi32_epi8(q0));
            _mm_storeu_si128(b.as_mut_ptr().add(24).cast(), _mm512_cvtsepi32_epi8(q1));
            b[..4].copy_from_slice(&d.to_le_bytes());
            b[4..8].copy_from_slice(&(d * sum as f32).to_le_bytes());
        }
    }
}

/// `v · scale` plus or minus one half (the product's sign), truncated toward zero.
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn round(v: __m512, scale: __m512) -> __m512i {
    // SAFETY: AVX-512F enabled by the caller.
    unsafe {
        let r = _mm512_mul_ps(v, scale);
        let sign = _mm512_and_si512(_mm512_castps_si512(r), _mm512_set1_epi32(i32::MIN));
        let h = _mm512_or_si512(_mm512_castps_si512(_mm512_set1_ps(0.5)), sign);
        _mm512_cvttps_epi32(_mm512_add_ps(r, _mm512_castsi512_ps(h)))
    }
}
