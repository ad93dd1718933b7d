//! Weight views and the dense kernels of the forward pass.
//!
//! A weight is either a tensor read in place from the model's bytes (F32, F16, Q8_0 or
//! BF16, any alignment) or a caller-owned `f32` slice (merged mode). Kernels decode a
//! few rows at a time into scratch and reuse them across the whole batch of inputs, so
//! a quantised base costs one decode per forward, not one per input row.

use crate::gguf::{decode_f32_run, TensorInfo, TensorType};
use crate::math::gemm::{
    in_place_available, matmul_then, pack_inputs, pack_scaled, packed_inputs_len, weights_in_place,
    Product, RowsRef,
};
#[cfg(feature = "parallel")]
use crate::par::{run_split, split_ranges, Executor, MAX_PARTS};
use crate::{Error, Result};

/// A compact reference to a tensor's bytes: what the runtime keeps per weight (a
/// fraction of a [`TensorInfo`], so model tables stay small on a microcontroller).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorRef<'a> {
    index: u32,
    ty: TensorType,
    elements: usize,
    data: &'a [u8],
}

impl<'a> TensorRef<'a> {
    /// Keeps the bytes, type and element count of `t`.
    pub fn new(t: &TensorInfo<'a>) -> Self {
        TensorRef {
            index: t.index(),
            ty: t.ggml_type(),
            elements: t.element_count(),
            data: t.data(),
        }
    }
    /// A little-endian F32 array of `data.len() / 4` elements (the baked reader's
    /// weights and biases), numbered `index` in errors.
    #[cfg(feature = "baked")]
    pub(crate) fn f32_le(index: u32, data: &'a [u8]) -> Self {
        TensorRef {
            index,
            ty: TensorType::F32,
            elements: data.len() / 4,
            data,
        }
    }
    /// Position in its file's tensor table.
    pub fn index(&self) -> u32 {
        self.index
    }
    /// Element type.
    pub fn ggml_type(&self) -> TensorType {
        self.ty
    }
    /// Number of elements.
    pub fn element_count(&self) -> usize {
        self.elements
    }
    /// The stored bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }
    /// Elements `start .. end` as a tensor of their own, or `None` when `start` and `end`
    /// are not on block boundaries of the type (or out of range).
    #[cfg(feature = "parallel")]
    pub(crate) fn rows_view(&self, start: usize, end: usize) -> Option<TensorRef<'a>> {
        let bytes = self.byte_range(start, end)?;
        Some(TensorRef {
            index: self.index,
            ty: self.ty,
            elements: end - start,
            data: self.data.get(bytes)?,
        })
    }

    /// The bytes of elements `start .. end`, when both are on block boundaries.
    #[cfg(feature = "parallel")]
    fn byte_range(&self, start: usize, end: usize) -> Option<core::ops::Range<usize>> {
        if start > end || end > self.elements {
            return None;
        }
        let (block, bytes) = (self.ty.block_len(), self.ty.block_bytes());
        if !start.is_multiple_of(block) || !end.is_multiple_of(block) {
            return None;
        }
        Some(start / block * bytes..end / block * bytes)
    }

    /// Decodes elements `start .. start + out.len()` into `out` (see [`TensorInfo::decode_f32`]).
    ///
    /// # Errors
    /// As [`TensorInfo::decode_f32`].
    pub fn decode_f32(&self, start: usize, out: &mut [f32]) -> Result<()> {
        decode_f32_run(self.index, self.ty, self.elements, self.data, start, out)
    }
}

/// A 2-D weight `(rows, cols)` = `(out, in)`, row-major.
#[derive(Debug, Clone, Copy)]
pub enum WeightView<'x> {
    /// Read in place from a GGUF tensor (any supported type).
    Tensor(TensorRef<'x>),
    /// Plain `f32` values (merged weights).
    F32(&'x [f32]),
}

impl<'x> WeightView<'x> {
    /// Rows `r0 .. r1` (each `cols` long) as a view of their own, or `None` when they do
    /// not start on a block boundary of the tensor's type.
    #[cfg(feature = "parallel")]
    pub(crate) fn rows_view(&self, r0: usize, r1: usize, cols: usize) -> Option<WeightView<'x>> {
        match self {
            WeightView::F32(w) => w.get(r0 * cols..r1 * cols).map(WeightView::F32),
            WeightView::Tensor(t) => t.rows_view(r0 * cols, r1 * cols).map(WeightView::Tensor),
        }
    }

    /// The stored memory of rows `r0 .. r0 + n` (each `cols` long) in whatever type they
    /// are, for prefetching; empty when out of range.
    fn raw_rows(&self, r0: usize, n: usize, cols: usize) -> RowsRef<'x> {
        let (start, end) = (r0 * cols, (r0 + n) * cols);
        match self {
            WeightView::F32(w) => RowsRef::F32(w.get(start..end).unwrap_or(&[])),
            WeightView::Tensor(t) => {
                let ty = t.ggml_type();
                let (len, size) = (ty.block_len(), ty.block_bytes());
                let bytes = start / len * size..end.div_ceil(len) * size;
                RowsRef::LeBytes(t.data().get(bytes).unwrap_or(&[]))
            }
        }
    }

    /// Writes rows `r0 .. r0 + n` (each `cols` long) as `f32` into `buf`, or returns them
    /// borrowed when they already are `f32` in memory.
    fn rows<'b>(
        &'b self,
        r0: usize,
        n: usize,
        cols: usize,
        buf: &'b mut [f32],
    ) -> Result<&'b [f32]> {
        let len = n * cols;
        match self {
            WeightView::F32(w) => w
                .get(r0 * cols..r0 * cols + len)
                .ok_or(Error::LengthMismatch {
                    expected: r0 * cols + len,
                    found: w.len(),
                }),
            WeightView::Tensor(t) => {
                let out = buf.get_mut(..len).ok_or(Error::BufferTooSmall {
                    needed: len,
                    got: 0,
                })?;
                t.decode_f32(r0 * cols, out)?;
                Ok(out)
            }
        }
    }
}

/// Element type of a tensor as a short name (`F32`, `F16`, `Q8_0`, ...).
pub fn type_name(t: TensorType) -> &'static str {
    t.name()
}

/// A dense layer as the kernels see it: weight `(rows, cols)`, an optional per-output
/// scale (an adapter's `s`) and an optional bias: `y = s ⊙ (W x) + bias`.
#[derive(Debug, Clone, Copy)]
pub struct Dense<'x> {
    /// The weight.
    pub weight: WeightView<'x>,
    /// Output width.
    pub rows: usize,
    /// Input width.
    pub cols: usize,
    /// Per-output scale (`rows` values), applied before the bias, if any.
    pub scale: Option<&'x [f32]>,
    /// Bias (`rows` values), if any.
    pub bias: Option<&'x [f32]>,
}

impl<'x> Dense<'x> {
    /// Output rows `r` as a layer of their own (weight rows, scale and bias sliced), or
    /// `None` when the weight cannot be cut there (not on a block boundary) or `r` is out
    /// of range: one part of a product split by output rows.
    #[cfg(feature = "parallel")]
    pub(crate) fn row_range(&self, r: core::ops::Range<usize>) -> Option<Dense<'x>> {
        let cut = |v: Option<&'x [f32]>| match v {
            Some(v) => v.get(r.clone()).map(Some),
            None => Some(None),
        };
        Some(Dense {
            weight: self.weight.rows_view(r.start, r.end, self.cols)?,
            rows: r.len(),
            cols: self.cols,
            scale: cut(self.scale)?,
            bias: cut(self.bias)?,
        })
    }
}

/// Outputs computed together: one panel of `PANEL` weight rows, transposed (the width of
/// the AVX-512 kernel's tile on x86-64, of the portable kernel's elsewhere).
pub const PANEL: usize = if cfg!(target_arch = "x86_64") { 32 } else { 16 };

