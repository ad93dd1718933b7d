//! Host tests of the `Engine` the browser runs: it gives the native core's outputs that
//! `build.rs` computed (which `web.rs` compares the wasm build against) and stays within
//! the float64 reference of `tests/data/golden`; errors are worded like the CLI's; merged
//! switches match unmerged runs; `info()` reports the sizes.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::{Path, PathBuf};

use riffle_wasm::engine::Engine;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn engine(base: &str, adapter: Option<&str>, merged: bool) -> Engine {
    let dir = root().join("models/digits");
    let bytes = std::fs::read(dir.join(format!("{base}.gguf"))).expect("base file");
    let mut e = Engine::new(bytes, Some(base)).expect("base loads");
    if let Some(a) = adapter {
        let bytes = std::fs::read(dir.join(format!("{a}.gguf"))).expect("adapter file");
        let h = e.add_adapter(bytes, Some(a)).expect("adapter loads");
        e.use_adapter(Some(h)).expect("switch");
    }
    e.set_merged(merged).expect("merged");
    e
}

#[test]
fn engine_equals_the_native_core_and_the_float64_reference() {
    assert_eq!(common::CASES.len(), 20);
    for case in common::CASES {
        let mut e = engine(case.base, case.adapter, case.merged);
        for (r, (x, want)) in case.inputs.iter().zip(case.outputs).enumerate() {
            let got = e.run_vector(x).expect("run");
            // The same core on the same machine: identical.
            assert_eq!(
                got.output, *want,
                "{:?} merged={} row {r}",
                case.adapter, case.merged
            );
        }
    }
    // The golden files (float64 PyTorch reference) hold the same held-out rows.
    for case in common::CASES.iter().filter(|c| !c.merged) {
        let name = format!("{}.json", case.adapter.unwrap_or(case.base));
        let golden = read_json(&root().join("tests/data/golden").join(&name));
        let key = if case.adapter.is_some() {
            "adapter_logits"
        } else {
            "base_logits"
        };
        let tol = golden["tolerance"]["logits_abs"].as_f64().unwrap_or(1e-4) as f32;
        for (r, (x, out)) in case.inputs.iter().zip(case.outputs).enumerate() {
            for (c, v) in x.iter().enumerate() {
                let want = golden["inputs"][r][c].as_f64().expect("golden input") as f32;
                assert_eq!(
                    *v, want,
                    "{name}: input row {r} differs from the golden file"
                );
            }
            for (c, v) in out.iter().enumerate() {
                let want = golden[key][r][c].as_f64().expect("golden logit") as f32;
                assert!(
                    (v - want).abs() <= tol,
                    "{name} row {r} col {c}: {v} vs float64 {want}"
                );
            }
        }
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
    let e = e.expect_err("truncated").to_string();
    assert!(
        e.starts_with("half.gguf: file is truncated or corrupt: "),
        "{e}"
    );
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
