//! The AArch64 NEON kernels for block-quantized weights, taken where
//! `limit_kernels` allows them (every AArch64 CPU has NEON):
//! - [`run`]: Q8_0, Q4_0, Q4_1 and Q5_0 weights against Q8_1 activations (a decoder's
//!   linears, one token or several requests' tokens at a time; Q5_0 is most of SmolLM2's
//!   Q4_K file);
//! - [`run_f32_inputs`]: Q8_0 weights against `f32` inputs (a decoder's output head);
//! - `k_quants`: Q4_K and Q6_K against Q8_K activations, the portable kernel's bits.
//!
//! [`run`], per block, weight row and input row: the 32 quants unpacked into two 16-byte
//! registers (Q4: the low and the high nibbles, Q4_0 less 8; Q5_0 with its fifth bits
//! spread by a table lookup and a bit test, less 16), then 32 products summed
//! into four `i32` lanes, lane `j` holding positions `4j .. 4j + 4` of each half. With
//! the Armv8.2 dot product that is two `SDOT`; without it (Cortex-A53, A72) four widening
//! multiplies (`SMULL`), two pairwise adds in 16 bits and two pairwise accumulates into 32
//! (`SADALP`), which put the very same positions in the very same lanes, so both forms
//! give the same bits (tested). Then one convert and one fused multiply-add by the
//! block's `d_w · d_x` into four `f32` lanes; Q4_1's `m_w · s_x` is summed apart, as the
//! portable kernel sums it. Four weight rows go together (their four half-precision
//! scales widened by one `FCVTL`), against one input row or four: each output's
//! operations are the same whatever the grouping, so rows split across threads and
//! inputs batched or not (`Model::decode_steps`) give bit-identical results.
//!
//! Not the portable kernel's bits (that one sums eight lanes, `l, l + 8, l + 16, l + 24`,
//! with a separate multiply and add): within rounding of them (`quant::tests`).
//!
//! [`run_f32_inputs`] is the design of the x86-64 AVX-512 and WebAssembly head kernels:
//! the inputs rounded to 16 bits per block of 32 (relative error under 2^-16 of the
//! block's largest magnitude), then per block and weight row the quants widened to 16
//! bits and multiplied into four `i32` lanes (`SMULL`/`SMLAL`, exact), converted and
//! scaled by `d_w · d_x`; four weight rows by up to four inputs a pass, each output's
//! operations the same whatever the grouping.
//!
//! `SDOT` and `FCVTL` are written as inline assembly: the dot-product intrinsics are not
//! stable in Rust, and the half-precision vector types are not either. The module's only
//! other unsafe code is the NEON loads, through pointers whose ranges are checked once
//! before the loops.
#![allow(unsafe_code)]
// With the K-quants alone (no Q4_0, Q4_1, Q8_0), the blocks-of-32 kernels are never taken.
#![cfg_attr(
    not(any(feature = "q4", feature = "q8_0")),
    allow(dead_code, unused_imports, unreachable_code, unused_variables)
)]

use core::arch::aarch64::{
    float32x4_t, int16x8_t, int32x4_t, int8x16_t, vaddvq_f32, vandq_u8, vcvtq_f32_s32, vdupq_n_f32,
    vdupq_n_s32, vdupq_n_s8, vdupq_n_u32, vdupq_n_u8, vfmaq_n_f32, vget_low_s8, vgetq_lane_f32,
    vld1_u16, vld1q_s8, vld1q_u8, vmull_high_s8, vmull_s8, vmulq_n_f32, vorrq_u8, vpadalq_s16,
    vpaddq_s16, vqtbl1q_u8, vreinterpretq_s8_u8, vreinterpretq_u8_u32, vshrq_n_u8, vsubq_s8,
    vtstq_u8,
};
use core::arch::asm;

use super::act::{ActivationType, Q8_1_BYTES};
use super::matmul::Problem;
use super::TensorType;
use crate::math::gemm::arm_cpu::{dotprod_available, neon_allowed};

/// Which block type a kernel reads (a const parameter: each type gets its own loop).
const Q8_0: u8 = 0;
const Q4_0: u8 = 1;
const Q4_1: u8 = 2;
const Q5_0: u8 = 3;

/// Weight rows per pass.
const ROWS: usize = 4;
/// Input rows per pass (a prompt, or decoding steps taken together).
const INPUTS: usize = 4;

