//! Tensor element types and the kernels that read them in place: one table of the
//! types ([`TensorType`], [`TYPES`]), one module per type with its `#[repr(C)]` storage
//! block, row decoding to `f32` and dot products, and the matrix products the
//! transformer runtimes call ([`QMatrix`], [`matmul`], [`matmul_prepared`]).
//!
//! Weights are never copied or dequantized as a matrix: each kernel reads the blocks
//! where they lie (a memory map, flash, an `ArrayBuffer`), at any alignment. For the
//! block-quantized types the activations are quantized once per input row to 8 bits
//! ([`ActivationType`]), into a caller-provided byte scratch, and reused for every weight
//! row, as llama.cpp does; docs/runtime.md ("Quantized kernels") gives what that costs in
//! accuracy and the measured speeds.
//!
//! | ggml code | name | block | bytes | feature |
//! |---|---|---|---|---|
//! | 0 | F32 | 1 | 4 | always |
//! | 1 | F16 | 1 | 2 | `f16` |
//! | 2 | Q4_0 | 32 | 18 | `q4` |
//! | 3 | Q4_1 | 32 | 20 | `q4` |
//! | 6 | Q5_0 | 32 | 22 | `q4` |
//! | 8 | Q8_0 | 32 | 34 | `q8_0` |
//! | 12 | Q4_K | 256 | 144 | `k-quants` |
//! | 14 | Q6_K | 256 | 210 | `k-quants` |
//! | 26 | I32 | 1 | 4 | always (labels, not weights) |
//! | 30 | BF16 | 1 | 2 | `bf16` |
//!
//! A type whose feature is off is refused by the GGUF reader with
//! [`Error::UnknownTensorType`].

mod act;
#[cfg(all(
    target_arch = "aarch64",
    any(feature = "q4", feature = "q8_0", feature = "k-quants")
))]
mod arm;
mod bf16;
mod f16;
/// The exact half-to-float and the rounding float-to-half conversions, for code outside
/// the module (a half-precision key/value cache; tests, the reflector kernel under Miri).
pub(crate) use f16::{from_f32 as f32_to_f16, to_f32 as f16_to_f32};
mod f32;
mod matmul;
#[cfg(feature = "q4")]
mod q4_0;
#[cfg(feature = "q4")]
mod q4_1;
#[cfg(feature = "k-quants")]
mod q4_k;
#[cfg(feature = "q4")]
mod q5_0;
#[cfg(feature = "k-quants")]
mod q6_k;
#[cfg(feature = "q8_0")]
mod q8_0;
#[cfg(feature = "k-quants")]
mod q8_k;
#[cfg(all(
    target_arch = "wasm32",
    target_feature = "simd128",
    any(feature = "q4", feature = "q8_0")
))]
mod wasm;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::{Error, Result};

pub use act::{ActivationType, Activations};
pub use matmul::{
    activation_scratch_len, matmul, matmul_f32_inputs, matmul_prepared, matmul_strided,
    quantize_activations, QMatrix,
};
#[cfg(any(feature = "q8_0", feature = "q4"))]
pub(crate) use matmul::{batch_kernel, matmul_batch};
#[cfg(any(feature = "q8_0", feature = "q4", feature = "k-quants"))]
pub(crate) use matmul::{matmul_decode_then, matmul_then};

#[cfg(feature = "q4")]
pub use q4_0::BlockQ4_0;
#[cfg(feature = "q4")]
pub use q4_1::BlockQ4_1;
#[cfg(feature = "k-quants")]
pub use q4_k::BlockQ4K;
#[cfg(feature = "q4")]
pub use q5_0::BlockQ5_0;
#[cfg(feature = "k-quants")]
pub use q6_k::BlockQ6K;
#[cfg(feature = "q8_0")]
pub use q8_0::BlockQ8_0;

/// Elements per Q8_0 block.
pub const Q8_0_BLOCK_LEN: usize = 32;
/// Bytes per Q8_0 block: an `f16` scale, then 32 `i8` quants.
pub const Q8_0_BLOCK_BYTES: usize = 34;

