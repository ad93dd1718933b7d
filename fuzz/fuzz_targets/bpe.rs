//! The byte-level BPE tokenizer (`riffle_core::text::bpe`) on arbitrary tokenizer
//! metadata and text. The first byte picks the mode:
//!
//! - 0..=0x3F: the committed tests/data/gguf/bpe_mini.gguf (every byte has a token) on
//!   the rest as text (lossy UTF-8): ids inside the vocabulary, and the streaming decode
//!   gives back the text exactly when it has no special-token text (`<`);
//! - 0x40..=0x7F: the rest is a whole GGUF file (mutations of the fixture): building
//!   and encoding never panic, errors are typed;
//! - 0x80..: hostile metadata assembled into a GGUF file: the rest, split at NUL bytes,
//!   is the token list (lines), the token types (one byte each), the merges (lines) and
//!   the text; the low bits pick the pre-tokenizer and the bos/eos settings.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use riffle_core::gguf::Gguf;
use riffle_core::text::bpe::{BpeTokenizer, EncodeOptions, StreamDecoder};
use riffle_fuzz::MAX_ALLOC;

static MINI: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/gguf/bpe_mini.gguf"
));

/// Encodes `text`, checks ids and the streaming decode; returns the decoded text.
fn exercise(tok: &BpeTokenizer<'_, '_>, text: &str, opts: EncodeOptions) -> Option<String> {
    let mut out = vec![0u32; text.len() + 2];
    let n = tok.encode_with(text, &mut out, opts).expect("text.len() + 2 always suffices");
    assert!(out[..n].iter().all(|&id| (id as usize) < tok.vocab_len()));
    // A short buffer is a typed error, never a panic.
    if n > 0 {
        let mut short = vec![0u32; n - 1];
        assert!(tok.encode_with(text, &mut short, opts).is_err());
    }
    let mut dec = StreamDecoder::new();
    let mut got = String::new();
    for &id in &out[..n] {
        dec.push(tok, id, true, |s| got.push_str(s)).expect("id in vocabulary");
    }
    dec.finish(|s| got.push_str(s));
    assert!(dec.push(tok, u32::MAX, true, |_| {}).is_err());
    Some(got)
}

fn with_file(bytes: &[u8], text: &str) -> Option<String> {
    let gguf = Gguf::parse(bytes).ok()?;
    let len = BpeTokenizer::index_len(&gguf).ok()?;
    if len > MAX_ALLOC {
        return None;
    }
    let mut index = vec![0u32; len];
    let tok = BpeTokenizer::from_gguf(&gguf, &mut index).ok()?;
    let mut got = None;
    for parse_special in [true, false] {
        got = exercise(
            &tok,
            text,
            EncodeOptions {
                parse_special,
                add_special: true,
            },
        );
    }
    got
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
}

fn put_key(out: &mut Vec<u8>, key: &str, vtype: u32) {
    put_str(out, key.as_bytes());
    out.extend_from_slice(&vtype.to_le_bytes());
}

fn put_strings(out: &mut Vec<u8>, key: &str, items: &[&[u8]]) {
    put_key(out, key, 9);
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&(items.len() as u64).to_le_bytes());
    for s in items {
        put_str(out, s);
    }
}

/// A GGUF v3 file with no tensors and the given tokenizer keys.
fn assemble(head: u8, rest: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut parts = rest.splitn(4, |&b| b == 0);
    let tokens: Vec<&[u8]> = parts.next().unwrap_or_default().split(|&b| b == b'\n').collect();
    let types = parts.next().unwrap_or_default();
    let merges: Vec<&[u8]> = parts
        .next()
        .unwrap_or_default()
        .split(|&b| b == b'\n')
        .filter(|m| !m.is_empty())
        .collect();
    let text = parts.next().unwrap_or_default().to_vec();
    let mut kv = Vec::new();
    let mut n = 0u64;
    put_key(&mut kv, "tokenizer.ggml.model", 8);
    put_str(&mut kv, b"gpt2");
    n += 1;
    put_key(&mut kv, "tokenizer.ggml.pre", 8);
    put_str(&mut kv, [&b"smollm"[..], b"gpt-2", b"qwen2", b"llama3"][usize::from(head & 3)]);
    n += 1;
    put_strings(&mut kv, "tokenizer.ggml.tokens", &tokens);
    n += 1;
    put_strings(&mut kv, "tokenizer.ggml.merges", &merges);
    n += 1;
    if head & 4 != 0 {
        put_key(&mut kv, "tokenizer.ggml.token_type", 9);
        kv.extend_from_slice(&5u32.to_le_bytes()); // i32 elements
        kv.extend_from_slice(&(types.len() as u64).to_le_bytes());
        for &t in types {
            kv.extend_from_slice(&i32::from(t % 8).to_le_bytes());
        }
        n += 1;
    }
    for (bit, key) in [
        (8, "tokenizer.ggml.add_bos_token"),
        (16, "tokenizer.ggml.add_eos_token"),
    ] {
        put_key(&mut kv, key, 7);
        kv.push(u8::from(head & bit != 0));
        n += 1;
    }
    if head & 32 != 0 {
        for (key, id) in [
            ("tokenizer.ggml.bos_token_id", 0u32),
            ("tokenizer.ggml.eos_token_id", (types.len() as u32).saturating_sub(1)),
        ] {
            put_key(&mut kv, key, 4);
            kv.extend_from_slice(&id.to_le_bytes());
            n += 1;
        }
    }
    let mut file = Vec::new();
    file.extend_from_slice(b"GGUF");
    file.extend_from_slice(&3u32.to_le_bytes());
    file.extend_from_slice(&0u64.to_le_bytes());
    file.extend_from_slice(&n.to_le_bytes());
    file.extend_from_slice(&kv);
    (file, text)
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    match head {
        0..=0x3F => {
            let text: Cow<'_, str> = String::from_utf8_lossy(rest);
            let got = with_file(MINI, &text).expect("the fixture loads");
            if !text.contains('<') {
                assert_eq!(got, text, "decode(encode(text)) differs");
            }
        }
        0x40..=0x7F => {
            let _ = with_file(rest, "Hello world! 123 <|im_start|>é😀\t\n  x");
        }
        _ => {
            let (file, text) = assemble(head, rest);
            let _ = with_file(&file, &String::from_utf8_lossy(&text));
        }
    }
});
