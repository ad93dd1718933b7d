//! The GGUF reader against fixtures written by the Python `gguf` package
//! (`tests/data/gguf/make_fixtures.py`), and CRC-32 / SHA-256 against published
//! test vectors and Python's `zlib` / `hashlib`.

mod gguf_common;

use gguf_common::{fixture, Builder, FIXTURES};
use riffle_core::checksum::{crc32, hex_lower, sha256, Crc32, Sha256};
use riffle_core::gguf::*;
use riffle_core::{Error, KeyName};
use serde_json::Value as Json;

fn expected() -> Json {
    let text = std::fs::read_to_string(gguf_common::data_dir().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn value_type(name: &str) -> ValueType {
    match name {
        "U8" => ValueType::U8,
        "I8" => ValueType::I8,
        "U16" => ValueType::U16,
        "I16" => ValueType::I16,
        "U32" => ValueType::U32,
        "I32" => ValueType::I32,
        "F32" => ValueType::F32,
        "Bool" => ValueType::Bool,
        "String" => ValueType::String,
        "Array" => ValueType::Array,
        "U64" => ValueType::U64,
        "I64" => ValueType::I64,
        "F64" => ValueType::F64,
        other => panic!("unknown type {other}"),
    }
}

/// Checks a scalar (non-array) value against its JSON form.
fn check_scalar(key: &str, got: &Value<'_>, want: &Json) {
    match *got {
        Value::U8(v) => assert_eq!(Some(u64::from(v)), want.as_u64(), "{key}"),
        Value::U16(v) => assert_eq!(Some(u64::from(v)), want.as_u64(), "{key}"),
        Value::U32(v) => assert_eq!(Some(u64::from(v)), want.as_u64(), "{key}"),
        Value::U64(v) => assert_eq!(Some(v), want.as_u64(), "{key}"),
        Value::I8(v) => assert_eq!(Some(i64::from(v)), want.as_i64(), "{key}"),
        Value::I16(v) => assert_eq!(Some(i64::from(v)), want.as_i64(), "{key}"),
        Value::I32(v) => assert_eq!(Some(i64::from(v)), want.as_i64(), "{key}"),
        Value::I64(v) => assert_eq!(Some(v), want.as_i64(), "{key}"),
        Value::F32(v) => assert_eq!(v, want.as_f64().unwrap() as f32, "{key}"),
        Value::F64(v) => assert_eq!(v, want.as_f64().unwrap(), "{key}"),
        Value::Bool(v) => assert_eq!(Some(v), want.as_bool(), "{key}"),
        Value::String(s) => assert_eq!(Some(s), want.as_str(), "{key}"),
        Value::Array(_) => panic!("{key}: nested array"),
    }
}

fn check_file(name: &str, want: &Json) {
    let bytes = fixture(name);
    let g = Gguf::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(bytes.len() as u64, want["size"].as_u64().unwrap(), "{name}");
    assert_eq!(g.version(), 3);
    assert_eq!(
        u64::from(g.alignment()),
        want["alignment"].as_u64().unwrap(),
        "{name}"
    );
    assert_eq!(
        g.kv_count() as u64,
        want["kv_count"].as_u64().unwrap(),
        "{name}"
    );
    assert_eq!(
        g.tensor_count() as u64,
        want["tensor_count"].as_u64().unwrap(),
        "{name}"
    );
    assert_eq!(
        g.data_offset() as u64,
        want["data_offset"].as_u64().unwrap(),
        "{name}"
    );
    assert_eq!(
        g.data_span().len() as u64,
        want["data_span_len"].as_u64().unwrap(),
        "{name}"
    );
    assert_eq!(
        g.compute_model_id().as_str(),
        want["sha256"].as_str().unwrap(),
        "{name}"
    );
    assert_eq!(model_id_hex(&g), g.compute_model_id());
    assert_eq!(
        u64::from(g.compute_data_crc32()),
        want["crc32"].as_u64().unwrap(),
        "{name}"
    );

    // Metadata, in file order, through the iterator and through get().
    let kvs = want["kv"].as_array().unwrap();
    let listed: Vec<_> = g.metadata().collect();
    assert_eq!(listed.len(), kvs.len(), "{name}");
    for ((key, value), w) in listed.iter().zip(kvs) {
        assert_eq!(*key, w["key"].as_str().unwrap(), "{name}");
        assert_eq!(g.get(key).as_ref(), Some(value), "{name}: {key}");
        assert_eq!(
            value.value_type(),
            value_type(w["type"].as_str().unwrap()),
            "{key}"
        );
        match value {
            Value::Array(a) => {
                let elems = w["value"].as_array().unwrap();
                assert_eq!(
                    a.element_type(),
                    value_type(w["element_type"].as_str().unwrap()),
                    "{key}"
                );
                assert_eq!(a.len(), elems.len(), "{key}");
                assert_eq!(a.is_empty(), elems.is_empty());
                let via_iter: Vec<_> = a.iter().collect();
                assert_eq!(via_iter.len(), elems.len(), "{key}");
                for (i, (e, we)) in via_iter.iter().zip(elems).enumerate() {
                    check_scalar(key, e, we);
                    assert_eq!(a.get(i).as_ref(), Some(e), "{key}[{i}]");
                }
                assert_eq!(a.get(elems.len()), None);
                match a.as_strings() {
                    Some(strings) => {
                        assert_eq!(a.element_type(), ValueType::String);
                        assert_eq!(a.as_le_bytes(), None);
                        assert_eq!(strings.len(), elems.len());
                        let pairs: Vec<_> = strings.iter().collect();
                        assert_eq!(pairs.len(), elems.len());
                        for (i, ((loc, s), we)) in pairs.iter().zip(elems).enumerate() {
                            assert_eq!(Some(*s), we.as_str(), "{key}[{i}]");
                            assert_eq!(strings.str_at(*loc), Some(*s), "{key}[{i}] by locator");
                            assert_eq!(strings.get(i), Some(*s));
                            // The locator is the element's offset in the file.
                            let at = *loc as usize;
                            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
                            assert_eq!(&bytes[at + 8..at + 8 + len as usize], s.as_bytes());
                        }
                        // Locators outside the array are refused.
                        assert_eq!(strings.str_at(0), None);
                        assert_eq!(strings.str_at(u32::MAX), None);
                    }
                    None => {
                        assert_ne!(a.element_type(), ValueType::String);
                        let size = a.element_type().fixed_size().unwrap();
                        assert_eq!(a.as_le_bytes().unwrap().len(), size * a.len());
                    }
                }
            }
            scalar => check_scalar(key, scalar, &w["value"]),
        }
    }

    // Tensors, in table order and by name.
    let ts = want["tensors"].as_array().unwrap();
    let listed: Vec<_> = g.tensors().collect();
    assert_eq!(listed.len(), ts.len());
    for (i, (t, w)) in listed.iter().zip(ts).enumerate() {
        let tname = w["name"].as_str().unwrap();
        assert_eq!(t.name(), tname);
        assert_eq!(t.index() as usize, i);
        assert_eq!(g.tensor(i).as_ref(), Some(t));
        assert_eq!(g.find_tensor(tname).as_ref(), Some(t));
        assert_eq!(
            u64::from(t.ggml_type().ggml_code()),
            w["ggml_type"].as_u64().unwrap(),
            "{tname}"
        );
        let shape: Vec<u64> = w["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(t.shape(), &shape[..], "{tname}: shape in PyTorch order");
        assert_eq!(t.rank(), shape.len());
        let mut ne = [1u64; 4];
        for (n, d) in ne.iter_mut().zip(shape.iter().rev()) {
            *n = *d;
        }
        assert_eq!(t.ggml_dims(), ne, "{tname}: GGUF order");
        assert_eq!(t.element_count() as u64, shape.iter().product::<u64>());
        assert_eq!(t.offset(), w["offset"].as_u64().unwrap(), "{tname}");
        assert_eq!(t.offset() % u64::from(g.alignment()), 0);
        assert_eq!(
            t.data().len() as u64,
            w["n_bytes"].as_u64().unwrap(),
            "{tname}"
        );
        let start = g.data_offset() + t.offset() as usize;
        assert!(
            std::ptr::eq(t.data().as_ptr(), bytes[start..].as_ptr()),
            "{tname}: zero-copy"
        );

        let values = w["values"].as_array().unwrap();
        assert_eq!(values.len(), t.element_count());
        if t.ggml_type() == TensorType::I32 {
            let mut got = vec![0i32; values.len()];
            t.decode_i32(0, &mut got).unwrap();
            for (k, (g, v)) in got.iter().zip(values).enumerate() {
                assert_eq!(i64::from(*g), v.as_i64().unwrap(), "{tname}[{k}]");
                assert_eq!(t.get_i32(k), Some(*g));
            }
            assert!(matches!(
                t.decode_f32(0, &mut [0.0]),
                Err(Error::UnknownTensorType { ggml_type: 26, .. })
            ));
            continue;
        }
        let want_f: Vec<f32> = values.iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let mut got = vec![f32::NAN; want_f.len()];
        t.decode_f32(0, &mut got).unwrap();
        assert_eq!(got, want_f, "{tname}: decoded values");
        // Every row, and runs that start and end inside Q8_0 blocks.
        let row_len = t.row_len();
        let mut row = vec![0f32; row_len];
        for r in 0..t.row_count() {
            t.decode_row(r, &mut row).unwrap();
            assert_eq!(
                row[..],
                want_f[r * row_len..(r + 1) * row_len],
                "{tname} row {r}"
            );
        }
        for (s, n) in [
            (0, 1),
            (5, 40),
            (31, 2),
            (1, want_f.len() - 1),
            (want_f.len() - 1, 1),
            (3, 0),
        ] {
            if s + n > want_f.len() {
                continue;
            }
            let mut part = vec![0f32; n];
            t.decode_f32(s, &mut part).unwrap();
            assert_eq!(part[..], want_f[s..s + n], "{tname} run {s}+{n}");
        }
        assert_eq!(t.get_f32(want_f.len() - 1), Some(want_f[want_f.len() - 1]));
        assert_eq!(t.get_f32(want_f.len()), None);
        assert!(matches!(
            t.decode_f32(want_f.len(), &mut [0.0]),
            Err(Error::LengthMismatch { .. })
        ));
        assert!(matches!(
            t.decode_f32(usize::MAX, &mut [0.0; 2]),
            Err(Error::LengthMismatch { .. })
        ));
        assert!(matches!(
            t.decode_row(0, &mut vec![0.0; row_len + 1]),
            Err(Error::LengthMismatch { .. })
        ));
        assert!(matches!(
            t.decode_row(t.row_count(), &mut row),
            Err(Error::LengthMismatch { .. })
        ));
        assert!(matches!(
            t.decode_i32(0, &mut [0]),
            Err(Error::UnknownTensorType { .. })
        ));
    }
    assert_eq!(g.tensor(ts.len()), None);
    assert_eq!(g.find_tensor("no.such.tensor"), None);
    assert_eq!(
        g.require_tensor("no.such.tensor"),
        Err(Error::MissingTensor)
    );
}

#[test]
fn fixtures_match_python() {
    let e = expected();
    let files = e["files"].as_object().unwrap();
    assert_eq!(files.len(), FIXTURES.len());
    for name in FIXTURES {
        check_file(name, &files[name]);
    }
}

#[test]
fn every_value_type_and_conversions() {
    let bytes = fixture("all_types.gguf");
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.alignment(), 64);
    assert_eq!(g.get_u32("test.u8"), Ok(200));
    assert_eq!(g.get_u32("test.u16"), Ok(60000));
    assert_eq!(g.get_u32("test.u32"), Ok(4_000_000_000));
    assert_eq!(g.get_u32("test.small_i32"), Ok(7));
    assert_eq!(
        g.get_u32("test.i32"),
        Err(Error::WrongValueType),
        "negative is never a u32"
    );
    assert_eq!(
        g.get_u32("test.u64"),
        Err(Error::WrongValueType),
        "out of range is refused"
    );
    assert_eq!(g.get_u32("test.f32"), Err(Error::WrongValueType));
    assert_eq!(g.get_u32("test.bool_true"), Err(Error::WrongValueType));
    assert_eq!(g.get_u32("test.string"), Err(Error::WrongValueType));
    assert_eq!(
        g.get_u32("no.such.key"),
        Err(Error::MissingKey {
            key: KeyName("no.such.key")
        })
    );
    assert_eq!(g.get_u64("test.u64"), Ok((1 << 63) + 5));
    assert_eq!(g.get_u64("test.neg_i64"), Err(Error::WrongValueType));
    assert_eq!(g.get_i32("test.i32"), Ok(-2_000_000_000));
    assert_eq!(g.get_i32("test.u32"), Err(Error::WrongValueType));
    assert_eq!(g.get_i32("test.neg_i64"), Ok(-1));
    assert_eq!(g.get_f32("test.f32"), Ok(0.1f32));
    assert_eq!(g.get_f32("test.f64"), Ok(0.1f64 as f32));
    assert_eq!(g.get_f32("test.u8"), Err(Error::WrongValueType));
    assert_eq!(g.get("test.f64").and_then(|v| v.as_f64()), Some(0.1));
    assert_eq!(g.get_bool("test.bool_true"), Ok(true));
    assert_eq!(g.get_bool("test.bool_false"), Ok(false));
    assert_eq!(g.get_bool("test.u8"), Err(Error::WrongValueType));
    assert_eq!(
        g.get_str("test.string"),
        Ok("h\u{e9}llo \u{2581}w\u{f6}rld \u{1f600}")
    );
    assert_eq!(g.get_str("test.empty_string"), Ok(""));
    assert_eq!(g.get_str("test.u8"), Err(Error::WrongValueType));
    assert_eq!(g.get_str(KEY_ARCHITECTURE), Ok("riffle_test"));
    assert_eq!(g.get_array("test.u8"), Err(Error::WrongValueType));
    assert_eq!(g.get_strings("test.arr.u8"), Err(Error::WrongValueType));
    assert_eq!(g.get("test.i8"), Some(Value::I8(-100)));
    assert_eq!(g.get("test.i16"), Some(Value::I16(-30000)));
    assert_eq!(g.get("test.i64"), Some(Value::I64(-(1 << 62) - 7)));

    let a = g.get_array("test.arr.i32").unwrap();
    assert_eq!(a.get_i32(0), Some(-1));
    assert_eq!(a.get_u32(0), None);
    assert_eq!(a.get_u32(3), Some(2_147_483_647));
    assert_eq!(a.get_i32(4), None);
    let a = g.get_array("test.arr.u32").unwrap();
    assert_eq!(a.get_u32(2), Some(u32::MAX));
    assert_eq!(a.get_i32(2), None);
    let a = g.get_array("test.arr.f32").unwrap();
    assert_eq!(a.get_f32(1), Some(-1.25));
    assert_eq!(a.get_i32(1), None);
    let a = g.get_array("test.arr.u64").unwrap();
    assert_eq!(a.get(1), Some(Value::U64(u64::MAX)));
    assert_eq!(a.get_u32(1), None);
    let s = g.get_strings("test.arr.string").unwrap();
    assert_eq!(s.get(1), Some(""));
    assert_eq!(s.position("\u{2581}b\u{e9}"), Some(2));
    assert_eq!(s.position("zzz"), None);
    assert_eq!(s.into_iter().count(), 5);
    assert_eq!(
        g.get_array("test.arr.string").unwrap().get(3),
        Some(Value::String("[CLS]"))
    );

    // model id and CRC stored by the Python writer match the data.
    assert_eq!(g.stored_model_id(), Some(g.compute_model_id().as_str()));
    assert_eq!(g.model_id(), g.compute_model_id());
    assert_eq!(g.verify_crc(), Ok(()));
}

#[test]
fn bert_mini_llama_cpp_conventions() {
    let bytes = fixture("bert_mini.gguf");
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.get(KEY_ALIGNMENT), None);
    assert_eq!(g.alignment(), DEFAULT_ALIGNMENT);
    assert_eq!(g.get_str(KEY_ARCHITECTURE), Ok(ARCH_BERT));
    assert_eq!(g.get_str(KEY_TYPE), Ok(TYPE_MODEL));
    assert_eq!(g.get_u32(KEY_BERT_BLOCK_COUNT), Ok(1));
    assert_eq!(g.get_u32(KEY_BERT_CONTEXT_LENGTH), Ok(8));
    assert_eq!(g.get_u32(KEY_BERT_EMBEDDING_LENGTH), Ok(32));
    assert_eq!(g.get_u32(KEY_BERT_FEED_FORWARD_LENGTH), Ok(64));
    assert_eq!(g.get_u32(KEY_BERT_HEAD_COUNT), Ok(2));
    assert_eq!(g.get_u32(KEY_BERT_POOLING_TYPE), Ok(POOLING_MEAN));
    assert_eq!(
        g.get("bert.attention.layer_norm_epsilon")
            .map(|v| v.value_type()),
        Some(ValueType::F32)
    );
    assert_eq!(g.get_f32(KEY_BERT_LAYER_NORM_EPSILON), Ok(1e-12f32));
    assert_eq!(g.get_bool(KEY_BERT_CAUSAL), Ok(false));
    assert_eq!(g.get_str(KEY_TOKENIZER_MODEL), Ok(TOKENIZER_MODEL_BERT));
    assert_eq!(g.get_u32(KEY_TOKENIZER_BOS_ID), Ok(2));
    assert_eq!(g.get_u32(KEY_TOKENIZER_EOS_ID), Ok(3));
    assert_eq!(g.get_u32(KEY_TOKENIZER_SEP_ID), Ok(3));
    assert_eq!(g.get_u32(KEY_TOKENIZER_UNK_ID), Ok(1));
    assert_eq!(g.get_u32(KEY_TOKENIZER_PAD_ID), Ok(0));
    assert_eq!(g.get_u32(KEY_TOKENIZER_MASK_ID), Ok(4));
    assert_eq!(
        g.get_u32(KEY_TOKENIZER_CLS_ID),
        Err(Error::MissingKey {
            key: KeyName(KEY_TOKENIZER_CLS_ID)
        })
    );
    assert_eq!(g.get_bool(KEY_TOKENIZER_ADD_BOS), Ok(true));
    assert_eq!(g.get_bool(KEY_TOKENIZER_ADD_EOS), Ok(true));

    let tokens = g.get_strings(KEY_TOKENIZER_TOKENS).unwrap();
    let types = g.get_array(KEY_TOKENIZER_TOKEN_TYPE).unwrap();
    assert_eq!(types.element_type(), ValueType::I32);
    assert_eq!(tokens.len(), types.len());
    let hello = format!("{PHANTOM_SPACE}hello");
    let mut locators = Vec::new();
    for (id, (loc, tok)) in tokens.iter().enumerate() {
        locators.push((loc, tok));
        let ty = types.get_i32(id).unwrap();
        if tok.starts_with('[') && tok.ends_with(']') {
            assert!(
                ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_UNKNOWN,
                "{tok}"
            );
        } else {
            assert_eq!(ty, TOKEN_TYPE_NORMAL, "{tok}");
        }
    }
    assert_eq!(tokens.position(&hello), Some(6));
    assert_eq!(tokens.position("ing"), Some(8), "continuation lost its ##");
    assert_eq!(tokens.position("#"), Some(11));
    for (loc, tok) in locators.iter().rev() {
        assert_eq!(tokens.str_at(*loc), Some(*tok));
    }
    // A locator in the middle of an element never panics.
    for (loc, _) in &locators {
        for d in 1..8 {
            let _ = tokens.str_at(loc + d);
        }
    }

    let name = block_tensor_name(0, LAYER_ATTN_Q, SUFFIX_WEIGHT).unwrap();
    assert_eq!(name.as_str(), "blk.0.attn_q.weight");
    let q = g.require_tensor(&name).unwrap();
    assert_eq!(q.ggml_type(), TensorType::F16);
    assert_eq!(q.shape(), &[32, 32]);
    let emb = g.require_tensor(TENSOR_TOKEN_EMBD).unwrap();
    assert_eq!(emb.ggml_type(), TensorType::Q8_0);
    assert_eq!(emb.shape(), &[12, 32], "(vocab, hidden)");
    assert_eq!(emb.ggml_dims(), [32, 12, 1, 1]);
    assert_eq!(emb.row_len(), 32);
    assert_eq!(emb.data().len(), 12 * Q8_0_BLOCK_BYTES);
    for n in [
        TENSOR_TOKEN_TYPES,
        TENSOR_POSITION_EMBD,
        TENSOR_TOKEN_EMBD_NORM_WEIGHT,
        TENSOR_TOKEN_EMBD_NORM_BIAS,
    ] {
        assert!(g.find_tensor(n).is_some(), "{n}");
    }

    // No riffle.model_id: the id is computed from the data span.
    assert_eq!(g.stored_model_id(), None);
    assert_eq!(g.model_id(), g.compute_model_id());
    assert_eq!(
        g.verify_crc(),
        Err(Error::MissingKey {
            key: KeyName(KEY_DATA_CRC32)
        })
    );
}

#[test]
fn adapter_binds_to_base_and_crc_is_checked() {
    let base_bytes = fixture("mlp_base.gguf");
    let base = Gguf::parse(&base_bytes).unwrap();
    let stored = base.stored_model_id().unwrap();
    assert_eq!(stored, base.compute_model_id().as_str());
    assert_eq!(base.get_u32(KEY_MLP_LAYER_COUNT), Ok(2));
    assert_eq!(base.get_str(KEY_MLP_ACTIVATION), Ok(ACTIVATION_RELU));
    assert_eq!(base.get_u32(KEY_MLP_INPUT_LENGTH), Ok(4));
    assert_eq!(base.get_strings(KEY_LABELS).unwrap().get(1), Some("pos"));
    for layer in 0..2 {
        for suffix in [SUFFIX_WEIGHT, SUFFIX_BIAS] {
            assert!(base
                .find_tensor(&mlp_tensor_name(layer, suffix).unwrap())
                .is_some());
        }
    }

    let mut bytes = fixture("mlp_adapter.gguf");
    let ad = Gguf::parse(&bytes).unwrap();
    assert_eq!(ad.get_str(KEY_TYPE), Ok(TYPE_ADAPTER));
    assert_eq!(ad.get_str(KEY_ADAPTER_TYPE), Ok(ADAPTER_TYPE_ORTHOGONAL));
    assert_eq!(ad.get_str(KEY_ORTHOGONAL_METHOD), Ok(METHOD_GSOFT));
    assert_eq!(ad.get_str(KEY_ORTHOGONAL_PERMUTATION), Ok(PERMUTATION_GS));
    assert_eq!(ad.get_u32(KEY_ORTHOGONAL_BLOCK_SIZE), Ok(2));
    assert_eq!(ad.get_u32(KEY_ORTHOGONAL_FACTOR_COUNT), Ok(2));
    assert_eq!(ad.get_str(KEY_TASK_NAME), Ok("sentiment"));
    assert_eq!(
        ad.get_strings(KEY_ADAPTER_LABELS).unwrap().get(0),
        Some("negative")
    );
    assert_eq!(ad.get_str(KEY_BASE_MODEL_ID), Ok(stored));
    let w = mlp_tensor_name(0, SUFFIX_WEIGHT).unwrap();
    assert!(ad
        .find_tensor(&oft_factor_name(&w, false, 1).unwrap())
        .is_some());
    assert_eq!(
        oft_factor_name(&w, true, 0).unwrap().as_str(),
        "layers.0.weight.oft_out.0"
    );
    assert!(ad.find_tensor(&oft_scale_name(&w).unwrap()).is_some());
    assert_eq!(ad.verify_crc(), Ok(()));
    let stored_crc = ad.get_u32(KEY_DATA_CRC32).unwrap();
    let data_offset = ad.data_offset();
    let span_len = ad.data_span().len();

    // Any change inside the data span is caught; trailing padding is not covered.
    for pos in [
        data_offset,
        data_offset + span_len / 2,
        data_offset + span_len - 1,
    ] {
        bytes[pos] ^= 0x10;
        let g = Gguf::parse(&bytes).unwrap();
        match g.verify_crc() {
            Err(Error::CrcMismatch { stored, computed }) => {
                assert_eq!(stored, stored_crc);
                assert_eq!(computed, crc32(g.data_span()));
            }
            other => panic!("flip at {pos}: {other:?}"),
        }
        bytes[pos] ^= 0x10;
    }
    if data_offset + span_len < bytes.len() {
        bytes[data_offset + span_len] ^= 0xff;
        assert_eq!(Gguf::parse(&bytes).unwrap().verify_crc(), Ok(()));
    }
}

#[test]
fn name_builders_report_overflow() {
    let long = "x".repeat(TENSOR_NAME_CAPACITY);
    assert_eq!(oft_scale_name(&long), None);
    assert_eq!(
        block_tensor_name(u32::MAX, LAYER_LAYER_OUTPUT_NORM, SUFFIX_BIAS)
            .unwrap()
            .as_str(),
        "blk.4294967295.layer_output_norm.bias"
    );
}

#[test]
fn crc32_vectors() {
    assert_eq!(crc32(b""), 0);
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    assert_eq!(crc32(b"abc"), 0x3524_41c2);
    assert_eq!(
        crc32(b"The quick brown fox jumps over the lazy dog"),
        0x414f_a339
    );
    // Streaming in uneven pieces gives the same value.
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
    let mut c = Crc32::new();
    for piece in data.chunks(37) {
        c.update(piece);
    }
    assert_eq!(c.finish(), crc32(&data));
    assert_eq!(Crc32::default().finish(), 0);
}

#[test]
fn sha256_vectors() {
    let hex = |d: [u8; 32]| hex_lower(&d).to_string();
    assert_eq!(
        hex(sha256(b"")),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        hex(sha256(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        hex(sha256(
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
        )),
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    );
    assert_eq!(
        hex(sha256(
            b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"
        )),
        "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"
    );
    let million = vec![b'a'; 1_000_000];
    assert_eq!(
        hex(sha256(&million)),
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
    );
    // Streaming in pieces of every awkward size gives the same digest.
    for piece in [1, 3, 55, 63, 64, 65, 1000] {
        let mut h = Sha256::new();
        for chunk in million[..10_000].chunks(piece) {
            h.update(chunk);
        }
        assert_eq!(
            h.finalize(),
            sha256(&million[..10_000]),
            "pieces of {piece}"
        );
    }
    assert_eq!(Sha256::default().finalize(), sha256(b""));
}

#[test]
fn hand_built_file_with_every_tensor_type() {
    // BF16 and a rank-0 scalar, which the Python writer does not produce.
    let bf16: Vec<u8> = [1.0f32, -2.5, 3.0e-3]
        .iter()
        .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
        .collect();
    let f16: Vec<u8> = [0x3c00u16, 0xc000, 0x3555]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mut q8 = Vec::new();
    q8.extend(0x3800u16.to_le_bytes()); // scale 0.5
    q8.extend((0..32).map(|i| (i as i8 - 16) as u8));
    let bytes = Builder::new()
        .kv_str(KEY_ARCHITECTURE, "mlp")
        .tensor("bf16", &[3], TensorType::BF16.ggml_code(), &bf16)
        .tensor("f16", &[3], TensorType::F16.ggml_code(), &f16)
        .tensor("q8", &[32], TensorType::Q8_0.ggml_code(), &q8)
        .f32_tensor("scalar", &[], &[42.0])
        .tensor(
            "i32",
            &[2],
            TensorType::I32.ggml_code(),
            &[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
        )
        .tensor("empty", &[0, 7], 0, &[])
        .build();
    let g = Gguf::parse(&bytes).unwrap();
    let mut out = [0f32; 3];
    g.require_tensor("bf16")
        .unwrap()
        .decode_f32(0, &mut out)
        .unwrap();
    assert_eq!(
        out,
        [1.0, -2.5, f32::from_bits((3.0e-3f32.to_bits() >> 16) << 16)]
    );
    g.require_tensor("f16")
        .unwrap()
        .decode_f32(0, &mut out)
        .unwrap();
    assert_eq!(out, [1.0, -2.0, 0.333_251_95]);
    let q = g.require_tensor("q8").unwrap();
    let mut all = [0f32; 32];
    q.decode_f32(0, &mut all).unwrap();
    for (i, v) in all.iter().enumerate() {
        assert_eq!(*v, 0.5 * (i as f32 - 16.0));
    }
    let s = g.require_tensor("scalar").unwrap();
    assert_eq!(
        (
            s.rank(),
            s.shape(),
            s.element_count(),
            s.row_len(),
            s.row_count()
        ),
        (0, &[][..], 1, 1, 1)
    );
    assert_eq!(s.get_f32(0), Some(42.0));
    let i = g.require_tensor("i32").unwrap();
    assert_eq!(
        (i.get_i32(0), i.get_i32(1), i.get_i32(2)),
        (Some(1), Some(-1), None)
    );
    assert_eq!(i.get_f32(0), None);
    let e = g.require_tensor("empty").unwrap();
    assert_eq!(
        (e.shape(), e.element_count(), e.data().len(), e.row_count()),
        (&[7, 0][..], 0, 0, 0)
    );
    e.decode_f32(0, &mut []).unwrap();
    // The span ends at the end of the last-ending tensor ("empty" ends where it starts).
    let end = g
        .tensors()
        .map(|t| g.data_offset() + t.offset() as usize + t.data().len())
        .max()
        .unwrap();
    assert_eq!(g.data_span().len(), end - g.data_offset());
}

#[test]
fn empty_file_and_empty_arrays() {
    let bytes = Builder::new().build();
    assert_eq!(bytes.len(), 32);
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(
        (g.kv_count(), g.tensor_count(), g.data_span().len()),
        (0, 0, 0)
    );
    assert_eq!(g.metadata().count(), 0);
    assert_eq!(g.tensors().count(), 0);
    assert_eq!(
        g.compute_model_id().as_str(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    // Without padding after the header too.
    assert!(Gguf::parse(&bytes[..24]).is_ok());

    let mut empty_u32 = Vec::new();
    empty_u32.extend(4u32.to_le_bytes());
    empty_u32.extend(0u64.to_le_bytes());
    let bytes = Builder::new()
        .kv_raw(b"a", 9, &empty_u32)
        .kv_strings("s", &[])
        .build();
    let g = Gguf::parse(&bytes).unwrap();
    let a = g.get_array("a").unwrap();
    assert!(a.is_empty() && a.element_type() == ValueType::U32 && a.get(0).is_none());
    assert_eq!(a.as_le_bytes(), Some(&[][..]));
    let s = g.get_strings("s").unwrap();
    assert!(s.is_empty() && s.iter().next().is_none());
}

#[test]
fn bert_sized_vocabulary_by_locator() {
    // 30,522 tokens like all-MiniLM-L6-v2's, then keys stored after the array.
    let tokens: Vec<String> = (0..30_522)
        .map(|i| match i {
            0 => "[PAD]".to_string(),
            i if i % 3 == 0 => format!("{i}"),
            i => format!("{PHANTOM_SPACE}w{i}"),
        })
        .collect();
    let refs: Vec<&[u8]> = tokens.iter().map(|t| t.as_bytes()).collect();
    let bytes = Builder::new()
        .kv_str(KEY_TOKENIZER_MODEL, TOKENIZER_MODEL_BERT)
        .kv_strings(KEY_TOKENIZER_TOKENS, &refs)
        .kv_u32(KEY_TOKENIZER_UNK_ID, 100)
        .build();
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.get_u32(KEY_TOKENIZER_UNK_ID), Ok(100));
    let vocab = g.get_strings(KEY_TOKENIZER_TOKENS).unwrap();
    assert_eq!(vocab.len(), tokens.len());
    let locators: Vec<u32> = vocab.iter().map(|(loc, _)| loc).collect();
    assert!(locators.windows(2).all(|w| w[0] < w[1]));
    for (i, loc) in locators.iter().enumerate().rev() {
        assert_eq!(vocab.str_at(*loc), Some(tokens[i].as_str()));
    }
}
