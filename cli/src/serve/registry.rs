//! The resident adapters of a server: each one owns its file bytes, its workspace and the
//! prepared adapter that borrows both (one self-referential owner per adapter, freed when
//! the last request holding it ends), so adapters load and unload while requests run.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ouroboros::self_referencing;
use riffle_core::runtime::{Model, Prepared};

use crate::fail::{bad, core_bad, Fail};
use crate::files::load_adapter;

/// An adapter's bytes and workspace with the prepared adapter that borrows them.
#[self_referencing]
struct Owned {
    bytes: Vec<u8>,
    workspace: Vec<f32>,
    #[borrows(bytes, mut workspace)]
    #[covariant]
    prepared: Prepared<'this, 'this>,
}

/// One resident adapter.
pub struct Entry {
    /// Its task name (the `model` of requests).
    pub task: String,
    /// The file it came from, as given.
    pub file: String,
    /// Bytes it holds: file and workspace.
    pub bytes: usize,
    owned: Owned,
}

impl Entry {
    /// Reads and prepares the adapter in `bytes` (from `file`) for `model`.
    ///
    /// # Errors
    /// A bad input naming `file` for anything the CLI's `--adapter` refuses.
    pub fn load(
        file: &str,
        bytes: Vec<u8>,
        model: &'static Model<'static>,
        model_name: &str,
    ) -> Result<Self, Fail> {
        let ws_len = {
            let (_, ws) = load_adapter(file, &bytes, model, model_name)?;
            ws
        };
        let size = bytes.len() + 4 * ws_len;
        let owned = OwnedTryBuilder {
            bytes,
            workspace: vec![0.0f32; ws_len],
            prepared_builder: |bytes: &Vec<u8>, ws: &mut Vec<f32>| {
                let (a, _) = load_adapter(file, bytes, model, model_name)?;
                a.prepare(model, ws)
                    .map_err(|e| core_bad(file, e, Some(a.gguf())))
            },
        }
        .try_build()?;
        let task = owned.borrow_prepared().task_name().to_string();
        Ok(Entry {
            task,
            file: file.to_string(),
            bytes: size,
            owned,
        })
    }

    /// The prepared adapter.
    pub fn prepared(&self) -> &Prepared<'_, '_> {
        self.owned.borrow_prepared()
    }

    /// Runs `f` with the prepared adapter.
    pub fn with<R>(&self, f: impl FnOnce(&Prepared<'_, '_>) -> R) -> R {
        f(self.owned.borrow_prepared())
    }
}

/// Why an adapter could not be loaded at runtime.
#[derive(Debug)]
pub enum LoadError {
    /// Runtime loading is off (no `--adapter-dir`).
    Disabled,
    /// The path resolves outside `--adapter-dir` (it was not read).
    Outside,
    /// No such file under the directory.
    NotFound,
    /// Another resident adapter has the same task.
    Duplicate(String),
    /// As many adapters as `--max-adapters` are resident.
    Full(usize),
    /// The file is not an adapter for this base.
    Bad(String),
}

/// The resident adapters, by task.
pub struct Registry {
    entries: RwLock<Vec<Arc<Entry>>>,
    dir: Option<PathBuf>,
    max: usize,
}

impl Registry {
    /// An empty registry; runtime loads read only under `dir` (canonical).
    pub fn new(dir: Option<PathBuf>, max: usize) -> Self {
        Registry {
            entries: RwLock::new(Vec::new()),
            dir,
            max,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Entry>>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<Entry>>> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The resident adapters, in load order.
    pub fn list(&self) -> Vec<Arc<Entry>> {
        self.read().clone()
    }

    /// The adapter for `task`.
    pub fn get(&self, task: &str) -> Option<Arc<Entry>> {
        self.read().iter().find(|e| e.task == task).cloned()
    }

    /// Makes `entry` resident.
    ///
    /// # Errors
    /// [`LoadError::Duplicate`], [`LoadError::Full`].
    pub fn insert(&self, entry: Entry) -> Result<Arc<Entry>, LoadError> {
        let mut list = self.write();
        if let Some(other) = list.iter().find(|e| e.task == entry.task) {
            return Err(LoadError::Duplicate(format!(
                "task `{}` is already resident (from {})",
                entry.task, other.file
            )));
        }
        if list.len() >= self.max {
            return Err(LoadError::Full(self.max));
        }
        let e = Arc::new(entry);
        list.push(e.clone());
        Ok(e)
    }

    /// Removes the adapter of `task`: new requests no longer find it, and its memory is
    /// freed when the last running request that holds it ends. Returns it (to count those).
    pub fn remove(&self, task: &str) -> Option<Arc<Entry>> {
        let mut list = self.write();
        let i = list.iter().position(|e| e.task == task)?;
        Some(list.remove(i))
    }

    /// Resolves `path` (relative to the adapter directory, or absolute) to a file inside
    /// the directory, without reading it.
    ///
    /// # Errors
    /// [`LoadError::Disabled`], [`LoadError::NotFound`], [`LoadError::Outside`] (also for
    /// a symbolic link that leads out).
    pub fn resolve(&self, path: &str) -> Result<PathBuf, LoadError> {
        let dir = self.dir.as_ref().ok_or(LoadError::Disabled)?;
        if path.is_empty() || path.contains('\0') {
            return Err(LoadError::NotFound);
        }
        let joined = dir.join(Path::new(path));
        let real = match joined.canonicalize() {
            Ok(p) => p,
            // A path that does not exist: still refuse it as outside when its text leaves
            // the directory, so the answer does not probe the file system out there.
            Err(_) => {
                let leaves = Path::new(path).is_absolute() && !Path::new(path).starts_with(dir)
                    || Path::new(path)
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir));
                return Err(if leaves {
                    LoadError::Outside
                } else {
                    LoadError::NotFound
                });
            }
        };
        if !real.starts_with(dir) {
            return Err(LoadError::Outside);
        }
        if !real.is_file() {
            return Err(LoadError::NotFound);
        }
        Ok(real)
    }

    /// Reads, checks and prepares the adapter at `path` (see [`Registry::resolve`]) and
    /// makes it resident.
    ///
    /// # Errors
    /// Every [`LoadError`].
    pub fn load(
        &self,
        path: &str,
        model: &'static Model<'static>,
        model_name: &str,
    ) -> Result<Arc<Entry>, LoadError> {
        let real = self.resolve(path)?;
        let meta = std::fs::metadata(&real).map_err(|_| LoadError::NotFound)?;
        // Adapters are small: refuse anything past 1 GiB before reading it.
        if meta.len() > 1 << 30 {
            return Err(LoadError::Bad(format!(
                "{path}: file too large for an adapter"
            )));
        }
        let bytes = std::fs::read(&real).map_err(|_| LoadError::NotFound)?;
        let entry =
            Entry::load(path, bytes, model, model_name).map_err(|f| LoadError::Bad(f.message))?;
        self.insert(entry)
    }
}

/// Checks that an adapter fits `model` and names the file otherwise (used at start-up).
///
/// # Errors
/// A bad input naming `file`.
pub fn load_file(
    file: &Path,
    model: &'static Model<'static>,
    model_name: &str,
) -> Result<Entry, Fail> {
    let name = file.display().to_string();
    let bytes = std::fs::read(file).map_err(|e| bad(&name, crate::files::io_problem(&e)))?;
    Entry::load(&name, bytes, model, model_name)
}
