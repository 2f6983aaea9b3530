// The page's main thread: wires the panels to the worker and renders what comes back.
// Nothing here computes a score or builds a prompt; the worker's Rust core does.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

// ---- worker calls -------------------------------------------------------------------------
// The engine runs in a worker. A Rust panic traps WebAssembly and leaves that instance
// unusable, so on a trap the page ends the worker, starts a fresh one on the same device and
// says what happened; loaded models are gone and are loaded again by the user.
let worker = null;
let nextId = 1;
const pending = new Map();
const deviceChoice = params.get('device') || 'auto';

function startWorker() {
  worker = new Worker('worker.js', { type: 'module' });
  worker.onmessage = ({ data }) => {
    const job = pending.get(data.id);
    if (!job) return;
    if (data.progress) { job.onProgress?.(data.progress); return; }
    pending.delete(data.id);
    if (data.ok) { job.resolve(data.result); return; }
    if (data.crashed) { restartWorker(data.error).then(job.reject, job.reject); return; }
    job.reject(new Error(data.error));
  };
  worker.onerror = (event) => showError(`The engine stopped: ${event.message || 'unknown error'}`);
}

async function restartWorker(reason) {
  worker.terminate();
  for (const job of pending.values()) job.reject(new Error('the engine was restarted'));
  pending.clear();
  state.model = null; state.synthReady = false;
  $('model-info').hidden = true;
  startWorker();
  await call('initDevice', { device: deviceChoice });
  return new Error(`The engine hit an internal error (${reason}) and was restarted; load the model again.`);
}

function call(cmd, args = {}, onProgress = null, transfer = []) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject, onProgress });
    worker.postMessage({ id, cmd, ...args }, transfer);
  });
}
startWorker();

// ---- state and helpers --------------------------------------------------------------------
const state = { model: null, benchmark: null, synthImage: null, synthReady: false, lastEval: null, lastSynth: null };
window.adamllm = state; // for people poking around in the console (and the page tests)
// The page tests' way to prove that a panic in the engine restarts it.
state.debugPanic = () => guarded(null, () => call('debugPanic'));

function showError(message) {
  const box = $('error');
  box.textContent = message;
  box.hidden = false;
}
function clearError() { $('error').hidden = true; $('error').textContent = ''; }

async function guarded(button, work) {
  clearError();
  if (button) button.disabled = true;
  try { return await work(); }
  catch (error) { showError(error.message || String(error)); }
  finally { if (button) button.disabled = false; refreshButtons(); }
}

async function readFiles(fileList) {
  const out = [];
  for (const file of fileList) {
    const path = file.webkitRelativePath || file.name;
    out.push([path, new Uint8Array(await file.arrayBuffer())]);
  }
  return out;
}

function folderName(fileList) {
  const first = fileList[0];
  return first && first.webkitRelativePath ? first.webkitRelativePath.split('/')[0] : 'picked model';
}

