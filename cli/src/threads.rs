//! The process's thread pool (`--threads N`, default: every available core), made once
//! and shared by every command: riffle-core splits each dense product across it; and the
//! kernel family it runs (`RIFFLE_KERNELS`).

use std::sync::OnceLock;

use riffle_core::runtime::{DecodeStep, DecoderState, Model, Prepared};
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

/// Caps riffle-core's SIMD kernels at the family named by the environment variable
/// `RIFFLE_KERNELS` (`avx512`, the default: whatever the CPU runs; `avx2`: what an x86-64
/// CPU without AVX-512 runs; `neon`, the same level on AArch64: NEON without the dot
/// product, what a Cortex-A53 or A72 runs; `portable`: no SIMD kernels), so that one
/// machine can measure and test the code other CPUs run. Call once, before any model
/// loads.
///
/// # Errors
/// A bad input for any other value.
pub fn configure_kernels() -> Result<()> {
    use riffle_core::math::{limit_kernels, KernelFamily};
    let Some(v) = std::env::var_os("RIFFLE_KERNELS") else {
        return Ok(());
    };
    let family = match v.to_str() {
        Some("avx512") => KernelFamily::Avx512,
        Some("avx2" | "neon") => KernelFamily::Avx2,
        Some("portable") => KernelFamily::Portable,
        _ => {
            return Err(bad(
                "RIFFLE_KERNELS",
                format!(
                    "{:?} is not a kernel family (avx512, avx2, neon or portable)",
                    v.to_string_lossy()
                ),
            ))
        }
    };
    limit_kernels(family);
    Ok(())
}

/// The pool, when more than one thread was asked for.
pub fn executor() -> Option<&'static Pool> {
    POOL.get().and_then(|p| p.as_ref())
}

/// `model.step` on the process's pool when there is one ([`executor`]), else on the
/// calling thread.
///
/// # Errors
/// As `Model::step`.
pub fn step<'a>(
    model: &Model<'a>,
    adapter: Option<&Prepared<'a, '_>>,
    state: &mut DecoderState<'_>,
    tokens: &[u32],
    logits: &mut [f32],
    arena: &mut [f32],
) -> std::result::Result<usize, riffle_core::Error> {
    match executor() {
        Some(p) => model.step_on(p, adapter, state, tokens, logits, arena),
        None => model.step(adapter, state, tokens, logits, arena),
    }
}

/// `model.decode_steps` on the process's pool when there is one, else on the calling
/// thread.
///
/// # Errors
/// As `Model::decode_steps`.
pub fn decode_steps<'a>(
    model: &Model<'a>,
    steps: &mut [DecodeStep<'_, '_, 'a, '_>],
    logits: &mut [f32],
    arena: &mut [f32],
) -> std::result::Result<(), riffle_core::Error> {
    match executor() {
        Some(p) => model.decode_steps_on(p, steps, logits, arena),
        None => model.decode_steps(steps, logits, arena),
    }
}
