//! Shared helpers of riffle's fuzz targets: the committed digits models (compiled in),
//! accessor walks, and the checks every target makes after a successful load.
//!
//! The targets assert the runtime's promises (docs/robustness.md): no panic on any
//! bytes; a failed `prepare` writes nothing; a prepared adapter always runs; merged and
//! unmerged runs agree.

use std::sync::OnceLock;

use riffle_core::gguf::{self, Gguf, Value};
use riffle_core::runtime::{Adapter, Input, Model, Prepared, Session};
use riffle_core::text::{gguf_index_len, Tokenizer};
use riffle_core::Error;

/// Largest buffer (in elements) a target allocates; bigger requests are skipped, so
/// that a hostile size costs an early return, not an out-of-memory report.
pub const MAX_ALLOC: usize = 1 << 22;

macro_rules! digits {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/digits/",
            $name
        ))
    };
}

/// The committed digits bases.
pub static MLP_BASE: &[u8] = digits!("mlp.gguf");
/// The committed CNN base.
pub static CNN_BASE: &[u8] = digits!("cnn.gguf");
/// The committed MLP adapters.
pub static MLP_ADAPTERS: [&[u8]; 4] = [
    digits!("mlp-rotated.gguf"),
    digits!("mlp-inverted.gguf"),
    digits!("mlp-noisy.gguf"),
    digits!("mlp-parity.gguf"),
];
/// The committed CNN adapters.
pub static CNN_ADAPTERS: [&[u8]; 4] = [
    digits!("cnn-rotated.gguf"),
    digits!("cnn-inverted.gguf"),
    digits!("cnn-noisy.gguf"),
    digits!("cnn-parity.gguf"),
];
static HELDOUT: [&[u8]; 2] = [
    digits!("heldout-rotated.gguf"),
    digits!("heldout-inverted.gguf"),
];

/// A base model with its committed adapters prepared once (leaked, so they are `'static`).
pub struct Fixture {
    /// The base.
    pub model: Model<'static>,
    /// Its four committed adapters, prepared.
    pub prepared: Vec<Prepared<'static, 'static>>,
}

fn fixture(base: &'static [u8], adapters: &[&'static [u8]]) -> Fixture {
    let model = Model::from_bytes(base).expect("committed base loads");
    let prepared = adapters
        .iter()
        .map(|bytes| {
            let a = Adapter::from_bytes(bytes).expect("committed adapter loads");
            let ws = vec![0.0f32; a.workspace_len(&model).expect("binds")].leak();
            a.prepare(&model, ws).expect("prepares")
        })
        .collect();
    Fixture { model, prepared }
}

/// The MLP base and its adapters.
pub fn mlp() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| fixture(MLP_BASE, &MLP_ADAPTERS))
}

/// The CNN base and its adapters.
pub fn cnn() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| fixture(CNN_BASE, &CNN_ADAPTERS))
}

/// A few held-out 8x8 inputs (64 floats each) from the committed datasets.
pub fn heldout_inputs() -> &'static [Vec<f32>] {
    static I: OnceLock<Vec<Vec<f32>>> = OnceLock::new();
    I.get_or_init(|| {
        let mut out = Vec::new();
        for bytes in HELDOUT {
            let g = Gguf::parse(bytes).expect("dataset parses");
            let t = g.find_tensor("inputs").expect("inputs");
            let d = t.shape()[1] as usize;
            for i in 0..4 {
                let mut x = vec![0.0f32; d];
                t.decode_f32(i * d, &mut x).expect("decodes");
                out.push(x);
            }
        }
        out
    })
}

