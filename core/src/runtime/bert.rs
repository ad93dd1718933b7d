//! The `bert` architecture with llama.cpp's key and tensor names (format.md), enough to
//! run all-MiniLM-L6-v2: embeddings, post-norm encoder blocks with multi-head attention
//! and an exact (erf) GELU feed-forward, mean pooling, then either the L2-normalised
//! sentence embedding or, when an adapter brings one, its classification head
//! (`cls.weight`, `cls.bias`) on the mean-pooled hidden states.
//!
//! The six linear layers of every block are slots (`attn_q`, `attn_k`, `attn_v`,
//! `attn_output`, `ffn_up`, `ffn_down`, in that order), so adapters rotate them exactly
//! like the dense layers of the small models.

use crate::math::gemm::{matmul, pack_transposed, Product, RowsRef};
use heapless::Vec;

use super::weights::TensorRef;
use crate::gguf::{self, Gguf, TensorInfo};
use crate::{Error, Result};

/// Most encoder blocks a `bert` model may have (BERT-base and MiniLM-L12 have 12).
pub const MAX_BERT_BLOCKS: usize = 12;

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

/// The non-slot tensors of a `bert` model.
#[derive(Debug, Clone)]
pub(crate) struct Bert<'a> {
    pub(crate) config: BertConfig,
    token_embd: TensorRef<'a>,
    position_embd: TensorRef<'a>,
    token_types: Option<TensorRef<'a>>,
    embd_norm: Norm<'a>,
    /// Per block: attention-output norm, layer-output norm.
    norms: Vec<[Norm<'a>; 2], MAX_BERT_BLOCKS>,
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
    /// Reads the configuration and the non-slot tensors, and pushes the block linears as
    /// slots `(weight, bias, rows, cols)` through `push_slot`.
    pub(crate) fn load(
        g: &Gguf<'a>,
        mut push_slot: impl FnMut(TensorInfo<'a>, Option<TensorInfo<'a>>, usize, usize) -> Result<()>,
    ) -> Result<Self> {
        let blocks = g.get_u32(gguf::KEY_BERT_BLOCK_COUNT)? as usize;
        let hidden = g.get_u32(gguf::KEY_BERT_EMBEDDING_LENGTH)? as usize;
        let ffn = g.get_u32(gguf::KEY_BERT_FEED_FORWARD_LENGTH)? as usize;
        let heads = g.get_u32(gguf::KEY_BERT_HEAD_COUNT)? as usize;
        let eps = g.get_f32(gguf::KEY_BERT_LAYER_NORM_EPSILON)?;
        if blocks == 0 || blocks > MAX_BERT_BLOCKS {
            return Err(Error::CapacityExceeded);
        }
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
        let mut norms = Vec::new();
        for blk in 0..blocks {
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
                push_slot(w, bias, rows, cols)?;
            }
            let pair = [
                norm(
                    g,
                    &block_name(blk, gguf::LAYER_ATTN_OUTPUT_NORM, gguf::SUFFIX_WEIGHT)?,
                    &block_name(blk, gguf::LAYER_ATTN_OUTPUT_NORM, gguf::SUFFIX_BIAS)?,
                    hidden,
                )?,
                norm(
                    g,
                    &block_name(blk, gguf::LAYER_LAYER_OUTPUT_NORM, gguf::SUFFIX_WEIGHT)?,
                    &block_name(blk, gguf::LAYER_LAYER_OUTPUT_NORM, gguf::SUFFIX_BIAS)?,
                    hidden,
                )?,
            ];
            norms.push(pair).map_err(|_| Error::CapacityExceeded)?;
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
            norms,
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
        self.layer_norm(&self.embd_norm, &mut x[..ids.len() * h], buf)
    }

    /// Layer norm over each row of `x` with `norm`; `buf` needs `2·hidden` values.
    fn layer_norm(&self, norm: &Norm<'_>, x: &mut [f32], buf: &mut [f32]) -> Result<()> {
        let h = self.config.hidden;
        let (w, b) = buf.split_at_mut(h);
        let b = &mut b[..h];
        norm.weight.decode_f32(0, w)?;
        norm.bias.decode_f32(0, b)?;
        for row in x.chunks_exact_mut(h) {
            // Lane-wise sums (they vectorise; a plain `sum` is one serial chain).
            let mean = crate::math::sum(row) / h as f32;
            let mut dev = [0.0f32; 8];
            let mut chunks = row.chunks_exact(8);
            for c in &mut chunks {
                for (d, v) in dev.iter_mut().zip(c) {
                    *d += (v - mean) * (v - mean);
                }
            }
            let tail: f32 = chunks
                .remainder()
                .iter()
                .map(|v| (v - mean) * (v - mean))
                .sum();
            let var = (crate::math::sum(&dev) + tail) / h as f32;
            let inv = 1.0 / libm::sqrtf(var + self.config.eps);
            for ((v, wv), bv) in row.iter_mut().zip(w.iter()).zip(b.iter()) {
                *v = (*v - mean) * inv * wv + bv;
            }
        }
        Ok(())
    }

    /// `x <- LN(x + y)` with block `blk`'s norm `which` (0 = attention output, 1 = layer output).
    pub(crate) fn residual_norm(
        &self,
        blk: usize,
        which: usize,
        x: &mut [f32],
        y: &[f32],
        buf: &mut [f32],
    ) -> Result<()> {
        for (a, b) in x.iter_mut().zip(y) {
            *a += b;
        }
        let n = self
            .norms
            .get(blk)
            .and_then(|p| p.get(which))
            .ok_or(Error::MissingTensor)?;
        self.layer_norm(n, x, buf)
    }
}

