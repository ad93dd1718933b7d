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
    __m128, __m256, __m256i, __m512, __m512i, _mm256_add_ps, _mm256_and_si256,
    _mm256_broadcastss_ps, _mm256_castps256_ps128, _mm256_castsi256_ps, _mm256_cmpeq_epi8,
    _mm256_cvtepi32_ps, _mm256_cvtph_ps, _mm256_dpbusd_epi32, _mm256_extractf128_ps,
    _mm256_fmadd_ps, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_mul_ps,
    _mm256_or_si256, _mm256_set1_epi16, _mm256_set1_epi32, _mm256_set1_epi64x, _mm256_set1_epi8,
    _mm256_set_epi64x, _mm256_set_m128i, _mm256_setzero_ps, _mm256_setzero_si256,
    _mm256_shuffle_epi8, _mm256_sign_epi8, _mm256_storeu_ps, _mm256_sub_epi8, _mm512_and_si512,
    _mm512_broadcast_i32x4, _mm512_castps128_ps512, _mm512_castps256_ps512, _mm512_castsi128_si512,
    _mm512_cvtepi32_ps, _mm512_dpbusd_epi32, _mm512_fmadd_ps, _mm512_inserti32x4, _mm512_loadu_ps,
    _mm512_permutexvar_ps, _mm512_set1_epi8, _mm512_set_epi32, _mm512_setzero_ps,
    _mm512_setzero_si512, _mm512_srli_epi16, _mm512_storeu_ps, _mm512_storeu_si512,
    _mm512_sub_epi32, _mm512_xor_si512, _mm_add_ps, _mm_add_ss, _mm_castsi128_ps, _mm_cvtph_ps,
    _mm_cvtsi32_si128, _mm_cvtss_f32, _mm_loadl_epi64, _mm_loadu_si128, _mm_movehl_ps, _mm_mul_ps,
    _mm_prefetch, _mm_set1_ps, _mm_set_epi16, _mm_set_epi32, _mm_setzero_ps, _mm_shuffle_ps,
    _mm_srli_epi16, _MM_HINT_T0,
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

/// From this many input rows on, Q8_0, Q4_0 and Q4_1 products take the prompt kernel
/// (`prompt.rs`, with AVX-512 VNNI), which unpacks each weight block once for all of
/// them, instead of streaming the weights once per input row.
pub(in crate::quant) const PROMPT_MIN_ROWS: usize = 2;

