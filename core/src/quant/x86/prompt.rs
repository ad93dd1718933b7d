//! The prompt kernel (AVX-512 VNNI): Q4_0, Q4_1 and Q8_0 weights against several Q8_1
//! activation rows at once, the compute-bound products of a prompt.
//!
//! The decode kernel (`block32`) streams the weights once per input row; a prompt's
//! products reuse every weight block for many rows, so here each weight block is unpacked
//! once per tile and multiplied by every input row:
//! - **Tiles**: 16 weight rows × up to [`CB`] blocks, unpacked into a stack tile (a few
//!   KB, never a copy of the matrix): per block, eight 512-bit vectors whose lane `r`
//!   holds four consecutive quants of row `r` as unsigned bytes (the stored nibble for
//!   Q4_0 and Q4_1, `q + 128` for Q8_0), made by one in-lane 4 × 4 transpose of the rows'
//!   16-byte loads, and the 16 rows' scales (and Q4_1's minima) widened to `f32`.
//! - **Products**: per block and input row, eight `vpdpbusd` against the input's four
//!   quants broadcast to every lane give the 16 rows' exact integer block sums; the
//!   unsigned offset's products (`8 Σ q` for Q4_0, `128 Σ q` for Q8_0, the same for every
//!   row) start the sum negated, from integer block sums of the inputs computed once per
//!   call. Then one convert, one multiply by the input's scale and one fused multiply-add
//!   (Q4_1: one more for `m · s`) into the row's `f32` sum. Eight input rows share each
//!   tile's registers.
//!
//! The integer sums equal the decode kernels'; only the `f32` additions differ in order
//! (one sum per block here, four partial sums per block in the decode kernel), so an
//! output differs from the token-by-token product by at most a few `f32` roundings of
//! `Σ_b |d_w d_x S_b|` (tests: within `1e-5 · Σ|w x|`). An output's arithmetic does not
//! depend on the tile its input row or weight row falls in, so inputs or rows split
//! across threads give bit-identical results.

use core::arch::x86_64::{
    __m512, __m512i, _mm256_cvtph_ps, _mm256_storeu_ps, _mm512_and_si512, _mm512_castsi128_si512,
    _mm512_cvtepi32_ps, _mm512_dpbusd_epi32, _mm512_fmadd_ps, _mm512_inserti32x4,
    _mm512_load_si512, _mm512_loadu_ps, _mm512_mul_ps, _mm512_set1_epi32, _mm512_set1_epi8,
    _mm512_set1_ps, _mm512_setzero_ps, _mm512_srli_epi16, _mm512_store_si512, _mm512_storeu_ps,
    _mm512_unpackhi_epi32, _mm512_unpackhi_epi64, _mm512_unpacklo_epi32, _mm512_unpacklo_epi64,
    _mm512_xor_si512, _mm_loadu_si128,
};

use super::super::act::Q8_1_BYTES;
use super::block32::{Q4_0, Q4_1, Q8_0};

/// Weight rows per tile: one per 32-bit lane of a 512-bit vector.
const TR: usize = 16;
/// Input rows per pass over a tile (their sums stay in registers).
const TT: usize = 8;
/// Blocks per tile: 24 blocks of 16 rows unpack into 12 KB, which stay in L1 with the
/// inputs' blocks while every input row passes.
const CB: usize = 24;
/// The input block sums kept per group of input rows (16 KB of stack).
const SUMS: usize = 4096;

/// One unpacked tile: per block, eight vectors of 16 rows × 4 quants, and the rows'
/// scales and minima.
#[repr(C, align(64))]
struct Tile {
    q: [[[u8; 64]; 8]; CB],
    d: [[f32; TR]; CB],
    m: [[f32; TR]; CB],
}

/// The checked shape of one prompt product.
pub(super) struct Batch<'a> {
    /// Whole weight rows of `rb` bytes, `blocks` blocks each.
    pub w: &'a [u8],
    pub rb: usize,
    pub blocks: usize,
    /// `n` rows of `blocks` Q8_1 blocks.
    pub act: &'a [u8],
    pub n: usize,
    /// Distance between consecutive input rows' outputs in `y`.
    pub y_stride: usize,
}

/// Whether [`run`] takes a product of `blocks` blocks per row (the input block sums of
/// one input row must fit its stack array).
pub(super) fn fits(blocks: usize) -> bool {
    (1..=SUMS).contains(&blocks)
}

