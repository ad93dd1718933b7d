//! The compute side of the server, run on blocking threads: generation in a pool of decoder
//! slots with a prompt cache keyed by adapter and tokens, and embeddings of encoder
//! models. Every request opens its own `Session` holding only its adapter (references:
//! cheap), so requests with different adapters never touch each other's state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use riffle_core::gguf::StringArray;
use riffle_core::runtime::{DecoderState, Input, Model, Prepared, Session};
use riffle_core::sample::SamplerConfig;
use riffle_core::text::Tokenizer;
use riffle_host::chat::{ChatTemplate, Message};
use riffle_host::generate::{
    self, Buffers, GenerateOptions, GeneratedToken, StopReason, TokenBytes,
};
use riffle_host::text::Vocabulary;
use tokio::sync::mpsc::Sender;

use super::api::{ApiError, Prompt};
use super::registry::Entry;
use crate::llm::KvBuffer;

/// Tokens read per prefill step. The same as `riffle generate`'s, so the same prompt is
/// read in the same chunks and the logits are bit-identical; the prompt cache reuses
/// whole chunks only, for the same reason.
pub const PREFILL_CHUNK: usize = 256;

/// A causal model's tokenizer: text to ids, ids to bytes, the tokens that end a turn.
pub trait Vocab: TokenBytes + Send + Sync {
    /// Token ids of `text` (special tokens in the text are parsed).
    ///
    /// # Errors
    /// A message when the text cannot be tokenized.
    fn encode(&self, text: &str) -> Result<Vec<u32>, String>;
    /// End of sequence and end of turn.
    fn stop_tokens(&self) -> Vec<u32>;
    /// Appends token `id`'s bytes with control tokens as their text (`<|im_start|>`), as
    /// llama.cpp's `/tokenize` and `/detokenize` render them (generated text leaves them
    /// out).
    fn text_bytes(&self, id: u32, out: &mut Vec<u8>);
    /// Number of tokens.
    fn len(&self) -> usize;
    /// The text of `ids`, control tokens as their text ([`Vocab::text_bytes`]; bytes that
    /// are not whole UTF-8 become U+FFFD).
    fn text(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            self.text_bytes(id, &mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// The model file's byte-level BPE vocabulary, as `riffle generate` uses it
/// (`riffle_host::text::Vocabulary`: prompts encoded as `llama-tokenize` does by default,
/// end-of-sequence and end-of-turn tokens end a generation).
pub struct BpeVocab(Vocabulary<'static, 'static>);

impl BpeVocab {
    /// The vocabulary of `model`'s file (its index lives as long as the process).
    ///
    /// # Errors
    /// A file without a byte-level BPE tokenizer this build reads.
    pub fn of(model: &'static Model<'static>) -> Result<Self, riffle_core::Error> {
        let g = model.gguf();
        let len = Vocabulary::index_len(g)?;
        let index: &'static mut [u32] = Box::leak(vec![0u32; len].into_boxed_slice());
        Ok(BpeVocab(Vocabulary::new(g, index)?))
    }
}

impl TokenBytes for BpeVocab {
    fn token_bytes(&self, id: u32, out: &mut Vec<u8>) {
        self.0.token_bytes(id, out);
    }
}

impl Vocab for BpeVocab {
    fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.0.encode(text).map_err(|e| e.to_string())
    }
    fn stop_tokens(&self) -> Vec<u32> {
        self.0.stop_tokens()
    }
    fn text_bytes(&self, id: u32, out: &mut Vec<u8>) {
        let _ = self.0.bpe().piece_bytes(id, true, |b| out.push(b));
    }
    fn len(&self) -> usize {
        self.0.bpe().vocab_len()
    }
}

/// One decoder slot: a key/value state for `context` positions, the generation buffers,
/// and the prompt tokens whose keys and values the state holds.
pub struct Slot {
    state: DecoderState<'static>,
    bufs: Buffers,
    cached: Vec<u32>,
}

impl Slot {
    /// A slot for `model` over `context` positions, its keys and values kept in `kv`
    /// (sized for them, see [`KvBuffer::new`]), which lives as long as the process (slots
    /// are made once, at start-up).
    pub fn new(
        model: &Model<'_>,
        context: usize,
        kv: KvBuffer,
    ) -> Result<Self, riffle_core::Error> {
        Ok(Slot {
            state: kv.leak(model, context)?,
            bufs: Buffers::new(model, PREFILL_CHUNK),
            cached: Vec::new(),
        })
    }
}

/// A causal model's serving parts.
pub struct Causal {
    /// The tokenizer (`None` when this build cannot read the file's tokenizer: only token
    /// id prompts then, and no text out).
    pub vocab: Option<Box<dyn Vocab>>,
    /// The file's chat template.
    pub template: Option<ChatTemplate>,
    /// Positions of each slot.
    pub context: usize,
    /// Free slots (as many as permits of the server's semaphore).
    pub slots: Mutex<Vec<Slot>>,
    /// Slots made.
    pub slot_count: usize,
    /// The thread that decodes the running requests' tokens together (`None`: each
    /// request decodes its own, `--no-batching` or one slot).
    pub batcher: Option<std::sync::Arc<super::batch::Batcher>>,
}

/// An encoder's serving parts.
pub struct Encoder {
    /// The WordPiece tokenizer (its index lives as long as the process).
    pub tokenizer: Tokenizer<'static, StringArray<'static>>,
}

/// What the model is served for.
pub enum Kind {
    /// Chat and text completions.
    Causal(Box<Causal>),
    /// Embeddings.
    Encoder(Encoder),
    /// Neither (vector models): only health, models, adapters and metrics.
    Other,
}

/// A generation request, checked.
pub struct GenRequest {
    /// Its adapter (`None`: the bare base).
    pub adapter: Option<Arc<Entry>>,
    /// Chat messages, text or ids.
    pub prompt: PromptIn,
    /// Most tokens to generate (`None`: up to the context's end).
    pub max_tokens: Option<usize>,
    /// Token choice.
    pub sampler: SamplerConfig,
    /// Stop sequences.
    pub stops: Vec<String>,
    /// Also report the generated token ids (llama.cpp's `return_tokens`).
    pub return_tokens: bool,
    /// Report each token's log probability and this many alternatives (`None`: none).
    pub logprobs: Option<usize>,
    /// Logit bias and penalties.
    pub adjust: generate::LogitAdjust,
    /// JSON mode (`response_format: {"type": "json_object"}`).
    pub json_object: bool,
    /// Completions' `echo`: the prompt comes back before the answer, with its tokens' log
    /// probabilities when `logprobs` asks for them (a prompt's log-likelihood).
    pub echo: bool,
    /// With `logprobs`, also an entry for the end token that stopped the answer (its text
    /// is not in the answer): the completions API lists it, as OpenAI's did, so a client
    /// that asked for `max_tokens` tokens always finds at least one entry past the prompt
    /// (lm-eval-harness drops the last entry of an echoed answer).
    pub logprob_of_stop: bool,
}

/// A generation prompt.
pub enum PromptIn {
    /// Messages through the chat template.
    Chat(Vec<(String, String)>),
    /// A completion prompt.
    Plain(Prompt),
}

/// What a finished generation reports.
#[derive(Debug, Clone)]
pub struct Done {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Of those, read from the prompt cache.
    pub cached_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// OpenAI's `finish_reason`: `stop` or `length`.
    pub finish: &'static str,
    /// Seconds reading the prompt.
    pub prompt_seconds: f64,
    /// Seconds generating.
    pub decode_seconds: f64,
    /// The generated ids, when asked for.
    pub tokens: Option<Vec<u32>>,
}

/// A generated token's log probability (OpenAI's `logprobs`), with the most likely
/// alternatives at its position.
#[derive(Debug, Clone)]
pub struct TokenLogprob {
    /// The token's id.
    pub id: u32,
    /// The token's bytes (a token may hold part of a UTF-8 character).
    pub bytes: Vec<u8>,
    /// `ln p(token)` under the model's distribution at that position.
    pub logprob: f64,
    /// The most likely tokens there (id, bytes, log probability), most likely first.
    pub top: Vec<(u32, Vec<u8>, f64)>,
}

/// Text ready for the client, and the log probabilities of the tokens that start in it
/// (empty unless asked for).
#[derive(Debug, Clone, Default)]
pub struct Piece {
    /// The text.
    pub text: String,
    /// One entry per token whose text starts in `text`.
    pub logprobs: Vec<TokenLogprob>,
}

/// The prompt as `echo` returns it.
#[derive(Debug, Clone)]
pub struct Echo {
    /// The prompt's text (token ids given as the prompt: their text, control tokens
    /// included).
    pub text: String,
    /// The first prompt token's bytes: it has no log probability (nothing predicts it).
    pub first: Vec<u8>,
    /// The log probabilities of the prompt's other tokens, when asked for.
    pub logprobs: Vec<TokenLogprob>,
}

/// Log probabilities of token `id` and `top` alternatives under `logits`, each token's
/// bytes as `render` gives them.
fn logprob_entry(
    logits: &[f32],
    id: u32,
    top: usize,
    render: &dyn Fn(u32, &mut Vec<u8>),
) -> Option<TokenLogprob> {
    let lp = generate::token_logprobs(logits, id, top)?;
    let bytes_of = |id: u32| {
        let mut b = Vec::new();
        render(id, &mut b);
        b
    };
    Some(TokenLogprob {
        id,
        bytes: bytes_of(id),
        logprob: lp.logprob,
        top: lp.top.iter().map(|&(i, v)| (i, bytes_of(i), v)).collect(),
    })
}

/// Events of one generation, sent to the request's handler.
pub enum Event {
    /// The prompt was accepted (checks passed): text follows.
    Started,
    /// The prompt, echoed (before any piece).
    Echo(Echo),
    /// Text.
    Piece(Piece),
    /// The end.
    Done(Done),
    /// The request failed.
    Failed(ApiError),
}

static SEEDS: AtomicU64 = AtomicU64::new(0x5EED);

/// A seed for a request that gives none.
pub fn fresh_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ SEEDS.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
}

fn server_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e.to_string())
}

