//! A compact form of a chain of `8 × 8` orthogonal blocks for the unmerged decoder: each
//! block as seven Householder reflectors and a sign per entry (its QR factorisation), the
//! reflectors stored as IEEE halves, sixteen blocks interleaved so that one SIMD lane
//! works on one block.
//!
//! Why: a decoder's token step reads every weight once and, unmerged, every adapted
//! slot's blocks once; the weight stream evicts the blocks before the next token, so they
//! come from memory every time (docs/runtime.md, "In a decoder"). An `f32` block is 256
//! bytes; this form is 71 (28 vector entries and 7 scales as halves, 8 sign bits), 3.6x
//! fewer bytes for the same rotation. The arithmetic is about the same as the dense
//! block's (70 multiply-adds per block against 64) and needs no shuffles within a block:
//! every step is a lane-wise operation across sixteen blocks.
//!
//! Block `B = H_0 H_1 ··· H_6 D` with `H_r = I − τ_r v_r v_rᵀ`, `v_r = (0, …, 0, 1,
//! v_{r,r+1}, …, v_{r,7})` and `D = diag(±1)` (the diagonal of the triangular factor of
//! an orthogonal matrix). The entries of `v_r` are rounded to halves, and `τ_r` is then
//! recomputed from the rounded vector (`τ = 2 / ‖v‖²`), so each stored reflector is
//! orthogonal up to the rounding of `τ_r − 2` (kept as a half: near the identity, where
//! trained blocks are, `τ − 2` is small and so is its rounding error).
//!
//! Layout, per factor, per group of sixteen blocks (`16g .. 16g + 16`, lane `l` = block
//! `16g + l`; the last group padded with zeros), [`GROUP_HALVES`] halves:
//! `v_{r,j}` for `r < 7`, `r < j < 8` as 28 vectors of 16 (vector `7r − r(r−1)/2 + j −
//! r − 1`), then `τ_r − 2` as 7 vectors of 16, then 8 sign masks (bit `l` of mask `t`:
//! entry `t` of block `16g + l` is negated by `D`).
//!
//! **Paired order.** A chain of two factors, contiguous then strided (GSOFT), on a width
//! `n = 64s` falls apart into `s` independent problems of 64 values: strided block `j`
//! (entries `t·k + j`, `k = 8s` blocks a factor) reads entry `j mod 8` of the contiguous
//! blocks `⌊j/8⌋ + s·t`. Such a chain stores factor 0's blocks in that order instead: lane
//! `l` of group `q` is block `2q + ⌊l/8⌋ + s·(l mod 8)` (lanes 8..16 of the last group
//! are padding when `s` is odd). Group `q` of factor 0 then feeds exactly group `q` of
//! factor 1, and the kernel runs both in registers, one group at a time, with no pass over
//! memory between the factors (`gemm::reflector_pair`).

use super::chain::{Chain, ChainSpec};
use super::gemm;

/// Blocks per group (one per lane of a 16-lane vector).
pub(crate) const GROUP: usize = 16;
/// Reflector vector entries per block: `7 + 6 + … + 1`.
const V_ENTRIES: usize = 28;
/// Reflectors per block.
const REFLECTORS: usize = 7;
/// Halves per group of sixteen blocks: 28 vectors of entries, 7 of scales, 8 sign masks.
pub(crate) const GROUP_HALVES: usize = (V_ENTRIES + REFLECTORS) * GROUP + 8;

/// Index of the vector holding `v_{r,j}` within a group (`r < j < 8`).
#[cfg(any(feature = "f16", target_arch = "x86_64"))]
pub(crate) const fn v_index(r: usize, j: usize) -> usize {
    7 * r - r * r.saturating_sub(1) / 2 + j - r - 1
}

/// A chain of `8 × 8` blocks as half-precision Householder reflectors (see the module
/// docs), for one or a few rows at a time on the SIMD kernel. It has no portable loop:
/// [`ReflectorChain::rotate_rows_from`] says `false` where the CPU has no kernel, and the
/// `f32` chain it was built from stays the reference and the fallback.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReflectorChain<'w> {
    spec: ChainSpec,
    data: &'w [u16],
}

impl<'w> ReflectorChain<'w> {
    /// Whether a chain of `spec` has this form: `b = 8` and every factor on contiguous
    /// runs or strided entries (OFT, GSOFT with up to two factors, one-factor BOFT).
    pub(crate) fn supported(spec: ChainSpec) -> bool {
        spec.block_size() == 8
            && (0..spec.factors()).all(|f| Chain::factor_is_strided(spec, f).is_some())
    }

