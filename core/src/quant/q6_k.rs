//! Q6_K: super-blocks of 256 values in 16 sub-blocks of 16. 128 bytes of low nibbles
//! `ql`, 64 bytes of high bit pairs `qh`, 16 `i8` scales `sc`, then an `f16` super-scale
//! `d`; value = `d * sc * (q - 32)` with `q` the 6-bit quant. Each half of 128 values
//! uses 64 bytes of `ql` and 32 of `qh`: value `32 k + l` (k in 0..4, l in 0..32) takes
//! its low nibble from `ql[l + 32 (k & 1)]` (low nibble for k < 2, high otherwise) and
//! its high bits from bits `2 k, 2 k + 1` of `qh[l]`.

use super::f16;
use super::q8_k::KBlock;

/// One stored Q6_K super-block (210 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockQ6K {
    /// Low 4 bits of the quants.
    pub ql: [u8; 128],
    /// High 2 bits of the quants.
    pub qh: [u8; 64],
    /// Sub-block scales.
    pub scales: [i8; 16],
    /// The super-scale, IEEE half bits.
    pub d: u16,
}
const _: () = assert!(core::mem::size_of::<BlockQ6K>() == 210);

impl BlockQ6K {
    /// Parses a block from its 210 stored bytes.
    pub fn from_bytes(b: &[u8; 210]) -> Self {
        let mut ql = [0u8; 128];
        ql.copy_from_slice(&b[..128]);
        let mut qh = [0u8; 64];
        qh.copy_from_slice(&b[128..192]);
        let mut scales = [0i8; 16];
        for (s, &v) in scales.iter_mut().zip(&b[192..208]) {
            *s = v as i8;
        }
        BlockQ6K {
            ql,
            qh,
            scales,
            d: u16::from_le_bytes([b[208], b[209]]),
        }
    }
}

/// Reference decode of one super-block.
pub(super) fn decode_block(b: &[u8; 210], out: &mut [f32; 256]) {
    let mut k = KBlock::default();
    unpack(b, &mut k);
    for (j, (o, q)) in out
        .chunks_exact_mut(16)
        .zip(k.q.chunks_exact(16))
        .enumerate()
    {
        let scale = k.d * f32::from(k.sc[j]);
        for (o, &q) in o.iter_mut().zip(q) {
            *o = scale * f32::from(q);
        }
    }
}

/// The super-block as integer quants (-32..=31) with one scale per 16 values.
#[inline(always)]
pub(super) fn unpack(b: &[u8; 210], k: &mut KBlock) {
    k.d = f16::read(&b[208..]);
    k.dmin = 0.0;
    for (s, &v) in k.sc.iter_mut().zip(&b[192..208]) {
        *s = v as i8;
    }
    k.m = [0; 16];
    for (q, (ql, qh)) in
        k.q.chunks_exact_mut(128)
            .zip(b[..128].chunks_exact(64).zip(b[128..192].chunks_exact(32)))
    {
        let (q01, q23) = q.split_at_mut(64);
        let (q0, q1) = q01.split_at_mut(32);
        let (q2, q3) = q23.split_at_mut(32);
        for l in 0..32 {
            let (a, c, h) = (ql[l], ql[l + 32], qh[l]);
            q0[l] = ((a & 0xf) | ((h & 3) << 4)) as i8 - 32;
            q1[l] = ((c & 0xf) | (((h >> 2) & 3) << 4)) as i8 - 32;
            q2[l] = ((a >> 4) | (((h >> 4) & 3) << 4)) as i8 - 32;
            q3[l] = ((c >> 4) | (((h >> 6) & 3) << 4)) as i8 - 32;
        }
    }
}