function humanBytes(n) {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`;
}

function fillInfo(dl, pairs) {
  dl.replaceChildren();
  for (const [key, value] of pairs) {
    const dt = document.createElement('dt'); dt.textContent = key;
    const dd = document.createElement('dd'); dd.textContent = value;
    dl.append(dt, dd);
  }
  dl.hidden = false;
}

function refreshButtons() {
  $('run-eval').disabled = !(state.model && (state.benchmark || $('benchmark-file').files.length));
  $('run-synth').disabled = !(state.synthReady && (state.synthImage || $('synth-image').files.length));
}

/** The weights choice every model load uses: dense, q8 or q4. */
const weights = () => $('weights').value;

function showModel(info) {
  state.model = info;
  fillInfo($('model-info'), [
    ['name', info.name],
    ['family', info.family],
    ['type', info.model_type],
    ['parameters', info.parameters.toLocaleString('en')],
    ['size', humanBytes(info.bytes)],
    ['layers × hidden', `${info.layers} × ${info.hidden_size}`],
    ['vocabulary', info.vocab_size.toLocaleString('en')],
    ['weights', info.quantize ? `${info.quantize} (${info.quantized_linears} linear layers)` : 'dense (f32)'],
    ['files', info.files.join(', ')],
  ]);
}

// ---- start --------------------------------------------------------------------------------
(async () => {
  try {
    const { device, version } = await call('initDevice', { device: deviceChoice });
    $('version').textContent = version;
    const el = $('device');
    el.textContent = `Running on ${device.backend === 'webgpu' ? 'WebGPU' : 'the CPU (WebAssembly)'}: ${device.description}. ${device.reason}.`;
    el.dataset.state = 'ready';
    el.dataset.backend = device.backend;
    for (const id of ['use-demo-model', 'model-folder', 'use-demo-benchmark', 'use-demo-synth', 'synth-folder', 'judge-folder']) $(id).disabled = false;
  } catch (error) {
    $('device').dataset.state = 'failed';
    showError(`The engine could not start: ${error.message}`);
  }
})();

// ---- model panel --------------------------------------------------------------------------
$('use-demo-model').onclick = () => guarded($('use-demo-model'), async () => {
  showModel(await call('loadDemoModel', { role: 'model', weights: weights() }));
});

$('model-folder').onchange = () => guarded(null, async () => {
  const list = $('model-folder').files;
  if (!list.length) return;
  state.model = null;
  $('model-info').hidden = true;
  showModel(await call('loadModel', { role: 'model', name: folderName(list), files: await readFiles(list), weights: weights() }));
});

// ---- evaluation panel ---------------------------------------------------------------------
$('use-demo-benchmark').onclick = () => guarded($('use-demo-benchmark'), async () => {
  state.benchmark = await call('demoBenchmark');
  $('benchmark-chosen').textContent = `Built-in: ${state.benchmark.name} (${state.benchmark.images.length} images, task ${state.benchmark.task.file}).`;
  $('min-pixels').value = state.benchmark.min_pixels;
  $('max-pixels').value = state.benchmark.max_pixels;
});
$('benchmark-file').onchange = () => {
  state.benchmark = null;
  $('benchmark-chosen').textContent = '';
  refreshButtons();
};

const numberOrNull = (id) => ($(id).value === '' ? null : Number($(id).value));

async function chosenBenchmark() {
  if (state.benchmark) return state.benchmark;
  const file = $('benchmark-file').files[0];
  let task;
  if ($('task').value === 'custom') {
    const taskFile = $('task-file').files[0];
    if (!taskFile) throw new Error('Pick the custom task file (.yaml), or choose a built-in task.');
    task = { kind: 'custom', file: taskFile.name, yaml: await taskFile.text() };
  } else {
    task = { kind: 'builtin', name: $('task').value };
  }
  return {
    name: file.name,
    bytes: new Uint8Array(await file.arrayBuffer()),
    images: await readFiles($('benchmark-images').files),
    task,
  };
}

function renderEval(outcome) {
  const body = $('scores').tBodies[0];
  body.replaceChildren();
  for (const [key, value] of outcome.scores) {
    const tr = body.insertRow();
    tr.insertCell().textContent = outcome.task;
    tr.insertCell().textContent = outcome.metric;
    tr.insertCell().textContent = key;
    const cell = tr.insertCell();
    cell.textContent = value.toFixed(2);
    cell.dataset.value = String(value);
    cell.dataset.key = key;
  }
  const rows = $('predictions').tBodies[0];
  rows.replaceChildren();
  for (const row of outcome.rows) {
    const tr = rows.insertRow();
    tr.insertCell().textContent = row.syn_id;
    tr.insertCell().textContent = String(row.input ?? row.question ?? '').slice(0, 160);
    tr.insertCell().textContent = row.pred;
    tr.insertCell().textContent = typeof row.label === 'string' ? row.label : JSON.stringify(row.label);
  }
  $('eval-results').hidden = false;
}

$('run-eval').onclick = () => guarded($('run-eval'), async () => {
  const benchmark = await chosenBenchmark();
  const settings = {
    task: benchmark.task,
    limit: numberOrNull('limit'),
    max_new_tokens: numberOrNull('max-new-tokens'),
    batch_size: numberOrNull('batch-size'),
    min_pixels: numberOrNull('min-pixels'),
    max_pixels: numberOrNull('max-pixels'),
  };
  const bar = $('eval-progress');
  const status = $('eval-status');
  bar.hidden = false; bar.value = 0;
  status.dataset.state = 'running';
  status.textContent = 'Starting…';
  const started = performance.now();
  const outcome = await call('evaluate', { settings, name: benchmark.name, bytes: benchmark.bytes, images: benchmark.images },
    ({ done, total }) => {
      bar.max = total; bar.value = done;
      const elapsed = (performance.now() - started) / 1000;
      const eta = done > 0 ? (elapsed / done) * (total - done) : NaN;
      status.textContent = `${done} / ${total} rows` + (Number.isFinite(eta) && done < total ? `, about ${Math.ceil(eta)} s left` : '');
    });
  state.lastEval = outcome;
  renderEval(outcome);
  const rate = outcome.seconds > 0 ? outcome.generated_tokens / outcome.seconds : 0;
  status.textContent = `Done: ${outcome.rows.length} rows in ${outcome.seconds.toFixed(1)} s (${outcome.generated_tokens} tokens, ${rate.toFixed(1)} tokens/s).`;
  status.dataset.state = 'done';
}).then(() => { if ($('eval-status').dataset.state === 'running') $('eval-status').dataset.state = 'failed'; });

function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: 'application/octet-stream' }));
  const a = document.createElement('a');
  a.href = url; a.download = name;
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
$('download-predictions').onclick = () => state.lastEval && download('predictions.jsonl', state.lastEval.predictions_jsonl);
$('download-results').onclick = () => state.lastEval && download('results.json', state.lastEval.results_json);

// ---- synthesis panel ----------------------------------------------------------------------
function preview(bytes) {
  const img = $('synth-preview');
  img.src = URL.createObjectURL(new Blob([bytes]));
  img.hidden = false;
}

$('use-demo-synth').onclick = () => guarded($('use-demo-synth'), async () => {
  await call('loadDemoModel', { role: 'synthesizer', weights: weights() });
  await call('loadDemoModel', { role: 'judge', weights: weights() });
  const sample = await call('demoSynthesisSample');
  state.synthImage = sample.image;
  $('caption').value = sample.caption;
  preview(sample.image);
  state.synthReady = true;
  $('synth-status').textContent = 'Demo synthesizer and judge loaded.';
});
$('synth-folder').onchange = () => guarded(null, async () => {
  const list = $('synth-folder').files;
  if (!list.length) return;
  state.synthReady = false;
  await call('loadModel', { role: 'synthesizer', name: folderName(list), files: await readFiles(list), weights: weights() });
  state.synthReady = true;
  $('synth-status').textContent = `Synthesizer ${folderName(list)} loaded.`;
});
$('judge-folder').onchange = () => guarded(null, async () => {
  const list = $('judge-folder').files;
  if (!list.length) return;
  await call('loadModel', { role: 'judge', name: folderName(list), files: await readFiles(list), weights: weights() });
  $('synth-status').textContent = `Judge ${folderName(list)} loaded.`;
});
$('synth-image').onchange = async () => {
  const file = $('synth-image').files[0];
  if (!file) return;
  state.synthImage = new Uint8Array(await file.arrayBuffer());
  preview(state.synthImage);
  refreshButtons();
};

$('run-synth').onclick = () => guarded($('run-synth'), async () => {
  $('synth-status').dataset.state = 'running';
  $('synth-status').textContent = 'Synthesizing…';
  const outcome = await call('synthesize', { settings: { caption: $('caption').value }, image: state.synthImage });
  state.lastSynth = outcome;
  const t = outcome.triplet;
  fillInfo($('synth-result'), [
    ['instruction', t ? t.instruction : '(no triplet in the output)'],
    ['informative answer', t ? t.informative_answer : ''],
    ['precise answer', t ? t.precise_answer : ''],
    ['judge label', outcome.consistency ?? '(no judge loaded)'],
    ['raw output', outcome.pred],
    ['tokens, seconds', `${outcome.tokens}, ${outcome.seconds.toFixed(1)}`],
  ]);
  $('synth-status').textContent = 'Done.';
  $('synth-status').dataset.state = 'done';
});