/// Touches every accessor of a parsed file and checks the reader's invariants.
pub fn walk_gguf(g: &Gguf<'_>) {
    let bytes = g.as_bytes();
    assert!(g.data_offset() <= bytes.len() || g.tensor_count() == 0);
    assert!(g.data_span().len() <= bytes.len());
    assert!(g.alignment().is_power_of_two());
    let mut kvs = 0;
    for (key, value) in g.metadata() {
        kvs += 1;
        let got = g.get(key).expect("a key from metadata() is found by get()");
        assert!(
            same_value(&got, &value),
            "get({key:?}) disagrees with metadata()"
        );
        touch_value(&value);
        if let Some(s) = value.as_array().and_then(|a| a.as_strings()) {
            for (i, (loc, text)) in s.iter().enumerate() {
                assert_eq!(s.str_at(loc), Some(text));
                assert_eq!(s.get(i), Some(text));
            }
            assert!(s.get(s.len()).is_none());
        }
    }
    assert_eq!(kvs, g.kv_count());
    touch_typed(g);
    let _ = (g.stored_model_id(), g.model_id(), g.verify_crc());
    assert_eq!(
        g.compute_data_crc32(),
        riffle_core::checksum::crc32(g.data_span())
    );
    let mut count = 0;
    for t in g.tensors() {
        assert_eq!(t.index() as usize, count);
        count += 1;
        let n = t.element_count();
        assert_eq!(t.rank(), t.shape().len());
        assert_eq!(
            t.data().len() as u64,
            t.ggml_type().byte_len(n as u64).expect("size was checked"),
        );
        assert_eq!(g.find_tensor(t.name()).map(|f| f.index()), Some(t.index()));
        assert_eq!(
            g.tensor(t.index() as usize).map(|f| f.offset()),
            Some(t.offset())
        );
        assert_eq!(t.offset() % u64::from(g.alignment()), 0);
        let _ = (t.ggml_dims(), t.row_len(), t.row_count());
        let take = n.min(4096);
        if t.ggml_type().is_float() {
            let mut buf = vec![0f32; take];
            t.decode_f32(0, &mut buf).expect("in range");
            if n > 0 {
                assert!(t.get_f32(n - 1).is_some());
            }
            if t.row_len() > 0 && t.row_count() > 0 && t.row_len() <= 4096 {
                let mut row = vec![0f32; t.row_len()];
                t.decode_row(t.row_count() - 1, &mut row).expect("last row");
            }
        } else {
            let mut buf = vec![0i32; take];
            t.decode_i32(0, &mut buf).expect("in range");
        }
        assert!(t.get_f32(n).is_none() && t.get_i32(n).is_none());
    }
    assert_eq!(count, g.tensor_count());
    assert!(g.tensor(count).is_none());
    // A vocabulary, if the file has one.
    if let Ok(len) = gguf_index_len(g) {
        if len <= MAX_ALLOC {
            let mut index = vec![0u32; len];
            if let Ok(tok) = Tokenizer::from_gguf(g, &mut index) {
                let mut ids = [0u32; 32];
                let n = tok
                    .encode("Hello, wörld! [MASK] 中文 ##x", 32, &mut ids)
                    .expect("fits");
                assert!((2..=32).contains(&n));
            }
        }
    }
}

/// Equality that compares floats by their bits (a NaN equals itself).
fn same_value(a: &Value<'_>, b: &Value<'_>) -> bool {
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(x), Value::Array(y)) => {
            x.element_type() == y.element_type()
                && x.len() == y.len()
                && x.as_le_bytes() == y.as_le_bytes()
        }
        _ => a == b,
    }
}

/// The typed accessors (which take the format's static key names) on keys of every
/// value type the runtime reads, each with every accessor: the right type, the wrong
/// ones, and a missing key, which names itself.
pub fn touch_typed(g: &Gguf<'_>) {
    for key in TYPED_KEYS {
        let _ = (
            g.get_str(key),
            g.get_u32(key),
            g.get_u64(key),
            g.get_i32(key),
        );
        let _ = (g.get_f32(key), g.get_bool(key), g.get_array(key));
        if let Err(Error::MissingKey { key: k }) = g.get_strings(key) {
            assert_eq!(k.as_str(), key);
        }
    }
}

/// Keys whose values are a string, an integer, a float, a bool, and string and integer
/// arrays.
const TYPED_KEYS: [&str; 8] = [
    gguf::KEY_ARCHITECTURE,
    gguf::KEY_MLP_LAYER_COUNT,
    gguf::KEY_BERT_LAYER_NORM_EPSILON,
    gguf::KEY_BERT_CAUSAL,
    gguf::KEY_LABELS,
    gguf::KEY_TOKENIZER_TOKENS,
    gguf::KEY_TOKENIZER_TOKEN_TYPE,
    gguf::KEY_DATA_CRC32,
];

fn touch_value(v: &Value<'_>) {
    let _ = (
        v.value_type(),
        v.as_str(),
        v.as_bool(),
        v.as_u64(),
        v.as_i64(),
    );
    let _ = (v.as_u32(), v.as_i32(), v.as_f32(), v.as_f64());
    if let Value::Array(a) = v {
        let mut seen = 0;
        for e in a.iter() {
            seen += 1;
            touch_value(&e);
        }
        assert_eq!(seen, a.len());
        let _ = (
            a.get(a.len()),
            a.get_u32(0),
            a.get_i32(0),
            a.get_f32(0),
            a.as_le_bytes(),
        );
        if let Some(s) = a.as_strings() {
            let _ = s.position("[CLS]");
        }
    }
}

