//! The adapter-aware linear op: one slot of a model on a batch of input rows, applying
//! the active adapter unmerged (`y = s ⊙ Q_out (W (Q_in x)) + bias`), its replacement
//! tensors (task heads), or merged weights. Every architecture runs its slots through
//! [`Linears::apply`]; the baked reader calls [`slot_apply`] with the same arithmetic.

use super::adapter::Prepared;
use super::slots::SlotTable;
#[cfg(feature = "parallel")]
use super::weights::linear_par;
use super::weights::{linear_then, rotated_in_place, Dense, TensorRef, WeightView};
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

/// What a one-step path runs with ([`Linears::one_step`]): the executor, two slots as
/// layers, and their input chains.
#[cfg(all(feature = "parallel", feature = "bert"))]
type OneStep<'e, 'b> = (
    &'e dyn crate::par::Executor,
    [Dense<'b>; 2],
    [Option<Chain<'b>>; 2],
);

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

impl<'r, 'a> Linears<'r, 'a> {
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
        let r = self.resolve(i)?;
        // A decoder's token step (one row into the block kernels, which quantize it to 8
        // bits) rotates with the input chain's reflector form where it has one: 3.6x
        // fewer bytes than the f32 blocks, which every token reads from memory. Prompts
        // and encoders keep the f32 blocks.
        let token_step = super::adapter::REFLECTOR_BUILD && self.block_kernels && n == 1;
        let reflectors = self.reflectors(i, &r.transform, token_step);
        let after = self.next_reads(i + 1, token_step);
        slot_apply(
            self.exec,
            self.block_kernels,
            r.weight,
            r.bias,
            r.rows,
            r.cols,
            (&r.transform, reflectors),
            x,
            n,
            y,
            sc,
            after,
        )
    }

    /// `y = down(act(up(x)))` for the slots `[up, down]` of a feed-forward block with the
    /// elementwise activation `act` between them; returns `down`'s rows. A batch of at most
    /// 16 inputs on two or more threads writes the hidden layer once, straight into the
    /// down product's packed panel (`weights::feed_forward_panel`: each thread activates and
    /// packs the hidden features it computed); anything else runs as [`Linears::apply`],
    /// `act` on every row of `mid` (`act(up(x))`, `n` rows of `up`'s width), then `apply`
    /// again. The same bits either way.
    #[cfg(feature = "bert")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn feed_forward(
        &self,
        [up, down]: [usize; 2],
        act: fn(&mut [f32]),
        x: &mut [f32],
        n: usize,
        mid: &mut [f32],
        y: &mut [f32],
        sc: &mut SlotScratch<'_>,
    ) -> Result<usize> {
        #[cfg(feature = "parallel")]
        if let Some(rows) = self.feed_forward_step([up, down], act, x, n, y, sc)? {
            return Ok(rows);
        }
        let width = self.apply(up, x, n, mid, sc)?;
        for_rows(self.exec, mid, n, width, &|_, rows| {
            act(rows);
            true
        })?;
        self.apply(down, mid, n, y, sc)
    }

    /// [`Linears::feed_forward`] as one step (`weights::feed_forward_panel`), where it
    /// applies: two threads or more, both slots the base's weights (or merged ones) with at
    /// most an input chain and an `f32` scale, no head, both biases fitting `sc.bias`.
    /// `Ok(None)`, `y` untouched, elsewhere.
    #[cfg(all(feature = "parallel", feature = "bert"))]
    fn feed_forward_step(
        &self,
        [up, down]: [usize; 2],
        act: fn(&mut [f32]),
        x: &[f32],
        n: usize,
        y: &mut [f32],
        sc: &mut SlotScratch<'_>,
    ) -> Result<Option<usize>> {
        let Some((exec, [du, dd], [cu, cd])) = self.one_step([up, down], n, sc.bias)? else {
            return Ok(None);
        };
        // What the calling thread reads next (the next slot, a query), and what the
        // other threads do (the slot after it: the key, which the next query and key
        // step rotates on another thread).
        let after = [
            self.next_reads(down + 1, false),
            self.next_reads(down + 2, false),
        ];
        let done = super::weights::feed_forward_panel(
            exec,
            [&du, &dd],
            [cu.as_ref(), cd.as_ref()],
            act,
            x,
            n,
            y,
            (&mut *sc.wbuf, &mut *sc.spare),
            after,
            self.block_kernels,
        );
        Ok(done.then_some(dd.rows))
    }

    /// Slots `i` and `j`, which read the same batch `x` (an encoder's query and key), into
    /// `yi` and `yj`. A batch of at most 16 inputs on an even number of threads runs both as
    /// one step (`weights::shared_input_pair`: half the threads per slot, each rotating the
    /// batch by its slot's input chain itself, so the two rotations run at the same time);
    /// anything else as two [`Linears::apply`] calls. The same bits either way.
    #[cfg(feature = "bert")]
    pub(crate) fn apply_shared(
        &self,
        [i, j]: [usize; 2],
        x: &mut [f32],
        n: usize,
        [yi, yj]: [&mut [f32]; 2],
        sc: &mut SlotScratch<'_>,
    ) -> Result<()> {
        #[cfg(feature = "parallel")]
        if let Some((exec, [li, lj], [ci, cj])) = self.one_step([i, j], n, sc.bias)? {
            let outs = ([&mut *yi, &mut *yj], &mut *sc.spare);
            let after = self.next_reads(j + 1, false);
            if super::weights::shared_input_pair(
                exec,
                [&li, &lj],
                [ci.as_ref(), cj.as_ref()],
                x,
                n,
                outs,
                after,
                self.block_kernels,
            ) {
                return Ok(());
            }
        }
        self.apply(i, x, n, yi, sc)?;
        self.apply(j, x, n, yj, sc)?;
        Ok(())
    }

    /// An encoder block's value slot `value` on the block input `x`, its attention over
    /// `heads` heads with the query and key outputs `qk`, and its output slot `output`
    /// on the attention's context, for a batch of at most 16 inputs on two or more
    /// threads (`weights::attention_panels`): the value outputs into `v`, the output
    /// slot's into `y`. `Ok(false)` where that path does not apply (no such executor or
    /// batch, a head, an output-side chain, shapes without its kernels); the caller then
    /// runs [`Linears::apply`], the attention and `apply` again, with the same bits.
    #[cfg(all(feature = "parallel", feature = "bert"))]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attention_step(
        &self,
        [value, output]: [usize; 2],
        heads: usize,
        x: &[f32],
        qk: [&[f32]; 2],
        n: usize,
        [v, y]: [&mut [f32]; 2],
        sc: &mut SlotScratch<'_>,
    ) -> Result<bool> {
        let Some((exec, [dv, dout], [cv, cout])) = self.one_step([value, output], n, sc.bias)?
        else {
            return Ok(false);
        };
        // The calling thread rotates the output slot's panel next, then the next slot's.
        let after = [
            self.next_reads(output, false),
            self.next_reads(output + 1, false),
        ];
        Ok(super::weights::attention_panels(
            exec,
            [&dv, &dout],
            [cv.as_ref(), cout.as_ref()],
            heads,
            x,
            qk,
            n,
            [v, y],
            (&mut *sc.wbuf, &mut *sc.spare, &mut *sc.rot),
            after,
            self.block_kernels,
        ))
    }

    /// What a one-step path over slots `slots` (a batch of `n`) runs with: the executor
    /// (two threads or more, a batch the one-step paths take), the slots as [`Dense`]
    /// layers, their biases decoded into `bias`, and their input chains. `None` where no
    /// one-step path applies (no such executor or batch, a head, an output-side chain, a
    /// scale that is not `f32`, biases longer than `bias`).
    #[cfg(all(feature = "parallel", feature = "bert"))]
    fn one_step<'b>(
        &self,
        slots: [usize; 2],
        n: usize,
        bias: &'b mut [f32],
    ) -> Result<Option<OneStep<'r, 'b>>>
    where
        'r: 'b,
    {
        let Some(exec) = self
            .exec
            .filter(|e| e.threads() > 1 && super::weights::one_step_batch(n))
        else {
            return Ok(None);
        };
        let r = [self.resolve(slots[0])?, self.resolve(slots[1])?];
        let heads = self
            .adapter
            .is_some_and(|p| slots.iter().any(|&s| p.head(s).is_some()));
        if heads || !r.iter().all(|r| one_pass(&r.transform)) || bias.len() < r[0].rows + r[1].rows
        {
            return Ok(None);
        }
        let (b0, b1) = bias.split_at_mut(r[0].rows);
        let [d0, d1] = [(&r[0], b0), (&r[1], b1)].map(|(r, buf)| {
            decoded_bias(r.bias, buf, r.rows).map(|bias| Dense {
                weight: r.weight,
                rows: r.rows,
                cols: r.cols,
                scale: f32_scale(&r.transform),
                bias,
            })
        });
        let chains = [r[0].transform.q_in, r[1].transform.q_in];
        Ok(Some((exec, [d0?, d1?], chains)))
    }

    /// What slot `i` runs with: the weight (an adapter's head that replaces it, the merged
    /// weights, or the base's), the bias, the output count and the unmerged transform
    /// (identity with merged weights or a replaced weight).
    fn resolve(&self, i: usize) -> Result<Resolved<'a>>
    where
        Self: 'a,
    {
        let (adapter, merged) = (self.adapter, self.merged);
        let s = self.slots.get(i).ok_or(Error::MissingTensor)?;
        let head = adapter.and_then(|p| p.head(i));
        // A head replacing the weight takes the slot over; one replacing only the bias
        // keeps the base's (or merged) weight and its rotation.
        let replaced = head.is_some_and(|h| h.replaces_weight);
        let (weight, bias, rows) = match (head, merged) {
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
        Ok(Resolved {
            weight,
            bias,
            rows,
            cols: s.cols,
            transform: t.unwrap_or(LayerTransform::IDENTITY),
        })
    }
}

