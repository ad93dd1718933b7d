//! `riffle generate`: text from a causal model (`llama`), streamed as it is made, with an
//! adapter active; `--chat` renders the file's own chat template. Also the causal path
//! of `riffle run` (the next token's logits).

use std::io::Write;
use std::path::PathBuf;

use riffle_core::runtime::Input;
use riffle_core::sample::SamplerConfig;
use riffle_host::chat::Message;
use riffle_host::generate::LogitAdjust;
use serde_json::json;

use crate::cmd::run::{open, pairs};
use crate::fail::{bad, runtime, Result};
use crate::limits::zeroed;
use crate::llm::{buffers, context_for, CacheType, Decoding, KvBuffer, Llm};

/// Arguments of `riffle generate`.
pub struct GenerateArgs {
    pub model: PathBuf,
    pub adapters: Vec<PathBuf>,
    pub task: Option<String>,
    pub prompt: Option<String>,
    pub chat: Option<String>,
    pub system: Option<String>,
    pub max_tokens: usize,
    pub decoding: Decoding,
    pub cache: CacheType,
    pub json: bool,
}

/// The sampling flags of `generate` and `chat`.
#[derive(clap::Args, Debug)]
pub struct SamplingArgs {
    /// Sampling temperature (0: greedy, ties to the lowest id).
    #[arg(long, default_value_t = 0.8, value_name = "T")]
    temperature: f32,
    /// Keep the K most likely tokens (0: all).
    #[arg(long, default_value_t = 40, value_name = "K")]
    top_k: usize,
    /// Keep the most likely tokens up to probability P.
    #[arg(long, default_value_t = 0.95, value_name = "P")]
    top_p: f32,
    /// Seed of the sampler (the same seed gives the same text).
    #[arg(long, default_value_t = 0, value_name = "S")]
    seed: u64,
    /// Subtracted from a token's logit once per time it was generated (OpenAI's
    /// `frequency_penalty`, -2 to 2).
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "F",
        allow_negative_numbers = true
    )]
    frequency_penalty: f32,
    /// Subtracted from the logit of every token generated at least once (OpenAI's
    /// `presence_penalty`, -2 to 2).
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "P",
        allow_negative_numbers = true
    )]
    presence_penalty: f32,
    /// `json`: the answer is one JSON object (tokens that would break it are never
    /// drawn; it ends when the object closes).
    #[arg(long, value_name = "FORMAT", value_parser = ["json"])]
    format: Option<String>,
}

impl SamplingArgs {
    /// The checked decoding configuration.
    ///
    /// # Errors
    /// A bad input naming the flag.
    pub fn config(&self) -> Result<Decoding> {
        let SamplingArgs {
            temperature,
            top_k,
            top_p,
            seed,
            frequency_penalty,
            presence_penalty,
            ref format,
        } = *self;
        if !temperature.is_finite() || temperature < 0.0 {
            return Err(bad("--temperature", "must be a finite number >= 0"));
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(bad("--top-p", "must be in (0, 1]"));
        }
        for (flag, v) in [
            ("--frequency-penalty", frequency_penalty),
            ("--presence-penalty", presence_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(bad(flag, "must be between -2 and 2"));
            }
        }
        Ok(Decoding {
            sampler: SamplerConfig {
                temperature,
                top_k,
                top_p,
                seed,
            },
            adjust: LogitAdjust {
                bias: Vec::new(),
                frequency_penalty,
                presence_penalty,
            },
            json_object: format.as_deref() == Some("json"),
        })
    }
}

