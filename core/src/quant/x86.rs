//! The x86-64 quantized kernels: a hand-written AVX2 kernel for Q8_0, Q4_0, Q4_1 and
//! Q5_0 weights ([`run_block32`]), and for the other types the portable source
//! (`matmul::run`) compiled with AVX-512 (F, BW, VL, VNNI) and with AVX2 + FMA enabled.
//! Each is taken when the CPU has its features (detected at run time by the
//! dense-product module's CPUID probe; the `force-portable` feature never takes them).
//! The quantized kernels' only unsafe code.
#![allow(unsafe_code)]
// Without Q4_0, Q4_1 and Q8_0 compiled in, the hand-written kernel is never taken.
#![cfg_attr(
    not(any(feature = "q4", feature = "q8_0")),
    allow(dead_code, unused_imports, unreachable_code, unused_variables)
)]

use core::arch::x86_64::{
    __m256, __m256i, _mm256_and_si256, _mm256_castps256_ps128, _mm256_cmpeq_epi8,
    _mm256_cvtepi32_ps, _mm256_dpbusd_epi32, _mm256_extractf128_ps, _mm256_fmadd_ps,
    _mm256_loadu_si256, _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_or_si256,
    _mm256_set1_epi16, _mm256_set1_epi32, _mm256_set1_epi64x, _mm256_set1_epi8, _mm256_set1_ps,
    _mm256_set_epi64x, _mm256_set_m128i, _mm256_setzero_ps, _mm256_setzero_si256,
    _mm256_shuffle_epi8, _mm256_sign_epi8, _mm256_sub_epi8, _mm_add_ps, _mm_add_ss, _mm_and_si128,
    _mm_cvtss_f32, _mm_loadu_si128, _mm_movehl_ps, _mm_set1_epi8, _mm_shuffle_ps, _mm_srli_epi16,
};

use super::act::Q8_1_BYTES;
use super::matmul::{run as portable, Problem, TILE};
use super::{f16, le};

/// Runs `p` on the widest kernel the CPU has; `false` if neither AVX-512 nor AVX2
/// is available (the caller runs the portable build).
pub(super) fn run(p: &Problem<'_>, y: &mut [f32]) -> bool {
    if run_block32(p, y, true) {
        return true;
    }
    if crate::math::gemm::cpu::avx512_int8_available() {
        // SAFETY: the CPU and OS support AVX-512 F/BW/VL/VNNI, AVX2 and FMA (checked
        // just above); the function reads and writes only through the checked slices
        // in `p` and `y`, as the portable kernel does.
        unsafe { run_avx512(p, y) };
        return true;
    }
    if crate::math::gemm::cpu::avx2_fma_available() {
        // SAFETY: the CPU and OS support AVX2 and FMA (checked just above); slices as
        // above.
        unsafe { run_avx2(p, y) };
        return true;
    }
    false
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn run_avx512(p: &Problem<'_>, y: &mut [f32]) {
    portable(p, y)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2(p: &Problem<'_>, y: &mut [f32]) {
    portable(p, y)
}

/// Which 32-value block type [`block32_avx2`] reads.
const Q8_0: u8 = 0;
const Q4_0: u8 = 1;
const Q4_1: u8 = 2;
const Q5_0: u8 = 3;

/// Hand-written AVX2 kernel for Q8_0, Q4_0, Q4_1 and Q5_0 weights against Q8_1 inputs: per
/// block and input row one `vpmaddubsw` (unsigned weights, or `|w|` against `sign(a, w)`
/// for signed ones) and one `vpmaddwd` into eight `i32` lanes, converted and fused into
/// eight `f32` lanes with `d_w · d_x`. The same tiling as the portable kernel (chunks of
/// 16 weight rows, tiles of 4 input rows). `false` (nothing written) for any other type
/// or inconsistent lengths; the caller then runs the other builds. `vnni` allows the
/// AVX-512 VNNI form where the CPU has it (tests turn it off to test the AVX2 form).
pub(super) fn run_block32(p: &Problem<'_>, y: &mut [f32], vnni: bool) -> bool {
    use super::TensorType as T;
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
    if !crate::math::gemm::cpu::avx2_fma_available() {
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
    if vnni && crate::math::gemm::cpu::avx512_int8_available() {
        // SAFETY: the CPU and OS support AVX2, FMA and AVX-512 F/BW/VL/VNNI (checked);
        // every load in the kernel is from a slice whose length is checked against the
        // load's width first.
        unsafe {
            match kind {
                Q8_0 => block32_vnni::<Q8_0, 34>(p, y),
                Q4_0 => block32_vnni::<Q4_0, 18>(p, y),
                Q5_0 => block32_vnni::<Q5_0, 22>(p, y),
                _ => block32_vnni::<Q4_1, 20>(p, y),
            }
        }
        return true;
    }
    // SAFETY: the CPU and OS support AVX2 and FMA (checked above); loads as above.
    unsafe {
        match kind {
            Q8_0 => block32_avx2::<Q8_0, 34>(p, y),
            Q4_0 => block32_avx2::<Q4_0, 18>(p, y),
            Q5_0 => block32_avx2::<Q5_0, 22>(p, y),
            _ => block32_avx2::<Q4_1, 20>(p, y),
        }
    }
    true
}

/// 32 bytes of `s` from byte `at` as a vector, or zeros if `s` is too short.
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn load32(s: &[u8], at: usize) -> __m256i {
    match s.get(at..at + 32) {
        // SAFETY: the slice holds the 32 bytes read (checked by `get`); unaligned load.
        Some(b) => unsafe { _mm256_loadu_si256(b.as_ptr().cast()) },
        None => unsafe { _mm256_setzero_si256() },
    }
}

/// 16 bytes of nibbles from byte `at` of `s` as 32 values 0..=15: low nibbles first
/// (values 0..16), then high nibbles (values 16..32), as Q4_0 and Q4_1 store them.
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn nibbles(s: &[u8], at: usize) -> __m256i {
    let Some(b) = s.get(at..at + 16) else {
        return unsafe { _mm256_setzero_si256() };
    };
    // SAFETY: the slice holds the 16 bytes read (checked by `get`); unaligned load.
    unsafe {
        let v = _mm_loadu_si128(b.as_ptr().cast());
        let mask = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(v, mask);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), mask);
        _mm256_set_m128i(hi, lo)
    }
}

/// Byte `j` = `0xff` where bit `j` of `bits` is set, else 0 (Q5_0's fifth bits).
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn bits_to_bytes(bits: u32) -> __m256i {
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
unsafe fn hsum(v: __m256) -> f32 {
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }
}

/// [`block32`] with `vpmaddubsw` + `vpmaddwd` (AVX2).
#[target_feature(enable = "avx2,fma")]
unsafe fn block32_avx2<const K: u8, const B: usize>(p: &Problem<'_>, y: &mut [f32]) {
    // SAFETY: the caller checked AVX2 and FMA.
    unsafe { block32::<K, B, false>(p, y) }
}

/// [`block32`] with `vpdpbusd` (AVX-512 VNNI, 256-bit form): one instruction for the
/// unsigned-by-signed byte products and their sums per `i32` lane.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn block32_vnni<const K: u8, const B: usize>(p: &Problem<'_>, y: &mut [f32]) {
    // SAFETY: the caller checked AVX2, FMA and AVX-512 F/BW/VL/VNNI.
    unsafe { block32::<K, B, true>(p, y) }
}

