//! The chat module's engine on the host: the sliced generation gives the same tokens as
//! `riffle_host::generate::generate`, answers the France question with "Paris", streams
//! text through the byte-level vocabulary, reuses the conversation prefix, re-reads the
//! state after an adapter switch, and refuses bad adapters without losing the chat.
//!
//! Needs SmolLM2-135M-Instruct's Q4_1 GGUF, the file the page serves (`scripts/smollm2`;
//! `RIFFLE_CHAT_TEST_MODEL` names another); skipped (with a note) without it, like the
//! other SmolLM2 tests.

use std::path::PathBuf;

use riffle_chat::engine::{ChatEngine, Event, Upload};
use riffle_core::runtime::DecoderState;
use riffle_core::sample::SamplerConfig;
use riffle_host::chat::Message;
use riffle_host::generate::{generate, Buffers, GenerateOptions};

fn smollm2() -> Option<Vec<u8>> {
    let p = match std::env::var_os("RIFFLE_CHAT_TEST_MODEL") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME")?)
            .join(".cache/riffle/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    match std::fs::read(&p) {
        Ok(b) => Some(b),
        Err(_) => {
            eprintln!(
                "skipped: {} is missing (scripts/smollm2 makes it)",
                p.display()
            );
            None
        }
    }
}

/// The file's chat template on the France question, as llama.cpp's `llama-tokenize`
/// (SmolLM2-135M-Instruct, `--ids`) reads it.
const FRANCE_TEXT: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
const FRANCE_IDS: [u32; 37] = [
    1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407,
    19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531,
    198,
];

fn run_all(e: &mut ChatEngine) -> (Vec<u32>, String, &'static str) {
    let mut ids = Vec::new();
    let mut text = String::new();
    loop {
        match e.advance().unwrap() {
            Event::Prompt { .. } => {}
            Event::Token { id, text: t } => {
                ids.push(id);
                text.push_str(&t);
            }
            Event::Done { reason } => return (ids, text, reason),
        }
    }
}

#[test]
fn france_answers_paris_like_the_host_loop() {
    let Some(bytes) = smollm2() else { return };
    let mut e = ChatEngine::new(bytes.clone(), Some("smollm2.gguf"), 512).unwrap();
    let rendered = e
        .render(&[
            Message::system("You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
            Message::user("What is the capital of France?"),
        ])
        .unwrap();
    assert_eq!(rendered, FRANCE_TEXT);
    assert_eq!(e.encode(&rendered).unwrap(), FRANCE_IDS);
    e.begin(&FRANCE_IDS, SamplerConfig::GREEDY, 24).unwrap();
    let (ids, text, reason) = run_all(&mut e);
    assert!(text.contains("Paris"), "answer: {text:?}");
    assert!(reason == "stop" || reason == "length", "{reason}");
    let t = e.timings();
    assert_eq!(t.prompt_tokens, FRANCE_IDS.len());
    assert_eq!(t.tokens, ids.len());

    // The same tokens and text as riffle-host's loop on the same model.
    let model = riffle_core::runtime::Model::from_bytes(&bytes).unwrap();
    let session = riffle_core::runtime::Session::new(&model);
    let need = model.state_len(512);
    let mut kv = vec![0.0f32; need];
    let mut state = DecoderState::new(&mut kv, need, 512).unwrap();
    let mut bufs = Buffers::new(&model, 32);
    let opts = GenerateOptions {
        max_tokens: 24,
        sampler: SamplerConfig::GREEDY,
        stop_tokens: e.stop_tokens().to_vec(),
        adjust: Default::default(),
        json_object: false,
    };
    let vocab = e.vocab();
    let g = generate(
        &session,
        &mut state,
        &FRANCE_IDS,
        &vocab,
        &opts,
        &mut bufs,
        &mut |_, _| true,
    )
    .unwrap();
    assert_eq!(g.tokens, ids);
    assert_eq!(g.text, text);

    // A second turn reuses the first turn's prefix; the answer is unchanged.
    e.begin(&FRANCE_IDS, SamplerConfig::GREEDY, 24).unwrap();
    let (again, _, _) = run_all(&mut e);
    assert_eq!(again, ids);
    // Reuse stops at a chunk boundary (the tail is read as a fresh start reads it).
    let reused = (FRANCE_IDS.len() - 1) / riffle_chat::engine::PROMPT_CHUNK
        * riffle_chat::engine::PROMPT_CHUNK;
    assert_eq!(e.timings().reused_tokens, reused);
    assert_eq!(e.timings().prompt_tokens, FRANCE_IDS.len() - reused);

    // bench() decodes the same greedy tokens (no stop token).
    let (b, _, _) = e.bench(&FRANCE_IDS, ids.len()).unwrap();
    assert_eq!(b, ids);
}

#[test]
fn stop_ends_at_the_next_token() {
    let Some(bytes) = smollm2() else { return };
    let mut e = ChatEngine::new(bytes, None, 256).unwrap();
    e.begin(&FRANCE_IDS, SamplerConfig::GREEDY, 64).unwrap();
    let mut tokens = 0;
    loop {
        match e.advance().unwrap() {
            Event::Token { .. } => {
                tokens += 1;
                if tokens == 2 {
                    e.stop();
                }
            }
            Event::Prompt { .. } => {}
            Event::Done { .. } => break,
        }
    }
    assert_eq!(tokens, 2);
    assert!(matches!(
        e.advance().unwrap(),
        Event::Done { reason: "idle" }
    ));
}

#[test]
fn bad_adapters_are_refused_and_the_chat_goes_on() {
    let Some(bytes) = smollm2() else { return };
    let mut e = ChatEngine::new(bytes, Some("smollm2.gguf"), 256).unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let digits = std::fs::read(root.join("models/digits/mlp-rotated.gguf")).unwrap();
    let err = e
        .add_adapter(digits.clone(), Some("mlp-rotated.gguf"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("mlp-rotated.gguf: adapter is for a `mlp` base"),
        "{err}"
    );
    let mut corrupt = digits.clone();
    let n = corrupt.len();
    corrupt[n - 3] ^= 0x55;
    let err = e
        .add_adapter(corrupt, Some("corrupt.gguf"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("corrupt.gguf: "), "{err}");
    let err = e
        .add_adapter(digits[..digits.len() / 2].to_vec(), Some("half.gguf"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("half.gguf: "), "{err}");
    let err = e
        .add_adapter(b"not a gguf".to_vec(), None)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("adapter: "), "{err}");
    assert!(e.adapters().is_empty());
    assert!(e.use_adapter(Some(0)).is_err());
    e.begin(&FRANCE_IDS, SamplerConfig::GREEDY, 8).unwrap();
    let (_, text, _) = run_all(&mut e);
    assert!(text.contains("Paris"), "{text:?}");
}

#[test]
fn non_causal_models_and_short_uploads_are_refused() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mlp = std::fs::read(root.join("models/digits/mlp.gguf")).unwrap();
    let err = ChatEngine::new(mlp.clone(), Some("mlp.gguf"), 64)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("mlp.gguf: is not a generative"), "{err}");
    let mut up = Upload::new(mlp.len());
    up.write(&mlp[..100]).unwrap();
    assert!(up
        .finish()
        .unwrap_err()
        .to_string()
        .contains("after 100 of"));
    let mut up = Upload::new(4);
    assert!(up.write(&[0; 5]).is_err());
    up.write(&[1, 2]).unwrap();
    up.write(&[3, 4]).unwrap();
    assert_eq!(up.finish().unwrap(), vec![1, 2, 3, 4]);
}
