//! `riffle repl`: an interactive session that swaps adapters between inputs. Answers go to
//! stdout; prompts and acknowledgements go to stderr, and the prompt only when stderr is
//! a terminal, so piped scripts get clean output.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::cmd::run::{open, pairs, parse_line, render};
use crate::engine::{input_kind, Runner, Stack};
use crate::fail::{bad, Fail, Result, EXIT_INPUT};
use crate::files::short_id;
use crate::show;

const HELP: &str = "\
commands:
  :use NAME      activate the adapter of task NAME (unmerged: O(1); merged: in-place swap)
  :base          run the bare base (no adapter)
  :merge on|off  merged mode (adapter folded into a copy of the weights) or unmerged
  :info          the base, the resident adapters and the active one
  :help          this text
  :quit          leave (end of input does too)
any other line is an input";

/// `riffle repl`.
pub fn run(model: &Path, adapters: &[PathBuf], json_out: bool) -> Result<()> {
    let (model_map, adapter_maps) = open(model, adapters)?;
    let mut stack = Stack::load((model_map.name(), model_map.bytes()), &pairs(&adapter_maps))?;
    let mut runner = stack.runner()?;
    if !runner.tasks().is_empty() {
        runner.activate(Some(0))?;
    }
    let interactive = show::stderr_is_terminal();
    if interactive {
        let banner = format!(
            "riffle repl: {} ({}), adapters: {}. :help for commands.",
            runner.model_name(),
            input_kind(runner.model()),
            if runner.tasks().is_empty() {
                "none".to_string()
            } else {
                runner.tasks().join(", ")
            }
        );
        eprintln!("{}", show::esc(&banner));
    }
    let stdin = std::io::stdin();
    let mut lines = crate::lines::Lines::new(stdin.lock());
    let mut index = 0usize;
    let mut errors = 0usize;
    let mut n = 0usize;
    loop {
        if interactive {
            eprint!("{}> ", show::esc(&prompt(&runner)));
            let _ = std::io::stderr().flush();
        }
        let line = lines
            .next_line()
            .map_err(|e| bad("<stdin>", crate::files::io_problem(&e)))?;
        let Some(line) = line else { break };
        n += 1;
        let line = match line.text() {
            Ok(s) => s,
            Err(problem) => {
                // Too long or not UTF-8: reported, and the session goes on.
                eprintln!("riffle: <stdin>:{n}: {problem}");
                errors += 1;
                continue;
            }
        };
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') && !crate::engine::takes_text(runner.model()) {
            continue;
        }
        let what = format!("<stdin>:{n}");
        let outcome = if let Some(cmd) = l.strip_prefix(':') {
            match command(&mut runner, cmd, json_out) {
                Ok(Flow::Quit) => break,
                Ok(Flow::Go) => Ok(()),
                Err(e) => Err(e),
            }
        } else {
            parse_line(l, &runner)
                .and_then(|input| runner.predict(&input))
                .map(|p| {
                    show::line(render(&p, index, runner.is_merged(), json_out));
                    index += 1;
                })
        };
        if let Err(e) = outcome {
            eprintln!("riffle: {what}: {}", show::esc(&e.to_string()));
            errors += 1;
        }
    }
    if errors > 0 {
        return Err(Fail {
            code: EXIT_INPUT,
            message: format!(
                "<stdin>: {errors} line{} could not be used (see above)",
                if errors == 1 { "" } else { "s" }
            ),
        });
    }
    Ok(())
}

enum Flow {
    Go,
    Quit,
}

fn prompt(r: &Runner<'_, '_>) -> String {
    let task = r
        .session()
        .active_adapter()
        .map_or("base", |p| p.task_name());
    if r.is_merged() {
        format!("{task}+merged")
    } else {
        task.to_string()
    }
}

fn ack(msg: String) {
    if show::stderr_is_terminal() {
        eprintln!("{}", show::esc(&msg));
    }
}

fn command(r: &mut Runner<'_, '_>, cmd: &str, json_out: bool) -> std::result::Result<Flow, String> {
    let mut words = cmd.split_whitespace();
    let verb = words.next().unwrap_or("");
    let arg = words.next();
    match (verb, arg) {
        ("quit" | "q" | "exit", _) => return Ok(Flow::Quit),
        ("help" | "h" | "?", _) => show::line(HELP),
        ("base", None) => {
            let t = std::time::Instant::now();
            r.activate(None).map_err(|e| e.message)?;
            ack(format!("base active ({})", show::duration(t.elapsed())));
        }
        ("use", Some(task)) => {
            let h = r.handle(task, ":use").map_err(|e| {
                e.message
                    .strip_prefix(":use: ")
                    .unwrap_or(&e.message)
                    .to_string()
            })?;
            let t = std::time::Instant::now();
            r.activate(Some(h)).map_err(|e| e.message)?;
            let how = if r.is_merged() {
                "in-place swap"
            } else {
                "activated"
            };
            ack(format!("{task}: {how} in {}", show::duration(t.elapsed())));
        }
        ("use", None) => return Err(":use needs a task name (see :info)".into()),
        ("merge", Some(v @ ("on" | "off"))) => {
            let t = std::time::Instant::now();
            r.set_merged(v == "on").map_err(|e| e.message)?;
            ack(format!("merged mode {v} ({})", show::duration(t.elapsed())));
        }
        ("merge", _) => return Err(":merge takes `on` or `off`".into()),
        ("info", None) => info(r, json_out),
        _ => return Err(format!("unknown command `:{cmd}` (:help lists them)")),
    }
    Ok(Flow::Go)
}

fn info(r: &Runner<'_, '_>, json_out: bool) {
    let m = r.model();
    let active = r.session().active();
    if json_out {
        let adapters: Vec<_> = r
            .session()
            .adapters()
            .iter()
            .enumerate()
            .map(|(h, p)| {
                json!({
                    "task": p.task_name(),
                    "file": r.file_name(h),
                    "method": p.method().name(),
                    "block_size": p.block_size(),
                    "factors": p.factors(),
                    "parameters": p.parameter_count(),
                    "bytes": p.file_bytes(),
                    "labels": p.labels().map(|l| l.iter().map(|(_, s)| s).collect::<Vec<_>>()),
                    "active": active == Some(h),
                })
            })
            .collect();
        show::line(
            json!({
                "model": r.model_name(),
                "architecture": m.architecture().name(),
                "model_id": m.model_id(),
                "input": input_kind(m),
                "merged": r.is_merged(),
                "active": r.session().active_adapter().map(|p| p.task_name()),
                "labels": r.labels(),
                "arena_bytes": r.arena_bytes(),
                "adapters": adapters,
            })
            .to_string(),
        );
        return;
    }
    show::line(format!(
        "base     {} ({}, id {}…), input: {}",
        r.model_name(),
        m.architecture().name(),
        short_id(m.model_id()),
        input_kind(m)
    ));
    show::line(format!(
        "mode     {}, active: {}",
        if r.is_merged() { "merged" } else { "unmerged" },
        r.session()
            .active_adapter()
            .map_or("base", |p| p.task_name())
    ));
    if let Some(l) = r.labels() {
        show::line(format!("labels   {}", l.join(", ")));
    }
    for (h, p) in r.session().adapters().iter().enumerate() {
        show::line(format!(
            "{} {:<10} {} b={} m={}  {} params, {}  ({})",
            if active == Some(h) { "*" } else { " " },
            p.task_name(),
            p.method().name(),
            p.block_size(),
            p.factors(),
            p.parameter_count(),
            show::bytes(p.file_bytes()),
            r.file_name(h)
        ));
    }
}