/// Batches of at least this many input rows use the panel kernel; smaller ones (a single
/// vector, the usual case on a microcontroller) decode one weight row at a time.
pub const PANEL_MIN_ROWS: usize = 8;

/// Scratch `f32`s that [`linear`] needs for at most `n` inputs of width `cols`: one
/// decoded weight row for small batches, or a decoded panel of `PANEL` weight rows and
/// its transpose; with the block kernels compiled in, at least the 8-bit activations of
/// the `n` inputs (at most 1.25 bytes a value: Q8_1's 40 bytes per 32) viewed as bytes.
pub const fn weight_scratch_len(cols: usize, n: usize) -> usize {
    let rows = if n >= PANEL_MIN_ROWS {
        let panels = cols.saturating_mul(2 * PANEL);
        let in_place = in_place_scratch_len(cols, n);
        if in_place > panels {
            in_place
        } else {
            panels
        }
    } else {
        cols
    };
    if QUANT_ROWS {
        let act = n
            .saturating_mul(cols)
            .saturating_mul(5)
            .div_ceil(16)
            .saturating_add(16);
        if act > rows {
            act
        } else {
            rows
        }
    } else {
        rows
    }
}

/// Weight rows decoded at a time for the in-place kernel when the weights are not `f32`
/// in memory.
const DECODE_ROWS: usize = 32;

/// Values [`aligned_area`] may skip at the start of a scratch so that the packed
/// inputs begin on a 64-byte line: with the panel misaligned every vector load of the
/// product and the rotation spans two lines (aligning it made MiniLM's forward 0.93x the
/// time at 128 tokens, docs/benchmarks.md section 18).
const ALIGN_SLACK: usize = 15;

/// Scratch of the in-place path ([`in_place_available`], x86-64 only): the packed inputs
/// and [`DECODE_ROWS`] decoded weight rows (also all [`rotated_in_place`] needs), plus
/// [`ALIGN_SLACK`].
const fn in_place_scratch_len(cols: usize, n: usize) -> usize {
    if cfg!(target_arch = "x86_64") {
        packed_inputs_len(n, cols)
            .saturating_add(DECODE_ROWS.saturating_mul(cols))
            .saturating_add(ALIGN_SLACK)
    } else {
        0
    }
}

/// Whether small batches over quantized weights take the block kernels of
/// [`crate::quant`] (8-bit activations against the blocks, never a decoded row).
pub(crate) const QUANT_ROWS: bool =
    cfg!(any(feature = "q8_0", feature = "q4", feature = "k-quants"));

/// `y[r][o] = sum_i x[r][i] · W[o][i] (+ bias[o])` for a batch of `n` input rows.
///
/// `x` is `(n, cols)`, `y` is `(n, rows)`, both row-major; `wbuf` needs
/// [`weight_scratch_len`]`(cols, n)` values. Large batches on x86-64 CPUs with AVX-512 or AVX2 + FMA pack
/// the inputs once and read `f32` weights where they lie (other types decoded a few rows at a
/// time); elsewhere they decode the weight `PANEL` rows at a time and transposed into a
/// `(cols, PANEL)` panel, then multiply the whole batch by it with the register-tiled
/// kernel of the `gemm` module. Either way every weight is read once and reused by all
/// `n` inputs. Cost `n · rows · cols` multiply-adds plus one decode of `W`.
///
/// # Errors
/// [`Error::LengthMismatch`] / [`Error::BufferTooSmall`] for short buffers.
pub fn linear(
    layer: &Dense<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    wbuf: &mut [f32],
) -> Result<()> {
    linear_then(layer, x, n, y, wbuf, &[])
}

/// [`linear`], told what the caller reads next (`after`: the next slot's adapter
/// blocks in the unmerged forward pass): the product of the last weight panel prefetches
/// it into L2, as every other panel's product prefetches the next panel. Without it
/// those blocks (1.3 MB for a MiniLM adapter) come from DRAM at each slot, because the
/// base's weights stream through the caches between two uses.
pub(crate) fn linear_then(
    layer: &Dense<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    wbuf: &mut [f32],
    after: &[f32],
) -> Result<()> {
    linear_in(layer, x, n, y, wbuf, after, Mode::for_batch(n, layer.cols))
}

/// [`linear_then`] with `f32` inputs on every weight type (never the block kernels'
/// 8-bit activations): encoders and vector models, whose outputs stay as they were.
pub(crate) fn linear_f32_inputs(
    layer: &Dense<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    wbuf: &mut [f32],
    after: &[f32],
) -> Result<()> {
    linear_in(
        layer,
        x,
        n,
        y,
        wbuf,
        after,
        Mode::for_inputs(n, layer.cols, false),
    )
}

/// How [`linear_in`] computes: the panel kernel or row by row, and whether an output
/// scale is folded into the panels. Decided by the whole batch, so that the parts of a
/// batch split across threads compute every output exactly as the whole batch would.
#[derive(Debug, Clone, Copy)]
struct Mode {
    panel: bool,
    fold_scale: bool,
    /// Small batches over block-quantized weights take the block kernels with 8-bit
    /// activations (else a decoded row at a time against `f32` inputs).
    #[cfg_attr(
        not(any(feature = "q8_0", feature = "q4", feature = "k-quants")),
        allow(dead_code)
    )]
    quant: bool,
    /// Batches (a prompt) over weights of a type with a batch kernel on this CPU
    /// (`quant::batch_kernel`) take it with 8-bit activations, but for the batch's last
    /// row (see `last_f32`).
    #[cfg_attr(not(any(feature = "q8_0", feature = "q4")), allow(dead_code))]
    batch: bool,
    /// The last input row given is the batch's last: it takes `f32` inputs (a prompt's
    /// last row decides the first answer token; see `for_batch`).
    #[cfg_attr(not(any(feature = "q8_0", feature = "q4")), allow(dead_code))]
    last_f32: bool,
    /// Every input is a decoding step of its own sequence (a server's requests decoded
    /// together): each computed exactly as a batch of one computes it, the weights
    /// shared where the kernels keep those bits ([`Mode::for_steps`]).
    #[cfg_attr(
        not(any(feature = "q8_0", feature = "q4", feature = "k-quants")),
        allow(dead_code)
    )]
    decode: bool,
}

impl Mode {
    fn for_batch(n: usize, cols: usize) -> Self {
        // An adapter's output scale costs `rows · cols` multiplies folded into the
        // panels, or `n · rows` in the output pass that adds the bias anyway: the panels
        // only for batches wider than the input (measured: MiniLM's unmerged forward at
        // 16–128 tokens is 0.3 to 2 points faster with the scale on the outputs,
        // docs/runtime.md).
        Mode {
            panel: n >= PANEL_MIN_ROWS,
            fold_scale: n > cols,
            // Single inputs: a decoder's token-by-token steps, memory-bound.
            quant: n == 1,
            // Prompts: 8-bit activations on the batch kernel, but on the last row, which
            // decides the first answer token: 8-bit activations there can turn a near
            // tie (SmolLM2's France answer read in chunks of 32 + 5, docs/runtime.md).
            batch: n >= 2,
            last_f32: true,
            decode: false,
        }
    }

    /// Inputs that are each a decoding step: as [`Mode::for_inputs`] computes one input
    /// (the block kernels with 8-bit activations when `block_kernels`, else `f32` inputs
    /// a block at a time), for any number of them.
    #[cfg_attr(not(feature = "llama"), allow(dead_code))]
    fn for_steps(block_kernels: bool) -> Self {
        Mode {
            quant: block_kernels,
            decode: true,
            ..Mode::for_inputs(1, 1, block_kernels)
        }
    }

    /// [`Mode::for_batch`], on the block kernels with 8-bit activations only when
    /// `block_kernels` (decoders); `f32` inputs on every weight type otherwise.
    fn for_inputs(n: usize, cols: usize, block_kernels: bool) -> Self {
        let batch = Mode::for_batch(n, cols);
        Mode {
            quant: batch.quant && block_kernels,
            batch: batch.batch && block_kernels,
            ..batch
        }
    }
}

