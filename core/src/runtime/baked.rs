//! Ahead-of-time ("baked") models: an `mlp` base and prepared adapters written on the
//! host into one compact blob, and the small reader a minimal firmware runs it with
//! (cargo feature `baked`; docs/firmware.md, "The baked image").
//!
//! The host runs the full, validating runtime: [`Model::from_bytes`] and
//! [`Adapter::prepare`](super::Adapter::prepare) check the GGUF files and compute every
//! Cayley block (gs-math.md section 9's pivoting solve). [`bake`] then writes what the
//! forward pass needs, nothing else. On the device, [`BakedModel::open`] checks the blob's
//! integrity (magic, version, length, CRC-32, every offset, length and dimension) and
//! [`BakedModel::run`] runs it with the runtime's own slot arithmetic (the chain
//! application and dense kernels of the unmerged path), so its outputs are bit-identical
//! to [`Model::run`] with the same prepared adapter. The reader contains no GGUF parser,
//! no Cayley solver and no adapter validation: it trusts the numeric content that the
//! host validated when baking; the CRC and the bounds checks protect its integrity, not
//! its provenance. An adapter uploaded at run time still needs the validating runtime.
//!
//! # Layout (version 1)
//!
//! Every field is a little-endian `u32`; every array is little-endian `f32`, at a byte
//! offset (from the blob's start) that is a multiple of 4, with its length in elements.
//!
//! | words | field |
//! |---|---|
//! | 6 | magic `RFBK`, version 1, total length in bytes, input width, layer count `L`, adapter count `A` |
//! | `7·L` | per layer: rows, cols, activation (0 none, 1 ReLU), weight offset and length (`rows·cols`, row-major), bias offset and length (`rows`, or 0: no bias) |
//! | `12·A·L` | per adapter, per layer: input chain (permutation code, block size, factors, offset, length), output chain (the same), scale (offset, length `rows` or 0) |
//! | | the arrays |
//! | 1 | CRC-32 (as [`crate::checksum::crc32`]) of every byte before it |
//!
//! A chain's permutation code is 0 for no chain, 1 for none (OFT), 2 for GS, 3 for a
//! butterfly; its width is the layer's cols (input side) or rows (output side), its
//! length [`ChainSpec::blocks_len`], its blocks laid out as [`Chain`] stores them.
//! Arrays are numbered in header order for errors (`tensor` fields): weight `2i` and bias
//! `2i + 1` of layer `i`, then `2L + 3(a·L + i) + {0, 1, 2}` for adapter `a`'s input
//! chain, output chain and scale on layer `i`.
//!
//! ```
//! # use riffle_core::runtime::{Adapter, Model, Input};
//! # use riffle_core::runtime::baked::{bake, baked_len, BakedModel};
//! # fn demo(base: &[u8], adapter: &[u8]) -> riffle_core::Result<()> {
//! // Host: validate and prepare with the full runtime, then bake.
//! let model = Model::from_bytes(base)?;
//! let a = Adapter::from_bytes(adapter)?;
//! let mut ws = vec![0.0f32; a.workspace_len(&model)?];
//! let prepared = a.prepare(&model, &mut ws)?;
//! let mut blob = vec![0u8; baked_len(&model, &[&prepared])?];
//! bake(&model, &[&prepared], &mut blob)?;
//! // Device: open, activate slot 0, run.
//! let baked = BakedModel::open(&blob)?;
//! let mut ws2 = vec![0.0f32; baked.workspace_len(0)?];
//! let slot = baked.activate(0, &mut ws2)?;
//! let mut arena = vec![0.0f32; baked.arena_len()];
//! let mut out = [0.0f32; 16];
//! let x = vec![0.5f32; baked.input_len()];
//! let n = baked.run(Some(&slot), &x, &mut out, &mut arena)?;
//! # let _ = n; Ok(()) }
//! ```

use super::arch::mlp::{split_vector_arena, vector_arena_len, Buffers};
use super::linear::{slot_apply, write_output, ONE_THREAD};
use super::weights::{TensorRef, WeightView};
use super::{Architecture, Model, Prepared};
use crate::checksum::crc32;
use crate::error::BAKED_VERSION;
use crate::math::{Chain, ChainSpec, LayerTransform, Permutation, Scalars};
use crate::nn::activation::relu;
use crate::{Error, Result};

/// The first four bytes of a baked blob.
pub const MAGIC: [u8; 4] = *b"RFBK";
/// The layout version [`bake`] writes and [`BakedModel::open`] reads.
pub const VERSION: u32 = BAKED_VERSION;
/// Most adapters one blob may hold.
pub const MAX_BAKED_ADAPTERS: usize = 16;

const HEADER_WORDS: usize = 6;
const LAYER_WORDS: usize = 7;
const ADAPTER_WORDS: usize = 12;
const ACT_NONE: u32 = 0;
const ACT_RELU: u32 = 1;

fn perm_code(p: Permutation) -> u32 {
    match p {
        Permutation::None => 1,
        Permutation::Gs => 2,
        Permutation::Butterfly => 3,
    }
}

fn header_len(layers: usize, adapters: usize) -> usize {
    4 * (HEADER_WORDS + LAYER_WORDS * layers + ADAPTER_WORDS * adapters * layers)
}

