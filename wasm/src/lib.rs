//! # riffle-wasm
//!
//! Browser bindings of `riffle-core` (wasm-bindgen): one frozen base model, adapters
//! swapped at run time, merged or not. A thin layer: the [`engine`] module keeps the
//! buffers and words the errors, the core does all the model work, and this file only
//! converts to and from JavaScript values.
//!
//! ```js
//! import init, { RiffleModel } from './pkg/riffle_wasm.js';
//! await init();
//! const model = new RiffleModel(new Uint8Array(await (await fetch('mlp.gguf')).arrayBuffer()), 'mlp.gguf');
//! const h = model.addAdapter(adapterBytes, 'mlp-rotated.gguf'); // throws Error on a bad file
//! model.useAdapter(h);          // or null for the bare base
//! model.setMerged(true);        // fold the adapter into the weights
//! const r = model.runVector(new Float32Array(64)); // {output, probabilities, label, index, task, latencyMs}
//! // text models (bert): model.runText('what a lovely day')
//! console.log(model.info());    // sizes, task names, labels, timings
//! ```
//!
//! `docs/wasm.md` describes the API, the build and the measured sizes.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod engine;

use engine::{Engine, Info, RunResult};
use js_sys::{Array, Float32Array, Object};
use wasm_bindgen::prelude::*;

use riffle_wasm_shared::js::{error as js_error, memory_bytes as wasm_memory_bytes, set, strings};
#[cfg(feature = "threads")]
pub use riffle_wasm_shared::threads::{
    run_thread, start_threads, thread_count, thread_memory, thread_module,
};

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** The result of one inference. */
export interface RunResult {
  /** Raw outputs (logits). */
  output: Float32Array;
  /** Softmax of the outputs. */
  probabilities: Float32Array;
  /** Index of the largest output. */
  index: number;
  /** Its label (the active adapter's head labels, else the base's). */
  label: string;
  /** Labels of the head that ran, by index. */
  labels: string[];
  /** The active task, "base" without adapter. */
  task: string;
  /** Time spent in the core, ms. */
  latencyMs: number;
  /** True when the weights were merged. */
  merged: boolean;
  /** Tokens fed to a text model ([CLS] and [SEP] included), 0 for vectors. */
  tokens: number;
}
/** One resident adapter. */
export interface AdapterInfo {
  handle: number; task: string; method: string; blockSize: number; factors: number;
  fileBytes: number; workspaceBytes: number; parameters: number; labels: string[];
  prepareMs: number;
}
/** Sizes, names and timings of a model and its adapters. */
export interface ModelInfo {
  architecture: string; modelId: string; modelBytes: number; inputLength: number; maxTokens: number;
  labels: string[]; adapters: AdapterInfo[]; active: number | null; merged: boolean;
  arenaBytes: number; mergedBytes: number; scratchBytes: number; wasmMemoryBytes: number;
  lastSwapMs: number; lastRunMs: number;
  /** Threads the model's steps run on (1: the one-thread module, or no pool started). */
  threads: number;
}
"#;

/// One base model with resident adapters (`riffle_core::runtime::Session`), owning every
/// buffer it needs.
#[wasm_bindgen]
pub struct RiffleModel {
    engine: Engine,
}

#[wasm_bindgen]
impl RiffleModel {
    /// Reads a base model from the bytes of its GGUF file (copied once into wasm memory).
    ///
    /// Throws an `Error` (`"NAME: problem"`, the CLI's wording; `name` is the file name,
    /// `model` when absent) for a file that is not a usable base model.
    #[wasm_bindgen(constructor)]
    pub fn new(bytes: Vec<u8>, name: Option<String>) -> Result<RiffleModel, JsError> {
        Engine::new(bytes, name.as_deref())
            .map(|engine| RiffleModel { engine })
            .map_err(js_error)
    }

    /// Checks an adapter file against this base (CRC, base id, tensor names and shapes,
    /// parameter values), precomputes its Cayley blocks and makes it resident; returns
    /// its handle. The active adapter does not change. `name` (a file name) only words
    /// the error: throws `Error("NAME: problem")` (`adapter: ...` without a name), and
    /// nothing changes.
    #[wasm_bindgen(js_name = addAdapter)]
    pub fn add_adapter(&mut self, bytes: Vec<u8>, name: Option<String>) -> Result<u32, JsError> {
        self.engine
            .add_adapter(bytes, name.as_deref())
            .map(|h| h as u32)
            .map_err(js_error)
    }

    /// Handle of the resident adapter whose task is `task`, or `undefined`.
    #[wasm_bindgen(js_name = findAdapter)]
    pub fn find_adapter(&self, task: &str) -> Option<u32> {
        self.engine.find(task).map(|h| h as u32)
    }

