//! The `bert` architecture with llama.cpp's key and tensor names (format.md), enough to
//! run all-MiniLM-L6-v2: embeddings, post-norm encoder blocks with multi-head attention
//! and an exact (erf) GELU feed-forward, mean pooling, then either the L2-normalised
//! sentence embedding or, when an adapter brings one, its classification head
//! (`cls.weight`, `cls.bias`) on the mean-pooled hidden states.
//!
//! The six linear layers of every block are slots (`attn_q`, `attn_k`, `attn_v`,
//! `attn_output`, `ffn_up`, `ffn_down`, in that order), so adapters rotate them exactly
//! like the dense layers of the small models.

use super::mlp::check_float;
use super::{Forward, InputKind};
use crate::gguf::{self, Gguf, TensorInfo};
use crate::math::MAX_BLOCK_SIZE;
use crate::nn::activation::gelu;
use crate::nn::attention::attention;
use crate::nn::norm::layer_norm;
use crate::runtime::linear::{for_rows, Exec, Linears, SlotScratch, ONE_THREAD};
use crate::runtime::model::Input;
use crate::runtime::slots::{reserve, Slot, SlotSink, SlotTable, MAX_SLOTS};
use crate::runtime::weights::{linear, weight_scratch_len, Dense, TensorRef, WeightView};
use crate::{Error, Result};

/// Encoder blocks a `bert` model built by [`crate::runtime::Model::from_bytes`] may have:
/// as many as its slot table holds (BERT-base and MiniLM-L12 have 12, BERT-large 24).
/// Caller storage ([`crate::runtime::Model::from_bytes_in`]) holds any number: the
/// blocks' norms ride in the slot records.
pub const MAX_BERT_BLOCKS: usize = MAX_SLOTS / BLOCK_LINEARS.len();

/// The linear layers of one block, in slot order.
pub(crate) const BLOCK_LINEARS: [&str; 6] = [
    gguf::LAYER_ATTN_Q,
    gguf::LAYER_ATTN_K,
    gguf::LAYER_ATTN_V,
    gguf::LAYER_ATTN_OUTPUT,
    gguf::LAYER_FFN_UP,
    gguf::LAYER_FFN_DOWN,
];

/// Hyper-parameters of a `bert` file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BertConfig {
    /// Encoder blocks.
    pub blocks: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Feed-forward width.
    pub ffn: usize,
    /// Attention heads.
    pub heads: usize,
    /// Layer-norm epsilon.
    pub eps: f32,
    /// Longest input in tokens (`bert.context_length`, at most the position table).
    pub context: usize,
    /// Vocabulary size.
    pub vocab: usize,
}

/// A layer norm's weight and bias.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Norm<'a> {
    weight: TensorRef<'a>,
    bias: TensorRef<'a>,
}

/// The model-wide non-slot tensors of a `bert` model. The blocks' own (their
/// attention-output and layer-output norms) ride in the block's slot records
/// ([`Slot`]'s `norm`: weight and bias of the first norm on slots 0 and 1, of the second
/// on slots 2 and 3), so the slot storage, not a constant, bounds the blocks.
#[derive(Debug, Clone)]
pub(crate) struct Bert<'a> {
    pub(crate) config: BertConfig,
    token_embd: TensorRef<'a>,
    position_embd: TensorRef<'a>,
    token_types: Option<TensorRef<'a>>,
    embd_norm: Norm<'a>,
}

fn tensor_2d<'a>(
    g: &Gguf<'a>,
    name: &str,
    rows: Option<usize>,
    cols: usize,
) -> Result<TensorInfo<'a>> {
    let t = g.require_tensor(name)?;
    let s = t.shape();
    if s.len() != 2
        || s[1] as usize != cols
        || rows.is_some_and(|r| s[0] as usize != r)
        || !t.ggml_type().is_float()
    {
        return Err(Error::ShapeMismatch { tensor: t.index() });
    }
    Ok(t)
}

fn vector<'a>(g: &Gguf<'a>, name: &str, len: usize) -> Result<TensorRef<'a>> {
    let t = g.require_tensor(name)?;
    if t.shape() != [len as u64] || !t.ggml_type().is_float() {
        return Err(Error::ShapeMismatch { tensor: t.index() });
    }
    Ok(TensorRef::new(&t))
}

fn norm<'a>(g: &Gguf<'a>, weight: &str, bias: &str, len: usize) -> Result<Norm<'a>> {
    Ok(Norm {
        weight: vector(g, weight, len)?,
        bias: vector(g, bias, len)?,
    })
}

