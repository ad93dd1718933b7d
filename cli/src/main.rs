//! `riffle`: the command-line front end of riffle-core. Thin by design: argument parsing,
//! file I/O and printing; every model computation is the core's.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Parser, Subcommand};

mod atomic;
mod cmd;
mod embedded;
mod engine;
mod fail;
mod files;
mod gguf_write;
mod limits;
mod lines;
mod llm;
mod npy;
mod residents;
mod safetensors;
mod serve;
mod show;
mod threads;

/// Run fine-tuned networks by swapping tiny orthogonal adapters (GSOFT, Double GSOFT,
/// OFT, BOFT) over one frozen base model.
#[derive(Parser, Debug)]
#[command(name = "riffle", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Threads for the model's dense products (default: every available core; `demo`
    /// runs on one).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the embedded 8x8-digits demo: two bases, eight adapters, swapped at runtime
    /// unmerged and merged, scored on held-out sets (no files, no network).
    Demo,
    /// Run inputs through a base with resident adapters.
    Run(cmd::run::RunArgs),
    /// Interactive session: swap adapters between inputs (`:use NAME`, `:base`,
    /// `:merge on|off`, `:info`, `:help`, `:quit`). Works with piped input.
    Repl {
        /// Base model (GGUF).
        #[arg(long, short = 'm', value_name = "M.gguf")]
        model: PathBuf,
        /// Adapter (GGUF); repeat to keep several resident.
        #[arg(long, short = 'a', value_name = "A.gguf")]
        adapter: Vec<PathBuf>,
        /// Print results as JSON objects.
        #[arg(long)]
        json: bool,
    },
    /// Generate text with a generative model (llama GGUF), streamed as it is made, with
    /// an adapter active; `--chat` applies the file's chat template.
    #[command(group(ArgGroup::new("input").required(true).args(["prompt", "chat"])))]
    Generate {
        /// Base model (GGUF, a causal architecture such as llama).
        #[arg(long, short = 'm', value_name = "M.gguf")]
        model: PathBuf,
        /// Adapter (GGUF); repeat to keep several resident.
        #[arg(long, short = 'a', value_name = "A.gguf")]
        adapter: Vec<PathBuf>,
        /// Task of the adapter to activate (default: the first adapter; `base`: none).
        #[arg(long, short = 't', value_name = "NAME")]
        task: Option<String>,
        /// Raw prompt text (special tokens such as `<|im_start|>` are parsed).
        #[arg(long, value_name = "TEXT")]
        prompt: Option<String>,
        /// One user message, rendered with the file's chat template.
        #[arg(long, value_name = "TEXT")]
        chat: Option<String>,
        /// A system message for `--chat`.
        #[arg(long, value_name = "TEXT", requires = "chat")]
        system: Option<String>,
        /// Most tokens to generate.
        #[arg(long, default_value_t = 256, value_name = "N")]
        max_tokens: usize,
        #[command(flatten)]
        sampling: cmd::generate::SamplingArgs,
        #[command(flatten)]
        cache: llm::CacheArgs,
        /// One JSON object per generated token, then a summary object.
        #[arg(long)]
        json: bool,
    },
    /// Chat with a generative model, streamed, swapping adapters between messages
    /// (`:use TASK`, `:base`, `:reset`, `:quit`). Works with piped input.
    Chat {
        /// Base model (GGUF, a causal architecture such as llama).
        #[arg(long, short = 'm', value_name = "M.gguf")]
        model: PathBuf,
        /// Adapter (GGUF); repeat to keep several resident.
        #[arg(long, short = 'a', value_name = "A.gguf")]
        adapter: Vec<PathBuf>,
        /// Task of the adapter active at the start (default: the first adapter; `base`:
        /// none); `:use TASK` and `:base` switch later.
        #[arg(long, short = 't', value_name = "NAME")]
        task: Option<String>,
        /// A system message for the whole conversation.
        #[arg(long, value_name = "TEXT")]
        system: Option<String>,
        /// Most tokens per answer.
        #[arg(long, default_value_t = 512, value_name = "N")]
        max_tokens: usize,
        #[command(flatten)]
        sampling: cmd::generate::SamplingArgs,
        #[command(flatten)]
        cache: llm::CacheArgs,
    },
    /// Show a GGUF file: metadata, tensors, and what riffle makes of it.
    Inspect {
        /// A base model, an adapter or a dataset (GGUF).
        file: PathBuf,
        /// Recompute the model id (bases) or the CRC-32 (adapters, datasets); exit 2 on a
        /// mismatch.
        #[arg(long)]
        verify: bool,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write a base model with an adapter merged into its weights.
    Merge {
        /// Base model (GGUF).
        #[arg(long, short = 'm', value_name = "M.gguf")]
        model: PathBuf,
        /// Adapter to merge (GGUF).
        #[arg(long, short = 'a', value_name = "A.gguf")]
        adapter: PathBuf,
        /// Output file.
        #[arg(long, short = 'o', value_name = "OUT.gguf")]
        output: PathBuf,
    },
    /// Measure base, unmerged and merged latency, activation and in-place swap times; for
    /// a generative model, prompt and decode tokens per second (base and unmerged).
    Bench {
        /// Base model (GGUF).
        #[arg(long, short = 'm', value_name = "M.gguf")]
        model: PathBuf,
        /// Adapter (GGUF); required for encoders and vector models.
        #[arg(long, short = 'a', value_name = "A.gguf")]
        adapter: Option<PathBuf>,
        /// Prompt tokens read at once (generative models).
        #[arg(long, default_value_t = 128, value_name = "N")]
        prompt_tokens: usize,
        /// Tokens generated one by one after the prompt (generative models).
        #[arg(long, default_value_t = 64, value_name = "N")]
        gen_tokens: usize,
        /// Also decode this many sequences together (one step reads every sequence's next
        /// token, as `riffle serve` does with its running requests; with --adapter, every
        /// other sequence under it) against one after another (generative models).
        #[arg(long, default_value_t = 1, value_name = "N")]
        sequences: usize,
        /// Sequence lengths for text models, comma-separated (vector models use their
        /// input length).
        #[arg(long, value_name = "16,64,128", value_delimiter = ',')]
        seq: Vec<usize>,
        /// Seconds spent on each measurement.
        #[arg(long, default_value_t = 0.25, value_name = "SECONDS")]
        budget: f64,
        #[command(flatten)]
        cache: llm::CacheArgs,
        /// One JSON object per sequence length, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Perplexity of a generative model over a text file, with an adapter or the bare
    /// base, measured as llama.cpp's `llama-perplexity` measures it.
    Perplexity(cmd::perplexity::PerplexityArgs),
    /// Print the token ids of a text under a model file's own tokenizer (byte-level BPE:
    /// llama.cpp's ids; WordPiece for bert files), without loading the model.
    Tokenize {
        /// Model (GGUF) whose tokenizer to use.
        #[arg(long, short = 'm', value_name = "M.gguf")]
        model: PathBuf,
        /// The text to tokenize.
        #[arg(long, value_name = "TEXT")]
        text: String,
        /// One JSON object, `{"ids": [...]}`.
        #[arg(long)]
        json: bool,
    },
    /// Serve the model over HTTP with OpenAI's API (chat and text completions, embeddings),
    /// the adapter chosen per request by its task name.
    Serve(serve::ServeArgs),
    /// Convert a PEFT OFT or BOFT adapter folder (adapter_config.json +
    /// adapter_model.safetensors) into a riffle adapter.
    ImportPeft {
        /// The PEFT adapter folder.
        dir: PathBuf,
        /// The base model the adapter was trained on (GGUF).
        #[arg(long, short = 'b', value_name = "M.gguf")]
        base: PathBuf,
        /// Output adapter file.
        #[arg(long, short = 'o', value_name = "A.gguf")]
        output: PathBuf,
        /// Task name of the adapter (default: the folder's name).
        #[arg(long, short = 't', value_name = "NAME")]
        task: Option<String>,
        /// Class labels of a head the adapter brings (PEFT modules_to_save),
        /// comma-separated.
        #[arg(long, value_name = "A,B,...", value_delimiter = ',')]
        labels: Option<Vec<String>>,
    },
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!("riffle: internal error (a bug, please report it): {msg}{at}");
        std::process::exit(101);
    }));
    let cli = Cli::parse();
    let threads = match cli.command {
        Command::Demo => Some(cli.threads.unwrap_or(1)),
        _ => cli.threads,
    };
    if let Err(e) = threads::configure_kernels().and_then(|()| threads::configure(threads)) {
        eprintln!("riffle: {e}");
        return ExitCode::from(e.code as u8);
    }
    let result = match cli.command {
        Command::Demo => cmd::demo::run(),
        Command::Run(args) => cmd::run::run(args),
        Command::Repl {
            model,
            adapter,
            json,
        } => cmd::repl::run(&model, &adapter, json),
        Command::Generate {
            model,
            adapter,
            task,
            prompt,
            chat,
            system,
            max_tokens,
            sampling,
            cache,
            json,
        } => sampling.config().and_then(|decoding| {
            cmd::generate::run(cmd::generate::GenerateArgs {
                model,
                adapters: adapter,
                task,
                prompt,
                chat,
                system,
                max_tokens,
                decoding,
                cache: cache.cache_type,
                json,
            })
        }),
        Command::Chat {
            model,
            adapter,
            task,
            system,
            max_tokens,
            sampling,
            cache,
        } => sampling.config().and_then(|decoding| {
            cmd::chat::run(
                &model,
                &adapter,
                task.as_deref(),
                system.as_deref(),
                max_tokens,
                &decoding,
                cache.cache_type,
            )
        }),
        Command::Inspect { file, verify, json } => cmd::inspect::run(&file, verify, json),
        Command::Merge {
            model,
            adapter,
            output,
        } => cmd::merge::run(&model, &adapter, &output),
        Command::Bench {
            model,
            adapter,
            prompt_tokens,
            gen_tokens,
            sequences,
            seq,
            budget,
            cache,
            json,
        } => cmd::bench_llm::run(
            &model,
            adapter.as_ref(),
            [prompt_tokens, gen_tokens, sequences],
            &seq,
            budget,
            cache.cache_type,
            json,
        ),
        Command::Perplexity(args) => cmd::perplexity::run(args),
        Command::Tokenize { model, text, json } => cmd::tokenize::run(&model, &text, json),
        Command::Serve(args) => serve::run(args),
        Command::ImportPeft {
            dir,
            base,
            output,
            task,
            labels,
        } => cmd::import_peft::run(cmd::import_peft::ImportArgs {
            dir: &dir,
            base: &base,
            output: &output,
            task,
            labels,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("riffle: {}", show::esc(&e.to_string()));
            ExitCode::from(e.code as u8)
        }
    }
}
