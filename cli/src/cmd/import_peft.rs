//! `riffle import-peft`: a PEFT OFT or BOFT adapter folder (`adapter_config.json` +
//! `adapter_model.safetensors`) into a riffle adapter for a base riffle knows.
//!
//! Conversions (docs/gs-math.md, sections 3 and 10):
//! - PEFT >= 0.16 OFT `oft_R.weight` `(r, b(b-1)/2)`: packed as riffle packs, copied for
//!   exact Cayley, negated for Cayley-Neumann (an approximation of the other sign; the
//!   truncation error is reported). `block_share` (one row) is expanded to every block;
//!   `coft` applies PEFT's projection first (also to `oft_r`).
//! - PEFT < 0.16 OFT `oft_r` `(r, b, b)` and `oft_s` `(out, 1)`: `p = triu((A - A^T)/2)`.
//! - PEFT BOFT `boft_R` `(m, k, b, b)`, `boft_s` `(out, 1)`: riffle factor `f` is
//!   `boft_R[m-1-f]`, packed as above; `m` comes from the tensor, never from the config.
//! - Any other `<module>.weight` / `.bias` (PEFT `modules_to_save`) replaces the base
//!   tensor of that name: a task head.
//!
//! The adapter is checked by the core against the base before it is written.

use std::path::Path;

use riffle_core::gguf::{self, TensorType};
use riffle_core::math::{MAX_BLOCK_SIZE, MAX_FACTORS};
use riffle_core::runtime::{Adapter, Model, KEY_COMPATIBLE_MODEL_IDS};
use serde_json::Value;

use crate::fail::{bad, core_bad, describe, Result};
use crate::files::{load_model, Mapped};
use crate::gguf_write::{f32_bytes, Meta, Tensor, Writer};
use crate::safetensors;
use crate::show;

/// Options of `riffle import-peft`.
pub struct ImportArgs<'p> {
    pub dir: &'p Path,
    pub base: &'p Path,
    pub output: &'p Path,
    pub task: Option<String>,
    pub labels: Option<Vec<String>>,
}

/// The orthogonal part of one adapted base weight.
struct Layer {
    /// Base tensor name.
    target: String,
    /// Packed factors, factor 0 first, each `(n / b) × b(b-1)/2`.
    factors: Vec<Vec<f32>>,
    /// Per-output scale.
    scale: Option<Vec<f32>>,
}

/// What the folder holds, per method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Oft,
    Boft,
}

/// Strict upper triangle of the skew part `(A - A^T)/2` of a `b × b` block, row-major.
fn pack_skew(a: &[f32], b: usize) -> Vec<f32> {
    let mut p = Vec::with_capacity(b * (b - 1) / 2);
    for i in 0..b {
        for j in i + 1..b {
            p.push(0.5 * (a[i * b + j] - a[j * b + i]));
        }
    }
    p
}

/// PEFT's `coft` projection (its `_project_batch`): each of the stored blocks of
/// `block_len` values scaled to a Frobenius norm of at most `eps / sqrt(r)`, `r` the
/// number of stored blocks; `fro2` gives a block's squared norm (of the skew matrix for
/// packed parameters, of the full block for PEFT < 0.16's `oft_r`).
fn coft_project(data: &mut [f32], block_len: usize, eps: f64, fro2: impl Fn(&[f32]) -> f64) {
    let r = data.len() / block_len;
    let lim = eps / (r as f64).sqrt();
    for blk in data.chunks_mut(block_len) {
        let norm = fro2(blk).sqrt();
        if norm > lim {
            for v in blk.iter_mut() {
                *v = (lim * f64::from(*v) / norm) as f32;
            }
        }
    }
}

/// Sum of squares, in `f64`.
fn sum_sq(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum()
}

