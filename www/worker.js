// Inference worker: owns the wasm module and every RiffleModel, so the page never
// freezes. Messages in: {id, op, ...}; replies: {id, ok, result} or {id, ok: false,
// error}; unsolicited: {type: 'progress', key, loaded, total}.
//
// `init` picks the module: the threaded one (pkg-mt/, a Web Worker pool on shared
// memory, threads.js) when the page asks for more than one thread and is cross-origin
// isolated, else the small one-thread module (pkg/).
import { loadModule } from './threads.js';

let glue = null; // the wasm-bindgen module (RiffleModel, ...)

const models = new Map(); // key -> RiffleModel (one per base, kept for the page's life)

async function fetchBytes(url, key) {
  const resp = await fetch(url);
  if (!resp.ok) throw new Error(`cannot fetch ${url}: HTTP ${resp.status}`);
  const total = Number(resp.headers.get('content-length')) || 0;
  if (!resp.body || !key) return new Uint8Array(await resp.arrayBuffer());
  const reader = resp.body.getReader();
  const chunks = [];
  let loaded = 0;
  let lastPost = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    const now = performance.now();
    if (now - lastPost > 30) {
      lastPost = now;
      postMessage({ type: 'progress', key, loaded, total });
    }
  }
  postMessage({ type: 'progress', key, loaded, total: total || loaded });
  const out = new Uint8Array(loaded);
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

function model(key) {
  const m = models.get(key);
  if (!m) throw new Error(`no model ${key} is loaded`);
  return m;
}

const ops = {
  // wasmUrl: the one-thread module; threadedUrl (optional): the threaded one.
  async init({ wasmUrl, threadedUrl, threads = 1 }) {
    const m = await loadModule({
      one: { glue: './pkg/riffle_wasm.js', wasm: wasmUrl },
      threaded: threadedUrl && { glue: './pkg-mt/riffle_wasm.js', wasm: threadedUrl },
      threads,
      fetchBytes: (url) => fetchBytes(url, 'wasm'),
    });
    glue = m.glue;
    return { wasmBytes: m.wasmBytes, instantiateMs: m.instantiateMs, threads: m.threads, threaded: m.threaded, threadError: m.error };
  },
  // Loads a base (with a progress bar) and its shipped adapters.
  async load({ key, url, adapters = [] }) {
    if (models.has(key)) return { info: models.get(key).info(), loadMs: 0, errors: [] };
    const bytes = await fetchBytes(url, key);
    const t0 = performance.now();
    const m = new glue.RiffleModel(bytes);
    const adapterBytes = await Promise.all(adapters.map((a) => fetchBytes(a.url)));
    // A shipped adapter that does not fit is reported; the base and the others still load.
    const errors = [];
    adapters.forEach((a, i) => {
      try {
        m.addAdapter(adapterBytes[i], a.name);
      } catch (e) {
        errors.push(String(e.message || e));
      }
    });
    models.set(key, m);
    return { info: m.info(), loadMs: performance.now() - t0, errors };
  },
  addAdapter({ key, bytes, name }) {
    const m = model(key);
    const handle = m.addAdapter(new Uint8Array(bytes), name);
    return { handle, info: m.info() };
  },
  use({ key, handle }) {
    const m = model(key);
    const swapMs = m.useAdapter(handle);
    return { swapMs, info: m.info() };
  },
  merged({ key, on }) {
    const m = model(key);
    const swapMs = m.setMerged(on);
    return { swapMs, info: m.info() };
  },
  runVector({ key, input }) {
    return model(key).runVector(input);
  },
  // Runs one input through the bare base and every resident adapter, then restores the
  // active adapter: the "what would each task say" row. Unmerged switches are O(1).
  compareVector({ key, input }) {
    const m = model(key);
    const info = m.info();
    const rows = [];
    const t0 = performance.now();
    for (const h of [null, ...info.adapters.map((a) => a.handle)]) {
      m.useAdapter(h);
      const r = m.runVector(input);
      rows.push({ handle: h, task: r.task, label: r.label, p: r.probabilities[r.index] });
    }
    m.useAdapter(info.active);
    return { rows, totalMs: performance.now() - t0 };
  },
  // Mean latency over many runs (performance.now() is coarse without cross-origin
  // isolation, so one digits inference often reads as 0).
  benchVector({ key, input, iterations = 200 }) {
    const m = model(key);
    const t0 = performance.now();
    for (let i = 0; i < iterations; i++) m.runVector(input);
    return { meanMs: (performance.now() - t0) / iterations, iterations };
  },
  // Mean time of one adapter switch (from the active one to `handle` and back), in the
  // current mode: O(1) unmerged, an in-place swap of the merged weights when merged.
  benchSwap({ key, handle, rounds = 100 }) {
    const m = model(key);
    const back = m.info().active;
    const t0 = performance.now();
    for (let i = 0; i < rounds; i++) {
      m.useAdapter(handle);
      m.useAdapter(back);
    }
    return { meanMs: (performance.now() - t0) / (2 * rounds), rounds };
  },
  benchText({ key, text, iterations = 5 }) {
    const m = model(key);
    let tokens = 0;
    const t0 = performance.now();
    for (let i = 0; i < iterations; i++) tokens = m.runText(text).tokens;
    return { meanMs: (performance.now() - t0) / iterations, iterations, tokens };
  },
  // Wall time of each runText call for about budgetMs (at least `min` calls, at most
  // `max`), after two warm-up calls: the browser benchmark (bench/browser/anchors.mjs).
  timeText({ key, text, budgetMs = 1000, min = 3, max = 200 }) {
    const m = model(key);
    for (let i = 0; i < 2; i++) m.runText(text);
    const ms = [];
    const end = performance.now() + budgetMs;
    while (ms.length < min || (performance.now() < end && ms.length < max)) {
      const t0 = performance.now();
      m.runText(text);
      ms.push(performance.now() - t0);
    }
    return { ms };
  },
  runText({ key, text }) {
    return model(key).runText(text);
  },
  info({ key }) {
    return model(key).info();
  },
};

let queue = Promise.resolve();
onmessage = (ev) => {
  const { id, op, ...args } = ev.data;
  // One op at a time, in order: a RiffleModel is not re-entrant.
  queue = queue.then(async () => {
    try {
      const fn = ops[op];
      if (!fn) throw new Error(`unknown op ${op}`);
      const result = await fn(args);
      postMessage({ id, ok: true, result });
    } catch (e) {
      postMessage({ id, ok: false, error: String(e && e.message ? e.message : e) });
    }
  });
};
