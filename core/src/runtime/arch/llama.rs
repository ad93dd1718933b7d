//! The `llama` decoder with llama.cpp's key and tensor names: token embeddings, blocks
//! of RMS norm, grouped-query causal attention with rotary position embeddings, RMS norm
//! and a SwiGLU feed-forward, then a final RMS norm and the output head (tied to the
//! embeddings when the file has no `output.weight`).
//!
//! The seven linear layers of every block are slots (`attn_q`, `attn_k`, `attn_v`,
//! `attn_output`, `ffn_gate`, `ffn_up`, `ffn_down`, in that order), so adapters rotate
//! them like every other dense layer, over any weight type the runtime reads (the
//! quantized base is never touched). Keys and values live in a caller-provided state
//! (`runtime::DecoderState`): a prompt is read once, then tokens are decoded one at a
//! time against the cache.

use super::mlp::check_float;
use super::{Forward, InputKind};
use crate::gguf::{self, Gguf, TensorInfo};
use crate::math::MAX_BLOCK_SIZE;
use crate::nn::activation::swiglu;
use crate::nn::attention::{
    causal_attention, key_block_attention, key_block_units, key_block_width, merge_key_blocks,
    CausalShape, KvSlice, KvSliceMut, MAX_GROUP,
};
use crate::nn::norm::rms_norm;
use crate::nn::rope::{rope_angles, rope_apply};
use crate::runtime::adapter::Prepared;
use crate::runtime::linear::{
    apply_steps, dense, dense_steps, for_rows, Exec, Linears, SlotScratch,
};
use crate::runtime::model::Input;
use crate::runtime::model::{DecodeStep, MAX_STEPS};
use crate::runtime::slots::{reserve, Slot, SlotSink, SlotTable, MAX_SLOTS};
use crate::runtime::weights::{weight_scratch_len, Dense, TensorRef, WeightView};
use crate::runtime::Logits;
use crate::{Error, Result};

/// The linear layers of one block, in slot order.
pub(crate) const BLOCK_LINEARS: [&str; 7] = [
    gguf::LAYER_ATTN_Q,
    gguf::LAYER_ATTN_K,
    gguf::LAYER_ATTN_V,
    gguf::LAYER_ATTN_OUTPUT,
    gguf::LAYER_FFN_GATE,
    gguf::LAYER_FFN_UP,
    gguf::LAYER_FFN_DOWN,
];

/// Decoder blocks a `llama` model built by [`crate::runtime::Model::from_bytes`] may have:
/// as many as its slot table holds. Caller storage
/// ([`crate::runtime::Model::from_bytes_in`]) holds any number.
pub const MAX_LLAMA_BLOCKS: usize = MAX_SLOTS / BLOCK_LINEARS.len();

/// Largest hidden width, feed-forward width, vocabulary and context a file may declare
/// (far above any model this runtime targets; they bound every size computed from them).
const MAX_WIDTH: usize = 1 << 16;
const MAX_VOCAB: usize = 1 << 22;
const MAX_CONTEXT: usize = 1 << 20;

/// Hyper-parameters of a `llama` file, all read from its `llama.*` keys.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LlamaConfig {
    /// Decoder blocks.
    pub blocks: usize,
    /// Hidden width.
    pub hidden: usize,
    /// SwiGLU width.
    pub ffn: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention; divides `heads`).
    pub kv_heads: usize,
    /// Width of one head (`hidden / heads`).
    pub head_dim: usize,
    /// Elements of each head that RoPE rotates (even, at most `head_dim`).
    pub rope_dims: usize,
    /// RoPE frequency base.
    pub rope_base: f32,
    /// RMS norm epsilon.
    pub eps: f32,
    /// Longest sequence (`llama.context_length`).
    pub context: usize,
    /// Vocabulary size (rows of the embedding table and of the output head).
    pub vocab: usize,
}

impl LlamaConfig {
    /// Width of one position's keys (or values): `kv_heads · head_dim`.
    pub const fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// The non-slot tensors of a `llama` model.
#[derive(Debug, Clone)]
pub(crate) struct Llama<'a> {
    pub(crate) config: LlamaConfig,
    token_embd: TensorRef<'a>,
    output: TensorRef<'a>,
    output_norm: TensorRef<'a>,
}

/// `xn <- RMSNorm(x)` row by row with weight `w` over `t` rows of `h` values, the rows
/// split across `exec`'s threads for a prompt.
fn normed(
    exec: Exec<'_>,
    x: &[f32],
    xn: &mut [f32],
    t: usize,
    h: usize,
    w: &[f32],
    eps: f32,
) -> Result<()> {
    for_rows(exec, xn, t, h, &|first, rows| {
        let Some(src) = x.get(first * h..first * h + rows.len()) else {
            return false;
        };
        rows.copy_from_slice(src);
        for row in rows.chunks_exact_mut(h) {
            rms_norm(row, w, eps);
        }
        true
    })
}

