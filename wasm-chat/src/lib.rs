//! # riffle-chat-wasm
//!
//! The browser's second module: a causal model (SmolLM2 from llama.cpp's GGUF) with
//! per-task orthogonal adapters, for a Web Worker. The digits / MiniLM page keeps its
//! small module (`riffle-wasm`); this one carries the `llama` decoder, the chat template
//! engine (minijinja) and the generation loop, and is fetched only when the chat panel
//! opens.
//!
//! ```js
//! import init, { ChatModel, ModelUpload } from './pkg-chat/riffle_chat.js';
//! await init();
//! const up = new ModelUpload(totalBytes);          // one buffer in wasm memory
//! for await (const chunk of response.body) up.write(chunk);
//! const chat = ChatModel.fromUpload(up, 'SmolLM2.gguf', 1024);
//! const h = chat.addAdapter(bytes, 'task.gguf');   // throws Error on a bad file
//! chat.useAdapter(h);                               // or null: the bare base
//! chat.begin(promptIds, 0, 0, 1, 0, 256);           // greedy
//! for (;;) { const e = chat.next(); if (e.kind === 'done') break; /* yield */ }
//! ```
//!
//! `docs/wasm.md` describes the module, its build and the measured figures.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod engine;

use engine::{ChatEngine, Event, Upload};
use js_sys::{Array, Object, Reflect, Uint32Array};
use riffle_core::sample::SamplerConfig;
use riffle_host::chat::Message;
use wasm_bindgen::prelude::*;

use riffle_wasm_shared::js::{error as js_error, memory_bytes as wasm_memory_bytes, set};
#[cfg(feature = "threads")]
pub use riffle_wasm_shared::threads::{
    run_thread, start_threads, thread_count, thread_memory, thread_module,
};

/// A model file being written into wasm memory as it downloads (or is read from a
/// dropped file): one buffer of the announced size, so the file is never held twice.
#[wasm_bindgen]
pub struct ModelUpload {
    inner: Upload,
}

#[wasm_bindgen]
impl ModelUpload {
    /// Room for a file of `len` bytes.
    #[wasm_bindgen(constructor)]
    pub fn new(len: usize) -> ModelUpload {
        ModelUpload {
            inner: Upload::new(len),
        }
    }
    /// Appends the next piece (throws past the announced size).
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), JsError> {
        self.inner.write(chunk).map_err(js_error)
    }
    /// Bytes received so far.
    #[wasm_bindgen(getter)]
    pub fn received(&self) -> usize {
        self.inner.received()
    }
}

/// One causal base model with resident adapters and one conversation.
#[wasm_bindgen]
pub struct ChatModel {
    engine: ChatEngine,
}

#[wasm_bindgen]
impl ChatModel {
    /// The model from a finished upload, with a conversation state of `context`
    /// positions (clamped to the model's context). Throws `NAME: problem`.
    #[wasm_bindgen(js_name = fromUpload)]
    pub fn from_upload(
        upload: ModelUpload,
        name: Option<String>,
        context: usize,
    ) -> Result<ChatModel, JsError> {
        let bytes = upload.inner.finish().map_err(js_error)?;
        ChatEngine::new(bytes, name.as_deref(), context)
            .map(|engine| ChatModel { engine })
            .map_err(js_error)
    }

    /// The model from bytes held by JavaScript (copied into wasm memory: benchmarks and
    /// tests; the page uses [`ModelUpload`]).
    #[wasm_bindgen(js_name = fromBytes)]
    pub fn from_bytes(
        bytes: Vec<u8>,
        name: Option<String>,
        context: usize,
    ) -> Result<ChatModel, JsError> {
        ChatEngine::new(bytes, name.as_deref(), context)
            .map(|engine| ChatModel { engine })
            .map_err(js_error)
    }

    /// Validates and prepares an adapter; returns its handle. Throws `NAME: problem`
    /// (wrong base, corrupt file, ...) and changes nothing then.
    #[wasm_bindgen(js_name = addAdapter)]
    pub fn add_adapter(&mut self, bytes: Vec<u8>, name: Option<String>) -> Result<usize, JsError> {
        self.engine
            .add_adapter(bytes, name.as_deref())
            .map_err(js_error)
    }

    /// Makes an adapter (or the bare base, `null`) answer from the next message on.
    #[wasm_bindgen(js_name = useAdapter)]
    pub fn use_adapter(&mut self, handle: Option<usize>) -> Result<(), JsError> {
        self.engine.use_adapter(handle).map_err(js_error)
    }

    /// The handle of the resident adapter for `task`.
    #[wasm_bindgen(js_name = findAdapter)]
    pub fn find_adapter(&self, task: &str) -> Option<usize> {
        self.engine.find(task)
    }

