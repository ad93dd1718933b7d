//! Base models read in place from GGUF bytes: the `mlp` of `docs/format.md` and the
//! small `cnn` of `docs/models.md`.
//!
//! A model is a table of **linear slots**: every weight an adapter may rotate (a dense
//! layer, or a convolution seen as the matrix `(out_c, in_c·kh·kw)`), with its bias.
//! Adapters address slots by the base tensor name, and the forward pass runs every
//! slot through one routine, [`Model::slot_forward`], that applies an adapter unmerged
//! (`y = s ⊙ Q_out (W (Q_in x)) + bias`) or reads merged weights.

use heapless::Vec;

use super::adapter::Prepared;
#[cfg(feature = "bert")]
use super::bert::{attention, gelu, Bert, BertConfig};
use super::weights::{linear, linear_then, relu, weight_scratch_len, Dense, TensorRef, WeightView};
use crate::gguf::{self, Gguf, StringArray, TensorInfo};
#[cfg(feature = "bert")]
use crate::math::MAX_BLOCK_SIZE;
use crate::math::{transpose, Chain, LayerTransform, Scalars};
use crate::{Error, Result};

/// Most linear slots a model may have (one bit each in an adapter's masks): enough for a
/// 12-block `bert` (72 slots).
#[cfg(feature = "bert")]
pub const MAX_SLOTS: usize = 80;
/// Most linear slots a model may have (one bit each in an adapter's masks): every layer
/// of a `cnn`, [`MAX_LAYERS`] convolutions and [`MAX_LAYERS`] dense layers.
#[cfg(all(feature = "cnn", not(feature = "bert")))]
pub const MAX_SLOTS: usize = 2 * MAX_LAYERS;
/// Most linear slots a model may have (one bit each in an adapter's masks): every layer
/// of an `mlp`.
#[cfg(not(any(feature = "cnn", feature = "bert")))]
pub const MAX_SLOTS: usize = MAX_LAYERS;
/// Most convolutions or dense layers per network.
pub const MAX_LAYERS: usize = 16;

/// The architectures the runtime can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `mlp`: dense layers with ReLU between them (`docs/format.md`).
    Mlp,
    /// `cnn`: 3x3-style convolutions with ReLU and 2x2 max pooling, then dense layers
    /// (`docs/models.md`).
    Cnn,
    /// `bert`: a BERT encoder with llama.cpp's names (all-MiniLM-L6-v2).
    Bert,
}

impl Architecture {
    /// The `general.architecture` string.
    pub const fn name(self) -> &'static str {
        match self {
            Architecture::Mlp => "mlp",
            Architecture::Cnn => "cnn",
            Architecture::Bert => "bert",
        }
    }
}

/// One input to [`Model::run`].
#[derive(Debug, Clone, Copy)]
pub enum Input<'x> {
    /// A feature vector, for `mlp` and `cnn` (length [`Model::input_len`]).
    Vector(&'x [f32]),
    /// Token ids, for text models (from [`crate::text`]'s tokenizer, with `[CLS]` and `[SEP]`).
    Tokens(&'x [u32]),
}

/// One adaptable weight: `(rows, cols)` = `(out, in)`, plus its bias.
#[derive(Debug, Clone, Copy)]
pub struct Slot<'a> {
    /// The weight tensor (for a convolution, of shape `(out_c, in_c, kh, kw)`).
    pub weight: TensorRef<'a>,
    /// The bias tensor, if any.
    pub bias: Option<TensorRef<'a>>,
    /// Output width.
    pub rows: usize,
    /// Input width (`in_c·kh·kw` for a convolution).
    pub cols: usize,
}

/// A convolution layer of the `cnn` architecture.
#[cfg(feature = "cnn")]
#[derive(Debug, Clone, Copy)]
struct Conv {
    in_c: usize,
    out_c: usize,
    kernel: usize,
    /// Input height and width.
    h: usize,
    w: usize,
}

/// A base model borrowed from its GGUF bytes. Zero-copy: it holds the parsed table and
/// views of the tensors, never a copy of the weights.
#[derive(Debug, Clone)]
pub struct Model<'a> {
    gguf: Gguf<'a>,
    arch: Architecture,
    slots: Vec<Slot<'a>, MAX_SLOTS>,
    #[cfg(feature = "cnn")]
    convs: Vec<Conv, MAX_LAYERS>,
    input_len: usize,
    model_id: heapless::String<64>,
    labels: Option<StringArray<'a>>,
    #[cfg(feature = "bert")]
    bert: Option<Bert<'a>>,
}

