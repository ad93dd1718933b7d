//! `riffle tokenize` against llama.cpp's `llama-tokenize` ids (tests/data/tokenizer/
//! bpe-corpus.jsonl) on SmolLM2-135M-Instruct, the WordPiece path on the committed bert
//! fixture, and bad inputs (exit 2, one line). The SmolLM2 file is not committed:
//! `scripts/test` puts it in ~/.cache/riffle/smollm2 (`RIFFLE_SKIP_LLAMA=1` skips those
//! cases; a missing file fails).

use std::process::Output;

use serde_json::Value;

mod support;
use support::{repo, run, smollm2};

fn ids_of(o: &Output) -> Vec<u64> {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 1, "only `ids`: {v}");
    v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn json_ids_equal_llama_tokenize_on_the_corpus() {
    let Some(model) = smollm2("Q4_1") else { return };
    let corpus =
        std::fs::read_to_string(repo().join("tests/data/tokenizer/bpe-corpus.jsonl")).unwrap();
    let mut checked = 0;
    // Every 8th string (one process per string), the whole corpus is in riffle-tests.
    for line in corpus.lines().step_by(8) {
        let v: Value = serde_json::from_str(line).unwrap();
        let text = v["text"].as_str().unwrap();
        if text.contains('\0') {
            continue; // not passable as a command-line argument
        }
        let want: Vec<u64> = v["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        let got = ids_of(&run(&[
            "tokenize", "--model", &model, "--text", text, "--json",
        ]));
        assert_eq!(got, want, "{text:?}");
        checked += 1;
    }
    assert!(checked >= 120, "{checked}");
    // The example, and the readable listing.
    let got = ids_of(&run(&[
        "tokenize",
        "--model",
        &model,
        "--text",
        "Hello world! 123",
        "--json",
    ]));
    assert_eq!(got, [19556, 905, 17, 216, 33, 34, 35]);
    let o = run(&["tokenize", "-m", &model, "--text", "<|im_start|>Hi"]);
    assert!(o.status.success());
    let s = String::from_utf8(o.stdout).unwrap();
    assert_eq!(s, "     1 -> \"<|im_start|>\"\n 26843 -> \"Hi\"\n");
}

#[test]
fn wordpiece_files_and_bad_inputs() {
    let bert = repo()
        .join("tests/data/gguf/bert_mini.gguf")
        .display()
        .to_string();
    let got = ids_of(&run(&[
        "tokenize",
        "--model",
        &bert,
        "--text",
        "Hello, world!",
        "--json",
    ]));
    assert_eq!(got, [2, 6, 1, 7, 1, 3]); // [CLS] hello [UNK] world [UNK] [SEP]

    let bad = |args: &[&str], words: &str| {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let e = String::from_utf8(o.stderr).unwrap();
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains(words), "{e}");
    };
    let mlp = repo()
        .join("tests/data/gguf/mlp_base.gguf")
        .display()
        .to_string();
    bad(&["tokenize", "-m", &mlp, "--text", "x"], "no tokenizer");
    bad(
        &["tokenize", "-m", "/nonexistent.gguf", "--text", "x"],
        "/nonexistent.gguf",
    );
    // A missing --text is clap's usage error (exit 2).
    assert_eq!(run(&["tokenize", "-m", &bert]).status.code(), Some(2));
    let dir = std::env::temp_dir().join(format!("riffle-tokenize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.gguf");
    std::fs::write(&junk, b"not a gguf file").unwrap();
    bad(
        &["tokenize", "-m", junk.to_str().unwrap(), "--text", "x"],
        "junk.gguf",
    );
    // An unknown pre-tokenizer is refused, not guessed.
    let mut mini = std::fs::read(repo().join("tests/data/gguf/bpe_mini.gguf")).unwrap();
    let at = mini.windows(6).position(|w| w == b"smollm").unwrap();
    mini[at..at + 6].copy_from_slice(b"qwen2x");
    let f = dir.join("pre.gguf");
    std::fs::write(&f, &mini).unwrap();
    bad(
        &["tokenize", "-m", f.to_str().unwrap(), "--text", "x"],
        "pre-tokenizer",
    );
    let _ = std::fs::remove_dir_all(&dir);
}
