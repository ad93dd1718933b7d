//! Causal (generative) models in the CLI: a `llama` base with resident adapters, its
//! tokenizer and chat template, and generation through `riffle-host`. Shared by
//! `generate`, `chat`, `bench` and `run` on causal models.

use riffle_core::runtime::{AdapterHandle, DecoderState, KvType, Model, Session};
use riffle_core::sample::SamplerConfig;
use riffle_host::chat::{ChatTemplate, Message};
use riffle_host::generate::{self, Buffers, GenerateOptions, Generation, LogitAdjust};
use riffle_host::text::Vocabulary;

use crate::fail::{bad, core_bad, runtime, Result};
use crate::files::load_model;
use crate::limits::zeroed;
use crate::residents::Residents;

/// Tokens read per prefill step: the arena holds this many, longer prompts are read in
/// several steps (bounded memory whatever the prompt).
pub const PREFILL_CHUNK: usize = 256;

/// How a decoder's key/value cache keeps its values (`--cache-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CacheType {
    /// 4 bytes a value: exact float arithmetic.
    #[default]
    F32,
    /// 2 bytes a value (half the memory, as llama.cpp keeps its cache): each key and value
    /// rounded to the nearest IEEE half.
    F16,
}

impl From<CacheType> for KvType {
    fn from(c: CacheType) -> KvType {
        match c {
            CacheType::F32 => KvType::F32,
            CacheType::F16 => KvType::F16,
        }
    }
}

/// The `--cache-type` flag of the commands that run a decoder.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct CacheArgs {
    /// How the key/value cache keeps keys and values: `f32` (exact) or `f16` (half the
    /// memory, as llama.cpp keeps its cache).
    #[arg(long, value_enum, default_value_t = CacheType::F32, value_name = "TYPE")]
    pub cache_type: CacheType,
}

/// The memory of a decoder's key/value cache, in the type `--cache-type` chose.
pub enum KvBuffer {
    /// `f32` values.
    F32(Vec<f32>),
    /// IEEE half bits.
    F16(Vec<u16>),
}

impl KvBuffer {
    /// A zeroed cache of `model`'s keys and values for `context` positions, its size
    /// checked before anything is allocated (`what` names it in the error).
    ///
    /// # Errors
    /// A bad input when the cache is past the CLI's buffer limit or cannot be allocated.
    pub fn new(model: &Model<'_>, context: usize, kind: CacheType, what: &str) -> Result<Self> {
        let n = model.state_len(context);
        Ok(match kind {
            CacheType::F32 => KvBuffer::F32(zeroed(n, what)?),
            CacheType::F16 => KvBuffer::F16(zeroed(n, what)?),
        })
    }

    /// An empty decoder state of `context` positions over the whole buffer.
    ///
    /// # Errors
    /// The core's error when the buffer is short for `context` positions of `model`.
    pub fn state(
        &mut self,
        model: &Model<'_>,
        context: usize,
    ) -> std::result::Result<DecoderState<'_>, riffle_core::Error> {
        let need = model.state_len(context);
        match self {
            KvBuffer::F32(v) => DecoderState::new(v, need, context),
            KvBuffer::F16(v) => DecoderState::new_f16(v, need, context),
        }
    }

    /// A state over the whole buffer that lives as long as the process (the server's
    /// slots, made once at start-up).
    ///
    /// # Errors
    /// As [`KvBuffer::state`].
    pub fn leak(
        self,
        model: &Model<'_>,
        context: usize,
    ) -> std::result::Result<DecoderState<'static>, riffle_core::Error> {
        let need = model.state_len(context);
        match self {
            KvBuffer::F32(v) => DecoderState::new(v.leak(), need, context),
            KvBuffer::F16(v) => DecoderState::new_f16(v.leak(), need, context),
        }
    }

    /// Bytes the cache holds.
    pub fn bytes(&self) -> usize {
        let (kind, len) = match self {
            KvBuffer::F32(v) => (KvType::F32, v.len()),
            KvBuffer::F16(v) => (KvType::F16, v.len()),
        };
        kind.bytes() * len
    }
}

