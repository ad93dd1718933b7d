//! `riffle demo`: the embedded digits bases and their task adapters, swapped at runtime
//! unmerged and merged, scored on the held-out sets, with timings and one sample digit
//! drawn in the terminal.

use std::time::Instant;

use riffle_core::runtime::Model;

use crate::embedded::{self, Family};
use crate::engine::{argmax, Runner, Stack};
use crate::fail::{runtime, Result};
use crate::files::{load_dataset, Dataset};
use crate::show::{self, Align};

/// Unmerged activations timed per adapter (O(1) each: cheap).
const ACTIVATIONS: usize = 2_000;
/// Untimed inferences before each timed pass.
const WARMUP: usize = 32;
/// Rounds of merged in-place swaps through every adapter.
const SWAP_ROUNDS: usize = 30;

/// One line of a family's table.
struct TaskRow {
    task: String,
    method: String,
    base_correct: usize,
    adapted_correct: Option<usize>,
    n: usize,
    unmerged_s: f64,
    merged_s: f64,
    activate_s: Option<f64>,
    swap_s: Option<f64>,
    arena: usize,
    adapter_bytes: Option<usize>,
}

/// Everything measured on one base.
struct FamilyReport {
    file: &'static str,
    summary: String,
    params: usize,
    bytes: usize,
    rows: Vec<TaskRow>,
    /// Merged predictions equal to unmerged, out of all adapted inputs.
    agree: (usize, usize),
    max_dlogit: f32,
    /// Per task: predictions of the base and of the task's adapter (unmerged).
    base_pred: Vec<Vec<usize>>,
    adapted_pred: Vec<Option<Vec<usize>>>,
}

/// Is `pred` right on example `i` of `set`? The bare base predicts digits; on the parity
/// set its digit is taken mod 2.
fn correct(set: &Dataset, i: usize, pred: usize, base_on_parity: bool) -> bool {
    let truth = set.targets[i] as usize;
    if base_on_parity {
        pred % 2 == truth
    } else {
        pred == truth
    }
}

/// "64→64→64→10", or "conv 1→8→16 (3x3) · dense 64→32→10".
fn summary(m: &Model<'_>) -> String {
    let mut conv: Vec<String> = Vec::new();
    let mut dense: Vec<String> = Vec::new();
    let shape_of = |s: &riffle_core::runtime::Slot<'_>| {
        m.gguf()
            .tensor(s.weight.index() as usize)
            .map(|t| t.shape().to_vec())
            .unwrap_or_default()
    };
    for s in m.slots() {
        let shape = shape_of(s);
        if shape.len() == 4 {
            if conv.is_empty() {
                conv.push(shape[1].to_string());
            }
            conv.push(format!("{}", shape[0]));
        } else {
            if dense.is_empty() {
                dense.push(s.cols.to_string());
            }
            dense.push(s.rows.to_string());
        }
    }
    let k = m
        .slots()
        .iter()
        .map(shape_of)
        .find(|s| s.len() == 4)
        .map(|s| s[2]);
    match k {
        Some(k) => format!(
            "conv {} ({k}x{k}, relu, 2x2 max-pool) · dense {}",
            conv.join("→"),
            dense.join("→")
        ),
        None => dense.join("→"),
    }
}

fn time_run(r: &mut Runner<'_, '_>, x: &[f32]) -> Result<(usize, Vec<f32>, f64)> {
    let t = Instant::now();
    let out = r.run_vector(x).map_err(|e| runtime("demo", e))?;
    let dt = t.elapsed().as_secs_f64();
    let out = out.to_vec();
    Ok((argmax(&out), out, dt))
}

/// Untimed runs first, so that timings see warm caches.
fn warm(r: &mut Runner<'_, '_>, set: &Dataset) -> Result<()> {
    for i in 0..WARMUP.min(set.len()) {
        r.run_vector(set.input(i)).map_err(|e| runtime("demo", e))?;
    }
    Ok(())
}

