//! The llama loader and decoder (`Model::from_bytes` on `general.architecture = llama`,
//! the byte-level BPE tokenizer from the same file, `run` and `step` with a KV cache in a
//! tiny context). The first byte picks the mode:
//!
//! - 0x00..=0x7F: the rest is a whole GGUF file (mutations of the committed tiny llamas,
//!   tests/data/llama/tiny-llama.gguf and tiny-llama-f32.gguf): a file that loads as a
//!   causal model must tokenize, prefill and decode without a panic, every failure a typed
//!   error;
//! - 0x80..: the committed tiny-llama-f32.gguf (with its tokenizer) and its GSOFT adapter
//!   on the rest as text (lossy UTF-8): ids inside the vocabulary, prefill and decode with
//!   and without the adapter, a state refused under the other adapter.
//!
//! On both paths: a prompt past the state's context is a typed error that leaves the
//! state's positions unchanged, and a decode step past the context is refused the same way.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use riffle_core::runtime::{Adapter, DecoderState, Input, Model, Prepared};
use riffle_core::text::bpe::{BpeTokenizer, EncodeOptions, StreamDecoder};
use riffle_core::Error;
use riffle_fuzz::MAX_ALLOC;

static TINY: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/llama/tiny-llama-f32.gguf"
));
static TINY_GSOFT: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/llama/tiny-llama-gsoft.gguf"
));

/// At most this many prompt tokens go through the model (tiny context: the decoder's cost,
/// not the tokenizer's, bounds a run).
const MAX_PROMPT: usize = 8;
/// Decode steps after the prompt (the state's context is the prompt plus these).
const DECODE: usize = 2;

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Token ids of `text` by the file's own tokenizer; `None` when the file has none that
/// loads (a typed error) or its index would be too large to allocate here.
fn tokenize(model: &Model<'_>, text: &str) -> Option<Vec<u32>> {
    let len = BpeTokenizer::index_len(model.gguf()).ok()?;
    if len > MAX_ALLOC {
        return None;
    }
    let mut index = vec![0u32; len];
    let tok = BpeTokenizer::from_gguf(model.gguf(), &mut index).ok()?;
    let mut ids = vec![0u32; text.len() + 2];
    let opts = EncodeOptions {
        parse_special: true,
        add_special: true,
    };
    let n = tok
        .encode_with(text, &mut ids, opts)
        .expect("text.len() + 2 ids always suffice");
    ids.truncate(n);
    assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_len()));
    // Streaming decode of whatever ids the model may produce never panics.
    let mut dec = StreamDecoder::new();
    for &id in ids.iter().chain(&[0, u32::MAX]) {
        let _ = dec.push(&tok, id, true, |_| {});
    }
    dec.finish(|_| {});
    Some(ids)
}

/// Prefill `prompt` and decode `DECODE` greedy tokens under `adapter` in a context that
/// holds exactly that; then check the context's limits. Errors from the model are typed:
/// they end the run (a hostile vocabulary may not cover the ids, values may overflow).
fn decode(model: &Model<'_>, adapter: Option<&Prepared<'_, '_>>, prompt: &[u32]) -> Option<()> {
    let context = prompt.len() + DECODE;
    let (state_len, arena_len, out_len) = (
        model.state_len(context),
        model.step_arena_len(prompt.len()),
        model.output_len(),
    );
    if state_len > MAX_ALLOC || arena_len > MAX_ALLOC || out_len > MAX_ALLOC {
        return None;
    }
    let mut kv = vec![0.0f32; state_len];
    let mut arena = vec![0.0f32; arena_len];
    let mut out = vec![0.0f32; out_len];

    // A prompt longer than the context: refused, the state still empty.
    let mut too_long = prompt.to_vec();
    too_long.extend_from_slice(&[0; DECODE + 1]);
    let mut state = DecoderState::new(&mut kv, state_len, context).ok()?;
    assert!(model
        .step(adapter, &mut state, &too_long, &mut out, &mut arena)
        .is_err());
    assert_eq!(state.len(), 0, "a refused prompt moved the state");

    let n = model
        .step(adapter, &mut state, prompt, &mut out, &mut arena)
        .ok()?;
    assert_eq!(n, out_len);
    assert_eq!(state.len(), prompt.len());
    for _ in 0..DECODE {
        let next = argmax(&out);
        if model
            .step(adapter, &mut state, &[next], &mut out, &mut arena)
            .is_err()
        {
            return None;
        }
    }
    assert_eq!(state.len(), context);
    // The context is full: one more token is refused and the state keeps its positions.
    let r = model.step(adapter, &mut state, &[0], &mut out, &mut arena);
    assert!(
        matches!(r, Err(Error::ContextExceeded { .. })),
        "a step past the context gave {r:?}"
    );
    assert_eq!(state.len(), context);
    Some(())
}

/// The checks every causal model that loads goes through.
fn exercise(model: &Model<'_>, text: &str, adapter: Option<&Prepared<'_, '_>>) {
    let Some(cfg) = model.llama_config() else {
        return;
    };
    assert!(model.is_causal());
    assert!(cfg.blocks > 0 && cfg.hidden > 0 && cfg.heads > 0 && cfg.kv_heads > 0);
    let mut prompt = tokenize(model, text).unwrap_or_else(|| vec![0, 1]);
    prompt.truncate(MAX_PROMPT);
    if prompt.is_empty() {
        prompt.push(0);
    }
    // The whole prompt at once through `run`.
    let (arena_len, out_len) = (model.arena_len(prompt.len(), 0), model.output_len());
    if arena_len <= MAX_ALLOC && out_len <= MAX_ALLOC {
        let mut arena = vec![0.0f32; arena_len];
        let mut out = vec![0.0f32; out_len];
        if let Ok(n) = model.run(adapter, Input::Tokens(&prompt), &mut out, &mut arena) {
            assert_eq!(n, out_len);
        }
    }
    let _ = decode(model, None, &prompt);
    if let Some(p) = adapter {
        if decode(model, Some(p), &prompt).is_some() {
            // A state filled under the adapter is refused without it.
            let context = prompt.len() + 1;
            let len = model.state_len(context);
            let mut kv = vec![0.0f32; len];
            let mut arena = vec![0.0f32; model.step_arena_len(prompt.len())];
            let mut out = vec![0.0f32; out_len];
            let mut state = DecoderState::new(&mut kv, len, context).expect("sized above");
            model
                .step(Some(p), &mut state, &prompt, &mut out, &mut arena)
                .expect("ran above");
            let r = model.step(None, &mut state, &[0], &mut out, &mut arena);
            assert!(
                matches!(r, Err(Error::StaleState)),
                "a state of another adapter gave {r:?}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    if head < 0x80 {
        match Model::from_bytes(rest) {
            Ok(model) => exercise(&model, "<|im_start|>user\nHi 42 é<|im_end|>\n", None),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    } else {
        let model = Model::from_bytes(TINY).expect("the fixture loads");
        let adapter = Adapter::from_bytes(TINY_GSOFT).expect("the fixture adapter parses");
        let mut ws = vec![0.0f32; adapter.workspace_len(&model).expect("fits the fixture")];
        let prepared = adapter.prepare(&model, &mut ws).expect("prepares");
        let text: Cow<'_, str> = String::from_utf8_lossy(rest);
        exercise(&model, &text, Some(&prepared));
    }
});
