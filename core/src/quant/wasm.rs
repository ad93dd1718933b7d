//! The WebAssembly SIMD128 kernels for weights in blocks of 32, written with the
//! `core::arch::wasm32` intrinsics (no `unsafe`: loads go through fixed-size arrays):
//! Q8_0, Q4_0 and Q4_1 against Q8_1 activations (a decoder's linears, one token at a time;
//! MiniLM Q8_0's products), and Q8_0 against `f32` inputs (a decoder's output head).
//!
//! The first computes exactly what the portable kernel (`matmul::block_rows`) computes,
//! to the last bit, only with explicit vectors: per block, the 32 quants are unpacked in
//! two `v128` registers (the 16 low and the 16 high nibbles for Q4_0 and Q4_1) instead of
//! a stack array, and the 32 integer products are made by four widening multiplies
//! (`i16x8.extmul_{low,high}_i8x16`) whose lanes already fall where the portable kernel's
//! eight lanes put them (lane `l` sums positions `l`, `l + 8`, `l + 16`, `l + 24`; integer
//! sums are exact in any order), then two widenings to `i32`, two conversions and two
//! multiply-adds (a multiply, then an add, as the portable code). The loop structure
//! (chunks of weight rows, tiles of input rows) is the portable kernel's own
//! (`matmul::tiles`). This took SmolLM2-135M Q4_1's decoding in V8 from 28 to 42 tokens a
//! second (docs/wasm.md).
//!
//! The second ([`run_f32_inputs`]) is the x86-64 AVX-512 design: the inputs rounded to 16
//! bits per block, `i32x4.dot_i16x8_s` against the widened quants. It is not the portable
//! kernel's bits, but within that rounding of them; it made decoding a further 7-9%
//! faster (the head had been about a quarter of a step).
//!
//! Each output's additions run in block order whatever the row grouping, so rows split
//! across threads give the same bits.
//!
//! Tried and left out: four weight rows at a time against one input (each activation
//! block widened once for the four, their scales converted and multiplied as one vector):
//! within the noise of one row at a time; an `f32`-input head kernel with the portable
//! kernel's arithmetic (each block decoded to `f32`, eight lanes of multiply-adds): no
//! faster than what LLVM makes of the portable loop.

use core::arch::wasm32::{
    f32x4_add, f32x4_convert_i32x4, f32x4_extract_lane, f32x4_mul, f32x4_splat, i16x8_add,
    i16x8_extmul_high_i8x16, i16x8_extmul_low_i8x16, i32x4_add, i32x4_extend_high_i16x8,
    i32x4_extend_low_i16x8, i8x16_splat, i8x16_sub, u8x16, u8x16_shr, u8x16_splat, v128, v128_and,
};

use super::act::{ActivationType, Q8_1_BYTES};
use super::matmul::{tiles, Problem, TILE};
use super::{f16, le, TensorType};
use crate::math::gemm::simd128_allowed;

/// Which block type a kernel reads (a const parameter: each type gets its own loop).
const Q8_0: u8 = 0;
const Q4_0: u8 = 1;
const Q4_1: u8 = 2;

/// Runs `p` on the SIMD128 kernel if its activations are Q8_1, its weight type has one
/// and `limit_kernels` allows it; `false` leaves it to the portable kernel.
pub(super) fn run(p: &Problem<'_>, y: &mut [f32]) -> bool {
    if p.a.kind != ActivationType::Q8_1 || !simd128_allowed() {
        return false;
    }
    match p.ty {
        #[cfg(feature = "q8_0")]
        TensorType::Q8_0 => block_rows::<34, Q8_0>(p, y),
        #[cfg(feature = "q4")]
        TensorType::Q4_0 => block_rows::<18, Q4_0>(p, y),
        #[cfg(feature = "q4")]
        TensorType::Q4_1 => block_rows::<20, Q4_1>(p, y),
        _ => return false,
    }
    true
}

/// The 16 bytes at `b[at..]` as one vector (zeros past the end, which the callers'
/// fixed block sizes never reach).
#[inline(always)]
fn bytes16(b: &[u8], at: usize) -> v128 {
    match b.get(at..at + 16).map(<&[u8; 16]>::try_from) {
        Some(Ok(c)) => u8x16(
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11], c[12], c[13],
            c[14], c[15],
        ),
        _ => u8x16_splat(0),
    }
}

