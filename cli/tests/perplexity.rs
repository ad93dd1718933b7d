//! `riffle perplexity`: against the training path's float64 logits of the tiny llama
//! fixture (always runs), against llama.cpp's `llama-perplexity` on SmolLM2 (values it
//! printed, below; skipped with RIFFLE_SKIP_LLAMA), and its bad inputs.

use serde_json::Value;

mod support;
use support::{repo, run, smollm2, stderr, stdout};

fn json_of(args: &[&str]) -> Value {
    let o = run(args);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(stdout(&o).trim()).unwrap()
}

fn close(got: f64, want: f64, rel: f64, what: &str) {
    assert!(
        ((got - want) / want).abs() <= rel,
        "{what}: {got} against {want} (relative tolerance {rel})"
    );
}

/// The fixture's prompts as text files, one chunk each (`--context` = the prompt's
/// tokens): the perplexity of the second half, from PyTorch's float64 logits of every
/// position, for the bare base and each of the four adapters (GSOFT, Double GSOFT, OFT,
/// BOFT). The fixture's F32 arithmetic gives logits within 1e-4 of float64
/// (tests/tests/llama_fixture.rs); the mean negative log-likelihood agrees within 1.7e-6
/// (measured), and the test allows 2e-5. A token scored against the wrong position is off
/// by 19, one extra token read before the scored half by 1e-4.
#[test]
fn perplexity_of_the_fixture_equals_float64() {
    let dir = repo().join("tests/data/llama");
    let f: Value =
        serde_json::from_slice(&std::fs::read(dir.join("tiny-llama.json")).unwrap()).unwrap();
    let model = dir.join(f["base"].as_str().unwrap());
    let tmp = std::env::temp_dir().join(format!("riffle-ppl-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let rows = |v: &Value| -> Vec<Vec<f64>> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            })
            .collect()
    };
    let mut runs: Vec<(Option<String>, &Value)> = vec![(None, &f["logits"])];
    for a in f["adapters"].as_array().unwrap() {
        let file = dir.join(a["file"].as_str().unwrap());
        runs.push((Some(file.display().to_string()), &a["logits"]));
    }
    for (k, p) in f["prompts"].as_array().unwrap().iter().enumerate() {
        let text = tmp.join(format!("prompt{k}.txt"));
        std::fs::write(&text, p["text"].as_str().unwrap()).unwrap();
        let ids: Vec<usize> = p["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let n = ids.len();
        let first = n / 2;
        for (adapter, logits) in &runs {
            let want_rows = rows(&logits[k]);
            // -log softmax(row j)[ids[j + 1]] for j in first .. n - 1
            let nll: f64 = (first..n - 1)
                .map(|j| {
                    let row = &want_rows[j];
                    let max = row.iter().cloned().fold(f64::MIN, f64::max);
                    let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
                    lse - row[ids[j + 1]]
                })
                .sum::<f64>()
                / (n - 1 - first) as f64;
            let ctx = n.to_string();
            let (m, t) = (model.display().to_string(), text.display().to_string());
            let mut args = vec![
                "perplexity",
                "-m",
                &m,
                "-f",
                &t,
                "--context",
                &ctx,
                "--json",
            ];
            if let Some(a) = adapter {
                args.extend(["-a", a.as_str()]);
            }
            let v = json_of(&args);
            let what = format!("prompt {k}, {}", adapter.as_deref().unwrap_or("base"));
            assert_eq!(v["scored"], (n - 1 - first) as u64, "{what}");
            assert_eq!(
                (v["chunks"].as_u64(), v["tokens"].as_u64()),
                (Some(1), Some(n as u64))
            );
            let got = v["nll"].as_f64().unwrap();
            assert!((got - nll).abs() < 2e-5, "{what}: nll {got} against {nll}");
            close(v["ppl"].as_f64().unwrap(), nll.exp(), 2e-5, &what);
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// SmolLM2 on cli/tests/data/perplexity.txt (947 tokens, three chunks of 256), against
/// what llama.cpp printed for the same file and chunking (`llama-perplexity -m
/// SmolLM2-135M-Instruct.<type>.gguf -f cli/tests/data/perplexity.txt -c 256 -b 256 -t 1`,
/// llama.cpp of llama-cpp-python 0.3.36, 2026-12-06): F16 `[1]49.6177,[2]64.7816,
/// [3]91.8892`, Q4_1 `[1]49.9904,[2]64.8372,[3]92.2678`. F16 computes in float on both
/// sides (measured 0.03% apart); on Q4_1 llama.cpp quantizes every activation to 8 bits,
/// its head's too, where riffle keeps a prompt's last row and the head in `f32` (measured
/// 0.4% apart: riffle's Q4_1 lands nearer the F16 value).
#[test]
fn perplexity_of_smollm2_matches_llama_cpp() {
    let text = repo().join("cli/tests/data/perplexity.txt");
    let t = text.display().to_string();
    for (kind, want, rel) in [
        ("F16", [49.6177, 64.7816, 91.8892], 0.002),
        ("Q4_1", [49.9904, 64.8372, 92.2678], 0.01),
    ] {
        let Some(m) = smollm2(kind) else { return };
        let base = [
            "perplexity",
            "-m",
            &m,
            "-f",
            &t,
            "--context",
            "256",
            "--json",
        ];
        let v = json_of(&base);
        assert_eq!(
            (v["chunks"].as_u64(), v["scored"].as_u64()),
            (Some(3), Some(381))
        );
        let running: Vec<f64> = v["chunk_ppl"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        for (c, (g, w)) in running.iter().zip(want).enumerate() {
            close(*g, w, rel, &format!("{kind} chunk {}", c + 1));
        }
        assert_eq!(v["ppl"].as_f64(), running.last().copied());
        // --chunks 1 scores the first chunk alone: the first running value, to the bit.
        let one = json_of(&[&base[..], &["--chunks", "1"]].concat());
        assert_eq!(one["ppl"].as_f64(), Some(running[0]), "{kind}");
        // Keys and values kept as halves, as llama.cpp keeps them: the same agreement
        // (F16 measured 49.6293, 64.7966, 91.9139 against f32's 49.6327, 64.8009, 91.9114),
        // and not the f32 cache's numbers to the bit.
        let half = json_of(&[&base[..], &["--cache-type", "f16"]].concat());
        for (c, (g, w)) in half["chunk_ppl"]
            .as_array()
            .unwrap()
            .iter()
            .zip(want)
            .enumerate()
        {
            close(
                g.as_f64().unwrap(),
                w,
                rel,
                &format!("{kind} f16 cache chunk {}", c + 1),
            );
        }
        assert_ne!(half["ppl"].as_f64(), v["ppl"].as_f64(), "{kind}");
    }
}

#[test]
fn bad_inputs_exit_2_with_one_line() {
    let dir = repo().join("tests/data/llama");
    let model = dir.join("tiny-llama-f32.gguf").display().to_string();
    let text = repo()
        .join("cli/tests/data/perplexity.txt")
        .display()
        .to_string();
    let tmp = std::env::temp_dir().join(format!("riffle-ppl-bad-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let latin1 = tmp.join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9 au lait").unwrap();
    let short = tmp.join("short.txt");
    std::fs::write(&short, "two words").unwrap();
    let (latin1, short) = (latin1.display().to_string(), short.display().to_string());
    let dataset = repo()
        .join("models/digits/heldout-digits.gguf")
        .display()
        .to_string();
    for (args, says) in [
        (vec!["-f", &latin1], "is not UTF-8 text (byte 3)"),
        (
            vec!["-f", &short, "--context", "64"],
            "fewer than one chunk of --context 64",
        ),
        (vec!["-f", "/nonexistent.txt"], "/nonexistent.txt"),
        (
            vec!["-f", &text, "--context", "3"],
            "--context: must be between 4",
        ),
        (
            vec!["-f", &text, "--context", "257"],
            "the model's context of 256 tokens",
        ),
        (
            vec!["-f", &text, "--chunks", "0"],
            "--chunks: must be at least 1",
        ),
        (vec!["-f", &text, "--task", "nope"], "nope"),
    ] {
        let mut a = vec!["perplexity", "-m", &model];
        a.extend(args.iter().copied());
        let o = run(&a);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{a:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{a:?}: {err}");
        assert!(err.contains(says), "{a:?}: {err}");
    }
    // A cache type riffle does not keep: clap's usage error, exit 2.
    let o = run(&[
        "perplexity",
        "-m",
        &model,
        "-f",
        &text,
        "--cache-type",
        "q8",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("'q8' for '--cache-type"),
        "{}",
        stderr(&o)
    );
    // Not a model (a dataset).
    let o = run(&["perplexity", "-m", &dataset, "-f", &text]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&tmp);
}
