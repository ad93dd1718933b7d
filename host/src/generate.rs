//! The generation loop of a causal model: the prompt is read in chunks (bounded arena),
//! then tokens are sampled one at a time until an end token, a token budget, the
//! context's end or the caller's stop. Text is streamed as it is made, never splitting
//! a UTF-8 character across two pieces.

use riffle_core::runtime::{DecoderState, Model, Session};
use riffle_core::sample::{Sampler, SamplerConfig};
use riffle_core::Error;

use crate::json::JsonObject;

/// The bytes of each token, for streaming text.
pub trait TokenBytes {
    /// Appends the bytes token `id` stands for to `out` (special tokens as their text).
    fn token_bytes(&self, id: u32, out: &mut Vec<u8>);
}

/// How to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate (the stop token not counted).
    pub max_tokens: usize,
    /// Token choice.
    pub sampler: SamplerConfig,
    /// Tokens that end the generation (end of sequence, end of turn); not part of the
    /// output.
    pub stop_tokens: Vec<u32>,
    /// Changes to the logits before each draw (none by default).
    pub adjust: LogitAdjust,
    /// JSON mode: only tokens that keep the output a prefix of one JSON object
    /// ([`crate::json::JsonObject`]) are drawn, and the generation ends with the object
    /// ([`StopReason::Stop`]); stop tokens are not drawn before that.
    pub json_object: bool,
}

/// Changes to the logits before each token is drawn, as OpenAI's `logit_bias`,
/// `frequency_penalty` and `presence_penalty` define them: token `j`'s logit becomes
/// `l[j] + bias[j] - c[j]·frequency_penalty - (c[j] > 0)·presence_penalty`, `c[j]` the
/// times `j` was generated so far in this generation (the prompt does not count).
///
/// ```
/// use riffle_host::generate::LogitAdjust;
/// let a = LogitAdjust { bias: vec![(0, -100.0)], frequency_penalty: 0.5, presence_penalty: 1.0 };
/// let mut logits = [3.0f32, 2.0, 1.0];
/// a.apply(&mut logits, &[(1, 2)]); // token 1 generated twice so far
/// assert_eq!(logits, [-97.0, 0.0, 1.0]);
/// assert!(LogitAdjust::default().is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogitAdjust {
    /// `(token, value)`: `value` added to the token's logit (ids past the logits are
    /// ignored).
    pub bias: Vec<(u32, f32)>,
    /// Subtracted from a token's logit once per time it was generated.
    pub frequency_penalty: f32,
    /// Subtracted from the logit of every token generated at least once.
    pub presence_penalty: f32,
}

impl LogitAdjust {
    /// Whether this changes nothing (no bias, no penalties).
    pub fn is_none(&self) -> bool {
        self.bias.is_empty() && self.frequency_penalty == 0.0 && self.presence_penalty == 0.0
    }

    /// Applies the changes to `logits`, given `(token, times generated)` of every token
    /// generated so far.
    pub fn apply(&self, logits: &mut [f32], counts: &[(u32, u32)]) {
        for &(id, v) in &self.bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += v;
            }
        }
        for &(id, c) in counts {
            if let Some(l) = logits.get_mut(id as usize) {
                *l -= c as f32 * self.frequency_penalty + self.presence_penalty;
            }
        }
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A stop token was sampled.
    Stop,
    /// `max_tokens` were generated.
    Length,
    /// The state's context is full.
    Context,
    /// The caller asked to stop.
    Cancelled,
}

/// What one generation made.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The generated tokens (no stop token).
    pub tokens: Vec<u32>,
    /// Their text.
    pub text: String,
    /// Tokens read before the first generated one.
    pub prompt_tokens: usize,
    /// Milliseconds spent reading the prompt (up to the first token's logits).
    pub prompt_ms: f64,
    /// Milliseconds spent generating after that.
    pub decode_ms: f64,
    /// Why it ended.
    pub stop: StopReason,
    /// The stop token drawn, when one ended it ([`StopReason::Stop`]); the logits it was
    /// drawn from stay in the buffers ([`Buffers::logits`]).
    pub stop_token: Option<u32>,
}

/// Milliseconds from a fixed origin (the timings of [`Generation`]).
pub type Clock = fn() -> f64;

/// The process clock (`std::time::Instant`); wasm front ends pass `performance.now`
/// instead ([`Buffers::with_clock`]), since `Instant` does not exist there.
pub fn instant_ms() -> f64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_secs_f64() * 1e3
}

