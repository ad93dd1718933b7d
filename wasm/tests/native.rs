//! Host half of the wasm equivalence test: runs the digits bases and adapters through the
//! same `Engine` the browser uses, natively, on the golden inputs, and checks the outputs
//! stored in `tests/data/native.json`, which `web.rs` compares the wasm build against
//! (within 1e-5) in headless Chromium.
//!
//! After a change to the models or the core's numerics, regenerate the file with
//! `RIFFLE_BLESS=1 cargo test -p riffle-wasm --test native` and commit it.
#![cfg(not(target_arch = "wasm32"))]

use std::path::{Path, PathBuf};

use riffle_wasm::engine::Engine;
use serde_json::{json, Value};

/// Native vs the stored native outputs: same code, same platform class, so tight.
const NATIVE_TOL: f32 = 1e-6;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn inputs_of(golden: &Value) -> Vec<Vec<f32>> {
    golden["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .map(|v| v.as_f64().expect("number") as f32)
                .collect()
        })
        .collect()
}

/// (base, adapter) pairs in the order of the stored file.
fn cases() -> Vec<(&'static str, Option<&'static str>)> {
    let mut v = Vec::new();
    for base in ["mlp", "cnn"] {
        v.push((base, None));
        for task in ["rotated", "inverted", "noisy", "parity"] {
            let name: &'static str = Box::leak(format!("{base}-{task}").into_boxed_str());
            v.push((base, Some(name)));
        }
    }
    v
}

fn run_case(base: &str, adapter: Option<&str>, merged: bool, inputs: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let dir = root().join("models/digits");
    let bytes = std::fs::read(dir.join(format!("{base}.gguf"))).expect("base file");
    let mut e = Engine::new(bytes, Some(base)).expect("base loads");
    if let Some(a) = adapter {
        let bytes = std::fs::read(dir.join(format!("{a}.gguf"))).expect("adapter file");
        let h = e.add_adapter(bytes, Some(a)).expect("adapter loads");
        e.use_adapter(Some(h)).expect("switch");
    }
    e.set_merged(merged).expect("merged");
    inputs
        .iter()
        .map(|x| e.run_vector(x).expect("run").output.to_vec())
        .collect()
}

fn golden_name(base: &str, adapter: Option<&str>) -> String {
    format!("{}.json", adapter.unwrap_or(base))
}

#[test]
fn native_outputs_match_the_stored_expectations() {
    let stored_path = root().join("wasm/tests/data/native.json");
    let bless = std::env::var_os("RIFFLE_BLESS").is_some();
    let mut out_cases = Vec::new();
    let stored = if bless {
        Value::Null
    } else {
        read_json(&stored_path)
    };
    for (i, (base, adapter)) in cases().into_iter().enumerate() {
        let golden_file = golden_name(base, adapter);
        let golden = read_json(&root().join("tests/data/golden").join(&golden_file));
        let inputs = inputs_of(&golden);
        for merged in [false, true] {
            let got = run_case(base, adapter, merged, &inputs);
            // Honesty check against the float64 reference too (its own tolerance).
            let key = if adapter.is_some() {
                "adapter_logits"
            } else {
                "base_logits"
            };
            let tol64 = golden["tolerance"]["logits_abs"].as_f64().unwrap_or(1e-4) as f32;
            for (r, row) in got.iter().enumerate() {
                for (c, v) in row.iter().enumerate() {
                    let want = golden[key][r][c].as_f64().expect("golden logit") as f32;
                    assert!(
                        (v - want).abs() <= tol64,
                        "{golden_file} merged={merged} row {r} col {c}: {v} vs float64 {want}"
                    );
                }
            }
            if bless {
                out_cases.push(json!({
                    "base": base,
                    "adapter": adapter,
                    "golden": golden_file,
                    "merged": merged,
                    "outputs": got,
                }));
            } else {
                let case = &stored["cases"][2 * i + usize::from(merged)];
                assert_eq!(case["golden"], json!(golden_file), "stored case order");
                assert_eq!(case["merged"], json!(merged), "stored case order");
                for (r, row) in got.iter().enumerate() {
                    for (c, v) in row.iter().enumerate() {
                        let want = case["outputs"][r][c].as_f64().expect("stored") as f32;
                        assert!(
                            (v - want).abs() <= NATIVE_TOL,
                            "{golden_file} merged={merged} row {r} col {c}: {v} vs stored {want}; \
                             regenerate with RIFFLE_BLESS=1 if the models changed"
                        );
                    }
                }
            }
        }
    }
    if bless {
        let doc = json!({
            "generator": "RIFFLE_BLESS=1 cargo test -p riffle-wasm --test native (native x86-64 run of riffle_wasm::engine::Engine)",
            "inputs": "the `inputs` of tests/data/golden/<golden>",
            "cases": out_cases,
        });
        let text = serde_json::to_string(&doc).expect("serialise");
        std::fs::write(&stored_path, text + "\n").expect("write native.json");
    }
}