#[cfg(feature = "parallel")]
/// A single input's product is split across threads only from this many weights on (128
/// K: a few microseconds of a memory-bound product on one core, against about one
/// microsecond for a spinning pool thread to pick up its part). With SmolLM2-135M every
/// product but the 576 x 192 key and value ones splits; measured at 2 threads, decode
/// 1.26-1.34x faster than splitting only the output head (docs/benchmarks.md section 12).
pub(crate) const PAR_MIN_WEIGHTS: usize = 1 << 17;

#[cfg(feature = "parallel")]
/// Token rows per part are multiples of this (the x86-64 kernel's tile height; the
/// portable kernel's divides it), so parts tile the batch as the whole batch does.
const TOKEN_ALIGN: usize = 12;

#[cfg(feature = "parallel")]
#[allow(clippy::too_many_arguments)]
/// [`linear_then`] with its work split across `exec`'s threads: a single input by output
/// rows (each part a contiguous run of `y`); a batch on the in-place kernel by input rows
/// in whole 32-input panels (each part packs its own inputs and writes its own rows of `y`,
/// reading every weight: measured on MiniLM at 128 tokens and two threads, 17% faster
/// than by output rows, whose packing and interleaving run on one thread), other
/// batches by output rows when `spare` holds `n · rows` values (each part computes its
/// rows' outputs for every input into its own block of `spare`, reading only its share
/// of the weights, which are then interleaved into `y` by input rows), by input rows
/// otherwise (each part then reads every weight).
/// Every output is computed by the same arithmetic as on one thread (bit-identical
/// results); `wbuf` serves the one-thread path, parts take their scratch from the
/// executor.
///
/// # Errors
/// As [`linear`].
pub(crate) fn linear_par(
    exec: &dyn Executor,
    layer: &Dense<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    wbuf: &mut [f32],
    spare: &mut [f32],
    after: &[f32],
    precise: bool,
) -> Result<()> {
    let mode = Mode::for_inputs(n, layer.cols, !precise);
    linear_par_in(exec, layer, x, n, y, wbuf, spare, after, mode)
}

#[cfg(all(feature = "parallel", feature = "llama"))]
#[allow(clippy::too_many_arguments)]
/// [`linear_steps`] with its work split across `exec`'s threads as [`linear_par`] splits
/// a product (each output computed as on one thread).
///
/// # Errors
/// As [`linear`].
pub(crate) fn linear_par_steps(
    exec: &dyn Executor,
    layer: &Dense<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    (wbuf, spare): (&mut [f32], &mut [f32]),
    block_kernels: bool,
) -> Result<()> {
    let mode = Mode::for_steps(block_kernels);
    linear_par_in(exec, layer, x, n, y, wbuf, spare, &[], mode)
}

/// `y = layer(x)` for `n` inputs that are each a decoding step of its own sequence (a
/// server's requests decoded together): every output row is bit for bit the one the
/// same input gets as a product of one ([`linear_then`] with one input when
/// `block_kernels`, [`linear_f32_inputs`] otherwise), while the block kernels read each
/// weight once for several inputs where that keeps those bits. `wbuf` needs
/// [`weight_scratch_len`]`(cols, n)` values.
///
/// # Errors
/// As [`linear`].
#[cfg(feature = "llama")]
pub(crate) fn linear_steps(
    layer: &Dense<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    wbuf: &mut [f32],
    block_kernels: bool,
) -> Result<()> {
    linear_in(layer, x, n, y, wbuf, &[], Mode::for_steps(block_kernels))
}

#[cfg(feature = "parallel")]
#[allow(clippy::too_many_arguments)]
/// [`linear_par`] in `mode`.
fn linear_par_in(
    exec: &dyn Executor,
    layer: &Dense<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    wbuf: &mut [f32],
    spare: &mut [f32],
    after: &[f32],
    mode: Mode,
) -> Result<()> {
    let (rows, cols) = (layer.rows, layer.cols);
    let threads = exec.threads();
    if threads <= 1 || x.len() < n * cols || y.len() < n * rows || n == 0 {
        return linear_in(layer, x, n, y, wbuf, after, mode);
    }
    if n == 1 && rows.saturating_mul(cols) < PAR_MIN_WEIGHTS {
        // One input against a small matrix: handing a part to another thread costs
        // more than the part.
        return linear_in(layer, x, n, y, wbuf, after, mode);
    }
    // Output rows in parts on `PANEL` boundaries, when the weight can be cut into rows.
    let mut row_starts = [0usize; MAX_PARTS + 1];
    let row_parts = split_ranges(rows, threads, PANEL, &mut row_starts);
    let by_rows = (row_parts > 1 && layer.weight.rows_view(0, rows, cols).is_some())
        .then_some((&row_starts, row_parts));
    let mut starts = [0usize; MAX_PARTS + 1];
    let in_place = n > 1 && in_place_available() && takes_panel_kernel(layer.weight, n, mode);
    let token_parts = if in_place {
        split_ranges(n, threads, crate::math::gemm::INPUT_PANEL, &mut starts)
    } else {
        0
    };
    let ok = if token_parts > 1 {
        // The in-place kernel by input rows in whole panels: each part packs its own
        // inputs and writes its own rows of `y`, every weight read by every part.
        by_input_rows(exec, layer, x, n, y, (&starts, token_parts), mode, after)
    } else if n == 1 {
        // By output rows, each part writing its own run of `y`.
        let Some(split) = by_rows else {
            return linear_in(layer, x, n, y, wbuf, after, mode);
        };
        output_row_blocks(
            exec,
            layer,
            x,
            1,
            &mut y[..rows],
            mode,
            split,
            [after, &[]],
            None,
        )
    } else if let Some(split) = by_rows.filter(|_| spare.len() >= n * rows) {
        by_output_rows(
            exec,
            layer,
            x,
            n,
            y,
            &mut spare[..n * rows],
            mode,
            split,
            (after, wbuf),
            None,
        )
    } else {
        // By input rows: part k reads tokens starts[k] .. starts[k + 1].
        let count = split_ranges(n, threads, TOKEN_ALIGN, &mut starts);
        if count <= 1 {
            return linear_in(layer, x, n, y, wbuf, after, mode);
        }
        by_input_rows(exec, layer, x, n, y, (&starts, count), mode, &[])
    };
    if !ok {
        // Every size was checked above: only a malformed tensor can fail; the one-thread
        // pass names the error.
        return linear_in(layer, x, n, y, wbuf, after, mode);
    }
    Ok(())
}

#[cfg(feature = "parallel")]
#[allow(clippy::too_many_arguments)]
/// [`linear_par`] by input rows: part k computes the outputs of inputs `starts[k] ..
/// starts[k + 1]` (the batch's last row keeping its `f32` mode), prefetching `after`.
/// False when a part failed.
fn by_input_rows(
    exec: &dyn Executor,
    layer: &Dense<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    (starts, count): (&[usize; MAX_PARTS + 1], usize),
    mode: Mode,
    after: &[f32],
) -> bool {
    let (rows, cols) = (layer.rows, layer.cols);
    run_split(
        exec,
        &mut y[..n * rows],
        starts,
        count,
        rows,
        weight_scratch_len(cols, n),
        &|t, out, scratch| {
            let xs = &x[t.start * cols..t.end * cols];
            let part = Mode {
                last_f32: t.end == n,
                ..mode
            };
            linear_in(layer, xs, t.len(), out, scratch, after, part).is_ok()
        },
    )
}