/// A weight block as `(q[0..16], q[16..32], d, m)`, value = `d * q + m`, the quants as
/// `i8` lanes: the portable `unpack` of its type.
#[inline(always)]
fn unpack<const B: usize, const T: u8>(wb: &[u8; B]) -> (v128, v128, f32, f32) {
    let d = f16::read(wb);
    if T == Q8_0 {
        return (bytes16(wb, 2), bytes16(wb, 18), d, 0.0);
    }
    let nibbles = bytes16(wb, if T == Q4_1 { 4 } else { 2 });
    let lo = v128_and(nibbles, u8x16_splat(0xf));
    let hi = u8x16_shr(nibbles, 4);
    if T == Q4_0 {
        let eight = i8x16_splat(8);
        (i8x16_sub(lo, eight), i8x16_sub(hi, eight), d, 0.0)
    } else {
        (lo, hi, d, f16::read(&wb[2..]))
    }
}

/// The eight lanes of `acc` summed in lane order, as the portable kernels sum theirs.
#[inline(always)]
fn lane_sum(acc: &[v128; 2]) -> f32 {
    let [a, b] = *acc;
    [
        f32x4_extract_lane::<0>(a),
        f32x4_extract_lane::<1>(a),
        f32x4_extract_lane::<2>(a),
        f32x4_extract_lane::<3>(a),
        f32x4_extract_lane::<0>(b),
        f32x4_extract_lane::<1>(b),
        f32x4_extract_lane::<2>(b),
        f32x4_extract_lane::<3>(b),
    ]
    .iter()
    .sum()
}

/// Blocks of 32 (`B` bytes, type `T`) against Q8_1 inputs: `matmul::block_rows`.
#[inline(always)]
fn block_rows<const B: usize, const T: u8>(p: &Problem<'_>, y: &mut [f32]) {
    let arow = p.cols / 32 * Q8_1_BYTES;
    let acts = p.a.bytes;
    tiles(p, y, |row, t0, tn, out| {
        let zero = f32x4_splat(0.0);
        let mut acc = [[zero; 2]; TILE];
        let mut mins = [0f32; TILE];
        for (b, wb) in row.chunks_exact(B).enumerate() {
            let Ok(wb) = <&[u8; B]>::try_from(wb) else {
                continue;
            };
            let (w_lo, w_hi, d, m) = unpack::<B, T>(wb);
            for (t, (acc, min)) in acc.iter_mut().zip(&mut mins).enumerate().take(tn) {
                let at = (t0 + t) * arow + b * Q8_1_BYTES;
                let Some(ab) = acts.get(at..at + Q8_1_BYTES) else {
                    continue;
                };
                let (x_lo, x_hi) = (bytes16(ab, 8), bytes16(ab, 24));
                // Lane j: positions j and j + 8 (then j + 16 and j + 24). A Q4 product is
                // at most 15 * 128 in size, so four fit an i16; a Q8_0 product at most
                // 128 * 127 (activations stay within 127), so two do.
                let front = i16x8_add(
                    i16x8_extmul_low_i8x16(w_lo, x_lo),
                    i16x8_extmul_high_i8x16(w_lo, x_lo),
                );
                let back = i16x8_add(
                    i16x8_extmul_low_i8x16(w_hi, x_hi),
                    i16x8_extmul_high_i8x16(w_hi, x_hi),
                );
                let (l0, l1) = if T == Q8_0 {
                    (
                        i32x4_add(i32x4_extend_low_i16x8(front), i32x4_extend_low_i16x8(back)),
                        i32x4_add(
                            i32x4_extend_high_i16x8(front),
                            i32x4_extend_high_i16x8(back),
                        ),
                    )
                } else {
                    let s = i16x8_add(front, back);
                    (i32x4_extend_low_i16x8(s), i32x4_extend_high_i16x8(s))
                };
                let dd = f32x4_splat(d * f32::from_le_bytes(le(&ab[..4])));
                acc[0] = f32x4_add(acc[0], f32x4_mul(dd, f32x4_convert_i32x4(l0)));
                acc[1] = f32x4_add(acc[1], f32x4_mul(dd, f32x4_convert_i32x4(l1)));
                if T == Q4_1 {
                    *min += m * f32::from_le_bytes(le(&ab[4..8]));
                }
            }
        }
        for ((o, acc), m) in out.iter_mut().zip(&acc).zip(&mins) {
            *o = lane_sum(acc) + m;
        }
    });
}