/// The scratch one slot needs: the rotated-input copy, the feature-major spare (empty when
/// the model never batches rotations), chain scratch, the weight panel, the bias.
pub(crate) struct SlotScratch<'x> {
    rot: &'x mut [f32],
    spare: &'x mut [f32],
    chain: &'x mut [f32],
    wbuf: &'x mut [f32],
    bias: &'x mut [f32],
}

/// Caller-sized buffers of one forward pass, carved from the arena.
pub(crate) struct Buffers<'x> {
    pub(crate) a: &'x mut [f32],
    pub(crate) b: &'x mut [f32],
    pub(crate) scratch: SlotScratch<'x>,
}

/// Arena `f32`s of a vector model's forward pass ([`Model::arena_len`]): two activation
/// buffers and the rotated-input copy (`act` wide each), chain scratch, the dense kernel's
/// scratch for batches of `batch` rows, the bias. Shared with the baked reader, so both
/// size their arena by one formula.
pub(crate) fn vector_arena_len(
    act: usize,
    max_cols: usize,
    max_rows: usize,
    batch: usize,
) -> usize {
    2 * act + act + 2 * max_cols.max(max_rows) + weight_scratch_len(max_cols, batch) + max_rows
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

impl<'a> Model<'a> {
    /// Reads a base model from GGUF bytes (flash, a static, an mmap, an `ArrayBuffer`).
    ///
    /// Checks everything once: the container ([`Gguf::parse`]), `general.type`, the
    /// architecture's keys, every tensor's presence, type and shape. The model id is the
    /// stored `riffle.model_id` (no hashing); a file without one is hashed once here.
    ///
    /// # Errors
    /// Any container error; [`Error::UnsupportedModel`] for an adapter, a dataset or an
    /// unknown architecture; [`Error::MissingKey`], [`Error::WrongValueType`],
    /// [`Error::MissingTensor`], [`Error::ShapeMismatch`] for a malformed model;
    /// [`Error::CapacityExceeded`] past [`MAX_SLOTS`] or [`MAX_LAYERS`]. Never panics.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self> {
        let g = Gguf::parse(bytes)?;
        if let Ok(t) = g.get_str(gguf::KEY_TYPE) {
            if t != gguf::TYPE_MODEL {
                return Err(Error::UnsupportedModel);
            }
        }
        // Architectures compiled out (cargo features) are unsupported ones.
        let arch = match g.get_str(gguf::KEY_ARCHITECTURE)? {
            "mlp" => Architecture::Mlp,
            #[cfg(feature = "cnn")]
            "cnn" => Architecture::Cnn,
            #[cfg(feature = "bert")]
            "bert" => Architecture::Bert,
            _ => return Err(Error::UnsupportedModel),
        };
        let model_id = g.binding_id()?;
        let labels = g.get_strings(gguf::KEY_LABELS).ok();
        let mut m = Model {
            gguf: g,
            arch,
            slots: Vec::new(),
            #[cfg(feature = "cnn")]
            convs: Vec::new(),
            input_len: 0,
            model_id,
            labels,
            #[cfg(feature = "bert")]
            bert: None,
        };
        match arch {
            Architecture::Mlp => m.load_mlp()?,
            #[cfg(feature = "cnn")]
            Architecture::Cnn => m.load_cnn()?,
            #[cfg(not(feature = "cnn"))]
            Architecture::Cnn => return Err(Error::UnsupportedModel),
            #[cfg(not(feature = "bert"))]
            Architecture::Bert => return Err(Error::UnsupportedModel),
            #[cfg(feature = "bert")]
            Architecture::Bert => {
                let slots = &mut m.slots;
                let bert = Bert::load(&m.gguf, |w, b, rows, cols| {
                    let weight = check_float(w)?;
                    let bias = b.map(|b| check_float(b)).transpose()?;
                    slots
                        .push(Slot {
                            weight,
                            bias,
                            rows,
                            cols,
                        })
                        .map_err(|_| Error::CapacityExceeded)
                })?;
                m.input_len = bert.config.context;
                m.bert = Some(bert);
            }
        }
        if let Some(l) = &m.labels {
            if l.len() != m.output_len() {
                return Err(Error::ShapeMismatch {
                    tensor: m.last_slot()?.weight.index(),
                });
            }
        }
        Ok(m)
    }

    fn load_mlp(&mut self) -> Result<()> {
        let g = &self.gguf;
        let layers = g.get_u32(gguf::KEY_MLP_LAYER_COUNT)? as usize;
        if g.get_str(gguf::KEY_MLP_ACTIVATION)? != gguf::ACTIVATION_RELU {
            return Err(Error::UnsupportedModel);
        }
        self.input_len = g.get_u32(gguf::KEY_MLP_INPUT_LENGTH)? as usize;
        if layers == 0 || layers > MAX_LAYERS {
            return Err(Error::CapacityExceeded);
        }
        let mut width = self.input_len;
        for i in 0..layers {
            let slot = dense_slot(g, "layers.", i, width)?;
            width = slot.rows;
            self.slots.push(slot).map_err(|_| Error::CapacityExceeded)?;
        }
        Ok(())
    }

    #[cfg(feature = "cnn")]
    fn load_cnn(&mut self) -> Result<()> {
        let g = &self.gguf;
        let (mut c, mut h, mut w) = (
            g.get_u32("cnn.input_channels")? as usize,
            g.get_u32("cnn.input_height")? as usize,
            g.get_u32("cnn.input_width")? as usize,
        );
        self.input_len = c
            .checked_mul(h)
            .and_then(|v| v.checked_mul(w))
            .ok_or(Error::CapacityExceeded)?;
        let convs = g.get_u32("cnn.conv_count")? as usize;
        let dense = g.get_u32("cnn.dense_count")? as usize;
        if convs > MAX_LAYERS
            || dense == 0
            || dense > MAX_LAYERS
            || self.input_len == 0
            || self.input_len > 1 << 20
        {
            return Err(Error::CapacityExceeded);
        }
        for i in 0..convs {
            let mut name = NameBuf::new();
            push_indexed(&mut name, "conv.", i, ".weight")?;
            let wt = g.require_tensor(&name)?;
            let s = wt.shape();
            if s.len() != 4 || s[1] as usize != c || s[2] != s[3] || s[2] % 2 == 0 || s[0] == 0 {
                return Err(Error::ShapeMismatch { tensor: wt.index() });
            }
            let (out_c, k) = (s[0] as usize, s[2] as usize);
            let bias = find_bias(g, "conv.", i, out_c)?;
            self.convs
                .push(Conv {
                    in_c: c,
                    out_c,
                    kernel: k,
                    h,
                    w,
                })
                .map_err(|_| Error::CapacityExceeded)?;
            self.slots
                .push(Slot {
                    weight: check_float(wt)?,
                    bias,
                    rows: out_c,
                    cols: c * k * k,
                })
                .map_err(|_| Error::CapacityExceeded)?;
            c = out_c;
            h /= 2;
            w /= 2;
            if h == 0 || w == 0 {
                return Err(Error::ShapeMismatch { tensor: wt.index() });
            }
        }
        let mut width = c * h * w;
        for i in 0..dense {
            let slot = dense_slot(g, "dense.", i, width)?;
            width = slot.rows;
            self.slots.push(slot).map_err(|_| Error::CapacityExceeded)?;
        }
        Ok(())
    }

    /// The parsed container.
    pub fn gguf(&self) -> &Gguf<'a> {
        &self.gguf
    }
    /// The architecture.
    pub fn architecture(&self) -> Architecture {
        self.arch
    }
    /// The linear slots, in forward order.
    pub fn slots(&self) -> &[Slot<'a>] {
        &self.slots
    }
    /// Index of the slot whose weight tensor is `name`.
    pub fn slot_index(&self, name: &str) -> Option<usize> {
        let t = self.gguf.find_tensor(name)?.index();
        self.slots.iter().position(|s| s.weight.index() == t)
    }
    /// Index of the slot whose bias tensor is `name`.
    pub fn bias_slot_index(&self, name: &str) -> Option<usize> {
        let t = self.gguf.find_tensor(name)?.index();
        self.slots
            .iter()
            .position(|s| s.bias.is_some_and(|b| b.index() == t))
    }
    /// The base tensor name of slot `i` (what adapters use to address it).
    pub fn slot_name(&self, i: usize) -> &'a str {
        self.slots
            .get(i)
            .and_then(|s| self.gguf.tensor(s.weight.index() as usize))
            .map_or("", |t| t.name())
    }
    /// Length of the input vector.
    pub fn input_len(&self) -> usize {
        self.input_len
    }
    /// Length of the base's output vector: logits, or for `bert` the sentence embedding.
    pub fn output_len(&self) -> usize {
        match self.text_hidden() {
            Some(h) => h,
            None => self.slots.last().map_or(0, |s| s.rows),
        }
    }

    /// The `bert` hyper-parameters (text models only).
    #[cfg(feature = "bert")]
    pub fn bert_config(&self) -> Option<BertConfig> {
        self.bert.as_ref().map(|b| b.config)
    }

    /// Hidden width of a text model (what a classification head reads), `None` otherwise.
    pub(crate) fn text_hidden(&self) -> Option<usize> {
        #[cfg(feature = "bert")]
        if let Some(b) = &self.bert {
            return Some(b.config.hidden);
        }
        None
    }

    /// Longest input in tokens (`[CLS]` and `[SEP]` included) for text models, 0 otherwise.
    pub fn max_tokens(&self) -> usize {
        #[cfg(feature = "bert")]
        if let Some(b) = &self.bert {
            return b.config.context;
        }
        0
    }

    /// `u32`s of tokenizer index that [`Model::tokenizer`] needs (text models).
    ///
    /// # Errors
    /// [`Error::UnsupportedModel`] for a model without a WordPiece vocabulary.
    #[cfg(feature = "text")]
    pub fn tokenizer_index_len(&self) -> Result<usize> {
        crate::text::gguf_index_len(&self.gguf)
    }

    /// The model's WordPiece tokenizer, its index built in `index` (see
    /// [`Model::tokenizer_index_len`]). `tokenizer.encode(text, model.max_tokens(), &mut ids)`
    /// gives the ids for [`Input::Tokens`].
    ///
    /// # Errors
    /// As [`crate::text::Tokenizer::from_gguf`].
    #[cfg(feature = "text")]
    pub fn tokenizer<'i>(
        &self,
        index: &'i mut [u32],
    ) -> Result<crate::text::Tokenizer<'i, StringArray<'a>>> {
        crate::text::Tokenizer::from_gguf(&self.gguf, index)
    }
    /// The model id adapters bind to (`riffle.model_id`, or the hash of the data span
    /// when the file has none).
    pub fn model_id(&self) -> &str {
        &self.model_id
    }
    /// Recomputes the SHA-256 model id over the data span and compares it with the id in
    /// use: the slow, explicit verification (`riffle inspect --verify`).
    #[cfg(feature = "sha256")]
    pub fn verify_model_id(&self) -> bool {
        self.gguf.compute_model_id() == self.model_id
    }
    /// Class labels of the base head (`riffle.labels`), if any.
    pub fn labels(&self) -> Option<StringArray<'a>> {
        self.labels
    }

    fn last_slot(&self) -> Result<&Slot<'a>> {
        self.slots.last().ok_or(Error::MissingTensor)
    }

    /// Widest activation or im2col row count times width the forward needs.
    fn widths(&self, head_rows: usize) -> (usize, usize, usize) {
        let max_cols = self.slots.iter().map(|s| s.cols).max().unwrap_or(0);
        let max_rows = self
            .slots
            .iter()
            .map(|s| s.rows)
            .max()
            .unwrap_or(0)
            .max(head_rows);
        #[allow(unused_mut)]
        let mut act = self.input_len.max(max_rows);
        #[cfg(feature = "cnn")]
        for cv in &self.convs {
            act = act
                .max(cv.h * cv.w * cv.in_c * cv.kernel * cv.kernel)
                .max(cv.h * cv.w * cv.out_c);
        }
        (act, max_cols, max_rows)
    }

    /// Exact arena length (in `f32`s; bytes are 4×) that [`Model::run`] needs for one
    /// input of at most `max_tokens` tokens (ignored by vector-input models) with an
    /// adapter whose head has at most `head_rows` outputs (0 = the base head). Known
    /// before anything runs, like TFLM's `arena_used_bytes`.
    pub fn arena_len(&self, max_tokens: usize, head_rows: usize) -> usize {
        #[cfg(feature = "bert")]
        if let Some(b) = &self.bert {
            return bert_arena(&b.config, max_tokens.clamp(1, b.config.context), head_rows);
        }
        #[cfg(not(feature = "bert"))]
        let _ = max_tokens;
        let (act, max_cols, max_rows) = self.widths(head_rows);
        vector_arena_len(act, max_cols, max_rows, self.max_batch())
    }

    /// Largest batch of rows one slot sees in a vector model: the pixels of the first
    /// convolution, or 1. [`Model::arena_len`] holds the dense kernel's scratch for it,
    /// [`weight_scratch_len`]`(widest input, max_batch())`, whose value depends on the
    /// target: a build script that sizes a firmware's arena on the host re-evaluates
    /// that term for the target (see `firmware/cortex-m4/build.rs`).
    pub fn max_batch(&self) -> usize {
        #[cfg(feature = "cnn")]
        return self.convs.iter().map(|c| c.h * c.w).max().unwrap_or(1);
        #[cfg(not(feature = "cnn"))]
        1
    }

    fn split_arena<'x>(&self, arena: &'x mut [f32], head_rows: usize) -> Result<Buffers<'x>> {
        debug_assert!(self.text_hidden().is_none());
        let (act, max_cols, max_rows) = self.widths(head_rows);
        split_vector_arena(arena, act, max_cols, max_rows, self.max_batch())
    }

    /// Runs one input through the base, or through the base with `adapter` applied
    /// unmerged, or (with `merged`) on merged weights. Writes the output (logits, or the
    /// pooled embedding of a text model without a head) into `output` and returns how
    /// many values were written.
    ///
    /// # Errors
    /// [`Error::BadInput`] for an input of the wrong kind or length;
    /// [`Error::BufferTooSmall`] if `arena` is shorter than [`Model::arena_len`] or
    /// `output` shorter than the head; [`Error::BaseMismatch`] for an adapter prepared
    /// against another model. Never panics.
    pub fn run(
        &self,
        adapter: Option<&Prepared<'a, '_>>,
        merged: Option<&[f32]>,
        input: Input<'_>,
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize> {
        if let Some(m) = merged {
            if m.len() != self.merged_len() {
                return Err(Error::LengthMismatch {
                    expected: self.merged_len(),
                    found: m.len(),
                });
            }
        }
        if let Some(p) = adapter {
            if p.model_id() != self.model_id() {
                return Err(Error::BaseMismatch);
            }
        }
        #[cfg(feature = "bert")]
        if let Some(bert) = &self.bert {
            return match input {
                Input::Tokens(ids) if !ids.is_empty() && ids.len() <= bert.config.context => {
                    self.forward_bert(bert, adapter, merged, ids, output, arena)
                }
                _ => Err(Error::BadInput),
            };
        }
        let input = match input {
            Input::Vector(v) if v.len() == self.input_len => v,
            _ => return Err(Error::BadInput),
        };
        let head_rows = adapter.map_or(0, |p| p.head_rows());
        let buf = self.split_arena(arena, head_rows)?;
        let out_len = self.forward(adapter, merged, input, buf, output)?;
        Ok(out_len)
    }

    /// The `bert` forward pass: embeddings, encoder blocks, mean pooling, then the
    /// adapter's classification head or the L2-normalised embedding.
    #[cfg(feature = "bert")]
    fn forward_bert(
        &self,
        bert: &Bert<'a>,
        adapter: Option<&Prepared<'a, '_>>,
        merged: Option<&[f32]>,
        ids: &[u32],
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize> {
        let cfg = bert.config;
        let (t, h, f) = (ids.len(), cfg.hidden, cfg.ffn);
        let cls = adapter.and_then(|p| p.cls_head());
        let head_rows = cls.map_or(0, |c| c.rows);
        let need = bert_arena(&cfg, t, head_rows);
        if arena.len() < need {
            return Err(Error::BufferTooSmall {
                needed: need,
                got: arena.len(),
            });
        }
        let wide = h.max(f);
        let (x, rest) = arena.split_at_mut(t * h);
        let (q, rest) = rest.split_at_mut(t * h);
        let (k, rest) = rest.split_at_mut(t * h);
        let (v, rest) = rest.split_at_mut(t * h);
        let (ctx, rest) = rest.split_at_mut(t * h);
        let (ffn, rest) = rest.split_at_mut(t * f);
        let (rot, rest) = rest.split_at_mut(t * wide);
        let (spare, rest) = rest.split_at_mut(t * wide);
        let (chain, rest) = rest.split_at_mut((2 * wide).max(MAX_BLOCK_SIZE * t));
        let (wbuf, rest) = rest.split_at_mut(weight_scratch_len(wide, t));
        let (bias, rest) = rest.split_at_mut(wide.max(head_rows));
        let (scores, rest) = rest.split_at_mut(t * t);
        let norm_buf = &mut rest[..2 * h];
        bert.embed(ids, x, norm_buf)?;
        let mut sc = SlotScratch {
            rot,
            spare,
            chain,
            wbuf,
            bias,
        };
        for blk in 0..cfg.blocks {
            let s0 = blk * 6;
            self.slot_forward(s0, adapter, merged, x, t, q, &mut sc)?;
            self.slot_forward(s0 + 1, adapter, merged, x, t, k, &mut sc)?;
            self.slot_forward(s0 + 2, adapter, merged, x, t, v, &mut sc)?;
            attention([q, k, v], t, h, cfg.heads, ctx, sc.rot, scores)?;
            self.slot_forward(s0 + 3, adapter, merged, ctx, t, q, &mut sc)?;
            bert.residual_norm(blk, 0, x, q, norm_buf)?;
            self.slot_forward(s0 + 4, adapter, merged, x, t, ffn, &mut sc)?;
            gelu(ffn);
            self.slot_forward(s0 + 5, adapter, merged, ffn, t, q, &mut sc)?;
            bert.residual_norm(blk, 1, x, q, norm_buf)?;
        }
        // Mean pooling over the tokens.
        let pooled = &mut ctx[..h];
        pooled.fill(0.0);
        for row in x.chunks_exact(h).take(t) {
            for (p, v) in pooled.iter_mut().zip(row) {
                *p += v;
            }
        }
        let inv = 1.0 / t as f32;
        pooled.iter_mut().for_each(|p| *p *= inv);
        match cls {
            Some(c) => {
                let got = output.len();
                let out = output.get_mut(..c.rows).ok_or(Error::BufferTooSmall {
                    needed: c.rows,
                    got,
                })?;
                let b = match &c.bias {
                    Some(bt) => {
                        bt.decode_f32(0, &mut sc.bias[..c.rows])?;
                        Some(&sc.bias[..c.rows])
                    }
                    None => None,
                };
                let layer = Dense {
                    weight: WeightView::Tensor(c.weight),
                    rows: c.rows,
                    cols: h,
                    scale: None,
                    bias: b,
                };
                linear(&layer, pooled, 1, out, sc.wbuf)?;
                Ok(c.rows)
            }
            None => {
                let got = output.len();
                let out = output
                    .get_mut(..h)
                    .ok_or(Error::BufferTooSmall { needed: h, got })?;
                let norm = libm::sqrtf(pooled.iter().map(|p| p * p).sum::<f32>()).max(1e-12);
                for (o, p) in out.iter_mut().zip(pooled.iter()) {
                    *o = p / norm;
                }
                Ok(h)
            }
        }
    }

    fn forward(
        &self,
        adapter: Option<&Prepared<'a, '_>>,
        merged: Option<&[f32]>,
        input: &[f32],
        buf: Buffers<'_>,
        output: &mut [f32],
    ) -> Result<usize> {
        let Buffers {
            a,
            b,
            scratch: mut sc,
        } = buf;
        let (mut cur, mut nxt) = (a, b);
        cur[..input.len()].copy_from_slice(input);
        #[allow(unused_mut)]
        let mut slot = 0;
        // Convolutions: activations are (h, w, c), pixel-major.
        #[cfg(feature = "cnn")]
        if self.arch == Architecture::Cnn {
            // Input arrives as (c, h, w) like PyTorch; reorder to (h, w, c).
            if let Some(first) = self.convs.first() {
                chw_to_hwc(&cur[..input.len()], first.in_c, first.h, first.w, nxt);
                core::mem::swap(&mut cur, &mut nxt);
            }
            for cv in &self.convs {
                let (k, pad) = (cv.kernel, cv.kernel / 2);
                let patch = cv.in_c * k * k;
                let pixels = cv.h * cv.w;
                // im2col into nxt: row p holds the patch of pixel p in (ci, dy, dx) order.
                im2col(
                    &cur[..pixels * cv.in_c],
                    cv,
                    pad,
                    &mut nxt[..pixels * patch],
                );
                self.slot_forward(
                    slot,
                    adapter,
                    merged,
                    &mut nxt[..pixels * patch],
                    pixels,
                    cur,
                    &mut sc,
                )?;
                relu(&mut cur[..pixels * cv.out_c]);
                maxpool2(&cur[..pixels * cv.out_c], cv.h, cv.w, cv.out_c, nxt);
                core::mem::swap(&mut cur, &mut nxt);
                slot += 1;
            }
            if let Some(last) = self.convs.last() {
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
        let n_slots = self.slots.len();
        let mut width = self.slots.get(slot).map_or(0, |s| s.cols);
        while slot < n_slots {
            let rows =
                self.slot_forward(slot, adapter, merged, &mut cur[..width], 1, nxt, &mut sc)?;
            if slot + 1 < n_slots {
                relu(&mut nxt[..rows]);
            }
            core::mem::swap(&mut cur, &mut nxt);
            width = rows;
            slot += 1;
        }
        write_output(output, &cur[..width])
    }

    /// Total `f32`s of merged weights: every slot's `rows·cols`.
    pub fn merged_len(&self) -> usize {
        self.slots.iter().map(|s| s.rows * s.cols).sum()
    }

    /// Offset of slot `i`'s weights inside the merged buffer.
    pub(crate) fn merged_offset(&self, i: usize) -> usize {
        self.slots.iter().take(i).map(|s| s.rows * s.cols).sum()
    }

    /// Writes every slot's base weights, decoded to `f32`, into `out` (the starting point
    /// of merged mode, and the re-merge that resets swap drift).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `out.len() != merged_len()`.
    pub fn decode_weights_into(&self, out: &mut [f32]) -> Result<()> {
        if out.len() != self.merged_len() {
            return Err(Error::LengthMismatch {
                expected: self.merged_len(),
                found: out.len(),
            });
        }
        let mut off = 0;
        for s in &self.slots {
            let n = s.rows * s.cols;
            s.weight.decode_f32(0, &mut out[off..off + n])?;
            off += n;
        }
        Ok(())
    }

    /// One slot on a batch of `n` input rows `x` (`n × cols`, modified only through a
    /// copy), writing `n × rows` outputs into `y`; returns `rows`.
    #[allow(clippy::too_many_arguments)]
    fn slot_forward(
        &self,
        i: usize,
        adapter: Option<&Prepared<'a, '_>>,
        merged: Option<&[f32]>,
        x: &mut [f32],
        n: usize,
        y: &mut [f32],
        sc: &mut SlotScratch<'_>,
    ) -> Result<usize> {
        let s = self.slots.get(i).ok_or(Error::MissingTensor)?;
        let head = adapter.and_then(|p| p.head(i));
        let (weight, bias_t, rows) = match head {
            Some(h) => (WeightView::Tensor(h.weight), h.bias, h.rows),
            None => match merged {
                Some(m) => {
                    let off = self.merged_offset(i);
                    (
                        WeightView::F32(&m[off..off + s.rows * s.cols]),
                        s.bias,
                        s.rows,
                    )
                }
                None => (WeightView::Tensor(s.weight), s.bias, s.rows),
            },
        };
        // Unmerged rotation only when the weights are the base's.
        let t = if merged.is_none() && head.is_none() {
            adapter.map(|p| p.transform(i))
        } else {
            None
        };
        let t = t.unwrap_or(LayerTransform::IDENTITY);
        // Only the x86-64 kernels prefetch (`linear_then`); other targets skip the look-up.
        let after = match (merged, adapter) {
            (None, Some(p))
                if cfg!(target_arch = "x86_64")
                    && i + 1 < self.slots.len()
                    && p.head(i + 1).is_none() =>
            {
                p.transform(i + 1).q_in.map(|q| q.blocks()).unwrap_or(&[])
            }
            _ => &[],
        };
        slot_apply(weight, bias_t, rows, s.cols, &t, x, n, y, sc, after)
    }
}

/// Copies a vector model's final activations into the caller's `output`; their count.
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
/// returns `rows`. [`Model::slot_forward`] picks the weight, bias and transform; the
/// baked reader calls it too, so both run the same code.
#[allow(clippy::too_many_arguments)]
pub(crate) fn slot_apply(
    weight: WeightView<'_>,
    bias_t: Option<TensorRef<'_>>,
    rows: usize,
    cols: usize,
    t: &LayerTransform<'_>,
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
            if q.has_simd_kernel() {
                q.apply_rows_from(&x[..n * cols], xr, false, chain)?;
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
        linear_then(
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
            after,
        )?;
        return Ok(rows);
    }
    linear(
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

/// Rotates every row of `data` (`n × w`) by `q`: in place on the SIMD kernels when the
/// CPU has them for this chain, otherwise through a feature-major copy (when `spare` and
/// `chain` are big enough) so that portable code vectorises across the `n` rows
/// ([`Chain::apply_columns`]), otherwise one vector at a time.
fn rotate_rows(
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

/// Arena `f32`s of a `bert` forward over `t` tokens: hidden states, q, k, v, context,
/// feed-forward, the rotated-input copy (also `k^T` during attention), chain scratch,
/// weight tile, bias, one head's attention scores and the norm buffers.
#[cfg(feature = "bert")]
fn bert_arena(cfg: &BertConfig, t: usize, head_rows: usize) -> usize {
    let (h, f) = (cfg.hidden, cfg.ffn);
    let wide = h.max(f);
    let states = 5 * t * h + t * f;
    let rotation = 2 * t * wide + (2 * wide).max(MAX_BLOCK_SIZE * t);
    states + rotation + weight_scratch_len(wide, t) + wide.max(head_rows) + t * t + 2 * h
}

/// A dense slot `prefix{i}.weight` of shape `(out, width)` and its bias.
fn dense_slot<'a>(g: &Gguf<'a>, prefix: &str, i: usize, width: usize) -> Result<Slot<'a>> {
    let mut name = NameBuf::new();
    push_indexed(&mut name, prefix, i, ".weight")?;
    let wt = g.require_tensor(&name)?;
    let s = wt.shape();
    if s.len() != 2 || s[1] as usize != width || s[0] == 0 {
        return Err(Error::ShapeMismatch { tensor: wt.index() });
    }
    let rows = s[0] as usize;
    let bias = find_bias(g, prefix, i, rows)?;
    Ok(Slot {
        weight: check_float(wt)?,
        bias,
        rows,
        cols: width,
    })
}

fn find_bias<'a>(
    g: &Gguf<'a>,
    prefix: &str,
    i: usize,
    rows: usize,
) -> Result<Option<TensorRef<'a>>> {
    let mut name = NameBuf::new();
    push_indexed(&mut name, prefix, i, ".bias")?;
    match g.find_tensor(&name) {
        None => Ok(None),
        Some(b) if b.shape() == [rows as u64] => check_float(b).map(Some),
        Some(b) => Err(Error::ShapeMismatch { tensor: b.index() }),
    }
}

/// A weight must be a float type (F32, F16, BF16 or Q8_0).
fn check_float(t: TensorInfo<'_>) -> Result<TensorRef<'_>> {
    if !t.ggml_type().is_float() {
        return Err(Error::UnknownTensorType {
            tensor: t.index(),
            ggml_type: t.ggml_type().ggml_code(),
        });
    }
    Ok(TensorRef::new(&t))
}

/// The buffer tensor names are built in (base slots, adapter factors and scales): one
/// type, so its code exists once.
pub(crate) type NameBuf = heapless::String<128>;

/// Appends `prefix{i}suffix` to `out` (without `core::fmt`).
pub(crate) fn push_indexed(out: &mut NameBuf, prefix: &str, i: usize, suffix: &str) -> Result<()> {
    let i = u32::try_from(i).map_err(|_| Error::CapacityExceeded)?;
    out.push_str(prefix)
        .ok()
        .and_then(|()| gguf::push_decimal(out, i))
        .and_then(|()| out.push_str(suffix).ok())
        .ok_or(Error::CapacityExceeded)
}

#[cfg(feature = "cnn")]
fn chw_to_hwc(src: &[f32], c: usize, h: usize, w: usize, dst: &mut [f32]) {
    for ci in 0..c {
        for p in 0..h * w {
            dst[p * c + ci] = src[ci * h * w + p];
        }
    }
}

#[cfg(feature = "cnn")]
fn hwc_to_chw(src: &[f32], c: usize, h: usize, w: usize, dst: &mut [f32]) {
    for p in 0..h * w {
        for ci in 0..c {
            dst[ci * h * w + p] = src[p * c + ci];
        }
    }
}

#[cfg(feature = "cnn")]
/// Patches of a zero-padded, stride-1 convolution: row `p` = pixel `p`, in the
/// `(ci, dy, dx)` order of PyTorch's flattened `(out_c, in_c, kh, kw)` weight.
fn im2col(x: &[f32], cv: &Conv, pad: usize, out: &mut [f32]) {
    let k = cv.kernel;
    let patch = cv.in_c * k * k;
    for py in 0..cv.h {
        for px in 0..cv.w {
            let row = &mut out[(py * cv.w + px) * patch..][..patch];
            for ci in 0..cv.in_c {
                for dy in 0..k {
                    for dx in 0..k {
                        let (sy, sx) = ((py + dy).wrapping_sub(pad), (px + dx).wrapping_sub(pad));
                        row[(ci * k + dy) * k + dx] = if sy < cv.h && sx < cv.w {
                            x[(sy * cv.w + sx) * cv.in_c + ci]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

/// 2x2 max pooling, stride 2 (floor), on `(h, w, c)` activations.
#[cfg(feature = "cnn")]
fn maxpool2(x: &[f32], h: usize, w: usize, c: usize, out: &mut [f32]) {
    let (oh, ow) = (h / 2, w / 2);
    for y in 0..oh {
        for xx in 0..ow {
            for ci in 0..c {
                let at = |dy: usize, dx: usize| x[((2 * y + dy) * w + 2 * xx + dx) * c + ci];
                out[(y * ow + xx) * c + ci] = at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
            }
        }
    }
}
