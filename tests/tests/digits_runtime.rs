//! The runtime on the committed digits models: golden logits from the PyTorch path
//! (float64, from the stored parameters), unmerged and merged, and adapter swaps.

use riffle_core::runtime::{Adapter, Input, Model, Session};
use riffle_tests::{data_path, json_rows, read_repo_file};
use serde_json::Value;

/// Rows of a JSON fixture as `f32`.
fn rows_f32(v: &Value) -> Vec<Vec<f32>> {
    json_rows(v)
        .into_iter()
        .map(|r| r.into_iter().map(|x| x as f32).collect())
        .collect()
}

fn golden(name: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(data_path(&format!("golden/{name}.json"))).unwrap(),
    )
    .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const GOLDENS: [&str; 10] = [
    "mlp",
    "mlp-rotated",
    "mlp-inverted",
    "mlp-noisy",
    "mlp-parity",
    "cnn",
    "cnn-rotated",
    "cnn-inverted",
    "cnn-noisy",
    "cnn-parity",
];

#[test]
fn golden_logits_unmerged_and_merged() {
    for name in GOLDENS {
        let g = golden(name);
        let tol = g["tolerance"]["logits_abs"].as_f64().unwrap() as f32;
        let base_bytes = read_repo_file(g["base"].as_str().unwrap());
        let model = Model::from_bytes(&base_bytes).unwrap();
        if let Some(id) = g.get("model_id").and_then(Value::as_str) {
            assert_eq!(model.model_id(), id, "{name}: model id");
        }
        let inputs = rows_f32(&g["inputs"]);
        let adapter_bytes = g.get("adapter").and_then(Value::as_str).map(read_repo_file);
        let adapter = adapter_bytes
            .as_deref()
            .map(|b| Adapter::from_bytes(b).unwrap());
        let mut workspace = vec![
            0.0f32;
            adapter
                .as_ref()
                .map_or(0, |a| a.workspace_len(&model).unwrap())
        ];
        let mut merged_w = vec![0.0f32; model.merged_len()];
        let mut session = Session::new(&model);
        let mut scratch = vec![0.0f32; session.swap_scratch_len()];
        let expected = if let Some(a) = &adapter {
            let h = session
                .add_adapter(a.prepare(&model, &mut workspace).unwrap())
                .unwrap();
            session.activate(Some(h), &mut scratch).unwrap();
            rows_f32(&g["adapter_logits"])
        } else {
            rows_f32(&g["base_logits"])
        };
        let mut arena = vec![0.0f32; session.arena_len(0)];
        let mut out = vec![0.0f32; 16];
        let mut unmerged = Vec::new();
        for (x, want) in inputs.iter().zip(&expected) {
            let n = session.run(Input::Vector(x), &mut out, &mut arena).unwrap();
            let d = max_diff(&out[..n], want);
            assert!(d <= tol, "{name} unmerged: |logits - golden| = {d} > {tol}");
            unmerged.push(out[..n].to_vec());
        }
        session.enable_merged(&mut merged_w, &mut scratch).unwrap();
        for ((x, want), um) in inputs.iter().zip(&expected).zip(&unmerged) {
            let n = session.run(Input::Vector(x), &mut out, &mut arena).unwrap();
            let d = max_diff(&out[..n], want);
            assert!(d <= tol, "{name} merged: |logits - golden| = {d} > {tol}");
            assert!(
                max_diff(&out[..n], um) <= 1e-4,
                "{name}: merged and unmerged disagree"
            );
        }
    }
}

/// The bytes of the committed digits adapters `models/digits/{arch}-{task}.gguf`.
fn adapter_files(arch: &str, tasks: &[&str]) -> Vec<Vec<u8>> {
    tasks
        .iter()
        .map(|t| read_repo_file(&format!("models/digits/{arch}-{t}.gguf")))
        .collect()
}

/// One zeroed workspace per adapter, sized for `model`.
fn workspaces_for(adapters: &[Adapter], model: &Model) -> Vec<Vec<f32>> {
    adapters
        .iter()
        .map(|a| vec![0.0f32; a.workspace_len(model).unwrap()])
        .collect()
}

/// Held-out accuracy of `model` (+ adapter) on a dataset file, unmerged and merged.
fn accuracy(session: &Session, dataset: &[u8], arena: &mut [f32]) -> f64 {
    let ds = riffle_core::gguf::Gguf::parse(dataset).unwrap();
    let inputs = ds.find_tensor("inputs").unwrap();
    let labels = ds.find_tensor("labels").unwrap();
    let (n, d) = (inputs.shape()[0] as usize, inputs.shape()[1] as usize);
    let mut x = vec![0.0f32; d];
    let mut out = vec![0.0f32; 16];
    let mut correct = 0;
    for i in 0..n {
        inputs.decode_f32(i * d, &mut x).unwrap();
        let k = session.run(Input::Vector(&x), &mut out, arena).unwrap();
        let pred = (0..k).max_by(|&a, &b| out[a].total_cmp(&out[b])).unwrap();
        correct += usize::from(pred as i32 == labels.get_i32(i).unwrap());
    }
    correct as f64 / n as f64
}

