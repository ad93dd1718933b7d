// The page: UI only. Every model call goes to worker.js (riffle-wasm in a Web Worker).

import { pageThreads } from './threads.js';

// ---- worker RPC ---------------------------------------------------------------------------
const worker = new Worker('worker.js', { type: 'module' });
const pending = new Map();
const progressHandlers = new Map();
let nextId = 1;
worker.onmessage = (ev) => {
  const m = ev.data;
  if (m.type === 'progress') {
    progressHandlers.get(m.key)?.(m.loaded, m.total);
    return;
  }
  const p = pending.get(m.id);
  if (!p) return;
  pending.delete(m.id);
  if (m.ok) p.resolve(m.result);
  else p.reject(new Error(m.error));
};
worker.onerror = (e) => fatal(`worker failed: ${e.message || e}`);
function call(op, args = {}, transfer = []) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, op, ...args }, transfer);
  });
}

// ---- helpers ------------------------------------------------------------------------------
const $ = (id) => document.getElementById(id);
// Strings from files (task names, labels, file names, error messages that quote them)
// are shown with control and bidirectional-override characters escaped as \uXXXX, so a
// file cannot reorder or hide what the page says (the CLI escapes the same set).
const clean = (s) => String(s).replace(
  /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g,
  (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = clean(v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, k === 'title' ? clean(v) : v);
  }
  for (const k of kids) e.append(typeof k === 'string' ? clean(k) : k);
  return e;
};
const fmtBytes = (n) => {
  if (n == null) return '–';
  if (n < 1000) return `${n} B`;
  if (n < 1e6) return `${(n / 1000).toFixed(1)} KB`;
  return `${(n / 1e6).toFixed(2)} MB`;
};
const exactBytes = (n) => `${n.toLocaleString('en-US')} B`;
// performance.now() is coarsened to 0.1 ms without cross-origin isolation (no COOP/COEP
// here), so single timings below that read as 0.
const fmtMs = (ms) => (ms < 0.1 ? '< 0.1 ms' : `${ms.toFixed(ms < 10 ? 2 : 1)} ms`);
const fmtUs = (ms) => (ms < 1 ? `${(ms * 1000).toFixed(1)} µs` : `${ms.toFixed(2)} ms`);
function fatal(msg) {
  $('base-progress-text').textContent = msg;
  $('base-progress').classList.add('failed');
}
function progress(prefix, barId, textId, label) {
  return (loaded, total) => {
    const pct = total ? Math.min(100, (100 * loaded) / total) : 0;
    $(barId).style.width = `${pct}%`;
    $(textId).textContent = `${label}: ${fmtBytes(loaded)}${total ? ` / ${fmtBytes(total)}` : ''}`;
  };
}

// ---- state --------------------------------------------------------------------------------
const TASKS = {
  base: {
    title: 'base',
    note: 'The frozen base alone: it expects an upright digit, dark ink on white.',
    t: {},
  },
  rotated: {
    title: 'rotated',
    note: 'Trained on digits turned 90° clockwise. Rotate your digit: the base gets lost, this adapter reads it.',
    t: { rotate: true },
  },
  inverted: {
    title: 'inverted',
    note: 'Trained on inverted images (1 − x). Invert the input: the base fails, this adapter reads it.',
    t: { invert: true },
  },
  noisy: {
    title: 'noisy',
    note: 'Trained on digits under Gaussian noise (σ = 0.3). Add noise: this adapter is steadier than the base.',
    t: { noise: true },
  },
  parity: {
    title: 'parity',
    note: 'Brings its own 2-way head: even or odd, for an upright digit. Same frozen base underneath.',
    t: {},
  },
};

const state = {
  manifest: null,
  wasm: null, // {wasmBytes, instantiateMs}
  base: 'mlp',
  task: 'base', // task name of the active digits adapter
  merged: false,
  transforms: { rotate: false, invert: false, noise: false },
  noiseSeed: 1,
  raw: new Float32Array(64), // 0..16 counts from the drawing or a sample
  sampleIndex: -1,
  bases: {}, // key -> {info, loaded: Promise}
  userTasks: {}, // base key -> [task names from dropped files]
  text: { key: 'minilm', task: null, merged: false, info: null, ready: false },
  runSeq: 0,
};
window.riffleDemo = state; // for the page test and the curious
state.call = call;

