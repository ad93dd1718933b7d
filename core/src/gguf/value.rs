//! Typed metadata values: [`ValueType`], [`Value`], arrays ([`ArrayView`]) and
//! string arrays with O(1) locators ([`StringArray`]). All borrow the file bytes.

use super::cursor::{off, Cursor};
use super::{MAX_ARRAY_LEN, MAX_STRING_LEN};
use crate::{Error, Result};

/// A GGUF metadata value type (the `u32` code before every value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// `0`: `u8`.
    U8,
    /// `1`: `i8`.
    I8,
    /// `2`: `u16`.
    U16,
    /// `3`: `i16`.
    I16,
    /// `4`: `u32`.
    U32,
    /// `5`: `i32`.
    I32,
    /// `6`: `f32`.
    F32,
    /// `7`: `bool`, one byte.
    Bool,
    /// `8`: UTF-8 string, `u64` byte length then the bytes (no terminator).
    String,
    /// `9`: array, `u32` element type, `u64` length, then the elements.
    Array,
    /// `10`: `u64`.
    U64,
    /// `11`: `i64`.
    I64,
    /// `12`: `f64`.
    F64,
}

impl ValueType {
    /// The type with GGUF code `code`, or `None` for a code GGUF does not define.
    pub const fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => ValueType::U8,
            1 => ValueType::I8,
            2 => ValueType::U16,
            3 => ValueType::I16,
            4 => ValueType::U32,
            5 => ValueType::I32,
            6 => ValueType::F32,
            7 => ValueType::Bool,
            8 => ValueType::String,
            9 => ValueType::Array,
            10 => ValueType::U64,
            11 => ValueType::I64,
            12 => ValueType::F64,
            _ => return None,
        })
    }

    /// The GGUF code of this type.
    pub const fn code(self) -> u32 {
        match self {
            ValueType::U8 => 0,
            ValueType::I8 => 1,
            ValueType::U16 => 2,
            ValueType::I16 => 3,
            ValueType::U32 => 4,
            ValueType::I32 => 5,
            ValueType::F32 => 6,
            ValueType::Bool => 7,
            ValueType::String => 8,
            ValueType::Array => 9,
            ValueType::U64 => 10,
            ValueType::I64 => 11,
            ValueType::F64 => 12,
        }
    }

    /// Size in bytes of one value, or `None` for the variable-size `String` and `Array`.
    pub const fn fixed_size(self) -> Option<usize> {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => Some(1),
            ValueType::U16 | ValueType::I16 => Some(2),
            ValueType::U32 | ValueType::I32 | ValueType::F32 => Some(4),
            ValueType::U64 | ValueType::I64 | ValueType::F64 => Some(8),
            ValueType::String | ValueType::Array => None,
        }
    }
}

