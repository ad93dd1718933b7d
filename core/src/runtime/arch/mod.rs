//! One module per architecture, behind one small interface ([`Forward`]): each reads its
//! tensors into the slot table when it loads, says what input it takes and how long its
//! output is, sizes its arena, and runs a forward pass through the shared linear op
//! (`runtime::linear`). This is the only place that matches on an architecture name.
//!
//! | architecture | module | input | output |
//! |---|---|---|---|
//! | `mlp` | `mlp` | a vector | the last layer's logits |
//! | `cnn` | `cnn` | an image `(c, h, w)` | the last dense layer's logits |
//! | `bert` | `bert` | token ids | the pooled sentence embedding, or a head's logits |

#[cfg(feature = "bert")]
pub(crate) mod bert;
#[cfg(feature = "cnn")]
pub(crate) mod cnn;
pub(crate) mod mlp;

use super::linear::Linears;
use super::model::Input;
use super::slots::SlotTable;
use crate::gguf::Gguf;
use crate::{Error, Result};

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

/// What a model takes as input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// A feature vector of `len` values ([`Input::Vector`]).
    Vector {
        /// Its length.
        len: usize,
    },
    /// Token ids ([`Input::Tokens`]), at most `max` of them.
    Tokens {
        /// Longest input in tokens.
        max: usize,
    },
}

/// The interface every architecture implements.
pub(crate) trait Forward<'a> {
    /// What the model takes.
    fn input(&self) -> InputKind;
    /// Length of the base's output (logits, or a text encoder's embedding).
    fn output_len(&self, slots: &SlotTable<'a>) -> usize;
    /// Width of the pooled states a classification head reads (text encoders only).
    fn pooled_width(&self) -> Option<usize> {
        None
    }
    /// Largest batch of rows one slot sees (the dense kernels' scratch is sized by it).
    fn max_batch(&self) -> usize {
        1
    }
    /// Exact arena `f32`s of one forward over at most `max_tokens` tokens with a head of
    /// at most `head_rows` outputs (0: the base's).
    fn arena_len(&self, slots: &SlotTable<'a>, max_tokens: usize, head_rows: usize) -> usize;
    /// One forward pass; writes the output and returns its length.
    fn forward(
        &self,
        lin: &Linears<'_, 'a>,
        input: Input<'_>,
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize>;
}

/// The architecture of a loaded model, with what it keeps beyond the slot table.
// Variants differ in size (`bert` keeps its norms inline); a model holds one for its
// whole life and nothing can be boxed without an allocator.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub(crate) enum Arch<'a> {
    /// The marker keeps `'a` in builds where no architecture borrows from the file.
    Mlp(mlp::Mlp, core::marker::PhantomData<&'a ()>),
    #[cfg(feature = "cnn")]
    Cnn(cnn::Cnn),
    #[cfg(feature = "bert")]
    Bert(bert::Bert<'a>),
}

impl<'a> Arch<'a> {
    /// Reads the architecture named `name` from `g`, filling `slots`. Architectures
    /// compiled out (cargo features) are unsupported ones.
    ///
    /// # Errors
    /// [`Error::UnsupportedModel`] for an unknown architecture; the architecture's own
    /// errors for a malformed file.
    pub(crate) fn load(name: &str, g: &Gguf<'a>, slots: &mut SlotTable<'a>) -> Result<Self> {
        Ok(match name {
            "mlp" => Arch::Mlp(mlp::Mlp::load(g, slots)?, core::marker::PhantomData),
            #[cfg(feature = "cnn")]
            "cnn" => Arch::Cnn(cnn::Cnn::load(g, slots)?),
            #[cfg(feature = "bert")]
            "bert" => Arch::Bert(bert::Bert::load(g, slots)?),
            _ => return Err(Error::UnsupportedModel),
        })
    }

    /// Which architecture this is.
    pub(crate) fn kind(&self) -> Architecture {
        match self {
            Arch::Mlp(..) => Architecture::Mlp,
            #[cfg(feature = "cnn")]
            Arch::Cnn(_) => Architecture::Cnn,
            #[cfg(feature = "bert")]
            Arch::Bert(_) => Architecture::Bert,
        }
    }

    /// The architecture behind the common interface.
    pub(crate) fn get(&self) -> &dyn Forward<'a> {
        match self {
            Arch::Mlp(m, _) => m,
            #[cfg(feature = "cnn")]
            Arch::Cnn(c) => c,
            #[cfg(feature = "bert")]
            Arch::Bert(b) => b,
        }
    }

    /// The `bert` hyper-parameters, for a `bert` model.
    #[cfg(feature = "bert")]
    pub(crate) fn bert(&self) -> Option<&bert::Bert<'a>> {
        match self {
            Arch::Bert(b) => Some(b),
            _ => None,
        }
    }
}
