//! Runtime conformance on the training path's llama fixture (tests/data/llama/, written by
//! `python -m riffle_train llm fixture`, `train/riffle_train/llm_fixture.py`): a tiny random
//! llama (2 blocks, hidden 64, 4 heads / 2 KV heads, F32, tied head) and one random adapter
//! of each method (GSOFT, Double GSOFT, OFT, BOFT; F16 parameters, scales) on all seven
//! linears of both blocks, with PyTorch's float64 logits of every position of two prompts,
//! without and with each adapter.
//!
//! riffle-core must give those logits for the whole prompt at once, for the prompt read one
//! token at a time through the KV cache (every position), with each adapter unmerged and
//! merged into an F32 copy of the weights. Unlike `llama_runtime.rs` this needs no model
//! download: it always runs.

use riffle_core::runtime::{Adapter, DecoderState, Input, KvType, Model, Session};
use riffle_core::text::bpe::BpeTokenizer;
use riffle_tests::{data_path, json_ids, json_rows, read_repo_file};
use serde_json::Value;

/// Largest `|runtime - float64|` over every logit the tests compare. Measured on this
/// fixture (x86-64 with AVX-512, `cargo test -p riffle-tests --test llama_fixture --
/// --nocapture` prints it): base 7.6e-6 unmerged and 1.07e-5 merged, adapters unmerged
/// 8.4e-6 to 9.5e-6, merged 7.4e-6 to 1.15e-5 (worst of the whole prompt at once, prefill,
/// every position's logits from two steps, and token by token), on logits of magnitude up
/// to 29. 1e-4 leaves a factor of 8; every adapter moves the logits by at least 12.7 (OFT)
/// at some position, five orders of magnitude above it, so an adapter applied wrongly, on
/// the wrong side or not at all fails.
const TOL: f32 = 1e-4;
/// Least largest change an adapter must make to the base's logits for the test to mean
/// anything (the fixture's smallest is 12.76, OFT on the chat prompt).
const MOVES_AT_LEAST: f64 = 5.0;

fn fixture() -> Value {
    serde_json::from_slice(&read_repo_file("tests/data/llama/tiny-llama.json")).unwrap()
}

fn worst(got: &[f32], want: &[f64]) -> f32 {
    assert_eq!(got.len(), want.len(), "vocabulary size");
    got.iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - w).abs() as f32)
        .fold(0.0, f32::max)
}

/// The bytes of the fixture's adapter files, in the order of `specs`.
fn adapter_files(specs: &[Value]) -> Vec<Vec<u8>> {
    specs
        .iter()
        .map(|a| read_repo_file(&format!("tests/data/llama/{}", a["file"].as_str().unwrap())))
        .collect()
}

/// The adapters parsed from `files`, with a workspace for each on `model`.
fn parsed_adapters<'f>(
    files: &'f [Vec<u8>],
    model: &Model<'_>,
) -> (Vec<Adapter<'f>>, Vec<Vec<f32>>) {
    let adapters: Vec<Adapter<'f>> = files
        .iter()
        .map(|b| Adapter::from_bytes(b).unwrap())
        .collect();
    let workspaces = adapters
        .iter()
        .map(|a| vec![0.0f32; a.workspace_len(model).unwrap()])
        .collect();
    (adapters, workspaces)
}

