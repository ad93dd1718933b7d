//! The slot table: every weight an adapter may rotate, in forward order.
//!
//! A **linear slot** is a dense layer `(rows, cols)` = `(out, in)` with an optional bias,
//! or a convolution seen as the matrix `(out_c, in_c·kh·kw)`. Adapters address slots by
//! the base tensor name; architectures fill the table when they load
//! ([`crate::runtime::Model::from_bytes`]) and run every slot through one routine
//! (`linear::Linears::apply`).
//!
//! The table lives in the model ([`MAX_SLOTS`] records, the convenience constructor) or
//! in a slice the caller provides ([`crate::runtime::Model::from_bytes_in`], sized by
//! [`crate::runtime::Model::storage_len`]): then the file, not a constant, sets the
//! capacity.

use heapless::Vec;

use super::weights::TensorRef;
use crate::gguf::{self, Gguf, TensorInfo};
use crate::{Error, Result};

/// Linear slots a model built by [`crate::runtime::Model::from_bytes`] may have: a
/// 73-block `llama` (7 slots a block; SmolLM2 has 30, Llama-3 8B 32) or an 85-block
/// `bert`. 112 bytes a slot on a 64-bit host, in the model. Larger models load into caller storage
/// ([`crate::runtime::Model::from_bytes_in`]).
#[cfg(feature = "llama")]
pub const MAX_SLOTS: usize = 512;
/// Linear slots a model built by [`crate::runtime::Model::from_bytes`] may have: a 13-block `bert` (6 slots a block; MiniLM has 6,
/// BERT-base 12). Builds without `llama` (the browser's small module) keep their tables,
/// and the stack their sessions take, small; larger models load into caller storage
/// ([`crate::runtime::Model::from_bytes_in`]).
#[cfg(all(feature = "bert", not(feature = "llama")))]
pub const MAX_SLOTS: usize = 80;
/// Linear slots a model built by [`crate::runtime::Model::from_bytes`] may have: the
/// convolutions and dense layers of a `cnn`, 32 together. Larger models load into caller
/// storage ([`crate::runtime::Model::from_bytes_in`]).
#[cfg(all(feature = "cnn", not(any(feature = "llama", feature = "bert"))))]
pub const MAX_SLOTS: usize = 32;
/// Linear slots a model built by [`crate::runtime::Model::from_bytes`] may have: 16
/// layers of an `mlp`. Larger models load into caller storage
/// ([`crate::runtime::Model::from_bytes_in`]).
#[cfg(not(any(feature = "cnn", feature = "bert", feature = "llama")))]
pub const MAX_SLOTS: usize = 16;

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
    /// A per-block norm tensor kept with the slot, so that the caller's slot storage
    /// also holds every per-block tensor and no constant bounds the blocks: for `llama`,
    /// the norm the block applies before this slot (the attention norm on a block's first
    /// slot, the feed-forward norm on its gate); for `bert`, the post-norms of the block
    /// (`arch/bert.rs`: the attention-output norm's weight and bias on its first two
    /// slots, the layer-output norm's on the next two).
    #[cfg(any(feature = "llama", feature = "bert"))]
    pub(crate) norm: Option<TensorRef<'a>>,
}

impl<'a> Slot<'a> {
    /// A slot of weight `w` (shape `(rows, cols)` as the architecture reads it) and bias `b`.
    #[cfg(any(feature = "bert", feature = "llama"))]
    pub(crate) fn new(
        w: &TensorInfo<'a>,
        b: Option<&TensorInfo<'a>>,
        rows: usize,
        cols: usize,
    ) -> Self {
        Slot::with_refs(TensorRef::new(w), b.map(TensorRef::new), rows, cols)
    }
    /// A slot of weight `weight` and bias `bias`.
    pub(crate) fn with_refs(
        weight: TensorRef<'a>,
        bias: Option<TensorRef<'a>>,
        rows: usize,
        cols: usize,
    ) -> Self {
        Slot {
            weight,
            bias,
            rows,
            cols,
            #[cfg(any(feature = "llama", feature = "bert"))]
            norm: None,
        }
    }
    /// An empty record, to fill caller storage with before
    /// [`crate::runtime::Model::from_bytes_in`] (`vec![Slot::empty(); n]`).
    pub fn empty() -> Slot<'static> {
        Slot::with_refs(TensorRef::new(&TensorInfo::EMPTY), None, 0, 0)
    }
}

/// Where an architecture writes its slots while it loads: the model's own records, the
/// caller's slice, or nowhere (counting only, [`crate::runtime::Model::storage_len`]).
/// Taken as a trait object, so every architecture's loader exists once (small firmware).
pub(crate) trait SlotSink<'a> {
    /// Appends a slot.
    ///
    /// # Errors
    /// [`Error::CapacityExceeded`] past the storage.
    fn push(&mut self, slot: Slot<'a>) -> Result<()>;
    /// Most slots the storage holds.
    fn capacity(&self) -> usize;
}

/// Checks, before an architecture reads its tensors, that the `needed` slots its keys
/// declare fit `slots` (one function for every sink, so its code exists once).
///
/// # Errors
/// [`Error::SlotStorageTooSmall`] naming both counts.
pub(crate) fn reserve(slots: &dyn SlotSink<'_>, needed: usize) -> Result<()> {
    let got = slots.capacity();
    if needed > got {
        return Err(Error::SlotStorageTooSmall { needed, got });
    }
    Ok(())
}

