//! `riffle run`: inputs from `--text`, a `.npy` file or stdin, through a base with
//! resident adapters, unmerged or merged.

use std::path::PathBuf;

use serde_json::json;

use crate::engine::{input_kind, takes_text, InputValue, Prediction, Runner, Stack};
use crate::fail::{bad, Result};
use crate::files::{open_all, Mapped};
use crate::{npy, show};

/// Arguments of `riffle run`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["text", "input", "stdin"])))]
pub struct RunArgs {
    /// Base model (GGUF).
    #[arg(long, short = 'm', value_name = "M.gguf")]
    pub model: PathBuf,
    /// Adapter (GGUF); repeat to keep several resident.
    #[arg(long = "adapter", short = 'a', value_name = "A.gguf")]
    pub adapters: Vec<PathBuf>,
    /// Task of the adapter to activate (default: the first adapter). `base` runs the
    /// bare base.
    #[arg(long, short = 't', value_name = "NAME")]
    pub task: Option<String>,
    /// Merge the adapter into a copy of the weights instead of applying it unmerged.
    #[arg(long)]
    pub merge: bool,
    /// One text input (text models).
    #[arg(long, value_name = "TEXT")]
    pub text: Option<String>,
    /// A NumPy .npy file of float32, shape (d) or (batch, d), or a riffle dataset
    /// (.gguf with an `inputs` tensor).
    #[arg(long, short = 'i', value_name = "x.npy")]
    pub input: Option<PathBuf>,
    /// Read one input per line from stdin (numbers separated by commas or spaces, or
    /// text for text models).
    #[arg(long)]
    pub stdin: bool,
    /// One JSON object per input, one per line.
    #[arg(long)]
    pub json: bool,
}

/// Maps the base and the adapters and checks them against each other.
pub fn open(model: &std::path::Path, adapters: &[PathBuf]) -> Result<(Mapped, Vec<Mapped>)> {
    let model = Mapped::open(model)?;
    let adapters = open_all(adapters)?;
    Ok((model, adapters))
}

/// (name, bytes) of mapped files.
pub fn pairs(maps: &[Mapped]) -> Vec<(&str, &[u8])> {
    maps.iter().map(|m| (m.name(), m.bytes())).collect()
}

/// Parses one line of input for `model`: numbers separated by commas and/or spaces for
/// vector models, the line itself for text models.
pub fn parse_line(line: &str, runner: &Runner<'_, '_>) -> std::result::Result<InputValue, String> {
    if takes_text(runner.model()) {
        return Ok(InputValue::Text(line.to_string()));
    }
    let mut v = Vec::new();
    for (i, tok) in line
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .enumerate()
    {
        let x: f32 = tok.parse().map_err(|_| {
            format!(
                "value {} (`{}`) is not a number; {} takes {}",
                i + 1,
                tok.chars().take(20).collect::<String>(),
                runner.model_name(),
                input_kind(runner.model())
            )
        })?;
        v.push(x);
    }
    let want = runner.model().input_len();
    if v.len() != want {
        return Err(format!(
            "input has {} values; {} takes {want}",
            v.len(),
            runner.model_name()
        ));
    }
    Ok(InputValue::Vector(v))
}

/// One prediction as a line: JSON or readable.
pub fn render(p: &Prediction, index: usize, merged: bool, json: bool) -> String {
    if json {
        let mut o = json!({
            "input": index,
            "task": p.task,
            "merged": merged,
        });
        if let Some((i, name)) = &p.label {
            o["label"] = json!(name);
            o["label_index"] = json!(i);
        }
        if let Some(probs) = &p.probabilities {
            o["probabilities"] = show::nums(probs);
        }
        if let Some(n) = p.tokens {
            o["tokens"] = json!(n);
        }
        o["output"] = show::nums(&p.output);
        return o.to_string();
    }
    let task = p.task.as_deref().unwrap_or("base");
    let mode = match (merged, p.tokens) {
        (true, Some(n)) => format!(", merged, {n} tokens"),
        (false, Some(n)) => format!(", {n} tokens"),
        (true, None) => ", merged".to_string(),
        (false, None) => String::new(),
    };
    match (&p.label, &p.probabilities) {
        (Some((i, name)), Some(probs)) => {
            format!("{index}: {name}  (p = {:.3}; {task}{mode})", probs[*i])
        }
        _ => {
            let head: Vec<String> = p.output.iter().take(8).map(|x| format!("{x:.4}")).collect();
            let more = if p.output.len() > 8 {
                format!(", … {} values", p.output.len())
            } else {
                String::new()
            };
            format!("{index}: [{}{more}]  ({task}{mode})", head.join(", "))
        }
    }
}

