//! Dense matrix products of the forward pass, `C = A · B` (or `C += A · B`), on strided
//! row-major `f32` operands.
//!
//! One entry point, [`matmul`], checks every length and then runs the fastest kernel the
//! CPU has (detected at run time, no `std` needed): on x86-64 an AVX-512 or an AVX2 + FMA
//! register-tiled kernel, otherwise a portable kernel written so that LLVM vectorises it
//! for any target (SSE, WebAssembly SIMD, NEON, Cortex-M scalar FPU). All compute the same
//! sums in the same `k` order per output, so they agree to the last bit except where the
//! SIMD kernels fuse the multiply and the add. Batches on x86-64 take the in-place
//! product instead ([`weights_in_place`]: the weights read where they lie, the inputs
//! packed), where an unmerged adapter's rotation works on the packed inputs
//! ([`panel_blocks`]).
//!
//! Files by role: `portable.rs`, the kernel for every target; `wasm.rs`, the WebAssembly
//! SIMD128 product kernel and weight-panel pack (safe intrinsics); on x86-64, `cpu.rs`
//! (run-time detection of AVX-512 and AVX2 + FMA, capped by [`limit_kernels`]),
//! `x86_products.rs` (the f32 product kernels and the weight-panel pack), `x86_avx2.rs`
//! (the in-place product and panel rotation for CPUs with AVX2 but not AVX-512),
//! `x86_blocks.rs` (the adapter's block-diagonal rotation kernels), `x86_reflectors.rs`
//! (Householder factors) and `x86_elementwise.rs` (softmax, GELU, SiLU, layer and RMS
//! norm). The x86 files and the AArch64 probe (`arm_cpu.rs`) are the gemm's only `unsafe`
//! code.

/// The run-time CPU probes, shared with the quantized kernels (`crate::quant`).
#[cfg(target_arch = "aarch64")]
pub(crate) mod arm_cpu;
#[cfg(target_arch = "x86_64")]
pub(crate) mod cpu;
mod portable;

/// `detect()` once per `state` (0 = not yet, 1 = no, 2 = yes), then the cached answer; always
/// `false` with the `force-portable` feature. The CPU probes' cache (`cpu.rs`, `arm_cpu.rs`).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn cached_probe(state: &core::sync::atomic::AtomicU8, detect: fn() -> bool) -> bool {
    use core::sync::atomic::Ordering;
    if cfg!(feature = "force-portable") {
        return false;
    }
    match state.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let yes = detect();
            state.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
    }
}
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm_attention;
#[cfg(target_arch = "x86_64")]
mod x86_attention;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_blocks;
#[cfg(target_arch = "x86_64")]
mod x86_elementwise;
#[cfg(target_arch = "x86_64")]
mod x86_products;
#[cfg(target_arch = "x86_64")]
mod x86_reflectors;
#[cfg(all(target_arch = "x86_64", feature = "sha256"))]
mod x86_sha;

use crate::{Error, Result};

/// The shape of one product: `C (m × n) = A (m × k) · B (k × n)`, each operand row-major
/// with its own row stride (so heads of a packed `q`/`k`/`v` matrix are operands too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Product {
    /// Rows of `A` and `C`.
    pub m: usize,
    /// Columns of `B` and `C`.
    pub n: usize,
    /// Columns of `A`, rows of `B`.
    pub k: usize,
    /// Distance between consecutive rows of `A`, in elements.
    pub a_stride: usize,
    /// Distance between consecutive rows of `B`.
    pub b_stride: usize,
    /// Distance between consecutive rows of `C`.
    pub c_stride: usize,
    /// `C += A · B` instead of `C = A · B`.
    pub accumulate: bool,
}

impl Product {
    /// Elements an operand of `rows` rows of `width` used values at `stride` must hold.
    fn span(rows: usize, width: usize, stride: usize) -> Option<usize> {
        if rows == 0 || width == 0 {
            return Some(0);
        }
        if stride < width {
            return None;
        }
        (rows - 1).checked_mul(stride)?.checked_add(width)
    }

    /// Rows `i0 .. i0 + R` of `A`, each of exactly `k` values (so a kernel's inner loop
    /// needs no bounds checks); `None` when `a` is too short.
    #[inline(always)]
    fn a_rows<'a, const R: usize>(&self, a: &'a [f32], i0: usize) -> Option<[&'a [f32]; R]> {
        let rows: [&[f32]; R] = core::array::from_fn(|r| {
            let s = (i0 + r) * self.a_stride;
            a.get(s..s + self.k).unwrap_or(&[])
        });
        rows.iter().all(|r| r.len() == self.k).then_some(rows)
    }

    /// Checks that `a`, `b` and `c` hold every element `C = A · B` touches.
    fn check(&self, a: usize, b: usize, c: usize) -> Result<()> {
        check_spans([
            (Self::span(self.m, self.k, self.a_stride), a),
            (Self::span(self.k, self.n, self.b_stride), b),
            (Self::span(self.m, self.n, self.c_stride), c),
        ])
    }
}

/// `(needed, available)` per operand; `needed = None` means a stride below the row width.
fn check_spans(spans: [(Option<usize>, usize); 3]) -> Result<()> {
    for (need, got) in spans {
        match need {
            Some(need) if need <= got => {}
            Some(need) => return Err(Error::BufferTooSmall { needed: need, got }),
            None => {
                return Err(Error::LengthMismatch {
                    expected: usize::MAX,
                    found: got,
                })
            }
        }
    }
    Ok(())
}

/// The rows of `W` in `C = A · Wᵀ`: `f32` values, or little-endian `f32` bytes read in
/// place from a model file at any alignment.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RowsRef<'a> {
    /// Plain values.
    F32(&'a [f32]),
    /// Little-endian IEEE `f32` bytes (GGUF `F32` tensor data).
    LeBytes(&'a [u8]),
}

impl RowsRef<'_> {
    /// Start and number of whole `f32` elements (the pointer may be unaligned).
    #[cfg(target_arch = "x86_64")]
    fn raw_parts(&self) -> (*const f32, usize) {
        match self {
            RowsRef::F32(v) => (v.as_ptr(), v.len()),
            RowsRef::LeBytes(v) => (v.as_ptr().cast::<f32>(), v.len() / 4),
        }
    }

    /// Start and length in bytes.
    #[cfg(target_arch = "x86_64")]
    fn byte_range(&self) -> (*const u8, usize) {
        match self {
            RowsRef::F32(v) => (v.as_ptr().cast::<u8>(), core::mem::size_of_val(*v)),
            RowsRef::LeBytes(v) => (v.as_ptr(), v.len()),
        }
    }

    /// Elements `start .. start + N` into `out` (left as they are past the end): as
    /// [`RowsRef::read_into`], for a length known when compiling.
    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "wasm32",
        target_arch = "aarch64"
    ))]
    fn read_array<const N: usize>(&self, start: usize, out: &mut [f32; N]) {
        match self {
            RowsRef::F32(v) => {
                if let Some(src) = v
                    .get(start..start + N)
                    .and_then(|s| <&[f32; N]>::try_from(s).ok())
                {
                    *out = *src;
                }
            }
            RowsRef::LeBytes(v) => {
                if let Some(src) = v.get(4 * start..4 * (start + N)) {
                    for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    }
                }
            }
        }
    }

    /// Elements `start .. start + out.len()` into `out` (left as they are past the end).
    fn read_into(&self, start: usize, out: &mut [f32]) {
        match self {
            RowsRef::F32(v) => {
                if let Some(src) = v.get(start..start + out.len()) {
                    out.copy_from_slice(src);
                }
            }
            RowsRef::LeBytes(v) => {
                if let Some(src) = v.get(4 * start..4 * (start + out.len())) {
                    for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    }
                }
            }
        }
    }
}

/// Applies a block-diagonal factor with `B × B` blocks on contiguous runs (column-major
/// blocks, one after the other) to every row of `x` (`rows × n`) in place, on the SIMD
/// kernel (AVX-512, or AVX2 + FMA for `B` 8 and 16). Returns `false`, touching nothing,
/// when this CPU or shape has none (the caller then runs its portable loop).
pub(crate) fn contiguous_blocks<const B: usize>(
    x: &mut [f32],
    n: usize,
    blocks: &[f32],
    transpose: bool,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if x86_blocks::contiguous_blocks::<B>(x, n, blocks, transpose)
        || x86_avx2::contiguous_blocks::<B>(None, x, n, blocks, transpose)
    {
        return true;
    }
    let _ = (x, n, blocks, transpose);
    false
}