/// Inputs a row of the `f32`-input kernel may have (rounded to 16 bits on the stack).
#[cfg(feature = "q8_0")]
const SEGMENT: usize = 2048;

/// Runs `p` (Q8_0 weights, `f32` inputs: a decoder's output head) on the SIMD128 kernel,
/// as the x86-64 AVX-512 kernel does: the inputs rounded to 16 bits per block of 32
/// (scale = the block's largest magnitude / 32767, half away from zero: a relative error
/// under 2^-16 of that value, 256 times finer than the 8-bit activations of the other
/// products, so the logits keep the float model's ranking), then per block and weight
/// row the 32 quants widened to 16 bits meet them in four `i32x4.dot_i16x8_s` (exact
/// integer sums), converted and scaled by `d_w · d_x` into four lanes. `false` (nothing
/// written) for another type or rows longer than [`SEGMENT`]. Not the portable kernel's
/// bits (it multiplies the `f32` inputs): within the rounding above of them
/// (`wasm/tests/web.rs`). Each output's additions run in block order, whatever the rows
/// split.
pub(super) fn run_f32_inputs(p: &Problem<'_>, y: &mut [f32]) -> bool {
    #[cfg(feature = "q8_0")]
    if p.ty == TensorType::Q8_0 && p.cols <= SEGMENT && simd128_allowed() {
        head_rows(p, y);
        return true;
    }
    let _ = (p, y);
    false
}

/// [`run_f32_inputs`] on checked Q8_0 rows.
#[cfg(feature = "q8_0")]
fn head_rows(p: &Problem<'_>, y: &mut [f32]) {
    use core::arch::wasm32::{
        i16x8, i16x8_extend_high_i8x16, i16x8_extend_low_i8x16, i32x4_dot_i16x8,
    };
    let rb = p.row_bytes.max(1);
    let blocks = p.cols / 32;
    let mut q = [0i16; SEGMENT];
    let mut scales = [0f32; SEGMENT / 32];
    for t in 0..p.a.n {
        let Some(x) = p.a.f32s.get(t * p.cols..(t + 1) * p.cols) else {
            continue;
        };
        super::act::round_i16_blocks(x, &mut q, &mut scales);
        // The inputs as vectors, four per block (positions 8k .. 8k + 8).
        let xs = &q[..blocks * 32];
        for (r, row) in p.data.chunks_exact(rb).enumerate() {
            let mut acc = f32x4_splat(0.0);
            for ((wb, xb), &dx) in row.chunks_exact(34).zip(xs.chunks_exact(32)).zip(&scales) {
                let Ok(wb) = <&[u8; 34]>::try_from(wb) else {
                    continue;
                };
                let (lo, hi) = (bytes16(wb, 2), bytes16(wb, 18));
                let x = |k: usize| {
                    let v = &xb[8 * k..8 * k + 8];
                    i16x8(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7])
                };
                let s = i32x4_add(
                    i32x4_add(
                        i32x4_dot_i16x8(i16x8_extend_low_i8x16(lo), x(0)),
                        i32x4_dot_i16x8(i16x8_extend_high_i8x16(lo), x(1)),
                    ),
                    i32x4_add(
                        i32x4_dot_i16x8(i16x8_extend_low_i8x16(hi), x(2)),
                        i32x4_dot_i16x8(i16x8_extend_high_i8x16(hi), x(3)),
                    ),
                );
                let d = f32x4_splat(f16::read(wb) * dx);
                acc = f32x4_add(acc, f32x4_mul(d, f32x4_convert_i32x4(s)));
            }
            if let Some(o) = y.get_mut(t * p.y_stride + r) {
                *o = (f32x4_extract_lane::<0>(acc) + f32x4_extract_lane::<1>(acc))
                    + (f32x4_extract_lane::<2>(acc) + f32x4_extract_lane::<3>(acc));
            }
        }
    }
}
