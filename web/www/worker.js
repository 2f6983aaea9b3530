// The page's Web Worker: owns the WebAssembly engine so that model loading, generation and
// scoring never block the page. Messages in: {id, cmd, ...}; out: {id, progress} while a job
// runs, then {id, ok: true, result} or {id, ok: false, error}.
import init, * as engine from './pkg/adamllm_web.js';

// The engine's panic hook hands its message here before WebAssembly traps.
let lastPanic = null;
globalThis.adamllmPanicMessage = (message) => { lastPanic = message; };

const ready = init();

// Same-origin files of the built-in demo (the only requests the page makes).
async function fetchBytes(path) {
  const response = await fetch(new URL(path, self.location.href));
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

async function fetchText(path) {
  return new TextDecoder().decode(await fetchBytes(path));
}

let manifest = null;
async function demoManifest() {
  if (!manifest) manifest = JSON.parse(await fetchText('demo/manifest.json'));
  return manifest;
}

async function demoModelFiles(role) {
  const entry = (await demoManifest()).models[role];
  const files = [];
  for (const path of entry.files) files.push([path.split('/').pop(), await fetchBytes(`demo/${path}`)]);
  return { name: entry.name, files };
}

const handlers = {
  async initDevice({ device }) {
    return { device: JSON.parse(await engine.init_device(device)), version: engine.version() };
  },
  async loadModel({ role, name, files, weights }) {
    return JSON.parse(engine.load_model_files(role, name, files, weights));
  },
  async loadDemoModel({ role, weights }) {
    const { name, files } = await demoModelFiles(role);
    return JSON.parse(engine.load_model_files(role, name, files, weights));
  },
  async demoBenchmark() {
    const b = (await demoManifest()).benchmark;
    const images = [];
    for (const path of b.images) images.push([path.replace(/^benchmark\//, ''), await fetchBytes(`demo/${path}`)]);
    return {
      name: b.file.split('/').pop(),
      bytes: await fetchBytes(`demo/${b.file}`),
      images,
      task: { kind: 'custom', file: b.task_file.split('/').pop(), yaml: await fetchText(`demo/${b.task_file}`) },
      min_pixels: b.min_pixels,
      max_pixels: b.max_pixels,
    };
  },
  async demoSynthesisSample() {
    const s = (await demoManifest()).synthesis_sample;
    return { caption: s.caption, image: await fetchBytes(`demo/${s.image}`) };
  },
  async evaluate({ settings, name, bytes, images }, id) {
    const progress = (done, total) => self.postMessage({ id, progress: { done, total } });
    return JSON.parse(await engine.evaluate_benchmark(JSON.stringify(settings), name, bytes, images, progress));
  },
  async debugPanic() {
    engine.debug_panic();
  },
  async synthesize({ settings, image }) {
    return JSON.parse(await engine.synthesize_image(JSON.stringify(settings), image));
  },
};

self.onmessage = async (event) => {
  const { id, cmd, ...args } = event.data;
  try {
    await ready;
    const handler = handlers[cmd];
    if (!handler) throw new Error(`unknown command ${cmd}`);
    self.postMessage({ id, ok: true, result: await handler(args, id) });
  } catch (error) {
    // JsError from Rust carries the core's message. A panic traps WebAssembly (a
    // RuntimeError): this instance is unusable from now on and the page restarts the worker.
    const crashed = error instanceof WebAssembly.RuntimeError;
    const text = crashed && lastPanic ? lastPanic : String(error && error.message ? error.message : error);
    self.postMessage({ id, ok: false, crashed, error: text });
  }
};
