//! The state behind one `RiffleModel`: plain Rust over `riffle-core`, no JavaScript types,
//! so that the host test suite can drive exactly what the browser runs.
//!
//! # Buffers and lifetimes
//!
//! The model bytes, the model and each adapter's bytes and workspace are leaked once
//! (`riffle_wasm_shared::load`), the merged weight buffer once per model (it travels
//! between the session and `spare_merged`, never reallocated). No `unsafe` is involved.
//! Short-lived buffers (arena, swap scratch, output) are ordinary `Vec`s.

use riffle_core::gguf::StringArray;
use riffle_core::runtime::{AdapterHandle, Input, Model, Session};
use riffle_core::text::Tokenizer;
use riffle_core::Error;
use riffle_wasm_shared::load::{self, what};
pub use riffle_wasm_shared::load::{Failure, Result};
pub use riffle_wasm_shared::now_ms;

/// One resident adapter, as `info()` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterInfo {
    /// Its handle.
    pub handle: AdapterHandle,
    /// `adapter.task_name`.
    pub task: String,
    /// The method (`gsoft`, `double_gsoft`, `oft`, `boft`).
    pub method: &'static str,
    /// Block size `b`.
    pub block_size: usize,
    /// Factors per side `m`.
    pub factors: usize,
    /// Size of its file.
    pub file_bytes: usize,
    /// Bytes of its prepared workspace (Cayley blocks and scales, `f32`).
    pub workspace_bytes: usize,
    /// Stored values (parameters, scales, head tensors).
    pub parameters: usize,
    /// Labels of its own head, empty when the base's labels apply.
    pub labels: Vec<String>,
    /// Time `addAdapter` took (parse, CRC, validation, Cayley precompute), ms.
    pub prepare_ms: f64,
}

/// Sizes, names and timings of a model and its adapters.
#[derive(Debug, Clone, PartialEq)]
pub struct Info {
    /// `general.architecture`.
    pub architecture: &'static str,
    /// The id adapters bind to.
    pub model_id: String,
    /// Size of the base model file.
    pub model_bytes: usize,
    /// Input vector length (0 for text models).
    pub input_len: usize,
    /// Longest input in tokens for text models, 0 otherwise.
    pub max_tokens: usize,
    /// The base's labels (or `0..n` when the file has none).
    pub labels: Vec<String>,
    /// Resident adapters, by handle.
    pub adapters: Vec<AdapterInfo>,
    /// Active adapter, `None` for the bare base.
    pub active: Option<AdapterHandle>,
    /// True in merged mode.
    pub merged: bool,
    /// Bytes of the inference arena.
    pub arena_bytes: usize,
    /// Bytes of the merged weight buffer (allocated on the first `setMerged(true)`).
    pub merged_bytes: usize,
    /// Bytes of the swap scratch.
    pub scratch_bytes: usize,
    /// Duration of the last adapter switch or merged toggle, ms.
    pub last_swap_ms: f64,
    /// Duration of the last inference, ms.
    pub last_run_ms: f64,
    /// Threads the model's steps run on (1 unless the threaded build started a pool
    /// before the model was created).
    pub threads: usize,
}

/// The result of one inference: borrowed from the engine's output buffer.
#[derive(Debug)]
pub struct RunResult<'e> {
    /// Raw outputs (logits).
    pub output: &'e [f32],
    /// Softmax of the outputs.
    pub probabilities: Vec<f32>,
    /// Index of the largest output.
    pub index: usize,
    /// Its label.
    pub label: String,
    /// The active task (`"base"` without adapter).
    pub task: String,
    /// Duration of the run, ms (tokenization included for text).
    pub latency_ms: f64,
    /// Tokens fed to a text model (`[CLS]` and `[SEP]` included), 0 for vectors.
    pub tokens: usize,
}

/// One base model, its resident adapters, and every buffer they need.
#[derive(Debug)]
pub struct Engine {
    model: &'static Model<'static>,
    session: Session<'static, 'static, 'static>,
    model_bytes: usize,
    /// The WordPiece tokenizer of a text model (its index leaked like the model bytes).
    tokenizer: Option<Tokenizer<'static, StringArray<'static>>>,
    ids: Vec<u32>,
    workspace_lens: Vec<usize>,
    prepare_ms: Vec<f64>,
    arena: Vec<f32>,
    scratch: Vec<f32>,
    output: Vec<f32>,
    out_len: usize,
    /// The merged weight buffer while unmerged (the session holds it while merged).
    spare_merged: Option<&'static mut [f32]>,
    last_swap_ms: f64,
    last_run_ms: f64,
    threads: usize,
}

/// Outputs reserved up front; grown on demand if a head is wider.
const OUTPUT_LEN: usize = 64;

