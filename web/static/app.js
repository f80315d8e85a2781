// app.js -- the antenna dashboard: a client of the REST API (docs/api.md).
//
// Login: an API key (Bearer) or a user and password (Basic), checked with
// GET /api/v1/info and kept in sessionStorage (this tab only), sent as
// Authorization on every call, with X-Requested-With so the server does not
// ask the browser for its own login dialog.  A 401 later logs out.
//
// Polling: /api/v1/stats every second (figures, and the charts: connections,
// and message rates computed from the counters' differences over the
// measured interval, 15 minutes kept); the clients, subscriptions and
// retained tables, the rules, the devices (devices.js) and the open client's
// detail every 3 s (and at once after a search, a kick, a delete or a
// publish); info and health (and the listeners) every 5 s.  One request per
// section at a time, each with a deadline; nothing is polled while logged
// out.  devices.js is a separate file using what window.antennaDash gives.
//
// Reachability: the stats poll is the heartbeat.  When it fails (no answer,
// a network error, a 5xx) the badge turns red and counts the seconds since
// the last answer (a 1 s ticker, independent of the requests), the figures
// are greyed; the first answer again turns it back.
//
// Everything from the server goes into the page as text (textContent),
// never as HTML; no inline script or style (the API's CSP forbids both).
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const STORE = 'antenna.auth';
  const STATS_MS = 1000, LISTS_MS = 3000, NODE_MS = 5000;
  const STATS_TIMEOUT_MS = 4000, API_TIMEOUT_MS = 10000;
  const HISTORY_MS = 15 * 60 * 1000;          // the charts' span
  const HISTORY_POINTS = HISTORY_MS / STATS_MS; // one point per stats poll
  const PROTOCOLS = { 3: '3.1', 4: '3.1.1', 5: '5.0' };
  const PAGE_SIZE = 50;
  const SYS_FILTER_LIMIT = 1000; // the API's maximum page

  const state = {
    auth: null,          // {mode: 'key', key} | {mode: 'basic', user, password}
    timers: [],
    busy: {},            // section -> request in flight
    prev: null,          // previous stats sample {t, received, sent}
    pages: { clients: 1, subscriptions: 1, retained: 1 },
    totals: { clients: 0, subscriptions: 0, retained: 0 },
    confirming: null,    // {kind, id, until}: a kick/delete waiting for its second click
    charts: null,
    lastOk: 0,           // Date.now() of the last answer to the stats poll
    down: null,          // why the broker is unreachable, or null
    health: { ready: 'unknown', text: 'health: ?', title: '' },
    detail: null,        // the client id of the open detail view, or null
  };

  // ------------------------------------------------------------ helpers

  function b64utf8(s) {
    const bytes = new TextEncoder().encode(s);
    let bin = '';
    bytes.forEach((b) => { bin += String.fromCharCode(b); });
    return btoa(bin);
  }

  function authHeader(a) {
    return a.mode === 'key' ? 'Bearer ' + a.key : 'Basic ' + b64utf8(a.user + ':' + a.password);
  }

  function toast(text, bad) {
    const t = $('toast');
    t.textContent = text;
    t.className = 'show' + (bad ? ' bad' : '');
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.className = ''; }, 3000);
  }

  function fmtNum(v) {
    if (v === undefined || v === null) return '-';
    if (typeof v !== 'number') return String(v);
    return Number.isInteger(v) ? v.toLocaleString('en-US') : v.toFixed(1);
  }

  function fmtDuration(s) {
    if (typeof s !== 'number') return '-';
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
    if (d) return d + 'd ' + h + 'h ' + m + 'm';
    if (h) return h + 'h ' + m + 'm ' + sec + 's';
    if (m) return m + 'm ' + sec + 's';
    return sec + 's';
  }

  function fmtTime(unix) {
    if (typeof unix !== 'number' || !unix) return '-';
    return new Date(unix * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  }

  // "5 min ago" for a Unix time (the ISO form goes into a title).
  function fmtAgo(unix) {
    if (typeof unix !== 'number' || !unix) return '-';
    const s = Math.max(0, Math.floor(Date.now() / 1000 - unix));
    if (s < 5) return 'just now';
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' d ago';
  }

  // A cell or dd holding a relative time, the exact one on hover.
  function setAgo(el, unix) {
    el.textContent = fmtAgo(unix);
    el.title = fmtTime(unix);
    el.dataset.unix = typeof unix === 'number' ? String(unix) : '';
    return el;
  }

  // MQTT's names for the protocol levels (4 is 3.1.1).
  function fmtProto(v) {
    if (v === undefined || v === null) return '-';
    return PROTOCOLS[v] || String(v);
  }

  function fmtExpiry(s) {
    if (s === -1) return 'never';
    if (s === 0) return 'with the connection';
    return fmtDuration(s);
  }

  function subOptions(s) {
    const opts = [];
    if (s.no_local) opts.push('no local');
    if (s.retain_as_published) opts.push('retain as published');
    if (s.retain_handling) opts.push('retain handling ' + s.retain_handling);
    if (s.identifier) opts.push('id ' + s.identifier);
    return opts.join(', ') || '-';
  }

  // A client id that the API wants in a body rather than a path (as
  // `antenna ctl` does): long, a dot segment, control characters.
  function idNeedsBody(id) {
    return id.length > 200 || id === '.' || id === '..' || /[\u0000-\u001f\u007f]/.test(id);
  }

  function cell(tr, text, cls) {
    const td = document.createElement('td');
    td.textContent = text === undefined || text === null ? '-' : String(text);
    if (cls) td.className = cls;
    td.title = td.textContent;
    tr.appendChild(td);
    return td;
  }

  function emptyRow(tbody, cols, text) {
    const tr = document.createElement('tr');
    const td = cell(tr, text, 'empty');
    td.colSpan = cols;
    tbody.appendChild(tr);
  }

  // The API: resolves to {status, data}; a 401 logs out and rejects; no
  // answer within timeoutMs rejects too.
  async function api(method, path, body, timeoutMs) {
    const headers = { 'Authorization': authHeader(state.auth),
                      'X-Requested-With': 'antenna-dashboard',
                      'Accept': 'application/json' };
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), timeoutMs || API_TIMEOUT_MS);
    const init = { method, headers, cache: 'no-store', credentials: 'omit', signal: ctl.signal };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let r, text;
    try {
      r = await fetch(path, init);
      text = await r.text();
    } catch (e) {
      throw new Error(e.name === 'AbortError' ? 'no answer within ' +
                      Math.round((timeoutMs || API_TIMEOUT_MS) / 1000) + ' s' : e.message);
    } finally {
      clearTimeout(timer);
    }
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = { error: text }; }
    }
    if (r.status === 401 && state.auth) {
      logout((data && data.error) || 'the broker refused the credentials');
      throw new Error('unauthorized');
    }
    return { status: r.status, data };
  }

  function errorText(res) {
    return (res.data && res.data.error) || ('HTTP ' + res.status);
  }

  // Runs fn for a section unless its previous run is still going.
  async function once(section, fn) {
    if (state.busy[section] || !state.auth) return;
    state.busy[section] = true;
    try { await fn(); } catch (e) {
      if (e.message !== 'unauthorized') console.warn(section + ': ' + e.message);
    } finally { state.busy[section] = false; }
  }

  // ------------------------------------------------------------ login

  function setMode(mode) {
    document.querySelectorAll('.tab').forEach((t) => t.classList.toggle('active', t.dataset.mode === mode));
    document.querySelectorAll('.mode-key').forEach((e) => { e.hidden = mode !== 'key'; });
    document.querySelectorAll('.mode-basic').forEach((e) => { e.hidden = mode !== 'basic'; });
    $('login-form').dataset.mode = mode;
  }

  async function login(ev) {
    ev.preventDefault();
    const mode = $('login-form').dataset.mode || 'key';
    const auth = mode === 'key' ? { mode, key: $('login-key').value.trim() }
                                : { mode, user: $('login-user').value, password: $('login-password').value };
    if (mode === 'key' ? !auth.key : !auth.user) {
      $('login-error').textContent = mode === 'key' ? 'Enter an API key.' : 'Enter a user name.';
      return;
    }
    $('login-error').textContent = '';
    $('login-submit').disabled = true;
    try {
      const r = await fetch('/api/v1/info', { headers: { 'Authorization': authHeader(auth),
        'X-Requested-With': 'antenna-dashboard' }, cache: 'no-store', credentials: 'omit' });
      if (r.status !== 200) {
        let msg = 'HTTP ' + r.status;
        try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
        $('login-error').textContent = 'Sign-in refused: ' + msg;
        return;
      }
      sessionStorage.setItem(STORE, JSON.stringify(auth));
      start(auth);
    } catch (e) {
      $('login-error').textContent = 'Cannot reach the broker: ' + e.message;
    } finally {
      $('login-submit').disabled = false;
    }
  }

  function logout(reason) {
    state.auth = null;
    state.timers.forEach(clearInterval);
    state.timers = [];
    state.prev = null;
    state.down = null;
    state.lastOk = 0;
    closeDetail();
    logoutHooks.forEach((fn) => fn());
    renderBadge();
    sessionStorage.removeItem(STORE);
    document.body.dataset.state = 'login';
    $('app').hidden = true;
    $('login').hidden = false;
    $('logout').hidden = true;
    $('login-error').textContent = reason || '';
  }

  function start(auth) {
    state.auth = auth;
    document.body.dataset.state = 'ready';
    $('login').hidden = true;
    $('app').hidden = false;
    $('logout').hidden = false;
    if (!state.charts) {
      const history = { capacity: HISTORY_POINTS, windowMs: HISTORY_MS };
      state.charts = {
        connections: new LineChart($('chart-connections'),
                                   [{ label: 'connections', color: '#2a6df4', fill: true }], history),
        messages: new LineChart($('chart-messages'), [{ label: 'in/s', color: '#2a6df4' },
                                                      { label: 'out/s', color: '#e8793a' }], history),
      };
    }
    refreshStats();
    refreshLists();
    refreshNode();
    state.timers.push(setInterval(refreshStats, STATS_MS));
    state.timers.push(setInterval(renderBadge, 1000));
    state.timers.push(setInterval(refreshLists, LISTS_MS));
    state.timers.push(setInterval(refreshNode, NODE_MS));
  }

  // ------------------------------------------------------------ stats

  // The badge: red "unreachable" with the seconds since the last answer
  // while the stats poll fails, else the health of /health/ready.
  function renderBadge() {
    const badge = $('health-badge');
    if (state.down && state.auth) {
      const ago = state.lastOk ? Math.floor((Date.now() - state.lastOk) / 1000) + ' s ago' : 'never';
      badge.dataset.ready = 'down';
      badge.textContent = 'unreachable: last update ' + ago;
      badge.title = state.down;
      document.body.dataset.stale = 'true';
      return;
    }
    delete document.body.dataset.stale;
    badge.dataset.ready = state.health.ready;
    badge.textContent = state.health.text;
    badge.title = state.health.title;
  }

  function markDown(why) {
    const first = !state.down;
    state.down = why || 'no answer';
    if (first) {
      state.prev = null; // no rate across the gap
      if (state.charts) {
        state.charts.connections.gap(Date.now());
        state.charts.messages.gap(Date.now());
      }
    }
    renderBadge();
  }

  function markUp() {
    const was = state.down;
    state.down = null;
    state.lastOk = Date.now();
    renderBadge();
    if (was) { refreshNode(); refreshLists(); }
  }

  async function pollStats() {
    let res;
    try {
      res = await api('GET', '/api/v1/stats', undefined, STATS_TIMEOUT_MS);
    } catch (e) {
      if (e.message === 'unauthorized') throw e;
      markDown('the broker does not answer: ' + e.message);
      return null;
    }
    if (res.status >= 500) {
      markDown('HTTP ' + res.status + ': ' + errorText(res));
      return null;
    }
    markUp();
    return res.status === 200 ? res.data : null;
  }

  function refreshStats() {
    return once('stats', async () => {
      const s = await pollStats();
      if (!s) return;
      const now = Date.now();
      const conns = (s.connections && s.connections.current) || 0;
      const msgs = s.messages || {};
      $('fig-connections').textContent = fmtNum(conns);
      $('fig-sessions').textContent = fmtNum(s.sessions);
      $('fig-subscriptions').textContent = fmtNum(s.subscriptions);
      // the broker's own $SYS topics are not counted (the table hides them)
      const sys = typeof s.retained_sys === 'number' ? s.retained_sys : 0;
      $('fig-retained').textContent = fmtNum(Math.max(0, (s.retained || 0) - sys));
      $('fig-retained').title = sys ? 'and ' + fmtNum(sys) + ' $SYS topics' : '';
      $('fig-queues').textContent = fmtNum(s.inflight) + ' / ' + fmtNum(s.queued);
      $('fig-dropped').textContent = fmtNum(msgs.dropped);
      let rin = 0, rout = 0;
      if (state.prev && now > state.prev.t) {
        const dt = (now - state.prev.t) / 1000;
        rin = Math.max(0, ((msgs.received || 0) - state.prev.received) / dt);
        rout = Math.max(0, ((msgs.sent || 0) - state.prev.sent) / dt);
        $('fig-rate-in').textContent = fmtNum(Math.round(rin * 10) / 10);
        $('fig-rate-out').textContent = fmtNum(Math.round(rout * 10) / 10);
        state.charts.messages.push(now, [rin, rout]);
      }
      state.prev = { t: now, received: msgs.received || 0, sent: msgs.sent || 0 };
      state.charts.connections.push(now, [conns]);
      state.charts.connections.draw();
      state.charts.messages.draw();
    });
  }

  // ------------------------------------------------------------ tables

  function renderPager(section, res) {
    const el = document.querySelector('.pager[data-for="' + section + '"]');
    const d = res.data || {};
    const total = typeof d.total === 'number' ? d.total : (d.count || 0);
    const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
    state.totals[section] = total;
    el.textContent = '';
    if (pages <= 1 || d.single) return;
    const prev = document.createElement('button');
    prev.textContent = '<';
    prev.disabled = state.pages[section] <= 1;
    prev.onclick = () => { state.pages[section]--; refreshSection(section); };
    const next = document.createElement('button');
    next.textContent = '>';
    next.disabled = state.pages[section] >= pages;
    next.onclick = () => { state.pages[section]++; refreshSection(section); };
    const label = document.createElement('span');
    label.textContent = 'page ' + state.pages[section] + ' of ' + pages;
    el.append(prev, label, next);
  }

  // A button that acts on its second click within 3 s ("Kick" -> "Confirm").
  function confirmButton(kind, id, label, action) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'small danger ' + kind;
    b.dataset.id = id;
    const c = state.confirming;
    const armed = c && c.kind === kind && c.id === id && c.until > Date.now();
    b.textContent = armed ? 'Confirm' : label;
    if (armed) b.classList.add('confirming');
    b.onclick = async () => {
      const cur = state.confirming;
      if (!(cur && cur.kind === kind && cur.id === id && cur.until > Date.now())) {
        state.confirming = { kind, id, until: Date.now() + 3000 };
        b.textContent = 'Confirm';
        b.classList.add('confirming');
        return;
      }
      state.confirming = null;
      b.disabled = true;
      try { await action(); } finally { b.disabled = false; }
    };
    return b;
  }

  async function kick(clientId) {
    const res = idNeedsBody(clientId)
      ? await api('POST', '/api/v1/clients/kick', { client_id: clientId })
      : await api('DELETE', '/api/v1/clients/' + encodeURIComponent(clientId));
    if (res.status === 204 || res.status === 200) toast('Kicked ' + clientId);
    else toast('Kick ' + clientId + ': ' + errorText(res), true);
    await refreshSection('clients', true);
    if (state.detail === clientId) await refreshSection('detail', true);
  }

  async function deleteRetained(topic) {
    const res = await api('DELETE', '/api/v1/retained/' + encodeURIComponent(topic));
    if (res.status === 204 || res.status === 200) toast('Deleted the retained message of ' + topic);
    else toast('Delete ' + topic + ': ' + errorText(res), true);
    await refreshSection('retained', true);
  }

  function query(params) {
    const q = new URLSearchParams();
    Object.keys(params).forEach((k) => {
      if (params[k] !== '' && params[k] !== undefined && params[k] !== null) q.set(k, params[k]);
    });
    return '?' + q.toString();
  }

  async function loadClients() {
    const res = await api('GET', '/api/v1/clients' + query({
      page: state.pages.clients, limit: PAGE_SIZE,
      client_id_prefix: $('clients-search').value.trim(),
      connected: $('clients-connected').value }));
    const tbody = $('clients-table').tBodies[0];
    if (res.status !== 200) {
      tbody.textContent = '';
      emptyRow(tbody, 12, 'Error: ' + errorText(res));
      return;
    }
    const rows = res.data.data || [];
    tbody.textContent = '';
    rows.forEach((c) => {
      const tr = document.createElement('tr');
      tr.dataset.clientId = c.client_id;
      if (c.client_id === state.detail) tr.classList.add('selected');
      // the client id opens its detail view
      const open = document.createElement('button');
      open.type = 'button';
      open.className = 'link open-detail';
      open.textContent = c.client_id;
      open.onclick = () => openDetail(c.client_id);
      cell(tr, c.client_id, 'mono client-id').replaceChildren(open);
      cell(tr, c.username, 'username');
      cell(tr, c.address, 'mono');
      cell(tr, c.listener);
      cell(tr, c.protocol === 'http' ? 'HTTP' : fmtProto(c.protocol_version), 'protocol');
      setAgo(cell(tr, '', 'since'), c.connected_at);
      cell(tr, c.keepalive);
      cell(tr, Array.isArray(c.subscriptions) ? c.subscriptions.length : c.subscriptions);
      cell(tr, c.inflight);
      cell(tr, c.queued);
      const st = cell(tr, '');
      const badge = document.createElement('span');
      badge.className = 'state ' + (c.connected ? 'on' : 'off');
      badge.textContent = c.connected ? 'connected' : 'offline';
      st.appendChild(badge);
      const act = cell(tr, '');
      if (c.connected)
        act.appendChild(confirmButton('kick', c.client_id, 'Kick', () => kick(c.client_id)));
      tbody.appendChild(tr);
    });
    if (!rows.length) emptyRow(tbody, 12, 'No clients match.');
    $('clients-count').textContent = '(' + fmtNum(res.data.total !== undefined ? res.data.total : rows.length) + ')';
    renderPager('clients', res);
  }

  async function loadSubscriptions() {
    const res = await api('GET', '/api/v1/subscriptions' + query({
      page: state.pages.subscriptions, limit: PAGE_SIZE,
      client_id: $('subscriptions-client').value.trim() }));
    const tbody = $('subscriptions-table').tBodies[0];
    tbody.textContent = '';
    if (res.status !== 200) { emptyRow(tbody, 4, 'Error: ' + errorText(res)); return; }
    const rows = res.data.data || [];
    rows.forEach((s) => {
      const tr = document.createElement('tr');
      cell(tr, s.client_id, 'mono');
      cell(tr, s.topic, 'mono');
      cell(tr, s.qos);
      cell(tr, subOptions(s));
      tbody.appendChild(tr);
    });
    if (!rows.length) emptyRow(tbody, 4, 'No subscriptions.');
    $('subscriptions-count').textContent = '(' + fmtNum(res.data.total !== undefined ? res.data.total : rows.length) + ')';
    renderPager('subscriptions', res);
  }

  // The broker's own $SYS topics are retained too: hidden unless asked for
  // (the API has no exclusion filter, so then one page of the maximum size
  // is fetched and filtered here).
  async function loadRetained() {
    const prefix = $('retained-prefix').value.trim();
    const hideSys = !$('retained-sys').checked && !prefix.startsWith('$');
    const res = await api('GET', '/api/v1/retained' + query(hideSys
      ? { page: 1, limit: SYS_FILTER_LIMIT, topic_prefix: prefix }
      : { page: state.pages.retained, limit: PAGE_SIZE, topic_prefix: prefix }));
    const tbody = $('retained-table').tBodies[0];
    tbody.textContent = '';
    $('retained-note').textContent = '';
    if (res.status !== 200) { emptyRow(tbody, 5, 'Error: ' + errorText(res)); return; }
    let rows = res.data.data || [];
    if (hideSys) {
      const all = rows.length;
      rows = rows.filter((m) => !String(m.topic).startsWith('$'));
      let note = all > rows.length ? (all - rows.length) + ' $SYS topics hidden' : '';
      if (typeof res.data.total === 'number' && res.data.total > all)
        note += (note ? '; ' : '') + 'only the first ' + all + ' shown: narrow with the prefix';
      $('retained-note').textContent = note;
      res.data = { data: rows, total: rows.length, single: true };
      state.pages.retained = 1;
    }
    rows.forEach((m) => {
      const tr = document.createElement('tr');
      tr.dataset.topic = m.topic;
      cell(tr, m.topic, 'mono');
      cell(tr, m.qos);
      cell(tr, fmtNum(m.payload_size) + ' B');
      cell(tr, m.preview === null || m.preview === undefined ? '(binary)' : m.preview, 'mono');
      cell(tr, '').appendChild(confirmButton('delete-retained', m.topic, 'Delete', () => deleteRetained(m.topic)));
      tbody.appendChild(tr);
    });
    if (!rows.length) emptyRow(tbody, 5, 'No retained messages.');
    $('retained-count').textContent = '(' + fmtNum(res.data.total !== undefined ? res.data.total : rows.length) + ')';
    renderPager('retained', res);
  }

  // ------------------------------------------------------------ rules

  // One line per action: "republish 10 ok, 0 failed, 0 dropped".
  function actionSummary(acts) {
    if (!Array.isArray(acts) || !acts.length) return 'none';
    return acts.map((a) => {
      let t = (a.type || '?') + (a.sink ? ' ' + a.sink : '') + ': ' + fmtNum(a.success) + ' ok, ' +
        fmtNum(a.failed) + ' failed, ' + fmtNum(a.dropped) + ' dropped';
      if (typeof a.queued === 'number') t += ', ' + fmtNum(a.queued) + ' queued';
      return t;
    }).join('; ');
  }

  async function ruleAction(id, verb) {
    const path = '/api/v1/rules/' + encodeURIComponent(id) + (verb === 'delete' ? '' : '/' + verb);
    const res = await api(verb === 'delete' ? 'DELETE' : 'POST', path);
    if (res.status >= 200 && res.status < 300) toast((verb === 'delete' ? 'Deleted' : verb === 'enable' ?
      'Enabled' : 'Disabled') + ' rule ' + id);
    else toast('Rule ' + id + ': ' + errorText(res), true);
    await refreshSection('rules', true);
  }

  async function loadRules() {
    const res = await api('GET', '/api/v1/rules');
    const tbody = $('rules-table').tBodies[0];
    tbody.textContent = '';
    $('rules-note').textContent = '';
    if (res.status === 409 && res.data && res.data.code === 'rules_disabled') {
      $('rules-note').textContent = 'The rule engine is off (rules.enabled in the configuration).';
      $('rule-form').hidden = true;
      emptyRow(tbody, 8, 'No rules.');
      $('rules-count').textContent = '';
      return;
    }
    $('rule-form').hidden = false;
    if (res.status !== 200) { emptyRow(tbody, 8, 'Error: ' + errorText(res)); return; }
    const rows = res.data.data || [];
    rows.forEach((r) => {
      const m = r.metrics || {};
      const tr = document.createElement('tr');
      tr.dataset.ruleId = r.id;
      cell(tr, r.id, 'mono rule-id');
      cell(tr, r.sql, 'mono rule-sql');
      const on = r.enabled !== false;
      const st = cell(tr, '');
      const badge = document.createElement('span');
      badge.className = 'state ' + (on ? 'on' : 'off');
      badge.textContent = on ? 'enabled' : 'disabled';
      st.appendChild(badge);
      cell(tr, fmtNum(m.matched), 'rule-matched');
      cell(tr, fmtNum(m.passed), 'rule-passed');
      cell(tr, fmtNum(m.failed), 'rule-failed');
      cell(tr, actionSummary(m.actions), 'rule-actions');
      const act = cell(tr, '');
      const toggle = document.createElement('button');
      toggle.type = 'button';
      toggle.className = 'small plain rule-toggle';
      toggle.textContent = on ? 'Disable' : 'Enable';
      toggle.onclick = () => ruleAction(r.id, on ? 'disable' : 'enable');
      act.append(toggle, ' ', confirmButton('delete-rule', r.id, 'Delete', () => ruleAction(r.id, 'delete')));
      tbody.appendChild(tr);
    });
    if (!rows.length) emptyRow(tbody, 8, 'No rules yet.');
    $('rules-count').textContent = '(' + fmtNum(rows.length) + ')';
  }

  // The form's JSON fields: the parsed value, or throws naming the field.
  function formJson(id, label, fallback) {
    const text = $(id).value.trim();
    if (!text) return fallback;
    try { return JSON.parse(text); } catch (e) { throw new Error(label + ' is not JSON: ' + e.message); }
  }

  function ruleOutcome(ok, text, data) {
    const result = $('rule-result'), out = $('rule-output');
    result.dataset.ok = ok ? 'yes' : 'no';
    result.textContent = text;
    out.textContent = data === undefined ? '' : JSON.stringify(data, null, 2);
    out.hidden = data === undefined;
  }

  function ruleError(res) {
    const d = res.data || {};
    return errorText(res) + (d.column ? ' (column ' + d.column + (d.token ? ', at "' + d.token + '"' : '') + ')' : '');
  }

  async function ruleSubmit(test) {
    let body;
    try {
      if (test) {
        body = { sql: $('rule-sql').value, message: formJson('rule-sample', 'The sample message', {}) };
      } else {
        body = { id: $('rule-id').value.trim(), sql: $('rule-sql').value, enabled: true,
                 actions: formJson('rule-actions', 'Actions', []) };
      }
    } catch (e) {
      ruleOutcome(false, e.message);
      return;
    }
    $('rule-test').disabled = $('rule-create').disabled = true;
    try {
      const res = await api('POST', test ? '/api/v1/rules/test' : '/api/v1/rules', body);
      if (test && res.status === 200) {
        const d = res.data || {};
        ruleOutcome(true, !d.matched ? 'The sample does not match the FROM clause.' : d.passed ?
          'Passed: ' + (d.rows || []).length + ' row(s).' : 'Matched, but WHERE filtered it out.', d.rows);
      } else if (!test && res.status === 201) {
        ruleOutcome(true, 'Created rule ' + body.id + '.');
        await refreshSection('rules', true);
      } else {
        ruleOutcome(false, 'Refused (HTTP ' + res.status + '): ' + ruleError(res), res.data);
      }
    } catch (e) {
      if (e.message !== 'unauthorized') ruleOutcome(false, 'Cannot reach the broker: ' + e.message);
    } finally {
      $('rule-test').disabled = $('rule-create').disabled = false;
    }
  }

  // ------------------------------------------------------------ client detail

  function openDetail(clientId) {
    state.detail = clientId;
    $('client-detail').hidden = false;
    $('detail-id').textContent = clientId;
    ['detail-connection', 'detail-session'].forEach((id) => { $(id).textContent = ''; });
    $('detail-subscriptions').tBodies[0].textContent = '';
    $('detail-events').tBodies[0].textContent = '';
    $('detail-error').textContent = '';
    document.querySelectorAll('#clients-table tbody tr[data-client-id]').forEach((tr) => {
      tr.classList.toggle('selected', tr.dataset.clientId === clientId);
    });
    refreshSection('detail', true).then(() => {
      if (state.detail === clientId) $('client-detail').scrollIntoView({ block: 'nearest' });
    });
  }

  function closeDetail() {
    state.detail = null;
    $('client-detail').hidden = true;
    document.querySelectorAll('#clients-table tr.selected').forEach((tr) => tr.classList.remove('selected'));
  }

  // <dt>label</dt><dd data-field=field>text</dd>; returns the dd.
  function fact(dl, label, field, text) {
    const dt = document.createElement('dt');
    dt.textContent = label;
    const dd = document.createElement('dd');
    dd.dataset.field = field;
    dd.textContent = text === undefined || text === null ? '-' : String(text);
    dl.append(dt, dd);
    return dd;
  }

  async function loadDetail() {
    const id = state.detail;
    if (id === null) return;
    const res = idNeedsBody(id) ? await api('POST', '/api/v1/clients/lookup', { client_id: id })
                                : await api('GET', '/api/v1/clients/' + encodeURIComponent(id));
    if (state.detail !== id) return; // another client was opened meanwhile
    loadEvents(id); // also for a client without a session (refused logins)
    const conn = $('detail-connection'), sess = $('detail-session');
    const tbody = $('detail-subscriptions').tBodies[0];
    const actions = $('detail-actions');
    if (res.status !== 200) {
      $('detail-error').textContent = res.status === 404 ? 'No session with this client id (any more).'
                                                          : 'Error: ' + errorText(res);
      $('client-detail').dataset.state = 'gone';
      actions.textContent = '';
      return;
    }
    const c = res.data;
    $('detail-error').textContent = '';
    $('client-detail').dataset.state = c.connected ? 'connected' : 'offline';
    conn.textContent = '';
    fact(conn, 'State', 'state', c.connected ? 'connected' : 'offline');
    fact(conn, 'Username', 'username', c.username);
    fact(conn, 'Address', 'address', c.address).classList.add('mono');
    fact(conn, 'Listener', 'listener', c.listener);
    fact(conn, 'Protocol', 'protocol', c.protocol === 'http' ? 'HTTP'
      : c.protocol_version === null || c.protocol_version === undefined
      ? '-' : 'MQTT ' + fmtProto(c.protocol_version));
    fact(conn, 'Keepalive', 'keepalive', typeof c.keepalive === 'number' ? c.keepalive + ' s' : null);
    setAgo(fact(conn, c.connected ? 'Connected since' : 'Last connected', 'connected_at', ''),
           c.connected_at);
    sess.textContent = '';
    fact(sess, 'Persistent', 'persistent', c.persistent ? 'yes' : 'no');
    fact(sess, 'Session expiry', 'session_expiry', fmtExpiry(c.session_expiry));
    fact(sess, 'Inflight', 'inflight', fmtNum(c.inflight));
    fact(sess, 'Queued', 'queued', fmtNum(c.queued));
    const subs = Array.isArray(c.subscriptions) ? c.subscriptions : [];
    fact(sess, 'Subscriptions', 'subscriptions', fmtNum(subs.length));
    tbody.textContent = '';
    subs.forEach((s) => {
      const tr = document.createElement('tr');
      tr.dataset.topic = s.topic;
      cell(tr, s.topic, 'mono');
      cell(tr, s.qos);
      cell(tr, subOptions(s));
      tbody.appendChild(tr);
    });
    if (!subs.length) emptyRow(tbody, 3, 'No subscriptions.');
    $('detail-subscriptions-count').textContent = '(' + fmtNum(subs.length) + ')';
    actions.textContent = '';
    if (c.connected)
      actions.appendChild(confirmButton('kick-detail', id, 'Kick', () => kick(id)));
  }

  // The client's recent events (GET /api/v1/clients/{id}/events), newest
  // first; a run of dropped messages is one row with its count.
  const EVENT_LABELS = {
    client_connected: 'connected', client_disconnected: 'disconnected',
    auth_failed: 'authentication failed', subscribed: 'subscribed',
    unsubscribed: 'unsubscribed', session_taken_over: 'taken over',
    session_expired: 'session expired', message_dropped: 'messages dropped',
  };

  async function loadEvents(id) {
    const res = idNeedsBody(id) || id.endsWith('/events')
      ? await api('POST', '/api/v1/clients/events', { client_id: id })
      : await api('GET', '/api/v1/clients/' + encodeURIComponent(id) + '/events');
    if (state.detail !== id) return;
    const tbody = $('detail-events').tBodies[0];
    tbody.textContent = '';
    const evs = res.status === 200 && res.data && Array.isArray(res.data.events)
      ? res.data.events : [];
    evs.forEach((e) => {
      const tr = document.createElement('tr');
      tr.dataset.event = e.event;
      setAgo(cell(tr, ''), e.at);
      cell(tr, EVENT_LABELS[e.event] || e.event);
      let detail = e.detail || '';
      if (e.event === 'subscribed') detail += ' (QoS ' + e.qos + ')';
      if (e.event === 'message_dropped' && e.count > 1) detail += ' (' + fmtNum(e.count) + ' messages)';
      cell(tr, detail, 'mono');
      tbody.appendChild(tr);
    });
    if (!evs.length) emptyRow(tbody, 3, res.status === 200 ? 'No recent events.'
                                                           : 'Events unavailable: ' + errorText(res));
    $('detail-events-count').textContent = '(' + fmtNum(evs.length) + ')';
  }

  // ------------------------------------------------------------ publish

  async function publish(ev) {
    ev.preventDefault();
    const result = $('publish-result'), errBox = $('publish-error');
    const body = { topic: $('publish-topic').value, payload: $('publish-payload').value,
                   qos: Number($('publish-qos').value), retain: $('publish-retain').checked };
    $('publish-submit').disabled = true;
    result.textContent = '';
    delete result.dataset.ok;
    errBox.hidden = true;
    errBox.textContent = '';
    try {
      const res = await api('POST', '/api/v1/publish', body);
      if (res.status === 200 && res.data) {
        const n = res.data.delivered;
        result.dataset.ok = 'yes';
        result.textContent = 'Published to ' + body.topic + ' (QoS ' + body.qos +
          (body.retain ? ', retained' : '') + '): delivered to ' + fmtNum(n) +
          ' session' + (n === 1 ? '' : 's') + '.';
        if (body.retain) refreshSection('retained', true);
      } else {
        result.dataset.ok = 'no';
        result.textContent = 'Refused (HTTP ' + res.status + '): ' + errorText(res);
        errBox.textContent = JSON.stringify(res.data, null, 2);
        errBox.hidden = false;
      }
    } catch (e) {
      if (e.message === 'unauthorized') return;
      result.dataset.ok = 'no';
      result.textContent = 'Cannot reach the broker: ' + e.message;
    } finally {
      $('publish-submit').disabled = false;
    }
  }

  const loaders = { clients: loadClients, subscriptions: loadSubscriptions, retained: loadRetained,
                    detail: loadDetail, rules: loadRules };
  const extraSections = []; // added by the other files through antennaDash.addSection
  const logoutHooks = [];

  // Reloads one table; `wait` queues behind a run in flight instead of skipping.
  async function refreshSection(section, wait) {
    for (let i = 0; wait && state.busy[section] && i < 50; i++)
      await new Promise((r) => setTimeout(r, 100));
    return once(section, loaders[section]);
  }

  function refreshLists() {
    refreshSection('clients');
    refreshSection('subscriptions');
    refreshSection('retained');
    refreshSection('rules');
    if (state.detail !== null) refreshSection('detail');
    extraSections.forEach((name) => refreshSection(name));
  }

  // ------------------------------------------------------------ node

  function refreshNode() {
    return once('node', async () => {
      const info = await api('GET', '/api/v1/info');
      let ready = null;
      try {
        ready = await api('GET', '/health/ready');
      } catch (e) {
        if (e.message === 'unauthorized') throw e;
      }
      const ok = ready && ready.status === 200;
      state.health = { ready: ready ? (ok ? 'yes' : 'no') : 'unknown',
                       text: ready ? (ok ? 'ready' : 'not ready') : 'health: ?',
                       title: ready && !ok ? errorText(ready) : '' };
      renderBadge();
      if (info.status !== 200) return;
      const i = info.data;
      $('node-line').textContent = (i.node || '') + '  v' + (i.version || '?') +
        '  up ' + fmtDuration(i.uptime_s);
      const dl = $('node-facts');
      dl.textContent = '';
      fact(dl, 'Node', 'node', i.node);
      fact(dl, 'Version', 'version', i.version);
      fact(dl, 'Uptime', 'uptime', fmtDuration(i.uptime_s));
      setAgo(fact(dl, 'Started', 'started_at', ''), i.started_at);
      fact(dl, 'Workers', 'workers', i.workers);
      fact(dl, 'Listeners', 'listeners', i.listeners);
      fact(dl, 'Ready', 'ready', ready ? (ok ? 'yes' : 'no: ' + errorText(ready)) : 'unknown');
      dl.dataset.ready = ok ? 'yes' : 'no';

      const ls = await api('GET', '/api/v1/listeners');
      const tbody = $('listeners-table').tBodies[0];
      tbody.textContent = '';
      if (ls.status !== 200) { emptyRow(tbody, 5, 'Error: ' + errorText(ls)); return; }
      (ls.data.data || []).forEach((l) => {
        const tr = document.createElement('tr');
        tr.dataset.port = l.port;
        cell(tr, l.name);
        cell(tr, l.transport);
        cell(tr, (String(l.bind).includes(':') ? '[' + l.bind + ']' : l.bind) + ':' + l.port, 'mono');
        cell(tr, fmtNum(l.connections));
        cell(tr, l.max_connections ? fmtNum(l.max_connections) : 'no limit');
        tbody.appendChild(tr);
      });
    });
  }

  // ------------------------------------------------------------ other files

  // What the page's other scripts (devices.js) use: the API call, the
  // helpers that put server text into the page, and the polling.  A
  // section added here is loaded with the lists (every 3 s, one run at a
  // time) and at once by refresh(name, true); onLogout runs at log out.
  window.antennaDash = Object.freeze({
    api, errorText, cell, emptyRow, fact, setAgo, fmtAgo, fmtTime, fmtNum, query, toast, debounce,
    confirmButton,
    addSection(name, loader) { loaders[name] = loader; extraSections.push(name); },
    refresh: refreshSection,
    onLogout(fn) { logoutHooks.push(fn); },
    signedIn: () => state.auth !== null,
  });

  // ------------------------------------------------------------ wiring

  function debounce(fn, ms) {
    let t = null;
    return () => { clearTimeout(t); t = setTimeout(fn, ms); };
  }

  document.addEventListener('DOMContentLoaded', () => {
    document.querySelectorAll('.tab').forEach((t) => { t.onclick = () => setMode(t.dataset.mode); });
    setMode('key');
    $('login-form').addEventListener('submit', login);
    $('logout').onclick = () => logout('');
    $('detail-close').onclick = closeDetail;
    $('publish-form').addEventListener('submit', publish);
    $('rule-form').addEventListener('submit', (ev) => { ev.preventDefault(); ruleSubmit(false); });
    $('rule-test').onclick = () => ruleSubmit(true);
    const search = (section) => debounce(() => { state.pages[section] = 1; refreshSection(section, true); }, 250);
    $('clients-search').addEventListener('input', search('clients'));
    $('clients-connected').addEventListener('change', search('clients'));
    $('subscriptions-client').addEventListener('input', search('subscriptions'));
    $('retained-prefix').addEventListener('input', search('retained'));
    $('retained-sys').addEventListener('change', search('retained'));
    window.addEventListener('resize', debounce(() => {
      if (state.charts) { state.charts.connections.draw(); state.charts.messages.draw(); }
    }, 100));
    let saved = null;
    try { saved = JSON.parse(sessionStorage.getItem(STORE) || 'null'); } catch (e) { saved = null; }
    if (saved && (saved.key || saved.user)) start(saved);
  });
})();
