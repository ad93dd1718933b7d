//! `Gguf::parse` on arbitrary bytes, then every accessor of what parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use riffle_core::gguf::Gguf;

fuzz_target!(|data: &[u8]| {
    match Gguf::parse(data) {
        Ok(g) => riffle_fuzz::walk_gguf(&g),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
