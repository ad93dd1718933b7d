//! Perplexity of a causal model over a long text, with the active adapter or the bare
//! base, by the protocol of llama.cpp's `llama-perplexity` so that the two tools' numbers
//! can be compared: the text's tokens are cut into chunks of `context` tokens (a
//! beginning-of-sequence token in place of each chunk's first when the file asks for one),
//! and each chunk is scored on its second half, every token there predicted from all the
//! chunk's tokens before it. The perplexity is `exp` of the mean negative log-likelihood
//! of the scored tokens; its uncertainty is the standard error of that mean carried
//! through `exp`.
//!
//! ```
//! use riffle_host::perplexity::Nll;
//! let mut n = Nll::default();
//! for lp in [-1.0f64, -2.0, -3.0] {
//!     n.add(lp);
//! }
//! assert_eq!(n.count(), 3);
//! assert!((n.perplexity() - 2.0f64.exp()).abs() < 1e-12);
//! // standard error of the mean nll (sd 1 over 3 samples) carried through exp
//! assert!((n.perplexity_error() - 2.0f64.exp() / 3.0f64.sqrt()).abs() < 1e-12);
//! ```

use riffle_core::runtime::{DecoderState, Session};
use riffle_core::Error;

use crate::generate::{read_prompt, read_rows, token_logprobs, Buffers};

/// Running sums of the negative log-likelihoods of scored tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Nll {
    sum: f64,
    sum_sq: f64,
    count: usize,
}

impl Nll {
    /// Adds a token scored with log probability `logprob`.
    pub fn add(&mut self, logprob: f64) {
        self.sum -= logprob;
        self.sum_sq += logprob * logprob;
        self.count += 1;
    }
    /// Tokens scored.
    pub fn count(&self) -> usize {
        self.count
    }
    /// Mean negative log-likelihood per token (nats); NaN before any token.
    pub fn mean(&self) -> f64 {
        self.sum / self.count as f64
    }
    /// `exp` of [`Nll::mean`].
    pub fn perplexity(&self) -> f64 {
        self.mean().exp()
    }
    /// Standard error of [`Nll::perplexity`]: the standard error of the mean
    /// negative log-likelihood times the perplexity (0 below two tokens).
    pub fn perplexity_error(&self) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        let n = self.count as f64;
        let mean = self.mean();
        let var = (self.sum_sq / n - mean * mean).max(0.0);
        (var / (n - 1.0)).sqrt() * self.perplexity()
    }
}

/// How the text is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunking {
    /// Tokens per chunk (llama.cpp's `--ctx-size`; it defaults to 512).
    pub context: usize,
    /// The beginning-of-sequence token that replaces each chunk's first token, if the
    /// model's file asks for one.
    pub bos: Option<u32>,
}

impl Chunking {
    /// Whole chunks in `tokens` tokens (a partial last chunk is not scored).
    pub fn chunks(&self, tokens: usize) -> usize {
        tokens / self.context.max(1)
    }
    /// Tokens scored per chunk: the second half but its last (that one predicts past
    /// the chunk).
    pub fn scored_per_chunk(&self) -> usize {
        self.context - self.context / 2 - 1
    }
}

/// Scores the chunks of `tokens` with the session's active adapter, in order, into `nll`;
/// `on_chunk(k, nll)` runs after chunk `k` and returns `false` to stop (then `Ok(false)`).
/// `state` is reset for each chunk and needs room for `chunking.context` positions.
///
/// # Errors
/// [`Error::BadInput`] for a context under 4 tokens; [`Error::ContextExceeded`] for a state
/// shorter than the context; [`Error::NumericalFailure`] for logits that are not finite
/// (the model's arithmetic overflowed); the core's errors while reading.
pub fn score_chunks(
    session: &Session<'_, '_, '_>,
    state: &mut DecoderState<'_>,
    tokens: &[u32],
    chunking: Chunking,
    bufs: &mut Buffers,
    nll: &mut Nll,
    on_chunk: &mut dyn FnMut(usize, &Nll) -> bool,
) -> Result<bool, Error> {
    let ctx = chunking.context;
    if ctx < 4 {
        return Err(Error::BadInput);
    }
    if state.context() < ctx {
        return Err(Error::ContextExceeded {
            needed: ctx,
            context: state.context(),
        });
    }
    let first = ctx / 2;
    let mut ids = Vec::with_capacity(ctx);
    for (k, chunk) in tokens.chunks_exact(ctx).enumerate() {
        ids.clear();
        ids.extend_from_slice(chunk);
        if let Some(bos) = chunking.bos {
            ids[0] = bos;
        }
        state.reset();
        read_prompt(session, state, &ids[..first], bufs)?;
        // Rows after tokens first .. ctx - 2 predict tokens first + 1 .. ctx - 1; the last
        // token is never read (nothing after it is scored).
        let mut bad = false;
        read_rows(session, state, &ids[first..ctx - 1], bufs, &mut |r, row| {
            match token_logprobs(row, ids[first + r + 1], 0) {
                Some(lp) => nll.add(lp.logprob),
                None => bad = true,
            }
            !bad
        })?;
        if bad {
            return Err(Error::NumericalFailure);
        }
        if !on_chunk(k, nll) {
            return Ok(false);
        }
    }
    Ok(true)
}
