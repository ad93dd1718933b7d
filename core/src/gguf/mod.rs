//! A zero-copy, allocation-free GGUF v3 reader over untrusted bytes.
//!
//! [`Gguf::parse`] takes the whole file as `&[u8]` (flash, a `static`, an mmap, a
//! browser `ArrayBuffer`) and **checks everything once**, as TFLM's prepare phase
//! does: magic and version, every count against a hard limit, every metadata value
//! and its type, UTF-8 of every key, tensor name and string (string-array elements
//! included), `general.alignment`, every tensor's rank, type, size (checked
//! arithmetic, `usize` may be 32 bits), alignment and range, and duplicate keys and
//! tensor names. Afterwards every accessor borrows from the file: strings are
//! `&'a str`, tensor data is `&'a [u8]` at any address, nothing is copied.
//!
//! Nothing is stored beyond a few offsets, so lookups re-walk the file:
//! [`Gguf::get`] is O(number of keys + string-array elements before the key),
//! [`Gguf::find_tensor`] and [`Gguf::tensor`] are O(number of tensors). Callers that
//! look up a key or tensor often keep the [`Value`] or [`TensorInfo`] they got.
//!
//! **Shapes are reported in PyTorch order** (GGUF dims reversed, see [`TensorInfo`]).
//!
//! The layout is `docs/format.md`'s: magic `GGUF`, `u32` version 3, `u64` tensor
//! count, `u64` key/value count, the key/value pairs, the tensor infos (name,
//! `u32` rank, `u64` dims innermost first, `u32` ggml type, `u64` offset), padding to
//! the alignment, then the data section.
//!
//! ```
//! use riffle_core::gguf::{Gguf, TensorType, KEY_ARCHITECTURE, KEY_MLP_INPUT_LENGTH};
//! # fn string(f: &mut Vec<u8>, s: &str) {
//! #     f.extend((s.len() as u64).to_le_bytes());
//! #     f.extend(s.as_bytes());
//! # }
//! // A one-tensor `mlp` file, built by hand: header, two key/value pairs, one tensor info.
//! let mut f = Vec::new();
//! f.extend(b"GGUF");
//! f.extend(3u32.to_le_bytes()); // version
//! f.extend(1u64.to_le_bytes()); // tensor count
//! f.extend(2u64.to_le_bytes()); // key/value count
//! string(&mut f, "general.architecture");
//! f.extend(8u32.to_le_bytes()); // value type: string
//! string(&mut f, "mlp");
//! string(&mut f, "mlp.input_length");
//! f.extend(4u32.to_le_bytes()); // value type: u32
//! f.extend(3u32.to_le_bytes());
//! string(&mut f, "layers.0.weight");
//! f.extend(2u32.to_le_bytes()); // rank
//! f.extend(3u64.to_le_bytes()); // dims, innermost first: in = 3 ...
//! f.extend(2u64.to_le_bytes()); // ... out = 2
//! f.extend(0u32.to_le_bytes()); // ggml type F32
//! f.extend(0u64.to_le_bytes()); // offset in the data section
//! while f.len() % 32 != 0 {
//!     f.push(0); // padding to the default alignment
//! }
//! for v in [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0] {
//!     f.extend(v.to_le_bytes());
//! }
//!
//! let gguf = Gguf::parse(&f)?;
//! assert_eq!(gguf.get_str(KEY_ARCHITECTURE)?, "mlp");
//! assert_eq!(gguf.get_u32(KEY_MLP_INPUT_LENGTH)?, 3);
//! let w = gguf.find_tensor("layers.0.weight").ok_or(riffle_core::Error::MissingTensor)?;
//! assert_eq!(w.ggml_type(), TensorType::F32);
//! assert_eq!(w.shape(), &[2, 3]); // PyTorch order: (out, in)
//! let mut row = [0.0f32; 3];
//! w.decode_row(1, &mut row)?;
//! assert_eq!(row, [4.0, 5.0, 6.0]);
//! assert_eq!(gguf.data_span().len(), 24);
//! # Ok::<(), riffle_core::Error>(())
//! ```
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

mod cursor;
mod keys;
mod names;
mod tensor;
mod value;

