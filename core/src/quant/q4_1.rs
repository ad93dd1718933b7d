//! Q4_1: blocks of 32 values, an `f16` scale `d` and minimum `m`, then 16 bytes of
//! 4-bit quants laid out as in Q4_0; value = `d * q + m`.

use super::f16;

/// One stored Q4_1 block (20 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockQ4_1 {
    /// The scale, IEEE half bits.
    pub d: u16,
    /// The minimum (the value of quant 0), IEEE half bits.
    pub m: u16,
    /// The nibbles.
    pub qs: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<BlockQ4_1>() == 20);

impl BlockQ4_1 {
    /// Parses a block from its 20 stored bytes.
    pub fn from_bytes(b: &[u8; 20]) -> Self {
        let mut qs = [0u8; 16];
        qs.copy_from_slice(&b[4..]);
        BlockQ4_1 {
            d: u16::from_le_bytes([b[0], b[1]]),
            m: u16::from_le_bytes([b[2], b[3]]),
            qs,
        }
    }
}

/// Reference decode of one block.
#[inline(always)]
pub(super) fn decode_block(b: &[u8; 20], out: &mut [f32; 32]) {
    let d = f16::read(b);
    let m = f16::read(&b[2..]);
    let (lo, hi) = out.split_at_mut(16);
    for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[4..]) {
        *l = d * f32::from(v & 0xf) + m;
        *h = d * f32::from(v >> 4) + m;
    }
}

/// The block as `(d, m, q)` with value = `d * q + m` (`q` in 0..=15).
#[inline(always)]
pub(super) fn unpack(b: &[u8; 20], q: &mut [i8; 32]) -> (f32, f32) {
    let (lo, hi) = q.split_at_mut(16);
    for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[4..]) {
        *l = (v & 0xf) as i8;
        *h = (v >> 4) as i8;
    }
    (f16::read(b), f16::read(&b[2..]))
}
