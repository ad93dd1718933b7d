//! Matrix products over weights read in place: `y[t][r] = Σ_i W[r][i] x[t][i]` for a
//! caller-given range of rows `r` and `n` input rows `t`, and the embedding-row gather.
//!
//! The kernels here are written once, plainly, so that LLVM vectorises them for any
//! target (SSE2, WebAssembly SIMD128, Cortex-M scalar); on x86-64 the same source is
//! also compiled for AVX2 and AVX-512 and picked at run time (`x86.rs`). Per weight row
//! they take tiles of up to [`TILE`] input rows, so each weight block is unpacked once
//! per tile; the integer sums of a block go into eight `f32` lanes that are reduced once
//! per output.

use core::ops::Range;

#[cfg(feature = "k-quants")]
use super::act::Q8K_BYTES;
use super::act::{self, ActivationType, Activations, Q8_1_BYTES};
use super::{bf16, f16, f32 as f32s, le, TensorType};
use crate::{Error, Result};

/// Input rows per tile.
pub(super) const TILE: usize = 4;

/// A row-major matrix (`rows` = outputs, `cols` = inputs) of any compiled float or
/// block type, borrowed where it lies (any alignment).
#[derive(Debug, Clone, Copy)]
pub struct QMatrix<'a> {
    index: u32,
    ty: TensorType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: &'a [u8],
}

impl<'a> QMatrix<'a> {
    /// The matrix of type `ty` with `rows` rows of `cols` values stored in `data`
    /// (tensor `index` of its file, named in errors).
    ///
    /// # Errors
    /// [`Error::UnknownTensorType`] for `I32` and for types this build does not read;
    /// [`Error::ShapeMismatch`] if `cols` is not a whole number of blocks;
    /// [`Error::LengthMismatch`] if `data` is not exactly `rows` rows long.
    pub fn new(
        index: u32,
        ty: TensorType,
        rows: usize,
        cols: usize,
        data: &'a [u8],
    ) -> Result<Self> {
        if !ty.is_compiled() || !ty.is_float() {
            return Err(Error::UnknownTensorType {
                tensor: index,
                ggml_type: ty.ggml_code(),
            });
        }
        let row_bytes = ty
            .row_bytes(cols)
            .ok_or(Error::ShapeMismatch { tensor: index })?;
        let need = row_bytes
            .checked_mul(rows)
            .ok_or(Error::ShapeMismatch { tensor: index })?;
        if data.len() != need {
            return Err(Error::LengthMismatch {
                expected: need,
                found: data.len(),
            });
        }
        Ok(QMatrix {
            index,
            ty,
            rows,
            cols,
            row_bytes,
            data,
        })
    }

    /// The element type.
    pub fn ty(&self) -> TensorType {
        self.ty
    }

    /// Number of rows (outputs).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row (inputs).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The activation format the products of this matrix read.
    pub fn activation_type(&self) -> ActivationType {
        ActivationType::for_weight(self.ty).unwrap_or(ActivationType::F32)
    }

    /// The stored bytes of rows `range` (for prefetching), empty if out of range.
    pub fn row_data(&self, range: Range<usize>) -> &'a [u8] {
        let (Some(a), Some(b)) = (
            range.start.checked_mul(self.row_bytes),
            range.end.checked_mul(self.row_bytes),
        ) else {
            return &[];
        };
        self.data.get(a..b).unwrap_or(&[])
    }

    /// Decodes row `row` into `out` (exactly `cols` long): the token-embedding lookup.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `out.len() != cols` or the row does not exist.
    pub fn decode_row(&self, row: usize, out: &mut [f32]) -> Result<()> {
        if out.len() != self.cols || row >= self.rows {
            return Err(Error::LengthMismatch {
                expected: self.cols,
                found: out.len(),
            });
        }
        super::decode_f32(
            self.index,
            self.ty,
            self.cols,
            self.row_data(row..row + 1),
            0,
            out,
        )
    }
}

