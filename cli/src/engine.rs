//! The CLI's thin layer over a `riffle_core` session: a base, resident adapters, the
//! buffers they need, and turning raw outputs into labels and probabilities.

use riffle_core::gguf::StringArray;
use riffle_core::runtime::{AdapterHandle, Input, InputKind, Model, Session};
use riffle_core::text::Tokenizer;

use crate::fail::{bad, runtime, Result};
use crate::files::load_model;
use crate::limits;
use crate::residents::Residents;

/// One input as read from the command line, a file or a line of stdin.
#[derive(Debug, Clone, PartialEq)]
pub enum InputValue {
    /// Numbers, for vector-input models (`mlp`, `cnn`).
    Vector(Vec<f32>),
    /// Text, for text models (`bert`).
    Text(String),
}

/// What the model made of one input.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// The active adapter's task, `None` for the bare base.
    pub task: Option<String>,
    /// The raw output vector (logits, or an embedding for a text model without a head).
    pub output: Vec<f32>,
    /// Index and name of the top label, when the active head has labels.
    pub label: Option<(usize, String)>,
    /// Softmax of the output, when the active head has labels.
    pub probabilities: Option<Vec<f32>>,
    /// Token count of a text input (`[CLS]` and `[SEP]` included).
    pub tokens: Option<usize>,
}

/// True for models that take text (`--text`, text lines on stdin).
pub fn takes_text(model: &Model<'_>) -> bool {
    matches!(model.input_kind(), InputKind::Tokens { .. })
}

/// A sentence saying what inputs `model` takes.
pub fn input_kind(model: &Model<'_>) -> String {
    match model.input_kind() {
        InputKind::Tokens { max } if model.is_causal() => {
            format!("text (generative, context {max} tokens)")
        }
        InputKind::Tokens { max } => format!("text (at most {max} tokens)"),
        InputKind::Vector { len } => format!("vectors of {len} numbers"),
    }
}

/// A base model and its adapters, parsed and checked against each other, with the
/// buffers a session borrows.
pub struct Stack<'f> {
    /// Name of the base file.
    pub model_name: String,
    /// The base.
    pub model: Model<'f>,
    /// The adapters, in command-line order.
    pub residents: Residents<'f>,
    merged: Vec<f32>,
    token_index: Vec<u32>,
}

impl<'f> Stack<'f> {
    /// Loads the base `model` and every adapter in `adapters` (name, bytes).
    ///
    /// # Errors
    /// A bad input naming the file at fault: see [`load_model`] and [`Residents::load`]
    /// (the task name `base` is reserved).
    pub fn load(model: (&str, &'f [u8]), adapters: &[(&str, &'f [u8])]) -> Result<Self> {
        let (model_name, model_bytes) = model;
        let model = load_model(model_name, model_bytes)?;
        let residents = Residents::load(&model, model_name, adapters, Some("base"))?;
        // Tensors that share one data range count once in the file but once each in
        // the merged copy: bound the copy by the file (limits::MAX_MERGED_PER_FILE_BYTE).
        let merged_bytes = (model.merged_len() as u64).saturating_mul(4);
        let file_bytes = model_bytes.len() as u64;
        if merged_bytes > file_bytes.saturating_mul(limits::MAX_MERGED_PER_FILE_BYTE) {
            return Err(bad(
                model_name,
                format!(
                    "its weights would take {merged_bytes} bytes merged, more than {} times the file's {file_bytes} (do tensors share data?)",
                    limits::MAX_MERGED_PER_FILE_BYTE
                ),
            ));
        }
        let merged = limits::zeroed::<f32>(
            model.merged_len(),
            &format!("{model_name}: the merged weights"),
        )?;
        let token_index = if takes_text(&model) {
            let n = model
                .tokenizer_index_len()
                .map_err(|e| crate::fail::core_bad(model_name, e, Some(model.gguf())))?;
            limits::zeroed::<u32>(n, &format!("{model_name}: the tokenizer index"))?
        } else {
            Vec::new()
        };
        Ok(Stack {
            model_name: model_name.to_string(),
            model,
            residents,
            merged,
            token_index,
        })
    }

    /// Prepares every adapter (Cayley blocks into its workspace) and opens a session
    /// with all of them resident, the bare base active, unmerged.
    ///
    /// # Errors
    /// A bad input naming the adapter that fails to prepare.
    pub fn runner(&mut self) -> Result<Runner<'_, 'f>> {
        let Stack {
            model_name,
            model,
            residents,
            merged,
            token_index,
        } = self;
        let model: &Model<'f> = model;
        let tokenizer = if takes_text(model) {
            Some(
                model
                    .tokenizer(token_index)
                    .map_err(|e| crate::fail::core_bad(&*model_name, e, Some(model.gguf())))?,
            )
        } else {
            None
        };
        let names = residents.adapters.iter().map(|(n, _)| n.clone()).collect();
        let session = residents.session(model)?;
        let last = model.slots().len().saturating_sub(1);
        let out_len = session
            .adapters()
            .iter()
            .map(|p| {
                p.head(last)
                    .map_or(0, |h| h.rows)
                    .max(p.cls_head().map_or(0, |h| h.rows))
                    .max(p.labels().map_or(0, |l| l.len()))
            })
            .chain([model.output_len(), 1])
            .max()
            .unwrap_or(1);
        // Inputs of up to max_tokens must fit in memory (checked now, before any input);
        // the arena itself grows to the longest input seen (run_tokens), so a short text
        // does not touch the working memory of a 512-token one.
        let longest = session.arena_len(model.max_tokens());
        limits::check_elements::<f32>(
            longest,
            &format!(
                "{model_name}: the working memory for inputs of up to {} tokens",
                model.max_tokens()
            ),
        )?;
        let arena = limits::zeroed::<f32>(
            session.arena_len(0),
            &format!("{model_name}: the working memory"),
        )?;
        // Batched in-place swaps.
        let scratch = limits::zeroed::<f32>(
            session.swap_fast_scratch_len(),
            &format!("{model_name}: the swap scratch"),
        )?;
        Ok(Runner {
            session,
            merged_buf: Some(merged.as_mut_slice()),
            scratch,
            arena,
            out: limits::zeroed::<f32>(out_len, &format!("{model_name}: the output"))?,
            model_name: model_name.as_str(),
            file_names: names,
            tokenizer,
            ids: limits::zeroed::<u32>(
                model.max_tokens(),
                &format!("{model_name}: the token buffer"),
            )?,
        })
    }
}

