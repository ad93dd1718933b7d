//! `Model::from_bytes` on arbitrary bytes; a model that loads must run on a zero input
//! (or a short token sequence), unmerged and merged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use riffle_core::runtime::Model;

fuzz_target!(|data: &[u8]| {
    match Model::from_bytes(data) {
        Ok(model) => riffle_fuzz::exercise_model(&model),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
