//! The hand-written kernel for Q8_0 weights against `f32` inputs: a decoder's output
//! head, whose logits keep the float model's ranking (8-bit activations there turn
//! near ties), read in place as every other product is.
//!
//! With AVX-512 VNNI the inputs are first rounded to 16 bits per block of 32 (scale =
//! the block's largest magnitude / 32767: a relative error under 2^-16 of that value,
//! 256 times finer than the 8-bit activations of the other products), and per block
//! and weight row the 32 quants, sign-extended to 16 bits, meet them in one `vpmaddwd`
//! (exact integer sums), converted and scaled by `d_w · d_x` in one fused
//! multiply-add. Without it (AVX2), the quants are converted to `f32` and multiplied by
//! the `f32` inputs. Four weight rows share each block of inputs; with AVX-512 up to four
//! inputs (a batch of decoding steps) share each weight block's widening, with AVX2 its
//! conversion (one row at a time). Each output's
//! additions run in the same order whatever the row grouping (bit-identical when rows
//! are split across threads).

use core::arch::x86_64::{
    __m256, __m512, __m512i, _mm256_cvtepi32_ps, _mm256_cvtepi8_epi32, _mm256_fmadd_ps,
    _mm256_loadu_ps, _mm256_loadu_si256, _mm256_mul_ps, _mm256_set1_ps, _mm256_setzero_ps,
    _mm512_cvtepi32_ps, _mm512_cvtepi8_epi16, _mm512_cvtepi8_epi32, _mm512_fmadd_ps,
    _mm512_loadu_ps, _mm512_loadu_si512, _mm512_madd_epi16, _mm512_mul_ps, _mm512_reduce_add_ps,
    _mm512_set1_ps, _mm512_setzero_ps, _mm_cvtph_ps, _mm_cvtsi32_si128, _mm_cvtss_f32,
    _mm_loadl_epi64, _mm_loadu_si128, _mm_mul_ps, _mm_prefetch, _mm_set1_ps, _mm_set_epi16,
    _mm_storeu_ps, _MM_HINT_T0,
};

use super::super::matmul::Problem;
use super::super::TensorType;
use super::block32::AHEAD_ROWS;

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
        || !(crate::math::gemm::cpu::avx2_fma_available()
            && crate::math::gemm::cpu::f16c_available())
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
    let blocks16 = blocks.min(SEGMENT / 32);
    // Up to four inputs per pass over the weights (a batch of decoding steps), each
    // computed as alone: with AVX-512 whenever the rows fit the 16-bit rounding, with
    // AVX2 for more than one input (one input takes `avx2_rows`, four weight rows a pass).
    if (wide && blocks16 == blocks) || (!wide && n > 1) {
        let mut t = 0;
        while t < n {
            let take = (n - t).min(ROWS);
            let x = &p.a.f32s[t * p.cols..(t + take) * p.cols];
            let out = &mut y[t * p.y_stride..(t + take - 1) * p.y_stride + rows];
            let shape = (p.y_stride, rows);
            // SAFETY: AVX2, FMA and F16C present, AVX-512 F/BW/VL/VNNI where `wide`
            // (checked); `p.data` holds `rows` rows of `blocks` blocks, `x` `take` inputs
            // of `blocks · 32` values (at most SEGMENT where `wide`), `out` `take` runs of
            // `rows` outputs `y_stride` apart (checked above), all the kernels read and
            // write.
            unsafe {
                match (wide, take) {
                    (true, 1) => i16_rows::<1>(p.data, rb, x, out, shape),
                    (true, 2) => i16_rows::<2>(p.data, rb, x, out, shape),
                    (true, 3) => i16_rows::<3>(p.data, rb, x, out, shape),
                    (true, _) => i16_rows::<4>(p.data, rb, x, out, shape),
                    (false, 1) => avx2_steps::<1>(p.data, rb, x, out, shape),
                    (false, 2) => avx2_steps::<2>(p.data, rb, x, out, shape),
                    (false, 3) => avx2_steps::<3>(p.data, rb, x, out, shape),
                    (false, _) => avx2_steps::<4>(p.data, rb, x, out, shape),
                }
            }
            t += take;
        }
        return true;
    }
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

/// Inputs rounded to 16 bits at once (longer rows take the `f32` form).
const SEGMENT: usize = 2048;

/// Every output against the inputs rounded to 16 bits per block: `x` holds `T` inputs
/// (a batch of decoding steps) that share each weight block, each with its own
/// accumulators, so every output is the one it has with its input alone (`T = 1`);
/// input `t`'s outputs start at `out[t · stride]`.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C present; `x.len() = T · cols`, `cols <=
/// SEGMENT` a multiple of 32; `w` holds `rows` rows of `rb = cols / 32 · 34` bytes, and
/// `out` holds `(T - 1) · stride + rows` values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn i16_rows<const T: usize>(
    w: &[u8],
    rb: usize,
    x: &[f32],
    out: &mut [f32],
    (stride, rows): (usize, usize),
) {
    let cols = x.len() / T;
    let mut q = [[0i16; SEGMENT]; T];
    let mut scales = [[0f32; SEGMENT / 32]; T];
    for ((q, scales), x) in q.iter_mut().zip(&mut scales).zip(x.chunks_exact(cols)) {
        super::super::act::round_i16_blocks(x, q, scales);
    }
    let Some(last) = rows.checked_sub(1) else {
        return;
    };
    let blocks = cols / 32;
    let mut r = 0;
    while r <= last {
        // SAFETY: rows r .. r + 4, clamped to the last one, lie in `w` (the caller's
        // lengths); `q` and `scales` hold `blocks` blocks (cols <= SEGMENT).
        let wrows = core::array::from_fn(|i| unsafe { w.as_ptr().add((r + i).min(last) * rb) });
        let sums = unsafe { i16_dot::<T>(wrows, &q, &scales, blocks, AHEAD_ROWS * rb) };
        for (t, sums) in sums.iter().enumerate() {
            let row = &mut out[t * stride..t * stride + rows];
            for (o, s) in row.iter_mut().skip(r).zip(sums) {
                *o = *s;
            }
        }
        r += ROWS;
    }
}

