//! The GGUF reader on hostile input: every failure of `docs/format.md` is a typed
//! error, and no byte sequence makes it panic.

mod gguf_common;

use gguf_common::{fixture, vt, walk_everything, Builder, FIXTURES};
use proptest::prelude::*;
use riffle_core::gguf::*;
use riffle_core::Error;

/// End of the data span in the file: bytes past it are only trailing padding.
fn span_end(bytes: &[u8]) -> usize {
    let g = Gguf::parse(bytes).unwrap();
    g.data_offset() + g.data_span().len()
}

#[test]
fn truncation_at_every_offset_is_an_error() {
    for name in FIXTURES {
        let bytes = fixture(name);
        let full = Gguf::parse(&bytes).unwrap();
        let end = span_end(&bytes);
        for len in 0..end {
            let r = Gguf::parse(&bytes[..len]);
            assert!(r.is_err(), "{name}: prefix of {len} bytes parsed");
            match r {
                Err(Error::Truncated { offset }) => assert!(offset <= len as u64, "{name}: {len}"),
                Err(Error::TensorOutOfRange { .. }) => assert!(len > 24, "{name}: {len}"),
                Err(e) => panic!("{name}: prefix of {len}: unexpected {e:?}"),
                Ok(_) => unreachable!(),
            }
        }
        // Cutting only trailing padding changes nothing.
        for len in end..=bytes.len() {
            let g = Gguf::parse(&bytes[..len]).unwrap_or_else(|e| panic!("{name}: {len}: {e}"));
            assert_eq!(g.data_span(), full.data_span());
            assert_eq!(g.compute_data_crc32(), full.compute_data_crc32());
        }
    }
}

#[test]
fn bit_flips_in_header_metadata_and_tensor_table_never_panic() {
    for name in FIXTURES {
        let mut bytes = fixture(name);
        let header_end = Gguf::parse(&bytes).unwrap().data_offset();
        let (mut ok, mut err) = (0, 0);
        for pos in 0..header_end {
            for bit in 0..8 {
                bytes[pos] ^= 1 << bit;
                match Gguf::parse(&bytes) {
                    Ok(g) => {
                        walk_everything(&g);
                        ok += 1;
                    }
                    Err(e) => {
                        assert!(!e.to_string().is_empty());
                        err += 1;
                    }
                }
                bytes[pos] ^= 1 << bit;
            }
        }
        // Both outcomes occur: flips in string contents stay valid, flips in lengths do not.
        assert!(ok > 0 && err > 0, "{name}: {ok} ok, {err} errors");
    }
}

#[test]
fn bad_magic_and_versions() {
    let good = Builder::new().build();
    assert!(Gguf::parse(&good).is_ok());
    let mut b = Builder::new();
    b.magic = *b"GGML";
    assert_eq!(Gguf::parse(&b.build()).unwrap_err(), Error::BadMagic);
    assert_eq!(
        Gguf::parse(b"").unwrap_err(),
        Error::Truncated { offset: 0 }
    );
    assert_eq!(
        Gguf::parse(b"GG").unwrap_err(),
        Error::Truncated { offset: 0 }
    );
    assert_eq!(Gguf::parse(b"PK").unwrap_err(), Error::BadMagic);
    assert_eq!(
        Gguf::parse(b"\x7fELF\x02\x01\x01").unwrap_err(),
        Error::BadMagic
    );
    for version in [0, 1, 2, 4, 0x0300_0000] {
        let mut b = Builder::new();
        b.version = version;
        assert_eq!(
            Gguf::parse(&b.build()).unwrap_err(),
            Error::UnsupportedVersion(version)
        );
    }
    assert_eq!(
        Gguf::parse(b"GGUF\x03\x00").unwrap_err(),
        Error::Truncated { offset: 4 }
    );
}

#[test]
fn counts_over_the_limits() {
    let mut b = Builder::new();
    b.tensor_count_override = Some(MAX_TENSORS + 1);
    assert_eq!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::LimitExceeded { offset: 8 }
    );
    let mut b = Builder::new();
    b.kv_count_override = Some(u64::MAX);
    assert_eq!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::LimitExceeded { offset: 16 }
    );
    // Within the limits but more than the file holds: truncated, quickly.
    let mut b = Builder::new();
    b.kv_count_override = Some(MAX_KV);
    assert!(matches!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::Truncated { .. }
    ));
    let mut b = Builder::new();
    b.tensor_count_override = Some(MAX_TENSORS);
    assert!(matches!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::Truncated { .. }
    ));
}

