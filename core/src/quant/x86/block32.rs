//! The hand-written kernel for weights in blocks of 32 (Q8_0, Q4_0, Q4_1, Q5_0) against
//! Q8_1 activations: a decoder's token-by-token products, memory-bound, so the kernel
//! spends as few instructions per block as it can.
//!
//! Per block and weight row: the scale (and Q4_1's minimum) widened by one F16C
//! instruction and multiplied by the activation's `(d, s)` pair in one `mulps`; the
//! quants unpacked into 32 bytes; one `vpdpbusd` (AVX-512 VNNI, 256-bit form) or
//! `vpmaddubsw` + `vpmaddwd` (AVX2) for the 32 products summed into eight `i32` lanes;
//! one convert and one fused multiply-add into eight `f32` lanes. Four weight rows go
//! together, sharing each activation block's loads, with four independent chains of
//! additions. Every length is checked once before the loops, which then read through
//! pointers: no check per block.
//!
//! Each output's arithmetic (the order of its additions) is the same whatever the row
//! grouping, so rows split across threads give bit-identical results.

use core::arch::x86_64::{
    __m128, __m256, __m256i, _mm256_and_si256, _mm256_broadcastss_ps, _mm256_castps256_ps128,
    _mm256_cmpeq_epi8, _mm256_cvtepi32_ps, _mm256_dpbusd_epi32, _mm256_extractf128_ps,
    _mm256_fmadd_ps, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_or_si256,
    _mm256_set1_epi16, _mm256_set1_epi32, _mm256_set1_epi64x, _mm256_set1_epi8, _mm256_set_epi64x,
    _mm256_set_m128i, _mm256_setzero_ps, _mm256_setzero_si256, _mm256_shuffle_epi8,
    _mm256_sign_epi8, _mm256_sub_epi8, _mm_add_ps, _mm_add_ss, _mm_castsi128_ps, _mm_cvtph_ps,
    _mm_cvtsi32_si128, _mm_cvtss_f32, _mm_loadl_epi64, _mm_loadu_si128, _mm_movehl_ps, _mm_mul_ps,
    _mm_setzero_ps, _mm_shuffle_ps, _mm_srli_epi16,
};

use super::super::act::Q8_1_BYTES;
use super::super::matmul::Problem;

/// Which block type the kernel reads (a const parameter, so each type gets its own
/// loop).
pub(super) const Q8_0: u8 = 0;
pub(super) const Q4_0: u8 = 1;
pub(super) const Q4_1: u8 = 2;
pub(super) const Q5_0: u8 = 3;

/// Weight rows per pass.
const ROWS: usize = 4;

/// Runs `p` (Q8_0, Q4_0, Q4_1 or Q5_0 weights, Q8_1 activations) on this kernel:
/// `false` (nothing written) for any other type, inconsistent lengths, or a CPU without
/// AVX2, FMA and F16C; the caller then runs the other builds. `vnni` allows the AVX-512
/// VNNI form where the CPU has it (tests turn it off to test the AVX2 form).
pub(in crate::quant) fn run_block32(p: &Problem<'_>, y: &mut [f32], vnni: bool) -> bool {
    use super::super::TensorType as T;
    let kind = match p.ty {
        #[cfg(feature = "q8_0")]
        T::Q8_0 => Q8_0,
        #[cfg(feature = "q4")]
        T::Q4_0 => Q4_0,
        #[cfg(feature = "q4")]
        T::Q4_1 => Q4_1,
        #[cfg(feature = "q4")]
        T::Q5_0 => Q5_0,
        _ => return false,
    };
    if !(crate::math::gemm::cpu::avx2_fma_available() && super::f16c_available()) {
        return false;
    }
    let rb = p.row_bytes;
    let blocks = p.cols / 32;
    let n = p.a.n;
    let rows = p.data.len().checked_div(rb).unwrap_or(0);
    let fits = rb == blocks * p.ty.block_bytes()
        && rb > 0
        && p.data.len() == rows * rb
        && p.a.bytes.len() >= n * blocks * Q8_1_BYTES
        && p.y_stride >= rows
        && y.len() >= (n.max(1) - 1) * p.y_stride + rows;
    if !fits {
        return false;
    }
    let wide = vnni && crate::math::gemm::cpu::avx512_int8_available();
    for t in 0..n {
        let act = &p.a.bytes[t * blocks * Q8_1_BYTES..(t + 1) * blocks * Q8_1_BYTES];
        let out = &mut y[t * p.y_stride..t * p.y_stride + rows];
        let job = Job {
            w: p.data,
            rb,
            blocks,
            act,
        };
        // SAFETY: the CPU and OS support AVX2, FMA and F16C (checked above), and
        // AVX-512 F/BW/VL/VNNI where `wide` (checked); `job` holds `out.len()` rows of
        // `blocks` blocks and one activation row of `blocks` blocks (checked above), the
        // only memory the kernels read.
        unsafe {
            match (kind, wide) {
                (Q8_0, true) => vnni_rows::<Q8_0, 34>(&job, out),
                (Q4_0, true) => vnni_rows::<Q4_0, 18>(&job, out),
                (Q5_0, true) => vnni_rows::<Q5_0, 22>(&job, out),
                (_, true) => vnni_rows::<Q4_1, 20>(&job, out),
                (Q8_0, false) => avx2_rows::<Q8_0, 34>(&job, out),
                (Q4_0, false) => avx2_rows::<Q4_0, 18>(&job, out),
                (Q5_0, false) => avx2_rows::<Q5_0, 22>(&job, out),
                (_, false) => avx2_rows::<Q4_1, 20>(&job, out),
            }
        }
    }
    true
}