    /// Whether a chain of `spec` keeps factor 0 in the paired order (module docs): two
    /// factors, contiguous then strided, on a width that is a multiple of 64.
    pub(crate) fn paired(spec: ChainSpec) -> bool {
        spec.factors() == 2
            && spec.width().is_multiple_of(64)
            && Chain::factor_is_strided(spec, 0) == Some(false)
            && Chain::factor_is_strided(spec, 1) == Some(true)
    }

    /// Group and lane where block `j` of factor `f` is stored (module docs).
    #[cfg(any(feature = "f16", test))]
    pub(crate) fn place(spec: ChainSpec, f: usize, j: usize) -> (usize, usize) {
        if f == 0 && Self::paired(spec) {
            let s = spec.width() / 64;
            let (g, r) = (j % s, j / s);
            (g / 2, 8 * (g % 2) + r)
        } else {
            (j / GROUP, j % GROUP)
        }
    }

    /// Halves of a chain of `spec`: `m` factors of `⌈k / 16⌉` groups.
    pub(crate) const fn len(spec: ChainSpec) -> usize {
        spec.factors() * spec.blocks_per_factor().div_ceil(GROUP) * GROUP_HALVES
    }

    /// Wraps `data` (at least [`ReflectorChain::len`] halves); `None` for an unsupported
    /// shape or a short slice.
    pub(crate) fn new(spec: ChainSpec, data: &'w [u16]) -> Option<Self> {
        let data = data.get(..Self::len(spec))?;
        Self::supported(spec).then_some(ReflectorChain { spec, data })
    }

    /// The stored halves (bit patterns).
    pub(crate) const fn data(&self) -> &'w [u16] {
        self.data
    }

    /// Factorises every block of `chain` into `out[..ReflectorChain::len]` (Householder
    /// QR in `f64`, then halves); `false` for an unsupported shape, a short `out`, or a
    /// block that is not orthogonal to within `1e-3` (then `out` may be partly written
    /// and must not be used).
    #[cfg(feature = "f16")]
    pub(crate) fn build(chain: &Chain<'_>, out: &mut [u16]) -> bool {
        let spec = chain.spec();
        let Some(out) = out.get_mut(..Self::len(spec)) else {
            return false;
        };
        if !Self::supported(spec) {
            return false;
        }
        out.fill(0);
        let k = spec.blocks_per_factor();
        let per_factor = k.div_ceil(GROUP) * GROUP_HALVES;
        for (f, factor) in out.chunks_exact_mut(per_factor).enumerate() {
            for j in 0..k {
                let mut a = [[0.0f64; 8]; 8];
                for (c, row) in a.iter_mut().enumerate() {
                    for (t, v) in row.iter_mut().enumerate() {
                        let Some(e) = chain.block_entry(f, j, c, t) else {
                            return false;
                        };
                        *v = f64::from(e);
                    }
                }
                let Some(r) = factorise(&mut a) else {
                    return false;
                };
                let (g, lane) = Self::place(spec, f, j);
                let group = &mut factor[g * GROUP_HALVES..][..GROUP_HALVES];
                for (i, v) in r.v.iter().enumerate() {
                    group[i * GROUP + lane] = half::f16::from_f64(*v).to_bits();
                }
                for (i, t) in r.tau_minus_2.iter().enumerate() {
                    group[(V_ENTRIES + i) * GROUP + lane] = half::f16::from_f64(*t).to_bits();
                }
                for (t, &neg) in r.negate.iter().enumerate() {
                    if neg {
                        group[(V_ENTRIES + REFLECTORS) * GROUP + t] |= 1 << lane;
                    }
                }
            }
        }
        true
    }

    /// `dst <- Q src` (as [`Chain::apply_rows_from`] without the transpose) for whole
    /// rows of `n`, on the SIMD kernel; `false` when this CPU has none or the lengths do
    /// not fit, and then `dst` may hold anything (the caller rotates again with the `f32`
    /// chain, which rewrites all of it).
    pub(crate) fn rotate_rows_from(&self, src: &[f32], dst: &mut [f32]) -> bool {
        let n = self.spec.width();
        let k = self.spec.blocks_per_factor();
        if !gemm::reflectors_available() || src.len() != dst.len() || !src.len().is_multiple_of(n) {
            return false;
        }
        let per_factor = k.div_ceil(GROUP) * GROUP_HALVES;
        if Self::paired(self.spec) {
            let (d0, d1) = self.data.split_at(per_factor);
            return src
                .chunks_exact(n)
                .zip(dst.chunks_exact_mut(n))
                .all(|(s, d)| gemm::reflector_pair(s, d, k, [d0, d1]));
        }
        for (s, d) in src.chunks_exact(n).zip(dst.chunks_exact_mut(n)) {
            for f in 0..self.spec.factors() {
                let (Some(strided), Some(data)) = (
                    Chain::factor_is_strided(self.spec, f),
                    self.data.get(f * per_factor..(f + 1) * per_factor),
                ) else {
                    return false;
                };
                let from = if f == 0 { Some(s) } else { None };
                if !gemm::reflector_factor(from, d, k, data, strided) {
                    return false;
                }
            }
        }
        true
    }
}