impl<'a> SlotSink<'a> for Vec<Slot<'a>, MAX_SLOTS> {
    fn push(&mut self, slot: Slot<'a>) -> Result<()> {
        Vec::push(self, slot).map_err(|_| Error::CapacityExceeded)
    }
    fn capacity(&self) -> usize {
        MAX_SLOTS
    }
}

/// The caller's storage, filled from the front.
pub(crate) struct CallerSlots<'s, 'a> {
    pub(crate) buf: &'s mut [Slot<'a>],
    pub(crate) len: usize,
}

impl<'a> SlotSink<'a> for CallerSlots<'_, 'a> {
    fn push(&mut self, slot: Slot<'a>) -> Result<()> {
        *self.buf.get_mut(self.len).ok_or(Error::CapacityExceeded)? = slot;
        self.len += 1;
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.buf.len()
    }
}

/// Counts the slots without keeping them.
pub(crate) struct CountSlots(pub(crate) usize);

impl<'a> SlotSink<'a> for CountSlots {
    fn push(&mut self, _slot: Slot<'a>) -> Result<()> {
        self.0 = self.0.checked_add(1).ok_or(Error::CapacityExceeded)?;
        Ok(())
    }
    fn capacity(&self) -> usize {
        usize::MAX
    }
}

/// The slots of one model, in forward order, with the look-ups adapters need.
#[derive(Debug, Clone)]
pub struct SlotTable<'a> {
    store: Store<'a>,
}

// The large variant is the point: without an allocator, the convenience constructor's
// model holds its records by value (as the heapless vector it replaces did).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Store<'a> {
    /// The convenience constructor's records.
    Owned(Vec<Slot<'a>, MAX_SLOTS>),
    /// The caller's.
    Caller(&'a [Slot<'a>]),
}

impl<'a> SlotTable<'a> {
    /// The model's own records and the number filled.
    pub(crate) fn owned(slots: Vec<Slot<'a>, MAX_SLOTS>) -> Self {
        SlotTable {
            store: Store::Owned(slots),
        }
    }
    /// The caller's records.
    pub(crate) fn caller(slots: &'a [Slot<'a>]) -> Self {
        SlotTable {
            store: Store::Caller(slots),
        }
    }
    /// The slots, in forward order.
    pub fn as_slice(&self) -> &[Slot<'a>] {
        match &self.store {
            Store::Owned(s) => s,
            Store::Caller(s) => s,
        }
    }
    /// Number of slots.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }
    /// True for a table without slots.
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
    /// Slot `i`.
    pub fn get(&self, i: usize) -> Option<&Slot<'a>> {
        self.as_slice().get(i)
    }
    /// Index of the slot whose weight tensor is `name` in `gguf`.
    pub fn index_of(&self, gguf: &Gguf<'_>, name: &str) -> Option<usize> {
        let t = gguf.find_tensor(name)?.index();
        self.as_slice().iter().position(|s| s.weight.index() == t)
    }
    /// The base tensor name of slot `i` in `gguf` (what adapters use to address it).
    pub fn name_of<'g>(&self, gguf: &Gguf<'g>, i: usize) -> &'g str {
        self.get(i)
            .and_then(|s| gguf.tensor(s.weight.index() as usize))
            .map_or("", |t| t.name())
    }
    /// Index of the slot whose bias tensor is `name` in `gguf`.
    pub fn bias_index_of(&self, gguf: &Gguf<'_>, name: &str) -> Option<usize> {
        let t = gguf.find_tensor(name)?.index();
        self.as_slice()
            .iter()
            .position(|s| s.bias.is_some_and(|b| b.index() == t))
    }
    /// Total `f32`s of merged weights: every slot's `rows·cols`.
    pub fn merged_len(&self) -> usize {
        self.as_slice().iter().map(|s| s.rows * s.cols).sum()
    }
    /// Offset of slot `i`'s weights inside the merged buffer.
    pub(crate) fn merged_offset(&self, i: usize) -> usize {
        self.as_slice()
            .iter()
            .take(i)
            .map(|s| s.rows * s.cols)
            .sum()
    }
    /// Widest input and output of any slot.
    pub(crate) fn max_cols_rows(&self) -> (usize, usize) {
        let cols = self.as_slice().iter().map(|s| s.cols).max().unwrap_or(0);
        let rows = self.as_slice().iter().map(|s| s.rows).max().unwrap_or(0);
        (cols, rows)
    }
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

/// What adapter validation needs to know about a base: its slots and a few facts, so
/// that adapters depend on the slot table, not on the model type (dependencies run
/// `slots` <- `adapter` <- `model`).
#[derive(Debug, Clone, Copy)]
pub struct BaseFacts<'m, 'a> {
    /// `general.architecture` of the base.
    pub architecture: &'static str,
    /// The id adapters bind to.
    pub model_id: &'m str,
    /// The parsed base file (bias tensor look-ups).
    pub gguf: &'m Gguf<'a>,
    /// The slots.
    pub slots: &'m SlotTable<'a>,
    /// Width of the pooled states a classification head (`cls.weight`) may read, for
    /// architectures that pool (text encoders); `None` for the others.
    pub pooled_width: Option<usize>,
    /// Length of the base's output.
    pub output_len: usize,
}

/// A base model as adapter validation sees it ([`crate::runtime::Model`] implements it).
pub trait Base<'a> {
    /// The facts of this base.
    fn facts(&self) -> BaseFacts<'_, 'a>;
}