/// How many rows ahead of a pass its reads prefetch the same blocks. The hardware
/// prefetchers of the machine the benchmarks ran on (a 2-core AMD EPYC VM) left the
/// token-by-token products waiting on memory: prefetching rows ahead made the
/// 30 MB output head of SmolLM2 three times as fast; 32 rows ahead beat 8, 16, 64 and
/// 128 on the Q4_0, Q4_1 and Q8_0 files (docs/benchmarks.md).
pub(super) const AHEAD_ROWS: usize = 32;

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
    if !(crate::math::gemm::cpu::avx2_fma_available() && crate::math::gemm::cpu::f16c_available()) {
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
    let prompt = n >= PROMPT_MIN_ROWS || p.batch;
    if wide && prompt && !p.decode && kind != Q5_0 && super::prompt::fits(blocks) {
        let job = super::prompt::Batch {
            w: p.data,
            rb,
            blocks,
            act: p.a.bytes,
            n,
            y_stride: p.y_stride,
        };
        // SAFETY: the features and every length the prompt kernel reads and writes were
        // checked above (`fits`: whole rows of `blocks` blocks, `n` activation rows,
        // `y` holding `n` rows `y_stride` apart).
        unsafe {
            match kind {
                Q8_0 => super::prompt::run::<Q8_0, 34>(&job, y),
                Q4_0 => super::prompt::run::<Q4_0, 18>(&job, y),
                _ => super::prompt::run::<Q4_1, 20>(&job, y),
            }
        }
        return true;
    }
    let arow = blocks * Q8_1_BYTES;
    let mut t = 0;
    while t < n {
        // Up to four inputs per pass over the weights on the 512-bit kernel (each input's
        // arithmetic the same as alone: its own lanes and accumulators), one elsewhere.
        let take = match (wide, kind) {
            (true, Q5_0) => 1,
            (true, _) => (n - t).min(STEPS),
            (false, _) => (n - t).min(AVX2_STEPS),
        };
        let job = Job {
            w: p.data,
            rb,
            blocks,
            act: &p.a.bytes[t * arow..(t + take) * arow],
            next: p.next,
        };
        let out = &mut y[t * p.y_stride..(t + take - 1) * p.y_stride + rows];
        let stride = p.y_stride;
        // SAFETY: the CPU and OS support AVX2, FMA and F16C (checked above), and
        // AVX-512 F/BW/VL/VNNI where `wide` (checked); `job` holds `rows` rows of
        // `blocks` blocks and `take` activation rows of `blocks` blocks, and `out` holds
        // `take` runs of `rows` outputs `stride` apart (checked above), the only memory
        // the kernels read and write.
        unsafe {
            match (kind, wide) {
                (Q8_0, true) => wide_steps::<Q8_0, 34>(&job, out, stride, rows, take),
                (Q4_0, true) => wide_steps::<Q4_0, 18>(&job, out, stride, rows, take),
                (Q5_0, true) => vnni_rows::<Q5_0, 22>(&job, out),
                (_, true) => wide_steps::<Q4_1, 20>(&job, out, stride, rows, take),
                (Q8_0, false) => avx2_steps::<Q8_0, 34>(&job, out, stride, rows, take),
                (Q4_0, false) => avx2_steps::<Q4_0, 18>(&job, out, stride, rows, take),
                (Q5_0, false) => avx2_steps::<Q5_0, 22>(&job, out, stride, rows, take),
                (_, false) => avx2_steps::<Q4_1, 20>(&job, out, stride, rows, take),
            }
        }
        t += take;
    }
    true
}

/// Activation rows that share one pass over the weights on the 512-bit kernel (decoding
/// steps of different sequences, [`wide_rows`]): up to eight, whose accumulators fit in
/// the 32 vector registers with the unpacked weight block.
const STEPS: usize = 8;

/// [`wide_rows`] for `take` (1 to [`STEPS`]) activation rows.
///
/// # Safety
/// As [`wide_rows`] with `T = take`.
#[inline(always)]
unsafe fn wide_steps<const K: u8, const B: usize>(
    job: &Job<'_>,
    out: &mut [f32],
    stride: usize,
    rows: usize,
    take: usize,
) {
    // SAFETY: the caller's contract, `T` = `take`.
    unsafe {
        match take {
            1 => wide_rows::<K, B, 1>(job, out, stride, rows),
            2 => wide_rows::<K, B, 2>(job, out, stride, rows),
            3 => wide_rows::<K, B, 3>(job, out, stride, rows),
            4 => wide_rows::<K, B, 4>(job, out, stride, rows),
            5 => wide_rows::<K, B, 5>(job, out, stride, rows),
            6 => wide_rows::<K, B, 6>(job, out, stride, rows),
            7 => wide_rows::<K, B, 7>(job, out, stride, rows),
            _ => wide_rows::<K, B, 8>(job, out, stride, rows),
        }
    }
}

/// Activation rows against weight rows, lengths checked: `w` holds at least the
/// outputs' count of rows of `rb = blocks · B` bytes, `act` one row of `blocks` Q8_1
/// blocks (the 512-bit kernel: up to four, one after the other).
struct Job<'a> {
    w: &'a [u8],
    rb: usize,
    blocks: usize,
    act: &'a [u8],
    /// Bytes to prefetch into L1 while the rows stream (see `Problem::next`).
    next: &'a [u8],
}

