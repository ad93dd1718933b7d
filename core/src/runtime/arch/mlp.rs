//! The `mlp` architecture of `docs/format.md`: dense layers `layers.{i}` with ReLU
//! between them, and the arena helpers every vector model (`mlp`, `cnn`, the baked
//! reader) shares.

use super::{Forward, InputKind};
use crate::gguf::{self, Gguf};
use crate::nn::activation::relu;
#[cfg(feature = "cnn")]
use crate::nn::conv::Conv;
use crate::runtime::linear::{write_output, Linears, SlotScratch};
use crate::runtime::model::Input;
use crate::runtime::slots::{push_indexed, reserve, NameBuf, Slot, SlotSink, SlotTable};
use crate::runtime::weights::{weight_scratch_len, TensorRef};
use crate::{Error, Result};

/// An `mlp`: its input length (the layers are slots).
#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    input_len: usize,
}

impl Mlp {
    /// Reads `mlp.*` and the layers into `slots`.
    pub(crate) fn load<'a>(g: &Gguf<'a>, slots: &mut dyn SlotSink<'a>) -> Result<Self> {
        let layers = g.get_u32(gguf::KEY_MLP_LAYER_COUNT)? as usize;
        if g.get_str(gguf::KEY_MLP_ACTIVATION)? != gguf::ACTIVATION_RELU {
            return Err(Error::UnsupportedValue {
                key: crate::KeyName(gguf::KEY_MLP_ACTIVATION),
            });
        }
        let input_len = g.get_u32(gguf::KEY_MLP_INPUT_LENGTH)? as usize;
        if layers == 0 {
            return Err(Error::UnsupportedValue {
                key: crate::KeyName(gguf::KEY_MLP_LAYER_COUNT),
            });
        }
        reserve(slots, layers)?;
        let mut width = input_len;
        for i in 0..layers {
            let slot = dense_slot(g, "layers.", i, width)?;
            width = slot.rows;
            slots.push(slot)?;
        }
        Ok(Mlp { input_len })
    }
}

impl<'a> Forward<'a> for Mlp {
    fn input(&self) -> InputKind {
        InputKind::Vector {
            len: self.input_len,
        }
    }
    fn output_len(&self, slots: &SlotTable<'a>) -> usize {
        slots.as_slice().last().map_or(0, |s| s.rows)
    }
    fn arena_len(&self, slots: &SlotTable<'a>, _max_tokens: usize, head_rows: usize) -> usize {
        let (act, max_cols, max_rows) = vector_widths(slots, self.input_len, head_rows);
        vector_arena_len(act, max_cols, max_rows, 1)
    }
    fn forward(
        &self,
        lin: &Linears<'_, 'a>,
        input: Input<'_>,
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize> {
        let head_rows = lin.adapter.map_or(0, |p| p.head_rows());
        let widths = vector_widths(lin.slots, self.input_len, head_rows);
        vector_forward(
            lin,
            input,
            self.input_len,
            Convs::NONE,
            widths,
            1,
            output,
            arena,
        )
    }
}

/// The convolutions ahead of a vector model's dense layers: how many, and the input's
/// geometry. Each one's shape comes from its slot (`(out_c, in_c·k·k)`, checked when the
/// model loaded), so no table, and no constant, bounds them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Convs {
    /// Convolutions: slots `0..count`.
    pub(crate) count: usize,
    /// Input channels, height and width.
    #[cfg_attr(not(feature = "cnn"), allow(dead_code))]
    pub(crate) input: (usize, usize, usize),
}

impl Convs {
    /// No convolution (an `mlp`).
    pub(crate) const NONE: Convs = Convs {
        count: 0,
        input: (0, 0, 0),
    };

    /// The convolutions' geometry in order: each one's input is the previous one's
    /// output channels at half its height and width (2x2 max pooling).
    #[cfg(feature = "cnn")]
    pub(crate) fn iter<'s>(&self, slots: &'s SlotTable<'_>) -> impl Iterator<Item = Conv> + 's {
        let (mut c, mut h, mut w) = self.input;
        slots.as_slice().iter().take(self.count).map(move |s| {
            let area = s.cols / c.max(1);
            let mut kernel = 1;
            while kernel * kernel < area {
                kernel += 2;
            }
            let cv = Conv {
                in_c: c,
                out_c: s.rows,
                kernel,
                h,
                w,
            };
            (c, h, w) = (s.rows, h / 2, w / 2);
            cv
        })
    }
}

