#!/usr/bin/env node
// The dashboard's managing side in headless Chromium (Debian's
// /usr/bin/chromium) driven by playwright-core, for
// tests/integration/test_67_dashboard_manage.py.  Same conventions as
// dashboard.js: one JSON object per line on stdout, bounded waits, exit 0
// when every step passed, {"event": "error", "step", "message"} and exit 1
// otherwise.
//
//   node dashboard_manage.js --url http://127.0.0.1:PORT/ --key KEY \
//        --client ID --other ID --publish-topic T --payload P \
//        --user-data-dir DIR --artifacts DIR [--timeout 90] [--chromium PATH]
//
// Events, in this order:
//   {"event": "logged_in"}
//   {"event": "clients", "usernames": {id: text}, "protocols": {id: text},
//    "since": {id: [text, title]}}     the Username, MQTT and Connected columns
//                                      of `--client` and `--other`
//   {"event": "detail", "fields": {field: text}, "connected_title",
//    "subscriptions": [[filter, qos, options]], "events": [name, newest first]}
//                                      `--client`'s detail view (a click on its id)
//   {"event": "kicked", "state", "fields"}  Kick + Confirm in the detail view: the
//                                      view shows the session offline
//   {"event": "publish_refused", "text", "json"}  the form with a wildcard topic:
//                                      the API's JSON error shown
//   {"event": "published", "text"}     the form publishes `--payload` to
//                                      `--publish-topic` at QoS 1
//   (the test checks its subscriber got it, then stops the broker)
//   {"event": "unreachable", "texts": [...], "stale"}  the badge red, its
//                                      "last update N s ago" growing
//   (the test starts the broker again on the same ports)
//   {"event": "recovered", "ready", "text"}  green again
// Screenshots: detail.png, publish.png, unreachable.png in --artifacts.
'use strict';
const path = require('path');
const { parseArgs, out, StepError, until, watchErrors, loginWithKey, runFlow } = require('./dashlib');

const opts = parseArgs('dashboard_manage.js',
  { url: '', key: '', client: '', other: '', 'publish-topic': '', payload: '',
    'user-data-dir': '', artifacts: '', timeout: 90, chromium: '/usr/bin/chromium' },
  ['url', 'key', 'client', 'other', 'publish-topic', 'payload', 'user-data-dir', 'artifacts'],
  '--url URL --key KEY --client ID --other ID --publish-topic T --payload P ' +
  '--user-data-dir DIR --artifacts DIR [--timeout S] [--chromium PATH]');

function rowSel(id) {
  return '#clients-table tbody tr[data-client-id="' + id.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"]';
}

// The detail view's facts: data-field -> text (and the connected_at title).
async function detailFields(page) {
  return page.evaluate(() => {
    const f = {};
    document.querySelectorAll('#client-detail dd[data-field]').forEach((dd) => {
      f[dd.dataset.field] = dd.textContent;
    });
    const since = document.querySelector('#client-detail dd[data-field="connected_at"]');
    return { fields: f, connected_title: since ? since.title : null,
             state: document.getElementById('client-detail').dataset.state || null,
             subscriptions: Array.from(document.querySelectorAll('#detail-subscriptions tbody tr[data-topic]'))
               .map((tr) => Array.from(tr.cells).map((c) => c.textContent)),
             events: Array.from(document.querySelectorAll('#detail-events tbody tr[data-event]'))
               .map((tr) => tr.dataset.event) };
  });
}

async function badge(page) {
  return page.evaluate(() => {
    const b = document.getElementById('health-badge');
    return { ready: b.dataset.ready, text: b.textContent,
             stale: document.body.dataset.stale === 'true' };
  });
}

