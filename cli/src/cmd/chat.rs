//! `riffle chat`: an interactive conversation with a causal model, streamed, with
//! adapters swapped between messages (`:use TASK`, `:base`), `:reset` and `:quit`.
//! The conversation is kept as chat-template messages; after a switch the whole
//! conversation is re-read under the new adapter (keys and values are never reused
//! across adapters). Works with piped input.

use std::io::Write;
use std::path::PathBuf;

use riffle_host::chat::Message;

use crate::cmd::run::{open, pairs};
use crate::fail::{runtime, Result};
use crate::lines::Lines;
use crate::llm::{buffers, CacheType, Decoding, KvBuffer, Llm};

/// Positions of the conversation's state (the model's context, at most this many).
const CONTEXT: usize = 4096;

/// Runs `riffle chat`.
///
/// # Errors
/// Bad inputs for the files; runtime failures.
pub fn run(
    model: &std::path::Path,
    adapters: &[PathBuf],
    task: Option<&str>,
    system: Option<&str>,
    max_tokens: usize,
    decoding: &Decoding,
    cache: CacheType,
) -> Result<()> {
    let (m, a) = open(model, adapters)?;
    let mut llm = Llm::load((m.name(), m.bytes()), &pairs(&a))?;
    let mut chat = llm.open()?;
    let active = chat.start_with(task)?;
    let model = chat.model();
    let context = model.max_tokens().min(CONTEXT);
    let mut kv = KvBuffer::new(
        model,
        context,
        cache,
        &format!("{}: the key/value cache", m.name()),
    )?;
    let mut state = kv.state(model, context).map_err(|e| runtime(m.name(), e))?;
    let mut bufs = buffers(model);
    let mut messages: Vec<Message> = system.map(Message::system).into_iter().collect();
    // Tokens the state holds (a prefix of the next prompt when nothing was switched).
    let mut history: Vec<u32> = Vec::new();
    let input = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    let tasks = chat.tasks();
    let say = |out: &mut std::io::StdoutLock<'_>, s: &str| {
        let _ = writeln!(out, "{s}");
    };
    say(
        &mut out,
        &format!(
            "riffle chat · {} · {} (tasks: {}; active: {}) · :use TASK, :base, :reset, :quit",
            m.name(),
            model.architecture().name(),
            if tasks.is_empty() {
                "none".to_string()
            } else {
                tasks.join(", ")
            },
            active.unwrap_or("the bare base")
        ),
    );
    let mut lines = Lines::new(input);
    let mut line_no = 0usize;
    loop {
        let _ = write!(out, "> ");
        let _ = out.flush();
        let Some(line) = lines.next_line().map_err(|e| runtime("<stdin>", e))? else {
            let _ = writeln!(out);
            return Ok(());
        };
        line_no += 1;
        let line = match line.text() {
            Ok(l) => l,
            Err(problem) => {
                eprintln!("<stdin>:{line_no}: {problem}");
                continue;
            }
        };
        let line = line.as_str();
        if line.trim().is_empty() {
            continue;
        }
        if let Some(cmd) = line.strip_prefix(':') {
            let mut words = cmd.split_whitespace();
            match (words.next(), words.next()) {
                (Some("quit" | "q" | "exit"), _) => return Ok(()),
                (Some("reset"), _) => {
                    messages.retain(|m| m.role == "system");
                    history.clear();
                    state.reset();
                    say(&mut out, "(conversation cleared)");
                }
                (Some("base"), _) => {
                    chat.activate(None)?;
                    history.clear();
                    state.reset();
                    say(&mut out, "(bare base)");
                }
                (Some("use"), Some(task)) => match chat.handle(task, &format!("<stdin>:{line_no}"))
                {
                    Ok(h) => {
                        chat.activate(h)?;
                        history.clear();
                        state.reset();
                        say(&mut out, &format!("(adapter `{task}`)"));
                    }
                    Err(e) => eprintln!("{e}"),
                },
                _ => eprintln!(
                    "<stdin>:{line_no}: unknown command `{line}` (:use TASK, :base, :reset, :quit)"
                ),
            }
            continue;
        }
        messages.push(Message::user(line));
        let text = match chat.chat_text(&messages) {
            Ok(t) => t,
            Err(e) => {
                messages.pop();
                eprintln!("{e}");
                continue;
            }
        };
        let ids = chat.encode(&text, &format!("<stdin>:{line_no}"))?;
        // Re-read only what the state does not hold yet.
        let common = history.iter().zip(&ids).take_while(|(a, b)| a == b).count();
        let common = common.min(ids.len().saturating_sub(1));
        // Keep whole prefill chunks only: the rest is read in the chunks a fresh start
        // reads it in, so an answer never depends on what was said before it was cached.
        let common = common - common % crate::llm::PREFILL_CHUNK;
        if ids.len() >= context {
            messages.pop();
            eprintln!("<stdin>:{line_no}: the conversation no longer fits the context of {context} tokens (:reset)");
            continue;
        }
        state.truncate(common);
        history.truncate(common);
        let room = context - ids.len();
        let mut on_piece = |_: u32, piece: &str| {
            let _ = write!(out, "{piece}");
            let _ = out.flush();
            true
        };
        let g = chat.generate(
            &mut state,
            &ids[common..],
            decoding,
            max_tokens.min(room),
            &mut bufs,
            &mut on_piece,
        )?;
        let _ = writeln!(out);
        // What the state holds: the prompt and the generated tokens it has read (the
        // last one is not read when the token budget ends the answer).
        history.extend_from_slice(&ids[common..]);
        history.extend_from_slice(&g.tokens);
        history.truncate(state.len());
        messages.push(Message::assistant(&g.text));
    }
}