impl Engine {
    /// Reads a base model (copied once into wasm memory by the caller, then kept).
    ///
    /// # Errors
    /// A file that is not a base model, or any error of [`Model::from_bytes`], as
    /// "NAME: ..." (`model: ...` without a name).
    pub fn new(bytes: Vec<u8>, name: Option<&str>) -> Result<Self> {
        let what = what(name, "model");
        let (model, model_bytes) = load::leak_model(bytes, what, |_, _| Ok(()))?;
        let tokenizer = if model.bert_config().is_some() {
            let len = model
                .tokenizer_index_len()
                .map_err(|e| Failure::core(what, e, Some(model.gguf())))?;
            let index: &'static mut [u32] = Box::leak(vec![0u32; len].into_boxed_slice());
            Some(
                model
                    .tokenizer(index)
                    .map_err(|e| Failure::core(what, e, Some(model.gguf())))?,
            )
        } else {
            None
        };
        let mut session = Session::new(model);
        let threads = riffle_wasm_shared::use_threads(&mut session);
        let mut e = Engine {
            model,
            session,
            model_bytes,
            tokenizer,
            ids: vec![0; model.max_tokens()],
            workspace_lens: Vec::new(),
            prepare_ms: Vec::new(),
            arena: Vec::new(),
            scratch: Vec::new(),
            output: vec![0.0; OUTPUT_LEN.max(model.output_len())],
            out_len: 0,
            spare_merged: None,
            last_swap_ms: 0.0,
            last_run_ms: 0.0,
            threads,
        };
        e.size_buffers();
        Ok(e)
    }

    fn size_buffers(&mut self) {
        let arena = self.session.arena_len(self.model.max_tokens().max(1));
        if self.arena.len() < arena {
            self.arena.resize(arena, 0.0);
        }
        let scratch = self.session.swap_scratch_len();
        if self.scratch.len() < scratch {
            self.scratch.resize(scratch, 0.0);
        }
    }