/// [`contiguous_blocks`] from `src` into `dst` (same length) instead of in place.
pub(crate) fn contiguous_blocks_from<const B: usize>(
    src: &[f32],
    dst: &mut [f32],
    n: usize,
    blocks: &[f32],
    transpose: bool,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if x86_blocks::contiguous_blocks_from::<B>(src, dst, n, blocks, transpose)
        || x86_avx2::contiguous_blocks::<B>(Some(src), dst, n, blocks, transpose)
    {
        return true;
    }
    let _ = (src, dst, n, blocks, transpose);
    false
}

/// `P <- F P` for the first `16 · halves` inputs of a feature-major panel `P` (`n` rows of
/// `stride` values), `F` a block-diagonal factor with `b × b` blocks on contiguous rows
/// (`strided = false`, the layout of [`contiguous_blocks`]) or on rows `j, j + k, ...`
/// (`strided`, the layout of [`strided_blocks`]). Returns `false`, touching nothing, when
/// this CPU or shape has no kernel (AVX-512, or AVX2 + FMA, and `b` in 4, 8, 16).
pub(crate) fn panel_blocks(
    panel: &mut [f32],
    n: usize,
    [halves, stride]: [usize; 2],
    b: usize,
    blocks: &[f32],
    strided: bool,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use x86_blocks::panel_blocks as k;
        let shape = [halves, stride];
        match (b, strided) {
            (4, false) => k::<4, false>(panel, n, shape, blocks),
            (8, false) => k::<8, false>(panel, n, shape, blocks),
            (16, false) => k::<16, false>(panel, n, shape, blocks),
            (4, true) => k::<4, true>(panel, n, shape, blocks),
            (8, true) => k::<8, true>(panel, n, shape, blocks),
            (16, true) => k::<16, true>(panel, n, shape, blocks),
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (panel, n, halves, stride, b, blocks, strided);
        false
    }
}

/// As [`contiguous_blocks`] for a factor whose block `j` reads `x[j], x[j + k], ...`
/// (`k = n / b`), coefficients interleaved across blocks (`blocks[(c·b + t)·k + j]`).
pub(crate) fn strided_blocks(
    x: &mut [f32],
    n: usize,
    b: usize,
    blocks: &[f32],
    transpose: bool,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // The AVX-512 kernel (any b up to 16), else the AVX2 one (b in 4, 8, 16).
        let narrow: fn(&mut [f32], usize, &[f32], bool) -> bool = match b {
            4 => x86_avx2::strided_blocks::<4>,
            8 => x86_avx2::strided_blocks::<8>,
            16 => x86_avx2::strided_blocks::<16>,
            _ => |_, _, _, _| false,
        };
        if x86_blocks::strided_blocks(x, n, b, blocks, transpose) || narrow(x, n, blocks, transpose)
        {
            return true;
        }
    }
    let _ = (x, n, b, blocks, transpose);
    false
}

/// One row through a factor of `k` blocks of `8 × 8` stored as half-precision
/// Householder reflectors (`math::reflectors`): `dst <- F src`, or in place when `src` is
/// `None`; `strided` for a factor whose block `j` reads `x[j], x[j + k], …`. `false`,
/// touching nothing, when this CPU has no kernel (there is no portable loop: the caller
/// keeps the `f32` blocks for that case).
pub(crate) fn reflector_factor(
    src: Option<&[f32]>,
    dst: &mut [f32],
    k: usize,
    data: &[u16],
    strided: bool,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if x86_reflectors::reflector_factor(src, dst, k, data, strided) {
        return true;
    }
    let _ = (src, dst, k, data, strided);
    false
}

/// `dst <- F_1 F_0 src` for one row through a two-factor chain in reflector form whose
/// factor 0 is stored in the paired lane order (`math::reflectors`); `false` (nothing
/// touched) where this CPU has no kernel or the lengths do not fit.
pub(crate) fn reflector_pair(src: &[f32], dst: &mut [f32], k: usize, data: [&[u16]; 2]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if x86_reflectors::reflector_pair(src, dst, k, data) {
        return true;
    }
    let _ = (src, dst, k, data);
    false
}

/// Whether [`reflector_factor`] runs on this CPU.
pub(crate) fn reflectors_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        cpu::avx512_available() || x86_reflectors::avx2_reflectors_available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Packs `W` (`rows × cols`, row-major) transposed into `panel`:
/// `panel[k · stride + j] = W[j][k]` for `j < rows`, `k < cols`; other cells are left as
/// they are. The right-hand operand of [`matmul`] for `x · Wᵀ`.
///
/// # Errors
/// [`Error::BufferTooSmall`] when `w` or `panel` is too short, [`Error::LengthMismatch`]
/// when `stride < rows`.
pub(crate) fn pack_transposed(
    w: RowsRef<'_>,
    rows: usize,
    cols: usize,
    panel: &mut [f32],
    stride: usize,
) -> Result<()> {
    pack_scaled(w, rows, cols, None, panel, stride)
}

/// [`pack_transposed`] with each `W` row `j` multiplied by `scale[j]` (an adapter's
/// per-output scale, folded into the panel when that costs less than scaling the outputs:
/// batches wider than the layer's input).
///
/// # Errors
/// As [`pack_transposed`]; [`Error::BufferTooSmall`] also for a `scale` shorter than
/// `rows`.
pub(crate) fn pack_scaled(
    w: RowsRef<'_>,
    rows: usize,
    cols: usize,
    scale: Option<&[f32]>,
    panel: &mut [f32],
    stride: usize,
) -> Result<()> {
    let w_len = match w {
        RowsRef::F32(v) => v.len(),
        RowsRef::LeBytes(v) => v.len() / 4,
    };
    check_spans([
        (Product::span(rows, cols, cols), w_len),
        (Product::span(cols, rows, stride), panel.len()),
        (
            Some(scale.map_or(0, |_| rows)),
            scale.map_or(0, <[f32]>::len),
        ),
    ])?;
    #[cfg(target_arch = "x86_64")]
    if x86_products::pack_transposed(w, rows, cols, scale, panel, stride) {
        return Ok(());
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if simd128_allowed() && wasm::pack_transposed(w, rows, cols, scale, panel, stride) {
        return Ok(());
    }
    portable::pack_transposed(w, rows, cols, scale, panel, stride);
    Ok(())
}

/// Heads `h` and rows per head `n` of an attention kernel's call with `heads_len = h · d`
/// and `rows_len = h · n` values (`None` for no heads or lengths that are not so); each
/// kernel checks `d` against the widths it covers first.
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
))]
fn attention_shape(heads_len: usize, rows_len: usize, d: usize) -> Option<(usize, usize)> {
    if d == 0 || heads_len == 0 || !heads_len.is_multiple_of(d) {
        return None;
    }
    let h = heads_len / d;
    rows_len.is_multiple_of(h).then_some((h, rows_len / h))
}

/// Whether a cache slice of `len` values holds `n` rows of `d` values `stride` apart (the
/// last row need not be followed by a whole stride).
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
))]
fn cache_rows_fit(len: usize, n: usize, d: usize, stride: usize) -> bool {
    n == 0
        || (stride >= d
            && (n - 1)
                .checked_mul(stride)
                .and_then(|x| x.checked_add(d))
                .is_some_and(|need| need <= len))
}

/// Attention scores of the query heads that share one key/value head: `q` holds `h`
/// heads of `d` values, `scores` `h` rows of `n` (`scores.len() = h · n`), and row `r`
/// gets `scores[r · n + j] = q_r · keys[j · stride ..][..d]` for every `j < n` (the x86-64
/// kernels read each key once for all `h` heads). By the AVX-512 or AVX2 + FMA (+ F16C)
/// kernel where the CPU has one and `d` is 16, 32, 64 or 128, or by the WebAssembly SIMD128
/// one (an `f32` cache, `d` a multiple of 8: the portable arithmetic) (`true`); `false`,
/// touching nothing, elsewhere.
pub(crate) fn key_dots_wide(
    q: &[f32],
    d: usize,
    keys: crate::nn::attention::KvSlice<'_>,
    stride: usize,
    scores: &mut [f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x86_attention::key_dots(q, d, keys, stride, scores)
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        simd128_allowed() && wasm_attention::key_dots(q, d, keys, stride, scores)
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    )))]
    {
        let _ = (q, d, keys, stride, scores);
        false
    }
}

/// The attention outputs of the query heads that share one key/value head: `p` holds `h`
/// rows of `n` probabilities, `out` `h` heads of `d` values, and head `r` gets
/// `Σ_j p[r · n + j] · values[j · stride ..][..d]` (the x86-64 kernels read each value row
/// once for all `h` heads). By the kernels of [`key_dots_wide`], on the same terms.
pub(crate) fn value_sum_wide(
    p: &[f32],
    d: usize,
    values: crate::nn::attention::KvSlice<'_>,
    stride: usize,
    out: &mut [f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x86_attention::value_sum(p, d, values, stride, out)
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        simd128_allowed() && wasm_attention::value_sum(p, d, values, stride, out)
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    )))]
    {
        let _ = (p, d, values, stride, out);
        false
    }
}

