// The chat panel: SmolLM2 with per-task adapters in its own worker (chat-worker.js),
// loaded only when the panel is opened. UI only; the worker owns the model.
import { pageThreads } from './threads.js';
const clean = (s) => String(s).replace(
  /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g,
  (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
);
const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = clean(text);
  return e;
};
const mb = (n) => `${(n / 1048576).toFixed(1)} MB`;
const SYSTEM = 'You are a helpful AI assistant named SmolLM, trained by Hugging Face';

const state = {
  worker: null, next: 0, handlers: new Map(), busy: false, model: null,
  adapters: [], described: {}, active: null, compare: false, messages: [{ role: 'system', content: SYSTEM }],
};

function call(msg, onEvent) {
  return new Promise((resolve, reject) => {
    const id = ++state.next;
    state.handlers.set(id, (data) => {
      if (onEvent) onEvent(data);
      if (data.type === 'error') { state.handlers.delete(id); reject(new Error(data.message)); }
      else if (['loaded', 'adapter', 'used', 'rendered', 'encoded', 'done'].includes(data.type)) { state.handlers.delete(id); resolve(data); }
    });
    state.worker.postMessage({ ...msg, id });
  });
}

function showError(msg) {
  const e = $('chat-error');
  e.textContent = clean(msg);
  e.hidden = !msg;
}

function renderChips() {
  const box = $('chat-adapters');
  box.replaceChildren();
  const chip = (label, handle, title) => {
    const b = el('button', 'chip', label);
    b.setAttribute('role', 'radio');
    b.setAttribute('aria-checked', String(state.active === handle));
    if (title) b.title = clean(title);
    b.addEventListener('click', async () => {
      if (state.busy) return;
      await call({ type: 'use', handle });
      state.active = handle;
      renderChips();
    });
    return b;
  };
  box.append(chip('base', null, 'the bare model'));
  const about = (a) => a.description || state.described[a.task] || '';
  for (const a of state.adapters) box.append(chip(a.task, a.handle, about(a)));
  const a = state.adapters.find((x) => x.handle === state.active);
  $('chat-note').textContent = clean(a ? (about(a) || `task "${a.task}"`) : 'The bare SmolLM2-135M-Instruct.');
}

function stats(info) {
  const t = info.timings;
  const tps = t.tokens > 1 ? (t.tokens - 1) / (t.decodeMs / 1000) : 0;
  $('chat-stats').textContent = `prompt ${t.promptTokens} tokens in ${t.promptMs.toFixed(0)} ms` +
    (t.reusedTokens ? ` (${t.reusedTokens} reused)` : '') +
    ` · ${t.tokens} tokens, ${tps.toFixed(1)} tokens/s · wasm memory ${mb(info.wasmMemoryBytes)}` +
    ` (file ${mb(info.modelBytes)}, state ${mb(info.stateBytes)}) · ${info.threads} thread${info.threads > 1 ? 's' : ''}`;
}

async function answer(messages, label) {
  const log = $('chat-log');
  const box = el('div', 'msg assistant');
  box.append(el('span', 'who', label));
  const body = el('span', 'body');
  box.append(body);
  log.append(box);
  let text = '';
  const r = await call({ type: 'generate', messages, maxTokens: 256 }, (e) => {
    if (e.type === 'piece') { text += e.text; body.textContent = clean(text); log.scrollTop = log.scrollHeight; }
    if (e.type === 'prompt') body.textContent = `reading the conversation… ${e.done}/${e.total}`;
  });
  if (r.reason === 'cancelled') box.append(el('span', 'muted', ' [stopped]'));
  stats(r.info);
  return text;
}

async function send() {
  const input = $('chat-input');
  const q = input.value.trim();
  if (!q || state.busy) return;
  state.busy = true;
  $('chat-send').disabled = true;
  $('chat-stop').disabled = false;
  showError('');
  input.value = '';
  const log = $('chat-log');
  const u = el('div', 'msg user');
  u.append(el('span', 'who', 'you'), el('span', 'body', q));
  log.append(u);
  state.messages.push({ role: 'user', content: q });
  try {
    const task = state.adapters.find((a) => a.handle === state.active)?.task || 'base';
    const reply = await answer(state.messages, task);
    if (state.compare && state.active !== null) {
      const keep = state.active;
      await call({ type: 'use', handle: null });
      await answer(state.messages, 'base (compare)');
      await call({ type: 'use', handle: keep });
    }
    state.messages.push({ role: 'assistant', content: reply });
  } catch (e) {
    state.messages.pop();
    showError(e.message);
  } finally {
    state.busy = false;
    $('chat-send').disabled = false;
    $('chat-stop').disabled = true;
  }
}

