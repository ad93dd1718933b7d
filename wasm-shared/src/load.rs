//! Reading base models and adapters from bytes for the browser, with the CLI's messages,
//! and making them resident.
//!
//! # Buffers and lifetimes
//!
//! `riffle-core` borrows everything: a [`Model`] borrows its file bytes, a
//! [`Prepared`](riffle_core::runtime::Prepared) adapter borrows its file bytes and its
//! workspace, a [`Session`] borrows the model. A `#[wasm_bindgen]` struct cannot hold
//! borrows, and rebuilding the views on every call would redo the Cayley precompute of
//! every adapter. So the long-lived buffers are **leaked** (`Box::leak`) into `'static`
//! slices when they are handed to the core: the model bytes and the model itself once per
//! model ([`leak_model`]), each adapter's bytes and workspace once per successful
//! [`add_adapter`]. No `unsafe` is involved. The price: freeing a model from JavaScript
//! does not give these buffers back to the wasm heap. The pages create one model per base
//! and keep it for their lifetime, so nothing grows; a bad file is rejected before
//! anything is leaked.

use std::fmt;

use riffle_core::gguf::{self, Gguf};
use riffle_core::runtime::{Adapter, AdapterHandle, Model, Session, MAX_RESIDENT};
use riffle_core::Error;

use crate::now_ms;

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
    /// A failure of `what` described by `problem`, caused by the core's `error` if any.
    pub fn new(what: &str, problem: impl Into<String>, error: Option<Error>) -> Self {
        Failure {
            what: what.to_owned(),
            problem: problem.into(),
            error,
        }
    }

    /// A core error on `what`; `file` (whose tensor table names the tensor an error
    /// points at) when the error came from a parsed file.
    pub fn core(what: &str, error: Error, file: Option<&Gguf<'_>>) -> Self {
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

/// Shorthand for results of the browser modules.
pub type Result<T> = std::result::Result<T, Failure>;

/// `name` when the caller gave a non-empty one, else `default` (`model`, `adapter`).
pub fn what<'a>(name: Option<&'a str>, default: &'a str) -> &'a str {
    name.filter(|n| !n.is_empty()).unwrap_or(default)
}

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
///
/// # Errors
/// A file that is not a base model, or any error of [`Model::from_bytes`].
pub fn load_model<'a>(what: &str, bytes: &'a [u8]) -> Result<Model<'a>> {
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

/// Reads a base model with [`load_model`], lets `check` refuse it (a module that runs
/// one kind of model), and only then leaks the bytes and the model for the life of the
/// page. Returns the model and the size of its file.
///
/// # Errors
/// Those of [`load_model`] and `check`; nothing is leaked then.
pub fn leak_model(
    bytes: Vec<u8>,
    what: &str,
    check: fn(&str, &Model<'_>) -> Result<()>,
) -> Result<(&'static Model<'static>, usize)> {
    // Validate before leaking: a bad file must not cost memory.
    check(what, &load_model(what, &bytes)?)?;
    let len = bytes.len();
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    let model = load_model(what, bytes)?;
    Ok((Box::leak(Box::new(model)), len))
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
        Error::MissingKey { .. } | Error::WrongValueType => Failure::new(
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
        let short = |id: &str| id.chars().take(12).collect::<String>();
        return Err(Failure::new(
            what,
            format!(
                "adapter was made for another base model (it binds to {}, the base is {})",
                short(adapter.base_model_id()),
                short(model.model_id())
            ),
            Some(Error::BaseMismatch),
        ));
    }
    let need = adapter
        .workspace_len(model)
        .map_err(|e| Failure::core(what, e, Some(&g)))?;
    Ok((adapter, need))
}

/// An adapter made resident by [`add_adapter`].
#[derive(Debug, Clone, PartialEq)]
pub struct Added {
    /// Its handle in the session.
    pub handle: AdapterHandle,
    /// Values of its prepared workspace (`f32`).
    pub workspace_len: usize,
    /// Time the whole call took (parse, CRC, validation, Cayley precompute), ms.
    pub prepare_ms: f64,
    /// `general.description` (or `adapter.description`), empty when absent.
    pub description: String,
}

/// Parses, checks (CRC, kind, architecture, base id, names, shapes, values) and prepares
/// an adapter, and makes it resident in `session`; the active adapter does not change.
/// `name` (a file name) only words the errors.
///
/// # Errors
/// A file that is not an adapter, an adapter for another architecture or base, a task
/// already resident, more than [`MAX_RESIDENT`] adapters, or any error of
/// [`Adapter::from_bytes`], [`Adapter::prepare`] or [`Session::add_adapter`], as
/// `NAME: ...` (`adapter: ...` without a name). Nothing changes then, and nothing is
/// leaked.
pub fn add_adapter(
    session: &mut Session<'static, 'static, 'static>,
    bytes: Vec<u8>,
    name: Option<&str>,
) -> Result<Added> {
    let t0 = now_ms();
    let what = what(name, "adapter");
    let model = session.model();
    if session.adapters().len() >= MAX_RESIDENT {
        return Err(Failure::new(
            what,
            format!("at most {MAX_RESIDENT} adapters can be resident at once"),
            Some(Error::CapacityExceeded),
        ));
    }
    // Full validation on the caller's bytes first; only a good adapter is leaked.
    let (adapter, need) = load_adapter(what, &bytes, model)?;
    if let Some(other) = session.find(adapter.task_name()) {
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
    let (adapter, _) = load_adapter(what, bytes, model)?;
    let g = adapter.gguf();
    let description = g
        .get_str("general.description")
        .or_else(|_| g.get_str("adapter.description"))
        .unwrap_or("")
        .to_owned();
    let workspace: &'static mut [f32] = Box::leak(vec![0.0f32; need].into_boxed_slice());
    let prepared = adapter
        .prepare(model, workspace)
        .map_err(|e| Failure::core(what, e, Some(adapter.gguf())))?;
    let handle = session
        .add_adapter(prepared)
        .map_err(|e| Failure::core(what, e, None))?;
    Ok(Added {
        handle,
        workspace_len: need,
        prepare_ms: now_ms() - t0,
        description,
    })
}
