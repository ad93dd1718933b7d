//! Metadata keys, fixed values and tensor names of `docs/format.md`.
//!
//! These constants are the only place where GGUF key and tensor names are spelled
//! in Rust code; everything else refers to them.

// ---- general (all files) ----

/// `general.architecture` (string): `bert`, `mlp`, ...
pub const KEY_ARCHITECTURE: &str = "general.architecture";
/// `general.type` (string): [`TYPE_MODEL`] or [`TYPE_ADAPTER`].
pub const KEY_TYPE: &str = "general.type";
/// `general.name` (string): a human name.
pub const KEY_NAME: &str = "general.name";
/// `general.alignment` (u32, a power of two; absent means [`super::DEFAULT_ALIGNMENT`]).
pub const KEY_ALIGNMENT: &str = "general.alignment";

/// Value of `general.type` for a base model.
pub const TYPE_MODEL: &str = "model";
/// Value of `general.type` for an adapter.
pub const TYPE_ADAPTER: &str = "adapter";
/// Value of `general.architecture` for BERT encoders (llama.cpp's names).
pub const ARCH_BERT: &str = "bert";
/// Value of `general.architecture` for the small multilayer perceptron.
pub const ARCH_MLP: &str = "mlp";

// ---- riffle ----

/// `riffle.model_id` (string): lowercase hex SHA-256 of a base model's data span.
pub const KEY_MODEL_ID: &str = "riffle.model_id";
/// `riffle.labels` (array of string): class labels of a base model's head.
pub const KEY_LABELS: &str = "riffle.labels";
/// `riffle.data_crc32` (u32): CRC-32 of an adapter's data span.
pub const KEY_DATA_CRC32: &str = "riffle.data_crc32";

// ---- adapters ----

/// `adapter.type` (string): [`ADAPTER_TYPE_ORTHOGONAL`].
pub const KEY_ADAPTER_TYPE: &str = "adapter.type";
/// Value of `adapter.type` for riffle's orthogonal adapters.
pub const ADAPTER_TYPE_ORTHOGONAL: &str = "orthogonal";
/// `adapter.orthogonal.method` (string): `gsoft`, `double_gsoft`, `oft`, `boft`.
pub const KEY_ORTHOGONAL_METHOD: &str = "adapter.orthogonal.method";
/// `adapter.orthogonal.block_size` (u32): the block size b.
pub const KEY_ORTHOGONAL_BLOCK_SIZE: &str = "adapter.orthogonal.block_size";
/// `adapter.orthogonal.permutation` (string): `gs`, `butterfly` or `none`.
pub const KEY_ORTHOGONAL_PERMUTATION: &str = "adapter.orthogonal.permutation";
/// `adapter.orthogonal.factor_count` (u32): m, factors per side.
pub const KEY_ORTHOGONAL_FACTOR_COUNT: &str = "adapter.orthogonal.factor_count";
/// `adapter.base_model_id` (string): the base's `riffle.model_id`.
pub const KEY_BASE_MODEL_ID: &str = "adapter.base_model_id";
/// `adapter.task_name` (string): e.g. `sentiment`.
pub const KEY_TASK_NAME: &str = "adapter.task_name";
/// `adapter.labels` (array of string): labels of the adapter's own head.
pub const KEY_ADAPTER_LABELS: &str = "adapter.labels";

/// `adapter.orthogonal.method` value: GSOFT.
pub const METHOD_GSOFT: &str = "gsoft";
/// `adapter.orthogonal.method` value: Double GSOFT.
pub const METHOD_DOUBLE_GSOFT: &str = "double_gsoft";
/// `adapter.orthogonal.method` value: OFT.
pub const METHOD_OFT: &str = "oft";
/// `adapter.orthogonal.method` value: BOFT.
pub const METHOD_BOFT: &str = "boft";
/// `adapter.orthogonal.permutation` value: the GS shuffle.
pub const PERMUTATION_GS: &str = "gs";
/// `adapter.orthogonal.permutation` value: butterfly.
pub const PERMUTATION_BUTTERFLY: &str = "butterfly";
/// `adapter.orthogonal.permutation` value: identity.
pub const PERMUTATION_NONE: &str = "none";

/// Middle of an input-side factor name: `T.oft_in.{f}`.
pub const TENSOR_OFT_IN: &str = ".oft_in.";
/// Middle of an output-side factor name: `T.oft_out.{f}`.
pub const TENSOR_OFT_OUT: &str = ".oft_out.";
/// Suffix of a per-output scale name: `T.oft_scale`.
pub const TENSOR_OFT_SCALE: &str = ".oft_scale";