async function addAdapter(file) {
  showError('');
  try {
    const bytes = await file.arrayBuffer();
    const r = await call({ type: 'adapter', bytes, name: file.name });
    state.adapters = r.info.adapters;
    renderChips();
    $('chat-ok').textContent = clean(`${file.name}: task "${r.info.adapters.at(-1).task}" added`);
    $('chat-ok').hidden = false;
  } catch (e) {
    $('chat-ok').hidden = true;
    showError(e.message);
  }
}

async function open(manifest, file) {
  $('chat-open').disabled = true;
  $('chat-body').hidden = false;
  state.worker = new Worker('chat-worker.js', { type: 'module' });
  state.worker.onmessage = ({ data }) => state.handlers.get(data.id)?.(data);
  const bar = $('chat-progress-bar');
  const text = $('chat-progress-text');
  try {
    const src = file ? { file } : { url: manifest.chat.file };
    const want = pageThreads();
    const r = await call({ type: 'load', context: 1024, threads: want.threads,
      threadedUrl: manifest.chatWasmThreads?.file, ...src }, (e) => {
      if (e.type !== 'progress') return;
      bar.style.width = `${(100 * e.received / e.total).toFixed(1)}%`;
      text.textContent = `${mb(e.received)} / ${mb(e.total)}`;
    });
    text.textContent = `loaded ${mb(r.info.modelBytes)} · wasm memory ${mb(r.info.wasmMemoryBytes)}`;
    showThreads(want, r);
    for (const a of (file ? [] : manifest.chat.adapters || [])) {
      if (a.task && a.description) state.described[a.task] = a.description;
      const bytes = await (await fetch(a.file)).arrayBuffer();
      try { await call({ type: 'adapter', bytes, name: a.file.split('/').pop() }); } catch (e) { showError(e.message); }
    }
    const info = (await call({ type: 'use', handle: null })).info;
    state.adapters = info.adapters;
    renderChips();
    $('chat-send').disabled = false;
    $('chat-open').hidden = true;
    $('chat').setAttribute('aria-busy', 'false');
  } catch (e) {
    showError(e.message);
    $('chat-open').disabled = false;
  }
}

// The heading says how many threads the chat runs on, and why only one.
function showThreads(want, r) {
  const n = r.info.threads;
  let note = n > 1 ? `${n} threads (Web Worker pool)` : want.note;
  if (want.threads > 1 && n === 1) note = r.threadError ? `one thread: the Web Worker pool failed (${r.threadError})` : 'one thread: no threaded chat module built';
  $('chat-threads').textContent = `· ${note}`;
  $('chat').dataset.threads = String(n);
}

export async function initChat() {
  let manifest;
  try { manifest = await (await fetch('models/manifest.json')).json(); } catch { return; }
  const card = $('chat');
  if (!card) return;
  card.hidden = false;
  $('chat-model-name').textContent = clean(manifest.chat ? `${manifest.chat.name}, ${mb(manifest.chat.bytes)}` : 'drop a SmolLM2 GGUF file');
  $('chat-threads').textContent = `· ${pageThreads().note}`;
  const threaded = pageThreads().threads > 1 && manifest.chatWasmThreads;
  const cw = threaded ? manifest.chatWasmThreads : manifest.chatWasm;
  $('chat-module-size').textContent = cw ? `chat module${threaded ? ' (threads)' : ''} ${(cw.gzipBytes / 1024).toFixed(0)} KB gzipped, loaded on open` : '';
  $('chat-open').disabled = !manifest.chat;
  $('chat-open').addEventListener('click', () => open(manifest, null));
  $('chat-send').addEventListener('click', send);
  $('chat-input').addEventListener('keydown', (e) => { if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); send(); } });
  $('chat-stop').addEventListener('click', () => state.worker?.postMessage({ type: 'stop' }));
  $('chat-compare').addEventListener('change', (e) => { state.compare = e.target.checked; });
  $('chat-file').addEventListener('change', (e) => { const f = e.target.files[0]; e.target.value = ''; if (f) (state.worker ? addAdapter(f) : open(manifest, f)); });
  const drop = $('chat-drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const f = e.dataTransfer.files[0];
    if (f) (state.worker ? addAdapter(f) : open(manifest, f));
  });
}

initChat();