/// Runs `riffle generate`.
///
/// # Errors
/// Bad inputs (exit 2) for files, flags and prompts; runtime failures (exit 1).
pub fn run(args: GenerateArgs) -> Result<()> {
    let (model, adapters) = open(&args.model, &args.adapters)?;
    let mut llm = Llm::load((model.name(), model.bytes()), &pairs(&adapters))?;
    let mut chat = llm.open()?;
    chat.start_with(args.task.as_deref())?;
    let text = match (&args.prompt, &args.chat) {
        (Some(p), None) => p.clone(),
        (None, Some(user)) => {
            let mut messages = Vec::new();
            if let Some(s) = &args.system {
                messages.push(Message::system(s));
            }
            messages.push(Message::user(user));
            chat.chat_text(&messages)?
        }
        _ => return Err(bad("generate", "give exactly one of --prompt and --chat")),
    };
    let ids = chat.encode(&text, "the prompt")?;
    if ids.is_empty() {
        return Err(bad("the prompt", "is empty"));
    }
    let model = chat.model();
    let context = context_for(model, ids.len(), args.max_tokens)?;
    let mut kv = KvBuffer::new(
        model,
        context,
        args.cache,
        &format!("{}: the key/value cache", llm_name(&args)),
    )?;
    let mut state = kv
        .state(model, context)
        .map_err(|e| runtime(llm_name(&args), e))?;
    let mut bufs = buffers(model);
    let mut out = std::io::stdout().lock();
    let json = args.json;
    let mut write_err = None;
    let g = chat.generate(
        &mut state,
        &ids,
        &args.decoding,
        args.max_tokens,
        &mut bufs,
        &mut |token, piece| {
            let r = if json {
                writeln!(out, "{}", json!({"token": token, "text": piece}))
            } else {
                write!(out, "{piece}").and_then(|()| out.flush())
            };
            match r {
                Ok(()) => true,
                Err(e) => {
                    write_err = Some(e);
                    false
                }
            }
        },
    )?;
    if let Some(e) = write_err {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(runtime("stdout", e));
        }
        return Ok(());
    }
    if json {
        writeln!(
            out,
            "{}",
            json!({
                "done": true,
                "tokens": g.tokens,
                "text": g.text,
                "prompt_tokens": g.prompt_tokens,
                "prompt_ms": g.prompt_ms,
                "decode_ms": g.decode_ms,
                "stop": format!("{:?}", g.stop).to_lowercase(),
            })
        )
        .map_err(|e| runtime("stdout", e))?;
    } else {
        writeln!(out).map_err(|e| runtime("stdout", e))?;
    }
    Ok(())
}

fn llm_name(args: &GenerateArgs) -> String {
    args.model.display().to_string()
}

/// `riffle run` on a causal model: the logits of the token after `text`.
///
/// # Errors
/// As [`run`].
pub fn run_logits(
    m: &crate::files::Mapped,
    a: &[crate::files::Mapped],
    task: Option<&str>,
    text: &str,
    json: bool,
) -> Result<()> {
    let mut llm = Llm::load((m.name(), m.bytes()), &pairs(a))?;
    let mut chat = llm.open()?;
    chat.start_with(task)?;
    let ids = chat.encode(text, "--text")?;
    if ids.is_empty() {
        return Err(bad("--text", "is empty"));
    }
    let model = chat.model();
    context_for(model, ids.len(), 0)?;
    let mut arena = zeroed::<f32>(
        model.arena_len(ids.len(), 0),
        &format!("{}: the arena", m.name()),
    )?;
    let mut logits = vec![0.0f32; model.output_len()];
    let s = chat.session();
    s.run(Input::Tokens(&ids), &mut logits, &mut arena)
        .map_err(|e| runtime(m.name(), e))?;
    let mut out = std::io::stdout().lock();
    let line = if json {
        json!({"output": logits, "tokens": ids.len()}).to_string()
    } else {
        let next = riffle_core::sample::argmax(&logits);
        let mut piece = Vec::new();
        riffle_host::generate::TokenBytes::token_bytes(chat.vocab(), next, &mut piece);
        format!(
            "next token: {next} ({:?}), logit {:.3} ({} tokens read)",
            String::from_utf8_lossy(&piece),
            logits[next as usize],
            ids.len()
        )
    };
    match writeln!(out, "{line}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(runtime("stdout", e)),
        _ => Ok(()),
    }
}
