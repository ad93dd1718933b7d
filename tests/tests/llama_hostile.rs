//! The llama loader and decoder on hostile files and inputs (tests/data/llama/tiny-llama.gguf,
//! a 2-block random llama made by make_tiny.py): every edit is a typed error, never a
//! panic; a prompt past the context and ids past the vocabulary are refused; a truncated
//! file at any length is an error.

use riffle_core::runtime::{Adapter, DecoderState, Input, Model, Slot, MAX_SLOTS};
use riffle_core::Error;
use riffle_tests::data_path;
use riffle_tests::gguf_edit::{GgufFile, Val};

fn tiny() -> Vec<u8> {
    std::fs::read(data_path("llama/tiny-llama.gguf")).unwrap()
}

fn edited(f: impl FnOnce(&mut GgufFile)) -> Vec<u8> {
    let mut g = GgufFile::parse(&tiny());
    f(&mut g);
    g.to_bytes()
}

fn load_err(bytes: &[u8]) -> Error {
    match Model::from_bytes(bytes) {
        Ok(_) => panic!("a hostile file loaded"),
        Err(e) => e,
    }
}

#[test]
fn the_tiny_llama_loads_and_runs() {
    let bytes = tiny();
    let m = Model::from_bytes(&bytes).unwrap();
    let c = m.llama_config().unwrap();
    assert_eq!(
        (c.blocks, c.hidden, c.heads, c.kv_heads, c.ffn, c.vocab, c.context),
        (2, 16, 4, 2, 32, 64, 32)
    );
    let mut out = vec![0.0f32; 64];
    let mut arena = vec![0.0f32; m.arena_len(5, 0)];
    m.run(None, Input::Tokens(&[1, 2, 3, 4, 5]), &mut out, &mut arena)
        .unwrap();
    assert!(out.iter().all(|v| v.is_finite()));
}