/// The forward pass of every vector model: convolutions with ReLU and 2x2 max pooling
/// (none for an `mlp`), then slots `convs.count ..` as dense layers with ReLU between
/// them. One function for both architectures, so a firmware that can load either links
/// it once. `widths` and `batch` size the arena as [`vector_arena_len`] does.
#[allow(clippy::too_many_arguments)]
pub(crate) fn vector_forward(
    lin: &Linears<'_, '_>,
    input: Input<'_>,
    input_len: usize,
    convs: Convs,
    (act, max_cols, max_rows): (usize, usize, usize),
    batch: usize,
    output: &mut [f32],
    arena: &mut [f32],
) -> Result<usize> {
    let input = match input {
        Input::Vector(v) if v.len() == input_len => v,
        _ => return Err(Error::BadInput),
    };
    let Buffers {
        a: mut cur,
        b: mut nxt,
        scratch: mut sc,
    } = split_vector_arena(arena, act, max_cols, max_rows, batch)?;
    cur[..input.len()].copy_from_slice(input);
    #[cfg(feature = "cnn")]
    {
        use crate::nn::conv::{chw_to_hwc, hwc_to_chw, im2col, maxpool2};
        // Convolutions: activations are (h, w, c), pixel-major. Input arrives as (c, h, w)
        // like PyTorch; reorder to (h, w, c).
        let mut last = None;
        if convs.count > 0 {
            let (c, h, w) = convs.input;
            chw_to_hwc(&cur[..input.len()], c, h, w, nxt);
            core::mem::swap(&mut cur, &mut nxt);
        }
        for (slot, cv) in convs.iter(lin.slots).enumerate() {
            let (k, pad) = (cv.kernel, cv.kernel / 2);
            let patch = cv.in_c * k * k;
            let pixels = cv.h * cv.w;
            // im2col into nxt: row p holds the patch of pixel p in (ci, dy, dx) order.
            im2col(
                &cur[..pixels * cv.in_c],
                &cv,
                pad,
                &mut nxt[..pixels * patch],
            );
            lin.apply(slot, &mut nxt[..pixels * patch], pixels, cur, &mut sc)?;
            relu(&mut cur[..pixels * cv.out_c]);
            maxpool2(&cur[..pixels * cv.out_c], cv.h, cv.w, cv.out_c, nxt);
            core::mem::swap(&mut cur, &mut nxt);
            last = Some(cv);
        }
        if let Some(last) = last {
            // Flatten in PyTorch's (c, h, w) order.
            hwc_to_chw(
                &cur[..last.out_c * (last.h / 2) * (last.w / 2)],
                last.out_c,
                last.h / 2,
                last.w / 2,
                nxt,
            );
            core::mem::swap(&mut cur, &mut nxt);
        }
    }
    let n_slots = lin.slots.len();
    let mut slot = convs.count;
    let mut width = lin.slots.get(slot).map_or(0, |s| s.cols);
    while slot < n_slots {
        let rows = lin.apply(slot, &mut cur[..width], 1, nxt, &mut sc)?;
        if slot + 1 < n_slots {
            relu(&mut nxt[..rows]);
        }
        core::mem::swap(&mut cur, &mut nxt);
        width = rows;
        slot += 1;
    }
    write_output(output, &cur[..width])
}

/// Widest activation, slot input and slot output (a head of `head_rows` included) of a
/// vector model whose input has `input_len` values.
pub(crate) fn vector_widths(
    slots: &SlotTable<'_>,
    input_len: usize,
    head_rows: usize,
) -> (usize, usize, usize) {
    let (max_cols, max_rows) = slots.max_cols_rows();
    let max_rows = max_rows.max(head_rows);
    (input_len.max(max_rows), max_cols, max_rows)
}

