//! Persistent state of a causal model, apart from the per-run arena: the keys and values
//! of every position read so far, in a caller-provided buffer whose exact size (in values)
//! [`crate::runtime::Model::state_len`] gives before anything runs. The buffer holds `f32`s
//! ([`DecoderState::new`]) or IEEE halves ([`DecoderState::new_f16`]: half the memory, as
//! llama.cpp keeps its cache; each key and value rounded to the nearest half).
//!
//! A state belongs to the adapter it was computed under: running it with another adapter
//! (or the bare base) is [`Error::StaleState`], so keys and values are never reused
//! across adapters. The caller either resets the state and re-reads its tokens, or keeps
//! one state per adapter.

use crate::nn::attention::KvSliceMut;
pub use crate::nn::attention::KvType;
use crate::{Error, Result};

/// Which adapter a state was computed under: `None` for the bare base, else the
/// prepared adapter's [`crate::runtime::Prepared::state_key`].
pub type StateOwner = Option<u64>;

/// Which positions a causal step writes the next token's logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// After the last token read: one row of the vocabulary (generation).
    Last,
    /// After every token read: `tokens.len()` rows, row `i` predicting the token after
    /// `tokens[i]` (scoring a text: its log-likelihood, perplexity).
    Every,
}

/// The key/value cache of a causal model over at most `context` positions.
#[derive(Debug)]
pub struct DecoderState<'s> {
    kv: KvSliceMut<'s>,
    context: usize,
    len: usize,
    owner: StateOwner,
}

impl<'s> DecoderState<'s> {
    /// A state of `context` positions in `buf`, which must hold `need` values (the
    /// model's [`crate::runtime::Model::state_len`]`(context)`).
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] for a short `buf`.
    pub fn new(buf: &'s mut [f32], need: usize, context: usize) -> Result<Self> {
        Self::with_cache(KvSliceMut::F32(buf), need, context)
    }
    /// [`DecoderState::new`] keeping keys and values as IEEE halves (`buf` holds their
    /// bits): the same number of values, half the bytes.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] for a short `buf`.
    pub fn new_f16(buf: &'s mut [u16], need: usize, context: usize) -> Result<Self> {
        Self::with_cache(KvSliceMut::F16(buf), need, context)
    }
    fn with_cache(kv: KvSliceMut<'s>, need: usize, context: usize) -> Result<Self> {
        if kv.len() < need {
            return Err(Error::BufferTooSmall {
                needed: need,
                got: kv.len(),
            });
        }
        Ok(DecoderState {
            kv,
            context,
            len: 0,
            owner: None,
        })
    }
    /// How the keys and values are kept.
    pub fn kv_type(&self) -> KvType {
        self.kv.kv_type()
    }
    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True before any token was read.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Positions the state can hold.
    pub fn context(&self) -> usize {
        self.context
    }
    /// The adapter the filled positions were computed under.
    pub fn owner(&self) -> StateOwner {
        self.owner
    }
    /// Forgets every position (the buffer is reused as it is).
    pub fn reset(&mut self) {
        self.len = 0;
        self.owner = None;
    }
    /// Drops the positions from `len` on (to re-read a shorter history).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// The cache, checked against `owner`: an empty state takes any owner.
    pub(crate) fn claim(&mut self, owner: StateOwner) -> Result<(KvSliceMut<'_>, usize, usize)> {
        if self.len > 0 && self.owner != owner {
            return Err(Error::StaleState);
        }
        Ok((self.kv.reborrow(), self.context, self.len))
    }
    /// Records `n` more positions computed under `owner`.
    pub(crate) fn advance(&mut self, n: usize, owner: StateOwner) {
        self.len += n;
        self.owner = owner;
    }
}
