//! The adapter-aware linear op: one slot of a model on a batch of input rows, applying
//! the active adapter unmerged (`y = s ⊙ Q_out (W (Q_in x)) + bias`), its replacement
//! tensors (task heads), or merged weights. Every architecture runs its slots through
//! [`Linears::apply`]; the baked reader calls [`slot_apply`] with the same arithmetic.

use super::adapter::Prepared;
use super::slots::SlotTable;
#[cfg(feature = "parallel")]
use super::weights::linear_par;
use super::weights::{linear_then, Dense, TensorRef, WeightView};
use crate::math::reflectors::ReflectorChain;
use crate::math::{transpose, Chain, LayerTransform, Scalars};
use crate::{Error, Result};

/// The scratch one slot needs: the rotated-input copy, the feature-major spare (empty when
/// the model never batches rotations), chain scratch, the weight panel, the bias.
pub(crate) struct SlotScratch<'x> {
    pub(crate) rot: &'x mut [f32],
    pub(crate) spare: &'x mut [f32],
    pub(crate) chain: &'x mut [f32],
    pub(crate) wbuf: &'x mut [f32],
    pub(crate) bias: &'x mut [f32],
}

/// The executor a forward pass splits its dense products with (`None`: the calling
/// thread). Without the `parallel` feature there is none, and no code for it.
#[cfg(feature = "parallel")]
pub(crate) type Exec<'e> = Option<&'e dyn crate::par::Executor>;
/// The executor a forward pass splits its dense products with: none without the
/// `parallel` feature.
#[cfg(not(feature = "parallel"))]
pub(crate) type Exec<'e> = core::marker::PhantomData<&'e ()>;

/// No executor: everything on the calling thread.
#[cfg(feature = "parallel")]
pub(crate) const ONE_THREAD: Exec<'static> = None;
/// No executor: everything on the calling thread.
#[cfg(not(feature = "parallel"))]
pub(crate) const ONE_THREAD: Exec<'static> = core::marker::PhantomData;

/// One row-wise step: `(first row, its rows)`, `false` when it failed.
#[cfg(any(feature = "bert", feature = "llama"))]
pub(crate) type RowsFn<'f> = dyn Fn(usize, &mut [f32]) -> bool + Sync + 'f;

/// Runs `f(first, rows)` over the `n` rows of `data` (`width` values each), split by rows
/// across `exec`'s threads when there are several and the rows hold at least
/// `ROWS_PAR_MIN` values (the elementwise steps between products: activations, residual
/// norms), on the calling thread otherwise. `f` computes every row the same way whatever
/// the split, so results do not depend on the thread count.
///
/// # Errors
/// [`Error::LengthMismatch`] when `data` is shorter than `n` rows, [`Error::BadInput`]
/// when `f` fails.
#[cfg(any(feature = "bert", feature = "llama"))]
pub(crate) fn for_rows(
    exec: Exec<'_>,
    data: &mut [f32],
    n: usize,
    width: usize,
    f: &RowsFn<'_>,
) -> Result<()> {
    let found = data.len();
    let data = data.get_mut(..n * width).ok_or(Error::LengthMismatch {
        expected: n * width,
        found,
    })?;
    #[cfg(feature = "parallel")]
    if let Some(e) = exec.filter(|e| e.threads() > 1 && n > 1 && n * width >= ROWS_PAR_MIN) {
        use crate::par::{run_split, split_ranges, MAX_PARTS};
        let mut starts = [0usize; MAX_PARTS + 1];
        let count = split_ranges(n, e.threads(), 1, &mut starts);
        let ok = run_split(e, data, &starts, count, width, 0, &|r, rows, _| {
            f(r.start, rows)
        });
        return if ok { Ok(()) } else { Err(Error::BadInput) };
    }
    let _ = exec;
    if f(0, data) {
        Ok(())
    } else {
        Err(Error::BadInput)
    }
}

/// Fewest values a row-wise step splits across threads (below, waking a thread costs
/// more than the step).
#[cfg(all(feature = "parallel", any(feature = "bert", feature = "llama")))]
const ROWS_PAR_MIN: usize = 1 << 14;

/// A dense product on `exec`'s threads, or on the calling thread. `spare` (free during the
/// product; may be empty) lets a batch split by output rows (see [`linear_par`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn dense(
    exec: Exec<'_>,
    layer: &Dense<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    wbuf: &mut [f32],
    spare: &mut [f32],
    after: &[f32],
    block_kernels: bool,
) -> Result<()> {
    #[cfg(feature = "parallel")]
    if let Some(e) = exec {
        return linear_par(e, layer, x, n, y, wbuf, spare, after, !block_kernels);
    }
    let _ = (exec, spare);
    // Without block kernels compiled in both are one path: keep one copy of it.
    if block_kernels || !super::weights::QUANT_ROWS {
        linear_then(layer, x, n, y, wbuf, after)
    } else {
        super::weights::linear_f32_inputs(layer, x, n, y, wbuf, after)
    }
}

