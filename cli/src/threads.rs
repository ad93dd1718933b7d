//! The process's thread pool (`--threads N`, default: every available core), made once
//! and shared by every command: riffle-core splits each dense product across it.

use std::sync::OnceLock;

use riffle_host::threads::{available, Pool};

use crate::fail::{bad, Result};

static POOL: OnceLock<Option<Pool>> = OnceLock::new();

/// Most threads `--threads` accepts.
pub const MAX_THREADS: usize = riffle_core::par::MAX_PARTS;

/// Sets the thread count for the process (`None`: the available cores). Call once,
/// before any model runs.
///
/// # Errors
/// A bad input for 0 or more than [`MAX_THREADS`] threads, or when threads cannot start.
pub fn configure(threads: Option<usize>) -> Result<()> {
    let n = threads.unwrap_or_else(available);
    if n == 0 || n > MAX_THREADS {
        return Err(bad(
            "--threads",
            format!("must be between 1 and {MAX_THREADS}"),
        ));
    }
    let pool = if n > 1 {
        Some(Pool::new(n).map_err(|e| bad("--threads", format!("cannot start {n} threads: {e}")))?)
    } else {
        None
    };
    let _ = POOL.set(pool);
    Ok(())
}

/// The pool, when more than one thread was asked for.
pub fn executor() -> Option<&'static Pool> {
    POOL.get().and_then(|p| p.as_ref())
}
