// riffle in headless Chromium (wasm) against riffle native, interleaved, on the same texts.
//
//   node bench/browser/bench.mjs IN.json > OUT.json      (bench/run.py runs it)
//
// IN.json: { texts: {seq: text}, rounds, budget_s, riffle, model, adapter }.
// Serves the repository root on 127.0.0.1 (python3 -m http.server), loads
// www/pkg/riffle_wasm.js (scripts/build-www) and the MiniLM F32 GGUF into a blank page,
// then per round and sequence length: runText on the page for about budget_s seconds
// (median wall time around the call, and the core's own latencyMs), then `riffle bench`
// (native, same length) as a child process, so both see the same machine load.
// Environment: PLAYWRIGHT_CORE_DIR (folder whose node_modules has playwright-core),
// CHROMIUM (default /usr/bin/chromium).
import { execFileSync, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const pwDir = process.env.PLAYWRIGHT_CORE_DIR || path.join(os.homedir(), '.cache/riffle/npm');
const { chromium } = createRequire(path.join(pwDir, 'package.json'))('playwright-core');

const median = (v) => { const s = [...v].sort((a, b) => a - b); const n = s.length; return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; };

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

async function waitForServer(url, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try { const r = await fetch(url); if (r.ok) return; } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`server at ${url} did not start`);
}

const port = await freePort();
const server = spawn('python3', ['-m', 'http.server', String(port), '--bind', '127.0.0.1', '--directory', root],
  { stdio: 'ignore' });
const userDir = mkdtempSync(path.join(os.tmpdir(), 'riffle-bench-chromium-'));
let browser;
try {
  const base = `http://127.0.0.1:${port}`;
  await waitForServer(`${base}/bench/browser/index.html`, 15000);
  browser = await chromium.launchPersistentContext(userDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = browser.pages()[0] || await browser.newPage();
  await page.goto(`${base}/bench/browser/index.html`);
  const version = browser.browser() ? browser.browser().version() : '';
  const setup = await page.evaluate(async ({ model, adapter, pkg }) => {
    const m = await import(pkg + '/riffle_wasm.js');
    await m.default();
    const get = async (p) => new Uint8Array(await (await fetch(p)).arrayBuffer());
    const t0 = performance.now();
    window.rm = new m.RiffleModel(await get('/' + model), model.split('/').pop());
    const loadMs = performance.now() - t0;
    window.handle = window.rm.addAdapter(await get('/' + adapter), adapter.split('/').pop());
    return { loadMs, userAgent: navigator.userAgent, info: JSON.parse(JSON.stringify(window.rm.info())) };
  }, { model: cfg.model, adapter: cfg.adapter, pkg: cfg.pkg || '/www/pkg' });

  // outputs of the base on each text (checked against native by bench/run.py)
  const outputs = {};
  for (const [seq, text] of Object.entries(cfg.texts)) {
    outputs[seq] = await page.evaluate((t) => {
      window.rm.useAdapter(null);
      const r = window.rm.runText(t);
      return { tokens: r.tokens, output: Array.from(r.output) };
    }, text);
  }

  // warm-up: let the engine tier the module up (Liftoff -> TurboFan) before timing
  for (const text of Object.values(cfg.texts)) {
    await page.evaluate((t) => {
      for (const h of [null, window.handle, null]) { window.rm.useAdapter(h); window.rm.runText(t); }
    }, text);
  }

  const rows = {};
  for (const seq of Object.keys(cfg.texts)) rows[seq] = { wasm_wall_ms: [], wasm_core_ms: [], wasm_unmerged_ms: [], native_base_ms: [], native_unmerged_ms: [] };
  for (let r = 0; r < cfg.rounds; r++) {
    for (const [seq, text] of Object.entries(cfg.texts)) {
      const w = await page.evaluate(({ t, budget }) => {
        const time = (h) => {
          window.rm.useAdapter(h);
          window.rm.runText(t); // warm-up
          const wall = []; const core = [];
          const end = performance.now() + budget * 1000;
          while (wall.length < 3 || (performance.now() < end && wall.length < 500)) {
            const a = performance.now();
            const res = window.rm.runText(t);
            wall.push(performance.now() - a);
            core.push(res.latencyMs);
          }
          return { wall, core };
        };
        const base = time(null);
        const unm = time(window.handle);
        window.rm.useAdapter(null);
        return { base, unm };
      }, { t: text, budget: cfg.budget_s });
      rows[seq].wasm_wall_ms.push(median(w.base.wall));
      rows[seq].wasm_core_ms.push(median(w.base.core));
      rows[seq].wasm_unmerged_ms.push(median(w.unm.wall));
      const out = execFileSync(cfg.riffle, ['bench', '--model', cfg.model, '--adapter', cfg.adapter, '--seq', seq,
        '--budget', String(cfg.budget_s), '--threads', '1', '--json'], { cwd: root, encoding: 'utf8' });
      const nat = JSON.parse(out.trim().split('\n')[0]);
      rows[seq].native_base_ms.push(nat.base_ms);
      rows[seq].native_unmerged_ms.push(nat.unmerged_ms);
    }
    process.stderr.write(`[bench] browser round ${r + 1}/${cfg.rounds}\n`);
  }
  process.stdout.write(JSON.stringify({ chromium: version, ...setup, outputs, rows }) + '\n');
} finally {
  if (browser) await browser.close();
  server.kill();
  rmSync(userDir, { recursive: true, force: true });
}
