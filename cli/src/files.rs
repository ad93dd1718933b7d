//! Input files, memory-mapped (the core parses models and adapters in place from `&[u8]`),
//! and the checks that turn a GGUF file into a base model, an adapter or a dataset with
//! one clear message naming the file when anything is wrong.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use riffle_core::gguf::{self, Gguf};
use riffle_core::runtime::{Adapter, Model};

use crate::fail::{bad, core_bad, describe, Result};

/// A read-only memory map of a file, with the name to print in messages.
pub struct Mapped {
    name: String,
    map: Option<Mmap>,
}

impl Mapped {
    /// Maps `path` read-only.
    ///
    /// Only regular files are mapped: a directory, a FIFO, a socket or a device
    /// (`/dev/zero`, a terminal) is refused before it is opened, and the open itself
    /// does not block (`O_NONBLOCK`), so a FIFO swapped in meanwhile cannot hang riffle
    /// either; the opened file is checked again.
    ///
    /// # Errors
    /// A missing or unreadable file, anything but a regular file, an empty file: all
    /// bad inputs (exit 2).
    pub fn open(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| bad(&name, io_problem(&e)))?;
        check_regular(&name, &meta)?;
        let file = open_nonblocking(path).map_err(|e| bad(&name, io_problem(&e)))?;
        let meta = file.metadata().map_err(|e| bad(&name, io_problem(&e)))?;
        check_regular(&name, &meta)?;
        if meta.len() == 0 {
            return Err(bad(&name, "is empty (not a GGUF file)"));
        }
        // SAFETY: the map is read-only and private to this process; riffle reads files it
        // was given and does not expect them to change while it runs (as every mmap-based
        // model loader does; outputs are never written over an input, see `atomic`).
        // Nothing is written through the map.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| bad(&name, io_problem(&e)))?;
        Ok(Mapped {
            name,
            map: Some(map),
        })
    }

    /// The file name as given on the command line.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file's bytes (page-aligned, so 32-byte aligned as GGUF prefers).
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or_default()
    }
}

/// Refuses anything but a regular file, naming what it is.
///
/// # Errors
/// Exit 2 naming `name`.
pub fn check_regular(name: &str, meta: &std::fs::Metadata) -> Result<()> {
    if meta.is_file() {
        return Ok(());
    }
    let what = if meta.is_dir() {
        "a directory"
    } else {
        special_kind(meta)
    };
    Err(bad(name, format!("is {what}, not a regular file")))
}

#[cfg(unix)]
fn special_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &std::fs::Metadata) -> &'static str {
    "a special file"
}

/// Opens `path` for reading without blocking on a FIFO or a device.
pub fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NONBLOCK);
    }
    o.open(path)
}

/// Reads a whole input file that is not mapped (a `.npy`, a safetensors or JSON file of
/// a PEFT directory): a regular file only, opened without blocking, and at most
/// `limit` bytes.
///
/// # Errors
/// Exit 2 naming `path` for anything but a readable regular file within the limit.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| bad(&name, io_problem(&e)))?;
    check_regular(&name, &meta)?;
    let file = open_nonblocking(path).map_err(|e| bad(&name, io_problem(&e)))?;
    let meta = file.metadata().map_err(|e| bad(&name, io_problem(&e)))?;
    check_regular(&name, &meta)?;
    if meta.len() > limit {
        return Err(bad(
            &name,
            format!(
                "is {} bytes, more than the limit of {limit} for this kind of file",
                meta.len()
            ),
        ));
    }
    let mut out = crate::limits::zeroed::<u8>(0, &name)?;
    out.try_reserve_exact(meta.len() as usize)
        .map_err(|_| bad(&name, "cannot be read into memory"))?;
    file.take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| bad(&name, io_problem(&e)))?;
    if out.len() as u64 > limit {
        return Err(bad(
            &name,
            format!("grew past the limit of {limit} bytes while read"),
        ));
    }
    Ok(out)
}

/// Maps every path of `paths`.
///
/// # Errors
/// As [`Mapped::open`], for the first file that fails.
pub fn open_all(paths: &[PathBuf]) -> Result<Vec<Mapped>> {
    paths.iter().map(|p| Mapped::open(p)).collect()
}