/// The buffers one generation needs, sized once per model: arena, logits, sampler
/// scratch, and the clock that times it.
#[derive(Debug)]
pub struct Buffers {
    arena: Vec<f32>,
    logits: Vec<f32>,
    /// The logits after a [`LogitAdjust`] (sized on first use).
    adjusted: Vec<f32>,
    scratch: Vec<u32>,
    /// Every position's logits of one scoring step (sized on first use).
    scored: Vec<f32>,
    chunk: usize,
    clock: Clock,
}

/// Most positions [`read_scored`] reads per step: their logits are a vocabulary each
/// (SmolLM2: 64 rows of 49,152 logits, 12.6 MB).
pub const SCORE_CHUNK: usize = 64;

impl Buffers {
    /// Buffers for `model`, reading prompts `chunk` tokens at a time.
    pub fn new(model: &Model<'_>, chunk: usize) -> Self {
        let chunk = chunk.max(1);
        Buffers {
            arena: vec![0.0; model.step_arena_len(chunk)],
            logits: vec![0.0; model.output_len()],
            adjusted: Vec::new(),
            scratch: vec![0; model.output_len()],
            scored: Vec::new(),
            chunk,
            clock: instant_ms,
        }
    }
    /// The same buffers timed by `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
    /// The logits of the last step.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }
}

/// Streams bytes out as text: holds back an incomplete UTF-8 character, replaces bytes
/// that can never form one with U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds `bytes` and returns the text that is complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..good]).unwrap_or_default());
                    match e.error_len() {
                        // Incomplete at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..good + bad);
                        }
                    }
                }
            }
        }
    }
    /// What is left at the end (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

/// Reads `prompt` into `state` (after what it holds) with the session's active adapter,
/// then generates. `on_piece(token, text)` sees every generated token with the text it
/// completes (possibly empty) and returns `false` to stop. An empty `prompt` continues
/// from the logits already in `bufs` (the state must not be empty then).
///
/// # Errors
/// The core's errors ([`Error::StaleState`] for a state of another adapter,
/// [`Error::ContextExceeded`] for a prompt past the context, ...).
pub fn generate(
    session: &Session<'_, '_, '_>,
    state: &mut DecoderState<'_>,
    prompt: &[u32],
    vocab: &dyn TokenBytes,
    options: &GenerateOptions,
    bufs: &mut Buffers,
    on_piece: &mut dyn FnMut(u32, &str) -> bool,
) -> Result<Generation, Error> {
    generate_tokens(session, state, prompt, vocab, options, bufs, &mut |t| {
        on_piece(t.id, t.text)
    })
}

/// Reads `prompt` into `state`, calling `on_logits(i, logits)` with the logits that
/// predict `prompt[i]` for every `i` from 1 (the distribution each prompt token was read
/// under: a prompt's log-likelihood, perplexity); `on_logits` returns `false` to stop (then
/// `Ok(false)`, the state holding the tokens read so far: whole steps of at most
/// [`SCORE_CHUNK`] tokens). Each step writes every position's logits at once
/// ([`Session::step_all`]), so scoring costs about what reading the prompt does, with a
/// prompt's arithmetic (on block-quantized weights a row's 8-bit activations depend on
/// where the steps split the prompt, so values move by quantization noise with
/// [`SCORE_CHUNK`]). After a whole read `bufs` holds the logits after the prompt, so
/// [`generate_tokens`] with an empty prompt continues from them.
///
/// # Errors
/// As [`generate`]; [`Error::BadInput`] for an empty prompt.
pub fn read_scored(
    session: &Session<'_, '_, '_>,
    state: &mut DecoderState<'_>,
    prompt: &[u32],
    bufs: &mut Buffers,
    on_logits: &mut dyn FnMut(usize, &[f32]) -> bool,
) -> Result<bool, Error> {
    if prompt.is_empty() {
        return Err(Error::BadInput);
    }
    room_for(state, prompt.len())?;
    let last = prompt.len() - 1;
    read_rows(session, state, prompt, bufs, &mut |i, row| {
        i == last || on_logits(i + 1, row)
    })
}

/// Reads `tokens` into `state` in steps of at most [`SCORE_CHUNK`], calling `on_row(i,
/// logits)` with the logits after `tokens[i]` for every `i`; `on_row` returns `false` to
/// stop (then `Ok(false)`). After a whole read `bufs` holds the last row.
pub(crate) fn read_rows(
    session: &Session<'_, '_, '_>,
    state: &mut DecoderState<'_>,
    tokens: &[u32],
    bufs: &mut Buffers,
    on_row: &mut dyn FnMut(usize, &[f32]) -> bool,
) -> Result<bool, Error> {
    let vocab = bufs.logits.len();
    let chunk = bufs.chunk.min(SCORE_CHUNK);
    bufs.scored.resize(chunk * vocab, 0.0);
    let mut read = 0;
    for part in tokens.chunks(chunk) {
        let rows = &mut bufs.scored[..part.len() * vocab];
        session.step_all(state, part, rows, &mut bufs.arena)?;
        for (r, row) in rows.chunks_exact(vocab).enumerate() {
            if !on_row(read + r, row) {
                return Ok(false);
            }
        }
        read += part.len();
        if read == tokens.len() {
            bufs.logits.copy_from_slice(&rows[rows.len() - vocab..]);
        }
    }
    Ok(true)
}