pub use crate::quant::{Q8_0_BLOCK_BYTES, Q8_0_BLOCK_LEN};
pub use keys::*;
pub(crate) use tensor::decode_f32_run;
pub use tensor::{TensorInfo, TensorType};
pub use value::{ArrayIter, ArrayView, StringArray, StringIter, Value, ValueType};

use crate::checksum::crc32;
#[cfg(feature = "sha256")]
use crate::checksum::{hex_lower, Sha256};
use crate::{Error, Result};
use cursor::{off, Cursor};
use tensor::{place, read_info};
use value::{read_array, read_type, read_u32, read_value, skip_value};

/// The GGUF magic, the first four bytes of every file.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// The only GGUF version read.
pub const VERSION: u32 = 3;
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u32 = 32;

/// Most tensors a file may declare.
pub const MAX_TENSORS: u64 = 65_536;
/// Most key/value pairs a file may declare.
pub const MAX_KV: u64 = 65_536;
/// Longest key or tensor name, in bytes.
pub const MAX_NAME_LEN: u64 = 65_535;
/// Longest string value (or string-array element), in bytes.
pub const MAX_STRING_LEN: u64 = 1 << 24;
/// Most elements of one metadata array.
pub const MAX_ARRAY_LEN: u64 = 1 << 24;
/// Highest tensor rank.
pub const MAX_RANK: usize = 4;

/// Offset of the first key/value pair: after magic, version and the two counts.
const HEADER_LEN: usize = 24;

/// A parsed, fully validated GGUF v3 file borrowed from its bytes.
///
/// See the [module documentation](self) for what [`Gguf::parse`] checks and what
/// each accessor costs.
#[derive(Debug, Clone, Copy)]
pub struct Gguf<'a> {
    bytes: &'a [u8],
    kv_count: usize,
    tensor_count: usize,
    /// Offset of the first tensor info.
    infos_start: usize,
    /// Offset of the data section (aligned).
    data_start: usize,
    /// End of the tensor that ends last (`data_start` when there is none).
    span_end: usize,
    alignment: u32,
}

fn align_up(x: usize, alignment: usize) -> Option<usize> {
    let mask = alignment.checked_sub(1)?;
    Some(x.checked_add(mask)? & !mask)
}