/// [`header_len`] of counts read from a blob, `None` past `usize` (then no blob of that
/// length can exist): the blob's length, not a constant, bounds its layers.
fn checked_header_len(layers: usize, adapters: usize) -> Option<usize> {
    let words = ADAPTER_WORDS
        .checked_mul(adapters)?
        .checked_add(LAYER_WORDS)?
        .checked_mul(layers)?
        .checked_add(HEADER_WORDS)?;
    words.checked_mul(4)
}

/// The transform of adapter `p` on slot `i`, refusing what a baked blob cannot hold.
fn baked_transform<'p>(
    model: &Model<'_>,
    p: &'p Prepared<'_, '_>,
    i: usize,
) -> Result<LayerTransform<'p>> {
    if p.head(i).is_some() || p.cls_head().is_some() {
        let tensor = model.slots().get(i).map_or(0, |s| s.weight.index());
        return Err(Error::Unsupported { tensor });
    }
    let t = p.transform(i);
    if matches!(t.scale, Some(s) if !matches!(s, Scalars::F32(_))) {
        return Err(Error::Unsupported { tensor: i as u32 });
    }
    Ok(t)
}

fn transform_len(t: &LayerTransform<'_>) -> usize {
    t.q_in.map_or(0, |q| q.spec().blocks_len())
        + t.q_out.map_or(0, |q| q.spec().blocks_len())
        + t.scale.map_or(0, |s| s.len())
}

fn check_sources(model: &Model<'_>, adapters: &[&Prepared<'_, '_>]) -> Result<()> {
    if model.architecture() != Architecture::Mlp {
        return Err(Error::UnsupportedModel);
    }
    if adapters.len() > MAX_BAKED_ADAPTERS {
        return Err(Error::CapacityExceeded);
    }
    if adapters.iter().any(|p| p.model_id() != model.model_id()) {
        return Err(Error::BaseMismatch);
    }
    Ok(())
}

/// Bytes of the blob that [`bake`] writes for `model` and `adapters`.
///
/// # Errors
/// As [`bake`], except for the output buffer.
pub fn baked_len(model: &Model<'_>, adapters: &[&Prepared<'_, '_>]) -> Result<usize> {
    check_sources(model, adapters)?;
    let slots = model.slots();
    let mut len = header_len(slots.len(), adapters.len()) + 4;
    for s in slots {
        len += 4 * (s.rows * s.cols + s.bias.map_or(0, |_| s.rows));
    }
    for p in adapters {
        for i in 0..slots.len() {
            len += 4 * transform_len(&baked_transform(model, p, i)?);
        }
    }
    Ok(len)
}

/// Writes `model` (an `mlp`) and the prepared `adapters` (its adapter slots, in this
/// order) as one baked blob into `out[..baked_len(model, adapters)]`, and returns its
/// length. Weights and biases are decoded to `f32`; the adapters' Cayley blocks and
/// scales are copied as prepared, so [`BakedModel::run`] reproduces [`Model::run`] bit
/// for bit.
///
/// # Errors
/// [`Error::UnsupportedModel`] for an architecture other than `mlp`;
/// [`Error::BaseMismatch`] for an adapter prepared against another base;
/// [`Error::Unsupported`] for an adapter with a task head (the base tensor's index);
/// [`Error::CapacityExceeded`] past [`MAX_BAKED_ADAPTERS`] adapters or 4 GiB;
/// [`Error::BufferTooSmall`] for a short `out`. Never panics.
pub fn bake(model: &Model<'_>, adapters: &[&Prepared<'_, '_>], out: &mut [u8]) -> Result<usize> {
    let total = baked_len(model, adapters)?;
    if u32::try_from(total).is_err() {
        return Err(Error::CapacityExceeded);
    }
    let got = out.len();
    let out = out
        .get_mut(..total)
        .ok_or(Error::BufferTooSmall { needed: total, got })?;
    let slots = model.slots();
    let mut w = Writer {
        out,
        head: 0,
        data: header_len(slots.len(), adapters.len()),
    };
    for v in [
        u32::from_le_bytes(MAGIC),
        VERSION,
        total as u32,
        model.input_len() as u32,
        slots.len() as u32,
        adapters.len() as u32,
    ] {
        w.word(v);
    }
    let mut row = [0.0f32; 64];
    for (i, s) in slots.iter().enumerate() {
        w.word(s.rows as u32);
        w.word(s.cols as u32);
        w.word(if i + 1 < slots.len() {
            ACT_RELU
        } else {
            ACT_NONE
        });
        let n = s.rows * s.cols;
        w.array_header(n);
        let mut at = 0;
        while at < n {
            let k = (n - at).min(row.len());
            s.weight.decode_f32(at, &mut row[..k])?;
            w.data_f32(&row[..k]);
            at += k;
        }
        match s.bias {
            Some(b) => {
                w.array_header(s.rows);
                let mut at = 0;
                while at < s.rows {
                    let k = (s.rows - at).min(row.len());
                    b.decode_f32(at, &mut row[..k])?;
                    w.data_f32(&row[..k]);
                    at += k;
                }
            }
            None => {
                w.word(0);
                w.word(0);
            }
        }
    }
    for p in adapters {
        for i in 0..slots.len() {
            let t = baked_transform(model, p, i)?;
            for q in [t.q_in, t.q_out] {
                match q {
                    Some(q) => {
                        let spec = q.spec();
                        w.word(perm_code(spec.permutation()));
                        w.word(spec.block_size() as u32);
                        w.word(spec.factors() as u32);
                        let blocks = q.blocks().get(..spec.blocks_len()).unwrap_or(&[]);
                        w.array_header(blocks.len());
                        w.data_f32(blocks);
                    }
                    None => (0..5).for_each(|_| w.word(0)),
                }
            }
            match t.scale {
                Some(Scalars::F32(s)) => {
                    w.array_header(s.len());
                    w.data_f32(s);
                }
                _ => {
                    w.word(0);
                    w.word(0);
                }
            }
        }
    }
    let end = total - 4;
    let crc = crc32(w.out.get(..end).unwrap_or(&[]));
    if w.data != end {
        return Err(Error::LengthMismatch {
            expected: end,
            found: w.data,
        });
    }
    w.data_word(crc);
    Ok(total)
}