/// Scratch bytes [`matmul`] needs for `n` input rows of `cols` values against a weight
/// of type `ty` (0 for F32, F16, BF16), or `None` for `I32` or a `cols` that is not a
/// whole number of blocks.
pub fn activation_scratch_len(ty: TensorType, cols: usize, n: usize) -> Option<usize> {
    ActivationType::for_weight(ty)?.scratch_len(cols, n)
}

/// Prepares `n` rows of `cols` values (`x`, row-major) as `kind` activations: borrows
/// them for `F32`, quantizes them into `scratch` otherwise.
///
/// # Errors
/// [`Error::LengthMismatch`] if `x.len() != n * cols` or `cols` is not a whole number
/// of `kind` blocks; [`Error::BufferTooSmall`] if `scratch` is shorter than
/// `kind.scratch_len(cols, n)`.
pub fn quantize_activations<'s>(
    kind: ActivationType,
    x: &'s [f32],
    cols: usize,
    n: usize,
    scratch: &'s mut [u8],
) -> Result<Activations<'s>> {
    let bad = Error::LengthMismatch {
        expected: n.saturating_mul(cols),
        found: x.len(),
    };
    if Some(x.len()) != n.checked_mul(cols) {
        return Err(bad);
    }
    let need = kind.scratch_len(cols, n).ok_or(bad)?;
    let got = scratch.len();
    let out = scratch
        .get_mut(..need)
        .ok_or(Error::BufferTooSmall { needed: need, got })?;
    if cols > 0 {
        let row_bytes = need / n.max(1);
        for (x, o) in x
            .chunks_exact(cols)
            .zip(out.chunks_exact_mut(row_bytes.max(1)))
        {
            match kind {
                ActivationType::F32 => {}
                ActivationType::Q8_1 => {
                    #[cfg(target_arch = "x86_64")]
                    if super::x86::quantize_q8_1(x, o) {
                        continue;
                    }
                    act::quantize_q8_1(x, o)
                }
                ActivationType::Q8K => act::quantize_q8_k(x, o),
            }
        }
    }
    Ok(Activations {
        kind,
        cols,
        n,
        f32s: x,
        bytes: out,
    })
}

/// `y[t][r - rows.start] = Σ_i W[r][i] x[t][i]` for `r` in `rows` and `t < n`: `x` is `n`
/// rows of `w.cols()` values, `y` is `n` rows of `rows.len()` values (both row-major).
/// The activations are quantized into `scratch` first (at least
/// [`activation_scratch_len`] bytes) where the weight type needs it.
///
/// # Errors
/// As [`quantize_activations`] and [`matmul_prepared`].
pub fn matmul(
    w: &QMatrix<'_>,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut [u8],
) -> Result<()> {
    matmul_then(w, rows, x, n, y, scratch, &[])
}

/// [`matmul`], told what the caller reads next (`next`: the next layer's adapter
/// blocks), which the x86-64 decode kernels prefetch into L1 while they stream the
/// weights (the unmerged adapters' coefficients would otherwise come from memory at
/// each layer, the weights having flushed them). A hint: the result is [`matmul`]'s.
///
/// # Errors
/// As [`matmul`].
pub(crate) fn matmul_then(
    w: &QMatrix<'_>,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut [u8],
    next: &[u8],
) -> Result<()> {
    quantized_then(
        w,
        rows,
        x,
        n,
        y,
        scratch,
        Hint {
            next,
            ..Hint::default()
        },
    )
}

/// [`matmul_then`] for `n` inputs that are each a decoding step of its own sequence (a
/// server's requests decoded together): every output is computed exactly as [`matmul`]
/// computes it for that input alone (never the batch kernel, whose sums differ in their
/// last bits), while the weights are read once for up to four inputs where the kernel
/// allows it (the x86-64 AVX-512 VNNI decode kernel, the portable tiles).
///
/// # Errors
/// As [`matmul`].
#[cfg_attr(
    not(all(
        feature = "llama",
        any(feature = "q8_0", feature = "q4", feature = "k-quants")
    )),
    allow(dead_code)
)]
pub(crate) fn matmul_decode_then(
    w: &QMatrix<'_>,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut [u8],
    next: &[u8],
) -> Result<()> {
    let hint = Hint {
        next,
        decode: true,
        ..Hint::default()
    };
    quantized_then(w, rows, x, n, y, scratch, hint)
}

