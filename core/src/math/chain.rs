//! Chains of permuted block-diagonal orthogonal factors (gs-math.md section 4).
//!
//! `Q = F_{m-1} ··· F_1 F_0` with `F_f = P_f^T · blockdiag(B_{f,0}, ..., B_{f,k-1}) · P_f`.
//! OFT, GSOFT, Double GSOFT (one chain per side) and BOFT are all chains; only
//! the permutation rule and the factor count differ.

use super::permutation::{block_sources, Permutation};
use super::{cayley, cayley_scratch_len, packed_len, Scalars, MAX_BLOCK_SIZE, MAX_FACTORS};
use super::{dot, gemm};
use crate::{Error, Result};

/// The shape of a chain: width `n`, block size `b`, factor count `m`, permutation rule.
///
/// Built only through [`ChainSpec::new`], so every `ChainSpec` is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainSpec {
    n: usize,
    b: usize,
    m: usize,
    permutation: Permutation,
}

impl ChainSpec {
    /// Validates a chain shape.
    ///
    /// # Errors
    /// [`Error::InvalidBlockSize`] unless `2 <= b <= MAX_BLOCK_SIZE`;
    /// [`Error::NotDivisible`] unless `b` divides `n` (and `n > 0`);
    /// [`Error::InvalidFactorCount`] unless `1 <= m <= MAX_FACTORS`;
    /// [`Error::ButterflyShape`] for a butterfly with `m > 1` and an odd `b` or a
    /// width not divisible by `b·2^(m-1)`.
    pub fn new(n: usize, b: usize, m: usize, permutation: Permutation) -> Result<Self> {
        if !(2..=MAX_BLOCK_SIZE).contains(&b) {
            return Err(Error::InvalidBlockSize {
                block: clamp_u32(b),
            });
        }
        if n == 0 || !n.is_multiple_of(b) || u32::try_from(n).is_err() {
            return Err(Error::NotDivisible {
                dim: clamp_u32(n),
                block: b as u32,
            });
        }
        if !(1..=MAX_FACTORS).contains(&m) {
            return Err(Error::InvalidFactorCount {
                factors: clamp_u32(m),
            });
        }
        if permutation == Permutation::Butterfly && m > 1 {
            let span = b.checked_shl((m - 1) as u32).unwrap_or(0);
            if !b.is_multiple_of(2) || span == 0 || !n.is_multiple_of(span) {
                return Err(Error::ButterflyShape {
                    dim: n as u32,
                    block: b as u32,
                    factors: m as u32,
                });
            }
        }
        Ok(ChainSpec {
            n,
            b,
            m,
            permutation,
        })
    }

    /// Width `n` of the side the chain acts on.
    pub const fn width(&self) -> usize {
        self.n
    }
    /// Block size `b`.
    pub const fn block_size(&self) -> usize {
        self.b
    }
    /// Number of factors `m`.
    pub const fn factors(&self) -> usize {
        self.m
    }
    /// Permutation rule.
    pub const fn permutation(&self) -> Permutation {
        self.permutation
    }
    /// Blocks per factor, `k = n / b`.
    pub const fn blocks_per_factor(&self) -> usize {
        self.n / self.b
    }
    /// Packed parameters of one factor: `k · b(b-1)/2`, a tensor of shape `(k, b(b-1)/2)`.
    pub const fn params_per_factor(&self) -> usize {
        self.blocks_per_factor() * packed_len(self.b)
    }
    /// `f32`s of precomputed blocks for the whole chain: `m · n · b`.
    pub const fn blocks_len(&self) -> usize {
        self.m * self.n * self.b
    }
    /// Scratch `f32`s that [`Chain::apply`] needs: `2·n`.
    pub const fn apply_scratch_len(&self) -> usize {
        2 * self.n
    }
    /// Scratch `f32`s that [`prepare_chain`] needs: `2·b·b`.
    pub const fn prepare_scratch_len(&self) -> usize {
        self.b * self.b + cayley_scratch_len(self.b)
    }
    /// Multiply-adds of one application to a vector: `m · n · b`.
    pub const fn apply_macs(&self) -> usize {
        self.m * self.n * self.b
    }
}