/// A tensor element type (the ggml type code of a GGUF tensor info). Every variant has
/// one row in [`TYPES`]; which ones a build reads depends on its cargo features
/// ([`TensorType::is_compiled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)] // ggml's names
pub enum TensorType {
    /// ggml `0`: little-endian `f32`.
    F32,
    /// ggml `1`: little-endian IEEE half.
    F16,
    /// ggml `2`: blocks of 32, an `f16` scale `d` then 16 bytes of 4-bit quants `q`;
    /// value = `d * (q - 8)`.
    Q4_0,
    /// ggml `3`: blocks of 32, `f16` scale `d` and minimum `m`, then 16 bytes of 4-bit
    /// quants `q`; value = `d * q + m`.
    Q4_1,
    /// ggml `6`: blocks of 32, an `f16` scale `d`, 32 high bits, then 16 bytes of low
    /// nibbles; value = `d * (q - 16)` with `q` the 5-bit quant (what llama-quantize
    /// writes for Q4_K files' rows that are not a multiple of 256 long).
    Q5_0,
    /// ggml `8`: blocks of 32 values, each block an `f16` scale `d` then 32 `i8`
    /// quants `q`; value = `d * q`. The innermost dimension is a multiple of 32.
    Q8_0,
    /// ggml `12`: super-blocks of 256 in 8 sub-blocks of 32 with 6-bit scales and
    /// minimums, 4-bit quants.
    Q4_K,
    /// ggml `14`: super-blocks of 256 in 16 sub-blocks of 16 with `i8` scales, 6-bit
    /// quants.
    Q6_K,
    /// ggml `26`: little-endian `i32` (label and index tensors).
    I32,
    /// ggml `30`: bfloat16, the upper half of an `f32`.
    BF16,
}

/// One row of the type table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeInfo {
    /// The type.
    pub ty: TensorType,
    /// ggml's type code.
    pub ggml_code: u32,
    /// ggml's name (`"Q4_K"`).
    pub name: &'static str,
    /// Elements per storage block (1 for scalar types; a power of two).
    pub block_len: usize,
    /// Bytes per storage block.
    pub block_bytes: usize,
    /// Whether this build reads the type (its cargo feature is on).
    pub compiled: bool,
}

/// The one table of tensor types: code, name, block shape and whether this build reads
/// it. Everything that names, sizes or refuses a type reads it from here.
pub const TYPES: [TypeInfo; 10] = [
    row(TensorType::F32, 0, "F32", 1, 4, true),
    row(TensorType::F16, 1, "F16", 1, 2, cfg!(feature = "f16")),
    row(TensorType::Q4_0, 2, "Q4_0", 32, 18, cfg!(feature = "q4")),
    row(TensorType::Q4_1, 3, "Q4_1", 32, 20, cfg!(feature = "q4")),
    row(TensorType::Q5_0, 6, "Q5_0", 32, 22, cfg!(feature = "q4")),
    row(TensorType::Q8_0, 8, "Q8_0", 32, 34, cfg!(feature = "q8_0")),
    row(
        TensorType::Q4_K,
        12,
        "Q4_K",
        256,
        144,
        cfg!(feature = "k-quants"),
    ),
    row(
        TensorType::Q6_K,
        14,
        "Q6_K",
        256,
        210,
        cfg!(feature = "k-quants"),
    ),
    row(TensorType::I32, 26, "I32", 1, 4, true),
    row(TensorType::BF16, 30, "BF16", 1, 2, cfg!(feature = "bf16")),
];

const fn row(
    ty: TensorType,
    ggml_code: u32,
    name: &'static str,
    block_len: usize,
    block_bytes: usize,
    compiled: bool,
) -> TypeInfo {
    TypeInfo {
        ty,
        ggml_code,
        name,
        block_len,
        block_bytes,
        compiled,
    }
}

