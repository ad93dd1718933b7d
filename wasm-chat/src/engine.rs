//! The state behind one `ChatModel`: plain Rust over `riffle-core` and `riffle-host`, no
//! JavaScript types, so that the host tests drive exactly what the worker runs.
//!
//! # Generation in slices
//!
//! A Web Worker that runs a long loop cannot read its messages, so a Stop button could not
//! reach it. [`ChatEngine::begin`] only records the prompt; every [`ChatEngine::advance`]
//! does one bounded piece of work (one chunk of the prompt, or one generated token) and
//! returns, and the worker yields to its message loop between calls. Stop is then the
//! worker not calling `next` again: generation ends at the next token.
//!
//! # Buffers
//!
//! As in `riffle-wasm`, the long-lived buffers the core borrows are leaked once per model
//! (`riffle_wasm_shared::load`, `Box::leak`, no `unsafe`): the file bytes (filled in place
//! by [`Upload`], so the model exists once in wasm memory), the parsed model, the
//! key/value state; and each adapter's bytes and workspace once per successful
//! [`ChatEngine::add_adapter`]. A bad file is rejected before anything is leaked.

use riffle_core::gguf::{self, Gguf, StringArray};
use riffle_core::runtime::{AdapterHandle, DecoderState, Model, Session};
use riffle_core::sample::{Sampler, SamplerConfig};
use riffle_core::text::bpe::{BpeTokenizer, EncodeOptions};
use riffle_core::Error;
use riffle_host::chat::{ChatTemplate, Message};
use riffle_host::generate::{TokenBytes, Utf8Stream};
use riffle_wasm_shared::load::{self, what};
pub use riffle_wasm_shared::load::{Failure, Result};
pub use riffle_wasm_shared::now_ms;

/// A model file written into wasm memory piece by piece as it downloads: one buffer of
/// the announced size, so the file never exists twice.
#[derive(Debug)]
pub struct Upload {
    bytes: Vec<u8>,
    expected: usize,
}

impl Upload {
    /// Room for a file of `len` bytes (allocated once, up front).
    pub fn new(len: usize) -> Self {
        Upload {
            bytes: Vec::with_capacity(len),
            expected: len,
        }
    }
    /// Appends the next piece; refused past the announced size.
    ///
    /// # Errors
    /// More bytes than announced.
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        if self.bytes.len() + chunk.len() > self.expected {
            return Err(Failure::new(
                "model",
                format!("more bytes than the announced {} arrived", self.expected),
                Some(Error::BadInput),
            ));
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }
    /// Bytes received so far.
    pub fn received(&self) -> usize {
        self.bytes.len()
    }
    /// The whole file; refused while bytes are missing.
    ///
    /// # Errors
    /// Fewer bytes than announced.
    pub fn finish(self) -> Result<Vec<u8>> {
        if self.bytes.len() != self.expected {
            return Err(Failure::new(
                "model",
                format!(
                    "download ended after {} of {} bytes",
                    self.bytes.len(),
                    self.expected
                ),
                Some(Error::BadInput),
            ));
        }
        Ok(self.bytes)
    }
}

/// The bytes of a byte-level BPE vocabulary (GPT-2's `tokenizer.ggml.model = "gpt2"`):
/// each printable character of a token stands for one byte. Control tokens (type 3:
/// `<|im_start|>`, ...) give no text.
#[derive(Debug, Clone, Copy)]
pub struct ByteVocab<'a> {
    tokens: StringArray<'a>,
    types: Option<gguf::ArrayView<'a>>,
}