/// A live session over a [`Stack`], with its buffers.
pub struct Runner<'s, 'f> {
    session: Session<'s, 'f, 's>,
    merged_buf: Option<&'s mut [f32]>,
    scratch: Vec<f32>,
    arena: Vec<f32>,
    out: Vec<f32>,
    model_name: &'s str,
    file_names: Vec<String>,
    tokenizer: Option<Tokenizer<'s, StringArray<'f>>>,
    ids: Vec<u32>,
}

impl<'s, 'f> Runner<'s, 'f> {
    /// The session (for timing loops).
    pub fn session(&self) -> &Session<'s, 'f, 's> {
        &self.session
    }

    /// The base model.
    pub fn model(&self) -> &'s Model<'f> {
        self.session.model()
    }

    /// Name of the base file.
    pub fn model_name(&self) -> &str {
        self.model_name
    }

    /// Task names of the resident adapters, by handle.
    pub fn tasks(&self) -> Vec<&'f str> {
        self.session
            .adapters()
            .iter()
            .map(|p| p.task_name())
            .collect()
    }

    /// File name of adapter `h`.
    pub fn file_name(&self, h: AdapterHandle) -> &str {
        &self.file_names[h]
    }

    /// Handle of the adapter for `task`.
    ///
    /// # Errors
    /// An unknown task: a bad input naming `--task` (or `what`), listing the tasks.
    pub fn handle(&self, task: &str, what: &str) -> Result<AdapterHandle> {
        self.session
            .find(task)
            .ok_or_else(|| unknown_task(task, &self.tasks(), what, ""))
    }

    /// Activates adapter `h`, or the bare base.
    ///
    /// # Errors
    /// A runtime failure (the handle is valid and the scratch sized by the session).
    pub fn activate(&mut self, h: Option<AdapterHandle>) -> Result<()> {
        self.session
            .activate(h, &mut self.scratch)
            .map_err(|e| runtime(self.model_name, e))
    }

    /// True in merged mode.
    pub fn is_merged(&self) -> bool {
        self.session.is_merged()
    }

    /// Enters or leaves merged mode (the active adapter stays active).
    ///
    /// # Errors
    /// A runtime failure.
    pub fn set_merged(&mut self, on: bool) -> Result<()> {
        if on == self.session.is_merged() {
            return Ok(());
        }
        if on {
            let buf = self
                .merged_buf
                .take()
                .ok_or_else(|| runtime(self.model_name, "merged weights are unavailable"))?;
            self.session
                .enable_merged(buf, &mut self.scratch)
                .map_err(|e| runtime(self.model_name, e))
        } else {
            self.merged_buf = self.session.disable_merged();
            Ok(())
        }
    }

    /// Re-merges the active adapter from the base (resets swap drift).
    ///
    /// # Errors
    /// A runtime failure.
    pub fn remerge(&mut self) -> Result<()> {
        self.session
            .remerge(&mut self.scratch)
            .map_err(|e| runtime(self.model_name, e))
    }

    /// The merged weights, in merged mode.
    pub fn merged_weights(&self) -> Option<&[f32]> {
        self.session.merged_weights()
    }

    /// Runs a vector input and returns the raw output (no allocation: for timing loops).
    ///
    /// # Errors
    /// A message for an input of the wrong length.
    pub fn run_vector(&mut self, x: &[f32]) -> std::result::Result<&[f32], String> {
        let want = self.model().input_len();
        if takes_text(self.model()) {
            return Err(format!(
                "{} takes text, not numbers (use --text or text lines)",
                self.model_name
            ));
        }
        if x.len() != want {
            return Err(format!(
                "input has {} values; {} takes {want}",
                x.len(),
                self.model_name
            ));
        }
        let n = self
            .session
            .run(Input::Vector(x), &mut self.out, &mut self.arena)
            .map_err(|e| e.to_string())?;
        Ok(&self.out[..n])
    }

    /// Runs token ids (text models).
    ///
    /// # Errors
    /// A message when the model is not a text model or the ids do not fit.
    pub fn run_tokens(&mut self, ids: &[u32]) -> std::result::Result<&[f32], String> {
        let need = self.session.arena_len(ids.len());
        if self.arena.len() < need {
            self.arena = limits::zeroed::<f32>(
                need,
                &format!(
                    "{}: the working memory for {} tokens",
                    self.model_name,
                    ids.len()
                ),
            )
            .map_err(|e| e.to_string())?;
        }
        let n = self
            .session
            .run(Input::Tokens(ids), &mut self.out, &mut self.arena)
            .map_err(|e| e.to_string())?;
        Ok(&self.out[..n])
    }

    /// Runs one input and names the result.
    ///
    /// # Errors
    /// A message (without location) for an input the model cannot take.
    pub fn predict(&mut self, input: &InputValue) -> std::result::Result<Prediction, String> {
        let mut tokens = None;
        let output = match input {
            InputValue::Vector(x) => self.run_vector(x)?.to_vec(),
            InputValue::Text(t) => {
                let n = self.encode(t)?;
                tokens = Some(n);
                let ids = std::mem::take(&mut self.ids);
                let out = self.run_tokens(&ids[..n]).map(<[f32]>::to_vec);
                self.ids = ids;
                out?
            }
        };
        let active = self.session.active_adapter();
        let labels = active
            .and_then(|p| p.labels())
            .or_else(|| self.model().labels());
        let (label, probabilities) = match labels {
            Some(l) if l.len() == output.len() => {
                let probs = softmax(&output);
                let top = argmax(&output);
                (
                    Some((top, l.get(top).unwrap_or("?").to_string())),
                    Some(probs),
                )
            }
            _ => (None, None),
        };
        Ok(Prediction {
            task: active.map(|p| p.task_name().to_string()),
            output,
            label,
            probabilities,
            tokens,
        })
    }

    /// Tokenizes `text` into the runner's id buffer; returns the token count.
    ///
    /// # Errors
    /// A message when the model does not take text.
    pub fn encode(&mut self, text: &str) -> std::result::Result<usize, String> {
        let Some(tok) = &self.tokenizer else {
            return Err(format!(
                "{} takes {}, not text",
                self.model_name,
                input_kind(self.model())
            ));
        };
        let max = self.ids.len();
        tok.encode(text, max, &mut self.ids)
            .map_err(|e| e.to_string())
    }

    /// Labels of the active head (the adapter's, else the base's).
    pub fn labels(&self) -> Option<Vec<String>> {
        self.session
            .active_adapter()
            .and_then(|p| p.labels())
            .or_else(|| self.model().labels())
            .map(|l| l.iter().map(|(_, s)| s.to_string()).collect())
    }

    /// Arena bytes of this session.
    pub fn arena_bytes(&self) -> usize {
        4 * self.arena.len()
    }
}

/// Index of the largest value (the first on ties; NaN never wins).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] || v[best].is_nan() {
            best = i;
        }
    }
    best
}

/// Softmax, computed in f64 for stability.
pub fn softmax(v: &[f32]) -> Vec<f32> {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = v.iter().map(|x| (*x as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| (x / s) as f32).collect()
}

/// The bad input for a task no resident adapter has, naming `what` and listing `tasks`
/// (`extra` follows the list, e.g. how to pick the bare base).
pub fn unknown_task(task: &str, tasks: &[&str], what: &str, extra: &str) -> crate::fail::Fail {
    bad(
        what,
        if tasks.is_empty() {
            format!("unknown task `{task}`: no adapter is loaded (add --adapter FILE)")
        } else {
            format!(
                "unknown task `{task}` (resident: {}{extra})",
                tasks
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
    )
}
