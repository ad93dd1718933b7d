//! The state behind one `RiffleModel`: plain Rust over `riffle-core`, no JavaScript types,
//! so that the host test suite can drive exactly what the browser runs.
//!
//! # Buffers and lifetimes
//!
//! `riffle-core` borrows everything: a [`Model`] borrows its file bytes, a
//! [`Prepared`](riffle_core::runtime::Prepared) adapter borrows its file bytes and its
//! workspace, a [`Session`] borrows the model and (in merged mode) the merged weight buffer. A `#[wasm_bindgen]` struct cannot hold
//! borrows, and rebuilding the views on every call would redo the Cayley precompute of
//! every adapter. So the long-lived buffers are **leaked** (`Box::leak`) into `'static`
//! slices when they are handed to the core: the model bytes and the model itself once per
//! `RiffleModel`, each adapter's bytes and workspace once per successful `addAdapter`, the
//! merged weight buffer once per model (it travels between the session and `spare_merged`,
//! never reallocated). No `unsafe` is involved. The price: freeing a `RiffleModel` from
//! JavaScript does not give these buffers back to the wasm heap. The page creates one
//! model per base and keeps it for its lifetime, so nothing grows; a bad adapter is
//! rejected before anything is leaked. Short-lived buffers (arena, swap scratch, output)
//! are ordinary `Vec`s.

use std::fmt;

use riffle_core::gguf::{self, Gguf, StringArray};
use riffle_core::runtime::{Adapter, AdapterHandle, Input, Model, Session, MAX_RESIDENT};
use riffle_core::text::Tokenizer;
use riffle_core::Error;

/// A failure, worded like the CLI's (`cli/src/files.rs`): `<what>: <problem>`, where
/// `what` is the file name when the caller gave one (else `model`, `adapter`, `input`,
/// ...) and `problem` the core error's own message, with the name of the tensor it
/// points at, or the CLI's wording for a file of the wrong kind or for the wrong base.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    what: String,
    problem: String,
    error: Option<Error>,
}

impl Failure {
    fn new(what: &str, problem: impl Into<String>, error: Option<Error>) -> Self {
        Failure {
            what: what.to_owned(),
            problem: problem.into(),
            error,
        }
    }

    /// A core error on `file` (whose tensor table names the tensor an error points at).
    fn core(what: &str, error: Error, file: Option<&Gguf<'_>>) -> Self {
        Failure::new(what, describe(error, file), Some(error))
    }

    /// The core error behind it, if any.
    pub fn error(&self) -> Option<Error> {
        self.error
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.problem)
    }
}

impl std::error::Error for Failure {}

/// The core's message for `err`, with the name of the tensor it points at in `file` (the
/// core's errors carry table indices), as the CLI prints it.
fn describe(err: Error, file: Option<&Gguf<'_>>) -> String {
    let index = match err {
        Error::UnknownTensorType { tensor, .. }
        | Error::TensorOutOfRange { tensor }
        | Error::Misaligned { tensor }
        | Error::UnknownTensor { tensor }
        | Error::ShapeMismatch { tensor } => Some(tensor),
        _ => None,
    };
    let name = index.and_then(|i| Some(file?.tensor(i as usize)?.name()));
    match (index, name) {
        (Some(i), Some(n)) if !n.is_empty() => format!("{err} [tensor {i} is `{n}`]"),
        _ => err.to_string(),
    }
}

/// Parses the container, with the CLI's wording for a file cut short.
fn parse<'a>(what: &str, bytes: &'a [u8]) -> Result<Gguf<'a>> {
    Gguf::parse(bytes).map_err(|e| match e {
        Error::TensorOutOfRange { tensor } => Failure::new(
            what,
            format!(
                "file is truncated or corrupt: the data of tensor {tensor} lies beyond its end ({} bytes)",
                bytes.len()
            ),
            Some(e),
        ),
        e => Failure::core(what, e, None),
    })
}

/// What a parsed file is, from `general.type`, as a noun for messages.
fn kind_noun(g: &Gguf<'_>) -> &'static str {
    match g.get_str(gguf::KEY_TYPE) {
        Ok(gguf::TYPE_MODEL) | Err(_) => "a base model",
        Ok(gguf::TYPE_ADAPTER) => "an adapter",
        Ok("dataset") => "a dataset",
        Ok(_) => "not a riffle file",
    }
}

/// Reads a base model, with the CLI's messages.
fn load_model<'a>(what: &str, bytes: &'a [u8]) -> Result<Model<'a>> {
    let g = parse(what, bytes)?;
    let kind = kind_noun(&g);
    if kind != "a base model" {
        return Err(Failure::new(
            what,
            format!("is {kind}, not a base model"),
            Some(Error::UnsupportedModel),
        ));
    }
    Model::from_bytes(bytes).map_err(|e| match e {
        Error::UnsupportedModel => Failure::new(
            what,
            format!(
                "architecture `{}` is not supported by this runtime",
                g.get_str(gguf::KEY_ARCHITECTURE).unwrap_or("?")
            ),
            Some(e),
        ),
        e => Failure::core(what, e, Some(&g)),
    })
}