fn clamp_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Computes every Cayley block of a chain into `out[..spec.blocks_len()]`.
///
/// `params[f]` holds the packed parameters of factor `f` (shape `(k, b(b-1)/2)`,
/// row `j` = block `j`), as f32 or f16, typed or little-endian bytes. Everything is
/// checked before `out` is written, so on error `out` is unchanged.
///
/// # Errors
/// [`Error::InvalidFactorCount`] if `params.len() != m`; [`Error::LengthMismatch`]
/// if a factor has the wrong number of parameters; [`Error::NonFiniteParameter`]
/// (index within that factor); [`Error::BufferTooSmall`] for `out` or `scratch`;
/// [`Error::NumericalFailure`] if a solve overflows (then `out` may be partly written).
/// Never panics.
pub fn prepare_chain<'w>(
    spec: ChainSpec,
    params: &[Scalars<'_>],
    out: &'w mut [f32],
    scratch: &mut [f32],
) -> Result<Chain<'w>> {
    if params.len() != spec.m {
        return Err(Error::InvalidFactorCount {
            factors: clamp_u32(params.len()),
        });
    }
    let per = spec.params_per_factor();
    for p in params {
        if p.len() != per {
            return Err(Error::LengthMismatch {
                expected: per,
                found: p.len(),
            });
        }
        if let Some(i) = p.first_non_finite() {
            return Err(Error::NonFiniteParameter {
                index: clamp_u32(i),
            });
        }
    }
    let need = spec.blocks_len();
    if out.len() < need {
        return Err(Error::BufferTooSmall {
            needed: need,
            got: out.len(),
        });
    }
    if scratch.len() < spec.prepare_scratch_len() {
        return Err(Error::BufferTooSmall {
            needed: spec.prepare_scratch_len(),
            got: scratch.len(),
        });
    }
    let (b, k, np, bb) = (
        spec.b,
        spec.blocks_per_factor(),
        packed_len(spec.b),
        spec.b * spec.b,
    );
    let (block, solve) = scratch[..2 * bb].split_at_mut(bb);
    let out = &mut out[..need];
    for (f, (p, factor_out)) in params.iter().zip(out.chunks_exact_mut(k * bb)).enumerate() {
        let layout = Access::of(spec.permutation, f, spec.m);
        for j in 0..k {
            let block_params = p.slice(j * np, np).ok_or(Error::LengthMismatch {
                expected: per,
                found: p.len(),
            })?;
            cayley(block_params, b, block, solve)?;
            for (ct, &v) in block.iter().enumerate() {
                factor_out[layout.position(ct / b, ct % b, j, b, k)] = v;
            }
        }
    }
    Chain::new(spec, out)
}

/// A prepared chain: its shape and the `m·k` Cayley blocks, factor-major (`n·b` values
/// per factor). A factor whose blocks read contiguous runs of `x` (the identity
/// permutation: OFT, the first GS factor, the last butterfly level) stores each block
/// column-major, one after the other: entry `(c, t)` of block `j` at `j·b² + t·b + c`, so
/// `B x` is `b` broadcast multiply-adds over `b` contiguous values. Every other factor is
/// **interleaved** across its blocks: entry `(c, t)` of block `j` at `(c·b + t)·k + j`, so
/// the factor is `b²` multiply-adds over `k` contiguous values. Both vectorise.
#[derive(Debug, Clone, Copy)]
pub struct Chain<'w> {
    spec: ChainSpec,
    blocks: &'w [f32],
}