/// Multi-head self-attention over `t` tokens without masking (every token is real):
/// `ctx = softmax(q k^T / sqrt(d)) v` per head, as two dense products per head on the
/// `gemm` kernels. `kt` needs `t · hidden` values (`k` transposed, so each head's `k^T`
/// is a strided operand) and `scores` `t · t` (one head's attention matrix at a time).
///
/// # Errors
/// [`Error::BufferTooSmall`](crate::Error::BufferTooSmall) for short buffers.
pub(crate) fn attention(
    [q, k, v]: [&[f32]; 3],
    t: usize,
    hidden: usize,
    heads: usize,
    ctx: &mut [f32],
    kt: &mut [f32],
    scores: &mut [f32],
) -> Result<()> {
    let d = hidden / heads;
    let scale = 1.0 / libm::sqrtf(d as f32);
    let need = t * hidden;
    if k.len() < need || kt.len() < need || scores.len() < t * t {
        return Err(crate::Error::BufferTooSmall {
            needed: need.max(t * t),
            got: kt.len().min(scores.len()),
        });
    }
    pack_transposed(RowsRef::F32(&k[..need]), t, hidden, kt, t)?;
    let scores = &mut scores[..t * t];
    for h in 0..heads {
        let off = h * d;
        // scores = q_h · k_h^T
        let qk = Product {
            m: t,
            n: t,
            k: d,
            a_stride: hidden,
            b_stride: t,
            c_stride: t,
            accumulate: false,
        };
        matmul(&qk, q.get(off..).unwrap_or(&[]), &kt[off * t..], scores)?;
        for row in scores.chunks_exact_mut(t) {
            softmax(row, scale);
        }
        // ctx_h = softmax · v_h
        let pv = Product {
            m: t,
            n: d,
            k: t,
            a_stride: t,
            b_stride: hidden,
            c_stride: hidden,
            accumulate: false,
        };
        matmul(
            &pv,
            scores,
            v.get(off..).unwrap_or(&[]),
            ctx.get_mut(off..).unwrap_or(&mut []),
        )?;
    }
    Ok(())
}

/// `row = softmax(scale · row)` in place, in three passes that each vectorise (maximum
/// and sum over eight lanes, the exponentials branch-free).
fn softmax(row: &mut [f32], scale: f32) {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = m.max(v);
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for s in row.iter_mut() {
        *s = fast_exp((*s - max) * scale);
    }
    let inv = 1.0 / crate::math::sum(row);
    row.iter_mut().for_each(|s| *s *= inv);
}

/// Exact GELU, `0.5·x·(1 + erf(x/√2))` (HF BERT's `gelu`).
pub(crate) fn gelu(x: &mut [f32]) {
    for v in x {
        *v = 0.5 * *v * (1.0 + fast_erf(*v * core::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `e^x` for `x <= 0` (softmax arguments) and moderate positive `x`, branch-free so loops
/// over it vectorise: `2^n · p(f)` with `n = round(x·log2 e)`, `f = x - n·ln 2` (split in two
/// constants) and a degree-6 polynomial; relative error below 3e-7 on `[-87, 88]`, 0 below.
#[inline(always)]
pub(crate) fn fast_exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest with the 1.5·2^23 trick (no `floor` in core, and it vectorises):
    // `shifted`'s bits are 0x4B40_0000 + n, so `n` comes back as an integer without a
    // float-to-int conversion (whose saturation would keep the loop scalar).
    let shifted = x * core::f32::consts::LOG2_E + 12_582_912.0;
    let n = shifted - 12_582_912.0;
    let f = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (0.166_666_67
                    + f * (0.041_666_668 + f * (0.008_333_334 + f * 0.001_388_889)))));
    // 2^n: (0x4B40_0000 + n + 127) << 23 keeps the low 9 bits, n + 127 in 1 ..= 254.
    p * f32::from_bits(shifted.to_bits().wrapping_add(127) << 23)
}

/// `erf(x)`, branch-free (Abramowitz and Stegun 7.1.26, with [`fast_exp`]): absolute error
/// below 1e-6 in f32 (measured 5.8e-7 against libm), far inside the model tolerances.
#[inline(always)]
pub(crate) fn fast_erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * fast_exp(-a * a);
    y.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::{fast_erf, fast_exp};

    #[test]
    fn fast_exp_matches_libm() {
        let mut worst = 0.0f32;
        let mut x = -87.0f32;
        while x < 20.0 {
            let (a, b) = (fast_exp(x), libm::expf(x));
            worst = worst.max(((a - b) / b).abs());
            x += 0.001_3;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(fast_exp(-200.0), fast_exp(-87.0));
        assert!(fast_exp(-87.0) > 0.0 && fast_exp(-87.0) < 2e-38);
    }

    #[test]
    fn fast_erf_matches_libm() {
        let mut worst = 0.0f32;
        let mut x = -6.0f32;
        while x < 6.0 {
            worst = worst.max((fast_erf(x) - libm::erff(x)).abs());
            x += 0.000_7;
        }
        assert!(worst < 1e-6, "absolute error {worst}");
    }
}
