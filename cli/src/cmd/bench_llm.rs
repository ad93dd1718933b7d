//! `riffle bench` on a causal model: prompt (prefill) and decode tokens per second for
//! the bare base and, with an adapter, the adapter applied unmerged; medians over
//! repeated runs, like `llama-bench -p P -n N`. With an adapter each round keeps one
//! decoder state for the base and one for the adapter and interleaves their token steps
//! (base first on even steps of even rounds, the adapter first otherwise), so a machine
//! whose speed drifts moves both alike within a few milliseconds; the decode time ratio is
//! the median of the rounds' own ratios. With `--sequences N` it also decodes N sequences
//! one after another and N together (`Model::decode_steps`, what `riffle serve` does with
//! its running requests), the order of the two swapping every round.

use std::path::{Path, PathBuf};
use std::time::Instant;

use riffle_core::runtime::{DecodeStep, DecoderState, Model, Prepared, Session, MAX_STEPS};
use serde_json::json;

use crate::cmd::run::{open, pairs};
use crate::fail::{bad, runtime, Result};
use crate::files::load_model;
use crate::llm::{CacheType, KvBuffer};
use crate::residents::Residents;

/// Runs of each configuration (the median is reported).
const REPEATS: usize = 5;

/// Tokens/s of one configuration.
struct Speed {
    prompt: f64,
    decode: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A synthetic prompt of `n` ids spread over the vocabulary (ids past 1000 avoid the
/// special tokens at its start).
fn prompt_ids(vocab: usize, n: usize) -> Vec<u32> {
    let mut x: u32 = 12_345;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            1_000 + (x >> 8) % (vocab.max(2_000) as u32 - 1_000)
        })
        .collect()
}

/// Buffers for timing a decoder: its cache, working memory and logits.
struct Bench {
    kv: KvBuffer,
    context: usize,
    arena: Vec<f32>,
    logits: Vec<f32>,
}

impl Bench {
    fn new(
        session: &Session<'_, '_, '_>,
        context: usize,
        prompt: usize,
        cache: CacheType,
        name: &str,
    ) -> Result<Self> {
        let model = session.model();
        Ok(Bench {
            kv: KvBuffer::new(
                model,
                context,
                cache,
                &format!("{name}: the key/value cache"),
            )?,
            context,
            arena: crate::limits::zeroed::<f32>(
                model.step_arena_len(prompt),
                &format!("{name}: the working memory"),
            )?,
            logits: crate::limits::zeroed::<f32>(
                model.output_len(),
                &format!("{name}: the logits"),
            )?,
        })
    }

    /// The prompt read into `state` with the session's active adapter, in the working
    /// memory `arena` and `logits`: its tokens per second.
    fn prefill(
        state: &mut DecoderState<'_>,
        (arena, logits): (&mut [f32], &mut [f32]),
        session: &Session<'_, '_, '_>,
        prompt: &[u32],
        name: &str,
    ) -> Result<f64> {
        let t = Instant::now();
        session
            .step(state, prompt, logits, arena)
            .map_err(|e| runtime(name, e))?;
        Ok(prompt.len() as f64 / t.elapsed().as_secs_f64())
    }

    /// One round of the base (`benches[0]`, no adapter) against the adapter
    /// (`benches[1]`, the session's first): each prefilled, then their `gen` token steps
    /// interleaved one by one, the order swapping every step (and starting with the other
    /// one in odd rounds). Returns (prompt, decode) tokens per second of each.
    fn interleaved(
        benches: &mut [Bench; 2],
        session: &mut Session<'_, '_, '_>,
        prompt: &[u32],
        gen: usize,
        round: usize,
        name: &str,
    ) -> Result<[(f64, f64); 2]> {
        let model = session.model();
        let [b0, b1] = benches;
        let contexts = [b0.context, b1.context];
        let mut states = Vec::with_capacity(2);
        let mut parts = [
            (&mut b0.arena, &mut b0.logits),
            (&mut b1.arena, &mut b1.logits),
        ];
        let mut prompt_speed = [0.0; 2];
        for (i, b) in [(0, &mut b0.kv), (1, &mut b1.kv)] {
            session
                .activate((i == 1).then_some(0), &mut [])
                .map_err(|e| runtime(name, e))?;
            let mut state = b.state(model, contexts[i]).map_err(|e| runtime(name, e))?;
            let (arena, logits) = &mut parts[i];
            prompt_speed[i] = Self::prefill(&mut state, (arena, logits), session, prompt, name)?;
            states.push(state);
        }
        let mut spent = [0.0f64; 2];
        for step in 0..gen {
            for k in 0..2 {
                let i = (k + step + round) % 2;
                session
                    .activate((i == 1).then_some(0), &mut [])
                    .map_err(|e| runtime(name, e))?;
                let (arena, logits) = &mut parts[i];
                let next = riffle_core::sample::argmax(logits);
                let t = Instant::now();
                session
                    .step(&mut states[i], &[next], logits, arena)
                    .map_err(|e| runtime(name, e))?;
                spent[i] += t.elapsed().as_secs_f64();
            }
        }
        Ok([
            (prompt_speed[0], gen as f64 / spent[0]),
            (prompt_speed[1], gen as f64 / spent[1]),
        ])
    }

