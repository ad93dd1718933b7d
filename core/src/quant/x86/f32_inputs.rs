//! The hand-written kernel for Q8_0 weights against `f32` inputs: a decoder's output
//! head, whose logits keep the float model's ranking (8-bit activations there turn
//! near ties), read in place as every other product is.
//!
//! Per block and weight row: the 32 quants sign-extended and converted to `f32` (two
//! 16-lane vectors with AVX-512, four 8-lane ones with AVX2), multiplied by the block's
//! 32 inputs, and the block's sum scaled by its `d` in one fused multiply-add. Four
//! weight rows share each block of inputs. Each output's additions run in the same order
//! whatever the row grouping (bit-identical when rows are split across threads).

use core::arch::x86_64::{
    __m256, __m512, _mm256_cvtepi32_ps, _mm256_cvtepi8_epi32, _mm256_fmadd_ps, _mm256_loadu_ps,
    _mm256_mul_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm512_cvtepi32_ps, _mm512_cvtepi8_epi32,
    _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mul_ps, _mm512_reduce_add_ps, _mm512_set1_ps,
    _mm512_setzero_ps, _mm_cvtph_ps, _mm_cvtsi32_si128, _mm_cvtss_f32, _mm_loadl_epi64,
    _mm_loadu_si128,
};

use super::super::matmul::Problem;
use super::super::TensorType;

/// Bytes of a Q8_0 block.
const B: usize = 34;
/// Weight rows per pass.
const ROWS: usize = 4;

/// Runs `p` (Q8_0 weights, `f32` inputs) on this kernel; `false` (nothing written) for
/// another type, inconsistent lengths, or a CPU without AVX2, FMA and F16C. `wide`
/// allows the 16-lane form where the CPU has AVX-512 (tests turn it off to test the
/// AVX2 form).
pub(in crate::quant) fn run_q8_0(p: &Problem<'_>, y: &mut [f32], wide: bool) -> bool {
    if p.ty != TensorType::Q8_0
        || !(crate::math::gemm::cpu::avx2_fma_available() && super::f16c_available())
    {
        return false;
    }
    let blocks = p.cols / 32;
    let n = p.a.n;
    let rb = p.row_bytes;
    let rows = p.data.len().checked_div(rb).unwrap_or(0);
    let fits = rb == blocks * B
        && rb > 0
        && p.cols == blocks * 32
        && p.data.len() == rows * rb
        && p.a.f32s.len() >= n * p.cols
        && p.y_stride >= rows
        && y.len() >= (n.max(1) - 1) * p.y_stride + rows;
    if !fits {
        return false;
    }
    let wide = wide && crate::math::gemm::cpu::avx512_int8_available();
    for t in 0..n {
        let x = &p.a.f32s[t * p.cols..(t + 1) * p.cols];
        let out = &mut y[t * p.y_stride..t * p.y_stride + rows];
        // SAFETY: AVX2, FMA and F16C present (checked), AVX-512F where `wide`
        // (checked); `p.data` holds `out.len()` rows of `blocks` blocks and `x` holds
        // `blocks · 32` values (checked above), all the kernels read.
        unsafe {
            if wide {
                avx512_rows(p.data, rb, x, out);
            } else {
                avx2_rows(p.data, rb, x, out);
            }
        }
    }
    true
}

/// Every output of `out` with 16-lane vectors (taken where the quantized kernels' AVX-512
/// build is, which implies AVX-512F).
///
/// # Safety
/// AVX-512F, AVX2, FMA and F16C present; `w` holds `out.len()` rows of `rb = x.len() /
/// 32 · 34` bytes.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn avx512_rows(w: &[u8], rb: usize, x: &[f32], out: &mut [f32]) {
    let mut r = 0;
    while r + ROWS <= out.len() {
        // SAFETY: rows r .. r + ROWS exist (the loop bound and the caller's contract).
        let s = unsafe { avx512_dot::<ROWS>(w, rb, r, x) };
        out[r..r + ROWS].copy_from_slice(&s);
        r += ROWS;
    }
    while r < out.len() {
        // SAFETY: row r exists.
        out[r] = unsafe { avx512_dot::<1>(w, rb, r, x) }[0];
        r += 1;
    }
}

