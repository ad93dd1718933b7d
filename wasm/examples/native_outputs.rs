//! Native outputs of the browser `Engine`, for comparing the wasm build against on inputs
//! that cannot be committed (the MiniLM files are made at set-up): the page test runs
//!
//! ```text
//! cargo run --release -p riffle-wasm --example native_outputs -- \
//!     MODEL.gguf [ADAPTER.gguf ...] --text "a sentence" [--text ...]
//! ```
//!
//! and checks that the page's worker gives the same outputs (within 1e-5) for the bare
//! base and every adapter, unmerged and merged. Prints one JSON document on stdout.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use riffle_wasm::engine::Engine;
use serde_json::json;

fn main() -> ExitCode {
    match run() {
        Ok(doc) => {
            println!("{doc}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("native_outputs: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<serde_json::Value, String> {
    let mut files = Vec::new();
    let mut texts = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--text" {
            texts.push(args.next().ok_or("--text needs a sentence")?);
        } else {
            files.push(a);
        }
    }
    let (model_path, adapters) = files
        .split_first()
        .ok_or("usage: native_outputs MODEL.gguf [ADAPTER.gguf ...] --text S [--text S ...]")?;
    let read = |p: &str| std::fs::read(p).map_err(|e| format!("{p}: {e}"));
    let mut engine = Engine::new(read(model_path)?, Some(model_path)).map_err(|e| e.to_string())?;
    for a in adapters {
        engine
            .add_adapter(read(a)?, Some(a))
            .map_err(|e| e.to_string())?;
    }
    let handles: Vec<Option<usize>> = std::iter::once(None)
        .chain((0..adapters.len()).map(Some))
        .collect();
    let mut cases = Vec::new();
    for merged in [false, true] {
        engine.set_merged(merged).map_err(|e| e.to_string())?;
        for &h in &handles {
            engine.use_adapter(h).map_err(|e| e.to_string())?;
            for t in &texts {
                let r = engine.run_text(t).map_err(|e| e.to_string())?;
                cases.push(json!({
                    "task": r.task,
                    "merged": merged,
                    "text": t,
                    "label": r.label,
                    "tokens": r.tokens,
                    "output": r.output,
                }));
            }
        }
    }
    Ok(json!({ "model": model_path, "cases": cases }))
}