/// A session on `model` (on the process's thread pool, if any) with `adapter`, if any,
/// resident and active.
///
/// # Errors
/// A server error if the adapter cannot be added or activated.
fn session_with<'m, 'a, 'w>(
    model: &'m Model<'a>,
    adapter: Option<&Prepared<'a, 'w>>,
) -> Result<Session<'m, 'a, 'w>, ApiError> {
    let mut session = Session::new(model);
    if let Some(pool) = crate::threads::executor() {
        session.set_executor(pool);
    }
    if let Some(p) = adapter {
        session.add_adapter(p.clone()).map_err(server_error)?;
        session.activate(Some(0), &mut []).map_err(server_error)?;
    }
    Ok(session)
}

/// Length of the common prefix of `a` and `b`.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Causal {
    /// Tokens a request may name: the tokenizer's, or the model's outputs without one.
    pub fn vocab_len(&self, model: &Model<'_>) -> usize {
        self.vocab.as_ref().map_or(model.output_len(), |v| v.len())
    }

    /// The prompt's token ids.
    ///
    /// # Errors
    /// No template or tokenizer for text; a template failure; ids out of the vocabulary.
    pub fn tokens(&self, model: &Model<'_>, prompt: &PromptIn) -> Result<Vec<u32>, ApiError> {
        let text = match prompt {
            PromptIn::Chat(msgs) => {
                let t = self.template.as_ref().ok_or_else(|| {
                    ApiError::invalid(
                        "no_chat_template",
                        Some("messages"),
                        "the model file has no chat template: use /v1/completions",
                    )
                })?;
                let msgs: Vec<Message> = msgs.iter().map(|(r, c)| Message::new(r, c)).collect();
                t.render(&msgs, true).map_err(|e| {
                    ApiError::invalid("template_error", Some("messages"), e.to_string())
                })?
            }
            PromptIn::Plain(Prompt::Text(t)) => t.clone(),
            PromptIn::Plain(Prompt::Ids(ids)) => {
                super::api::ids_in_vocab(ids, self.vocab_len(model), "prompt")?;
                return Ok(ids.clone());
            }
        };
        let vocab = self.vocab.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "invalid_request_error",
                "no_tokenizer",
                "this build cannot tokenize text for this model: send token ids as `prompt`",
            )
        })?;
        let ids = vocab
            .encode(&text)
            .map_err(|e| ApiError::invalid("tokenize_error", None, e))?;
        if ids.is_empty() {
            return Err(ApiError::invalid(
                "invalid_value",
                Some("prompt"),
                "the prompt is empty",
            ));
        }
        Ok(ids)
    }

    fn take_slot(&self, key: Option<u64>, prompt: &[u32]) -> Option<Slot> {
        let mut free = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let score = |s: &Slot| {
            if s.state.owner() == key && !s.cached.is_empty() {
                common_prefix(&s.cached, prompt)
            } else {
                0
            }
        };
        let best = (0..free.len()).max_by_key(|&i| score(&free[i]))?;
        Some(free.swap_remove(best))
    }

    /// Gives back a slot whose state a failed or cancelled request left half-read, and
    /// returns `e`.
    fn abandon(&self, mut slot: Slot, e: ApiError) -> ApiError {
        slot.state.reset();
        self.put_slot(slot);
        e
    }

    fn put_slot(&self, slot: Slot) {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(slot);
    }

    /// Runs a generation, sending its events to `tx` (a closed channel cancels it).
    /// Returns the code of the error it sent, if any.
    pub fn generate(
        &self,
        model: &'static Model<'static>,
        req: &GenRequest,
        tx: &Sender<Event>,
    ) -> Option<&'static str> {
        let result = match self.tokens(model, &req.prompt) {
            Ok(ids) => {
                let echo = req.echo.then(|| match (&req.prompt, &self.vocab) {
                    (PromptIn::Plain(Prompt::Text(t)), _) => t.clone(),
                    (_, Some(v)) => v.text(&ids),
                    (_, None) => String::new(),
                });
                let ids = (&ids[..], echo);
                match &req.adapter {
                    Some(e) => e.with(|p| self.run(model, Some(p), ids, req, tx)),
                    None => self.run(model, None, ids, req, tx),
                }
            }
            Err(e) => Err(e),
        };
        let code = result.as_ref().err().map(|e| e.code);
        let _ = tx.blocking_send(match result {
            Ok(done) => Event::Done(done),
            Err(e) => Event::Failed(e),
        });
        code
    }

    /// Token `id`'s bytes, control tokens as their text (nothing without a tokenizer).
    fn text_bytes(&self, id: u32, out: &mut Vec<u8>) {
        if let Some(v) = &self.vocab {
            v.text_bytes(id, out);
        }
    }

    /// Runs one generation of prompt `ids` (and, for `echo`, the prompt's text to send back
    /// first).
    fn run(
        &self,
        model: &Model<'_>,
        adapter: Option<&Prepared<'_, '_>>,
        (ids, echo): (&[u32], Option<String>),
        req: &GenRequest,
        tx: &Sender<Event>,
    ) -> Result<Done, ApiError> {
        if ids.len() >= self.context {
            return Err(ApiError::invalid(
                "context_length_exceeded",
                Some("messages"),
                format!(
                    "the prompt has {} tokens; the context holds {} (prompt and answer)",
                    ids.len(),
                    self.context
                ),
            ));
        }
        let room = self.context - ids.len();
        let max_tokens = req.max_tokens.unwrap_or(room);
        let vocab = self.vocab.as_deref();
        let session = session_with(model, adapter)?;
        let key = adapter.map(Prepared::state_key);
        let mut slot = self
            .take_slot(key, ids)
            .ok_or_else(|| server_error("no free decoder slot"))?;
        // Whole prefill chunks of the same tokens under the same adapter are reused; at
        // least one token is read so the first logits exist.
        // An echoed prompt is read one token at a time, never from the cache.
        let mut reuse = 0;
        if echo.is_none() && slot.state.owner() == key && slot.state.len() == slot.cached.len() {
            reuse = common_prefix(&slot.cached, ids) / PREFILL_CHUNK * PREFILL_CHUNK;
            if reuse >= ids.len() {
                reuse -= PREFILL_CHUNK;
            }
        }
        if reuse == 0 {
            slot.state.reset();
        } else {
            slot.state.truncate(reuse);
        }
        slot.cached.clear();
        if tx.blocking_send(Event::Started).is_err() {
            self.put_slot(slot);
            return Err(cancelled());
        }
        let mut read = &ids[reuse..];
        let mut scored_ms = None;
        if let Some(text) = echo {
            let t0 = std::time::Instant::now();
            let mut logprobs = Vec::new();
            let render = |id: u32, out: &mut Vec<u8>| self.text_bytes(id, out);
            let scored = generate::read_scored(
                &session,
                &mut slot.state,
                ids,
                &mut slot.bufs,
                &mut |i, logits| {
                    let entry = req
                        .logprobs
                        .and_then(|top| logprob_entry(logits, ids[i], top, &render));
                    logprobs.extend(entry);
                    // A client that went away stops a long prompt's reading too.
                    !tx.is_closed()
                },
            );
            match scored {
                Ok(true) => {}
                Ok(false) => return Err(self.abandon(slot, cancelled())),
                Err(e) => return Err(self.abandon(slot, server_error(e))),
            }
            scored_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
            let mut first = Vec::new();
            self.text_bytes(ids[0], &mut first);
            let echo = Echo {
                text,
                first,
                logprobs,
            };
            if tx.blocking_send(Event::Echo(echo)).is_err() {
                return Err(self.abandon(slot, cancelled()));
            }
            read = &[];
        }
        let options = GenerateOptions {
            max_tokens,
            sampler: req.sampler,
            stop_tokens: vocab.map(Vocab::stop_tokens).unwrap_or_default(),
            adjust: req.adjust.clone(),
            json_object: req.json_object,
        };
        let hold = req
            .stops
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(1)
            .saturating_sub(1);
        let no_vocab = NoVocab;
        let tb: &dyn TokenBytes = match vocab {
            Some(v) => v,
            None => &no_vocab,
        };
        let mut text = String::new();
        let mut sent = 0usize;
        let mut hit_stop = false;
        let mut gone = false;
        // Log probabilities not yet sent, each with the offset in `text` where its
        // token's text starts: an entry goes out with the text that holds that offset,
        // and is dropped with it when a stop sequence cuts the text before it.
        let mut pending: Vec<(usize, TokenLogprob)> = Vec::new();
        let take_upto = |pending: &mut Vec<(usize, TokenLogprob)>, upto: usize| {
            let n = pending.partition_point(|(at, _)| *at < upto);
            pending.drain(..n).map(|(_, e)| e).collect::<Vec<_>>()
        };
        let mut on_token = |t: GeneratedToken<'_>| -> bool {
            if hit_stop || gone {
                return false;
            }
            if let (Some(top), Some(logits)) = (req.logprobs, t.logits) {
                let render = |id: u32, out: &mut Vec<u8>| tb.token_bytes(id, out);
                if let Some(entry) = logprob_entry(logits, t.id, top, &render) {
                    pending.push((text.len(), entry));
                }
            }
            text.push_str(t.text);
            if let Some(at) = req
                .stops
                .iter()
                .filter_map(|s| text[sent..].find(s.as_str()).map(|p| p + sent))
                .min()
            {
                text.truncate(at);
                hit_stop = true;
            }
            let mut upto = if hit_stop {
                text.len()
            } else {
                text.len().saturating_sub(hold)
            };
            while !text.is_char_boundary(upto) {
                upto -= 1;
            }
            if upto > sent {
                let piece = Piece {
                    text: text[sent..upto].to_string(),
                    logprobs: take_upto(&mut pending, upto),
                };
                if tx.blocking_send(Event::Piece(piece)).is_err() {
                    gone = true;
                }
                sent = upto;
            } else if tx.is_closed() {
                gone = true;
            }
            !hit_stop && !gone
        };
        let g = match &self.batcher {
            Some(b) => {
                let mut decoding = b.join(req.adapter.clone(), model.output_len());
                let mut step =
                    |state: &mut DecoderState<'static>,
                     tokens: &[u32],
                     logits: &mut [f32],
                     _: &mut [f32]| { decoding.step(state, tokens, logits) };
                let parts = (read, tb, &options);
                generate::generate_tokens_with(
                    &mut slot.state,
                    parts,
                    &mut slot.bufs,
                    &mut step,
                    &mut on_token,
                )
            }
            None => generate::generate_tokens(
                &session,
                &mut slot.state,
                read,
                tb,
                &options,
                &mut slot.bufs,
                &mut on_token,
            ),
        };
        let g = match g {
            Ok(g) => g,
            Err(e) => return Err(self.abandon(slot, server_error(e))),
        };
        // The end token's entry (its logits are still in the buffers).
        let stop_entry = match (req.logprobs, g.stop_token) {
            (Some(top), Some(t)) if req.logprob_of_stop && !hit_stop => {
                let render = |id: u32, out: &mut Vec<u8>| self.text_bytes(id, out);
                logprob_entry(slot.bufs.logits(), t, top, &render)
            }
            _ => None,
        };
        // Keep only whole prefill chunks of the prompt for the next request.
        let keep = ids.len() / PREFILL_CHUNK * PREFILL_CHUNK;
        if keep > 0 && slot.state.len() >= keep && scored_ms.is_none() {
            slot.state.truncate(keep);
            slot.cached.extend_from_slice(&ids[..keep]);
        } else {
            slot.state.reset();
        }
        self.put_slot(slot);
        if gone || (g.stop == StopReason::Cancelled && !hit_stop) {
            return Err(cancelled());
        }
        if hit_stop {
            // The text up to the cut went out with its tokens' entries; the rest are of
            // tokens past the cut.
            pending.clear();
        }
        let mut logprobs: Vec<TokenLogprob> = pending.into_iter().map(|(_, e)| e).collect();
        logprobs.extend(stop_entry);
        if sent < text.len() || !logprobs.is_empty() {
            // The end of the text (held back for stop sequences) and the log
            // probabilities of its tokens, then of the end token; a client gone by now
            // missed nothing that was still to compute.
            let _ = tx.blocking_send(Event::Piece(Piece {
                text: text[sent..].to_string(),
                logprobs,
            }));
        }
        Ok(Done {
            prompt_tokens: ids.len(),
            cached_tokens: reuse,
            completion_tokens: g.tokens.len(),
            finish: if hit_stop || g.stop == StopReason::Stop {
                "stop"
            } else {
                "length"
            },
            prompt_seconds: scored_ms.unwrap_or(g.prompt_ms) / 1e3,
            decode_seconds: g.decode_ms / 1e3,
            tokens: req.return_tokens.then_some(g.tokens),
        })
    }
}

