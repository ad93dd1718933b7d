//! `riffle inspect`: metadata, tensors, and what riffle makes of a base, an adapter or a
//! dataset; `--verify` recomputes the model id or the CRC-32.

use std::path::Path;

use riffle_core::gguf::{self, Gguf, Value, ValueType};
use riffle_core::runtime::{Adapter, Model};
use serde_json::{json, Map, Value as Json};

use crate::engine::{input_kind, takes_text};
use crate::fail::{bad, describe, Result};
use crate::files::{parse_gguf, Kind, Mapped};
use crate::show::{self, Align};

/// Array items shown before "…".
const SHOWN: usize = 8;
/// Arrays up to this length are printed whole in JSON.
const WHOLE: usize = 16;

/// `riffle inspect`.
pub fn run(path: &Path, verify: bool, json_out: bool) -> Result<()> {
    let f = Mapped::open(path)?;
    let name = f.name();
    let g = parse_gguf(name, f.bytes())?;
    let kind = Kind::of(&g);
    let mut report = Report::new();
    report.text.push(format!(
        "{name}: GGUF v{}, {}, {} bytes, alignment {}",
        g.version(),
        match kind {
            Kind::Model => "base model",
            Kind::Adapter => "adapter",
            Kind::Dataset => "dataset",
            Kind::Other => "other file",
        },
        f.bytes().len(),
        g.alignment()
    ));
    report.json.insert("file".into(), json!(name));
    report.json.insert(
        "kind".into(),
        json!(match kind {
            Kind::Model => "model",
            Kind::Adapter => "adapter",
            Kind::Dataset => "dataset",
            Kind::Other => "other",
        }),
    );
    report.json.insert("bytes".into(), json!(f.bytes().len()));
    report
        .json
        .insert("gguf_version".into(), json!(g.version()));
    report.json.insert("alignment".into(), json!(g.alignment()));
    metadata(&g, &mut report);
    tensors(&g, &mut report);
    let mut problem: Option<String> = None;
    match kind {
        Kind::Model => model(name, &g, verify, &mut report, &mut problem),
        Kind::Adapter => adapter(&g, verify, &mut report, &mut problem),
        Kind::Dataset => dataset(&g, verify, &mut report, &mut problem),
        Kind::Other => {}
    }
    if json_out {
        if let Some(p) = &problem {
            report.json.insert("problem".into(), json!(p));
        }
        show::line(Json::Object(report.json).to_string());
    } else {
        for l in &report.text {
            show::line(l);
        }
    }
    match problem {
        Some(p) => Err(bad(name, p)),
        None => Ok(()),
    }
}

struct Report {
    text: Vec<String>,
    json: Map<String, Json>,
}

impl Report {
    fn new() -> Self {
        Report {
            text: Vec::new(),
            json: Map::new(),
        }
    }
}

fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::U8 => "u8",
        ValueType::I8 => "i8",
        ValueType::U16 => "u16",
        ValueType::I16 => "i16",
        ValueType::U32 => "u32",
        ValueType::I32 => "i32",
        ValueType::F32 => "f32",
        ValueType::Bool => "bool",
        ValueType::String => "string",
        ValueType::Array => "array",
        ValueType::U64 => "u64",
        ValueType::I64 => "i64",
        ValueType::F64 => "f64",
    }
}

fn scalar_text(v: &Value<'_>) -> String {
    match *v {
        Value::U8(x) => x.to_string(),
        Value::I8(x) => x.to_string(),
        Value::U16(x) => x.to_string(),
        Value::I16(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::F32(x) => format!("{x:e}"),
        Value::F64(x) => format!("{x:e}"),
        Value::Bool(x) => x.to_string(),
        Value::String(s) => {
            let short: String = s.chars().take(96).collect();
            if short.len() < s.len() {
                format!("{short}… ({} bytes)", s.len())
            } else {
                short
            }
        }
        Value::Array(a) => format!("[{} × {}]", type_name(a.element_type()), a.len()),
    }
}

fn scalar_json(v: &Value<'_>) -> Json {
    match *v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => show::num(x),
        Value::F64(x) => serde_json::Number::from_f64(x).map_or(Json::Null, Json::Number),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        Value::Array(a) => json!({ "element_type": type_name(a.element_type()), "len": a.len() }),
    }
}