// ---- drawing pad and the 8x8 downsampling -------------------------------------------------
const pad = $('pad');
const padCtx = pad.getContext('2d', { willReadFrequently: true });
const grid = $('grid');
const gridCtx = grid.getContext('2d');
let sampleShown = false;

function clearPad() {
  padCtx.fillStyle = '#fff';
  padCtx.fillRect(0, 0, pad.width, pad.height);
  sampleShown = false;
}

// sklearn's digits (UCI optdigits): a 32x32 bitmap, each 4x4 block counts its inked pixels
// (0..16). The drawing's bounding box is fitted into 32x32 (aspect kept, centred), each
// target pixel's ink coverage estimated with 6x6 sub-samples, on above 30%.
function padToCounts() {
  const W = pad.width;
  const H = pad.height;
  const img = padCtx.getImageData(0, 0, W, H).data;
  const ink = new Float32Array(W * H);
  let minx = W, miny = H, maxx = -1, maxy = -1;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const v = 1 - img[4 * (y * W + x)] / 255;
      if (v > 0.05) {
        ink[y * W + x] = v;
        if (x < minx) minx = x;
        if (x > maxx) maxx = x;
        if (y < miny) miny = y;
        if (y > maxy) maxy = y;
      }
    }
  }
  const out = new Float32Array(64);
  if (maxx < 0) return out;
  const bw = maxx - minx + 1;
  const bh = maxy - miny + 1;
  const scale = 32 / Math.max(bw, bh); // target px per source px
  const ox = (32 - bw * scale) / 2;
  const oy = (32 - bh * scale) / 2;
  const S = 6;
  for (let ty = 0; ty < 32; ty++) {
    for (let tx = 0; tx < 32; tx++) {
      let sum = 0;
      for (let sy = 0; sy < S; sy++) {
        for (let sx = 0; sx < S; sx++) {
          const x = Math.floor(minx + (tx + (sx + 0.5) / S - ox) / scale);
          const y = Math.floor(miny + (ty + (sy + 0.5) / S - oy) / scale);
          if (x >= 0 && x < W && y >= 0 && y < H) sum += ink[y * W + x];
        }
      }
      if (sum / (S * S) > 0.3) out[(ty >> 2) * 8 + (tx >> 2)] += 1;
    }
  }
  return out;
}

function showSampleOnPad(counts) {
  clearPad();
  const c = pad.width / 8;
  for (let i = 0; i < 64; i++) {
    const v = 255 - Math.round((counts[i] / 16) * 238);
    padCtx.fillStyle = `rgb(${v},${v},${v})`;
    padCtx.fillRect((i % 8) * c, Math.floor(i / 8) * c, c, c);
  }
  sampleShown = true;
}

// Seeded N(0, 1) (mulberry32 + Box-Muller), so a toggle shows one stable noise draw.
function gaussian(seed) {
  let a = seed >>> 0;
  const rnd = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
}

// The model input, pixel/16 in [0, 1], with the task transforms of the held-out sets:
// rotate 90° clockwise, invert (1 - x), Gaussian noise sigma 0.3 clipped to [0, 1].
function modelInput() {
  let x = Float32Array.from(state.raw, (v) => v / 16);
  if (state.transforms.rotate) {
    const r = new Float32Array(64);
    for (let i = 0; i < 8; i++) for (let j = 0; j < 8; j++) r[i * 8 + j] = x[(7 - j) * 8 + i];
    x = r;
  }
  if (state.transforms.invert) x = x.map((v) => 1 - v);
  if (state.transforms.noise) {
    const g = gaussian(state.noiseSeed);
    x = x.map((v) => Math.min(1, Math.max(0, v + 0.3 * g())));
  }
  return x;
}