/// The client went away.
pub fn cancelled() -> ApiError {
    ApiError::new(
        StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        "invalid_request_error",
        "client_disconnected",
        "the client closed the connection",
    )
}

/// Token bytes when the tokenizer cannot be read: none (ids still count).
struct NoVocab;

impl TokenBytes for NoVocab {
    fn token_bytes(&self, _id: u32, _out: &mut Vec<u8>) {}
}

/// Embeddings of `texts` (one vector each, as `riffle run --text` prints), and the token
/// count.
///
/// # Errors
/// A text the tokenizer refuses; a runtime failure.
pub fn embed(
    model: &Model<'_>,
    enc: &Encoder,
    adapter: Option<&Prepared<'_, '_>>,
    texts: &[String],
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    let session = session_with(model, adapter)?;
    let last = model.slots().len().saturating_sub(1);
    let out_len = adapter
        .map(|p| {
            p.head(last)
                .map_or(0, |h| h.rows)
                .max(p.cls_head().map_or(0, |h| h.rows))
                .max(p.labels().map_or(0, |l| l.len()))
        })
        .unwrap_or(0)
        .max(model.output_len())
        .max(1);
    let max = model.max_tokens();
    let mut arena = vec![0.0f32; session.arena_len(max)];
    let mut out = vec![0.0f32; out_len];
    let mut ids = vec![0u32; max];
    let mut vectors = Vec::with_capacity(texts.len());
    let mut tokens = 0;
    for (i, t) in texts.iter().enumerate() {
        let n = enc.tokenizer.encode(t, max, &mut ids).map_err(|e| {
            ApiError::invalid(
                "tokenize_error",
                Some(&format!("input[{i}]")),
                e.to_string(),
            )
        })?;
        tokens += n;
        let k = session
            .run(Input::Tokens(&ids[..n]), &mut out, &mut arena)
            .map_err(server_error)?;
        vectors.push(out[..k].to_vec());
    }
    Ok((vectors, tokens))
}
