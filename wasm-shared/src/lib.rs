//! # riffle-wasm-shared
//!
//! What the browser's two modules share, so that each keeps only its own model kind:
//! `riffle-wasm` (digits, MiniLM: the small module) and `riffle-chat-wasm` (SmolLM2).
//!
//! - [`load`]: reading base models and adapters from bytes, worded like the CLI's errors,
//!   and making them resident in a session (the long-lived buffers leaked once, see there).
//! - [`now_ms`]: a monotonic clock in milliseconds, in a browser and on the host.
//! - [`js`]: small JavaScript helpers of the bindings.
//! - `threads` (feature `threads`, builds with `+atomics` only): the Web Worker pool that
//!   runs riffle-core's parallel steps when the page is cross-origin isolated.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod js;
pub mod load;
#[cfg(feature = "threads")]
pub mod threads;

#[cfg(target_arch = "wasm32")]
use wasm_bindgen::prelude::*;

#[cfg(target_arch = "wasm32")]
#[wasm_bindgen]
extern "C" {
    /// `performance.now()`, available in windows and workers alike.
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// Milliseconds from a monotonic clock: `performance.now()` in a browser (window or
/// worker), `Instant` on the host.
pub fn now_ms() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        performance_now()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        use std::time::Instant;
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_secs_f64() * 1e3
    }
}

/// Splits `session`'s steps across the Web Worker pool when the threaded build has
/// started one (module `threads`); returns the threads the session now runs on (1 otherwise).
pub fn use_threads(
    session: &mut riffle_core::runtime::Session<'static, 'static, 'static>,
) -> usize {
    #[cfg(feature = "threads")]
    if let Some(pool) = threads::pool() {
        session.set_executor(pool);
        return threads::count();
    }
    let _ = session;
    1
}
