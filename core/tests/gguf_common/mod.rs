//! Shared helpers of the GGUF reader tests: fixture loading, a hand-made GGUF
//! builder for hostile inputs, and a walk that touches every accessor.
#![allow(dead_code)]

use riffle_core::gguf::{Gguf, Value};
use std::path::PathBuf;

/// `tests/data/gguf/` at the repository root.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/gguf")
}

/// The bytes of fixture `name`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = data_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The names of all GGUF fixtures.
pub const FIXTURES: [&str; 4] = [
    "all_types.gguf",
    "bert_mini.gguf",
    "mlp_base.gguf",
    "mlp_adapter.gguf",
];

/// GGUF value type codes.
pub mod vt {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
}

/// Builds GGUF v3 files field by field, including wrong ones.
pub struct Builder {
    pub magic: [u8; 4],
    pub version: u32,
    pub alignment: usize,
    kv: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    n_tensors: u64,
    data: Vec<u8>,
    /// Overrides of the counts written in the header.
    pub kv_count_override: Option<u64>,
    pub tensor_count_override: Option<u64>,
}

pub fn gguf_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s);
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    pub fn new() -> Self {
        Builder {
            magic: *b"GGUF",
            version: 3,
            alignment: 32,
            kv: Vec::new(),
            n_kv: 0,
            infos: Vec::new(),
            n_tensors: 0,
            data: Vec::new(),
            kv_count_override: None,
            tensor_count_override: None,
        }
    }

    /// A key with a raw value (type code, then `value` bytes as given).
    pub fn kv_raw(&mut self, key: &[u8], vtype: u32, value: &[u8]) -> &mut Self {
        gguf_string(&mut self.kv, key);
        self.kv.extend(vtype.to_le_bytes());
        self.kv.extend(value);
        self.n_kv += 1;
        self
    }

    pub fn kv_str(&mut self, key: &str, value: &str) -> &mut Self {
        let mut v = Vec::new();
        gguf_string(&mut v, value.as_bytes());
        self.kv_raw(key.as_bytes(), vt::STRING, &v)
    }

    pub fn kv_u32(&mut self, key: &str, value: u32) -> &mut Self {
        self.kv_raw(key.as_bytes(), vt::U32, &value.to_le_bytes())
    }

    /// A string array.
    pub fn kv_strings(&mut self, key: &str, items: &[&[u8]]) -> &mut Self {
        let mut v = Vec::new();
        v.extend(vt::STRING.to_le_bytes());
        v.extend((items.len() as u64).to_le_bytes());
        for s in items {
            gguf_string(&mut v, s);
        }
        self.kv_raw(key.as_bytes(), vt::ARRAY, &v)
    }

    /// A tensor info with an explicit offset; no data is added.
    pub fn tensor_info(
        &mut self,
        name: &[u8],
        ggml_dims: &[u64],
        ggml_type: u32,
        offset: u64,
    ) -> &mut Self {
        gguf_string(&mut self.infos, name);
        self.infos.extend((ggml_dims.len() as u32).to_le_bytes());
        for d in ggml_dims {
            self.infos.extend(d.to_le_bytes());
        }
        self.infos.extend(ggml_type.to_le_bytes());
        self.infos.extend(offset.to_le_bytes());
        self.n_tensors += 1;
        self
    }

    /// A tensor with its data appended to the data section at the next aligned offset.
    pub fn tensor(
        &mut self,
        name: &str,
        ggml_dims: &[u64],
        ggml_type: u32,
        bytes: &[u8],
    ) -> &mut Self {
        while !self.data.len().is_multiple_of(self.alignment) {
            self.data.push(0);
        }
        let offset = self.data.len() as u64;
        self.data.extend(bytes);
        self.tensor_info(name.as_bytes(), ggml_dims, ggml_type, offset)
    }

    /// An F32 tensor with the given values.
    pub fn f32_tensor(&mut self, name: &str, ggml_dims: &[u64], values: &[f32]) -> &mut Self {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, ggml_dims, 0, &bytes)
    }

    /// Raw bytes appended to the data section.
    pub fn data_bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.data.extend(bytes);
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend(self.magic);
        f.extend(self.version.to_le_bytes());
        f.extend(
            self.tensor_count_override
                .unwrap_or(self.n_tensors)
                .to_le_bytes(),
        );
        f.extend(self.kv_count_override.unwrap_or(self.n_kv).to_le_bytes());
        f.extend(&self.kv);
        f.extend(&self.infos);
        while f.len() % self.alignment != 0 {
            f.push(0);
        }
        f.extend(&self.data);
        f
    }
}

/// Touches every accessor of a parsed file, decoding every tensor, so that the
/// never-panic tests also cover what happens after a successful parse.
pub fn walk_everything(g: &Gguf<'_>) -> usize {
    let mut n = 0usize;
    for (key, value) in g.metadata() {
        n += key.len();
        assert!(
            g.get(key).is_some(),
            "key {key:?} from metadata() not found by get()"
        );
        touch_value(&value, &mut n);
    }
    let _ = g.get_str("general.architecture");
    let _ = g.stored_model_id();
    let _ = g.verify_crc();
    n += g.data_span().len();
    let mut count = 0;
    for t in g.tensors() {
        count += 1;
        n += t.name().len() + t.shape().len();
        assert_eq!(
            t.data().len() as u64,
            t.ggml_type().byte_len(t.element_count() as u64).unwrap()
        );
        let mut buf = vec![0f32; t.element_count().min(4096)];
        if t.ggml_type().is_float() {
            t.decode_f32(0, &mut buf).unwrap();
            if t.row_len() > 0 && t.row_count() > 0 && t.row_len() <= 4096 {
                let mut row = vec![0f32; t.row_len()];
                t.decode_row(t.row_count() - 1, &mut row).unwrap();
            }
        } else {
            let mut ibuf = vec![0i32; buf.len()];
            t.decode_i32(0, &mut ibuf).unwrap();
        }
        assert!(g.find_tensor(t.name()).is_some());
    }
    assert_eq!(count, g.tensor_count());
    n
}

fn touch_value(v: &Value<'_>, n: &mut usize) {
    match v {
        Value::String(s) => *n += s.len(),
        Value::Array(a) => {
            let mut seen = 0;
            for e in a.iter() {
                seen += 1;
                if let Value::String(s) = e {
                    *n += s.len();
                }
            }
            assert_eq!(seen, a.len());
            if let Some(strings) = a.as_strings() {
                for (loc, s) in strings.iter() {
                    assert_eq!(strings.str_at(loc), Some(s));
                }
            }
            let _ = a.get(a.len().saturating_sub(1));
        }
        other => {
            let _ = (
                other.as_u64(),
                other.as_i64(),
                other.as_f32(),
                other.as_bool(),
            );
        }
    }
}