#[test]
fn huge_string_lengths() {
    // A key length far beyond the limit.
    let mut f = Builder::new().build()[..24].to_vec();
    f[16] = 1; // one key/value pair
    f.extend(u64::MAX.to_le_bytes());
    f.extend(b"general.architecture");
    assert_eq!(
        Gguf::parse(&f).unwrap_err(),
        Error::LimitExceeded { offset: 24 }
    );
    // A value length within the limit but longer than the file.
    let mut v = Vec::new();
    v.extend(1000u64.to_le_bytes());
    v.extend(b"short");
    let bytes = Builder::new().kv_raw(b"k", vt::STRING, &v).build();
    let value_at = 24 + 8 + 1 + 4;
    assert_eq!(
        Gguf::parse(&bytes).unwrap_err(),
        Error::Truncated { offset: value_at }
    );
    // A value length beyond the limit.
    let mut v = Vec::new();
    v.extend((MAX_STRING_LEN + 1).to_le_bytes());
    let bytes = Builder::new().kv_raw(b"k", vt::STRING, &v).build();
    assert_eq!(
        Gguf::parse(&bytes).unwrap_err(),
        Error::LimitExceeded { offset: value_at }
    );
    // A string-array element longer than the file.
    let bytes = Builder::new().kv_strings("k", &[b"ok", b"fine"]).build();
    let mut bad = bytes.clone();
    let second = value_at as usize + 4 + 8 + 8 + 2;
    bad[second..second + 8].copy_from_slice(&(1u64 << 20).to_le_bytes());
    assert_eq!(
        Gguf::parse(&bad).unwrap_err(),
        Error::Truncated {
            offset: second as u64
        }
    );
    // A tensor name longer than the file.
    let mut b = Builder::new();
    b.tensor_info(b"w", &[1], 0, 0);
    let mut f = b.build();
    f[24..32].copy_from_slice(&60_000u64.to_le_bytes());
    assert_eq!(
        Gguf::parse(&f).unwrap_err(),
        Error::Truncated { offset: 24 }
    );
}

#[test]
fn array_limits_and_nesting() {
    let arr = |elem: u32, len: u64| {
        let mut v = Vec::new();
        v.extend(elem.to_le_bytes());
        v.extend(len.to_le_bytes());
        v
    };
    let value_at = 24 + 8 + 1 + 4;
    let bytes = Builder::new()
        .kv_raw(b"a", vt::ARRAY, &arr(vt::U64, MAX_ARRAY_LEN + 1))
        .build();
    assert_eq!(
        Gguf::parse(&bytes).unwrap_err(),
        Error::LimitExceeded {
            offset: value_at + 4
        }
    );
    let bytes = Builder::new()
        .kv_raw(b"a", vt::ARRAY, &arr(vt::U64, MAX_ARRAY_LEN))
        .build();
    assert_eq!(
        Gguf::parse(&bytes).unwrap_err(),
        Error::Truncated { offset: value_at }
    );
    let bytes = Builder::new()
        .kv_raw(b"a", vt::ARRAY, &arr(vt::STRING, MAX_ARRAY_LEN))
        .build();
    assert!(matches!(
        Gguf::parse(&bytes).unwrap_err(),
        Error::Truncated { .. }
    ));
    // Arrays of arrays are refused (one level of nesting).
    let mut nested = arr(vt::ARRAY, 1);
    nested.extend(arr(vt::U8, 1));
    nested.push(7);
    let bytes = Builder::new().kv_raw(b"a", vt::ARRAY, &nested).build();
    assert_eq!(
        Gguf::parse(&bytes).unwrap_err(),
        Error::LimitExceeded { offset: value_at }
    );
    // Unknown value types, as a value and as an array element.
    let bytes = Builder::new().kv_raw(b"a", 13, &[0; 8]).build();
    assert_eq!(
        Gguf::parse(&bytes).unwrap_err(),
        Error::UnknownValueType(13)
    );
    let bytes = Builder::new()
        .kv_raw(b"a", vt::ARRAY, &arr(u32::MAX, 0))
        .build();
    assert_eq!(
        Gguf::parse(&bytes).unwrap_err(),
        Error::UnknownValueType(u32::MAX)
    );
}