/// The block kernel, inlined into [`block32_avx2`] and [`block32_vnni`]; `VNNI` selects
/// `vpdpbusd` (only ever true inside `block32_vnni`).
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn block32<const K: u8, const B: usize, const VNNI: bool>(p: &Problem<'_>, y: &mut [f32]) {
    const ROWS: usize = 16;
    let rb = p.row_bytes;
    let n = p.a.n;
    let arow = p.cols / 32 * Q8_1_BYTES;
    let nrows = p.y_stride;
    let acts = p.a.bytes;
    // SAFETY (all intrinsics below): AVX2 and FMA are enabled for this function and
    // present (the caller checked); loads go through `load32`/`nibbles`, which check.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let eight = _mm256_set1_epi8(8);
        let sixteen = _mm256_set1_epi8(16);
        for (c, chunk) in p.data.chunks(ROWS * rb).enumerate() {
            let mut t0 = 0;
            while t0 < n {
                let tn = (n - t0).min(TILE);
                for (i, row) in chunk.chunks_exact(rb).enumerate() {
                    let mut acc = [_mm256_setzero_ps(); TILE];
                    let mut mins = [0f32; TILE];
                    for (b, wb) in row.chunks_exact(B).enumerate() {
                        let d = f16::read(wb);
                        let (w, m) = match K {
                            Q8_0 => (load32(wb, 2), 0.0),
                            Q4_0 => (_mm256_sub_epi8(nibbles(wb, 2), eight), 0.0),
                            Q5_0 => {
                                let qh = u32::from_le_bytes(le(wb.get(2..6).unwrap_or(&[])));
                                let high = _mm256_and_si256(bits_to_bytes(qh), sixteen);
                                let q = _mm256_or_si256(nibbles(wb, 6), high);
                                (_mm256_sub_epi8(q, sixteen), 0.0)
                            }
                            _ => (nibbles(wb, 4), f16::read(wb.get(2..).unwrap_or(&[]))),
                        };
                        // Signed weights: |w| times sign(a, w) keeps vpmaddubsw's
                        // unsigned-by-signed form.
                        let wu = if K == Q4_1 { w } else { _mm256_sign_epi8(w, w) };
                        for t in 0..tn {
                            let at = (t0 + t) * arow + b * Q8_1_BYTES;
                            let Some(ab) = acts.get(at..at + Q8_1_BYTES) else {
                                continue;
                            };
                            let ad = f32::from_le_bytes(le(ab.get(..4).unwrap_or(&[])));
                            let a = load32(ab, 8);
                            let a = if K == Q4_1 { a } else { _mm256_sign_epi8(a, w) };
                            let s = if VNNI {
                                _mm256_dpbusd_epi32(_mm256_setzero_si256(), wu, a)
                            } else {
                                _mm256_madd_epi16(_mm256_maddubs_epi16(wu, a), ones)
                            };
                            acc[t] = _mm256_fmadd_ps(
                                _mm256_set1_ps(d * ad),
                                _mm256_cvtepi32_ps(s),
                                acc[t],
                            );
                            if K == Q4_1 {
                                mins[t] += m * f32::from_le_bytes(le(ab.get(4..8).unwrap_or(&[])));
                            }
                        }
                    }
                    let r = c * ROWS + i;
                    for t in 0..tn {
                        if let Some(o) = y.get_mut((t0 + t) * nrows + r) {
                            *o = hsum(acc[t]) + mins[t];
                        }
                    }
                }
                t0 += tn;
            }
        }
    }
}