/// One block's reflectors, rounded: `v` in [`v_index`] order, `τ_r − 2` computed from
/// the rounded `v_r`, and which entries `D` negates.
#[cfg(feature = "f16")]
struct Reflectors {
    v: [f64; V_ENTRIES],
    tau_minus_2: [f64; REFLECTORS],
    negate: [bool; 8],
}

/// Householder QR of the orthogonal `a` (`a = H_0 ··· H_6 R`, LAPACK's sign convention
/// `β = −sign(α)‖x‖`, a reflector with nothing below its pivot is the identity), `v`
/// rounded to halves and `τ` recomputed from the rounded vector; `None` unless `R` is
/// `diag(±1)` to within `1e-3` (a block that is not orthogonal).
#[cfg(feature = "f16")]
// Matrix indices (row i, column c) read as the formulas do.
#[allow(clippy::needless_range_loop)]
fn factorise(a: &mut [[f64; 8]; 8]) -> Option<Reflectors> {
    let mut out = Reflectors {
        v: [0.0; V_ENTRIES],
        tau_minus_2: [0.0; REFLECTORS],
        negate: [false; 8],
    };
    for r in 0..REFLECTORS {
        let alpha = a[r][r];
        let sigma: f64 = (r + 1..8).map(|i| a[i][r] * a[i][r]).sum();
        if sigma == 0.0 {
            // H_r = I: τ = 0, stored as τ − 2 = −2 with v = 0.
            out.tau_minus_2[r] = -2.0;
            continue;
        }
        let norm = libm::sqrt(alpha * alpha + sigma);
        let beta = if alpha >= 0.0 { -norm } else { norm };
        let mut v = [0.0f64; 8];
        v[r] = 1.0;
        for i in r + 1..8 {
            let vi = a[i][r] / (alpha - beta);
            // Rounded now: the reflector applied below is the stored one.
            v[i] = half::f16::from_f64(vi).to_f64();
            out.v[v_index(r, i)] = v[i];
        }
        let vv: f64 = v.iter().map(|x| x * x).sum();
        let tau = 2.0 / vv;
        let tau_h = half::f16::from_f64(tau - 2.0).to_f64() + 2.0;
        out.tau_minus_2[r] = tau_h - 2.0;
        for c in r..8 {
            let w: f64 = (r..8).map(|i| v[i] * a[i][c]).sum();
            for i in r..8 {
                a[i][c] -= tau_h * v[i] * w;
            }
        }
    }
    for (t, neg) in out.negate.iter_mut().enumerate() {
        let d = a[t][t];
        if (d.abs() - 1.0).abs() > 1e-3 {
            return None;
        }
        *neg = d < 0.0;
    }
    Some(out)
}

#[cfg(all(test, feature = "f16"))]
#[allow(clippy::unwrap_used, clippy::needless_range_loop)] // tests: a failure is a panic
pub(crate) mod tests {
    extern crate std;
    use super::{ReflectorChain, GROUP, GROUP_HALVES, REFLECTORS, V_ENTRIES};
    use crate::math::{packed_len, prepare_chain, Chain, ChainSpec, Permutation, Scalars};
    use std::vec;
    use std::vec::Vec;