/// Two cursors over the blob: the header's and the arrays'.
struct Writer<'o> {
    out: &'o mut [u8],
    head: usize,
    data: usize,
}

impl Writer<'_> {
    fn put(&mut self, at: usize, v: u32) {
        if let Some(b) = self.out.get_mut(at..at + 4) {
            b.copy_from_slice(&v.to_le_bytes());
        }
    }
    fn word(&mut self, v: u32) {
        self.put(self.head, v);
        self.head += 4;
    }
    /// The offset and length of the array about to be written at the data cursor.
    fn array_header(&mut self, len: usize) {
        self.word(self.data as u32);
        self.word(len as u32);
    }
    fn data_word(&mut self, v: u32) {
        self.put(self.data, v);
        self.data += 4;
    }
    fn data_f32(&mut self, vs: &[f32]) {
        for v in vs {
            self.data_word(v.to_bits());
        }
    }
}

/// A baked blob, checked and ready to run. Borrowed, zero-copy: weights and biases are
/// read from the blob's bytes (flash) as the forward pass needs them.
#[derive(Debug, Clone, Copy)]
pub struct BakedModel<'a> {
    bytes: &'a [u8],
    layers: usize,
    adapters: usize,
    input_len: usize,
    output_len: usize,
    act: usize,
    max_cols: usize,
    max_rows: usize,
    crc: u32,
}

/// A header word; the caller checked that the header fits.
fn word(bytes: &[u8], i: usize) -> Result<u32> {
    let b = bytes.get(4 * i..4 * i + 4).ok_or(Error::Truncated {
        offset: 4 * i as u64,
    })?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// An array's bytes after checking its place: 4-aligned, after the header, before the
/// CRC, exactly `want` elements (`want == 0` also allows an absent array, offset 0).
fn array(
    bytes: &[u8],
    data: core::ops::Range<usize>,
    off: u32,
    len: u32,
    want: usize,
    tensor: usize,
) -> Result<&[u8]> {
    let tensor = tensor as u32;
    let (off, len) = (off as usize, len as usize);
    if len != want {
        return Err(Error::ShapeMismatch { tensor });
    }
    if len == 0 {
        return Ok(&[]);
    }
    if off % 4 != 0 {
        return Err(Error::Misaligned { tensor });
    }
    let end = len
        .checked_mul(4)
        .and_then(|n| n.checked_add(off))
        .ok_or(Error::TensorOutOfRange { tensor })?;
    if off < data.start || end > data.end {
        return Err(Error::TensorOutOfRange { tensor });
    }
    bytes
        .get(off..end)
        .ok_or(Error::TensorOutOfRange { tensor })
}

/// A chain record `(code, b, m, off, len)` on a side of width `n`: its spec and bytes.
fn chain_record(
    bytes: &[u8],
    data: core::ops::Range<usize>,
    w: [u32; 5],
    n: usize,
    tensor: usize,
) -> Result<Option<(ChainSpec, &[u8])>> {
    let permutation = match w[0] {
        0 => {
            array(bytes, data, w[3], w[4], 0, tensor)?;
            return Ok(None);
        }
        1 => Permutation::None,
        2 => Permutation::Gs,
        3 => Permutation::Butterfly,
        _ => return Err(Error::UnsupportedModel),
    };
    let spec = ChainSpec::new(n, w[1] as usize, w[2] as usize, permutation)?;
    let a = array(bytes, data, w[3], w[4], spec.blocks_len(), tensor)?;
    Ok(Some((spec, a)))
}

/// One layer's record.
#[derive(Clone, Copy)]
struct Layer<'a> {
    rows: usize,
    cols: usize,
    relu: bool,
    weight: &'a [u8],
    bias: &'a [u8],
}

