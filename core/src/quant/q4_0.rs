//! Q4_0: blocks of 32 values, an `f16` scale `d` then 16 bytes of 4-bit quants (byte
//! `j` holds value `j` in its low nibble and value `j + 16` in its high nibble);
//! value = `d * (q - 8)`.

use super::f16;

/// One stored Q4_0 block (18 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockQ4_0 {
    /// The scale, IEEE half bits.
    pub d: u16,
    /// The nibbles.
    pub qs: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<BlockQ4_0>() == 18);

impl BlockQ4_0 {
    /// Parses a block from its 18 stored bytes.
    pub fn from_bytes(b: &[u8; 18]) -> Self {
        let mut qs = [0u8; 16];
        qs.copy_from_slice(&b[2..]);
        BlockQ4_0 {
            d: u16::from_le_bytes([b[0], b[1]]),
            qs,
        }
    }
}

/// Reference decode of one block.
#[inline(always)]
pub(super) fn decode_block(b: &[u8; 18], out: &mut [f32; 32]) {
    let d = f16::read(b);
    let (lo, hi) = out.split_at_mut(16);
    for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[2..]) {
        *l = d * f32::from(i16::from(v & 0xf) - 8);
        *h = d * f32::from(i16::from(v >> 4) - 8);
    }
}

/// The block as `(d, m, q)` with value = `d * q + m` (here `m = 0`, `q` in -8..=7).
#[inline(always)]
pub(super) fn unpack(b: &[u8; 18], q: &mut [i8; 32]) -> (f32, f32) {
    let (lo, hi) = q.split_at_mut(16);
    for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[2..]) {
        *l = (v & 0xf) as i8 - 8;
        *h = (v >> 4) as i8 - 8;
    }
    (f16::read(b), 0.0)
}