    /// One run with the session's active adapter: (prompt, decode) tokens per second.
    fn run(
        &mut self,
        session: &Session<'_, '_, '_>,
        prompt: &[u32],
        gen: usize,
        name: &str,
    ) -> Result<(f64, f64)> {
        let mut state = self
            .kv
            .state(session.model(), self.context)
            .map_err(|e| runtime(name, e))?;
        let p = Self::prefill(
            &mut state,
            (&mut self.arena, &mut self.logits),
            session,
            prompt,
            name,
        )?;
        let t = Instant::now();
        for _ in 0..gen {
            let next = riffle_core::sample::argmax(&self.logits);
            session
                .step(&mut state, &[next], &mut self.logits, &mut self.arena)
                .map_err(|e| runtime(name, e))?;
        }
        Ok((p, gen as f64 / t.elapsed().as_secs_f64()))
    }
}

/// Medians of the runs' speeds.
fn speed(runs: &[(f64, f64)]) -> Speed {
    Speed {
        prompt: median(runs.iter().map(|r| r.0).collect()),
        decode: median(runs.iter().map(|r| r.1).collect()),
    }
}

/// Runs `riffle bench`: tokens per second on a causal model, else the encoder and
/// vector-model bench of `cmd::bench` (which needs `--adapter`).
///
/// # Errors
/// Bad inputs for files and sizes; runtime failures.
pub fn run(
    model_path: &Path,
    adapter: Option<&PathBuf>,
    [prompt_tokens, gen_tokens, sequences]: [usize; 3],
    seq: &[usize],
    budget: f64,
    cache: CacheType,
    json: bool,
) -> Result<()> {
    let adapters: Vec<PathBuf> = adapter.cloned().into_iter().collect();
    let (m, a) = open(model_path, &adapters)?;
    let model = load_model(m.name(), m.bytes())?;
    if !model.is_causal() {
        return match adapter {
            Some(ad) => crate::cmd::bench::run(model_path, ad, seq, budget, json),
            None => Err(bad("bench", "give --adapter FILE (the adapter to measure)")),
        };
    }
    if prompt_tokens == 0 || gen_tokens == 0 {
        return Err(bad("--prompt-tokens/--gen-tokens", "must be at least 1"));
    }
    if !(1..=MAX_STEPS).contains(&sequences) {
        return Err(bad(
            "--sequences",
            format!("must be 1 to {MAX_STEPS} (sequences decoded together)"),
        ));
    }
    let mut residents = Residents::load(&model, m.name(), &pairs(&a), None)?;
    let mut session = residents.session(&model)?;
    let tasks: Vec<&str> = session.adapters().iter().map(|p| p.task_name()).collect();
    if prompt_tokens + gen_tokens > model.max_tokens() {
        return Err(bad(
            "--prompt-tokens/--gen-tokens",
            format!(
                "{} tokens do not fit the context of {}",
                prompt_tokens + gen_tokens,
                model.max_tokens()
            ),
        ));
    }
    let prompt = prompt_ids(model.output_len(), prompt_tokens);
    let new_bench = |session: &Session<'_, '_, '_>| {
        Bench::new(
            session,
            prompt_tokens + gen_tokens,
            prompt_tokens,
            cache,
            m.name(),
        )
    };
    // The base alone, or one state per configuration (a state belongs to the adapter it
    // was computed under).
    let (mut alone, mut pair) = if tasks.is_empty() {
        (Some(new_bench(&session)?), None)
    } else {
        (None, Some([new_bench(&session)?, new_bench(&session)?]))
    };
    let mut activate_ns = None;
    if !tasks.is_empty() {
        let t = Instant::now();
        let reps = 1000;
        for _ in 0..reps {
            session
                .activate(Some(0), &mut [])
                .map_err(|e| runtime(m.name(), e))?;
            session
                .activate(None, &mut [])
                .map_err(|e| runtime(m.name(), e))?;
        }
        activate_ns = Some(t.elapsed().as_secs_f64() * 1e9 / (2 * reps) as f64);
    }
    let (mut base_runs, mut adapter_runs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..REPEATS {
        let Some(benches) = pair.as_mut() else {
            if let Some(bench) = alone.as_mut() {
                base_runs.push(bench.run(&session, &prompt, gen_tokens, m.name())?);
            }
            continue;
        };
        let [b, a] =
            Bench::interleaved(benches, &mut session, &prompt, gen_tokens, round, m.name())?;
        base_runs.push(b);
        adapter_runs.push(a);
        ratios.push(b.1 / a.1);
    }
    let together = if sequences > 1 {
        let adapter = session.adapters().first().cloned();
        let mut many = Many::new(
            &model,
            sequences,
            prompt_tokens + gen_tokens,
            cache,
            m.name(),
        )?;
        let mut rounds = Vec::with_capacity(REPEATS);
        for round in 0..REPEATS {
            rounds.push(many.round(
                &model,
                adapter.as_ref(),
                &prompt,
                gen_tokens,
                round,
                m.name(),
            )?);
        }
        let one_by_one = median(rounds.iter().map(|r| r[0]).collect());
        let both = median(rounds.iter().map(|r| r[1]).collect());
        let ratio = median(rounds.iter().map(|r| r[1] / r[0]).collect());
        Some([one_by_one, both, ratio])
    } else {
        None
    };
    let base = speed(&base_runs);
    let unmerged = (!adapter_runs.is_empty()).then(|| speed(&adapter_runs));
    let decode_ratio = (!ratios.is_empty()).then(|| median(ratios));
    let speed =
        |s: &Speed| json!({"prompt_tokens_per_s": s.prompt, "decode_tokens_per_s": s.decode});
    if json {
        let mut o = json!({
            "model": m.name(),
            "prompt_tokens": prompt_tokens,
            "gen_tokens": gen_tokens,
            "repeats": REPEATS,
            "threads": crate::threads::executor().map_or(1, riffle_core::par::Executor::threads),
            "kernels": riffle_core::math::dense_kernel_name(),
            "cache_type": riffle_core::runtime::KvType::from(cache).name(),
            "base": speed(&base),
        });
        if let Some(u) = &unmerged {
            o["unmerged"] = speed(u);
            o["adapter"] = json!(tasks[0]);
            o["activate_ns"] = json!(activate_ns);
            o["unmerged_decode_time_ratio"] = json!(decode_ratio);
        }
        if let Some([one, both, ratio]) = together {
            o["sequences"] = json!({
                "n": sequences,
                "with_adapter": (sequences / 2) * usize::from(!tasks.is_empty()),
                "one_after_another_decode_tokens_per_s": one,
                "together_decode_tokens_per_s": both,
                "together_speedup": ratio,
            });
        }
        println!("{o}");
    } else {
        println!(
            "{} · prompt {prompt_tokens} tokens, decode {gen_tokens} tokens · medians of {REPEATS} runs · {} kernels · {} cache",
            m.name(),
            riffle_core::math::dense_kernel_name(),
            riffle_core::runtime::KvType::from(cache).name()
        );
        println!("  {:<10} {:>12} {:>12}", "", "prompt t/s", "decode t/s");
        println!(
            "  {:<10} {:>12.1} {:>12.1}",
            "base", base.prompt, base.decode
        );
        if let Some(u) = &unmerged {
            println!("  {:<10} {:>12.1} {:>12.1}", "unmerged", u.prompt, u.decode);
            println!(
                "  decode time per token: unmerged {:.3}x the base's (median of the rounds' ratios); activating the adapter: {:.0} ns",
                decode_ratio.unwrap_or(base.decode / u.decode),
                activate_ns.unwrap_or(0.0)
            );
        }
        if let Some([one, both, ratio]) = together {
            let mix = if tasks.is_empty() {
                String::new()
            } else {
                format!(", {} of them under {}", sequences / 2, tasks[0])
            };
            println!(
                "  {sequences} sequences{mix}: decode {one:.1} tokens/s one after another, {both:.1} together ({ratio:.2}x, median of the rounds' ratios)"
            );
        }
    }
    Ok(())
}