fn evaluate(fam: &Family, sets: &[Dataset], bar: &mut show::LazyBar) -> Result<FamilyReport> {
    let adapters: Vec<(&str, &[u8])> = fam.adapters.iter().map(|(n, b)| (*n, *b)).collect();
    let mut stack = Stack::load(fam.base, &adapters)?;
    let params = stack
        .model
        .gguf()
        .tensors()
        .map(|t| t.element_count())
        .sum();
    let summary = summary(&stack.model);
    let mut r = stack.runner()?;
    let model = r.model();
    let last = model.slots().len() - 1;
    let mut rows = Vec::new();
    let mut base_pred = Vec::new();
    let mut adapted_pred = Vec::new();
    let mut adapted_logits: Vec<Option<Vec<Vec<f32>>>> = Vec::new();

    // Unmerged: the bare base, then each task's adapter activated in O(1).
    for set in sets {
        bar.inc();
        let on_parity = set.task == "parity";
        r.activate(None)?;
        let (mut bc, mut bt, mut bp) = (0, Vec::new(), Vec::new());
        warm(&mut r, set)?;
        for i in 0..set.len() {
            let (p, _, dt) = time_run(&mut r, set.input(i))?;
            bc += usize::from(correct(set, i, p, on_parity));
            bt.push(dt);
            bp.push(p);
        }
        base_pred.push(bp);
        let handle = r.session().find(&set.task);
        let Some(h) = handle else {
            adapted_pred.push(None);
            adapted_logits.push(None);
            rows.push(TaskRow {
                task: set.task.clone(),
                method: "— (base only)".into(),
                base_correct: bc,
                adapted_correct: None,
                n: set.len(),
                unmerged_s: show::median(&mut bt),
                merged_s: f64::NAN,
                activate_s: None,
                swap_s: None,
                arena: 4 * model.arena_len(0, 0),
                adapter_bytes: None,
            });
            continue;
        };
        let mut act = Vec::with_capacity(ACTIVATIONS);
        for _ in 0..ACTIVATIONS {
            r.activate(None)?;
            let t = Instant::now();
            r.activate(Some(h))?;
            act.push(t.elapsed().as_secs_f64());
        }
        let (mut ac, mut at, mut ap, mut al) = (0, Vec::new(), Vec::new(), Vec::new());
        warm(&mut r, set)?;
        for i in 0..set.len() {
            let (p, out, dt) = time_run(&mut r, set.input(i))?;
            ac += usize::from(correct(set, i, p, false));
            at.push(dt);
            ap.push(p);
            al.push(out);
        }
        let p = &r.session().adapters()[h];
        let head = p.head(last);
        rows.push(TaskRow {
            task: set.task.clone(),
            method: format!(
                "{} b{} m{}{}",
                p.method().name(),
                p.block_size(),
                p.factors(),
                if head.is_some() { " +head" } else { "" }
            ),
            base_correct: bc,
            adapted_correct: Some(ac),
            n: set.len(),
            unmerged_s: show::median(&mut at),
            merged_s: f64::NAN,
            activate_s: Some(show::median(&mut act)),
            swap_s: None,
            arena: 4 * model.arena_len(0, head.map_or(0, |h| h.rows)),
            adapter_bytes: Some(p.file_bytes()),
        });
        adapted_pred.push(Some(ap));
        adapted_logits.push(Some(al));
    }

    bar.inc();
    // Merged: the same adapters swapped in place, exactly, in one weight buffer.
    r.activate(None)?;
    r.set_merged(true)?;
    let (mut agree, mut total, mut max_d) = (0usize, 0usize, 0.0f32);
    for (k, set) in sets.iter().enumerate() {
        let h = r.session().find(&set.task);
        r.activate(h)?;
        let mut mt = Vec::new();
        warm(&mut r, set)?;
        for i in 0..set.len() {
            let (p, out, dt) = time_run(&mut r, set.input(i))?;
            mt.push(dt);
            if let (Some(ap), Some(al)) = (&adapted_pred[k], &adapted_logits[k]) {
                total += 1;
                agree += usize::from(ap[i] == p);
                for (a, b) in al[i].iter().zip(&out) {
                    max_d = max_d.max((a - b).abs());
                }
            }
        }
        rows[k].merged_s = show::median(&mut mt);
    }
    // Swap timings: rounds through every adapter, each an in-place swap from the previous.
    let handles: Vec<(usize, usize)> = sets
        .iter()
        .enumerate()
        .filter_map(|(k, s)| r.session().find(&s.task).map(|h| (k, h)))
        .collect();
    let mut swaps: Vec<Vec<f64>> = vec![Vec::new(); sets.len()];
    for _ in 0..SWAP_ROUNDS {
        for &(k, h) in &handles {
            let t = Instant::now();
            r.activate(Some(h))?;
            swaps[k].push(t.elapsed().as_secs_f64());
        }
        r.remerge()?;
    }
    for (k, s) in swaps.iter_mut().enumerate() {
        if !s.is_empty() {
            rows[k].swap_s = Some(show::median(s));
        }
    }
    r.set_merged(false)?;
    Ok(FamilyReport {
        file: fam.base.0,
        summary,
        params,
        bytes: fam.base.1.len(),
        rows,
        agree: (agree, total),
        max_dlogit: max_d,
        base_pred,
        adapted_pred,
    })
}