#[test]
fn invalid_utf8_everywhere() {
    let key_at = 24;
    let bytes = Builder::new().kv_raw(b"k\xff", vt::U8, &[1]).build();
    assert_eq!(
        Gguf::parse(&bytes).unwrap_err(),
        Error::InvalidUtf8 { offset: key_at }
    );
    let mut v = Vec::new();
    gguf_common::gguf_string(&mut v, b"caf\xc3");
    let bytes = Builder::new().kv_raw(b"k", vt::STRING, &v).build();
    assert_eq!(
        Gguf::parse(&bytes).unwrap_err(),
        Error::InvalidUtf8 { offset: 24 + 9 + 4 }
    );
    let bytes = Builder::new()
        .kv_strings("k", &[b"fine", b"\xed\xa0\x80"])
        .build();
    let second = 24 + 9 + 4 + 4 + 8 + 12;
    assert_eq!(
        Gguf::parse(&bytes).unwrap_err(),
        Error::InvalidUtf8 { offset: second }
    );
    let mut b = Builder::new();
    b.tensor_info(b"w\x80", &[1], 0, 0);
    b.data_bytes(&[0; 4]);
    assert_eq!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::InvalidUtf8 { offset: 24 }
    );
}

#[test]
fn alignment_key() {
    for (a, ok) in [
        (1u32, true),
        (8, true),
        (64, true),
        (4096, true),
        (0, false),
        (48, false),
        (u32::MAX, false),
    ] {
        let mut b = Builder::new();
        b.kv_u32(KEY_ALIGNMENT, a);
        if ok {
            b.alignment = a as usize;
            b.f32_tensor("x", &[2], &[1.0, 2.0])
                .f32_tensor("y", &[1], &[3.0]);
        }
        let bytes = b.build();
        let r = Gguf::parse(&bytes);
        if ok {
            let g = r.unwrap();
            assert_eq!(g.alignment(), a);
            assert_eq!(g.data_offset() % a as usize, 0);
            assert_eq!(g.require_tensor("y").unwrap().get_f32(0), Some(3.0));
        } else {
            assert_eq!(r.unwrap_err(), Error::BadAlignment(a));
        }
    }
    let bytes = Builder::new()
        .kv_raw(KEY_ALIGNMENT.as_bytes(), vt::U64, &64u64.to_le_bytes())
        .build();
    assert_eq!(Gguf::parse(&bytes).unwrap_err(), Error::WrongValueType);
    let bytes = Builder::new().kv_str(KEY_ALIGNMENT, "32").build();
    assert_eq!(Gguf::parse(&bytes).unwrap_err(), Error::WrongValueType);
}

#[test]
fn tensor_placement() {
    // An aligned offset past the end of the file.
    let mut b = Builder::new();
    b.f32_tensor("a", &[8], &[0.0; 8]);
    b.tensor_info(b"b", &[8], 0, 1 << 20);
    assert_eq!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::TensorOutOfRange { tensor: 1 }
    );
    // Data that starts inside the file and runs past its end.
    let mut b = Builder::new();
    b.f32_tensor("a", &[8], &[0.0; 8]);
    b.tensor_info(b"b", &[8], 0, 0);
    let f = b.build();
    assert!(Gguf::parse(&f).is_ok());
    let mut b = Builder::new();
    b.f32_tensor("a", &[8], &[0.0; 8]);
    b.tensor_info(b"b", &[9], 0, 0);
    assert_eq!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::TensorOutOfRange { tensor: 1 }
    );
    // Offsets that would overflow.
    for off in [u64::MAX - 31, 1 << 63] {
        let mut b = Builder::new();
        b.tensor_info(b"a", &[1], 0, off);
        assert_eq!(
            Gguf::parse(&b.build()).unwrap_err(),
            Error::TensorOutOfRange { tensor: 0 }
        );
    }
    // Unaligned offsets.
    let mut b = Builder::new();
    b.f32_tensor("a", &[16], &[0.0; 16]);
    b.tensor_info(b"b", &[1], 0, 4);
    assert_eq!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::Misaligned { tensor: 1 }
    );
    let mut b = Builder::new();
    b.tensor_info(b"a", &[1], 0, 1);
    b.data_bytes(&[0; 64]);
    assert_eq!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::Misaligned { tensor: 0 }
    );
}

