//! A session: one base model, several resident adapters, one active, merged or not.
//!
//! This is the state a front end keeps (the CLI's repl, the browser worker, the
//! firmware's command line), as llama.cpp keeps its active adapter list. Switching the
//! active adapter is O(1) unmerged, and an exact in-place swap of the merged weights in
//! merged mode; every check happens before the first weight is written, so a failed
//! switch leaves the previous adapter active and the outputs unchanged.

use heapless::Vec;

use super::adapter::Prepared;
use super::linear::{Exec, ONE_THREAD};
use super::model::{Input, Model};
#[cfg(feature = "llama")]
use super::state::{DecoderState, Logits};
use crate::math::{swap, swap_scratch_len, LayerTransform, WeightsMut};
use crate::{Error, Result};

/// Most adapters resident in one session made by [`Session::new`] (the default of its
/// `R` parameter; [`Session::with_capacity`] picks another).
pub const MAX_RESIDENT: usize = 8;

/// Handle of a resident adapter.
pub type AdapterHandle = usize;

/// Merged-mode state: the writable `f32` weights of every slot.
#[derive(Debug)]
struct Merged<'w> {
    weights: &'w mut [f32],
}

/// One base model with at most `R` resident adapters (a fixed-capacity table inside the
/// session: a firmware sizes it to what it holds).
#[derive(Debug)]
pub struct Session<'m, 'a, 'w, const R: usize = MAX_RESIDENT> {
    model: &'m Model<'a>,
    exec: Exec<'m>,
    adapters: Vec<Prepared<'a, 'w>, R>,
    active: Option<AdapterHandle>,
    merged: Option<Merged<'w>>,
}

impl<'m, 'a, 'w> Session<'m, 'a, 'w> {
    /// A session on `model` with no adapter, unmerged, room for [`MAX_RESIDENT`].
    pub fn new(model: &'m Model<'a>) -> Self {
        Self::with_capacity(model)
    }
}

impl<'m, 'a, 'w, const R: usize> Session<'m, 'a, 'w, R> {
    /// A session on `model` with no adapter, unmerged, room for `R` resident adapters
    /// (`Session::<4>::with_capacity(&model)`).
    pub fn with_capacity(model: &'m Model<'a>) -> Self {
        Session {
            model,
            exec: ONE_THREAD,
            adapters: Vec::new(),
            active: None,
            merged: None,
        }
    }

    /// The base model.
    pub fn model(&self) -> &'m Model<'a> {
        self.model
    }

    /// Splits the dense products of [`Session::run`] and [`Session::step`] across
    /// `exec`'s threads from now on (results are identical to one thread's).
    #[cfg(feature = "parallel")]
    pub fn set_executor(&mut self, exec: &'m dyn crate::par::Executor) {
        self.exec = Some(exec);
    }

    /// Makes a prepared adapter resident and returns its handle.
    ///
    /// # Errors
    /// [`Error::BaseMismatch`] if it was prepared for another base;
    /// [`Error::CapacityExceeded`] past `R` adapters ([`MAX_RESIDENT`] by default).
    pub fn add_adapter(&mut self, adapter: Prepared<'a, 'w>) -> Result<AdapterHandle> {
        if adapter.model_id() != self.model.model_id() {
            return Err(Error::BaseMismatch);
        }
        self.adapters
            .push(adapter)
            .map_err(|_| Error::CapacityExceeded)?;
        Ok(self.adapters.len() - 1)
    }

    /// Removes a resident adapter and returns it (with its workspace borrow), so its memory
    /// can take another upload. If it is active, the session first returns to the bare base
    /// (in merged mode by an in-place swap). Handles after it shift down by one.
    ///
    /// # Errors
    /// [`Error::UnknownTask`] for a handle that is not resident; as [`Session::activate`]
    /// when it is active in merged mode. On error nothing changes.
    pub fn remove_adapter(
        &mut self,
        handle: AdapterHandle,
        scratch: &mut [f32],
    ) -> Result<Prepared<'a, 'w>> {
        if handle >= self.adapters.len() {
            return Err(Error::UnknownTask);
        }
        if self.active == Some(handle) {
            self.activate(None, scratch)?;
        }
        self.active = match self.active {
            Some(a) if a > handle => Some(a - 1),
            other => other,
        };
        Ok(self.adapters.remove(handle))
    }