/// One slot as [`Linears::resolve`] finds it for a forward pass.
struct Resolved<'a> {
    weight: WeightView<'a>,
    bias: Option<TensorRef<'a>>,
    rows: usize,
    cols: usize,
    transform: LayerTransform<'a>,
}

/// A prepared transform's per-output scale where it is kept as `f32` (prepared adapters
/// keep it so); `None` without a scale or for another form.
fn f32_scale<'t>(t: &LayerTransform<'t>) -> Option<&'t [f32]> {
    match t.scale {
        Some(Scalars::F32(v)) => Some(v),
        _ => None,
    }
}

/// Whether a slot's transform fits one pass over the product's outputs (with the bias):
/// no output-side chain, and no scale or an `f32` one.
fn one_pass(t: &LayerTransform<'_>) -> bool {
    t.q_out.is_none() && (t.scale.is_none() || f32_scale(t).is_some())
}

/// A slot's bias (`rows` values) decoded into `buf`, or `None` without one.
///
/// # Errors
/// The tensor's decoding errors; [`Error::BufferTooSmall`] for a `buf` shorter than `rows`.
fn decoded_bias<'b>(
    bias: Option<TensorRef<'_>>,
    buf: &'b mut [f32],
    rows: usize,
) -> Result<Option<&'b [f32]>> {
    let Some(bt) = bias else {
        return Ok(None);
    };
    let got = buf.len();
    let out = buf
        .get_mut(..rows)
        .ok_or(Error::BufferTooSmall { needed: rows, got })?;
    bt.decode_f32(0, out)?;
    Ok(Some(out))
}

