//! The inference runtime: base models and adapters read in place from GGUF bytes, run
//! in caller-provided buffers, with adapters swapped at runtime, merged or unmerged.
//!
//! - [`Model`]: a base as a table of linear slots ([`SlotTable`]) plus one architecture
//!   (`arch/`: `mlp`, `cnn`, `bert`); [`Model::arena_len`] gives the exact arena before
//!   anything runs.
//! - [`Adapter`]: an adapter file; [`Adapter::prepare`] validates it against a base and
//!   computes its Cayley blocks into a caller workspace, giving a [`Prepared`] adapter.
//! - [`DecoderState`]: the key/value cache of a causal model (`llama`), apart from the
//!   arena, owned by the adapter it was computed under.
//! - [`Session`]: resident adapters, the active one, merged mode with in-place swaps.
//! - `baked` (cargo feature `baked`): a base and prepared adapters written ahead of time
//!   into one compact blob, and the small reader a minimal firmware runs it with.
//!
//! Module dependencies run one way: `slots` (the table and the facts adapters need) ←
//! `adapter` ← `linear` (the adapter-aware linear op) ← `arch/*` ← `model` ← `session`.

mod adapter;
mod arch;
#[cfg(feature = "baked")]
pub mod baked;
mod linear;
mod model;
mod session;
mod slots;
#[cfg(feature = "llama")]
mod state;
pub mod weights;

pub use adapter::{
    Adapter, ClsHead, Head, Method, Prepared, KEY_COMPATIBLE_MODEL_IDS, MAX_ADAPTED_SLOTS,
    MAX_HEAD_TENSORS, SLOT_RECORD,
};
#[cfg(feature = "bert")]
pub use arch::bert::{BertConfig, MAX_BERT_BLOCKS};
#[cfg(feature = "llama")]
pub use arch::llama::{LlamaConfig, MAX_LLAMA_BLOCKS};
pub use arch::{Architecture, InputKind};
#[cfg(feature = "llama")]
pub use model::{DecodeStep, MAX_STEPS};
pub use model::{Input, Model};
pub use session::{AdapterHandle, Session, MAX_RESIDENT};
pub use slots::{Base, BaseFacts, Slot, SlotTable, MAX_SLOTS};
#[cfg(feature = "llama")]
pub use state::{DecoderState, KvType, Logits, StateOwner};
