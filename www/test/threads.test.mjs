// Threads in the browser (www/threads.js, the threaded modules www/pkg-mt and
// www/pkg-chat-mt) in Debian's headless Chromium (playwright-core):
//
//   node www/test/threads.test.mjs         (scripts/test-wasm runs it after build-www)
//
// Serves www/ twice with scripts/serve-www: cross-origin isolated (COOP/COEP) and with
// --no-isolation. On each, the page asks for 2 threads (?threads=2):
// - isolated: the page says "2 threads", the digits / MiniLM worker runs the threaded
//   module on a pool of Web Workers, the chat worker too;
// - not isolated: the page falls back to one thread and says "one thread: page not
//   cross-origin isolated";
// and the results are the same: MiniLM's outputs (bare base and each adapter) equal to
// the bit, the chat's greedy tokens for the France question identical (and "Paris").
//
// Environment: as www/test/harness.mjs (PLAYWRIGHT_CORE_DIR, CHROMIUM).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { FRANCE_IDS, failures, launch, ok, results, serve, www } from './harness.mjs';

const manifest = JSON.parse(readFileSync(path.join(www, 'models/manifest.json'), 'utf8'));
if (!manifest.wasmThreads) {
  console.log('threads test: FAIL: no threaded module in the manifest (scripts/build-www needs nightly with rust-src)');
  process.exit(1);
}

const SENTENCE = 'The committee reviewed the proposal carefully and decided to postpone the vote until spring.';

// Runs in the page: the digits / MiniLM worker (worker.js) driven by its messages.
async function minilmIn(page) {
  return page.evaluate(async ({ manifest, sentence }) => {
    const w = new Worker('/worker.js', { type: 'module' });
    let next = 0;
    const call = (op, args = {}) => new Promise((resolve, reject) => {
      const id = ++next;
      const h = ({ data }) => {
        if (data.id !== id) return;
        w.removeEventListener('message', h);
        if (data.ok) resolve(data.result); else reject(new Error(data.error));
      };
      w.addEventListener('message', h);
      w.postMessage({ id, op, ...args });
    });
    const init = await call('init', { wasmUrl: manifest.wasm.file, threadedUrl: manifest.wasmThreads.file, threads: 2 });
    const out = { init };
    if (manifest.text) {
      const t = manifest.text;
      const loaded = await call('load', { key: 'minilm', url: t.file,
        adapters: t.adapters.map((a) => ({ url: a.file, name: a.file.split('/').pop() })) });
      out.threads = loaded.info.threads;
      out.runs = [];
      for (const h of [null, ...loaded.info.adapters.map((a) => a.handle)]) {
        await call('use', { key: 'minilm', handle: h });
        const r = await call('runText', { key: 'minilm', text: sentence });
        out.runs.push({ task: r.task, output: Array.from(r.output) });
      }
    }
    w.terminate();
    return out;
  }, { manifest, sentence: SENTENCE });
}

// Runs in the page: the chat worker, greedy on the France question.
async function chatIn(page) {
  return page.evaluate(async ({ manifest, ids }) => {
    const w = new Worker('/chat-worker.js', { type: 'module' });
    let next = 0;
    const chat = (msg, onEvent) => new Promise((resolve, reject) => {
      const id = ++next;
      const h = ({ data }) => {
        if (data.id !== id) return;
        if (onEvent) onEvent(data);
        if (['loaded', 'done'].includes(data.type)) { w.removeEventListener('message', h); resolve(data); }
        if (data.type === 'error') { w.removeEventListener('message', h); reject(new Error(data.message)); }
      };
      w.addEventListener('message', h);
      w.postMessage({ ...msg, id });
    });
    const loaded = await chat({ type: 'load', url: '/' + manifest.chat.file, context: 1024, threads: 2,
      threadedUrl: manifest.chatWasmThreads?.file });
    const tokens = [];
    const pieces = [];
    const done = await chat({ type: 'generate', ids, maxTokens: 24 }, (e) => {
      if (e.type === 'piece') { tokens.push(e.token); pieces.push(e.text); }
    });
    w.terminate();
    return { threads: loaded.info.threads, threadError: loaded.threadError, tokens, text: pieces.join(''),
      timings: done.info.timings };
  }, { manifest, ids: FRANCE_IDS });
}