/// Rows `r .. r + R` dotted with `x`, 16 lanes.
///
/// # Safety
/// As [`avx512_rows`], rows `r .. r + R` inside `w`.
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn avx512_dot<const R: usize>(w: &[u8], rb: usize, r: usize, x: &[f32]) -> [f32; R] {
    // SAFETY (every pointer read): block b of row r + i is bytes b·34 .. b·34 + 34 of
    // that row, inside `w` (caller); the inputs b·32 .. b·32 + 32 inside `x`
    // (`b < x.len() / 32`). The features are enabled by the caller.
    unsafe {
        let w0 = w.as_ptr().add(r * rb);
        let mut acc = [_mm512_setzero_ps(); R];
        for b in 0..x.len() / 32 {
            let xp = x.as_ptr().add(b * 32);
            let (x0, x1) = (_mm512_loadu_ps(xp), _mm512_loadu_ps(xp.add(16)));
            for (i, acc) in acc.iter_mut().enumerate() {
                let wb = w0.add(i * rb + b * B);
                let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
                    wb.cast::<u16>().read_unaligned(),
                ))));
                let q0 =
                    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(wb.add(2).cast())));
                let q1 =
                    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(wb.add(18).cast())));
                let s: __m512 = _mm512_fmadd_ps(q1, x1, _mm512_mul_ps(q0, x0));
                *acc = _mm512_fmadd_ps(_mm512_set1_ps(d), s, *acc);
            }
        }
        let mut out = [0f32; R];
        for (o, acc) in out.iter_mut().zip(&acc) {
            *o = _mm512_reduce_add_ps(*acc);
        }
        out
    }
}

/// Every output of `out` with 8-lane vectors.
///
/// # Safety
/// AVX2, FMA and F16C present; lengths as [`avx512_rows`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_rows(w: &[u8], rb: usize, x: &[f32], out: &mut [f32]) {
    let mut r = 0;
    while r + ROWS <= out.len() {
        // SAFETY: rows r .. r + ROWS exist.
        let s = unsafe { avx2_dot::<ROWS>(w, rb, r, x) };
        out[r..r + ROWS].copy_from_slice(&s);
        r += ROWS;
    }
    while r < out.len() {
        // SAFETY: row r exists.
        out[r] = unsafe { avx2_dot::<1>(w, rb, r, x) }[0];
        r += 1;
    }
}

/// Rows `r .. r + R` dotted with `x`, 8 lanes.
///
/// # Safety
/// As [`avx2_rows`], rows `r .. r + R` inside `w`.
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn avx2_dot<const R: usize>(w: &[u8], rb: usize, r: usize, x: &[f32]) -> [f32; R] {
    // SAFETY: as in `avx512_dot`; each 8-byte load reads quants 8j .. 8j + 8 of the
    // block (bytes 2 + 8j .. 10 + 8j of 34).
    unsafe {
        let w0 = w.as_ptr().add(r * rb);
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..x.len() / 32 {
            let xp = x.as_ptr().add(b * 32);
            let xs: [__m256; 4] = [
                _mm256_loadu_ps(xp),
                _mm256_loadu_ps(xp.add(8)),
                _mm256_loadu_ps(xp.add(16)),
                _mm256_loadu_ps(xp.add(24)),
            ];
            for (i, acc) in acc.iter_mut().enumerate() {
                let wb = w0.add(i * rb + b * B);
                let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
                    wb.cast::<u16>().read_unaligned(),
                ))));
                // Quants 8j .. 8j + 8 as f32.
                macro_rules! q {
                    ($j:expr) => {
                        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                            wb.add(2 + 8 * $j).cast(),
                        )))
                    };
                }
                let mut s = _mm256_mul_ps(q!(0), xs[0]);
                s = _mm256_fmadd_ps(q!(1), xs[1], s);
                s = _mm256_fmadd_ps(q!(2), xs[2], s);
                s = _mm256_fmadd_ps(q!(3), xs[3], s);
                *acc = _mm256_fmadd_ps(_mm256_set1_ps(d), s, *acc);
            }
        }
        let mut out = [0f32; R];
        for (o, acc) in out.iter_mut().zip(&acc) {
            *o = super::block32::hsum(*acc);
        }
        out
    }
}