impl<'w> Chain<'w> {
    /// Wraps precomputed blocks (for example from [`prepare_chain`] or a cache).
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] if `blocks` is shorter than `spec.blocks_len()`.
    pub fn new(spec: ChainSpec, blocks: &'w [f32]) -> Result<Self> {
        let blocks = blocks
            .get(..spec.blocks_len())
            .ok_or(Error::BufferTooSmall {
                needed: spec.blocks_len(),
                got: blocks.len(),
            })?;
        Ok(Chain { spec, blocks })
    }

    /// The chain's shape.
    pub const fn spec(&self) -> ChainSpec {
        self.spec
    }

    /// The precomputed blocks.
    pub const fn blocks(&self) -> &'w [f32] {
        self.blocks
    }

    /// `x <- Q x` (or `x <- Q^T x` when `transpose`), in place, for one vector of
    /// width `n`. `scratch` needs `2·n` values. Cost `m·n·b` multiply-adds.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `x.len() != n`; [`Error::BufferTooSmall`] for
    /// a short scratch. Never panics.
    pub fn apply(&self, x: &mut [f32], transpose: bool, scratch: &mut [f32]) -> Result<()> {
        if x.len() != self.spec.n {
            return Err(Error::LengthMismatch {
                expected: self.spec.n,
                found: x.len(),
            });
        }
        self.check_scratch(scratch)?;
        self.apply_unchecked_len(x, transpose, scratch);
        Ok(())
    }

    /// Applies `Q` (or `Q^T`) to every row of a row-major batch `x` of shape
    /// `(rows, n)`, in place: `X <- X Q^T` (or `X <- X Q`).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `x.len()` is not a multiple of `n`;
    /// [`Error::BufferTooSmall`] for a short scratch. Never panics.
    pub fn apply_rows(&self, x: &mut [f32], transpose: bool, scratch: &mut [f32]) -> Result<()> {
        if !x.len().is_multiple_of(self.spec.n) {
            return Err(Error::LengthMismatch {
                expected: self.spec.n,
                found: x.len(),
            });
        }
        self.check_scratch(scratch)?;
        self.apply_unchecked_len(x, transpose, scratch);
        Ok(())
    }

    /// [`Chain::apply_rows`] from `src` into `dst` (same length): `dst <- src Q^T` (or
    /// `src Q`). When the first factor has a SIMD kernel it reads `src` directly, so the
    /// input is not copied first (the unmerged forward pass rotates a layer's input this
    /// way).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if the lengths differ or are not whole rows;
    /// [`Error::BufferTooSmall`] for a short scratch. Never panics.
    pub fn apply_rows_from(
        &self,
        src: &[f32],
        dst: &mut [f32],
        transpose: bool,
        scratch: &mut [f32],
    ) -> Result<()> {
        let ChainSpec {
            n,
            b,
            m,
            permutation,
        } = self.spec;
        if src.len() != dst.len() || !src.len().is_multiple_of(n) {
            return Err(Error::LengthMismatch {
                expected: src.len(),
                found: dst.len(),
            });
        }
        self.check_scratch(scratch)?;
        let f = if transpose { m - 1 } else { 0 };
        let blocks = &self.blocks[f * n * b..(f + 1) * n * b];
        let done = matches!(Access::of(permutation, f, m), Access::Contiguous)
            && match b {
                4 => gemm::contiguous_blocks_from::<4>(src, dst, n, blocks, transpose),
                8 => gemm::contiguous_blocks_from::<8>(src, dst, n, blocks, transpose),
                16 => gemm::contiguous_blocks_from::<16>(src, dst, n, blocks, transpose),
                _ => false,
            };
        if done {
            self.apply_factors(dst, transpose, scratch, 1);
        } else {
            dst.copy_from_slice(src);
            self.apply_unchecked_len(dst, transpose, scratch);
        }
        Ok(())
    }

    /// Scratch `f32`s that [`Chain::apply_columns`] needs for `cols` vectors: `b·cols`.
    pub const fn columns_scratch_len(&self, cols: usize) -> usize {
        self.spec.b * cols
    }

    /// Applies `Q` (or `Q^T`) to every column of a **feature-major** batch `xt` of shape
    /// `(n, cols)`: row `i` holds feature `i` of all `cols` vectors. Each block then
    /// combines `b` whole rows, `b²` multiply-adds over `cols` contiguous values, which
    /// vectorises across the batch; this is how the runtime rotates a sequence of tokens.
    /// `scratch` needs [`Chain::columns_scratch_len`] values.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `xt.len() != n·cols`; [`Error::BufferTooSmall`] for a
    /// short scratch. Never panics.
    pub fn apply_columns(
        &self,
        xt: &mut [f32],
        cols: usize,
        transpose: bool,
        scratch: &mut [f32],
    ) -> Result<()> {
        let ChainSpec {
            n,
            b,
            m,
            permutation,
        } = self.spec;
        if Some(xt.len()) != n.checked_mul(cols) {
            return Err(Error::LengthMismatch {
                expected: n.saturating_mul(cols),
                found: xt.len(),
            });
        }
        let need = self.columns_scratch_len(cols);
        if scratch.len() < need {
            return Err(Error::BufferTooSmall {
                needed: need,
                got: scratch.len(),
            });
        }
        let k = n / b;
        let tmp = &mut scratch[..need];
        let mut src = [0usize; MAX_BLOCK_SIZE];
        for step in 0..m {
            let f = if transpose { m - 1 - step } else { step };
            let blocks = &self.blocks[f * n * b..(f + 1) * n * b];
            let layout = Access::of(permutation, f, m);
            for j in 0..k {
                block_sources(permutation, n, b, m, f, j, &mut src);
                let src = &src[..b];
                for (c, out) in tmp.chunks_exact_mut(cols).enumerate() {
                    out.fill(0.0);
                    for (t, &row) in src.iter().enumerate() {
                        let (r, s) = if transpose { (t, c) } else { (c, t) };
                        let coef = blocks[layout.position(r, s, j, b, k)];
                        for (o, &v) in out.iter_mut().zip(&xt[row * cols..(row + 1) * cols]) {
                            *o += coef * v;
                        }
                    }
                }
                for (c, &row) in src.iter().enumerate() {
                    xt[row * cols..(row + 1) * cols]
                        .copy_from_slice(&tmp[c * cols..(c + 1) * cols]);
                }
            }
        }
        Ok(())
    }

    /// Whether [`Chain::apply_panel`] has a kernel for this chain on this CPU: every
    /// factor on contiguous or GS-strided blocks of 4, 8 or 16, AVX-512 or AVX2 + FMA.
    pub(crate) fn has_panel_kernel(&self) -> bool {
        let ChainSpec {
            n,
            b,
            m,
            permutation,
        } = self.spec;
        gemm::in_place_available()
            && matches!(b, 4 | 8 | 16)
            && n.is_multiple_of(b)
            && (0..m).all(|f| !matches!(Access::of(permutation, f, m), Access::Table))
    }

    /// Applies `Q` to the first `16 · halves` inputs of a feature-major panel (`n` rows of
    /// `stride` values, as the in-place product packs them) where they lie, factor by
    /// factor on the panel kernel (each output one chain of fused multiply-adds over its
    /// block's entries); `false`, touching nothing, without [`Chain::has_panel_kernel`]
    /// or for a panel of another size.
    pub(crate) fn apply_panel(&self, panel: &mut [f32], shape: [usize; 2]) -> bool {
        self.apply_panel_from(0, panel, shape)
    }

    /// [`Chain::apply_panel`]'s first factor on the rows `rows` of a panel only, given as
    /// `part` (those rows, `stride` values each): the rows one part of a split batch holds
    /// (the first factor's blocks are contiguous, so each lies within a range that starts
    /// and ends on a block bound); [`Chain::apply_panel_rest`] then applies the others to
    /// the whole panel, which gives [`Chain::apply_panel`]'s bits. `false`, touching
    /// nothing, for a range off the block bounds or a chain without the panel kernel.
    #[cfg_attr(not(all(feature = "parallel", feature = "bert")), allow(dead_code))]
    pub(crate) fn apply_panel_first(
        &self,
        part: &mut [f32],
        rows: core::ops::Range<usize>,
        [halves, stride]: [usize; 2],
    ) -> bool {
        let ChainSpec {
            n,
            b,
            m,
            permutation,
        } = self.spec;
        self.has_panel_kernel()
            && matches!(Access::of(permutation, 0, m), Access::Contiguous)
            && rows.start.is_multiple_of(b)
            && rows.end.is_multiple_of(b)
            && rows.start < rows.end
            && rows.end <= n
            && 16 * halves <= stride
            && Some(part.len()) == rows.len().checked_mul(stride)
            && gemm::panel_blocks(
                part,
                rows.len(),
                [halves, stride],
                b,
                self.first_factor_blocks(rows),
                false,
            )
    }

    /// The coefficients [`Chain::apply_panel_first`] reads for the rows `rows` (empty for
    /// rows past the chain): what a part of a split batch prefetches before it rotates them.
    #[cfg_attr(not(all(feature = "parallel", feature = "bert")), allow(dead_code))]
    pub(crate) fn first_factor_blocks(&self, rows: core::ops::Range<usize>) -> &'w [f32] {
        let b = self.spec.b;
        self.blocks.get(rows.start * b..rows.end * b).unwrap_or(&[])
    }

    /// The coefficients [`Chain::apply_panel_rest`] reads (every factor after the first):
    /// what the thread that applies them prefetches.
    #[cfg_attr(not(all(feature = "parallel", feature = "bert")), allow(dead_code))]
    pub(crate) fn later_factor_blocks(&self) -> &'w [f32] {
        let ChainSpec { n, b, .. } = self.spec;
        self.blocks.get(n * b..).unwrap_or(&[])
    }

    /// [`Chain::apply_panel`] without its first factor (after [`Chain::apply_panel_first`]
    /// on every part of the panel).
    #[cfg_attr(not(all(feature = "parallel", feature = "bert")), allow(dead_code))]
    pub(crate) fn apply_panel_rest(&self, panel: &mut [f32], shape: [usize; 2]) -> bool {
        self.apply_panel_from(1, panel, shape)
    }

    /// [`Chain::apply_panel`] from factor `first` on.
    fn apply_panel_from(
        &self,
        first: usize,
        panel: &mut [f32],
        [halves, stride]: [usize; 2],
    ) -> bool {
        let ChainSpec {
            n,
            b,
            m,
            permutation,
        } = self.spec;
        if !self.has_panel_kernel()
            || 16 * halves > stride
            || Some(panel.len()) != n.checked_mul(stride)
        {
            return false;
        }
        for f in first..m {
            let blocks = &self.blocks[f * n * b..(f + 1) * n * b];
            let strided = matches!(Access::of(permutation, f, m), Access::Strided);
            if !gemm::panel_blocks(panel, n, [halves, stride], b, blocks, strided) {
                return false;
            }
        }
        true
    }

    /// Writes the dense `n x n` matrix `Q` (row-major) into `out[..n*n]`.
    /// For tests and tiny layers only: it costs `m·n²·b`.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] for a short `out` or scratch. Never panics.
    pub fn to_dense(&self, out: &mut [f32], scratch: &mut [f32]) -> Result<()> {
        let n = self.spec.n;
        let nn = n.checked_mul(n).ok_or(Error::BufferTooSmall {
            needed: usize::MAX,
            got: out.len(),
        })?;
        if out.len() < nn {
            return Err(Error::BufferTooSmall {
                needed: nn,
                got: out.len(),
            });
        }
        self.check_scratch(scratch)?;
        // Row i of Q is (Q^T e_i)^T.
        for (i, row) in out[..nn].chunks_exact_mut(n).enumerate() {
            row.fill(0.0);
            row[i] = 1.0;
            self.apply_unchecked_len(row, true, scratch);
        }
        Ok(())
    }

    fn check_scratch(&self, scratch: &[f32]) -> Result<()> {
        let need = self.spec.apply_scratch_len();
        if scratch.len() < need {
            return Err(Error::BufferTooSmall {
                needed: need,
                got: scratch.len(),
            });
        }
        Ok(())
    }

    /// Every row of `x` (whole rows of `n`; the caller checked, and `scratch` holds
    /// `2n`), factor by factor: a SIMD kernel takes the whole batch when the CPU and the
    /// factor's layout have one, the portable loop goes row by row otherwise.
    fn apply_unchecked_len(&self, x: &mut [f32], transpose: bool, scratch: &mut [f32]) {
        self.apply_factors(x, transpose, scratch, 0);
    }

    /// [`Chain::apply_unchecked_len`] from step `first` on (the factors before it done).
    fn apply_factors(&self, x: &mut [f32], transpose: bool, scratch: &mut [f32], first: usize) {
        let m = self.spec.m;
        for step in first..m {
            let f = if transpose { m - 1 - step } else { step };
            if !self.apply_factor_simd(f, x, transpose) {
                for row in x.chunks_exact_mut(self.spec.n) {
                    self.apply_factor(f, row, transpose, scratch);
                }
            }
        }
    }

    /// Entry `(c, t)` (row `c`, column `t`) of block `j` of factor `f`, in whatever layout
    /// the factor stores its blocks; `None` outside the chain.
    #[cfg(feature = "f16")]
    pub(super) fn block_entry(&self, f: usize, j: usize, c: usize, t: usize) -> Option<f32> {
        let ChainSpec {
            n,
            b,
            m,
            permutation,
        } = self.spec;
        let k = n / b;
        if f >= m || j >= k || c >= b || t >= b {
            return None;
        }
        let at = Access::of(permutation, f, m).position(c, t, j, b, k);
        self.blocks.get(f * n * b + at).copied()
    }

    /// Whether factor `f`'s block `j` reads the strided entries `x[j], x[j + k], ...`
    /// (`Some(true)`), the contiguous run `x[j·b ..]` (`Some(false)`), or anything else
    /// (`None`).
    pub(super) fn factor_is_strided(spec: ChainSpec, f: usize) -> Option<bool> {
        match Access::of(spec.permutation, f, spec.m) {
            Access::Contiguous => Some(false),
            Access::Strided => Some(true),
            Access::Table => None,
        }
    }

    /// Whether this CPU has a SIMD kernel for factor `f` of this chain.
    pub fn has_simd_kernel(&self) -> bool {
        let mut probe = [0.0f32; 0];
        (0..self.spec.m).all(|f| self.apply_factor_simd(f, &mut probe, false))
    }

    /// Factor `f` over every row of `x` on a SIMD kernel; `false` (nothing touched) when
    /// there is none for this CPU and layout.
    fn apply_factor_simd(&self, f: usize, x: &mut [f32], transpose: bool) -> bool {
        let ChainSpec {
            n,
            b,
            m,
            permutation,
        } = self.spec;
        let blocks = &self.blocks[f * n * b..(f + 1) * n * b];
        match Access::of(permutation, f, m) {
            Access::Contiguous => match b {
                4 => gemm::contiguous_blocks::<4>(x, n, blocks, transpose),
                8 => gemm::contiguous_blocks::<8>(x, n, blocks, transpose),
                16 => gemm::contiguous_blocks::<16>(x, n, blocks, transpose),
                _ => false,
            },
            Access::Strided => gemm::strided_blocks(x, n, b, blocks, transpose),
            Access::Table => false,
        }
    }

    /// `x <- F_f x` or `x <- F_f^T x`: gather each block's sources into `g` (layout
    /// `g[t·k + j]` = entry `t` of block `j`), multiply by the interleaved blocks, scatter
    /// back. Blocks touch disjoint entries of `x`.
    fn apply_factor(&self, f: usize, x: &mut [f32], transpose: bool, scratch: &mut [f32]) {
        let ChainSpec {
            n,
            b,
            m,
            permutation,
        } = self.spec;
        let k = n / b;
        let (g, rest) = scratch.split_at_mut(n);
        let u = &mut rest[..n];
        let access = Access::of(permutation, f, m);
        let blocks = &self.blocks[f * n * b..(f + 1) * n * b];
        if let Access::Contiguous = access {
            match b {
                #[cfg(feature = "unrolled-blocks")]
                4 => contiguous_blocks::<4>(x, blocks, transpose),
                #[cfg(feature = "unrolled-blocks")]
                8 => contiguous_blocks::<8>(x, blocks, transpose),
                #[cfg(feature = "unrolled-blocks")]
                16 => contiguous_blocks::<16>(x, blocks, transpose),
                _ => {
                    let u = &mut u[..b];
                    for (xs, blk) in x.chunks_exact_mut(b).zip(blocks.chunks_exact(b * b)) {
                        if transpose {
                            for (uc, col) in u.iter_mut().zip(blk.chunks_exact(b)) {
                                *uc = dot(col, xs);
                            }
                        } else {
                            u.fill(0.0);
                            for (&xt, col) in xs.iter().zip(blk.chunks_exact(b)) {
                                for (uc, &v) in u.iter_mut().zip(col) {
                                    *uc += xt * v;
                                }
                            }
                        }
                        xs.copy_from_slice(u);
                    }
                }
            }
            return;
        }
        self.exchange(f, x, g, true);
        // The gathered layout is the strided one: the SIMD kernel works on it in place.
        if gemm::strided_blocks(g, n, b, blocks, transpose) {
            self.exchange(f, x, g, false);
            return;
        }
        // u_c = sum_t B(c, t) ⊙ g_t over the k blocks: b² multiply-adds of length k.
        for (c, u_c) in u.chunks_exact_mut(k).enumerate() {
            u_c.fill(0.0);
            for (t, g_t) in g.chunks_exact(k).enumerate() {
                let entry = if transpose { t * b + c } else { c * b + t };
                let b_ct = &blocks[entry * k..(entry + 1) * k];
                for ((uv, &bv), &gv) in u_c.iter_mut().zip(b_ct).zip(g_t) {
                    *uv += bv * gv;
                }
            }
        }
        self.exchange(f, x, u, false);
    }

    /// Moves entries between `x` and the gathered layout `g[t·k + j]` (entry `t` of block
    /// `j`) of a non-contiguous factor: gather when `to_gathered`, else scatter back.
    fn exchange(&self, f: usize, x: &mut [f32], g: &mut [f32], to_gathered: bool) {
        let ChainSpec {
            n,
            b,
            m,
            permutation,
        } = self.spec;
        let k = n / b;
        if let Access::Strided = Access::of(permutation, f, m) {
            // Block j reads x[j], x[j + k], ...: the gathered layout is x itself.
            if to_gathered {
                g.copy_from_slice(x);
            } else {
                x.copy_from_slice(g);
            }
            return;
        }
        let mut src = [0usize; MAX_BLOCK_SIZE];
        for j in 0..k {
            block_sources(permutation, n, b, m, f, j, &mut src);
            for (t, &s) in src[..b].iter().enumerate() {
                if to_gathered {
                    g[t * k + j] = x[s];
                } else {
                    x[s] = g[t * k + j];
                }
            }
        }
    }
}