    /// The base model.
    pub fn model(&self) -> &Model<'static> {
        self.model
    }

    /// Parses, checks (CRC, base id, names, shapes, values) and prepares an adapter, and
    /// makes it resident. The active adapter does not change.
    ///
    /// # Errors
    /// Those of [`load::add_adapter`], as "NAME: ..." (`adapter: ...` without a name).
    /// Nothing changes.
    pub fn add_adapter(&mut self, bytes: Vec<u8>, name: Option<&str>) -> Result<AdapterHandle> {
        let added = load::add_adapter(&mut self.session, bytes, name)?;
        self.workspace_lens.push(added.workspace_len);
        self.prepare_ms.push(added.prepare_ms);
        self.size_buffers();
        Ok(added.handle)
    }

    /// Handle of the resident adapter for `task`.
    pub fn find(&self, task: &str) -> Option<AdapterHandle> {
        self.session.find(task)
    }

    /// Activates an adapter (`None`: the bare base). Returns the switch time in ms.
    ///
    /// # Errors
    /// "adapter handle: ..." for an unknown handle; nothing changes.
    pub fn use_adapter(&mut self, handle: Option<AdapterHandle>) -> Result<f64> {
        let t0 = now_ms();
        self.session
            .activate(handle, &mut self.scratch)
            .map_err(|e| Failure::core("adapter handle", e, None))?;
        self.last_swap_ms = now_ms() - t0;
        Ok(self.last_swap_ms)
    }

    /// Enters or leaves merged mode. Returns the time it took in ms.
    ///
    /// # Errors
    /// "merged mode: ..."; the session stays unmerged.
    pub fn set_merged(&mut self, on: bool) -> Result<f64> {
        let t0 = now_ms();
        if on && !self.session.is_merged() {
            let weights = match self.spare_merged.take() {
                Some(w) => w,
                None => Box::leak(vec![0.0f32; self.model.merged_len()].into_boxed_slice()),
            };
            // On failure the session drops the buffer; it was leaked, so it is simply lost
            // (only a short scratch can fail here, and the scratch is sized above).
            self.session
                .enable_merged(weights, &mut self.scratch)
                .map_err(|e| Failure::core("merged mode", e, None))?;
        } else if !on {
            if let Some(w) = self.session.disable_merged() {
                self.spare_merged = Some(w);
            }
        }
        self.last_swap_ms = now_ms() - t0;
        Ok(self.last_swap_ms)
    }

    /// True in merged mode.
    pub fn is_merged(&self) -> bool {
        self.session.is_merged()
    }

    /// The active adapter's handle.
    pub fn active(&self) -> Option<AdapterHandle> {
        self.session.active()
    }

    /// Labels of the active head: the active adapter's own, else the base's, else `0..n`
    /// for a vector model; empty for a text model without a head (its output is the
    /// sentence embedding).
    pub fn labels(&self) -> Vec<String> {
        let own = self.session.active_adapter().and_then(|p| p.labels());
        match own.or_else(|| self.model.labels()) {
            Some(l) => l.iter().map(|(_, s)| s.to_owned()).collect(),
            None if self.takes_text() => Vec::new(),
            None => (0..self.model.output_len())
                .map(|i| i.to_string())
                .collect(),
        }
    }

    /// True for text models (they take [`Engine::run_text`]).
    pub fn takes_text(&self) -> bool {
        self.tokenizer.is_some()
    }

    /// Runs one input vector with the active adapter, merged or not.
    ///
    /// # Errors
    /// "input: ..." (wrong input length, ...).
    pub fn run_vector(&mut self, x: &[f32]) -> Result<RunResult<'_>> {
        if self.takes_text() {
            return Err(Failure::new(
                "input",
                "this model takes text, not numbers (use runText)",
                Some(Error::BadInput),
            ));
        }
        let t0 = now_ms();
        self.run(Input::Vector(x), t0, 0)
    }

    /// Tokenizes `text` with the model's WordPiece tokenizer (truncated to
    /// [`Model::max_tokens`]) and runs it with the active adapter.
    ///
    /// # Errors
    /// "input: ..." for a model that does not take text.
    pub fn run_text(&mut self, text: &str) -> Result<RunResult<'_>> {
        let t0 = now_ms();
        let Some(tok) = &self.tokenizer else {
            return Err(Failure::new(
                "input",
                format!(
                    "this model takes {} numbers, not text (use runVector)",
                    self.model.input_len()
                ),
                Some(Error::BadInput),
            ));
        };
        let max = self.ids.len();
        let n = tok
            .encode(text, max, &mut self.ids)
            .map_err(|e| Failure::core("input", e, None))?;
        let ids = std::mem::take(&mut self.ids);
        let r = self.forward(Input::Tokens(&ids[..n]));
        self.ids = ids;
        r?;
        self.result(t0, n)
    }

    fn run(&mut self, input: Input<'_>, t0: f64, tokens: usize) -> Result<RunResult<'_>> {
        self.forward(input)?;
        self.result(t0, tokens)
    }

    fn forward(&mut self, input: Input<'_>) -> Result<()> {
        let n = loop {
            match self.session.run(input, &mut self.output, &mut self.arena) {
                Ok(n) => break n,
                Err(Error::BufferTooSmall { needed, got }) if got == self.output.len() => {
                    self.output.resize(needed, 0.0);
                }
                Err(e) => return Err(Failure::core("input", e, None)),
            }
        };
        self.out_len = n;
        Ok(())
    }

    fn result(&mut self, t0: f64, tokens: usize) -> Result<RunResult<'_>> {
        let n = self.out_len;
        let latency_ms = now_ms() - t0;
        self.last_run_ms = latency_ms;
        let index = riffle_core::sample::argmax(&self.output[..n]) as usize;
        let label = self.labels().into_iter().nth(index).unwrap_or_default();
        let task = self
            .session
            .active_adapter()
            .map_or("base", |p| p.task_name())
            .to_owned();
        let output = &self.output[..n];
        Ok(RunResult {
            probabilities: softmax(output),
            output,
            index,
            label,
            task,
            latency_ms,
            tokens,
        })
    }

    /// Sizes, names and timings.
    pub fn info(&self) -> Info {
        let base_labels = match self.model.labels() {
            Some(l) => l.iter().map(|(_, s)| s.to_owned()).collect(),
            None if self.takes_text() => Vec::new(),
            None => (0..self.model.output_len())
                .map(|i| i.to_string())
                .collect(),
        };
        let adapters = self
            .session
            .adapters()
            .iter()
            .enumerate()
            .map(|(h, p)| AdapterInfo {
                handle: h,
                task: p.task_name().to_owned(),
                method: p.method().name(),
                block_size: p.block_size(),
                factors: p.factors(),
                file_bytes: p.file_bytes(),
                workspace_bytes: 4 * self.workspace_lens.get(h).copied().unwrap_or(0),
                parameters: p.parameter_count(),
                labels: p
                    .labels()
                    .map(|l| l.iter().map(|(_, s)| s.to_owned()).collect())
                    .unwrap_or_default(),
                prepare_ms: self.prepare_ms.get(h).copied().unwrap_or(0.0),
            })
            .collect();
        let merged_len = match (self.session.merged_weights(), &self.spare_merged) {
            (Some(w), _) => w.len(),
            (None, Some(w)) => w.len(),
            (None, None) => 0,
        };
        Info {
            architecture: self.model.architecture().name(),
            model_id: self.model.model_id().to_owned(),
            model_bytes: self.model_bytes,
            input_len: if self.takes_text() {
                0
            } else {
                self.model.input_len()
            },
            max_tokens: self.model.max_tokens(),
            labels: base_labels,
            adapters,
            active: self.session.active(),
            merged: self.session.is_merged(),
            arena_bytes: 4 * self.arena.len(),
            merged_bytes: 4 * merged_len,
            scratch_bytes: 4 * self.scratch.len(),
            last_swap_ms: self.last_swap_ms,
            last_run_ms: self.last_run_ms,
            threads: self.threads,
        }
    }
}

fn softmax(v: &[f32]) -> Vec<f32> {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = v.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}