const browser = await launch();
const servers = [];
const seen = {};
try {
  for (const isolated of [true, false]) {
    const s = await serve({ isolated });
    servers.push(s);
    const mode = isolated ? 'isolated' : 'not isolated';
    const page = await browser.newPage({ viewport: { width: 1180, height: 900 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${s.base}/?threads=2`);
    await page.waitForFunction(() => ['all', 'failed'].includes(document.body.dataset.ready), null, { timeout: 300000 });
    const isolatedSeen = await page.evaluate(() => self.crossOriginIsolated);
    ok(isolatedSeen === isolated, `${mode}: crossOriginIsolated is ${isolatedSeen}`);
    const note = await page.textContent('#threads-note');
    const threads = Number(await page.getAttribute('body', 'data-threads'));
    if (isolated) {
      ok(threads === 2 && /^2 threads/.test(note), `${mode}: the page runs 2 threads and says so: "${note}"`);
    } else {
      ok(threads === 1 && note === 'one thread: page not cross-origin isolated', `${mode}: the page falls back to one thread and says so: "${note}"`);
    }
    ok(await page.getAttribute('body', 'data-ready') === 'all', `${mode}: digits and text demos ready`);
    const chatNote = await page.textContent('#chat-threads');
    ok(isolated ? /2 threads/.test(chatNote) : /one thread: page not cross-origin isolated/.test(chatNote),
      `${mode}: the chat heading says ${JSON.stringify(chatNote)}`);

    const m = await minilmIn(page);
    ok(m.init.threads === (isolated ? 2 : 1) && m.init.threaded === isolated,
      `${mode}: worker.js runs the ${m.init.threaded ? 'threaded' : 'one-thread'} module on ${m.init.threads} thread(s)${m.init.threadError ? ` (${m.init.threadError})` : ''}`);
    if (manifest.text) ok(m.threads === (isolated ? 2 : 1), `${mode}: the MiniLM model reports ${m.threads} thread(s)`);
    seen[mode] = { minilm: m };
    if (manifest.chat) {
      const c = await chatIn(page);
      ok(c.threads === (isolated ? 2 : 1), `${mode}: the chat model runs on ${c.threads} thread(s)${c.threadError ? ` (${c.threadError})` : ''}`);
      ok(/Paris/.test(c.text), `${mode}: greedy answer ${JSON.stringify(c.text)}`);
      const tps = (c.timings.tokens - 1) / (c.timings.decodeMs / 1000);
      console.log(`  ${mode}: prompt ${c.timings.promptTokens} tokens in ${c.timings.promptMs.toFixed(0)} ms, ${tps.toFixed(1)} tokens/s`);
      seen[mode].chat = c;
    }
    if (isolated) {
      mkdirSync(results, { recursive: true });
      await page.locator('#chat').screenshot({ path: path.join(results, 'www-threads-chat-closed.png') });
    }
    ok(errors.length === 0, `${mode}: no page errors ${errors.join('; ')}`);
    await page.close();
  }
  const [a, b] = [seen.isolated, seen['not isolated']];
  if (manifest.text) {
    const same = a.minilm.runs.length === b.minilm.runs.length && a.minilm.runs.length > 1 &&
      a.minilm.runs.every((r, i) => r.task === b.minilm.runs[i].task && r.output.length === b.minilm.runs[i].output.length &&
        r.output.every((v, j) => Object.is(v, b.minilm.runs[i].output[j])));
    ok(same, `MiniLM: 2 threads give the one-thread outputs bit for bit (${a.minilm.runs.map((r) => r.task).join(', ')})`);
  }
  if (manifest.chat) {
    ok(JSON.stringify(a.chat.tokens) === JSON.stringify(b.chat.tokens) && a.chat.tokens.length > 3,
      `chat: 2 threads generate the one-thread tokens (${a.chat.tokens.length} tokens)`);
  }
  writeFileSync(path.join(results, 'threads.json'), JSON.stringify({
    chromium: browser.version(),
    chat: Object.fromEntries(Object.entries(seen).map(([k, v]) => [k, v.chat && { threads: v.chat.threads, timings: v.chat.timings }])),
  }, null, 1) + '\n');
} finally {
  await browser.close();
  for (const s of servers) s.proc.kill();
}
if (failures()) {
  console.log(`threads test: ${failures()} failure(s)`);
  process.exit(1);
}
console.log('threads test: all passed');