/// One activation row against weight rows, lengths checked: `w` holds at least
/// `out.len()` rows of `rb = blocks · B` bytes, `act` `blocks` Q8_1 blocks.
struct Job<'a> {
    w: &'a [u8],
    rb: usize,
    blocks: usize,
    act: &'a [u8],
}

/// [`rows`] with `vpmaddubsw` + `vpmaddwd` (AVX2).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_rows<const K: u8, const B: usize>(job: &Job<'_>, out: &mut [f32]) {
    // SAFETY: the caller checked AVX2, FMA and F16C, and the lengths in `job`.
    unsafe { rows::<K, B, false>(job, out) }
}

/// [`rows`] with `vpdpbusd` (AVX-512 VNNI, 256-bit form): one instruction for the
/// unsigned-by-signed byte products and their sums per `i32` lane.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn vnni_rows<const K: u8, const B: usize>(job: &Job<'_>, out: &mut [f32]) {
    // SAFETY: the caller checked the features and the lengths in `job`.
    unsafe { rows::<K, B, true>(job, out) }
}

/// Every output of `out`, [`ROWS`] weight rows at a time, then one at a time.
///
/// # Safety
/// AVX2, FMA and F16C (and AVX-512 F/BW/VL/VNNI when `VNNI`) enabled and present; the
/// lengths of `job` as [`Job`] says, `B` the bytes of a `K` block.
#[inline(always)]
unsafe fn rows<const K: u8, const B: usize, const VNNI: bool>(job: &Job<'_>, out: &mut [f32]) {
    let mut r = 0;
    while r + ROWS <= out.len() {
        let mut sums = [0f32; ROWS];
        // SAFETY: rows r .. r + ROWS exist (the loop bound, and the caller's lengths).
        unsafe { dot_rows::<K, B, VNNI, ROWS>(job, r, &mut sums) };
        out[r..r + ROWS].copy_from_slice(&sums);
        r += ROWS;
    }
    while r < out.len() {
        let mut sum = [0f32; 1];
        // SAFETY: row r exists (the loop bound).
        unsafe { dot_rows::<K, B, VNNI, 1>(job, r, &mut sum) };
        out[r] = sum[0];
        r += 1;
    }
}