/// Caller-sized buffers of one vector forward pass, carved from the arena.
pub(crate) struct Buffers<'x> {
    pub(crate) a: &'x mut [f32],
    pub(crate) b: &'x mut [f32],
    pub(crate) scratch: SlotScratch<'x>,
}

/// Arena `f32`s of a vector model's forward pass: two activation buffers and the
/// rotated-input copy (`act` wide each), chain scratch, the dense kernel's scratch for
/// batches of `batch` rows, the bias. Shared with the baked reader, so both size their
/// arena by one formula.
pub(crate) fn vector_arena_len(
    act: usize,
    max_cols: usize,
    max_rows: usize,
    batch: usize,
) -> usize {
    // Saturating: `usize::MAX` is an arena nobody can allocate.
    act.saturating_mul(3)
        .saturating_add(max_cols.max(max_rows).saturating_mul(2))
        .saturating_add(weight_scratch_len(max_cols, batch))
        .saturating_add(max_rows)
}

/// Carves [`Buffers`] out of `arena` as [`vector_arena_len`] sizes it.
///
/// # Errors
/// [`Error::BufferTooSmall`] if `arena` is shorter.
pub(crate) fn split_vector_arena(
    arena: &mut [f32],
    act: usize,
    max_cols: usize,
    max_rows: usize,
    batch: usize,
) -> Result<Buffers<'_>> {
    let need = vector_arena_len(act, max_cols, max_rows, batch);
    if arena.len() < need {
        return Err(Error::BufferTooSmall {
            needed: need,
            got: arena.len(),
        });
    }
    let (a, rest) = arena.split_at_mut(act);
    let (b, rest) = rest.split_at_mut(act);
    let (rot, rest) = rest.split_at_mut(act);
    let (chain, rest) = rest.split_at_mut(2 * max_cols.max(max_rows));
    let (wbuf, rest) = rest.split_at_mut(weight_scratch_len(max_cols, batch));
    let bias = &mut rest[..max_rows];
    // Vector models rotate one vector at a time: no feature-major spare.
    let scratch = SlotScratch {
        rot,
        spare: &mut [],
        chain,
        wbuf,
        bias,
    };
    Ok(Buffers { a, b, scratch })
}

/// A dense slot `prefix{i}.weight` of shape `(out, width)` and its bias.
pub(crate) fn dense_slot<'a>(
    g: &Gguf<'a>,
    prefix: &str,
    i: usize,
    width: usize,
) -> Result<Slot<'a>> {
    let mut name = NameBuf::new();
    push_indexed(&mut name, prefix, i, ".weight")?;
    let wt = g.require_tensor(&name)?;
    let s = wt.shape();
    if s.len() != 2 || s[1] as usize != width || s[0] == 0 {
        return Err(Error::ShapeMismatch { tensor: wt.index() });
    }
    let rows = s[0] as usize;
    let bias = find_bias(g, prefix, i, rows)?;
    check_float(&wt)?;
    Ok(Slot::with_refs(TensorRef::new(&wt), bias, rows, width))
}

/// The bias `prefix{i}.bias` of a layer with `rows` outputs, if the file has one.
pub(crate) fn find_bias<'a>(
    g: &Gguf<'a>,
    prefix: &str,
    i: usize,
    rows: usize,
) -> Result<Option<TensorRef<'a>>> {
    let mut name = NameBuf::new();
    push_indexed(&mut name, prefix, i, ".bias")?;
    match g.find_tensor(&name) {
        None => Ok(None),
        Some(b) if b.shape() == [rows as u64] => check_float(&b).map(|()| Some(TensorRef::new(&b))),
        Some(b) => Err(Error::ShapeMismatch { tensor: b.index() }),
    }
}

/// A weight must be a float type (F32, F16, BF16 or Q8_0).
pub(crate) fn check_float(t: &crate::gguf::TensorInfo<'_>) -> Result<()> {
    if !t.ggml_type().is_float() {
        return Err(Error::UnknownTensorType {
            tensor: t.index(),
            ggml_type: t.ggml_type().ggml_code(),
        });
    }
    Ok(())
}
