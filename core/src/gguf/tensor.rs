//! Tensor infos ([`TensorInfo`], [`TensorType`]) and decoding of tensor data into
//! caller buffers.

use super::cursor::{off, Cursor};
use super::{MAX_NAME_LEN, MAX_RANK};
pub use crate::quant::TensorType;
use crate::quant::{byte_run, le};
use crate::{Error, Result};

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
    // A block type's rows are whole blocks (block lengths are powers of two).
    if ty.block_len() > 1 && (rank == 0 || dims[0] & (ty.block_len() as u64).wrapping_sub(1) != 0) {
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
    /// A tensor of no elements (the runtime's empty slot records).
    pub(crate) const EMPTY: TensorInfo<'static> = TensorInfo {
        index: 0,
        name: "",
        ty: TensorType::F32,
        shape: [1; MAX_RANK],
        rank: 1,
        elements: 0,
        offset: 0,
        data: &[],
    };

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
    /// F32 and F16 and BF16 widen exactly; the block types give their reference
    /// dequantization ([`crate::quant::decode_f32`]).
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
/// decoder for [`TensorInfo`] and `runtime::TensorRef`): [`crate::quant::decode_f32`].
pub(crate) use crate::quant::decode_f32 as decode_f32_run;