function drawGrid(x) {
  const c = grid.width / 8;
  gridCtx.font = `${Math.round(c * 0.42)}px ui-monospace, monospace`;
  gridCtx.textAlign = 'center';
  gridCtx.textBaseline = 'middle';
  for (let i = 0; i < 64; i++) {
    const v = x[i];
    const r = Math.round(255 - v * (255 - 29));
    const g = Math.round(255 - v * (255 - 36));
    const b = Math.round(255 - v * (255 - 51));
    gridCtx.fillStyle = `rgb(${r},${g},${b})`;
    const px = (i % 8) * c;
    const py = Math.floor(i / 8) * c;
    gridCtx.fillRect(px, py, c, c);
    gridCtx.fillStyle = v > 0.5 ? '#fff' : '#8a92a6';
    gridCtx.fillText(String(Math.round(v * 16)), px + c / 2, py + c / 2 + 1);
  }
  gridCtx.strokeStyle = 'rgba(120,130,150,0.25)';
  for (let k = 1; k < 8; k++) {
    gridCtx.beginPath(); gridCtx.moveTo(k * c, 0); gridCtx.lineTo(k * c, grid.height); gridCtx.stroke();
    gridCtx.beginPath(); gridCtx.moveTo(0, k * c); gridCtx.lineTo(grid.width, k * c); gridCtx.stroke();
  }
}

let drawing = false;
let last = null;
let liveTimer = 0;
pad.addEventListener('pointerdown', (e) => {
  if (sampleShown) clearPad();
  drawing = true;
  pad.setPointerCapture(e.pointerId);
  last = padPoint(e);
  stroke(last, last);
});
pad.addEventListener('pointermove', (e) => {
  if (!drawing) return;
  const p = padPoint(e);
  stroke(last, p);
  last = p;
  const now = performance.now();
  if (now - liveTimer > 80) {
    liveTimer = now;
    updateFromPad(false);
  }
});
const endStroke = () => {
  if (!drawing) return;
  drawing = false;
  updateFromPad(true);
};
pad.addEventListener('pointerup', endStroke);
pad.addEventListener('pointercancel', endStroke);
function padPoint(e) {
  const r = pad.getBoundingClientRect();
  return { x: ((e.clientX - r.left) * pad.width) / r.width, y: ((e.clientY - r.top) * pad.height) / r.height };
}
function stroke(a, b) {
  padCtx.strokeStyle = '#111';
  padCtx.lineWidth = 22;
  padCtx.lineCap = 'round';
  padCtx.lineJoin = 'round';
  padCtx.beginPath();
  padCtx.moveTo(a.x, a.y);
  padCtx.lineTo(b.x, b.y);
  padCtx.stroke();
}
function updateFromPad(full) {
  state.raw = padToCounts();
  state.sampleIndex = -1;
  refreshDigits(full);
}

$('clear').addEventListener('click', () => {
  clearPad();
  state.raw = new Float32Array(64);
  refreshDigits(true);
});
$('sample').addEventListener('click', () => loadSample(state.sampleIndex + 1));
function loadSample(i) {
  const s = state.manifest.samples;
  state.sampleIndex = ((i % s.length) + s.length) % s.length;
  state.raw = Float32Array.from(s[state.sampleIndex].pixels);
  showSampleOnPad(state.raw);
  refreshDigits(true);
}
for (const b of document.querySelectorAll('#transforms .toggle')) {
  b.addEventListener('click', () => {
    const t = b.dataset.t;
    state.transforms[t] = !state.transforms[t];
    if (t === 'noise' && state.transforms.noise) state.noiseSeed++;
    syncTransformButtons();
    refreshDigits(true);
  });
}
function syncTransformButtons() {
  for (const b of document.querySelectorAll('#transforms .toggle')) {
    b.setAttribute('aria-pressed', String(!!state.transforms[b.dataset.t]));
  }
  renderDigitChips();
}

// ---- digits: models, adapters, inference ---------------------------------------------------
function baseEntry(key) {
  return state.manifest.digits.find((b) => b.key === key);
}

async function ensureBase(key) {
  if (state.bases[key]) return state.bases[key].loaded;
  const entry = baseEntry(key);
  const onProgress = progress('base', 'base-progress-bar', 'base-progress-text', `${entry.file.split('/').pop()}`);
  progressHandlers.set(key, onProgress);
  $('base-progress').classList.remove('done');
  const loaded = call('load', {
    key,
    url: entry.file,
    adapters: entry.adapters.map((a) => ({ url: a.file, name: a.file.split('/').pop() })),
  }).then((r) => {
    state.bases[key].info = r.info;
    if (r.errors.length) showError('digit', r.errors.join('\n'));
    $('base-progress').classList.add('done');
    $('base-progress-text').textContent =
      `${entry.name}: ${fmtBytes(entry.bytes)} base + ${r.info.adapters.length} adapters loaded`;
    return r.info;
  });
  state.bases[key] = { info: null, loaded };
  return loaded;
}

