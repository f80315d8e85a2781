// app.js -- the antenna dashboard: a client of the REST API (docs/api.md).
//
// Login: an API key (Bearer) or a user and password (Basic), checked with
// GET /api/v1/info and kept in sessionStorage (this tab only), sent as
// Authorization on every call, with X-Requested-With so the server does not
// ask the browser for its own login dialog.  A 401 later logs out.
//
// Polling: /api/v1/stats every second (figures, and the charts: connections,
// and message rates computed from the counters' differences over the
// measured interval); the clients, subscriptions and retained tables every
// 3 s (and at once after a search, a kick or a delete); info and health
// (and the listeners) every 5 s.  One request per section at a time; nothing is polled while
// logged out.  Everything from the server goes into the page as text
// (textContent), never as HTML.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const STORE = 'antenna.auth';
  const STATS_MS = 1000, LISTS_MS = 3000, NODE_MS = 5000;
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

  // The API: resolves to {status, data}; a 401 logs out and rejects.
  async function api(method, path, body) {
    const headers = { 'Authorization': authHeader(state.auth),
                      'X-Requested-With': 'antenna-dashboard',
                      'Accept': 'application/json' };
    const init = { method, headers, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    let data = null;
    const text = await r.text();
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
      state.charts = {
        connections: new LineChart($('chart-connections'), [{ label: 'connections', color: '#2a6df4', fill: true }]),
        messages: new LineChart($('chart-messages'), [{ label: 'in/s', color: '#2a6df4' },
                                                      { label: 'out/s', color: '#e8793a' }]),
      };
    }
    refreshStats();
    refreshLists();
    refreshNode();
    state.timers.push(setInterval(refreshStats, STATS_MS));
    state.timers.push(setInterval(refreshLists, LISTS_MS));
    state.timers.push(setInterval(refreshNode, NODE_MS));
  }

  // ------------------------------------------------------------ stats

  function refreshStats() {
    return once('stats', async () => {
      const res = await api('GET', '/api/v1/stats');
      if (res.status !== 200) return;
      const s = res.data, now = Date.now();
      const conns = (s.connections && s.connections.current) || 0;
      const msgs = s.messages || {};
      $('fig-connections').textContent = fmtNum(conns);
      $('fig-sessions').textContent = fmtNum(s.sessions);
      $('fig-subscriptions').textContent = fmtNum(s.subscriptions);
      $('fig-retained').textContent = fmtNum(s.retained);
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
    const res = await api('DELETE', '/api/v1/clients/' + encodeURIComponent(clientId));
    if (res.status === 204 || res.status === 200) toast('Kicked ' + clientId);
    else toast('Kick ' + clientId + ': ' + errorText(res), true);
    await refreshSection('clients', true);
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
      emptyRow(tbody, 11, 'Error: ' + errorText(res));
      return;
    }
    const rows = res.data.data || [];
    tbody.textContent = '';
    rows.forEach((c) => {
      const tr = document.createElement('tr');
      tr.dataset.clientId = c.client_id;
      cell(tr, c.client_id, 'mono client-id');
      cell(tr, c.username);
      cell(tr, c.address, 'mono');
      cell(tr, c.listener);
      cell(tr, c.protocol_version === 4 ? '3.1.1' : c.protocol_version === 5 ? '5' :
               c.protocol_version === 3 ? '3.1' : c.protocol_version);
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
    if (!rows.length) emptyRow(tbody, 11, 'No clients match.');
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
      const opts = [];
      if (s.no_local) opts.push('no local');
      if (s.retain_as_published) opts.push('retain as published');
      if (s.retain_handling) opts.push('retain handling ' + s.retain_handling);
      if (s.identifier) opts.push('id ' + s.identifier);
      cell(tr, opts.join(', ') || '-');
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

  const loaders = { clients: loadClients, subscriptions: loadSubscriptions, retained: loadRetained };

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
      const badge = $('health-badge');
      const ok = ready && ready.status === 200;
      badge.dataset.ready = ready ? (ok ? 'yes' : 'no') : 'unknown';
      badge.textContent = ready ? (ok ? 'ready' : 'not ready') : 'health: ?';
      if (ready && !ok) badge.title = errorText(ready);
      if (info.status !== 200) return;
      const i = info.data;
      $('node-line').textContent = (i.node || '') + '  v' + (i.version || '?') +
        '  up ' + fmtDuration(i.uptime_s);
      const dl = $('node-facts');
      dl.textContent = '';
      const facts = [['Node', i.node], ['Version', i.version], ['Uptime', fmtDuration(i.uptime_s)],
                     ['Started', fmtTime(i.started_at)], ['Workers', i.workers],
                     ['Listeners', i.listeners],
                     ['Ready', ready ? (ok ? 'yes' : 'no: ' + errorText(ready)) : 'unknown']];
      facts.forEach(([k, v]) => {
        const dt = document.createElement('dt');
        dt.textContent = k;
        const dd = document.createElement('dd');
        dd.textContent = v === undefined || v === null ? '-' : String(v);
        dl.append(dt, dd);
      });
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