/// `n` decoder states for `--sequences`, with the working memory of both ways of decoding
/// them.
struct Many {
    kv: Vec<KvBuffer>,
    context: usize,
    arena: Vec<f32>,
    steps_arena: Vec<f32>,
    logits: Vec<f32>,
}

impl Many {
    fn new(
        model: &Model<'_>,
        n: usize,
        context: usize,
        cache: CacheType,
        name: &str,
    ) -> Result<Self> {
        let kv = (0..n)
            .map(|i| {
                KvBuffer::new(
                    model,
                    context,
                    cache,
                    &format!("{name}: the key/value cache of sequence {}", i + 1),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Many {
            kv,
            context,
            arena: crate::limits::zeroed::<f32>(
                model.step_arena_len(context),
                &format!("{name}: the working memory"),
            )?,
            steps_arena: crate::limits::zeroed::<f32>(
                model.decode_steps_arena_len(n),
                &format!("{name}: the working memory of {n} sequences"),
            )?,
            logits: crate::limits::zeroed::<f32>(
                n * model.output_len(),
                &format!("{name}: the logits"),
            )?,
        })
    }

    /// One round: the sequences (odd ones under `adapter`) prefilled with `prompt`, then
    /// `gen` tokens each decoded one sequence after another and, from fresh states, all
    /// together (which goes first alternating by round). Returns the two decode speeds in
    /// tokens per second of all sequences.
    fn round(
        &mut self,
        model: &Model<'_>,
        adapter: Option<&Prepared<'_, '_>>,
        prompt: &[u32],
        gen: usize,
        round: usize,
        name: &str,
    ) -> Result<[f64; 2]> {
        let n = self.kv.len();
        let vocab = model.output_len();
        let adapters: Vec<_> = (0..n).map(|b| adapter.filter(|_| b % 2 == 1)).collect();
        let mut speeds = [0.0; 2];
        for k in 0..2 {
            let together = (k + round) % 2 == 1;
            let context = self.context;
            let mut states = self
                .kv
                .iter_mut()
                .map(|b| b.state(model, context))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| runtime(name, e))?;
            for ((state, a), logits) in states
                .iter_mut()
                .zip(&adapters)
                .zip(self.logits.chunks_exact_mut(vocab))
            {
                crate::threads::step(model, *a, state, prompt, logits, &mut self.arena)
                    .map_err(|e| runtime(name, e))?;
            }
            let t = Instant::now();
            for _ in 0..gen {
                let next: Vec<u32> = self
                    .logits
                    .chunks_exact(vocab)
                    .map(riffle_core::sample::argmax)
                    .collect();
                if together {
                    let mut steps: Vec<DecodeStep<'_, '_, '_, '_>> = states
                        .iter_mut()
                        .zip(&adapters)
                        .zip(&next)
                        .map(|((state, a), &token)| DecodeStep {
                            adapter: *a,
                            state,
                            token,
                        })
                        .collect();
                    crate::threads::decode_steps(
                        model,
                        &mut steps,
                        &mut self.logits,
                        &mut self.steps_arena,
                    )
                    .map_err(|e| runtime(name, e))?;
                } else {
                    for (((state, a), &token), logits) in states
                        .iter_mut()
                        .zip(&adapters)
                        .zip(&next)
                        .zip(self.logits.chunks_exact_mut(vocab))
                    {
                        crate::threads::step(model, *a, state, &[token], logits, &mut self.arena)
                            .map_err(|e| runtime(name, e))?;
                    }
                }
            }
            speeds[usize::from(together)] = (n * gen) as f64 / t.elapsed().as_secs_f64();
        }
        Ok(speeds)
    }
}