/// [`causal_attention`] of `t` new rows after `past` cached ones (`[t, past]`), its query
/// rows split across `exec`'s threads when there is one, in runs of about equal work (row
/// `i` reads `past + i + 1` keys), each part's scores in the executor's scratch. Every row
/// is computed by the same code as on one thread, so results are identical to one thread's.
///
/// A decoding step (one row) over [`KEY_BLOCKS_FROM`] cached positions or more is cut
/// into blocks of positions ([`key_block_attention`]), whose units are shared among the
/// threads and merged in order into `out` from `partials`: on one thread too, so the bits
/// do not depend on the thread count.
#[allow(clippy::too_many_arguments)]
fn attend(
    exec: Exec<'_>,
    shape: CausalShape,
    q: &[f32],
    kc: KvSlice<'_>,
    vc: KvSlice<'_>,
    [t, past]: [usize; 2],
    out: &mut [f32],
    [scores, partials]: [&mut [f32]; 2],
) -> Result<()> {
    // (A group of more query heads than the blocks take keeps the one-pass row, on one
    // thread.)
    if t == 1 && past + 1 >= KEY_BLOCKS_FROM && shape.group() <= MAX_GROUP {
        let seen = past + 1;
        let units = key_block_units(shape, seen);
        let width = key_block_width(shape);
        let need = units.saturating_mul(width);
        let got = partials.len();
        let parts = partials
            .get_mut(..need)
            .ok_or(Error::BufferTooSmall { needed: need, got })?;
        #[cfg(feature = "parallel")]
        let done = exec.filter(|e| e.threads() > 1).is_some_and(|e| {
            use crate::par::{run_split, split_ranges, MAX_PARTS};
            let mut starts = [0usize; MAX_PARTS + 1];
            let count = split_ranges(units, e.threads(), 1, &mut starts);
            let scratch = shape.group() * crate::nn::attention::KEY_BLOCK;
            count > 1
                && run_split(e, parts, &starts, count, width, scratch, &|r, part, sc| {
                    key_block_attention(shape, q, kc, vc, seen, r, part, sc).is_ok()
                })
        });
        #[cfg(not(feature = "parallel"))]
        let done = false;
        if !done {
            // One thread, or a part failed: all units here (a failure then names itself).
            key_block_attention(shape, q, kc, vc, seen, 0..units, parts, scores)?;
        }
        return merge_key_blocks(shape, seen, parts, out);
    }
    #[cfg(feature = "parallel")]
    if let Some(e) = exec.filter(|e| e.threads() > 1 && t >= 8) {
        use crate::par::{run_split, MAX_PARTS};
        let qw = shape.heads * shape.head_dim;
        if q.len() >= t * qw && out.len() >= t * qw {
            let mut starts = [0usize; MAX_PARTS + 1];
            let count = balanced_rows(t, past, e.threads(), &mut starts);
            if count > 1
                && run_split(
                    e,
                    &mut out[..t * qw],
                    &starts,
                    count,
                    qw,
                    shape.group() * (past + t),
                    &|r, part, sc| {
                        let rows = &q[r.start * qw..r.end * qw];
                        causal_attention(shape, rows, kc, vc, r.len(), past + r.start, part, sc)
                            .is_ok()
                    },
                )
            {
                return Ok(());
            }
        }
    }
    let _ = exec;
    causal_attention(shape, q, kc, vc, t, past, out, scores)
}

/// Cached positions from which a decoding step's attention is cut into blocks of
/// positions that threads share ([`key_block_attention`]), on every thread count: below
/// it a step's attention (SmolLM2: 9 heads x 64 dimensions x 2 products a position) is a
/// few microseconds a layer, about what handing it out costs. From 64 on, two threads
/// decode after 200 prompt tokens 1.05-1.16x as fast as with the split from 256 on
/// (docs/benchmarks.md section 27).
const KEY_BLOCKS_FROM: usize = 64;

/// Cuts `t` causal attention rows after `past` cached positions into at most `parts` runs
/// of about equal work (row `i` reads `past + i + 1` keys); the runs are
/// `starts[k] .. starts[k + 1]` for `k` below the returned count, none of them empty.
#[cfg(feature = "parallel")]
fn balanced_rows(
    t: usize,
    past: usize,
    parts: usize,
    starts: &mut [usize; crate::par::MAX_PARTS + 1],
) -> usize {
    balanced_runs(t, parts, starts, &|rows| {
        let (r, p) = (rows as u64, past as u64);
        r * (p + 1) + r * r.saturating_sub(1) / 2
    })
}

/// Cuts `n` items into at most `parts` runs of about equal work, `work(i)` being the work
/// of the first `i` items; the runs are `starts[k] .. starts[k + 1]` for `k` below the
/// returned count, none of them empty.
#[cfg(feature = "parallel")]
fn balanced_runs(
    n: usize,
    parts: usize,
    starts: &mut [usize; crate::par::MAX_PARTS + 1],
    work: &dyn Fn(usize) -> u64,
) -> usize {
    let parts = parts.clamp(1, crate::par::MAX_PARTS).min(n.max(1)) as u64;
    let total = work(n);
    starts[0] = 0;
    let mut count = 1;
    for i in 1..n {
        if (count as u64) < parts && work(i) * parts >= total * count as u64 {
            starts[count] = i;
            count += 1;
        }
    }
    starts[count] = n;
    count
}

fn dim(g: &Gguf<'_>, key: &'static str, max: usize) -> Result<usize> {
    let v = g.get_u32(key)? as usize;
    if v == 0 || v > max {
        return Err(Error::UnsupportedModel);
    }
    Ok(v)
}

fn matrix<'a>(g: &Gguf<'a>, name: &str, rows: usize, cols: usize) -> Result<TensorInfo<'a>> {
    let t = g.require_tensor(name)?;
    if t.shape() != [rows as u64, cols as u64] {
        return Err(Error::ShapeMismatch { tensor: t.index() });
    }
    check_float(&t)?;
    Ok(t)
}

fn vector<'a>(g: &Gguf<'a>, name: &str, len: usize) -> Result<TensorRef<'a>> {
    let t = g.require_tensor(name)?;
    if t.shape() != [len as u64] {
        return Err(Error::ShapeMismatch { tensor: t.index() });
    }
    check_float(&t)?;
    Ok(TensorRef::new(&t))
}

fn block_name(block: usize, layer: &str) -> Result<gguf::TensorName> {
    gguf::block_tensor_name(block as u32, layer, gguf::SUFFIX_WEIGHT).ok_or(Error::CapacityExceeded)
}

