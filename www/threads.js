// Threads in the browser: the page is cross-origin isolated (scripts/serve-www sends
// COOP/COEP) -> the workers load the threaded modules (pkg-mt/, pkg-chat-mt/: shared
// memory, +atomics) and start a pool of Web Workers on the same memory; otherwise the
// one-thread modules (pkg/, pkg-chat/) run, and the page says so.
//
// Used by the page (choice and wording) and by worker.js / chat-worker.js (the pool).

// How many threads to ask for: `?threads=N` on the page URL, else the cores the browser
// reports (at most 8), and 1 when the page is not cross-origin isolated (no
// SharedArrayBuffer: wasm threads are impossible).
export function pageThreads(scope = self) {
  if (!scope.crossOriginIsolated) {
    return { threads: 1, isolated: false, note: 'one thread: page not cross-origin isolated' };
  }
  const asked = Number(new URLSearchParams(scope.location?.search || '').get('threads'));
  const cores = Math.min(8, scope.navigator?.hardwareConcurrency || 1);
  const threads = Math.max(1, Math.floor(asked) || cores);
  return {
    threads,
    isolated: true,
    note: threads > 1 ? `${threads} threads: cross-origin isolated, Web Worker pool`
      : 'one thread (cross-origin isolated, 1 asked)',
  };
}

// In a module's worker, after `await glue.default(...)` of a threaded module: builds the
// module's pool (`startThreads`) and starts its `threads - 1` Web Workers, each
// instantiating the module on the same shared memory and running one pool thread for the
// life of the page. Resolves once every worker is running; rejects (and the caller falls
// back to one thread) if one cannot start.
export async function startPool(glue, glueUrl, threads) {
  glue.startThreads(threads);
  const module = glue.threadModule();
  const memory = glue.threadMemory();
  const workers = [];
  const started = [];
  for (let i = 1; i < threads; i++) {
    const w = new Worker(new URL('./thread-worker.js', import.meta.url), { type: 'module', name: `riffle-thread-${i}` });
    workers.push(w);
    started.push(new Promise((resolve, reject) => {
      w.onmessage = ({ data }) => (data.ready ? resolve() : reject(new Error(`thread ${i}: ${data.error}`)));
      w.onerror = (e) => reject(new Error(`thread ${i}: ${e.message || 'worker failed to start'}`));
    }));
    w.postMessage({ glueUrl, module, memory });
  }
  try {
    await Promise.all(started);
  } catch (e) {
    for (const w of workers) w.terminate();
    throw e;
  }
  return workers;
}

// Loads a module for a worker: the threaded build when `threads > 1`, the scope is
// cross-origin isolated and the build exists, else the one-thread build. Returns the glue
// module, its wasm bytes' size and the threads it runs on.
//   one / threaded: { glue: URL of the wasm-bindgen JS, wasm: URL of the .wasm }
export async function loadModule({ one, threaded, threads = 1, fetchBytes }) {
  const fetchAll = fetchBytes || (async (url) => new Uint8Array(await (await fetch(url)).arrayBuffer()));
  const want = threads > 1 && threaded && self.crossOriginIsolated;
  const pick = want ? threaded : one;
  const glueUrl = new URL(pick.glue, import.meta.url).href;
  const glue = await import(glueUrl);
  const bytes = await fetchAll(new URL(pick.wasm, import.meta.url).href);
  const t0 = performance.now();
  await glue.default({ module_or_path: bytes });
  const instantiateMs = performance.now() - t0;
  let running = 1;
  let error = null;
  if (want) {
    try {
      await startPool(glue, glueUrl, threads);
      running = glue.threadCount();
    } catch (e) {
      error = String(e.message || e);
    }
  }
  return { glue, wasmBytes: bytes.length, instantiateMs, threads: running, threaded: want, error };
}
