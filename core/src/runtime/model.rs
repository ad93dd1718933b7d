//! Base models read in place from GGUF bytes.
//!
//! A model is a table of **linear slots** ([`SlotTable`]) plus one architecture
//! (`arch/`), which knows the rest of the network: embeddings, norms, attention,
//! convolutions. Every slot runs through one routine (`linear::Linears::apply`) that
//! applies an adapter unmerged (`y = s ⊙ Q_out (W (Q_in x)) + bias`) or reads merged
//! weights.

use super::adapter::Prepared;
use super::arch::{Arch, Architecture, InputKind};
use super::linear::{Exec, Linears, ONE_THREAD};
use super::slots::{Base, BaseFacts, CallerSlots, CountSlots, Slot, SlotTable};
#[cfg(feature = "llama")]
use super::state::{DecoderState, Logits};
use crate::gguf::{self, Gguf, StringArray};
use crate::{Error, Result};

/// One input to [`Model::run`].
#[derive(Debug, Clone, Copy)]
pub enum Input<'x> {
    /// A feature vector, for `mlp` and `cnn` (length [`Model::input_len`]).
    Vector(&'x [f32]),
    /// Token ids, for text models (from [`crate::text`]'s tokenizer, with `[CLS]` and `[SEP]`).
    Tokens(&'x [u32]),
}

/// Most sequences one [`Model::decode_steps`] call decodes together.
#[cfg(feature = "llama")]
pub const MAX_STEPS: usize = 64;

/// One sequence's part of [`Model::decode_steps`]: its adapter, its state and the token
/// it reads next.
#[cfg(feature = "llama")]
#[derive(Debug)]
pub struct DecodeStep<'s, 'k, 'a, 'w> {
    /// The adapter applied unmerged (`None`: the bare base); the state must have been
    /// computed under it.
    pub adapter: Option<&'s Prepared<'a, 'w>>,
    /// The sequence's keys and values.
    pub state: &'s mut DecoderState<'k>,
    /// The token read at the state's next position.
    pub token: u32,
}

/// A base model borrowed from its GGUF bytes. Zero-copy: it holds the parsed table and
/// views of the tensors, never a copy of the weights.
#[derive(Debug, Clone)]
pub struct Model<'a> {
    gguf: Gguf<'a>,
    slots: SlotTable<'a>,
    arch: Arch<'a>,
    model_id: heapless::String<64>,
    labels: Option<StringArray<'a>>,
}

