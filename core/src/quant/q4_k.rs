//! Q4_K: super-blocks of 256 values in 8 sub-blocks of 32. An `f16` super-scale `d` and
//! super-minimum `dmin`, 12 bytes packing 8 six-bit scales `sc` and 8 six-bit minimums
//! `m`, then 128 bytes of 4-bit quants; value = `d * sc * q - dmin * m`. Bytes
//! `32 j .. 32 j + 32` of the quants hold sub-block `2 j` in their low nibbles and
//! sub-block `2 j + 1` in their high nibbles.

use super::f16;
use super::q8_k::KBlock;

/// One stored Q4_K super-block (144 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockQ4K {
    /// The super-scale, IEEE half bits.
    pub d: u16,
    /// The super-minimum, IEEE half bits.
    pub dmin: u16,
    /// Eight 6-bit scales and eight 6-bit minimums, packed.
    pub scales: [u8; 12],
    /// The nibbles.
    pub qs: [u8; 128],
}
const _: () = assert!(core::mem::size_of::<BlockQ4K>() == 144);

impl BlockQ4K {
    /// Parses a block from its 144 stored bytes.
    pub fn from_bytes(b: &[u8; 144]) -> Self {
        let mut scales = [0u8; 12];
        scales.copy_from_slice(&b[4..16]);
        let mut qs = [0u8; 128];
        qs.copy_from_slice(&b[16..]);
        BlockQ4K {
            d: u16::from_le_bytes([b[0], b[1]]),
            dmin: u16::from_le_bytes([b[2], b[3]]),
            scales,
            qs,
        }
    }
}

/// Scale and minimum of sub-block `j` (0..8) from the 12 packed bytes: sub-blocks 0..4
/// keep their 6 bits in the low bits of bytes `j` and `j + 4`; 4..8 split theirs between
/// a nibble of bytes 8..12 and the top two bits of bytes 0..8.
#[inline(always)]
pub(super) fn scale_min(j: usize, s: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Reference decode of one super-block.
pub(super) fn decode_block(b: &[u8; 144], out: &mut [f32; 256]) {
    let mut k = KBlock::default();
    unpack(b, &mut k);
    for (j, (o, q)) in out
        .chunks_exact_mut(16)
        .zip(k.q.chunks_exact(16))
        .enumerate()
    {
        let scale = k.d * f32::from(k.sc[j]);
        let min = k.dmin * f32::from(k.m[j]);
        for (o, &q) in o.iter_mut().zip(q) {
            *o = scale * f32::from(q) - min;
        }
    }
}

/// The super-block as integer quants with one scale and minimum per 16 values.
#[inline(always)]
pub(super) fn unpack(b: &[u8; 144], k: &mut KBlock) {
    k.d = f16::read(b);
    k.dmin = f16::read(&b[2..]);
    let mut s = [0u8; 12];
    s.copy_from_slice(&b[4..16]);
    for j in 0..8 {
        let (sc, m) = scale_min(j, &s);
        k.sc[2 * j] = sc as i8;
        k.sc[2 * j + 1] = sc as i8;
        k.m[2 * j] = m;
        k.m[2 * j + 1] = m;
    }
    for (q, qs) in k.q.chunks_exact_mut(64).zip(b[16..].chunks_exact(32)) {
        let (lo, hi) = q.split_at_mut(32);
        for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(qs) {
            *l = (v & 0xf) as i8;
            *h = (v >> 4) as i8;
        }
    }
}