// The table is in variant order, so `info` is an index, and block lengths are powers of
// two (sizes divide by shifting: no 64-bit division routine on 32-bit targets).
const _: () = {
    let mut i = 0;
    while i < TYPES.len() {
        assert!(TYPES[i].ty as usize == i);
        assert!(TYPES[i].block_len.is_power_of_two());
        i += 1;
    }
};

impl TensorType {
    /// The type's row of [`TYPES`].
    pub const fn info(self) -> &'static TypeInfo {
        &TYPES[self as usize]
    }

    /// The type with ggml code `code` if this build reads it, else `None` (a known
    /// type whose feature is off is `None` too: see [`TensorType::from_ggml_any`]).
    pub const fn from_ggml(code: u32) -> Option<Self> {
        match Self::from_ggml_any(code) {
            Some(t) if t.info().compiled => Some(t),
            _ => None,
        }
    }

    /// The type with ggml code `code` whether or not this build reads it.
    pub const fn from_ggml_any(code: u32) -> Option<Self> {
        let mut i = 0;
        while i < TYPES.len() {
            if TYPES[i].ggml_code == code {
                return Some(TYPES[i].ty);
            }
            i += 1;
        }
        None
    }

    /// The ggml type code.
    pub const fn ggml_code(self) -> u32 {
        self.info().ggml_code
    }

    /// ggml's name of the type (`"F32"`, `"Q8_0"`, ...).
    pub const fn name(self) -> &'static str {
        self.info().name
    }

    /// Elements per storage block (32 for Q4_0, Q4_1, Q5_0, Q8_0; 256 for K-quants; 1
    /// otherwise).
    pub const fn block_len(self) -> usize {
        self.info().block_len
    }

    /// Bytes per storage block.
    pub const fn block_bytes(self) -> usize {
        self.info().block_bytes
    }

    /// Whether this build reads the type.
    pub const fn is_compiled(self) -> bool {
        self.info().compiled
    }

    /// Bytes that `elements` values occupy, or `None` if `elements` is not a whole
    /// number of blocks or the size overflows `u64`.
    pub const fn byte_len(self, elements: u64) -> Option<u64> {
        let shift = self.block_len().trailing_zeros();
        if elements & (self.block_len() as u64 - 1) != 0 {
            return None;
        }
        (elements >> shift).checked_mul(self.block_bytes() as u64)
    }

    /// Bytes of one row of `cols` values, or `None` if `cols` is not a whole number of
    /// blocks or the size overflows.
    pub const fn row_bytes(self, cols: usize) -> Option<usize> {
        let shift = self.block_len().trailing_zeros();
        if cols & (self.block_len() - 1) != 0 {
            return None;
        }
        (cols >> shift).checked_mul(self.block_bytes())
    }

    /// True for the types [`decode_f32`] reads (all but `I32`).
    pub const fn is_float(self) -> bool {
        !matches!(self, TensorType::I32)
    }
}

impl core::fmt::Display for TensorType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Writes the names of the types this build reads, comma-separated (for error texts).
pub fn write_supported(f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    let mut first = true;
    for t in TYPES.iter().filter(|t| t.compiled) {
        if !first {
            f.write_str(", ")?;
        }
        f.write_str(t.name)?;
        first = false;
    }
    Ok(())
}