function handleFor(info, task) {
  if (task === 'base') return null;
  const a = info.adapters.find((x) => x.task === task);
  return a ? a.handle : null;
}

function renderBasePicker() {
  const host = $('base-picker');
  host.replaceChildren();
  for (const b of state.manifest.digits) {
    host.append(el('button', {
      role: 'radio',
      'aria-checked': String(b.key === state.base),
      'data-base': b.key,
      text: b.key.toUpperCase(),
      title: b.name,
      onclick: () => selectBase(b.key),
    }));
  }
  $('digits-base-name').textContent = baseEntry(state.base).name;
}

function renderDigitChips() {
  const info = state.bases[state.base]?.info;
  const host = $('digit-adapters');
  host.replaceChildren();
  if (!info) return;
  const tasks = ['base', ...info.adapters.map((a) => a.task)];
  const user = state.userTasks[state.base] || [];
  for (const t of tasks) {
    const a = info.adapters.find((x) => x.task === t);
    const b = el('button', {
      role: 'radio',
      'aria-checked': String(t === state.task),
      'data-task': t,
      title: a ? `${a.method}, b=${a.blockSize}, m=${a.factors}, ${exactBytes(a.fileBytes)}` : 'no adapter',
      onclick: () => selectDigitTask(t),
    }, t);
    if (user.includes(t)) b.append(el('span', { class: 'tag', text: 'yours' }));
    host.append(b);
  }
  const spec = TASKS[state.task];
  const note = $('task-note');
  note.replaceChildren(spec ? spec.note : `Your adapter, task "${clean(state.task)}".`);
  if (spec) {
    const want = { rotate: false, invert: false, noise: false, ...spec.t };
    const same = Object.keys(want).every((k) => !!state.transforms[k] === want[k]);
    if (!same) {
      note.append(el('button', {
        id: 'match-input',
        text: 'Set the input for this task',
        onclick: () => {
          Object.assign(state.transforms, want);
          if (want.noise) state.noiseSeed++;
          syncTransformButtons();
          refreshDigits(true);
        },
      }));
    }
  }
}

let switching = Promise.resolve();
function selectBase(key) {
  switching = switching.then(() => switchBase(key));
  return switching;
}
async function switchBase(key) {
  state.base = key;
  renderBasePicker();
  $('digits').setAttribute('aria-busy', 'true');
  const info = await ensureBase(key);
  const entry = baseEntry(key);
  $('base-progress-text').textContent =
    `${entry.name}: ${fmtBytes(entry.bytes)} base + ${info.adapters.length} adapters loaded`;
  // Keep the task (if this base has it) and the merged state across bases.
  let h = handleFor(info, state.task);
  if (h === null) state.task = 'base';
  h = handleFor(info, state.task);
  await call('merged', { key, on: state.merged });
  const r = await call('use', { key, handle: h });
  state.bases[key].info = r.info;
  $('digits').setAttribute('aria-busy', 'false');
  renderDigitChips();
  renderSizes();
  await refreshDigits(true);
}

async function selectDigitTask(task) {
  await switching; // a base switch in flight decides which adapters exist
  const info = state.bases[state.base].info;
  const r = await call('use', { key: state.base, handle: handleFor(info, task) });
  state.task = task;
  state.bases[state.base].info = r.info;
  $('digit-swap').textContent = `${fmtMs(r.swapMs)} (${state.merged ? 'in-place swap of merged weights' : 'O(1) pointer switch'})`;
  renderDigitChips();
  renderSizes();
  await refreshDigits(true);
}

$('merged').addEventListener('change', async (e) => {
  const on = e.target.checked;
  try {
    const r = await call('merged', { key: state.base, on });
    state.merged = on;
    state.bases[state.base].info = r.info;
    $('merged-note').textContent = on ? '(adapter folded into a copy of the weights)' : '(adapter applied on the fly)';
    $('digit-swap').textContent = `${fmtMs(r.swapMs)} (${on ? 'merge' : 'unmerge'})`;
    renderSizes();
    await refreshDigits(true);
  } catch (err) {
    e.target.checked = !on;
    showError('digit', err.message);
  }
});