impl<'a> Llama<'a> {
    /// Reads the configuration and the non-slot tensors, and pushes the block linears
    /// into `slots`.
    pub(crate) fn load(g: &Gguf<'a>, slots: &mut dyn SlotSink<'a>) -> Result<Self> {
        let blocks = g.get_u32(gguf::KEY_LLAMA_BLOCK_COUNT)? as usize;
        if blocks == 0 {
            return Err(Error::UnsupportedValue {
                key: crate::KeyName(gguf::KEY_LLAMA_BLOCK_COUNT),
            });
        }
        reserve(slots, blocks.saturating_mul(BLOCK_LINEARS.len()))?;
        let hidden = dim(g, gguf::KEY_LLAMA_EMBEDDING_LENGTH, MAX_WIDTH)?;
        let ffn = dim(g, gguf::KEY_LLAMA_FEED_FORWARD_LENGTH, 4 * MAX_WIDTH)?;
        let heads = dim(g, gguf::KEY_LLAMA_HEAD_COUNT, hidden)?;
        let kv_heads = match g.get_u32(gguf::KEY_LLAMA_HEAD_COUNT_KV) {
            Err(Error::MissingKey { .. }) => heads,
            other => other? as usize,
        };
        if kv_heads == 0 || heads % kv_heads != 0 || hidden % heads != 0 {
            return Err(Error::UnsupportedModel);
        }
        let head_dim = hidden / heads;
        let rope_dims = match g.get_u32(gguf::KEY_LLAMA_ROPE_DIMENSION_COUNT) {
            Err(Error::MissingKey { .. }) => head_dim,
            other => other? as usize,
        };
        if rope_dims % 2 != 0 || rope_dims > head_dim {
            return Err(Error::UnsupportedModel);
        }
        let rope_base = match g.get_f32(gguf::KEY_LLAMA_ROPE_FREQ_BASE) {
            Err(Error::MissingKey { .. }) => 10_000.0,
            other => other?,
        };
        let eps = g.get_f32(gguf::KEY_LLAMA_RMS_EPSILON)?;
        if !(rope_base.is_finite() && rope_base > 1.0 && eps.is_finite() && eps >= 0.0) {
            return Err(Error::UnsupportedModel);
        }
        let context = dim(g, gguf::KEY_LLAMA_CONTEXT_LENGTH, MAX_CONTEXT)?;
        let embd = g.require_tensor(gguf::TENSOR_TOKEN_EMBD)?;
        let vocab = match embd.shape() {
            [v, h] if *h as usize == hidden && (1..=MAX_VOCAB as u64).contains(v) => *v as usize,
            _ => {
                return Err(Error::ShapeMismatch {
                    tensor: embd.index(),
                })
            }
        };
        if let Ok(v) = g.get_u32(gguf::KEY_LLAMA_VOCAB_SIZE) {
            if v as usize != vocab {
                return Err(Error::ShapeMismatch {
                    tensor: embd.index(),
                });
            }
        }
        check_float(&embd)?;
        let config = LlamaConfig {
            blocks,
            hidden,
            ffn,
            heads,
            kv_heads,
            head_dim,
            rope_dims,
            rope_base,
            eps,
            context,
            vocab,
        };
        let kvw = config.kv_width();
        for blk in 0..blocks {
            for (j, layer) in BLOCK_LINEARS.iter().enumerate() {
                let (rows, cols) = match j {
                    1 | 2 => (kvw, hidden),
                    4 | 5 => (ffn, hidden),
                    6 => (hidden, ffn),
                    _ => (hidden, hidden),
                };
                let w = matrix(g, &block_name(blk, layer)?, rows, cols)?;
                let mut slot = Slot::new(&w, None, rows, cols);
                slot.norm = match j {
                    0 => Some(vector(g, &block_name(blk, gguf::LAYER_ATTN_NORM)?, hidden)?),
                    4 => Some(vector(g, &block_name(blk, gguf::LAYER_FFN_NORM)?, hidden)?),
                    _ => None,
                };
                slots.push(slot)?;
            }
        }
        let output = match g.find_tensor(gguf::TENSOR_OUTPUT) {
            Some(_) => matrix(g, gguf::TENSOR_OUTPUT, vocab, hidden)?,
            None => embd,
        };
        Ok(Llama {
            config,
            token_embd: TensorRef::new(&embd),
            output: TensorRef::new(&output),
            output_norm: vector(g, gguf::TENSOR_OUTPUT_NORM, hidden)?,
        })
    }

    /// Widest activation a slot reads or writes.
    fn wide(&self) -> usize {
        let c = &self.config;
        c.hidden.max(c.ffn)
    }

    /// Arena `f32`s of one step over `t` new tokens (the cache excluded): hidden states,
    /// normed states, q, k, v, attention output, gate and up, RoPE angles, attention
    /// scores of one key/value head's query heads over the whole context, a decoding step's
    /// key-block partial results, a norm weight, and the slot scratch.
    fn step_arena(&self, t: usize) -> usize {
        let c = &self.config;
        let (h, f, kvw, wide) = (c.hidden, c.ffn, c.kv_width(), self.wide());
        // Saturating, as `bert_arena`: `usize::MAX` is an arena nobody can allocate.
        let sum = |terms: &[usize]| terms.iter().fold(0usize, |a, &x| a.saturating_add(x));
        let mul = |a: usize, b: usize| a.saturating_mul(b);
        sum(&[
            mul(mul(4, t), h),
            mul(mul(2, t), kvw),
            mul(mul(2, t), f),
            mul(t, c.rope_dims),
            mul(c.heads / c.kv_heads, c.context),
            self.partials_len(),
            h,
            mul(mul(2, t), wide),
            mul(2, wide).max(mul(MAX_BLOCK_SIZE, t)),
            weight_scratch_len(wide, t).max(weight_scratch_len(h, 1)),
            wide,
        ])
    }