/// Q8_0, Q4_0 and Q4_1 with 512-bit VNNI: four weight rows in one register, each row's
/// 16-byte quarter of a block in its own 128-bit lane, so one `vpdpbusd` pair makes the
/// four rows' block sums (four `i32` lanes each) against the block's activations
/// broadcast to every lane; the four scales are widened by one F16C instruction and
/// spread over their lanes by one permute. Signed quants are made unsigned (Q8_0: `q +
/// 128`; Q4_0: the stored nibble, `q + 8`) and the offset's products, the same for the
/// four rows, subtracted once per block: the integer sums are exact. A row's arithmetic
/// stays in its own lanes, so it is the same whichever rows share its pass (a last
/// partial pass repeats the last row). `T` activation rows (a batch of decoding steps)
/// share each unpacked weight block, each with its own accumulators: every output is
/// the one it has with its activation row alone (`T = 1`). Input `t`'s `rows` outputs
/// start at `out[t · stride]`.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C present; `job` as [`Job`] says with `T`
/// activation rows, `B` the bytes of a `K` block; `out` holds `(T - 1) · stride + rows`
/// values.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn wide_rows<const K: u8, const B: usize, const T: usize>(
    job: &Job<'_>,
    out: &mut [f32],
    stride: usize,
    rows: usize,
) {
    let Some(last) = rows.checked_sub(1) else {
        return;
    };
    // The caller's next reads, spread over the passes: a few lines each, into L1 (the
    // early ones fall back to L2 as the rows stream through, the last ones are in L1 when
    // the caller starts: an unmerged adapter's reflectors, 1.1-1.7 points of decode time
    // at one thread against prefetching them into L2, docs/runtime.md).
    let lines = job.next.len().div_ceil(64);
    let per_pass = lines.div_ceil(rows.div_ceil(ROWS).max(1));
    let mut fetched = 0;
    let arow = job.blocks * Q8_1_BYTES;
    // SAFETY: `job.act` holds `T` rows of `job.blocks` activation blocks.
    let acts = core::array::from_fn(|t| unsafe { job.act.as_ptr().add(t * arow) });
    let mut r = 0;
    while r <= last {
        for _ in 0..per_pass.min(lines - fetched) {
            _mm_prefetch::<_MM_HINT_T0>(job.next.as_ptr().wrapping_add(fetched * 64).cast());
            fetched += 1;
        }
        // SAFETY: rows r .. r + 4, clamped to the last one, lie in `job.w` (the caller's
        // lengths); the pointers are only read through within their rows.
        let wrows =
            core::array::from_fn(|i| unsafe { job.w.as_ptr().add((r + i).min(last) * job.rb) });
        // SAFETY: as above, and each of `acts` holds `job.blocks` activation blocks.
        let sums = unsafe { wide_dot::<K, B, T>(wrows, acts, job.blocks, AHEAD_ROWS * job.rb) };
        for (t, sums) in sums.iter().enumerate() {
            let row = &mut out[t * stride..t * stride + rows];
            for (o, s) in row.iter_mut().skip(r).zip(sums) {
                *o = *s;
            }
        }
        r += ROWS;
    }
}

