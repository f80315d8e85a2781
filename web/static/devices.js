// devices.js -- the dashboard's Devices cards (issue 18): the device
// registry with each device's presence, and one device's detail: presence,
// tags and attributes, its shadow with a form that changes desired, its
// commands, and a form that sends one and follows its status.
//
// A client of the REST API like app.js (docs/devices.md, docs/commands.md),
// through what app.js gives in window.antennaDash (the API call with the
// signed-in credential, the text-only cell helpers, the polling): the list
// and the open device are sections of app.js's 3 s refresh.  The shadow's
// form sends the version it was based on: the version field follows the
// shadow until the operator types a change (or edits the version), so a
// change made meanwhile by someone else is refused (409), and shown as such.
//
// A command sent from the page is followed by GET /api/v1/commands/{id}
// every second (every 5 s after a minute: a command may wait hours for an
// offline device) until its status is final, the device view closes,
// another command is sent, or the operator logs out.  Not ?wait=: it holds
// one of the API's two threads for up to 5 s, and the broker lets one such
// request wait at a time (docs/api.md).
//
// Everything from the server goes into the page as text; no inline script
// or style (the API's CSP).
'use strict';

(function () {
  const D = window.antennaDash;
  if (!D) return; // app.js did not load
  const $ = (id) => document.getElementById(id);
  const PAGE_SIZE = 50;
  const COMMANDS_SHOWN = 50; // the newest; the API lists them all
  const WATCH_FAST_MS = 1000, WATCH_SLOW_MS = 5000, WATCH_FAST_FOR_MS = 60000;
  const FINAL = ['succeeded', 'failed', 'timed_out', 'expired', 'cancelled'];
  const STATUS_LABELS = {
    queued: 'queued', sent: 'sent', delivered: 'delivered', acked: 'acknowledged',
    succeeded: 'succeeded', failed: 'failed', timed_out: 'timed out', expired: 'expired',
    cancelled: 'cancelled',
  };

  const st = {
    page: 1,
    total: 0,
    open: null,    // the id of the device shown in the detail card, or null
    watch: null,   // {id, device, timer, started, last}: the command followed
  };

  // ------------------------------------------------------------ helpers

  function devPath(id) { return '/api/v1/devices/' + encodeURIComponent(id); }

  function isFinal(status) { return FINAL.indexOf(status) >= 0; }

  function statusClass(status) {
    if (status === 'succeeded') return 'state on';
    if (status === 'failed' || status === 'timed_out' || status === 'expired') return 'state bad';
    if (status === 'cancelled') return 'state off';
    return 'state pending';
  }

  function badge(el, cls, text) {
    const b = document.createElement('span');
    b.className = cls;
    b.textContent = text;
    el.appendChild(b);
    return b;
  }

  function tagsText(tags) {
    if (!tags || typeof tags !== 'object') return '';
    return Object.keys(tags).map((k) => k + '=' + tags[k]).join(', ');
  }

  function json(v) { return v === undefined ? '' : JSON.stringify(v, null, 2); }

  // Milliseconds since the epoch into app.js's Unix seconds (or null).
  function secs(ms) { return typeof ms === 'number' && ms > 0 ? ms / 1000 : null; }

  function outcome(id, ok, text) {
    const el = $(id);
    if (ok === null) delete el.dataset.ok;
    else el.dataset.ok = ok ? 'yes' : 'no';
    el.textContent = text;
  }

  // The tag filter as the API wants it (k=v,k2=v2), or throws.
  function tagFilter() {
    const text = $('devices-tag').value.trim();
    if (!text) return '';
    const parts = text.split(',').map((p) => p.trim()).filter((p) => p);
    parts.forEach((p) => {
      if (p.indexOf('=') <= 0) throw new Error('A tag filter is key=value (several: site=lyon,kind=meter).');
    });
    return parts.join(',');
  }

  // ------------------------------------------------------------ the list

  function renderPager() {
    const el = $('devices-pager');
    const pages = Math.max(1, Math.ceil(st.total / PAGE_SIZE));
    el.textContent = '';
    if (pages <= 1) return;
    const go = (d) => { st.page += d; D.refresh('devices', true); };
    const prev = document.createElement('button');
    prev.textContent = '<';
    prev.disabled = st.page <= 1;
    prev.onclick = () => go(-1);
    const next = document.createElement('button');
    next.textContent = '>';
    next.disabled = st.page >= pages;
    next.onclick = () => go(1);
    const label = document.createElement('span');
    label.textContent = 'page ' + st.page + ' of ' + pages;
    el.append(prev, label, next);
  }

  async function loadDevices() {
    const tbody = $('devices-table').tBodies[0];
    const note = $('devices-note');
    let tag;
    try {
      tag = tagFilter();
    } catch (e) {
      note.textContent = e.message;
      tbody.textContent = '';
      D.emptyRow(tbody, 7, 'Fix the tag filter.');
      return;
    }
    const res = await D.api('GET', '/api/v1/devices' + D.query({
      page: st.page, limit: PAGE_SIZE, prefix: $('devices-prefix').value.trim(), tag,
      connected: $('devices-connected').value }));
    tbody.textContent = '';
    note.textContent = '';
    if (res.status === 409 && res.data && res.data.code === 'devices_disabled') {
      note.textContent = 'The device registry is off (devices.enabled in the configuration).';
      D.emptyRow(tbody, 7, 'No devices.');
      $('devices-count').textContent = '';
      st.total = 0;
      renderPager();
      return;
    }
    if (res.status !== 200) { D.emptyRow(tbody, 7, 'Error: ' + D.errorText(res)); return; }
    const rows = res.data.data || [];
    rows.forEach((d) => {
      const p = d.presence || {};
      const tr = document.createElement('tr');
      tr.dataset.deviceId = d.id;
      if (d.id === st.open) tr.classList.add('selected');
      const open = document.createElement('button');
      open.type = 'button';
      open.className = 'link open-device';
      open.textContent = d.id;
      open.onclick = () => openDevice(d.id);
      D.cell(tr, d.id, 'mono device-id').replaceChildren(open);
      const pres = D.cell(tr, '', 'presence');
      badge(pres, 'state ' + (p.connected ? 'on' : 'off'), p.connected ? 'connected' : 'disconnected');
      if (d.disabled) { pres.append(' '); badge(pres, 'state bad', 'disabled'); }
      D.setAgo(D.cell(tr, '', 'since'), secs(p.since_ms));
      D.cell(tr, p.peer || '-', 'mono peer');
      D.cell(tr, p.protocol ? (p.protocol === 'http' ? 'HTTP' : 'MQTT ' + p.protocol) : '-', 'protocol');
      D.cell(tr, p.node || '-', 'device-node');
      D.cell(tr, tagsText(d.tags) || '-', 'mono tags');
      tbody.appendChild(tr);
    });
    if (!rows.length) D.emptyRow(tbody, 7, 'No devices match.');
    st.total = typeof res.data.total === 'number' ? res.data.total : rows.length;
    $('devices-count').textContent = '(' + D.fmtNum(st.total) + ')';
    renderPager();
  }

  // ------------------------------------------------------------ one device

  function openDevice(id) {
    if (st.open !== id) stopWatch();
    st.open = id;
    $('device-detail').hidden = false;
    $('device-id').textContent = id;
    ['device-presence', 'device-registry', 'device-attributes', 'shadow-desired', 'shadow-reported',
     'shadow-delta', 'shadow-desired-meta', 'shadow-reported-meta', 'device-error', 'shadow-note',
     'commands-note', 'device-commands-count'].forEach((x) => { $(x).textContent = ''; });
    $('device-commands').tBodies[0].textContent = '';
    $('shadow-state').value = '';
    $('shadow-version').value = '';
    delete $('shadow-version').dataset.touched;
    outcome('shadow-result', null, '');
    outcome('command-result', null, '');
    delete $('command-result').dataset.status;
    $('command-output').hidden = true;
    document.querySelectorAll('#devices-table tbody tr[data-device-id]').forEach((tr) => {
      tr.classList.toggle('selected', tr.dataset.deviceId === id);
    });
    D.refresh('device', true).then(() => {
      if (st.open === id) $('device-detail').scrollIntoView({ block: 'nearest' });
    });
  }

  function closeDevice() {
    stopWatch();
    st.open = null;
    $('device-detail').hidden = true;
    document.querySelectorAll('#devices-table tr.selected').forEach((tr) => tr.classList.remove('selected'));
  }

  async function loadDevice() {
    const id = st.open;
    if (id === null) return;
    if (id.indexOf('/') >= 0) { // one path segment: the routes cannot take it
      $('device-error').textContent = 'This id has a "/": the API\'s device routes cannot address it.';
      return;
    }
    const [dev, shadow, cmds] = await Promise.all([
      D.api('GET', devPath(id)), D.api('GET', devPath(id) + '/shadow'),
      D.api('GET', devPath(id) + '/commands')]);
    if (st.open !== id) return; // another device was opened meanwhile
    if (dev.status !== 200) {
      $('device-error').textContent = dev.status === 404 ? 'No device with this id (any more).'
                                                         : 'Error: ' + D.errorText(dev);
      $('device-detail').dataset.state = 'gone';
      return;
    }
    $('device-error').textContent = '';
    renderDevice(dev.data);
    renderShadow(shadow);
    renderCommands(cmds);
  }

  function renderDevice(d) {
    const p = d.presence || {};
    $('device-detail').dataset.state = p.connected ? 'connected' : 'disconnected';
    const pres = $('device-presence');
    pres.textContent = '';
    D.fact(pres, 'State', 'state', p.connected ? 'connected' : 'disconnected');
    D.setAgo(D.fact(pres, p.connected ? 'Connected since' : 'Disconnected since', 'since', ''),
             secs(p.since_ms));
    D.fact(pres, 'Peer', 'peer', p.peer).classList.add('mono');
    D.fact(pres, 'Listener', 'listener', p.listener);
    D.fact(pres, 'Protocol', 'protocol', p.protocol ? (p.protocol === 'http' ? 'HTTP' : 'MQTT ' + p.protocol)
                                                      : null);
    D.fact(pres, 'Node', 'node', p.node);
    D.fact(pres, 'Connects', 'connects', D.fmtNum(p.connects));
    const reg = $('device-registry');
    reg.textContent = '';
    D.fact(reg, 'Tags', 'tags', tagsText(d.tags) || 'none').classList.add('mono');
    D.fact(reg, 'Credentials', 'credentials', (d.credentials || []).join(', ') || 'none');
    D.fact(reg, 'Disabled', 'disabled', d.disabled ? 'yes' : 'no');
    D.setAgo(D.fact(reg, 'Created', 'created', ''), secs(d.created_ms));
    D.setAgo(D.fact(reg, 'Changed', 'updated', ''), secs(d.updated_ms));
    const attrs = d.attributes && Object.keys(d.attributes).length ? d.attributes : null;
    $('device-attributes').textContent = attrs ? json(attrs) : 'none';
  }

  // ------------------------------------------------------------ shadow

  function versionMeta(v, ms) {
    return '(version ' + D.fmtNum(v || 0) + (ms ? ', ' + D.fmtAgo(secs(ms)) : '') + ')';
  }

  function renderShadow(res) {
    const off = res.status === 409 && res.data && res.data.code === 'shadow_disabled';
    $('shadow-docs').hidden = $('shadow-form').hidden = off || res.status !== 200;
    if (res.status !== 200) {
      $('shadow-note').textContent = off ? 'The shadow is off (devices.shadow.enabled in the configuration).'
                                         : 'Shadow unavailable: ' + D.errorText(res);
      return;
    }
    $('shadow-note').textContent = '';
    const s = res.data || {};
    $('shadow-desired').textContent = json(s.desired || {});
    $('shadow-reported').textContent = json(s.reported || {});
    const delta = s.delta && Object.keys(s.delta).length ? s.delta : null;
    $('shadow-delta').textContent = delta ? json(delta) : 'none: the device reported every desired key';
    $('shadow-delta').dataset.empty = delta ? 'no' : 'yes';
    $('shadow-desired-meta').textContent = versionMeta(s.version_desired, s.updated_desired_ms);
    $('shadow-reported-meta').textContent = versionMeta(s.version_reported, s.updated_reported_ms);
    $('shadow-docs').dataset.versionDesired = String(s.version_desired || 0);
    // the form's version follows until the operator starts a change
    const ver = $('shadow-version');
    if (!ver.dataset.touched && !$('shadow-state').value.trim()) ver.value = String(s.version_desired || 0);
  }

  async function shadowSubmit(ev) {
    ev.preventDefault();
    const id = st.open;
    if (id === null) return;
    let state;
    try {
      state = JSON.parse($('shadow-state').value);
    } catch (e) {
      outcome('shadow-result', false, 'The desired change is not JSON: ' + e.message);
      return;
    }
    if (!state || typeof state !== 'object' || Array.isArray(state)) {
      outcome('shadow-result', false, 'The desired change must be a JSON object ({"key": value}).');
      return;
    }
    const vtext = $('shadow-version').value.trim();
    if (vtext && !/^\d+$/.test(vtext)) {
      outcome('shadow-result', false, 'The version is a whole number (or empty: no check).');
      return;
    }
    const body = { state };
    if (vtext) body.version = Number(vtext);
    const method = $('shadow-mode').value === 'PUT' ? 'PUT' : 'PATCH';
    $('shadow-submit').disabled = true;
    outcome('shadow-result', null, '');
    try {
      const res = await D.api(method, devPath(id) + '/shadow/desired', body);
      if (st.open !== id) return;
      if (res.status === 200) {
        const s = res.data || {};
        $('shadow-state').value = '';
        delete $('shadow-version').dataset.touched;
        renderShadow(res);
        const pending = s.delta && Object.keys(s.delta).length;
        outcome('shadow-result', true, 'Desired is at version ' + s.version_desired + (pending
          ? ': the delta was sent to the device.' : ': nothing left for the device to change.'));
      } else if (res.status === 409 && res.data && res.data.code === 'version_conflict') {
        const now = res.data.version;
        outcome('shadow-result', false, 'Version conflict: desired changed since version ' + body.version +
          ' (it is at version ' + now + ' now). Check the desired state above, then send again: ' +
          'the version field now says ' + now + '.');
        $('shadow-version').value = String(now);
        $('shadow-version').dataset.touched = 'yes';
        D.refresh('device', true);
      } else {
        outcome('shadow-result', false, 'Refused (HTTP ' + res.status + '): ' + D.errorText(res));
      }
    } catch (e) {
      if (e.message !== 'unauthorized') outcome('shadow-result', false, 'Cannot reach the broker: ' + e.message);
    } finally {
      $('shadow-submit').disabled = false;
    }
  }

  // ------------------------------------------------------------ commands

  function renderCommands(res) {
    const tbody = $('device-commands').tBodies[0];
    const off = res.status === 409 && res.data && res.data.code === 'commands_disabled';
    $('command-form').hidden = off;
    tbody.textContent = '';
    if (res.status !== 200) {
      $('commands-note').textContent = off ? 'Commands are off (commands.enabled in the configuration).'
                                           : 'Commands unavailable: ' + D.errorText(res);
      D.emptyRow(tbody, 9, 'No commands.');
      $('device-commands-count').textContent = '';
      return;
    }
    $('commands-note').textContent = '';
    const all = (res.data && res.data.data) || [];
    const rows = all.slice(-COMMANDS_SHOWN).reverse(); // newest first
    rows.forEach((c) => {
      const tr = document.createElement('tr');
      tr.dataset.commandId = c.id;
      tr.dataset.status = c.status;
      D.cell(tr, c.id, 'mono command-id');
      D.cell(tr, c.name, 'mono command-name');
      badge(D.cell(tr, '', 'command-status'), statusClass(c.status), STATUS_LABELS[c.status] || c.status);
      D.cell(tr, c.qos);
      D.cell(tr, D.fmtNum(c.attempts));
      D.setAgo(D.cell(tr, ''), secs(c.created_at));
      D.setAgo(D.cell(tr, ''), secs(c.updated_at));
      D.cell(tr, c.result === null || c.result === undefined ? '-' : JSON.stringify(c.result), 'mono command-output');
      const act = D.cell(tr, '');
      if (!isFinal(c.status))
        act.appendChild(D.confirmButton('cancel-command', c.id, 'Cancel', () => cancelCommand(c.id)));
      tbody.appendChild(tr);
    });
    if (!rows.length) D.emptyRow(tbody, 9, 'No commands yet.');
    $('device-commands-count').textContent = '(' + D.fmtNum(all.length) +
      (all.length > rows.length ? ', the newest ' + rows.length + ' shown' : '') + ')';
  }

  async function cancelCommand(cid) {
    const res = await D.api('DELETE', '/api/v1/commands/' + encodeURIComponent(cid));
    if (res.status === 200) D.toast('Cancelled command ' + cid);
    else D.toast('Cancel ' + cid + ': ' + D.errorText(res), true);
    await D.refresh('device', true);
  }

  // The form's fields as the API's body, or throws naming the field.
  function commandBody() {
    const name = $('command-name').value.trim();
    if (!name) throw new Error('Enter the command\'s name.');
    if (/[/+#]/.test(name)) throw new Error('A command name has no "/", "+" or "#".');
    const body = { name, qos: Number($('command-qos').value) };
    const ptext = $('command-params').value.trim();
    if (ptext) {
      try { body.params = JSON.parse(ptext); } catch (e) {
        throw new Error('Params is not JSON: ' + e.message);
      }
    }
    const ttext = $('command-timeout').value.trim();
    if (ttext) {
      if (!/^\d+$/.test(ttext) || Number(ttext) < 1) throw new Error('The reply timeout is a whole number of seconds.');
      body.reply_timeout = Number(ttext);
    }
    return body;
  }

  async function commandSubmit(ev) {
    ev.preventDefault();
    const id = st.open;
    if (id === null) return;
    let body;
    try {
      body = commandBody();
    } catch (e) {
      outcome('command-result', false, e.message);
      $('command-output').hidden = true;
      return;
    }
    stopWatch();
    $('command-submit').disabled = true;
    outcome('command-result', null, '');
    delete $('command-result').dataset.status;
    $('command-output').hidden = true;
    try {
      const res = await D.api('POST', devPath(id) + '/commands', body);
      if (st.open !== id) return;
      if (res.status === 202 && res.data && res.data.id) {
        showStatus({ id: res.data.id, name: body.name, status: res.data.status || 'queued' });
        startWatch(id, res.data.id);
        D.refresh('device', true);
      } else {
        outcome('command-result', false, 'Refused (HTTP ' + res.status + '): ' + D.errorText(res));
      }
    } catch (e) {
      if (e.message !== 'unauthorized') outcome('command-result', false, 'Cannot reach the broker: ' + e.message);
    } finally {
      $('command-submit').disabled = false;
    }
  }

  // The status line of the command followed.
  function showStatus(c) {
    const r = $('command-result');
    const final = isFinal(c.status);
    r.dataset.status = c.status;
    if (final) r.dataset.ok = c.status === 'succeeded' ? 'yes' : 'no';
    else delete r.dataset.ok;
    r.textContent = 'Command ' + c.id + ' (' + c.name + '): ' + (STATUS_LABELS[c.status] || c.status) +
      (final ? '.' : (c.attempts ? ', attempt ' + c.attempts : '') + ', following...');
    const out = $('command-output');
    out.hidden = c.result === null || c.result === undefined;
    out.textContent = out.hidden ? '' : json(c.result);
  }

  function startWatch(device, cid) {
    st.watch = { id: cid, device, timer: null, started: Date.now(), last: null };
    st.watch.timer = setTimeout(pollWatch, WATCH_FAST_MS);
  }

  function stopWatch() {
    if (st.watch) clearTimeout(st.watch.timer);
    st.watch = null;
  }

  async function pollWatch() {
    const w = st.watch;
    if (!w || !D.signedIn()) return;
    let res = null;
    try {
      res = await D.api('GET', '/api/v1/commands/' + encodeURIComponent(w.id));
    } catch (e) {
      if (e.message === 'unauthorized') return;
    }
    if (st.watch !== w) return; // stopped, or another command sent meanwhile
    if (res && res.status === 200 && res.data) {
      const c = res.data;
      showStatus(c);
      if (c.status !== w.last) { w.last = c.status; D.refresh('device'); }
      if (isFinal(c.status)) { st.watch = null; return; }
    } else if (res && res.status === 404) {
      outcome('command-result', false, 'Command ' + w.id + ' is gone (the broker keeps commands.max_commands).');
      st.watch = null;
      return;
    }
    const ms = Date.now() - w.started < WATCH_FAST_FOR_MS ? WATCH_FAST_MS : WATCH_SLOW_MS;
    w.timer = setTimeout(pollWatch, ms);
  }

  // ------------------------------------------------------------ wiring

  D.addSection('devices', loadDevices);
  D.addSection('device', loadDevice);
  D.onLogout(closeDevice);

  document.addEventListener('DOMContentLoaded', () => {
    const search = D.debounce(() => { st.page = 1; D.refresh('devices', true); }, 250);
    $('devices-prefix').addEventListener('input', search);
    $('devices-tag').addEventListener('input', search);
    $('devices-connected').addEventListener('change', search);
    $('device-close').onclick = closeDevice;
    $('shadow-form').addEventListener('submit', shadowSubmit);
    $('shadow-version').addEventListener('input', () => { $('shadow-version').dataset.touched = 'yes'; });
    $('command-form').addEventListener('submit', commandSubmit);
  });
})();