/// What one forward pass runs its slots with: the base's slot table, the active adapter
/// (unmerged), the merged weights, if any, and the executor.
#[derive(Clone, Copy)]
pub(crate) struct Linears<'r, 'a> {
    pub(crate) slots: &'r SlotTable<'a>,
    pub(crate) adapter: Option<&'r Prepared<'a, 'r>>,
    pub(crate) merged: Option<&'r [f32]>,
    pub(crate) exec: Exec<'r>,
    /// Small batches over block-quantized weights take the block kernels with 8-bit
    /// activations (decoders, where decode speed is memory-bound); encoders and vector
    /// models keep `f32` inputs everywhere (their outputs as before, merged and unmerged
    /// within the same rounding).
    pub(crate) block_kernels: bool,
}

impl<'a> Linears<'_, 'a> {
    /// Slot `i` on a batch of `n` input rows `x` (`n × cols`, modified only through a
    /// copy), writing `n × rows` outputs into `y`; returns `rows`.
    pub(crate) fn apply(
        &self,
        i: usize,
        x: &mut [f32],
        n: usize,
        y: &mut [f32],
        sc: &mut SlotScratch<'_>,
    ) -> Result<usize> {
        let (adapter, merged) = (self.adapter, self.merged);
        let s = self.slots.get(i).ok_or(Error::MissingTensor)?;
        let head = adapter.and_then(|p| p.head(i));
        // A head replacing the weight takes the slot over; one replacing only the bias
        // keeps the base's (or merged) weight and its rotation.
        let replaced = head.is_some_and(|h| h.replaces_weight);
        let (weight, bias_t, rows) = match (head, merged) {
            (Some(h), _) if h.replaces_weight => (WeightView::Tensor(h.weight), h.bias, h.rows),
            (h, Some(m)) => {
                let off = self.slots.merged_offset(i);
                (
                    WeightView::F32(&m[off..off + s.rows * s.cols]),
                    h.map_or(s.bias, |h| h.bias),
                    s.rows,
                )
            }
            (h, None) => (
                WeightView::Tensor(s.weight),
                h.map_or(s.bias, |h| h.bias),
                s.rows,
            ),
        };
        // Unmerged rotation only when the weights are the base's.
        let t = if merged.is_none() && !replaced {
            adapter.map(|p| p.transform(i))
        } else {
            None
        };
        let t = t.unwrap_or(LayerTransform::IDENTITY);
        // A decoder's token step (one row into the block kernels, which quantize it to 8
        // bits) rotates with the input chain's reflector form where it has one: 3.6x
        // fewer bytes than the f32 blocks, which every token reads from memory. Prompts
        // and encoders keep the f32 blocks.
        let token_step = super::adapter::REFLECTOR_BUILD && self.block_kernels && n == 1;
        let reflectors = match (t.q_in.is_some() && token_step, adapter) {
            (true, Some(p)) => p.reflectors_in(i),
            _ => None,
        };
        // Only the x86-64 kernels prefetch (`linear_then`); other targets skip the look-up.
        let after = match (merged, adapter) {
            (None, Some(p))
                if cfg!(target_arch = "x86_64")
                    && i + 1 < self.slots.len()
                    && !p.head(i + 1).is_some_and(|h| h.replaces_weight) =>
            {
                match p.reflectors_in(i + 1).filter(|_| token_step) {
                    Some(r) => bytemuck::try_cast_slice(r.data()).unwrap_or(&[]),
                    None => p.transform(i + 1).q_in.map(|q| q.blocks()).unwrap_or(&[]),
                }
            }
            _ => &[],
        };
        slot_apply(
            self.exec,
            self.block_kernels,
            weight,
            bias_t,
            rows,
            s.cols,
            (&t, reflectors),
            x,
            n,
            y,
            sc,
            after,
        )
    }
}

/// Copies a model's final activations into the caller's `output`; their count.
///
/// # Errors
/// [`Error::BufferTooSmall`] when `output` is shorter than `values`.
pub(crate) fn write_output(output: &mut [f32], values: &[f32]) -> Result<usize> {
    let got = output.len();
    let out = output
        .get_mut(..values.len())
        .ok_or(Error::BufferTooSmall {
            needed: values.len(),
            got,
        })?;
    out.copy_from_slice(values);
    Ok(values.len())
}

