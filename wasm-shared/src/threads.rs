//! The Web Worker pool of the threaded builds (`+atomics`, shared memory): riffle-core's
//! parallel steps run on the worker that owns the model plus `threads - 1` pool workers,
//! all on the same wasm memory, through [`riffle_host::threads::Pool`] (the executor the
//! CLI uses; rayon underneath). Results are bit-identical to one thread's (the core's
//! splits compute every output value the same way whatever the thread count).
//!
//! The JavaScript side (`www/threads.js`):
//! 1. the model's worker calls [`start_threads`] (`startThreads(n)`), which builds the
//!    pool and keeps its `n - 1` thread bodies waiting here;
//! 2. it starts `n - 1` Workers, each instantiating the same module on the same memory
//!    ([`thread_module`], [`thread_memory`]) and calling [`run_thread`], which takes one
//!    body and runs it for the life of the page;
//! 3. models created afterwards split their steps across the pool ([`pool`]).
//!
//! Blocking waits (`Atomics.wait`) are allowed in Workers only, which is where every
//! piece of this runs; the page's main thread never calls into a threaded module.

use std::sync::{Mutex, OnceLock};

use riffle_host::threads::Pool;
use wasm_bindgen::prelude::*;

/// Thread bodies built by rayon, waiting for a pool worker to run them.
static WAITING: Mutex<Vec<rayon::ThreadBuilder>> = Mutex::new(Vec::new());
static POOL: OnceLock<Pool> = OnceLock::new();

/// The pool, once [`start_threads`] has built it.
pub fn pool() -> Option<&'static Pool> {
    POOL.get()
}

/// Threads a model created now runs its steps on (1 without a pool).
pub fn count() -> usize {
    use riffle_core::par::Executor;
    pool().map_or(1, |p| p.threads())
}

/// Builds the pool: `threads` threads in all (the caller and `threads - 1` workers,
/// which JavaScript starts next and which each call [`run_thread`]). Once per module
/// instance; models created afterwards use it.
///
/// # Errors
/// A second call, fewer than 2 threads, or rayon's refusal, as an `Error`.
#[wasm_bindgen(js_name = startThreads)]
pub fn start_threads(threads: usize) -> Result<(), JsError> {
    if threads < 2 {
        return Err(JsError::new("threads: a pool needs at least 2 threads"));
    }
    if POOL.get().is_some() {
        return Err(JsError::new("threads: the pool is already started"));
    }
    let rayon = rayon::ThreadPoolBuilder::new()
        .num_threads(threads - 1)
        .spawn_handler(|body| {
            WAITING
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .push(body);
            Ok(())
        })
        .build()
        .map_err(|e| JsError::new(&format!("threads: {e}")))?;
    POOL.set(Pool::from_rayon(rayon))
        .map_err(|_| JsError::new("threads: the pool is already started"))
}

/// Runs one waiting thread body of the pool on the calling Worker, for the life of the
/// pool (it never returns while the page lives). Called by each pool Worker once.
///
/// # Errors
/// No body waiting (more workers than the pool asked for).
#[wasm_bindgen(js_name = runThread)]
pub fn run_thread() -> Result<(), JsError> {
    let body = WAITING.lock().ok().and_then(|mut w| w.pop());
    let body = body.ok_or_else(|| JsError::new("threads: no thread is waiting for a worker"))?;
    body.run();
    Ok(())
}

/// The compiled module, for the pool Workers to instantiate.
#[wasm_bindgen(js_name = threadModule)]
pub fn thread_module() -> JsValue {
    wasm_bindgen::module()
}

/// The shared memory, for the pool Workers to instantiate the module on.
#[wasm_bindgen(js_name = threadMemory)]
pub fn thread_memory() -> JsValue {
    wasm_bindgen::memory()
}

/// Threads the module's models run on: 1 before [`start_threads`], its count after.
#[wasm_bindgen(js_name = threadCount)]
pub fn thread_count() -> usize {
    count()
}