// ---- mlp ----

/// `mlp.layer_count` (u32): number of linear layers L.
pub const KEY_MLP_LAYER_COUNT: &str = "mlp.layer_count";
/// `mlp.activation` (string): [`ACTIVATION_RELU`].
pub const KEY_MLP_ACTIVATION: &str = "mlp.activation";
/// `mlp.input_length` (u32): length of the input vector.
pub const KEY_MLP_INPUT_LENGTH: &str = "mlp.input_length";
/// `mlp.activation` value: ReLU between layers.
pub const ACTIVATION_RELU: &str = "relu";
/// Prefix of the MLP's tensors: `layers.{i}.weight`, `layers.{i}.bias`.
pub const TENSOR_MLP_LAYER_PREFIX: &str = "layers.";

/// Suffix of a weight tensor.
pub const SUFFIX_WEIGHT: &str = ".weight";
/// Suffix of a bias tensor.
pub const SUFFIX_BIAS: &str = ".bias";

// ---- bert (llama.cpp's names) ----

/// `bert.block_count`: number of encoder blocks.
pub const KEY_BERT_BLOCK_COUNT: &str = "bert.block_count";
/// `bert.context_length`: maximum sequence length.
pub const KEY_BERT_CONTEXT_LENGTH: &str = "bert.context_length";
/// `bert.embedding_length`: hidden size.
pub const KEY_BERT_EMBEDDING_LENGTH: &str = "bert.embedding_length";
/// `bert.feed_forward_length`: intermediate size.
pub const KEY_BERT_FEED_FORWARD_LENGTH: &str = "bert.feed_forward_length";
/// `bert.attention.head_count`: attention heads.
pub const KEY_BERT_HEAD_COUNT: &str = "bert.attention.head_count";
/// `bert.attention.layer_norm_epsilon` (f32 in llama.cpp's files).
pub const KEY_BERT_LAYER_NORM_EPSILON: &str = "bert.attention.layer_norm_epsilon";
/// `bert.attention.causal` (bool, false for BERT).
pub const KEY_BERT_CAUSAL: &str = "bert.attention.causal";
/// `bert.pooling_type`: [`POOLING_NONE`], [`POOLING_MEAN`] or [`POOLING_CLS`].
pub const KEY_BERT_POOLING_TYPE: &str = "bert.pooling_type";
/// `bert.pooling_type` value: no pooling.
pub const POOLING_NONE: u32 = 0;
/// `bert.pooling_type` value: mean over tokens.
pub const POOLING_MEAN: u32 = 1;
/// `bert.pooling_type` value: the `[CLS]` token.
pub const POOLING_CLS: u32 = 2;

/// `tokenizer.ggml.model` (string): [`TOKENIZER_MODEL_BERT`] for WordPiece.
pub const KEY_TOKENIZER_MODEL: &str = "tokenizer.ggml.model";
/// `tokenizer.ggml.model` value for BERT's WordPiece.
pub const TOKENIZER_MODEL_BERT: &str = "bert";
/// `tokenizer.ggml.tokens` (array of string), spelled with the phantom space
/// ([`PHANTOM_SPACE`]) as llama.cpp's converter writes it.
pub const KEY_TOKENIZER_TOKENS: &str = "tokenizer.ggml.tokens";
/// `tokenizer.ggml.token_type` (array of i32): `TOKEN_TYPE_*` per token.
pub const KEY_TOKENIZER_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
/// `tokenizer.ggml.bos_token_id`: `[CLS]` in llama.cpp's BERT files.
pub const KEY_TOKENIZER_BOS_ID: &str = "tokenizer.ggml.bos_token_id";
/// `tokenizer.ggml.eos_token_id`: `[SEP]` in llama.cpp's BERT files.
pub const KEY_TOKENIZER_EOS_ID: &str = "tokenizer.ggml.eos_token_id";
/// `tokenizer.ggml.seperator_token_id` (gguf's spelling): `[SEP]`.
pub const KEY_TOKENIZER_SEP_ID: &str = "tokenizer.ggml.seperator_token_id";
/// `tokenizer.ggml.cls_token_id`: defined by gguf-py but not written by
/// llama.cpp's BERT converter (use [`KEY_TOKENIZER_BOS_ID`] when it is absent).
pub const KEY_TOKENIZER_CLS_ID: &str = "tokenizer.ggml.cls_token_id";
/// `tokenizer.ggml.unknown_token_id`: `[UNK]`.
pub const KEY_TOKENIZER_UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
/// `tokenizer.ggml.padding_token_id`: `[PAD]`.
pub const KEY_TOKENIZER_PAD_ID: &str = "tokenizer.ggml.padding_token_id";
/// `tokenizer.ggml.mask_token_id`: `[MASK]`.
pub const KEY_TOKENIZER_MASK_ID: &str = "tokenizer.ggml.mask_token_id";
/// `tokenizer.ggml.add_bos_token` (bool).
pub const KEY_TOKENIZER_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
/// `tokenizer.ggml.add_eos_token` (bool).
pub const KEY_TOKENIZER_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";