/// Reads an adapter and checks it against `model`, with the CLI's messages; returns
/// it with its workspace length.
fn load_adapter<'a>(
    what: &str,
    bytes: &'a [u8],
    model: &Model<'a>,
) -> Result<(Adapter<'a>, usize)> {
    let g = parse(what, bytes)?;
    let kind = kind_noun(&g);
    if kind != "an adapter" {
        return Err(Failure::new(
            what,
            format!("is {kind}, not an adapter"),
            Some(Error::UnsupportedModel),
        ));
    }
    let adapter = Adapter::from_bytes(bytes).map_err(|e| match e {
        Error::MissingKey | Error::WrongValueType => Failure::new(
            what,
            format!("{} (malformed adapter)", describe(e, Some(&g))),
            Some(e),
        ),
        Error::UnsupportedModel => Failure::new(
            what,
            "unsupported adapter (adapter.type must be `orthogonal`, with a known method and permutation)",
            Some(e),
        ),
        e => Failure::core(what, e, Some(&g)),
    })?;
    let arch = g.get_str(gguf::KEY_ARCHITECTURE).unwrap_or("?");
    let base_arch = model.architecture().name();
    if arch != base_arch {
        return Err(Failure::new(
            what,
            format!("adapter is for a `{arch}` base, but the base is a `{base_arch}` model"),
            Some(Error::UnsupportedModel),
        ));
    }
    if !adapter.binds_to(model.model_id()) {
        return Err(Failure::new(
            what,
            format!(
                "adapter was made for another base model (it binds to {}, the base is {})",
                short_id(adapter.base_model_id()),
                short_id(model.model_id())
            ),
            Some(Error::BaseMismatch),
        ));
    }
    let need = adapter
        .workspace_len(model)
        .map_err(|e| Failure::core(what, e, Some(&g)))?;
    Ok((adapter, need))
}

fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// Shorthand for results of this module.
pub type Result<T> = std::result::Result<T, Failure>;

/// Milliseconds from a monotonic clock: `performance.now()` in a browser (window or
/// worker), `Instant` on the host.
pub fn now_ms() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        crate::performance_now()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        use std::time::Instant;
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_secs_f64() * 1e3
    }
}

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
        let what = name.filter(|n| !n.is_empty()).unwrap_or("model");
        // Validate before leaking: a bad file must not cost memory.
        load_model(what, &bytes)?;
        let model_bytes = bytes.len();
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        let model = load_model(what, bytes)?;
        let model: &'static Model<'static> = Box::leak(Box::new(model));
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
        let session = Session::new(model);
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
    /// A file that is not an adapter, an adapter for another architecture or base, a task
    /// already resident, or any error of [`Adapter::from_bytes`], [`Adapter::prepare`] or
    /// [`Session::add_adapter`], as "NAME: ..." (`adapter: ...` without a name). Nothing
    /// changes.
    pub fn add_adapter(&mut self, bytes: Vec<u8>, name: Option<&str>) -> Result<AdapterHandle> {
        let t0 = now_ms();
        let what = name.filter(|n| !n.is_empty()).unwrap_or("adapter");
        if self.session.adapters().len() >= MAX_RESIDENT {
            return Err(Failure::new(
                what,
                format!("at most {MAX_RESIDENT} adapters can be resident at once"),
                Some(Error::CapacityExceeded),
            ));
        }
        // Full validation on the caller's bytes first; only a good adapter is leaked.
        let (adapter, need) = load_adapter(what, &bytes, self.model)?;
        if let Some(other) = self.session.find(adapter.task_name()) {
            return Err(Failure::new(
                what,
                format!(
                    "task `{}` is already given by resident adapter {other}",
                    adapter.task_name()
                ),
                None,
            ));
        }
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        let (adapter, _) = load_adapter(what, bytes, self.model)?;
        let workspace: &'static mut [f32] = Box::leak(vec![0.0f32; need].into_boxed_slice());
        let prepared = adapter
            .prepare(self.model, workspace)
            .map_err(|e| Failure::core(what, e, Some(adapter.gguf())))?;
        let handle = self
            .session
            .add_adapter(prepared)
            .map_err(|e| Failure::core(what, e, None))?;
        self.workspace_lens.push(need);
        self.prepare_ms.push(now_ms() - t0);
        self.size_buffers();
        Ok(handle)
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
        let index = argmax(&self.output[..n]);
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
        }
    }
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

fn softmax(v: &[f32]) -> Vec<f32> {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = v.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}