/// A short, lowercase description of an I/O error.
pub fn io_problem(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound => "no such file".into(),
        K::PermissionDenied => "permission denied".into(),
        _ => {
            let s = e.to_string();
            // Drop the "(os error N)" tail for a cleaner line.
            match s.find(" (os error") {
                Some(i) => s[..i].to_lowercase(),
                None => s.to_lowercase(),
            }
        }
    }
}

/// What a GGUF file says it is (`general.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `model`, or no `general.type` (files from other tools).
    Model,
    /// `adapter`.
    Adapter,
    /// `dataset`.
    Dataset,
    /// Anything else.
    Other,
}

impl Kind {
    /// The kind of a parsed file.
    pub fn of(g: &Gguf<'_>) -> Kind {
        match g.get_str(gguf::KEY_TYPE) {
            Ok(gguf::TYPE_MODEL) | Err(_) => Kind::Model,
            Ok(gguf::TYPE_ADAPTER) => Kind::Adapter,
            Ok("dataset") => Kind::Dataset,
            Ok(_) => Kind::Other,
        }
    }

    /// A noun for messages.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Model => "a base model",
            Kind::Adapter => "an adapter",
            Kind::Dataset => "a dataset",
            Kind::Other => "not a riffle file",
        }
    }
}

/// Parses the GGUF container of `bytes`.
///
/// # Errors
/// Any container problem, as a bad input naming `name`.
pub fn parse_gguf<'a>(name: &str, bytes: &'a [u8]) -> Result<Gguf<'a>> {
    Gguf::parse(bytes).map_err(|e| match e {
        riffle_core::Error::TensorOutOfRange { tensor } => bad(
            name,
            format!(
                "file is truncated or corrupt: the data of tensor {tensor} lies beyond its end ({} bytes)",
                bytes.len()
            ),
        ),
        e => core_bad(name, e, None),
    })
}

/// Parses the GGUF container of `bytes` and checks that it holds a file of kind `want`
/// (a base model or an adapter); a base model or an adapter in the wrong place is told
/// which flag takes it.
///
/// # Errors
/// As [`parse_gguf`]; a file of another kind, as a bad input naming `name`.
fn parse_as<'a>(name: &str, bytes: &'a [u8], want: Kind) -> Result<Gguf<'a>> {
    let g = parse_gguf(name, bytes)?;
    let kind = Kind::of(&g);
    if kind == want {
        return Ok(g);
    }
    let hint = match kind {
        Kind::Adapter => " (pass it with --adapter)",
        Kind::Model => " (pass it with --model)",
        _ => "",
    };
    Err(bad(
        name,
        format!("is {}, not {}{hint}", kind.noun(), want.noun()),
    ))
}

/// Loads a base model.
///
/// # Errors
/// A bad input naming `name`: not GGUF, truncated, an adapter or a dataset, an
/// architecture the runtime does not know, a malformed model.
pub fn load_model<'a>(name: &str, bytes: &'a [u8]) -> Result<Model<'a>> {
    let g = parse_as(name, bytes, Kind::Model)?;
    Model::from_bytes(bytes).map_err(|e| match e {
        riffle_core::Error::UnsupportedModel => bad(name, crate::fail::unsupported_model(&g)),
        riffle_core::Error::MissingKey { .. } | riffle_core::Error::WrongValueType => bad(
            name,
            format!(
                "{} (malformed `{}` model)",
                describe(e, Some(&g)),
                arch_of(&g)
            ),
        ),
        e => core_bad(name, e, Some(&g)),
    })
}

fn arch_of<'a>(g: &Gguf<'a>) -> &'a str {
    g.get_str(gguf::KEY_ARCHITECTURE).unwrap_or("?")
}

/// Loads an adapter and checks that it fits `model` (architecture, base id, every tensor).
/// Returns it with the workspace length it needs.
///
/// # Errors
/// A bad input naming `name`: not GGUF, truncated, CRC mismatch, a base model or a
/// dataset, an adapter for another architecture or another base.
pub fn load_adapter<'a>(
    name: &str,
    bytes: &'a [u8],
    model: &Model<'a>,
    model_name: &str,
) -> Result<(Adapter<'a>, usize)> {
    let adapter = parse_adapter(name, bytes)?;
    let arch = adapter
        .gguf()
        .get_str(gguf::KEY_ARCHITECTURE)
        .unwrap_or("?");
    if arch != model.architecture().name() {
        return Err(bad(
            name,
            format!(
                "adapter is for a `{arch}` base, but {model_name} is a `{}` model",
                model.architecture().name()
            ),
        ));
    }
    if !adapter.binds_to(model.model_id()) {
        return Err(bad(
            name,
            format!(
                "adapter was made for another base model (it binds to {}, {model_name} is {})",
                short_id(adapter.base_model_id()),
                short_id(model.model_id())
            ),
        ));
    }
    let ws = adapter
        .workspace_len(model)
        .map_err(|e| core_bad(name, e, Some(adapter.gguf())))?;
    Ok((adapter, ws))
}

