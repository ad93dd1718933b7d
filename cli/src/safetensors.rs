//! A small, strict reader of `.safetensors` files (what PEFT's `save_pretrained` writes):
//! a `u64` header length, a JSON header naming each tensor's dtype, shape and byte range,
//! then the data. Tensors are decoded to `f32`.

use serde_json::Value;

/// One tensor, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Name.
    pub name: String,
    /// Shape (row-major, outermost first).
    pub shape: Vec<usize>,
    /// Values as `f32`.
    pub data: Vec<f32>,
}

/// Parses a whole file; tensors in header order (sorted by name, as written).
///
/// # Errors
/// A message for a truncated file, a bad header, an unsupported dtype or a byte range that
/// does not match the shape.
pub fn parse(bytes: &[u8]) -> Result<Vec<Tensor>, String> {
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .ok_or("not a safetensors file (shorter than its header length)")?;
    let n = usize::try_from(n).map_err(|_| "bad safetensors header length")?;
    let end = 8usize
        .checked_add(n)
        .filter(|&e| e <= bytes.len())
        .ok_or("not a safetensors file, or truncated (header runs past the end)")?;
    let header: Value = serde_json::from_slice(&bytes[8..end])
        .map_err(|e| format!("safetensors header is not JSON: {e}"))?;
    let obj = header
        .as_object()
        .ok_or("safetensors header is not a JSON object")?;
    let data = &bytes[end..];
    let mut out = Vec::new();
    for (name, info) in obj {
        if name == "__metadata__" {
            continue;
        }
        let dtype = info["dtype"]
            .as_str()
            .ok_or_else(|| format!("tensor `{name}` has no dtype"))?;
        let shape: Vec<usize> = info["shape"]
            .as_array()
            .ok_or_else(|| format!("tensor `{name}` has no shape"))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("tensor `{name}` has a bad shape"))?;
        let offs = info["data_offsets"]
            .as_array()
            .filter(|a| a.len() == 2)
            .and_then(|a| Some((a[0].as_u64()? as usize, a[1].as_u64()? as usize)))
            .ok_or_else(|| format!("tensor `{name}` has bad data_offsets"))?;
        // Checked: a shape whose product wraps must not pass as a small tensor.
        let count = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("tensor `{name}` has a shape {shape:?} too large to hold"))?;
        let width = match dtype {
            "F32" => 4,
            "F16" | "BF16" => 2,
            "F64" => 8,
            d => {
                return Err(format!(
                    "tensor `{name}` has dtype {d}; riffle reads F32, F16, BF16 and F64"
                ))
            }
        };
        let raw = data
            .get(offs.0..offs.1)
            .ok_or_else(|| format!("tensor `{name}` lies outside the file (truncated?)"))?;
        if Some(raw.len()) != count.checked_mul(width) {
            return Err(format!(
                "tensor `{name}`: {} bytes for shape {shape:?} of {dtype}",
                raw.len()
            ));
        }
        let values = match dtype {
            "F32" => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            "F16" => raw
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            "BF16" => raw
                .chunks_exact(2)
                .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                .collect(),
            _ => raw
                .chunks_exact(8)
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
        };
        out.push(Tensor {
            name: name.clone(),
            shape,
            data: values,
        });
    }
    Ok(out)
}

/// IEEE half to single (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: renormalise.
            let mut e = 127 - 15 + 1;
            let mut m = m;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((m & 0x3ff) << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn reads_f32_f16_bf16() {
        let mut data = Vec::new();
        data.extend(1.5f32.to_le_bytes());
        data.extend(0x3c00u16.to_le_bytes()); // 1.0 in f16
        data.extend(0x0001u16.to_le_bytes()); // smallest subnormal f16
        data.extend(0x4040u16.to_le_bytes()); // 3.0 in bf16
        let h = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[2],"data_offsets":[4,8]},"c":{"dtype":"BF16","shape":[1,1],"data_offsets":[8,10]}}"#;
        let t = parse(&file(h, &data)).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].data, vec![1.5]);
        assert_eq!(t[1].data, vec![1.0, 2f32.powi(-24)]);
        assert_eq!(
            (t[2].shape.clone(), t[2].data.clone()),
            (vec![1, 1], vec![3.0])
        );
    }

    #[test]
    fn refuses_bad_files() {
        assert!(parse(b"abc").is_err());
        assert!(parse(&file("{", b"")).unwrap_err().contains("JSON"));
        let h = r#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#;
        assert!(parse(&file(h, &[0; 8])).unwrap_err().contains("I64"));
        let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        assert!(parse(&file(h, &[0; 4])).unwrap_err().contains("outside"));
    }
}
