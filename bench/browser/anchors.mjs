// Browser anchors: riffle's wasm against the browser runtimes a web user would pick
// instead, in the same headless Chromium run, at each thread count (1 and 2 by default).
//
//   node bench/browser/anchors.mjs IN.json > OUT.json      (bench/anchors.py runs it)
//
// IN.json: {
//   budget_s, rounds, threads: [1, 2],
//   minilm: { text, ids, model (GGUF, repo-relative), onnx (repo-relative) } | null,
//   llm:    { model (GGUF, repo-relative), prompt_text, prompt_ids, gen_tokens } | null }
//
// The server sends COOP/COEP, so the page is cross-origin isolated: SharedArrayBuffer,
// hence threads, for all three runtimes. One page per thread count n, each with its own
// runtimes: riffle as the demo runs it (www/worker.js and www/chat-worker.js in Web
// Workers; n > 1: the threaded modules www/pkg-mt, www/pkg-chat-mt and a pool of n - 1
// more Workers; n = 1: the one-thread modules), onnxruntime-web's wasm backend with
// numThreads n, wllama with n_threads n. Rounds alternate between the thread counts and,
// inside a page, between the runtimes.
//
// MiniLM: riffle's runText (timed inside its worker, per call) against onnxruntime-web on
// the ONNX export of the same model (bench/onnx_export.py) fed the same ids (timed around
// session.run on the page); median wall time of each per round, and the cosine of the
// two sentence embeddings.
// LLM: riffle's chat module (`ChatModel.benchIds`: the prompt in one step, then one step
// per greedy token) against wllama (llama.cpp in wasm, npm @wllama/wllama) on the same
// GGUF file: wllama reads prompt_text (its own tokenizer), riffle the ids llama.cpp's
// llama-tokenize gives for it; greedy, gen_tokens tokens, end tokens ignored; wllama's
// own timings (llama-server's prompt_ms / predicted_ms).
//
// A small node server serves the repository root and /npm/ (the bench npm folder:
// RIFFLE_BENCH_NPM_DIR, default ~/.cache/riffle/bench-npm). Environment:
// PLAYWRIGHT_CORE_DIR (default ~/.cache/riffle/npm), CHROMIUM (default /usr/bin/chromium).
import { createRequire } from 'node:module';
import { createReadStream, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const pwDir = process.env.PLAYWRIGHT_CORE_DIR || path.join(os.homedir(), '.cache/riffle/npm');
const npmDir = process.env.RIFFLE_BENCH_NPM_DIR || path.join(os.homedir(), '.cache/riffle/bench-npm');
const { chromium } = createRequire(path.join(pwDir, 'package.json'))('playwright-core');
const log = (...a) => process.stderr.write(`[anchors] ${a.join(' ')}\n`);

const TYPES = {
  '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm',
  '.json': 'application/json', '.gguf': 'application/octet-stream', '.onnx': 'application/octet-stream',
};

/** Serves root and /npm/ from the bench npm folder; nothing outside those two trees. */
function serve() {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    let rel = decodeURIComponent(url.pathname);
    let base = root;
    if (rel.startsWith('/npm/')) { base = path.join(npmDir, 'node_modules'); rel = rel.slice(4); }
    const file = path.resolve(base, '.' + rel);
    if (!file.startsWith(base + path.sep)) { res.writeHead(403).end(); return; }
    let st;
    try { st = statSync(file); } catch { res.writeHead(404).end(); return; }
    if (!st.isFile()) { res.writeHead(404).end(); return; }
    res.writeHead(200, {
      'content-type': TYPES[path.extname(file)] || 'application/octet-stream',
      'content-length': st.size,
      // Cross-origin isolation (as scripts/serve-www): SharedArrayBuffer, wasm threads.
      'cross-origin-opener-policy': 'same-origin',
      'cross-origin-embedder-policy': 'require-corp',
      'cross-origin-resource-policy': 'same-origin',
    });
    createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const median = (v) => { const s = [...v].sort((a, b) => a - b); const n = s.length; return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; };

const server = await serve();
const base = `http://127.0.0.1:${server.address().port}`;
const userDir = mkdtempSync(path.join(os.tmpdir(), 'riffle-anchors-chromium-'));
let browser;
const out = {};
try {
  browser = await chromium.launchPersistentContext(userDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const counts = cfg.threads || [1, 2];
  const pages = {};
  for (const n of counts) {
    const page = n === counts[0] ? (browser.pages()[0] || await browser.newPage()) : await browser.newPage();
    page.on('console', (m) => log(`page ${n}:`, m.text()));
    await page.goto(`${base}/bench/browser/index.html`);
    // Message clients for the demo's two workers, kept on window.
    await page.evaluate(() => {
      const client = (url, done) => {
        const w = new Worker(url, { type: 'module' });
        let next = 0;
        return (msg) => new Promise((resolve, reject) => {
          const id = ++next;
          const h = ({ data }) => {
            if (data.id !== id) return;
            if (data.type === 'progress') return;
            w.removeEventListener('message', h);
            if (data.ok === false || data.type === 'error') reject(new Error(data.error || data.message));
            else resolve(done(data));
          };
          w.addEventListener('message', h);
          w.postMessage({ ...msg, id });
        });
      };
      window.riffle = client('/www/worker.js', (d) => d.result);
      window.chat = client('/www/chat-worker.js', (d) => d);
    });
    pages[n] = page;
  }
  const page0 = pages[counts[0]];
  out.chromium = browser.browser() ? browser.browser().version() : '';
  out.userAgent = await page0.evaluate(() => navigator.userAgent);
  out.crossOriginIsolated = await page0.evaluate(() => self.crossOriginIsolated);
  out.hardwareConcurrency = await page0.evaluate(() => navigator.hardwareConcurrency);
  out.threads = counts;

  if (cfg.minilm) {
    const m = cfg.minilm;
    out.onnxruntime_web = JSON.parse(readFileSync(path.join(npmDir, 'node_modules/onnxruntime-web/package.json'), 'utf8')).version;
    out.minilm = { tokens: m.ids.length, setup: {}, rows: {} };
    for (const n of counts) {
      const setup = await pages[n].evaluate(async ({ m, n }) => {
        const get = async (p) => new Uint8Array(await (await fetch('/' + p)).arrayBuffer());
        const init = await window.riffle({ op: 'init', wasmUrl: 'pkg/riffle_wasm_bg.wasm',
          threadedUrl: 'pkg-mt/riffle_wasm_bg.wasm', threads: n });
        const loaded = await window.riffle({ op: 'load', key: 'minilm', url: '/' + m.model });
        const ort = await import('/npm/onnxruntime-web/dist/ort.wasm.min.mjs');
        ort.env.wasm.numThreads = n;
        ort.env.wasm.wasmPaths = '/npm/onnxruntime-web/dist/';
        window.ort = ort;
        window.sess = await ort.InferenceSession.create(await get(m.onnx),
          { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
        const k = m.ids.length;
        window.feeds = {
          input_ids: new ort.Tensor('int64', BigInt64Array.from(m.ids.map(BigInt)), [1, k]),
          attention_mask: new ort.Tensor('int64', new BigInt64Array(k).fill(1n), [1, k]),
        };
        const a = await window.riffle({ op: 'runText', key: 'minilm', text: m.text });
        const b = (await window.sess.run(window.feeds)).sentence_embedding.data;
        let dot = 0, na = 0, nb = 0;
        for (let i = 0; i < a.output.length; i++) { dot += a.output[i] * b[i]; na += a.output[i] ** 2; nb += b[i] ** 2; }
        return { riffleTokens: a.tokens, cosine: dot / Math.sqrt(na * nb), dims: [a.output.length, b.length],
          riffleThreads: loaded.info.threads, riffleThreaded: init.threaded, threadError: init.threadError,
          wasmMemoryBytes: loaded.info.wasmMemoryBytes };
      }, { m, n });
      log(`minilm set up, ${n} thread(s):`, JSON.stringify(setup));
      out.minilm.setup[n] = setup;
      out.minilm.rows[n] = { riffle_ms: [], ort_ms: [] };
    }
    for (let r = 0; r < cfg.rounds; r++) {
      for (const n of counts) {
        const t = await pages[n].evaluate(async ({ text, budget }) => {
          const riffle = (await window.riffle({ op: 'timeText', key: 'minilm', text, budgetMs: budget * 1000 })).ms;
          for (let i = 0; i < 2; i++) await window.sess.run(window.feeds); // warm-up
          const ort = [];
          const end = performance.now() + budget * 1000;
          while (ort.length < 3 || (performance.now() < end && ort.length < 200)) {
            const a = performance.now(); await window.sess.run(window.feeds); ort.push(performance.now() - a);
          }
          return { riffle, ort };
        }, { text: m.text, budget: cfg.budget_s });
        out.minilm.rows[n].riffle_ms.push(median(t.riffle));
        out.minilm.rows[n].ort_ms.push(median(t.ort));
        log(`minilm round ${r + 1}/${cfg.rounds}, ${n} thread(s): riffle ${median(t.riffle).toFixed(1)} ms, ` +
          `onnxruntime-web ${median(t.ort).toFixed(1)} ms`);
      }
    }
    for (const n of counts) await pages[n].evaluate(() => window.sess.release());
  }

  if (cfg.llm) {
    const l = cfg.llm;
    out.wllama = JSON.parse(readFileSync(path.join(npmDir, 'node_modules/@wllama/wllama/package.json'), 'utf8')).version;
    out.llm = { prompt_tokens: l.prompt_ids.length, gen_tokens: l.gen_tokens, setup: {}, rows: {} };
    for (const n of counts) {
      out.llm.setup[n] = await pages[n].evaluate(async ({ l, n }) => {
        const file = '/' + l.model;
        const loaded = await window.chat({ type: 'load', url: file, context: 1024, threads: n,
          threadedUrl: 'pkg-chat-mt/riffle_chat_bg.wasm' });
        const { Wllama } = await import('/npm/@wllama/wllama/esm/index.js');
        const wasm = '/npm/@wllama/wllama/esm/wasm/wllama.wasm';
        window.wl = new Wllama({ default: wasm, 'wllama.wasm': wasm, 'single-thread/wllama.wasm': wasm,
          'multi-thread/wllama.wasm': wasm }, { suppressNativeLog: true });
        await window.wl.loadModelFromUrl(file, { n_threads: n, n_ctx: 1024, n_batch: 512, n_gpu_layers: 0, useCache: false });
        return { riffleThreads: loaded.info.threads, threadError: loaded.threadError,
          wllamaThreads: window.wl.getNumThreads(), wllamaMultithread: window.wl.isMultithread() };
      }, { l, n });
      log(`llm set up, ${n} thread(s):`, JSON.stringify(out.llm.setup[n]));
      out.llm.rows[n] = [];
    }
    for (let r = 0; r < cfg.rounds; r++) {
      for (const n of counts) {
        const row = await pages[n].evaluate(async (l) => {
          const rf = await window.chat({ type: 'bench', ids: l.prompt_ids, n: l.gen_tokens });
          const wl = await window.wl.createCompletion({ prompt: l.prompt_text, max_tokens: l.gen_tokens, temperature: 0,
            ignore_eos: true, cache_prompt: false, stream: false });
          return { riffle: { promptMs: rf.promptMs, decodeMs: rf.decodeMs, tokens: rf.tokens, text: rf.text },
            wllama: { text: wl.choices[0].text, timings: wl.timings } };
        }, l);
        out.llm.rows[n].push(row);
        log(`llm round ${r + 1}/${cfg.rounds}, ${n} thread(s): riffle prompt ${row.riffle.promptMs.toFixed(0)} ms, ` +
          `decode ${row.riffle.decodeMs.toFixed(0)} ms; wllama prompt ${row.wllama.timings?.prompt_ms?.toFixed(0)} ms ` +
          `(${row.wllama.timings?.prompt_n} tokens), decode ${row.wllama.timings?.predicted_ms?.toFixed(0)} ms ` +
          `(${row.wllama.timings?.predicted_n} tokens)`);
      }
    }
    for (const n of counts) await pages[n].evaluate(() => window.wl.exit());
  }
  process.stdout.write(JSON.stringify(out) + '\n');
} finally {
  if (browser) await browser.close();
  server.close();
  rmSync(userDir, { recursive: true, force: true });
}
