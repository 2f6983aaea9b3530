// Headless Chromium for the browser tests: Debian's /usr/bin/chromium (or ADAMLLM_CHROMIUM)
// through playwright-core, in a throw-away profile. Every request is recorded; one that
// `allowed(url)` refuses is blocked and listed; the page's console lines and errors are kept.
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { chromium } from 'playwright-core';

const BASE_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];

export async function openBrowser({ allowed, args = [], viewport, acceptDownloads = false }) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'adamllm-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.ADAMLLM_CHROMIUM || '/usr/bin/chromium',
    headless: true, args: [...BASE_ARGS, ...args], acceptDownloads, viewport,
  });
  const requests = [];
  const blocked = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    requests.push(url);
    if (allowed(url)) return route.continue();
    blocked.push(url);
    return route.abort();
  });
  // Chromium does not route file:// loads, so every request is also logged as it is made.
  context.on('request', (request) => requests.push(request.url()));
  const page = context.pages()[0] || await context.newPage();
  const consoleLines = [];
  page.on('console', (msg) => consoleLines.push(`${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (error) => consoleLines.push(`pageerror: ${error.message}`));
  const close = async () => {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  };
  return { page, requests, blocked, consoleLines, close };
}