/// SHA-256's compression of every 64-byte block of `blocks` into `state`, in order, by the
/// x86-64 SHA extensions where the CPU has them (`true`); `false`, touching nothing,
/// elsewhere (and for a length that is not whole blocks).
#[cfg(feature = "sha256")]
pub(crate) fn sha256_blocks(state: &mut [u32; 8], blocks: &[u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x86_sha::compress_blocks(state, blocks)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (state, blocks);
        false
    }
}

/// `row = softmax(scale · row)` by the AVX-512 or AVX2 + FMA kernel where the CPU has one,
/// or the WebAssembly SIMD128 one (the portable arithmetic), returning the row's largest
/// value and the sum of the exponentials it divided by; `None`, touching nothing, elsewhere.
pub(crate) fn softmax_wide(row: &mut [f32], scale: f32) -> Option<[f32; 2]> {
    #[cfg(target_arch = "x86_64")]
    {
        x86_elementwise::softmax(row, scale).or_else(|| x86_elementwise::avx2::softmax(row, scale))
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        simd128_allowed().then(|| wasm_attention::softmax(row, scale))
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    )))]
    {
        let _ = (row, scale);
        None
    }
}

/// Exact GELU in place by the AVX-512 or AVX2 + FMA kernel where the CPU has one (`true`);
/// `false`, touching nothing, elsewhere.
pub(crate) fn gelu_wide(x: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x86_elementwise::gelu(x) || x86_elementwise::avx2::gelu(x)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = x;
        false
    }
}

/// SiLU in place, times `up` where given (SwiGLU), by the AVX-512 or AVX2 + FMA kernel
/// where the CPU has one and `up` is long enough (`true`); `false`, touching nothing,
/// elsewhere.
pub(crate) fn silu_wide(x: &mut [f32], up: Option<&[f32]>) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x86_elementwise::silu(x, up) || x86_elementwise::avx2::silu(x, up)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, up);
        false
    }
}

/// Layer norm (`bias` given) or RMS norm of one row by the AVX-512 kernel where the CPU
/// has one and `w` (and `bias`) cover the row (`true`); `false`, touching nothing,
/// elsewhere.
pub(crate) fn norm_wide(row: &mut [f32], w: &[f32], bias: Option<&[f32]>, eps: f32) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x86_elementwise::norm(row, w, bias, eps)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (row, w, bias, eps);
        false
    }
}

/// Inputs per packed panel of [`weights_in_place`] for a batch of more than 16 (the tile
/// width of its kernel; smaller batches pack 16, [`panel_side`]).
pub(crate) const INPUT_PANEL: usize = 32;

/// Inputs per packed panel (the distance between a panel's features) for a batch of `n`:
/// [`INPUT_PANEL`], or 16 for a batch of at most 16 inputs. Such a panel holds one vector
/// per feature instead of one vector and an unused one, so it takes half the cache: its
/// rotation by an unmerged adapter and its product read it from L1 where a 32-wide panel
/// of 384 or more features spills (the AVX-512 rotation of a 384-feature, 16-input panel
/// 0.91 -> 0.63 µs for contiguous blocks, measured).
pub(crate) const fn panel_side(n: usize) -> usize {
    if n <= 16 {
        16
    } else {
        INPUT_PANEL
    }
}

/// Values [`pack_inputs`] writes for `n` inputs of width `cols`: whole panels of
/// [`panel_side`]`(n)` inputs.
pub(crate) const fn packed_inputs_len(n: usize, cols: usize) -> usize {
    let side = panel_side(n);
    n.div_ceil(side).saturating_mul(side).saturating_mul(cols)
}

/// Whether this CPU runs [`weights_in_place`] (x86-64 with AVX-512, or AVX2 + FMA):
/// products that read the weights where they lie, with no transposed copy of them. (A
/// WebAssembly SIMD128 version was tried in session 15 and left out: docs/wasm.md.)
pub(crate) fn in_place_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        cpu::avx512_available() || cpu::avx2_fma_available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Packs the inputs `X` (`n × cols`, row-major) for [`weights_in_place`]: with `s =`
/// [`panel_side`]`(n)`, panel `g` (at `g · s · cols`) holds `X[s·g + j][k]` at `k · s + j`,
/// zero for inputs past `n`.
///
/// # Errors
/// [`Error::BufferTooSmall`] when `x` or `xt` is too short.
pub(crate) fn pack_inputs(x: &[f32], n: usize, cols: usize, xt: &mut [f32]) -> Result<()> {
    let need = packed_inputs_len(n, cols);
    check_spans([
        (Product::span(n, cols, cols), x.len()),
        (Some(need), xt.len()),
        (Some(0), 0),
    ])?;
    let side = panel_side(n);
    for (g, panel) in xt[..need].chunks_exact_mut(side * cols).enumerate() {
        let t0 = g * side;
        let inputs = side.min(n - t0);
        if inputs < side {
            panel.fill(0.0);
        }
        pack_scaled(
            RowsRef::F32(&x[t0 * cols..(t0 + inputs) * cols]),
            inputs,
            cols,
            None,
            panel,
            side,
        )?;
    }
    Ok(())
}

/// `y[t · stride + o] = scale[o] · Σ_k W[o][k] · X[t][k] + bias[o]` for `t < n`, `o < rows`:
/// `W` (`rows × cols`) read in place, `X` packed by [`pack_inputs`] into `xt`. Every sum
/// runs over `k` in order from zero with fused multiply-adds, as [`matmul`]'s AVX-512
/// kernel does, so both give the same bits (the AVX2 + FMA kernel, on CPUs without
/// AVX-512, gives the AVX-512 one's bits too). `next` is the memory the caller reads after
/// this product (prefetched during the last rows). `Ok(false)`, touching nothing, when
/// this CPU has no such kernel ([`in_place_available`]).
///
/// # Errors
/// [`Error::BufferTooSmall`] when an operand is shorter than the shape needs,
/// [`Error::LengthMismatch`] when `stride < rows`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn weights_in_place(
    w: RowsRef<'_>,
    [rows, cols]: [usize; 2],
    xt: &[f32],
    n: usize,
    y: &mut [f32],
    stride: usize,
    [scale, bias]: [Option<&[f32]>; 2],
    next: RowsRef<'_>,
) -> Result<bool> {
    let w_len = match w {
        RowsRef::F32(v) => v.len(),
        RowsRef::LeBytes(v) => v.len() / 4,
    };
    check_spans([
        (Product::span(rows, cols, cols), w_len),
        (Some(packed_inputs_len(n, cols)), xt.len()),
        (Product::span(n, rows, stride), y.len()),
    ])?;
    check_spans([
        (
            Some(scale.map_or(0, |_| rows)),
            scale.map_or(0, <[f32]>::len),
        ),
        (Some(bias.map_or(0, |_| rows)), bias.map_or(0, <[f32]>::len)),
        (Some(0), 0),
    ])?;
    if rows == 0 || cols == 0 || n == 0 {
        return Ok(true);
    }
    #[cfg(target_arch = "x86_64")]
    {
        Ok(x86_products::weights_in_place(
            w,
            rows,
            cols,
            xt,
            n,
            y,
            stride,
            [scale, bias],
            next,
        ))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (w, xt, y, next);
        Ok(false)
    }
}

/// Whether the operands of an in-place product ([`weights_in_place`]'s kernels) hold what
/// the shape `[rows, cols, n, stride]` addresses: `w_len` weights, the packed panels `xt`,
/// the outputs `y`, `rows` scale and bias values; false for an empty shape.
#[cfg(target_arch = "x86_64")]
fn in_place_shape_ok(
    [rows, cols, n, stride]: [usize; 4],
    w_len: usize,
    xt: &[f32],
    y: &[f32],
    [scale, bias]: [Option<&[f32]>; 2],
) -> bool {
    rows != 0
        && cols != 0
        && n != 0
        && stride >= rows
        && rows.checked_mul(cols).is_some_and(|e| e <= w_len)
        && packed_inputs_len(n, cols) <= xt.len()
        && Product::span(n, rows, stride).is_some_and(|e| e <= y.len())
        && scale.is_none_or(|s| s.len() >= rows)
        && bias.is_none_or(|b| b.len() >= rows)
}

