#!/usr/bin/env node
// The dashboard's Devices cards in headless Chromium, for
// tests/integration/test_92_dashboard_devices.py (the conventions of
// dashboard.js, through dashlib.js).
//
//   node dashboard_devices.js --url http://127.0.0.1:PORT/ --key KEY \
//        --device ID --offline ID --tag k=v --user-data-dir DIR \
//        --artifacts DIR [--timeout 90] [--chromium PATH]
//
// `--device` is connected (a paho client of the test that follows its
// shadow and answers commands: "selftest" with failed, anything else with
// succeeded); `--offline` never connects; `--tag` is one of the first's
// tags and not the second's.  Events, in this order:
//   {"event": "logged_in"}
//   {"event": "listed", "rows": {id: row}}   both devices, the first connected
//   {"event": "filtered", "tag": [ids], "disconnected": [ids]}
//   {"event": "tag_refused", "text"}         a tag filter without '='
//   {"event": "opened", "facts", "registry", "attributes", "version"}
//   {"event": "desired_set", "text", "desired"} the form's PATCH (led on,
//                                            rate 5): the test's device gets
//                                            the delta and reports led on
//   {"event": "reported", "reported", "delta"} the page shows the report
//   {"event": "conflict", "text"}            a change based on version 0
//   {"event": "command_refused", "text"}     params that are not JSON
//   {"event": "command_failed", "text"}      "selftest": failed
//   {"event": "command_succeeded", "text", "statuses", "output"}
//   {"event": "commands_listed", "rows"}     newest first
// Screenshot: dashboard-devices.png in --artifacts.
'use strict';
const path = require('path');
const { parseArgs, out, StepError, until, watchErrors, loginWithKey, runFlow } = require('./dashlib');

const opts = parseArgs('dashboard_devices.js',
  { url: '', key: '', device: '', offline: '', tag: '', 'user-data-dir': '', artifacts: '',
    timeout: 90, chromium: '/usr/bin/chromium' },
  ['url', 'key', 'device', 'offline', 'tag', 'user-data-dir', 'artifacts'],
  '--url URL --key KEY --device ID --offline ID --tag K=V --user-data-dir DIR --artifacts DIR ' +
  '[--timeout S] [--chromium PATH]');

// The devices table: {id: {presence, since, peer, protocol, node, tags}}.
async function deviceRows(page) {
  return page.evaluate(() => {
    const rows = {};
    document.querySelectorAll('#devices-table tbody tr[data-device-id]').forEach((tr) => {
      const t = (sel) => (tr.querySelector(sel) || {}).textContent;
      rows[tr.dataset.deviceId] = { presence: t('td.presence'), since: t('td.since'), peer: t('td.peer'),
                                    protocol: t('td.protocol'), node: t('td.device-node'), tags: t('td.tags') };
    });
    return rows;
  });
}

// A <dl class="facts"> as {field: text}.
async function facts(page, id) {
  return page.evaluate((dl) => {
    const f = {};
    document.querySelectorAll('#' + dl + ' dd[data-field]').forEach((dd) => { f[dd.dataset.field] = dd.textContent; });
    return f;
  }, id);
}

async function text(page, id) {
  return page.evaluate((x) => document.getElementById(x).textContent, id);
}

async function result(page, id) {
  return page.evaluate((x) => {
    const r = document.getElementById(x);
    return { ok: r.dataset.ok, status: r.dataset.status, text: r.textContent };
  }, id);
}

async function clearResult(page, id) {
  await page.evaluate((x) => {
    const r = document.getElementById(x);
    r.textContent = '';
    delete r.dataset.ok;
    delete r.dataset.status;
  }, id);
}

// Runs act after clearing the result line `id`; waits for outcome `ok`.
async function outcome(page, step, ms, id, ok, act) {
  await clearResult(page, id);
  await act();
  return until(step, ms, async () => {
    const r = await result(page, id);
    return r.ok === ok && r.text ? r : null;
  });
}

async function listedIds(page) { return Object.keys(await deviceRows(page)).sort(); }

function sameIds(a, b) { return JSON.stringify(a) === JSON.stringify(b.slice().sort()); }

async function sendCommand(page, name, params) {
  await page.fill('#command-name', name);
  await page.fill('#command-params', params);
  await page.selectOption('#command-qos', '1');
  await page.fill('#command-timeout', '15');
  await clearResult(page, 'command-result');
  await page.click('#command-submit');
}