    /// Values of a decoding step's key-block partial results over the whole context.
    fn partials_len(&self) -> usize {
        let c = &self.config;
        key_block_units(self.shape(), c.context).saturating_mul(key_block_width(self.shape()))
    }

    /// The attention's heads.
    fn shape(&self) -> CausalShape {
        let c = &self.config;
        CausalShape {
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
        }
    }

    /// Values (of either [`crate::runtime::KvType`]) of keys and values for `context`
    /// positions.
    fn kv_len(&self, context: usize) -> usize {
        // Saturating: `usize::MAX` is a cache nobody can allocate.
        self.config
            .blocks
            .saturating_mul(2)
            .saturating_mul(context)
            .saturating_mul(self.config.kv_width())
    }

    /// The step of [`Forward::step`], on a cache of `context` positions of which `past`
    /// are filled; returns the number of logits written (`rows` times the vocabulary).
    #[allow(clippy::too_many_arguments)]
    fn run_step(
        &self,
        lin: &Linears<'_, 'a>,
        tokens: &[u32],
        mut kv: KvSliceMut<'_>,
        context: usize,
        past: usize,
        rows: Logits,
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize> {
        let c = self.config;
        let t = tokens.len();
        if t == 0 {
            return Err(Error::BadInput);
        }
        self.check_cache(kv.len(), context, past, t)?;
        check_len(arena.len(), self.step_arena(t))?;
        // Rows of logits: the last position's, or every position's.
        let heads = match rows {
            Logits::Last => 1,
            Logits::Every => t,
        };
        let got = output.len();
        let want = heads.saturating_mul(c.vocab);
        let logits = output
            .get_mut(..want)
            .ok_or(Error::BufferTooSmall { needed: want, got })?;
        let h = c.hidden;
        let half = c.rope_dims / 2;
        let StepBufs {
            blocks: mut bufs,
            attention,
            mut sc,
        } = self.step_bufs(arena, t);
        let [cos, sin] = &mut bufs.angles;
        for (i, (&id, row)) in tokens.iter().zip(bufs.x.chunks_exact_mut(h)).enumerate() {
            let angles = [&mut cos[i * half..][..half], &mut sin[i * half..][..half]];
            self.embed(id, past + i, row, angles)?;
        }
        let one = OneSequence { lin, t };
        let mut attend = |blk: usize, qkv: [&[f32]; 3], att: &mut [f32], sp: [&mut [f32]; 2]| {
            let cache = (kv.reborrow(), context, past);
            attend_cached(self, lin.exec, cache, (blk, t), qkv, att, sp)
        };
        self.run_blocks(&one, &mut bufs, t, &mut attend, (attention, &mut sc))?;
        let Blocks { x, xn, normw, .. } = bufs;
        // The head reads the last `heads` positions (generation: the last one only).
        let last = &mut xn[..heads * h];
        self.head_inputs(&x[(t - heads) * h..t * h], last, normw)?;
        let head = Dense {
            weight: WeightView::Tensor(self.output),
            rows: c.vocab,
            cols: h,
            scale: None,
            bias: None,
        };
        // The head ranks the next tokens: f32 inputs, not 8-bit activations (the best two
        // can be a few hundredths apart: SmolLM2's chat answer to "What is the capital of
        // France?" turns on 0.08). The last position is a product of its own, so that its
        // logits are a generating step's bit for bit whatever rows come before it (a
        // scored prompt continues as a generated one would).
        let (before, final_row) = last.split_at(last.len() - h);
        let (l_before, l_final) = logits.split_at_mut(logits.len() - c.vocab);
        for (x_rows, n, y) in [(before, heads - 1, l_before), (final_row, 1, l_final)] {
            if n > 0 {
                dense(lin.exec, &head, x_rows, n, y, sc.wbuf, &mut [], &[], false)?;
            }
        }
        Ok(want)
    }
}

/// How a step runs the slots of its blocks on its `t` rows: the rows of one sequence
/// through its [`Linears`], or one row of each of several sequences, each under its own
/// adapter, through [`apply_steps`].
trait BlockSlots<'a> {
    /// The executor the step splits its work with.
    fn exec(&self) -> Exec<'_>;
    /// The base's slots (norm weights included).
    fn slots(&self) -> &SlotTable<'a>;
    /// Slot `i` on the rows `x` into `y`.
    fn apply(&self, i: usize, x: &mut [f32], y: &mut [f32], sc: &mut SlotScratch<'_>)
        -> Result<()>;
    /// Slots `i` and `i + 1`, which read the same rows `x`, into `ya` and `yb`.
    fn apply_pair(
        &self,
        i: usize,
        x: &mut [f32],
        [ya, yb]: [&mut [f32]; 2],
        sc: &mut SlotScratch<'_>,
    ) -> Result<()> {
        self.apply(i, x, ya, sc)?;
        self.apply(i + 1, x, yb, sc)
    }
}

/// The `t` rows of one sequence ([`Llama::run_step`]).
struct OneSequence<'l, 'r, 'a> {
    lin: &'l Linears<'r, 'a>,
    t: usize,
}

impl<'a> BlockSlots<'a> for OneSequence<'_, '_, 'a> {
    fn exec(&self) -> Exec<'_> {
        self.lin.exec
    }
    fn slots(&self) -> &SlotTable<'a> {
        self.lin.slots
    }
    fn apply(
        &self,
        i: usize,
        x: &mut [f32],
        y: &mut [f32],
        sc: &mut SlotScratch<'_>,
    ) -> Result<()> {
        self.lin.apply(i, x, self.t, y, sc).map(|_| ())
    }
    fn apply_pair(
        &self,
        i: usize,
        x: &mut [f32],
        [ya, yb]: [&mut [f32]; 2],
        sc: &mut SlotScratch<'_>,
    ) -> Result<()> {
        self.lin.apply_pair(i, x, self.t, ya, yb, sc)
    }
}

