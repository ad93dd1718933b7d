//! `riffle bench`: base, unmerged and merged latency, unmerged activation time, merged
//! in-place swap time and arena bytes; medians over repeated runs.

use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use riffle_core::gguf::Gguf;
use serde_json::json;

use crate::cmd::run::{open, pairs};
use crate::engine::{takes_text, Runner, Stack};
use crate::fail::{bad, runtime, Result};
use crate::show::{self, Align};

/// Fewest samples per measurement.
const MIN_SAMPLES: usize = 5;
/// Most samples per measurement.
const MAX_SAMPLES: usize = 200_000;
/// Merged swaps between two re-merges (keeps the rounding drift of many swaps away).
const REMERGE_EVERY: usize = 64;

/// Samples of `f` (each returns the seconds it measured) for about `budget` seconds.
fn measure(budget: Duration, mut f: impl FnMut() -> Result<f64>) -> Result<Vec<f64>> {
    let start = Instant::now();
    let mut v = Vec::new();
    while v.len() < MIN_SAMPLES || (start.elapsed() < budget && v.len() < MAX_SAMPLES) {
        v.push(f()?);
    }
    Ok(v)
}

/// Token ids of a synthetic text input of `seq` tokens: `[CLS]`, word pieces, `[SEP]`.
fn synthetic_tokens(g: &Gguf<'_>, seq: usize) -> Vec<u32> {
    let cls = g.get_u32("tokenizer.ggml.bos_token_id").unwrap_or(101);
    let sep = g
        .get_u32("tokenizer.ggml.seperator_token_id")
        .or_else(|_| g.get_u32("tokenizer.ggml.eos_token_id"))
        .unwrap_or(102);
    let vocab = g
        .get_array("tokenizer.ggml.tokens")
        .map_or(30_522, |a| a.len() as u32)
        .max(2_000);
    let mut ids = vec![cls];
    let mut x: u32 = 12_345;
    while ids.len() + 1 < seq {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        ids.push(1_000 + (x >> 8) % (vocab - 1_000));
    }
    ids.push(sep);
    ids.truncate(seq.max(2));
    ids
}

/// One input of a benchmark.
enum BenchInput {
    Vector(Vec<f32>),
    Tokens(Vec<u32>),
}

fn infer(r: &mut Runner<'_, '_>, x: &BenchInput) -> Result<f64> {
    let t = Instant::now();
    let out = match x {
        BenchInput::Vector(v) => r.run_vector(v).map(|o| o.len()),
        BenchInput::Tokens(ids) => r.run_tokens(ids).map(|o| o.len()),
    }
    .map_err(|e| runtime(r.model_name().to_string(), e))?;
    let dt = t.elapsed().as_secs_f64();
    std::hint::black_box(out);
    Ok(dt)
}

/// Results for one sequence length.
struct Row {
    seq: usize,
    base: f64,
    unmerged: f64,
    /// Median of the unmerged / base time ratios of interleaved pairs.
    unmerged_over_base: f64,
    merged: f64,
    activate: f64,
    swap: f64,
    arena: usize,
    runs: usize,
}