/// One metadata value, borrowed from the file.
///
/// The `as_*` conversions are deliberately narrow: integers convert between integer
/// types only when the value fits exactly (a negative `i32` is never a `u32`),
/// floats convert to `f32` only from `F32` or `F64`, and nothing converts between
/// numbers, booleans and strings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// `u8`.
    U8(u8),
    /// `i8`.
    I8(i8),
    /// `u16`.
    U16(u16),
    /// `i16`.
    I16(i16),
    /// `u32`.
    U32(u32),
    /// `i32`.
    I32(i32),
    /// `f32`.
    F32(f32),
    /// `bool` (stored as one byte; any non-zero byte reads as `true`).
    Bool(bool),
    /// A UTF-8 string (checked when the file was parsed).
    String(&'a str),
    /// An array of one element type.
    Array(ArrayView<'a>),
    /// `u64`.
    U64(u64),
    /// `i64`.
    I64(i64),
    /// `f64`.
    F64(f64),
}

impl<'a> Value<'a> {
    /// The GGUF type of this value.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// The string, if this is a `String`.
    pub fn as_str(&self) -> Option<&'a str> {
        match *self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The array, if this is an `Array`.
    pub fn as_array(&self) -> Option<ArrayView<'a>> {
        match *self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The boolean, if this is a `Bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// Any integer type whose value is `>= 0`, as `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(u64::from(v)),
            Value::U16(v) => Some(u64::from(v)),
            Value::U32(v) => Some(u64::from(v)),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type whose value fits in `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(i64::from(v)),
            Value::I16(v) => Some(i64::from(v)),
            Value::I32(v) => Some(i64::from(v)),
            Value::I64(v) => Some(v),
            Value::U8(v) => Some(i64::from(v)),
            Value::U16(v) => Some(i64::from(v)),
            Value::U32(v) => Some(i64::from(v)),
            Value::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type whose value fits in `u32` (`0 ..= 4294967295`).
    pub fn as_u32(&self) -> Option<u32> {
        self.as_u64().and_then(|v| u32::try_from(v).ok())
    }

    /// Any integer type whose value fits in `i32`.
    pub fn as_i32(&self) -> Option<i32> {
        self.as_i64().and_then(|v| i32::try_from(v).ok())
    }

    /// An `F32`, or an `F64` rounded to the nearest `f32`.
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(v) => Some(v),
            Value::F64(v) => Some(v as f32),
            _ => None,
        }
    }

    /// An `F64`, or an `F32` widened exactly.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(f64::from(v)),
            Value::F64(v) => Some(v),
            _ => None,
        }
    }
}

/// Decodes one fixed-size scalar of type `vt` from exactly its bytes.
fn scalar<'a>(vt: ValueType, b: &[u8]) -> Option<Value<'a>> {
    Some(match vt {
        ValueType::U8 => Value::U8(u8::from_le_bytes(b.try_into().ok()?)),
        ValueType::I8 => Value::I8(i8::from_le_bytes(b.try_into().ok()?)),
        ValueType::U16 => Value::U16(u16::from_le_bytes(b.try_into().ok()?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(b.try_into().ok()?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(b.try_into().ok()?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(b.try_into().ok()?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(b.try_into().ok()?)),
        ValueType::Bool => Value::Bool(u8::from_le_bytes(b.try_into().ok()?) != 0),
        ValueType::U64 => Value::U64(u64::from_le_bytes(b.try_into().ok()?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(b.try_into().ok()?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(b.try_into().ok()?)),
        ValueType::String | ValueType::Array => return None,
    })
}

/// Reads a value type code.
pub(crate) fn read_type(cur: &mut Cursor<'_>) -> Result<ValueType> {
    let code = cur.u32()?;
    ValueType::from_code(code).ok_or(Error::UnknownValueType(code))
}

/// Reads (and checks) one value of type `vt` at the cursor.
///
/// With `validate`, every element of a string array is checked for UTF-8 (parse
/// time); without it, string arrays are only walked (the file is already validated).
pub(crate) fn read_value<'a>(
    cur: &mut Cursor<'a>,
    vt: ValueType,
    validate: bool,
) -> Result<Value<'a>> {
    match vt {
        ValueType::String => cur.string(MAX_STRING_LEN).map(|(s, _)| Value::String(s)),
        ValueType::Array => read_array(cur, validate).map(Value::Array),
        _ => {
            let at = cur.pos();
            let size = vt
                .fixed_size()
                .ok_or(Error::Truncated { offset: off(at) })?;
            let b = cur.take(size)?;
            scalar(vt, b).ok_or(Error::Truncated { offset: off(at) })
        }
    }
}

/// Reads an integer value of type `vt` as `u32` when it lies in `0 ..= u32::MAX` (what
/// [`Value::as_u32`] accepts), without building a [`Value`]; `None` for other types or
/// values.
pub(crate) fn read_u32(cur: &mut Cursor<'_>, vt: ValueType) -> Option<u32> {
    let signed = match vt {
        ValueType::U8 | ValueType::U16 | ValueType::U32 | ValueType::U64 => false,
        ValueType::I8 | ValueType::I16 | ValueType::I32 | ValueType::I64 => true,
        _ => return None,
    };
    let b = cur.take(vt.fixed_size()?).ok()?;
    // Little-endian: a negative value has the top bit of its last byte set.
    if signed && b.last().is_some_and(|&x| x & 0x80 != 0) {
        return None;
    }
    // Bytes past the fourth must be zero (the value is below 2^32).
    if b.iter().skip(4).any(|&x| x != 0) {
        return None;
    }
    let mut le = [0u8; 4];
    for (o, &x) in le.iter_mut().zip(b) {
        *o = x;
    }
    Some(u32::from_le_bytes(le))
}

/// Steps over one value of type `vt` without decoding it. With `validate` (parse time),
/// strings and the elements of string arrays are checked for UTF-8; without it they are
/// only walked.
pub(crate) fn skip_value(cur: &mut Cursor<'_>, vt: ValueType, validate: bool) -> Result<()> {
    match vt {
        ValueType::String if validate => cur.string(MAX_STRING_LEN).map(|_| ()),
        ValueType::String => cur.raw_string(MAX_STRING_LEN).map(|_| ()),
        ValueType::Array => read_array(cur, validate).map(|_| ()),
        _ => {
            let size = vt.fixed_size().ok_or(Error::Truncated {
                offset: off(cur.pos()),
            })?;
            cur.take(size).map(|_| ())
        }
    }
}

pub(crate) fn read_array<'a>(cur: &mut Cursor<'a>, validate: bool) -> Result<ArrayView<'a>> {
    let at = cur.pos();
    let elem = read_type(cur)?;
    if elem == ValueType::Array {
        // Nested arrays: the reader's nesting limit is one level, as in ggml.
        return Err(Error::LimitExceeded { offset: off(at) });
    }
    let len = cur.count(MAX_ARRAY_LEN)?;
    let start = cur.pos();
    match elem.fixed_size() {
        Some(size) => {
            let n = len
                .checked_mul(size)
                .ok_or(Error::LimitExceeded { offset: off(at) })?;
            cur.take_for(n, at)?;
        }
        None => {
            for _ in 0..len {
                if validate {
                    cur.string(MAX_STRING_LEN)?;
                } else {
                    cur.raw_string(MAX_STRING_LEN)?;
                }
            }
        }
    }
    Ok(ArrayView {
        file: cur.buf(),
        elem,
        len,
        start,
        end: cur.pos(),
    })
}

/// A metadata array: its element type, its length and its elements, in place.
///
/// Fixed-size elements are read in O(1) by index; strings are variable-length, so
/// [`ArrayView::get`] walks to them in O(index): use [`ArrayView::as_strings`] and
/// its locators for O(1) access to many strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayView<'a> {
    file: &'a [u8],
    elem: ValueType,
    len: usize,
    /// Offset of the first element in `file`.
    start: usize,
    /// Offset just past the last element.
    end: usize,
}

impl<'a> ArrayView<'a> {
    /// The type of every element.
    pub fn element_type(&self) -> ValueType {
        self.elem
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The raw little-endian bytes of all elements, for fixed-size element types
    /// (`None` for strings). Any alignment.
    pub fn as_le_bytes(&self) -> Option<&'a [u8]> {
        self.elem.fixed_size()?;
        self.file.get(self.start..self.end)
    }

    /// Element `index`, or `None` past the end. O(1) for fixed-size types, O(index)
    /// for strings.
    pub fn get(&self, index: usize) -> Option<Value<'a>> {
        if index >= self.len {
            return None;
        }
        match self.elem.fixed_size() {
            Some(size) => {
                let s = self.start.checked_add(index.checked_mul(size)?)?;
                scalar(self.elem, self.file.get(s..s.checked_add(size)?)?)
            }
            None => self.iter().nth(index),
        }
    }

    /// Element `index` as `u32` (any integer element type, value in range; see
    /// [`Value::as_u32`]). `None` past the end or for other element types.
    pub fn get_u32(&self, index: usize) -> Option<u32> {
        self.get(index)?.as_u32()
    }

    /// Element `index` as `i32` (any integer element type, value in range; see
    /// [`Value::as_i32`]). This reads `tokenizer.ggml.token_type`.
    pub fn get_i32(&self, index: usize) -> Option<i32> {
        self.get(index)?.as_i32()
    }

    /// Element `index` as `f32` (`F32` or `F64` elements; see [`Value::as_f32`]).
    pub fn get_f32(&self, index: usize) -> Option<f32> {
        self.get(index)?.as_f32()
    }

    /// All elements in order.
    pub fn iter(&self) -> ArrayIter<'a> {
        ArrayIter {
            cur: Cursor::new(self.file, self.start),
            elem: self.elem,
            left: self.len,
        }
    }

    /// The array as a [`StringArray`] with O(1) locators, or `None` when the elements
    /// are not strings, or when the array ends more than `u32::MAX` bytes into the
    /// file (locators are `u32`).
    pub fn as_strings(&self) -> Option<StringArray<'a>> {
        if self.elem != ValueType::String || u32::try_from(self.end).is_err() {
            return None;
        }
        Some(StringArray {
            file: self.file,
            len: self.len,
            start: self.start,
            end: self.end,
        })
    }
}

impl<'a> IntoIterator for ArrayView<'a> {
    type Item = Value<'a>;
    type IntoIter = ArrayIter<'a>;
    fn into_iter(self) -> ArrayIter<'a> {
        self.iter()
    }
}

/// Iterator over the elements of an [`ArrayView`].
#[derive(Debug, Clone)]
pub struct ArrayIter<'a> {
    cur: Cursor<'a>,
    elem: ValueType,
    left: usize,
}

impl<'a> Iterator for ArrayIter<'a> {
    type Item = Value<'a>;

    fn next(&mut self) -> Option<Value<'a>> {
        self.left = self.left.checked_sub(1)?;
        let v = read_value(&mut self.cur, self.elem, false);
        if v.is_err() {
            self.left = 0;
        }
        v.ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

/// An array of strings, with a `u32` *locator* per element for O(1) access.
///
/// A locator is the byte offset of the element (its `u64` length field) inside
/// the file. A tokenizer walks [`StringArray::iter`] once, stores the locators
/// in an index it owns (a hash table over a 30,522-entry vocabulary, say) and
/// later gets each string back with [`StringArray::str_at`], without allocating
/// and without walking the array again.
///
/// ```
/// use riffle_core::gguf::{Gguf, KEY_TOKENIZER_TOKENS};
///
/// let file = include_bytes!("../../../tests/data/gguf/bert_mini.gguf");
/// let gguf = Gguf::parse(file)?;
/// let tokens = gguf.get_strings(KEY_TOKENIZER_TOKENS)?;
/// let tokens = gguf.get_strings("tokenizer.ggml.tokens")?;
/// // Walk once, keep one u32 per token in caller memory (here: the first 8).
/// let mut locators = [0u32; 8];
/// for (slot, (loc, _)) in locators.iter_mut().zip(tokens.iter()) {
///     *slot = loc;
/// }
/// // Later: O(1) back to the string. llama.cpp spells word-initial pieces with U+2581.
/// assert_eq!(tokens.str_at(locators[6]), Some("\u{2581}hello"));
/// assert_eq!(tokens.get(3), Some("[SEP]")); // O(index) without a locator
/// # Ok::<(), riffle_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StringArray<'a> {
    file: &'a [u8],
    len: usize,
    start: usize,
    end: usize,
}

impl<'a> StringArray<'a> {
    /// Number of strings.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the array has no strings.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `(locator, string)` for every element, in order.
    pub fn iter(&self) -> StringIter<'a> {
        StringIter {
            cur: Cursor::new(self.file, self.start),
            end: self.end,
            left: self.len,
        }
    }

    /// The string whose locator (as yielded by [`StringArray::iter`]) is `locator`.
    ///
    /// O(1) plus a UTF-8 check of that one string. A locator outside this array
    /// gives `None`; one inside it that `iter` never yielded gives `None` or an
    /// arbitrary UTF-8 run of this array's bytes, never a panic.
    pub fn str_at(&self, locator: u32) -> Option<&'a str> {
        let at = usize::try_from(locator).ok()?;
        if at < self.start || at >= self.end {
            return None;
        }
        let mut cur = Cursor::new(self.file, at);
        let (bytes, _) = cur.raw_string(MAX_STRING_LEN).ok()?;
        if cur.pos() > self.end {
            return None;
        }
        core::str::from_utf8(bytes).ok()
    }

    /// String `index`, walking the array: O(index).
    pub fn get(&self, index: usize) -> Option<&'a str> {
        self.iter().nth(index).map(|(_, s)| s)
    }

    /// The index of the first element equal to `s` (a linear scan, O(len)).
    pub fn position(&self, s: &str) -> Option<usize> {
        self.iter().position(|(_, t)| t == s)
    }
}

