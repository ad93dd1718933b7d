//! The WordPiece tokenizer on arbitrary text: valid UTF-8 as is, anything else through
//! `String::from_utf8_lossy`. The first byte picks `max_len` and the mode:
//!
//! - BERT's uncased vocabulary (tests/data/tokenizer/vocab.txt) in both spellings (HF
//!   `##` and llama.cpp's phantom space), which must give the same ids; `[CLS]` first,
//!   `[SEP]` last, `max_len` respected, truncation a prefix of the untruncated result;
//! - (high bit set) a hostile vocabulary: the text up to the first NUL is the vocabulary,
//!   the next bytes the special ids, the rest the text.
#![no_main]

use std::borrow::Cow;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use riffle_core::text::{index_len, LineVocab, SpecialTokens, Spelling, Tokenizer};

static VOCAB: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/tokenizer/vocab.txt"
));

struct Pair {
    hf: Tokenizer<'static, LineVocab<'static>>,
    phantom: Tokenizer<'static, LineVocab<'static>>,
    len: usize,
}

fn pair() -> &'static Pair {
    static P: OnceLock<Pair> = OnceLock::new();
    P.get_or_init(|| {
        let mut phantom = String::new();
        for (id, tok) in VOCAB.lines().enumerate() {
            match tok.strip_prefix("##") {
                _ if [0, 100, 101, 102, 103].contains(&id) => phantom.push_str(tok),
                Some(rest) => phantom.push_str(rest),
                None => {
                    phantom.push('\u{2581}');
                    phantom.push_str(tok);
                }
            }
            phantom.push('\n');
        }
        let make = |text: &'static str, spelling| {
            let source = LineVocab::new(text, spelling).expect("vocab");
            let index = vec![0u32; index_len(30_522)].leak();
            Tokenizer::new(source, index, SpecialTokens::BERT_UNCASED).expect("tokenizer")
        };
        Pair {
            hf: make(VOCAB, Spelling::Hf),
            phantom: make(phantom.leak(), Spelling::PhantomSpace),
            len: VOCAB.lines().count(),
        }
    })
}

fn text_of(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

fn bert(max_len: usize, text: &str) {
    let p = pair();
    let mut a = vec![0u32; 512];
    let mut b = vec![0u32; 512];
    let sa =
        p.hf.encode_with_stats(text, max_len, &mut a)
            .expect("encode");
    let sb = p
        .phantom
        .encode_with_stats(text, max_len, &mut b)
        .expect("encode");
    let n = sa.len;
    assert!((2..=max_len).contains(&n));
    assert_eq!(&a[..n], &b[..sb.len], "spellings disagree on {text:?}");
    assert_eq!((a[0], a[n - 1]), (101, 102));
    assert!(a[..n].iter().all(|&id| (id as usize) < p.len));
    assert!(a[max_len..].iter().all(|&v| v == 0), "wrote past max_len");
    // The untruncated encoding starts with the truncated one's pieces.
    let mut full = vec![0u32; 512];
    let sf =
        p.hf.encode_with_stats(text, 512, &mut full)
            .expect("encode");
    if !sf.truncated {
        assert!(sf.len >= n);
        assert_eq!(&full[..n - 1], &a[..n - 1]);
        assert_eq!(sa.truncated, sf.len > max_len);
    }
    // Too-small buffers are typed errors.
    assert!(p.hf.encode(text, 1, &mut a).is_err());
    assert!(p.hf.encode(text, max_len, &mut a[..max_len - 1]).is_err());
}

fn hostile(rest: &[u8]) {
    let cut = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    let (vocab_bytes, tail) = rest.split_at(cut);
    let tail = tail.get(1..).unwrap_or_default();
    let (ids, text) = tail.split_at(tail.len().min(5));
    let id = |i: usize| u32::from(ids.get(i).copied().unwrap_or(0));
    let special = SpecialTokens {
        cls: id(0),
        sep: id(1),
        unk: id(2),
        pad: (id(3) & 1 == 1).then(|| id(3) >> 1),
        mask: (id(4) & 1 == 1).then(|| id(4) >> 1),
    };
    let vocab = text_of(vocab_bytes);
    let text = text_of(text);
    for spelling in [Spelling::Hf, Spelling::PhantomSpace] {
        let Ok(source) = LineVocab::new(&vocab, spelling) else {
            continue;
        };
        let mut index = vec![0u32; index_len(vocab.len() + 1)];
        let Ok(tok) = Tokenizer::new(source, &mut index, special) else {
            continue;
        };
        let mut out = [0u32; 64];
        let n = tok.encode(&text, 64, &mut out).expect("encode");
        let len = vocab.split('\n').count();
        assert!(
            out[..n].iter().all(|&i| (i as usize) < len.max(1)),
            "id outside the vocabulary"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    if head & 0x80 != 0 {
        hostile(rest);
        return;
    }
    let max_len = 2 + usize::from(head & 0x7f) * 4; // 2..=510
    match std::str::from_utf8(rest) {
        Ok(s) => bert(max_len, s),
        Err(_) => bert(max_len, &text_of(rest)),
    }
});
