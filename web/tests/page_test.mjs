// Drives the page in headless Chromium (Debian's /usr/bin/chromium through playwright-core)
// and writes what it saw for cli/tests/web_page.rs to check against the CLI.
//
// Environment:
//   ADAMLLM_WEB_ROOT   the page folder (web/www, built by web/build.sh)
//   ADAMLLM_PAGE_MODE  cpu | webgpu | broken
//   ADAMLLM_PAGE_OUT   where to write page.json, predictions.jsonl, results.json, page.png
//   ADAMLLM_PAGE_LIMIT, ADAMLLM_PAGE_MAX_NEW_TOKENS   optional evaluation settings
//   ADAMLLM_PAGE_BROKEN  (broken mode) a malformed benchmark file to pick
//   ADAMLLM_PAGE_BROKEN_MODEL  (broken mode) a damaged model folder to pick before the demo model
//   ADAMLLM_PAGE_SYNTH   (cpu mode) set to 1 to also run the synthesis panel
//   ADAMLLM_PAGE_MODEL_DIR  a model folder to pick (as a user picks one) instead of the
//                           built-in demo model
//   ADAMLLM_PAGE_WEIGHTS  the weights choice before the model loads (dense, q8, q4)
//
// The page is served by a small static server here, on 127.0.0.1. Every request the browser
// makes is recorded (and any request off that origin is blocked and reported).
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { openBrowser } from './browser.mjs';

const root = path.resolve(process.env.ADAMLLM_WEB_ROOT);
const mode = process.env.ADAMLLM_PAGE_MODE || 'cpu';
const out = path.resolve(process.env.ADAMLLM_PAGE_OUT);
fs.mkdirSync(out, { recursive: true });

const types = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.wasm': 'application/wasm', '.json': 'application/json', '.png': 'image/png', '.jsonl': 'application/jsonl',
  '.yaml': 'text/yaml', '.safetensors': 'application/octet-stream' };
const served = [];
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  served.push(url.pathname);
  const file = path.join(root, decodeURIComponent(url.pathname === '/' ? '/index.html' : url.pathname));
  if (!file.startsWith(root) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
    res.writeHead(404); res.end('not found'); return;
  }
  res.writeHead(200, { 'Content-Type': types[path.extname(file)] || 'application/octet-stream' });
  fs.createReadStream(file).pipe(res);
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const origin = `http://127.0.0.1:${server.address().port}`;

const { page, requests, blocked: offOrigin, consoleLines, close } = await openBrowser({
  allowed: (url) => url.startsWith(origin + '/') || url.startsWith('blob:') || url.startsWith('data:'),
  args: mode === 'webgpu' ? ['--enable-unsafe-webgpu'] : [],
  viewport: { width: 1200, height: 1600 },
  acceptDownloads: true,
});

const report = { mode, origin };
const long = 15 * 60 * 1000;
async function waitEval() {
  await page.waitForFunction(() => {
    const s = document.getElementById('eval-status').dataset.state;
    return s === 'done' || !document.getElementById('error').hidden;
  }, null, { timeout: long, polling: 250 });
  const error = await page.locator('#error').textContent();
  if (!(await page.locator('#error').isHidden())) throw new Error(`the page reported: ${error}`);
}
async function saveDownload(buttonId, name) {
  const [download] = await Promise.all([page.waitForEvent('download'), page.click(`#${buttonId}`)]);
  await download.saveAs(path.join(out, name));
}

