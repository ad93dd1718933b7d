//! Regression inputs under `tests/data/corrupt/`: files the fuzzers (fuzz/, see
//! docs/robustness.md) reported, kept forever. Every file goes through every entry point
//! a front end calls on untrusted bytes (container, model, adapter against both digits
//! bases, tokenizer on the bytes as text); none may panic, and the files listed in
//! `EXPECTED` give exactly the recorded outcome.

use riffle_core::gguf::{
    Gguf, Value, KEY_ARCHITECTURE, KEY_DATA_CRC32, KEY_LABELS, KEY_MLP_LAYER_COUNT,
};
use riffle_core::runtime::{Adapter, Input, Model, Session};
use riffle_core::text::{index_len, LineVocab, SpecialTokens, Spelling, Tokenizer};
use riffle_core::{Error, KeyName};
use riffle_tests::{data_path, read_repo_file};

/// What each entry point gives on a file: `(file, Gguf::parse, Model::from_bytes,
/// Adapter::from_bytes)`, `Ok(())` for success.
type Outcome = Result<(), Error>;
const EXPECTED: &[(&str, Outcome, Outcome, Outcome)] = &[
    // An `mlp` header whose metadata holds an f64 NaN: parses; not a loadable model
    // (no layer keys) nor an adapter. Found a harness bug (NaN != NaN), kept as a seed.
    (
        "gguf-nan-f64-metadata.gguf",
        Ok(()),
        Err(Error::MissingKey {
            key: KeyName("mlp.layer_count"),
        }),
        Err(Error::MissingKey {
            key: KeyName("general.type"),
        }),
    ),
];

fn corrupt_files() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(data_path("corrupt"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf" || e == "bin"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// Every accessor of a parsed file (as the fuzz target's walk), floats compared by bits.
fn walk(g: &Gguf<'_>) {
    for (key, value) in g.metadata() {
        let got = g.get(key).unwrap();
        match (got, value) {
            (Value::F64(a), Value::F64(b)) => assert_eq!(a.to_bits(), b.to_bits()),
            (Value::F32(a), Value::F32(b)) => assert_eq!(a.to_bits(), b.to_bits()),
            (Value::Array(a), Value::Array(b)) => assert_eq!(a.len(), b.len()),
            (a, b) => assert_eq!(a, b),
        }
        let _ = (
            value.as_str(),
            value.as_u32(),
            value.as_f32(),
            value.as_array().and_then(|a| a.as_strings()),
        );
    }
    // The typed accessors take the format's static key names.
    for key in [
        KEY_ARCHITECTURE,
        KEY_MLP_LAYER_COUNT,
        KEY_LABELS,
        KEY_DATA_CRC32,
    ] {
        let _ = (
            g.get_str(key),
            g.get_u32(key),
            g.get_f32(key),
            g.get_strings(key),
        );
    }
    let _ = (g.model_id(), g.verify_crc());
    for t in g.tensors() {
        let mut buf = vec![0.0f32; t.element_count().min(4096)];
        if t.ggml_type().is_float() {
            t.decode_f32(0, &mut buf).unwrap();
        }
    }
}

fn model_outcome(bytes: &[u8]) -> Outcome {
    let model = Model::from_bytes(bytes)?;
    if model.bert_config().is_none() {
        let x = vec![0.0f32; model.input_len()];
        let mut out = vec![0.0f32; model.output_len()];
        let mut arena = vec![0.0f32; model.arena_len(0, 0)];
        model.run(None, Input::Vector(&x), &mut out, &mut arena)?;
    }
    Ok(())
}

fn adapter_outcome(bytes: &[u8], bases: &[Model<'_>]) -> Outcome {
    let adapter = Adapter::from_bytes(bytes)?;
    for model in bases {
        let Ok(len) = adapter.workspace_len(model) else {
            continue;
        };
        let mut ws = vec![0.0f32; len];
        if let Ok(p) = adapter.prepare(model, &mut ws) {
            let mut s = Session::new(model);
            let h = s.add_adapter(p)?;
            s.activate(Some(h), &mut [])?;
            let x = vec![0.0f32; model.input_len()];
            let mut out = vec![0.0f32; 64];
            let mut arena = vec![0.0f32; s.arena_len(0)];
            s.run(Input::Vector(&x), &mut out, &mut arena)?;
        }
    }
    Ok(())
}

#[test]
fn every_regression_input_is_handled() {
    let mlp = read_repo_file("models/digits/mlp.gguf");
    let cnn = read_repo_file("models/digits/cnn.gguf");
    let bases = [
        Model::from_bytes(&mlp).unwrap(),
        Model::from_bytes(&cnn).unwrap(),
    ];
    let vocab = std::fs::read_to_string(data_path("tokenizer/vocab.txt")).unwrap();
    let source = LineVocab::new(&vocab, Spelling::Hf).unwrap();
    let mut index = vec![0u32; index_len(source_len(&vocab))];
    let tok = Tokenizer::new(source, &mut index, SpecialTokens::BERT_UNCASED).unwrap();
    let files = corrupt_files();
    assert!(
        !files.is_empty(),
        "tests/data/corrupt/ has no regression inputs"
    );
    for (name, bytes) in &files {
        let parsed = Gguf::parse(bytes).map(|g| walk(&g));
        let model = model_outcome(bytes);
        let adapter = adapter_outcome(bytes, &bases);
        let mut ids = [0u32; 128];
        let n = tok
            .encode(&String::from_utf8_lossy(bytes), 128, &mut ids)
            .unwrap();
        assert!((2..=128).contains(&n));
        for e in [&parsed, &model, &adapter]
            .into_iter()
            .filter_map(|r| r.err())
        {
            assert!(!e.to_string().is_empty());
        }
        if let Some((_, p, m, a)) = EXPECTED.iter().find(|(n, ..)| n == name) {
            assert_eq!(&parsed, p, "{name}: Gguf::parse");
            assert_eq!(&model, m, "{name}: Model::from_bytes");
            assert_eq!(&adapter, a, "{name}: Adapter::from_bytes");
        }
        eprintln!("{name}: parse {parsed:?}, model {model:?}, adapter {adapter:?}");
    }
    // Every file is listed with its expected outcome.
    for (name, _) in &files {
        assert!(
            EXPECTED.iter().any(|(n, ..)| n == name),
            "{name}: add it to EXPECTED"
        );
    }
}

fn source_len(vocab: &str) -> usize {
    vocab.lines().count()
}