/// One adapter's record on one layer.
struct Side<'a> {
    q_in: Option<(ChainSpec, &'a [u8])>,
    q_out: Option<(ChainSpec, &'a [u8])>,
    scale: &'a [u8],
}

impl<'a> BakedModel<'a> {
    /// Checks a baked blob: its magic, version, length and CRC-32 first, then every
    /// layer's dimensions and every array's offset and length, and every chain's shape.
    ///
    /// # Errors
    /// [`Error::Truncated`] for bytes shorter than the header or the stated length;
    /// [`Error::BadBakedMagic`]; [`Error::UnsupportedBakedVersion`];
    /// [`Error::LengthMismatch`] for bytes longer than the stated length;
    /// [`Error::LimitExceeded`] for no layer, a header length past `usize` or more than
    /// [`MAX_BAKED_ADAPTERS`] adapters; [`Error::CrcMismatch`]; [`Error::ShapeMismatch`]
    /// for a layer whose input width is not the previous output width, or an array whose
    /// length does not match the dimensions; [`Error::Misaligned`] /
    /// [`Error::TensorOutOfRange`] for an array offset not a multiple of 4 or outside the
    /// data; [`Error::UnsupportedModel`] for an unknown activation or permutation code;
    /// [`ChainSpec::new`]'s errors for an invalid chain. Never panics.
    pub fn open(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() < 4 * HEADER_WORDS {
            return Err(Error::Truncated { offset: 0 });
        }
        if bytes.get(..4) != Some(&MAGIC[..]) {
            return Err(Error::BadBakedMagic);
        }
        let version = word(bytes, 1)?;
        if version != VERSION {
            return Err(Error::UnsupportedBakedVersion(version));
        }
        let total = word(bytes, 2)? as usize;
        if total > bytes.len() {
            return Err(Error::Truncated {
                offset: bytes.len() as u64,
            });
        }
        if total < bytes.len() {
            return Err(Error::LengthMismatch {
                expected: total,
                found: bytes.len(),
            });
        }
        let input_len = word(bytes, 3)? as usize;
        let layers = word(bytes, 4)? as usize;
        let adapters = word(bytes, 5)? as usize;
        if adapters > MAX_BAKED_ADAPTERS {
            return Err(Error::LimitExceeded { offset: 20 });
        }
        let head = checked_header_len(layers, adapters)
            .filter(|_| layers > 0)
            .ok_or(Error::LimitExceeded { offset: 16 })?;
        if head > total - 4 {
            return Err(Error::Truncated {
                offset: head as u64,
            });
        }
        let end = total - 4;
        let stored = match bytes.get(end..total) {
            Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
            _ => return Err(Error::Truncated { offset: end as u64 }),
        };
        let computed = crc32(&bytes[..end]);
        if stored != computed {
            return Err(Error::CrcMismatch { stored, computed });
        }
        let mut m = BakedModel {
            bytes,
            layers,
            adapters,
            input_len,
            output_len: 0,
            act: input_len,
            max_cols: 0,
            max_rows: 0,
            crc: stored,
        };
        let mut width = input_len;
        for i in 0..layers {
            let l = m.layer(i)?;
            if l.cols != width || l.rows == 0 {
                return Err(Error::ShapeMismatch {
                    tensor: 2 * i as u32,
                });
            }
            width = l.rows;
            m.max_cols = m.max_cols.max(l.cols);
            m.max_rows = m.max_rows.max(l.rows);
        }
        m.output_len = width;
        m.act = input_len.max(m.max_rows);
        for a in 0..adapters {
            for i in 0..layers {
                m.side(a, i)?;
            }
        }
        Ok(m)
    }

    fn data(&self) -> core::ops::Range<usize> {
        header_len(self.layers, self.adapters)..self.bytes.len() - 4
    }

    fn layer(&self, i: usize) -> Result<Layer<'a>> {
        let at = HEADER_WORDS + LAYER_WORDS * i;
        let mut w = [0u32; LAYER_WORDS];
        for (k, v) in w.iter_mut().enumerate() {
            *v = word(self.bytes, at + k)?;
        }
        let (rows, cols) = (w[0] as usize, w[1] as usize);
        let relu = match w[2] {
            ACT_NONE => false,
            ACT_RELU => true,
            _ => return Err(Error::UnsupportedModel),
        };
        let n = rows.checked_mul(cols).ok_or(Error::LimitExceeded {
            offset: 4 * at as u64,
        })?;
        let weight = array(self.bytes, self.data(), w[3], w[4], n, 2 * i)?;
        let want_bias = if w[6] == 0 { 0 } else { rows };
        let bias = array(self.bytes, self.data(), w[5], w[6], want_bias, 2 * i + 1)?;
        Ok(Layer {
            rows,
            cols,
            relu,
            weight,
            bias,
        })
    }

    fn side(&self, a: usize, i: usize) -> Result<Side<'a>> {
        let l = self.layer(i)?;
        let at = HEADER_WORDS + LAYER_WORDS * self.layers + ADAPTER_WORDS * (a * self.layers + i);
        let mut w = [0u32; ADAPTER_WORDS];
        for (k, v) in w.iter_mut().enumerate() {
            *v = word(self.bytes, at + k)?;
        }
        let t = 2 * self.layers + 3 * (a * self.layers + i);
        let q_in = chain_record(
            self.bytes,
            self.data(),
            [w[0], w[1], w[2], w[3], w[4]],
            l.cols,
            t,
        )?;
        let q_out = chain_record(
            self.bytes,
            self.data(),
            [w[5], w[6], w[7], w[8], w[9]],
            l.rows,
            t + 1,
        )?;
        let want = if w[11] == 0 { 0 } else { l.rows };
        let scale = array(self.bytes, self.data(), w[10], w[11], want, t + 2)?;
        Ok(Side { q_in, q_out, scale })
    }

    /// Length of the input vector.
    pub fn input_len(&self) -> usize {
        self.input_len
    }
    /// Length of the output vector (the last layer's rows).
    pub fn output_len(&self) -> usize {
        self.output_len
    }
    /// Number of layers.
    pub fn layer_count(&self) -> usize {
        self.layers
    }
    /// Number of adapter slots in the blob.
    pub fn adapter_count(&self) -> usize {
        self.adapters
    }
    /// The blob's CRC-32 (its identity: an activated slot remembers it).
    pub fn crc(&self) -> u32 {
        self.crc
    }

    /// Exact arena length in `f32`s that [`BakedModel::run`] needs: the same formula
    /// (and, for a baked base, the same value) as [`Model::arena_len`]`(0, 0)` for a
    /// vector model.
    pub fn arena_len(&self) -> usize {
        vector_arena_len(self.act, self.max_cols, self.max_rows, 1)
    }

    /// `f32`s of workspace that [`BakedModel::activate`] needs for adapter slot `slot`
    /// (its Cayley blocks and scales: [`Adapter::workspace_len`](super::Adapter::workspace_len)
    /// of the file it came from, less the Cayley solve's scratch, which the device no
    /// longer needs, and less the adapter's slot table, which the blob holds).
    ///
    /// # Errors
    /// [`Error::UnknownTask`] if `slot >= adapter_count()`.
    pub fn workspace_len(&self, slot: usize) -> Result<usize> {
        if slot >= self.adapters {
            return Err(Error::UnknownTask);
        }
        let mut n = 0;
        for i in 0..self.layers {
            let s = self.side(slot, i)?;
            n += (s.q_in.map_or(0, |q| q.1.len())
                + s.q_out.map_or(0, |q| q.1.len())
                + s.scale.len())
                / 4;
        }
        Ok(n)
    }

    /// Activates adapter slot `slot`: copies its Cayley blocks and scales from the blob
    /// into `workspace` (RAM, `f32`-aligned), where the forward pass reads them.
    ///
    /// # Errors
    /// [`Error::UnknownTask`] if `slot >= adapter_count()`; [`Error::BufferTooSmall`] if
    /// `workspace` is shorter than [`BakedModel::workspace_len`].
    pub fn activate<'w>(&self, slot: usize, workspace: &'w mut [f32]) -> Result<BakedAdapter<'w>> {
        let need = self.workspace_len(slot)?;
        let got = workspace.len();
        let data = workspace
            .get_mut(..need)
            .ok_or(Error::BufferTooSmall { needed: need, got })?;
        let mut at = 0;
        for i in 0..self.layers {
            let s = self.side(slot, i)?;
            let parts = [
                s.q_in.map_or(&[][..], |q| q.1),
                s.q_out.map_or(&[][..], |q| q.1),
                s.scale,
            ];
            for p in parts {
                for c in p.chunks_exact(4) {
                    if let Some(v) = data.get_mut(at) {
                        *v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    }
                    at += 1;
                }
            }
        }
        Ok(BakedAdapter {
            slot,
            crc: self.crc,
            data,
        })
    }

    /// Runs one input through the base, or with the activated `adapter` applied unmerged,
    /// writing the logits into `output` and returning how many were written. The slot
    /// arithmetic is the validating runtime's own (`Model::run`'s unmerged path).
    ///
    /// # Errors
    /// [`Error::BadInput`] for an input of the wrong length; [`Error::BufferTooSmall`] if
    /// `arena` is shorter than [`BakedModel::arena_len`] or `output` than the logits;
    /// [`Error::BaseMismatch`] for an adapter activated from another blob. Never panics.
    pub fn run(
        &self,
        adapter: Option<&BakedAdapter<'_>>,
        input: &[f32],
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize> {
        if input.len() != self.input_len {
            return Err(Error::BadInput);
        }
        if let Some(ad) = adapter {
            if ad.crc != self.crc || ad.slot >= self.adapters {
                return Err(Error::BaseMismatch);
            }
        }
        let Buffers {
            a,
            b,
            scratch: mut sc,
        } = split_vector_arena(arena, self.act, self.max_cols, self.max_rows, 1)?;
        let (mut cur, mut nxt) = (a, b);
        cur[..input.len()].copy_from_slice(input);
        let mut width = self.input_len;
        let mut at = 0;
        for i in 0..self.layers {
            let l = self.layer(i)?;
            let mut t = LayerTransform::IDENTITY;
            if let Some(ad) = adapter {
                let s = self.side(ad.slot, i)?;
                t.q_in = take_chain(s.q_in, ad.data, &mut at)?;
                t.q_out = take_chain(s.q_out, ad.data, &mut at)?;
                let n = s.scale.len() / 4;
                if n > 0 {
                    let sv = ad.data.get(at..at + n).ok_or(Error::BufferTooSmall {
                        needed: at + n,
                        got: ad.data.len(),
                    })?;
                    t.scale = Some(Scalars::F32(sv));
                    at += n;
                }
            }
            let weight = WeightView::Tensor(TensorRef::f32_le(2 * i as u32, l.weight));
            let bias = (!l.bias.is_empty()).then(|| TensorRef::f32_le(2 * i as u32 + 1, l.bias));
            let rows = slot_apply(
                ONE_THREAD,
                false,
                weight,
                bias,
                l.rows,
                l.cols,
                (&t, None),
                &mut cur[..width],
                1,
                nxt,
                &mut sc,
                &[],
            )?;
            if l.relu {
                relu(&mut nxt[..rows]);
            }
            core::mem::swap(&mut cur, &mut nxt);
            width = rows;
        }
        write_output(output, &cur[..width])
    }
}