function renderBars(host, labels, probs, top) {
  host.replaceChildren();
  labels.forEach((name, i) => {
    host.append(el('div', { class: `b${i === top ? ' top' : ''}` },
      el('span', { class: 'name', text: name }),
      el('span', { class: 'track' }, el('span', { class: 'fill', style: `width:${(probs[i] * 100).toFixed(1)}%` })),
      el('span', { class: 'pct', text: `${(probs[i] * 100).toFixed(1)}%` })));
  });
}

let running = false;
let again = null;
// Runs the current input through the active adapter (and, when `full`, through every
// adapter, plus a timing loop). Calls made while one is running coalesce into one more.
async function refreshDigits(full) {
  const x = modelInput();
  drawGrid(x);
  if (!state.bases[state.base]?.info) {
    if (!running) document.body.dataset.digitsBusy = '0';
    return;
  }
  if (running) {
    again = again || full;
    return;
  }
  running = true;
  document.body.dataset.digitsBusy = '1';
  try {
    const key = state.base;
    const r = await call('runVector', { key, input: x });
    const label = $('digit-label');
    label.textContent = clean(r.label);
    label.dataset.task = r.task;
    label.dataset.merged = String(r.merged);
    label.dataset.base = key;
    label.dataset.seq = String(++state.runSeq);
    $('digit-conf').textContent = `${(r.probabilities[r.index] * 100).toFixed(1)}% · ${clean(r.task)}`;
    renderBars($('digit-bars'), r.labels, r.probabilities, r.index);
    $('digit-latency').textContent = fmtMs(r.latencyMs);
    if (full) {
      const c = await call('compareVector', { key, input: x });
      renderCompare(c);
      const bench = await call('benchVector', { key, input: x, iterations: 300 });
      $('digit-latency').textContent =
        `${fmtUs(bench.meanMs)} mean of ${bench.iterations} runs (single run: ${fmtMs(r.latencyMs)})`;
      state.bases[key].info = await call('info', { key });
      renderSizes();
    }
  } catch (err) {
    showError('digit', err.message);
  } finally {
    running = false;
    if (again !== null) {
      const f = again;
      again = null;
      refreshDigits(f);
    } else {
      document.body.dataset.digitsBusy = '0';
    }
  }
}

function renderCompare(c) {
  const host = $('compare');
  host.replaceChildren();
  for (const row of c.rows) {
    const task = row.handle === null ? 'base' : row.task;
    host.append(el('div', { class: `c${task === state.task ? ' active' : ''}`, 'data-task': task },
      el('div', { class: 't', text: task }),
      el('div', { class: 'l', text: row.label }),
      el('div', { class: 't', text: `${(row.p * 100).toFixed(0)}%` })));
  }
  $('compare-time').textContent = `(${c.rows.length} switches and runs in ${fmtMs(c.totalMs)})`;
}

// ---- user adapters (drag and drop, file input) --------------------------------------------
function showError(kind, msg) {
  const e = $(`${kind}-error`);
  e.textContent = clean(msg);
  e.hidden = false;
  $(`${kind}-ok`).hidden = true;
}

async function addUserAdapter(kind, file) {
  const key = kind === 'digit' ? state.base : state.text.key;
  const bytes = await file.arrayBuffer();
  try {
    const r = await call('addAdapter', { key, bytes, name: file.name }, [bytes]);
    const task = r.info.adapters[r.handle].task;
    $(`${kind}-error`).hidden = true;
    const ok = $(`${kind}-ok`);
    ok.textContent = `Loaded ${clean(file.name)}: task "${clean(task)}", ${exactBytes(r.info.adapters[r.handle].fileBytes)}, ` +
      `validated and prepared in ${fmtMs(r.info.adapters[r.handle].prepareMs)}.`;
    ok.hidden = false;
    if (kind === 'digit') {
      state.bases[key].info = r.info;
      (state.userTasks[key] ||= []).push(task);
      await selectDigitTask(task);
    } else {
      state.text.info = r.info;
      await selectTextTask(task);
    }
  } catch (err) {
    // The worker and the model are untouched: the previous adapter keeps answering.
    showError(kind, err.message);
    if (kind === 'digit') await refreshDigits(false);
    else await refreshText();
  }
}

