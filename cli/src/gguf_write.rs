//! A small GGUF v3 writer (format.md): typed key/value pairs, tensors with PyTorch-order
//! shapes (written innermost first), data aligned to 32 bytes. Used by `riffle merge`.

use riffle_core::checksum::{hex_lower, sha256};
use riffle_core::gguf::{TensorType, Value, ValueType, DEFAULT_ALIGNMENT, KEY_ALIGNMENT};

/// One metadata value, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum Meta {
    /// A `u32`.
    U32(u32),
    /// A string.
    Str(String),
    /// An array of strings.
    Strings(Vec<String>),
    /// Any value, already encoded: the GGUF type code and the payload bytes.
    Raw(u32, Vec<u8>),
}

impl Meta {
    /// An owned copy of a value read from a file.
    pub fn from_value(v: &Value<'_>) -> Meta {
        let mut payload = Vec::new();
        encode_value(v, &mut payload);
        Meta::Raw(v.value_type().code(), payload)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Meta::U32(v) => {
                out.extend(ValueType::U32.code().to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Meta::Str(s) => {
                out.extend(ValueType::String.code().to_le_bytes());
                put_str(out, s);
            }
            Meta::Strings(v) => {
                out.extend(ValueType::Array.code().to_le_bytes());
                out.extend(ValueType::String.code().to_le_bytes());
                out.extend((v.len() as u64).to_le_bytes());
                for s in v {
                    put_str(out, s);
                }
            }
            Meta::Raw(code, payload) => {
                out.extend(code.to_le_bytes());
                out.extend(payload);
            }
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// Encodes the payload of `v` (without its type code).
fn encode_value(v: &Value<'_>, out: &mut Vec<u8>) {
    match *v {
        Value::U8(x) => out.push(x),
        Value::I8(x) => out.extend(x.to_le_bytes()),
        Value::U16(x) => out.extend(x.to_le_bytes()),
        Value::I16(x) => out.extend(x.to_le_bytes()),
        Value::U32(x) => out.extend(x.to_le_bytes()),
        Value::I32(x) => out.extend(x.to_le_bytes()),
        Value::F32(x) => out.extend(x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(x)),
        Value::String(s) => put_str(out, s),
        Value::U64(x) => out.extend(x.to_le_bytes()),
        Value::I64(x) => out.extend(x.to_le_bytes()),
        Value::F64(x) => out.extend(x.to_le_bytes()),
        Value::Array(a) => {
            out.extend(a.element_type().code().to_le_bytes());
            out.extend((a.len() as u64).to_le_bytes());
            match a.as_le_bytes() {
                Some(raw) => out.extend(raw),
                None => {
                    for item in a.iter() {
                        encode_value(&item, out);
                    }
                }
            }
        }
    }
}

/// One tensor to write.
#[derive(Debug, Clone)]
pub struct Tensor {
    /// Name.
    pub name: String,
    /// Shape in PyTorch order (outermost first).
    pub shape: Vec<u64>,
    /// Data type.
    pub ty: TensorType,
    /// Exactly `ty.byte_len(product of shape)` bytes.
    pub data: Vec<u8>,
}

/// A GGUF file being assembled.
#[derive(Debug, Default)]
pub struct Writer {
    meta: Vec<(String, Meta)>,
    tensors: Vec<Tensor>,
}

impl Writer {
    /// An empty file.
    pub fn new() -> Self {
        Writer::default()
    }

    /// Sets `key` (replacing an earlier value, keeping its position).
    pub fn set(&mut self, key: &str, value: Meta) {
        match self.meta.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.meta.push((key.to_string(), value)),
        }
    }

    /// Appends a tensor.
    pub fn tensor(&mut self, t: Tensor) {
        self.tensors.push(t);
    }

    /// The file's alignment: `general.alignment` when it is set (a power of two, as a
    /// `u32`), else GGUF's default of 32. A copy of a file keeps its alignment, so its
    /// tensors land where its metadata says (`riffle merge`).
    fn alignment(&self) -> usize {
        match self.meta.iter().find(|(k, _)| k == KEY_ALIGNMENT) {
            Some((_, Meta::U32(a))) if a.is_power_of_two() => *a as usize,
            // A value copied from a file (`Meta::from_value`): a `u32` payload.
            Some((_, Meta::Raw(code, p))) if *code == ValueType::U32.code() => {
                match <[u8; 4]>::try_from(p.as_slice()).map(u32::from_le_bytes) {
                    Ok(a) if a.is_power_of_two() => a as usize,
                    _ => DEFAULT_ALIGNMENT as usize,
                }
            }
            _ => DEFAULT_ALIGNMENT as usize,
        }
    }

    /// The data section as laid out (each tensor at a multiple of the alignment), the
    /// offsets, and the data span's length (up to the end of the last tensor).
    fn layout(&self) -> (Vec<u8>, Vec<u64>, usize) {
        let align = self.alignment();
        let mut data = Vec::new();
        let mut offsets = Vec::with_capacity(self.tensors.len());
        let mut span = 0;
        for t in &self.tensors {
            while data.len() % align != 0 {
                data.push(0);
            }
            offsets.push(data.len() as u64);
            data.extend(&t.data);
            span = data.len();
        }
        (data, offsets, span)
    }

    /// Lowercase hex SHA-256 of the data span the file will have (`riffle.model_id`).
    pub fn model_id(&self) -> String {
        let (data, _, span) = self.layout();
        hex_lower(&sha256(&data[..span])).to_string()
    }

    /// CRC-32 of the data span the file will have (`riffle.data_crc32`).
    pub fn data_crc32(&self) -> u32 {
        let (data, _, span) = self.layout();
        riffle_core::checksum::crc32(&data[..span])
    }

    /// The whole file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let align = self.alignment();
        let (data, offsets, _) = self.layout();
        let mut out = Vec::with_capacity(data.len() + 4096);
        out.extend(b"GGUF");
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.meta.len() as u64).to_le_bytes());
        for (k, v) in &self.meta {
            put_str(&mut out, k);
            v.encode(&mut out);
        }
        for (t, off) in self.tensors.iter().zip(&offsets) {
            put_str(&mut out, &t.name);
            out.extend((t.shape.len() as u32).to_le_bytes());
            for d in t.shape.iter().rev() {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ty.ggml_code().to_le_bytes());
            out.extend(off.to_le_bytes());
        }
        while out.len() % align != 0 {
            out.push(0);
        }
        out.extend(&data);
        out
    }
}