/// What a panel rotation ([`panel_blocks`]'s kernels) requires: `B` in {4, 8, 16}, `n` a
/// nonzero multiple of `B`, `16 · halves <= stride`, a panel of `panel_len = n · stride`
/// values and `n · B` coefficients.
#[cfg(target_arch = "x86_64")]
fn panel_shape_ok<const B: usize>(
    panel_len: usize,
    n: usize,
    [halves, stride]: [usize; 2],
    blocks: &[f32],
) -> bool {
    matches!(B, 4 | 8 | 16)
        && n != 0
        && n.is_multiple_of(B)
        && halves.checked_mul(16).is_some_and(|v| v <= stride)
        && n.checked_mul(stride) == Some(panel_len)
        && n.checked_mul(B) == Some(blocks.len())
}

/// Row of a panel (feature) that entry `t` of block `j` of a panel rotation reads: `j·B + t`
/// for contiguous blocks, `j + t·k` for strided ones (`k = n / B` blocks). Shared by every
/// [`panel_blocks`] kernel.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
const fn panel_row<const B: usize, const STRIDED: bool>(j: usize, t: usize, k: usize) -> usize {
    if STRIDED {
        j + t * k
    } else {
        j * B + t
    }
}

/// Index of entry `(c, t)` of block `j`'s coefficient in a factor's blocks (the layouts of
/// [`contiguous_blocks`] and [`strided_blocks`]). Shared by every [`panel_blocks`] kernel.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
const fn panel_coef<const B: usize, const STRIDED: bool>(
    j: usize,
    [c, t]: [usize; 2],
    k: usize,
) -> usize {
    if STRIDED {
        (c * B + t) * k + j
    } else {
        j * B * B + t * B + c
    }
}

/// `C = A · B` (or `C += A · B` with [`Product::accumulate`]) for the shapes in `p`.
///
/// # Errors
/// [`Error::BufferTooSmall`] when an operand is shorter than its shape and stride need,
/// [`Error::LengthMismatch`] when a stride is smaller than its row width.
#[cfg(feature = "bert")]
pub(crate) fn matmul(p: &Product, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()> {
    matmul_then(p, a, b, c, RowsRef::LeBytes(&[]))
}

/// [`matmul`], telling the kernel which memory the caller reads next (`next`, for
/// example the next weight panel's bytes, whatever their type: only the memory range
/// matters) so that it can prefetch it while it computes.
///
/// # Errors
/// As [`matmul`].
pub(crate) fn matmul_then(
    p: &Product,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    next: RowsRef<'_>,
) -> Result<()> {
    p.check(a.len(), b.len(), c.len())?;
    if p.m == 0 || p.n == 0 {
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if cpu::avx512_available() {
        x86_products::matmul(p, a, b, c, next);
        return Ok(());
    }
    let _ = next;
    // Whole tiles on the SIMD kernel of the target (AVX2 + FMA: 16 columns, WebAssembly
    // SIMD128: 8); the portable kernel takes the columns left.
    #[cfg(target_arch = "x86_64")]
    let done = x86_products::matmul_avx2(p, a, b, c);
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    let done = if simd128_allowed() {
        wasm::matmul(p, a, b, c)
    } else {
        0
    };
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    )))]
    let done = 0;
    if done == 0 {
        portable::matmul(p, a, b, c);
    } else if done < p.n {
        let rest = Product {
            n: p.n - done,
            ..*p
        };
        portable::matmul(
            &rest,
            a,
            b.get(done..).unwrap_or(&[]),
            c.get_mut(done..).unwrap_or(&mut []),
        );
    }
    Ok(())
}

/// The families of SIMD kernels riffle-core picks from at run time on x86-64, least
/// capable first (see [`limit_kernels`]). On AArch64 the three levels are the portable
/// code, NEON without the dot-product instructions (`Avx2`'s level: what a Cortex-A53
/// or A72 runs) and every kernel the CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KernelFamily {
    /// The portable code only (what a CPU without AVX2 runs).
    Portable,
    /// AVX2 + FMA kernels at most (what most x86-64 PCs without AVX-512 run); on
    /// AArch64, NEON kernels without `SDOT`.
    Avx2,
    /// Every kernel the CPU runs (the default).
    Avx512,
}

/// Caps the kernels this process picks at `family`: on x86-64 an AVX-512 machine then
/// runs the code an AVX2-only or older CPU runs, for benchmarks and tests of those paths
/// (`riffle` reads it from `RIFFLE_KERNELS`); on WebAssembly `Portable` turns the SIMD128
/// kernels off (any other family turns them back on); on AArch64 `Portable` turns the
/// NEON kernels off and `Avx2` their dot-product form; elsewhere nothing changes. Never
/// turns on a kernel the CPU lacks. Call it before loading models: a layout chosen at
/// activation for one family still computes correctly under another, only slower.
///
/// ```
/// use riffle_core::math::{dense_kernel_name, limit_kernels, KernelFamily};
/// limit_kernels(KernelFamily::Portable);
/// assert_eq!(dense_kernel_name(), "portable");
/// limit_kernels(KernelFamily::Avx512);
/// ```
pub fn limit_kernels(family: KernelFamily) {
    #[cfg(target_arch = "x86_64")]
    cpu::set_ceiling(family as u8);
    #[cfg(target_arch = "aarch64")]
    arm_cpu::set_ceiling(family as u8);
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    SIMD128.store(
        family != KernelFamily::Portable,
        core::sync::atomic::Ordering::Relaxed,
    );
    #[cfg(not(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        all(target_arch = "wasm32", target_feature = "simd128")
    )))]
    let _ = family;
}

/// Whether the WebAssembly SIMD128 kernels (the dense products' here and the
/// block-quantized products' in `crate::quant`) may run: until
/// `limit_kernels(KernelFamily::Portable)`.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
static SIMD128: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(true);

/// See [`SIMD128`].
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) fn simd128_allowed() -> bool {
    SIMD128.load(core::sync::atomic::Ordering::Relaxed)
}