try {
  const device = mode === 'cpu' || mode === 'broken' ? 'cpu' : 'auto';
  const started = Date.now();
  await page.goto(`${origin}/index.html?device=${device}`);
  await page.waitForFunction(() => ['ready', 'failed'].includes(document.getElementById('device').dataset.state),
    null, { timeout: 120000 });
  report.ready_ms = Date.now() - started;
  report.device_text = await page.locator('#device').textContent();
  report.backend = await page.locator('#device').getAttribute('data-backend');
  if (report.backend === null) throw new Error(`the engine did not start: ${await page.locator('#error').textContent()}`);

  if (mode === 'broken' && process.env.ADAMLLM_PAGE_BROKEN_MODEL) {
    // A damaged model folder first: a named error, and the page goes on to the demo model.
    await page.waitForFunction(() => !document.getElementById('model-folder').disabled, null, { timeout: long });
    await page.setInputFiles('#model-folder', process.env.ADAMLLM_PAGE_BROKEN_MODEL);
    await page.waitForSelector('#error:not([hidden])', { timeout: 60000 });
    report.model_error_text = await page.locator('#error').textContent();
    // A panic in the engine: the page restarts it and says so.
    await page.evaluate(() => window.adamllm.debugPanic());
    await page.waitForFunction(() => document.getElementById('error').textContent.includes('restarted'),
      null, { timeout: 60000 });
    report.crash_text = await page.locator('#error').textContent();
  }
  if (process.env.ADAMLLM_PAGE_WEIGHTS) await page.selectOption('#weights', process.env.ADAMLLM_PAGE_WEIGHTS);
  if (process.env.ADAMLLM_PAGE_MODEL_DIR) {
    await page.waitForFunction(() => !document.getElementById('model-folder').disabled, null, { timeout: long });
    await page.setInputFiles('#model-folder', process.env.ADAMLLM_PAGE_MODEL_DIR);
  } else {
    await page.click('#use-demo-model');
  }
  await page.waitForSelector('#model-info:not([hidden])', { timeout: long });
  report.model_info = await page.locator('#model-info').textContent();

  if (mode === 'broken') {
    await page.setInputFiles('#benchmark-file', process.env.ADAMLLM_PAGE_BROKEN);
    await page.selectOption('#task', 'Food101');
    await page.click('#run-eval');
    await page.waitForSelector('#error:not([hidden])', { timeout: 60000 });
    report.error_text = await page.locator('#error').textContent();
    // The page must still work after the error.
    await page.click('#use-demo-benchmark');
    await page.waitForFunction(() => document.getElementById('benchmark-chosen').textContent !== '');
    await page.fill('#limit', '1');
    await page.fill('#max-new-tokens', '1');
    await page.click('#run-eval');
    await waitEval();
    report.after_error = await page.locator('#eval-status').textContent();
  } else {
    await page.click('#use-demo-benchmark');
    await page.waitForFunction(() => document.getElementById('benchmark-chosen').textContent !== '');
    if (process.env.ADAMLLM_PAGE_LIMIT) await page.fill('#limit', process.env.ADAMLLM_PAGE_LIMIT);
    if (process.env.ADAMLLM_PAGE_MAX_NEW_TOKENS) await page.fill('#max-new-tokens', process.env.ADAMLLM_PAGE_MAX_NEW_TOKENS);
    const evalStart = Date.now();
    await page.click('#run-eval');
    await waitEval();
    report.eval_ms = Date.now() - evalStart;
    report.status = await page.locator('#eval-status').textContent();
    report.scores = await page.$$eval('#scores tbody td[data-key]', (cells) =>
      cells.map((c) => ({ key: c.dataset.key, value: Number(c.dataset.value), text: c.textContent })));
    report.engine_seconds = await page.evaluate(() => window.adamllm.lastEval.seconds);
    report.generated_tokens = await page.evaluate(() => window.adamllm.lastEval.generated_tokens);
    await saveDownload('download-predictions', 'predictions.jsonl');
    await saveDownload('download-results', 'results.json');
    if (process.env.ADAMLLM_PAGE_SYNTH === '1') {
      await page.click('#use-demo-synth');
      await page.waitForFunction(() => !document.getElementById('run-synth').disabled, null, { timeout: long });
      await page.click('#run-synth');
      await page.waitForFunction(() => document.getElementById('synth-status').dataset.state === 'done'
        || !document.getElementById('error').hidden, null, { timeout: long });
      if (!(await page.locator('#error').isHidden())) throw new Error(`synthesis: ${await page.locator('#error').textContent()}`);
      report.synthesis = await page.evaluate(() => window.adamllm.lastSynth);
      report.synthesis_text = await page.locator('#synth-result').textContent();
    }
  }
  report.ok = true;
} catch (error) {
  report.ok = false;
  report.failure = String(error && error.stack ? error.stack : error);
} finally {
  try { await page.screenshot({ path: path.join(out, 'page.png'), fullPage: true }); } catch { /* page gone */ }
  report.requests = [...new Set(requests)];
  report.off_origin_requests = offOrigin;
  report.served = served;
  report.console = consoleLines;
  fs.writeFileSync(path.join(out, 'page.json'), JSON.stringify(report, null, 2) + '\n');
  await close();
  server.close();
}
process.exit(report.ok ? 0 : 1);
