// End-to-end test of the demo page in Debian's headless Chromium (playwright-core).
//
//   node www/test/page.test.mjs            (scripts/test-wasm runs it after scripts/build-www)
//
// Serves www/ with scripts/serve-www (cross-origin isolated: the threaded module) on a free 127.0.0.1 port, loads the page,
// waits for the model, classifies a sample digit and a drawn one, switches adapters and
// sees the label change, toggles merged weights, feeds a corrupt and a wrong-base adapter
// through the page's file input and sees the error while the previous adapter still
// answers, types a sentence when the MiniLM files were built, and saves screenshots under
// www/test/results/ (ignored).
//
// Environment: as www/test/harness.mjs (PLAYWRIGHT_CORE_DIR, CHROMIUM).
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fail, failures, launch, ok, results, root, serve, www } from './harness.mjs';

const t0 = Date.now();

// The text model cannot be committed, so its native outputs are computed here, by the
// same Engine built for the host (wasm/examples/native_outputs.rs), and the worker's
// wasm outputs must equal them within 1e-5: bare base and every adapter, unmerged and merged.
const LONG_SENTENCE = Array(8).fill('The committee reviewed the proposal carefully and, after a long discussion, decided to postpone the vote.').join(' ');
const SENTENCES = [
  'What a wonderful, heartwarming film. I loved every minute of it.',
  'The service was slow and the food arrived cold.',
  "Riffle swaps tiny adapters over one frozen model; café naïve ÉLAN 東京 🙂!",
];
async function textEqualsNative(page, manifest) {
  if (process.env.RIFFLE_SKIP_NATIVE === '1') {
    console.log('skip text wasm-vs-native check (RIFFLE_SKIP_NATIVE=1)');
    return;
  }
  const files = [manifest.text.file, ...manifest.text.adapters.map((a) => a.file)].map((f) => path.join(www, f));
  const args = ['run', '--release', '-q', '--locked', '-p', 'riffle-wasm', '--example', 'native_outputs', '--', ...files];
  for (const t of SENTENCES) args.push('--text', t);
  const native = await new Promise((resolve, reject) => {
    const p = spawn('cargo', args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.on('close', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`native_outputs exited ${code}`))));
  });
  const got = await page.evaluate(async (cases) => {
    const d = window.riffleDemo;
    const key = d.text.key;
    const info = await d.call('info', { key });
    const out = [];
    for (const c of cases) {
      await d.call('merged', { key, on: c.merged });
      const a = info.adapters.find((x) => x.task === c.task);
      await d.call('use', { key, handle: a ? a.handle : null });
      const r = await d.call('runText', { key, text: c.text });
      out.push({ output: Array.from(r.output), label: r.label, tokens: r.tokens });
    }
    // Back to what the page shows.
    await d.call('merged', { key, on: d.text.merged });
    const a = info.adapters.find((x) => x.task === d.text.task);
    await d.call('use', { key, handle: a ? a.handle : null });
    return out;
  }, native.cases);
  let worst = 0;
  let labelsAgree = true;
  native.cases.forEach((c, i) => {
    const g = got[i];
    if (g.output.length !== c.output.length || g.tokens !== c.tokens) worst = Infinity;
    c.output.forEach((v, j) => { worst = Math.max(worst, Math.abs(v - g.output[j])); });
    if (g.label !== c.label) labelsAgree = false;
  });
  ok(worst <= 1e-5 && labelsAgree,
    `text: wasm equals native on ${native.cases.length} runs (base + ${manifest.text.adapters.length} adapters, unmerged and merged): max |diff| ${worst.toExponential(2)}`);
}

const server = await serve();
const serverLog = server.log;
const base = `${server.base}/`;

