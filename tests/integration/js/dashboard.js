#!/usr/bin/env node
// The dashboard's flow in headless Chromium (Debian's /usr/bin/chromium)
// driven by playwright-core, for tests/integration/test_52_dashboard.py.
//
//   node dashboard.js --url http://127.0.0.1:PORT/ --key KEY --client ID \
//        --other ID --topic FILTER --retained TOPIC --user-data-dir DIR \
//        --screenshot FILE [--timeout 45] \
//        [--chromium /usr/bin/chromium]
//
// Prints one JSON object per line on stdout, in this order:
//   {"event": "login_page"}                       the form is shown, nothing else
//   {"event": "login_refused", "message"}         a wrong key is refused
//   {"event": "logged_in"}                        the right key is accepted
//   {"event": "client_seen", "rows": [...]}       `--client` is in the clients table
//   {"event": "tables", "subscriptions", "retained", "sys_rows", "listeners"}
//                                                 its subscription `--topic`, the retained
//                                                 message `--retained` ($SYS hidden), the
//                                                 listeners' ports
//   {"event": "figures", "connections", "rate_in", "ready", "node"}
//                                                 stats, a message rate > 0, health
//   {"event": "search", "rows": [...]}            the prefix search keeps only `--client`
//   {"event": "screenshot", "path"}
//   {"event": "kicked", "rows": [...]}            Kick + Confirm: the row is gone
// then exits 0; on a failure {"event": "error", "step", "message"} and exit 1.
//
// With --user U --password P (and --flow login) it signs in with the user
// form instead: login_page, login_refused (a wrong password), logged_in,
// client_seen, then {"event": "reloaded"} (a page reload keeps the session:
// sessionStorage) and {"event": "logged_out"} (Log out clears it).
// The Python side checks that the MQTT client really was disconnected.
'use strict';
const { parseArgs, out, StepError, until, watchErrors, runFlow } = require('./dashlib');

const opts = { url: '', key: '', user: '', password: '', flow: 'full',
               client: '', other: '', topic: '', retained: '',
               'user-data-dir': '', screenshot: '',
               timeout: 45, chromium: '/usr/bin/chromium' };
const flowOf = process.argv.indexOf('--flow');
const loginFlow = flowOf > 0 && process.argv[flowOf + 1] === 'login';
parseArgs('dashboard.js', opts,
          loginFlow ? ['url', 'user', 'password', 'client', 'user-data-dir']
            : ['url', 'key', 'client', 'other', 'topic', 'retained', 'user-data-dir', 'screenshot'],
          '--url URL --key KEY --client ID --other ID --user-data-dir DIR --screenshot FILE ' +
          '[--timeout S] [--chromium PATH]');

// The client ids of the clients table's rows.
async function clientRows(page) {
  return page.$$eval('#clients-table tbody tr[data-client-id]', (trs) => trs.map((t) => t.dataset.clientId));
}