/// Largest error over (a) the whole prompt read at once by `run`, (b) the whole prompt read
/// by one `step` (prefill), (c) every position's logits from `step_all` over the prompt's
/// two halves, (d) the prompt read one token per `step`, every position compared. Panics
/// past `TOL` with where it happened.
fn check_prompt(
    session: &Session<'_, '_, '_>,
    tokens: &[u32],
    want: &[Vec<f64>],
    what: &str,
) -> f32 {
    let model = session.model();
    let vocab = model.output_len();
    let mut out = vec![0.0f32; vocab];
    let mut arena = vec![0.0f32; session.arena_len(tokens.len())];
    let n = session
        .run(Input::Tokens(tokens), &mut out, &mut arena)
        .unwrap();
    assert_eq!(n, vocab);
    let last = want.last().unwrap();
    let mut w = worst(&out, last);
    assert!(w <= TOL, "{what}: run, last position off by {w}");

    let context = tokens.len();
    let mut kv = vec![0.0f32; model.state_len(context)];
    let mut step_arena = vec![0.0f32; model.step_arena_len(context)];
    let mut state = DecoderState::new(&mut kv, model.state_len(context), context).unwrap();
    session
        .step(&mut state, tokens, &mut out, &mut step_arena)
        .unwrap();
    let e = worst(&out, last);
    assert!(e <= TOL, "{what}: prefill step off by {e}");
    w = w.max(e);

    // Every position's logits from two steps (the second reads past the first's cache).
    let mut every = vec![0.0f32; tokens.len() * vocab];
    let mut state = DecoderState::new(&mut kv, model.state_len(context), context).unwrap();
    let (head, tail) = tokens.split_at(tokens.len() / 2);
    let mut at = 0;
    for part in [head, tail].into_iter().filter(|p| !p.is_empty()) {
        let n = session
            .step_all(&mut state, part, &mut every[at * vocab..], &mut step_arena)
            .unwrap();
        assert_eq!(n, part.len() * vocab);
        at += part.len();
    }
    for (t, (got, row)) in every.chunks_exact(vocab).zip(want).enumerate() {
        let e = worst(got, row);
        assert!(e <= TOL, "{what}: every position, position {t} off by {e}");
        w = w.max(e);
    }

    let mut state = DecoderState::new(&mut kv, model.state_len(context), context).unwrap();
    for (t, (&id, row)) in tokens.iter().zip(want).enumerate() {
        session
            .step(&mut state, &[id], &mut out, &mut step_arena)
            .unwrap();
        let e = worst(&out, row);
        assert!(e <= TOL, "{what}: token-by-token, position {t} off by {e}");
        w = w.max(e);
    }
    assert_eq!(state.len(), context);
    w
}

#[test]
fn tokens_of_the_fixture_prompts_equal_the_trainers() {
    let f = fixture();
    let bytes = read_repo_file("tests/data/llama/tiny-llama-f32.gguf");
    let model = Model::from_bytes(&bytes).unwrap();
    let mut idx = vec![0u32; BpeTokenizer::index_len(model.gguf()).unwrap()];
    let tok = BpeTokenizer::from_gguf(model.gguf(), &mut idx).unwrap();
    for p in f["prompts"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        let mut out = vec![0u32; text.len() + 2];
        let n = tok.encode(text, &mut out).unwrap();
        assert_eq!(out[..n], json_ids(&p["tokens"])[..], "{}", p["name"]);
    }
}

