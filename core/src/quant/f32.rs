//! F32 tensors: little-endian `f32`, read at any alignment.

use super::le;

/// Widens `bytes` (4 per value) into `out`.
pub(super) fn decode(bytes: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = f32::from_le_bytes(le(c));
    }
}

/// Decodes `out.len()` values from `bytes` (4 each) for the kernels (same as `decode`,
/// inlined into them).
#[inline(always)]
pub(super) fn widen(bytes: &[u8], out: &mut [f32]) {
    decode(bytes, out)
}