/// Whether products of `ty` weights with several inputs have a batch kernel on this CPU
/// (the x86-64 prompt kernel, AVX-512 VNNI: Q4_0, Q4_1, Q8_0), which
/// [`matmul_batch`] takes for any number of inputs.
#[cfg_attr(not(any(feature = "q8_0", feature = "q4")), allow(dead_code))]
pub(crate) fn batch_kernel(ty: TensorType) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::x86::batch_kernel(ty)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ty;
        false
    }
}

/// [`matmul`] on the batch kernel wherever [`batch_kernel`] says there is one, even for
/// one input (a thread's share of a prompt), so that each output is computed as the
/// whole batch computes it; elsewhere as [`matmul`].
///
/// # Errors
/// As [`matmul`].
#[cfg_attr(not(any(feature = "q8_0", feature = "q4")), allow(dead_code))]
pub(crate) fn matmul_batch(
    w: &QMatrix<'_>,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut [u8],
) -> Result<()> {
    quantized_then(
        w,
        rows,
        x,
        n,
        y,
        scratch,
        Hint {
            batch: true,
            ..Hint::default()
        },
    )
}

/// [`matmul`] with a [`Hint`]: the activations quantized into `scratch`, then the product.
fn quantized_then(
    w: &QMatrix<'_>,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut [u8],
    hint: Hint<'_>,
) -> Result<()> {
    let a = quantize_activations(w.activation_type(), x, w.cols, n, scratch)?;
    prepared_then(w, rows, &a, y, hint)
}

/// What a product may use beyond its operands: memory to prefetch, and whether to take
/// the batch kernel (see [`matmul_batch`]) or to compute every input as a decoding step
/// alone (see [`matmul_decode_then`]). The prefetch never changes the result.
#[derive(Clone, Copy, Default)]
struct Hint<'n> {
    next: &'n [u8],
    batch: bool,
    decode: bool,
}

/// [`matmul`] on activations already prepared by [`quantize_activations`] (so that
/// matrices sharing an input, q/k/v or gate/up, quantize it once).
///
/// # Errors
/// [`Error::LengthMismatch`] if `a` is not of `w.activation_type()` or not `w.cols()`
/// wide, if `rows` is not a range of rows of `w`, or if `y.len() != a.rows() *
/// rows.len()`.
pub fn matmul_prepared(
    w: &QMatrix<'_>,
    rows: Range<usize>,
    a: &Activations<'_>,
    y: &mut [f32],
) -> Result<()> {
    prepared_then(w, rows, a, y, Hint::default())
}

/// [`matmul_prepared`] with a [`Hint`].
fn prepared_then(
    w: &QMatrix<'_>,
    rows: Range<usize>,
    a: &Activations<'_>,
    y: &mut [f32],
    hint: Hint<'_>,
) -> Result<()> {
    let need = a.n.saturating_mul(rows.len());
    if y.len() != need {
        return Err(Error::LengthMismatch {
            expected: need,
            found: y.len(),
        });
    }
    let stride = rows.len();
    strided_then(w, rows, a, y, stride, hint)
}

/// [`matmul_prepared`] writing input `t`'s outputs at `y[t * y_stride ..][..rows.len()]`:
/// threads that split the rows of one product write their columns of a shared `n x
/// w.rows()` output (each its own `y` starting at its first row, `y_stride =
/// w.rows()`).
///
/// # Errors
/// As [`matmul_prepared`], and [`Error::LengthMismatch`] if `y_stride < rows.len()` or
/// `y` is shorter than `(a.rows() - 1) * y_stride + rows.len()`.
pub fn matmul_strided(
    w: &QMatrix<'_>,
    rows: Range<usize>,
    a: &Activations<'_>,
    y: &mut [f32],
    y_stride: usize,
) -> Result<()> {
    strided_then(w, rows, a, y, y_stride, Hint::default())
}