function wireDrop(kind) {
  const zone = $(`${kind}-drop`);
  const card = kind === 'digit' ? $('digits') : $('text');
  card.addEventListener('dragover', (e) => {
    e.preventDefault();
    zone.classList.add('over');
  });
  card.addEventListener('dragleave', (e) => {
    if (!card.contains(e.relatedTarget)) zone.classList.remove('over');
  });
  card.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    const f = e.dataTransfer?.files?.[0];
    if (f) addUserAdapter(kind, f);
  });
  $(`${kind}-file`).addEventListener('change', (e) => {
    const f = e.target.files?.[0];
    if (f) addUserAdapter(kind, f);
    e.target.value = '';
  });
}

// ---- text demo (MiniLM), when the build found its files ------------------------------------
const TEXT_NOTES = {
  sentiment: 'Sentiment: is the sentence positive or negative?',
  topic: 'Topic: what is the sentence about?',
  language: 'Language: which language is the sentence in?',
};

async function startText() {
  const t = state.manifest.text;
  if (!t) return;
  $('text').hidden = false;
  $('text-base-name').textContent = `${t.name}, ${fmtBytes(t.bytes)}`;
  progressHandlers.set(t.key, progress('text', 'text-progress-bar', 'text-progress-text', t.file.split('/').pop()));
  try {
    const r = await call('load', {
      key: t.key,
      url: t.file,
      adapters: t.adapters.map((a) => ({ url: a.file, name: a.file.split('/').pop() })),
    });
    state.text.info = r.info;
    state.text.ready = true;
    if (r.errors.length) showError('text', r.errors.join('\n'));
    $('text-progress').classList.add('done');
    $('text').setAttribute('aria-busy', 'false');
    const first = r.info.adapters[0]?.task ?? null;
    await selectTextTask(first);
  } catch (err) {
    $('text').setAttribute('aria-busy', 'false');
    $('text-progress-text').textContent = 'not available';
    showError('text', err.message);
  }
}

function renderTextChips() {
  const info = state.text.info;
  const host = $('text-adapters');
  host.replaceChildren();
  for (const t of ['base', ...info.adapters.map((a) => a.task)]) {
    host.append(el('button', {
      role: 'radio',
      'aria-checked': String(t === (state.text.task ?? 'base')),
      'data-task': t,
      onclick: () => selectTextTask(t === 'base' ? null : t),
    }, t));
  }
  const task = state.text.task;
  $('text-note').textContent = task
    ? TEXT_NOTES[task] || `Adapter "${clean(task)}".`
    : 'The bare base has no classification head: it outputs the pooled sentence embedding.';
}

async function selectTextTask(task) {
  const info = state.text.info;
  const a = task ? info.adapters.find((x) => x.task === task) : null;
  const r = await call('use', { key: state.text.key, handle: a ? a.handle : null });
  state.text.task = task;
  state.text.info = r.info;
  $('text-swap').textContent = fmtMs(r.swapMs);
  renderTextChips();
  renderSizes();
  await refreshText();
}

$('text-merged').addEventListener('change', async (e) => {
  const on = e.target.checked;
  try {
    const r = await call('merged', { key: state.text.key, on });
    state.text.merged = on;
    state.text.info = r.info;
    $('text-swap').textContent = `${fmtMs(r.swapMs)} (${on ? 'merge' : 'unmerge'})`;
    renderSizes();
    await refreshText();
  } catch (err) {
    e.target.checked = !on;
    showError('text', err.message);
  }
});

let textTimer = 0;
$('sentence').addEventListener('input', () => {
  clearTimeout(textTimer);
  textTimer = setTimeout(refreshText, 120);
});

async function refreshText() {
  if (!state.text.ready) return;
  try {
    const text = $('sentence').value;
    const r = await call('runText', { key: state.text.key, text });
    const label = $('text-label');
    if (state.text.task) {
      label.textContent = clean(r.label);
      $('text-conf').textContent = `${(r.probabilities[r.index] * 100).toFixed(1)}% · ${clean(r.task)}`;
      renderBars($('text-bars'), r.labels, r.probabilities, r.index);
    } else {
      label.textContent = `${r.output.length}-d`;
      $('text-conf').textContent = 'sentence embedding';
      $('text-bars').replaceChildren(el('div', { class: 'muted', text: `[${Array.from(r.output.slice(0, 6), (v) => v.toFixed(3)).join(', ')}, …]` }));
    }
    label.dataset.task = r.task;
    label.dataset.text = text;
    label.dataset.seq = String(++state.runSeq);
    $('text-latency').textContent = `${fmtMs(r.latencyMs)}${r.tokens ? ` for ${r.tokens} tokens` : ''}`;
  } catch (err) {
    showError('text', err.message);
  }
}

