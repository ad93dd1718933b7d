//! The adapters a command keeps resident over one base, loaded one way for every command
//! (`run`, `repl`, `merge`, `bench`, `demo` through `engine`; `generate`, `chat` through
//! `llm`; `bench` on a causal model): each checked against the base and against the others,
//! with the workspace its Cayley blocks are prepared into, then prepared into one session.

use riffle_core::runtime::{Adapter, Model, Session, MAX_RESIDENT};

use crate::fail::{bad, core_bad, Result};
use crate::files::load_adapter;
use crate::limits::zeroed;

/// Adapters checked against one base, in command-line order, with their workspaces.
pub struct Residents<'f> {
    /// File names and adapters.
    pub adapters: Vec<(String, Adapter<'f>)>,
    workspaces: Vec<Vec<f32>>,
}

impl<'f> Residents<'f> {
    /// Loads `files` (name, bytes) as adapters of `model` (the file `model_name`).
    ///
    /// # Errors
    /// A bad input naming the file at fault: more than [`MAX_RESIDENT`] adapters, see
    /// [`load_adapter`], a task named `reserved` (the name a command's own syntax gives
    /// the bare base), two adapters with one task, a workspace past the buffer limit.
    pub fn load(
        model: &Model<'f>,
        model_name: &str,
        files: &[(&str, &'f [u8])],
        reserved: Option<&str>,
    ) -> Result<Self> {
        if files.len() > MAX_RESIDENT {
            return Err(bad(
                "--adapter",
                format!("at most {MAX_RESIDENT} adapters can be resident at once"),
            ));
        }
        let mut adapters: Vec<(String, Adapter<'f>)> = Vec::new();
        let mut workspaces = Vec::new();
        for (name, bytes) in files {
            let (a, ws) = load_adapter(name, bytes, model, model_name)?;
            if reserved == Some(a.task_name()) {
                return Err(bad(
                    name,
                    format!(
                        "task name `{}` is reserved for the bare base model (`--task {0}`, `:use {0}`); rename the adapter's task",
                        a.task_name()
                    ),
                ));
            }
            if let Some((other, _)) = adapters
                .iter()
                .find(|(_, b)| b.task_name() == a.task_name())
            {
                return Err(bad(
                    name,
                    format!("task `{}` is already given by {other}", a.task_name()),
                ));
            }
            adapters.push((name.to_string(), a));
            workspaces.push(zeroed::<f32>(
                ws,
                &format!("{name}: the adapter's workspace"),
            )?);
        }
        Ok(Residents {
            adapters,
            workspaces,
        })
    }

    /// A session on `model` (on the process's thread pool, if any) with every adapter
    /// prepared into its workspace and resident, in order, the bare base active.
    ///
    /// # Errors
    /// A bad input naming the adapter that fails to prepare or to become resident.
    pub fn session<'s>(&'s mut self, model: &'s Model<'f>) -> Result<Session<'s, 'f, 's>> {
        let mut session = Session::new(model);
        if let Some(pool) = crate::threads::executor() {
            session.set_executor(pool);
        }
        for ((name, a), ws) in self.adapters.iter().zip(self.workspaces.iter_mut()) {
            let p = a
                .prepare(model, ws)
                .map_err(|e| core_bad(name, e, Some(a.gguf())))?;
            session
                .add_adapter(p)
                .map_err(|e| core_bad(name, e, Some(a.gguf())))?;
        }
        Ok(session)
    }
}