#[test]
fn logits_of_base_and_every_adapter_unmerged_and_merged_equal_float64() {
    let f = fixture();
    let bytes = read_repo_file(&format!("tests/data/llama/{}", f["base"].as_str().unwrap()));
    let model = Model::from_bytes(&bytes).unwrap();
    assert_eq!(model.model_id(), f["base_model_id"].as_str().unwrap());
    assert_eq!(model.output_len(), f["vocab"].as_u64().unwrap() as usize);
    let cfg = model.llama_config().unwrap();
    assert_eq!(
        (cfg.blocks, cfg.hidden, cfg.heads, cfg.kv_heads),
        (2, 64, 4, 2)
    );

    let prompts: Vec<Vec<u32>> = f["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| json_ids(&p["tokens"]))
        .collect();
    let base_logits: Vec<Vec<Vec<f64>>> = f["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(json_rows)
        .collect();
    let specs = f["adapters"].as_array().unwrap();
    let methods: Vec<&str> = specs
        .iter()
        .map(|a| a["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["gsoft", "double_gsoft", "oft", "boft"]);
    let files = adapter_files(specs);
    let (adapters, mut workspaces) = parsed_adapters(&files, &model);
    let adapter_logits: Vec<Vec<Vec<Vec<f64>>>> = specs
        .iter()
        .map(|a| {
            a["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(json_rows)
                .collect()
        })
        .collect();

    // The fixture means something only if each adapter moves the logits far past TOL.
    for (m, per_prompt) in methods.iter().zip(&adapter_logits) {
        for (k, (a, b)) in per_prompt.iter().zip(&base_logits).enumerate() {
            let moved = a
                .iter()
                .flatten()
                .zip(b.iter().flatten())
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(
                moved >= MOVES_AT_LEAST,
                "{m} prompt {k}: moves logits by {moved}"
            );
        }
    }

    let mut merged_w = vec![0.0f32; model.merged_len()];
    let mut session = Session::new(&model);
    let mut scratch = vec![0.0f32; session.swap_scratch_len()];
    let handles: Vec<_> = adapters
        .iter()
        .zip(workspaces.iter_mut())
        .map(|(a, ws)| session.add_adapter(a.prepare(&model, ws).unwrap()).unwrap())
        .collect();

    // Each adapter (and the bare base) activated in turn, unmerged; then the same merged:
    // swapped in place in one F32 copy of the weights, each in turn, then back to the base.
    let unmerged: Vec<Option<usize>> = std::iter::once(None)
        .chain((0..adapters.len()).map(Some))
        .collect();
    let merged: Vec<Option<usize>> = (0..adapters.len())
        .map(Some)
        .chain(std::iter::once(None))
        .collect();
    let mut report = Vec::new();
    let mut check = |session: &mut Session, scratch: &mut [f32], order: &[Option<usize>], how| {
        for &adapter in order {
            session
                .activate(adapter.map(|i| handles[i]), scratch)
                .unwrap();
            let name = adapter.map_or("base", |i| methods[i]);
            let want = adapter.map_or(&base_logits, |i| &adapter_logits[i]);
            let mut w = 0.0f32;
            for (k, p) in prompts.iter().enumerate() {
                w = w.max(check_prompt(
                    session,
                    p,
                    &want[k],
                    &format!("{name} {how}, prompt {k}"),
                ));
            }
            report.push(format!("{name} {how} {w:.2e}"));
        }
    };
    check(&mut session, &mut scratch, &unmerged, "unmerged");
    session.activate(None, &mut scratch).unwrap();
    session.enable_merged(&mut merged_w, &mut scratch).unwrap();
    check(&mut session, &mut scratch, &merged, "merged");
    eprintln!("worst |runtime - float64| per mode: {}", report.join(", "));
}

/// Largest `|runtime - float64|` with keys and values kept as IEEE halves
/// ([`DecoderState::new_f16`]), over the base and every adapter unmerged, prefill and token
/// by token. Each cached value is rounded by at most 2^-11 of itself; measured on this
/// fixture (x86-64 with AVX-512, `--nocapture` prints it): 3.9e-3 on logits of magnitude up
/// to 29. The bound leaves a factor of 5, and stays far below what an adapter moves
/// (12.7 at least).
const TOL_F16: f32 = 2e-2;

#[test]
fn a_half_precision_cache_holds_the_rounded_keys_and_stays_near_the_float64_logits() {
    let f = fixture();
    let bytes = read_repo_file("tests/data/llama/tiny-llama-f32.gguf");
    let model = Model::from_bytes(&bytes).unwrap();
    let vocab = model.output_len();
    let specs = f["adapters"].as_array().unwrap();
    let files = adapter_files(specs);
    let (adapters, mut workspaces) = parsed_adapters(&files, &model);
    let mut session = Session::new(&model);
    let handles: Vec<_> = adapters
        .iter()
        .zip(workspaces.iter_mut())
        .map(|(a, ws)| session.add_adapter(a.prepare(&model, ws).unwrap()).unwrap())
        .collect();
    let cfg = model.llama_config().unwrap();
    let kvw = cfg.kv_heads * cfg.head_dim;
    let mut worst_seen = 0.0f32;
    for (k, p) in f["prompts"].as_array().unwrap().iter().enumerate() {
        let tokens = json_ids(&p["tokens"]);
        let context = tokens.len();
        let need = model.state_len(context);
        let mut step_arena = vec![0.0f32; model.step_arena_len(context)];
        let mut out = vec![0.0f32; vocab];
        for which in std::iter::once(None).chain((0..adapters.len()).map(Some)) {
            session
                .activate(which.map(|i| handles[i]), &mut [])
                .unwrap();
            let want = match which {
                None => json_rows(&f["logits"][k]),
                Some(i) => json_rows(&specs[i]["logits"][k]),
            };
            let name = which.map_or("base", |i| specs[i]["method"].as_str().unwrap());
            // The whole prompt in one step, in an f32 cache and in a half cache.
            let mut kv32 = vec![0.0f32; need];
            let mut state = DecoderState::new(&mut kv32, need, context).unwrap();
            session
                .step(&mut state, &tokens, &mut out, &mut step_arena)
                .unwrap();
            let mut kv16 = vec![0u16; need];
            let mut state = DecoderState::new_f16(&mut kv16, need, context).unwrap();
            assert_eq!(state.kv_type(), KvType::F16);
            session
                .step(&mut state, &tokens, &mut out, &mut step_arena)
                .unwrap();
            let e = worst(&out, want.last().unwrap());
            assert!(e <= TOL_F16, "{name}, prompt {k}: prefill off by {e}");
            worst_seen = worst_seen.max(e);
            // The first block's keys and values do not depend on the cache: the half cache
            // holds exactly the f32 cache's values rounded to halves.
            let first = 2 * context * kvw;
            for (i, (h, x)) in kv16[..first].iter().zip(&kv32[..first]).enumerate() {
                assert_eq!(*h, half::f16::from_f32(*x).to_bits(), "{name}: value {i}");
            }
            assert!(kv16[first..].iter().any(|&h| h != 0));
            // Token by token through the half cache, every position compared.
            let mut state = DecoderState::new_f16(&mut kv16, need, context).unwrap();
            for (t, (&id, row)) in tokens.iter().zip(&want).enumerate() {
                session
                    .step(&mut state, &[id], &mut out, &mut step_arena)
                    .unwrap();
                let e = worst(&out, row);
                assert!(e <= TOL_F16, "{name}, prompt {k}: position {t} off by {e}");
                worst_seen = worst_seen.max(e);
            }
        }
    }
    eprintln!("worst |runtime - float64| with a half cache: {worst_seen:.2e}");
    // The half cache is what the logits read: far from f32's own error (under 1.2e-5).
    assert!(worst_seen > 10.0 * 1.2e-5, "{worst_seen}");
}

#[test]
fn an_adapter_applied_as_another_method_fails_the_tolerance() {
    // The check can fail: GSOFT's reference logits against the runtime's Double GSOFT (and
    // the base) are far outside TOL at the last position of the chat prompt.
    let f = fixture();
    let bytes = read_repo_file("tests/data/llama/tiny-llama-f32.gguf");
    let model = Model::from_bytes(&bytes).unwrap();
    let tokens = json_ids(&f["prompts"][0]["tokens"]);
    let want = json_rows(&f["adapters"][0]["logits"][0]);
    let last = want.last().unwrap();
    let dbl = read_repo_file("tests/data/llama/tiny-llama-double_gsoft.gguf");
    let a = Adapter::from_bytes(&dbl).unwrap();
    let mut ws = vec![0.0f32; a.workspace_len(&model).unwrap()];
    let p = a.prepare(&model, &mut ws).unwrap();
    let mut out = vec![0.0f32; model.output_len()];
    let mut arena = vec![0.0f32; model.arena_len(tokens.len(), 0)];
    for adapter in [Some(&p), None] {
        model
            .run(adapter, Input::Tokens(&tokens), &mut out, &mut arena)
            .unwrap();
        let e = worst(&out, last);
        assert!(
            e > 100.0 * TOL,
            "a wrong adapter is within {e} of GSOFT's logits"
        );
    }
    assert!(data_path("llama/tiny-llama-gsoft.gguf").exists());
}

/// `riffle_host::generate`'s logit bias and penalties, token by token, against a loop
/// written here: each step's logits from the core, adjusted by OpenAI's rule (bias, then
/// `count x frequency + (count > 0) x presence` off every generated token), greedy argmax.
/// The fixture's random model repeats tokens, so counts above one decide choices.
#[test]
fn logit_bias_and_penalties_follow_openais_rule_token_by_token() {
    use riffle_core::sample::SamplerConfig;
    use riffle_host::generate::{generate_tokens, Buffers, GenerateOptions, LogitAdjust};
    let f = fixture();
    let bytes = read_repo_file(&format!("tests/data/llama/{}", f["base"].as_str().unwrap()));
    let model = Model::from_bytes(&bytes).unwrap();
    let session = Session::new(&model);
    let prompt = json_ids(&f["prompts"][0]["tokens"]);
    let vocab = model.output_len();
    struct NoText;
    impl riffle_host::generate::TokenBytes for NoText {
        fn token_bytes(&self, _: u32, _: &mut Vec<u8>) {}
    }
    let steps = 40;
    let run = |adjust: LogitAdjust| {
        let need = model.state_len(prompt.len() + steps + 1);
        let mut kv = vec![0.0f32; need];
        let mut state = DecoderState::new(&mut kv, need, prompt.len() + steps + 1).unwrap();
        let mut bufs = Buffers::new(&model, 8);
        let opts = GenerateOptions {
            max_tokens: steps,
            sampler: SamplerConfig::GREEDY,
            stop_tokens: Vec::new(),
            adjust,
            json_object: false,
        };
        let mut seen = Vec::new();
        let g = generate_tokens(
            &session,
            &mut state,
            &prompt,
            &NoText,
            &opts,
            &mut bufs,
            &mut |t| {
                seen.push(t.logits.map(<[f32]>::to_vec));
                true
            },
        )
        .unwrap();
        (g.tokens, seen)
    };
    let reference = |adjust: &LogitAdjust| {
        let need = model.state_len(prompt.len() + steps + 1);
        let mut kv = vec![0.0f32; need];
        let mut state = DecoderState::new(&mut kv, need, prompt.len() + steps + 1).unwrap();
        let mut logits = vec![0.0f32; vocab];
        let mut arena = vec![0.0f32; model.step_arena_len(prompt.len())];
        session
            .step(&mut state, &prompt, &mut logits, &mut arena)
            .unwrap();
        let mut counts = vec![0u32; vocab];
        let mut out = Vec::new();
        for _ in 0..steps {
            let mut adj = logits.clone();
            for &(id, b) in &adjust.bias {
                adj[id as usize] += b;
            }
            for (j, &c) in counts.iter().enumerate() {
                if c > 0 {
                    adj[j] -= c as f32 * adjust.frequency_penalty + adjust.presence_penalty;
                }
            }
            let next = riffle_core::sample::argmax(&adj);
            counts[next as usize] += 1;
            out.push(next);
            session
                .step(&mut state, &[next], &mut logits, &mut arena)
                .unwrap();
        }
        out
    };
    let (plain, seen) = run(LogitAdjust::default());
    assert_eq!(plain, reference(&LogitAdjust::default()));
    // Reported logits are the model's: the chosen token is their argmax without changes.
    for (t, l) in plain.iter().zip(&seen) {
        assert_eq!(riffle_core::sample::argmax(l.as_ref().unwrap()), *t);
    }
    let most = (0..vocab as u32)
        .max_by_key(|t| plain.iter().filter(|&&p| p == *t).count())
        .unwrap();
    let repeats = plain.iter().filter(|&&p| p == most).count();
    assert!(repeats >= 3, "the fixture must repeat a token: {plain:?}");
    let cases = [
        LogitAdjust {
            frequency_penalty: 0.7,
            ..Default::default()
        },
        LogitAdjust {
            presence_penalty: 1.5,
            ..Default::default()
        },
        LogitAdjust {
            frequency_penalty: 0.4,
            presence_penalty: 0.3,
            ..Default::default()
        },
        LogitAdjust {
            bias: vec![(most, -100.0)],
            ..Default::default()
        },
        LogitAdjust {
            bias: vec![(plain[0], -3.0), (5, 30.0)],
            frequency_penalty: -0.5,
            ..Default::default()
        },
    ];
    for adjust in cases {
        let (got, seen) = run(adjust.clone());
        assert_eq!(got, reference(&adjust), "{adjust:?}");
        assert_ne!(
            got, plain,
            "{adjust:?} changed nothing: the case tests nothing"
        );
        // The logits reported with each token are the unadjusted ones.
        assert!(seen.iter().all(Option::is_some));
    }
}

/// Several sequences decoded together (`Model::decode_steps`), each under its own adapter
/// (every method of the fixture, Double GSOFT's output side included, the bare base twice,
/// one adapter on two sequences), at different positions (one past 64 cached positions,
/// where a step's attention is cut into key blocks; and all of them short of it, where the
/// threads share the sequences' attention out): every row of logits equals the sequence's
/// own step bit for bit, on one thread and split across 2 and 3.
#[test]
fn sequences_decoded_together_equal_each_decoded_alone() {
    let f = fixture();
    let bytes = read_repo_file(&format!("tests/data/llama/{}", f["base"].as_str().unwrap()));
    let model = Model::from_bytes(&bytes).unwrap();
    let specs = f["adapters"].as_array().unwrap();
    let files = adapter_files(specs);
    let (adapters, mut workspaces) = parsed_adapters(&files, &model);
    let prepared: Vec<_> = adapters
        .iter()
        .zip(workspaces.iter_mut())
        .map(|(a, ws)| a.prepare(&model, ws).unwrap())
        .collect();
    let p: Vec<Vec<u32>> = f["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| json_ids(&p["tokens"]))
        .collect();
    let long: Vec<u32> = p[0].iter().chain(&p[1]).cycle().take(70).copied().collect();
    let [gsoft, double, oft, boft] = [0, 1, 2, 3].map(|i| Some(&prepared[i]));
    let cases = [
        (None, &p[0]),
        (gsoft, &p[0]),
        (double, &p[1]),
        (oft, &p[0]),
        (boft, &long),
        (None, &p[1]),
        (gsoft, &p[1]),
        (double, &p[0]),
    ];
    let list: Vec<_> = cases.iter().map(|c| c.0).collect();
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| c.1.clone()).collect();
    let moved = riffle_tests::check_decode_steps(&model, &list, &prompts, 5, None);
    assert!(moved > 1.0, "the adapters barely move the logits ({moved})");
    // Without the long one every sequence is short of 64 positions: the threads then share
    // the sequences out, each sequence's attention whole on one thread.
    let (short_list, short_prompts): (Vec<_>, Vec<_>) = list
        .iter()
        .zip(&prompts)
        .filter(|(_, p)| p.len() < 60)
        .map(|(a, p)| (*a, p.clone()))
        .unzip();
    assert_eq!(short_list.len(), cases.len() - 1);
    for threads in [2, 3] {
        let pool = riffle_host::threads::Pool::new(threads).unwrap();
        riffle_tests::check_decode_steps(&model, &list, &prompts, 3, Some(&pool));
        riffle_tests::check_decode_steps(&model, &short_list, &short_prompts, 3, Some(&pool));
        riffle_tests::check_decode_steps(
            &model,
            &short_list[..2],
            &short_prompts[..2],
            3,
            Some(&pool),
        );
    }
    // One sequence alone, and a batch of one.
    riffle_tests::check_decode_steps(&model, &list[1..2], &prompts[1..2], 2, None);
}

/// A batch with a state computed under another adapter, a token outside the vocabulary,
/// or a full state fails before any state records a position; an empty batch is refused.
#[test]
fn a_bad_step_in_a_batch_changes_no_state() {
    use riffle_core::runtime::DecodeStep;
    use riffle_core::Error;
    let f = fixture();
    let bytes = read_repo_file(&format!("tests/data/llama/{}", f["base"].as_str().unwrap()));
    let model = Model::from_bytes(&bytes).unwrap();
    let specs = f["adapters"].as_array().unwrap();
    let files = adapter_files(&specs[..1]);
    let (adapters, mut workspaces) = parsed_adapters(&files, &model);
    let gsoft = adapters[0].prepare(&model, &mut workspaces[0]).unwrap();
    let prompt = json_ids(&f["prompts"][0]["tokens"]);
    let context = prompt.len() + 1;
    let need = model.state_len(context);
    let (mut a, mut b) = (vec![0.0f32; need], vec![0.0f32; need]);
    let mut sa = DecoderState::new(&mut a, need, context).unwrap();
    let mut sb = DecoderState::new(&mut b, need, context).unwrap();
    let mut arena = vec![0.0f32; model.step_arena_len(prompt.len())];
    let mut out = vec![0.0f32; 2 * model.output_len()];
    model
        .step(None, &mut sa, &prompt, &mut out, &mut arena)
        .unwrap();
    model
        .step(Some(&gsoft), &mut sb, &prompt, &mut out, &mut arena)
        .unwrap();
    let mut steps_arena = vec![0.0f32; model.decode_steps_arena_len(2)];
    let vocab = model.output_len() as u32;
    let bad: [(Option<&riffle_core::runtime::Prepared<'_, '_>>, u32, Error); 2] = [
        (None, 1, Error::StaleState),
        (Some(&gsoft), vocab, Error::BadInput),
    ];
    for (adapter_b, token_b, want) in bad {
        let mut steps = [
            DecodeStep {
                adapter: None,
                state: &mut sa,
                token: 1,
            },
            DecodeStep {
                adapter: adapter_b,
                state: &mut sb,
                token: token_b,
            },
        ];
        let got = model.decode_steps(&mut steps, &mut out, &mut steps_arena);
        assert_eq!(got, Err(want));
        assert_eq!((sa.len(), sb.len()), (prompt.len(), prompt.len()));
    }
    // Both states full after one good step: the next fails, nothing recorded.
    let mut steps = [
        DecodeStep {
            adapter: None,
            state: &mut sa,
            token: 1,
        },
        DecodeStep {
            adapter: Some(&gsoft),
            state: &mut sb,
            token: 2,
        },
    ];
    model
        .decode_steps(&mut steps, &mut out, &mut steps_arena)
        .unwrap();
    let got = model.decode_steps(&mut steps, &mut out, &mut steps_arena);
    assert!(matches!(got, Err(Error::ContextExceeded { .. })), "{got:?}");
    assert_eq!((sa.len(), sb.len()), (context, context));
    assert_eq!(
        model.decode_steps(&mut [], &mut out, &mut steps_arena),
        Err(Error::BadInput)
    );
}