/// `y[t · y_stride + r] = Σ_i W[r][i] x[t][i]` for every weight row `r` and input row
/// `t` of `job`, `K` (Q4_0, Q4_1 or Q8_0) in `B`-byte blocks.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C present; `job.w.len()` a multiple of
/// `job.rb = job.blocks · B` (`B` the bytes of a `K` block), [`fits`]`(job.blocks)`,
/// `job.act` at least `job.n` rows of `job.blocks` blocks of [`Q8_1_BYTES`], and `y` at
/// least `(job.n - 1) · job.y_stride + rows` long with `job.y_stride >= rows`
/// (`rows = job.w.len() / job.rb`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn run<const K: u8, const B: usize>(job: &Batch<'_>, y: &mut [f32]) {
    let rows = job.w.len() / job.rb.max(1);
    let blocks = job.blocks;
    if rows == 0 || job.n == 0 || !fits(blocks) {
        return;
    }
    let arow = blocks * Q8_1_BYTES;
    let offset: i32 = match K {
        Q8_0 => 128,
        Q4_0 => 8,
        _ => 0,
    };
    let mut sums = [0i32; SUMS];
    let group = SUMS / blocks;
    let mut tile = Tile {
        q: [[[0; 64]; 8]; CB],
        d: [[0.0; TR]; CB],
        m: [[0.0; TR]; CB],
    };
    let mut g0 = 0;
    while g0 < job.n {
        let gn = group.min(job.n - g0);
        // The offset's products, per input row and block: -offset · Σ q.
        if offset != 0 {
            for (t, s) in sums.chunks_exact_mut(blocks).take(gn).enumerate() {
                let row = &job.act[(g0 + t) * arow..(g0 + t + 1) * arow];
                for (s, ab) in s.iter_mut().zip(row.chunks_exact(Q8_1_BYTES)) {
                    let q: i32 = ab[8..].iter().map(|&v| i32::from(v as i8)).sum();
                    *s = -offset * q;
                }
            }
        }
        let mut r0 = 0;
        while r0 < rows {
            let mut c0 = 0;
            while c0 < blocks {
                let cn = CB.min(blocks - c0);
                // SAFETY: rows r0 .. r0 + 16, clamped to the last, and blocks c0 .. c0 +
                // cn lie in `job.w` (the caller's lengths).
                unsafe { unpack::<K, B>(job, r0, rows, c0, cn, &mut tile) };
                let mut t0 = 0;
                while t0 < gn {
                    let pass = Pass {
                        t0: g0 + t0,
                        tn: TT.min(gn - t0),
                        sums: &sums[t0 * blocks..],
                        r0,
                        rn: TR.min(rows - r0),
                        c0,
                        cn,
                    };
                    // SAFETY: the tile holds `cn` unpacked blocks; inputs t0 .. t0 + tn
                    // (clamped) exist and hold blocks c0 .. c0 + cn; `y` as checked by
                    // the caller.
                    unsafe { pass.run::<K>(job, &tile, arow, y) };
                    t0 += TT;
                }
                c0 += cn;
            }
            r0 += TR;
        }
        g0 += gn;
    }
}