/// How tokens are chosen: the sampler, logit bias and penalties, and JSON mode (the
/// decoding flags of `generate` and `chat`).
#[derive(Debug, Clone, PartialEq)]
pub struct Decoding {
    /// Temperature, top-k, top-p, seed.
    pub sampler: SamplerConfig,
    /// Frequency and presence penalties.
    pub adjust: LogitAdjust,
    /// Only tokens that keep the answer one JSON object.
    pub json_object: bool,
}

/// A causal base and its adapters, parsed and checked, with the memory they borrow.
pub struct Llm<'f> {
    /// Name of the base file.
    pub name: String,
    /// The base.
    pub model: Model<'f>,
    residents: Residents<'f>,
    vocab_index: Vec<u32>,
    template: Option<ChatTemplate>,
}

impl<'f> Llm<'f> {
    /// Loads a causal base and its adapters.
    ///
    /// # Errors
    /// A bad input naming the file at fault: not a causal model, a malformed or unusable
    /// tokenizer or chat template, an adapter for another base, two adapters with one task.
    pub fn load(model: (&str, &'f [u8]), adapters: &[(&str, &'f [u8])]) -> Result<Self> {
        let (name, bytes) = model;
        let m = load_model(name, bytes)?;
        if !m.is_causal() {
            return Err(bad(
                name,
                format!(
                    "is a `{}` model, not a generative (causal) one",
                    m.architecture().name()
                ),
            ));
        }
        let index_len =
            Vocabulary::index_len(m.gguf()).map_err(|e| core_bad(name, e, Some(m.gguf())))?;
        let vocab_index = zeroed::<u32>(index_len, &format!("{name}: the tokenizer index"))?;
        let template = ChatTemplate::from_gguf(m.gguf()).map_err(|e| bad(name, e))?;
        let residents = Residents::load(&m, name, adapters, None)?;
        Ok(Llm {
            name: name.to_string(),
            model: m,
            residents,
            vocab_index,
            template,
        })
    }

    /// Prepares every adapter and opens a session with all of them resident, the bare
    /// base active, on the process's `--threads` pool, and the tokenizer.
    ///
    /// # Errors
    /// A bad input naming the adapter that fails to prepare or the tokenizer's file.
    pub fn open(&mut self) -> Result<Chat<'_, 'f>> {
        let Llm {
            name,
            model,
            residents,
            vocab_index,
            template,
        } = self;
        let model: &Model<'f> = model;
        let vocab = Vocabulary::new(model.gguf(), vocab_index)
            .map_err(|e| core_bad(&*name, e, Some(model.gguf())))?;
        let session = residents.session(model)?;
        Ok(Chat {
            session,
            vocab,
            template: template.as_ref(),
            name: name.as_str(),
        })
    }
}

/// A live session over an [`Llm`]: the session, the tokenizer, the template.
pub struct Chat<'s, 'f> {
    session: Session<'s, 'f, 's>,
    vocab: Vocabulary<'s, 'f>,
    template: Option<&'s ChatTemplate>,
    name: &'s str,
}

