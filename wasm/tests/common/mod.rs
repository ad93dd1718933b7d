//! The native expectations `build.rs` computed with `riffle-core` for the host.

/// One configuration: a digits base, optionally an adapter, unmerged or merged, and its
/// native outputs on the first held-out inputs of the adapter's task.
#[allow(dead_code)]
pub struct Case {
    /// `mlp` or `cnn` (file `models/digits/<base>.gguf`).
    pub base: &'static str,
    /// The adapter file stem (`mlp-rotated`), or `None` for the bare base.
    pub adapter: Option<&'static str>,
    /// Merged weights or the adapter applied on the fly.
    pub merged: bool,
    /// Inputs (pixel/16, 64 values each).
    pub inputs: &'static [&'static [f32]],
    /// Native outputs (logits), one row per input.
    pub outputs: &'static [&'static [f32]],
}

include!(concat!(env!("OUT_DIR"), "/native_expectations.rs"));