/// Loads-then-runs checks of a base model: every accessor, one run on a zero input
/// (or a short token sequence), unmerged and merged. A model that loaded must run.
pub fn exercise_model(model: &Model<'_>) {
    let _ = (
        model.architecture(),
        model.labels(),
        model.max_tokens(),
        model.bert_config(),
    );
    for (i, s) in model.slots().iter().enumerate() {
        let name = model.slot_name(i);
        assert_eq!(
            model.slot_index(name),
            Some(i),
            "slot {i} ({name}) does not round-trip"
        );
        assert!(s.rows > 0 && s.cols > 0);
    }
    let tokens: Vec<u32>;
    let zeros: Vec<f32>;
    let input = if let Some(cfg) = model.bert_config() {
        let mut ids = vec![0u32; model.max_tokens().clamp(2, 16)];
        let n = match model.tokenizer_index_len() {
            Ok(len) if len <= MAX_ALLOC && ids.len() >= 2 => {
                let mut index = vec![0u32; len];
                match model.tokenizer(&mut index) {
                    Ok(tok) => tok.encode("hello world", ids.len(), &mut ids).unwrap_or(1),
                    Err(_) => 1,
                }
            }
            _ => 1,
        };
        tokens = ids[..n.min(cfg.context).max(1)].to_vec();
        Input::Tokens(&tokens)
    } else {
        if model.input_len() > MAX_ALLOC {
            return;
        }
        zeros = vec![0.0f32; model.input_len()];
        Input::Vector(&zeros)
    };
    let n_tokens = match input {
        Input::Tokens(t) => t.len(),
        Input::Vector(_) => 0,
    };
    let arena_len = model.arena_len(n_tokens, 0);
    let out_len = model.output_len();
    if arena_len > MAX_ALLOC || out_len > MAX_ALLOC || model.merged_len() > MAX_ALLOC {
        return;
    }
    let mut arena = vec![0.0f32; arena_len];
    let mut out = vec![0.0f32; out_len];
    let r = model.run(None, input, &mut out, &mut arena);
    if let Input::Tokens(_) = input {
        // Token ids outside a hostile vocabulary's embedding table are a typed error.
        if matches!(r, Err(Error::BadInput)) {
            return;
        }
    }
    let n = r.unwrap_or_else(|e| panic!("a loaded model failed to run: {e:?}"));
    assert_eq!(n, out_len);
    // Merged mode over the decoded base weights.
    let mut weights = vec![0.0f32; model.merged_len()];
    let mut session = Session::new(model);
    let mut scratch = vec![0.0f32; session.swap_scratch_len()];
    session
        .enable_merged(&mut weights, &mut scratch)
        .unwrap_or_else(|e| panic!("merged mode failed on a loaded model: {e:?}"));
    let mut out2 = vec![0.0f32; out_len];
    let n2 = session
        .run(input, &mut out2, &mut arena)
        .unwrap_or_else(|e| panic!("a loaded model failed to run merged: {e:?}"));
    assert_eq!(n2, n);
}

/// True when every parameter, scale and head value of `adapter` is small enough that
/// merged and unmerged runs must agree to a fixed tolerance.
pub fn is_tame(adapter: &Adapter<'_>) -> bool {
    adapter.gguf().tensors().all(|t| {
        let scale = t.name().ends_with(".oft_scale");
        (0..t.element_count()).all(|i| match t.get_f32(i) {
            Some(v) if scale => (0.25..=4.0).contains(&v.abs()),
            Some(v) => v.abs() <= 4.0,
            None => false,
        })
    })
}