/// [`matmul_strided`] with a [`Hint`].
fn strided_then(
    w: &QMatrix<'_>,
    rows: Range<usize>,
    a: &Activations<'_>,
    y: &mut [f32],
    y_stride: usize,
    hint: Hint<'_>,
) -> Result<()> {
    if a.kind != w.activation_type() {
        return Err(Error::LengthMismatch {
            expected: w.cols,
            found: a.cols,
        });
    }
    let Some(mut p) = problem(w, rows, a, y, y_stride)? else {
        return Ok(());
    };
    p.next = hint.next;
    p.batch = hint.batch;
    p.decode = hint.decode;
    run_best(&p, y);
    Ok(())
}

/// `p` on the fastest kernel this CPU has (the x86-64, WebAssembly SIMD128 or AArch64
/// NEON kernels where they apply), else the portable one.
fn run_best(p: &Problem<'_>, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::x86::run(p, y) {
        return;
    }
    #[cfg(all(
        target_arch = "wasm32",
        target_feature = "simd128",
        any(feature = "q4", feature = "q8_0")
    ))]
    if super::wasm::run(p, y) {
        return;
    }
    #[cfg(all(
        target_arch = "aarch64",
        any(feature = "q4", feature = "q8_0", feature = "k-quants")
    ))]
    if super::arm::run(p, y) {
        return;
    }
    run(p, y);
}

/// `y[t * y_stride + r - rows.start] = Σ_i W[r][i] x[t][i]` for `r` in `rows` and `t <
/// n`, with the inputs at `f32` precision on every weight type: block types are read a
/// block at a time against the inputs (never a decoded row, never 8-bit activations; the
/// x86-64 AVX-512 kernel for Q8_0 rounds them to 16 bits per block of 32, 2^-16 of the
/// block's largest value), so the result keeps the float model's ranking (a decoder's
/// output head, whose greedy choice can hang on a near tie). Float types run as
/// [`matmul`] does.
///
/// # Errors
/// [`Error::LengthMismatch`] if `x.len() != n * w.cols()`, if `rows` is not a range of
/// rows of `w`, if `y_stride < rows.len()` or `y` is shorter than `(n - 1) * y_stride +
/// rows.len()`.
pub fn matmul_f32_inputs(
    w: &QMatrix<'_>,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    y_stride: usize,
) -> Result<()> {
    if Some(x.len()) != n.checked_mul(w.cols) {
        return Err(Error::LengthMismatch {
            expected: n.saturating_mul(w.cols),
            found: x.len(),
        });
    }
    let a = Activations {
        kind: ActivationType::F32,
        cols: w.cols,
        n,
        f32s: x,
        bytes: &[],
    };
    let Some(p) = problem(w, rows, &a, y, y_stride)? else {
        return Ok(());
    };
    if w.ty.block_len() == 1 {
        run_best(&p, y);
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if super::x86::run_f32_inputs(&p, y) {
        return Ok(());
    }
    #[cfg(all(
        target_arch = "wasm32",
        target_feature = "simd128",
        any(feature = "q4", feature = "q8_0")
    ))]
    if super::wasm::run_f32_inputs(&p, y) {
        return Ok(());
    }
    #[cfg(all(
        target_arch = "aarch64",
        any(feature = "q4", feature = "q8_0", feature = "k-quants")
    ))]
    if super::arm::run_f32_inputs(&p, y) {
        return Ok(());
    }
    run_f32_inputs(&p, y);
    Ok(())
}

/// The checked [`Problem`] of rows `rows` of `w` against `a` into `y` (`y_stride`
/// apart), or `None` when there is nothing to compute.
fn problem<'p>(
    w: &QMatrix<'p>,
    rows: Range<usize>,
    a: &Activations<'p>,
    y: &[f32],
    y_stride: usize,
) -> Result<Option<Problem<'p>>> {
    if a.cols != w.cols {
        return Err(Error::LengthMismatch {
            expected: w.cols,
            found: a.cols,
        });
    }
    if rows.start > rows.end || rows.end > w.rows {
        return Err(Error::LengthMismatch {
            expected: w.rows,
            found: rows.end,
        });
    }
    if a.n == 0 || rows.is_empty() {
        return Ok(None);
    }
    let need = (a.n - 1)
        .checked_mul(y_stride)
        .and_then(|v| v.checked_add(rows.len()));
    match need {
        Some(need) if y_stride >= rows.len() && y.len() >= need => {}
        _ => {
            return Err(Error::LengthMismatch {
                expected: need.unwrap_or(usize::MAX),
                found: y.len(),
            })
        }
    }
    Ok(Some(Problem {
        ty: w.ty,
        cols: w.cols,
        row_bytes: w.row_bytes,
        data: w.row_data(rows),
        a: *a,
        y_stride,
        next: &[],
        batch: false,
        decode: false,
    }))
}