/// Decodes elements `start .. start + out.len()` (flat, row-major) of a tensor of type
/// `ty` with `elements` values stored in `data` into `out`.
///
/// F32, F16 and BF16 widen exactly; the block types give their reference dequantization
/// (`d * q` and so on, in `f32`), a whole block at a time where the run covers whole
/// blocks.
///
/// # Errors
/// [`Error::LengthMismatch`] (`expected` = `elements`, `found` = end of the run) if the
/// run does not lie inside the tensor; [`Error::TensorOutOfRange`] (tensor `index`) if
/// `data` is shorter than the run; [`Error::UnknownTensorType`] for `I32` and for types
/// this build does not read.
pub fn decode_f32(
    index: u32,
    ty: TensorType,
    elements: usize,
    data: &[u8],
    start: usize,
    out: &mut [f32],
) -> Result<()> {
    let end = match start.checked_add(out.len()) {
        Some(end) if end <= elements => end,
        _ => {
            return Err(Error::LengthMismatch {
                expected: elements,
                found: start.saturating_add(out.len()),
            })
        }
    };
    let bad = Error::TensorOutOfRange { tensor: index };
    match ty {
        TensorType::F32 => f32::decode(byte_run(data, start, end, 4).ok_or(bad)?, out),
        #[cfg(feature = "f16")]
        TensorType::F16 => f16::decode(byte_run(data, start, end, 2).ok_or(bad)?, out),
        #[cfg(feature = "bf16")]
        TensorType::BF16 => bf16::decode(byte_run(data, start, end, 2).ok_or(bad)?, out),
        #[cfg(feature = "q8_0")]
        TensorType::Q8_0 => {
            decode_blocks::<32, 34>(data, start, out, q8_0::decode_block).ok_or(bad)?
        }
        #[cfg(feature = "q4")]
        TensorType::Q4_0 => {
            decode_blocks::<32, 18>(data, start, out, q4_0::decode_block).ok_or(bad)?
        }
        #[cfg(feature = "q4")]
        TensorType::Q4_1 => {
            decode_blocks::<32, 20>(data, start, out, q4_1::decode_block).ok_or(bad)?
        }
        #[cfg(feature = "q4")]
        TensorType::Q5_0 => {
            decode_blocks::<32, 22>(data, start, out, q5_0::decode_block).ok_or(bad)?
        }
        #[cfg(feature = "k-quants")]
        TensorType::Q4_K => {
            decode_blocks::<256, 144>(data, start, out, q4_k::decode_block).ok_or(bad)?
        }
        #[cfg(feature = "k-quants")]
        TensorType::Q6_K => {
            decode_blocks::<256, 210>(data, start, out, q6_k::decode_block).ok_or(bad)?
        }
        // I32, and the types whose features are off (never parsed then).
        #[allow(unreachable_patterns)]
        _ => {
            return Err(Error::UnknownTensorType {
                tensor: index,
                ggml_type: ty.ggml_code(),
            })
        }
    }
    Ok(())
}

/// Bytes of elements `start..end` at `size` bytes each.
pub(crate) fn byte_run(data: &[u8], start: usize, end: usize, size: usize) -> Option<&[u8]> {
    data.get(start.checked_mul(size)?..end.checked_mul(size)?)
}

/// A fixed-size array from a slice whose length the caller already checked (zeros
/// otherwise, never a panic).
#[inline(always)]
pub(crate) fn le<const N: usize>(c: &[u8]) -> [u8; N] {
    <[u8; N]>::try_from(c).unwrap_or([0; N])
}

/// Decodes elements `start .. start + out.len()` of blocks of `L` values in `B` bytes,
/// one block at a time through `block` (into a stack buffer where the run covers part
/// of a block).
#[allow(dead_code)] // unused when every block type is compiled out
fn decode_blocks<const L: usize, const B: usize>(
    data: &[u8],
    start: usize,
    out: &mut [f32],
    block: fn(&[u8; B], &mut [f32; L]),
) -> Option<()> {
    let mut index = start / L;
    let mut within = start % L;
    let mut out = out;
    let mut tmp = [0f32; L];
    while !out.is_empty() {
        let at = index.checked_mul(B)?;
        let bytes: &[u8; B] = data.get(at..at.checked_add(B)?)?.try_into().ok()?;
        let n = out.len().min(L - within);
        let (head, tail) = out.split_at_mut(n);
        match <&mut [f32; L]>::try_from(&mut *head) {
            Ok(whole) => block(bytes, whole),
            Err(_) => {
                block(bytes, &mut tmp);
                head.copy_from_slice(tmp.get(within..within + n)?);
            }
        }
        out = tail;
        index = index.checked_add(1)?;
        within = 0;
    }
    Some(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failure is a panic with its location
mod tests;