/// One row of each of several sequences, row `b` under `adapters[b]`
/// ([`Llama::decode_steps`]).
struct Sequences<'s, 'e, 'a, 'w> {
    slots: &'s SlotTable<'a>,
    adapters: &'s [Option<&'s Prepared<'a, 'w>>],
    exec: Exec<'e>,
}

impl<'a> BlockSlots<'a> for Sequences<'_, '_, 'a, '_> {
    fn exec(&self) -> Exec<'_> {
        self.exec
    }
    fn slots(&self) -> &SlotTable<'a> {
        self.slots
    }
    fn apply(
        &self,
        i: usize,
        x: &mut [f32],
        y: &mut [f32],
        sc: &mut SlotScratch<'_>,
    ) -> Result<()> {
        let n = self.adapters.len();
        apply_steps(self.slots, self.adapters, self.exec, i, x, n, y, sc).map(|_| ())
    }
}

/// The buffers the blocks of a step read and write ([`Llama::run_blocks`]).
struct Blocks<'x> {
    x: &'x mut [f32],
    xn: &'x mut [f32],
    q: &'x mut [f32],
    k: &'x mut [f32],
    v: &'x mut [f32],
    att: &'x mut [f32],
    gate: &'x mut [f32],
    up: &'x mut [f32],
    /// The rows' RoPE angles (cosines, sines).
    angles: [&'x mut [f32]; 2],
    normw: &'x mut [f32],
}

/// A step's attention over its caches: `(block, [q, k, v] of its rows after RoPE, the
/// attention output, [scores, partials] scratch)`.
type AttendFn<'f> = dyn FnMut(usize, [&[f32]; 3], &mut [f32], [&mut [f32]; 2]) -> Result<()> + 'f;

impl<'a> Llama<'a> {
    /// Every block of a step on its `t` rows in `b.x`: RMS norm, q, k and v, RoPE, the
    /// attention (`attend`: one sequence's causal attention, or each sequence's over its
    /// own cache), the output slot and the residual; RMS norm, gate and up, SwiGLU, down
    /// and the residual.
    fn run_blocks(
        &self,
        s: &dyn BlockSlots<'a>,
        b: &mut Blocks<'_>,
        t: usize,
        attend: &mut AttendFn<'_>,
        ([scores, partials], sc): ([&mut [f32]; 2], &mut SlotScratch<'_>),
    ) -> Result<()> {
        let c = &self.config;
        let (h, f, kvw) = (c.hidden, c.ffn, c.kv_width());
        let half = c.rope_dims / 2;
        let exec = s.exec();
        let per_block = BLOCK_LINEARS.len();
        for blk in 0..c.blocks {
            let s0 = blk * per_block;
            let norm = |i: usize| {
                s.slots()
                    .get(s0 + i)
                    .and_then(|s| s.norm)
                    .ok_or(Error::MissingTensor)
            };
            // Attention.
            norm(0)?.decode_f32(0, b.normw)?;
            normed(exec, b.x, b.xn, t, h, b.normw, c.eps)?;
            s.apply(s0, b.xn, b.q, sc)?;
            s.apply_pair(s0 + 1, b.xn, [&mut *b.k, &mut *b.v], sc)?;
            let [cos, sin] = &b.angles;
            for i in 0..t {
                let (cs, sn) = (&cos[i * half..][..half], &sin[i * half..][..half]);
                rope_apply(&mut b.q[i * h..][..h], c.head_dim, c.rope_dims, cs, sn);
                rope_apply(&mut b.k[i * kvw..][..kvw], c.head_dim, c.rope_dims, cs, sn);
            }
            let qkv = [&*b.q, &*b.k, &*b.v];
            attend(blk, qkv, b.att, [&mut *scores, &mut *partials])?;
            s.apply(s0 + 3, b.att, b.xn, sc)?;
            for (a, r) in b.x.iter_mut().zip(b.xn.iter()) {
                *a += r;
            }
            // Feed-forward.
            norm(4)?.decode_f32(0, b.normw)?;
            normed(exec, b.x, b.xn, t, h, b.normw, c.eps)?;
            s.apply_pair(s0 + 4, b.xn, [&mut *b.gate, &mut *b.up], sc)?;
            let up: &[f32] = b.up;
            for_rows(exec, b.gate, t, f, &|first, rows| {
                let Some(u) = up.get(first * f..first * f + rows.len()) else {
                    return false;
                };
                swiglu(rows, u);
                true
            })?;
            s.apply(s0 + 6, b.gate, b.xn, sc)?;
            for (a, r) in b.x.iter_mut().zip(b.xn.iter()) {
                *a += r;
            }
        }
        Ok(())
    }
}

/// A step's working memory over `t` rows, cut from its arena ([`Llama::step_bufs`]).
struct StepBufs<'x> {
    /// What the blocks read and write.
    blocks: Blocks<'x>,
    /// Attention scores and a decoding step's key-block partial results.
    attention: [&'x mut [f32]; 2],
    /// The slot scratch.
    sc: SlotScratch<'x>,
}

impl<'a> Llama<'a> {
    /// The buffers of a step over `t` rows, from an arena of at least
    /// [`Llama::step_arena`]`(t)` values (checked by the caller): hidden states, normed
    /// states, q, k, v, attention output, gate and up, RoPE angles, attention scores,
    /// key-block partial results, a norm weight, and the slot scratch.
    fn step_bufs<'x>(&self, arena: &'x mut [f32], t: usize) -> StepBufs<'x> {
        let c = &self.config;
        let (h, f, kvw, wide) = (c.hidden, c.ffn, c.kv_width(), self.wide());
        let half = c.rope_dims / 2;
        let (x, rest) = arena.split_at_mut(t * h);
        let (xn, rest) = rest.split_at_mut(t * h);
        let (q, rest) = rest.split_at_mut(t * h);
        let (k, rest) = rest.split_at_mut(t * kvw);
        let (v, rest) = rest.split_at_mut(t * kvw);
        let (att, rest) = rest.split_at_mut(t * h);
        let (gate, rest) = rest.split_at_mut(t * f);
        let (up, rest) = rest.split_at_mut(t * f);
        let (cos, rest) = rest.split_at_mut(t * half);
        let (sin, rest) = rest.split_at_mut(t * half);
        let (scores, rest) = rest.split_at_mut(c.heads / c.kv_heads * c.context);
        let (partials, rest) = rest.split_at_mut(self.partials_len());
        let (normw, rest) = rest.split_at_mut(h);
        let (rot, rest) = rest.split_at_mut(t * wide);
        let (spare, rest) = rest.split_at_mut(t * wide);
        let (chain, rest) = rest.split_at_mut((2 * wide).max(MAX_BLOCK_SIZE * t));
        let (wbuf, rest) = rest.split_at_mut(weight_scratch_len(wide, t).max(h));
        let bias = &mut rest[..wide];
        StepBufs {
            blocks: Blocks {
                x,
                xn,
                q,
                k,
                v,
                att,
                gate,
                up,
                angles: [cos, sin],
                normw,
            },
            attention: [scores, partials],
            sc: SlotScratch {
                rot,
                spare,
                chain,
                wbuf,
                bias,
            },
        }
    }

    /// [`Error::ContextExceeded`] unless a cache of `context` positions with `past` filled
    /// has room for `t` more; [`Error::BufferTooSmall`] unless its `kv_len` values hold it.
    fn check_cache(&self, kv_len: usize, context: usize, past: usize, t: usize) -> Result<()> {
        if past + t > context {
            return Err(Error::ContextExceeded {
                needed: past + t,
                context,
            });
        }
        check_len(kv_len, self.kv_len(context))
    }

    /// The output head's inputs: the final hidden rows `x`, RMS-normed with the output
    /// norm (decoded into `normw`) into `out`.
    ///
    /// # Errors
    /// The norm tensor's decoding errors.
    fn head_inputs(&self, x: &[f32], out: &mut [f32], normw: &mut [f32]) -> Result<()> {
        self.output_norm.decode_f32(0, normw)?;
        out.copy_from_slice(x);
        for row in out.chunks_exact_mut(self.config.hidden) {
            rms_norm(row, normw, self.config.eps);
        }
        Ok(())
    }

    /// Token `id`'s embedding into `row`, and the RoPE angles of position `pos` into
    /// `cos` and `sin` (`rope_dims / 2` each).
    ///
    /// # Errors
    /// [`Error::BadInput`] for an id outside the vocabulary; the tensor's decoding errors.
    fn embed(
        &self,
        id: u32,
        pos: usize,
        row: &mut [f32],
        [cos, sin]: [&mut [f32]; 2],
    ) -> Result<()> {
        let c = &self.config;
        let id = id as usize;
        if id >= c.vocab {
            return Err(Error::BadInput);
        }
        self.token_embd.decode_f32(id * c.hidden, row)?;
        rope_angles(pos, c.rope_dims, c.rope_base, cos, sin);
        Ok(())
    }
}