impl<'a> Linears<'_, 'a> {
    /// The reflector form of slot `slot`'s input chain (transform `t`), which a decoder's
    /// token step (`token_step`) rotates with where the adapter keeps one.
    fn reflectors(
        &self,
        slot: usize,
        t: &LayerTransform<'_>,
        token_step: bool,
    ) -> Option<ReflectorChain<'_>> {
        token_reflectors(self.adapter, slot, t, token_step)
    }

    /// What slot `next` reads first when it runs unmerged: its input chain's reflectors on
    /// a decoder's token step (`token_step`), else its `f32` blocks; empty without an
    /// adapter, with merged weights, past the last slot, for a head that replaces the weight,
    /// and off x86-64 (only its kernels prefetch, `linear_then`).
    fn next_reads(&self, next: usize, token_step: bool) -> &'a [f32]
    where
        Self: 'a,
    {
        match (self.merged, self.adapter) {
            (None, Some(p))
                if cfg!(target_arch = "x86_64")
                    && next < self.slots.len()
                    && !p.head(next).is_some_and(|h| h.replaces_weight) =>
            {
                match p.reflectors_in(next).filter(|_| token_step) {
                    Some(r) => bytemuck::try_cast_slice(r.data()).unwrap_or(&[]),
                    None => p.transform(next).q_in.map(|q| q.blocks()).unwrap_or(&[]),
                }
            }
            _ => &[],
        }
    }

    /// Slots `i` and `i + 1`, which read the same input `x` (a decoder's k and v, or gate
    /// and up), into `ya` and `yb`. A single input on two or more threads runs both as one
    /// step ([`Linears::pair_step`]); anything else as two [`Linears::apply`] calls.
    #[cfg(feature = "llama")]
    pub(crate) fn apply_pair(
        &self,
        i: usize,
        x: &mut [f32],
        n: usize,
        ya: &mut [f32],
        yb: &mut [f32],
        sc: &mut SlotScratch<'_>,
    ) -> Result<()> {
        #[cfg(feature = "parallel")]
        if n == 1 && self.pair_step(i, x, ya, yb) {
            return Ok(());
        }
        self.apply(i, x, n, ya, sc)?;
        self.apply(i + 1, x, n, yb, sc)?;
        Ok(())
    }

    /// One input through slots `i` and `i + 1` of equal shape as one step of the executor:
    /// half the parts compute slot `i`'s output rows, half slot `i + 1`'s, and each part
    /// rotates its slot's input itself (the same arithmetic as [`slot_apply`], so outputs are
    /// bit-identical to the one-thread path). On two threads that runs the two rotations at
    /// the same time where [`Linears::apply`] runs each on the calling thread while the
    /// others wait, and puts the two small key and value products (too small to split) on
    /// two threads. With `2p` threads each slot's rows go to `p` parts; with an odd count
    /// only slots too small to split anyway take this step (one thread would idle while
    /// the others run a whole slot each). `false` when the slots do not qualify (different
    /// shapes, a head, merged weights, an output-side chain, no executor with two threads)
    /// or a part failed; the caller then runs them one by one, which rewrites both outputs.
    #[cfg(all(feature = "parallel", feature = "llama"))]
    fn pair_step(&self, i: usize, x: &[f32], ya: &mut [f32], yb: &mut [f32]) -> bool {
        use super::weights::{single_input_rows, weight_scratch_len, PANEL, PAR_MIN_WEIGHTS};
        use crate::par::{split_ranges, MAX_PARTS};
        let Some(exec) = self.exec.filter(|e| e.threads() >= 2) else {
            return false;
        };
        let (Some(a), Some(b)) = (self.slots.get(i), self.slots.get(i + 1)) else {
            return false;
        };
        let (rows, cols) = (a.rows, a.cols);
        if exec.threads() % 2 == 1 && rows.saturating_mul(cols) >= PAR_MIN_WEIGHTS {
            return false;
        }
        let transforms = [i, i + 1].map(|j| {
            self.adapter
                .map_or(LayerTransform::IDENTITY, |p| p.transform(j))
        });
        if self.merged.is_some()
            || (b.rows, b.cols) != (rows, cols)
            || x.len() != cols
            || ya.len() < rows
            || yb.len() < rows
            || transforms.iter().any(|t| t.q_out.is_some())
            || self
                .adapter
                .is_some_and(|p| p.head(i).is_some() || p.head(i + 1).is_some())
        {
            return false;
        }
        let token_step = super::adapter::REFLECTOR_BUILD && self.block_kernels;
        let mut starts = [0usize; MAX_PARTS + 1];
        let per = split_ranges(
            rows,
            (exec.threads() / 2).min(MAX_PARTS / 2),
            PANEL,
            &mut starts,
        );
        let mut outs: heapless::Vec<&mut [f32], MAX_PARTS> = heapless::Vec::new();
        for y in [&mut ya[..rows], &mut yb[..rows]] {
            let mut rest = y;
            for k in 0..per {
                let (head, tail) = rest.split_at_mut(starts[k + 1] - starts[k]);
                let _ = outs.push(head);
                rest = tail;
            }
        }
        let chain_len = transforms
            .iter()
            .filter_map(|t| t.q_in.as_ref().map(|q| q.spec().apply_scratch_len()))
            .max()
            .unwrap_or(0);
        let wlen = weight_scratch_len(cols, 1);
        let after = self.next_reads(i + 2, token_step);
        let failed = core::sync::atomic::AtomicBool::new(false);
        exec.for_each(
            &mut outs,
            cols + chain_len + wlen + rows,
            &|p, out, scratch| {
                let (j, k) = (p / per, p % per);
                let (r0, r1) = (starts[k], starts[k + 1]);
                let ok = self
                    .pair_part(i + j, &transforms[j], x, (r0, r1), out, scratch, token_step)
                    .and_then(|(layer, input, wbuf)| {
                        let next = if p == 0 { after } else { &[] };
                        single_input_rows(&layer, input, out, wbuf, next, self.block_kernels).ok()
                    });
                if ok.is_none() {
                    failed.store(true, core::sync::atomic::Ordering::Relaxed);
                }
            },
        );
        !failed.load(core::sync::atomic::Ordering::Relaxed)
    }

    /// Part of [`Linears::pair_step`]: slot `slot`'s rows `r0 .. r1` as a layer of their
    /// own (scale and bias sliced, the bias decoded into `scratch`), `x` rotated by the
    /// slot's input chain into `scratch` (reflectors on a token step, as
    /// [`Linears::apply`] picks them), and what is left of `scratch` for the product.
    #[cfg(all(feature = "parallel", feature = "llama"))]
    #[allow(clippy::too_many_arguments)]
    fn pair_part<'s>(
        &'s self,
        slot: usize,
        t: &LayerTransform<'s>,
        x: &'s [f32],
        (r0, r1): (usize, usize),
        out: &[f32],
        scratch: &'s mut [f32],
        token_step: bool,
    ) -> Option<(Dense<'s>, &'s [f32], &'s mut [f32])> {
        let s = self.slots.get(slot)?;
        let (rows, cols) = (s.rows, s.cols);
        if out.len() != r1 - r0 || scratch.len() < cols + rows {
            return None;
        }
        let (rot, rest) = scratch.split_at_mut(cols);
        let (bias, rest) = rest.split_at_mut(rows);
        let bias = decoded_bias(s.bias, bias, rows).ok()?;
        let scale = f32_scale(t);
        if t.scale.is_some() && scale.is_none() {
            return None;
        }
        let chain_len = t.q_in.as_ref().map_or(0, |q| q.spec().apply_scratch_len());
        let (chain, wbuf) = rest.split_at_mut(chain_len.min(rest.len()));
        let reflectors = self.reflectors(slot, t, token_step);
        let input = rotated_input(ONE_THREAD, (t, reflectors), x, 1, rot, &mut [], chain).ok()?;
        let layer = Dense {
            weight: WeightView::Tensor(s.weight),
            rows,
            cols,
            scale,
            bias,
        }
        .row_range(r0..r1)?;
        Some((layer, input, wbuf))
    }
}

