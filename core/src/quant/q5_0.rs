//! Q5_0: blocks of 32 values, an `f16` scale `d`, a little-endian `u32` of fifth bits
//! (bit `j` for value `j`), then 16 bytes of low nibbles laid out as in Q4_0;
//! value = `d * (q - 16)`.

use super::f16;

/// One stored Q5_0 block (22 bytes; the struct is packed because ggml's is: the `u32`
/// sits at byte 2).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockQ5_0 {
    /// The scale, IEEE half bits.
    pub d: u16,
    /// The fifth bits, as stored (little-endian `u32` bytes).
    pub qh: [u8; 4],
    /// The low nibbles.
    pub qs: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<BlockQ5_0>() == 22);

impl BlockQ5_0 {
    /// Parses a block from its 22 stored bytes.
    pub fn from_bytes(b: &[u8; 22]) -> Self {
        let mut qs = [0u8; 16];
        qs.copy_from_slice(&b[6..]);
        BlockQ5_0 {
            d: u16::from_le_bytes([b[0], b[1]]),
            qh: [b[2], b[3], b[4], b[5]],
            qs,
        }
    }
}

/// Reference decode of one block.
#[inline(always)]
pub(super) fn decode_block(b: &[u8; 22], out: &mut [f32; 32]) {
    let mut q = [0i8; 32];
    let (d, _) = unpack(b, &mut q);
    for (o, &q) in out.iter_mut().zip(&q) {
        *o = d * f32::from(q);
    }
}

/// The block as `(d, m, q)` with value = `d * q + m` (here `m = 0`, `q` in -16..=15).
#[inline(always)]
pub(super) fn unpack(b: &[u8; 22], q: &mut [i8; 32]) -> (f32, f32) {
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let (lo, hi) = q.split_at_mut(16);
    for (j, ((l, h), &v)) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[6..]).enumerate() {
        let h0 = ((qh >> j) & 1) as u8;
        let h1 = ((qh >> (j + 16)) & 1) as u8;
        *l = ((v & 0xf) | (h0 << 4)) as i8 - 16;
        *h = ((v >> 4) | (h1 << 4)) as i8 - 16;
    }
    (f16::read(b), 0.0)
}