fn metadata(g: &Gguf<'_>, r: &mut Report) {
    let mut rows = Vec::new();
    let mut obj = Map::new();
    for (k, v) in g.metadata() {
        let (ty, text, js) = match v {
            Value::Array(a) => {
                let items: Vec<Value<'_>> = a.iter().take(SHOWN.max(WHOLE)).collect();
                let shown: Vec<String> = items.iter().take(SHOWN).map(scalar_text).collect();
                let more = if a.len() > SHOWN { ", …" } else { "" };
                let js = if a.len() <= WHOLE {
                    Json::Array(items.iter().map(scalar_json).collect())
                } else {
                    json!({
                        "element_type": type_name(a.element_type()),
                        "len": a.len(),
                        "first": items.iter().take(SHOWN).map(scalar_json).collect::<Vec<_>>(),
                    })
                };
                (
                    format!("[{}; {}]", type_name(a.element_type()), a.len()),
                    format!("{}{more}", shown.join(", ")),
                    js,
                )
            }
            v => (
                type_name(v.value_type()).to_string(),
                match (k, v.as_u32()) {
                    (gguf::KEY_DATA_CRC32, Some(c)) => format!("{c:08x}"),
                    _ => scalar_text(&v),
                },
                scalar_json(&v),
            ),
        };
        rows.push(vec![k.to_string(), ty, text]);
        obj.insert(k.to_string(), js);
    }
    r.text.push(String::new());
    r.text.push(format!("metadata ({} keys)", rows.len()));
    r.text.extend(
        show::table(
            &["key", "type", "value"],
            &[Align::L, Align::L, Align::L],
            &rows,
        )
        .into_iter()
        .map(|l| format!("  {l}")),
    );
    r.json.insert("metadata".into(), Json::Object(obj));
}

fn shape_text(s: &[u64]) -> String {
    format!(
        "({})",
        s.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
    )
}

fn tensors(g: &Gguf<'_>, r: &mut Report) {
    let mut rows = Vec::new();
    let mut list = Vec::new();
    let mut total = 0usize;
    for t in g.tensors() {
        total += t.data().len();
        rows.push(vec![
            t.name().to_string(),
            t.ggml_type().name().to_string(),
            shape_text(t.shape()),
            t.data().len().to_string(),
        ]);
        list.push(json!({
            "name": t.name(),
            "type": t.ggml_type().name(),
            "shape": t.shape(),
            "bytes": t.data().len(),
            "offset": t.offset(),
        }));
    }
    r.text.push(String::new());
    r.text.push(format!(
        "tensors ({}, {} of data; shapes in PyTorch order)",
        rows.len(),
        show::bytes(total)
    ));
    r.text.extend(
        show::table(
            &["name", "type", "shape", "bytes"],
            &[Align::L, Align::L, Align::L, Align::R],
            &rows,
        )
        .into_iter()
        .map(|l| format!("  {l}")),
    );
    r.json.insert("tensors".into(), Json::Array(list));
}

fn labels_of(l: Option<riffle_core::gguf::StringArray<'_>>) -> Option<Vec<String>> {
    l.map(|l| l.iter().map(|(_, s)| s.to_string()).collect())
}

fn short_list(v: &[String]) -> String {
    let shown: Vec<&str> = v.iter().take(12).map(String::as_str).collect();
    let more = if v.len() > 12 {
        format!(", … ({} labels)", v.len())
    } else {
        String::new()
    };
    format!("{}{more}", shown.join(", "))
}