#[test]
fn tensor_infos() {
    // Rank over 4.
    let mut b = Builder::new();
    b.tensor_info(b"a", &[1, 1, 1, 1, 1], 0, 0)
        .data_bytes(&[0; 4]);
    assert_eq!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::LimitExceeded { offset: 24 + 9 }
    );
    // Element count overflow.
    let mut b = Builder::new();
    b.tensor_info(b"a", &[1 << 32, 1 << 32], 0, 0)
        .data_bytes(&[0; 4]);
    assert_eq!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::LimitExceeded { offset: 24 + 13 }
    );
    // Byte size overflow without element overflow.
    let mut b = Builder::new();
    b.tensor_info(b"a", &[1 << 62, 2], 0, 0).data_bytes(&[0; 4]);
    assert_eq!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::TensorOutOfRange { tensor: 0 }
    );
    // Unknown and unsupported ggml types (Q5_1 = 7, Q2_K = 10, way out = 1000).
    for ty in [7u32, 10, 1000] {
        let mut b = Builder::new();
        b.f32_tensor("ok", &[1], &[1.0]);
        b.tensor_info(b"a", &[32], ty, 0).data_bytes(&[0; 64]);
        assert_eq!(
            Gguf::parse(&b.build()).unwrap_err(),
            Error::UnknownTensorType {
                tensor: 1,
                ggml_type: ty
            }
        );
    }
    // Q8_0 rows must be whole blocks.
    let mut b = Builder::new();
    b.tensor_info(b"q", &[16, 2], TensorType::Q8_0.ggml_code(), 0)
        .data_bytes(&[0; 68]);
    assert_eq!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::ShapeMismatch { tensor: 0 }
    );
    let mut b = Builder::new();
    b.tensor_info(b"q", &[], TensorType::Q8_0.ggml_code(), 0)
        .data_bytes(&[0; 34]);
    assert_eq!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::ShapeMismatch { tensor: 0 }
    );
    let mut b = Builder::new();
    b.tensor_info(b"q", &[32, 2], TensorType::Q8_0.ggml_code(), 0)
        .data_bytes(&[0; 68]);
    assert!(Gguf::parse(&b.build()).is_ok());
    // So must the other block types' (Q4_K: blocks of 256 in 144 bytes).
    let mut b = Builder::new();
    b.tensor_info(b"k", &[128, 2], TensorType::Q4_K.ggml_code(), 0)
        .data_bytes(&[0; 144]);
    assert_eq!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::ShapeMismatch { tensor: 0 }
    );
    let mut b = Builder::new();
    b.tensor_info(b"k", &[256, 2], TensorType::Q4_K.ggml_code(), 0)
        .data_bytes(&[0; 288]);
    assert!(Gguf::parse(&b.build()).is_ok());
}

#[test]
fn duplicate_names() {
    let mut b = Builder::new();
    b.f32_tensor("w", &[1], &[1.0])
        .f32_tensor("v", &[1], &[2.0])
        .f32_tensor("w", &[1], &[3.0]);
    assert_eq!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::DuplicateName { index: 2 }
    );
    let bytes = Builder::new()
        .kv_u32("a", 1)
        .kv_str("b", "x")
        .kv_u32("a", 2)
        .build();
    assert_eq!(
        Gguf::parse(&bytes).unwrap_err(),
        Error::DuplicateName { index: 2 }
    );
    // Equal lengths, different names; prefixes; empty names.
    let mut b = Builder::new();
    b.f32_tensor("ab", &[1], &[1.0])
        .f32_tensor("ba", &[1], &[1.0])
        .f32_tensor("a", &[1], &[1.0]);
    b.f32_tensor("", &[1], &[1.0]);
    assert!(Gguf::parse(&b.build()).is_ok());
    b.f32_tensor("", &[1], &[1.0]);
    assert_eq!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::DuplicateName { index: 4 }
    );
    // Duplicate keys after a string array (the duplicate scan skips over it).
    let bytes = Builder::new()
        .kv_strings("s", &[b"x", b"y"])
        .kv_u32("k", 1)
        .kv_u32("k", 1)
        .build();
    assert_eq!(
        Gguf::parse(&bytes).unwrap_err(),
        Error::DuplicateName { index: 2 }
    );
}

