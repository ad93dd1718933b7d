// CPU time of riffle's wasm MiniLM forward in V8 (node), for comparing builds of the small
// module without a browser. The least CPU time over N runs resists a busy machine far better
// than wall time (the process's own cycles, not its waits).
//
//   node bench/browser/minilm-node.mjs www/pkg [runs] [model.gguf]
//
// `www/pkg` is a wasm-bindgen --target web output (scripts/build-www writes one). Prints the
// token count, then the least and the median CPU time of `runs` forwards, in ms.
import { readFileSync } from 'node:fs';
import path from 'node:path';

const pkg = path.resolve(process.argv[2] || 'www/pkg');
const runs = Number(process.argv[3] || 12);
const model = process.argv[4] || 'models/minilm/minilm-f32.gguf';
const mod = await import(path.join(pkg, 'riffle_wasm.js'));
await mod.default({ module_or_path: readFileSync(path.join(pkg, 'riffle_wasm_bg.wasm')) });
const m = new mod.RiffleModel(readFileSync(model), 'minilm');
const text = 'the quick brown fox jumps over the lazy dog while riffle runs adapters on the edge '
  .repeat(12).split(' ').slice(0, 118).join(' ');
console.log('tokens', m.runText(text).tokens);
for (let i = 0; i < 3; i++) m.runText(text);
const t = [];
for (let i = 0; i < runs; i++) {
  const a = process.cpuUsage();
  m.runText(text);
  const d = process.cpuUsage(a);
  t.push((d.user + d.system) / 1000);
}
t.sort((a, b) => a - b);
console.log(`cpu min ${t[0].toFixed(1)} median ${t[runs >> 1].toFixed(1)} ms`);
