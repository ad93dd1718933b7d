//! Q8_0: blocks of 32 values, an `f16` scale `d` then 32 `i8` quants; value = `d * q`.

use super::f16;

/// One stored Q8_0 block (34 bytes, 2-byte aligned in memory but read from bytes at any
/// alignment: see [`BlockQ8_0::from_bytes`]).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockQ8_0 {
    /// The scale, IEEE half bits.
    pub d: u16,
    /// The quants.
    pub qs: [i8; 32],
}
const _: () = assert!(core::mem::size_of::<BlockQ8_0>() == 34);

impl BlockQ8_0 {
    /// Parses a block from its 34 stored bytes.
    pub fn from_bytes(b: &[u8; 34]) -> Self {
        let mut qs = [0i8; 32];
        for (q, &v) in qs.iter_mut().zip(&b[2..]) {
            *q = v as i8;
        }
        BlockQ8_0 {
            d: u16::from_le_bytes([b[0], b[1]]),
            qs,
        }
    }
}

/// Reference decode of one block.
#[inline(always)]
pub(super) fn decode_block(b: &[u8; 34], out: &mut [f32; 32]) {
    let d = f16::read(b);
    for (o, &q) in out.iter_mut().zip(&b[2..]) {
        *o = d * f32::from(q as i8);
    }
}

/// The block as `(d, m, q)` with value = `d * q + m` (here `m = 0`).
#[inline(always)]
pub(super) fn unpack(b: &[u8; 34], q: &mut [i8; 32]) -> (f32, f32) {
    for (q, &v) in q.iter_mut().zip(&b[2..]) {
        *q = v as i8;
    }
    (f16::read(b), 0.0)
}