#[test]
fn many_names_stay_exact() {
    // 3000 distinct names: more than one chunk of the duplicate index on any target.
    let mut b = Builder::new();
    for i in 0..3000 {
        b.f32_tensor(&format!("blk.{i}.w"), &[1], &[i as f32]);
    }
    let bytes = b.build();
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.tensor_count(), 3000);
    assert_eq!(
        g.find_tensor("blk.2999.w").unwrap().get_f32(0),
        Some(2999.0)
    );
    b.f32_tensor("blk.1234.w", &[1], &[0.0]);
    assert_eq!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::DuplicateName { index: 3000 }
    );
    let mut b = Builder::new();
    for i in 0..3000 {
        b.kv_u32(&format!("k.{i}"), i);
    }
    b.kv_u32("k.0", 0);
    assert_eq!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::DuplicateName { index: 3000 }
    );
    // The reported index is the smallest second occurrence, wherever the pairs lie:
    // one pair inside a chunk, one across chunks, the earlier one reported.
    for (early, late) in [(5usize, 2500usize), (1500, 1501), (2998, 2999)] {
        let mut b = Builder::new();
        for i in 0..3000 {
            let name = if i == late || i == 2900 && late < 2900 {
                format!("blk.{early}.w")
            } else {
                format!("blk.{i}.w")
            };
            b.f32_tensor(&name, &[1], &[0.0]);
        }
        assert_eq!(
            Gguf::parse(&b.build()).unwrap_err(),
            Error::DuplicateName { index: late as u32 },
            "{early} {late}"
        );
    }
}

/// Parsing stays near linear in the file: issue 23 measured 79 s for 65,000
/// tensors and 45 s for 8,000 keys after a 2,000,000-string array, both from
/// rescans of the table once per name. The bounds leave a slow CI machine 20x.
#[test]
fn many_names_parse_in_near_linear_time() {
    use std::time::{Duration, Instant};
    let mut b = Builder::new();
    for i in 0..65_000 {
        b.tensor_info(format!("t{i}").as_bytes(), &[1], 0, 0);
    }
    b.data_bytes(&[0; 4]);
    let bytes = b.build();
    let t = Instant::now();
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.tensor_count(), 65_000);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "65,000 tensors: {took:?}");

    let items: Vec<&[u8]> = vec![b"s"; 2_000_000];
    let mut b = Builder::new();
    b.kv_strings("big", &items);
    for i in 0..8_000 {
        b.kv_u32(&format!("k.{i}"), i);
    }
    let bytes = b.build();
    let t = Instant::now();
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.kv_count(), 8_001);
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "8,000 keys after a big array: {took:?}"
    );
}

#[test]
fn errors_display_without_panicking() {
    let errors = [
        Error::Truncated { offset: 3 },
        Error::BadMagic,
        Error::UnsupportedVersion(2),
        Error::UnknownValueType(13),
        Error::UnknownTensorType {
            tensor: 1,
            ggml_type: 2,
        },
        Error::LimitExceeded { offset: 8 },
        Error::InvalidUtf8 { offset: 24 },
        Error::TensorOutOfRange { tensor: 0 },
        Error::BadAlignment(48),
        Error::Misaligned { tensor: 0 },
        Error::DuplicateName { index: 2 },
        Error::CrcMismatch {
            stored: 1,
            computed: 2,
        },
    ];
    for e in errors {
        let s = e.to_string();
        assert!(!s.is_empty() && !s.ends_with('.'), "{s}");
    }
}

/// Applies one mutation to `bytes`.
fn mutate(bytes: &mut Vec<u8>, kind: u8, pos: usize, val: u64) {
    if bytes.is_empty() {
        return;
    }
    let pos = pos % bytes.len();
    match kind % 5 {
        0 => bytes[pos] = val as u8,
        1 => bytes.truncate(pos),
        2 => bytes.insert(pos, val as u8),
        3 => {
            // Overwrite a u64 field with an extreme or random value.
            let v = [0, 1, u64::MAX, 1 << 32, 1 << 63, val][val as usize % 6];
            let end = (pos + 8).min(bytes.len());
            let src = v.to_le_bytes();
            bytes[pos..end].copy_from_slice(&src[..end - pos]);
        }
        _ => {
            bytes.remove(pos);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512), with_header in any::<bool>()) {
        let mut bytes = Vec::new();
        if with_header {
            bytes.extend(b"GGUF");
            bytes.extend(3u32.to_le_bytes());
            bytes.extend(u64::from(body.first().copied().unwrap_or(0) % 4).to_le_bytes());
            bytes.extend(u64::from(body.get(1).copied().unwrap_or(0) % 4).to_le_bytes());
        }
        bytes.extend(&body);
        if let Ok(g) = Gguf::parse(&bytes) {
            walk_everything(&g);
        }
    }

    #[test]
    fn mutated_fixtures_never_panic(
        file in 0..FIXTURES.len(),
        edits in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u64>()), 1..6),
    ) {
        let mut bytes = fixture(FIXTURES[file]);
        for (kind, pos, val) in edits {
            mutate(&mut bytes, kind, pos, val);
        }
        if let Ok(g) = Gguf::parse(&bytes) {
            walk_everything(&g);
        }
    }
}