// ---- sizes --------------------------------------------------------------------------------
function renderSizes() {
  const body = $('sizes').tBodies[0];
  body.replaceChildren();
  const row = (what, detail, n, extra = '') => body.append(el('tr', {},
    el('td', { text: what }), el('td', { class: 'muted', text: detail }),
    el('td', { class: 'n', text: n }), el('td', { class: 'n muted', text: extra })));
  body.append(el('tr', {}, el('th', { text: 'item' }), el('th', { text: 'detail' }),
    el('th', { text: 'size' }), el('th', { text: '' })));
  const w = state.wasm?.threaded ? state.manifest.wasmThreads : state.manifest.wasm;
  row('WebAssembly module', `${w.file.split('/').slice(-2).join('/')}, wasm-opt -Oz${state.wasm?.threaded ? ', threads' : ''}`,
    exactBytes(w.bytes), `${exactBytes(w.gzipBytes)} gzipped`);
  row('JS glue', 'riffle_wasm.js (wasm-bindgen --target web)', w.glueBytes ? exactBytes(w.glueBytes) : '–',
    state.wasm ? `instantiated in ${fmtMs(state.wasm.instantiateMs)}` : '');
  const models = [];
  const digitInfo = state.bases[state.base]?.info;
  if (digitInfo) models.push([baseEntry(state.base), digitInfo]);
  if (state.text.info) models.push([state.manifest.text, state.text.info]);
  for (const [entry, info] of models) {
    row(`${entry.key} base`, `${entry.file.split('/').pop()} · ${info.architecture}, frozen`, exactBytes(info.modelBytes));
    for (const a of info.adapters) {
      row(`  ↳ ${a.task} adapter`, `${a.method}, b=${a.blockSize}, m=${a.factors}, ${a.parameters} values`,
        exactBytes(a.fileBytes), `${fmtBytes(a.workspaceBytes)} prepared`);
    }
    row(`  ${entry.key} arena`, 'activations and scratch of one run', exactBytes(info.arenaBytes),
      info.mergedBytes ? `merged weights ${fmtBytes(info.mergedBytes)}` : 'unmerged: no weight copy');
  }
  const mem = (models[models.length - 1] || [])[1]?.wasmMemoryBytes;
  if (mem) row('wasm memory', 'linear memory of the worker\'s module', exactBytes(mem));
}

// ---- threads ------------------------------------------------------------------------------
function showThreads(want, got) {
  let note = want.note;
  if (want.threads > 1 && got.threads === 1) {
    note = got.threadError ? `one thread: the Web Worker pool failed (${got.threadError})`
      : 'one thread: the threaded module was not built (scripts/build-www needs nightly)';
  }
  $('threads-note').textContent = note;
  document.body.dataset.threads = String(got.threads);
}

// ---- start --------------------------------------------------------------------------------
async function start() {
  clearPad();
  drawGrid(new Float32Array(64));
  try {
    const resp = await fetch('models/manifest.json');
    if (!resp.ok) throw new Error(`models/manifest.json: HTTP ${resp.status} (run scripts/build-www)`);
    state.manifest = await resp.json();
    renderBasePicker();
    progressHandlers.set('wasm', progress('wasm', 'base-progress-bar', 'base-progress-text', 'riffle_wasm_bg.wasm'));
    // Threads when the page is cross-origin isolated (scripts/serve-www) and the threaded
    // module was built; else the one-thread module, and the page says why.
    const want = pageThreads();
    state.wasm = await call('init', {
      wasmUrl: state.manifest.wasm.file,
      threadedUrl: state.manifest.wasmThreads?.file,
      threads: want.threads,
    });
    showThreads(want, state.wasm);
    wireDrop('digit');
    wireDrop('text');
    loadSample(0);
    await selectBase(state.base);
    document.body.dataset.ready = 'digits';
    await startText();
    document.body.dataset.ready = 'all';
  } catch (err) {
    fatal(err.message);
    showError('digit', err.message);
    document.body.dataset.ready = 'failed';
  }
}
start();
