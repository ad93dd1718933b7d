//! Properties of the WordPiece tokenizer on arbitrary strings: no panic, `[CLS]` first,
//! `[SEP]` last, `max_len` respected, truncation consistent, both spellings agree.

use std::sync::OnceLock;

use proptest::prelude::*;
use riffle_core::text::{index_len, LineVocab, SpecialTokens, Spelling, Tokenizer};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/tokenizer");

struct Fixture {
    hf: Tokenizer<'static, LineVocab<'static>>,
    phantom: Tokenizer<'static, LineVocab<'static>>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let hf_text: &'static str = std::fs::read_to_string(format!("{DATA}/vocab.txt"))
            .unwrap()
            .leak();
        let mut phantom = String::new();
        for (id, tok) in hf_text.lines().enumerate() {
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
        let phantom_text: &'static str = phantom.leak();
        let make = |text: &'static str, spelling| {
            let source = LineVocab::new(text, spelling).unwrap();
            let index = vec![0u32; index_len(30_522)].leak();
            Tokenizer::new(source, index, SpecialTokens::BERT_UNCASED).unwrap()
        };
        Fixture {
            hf: make(hf_text, Spelling::Hf),
            phantom: make(phantom_text, Spelling::PhantomSpace),
        }
    })
}

/// Strings biased towards what the tokenizer treats specially.
fn text() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "[UNK]",
        "[PAD]",
        "[",
        "]",
        "##",
        "#",
        " ",
        "\t",
        "\n",
        "\u{0}",
        "\u{FFFD}",
        "\u{200B}",
        "\u{3000}",
        "\u{0301}",
        "\u{0323}",
        "e\u{0301}",
        "İ",
        "Σ",
        "中",
        "文",
        "\u{F900}",
        "한",
        "\u{1100}",
        "😀",
        "👩‍💻",
        "hello",
        "world",
        "un",
        "##able",
        "ing",
        "a",
        "x",
        "!",
        "...",
        "-",
        "é",
        "ß",
        "\u{1E944}",
        "\u{08E2}",
        "\u{1D160}",
        "\u{0F73}",
    ]);
    prop_oneof![
        any::<String>(),
        "\\PC{0,300}",
        prop::collection::vec(pieces, 0..80).prop_map(|v| v.concat()),
        (
            prop::sample::select(vec!['a', 'é', '中', '😀', 'z']),
            90usize..110
        )
            .prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics_and_frames_output(s in text(), max_len in 2usize..300) {
        let f = fixture();
        let mut out = vec![u32::MAX; max_len + 3];
        let stats = f.hf.encode_with_stats(&s, max_len, &mut out).unwrap();
        let n = stats.len;
        prop_assert!((2..=max_len).contains(&n));
        prop_assert_eq!(out[0], 101);
        prop_assert_eq!(out[n - 1], 102);
        prop_assert!(out[1..n - 1].iter().all(|&id| id < 30_522 && id != 101 || s.contains("[CLS]")));
        prop_assert!(out[max_len..].iter().all(|&x| x == u32::MAX), "wrote past max_len");
        prop_assert!(!stats.truncated || n == max_len);
    }

    #[test]
    fn truncation_is_a_prefix(s in text(), a in 2usize..64, b in 2usize..600) {
        let f = fixture();
        let (small, large) = (a.min(b), a.max(b));
        let mut x = vec![0u32; small];
        let mut y = vec![0u32; large];
        let sx = f.hf.encode_with_stats(&s, small, &mut x).unwrap();
        let sy = f.hf.encode_with_stats(&s, large, &mut y).unwrap();
        prop_assert!(sx.len <= sy.len);
        prop_assert_eq!(&x[1..sx.len - 1], &y[1..sx.len - 1]);
        if !sy.truncated && sy.len <= small {
            prop_assert_eq!(&x[..sx.len], &y[..sy.len]);
        }
        prop_assert_eq!(sx.truncated, sx.len - 2 < sy.len - 2 || sy.truncated && sx.len == small);
    }

    #[test]
    fn spellings_agree(s in text()) {
        let f = fixture();
        let mut x = vec![0u32; 512];
        let mut y = vec![0u32; 512];
        let nx = f.hf.encode(&s, 512, &mut x).unwrap();
        let ny = f.phantom.encode(&s, 512, &mut y).unwrap();
        prop_assert_eq!(&x[..nx], &y[..ny]);
    }
}