impl<'a> Gguf<'a> {
    /// Parses and validates a whole GGUF v3 file. O(file metadata), zero-copy;
    /// the tensor data is only range-checked, never read.
    ///
    /// # Errors
    /// - [`Error::BadMagic`], [`Error::UnsupportedVersion`] (anything but 3);
    /// - [`Error::Truncated`] when a structure runs past the end of `bytes`;
    /// - [`Error::LimitExceeded`] for counts, lengths or ranks over the `MAX_*`
    ///   limits, size overflows, and nested arrays (one level of arrays is read);
    /// - [`Error::UnknownValueType`], [`Error::InvalidUtf8`];
    /// - [`Error::WrongValueType`] when `general.alignment` is not a `u32`,
    ///   [`Error::BadAlignment`] when it is not a power of two;
    /// - [`Error::UnknownTensorType`] for ggml types this build does not read (the
    ///   compiled rows of [`crate::quant::TYPES`]); [`Error::ShapeMismatch`] for a block
    ///   type's tensor whose innermost dimension is not a whole number of blocks;
    /// - [`Error::Misaligned`], [`Error::TensorOutOfRange`] for tensor data;
    /// - [`Error::DuplicateName`] for a repeated key (index of the key/value pair) or
    ///   a repeated tensor name (index in the tensor table).
    ///
    /// Never panics, whatever the bytes.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        match bytes.get(..4) {
            Some(m) if m == MAGIC => {}
            // A prefix of the magic is a truncated file, anything else is not GGUF.
            None if MAGIC.starts_with(bytes) => return Err(Error::Truncated { offset: 0 }),
            _ => return Err(Error::BadMagic),
        }
        let mut cur = Cursor::new(bytes, 4);
        let version = cur.u32()?;
        if version != VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        let tensor_count = cur.count(MAX_TENSORS)?;
        let kv_count = cur.count(MAX_KV)?;

        // Key/value pairs.
        let mut alignment = DEFAULT_ALIGNMENT;
        for _ in 0..kv_count {
            let (key, _) = cur.string(MAX_NAME_LEN)?;
            let vt = read_type(&mut cur)?;
            let mut value = cur;
            skip_value(&mut cur, vt, true)?;
            if key == KEY_ALIGNMENT {
                if vt != ValueType::U32 {
                    return Err(Error::WrongValueType);
                }
                alignment = value.u32()?;
                if !alignment.is_power_of_two() {
                    return Err(Error::BadAlignment(alignment));
                }
            }
        }
        names::check_unique(bytes, names::Table::Keys, kv_count)?;

        // Tensor infos, each checked on its own.
        let infos_start = cur.pos();
        for i in 0..tensor_count {
            read_info(&mut cur, index_u32(i))?;
        }
        names::check_unique(bytes, names::Table::Tensors { infos_start }, tensor_count)?;
        let infos_end = cur.pos();
        let align = usize::try_from(alignment).map_err(|_| Error::BadAlignment(alignment))?;
        let data_start = align_up(infos_end, align).ok_or(Error::LimitExceeded {
            offset: off(infos_end),
        })?;

        // Placement of every tensor's data, now that the data section is known.
        let mut cur = Cursor::new(bytes, infos_start);
        let mut span_end = data_start;
        for i in 0..tensor_count {
            let raw = read_info(&mut cur, index_u32(i))?;
            let (_, end) = place(
                &raw,
                bytes.len(),
                data_start,
                u64::from(alignment),
                index_u32(i),
            )?;
            span_end = span_end.max(end);
        }

        Ok(Gguf {
            bytes,
            kv_count,
            tensor_count,
            infos_start,
            data_start,
            span_end,
            alignment,
        })
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The GGUF version (always [`VERSION`]).
    pub fn version(&self) -> u32 {
        VERSION
    }

    /// The data alignment: `general.alignment`, or [`DEFAULT_ALIGNMENT`].
    pub fn alignment(&self) -> u32 {
        self.alignment
    }

    /// Number of key/value pairs.
    pub fn kv_count(&self) -> usize {
        self.kv_count
    }

    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        self.tensor_count
    }

    /// Byte offset of the data section in the file (tensor offsets count from here).
    pub fn data_offset(&self) -> usize {
        self.data_start
    }

    /// The *data span* of `docs/format.md`: the bytes from the start of the data
    /// section to the end of the tensor that ends last, padding between tensors
    /// included, trailing padding excluded. Empty for a file without tensors.
    /// `riffle.model_id` hashes it; `riffle.data_crc32` checks it.
    pub fn data_span(&self) -> &'a [u8] {
        self.bytes
            .get(self.data_start..self.span_end)
            .unwrap_or_default()
    }

    /// All key/value pairs, in file order.
    pub fn metadata(&self) -> Metadata<'a> {
        Metadata {
            cur: Cursor::new(self.bytes, HEADER_LEN),
            left: self.kv_count,
        }
    }

    /// The value of `key`, or `None`. A linear scan: O(number of keys, plus the
    /// elements of string arrays stored before the key).
    pub fn get(&self, key: &str) -> Option<Value<'a>> {
        let (vt, mut cur) = self.find_value(key)?;
        read_value(&mut cur, vt, false).ok()
    }

    /// The type of the value of `key` and a cursor at that value, or `None`. The one key
    /// scan behind every accessor (the typed ones decode only what they return).
    fn find_value(&self, key: &str) -> Option<(ValueType, Cursor<'a>)> {
        let mut cur = Cursor::new(self.bytes, HEADER_LEN);
        for _ in 0..self.kv_count {
            let (k, _) = cur.raw_string(MAX_NAME_LEN).ok()?;
            let vt = read_type(&mut cur).ok()?;
            if k == key.as_bytes() {
                return Some((vt, cur));
            }
            skip_value(&mut cur, vt, false).ok()?;
        }
        None
    }

    fn require(&self, key: &'static str) -> Result<Value<'a>> {
        self.get(key).ok_or(Error::missing_key(key))
    }

    /// The string value of `key`.
    ///
    /// # Errors
    /// [`Error::MissingKey`]; [`Error::WrongValueType`] if the value is not a string.
    pub fn get_str(&self, key: &'static str) -> Result<&'a str> {
        let (vt, mut cur) = self.find_value(key).ok_or(Error::missing_key(key))?;
        if vt != ValueType::String {
            return Err(Error::WrongValueType);
        }
        cur.string(MAX_STRING_LEN)
            .map(|(s, _)| s)
            .map_err(|_| Error::missing_key(key))
    }

    /// The value of `key` as `u32`: any integer type (`u8` .. `u64`, `i8` .. `i64`)
    /// whose value lies in `0 ..= u32::MAX` (writers disagree on the integer type of
    /// ids and counts; no value is ever truncated). Floats and bools are refused.
    ///
    /// # Errors
    /// [`Error::MissingKey`]; [`Error::WrongValueType`] for other types or values
    /// out of range.
    pub fn get_u32(&self, key: &'static str) -> Result<u32> {
        let (vt, mut cur) = self.find_value(key).ok_or(Error::missing_key(key))?;
        read_u32(&mut cur, vt).ok_or(Error::WrongValueType)
    }

    /// The value of `key` as `u64`: any integer type whose value is `>= 0`.
    ///
    /// # Errors
    /// As [`Gguf::get_u32`].
    pub fn get_u64(&self, key: &'static str) -> Result<u64> {
        self.require(key)?.as_u64().ok_or(Error::WrongValueType)
    }

    /// The value of `key` as `i32`: any integer type whose value fits.
    ///
    /// # Errors
    /// As [`Gguf::get_u32`].
    pub fn get_i32(&self, key: &'static str) -> Result<i32> {
        self.require(key)?.as_i32().ok_or(Error::WrongValueType)
    }

    /// The value of `key` as `f32`: an `F32`, or an `F64` rounded to `f32`.
    ///
    /// # Errors
    /// [`Error::MissingKey`]; [`Error::WrongValueType`] for other types.
    pub fn get_f32(&self, key: &'static str) -> Result<f32> {
        self.require(key)?.as_f32().ok_or(Error::WrongValueType)
    }

    /// The boolean value of `key`.
    ///
    /// # Errors
    /// [`Error::MissingKey`]; [`Error::WrongValueType`] if the value is not a bool.
    pub fn get_bool(&self, key: &'static str) -> Result<bool> {
        self.require(key)?.as_bool().ok_or(Error::WrongValueType)
    }

    /// The array value of `key`.
    ///
    /// # Errors
    /// [`Error::MissingKey`]; [`Error::WrongValueType`] if the value is not an array.
    pub fn get_array(&self, key: &'static str) -> Result<ArrayView<'a>> {
        let (vt, mut cur) = self.find_value(key).ok_or(Error::missing_key(key))?;
        if vt != ValueType::Array {
            return Err(Error::WrongValueType);
        }
        read_array(&mut cur, false).map_err(|_| Error::missing_key(key))
    }

    /// The string-array value of `key`, with O(1) locators (see [`StringArray`]).
    ///
    /// # Errors
    /// [`Error::MissingKey`]; [`Error::WrongValueType`] if the value is not an
    /// array of strings (or ends beyond the `u32` locator range).
    pub fn get_strings(&self, key: &'static str) -> Result<StringArray<'a>> {
        self.get_array(key)?
            .as_strings()
            .ok_or(Error::WrongValueType)
    }

    /// Tensor `index` of the tensor table, or `None` past the end. O(index).
    pub fn tensor(&self, index: usize) -> Option<TensorInfo<'a>> {
        self.tensors().nth(index)
    }

    /// All tensors, in table order.
    #[inline(never)] // one copy for every scan (smaller firmware)
    pub fn tensors(&self) -> Tensors<'a> {
        Tensors {
            gguf: *self,
            cur: Cursor::new(self.bytes, self.infos_start),
            next: 0,
        }
    }

    /// The tensor named `name`, or `None`. A linear scan, O(number of tensors).
    pub fn find_tensor(&self, name: &str) -> Option<TensorInfo<'a>> {
        self.tensors().find(|t| t.name() == name)
    }

    /// The tensor named `name`.
    ///
    /// # Errors
    /// [`Error::MissingTensor`] if there is none.
    pub fn require_tensor(&self, name: &str) -> Result<TensorInfo<'a>> {
        self.find_tensor(name).ok_or(Error::MissingTensor)
    }

    /// `riffle.model_id` as stored, or `None` when the key is absent or not a string
    /// (files made by other tools; use [`Gguf::compute_model_id`] then).
    pub fn stored_model_id(&self) -> Option<&'a str> {
        self.get_str(KEY_MODEL_ID).ok()
    }

    /// The model id computed from the file: lowercase hex SHA-256 of
    /// [`Gguf::data_span`]. This reads every byte of tensor data (the slow,
    /// explicit "verify" step); loading never calls it.
    #[cfg(feature = "sha256")]
    pub fn compute_model_id(&self) -> heapless::String<64> {
        let mut h = Sha256::new();
        h.update(self.data_span());
        hex_lower(&h.finalize())
    }

    /// The model id an adapter binds to: the stored `riffle.model_id` when present,
    /// otherwise [`Gguf::compute_model_id`] (as `docs/format.md` requires for files
    /// from other tools).
    #[cfg(feature = "sha256")]
    pub fn model_id(&self) -> heapless::String<64> {
        match self
            .stored_model_id()
            .and_then(|s| heapless::String::try_from(s).ok())
        {
            Some(s) => s,
            None => self.compute_model_id(),
        }
    }

    /// [`Gguf::model_id`] where it can be had: without the `sha256` feature, a file
    /// without a stored id (or one longer than 64 bytes) has none.
    pub(crate) fn binding_id(&self) -> Result<heapless::String<64>> {
        #[cfg(feature = "sha256")]
        return Ok(self.model_id());
        #[cfg(not(feature = "sha256"))]
        self.stored_model_id()
            .and_then(|s| heapless::String::try_from(s).ok())
            .ok_or(Error::missing_key(KEY_MODEL_ID))
    }

    /// CRC-32 of [`Gguf::data_span`] (zlib's `crc32`).
    pub fn compute_data_crc32(&self) -> u32 {
        crc32(self.data_span())
    }

    /// Checks `riffle.data_crc32` against the CRC-32 of the data span (adapters).
    ///
    /// # Errors
    /// [`Error::MissingKey`] without the key; [`Error::WrongValueType`] if it is not
    /// an integer in `u32` range; [`Error::CrcMismatch`] if the data differs.
    pub fn verify_crc(&self) -> Result<()> {
        let stored = self.get_u32(KEY_DATA_CRC32)?;
        let computed = self.compute_data_crc32();
        if stored != computed {
            return Err(Error::CrcMismatch { stored, computed });
        }
        Ok(())
    }
}