fn model(name: &str, g: &Gguf<'_>, verify: bool, r: &mut Report, problem: &mut Option<String>) {
    r.text.push(String::new());
    let stored = g.stored_model_id();
    let m = match Model::from_bytes(g.as_bytes()) {
        Ok(m) => m,
        Err(e) => {
            let why = match e {
                riffle_core::Error::UnsupportedModel => crate::fail::unsupported_model(g),
                e => describe(e, Some(g)),
            };
            r.text.push(format!("model: cannot be loaded: {why}"));
            *problem = Some(why);
            return;
        }
    };
    let mut obj = Map::new();
    let arch = m.architecture().name();
    r.text.push(format!(
        "model: {arch}, input: {}, output: {} values",
        input_kind(&m),
        m.output_len()
    ));
    obj.insert("architecture".into(), json!(arch));
    obj.insert("input_len".into(), json!(m.input_len()));
    obj.insert("output_len".into(), json!(m.output_len()));
    obj.insert("takes_text".into(), json!(takes_text(&m)));
    let labels = labels_of(m.labels());
    if let Some(l) = &labels {
        r.text.push(format!("  labels       {}", short_list(l)));
    }
    obj.insert("labels".into(), json!(labels));
    r.text.push(format!(
        "  model id     {}{}",
        m.model_id(),
        if stored.is_some() {
            " (stored)"
        } else {
            " (computed: the file has no riffle.model_id)"
        }
    ));
    obj.insert("model_id".into(), json!(m.model_id()));
    obj.insert("model_id_stored".into(), json!(stored.is_some()));
    obj.insert("slots".into(), json!(m.slots().len()));
    r.text.push(format!(
        "  slots        {} adaptable weights: {}",
        m.slots().len(),
        m.slots()
            .iter()
            .enumerate()
            .take(8)
            .map(|(i, s)| format!("{} ({}×{})", m.slot_name(i), s.rows, s.cols))
            .collect::<Vec<_>>()
            .join(", ")
            + if m.slots().len() > 8 { ", …" } else { "" }
    ));
    if let Some(c) = m.llama_config() {
        let kv_per_token = 4 * m.state_len(1);
        r.text.push(format!(
            "  decoder      {} blocks, hidden {}, {} heads / {} key-value heads of {}, SwiGLU {}, vocabulary {}, context {}, RoPE base {}",
            c.blocks, c.hidden, c.heads, c.kv_heads, c.head_dim, c.ffn, c.vocab, c.context, c.rope_base
        ));
        r.text.push(format!(
            "  state        {} of keys and values per token ({} for the whole context; half with --cache-type f16)",
            show::bytes_exact(kv_per_token),
            show::bytes(kv_per_token * c.context)
        ));
        r.text.push(format!(
            "  tokenizer    {} (pre-tokenizer {}), chat template: {}",
            g.get_str("tokenizer.ggml.model").unwrap_or("none"),
            g.get_str("tokenizer.ggml.pre").unwrap_or("default"),
            if g.get_str("tokenizer.chat_template").is_ok() {
                "yes"
            } else {
                "no"
            }
        ));
        obj.insert(
            "llama".into(),
            json!({
                "blocks": c.blocks, "hidden": c.hidden, "ffn": c.ffn, "heads": c.heads,
                "kv_heads": c.kv_heads, "head_dim": c.head_dim, "rope_dims": c.rope_dims,
                "rope_base": c.rope_base, "rms_epsilon": c.eps, "context": c.context,
                "vocab": c.vocab, "state_bytes_per_token": kv_per_token,
            }),
        );
    }
    if takes_text(&m) {
        let ctx = m.max_tokens();
        let mut arena = Map::new();
        let mut parts = Vec::new();
        for seq in [16usize, 64, 128, ctx] {
            if seq > ctx || arena.contains_key(&seq.to_string()) {
                continue;
            }
            let b = 4 * m.arena_len(seq, 0);
            arena.insert(seq.to_string(), json!(b));
            parts.push(format!("{seq} tokens: {}", show::bytes(b)));
        }
        r.text.push(format!("  arena        {}", parts.join(", ")));
        obj.insert("arena_bytes".into(), Json::Object(arena));
    } else {
        let b = 4 * m.arena_len(0, 0);
        r.text
            .push(format!("  arena        {} per input", show::bytes_exact(b)));
        obj.insert("arena_bytes".into(), json!(b));
    }
    let merged = 4 * m.merged_len();
    r.text.push(format!(
        "  merged mode  {} of f32 weights",
        show::bytes_exact(merged)
    ));
    obj.insert("merged_bytes".into(), json!(merged));
    if verify {
        let computed = g.compute_model_id();
        let ok = stored.is_none_or(|s| s == computed.as_str());
        r.text.push(format!(
            "  verify       model id {}: {}",
            if ok { "OK" } else { "MISMATCH" },
            if ok {
                format!("SHA-256 of the data span is {computed}")
            } else {
                format!("stored {}, data gives {computed}", stored.unwrap_or(""))
            }
        ));
        r.json.insert(
            "verify".into(),
            json!({ "ok": ok, "model_id": computed.as_str(), "stored": stored }),
        );
        if !ok {
            *problem = Some(format!(
                "model id MISMATCH: riffle.model_id is {}, the data hashes to {computed} (corrupt or edited file)",
                stored.unwrap_or("")
            ));
        }
    }
    let _ = name;
    r.json.insert("model".into(), Json::Object(obj));
}

