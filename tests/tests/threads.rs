//! Results do not depend on the thread count: MiniLM (with and without an adapter, F32 and
//! Q8_0, odd token counts), the digits models (mlp and cnn, every adapter), and SmolLM2
//! (prefill then decode) give bit-identical outputs on 1, 2, 3, 4 and 7 threads; a stress run
//! alternates thread counts over many short runs.

use riffle_core::par::Executor;
use riffle_core::runtime::{Adapter, Input, Model, Session};
use riffle_host::threads::Pool;
use riffle_tests::{read_repo_file, repo_path, smollm2};

const THREADS: [usize; 5] = [1, 2, 3, 4, 7];

fn pools() -> Vec<Pool> {
    THREADS.iter().map(|&t| Pool::new(t).unwrap()).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Runs `input` through a session with adapter `adapter` (or the base) on every pool and
/// checks that all outputs equal the one-thread output bit for bit.
fn same_on_every_pool(
    model: &Model<'_>,
    adapter: Option<&Adapter<'_>>,
    input: Input<'_>,
    max_tokens: usize,
    pools: &[Pool],
) {
    let mut ws = adapter.map_or(Vec::new(), |a| {
        vec![0.0f32; a.workspace_len(model).unwrap()]
    });
    let mut first: Option<Vec<u32>> = None;
    for pool in pools {
        let mut session = Session::new(model);
        if let Some(a) = adapter {
            let h = session
                .add_adapter(a.prepare(model, &mut ws).unwrap())
                .unwrap();
            session.activate(Some(h), &mut []).unwrap();
        }
        session.set_executor(pool);
        let mut arena = vec![0.0f32; session.arena_len(max_tokens)];
        let mut out = vec![0.0f32; 4096];
        let n = session.run(input, &mut out, &mut arena).unwrap();
        let b = bits(&out[..n]);
        match &first {
            None => first = Some(b),
            Some(f) => assert_eq!(f, &b, "{} threads differ from 1", pool.threads()),
        }
    }
}

#[test]
fn minilm_is_bit_identical_on_every_thread_count() {
    if std::env::var_os("RIFFLE_SKIP_MINILM").is_some() {
        return;
    }
    let pools = pools();
    let adapter_bytes = read_repo_file("models/minilm-adapters/minilm-sentiment.gguf");
    let adapter = Adapter::from_bytes(&adapter_bytes).unwrap();
    for kind in ["f32", "q8_0"] {
        let bytes = std::fs::read(repo_path(&format!("models/minilm/minilm-{kind}.gguf"))).unwrap();
        let model = Model::from_bytes(&bytes).unwrap();
        for t in [1usize, 7, 8, 13, 16, 50, 128] {
            let ids: Vec<u32> = (0..t as u32).map(|i| 101 + (i * 37) % 20_000).collect();
            same_on_every_pool(&model, None, Input::Tokens(&ids), t, &pools);
            same_on_every_pool(&model, Some(&adapter), Input::Tokens(&ids), t, &pools);
        }
    }
}

#[test]
fn digits_models_are_bit_identical_on_every_thread_count() {
    let pools = pools();
    for arch in ["mlp", "cnn"] {
        let bytes = read_repo_file(&format!("models/digits/{arch}.gguf"));
        let model = Model::from_bytes(&bytes).unwrap();
        let x: Vec<f32> = (0..model.input_len())
            .map(|i| ((i * 7) % 17) as f32 / 17.0)
            .collect();
        same_on_every_pool(&model, None, Input::Vector(&x), 0, &pools);
        for task in ["rotated", "inverted", "noisy", "parity"] {
            let ab = read_repo_file(&format!("models/digits/{arch}-{task}.gguf"));
            let a = Adapter::from_bytes(&ab).unwrap();
            same_on_every_pool(&model, Some(&a), Input::Vector(&x), 0, &pools);
        }
    }
}

#[test]
fn smollm2_prefill_and_decode_are_bit_identical_on_every_thread_count() {
    let Some(bytes) = smollm2("Q8_0") else { return };
    let model = Model::from_bytes(&bytes).unwrap();
    smollm2_same_on_every_pool(&model, None, &pools());
}

#[test]
fn smollm2_with_an_adapter_is_bit_identical_on_every_thread_count() {
    // Q4_1 with a committed adapter, unmerged: the decode steps rotate with the reflector
    // form, and on an even thread count k/v and gate/up run as one step of two halves (with
    // 4 threads, two parts a slot).
    let Some(bytes) = smollm2("Q4_1") else { return };
    let model = Model::from_bytes(&bytes).unwrap();
    let ab = read_repo_file("models/smollm2-adapters/smollm2-sentiment.gguf");
    let adapter = Adapter::from_bytes(&ab).unwrap();
    let pools: Vec<Pool> = [1, 2, 3, 4, 7].map(|t| Pool::new(t).unwrap()).into();
    smollm2_same_on_every_pool(&model, Some(&adapter), &pools);
}

/// A 270-token prompt, five greedy decode steps (where a step's attention is cut into
/// blocks of 64 positions that the threads share: five blocks, the last one short) and 19
/// tokens read with
/// every position's logits, of `model` (with `adapter` active, if any), give bit-identical
/// logits on every pool, with keys and values kept as `f32`s and as halves.
fn smollm2_same_on_every_pool(model: &Model<'_>, adapter: Option<&Adapter<'_>>, pools: &[Pool]) {
    for half in [false, true] {
        smollm2_same_on_every_pool_with(model, adapter, pools, half);
    }
}

fn smollm2_same_on_every_pool_with(
    model: &Model<'_>,
    adapter: Option<&Adapter<'_>>,
    pools: &[Pool],
    half: bool,
) {
    use riffle_core::runtime::DecoderState;
    let prompt: Vec<u32> = (0..270u32).map(|i| 100 + (i * 131) % 40_000).collect();
    let context = 300;
    let mut ws = adapter.map_or(Vec::new(), |a| {
        vec![0.0f32; a.workspace_len(model).unwrap()]
    });
    let prepared = adapter.map(|a| a.prepare(model, &mut ws).unwrap());
    let mut first: Option<Vec<Vec<u32>>> = None;
    for pool in pools {
        let mut session = Session::new(model);
        session.set_executor(pool);
        if let Some(p) = &prepared {
            let h = session.add_adapter(p.clone()).unwrap();
            session.activate(Some(h), &mut []).unwrap();
        }
        let need = model.state_len(context);
        let (mut kv, mut kv16) = (vec![0.0f32; need], vec![0u16; need]);
        let mut state = if half {
            DecoderState::new_f16(&mut kv16, need, context).unwrap()
        } else {
            DecoderState::new(&mut kv, need, context).unwrap()
        };
        let mut arena = vec![0.0f32; model.step_arena_len(prompt.len())];
        let mut logits = vec![0.0f32; model.output_len()];
        let mut all = Vec::new();
        session
            .step(&mut state, &prompt, &mut logits, &mut arena)
            .unwrap();
        all.push(bits(&logits));
        for _ in 0..5 {
            let next = riffle_core::sample::argmax(&logits);
            session
                .step(&mut state, &[next], &mut logits, &mut arena)
                .unwrap();
            all.push(bits(&logits));
        }
        // Then 19 more tokens read at once, the logits after each of them.
        let more: Vec<u32> = (0..19u32).map(|i| 7 + i * 1013).collect();
        let mut every = vec![0.0f32; more.len() * model.output_len()];
        session
            .step_all(&mut state, &more, &mut every, &mut arena)
            .unwrap();
        all.push(bits(&every));
        match &first {
            None => first = Some(all),
            Some(f) => assert!(
                f == &all,
                "{} threads differ from 1 (half cache: {half})",
                pool.threads()
            ),
        }
    }
}

#[test]
fn many_short_runs_alternating_thread_counts() {
    let pools = pools();
    let bytes = read_repo_file("models/digits/mlp.gguf");
    let model = Model::from_bytes(&bytes).unwrap();
    let ab = read_repo_file("models/digits/mlp-rotated.gguf");
    let a = Adapter::from_bytes(&ab).unwrap();
    let mut ws = vec![0.0f32; a.workspace_len(&model).unwrap()];
    let prepared = a.prepare(&model, &mut ws).unwrap();
    let mut session = Session::new(&model);
    let h = session.add_adapter(prepared.clone()).unwrap();
    let mut arena = vec![0.0f32; session.arena_len(0)];
    let mut want = Vec::new();
    for i in 0..50 {
        let x: Vec<f32> = (0..64)
            .map(|j| ((i * 13 + j * 7) % 23) as f32 / 23.0)
            .collect();
        session
            .activate(if i % 2 == 0 { Some(h) } else { None }, &mut [])
            .unwrap();
        let mut out = vec![0.0f32; 10];
        session
            .run(Input::Vector(&x), &mut out, &mut arena)
            .unwrap();
        want.push((x, i % 2 == 0, bits(&out)));
    }
    for round in 0..2000 {
        let (x, adapted, expect) = &want[round % want.len()];
        let pool = &pools[(round * 7 + round / 3) % pools.len()];
        let mut s = Session::new(&model);
        s.set_executor(pool);
        let h2 = s.add_adapter(prepared.clone()).unwrap();
        if *adapted {
            s.activate(Some(h2), &mut []).unwrap();
        }
        let mut out = vec![0.0f32; 10];
        s.run(Input::Vector(x), &mut out, &mut arena).unwrap();
        assert_eq!(&bits(&out), expect, "round {round}");
    }
}
