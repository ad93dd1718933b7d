//! The one error type of `riffle-core`.
//!
//! Every failure the core can meet, on any input, is a variant of [`Error`]: it is
//! `Copy`, holds no strings and needs no allocator, and its `Display` text names the
//! problem in a short lowercase sentence (with a hint where one helps). Fields are
//! small integers: a tensor index, a byte offset, the sizes that disagree. Front ends
//! (the CLI, the wasm bindings) add file and tensor names around it.

use core::fmt;

/// The baked blob layout version this build reads (`runtime::baked`).
pub(crate) const BAKED_VERSION: u32 = 1;

/// Shorthand for `core::result::Result<T, riffle_core::Error>`.
pub type Result<T> = core::result::Result<T, Error>;

/// Everything that can go wrong in `riffle-core`.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    // ---- shapes and configuration of orthogonal chains ----
    /// A block size below 2 or above [`crate::math::MAX_BLOCK_SIZE`].
    InvalidBlockSize {
        /// The block size that was asked for.
        block: u32,
    },
    /// A side of width `dim` cannot be split into blocks of size `block`.
    NotDivisible {
        /// The width of the side (`in` or `out`).
        dim: u32,
        /// The block size.
        block: u32,
    },
    /// A chain needs at least one factor, and at most [`crate::math::MAX_FACTORS`].
    InvalidFactorCount {
        /// The factor count that was asked for.
        factors: u32,
    },
    /// A butterfly chain with `factors > 1` needs an even block size and a width
    /// divisible by `block * 2^(factors - 1)`.
    ButterflyShape {
        /// The width of the side.
        dim: u32,
        /// The block size.
        block: u32,
        /// The number of butterfly factors.
        factors: u32,
    },
    /// A parameter (skew entry or scale) is NaN or infinite.
    NonFiniteParameter {
        /// Position of the value in its tensor.
        index: u32,
    },
    /// A per-output scale is zero, so the adapter could not be unmerged or swapped out.
    ZeroScale {
        /// Position of the zero in the scale vector.
        index: u32,
    },
    /// A per-output scale is outside the accepted magnitudes
    /// [`crate::math::MIN_SCALE`]`..=`[`crate::math::MAX_SCALE`]: merging it into the
    /// weights and dividing it out again would lose precision (subnormal products) or
    /// overflow, so merged and unmerged runs would disagree.
    ScaleOutOfRange {
        /// Position of the value in the scale vector.
        index: u32,
    },
    /// A Cayley solve overflowed (parameters so large that f32 arithmetic fails).
    NumericalFailure,
    /// A caller-provided buffer is shorter than the operation needs.
    BufferTooSmall {
        /// Elements (or bytes, for byte buffers) the operation needs.
        needed: usize,
        /// Elements (or bytes) the caller provided.
        got: usize,
    },
    /// Two lengths that must agree do not (a vector and the width of a chain, say).
    LengthMismatch {
        /// The length the operation expected.
        expected: usize,
        /// The length it was given.
        found: usize,
    },

    // ---- the GGUF container ----
    /// The bytes end before a structure that starts at `offset` is complete.
    Truncated {
        /// Byte offset of the structure that does not fit.
        offset: u64,
    },
    /// The file does not start with the GGUF magic.
    BadMagic,
    /// A GGUF version other than 3.
    UnsupportedVersion(u32),
    /// A metadata value type that GGUF does not define.
    UnknownValueType(u32),
    /// A tensor type this build cannot read (see [`crate::quant::TYPES`]: which types
    /// are compiled in depends on cargo features), or a type an operation does not accept
    /// (`I32` where floats are read).
    UnknownTensorType {
        /// Index of the tensor in the file's tensor table.
        tensor: u32,
        /// The ggml type code found.
        ggml_type: u32,
    },
    /// A count, length, rank or size in the file exceeds the reader's hard limits.
    LimitExceeded {
        /// Byte offset of the offending field.
        offset: u64,
    },
    /// A string in the file is not valid UTF-8.
    InvalidUtf8 {
        /// Byte offset of the string.
        offset: u64,
    },
    /// A tensor's data lies (partly) outside the file.
    TensorOutOfRange {
        /// Index of the tensor in the file's tensor table.
        tensor: u32,
    },
    /// `general.alignment` is zero or not a power of two.
    BadAlignment(u32),
    /// A tensor's offset is not a multiple of the file's alignment.
    Misaligned {
        /// Index of the tensor in the file's tensor table.
        tensor: u32,
    },
    /// Two tensors (or two metadata keys) share one name.
    DuplicateName {
        /// Index of the second occurrence.
        index: u32,
    },
    /// A required metadata key is missing.
    MissingKey {
        /// The key.
        key: KeyName,
    },
    /// A metadata key of a known architecture holds a value this runtime does not
    /// support (an activation other than `relu`, a layer count of 0, ...).
    UnsupportedValue {
        /// The key.
        key: KeyName,
    },
    /// A metadata key holds a value of the wrong type.
    WrongValueType,
    /// A required tensor is missing.
    MissingTensor,
    /// The CRC-32 stored in an adapter does not match its data.
    CrcMismatch {
        /// The value stored in `riffle.data_crc32`.
        stored: u32,
        /// The value computed over the data span.
        computed: u32,
    },

    // ---- models and adapters ----
    /// The file is a GGUF file, but not of the kind expected here (a model where an
    /// adapter was expected, an unknown architecture, ...).
    UnsupportedModel,
    /// The adapter was made for a different base model (`adapter.base_model_id`
    /// differs from the base's `riffle.model_id`).
    BaseMismatch,
    /// An adapter tensor's name matches nothing in the base.
    UnknownTensor {
        /// Index of the tensor in the adapter's tensor table.
        tensor: u32,
    },
    /// An adapter tensor needs a capability that this build of riffle-core leaves out
    /// (a task head without the `heads` cargo feature, an output-side chain without
    /// `double-sided`). Builds with the default features never return it.
    Unsupported {
        /// Index of the tensor in the adapter's tensor table.
        tensor: u32,
    },
    /// A tensor's shape does not match what the base or the method requires.
    ShapeMismatch {
        /// Index of the tensor in its file's tensor table.
        tensor: u32,
    },
    /// A task name or adapter handle that is not resident.
    UnknownTask,
    /// An input of the wrong length or kind for this model.
    BadInput,
    /// A fixed-capacity table (resident adapters, baked adapters, name buffers) is full.
    CapacityExceeded,
    /// The model has more linear slots (layers, convolutions, block linears) than the
    /// slot storage holds: the model's own table for
    /// [`crate::runtime::Model::from_bytes`] ([`crate::runtime::MAX_SLOTS`] records), or
    /// the caller's for [`crate::runtime::Model::from_bytes_in`] (size it with
    /// [`crate::runtime::Model::storage_len`]).
    SlotStorageTooSmall {
        /// Slot records the model's keys declare.
        needed: usize,
        /// Slot records the storage holds.
        got: usize,
    },
    /// A causal model was asked to hold more positions than its context (or its state
    /// buffer) allows.
    ContextExceeded {
        /// Positions the request needs.
        needed: usize,
        /// Positions available.
        context: usize,
    },
    /// An adapter replaces the weight of a layer it also rotates (only the bias of a
    /// rotated layer may be replaced).
    RotatedReplacement {
        /// Index of the replacement weight in the adapter's tensor table.
        tensor: u32,
    },
    /// A decoder state was computed under another adapter (or the bare base): its keys
    /// and values must not be reused; reset it and re-read the prompt.
    StaleState,

    // ---- baked blobs (cargo feature `baked`) ----
    /// The bytes do not start with the baked blob's magic, `RFBK`.
    BadBakedMagic,
    /// A baked blob of a layout version this reader does not know.
    UnsupportedBakedVersion(u32),

    // ---- text ----
    /// A tokenizer vocabulary is unusable: a special-token id is not in it, or the
    /// vocabulary source reports ids, lengths or locators that disagree.
    BadVocabulary {
        /// The token id at fault (`u32::MAX` when no single id is).
        id: u32,
    },
    /// A BPE merge (`tokenizer.ggml.merges`) is not two tokens of the vocabulary
    /// separated by a space.
    BadMerge {
        /// The merge's rank (its position in the array; `u32::MAX` for the array).
        rank: u32,
    },
    /// The file's `tokenizer.ggml.pre` names a pre-tokenizer riffle does not implement.
    UnsupportedPreTokenizer,
}