fn print_family(f: &FamilyReport) {
    let name = f.file.rsplit('/').next().unwrap_or(f.file);
    show::line(format!(
        "{name} · {} · {} parameters · {}",
        f.summary,
        f.params,
        show::bytes(f.bytes)
    ));
    let dash = || "—".to_string();
    let rows: Vec<Vec<String>> = f
        .rows
        .iter()
        .map(|t| {
            vec![
                t.task.clone(),
                t.method.clone(),
                show::percent(t.base_correct, t.n),
                t.adapted_correct
                    .map_or_else(dash, |c| show::percent(c, t.n)),
                show::seconds(t.unmerged_s),
                if t.merged_s.is_nan() {
                    dash()
                } else {
                    show::seconds(t.merged_s)
                },
                t.activate_s.map_or_else(dash, show::seconds),
                t.swap_s.map_or_else(dash, show::seconds),
                show::bytes(t.arena),
                t.adapter_bytes.map_or_else(dash, show::bytes),
            ]
        })
        .collect();
    for l in show::table(
        &[
            "task", "adapter", "base", "adapted", "unmerged", "merged", "activate", "swap",
            "arena", "size",
        ],
        &[
            Align::L,
            Align::L,
            Align::R,
            Align::R,
            Align::R,
            Align::R,
            Align::R,
            Align::R,
            Align::R,
            Align::R,
        ],
        &rows,
    ) {
        show::line(format!("  {l}"));
    }
    show::line(format!(
        "  merged mode: same predictions on {}/{} adapted inputs (max |Δlogit| {:.1e} vs unmerged)",
        f.agree.0, f.agree.1, f.max_dlogit
    ));
}

const SHADES: [char; 5] = [' ', '░', '▒', '▓', '█'];

/// Lines of an 8x8 image, two characters per pixel.
fn draw(x: &[f32]) -> Vec<String> {
    x.chunks(8)
        .map(|row| {
            row.iter()
                .map(|v| {
                    let c = SHADES[(v.clamp(0.0, 1.0) * 4.0).round() as usize];
                    format!("{c}{c}")
                })
                .collect()
        })
        .collect()
}

/// The first example that every adapter gets right while the bare base misses both the
/// rotated and the inverted version (the point of the adapters); else the first example
/// that every adapter gets right; else the first.
fn pick_sample(sets: &[Dataset], f: &[FamilyReport]) -> usize {
    let n = sets.iter().map(Dataset::len).min().unwrap_or(0);
    let good = |i: usize| {
        f.iter().all(|r| {
            sets.iter().enumerate().all(|(k, s)| {
                let base_ok = k != 0 || correct(s, i, r.base_pred[k][i], false);
                let ad_ok = r.adapted_pred[k]
                    .as_ref()
                    .is_none_or(|p| correct(s, i, p[i], false));
                base_ok && ad_ok
            })
        })
    };
    let striking = |i: usize| {
        f.iter().all(|r| {
            [1usize, 2].iter().all(|&k| {
                sets.get(k)
                    .is_some_and(|s| !correct(s, i, r.base_pred[k][i], false))
            })
        })
    };
    // Digits that look alike after a quarter turn (0, 1, 8) make a dull example.
    let asymmetric = |i: usize| {
        sets.first()
            .is_some_and(|s| ![0, 1, 8].contains(&s.targets[i]))
    };
    (0..n)
        .find(|&i| good(i) && striking(i) && asymmetric(i))
        .or_else(|| (0..n).find(|&i| good(i) && striking(i)))
        .or_else(|| (0..n).find(|&i| good(i)))
        .unwrap_or(0)
}

fn label(set: &Dataset, id: usize) -> String {
    set.labels
        .get(id)
        .cloned()
        .unwrap_or_else(|| id.to_string())
}