/// A checked product: `data` is `y`'s rows of the weight, `a` its inputs.
#[derive(Clone, Copy)]
pub(super) struct Problem<'a> {
    pub ty: TensorType,
    pub cols: usize,
    pub row_bytes: usize,
    pub data: &'a [u8],
    pub a: Activations<'a>,
    /// Distance between the output rows of consecutive inputs in `y`.
    pub y_stride: usize,
    /// What the caller reads next (an adapter's blocks): the x86-64 decode kernels
    /// prefetch it into L1 while they stream the weights; a hint only.
    pub next: &'a [u8],
    /// Take the batch (prompt) kernel whatever the number of inputs, where there is one
    /// ([`batch_kernel`]): parts of a batch split across threads then compute every
    /// output as the whole batch does, even a part of one input.
    pub batch: bool,
    /// Every input is a decoding step of its own: computed as it would be alone (never
    /// the batch kernel), the weights shared between inputs only where that keeps the
    /// bits ([`matmul_decode_then`]).
    pub decode: bool,
}

/// The product on the portable kernels (the reference every SIMD build of the same
/// source is tested against). `y` is `a.n` rows of `data.len() / row_bytes` outputs.
#[inline(always)]
pub(super) fn run(p: &Problem<'_>, y: &mut [f32]) {
    match p.ty {
        TensorType::F32 => float_rows(p, y, 4, f32s::widen),
        TensorType::F16 => float_rows(p, y, 2, f16::widen),
        TensorType::BF16 => float_rows(p, y, 2, bf16::widen),
        #[cfg(feature = "q8_0")]
        TensorType::Q8_0 => block_rows::<34, false>(p, y, super::q8_0::unpack),
        #[cfg(feature = "q4")]
        TensorType::Q4_0 => block_rows::<18, false>(p, y, super::q4_0::unpack),
        #[cfg(feature = "q4")]
        TensorType::Q4_1 => block_rows::<20, true>(p, y, super::q4_1::unpack),
        #[cfg(feature = "q4")]
        TensorType::Q5_0 => block_rows::<22, false>(p, y, super::q5_0::unpack),
        #[cfg(feature = "k-quants")]
        TensorType::Q4_K => k_rows::<144>(p, y, super::q4_k::unpack),
        #[cfg(feature = "k-quants")]
        TensorType::Q6_K => k_rows::<210>(p, y, super::q6_k::unpack),
        // I32 and compiled-out types never make a `QMatrix`.
        #[allow(unreachable_patterns)]
        _ => {}
    }
}

/// Block-quantized weights against `f32` inputs on the portable kernels (the reference
/// the x86-64 builds are tested against): each block decoded by its type's reference
/// dequantization into a stack buffer, multiplied by its inputs into eight lanes.
#[inline(always)]
pub(super) fn run_f32_inputs(p: &Problem<'_>, y: &mut [f32]) {
    match p.ty {
        #[cfg(feature = "q8_0")]
        TensorType::Q8_0 => decoded_blocks::<32, 34>(p, y, super::q8_0::decode_block),
        #[cfg(feature = "q4")]
        TensorType::Q4_0 => decoded_blocks::<32, 18>(p, y, super::q4_0::decode_block),
        #[cfg(feature = "q4")]
        TensorType::Q4_1 => decoded_blocks::<32, 20>(p, y, super::q4_1::decode_block),
        #[cfg(feature = "q4")]
        TensorType::Q5_0 => decoded_blocks::<32, 22>(p, y, super::q5_0::decode_block),
        #[cfg(feature = "k-quants")]
        TensorType::Q4_K => decoded_blocks::<256, 144>(p, y, super::q4_k::decode_block),
        #[cfg(feature = "k-quants")]
        TensorType::Q6_K => decoded_blocks::<256, 210>(p, y, super::q6_k::decode_block),
        _ => run(p, y),
    }
}