/// The chain of record `q`, its blocks at `data[*at..]`; advances `*at` past them.
fn take_chain<'w>(
    q: Option<(ChainSpec, &[u8])>,
    data: &'w [f32],
    at: &mut usize,
) -> Result<Option<Chain<'w>>> {
    let Some((spec, _)) = q else { return Ok(None) };
    let blocks = data.get(*at..).unwrap_or(&[]);
    *at += spec.blocks_len();
    Chain::new(spec, blocks).map(Some)
}

/// An activated adapter slot of a [`BakedModel`]: its Cayley blocks and scales in RAM.
#[derive(Debug)]
pub struct BakedAdapter<'w> {
    slot: usize,
    crc: u32,
    data: &'w [f32],
}

impl BakedAdapter<'_> {
    /// The slot index it was activated from.
    pub fn slot(&self) -> usize {
        self.slot
    }
}

// The digits adapters need F16 parameters, a task head and an output-side chain.
#[cfg(all(test, feature = "f16", feature = "heads", feature = "double-sided"))]
#[allow(clippy::unwrap_used)] // tests: a failure is a panic with its location
mod tests {
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    use super::*;
    use crate::runtime::{Adapter, Input};

    const BASE: &[u8] = include_bytes!("../../../models/digits/mlp.gguf");
    const ROTATED: &[u8] = include_bytes!("../../../models/digits/mlp-rotated.gguf");
    const INVERTED: &[u8] = include_bytes!("../../../models/digits/mlp-inverted.gguf");
    const NOISY: &[u8] = include_bytes!("../../../models/digits/mlp-noisy.gguf");
    const PARITY: &[u8] = include_bytes!("../../../models/digits/mlp-parity.gguf");