/// `riffle.model_id` of the other conversions of the base next to it: models of the same
/// architecture and `general.name` with the same tensor names and shapes (the F16 / Q8_0
/// files of `riffle_train minilm convert`), so the adapter binds to them too, as trained
/// adapters do. Files that do not parse are passed over.
fn compatible_ids(base: &Path, g: &gguf::Gguf<'_>, own_id: &str) -> Vec<String> {
    let shapes = |g: &gguf::Gguf<'_>| -> Vec<(String, Vec<u64>)> {
        g.tensors()
            .map(|t| (t.name().to_string(), t.shape().to_vec()))
            .collect()
    };
    let (arch, name, own) = (
        g.get_str(gguf::KEY_ARCHITECTURE).ok(),
        g.get_str(gguf::KEY_NAME).ok(),
        shapes(g),
    );
    let dir = match base.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let me = std::fs::canonicalize(base).ok();
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .filter(|p| std::fs::canonicalize(p).ok() != me)
        .collect();
    paths.sort();
    let mut out: Vec<String> = Vec::new();
    for p in paths {
        let Ok(m) = Mapped::open(&p) else { continue };
        let Ok(other) = gguf::Gguf::parse(m.bytes()) else {
            continue;
        };
        if other.get_str(gguf::KEY_TYPE).ok() != Some(gguf::TYPE_MODEL)
            || other.get_str(gguf::KEY_ARCHITECTURE).ok() != arch
            || other.get_str(gguf::KEY_NAME).ok() != name
            || shapes(&other) != own
        {
            continue;
        }
        let id = other.model_id().to_string();
        if id != own_id && !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

/// Largest `||S||_F^4` over the blocks of packed parameters (the order of PEFT's
/// Cayley-Neumann truncation error).
fn neumann_error(params: &[f32], np: usize) -> f64 {
    params
        .chunks(np)
        .map(|blk| {
            let f2: f64 = blk
                .iter()
                .map(|v| 2.0 * f64::from(*v) * f64::from(*v))
                .sum();
            f2 * f2
        })
        .fold(0.0, f64::max)
}

/// The base tensor a PEFT module path adapts, or `None`.
fn base_tensor(model: &Model<'_>, module: &str) -> Option<String> {
    let direct = format!("{module}.weight");
    if model.gguf().find_tensor(&direct).is_some() {
        return Some(direct);
    }
    // Hugging Face BERT module names -> llama.cpp's (format.md).
    let at = module.find("encoder.layer.")?;
    let rest = &module[at + "encoder.layer.".len()..];
    let (n, sub) = rest.split_once('.')?;
    let n: usize = n.parse().ok()?;
    let layer = match sub {
        "attention.self.query" => "attn_q",
        "attention.self.key" => "attn_k",
        "attention.self.value" => "attn_v",
        "attention.output.dense" => "attn_output",
        "intermediate.dense" => "ffn_up",
        "output.dense" => "ffn_down",
        _ => return None,
    };
    let name = format!("blk.{n}.{layer}.weight");
    model.gguf().find_tensor(&name).map(|_| name)
}

/// Same for a head tensor `<module>.weight` / `<module>.bias`.
fn head_tensor(model: &Model<'_>, key: &str) -> Option<String> {
    let key = key
        .replace(".modules_to_save.default.", ".")
        .replace(".modules_to_save.", ".");
    if model.gguf().find_tensor(&key).is_some() {
        return Some(key);
    }
    let (module, suffix) = key.rsplit_once('.')?;
    let w = base_tensor(model, module)?;
    let name = format!("{}.{suffix}", w.strip_suffix(".weight")?);
    model.gguf().find_tensor(&name).map(|_| name)
}

/// `riffle import-peft`.
pub fn run(a: ImportArgs<'_>) -> Result<()> {
    let dir_name = a.dir.display().to_string();
    if !a.dir.is_dir() {
        return Err(bad(
            &dir_name,
            if a.dir.exists() {
                "is not a folder (give the PEFT adapter folder)"
            } else {
                "no such folder"
            },
        ));
    }
    let cfg_path = a.dir.join("adapter_config.json");
    let cfg_name = cfg_path.display().to_string();
    let cfg_bytes = crate::files::read_regular(&cfg_path, 1 << 20)?;
    let cfg_text = String::from_utf8(cfg_bytes).map_err(|_| bad(&cfg_name, "is not UTF-8 text"))?;
    let cfg: Value = serde_json::from_str(&cfg_text)
        .map_err(|e| bad(&cfg_name, format!("not valid JSON: {e}")))?;
    let peft_type = cfg["peft_type"].as_str().unwrap_or("");
    let method = match peft_type {
        "OFT" => Method::Oft,
        "BOFT" => Method::Boft,
        "" => return Err(bad(&cfg_name, "has no `peft_type`")),
        t => {
            return Err(bad(
                &cfg_name,
                format!("peft_type is {t}; riffle imports OFT and BOFT adapters"),
            ))
        }
    };
    let peft_version = cfg["peft_version"]
        .as_str()
        .unwrap_or("unknown")
        .to_string();
    if let Some(b) = cfg["bias"].as_str().filter(|b| *b != "none") {
        return Err(bad(
            &cfg_name,
            format!("bias = \"{b}\": adapters that train biases are not imported (riffle adapters keep the base biases)"),
        ));
    }
    if cfg["fan_in_fan_out"].as_bool() == Some(true) {
        return Err(bad(
            &cfg_name,
            "fan_in_fan_out = true (Conv1D weights) is not supported",
        ));
    }
    // PEFT's default for OFT >= 0.16 is the Cayley-Neumann series.
    let neumann = method == Method::Oft && cfg["use_cayley_neumann"].as_bool().unwrap_or(true);
    let neumann_terms = cfg["num_cayley_neumann_terms"].as_u64().unwrap_or(5);
    // OFT's constrained variant: PEFT projects the blocks in every forward pass, so the
    // saved parameters are projected here as PEFT would before using them.
    let coft = method == Method::Oft && cfg["coft"].as_bool() == Some(true);
    let eps = cfg["eps"].as_f64().unwrap_or(6e-5);

    let st_path = a.dir.join("adapter_model.safetensors");
    let st_name = st_path.display().to_string();
    if !st_path.exists() && a.dir.join("adapter_model.bin").exists() {
        return Err(bad(
            a.dir.join("adapter_model.bin").display(),
            "pickled weights are not read; save the adapter with safe_serialization=True",
        ));
    }
    crate::atomic::check_not_input(a.output, &[&cfg_path, &st_path, a.base])?;
    let st = Mapped::open(&st_path)?;
    let tensors = safetensors::parse(st.bytes()).map_err(|e| bad(&st_name, e))?;

    let base_map = Mapped::open(a.base)?;
    let model = load_model(base_map.name(), base_map.bytes())?;

    let mut layers: Vec<Layer> = Vec::new();
    let mut heads: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut block: Option<usize> = None;
    let mut factors: Option<usize> = None;
    let mut worst_neumann = 0.0f64;
    // Whether any parameters were negated for the series: only PEFT >= 0.16's `oft_R`
    // (PEFT < 0.16's `oft_r` is exact Cayley whatever the config says).
    let mut negated = false;
    let layer_of = |layers: &mut Vec<Layer>, target: &str| -> usize {
        match layers.iter().position(|l| l.target == target) {
            Some(i) => i,
            None => {
                layers.push(Layer {
                    target: target.to_string(),
                    factors: Vec::new(),
                    scale: None,
                });
                layers.len() - 1
            }
        }
    };
    let agree = |what: &str, slot: &mut Option<usize>, v: usize| -> Result<()> {
        match *slot {
            Some(old) if old != v => Err(bad(
                &st_name,
                format!("layers use different {what} ({old} and {v}); a riffle adapter has one"),
            )),
            _ => {
                *slot = Some(v);
                Ok(())
            }
        }
    };
    for t in &tensors {
        let key = t.name.strip_prefix("base_model.model.").unwrap_or(&t.name);
        let (module, kind) = if let Some(m) = key.strip_suffix(".oft_R.weight") {
            (m, "oft_R")
        } else if let Some(m) = key.strip_suffix(".oft_r") {
            (m, "oft_r")
        } else if let Some(m) = key.strip_suffix(".oft_s") {
            (m, "oft_s")
        } else if let Some(m) = key.strip_suffix(".boft_R") {
            (m, "boft_R")
        } else if let Some(m) = key.strip_suffix(".boft_s") {
            (m, "boft_s")
        } else {
            let name = head_tensor(&model, key).ok_or_else(|| {
                bad(
                    &st_name,
                    format!(
                        "tensor `{}` matches no tensor of {} (not an OFT/BOFT parameter or a saved module of this base)",
                        t.name,
                        base_map.name()
                    ),
                )
            })?;
            heads.push((name, t.shape.clone(), t.data.clone()));
            continue;
        };
        let target = base_tensor(&model, module).ok_or_else(|| {
            bad(
                &st_name,
                format!(
                    "module `{module}` matches no weight of {} (wrong base?)",
                    base_map.name()
                ),
            )
        })?;
        let slot = model
            .slot_index(&target)
            .map(|i| model.slots()[i])
            .ok_or_else(|| bad(&st_name, format!("`{target}` is not an adaptable weight")))?;
        let is_conv = model
            .gguf()
            .find_tensor(&target)
            .is_some_and(|w| w.shape().len() == 4);
        if is_conv {
            return Err(bad(
                &st_name,
                format!("`{module}` is a convolution; riffle imports PEFT adapters of linear layers only"),
            ));
        }
        let (rows, cols) = (slot.rows, slot.cols);
        let shape_err = |want: &str| {
            bad(
                &st_name,
                format!(
                    "tensor `{}` has shape {:?}; for `{target}` ({rows}×{cols}) it should be {want}",
                    t.name, t.shape
                ),
            )
        };
        let li = layer_of(&mut layers, &target);
        match kind {
            "oft_R" => {
                let [r, np] = t.shape[..] else {
                    return Err(shape_err("(r, b(b-1)/2)"));
                };
                let b = (1..=64).find(|b| b * (b - 1) / 2 == np).filter(|b| *b >= 2);
                let Some(b) = b.filter(|b| cols % b == 0) else {
                    return Err(shape_err("(in / b, b(b-1)/2) with b dividing in"));
                };
                let k = cols / b;
                let mut stored = t.data.clone();
                if coft {
                    coft_project(&mut stored, np, eps, |blk| 2.0 * sum_sq(blk));
                }
                let mut p = match r {
                    _ if r == k => stored,
                    1 => stored.repeat(k),
                    _ => return Err(shape_err(&format!("({k}, {np}) or (1, {np})"))),
                };
                if neumann {
                    negated = true;
                    worst_neumann = worst_neumann.max(neumann_error(&p, np));
                    p.iter_mut().for_each(|v| *v = -*v);
                }
                agree("block sizes", &mut block, b)?;
                agree("factor counts", &mut factors, 1)?;
                layers[li].factors = vec![p];
            }
            "oft_r" => {
                let [r, b, b2] = t.shape[..] else {
                    return Err(shape_err("(r, b, b)"));
                };
                if b != b2
                    || !(2..=MAX_BLOCK_SIZE).contains(&b)
                    || cols % b != 0
                    || (r != cols / b && r != 1)
                {
                    return Err(shape_err("(in / b, b, b)"));
                }
                let k = cols / b;
                let mut stored = t.data.clone();
                if coft {
                    coft_project(&mut stored, b * b, eps, sum_sq);
                }
                let mut p = Vec::new();
                for j in 0..k {
                    let blk = if r == 1 { 0 } else { j };
                    p.extend(pack_skew(&stored[blk * b * b..(blk + 1) * b * b], b));
                }
                agree("block sizes", &mut block, b)?;
                agree("factor counts", &mut factors, 1)?;
                layers[li].factors = vec![p];
            }
            "boft_R" => {
                let [m, k, b, b2] = t.shape[..] else {
                    return Err(shape_err("(m, k, b, b)"));
                };
                if b != b2 || !(2..=MAX_BLOCK_SIZE).contains(&b) || k.checked_mul(b) != Some(cols) {
                    return Err(shape_err("(m, in / b, b, b)"));
                }
                if !(1..=MAX_FACTORS).contains(&m) {
                    return Err(bad(
                        &st_name,
                        format!(
                            "tensor `{}` has {m} butterfly factors; riffle reads 1 to {MAX_FACTORS}",
                            t.name
                        ),
                    ));
                }
                agree("block sizes", &mut block, b)?;
                agree("factor counts", &mut factors, m)?;
                // riffle factor f (applied f-th) is PEFT's butterfly level m-1-f.
                layers[li].factors = (0..m)
                    .map(|f| {
                        let level = m - 1 - f;
                        (0..k)
                            .flat_map(|j| {
                                let at = (level * k + j) * b * b;
                                pack_skew(&t.data[at..at + b * b], b)
                            })
                            .collect()
                    })
                    .collect();
            }
            _ => {
                // oft_s / boft_s: (out, 1)
                if t.data.len() != rows || t.shape.first() != Some(&rows) {
                    return Err(shape_err(&format!("({rows}, 1)")));
                }
                layers[li].scale = Some(t.data.clone());
            }
        }
    }
    layers.retain(|l| {
        // A scale without rotation factors still adapts the layer.
        !l.factors.is_empty() || l.scale.is_some()
    });
    if let Some(l) = layers.iter().find(|l| l.factors.is_empty()) {
        return Err(bad(
            &st_name,
            format!("`{}` has a scale but no rotation parameters", l.target),
        ));
    }
    let (Some(b), Some(m)) = (block, factors) else {
        return Err(bad(&st_name, "holds no OFT or BOFT parameters"));
    };

    // The adapter file.
    let task = a.task.clone().unwrap_or_else(|| {
        a.dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "task".into())
    });
    let (method_name, permutation) = match method {
        Method::Oft => (gguf::METHOD_OFT, gguf::PERMUTATION_NONE),
        Method::Boft => (gguf::METHOD_BOFT, gguf::PERMUTATION_BUTTERFLY),
    };
    let mut w = Writer::new();
    w.set(
        gguf::KEY_ARCHITECTURE,
        Meta::Str(model.architecture().name().into()),
    );
    w.set(gguf::KEY_TYPE, Meta::Str(gguf::TYPE_ADAPTER.into()));
    w.set(
        gguf::KEY_NAME,
        Meta::Str(format!(
            "{task} (imported from PEFT {peft_version} {peft_type})"
        )),
    );
    w.set(
        gguf::KEY_ADAPTER_TYPE,
        Meta::Str(gguf::ADAPTER_TYPE_ORTHOGONAL.into()),
    );
    w.set(gguf::KEY_ORTHOGONAL_METHOD, Meta::Str(method_name.into()));
    w.set(gguf::KEY_ORTHOGONAL_BLOCK_SIZE, Meta::U32(b as u32));
    w.set(
        gguf::KEY_ORTHOGONAL_PERMUTATION,
        Meta::Str(permutation.into()),
    );
    w.set(gguf::KEY_ORTHOGONAL_FACTOR_COUNT, Meta::U32(m as u32));
    w.set(gguf::KEY_BASE_MODEL_ID, Meta::Str(model.model_id().into()));
    w.set(gguf::KEY_TASK_NAME, Meta::Str(task.clone()));
    let alt = compatible_ids(a.base, model.gguf(), model.model_id());
    if !alt.is_empty() {
        w.set(KEY_COMPATIBLE_MODEL_IDS, Meta::Strings(alt));
    }
    if let Some(l) = &a.labels {
        w.set(gguf::KEY_ADAPTER_LABELS, Meta::Strings(l.clone()));
    }
    w.set("adapter.peft.version", Meta::Str(peft_version.clone()));
    w.set("adapter.peft.type", Meta::Str(peft_type.into()));
    if negated {
        w.set(
            "adapter.peft.cayley_neumann_terms",
            Meta::U32(neumann_terms as u32),
        );
    }
    let np = b * (b - 1) / 2;
    // Tensors in base order, so that the file reads like the ones riffle-train writes.
    layers.sort_by_key(|l| model.slot_index(&l.target));
    for l in &layers {
        for (f, p) in l.factors.iter().enumerate() {
            w.tensor(Tensor {
                name: format!("{}{}{f}", l.target, gguf::TENSOR_OFT_IN),
                shape: vec![(p.len() / np) as u64, np as u64],
                ty: TensorType::F32,
                data: f32_bytes(p),
            });
        }
        if let Some(s) = &l.scale {
            w.tensor(Tensor {
                name: format!("{}{}", l.target, gguf::TENSOR_OFT_SCALE),
                shape: vec![s.len() as u64],
                ty: TensorType::F32,
                data: f32_bytes(s),
            });
        }
    }
    for (name, shape, data) in &heads {
        w.tensor(Tensor {
            name: name.clone(),
            shape: shape.iter().map(|d| *d as u64).collect(),
            ty: TensorType::F32,
            data: f32_bytes(data),
        });
    }
    w.set(gguf::KEY_DATA_CRC32, Meta::U32(w.data_crc32()));
    let bytes = w.to_bytes();

    // The core's checks against the base, before anything is written.
    // What the core refuses here came from the folder's values (a NaN, a scale out of
    // range, a butterfly that does not fit the width): a bad input, exit 2.
    let adapter = Adapter::from_bytes(&bytes)
        .map_err(|e| bad(&dir_name, format!("the imported adapter is not valid: {e}")))?;
    adapter.workspace_len(&model).map_err(|e| match e {
        riffle_core::Error::ShapeMismatch { .. }
            if adapter.labels().is_none() && !heads.is_empty() =>
        {
            bad(
                &dir_name,
                format!(
                    "{} (a head with a new number of outputs needs --labels)",
                    describe(e, Some(adapter.gguf()))
                ),
            )
        }
        e => core_bad(&dir_name, e, Some(adapter.gguf())),
    })?;
    let out_name = a.output.display().to_string();
    crate::atomic::write(a.output, &[&cfg_path, &st_path, a.base], &bytes)?;
    show::line(format!(
        "wrote {out_name}: PEFT {peft_version} {peft_type} ({method_name}, b={b}, m={m}) on {} layer{}{}, task `{task}`, for {} ({} bytes)",
        layers.len(),
        if layers.len() == 1 { "" } else { "s" },
        if heads.is_empty() {
            String::new()
        } else {
            format!(" + {} head tensor{}", heads.len(), if heads.len() == 1 { "" } else { "s" })
        },
        base_map.name(),
        bytes.len()
    ));
    if coft {
        show::line(format!(
            "note: coft: PEFT's projection applied to the blocks (Frobenius norm at most eps / sqrt(r), eps = {eps})"
        ));
    }
    if negated {
        show::line(format!(
            "note: PEFT trained this adapter with the {neumann_terms}-term Cayley-Neumann series; riffle applies the exact Cayley transform of the negated parameters, which differs by O(||S||^4): largest ||S||_F^4 per block = {worst_neumann:.1e}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_packing_follows_triu_order() {
        // A = S for S = [[0,1,2],[-1,0,3],[-2,-3,0]]; a symmetric part is dropped.
        let a = [0.0, 1.0, 2.0, -1.0, 0.0, 3.0, -2.0, -3.0, 0.0];
        assert_eq!(pack_skew(&a, 3), vec![1.0, 2.0, 3.0]);
        let sym = [5.0, 4.0, 4.0, 5.0];
        assert_eq!(pack_skew(&sym, 2), vec![0.0]);
        assert!((neumann_error(&[0.5], 1) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn coft_scales_only_blocks_past_the_limit() {
        // Two packed blocks (b = 2): skew norms sqrt(2)·3 and sqrt(2)·0.1; limit 1/sqrt(2).
        let mut p = [3.0f32, 0.1];
        coft_project(&mut p, 1, 1.0, |blk| 2.0 * sum_sq(blk));
        assert!((2.0 * f64::from(p[0]) * f64::from(p[0]) - 0.5).abs() < 1e-6);
        assert_eq!(p[1], 0.1);
        // A full block: its own Frobenius norm.
        let mut a = [0.0f32, 4.0, 3.0, 0.0];
        coft_project(&mut a, 4, 1.0, sum_sq);
        assert!((sum_sq(&a) - 1.0).abs() < 1e-6);
        assert!((a[1] - 0.8).abs() < 1e-6 && (a[2] - 0.6).abs() < 1e-6 && a[0] == 0.0);
    }
}
