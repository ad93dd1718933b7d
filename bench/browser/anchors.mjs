// Browser anchors: riffle's wasm against the browser runtimes a web user would pick
// instead, in the same headless Chromium run, one thread each.
//
//   node bench/browser/anchors.mjs IN.json > OUT.json      (bench/anchors.py runs it)
//
// IN.json: {
//   budget_s, rounds,
//   minilm: { text, ids, model (GGUF, repo-relative), onnx (repo-relative) } | null,
//   llm:    { model (GGUF, repo-relative), prompt_text, prompt_ids, gen_tokens } | null,
//   riffle_pkg: '/www/pkg', chat_pkg: '/www/pkg-chat' }
//
// MiniLM: riffle's `RiffleModel.runText` (the small module, www/pkg) against
// onnxruntime-web's wasm backend on the ONNX export of the same model (bench/onnx_export.py),
// numThreads 1, fed the same ids; median wall time of each per round, rounds interleaved,
// and the cosine of the two sentence embeddings.
// LLM: riffle's chat module (www/pkg-chat, `ChatModel.benchIds`: the prompt in one step,
// then one step per greedy token) against wllama (llama.cpp in wasm, npm @wllama/wllama,
// n_threads 1) on the same GGUF file: wllama reads prompt_text (its own tokenizer), riffle
// the ids llama.cpp's llama-tokenize gives for it; greedy, gen_tokens tokens, end tokens
// ignored; wllama's own timings (llama-server's prompt_ms / predicted_ms).
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
  const page = browser.pages()[0] || await browser.newPage();
  page.on('console', (m) => log('page:', m.text()));
  await page.goto(`${base}/bench/browser/index.html`);
  out.chromium = browser.browser() ? browser.browser().version() : '';
  out.userAgent = await page.evaluate(() => navigator.userAgent);
  out.crossOriginIsolated = await page.evaluate(() => self.crossOriginIsolated);
  out.threads = 1;

  if (cfg.minilm) {
    const m = cfg.minilm;
    out.onnxruntime_web = JSON.parse(readFileSync(path.join(npmDir, 'node_modules/onnxruntime-web/package.json'), 'utf8')).version;
    const setup = await page.evaluate(async ({ m, pkg }) => {
      const get = async (p) => new Uint8Array(await (await fetch('/' + p)).arrayBuffer());
      const r = await import(pkg + '/riffle_wasm.js');
      await r.default();
      window.rm = new r.RiffleModel(await get(m.model), m.model.split('/').pop());
      const ort = await import('/npm/onnxruntime-web/dist/ort.wasm.min.mjs');
      ort.env.wasm.numThreads = 1;
      ort.env.wasm.wasmPaths = '/npm/onnxruntime-web/dist/';
      window.ort = ort;
      window.sess = await ort.InferenceSession.create(await get(m.onnx),
        { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
      const n = m.ids.length;
      window.feeds = {
        input_ids: new ort.Tensor('int64', BigInt64Array.from(m.ids.map(BigInt)), [1, n]),
        attention_mask: new ort.Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]),
      };
      const a = window.rm.runText(m.text);
      const b = (await window.sess.run(window.feeds)).sentence_embedding.data;
      let dot = 0, na = 0, nb = 0;
      for (let i = 0; i < a.output.length; i++) { dot += a.output[i] * b[i]; na += a.output[i] ** 2; nb += b[i] ** 2; }
      return { riffleTokens: a.tokens, cosine: dot / Math.sqrt(na * nb), dims: [a.output.length, b.length],
        wasmMemoryBytes: window.rm.info().wasmMemoryBytes };
    }, { m, pkg: cfg.riffle_pkg || '/www/pkg' });
    log('minilm set up:', JSON.stringify(setup));
    const rows = { riffle_ms: [], ort_ms: [] };
    for (let r = 0; r < cfg.rounds; r++) {
      const t = await page.evaluate(async ({ text, budget }) => {
        const riffle = []; const ort = [];
        for (let i = 0; i < 2; i++) { window.rm.runText(text); await window.sess.run(window.feeds); } // warm-up
        let end = performance.now() + budget * 1000;
        while (riffle.length < 3 || (performance.now() < end && riffle.length < 200)) {
          const a = performance.now(); window.rm.runText(text); riffle.push(performance.now() - a);
        }
        end = performance.now() + budget * 1000;
        while (ort.length < 3 || (performance.now() < end && ort.length < 200)) {
          const a = performance.now(); await window.sess.run(window.feeds); ort.push(performance.now() - a);
        }
        return { riffle, ort };
      }, { text: m.text, budget: cfg.budget_s });
      rows.riffle_ms.push(median(t.riffle));
      rows.ort_ms.push(median(t.ort));
      log(`minilm round ${r + 1}/${cfg.rounds}: riffle ${median(t.riffle).toFixed(1)} ms, onnxruntime-web ${median(t.ort).toFixed(1)} ms`);
    }
    out.minilm = { tokens: m.ids.length, ...setup, rows };
    await page.evaluate(() => { window.rm.free(); window.sess.release(); });
  }

  if (cfg.llm) {
    const l = cfg.llm;
    out.wllama = JSON.parse(readFileSync(path.join(npmDir, 'node_modules/@wllama/wllama/package.json'), 'utf8')).version;
    const res = await page.evaluate(async ({ l, pkg, rounds }) => {
      const file = '/' + l.model;
      const c = await import(pkg + '/riffle_chat.js');
      await c.default();
      const bytes = new Uint8Array(await (await fetch(file)).arrayBuffer());
      const model = c.ChatModel.fromBytes(bytes, l.model.split('/').pop(), 1024);
      const { Wllama } = await import('/npm/@wllama/wllama/esm/index.js');
      const wasm = '/npm/@wllama/wllama/esm/wasm/wllama.wasm';
      const w = new Wllama({ default: wasm, 'wllama.wasm': wasm, 'single-thread/wllama.wasm': wasm,
        'multi-thread/wllama.wasm': wasm }, { suppressNativeLog: true });
      await w.loadModelFromUrl(file, { n_threads: 1, n_ctx: 1024, n_batch: 512, n_gpu_layers: 0, useCache: false });
      const ids = Uint32Array.from(l.prompt_ids);
      const rows = [];
      for (let r = 0; r < rounds; r++) {
        const rf = model.benchIds(ids, l.gen_tokens);
        rf.text = model.decode(Uint32Array.from(rf.tokens));
        const wl = await w.createCompletion({ prompt: l.prompt_text, max_tokens: l.gen_tokens, temperature: 0,
          ignore_eos: true, cache_prompt: false, stream: false });
        rows.push({ riffle: rf, wllama: { text: wl.choices[0].text, timings: wl.timings } });
      }
      const threads = w.getNumThreads();
      const multithread = w.isMultithread();
      await w.exit();
      return { rows, wllamaThreads: threads, wllamaMultithread: multithread,
        info: JSON.parse(JSON.stringify(model.info())) };
    }, { l, pkg: cfg.chat_pkg || '/www/pkg-chat', rounds: cfg.rounds });
    for (const row of res.rows) {
      log(`llm: riffle prompt ${row.riffle.promptMs.toFixed(0)} ms, decode ${row.riffle.decodeMs.toFixed(0)} ms; ` +
        `wllama prompt ${row.wllama.timings?.prompt_ms?.toFixed(0)} ms (${row.wllama.timings?.prompt_n} tokens), ` +
        `decode ${row.wllama.timings?.predicted_ms?.toFixed(0)} ms (${row.wllama.timings?.predicted_n} tokens)`);
    }
    out.llm = { prompt_tokens: l.prompt_ids.length, gen_tokens: l.gen_tokens, ...res };
  }
  process.stdout.write(JSON.stringify(out) + '\n');
} finally {
  if (browser) await browser.close();
  server.close();
  rmSync(userDir, { recursive: true, force: true });
}