/// The byte a character of a byte-level BPE token stands for (GPT-2's table: printable
/// Latin-1 characters stand for themselves, the other 68 bytes are shifted to U+0100..).
fn char_byte(c: char) -> Option<u8> {
    let c = c as u32;
    let printable = |b: u32| {
        (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    if c < 0x100 {
        return printable(c).then_some(c as u8);
    }
    // U+0100 + n is the n-th byte (ascending) that is not printable.
    let n = c - 0x100;
    (0u32..256)
        .filter(|&b| !printable(b))
        .nth(n as usize)
        .map(|b| b as u8)
}

impl<'a> ByteVocab<'a> {
    /// The vocabulary of a GGUF file.
    ///
    /// # Errors
    /// A file without `tokenizer.ggml.tokens`.
    pub fn from_gguf(g: &Gguf<'a>) -> std::result::Result<Self, Error> {
        Ok(ByteVocab {
            tokens: g.get_strings("tokenizer.ggml.tokens")?,
            types: g.get_array("tokenizer.ggml.token_type").ok(),
        })
    }
    /// The id of token text `s`.
    pub fn id(&self, s: &str) -> Option<u32> {
        self.tokens.position(s).map(|i| i as u32)
    }
    /// The token's text as the file spells it.
    pub fn text(&self, id: u32) -> Option<&'a str> {
        self.tokens.get(id as usize)
    }
    fn is_control(&self, id: u32) -> bool {
        self.types
            .and_then(|t| t.get_i32(id as usize))
            .is_some_and(|t| t == 3)
    }
}

impl TokenBytes for ByteVocab<'_> {
    fn token_bytes(&self, id: u32, out: &mut Vec<u8>) {
        if self.is_control(id) {
            return;
        }
        let Some(s) = self.tokens.get(id as usize) else {
            return;
        };
        for c in s.chars() {
            match char_byte(c) {
                Some(b) => out.push(b),
                None => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
    }
}

/// One resident adapter, as `info()` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterInfo {
    /// Its handle.
    pub handle: AdapterHandle,
    /// `adapter.task_name`.
    pub task: String,
    /// `general.description` (or `adapter.description`), empty when absent.
    pub description: String,
    /// The method (`gsoft`, `double_gsoft`, `oft`, `boft`).
    pub method: &'static str,
    /// Size of its file.
    pub file_bytes: usize,
    /// Bytes of its prepared workspace.
    pub workspace_bytes: usize,
    /// Time `addAdapter` took, ms.
    pub prepare_ms: f64,
}

/// What one call of [`ChatEngine::advance`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A chunk of the prompt was read: `done` of `total` tokens.
    Prompt {
        /// Prompt tokens read so far.
        done: usize,
        /// Prompt tokens to read.
        total: usize,
    },
    /// A token was generated, with the text it completes (maybe empty).
    Token {
        /// Its id.
        id: u32,
        /// The text it completes.
        text: String,
    },
    /// The generation is over.
    Done {
        /// `stop` (end token), `length`, `context`.
        reason: &'static str,
    },
}

/// Timings of the current (or last) generation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timings {
    /// Tokens of the prompt that had to be read (after the reused prefix).
    pub prompt_tokens: usize,
    /// Tokens of the prompt reused from the state of the previous turn.
    pub reused_tokens: usize,
    /// Milliseconds spent reading them.
    pub prompt_ms: f64,
    /// Tokens generated.
    pub tokens: usize,
    /// Milliseconds spent generating after the first token's logits.
    pub decode_ms: f64,
}

#[derive(Debug)]
struct Run {
    pending: Vec<u32>,
    at: usize,
    sampler: Sampler,
    stream: Utf8Stream,
    max_tokens: usize,
    produced: usize,
    /// The last sampled token, still to be read into the state.
    feed: Option<u32>,
    done: bool,
}

/// Prompt tokens read per [`ChatEngine::advance`] call.
pub const PROMPT_CHUNK: usize = 32;

/// One causal base model, its resident adapters, one conversation state.
#[derive(Debug)]
pub struct ChatEngine {
    model: &'static Model<'static>,
    session: Session<'static, 'static, 'static>,
    state: DecoderState<'static>,
    /// The ids in `state`, to reuse the common prefix of the next prompt.
    cached: Vec<u32>,
    vocab: ByteVocab<'static>,
    /// The file's byte-level BPE tokenizer (its index leaked like the model bytes).
    tokenizer: Option<BpeTokenizer<'static, 'static>>,
    template: Option<ChatTemplate>,
    stop_tokens: Vec<u32>,
    model_bytes: usize,
    state_bytes: usize,
    arena: Vec<f32>,
    logits: Vec<f32>,
    scratch: Vec<u32>,
    swap_scratch: Vec<f32>,
    workspace_lens: Vec<usize>,
    prepare_ms: Vec<f64>,
    descriptions: Vec<String>,
    run: Option<Run>,
    timings: Timings,
    threads: usize,
}

/// Refuses a base that is not causal (the digits and text demos read those).
fn causal(what: &str, model: &Model<'_>) -> Result<()> {
    if model.is_causal() {
        return Ok(());
    }
    Err(Failure::new(
        what,
        "is not a generative (causal) model; the digits and text demos read it",
        Some(Error::UnsupportedModel),
    ))
}