/// The dot products of weight rows `r .. r + R` with the activation row.
///
/// # Safety
/// As [`rows`], and rows `r .. r + R` inside `job.w`.
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn dot_rows<const K: u8, const B: usize, const VNNI: bool, const R: usize>(
    job: &Job<'_>,
    r: usize,
    sums: &mut [f32; R],
) {
    // SAFETY (every pointer read below): the weight rows r .. r + R hold `blocks`
    // blocks of B bytes each and the activation row `blocks` blocks of Q8_1_BYTES (the
    // caller's checks), and each read stays inside its block: Q8_0 reads bytes 2..34
    // of 34, Q4_0 2..18 of 18, Q5_0 2..22 of 22, Q4_1 0..20 of 20; the activation block
    // 0..40 of 40. The intrinsics' features are enabled by the caller.
    unsafe {
        let w0 = job.w.as_ptr().add(r * job.rb);
        let a0 = job.act.as_ptr();
        let mut acc = [_mm256_setzero_ps(); R];
        let mut mins = [_mm_setzero_ps(); R];
        for b in 0..job.blocks {
            let ab = a0.add(b * Q8_1_BYTES);
            // (d, s) of the activation block: its scale and d · Σ q.
            let ds = _mm_castsi128_ps(_mm_loadl_epi64(ab.cast()));
            let av = _mm256_loadu_si256(ab.add(8).cast());
            for (i, (acc, mins)) in acc.iter_mut().zip(mins.iter_mut()).enumerate() {
                let wb = w0.add(i * job.rb + b * B);
                // (d_w, m_w) widened together (Q4_1 stores them side by side); the
                // other types read `d_w` alone.
                let half = if K == Q4_1 {
                    wb.cast::<i32>().read_unaligned()
                } else {
                    i32::from(wb.cast::<u16>().read_unaligned())
                };
                let dm = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(half)), ds);
                let sum = match K {
                    Q4_1 => {
                        *mins = _mm_add_ps(*mins, dm);
                        products::<VNNI>(nibbles(wb.add(4)), av)
                    }
                    _ => {
                        let w = match K {
                            Q8_0 => _mm256_loadu_si256(wb.add(2).cast()),
                            Q4_0 => _mm256_sub_epi8(nibbles(wb.add(2)), _mm256_set1_epi8(8)),
                            _ => {
                                let qh = wb.add(2).cast::<u32>().read_unaligned();
                                let sixteen = _mm256_set1_epi8(16);
                                let high = _mm256_and_si256(bits_to_bytes(qh), sixteen);
                                let q = _mm256_or_si256(nibbles(wb.add(6)), high);
                                _mm256_sub_epi8(q, sixteen)
                            }
                        };
                        // Signed weights: |w| times sign(a, w) keeps the
                        // unsigned-by-signed form of the byte products.
                        products::<VNNI>(_mm256_sign_epi8(w, w), _mm256_sign_epi8(av, w))
                    }
                };
                *acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(dm), _mm256_cvtepi32_ps(sum), *acc);
            }
        }
        for ((s, acc), mins) in sums.iter_mut().zip(&acc).zip(&mins) {
            *s = hsum(*acc);
            if K == Q4_1 {
                // Lane 1: Σ m_w · s_a.
                *s += _mm_cvtss_f32(_mm_shuffle_ps::<1>(*mins, *mins));
            }
        }
    }
}

/// The 32 products of unsigned bytes `u` and signed bytes `s`, summed in fours into
/// eight `i32` lanes.
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn products<const VNNI: bool>(u: __m256i, s: __m256i) -> __m256i {
    // SAFETY: AVX2 (and VNNI when `VNNI`) enabled by the caller.
    unsafe {
        if VNNI {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
        } else {
            _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
        }
    }
}

/// The 16 bytes at `p` as 32 values 0..=15: low nibbles first, then high nibbles, as
/// Q4_0 and Q4_1 store them.
///
/// # Safety
/// 16 readable bytes at `p`; AVX2 enabled.
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: the caller's contract.
    unsafe {
        let v = _mm_loadu_si128(p.cast());
        let both = _mm256_set_m128i(_mm_srli_epi16::<4>(v), v);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
    }
}

/// Byte `j` = `0xff` where bit `j` of `bits` is set, else 0 (Q5_0's fifth bits).
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn bits_to_bytes(bits: u32) -> __m256i {
    // SAFETY: AVX2 enabled by the caller.
    unsafe {
        // Byte j takes byte j / 8 of `bits`; OR-ing every bit but bit j % 8 makes it all
        // ones exactly when that bit is set.
        let v = _mm256_set1_epi32(bits as i32);
        let spread = _mm256_shuffle_epi8(
            v,
            _mm256_set_epi64x(
                0x0303_0303_0303_0303,
                0x0202_0202_0202_0202,
                0x0101_0101_0101_0101,
                0,
            ),
        );
        let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
        _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi64x(-1))
    }
}

/// The sum of the eight lanes.
#[inline(always)]
#[allow(unused_unsafe)]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: AVX enabled by the caller.
    unsafe {
        let s: __m128 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }
}