/// Runs `p` (Q8_0, Q4_0, Q4_1 or Q5_0 weights, Q8_1 activations) on the NEON kernel: `false`
/// (nothing written) for any other type, inconsistent lengths, or kernels turned off by
/// `limit_kernels`; the caller then runs the portable kernel.
pub(super) fn run(p: &Problem<'_>, y: &mut [f32]) -> bool {
    run_with(p, y, dotprod_available())
}

/// [`run`] with the dot-product form allowed or not (tests take both on a CPU with it).
pub(super) fn run_with(p: &Problem<'_>, y: &mut [f32], dot: bool) -> bool {
    if !neon_allowed() {
        return false;
    }
    #[cfg(feature = "k-quants")]
    if p.a.kind == ActivationType::Q8K {
        return k_quants::run(p, y, dot && dotprod_available());
    }
    if p.a.kind != ActivationType::Q8_1 {
        return false;
    }
    let (kind, block) = match p.ty {
        #[cfg(feature = "q8_0")]
        TensorType::Q8_0 => (Q8_0, 34),
        #[cfg(feature = "q4")]
        TensorType::Q4_0 => (Q4_0, 18),
        #[cfg(feature = "q4")]
        TensorType::Q4_1 => (Q4_1, 20),
        #[cfg(feature = "q4")]
        TensorType::Q5_0 => (Q5_0, 22),
        _ => return false,
    };
    let Some(shape) = Shape::of(p, y, 32, block, Q8_1_BYTES) else {
        return false;
    };
    // SAFETY: `Shape::of` checked every range the kernels read and write; `SDOT` runs
    // only where the CPU has it (`dot` comes from `dotprod_available` or a test that
    // asked it first).
    unsafe {
        match (kind, dot && dotprod_available()) {
            (Q8_0, true) => block_rows_dot::<34, Q8_0>(p, y, &shape),
            (Q4_0, true) => block_rows_dot::<18, Q4_0>(p, y, &shape),
            (Q4_1, true) => block_rows_dot::<20, Q4_1>(p, y, &shape),
            (Q5_0, true) => block_rows_dot::<22, Q5_0>(p, y, &shape),
            (Q8_0, false) => block_rows::<34, Q8_0, false>(p, y, &shape),
            (Q4_0, false) => block_rows::<18, Q4_0, false>(p, y, &shape),
            (Q4_1, false) => block_rows::<20, Q4_1, false>(p, y, &shape),
            _ => block_rows::<22, Q5_0, false>(p, y, &shape),
        }
    }
    true
}

/// The sizes a kernel loops over, checked against the slices it reads and writes.
struct Shape {
    /// Weight rows.
    rows: usize,
    /// Blocks per row.
    blocks: usize,
    /// Bytes per weight row.
    row_bytes: usize,
    /// Bytes (or values) per input row.
    input_len: usize,
}

impl Shape {
    /// The shape of `p` with blocks of `len` values, `block` bytes per weight block and
    /// `input_block` bytes per input block (`len` for `f32` inputs, counted as values), or
    /// `None` if any row of the weights, the inputs or the outputs would fall outside its
    /// slice.
    fn of(
        p: &Problem<'_>,
        y: &[f32],
        len: usize,
        block: usize,
        input_block: usize,
    ) -> Option<Shape> {
        if p.cols == 0 || len == 0 || !p.cols.is_multiple_of(len) {
            return None;
        }
        let blocks = p.cols / len;
        let row_bytes = blocks.checked_mul(block)?;
        if p.row_bytes != row_bytes || !p.data.len().is_multiple_of(row_bytes) {
            return None;
        }
        let rows = p.data.len() / row_bytes;
        let input_len = blocks.checked_mul(input_block)?;
        let inputs = if p.a.kind == ActivationType::F32 {
            p.a.f32s.len()
        } else {
            p.a.bytes.len()
        };
        let outputs =
            p.a.n
                .checked_sub(1)?
                .checked_mul(p.y_stride)?
                .checked_add(rows)?;
        let fits = p.a.n.checked_mul(input_len)? <= inputs && outputs <= y.len();
        (fits && p.y_stride >= rows).then_some(Shape {
            rows,
            blocks,
            row_bytes,
            input_len,
        })
    }
}

