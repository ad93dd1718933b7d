//! Integration tests of the `riffle` binary on the committed digits models: every command,
//! the JSON shapes, adapter swapping in the repl, merge == unmerged, and bad inputs that
//! must give exit status 2 with one line naming the file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use riffle_core::gguf::Gguf;
use serde_json::Value;

mod support;
use support::{optional, repo, riffle, run, run_stdin, stderr, stdout};

fn digits(name: &str) -> String {
    repo()
        .join("models/digits")
        .join(name)
        .display()
        .to_string()
}

/// A fresh scratch folder for one test.
fn scratch(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("riffle-cli-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Held-out inputs `(n, 64)` and labels of a committed dataset.
fn heldout(task: &str) -> (Vec<Vec<f32>>, Vec<i32>) {
    let bytes = std::fs::read(digits(&format!("heldout-{task}.gguf"))).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    let x = g.find_tensor("inputs").unwrap();
    let n = x.shape()[0] as usize;
    let mut flat = vec![0.0f32; n * 64];
    x.decode_f32(0, &mut flat).unwrap();
    let y = g.find_tensor("labels").unwrap();
    let mut labels = vec![0i32; n];
    y.decode_i32(0, &mut labels).unwrap();
    (flat.chunks(64).map(<[f32]>::to_vec).collect(), labels)
}

/// A `.npy` v1 file with the given dtype descriptor, shape and raw data.
fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

fn f32_npy(rows: &[Vec<f32>]) -> Vec<u8> {
    let data: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    npy(
        "<f4",
        &format!("({}, {})", rows.len(), rows[0].len()),
        &data,
    )
}

fn line_of(x: &[f32]) -> String {
    x.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Exit status 2, one line on stderr, starting with `riffle: ` and naming `file`.
fn assert_bad(o: &Output, file: &str, words: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("riffle: "), "{err}");
    assert!(err.contains(file), "names `{file}`: {err}");
    assert!(
        err.to_lowercase().contains(&words.to_lowercase()),
        "says `{words}`: {err}"
    );
}

#[test]
fn demo_prints_every_task_with_plausible_accuracies() {
    let out = ok(&run(&["demo"]));
    for word in [
        "mlp.gguf",
        "cnn.gguf",
        "digits",
        "rotated",
        "inverted",
        "noisy",
        "parity",
        "gsoft",
        "double_gsoft",
        "oft",
        "boft",
        "activate",
        "swap",
        "arena",
    ] {
        assert!(out.contains(word), "demo output lacks `{word}`:\n{out}");
    }
    // Every adapter row: the adapter lifts the task to a good accuracy.
    let mut rows = 0;
    for line in out.lines() {
        let cells: Vec<&str> = line.split_whitespace().collect();
        let Some(task) = cells.first() else { continue };
        if !["rotated", "inverted", "noisy", "parity"].contains(task) || cells.len() < 8 {
            continue;
        }
        let pct: Vec<f64> = cells
            .iter()
            .filter_map(|c| c.strip_suffix('%'))
            .map(|c| c.parse().unwrap())
            .collect();
        if pct.len() != 2 {
            continue;
        }
        rows += 1;
        let (base, adapted) = (pct[0], pct[1]);
        assert!(adapted >= 85.0, "{line}");
        if ["rotated", "inverted"].contains(task) {
            assert!(base < 30.0 && adapted > base + 50.0, "{line}");
        }
    }
    assert_eq!(rows, 8, "two bases × four adapters:\n{out}");
    assert_eq!(
        out.matches("same predictions on 1800/1800").count(),
        2,
        "merged mode agrees:\n{out}"
    );
    assert!(out.contains('█'), "draws a digit");
}

#[test]
fn run_json_shape_and_accuracy() {
    let dir = scratch("run-json");
    let (x, y) = heldout("rotated");
    let rows: Vec<Vec<f32>> = x[..20].to_vec();
    let path = dir.join("x.npy");
    std::fs::write(&path, f32_npy(&rows)).unwrap();
    let out = ok(&run(&[
        "run",
        "--model",
        &digits("mlp.gguf"),
        "--adapter",
        &digits("mlp-rotated.gguf"),
        "--adapter",
        &digits("mlp-parity.gguf"),
        "--task",
        "rotated",
        "--input",
        path.to_str().unwrap(),
        "--json",
    ]));
    let objs = json_lines(&out);
    assert_eq!(objs.len(), 20);
    let mut right = 0;
    for (i, o) in objs.iter().enumerate() {
        assert_eq!(o["input"], i);
        assert_eq!(o["task"], "rotated");
        assert_eq!(o["merged"], false);
        assert_eq!(o["output"].as_array().unwrap().len(), 10);
        let probs: Vec<f64> = o["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-4);
        let label = o["label"].as_str().unwrap();
        assert_eq!(label, o["label_index"].as_u64().unwrap().to_string());
        right += usize::from(label == y[i].to_string());
    }
    assert!(right >= 17, "{right}/20 right");

    // The base alone on the same inputs is mostly wrong; the parity head says even/odd.
    let base = json_lines(&ok(&run(&[
        "run",
        "-m",
        &digits("mlp.gguf"),
        "-a",
        &digits("mlp-rotated.gguf"),
        "--task",
        "base",
        "-i",
        path.to_str().unwrap(),
        "--json",
    ])));
    assert!(base.iter().all(|o| o["task"].is_null()));
    let parity = json_lines(&ok(&run(&[
        "run",
        "-m",
        &digits("mlp.gguf"),
        "-a",
        &digits("mlp-parity.gguf"),
        "-i",
        path.to_str().unwrap(),
        "--json",
    ])));
    for o in &parity {
        assert!(["even", "odd"].contains(&o["label"].as_str().unwrap()));
        assert_eq!(o["output"].as_array().unwrap().len(), 2);
    }
    // A riffle dataset file is an input too: the whole held-out set through the adapter.
    let all = json_lines(&ok(&run(&[
        "run",
        "-m",
        &digits("mlp.gguf"),
        "-a",
        &digits("mlp-rotated.gguf"),
        "-i",
        &digits("heldout-rotated.gguf"),
        "--json",
    ])));
    assert_eq!(all.len(), y.len());
    let right = all
        .iter()
        .zip(&y)
        .filter(|(o, t)| o["label_index"] == **t)
        .count();
    assert!(right * 100 >= 95 * y.len(), "{right}/{}", y.len());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn run_readable_vector_npy_stdin_and_merge_flag() {
    let dir = scratch("run-text");
    let (x, _) = heldout("digits");
    let path = dir.join("one.npy");
    let data: Vec<u8> = x[0].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&path, npy("<f4", "(64,)", &data)).unwrap();
    let out = ok(&run(&[
        "run",
        "-m",
        &digits("cnn.gguf"),
        "-i",
        path.to_str().unwrap(),
    ]));
    assert_eq!(out.lines().count(), 1);
    assert!(out.starts_with("0: "), "{out}");
    assert!(out.contains("p = "), "{out}");

    let input = format!(
        "# a comment\n{}\n\n{}\n",
        line_of(&x[0]),
        x[1].iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let unmerged = json_lines(&ok(&run_stdin(
        &[
            "run",
            "-m",
            &digits("cnn.gguf"),
            "-a",
            &digits("cnn-noisy.gguf"),
            "--stdin",
            "--json",
        ],
        &input,
    )));
    let merged = json_lines(&ok(&run_stdin(
        &[
            "run",
            "-m",
            &digits("cnn.gguf"),
            "-a",
            &digits("cnn-noisy.gguf"),
            "--stdin",
            "--json",
            "--merge",
        ],
        &input,
    )));
    assert_eq!(unmerged.len(), 2);
    assert_eq!(merged.len(), 2);
    for (u, m) in unmerged.iter().zip(&merged) {
        assert_eq!(m["merged"], true);
        assert_eq!(u["label"], m["label"]);
        for (a, b) in u["output"]
            .as_array()
            .unwrap()
            .iter()
            .zip(m["output"].as_array().unwrap())
        {
            assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-4);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn repl_swaps_adapters_between_inputs() {
    let (x, _) = heldout("digits");
    let (r, _) = heldout("rotated");
    let script = format!(
        ":info\n{a}\n:use parity\n{a}\n:base\n{b}\n:use rotated\n{b}\n:merge on\n{b}\n:use parity\n{a}\n:merge off\n{a}\n:quit\n{a}\n",
        a = line_of(&x[0]),
        b = line_of(&r[0]),
    );
    let o = run_stdin(
        &[
            "repl",
            "--model",
            &digits("mlp.gguf"),
            "--adapter",
            &digits("mlp-rotated.gguf"),
            "--adapter",
            &digits("mlp-parity.gguf"),
            "--json",
        ],
        &script,
    );
    let out = ok(&o);
    // No prompt noise on piped input.
    assert_eq!(stderr(&o), "");
    let lines: Vec<Value> = json_lines(&out);
    assert_eq!(
        lines.len(),
        1 + 7,
        "info + 7 results (none after :quit):\n{out}"
    );
    let info = &lines[0];
    assert_eq!(info["model_id"].as_str().unwrap().len(), 64);
    assert_eq!(info["adapters"].as_array().unwrap().len(), 2);
    assert_eq!(info["active"], "rotated");
    let res = &lines[1..];
    let label = |i: usize| res[i]["label"].as_str().unwrap().to_string();
    let task = |i: usize| res[i]["task"].clone();
    // Same input, rotated adapter (a digit) then parity adapter (even / odd).
    assert!(label(0).parse::<u8>().is_ok());
    assert!(["even", "odd"].contains(&label(1).as_str()));
    assert_ne!(label(0), label(1));
    assert_eq!(task(1), "parity");
    // Rotated input: the base and the rotated adapter; merged gives the same label.
    assert!(task(2).is_null());
    assert_eq!(task(3), "rotated");
    assert_eq!(res[4]["merged"], true);
    assert_eq!(label(3), label(4));
    assert_eq!(label(5), label(1));
    assert_eq!(res[6]["merged"], false);
    assert_eq!(label(6), label(1));
}

#[test]
fn repl_reports_bad_lines_and_continues() {
    let (x, _) = heldout("digits");
    let script = format!(":use nope\n1 2 3\n:merge maybe\n{}\n", line_of(&x[0]));
    let o = run_stdin(
        &[
            "repl",
            "-m",
            &digits("mlp.gguf"),
            "-a",
            &digits("mlp-noisy.gguf"),
        ],
        &script,
    );
    assert_eq!(o.status.code(), Some(2));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("noisy"), "{out}");
    let err = stderr(&o);
    assert!(err.contains("<stdin>:1: unknown task `nope`"), "{err}");
    assert!(err.contains("<stdin>:2: input has 3 values"), "{err}");
    assert!(err.contains("<stdin>:3:"), "{err}");
    assert!(!err.contains("panicked"));
}

/// Outputs of `run --json` for `inputs`.
fn outputs(args: &[&str], inputs: &[Vec<f32>]) -> Vec<Vec<f64>> {
    let text: String = inputs.iter().map(|x| line_of(x) + "\n").collect();
    let mut a = args.to_vec();
    a.extend(["--stdin", "--json"]);
    output_values(&ok(&run_stdin(&a, &text)))
}

/// The `output` arrays of `run --json` lines.
fn output_values(json: &str) -> Vec<Vec<f64>> {
    json_lines(json)
        .iter()
        .map(|o| {
            o["output"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn merged_model_matches_unmerged_within_1e4() {
    let dir = scratch("merge");
    for (base, adapter, task) in [
        ("mlp", "mlp-rotated", "rotated"),
        ("mlp", "mlp-inverted", "inverted"),
        ("mlp", "mlp-parity", "parity"),
        ("cnn", "cnn-noisy", "noisy"),
        ("cnn", "cnn-parity", "parity"),
    ] {
        let (x, _) = heldout(task);
        let x = &x[..60];
        let merged = dir.join(format!("{adapter}-merged.gguf"));
        let o = run(&[
            "merge",
            "--model",
            &digits(&format!("{base}.gguf")),
            "--adapter",
            &digits(&format!("{adapter}.gguf")),
            "-o",
            merged.to_str().unwrap(),
        ]);
        assert!(ok(&o).contains("wrote"));
        let want = outputs(
            &[
                "run",
                "-m",
                &digits(&format!("{base}.gguf")),
                "-a",
                &digits(&format!("{adapter}.gguf")),
            ],
            x,
        );
        let got = outputs(&["run", "-m", merged.to_str().unwrap()], x);
        assert_eq!(want.len(), got.len());
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w.len(), g.len());
            for (a, b) in w.iter().zip(g) {
                assert!((a - b).abs() < 1e-4, "{adapter}: {a} vs {b}");
            }
        }
        // The merged file is a base with a fresh, correct model id and the task's labels.
        let info = json_lines(&ok(&run(&[
            "inspect",
            merged.to_str().unwrap(),
            "--verify",
            "--json",
        ])));
        assert_eq!(info[0]["kind"], "model");
        assert_eq!(info[0]["verify"]["ok"], true);
        if task == "parity" {
            assert_eq!(
                info[0]["model"]["labels"],
                serde_json::json!(["even", "odd"])
            );
        }
        // An adapter bound to the original base is refused on the merged one.
        let o = run(&[
            "run",
            "-m",
            merged.to_str().unwrap(),
            "-a",
            &digits(&format!("{adapter}.gguf")),
            "--stdin",
        ]);
        assert_bad(&o, &format!("{adapter}.gguf"), "another base model");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn inspect_base_adapter_and_dataset() {
    let base = json_lines(&ok(&run(&[
        "inspect",
        &digits("mlp.gguf"),
        "--verify",
        "--json",
    ])));
    let b = &base[0];
    assert_eq!(b["kind"], "model");
    assert_eq!(b["model"]["architecture"], "mlp");
    assert_eq!(b["model"]["input_len"], 64);
    assert_eq!(b["model"]["output_len"], 10);
    assert_eq!(
        b["model"]["merged_bytes"],
        4 * (64 * 64 + 64 * 64 + 10 * 64)
    );
    assert!(b["model"]["arena_bytes"].as_u64().unwrap() > 0);
    assert_eq!(b["verify"]["ok"], true);
    let tensors = b["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 6);
    assert_eq!(tensors[0]["name"], "layers.0.weight");
    assert_eq!(tensors[0]["shape"], serde_json::json!([64, 64]));
    assert_eq!(tensors[0]["type"], "F32");
    assert_eq!(tensors[0]["bytes"], 64 * 64 * 4);
    assert_eq!(b["metadata"]["general.architecture"], "mlp");

    let ad = json_lines(&ok(&run(&[
        "inspect",
        &digits("cnn-inverted.gguf"),
        "--verify",
        "--json",
    ])));
    let a = &ad[0]["adapter"];
    assert_eq!(ad[0]["kind"], "adapter");
    assert_eq!(a["method"], "boft");
    assert_eq!(a["block_size"], 4);
    assert_eq!(a["factors"], 2);
    assert_eq!(a["permutation"], "butterfly");
    assert_eq!(a["task"], "inverted");
    assert_eq!(a["parameter_count"], 562);
    assert_eq!(a["base_model_id"], base_id("cnn.gguf"));
    assert_eq!(ad[0]["verify"]["ok"], true);

    let par = json_lines(&ok(&run(&[
        "inspect",
        &digits("mlp-parity.gguf"),
        "--json",
    ])));
    assert_eq!(
        par[0]["adapter"]["labels"],
        serde_json::json!(["even", "odd"])
    );
    assert_eq!(
        par[0]["adapter"]["head_tensors"],
        serde_json::json!(["layers.2.weight", "layers.2.bias"])
    );

    let ds = json_lines(&ok(&run(&[
        "inspect",
        &digits("heldout-noisy.gguf"),
        "--verify",
        "--json",
    ])));
    assert_eq!(ds[0]["kind"], "dataset");
    assert_eq!(ds[0]["dataset"]["task"], "noisy");
    assert_eq!(ds[0]["dataset"]["count"], 450);
    assert_eq!(ds[0]["verify"]["ok"], true);

    // The readable form has the sections and the tensor table.
    let text = ok(&run(&["inspect", &digits("mlp-rotated.gguf")]));
    for w in [
        "metadata",
        "tensors",
        "adapter: gsoft",
        "layers.0.weight.oft_in.0",
        "(8, 28)",
        "base id",
    ] {
        assert!(text.contains(w), "lacks `{w}`:\n{text}");
    }
}

fn base_id(file: &str) -> String {
    let bytes = std::fs::read(digits(file)).unwrap();
    Gguf::parse(&bytes)
        .unwrap()
        .stored_model_id()
        .unwrap()
        .to_string()
}

#[test]
fn inspect_verify_finds_corruption() {
    let dir = scratch("verify");
    // A flipped byte in the last tensor's data: CRC (adapter) and model id (base) mismatch.
    for (file, what) in [
        ("mlp-noisy.gguf", "CRC-32 MISMATCH"),
        ("cnn.gguf", "model id MISMATCH"),
    ] {
        let mut bytes = std::fs::read(digits(file)).unwrap();
        let span_end = {
            let g = Gguf::parse(&bytes).unwrap();
            g.data_offset() + g.data_span().len()
        };
        bytes[span_end - 3] ^= 0x40;
        let path = dir.join(file);
        std::fs::write(&path, &bytes).unwrap();
        let o = run(&["inspect", path.to_str().unwrap(), "--verify"]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stdout(&o).contains(what), "{}", stdout(&o));
        assert!(stderr(&o).contains(path.to_str().unwrap()));
    }
    // A corrupted adapter is refused by run too.
    let o = run(&[
        "run",
        "-m",
        &digits("mlp.gguf"),
        "-a",
        dir.join("mlp-noisy.gguf").to_str().unwrap(),
        "--stdin",
    ]);
    assert_bad(&o, "mlp-noisy.gguf", "CRC");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bench_json_fields() {
    let out = ok(&run(&[
        "bench",
        "--model",
        &digits("mlp.gguf"),
        "--adapter",
        &digits("mlp-inverted.gguf"),
        "--json",
        "--budget",
        "0.02",
    ]));
    let objs = json_lines(&out);
    assert_eq!(objs.len(), 1);
    let o = &objs[0];
    assert_eq!(o["seq"], 64);
    for f in [
        "base_ms",
        "unmerged_ms",
        "merged_ms",
        "activate_us",
        "swap_merged_ms",
    ] {
        let v = o[f].as_f64().unwrap_or_else(|| panic!("{f} in {o}"));
        assert!((0.0..1e4).contains(&v), "{f} = {v}");
    }
    assert!(o["base_ms"].as_f64().unwrap() > 0.0);
    // The interleaved pairs' median ratio: positive, and a plausible time ratio for an
    // adapter over a 64-value MLP (a few times the base at most).
    let r = o["unmerged_over_base"].as_f64().unwrap();
    assert!((0.1..20.0).contains(&r), "unmerged_over_base = {r}");
    assert!(o["arena_bytes"].as_u64().unwrap() > 0);
    assert_eq!(o["task"], "inverted");
    let text = ok(&run(&[
        "bench",
        "-m",
        &digits("cnn.gguf"),
        "-a",
        &digits("cnn-parity.gguf"),
        "--budget",
        "0.02",
    ]));
    assert!(text.contains("swap (merged, in place)"), "{text}");
}

#[test]
fn bad_inputs_exit_2_naming_the_file() {
    let dir = scratch("bad");
    let p = |name: &str| dir.join(name).display().to_string();
    let mut noise = Vec::new();
    let mut s: u32 = 7;
    for _ in 0..4096 {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        noise.push((s >> 24) as u8);
    }
    std::fs::write(p("random.gguf"), &noise).unwrap();
    let adapter = std::fs::read(digits("mlp-rotated.gguf")).unwrap();
    std::fs::write(p("truncated.gguf"), &adapter[..adapter.len() - 100]).unwrap();
    std::fs::write(p("header-only.gguf"), &adapter[..40]).unwrap();
    std::fs::write(p("empty.gguf"), b"").unwrap();
    let (x, _) = heldout("digits");
    let f64_data: Vec<u8> = x[0]
        .iter()
        .flat_map(|v| f64::from(*v).to_le_bytes())
        .collect();
    std::fs::write(p("f64.npy"), npy("<f8", "(64,)", &f64_data)).unwrap();
    let short: Vec<u8> = x[0][..63].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(p("short.npy"), npy("<f4", "(1, 63)", &short)).unwrap();
    let cube: Vec<u8> = x[0].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(p("cube.npy"), npy("<f4", "(4, 4, 4)", &cube)).unwrap();
    let mlp = digits("mlp.gguf");
    let missing = p("missing.gguf");

    let cases: Vec<(Vec<String>, String, &str)> = vec![
        (
            vec!["run".into(), "-m".into(), missing.clone(), "--stdin".into()],
            missing.clone(),
            "no such file",
        ),
        (
            vec!["inspect".into(), missing.clone()],
            missing.clone(),
            "no such file",
        ),
        (
            vec![
                "bench".into(),
                "-m".into(),
                mlp.clone(),
                "-a".into(),
                missing.clone(),
            ],
            missing.clone(),
            "no such file",
        ),
        (
            vec![
                "run".into(),
                "-m".into(),
                p("random.gguf"),
                "--stdin".into(),
            ],
            p("random.gguf"),
            "not a GGUF",
        ),
        (
            vec!["inspect".into(), p("random.gguf")],
            p("random.gguf"),
            "not a GGUF",
        ),
        (
            vec!["inspect".into(), p("empty.gguf")],
            p("empty.gguf"),
            "empty",
        ),
        (
            vec![
                "run".into(),
                "-m".into(),
                mlp.clone(),
                "-a".into(),
                p("truncated.gguf"),
                "--stdin".into(),
            ],
            p("truncated.gguf"),
            "truncated",
        ),
        (
            vec![
                "run".into(),
                "-m".into(),
                mlp.clone(),
                "-a".into(),
                p("header-only.gguf"),
                "--stdin".into(),
            ],
            p("header-only.gguf"),
            "truncated",
        ),
        (
            vec!["inspect".into(), p("truncated.gguf")],
            p("truncated.gguf"),
            "truncated",
        ),
        (
            vec![
                "merge".into(),
                "-m".into(),
                mlp.clone(),
                "-a".into(),
                p("truncated.gguf"),
                "-o".into(),
                p("out.gguf"),
            ],
            p("truncated.gguf"),
            "truncated",
        ),
        (
            vec![
                "run".into(),
                "-m".into(),
                mlp.clone(),
                "-a".into(),
                digits("cnn-rotated.gguf"),
                "--stdin".into(),
            ],
            digits("cnn-rotated.gguf"),
            "`cnn` base",
        ),
        (
            vec![
                "merge".into(),
                "-m".into(),
                mlp.clone(),
                "-a".into(),
                digits("cnn-parity.gguf"),
                "-o".into(),
                p("out.gguf"),
            ],
            digits("cnn-parity.gguf"),
            "`cnn` base",
        ),
        (
            vec![
                "bench".into(),
                "-m".into(),
                digits("cnn.gguf"),
                "-a".into(),
                digits("mlp-noisy.gguf"),
            ],
            digits("mlp-noisy.gguf"),
            "`mlp` base",
        ),
        (
            vec![
                "run".into(),
                "-m".into(),
                digits("mlp-rotated.gguf"),
                "--stdin".into(),
            ],
            digits("mlp-rotated.gguf"),
            "not a base model",
        ),
        (
            vec![
                "run".into(),
                "-m".into(),
                mlp.clone(),
                "-a".into(),
                digits("heldout-digits.gguf"),
                "--stdin".into(),
            ],
            digits("heldout-digits.gguf"),
            "not an adapter",
        ),
        (
            vec![
                "run".into(),
                "-m".into(),
                mlp.clone(),
                "-a".into(),
                digits("mlp-rotated.gguf"),
                "--task".into(),
                "sentiment".into(),
                "--stdin".into(),
            ],
            "--task".into(),
            "unknown task `sentiment`",
        ),
        (
            vec![
                "run".into(),
                "-m".into(),
                mlp.clone(),
                "--text".into(),
                "hello".into(),
            ],
            mlp.clone(),
            "not text",
        ),
        (
            vec![
                "run".into(),
                "-m".into(),
                mlp.clone(),
                "-i".into(),
                p("f64.npy"),
            ],
            p("f64.npy"),
            "float64",
        ),
        (
            vec![
                "run".into(),
                "-m".into(),
                mlp.clone(),
                "-i".into(),
                p("short.npy"),
            ],
            p("short.npy"),
            "63 values",
        ),
        (
            vec![
                "run".into(),
                "-m".into(),
                mlp.clone(),
                "-i".into(),
                p("cube.npy"),
            ],
            p("cube.npy"),
            "(4, 4, 4)",
        ),
        (
            vec![
                "run".into(),
                "-m".into(),
                mlp.clone(),
                "-i".into(),
                p("random.gguf"),
            ],
            p("random.gguf"),
            "not a NumPy",
        ),
        (
            vec![
                "run".into(),
                "-m".into(),
                mlp.clone(),
                "-i".into(),
                missing.clone(),
            ],
            missing.clone(),
            "no such file",
        ),
    ];
    for (args, file, words) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&args);
        assert_bad(&o, file, words);
    }
    // Wrong input length and non-numbers on stdin, named by line.
    let o = run_stdin(&["run", "-m", &mlp, "--stdin"], "1, 2, 3\n");
    assert_bad(&o, "<stdin>:1", "input has 3 values");
    let o = run_stdin(
        &["run", "-m", &mlp, "--stdin"],
        &format!("{}\nabc\n", line_of(&x[0])),
    );
    assert_bad(&o, "<stdin>:2", "not a number");
    assert!(!Path::new(&p("out.gguf")).exists(), "no output on failure");
    // Usage errors (clap) exit 2 as well.
    let o = run(&["run", "-m", &mlp]);
    assert_eq!(o.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(dir);
}

/// MiniLM files are built at set-up (scripts/test) and not committed: these checks run
/// when they are present.
fn minilm() -> Option<(String, String)> {
    let what = "text-model checks";
    let m = optional(repo().join("models/minilm/minilm-f32.gguf"), what)?;
    let a = optional(
        repo().join("models/minilm-adapters/minilm-sentiment.gguf"),
        what,
    )?;
    Some((m.display().to_string(), a.display().to_string()))
}

#[test]
fn text_model_run_repl_and_errors() {
    let Some((model, adapter)) = minilm() else {
        return;
    };
    let out = json_lines(&ok(&run(&[
        "run",
        "-m",
        &model,
        "-a",
        &adapter,
        "--text",
        "what a lovely day",
        "--json",
    ])));
    let o = &out[0];
    assert_eq!(o["task"], "sentiment");
    assert!(["negative", "neutral", "positive"].contains(&o["label"].as_str().unwrap()));
    assert_eq!(o["probabilities"].as_array().unwrap().len(), 3);
    assert!(o["tokens"].as_u64().unwrap() > 2);
    // The base alone gives the 384-value sentence embedding, no label.
    let base = json_lines(&ok(&run(&[
        "run", "-m", &model, "--text", "hello", "--json",
    ])));
    assert_eq!(base[0]["output"].as_array().unwrap().len(), 384);
    assert!(base[0]["label"].is_null());
    // Text lines on stdin, unmerged and merged, give the same labels.
    let lines = "I loved it\nawful service, never again\n";
    let u = json_lines(&ok(&run_stdin(
        &["run", "-m", &model, "-a", &adapter, "--stdin", "--json"],
        lines,
    )));
    let m = json_lines(&ok(&run_stdin(
        &[
            "run", "-m", &model, "-a", &adapter, "--stdin", "--json", "--merge",
        ],
        lines,
    )));
    assert_eq!(u.len(), 2);
    for (a, b) in u.iter().zip(&m) {
        assert_eq!(a["label"], b["label"]);
    }
    let repl = json_lines(&ok(&run_stdin(
        &["repl", "-m", &model, "-a", &adapter, "--json"],
        "I loved it\n:base\nI loved it\n",
    )));
    assert_eq!(repl[0]["task"], "sentiment");
    assert!(repl[1]["task"].is_null());
    // Numbers are not text... they are, for a text model; a .npy is refused.
    let dir = scratch("text");
    let npy_path = dir.join("x.npy");
    std::fs::write(&npy_path, f32_npy(&[vec![0.0; 4]])).unwrap();
    let o = run(&["run", "-m", &model, "-i", npy_path.to_str().unwrap()]);
    assert_bad(&o, &model, "takes text");
    let bench = json_lines(&ok(&run(&[
        "bench", "-m", &model, "-a", &adapter, "--seq", "8,24", "--budget", "0.01", "--json",
    ])));
    assert_eq!(bench.len(), 2);
    assert_eq!(bench[1]["seq"], 24);
    assert!(bench[1]["arena_bytes"].as_u64() > bench[0]["arena_bytes"].as_u64());
    let info = json_lines(&ok(&run(&["inspect", &model, "--json"])));
    assert_eq!(info[0]["model"]["takes_text"], true);
    assert!(info[0]["model"]["arena_bytes"]["128"].as_u64().unwrap() > 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// PEFT 0.21 adapters over the digits MLP, made by `tests/data/peft/make_fixtures.py`,
/// with the PEFT model's own outputs.
#[test]
fn import_peft_matches_peft_outputs() {
    let dir = scratch("peft");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/peft");
    for (fixture, tol, method) in [
        ("oft-exact", 1e-4, "oft"),
        ("boft", 1e-4, "boft"),
        // Cayley-Neumann (5 terms) is imported approximately: O(||S||^4).
        ("oft-neumann", 5e-3, "oft"),
    ] {
        let src = data.join(fixture);
        let out = dir.join(format!("{fixture}.gguf"));
        let msg = ok(&run(&[
            "import-peft",
            src.to_str().unwrap(),
            "--base",
            &digits("mlp.gguf"),
            "-o",
            out.to_str().unwrap(),
        ]));
        assert!(msg.contains("wrote"), "{msg}");
        assert_eq!(
            msg.contains("Cayley-Neumann"),
            fixture == "oft-neumann",
            "{msg}"
        );
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(src.join("expected.json")).unwrap())
                .unwrap();
        let inputs: Vec<Vec<f32>> = expected["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect();
        let got = outputs(
            &[
                "run",
                "-m",
                &digits("mlp.gguf"),
                "-a",
                out.to_str().unwrap(),
            ],
            &inputs,
        );
        let want = expected["outputs"].as_array().unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            let w: Vec<f64> = w
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            for (a, b) in g.iter().zip(&w) {
                assert!((a - b).abs() < tol, "{fixture}: riffle {a} vs PEFT {b}");
            }
        }
        let info = json_lines(&ok(&run(&[
            "inspect",
            out.to_str().unwrap(),
            "--verify",
            "--json",
        ])));
        assert_eq!(info[0]["adapter"]["method"], method);
        assert_eq!(info[0]["adapter"]["task"], fixture);
        assert_eq!(info[0]["verify"]["ok"], true);
        assert_eq!(info[0]["adapter"]["base_model_id"], base_id("mlp.gguf"));
    }
    // Bad inputs: no folder, a folder without a config, an adapter for another base.
    let missing = dir.join("nope").display().to_string();
    let o = run(&[
        "import-peft",
        &missing,
        "-b",
        &digits("mlp.gguf"),
        "-o",
        &missing,
    ]);
    assert_bad(&o, &missing, "no such folder");
    let o = run(&[
        "import-peft",
        dir.to_str().unwrap(),
        "-b",
        &digits("mlp.gguf"),
        "-o",
        &missing,
    ]);
    assert_bad(&o, "adapter_config.json", "no such file");
    let src = data.join("boft").display().to_string();
    let o = run(&[
        "import-peft",
        &src,
        "-b",
        &digits("cnn.gguf"),
        "-o",
        &missing,
    ]);
    assert_bad(&o, "adapter_model.safetensors", "cnn.gguf");
    let lora = dir.join("lora");
    std::fs::create_dir_all(&lora).unwrap();
    std::fs::write(lora.join("adapter_config.json"), r#"{"peft_type": "LORA"}"#).unwrap();
    let o = run(&[
        "import-peft",
        lora.to_str().unwrap(),
        "-b",
        &digits("mlp.gguf"),
        "-o",
        &missing,
    ]);
    assert_bad(&o, "adapter_config.json", "LORA");
    let _ = std::fs::remove_dir_all(dir);
}

/// Truncated and bit-flipped files through `inspect`, `run` and `merge`: always a clean exit
/// (0 or 2 with one `riffle:` line), never a panic.
#[test]
fn hostile_files_never_panic() {
    let dir = scratch("hostile");
    let out = dir.join("out.gguf").display().to_string();
    let mut s: u32 = 12345;
    let mut rand = move || {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        s >> 8
    };
    for file in [
        "mlp.gguf",
        "cnn-parity.gguf",
        "mlp-inverted.gguf",
        "heldout-digits.gguf",
    ] {
        let bytes = std::fs::read(digits(file)).unwrap();
        let mut variants: Vec<Vec<u8>> = [
            1usize,
            4,
            8,
            23,
            24,
            60,
            200,
            700,
            bytes.len() / 2,
            bytes.len() - 1,
        ]
        .iter()
        .map(|&n| bytes[..n.min(bytes.len())].to_vec())
        .collect();
        for _ in 0..12 {
            let mut v = bytes.clone();
            // Flip a byte in the header and metadata, where the structure lives.
            let at = (rand() as usize) % v.len().min(1024);
            v[at] ^= 1 << (rand() % 8);
            variants.push(v);
        }
        for (i, v) in variants.iter().enumerate() {
            let path = dir.join(format!("{i}-{file}"));
            std::fs::write(&path, v).unwrap();
            let p = path.to_str().unwrap();
            for args in [
                vec!["inspect", p, "--verify"],
                vec!["run", "-m", p, "--stdin"],
                vec!["run", "-m", &digits("mlp.gguf"), "-a", p, "--stdin"],
                vec!["merge", "-m", &digits("mlp.gguf"), "-a", p, "-o", &out],
            ] {
                let o = run(&args);
                let code = o.status.code();
                assert!(
                    code == Some(0) || code == Some(2),
                    "{args:?}: {code:?}\n{}",
                    stderr(&o)
                );
                if code == Some(2) {
                    let err = stderr(&o);
                    assert!(err.starts_with("riffle: "), "{args:?}: {err}");
                    assert!(!err.contains("panicked"), "{args:?}: {err}");
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

// ---- issue 23: nothing lost, nothing hung ------------------------------------------------

/// Runs `riffle` with `args` and `stdin`, failing the test if it takes longer than
/// `secs` (a hang) instead of waiting forever.
fn run_within(args: &[&str], stdin: Stdio, secs: u64) -> Output {
    let child = riffle()
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Collect the output on a thread (a full pipe must not look like a hang).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("{args:?} hung for {secs} s");
        }
    }
}

fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("riffle-tmp"))
        .collect()
}

#[test]
fn merge_never_writes_over_an_input_and_writes_whole_files() {
    let dir = scratch("atomic");
    let base = dir.join("base.gguf");
    let adapter = dir.join("adapter.gguf");
    std::fs::copy(digits("mlp.gguf"), &base).unwrap();
    std::fs::copy(digits("mlp-rotated.gguf"), &adapter).unwrap();
    let (b, a) = (base.to_str().unwrap(), adapter.to_str().unwrap());
    let base_bytes = std::fs::read(&base).unwrap();
    let adapter_bytes = std::fs::read(&adapter).unwrap();
    // The output is an input: by name, through `..`, through a hard link or a symlink.
    let hard = dir.join("hard.gguf");
    std::fs::hard_link(&base, &hard).unwrap();
    let sym = dir.join("sym.gguf");
    std::os::unix::fs::symlink(&adapter, &sym).unwrap();
    let dotted = dir.join(".").join("base.gguf");
    for out in [
        b,
        a,
        hard.to_str().unwrap(),
        sym.to_str().unwrap(),
        dotted.to_str().unwrap(),
    ] {
        let o = run(&["merge", "-m", b, "-a", a, "-o", out]);
        assert_bad(&o, out, "same file as the input");
    }
    assert_eq!(std::fs::read(&base).unwrap(), base_bytes);
    assert_eq!(std::fs::read(&adapter).unwrap(), adapter_bytes);
    // Not a regular file: never renamed over.
    assert_bad(
        &run(&["merge", "-m", b, "-a", a, "-o", "/dev/null"]),
        "/dev/null",
        "not a regular file",
    );
    assert_bad(
        &run(&["merge", "-m", b, "-a", a, "-o", dir.to_str().unwrap()]),
        "atomic",
        "directory",
    );
    // A good file at the output survives a write that fails half way: a file-size limit
    // (SIGXFSZ ignored, so the write fails with EFBIG: exit 1, temporary removed) and the
    // same limit killing the process (the temporary may stay; the output never changes).
    let out = dir.join("out.gguf");
    std::fs::write(&out, b"a good file").unwrap();
    let o = out.to_str().unwrap();
    for trap in ["trap '' XFSZ;", ""] {
        let script = format!("{trap} ulimit -f 4; exec \"$0\" merge -m \"$1\" -a \"$2\" -o \"$3\"");
        let r = Command::new("sh")
            .args(["-c", &script, env!("CARGO_BIN_EXE_riffle"), b, a, o])
            .output()
            .unwrap();
        assert!(!r.status.success(), "{trap}: {}", stderr(&r));
        assert_eq!(std::fs::read(&out).unwrap(), b"a good file", "{trap}");
        if !trap.is_empty() {
            assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
            assert!(temporaries(&dir).is_empty(), "{:?}", temporaries(&dir));
        }
    }
    for t in temporaries(&dir) {
        std::fs::remove_file(dir.join(t)).unwrap();
    }
    ok(&run(&["merge", "-m", b, "-a", a, "-o", o]));
    assert!(Gguf::parse(&std::fs::read(&out).unwrap()).is_ok());
    assert!(temporaries(&dir).is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

/// A copy of `file` with `general.alignment = align` and every tensor moved to a
/// multiple of it (the stored model id is kept, so its adapters still bind).
fn realigned(file: &str, align: u32) -> Vec<u8> {
    use riffle_tests::gguf_edit::{GgufFile, Val};
    let mut g = GgufFile::parse(&std::fs::read(file).unwrap());
    let old = g.data.clone();
    let ranges: Vec<_> = (0..g.tensors.len()).map(|i| g.data_range(i)).collect();
    g.set("general.alignment", Val::u32(align));
    let mut data = Vec::new();
    for (t, r) in g.tensors.iter_mut().zip(ranges) {
        data.resize(data.len().next_multiple_of(align as usize), 0);
        t.offset = data.len() as u64;
        data.extend(&old[r]);
    }
    g.data = data;
    g.to_bytes()
}

#[test]
fn merge_keeps_the_alignment_and_verifies() {
    let dir = scratch("align");
    for arch in ["mlp", "cnn"] {
        for align in [1u32, 8, 16, 32, 64, 256] {
            let base = dir.join(format!("{arch}-{align}.gguf"));
            std::fs::write(&base, realigned(&digits(&format!("{arch}.gguf")), align)).unwrap();
            let out = dir.join(format!("{arch}-{align}-merged.gguf"));
            let b = base.to_str().unwrap();
            let o = out.to_str().unwrap();
            ok(&run(&[
                "merge",
                "-m",
                b,
                "-a",
                &digits(&format!("{arch}-parity.gguf")),
                "-o",
                o,
            ]));
            let bytes = std::fs::read(&out).unwrap();
            let g = Gguf::parse(&bytes).unwrap();
            assert_eq!(g.alignment(), align, "{arch} {align}");
            ok(&run(&["inspect", o, "--verify"]));
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn special_files_as_inputs_are_refused_without_hanging() {
    let dir = scratch("special");
    let fifo = dir.join("fifo.gguf");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let f = fifo.to_str().unwrap();
    let m = digits("mlp.gguf");
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (vec!["run", "-m", f, "--stdin"], f, "FIFO"),
        (vec!["run", "-m", &m, "--input", f], f, "FIFO"),
        (vec!["run", "-m", &m, "-a", f, "--stdin"], f, "FIFO"),
        (vec!["inspect", f], f, "FIFO"),
        (
            vec!["run", "-m", "/dev/zero", "--stdin"],
            "/dev/zero",
            "character device",
        ),
        (
            vec!["inspect", "/dev/zero"],
            "/dev/zero",
            "character device",
        ),
        (
            vec!["run", "-m", &m, "--input", "/dev/zero"],
            "/dev/zero",
            "character device",
        ),
    ];
    for (args, file, words) in cases {
        let o = run_within(&args, Stdio::null(), 20);
        assert_bad(&o, file, words);
        assert!(!stderr(&o).contains("empty"), "{}", stderr(&o));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn stdin_lines_are_capped_and_bad_lines_do_not_end_the_repl() {
    let (inputs, _) = heldout("digits");
    let m = digits("mlp.gguf");
    let a = digits("mlp-rotated.gguf");
    let mut input = vec![b'1'; 2 << 20];
    input.extend(b"\n\xff\xfe bad utf-8\n");
    input.extend(line_of(&inputs[0]).as_bytes());
    input.push(b'\n');
    let mut child = riffle()
        .args(["repl", "-m", &m, "-a", &a, "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("<stdin>:1: line is longer than"), "{err}");
    assert!(err.contains("<stdin>:2: line is not valid UTF-8"), "{err}");
    assert_eq!(
        json_lines(&stdout(&o)).len(),
        1,
        "the session went on: {err}"
    );
    // run --stdin on an endless line: exit 2 at the cap, not an abort or a hang.
    let zero = std::fs::File::open("/dev/zero").unwrap();
    let o = run_within(&["run", "-m", &m, "--stdin"], Stdio::from(zero), 20);
    assert_bad(&o, "<stdin>:1", "longer than");
}

#[test]
fn file_strings_are_escaped_on_the_terminal() {
    use riffle_tests::gguf_edit::{GgufFile, Val};
    let dir = scratch("escape");
    let mut g = GgufFile::parse(&std::fs::read(digits("mlp-rotated.gguf")).unwrap());
    g.set("adapter.task_name", Val::str("evil\u{1b}[2J\u{202e}\nname"));
    g.set("general.name", Val::str("\u{1b}]0;title\u{7}"));
    let path = dir.join("evil.gguf");
    std::fs::write(&path, g.to_bytes()).unwrap();
    let p = path.to_str().unwrap();
    let mut g2 = g.clone();
    g2.set("general.architecture", Val::str("mlp\u{1b}[31m"));
    let path2 = dir.join("evil-arch.gguf");
    std::fs::write(&path2, g2.to_bytes()).unwrap();
    let (inputs, _) = heldout("digits");
    for o in [
        run(&["inspect", p]),
        run_stdin(
            &["run", "-m", &digits("mlp.gguf"), "-a", p, "--stdin"],
            &line_of(&inputs[0]),
        ),
        run_stdin(
            &[
                "run",
                "-m",
                &digits("mlp.gguf"),
                "-a",
                p,
                "--stdin",
                "--json",
            ],
            &line_of(&inputs[0]),
        ),
        run(&[
            "run",
            "-m",
            &digits("mlp.gguf"),
            "-a",
            path2.to_str().unwrap(),
            "--stdin",
        ]),
    ] {
        for s in [stdout(&o), stderr(&o)] {
            assert!(
                !s.chars()
                    .any(|c| c.is_control() && c != '\n' || c == '\u{202e}'),
                "raw control characters: {s:?}"
            );
        }
        assert!(
            stdout(&o).contains("\\u001b") || stderr(&o).contains("\\u001b"),
            "the string is shown, escaped: {}{}",
            stdout(&o),
            stderr(&o)
        );
    }
    // A task named `base` would shadow `--task base`.
    g.set("adapter.task_name", Val::str("base"));
    std::fs::write(&path, g.to_bytes()).unwrap();
    let o = run(&[
        "run",
        "-m",
        &digits("mlp.gguf"),
        "-a",
        p,
        "--task",
        "base",
        "--stdin",
    ]);
    assert_bad(&o, p, "reserved");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_missing_key_is_named() {
    use riffle_tests::gguf_edit::GgufFile;
    let dir = scratch("missing-key");
    let (inputs, _) = heldout("digits");
    let mut a = GgufFile::parse(&std::fs::read(digits("mlp-rotated.gguf")).unwrap());
    a.remove("adapter.task_name");
    let adapter = dir.join("no-task.gguf");
    std::fs::write(&adapter, a.to_bytes()).unwrap();
    let p = adapter.to_str().unwrap();
    let o = run_stdin(
        &["run", "-m", &digits("mlp.gguf"), "-a", p, "--stdin"],
        &line_of(&inputs[0]),
    );
    assert_bad(
        &o,
        p,
        "metadata key adapter.task_name is missing (malformed adapter)",
    );
    let mut m = GgufFile::parse(&std::fs::read(digits("mlp.gguf")).unwrap());
    m.remove("mlp.layer_count");
    let model = dir.join("no-layers.gguf");
    std::fs::write(&model, m.to_bytes()).unwrap();
    let p = model.to_str().unwrap();
    let o = run_stdin(&["run", "-m", p, "--stdin"], &line_of(&inputs[0]));
    assert_bad(
        &o,
        p,
        "metadata key mlp.layer_count is missing (malformed `mlp` model)",
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sizes_from_files_are_checked_before_allocating() {
    use riffle_tests::gguf_edit::GgufFile;
    let Some((model, _)) = minilm() else { return };
    // A 200,000-token context: a position table that claims 200,000 rows of Q8_0 over
    // the file's own bytes (the arena grows with the square of the context: 160 GB).
    let mut g = GgufFile::parse(&std::fs::read(&model).unwrap());
    let i = g.tensor_index("position_embd.weight");
    let hidden = g.tensors[i].dims[0];
    g.tensors[i].dims = vec![hidden, 200_000];
    g.tensors[i].ggml_type = 8;
    g.tensors[i].offset = 0;
    g.set(
        "bert.context_length",
        riffle_tests::gguf_edit::Val::u32(200_000),
    );
    let dir = scratch("sizes");
    let path = dir.join("long-context.gguf");
    std::fs::write(&path, g.to_bytes()).unwrap();
    let p = path.to_str().unwrap();
    let o = run_within(&["run", "-m", p, "--text", "hello"], Stdio::null(), 60);
    assert_bad(&o, p, "more than riffle's limit");
    let _ = std::fs::remove_dir_all(dir);
}

/// A PEFT folder with one F32 tensor `name` of `shape` holding `values`.
fn peft_dir(dir: &Path, peft_type: &str, name: &str, shape: &[u64], values: usize) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("adapter_config.json"),
        format!("{{\"peft_type\": \"{peft_type}\", \"peft_version\": \"0.17.0\"}}"),
    )
    .unwrap();
    let header = serde_json::json!({
        name: {"dtype": "F32", "shape": shape, "data_offsets": [0, 4 * values]}
    })
    .to_string();
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend(header.as_bytes());
    st.extend(std::iter::repeat_n(0u8, 4 * values));
    std::fs::write(dir.join("adapter_model.safetensors"), st).unwrap();
}

#[test]
fn import_peft_bad_shapes_and_factor_counts_exit_2() {
    let dir = scratch("peft-bad");
    let out = dir.join("out.gguf");
    let o = out.to_str().unwrap();
    let m = digits("mlp.gguf");
    let name = "base_model.model.layers.0.boft_R";
    // Butterfly factor counts of 0 and 17 (riffle reads 1 to 16), b = 4 over 64 inputs.
    for (factors, words) in [(0u64, "0 butterfly factors"), (17, "17 butterfly factors")] {
        let d = dir.join(format!("m{factors}"));
        peft_dir(
            &d,
            "BOFT",
            name,
            &[factors, 16, 4, 4],
            (factors * 256) as usize,
        );
        let r = run(&["import-peft", d.to_str().unwrap(), "--base", &m, "-o", o]);
        assert_bad(&r, "adapter_model.safetensors", words);
    }
    // A shape whose product wraps to 0 in 64 bits, with no data.
    let d = dir.join("wrap");
    peft_dir(&d, "BOFT", name, &[1 << 62, 16, 4, 4], 0);
    let r = run(&["import-peft", d.to_str().unwrap(), "--base", &m, "-o", o]);
    assert_bad(&r, "adapter_model.safetensors", "too large");
    // A block size past riffle's 64.
    let d = dir.join("block");
    peft_dir(
        &d,
        "OFT",
        "base_model.model.layers.0.oft_r",
        &[1, 128, 128],
        128 * 128,
    );
    let r = run(&["import-peft", d.to_str().unwrap(), "--base", &m, "-o", o]);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    // The output may not be an input.
    let d = dir.join("m0");
    let st = d.join("adapter_model.safetensors");
    let r = run(&[
        "import-peft",
        d.to_str().unwrap(),
        "--base",
        &m,
        "-o",
        st.to_str().unwrap(),
    ]);
    assert_bad(&r, "adapter_model.safetensors", "same file");
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(dir);
}

/// A GGUF file from key/value pairs (already encoded: type code and payload) and
/// tensor infos `(name, ggml dims, type, offset)` over `data`, alignment 32.
fn gguf_file(
    kvs: &[(&str, u32, Vec<u8>)],
    infos: &[(String, Vec<u64>, u32, u64)],
    data: &[u8],
) -> Vec<u8> {
    fn s(out: &mut Vec<u8>, b: &[u8]) {
        out.extend((b.len() as u64).to_le_bytes());
        out.extend(b);
    }
    let mut f = b"GGUF".to_vec();
    f.extend(3u32.to_le_bytes());
    f.extend((infos.len() as u64).to_le_bytes());
    f.extend((kvs.len() as u64).to_le_bytes());
    for (k, ty, payload) in kvs {
        s(&mut f, k.as_bytes());
        f.extend(ty.to_le_bytes());
        f.extend(payload);
    }
    for (name, dims, ty, off) in infos {
        s(&mut f, name.as_bytes());
        f.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            f.extend(d.to_le_bytes());
        }
        f.extend(ty.to_le_bytes());
        f.extend(off.to_le_bytes());
    }
    f.resize(f.len().next_multiple_of(32), 0);
    f.extend(data);
    f
}

fn gguf_str(v: &str) -> Vec<u8> {
    let mut p = (v.len() as u64).to_le_bytes().to_vec();
    p.extend(v.as_bytes());
    p
}

#[test]
fn shared_tensor_data_cannot_inflate_the_merged_copy() {
    // 16 Q8_0 layers of 1024 x 1024 over one 1.1 MB data range: the merged f32 copy
    // would be 67 MB, 60 times the file (issue 23: 17.8 MB took 1.07 GB).
    let w = 1024u64;
    let kvs = vec![
        ("general.architecture", 8, gguf_str("mlp")),
        ("general.type", 8, gguf_str("model")),
        ("mlp.layer_count", 4, 16u32.to_le_bytes().to_vec()),
        ("mlp.activation", 8, gguf_str("relu")),
        ("mlp.input_length", 4, (w as u32).to_le_bytes().to_vec()),
    ];
    let infos: Vec<_> = (0..16)
        .map(|i| (format!("layers.{i}.weight"), vec![w, w], 8u32, 0u64))
        .collect();
    let mut data = Vec::new();
    for _ in 0..w * w / 32 {
        data.extend(0x2c00u16.to_le_bytes()); // f16 0.0625
        data.extend([1u8; 32]);
    }
    let dir = scratch("shared");
    let path = dir.join("shared.gguf");
    std::fs::write(&path, gguf_file(&kvs, &infos, &data)).unwrap();
    let p = path.to_str().unwrap();
    ok(&run(&["inspect", p]));
    let o = run_within(&["run", "-m", p, "--merge", "--stdin"], Stdio::null(), 30);
    assert_bad(&o, p, "times the file");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn large_metadata_inspects_in_near_linear_time() {
    // A 2,000,000-string array and 8,000 keys after it (issue 23: 45 s to inspect).
    let mut big = 8u32.to_le_bytes().to_vec();
    big.extend(2_000_000u64.to_le_bytes());
    for _ in 0..2_000_000 {
        big.extend(gguf_str("s"));
    }
    let mut kvs = vec![("big".to_string(), 9u32, big)];
    for i in 0..8000u32 {
        kvs.push((format!("k.{i}"), 4, i.to_le_bytes().to_vec()));
    }
    let kvs: Vec<(&str, u32, Vec<u8>)> = kvs
        .iter()
        .map(|(k, t, p)| (k.as_str(), *t, p.clone()))
        .collect();
    let dir = scratch("bigmeta");
    let path = dir.join("big.gguf");
    std::fs::write(&path, gguf_file(&kvs, &[], &[])).unwrap();
    let p = path.to_str().unwrap();
    let start = std::time::Instant::now();
    for args in [vec!["inspect", p], vec!["inspect", p, "--json"]] {
        let o = run_within(&args, Stdio::null(), 60);
        assert!(matches!(o.status.code(), Some(0 | 2)), "{}", stderr(&o));
    }
    // Milliseconds here; 10 s leaves a slow, shared machine room.
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `RIFFLE_KERNELS` caps the SIMD kernels: the digits models with an unmerged adapter give
/// the same outputs (within 1e-5) on every family, `bench` names the family that ran, and a
/// name that is no family is a bad input (exit 2, one line).
#[test]
fn kernel_families_agree_and_a_bad_family_exits_2() {
    let inputs = heldout("inverted").0[..20].to_vec();
    let text: String = inputs.iter().map(|x| line_of(x) + "\n").collect();
    let model = digits("mlp.gguf");
    let adapter = digits("mlp-inverted.gguf");
    let args = [
        "run",
        "--model",
        &model,
        "--adapter",
        &adapter,
        "--stdin",
        "--json",
    ];
    let with = |family: &str, args: &[&str], input: Option<&str>| {
        let mut c = riffle();
        c.env("RIFFLE_KERNELS", family).args(args);
        if let Some(input) = input {
            c.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = c.spawn().unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        } else {
            c.output().unwrap()
        }
    };
    let outputs = |family: &str| output_values(&ok(&with(family, &args, Some(&text))));

    let wide = outputs("avx512");
    for family in ["avx2", "neon", "portable"] {
        for (a, b) in wide.iter().zip(outputs(family)) {
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() <= 1e-5 * (1.0 + x.abs()),
                    "{family}: {x} vs {y}"
                );
            }
        }
    }
    let bench = [
        "bench",
        "--model",
        &model,
        "--adapter",
        &adapter,
        "--json",
        "--budget",
        "0.02",
    ];
    let o = json_lines(&ok(&with("portable", &bench, None)));
    assert_eq!(o[0]["kernels"], "portable");
    let o = with("sse9", &bench, None);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("RIFFLE_KERNELS") && err.contains("sse9"),
        "{err}"
    );
}