#[cfg(all(feature = "parallel", feature = "llama"))]
/// One input through `layer` (typically a run of a slot's rows, as one part of a step) in
/// the mode [`linear_par`] gives a single input: block kernels with 8-bit activations when
/// `block_kernels`, `f32` inputs otherwise; prefetches `after`.
///
/// # Errors
/// As [`linear`].
pub(crate) fn single_input_rows(
    layer: &Dense<'_>,
    x: &[f32],
    y: &mut [f32],
    wbuf: &mut [f32],
    after: &[f32],
    block_kernels: bool,
) -> Result<()> {
    linear_in(
        layer,
        x,
        1,
        y,
        wbuf,
        after,
        Mode::for_inputs(1, layer.cols, block_kernels),
    )
}

#[cfg(feature = "parallel")]
/// Part k of `x · Wᵀ` by output rows: `x · W[r0 .. r1]ᵀ` (all `n` inputs, the rows `r0 ..
/// r1` of part k of `split`, `(starts, count)` from `split_ranges`) into block k of
/// `blocks` (`n · rows` values, block k at `r0 · n`; for one input, `y` itself). False
/// when a part failed. Part 0 prefetches `after`, what the calling thread reads next
/// (the next slot's adapter coefficients: the calling thread rotates the next panel
/// alone, and the std front ends' pool runs part 0 on it, see `par::Executor`; elsewhere
/// the hint is only wasted), the other parts `after_others`, what the other threads read
/// next (empty but where a one-step path hands them a slot of their own, as
/// [`feed_forward_panel`] does for the key slot of the next layer's query and key step).
/// With `packed` (the batch packed once by [`pack_inputs`] for the in-place kernel) every
/// part reads it instead of packing its own.
#[allow(clippy::too_many_arguments)]
fn output_row_blocks(
    exec: &dyn Executor,
    layer: &Dense<'_>,
    x: &[f32],
    n: usize,
    blocks: &mut [f32],
    mode: Mode,
    (starts, count): (&[usize; MAX_PARTS + 1], usize),
    [after, after_others]: [&[f32]; 2],
    packed: Option<&[f32]>,
) -> bool {
    let cols = layer.cols;
    let scratch_len = match packed {
        Some(_) => DECODE_ROWS * cols,
        None => weight_scratch_len(cols, n),
    };
    run_split(
        exec,
        blocks,
        starts,
        count,
        n,
        scratch_len,
        &|r, out, scratch| {
            let Some(part) = layer.row_range(r.clone()) else {
                return false;
            };
            // Each part prefetches what its thread reads next (see above).
            let next = if r.start == 0 { after } else { after_others };
            match packed {
                Some(xt) => products_in_place(&part, xt, n, out, part.rows, scratch, next)
                    .is_ok_and(|done| done),
                None => linear_in(&part, x, n, out, scratch, next, mode).is_ok(),
            }
        },
    )
}

#[cfg(feature = "parallel")]
#[allow(clippy::too_many_arguments)]
/// [`output_row_blocks`] into the first `n · layer.rows` values of `blocks`, then those
/// blocks interleaved into `y`'s rows ([`blocks_into_rows`], the same `split`): a product
/// split by output rows, whole. False when a part failed or `blocks` is short.
fn output_rows_into(
    exec: &dyn Executor,
    layer: &Dense<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    blocks: &mut [f32],
    mode: Mode,
    split: (&[usize; MAX_PARTS + 1], usize),
    after: [&[f32]; 2],
    packed: Option<&[f32]>,
) -> bool {
    let Some(blocks) = blocks.get_mut(..n * layer.rows) else {
        return false;
    };
    output_row_blocks(exec, layer, x, n, blocks, mode, split, after, packed)
        && blocks_into_rows(exec, layer.rows, n, y, blocks, split)
}

#[cfg(feature = "parallel")]
#[allow(clippy::too_many_arguments)]
/// The batch half of [`linear_par`] by output rows: the blocks of [`output_row_blocks`]
/// (prefetching `after`), then interleaved into `y`'s rows, the inputs split across the
/// threads. On the in-place kernel the batch is packed once, into `wbuf`, for every
/// part. False when a part failed.
fn by_output_rows(
    exec: &dyn Executor,
    layer: &Dense<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    blocks: &mut [f32],
    mode: Mode,
    split: (&[usize; MAX_PARTS + 1], usize),
    (after, wbuf): (&[f32], &mut [f32]),
    rotate: Option<&crate::math::Chain<'_>>,
) -> bool {
    let cols = layer.cols;
    let xt_len = packed_inputs_len(n, cols);
    let packed = match aligned_area(wbuf, xt_len) {
        Some(xt) if takes_panel_kernel(layer.weight, n, mode) && in_place_available() => {
            if pack_inputs(x, n, cols, xt).is_err() {
                return false;
            }
            if let Some(q) = rotate {
                if !rotate_panels(q, xt, n, cols) {
                    return false;
                }
            }
            Some(&*xt)
        }
        _ if rotate.is_some() => return false,
        _ => None,
    };
    output_rows_into(
        exec,
        layer,
        x,
        n,
        y,
        blocks,
        mode,
        split,
        [after, &[]],
        packed,
    )
}

#[cfg(feature = "parallel")]
/// The second half of [`by_output_rows`]: the parts' blocks (`n` outputs of each part's
/// rows, block k at `starts[k] · n`) interleaved into `y`'s `n` rows of width `rows`, the
/// inputs split across the threads. False when a block is short.
fn blocks_into_rows(
    exec: &dyn Executor,
    rows: usize,
    n: usize,
    y: &mut [f32],
    blocks: &[f32],
    (starts, count): (&[usize; MAX_PARTS + 1], usize),
) -> bool {
    let mut inputs = [0usize; MAX_PARTS + 1];
    let parts = split_ranges(n, exec.threads(), 1, &mut inputs);
    run_split(
        exec,
        &mut y[..n * rows],
        &inputs,
        parts,
        rows,
        0,
        &|t, out, _| {
            for (i, row) in t.zip(out.chunks_exact_mut(rows)) {
                for k in 0..count {
                    let (r0, r1) = (starts[k], starts[k + 1]);
                    let width = r1 - r0;
                    match blocks.get(r0 * n + i * width..r0 * n + (i + 1) * width) {
                        Some(src) => row[r0..r1].copy_from_slice(src),
                        None => return false,
                    }
                }
            }
            true
        },
    )
}

#[cfg(all(feature = "parallel", feature = "bert"))]
/// Whether a batch of `n` inputs can take the one-step paths ([`feed_forward_panel`],
/// [`shared_input_pair`]): one narrow panel (at most 16 inputs) on the in-place panel
/// kernel ([`PANEL_MIN_ROWS`] inputs or more, a CPU that has it). A cheap test for callers
/// to make before preparing the layers; the paths check everything else themselves.
pub(crate) fn one_step_batch(n: usize) -> bool {
    (PANEL_MIN_ROWS..=16).contains(&n) && in_place_available()
}

/// Whether `q` (if any) rotates a packed panel of `width` features where it lies: its
/// width, and a panel kernel on this CPU ([`crate::math::Chain::apply_panel`]).
fn panel_chain_fits(q: Option<&crate::math::Chain<'_>>, width: usize) -> bool {
    q.is_none_or(|q| q.spec().width() == width && q.has_panel_kernel())
}