/// The reflector form of slot `slot`'s input chain (transform `t`) under `adapter`, which
/// a decoder's token step (`token_step`) rotates with where the adapter keeps one.
fn token_reflectors<'p>(
    adapter: Option<&'p Prepared<'_, '_>>,
    slot: usize,
    t: &LayerTransform<'_>,
    token_step: bool,
) -> Option<ReflectorChain<'p>> {
    adapter
        .filter(|_| token_step && t.q_in.is_some())
        .and_then(|p| p.reflectors_in(slot))
}

/// A product of `n` inputs that are each a decoding step of its own sequence
/// ([`crate::runtime::Model::decode_steps`]) on `exec`'s threads or the calling one:
/// every output row bit for bit what [`dense`] gives that input alone. `spare` (free
/// during the product) lets the threads split the outputs when it holds `n · rows`
/// values.
///
/// # Errors
/// As [`dense`].
#[cfg(feature = "llama")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn dense_steps(
    exec: Exec<'_>,
    layer: &Dense<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    wbuf: &mut [f32],
    spare: &mut [f32],
    block_kernels: bool,
) -> Result<()> {
    #[cfg(feature = "parallel")]
    if let Some(e) = exec {
        let bufs = (wbuf, spare);
        return super::weights::linear_par_steps(e, layer, x, n, y, bufs, block_kernels);
    }
    let _ = (exec, spare);
    super::weights::linear_steps(layer, x, n, y, wbuf, block_kernels)
}

