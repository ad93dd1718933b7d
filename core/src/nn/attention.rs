//! Scaled dot-product attention: bidirectional over a whole input (BERT), and causal
//! with grouped key/value heads over a cache of past positions (llama).

use super::activation::fast_exp;
use crate::math::gemm;
#[cfg(feature = "bert")]
use crate::math::gemm::{matmul, pack_transposed, Product, RowsRef};
use crate::{Error, Result};

/// Multi-head self-attention over `t` tokens without masking (every token is real):
/// `ctx = softmax(q k^T / sqrt(d)) v` per head, as two dense products per head on the
/// `gemm` kernels. `kt` needs `t · hidden` values (`k` transposed, so each head's `k^T`
/// is a strided operand) and `scores` `t · t` (one head's attention matrix at a time).
///
/// # Errors
/// [`Error::BufferTooSmall`] for short buffers.
#[cfg(feature = "bert")]
pub fn attention(
    [q, k, v]: [&[f32]; 3],
    t: usize,
    hidden: usize,
    heads: usize,
    ctx: &mut [f32],
    kt: &mut [f32],
    scores: &mut [f32],
) -> Result<()> {
    let need = t * hidden;
    if k.len() < need || kt.len() < need || scores.len() < t * t {
        return Err(Error::BufferTooSmall {
            needed: need.max(t * t),
            got: kt.len().min(scores.len()),
        });
    }
    pack_transposed(RowsRef::F32(&k[..need]), t, hidden, kt, t)?;
    attention_rows(q, kt, v, t, hidden, heads, 0, t, ctx, scores)
}

/// Query rows `r0 .. r1` of [`attention`] after `k` was packed transposed into `kt`
/// (`hidden × t`): writes `ctx` rows `r0 .. r1` into `ctx_rows` (`(r1 - r0) × hidden`),
/// with `scores` holding `(r1 - r0) · t` values. Each output is computed as by the whole
/// attention, so rows can be split across threads.
///
/// # Errors
/// [`Error::BufferTooSmall`] for short buffers.
#[cfg(feature = "bert")]
#[allow(clippy::too_many_arguments)]
pub fn attention_rows(
    q: &[f32],
    kt: &[f32],
    v: &[f32],
    t: usize,
    hidden: usize,
    heads: usize,
    r0: usize,
    r1: usize,
    ctx_rows: &mut [f32],
    scores: &mut [f32],
) -> Result<()> {
    let d = hidden / heads;
    let m = r1.saturating_sub(r0);
    if scores.len() < m * t || ctx_rows.len() < m * hidden || q.len() < r1 * hidden {
        return Err(Error::BufferTooSmall {
            needed: m * t,
            got: scores.len(),
        });
    }
    let scores = &mut scores[..m * t];
    let q = &q[r0 * hidden..];
    let shape = HeadShape { t, hidden, heads };
    for h in 0..heads {
        head_scores(shape, h, q, m, kt, scores)?;
        let off = h * d;
        head_context(
            shape,
            h,
            scores,
            m,
            v,
            ctx_rows.get_mut(off..).unwrap_or(&mut []),
            hidden,
        )?;
    }
    Ok(())
}

/// The shape of a bidirectional attention: `t` tokens, `hidden` features, `heads` heads
/// of `hidden / heads` features each.
#[cfg(feature = "bert")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadShape {
    pub(crate) t: usize,
    pub(crate) hidden: usize,
    pub(crate) heads: usize,
}

/// Head `h`'s attention weights for the `m` query rows `q` (rows `hidden` apart):
/// `softmax(q_h k_h^T / sqrt(d))` into `probs` (`m × t`), `kt` being `k` packed
/// transposed (`hidden × t`). [`attention_rows`] runs it per head, and so may any split
/// of the heads or rows: every weight is computed the same way.
///
/// # Errors
/// [`Error::BufferTooSmall`] for short operands.
#[cfg(feature = "bert")]
pub(crate) fn head_scores(
    HeadShape { t, hidden, heads }: HeadShape,
    h: usize,
    q: &[f32],
    m: usize,
    kt: &[f32],
    probs: &mut [f32],
) -> Result<()> {
    let d = hidden / heads.max(1);
    let off = h * d;
    let qk = Product {
        m,
        n: t,
        k: d,
        a_stride: hidden,
        b_stride: t,
        c_stride: t,
        accumulate: false,
    };
    let got = probs.len();
    let probs = probs
        .get_mut(..m * t)
        .ok_or(Error::BufferTooSmall { needed: m * t, got })?;
    matmul(
        &qk,
        q.get(off..).unwrap_or(&[]),
        kt.get(off * t..).unwrap_or(&[]),
        probs,
    )?;
    let scale = 1.0 / libm::sqrtf(d as f32);
    for row in probs.chunks_exact_mut(t) {
        softmax(row, scale);
    }
    Ok(())
}

