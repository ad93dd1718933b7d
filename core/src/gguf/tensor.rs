//! Tensor infos ([`TensorInfo`], [`TensorType`]) and decoding of tensor data into
//! caller buffers.

use super::cursor::{off, Cursor};
use super::{MAX_NAME_LEN, MAX_RANK};
use crate::{Error, Result};
#[cfg(any(feature = "f16", feature = "q8_0"))]
use half::f16;

/// Elements per Q8_0 block.
pub const Q8_0_BLOCK_LEN: usize = 32;
/// Bytes per Q8_0 block: an `f16` scale, then 32 `i8` quants.
pub const Q8_0_BLOCK_BYTES: usize = 34;

/// A tensor data type the reader supports (the ggml type code of a tensor info).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorType {
    /// ggml `0`: little-endian `f32`.
    F32,
    /// ggml `1`: little-endian IEEE half.
    F16,
    /// ggml `8`: blocks of 32 values, each block an `f16` scale `d` then 32 `i8`
    /// quants `q`; value = `d * q`. The innermost dimension is a multiple of 32.
    Q8_0,
    /// ggml `26`: little-endian `i32` (label and index tensors).
    I32,
    /// ggml `30`: bfloat16, the upper half of an `f32`.
    BF16,
}

impl TensorType {
    /// The type with ggml code `code`, or `None` for a type this reader does not read
    /// (F16, Q8_0 and BF16 only with their cargo features, which are on by default).
    pub const fn from_ggml(code: u32) -> Option<Self> {
        Some(match code {
            0 => TensorType::F32,
            #[cfg(feature = "f16")]
            1 => TensorType::F16,
            #[cfg(feature = "q8_0")]
            8 => TensorType::Q8_0,
            26 => TensorType::I32,
            #[cfg(feature = "bf16")]
            30 => TensorType::BF16,
            _ => return None,
        })
    }

    /// The ggml type code.
    pub const fn ggml_code(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q8_0 => 8,
            TensorType::I32 => 26,
            TensorType::BF16 => 30,
        }
    }

    /// ggml's name of the type (`"F32"`, `"Q8_0"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            TensorType::F32 => "F32",
            TensorType::F16 => "F16",
            TensorType::Q8_0 => "Q8_0",
            TensorType::I32 => "I32",
            TensorType::BF16 => "BF16",
        }
    }

    /// Elements per storage block (32 for Q8_0, 1 otherwise).
    pub const fn block_len(self) -> usize {
        match self {
            TensorType::Q8_0 => Q8_0_BLOCK_LEN,
            _ => 1,
        }
    }

    /// Bytes per storage block.
    pub const fn block_bytes(self) -> usize {
        match self {
            TensorType::F32 | TensorType::I32 => 4,
            TensorType::F16 | TensorType::BF16 => 2,
            TensorType::Q8_0 => Q8_0_BLOCK_BYTES,
        }
    }

    /// Bytes that `elements` values occupy, or `None` if `elements` is not a whole
    /// number of blocks or the size overflows `u64`.
    pub const fn byte_len(self, elements: u64) -> Option<u64> {
        // Constant divisors: no 64-bit division routine on 32-bit targets.
        let blocks = match self {
            TensorType::Q8_0 => {
                let bl = Q8_0_BLOCK_LEN as u64;
                match (elements.checked_rem(bl), elements.checked_div(bl)) {
                    (Some(0), Some(blocks)) => blocks,
                    _ => return None,
                }
            }
            _ => elements,
        };
        blocks.checked_mul(self.block_bytes() as u64)
    }

    /// True for the types [`TensorInfo::decode_f32`] reads (all but `I32`).
    pub const fn is_float(self) -> bool {
        !matches!(self, TensorType::I32)
    }
}

/// One tensor info as stored, checked on its own (the placement is checked apart).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawInfo<'a> {
    pub(crate) name: &'a str,
    /// Dims in GGUF order (innermost first); unused entries are 1.
    pub(crate) dims: [u64; MAX_RANK],
    pub(crate) rank: usize,
    pub(crate) ty: TensorType,
    pub(crate) elements: u64,
    pub(crate) offset: u64,
}

/// Reads and checks the tensor info at the cursor (tensor `index` of the table).
pub(crate) fn read_info<'a>(cur: &mut Cursor<'a>, index: u32) -> Result<RawInfo<'a>> {
    let (name, _) = cur.string(MAX_NAME_LEN)?;
    let rank_at = cur.pos();
    let rank = cur.u32()?;
    let rank = usize::try_from(rank)
        .ok()
        .filter(|&r| r <= MAX_RANK)
        .ok_or(Error::LimitExceeded {
            offset: off(rank_at),
        })?;
    let dims_at = cur.pos();
    let mut dims = [1u64; MAX_RANK];
    let mut elements: u64 = 1;
    for d in dims.iter_mut().take(rank) {
        *d = cur.u64()?;
        elements = elements.checked_mul(*d).ok_or(Error::LimitExceeded {
            offset: off(dims_at),
        })?;
    }
    let code = cur.u32()?;
    let ty = TensorType::from_ggml(code).ok_or(Error::UnknownTensorType {
        tensor: index,
        ggml_type: code,
    })?;
    if ty == TensorType::Q8_0
        && (rank == 0 || dims[0].checked_rem(Q8_0_BLOCK_LEN as u64) != Some(0))
    {
        return Err(Error::ShapeMismatch { tensor: index });
    }
    let offset = cur.u64()?;
    Ok(RawInfo {
        name,
        dims,
        rank,
        ty,
        elements,
        offset,
    })
}

