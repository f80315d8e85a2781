#!/usr/bin/env node
// MQTT.js client for tests/integration/test_33_websocket.py: connects over
// WebSocket (ws:// or wss://), subscribes, publishes, and prints one JSON
// object per line on stdout: {"event": "connected"}, {"event": "subscribed",
// "granted": [...]}, {"event": "message", "topic", "payload", "qos"},
// {"event": "error", "message"}.  Exits 0 once `--count` messages arrived,
// 1 on an error or after `--timeout` seconds.
//
//   node client.js --url ws://127.0.0.1:8083/mqtt --topic t/# --qos 1 \
//        [--publish t/a=hello ...] [--count 1] [--ca ca.crt] [--id cid] \
//        [--version 4|5] [--timeout 10] [--size N]
'use strict';
const fs = require('fs');
const mqtt = require('mqtt');

const opts = { url: '', topic: '', qos: 0, publish: [], count: 0, ca: '', id: '',
               version: 4, timeout: 10, size: 0 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const k = argv[i].replace(/^--/, ''), v = argv[i + 1];
  if (!(k in opts) || v === undefined) {
    console.error('usage: client.js --url URL [--topic T] [--publish topic=payload] ...');
    process.exit(2);
  }
  if (k === 'publish') opts.publish.push(v);
  else if (typeof opts[k] === 'number') opts[k] = Number(v);
  else opts[k] = v;
}

function out(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }

const conn = { protocolVersion: opts.version, reconnectPeriod: 0, connectTimeout: 5000,
               clean: true, clientId: opts.id || ('mqttjs-' + process.pid) };
if (opts.ca) {
  conn.ca = fs.readFileSync(opts.ca);
  conn.rejectUnauthorized = true;
}
const client = mqtt.connect(opts.url, conn);
let received = 0;
const timer = setTimeout(() => { out({ event: 'timeout', received }); finish(1); },
                         opts.timeout * 1000);

let ending = false;
function finish(code) {
  if (ending) return;
  ending = true;
  clearTimeout(timer);
  client.end(false, {}, () => process.exit(code));
  setTimeout(() => process.exit(code), 2000).unref();
}

function publishAll() {
  for (const p of opts.publish) {
    const eq = p.indexOf('=');
    let payload = p.slice(eq + 1);
    if (opts.size) payload = Buffer.alloc(opts.size, payload || 'x');
    client.publish(p.slice(0, eq), payload, { qos: opts.qos });
  }
  if (opts.count === 0 && opts.publish.length)
    setTimeout(() => finish(0), 300);
}

client.on('connect', (ack) => {
  out({ event: 'connected', sessionPresent: !!(ack && ack.sessionPresent) });
  if (!opts.topic) { publishAll(); if (!opts.publish.length) finish(0); return; }
  client.subscribe(opts.topic, { qos: opts.qos }, (err, granted) => {
    if (err) { out({ event: 'error', message: String(err) }); finish(1); return; }
    out({ event: 'subscribed', granted: granted.map((g) => g.qos) });
    publishAll();
  });
});
client.on('message', (topic, payload, packet) => {
  received++;
  out({ event: 'message', topic, qos: packet.qos, retain: packet.retain,
        size: payload.length,
        payload: payload.length > 256 ? payload.toString('utf8', 0, 16) : payload.toString() });
  if (opts.count && received >= opts.count) finish(0);
});
client.on('error', (err) => {
  // after DISCONNECT the broker closes at once: a late write of the
  // client's own teardown may fail (EPIPE); that is not an error of the test
  if (ending) return;
  out({ event: 'error', message: String(err && err.message || err) });
  finish(1);
});
client.on('close', () => out({ event: 'close' }));