fn print_sample(sets: &[Dataset], f: &[FamilyReport]) {
    let i = pick_sample(sets, f);
    // Panels: every task but parity (which reuses the original image).
    let panels: Vec<usize> = (0..sets.len())
        .filter(|&k| sets[k].task != "parity")
        .collect();
    const W: usize = 20;
    let pad = |s: String| {
        let n = s.chars().count();
        format!("{s}{}", " ".repeat(W.saturating_sub(n)))
    };
    show::line(format!(
        "one held-out example (#{i}) as each task sees it, with each model's prediction:"
    ));
    let mut lines: Vec<String> = vec![String::new(); 8 + 2 + 2 * f.len()];
    for &k in &panels {
        let set = &sets[k];
        lines[0].push_str(&pad(format!(
            "{} (label {})",
            set.task,
            label(set, set.targets[i] as usize)
        )));
        for (row, l) in draw(set.input(i)).into_iter().enumerate() {
            lines[1 + row].push_str(&pad(l));
        }
        lines[9].push_str(&pad(String::new()));
        for (j, r) in f.iter().enumerate() {
            let tag = r
                .file
                .rsplit('/')
                .next()
                .unwrap_or("")
                .trim_end_matches(".gguf");
            let bp = r.base_pred[k][i];
            let mark = |ok: bool| if ok { "✓" } else { "✗" };
            lines[10 + 2 * j].push_str(&pad(format!(
                "{tag} base {} {}",
                label(&sets[0], bp),
                mark(correct(set, i, bp, false))
            )));
            lines[11 + 2 * j].push_str(&pad(match &r.adapted_pred[k] {
                Some(p) => format!(
                    "{tag} +{} {} {}",
                    set.task,
                    label(set, p[i]),
                    mark(correct(set, i, p[i], false))
                ),
                None => String::new(),
            }));
        }
    }
    for l in lines {
        show::line(format!("  {l}").trim_end());
    }
    if let Some(k) = sets.iter().position(|s| s.task == "parity") {
        let set = &sets[k];
        let preds: Vec<String> = f
            .iter()
            .filter_map(|r| {
                let p = r.adapted_pred[k].as_ref()?[i];
                let tag = r.file.rsplit('/').next()?.trim_end_matches(".gguf");
                Some(format!("{tag} +parity says {}", label(set, p)))
            })
            .collect();
        show::line(format!(
            "  parity (label {}): {} (the parity adapters bring a 2-way head)",
            label(set, set.targets[i] as usize),
            preds.join(", ")
        ));
    }
}

/// `riffle demo`.
pub fn run() -> Result<()> {
    let t0 = Instant::now();
    let sets: Vec<Dataset> = embedded::heldout()
        .iter()
        .map(|(n, b)| load_dataset(n, b))
        .collect::<Result<_>>()?;
    let families = [embedded::mlp(), embedded::cnn()];
    let n_adapters: usize = families.iter().map(|f| f.adapters.len()).sum();
    show::line("riffle demo · tiny orthogonal adapters swapped at runtime over one frozen base");
    show::line(format!(
        "embedded: {} bases, {n_adapters} adapters (GSOFT, Double GSOFT, OFT, BOFT), {} held-out sets of {} 8x8 digits · no files, no network",
        families.len(),
        sets.len(),
        sets.first().map_or(0, Dataset::len)
    ));
    show::line("");
    let mut reports = Vec::new();
    for fam in &families {
        let name = fam.base.0.rsplit('/').next().unwrap_or("");
        let mut bar = show::LazyBar::new(sets.len() as u64 + 1, &format!("demo: {name}"));
        let rep = evaluate(fam, &sets, &mut bar);
        bar.finish();
        let rep = rep?;
        print_family(&rep);
        show::line("");
        reports.push(rep);
    }
    show::line("base: the frozen base on the task (parity: its digit mod 2) · adapted: base + task adapter, unmerged");
    show::line("unmerged / merged: median latency per inference · activate: unmerged switch (O(1), nothing copied)");
    show::line("swap: exact in-place swap of the merged weights from the previous adapter · arena: working memory per inference");
    show::line("");
    print_sample(&sets, &reports);
    show::line("");
    show::line(format!(
        "done in {} · try: riffle inspect models/digits/mlp-rotated.gguf · riffle repl --model models/digits/mlp.gguf --adapter models/digits/mlp-parity.gguf",
        show::duration(t0.elapsed())
    ));
    Ok(())
}
