// Opens a demo's report.html in headless Chromium (Debian's /usr/bin/chromium through
// playwright-core), straight from disk as a user double-clicks it, and writes what the browser
// showed for cli/tests/demo_cli.rs to check: tables, images (loaded or broken), the claims
// checklist, console errors, every request, and a full-page screenshot.
//
// Environment:
//   ADAMLLM_REPORT      the report.html to open
//   ADAMLLM_REPORT_OUT  where to write report-view.json and report.png
//
// The report must be self-contained: a request outside the demo folder is blocked and listed.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { openBrowser } from './browser.mjs';

const file = path.resolve(process.env.ADAMLLM_REPORT);
const out = path.resolve(process.env.ADAMLLM_REPORT_OUT);
fs.mkdirSync(out, { recursive: true });
const folder = pathToFileURL(path.dirname(file)).href + '/';
const inFolder = (url) => url.startsWith(folder) || url.startsWith('data:');

const { page, requests, blocked, consoleLines, close } = await openBrowser({
  allowed: inFolder,
  viewport: { width: 1200, height: 1400 },
});

const view = { file };
try {
  await page.goto(pathToFileURL(file).href, { waitUntil: 'load', timeout: 60000 });
  Object.assign(view, await page.evaluate(() => ({
    title: document.title,
    headings: [...document.querySelectorAll('h2')].map((h) => h.textContent),
    tables: [...document.querySelectorAll('table')].map((t) => ({
      header: [...t.querySelectorAll('th')].map((th) => th.textContent),
      rows: t.querySelectorAll('tr').length - 1,
    })),
    images: [...document.images].map((img) => ({
      src: img.getAttribute('src'),
      class: img.className,
      loaded: img.complete && img.naturalWidth > 0,
      width: img.naturalWidth,
      height: img.naturalHeight,
    })),
    claims: [...document.querySelectorAll('ul.claims li')].map((li) => ({
      verdict: li.className,
      mark: li.querySelector('.mark')?.textContent,
      text: li.textContent,
    })),
    plot_columns: (() => {
      const grid = document.querySelector('.plots');
      return grid ? getComputedStyle(grid).gridTemplateColumns.split(' ').length : 0;
    })(),
  })));
  view.ok = true;
} catch (error) {
  view.ok = false;
  view.failure = String(error && error.stack ? error.stack : error);
} finally {
  try { await page.screenshot({ path: path.join(out, 'report.png'), fullPage: true }); } catch { /* page gone */ }
  view.requests = [...new Set(requests)];
  view.outside_requests = [...new Set([...blocked,
    ...requests.filter((url) => !inFolder(url))])];
  view.console = consoleLines;
  fs.writeFileSync(path.join(out, 'report-view.json'), JSON.stringify(view, null, 2) + '\n');
  await close();
}
process.exit(view.ok ? 0 : 1);