    /// The resident adapters, indexed by handle.
    pub fn adapters(&self) -> &[Prepared<'a, 'w>] {
        &self.adapters
    }

    /// Handle of the resident adapter whose task is `task`.
    pub fn find(&self, task: &str) -> Option<AdapterHandle> {
        self.adapters.iter().position(|a| a.task_name() == task)
    }

    /// The active adapter's handle (`None` = bare base).
    pub fn active(&self) -> Option<AdapterHandle> {
        self.active
    }

    /// The active adapter.
    pub fn active_adapter(&self) -> Option<&Prepared<'a, 'w>> {
        self.active.and_then(|h| self.adapters.get(h))
    }

    /// True in merged mode.
    pub fn is_merged(&self) -> bool {
        self.merged.is_some()
    }

    /// Scratch `f32`s with which merged-mode switches take the batched path on every slot
    /// (much faster on large layers; see [`crate::math::swap_fast_scratch_len`]).
    pub fn swap_fast_scratch_len(&self) -> usize {
        self.model
            .slots()
            .iter()
            .map(|s| crate::math::swap_fast_scratch_len(s.rows, s.cols))
            .max()
            .unwrap_or(0)
    }

    /// Scratch `f32`s that merged-mode switches need at least.
    pub fn swap_scratch_len(&self) -> usize {
        swap_len(self.model)
    }

    /// Activates adapter `handle` (or the bare base with `None`). Unmerged this is O(1);
    /// merged, the weights are swapped in place from the previous adapter to the new one.
    ///
    /// # Errors
    /// [`Error::UnknownTask`] for a handle that is not resident; [`Error::BufferTooSmall`]
    /// for a short `scratch` in merged mode. On error nothing changes.
    pub fn activate(&mut self, handle: Option<AdapterHandle>, scratch: &mut [f32]) -> Result<()> {
        if let Some(h) = handle {
            if h >= self.adapters.len() {
                return Err(Error::UnknownTask);
            }
        }
        if let Some(m) = self.merged.as_mut() {
            check_swap_scratch(self.model, scratch)?;
            let from = self.active.and_then(|h| self.adapters.get(h));
            let to = handle.and_then(|h| self.adapters.get(h));
            switch_merged(self.model, m.weights, from, to, scratch)?;
        }
        self.active = handle;
        Ok(())
    }

    /// Enters merged mode with `weights` (length [`Model::merged_len`]): the base weights
    /// are decoded into it and the active adapter merged in.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] for a wrong buffer; [`Error::BufferTooSmall`] for a
    /// short `scratch`. On error the session stays unmerged.
    pub fn enable_merged(&mut self, weights: &'w mut [f32], scratch: &mut [f32]) -> Result<()> {
        check_swap_scratch(self.model, scratch)?;
        self.model.decode_weights_into(weights)?;
        let to = self.active.and_then(|h| self.adapters.get(h));
        switch_merged(self.model, weights, None, to, scratch)?;
        self.merged = Some(Merged { weights });
        Ok(())
    }

