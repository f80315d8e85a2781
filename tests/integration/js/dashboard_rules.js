#!/usr/bin/env node
// The dashboard's Rules card in headless Chromium, for
// tests/integration/test_83_dashboard_rules.py (the conventions of
// dashboard.js, through dashlib.js).
//
//   node dashboard_rules.js --url http://127.0.0.1:PORT/ --key KEY \
//        --rule ID --matched N --new-id ID --user-data-dir DIR \
//        --artifacts DIR [--timeout 90] [--chromium PATH]
//
// Events, in this order:
//   {"event": "logged_in"}
//   {"event": "listed", "row": {...}}  `--rule`'s row, once its Matched
//                                      figure reached N (the test published)
//   {"event": "test_refused", "text"}  Test with a broken statement: the
//                                      error names the column
//   {"event": "tested", "text", "rows"} Test with a sample message that passes
//   {"event": "create_refused", "text"} Create with actions that are not JSON
//   {"event": "created", "row"}        Create: `--new-id` appears, enabled
//   {"event": "disabled", "row"}       its Disable button: the badge says so
//   {"event": "deleted"}               Delete + Confirm: the row is gone
// Screenshot: dashboard-rules.png in --artifacts.
'use strict';
const path = require('path');
const { parseArgs, out, StepError, until, watchErrors, loginWithKey, runFlow } = require('./dashlib');

const opts = parseArgs('dashboard_rules.js',
  { url: '', key: '', rule: '', matched: 1, 'new-id': '', 'user-data-dir': '', artifacts: '',
    timeout: 90, chromium: '/usr/bin/chromium' },
  ['url', 'key', 'rule', 'new-id', 'user-data-dir', 'artifacts'],
  '--url URL --key KEY --rule ID --matched N --new-id ID --user-data-dir DIR --artifacts DIR ' +
  '[--timeout S] [--chromium PATH]');

// The rules table's row of id: its cells by class, or null.
async function ruleRow(page, id) {
  return page.evaluate((rid) => {
    const tr = Array.from(document.querySelectorAll('#rules-table tbody tr[data-rule-id]'))
      .find((x) => x.dataset.ruleId === rid);
    if (!tr) return null;
    const t = (sel) => (tr.querySelector(sel) || {}).textContent;
    return { id: t('td.rule-id'), sql: t('td.rule-sql'), state: t('span.state'),
             matched: t('td.rule-matched'), passed: t('td.rule-passed'), failed: t('td.rule-failed'),
             actions: t('td.rule-actions') };
  }, id);
}

async function result(page) {
  return page.evaluate(() => ({
    ok: document.getElementById('rule-result').dataset.ok,
    text: document.getElementById('rule-result').textContent,
    output: document.getElementById('rule-output').hidden ? null
      : document.getElementById('rule-output').textContent,
  }));
}

// Clears the result line, runs act, and waits for a new outcome `ok`.
async function outcome(page, step, ms, ok, act) {
  await page.evaluate(() => {
    const r = document.getElementById('rule-result');
    r.textContent = '';
    delete r.dataset.ok;
  });
  await act();
  return until(step, ms, async () => {
    const r = await result(page);
    return r.ok === ok && r.text ? r : null;
  });
}

async function run(page) {
  const ms = 20000;
  const errors = watchErrors(page);
  await loginWithKey(page, opts.url, opts.key, ms);
  out({ event: 'logged_in' });

  const listed = await until('listed', ms, async () => {
    const r = await ruleRow(page, opts.rule);
    return r && Number(r.matched.replace(/,/g, '')) >= opts.matched ? r : null;
  });
  out({ event: 'listed', row: listed });

  await page.fill('#rule-sql', 'SELECT clientid FROM "a/b" WHERE');
  const bad = await outcome(page, 'test_refused', ms, 'no', () => page.click('#rule-test'));
  out({ event: 'test_refused', text: bad.text });

  await page.fill('#rule-sql', 'SELECT clientid, payload.temp AS t FROM "sensors/+/data" WHERE payload.temp > 30');
  await page.fill('#rule-sample', JSON.stringify({ topic: 'sensors/s9/data', payload: '{"temp": 42}',
                                                  clientid: 's9' }));
  const tested = await outcome(page, 'tested', ms, 'yes', () => page.click('#rule-test'));
  out({ event: 'tested', text: tested.text, rows: JSON.parse(tested.output) });

  await page.fill('#rule-id', opts['new-id']);
  await page.fill('#rule-actions', '[{"type": "republish", topic: "x"}]');
  const refused = await outcome(page, 'create_refused', ms, 'no', () => page.click('#rule-create'));
  out({ event: 'create_refused', text: refused.text });

  await page.fill('#rule-actions', '[{"type": "republish", "topic": "hot/${clientid}", "payload": "${t}"}]');
  await outcome(page, 'created', ms, 'yes', () => page.click('#rule-create'));
  const created = await until('created', ms, async () => {
    const r = await ruleRow(page, opts['new-id']);
    return r && r.state === 'enabled' ? r : null;
  });
  await page.screenshot({ path: path.join(opts.artifacts, 'dashboard-rules.png'), fullPage: true });
  out({ event: 'created', row: created });

  const sel = '#rules-table tbody tr[data-rule-id="' + opts['new-id'] + '"]';
  await page.click(sel + ' button.rule-toggle');
  const disabled = await until('disabled', ms, async () => {
    const r = await ruleRow(page, opts['new-id']);
    return r && r.state === 'disabled' ? r : null;
  });
  out({ event: 'disabled', row: disabled });

  await page.click(sel + ' button.delete-rule');
  await page.waitForSelector(sel + ' button.delete-rule.confirming', { timeout: ms });
  await page.click(sel + ' button.delete-rule');
  await until('deleted', ms, async () => (await ruleRow(page, opts['new-id'])) === null);
  out({ event: 'deleted' });
  if (errors.length) throw new StepError('page', errors.join('; '));
}

runFlow(opts, run);