/// Head `h`'s context for `m` query rows: `probs · v_h` (`probs` `m × t` from
/// [`head_scores`], `v` rows `hidden` apart) into `out`, rows `stride` apart. Each value
/// is one sum over the tokens in order, whatever `m` or `stride`.
///
/// # Errors
/// [`Error::BufferTooSmall`] for short operands.
#[cfg(feature = "bert")]
pub(crate) fn head_context(
    HeadShape { t, hidden, heads }: HeadShape,
    h: usize,
    probs: &[f32],
    m: usize,
    v: &[f32],
    out: &mut [f32],
    stride: usize,
) -> Result<()> {
    let d = hidden / heads.max(1);
    let pv = Product {
        m,
        n: d,
        k: t,
        a_stride: t,
        b_stride: hidden,
        c_stride: stride,
        accumulate: false,
    };
    matmul(&pv, probs, v.get(h * d..).unwrap_or(&[]), out)
}

/// How a key/value cache keeps its values: `f32` (exact), or IEEE half precision (half
/// the memory, as llama.cpp keeps its cache by default; each key and value rounded to the
/// nearest half when it is written, widened exactly when it is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    /// 4 bytes a value.
    #[default]
    F32,
    /// 2 bytes a value.
    F16,
}

impl KvType {
    /// Bytes of one cached value.
    pub fn bytes(self) -> usize {
        match self {
            KvType::F32 => 4,
            KvType::F16 => 2,
        }
    }
    /// The type's name: `f32` or `f16`.
    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
        }
    }
}

/// Cached keys or values as they are kept ([`KvType`]): `f32`s, or half-precision bits.
#[derive(Debug, Clone, Copy)]
pub enum KvSlice<'c> {
    /// `f32` values.
    F32(&'c [f32]),
    /// IEEE half-precision bits.
    F16(&'c [u16]),
}

impl<'c> KvSlice<'c> {
    /// Values held.
    pub fn len(&self) -> usize {
        match self {
            KvSlice::F32(s) => s.len(),
            KvSlice::F16(s) => s.len(),
        }
    }
    /// True when no value is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The values `start .. start + len`, or `None` past the end.
    pub fn range(self, start: usize, len: usize) -> Option<KvSlice<'c>> {
        let end = start.checked_add(len)?;
        Some(match self {
            KvSlice::F32(s) => KvSlice::F32(s.get(start..end)?),
            KvSlice::F16(s) => KvSlice::F16(s.get(start..end)?),
        })
    }
    /// The values from `start` on (empty past the end).
    fn tail(self, start: usize) -> KvSlice<'c> {
        match self {
            KvSlice::F32(s) => KvSlice::F32(s.get(start..).unwrap_or(&[])),
            KvSlice::F16(s) => KvSlice::F16(s.get(start..).unwrap_or(&[])),
        }
    }
}

/// A writable key/value cache ([`KvSlice`]'s owner-side twin).
#[derive(Debug)]
pub enum KvSliceMut<'c> {
    /// `f32` values.
    F32(&'c mut [f32]),
    /// IEEE half-precision bits.
    F16(&'c mut [u16]),
}

impl<'c> KvSliceMut<'c> {
    /// Values held.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }
    /// True when no value is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// How the values are kept.
    pub fn kv_type(&self) -> KvType {
        match self {
            KvSliceMut::F32(_) => KvType::F32,
            KvSliceMut::F16(_) => KvType::F16,
        }
    }
    /// The values, read-only.
    pub fn as_slice(&self) -> KvSlice<'_> {
        match self {
            KvSliceMut::F32(s) => KvSlice::F32(s),
            KvSliceMut::F16(s) => KvSlice::F16(s),
        }
    }
    /// The values, read-only, for as long as this view's borrow lasts.
    pub fn into_slice(self) -> KvSlice<'c> {
        match self {
            KvSliceMut::F32(s) => KvSlice::F32(s),
            KvSliceMut::F16(s) => KvSlice::F16(s),
        }
    }
    /// A shorter-lived view of the same values.
    pub fn reborrow(&mut self) -> KvSliceMut<'_> {
        match self {
            KvSliceMut::F32(s) => KvSliceMut::F32(s),
            KvSliceMut::F16(s) => KvSliceMut::F16(s),
        }
    }
    /// The values `start .. start + len`, or `None` past the end.
    pub fn range(self, start: usize, len: usize) -> Option<KvSliceMut<'c>> {
        let end = start.checked_add(len)?;
        Some(match self {
            KvSliceMut::F32(s) => KvSliceMut::F32(s.get_mut(start..end)?),
            KvSliceMut::F16(s) => KvSliceMut::F16(s.get_mut(start..end)?),
        })
    }
    /// The first `mid` values and the rest, or `None` when fewer than `mid` are held.
    pub fn split_at(self, mid: usize) -> Option<(KvSliceMut<'c>, KvSliceMut<'c>)> {
        Some(match self {
            KvSliceMut::F32(s) => {
                let (a, b) = s.split_at_mut_checked(mid)?;
                (KvSliceMut::F32(a), KvSliceMut::F32(b))
            }
            KvSliceMut::F16(s) => {
                let (a, b) = s.split_at_mut_checked(mid)?;
                (KvSliceMut::F16(a), KvSliceMut::F16(b))
            }
        })
    }
    /// Stores `src` at `at ..` (each value rounded to the nearest half in an `F16` cache).
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] when `src` does not fit from `at` on (nothing written).
    pub fn write(&mut self, at: usize, src: &[f32]) -> Result<()> {
        let room = Error::BufferTooSmall {
            needed: at.saturating_add(src.len()),
            got: self.len(),
        };
        let end = at.checked_add(src.len()).ok_or(room)?;
        match self {
            KvSliceMut::F32(s) => s.get_mut(at..end).ok_or(room)?.copy_from_slice(src),
            KvSliceMut::F16(s) => {
                for (d, &x) in s.get_mut(at..end).ok_or(room)?.iter_mut().zip(src) {
                    *d = crate::quant::f32_to_f16(x);
                }
            }
        }
        Ok(())
    }
}