    /// The prompt text of a conversation (`[{role, content}, ...]`) by the file's chat
    /// template, ending with the assistant's turn opening.
    pub fn render(&self, messages: Array) -> Result<String, JsError> {
        let mut msgs = Vec::new();
        for m in messages.iter() {
            let get = |k: &str| {
                Reflect::get(&m, &JsValue::from_str(k))
                    .ok()
                    .and_then(|v| v.as_string())
                    .unwrap_or_default()
            };
            msgs.push(Message::new(&get("role"), &get("content")));
        }
        self.engine.render(&msgs).map_err(js_error)
    }

    /// The text of token `id` as the file spells it.
    #[wasm_bindgen(js_name = tokenText)]
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.engine.vocab().text(id).map(str::to_owned)
    }

    /// The ids of `text` by the file's byte-level BPE tokenizer (special tokens matched).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, JsError> {
        self.engine.encode(text).map_err(js_error)
    }

    /// The text of a sequence of ids (control tokens give none).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        let vocab = self.engine.vocab();
        for &id in ids {
            riffle_host::generate::TokenBytes::token_bytes(&vocab, id, &mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Starts a generation after `prompt` (the whole conversation's ids; the prefix the
    /// state holds under the active adapter is reused). Temperature 0 is greedy.
    pub fn begin(
        &mut self,
        prompt: &[u32],
        temperature: f32,
        top_k: usize,
        top_p: f32,
        seed: u64,
        max_tokens: usize,
    ) -> Result<(), JsError> {
        let sampler = SamplerConfig {
            temperature,
            top_k,
            top_p,
            seed,
        };
        self.engine
            .begin(prompt, sampler, max_tokens)
            .map_err(js_error)
    }

    /// One bounded piece of work: `{kind: 'prompt', done, total}`, `{kind: 'token', id,
    /// text}` or `{kind: 'done', reason}`. The worker yields to its message loop between
    /// calls, so Stop is read at the next token.
    #[wasm_bindgen(js_name = next)]
    pub fn advance(&mut self) -> Result<Object, JsError> {
        let o = Object::new();
        match self.engine.advance().map_err(js_error)? {
            Event::Prompt { done, total } => {
                set(&o, "kind", "prompt");
                set(&o, "done", done as f64);
                set(&o, "total", total as f64);
            }
            Event::Token { id, text } => {
                set(&o, "kind", "token");
                set(&o, "id", id);
                set(&o, "text", text);
            }
            Event::Done { reason } => {
                set(&o, "kind", "done");
                set(&o, "reason", reason);
            }
        }
        Ok(o)
    }

    /// Ends the current generation.
    pub fn stop(&mut self) {
        self.engine.stop();
    }

    /// Forgets the conversation state.
    pub fn reset(&mut self) {
        self.engine.reset();
    }

    /// Benchmark: prompt ids read in one step, then `n` greedy tokens one step each:
    /// `{tokens, promptMs, decodeMs}` (decode: the `n - 1` steps after the first token).
    #[wasm_bindgen(js_name = benchIds)]
    pub fn bench_ids(&mut self, prompt: &[u32], n: usize) -> Result<Object, JsError> {
        let (tokens, prompt_ms, decode_ms) = self.engine.bench(prompt, n).map_err(js_error)?;
        let o = Object::new();
        set(
            &o,
            "tokens",
            Array::from(&Uint32Array::from(tokens.as_slice())),
        );
        set(&o, "promptMs", prompt_ms);
        set(&o, "decodeMs", decode_ms);
        Ok(o)
    }

    /// Sizes, adapters and the timings of the current or last generation.
    pub fn info(&self) -> Object {
        let e = &self.engine;
        let o = Object::new();
        set(&o, "architecture", e.model().architecture().name());
        set(&o, "modelId", e.model().model_id());
        set(&o, "modelBytes", e.model_bytes() as f64);
        set(&o, "stateBytes", e.state_bytes() as f64);
        set(&o, "scratchBytes", e.scratch_bytes() as f64);
        let (len, context) = e.state_positions();
        set(&o, "statePositions", len as f64);
        set(&o, "context", context as f64);
        set(&o, "wasmMemoryBytes", wasm_memory_bytes());
        set(&o, "threads", e.threads() as f64);
        set(
            &o,
            "active",
            e.active()
                .map_or(JsValue::NULL, |h| JsValue::from(h as f64)),
        );
        let adapters = Array::new();
        for a in e.adapters() {
            let x = Object::new();
            set(&x, "handle", a.handle as f64);
            set(&x, "task", a.task);
            set(&x, "description", a.description);
            set(&x, "method", a.method);
            set(&x, "fileBytes", a.file_bytes as f64);
            set(&x, "workspaceBytes", a.workspace_bytes as f64);
            set(&x, "prepareMs", a.prepare_ms);
            adapters.push(&x);
        }
        set(&o, "adapters", adapters);
        let t = e.timings();
        let tm = Object::new();
        set(&tm, "promptTokens", t.prompt_tokens as f64);
        set(&tm, "reusedTokens", t.reused_tokens as f64);
        set(&tm, "promptMs", t.prompt_ms);
        set(&tm, "tokens", t.tokens as f64);
        set(&tm, "decodeMs", t.decode_ms);
        set(&o, "timings", tm);
        o
    }
}
