//! F16 tensors (IEEE half, little-endian) and the half-to-float conversion every block
//! type uses for its scales.

use super::le;

/// Widens `bytes` (2 per value) into `out` (exact; the `half` crate's conversion, the
/// smallest code for the firmware).
#[cfg(feature = "f16")]
pub(super) fn decode(bytes: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = half::f16::from_le_bytes(le(c)).to_f32();
    }
}

/// [`to_f32`] over a run, for the kernels: branch-free, so LLVM vectorises it.
#[inline(always)]
pub(super) fn widen(bytes: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = to_f32(u16::from_le_bytes(le(c)));
    }
}

/// The IEEE half with bits `h` as `f32`, exactly (subnormals, infinities and NaNs
/// included), without branches.
#[inline(always)]
pub(crate) fn to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let body = (h & 0x7fff) << 13; // exponent and mantissa moved into f32 position
    let exp = body & 0x0f80_0000;
    // Normal numbers: rebias the exponent from 15 to 127.
    let normal = body + ((127 - 15) << 23);
    // Infinity and NaN: all-ones exponent, mantissa kept.
    let special = body | 0x7f80_0000;
    // Zero and subnormals: m * 2^-24, computed as (2^-14 + m * 2^-24) - 2^-14.
    let sub = f32::from_bits(body + (113 << 23)) - f32::from_bits(113 << 23);
    let bits = if exp == 0x0f80_0000 {
        special
    } else if exp == 0 {
        sub.to_bits()
    } else {
        normal
    };
    f32::from_bits(bits | sign)
}

/// Reads the little-endian half at `b[0..2]` as `f32`.
#[cfg_attr(
    not(any(feature = "q4", feature = "q8_0", feature = "k-quants")),
    allow(dead_code)
)]
#[inline(always)]
pub(crate) fn read(b: &[u8]) -> f32 {
    to_f32(u16::from_le_bytes(le(b.get(..2).unwrap_or(&[0, 0]))))
}

#[cfg(all(test, feature = "f16"))]
mod tests {
    #[test]
    fn every_half_widens_as_the_half_crate_does() {
        for h in 0..=u16::MAX {
            let want = half::f16::from_bits(h).to_f32();
            let got = super::to_f32(h);
            if want.is_nan() {
                assert!(got.is_nan(), "{h:#06x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{h:#06x}");
            }
        }
    }
}