/// Shape of a causal attention with grouped key/value heads: `heads` query heads of
/// width `head_dim` share `kv_heads` key/value heads (`heads % kv_heads == 0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CausalShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl CausalShape {
    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.heads / self.kv_heads.max(1)
    }
}

/// Causal attention of `t` new tokens at positions `past .. past + t` over a cache that
/// already holds their keys and values at rows `0 .. past + t` (`keys`, `values`:
/// `(positions, kv_heads · head_dim)` row-major, `f32` or half). Token `i` attends to
/// positions `0 ..= past + i`. `q` is `(t, heads · head_dim)`, `out` the same shape;
/// `scores` needs `group · (past + t)` values (`group` =
/// [`CausalShape::group`]): the query heads that share a key/value head are scored
/// together, so each cached key and value is read once for all of them.
///
/// (A decoding step over a long cache can instead be cut into blocks of positions that
/// threads share: [`key_block_attention`].)
///
/// # Errors
/// [`Error::BufferTooSmall`] / [`Error::LengthMismatch`] for short buffers.
#[allow(clippy::too_many_arguments)]
pub fn causal_attention(
    shape: CausalShape,
    q: &[f32],
    keys: KvSlice<'_>,
    values: KvSlice<'_>,
    t: usize,
    past: usize,
    out: &mut [f32],
    scores: &mut [f32],
) -> Result<()> {
    let qw = shape.heads * shape.head_dim;
    if q.len() < t * qw || out.len() < t * qw {
        return Err(Error::LengthMismatch {
            expected: t * qw,
            found: q.len().min(out.len()),
        });
    }
    if t == 0 {
        return Ok(());
    }
    // The last row reads the most: if its keys, values and scores fit, every row's do.
    let group = check_cache(shape, keys, values, past + t, past + t, scores.len())?;
    let gw = group * shape.head_dim;
    let rows = q.chunks_exact(qw).zip(out.chunks_exact_mut(qw)).take(t);
    for (i, (q_row, o_row)) in rows.enumerate() {
        let seen = past + i + 1;
        for (h, (qs, oh)) in q_row
            .chunks_exact(gw)
            .zip(o_row.chunks_exact_mut(gw))
            .enumerate()
        {
            let sc = &mut scores[..group * seen];
            attend_group(shape, qs, keys, values, h, 0..seen, sc, oh, &mut []);
        }
    }
    Ok(())
}

/// The query heads of key/value head `h` (`qs`: `group · head_dim` values) over the cached
/// positions `positions`: their scores in `sc` (`group · positions.len()` values), each
/// row softmaxed, and each head's probability-weighted sum of the values in `oh`
/// (`group · head_dim`); `stats[r]`, where given, receives head `r`'s largest score and
/// sum of exponentials (the softmax's own). The caller checked every length.
#[allow(clippy::too_many_arguments)]
fn attend_group(
    shape: CausalShape,
    qs: &[f32],
    keys: KvSlice<'_>,
    values: KvSlice<'_>,
    h: usize,
    positions: core::ops::Range<usize>,
    sc: &mut [f32],
    oh: &mut [f32],
    stats: &mut [[f32; 2]],
) {
    let (d, kvw) = (shape.head_dim, shape.kv_heads * shape.head_dim);
    let n = positions.len();
    let at = positions.start * kvw + h * d;
    let (ks, vs) = (keys.tail(at), values.tail(at));
    if !gemm::key_dots_wide(qs, d, ks, kvw, sc) {
        for (qh, row) in qs.chunks_exact(d).zip(sc.chunks_exact_mut(n)) {
            match ks {
                KvSlice::F32(k) => key_dots(qh, k, kvw, row),
                KvSlice::F16(k) => key_dots(qh, k, kvw, row),
            }
        }
    }
    let scale = 1.0 / libm::sqrtf(d as f32);
    for (r, row) in sc.chunks_exact_mut(n).enumerate() {
        let st = softmax_stats(row, scale);
        if let Some(x) = stats.get_mut(r) {
            *x = st;
        }
    }
    if !gemm::value_sum_wide(sc, d, vs, kvw, oh) {
        for (p, o) in sc.chunks_exact(n).zip(oh.chunks_exact_mut(d)) {
            match vs {
                KvSlice::F32(v) => value_sum(p, v, kvw, o),
                KvSlice::F16(v) => value_sum(p, v, kvw, o),
            }
        }
    }
}

/// Positions in one block of [`key_block_attention`]: a decoding step's cache is cut into
/// blocks of this many positions (the last one shorter), whatever the thread count.
pub const KEY_BLOCK: usize = 64;

/// Most query heads per key/value head that [`key_block_attention`] takes (a larger group
/// is refused).
pub const MAX_GROUP: usize = 64;

