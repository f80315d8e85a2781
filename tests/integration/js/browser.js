#!/usr/bin/env node
// Headless Chromium (Debian's /usr/bin/chromium) driven by playwright-core
// for tests/integration/test_35_browser.py: opens `--page`, a page that
// loads MQTT.js's browser bundle and connects over WebSocket, and prints
// one JSON object per line on stdout as the page's state changes:
// {"event": "subscribed"}, {"event": "message", "topic", "payload"},
// {"event": "error", "message"}, {"event": "timeout"}.  Exits 0 once
// `--count` messages arrived, 1 on an error or after `--timeout` seconds.
//
//   node browser.js --page http://127.0.0.1:8000/page.html \
//        --user-data-dir /tmp/profile [--count 1] [--timeout 30] \
//        [--chromium /usr/bin/chromium]
'use strict';
const { chromium } = require('playwright-core');

const opts = { page: '', 'user-data-dir': '', count: 1, timeout: 30,
               chromium: '/usr/bin/chromium' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const k = argv[i].replace(/^--/, ''), v = argv[i + 1];
  if (!(k in opts) || v === undefined) {
    console.error('usage: browser.js --page URL --user-data-dir DIR [--count N] [--timeout S]');
    process.exit(2);
  }
  opts[k] = typeof opts[k] === 'number' ? Number(v) : v;
}
if (!opts.page || !opts['user-data-dir']) {
  console.error('browser.js: --page and --user-data-dir are required');
  process.exit(2);
}

function out(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }

async function main() {
  // a persistent context: --user-data-dir is playwright's own argument
  const context = await chromium.launchPersistentContext(opts['user-data-dir'], {
    executablePath: opts.chromium,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: opts.timeout * 1000,
  });
  let code = 1;
  try {
    const page = context.pages()[0] || await context.newPage();
    page.on('console', (m) => process.stderr.write('console: ' + m.text() + '\n'));
    page.on('pageerror', (e) => out({ event: 'error', message: String(e) }));
    await page.goto(opts.page, { timeout: opts.timeout * 1000 });
    const deadline = Date.now() + opts.timeout * 1000;
    let said = 0, subscribed = false;
    while (Date.now() < deadline) {
      const st = await page.evaluate(() => window.antenna || {});
      if (st.error) {
        out({ event: 'error', message: st.error });
        return 1;
      }
      if (st.subscribed && !subscribed) {
        subscribed = true;
        out({ event: 'subscribed' });
      }
      const msgs = st.messages || [];
      for (; said < msgs.length; said++)
        out(Object.assign({ event: 'message' }, msgs[said]));
      if (said >= opts.count) {
        code = 0;
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    if (code !== 0)
      out({ event: 'timeout' });
  } finally {
    await context.close();
  }
  return code;
}

main().then((code) => process.exit(code), (e) => {
  out({ event: 'error', message: String(e && e.message || e) });
  process.exit(1);
});
