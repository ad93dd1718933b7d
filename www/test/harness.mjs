// What the browser tests share (page.test.mjs, chat.test.mjs, threads.test.mjs): paths,
// playwright-core and Debian's Chromium, the ok/FAIL counter, and the project's static
// server (scripts/serve-www) on a free 127.0.0.1 port.
//
// Environment: PLAYWRIGHT_CORE_DIR (folder whose node_modules has playwright-core;
// default ~/.cache/riffle/npm), CHROMIUM (default /usr/bin/chromium).
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const www = path.resolve(here, '..');
export const root = path.resolve(www, '..');
export const results = path.join(here, 'results');
const pwDir = process.env.PLAYWRIGHT_CORE_DIR || path.join(os.homedir(), '.cache/riffle/npm');
const { chromium } = createRequire(path.join(pwDir, 'package.json'))('playwright-core');

// Prints one check and counts the failures (`failures()`).
let failed = 0;
export function ok(cond, what) {
  console.log(`${cond ? 'ok  ' : 'FAIL'} ${what}`);
  if (!cond) failed++;
}
export const failures = () => failed;
export const fail = () => { failed++; };

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

// scripts/serve-www on www/ (cross-origin isolated unless `isolated` is false), once it
// answers: {proc, base ('http://127.0.0.1:PORT'), log (its stderr lines)}.
export async function serve({ isolated = true } = {}) {
  const port = await freePort();
  const args = [path.join(root, 'scripts/serve-www'), String(port), '--directory', www];
  if (!isolated) args.push('--no-isolation');
  const proc = spawn('python3', args, { stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, RIFFLE_SERVE_QUIET: '1' } });
  const log = [];
  proc.stderr.on('data', (d) => log.push(String(d)));
  const base = `http://127.0.0.1:${port}`;
  const end = Date.now() + 15000;
  for (;;) {
    try { if ((await fetch(`${base}/threads.js`)).ok) break; } catch { /* not up yet */ }
    if (Date.now() > end) throw new Error(`scripts/serve-www at ${base} did not start: ${log.join('')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { proc, base, log };
}

// Headless Chromium for a closed network.
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

// The France question in SmolLM2's chat template (its default system line), and the ids
// llama.cpp's llama-tokenize gives for it (as wasm-chat/tests/native.rs).
export const SYSTEM = 'You are a helpful AI assistant named SmolLM, trained by Hugging Face';
export const FRANCE_TEXT = `<|im_start|>system\n${SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n`;
export const FRANCE_IDS = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407,
  19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198];
