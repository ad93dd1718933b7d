// The chat worker (www/chat-worker.js, the chat module www/pkg-chat) in Debian's headless
// Chromium (playwright-core), driven by messages from a page:
//
//   node www/test/chat.test.mjs            (scripts/test-wasm runs it when build-www linked
//                                           a SmolLM2 file into www/models/smollm2)
//
// Loads the SmolLM2 file from the page's origin through the worker's streaming upload
// (progress messages, wasm memory against the file size), renders the France question
// with the file's chat template, generates greedily from llama.cpp's ids for it (the chat
// module has no tokenizer yet) and expects "Paris", streamed piece by piece; Stop ends
// the generation within one token; a corrupt, a truncated and a wrong-base adapter each
// give an error and the next message still answers "Paris". Prints the measurements and
// writes them to www/test/results/chat.json.
//
// Environment: as www/test/harness.mjs (PLAYWRIGHT_CORE_DIR, CHROMIUM).
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { FRANCE_IDS, FRANCE_TEXT, SYSTEM, failures, launch, ok, results, serve, www } from './harness.mjs';

const manifest = JSON.parse(readFileSync(path.join(www, 'models/manifest.json'), 'utf8'));
if (!manifest.chat) {
  console.log('chat test skipped: no SmolLM2 file in www/models/smollm2 (scripts/smollm2, then scripts/build-www)');
  process.exit(0);
}