/// The four rows at `rows` dotted with each of the `T` activation rows at `acts`
/// (`blocks` blocks each).
///
/// # Safety
/// As [`wide_rows`]: each of `rows` holds `blocks` blocks of `B` bytes, each of `acts`
/// `blocks` blocks of [`Q8_1_BYTES`].
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn wide_dot<const K: u8, const B: usize, const T: usize>(
    rows: [*const u8; ROWS],
    acts: [*const u8; T],
    blocks: usize,
    ahead: usize,
) -> [[f32; ROWS]; T] {
    // SAFETY (every read): block b of a row is bytes b·B .. b·B + B of it and each read
    // stays inside (Q8_0 reads 2..34 of 34, Q4_0 0..2 and 2..18 of 18, Q4_1 0..20 of 20);
    // activation block b is bytes b·40 .. b·40 + 40 of its row, read at 0..8 and 8..40.
    unsafe {
        let nibble = _mm512_set1_epi8(0x0f);
        // Lane l of the sums belongs to row l / 4: the scale at index l / 4 (one scale
        // per row) or 2 (l / 4) (Q4_1's (d, m) pairs).
        let spread = if K == Q4_1 {
            _mm512_set_epi32(6, 6, 6, 6, 4, 4, 4, 4, 2, 2, 2, 2, 0, 0, 0, 0)
        } else {
            _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0)
        };
        let offset = _mm512_set1_epi8(if K == Q8_0 { -128 } else { 8 });
        let mut acc = [_mm512_setzero_ps(); T];
        let mut mins = [_mm256_setzero_ps(); T];
        for b in 0..blocks {
            let at = b * B;
            for row in rows {
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(ahead + at).cast());
            }
            // The weight block, unpacked once for every activation row: two vectors of
            // unsigned quants and the rows' scales (Q4_1: with their minimums).
            let (w_lo, w_hi) = if K == Q8_0 {
                // q + 128 as unsigned bytes: the sign bit flipped.
                (
                    _mm512_xor_si512(quarters(rows, at + 2), offset),
                    _mm512_xor_si512(quarters(rows, at + 18), offset),
                )
            } else {
                let v = quarters(rows, at + if K == Q4_1 { 4 } else { 2 });
                (
                    _mm512_and_si512(v, nibble),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble),
                )
            };
            let halves = if K == Q4_1 {
                _mm_set_epi32(
                    rows[3].add(at).cast::<i32>().read_unaligned(),
                    rows[2].add(at).cast::<i32>().read_unaligned(),
                    rows[1].add(at).cast::<i32>().read_unaligned(),
                    rows[0].add(at).cast::<i32>().read_unaligned(),
                )
            } else {
                _mm_set_epi16(
                    0,
                    0,
                    0,
                    0,
                    rows[3].add(at).cast::<i16>().read_unaligned(),
                    rows[2].add(at).cast::<i16>().read_unaligned(),
                    rows[1].add(at).cast::<i16>().read_unaligned(),
                    rows[0].add(at).cast::<i16>().read_unaligned(),
                )
            };
            for t in 0..T {
                let ab = acts[t].add(b * Q8_1_BYTES);
                let a_lo = _mm512_broadcast_i32x4(_mm_loadu_si128(ab.add(8).cast()));
                let a_hi = _mm512_broadcast_i32x4(_mm_loadu_si128(ab.add(24).cast()));
                let products = _mm512_dpbusd_epi32(
                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), w_lo, a_lo),
                    w_hi,
                    a_hi,
                );
                let (sum, scale) = if K == Q4_1 {
                    // (d_a, s_a) repeated: [d_w d_a, m_w s_a] per row.
                    let ds =
                        _mm256_castsi256_ps(_mm256_set1_epi64x(ab.cast::<i64>().read_unaligned()));
                    let dm = _mm256_mul_ps(_mm256_cvtph_ps(halves), ds);
                    mins[t] = _mm256_add_ps(mins[t], dm);
                    (products, spread_lanes(spread, _mm512_castps256_ps512(dm)))
                } else {
                    // The offset's products: 128 (Q8_0) or 8 (Q4_0) times the activations.
                    let shift = _mm512_dpbusd_epi32(
                        _mm512_dpbusd_epi32(_mm512_setzero_si512(), offset, a_lo),
                        offset,
                        a_hi,
                    );
                    let da = _mm_set1_ps(ab.cast::<f32>().read_unaligned());
                    let d = _mm_mul_ps(_mm_cvtph_ps(halves), da);
                    (
                        _mm512_sub_epi32(products, shift),
                        spread_lanes(spread, _mm512_castps128_ps512(d)),
                    )
                };
                acc[t] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(sum), acc[t]);
            }
        }
        core::array::from_fn(|t| {
            let mut lanes = [0f32; 16];
            _mm512_storeu_ps(lanes.as_mut_ptr(), acc[t]);
            let mut m = [0f32; 8];
            _mm256_storeu_ps(m.as_mut_ptr(), mins[t]);
            core::array::from_fn(|i| {
                let s = (lanes[4 * i] + lanes[4 * i + 1]) + (lanes[4 * i + 2] + lanes[4 * i + 3]);
                if K == Q4_1 {
                    s + m[2 * i + 1]
                } else {
                    s
                }
            })
        })
    }
}