impl<'a> IntoIterator for StringArray<'a> {
    type Item = (u32, &'a str);
    type IntoIter = StringIter<'a>;
    fn into_iter(self) -> StringIter<'a> {
        self.iter()
    }
}

/// Iterator over `(locator, string)` pairs of a [`StringArray`].
#[derive(Debug, Clone)]
pub struct StringIter<'a> {
    cur: Cursor<'a>,
    end: usize,
    left: usize,
}

impl<'a> Iterator for StringIter<'a> {
    type Item = (u32, &'a str);

    fn next(&mut self) -> Option<(u32, &'a str)> {
        self.left = self.left.checked_sub(1)?;
        let item = (|| {
            let (bytes, at) = self.cur.raw_string(MAX_STRING_LEN).ok()?;
            if self.cur.pos() > self.end {
                return None;
            }
            let loc = u32::try_from(at).ok()?;
            Some((loc, core::str::from_utf8(bytes).ok()?))
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

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::{read_u32, scalar, Cursor, ValueType};

    /// `read_u32` accepts exactly what `Value::as_u32` accepts, for every type and a
    /// spread of byte patterns (zero, one, sign bits, values just past `u32::MAX`).
    #[test]
    fn read_u32_is_as_u32() {
        let patterns: [[u8; 8]; 9] = [
            [0; 8],
            [1, 0, 0, 0, 0, 0, 0, 0],
            [0xff; 8],
            [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0],
            [0, 0, 0, 0, 1, 0, 0, 0],
            [0x80, 0, 0, 0, 0, 0, 0, 0],
            [0, 0x80, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0x80, 0, 0, 0, 0],
            [0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0x80],
        ];
        for code in 0..13 {
            let Some(vt) = ValueType::from_code(code) else {
                continue;
            };
            let Some(size) = vt.fixed_size() else {
                continue;
            };
            for p in &patterns {
                let want = scalar(vt, &p[..size]).and_then(|v| v.as_u32());
                let got = read_u32(&mut Cursor::new(&p[..size], 0), vt);
                assert_eq!(got, want, "{vt:?} {p:?}");
            }
        }
    }
}