/// `f(b, block)` for every whole `B`-byte block `b` of `row`.
#[inline(always)]
#[allow(dead_code)] // unused when every block type is compiled out
fn for_blocks<const B: usize>(row: &[u8], mut f: impl FnMut(usize, &[u8; B])) {
    for (b, wb) in row.chunks_exact(B).enumerate() {
        if let Ok(wb) = <&[u8; B]>::try_from(wb) {
            f(b, wb);
        }
    }
}

/// Blocks of `L` values in `B` bytes, decoded one at a time, against `f32` inputs.
#[inline(always)]
#[allow(dead_code)] // unused when every block type is compiled out
fn decoded_blocks<const L: usize, const B: usize>(
    p: &Problem<'_>,
    y: &mut [f32],
    decode: impl Fn(&[u8; B], &mut [f32; L]),
) {
    let cols = p.cols;
    let x = p.a.f32s;
    let mut buf = [0f32; L];
    tiles(p, y, |row, t0, tn, out| {
        let mut acc = [[0f32; 8]; TILE];
        for_blocks::<B>(row, |b, wb| {
            decode(wb, &mut buf);
            for (t, acc) in acc.iter_mut().enumerate().take(tn) {
                let start = (t0 + t) * cols + b * L;
                if let Some(xs) = x.get(start..start + L) {
                    for (w8, x8) in buf.chunks_exact(8).zip(xs.chunks_exact(8)) {
                        for ((a, &w), &x) in acc.iter_mut().zip(w8).zip(x8) {
                            *a += w * x;
                        }
                    }
                }
            }
        });
        for (o, acc) in out.iter_mut().zip(&acc) {
            *o = acc.iter().sum();
        }
    });
}

/// Weight rows per chunk: a chunk stays in L1/L2 while every tile of input rows passes
/// over it, and each tile writes its outputs as runs of this many contiguous values.
const ROW_CHUNK: usize = 16;

/// Runs `tile(row, t0, tn, out)` (the `tn <= TILE` outputs of one weight row for input
/// rows `t0 ..`) over chunks of [`ROW_CHUNK`] weight rows, every tile of input rows per
/// chunk, and stores the outputs in `y` (input-row-major).
#[inline(always)]
pub(super) fn tiles(
    p: &Problem<'_>,
    y: &mut [f32],
    mut tile: impl FnMut(&[u8], usize, usize, &mut [f32; TILE]),
) {
    let rb = p.row_bytes.max(1);
    let n = p.a.n;
    let nrows = p.y_stride;
    for (c, chunk) in p.data.chunks(ROW_CHUNK * rb).enumerate() {
        let mut t0 = 0;
        while t0 < n {
            let tn = (n - t0).min(TILE);
            for (i, row) in chunk.chunks_exact(rb).enumerate() {
                let r = c * ROW_CHUNK + i;
                let mut out = [0f32; TILE];
                tile(row, t0, tn, &mut out);
                for (t, &v) in out.iter().enumerate().take(tn) {
                    if let Some(o) = y.get_mut((t0 + t) * nrows + r) {
                        *o = v;
                    }
                }
            }
            t0 += tn;
        }
    }
}

