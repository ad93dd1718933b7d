//! all-MiniLM-L6-v2 as a `bert` GGUF (F32, F16, Q8_0, built at set-up into models/minilm/
//! by `riffle-train minilm convert`): token ids equal to HF `tokenizers`, sentence
//! embeddings against Hugging Face `transformers` in float64 (tests/data/minilm/golden.json).
//!
//! The GGUF files are never committed; `scripts/test` builds them before `cargo test`.
//! Without them these tests fail with a message saying how to build them (set
//! `RIFFLE_SKIP_MINILM=1` to skip on a machine without the Python set-up).

use riffle_core::runtime::{Input, Model};
use riffle_tests::{data_path, repo_path};
use serde_json::Value;

/// Cosine similarity bound per weight type: F32 and F16 as issue 4 asks (0.9999 to
/// sentence-transformers' pooling); Q8_0 quantises every weight matrix and the token
/// table to 8 bits: its documented tolerance is 0.999 (worst measured on this set:
/// 0.99946; F16 0.9999995; F32 1.0000000 to 7 digits).
const BOUNDS: [(&str, f64); 3] = [("f32", 0.9999), ("f16", 0.9999), ("q8_0", 0.999)];

fn load(kind: &str) -> Option<Vec<u8>> {
    if std::env::var_os("RIFFLE_SKIP_MINILM").is_some() {
        return None;
    }
    let p = repo_path(&format!("models/minilm/minilm-{kind}.gguf"));
    Some(std::fs::read(&p).unwrap_or_else(|e| {
        panic!("{}: {e}; build it with `$(scripts/python-env) -m riffle_train minilm convert --out models/minilm`", p.display())
    }))
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn embeddings_match_transformers_for_every_weight_type() {
    let g: Value =
        serde_json::from_str(&std::fs::read_to_string(data_path("minilm/golden.json")).unwrap())
            .unwrap();
    for (kind, bound) in BOUNDS {
        let Some(bytes) = load(kind) else { return };
        let model = Model::from_bytes(&bytes).unwrap();
        let mut index = vec![0u32; model.tokenizer_index_len().unwrap()];
        let tok = model.tokenizer(&mut index).unwrap();
        let mut arena = vec![0.0f32; model.arena_len(128, 0)];
        let mut ids = vec![0u32; 128];
        let mut out = vec![0.0f32; 384];
        let mut worst = 1.0f64;
        for case in g["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let n = tok.encode(text, 128, &mut ids).unwrap();
            let want_ids: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(&ids[..n], &want_ids[..], "{kind}: ids of {text:?}");
            let k = model
                .run(None, Input::Tokens(&ids[..n]), &mut out, &mut arena)
                .unwrap();
            assert_eq!(k, 384);
            let want: Vec<f64> = case["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let c = cosine(&out[..k], &want);
            worst = worst.min(c);
            assert!(c >= bound, "{kind}: cosine {c} < {bound} for {text:?}");
        }
        eprintln!("minilm-{kind}: worst cosine {worst:.7}");
    }
}

#[test]
fn text_model_rejects_bad_inputs() {
    let Some(bytes) = load("q8_0") else { return };
    let model = Model::from_bytes(&bytes).unwrap();
    let mut arena = vec![0.0f32; model.arena_len(8, 0)];
    let mut out = vec![0.0f32; 384];
    let err = model
        .run(None, Input::Vector(&[0.0; 4]), &mut out, &mut arena)
        .unwrap_err();
    assert_eq!(err, riffle_core::Error::BadInput);
    let err = model
        .run(None, Input::Tokens(&[]), &mut out, &mut arena)
        .unwrap_err();
    assert_eq!(err, riffle_core::Error::BadInput);
    let err = model
        .run(
            None,
            Input::Tokens(&[101, 40_000, 102]),
            &mut out,
            &mut arena,
        )
        .unwrap_err();
    assert_eq!(err, riffle_core::Error::BadInput);
    let err = model
        .run(None, Input::Tokens(&[101; 9]), &mut out, &mut arena)
        .unwrap_err();
    assert!(matches!(err, riffle_core::Error::BufferTooSmall { .. }));
}

/// The committed sentiment adapter (GSOFT b = 8 on the top two blocks, its own 3-way head):
/// unmerged and merged outputs agree, its labels and head apply, and it binds to the F16
/// and Q8_0 conversions of the same base through `adapter.compatible_model_ids`.
#[test]
fn sentiment_adapter_unmerged_equals_merged_on_every_weight_type() {
    use riffle_core::runtime::{Adapter, Session};
    let adapter_bytes =
        riffle_tests::read_repo_file("models/minilm-adapters/minilm-sentiment.gguf");
    let adapter = Adapter::from_bytes(&adapter_bytes).unwrap();
    let texts = [
        "what a lovely day",
        "this is the worst service ever, I am so angry",
        "the meeting is at 3pm",
    ];
    for (kind, tol) in [("f32", 1e-4f32), ("f16", 1e-3), ("q8_0", 1e-3)] {
        let Some(bytes) = load(kind) else { return };
        let model = Model::from_bytes(&bytes).unwrap();
        let mut index = vec![0u32; model.tokenizer_index_len().unwrap()];
        let tok = model.tokenizer(&mut index).unwrap();
        let mut workspace = vec![0.0f32; adapter.workspace_len(&model).unwrap()];
        let mut merged = vec![0.0f32; model.merged_len()];
        let mut session = Session::new(&model);
        let h = session
            .add_adapter(adapter.prepare(&model, &mut workspace).unwrap())
            .unwrap();
        // Scratch for the batched swap path (output-side chains applied to all columns).
        let mut scratch = vec![0.0f32; session.swap_fast_scratch_len()];
        session.activate(Some(h), &mut scratch).unwrap();
        let labels = session.adapters()[h].labels().unwrap();
        assert_eq!(
            labels.iter().map(|(_, l)| l).collect::<Vec<_>>(),
            ["negative", "neutral", "positive"]
        );
        let mut arena = vec![0.0f32; session.arena_len(32)];
        let mut ids = vec![0u32; 32];
        let mut unmerged = Vec::new();
        let mut out = vec![0.0f32; 8];
        for t in texts {
            let n = tok.encode(t, 32, &mut ids).unwrap();
            let k = session
                .run(Input::Tokens(&ids[..n]), &mut out, &mut arena)
                .unwrap();
            assert_eq!(k, 3, "{kind}: a 3-way head");
            unmerged.push(out[..k].to_vec());
        }
        let argmax = |v: &[f32]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
        assert_eq!(
            argmax(&unmerged[0]),
            2,
            "{kind}: 'what a lovely day' is positive"
        );
        assert_eq!(
            argmax(&unmerged[1]),
            0,
            "{kind}: the angry sentence is negative"
        );
        session.enable_merged(&mut merged, &mut scratch).unwrap();
        for (t, um) in texts.iter().zip(&unmerged) {
            let n = tok.encode(t, 32, &mut ids).unwrap();
            let k = session
                .run(Input::Tokens(&ids[..n]), &mut out, &mut arena)
                .unwrap();
            let d = out[..k]
                .iter()
                .zip(um)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(d <= tol, "{kind}: merged vs unmerged logits differ by {d}");
        }
    }
}

/// The committed text adapters (sentiment, topic, language) against the training path's
/// float64 logits from the stored parameters (tests/data/golden/minilm-*.json), unmerged
/// and merged, on the F32 base; ids from riffle's tokenizer equal the golden ids.
#[test]
fn text_adapters_match_training_path_goldens() {
    use riffle_core::runtime::{Adapter, Session};
    let Some(bytes) = load("f32") else { return };
    let model = Model::from_bytes(&bytes).unwrap();
    let mut index = vec![0u32; model.tokenizer_index_len().unwrap()];
    let tok = model.tokenizer(&mut index).unwrap();
    for task in ["sentiment", "topic", "language"] {
        let g: Value = serde_json::from_str(
            &std::fs::read_to_string(data_path(&format!("golden/minilm-{task}.json"))).unwrap(),
        )
        .unwrap();
        let tol = g["tolerance"]["logits_abs"].as_f64().unwrap() as f32;
        let adapter_bytes = riffle_tests::read_repo_file(g["adapter"].as_str().unwrap());
        let adapter = Adapter::from_bytes(&adapter_bytes).unwrap();
        let mut workspace = vec![0.0f32; adapter.workspace_len(&model).unwrap()];
        let mut merged = vec![0.0f32; model.merged_len()];
        let mut session = Session::new(&model);
        let h = session
            .add_adapter(adapter.prepare(&model, &mut workspace).unwrap())
            .unwrap();
        let mut scratch = vec![0.0f32; session.swap_fast_scratch_len()];
        session.activate(Some(h), &mut scratch).unwrap();
        let cases = g["cases"].as_array().unwrap();
        let mut arena = vec![0.0f32; session.arena_len(model.max_tokens())];
        let mut ids = vec![0u32; model.max_tokens()];
        let mut out = vec![0.0f32; 64];
        let mut check = |session: &Session, merged_mode: bool| {
            for c in cases {
                let text = c["text"].as_str().unwrap();
                let want_ids: Vec<u32> = c["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
                    .collect();
                let n = tok.encode(text, model.max_tokens(), &mut ids).unwrap();
                assert_eq!(&ids[..n], &want_ids[..], "{task}: ids of {text:?}");
                let k = session
                    .run(Input::Tokens(&ids[..n]), &mut out, &mut arena)
                    .unwrap();
                let want: Vec<f32> = c["logits"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect();
                assert_eq!(k, want.len(), "{task}: head size");
                let d = out[..k]
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(
                    d <= tol,
                    "{task} (merged: {merged_mode}): |logits - golden| = {d} > {tol} for {text:?}"
                );
            }
        };
        check(&session, false);
        session.enable_merged(&mut merged, &mut scratch).unwrap();
        check(&session, true);
    }
}