    /// Uniform values in `[-s, s)` from a fixed LCG.
    fn values(len: usize, seed: u32, s: f32) -> Vec<f32> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((x >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * s
            })
            .collect()
    }

    fn norm(v: impl Iterator<Item = f64>) -> f64 {
        v.map(|a| a * a).sum::<f64>().sqrt()
    }

    /// The stored form applied in plain `f64`, lane by lane: what the kernel computes,
    /// without its rounding, from the module docs' formula alone.
    pub(crate) fn reference(spec: ChainSpec, data: &[u16], x: &[f32]) -> Vec<f64> {
        let h = |i: usize| f64::from(crate::quant::f16_to_f32(data[i]));
        let k = spec.blocks_per_factor();
        let per_factor = k.div_ceil(GROUP) * GROUP_HALVES;
        let mut y: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        for f in 0..spec.factors() {
            let strided = Chain::factor_is_strided(spec, f).unwrap();
            for j in 0..k {
                let pos = |t: usize| if strided { j + t * k } else { j * 8 + t };
                let (group, lane) = ReflectorChain::place(spec, f, j);
                let g = f * per_factor + group * GROUP_HALVES;
                let mut e: [f64; 8] = core::array::from_fn(|t| y[pos(t)]);
                for (t, et) in e.iter_mut().enumerate() {
                    if data[g + (V_ENTRIES + REFLECTORS) * GROUP + t] >> lane & 1 == 1 {
                        *et = -*et;
                    }
                }
                for r in (0..REFLECTORS).rev() {
                    let v = |i: usize| {
                        if i == r {
                            1.0
                        } else {
                            h(g + super::v_index(r, i) * GROUP + lane)
                        }
                    };
                    let tau = h(g + (V_ENTRIES + r) * GROUP + lane) + 2.0;
                    let s: f64 = (r..8).map(|i| v(i) * e[i]).sum::<f64>() * tau;
                    for i in r..8 {
                        e[i] -= v(i) * s;
                    }
                }
                for (t, et) in e.iter().enumerate() {
                    y[pos(t)] = *et;
                }
            }
        }
        y
    }

    /// The `f32` blocks of a chain of `spec` from packed parameters uniform in `[-s, s)`.
    pub(crate) fn chain_of(spec: ChainSpec, seed: u32, s: f32) -> Vec<f32> {
        let params: Vec<Vec<f32>> = (0..spec.factors())
            .map(|f| values(spec.blocks_per_factor() * packed_len(8), seed + f as u32, s))
            .collect();
        let scalars: Vec<Scalars<'_>> = params.iter().map(|p| Scalars::F32(p)).collect();
        let mut blocks = vec![0.0f32; spec.blocks_len()];
        let mut scratch = vec![0.0f32; spec.prepare_scratch_len()];
        prepare_chain(spec, &scalars, &mut blocks, &mut scratch).unwrap();
        blocks
    }

    #[test]
    fn reflectors_rotate_within_their_rounding_of_the_f32_chain() {
        let shapes = [
            (576, 2, Permutation::Gs),
            (1536, 2, Permutation::Gs),
            (192, 2, Permutation::Gs),
            (64, 1, Permutation::None),
            (48, 1, Permutation::Butterfly),
            (8, 1, Permutation::None),
            (136, 2, Permutation::Gs),
        ];
        // Near the identity (trained adapters) and far from it.
        for (case, &(n, m, perm)) in shapes.iter().enumerate() {
            for scale in [0.05f32, 0.8] {
                let spec = ChainSpec::new(n, 8, m, perm).unwrap();
                assert!(ReflectorChain::supported(spec));
                let blocks = chain_of(spec, 11 + case as u32 * 7, scale);
                let chain = Chain::new(spec, &blocks).unwrap();
                let mut data = vec![0xFFFFu16; ReflectorChain::len(spec) + 3];
                assert!(ReflectorChain::build(&chain, &mut data));
                let rc = ReflectorChain::new(spec, &data).unwrap();
                for rows in [1usize, 3] {
                    let x = values(rows * n, 99 + rows as u32, 3.0);
                    let mut want = vec![0.0f32; rows * n];
                    let mut s = vec![0.0f32; spec.apply_scratch_len()];
                    chain.apply_rows_from(&x, &mut want, false, &mut s).unwrap();
                    for (r, (xr, wr)) in x.chunks_exact(n).zip(want.chunks_exact(n)).enumerate() {
                        let exact = reference(spec, &data, xr);
                        let xn = norm(xr.iter().map(|&v| f64::from(v)));
                        // The stored reflectors against the f32 blocks: each of a block's
                        // 7 reflectors moves by at most 2·|δv| + |δτ| with |δv| ≤ 2^-11
                        // (entries below 1) and |δτ| ≤ 2^-11: 7·3·2^-11 per factor.
                        let bound = m as f64 * 21.0 * 2f64.powi(-11) * xn;
                        let e = norm(exact.iter().zip(wr).map(|(a, &b)| a - f64::from(b)));
                        assert!(
                            e <= bound,
                            "{n} {m} {perm:?} s {scale} row {r}: {e} > {bound}"
                        );
                        assert!(e > 0.0, "no rounding at all");
                        let mut got = vec![f32::NAN; n];
                        if !rc.rotate_rows_from(xr, &mut got) {
                            // No kernel on this CPU: the runtime keeps the f32 chain.
                            continue;
                        }
                        // The kernel computes the stored form in f32: a few ulps of ‖x‖.
                        let d = norm(exact.iter().zip(&got).map(|(a, &b)| a - f64::from(b)));
                        assert!(
                            d <= 1e-5 * xn,
                            "{n} {m} {perm:?} row {r}: kernel off by {d}"
                        );
                    }
                    // Rows in one call give each row's own bits.
                    let mut all = vec![0.0f32; rows * n];
                    if rc.rotate_rows_from(&x, &mut all) {
                        for (xr, ar) in x.chunks_exact(n).zip(all.chunks_exact(n)) {
                            let mut one = vec![0.0f32; n];
                            assert!(rc.rotate_rows_from(xr, &mut one));
                            assert!(one.iter().zip(ar).all(|(a, b)| a.to_bits() == b.to_bits()));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn near_identity_blocks_keep_more_precision_than_halves_of_their_entries() {
        // Trained blocks sit near I: there the reflectors' vectors are small and their
        // halves closer than the halves of the blocks' entries (the diagonal near 1).
        let spec = ChainSpec::new(576, 8, 2, Permutation::Gs).unwrap();
        let blocks = chain_of(spec, 5, 0.05);
        let chain = Chain::new(spec, &blocks).unwrap();
        let mut data = vec![0u16; ReflectorChain::len(spec)];
        assert!(ReflectorChain::build(&chain, &mut data));
        let rounded: Vec<f32> = blocks
            .iter()
            .map(|&v| half::f16::from_f32(v).to_f32())
            .collect();
        let halves = Chain::new(spec, &rounded).unwrap();
        let x = values(576, 3, 1.0);
        let mut s = vec![0.0f32; spec.apply_scratch_len()];
        let (mut want, mut by_halves) = (vec![0.0f32; 576], vec![0.0f32; 576]);
        chain.apply_rows_from(&x, &mut want, false, &mut s).unwrap();
        halves
            .apply_rows_from(&x, &mut by_halves, false, &mut s)
            .unwrap();
        let exact = reference(spec, &data, &x);
        let e = norm(exact.iter().zip(&want).map(|(a, &b)| a - f64::from(b)));
        let e_halves = norm(by_halves.iter().zip(&want).map(|(&a, &b)| f64::from(a - b)));
        assert!(
            4.0 * e < e_halves,
            "reflectors {e}, halves of the entries {e_halves}"
        );
    }

    #[test]
    fn other_shapes_and_non_orthogonal_blocks_have_no_reflectors() {
        let no = [
            ChainSpec::new(64, 4, 2, Permutation::Gs).unwrap(),
            ChainSpec::new(64, 16, 1, Permutation::None).unwrap(),
            ChainSpec::new(576, 8, 3, Permutation::Gs).unwrap(),
            ChainSpec::new(64, 8, 2, Permutation::Butterfly).unwrap(),
        ];
        for spec in no {
            assert!(!ReflectorChain::supported(spec), "{spec:?}");
            assert!(ReflectorChain::new(spec, &vec![0u16; 1 << 16]).is_none());
        }
        let spec = ChainSpec::new(16, 8, 1, Permutation::None).unwrap();
        assert!(ReflectorChain::new(spec, &vec![0u16; ReflectorChain::len(spec) - 1]).is_none());
        // A block that is not orthogonal (twice the identity) is refused.
        let mut blocks = vec![0.0f32; spec.blocks_len()];
        for j in 0..2 {
            for c in 0..8 {
                blocks[j * 64 + c * 8 + c] = 2.0;
            }
        }
        let chain = Chain::new(spec, &blocks).unwrap();
        assert!(!ReflectorChain::build(
            &chain,
            &mut vec![0u16; ReflectorChain::len(spec)]
        ));
    }
}