/// Lane `l` of the result = lane `index[l]` of `v` (`vpermps`). Under Miri, which does
/// not implement that instruction, the same permutation through memory: the kernels'
/// memory accesses are what Miri checks, and this one touches none.
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn spread_lanes(index: __m512i, v: __m512) -> __m512 {
    // SAFETY: AVX-512F enabled by the caller; the arrays are 16 lanes.
    unsafe {
        if cfg!(miri) {
            let (mut lanes, mut at, mut out) = ([0f32; 16], [0i32; 16], [0f32; 16]);
            _mm512_storeu_ps(lanes.as_mut_ptr(), v);
            _mm512_storeu_si512(at.as_mut_ptr().cast(), index);
            for (o, &i) in out.iter_mut().zip(&at) {
                *o = lanes[(i & 15) as usize];
            }
            _mm512_loadu_ps(out.as_ptr())
        } else {
            _mm512_permutexvar_ps(index, v)
        }
    }
}

/// Bytes `at .. at + 16` of each of the four rows, row `i` in 128-bit lane `i`.
///
/// # Safety
/// 16 readable bytes at each `rows[i] + at`; AVX-512F enabled.
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn quarters(rows: [*const u8; ROWS], at: usize) -> __m512i {
    // SAFETY: the caller's contract.
    unsafe {
        let v = _mm512_castsi128_si512(_mm_loadu_si128(rows[0].add(at).cast()));
        let v = _mm512_inserti32x4::<1>(v, _mm_loadu_si128(rows[1].add(at).cast()));
        let v = _mm512_inserti32x4::<2>(v, _mm_loadu_si128(rows[2].add(at).cast()));
        _mm512_inserti32x4::<3>(v, _mm_loadu_si128(rows[3].add(at).cast()))
    }
}

/// [`rows`] with `vpmaddubsw` + `vpmaddwd` (AVX2), for `take` (1 to [`AVX2_STEPS`])
/// activation rows, their outputs `stride` apart in `out`: several (a batch of decoding
/// steps) share one pass over the weights, a weight row at a time, each with its own
/// accumulators (the same arithmetic as alone).
///
/// # Safety
/// AVX2, FMA and F16C present; `job` as [`Job`] says with `take` activation rows, `B` the
/// bytes of a `K` block; `out` holds `(take - 1) · stride + count` values.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_steps<const K: u8, const B: usize>(
    job: &Job<'_>,
    out: &mut [f32],
    stride: usize,
    count: usize,
    take: usize,
) {
    // SAFETY: the caller checked AVX2, FMA and F16C, and the lengths.
    unsafe {
        match take {
            1 => rows::<K, B, false>(job, &mut out[..count]),
            2 => rows_steps::<K, B, 2>(job, out, stride, count),
            3 => rows_steps::<K, B, 3>(job, out, stride, count),
            _ => rows_steps::<K, B, 4>(job, out, stride, count),
        }
    }
}

/// Activation rows that share one pass over the weights on the AVX2 kernel (its 16
/// vector registers hold the accumulators of one weight row against four).
const AVX2_STEPS: usize = 4;

/// Every output of `T` activation rows, one weight row at a time.
///
/// # Safety
/// As [`avx2_steps`] with `take = T`.
#[inline(always)]
unsafe fn rows_steps<const K: u8, const B: usize, const T: usize>(
    job: &Job<'_>,
    out: &mut [f32],
    stride: usize,
    rows: usize,
) {
    for r in 0..rows {
        let mut sums = [[0f32; 1]; T];
        // SAFETY: row r exists (the loop bound, and the caller's lengths).
        unsafe { dot_rows::<K, B, false, 1, T>(job, r, &mut sums) };
        for (t, s) in sums.iter().enumerate() {
            out[t * stride + r] = s[0];
        }
    }
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
        let mut sums = [[0f32; ROWS]; 1];
        // SAFETY: rows r .. r + ROWS exist (the loop bound, and the caller's lengths).
        unsafe { dot_rows::<K, B, VNNI, ROWS, 1>(job, r, &mut sums) };
        out[r..r + ROWS].copy_from_slice(&sums[0]);
        r += ROWS;
    }
    while r < out.len() {
        let mut sum = [[0f32; 1]; 1];
        // SAFETY: row r exists (the loop bound).
        unsafe { dot_rows::<K, B, VNNI, 1, 1>(job, r, &mut sum) };
        out[r] = sum[0][0];
        r += 1;
    }
}