async function run(page) {
  const ms = 15000;
  const errors = watchErrors(page);

  await page.goto(opts.url, { timeout: opts.timeout * 1000 });
  await page.waitForSelector('#login-form', { state: 'visible', timeout: ms });
  if (await page.isVisible('#app')) throw new StepError('login_page', 'the app is visible before login');
  out({ event: 'login_page' });

  // wrong credentials: refused, still on the login form
  if (opts.user) {
    await page.click('#tab-basic');
    await page.fill('#login-user', opts.user);
    await page.fill('#login-password', opts.password + '-wrong');
  } else {
    await page.fill('#login-key', 'ak_' + '0'.repeat(64));
  }
  await page.click('#login-submit');
  const refused = await until('login_refused', ms, async () => {
    const t = await page.textContent('#login-error');
    return t && t.trim() ? t.trim() : null;
  });
  if (await page.getAttribute('body', 'data-state') !== 'login')
    throw new StepError('login_refused', 'a wrong key logged in');
  out({ event: 'login_refused', message: refused });

  if (opts.user)
    await page.fill('#login-password', opts.password);
  else
    await page.fill('#login-key', opts.key);
  await page.click('#login-submit');
  await page.waitForSelector('body[data-state="ready"]', { timeout: ms });
  await page.waitForSelector('#app', { state: 'visible', timeout: ms });
  out({ event: 'logged_in' });

  const sel = '#clients-table tbody tr[data-client-id="' + opts.client.replace(/"/g, '\\"') + '"]';
  await page.waitForSelector(sel, { timeout: ms });
  out({ event: 'client_seen', rows: await clientRows(page) });

  if (opts.flow === 'login') {
    await page.reload({ timeout: ms });
    await page.waitForSelector(sel, { timeout: ms });
    if (await page.getAttribute('body', 'data-state') !== 'ready')
      throw new StepError('reloaded', 'a reload lost the session');
    out({ event: 'reloaded' });
    await page.click('#logout');
    await page.waitForSelector('#login-form', { state: 'visible', timeout: ms });
    const stored = await page.evaluate(() => Object.keys(sessionStorage));
    if (await page.isVisible('#app') || stored.length)
      throw new StepError('logged_out', 'still signed in: ' + JSON.stringify(stored));
    out({ event: 'logged_out' });
    if (errors.length) throw new StepError('page', errors.join('; '));
    return;
  }

  // its subscription, and the retained message without the $SYS topics
  const tables = await until('tables', ms, async () => {
    const t = await page.evaluate(() => ({
      subscriptions: Array.from(document.querySelectorAll('#subscriptions-table tbody tr'))
        .map((tr) => Array.from(tr.cells).slice(0, 2).map((c) => c.textContent)),
      retained: Array.from(document.querySelectorAll('#retained-table tbody tr[data-topic]'))
        .map((tr) => tr.dataset.topic),
      listeners: Array.from(document.querySelectorAll('#listeners-table tbody tr[data-port]'))
        .map((tr) => Number(tr.dataset.port)),
    }));
    t.sys_rows = t.retained.filter((x) => x.startsWith('$SYS/')).length;
    const sub = t.subscriptions.some(([c, f]) => c === opts.client && f === opts.topic);
    return sub && t.retained.includes(opts.retained) && t.listeners.length ? t : null;
  });
  out(Object.assign({ event: 'tables' }, tables));

  // the figures: connections, a live message rate (the test publishes), health
  const fig = await until('figures', ms, async () => {
    const f = await page.evaluate(() => ({
      connections: document.getElementById('fig-connections').textContent,
      rate_in: document.getElementById('fig-rate-in').textContent,
      ready: document.getElementById('health-badge').dataset.ready,
      node: document.getElementById('node-line').textContent,
    }));
    return Number(f.connections) >= 2 && parseFloat(f.rate_in) > 0 && f.ready === 'yes' && f.node ? f : null;
  });
  out(Object.assign({ event: 'figures' }, fig));

  // search by client id prefix: only the matching client stays
  const prefix = opts.client.slice(0, Math.max(1, opts.client.length - 2));
  await page.fill('#clients-search', prefix);
  const searched = await until('search', ms, async () => {
    const rows = await clientRows(page);
    return rows.length >= 1 && rows.every((r) => r.startsWith(prefix)) && !rows.includes(opts.other) ? rows : null;
  });
  out({ event: 'search', rows: searched });

  // a few chart points before the picture
  await page.waitForTimeout(6000);
  await page.screenshot({ path: opts.screenshot, fullPage: true });
  out({ event: 'screenshot', path: opts.screenshot });

  // kick: first click arms the button, the second one acts
  const kickBtn = sel + ' button.kick';
  await page.click(kickBtn);
  await page.waitForSelector(kickBtn + '.confirming', { timeout: ms });
  await page.click(kickBtn);
  const after = await until('kicked', ms, async () => {
    const rows = await clientRows(page);
    return rows.includes(opts.client) ? null : { rows };
  });
  out({ event: 'kicked', rows: after.rows });
  if (errors.length) throw new StepError('page', errors.join('; '));
}

runFlow(opts, run);
