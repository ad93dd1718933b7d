//! `BakedModel::open` on arbitrary bytes (the minimal firmware's reader of host-baked
//! blobs): a blob that opens must run the base and every adapter slot it activates on a
//! zero input, and every refusal must be a typed error with a message.
//!
//! The blob ends in a CRC-32 of everything before it, which random mutations almost never
//! keep valid. So for inputs whose first byte is odd the target drops that byte and
//! rewrites the CRC where the blob's stated length puts it, to reach the header and bounds
//! checks behind the CRC.
#![no_main]

use libfuzzer_sys::fuzz_target;
use riffle_core::checksum::crc32;
use riffle_core::runtime::baked::BakedModel;

fuzz_target!(|data: &[u8]| {
    let mut blob = data.to_vec();
    if let Some((&first, rest)) = data.split_first() {
        if first & 1 == 1 {
            blob = rest.to_vec();
            let stated = blob
                .get(8..12)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
            if let Some(end) = stated.filter(|&n| n >= 4 && n <= blob.len()) {
                let crc = crc32(&blob[..end - 4]);
                blob[end - 4..end].copy_from_slice(&crc.to_le_bytes());
            }
        }
    }
    let model = match BakedModel::open(&blob) {
        Ok(m) => m,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let input = vec![0.0f32; model.input_len()];
    let mut output = vec![0.0f32; model.output_len()];
    let mut arena = vec![0.0f32; model.arena_len()];
    if let Err(e) = model.run(None, &input, &mut output, &mut arena) {
        assert!(!e.to_string().is_empty());
    }
    for slot in 0..=model.adapter_count() {
        let Ok(n) = model.workspace_len(slot) else {
            assert_eq!(slot, model.adapter_count());
            continue;
        };
        let mut ws = vec![0.0f32; n];
        match model.activate(slot, &mut ws) {
            Ok(adapter) => {
                if let Err(e) = model.run(Some(&adapter), &input, &mut output, &mut arena) {
                    assert!(!e.to_string().is_empty());
                }
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
});