/// F32, F16, BF16 weights against `f32` inputs: 64 weights widened at a time, then
/// multiplied into eight lanes per input row of the tile.
#[inline(always)]
fn float_rows(p: &Problem<'_>, y: &mut [f32], size: usize, widen: impl Fn(&[u8], &mut [f32])) {
    const CHUNK: usize = 64;
    let cols = p.cols;
    let x = p.a.f32s;
    tiles(p, y, |row, t0, tn, out| {
        let mut acc = [[0f32; 8]; TILE];
        let mut buf = [0f32; CHUNK];
        for (c, wb) in row.chunks(CHUNK * size).enumerate() {
            let len = wb.len() / size;
            widen(wb, &mut buf[..len]);
            for (t, acc) in acc.iter_mut().enumerate().take(tn) {
                let start = (t0 + t) * cols + c * CHUNK;
                let Some(xs) = x.get(start..start + len) else {
                    continue;
                };
                if let (Ok(xs), Ok(ws)) = (
                    <&[f32; CHUNK]>::try_from(xs),
                    <&[f32; CHUNK]>::try_from(&buf[..len]),
                ) {
                    for (w8, x8) in ws.chunks_exact(8).zip(xs.chunks_exact(8)) {
                        for ((a, &w), &x) in acc.iter_mut().zip(w8).zip(x8) {
                            *a += w * x;
                        }
                    }
                } else {
                    for (i, (&w, &x)) in buf.iter().zip(xs).enumerate() {
                        acc[i % 8] += w * x;
                    }
                }
            }
        }
        for (o, acc) in out.iter_mut().zip(&acc) {
            *o = acc.iter().sum();
        }
    });
}

/// Blocks of 32 (`B` bytes, value = `d q + m`) against Q8_1 inputs; `MIN` adds the
/// `m * s` term (Q4_1).
#[inline(always)]
#[cfg_attr(not(any(feature = "q4", feature = "q8_0")), allow(dead_code))]
fn block_rows<const B: usize, const MIN: bool>(
    p: &Problem<'_>,
    y: &mut [f32],
    unpack: impl Fn(&[u8; B], &mut [i8; 32]) -> (f32, f32),
) {
    let arow = p.cols / 32 * Q8_1_BYTES;
    let acts = p.a.bytes;
    tiles(p, y, |row, t0, tn, out| {
        let mut acc = [[0f32; 8]; TILE];
        let mut mins = [0f32; TILE];
        let mut q = [0i8; 32];
        for (b, wb) in row.chunks_exact(B).enumerate() {
            let Ok(wb) = <&[u8; B]>::try_from(wb) else {
                continue;
            };
            let (d, m) = unpack(wb, &mut q);
            for t in 0..tn {
                let at = (t0 + t) * arow + b * Q8_1_BYTES;
                let Some(ab) = acts.get(at..at + Q8_1_BYTES) else {
                    continue;
                };
                let (head, qs) = ab.split_at(8);
                let ad = f32::from_le_bytes(le(&head[..4]));
                let mut lanes = [0i32; 8];
                for (w8, a8) in q.chunks_exact(8).zip(qs.chunks_exact(8)) {
                    for ((l, &w), &x) in lanes.iter_mut().zip(w8).zip(a8) {
                        *l += i32::from(w) * i32::from(x as i8);
                    }
                }
                let dd = d * ad;
                for (a, &l) in acc[t].iter_mut().zip(&lanes) {
                    *a += dd * l as f32;
                }
                if MIN {
                    mins[t] += m * f32::from_le_bytes(le(&head[4..]));
                }
            }
        }
        for ((o, acc), m) in out.iter_mut().zip(&acc).zip(&mins) {
            *o = acc.iter().sum::<f32>() + m;
        }
    });
}

/// K-quant super-blocks (`B` bytes) against Q8_K inputs.
#[cfg(feature = "k-quants")]
#[inline(always)]
fn k_rows<const B: usize>(
    p: &Problem<'_>,
    y: &mut [f32],
    unpack: impl Fn(&[u8; B], &mut super::q8_k::KBlock),
) {
    let arow = p.cols / 256 * Q8K_BYTES;
    let acts = p.a.bytes;
    let mut k = super::q8_k::KBlock::default();
    tiles(p, y, |row, t0, tn, out| {
        for_blocks::<B>(row, |b, wb| {
            unpack(wb, &mut k);
            for (t, o) in out.iter_mut().enumerate().take(tn) {
                let at = (t0 + t) * arow + b * Q8K_BYTES;
                if let Some(ab) = acts.get(at..at + Q8K_BYTES) {
                    *o += super::q8_k::dot(&k, ab);
                }
            }
        });
    });
}