impl ChatEngine {
    /// Reads a causal base model from its file's bytes (kept: the model runs on them in
    /// place) with a conversation state of `context` positions (clamped to the model's).
    ///
    /// # Errors
    /// A file that is not a causal base model, as `NAME: ...`.
    pub fn new(bytes: Vec<u8>, name: Option<&str>, context: usize) -> Result<Self> {
        let what = what(name, "model");
        let (model, model_bytes) = load::leak_model(bytes, what, causal)?;
        let max = model.llama_config().map_or(context, |c| c.context);
        let context = context.clamp(1, max.max(1));
        let need = model.state_len(context);
        let kv: &'static mut [f32] = Box::leak(vec![0.0f32; need].into_boxed_slice());
        let state =
            DecoderState::new(kv, need, context).map_err(|e| Failure::core(what, e, None))?;
        let vocab = ByteVocab::from_gguf(model.gguf()).map_err(|e| Failure::core(what, e, None))?;
        // A file without a byte-level BPE tokenizer still runs on ids (`encode` refuses).
        let tokenizer = match BpeTokenizer::index_len(model.gguf()) {
            Ok(len) => {
                let index: &'static mut [u32] = Box::leak(vec![0u32; len].into_boxed_slice());
                Some(
                    BpeTokenizer::from_gguf(model.gguf(), index)
                        .map_err(|e| Failure::new(what, format!("tokenizer: {e}"), Some(e)))?,
                )
            }
            Err(_) => None,
        };
        let template = ChatTemplate::from_gguf(model.gguf())
            .map_err(|e| Failure::new(what, format!("chat template: {}", e.0), None))?;
        let mut stop_tokens = Vec::new();
        if let Ok(id) = model.gguf().get_u32("tokenizer.ggml.eos_token_id") {
            stop_tokens.push(id);
        }
        for s in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>"] {
            if let Some(id) = vocab.id(s) {
                if !stop_tokens.contains(&id) {
                    stop_tokens.push(id);
                }
            }
        }
        let out = model.output_len();
        let mut session = Session::new(model);
        let threads = riffle_wasm_shared::use_threads(&mut session);
        Ok(ChatEngine {
            model,
            session,
            state,
            cached: Vec::new(),
            vocab,
            tokenizer,
            template,
            stop_tokens,
            model_bytes,
            state_bytes: need * 4,
            arena: vec![0.0; model.step_arena_len(PROMPT_CHUNK)],
            logits: vec![0.0; out],
            scratch: vec![0; out],
            swap_scratch: Vec::new(),
            workspace_lens: Vec::new(),
            prepare_ms: Vec::new(),
            descriptions: Vec::new(),
            run: None,
            timings: Timings::default(),
            threads,
        })
    }

    /// The base model.
    pub fn model(&self) -> &Model<'static> {
        self.model
    }

    /// The vocabulary (token texts and bytes).
    pub fn vocab(&self) -> ByteVocab<'static> {
        self.vocab
    }

    /// Tokens that end a generation.
    pub fn stop_tokens(&self) -> &[u32] {
        &self.stop_tokens
    }

    /// Validates (container, CRC, kind, architecture, base id, names, shapes, values) and
    /// prepares an adapter, and makes it resident; the active adapter does not change.
    ///
    /// # Errors
    /// Any problem with the file, as `NAME: ...`; nothing changes then.
    pub fn add_adapter(&mut self, bytes: Vec<u8>, name: Option<&str>) -> Result<AdapterHandle> {
        let added = load::add_adapter(&mut self.session, bytes, name)?;
        self.workspace_lens.push(added.workspace_len);
        self.prepare_ms.push(added.prepare_ms);
        self.descriptions.push(added.description);
        let scratch = self.session.swap_scratch_len();
        if self.swap_scratch.len() < scratch {
            self.swap_scratch.resize(scratch, 0.0);
        }
        Ok(added.handle)
    }

    /// Makes `handle` (or the bare base, `None`) answer from the next generation on.
    /// The conversation state is re-read under it by the next [`ChatEngine::begin`].
    ///
    /// # Errors
    /// An unknown handle.
    pub fn use_adapter(&mut self, handle: Option<AdapterHandle>) -> Result<()> {
        self.run = None;
        self.session
            .activate(handle, &mut self.swap_scratch)
            .map_err(|e| Failure::core("adapter handle", e, None))
    }

    /// The active adapter, `None` for the bare base.
    pub fn active(&self) -> Option<AdapterHandle> {
        self.session.active()
    }

    /// The handle of the resident adapter for `task`.
    pub fn find(&self, task: &str) -> Option<AdapterHandle> {
        self.session.find(task)
    }

    /// The resident adapters.
    pub fn adapters(&self) -> Vec<AdapterInfo> {
        self.session
            .adapters()
            .iter()
            .enumerate()
            .map(|(i, p)| AdapterInfo {
                handle: i,
                task: p.task_name().to_string(),
                description: self.descriptions.get(i).cloned().unwrap_or_default(),
                method: p.method().name(),
                file_bytes: p.file_bytes(),
                workspace_bytes: self.workspace_lens.get(i).copied().unwrap_or(0) * 4,
                prepare_ms: self.prepare_ms.get(i).copied().unwrap_or(0.0),
            })
            .collect()
    }

    /// The prompt text of a conversation (the file's chat template), ending with the
    /// assistant's turn opening.
    ///
    /// # Errors
    /// A model without a template, or a template that fails.
    pub fn render(&self, messages: &[Message]) -> Result<String> {
        let t = self.template.as_ref().ok_or_else(|| {
            Failure::new(
                "chat template",
                "the model file has no tokenizer.chat_template",
                None,
            )
        })?;
        t.render(messages, true)
            .map_err(|e| Failure::new("chat template", e.0, None))
    }

    /// The ids of `text` by the file's byte-level BPE tokenizer, special tokens
    /// (`<|im_start|>`, ...) matched in the text, as `llama-tokenize` reads a rendered
    /// chat template.
    ///
    /// # Errors
    /// A model without such a tokenizer, or a text the tokenizer refuses.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let t = self.tokenizer.as_ref().ok_or_else(|| {
            Failure::new(
                "tokenizer",
                "the model file has no byte-level BPE tokenizer (tokenizer.ggml.model gpt2)",
                Some(Error::UnsupportedModel),
            )
        })?;
        let mut out = vec![0u32; text.len() + 2];
        let n = t
            .encode_with(text, &mut out, EncodeOptions::default())
            .map_err(|e| Failure::core("text", e, None))?;
        out.truncate(n);
        Ok(out)
    }

    /// Starts a generation after `prompt` (the whole conversation's ids): the prefix the
    /// state already holds under the active adapter is kept, the rest is read by the
    /// following [`ChatEngine::advance`] calls, `PROMPT_CHUNK` tokens each.
    ///
    /// # Errors
    /// An empty prompt, an id past the vocabulary, or a prompt past the context.
    pub fn begin(
        &mut self,
        prompt: &[u32],
        sampler: SamplerConfig,
        max_tokens: usize,
    ) -> Result<()> {
        let vocab = self.model.output_len();
        if prompt.is_empty() || prompt.iter().any(|&t| t as usize >= vocab) {
            return Err(Failure::core("prompt", Error::BadInput, None));
        }
        if prompt.len() >= self.state.context() {
            return Err(Failure::core(
                "prompt",
                Error::ContextExceeded {
                    needed: prompt.len() + 1,
                    context: self.state.context(),
                },
                None,
            ));
        }
        let owner = self.session.active_adapter().map(|p| p.state_key());
        let mut keep = 0;
        if self.state.owner() == owner || self.state.is_empty() {
            keep = self
                .cached
                .iter()
                .zip(prompt)
                .take_while(|(a, b)| a == b)
                .count()
                .min(self.state.len());
        } else {
            self.state.reset();
        }
        // At least the last prompt token is read again: its logits start the answer. The
        // kept prefix ends on a chunk boundary, so the rest is read in the very chunks a
        // fresh start reads it in (a decoder's answer can turn on a near tie between two
        // tokens, and a one-token step computes differently from a chunk).
        keep = keep.min(prompt.len() - 1);
        keep -= keep % PROMPT_CHUNK;
        self.state.truncate(keep);
        self.cached.truncate(keep);
        self.timings = Timings {
            reused_tokens: keep,
            prompt_tokens: prompt.len() - keep,
            ..Timings::default()
        };
        self.run = Some(Run {
            pending: prompt[keep..].to_vec(),
            at: 0,
            sampler: Sampler::new(sampler),
            stream: Utf8Stream::default(),
            max_tokens,
            produced: 0,
            feed: None,
            done: false,
        });
        Ok(())
    }

    /// One bounded piece of the generation begun by [`ChatEngine::begin`]: a chunk of the
    /// prompt, or one token. After [`Event::Done`] (or with no generation) it returns
    /// `Done` again.
    ///
    /// # Errors
    /// The core's errors (the state is reset then: the next `begin` re-reads everything).
    pub fn advance(&mut self) -> Result<Event> {
        let Some(run) = self.run.as_mut() else {
            return Ok(Event::Done { reason: "idle" });
        };
        if run.done {
            return Ok(Event::Done { reason: "idle" });
        }
        let t0 = now_ms();
        if run.at < run.pending.len() {
            let end = (run.at + PROMPT_CHUNK).min(run.pending.len());
            let chunk = &run.pending[run.at..end];
            if let Err(e) =
                self.session
                    .step(&mut self.state, chunk, &mut self.logits, &mut self.arena)
            {
                return Err(self.fail(e));
            }
            self.cached.extend_from_slice(chunk);
            run.at = end;
            self.timings.prompt_ms += now_ms() - t0;
            return Ok(Event::Prompt {
                done: end,
                total: run.pending.len(),
            });
        }
        if let Some(tok) = run.feed.take() {
            if self.state.len() >= self.state.context() {
                run.done = true;
                return Ok(Event::Done { reason: "context" });
            }
            if let Err(e) =
                self.session
                    .step(&mut self.state, &[tok], &mut self.logits, &mut self.arena)
            {
                return Err(self.fail(e));
            }
            self.cached.push(tok);
        }
        let run = self
            .run
            .as_mut()
            .ok_or_else(|| Failure::core("generation", Error::BadInput, None))?;
        if run.produced >= run.max_tokens {
            run.done = true;
            return Ok(Event::Done { reason: "length" });
        }
        let next = match run.sampler.sample(&self.logits, &mut self.scratch) {
            Ok(t) => t,
            Err(e) => return Err(self.fail(e)),
        };
        let run = self
            .run
            .as_mut()
            .ok_or_else(|| Failure::core("generation", Error::BadInput, None))?;
        if self.stop_tokens.contains(&next) {
            run.done = true;
            let rest = run.stream.finish();
            self.timings.decode_ms += now_ms() - t0;
            if !rest.is_empty() {
                return Ok(Event::Token {
                    id: next,
                    text: rest,
                });
            }
            return Ok(Event::Done { reason: "stop" });
        }
        run.produced += 1;
        run.feed = Some(next);
        let mut bytes = Vec::new();
        self.vocab.token_bytes(next, &mut bytes);
        let text = run.stream.push(&bytes);
        self.timings.tokens = run.produced;
        self.timings.decode_ms += now_ms() - t0;
        Ok(Event::Token { id: next, text })
    }

    fn fail(&mut self, e: Error) -> Failure {
        self.state.reset();
        self.cached.clear();
        self.run = None;
        Failure::core("generation", e, None)
    }

    /// Ends the current generation (the tokens generated so far stay in the state).
    pub fn stop(&mut self) {
        if let Some(run) = self.run.as_mut() {
            run.done = true;
        }
    }

    /// Timings of the current or last generation.
    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// Forgets the conversation state.
    pub fn reset(&mut self) {
        self.run = None;
        self.state.reset();
        self.cached.clear();
    }

    /// Bytes of the model file (in wasm memory once).
    pub fn model_bytes(&self) -> usize {
        self.model_bytes
    }

    /// Threads the model's steps run on (1 unless the threaded build started a pool
    /// before the model was created).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Bytes of the key/value state.
    pub fn state_bytes(&self) -> usize {
        self.state_bytes
    }

    /// Bytes of the step arena, logits and sampler scratch.
    pub fn scratch_bytes(&self) -> usize {
        (self.arena.len() + self.logits.len() + self.swap_scratch.len()) * 4
            + self.scratch.len() * 4
    }

    /// Positions the conversation state holds, and its capacity.
    pub fn state_positions(&self) -> (usize, usize) {
        (self.state.len(), self.state.context())
    }

    /// Benchmark: forgets the state, reads `prompt` in one step, then generates `n`
    /// tokens greedily (no stop token), one step each; returns the tokens and the prompt
    /// and decode milliseconds (decode: the `n - 1` steps after the first token).
    ///
    /// # Errors
    /// The core's errors.
    pub fn bench(&mut self, prompt: &[u32], n: usize) -> Result<(Vec<u32>, f64, f64)> {
        self.reset();
        let need = self.model.step_arena_len(prompt.len().max(1));
        let mut arena = vec![0.0f32; need];
        let t0 = now_ms();
        self.session
            .step(&mut self.state, prompt, &mut self.logits, &mut arena)
            .map_err(|e| self.fail(e))?;
        let t1 = now_ms();
        let mut out = Vec::with_capacity(n);
        let mut tok = riffle_core::sample::argmax(&self.logits);
        out.push(tok);
        for _ in 1..n {
            self.session
                .step(&mut self.state, &[tok], &mut self.logits, &mut self.arena)
                .map_err(|e| self.fail(e))?;
            tok = riffle_core::sample::argmax(&self.logits);
            out.push(tok);
        }
        let t2 = now_ms();
        self.reset();
        Ok((out, t1 - t0, t2 - t1))
    }
}
