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

/// `x` rounded to the nearest IEEE half (ties to even), as the bits of the half:
/// magnitudes past the largest half (65504, rounding included) become infinities, NaNs
/// stay NaNs (quiet, the top mantissa bits kept), magnitudes below the smallest normal
/// half round to a subnormal or zero.
pub(crate) fn from_f32(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let a = bits & 0x7fff_ffff;
    if a >= 0x7f80_0000 {
        // Infinity, or a NaN kept quiet with its top mantissa bits.
        let nan = if a > 0x7f80_0000 {
            0x0200 | ((a >> 13) & 0x03ff) as u16
        } else {
            0
        };
        return sign | 0x7c00 | nan;
    }
    if a >= 0x4780_0000 {
        // 2^16 and up: past every half, rounding included.
        return sign | 0x7c00;
    }
    if a < 0x3880_0000 {
        // Below 2^-14: a multiple of 2^-24 (the subnormal step), rounded by the FPU when
        // added to 0.5 (whose last mantissa bit is worth 2^-24); 2^-14 itself comes out
        // as the smallest normal half, 0x0400.
        let r = f32::from_bits(a) + 0.5;
        return sign | (r.to_bits() - 0x3f00_0000) as u16;
    }
    // Normal: round the 23-bit mantissa to 10 bits (ties to even), then rebias the
    // exponent from 127 to 15; a carry out of the mantissa moves into the exponent
    // (65520 and up become the infinity 0x7c00).
    let odd = (a >> 13) & 1;
    let rounded = a + 0x0fff + odd - ((127 - 15) << 23);
    sign | (rounded >> 13) as u16
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
    fn floats_round_to_halves_as_the_half_crate_rounds_them() {
        use super::{from_f32, to_f32};
        let check = |x: f32| {
            let want = half::f16::from_f32(x).to_bits();
            let got = from_f32(x);
            if x.is_nan() {
                assert!(to_f32(got).is_nan(), "{x:e}: {got:#06x}");
            } else {
                assert_eq!(got, want, "{x:e}");
            }
        };
        // Every half exactly, each midpoint between neighbours (ties to even) and a float
        // either side of it.
        for h in (0..=u16::MAX).step_by(if cfg!(miri) { 997 } else { 1 }) {
            let x = to_f32(h);
            check(x);
            check(-x);
            if h & 0x7c00 != 0x7c00 && h < 0x7bff {
                let next = to_f32(h + 1);
                let mid = (f64::from(x) + f64::from(next)) / 2.0;
                let mid32 = mid as f32;
                check(mid32);
                check(f32::from_bits(mid32.to_bits() + 1));
                check(f32::from_bits(mid32.to_bits() - 1));
            }
        }
        // A sweep of float bit patterns, the edges and the overflow boundary.
        let step = if cfg!(miri) { 1 << 24 } else { 4099 };
        for bits in (0..=u32::MAX).step_by(step) {
            check(f32::from_bits(bits));
        }
        for x in [
            65504.0f32, 65519.99, 65520.0, 65536.0, 1e9, 6.1e-5, 5.96e-8, 2.98e-8, 2.99e-8,
        ] {
            check(x);
            check(-x);
        }
    }

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