/// The four rows at `rows` against each of the `T` 16-bit inputs `q` with their block
/// scales.
///
/// # Safety
/// As [`i16_rows`]: each of `rows` holds `blocks` Q8_0 blocks; `blocks <= SEGMENT / 32`.
#[inline(always)]
#[allow(unused_unsafe, clippy::needless_range_loop)] // `b` indexes every input's scales
unsafe fn i16_dot<const T: usize>(
    rows: [*const u8; ROWS],
    q: &[[i16; SEGMENT]; T],
    scales: &[[f32; SEGMENT / 32]; T],
    blocks: usize,
    ahead: usize,
) -> [[f32; ROWS]; T] {
    // SAFETY (every read): block b of a row is bytes b·34 .. b·34 + 34 of it, read at
    // 0..2 and 2..34; inputs b·32 .. b·32 + 32 of each `q` (b < blocks <= SEGMENT / 32).
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); ROWS]; T];
        for b in 0..blocks {
            let at = b * B;
            let halves = _mm_cvtph_ps(_mm_set_epi16(
                0,
                0,
                0,
                0,
                rows[3].add(at).cast::<i16>().read_unaligned(),
                rows[2].add(at).cast::<i16>().read_unaligned(),
                rows[1].add(at).cast::<i16>().read_unaligned(),
                rows[0].add(at).cast::<i16>().read_unaligned(),
            ));
            for row in rows {
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(ahead + at).cast());
            }
            let wq: [__m512i; ROWS] = core::array::from_fn(|i| {
                _mm512_cvtepi8_epi16(_mm256_loadu_si256(rows[i].add(at + 2).cast()))
            });
            for t in 0..T {
                let xv = _mm512_loadu_si512(q[t].as_ptr().add(b * 32).cast());
                let mut d = [0f32; 4];
                _mm_storeu_ps(
                    d.as_mut_ptr(),
                    _mm_mul_ps(halves, _mm_set1_ps(scales[t][b])),
                );
                for (i, acc) in acc[t].iter_mut().enumerate() {
                    let s = _mm512_madd_epi16(wq[i], xv);
                    *acc = _mm512_fmadd_ps(_mm512_set1_ps(d[i]), _mm512_cvtepi32_ps(s), *acc);
                }
            }
        }
        core::array::from_fn(|t| {
            let mut out = [0f32; ROWS];
            for (o, acc) in out.iter_mut().zip(&acc[t]) {
                *o = _mm512_reduce_add_ps(*acc);
            }
            out
        })
    }
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
                _mm_prefetch::<_MM_HINT_T0>(wb.wrapping_add(AHEAD_ROWS * rb).cast());
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

/// Every output of `T` inputs (a batch of decoding steps), one weight row at a time: each
/// block's quants converted to `f32` once for the `T` inputs, each input with its own
/// accumulator and the operations of [`avx2_dot`], so every output has the bits it has
/// with its input alone; input `t`'s outputs start at `out[t · stride]`.
///
/// # Safety
/// AVX2, FMA and F16C present; `x.len() = T · cols`, `cols` a multiple of 32; `w` holds
/// `rows` rows of `rb = cols / 32 · 34` bytes, and `out` holds `(T - 1) · stride + rows`
/// values.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_steps<const T: usize>(
    w: &[u8],
    rb: usize,
    x: &[f32],
    out: &mut [f32],
    (stride, rows): (usize, usize),
) {
    let cols = x.len() / T;
    // SAFETY: as in `avx2_dot`, for each of the `T` inputs; the outputs are inside `out`
    // (the caller's lengths).
    unsafe {
        for r in 0..rows {
            let w0 = w.as_ptr().add(r * rb);
            let mut acc = [_mm256_setzero_ps(); T];
            for b in 0..cols / 32 {
                let wb = w0.add(b * B);
                _mm_prefetch::<_MM_HINT_T0>(wb.wrapping_add(AHEAD_ROWS * rb).cast());
                let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
                    wb.cast::<u16>().read_unaligned(),
                ))));
                // Quants 8j .. 8j + 8 as f32.
                let q: [__m256; 4] = core::array::from_fn(|j| {
                    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                        wb.add(2 + 8 * j).cast(),
                    )))
                });
                for (t, acc) in acc.iter_mut().enumerate() {
                    let xp = x.as_ptr().add(t * cols + b * 32);
                    let mut s = _mm256_mul_ps(q[0], _mm256_loadu_ps(xp));
                    s = _mm256_fmadd_ps(q[1], _mm256_loadu_ps(xp.add(8)), s);
                    s = _mm256_fmadd_ps(q[2], _mm256_loadu_ps(xp.add(16)), s);
                    s = _mm256_fmadd_ps(q[3], _mm256_loadu_ps(xp.add(24)), s);
                    *acc = _mm256_fmadd_ps(_mm256_set1_ps(d), s, *acc);
                }
            }
            for (t, acc) in acc.iter().enumerate() {
                if let Some(o) = out.get_mut(t * stride + r) {
                    *o = super::block32::hsum(*acc);
                }
            }
        }
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
                _mm_prefetch::<_MM_HINT_T0>(wb.wrapping_add(AHEAD_ROWS * rb).cast());
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