/// Reads `tokens` into `state` in steps of the buffers' chunk, leaving the logits after
/// the last one in `bufs`.
pub(crate) fn read_prompt(
    session: &Session<'_, '_, '_>,
    state: &mut DecoderState<'_>,
    tokens: &[u32],
    bufs: &mut Buffers,
) -> Result<(), Error> {
    for chunk in tokens.chunks(bufs.chunk) {
        session.step(state, chunk, &mut bufs.logits, &mut bufs.arena)?;
    }
    Ok(())
}

/// [`Error::ContextExceeded`] unless `state` has room for `n` more tokens.
fn room_for(state: &DecoderState<'_>, n: usize) -> Result<(), Error> {
    let needed = state.len() + n;
    if needed > state.context() {
        return Err(Error::ContextExceeded {
            needed,
            context: state.context(),
        });
    }
    Ok(())
}

/// One generated token as [`generate_tokens`] reports it.
#[derive(Debug, Clone, Copy)]
pub struct GeneratedToken<'a> {
    /// The token.
    pub id: u32,
    /// The text it completes (possibly empty: part of a UTF-8 character).
    pub text: &'a str,
    /// The logits it was chosen from (the model's, before temperature, top-p and any
    /// [`LogitAdjust`]); `None` for the last report of a generation, which only flushes
    /// text held back (an incomplete character at the end, as U+FFFD) after the token was
    /// reported.
    pub logits: Option<&'a [f32]>,
}

/// [`generate`], reporting each token with the logits it was chosen from (for log
/// probabilities: [`token_logprobs`]). `on_token` returns `false` to stop.
///
/// # Errors
/// As [`generate`].
pub fn generate_tokens(
    session: &Session<'_, '_, '_>,
    state: &mut DecoderState<'_>,
    prompt: &[u32],
    vocab: &dyn TokenBytes,
    options: &GenerateOptions,
    bufs: &mut Buffers,
    on_token: &mut dyn FnMut(GeneratedToken<'_>) -> bool,
) -> Result<Generation, Error> {
    let mut step =
        |state: &mut DecoderState<'_>, tokens: &[u32], logits: &mut [f32], arena: &mut [f32]| {
            session.step(state, tokens, logits, arena).map(|_| ())
        };
    let parts = (prompt, vocab, options);
    generate_tokens_with(state, parts, bufs, &mut step, on_token)
}