impl<'a> Llama<'a> {
    /// Arena `f32`s of [`Llama::decode_steps`] for `n` sequences: a step's over `n` tokens,
    /// and the output head's `n` rows of logits as its threads write them (by runs of
    /// vocabulary, then interleaved).
    pub(crate) fn steps_arena(&self, n: usize) -> usize {
        self.step_arena(n)
            .saturating_add(n.saturating_mul(self.config.vocab))
    }

    /// One decoding step of each of `steps.len()` sequences at once: step `b` reads its
    /// token into its own state after the positions it holds, under its own adapter
    /// (unmerged), and the next token's logits go to row `b` of `output`. The base's weights
    /// are read once for all of them ([`apply_steps`]); the attention reads each
    /// sequence's own cache. Every row of logits is bit for bit what
    /// [`Forward::step`] gives that sequence alone. Everything is checked before the first
    /// state changes: on error no state records a new position.
    pub(crate) fn decode_steps(
        &self,
        slots: &SlotTable<'a>,
        exec: Exec<'_>,
        steps: &mut [DecodeStep<'_, '_, 'a, '_>],
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<()> {
        let c = self.config;
        let n = steps.len();
        if n == 0 {
            return Err(Error::BadInput);
        }
        for s in steps.iter_mut() {
            if s.token as usize >= c.vocab {
                return Err(Error::BadInput);
            }
            let owner = s.adapter.map(|p| p.state_key());
            let (kv, context, past) = s.state.claim(owner)?;
            self.check_cache(kv.len(), context, past, 1)?;
        }
        check_len(arena.len(), self.steps_arena(n))?;
        let want = n.saturating_mul(c.vocab);
        let got = output.len();
        let logits = output
            .get_mut(..want)
            .ok_or(Error::BufferTooSmall { needed: want, got })?;
        let (h, kvw) = (c.hidden, c.kv_width());
        let half = c.rope_dims / 2;
        let (arena, heads_out) = arena.split_at_mut(self.step_arena(n));
        let StepBufs {
            blocks: mut bufs,
            attention,
            mut sc,
        } = self.step_bufs(arena, n);
        let mut adapters: heapless::Vec<Option<&Prepared<'a, '_>>, MAX_STEPS> =
            heapless::Vec::new();
        for (b, s) in steps.iter().enumerate() {
            adapters
                .push(s.adapter)
                .map_err(|_| Error::CapacityExceeded)?;
            let [cos, sin] = &mut bufs.angles;
            let angles = [&mut cos[b * half..][..half], &mut sin[b * half..][..half]];
            self.embed(s.token, s.state.len(), &mut bufs.x[b * h..][..h], angles)?;
        }
        let seqs = Sequences {
            slots,
            adapters: &adapters[..],
            exec,
        };
        // Each sequence against its own cache.
        let mut attend =
            |blk: usize, [q, k, v]: [&[f32]; 3], att: &mut [f32], [sc, pa]: [&mut [f32]; 2]| {
                #[cfg(feature = "parallel")]
                if let Some(e) = exec.filter(|e| e.threads() > 1) {
                    if self.attend_steps_apart(e, steps, blk, [q, k, v], att)? {
                        return Ok(());
                    }
                }
                for (b, s) in steps.iter_mut().enumerate() {
                    let owner = s.adapter.map(|p| p.state_key());
                    let cache = s.state.claim(owner)?;
                    let qkv = [&q[b * h..][..h], &k[b * kvw..][..kvw], &v[b * kvw..][..kvw]];
                    let out = &mut att[b * h..][..h];
                    attend_cached(self, exec, cache, (blk, 1), qkv, out, [&mut *sc, &mut *pa])?;
                }
                Ok(())
            };
        self.run_blocks(&seqs, &mut bufs, n, &mut attend, (attention, &mut sc))?;
        let Blocks { x, xn, normw, .. } = bufs;
        self.head_inputs(x, xn, normw)?;
        // The head ranks the next tokens on `f32` inputs, each row as a step alone.
        let head = Dense {
            weight: WeightView::Tensor(self.output),
            rows: c.vocab,
            cols: h,
            scale: None,
            bias: None,
        };
        dense_steps(exec, &head, xn, n, logits, sc.wbuf, heads_out, false)?;
        for s in steps.iter_mut() {
            let owner = s.adapter.map(|p| p.state_key());
            s.state.advance(1, owner);
        }
        Ok(())
    }
}

/// Fixed work of one sequence's attention in a decoding step, in positions read (the
/// head's set-up and merge), for sharing sequences out among threads.
#[cfg(feature = "parallel")]
const STEP_ATTENTION_SETUP: u64 = 16;

impl<'a> Llama<'a> {
    /// The attention of block `blk` for each of several sequences' decoding steps, the
    /// sequences shared out among `exec`'s threads in runs of about equal work, each
    /// sequence whole on one thread as one thread computes it alone (so the same bits as
    /// [`attend_cached`] on any thread count). It applies while every sequence is short of
    /// [`KEY_BLOCKS_FROM`] positions, where [`attend`] keeps a sequence's attention on the
    /// calling thread and the others would wait. `Ok(false)` elsewhere, or when a part
    /// failed: the caller then runs each sequence's attention itself (writing the same keys
    /// and values again where they were written here), which names any error.
    #[cfg(feature = "parallel")]
    fn attend_steps_apart(
        &self,
        exec: &dyn crate::par::Executor,
        steps: &mut [DecodeStep<'_, '_, 'a, '_>],
        blk: usize,
        [q, k, v]: [&[f32]; 3],
        att: &mut [f32],
    ) -> Result<bool> {
        use crate::par::{run_split, MAX_PARTS};
        let n = steps.len();
        let (h, kvw) = (self.config.hidden, self.config.kv_width());
        let mut seen: heapless::Vec<usize, MAX_STEPS> = heapless::Vec::new();
        for s in steps.iter() {
            seen.push(s.state.len() + 1)
                .map_err(|_| Error::CapacityExceeded)?;
        }
        if seen.iter().any(|&p| p >= KEY_BLOCKS_FROM) {
            return Ok(false);
        }
        let work = |i: usize| -> u64 {
            seen[..i]
                .iter()
                .map(|&p| p as u64 + STEP_ATTENTION_SETUP)
                .sum()
        };
        let mut starts = [0usize; MAX_PARTS + 1];
        let count = balanced_runs(n, exec.threads(), &mut starts, &work);
        if count < 2 || q.len() < n * h || k.len() < n * kvw || v.len() < n * kvw {
            return Ok(false);
        }
        let mut caches: heapless::Vec<([KvSlice<'_>; 2], usize), MAX_STEPS> = heapless::Vec::new();
        for (b, s) in steps.iter_mut().enumerate() {
            let owner = s.adapter.map(|p| p.state_key());
            let cache = s.state.claim(owner)?;
            let past = cache.2;
            let kv = [&k[b * kvw..][..kvw], &v[b * kvw..][..kvw]];
            let filled = write_cached(self, cache, blk, kv)?;
            caches
                .push((filled, past))
                .map_err(|_| Error::CapacityExceeded)?;
        }
        let shape = self.shape();
        let most = seen.iter().copied().max().unwrap_or(1);
        let scores_len = shape.group() * most;
        let partials_len = key_block_units(shape, most) * key_block_width(shape);
        let done = run_split(
            exec,
            &mut att[..n * h],
            &starts,
            count,
            h,
            scores_len + partials_len,
            &|r, out, scratch| {
                let Some((scores, partials)) = scratch.split_at_mut_checked(scores_len) else {
                    return false;
                };
                r.clone().zip(out.chunks_exact_mut(h)).all(|(b, row)| {
                    let ([keys, values], past) = caches[b];
                    let bufs = [&mut *scores, &mut *partials];
                    let q = &q[b * h..][..h];
                    attend(
                        crate::runtime::linear::ONE_THREAD,
                        shape,
                        q,
                        keys,
                        values,
                        [1, past],
                        row,
                        bufs,
                    )
                    .is_ok()
                })
            },
        );
        Ok(done)
    }
}

/// [`Error::BufferTooSmall`] unless `got >= needed`.
fn check_len(got: usize, needed: usize) -> Result<()> {
    if got < needed {
        return Err(Error::BufferTooSmall { needed, got });
    }
    Ok(())
}

/// Writes `t` new positions' keys and values (`[q, k, v]`: their queries, keys and
/// values) into block `blk` of a sequence's cache (`kv` of `context` positions, `past`
/// filled), then their causal attention over the cache into `out`.
#[allow(clippy::too_many_arguments)]
fn attend_cached(
    llama: &Llama<'_>,
    exec: Exec<'_>,
    cache: (KvSliceMut<'_>, usize, usize),
    (blk, t): (usize, usize),
    [q, k, v]: [&[f32]; 3],
    out: &mut [f32],
    bufs: [&mut [f32]; 2],
) -> Result<()> {
    let past = cache.2;
    let [keys, values] = write_cached(llama, cache, blk, [k, v])?;
    attend(exec, llama.shape(), q, keys, values, [t, past], out, bufs)
}

/// Writes new positions' keys and values (`[k, v]`, whole rows of the key/value width) into
/// block `blk` of a sequence's cache (`kv` of `context` positions, `past` filled) and
/// returns that block's filled keys and values, the new positions included.
fn write_cached<'k>(
    llama: &Llama<'_>,
    (kv, context, past): (KvSliceMut<'k>, usize, usize),
    blk: usize,
    [k, v]: [&[f32]; 2],
) -> Result<[KvSlice<'k>; 2]> {
    let kvw = llama.config.kv_width();
    let short = Error::BufferTooSmall {
        needed: llama.kv_len(context),
        got: kv.len(),
    };
    let (mut kc, mut vc) = kv
        .range(2 * blk * context * kvw, 2 * context * kvw)
        .and_then(|cache| cache.split_at(context * kvw))
        .ok_or(short)?;
    kc.write(past * kvw, k)?;
    vc.write(past * kvw, v)?;
    let filled = past * kvw + k.len();
    let got = kc.len();
    match (
        kc.into_slice().range(0, filled),
        vc.into_slice().range(0, filled),
    ) {
        (Some(keys), Some(values)) => Ok([keys, values]),
        _ => Err(Error::BufferTooSmall {
            needed: filled,
            got,
        }),
    }
}

impl<'a> Forward<'a> for Llama<'a> {
    fn input(&self) -> InputKind {
        InputKind::Tokens {
            max: self.config.context,
        }
    }
    fn output_len(&self, _slots: &SlotTable<'a>) -> usize {
        self.config.vocab
    }
    fn is_causal(&self) -> bool {
        true
    }
    /// A one-shot run keeps its cache in the arena.
    fn arena_len(&self, _slots: &SlotTable<'a>, max_tokens: usize, _head_rows: usize) -> usize {
        let t = max_tokens.clamp(1, self.config.context);
        self.step_arena(t).saturating_add(self.kv_len(t))
    }
    fn state_len(&self, context: usize) -> usize {
        self.kv_len(context)
    }
    fn step_arena_len(&self, max_tokens: usize) -> usize {
        self.step_arena(max_tokens.clamp(1, self.config.context))
    }
    fn step(
        &self,
        lin: &Linears<'_, 'a>,
        tokens: &[u32],
        kv: KvSliceMut<'_>,
        context: usize,
        past: usize,
        rows: Logits,
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize> {
        self.run_step(lin, tokens, kv, context, past, rows, output, arena)
    }

    /// The logits of the token after `ids`, from a fresh cache kept in the arena.
    fn forward(
        &self,
        lin: &Linears<'_, 'a>,
        input: Input<'_>,
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize> {
        let ids = match input {
            Input::Tokens(ids) if !ids.is_empty() => ids,
            _ => return Err(Error::BadInput),
        };
        let t = ids.len();
        if t > self.config.context {
            return Err(Error::ContextExceeded {
                needed: t,
                context: self.config.context,
            });
        }
        let kv_len = self.kv_len(t);
        if arena.len() < kv_len {
            return Err(Error::BufferTooSmall {
                needed: kv_len.saturating_add(self.step_arena(t)),
                got: arena.len(),
            });
        }
        let (kv, rest) = arena.split_at_mut(kv_len);
        self.run_step(
            lin,
            ids,
            KvSliceMut::F32(kv),
            t,
            0,
            Logits::Last,
            output,
            rest,
        )
    }
}

#[cfg(all(test, feature = "parallel"))]
mod tests {
    use super::balanced_rows;
    use crate::par::MAX_PARTS;

    #[test]
    fn attention_rows_split_into_nonempty_runs_of_about_equal_work() {
        for (t, past) in [
            (8usize, 0usize),
            (9, 3),
            (128, 0),
            (127, 500),
            (1000, 7),
            (33, 0),
        ] {
            for parts in [1usize, 2, 3, 7, 64, 200] {
                let mut s = [0usize; MAX_PARTS + 1];
                let n = balanced_rows(t, past, parts, &mut s);
                assert!(n >= 1 && n <= parts.min(t), "t {t} parts {parts}: {n}");
                assert_eq!((s[0], s[n]), (0, t));
                let cost = |a: usize, b: usize| (a..b).map(|i| past + i + 1).sum::<usize>();
                let total = cost(0, t);
                for k in 0..n {
                    assert!(s[k] < s[k + 1], "empty run {k} for t {t} parts {parts}");
                    // each run within one row's work of its share
                    assert!(
                        cost(s[k], s[k + 1]) <= total / n + past + t + 1,
                        "t {t} parts {parts}"
                    );
                }
            }
        }
    }
}