fn block_name(block: usize, layer: &str, suffix: &str) -> Result<gguf::TensorName> {
    gguf::block_tensor_name(block as u32, layer, suffix).ok_or(Error::CapacityExceeded)
}

impl<'a> Bert<'a> {
    /// Reads the configuration and the non-slot tensors, and pushes the block linears
    /// into `slots`.
    pub(crate) fn load(g: &Gguf<'a>, slots: &mut dyn SlotSink<'a>) -> Result<Self> {
        let blocks = g.get_u32(gguf::KEY_BERT_BLOCK_COUNT)? as usize;
        let hidden = g.get_u32(gguf::KEY_BERT_EMBEDDING_LENGTH)? as usize;
        let ffn = g.get_u32(gguf::KEY_BERT_FEED_FORWARD_LENGTH)? as usize;
        let heads = g.get_u32(gguf::KEY_BERT_HEAD_COUNT)? as usize;
        let eps = g.get_f32(gguf::KEY_BERT_LAYER_NORM_EPSILON)?;
        if blocks == 0 {
            return Err(Error::UnsupportedValue {
                key: crate::KeyName(gguf::KEY_BERT_BLOCK_COUNT),
            });
        }
        reserve(slots, blocks.saturating_mul(BLOCK_LINEARS.len()))?;
        if heads == 0
            || hidden == 0
            || !hidden.is_multiple_of(heads)
            || ffn == 0
            || hidden > 1 << 16
            || ffn > 1 << 18
        {
            return Err(Error::UnsupportedModel);
        }
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(Error::UnsupportedModel);
        }
        if let Ok(p) = g.get_u32(gguf::KEY_BERT_POOLING_TYPE) {
            if p != gguf::POOLING_MEAN {
                return Err(Error::UnsupportedModel);
            }
        }
        if g.get_bool(gguf::KEY_BERT_CAUSAL).unwrap_or(false) {
            return Err(Error::UnsupportedModel);
        }
        let token_embd = tensor_2d(g, gguf::TENSOR_TOKEN_EMBD, None, hidden)?;
        let vocab = token_embd.shape()[0] as usize;
        let position_embd = tensor_2d(g, gguf::TENSOR_POSITION_EMBD, None, hidden)?;
        let positions = position_embd.shape()[0] as usize;
        let context = g
            .get_u32(gguf::KEY_BERT_CONTEXT_LENGTH)
            .map_or(positions, |c| (c as usize).min(positions));
        let token_types = match g.find_tensor(gguf::TENSOR_TOKEN_TYPES) {
            Some(_) => Some(TensorRef::new(&tensor_2d(
                g,
                gguf::TENSOR_TOKEN_TYPES,
                None,
                hidden,
            )?)),
            None => None,
        };
        let embd_norm = norm(
            g,
            gguf::TENSOR_TOKEN_EMBD_NORM_WEIGHT,
            gguf::TENSOR_TOKEN_EMBD_NORM_BIAS,
            hidden,
        )?;
        for blk in 0..blocks {
            let post_norm = |layer: &str| {
                norm(
                    g,
                    &block_name(blk, layer, gguf::SUFFIX_WEIGHT)?,
                    &block_name(blk, layer, gguf::SUFFIX_BIAS)?,
                    hidden,
                )
            };
            let attn = post_norm(gguf::LAYER_ATTN_OUTPUT_NORM)?;
            let out = post_norm(gguf::LAYER_LAYER_OUTPUT_NORM)?;
            // The slot records carry them (see `Bert`).
            let norms = [attn.weight, attn.bias, out.weight, out.bias];
            for (j, layer) in BLOCK_LINEARS.iter().enumerate() {
                let (rows, cols) = match j {
                    4 => (ffn, hidden),
                    5 => (hidden, ffn),
                    _ => (hidden, hidden),
                };
                let w = tensor_2d(
                    g,
                    &block_name(blk, layer, gguf::SUFFIX_WEIGHT)?,
                    Some(rows),
                    cols,
                )?;
                let bias = match g.find_tensor(&block_name(blk, layer, gguf::SUFFIX_BIAS)?) {
                    Some(b) if b.shape() == [rows as u64] && b.ggml_type().is_float() => Some(b),
                    Some(b) => return Err(Error::ShapeMismatch { tensor: b.index() }),
                    None => None,
                };
                check_float(&w)?;
                if let Some(b) = &bias {
                    check_float(b)?;
                }
                let mut slot = Slot::new(&w, bias.as_ref(), rows, cols);
                slot.norm = norms.get(j).copied();
                slots.push(slot)?;
            }
        }
        Ok(Bert {
            config: BertConfig {
                blocks,
                hidden,
                ffn,
                heads,
                eps,
                context,
                vocab,
            },
            token_embd: TensorRef::new(&token_embd),
            position_embd: TensorRef::new(&position_embd),
            token_types,
            embd_norm,
        })
    }

    /// Writes the embeddings of `ids` into `x` (`ids.len() × hidden`), then the embedding
    /// layer norm; `buf` needs `2·hidden` values.
    pub(crate) fn embed(&self, ids: &[u32], x: &mut [f32], buf: &mut [f32]) -> Result<()> {
        let h = self.config.hidden;
        let (row, tmp) = buf.split_at_mut(h);
        let tmp = &mut tmp[..h];
        for (t, (&id, xr)) in ids.iter().zip(x.chunks_exact_mut(h)).enumerate() {
            let id = id as usize;
            if id >= self.config.vocab {
                return Err(Error::BadInput);
            }
            self.token_embd.decode_f32(id * h, xr)?;
            self.position_embd.decode_f32(t * h, row)?;
            if let Some(tt) = &self.token_types {
                tt.decode_f32(0, tmp)?;
                for ((v, p), q) in xr.iter_mut().zip(row.iter()).zip(tmp.iter()) {
                    *v += p + q;
                }
            } else {
                for (v, p) in xr.iter_mut().zip(row.iter()) {
                    *v += p;
                }
            }
        }
        self.layer_norm(
            ONE_THREAD,
            &self.embd_norm,
            &mut x[..ids.len() * h],
            None,
            buf,
        )
    }

    /// `x <- LN(x + add)` row by row with `norm` (`x <- LN(x)` without `add`), the rows split
    /// across `exec`'s threads; `buf` needs `2·hidden` values.
    fn layer_norm(
        &self,
        exec: Exec<'_>,
        norm: &Norm<'_>,
        x: &mut [f32],
        add: Option<&[f32]>,
        buf: &mut [f32],
    ) -> Result<()> {
        let h = self.config.hidden;
        let (w, b) = buf.split_at_mut(h);
        let b = &mut b[..h];
        norm.weight.decode_f32(0, w)?;
        norm.bias.decode_f32(0, b)?;
        let (w, b, eps) = (&*w, &*b, self.config.eps);
        let n = x.len() / h;
        for_rows(exec, x, n, h, &|first, rows| {
            if let Some(add) = add {
                let Some(ys) = add.get(first * h..first * h + rows.len()) else {
                    return false;
                };
                for (a, y) in rows.iter_mut().zip(ys) {
                    *a += y;
                }
            }
            for row in rows.chunks_exact_mut(h) {
                layer_norm(row, w, b, eps);
            }
            true
        })
    }

    /// `x <- LN(x + y)` with the norm whose weight and bias ride in slots `at` and
    /// `at + 1` (a block's first slot for its attention-output norm, its third for its
    /// layer-output norm), the rows split across the forward's threads.
    fn residual_norm(
        &self,
        lin: &Linears<'_, 'a>,
        at: usize,
        x: &mut [f32],
        y: &[f32],
        buf: &mut [f32],
    ) -> Result<()> {
        let norm_of = |i: usize| lin.slots.get(i).and_then(|s| s.norm);
        let norm = Norm {
            weight: norm_of(at).ok_or(Error::MissingTensor)?,
            bias: norm_of(at + 1).ok_or(Error::MissingTensor)?,
        };
        self.layer_norm(lin.exec, &norm, x, Some(y), buf)
    }
}

