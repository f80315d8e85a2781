// dashlib.js -- what the dashboard's browser tests share (dashboard.js,
// dashboard_manage.js, dashboard_rules.js): argument parsing, the JSON-lines
// output, bounded polling, page error watching, and running one flow in a
// headless Chromium (Debian's /usr/bin/chromium, playwright-core) under a
// watchdog.  A flow prints one JSON object per line on stdout; it ends with
// exit 0 when every step passed, or {"event": "error", "step", "message"}
// and exit 1.
'use strict';
const { chromium } = require('playwright-core');

// --key value pairs into opts (its keys are the accepted options, its
// values the defaults; numbers stay numbers); exits 2 with usage on a bad
// argument or a missing required one.
function parseArgs(name, opts, required, usage) {
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, ''), v = argv[i + 1];
    if (!(k in opts) || v === undefined) {
      console.error('usage: ' + name + ' ' + usage);
      process.exit(2);
    }
    opts[k] = typeof opts[k] === 'number' ? Number(v) : v;
  }
  for (const k of required) {
    if (!opts[k]) {
      console.error(name + ': --' + k + ' is required');
      process.exit(2);
    }
  }
  return opts;
}

function out(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }

class StepError extends Error {
  constructor(step, message) { super(message); this.step = step; }
}

// Polls fn() (async, truthy = done) every 100 ms for at most `ms`.
async function until(step, ms, fn) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new StepError(step, 'timed out after ' + ms + ' ms');
}

// The page's errors, collected: script errors, anything the API's
// Content-Security-Policy blocked, and any dialog (Chromium's own HTTP auth
// dialog must never appear: the page has its form).  The flow fails on
// them at its end.
function watchErrors(page) {
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => {
    process.stderr.write('console: ' + m.text() + '\n');
    if (/Content Security Policy/i.test(m.text())) errors.push('CSP: ' + m.text());
  });
  page.on('dialog', (d) => { errors.push('unexpected dialog: ' + d.message()); d.dismiss(); });
  return errors;
}

// Opens url and signs in with the API key; resolves once the app shows.
async function loginWithKey(page, url, key, ms) {
  await page.goto(url, { timeout: ms });
  await page.waitForSelector('#login-form', { state: 'visible', timeout: ms });
  await page.fill('#login-key', key);
  await page.click('#login-submit');
  await page.waitForSelector('body[data-state="ready"]', { timeout: ms });
}

// Runs flow(page) in a persistent Chromium context (opts: user-data-dir,
// chromium, timeout in s) and exits the process with its outcome.
function runFlow(opts, flow) {
  const watchdog = setTimeout(() => {
    out({ event: 'error', step: 'watchdog', message: 'gave up after ' + opts.timeout + ' s' });
    process.exit(1);
  }, opts.timeout * 1000);
  const main = async () => {
    const context = await chromium.launchPersistentContext(opts['user-data-dir'], {
      executablePath: opts.chromium,
      headless: true,
      viewport: { width: 1400, height: 1000 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
             '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      timeout: opts.timeout * 1000,
    });
    try {
      const page = context.pages()[0] || await context.newPage();
      await flow(page);
      return 0;
    } catch (e) {
      out({ event: 'error', step: e.step || 'run', message: String(e && e.message || e) });
      return 1;
    } finally {
      await context.close();
    }
  };
  main().then((code) => { clearTimeout(watchdog); process.exit(code); }, (e) => {
    out({ event: 'error', step: 'launch', message: String(e && e.message || e) });
    process.exit(1);
  });
}

module.exports = { parseArgs, out, StepError, until, watchErrors, loginWithKey, runFlow };