async function run(page) {
  const ms = 30000;
  const dev = opts.device, off = opts.offline;
  const errors = watchErrors(page);
  await loginWithKey(page, opts.url, opts.key, ms);
  out({ event: 'logged_in' });

  const rows = await until('listed', ms, async () => {
    const r = await deviceRows(page);
    return r[dev] && r[off] && r[dev].presence === 'connected' && r[dev].peer !== '-' ? r : null;
  });
  out({ event: 'listed', rows });

  await page.fill('#devices-tag', opts.tag);
  const byTag = await until('filter_tag', ms, async () => {
    const ids = await listedIds(page);
    return sameIds(ids, [dev]) ? ids : null;
  });
  await page.fill('#devices-tag', '');
  await page.selectOption('#devices-connected', 'false');
  const disconnected = await until('filter_connected', ms, async () => {
    const ids = await listedIds(page);
    return ids.indexOf(off) >= 0 && ids.indexOf(dev) < 0 ? ids : null;
  });
  out({ event: 'filtered', tag: byTag, disconnected });
  await page.fill('#devices-tag', 'site');
  const refused = await until('tag_refused', ms, async () => {
    const t = await text(page, 'devices-note');
    return t.includes('key=value') ? t : null;
  });
  out({ event: 'tag_refused', text: refused });
  await page.fill('#devices-tag', '');
  await page.selectOption('#devices-connected', '');
  await until('unfiltered', ms, async () => (await listedIds(page)).indexOf(dev) >= 0);

  await page.click('#devices-table tbody tr[data-device-id="' + dev + '"] button.open-device');
  const opened = await until('opened', ms, async () => {
    const f = await facts(page, 'device-presence');
    const meta = await text(page, 'shadow-desired-meta');
    return f.state === 'connected' && meta ? f : null;
  });
  out({ event: 'opened', facts: opened, registry: await facts(page, 'device-registry'),
        attributes: await text(page, 'device-attributes'),
        version: await page.inputValue('#shadow-version') });

  await page.fill('#shadow-state', '{"led": "on", "rate": 5}');
  const set = await outcome(page, 'desired_set', ms, 'shadow-result', 'yes', () => page.click('#shadow-submit'));
  out({ event: 'desired_set', text: set.text, desired: JSON.parse(await text(page, 'shadow-desired')) });

  // the test's device reports {"led": "on"}: the page's poll shows it
  const reported = await until('reported', ms, async () => {
    let rep, delta;
    try {
      rep = JSON.parse(await text(page, 'shadow-reported'));
      delta = JSON.parse(await text(page, 'shadow-delta'));
    } catch (e) { return null; }
    return rep.led === 'on' ? { reported: rep, delta } : null;
  });
  out(Object.assign({ event: 'reported' }, reported));

  await page.fill('#shadow-state', '{"led": "off"}');
  await page.fill('#shadow-version', '0');
  const conflict = await outcome(page, 'conflict', ms, 'shadow-result', 'no', () => page.click('#shadow-submit'));
  out({ event: 'conflict', text: conflict.text });

  await page.fill('#command-name', 'reboot');
  await page.fill('#command-params', '{delay: 1}');
  const bad = await outcome(page, 'command_refused', ms, 'command-result', 'no', () => page.click('#command-submit'));
  out({ event: 'command_refused', text: bad.text });

  await sendCommand(page, 'selftest', '{"fail": true}');
  const failed = await until('command_failed', ms, async () => {
    const r = await result(page, 'command-result');
    return r.status === 'failed' ? r : null;
  });
  out({ event: 'command_failed', text: failed.text });

  await sendCommand(page, 'reboot', '{"delay": 1}');
  const statuses = [];
  const done = await until('command_succeeded', ms, async () => {
    const r = await result(page, 'command-result');
    if (r.status && statuses[statuses.length - 1] !== r.status) statuses.push(r.status);
    return r.status === 'succeeded' && r.ok === 'yes' ? r : null;
  });
  out({ event: 'command_succeeded', text: done.text, statuses,
        output: JSON.parse(await text(page, 'command-output')) });

  const listed = await until('commands_listed', ms, async () => {
    const r = await page.evaluate(() => Array.from(
      document.querySelectorAll('#device-commands tbody tr[data-command-id]')).map((tr) => ({
      id: tr.dataset.commandId, name: tr.querySelector('td.command-name').textContent,
      status: tr.querySelector('td.command-status').textContent,
      result: tr.querySelector('td.command-output').textContent })));
    return r.length >= 2 && r[0].status === 'succeeded' ? r : null;
  });
  await page.screenshot({ path: path.join(opts.artifacts, 'dashboard-devices.png'), fullPage: true });
  out({ event: 'commands_listed', rows: listed });
  if (errors.length) throw new StepError('page', errors.join('; '));
}

runFlow(opts, run);