/// The kernel the dense products run on this CPU: `"avx512"`, `"avx2+fma"` (x86-64
/// without AVX-512), `"wasm-simd128"` (WebAssembly with SIMD128) or `"portable"`; on
/// AArch64 the block-quantized products' kernel, `"neon+dotprod"` or `"neon"` (the dense
/// ones there are the portable source, which LLVM vectorises for NEON).
pub fn simd_kernel_name() -> &'static str {
    #[cfg(target_arch = "aarch64")]
    {
        if arm_cpu::dotprod_available() {
            return "neon+dotprod";
        }
        if arm_cpu::neon_allowed() {
            return "neon";
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        if cpu::avx512_available() {
            return "avx512";
        }
        if cpu::avx2_fma_available() {
            return "avx2+fma";
        }
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if simd128_allowed() {
        return "wasm-simd128";
    }
    #[allow(unreachable_code)]
    "portable"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reflector kernels (`x86_reflectors`, unsafe) against the stored form read in
    /// `f64`: a two-factor GS chain in the paired order (k = 24 blocks: three 64-value
    /// problems, the last group half padding), one in block order with a partial last
    /// group (k = 17), and one factor. The halves are written directly as random bit
    /// patterns (no factorisation, whose square roots Miri cannot run; the kernels compute
    /// the stored form whether or not it is orthogonal): small, so that Miri runs it with
    /// the AVX-512 build (scripts/test). The AVX2 kernels give the same bits.
    #[cfg(feature = "f16")]
    #[test]
    #[allow(clippy::unwrap_used)] // a failure is a panic with its location
    fn reflector_kernel_matches_the_stored_form() {
        extern crate std;
        use crate::math::reflectors::{tests as r, ReflectorChain, GROUP, GROUP_HALVES};
        use crate::math::{ChainSpec, Permutation};
        use std::vec;
        // Two factors in the paired order (an odd number of 64-value problems: the last
        // group half padding), two factors in block order, one factor.
        for (n, m, perm, paired) in [
            (192, 2, Permutation::Gs, true),
            (136, 2, Permutation::Gs, false),
            (64, 1, Permutation::None, false),
        ] {
            let spec = ChainSpec::new(n, 8, m, perm).unwrap();
            assert_eq!(ReflectorChain::paired(spec), paired);
            let mut data = vec![0u16; ReflectorChain::len(spec)];
            // Halves as bit patterns (the `half` crate's conversions use F16C, which Miri
            // lacks): vector entries ±2^-5 .. 2^-1, τ − 2 in -1 .. -2^-7, random signs.
            let mut bits = 0x1234_5678u32 ^ n as u32;
            let mut next = |lo: u32, span: u32, negative: Option<bool>| {
                bits ^= bits << 13;
                bits ^= bits >> 17;
                bits ^= bits << 5;
                let sign = negative.unwrap_or(bits & 1 == 1);
                ((u32::from(sign) << 15)
                    | ((lo + (bits >> 8) % span) << 10)
                    | ((bits >> 20) & 0x3FF)) as u16
            };
            for group in data.chunks_exact_mut(GROUP_HALVES) {
                for (i, h) in group.iter_mut().enumerate() {
                    *h = if i < 28 * GROUP {
                        next(10, 5, None)
                    } else if i < 35 * GROUP {
                        next(8, 7, Some(true))
                    } else {
                        next(0, 1, None) // sign masks: any bits
                    };
                }
            }
            let rc = ReflectorChain::new(spec, &data).unwrap();
            let mut x = vec![0.0f32; n];
            fill(&mut x, 9);
            let mut got = vec![f32::NAN; n];
            if !rc.rotate_rows_from(&x, &mut got) {
                // No kernel here (or, on AVX2, blocks not a multiple of 8): the runtime
                // keeps the f32 blocks.
                continue;
            }
            let want = r::reference(spec, &data, &x);
            let norm: f64 = x
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                .sqrt();
            for (g, w) in got.iter().zip(&want) {
                assert!((f64::from(*g) - w).abs() <= 1e-5 * norm, "{n}: {g} vs {w}");
            }
            // The AVX2 kernels (CPUs without AVX-512; blocks a multiple of 8) on the same
            // chain: the same bits as whichever kernel ran above.
            #[cfg(target_arch = "x86_64")]
            if x86_reflectors::avx2_reflectors_available() {
                let k = n / 8;
                let per = k.div_ceil(GROUP) * GROUP_HALVES;
                let mut narrow = vec![f32::NAN; n];
                let ran = if paired {
                    let (d0, d1) = data.split_at(per);
                    x86_reflectors::pair_on(false, &x, &mut narrow, k, [d0, d1])
                } else {
                    (0..m).all(|f| {
                        let strided = crate::math::Chain::factor_is_strided(spec, f).unwrap();
                        let from = if f == 0 { Some(&x[..]) } else { None };
                        let d = &data[f * per..(f + 1) * per];
                        x86_reflectors::factor_on(false, from, &mut narrow, k, d, strided)
                    })
                };
                assert_eq!(ran, k.is_multiple_of(8), "{n}");
                if ran {
                    assert_eq!(narrow, got, "{n}: AVX2 and AVX-512 bits");
                }
            }
        }
    }

    /// Deterministic values in [-1, 1).
    fn fill(v: &mut [f32], seed: u32) {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        for x in v {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            *x = (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0;
        }
    }

    fn reference(p: &Product, a: &[f32], b: &[f32], c: &mut [f32]) {
        for i in 0..p.m {
            for j in 0..p.n {
                let mut s = 0.0f64;
                for kk in 0..p.k {
                    s += a[i * p.a_stride + kk] as f64 * b[kk * p.b_stride + j] as f64;
                }
                let o = &mut c[i * p.c_stride + j];
                *o = if p.accumulate {
                    *o + s as f32
                } else {
                    s as f32
                };
            }
        }
    }

    #[test]
    fn every_kernel_matches_a_float64_reference_on_ragged_strided_shapes() {
        let mut a = [0.0f32; 40 * 70];
        let mut b = [0.0f32; 70 * 80];
        fill(&mut a, 1);
        fill(&mut b, 2);
        // Fewer shapes under Miri (it interprets every lane), still every edge case.
        let shapes: &[(usize, usize, usize)] = if cfg!(miri) {
            &[(1, 1, 1), (13, 33, 7), (3, 17, 2)]
        } else {
            &[
                (1, 1, 1),
                (13, 33, 7),
                (12, 32, 64),
                (25, 17, 31),
                (40, 70, 70),
                (3, 80, 1),
            ]
        };
        for &(m, n, k) in shapes {
            for accumulate in [false, true] {
                let p = Product {
                    m,
                    n,
                    k,
                    a_stride: k,
                    b_stride: n + 3,
                    c_stride: n + 1,
                    accumulate,
                };
                let mut want = [0.5f32; 40 * 81];
                reference(&p, &a, &b, &mut want);
                let mut got = [0.5f32; 40 * 81];
                portable::matmul(&p, &a, &b, &mut got);
                let close = |x: &[f32], y: &[f32]| {
                    x.iter()
                        .zip(y)
                        .all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()))
                };
                assert!(close(&got, &want), "portable {m}x{n}x{k}");
                let mut got = [0.5f32; 40 * 81];
                assert!(matmul(&p, &a, &b, &mut got).is_ok());
                assert!(close(&got, &want), "dispatched {m}x{n}x{k}");
                #[cfg(target_arch = "x86_64")]
                {
                    // The AVX2 kernel (whole 16-column tiles) with the portable rest, as
                    // the dispatcher runs it on a CPU without AVX-512.
                    let mut got = [0.5f32; 40 * 81];
                    let done = x86_products::matmul_avx2(&p, &a, &b, &mut got);
                    let rest = Product { n: p.n - done, ..p };
                    portable::matmul(&rest, &a, &b[done..], &mut got[done..]);
                    assert!(close(&got, &want), "avx2 {m}x{n}x{k}");
                }
            }
        }
    }

    /// `F x` / `F^T x` per row by definition, for both block layouts.
    fn blocks_reference(
        x: &[f32],
        n: usize,
        b: usize,
        blocks: &[f32],
        transpose: bool,
        strided: bool,
    ) -> [f32; 9 * 128] {
        let k = n / b;
        let mut out = [0.0f32; 9 * 128];
        for (row, o) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            for j in 0..k {
                let at = |t: usize| if strided { t * k + j } else { j * b + t };
                let coef = |c: usize, t: usize| {
                    if strided {
                        blocks[(c * b + t) * k + j]
                    } else {
                        blocks[j * b * b + t * b + c]
                    }
                };
                for c in 0..b {
                    let mut s = 0.0f64;
                    for t in 0..b {
                        let e = if transpose { coef(t, c) } else { coef(c, t) };
                        s += e as f64 * row[at(t)] as f64;
                    }
                    o[at(c)] = s as f32;
                }
            }
        }
        out
    }

    /// A chain's panel rotation split as a batch split across threads does it: the first
    /// factor on each part's rows (`apply_panel_first`, ranges on block bounds), then the
    /// other factors on the whole panel (`apply_panel_rest`), gives the whole rotation's
    /// bits; a range off the block bounds is refused untouched.
    #[test]
    #[allow(clippy::unwrap_used)] // a failure is a panic with its location
    fn a_panel_rotated_first_in_parts_gives_the_same_bits() {
        use crate::math::{Chain, ChainSpec, Permutation};
        if !in_place_available() {
            return;
        }
        let specs: &[(usize, usize, Permutation)] = if cfg!(miri) {
            &[(64, 2, Permutation::Gs)]
        } else {
            &[
                (64, 2, Permutation::Gs),
                (384, 2, Permutation::Gs),
                (96, 1, Permutation::None),
            ]
        };
        for &(n, m, perm) in specs {
            let spec = ChainSpec::new(n, 8, m, perm).unwrap();
            let mut blocks = [0.0f32; 2 * 384 * 8];
            fill(&mut blocks, 21);
            let q = Chain::new(spec, &blocks).unwrap();
            let mut whole = [0.0f32; 384 * 16];
            fill(&mut whole, 22);
            let whole = &mut whole[..n * 16];
            let mut parts = [0.0f32; 384 * 16];
            let parts = &mut parts[..n * 16];
            parts.copy_from_slice(whole);
            assert!(q.apply_panel(whole, [1, 16]));
            let cut = n / 16 * 8; // a block bound near the middle
            let (a, b) = parts.split_at_mut(cut * 16);
            assert!(
                !q.apply_panel_first(a, 1..cut, [1, 16]),
                "off the block bounds"
            );
            assert!(q.apply_panel_first(a, 0..cut, [1, 16]));
            assert!(q.apply_panel_first(b, cut..n, [1, 16]));
            assert!(q.apply_panel_rest(parts, [1, 16]));
            let bits = |v: &[f32]| {
                v.iter()
                    .map(|x| x.to_bits())
                    .collect::<heapless::Vec<u32, 6144>>()
            };
            assert_eq!(bits(parts), bits(whole), "n={n} m={m}");
        }
    }

    /// The panel kernel (`x <- F x` for every input of a feature-major panel) against the
    /// row definition, both block layouts, b = 4, 8 and 16, one and two 16-input halves of
    /// a 32-value stride (the values past the halves untouched); bad shapes are refused
    /// untouched.
    #[test]
    fn panel_blocks_match_the_definition_when_the_cpu_has_them() {
        if !in_place_available() {
            return;
        }
        let n = 32;
        let mut blocks = [0.0f32; 32 * 16];
        fill(&mut blocks, 9);
        // Inputs as rows (input i, feature f), and the panel: feature f at f · 32 + i.
        let mut rows = [0.0f32; 32 * 32];
        fill(&mut rows, 10);
        let bs: &[usize] = if cfg!(miri) { &[4] } else { &[4, 8, 16] };
        for &b in bs {
            for strided in [false, true] {
                let coefs = &blocks[..n * b];
                for halves in [1usize, 2] {
                    let mut panel = [0.0f32; 32 * 32];
                    for (i, r) in rows.chunks_exact(n).enumerate() {
                        for (f, v) in r.iter().enumerate() {
                            panel[f * 32 + i] = *v;
                        }
                    }
                    let before = panel;
                    assert!(panel_blocks(&mut panel, n, [halves, 32], b, coefs, strided));
                    for i in 0..32 {
                        let want = blocks_reference(
                            &rows[i * n..(i + 1) * n],
                            n,
                            b,
                            coefs,
                            false,
                            strided,
                        );
                        for f in 0..n {
                            let got = panel[f * 32 + i];
                            if i < 16 * halves {
                                let w = want[f];
                                assert!(
                                    (got - w).abs() <= 1e-5 * (1.0 + w.abs()),
                                    "b={b} strided={strided} input {i} feature {f}"
                                );
                            } else {
                                assert_eq!(
                                    got,
                                    before[f * 32 + i],
                                    "input {i} past the halves is untouched"
                                );
                            }
                        }
                    }
                }
                let mut panel = [0.0f32; 32 * 32];
                assert!(!panel_blocks(&mut panel, n, [3, 32], b, coefs, strided));
                assert!(!panel_blocks(
                    &mut panel[..32 * 31],
                    n,
                    [2, 32],
                    b,
                    coefs,
                    strided
                ));
                assert!(!panel_blocks(
                    &mut panel,
                    n,
                    [2, 32],
                    b,
                    &coefs[1..],
                    strided
                ));
                assert!(panel.iter().all(|v| *v == 0.0));
            }
        }
        assert!(!panel_blocks(
            &mut [0.0f32; 32 * 32],
            32,
            [2, 32],
            5,
            &[0.0; 160],
            false
        ));
    }

    #[test]
    fn block_kernels_match_the_definition_when_the_cpu_has_them() {
        let mut blocks = [0.0f32; 128 * 16];
        fill(&mut blocks, 7);
        // (64, 8), (128, 16): strided blocks 8 apart, which the AVX2 kernel takes too.
        for (n, b) in [
            (16, 4),
            (32, 8),
            (64, 16),
            (48, 8),
            (64, 4),
            (24, 2),
            (60, 12),
            (64, 8),
            (128, 16),
        ] {
            for rows in [1usize, 2, 5, 9] {
                for transpose in [false, true] {
                    let mut x = [0.0f32; 9 * 128];
                    fill(&mut x, (n * 31 + rows) as u32);
                    let x = &mut x[..rows * n];
                    let close = |got: &[f32], want: &[f32]| {
                        got.iter()
                            .zip(want)
                            .all(|(g, w)| (g - w).abs() <= 1e-5 * (1.0 + w.abs()))
                    };
                    let want = blocks_reference(x, n, b, &blocks, transpose, false);
                    let mut got = [0.0f32; 9 * 128];
                    got[..rows * n].copy_from_slice(x);
                    let ran = match b {
                        4 => contiguous_blocks::<4>(&mut got[..rows * n], n, &blocks, transpose),
                        8 => contiguous_blocks::<8>(&mut got[..rows * n], n, &blocks, transpose),
                        16 => contiguous_blocks::<16>(&mut got[..rows * n], n, &blocks, transpose),
                        _ => false,
                    };
                    let mut from = [f32::NAN; 9 * 128];
                    let out = &mut from[..rows * n];
                    let ran_from = match b {
                        4 => contiguous_blocks_from::<4>(x, out, n, &blocks, transpose),
                        8 => contiguous_blocks_from::<8>(x, out, n, &blocks, transpose),
                        16 => contiguous_blocks_from::<16>(x, out, n, &blocks, transpose),
                        _ => false,
                    };
                    assert_eq!(ran, ran_from);
                    if ran {
                        assert_eq!(
                            &from[..rows * n],
                            &got[..rows * n],
                            "out of place = in place"
                        );
                        assert!(
                            close(&got[..rows * n], &want[..rows * n]),
                            "contiguous n={n} b={b}"
                        );
                    } else {
                        assert_eq!(&got[..rows * n], &*x, "a refused call touches nothing");
                    }
                    let want = blocks_reference(x, n, b, &blocks, transpose, true);
                    got[..rows * n].copy_from_slice(x);
                    if strided_blocks(&mut got[..rows * n], n, b, &blocks, transpose) {
                        assert!(
                            close(&got[..rows * n], &want[..rows * n]),
                            "strided n={n} b={b}"
                        );
                    } else {
                        assert_eq!(&got[..rows * n], &*x, "a refused call touches nothing");
                    }
                }
            }
        }
    }

    #[test]
    fn packing_transposes_ragged_shapes_from_floats_and_bytes() {
        let mut w = [0.0f32; 37 * 41];
        fill(&mut w, 3);
        let mut bytes = [0u8; 4 * 37 * 41 + 1];
        for (c, v) in bytes[1..].chunks_exact_mut(4).zip(&w) {
            c.copy_from_slice(&v.to_le_bytes());
        }
        for (rows, cols) in [(1, 1), (16, 16), (17, 33), (37, 41), (5, 40), (32, 3)] {
            let stride = rows + 3;
            for source in [
                RowsRef::F32(&w[..rows * cols]),
                RowsRef::LeBytes(&bytes[1..1 + 4 * rows * cols]),
            ] {
                let mut panel = [-9.0f32; 41 * 40];
                assert!(pack_transposed(source, rows, cols, &mut panel, stride).is_ok());
                for k in 0..cols {
                    for j in 0..stride {
                        let want = if j < rows { w[j * cols + k] } else { -9.0 };
                        assert_eq!(panel[k * stride + j], want, "{rows}x{cols} at ({k}, {j})");
                    }
                }
                let scale: [f32; 40] = core::array::from_fn(|j| 0.5 + j as f32 * 0.25);
                assert!(
                    pack_scaled(source, rows, cols, Some(&scale[..rows]), &mut panel, stride)
                        .is_ok()
                );
                for k in 0..cols {
                    for j in 0..rows {
                        let want = w[j * cols + k] * scale[j];
                        assert_eq!(
                            panel[k * stride + j],
                            want,
                            "scaled {rows}x{cols} at ({k}, {j})"
                        );
                    }
                }
                assert!(pack_scaled(
                    source,
                    rows,
                    cols,
                    Some(&scale[..rows - 1]),
                    &mut panel,
                    stride
                )
                .is_err());
            }
        }
        let mut small = [0.0f32; 4];
        assert!(pack_transposed(RowsRef::F32(&w[..6]), 2, 3, &mut small, 2).is_err());
        assert!(pack_transposed(RowsRef::F32(&w[..5]), 2, 3, &mut [0.0; 6], 2).is_err());
    }

    extern crate std;
    use std::vec as alloc_vec;

    /// Operands of an in-place product test: weights `rows × cols` and inputs `n × cols`
    /// (deterministic, from `seed`), the weights' little-endian bytes one byte into a
    /// buffer (unaligned), a per-output scale and bias.
    struct InPlaceCase {
        w: alloc_vec::Vec<f32>,
        x: alloc_vec::Vec<f32>,
        bytes: alloc_vec::Vec<u8>,
        scale: alloc_vec::Vec<f32>,
        bias: alloc_vec::Vec<f32>,
    }

    /// `(weight rows, inputs, columns)` of the in-place product tests: rows not a multiple
    /// of either tile (12, 6) or the 48-row chunk, inputs below 8, 16 and 32 and past a
    /// panel, a MiniLM-wide row.
    const IN_PLACE_SHAPES: [(usize, usize, usize); 8] = [
        (1, 1, 1),
        (13, 5, 3),
        (24, 16, 40),
        (12, 32, 64),
        (97, 33, 19),
        (8, 70, 40),
        (200, 17, 9),
        (50, 9, 384),
    ];

    /// [`IN_PLACE_SHAPES`], or under Miri (which is slow) two small ragged ones.
    fn in_place_shapes() -> &'static [(usize, usize, usize)] {
        if cfg!(miri) {
            &[(13, 5, 3), (2, 17, 2)]
        } else {
            &IN_PLACE_SHAPES
        }
    }

    fn in_place_case(rows: usize, n: usize, cols: usize, seed: u32) -> InPlaceCase {
        extern crate std;
        let mut w = std::vec![0.0f32; rows * cols];
        let mut x = std::vec![0.0f32; n * cols];
        fill(&mut w, seed);
        fill(&mut x, seed + 1);
        let mut bytes = std::vec![0u8; 4 * rows * cols + 1];
        for (c, v) in bytes[1..].chunks_exact_mut(4).zip(&w) {
            c.copy_from_slice(&v.to_le_bytes());
        }
        let scale = (0..rows).map(|j| 0.5 + j as f32 * 0.125).collect();
        let bias = (0..rows).map(|j| j as f32 * 0.25 - 1.0).collect();
        InPlaceCase {
            w,
            x,
            bytes,
            scale,
            bias,
        }
    }

    /// The in-place kernel against the packed-panel one (on AVX-512 the same bits: every
    /// sum in the same order) and a float64 reference, on ragged shapes: weight rows not a multiple
    /// of the 12-row tile or the 48-row chunk, inputs not a multiple of the 32-input panel
    /// (fewer than 16, between 16 and 32), weights from unaligned bytes, a wide output
    /// stride, scale and bias applied as the outputs are stored. Short operands are errors.
    #[test]
    fn weights_in_place_matches_the_panel_kernel_and_a_reference() {
        extern crate std;
        use std::vec;
        if !in_place_available() {
            return;
        }
        for &(rows, n, cols) in in_place_shapes() {
            let InPlaceCase {
                w,
                x,
                bytes,
                scale,
                bias,
            } = in_place_case(rows, n, cols, 5);
            let stride = rows + 5;
            // The packed-panel path: C = X · Wᵀ, then s ⊙ C + b as `finish_outputs` does.
            let mut wt = vec![0.0f32; cols * rows];
            assert!(pack_transposed(RowsRef::F32(&w), rows, cols, &mut wt, rows).is_ok());
            let p = Product {
                m: n,
                n: rows,
                k: cols,
                a_stride: cols,
                b_stride: rows,
                c_stride: stride,
                accumulate: false,
            };
            let mut want = vec![-7.0f32; n * stride];
            assert!(matmul(&p, &x, &wt, &mut want).is_ok());
            for t in 0..n {
                for o in 0..rows {
                    let v = &mut want[t * stride + o];
                    *v = *v * scale[o] + bias[o];
                    let exact: f64 = (0..cols)
                        .map(|k| f64::from(x[t * cols + k]) * f64::from(w[o * cols + k]))
                        .sum::<f64>()
                        * f64::from(scale[o])
                        + f64::from(bias[o]);
                    assert!((f64::from(*v) - exact).abs() <= 1e-4 * (1.0 + exact.abs()));
                }
            }
            let mut xt = vec![f32::NAN; packed_inputs_len(n, cols)];
            assert!(pack_inputs(&x, n, cols, &mut xt).is_ok());
            for source in [RowsRef::F32(&w), RowsRef::LeBytes(&bytes[1..])] {
                let mut got = vec![-7.0f32; n * stride];
                let parts = [Some(&scale[..]), Some(&bias[..])];
                let done = weights_in_place(
                    source,
                    [rows, cols],
                    &xt,
                    n,
                    &mut got,
                    stride,
                    parts,
                    source,
                );
                assert!(matches!(done, Ok(true)), "{rows}x{n}x{cols}");
                if simd_kernel_name() == "avx512" {
                    assert_eq!(got, want, "{rows} rows, {n} inputs, {cols} columns");
                } else {
                    // The AVX2 product leaves the columns past its 16-wide tiles to the
                    // portable kernel, which rounds the product before the sum.
                    for (g, w) in got.iter().zip(&want) {
                        assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{rows}x{n}x{cols}");
                    }
                }
            }
            // Short operands and a short scale are errors, touching nothing.
            let mut got = vec![-7.0f32; n * stride];
            let w_short = RowsRef::F32(&w[..rows * cols - 1]);
            let none = [None, None];
            let nothing = RowsRef::F32(&[]);
            assert!(weights_in_place(
                w_short,
                [rows, cols],
                &xt,
                n,
                &mut got,
                stride,
                none,
                nothing
            )
            .is_err());
            let xt_short = &xt[..xt.len() - 1];
            assert!(weights_in_place(
                RowsRef::F32(&w),
                [rows, cols],
                xt_short,
                n,
                &mut got,
                stride,
                none,
                nothing
            )
            .is_err());
            let y_short = &mut got[..(n - 1) * stride + rows - 1];
            assert!(weights_in_place(
                RowsRef::F32(&w),
                [rows, cols],
                &xt,
                n,
                y_short,
                stride,
                none,
                nothing
            )
            .is_err());
            let short_scale = [Some(&scale[..rows - 1]), None];
            assert!(weights_in_place(
                RowsRef::F32(&w),
                [rows, cols],
                &xt,
                n,
                &mut got,
                stride,
                short_scale,
                nothing
            )
            .is_err());
            assert!(got.iter().all(|&v| v == -7.0));
        }
        // Two inputs pack into one 16-wide panel (48 values for 3 features); 33 into two
        // 32-wide ones.
        assert!(pack_inputs(&[0.0; 5], 2, 3, &mut [0.0; 48]).is_err());
        assert!(pack_inputs(&[0.0; 6], 2, 3, &mut [0.0; 47]).is_err());
        assert!(pack_inputs(&[0.0; 6], 2, 3, &mut [0.0; 48]).is_ok());
        assert!(pack_inputs(&[0.0; 99], 33, 3, &mut [0.0; 191]).is_err());
        assert!(pack_inputs(&[0.0; 99], 33, 3, &mut [0.0; 192]).is_ok());
    }

    /// The AVX2 in-place product and panel rotation (what CPUs without AVX-512 run) on
    /// this CPU directly: within rounding of a float64 reference and, where the CPU also
    /// has AVX-512, bit for bit the AVX-512 kernels' results (each output the same chain
    /// of fused multiply-adds); ragged shapes (weight rows not a multiple of the 6-row
    /// tile, 1 to 8, 9 to 16 and 17 to 32 inputs in a panel, unaligned weight bytes, a
    /// wide output stride whose gap stays untouched); bad shapes refused untouched.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernels_match_the_avx512_ones_and_the_definition() {
        extern crate std;
        use std::vec;
        if !cpu::avx2_fma_available() {
            return;
        }
        let wide = cpu::avx512_available();
        for &(rows, n, cols) in in_place_shapes() {
            let InPlaceCase {
                w,
                x,
                bytes,
                scale,
                bias,
            } = in_place_case(rows, n, cols, 11);
            let stride = rows + 3;
            let mut xt = vec![f32::NAN; packed_inputs_len(n, cols)];
            assert!(pack_inputs(&x, n, cols, &mut xt).is_ok());
            for source in [RowsRef::F32(&w), RowsRef::LeBytes(&bytes[1..])] {
                let (s, b) = (Some(&scale[..]), Some(&bias[..]));
                let mut got = vec![-7.0f32; n * stride];
                let shape = [rows, cols];
                let none = RowsRef::F32(&[]);
                assert!(x86_products::in_place_on(
                    false,
                    source,
                    shape,
                    &xt,
                    n,
                    &mut got,
                    stride,
                    [s, b],
                    none
                ));
                for t in 0..n {
                    for o in 0..stride {
                        let v = got[t * stride + o];
                        if o >= rows {
                            assert_eq!(v, -7.0, "the stride's gap is untouched");
                            continue;
                        }
                        let exact: f64 = (0..cols)
                            .map(|k| f64::from(x[t * cols + k]) * f64::from(w[o * cols + k]))
                            .sum::<f64>()
                            * f64::from(scale[o])
                            + f64::from(bias[o]);
                        assert!(
                            (f64::from(v) - exact).abs() <= 1e-4 * (1.0 + exact.abs()),
                            "{rows}x{n}x{cols} input {t} output {o}"
                        );
                    }
                }
                if wide {
                    let mut want = vec![-7.0f32; n * stride];
                    assert!(x86_products::in_place_on(
                        true,
                        source,
                        shape,
                        &xt,
                        n,
                        &mut want,
                        stride,
                        [s, b],
                        none
                    ));
                    assert_eq!(got, want, "{rows} rows, {n} inputs, {cols} columns");
                }
            }
            let mut got = vec![-7.0f32; n * stride];
            let short = RowsRef::F32(&w[..rows * cols - 1]);
            let (shape, none) = ([rows, cols], [None, None]);
            let nothing = RowsRef::F32(&[]);
            assert!(!x86_products::in_place_on(
                false, short, shape, &xt, n, &mut got, stride, none, nothing
            ));
            let w_all = RowsRef::F32(&w);
            assert!(!x86_products::in_place_on(
                false,
                w_all,
                shape,
                &xt[1..],
                n,
                &mut got,
                stride,
                none,
                nothing
            ));
            assert!(got.iter().all(|&v| v == -7.0));
        }
        // The row kernels: contiguous blocks of 8 and 16 (in place and from a source),
        // strided blocks of 4, 8 and 16 (8 blocks to a vector), both directions.
        let mut coefs = vec![0.0f32; 384 * 16];
        fill(&mut coefs, 15);
        for (n, b) in [(64, 8), (128, 16), (64, 4), (384, 8), (384, 16)] {
            for rows in [1usize, 3, 9] {
                for transpose in [false, true] {
                    if cfg!(miri) && (n > 64 || rows > 3) {
                        continue;
                    }
                    let mut x = vec![0.0f32; rows * n];
                    fill(&mut x, (n + rows) as u32);
                    for strided in [false, true] {
                        let mut got = x.clone();
                        let mut from = vec![f32::NAN; rows * n];
                        let contiguous = |src: Option<&[f32]>, dst: &mut [f32]| match b {
                            8 => x86_avx2::contiguous_blocks::<8>(src, dst, n, &coefs, transpose),
                            16 => x86_avx2::contiguous_blocks::<16>(src, dst, n, &coefs, transpose),
                            _ => false,
                        };
                        let (ran, ran_from) = match (b, strided) {
                            (8 | 16, false) => {
                                (contiguous(None, &mut got), contiguous(Some(&x), &mut from))
                            }
                            (4, true) => (
                                x86_avx2::strided_blocks::<4>(&mut got, n, &coefs, transpose),
                                false,
                            ),
                            (8, true) => (
                                x86_avx2::strided_blocks::<8>(&mut got, n, &coefs, transpose),
                                false,
                            ),
                            (16, true) => (
                                x86_avx2::strided_blocks::<16>(&mut got, n, &coefs, transpose),
                                false,
                            ),
                            _ => continue,
                        };
                        let what =
                            std::format!("n={n} b={b} strided={strided} t={transpose} rows={rows}");
                        assert!(ran, "{what}");
                        if !strided {
                            assert!(ran_from, "{what}");
                            assert_eq!(from, got, "{what}: from a source = in place");
                        }
                        if n <= 128 {
                            let want = blocks_reference(&x, n, b, &coefs, transpose, strided);
                            for (g, w) in got.iter().zip(&want) {
                                assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{what}");
                            }
                        }
                        if wide {
                            let mut other = x.clone();
                            let ran = match (b, strided) {
                                (8, false) => x86_blocks::contiguous_blocks::<8>(
                                    &mut other, n, &coefs, transpose,
                                ),
                                (16, false) => x86_blocks::contiguous_blocks::<16>(
                                    &mut other, n, &coefs, transpose,
                                ),
                                _ => {
                                    x86_blocks::strided_blocks(&mut other, n, b, &coefs, transpose)
                                }
                            };
                            assert!(ran);
                            assert_eq!(got, other, "{what}: the AVX-512 kernel's bits");
                        }
                    }
                }
            }
        }
        // Shapes the row kernels refuse, untouched: blocks of 4 (contiguous), strided
        // blocks not 8 to a vector, a ragged row, short coefficients.
        let mut x = [1.0f32; 96];
        assert!(!x86_avx2::contiguous_blocks::<4>(
            None,
            &mut x[..64],
            64,
            &coefs,
            false
        ));
        assert!(!x86_avx2::strided_blocks::<8>(
            &mut x[..48],
            48,
            &coefs,
            false
        ));
        assert!(!x86_avx2::strided_blocks::<8>(
            &mut x[..96],
            64,
            &coefs,
            false
        ));
        assert!(!x86_avx2::contiguous_blocks::<8>(
            None,
            &mut x[..64],
            64,
            &coefs[..511],
            false
        ));
        assert!(x.iter().all(|v| *v == 1.0));
        // The transposing pack: ragged shapes, floats and unaligned bytes, with and without
        // a scale, against the portable pack bit for bit (the same single products).
        for (rows, cols) in [(8, 8), (13, 21), (16, 40), (3, 5), (33, 17)] {
            let InPlaceCase {
                w, bytes, scale, ..
            } = in_place_case(rows, 0, cols, (rows * cols) as u32);
            let (shape, stride) = ([rows, cols], rows + 2);
            for source in [RowsRef::F32(&w), RowsRef::LeBytes(&bytes[1..])] {
                for s in [None, Some(&scale[..])] {
                    let mut got = vec![-3.0f32; cols * stride];
                    let mut want = got.clone();
                    assert!(x86_products::pack_on(
                        false, source, shape, s, &mut got, stride
                    ));
                    portable::pack_transposed(source, rows, cols, s, &mut want, stride);
                    assert_eq!(got, want, "{rows}x{cols}");
                }
            }
            let mut got = vec![0.0f32; cols * stride];
            let short = RowsRef::F32(&w[..rows * cols - 1]);
            assert!(!x86_products::pack_on(
                false, short, shape, None, &mut got, stride
            ));
            let short_panel = &mut got[..(cols - 1) * stride + rows - 1];
            let w_all = RowsRef::F32(&w);
            assert!(!x86_products::pack_on(
                false,
                w_all,
                shape,
                None,
                short_panel,
                stride
            ));
            assert!(got.iter().all(|v| *v == 0.0));
        }
        // The panel rotation, both layouts, b = 4, 8 and 16, one and two halves.
        let n = 32;
        let mut blocks = [0.0f32; 32 * 16];
        fill(&mut blocks, 13);
        let mut rows = [0.0f32; 32 * 32];
        fill(&mut rows, 14);
        let mut panel0 = [0.0f32; 32 * 32];
        for (i, r) in rows.chunks_exact(n).enumerate() {
            for (f, v) in r.iter().enumerate() {
                panel0[f * 32 + i] = *v;
            }
        }
        type Kernel = fn(&mut [f32], usize, [usize; 2], &[f32]) -> bool;
        // (b, strided, the AVX2 kernel, the AVX-512 kernel)
        macro_rules! both {
            ($b:literal, $s:literal) => {
                (
                    $b,
                    $s,
                    (|p, n, h, c| x86_blocks::panel_on::<$b, $s>(false, p, n, h, c)) as Kernel,
                    (|p, n, h, c| x86_blocks::panel_on::<$b, $s>(true, p, n, h, c)) as Kernel,
                )
            };
        }
        let kernels = [
            both!(4, false),
            both!(8, false),
            both!(16, false),
            both!(4, true),
            both!(8, true),
            both!(16, true),
        ];
        for (b, strided, avx2, avx512) in kernels {
            if cfg!(miri) && b != 8 {
                continue;
            }
            let coefs = &blocks[..n * b];
            for halves in [1usize, 2] {
                let mut panel = panel0;
                assert!(avx2(&mut panel, n, [halves, 32], coefs));
                for i in 0..32 {
                    let want =
                        blocks_reference(&rows[i * n..(i + 1) * n], n, b, coefs, false, strided);
                    for f in 0..n {
                        let got = panel[f * 32 + i];
                        if i < 16 * halves {
                            assert!(
                                (got - want[f]).abs() <= 1e-5 * (1.0 + want[f].abs()),
                                "b={b} strided={strided} input {i} feature {f}"
                            );
                        } else {
                            assert_eq!(got, panel0[f * 32 + i], "past the halves: untouched");
                        }
                    }
                }
                if wide {
                    let mut other = panel0;
                    assert!(avx512(&mut other, n, [halves, 32], coefs));
                    assert_eq!(panel, other, "b={b} strided={strided} halves={halves}");
                }
            }
            let mut panel = [0.0f32; 32 * 32];
            assert!(!avx2(&mut panel, n, [3, 32], coefs));
            assert!(!avx2(&mut panel[..32 * 31], n, [2, 32], coefs));
            assert!(!avx2(&mut panel, n, [2, 32], &coefs[1..]));
            assert!(panel.iter().all(|v| *v == 0.0));
        }
    }

    #[test]
    fn short_operands_and_narrow_strides_are_errors() {
        let p = Product {
            m: 2,
            n: 3,
            k: 4,
            a_stride: 4,
            b_stride: 3,
            c_stride: 3,
            accumulate: false,
        };
        let (a, b, mut c) = ([0.0f32; 8], [0.0f32; 12], [0.0f32; 6]);
        assert!(matmul(&p, &a, &b, &mut c).is_ok());
        assert!(matmul(&p, &a[..7], &b, &mut c).is_err());
        assert!(matmul(&p, &a, &b[..11], &mut c).is_err());
        assert!(matmul(&p, &a, &b, &mut c[..5]).is_err());
        let narrow = Product { a_stride: 3, ..p };
        assert!(matmul(&narrow, &a, &b, &mut c).is_err());
    }
}