fn adapter(g: &Gguf<'_>, verify: bool, r: &mut Report, problem: &mut Option<String>) {
    r.text.push(String::new());
    let key = |k: &str| {
        g.get(k)
            .map(|v| scalar_text(&v))
            .unwrap_or_else(|| "-".into())
    };
    let mut obj = Map::new();
    let parsed = Adapter::from_bytes(g.as_bytes());
    r.text.push(format!(
        "adapter: {} for a `{}` base, task `{}`",
        key(gguf::KEY_ORTHOGONAL_METHOD),
        key(gguf::KEY_ARCHITECTURE),
        key(gguf::KEY_TASK_NAME)
    ));
    r.text.push(format!(
        "  b, m         block size {}, {} factor(s) per side, permutation {}",
        key(gguf::KEY_ORTHOGONAL_BLOCK_SIZE),
        key(gguf::KEY_ORTHOGONAL_FACTOR_COUNT),
        key(gguf::KEY_ORTHOGONAL_PERMUTATION)
    ));
    r.text
        .push(format!("  base id      {}", key(gguf::KEY_BASE_MODEL_ID)));
    let labels = labels_of(g.get_strings(gguf::KEY_ADAPTER_LABELS).ok());
    r.text.push(format!(
        "  labels       {}",
        labels
            .as_deref()
            .map_or("none (the base's head applies)".to_string(), short_list)
    ));
    for (k, j) in [
        ("method", gguf::KEY_ORTHOGONAL_METHOD),
        ("block_size", gguf::KEY_ORTHOGONAL_BLOCK_SIZE),
        ("factors", gguf::KEY_ORTHOGONAL_FACTOR_COUNT),
        ("permutation", gguf::KEY_ORTHOGONAL_PERMUTATION),
        ("base_model_id", gguf::KEY_BASE_MODEL_ID),
        ("task", gguf::KEY_TASK_NAME),
        ("architecture", gguf::KEY_ARCHITECTURE),
    ] {
        obj.insert(k.into(), g.get(j).map_or(Json::Null, |v| scalar_json(&v)));
    }
    obj.insert("labels".into(), json!(labels));
    // Adapted weights: the distinct base tensors named by oft_* tensors; heads: the rest.
    let mut targets: Vec<&str> = Vec::new();
    let mut heads: Vec<&str> = Vec::new();
    for t in g.tensors() {
        let n = t.name();
        let base = [
            gguf::TENSOR_OFT_IN,
            gguf::TENSOR_OFT_OUT,
            gguf::TENSOR_OFT_SCALE,
        ]
        .iter()
        .find_map(|tag| n.find(tag).map(|i| &n[..i]));
        match base {
            Some(b) if !targets.contains(&b) => targets.push(b),
            Some(_) => {}
            None => heads.push(n),
        }
    }
    r.text
        .push(format!("  adapts       {}", targets.join(", ")));
    if !heads.is_empty() {
        r.text
            .push(format!("  replaces     {} (task head)", heads.join(", ")));
    }
    obj.insert("targets".into(), json!(targets));
    obj.insert("head_tensors".into(), json!(heads));
    let params: usize = g.tensors().map(|t| t.element_count()).sum();
    r.text.push(format!(
        "  parameters   {params} stored values ({} of tensor data)",
        show::bytes(g.tensors().map(|t| t.data().len()).sum())
    ));
    obj.insert("parameter_count".into(), json!(params));
    match (&parsed, verify) {
        (Ok(a), _) => {
            obj.insert("parameter_count".into(), json!(a.parameter_count()));
        }
        (Err(riffle_core::Error::CrcMismatch { .. }), true) => {}
        (Err(e), _) => {
            let why = describe(*e, Some(g));
            r.text.push(format!("  problem      {why}"));
            *problem = Some(why);
        }
    }
    if verify {
        crc(g, r, problem);
    }
    r.json.insert("adapter".into(), Json::Object(obj));
}

