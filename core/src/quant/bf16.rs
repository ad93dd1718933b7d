//! BF16 tensors: the upper 16 bits of an `f32`, little-endian.

use super::le;

/// Widens `bytes` (2 per value) into `out` (exact).
#[cfg(feature = "bf16")]
pub(super) fn decode(bytes: &[u8], out: &mut [f32]) {
    widen(bytes, out)
}

/// [`decode`] for the kernels, inlined into them.
#[inline(always)]
pub(super) fn widen(bytes: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = f32::from_bits(u32::from(u16::from_le_bytes(le(c))) << 16);
    }
}