/// How [`generate_tokens_with`] reads tokens: `step(state, tokens, logits, arena)` reads
/// `tokens` into `state` and writes the logits of the token after them, as
/// [`Session::step`] does (a server hands it to the thread that computes every request's
/// steps, decoding their tokens together: `riffle_core::runtime::Model::decode_steps`).
/// The prompt comes in chunks of the buffers' chunk, then one generated token at a time.
pub type TokenStep<'f, 's> =
    dyn FnMut(&mut DecoderState<'s>, &[u32], &mut [f32], &mut [f32]) -> Result<(), Error> + 'f;

/// [`generate_tokens`] with every step (the prompt's chunks, then each generated token)
/// run by `step`.
///
/// # Errors
/// As [`generate`], and `step`'s.
pub fn generate_tokens_with<'s>(
    state: &mut DecoderState<'s>,
    (prompt, vocab, options): (&[u32], &dyn TokenBytes, &GenerateOptions),
    bufs: &mut Buffers,
    step: &mut TokenStep<'_, 's>,
    on_token: &mut dyn FnMut(GeneratedToken<'_>) -> bool,
) -> Result<Generation, Error> {
    let t0 = (bufs.clock)();
    if prompt.is_empty() && state.is_empty() {
        return Err(Error::BadInput);
    }
    room_for(state, prompt.len())?;
    for chunk in prompt.chunks(bufs.chunk) {
        step(state, chunk, &mut bufs.logits, &mut bufs.arena)?;
    }
    let t1 = (bufs.clock)();
    let prompt_ms = t1 - t0;
    let mut sampler = Sampler::new(options.sampler);
    // Times each generated token occurred, for the penalties (sorted by id).
    let mut counts: Vec<(u32, u32)> = Vec::new();
    let adjust = !options.adjust.is_none() || options.json_object;
    if adjust {
        bufs.adjusted.resize(bufs.logits.len(), 0.0);
    }
    let mut json = options
        .json_object
        .then(|| (JsonObject::new(), TokenTable::new(vocab, bufs.logits.len())));
    let mut stream = Utf8Stream::default();
    let mut bytes = Vec::new();
    let mut tokens = Vec::new();
    let mut text = String::new();
    let mut stop_token = None;
    let stop = loop {
        if tokens.len() >= options.max_tokens {
            break StopReason::Length;
        }
        let next = if adjust {
            bufs.adjusted.copy_from_slice(&bufs.logits);
            options.adjust.apply(&mut bufs.adjusted, &counts);
            if let Some((object, table)) = &json {
                // Greedy: when the likeliest token continues the object it is the answer
                // with or without the mask, so the mask is only built when it does not.
                let stops = &options.stop_tokens;
                let fits = options.sampler.is_greedy() && {
                    let likeliest = riffle_core::sample::argmax(&bufs.adjusted);
                    table.continues(*object, likeliest, stops)
                };
                if !fits && !table.mask(*object, stops, &mut bufs.adjusted) {
                    // No token continues the object (nesting or whitespace at their bounds
                    // with nothing else in the vocabulary): it cannot be finished.
                    break StopReason::Length;
                }
            }
            sampler.sample(&bufs.adjusted, &mut bufs.scratch)?
        } else {
            sampler.sample(&bufs.logits, &mut bufs.scratch)?
        };
        if options.stop_tokens.contains(&next) {
            stop_token = Some(next);
            break StopReason::Stop;
        }
        tokens.push(next);
        match counts.binary_search_by_key(&next, |&(id, _)| id) {
            Ok(i) => counts[i].1 += 1,
            Err(i) => counts.insert(i, (next, 1)),
        }
        bytes.clear();
        vocab.token_bytes(next, &mut bytes);
        let piece = stream.push(&bytes);
        text.push_str(&piece);
        let token = GeneratedToken {
            id: next,
            text: &piece,
            logits: Some(&bufs.logits),
        };
        if !on_token(token) {
            break StopReason::Cancelled;
        }
        if let Some((object, table)) = &mut json {
            object.push_all(table.bytes(next));
            if object.is_complete() {
                break StopReason::Stop;
            }
        }
        if tokens.len() >= options.max_tokens {
            break StopReason::Length;
        }
        if state.len() >= state.context() {
            break StopReason::Context;
        }
        step(state, &[next], &mut bufs.logits, &mut bufs.arena)?;
    };
    let rest = stream.finish();
    if !rest.is_empty() {
        text.push_str(&rest);
        if let Some(&last) = tokens.last() {
            on_token(GeneratedToken {
                id: last,
                text: &rest,
                logits: None,
            });
        }
    }
    Ok(Generation {
        tokens,
        text,
        prompt_tokens: prompt.len(),
        prompt_ms,
        decode_ms: (bufs.clock)() - t1,
        stop,
        stop_token,
    })
}

/// Every token's bytes, one buffer, for JSON mode's masks.
struct TokenTable {
    bytes: Vec<u8>,
    /// Token `i`'s bytes are `bytes[ends[i - 1]..ends[i]]` (`ends[-1]` = 0).
    ends: Vec<usize>,
}

impl TokenTable {
    fn new(vocab: &dyn TokenBytes, len: usize) -> Self {
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(len);
        for id in 0..len {
            vocab.token_bytes(id as u32, &mut bytes);
            ends.push(bytes.len());
        }
        TokenTable { bytes, ends }
    }

    fn bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    /// Whether token `id` continues `object` (it has bytes, is not a stop token, and
    /// `object` takes them).
    fn continues(&self, object: JsonObject, id: u32, stop_tokens: &[u32]) -> bool {
        let b = self.bytes(id);
        let mut o = object;
        !b.is_empty() && !stop_tokens.contains(&id) && o.push_all(b)
    }

    /// Sets to -inf the logit of every token that does not continue `object`; `false`
    /// when none does.
    fn mask(&self, object: JsonObject, stop_tokens: &[u32], logits: &mut [f32]) -> bool {
        // Most tokens fail on their first byte: which first bytes can pass is read once.
        let first: [bool; 256] = core::array::from_fn(|b| {
            let mut o = object;
            o.push(b as u8)
        });
        let mut any = false;
        for (id, l) in logits.iter_mut().enumerate() {
            let b = self.bytes(id as u32);
            let ok = b.first().is_some_and(|&f| first[f as usize])
                && self.continues(object, id as u32, stop_tokens);
            if ok {
                any = true;
            } else {
                *l = f32::NEG_INFINITY;
            }
        }
        any
    }
}

/// The log probability of one token under a distribution's logits, and the most likely
/// tokens with theirs.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    /// `ln p(token)`, `p = softmax(logits)` (computed in `f64`).
    pub logprob: f64,
    /// The `top` most likely tokens and their log probabilities, most likely first (ties:
    /// the lower id first).
    pub top: Vec<(u32, f64)>,
}