/// Arena `f32`s of a `bert` forward over `t` tokens: hidden states, q, k, v, context,
/// feed-forward, the rotated-input copy (also `k^T` during attention, and every head's
/// weights in a small batch's attention step), chain scratch, weight tile, bias, one
/// head's attention scores and the norm buffers.
fn bert_arena(cfg: &BertConfig, t: usize, head_rows: usize) -> usize {
    let (h, f) = (cfg.hidden, cfg.ffn);
    let wide = h.max(f);
    // Saturating: a context or width from a hostile file must not wrap to a small
    // arena (on 32-bit targets `t * t` wraps from 65,536 tokens on); `usize::MAX`
    // is a size no caller can allocate, so `forward` refuses every arena.
    let sum = |terms: &[usize]| terms.iter().fold(0usize, |a, &x| a.saturating_add(x));
    let mul = |a: usize, b: usize| a.saturating_mul(b);
    sum(&[
        mul(mul(5, t), h),
        mul(t, f),
        mul(mul(2, t), wide),
        mul(2, wide).max(mul(MAX_BLOCK_SIZE, t)),
        weight_scratch_len(wide, t),
        // The bias: a slot's, or both of a feed-forward block's (`Linears::feed_forward`).
        h.saturating_add(f).max(head_rows),
        mul(t, t),
        mul(2, h),
    ])
}

