// One thread of a threaded module's pool (threads.js startPool): instantiates the module
// on the shared memory it is sent, says it is ready, then runs one pool thread of the
// module (`runThread`) for the life of the page. Blocking waits (Atomics.wait) are
// allowed here, in a Worker.
self.onmessage = async ({ data: { glueUrl, module, memory } }) => {
  try {
    const glue = await import(glueUrl);
    await glue.default({ module_or_path: module, memory });
    postMessage({ ready: true });
    glue.runThread();
  } catch (e) {
    postMessage({ ready: false, error: String(e && e.message ? e.message : e) });
  }
};