/// Log probabilities of `token` and of the `top` most likely tokens under
/// `softmax(logits)`: the model's own distribution, as OpenAI's `logprobs` report it
/// (temperature and top-p change which token is drawn, not these). `None` when `token`
/// is outside `logits` or a logit is not finite.
///
/// ```
/// use riffle_host::generate::token_logprobs;
/// let lp = token_logprobs(&[0.0, 2.0_f32.ln(), 0.0], 0, 2).unwrap();
/// assert!((lp.logprob - 0.25f64.ln()).abs() < 1e-6);
/// assert_eq!(lp.top[0].0, 1);
/// assert!((lp.top[0].1 - 0.5f64.ln()).abs() < 1e-6);
/// assert_eq!(lp.top[1].0, 0);
/// ```
pub fn token_logprobs(logits: &[f32], token: u32, top: usize) -> Option<TokenLogprobs> {
    let chosen = f64::from(*logits.get(token as usize)?);
    let mut max = f64::NEG_INFINITY;
    for &l in logits {
        if !l.is_finite() {
            return None;
        }
        max = max.max(f64::from(l));
    }
    let sum: f64 = logits.iter().map(|&l| (f64::from(l) - max).exp()).sum();
    let norm = max + sum.ln();
    // The `top` largest logits, kept sorted (largest first, ties by id); `top` is small.
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (i, &l) in logits.iter().enumerate() {
            if best.len() == top && l <= best[top - 1].1 {
                continue;
            }
            let at = best.partition_point(|&(_, b)| b >= l);
            best.insert(at, (i as u32, l));
            best.truncate(top);
        }
    }
    Some(TokenLogprobs {
        logprob: chosen - norm,
        top: best
            .into_iter()
            .map(|(i, l)| (i, f64::from(l) - norm))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::{token_logprobs, Utf8Stream};

    #[test]
    fn token_logprobs_match_a_direct_softmax() {
        let logits: Vec<f32> = (0..1000u32)
            .map(|i| ((i.wrapping_mul(2654435761) >> 7) % 4001) as f32 / 400.0 - 5.0)
            .collect();
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        let p = |i: usize| f64::from(logits[i]).exp() / z;
        let lp = token_logprobs(&logits, 17, 5).unwrap();
        assert!((lp.logprob - p(17).ln()).abs() < 1e-9);
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        assert_eq!(lp.top.len(), 5);
        for (k, &(id, v)) in lp.top.iter().enumerate() {
            assert_eq!(id as usize, order[k]);
            assert!((v - p(order[k]).ln()).abs() < 1e-9);
        }
        // Ties keep the lower id first; zero alternatives; bad input.
        let lp = token_logprobs(&[1.0, 3.0, 3.0, 0.0], 3, 3).unwrap();
        assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 2, 0]);
        assert!(token_logprobs(&[1.0, 2.0], 0, 0).unwrap().top.is_empty());
        assert!(token_logprobs(&[1.0, 2.0], 2, 1).is_none());
        assert!(token_logprobs(&[1.0, f32::NAN], 0, 1).is_none());
        assert!(token_logprobs(&[1.0, f32::INFINITY], 0, 1).is_none());
    }

    #[test]
    fn utf8_stream_never_splits_a_character() {
        let text = "añ€😀z";
        let bytes = text.as_bytes();
        for split in 0..=bytes.len() {
            for split2 in split..=bytes.len() {
                let mut s = Utf8Stream::default();
                let mut out = s.push(&bytes[..split]);
                out += &s.push(&bytes[split..split2]);
                out += &s.push(&bytes[split2..]);
                out += &s.finish();
                assert_eq!(out, text);
            }
        }
        let mut s = Utf8Stream::default();
        assert_eq!(s.push(&[0xF0, 0x9F]), "");
        assert_eq!(s.push(&[0x98, 0x80, b'!']), "😀!");
        assert_eq!(s.push(&[0xFF, b'a']), "\u{FFFD}a");
        assert_eq!(s.push(&[0xE2, 0x82]), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }
}
