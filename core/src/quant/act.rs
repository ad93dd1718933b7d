//! Activations as the kernels read them: `f32` rows for the float weight types, rows of
//! 8-bit blocks for the block-quantized ones (quantized once per input row, then reused
//! for every weight row).

use super::TensorType;

/// How a matrix product reads its input rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationType {
    /// `f32` values as given (F32, F16 and BF16 weights).
    F32,
    /// Blocks of 32: an `f32` scale `d`, an `f32` sum `s = d * Σ q` and 32 `i8` quants
    /// `q = round(x / d)`, `d = max |x| / 127` (40 bytes; ggml's `q8_1` with `f32`
    /// instead of `f16` scales). For Q4_0, Q4_1, Q5_0 and Q8_0 weights; Q4_1's minimum
    /// multiplies `s`.
    Q8_1,
    /// Super-blocks of 256: an `f32` scale `d`, 256 `i8` quants and the 16 sums of each
    /// 16 quants as `i16` (292 bytes; ggml's `q8_K`). For Q4_K and Q6_K weights.
    Q8K,
}

/// Bytes of one [`ActivationType::Q8_1`] block.
pub(crate) const Q8_1_BYTES: usize = 40;
/// Bytes of one [`ActivationType::Q8K`] block.
pub(crate) const Q8K_BYTES: usize = 4 + 256 + 32;

impl ActivationType {
    /// The activation type a weight of type `ty` multiplies (`None` for `I32`).
    pub const fn for_weight(ty: TensorType) -> Option<Self> {
        Some(match ty {
            TensorType::F32 | TensorType::F16 | TensorType::BF16 => ActivationType::F32,
            TensorType::Q4_0 | TensorType::Q4_1 | TensorType::Q5_0 | TensorType::Q8_0 => {
                ActivationType::Q8_1
            }
            TensorType::Q4_K | TensorType::Q6_K => ActivationType::Q8K,
            TensorType::I32 => return None,
        })
    }

    /// `(values, bytes)` per block (`(1, 0)` for `F32`, which needs no scratch).
    pub const fn block(self) -> (usize, usize) {
        match self {
            ActivationType::F32 => (1, 0),
            ActivationType::Q8_1 => (32, Q8_1_BYTES),
            ActivationType::Q8K => (256, Q8K_BYTES),
        }
    }

    /// Scratch bytes for `n` rows of `cols` values, or `None` if `cols` is not a whole
    /// number of blocks or the size overflows.
    pub const fn scratch_len(self, cols: usize, n: usize) -> Option<usize> {
        let (len, bytes) = self.block();
        if !cols.is_multiple_of(len) {
            return None;
        }
        match (cols / len).checked_mul(bytes) {
            Some(row) => row.checked_mul(n),
            None => None,
        }
    }
}

/// `n` input rows of `cols` values, ready for the products of one weight type
/// ([`quantize_activations`](super::quantize_activations)).
#[derive(Debug, Clone, Copy)]
pub struct Activations<'a> {
    pub(super) kind: ActivationType,
    pub(super) cols: usize,
    pub(super) n: usize,
    /// `n * cols` values for `F32`; `n` rows of blocks otherwise.
    pub(super) f32s: &'a [f32],
    #[cfg_attr(
        not(any(feature = "q4", feature = "q8_0", feature = "k-quants")),
        allow(dead_code)
    )]
    pub(super) bytes: &'a [u8],
}

impl Activations<'_> {
    /// The format.
    pub fn kind(&self) -> ActivationType {
        self.kind
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.n
    }
}

/// `v` rounded half away from zero to `i8` (callers keep `|v| <= 127`).
#[inline(always)]
fn round_i8(v: f32) -> i8 {
    let r = if v >= 0.0 { v + 0.5 } else { v - 0.5 };
    r as i8
}

/// The scale of a block with largest magnitude `amax`, and its inverse (0 for an
/// all-zero block).
#[inline(always)]
fn scale(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    (d, if d > 0.0 { 1.0 / d } else { 0.0 })
}

/// `x` (whole blocks of 32) rounded to 16 bits per block into `q`, each block's scale into
/// `scales`: scale = the block's largest magnitude / 32767, values half away from zero (a
/// relative error under 2^-16 of that magnitude). The inputs of the `f32`-input head
/// kernels (x86-64 AVX-512, WebAssembly SIMD128, AArch64 NEON).
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    all(target_arch = "wasm32", target_feature = "simd128")
))]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // wasm: with q8_0 only
#[inline(always)]
pub(super) fn round_i16_blocks(x: &[f32], q: &mut [i16], scales: &mut [f32]) {
    for ((xb, qb), d) in x
        .chunks_exact(32)
        .zip(q.chunks_exact_mut(32))
        .zip(scales.iter_mut())
    {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        *d = amax / 32767.0;
        let inv = if *d > 0.0 { 1.0 / *d } else { 0.0 };
        for (q, &v) in qb.iter_mut().zip(xb) {
            // Half away from zero, |v · inv| <= 32767.
            let r = v * inv;
            *q = (if r >= 0.0 { r + 0.5 } else { r - 0.5 }) as i16;
        }
    }
}

/// Quantizes one row (`x.len()` a multiple of 32) into Q8_1 blocks in `out`.
pub(super) fn quantize_q8_1(x: &[f32], out: &mut [u8]) {
    for (x, b) in x.chunks_exact(32).zip(out.chunks_exact_mut(Q8_1_BYTES)) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let (d, id) = scale(amax);
        let (head, qs) = b.split_at_mut(8);
        let mut sum = 0i32;
        for (q, &v) in qs.iter_mut().zip(x) {
            let i = round_i8(v * id);
            sum += i32::from(i);
            *q = i as u8;
        }
        head[..4].copy_from_slice(&d.to_le_bytes());
        head[4..].copy_from_slice(&(d * sum as f32).to_le_bytes());
    }
}

/// Quantizes one row (`x.len()` a multiple of 256) into Q8_K blocks in `out`.
pub(super) fn quantize_q8_k(x: &[f32], out: &mut [u8]) {
    for (x, b) in x.chunks_exact(256).zip(out.chunks_exact_mut(Q8K_BYTES)) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let (d, id) = scale(amax);
        let (head, rest) = b.split_at_mut(4);
        head.copy_from_slice(&d.to_le_bytes());
        let (qs, sums) = rest.split_at_mut(256);
        for ((q16, x16), s) in qs
            .chunks_exact_mut(16)
            .zip(x.chunks_exact(16))
            .zip(sums.chunks_exact_mut(2))
        {
            let mut sum = 0i16;
            for (q, &v) in q16.iter_mut().zip(x16) {
                let i = round_i8(v * id);
                sum += i16::from(i);
                *q = i as u8;
            }
            s.copy_from_slice(&sum.to_le_bytes());
        }
    }
}