/// Unpacks blocks `c0 .. c0 + cn` of weight rows `r0 .. r0 + 16` (those past the last
/// row repeat it) into `tile`.
///
/// # Safety
/// As [`run`], `r0 < rows`, `c0 + cn <= job.blocks`, `cn <= CB`.
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn unpack<const K: u8, const B: usize>(
    job: &Batch<'_>,
    r0: usize,
    rows: usize,
    c0: usize,
    cn: usize,
    tile: &mut Tile,
) {
    // SAFETY (every read): row `(r0 + i).min(rows - 1)` lies in `job.w`; block `b < blocks`
    // of it is bytes b·B .. b·B + B, read at 0..4 (scale, Q4_1's minimum) and at the
    // quants (Q4_0 2..18 of 18, Q4_1 4..20 of 20, Q8_0 2..34 of 34). The tile's arrays
    // are 64-byte aligned and written within their lengths.
    unsafe {
        let row: [*const u8; TR] =
            core::array::from_fn(|i| job.w.as_ptr().add((r0 + i).min(rows - 1) * job.rb));
        let nibble = _mm512_set1_epi8(0x0f);
        let flip = _mm512_set1_epi8(-128);
        for b in 0..cn {
            let at = (c0 + b) * B;
            let q = if K == Q4_1 { at + 4 } else { at + 2 };
            let (lo, hi) = transpose(&row, q);
            let out = &mut tile.q[b];
            if K == Q8_0 {
                let (lo2, hi2) = transpose(&row, q + 16);
                let all = [lo[0], lo[1], hi[0], hi[1], lo2[0], lo2[1], hi2[0], hi2[1]];
                for (o, v) in out.iter_mut().zip(all) {
                    _mm512_store_si512(o.as_mut_ptr().cast(), _mm512_xor_si512(v, flip));
                }
            } else {
                let all = [lo[0], lo[1], hi[0], hi[1]];
                for (j, v) in all.into_iter().enumerate() {
                    let low = _mm512_and_si512(v, nibble);
                    let high = _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble);
                    _mm512_store_si512(out[j].as_mut_ptr().cast(), low);
                    _mm512_store_si512(out[4 + j].as_mut_ptr().cast(), high);
                }
            }
            let half = |i: usize, o: usize| row[i].add(at + o).cast::<u16>().read_unaligned();
            let d: [u16; TR] = core::array::from_fn(|i| half(i, 0));
            tile.d[b] = widen(&d);
            if K == Q4_1 {
                let m: [u16; TR] = core::array::from_fn(|i| half(i, 2));
                tile.m[b] = widen(&m);
            }
        }
    }
}

/// Sixteen halves as `f32`.
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn widen(h: &[u16; TR]) -> [f32; TR] {
    // SAFETY: F16C and AVX-512F enabled by the caller; the loads and the store stay in
    // the arrays.
    unsafe {
        let lo = _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr().cast()));
        let hi = _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr().add(8).cast()));
        let mut out = [0f32; TR];
        _mm256_storeu_ps(out.as_mut_ptr(), lo);
        _mm256_storeu_ps(out.as_mut_ptr().add(8), hi);
        out
    }
}

/// Bytes `at .. at + 16` of the 16 rows as four vectors of 16 lanes: lane `r` of vector
/// `j` is bytes `at + 4j .. at + 4j + 4` of row `r` (returned as `[v0, v1], [v2, v3]`).
///
/// # Safety
/// 16 readable bytes at `row[i] + at` for every `i`; AVX-512F enabled.
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn transpose(row: &[*const u8; TR], at: usize) -> ([__m512i; 2], [__m512i; 2]) {
    // SAFETY: the caller's contract.
    unsafe {
        // v_k: row 4l + k in 128-bit lane l.
        let v: [__m512i; 4] = core::array::from_fn(|k| {
            let x = _mm512_castsi128_si512(_mm_loadu_si128(row[k].add(at).cast()));
            let x = _mm512_inserti32x4::<1>(x, _mm_loadu_si128(row[4 + k].add(at).cast()));
            let x = _mm512_inserti32x4::<2>(x, _mm_loadu_si128(row[8 + k].add(at).cast()));
            _mm512_inserti32x4::<3>(x, _mm_loadu_si128(row[12 + k].add(at).cast()))
        });
        // A 4 × 4 transpose of 32-bit words in every 128-bit lane: word k of lane l of
        // output j = word j of row 4l + k.
        let t0 = _mm512_unpacklo_epi32(v[0], v[1]);
        let t1 = _mm512_unpackhi_epi32(v[0], v[1]);
        let t2 = _mm512_unpacklo_epi32(v[2], v[3]);
        let t3 = _mm512_unpackhi_epi32(v[2], v[3]);
        (
            [_mm512_unpacklo_epi64(t0, t2), _mm512_unpackhi_epi64(t0, t2)],
            [_mm512_unpacklo_epi64(t1, t3), _mm512_unpackhi_epi64(t1, t3)],
        )
    }
}

/// Up to [`TT`] input rows against one unpacked tile.
struct Pass<'s> {
    /// First input row and how many (the registers for the others repeat the last).
    t0: usize,
    tn: usize,
    /// The offset products of input rows t0 .., `blocks` per row.
    sums: &'s [i32],
    /// First weight row and how many are real.
    r0: usize,
    rn: usize,
    /// The tile's blocks.
    c0: usize,
    cn: usize,
}