/// Largest `|a - b|`, and whether both are finite.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Validates `adapter` against `model`, then checks the promises of the prepare phase:
/// a failed `workspace_len` / `prepare` writes nothing into the workspace; a prepared
/// adapter runs unmerged and merged, and (when tame) both agree.
pub fn exercise_adapter<'a>(model: &Model<'a>, adapter: &Adapter<'a>) {
    const SENTINEL: u32 = 0x7fc0_beef;
    let len = match adapter.workspace_len(model) {
        Ok(len) => len,
        Err(e) => {
            let mut ws = vec![f32::from_bits(SENTINEL); 4096];
            assert_eq!(
                adapter.prepare(model, &mut ws).err(),
                Some(e),
                "prepare disagrees with workspace_len"
            );
            assert!(
                ws.iter().all(|v| v.to_bits() == SENTINEL),
                "failed prepare wrote to the workspace"
            );
            return;
        }
    };
    if len > MAX_ALLOC {
        return;
    }
    let mut short = vec![f32::from_bits(SENTINEL); len.saturating_sub(1)];
    assert!(matches!(
        adapter.prepare(model, &mut short),
        Err(Error::BufferTooSmall { .. })
    ));
    assert!(
        short.iter().all(|v| v.to_bits() == SENTINEL),
        "failed prepare wrote to the workspace"
    );
    let mut ws = vec![f32::from_bits(SENTINEL); len];
    let prepared = match adapter.prepare(model, &mut ws) {
        Ok(p) => p,
        // A finite parameter so large that the f32 Cayley solve overflows: the only
        // error prepare may find after it starts writing.
        Err(Error::NumericalFailure) => return,
        Err(e) => panic!("workspace_len accepted what prepare rejects: {e:?}"),
    };
    let _ = (
        prepared.method(),
        prepared.block_size(),
        prepared.factors(),
        prepared.permutation(),
    );
    let _ = (
        prepared.labels(),
        prepared.cls_head(),
        prepared.adapted_slots(),
        prepared.parameter_count(),
    );
    for (i, s) in model.slots().iter().enumerate() {
        prepared
            .transform(i)
            .check_shape(s.rows, s.cols)
            .expect("transform fits its slot");
        let _ = prepared.head(i);
    }
    let past = prepared.transform(model.slots().len());
    assert!(past.q_in.is_none() && past.q_out.is_none() && past.scale.is_none());
    let tame = is_tame(adapter);
    let mut weights = vec![0.0f32; model.merged_len()];
    let mut session = Session::new(model);
    let h = session
        .add_adapter(prepared)
        .expect("prepared for this model");
    let mut scratch = vec![0.0f32; session.swap_scratch_len()];
    session
        .activate(Some(h), &mut scratch)
        .expect("unmerged activation cannot fail");
    let arena_len = session.arena_len(0);
    assert!(arena_len <= MAX_ALLOC * 4);
    let mut arena = vec![0.0f32; arena_len];
    let mut unmerged = Vec::new();
    for x in heldout_inputs() {
        let mut out = vec![0.0f32; 64];
        let n = session
            .run(Input::Vector(x), &mut out, &mut arena)
            .expect("a prepared adapter runs");
        out.truncate(n);
        unmerged.push(out);
    }
    session
        .enable_merged(&mut weights, &mut scratch)
        .expect("merge of a prepared adapter");
    // Out and back in again: an in-place swap round trip.
    session.activate(None, &mut scratch).expect("swap out");
    session.activate(Some(h), &mut scratch).expect("swap in");
    for (x, um) in heldout_inputs().iter().zip(&unmerged) {
        let mut out = vec![0.0f32; 64];
        let n = session
            .run(Input::Vector(x), &mut out, &mut arena)
            .expect("merged run");
        assert_eq!(n, um.len());
        if tame {
            let big = um.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let d = max_diff(&out[..n], um);
            assert!(
                d <= 1e-3 * big,
                "merged and unmerged disagree by {d} (scale {big})"
            );
        }
    }
}

/// Replaces the `riffle.data_crc32` value in a copy of `data` with the CRC-32 of its
/// data span, so that mutations of the tensor data reach validation instead of
/// stopping at the CRC check. `None` if the file does not parse or has no such key.
pub fn with_fixed_crc(data: &[u8]) -> Option<Vec<u8>> {
    let g = Gguf::parse(data).ok()?;
    let crc = g.compute_data_crc32();
    let key = b"riffle.data_crc32";
    let mut out = data.to_vec();
    let mut found = false;
    let mut at = 0;
    while let Some(pos) = out[at..].windows(key.len()).position(|w| w == key) {
        let p = at + pos + key.len();
        // The key is followed by its value type (u32 = 4) and the value.
        if out.get(p..p + 4) == Some(&4u32.to_le_bytes()[..]) && p + 8 <= out.len() {
            out[p + 4..p + 8].copy_from_slice(&crc.to_le_bytes());
            found = true;
        }
        at = p;
    }
    found.then_some(out)
}