/// `SDOT`: `acc` lane `j` plus the four products of bytes `4j .. 4j + 4` of `a` and `b`.
///
/// # Safety
/// The CPU has FEAT_DotProd; the caller is compiled with the `dotprod` target feature.
#[inline(always)]
unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: register operands only; the caller guarantees the instruction exists.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Four IEEE halves (bits) as `f32`, exactly (`FCVTL`, in every AArch64 CPU).
#[inline(always)]
fn halves(bits: &[u16; 4]) -> float32x4_t {
    let out: float32x4_t;
    // SAFETY: `vld1_u16` reads the four values of the array; FCVTL is Armv8.0 and reads
    // and writes registers only.
    unsafe {
        let v = vld1_u16(bits.as_ptr());
        asm!(
            "fcvtl {out:v}.4s, {v:v}.4h",
            out = lateout(vreg) out,
            v = in(vreg) v,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    out
}

/// Lane `r` (below 4) of `v`.
#[inline(always)]
fn lane(v: float32x4_t, r: usize) -> f32 {
    // SAFETY: NEON is part of every AArch64 CPU.
    unsafe {
        match r {
            0 => vgetq_lane_f32::<0>(v),
            1 => vgetq_lane_f32::<1>(v),
            2 => vgetq_lane_f32::<2>(v),
            _ => vgetq_lane_f32::<3>(v),
        }
    }
}

/// The little-endian `u16` at `at`.
///
/// # Safety
/// `at .. at + 2` is readable.
#[inline(always)]
unsafe fn read_u16(at: *const u8) -> u16 {
    // SAFETY: the caller's range; an unaligned read of plain bytes.
    u16::from_le_bytes(unsafe { at.cast::<[u8; 2]>().read_unaligned() })
}

/// The little-endian `u32` at `at`.
///
/// # Safety
/// `at .. at + 4` is readable.
#[inline(always)]
unsafe fn read_u32(at: *const u8) -> u32 {
    // SAFETY: the caller's range; an unaligned read of plain bytes.
    u32::from_le_bytes(unsafe { at.cast::<[u8; 4]>().read_unaligned() })
}

/// The little-endian `f32` at `at`.
///
/// # Safety
/// `at .. at + 4` is readable.
#[inline(always)]
unsafe fn read_f32(at: *const u8) -> f32 {
    // SAFETY: the caller's range; an unaligned read of plain bytes.
    f32::from_le_bytes(unsafe { at.cast::<[u8; 4]>().read_unaligned() })
}

/// Byte `k` of a Q5_0 block's 32 high bits that holds position `j`'s bit, for positions
/// 0-15 and 16-31; and that bit's mask within its byte.
const Q5_BYTE_LO: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
const Q5_BYTE_HI: [u8; 16] = [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3];
const Q5_BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];

/// A weight block's 32 quants as two vectors of `i8` (positions 0-15, 16-31).
///
/// # Safety
/// The block's `B` bytes at `wb` are readable.
#[inline(always)]
unsafe fn unpack<const T: u8>(wb: *const u8) -> (int8x16_t, int8x16_t) {
    // SAFETY: the caller's range (Q8_0: bytes 2-33; Q4_0: 2-17; Q4_1: 4-19; Q5_0: 2-21).
    unsafe {
        if T == Q8_0 {
            return (vld1q_s8(wb.add(2).cast()), vld1q_s8(wb.add(18).cast()));
        }
        let at = match T {
            Q4_1 => 4,
            Q5_0 => 6,
            _ => 2,
        };
        let nibbles = vld1q_u8(wb.add(at));
        let lo = vandq_u8(nibbles, vdupq_n_u8(0xf));
        let hi = vshrq_n_u8::<4>(nibbles);
        if T == Q5_0 {
            // The fifth bit of each quant: bit `j` of the 32 high bits for position
            // `j`, spread to a byte per position (0x10 or 0), then `q - 16`.
            let high = vreinterpretq_u8_u32(vdupq_n_u32(read_u32(wb.add(2))));
            let bit = vld1q_u8(Q5_BIT.as_ptr());
            let fifth = |bytes: &[u8; 16]| {
                let spread = vqtbl1q_u8(high, vld1q_u8(bytes.as_ptr()));
                vandq_u8(vtstq_u8(spread, bit), vdupq_n_u8(0x10))
            };
            let sixteen = vdupq_n_s8(16);
            return (
                vsubq_s8(
                    vreinterpretq_s8_u8(vorrq_u8(lo, fifth(&Q5_BYTE_LO))),
                    sixteen,
                ),
                vsubq_s8(
                    vreinterpretq_s8_u8(vorrq_u8(hi, fifth(&Q5_BYTE_HI))),
                    sixteen,
                ),
            );
        }
        let (lo, hi) = (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi));
        if T == Q4_0 {
            let eight = vdupq_n_s8(8);
            (vsubq_s8(lo, eight), vsubq_s8(hi, eight))
        } else {
            (lo, hi)
        }
    }
}

