//! What every integration test of the `riffle` binary needs (`mod support;` in each
//! test file): the binary, the repository, running it with or without input, its output
//! as text, and the model files that are built or cached at set-up rather than committed.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `riffle` binary under test.
pub fn riffle() -> Command {
    Command::new(env!("CARGO_BIN_EXE_riffle"))
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `riffle ARGS` with no standard input.
pub fn run(args: &[&str]) -> Output {
    riffle().args(args).stdin(Stdio::null()).output().unwrap()
}

/// Runs `riffle ARGS` with `input` on its standard input.
pub fn run_stdin(args: &[&str], input: &str) -> Output {
    let mut child = riffle()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A run that refuses its arguments exits before reading its input: the pipe may close
    // under the write (EPIPE), which is not the test's failure; its exit says what happened.
    if let Err(e) = child.stdin.take().unwrap().write_all(input.as_bytes()) {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "writing stdin: {e}"
        );
    }
    child.wait_with_output().unwrap()
}

/// Bytes the binary wrote, as UTF-8 text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

/// What the run wrote on standard output.
pub fn stdout(o: &Output) -> String {
    text(&o.stdout)
}

/// What the run wrote on standard error.
pub fn stderr(o: &Output) -> String {
    text(&o.stderr)
}

/// Where SmolLM2's files are cached: `$RIFFLE_SMOLLM2_DIR`, or `~/.cache/riffle/smollm2`
/// (`scripts/smollm2` makes them).
pub fn smollm2_dir() -> PathBuf {
    std::env::var_os("RIFFLE_SMOLLM2_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/riffle/smollm2")
        })
}

/// The SmolLM2 file of weight type `kind`, or `None` when `RIFFLE_SKIP_LLAMA` switches
/// the llama tests off; a missing file fails the test (`scripts/test` makes it).
pub fn smollm2(kind: &str) -> Option<String> {
    if std::env::var_os("RIFFLE_SKIP_LLAMA").is_some() {
        return None;
    }
    let p = smollm2_dir().join(format!("SmolLM2-135M-Instruct.{kind}.gguf"));
    assert!(
        p.is_file(),
        "{}: missing; scripts/test (scripts/smollm2) puts it there",
        p.display()
    );
    Some(p.display().to_string())
}

/// `path` if it exists; otherwise `None` after a note that the checks needing it are
/// skipped (`what`).
pub fn optional(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        Some(path)
    } else {
        eprintln!("note: {} missing; {what} skipped", path.display());
        None
    }
}
