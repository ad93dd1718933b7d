//! The boot self-check sequence, shared verbatim by the firmware and its build script.
//!
//! `build.rs` includes this very file (`#[path = "src/selfcheck.rs"]`) and runs it with
//! the **host** build of riffle-core to produce the expected predictions; the firmware
//! runs it on the target and compares prediction by prediction. Because the merged
//! weights drift by rounding with every in-place swap, both sides must perform exactly
//! the same sequence of activations, which is why the sequence lives here, once.
//!
//! Only `core` and `riffle_core` are used, so it compiles for the host and every target.

use riffle_core::gguf::{Gguf, TensorInfo};
use riffle_core::runtime::{AdapterHandle, Input, Session};
use riffle_core::{Error, Result};

/// Tasks of the digits held-out sets, in the order of the `heldout-*.gguf` files.
pub const TASKS: [&str; 5] = ["digits", "rotated", "inverted", "noisy", "parity"];
/// Task index of the parity task (the base's digit is scored mod 2 there).
pub const PARITY: usize = 4;
/// Input length of the digits models (8x8 pixels).
pub const INPUT_LEN: usize = 64;
/// Most logits any digits head produces.
pub const MAX_OUT: usize = 16;

/// How a step runs its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The bare base, weights read in place from flash.
    Base,
    /// Base + adapter, unmerged (rotations applied to activations, weights in flash).
    Unmerged,
    /// Merged weights in RAM; the adapter (or none) was swapped in place.
    Merged,
}

impl Mode {
    /// Short name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Base => "base",
            Mode::Unmerged => "unmerged",
            Mode::Merged => "merged",
        }
    }
}

/// One step: activate something, then run the first `n` examples of one held-out set.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// How it runs.
    pub mode: Mode,
    /// Index into [`TASKS`] of the held-out set.
    pub task: usize,
    /// Whether the task's adapter is active (false = the bare base).
    pub adapted: bool,
}

const fn step(mode: Mode, task: usize, adapted: bool) -> Step {
    Step {
        mode,
        task,
        adapted,
    }
}

/// The fixed sequence. Unmerged: for each task, the base then its adapter (an O(1)
/// switch each time). Merged: the base weights are copied to RAM once, then each
/// adapter is swapped in place from the previous one (digits -> rotated -> inverted ->
/// noisy -> parity), and finally back to the bare base, which checks that the chain of
/// swaps returns to the base predictions.
pub const STEPS: [Step; 15] = [
    step(Mode::Base, 0, false),
    step(Mode::Base, 1, false),
    step(Mode::Unmerged, 1, true),
    step(Mode::Base, 2, false),
    step(Mode::Unmerged, 2, true),
    step(Mode::Base, 3, false),
    step(Mode::Unmerged, 3, true),
    step(Mode::Base, 4, false),
    step(Mode::Unmerged, 4, true),
    step(Mode::Merged, 0, false),
    step(Mode::Merged, 1, true),
    step(Mode::Merged, 2, true),
    step(Mode::Merged, 3, true),
    step(Mode::Merged, 4, true),
    step(Mode::Merged, 0, false),
];

/// A held-out set (`general.type = dataset`) read in place from its GGUF bytes.
#[derive(Debug, Clone, Copy)]
pub struct Heldout<'a> {
    inputs: TensorInfo<'a>,
    labels: TensorInfo<'a>,
    /// Number of examples.
    pub len: usize,
}

impl<'a> Heldout<'a> {
    /// Parses a dataset file: tensors `inputs` F32 (N, 64) and `labels` I32 (N).
    ///
    /// # Errors
    /// Container errors, [`Error::MissingTensor`], [`Error::ShapeMismatch`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let g = Gguf::parse(bytes)?;
        let inputs = g.require_tensor("inputs")?;
        let labels = g.require_tensor("labels")?;
        let s = inputs.shape();
        if s.len() != 2 || s[1] as usize != INPUT_LEN || labels.shape() != [s[0]] {
            return Err(Error::ShapeMismatch {
                tensor: inputs.index(),
            });
        }
        Ok(Heldout {
            inputs,
            labels,
            len: s[0] as usize,
        })
    }

    /// Example `i`'s input.
    ///
    /// # Errors
    /// [`Error::TensorOutOfRange`] past the end.
    pub fn input(&self, i: usize, out: &mut [f32; INPUT_LEN]) -> Result<()> {
        self.inputs.decode_f32(i * INPUT_LEN, out)
    }

    /// Example `i`'s label (-1 past the end).
    pub fn label(&self, i: usize) -> i32 {
        self.labels.get_i32(i).unwrap_or(-1)
    }
}

