//! `Adapter::from_bytes` on arbitrary bytes, then validation and preparation against the
//! committed digits MLP (and CNN) bases, and runs unmerged and merged.
//!
//! Inputs that fail only the CRC check are tried a second time with the CRC fixed, so
//! that mutated tensor data reaches validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use riffle_core::runtime::Adapter;
use riffle_core::Error;

fn one(bytes: &[u8]) -> Result<(), Error> {
    let adapter = Adapter::from_bytes(bytes)?;
    let _ = (
        adapter.method(),
        adapter.block_size(),
        adapter.factors(),
        adapter.permutation(),
    );
    let _ = (
        adapter.base_model_id(),
        adapter.task_name(),
        adapter.parameter_count(),
    );
    if let Some(labels) = adapter.labels() {
        assert_eq!(labels.iter().count(), labels.len());
    }
    riffle_fuzz::exercise_adapter(&riffle_fuzz::mlp().model, &adapter);
    riffle_fuzz::exercise_adapter(&riffle_fuzz::cnn().model, &adapter);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    if let Err(Error::CrcMismatch { .. }) = one(data) {
        if let Some(fixed) = riffle_fuzz::with_fixed_crc(data) {
            let _ = one(&fixed);
        }
    }
});