impl<'a> Model<'a> {
    /// Reads a base model from GGUF bytes (flash, a static, an mmap, an `ArrayBuffer`),
    /// its slot table in the model itself ([`super::MAX_SLOTS`] records; larger models
    /// load with [`Model::from_bytes_in`]).
    ///
    /// Checks everything once: the container ([`Gguf::parse`]), `general.type`, the
    /// architecture's keys, every tensor's presence, type and shape. The model id is the
    /// stored `riffle.model_id` (no hashing); a file without one is hashed once here.
    ///
    /// # Errors
    /// Any container error; [`Error::UnsupportedModel`] for an adapter, a dataset or an
    /// unknown architecture; [`Error::MissingKey`], [`Error::WrongValueType`],
    /// [`Error::MissingTensor`], [`Error::ShapeMismatch`] for a malformed model;
    /// [`Error::SlotStorageTooSmall`] for a model of more than [`super::MAX_SLOTS`] slots.
    /// Never panics.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self> {
        let g = open(bytes)?;
        let mut records = heapless::Vec::new();
        let arch = Arch::load(g.get_str(gguf::KEY_ARCHITECTURE)?, &g, &mut records)?;
        Model::finish(g, SlotTable::owned(records), arch)
    }

    /// Slot records that [`Model::from_bytes_in`] needs for the model in `bytes`: the
    /// file, not a constant, sets the capacity. Checks the file as
    /// [`Model::from_bytes`] does.
    ///
    /// # Errors
    /// As [`Model::from_bytes`], without [`Error::SlotStorageTooSmall`].
    pub fn storage_len(bytes: &'a [u8]) -> Result<usize> {
        let g = open(bytes)?;
        let mut count = CountSlots(0);
        Arch::load(g.get_str(gguf::KEY_ARCHITECTURE)?, &g, &mut count)?;
        Ok(count.0)
    }

    /// Reads a base model as [`Model::from_bytes`] does, its slot table in `storage`
    /// (at least [`Model::storage_len`] records, `vec![Slot::empty(); n]`, borrowed as
    /// long as the model), so any number of slots, blocks and layers loads: no constant
    /// bounds an architecture (a `bert`'s and a `llama`'s per-block norms ride in the slot
    /// records, a `cnn`'s convolution shapes follow from its slots).
    ///
    /// # Errors
    /// As [`Model::from_bytes`]; [`Error::SlotStorageTooSmall`] (the model's slot count
    /// and `storage.len()`) when `storage` is shorter than [`Model::storage_len`].
    pub fn from_bytes_in(bytes: &'a [u8], storage: &'a mut [Slot<'a>]) -> Result<Self> {
        let g = open(bytes)?;
        let mut sink = CallerSlots {
            buf: storage,
            len: 0,
        };
        let arch = Arch::load(g.get_str(gguf::KEY_ARCHITECTURE)?, &g, &mut sink)?;
        let (buf, len): (&'a [Slot<'a>], usize) = (sink.buf, sink.len);
        let used = buf.get(..len).ok_or(Error::CapacityExceeded)?;
        Model::finish(g, SlotTable::caller(used), arch)
    }

    /// The model of a loaded architecture: id, labels and their check.
    #[inline(always)] // one caller in a build that loads one way (smaller firmware)
    fn finish(g: Gguf<'a>, slots: SlotTable<'a>, arch: Arch<'a>) -> Result<Self> {
        let model_id = g.binding_id()?;
        let labels = g.get_strings(gguf::KEY_LABELS).ok();
        let m = Model {
            gguf: g,
            slots,
            arch,
            model_id,
            labels,
        };
        if let Some(l) = &m.labels {
            if l.len() != m.output_len() {
                let last = m.slots.as_slice().last().ok_or(Error::MissingTensor)?;
                return Err(Error::ShapeMismatch {
                    tensor: last.weight.index(),
                });
            }
        }
        Ok(m)
    }

    /// The parsed container.
    pub fn gguf(&self) -> &Gguf<'a> {
        &self.gguf
    }
    /// The architecture.
    pub fn architecture(&self) -> Architecture {
        self.arch.kind()
    }
    /// What the model takes as input.
    pub fn input_kind(&self) -> InputKind {
        self.arch.input()
    }
    /// The linear slots, in forward order.
    pub fn slots(&self) -> &[Slot<'a>] {
        self.slots.as_slice()
    }
    /// The slot table.
    pub fn slot_table(&self) -> &SlotTable<'a> {
        &self.slots
    }
    /// Index of the slot whose weight tensor is `name`.
    pub fn slot_index(&self, name: &str) -> Option<usize> {
        self.slots.index_of(&self.gguf, name)
    }
    /// Index of the slot whose bias tensor is `name`.
    pub fn bias_slot_index(&self, name: &str) -> Option<usize> {
        self.slots.bias_index_of(&self.gguf, name)
    }
    /// The base tensor name of slot `i` (what adapters use to address it).
    pub fn slot_name(&self, i: usize) -> &'a str {
        self.slots.name_of(&self.gguf, i)
    }
    /// Length of the input vector, or the longest input in tokens of a text model.
    pub fn input_len(&self) -> usize {
        match self.input_kind() {
            InputKind::Vector { len } => len,
            InputKind::Tokens { max } => max,
        }
    }
    /// Length of the base's output vector: logits, or for `bert` the sentence embedding.
    pub fn output_len(&self) -> usize {
        self.arch.output_len(&self.slots)
    }

    /// The `bert` hyper-parameters (text models only).
    #[cfg(feature = "bert")]
    pub fn bert_config(&self) -> Option<super::BertConfig> {
        self.arch.bert().map(|b| b.config)
    }

    /// Hidden width of a text model (what a classification head reads), `None` otherwise.
    pub(crate) fn text_hidden(&self) -> Option<usize> {
        self.arch.pooled_width()
    }

    /// Longest input in tokens (`[CLS]` and `[SEP]` included) for text models, 0 otherwise.
    pub fn max_tokens(&self) -> usize {
        match self.input_kind() {
            InputKind::Tokens { max } => max,
            InputKind::Vector { .. } => 0,
        }
    }

    /// `u32`s of tokenizer index that [`Model::tokenizer`] needs (text models).
    ///
    /// # Errors
    /// [`Error::UnsupportedModel`] for a model without a WordPiece vocabulary.
    #[cfg(feature = "text")]
    pub fn tokenizer_index_len(&self) -> Result<usize> {
        crate::text::gguf_index_len(&self.gguf)
    }

    /// The model's WordPiece tokenizer, its index built in `index` (see
    /// [`Model::tokenizer_index_len`]). `tokenizer.encode(text, model.max_tokens(), &mut ids)`
    /// gives the ids for [`Input::Tokens`].
    ///
    /// # Errors
    /// As [`crate::text::Tokenizer::from_gguf`].
    #[cfg(feature = "text")]
    pub fn tokenizer<'i>(
        &self,
        index: &'i mut [u32],
    ) -> Result<crate::text::Tokenizer<'i, StringArray<'a>>> {
        crate::text::Tokenizer::from_gguf(&self.gguf, index)
    }
    /// The model id adapters bind to (`riffle.model_id`, or the hash of the data span
    /// when the file has none).
    pub fn model_id(&self) -> &str {
        &self.model_id
    }
    /// Recomputes the SHA-256 model id over the data span and compares it with the id in
    /// use: the slow, explicit verification (`riffle inspect --verify`).
    #[cfg(feature = "sha256")]
    pub fn verify_model_id(&self) -> bool {
        self.gguf.compute_model_id() == self.model_id
    }
    /// Class labels of the base head (`riffle.labels`), if any.
    pub fn labels(&self) -> Option<StringArray<'a>> {
        self.labels
    }

    /// Exact arena length (in `f32`s; bytes are 4×) that [`Model::run`] needs for one
    /// input of at most `max_tokens` tokens (ignored by vector-input models) with an
    /// adapter whose head has at most `head_rows` outputs (0 = the base head). Known
    /// before anything runs, like TFLM's `arena_used_bytes`. Computed with saturating
    /// arithmetic: dimensions from a file whose arena does not fit in `usize` give
    /// `usize::MAX`, which no caller can allocate (check sizes against a limit before
    /// allocating, as the CLI does).
    pub fn arena_len(&self, max_tokens: usize, head_rows: usize) -> usize {
        self.arch.arena_len(&self.slots, max_tokens, head_rows)
    }

    /// Largest batch of rows one slot sees in a vector model: the pixels of the first
    /// convolution, or 1. [`Model::arena_len`] holds the dense kernel's scratch for it,
    /// [`super::weights::weight_scratch_len`]`(widest input, max_batch())`, whose value
    /// depends on the target: a build script that sizes a firmware's arena on the host
    /// re-evaluates that term for the target (see `firmware/cortex-m4/build.rs`).
    pub fn max_batch(&self) -> usize {
        self.arch.max_batch()
    }

    /// Runs one input through the base, or through the base with `adapter` applied
    /// unmerged. Writes the output (logits, or the pooled embedding of a text model
    /// without a head) into `output` and returns how many values were written.
    ///
    /// Merged weights are run only through [`super::Session::run`]: the session owns the
    /// merged buffer together with the adapter merged into it, so the merged weights of
    /// one adapter can never be paired with another adapter's head. A `Model` call that
    /// hands merged weights in does not compile:
    ///
    /// ```compile_fail,E0061
    /// # use riffle_core::runtime::{Input, Model};
    /// fn misuse(m: &Model<'_>, merged: &[f32], out: &mut [f32], arena: &mut [f32]) {
    ///     let _ = m.run(None, Some(merged), Input::Vector(&[0.0]), out, arena);
    /// }
    /// ```
    ///
    /// while the call with an adapter alone does:
    ///
    /// ```
    /// # use riffle_core::runtime::{Input, Model};
    /// fn base(m: &Model<'_>, out: &mut [f32], arena: &mut [f32]) {
    ///     let _ = m.run(None, Input::Vector(&[0.0]), out, arena);
    /// }
    /// ```
    ///
    /// # Errors
    /// [`Error::BadInput`] for an input of the wrong kind or length;
    /// [`Error::BufferTooSmall`] if `arena` is shorter than [`Model::arena_len`] or
    /// `output` shorter than the head; [`Error::BaseMismatch`] for an adapter prepared
    /// against another model. Never panics.
    pub fn run(
        &self,
        adapter: Option<&Prepared<'a, '_>>,
        input: Input<'_>,
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize> {
        self.run_in(ONE_THREAD, adapter, None, input, output, arena)
    }

    /// [`Model::run`] with its dense products split across `exec`'s threads (results
    /// identical to one thread's).
    ///
    /// # Errors
    /// As [`Model::run`].
    #[cfg(feature = "parallel")]
    pub fn run_on(
        &self,
        exec: &dyn crate::par::Executor,
        adapter: Option<&Prepared<'a, '_>>,
        input: Input<'_>,
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize> {
        self.run_in(Some(exec), adapter, None, input, output, arena)
    }

    pub(crate) fn run_in(
        &self,
        exec: Exec<'_>,
        adapter: Option<&Prepared<'a, '_>>,
        merged: Option<&[f32]>,
        input: Input<'_>,
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize> {
        self.check_run(adapter, merged)?;
        let lin = Linears {
            slots: &self.slots,
            adapter,
            merged,
            exec,
            block_kernels: self.arch.is_causal(),
        };
        self.arch.forward(&lin, input, output, arena)
    }

    /// True for a causal (generative) model, run token by token with a [`DecoderState`].
    pub fn is_causal(&self) -> bool {
        self.arch.is_causal()
    }

    /// The `llama` hyper-parameters (decoder models only).
    #[cfg(feature = "llama")]
    pub fn llama_config(&self) -> Option<super::LlamaConfig> {
        self.arch.llama().map(|l| l.config)
    }

    /// Values of [`DecoderState`] for `context` positions (0 for models without state):
    /// `f32`s, or halves for [`DecoderState::new_f16`] (times [`super::KvType::bytes`] in
    /// bytes).
    pub fn state_len(&self, context: usize) -> usize {
        self.arch.state_len(context)
    }

    /// Arena `f32`s of one [`Model::step`] over at most `max_tokens` new tokens.
    pub fn step_arena_len(&self, max_tokens: usize) -> usize {
        self.arch.step_arena_len(max_tokens)
    }

    /// Reads `tokens` into `state` after the positions it holds, with `adapter` applied
    /// unmerged, and writes the logits of the next token into `output`; returns their
    /// count. Prefill a prompt with one call, then decode one token per call. The state
    /// records the adapter it was computed under. Merged weights: [`super::Session::step`].
    ///
    /// # Errors
    /// [`Error::UnsupportedModel`] for a model without state; [`Error::StaleState`] for a
    /// state computed under another adapter; [`Error::ContextExceeded`] past the state's
    /// context; [`Error::BadInput`] for no token or an id outside the vocabulary;
    /// [`Error::BufferTooSmall`] for a short arena or output. On error the state keeps
    /// its positions (a failed step may have written the cache past them).
    #[cfg(feature = "llama")]
    pub fn step(
        &self,
        adapter: Option<&Prepared<'a, '_>>,
        state: &mut DecoderState<'_>,
        tokens: &[u32],
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize> {
        self.step_in(
            ONE_THREAD,
            adapter,
            None,
            state,
            tokens,
            Logits::Last,
            output,
            arena,
        )
    }

    /// One decoding step of each of several sequences at once (a server's requests,
    /// each with its own state and adapter): `steps[b]` reads its token into its state
    /// under its adapter (unmerged; `None`: the bare base), and the logits of its next
    /// token go to `output[b · V ..][..V]` (`V` = [`Model::output_len`]). The base's
    /// weights are read once for all the steps instead of once per sequence, which is
    /// what a memory-bound decoder spends its time on; every row of logits is bit for bit
    /// what [`Model::step`] gives that sequence alone. `arena` holds
    /// [`Model::decode_steps_arena_len`]`(steps.len())` values.
    ///
    /// ```
    /// use riffle_core::runtime::{DecodeStep, DecoderState, Model};
    /// // The tests' tiny random llama (2 blocks, vocabulary of 261).
    /// let file = include_bytes!("../../../tests/data/llama/tiny-llama-f32.gguf");
    /// let model = Model::from_bytes(&file[..])?;
    /// let (context, vocab) = (16, model.output_len());
    /// let need = model.state_len(context);
    /// let mut kv = [vec![0.0f32; need], vec![0.0f32; need], vec![0.0f32; need]];
    /// let [kv_a, kv_b, kv_c] = &mut kv;
    /// let mut a = DecoderState::new(kv_a, need, context)?;
    /// let mut b = DecoderState::new(kv_b, need, context)?;
    /// let mut c = DecoderState::new(kv_c, need, context)?; // b's twin, stepped alone
    /// let (mut arena, mut alone) = (vec![0.0f32; model.step_arena_len(3)], vec![0.0f32; vocab]);
    /// model.step(None, &mut a, &[1, 2, 3], &mut alone, &mut arena)?; // two prompts
    /// model.step(None, &mut b, &[4, 5], &mut alone, &mut arena)?;
    /// model.step(None, &mut c, &[4, 5], &mut alone, &mut arena)?;
    ///
    /// // One step of both sequences at once (each may name its own adapter).
    /// let mut logits = vec![0.0f32; 2 * vocab];
    /// let mut steps_arena = vec![0.0f32; model.decode_steps_arena_len(2)];
    /// let mut steps = [
    ///     DecodeStep { adapter: None, state: &mut a, token: 7 },
    ///     DecodeStep { adapter: None, state: &mut b, token: 8 },
    /// ];
    /// model.decode_steps(&mut steps, &mut logits, &mut steps_arena)?;
    /// assert_eq!((a.len(), b.len()), (4, 3));
    ///
    /// // Row 1 is b's next-token logits, exactly as a step of b alone gives them.
    /// model.step(None, &mut c, &[8], &mut alone, &mut arena)?;
    /// assert_eq!(&logits[vocab..], &alone[..]);
    /// # Ok::<(), riffle_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Model::step`] for any of the steps (checked for all before the first state
    /// changes: on error no state records a new position); [`Error::BadInput`] for no
    /// step; [`Error::CapacityExceeded`] for more than [`MAX_STEPS`].
    #[cfg(feature = "llama")]
    pub fn decode_steps(
        &self,
        steps: &mut [DecodeStep<'_, '_, 'a, '_>],
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<()> {
        self.decode_steps_in(ONE_THREAD, steps, output, arena)
    }

    /// [`Model::decode_steps`] with its dense products and attention split across
    /// `exec`'s threads (results identical to one thread's).
    ///
    /// # Errors
    /// As [`Model::decode_steps`].
    #[cfg(all(feature = "llama", feature = "parallel"))]
    pub fn decode_steps_on(
        &self,
        exec: &dyn crate::par::Executor,
        steps: &mut [DecodeStep<'_, '_, 'a, '_>],
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<()> {
        self.decode_steps_in(Some(exec), steps, output, arena)
    }

    #[cfg(feature = "llama")]
    fn decode_steps_in(
        &self,
        exec: Exec<'_>,
        steps: &mut [DecodeStep<'_, '_, 'a, '_>],
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<()> {
        if steps.len() > MAX_STEPS {
            return Err(Error::CapacityExceeded);
        }
        for s in steps.iter() {
            self.check_run(s.adapter, None)?;
        }
        match &self.arch {
            super::arch::Arch::Llama(l) => l.decode_steps(&self.slots, exec, steps, output, arena),
            #[allow(unreachable_patterns)]
            _ => Err(Error::UnsupportedModel),
        }
    }

    /// Arena length (`f32`s) that [`Model::decode_steps`] needs for `n` sequences (0 for
    /// a model without state).
    #[cfg(feature = "llama")]
    pub fn decode_steps_arena_len(&self, n: usize) -> usize {
        match &self.arch {
            super::arch::Arch::Llama(l) => l.steps_arena(n.max(1)),
            #[allow(unreachable_patterns)]
            _ => 0,
        }
    }

    /// [`Model::step`] with its dense products split across `exec`'s threads (results
    /// identical to one thread's).
    ///
    /// # Errors
    /// As [`Model::step`].
    #[cfg(all(feature = "llama", feature = "parallel"))]
    pub fn step_on(
        &self,
        exec: &dyn crate::par::Executor,
        adapter: Option<&Prepared<'a, '_>>,
        state: &mut DecoderState<'_>,
        tokens: &[u32],
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize> {
        self.step_in(
            Some(exec),
            adapter,
            None,
            state,
            tokens,
            Logits::Last,
            output,
            arena,
        )
    }

    /// [`Model::step`] writing the logits after every token read: `tokens.len()` rows of
    /// [`Model::output_len`] values in `output`, row `i` predicting the token after
    /// `tokens[i]` (the last row is what [`Model::step`] writes). Scores a text (its
    /// log-likelihood, perplexity) at the speed and with the arithmetic of a prompt read in
    /// one step.
    ///
    /// # Errors
    /// As [`Model::step`]; [`Error::BufferTooSmall`] for an output shorter than
    /// `tokens.len()` rows.
    #[cfg(feature = "llama")]
    pub fn step_all(
        &self,
        adapter: Option<&Prepared<'a, '_>>,
        state: &mut DecoderState<'_>,
        tokens: &[u32],
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize> {
        self.step_in(
            ONE_THREAD,
            adapter,
            None,
            state,
            tokens,
            Logits::Every,
            output,
            arena,
        )
    }

    #[cfg(feature = "llama")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn step_in(
        &self,
        exec: Exec<'_>,
        adapter: Option<&Prepared<'a, '_>>,
        merged: Option<&[f32]>,
        state: &mut DecoderState<'_>,
        tokens: &[u32],
        rows: Logits,
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize> {
        self.check_run(adapter, merged)?;
        let owner = adapter.map(|p| p.state_key());
        let (kv, context, past) = state.claim(owner)?;
        let lin = Linears {
            slots: &self.slots,
            adapter,
            merged,
            exec,
            block_kernels: self.arch.is_causal(),
        };
        let n = self
            .arch
            .step(&lin, tokens, kv, context, past, rows, output, arena)?;
        state.advance(tokens.len(), owner);
        Ok(n)
    }

    fn check_run(&self, adapter: Option<&Prepared<'a, '_>>, merged: Option<&[f32]>) -> Result<()> {
        if let Some(m) = merged {
            if m.len() != self.merged_len() {
                return Err(Error::LengthMismatch {
                    expected: self.merged_len(),
                    found: m.len(),
                });
            }
        }
        if let Some(p) = adapter {
            if p.model_id() != self.model_id() {
                return Err(Error::BaseMismatch);
            }
        }
        Ok(())
    }

    /// Total `f32`s of merged weights: every slot's `rows·cols`.
    pub fn merged_len(&self) -> usize {
        self.slots.merged_len()
    }

    /// Offset of slot `i`'s weights inside the merged buffer.
    pub(crate) fn merged_offset(&self, i: usize) -> usize {
        self.slots.merged_offset(i)
    }

    /// Writes every slot's base weights, decoded to `f32`, into `out` (the starting point
    /// of merged mode, and the re-merge that resets swap drift).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `out.len() != merged_len()`.
    pub fn decode_weights_into(&self, out: &mut [f32]) -> Result<()> {
        if out.len() != self.merged_len() {
            return Err(Error::LengthMismatch {
                expected: self.merged_len(),
                found: out.len(),
            });
        }
        let mut off = 0;
        for s in self.slots.as_slice() {
            let n = s.rows * s.cols;
            s.weight.decode_f32(0, &mut out[off..off + n])?;
            off += n;
        }
        Ok(())
    }
}

impl<'a> Base<'a> for Model<'a> {
    fn facts(&self) -> BaseFacts<'_, 'a> {
        BaseFacts {
            architecture: self.architecture().name(),
            model_id: &self.model_id,
            gguf: &self.gguf,
            slots: &self.slots,
            pooled_width: self.text_hidden(),
            output_len: self.output_len(),
        }
    }
}

/// Parses a model file and checks `general.type`.
fn open(bytes: &[u8]) -> Result<Gguf<'_>> {
    let g = Gguf::parse(bytes)?;
    if let Ok(t) = g.get_str(gguf::KEY_TYPE) {
        if t != gguf::TYPE_MODEL {
            return Err(Error::UnsupportedModel);
        }
    }
    Ok(g)
}