/// Index of the largest logit (first one on ties), as both sides compute it.
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// What the self-check needs from its runner: a cost counter and a sink for predictions.
pub trait Probe {
    /// A monotonic counter (the firmware: emulated instructions; the host: 0).
    fn now(&mut self) -> u64;
    /// Prediction `pred` of example `index` in step `step` (index into [`STEPS`]).
    fn predicted(&mut self, step: usize, index: usize, pred: usize);
}

/// Counts of one step.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepReport {
    /// False when the step was skipped (no adapter for the task).
    pub ran: bool,
    /// Examples run.
    pub n: usize,
    /// Correct predictions (parity scored on the base's digit mod 2).
    pub correct: usize,
    /// Counter ticks spent in `Session::run`, summed over the step.
    pub run_cost: u64,
    /// Counter ticks of the activation (switch or in-place swap) before the step.
    pub switch_cost: u64,
}

/// The whole self-check's counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Report {
    /// One per entry of [`STEPS`].
    pub steps: [StepReport; STEPS.len()],
    /// Counter ticks of `enable_merged` (decode the base into RAM).
    pub enable_merged_cost: u64,
}

/// Runs [`STEPS`] on the first `n` examples of each set (all of them if fewer).
///
/// `adapters[t]` is the handle of task `t`'s adapter in `session` (`None`: steps that
/// need it are skipped). The session must be unmerged and is left unmerged with the bare
/// base active; `merged` is handed back.
///
/// # Errors
/// Any runtime error (the firmware treats it as a failed self-check).
#[allow(clippy::too_many_arguments)]
pub fn run<'w, P: Probe, const R: usize>(
    session: &mut Session<'_, '_, 'w, R>,
    adapters: &[Option<AdapterHandle>; TASKS.len()],
    sets: &[Heldout<'_>; TASKS.len()],
    n: usize,
    merged: &'w mut [f32],
    arena: &mut [f32],
    scratch: &mut [f32],
    probe: &mut P,
) -> Result<(Report, &'w mut [f32])> {
    let mut report = Report::default();
    let mut merged = Some(merged);
    let mut x = [0.0f32; INPUT_LEN];
    let mut out = [0.0f32; MAX_OUT];
    for (si, st) in STEPS.iter().enumerate() {
        let handle = if st.adapted {
            match adapters[st.task] {
                Some(h) => Some(h),
                None => continue,
            }
        } else {
            None
        };
        if st.mode == Mode::Merged && !session.is_merged() {
            session.activate(None, scratch)?;
            let w = merged
                .take()
                .ok_or(Error::BufferTooSmall { needed: 1, got: 0 })?;
            let t0 = probe.now();
            session.enable_merged(w, scratch)?;
            report.enable_merged_cost = probe.now() - t0;
        }
        let t0 = probe.now();
        session.activate(handle, scratch)?;
        let switch_cost = probe.now() - t0;
        let set = &sets[st.task];
        let count = n.min(set.len);
        let mut r = StepReport {
            ran: true,
            n: count,
            switch_cost,
            ..StepReport::default()
        };
        for i in 0..count {
            set.input(i, &mut x)?;
            let t0 = probe.now();
            let k = session.run(Input::Vector(&x), &mut out, arena)?;
            r.run_cost += probe.now() - t0;
            let pred = argmax(&out[..k]);
            let scored = if st.task == PARITY && !st.adapted {
                pred % 2
            } else {
                pred
            };
            r.correct += usize::from(scored as i32 == set.label(i));
            probe.predicted(si, i, pred);
        }
        report.steps[si] = r;
    }
    session.activate(None, scratch)?;
    if let Some(w) = session.disable_merged() {
        merged = Some(w);
    }
    let w = merged.ok_or(Error::BufferTooSmall { needed: 1, got: 0 })?;
    Ok((report, w))
}