/// Units of [`key_block_attention`] for a row that attends to `seen` positions: one per
/// block of [`KEY_BLOCK`] positions and key/value head, unit `u` being block
/// `u / kv_heads` of key/value head `u % kv_heads`.
pub fn key_block_units(shape: CausalShape, seen: usize) -> usize {
    seen.div_ceil(KEY_BLOCK).saturating_mul(shape.kv_heads)
}

/// Values one unit of [`key_block_attention`] writes: the outputs of its group of query
/// heads, then each head's largest score, then each head's sum of exponentials.
pub fn key_block_width(shape: CausalShape) -> usize {
    shape.group() * (shape.head_dim + 2)
}

/// One decoding row's attention (the token at position `seen - 1`, attending to positions
/// `0 .. seen`) cut into units that can run apart: the units `units` (of
/// [`key_block_units`]) computed into `partials` ([`key_block_width`] values each, the
/// range's first unit first), to be combined by [`merge_key_blocks`]. Each unit is the
/// softmax attention of one key/value head's query heads over one block of positions, by
/// the code [`causal_attention`] runs over all of them; `scores` needs
/// `group · min(seen, KEY_BLOCK)` values. A unit's values depend only on its own block, so
/// the units can be shared among threads in any way with the same results, where
/// [`causal_attention`]'s row can only be split by heads (SmolLM2 has three).
///
/// ```
/// use riffle_core::nn::attention::{
///     causal_attention, key_block_attention, key_block_units, key_block_width,
///     merge_key_blocks, CausalShape, KvSlice,
/// };
/// let shape = CausalShape { heads: 4, kv_heads: 2, head_dim: 8 };
/// let seen = 300; // five blocks of 64 positions, two key/value heads: ten units
/// let keys: Vec<f32> = (0..seen * 16).map(|i| (i % 7) as f32 / 7.0).collect();
/// let values: Vec<f32> = (0..seen * 16).map(|i| (i % 5) as f32 / 5.0).collect();
/// let (k, v) = (KvSlice::F32(&keys), KvSlice::F32(&values));
/// let q = [0.1f32; 32];
/// let units = key_block_units(shape, seen);
/// let mut partials = vec![0.0; units * key_block_width(shape)];
/// let mut scores = vec![0.0; 2 * 64]; // a group of two over one block
/// // Two "threads": units 0..4 and 4..10, into their own slices.
/// let (a, b) = partials.split_at_mut(4 * key_block_width(shape));
/// key_block_attention(shape, &q, k, v, seen, 0..4, a, &mut scores)?;
/// key_block_attention(shape, &q, k, v, seen, 4..units, b, &mut scores)?;
/// let mut out = [0.0f32; 32];
/// merge_key_blocks(shape, seen, &partials, &mut out)?;
/// // The row in one pass, to rounding.
/// let mut whole = [0.0f32; 32];
/// causal_attention(shape, &q, k, v, 1, seen - 1, &mut whole, &mut vec![0.0; 2 * seen])?;
/// assert!(out.iter().zip(&whole).all(|(a, b)| (a - b).abs() < 1e-5));
/// # Ok::<(), riffle_core::Error>(())
/// ```
///
/// # Errors
/// [`Error::BufferTooSmall`] / [`Error::LengthMismatch`] for short buffers or units past
/// the row's; [`Error::BadInput`] for a group of more than [`MAX_GROUP`] heads.
#[allow(clippy::too_many_arguments)]
pub fn key_block_attention(
    shape: CausalShape,
    q_row: &[f32],
    keys: KvSlice<'_>,
    values: KvSlice<'_>,
    seen: usize,
    units: core::ops::Range<usize>,
    partials: &mut [f32],
    scores: &mut [f32],
) -> Result<()> {
    let scored = seen.min(KEY_BLOCK);
    let group = check_cache(shape, keys, values, seen, scored, scores.len())?;
    check_key_blocks(shape, seen, q_row.len(), units.end)?;
    let width = key_block_width(shape);
    let gw = group * shape.head_dim;
    if units.start > units.end || partials.len() < units.len() * width {
        return Err(Error::BufferTooSmall {
            needed: units.len() * width,
            got: partials.len(),
        });
    }
    for (u, part) in units.zip(partials.chunks_exact_mut(width)) {
        let (b, h) = (u / shape.kv_heads, u % shape.kv_heads);
        let positions = b * KEY_BLOCK..seen.min((b + 1) * KEY_BLOCK);
        let sc = &mut scores[..group * positions.len()];
        let (oh, st) = part.split_at_mut(gw);
        let mut stats = [[0.0f32; 2]; MAX_GROUP];
        let qs = &q_row[h * gw..][..gw];
        attend_group(shape, qs, keys, values, h, positions, sc, oh, &mut stats);
        let (top, sum) = st.split_at_mut(group);
        for ((t, s), [m, l]) in top.iter_mut().zip(sum.iter_mut()).zip(stats) {
            (*t, *s) = (m, l);
        }
    }
    Ok(())
}

/// The checks [`key_block_attention`] and [`merge_key_blocks`] share: [`check_shape`], a
/// group the units can hold, a query row of every head, and units within the row's.
fn check_key_blocks(shape: CausalShape, seen: usize, q_len: usize, end: usize) -> Result<()> {
    if check_shape(shape)? > MAX_GROUP {
        return Err(Error::BadInput);
    }
    let qw = shape.heads * shape.head_dim;
    if q_len < qw {
        return Err(Error::LengthMismatch {
            expected: qw,
            found: q_len,
        });
    }
    let units = key_block_units(shape, seen);
    if end > units {
        return Err(Error::LengthMismatch {
            expected: units,
            found: end,
        });
    }
    Ok(())
}