/// Parses an adapter on its own (container, keys, CRC).
///
/// # Errors
/// As [`load_adapter`], without the checks against a base.
pub fn parse_adapter<'a>(name: &str, bytes: &'a [u8]) -> Result<Adapter<'a>> {
    let g = parse_as(name, bytes, Kind::Adapter)?;
    Adapter::from_bytes(bytes).map_err(|e| match e {
        riffle_core::Error::MissingKey { .. } | riffle_core::Error::WrongValueType => bad(
            name,
            format!("{} (malformed adapter)", describe(e, Some(&g))),
        ),
        riffle_core::Error::UnsupportedModel => bad(
            name,
            "unsupported adapter (adapter.type must be `orthogonal`, with a known method and permutation)",
        ),
        e => core_bad(name, e, Some(&g)),
    })
}

/// A held-out set: inputs `(n, d)` and label ids.
pub struct Dataset {
    /// `dataset.task_name`.
    pub task: String,
    /// `dataset.labels`.
    pub labels: Vec<String>,
    /// Width of one input.
    pub width: usize,
    /// `n × width` inputs, row-major.
    pub inputs: Vec<f32>,
    /// `n` label ids.
    pub targets: Vec<i32>,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Input `i`.
    pub fn input(&self, i: usize) -> &[f32] {
        &self.inputs[i * self.width..(i + 1) * self.width]
    }
}

/// Loads a dataset file (`general.type = "dataset"`).
///
/// # Errors
/// A bad input naming `name` for anything but a well-formed dataset.
pub fn load_dataset(name: &str, bytes: &[u8]) -> Result<Dataset> {
    let g = parse_gguf(name, bytes)?;
    if Kind::of(&g) != Kind::Dataset {
        return Err(bad(
            name,
            format!("is {}, not a dataset", Kind::of(&g).noun()),
        ));
    }
    let inputs = g
        .find_tensor("inputs")
        .ok_or_else(|| bad(name, "dataset has no `inputs` tensor"))?;
    let targets = g
        .find_tensor("labels")
        .ok_or_else(|| bad(name, "dataset has no `labels` tensor"))?;
    let shape = inputs.shape();
    if shape.len() != 2 || targets.shape() != [shape[0]] {
        return Err(bad(
            name,
            "dataset `inputs` is not (N, d) or `labels` is not (N)",
        ));
    }
    let (n, width) = (shape[0] as usize, shape[1] as usize);
    let mut x = crate::limits::zeroed::<f32>(
        n.saturating_mul(width),
        &format!("{name}: the dataset inputs"),
    )?;
    inputs
        .decode_f32(0, &mut x)
        .map_err(|e| core_bad(name, e, Some(&g)))?;
    let mut y = crate::limits::zeroed::<i32>(n, &format!("{name}: the dataset labels"))?;
    targets
        .decode_i32(0, &mut y)
        .map_err(|e| core_bad(name, e, Some(&g)))?;
    let labels = g
        .get_strings("dataset.labels")
        .map(|l| l.iter().map(|(_, s)| s.to_string()).collect())
        .unwrap_or_default();
    Ok(Dataset {
        task: g.get_str("dataset.task_name").unwrap_or("?").to_string(),
        labels,
        width,
        inputs: x,
        targets: y,
    })
}

/// The first 12 hex digits of a model id, for messages.
pub fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// True when `file` is a GGUF base of a causal (generative) architecture; anything else,
/// unreadable files included, is left to the ordinary loaders, which report it.
pub fn is_causal(file: &Mapped) -> bool {
    Gguf::parse(file.bytes())
        .ok()
        .and_then(|g| {
            g.get_str(gguf::KEY_ARCHITECTURE)
                .ok()
                .and_then(riffle_core::runtime::Architecture::from_name)
        })
        .is_some_and(|a| a.is_causal())
}
