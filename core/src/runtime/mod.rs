//! The inference runtime: base models and adapters read in place from GGUF bytes, run
//! in caller-provided buffers, with adapters swapped at runtime, merged or unmerged.
//!
//! - [`Model`]: a base (`mlp`, `cnn`, `bert`) as a table of linear slots; [`Model::arena_len`]
//!   gives the exact arena before anything runs.
//! - [`Adapter`]: an adapter file; [`Adapter::prepare`] validates it against a base and
//!   computes its Cayley blocks into a caller workspace, giving a [`Prepared`] adapter.
//! - [`Session`]: resident adapters, the active one, merged mode with in-place swaps.
//! - `baked` (cargo feature `baked`): a base and prepared adapters written ahead of time
//!   into one compact blob, and the small reader a minimal firmware runs it with.

mod adapter;
#[cfg(feature = "baked")]
pub mod baked;
#[cfg(feature = "bert")]
mod bert;
mod model;
mod session;
pub mod weights;

pub use adapter::{
    Adapter, ClsHead, Head, Method, Prepared, KEY_COMPATIBLE_MODEL_IDS, MAX_ADAPTED_SLOTS,
    MAX_HEAD_TENSORS,
};
#[cfg(feature = "bert")]
pub use bert::{BertConfig, MAX_BERT_BLOCKS};
pub use model::{Architecture, Input, Model, Slot, MAX_LAYERS, MAX_SLOTS};
pub use session::{AdapterHandle, Session, MAX_RESIDENT};