/// Combines every unit of a row's [`key_block_attention`] (`partials`: all
/// [`key_block_units`] of them, in order) into the row's outputs (`out`:
/// `heads · head_dim` values): each block's outputs weighted by its share of the row's
/// exponentials, blocks in order, so the result does not depend on who computed which
/// unit. It equals [`causal_attention`]'s row to rounding (the softmax's sum is taken per
/// block and combined).
///
/// # Errors
/// [`Error::BufferTooSmall`] / [`Error::LengthMismatch`] for short buffers or heads that
/// do not group evenly; [`Error::BadInput`] for no positions, heads of no width or a group
/// of more than [`MAX_GROUP`] heads.
pub fn merge_key_blocks(
    shape: CausalShape,
    seen: usize,
    partials: &[f32],
    out: &mut [f32],
) -> Result<()> {
    if seen == 0 {
        return Err(Error::BadInput);
    }
    check_key_blocks(shape, seen, out.len(), 0)?;
    let units = key_block_units(shape, seen);
    let width = key_block_width(shape);
    if partials.len() < units * width {
        return Err(Error::BufferTooSmall {
            needed: units * width,
            got: partials.len(),
        });
    }
    let (d, group) = (shape.head_dim, shape.group());
    let scale = 1.0 / libm::sqrtf(d as f32);
    let blocks = seen.div_ceil(KEY_BLOCK);
    for (r, o) in out.chunks_exact_mut(d).take(shape.heads).enumerate() {
        let (h, g) = (r / group, r % group);
        let unit = |b: usize| &partials[(b * shape.kv_heads + h) * width..][..width];
        let top = (0..blocks).fold(f32::NEG_INFINITY, |m, b| m.max(unit(b)[group * d + g]));
        o.fill(0.0);
        let mut total = 0.0f32;
        for b in 0..blocks {
            let u = unit(b);
            let w = u[group * d + group + g] * fast_exp((u[group * d + g] - top) * scale);
            total += w;
            for (x, &y) in o.iter_mut().zip(&u[g * d..][..d]) {
                *x += w * y;
            }
        }
        let inv = 1.0 / total;
        o.iter_mut().for_each(|x| *x *= inv);
    }
    Ok(())
}

/// Checks that `shape` has heads, groups them evenly and gives them some width; returns the
/// group (query heads per key/value head).
fn check_shape(shape: CausalShape) -> Result<usize> {
    let CausalShape {
        heads,
        kv_heads,
        head_dim,
    } = shape;
    if kv_heads == 0 || heads == 0 || heads % kv_heads != 0 {
        return Err(Error::LengthMismatch {
            expected: heads,
            found: kv_heads,
        });
    }
    if head_dim == 0 {
        // Heads of no width.
        return Err(Error::BadInput);
    }
    Ok(heads / kv_heads)
}

/// [`check_shape`], then that `keys` and `values` hold what a row attending to `seen > 0`
/// positions reads, and that `scores` (`scores_len` values) holds a group's scores over
/// `scored` positions at once; returns the group.
fn check_cache(
    shape: CausalShape,
    keys: KvSlice<'_>,
    values: KvSlice<'_>,
    seen: usize,
    scored: usize,
    scores_len: usize,
) -> Result<usize> {
    let group = check_shape(shape)?;
    if seen == 0 {
        // Nothing to attend to.
        return Err(Error::BadInput);
    }
    let need = seen.saturating_mul(shape.kv_heads * shape.head_dim);
    if keys.len() < need || values.len() < need {
        return Err(Error::LengthMismatch {
            expected: need,
            found: keys.len().min(values.len()),
        });
    }
    if scores_len < group.saturating_mul(scored) {
        return Err(Error::BufferTooSmall {
            needed: group.saturating_mul(scored),
            got: scores_len,
        });
    }
    Ok(group)
}

/// A cached value widened to `f32` (the portable loops' read of either [`KvType`]).
trait Cached: Copy {
    fn widen(self) -> f32;
}

impl Cached for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl Cached for u16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        crate::quant::f16_to_f32(self)
    }
}

/// `scores[j] = q · keys[j · stride ..][..q.len()]`, keys four at a time (four
/// independent sums share the loads of `q`); the caller checked the lengths.
fn key_dots<E: Cached>(q: &[f32], keys: &[E], stride: usize, scores: &mut [f32]) {
    let d = q.len();
    let seen = scores.len();
    let mut fours = scores.chunks_exact_mut(4);
    for (c, s4) in (&mut fours).enumerate() {
        let ks: [&[E]; 4] = core::array::from_fn(|u| &keys[(4 * c + u) * stride..][..d]);
        s4.copy_from_slice(&dots(q, ks));
    }
    let done = seen - fours.into_remainder().len();
    for (j, s) in scores.iter_mut().enumerate().skip(done) {
        let k = &keys[j * stride..][..d];
        [*s] = dots(q, [k]);
    }
}