fn crc(g: &Gguf<'_>, r: &mut Report, problem: &mut Option<String>) {
    let computed = g.compute_data_crc32();
    match g.get_u32(gguf::KEY_DATA_CRC32) {
        Ok(stored) => {
            let ok = stored == computed;
            r.text.push(format!(
                "  verify       CRC-32 {}: stored {stored:08x}, data gives {computed:08x}",
                if ok { "OK" } else { "MISMATCH" }
            ));
            r.json.insert(
                "verify".into(),
                json!({ "ok": ok, "crc32": format!("{computed:08x}"), "stored": format!("{stored:08x}") }),
            );
            if !ok {
                *problem = Some(format!(
                    "CRC-32 MISMATCH: riffle.data_crc32 is {stored:08x}, the data gives {computed:08x} (corrupt or edited file)"
                ));
            }
        }
        Err(_) => {
            r.text
                .push("  verify       CRC-32 MISSING: the file has no riffle.data_crc32".into());
            r.json.insert(
                "verify".into(),
                json!({ "ok": false, "crc32": format!("{computed:08x}"), "stored": null }),
            );
            *problem = Some("has no riffle.data_crc32 to verify".into());
        }
    }
}

fn dataset(g: &Gguf<'_>, verify: bool, r: &mut Report, problem: &mut Option<String>) {
    r.text.push(String::new());
    let task = g.get_str("dataset.task_name").unwrap_or("?");
    let shape = g
        .find_tensor("inputs")
        .map(|t| t.shape().to_vec())
        .unwrap_or_default();
    let count = shape.first().copied().unwrap_or(0);
    let labels = labels_of(g.get_strings("dataset.labels").ok());
    r.text.push(format!(
        "dataset: task `{task}`, {count} examples of {} values ({})",
        shape.get(1).copied().unwrap_or(0),
        g.get_str(gguf::KEY_ARCHITECTURE).unwrap_or("?")
    ));
    if let Some(l) = &labels {
        r.text.push(format!("  labels       {}", short_list(l)));
    }
    if let Ok(d) = g.get_str("dataset.description") {
        r.text.push(format!("  transform    {d}"));
    }
    r.json.insert(
        "dataset".into(),
        json!({ "task": task, "count": count, "input_len": shape.get(1), "labels": labels }),
    );
    if verify {
        crc(g, r, problem);
    }
}