    /// Activates adapter `handle`, or the bare base with `null`. O(1) unmerged; an exact
    /// in-place swap of the merged weights in merged mode. Returns the switch time (ms).
    #[wasm_bindgen(js_name = useAdapter)]
    pub fn use_adapter(&mut self, handle: Option<u32>) -> Result<f64, JsError> {
        self.engine
            .use_adapter(handle.map(|h| h as usize))
            .map_err(js_error)
    }

    /// Enters (`true`) or leaves merged mode: the active adapter is folded into a copy of
    /// the base weights, and later switches swap it in place. Returns the time (ms).
    #[wasm_bindgen(js_name = setMerged)]
    pub fn set_merged(&mut self, merged: bool) -> Result<f64, JsError> {
        self.engine.set_merged(merged).map_err(js_error)
    }

    /// True in merged mode.
    #[wasm_bindgen(getter)]
    pub fn merged(&self) -> bool {
        self.engine.is_merged()
    }

    /// Runs one input vector (`inputLength` floats) with the active adapter.
    #[wasm_bindgen(js_name = runVector, unchecked_return_type = "RunResult")]
    pub fn run_vector(&mut self, input: &[f32]) -> Result<JsValue, JsError> {
        let merged = self.engine.is_merged();
        let labels = self.engine.labels();
        let r = self.engine.run_vector(input).map_err(js_error)?;
        Ok(run_result(&r, &labels, merged).into())
    }

    /// Tokenizes a sentence with the model's WordPiece tokenizer and runs it (text
    /// models); the result also has `tokens`. Without an adapter head the output is
    /// the mean-pooled sentence embedding and `label` is empty.
    #[wasm_bindgen(js_name = runText, unchecked_return_type = "RunResult")]
    pub fn run_text(&mut self, text: &str) -> Result<JsValue, JsError> {
        let merged = self.engine.is_merged();
        let labels = self.engine.labels();
        let r = self.engine.run_text(text).map_err(js_error)?;
        Ok(run_result(&r, &labels, merged).into())
    }

    /// True for text models (`runText`), false for vector models (`runVector`).
    #[wasm_bindgen(getter, js_name = takesText)]
    pub fn takes_text(&self) -> bool {
        self.engine.takes_text()
    }

    /// Sizes (model bytes, each adapter's bytes, arena bytes, wasm memory), task names,
    /// labels and the last swap and run times.
    #[wasm_bindgen(unchecked_return_type = "ModelInfo")]
    pub fn info(&self) -> JsValue {
        info_object(&self.engine.info()).into()
    }
}

fn run_result(r: &RunResult<'_>, labels: &[String], merged: bool) -> Object {
    let o = Object::new();
    set(&o, "output", Float32Array::from(r.output));
    set(
        &o,
        "probabilities",
        Float32Array::from(r.probabilities.as_slice()),
    );
    set(&o, "index", r.index as f64);
    set(&o, "label", r.label.as_str());
    set(&o, "labels", strings(labels));
    set(&o, "task", r.task.as_str());
    set(&o, "latencyMs", r.latency_ms);
    set(&o, "merged", merged);
    set(&o, "tokens", r.tokens as f64);
    o
}

fn info_object(i: &Info) -> Object {
    let o = Object::new();
    set(&o, "architecture", i.architecture);
    set(&o, "modelId", i.model_id.as_str());
    set(&o, "modelBytes", i.model_bytes as f64);
    set(&o, "inputLength", i.input_len as f64);
    set(&o, "maxTokens", i.max_tokens as f64);
    set(&o, "labels", strings(&i.labels));
    let adapters: Array = i
        .adapters
        .iter()
        .map(|a| {
            let ao = Object::new();
            set(&ao, "handle", a.handle as f64);
            set(&ao, "task", a.task.as_str());
            set(&ao, "method", a.method);
            set(&ao, "blockSize", a.block_size as f64);
            set(&ao, "factors", a.factors as f64);
            set(&ao, "fileBytes", a.file_bytes as f64);
            set(&ao, "workspaceBytes", a.workspace_bytes as f64);
            set(&ao, "parameters", a.parameters as f64);
            set(&ao, "labels", strings(&a.labels));
            set(&ao, "prepareMs", a.prepare_ms);
            JsValue::from(ao)
        })
        .collect();
    set(&o, "adapters", adapters);
    set(
        &o,
        "active",
        i.active.map_or(JsValue::NULL, |h| JsValue::from(h as f64)),
    );
    set(&o, "merged", i.merged);
    set(&o, "arenaBytes", i.arena_bytes as f64);
    set(&o, "mergedBytes", i.merged_bytes as f64);
    set(&o, "scratchBytes", i.scratch_bytes as f64);
    set(&o, "wasmMemoryBytes", wasm_memory_bytes());
    set(&o, "lastSwapMs", i.last_swap_ms);
    set(&o, "lastRunMs", i.last_run_ms);
    set(&o, "threads", i.threads as f64);
    o
}
