//! A small, strict reader of NumPy `.npy` files: format versions 1, 2 and 3, `'<f4'`
//! (little-endian float32), C order, shape `(d,)` or `(batch, d)`. Anything else is a
//! clear error, never a guess.

/// A float32 matrix read from a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Npy {
    /// Rows (1 for a file of shape `(d,)`).
    pub rows: usize,
    /// Row length `d`.
    pub cols: usize,
    /// `rows × cols` values, row-major.
    pub data: Vec<f32>,
}

impl Npy {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

const MAGIC: &[u8] = b"\x93NUMPY";

/// Parses a whole `.npy` file.
///
/// # Errors
/// A message (without the file name) for every way the file is not a float32 vector or
/// matrix in C order.
pub fn parse(bytes: &[u8]) -> Result<Npy, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a NumPy .npy file (bad magic)".into());
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated .npy header".into());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        _ => return Err(format!("unsupported .npy format version {major}.{minor}")),
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| "the .npy header is not text")?
        .trim_end_matches(['\n', ' ', '\0']);
    let descr = field(header, "descr")?;
    let descr = descr.trim_matches(['\'', '"']);
    if descr != "<f4" {
        let what = match descr {
            "<f8" | "f8" => "float64".to_string(),
            "<f2" => "float16".to_string(),
            ">f4" => "big-endian float32".to_string(),
            d if d.contains('i') => format!("integers ({d})"),
            d => d.to_string(),
        };
        return Err(format!(
            "dtype is {what}; riffle reads float32 ('<f4') only (use x.astype(np.float32))"
        ));
    }
    match field(header, "fortran_order")? {
        "False" => {}
        "True" => {
            return Err(
                "array is in Fortran order; save a C-ordered array (np.ascontiguousarray)".into(),
            )
        }
        v => return Err(format!("bad fortran_order value `{v}` in the .npy header")),
    }
    let shape = parse_shape(field(header, "shape")?)?;
    let (rows, cols) = match shape.as_slice() {
        [d] => (1, *d),
        [b, d] => (*b, *d),
        s => {
            return Err(format!(
                "shape is {}; riffle reads (d,) or (batch, d)",
                show_shape(s)
            ))
        }
    };
    if rows == 0 || cols == 0 {
        return Err(format!("shape {} is empty", show_shape(&shape)));
    }
    let n = rows.checked_mul(cols).ok_or("shape too large")?;
    let data = &bytes[end..];
    let want = n.checked_mul(4).ok_or("shape too large")?;
    if data.len() != want {
        return Err(format!(
            "shape {} needs {want} bytes of data, the file has {}{}",
            show_shape(&shape),
            data.len(),
            if data.len() < want {
                " (truncated)"
            } else {
                ""
            }
        ));
    }
    let data = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Npy { rows, cols, data })
}

/// The raw value of `'key': value` in the header dict (up to the next top-level comma).
fn field<'h>(header: &'h str, key: &str) -> Result<&'h str, String> {
    let h = header.trim();
    if !(h.starts_with('{') && h.ends_with('}')) {
        return Err("the .npy header is not a dict".into());
    }
    for quote in ['\'', '"'] {
        let pat = format!("{quote}{key}{quote}");
        if let Some(at) = h.find(&pat) {
            let rest = h[at + pat.len()..].trim_start();
            let rest = rest
                .strip_prefix(':')
                .ok_or_else(|| format!("bad `{key}` entry in the .npy header"))?
                .trim_start();
            // Up to the comma that ends the value (commas inside a tuple are skipped).
            let mut depth = 0i32;
            for (i, c) in rest.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    ',' | '}' if depth == 0 => return Ok(rest[..i].trim()),
                    _ => {}
                }
            }
            return Err(format!("bad `{key}` entry in the .npy header"));
        }
    }
    Err(format!("the .npy header has no `{key}`"))
}

fn parse_shape(s: &str) -> Result<Vec<usize>, String> {
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("bad shape `{s}` in the .npy header"))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| format!("bad shape `{s}` in the .npy header"))
        })
        .collect()
}

fn show_shape(s: &[usize]) -> String {
    match s {
        [] => "() (a scalar)".into(),
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            s.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Writes a `.npy` v1 file of float32 (for tests).
#[cfg(test)]
pub fn write(rows: Option<usize>, cols: usize, data: &[f32]) -> Vec<u8> {
    let shape = match rows {
        Some(r) => format!("({r}, {cols})"),
        None => format!("({cols},)"),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_matrix_and_vector() {
        let m = parse(&write(Some(2), 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])).unwrap();
        assert_eq!((m.rows, m.cols), (2, 3));
        assert_eq!(m.row(1), &[4.0, 5.0, 6.0]);
        let v = parse(&write(None, 2, &[0.5, -1.0])).unwrap();
        assert_eq!((v.rows, v.cols, v.data), (1, 2, vec![0.5, -1.0]));
    }

    fn with_header(h: &str, data_len: usize) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend(std::iter::repeat_n(0u8, data_len));
        out
    }

    #[test]
    fn strict_errors() {
        let f8 = with_header(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }\n",
            32,
        );
        assert!(parse(&f8).unwrap_err().contains("float64"));
        let fo = with_header(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }\n",
            16,
        );
        assert!(parse(&fo).unwrap_err().contains("Fortran"));
        let r3 = with_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 2), }\n",
            16,
        );
        assert!(parse(&r3).unwrap_err().contains("(1, 2, 2)"));
        let short = with_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }\n",
            15,
        );
        assert!(parse(&short).unwrap_err().contains("truncated"));
        let scalar = with_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (), }\n",
            4,
        );
        assert!(parse(&scalar).unwrap_err().contains("scalar"));
        assert!(parse(b"GGUF\x03\0\0\0\0\0\0\0")
            .unwrap_err()
            .contains("magic"));
        let v2 = {
            let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n";
            let mut out = MAGIC.to_vec();
            out.extend_from_slice(&[2, 0]);
            out.extend_from_slice(&(h.len() as u32).to_le_bytes());
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(&1.5f32.to_le_bytes());
            out
        };
        assert_eq!(parse(&v2).unwrap().data, vec![1.5]);
    }
}