impl<'a> Forward<'a> for Bert<'a> {
    fn input(&self) -> InputKind {
        InputKind::Tokens {
            max: self.config.context,
        }
    }
    fn output_len(&self, _slots: &SlotTable<'a>) -> usize {
        self.config.hidden
    }
    fn pooled_width(&self) -> Option<usize> {
        Some(self.config.hidden)
    }
    fn arena_len(&self, _slots: &SlotTable<'a>, max_tokens: usize, head_rows: usize) -> usize {
        bert_arena(
            &self.config,
            max_tokens.clamp(1, self.config.context),
            head_rows,
        )
    }

    /// The `bert` forward pass: embeddings, encoder blocks, mean pooling, then the
    /// adapter's classification head or the L2-normalised embedding.
    fn forward(
        &self,
        lin: &Linears<'_, 'a>,
        input: Input<'_>,
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize> {
        let ids = match input {
            Input::Tokens(ids) if !ids.is_empty() && ids.len() <= self.config.context => ids,
            _ => return Err(Error::BadInput),
        };
        let cfg = self.config;
        let (t, h, f) = (ids.len(), cfg.hidden, cfg.ffn);
        let cls = lin.adapter.and_then(|p| p.cls_head());
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
        let (bias, rest) = rest.split_at_mut((h + f).max(head_rows));
        let (scores, rest) = rest.split_at_mut(t * t);
        let norm_buf = &mut rest[..2 * h];
        self.embed(ids, x, norm_buf)?;
        let mut sc = SlotScratch {
            rot,
            spare,
            chain,
            wbuf,
            bias,
        };
        let per_block = BLOCK_LINEARS.len();
        for blk in 0..cfg.blocks {
            let s0 = blk * per_block;
            lin.apply_shared([s0, s0 + 1], x, t, [&mut *q, &mut *k], &mut sc)?;
            #[cfg(feature = "parallel")]
            let stepped = {
                let (value, out) = ([s0 + 2, s0 + 3], [&mut *v, &mut *ctx]);
                lin.attention_step(value, cfg.heads, x, [q, k], t, out, &mut sc)?
            };
            #[cfg(not(feature = "parallel"))]
            let stepped = false;
            // The output slot's outputs: in `ctx` from the one step, else in `q`.
            let attended: &[f32] = if stepped {
                ctx
            } else {
                lin.apply(s0 + 2, x, t, v, &mut sc)?;
                attend(lin.exec, [q, k, v], t, h, cfg.heads, ctx, sc.rot, scores)?;
                lin.apply(s0 + 3, ctx, t, q, &mut sc)?;
                q
            };
            self.residual_norm(lin, s0, x, attended, norm_buf)?;
            lin.feed_forward([s0 + 4, s0 + 5], gelu, x, t, ffn, q, &mut sc)?;
            self.residual_norm(lin, s0 + 2, x, q, norm_buf)?;
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
}

/// [`attention`], its query rows split across `exec`'s threads when there is one (each
/// part's scores in the executor's scratch; results identical to one thread's).
#[allow(clippy::too_many_arguments)]
fn attend(
    exec: Exec<'_>,
    qkv: [&[f32]; 3],
    t: usize,
    h: usize,
    heads: usize,
    ctx: &mut [f32],
    kt: &mut [f32],
    scores: &mut [f32],
) -> Result<()> {
    #[cfg(feature = "parallel")]
    if let Some(e) = exec.filter(|e| e.threads() > 1 && t >= 16) {
        use crate::math::gemm::{pack_transposed, RowsRef};
        use crate::nn::attention::attention_rows;
        use crate::par::{run_split, split_ranges, MAX_PARTS};
        let [q, k, v] = qkv;
        if k.len() >= t * h && kt.len() >= t * h && ctx.len() >= t * h {
            pack_transposed(RowsRef::F32(&k[..t * h]), t, h, kt, t)?;
            let kt: &[f32] = kt;
            let mut starts = [0usize; MAX_PARTS + 1];
            let count = split_ranges(t, e.threads(), 12, &mut starts);
            let most = (0..count)
                .map(|i| starts[i + 1] - starts[i])
                .max()
                .unwrap_or(0);
            if run_split(
                e,
                &mut ctx[..t * h],
                &starts,
                count,
                h,
                most * t,
                &|r, out, sc| {
                    attention_rows(q, kt, v, t, h, heads, r.start, r.end, out, sc).is_ok()
                },
            ) {
                return Ok(());
            }
        }
    }
    let _ = exec;
    attention(qkv, t, h, heads, ctx, kt, scores)
}
