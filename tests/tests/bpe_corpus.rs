//! The byte-level BPE tokenizer against llama.cpp's `llama-tokenize` on SmolLM2-135M-Instruct
//! (tests/data/tokenizer/bpe-corpus.jsonl, made by gen_bpe_corpus.py), and its property
//! tests on the real vocabulary: decode(encode(s)) == s, streaming decode never emits a
//! broken character. The GGUF file is not committed: `scripts/test` puts it in
//! ~/.cache/riffle/smollm2 (`RIFFLE_SKIP_LLAMA=1` skips; a missing file fails).

use proptest::prelude::*;
use riffle_core::gguf::Gguf;
use riffle_core::text::bpe::{BpeTokenizer, EncodeOptions, StreamDecoder};
use std::sync::OnceLock;

/// The Q4_1 file with its tensor count set to 0: the tokenizer reads only metadata, and
/// the GGUF reader of this build need not know the file's tensor types.
fn file() -> Option<&'static [u8]> {
    static FILE: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    FILE.get_or_init(|| {
        riffle_tests::smollm2("Q4_1").map(|mut b| {
            b[8..16].fill(0);
            b
        })
    })
    .as_deref()
}

fn index(gguf: &Gguf<'_>) -> Vec<u32> {
    vec![0u32; BpeTokenizer::index_len(gguf).unwrap()]
}

fn decode(tok: &BpeTokenizer<'_, '_>, ids: &[u32], special: bool) -> String {
    let mut out = String::new();
    let mut dec = StreamDecoder::new();
    for &id in ids {
        dec.push(tok, id, special, |s| out.push_str(s)).unwrap();
    }
    dec.finish(|s| out.push_str(s));
    out
}

#[test]
fn corpus_ids_equal_llama_tokenize() {
    let Some(bytes) = file() else { return };
    let gguf = Gguf::parse(bytes).unwrap();
    let mut idx = index(&gguf);
    let tok = BpeTokenizer::from_gguf(&gguf, &mut idx).unwrap();
    let corpus = riffle_tests::read_repo_file("tests/data/tokenizer/bpe-corpus.jsonl");
    let corpus = String::from_utf8(corpus).unwrap();
    let mut n_cases = 0;
    let mut n_roundtrip = 0;
    let mut failures = Vec::new();
    for line in corpus.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = v["text"].as_str().unwrap();
        let want: Vec<u32> = v["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let mut out = vec![0u32; text.len() + 2];
        let n = tok.encode(text, &mut out).unwrap();
        if out[..n] != want[..] {
            failures.push(format!("{text:?}: got {:?}, want {want:?}", &out[..n]));
        }
        // The ids decode back to the text (special tokens rendered), except where
        // llama.cpp itself drops bytes: a byte whose character has no token.
        if decode(&tok, &want, true) == text {
            n_roundtrip += 1;
        }
        n_cases += 1;
    }
    assert!(n_cases >= 1000, "{n_cases} cases");
    println!("{n_cases} strings, {n_roundtrip} decode back to the text");
    assert!(
        failures.is_empty(),
        "{} of {n_cases} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(n_roundtrip > 900, "{n_roundtrip} of {n_cases} decode back");
}

#[test]
fn smollm2_metadata() {
    let Some(bytes) = file() else { return };
    let gguf = Gguf::parse(bytes).unwrap();
    assert_eq!(BpeTokenizer::index_len(&gguf).unwrap(), 245_149);
    let mut idx = index(&gguf);
    let tok = BpeTokenizer::from_gguf(&gguf, &mut idx).unwrap();
    assert_eq!(tok.vocab_len(), 49_152);
    assert_eq!(tok.bos(), (Some(1), false));
    assert_eq!(tok.eos(), (Some(2), false));
    assert_eq!(tok.token_id("<|im_start|>"), Some(1));
    // Special tokens are only matched when asked for.
    let mut out = [0u32; 64];
    let n = tok.encode("<|im_end|>", &mut out).unwrap();
    assert_eq!(&out[..n], &[2]);
    let plain = EncodeOptions {
        parse_special: false,
        add_special: true,
    };
    let n = tok.encode_with("<|im_end|>", &mut out, plain).unwrap();
    assert!(n > 1 && !out[..n].contains(&2));
    assert_eq!(decode(&tok, &out[..n], false), "<|im_end|>");
    // Control tokens are skipped unless rendered.
    assert_eq!(decode(&tok, &[1, 19556, 2], false), "Hello");
    assert_eq!(
        decode(&tok, &[1, 19556, 2], true),
        "<|im_start|>Hello<|im_end|>"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn roundtrip_and_stream(s in "\\PC{0,40}|[ \\t\\n0-9a-z'é中😀]{0,40}") {
        let Some(bytes) = file() else { return Ok(()) };
        prop_assume!(!s.contains("<|") && !s.contains('<'));
        let gguf = Gguf::parse(bytes).unwrap();
        let mut idx = index(&gguf);
        let tok = BpeTokenizer::from_gguf(&gguf, &mut idx).unwrap();
        let mut out = vec![0u32; s.len() + 2];
        let n = tok.encode(&s, &mut out).unwrap();
        // Streaming: every emitted chunk is whole characters, and the chunks so far are
        // a prefix of the text.
        let mut dec = StreamDecoder::new();
        let mut got = String::new();
        for &id in &out[..n] {
            dec.push(&tok, id, false, |c| got.push_str(c)).unwrap();
            prop_assert!(s.starts_with(&got), "{got:?} is not a prefix of {s:?}");
        }
        dec.finish(|c| got.push_str(c));
        prop_assert_eq!(got, s);
    }
}

/// Timings quoted in docs/runtime.md (run with `--release -- --ignored --nocapture`): the
/// index, the whole corpus file as one text, a long run of CJK letters, a 5,000-byte word.
#[test]
#[ignore]
fn encode_speed() {
    use std::time::Instant;
    let Some(bytes) = file() else { return };
    let gguf = Gguf::parse(bytes).unwrap();
    let t = Instant::now();
    let mut idx = index(&gguf);
    let tok = BpeTokenizer::from_gguf(&gguf, &mut idx).unwrap();
    println!("index: {:?}", t.elapsed());
    let corpus = riffle_tests::read_repo_file("tests/data/tokenizer/bpe-corpus.jsonl");
    let corpus = String::from_utf8(corpus).unwrap();
    let cjk = "日本語のテキスト中文文本测试你好世界".repeat(60);
    let word = "a".repeat(5000);
    for (name, text, ids) in [
        ("corpus file", &corpus, 124_373),
        ("CJK run", &cjk, 1_920),
        ("5,000 x a", &word, 1_250),
    ] {
        for factor in [2, 1] {
            let mut out = vec![0u32; factor * text.len() + 2];
            let t = Instant::now();
            let n = tok.encode(text, &mut out).unwrap();
            let e = t.elapsed();
            assert_eq!(n, ids, "{name}");
            println!(
                "{name}: {} bytes -> {n} ids in {e:?} ({:.1} MB/s), out = {factor} x text",
                text.len(),
                text.len() as f64 / e.as_secs_f64() / 1e6
            );
        }
    }
}
