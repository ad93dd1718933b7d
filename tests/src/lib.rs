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