#[test]
fn edited_dimensions_and_missing_keys_are_typed_errors() {
    type Edit = Box<dyn Fn(&mut GgufFile)>;
    type Case = (&'static str, Edit, fn(&Error) -> bool);
    let cases: Vec<Case> = vec![
        (
            "block count 0",
            Box::new(|g| {
                g.set("llama.block_count", Val::u32(0));
            }),
            |e| {
                matches!(
                    e,
                    Error::UnsupportedValue {
                        key: riffle_core::KeyName("llama.block_count")
                    }
                )
            },
        ),
        (
            "block count past the slot table",
            Box::new(|g| {
                g.set("llama.block_count", Val::u32(1_000_000));
            }),
            |e| {
                matches!(
                    e,
                    Error::SlotStorageTooSmall {
                        needed: 7_000_000,
                        got: MAX_SLOTS
                    }
                )
            },
        ),
        (
            "more blocks than tensors",
            Box::new(|g| {
                g.set("llama.block_count", Val::u32(3));
            }),
            |e| matches!(e, Error::MissingTensor),
        ),
        (
            "heads do not divide hidden",
            Box::new(|g| {
                g.set("llama.attention.head_count", Val::u32(3));
            }),
            |e| matches!(e, Error::UnsupportedModel),
        ),
        (
            "kv heads do not divide heads",
            Box::new(|g| {
                g.set("llama.attention.head_count_kv", Val::u32(3));
            }),
            |e| matches!(e, Error::UnsupportedModel),
        ),
        (
            "kv heads 0",
            Box::new(|g| {
                g.set("llama.attention.head_count_kv", Val::u32(0));
            }),
            |e| matches!(e, Error::UnsupportedModel),
        ),
        (
            "hidden past the limit",
            Box::new(|g| {
                g.set("llama.embedding_length", Val::u32(u32::MAX));
            }),
            |e| matches!(e, Error::UnsupportedModel),
        ),
        (
            "hidden disagrees with the tensors",
            Box::new(|g| {
                g.set("llama.embedding_length", Val::u32(32));
            }),
            |e| matches!(e, Error::ShapeMismatch { .. }),
        ),
        (
            "ffn disagrees with the tensors",
            Box::new(|g| {
                g.set("llama.feed_forward_length", Val::u32(48));
            }),
            |e| matches!(e, Error::ShapeMismatch { .. }),
        ),
        (
            "odd rope dimensions",
            Box::new(|g| {
                g.set("llama.rope.dimension_count", Val::u32(3));
            }),
            |e| matches!(e, Error::UnsupportedModel),
        ),
        (
            "rope dimensions past the head",
            Box::new(|g| {
                g.set("llama.rope.dimension_count", Val::u32(8));
            }),
            |e| matches!(e, Error::UnsupportedModel),
        ),
        (
            "context 0",
            Box::new(|g| {
                g.set("llama.context_length", Val::u32(0));
            }),
            |e| matches!(e, Error::UnsupportedModel),
        ),
        (
            "vocabulary size disagrees",
            Box::new(|g| {
                g.set("llama.vocab_size", Val::u32(65));
            }),
            |e| matches!(e, Error::ShapeMismatch { .. }),
        ),
        (
            "no block count",
            Box::new(|g| {
                g.remove("llama.block_count");
            }),
            |e| matches!(e, Error::MissingKey { key } if key.as_str() == "llama.block_count"),
        ),
        (
            "no rms epsilon",
            Box::new(|g| {
                g.remove("llama.attention.layer_norm_rms_epsilon");
            }),
            |e| matches!(e, Error::MissingKey { key } if key.as_str() == "llama.attention.layer_norm_rms_epsilon"),
        ),
        (
            "block count of the wrong type",
            Box::new(|g| {
                g.set("llama.block_count", Val::str("two"));
            }),
            |e| matches!(e, Error::WrongValueType),
        ),
        (
            "no token embeddings",
            Box::new(|g| {
                g.tensor_mut("token_embd.weight").name = b"token_embd.weight.gone".to_vec();
            }),
            |e| matches!(e, Error::MissingTensor),
        ),
        (
            "no output norm",
            Box::new(|g| {
                g.tensor_mut("output_norm.weight").name = b"output_norm.gone".to_vec();
            }),
            |e| matches!(e, Error::MissingTensor),
        ),
        (
            "a transposed projection",
            Box::new(|g| {
                g.tensor_mut("blk.1.ffn_down.weight").dims = vec![16, 32];
            }),
            |e| {
                matches!(
                    e,
                    Error::ShapeMismatch { .. } | Error::TensorOutOfRange { .. }
                )
            },
        ),
        (
            "an integer weight",
            Box::new(|g| {
                g.tensor_mut("blk.0.attn_q.weight").ggml_type = 26;
            }),
            |e| matches!(e, Error::UnknownTensorType { .. }),
        ),
    ];
    for (what, edit, want) in cases {
        let bytes = edited(|g| edit(g));
        let e = load_err(&bytes);
        assert!(want(&e), "{what}: got {e:?}");
        // Every error displays as one line.
        assert!(!e.to_string().contains('\n'));
    }
}

#[test]
fn prompts_past_the_context_and_ids_past_the_vocabulary_are_refused() {
    let bytes = tiny();
    let m = Model::from_bytes(&bytes).unwrap();
    let mut out = vec![0.0f32; 64];
    let mut arena = vec![0.0f32; m.arena_len(64, 0)];
    let long = vec![1u32; 33];
    assert!(matches!(
        m.run(None, Input::Tokens(&long), &mut out, &mut arena),
        Err(Error::ContextExceeded {
            needed: 33,
            context: 32
        })
    ));
    assert_eq!(
        m.run(None, Input::Tokens(&[64]), &mut out, &mut arena),
        Err(Error::BadInput)
    );
    assert_eq!(
        m.run(None, Input::Tokens(&[]), &mut out, &mut arena),
        Err(Error::BadInput)
    );
    assert_eq!(
        m.run(None, Input::Vector(&[0.0; 4]), &mut out, &mut arena),
        Err(Error::BadInput)
    );
    // A state of 8 positions: the ninth is refused and the state keeps its eight.
    let mut kv = vec![0.0f32; m.state_len(8)];
    let need = kv.len();
    let mut st = DecoderState::new(&mut kv, need, 8).unwrap();
    let mut sa = vec![0.0f32; m.step_arena_len(8)];
    m.step(None, &mut st, &[1; 8], &mut out, &mut sa).unwrap();
    assert_eq!(st.len(), 8);
    assert!(matches!(
        m.step(None, &mut st, &[1], &mut out, &mut sa),
        Err(Error::ContextExceeded { .. })
    ));
    assert_eq!(st.len(), 8);
    // Short buffers are errors, for either kind of cache.
    assert!(DecoderState::new(&mut [0.0f32; 3], need, 8).is_err());
    assert_eq!(
        DecoderState::new_f16(&mut vec![0u16; need - 1], need, 8).err(),
        Some(Error::BufferTooSmall {
            needed: need,
            got: need - 1
        })
    );
    // A half cache too: the ninth position is refused and its eight stay.
    let mut kv16 = vec![0u16; need];
    let mut st16 = DecoderState::new_f16(&mut kv16, need, 8).unwrap();
    m.step(None, &mut st16, &[1; 8], &mut out, &mut sa).unwrap();
    assert!(matches!(
        m.step(None, &mut st16, &[1], &mut out, &mut sa),
        Err(Error::ContextExceeded { .. })
    ));
    assert_eq!(st16.len(), 8);
    st.reset();
    assert!(matches!(
        m.step(None, &mut st, &[1, 2], &mut out, &mut sa[..10]),
        Err(Error::BufferTooSmall { .. })
    ));
    assert!(matches!(
        m.step(None, &mut st, &[1, 2], &mut out[..10], &mut sa),
        Err(Error::BufferTooSmall { .. })
    ));
    // Every position's logits need a row each: one row short is an error naming the
    // size, and the state keeps its positions.
    let mut rows = vec![0.0f32; 3 * 64];
    assert_eq!(
        m.step_all(None, &mut st, &[1, 2, 3], &mut rows[..2 * 64 + 63], &mut sa),
        Err(Error::BufferTooSmall {
            needed: 3 * 64,
            got: 2 * 64 + 63
        })
    );
    assert_eq!(st.len(), 0);
    assert_eq!(
        m.step_all(None, &mut st, &[1, 2, 3], &mut rows, &mut sa),
        Ok(3 * 64)
    );
    assert_eq!(st.len(), 3);
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = tiny();
    for len in (0..bytes.len()).step_by(97).chain([bytes.len() - 1]) {
        assert!(
            Model::from_bytes(&bytes[..len]).is_err(),
            "truncated at {len}"
        );
    }
}

/// `g` with `blocks` blocks, every block a copy of block 0's tensors under its own names.
fn with_blocks(g: &mut GgufFile, blocks: u32) {
    let block0: Vec<_> = g
        .tensors
        .iter()
        .filter(|t| t.name_str().starts_with("blk.0."))
        .cloned()
        .collect();
    g.tensors
        .retain(|t| !t.name_str().starts_with("blk.") || t.name_str().starts_with("blk.0."));
    for b in 1..blocks {
        for t in &block0 {
            let mut c = t.clone();
            c.name = t
                .name_str()
                .replacen("blk.0.", &format!("blk.{b}."), 1)
                .into_bytes();
            g.tensors.push(c);
        }
    }
}

fn llama_of(file: &str, blocks: u32) -> Vec<u8> {
    let mut g = GgufFile::parse(&std::fs::read(data_path(file)).unwrap());
    with_blocks(&mut g, blocks);
    g.set("llama.block_count", Val::u32(blocks));
    g.to_bytes()
}

/// Capacities follow the model: a 64-block llama (448 linear slots, every block sharing the
/// tiny model's block-0 tensors) loads and runs, and an adapter could address any slot; in
/// caller storage it runs bit for bit as in the model's own table.
#[test]
fn a_64_block_llama_with_448_slots_loads_and_runs() {
    let bytes = llama_of("llama/tiny-llama.gguf", 64);
    let m = Model::from_bytes(&bytes).unwrap();
    assert_eq!(m.slots().len(), 448);
    assert_eq!(m.slot_name(447), "blk.63.ffn_down.weight");
    let mut out = vec![0.0f32; 64];
    let mut arena = vec![0.0f32; m.arena_len(3, 0)];
    m.run(None, Input::Tokens(&[1, 2, 3]), &mut out, &mut arena)
        .unwrap();
    assert!(out.iter().all(|v| v.is_finite()));
    assert_eq!(Model::storage_len(&bytes).unwrap(), 448);
    let mut storage = vec![Slot::empty(); 448];
    let mc = Model::from_bytes_in(&bytes, &mut storage).unwrap();
    let mut out_c = vec![0.0f32; 64];
    mc.run(None, Input::Tokens(&[1, 2, 3]), &mut out_c, &mut arena)
        .unwrap();
    assert_eq!(bits(&out), bits(&out_c));
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Past the default capacity ([`MAX_SLOTS`]): an 80-block llama (560 slots) is refused by
/// `Model::from_bytes` and by a caller buffer one record short, loads into a buffer of
/// `Model::storage_len` records and runs (tiny-llama-f32.gguf's blocks), and a GSOFT adapter
/// on all 560 slots (tiny-llama-gsoft.gguf's block 0 in every block) prepares
/// (its slot table in its workspace) and changes the output.
#[test]
fn an_80_block_llama_with_560_slots_loads_into_caller_storage() {
    const BLOCKS: u32 = 80;
    let n = 7 * BLOCKS as usize;
    assert!(n > MAX_SLOTS);
    let bytes = llama_of("llama/tiny-llama-f32.gguf", BLOCKS);
    assert_eq!(
        load_err(&bytes),
        Error::SlotStorageTooSmall {
            needed: n,
            got: MAX_SLOTS
        }
    );
    assert_eq!(Model::storage_len(&bytes).unwrap(), n);
    let mut short = vec![Slot::empty(); n - 1];
    assert_eq!(
        Model::from_bytes_in(&bytes, &mut short).err(),
        Some(Error::SlotStorageTooSmall {
            needed: n,
            got: n - 1
        })
    );
    let mut storage = vec![Slot::empty(); n];
    let m = Model::from_bytes_in(&bytes, &mut storage).unwrap();
    assert_eq!(m.slots().len(), n);
    assert_eq!(m.slot_name(n - 1), "blk.79.ffn_down.weight");
    let tokens = [1u32, 2, 3];
    let mut base = vec![0.0f32; m.output_len()];
    let mut arena = vec![0.0f32; m.arena_len(tokens.len(), 0)];
    m.run(None, Input::Tokens(&tokens), &mut base, &mut arena)
        .unwrap();
    assert!(base.iter().all(|v| v.is_finite()));

    let mut a = GgufFile::parse(&std::fs::read(data_path("llama/tiny-llama-gsoft.gguf")).unwrap());
    with_blocks(&mut a, BLOCKS);
    a.set("adapter.base_model_id", Val::str(m.model_id()))
        .fix_crc();
    let a_bytes = a.to_bytes();
    let adapter = Adapter::from_bytes(&a_bytes).unwrap();
    let ws_len = adapter.workspace_len(&m).unwrap();
    let mut short_ws = vec![0.0f32; ws_len - 1];
    assert!(matches!(
        adapter.prepare(&m, &mut short_ws),
        Err(Error::BufferTooSmall { .. })
    ));
    let mut ws = vec![0.0f32; ws_len];
    let p = adapter.prepare(&m, &mut ws).unwrap();
    assert_eq!(p.adapted_slots(), n);
    let mut adapted = vec![0.0f32; m.output_len()];
    m.run(Some(&p), Input::Tokens(&tokens), &mut adapted, &mut arena)
        .unwrap();
    assert!(adapted.iter().all(|v| v.is_finite()));
    assert_ne!(bits(&base), bits(&adapted));
}
