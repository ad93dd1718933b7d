//! A small, independent GGUF v3 reader and writer for building hostile inputs in tests:
//! parse a valid file into its parts, edit keys, tensor infos and tensor data, write it
//! back (with `riffle.data_crc32` recomputed when asked), and know where every field
//! lands in the written bytes, so that a test can corrupt exactly one of them.
//!
//! Written from `docs/format.md`, not from riffle-core's reader. It trusts its input
//! (committed fixtures) and panics on anything it cannot read: it is a test tool.

use std::ops::Range;

/// GGUF metadata value types.
pub mod vt {
    /// `u8`.
    pub const U8: u32 = 0;
    /// `i8`.
    pub const I8: u32 = 1;
    /// `u16`.
    pub const U16: u32 = 2;
    /// `i16`.
    pub const I16: u32 = 3;
    /// `u32`.
    pub const U32: u32 = 4;
    /// `i32`.
    pub const I32: u32 = 5;
    /// `f32`.
    pub const F32: u32 = 6;
    /// `bool`.
    pub const BOOL: u32 = 7;
    /// string.
    pub const STRING: u32 = 8;
    /// array.
    pub const ARRAY: u32 = 9;
    /// `u64`.
    pub const U64: u32 = 10;
    /// `i64`.
    pub const I64: u32 = 11;
    /// `f64`.
    pub const F64: u32 = 12;
}

/// ggml tensor type codes.
pub mod ggml {
    /// `f32`.
    pub const F32: u32 = 0;
    /// IEEE half.
    pub const F16: u32 = 1;
    /// Blocks of 32 `i8` with an `f16` scale.
    pub const Q8_0: u32 = 8;
    /// `i32`.
    pub const I32: u32 = 26;
    /// bfloat16.
    pub const BF16: u32 = 30;
}

/// A metadata value. Strings are bytes, so tests can write invalid UTF-8.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// A scalar of a fixed-size type: the type code and its little-endian bytes.
    Scalar(u32, Vec<u8>),
    /// A string.
    Str(Vec<u8>),
    /// An array: element type and elements.
    Array(u32, Vec<Val>),
}

impl Val {
    /// A `u32` value.
    pub fn u32(v: u32) -> Val {
        Val::Scalar(vt::U32, v.to_le_bytes().to_vec())
    }
    /// A string value.
    pub fn str(s: &str) -> Val {
        Val::Str(s.as_bytes().to_vec())
    }
    /// The type code.
    pub fn type_code(&self) -> u32 {
        match self {
            Val::Scalar(t, _) => *t,
            Val::Str(_) => vt::STRING,
            Val::Array(..) => vt::ARRAY,
        }
    }
    /// The value as a `u32`, if it is one.
    pub fn as_u32(&self) -> Option<u32> {
        match self {
            Val::Scalar(vt::U32, b) => Some(u32::from_le_bytes(b[..4].try_into().ok()?)),
            _ => None,
        }
    }
    /// The value as a string, if it is a valid UTF-8 one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// One key/value pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Kv {
    /// The key (bytes, so it may be made invalid).
    pub key: Vec<u8>,
    /// The value.
    pub value: Val,
}

/// One tensor info.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    /// The name.
    pub name: Vec<u8>,
    /// Dimensions, **GGUF order** (innermost first).
    pub dims: Vec<u64>,
    /// ggml type code.
    pub ggml_type: u32,
    /// Offset in the data section.
    pub offset: u64,
}

impl TensorEntry {
    /// The name as a string.
    pub fn name_str(&self) -> &str {
        std::str::from_utf8(&self.name).unwrap_or("<invalid>")
    }
    /// Number of elements.
    pub fn element_count(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Bytes of data for the types riffle reads (0 for any other type; saturating).
    pub fn byte_len(&self) -> u64 {
        let n = self.dims.iter().fold(1u64, |a, &d| a.saturating_mul(d));
        match self.ggml_type {
            ggml::F32 | ggml::I32 => n.saturating_mul(4),
            ggml::F16 | ggml::BF16 => n.saturating_mul(2),
            ggml::Q8_0 => (n / 32).saturating_mul(34),
            _ => 0,
        }
    }
}

/// Where the fields of one key/value pair are in the written file.
#[derive(Debug, Clone)]
pub struct KvPos {
    /// The whole pair.
    pub all: Range<usize>,
    /// The `u64` length of the key.
    pub key_len: usize,
    /// The `u32` value type.
    pub value_type: usize,
    /// The value (for a string, its `u64` length; for an array, its element type).
    pub value: usize,
}

/// Where the fields of one tensor info are in the written file.
#[derive(Debug, Clone)]
pub struct TensorPos {
    /// The whole info.
    pub all: Range<usize>,
    /// The `u64` length of the name.
    pub name_len: usize,
    /// The `u32` rank.
    pub rank: usize,
    /// The first `u64` dim.
    pub dims: usize,
    /// The `u32` ggml type.
    pub ggml_type: usize,
    /// The `u64` offset.
    pub offset: usize,
}

/// Byte layout of a written file.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Magic, version and the two counts: `0..24`.
    pub header: Range<usize>,
    /// All key/value pairs.
    pub metadata: Range<usize>,
    /// All tensor infos.
    pub tensor_table: Range<usize>,
    /// Start of the (aligned) data section.
    pub data_start: usize,
    /// End of the data span (end of the tensor that ends last).
    pub span_end: usize,
    /// Each pair.
    pub kvs: Vec<KvPos>,
    /// Each tensor info.
    pub tensors: Vec<TensorPos>,
}