/// Slot `i` for `n` decoding steps of different sequences, input row `b` (of `x`, `n ×
/// cols`) under `adapters[b]` (unmerged; `None`: the bare base), into `y` (`n × rows`);
/// returns `rows`. Each row is rotated by its own adapter's input chain (as a token step
/// alone rotates it), the base's weights are multiplied with all rows at once
/// ([`dense_steps`]: read once for several rows), then each row gets its own adapter's
/// output side, scale and bias. Every output row is bit for bit what [`Linears::apply`]
/// gives that row alone under its adapter; a slot where some adapter has a task head
/// runs each row that way.
#[cfg(feature = "llama")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply_steps<'a>(
    slots: &SlotTable<'a>,
    adapters: &[Option<&Prepared<'a, '_>>],
    exec: Exec<'_>,
    i: usize,
    x: &mut [f32],
    n: usize,
    y: &mut [f32],
    sc: &mut SlotScratch<'_>,
) -> Result<usize> {
    let s = slots.get(i).ok_or(Error::MissingTensor)?;
    let (rows, cols) = (s.rows, s.cols);
    let (xs, ys) = (n.saturating_mul(cols), n.saturating_mul(rows));
    if adapters.len() != n || x.len() < xs || y.len() < ys || sc.rot.len() < xs {
        return Err(Error::LengthMismatch {
            expected: xs,
            found: x.len().min(sc.rot.len()),
        });
    }
    if adapters.iter().flatten().any(|p| p.head(i).is_some()) {
        for (b, adapter) in adapters.iter().enumerate() {
            let one = Linears {
                slots,
                adapter: *adapter,
                merged: None,
                exec,
                block_kernels: true,
            };
            one.apply(
                i,
                &mut x[b * cols..(b + 1) * cols],
                1,
                &mut y[b * rows..],
                sc,
            )?;
        }
        return Ok(rows);
    }
    let transform = |b: usize| adapters[b].map_or(LayerTransform::IDENTITY, |p| p.transform(i));
    let SlotScratch {
        rot,
        spare,
        chain,
        wbuf,
        bias: bias_buf,
    } = sc;
    for (b, (xb, rb)) in x
        .chunks_exact(cols)
        .zip(rot.chunks_exact_mut(cols))
        .take(n)
        .enumerate()
    {
        let t = transform(b);
        // Every row is a token step of its own (one input, the block kernels).
        let token_step = super::adapter::REFLECTOR_BUILD;
        let reflectors = token_reflectors(adapters[b], i, &t, token_step);
        if t.q_in.is_some() {
            rotated_input(ONE_THREAD, (&t, reflectors), xb, 1, rb, spare, chain)?;
        } else {
            rb.copy_from_slice(xb);
        }
    }
    let base = Dense {
        weight: WeightView::Tensor(s.weight),
        rows,
        cols,
        scale: None,
        bias: None,
    };
    dense_steps(exec, &base, &rot[..xs], n, y, wbuf, spare, true)?;
    let bias = decoded_bias(s.bias, bias_buf, rows)?;
    for (b, yb) in y[..ys].chunks_exact_mut(rows).enumerate() {
        let t = transform(b);
        if one_pass(&t) {
            super::weights::finish_outputs(yb, rows, 1, f32_scale(&t), bias);
        } else {
            output_side(&t, yb, 1, bias, (spare, chain))?;
        }
    }
    Ok(rows)
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
    let bias = decoded_bias(bias_t, bias_buf, rows)?;
    // Prepared adapters keep their scale as f32; without an output-side chain it is
    // applied with the bias, in the same pass as the base's bias.
    let scale_f32 = f32_scale(t);
    let one_pass = one_pass(t);
    if let (Some(q), true, None) = (&t.q_in, one_pass, &reflectors) {
        // A batch on the in-place kernel rotates its packed inputs where they lie.
        let layer = Dense {
            weight,
            rows,
            cols,
            scale: scale_f32,
            bias,
        };
        let x = &x[..n * cols];
        let bufs = (&mut **wbuf, &mut **spare);
        if rotated_in_place(exec, &layer, q, x, n, y, bufs, after, block_kernels)? {
            return Ok(rows);
        }
    }
    let input = rotated_input(exec, (t, reflectors), &x[..n * cols], n, rot, spare, chain)?;
    if one_pass {
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
    output_side(t, &mut y[..n * rows], n, bias, (spare, chain))?;
    Ok(rows)
}

/// The part of a slot's arithmetic after the base's product when it does not fit one
/// pass ([`one_pass`]): the `n` output rows `y` rotated by the output-side chain, then
/// scaled and the bias added.
///
/// # Errors
/// The chain's errors.
fn output_side(
    t: &LayerTransform<'_>,
    y: &mut [f32],
    n: usize,
    bias: Option<&[f32]>,
    (spare, chain): (&mut [f32], &mut [f32]),
) -> Result<()> {
    let rows = y.len() / n.max(1);
    let scale_f32 = f32_scale(t);
    if let Some(q) = &t.q_out {
        rotate_rows(q, y, n, spare, chain)?;
    }
    for yr in y.chunks_exact_mut(rows.max(1)) {
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
    Ok(())
}

/// The `n` input rows `x` of a slot with transform `t`: rotated by its input chain into
/// `rot` (by `reflectors`, the chain's reflector form, where given and this CPU has their
/// kernel; else on the SIMD kernels, split across `exec`'s threads; else through `spare`
/// or one row at a time, see [`rotate_rows`]), or `x` itself without an input chain.
///
/// # Errors
/// [`Error::BufferTooSmall`] when `rot` is shorter than `x`; the chain's errors.
fn rotated_input<'b>(
    exec: Exec<'_>,
    (t, reflectors): (&LayerTransform<'_>, Option<ReflectorChain<'_>>),
    x: &'b [f32],
    n: usize,
    rot: &'b mut [f32],
    spare: &mut [f32],
    chain: &mut [f32],
) -> Result<&'b [f32]> {
    let Some(q) = &t.q_in else {
        return Ok(x);
    };
    let got = rot.len();
    let xr = rot.get_mut(..x.len()).ok_or(Error::BufferTooSmall {
        needed: x.len(),
        got,
    })?;
    if reflectors.is_some_and(|r| r.rotate_rows_from(x, xr)) {
        // Rotated by the reflectors.
    } else if q.has_simd_kernel() {
        rotate_rows_from(exec, q, x, xr, n, chain)?;
    } else {
        xr.copy_from_slice(x);
        rotate_rows(q, xr, n, spare, chain)?;
    }
    Ok(xr)
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