#[test]
fn errors_are_worded_like_the_cli() {
    let dir = root().join("models/digits");
    let e = Engine::new(b"not a gguf file".to_vec(), None).expect_err("garbage");
    assert_eq!(e.to_string(), "model: not a GGUF file (bad magic)");
    let adapter_bytes = std::fs::read(dir.join("mlp-noisy.gguf")).expect("adapter");
    let e = Engine::new(adapter_bytes, Some("mlp-noisy.gguf")).expect_err("adapter as base");
    assert_eq!(
        e.to_string(),
        "mlp-noisy.gguf: is an adapter, not a base model"
    );

    let mlp_bytes = std::fs::read(dir.join("mlp.gguf")).expect("mlp");
    let mut mlp = Engine::new(mlp_bytes, Some("mlp.gguf")).expect("mlp");
    let good = std::fs::read(dir.join("mlp-rotated.gguf")).expect("adapter");
    let h = mlp
        .add_adapter(good.clone(), Some("mlp-rotated.gguf"))
        .expect("ok");
    mlp.use_adapter(Some(h)).expect("switch");
    let x = vec![0.25f32; 64];
    let before = mlp.run_vector(&x).expect("run").output.to_vec();

    let mut corrupt = good.clone();
    let data = riffle_core::gguf::Gguf::parse(&good)
        .expect("parse")
        .data_offset();
    corrupt[data + 5] ^= 0x40; // inside the first tensor's data, under the CRC
    let e = mlp
        .add_adapter(corrupt, Some("bad.gguf"))
        .expect_err("corrupt adapter");
    assert!(
        e.to_string()
            .starts_with("bad.gguf: CRC mismatch: file says "),
        "{e}"
    );
    let cnn_adapter = std::fs::read(dir.join("cnn-rotated.gguf")).expect("cnn adapter");
    let e = mlp.add_adapter(cnn_adapter, None).expect_err("wrong base");
    assert_eq!(
        e.to_string(),
        "adapter: adapter is for a `cnn` base, but the base is a `mlp` model"
    );
    let e = mlp
        .add_adapter(good.clone(), Some("again.gguf"))
        .expect_err("same task twice");
    assert_eq!(
        e.to_string(),
        "again.gguf: task `rotated` is already given by resident adapter 0"
    );
    let base = std::fs::read(dir.join("cnn.gguf")).expect("cnn");
    let e = mlp.add_adapter(base, Some("cnn.gguf")).expect_err("a base");
    assert_eq!(e.to_string(), "cnn.gguf: is a base model, not an adapter");
    let e = mlp.add_adapter(good[..good.len() / 2].to_vec(), Some("half.gguf"));
    assert!(e
        .expect_err("truncated")
        .to_string()
        .starts_with("half.gguf: "));
    let e = mlp.run_vector(&[0.0; 3]).expect_err("short input");
    assert_eq!(
        e.to_string(),
        "input: input has the wrong length or kind for this model"
    );
    let e = mlp.use_adapter(Some(7)).expect_err("unknown handle");
    assert!(e.to_string().starts_with("adapter handle: "), "{e}");
    // The previous adapter is still active and answers the same.
    assert_eq!(mlp.active(), Some(h));
    assert_eq!(mlp.run_vector(&x).expect("run").output, before.as_slice());
    assert_eq!(mlp.info().adapters.len(), 1);
}

#[test]
fn merged_switches_match_unmerged_and_info_reports_sizes() {
    let dir = root().join("models/digits");
    let mut e = Engine::new(std::fs::read(dir.join("cnn.gguf")).expect("cnn"), None).expect("cnn");
    let mut handles = Vec::new();
    for task in ["rotated", "inverted", "noisy", "parity"] {
        let name = format!("cnn-{task}.gguf");
        let bytes = std::fs::read(dir.join(&name)).expect("adapter");
        handles.push(e.add_adapter(bytes, Some(&name)).expect("adapter"));
    }
    let x: Vec<f32> = (0..64).map(|i| ((i * 7) % 17) as f32 / 16.0).collect();
    let mut unmerged = Vec::new();
    for h in [None, Some(0), Some(1), Some(2), Some(3)] {
        e.use_adapter(h).expect("switch");
        unmerged.push(e.run_vector(&x).expect("run").output.to_vec());
    }
    e.set_merged(true).expect("merge");
    for _round in 0..3 {
        for (k, h) in [None, Some(0), Some(1), Some(2), Some(3)]
            .into_iter()
            .enumerate()
            .rev()
        {
            e.use_adapter(h).expect("swap");
            let got = e.run_vector(&x).expect("run");
            assert_eq!(got.output.len(), unmerged[k].len());
            for (a, b) in got.output.iter().zip(&unmerged[k]) {
                assert!((a - b).abs() < 1e-4, "merged {a} vs unmerged {b}");
            }
        }
    }
    e.use_adapter(Some(3)).expect("parity");
    assert_eq!(e.labels(), ["even", "odd"]);
    let info = e.info();
    assert_eq!(info.architecture, "cnn");
    assert_eq!(info.model_bytes, 15616);
    assert_eq!(info.adapters.len(), 4);
    assert_eq!(info.adapters[0].file_bytes, 3648);
    assert!(info.arena_bytes > 0 && info.merged_bytes == 4 * e.model().merged_len());
    assert!(info.merged);
    e.set_merged(false).expect("unmerge");
    assert!(!e.info().merged);
    assert_eq!(
        e.info().merged_bytes,
        4 * e.model().merged_len(),
        "buffer kept"
    );
}