/// The phantom space U+2581 (`▁`) that starts word-initial tokens in llama.cpp's
/// BERT vocabularies (continuation tokens lose their `##` instead).
pub const PHANTOM_SPACE: char = '\u{2581}';

/// `tokenizer.ggml.token_type` value: a normal token.
pub const TOKEN_TYPE_NORMAL: i32 = 1;
/// `tokenizer.ggml.token_type` value: the unknown token.
pub const TOKEN_TYPE_UNKNOWN: i32 = 2;
/// `tokenizer.ggml.token_type` value: a control token (`[CLS]`, `[SEP]`, ...).
pub const TOKEN_TYPE_CONTROL: i32 = 3;
/// `tokenizer.ggml.token_type` value: user-defined.
pub const TOKEN_TYPE_USER_DEFINED: i32 = 4;
/// `tokenizer.ggml.token_type` value: unused.
pub const TOKEN_TYPE_UNUSED: i32 = 5;
/// `tokenizer.ggml.token_type` value: a byte token.
pub const TOKEN_TYPE_BYTE: i32 = 6;

/// `token_embd.weight`: word embeddings, PyTorch shape `(vocab, hidden)`.
pub const TENSOR_TOKEN_EMBD: &str = "token_embd.weight";
/// `token_types.weight`: token-type (segment) embeddings.
pub const TENSOR_TOKEN_TYPES: &str = "token_types.weight";
/// `position_embd.weight`: position embeddings.
pub const TENSOR_POSITION_EMBD: &str = "position_embd.weight";
/// `token_embd_norm.weight`: embedding layer norm gain.
pub const TENSOR_TOKEN_EMBD_NORM_WEIGHT: &str = "token_embd_norm.weight";
/// `token_embd_norm.bias`: embedding layer norm bias.
pub const TENSOR_TOKEN_EMBD_NORM_BIAS: &str = "token_embd_norm.bias";
/// Prefix of per-block tensors: `blk.{N}.{layer}{suffix}`.
pub const TENSOR_BLOCK_PREFIX: &str = "blk.";
/// Per-block layer: query projection.
pub const LAYER_ATTN_Q: &str = "attn_q";
/// Per-block layer: key projection.
pub const LAYER_ATTN_K: &str = "attn_k";
/// Per-block layer: value projection.
pub const LAYER_ATTN_V: &str = "attn_v";
/// Per-block layer: attention output projection.
pub const LAYER_ATTN_OUTPUT: &str = "attn_output";
/// Per-block layer: layer norm after attention.
pub const LAYER_ATTN_OUTPUT_NORM: &str = "attn_output_norm";
/// Per-block layer: feed-forward up projection.
pub const LAYER_FFN_UP: &str = "ffn_up";
/// Per-block layer: feed-forward down projection.
pub const LAYER_FFN_DOWN: &str = "ffn_down";
/// Per-block layer: layer norm after the feed-forward.
pub const LAYER_LAYER_OUTPUT_NORM: &str = "layer_output_norm";