    /// Leaves merged mode and hands the weight buffer back.
    pub fn disable_merged(&mut self) -> Option<&'w mut [f32]> {
        self.merged.take().map(|m| m.weights)
    }

    /// Re-merges the active adapter from the base weights, discarding the rounding drift
    /// that many in-place swaps accumulate (gs-math.md section 7). No-op unmerged.
    ///
    /// # Errors
    /// As [`Session::enable_merged`].
    pub fn remerge(&mut self, scratch: &mut [f32]) -> Result<()> {
        if let Some(w) = self.disable_merged() {
            self.enable_merged(w, scratch)?;
        }
        Ok(())
    }

    /// The merged weights (merged mode only).
    pub fn merged_weights(&self) -> Option<&[f32]> {
        self.merged.as_ref().map(|m| &*m.weights)
    }

    /// Runs one input with the active adapter, merged or not; see [`Model::run`].
    ///
    /// # Errors
    /// As [`Model::run`].
    pub fn run(&self, input: Input<'_>, output: &mut [f32], arena: &mut [f32]) -> Result<usize> {
        let merged = self.merged.as_ref().map(|m| &*m.weights);
        self.model.run_in(
            self.exec,
            self.active_adapter(),
            merged,
            input,
            output,
            arena,
        )
    }

    /// Reads `tokens` into `state` with the active adapter, merged or not, and writes the
    /// next token's logits; see [`Model::step`]. After [`Session::activate`] a state
    /// filled under the previous adapter is [`crate::Error::StaleState`]: reset it and
    /// re-read the prompt.
    ///
    /// # Errors
    /// As [`Model::step`].
    #[cfg(feature = "llama")]
    pub fn step(
        &self,
        state: &mut DecoderState<'_>,
        tokens: &[u32],
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize> {
        self.step_rows(state, tokens, Logits::Last, output, arena)
    }

    /// [`Session::step`] writing the logits after every token read (`tokens.len()` rows;
    /// see [`Model::step_all`]).
    ///
    /// # Errors
    /// As [`Model::step_all`].
    #[cfg(feature = "llama")]
    pub fn step_all(
        &self,
        state: &mut DecoderState<'_>,
        tokens: &[u32],
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize> {
        self.step_rows(state, tokens, Logits::Every, output, arena)
    }

    /// A step with the active adapter, merged or not, writing the logits `rows` names.
    #[cfg(feature = "llama")]
    fn step_rows(
        &self,
        state: &mut DecoderState<'_>,
        tokens: &[u32],
        rows: Logits,
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize> {
        let merged = self.merged.as_ref().map(|m| &*m.weights);
        let adapter = self.active_adapter();
        self.model.step_in(
            self.exec, adapter, merged, state, tokens, rows, output, arena,
        )
    }

    /// Arena length (`f32`s) that [`Session::run`] needs for inputs of at most
    /// `max_tokens` tokens with any resident adapter active.
    pub fn arena_len(&self, max_tokens: usize) -> usize {
        let rows = self
            .adapters
            .iter()
            .map(|a| a.head_rows())
            .max()
            .unwrap_or(0);
        self.model.arena_len(max_tokens, rows)
    }
}

/// [`Error::BufferTooSmall`] unless `scratch` holds at least [`swap_len`] values.
fn check_swap_scratch(model: &Model<'_>, scratch: &[f32]) -> Result<()> {
    let need = swap_len(model);
    if scratch.len() < need {
        return Err(Error::BufferTooSmall {
            needed: need,
            got: scratch.len(),
        });
    }
    Ok(())
}

/// Least scratch for an in-place swap of any slot of `model`.
fn swap_len(model: &Model<'_>) -> usize {
    model
        .slots()
        .iter()
        .map(|s| swap_scratch_len(s.rows, s.cols))
        .max()
        .unwrap_or(0)
}

/// Swaps every slot touched by `from` or `to` in place. Prepared adapters were fully
/// validated and the scratch was checked, so no slot can fail after the first is written.
fn switch_merged(
    model: &Model<'_>,
    weights: &mut [f32],
    from: Option<&Prepared<'_, '_>>,
    to: Option<&Prepared<'_, '_>>,
    scratch: &mut [f32],
) -> Result<()> {
    for (i, s) in model.slots().iter().enumerate() {
        let touched =
            |p: Option<&Prepared<'_, '_>>| p.is_some_and(|p| p.touched_slots().any(|t| t == i));
        if !touched(from) && !touched(to) {
            continue;
        }
        let tf = from.map_or(LayerTransform::IDENTITY, |p| p.transform(i));
        let tt = to.map_or(LayerTransform::IDENTITY, |p| p.transform(i));
        let off = model.merged_offset(i);
        let w = weights
            .get_mut(off..off + s.rows * s.cols)
            .ok_or(Error::LengthMismatch {
                expected: off + s.rows * s.cols,
                found: 0,
            })?;
        swap(WeightsMut::F32(w), s.rows, s.cols, &tf, &tt, scratch)?;
    }
    Ok(())
}