/// `riffle bench`.
pub fn run(model: &Path, adapter: &Path, seq: &[usize], budget: f64, json_out: bool) -> Result<()> {
    if !(budget.is_finite() && budget > 0.0 && budget <= 60.0) {
        return Err(bad("--budget", "must be between 0 and 60 seconds"));
    }
    let budget = Duration::from_secs_f64(budget);
    let (model_map, adapter_maps) = open(model, std::slice::from_ref(&adapter.to_path_buf()))?;
    let mut stack = Stack::load((model_map.name(), model_map.bytes()), &pairs(&adapter_maps))?;
    let mut r = stack.runner()?;
    let m = r.model();
    let text = takes_text(m);
    let seqs: Vec<usize> = if text {
        let ctx = m
            .gguf()
            .get_u32(riffle_core::gguf::KEY_BERT_CONTEXT_LENGTH)
            .map_or(512, |c| c as usize);
        let s = if seq.is_empty() {
            vec![16, 64, 128]
        } else {
            seq.to_vec()
        };
        if let Some(bad_len) = s.iter().find(|&&l| l < 2 || l > ctx) {
            return Err(bad(
                "--seq",
                format!(
                    "{bad_len} tokens is outside 2..={ctx} for {}",
                    model_map.name()
                ),
            ));
        }
        s
    } else {
        if !seq.is_empty() {
            eprintln!(
                "riffle: note: {} takes vectors of {} numbers; --seq is ignored",
                model_map.name(),
                m.input_len()
            );
        }
        vec![m.input_len()]
    };
    let task = r.tasks()[0].to_string();
    let method = r.session().adapters()[0].method().name();
    let bar = ProgressBar::new((seqs.len() * 5) as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} bench [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut rows = Vec::new();
    for &s in &seqs {
        let x = if text {
            BenchInput::Tokens(synthetic_tokens(m.gguf(), s))
        } else {
            // A fixed pseudo-random input in [0, 1).
            let mut v = Vec::with_capacity(s);
            let mut state: u32 = 0x9e37_79b9;
            for _ in 0..s {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                v.push((state >> 8) as f32 / (1u32 << 24) as f32);
            }
            BenchInput::Vector(v)
        };
        let mut runs = 0;
        bar.set_message(format!("seq {s}: base and unmerged"));
        r.set_merged(false)?;
        // Base and unmerged forwards alternate one by one (which goes first swapping every
        // pair), so a machine whose speed drifts moves both alike; twice the budget, one
        // for each.
        let (mut base, mut unmerged, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let mut pair = 0usize;
        measure(2 * budget, || {
            let mut t = [0.0f64; 2];
            for k in 0..2 {
                let with_adapter = (k + pair) % 2 == 1;
                r.activate(with_adapter.then_some(0))?;
                t[usize::from(with_adapter)] = infer(&mut r, &x)?;
            }
            pair += 1;
            base.push(t[0]);
            unmerged.push(t[1]);
            ratios.push(t[1] / t[0]);
            Ok(0.0)
        })?;
        runs += base.len() + unmerged.len();
        r.activate(Some(0))?;
        bar.inc(2);
        bar.set_message(format!("seq {s}: activate"));
        let mut activate = measure(budget, || {
            r.activate(None)?;
            let t = Instant::now();
            r.activate(Some(0))?;
            Ok(t.elapsed().as_secs_f64())
        })?;
        bar.inc(1);
        bar.set_message(format!("seq {s}: merged"));
        r.set_merged(true)?;
        let mut merged = measure(budget, || infer(&mut r, &x))?;
        runs += merged.len();
        bar.inc(1);
        bar.set_message(format!("seq {s}: swap"));
        let mut swaps = 0usize;
        let mut swap = measure(budget, || {
            let t = Instant::now();
            r.activate(None)?;
            let a = t.elapsed().as_secs_f64();
            let t = Instant::now();
            r.activate(Some(0))?;
            let b = t.elapsed().as_secs_f64();
            swaps += 2;
            if swaps.is_multiple_of(REMERGE_EVERY) {
                r.remerge()?;
            }
            Ok(0.5 * (a + b))
        })?;
        r.remerge()?;
        r.set_merged(false)?;
        bar.inc(1);
        rows.push(Row {
            seq: s,
            base: show::median(&mut base),
            unmerged: show::median(&mut unmerged),
            unmerged_over_base: show::median(&mut ratios),
            merged: show::median(&mut merged),
            activate: show::median(&mut activate),
            swap: show::median(&mut swap),
            arena: 4 * r.session().arena_len(if text { s } else { 0 }),
            runs,
        });
    }
    bar.finish_and_clear();
    if json_out {
        for row in &rows {
            show::line(
                json!({
                    "model": model_map.name(),
                    "adapter": adapter_maps[0].name(),
                    "task": task,
                    "method": method,
                    "seq": row.seq,
                    "base_ms": show::round(row.base * 1e3, 6),
                    "unmerged_ms": show::round(row.unmerged * 1e3, 6),
                    "unmerged_over_base": show::round(row.unmerged_over_base, 6),
                    "merged_ms": show::round(row.merged * 1e3, 6),
                    "activate_us": show::round(row.activate * 1e6, 4),
                    "swap_merged_ms": show::round(row.swap * 1e3, 6),
                    "arena_bytes": row.arena,
                    "runs": row.runs,
                    "kernels": riffle_core::math::dense_kernel_name(),
                })
                .to_string(),
            );
        }
        return Ok(());
    }
    show::line(format!(
        "bench: {} + {} ({method}, task `{task}`), medians over {:.2} s per measurement, {} kernels",
        model_map.name(),
        adapter_maps[0].name(),
        budget.as_secs_f64(),
        riffle_core::math::dense_kernel_name()
    ));
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                if text {
                    format!("{} tokens", row.seq)
                } else {
                    format!("{} values", row.seq)
                },
                show::seconds(row.base),
                show::seconds(row.unmerged),
                show::seconds(row.merged),
                show::seconds(row.activate),
                show::seconds(row.swap),
                show::bytes(row.arena),
            ]
        })
        .collect();
    for l in show::table(
        &[
            "input",
            "base",
            "unmerged",
            "merged",
            "activate (unmerged)",
            "swap (merged, in place)",
            "arena",
        ],
        &[
            Align::L,
            Align::R,
            Align::R,
            Align::R,
            Align::R,
            Align::R,
            Align::R,
        ],
        &table,
    ) {
        show::line(format!("  {l}"));
    }
    Ok(())
}