/// Little-endian bytes of `f32` values.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use riffle_core::gguf::Gguf;

    #[test]
    fn written_file_reads_back() {
        let mut w = Writer::new();
        w.set("general.architecture", Meta::Str("mlp".into()));
        w.set("mlp.input_length", Meta::U32(3));
        w.set("riffle.labels", Meta::Strings(vec!["a".into(), "b".into()]));
        w.tensor(Tensor {
            name: "x".into(),
            shape: vec![2, 3],
            ty: TensorType::F32,
            data: f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        });
        w.tensor(Tensor {
            name: "y".into(),
            shape: vec![1],
            ty: TensorType::F32,
            data: f32_bytes(&[7.0]),
        });
        let id = w.model_id();
        w.set("riffle.model_id", Meta::Str(id.clone()));
        let bytes = w.to_bytes();
        let g = Gguf::parse(&bytes).unwrap();
        assert_eq!(g.get_str("general.architecture").unwrap(), "mlp");
        assert_eq!(g.get_u32("mlp.input_length").unwrap(), 3);
        assert_eq!(g.get_strings("riffle.labels").unwrap().get(1), Some("b"));
        let x = g.find_tensor("x").unwrap();
        assert_eq!(x.shape(), &[2, 3]);
        let mut row = [0.0f32; 3];
        x.decode_row(1, &mut row).unwrap();
        assert_eq!(row, [4.0, 5.0, 6.0]);
        assert_eq!(g.find_tensor("y").unwrap().offset(), 32);
        assert_eq!(g.compute_model_id().as_str(), id);

        // Copying every value of a file reproduces it byte for byte.
        let mut copy = Writer::new();
        for (k, v) in g.metadata() {
            copy.set(k, Meta::from_value(&v));
        }
        for t in g.tensors() {
            copy.tensor(Tensor {
                name: t.name().into(),
                shape: t.shape().to_vec(),
                ty: t.ggml_type(),
                data: t.data().to_vec(),
            });
        }
        assert_eq!(copy.to_bytes(), bytes);
    }
}