    /// Deterministic inputs in [0, 1).
    fn inputs(len: usize, count: usize) -> Vec<Vec<f32>> {
        let mut s = 0x1234_5678u32;
        (0..count)
            .map(|_| {
                (0..len)
                    .map(|_| {
                        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        (s >> 8) as f32 / (1u32 << 24) as f32
                    })
                    .collect()
            })
            .collect()
    }

    fn workspace(model: &Model<'_>, a: &Adapter<'_>) -> Vec<f32> {
        vec![0.0; a.workspace_len(model).unwrap()]
    }

    /// The digits base baked with its three head-free adapters.
    fn blob() -> Vec<u8> {
        let model = Model::from_bytes(BASE).unwrap();
        let files = [ROTATED, INVERTED, NOISY];
        let adapters: Vec<Adapter<'_>> = files
            .iter()
            .map(|f| Adapter::from_bytes(f).unwrap())
            .collect();
        let mut ws: Vec<Vec<f32>> = adapters.iter().map(|a| workspace(&model, a)).collect();
        let prepared: Vec<Prepared<'_, '_>> = adapters
            .iter()
            .zip(ws.iter_mut())
            .map(|(a, w)| a.prepare(&model, w).unwrap())
            .collect();
        let refs: Vec<&Prepared<'_, '_>> = prepared.iter().collect();
        let mut out = vec![0u8; baked_len(&model, &refs).unwrap()];
        assert_eq!(bake(&model, &refs, &mut out), Ok(out.len()));
        out
    }