/// Picks the handle for `--task` (`base` = the bare base, when no adapter has that task).
pub fn pick_task(runner: &Runner<'_, '_>, task: Option<&str>) -> Result<Option<usize>> {
    match task {
        None => Ok(if runner.tasks().is_empty() {
            None
        } else {
            Some(0)
        }),
        Some(t) => match runner.session().find(t) {
            Some(h) => Ok(Some(h)),
            None if t == "base" => Ok(None),
            None => runner.handle(t, "--task").map(Some),
        },
    }
}

/// `riffle run`.
pub fn run(a: RunArgs) -> Result<()> {
    let (model_map, adapter_maps) = open(&a.model, &a.adapters)?;
    if crate::files::is_causal(&model_map) {
        return match (&a.text, a.merge) {
            (Some(text), false) => crate::cmd::generate::run_logits(
                &model_map,
                &adapter_maps,
                a.task.as_deref(),
                text,
                a.json,
            ),
            (_, true) => Err(bad(
                model_map.name(),
                "--merge is not available for generative models (adapters run unmerged)",
            )),
            (None, _) => Err(bad(
                model_map.name(),
                "is a generative model: give --text (the next token's logits), or use `riffle generate`",
            )),
        };
    }
    let mut stack = Stack::load((model_map.name(), model_map.bytes()), &pairs(&adapter_maps))?;
    let text_model = takes_text(&stack.model);
    let kind = input_kind(&stack.model);
    if a.text.is_some() && !text_model {
        return Err(bad(
            model_map.name(),
            format!("this model takes {kind}, not text (use --input x.npy or --stdin)"),
        ));
    }
    let batch = match &a.input {
        Some(path) => {
            let f = Mapped::open(path)?;
            if text_model {
                return Err(bad(
                    model_map.name(),
                    "this model takes text, not a .npy file (use --text or --stdin)",
                ));
            }
            let m = if f.bytes().starts_with(b"GGUF") {
                // A riffle dataset file: its `inputs` tensor.
                let d = crate::files::load_dataset(f.name(), f.bytes())?;
                npy::Npy {
                    rows: d.len(),
                    cols: d.width,
                    data: d.inputs,
                }
            } else {
                npy::parse(f.bytes()).map_err(|e| bad(f.name(), e))?
            };
            let want = stack.model.input_len();
            if m.cols != want {
                return Err(bad(
                    f.name(),
                    format!(
                        "inputs have {} values each (shape {}); {} takes {want}",
                        m.cols,
                        if m.rows == 1 {
                            format!("({},) or (1, {})", m.cols, m.cols)
                        } else {
                            format!("({}, {})", m.rows, m.cols)
                        },
                        model_map.name()
                    ),
                ));
            }
            Some(m)
        }
        None => None,
    };
    let mut runner = stack.runner()?;
    let handle = pick_task(&runner, a.task.as_deref())?;
    runner.activate(handle)?;
    runner.set_merged(a.merge)?;
    let merged = runner.is_merged();
    let emit = |runner: &mut Runner<'_, '_>, index: usize, input: &InputValue, what: &str| {
        let p = runner.predict(input).map_err(|e| bad(what, e))?;
        show::line(render(&p, index, merged, a.json));
        Ok(())
    };
    if let Some(t) = &a.text {
        emit(&mut runner, 0, &InputValue::Text(t.clone()), "--text")?;
    }
    if let Some(m) = &batch {
        let name = a
            .input
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        for i in 0..m.rows {
            emit(
                &mut runner,
                i,
                &InputValue::Vector(m.row(i).to_vec()),
                &name,
            )?;
        }
    }
    if a.stdin {
        let stdin = std::io::stdin();
        let mut lines = crate::lines::Lines::stopping(stdin.lock());
        let mut index = 0;
        let mut n = 0usize;
        while let Some(line) = lines
            .next_line()
            .map_err(|e| bad("<stdin>", crate::files::io_problem(&e)))?
        {
            n += 1;
            let what = format!("<stdin>:{n}");
            // A line too long or not UTF-8 is a bad line like any other (exit 2, named).
            let line = line.text().map_err(|e| bad(&what, e))?;
            let l = line.trim();
            if l.is_empty() || (!text_model && l.starts_with('#')) {
                continue;
            }
            let input = parse_line(l, &runner).map_err(|e| bad(&what, e))?;
            emit(&mut runner, index, &input, &what)?;
            index += 1;
        }
    }
    Ok(())
}