/// `llama.block_count`: decoder blocks.
pub const KEY_LLAMA_BLOCK_COUNT: &str = "llama.block_count";
/// `llama.context_length`: longest sequence the model was trained for.
pub const KEY_LLAMA_CONTEXT_LENGTH: &str = "llama.context_length";
/// `llama.embedding_length`: hidden width.
pub const KEY_LLAMA_EMBEDDING_LENGTH: &str = "llama.embedding_length";
/// `llama.feed_forward_length`: SwiGLU width.
pub const KEY_LLAMA_FEED_FORWARD_LENGTH: &str = "llama.feed_forward_length";
/// `llama.attention.head_count`: query heads.
pub const KEY_LLAMA_HEAD_COUNT: &str = "llama.attention.head_count";
/// `llama.attention.head_count_kv`: key/value heads (grouped-query attention).
pub const KEY_LLAMA_HEAD_COUNT_KV: &str = "llama.attention.head_count_kv";
/// `llama.attention.layer_norm_rms_epsilon`: RMS norm epsilon.
pub const KEY_LLAMA_RMS_EPSILON: &str = "llama.attention.layer_norm_rms_epsilon";
/// `llama.rope.freq_base`: RoPE frequency base (10000 when absent).
pub const KEY_LLAMA_ROPE_FREQ_BASE: &str = "llama.rope.freq_base";
/// `llama.rope.dimension_count`: rotated elements per head (the head width when absent).
pub const KEY_LLAMA_ROPE_DIMENSION_COUNT: &str = "llama.rope.dimension_count";
/// `llama.vocab_size`: vocabulary size (the embedding table's rows when absent).
pub const KEY_LLAMA_VOCAB_SIZE: &str = "llama.vocab_size";
/// `output_norm.weight`: the final RMS norm of a decoder.
pub const TENSOR_OUTPUT_NORM: &str = "output_norm.weight";
/// `output.weight`: a decoder's output head (absent when tied to `token_embd.weight`).
pub const TENSOR_OUTPUT: &str = "output.weight";
/// Per-block layer: RMS norm before attention.
pub const LAYER_ATTN_NORM: &str = "attn_norm";
/// Per-block layer: RMS norm before the feed-forward.
pub const LAYER_FFN_NORM: &str = "ffn_norm";
/// Per-block layer: SwiGLU gate projection.
pub const LAYER_FFN_GATE: &str = "ffn_gate";

/// Longest tensor name the name builders below produce.
pub const TENSOR_NAME_CAPACITY: usize = 96;

/// A tensor name built in a fixed buffer.
pub type TensorName = heapless::String<TENSOR_NAME_CAPACITY>;

/// Appends `v` in decimal to `out` (no `core::fmt`: names are built on microcontrollers
/// too); `None` if it does not fit.
pub(crate) fn push_decimal<const N: usize>(out: &mut heapless::String<N>, v: u32) -> Option<()> {
    out.push_str(decimal(v, &mut [0; 10])).ok()
}

/// `v` in decimal, written at the end of `buf` (one copy of the digit loop, whatever
/// the string capacity).
fn decimal(v: u32, buf: &mut [u8; 10]) -> &str {
    // Least significant digit first; a u32 has at most 10.
    let mut n = 0usize;
    let mut v = v;
    for d in buf.iter_mut().rev() {
        *d = b'0'.wrapping_add((v % 10) as u8);
        n = n.wrapping_add(1);
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let start = buf.len().saturating_sub(n);
    buf.get(start..)
        .and_then(|d| core::str::from_utf8(d).ok())
        .unwrap_or("")
}

/// Concatenates `parts`, with `number` in decimal after the first one, or `None` if the
/// result is longer than [`TENSOR_NAME_CAPACITY`].
fn build(first: &str, number: Option<u32>, rest: &[&str]) -> Option<TensorName> {
    let mut s = TensorName::new();
    s.push_str(first).ok()?;
    if let Some(n) = number {
        push_decimal(&mut s, n)?;
    }
    for p in rest {
        s.push_str(p).ok()?;
    }
    Some(s)
}

/// `blk.{block}.{layer}{suffix}`, e.g. `block_tensor_name(3, LAYER_ATTN_Q, SUFFIX_WEIGHT)`
/// is `blk.3.attn_q.weight`. `None` if longer than [`TENSOR_NAME_CAPACITY`].
pub fn block_tensor_name(block: u32, layer: &str, suffix: &str) -> Option<TensorName> {
    build(TENSOR_BLOCK_PREFIX, Some(block), &[".", layer, suffix])
}

/// `layers.{layer}{suffix}`, e.g. `layers.0.weight`. `None` if too long.
pub fn mlp_tensor_name(layer: u32, suffix: &str) -> Option<TensorName> {
    build(TENSOR_MLP_LAYER_PREFIX, Some(layer), &[suffix])
}

/// `{base}.oft_in.{factor}`, or `{base}.oft_out.{factor}` when `output_side`.
/// `None` if too long.
pub fn oft_factor_name(base: &str, output_side: bool, factor: u32) -> Option<TensorName> {
    let mid = if output_side {
        TENSOR_OFT_OUT
    } else {
        TENSOR_OFT_IN
    };
    build(base, None, &[mid]).and_then(|mut s| push_decimal(&mut s, factor).map(|()| s))
}

/// `{base}.oft_scale`. `None` if too long.
pub fn oft_scale_name(base: &str) -> Option<TensorName> {
    build(base, None, &[TENSOR_OFT_SCALE])
}