impl<'s, 'f> Chat<'s, 'f> {
    /// The session.
    pub fn session(&self) -> &Session<'s, 'f, 's> {
        &self.session
    }
    /// The base.
    pub fn model(&self) -> &'s Model<'f> {
        self.session.model()
    }
    /// The tokenizer.
    pub fn vocab(&self) -> &Vocabulary<'s, 'f> {
        &self.vocab
    }
    /// Task names of the resident adapters, by handle.
    pub fn tasks(&self) -> Vec<&'f str> {
        self.session
            .adapters()
            .iter()
            .map(|p| p.task_name())
            .collect()
    }

    /// Handle of the adapter for `task` (`None` for `base`).
    ///
    /// # Errors
    /// An unknown task, naming `what` and listing the resident tasks.
    pub fn handle(&self, task: &str, what: &str) -> Result<Option<AdapterHandle>> {
        if task == "base" && self.session.find(task).is_none() {
            return Ok(None);
        }
        self.session.find(task).map(Some).ok_or_else(|| {
            crate::engine::unknown_task(task, &self.tasks(), what, "; `base` for none")
        })
    }

    /// Activates the adapter a command starts with: `task` (`--task`; `base` for none),
    /// by default the first resident adapter; returns the active task (`None`: the bare
    /// base).
    ///
    /// # Errors
    /// An unknown task (naming `--task`); a runtime failure.
    pub fn start_with(&mut self, task: Option<&str>) -> Result<Option<&'f str>> {
        let h = match task {
            Some(t) => self.handle(t, "--task")?,
            // The first resident adapter is handle 0.
            None => (!self.session.adapters().is_empty()).then_some(0),
        };
        self.activate(h)?;
        Ok(h.and_then(|h| self.session.adapters().get(h))
            .map(|p| p.task_name()))
    }

    /// Activates adapter `h`, or the bare base (unmerged: O(1)).
    ///
    /// # Errors
    /// A runtime failure.
    pub fn activate(&mut self, h: Option<AdapterHandle>) -> Result<()> {
        self.session
            .activate(h, &mut [])
            .map_err(|e| runtime(self.name, e))
    }

    /// The prompt text of a chat: the file's template over `messages` with the assistant
    /// turn opened.
    ///
    /// # Errors
    /// A bad input when the file has no chat template or it fails to render.
    pub fn chat_text(&self, messages: &[Message]) -> Result<String> {
        let t = self.template.ok_or_else(|| {
            bad(
                self.name,
                "has no chat template (`tokenizer.chat_template`); use --prompt",
            )
        })?;
        t.render(messages, true).map_err(|e| bad(self.name, e))
    }

    /// Token ids of `text` as llama.cpp's tokenizer gives them (special tokens in the text
    /// are parsed; a beginning-of-sequence token only if the file asks for one).
    ///
    /// # Errors
    /// A bad input naming `what` when the text cannot be tokenized.
    pub fn encode(&self, text: &str, what: &str) -> Result<Vec<u32>> {
        self.vocab.encode(text).map_err(|e| bad(what, e))
    }

    /// Tokens that end a generation: end of sequence and end of turn.
    pub fn stop_tokens(&self) -> Vec<u32> {
        self.vocab.stop_tokens()
    }

    /// Generates after `prompt` (read into `state` after what it holds).
    ///
    /// # Errors
    /// A bad input for a prompt longer than the context; a runtime failure otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn generate(
        &self,
        state: &mut DecoderState<'_>,
        prompt: &[u32],
        decoding: &Decoding,
        max_tokens: usize,
        bufs: &mut Buffers,
        on_piece: &mut dyn FnMut(u32, &str) -> bool,
    ) -> Result<Generation> {
        let opts = GenerateOptions {
            max_tokens,
            sampler: decoding.sampler,
            stop_tokens: self.stop_tokens(),
            adjust: decoding.adjust.clone(),
            json_object: decoding.json_object,
        };
        generate::generate(
            &self.session,
            state,
            prompt,
            &self.vocab,
            &opts,
            bufs,
            on_piece,
        )
        .map_err(|e| match e {
            riffle_core::Error::ContextExceeded { needed, context } => bad(
                "the prompt",
                format!("{needed} tokens do not fit the context of {context} tokens"),
            ),
            e => runtime(self.name, e),
        })
    }
}

/// Positions a state needs for a prompt of `prompt` tokens and `max_tokens` more, within
/// the model's context.
///
/// # Errors
/// A bad input when the prompt alone does not fit the model's context.
pub fn context_for(model: &Model<'_>, prompt: usize, max_tokens: usize) -> Result<usize> {
    let max = model.max_tokens();
    if prompt >= max {
        return Err(bad(
            "the prompt",
            format!("{prompt} tokens do not fit the model's context of {max} tokens"),
        ));
    }
    Ok((prompt + max_tokens).min(max))
}

/// Generation buffers for `model`.
pub fn buffers(model: &Model<'_>) -> Buffers {
    Buffers::new(model, PREFILL_CHUNK)
}