/// Contiguous blocks of a compile-time size `B` (stored column-major), in place: the
/// arrays let the compiler unroll each `B x B` product into a few vector operations.
#[cfg(feature = "unrolled-blocks")]
#[inline]
fn contiguous_blocks<const B: usize>(x: &mut [f32], blocks: &[f32], transpose: bool) {
    for (xs, blk) in x.chunks_exact_mut(B).zip(blocks.chunks_exact(B * B)) {
        let mut xv = [0.0f32; B];
        xv.copy_from_slice(xs);
        let blk = blk.chunks_exact(B);
        let mut u = [0.0f32; B];
        if transpose {
            // (B^T x)[t] = column t of B · x.
            for (ut, col) in u.iter_mut().zip(blk) {
                let mut s = [0.0f32; B];
                for c in 0..B {
                    s[c] = col[c] * xv[c];
                }
                *ut = s.iter().sum();
            }
        } else {
            for (xt, col) in xv.iter().zip(blk) {
                for c in 0..B {
                    u[c] += xt * col[c];
                }
            }
        }
        xs.copy_from_slice(&u);
    }
}

/// How a factor's blocks address the vector.
#[derive(Clone, Copy)]
enum Access {
    /// Block `j` reads `x[j·b .. j·b + b]` (identity permutation).
    Contiguous,
    /// Block `j` reads `x[j], x[j + k], ...` (the first GS shuffle): `g` is `x` itself.
    Strided,
    /// Anything else: per-block source indices.
    Table,
}

impl Access {
    /// Index of entry `(c, t)` of block `j` within its factor's `n·b` values.
    #[inline]
    fn position(self, c: usize, t: usize, j: usize, b: usize, k: usize) -> usize {
        match self {
            Access::Contiguous => j * b * b + t * b + c,
            _ => (c * b + t) * k + j,
        }
    }

    fn of(permutation: Permutation, f: usize, m: usize) -> Self {
        match (permutation, f) {
            (Permutation::None, _) | (Permutation::Gs, 0) => Access::Contiguous,
            (Permutation::Butterfly, f) if f + 1 == m => Access::Contiguous,
            (Permutation::Gs, 1) => Access::Strided,
            _ => Access::Table,
        }
    }
}
