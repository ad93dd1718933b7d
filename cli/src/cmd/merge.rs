//! `riffle merge`: a base model with one adapter folded into its weights, written as a new
//! base that loads and runs like any other (f32 weights for the merged slots, the
//! adapter's head in place of the base's, a new `riffle.model_id`).

use std::path::Path;

use riffle_core::gguf::{self, TensorInfo, TensorType};

use crate::cmd::run::{open, pairs};
use crate::engine::Stack;
use crate::fail::{bad, runtime, Result};
use crate::gguf_write::{f32_bytes, Meta, Tensor, Writer};

/// `riffle merge`.
pub fn run(model: &Path, adapter: &Path, output: &Path) -> Result<()> {
    // Before any work: never over an input (it is memory-mapped while merging).
    let inputs: [&Path; 2] = [model, adapter];
    crate::atomic::check_not_input(output, &inputs)?;
    let (model_map, adapter_maps) = open(model, std::slice::from_ref(&adapter.to_path_buf()))?;
    let mut stack = Stack::load((model_map.name(), model_map.bytes()), &pairs(&adapter_maps))?;
    let out_name = output.display().to_string();
    let adapter_name = adapter_maps[0].name().to_string();
    let stack_adapter_gguf = *stack.residents.adapters[0].1.gguf();
    let mut runner = stack.runner()?;
    runner.activate(Some(0))?;
    runner.set_merged(true)?;
    let model = runner.model();
    let g = model.gguf();
    let prepared = &runner.session().adapters()[0];
    let task = prepared.task_name();
    let merged = runner
        .merged_weights()
        .ok_or_else(|| runtime(&adapter_name, "merged weights are unavailable"))?;

    // Slot weights (merged, f32) and head replacements, by base tensor name.
    let mut slot_data: Vec<(u32, &[f32])> = Vec::new();
    let mut off = 0;
    for s in model.slots() {
        let n = s.rows * s.cols;
        slot_data.push((s.weight.index(), &merged[off..off + n]));
        off += n;
    }
    // Head replacements: base tensor index -> the adapter's tensor.
    let ag = stack_adapter_gguf;
    let mut replaced: Vec<(u32, TensorInfo<'_>)> = Vec::new();
    for (i, s) in model.slots().iter().enumerate() {
        if let Some(h) = prepared.head(i) {
            let pairs = [(Some(s.weight), Some(h.weight)), (s.bias, h.bias)];
            for (b, a) in pairs {
                if let (Some(b), Some(a)) = (b, a) {
                    let t = ag
                        .tensor(a.index() as usize)
                        .ok_or_else(|| runtime(&adapter_name, "head tensor not found"))?;
                    replaced.push((b.index(), t));
                }
            }
        }
    }
    if prepared.cls_head().is_some() {
        return Err(bad(
            &adapter_name,
            "brings a text classification head (cls.*), which a merged base cannot hold; use it unmerged or with run --merge",
        ));
    }

    let mut w = Writer::new();
    for (k, v) in g.metadata() {
        w.set(k, Meta::from_value(&v));
    }
    let base_name = g.get_str(gguf::KEY_NAME).unwrap_or("base");
    w.set(
        gguf::KEY_NAME,
        Meta::Str(format!("{base_name} + {task} (merged)")),
    );
    w.set(gguf::KEY_TYPE, Meta::Str(gguf::TYPE_MODEL.into()));
    if let Some(l) = prepared.labels() {
        w.set(
            gguf::KEY_LABELS,
            Meta::Strings(l.iter().map(|(_, s)| s.to_string()).collect()),
        );
    }
    w.set("riffle.merged.task", Meta::Str(task.into()));
    w.set(
        "riffle.merged.method",
        Meta::Str(prepared.method().name().into()),
    );
    w.set(
        "riffle.merged.base_model_id",
        Meta::Str(model.model_id().into()),
    );
    for t in g.tensors() {
        let name = t.name();
        let index = t.index();
        if let Some((_, r)) = replaced.iter().find(|(n, _)| *n == index) {
            w.tensor(Tensor {
                name: name.into(),
                shape: r.shape().to_vec(),
                ty: r.ggml_type(),
                data: r.data().to_vec(),
            });
        } else if let Some((_, data)) = slot_data.iter().find(|(n, _)| *n == index) {
            w.tensor(Tensor {
                name: name.into(),
                shape: t.shape().to_vec(),
                ty: TensorType::F32,
                data: f32_bytes(data),
            });
        } else {
            w.tensor(Tensor {
                name: name.into(),
                shape: t.shape().to_vec(),
                ty: t.ggml_type(),
                data: t.data().to_vec(),
            });
        }
    }
    let id = w.model_id();
    w.set(gguf::KEY_MODEL_ID, Meta::Str(id.clone()));
    let bytes = w.to_bytes();
    // The file must load as a base before it is written.
    riffle_core::runtime::Model::from_bytes(&bytes).map_err(|e| {
        runtime(
            &out_name,
            format!("merged model does not load: {e} (a bug)"),
        )
    })?;
    // Whole or not at all: a temporary file beside the output, renamed over it.
    crate::atomic::write(output, &inputs, &bytes)?;
    crate::show::line(format!(
        "wrote {out_name}: {} merged into {} ({} bytes, model id {}…)",
        task,
        model_map.name(),
        bytes.len(),
        &id[..12]
    ));
    Ok(())
}