/// Where a checked tensor lives: the absolute byte range of its data.
pub(crate) fn place(
    raw: &RawInfo<'_>,
    file_len: usize,
    data_start: usize,
    alignment: u64,
    index: u32,
) -> Result<(usize, usize)> {
    // `alignment` is a power of two (checked by the parser): a mask, not a 64-bit division.
    if alignment == 0 || raw.offset & alignment.wrapping_sub(1) != 0 {
        return Err(Error::Misaligned { tensor: index });
    }
    let out = Error::TensorOutOfRange { tensor: index };
    let nbytes = raw.ty.byte_len(raw.elements).ok_or(out)?;
    let start = usize::try_from(raw.offset)
        .ok()
        .and_then(|o| o.checked_add(data_start))
        .ok_or(out)?;
    let end = usize::try_from(nbytes)
        .ok()
        .and_then(|n| n.checked_add(start))
        .ok_or(out)?;
    if end > file_len {
        return Err(out);
    }
    Ok((start, end))
}

/// A tensor of a parsed file: name, type, shape and its bytes, borrowed in place.
///
/// **Shapes are in PyTorch order** (outermost first, row-major): GGUF stores dims
/// innermost first, and [`TensorInfo::shape`] reverses them. A PyTorch weight of
/// shape `(out, in)` is stored with GGUF dims `[in, out]` and reported here as
/// `[out, in]`; its rows (length [`TensorInfo::row_len`] = `in`) are contiguous.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorInfo<'a> {
    pub(crate) index: u32,
    pub(crate) name: &'a str,
    pub(crate) ty: TensorType,
    /// PyTorch order; entries past `rank` are 1.
    pub(crate) shape: [u64; MAX_RANK],
    pub(crate) rank: usize,
    pub(crate) elements: usize,
    pub(crate) offset: u64,
    pub(crate) data: &'a [u8],
}

impl<'a> TensorInfo<'a> {
    pub(crate) fn new(index: u32, raw: &RawInfo<'a>, data: &'a [u8]) -> Option<Self> {
        let mut shape = [1u64; MAX_RANK];
        for (s, d) in shape.iter_mut().zip(raw.dims.get(..raw.rank)?.iter().rev()) {
            *s = *d;
        }
        Some(TensorInfo {
            index,
            name: raw.name,
            ty: raw.ty,
            shape,
            rank: raw.rank,
            elements: usize::try_from(raw.elements).ok()?,
            offset: raw.offset,
            data,
        })
    }

    /// Position of the tensor in the file's tensor table.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The tensor's name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The data type.
    pub fn ggml_type(&self) -> TensorType {
        self.ty
    }

    /// Number of dimensions, 0 to 4 (0 is a scalar holding one element).
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The shape in **PyTorch order** (GGUF dims reversed), `rank()` entries.
    pub fn shape(&self) -> &[u64] {
        self.shape.get(..self.rank).unwrap_or_default()
    }

    /// The dims as GGUF stores them (ggml's `ne`, innermost first), padded with 1s.
    pub fn ggml_dims(&self) -> [u64; MAX_RANK] {
        let mut ne = [1u64; MAX_RANK];
        for (n, s) in ne.iter_mut().zip(self.shape().iter().rev()) {
            *n = *s;
        }
        ne
    }

    /// Number of elements (the product of the shape).
    pub fn element_count(&self) -> usize {
        self.elements
    }

    /// Length of one row: the innermost (last PyTorch) dimension; 1 for a scalar.
    pub fn row_len(&self) -> usize {
        let last = self
            .rank
            .checked_sub(1)
            .and_then(|i| self.shape.get(i))
            .copied()
            .unwrap_or(1);
        usize::try_from(last).unwrap_or(usize::MAX)
    }

    /// Number of rows: `element_count() / row_len()` (0 for an empty tensor).
    pub fn row_count(&self) -> usize {
        self.elements.checked_div(self.row_len()).unwrap_or(0)
    }

    /// Offset of the data, relative to the start of the file's data section.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The tensor's bytes, exactly `ggml_type().byte_len(element_count())` of them.
    /// They may sit at any address (no alignment is assumed when decoding).
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    fn check_run(&self, start: usize, len: usize) -> Result<usize> {
        match start.checked_add(len) {
            Some(end) if end <= self.elements => Ok(end),
            _ => Err(Error::LengthMismatch {
                expected: self.elements,
                found: start.saturating_add(len),
            }),
        }
    }

