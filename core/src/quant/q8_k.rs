//! The K-quants as the kernels see them: a super-block of 256 integer quants with one
//! scale and one minimum per 16 values (Q4_K repeats each sub-block's pair), and the dot
//! product of one against a Q8_K activation block.

use super::le;

/// An unpacked K-quant super-block: value `i` = `d * sc[i / 16] * q[i] - dmin * m[i / 16]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct KBlock {
    pub d: f32,
    pub dmin: f32,
    pub q: [i8; 256],
    pub sc: [i8; 16],
    pub m: [u8; 16],
}

impl Default for KBlock {
    fn default() -> Self {
        KBlock {
            d: 0.0,
            dmin: 0.0,
            q: [0; 256],
            sc: [0; 16],
            m: [0; 16],
        }
    }
}

/// `Σ w_i x_i` of an unpacked weight super-block and one Q8_K activation block (292
/// bytes): integer sums per 16, scaled once per super-block.
#[inline(always)]
pub(super) fn dot(w: &KBlock, a: &[u8]) -> f32 {
    let (head, rest) = a.split_at(4.min(a.len()));
    let ad = f32::from_le_bytes(le(head));
    let (qs, sums) = rest.split_at(256.min(rest.len()));
    let mut sumi = 0i32;
    for ((wq, aq), &sc) in w.q.chunks_exact(16).zip(qs.chunks_exact(16)).zip(&w.sc) {
        let mut s = 0i32;
        for (&x, &y) in wq.iter().zip(aq) {
            s += i32::from(x) * i32::from(y as i8);
        }
        sumi += s * i32::from(sc);
    }
    let mut summ = 0i32;
    for (s, &m) in sums.chunks_exact(2).zip(&w.m) {
        summ += i32::from(i16::from_le_bytes(le(s))) * i32::from(m);
    }
    ad * (w.d * sumi as f32 - w.dmin * summ as f32)
}