#[test]
fn adapters_swap_at_runtime_and_beat_the_base_on_their_tasks() {
    for arch in ["mlp", "cnn"] {
        let base = read_repo_file(&format!("models/digits/{arch}.gguf"));
        let model = Model::from_bytes(&base).unwrap();
        let tasks = ["rotated", "inverted", "noisy", "parity"];
        let files = adapter_files(arch, &tasks);
        let adapters: Vec<Adapter> = files
            .iter()
            .map(|b| Adapter::from_bytes(b).unwrap())
            .collect();
        let mut workspaces = workspaces_for(&adapters, &model);
        let mut merged_w = vec![0.0f32; model.merged_len()];
        let mut session = Session::new(&model);
        for (a, ws) in adapters.iter().zip(workspaces.iter_mut()) {
            session.add_adapter(a.prepare(&model, ws).unwrap()).unwrap();
        }
        let mut arena = vec![0.0f32; session.arena_len(0)];
        let mut scratch = vec![0.0f32; session.swap_scratch_len()];
        let mut unmerged_acc = Vec::new();
        for (h, t) in tasks.iter().enumerate() {
            let ds = read_repo_file(&format!("models/digits/heldout-{t}.gguf"));
            session.activate(None, &mut scratch).unwrap();
            let base_acc = accuracy(&session, &ds, &mut arena);
            session.activate(Some(h), &mut scratch).unwrap();
            let acc = accuracy(&session, &ds, &mut arena);
            if *t == "rotated" || *t == "inverted" {
                assert!(
                    acc > base_acc + 0.5,
                    "{arch}-{t}: adapter {acc} vs base {base_acc}"
                );
            }
            assert!(acc > 0.85, "{arch}-{t}: adapter accuracy {acc}");
            unmerged_acc.push(acc);
        }
        // Merged mode, swapping in place through every adapter and back.
        session.activate(None, &mut scratch).unwrap();
        session.enable_merged(&mut merged_w, &mut scratch).unwrap();
        for (h, t) in tasks.iter().enumerate() {
            let ds = read_repo_file(&format!("models/digits/heldout-{t}.gguf"));
            session.activate(Some(h), &mut scratch).unwrap();
            let acc = accuracy(&session, &ds, &mut arena);
            assert!(
                (acc - unmerged_acc[h]).abs() <= 1.0 / 450.0 + 1e-9,
                "{arch}-{t}: merged {acc} vs unmerged {}",
                unmerged_acc[h]
            );
        }
    }
}

#[test]
fn removing_adapters_keeps_the_session_consistent() {
    let base = read_repo_file("models/digits/mlp.gguf");
    let model = Model::from_bytes(&base).unwrap();
    let files = adapter_files("mlp", &["rotated", "inverted", "noisy"]);
    let adapters: Vec<Adapter> = files
        .iter()
        .map(|b| Adapter::from_bytes(b).unwrap())
        .collect();
    let mut workspaces = workspaces_for(&adapters, &model);
    let mut merged_w = vec![0.0f32; model.merged_len()];
    let mut session = Session::new(&model);
    for (a, ws) in adapters.iter().zip(workspaces.iter_mut()) {
        session.add_adapter(a.prepare(&model, ws).unwrap()).unwrap();
    }
    let mut scratch = vec![0.0f32; session.swap_scratch_len()];
    let mut arena = vec![0.0f32; session.arena_len(0)];
    let x: Vec<f32> = (0..64).map(|i| (i % 17) as f32 / 16.0).collect();
    let mut out = vec![0.0f32; 16];
    let mut base_out = vec![0.0f32; 16];
    session
        .run(Input::Vector(&x), &mut base_out, &mut arena)
        .unwrap();
    session.enable_merged(&mut merged_w, &mut scratch).unwrap();
    session.activate(Some(2), &mut scratch).unwrap();
    session
        .run(Input::Vector(&x), &mut out, &mut arena)
        .unwrap();
    let noisy_out = out.clone();
    // Removing an inactive adapter before the active one shifts the active handle.
    session.remove_adapter(0, &mut scratch).unwrap();
    assert_eq!(session.active(), Some(1));
    assert_eq!(session.active_adapter().unwrap().task_name(), "noisy");
    session
        .run(Input::Vector(&x), &mut out, &mut arena)
        .unwrap();
    assert_eq!(out, noisy_out);
    // Removing the active adapter in merged mode swaps back to the base first.
    session.remove_adapter(1, &mut scratch).unwrap();
    assert_eq!(session.active(), None);
    session
        .run(Input::Vector(&x), &mut out, &mut arena)
        .unwrap();
    let d = out
        .iter()
        .zip(&base_out)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        d <= 1e-4,
        "after removal the merged weights are the base again (max diff {d})"
    );
    assert!(matches!(
        session.remove_adapter(5, &mut scratch),
        Err(riffle_core::Error::UnknownTask)
    ));
}