/// The name of a metadata key carried by an [`Error`]. A `&'static str` whose `Debug`
/// writes the plain text: a derived `Debug` of a `str` would link Unicode escaping
/// (about 2.5 KB) into every firmware that prints an error with `{:?}`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyName(pub &'static str);

impl Error {
    /// [`Error::MissingKey`] naming `key`.
    pub(crate) const fn missing_key(key: &'static str) -> Error {
        Error::MissingKey { key: KeyName(key) }
    }
}

impl KeyName {
    /// The key.
    pub const fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Debug for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::InvalidBlockSize { block } => write!(
                f,
                "block size {block} is not supported (need 2 <= b <= {})",
                crate::math::MAX_BLOCK_SIZE
            ),
            Error::NotDivisible { dim, block } => {
                write!(f, "width {dim} is not divisible by block size {block}")
            }
            Error::InvalidFactorCount { factors } => write!(
                f,
                "factor count {factors} is not supported (need 1 <= m <= {})",
                crate::math::MAX_FACTORS
            ),
            Error::ButterflyShape { dim, block, factors } => write!(
                f,
                "butterfly with {factors} factors needs an even block size and a width divisible by block * 2^(factors-1); got width {dim}, block {block}"
            ),
            Error::NonFiniteParameter { index } => {
                write!(f, "parameter {index} is NaN or infinite")
            }
            Error::ZeroScale { index } => write!(
                f,
                "scale {index} is zero, so the adapter cannot be removed from merged weights"
            ),
            // The bounds as text: `{:e}` would link float formatting into every firmware.
            Error::ScaleOutOfRange { index } => write!(
                f,
                "scale {index} is outside the accepted magnitudes 2^-20..=2^20 (merged and unmerged runs would disagree)"
            ),
            Error::NumericalFailure => write!(
                f,
                "the Cayley transform overflowed in f32 (parameters far too large)"
            ),
            Error::BufferTooSmall { needed, got } => {
                write!(f, "buffer too small: need {needed}, got {got}")
            }
            Error::LengthMismatch { expected, found } => {
                write!(f, "length mismatch: expected {expected}, found {found}")
            }
            Error::Truncated { offset } => {
                write!(f, "file is truncated: data ends inside the structure at byte {offset}")
            }
            Error::BadMagic => write!(f, "not a GGUF file (bad magic)"),
            Error::UnsupportedVersion(v) => {
                write!(f, "unsupported GGUF version {v} (only version 3 is read)")
            }
            Error::UnknownValueType(t) => write!(f, "unknown GGUF metadata value type {t}"),
            Error::UnknownTensorType { tensor, ggml_type } => {
                match crate::quant::TensorType::from_ggml_any(ggml_type) {
                    // A type this build reads, refused by the operation that reads it.
                    Some(t) if t.is_compiled() => write!(
                        f,
                        "tensor {tensor} has type {t} ({ggml_type}), which this tensor cannot have"
                    ),
                    // A known type whose cargo feature is off, or an unknown code.
                    known => {
                        write!(f, "tensor {tensor} has unsupported type {ggml_type}")?;
                        if let Some(t) = known {
                            write!(f, " ({t}, not compiled into this build)")?;
                        }
                        f.write_str(" (supported: ")?;
                        crate::quant::write_supported(f)?;
                        f.write_str(")")
                    }
                }
            }
            Error::LimitExceeded { offset } => write!(
                f,
                "a count or length at byte {offset} exceeds the reader's limits (corrupt file?)"
            ),
            Error::InvalidUtf8 { offset } => write!(f, "string at byte {offset} is not UTF-8"),
            Error::TensorOutOfRange { tensor } => {
                write!(f, "tensor {tensor} lies outside the file")
            }
            Error::BadAlignment(a) => {
                write!(f, "general.alignment is {a}, which is not a power of two")
            }
            Error::Misaligned { tensor } => {
                write!(f, "tensor {tensor} is not aligned to the file's alignment")
            }
            Error::DuplicateName { index } => write!(f, "duplicate name at entry {index}"),
            Error::MissingKey { key } => write!(f, "required metadata key {key} is missing"),
            Error::UnsupportedValue { key } => {
                write!(f, "metadata key {key} holds a value this runtime does not support")
            }
            Error::WrongValueType => write!(f, "a metadata key holds a value of the wrong type"),
            Error::MissingTensor => write!(f, "a required tensor is missing"),
            Error::CrcMismatch { stored, computed } => write!(
                f,
                "CRC mismatch: file says {stored:08x}, data gives {computed:08x} (corrupt or edited file)"
            ),
            Error::UnsupportedModel => write!(f, "unsupported model or file kind"),
            Error::BaseMismatch => write!(
                f,
                "adapter was made for a different base model (adapter.base_model_id does not match)"
            ),
            Error::UnknownTensor { tensor } => write!(
                f,
                "adapter tensor {tensor} matches no tensor of the base (maybe the wrong base model)"
            ),
            Error::Unsupported { tensor } => write!(
                f,
                "adapter tensor {tensor} needs a capability this build leaves out (task heads or output-side chains)"
            ),
            Error::ShapeMismatch { tensor } => {
                write!(f, "tensor {tensor} has the wrong shape for this base or method")
            }
            Error::UnknownTask => write!(f, "no resident adapter has that task name or handle"),
            Error::BadInput => write!(f, "input has the wrong length or kind for this model"),
            Error::CapacityExceeded => write!(f, "a fixed-capacity table is full"),
            Error::SlotStorageTooSmall { needed, got } => write!(
                f,
                "the model has {needed} linear slots, its slot storage holds {got}"
            ),
            Error::ContextExceeded { needed, context } => write!(
                f,
                "{needed} positions do not fit the context of {context} tokens"
            ),
            Error::RotatedReplacement { tensor } => write!(
                f,
                "tensor {tensor} replaces the weight of a layer the adapter also rotates (only its bias may be replaced)"
            ),
            Error::StaleState => write!(
                f,
                "the decoder state belongs to another adapter (reset it and re-read the prompt)"
            ),
            Error::BadBakedMagic => write!(f, "not a baked riffle blob (bad magic)"),
            Error::UnsupportedBakedVersion(v) => write!(
                f,
                "unsupported baked blob version {v} (this reader reads version {})",
                BAKED_VERSION
            ),
            Error::BadMerge { rank } => write!(
                f,
                "tokenizer merge {rank} is not two vocabulary tokens separated by a space"
            ),
            Error::UnsupportedPreTokenizer => {
                write!(f, "unsupported tokenizer.ggml.pre (pre-tokenizer) in this file")
            }
            Error::BadVocabulary { id } => write!(
                f,
                "tokenizer vocabulary is inconsistent or lacks token id {id} (wrong special-token ids?)"
            ),
        }
    }
}

impl core::error::Error for Error {}