/// The 32 products of a weight block `(w0, w1)` and an input block `(x0, x1)` in four
/// `i32` lanes, lane `j` holding positions `4j .. 4j + 4` and `16 + 4j .. 20 + 4j`: two
/// `SDOT` with `DOT`, else the Armv8.0 form with the same lanes (a Q8_0 product is at
/// most 128 · 127, the activations staying within 127, so two fit an `i16`).
///
/// # Safety
/// With `DOT`, as [`sdot`].
#[inline(always)]
unsafe fn dot32<const DOT: bool>(
    w0: int8x16_t,
    w1: int8x16_t,
    x0: int8x16_t,
    x1: int8x16_t,
) -> int32x4_t {
    if DOT {
        // SAFETY: the caller's guarantee.
        return unsafe { sdot(sdot(vdupq_n_s32(0), w0, x0), w1, x1) };
    }
    let half = |w: int8x16_t, x: int8x16_t| -> int16x8_t {
        vpaddq_s16(
            vmull_s8(vget_low_s8(w), vget_low_s8(x)),
            vmull_high_s8(w, x),
        )
    };
    vpadalq_s16(vpadalq_s16(vdupq_n_s32(0), half(w0, x0)), half(w1, x1))
}

/// [`block_rows`] with `SDOT`.
///
/// # Safety
/// As [`block_rows`], and the CPU has FEAT_DotProd.
#[target_feature(enable = "dotprod")]
unsafe fn block_rows_dot<const B: usize, const T: u8>(p: &Problem<'_>, y: &mut [f32], s: &Shape) {
    // SAFETY: the caller's guarantees.
    unsafe { block_rows::<B, T, true>(p, y, s) }
}

/// Every output of `p` (`B`-byte blocks of type `T`): passes of [`ROWS`] weight rows (then
/// one at a time) against [`INPUTS`] input rows (then one at a time).
///
/// # Safety
/// `s` is `Shape::of(p, y, 32, B, Q8_1_BYTES)`; with `DOT`, as [`sdot`].
#[inline(always)]
unsafe fn block_rows<const B: usize, const T: u8, const DOT: bool>(
    p: &Problem<'_>,
    y: &mut [f32],
    s: &Shape,
) {
    let n = p.a.n;
    let mut r = 0;
    while r < s.rows {
        let mut t = 0;
        while t < n {
            // SAFETY: `r < rows` and `t < n`, and each pass reads at most the rows
            // `r .. r + R` and inputs `t .. t + I` it is given, within the checked shape.
            unsafe {
                match (s.rows - r >= ROWS, n - t >= INPUTS) {
                    (true, true) => pass::<B, T, DOT, ROWS, INPUTS>(p, y, s, r, t),
                    (true, false) => pass::<B, T, DOT, ROWS, 1>(p, y, s, r, t),
                    (false, true) => pass::<B, T, DOT, 1, INPUTS>(p, y, s, r, t),
                    (false, false) => pass::<B, T, DOT, 1, 1>(p, y, s, r, t),
                }
            }
            t += if n - t >= INPUTS { INPUTS } else { 1 };
        }
        r += if s.rows - r >= ROWS { ROWS } else { 1 };
    }
}