let browser;
try {
  const manifest = JSON.parse(readFileSync(path.join(www, 'models/manifest.json'), 'utf8'));
  browser = await launch();
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 }, deviceScaleFactor: 1 });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));

  await page.goto(base);
  await page.waitForFunction(() => ['digits', 'all', 'failed'].includes(document.body.dataset.ready), null, { timeout: 60000 });
  ok(await page.evaluate(() => document.body.dataset.ready !== 'failed'), 'page loads the wasm module and the digits base');
  const progressText = await page.textContent('#base-progress-text');
  ok(/MLP.*loaded/.test(progressText), `progress line reports the base: "${progressText}"`);
  ok(await page.evaluate(() => getComputedStyle(document.querySelector('#base-progress-bar')).width !== '0px'),
    'progress bar filled');

  // Waits for a digits result newer than `after`, optionally with a given task/merged state.
  async function digitResult(after, want = {}) {
    await page.waitForFunction(([seq, w]) => {
      if (document.body.dataset.digitsBusy !== '0') return false;
      const l = document.querySelector('#digit-label');
      if (Number(l.dataset.seq || 0) <= seq) return false;
      if (w.task && l.dataset.task !== w.task) return false;
      if (w.base && l.dataset.base !== w.base) return false;
      if (w.merged !== undefined && l.dataset.merged !== String(w.merged)) return false;
      if (w.label && l.textContent !== w.label) return false;
      return true;
    }, [after, want], { timeout: 15000 });
    return page.evaluate(() => {
      const l = document.querySelector('#digit-label');
      return { label: l.textContent, task: l.dataset.task, merged: l.dataset.merged, base: l.dataset.base, seq: Number(l.dataset.seq) };
    });
  }
  const seq = () => page.evaluate(() => Number(document.querySelector('#digit-label').dataset.seq || 0));

  // 1. The first held-out sample (a 2; golden label 2) through the bare base.
  let r = await digitResult(0, { task: 'base' });
  ok(r.label === '2', `sample digit through the base: "${r.label}" (want 2)`);
  const gridCounts = await page.evaluate(() => Array.from(window.riffleDemo.raw));
  ok(gridCounts.length === 64 && gridCounts.every((v) => Number.isInteger(v) && v >= 0 && v <= 16),
    '8x8 input holds counts 0..16');
  await page.waitForFunction(() => document.querySelectorAll('#compare .c').length === 5);
  ok(true, 'compare row shows the base and 4 adapters');

  // 2. Parity brings its own head: even.
  let s = await seq();
  await page.click('#digit-adapters [data-task="parity"]');
  r = await digitResult(s, { task: 'parity' });
  ok(r.label === 'even', `parity adapter on a 2: "${r.label}" (want even)`);
  const swapText = await page.textContent('#digit-swap');
  ok(/ms/.test(swapText), `swap time shown: "${swapText}"`);

  // 3. Rotate the input: the base is lost, the rotated adapter reads it.
  s = await seq();
  await page.click('#digit-adapters [data-task="base"]');
  r = await digitResult(s, { task: 'base' });
  s = r.seq;
  await page.click('#transforms [data-t="rotate"]');
  r = await digitResult(s, { task: 'base' });
  const baseOnRotated = r.label;
  s = r.seq;
  await page.click('#digit-adapters [data-task="rotated"]');
  r = await digitResult(s, { task: 'rotated' });
  ok(r.label === '2', `rotated adapter on the rotated 2: "${r.label}" (the base said "${baseOnRotated}")`);
  ok(baseOnRotated !== r.label, 'switching adapter changes the label');

  // 4. Merged weights give the same answers; swaps happen in place.
  s = r.seq;
  await page.click('label.switch:has(#merged)');
  r = await digitResult(s, { task: 'rotated', merged: true });
  ok(r.label === '2', `merged rotated adapter: "${r.label}"`);
  s = r.seq;
  await page.click('#transforms [data-t="rotate"]');
  await page.click('#digit-adapters [data-task="parity"]');
  r = await digitResult(s, { task: 'parity', merged: true, label: 'even' });
  ok(r.label === 'even', `merged, swapped in place to parity: "${r.label}"`);

  // 5. A corrupt adapter through the file input: error shown, parity keeps answering.
  const good = readFileSync(path.join(root, 'models/digits/mlp-noisy.gguf'));
  const corrupt = Buffer.from(good);
  corrupt[corrupt.length - 100] ^= 0x10;
  s = await seq();
  await page.setInputFiles('#digit-file', { name: 'corrupt.gguf', mimeType: 'application/octet-stream', buffer: corrupt });
  await page.waitForSelector('#digit-error:not([hidden])', { timeout: 10000 });
  let err = await page.textContent('#digit-error');
  ok(/^corrupt\.gguf: CRC mismatch/.test(err), `corrupt adapter rejected: "${err}"`);
  r = await digitResult(s, { task: 'parity' });
  ok(r.label === 'even' && r.merged === 'true', `previous adapter still answers: "${r.label}" (${r.task}, merged ${r.merged})`);
  const chipsAfter = await page.$$eval('#digit-adapters button', (b) => b.map((x) => x.dataset.task));
  ok(chipsAfter.length === 5, `no adapter was added (${chipsAfter.join(', ')})`);

  // 6. An adapter for the other base.
  s = await seq();
  await page.setInputFiles('#digit-file', {
    name: 'cnn-rotated.gguf', mimeType: 'application/octet-stream',
    buffer: readFileSync(path.join(root, 'models/digits/cnn-rotated.gguf')),
  });
  await page.waitForFunction(() => /cnn-rotated/.test(document.querySelector('#digit-error').textContent));
  err = await page.textContent('#digit-error');
  ok(/adapter is for a `cnn` base/.test(err), `wrong-base adapter rejected: "${err}"`);
  r = await digitResult(s, { task: 'parity' });
  ok(r.label === 'even', 'previous adapter still answers after the second bad file');

  // 6b. Drag and drop (a synthetic drop event with a DataTransfer): a truncated file.
  s = await seq();
  const half = Array.from(good.subarray(0, good.length >> 1));
  await page.evaluate((bytes) => {
    const dt = new DataTransfer();
    dt.items.add(new File([new Uint8Array(bytes)], 'half.gguf'));
    const zone = document.querySelector('#digit-drop');
    zone.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
    zone.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, half);
  await page.waitForFunction(() => /^half\.gguf: /.test(document.querySelector('#digit-error').textContent));
  err = await page.textContent('#digit-error');
  ok(/^half\.gguf: file is truncated or corrupt/.test(err), `dropped truncated adapter rejected: "${err}"`);
  r = await digitResult(s, { task: 'parity' });
  ok(r.label === 'even', 'previous adapter still answers after the dropped file');

  // 6c. Strings from files are shown with control and bidi characters escaped (issue 23):
  // a corrupt file whose name carries an escape sequence and a right-to-left override.
  s = await seq();
  await page.setInputFiles('#digit-file', { name: 'evil\u001b[2J\u202egguf.gguf', mimeType: 'application/octet-stream', buffer: corrupt });
  await page.waitForFunction(() => /^evil/.test(document.querySelector('#digit-error').textContent));
  err = await page.textContent('#digit-error');
  ok(!/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/.test(err) && err.includes('\\u001b[2J\\u202e'),
    `file strings escaped on the page: "${err}"`);
  r = await digitResult(s, { task: 'parity' });
  ok(r.label === 'even', 'previous adapter still answers after the escaped file');

  // 7. Draw a digit with the mouse (a 7): the 8x8 downsampling fills, a digit comes out.
  await page.click('#digit-adapters [data-task="base"]');
  await page.click('#clear');
  const box = await page.locator('#pad').boundingBox();
  const P = (x, y) => [box.x + x * box.width, box.y + y * box.height];
  s = await seq();
  await page.mouse.move(...P(0.25, 0.18));
  await page.mouse.down();
  for (const [x, y] of [[0.5, 0.18], [0.75, 0.18], [0.65, 0.45], [0.55, 0.65], [0.45, 0.85]]) {
    await page.mouse.move(...P(x, y), { steps: 6 });
  }
  await page.mouse.up();
  r = await digitResult(s, { task: 'base' });
  const drawn = await page.evaluate(() => Array.from(window.riffleDemo.raw));
  const inked = drawn.filter((v) => v > 0).length;
  for (let i = 0; i < 8; i++) console.log(`     ${drawn.slice(i * 8, i * 8 + 8).map((v) => String(v).padStart(2)).join(' ')}`);
  ok(inked >= 6 && inked <= 40, `drawing downsampled to 8x8: ${inked} inked cells`);
  ok(/^[0-9]$/.test(r.label), `drawn digit classified as "${r.label}"`);

  // 8. The CNN base: same UI, its own adapters.
  s = await seq();
  await page.click('#sample'); // the first held-out sample again (a 2)
  await page.click('#base-picker [data-base="cnn"]');
  r = await digitResult(s, { task: 'base', base: 'cnn' });
  ok(r.label === '2', `CNN base on the sample: "${r.label}" (want 2)`);
  await page.waitForFunction(() => document.querySelector('#sizes').textContent.includes('cnn base'));
  const sizes = await page.textContent('#sizes');
  ok(/WebAssembly module/.test(sizes) && /15,616 B/.test(sizes) && /3,648 B/.test(sizes),
    'sizes table lists the wasm module, the CNN base and its adapters');

  // 9. Text (MiniLM) when the build found its files.
  if (manifest.text) {
    await page.waitForFunction(() => document.body.dataset.ready === 'all', null, { timeout: 180000 });
    const textErr = await page.$eval('#text-error', (e) => (e.hidden ? '' : e.textContent));
    const textRequired = process.env.RIFFLE_TEXT_OPTIONAL !== '1';
    if (textErr) {
      ok(!textRequired, `text demo: ${textErr}`);
    } else {
      const tasks = await page.$$eval('#text-adapters button', (b) => b.map((x) => x.dataset.task));
      ok(tasks.length >= 1, `text adapters: ${tasks.join(', ')}`);
      const textResult = async (sentence, task) => {
        const before = await seq();
        if (task) await page.click(`#text-adapters [data-task="${task}"]`);
        await page.fill('#sentence', sentence);
        await page.waitForFunction(([sq, t, text]) => {
          const l = document.querySelector('#text-label');
          return Number(l.dataset.seq || 0) > sq && (!t || l.dataset.task === t) && l.dataset.text === text;
        }, [before, task, sentence], { timeout: 30000 });
        return page.textContent('#text-label');
      };
      if (tasks.includes('sentiment')) {
        const pos = await textResult('What a wonderful, heartwarming film. I loved every minute of it.', 'sentiment');
        const neg = await textResult('A dull, painful mess. I hated every minute and want my money back.', 'sentiment');
        ok(pos !== neg, `sentiment: positive sentence -> "${pos}", negative -> "${neg}"`);
      }
      if (tasks.includes('language')) {
        const lang = await textResult('Le chat dort sur le canapé depuis ce matin.', 'language');
        ok(lang.length > 0, `language of a French sentence: "${lang}"`);
      }
      if (tasks.includes('topic')) {
        const topic = await textResult('The central bank raised interest rates again to fight inflation.', 'topic');
        ok(topic.length > 0, `topic of a finance sentence: "${topic}"`);
      }
      await textEqualsNative(page, manifest);
      if (tasks.includes('sentiment')) {
        await textResult('What a wonderful, heartwarming film. I loved every minute of it.', 'sentiment');
      }
    }
  } else {
    console.log('skip text demo: the build found no MiniLM files (models/minilm/)');
  }

  // Measurements for docs/wasm.md, inside the worker (performance.now() is coarse, so
  // means over many runs): inference per base and adapter, switch times, text latency.
  const measured = await page.evaluate(async ({ hasText, sentences }) => {
    const d = window.riffleDemo;
    const out = { digits: {}, text: null };
    const x = new Float32Array(64).map((_, i) => ((i * 7) % 17) / 16);
    for (const key of ['mlp', 'cnn']) {
      const info = await d.call('info', { key });
      const m = { unmerged: {}, merged: {}, swapUnmergedMs: {}, swapMergedMs: {}, mergeMs: null };
      for (const merged of [false, true]) {
        const t = await d.call('merged', { key, on: merged });
        if (merged) m.mergeMs = t.swapMs;
        for (const h of [null, ...info.adapters.map((a) => a.handle)]) {
          const task = h === null ? 'base' : info.adapters[h].task;
          await d.call('use', { key, handle: null });
          (merged ? m.swapMergedMs : m.swapUnmergedMs)[task] = h === null ? 0 : (await d.call('benchSwap', { key, handle: h, rounds: 200 })).meanMs;
          await d.call('use', { key, handle: h });
          m[merged ? 'merged' : 'unmerged'][task] = (await d.call('benchVector', { key, input: x, iterations: 2000 })).meanMs;
        }
      }
      await d.call('merged', { key, on: false });
      await d.call('use', { key, handle: null });
      out.digits[key] = m;
    }
    if (hasText) {
      const key = d.text.key;
      const info = await d.call('info', { key });
      out.text = { runs: [] };
      for (const h of [null, ...info.adapters.map((a) => a.handle)]) {
        await d.call('use', { key, handle: h });
        for (const s of sentences) {
          const r = await d.call('benchText', { key, text: s, iterations: 3 });
          out.text.runs.push({ task: h === null ? 'base' : info.adapters[h].task, tokens: r.tokens, meanMs: r.meanMs });
        }
      }
      const a = info.adapters.find((x) => x.task === d.text.task);
      await d.call('use', { key, handle: a ? a.handle : null });
      out.text.wasmMemoryBytes = (await d.call('info', { key })).wasmMemoryBytes;
    }
    return out;
  }, { hasText: !!manifest.text && (await page.$eval('#text-error', (e) => e.hidden)), sentences: [SENTENCES[0], LONG_SENTENCE] });
  mkdirSync(results, { recursive: true });
  writeFileSync(path.join(results, 'measurements.json'), JSON.stringify(measured, null, 1));
  for (const [key, m] of Object.entries(measured.digits)) {
    const f = (o) => Object.entries(o).map(([t, v]) => `${t} ${(v * 1000).toFixed(1)}`).join(', ');
    console.log(`measure ${key}: inference µs unmerged: ${f(m.unmerged)}`);
    console.log(`measure ${key}: inference µs merged:   ${f(m.merged)}`);
    console.log(`measure ${key}: switch µs unmerged: ${f(m.swapUnmergedMs)}; merged (in-place swap): ${f(m.swapMergedMs)}; enable merged ${m.mergeMs.toFixed(2)} ms`);
  }
  if (measured.text) {
    for (const r of measured.text.runs) console.log(`measure text ${r.task}: ${r.tokens} tokens ${r.meanMs.toFixed(1)} ms`);
    console.log(`measure text: wasm memory ${measured.text.wasmMemoryBytes} bytes`);
  }

  // 10. Back to a good-looking state for the screenshot: MLP, sample 2 rotated, rotated adapter.
  s = await seq();
  await page.click('#base-picker [data-base="mlp"]');
  r = await digitResult(s, { task: 'base', base: 'mlp' });
  s = r.seq;
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.click('#digit-adapters [data-task="rotated"]');
  await page.click('#transforms [data-t="rotate"]');
  r = await digitResult(s, { task: 'rotated' });
  await page.waitForTimeout(300);

  ok(pageErrors.length === 0, `no page errors${pageErrors.length ? `: ${pageErrors.join(' | ')}` : ''}`);
  const outside = requests.filter((u) => !u.startsWith(base) && !u.startsWith('data:'));
  ok(outside.length === 0, `no request leaves 127.0.0.1${outside.length ? `: ${outside.join(', ')}` : ''}`);

  mkdirSync(results, { recursive: true });
  await page.screenshot({ path: path.join(results, 'www-demo-full.png'), fullPage: true });
  await page.screenshot({ path: path.join(results, 'www-demo.png') });
  // Both demos, without the sizes table (the README / docs screenshot).
  const bottom = await page.evaluate(() => {
    const t = document.querySelector('#text');
    const d = document.querySelector('#digits');
    const r = (t.hidden ? d : t).getBoundingClientRect();
    return Math.ceil(r.bottom + window.scrollY + 16);
  });
  await page.screenshot({ path: path.join(results, 'www-demos.png'), clip: { x: 0, y: 0, width: 1200, height: bottom }, fullPage: true });
  console.log(`screenshots: ${path.relative(root, results)}/www-demo.png, www-demos.png, www-demo-full.png`);
} catch (e) {
  fail();
  console.log(`FAIL ${e.stack || e}`);
  if (serverLog.length) console.log(serverLog.slice(-5).join(''));
} finally {
  await browser?.close();
  server.proc.kill();
}
console.log(`page test: ${failures() ? `${failures()} failure(s)` : 'all passed'} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
process.exit(failures() ? 1 : 0);