/// A GGUF file taken apart.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufFile {
    /// The version (3).
    pub version: u32,
    /// Key/value pairs, in order.
    pub kvs: Vec<Kv>,
    /// Tensor infos, in order.
    pub tensors: Vec<TensorEntry>,
    /// The data section: everything from the aligned data start to the end of the file.
    pub data: Vec<u8>,
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        s
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn bytes(&mut self) -> Vec<u8> {
        let n = self.u64() as usize;
        self.take(n).to_vec()
    }
    fn value(&mut self, t: u32) -> Val {
        match t {
            vt::STRING => Val::Str(self.bytes()),
            vt::ARRAY => {
                let et = self.u32();
                let n = self.u64() as usize;
                Val::Array(et, (0..n).map(|_| self.value(et)).collect())
            }
            t => Val::Scalar(t, self.take(scalar_size(t)).to_vec()),
        }
    }
}

fn scalar_size(t: u32) -> usize {
    match t {
        vt::U8 | vt::I8 | vt::BOOL => 1,
        vt::U16 | vt::I16 => 2,
        vt::U32 | vt::I32 | vt::F32 => 4,
        vt::U64 | vt::I64 | vt::F64 => 8,
        t => panic!("gguf_edit: unknown value type {t}"),
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend((b.len() as u64).to_le_bytes());
    out.extend(b);
}

fn put_value(out: &mut Vec<u8>, v: &Val) {
    match v {
        Val::Scalar(_, b) => out.extend(b),
        Val::Str(s) => put_bytes(out, s),
        Val::Array(et, items) => {
            out.extend(et.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for i in items {
                put_value(out, i);
            }
        }
    }
}

impl GgufFile {
    /// Takes a valid GGUF v3 file apart.
    pub fn parse(bytes: &[u8]) -> GgufFile {
        assert_eq!(&bytes[..4], b"GGUF", "gguf_edit: not a GGUF file");
        let mut r = Reader { b: bytes, pos: 4 };
        let version = r.u32();
        let n_tensors = r.u64() as usize;
        let n_kv = r.u64() as usize;
        let mut kvs = Vec::new();
        for _ in 0..n_kv {
            let key = r.bytes();
            let t = r.u32();
            kvs.push(Kv {
                key,
                value: r.value(t),
            });
        }
        let mut tensors = Vec::new();
        for _ in 0..n_tensors {
            let name = r.bytes();
            let rank = r.u32() as usize;
            let dims = (0..rank).map(|_| r.u64()).collect();
            let ggml_type = r.u32();
            let offset = r.u64();
            tensors.push(TensorEntry {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let mut f = GgufFile {
            version,
            kvs,
            tensors,
            data: Vec::new(),
        };
        let start = r.pos.next_multiple_of(f.alignment());
        f.data = bytes[start.min(bytes.len())..].to_vec();
        f
    }

    /// `general.alignment` if it is a `u32`, else 32.
    pub fn alignment(&self) -> usize {
        self.get("general.alignment")
            .and_then(Val::as_u32)
            .filter(|a| a.is_power_of_two())
            .map_or(32, |a| a as usize)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Val> {
        self.kvs
            .iter()
            .find(|kv| kv.key == key.as_bytes())
            .map(|kv| &kv.value)
    }

    /// Index of the pair `key`.
    pub fn kv_index(&self, key: &str) -> usize {
        self.kvs
            .iter()
            .position(|kv| kv.key == key.as_bytes())
            .unwrap_or_else(|| panic!("gguf_edit: no key {key}"))
    }

    /// Sets `key` (replacing its value in place, or appending the pair).
    pub fn set(&mut self, key: &str, value: Val) -> &mut Self {
        match self.kvs.iter_mut().find(|kv| kv.key == key.as_bytes()) {
            Some(kv) => kv.value = value,
            None => self.kvs.push(Kv {
                key: key.as_bytes().to_vec(),
                value,
            }),
        }
        self
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &str) -> &mut Self {
        let i = self.kv_index(key);
        self.kvs.remove(i);
        self
    }

    /// Index of the tensor `name`.
    pub fn tensor_index(&self, name: &str) -> usize {
        self.tensors
            .iter()
            .position(|t| t.name == name.as_bytes())
            .unwrap_or_else(|| panic!("gguf_edit: no tensor {name}"))
    }

    /// The tensor `name`.
    pub fn tensor_mut(&mut self, name: &str) -> &mut TensorEntry {
        let i = self.tensor_index(name);
        &mut self.tensors[i]
    }

    /// Byte range of tensor `i`'s data inside [`GgufFile::data`].
    pub fn data_range(&self, i: usize) -> Range<usize> {
        let t = &self.tensors[i];
        t.offset as usize..t.offset.saturating_add(t.byte_len()) as usize
    }

    /// Element `j` of tensor `i` (F32 or F16), as `f32`.
    pub fn value(&self, i: usize, j: usize) -> f32 {
        let r = self.data_range(i);
        let d = &self.data[r];
        match self.tensors[i].ggml_type {
            ggml::F32 => f32::from_le_bytes(d[4 * j..4 * j + 4].try_into().unwrap()),
            ggml::F16 => half::f16::from_le_bytes(d[2 * j..2 * j + 2].try_into().unwrap()).to_f32(),
            t => panic!("gguf_edit: cannot read values of type {t}"),
        }
    }

    /// Writes element `j` of tensor `i` (F32 or F16; `v` rounded to half for F16, so
    /// NaN and the infinities stay what they are).
    pub fn set_value(&mut self, i: usize, j: usize, v: f32) -> &mut Self {
        let r = self.data_range(i);
        let ty = self.tensors[i].ggml_type;
        let d = &mut self.data[r];
        match ty {
            ggml::F32 => d[4 * j..4 * j + 4].copy_from_slice(&v.to_le_bytes()),
            ggml::F16 => d[2 * j..2 * j + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes()),
            t => panic!("gguf_edit: cannot write values of type {t}"),
        }
        self
    }

    /// End of the data span (relative to the data start): the end of the tensor that
    /// ends last.
    pub fn span_end(&self) -> usize {
        (0..self.tensors.len())
            .map(|i| self.data_range(i).end)
            .max()
            .unwrap_or(0)
    }

    /// Recomputes `riffle.data_crc32` over the data span (as a `u32`).
    pub fn fix_crc(&mut self) -> &mut Self {
        let end = self.span_end().min(self.data.len());
        let crc = riffle_core::checksum::crc32(&self.data[..end]);
        self.set("riffle.data_crc32", Val::u32(crc))
    }

    /// The file's bytes and where each field is.
    pub fn write(&self) -> (Vec<u8>, Layout) {
        let mut f = Vec::new();
        f.extend(b"GGUF");
        f.extend(self.version.to_le_bytes());
        f.extend((self.tensors.len() as u64).to_le_bytes());
        f.extend((self.kvs.len() as u64).to_le_bytes());
        let mut kvs = Vec::new();
        for kv in &self.kvs {
            let start = f.len();
            put_bytes(&mut f, &kv.key);
            let value_type = f.len();
            f.extend(kv.value.type_code().to_le_bytes());
            let value = f.len();
            put_value(&mut f, &kv.value);
            kvs.push(KvPos {
                all: start..f.len(),
                key_len: start,
                value_type,
                value,
            });
        }
        let metadata = 24..f.len();
        let mut tensors = Vec::new();
        for t in &self.tensors {
            let start = f.len();
            put_bytes(&mut f, &t.name);
            let rank = f.len();
            f.extend((t.dims.len() as u32).to_le_bytes());
            let dims = f.len();
            for d in &t.dims {
                f.extend(d.to_le_bytes());
            }
            let ggml_type = f.len();
            f.extend(t.ggml_type.to_le_bytes());
            let offset = f.len();
            f.extend(t.offset.to_le_bytes());
            tensors.push(TensorPos {
                all: start..f.len(),
                name_len: start,
                rank,
                dims,
                ggml_type,
                offset,
            });
        }
        let tensor_table = metadata.end..f.len();
        f.resize(f.len().next_multiple_of(self.alignment()), 0);
        let data_start = f.len();
        f.extend(&self.data);
        let layout = Layout {
            header: 0..24,
            metadata,
            tensor_table,
            data_start,
            span_end: data_start.saturating_add(self.span_end()),
            kvs,
            tensors,
        };
        (f, layout)
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.write().0
    }
}

/// Overwrites the little-endian `u64` at `pos`.
pub fn poke_u64(bytes: &mut [u8], pos: usize, v: u64) {
    bytes[pos..pos + 8].copy_from_slice(&v.to_le_bytes());
}

/// Overwrites the little-endian `u32` at `pos`.
pub fn poke_u32(bytes: &mut [u8], pos: usize, v: u32) {
    bytes[pos..pos + 4].copy_from_slice(&v.to_le_bytes());
}