    fn set_word(b: &mut [u8], i: usize, v: u32) {
        b[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn get_word(b: &[u8], i: usize) -> u32 {
        u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap())
    }
    fn fix_crc(b: &mut [u8]) {
        let end = b.len() - 4;
        let c = crc32(&b[..end]);
        b[end..].copy_from_slice(&c.to_le_bytes());
    }
    /// `blob` with header word `i` set to `v` and the CRC recomputed.
    fn edited(blob: &[u8], i: usize, v: u32) -> Vec<u8> {
        let mut b = blob.to_vec();
        set_word(&mut b, i, v);
        fix_crc(&mut b);
        b
    }

    #[test]
    fn bake_read_run_is_bit_exact() {
        let blob = blob();
        let baked = BakedModel::open(&blob).unwrap();
        let model = Model::from_bytes(BASE).unwrap();
        assert_eq!(baked.adapter_count(), 3);
        assert_eq!(baked.layer_count(), model.slots().len());
        assert_eq!(baked.input_len(), model.input_len());
        assert_eq!(baked.output_len(), model.output_len());
        // The arena is the validating runtime's, to the element.
        assert_eq!(baked.arena_len(), model.arena_len(0, 0));
        let xs = inputs(model.input_len(), 24);
        let mut arena = vec![0.0f32; baked.arena_len()];
        let mut arena2 = vec![0.0f32; model.arena_len(0, 0)];
        for (slot, file) in [ROTATED, INVERTED, NOISY].iter().enumerate() {
            let a = Adapter::from_bytes(file).unwrap();
            let mut ws = workspace(&model, &a);
            // The prepared blocks and scales, less the solve's scratch (2b²) and the
            // adapter's slot table.
            let b = a.block_size();
            let table = crate::runtime::SLOT_RECORD * model.slots().len();
            assert_eq!(baked.workspace_len(slot), Ok(ws.len() - 2 * b * b - table));
            let p = a.prepare(&model, &mut ws).unwrap();
            let mut ws2 = vec![0.0f32; baked.workspace_len(slot).unwrap()];
            let ad = baked.activate(slot, &mut ws2).unwrap();
            assert_eq!(ad.slot(), slot);
            for x in &xs {
                for with in [false, true] {
                    let (mut o1, mut o2) = ([0.0f32; 16], [0.0f32; 16]);
                    let n1 = baked
                        .run(with.then_some(&ad), x, &mut o1, &mut arena)
                        .unwrap();
                    let n2 = model
                        .run(with.then_some(&p), Input::Vector(x), &mut o2, &mut arena2)
                        .unwrap();
                    assert_eq!(n1, n2);
                    let b1: Vec<u32> = o1[..n1].iter().map(|v| v.to_bits()).collect();
                    let b2: Vec<u32> = o2[..n2].iter().map(|v| v.to_bits()).collect();
                    assert_eq!(b1, b2, "slot {slot}, adapter {with}");
                }
            }
        }
    }

    #[test]
    fn bake_refuses_heads_other_bases_and_short_buffers() {
        let model = Model::from_bytes(BASE).unwrap();
        let a = Adapter::from_bytes(PARITY).unwrap();
        let mut ws = workspace(&model, &a);
        let p = a.prepare(&model, &mut ws).unwrap();
        assert!(matches!(
            baked_len(&model, &[&p]),
            Err(Error::Unsupported { .. })
        ));
        let r = Adapter::from_bytes(ROTATED).unwrap();
        let mut ws = workspace(&model, &r);
        let p = r.prepare(&model, &mut ws).unwrap();
        let need = baked_len(&model, &[&p]).unwrap();
        let mut out = vec![0u8; need - 1];
        assert_eq!(
            bake(&model, &[&p], &mut out),
            Err(Error::BufferTooSmall {
                needed: need,
                got: need - 1
            })
        );
        let cnn = Model::from_bytes(include_bytes!("../../../models/digits/cnn.gguf"));
        if let Ok(cnn) = cnn {
            assert_eq!(baked_len(&cnn, &[]), Err(Error::UnsupportedModel));
            assert_eq!(baked_len(&cnn, &[&p]), Err(Error::UnsupportedModel));
        }
    }

    /// Every header word set to edge values (CRC recomputed): `open` never panics, and a
    /// blob it accepts activates and runs every slot without panicking.
    #[test]
    fn edited_headers_never_panic() {
        let blob = blob();
        let n = blob.len() as u32;
        let words = header_len(get_word(&blob, 4) as usize, get_word(&blob, 5) as usize) / 4;
        let mut accepted = 0;
        for i in 0..words {
            let w = get_word(&blob, i);
            for v in [
                0,
                1,
                2,
                3,
                4,
                8,
                16,
                64,
                65,
                n - 4,
                n,
                u32::MAX,
                w.wrapping_add(4),
                w.wrapping_sub(4),
                w / 2,
                w.wrapping_mul(2),
            ] {
                let b = edited(&blob, i, v);
                let Ok(m) = BakedModel::open(&b) else {
                    continue;
                };
                accepted += 1;
                let mut arena = vec![0.0f32; m.arena_len()];
                let x = vec![0.25f32; m.input_len()];
                let mut out = vec![0.0f32; m.output_len()];
                for slot in 0..m.adapter_count() {
                    let mut ws = vec![0.0f32; m.workspace_len(slot).unwrap()];
                    let ad = m.activate(slot, &mut ws).unwrap();
                    m.run(Some(&ad), &x, &mut out, &mut arena).unwrap();
                }
            }
        }
        assert!(accepted > 0);
    }

    #[test]
    fn corrupt_blobs_give_typed_errors() {
        let blob = blob();
        let n = blob.len();
        let open = |b: &[u8]| BakedModel::open(b).map(|_| ());
        assert_eq!(open(&blob), Ok(()));
        // Truncations.
        assert_eq!(open(&blob[..10]), Err(Error::Truncated { offset: 0 }));
        assert_eq!(
            open(&blob[..n - 1]),
            Err(Error::Truncated {
                offset: n as u64 - 1
            })
        );
        assert_eq!(open(&blob[..100]), Err(Error::Truncated { offset: 100 }));
        // A blob whose stated length is not a multiple of 4: the CRC is read where stated.
        let mut odd = blob.clone();
        odd.insert(n - 4, 0);
        set_word(&mut odd, 2, n as u32 + 1);
        fix_crc(&mut odd);
        assert_eq!(open(&odd), Ok(()));
        let mut longer = blob.clone();
        longer.push(0);
        assert_eq!(
            open(&longer),
            Err(Error::LengthMismatch {
                expected: n,
                found: n + 1
            })
        );
        // Magic and version.
        let mut b = blob.clone();
        b[0] = b'G';
        assert_eq!(open(&b), Err(Error::BadBakedMagic));
        assert_eq!(
            open(&edited(&blob, 1, 2)),
            Err(Error::UnsupportedBakedVersion(2))
        );
        // A flipped byte anywhere after the version: the CRC (or the stated length).
        for at in [12, 40, 200, n / 2, n - 5, n - 1] {
            let mut b = blob.clone();
            b[at] ^= 0x10;
            assert!(
                matches!(open(&b), Err(Error::CrcMismatch { .. })),
                "flip at {at}: {:?}",
                open(&b)
            );
        }
        // Header edits with a recomputed CRC.
        let layers = get_word(&blob, 4) as usize;
        let l0 = HEADER_WORDS; // layer 0: rows, cols, act, w_off, w_len, b_off, b_len
        assert_eq!(
            open(&edited(&blob, 4, 0)),
            Err(Error::LimitExceeded { offset: 16 })
        );
        // No constant bounds the layers: a count the blob is far too short for is
        // truncation at the header's end.
        let huge = u32::MAX as usize;
        assert_eq!(
            open(&edited(&blob, 4, u32::MAX)),
            Err(Error::Truncated {
                offset: checked_header_len(huge, get_word(&blob, 5) as usize)
                    .map_or(0, |h| h as u64)
            })
        );
        assert_eq!(
            open(&edited(&blob, 5, 17)),
            Err(Error::LimitExceeded { offset: 20 })
        );
        // More adapters: a longer header, which the first weight now overlaps.
        assert_eq!(
            open(&edited(&blob, 5, 9)),
            Err(Error::TensorOutOfRange { tensor: 0 })
        );
        // A stated length longer or shorter than the bytes.
        assert_eq!(
            open(&edited(&blob, 2, n as u32 + 4)),
            Err(Error::Truncated { offset: n as u64 })
        );
        assert_eq!(
            open(&edited(&blob, 2, n as u32 - 4)),
            Err(Error::LengthMismatch {
                expected: n - 4,
                found: n
            })
        );
        assert_eq!(
            open(&edited(&blob, 3, 63)),
            Err(Error::ShapeMismatch { tensor: 0 })
        );
        assert_eq!(
            open(&edited(&blob, l0 + 2, 7)),
            Err(Error::UnsupportedModel)
        );
        assert_eq!(
            open(&edited(&blob, l0 + 3, n as u32)),
            Err(Error::TensorOutOfRange { tensor: 0 })
        );
        assert_eq!(
            open(&edited(&blob, l0 + 3, 0)),
            Err(Error::TensorOutOfRange { tensor: 0 })
        );
        assert_eq!(
            open(&edited(&blob, l0 + 3, u32::MAX - 3)),
            Err(Error::TensorOutOfRange { tensor: 0 })
        );
        let w_off = get_word(&blob, l0 + 3);
        assert_eq!(
            open(&edited(&blob, l0 + 3, w_off + 2)),
            Err(Error::Misaligned { tensor: 0 })
        );
        assert_eq!(
            open(&edited(&blob, l0 + 4, 5)),
            Err(Error::ShapeMismatch { tensor: 0 })
        );
        assert_eq!(
            open(&edited(&blob, l0 + 6, 3)),
            Err(Error::ShapeMismatch { tensor: 1 })
        );
        assert_eq!(
            open(&edited(&blob, l0 + LAYER_WORDS + 1, 3)),
            Err(Error::ShapeMismatch { tensor: 2 })
        );
        // Adapter 0 on layer 0: input chain, output chain, scale.
        let a0 = HEADER_WORDS + LAYER_WORDS * layers;
        let t0 = 2 * layers as u32;
        assert_eq!(open(&edited(&blob, a0, 9)), Err(Error::UnsupportedModel));
        assert_eq!(
            open(&edited(&blob, a0 + 1, 65)),
            Err(Error::InvalidBlockSize { block: 65 })
        );
        assert_eq!(
            open(&edited(&blob, a0 + 2, 0)),
            Err(Error::InvalidFactorCount { factors: 0 })
        );
        assert_eq!(
            open(&edited(&blob, a0 + 4, 1)),
            Err(Error::ShapeMismatch { tensor: t0 })
        );
        assert_eq!(
            open(&edited(&blob, a0 + 3, n as u32)),
            Err(Error::TensorOutOfRange { tensor: t0 })
        );
        assert_eq!(
            open(&edited(&blob, a0 + 11, 1)),
            Err(Error::ShapeMismatch { tensor: t0 + 2 })
        );
        // Slots, buffers, inputs.
        let baked = BakedModel::open(&blob).unwrap();
        assert_eq!(baked.workspace_len(3), Err(Error::UnknownTask));
        let mut ws = vec![0.0f32; baked.workspace_len(0).unwrap()];
        assert!(matches!(
            baked.activate(3, &mut ws),
            Err(Error::UnknownTask)
        ));
        let need = ws.len();
        assert!(matches!(
            baked.activate(0, &mut ws[..need - 1]),
            Err(Error::BufferTooSmall { needed, got }) if needed == need && got == need - 1
        ));
        let ad = baked.activate(0, &mut ws).unwrap();
        let x = vec![0.0f32; baked.input_len()];
        let mut out = [0.0f32; 16];
        let mut arena = vec![0.0f32; baked.arena_len()];
        let short = baked.arena_len() - 1;
        assert_eq!(
            baked.run(Some(&ad), &x, &mut out, &mut arena[..short]),
            Err(Error::BufferTooSmall {
                needed: short + 1,
                got: short
            })
        );
        assert_eq!(
            baked.run(Some(&ad), &x[1..], &mut out, &mut arena),
            Err(Error::BadInput)
        );
        assert!(matches!(
            baked.run(Some(&ad), &x, &mut out[..3], &mut arena),
            Err(Error::BufferTooSmall { .. })
        ));
        // An adapter activated from another blob.
        let other = edited(&blob, l0 + 2, 0); // layer 0 without ReLU: another CRC
        let other = BakedModel::open(&other).unwrap();
        let mut ws2 = vec![0.0f32; other.workspace_len(0).unwrap()];
        let ad2 = other.activate(0, &mut ws2).unwrap();
        assert_eq!(
            baked.run(Some(&ad2), &x, &mut out, &mut arena),
            Err(Error::BaseMismatch)
        );
    }
}
