//! Memory sized from file contents, checked before it is allocated.
//!
//! Every buffer whose size comes from a file (the arena, the merged weights, adapter
//! workspaces, key/value caches, decoded tensors) is allocated through [`zeroed`]: the
//! size is checked against [`MAX_BUFFER_BYTES`] and the allocation is fallible, so a
//! file that asks for more memory than riffle allows, or than the machine gives, is a
//! bad input (exit 2) and never an abort. docs/robustness.md states the limits.

use crate::fail::{bad, Result};

/// Largest single buffer riffle allocates for a file: 8 GiB. Far above what the models
/// riffle targets need (SmolLM2-135M merged in f32 is 0.54 GB; MiniLM's arena at its
/// full context of 512 tokens is about 10 MB).
pub const MAX_BUFFER_BYTES: u64 = 8 << 30;

/// The merged copy of a model's weights (f32) may be at most this many times the
/// model file: every supported type expands by less (F32 1x, F16 and BF16 2x, Q8_0
/// 3.8x, 4-bit types about 7x). Tensors that share one data range would count their
/// bytes once in the file but once each in the copy; the ratio bounds that.
pub const MAX_MERGED_PER_FILE_BYTE: u64 = 8;

/// A zero-filled buffer of `len` values, named `what` in the message (e.g.
/// `"model.gguf: the arena"`). Allocated zeroed by the allocator, so a large buffer's pages
/// come from the system as they are first written (a key/value cache for a whole context
/// holds memory only for the positions used).
///
/// # Errors
/// Exit 2 when `len` values exceed [`MAX_BUFFER_BYTES`] or the allocation fails.
pub fn zeroed<T: bytemuck::Zeroable>(len: usize, what: &str) -> Result<Vec<T>> {
    let bytes = check_elements::<T>(len, what)?;
    let buf = bytemuck::allocation::try_zeroed_slice_box::<T>(len).map_err(|()| {
        bad(
            what,
            format!("needs {}, which cannot be allocated", size(bytes, false)),
        )
    })?;
    Ok(buf.into_vec())
}

/// Checks that a buffer of `len` values is within [`MAX_BUFFER_BYTES`] without
/// allocating it (a buffer that grows later, up to `len`); its size in bytes.
///
/// # Errors
/// Exit 2 when `len` values exceed [`MAX_BUFFER_BYTES`].
pub fn check_elements<T>(len: usize, what: &str) -> Result<u64> {
    let bytes = (len as u64).saturating_mul(std::mem::size_of::<T>() as u64);
    if len == usize::MAX || bytes > MAX_BUFFER_BYTES {
        return Err(bad(
            what,
            format!(
                "needs {}, more than riffle's limit of {} for one buffer (corrupt or hostile dimensions?)",
                size(bytes, len == usize::MAX),
                size(MAX_BUFFER_BYTES, false)
            ),
        ));
    }
    Ok(bytes)
}

fn size(bytes: u64, overflow: bool) -> String {
    if overflow {
        "more memory than can be addressed".into()
    } else {
        format!("{:.1} GB ({bytes} bytes)", bytes as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_over_the_limit_are_bad_inputs() {
        assert_eq!(zeroed::<f32>(16, "x").unwrap(), vec![0.0; 16]);
        let e = zeroed::<f32>((MAX_BUFFER_BYTES / 4 + 1) as usize, "arena").unwrap_err();
        assert_eq!(e.code, crate::fail::EXIT_INPUT);
        assert!(
            e.message.starts_with("arena: needs 8.6 GB"),
            "{}",
            e.message
        );
        let e = zeroed::<f32>(usize::MAX, "arena").unwrap_err();
        assert!(e.message.contains("than can be addressed"), "{}", e.message);
    }
}
