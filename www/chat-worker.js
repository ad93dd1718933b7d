// The chat worker: owns the chat module (pkg-chat/riffle_chat.js, wasm-chat/) and one
// ChatModel. The model file goes into wasm memory once, written piece by piece as it
// downloads (or as a dropped file is read): no second copy in JavaScript.
//
// Generation runs in slices: one prompt chunk or one token per ChatModel.next() call,
// and the worker goes back to its message loop between calls (a MessageChannel turn), so
// a 'stop' message is read before the next token.
//
// Threads: with `threads > 1` on the first 'load' and a cross-origin isolated page, the
// threaded chat module (pkg-chat-mt/) runs, each step split across a pool of Web Workers
// on the same memory (threads.js); otherwise the one-thread module (pkg-chat/). The
// slices stay: the pool works inside each slice.
//
// Messages in:  {type: 'load', url, threads, threadedUrl} | {type: 'load', file, ...}
//                                                                    -> progress..., loaded | error
//               {type: 'adapter', bytes, name}                       -> adapter | error (the chat keeps working)
//               {type: 'use', handle}  (null: the bare base)         -> used
//               {type: 'render', messages}                           -> rendered {text}
//               {type: 'encode', text}                               -> encoded {ids}
//               {type: 'generate', messages | ids, maxTokens, temperature, topK, topP, seed}
//                                                                    -> prompt..., piece..., done {reason, timings}
//               {type: 'bench', ids, n}                              -> benched {promptMs, decodeMs, tokens, text}
//               {type: 'stop'}
// Every reply carries the request's `id`.
import { loadModule } from './threads.js';

let model = null;
let stopRequested = false;
let generating = false;
let module = null; // {glue, threads, ...}: the first 'load' picks and instantiates it

// A zero-delay turn of the event loop (setTimeout clamps nested calls to 4 ms).
const channel = new MessageChannel();
const waiters = [];
channel.port1.onmessage = () => waiters.shift()?.();
const yieldTurn = () => new Promise((r) => { waiters.push(r); channel.port2.postMessage(0); });

async function load(id, msg) {
  module ??= await loadModule({
    one: { glue: './pkg-chat/riffle_chat.js', wasm: './pkg-chat/riffle_chat_bg.wasm' },
    threaded: msg.threadedUrl && { glue: './pkg-chat-mt/riffle_chat.js', wasm: msg.threadedUrl },
    threads: msg.threads || 1,
  });
  const { ChatModel, ModelUpload } = module.glue;
  let total; let reader; let name;
  if (msg.file) {
    total = msg.file.size;
    reader = msg.file.stream().getReader();
    name = msg.file.name;
  } else {
    const res = await fetch(msg.url);
    if (!res.ok) throw new Error(`${msg.url}: HTTP ${res.status}`);
    total = Number(res.headers.get('content-length'));
    if (!total) throw new Error(`${msg.url}: the server gave no content-length`);
    reader = res.body.getReader();
    name = msg.url.split('/').pop();
  }
  const up = new ModelUpload(total);
  let last = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    up.write(value);
    const now = performance.now();
    if (now - last > 50) { last = now; postMessage({ id, type: 'progress', received: up.received, total }); }
  }
  postMessage({ id, type: 'progress', received: up.received, total });
  const t0 = performance.now();
  model = ChatModel.fromUpload(up, name, msg.context || 1024);
  postMessage({ id, type: 'loaded', parseMs: performance.now() - t0, info: model.info(),
    threaded: module.threaded, threadError: module.error });
}

async function generate(id, msg) {
  if (generating) throw new Error('a generation is already running');
  generating = true;
  stopRequested = false;
  try {
    // The conversation through the file's chat template and tokenizer, or ids as given.
    const ids = msg.messages ? model.encode(model.render(msg.messages)) : Uint32Array.from(msg.ids);
    model.begin(ids, msg.temperature ?? 0, msg.topK ?? 0, msg.topP ?? 1,
      BigInt(msg.seed ?? 0), msg.maxTokens ?? 256);
    for (;;) {
      await yieldTurn();
      if (stopRequested) {
        model.stop();
        postMessage({ id, type: 'done', reason: 'cancelled', info: model.info() });
        return;
      }
      const e = model.next();
      if (e.kind === 'prompt') postMessage({ id, type: 'prompt', done: e.done, total: e.total });
      else if (e.kind === 'token') postMessage({ id, type: 'piece', token: e.id, text: e.text });
      else { postMessage({ id, type: 'done', reason: e.reason, info: model.info() }); return; }
    }
  } finally {
    generating = false;
  }
}

self.onmessage = async ({ data: msg }) => {
  const id = msg.id;
  try {
    if (msg.type === 'stop') { stopRequested = true; return; }
    if (msg.type === 'load') { await load(id, msg); return; }
    if (!model) throw new Error('no model loaded');
    if (msg.type === 'adapter') {
      const t0 = performance.now();
      const handle = model.addAdapter(new Uint8Array(msg.bytes), msg.name);
      postMessage({ id, type: 'adapter', handle, ms: performance.now() - t0, info: model.info() });
    } else if (msg.type === 'use') {
      model.useAdapter(msg.handle ?? undefined);
      postMessage({ id, type: 'used', info: model.info() });
    } else if (msg.type === 'encode') {
      postMessage({ id, type: 'encoded', ids: Array.from(model.encode(msg.text)) });
    } else if (msg.type === 'render') {
      postMessage({ id, type: 'rendered', text: model.render(msg.messages) });
    } else if (msg.type === 'bench') {
      // The browser benchmark: the prompt ids in one step, then n greedy tokens.
      const r = model.benchIds(Uint32Array.from(msg.ids), msg.n);
      postMessage({ id, type: 'benched', ...r, tokens: Array.from(r.tokens), text: model.decode(Uint32Array.from(r.tokens)) });
    } else if (msg.type === 'generate') {
      await generate(id, msg);
    } else {
      throw new Error(`unknown message ${msg.type}`);
    }
  } catch (e) {
    postMessage({ id, type: 'error', message: String(e && e.message ? e.message : e) });
  }
};
