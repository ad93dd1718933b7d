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
//! | `llama` | `llama` | token ids (causal, with a key/value cache) | the next token's logits |

#[cfg(feature = "bert")]
pub(crate) mod bert;
#[cfg(feature = "cnn")]
pub(crate) mod cnn;
#[cfg(feature = "llama")]
pub(crate) mod llama;
pub(crate) mod mlp;

use super::linear::Linears;
use super::model::Input;
use super::slots::{SlotSink, SlotTable};
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
    /// `llama`: a decoder LLM with llama.cpp's names (SmolLM2, Llama, ...).
    Llama,
}

impl Architecture {
    /// The architecture named `name` in `general.architecture`, if this build runs it.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "mlp" => Architecture::Mlp,
            #[cfg(feature = "cnn")]
            "cnn" => Architecture::Cnn,
            #[cfg(feature = "bert")]
            "bert" => Architecture::Bert,
            #[cfg(feature = "llama")]
            "llama" => Architecture::Llama,
            _ => return None,
        })
    }
    /// True for a causal (generative) architecture, run token by token with a state.
    pub const fn is_causal(self) -> bool {
        matches!(self, Architecture::Llama)
    }
    /// The `general.architecture` string.
    pub const fn name(self) -> &'static str {
        match self {
            Architecture::Mlp => "mlp",
            Architecture::Cnn => "cnn",
            Architecture::Bert => "bert",
            Architecture::Llama => "llama",
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
    /// True for a causal (generative) model that keeps a key/value state.
    fn is_causal(&self) -> bool {
        false
    }
    /// Values of persistent state for `context` positions (0 for stateless models).
    fn state_len(&self, _context: usize) -> usize {
        0
    }
    /// Arena `f32`s of one [`Forward::step`] over at most `max_tokens` new tokens.
    fn step_arena_len(&self, _max_tokens: usize) -> usize {
        0
    }
    /// Reads `tokens` at positions `past ..` into the state `kv` (room for `context`
    /// positions) and writes the next token's logits after the positions `rows` names.
    #[cfg(feature = "llama")]
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        _lin: &Linears<'_, 'a>,
        _tokens: &[u32],
        _kv: crate::nn::attention::KvSliceMut<'_>,
        _context: usize,
        _past: usize,
        _rows: crate::runtime::Logits,
        _output: &mut [f32],
        _arena: &mut [f32],
    ) -> Result<usize> {
        Err(Error::UnsupportedModel)
    }
    /// One forward pass; writes the output and returns its length.
    fn forward(
        &self,
        lin: &Linears<'_, 'a>,
        input: Input<'_>,
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize>;
}

/// Calls one [`Forward`] method on whichever architecture `$arch` holds (static
/// dispatch: a firmware that runs one architecture links no other's code).
macro_rules! dispatch {
    ($arch:expr, $a:ident => $call:expr) => {
        match $arch {
            Arch::Mlp($a, _) => $call,
            #[cfg(feature = "cnn")]
            Arch::Cnn($a) => $call,
            #[cfg(feature = "bert")]
            Arch::Bert($a) => $call,
            #[cfg(feature = "llama")]
            Arch::Llama($a) => $call,
        }
    };
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
    #[cfg(feature = "llama")]
    Llama(llama::Llama<'a>),
}

impl<'a> Arch<'a> {
    /// Reads the architecture named `name` from `g`, filling `slots`. Architectures
    /// compiled out (cargo features) are unsupported ones.
    ///
    /// # Errors
    /// [`Error::UnsupportedModel`] for an unknown architecture; the architecture's own
    /// errors for a malformed file.
    pub(crate) fn load(name: &str, g: &Gguf<'a>, slots: &mut dyn SlotSink<'a>) -> Result<Self> {
        Ok(match name {
            "mlp" => Arch::Mlp(mlp::Mlp::load(g, slots)?, core::marker::PhantomData),
            #[cfg(feature = "cnn")]
            "cnn" => Arch::Cnn(cnn::Cnn::load(g, slots)?),
            #[cfg(feature = "bert")]
            "bert" => Arch::Bert(bert::Bert::load(g, slots)?),
            #[cfg(feature = "llama")]
            "llama" => Arch::Llama(llama::Llama::load(g, slots)?),
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
            #[cfg(feature = "llama")]
            Arch::Llama(_) => Architecture::Llama,
        }
    }

    /// What the model takes ([`Forward::input`]).
    pub(crate) fn input(&self) -> InputKind {
        dispatch!(self, a => a.input())
    }
    /// [`Forward::output_len`].
    pub(crate) fn output_len(&self, slots: &SlotTable<'a>) -> usize {
        dispatch!(self, a => a.output_len(slots))
    }
    /// [`Forward::pooled_width`].
    pub(crate) fn pooled_width(&self) -> Option<usize> {
        dispatch!(self, a => a.pooled_width())
    }
    /// [`Forward::max_batch`].
    pub(crate) fn max_batch(&self) -> usize {
        dispatch!(self, a => a.max_batch())
    }
    /// [`Forward::arena_len`].
    pub(crate) fn arena_len(
        &self,
        slots: &SlotTable<'a>,
        max_tokens: usize,
        head_rows: usize,
    ) -> usize {
        dispatch!(self, a => a.arena_len(slots, max_tokens, head_rows))
    }
    /// [`Forward::is_causal`].
    pub(crate) fn is_causal(&self) -> bool {
        dispatch!(self, a => a.is_causal())
    }
    /// [`Forward::state_len`].
    pub(crate) fn state_len(&self, context: usize) -> usize {
        dispatch!(self, a => a.state_len(context))
    }
    /// [`Forward::step_arena_len`].
    pub(crate) fn step_arena_len(&self, max_tokens: usize) -> usize {
        dispatch!(self, a => a.step_arena_len(max_tokens))
    }
    /// [`Forward::step`].
    #[cfg(feature = "llama")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn step(
        &self,
        lin: &Linears<'_, 'a>,
        tokens: &[u32],
        kv: crate::nn::attention::KvSliceMut<'_>,
        context: usize,
        past: usize,
        rows: crate::runtime::Logits,
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize> {
        dispatch!(self, a => a.step(lin, tokens, kv, context, past, rows, output, arena))
    }
    /// [`Forward::forward`].
    pub(crate) fn forward(
        &self,
        lin: &Linears<'_, 'a>,
        input: Input<'_>,
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize> {
        dispatch!(self, a => a.forward(lin, input, output, arena))
    }

    /// The `bert` hyper-parameters, for a `bert` model.
    #[cfg(feature = "bert")]
    pub(crate) fn bert(&self) -> Option<&bert::Bert<'a>> {
        match self {
            Arch::Bert(b) => Some(b),
            _ => None,
        }
    }

    /// The `llama` hyper-parameters, for a `llama` model.
    #[cfg(feature = "llama")]
    pub(crate) fn llama(&self) -> Option<&llama::Llama<'a>> {
        match self {
            Arch::Llama(l) => Some(l),
            _ => None,
        }
    }
}