const server = await serve();
const { base } = server;
const browser = await launch();
const measured = {};
try {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const offsite = [];
  page.on('request', (r) => { if (!r.url().startsWith(base)) offsite.push(r.url()); });
  await page.goto(`${base}/models/manifest.json`);
  // A message client for the worker, kept on window.
  await page.evaluate(() => {
    const w = new Worker('/chat-worker.js', { type: 'module' });
    let next = 0;
    window.chat = (msg, onEvent) => new Promise((resolve, reject) => {
      const id = ++next;
      const h = ({ data }) => {
        if (data.id !== id) return;
        if (onEvent) onEvent(data);
        if (['loaded', 'adapter', 'used', 'rendered', 'encoded', 'done'].includes(data.type)) { w.removeEventListener('message', h); resolve(data); }
        if (data.type === 'error') { w.removeEventListener('message', h); reject(new Error(data.message)); }
      };
      w.addEventListener('message', h);
      w.postMessage({ ...msg, id });
    });
    window.stopChat = () => w.postMessage({ type: 'stop' });
  });

  // 1. load through the streaming upload
  const load = await page.evaluate(async (url) => {
    const progress = [];
    const t0 = performance.now();
    const r = await window.chat({ type: 'load', url, context: 1024 }, (e) => { if (e.type === 'progress') progress.push(e.received); });
    return { ms: performance.now() - t0, progress, info: r.info };
  }, '/' + manifest.chat.file);
  const info = load.info;
  ok(load.progress.length >= 2 && load.progress.at(-1) === manifest.chat.bytes,
    `model streamed into the worker (${load.progress.length} progress messages, ${manifest.chat.bytes} bytes, ${load.ms.toFixed(0)} ms)`);
  const over = info.wasmMemoryBytes - info.modelBytes - info.stateBytes;
  ok(over < 32 * 1048576,
    `wasm memory ${info.wasmMemoryBytes} B = file ${info.modelBytes} + state ${info.stateBytes} + ${over} B (one copy of the file)`);
  Object.assign(measured, { loadMs: load.ms, wasmMemoryBytes: info.wasmMemoryBytes, modelBytes: info.modelBytes,
    stateBytes: info.stateBytes, threads: info.threads });

  // 2. the chat template and the France question, greedy, streamed
  const rendered = await page.evaluate((s) => window.chat({ type: 'render', messages: [
    { role: 'system', content: s }, { role: 'user', content: 'What is the capital of France?' }] }), SYSTEM);
  ok(rendered.text === FRANCE_TEXT, 'chat template rendered as llama.cpp tokenized it');
  const encoded = await page.evaluate((t) => window.chat({ type: 'encode', text: t }), FRANCE_TEXT);
  ok(JSON.stringify(encoded.ids) === JSON.stringify(FRANCE_IDS), 'the worker tokenizes it to llama.cpp\'s ids');
  const ask = () => page.evaluate(async (ids) => {
    const pieces = [];
    const r = await window.chat({ type: 'generate', ids, maxTokens: 24 }, (e) => { if (e.type === 'piece') pieces.push(e.text); });
    return { pieces, reason: r.reason, timings: r.info.timings };
  }, FRANCE_IDS);
  const a = await ask();
  const text = a.pieces.join('');
  ok(/Paris/.test(text), `greedy answer names Paris: ${JSON.stringify(text)}`);
  ok(a.pieces.length === a.timings.tokens && a.pieces.length > 3, `streamed ${a.pieces.length} pieces (${a.reason})`);
  const tps = (a.timings.tokens - 1) / (a.timings.decodeMs / 1000);
  console.log(`  prompt ${a.timings.promptTokens} tokens in ${a.timings.promptMs.toFixed(0)} ms; ` +
    `${a.timings.tokens} tokens, ${tps.toFixed(1)} tokens/s`);
  Object.assign(measured, { promptTokens: a.timings.promptTokens, promptMs: a.timings.promptMs,
    tokens: a.timings.tokens, decodeMs: a.timings.decodeMs, answer: text });

  // 3. Stop within one token
  const s = await page.evaluate(async (ids) => {
    let pieces = 0; let atStop = -1;
    const r = await window.chat({ type: 'generate', ids, maxTokens: 200 }, (e) => {
      if (e.type !== 'piece') return;
      pieces++;
      if (pieces === 3) { atStop = pieces; window.stopChat(); }
    });
    return { pieces, atStop, reason: r.reason };
  }, FRANCE_IDS);
  ok(s.reason === 'cancelled' && s.pieces - s.atStop <= 1,
    `Stop after piece ${s.atStop}: ${s.pieces} pieces in all (${s.reason})`);

  // 4. bad adapters: an error each, the chat goes on
  const bad = await page.evaluate(async () => {
    const get = async (p) => new Uint8Array(await (await fetch(p)).arrayBuffer());
    const good = await get('/models/digits/mlp-rotated.gguf');
    const corrupt = good.slice(); corrupt[corrupt.length - 3] ^= 0x55;
    const out = [];
    for (const [bytes, name] of [[corrupt, 'corrupt.gguf'], [good.slice(0, good.length >> 1), 'half.gguf'],
      [good, 'mlp-rotated.gguf'], [new TextEncoder().encode('not a gguf file'), 'junk.gguf']]) {
      try { await window.chat({ type: 'adapter', bytes: bytes.buffer, name }); out.push(`${name}: accepted`); }
      catch (e) { out.push(e.message); }
    }
    return out;
  });
  ok(bad[0].startsWith('corrupt.gguf: '), `corrupt adapter refused: ${bad[0]}`);
  ok(bad[1].startsWith('half.gguf: '), `truncated adapter refused: ${bad[1]}`);
  ok(bad[2].startsWith('mlp-rotated.gguf: adapter is for a `mlp` base'), `wrong-base adapter refused: ${bad[2]}`);
  ok(bad[3].startsWith('junk.gguf: '), `junk refused: ${bad[3]}`);
  const again = await ask();
  ok(/Paris/.test(again.pieces.join('')), 'the next message still answers Paris');
  // The engine keeps whole prompt chunks of 32 (so a reused prompt is read as a fresh one).
  const reusable = Math.floor((FRANCE_IDS.length - 1) / 32) * 32;
  ok(again.timings.reusedTokens === reusable, `conversation prefix reused (${again.timings.reusedTokens} of ${reusable} tokens)`);

  // 5. an adapter made for this base (www/test/make_chat_adapter.py: random rotations, not
  //    a trained task): validated, switched to between messages, compared with the base,
  //    and a copy with one data byte flipped refused by its CRC
  if (existsSync(path.join(results, 'chat-random.gguf'))) {
    const sw = await page.evaluate(async (ids) => {
      const bytes = new Uint8Array(await (await fetch('/test/results/chat-random.gguf')).arrayBuffer());
      const corrupt = bytes.slice(); corrupt[corrupt.length - 5] ^= 0x55;
      let corruptMsg = '';
      try { await window.chat({ type: 'adapter', bytes: corrupt.buffer, name: 'random-corrupt.gguf' }); } catch (e) { corruptMsg = e.message; }
      const added = await window.chat({ type: 'adapter', bytes: bytes.buffer, name: 'chat-random.gguf' });
      const answer = async () => {
        const pieces = [];
        const r = await window.chat({ type: 'generate', ids, maxTokens: 16 }, (e) => { if (e.type === 'piece') pieces.push(e.text); });
        return { text: pieces.join(''), timings: r.info.timings };
      };
      await window.chat({ type: 'use', handle: added.handle });
      const adapted = await answer();
      await window.chat({ type: 'use', handle: null });
      const bare = await answer();
      return { corruptMsg, ms: added.ms, adapter: added.info.adapters[0], adapted, bare };
    }, FRANCE_IDS);
    ok(/CRC mismatch/.test(sw.corruptMsg), `corrupt adapter for this base refused: ${sw.corruptMsg}`);
    ok(sw.adapter.task === 'random' && sw.adapter.description.length > 0,
      `adapter listed: ${sw.adapter.task} (${sw.adapter.description}), prepared in ${sw.ms.toFixed(0)} ms`);
    ok(sw.adapted.text !== sw.bare.text && sw.adapted.timings.reusedTokens === 0,
      `with the adapter (state re-read): ${JSON.stringify(sw.adapted.text)}`);
    ok(/Paris/.test(sw.bare.text) && sw.bare.timings.reusedTokens === 0, `without it again: ${JSON.stringify(sw.bare.text)}`);
  } else {
    console.log('skip adapter switching: www/test/results/chat-random.gguf is missing (scripts/test-wasm makes it)');
  }

  // 5b. a trained task adapter (models/smollm2-adapters, when build-www copied them): the
  //     language task answers with the language's name, the bare base does not
  const lang = (manifest.chat.adapters || []).find((a) => a.task === 'language');
  if (lang) {
    const t = await page.evaluate(async (file) => {
      const bytes = await (await fetch('/' + file)).arrayBuffer();
      const added = await window.chat({ type: 'adapter', bytes, name: file.split('/').pop() });
      const ask = async (content) => {
        const pieces = [];
        await window.chat({ type: 'generate', messages: [{ role: 'user', content }], maxTokens: 8 },
          (e) => { if (e.type === 'piece') pieces.push(e.text); });
        return pieces.join('');
      };
      await window.chat({ type: 'use', handle: added.handle });
      const fr = await ask('Où te trouves-tu');
      const es = await ask('En muchos sentidos soy bastante inmaduro.');
      await window.chat({ type: 'use', handle: null });
      const bare = await ask('Où te trouves-tu');
      return { fr, es, bare };
    }, lang.file);
    ok(/^\s*french\b/i.test(t.fr) && /^\s*spanish\b/i.test(t.es),
      `language adapter answers in its format: ${JSON.stringify(t.fr)}, ${JSON.stringify(t.es)}`);
    ok(!/^\s*french\b/i.test(t.bare), `the bare base does not: ${JSON.stringify(t.bare)}`);
  } else {
    console.log('skip the task format check: no trained SmolLM2 adapters in www/models/smollm2');
  }

  // 6. the chat panel on the demo page, end to end
  const ui = await browser.newPage({ viewport: { width: 1180, height: 900 } });
  ui.on('pageerror', (e) => errors.push(String(e)));
  ui.on('request', (r) => { if (!r.url().startsWith(base)) offsite.push(r.url()); });
  await ui.goto(`${base}/`);
  await ui.waitForSelector('#chat:not([hidden])');
  await ui.click('#chat-open');
  await ui.waitForSelector('#chat-send:not([disabled])', { timeout: 180000 });
  ok((await ui.textContent('#chat-progress-text')).startsWith('loaded'), `panel loaded the model: ${await ui.textContent('#chat-progress-text')}`);
  const sendAndWait = async (q) => {
    await ui.fill('#chat-input', q);
    await ui.click('#chat-send');
    await ui.waitForSelector('#chat-send[disabled]');
    await ui.waitForSelector('#chat-send:not([disabled])', { timeout: 180000 });
    return ui.$$eval('#chat-log .msg.assistant .body', (b) => b.at(-1).textContent);
  };
  const chips = await ui.$$eval('#chat-adapters button', (b) => b.map((x) => x.textContent));
  ok(chips.length === 1 + (manifest.chat.adapters || []).length, `panel lists the tasks: ${chips.join(', ')}`);
  const first = await sendAndWait('What is the capital of France?');
  ok(/Paris/.test(first), `panel: the France question answers ${JSON.stringify(first)}`);
  ok(/tokens\/s/.test(await ui.textContent('#chat-stats')), `panel stats: ${await ui.textContent('#chat-stats')}`);
  await ui.locator('#chat').screenshot({ path: path.join(results, 'www-chat.png') });
  // Stop: a long answer, stopped after its first pieces
  await ui.fill('#chat-input', 'Write a long story about a dragon who learns to bake bread.');
  await ui.click('#chat-send');
  await ui.waitForFunction(() => {
    const b = [...document.querySelectorAll('#chat-log .msg.assistant .body')].at(-1);
    return b && b.textContent.length > 20 && !b.textContent.startsWith('reading');
  }, null, { timeout: 180000 });
  await ui.click('#chat-stop');
  await ui.waitForSelector('#chat-send:not([disabled])', { timeout: 30000 });
  ok((await ui.$$eval('#chat-log .msg.assistant', (m) => m.at(-1).textContent)).includes('[stopped]'), 'panel: Stop ends the answer');
  // a corrupt adapter dropped on the panel: an error, and the chat keeps answering
  if (existsSync(path.join(results, 'chat-random.gguf'))) {
    const good = readFileSync(path.join(results, 'chat-random.gguf'));
    const bad = Buffer.from(good); bad[bad.length - 5] ^= 0x55;
    await ui.setInputFiles('#chat-file', { name: 'corrupt.gguf', mimeType: 'application/octet-stream', buffer: bad });
    await ui.waitForSelector('#chat-error:not([hidden])');
    ok(/CRC mismatch/.test(await ui.textContent('#chat-error')), `panel: ${await ui.textContent('#chat-error')}`);
    await ui.setInputFiles('#chat-file', { name: 'random.gguf', mimeType: 'application/octet-stream', buffer: good });
    await ui.waitForSelector('#chat-adapters button:has-text("random")');
    ok(true, 'panel: a good adapter file adds its task chip');
  }
  const after = await sendAndWait('What is the capital of France?');
  ok(/Paris/.test(after), `panel: the next message still answers ${JSON.stringify(after)}`);
  await ui.close();

  ok(errors.length === 0, `no page errors ${errors.join('; ')}`);
  ok(offsite.length === 0, `no request left 127.0.0.1 ${offsite.join(' ')}`);
  measured.chromium = browser.version();
  mkdirSync(results, { recursive: true });
  writeFileSync(path.join(results, 'chat.json'), JSON.stringify(measured, null, 1) + '\n');
} finally {
  await browser.close();
  server.proc.kill();
}
if (failures()) {
  console.log(`chat test: ${failures()} failure(s)`);
  process.exit(1);
}
console.log('chat test: all passed');