/// `out = Σ_j p[j] · values[j · stride ..][..out.len()]`, values four at a time (one pass
/// over the output per four rows); the caller checked the lengths.
fn value_sum<E: Cached>(p: &[f32], values: &[E], stride: usize, out: &mut [f32]) {
    let d = out.len();
    out.fill(0.0);
    let mut fours = p.chunks_exact(4);
    for (c, p4) in (&mut fours).enumerate() {
        let vr: [&[E]; 4] = core::array::from_fn(|u| &values[(4 * c + u) * stride..][..d]);
        for ((((o, a), b), e), f) in out.iter_mut().zip(vr[0]).zip(vr[1]).zip(vr[2]).zip(vr[3]) {
            *o += (p4[0] * a.widen() + p4[1] * b.widen()) + (p4[2] * e.widen() + p4[3] * f.widen());
        }
    }
    let done = p.len() - fours.remainder().len();
    for (j, &pj) in p.iter().enumerate().skip(done) {
        for (o, v) in out.iter_mut().zip(&values[j * stride..][..d]) {
            *o += pj * v.widen();
        }
    }
}

/// The dot products of `q` with `K` keys of its length, in eight lanes each (the
/// arithmetic of [`crate::math::dot`] for each key, whatever `K`).
#[inline]
fn dots<E: Cached, const K: usize>(q: &[f32], k: [&[E]; K]) -> [f32; K] {
    let mut acc = [[0f32; 8]; K];
    let (q8, _) = q.as_chunks::<8>();
    for (acc, k) in acc.iter_mut().zip(k) {
        for (x, y) in q8.iter().zip(k.as_chunks::<8>().0) {
            for l in 0..8 {
                acc[l] += x[l] * y[l].widen();
            }
        }
    }
    let whole = q8.len() * 8;
    core::array::from_fn(|u| {
        let a = &acc[u];
        let tail: f32 = q[whole..]
            .iter()
            .zip(&k[u][whole..])
            .map(|(x, y)| x * y.widen())
            .sum();
        ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + tail
    })
}

/// `row = softmax(scale · row)` in place, in three passes that each vectorise (maximum
/// and sum over eight lanes, the exponentials branch-free); on x86-64 CPUs with AVX-512 a
/// kernel with fused multiply-adds and vector reductions (same formula, a few units in
/// the last place apart).
pub fn softmax(row: &mut [f32], scale: f32) {
    softmax_stats(row, scale);
}

/// [`softmax`], returning the row's largest value and the sum of the exponentials it
/// divided by.
fn softmax_stats(row: &mut [f32], scale: f32) -> [f32; 2] {
    if let Some(stats) = crate::math::gemm::softmax_wide(row, scale) {
        return stats;
    }
    // 32 independent lanes, so that the maxima do not form one serial chain (the maximum
    // does not depend on the order it is taken in).
    let mut lanes = [f32::NEG_INFINITY; 32];
    let mut chunks = row.chunks_exact(32);
    for c in &mut chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = m.max(v);
        }
    }
    // Halve the lanes in place (16, 8, 4, 2, 1): each step is one vector maximum, where a
    // fold over the 32 would be 32 dependent scalar ones (half the softmax's time).
    let mut width = lanes.len();
    while width > 1 {
        width /= 2;
        let (low, high) = lanes.split_at_mut(width);
        for (m, &v) in low.iter_mut().zip(high.iter()) {
            *m = m.max(v);
        }
    }
    let max = chunks.remainder().iter().fold(lanes[0], |m, &v| m.max(v));
    for s in row.iter_mut() {
        *s = fast_exp((*s - max) * scale);
    }
    let total = crate::math::sum(row);
    let inv = 1.0 / total;
    row.iter_mut().for_each(|s| *s *= inv);
    [max, total]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failure is a panic with its location
pub(crate) mod tests {
    extern crate std;
    #[cfg(feature = "bert")]
    use super::attention;
    use super::{causal_attention, softmax, CausalShape};
    use std::vec;
    use std::vec::Vec;

    /// `n` pseudo-random values in `[-1, 1)` from `seed` (shared by the kernels' tests).
    pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// softmax(q k^T / sqrt(d)) v for one head over keys `0..=last`, in f64.
    fn reference(q: &[f32], ks: &[&[f32]], vs: &[&[f32]]) -> Vec<f64> {
        let d = q.len();
        let s: Vec<f64> = ks
            .iter()
            .map(|k| {
                q.iter()
                    .zip(*k)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum::<f64>()
                    / (d as f64).sqrt()
            })
            .collect();
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
        let z: f64 = e.iter().sum();
        let mut out = vec![0.0f64; d];
        for (p, v) in e.iter().zip(vs) {
            for (o, x) in out.iter_mut().zip(*v) {
                *o += p / z * f64::from(*x);
            }
        }
        out
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut r = values(13, 3);
        softmax(&mut r, 0.7);
        let s: f32 = r.iter().sum();
        assert!((s - 1.0).abs() < 1e-6);
    }