/// One slot's arithmetic on a batch of `n` input rows `x` (`n × cols`, modified only
/// through a copy): `y = s ⊙ Q_out (W (Q_in x)) + bias`, `n × rows` outputs into `y`;
/// returns `rows`. [`Linears::apply`] picks the weight, bias and transform (and the
/// reflector form of `Q_in` that rotates the input instead, where there is one); the
/// baked reader calls it too, so both run the same code.
#[allow(clippy::too_many_arguments)]
pub(crate) fn slot_apply(
    exec: Exec<'_>,
    block_kernels: bool,
    weight: WeightView<'_>,
    bias_t: Option<TensorRef<'_>>,
    rows: usize,
    cols: usize,
    (t, reflectors): (&LayerTransform<'_>, Option<ReflectorChain<'_>>),
    x: &mut [f32],
    n: usize,
    y: &mut [f32],
    sc: &mut SlotScratch<'_>,
    after: &[f32],
) -> Result<usize> {
    let SlotScratch {
        rot,
        spare,
        chain,
        wbuf,
        bias: bias_buf,
    } = sc;
    let bias = match bias_t {
        Some(bt) => {
            bt.decode_f32(0, &mut bias_buf[..rows])?;
            Some(&bias_buf[..rows])
        }
        None => None,
    };
    let input: &[f32] = match &t.q_in {
        Some(q) => {
            let xr = &mut rot[..n * cols];
            if reflectors.is_some_and(|r| r.rotate_rows_from(&x[..n * cols], xr)) {
                // Rotated by the reflectors.
            } else if q.has_simd_kernel() {
                rotate_rows_from(exec, q, &x[..n * cols], xr, n, chain)?;
            } else {
                xr.copy_from_slice(&x[..n * cols]);
                rotate_rows(q, xr, n, spare, chain)?;
            }
            xr
        }
        None => &x[..n * cols],
    };
    // Prepared adapters keep their scale as f32; without an output-side chain it is
    // applied with the bias, in the same pass as the base's bias.
    let scale_f32: Option<&[f32]> = match t.scale {
        Some(Scalars::F32(v)) => Some(v),
        _ => None,
    };
    if t.q_out.is_none() && (t.scale.is_none() || scale_f32.is_some()) {
        dense(
            exec,
            &Dense {
                weight,
                rows,
                cols,
                scale: scale_f32,
                bias,
            },
            input,
            n,
            y,
            wbuf,
            spare,
            after,
            block_kernels,
        )?;
        return Ok(rows);
    }
    dense(
        exec,
        &Dense {
            weight,
            rows,
            cols,
            scale: None,
            bias: None,
        },
        input,
        n,
        y,
        wbuf,
        spare,
        &[],
        block_kernels,
    )?;
    if let Some(q) = &t.q_out {
        rotate_rows(q, &mut y[..n * rows], n, spare, chain)?;
    }
    for yr in y[..n * rows].chunks_exact_mut(rows) {
        match (scale_f32, t.scale) {
            (Some(sv), _) => {
                for (v, s) in yr.iter_mut().zip(sv) {
                    *v *= s;
                }
            }
            (None, Some(sc)) => {
                for (r, v) in yr.iter_mut().enumerate() {
                    *v *= sc.get(r).unwrap_or(1.0);
                }
            }
            (None, None) => {}
        }
        if let Some(b) = bias {
            for (v, bv) in yr.iter_mut().zip(b) {
                *v += bv;
            }
        }
    }
    Ok(rows)
}

/// `dst = Q src` row by row on the SIMD kernels, the rows split across `exec`'s threads
/// at multiples of 8 (the kernels' bands of rows then form as in the whole batch; a row's
/// arithmetic does not depend on its band anyway: the same coefficient vectors, the same
/// order of multiply-adds), so every row is computed exactly as on one thread.
fn rotate_rows_from(
    exec: Exec<'_>,
    q: &Chain<'_>,
    src: &[f32],
    dst: &mut [f32],
    n: usize,
    chain: &mut [f32],
) -> Result<()> {
    #[cfg(feature = "parallel")]
    if let Some(e) = exec.filter(|e| e.threads() > 1 && n >= 48) {
        use crate::par::{run_split, split_ranges, MAX_PARTS};
        let w = q.spec().width();
        let mut starts = [0usize; MAX_PARTS + 1];
        let count = split_ranges(n, e.threads(), 8, &mut starts);
        if count > 1
            && src.len() == n * w
            && dst.len() == n * w
            && run_split(
                e,
                dst,
                &starts,
                count,
                w,
                q.spec().apply_scratch_len(),
                &|r, out, scratch| {
                    let rows = &src[r.start * w..r.end * w];
                    q.apply_rows_from(rows, out, false, scratch).is_ok()
                },
            )
        {
            return Ok(());
        }
    }
    let _ = (exec, n);
    q.apply_rows_from(src, dst, false, chain)
}

/// Rotates every row of `data` (`n × w`) by `q`: in place on the SIMD kernels when the
/// CPU has them for this chain, otherwise through a feature-major copy (when `spare` and
/// `chain` are big enough) so that portable code vectorises across the `n` rows
/// ([`Chain::apply_columns`]), otherwise one vector at a time.
pub(crate) fn rotate_rows(
    q: &Chain<'_>,
    data: &mut [f32],
    n: usize,
    spare: &mut [f32],
    chain: &mut [f32],
) -> Result<()> {
    let w = q.spec().width();
    if n > 1
        && !q.has_simd_kernel()
        && spare.len() >= n * w
        && chain.len() >= q.columns_scratch_len(n)
    {
        let xt = &mut spare[..n * w];
        transpose(data, n, w, xt);
        q.apply_columns(xt, n, false, chain)?;
        transpose(xt, w, n, data);
        Ok(())
    } else {
        q.apply_rows(data, false, chain)
    }
}