async function run(page) {
  const ms = 15000;
  const errors = watchErrors(page);
  await loginWithKey(page, opts.url, opts.key, ms);
  out({ event: 'logged_in' });

  // the clients table: Username, MQTT version by name, relative times
  const cols = await until('clients', ms, async () => {
    const t = await page.evaluate((ids) => {
      const r = { usernames: {}, protocols: {}, since: {} };
      for (const id of ids) {
        const tr = Array.from(document.querySelectorAll('#clients-table tbody tr[data-client-id]'))
          .find((x) => x.dataset.clientId === id);
        if (!tr) return null;
        r.usernames[id] = tr.querySelector('td.username').textContent;
        r.protocols[id] = tr.querySelector('td.protocol').textContent;
        const since = tr.querySelector('td.since');
        r.since[id] = [since.textContent, since.title];
      }
      return r;
    }, [opts.client, opts.other]);
    return t && Object.values(t.usernames).every((u) => u !== '-') ? t : null;
  });
  out(Object.assign({ event: 'clients' }, cols));

  // the detail view: a click on the client id
  await page.click(rowSel(opts.client) + ' button.open-detail');
  await page.waitForSelector('#client-detail', { state: 'visible', timeout: ms });
  const detail = await until('detail', ms, async () => {
    const d = await detailFields(page);
    return d.fields.state === 'connected' && d.subscriptions.length &&
      d.events.includes('subscribed') ? d : null;
  });
  if ((await page.textContent('#detail-id')) !== opts.client)
    throw new StepError('detail', 'the view shows ' + (await page.textContent('#detail-id')));
  await page.screenshot({ path: path.join(opts.artifacts, 'dashboard-detail.png'), fullPage: true });
  out({ event: 'detail', fields: detail.fields, connected_title: detail.connected_title,
        subscriptions: detail.subscriptions, events: detail.events });

  // Kick from the detail view: first click arms, the second acts; the
  // persistent session stays, offline
  const kickBtn = '#detail-actions button.kick-detail';
  await page.click(kickBtn);
  await page.waitForSelector(kickBtn + '.confirming', { timeout: ms });
  await page.click(kickBtn);
  const kicked = await until('kicked', ms, async () => {
    const d = await detailFields(page);
    const btn = await page.$(kickBtn);
    return d.state === 'offline' && !btn ? d : null;
  });
  out({ event: 'kicked', state: kicked.state, fields: kicked.fields });

  // publish: a wildcard topic is refused, with the API's JSON error shown
  await page.fill('#publish-topic', 'no/#');
  await page.fill('#publish-payload', 'x');
  await page.click('#publish-submit');
  const refused = await until('publish_refused', ms, async () => {
    const r = await page.evaluate(() => ({
      ok: document.getElementById('publish-result').dataset.ok,
      text: document.getElementById('publish-result').textContent,
      json: document.getElementById('publish-error').hidden ? null
        : document.getElementById('publish-error').textContent,
    }));
    return r.ok === 'no' && r.json ? r : null;
  });
  out({ event: 'publish_refused', text: refused.text, json: JSON.parse(refused.json) });

  await page.fill('#publish-topic', opts['publish-topic']);
  await page.fill('#publish-payload', opts.payload);
  await page.selectOption('#publish-qos', '1');
  await page.click('#publish-submit');
  const published = await until('published', ms, async () => {
    const r = await page.evaluate(() => ({
      ok: document.getElementById('publish-result').dataset.ok,
      text: document.getElementById('publish-result').textContent,
      json_hidden: document.getElementById('publish-error').hidden,
    }));
    return r.ok === 'yes' && r.json_hidden ? r : null;
  });
  await page.screenshot({ path: path.join(opts.artifacts, 'dashboard-publish.png'), fullPage: true });
  out({ event: 'published', text: published.text });

  // the test stops the broker: red, and the seconds since the last answer count up
  const first = await until('unreachable', 30000, async () => {
    const b = await badge(page);
    return b.ready === 'down' && /last update \d+ s ago/.test(b.text) ? b : null;
  });
  const n0 = Number(/(\d+) s ago/.exec(first.text)[1]);
  const later = await until('unreachable', 10000, async () => {
    const b = await badge(page);
    const m = /(\d+) s ago/.exec(b.text);
    return b.ready === 'down' && m && Number(m[1]) >= n0 + 2 ? b : null;
  });
  const colour = await page.$eval('#health-badge', (e) => getComputedStyle(e).backgroundColor);
  await page.screenshot({ path: path.join(opts.artifacts, 'dashboard-unreachable.png'), fullPage: true });
  out({ event: 'unreachable', texts: [first.text, later.text], stale: later.stale, colour });

  // the test starts it again: green
  const back = await until('recovered', 30000, async () => {
    const b = await badge(page);
    return b.ready === 'yes' && !b.stale ? b : null;
  });
  out({ event: 'recovered', ready: back.ready, text: back.text });
  if (errors.length) throw new StepError('page', errors.join('; '));
}

runFlow(opts, run);