    /// Decodes elements `start .. start + out.len()` (flat, row-major) into `out`.
    ///
    /// F32 and F16 and BF16 widen exactly; Q8_0 gives `f32(d) * q` per element,
    /// a whole block at a time where the run covers whole blocks.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] (`expected` = element count, `found` = end of the
    /// run) if the run does not lie inside the tensor; [`Error::UnknownTensorType`]
    /// for an `I32` tensor (use [`TensorInfo::decode_i32`]). Never panics.
    pub fn decode_f32(&self, start: usize, out: &mut [f32]) -> Result<()> {
        decode_f32_run(self.index, self.ty, self.elements, self.data, start, out)
    }

    /// Decodes row `row` (length [`TensorInfo::row_len`]) into `out`, which must be
    /// exactly one row long.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `out.len() != row_len()` or the row does not
    /// exist; as [`TensorInfo::decode_f32`] otherwise.
    pub fn decode_row(&self, row: usize, out: &mut [f32]) -> Result<()> {
        let n = self.row_len();
        if out.len() != n {
            return Err(Error::LengthMismatch {
                expected: n,
                found: out.len(),
            });
        }
        let start = row.checked_mul(n).ok_or(Error::LengthMismatch {
            expected: self.elements,
            found: usize::MAX,
        })?;
        self.decode_f32(start, out)
    }

    /// Decodes elements `start .. start + out.len()` of an `I32` tensor.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] as for [`TensorInfo::decode_f32`];
    /// [`Error::UnknownTensorType`] for any type but `I32`.
    pub fn decode_i32(&self, start: usize, out: &mut [i32]) -> Result<()> {
        let end = self.check_run(start, out.len())?;
        if self.ty != TensorType::I32 {
            return Err(Error::UnknownTensorType {
                tensor: self.index,
                ggml_type: self.ty.ggml_code(),
            });
        }
        let b = byte_run(self.data, start, end, 4)
            .ok_or(Error::TensorOutOfRange { tensor: self.index })?;
        for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
            *o = i32::from_le_bytes(le(c));
        }
        Ok(())
    }

    /// Element `index` widened to `f32` (any float type), or `None` past the end or
    /// for `I32`. For many elements, [`TensorInfo::decode_f32`] is much faster.
    pub fn get_f32(&self, index: usize) -> Option<f32> {
        let mut v = [0f32];
        self.decode_f32(index, &mut v).ok()?;
        Some(v[0])
    }

    /// Element `index` of an `I32` tensor, or `None`.
    pub fn get_i32(&self, index: usize) -> Option<i32> {
        let mut v = [0i32];
        self.decode_i32(index, &mut v).ok()?;
        Some(v[0])
    }
}

/// [`TensorInfo::decode_f32`] on the parts a tensor reference keeps (one copy of the
/// decoder for [`TensorInfo`] and `runtime::TensorRef`).
pub(crate) fn decode_f32_run(
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
        TensorType::F32 => {
            let b = byte_run(data, start, end, 4).ok_or(bad)?;
            for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
                *o = f32::from_le_bytes(le(c));
            }
        }
        #[cfg(feature = "f16")]
        TensorType::F16 => {
            let b = byte_run(data, start, end, 2).ok_or(bad)?;
            for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                *o = f16::from_le_bytes(le(c)).to_f32();
            }
        }
        #[cfg(feature = "bf16")]
        TensorType::BF16 => {
            let b = byte_run(data, start, end, 2).ok_or(bad)?;
            for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                *o = f32::from_bits(u32::from(u16::from_le_bytes(le(c))) << 16);
            }
        }
        #[cfg(feature = "q8_0")]
        TensorType::Q8_0 => decode_q8_0(data, start, out).ok_or(bad)?,
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
fn byte_run(data: &[u8], start: usize, end: usize, size: usize) -> Option<&[u8]> {
    data.get(start.checked_mul(size)?..end.checked_mul(size)?)
}

/// A fixed-size array from a slice whose length `chunks_exact` already guarantees.
#[inline(always)]
fn le<const N: usize>(c: &[u8]) -> [u8; N] {
    <[u8; N]>::try_from(c).unwrap_or([0; N])
}

/// Decodes Q8_0 elements `start .. start + out.len()` of `data` (whole blocks).
#[cfg(feature = "q8_0")]
fn decode_q8_0(data: &[u8], start: usize, out: &mut [f32]) -> Option<()> {
    let mut block = start / Q8_0_BLOCK_LEN;
    let mut within = start % Q8_0_BLOCK_LEN;
    let mut out = out;
    while !out.is_empty() {
        let at = block.checked_mul(Q8_0_BLOCK_BYTES)?;
        let bytes = data.get(at..at.checked_add(Q8_0_BLOCK_BYTES)?)?;
        let (scale, quants) = bytes.split_at_checked(2)?;
        let d = f16::from_le_bytes(le(scale)).to_f32();
        let n = out.len().min(Q8_0_BLOCK_LEN.saturating_sub(within));
        let (head, tail) = out.split_at_mut(n);
        for (o, &q) in head.iter_mut().zip(quants.get(within..)?) {
            *o = d * f32::from(q as i8);
        }
        out = tail;
        block = block.checked_add(1)?;
        within = 0;
    }
    Some(())
}
