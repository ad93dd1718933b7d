// Prompt and decoding speed of riffle's wasm chat module in V8 (node), for comparing builds
// of the module without a browser (one thread: the module of `www/pkg-chat`).
//
//   node bench/browser/chat-node.mjs www/pkg-chat model.gguf [rounds] [tokens] [words]
//
// `www/pkg-chat` is a wasm-bindgen --target web output of riffle-chat-wasm (scripts/build-www
// writes one). Each round reads the chat-template prompt of one question in one step, then
// makes `tokens` greedy tokens one step each (end tokens ignored), as `ChatModel.benchIds`
// does for bench/anchors.py (`words` filler words before the question make the prompt
// longer, so that decoding reads a deeper cache); it prints the prompt's and the decoding's tokens per second
// (decoding: the steps after the first token) and the first generated ids, which must be
// the same in every build.
import { readFileSync } from 'node:fs';
import path from 'node:path';

const pkg = path.resolve(process.argv[2] || 'www/pkg-chat');
const model = process.argv[3];
const rounds = Number(process.argv[4] || 3);
const tokens = Number(process.argv[5] || 64);
const words = Number(process.argv[6] || 0);
if (!model) {
  console.error('usage: node bench/browser/chat-node.mjs PKG_DIR MODEL.gguf [rounds] [tokens]');
  process.exit(2);
}
const mod = await import(path.join(pkg, 'riffle_chat.js'));
mod.initSync({ module: readFileSync(path.join(pkg, 'riffle_chat_bg.wasm')) });
const m = mod.ChatModel.fromBytes(readFileSync(model), path.basename(model), 1024);
const filler = 'the quick brown fox jumps over the lazy dog while riffle runs adapters on the edge '
  .repeat(200).split(' ').slice(0, words).join(' ');
const question = (words ? filler + '. ' : '') + 'What is the capital of France?';
const prompt = m.encode(m.render([{ role: 'user', content: question }]));
for (let r = 0; r < rounds; r++) {
  m.reset();
  const o = m.benchIds(Uint32Array.from(prompt), tokens + 1);
  console.log(JSON.stringify({
    prompt_tokens: prompt.length,
    prompt_tok_s: +(prompt.length / o.promptMs * 1000).toFixed(1),
    decode_tok_s: +(tokens / o.decodeMs * 1000).toFixed(1),
    first_ids: Array.from(o.tokens).slice(0, 8).join(','),
  }));
}