impl Pass<'_> {
    /// Adds the tile's products to the outputs (starting them from 0 at the first
    /// tile of blocks).
    ///
    /// # Safety
    /// As [`run`]; `tile` holds blocks `c0 .. c0 + cn` of rows `r0 ..` unpacked, `sums`
    /// at least `tn` rows of `blocks` values.
    #[inline(always)]
    #[allow(unused_unsafe)]
    unsafe fn run<const K: u8>(&self, job: &Batch<'_>, tile: &Tile, arow: usize, y: &mut [f32]) {
        let blocks = job.blocks;
        let last = self.tn - 1;
        // SAFETY (every read and write): input row t0 + min(i, tn - 1) < n holds `blocks`
        // blocks of 40 bytes (read at 0..40 of blocks c0 .. c0 + cn); the sums hold
        // `blocks` values per input row; outputs are written only for the tn real inputs
        // and the rn real rows, inside `y` (the caller's lengths).
        unsafe {
            let act: [*const u8; TT] = core::array::from_fn(|i| {
                job.act
                    .as_ptr()
                    .add((self.t0 + i.min(last)) * arow + self.c0 * Q8_1_BYTES)
            });
            let sums: [*const i32; TT] =
                core::array::from_fn(|i| self.sums.as_ptr().add(i.min(last) * blocks + self.c0));
            let mut acc = [_mm512_setzero_ps(); TT];
            if self.c0 > 0 {
                for (i, a) in acc.iter_mut().enumerate().take(self.tn) {
                    *a = load_out(y, (self.t0 + i) * job.y_stride + self.r0, self.rn);
                }
            }
            for b in 0..self.cn {
                let w: [__m512i; 8] =
                    core::array::from_fn(|j| _mm512_load_si512(tile.q[b][j].as_ptr().cast()));
                let d = _mm512_loadu_ps(tile.d[b].as_ptr());
                let m = _mm512_loadu_ps(tile.m[b].as_ptr());
                for i in 0..TT {
                    let ab = act[i].add(b * Q8_1_BYTES);
                    let mut s = if K == Q4_1 {
                        _mm512_set1_epi32(0)
                    } else {
                        _mm512_set1_epi32(sums[i].add(b).read())
                    };
                    for (j, &wj) in w.iter().enumerate() {
                        let a = ab.add(8 + 4 * j).cast::<i32>().read_unaligned();
                        s = _mm512_dpbusd_epi32(s, wj, _mm512_set1_epi32(a));
                    }
                    let da = ab.cast::<f32>().read_unaligned();
                    let scale = _mm512_mul_ps(d, _mm512_set1_ps(da));
                    acc[i] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(s), acc[i]);
                    if K == Q4_1 {
                        let sa = ab.add(4).cast::<f32>().read_unaligned();
                        acc[i] = _mm512_fmadd_ps(m, _mm512_set1_ps(sa), acc[i]);
                    }
                }
            }
            for (i, &a) in acc.iter().enumerate().take(self.tn) {
                store_out(y, (self.t0 + i) * job.y_stride + self.r0, self.rn, a);
            }
        }
    }
}

/// `y[at .. at + n]` (`n <= 16`) into the first lanes of a vector.
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn load_out(y: &[f32], at: usize, n: usize) -> __m512 {
    // SAFETY: AVX-512F enabled by the caller; the reads stay in `y` or the local array.
    unsafe {
        match y.get(at..at + TR) {
            Some(v) if n == TR => _mm512_loadu_ps(v.as_ptr()),
            _ => {
                let mut lanes = [0f32; TR];
                let end = (at + n).min(y.len());
                let part = y.get(at..end).unwrap_or(&[]);
                lanes[..part.len()].copy_from_slice(part);
                _mm512_loadu_ps(lanes.as_ptr())
            }
        }
    }
}

/// The first `n` lanes of `v` into `y[at .. at + n]`.
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn store_out(y: &mut [f32], at: usize, n: usize, v: __m512) {
    // SAFETY: AVX-512F enabled by the caller; the writes stay in `y` or the local array.
    unsafe {
        match y.get_mut(at..at + TR) {
            Some(o) if n == TR => _mm512_storeu_ps(o.as_mut_ptr(), v),
            _ => {
                let mut lanes = [0f32; TR];
                _mm512_storeu_ps(lanes.as_mut_ptr(), v);
                let end = (at + n).min(y.len());
                if let Some(o) = y.get_mut(at..end) {
                    o.copy_from_slice(&lanes[..o.len()]);
                }
            }
        }
    }
}
