// CPU time of riffle's wasm MiniLM forward in V8 (node), for comparing builds of the small
// module without a browser. The least CPU time over N runs resists a busy machine far better
// than wall time (the process's own cycles, not its waits).
//
//   node bench/browser/minilm-node.mjs www/pkg [runs] [model.gguf] [adapter.gguf] [tokens]
//
// `www/pkg` is a wasm-bindgen --target web output (scripts/build-www writes one). Prints the
// token count, then the least and the median CPU time of `runs` forwards, in ms; with an
// adapter, base and unmerged forwards alternate and both are printed, with the ratio of
// their least times. `tokens` (default 118 words, 134 tokens) sets the text's length in
// words.
import { readFileSync } from 'node:fs';
import path from 'node:path';

const pkg = path.resolve(process.argv[2] || 'www/pkg');
const runs = Number(process.argv[3] || 12);
const model = process.argv[4] || 'models/minilm/minilm-f32.gguf';
const mod = await import(path.join(pkg, 'riffle_wasm.js'));
await mod.default({ module_or_path: readFileSync(path.join(pkg, 'riffle_wasm_bg.wasm')) });
const m = new mod.RiffleModel(readFileSync(model), 'minilm');
const adapter = process.argv[5];
const words = Number(process.argv[6] || 118);
const handle = adapter ? m.addAdapter(readFileSync(adapter), 'a') : null;
const text = 'the quick brown fox jumps over the lazy dog while riffle runs adapters on the edge '
  .repeat(40).split(' ').slice(0, words).join(' ');
console.log('tokens', m.runText(text).tokens);
for (let i = 0; i < 3; i++) m.runText(text);
const kinds = adapter ? [null, handle] : [null];
const t = kinds.map(() => []);
for (let i = 0; i < runs; i++) {
  kinds.forEach((h, j) => {
    if (adapter) m.useAdapter(h);
    const a = process.cpuUsage();
    m.runText(text);
    const d = process.cpuUsage(a);
    t[j].push((d.user + d.system) / 1000);
  });
}
t.forEach((v) => v.sort((a, b) => a - b));
kinds.forEach((h, j) => {
  const label = adapter ? (h === null ? 'base ' : 'unmerged ') : '';
  console.log(`${label}cpu min ${t[j][0].toFixed(1)} median ${t[j][runs >> 1].toFixed(1)} ms`);
});
if (adapter) console.log(`unmerged / base (least times) ${(t[1][0] / t[0][0]).toFixed(3)}`);
