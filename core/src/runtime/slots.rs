//! The slot table: every weight an adapter may rotate, in forward order.
//!
//! A **linear slot** is a dense layer `(rows, cols)` = `(out, in)` with an optional bias,
//! or a convolution seen as the matrix `(out_c, in_c·kh·kw)`. Adapters address slots by
//! the base tensor name; architectures fill the table when they load
//! ([`crate::runtime::Model::from_bytes`]) and run every slot through one routine
//! (`linear::Linears::apply`).

use heapless::Vec;

use super::weights::TensorRef;
#[cfg(any(feature = "bert", feature = "llama"))]
use crate::gguf::TensorInfo;
use crate::gguf::{self, Gguf};
use crate::{Error, Result};

/// Most linear slots a model may have: a 73-block `llama` (7 slots a block; SmolLM2 has
/// 30, Llama-3 8B 32) or an 85-block `bert`. About 100 bytes a slot in the model's table
/// and 36 in each prepared adapter's.
#[cfg(feature = "llama")]
pub const MAX_SLOTS: usize = 512;
/// Most linear slots a model may have: a 13-block `bert` (6 slots a block; MiniLM has 6,
/// BERT-base 12). Builds without `llama` (the browser's small module) keep their tables,
/// and the stack their sessions take, small.
#[cfg(all(feature = "bert", not(feature = "llama")))]
pub const MAX_SLOTS: usize = 80;
/// Most linear slots a model may have: every layer of a `cnn`, [`MAX_LAYERS`]
/// convolutions and [`MAX_LAYERS`] dense layers.
#[cfg(all(feature = "cnn", not(any(feature = "llama", feature = "bert"))))]
pub const MAX_SLOTS: usize = 2 * MAX_LAYERS;
/// Most linear slots a model may have: every layer of an `mlp`.
#[cfg(not(any(feature = "cnn", feature = "bert", feature = "llama")))]
pub const MAX_SLOTS: usize = MAX_LAYERS;
/// Most convolutions or dense layers per `mlp` or `cnn`.
pub const MAX_LAYERS: usize = 16;

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

impl<'a> Slot<'a> {
    /// A slot of weight `w` (shape `(rows, cols)` as the architecture reads it) and bias `b`.
    #[cfg(any(feature = "bert", feature = "llama"))]
    pub(crate) fn new(
        w: &TensorInfo<'a>,
        b: Option<&TensorInfo<'a>>,
        rows: usize,
        cols: usize,
    ) -> Self {
        Slot {
            weight: TensorRef::new(w),
            bias: b.map(TensorRef::new),
            rows,
            cols,
        }
    }
}

/// The slots of one model, in forward order, with the look-ups adapters need.
#[derive(Debug, Clone, Default)]
pub struct SlotTable<'a> {
    slots: Vec<Slot<'a>, MAX_SLOTS>,
}

impl<'a> SlotTable<'a> {
    /// An empty table.
    pub const fn new() -> Self {
        SlotTable { slots: Vec::new() }
    }
    /// Appends a slot.
    ///
    /// # Errors
    /// [`Error::CapacityExceeded`] past [`MAX_SLOTS`].
    pub(crate) fn push(&mut self, slot: Slot<'a>) -> Result<()> {
        self.slots.push(slot).map_err(|_| Error::CapacityExceeded)
    }
    /// The slots, in forward order.
    pub fn as_slice(&self) -> &[Slot<'a>] {
        &self.slots
    }
    /// Number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }
    /// True for a table without slots.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
    /// Slot `i`.
    pub fn get(&self, i: usize) -> Option<&Slot<'a>> {
        self.slots.get(i)
    }
    /// Index of the slot whose weight tensor is `name` in `gguf`.
    pub fn index_of(&self, gguf: &Gguf<'_>, name: &str) -> Option<usize> {
        let t = gguf.find_tensor(name)?.index();
        self.slots.iter().position(|s| s.weight.index() == t)
    }
    /// The base tensor name of slot `i` in `gguf` (what adapters use to address it).
    pub fn name_of<'g>(&self, gguf: &Gguf<'g>, i: usize) -> &'g str {
        self.slots
            .get(i)
            .and_then(|s| gguf.tensor(s.weight.index() as usize))
            .map_or("", |t| t.name())
    }
    /// Index of the slot whose bias tensor is `name` in `gguf`.
    pub fn bias_index_of(&self, gguf: &Gguf<'_>, name: &str) -> Option<usize> {
        let t = gguf.find_tensor(name)?.index();
        self.slots
            .iter()
            .position(|s| s.bias.is_some_and(|b| b.index() == t))
    }
    /// Total `f32`s of merged weights: every slot's `rows·cols`.
    pub fn merged_len(&self) -> usize {
        self.slots.iter().map(|s| s.rows * s.cols).sum()
    }
    /// Offset of slot `i`'s weights inside the merged buffer.
    pub(crate) fn merged_offset(&self, i: usize) -> usize {
        self.slots.iter().take(i).map(|s| s.rows * s.cols).sum()
    }
    /// Widest input and output of any slot.
    pub(crate) fn max_cols_rows(&self) -> (usize, usize) {
        let cols = self.slots.iter().map(|s| s.cols).max().unwrap_or(0);
        let rows = self.slots.iter().map(|s| s.rows).max().unwrap_or(0);
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