/// The dot products of weight rows `r .. r + R` with the activation row.
///
/// # Safety
/// As [`rows`], and rows `r .. r + R` inside `job.w`.
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn dot_rows<
    const K: u8,
    const B: usize,
    const VNNI: bool,
    const R: usize,
    const T: usize,
>(
    job: &Job<'_>,
    r: usize,
    sums: &mut [[f32; R]; T],
) {
    // SAFETY (every pointer read below): the weight rows r .. r + R hold `blocks`
    // blocks of B bytes each and the activation row `blocks` blocks of Q8_1_BYTES (the
    // caller's checks), and each read stays inside its block: Q8_0 reads bytes 2..34
    // of 34, Q4_0 2..18 of 18, Q5_0 2..22 of 22, Q4_1 0..20 of 20; the activation block
    // 0..40 of 40. The intrinsics' features are enabled by the caller.
    unsafe {
        let w0 = job.w.as_ptr().add(r * job.rb);
        let arow = job.blocks * Q8_1_BYTES;
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        let mut mins = [[_mm_setzero_ps(); T]; R];
        for b in 0..job.blocks {
            // (d, s) of each activation row's block: its scale and d · Σ q; its quants.
            let ab: [*const u8; T] =
                core::array::from_fn(|t| job.act.as_ptr().add(t * arow + b * Q8_1_BYTES));
            let ds: [__m128; T] =
                core::array::from_fn(|t| _mm_castsi128_ps(_mm_loadl_epi64(ab[t].cast())));
            let av: [__m256i; T] =
                core::array::from_fn(|t| _mm256_loadu_si256(ab[t].add(8).cast()));
            for (i, (acc, mins)) in acc.iter_mut().zip(mins.iter_mut()).enumerate() {
                let wb = w0.add(i * job.rb + b * B);
                _mm_prefetch::<_MM_HINT_T0>(wb.wrapping_add(AHEAD_ROWS * job.rb).cast());
                // (d_w, m_w) widened together (Q4_1 stores them side by side); the
                // other types read `d_w` alone.
                let half = if K == Q4_1 {
                    wb.cast::<i32>().read_unaligned()
                } else {
                    i32::from(wb.cast::<u16>().read_unaligned())
                };
                let wd = _mm_cvtph_ps(_mm_cvtsi32_si128(half));
                // The weight block, unpacked once for every activation row: unsigned
                // values (Q4_1), or signed ones.
                let w = match K {
                    Q4_1 => nibbles(wb.add(4)),
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
                for t in 0..T {
                    let dm = _mm_mul_ps(wd, ds[t]);
                    let sum = if K == Q4_1 {
                        mins[t] = _mm_add_ps(mins[t], dm);
                        products::<VNNI>(w, av[t])
                    } else {
                        // Signed weights: |w| times sign(a, w) keeps the
                        // unsigned-by-signed form of the byte products.
                        products::<VNNI>(_mm256_sign_epi8(w, w), _mm256_sign_epi8(av[t], w))
                    };
                    acc[t] =
                        _mm256_fmadd_ps(_mm256_broadcastss_ps(dm), _mm256_cvtepi32_ps(sum), acc[t]);
                }
            }
        }
        for (t, sums) in sums.iter_mut().enumerate() {
            for (i, s) in sums.iter_mut().enumerate() {
                *s = hsum(acc[i][t]);
                if K == Q4_1 {
                    // Lane 1: Σ m_w · s_a.
                    *s += _mm_cvtss_f32(_mm_shuffle_ps::<1>(mins[i][t], mins[i][t]));
                }
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