/// Weight rows `r0 .. r0 + R` against input rows `t0 .. t0 + I`.
///
/// # Safety
/// `r0 + R <= s.rows`, `t0 + I <= p.a.n`, `s` checked as in [`block_rows`].
#[inline(always)]
unsafe fn pass<const B: usize, const T: u8, const DOT: bool, const R: usize, const I: usize>(
    p: &Problem<'_>,
    y: &mut [f32],
    s: &Shape,
    r0: usize,
    t0: usize,
) {
    let zero = vdupq_n_f32(0.0);
    let mut acc = [[zero; I]; R];
    let mut mins = [[0f32; I]; R];
    // SAFETY (every pointer below): rows `r0 .. r0 + R` of `s.row_bytes` bytes lie in
    // `p.data`, inputs `t0 .. t0 + I` of `s.input_len` bytes in `p.a.bytes`, and block
    // `b < s.blocks` of each inside its row (`Shape::of`).
    let w = unsafe { p.data.as_ptr().add(r0 * s.row_bytes) };
    let a = unsafe { p.a.bytes.as_ptr().add(t0 * s.input_len) };
    for b in 0..s.blocks {
        let mut ws = [(vdupq_n_s8(0), vdupq_n_s8(0)); R];
        let (mut d, mut m) = ([0u16; 4], [0u16; 4]);
        for (r, wr) in ws.iter_mut().enumerate() {
            let wb = unsafe { w.add(r * s.row_bytes + b * B) };
            *wr = unsafe { unpack::<T>(wb) };
            d[r] = unsafe { read_u16(wb) };
            if T == Q4_1 {
                m[r] = unsafe { read_u16(wb.add(2)) };
            }
        }
        let d = halves(&d);
        let m = halves(&m);
        for t in 0..I {
            let ab = unsafe { a.add(t * s.input_len + b * Q8_1_BYTES) };
            let (dx, sx) = unsafe { (read_f32(ab), read_f32(ab.add(4))) };
            let (x0, x1) = unsafe { (vld1q_s8(ab.add(8).cast()), vld1q_s8(ab.add(24).cast())) };
            let dd = vmulq_n_f32(d, dx);
            for (r, &(w0, w1)) in ws.iter().enumerate() {
                let sums = unsafe { dot32::<DOT>(w0, w1, x0, x1) };
                acc[r][t] = vfmaq_n_f32(acc[r][t], vcvtq_f32_s32(sums), lane(dd, r));
                if T == Q4_1 {
                    mins[r][t] += lane(m, r) * sx;
                }
            }
        }
    }
    for (r, (acc, mins)) in acc.iter().zip(&mins).enumerate() {
        for (t, (&acc, &min)) in acc.iter().zip(mins).enumerate() {
            if let Some(o) = y.get_mut((t0 + t) * p.y_stride + r0 + r) {
                *o = vaddvq_f32(acc) + min;
            }
        }
    }
}

/// Inputs a row of the `f32`-input kernel may have (rounded to 16 bits on the stack).
#[cfg(feature = "q8_0")]
const SEGMENT: usize = 2048;

/// Runs `p` (Q8_0 weights, `f32` inputs: a decoder's output head) on the NEON kernel
/// (the module's second design): `false` (nothing written) for another type, rows
/// longer than [`SEGMENT`] or inconsistent lengths.
pub(super) fn run_f32_inputs(p: &Problem<'_>, y: &mut [f32]) -> bool {
    #[cfg(feature = "q8_0")]
    if p.ty == TensorType::Q8_0 && p.cols <= SEGMENT && neon_allowed() {
        if let Some(shape) = Shape::of(p, y, 32, 34, 32) {
            // SAFETY: `Shape::of` checked the ranges.
            unsafe { head_rows(p, y, &shape) };
            return true;
        }
    }
    let _ = (p, y);
    false
}

/// [`run_f32_inputs`] on checked Q8_0 rows.
///
/// # Safety
/// `s` is `Shape::of(p, y, 32, 34, 32)` and `p.cols <= SEGMENT`.
#[cfg(feature = "q8_0")]
unsafe fn head_rows(p: &Problem<'_>, y: &mut [f32], s: &Shape) {
    let mut q = [[0i16; SEGMENT]; INPUTS];
    let mut scales = [[0f32; SEGMENT / 32]; INPUTS];
    let mut t = 0;
    while t < p.a.n {
        let tn = if p.a.n - t >= INPUTS { INPUTS } else { 1 };
        for (i, (q, scales)) in q.iter_mut().zip(&mut scales).enumerate().take(tn) {
            if let Some(x) = p.a.f32s.get((t + i) * p.cols..(t + i + 1) * p.cols) {
                super::act::round_i16_blocks(x, q, scales);
            }
        }
        let mut r = 0;
        while r < s.rows {
            let rn = if s.rows - r >= ROWS { ROWS } else { 1 };
            // SAFETY: rows `r .. r + rn` and inputs `t .. t + tn` are inside the checked
            // shape; `q` and `scales` hold `s.blocks` blocks of each of those inputs.
            unsafe {
                match (rn, tn) {
                    (ROWS, INPUTS) => head_pass::<ROWS, INPUTS>(p, y, s, &q, &scales, r, t),
                    (ROWS, _) => head_pass::<ROWS, 1>(p, y, s, &q, &scales, r, t),
                    (_, INPUTS) => head_pass::<1, INPUTS>(p, y, s, &q, &scales, r, t),
                    _ => head_pass::<1, 1>(p, y, s, &q, &scales, r, t),
                }
            }
            r += rn;
        }
        t += tn;
    }
}