    #[cfg(feature = "bert")]
    #[test]
    fn bidirectional_attention_matches_reference() {
        let (t, heads, d) = (5, 3, 4);
        let h = heads * d;
        let (q, k, v) = (values(t * h, 1), values(t * h, 2), values(t * h, 3));
        let mut ctx = vec![0.0f32; t * h];
        let (mut kt, mut scores) = (vec![0.0f32; t * h], vec![0.0f32; t * t]);
        attention([&q, &k, &v], t, h, heads, &mut ctx, &mut kt, &mut scores).unwrap();
        for i in 0..t {
            for hd in 0..heads {
                let ks: Vec<&[f32]> = (0..t).map(|j| &k[j * h + hd * d..][..d]).collect();
                let vs: Vec<&[f32]> = (0..t).map(|j| &v[j * h + hd * d..][..d]).collect();
                let want = reference(&q[i * h + hd * d..][..d], &ks, &vs);
                for (a, b) in ctx[i * h + hd * d..][..d].iter().zip(want) {
                    assert!((f64::from(*a) - b).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn causal_grouped_attention_matches_reference_and_prefill_equals_steps() {
        use super::{KvSlice, KvType};
        use crate::quant::{f16_to_f32, f32_to_f16};
        // Head sizes the SIMD kernels take (16, 64) and one only the portable loops do (4);
        // groups of 3 (two key/value heads) and of 5 (one pass of 3 and one of 2).
        for (heads, kv_heads, d) in [(6, 2, 4), (6, 2, 16), (6, 2, 64), (5, 1, 16)] {
            let shape = CausalShape {
                heads,
                kv_heads,
                head_dim: d,
            };
            let (qw, kvw, group) = (heads * d, kv_heads * d, heads / kv_heads);
            let (past, t) = (3, 6);
            let len = past + t;
            let q = values(t * qw, 5);
            let (kc, vc) = (values(len * kvw, 6), values(len * kvw, 7));
            let half = |x: &[f32]| x.iter().map(|&v| f32_to_f16(v)).collect::<Vec<u16>>();
            let (kh, vh) = (half(&kc), half(&vc));
            let widen = |x: &[u16]| x.iter().map(|&v| f16_to_f32(v)).collect::<Vec<f32>>();
            let (kw, vw) = (widen(&kh), widen(&vh));
            for kind in [KvType::F32, KvType::F16] {
                let (keys, vals, kref, vref) = match kind {
                    KvType::F32 => (KvSlice::F32(&kc), KvSlice::F32(&vc), &kc, &vc),
                    KvType::F16 => (KvSlice::F16(&kh), KvSlice::F16(&vh), &kw, &vw),
                };
                let mut out = vec![0.0f32; t * qw];
                let mut scores = vec![0.0f32; group * len];
                causal_attention(shape, &q, keys, vals, t, past, &mut out, &mut scores).unwrap();
                for i in 0..t {
                    for h in 0..heads {
                        let g = h / group;
                        let ks: Vec<&[f32]> = (0..=past + i)
                            .map(|j| &kref[j * kvw + g * d..][..d])
                            .collect();
                        let vs: Vec<&[f32]> = (0..=past + i)
                            .map(|j| &vref[j * kvw + g * d..][..d])
                            .collect();
                        let want = reference(&q[i * qw + h * d..][..d], &ks, &vs);
                        for (a, b) in out[i * qw + h * d..][..d].iter().zip(want) {
                            assert!(
                                (f64::from(*a) - b).abs() < 1e-5,
                                "{kind:?} d {d} token {i} head {h}"
                            );
                        }
                    }
                    // The same token alone, with the cache cut at its position, gives the
                    // same row.
                    let mut one = vec![0.0f32; qw];
                    let seen = (past + i + 1) * kvw;
                    causal_attention(
                        shape,
                        &q[i * qw..][..qw],
                        keys.range(0, seen).unwrap(),
                        vals.range(0, seen).unwrap(),
                        1,
                        past + i,
                        &mut one,
                        &mut scores,
                    )
                    .unwrap();
                    assert_eq!(one, out[i * qw..][..qw], "{kind:?} d {d} token {i}");
                }
                let bad = CausalShape {
                    kv_heads: 4,
                    ..shape
                };
                assert!(
                    causal_attention(bad, &q, keys, vals, t, past, &mut out, &mut scores).is_err()
                );
                // One head's worth of scores is short for a group of several.
                let mut short = vec![0.0f32; len];
                assert!(
                    causal_attention(shape, &q, keys, vals, t, past, &mut out, &mut short).is_err()
                );
            }
        }
    }

    #[test]
    fn key_blocks_computed_apart_and_merged_equal_the_whole_row() {
        use super::{
            key_block_attention, key_block_units, key_block_width, merge_key_blocks, KvSlice,
            KEY_BLOCK,
        };
        // Head widths the SIMD kernels take (16) and leave to the portable loops (12);
        // groups of two and of one.
        for (heads, kv_heads, d) in [(6, 3, 16), (4, 4, 12)] {
            let shape = CausalShape {
                heads,
                kv_heads,
                head_dim: d,
            };
            let (qw, kvw, group) = (heads * d, kv_heads * d, heads / kv_heads);
            let width = key_block_width(shape);
            assert_eq!(width, group * (d + 2));
            for seen in [1, 5, KEY_BLOCK, KEY_BLOCK + 1, 300] {
                // Scores several times larger than the positions: a large maximum per block.
                let q: Vec<f32> = values(qw, 8).iter().map(|x| 6.0 * x).collect();
                let (kc, vc) = (values(seen * kvw, 9), values(seen * kvw, 10));
                let (kh, vh): (Vec<u16>, Vec<u16>) = (
                    kc.iter().map(|&x| crate::quant::f32_to_f16(x)).collect(),
                    vc.iter().map(|&x| crate::quant::f32_to_f16(x)).collect(),
                );
                let caches = [
                    (KvSlice::F32(&kc), KvSlice::F32(&vc)),
                    (KvSlice::F16(&kh), KvSlice::F16(&vh)),
                ];
                for (keys, vals) in caches {
                    let mut whole = vec![0.0f32; qw];
                    let mut scores = vec![0.0f32; group * seen];
                    causal_attention(shape, &q, keys, vals, 1, seen - 1, &mut whole, &mut scores)
                        .unwrap();
                    let units = key_block_units(shape, seen);
                    assert_eq!(units, seen.div_ceil(KEY_BLOCK) * kv_heads);
                    let mut all = vec![f32::NAN; units * width];
                    let mut sc = vec![0.0f32; group * KEY_BLOCK.min(seen)];
                    key_block_attention(shape, &q, keys, vals, seen, 0..units, &mut all, &mut sc)
                        .unwrap();
                    let mut out = vec![f32::NAN; qw];
                    merge_key_blocks(shape, seen, &all, &mut out).unwrap();
                    for (i, (a, b)) in out.iter().zip(&whole).enumerate() {
                        assert!((a - b).abs() <= 2e-6, "seen {seen} value {i}: {a} vs {b}");
                    }
                    // Any cut of the units gives the same partial results, bit for bit.
                    for cut in 0..=units {
                        let mut parts = vec![f32::NAN; units * width];
                        let (x, y) = parts.split_at_mut(cut * width);
                        key_block_attention(shape, &q, keys, vals, seen, 0..cut, x, &mut sc)
                            .unwrap();
                        key_block_attention(shape, &q, keys, vals, seen, cut..units, y, &mut sc)
                            .unwrap();
                        assert!(
                            parts
                                .iter()
                                .zip(&all)
                                .all(|(a, b)| a.to_bits() == b.to_bits()),
                            "seen {seen} cut {cut}"
                        );
                    }
                    // Refused: units past the row's, short partials, short scores, a
                    // merge of too few units, a short output.
                    let mut part = vec![0.0f32; (units + 1) * width];
                    let mut short = vec![0.0f32; sc.len() - 1];
                    for (units, sc) in [(0..units + 1, &mut sc[..]), (0..units, &mut short[..])] {
                        assert!(key_block_attention(
                            shape, &q, keys, vals, seen, units, &mut part, sc
                        )
                        .is_err());
                    }
                    assert!(key_block_attention(
                        shape,
                        &q,
                        keys,
                        vals,
                        seen,
                        0..units,
                        &mut part[..units * width - 1],
                        &mut sc
                    )
                    .is_err());
                    assert!(
                        merge_key_blocks(shape, seen, &all[..all.len() - 1], &mut out).is_err()
                    );
                    assert!(merge_key_blocks(shape, seen, &all, &mut out[..qw - 1]).is_err());
                    assert!(merge_key_blocks(shape, 0, &all, &mut out).is_err());
                }
            }
        }
        // A group the units cannot hold.
        let wide = CausalShape {
            heads: super::MAX_GROUP + 1,
            kv_heads: 1,
            head_dim: 16,
        };
        let heads = wide.heads;
        let (kc, q) = (values(16, 1), values(heads * 16, 2));
        let keys = KvSlice::F32(&kc);
        let mut part = vec![0.0f32; key_block_width(wide)];
        let mut sc = vec![0.0f32; heads];
        assert!(key_block_attention(wide, &q, keys, keys, 1, 0..1, &mut part, &mut sc).is_err());
        assert!(merge_key_blocks(wide, 1, &part, &mut vec![0.0; heads * 16]).is_err());
        // Heads that do not group evenly (five over two): refused, not read past the units.
        let uneven = CausalShape {
            heads: 5,
            kv_heads: 2,
            head_dim: 16,
        };
        let (kc, q) = (values(2 * 16, 3), values(5 * 16, 4));
        let keys = KvSlice::F32(&kc);
        let mut part = vec![0.0f32; 2 * key_block_width(uneven)];
        let mut sc = vec![0.0f32; 2];
        assert!(key_block_attention(uneven, &q, keys, keys, 1, 0..2, &mut part, &mut sc).is_err());
        assert!(merge_key_blocks(uneven, 1, &part, &mut vec![0.0; 5 * 16]).is_err());
    }

    #[test]
    fn a_half_cache_rounds_what_it_stores_and_refuses_what_does_not_fit() {
        use super::KvSliceMut;
        let mut buf = [0u16; 4];
        let mut kv = KvSliceMut::F16(&mut buf);
        kv.write(1, &[1.0, 1.0 / 3.0, 70000.0]).unwrap();
        assert!(kv.write(2, &[1.0, 2.0, 3.0]).is_err());
        assert_eq!(buf, [0, 0x3c00, 0x3555, 0x7c00]);
        let mut f = [0.0f32; 2];
        let mut kv = KvSliceMut::F32(&mut f);
        assert!(kv.write(usize::MAX, &[1.0]).is_err());
        kv.write(0, &[1.0 / 3.0]).unwrap();
        assert_eq!(f[0], 1.0 / 3.0);
    }
}