/// Lowercase hex SHA-256 of the data span of `gguf`: the value `riffle.model_id`
/// must hold (same as [`Gguf::compute_model_id`]).
#[cfg(feature = "sha256")]
pub fn model_id_hex(gguf: &Gguf<'_>) -> heapless::String<64> {
    gguf.compute_model_id()
}

/// An index below a `MAX_*` limit (<= 65536) as the `u32` errors carry.
fn index_u32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// Iterator over the key/value pairs of a [`Gguf`], see [`Gguf::metadata`].
#[derive(Debug, Clone)]
pub struct Metadata<'a> {
    cur: Cursor<'a>,
    left: usize,
}

impl<'a> Iterator for Metadata<'a> {
    type Item = (&'a str, Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        self.left = self.left.checked_sub(1)?;
        let item = (|| {
            let (k, _) = self.cur.string(MAX_NAME_LEN).ok()?;
            let vt = read_type(&mut self.cur).ok()?;
            Some((k, read_value(&mut self.cur, vt, false).ok()?))
        })();
        if item.is_none() {
            self.left = 0;
        }
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

/// Iterator over the tensors of a [`Gguf`], see [`Gguf::tensors`].
#[derive(Debug, Clone)]
pub struct Tensors<'a> {
    gguf: Gguf<'a>,
    cur: Cursor<'a>,
    next: usize,
}

impl<'a> Iterator for Tensors<'a> {
    type Item = TensorInfo<'a>;

    fn next(&mut self) -> Option<TensorInfo<'a>> {
        if self.next >= self.gguf.tensor_count {
            return None;
        }
        let index = index_u32(self.next);
        let g = &self.gguf;
        let item = (|| {
            let raw = read_info(&mut self.cur, index).ok()?;
            let (start, end) = place(
                &raw,
                g.bytes.len(),
                g.data_start,
                u64::from(g.alignment),
                index,
            )
            .ok()?;
            TensorInfo::new(index, &raw, g.bytes.get(start..end)?)
        })();
        self.next = match item {
            Some(_) => self.next.saturating_add(1),
            None => self.gguf.tensor_count,
        };
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.gguf.tensor_count.saturating_sub(self.next);
        (0, Some(left))
    }
}