/// Weight rows `r0 .. r0 + R` of the head against inputs `t0 .. t0 + I`, rounded into
/// `q[..I]` and `scales[..I]`: each weight block is widened once for the `I` inputs.
///
/// # Safety
/// As [`head_rows`], `r0 + R <= s.rows` and `t0 + I <= p.a.n`.
#[cfg(feature = "q8_0")]
#[inline(always)]
unsafe fn head_pass<const R: usize, const I: usize>(
    p: &Problem<'_>,
    y: &mut [f32],
    s: &Shape,
    q: &[[i16; SEGMENT]; INPUTS],
    scales: &[[f32; SEGMENT / 32]; INPUTS],
    r0: usize,
    t0: usize,
) {
    use core::arch::aarch64::{
        vaddq_s32, vdupq_n_s16, vget_low_s16, vld1q_s16, vmlal_high_s16, vmlal_s16, vmovl_high_s8,
        vmovl_s8, vmull_s16,
    };
    let mut acc = [[vdupq_n_f32(0.0); I]; R];
    // SAFETY: the rows lie in `p.data` (`Shape::of`).
    let w = unsafe { p.data.as_ptr().add(r0 * s.row_bytes) };
    let zero = vdupq_n_s16(0);
    #[allow(clippy::needless_range_loop)] // `b` indexes the weights, the quants and the scales
    for b in 0..s.blocks {
        let mut d = [0u16; 4];
        let mut ws = [[(zero, zero); 2]; R];
        for (r, (d, ws)) in d.iter_mut().zip(&mut ws).enumerate() {
            // SAFETY: block `b` of row `r0 + r`.
            let wb = unsafe { w.add(r * s.row_bytes + b * 34) };
            *d = unsafe { read_u16(wb) };
            // The 32 quants widened to 16 bits: positions 0-7 and 8-15, 16-23 and 24-31.
            let (lo, hi) = unsafe { unpack::<Q8_0>(wb) };
            *ws = [
                (vmovl_s8(vget_low_s8(lo)), vmovl_high_s8(lo)),
                (vmovl_s8(vget_low_s8(hi)), vmovl_high_s8(hi)),
            ];
        }
        let d = halves(&d);
        for t in 0..I {
            // SAFETY: block `b` of input `t0 + t`'s rounding (`s.blocks * 32 <= SEGMENT`).
            let xs: [int16x8_t; 4] =
                core::array::from_fn(|k| unsafe { vld1q_s16(q[t].as_ptr().add(b * 32 + 8 * k)) });
            let dd = vmulq_n_f32(d, scales[t][b]);
            for (r, (acc, ws)) in acc.iter_mut().zip(&ws).enumerate() {
                let part = |(a, b): (int16x8_t, int16x8_t), x0: int16x8_t, x1: int16x8_t| {
                    let s = vmull_s16(vget_low_s16(a), vget_low_s16(x0));
                    let s = vmlal_high_s16(s, a, x0);
                    let s = vmlal_s16(s, vget_low_s16(b), vget_low_s16(x1));
                    vmlal_high_s16(s, b, x1)
                };
                let sums = vaddq_s32(part(ws[0], xs[0], xs[1]), part(ws[1], xs[2], xs[3]));
                acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(sums), lane(dd, r));
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (t, acc) in acc.iter().enumerate() {
            if let Some(o) = y.get_mut((t0 + t) * p.y_stride + r0 + r) {
                *o = vaddvq_f32(*acc);
            }
        }
    }
}

/// The K-quants (Q4_K, Q6_K) against Q8_K activations: per super-block of 256, the 4- or
/// 6-bit quants unpacked 16 or 32 at a time into `i8` registers and their products with
/// the activations summed by [`dot32`] (or one `SDOT` per 16), each sub-block's sum times
/// its integer scale accumulated in `i32`; Q4_K's minimums times the activation block's
/// sums per 16, also in integers. Both integer totals are exact, so they equal the
/// portable kernel's, and the super-block's `f32` contribution is the portable formula
/// (`d_x · (d · Σ − d_min · Σ_m)`, added in block order): the same bits as the portable
/// kernel (tested).
#[cfg(feature = "k-quants")]
mod k_quants {
    use core::arch::aarch64::{
        int32x4_t, int8x16_t, vaddvq_s32, vandq_u8, vdupq_n_s32, vdupq_n_s8, vdupq_n_u8, vld1q_s8,
        vld1q_u8, vmlaq_n_s32, vorrq_u8, vreinterpretq_s8_u8, vshlq_n_u8, vshrq_n_u8, vsubq_s8,
    };

    use super::super::act::Q8K_BYTES;
    use super::super::matmul::Problem;
    use super::super::TensorType;
    use super::{dot32, read_f32, read_u16, sdot, Shape};

    /// Runs `p` (Q4_K or Q6_K weights, Q8_K activations); `false` for another type or
    /// inconsistent lengths.
    pub(super) fn run(p: &Problem<'_>, y: &mut [f32], dot: bool) -> bool {
        let (q6, block) = match p.ty {
            TensorType::Q4_K => (false, 144),
            TensorType::Q6_K => (true, 210),
            _ => return false,
        };
        let Some(shape) = Shape::of(p, y, 256, block, Q8K_BYTES) else {
            return false;
        };
        // SAFETY: `Shape::of` checked every row's range; `SDOT` only where the CPU has it
        // (`dot` comes from `dotprod_available`).
        unsafe {
            match (q6, dot) {
                (false, true) => rows_dot::<144, false>(p, y, &shape),
                (true, true) => rows_dot::<210, true>(p, y, &shape),
                (false, false) => rows::<144, false, false>(p, y, &shape),
                (true, false) => rows::<210, true, false>(p, y, &shape),
            }
        }
        true
    }

    /// [`rows`] with `SDOT`.
    ///
    /// # Safety
    /// As [`rows`], and the CPU has FEAT_DotProd.
    #[target_feature(enable = "dotprod")]
    unsafe fn rows_dot<const B: usize, const Q6: bool>(p: &Problem<'_>, y: &mut [f32], s: &Shape) {
        // SAFETY: the caller's guarantees.
        unsafe { rows::<B, Q6, true>(p, y, s) }
    }

    /// The 16 products of `w` and `x` in four lanes.
    ///
    /// # Safety
    /// With `DOT`, as [`sdot`].
    #[inline(always)]
    unsafe fn dot16<const DOT: bool>(w: int8x16_t, x: int8x16_t) -> int32x4_t {
        // SAFETY: the caller's guarantee.
        unsafe {
            if DOT {
                sdot(vdupq_n_s32(0), w, x)
            } else {
                dot32::<false>(w, vdupq_n_s8(0), x, vdupq_n_s8(0))
            }
        }
    }

    /// Every output of `p`, one weight row and input row at a time (the block kernels'
    /// sharing of loads matters less here: each super-block's unpacking is most of the
    /// work).
    ///
    /// # Safety
    /// `s` is `Shape::of(p, y, 256, B, Q8K_BYTES)`; with `DOT`, as [`sdot`].
    #[inline(always)]
    unsafe fn rows<const B: usize, const Q6: bool, const DOT: bool>(
        p: &Problem<'_>,
        y: &mut [f32],
        s: &Shape,
    ) {
        for t in 0..p.a.n {
            for r in 0..s.rows {
                let mut out = 0f32;
                for k in 0..s.blocks {
                    // SAFETY: super-block `k` of row `r` and of input `t` lie inside the
                    // checked rows (`Shape::of`).
                    let (wb, ab) = unsafe {
                        (
                            p.data.as_ptr().add(r * s.row_bytes + k * B),
                            p.a.bytes.as_ptr().add(t * s.input_len + k * Q8K_BYTES),
                        )
                    };
                    // SAFETY: as above; the caller's guarantee for `DOT`.
                    out += unsafe {
                        if Q6 {
                            q6_k::<DOT>(wb, ab)
                        } else {
                            q4_k::<DOT>(wb, ab)
                        }
                    };
                }
                if let Some(o) = y.get_mut(t * p.y_stride + r) {
                    *o = out;
                }
            }
        }
    }

    /// The activation block's sum of positions `16j .. 16j + 16` (an `i16` after its 256
    /// quants).
    ///
    /// # Safety
    /// The 292 bytes at `ab` are readable.
    #[inline(always)]
    unsafe fn block_sum(ab: *const u8, j: usize) -> i32 {
        // SAFETY: the caller's range.
        i32::from(unsafe { read_u16(ab.add(260 + 2 * j)) } as i16)
    }

    /// One Q4_K super-block (144 bytes at `wb`) against one Q8_K block (292 at `ab`).
    ///
    /// # Safety
    /// Both ranges are readable; with `DOT`, as [`sdot`].
    #[inline(always)]
    unsafe fn q4_k<const DOT: bool>(wb: *const u8, ab: *const u8) -> f32 {
        // SAFETY (every read): the caller's ranges.
        let (d, dmin) = unsafe {
            (
                super::super::f16::to_f32(read_u16(wb)),
                super::super::f16::to_f32(read_u16(wb.add(2))),
            )
        };
        let mut packed = [0u8; 12];
        for (i, v) in packed.iter_mut().enumerate() {
            *v = unsafe { *wb.add(4 + i) };
        }
        let x = |at: usize| unsafe { vld1q_s8(ab.add(4 + at).cast()) };
        let mut acc = vdupq_n_s32(0);
        let mut summ = 0i32;
        let low = vdupq_n_u8(0xf);
        for g in 0..4 {
            let (v0, v1) =
                unsafe { (vld1q_u8(wb.add(16 + 32 * g)), vld1q_u8(wb.add(32 + 32 * g))) };
            let (sc_lo, m_lo) = super::super::q4_k::scale_min(2 * g, &packed);
            let (sc_hi, m_hi) = super::super::q4_k::scale_min(2 * g + 1, &packed);
            let nib = |v, hi: bool| {
                vreinterpretq_s8_u8(if hi {
                    vshrq_n_u8::<4>(v)
                } else {
                    vandq_u8(v, low)
                })
            };
            let base = 64 * g;
            let lo = unsafe { dot32::<DOT>(nib(v0, false), nib(v1, false), x(base), x(base + 16)) };
            let hi =
                unsafe { dot32::<DOT>(nib(v0, true), nib(v1, true), x(base + 32), x(base + 48)) };
            acc = vmlaq_n_s32(acc, lo, i32::from(sc_lo));
            acc = vmlaq_n_s32(acc, hi, i32::from(sc_hi));
            let sums = |j: usize| unsafe { block_sum(ab, j) + block_sum(ab, j + 1) };
            summ += sums(4 * g) * i32::from(m_lo) + sums(4 * g + 2) * i32::from(m_hi);
        }
        let sumi = vaddvq_s32(acc);
        let dx = unsafe { read_f32(ab) };
        dx * (d * sumi as f32 - dmin * summ as f32)
    }

    /// One Q6_K super-block (210 bytes at `wb`) against one Q8_K block (292 at `ab`).
    ///
    /// # Safety
    /// Both ranges are readable; with `DOT`, as [`sdot`].
    #[inline(always)]
    unsafe fn q6_k<const DOT: bool>(wb: *const u8, ab: *const u8) -> f32 {
        // SAFETY (every read): the caller's ranges (ql 0..128, qh 128..192, scales
        // 192..208, d 208..210).
        let d = unsafe { super::super::f16::to_f32(read_u16(wb.add(208))) };
        let low = vdupq_n_u8(0xf);
        let three = vdupq_n_u8(3);
        let thirty_two = vdupq_n_s8(32);
        let mut acc = vdupq_n_s32(0);
        for h in 0..2 {
            for l in [0, 16] {
                let (a, c, bits) = unsafe {
                    (
                        vld1q_u8(wb.add(64 * h + l)),
                        vld1q_u8(wb.add(64 * h + 32 + l)),
                        vld1q_u8(wb.add(128 + 32 * h + l)),
                    )
                };
                // Quant `k` of this 16: four bits from `a` or `c`, two from `bits`.
                let quants = [
                    vorrq_u8(vandq_u8(a, low), vshlq_n_u8::<4>(vandq_u8(bits, three))),
                    vorrq_u8(
                        vandq_u8(c, low),
                        vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<2>(bits), three)),
                    ),
                    vorrq_u8(
                        vshrq_n_u8::<4>(a),
                        vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<4>(bits), three)),
                    ),
                    vorrq_u8(vshrq_n_u8::<4>(c), vshlq_n_u8::<4>(vshrq_n_u8::<6>(bits))),
                ];
                for (k, q) in quants.into_iter().enumerate() {
                    let at = 128 * h + 32 * k + l;
                    let q = vsubq_s8(vreinterpretq_s8_u8(q), thirty_two);
                    let sums = unsafe { dot16::<DOT>(q, vld1q_s8(ab.add(4 + at).cast())) };
                    let sc = unsafe { *wb.add(192 + at / 16) } as i8;
                    acc = vmlaq_n_s32(acc, sums, i32::from(sc));
                }
            }
        }
        let sumi = vaddvq_s32(acc);
        let dx = unsafe { read_f32(ab) };
        let (dmin, summ) = (0f32, 0i32);
        dx * (d * sumi as f32 - dmin * summ as f32)
    }
}
