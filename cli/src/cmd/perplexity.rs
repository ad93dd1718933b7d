//! `riffle perplexity`: a causal model's perplexity over a text file, with an adapter
//! active or the bare base, measured as llama.cpp's `llama-perplexity` measures it
//! (`riffle_host::perplexity`), so that the two can be compared on the same file and an
//! adapter's cost to the base's general language modelling can be read off.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use riffle_host::perplexity::{score_chunks, Chunking, Nll};
use serde_json::json;

use crate::cmd::run::{open, pairs};
use crate::fail::{bad, runtime, Result};
use crate::llm::{buffers, CacheArgs, KvBuffer, Llm};
use crate::show;

/// Tokens per chunk unless `--context` says otherwise (llama.cpp's default).
pub const DEFAULT_CONTEXT: usize = 512;

/// Largest text file `perplexity` reads (wikitext-2's test split is 1.3 MB).
pub const MAX_TEXT_BYTES: u64 = 256 << 20;

/// Arguments of `riffle perplexity`.
#[derive(clap::Args, Debug)]
pub struct PerplexityArgs {
    /// Base model (GGUF, a causal architecture such as llama).
    #[arg(long, short = 'm', value_name = "M.gguf")]
    model: PathBuf,
    /// Adapter (GGUF); repeat to keep several resident.
    #[arg(long, short = 'a', value_name = "A.gguf")]
    adapter: Vec<PathBuf>,
    /// Task of the adapter to activate (default: the first adapter; `base`: none).
    #[arg(long, short = 't', value_name = "NAME")]
    task: Option<String>,
    /// The text (UTF-8), read whole and tokenized as llama.cpp does.
    #[arg(long, short = 'f', value_name = "TEXT.txt")]
    file: PathBuf,
    /// Tokens per chunk; the second half of each is scored (llama.cpp's `--ctx-size`;
    /// default 512, or the model's context if shorter).
    #[arg(long, value_name = "N")]
    context: Option<usize>,
    /// Score at most this many chunks (default: every whole chunk of the text).
    #[arg(long, value_name = "N")]
    chunks: Option<usize>,
    #[command(flatten)]
    cache: CacheArgs,
    /// One JSON object at the end instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `riffle perplexity`.
///
/// # Errors
/// Bad inputs (exit 2) for files and flags, a text too short for one chunk; runtime
/// failures (exit 1).
pub fn run(args: PerplexityArgs) -> Result<()> {
    if args.chunks == Some(0) {
        return Err(bad("--chunks", "must be at least 1"));
    }
    let text_name = args.file.display().to_string();
    let bytes = crate::files::read_regular(&args.file, MAX_TEXT_BYTES)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        bad(
            &text_name,
            format!("is not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )
    })?;
    let (model_file, adapters) = open(&args.model, &args.adapter)?;
    let mut llm = Llm::load((model_file.name(), model_file.bytes()), &pairs(&adapters))?;
    let mut chat = llm.open()?;
    let task = chat.start_with(args.task.as_deref())?;
    let model = chat.model();
    let max = model.max_tokens();
    let context = args.context.unwrap_or(DEFAULT_CONTEXT.min(max));
    if context < 4 || context > max {
        return Err(bad(
            "--context",
            format!("must be between 4 and the model's context of {max} tokens"),
        ));
    }
    let tokens = chat.encode(&text, &text_name)?;
    let (bos, add_bos) = chat.vocab().bpe().bos();
    let chunking = Chunking {
        context,
        bos: bos.filter(|_| add_bos),
    };
    let whole = chunking.chunks(tokens.len());
    if whole == 0 {
        return Err(bad(
            &text_name,
            format!(
                "has {} tokens, fewer than one chunk of --context {}",
                tokens.len(),
                context
            ),
        ));
    }
    let chunks = args.chunks.map_or(whole, |c| c.min(whole));
    let mut kv = KvBuffer::new(
        model,
        context,
        args.cache.cache_type,
        &format!("{}: the key/value cache", model_file.name()),
    )?;
    let mut state = kv
        .state(model, context)
        .map_err(|e| runtime(model_file.name(), e))?;
    let mut bufs = buffers(model);
    let what = task.unwrap_or("base");
    let mut err = std::io::stderr().lock();
    if !args.json {
        let _ = writeln!(
            err,
            "perplexity of {} over {}: {chunks} chunks of {context} tokens, {} scored each",
            show::esc(what),
            show::esc(&text_name),
            chunking.scored_per_chunk()
        );
    }
    let t0 = Instant::now();
    let mut nll = Nll::default();
    let mut running = Vec::with_capacity(chunks);
    score_chunks(
        chat.session(),
        &mut state,
        &tokens[..chunks * context],
        chunking,
        &mut bufs,
        &mut nll,
        &mut |k, n| {
            running.push(n.perplexity());
            if !args.json {
                let _ = write!(err, "[{}]{:.4},", k + 1, n.perplexity());
                let _ = err.flush();
            }
            true
        },
    )
    .map_err(|e| runtime(model_file.name(), e))?;
    let seconds = t0.elapsed().as_secs_f64();
    if !args.json {
        let _ = writeln!(err);
    }
    let scored = nll.count();
    // Each chunk reads all its tokens but the last.
    let read = chunks * (context - 1);
    let line = if args.json {
        json!({
            "task": task,
            "file": text_name,
            "tokens": tokens.len(),
            "context": context,
            "chunks": chunks,
            "scored": scored,
            "nll": nll.mean(),
            "ppl": nll.perplexity(),
            "ppl_error": nll.perplexity_error(),
            "chunk_ppl": running,
            "seconds": seconds,
        })
        .to_string()
    } else {
        let (ppl, err, rate) = (
            nll.perplexity(),
            nll.perplexity_error(),
            read as f64 / seconds,
        );
        format!(
            "PPL = {ppl:.4} +/- {err:.5} ({what}, {scored} tokens scored, {read} read in \
             {seconds:.1} s: {rate:.0} tokens/s)"
        )
    };
    // Escaped as every line riffle prints (task and file names come from files).
    show::line(line);
    Ok(())
}