#[cfg(all(feature = "parallel", feature = "bert"))]
/// `y = down(act(up(x)))` for a batch of at most 16 inputs (one narrow panel) on two or
/// more threads, the hidden layer written once: each part computes a run of `up`'s
/// outputs for every input, applies `act`, packs them straight into the down product's
/// panel (its own run of the panel's rows) and rotates them there by the first factor of
/// `q_down` (the down slot's input chain, if any: blocks that lie within the run); the
/// calling thread applies the chain's other factors to the whole panel, and the down
/// product reads it, split by output rows ([`by_output_rows`]); `q_up` rotates `up`'s
/// packed inputs first. Against two steps (`up`, the activation, `down`), the hidden layer
/// is neither interleaved into rows nor packed again on one thread, and the activation is
/// no step of its own. Every value is computed as in the two steps, so the outputs are the
/// same bits. `false`, `y` untouched, where this path does not apply (the caller then runs
/// the two steps): one thread, another batch size, weights or chains without the in-place
/// kernels. While the up product runs, each part prefetches the down chain's coefficients
/// its thread applies next (part 0, on the calling thread, the factors after the first;
/// the others their rows of the first); the down product's part 0 prefetches `after[0]`,
/// the others `after[1]` (what the calling and the other threads read next).
#[allow(clippy::too_many_arguments)]
pub(crate) fn feed_forward_panel(
    exec: &dyn Executor,
    [up, down]: [&Dense<'_>; 2],
    [q_up, q_down]: [Option<&crate::math::Chain<'_>>; 2],
    act: fn(&mut [f32]),
    x: &[f32],
    n: usize,
    y: &mut [f32],
    (scratch, blocks): (&mut [f32], &mut [f32]),
    [after, after_k]: [&[f32]; 2],
    block_kernels: bool,
) -> bool {
    let (width, hidden, rows) = (up.cols, up.rows, down.rows);
    let modes = [width, hidden].map(|cols| Mode::for_inputs(n, cols, block_kernels));
    let mut hidden_starts = [0usize; MAX_PARTS + 1];
    let parts = split_ranges(hidden, exec.threads(), PANEL, &mut hidden_starts);
    let mut row_starts = [0usize; MAX_PARTS + 1];
    let count = split_ranges(rows, exec.threads(), PANEL, &mut row_starts);
    let (up_len, down_len) = (packed_inputs_len(n, width), packed_inputs_len(n, hidden));
    if parts < 2
        || count < 2
        || !one_step_batch(n)
        || down.cols != hidden
        || !takes_panel_kernel(up.weight, n, modes[0])
        || !takes_panel_kernel(down.weight, n, modes[1])
        || up.weight.rows_view(0, hidden, width).is_none()
        || down.weight.rows_view(0, rows, hidden).is_none()
        || !panel_chain_fits(q_up, width)
        || !panel_chain_fits(q_down, hidden)
        || x.len() < n * width
        || y.len() < n * rows
        || blocks.len() < n * rows
        || scratch.len() < up_len + down_len + 2 * ALIGN_SLACK
    {
        return false;
    }
    // Up's inputs packed (and rotated), then the down product's panel, both aligned.
    let (a, b) = scratch.split_at_mut(up_len + ALIGN_SLACK);
    let (Some(xt), Some(panel)) = (aligned_area(a, up_len), aligned_area(b, down_len)) else {
        return false;
    };
    if pack_inputs(x, n, width, xt).is_err()
        || q_up.is_some_and(|q| !rotate_panels(q, xt, n, width))
    {
        return false;
    }
    let xt: &[f32] = xt;
    let most = (0..parts)
        .map(|k| hidden_starts[k + 1] - hidden_starts[k])
        .max();
    // Part k: hidden features r0 .. r1, all `n` inputs, into rows r0 .. r1 of the panel.
    let hidden_ok = run_split(
        exec,
        panel,
        &hidden_starts,
        parts,
        16,
        n * most.unwrap_or(0) + DECODE_ROWS * width,
        &|r, piece, scratch| {
            let features = r.len();
            let Some(layer) = up.row_range(r.clone()) else {
                return false;
            };
            if scratch.len() < n * features {
                return false;
            }
            let (block, tmp) = scratch.split_at_mut(n * features);
            // Part 0 runs on the calling thread, which applies the down chain's other
            // factors next: it prefetches their coefficients; the others the first
            // factor's blocks of their rows.
            let next = match q_down {
                Some(q) if r.start == 0 => q.later_factor_blocks(),
                Some(q) => q.first_factor_blocks(r.clone()),
                None => &[],
            };
            if !products_in_place(&layer, xt, n, block, features, tmp, next).is_ok_and(|done| done)
            {
                return false;
            }
            act(block);
            if n < 16 {
                piece.fill(0.0);
            }
            // The down chain's first factor (blocks within these rows) rotates here, on
            // the thread that wrote them; the caller applies the rest to the whole panel.
            pack_scaled(RowsRef::F32(block), n, features, None, piece, 16).is_ok()
                && q_down.is_none_or(|q| q.apply_panel_first(piece, r, [1, 16]))
        },
    );
    if !hidden_ok || q_down.is_some_and(|q| !q.apply_panel_rest(panel, [1, 16])) {
        return false;
    }
    let split = (&row_starts, count);
    output_rows_into(
        exec,
        down,
        &[],
        n,
        y,
        blocks,
        modes[1],
        split,
        [after, after_k],
        Some(panel),
    )
}

#[cfg(all(feature = "parallel", feature = "bert"))]
/// Two layers over the same batch `x` of at most 16 inputs (one narrow panel) on an even
/// number of threads `2p`, as one step: `p` parts per layer, each packing the batch,
/// rotating it by its layer's input chain (`chains`) and computing its run of that
/// layer's outputs (with `p = 1`, the whole layer straight into its `y`; else into its
/// block of `spare`, then interleaved). The two rotations run at the same time instead of
/// one after the other on the calling thread, and each part reads only the inputs it
/// packed. Every value is computed as by [`rotated_in_place`] or the plain product, so
/// the outputs are the same bits. `false` where this path does not apply (the caller then
/// runs the layers one by one, rewriting both outputs). Part 0 (on the calling thread,
/// which rotates the next slot's inputs) prefetches `after` during its product.
#[allow(clippy::too_many_arguments)]
pub(crate) fn shared_input_pair(
    exec: &dyn Executor,
    layers: [&Dense<'_>; 2],
    chains: [Option<&crate::math::Chain<'_>>; 2],
    x: &[f32],
    n: usize,
    ([ya, yb], spare): ([&mut [f32]; 2], &mut [f32]),
    after: &[f32],
    block_kernels: bool,
) -> bool {
    let cols = layers[0].cols;
    let mode = Mode::for_inputs(n, cols, block_kernels);
    let per = exec.threads() / 2;
    let ys = [ya.len(), yb.len()];
    let fits = layers.iter().zip(chains).zip(ys).all(|((l, q), y)| {
        l.cols == cols
            && y >= n * l.rows
            && takes_panel_kernel(l.weight, n, mode)
            && l.weight.rows_view(0, l.rows, cols).is_some()
            && panel_chain_fits(q, cols)
    });
    let total = n * (layers[0].rows + layers[1].rows);
    if !exec.threads().is_multiple_of(2)
        || per == 0
        || !one_step_batch(n)
        || x.len() < n * cols
        || !fits
        || (per > 1 && spare.len() < total)
    {
        return false;
    }
    // Each layer's rows in `per` parts (part k of the step: layer k / per, run k % per).
    let mut starts = [[0usize; MAX_PARTS + 1]; 2];
    let counts = [0, 1].map(|l| split_ranges(layers[l].rows, per, PANEL, &mut starts[l]));
    if counts != [per, per] {
        return false;
    }
    let (ya, yb) = (&mut ya[..n * layers[0].rows], &mut yb[..n * layers[1].rows]);
    let (blocks_a, blocks_b) = spare.split_at_mut(if per > 1 { n * layers[0].rows } else { 0 });
    let mut outs: heapless::Vec<&mut [f32], MAX_PARTS> = heapless::Vec::new();
    if per == 1 {
        outs.extend([&mut *ya, &mut *yb]);
    } else {
        for (l, mut rest) in [&mut *blocks_a, &mut *blocks_b].into_iter().enumerate() {
            for k in 0..per {
                let (block, tail) = rest.split_at_mut(n * (starts[l][k + 1] - starts[l][k]));
                if outs.push(block).is_err() {
                    return false;
                }
                rest = tail;
            }
        }
    }
    let failed = core::sync::atomic::AtomicBool::new(false);
    exec.for_each(
        &mut outs,
        in_place_scratch_len(cols, n),
        &|k, out, scratch| {
            let (l, run) = (k / per, k % per);
            let done = layers[l]
                .row_range(starts[l][run]..starts[l][run + 1])
                .map(|part| {
                    packed_products(
                        &part,
                        &x[..n * cols],
                        n,
                        out,
                        scratch,
                        if k == 0 { after } else { &[] },
                        chains[l],
                    )
                });
            if !done.is_some_and(|d| d.is_ok_and(|d| d)) {
                failed.store(true, core::sync::atomic::Ordering::Relaxed);
            }
        },
    );
    drop(outs);
    if failed.load(core::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    per == 1
        || (blocks_into_rows(exec, layers[0].rows, n, ya, blocks_a, (&starts[0], per))
            && blocks_into_rows(
                exec,
                layers[1].rows,
                n,
                yb,
                &blocks_b[..n * layers[1].rows],
                (&starts[1], per),
            ))
}

#[cfg(all(feature = "parallel", feature = "bert"))]
/// An encoder block's attention for a batch of at most 16 inputs (one narrow panel) on two
/// or more threads, from the block input `x` and its query and key outputs `[q, k]` to the
/// output projection's outputs `y`, the value outputs written into `v` on the way:
///
/// 1. one step of two parts: the calling thread packs `x` and rotates it by the value
///    slot's input chain (`q_value`) where it lies, while another thread packs `k`
///    transposed and computes every head's attention weights;
/// 2. the value product from that panel, split by output rows;
/// 3. each part takes a run of heads: their contexts (weights times values), packed
///    straight into the output projection's panel, and the first factor of its input
///    chain (`q_output`) on those rows;
/// 4. the calling thread applies the chain's other factors, and the output product reads
///    the panel, split by output rows.
///
/// Against the three steps one at a time (value, attention, output), the value chain's
/// rotation runs while another core computes the attention weights, the attention is split
/// by heads instead of by query rows (12 and 4 of 16), and the context is never written
/// in rows and packed again on one thread. Every value is computed by the same arithmetic
/// as there, so the outputs are the same bits. `false` where this path does not apply (the
/// caller then runs the three steps; `x`, `q` and `k` are never written): one thread,
/// another batch size, shapes or weights without the in-place kernels, heads that split
/// the first factor's blocks, short buffers. `scratch` holds the panel, `blocks` each
/// product's output blocks, `work` `k` transposed and the weights (`n · hidden + heads · n²`
/// values). The value product's part 0 prefetches `after_value`, the output product's
/// `after_output` (what the calling thread reads next).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_panels(
    exec: &dyn Executor,
    [value, output]: [&Dense<'_>; 2],
    [q_value, q_output]: [Option<&crate::math::Chain<'_>>; 2],
    heads: usize,
    x: &[f32],
    [q, k]: [&[f32]; 2],
    n: usize,
    [v, y]: [&mut [f32]; 2],
    (scratch, blocks, work): (&mut [f32], &mut [f32], &mut [f32]),
    [after_value, after_output]: [&[f32]; 2],
    block_kernels: bool,
) -> bool {
    use crate::nn::attention::{head_context, head_scores, HeadShape};
    let (hidden, rows) = (value.cols, output.rows);
    let mode = Mode::for_inputs(n, hidden, block_kernels);
    let d = hidden.checked_div(heads).unwrap_or(0);
    let side = crate::math::gemm::panel_side(n);
    let panel_len = packed_inputs_len(n, hidden);
    let work_len = heads.saturating_mul(n * n).saturating_add(n * hidden);
    let mut value_starts = [0usize; MAX_PARTS + 1];
    let value_parts = split_ranges(hidden, exec.threads(), PANEL, &mut value_starts);
    let mut output_starts = [0usize; MAX_PARTS + 1];
    let output_parts = split_ranges(rows, exec.threads(), PANEL, &mut output_starts);
    if exec.threads() < 2
        || value_parts < 2
        || output_parts < 2
        || !one_step_batch(n)
        || d == 0
        || d * heads != hidden
        || q_output.is_some_and(|c| !d.is_multiple_of(c.spec().block_size()))
        || value.rows != hidden
        || output.cols != hidden
        || [value, output].iter().any(|l| {
            !takes_panel_kernel(l.weight, n, mode)
                || l.weight.rows_view(0, l.rows, l.cols).is_none()
        })
        || !panel_chain_fits(q_value, hidden)
        || !panel_chain_fits(q_output, hidden)
        || [x.len(), q.len(), k.len(), v.len()]
            .iter()
            .any(|&len| len < n * hidden)
        || y.len() < n * rows
        || blocks.len() < n * hidden.max(rows)
        || work.len() < work_len
        || scratch.len() < panel_len + ALIGN_SLACK
    {
        return false;
    }
    let Some(panel) = aligned_area(scratch, panel_len) else {
        return false;
    };
    let shape = HeadShape {
        t: n,
        hidden,
        heads,
    };
    let failed = core::sync::atomic::AtomicBool::new(false);
    // 1. The value slot's panel (calling thread) and every head's weights (another).
    let mut outs: [&mut [f32]; 2] = [&mut *panel, &mut work[..work_len]];
    exec.for_each(&mut outs, 0, &|part, out, _| {
        let done = if part == 0 {
            pack_inputs(&x[..n * hidden], n, hidden, out).is_ok()
                && q_value.is_none_or(|c| rotate_panels(c, out, n, hidden))
        } else {
            let (kt, probs) = out.split_at_mut(n * hidden);
            pack_scaled(RowsRef::F32(&k[..n * hidden]), n, hidden, None, kt, n).is_ok()
                && probs
                    .chunks_exact_mut(n * n)
                    .enumerate()
                    .all(|(h, p)| head_scores(shape, h, q, n, kt, p).is_ok())
        };
        if !done {
            failed.store(true, core::sync::atomic::Ordering::Relaxed);
        }
    });
    if failed.load(core::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    // 2. The value product.
    let v = &mut v[..n * hidden];
    let value_split = (&value_starts, value_parts);
    if !output_rows_into(
        exec,
        value,
        &[],
        n,
        v,
        blocks,
        mode,
        value_split,
        [after_value, &[]],
        Some(panel),
    ) {
        return false;
    }
    // 3. Each part's heads: contexts into the output slot's panel, its first factor.
    let (v, probs) = (&*v, &work[n * hidden..work_len]);
    let mut head_starts = [0usize; MAX_PARTS + 1];
    let head_parts = split_ranges(heads, exec.threads(), 1, &mut head_starts);
    let contexts_ok = run_split(
        exec,
        panel,
        &head_starts,
        head_parts,
        d * side,
        n * d,
        &|r, piece, ctx| {
            if n < side {
                piece.fill(0.0);
            }
            let Some(ctx) = ctx.get_mut(..n * d) else {
                return false;
            };
            let heads_done = r
                .clone()
                .zip(piece.chunks_exact_mut(d * side))
                .all(|(h, rows)| {
                    let p = &probs[h * n * n..(h + 1) * n * n];
                    head_context(shape, h, p, n, v, ctx, d).is_ok()
                        && pack_scaled(RowsRef::F32(ctx), n, d, None, rows, side).is_ok()
                });
            heads_done
                && q_output
                    .is_none_or(|c| c.apply_panel_first(piece, r.start * d..r.end * d, [1, side]))
        },
    );
    // 4. The chain's other factors, then the output product.
    if !contexts_ok || q_output.is_some_and(|c| !c.apply_panel_rest(panel, [1, side])) {
        return false;
    }
    let output_split = (&output_starts, output_parts);
    output_rows_into(
        exec,
        output,
        &[],
        n,
        y,
        blocks,
        mode,
        output_split,
        [after_output, &[]],
        Some(panel),
    )
}

/// [`linear_then`] in a given [`Mode`].
fn linear_in(
    layer: &Dense<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    wbuf: &mut [f32],
    after: &[f32],
    mode: Mode,
) -> Result<()> {
    let Dense {
        weight: w,
        rows,
        cols,
        scale,
        bias,
    } = *layer;
    if x.len() < n * cols || y.len() < n * rows {
        return Err(Error::LengthMismatch {
            expected: n * cols,
            found: x.len(),
        });
    }
    if let Some(s) = scale.filter(|s| s.len() < rows) {
        return Err(Error::LengthMismatch {
            expected: rows,
            found: s.len(),
        });
    }
    let need = if mode.panel { 2 * PANEL * cols } else { cols };
    if wbuf.len() < need {
        return Err(Error::BufferTooSmall {
            needed: need,
            got: wbuf.len(),
        });
    }
    #[cfg(any(feature = "q8_0", feature = "q4"))]
    if takes_batch_kernel(w, n, mode) {
        if let WeightView::Tensor(t) = w {
            let q = crate::quant::QMatrix::new(t.index(), t.ggml_type(), rows, cols, t.data())?;
            let (x, y) = (&x[..n * cols], &mut y[..n * rows]);
            let m = if mode.last_f32 { n - 1 } else { n };
            let ((x8, x32), (y8, y32)) = (x.split_at(m * cols), y.split_at_mut(m * rows));
            if m > 0 {
                let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut wbuf[..]);
                crate::quant::matmul_batch(&q, 0..rows, x8, m, y8, bytes)?;
            }
            if m < n {
                crate::quant::matmul_f32_inputs(&q, 0..rows, x32, n - m, y32, rows)?;
            }
            finish_outputs(y, rows, n, scale, bias);
            return Ok(());
        }
    }
    #[cfg(any(feature = "q8_0", feature = "q4", feature = "k-quants"))]
    if !mode.panel && (mode.quant || mode.decode || n == 1) {
        if let WeightView::Tensor(t) = w {
            if t.ggml_type().block_len() > 1 {
                let q = crate::quant::QMatrix::new(t.index(), t.ggml_type(), rows, cols, t.data())?;
                let (x, y) = (&x[..n * cols], &mut y[..n * rows]);
                if mode.quant {
                    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut wbuf[..]);
                    let next: &[u8] = bytemuck::cast_slice(after);
                    if mode.decode {
                        crate::quant::matmul_decode_then(&q, 0..rows, x, n, y, bytes, next)?;
                    } else {
                        crate::quant::matmul_then(&q, 0..rows, x, n, y, bytes, next)?;
                    }
                } else {
                    // One input in f32: the blocks against it, a block at a time.
                    crate::quant::matmul_f32_inputs(&q, 0..rows, x, n, y, rows)?;
                }
                finish_outputs(y, rows, n, scale, bias);
                return Ok(());
            }
        }
    }
    if !mode.panel {
        // Row by row: decode W[o] once, dot it with every input.
        for o in 0..rows {
            let wr = w.rows(o, 1, cols, wbuf)?;
            for (xr, yr) in x.chunks_exact(cols).zip(y.chunks_exact_mut(rows)).take(n) {
                yr[o] = crate::math::dot(xr, wr);
            }
        }
        finish_outputs(y, rows, n, scale, bias);
        return Ok(());
    }
    if in_place_available() && packed_products(layer, x, n, y, wbuf, after, None)? {
        return Ok(());
    }
    let (tmp, panel) = wbuf[..need].split_at_mut(PANEL * cols);
    let fold_scale = mode.fold_scale;
    let mut o0 = 0;
    while o0 < rows {
        let p = PANEL.min(rows - o0);
        // panel[k·PANEL + j] = W[o0 + j][k] for j < p (the kernel reads no further). F32
        // tensors are read straight from their bytes, other types decoded into `tmp` first.
        let span = o0 * cols..(o0 + p) * cols;
        let rows_ref = match w {
            WeightView::Tensor(t) if t.ggml_type() == TensorType::F32 => RowsRef::LeBytes(
                t.data()
                    .get(span.start * 4..span.end * 4)
                    .ok_or(Error::TensorOutOfRange { tensor: t.index() })?,
            ),
            _ => RowsRef::F32(w.rows(o0, p, cols, tmp)?),
        };
        let panel_scale = match scale.filter(|_| fold_scale) {
            Some(s) => Some(s.get(o0..o0 + p).ok_or(Error::LengthMismatch {
                expected: rows,
                found: s.len(),
            })?),
            None => None,
        };
        pack_scaled(rows_ref, p, cols, panel_scale, panel, PANEL)?;
        let product = Product {
            m: n,
            n: p,
            k: cols,
            a_stride: cols,
            b_stride: PANEL,
            c_stride: rows,
            accumulate: false,
        };
        // What the kernel prefetches while it multiplies this panel: the next panel, or
        // after the last one what the caller reads next. Fetched earlier, the adapter
        // blocks would be evicted again by the weights streaming through L2 (measured:
        // spreading them over all panels lost the gain).
        let next = if o0 + p < rows {
            w.raw_rows(o0 + p, PANEL.min(rows - o0 - p), cols)
        } else {
            RowsRef::F32(after)
        };
        matmul_then(&product, x, panel, &mut y[o0..], next)?;
        o0 += p;
    }
    finish_outputs(y, rows, n, scale.filter(|_| !fold_scale), bias);
    Ok(())
}

/// `y[t · stride + o] = s[o] · (x_t · W[o]) + b[o]` for the `n` inputs packed in `xt`
/// ([`pack_inputs`]) on the in-place kernel: `f32` weights read where they lie, others
/// decoded [`DECODE_ROWS`] rows at a time into `tmp`; the scale and bias are applied as
/// the outputs are stored. `Ok(false)`, having written nothing, on a CPU without the
/// kernel.
fn products_in_place<'x>(
    layer: &Dense<'x>,
    xt: &[f32],
    n: usize,
    y: &mut [f32],
    stride: usize,
    tmp: &mut [f32],
    after: &[f32],
) -> Result<bool> {
    let Dense {
        weight: w,
        rows,
        cols,
        scale,
        bias,
    } = *layer;
    let cut = |v: Option<&'x [f32]>, r: core::ops::Range<usize>| match v {
        Some(v) => v.get(r).map(Some).ok_or(Error::LengthMismatch {
            expected: rows,
            found: v.len(),
        }),
        None => Ok(None),
    };
    let whole = match w {
        WeightView::F32(v) => Some(RowsRef::F32(v)),
        WeightView::Tensor(t) if t.ggml_type() == TensorType::F32 => {
            Some(RowsRef::LeBytes(t.data()))
        }
        WeightView::Tensor(_) => None,
    };
    // `f32` weights in one block, read where they lie; others `DECODE_ROWS` rows at a time.
    let mut o0 = 0;
    while o0 < rows {
        let (block, p) = match whole {
            Some(wr) => (wr, rows),
            None => {
                let p = DECODE_ROWS.min(rows - o0);
                (RowsRef::F32(w.rows(o0, p, cols, tmp)?), p)
            }
        };
        let next = if o0 + p < rows {
            w.raw_rows(o0 + p, DECODE_ROWS.min(rows - o0 - p), cols)
        } else {
            RowsRef::F32(after)
        };
        let parts = [cut(scale, o0..o0 + p)?, cut(bias, o0..o0 + p)?];
        let out = y.get_mut(o0..).unwrap_or(&mut []);
        if !weights_in_place(block, [p, cols], xt, n, out, stride, parts, next)? {
            return Ok(false);
        }
        o0 += p;
    }
    Ok(true)
}

/// Whether [`linear_in`] computes `n` inputs over `w` in `mode` on the batch kernel
/// (8-bit activations): prompts over the weight types of [`batch_prompt`].
#[cfg(any(feature = "q8_0", feature = "q4"))]
fn takes_batch_kernel(w: WeightView<'_>, n: usize, mode: Mode) -> bool {
    mode.batch && n > 0 && matches!(w, WeightView::Tensor(t) if batch_prompt(t.ggml_type()))
}

/// Whether [`linear_in`] computes `n` inputs over `w` in `mode` on the panel kernels (the
/// in-place one where the CPU has it): batches that take no quantized kernel.
fn takes_panel_kernel(w: WeightView<'_>, n: usize, mode: Mode) -> bool {
    #[cfg(any(feature = "q8_0", feature = "q4"))]
    if takes_batch_kernel(w, n, mode) {
        return false;
    }
    let _ = (w, n);
    mode.panel
}

/// `y = layer(Q x)` for the `n` inputs `x` of a slot whose unmerged adapter rotates its
/// inputs by the chain `q`, on the in-place kernel: each part of the batch (whole 32-input
/// panels, split across `exec`'s threads) packs its inputs, rotates every packed panel
/// where it lies (a panel is feature-major already: [`crate::math::Chain::apply_panel`],
/// no shuffles), then multiplies it ([`packed_products`]). No rotated copy of the batch is
/// written and read again. `Ok(false)`, having written nothing, when the batch or the
/// chain takes another kernel (the caller then rotates a copy); every output is computed
/// the same way for any split of the batch.
///
/// # Errors
/// As [`linear`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn rotated_in_place(
    exec: super::linear::Exec<'_>,
    layer: &Dense<'_>,
    q: &crate::math::Chain<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    (wbuf, spare): (&mut [f32], &mut [f32]),
    after: &[f32],
    block_kernels: bool,
) -> Result<bool> {
    let (rows, cols) = (layer.rows, layer.cols);
    let mode = Mode::for_inputs(n, cols, block_kernels);
    if n == 0
        || !in_place_available()
        || !takes_panel_kernel(layer.weight, n, mode)
        || !panel_chain_fits(Some(q), cols)
        || x.len() < n * cols
        || y.len() < n * rows
    {
        return Ok(false);
    }
    #[cfg(feature = "parallel")]
    if let Some(e) = exec.filter(|e| e.threads() > 1) {
        let mut starts = [0usize; MAX_PARTS + 1];
        let panel = crate::math::gemm::INPUT_PANEL;
        let count = split_ranges(n, e.threads(), panel, &mut starts);
        if count <= 1 {
            // A batch of one panel: packed and rotated once, then split by output rows
            // (each part into its block of `spare`, interleaved into `y`).
            let mut row_starts = [0usize; MAX_PARTS + 1];
            let parts = split_ranges(rows, e.threads(), PANEL, &mut row_starts);
            if parts > 1
                && spare.len() >= n * rows
                && layer.weight.rows_view(0, rows, cols).is_some()
                && by_output_rows(
                    e,
                    layer,
                    x,
                    n,
                    y,
                    &mut spare[..n * rows],
                    mode,
                    (&row_starts, parts),
                    (after, &mut *wbuf),
                    Some(q),
                )
            {
                return Ok(true);
            }
            // Otherwise on this thread, as with one thread (the same arithmetic).
        } else if run_split(
            e,
            &mut y[..n * rows],
            &starts,
            count,
            rows,
            weight_scratch_len(cols, n),
            &|t, out, scratch| {
                let xs = &x[t.start * cols..t.end * cols];
                packed_products(layer, xs, t.len(), out, scratch, after, Some(q))
                    .is_ok_and(|done| done)
            },
        ) {
            return Ok(true);
        }
        // Every size was checked: only a malformed tensor fails; one thread names it.
    }
    let _ = (exec, spare);
    let (x, y) = (&x[..n * cols], &mut y[..n * rows]);
    packed_products(layer, x, n, y, wbuf, after, Some(q))
}

/// [`products_in_place`] for the `n` inputs `x` (outputs `layer.rows` apart in `y`):
/// packed into `scratch` (at least [`in_place_scratch_len`] values) by [`pack_inputs`],
/// first rotated where they lie by `rotate` where given (an unmerged adapter's input
/// chain, see [`rotated_in_place`]). `Ok(false)`, having written nothing to `y`, when this
/// CPU or the chain has no such kernel.
fn packed_products(
    layer: &Dense<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut [f32],
    after: &[f32],
    rotate: Option<&crate::math::Chain<'_>>,
) -> Result<bool> {
    let cols = layer.cols;
    let need = in_place_scratch_len(cols, n);
    let got = scratch.len();
    let scratch = aligned_area(scratch, need.saturating_sub(ALIGN_SLACK))
        .ok_or(Error::BufferTooSmall { needed: need, got })?;
    let (xt, tmp) = scratch.split_at_mut(packed_inputs_len(n, cols));
    pack_inputs(x, n, cols, xt)?;
    if rotate.is_some_and(|q| !rotate_panels(q, xt, n, cols)) {
        return Ok(false);
    }
    products_in_place(layer, xt, n, y, layer.rows, tmp, after)
}

/// `len` values of `scratch` from its first 64-byte line (skipping at most [`ALIGN_SLACK`]
/// values), where inputs are packed for the in-place product: every vector of the panels
/// is then one cache line, never two (the scratch's own alignment depends on the caller's
/// arena). Which values are skipped never changes a result. `None` when `scratch` is short.
fn aligned_area(scratch: &mut [f32], len: usize) -> Option<&mut [f32]> {
    let skip = scratch.as_ptr().align_offset(64).min(ALIGN_SLACK);
    scratch.get_mut(skip..skip.checked_add(len)?)
}

/// Rotates the inputs of every panel of `xt` (`n` inputs of width `cols`, packed by
/// [`pack_inputs`]) by `q` where they lie; a last 32-wide panel of at most 16 inputs only
/// its first half. `false` when the chain or the shapes have no panel kernel.
fn rotate_panels(q: &crate::math::Chain<'_>, xt: &mut [f32], n: usize, cols: usize) -> bool {
    let panel = crate::math::gemm::panel_side(n);
    xt.chunks_exact_mut(panel * cols).enumerate().all(|(g, p)| {
        let inputs = n.saturating_sub(g * panel).min(panel);
        q.apply_panel(p, [inputs.div_ceil(16), panel])
    })
}

/// Whether prompts over `ty` weights take the batch kernel (8-bit activations) on this
/// CPU: Q4_0 and Q8_0 where `quant::batch_kernel` has them. Q4_1 keeps `f32` inputs: with
/// 8-bit activations on every prompt row but the last, SmolLM2's Q4_1 file answers the
/// France question "L'Étoile, ..." instead of "The capital of France is Paris." (the two
/// openings are 0.08 apart in the float64 reference, and 8-bit activations decide between
/// them by their last bits: the Q8_0 file, like llama.cpp's own run of it, opens with "L"
/// since the AVX-512 softmax and SiLU kernels), and its `f32` prompt path is already
/// faster than llama.cpp's (docs/benchmarks.md section 9).
#[cfg(any(feature = "q8_0", feature = "q4"))]
fn batch_prompt(ty: TensorType) -> bool {
    matches!(ty, TensorType::Q4_0 | TensorType::Q8_0) && crate::quant::batch_kernel(ty)
}

/// `y = scale ⊙ y + bias` on each of the `n` output rows (width `rows`) of `y`, in one
/// pass.
pub(crate) fn finish_outputs(
    y: &mut [f32],
    rows: usize,
    n: usize,
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
) {
    for yi in y.chunks_exact_mut(rows).take(n) {
        match (scale, bias) {
            (Some(s), Some(b)) => {
                for ((v, sv), bv) in yi.iter_mut().zip(s).zip(b) {
                    *v = *v * sv + bv;
                }
            }
            (Some(s), None) => yi.iter_mut().zip(s).for_each(|(v, sv)| *v *= sv),
            (None, Some(b)) => yi.iter_mut().zip(b).for_each(|(v, bv)| *v += bv),
            (None, None) => return,
        }
    }
}
