"""The InfluxDB sink (src/sinks/sink_influx.c, docs/sinks.md "InfluxDB"):
rules feeding a real influxd started by the test (Debian's influxdb 1.6,
its own temporary directory, free loopback ports), read back through its
HTTP /query API: every point exactly once with its type, influxd stopped
mid-stream and started again (nothing lost), a field type conflict (the
refused lines dead-lettered, the rest written), configuration errors naming
file:line:key, and the driver's metrics."""

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import paho.mqtt.client as mqtt
import pytest

from conftest import IS_MOSQUITTO, free_port, require_antenna_bin
from helpers import Paho
from test_50_api import Client
from test_61_modules import SectionBroker, SectionBrokers

INFLUXD = shutil.which("influxd")
pytestmark = [pytest.mark.skipif(IS_MOSQUITTO, reason="antenna's sinks"),
              pytest.mark.skipif(INFLUXD is None, reason="influxd is not installed")]


class Influxd:
    """influxd on fixed free ports (kept across stop/start) in dir."""

    def __init__(self, dir):
        self.dir = str(dir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.rpc = free_port()
        self.proc = None
        self.cfg = os.path.join(self.dir, "influxdb.conf")
        with open(self.cfg, "w") as f:
            f.write("""reporting-disabled = true
bind-address = "127.0.0.1:%d"
[meta]
  dir = "%s/meta"
[data]
  dir = "%s/data"
  wal-dir = "%s/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:%d"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
""" % (self.rpc, self.dir, self.dir, self.dir, self.port))
        self.url = "http://127.0.0.1:%d" % self.port

    def start(self, timeout=60.0):
        log = open(os.path.join(self.dir, "influxd.log"), "ab")
        self.proc = subprocess.Popen([INFLUXD, "run", "-config", self.cfg], stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=2) as r:
                    if r.status == 204:
                        return self
            except OSError:
                pass
            assert self.proc.poll() is None, "influxd exited: %s" % self.log()[-2000:]
            assert time.monotonic() < deadline, "influxd did not answer /ping"
            time.sleep(0.1)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def log(self):
        with open(os.path.join(self.dir, "influxd.log"), "rb") as f:
            return f.read().decode(errors="replace")

    def query(self, q, db=""):
        data = urllib.parse.urlencode({"q": q, "db": db}).encode()
        with urllib.request.urlopen(self.url + "/query", data=data, timeout=10) as r:
            res = json.loads(r.read())["results"][0]
        assert "error" not in res, res
        return res

    def rows(self, q, db):
        s = self.query(q, db).get("series")
        return s[0]["values"] if s else []

    def count(self, db, field="n", measurement="env"):
        r = self.rows('SELECT count("%s") FROM "%s"' % (field, measurement), db)
        return r[0][1] if r else 0


@pytest.fixture(scope="module")
def influxd(tmp_path_factory):
    d = Influxd(tmp_path_factory.mktemp("influxd")).start()
    yield d
    d.stop()


_dbs = [0]


def new_db(ix):
    _dbs[0] += 1
    db = "t%d" % _dbs[0]
    ix.query('CREATE DATABASE "%s"' % db)
    return db


def section(ix, db, sink_extra="", action_extra="",
            sql='SELECT clientid, payload.n AS n, payload.t AS t, payload.ok AS ok, '
                'payload.s AS s FROM "ix/#"'):
    return """sinks:
  sinks:
    - name: tsdb
      type: influxdb
      url: %s
      database: %s
      precision: ms
      timeout: 2s
      batch:
        max_messages: 200
        linger: 20ms
%s
rules:
  rules:
    - id: r
      sql: %s
      actions:
        - type: sink
          sink: tsdb
          measurement: env
          tags.dev: "${clientid}"
          fields.n: "${n}"
          fields.t: "${t}"
          fields.t.type: float
          fields.ok: "${ok}"
          fields.s: "${s}"
          timestamp: "${n}"
%s
""" % (ix.url, db, sink_extra, sql, action_extra)


@pytest.fixture
def sbroker(tmp_path):
    brokers = SectionBrokers(tmp_path)
    yield brokers
    brokers.close()


def sink_metrics(b, name="tsdb"):
    return b.rapi.json("GET", "/api/v1/sinks/" + name)["metrics"]


def wait_for(pred, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, what()
        time.sleep(0.1)


def publish(b, cid, ns, qos=1, payload=None):
    with Paho(b, cid) as p:
        for n in ns:
            body = payload(n) if payload else {"n": n, "t": n + 0.5, "ok": n % 2 == 0,
                                                "s": "v%d" % n}
            p.publish("ix/" + cid, json.dumps(body).encode(), qos=qos)


def test_every_point_once_with_its_type(influxd, sbroker):
    db = new_db(influxd)
    b = sbroker(section(influxd, db))
    n = 600
    ths = [threading.Thread(target=publish, args=(b, "p%d" % k, range(1, n + 1)))
           for k in range(2)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(60)
    wait_for(lambda: sink_metrics(b)["succeeded"] == 2 * n,
             lambda: "sink: %r" % sink_metrics(b))
    for dev in ("p0", "p1"):
        got = influxd.rows("SELECT n, t, ok, s FROM env WHERE dev = '%s'" % dev, db)
        assert [r[1] for r in got] == list(range(1, n + 1)), got[:5]
        assert all(r[2] == r[1] + 0.5 and r[3] == (r[1] % 2 == 0) and r[4] == "v%d" % r[1]
                   for r in got), got[:5]
    types = dict(tuple(v) for v in influxd.rows("SHOW FIELD KEYS FROM env", db))
    assert types == {"n": "integer", "t": "float", "ok": "boolean", "s": "string"}, types
    m = sink_metrics(b)
    assert m["appended"] == 2 * n and m["failed"] == 0 and m["queued"] == 0, m
    # exactly once: nothing more is sent once everything succeeded
    time.sleep(0.3)
    assert sink_metrics(b)["sent"] == m["sent"]
    st, _, raw = b.rapi.call("GET", "/metrics")
    text = raw.decode()
    assert st == 200
    assert 'antenna_sink_influx_points_total{sink="tsdb"} %d' % (2 * n) in text, text[-3000:]
    assert 'antenna_sink_influx_errors_total{sink="tsdb",status="400"} 0' in text


def test_api_rule_with_objects_and_special_characters(influxd, sbroker):
    db = new_db(influxd)
    b = sbroker(section(influxd, db, sql='SELECT 1 AS one FROM "nothing"'))
    b.rapi.json("POST", "/api/v1/rules", {
        "id": "api", "sql": 'SELECT topic(2) AS room, payload.v AS v, payload.note AS note '
                            'FROM "room/+"',
        "actions": [{"type": "sink", "sink": "tsdb", "measurement": "rooms",
                     "tags": {"room name": "${room}"},
                     "fields": {"v": {"value": "${v}", "type": "integer"}, "note": "${note}"},
                     "timestamp": "${v}"}]}, status=201)
    notes = ['say "hi"', "back\\slash", "a,b=c d", "line\nbreak", "\u00e9t\u00e9"]
    with Paho(b, "pa") as p:
        for i, note in enumerate(notes):
            p.publish("room/x y,z=%d" % i, json.dumps({"v": i + 1, "note": note}).encode(),
                      qos=1)
    wait_for(lambda: sink_metrics(b)["succeeded"] == len(notes),
             lambda: "sink: %r" % sink_metrics(b))
    got = influxd.rows('SELECT "room name", v, note FROM rooms', db)
    assert [(r[1], r[2], r[3]) for r in got] == [
        ("x y,z=%d" % i, i + 1, note) for i, note in enumerate(notes)], got


def test_influxd_stopped_and_restarted_loses_nothing(tmp_path, sbroker):
    ix = Influxd(tmp_path / "own").start()
    try:
        db = new_db(ix)
        b = sbroker(section(ix, db, sink_extra="""      retry:
        max_attempts: 100000
        backoff: 50ms
        max_backoff: 500ms"""))
        publish(b, "p0", range(1, 301))
        wait_for(lambda: ix.count(db) == 300, lambda: "count %d" % ix.count(db))
        ix.stop()
        publish(b, "p0", range(301, 601))  # every PUBACK received while influxd is down
        wait_for(lambda: sink_metrics(b)["retried"] > 0, lambda: "%r" % sink_metrics(b))
        ix.start()
        wait_for(lambda: sink_metrics(b)["succeeded"] == 600 and sink_metrics(b)["queued"] == 0,
                 lambda: "sink: %r" % sink_metrics(b))
        got = ix.rows("SELECT n FROM env", db)
        assert [r[1] for r in got] == list(range(1, 601)), (len(got), got[:3])
        assert sink_metrics(b)["failed"] == 0
        st, _, raw = b.rapi.call("GET", "/metrics")
        text = raw.decode()
        assert ('antenna_sink_influx_errors_total{sink="tsdb",status="connect"} 0'
                not in text), text[-3000:]
    finally:
        ix.stop()


def test_field_type_conflict_dead_letters_the_refused_lines(influxd, sbroker):
    db = new_db(influxd)
    b = sbroker(section(influxd, db, sink_extra="      dead_letter_topic: dl/tsdb",
                        sql='SELECT payload.n AS n, payload.s AS s FROM "ix/#"')
                .replace('          fields.t.type: float\n', ''))
    got = []
    dl = mqtt.Client(client_id="dl", protocol=mqtt.MQTTv5)
    dl.on_message = lambda c, u, msg: got.append(msg)
    subscribed = threading.Event()
    dl.on_subscribe = lambda *a: subscribed.set()
    dl.connect(b.host, b.port)
    dl.loop_start()
    try:
        dl.subscribe("dl/#", qos=1)
        assert subscribed.wait(10)
        bad = {7, 42, 99}
        # s is a string field; the bad ones send a number: an integer field
        # for influxd, a conflict with the string field of the same shard
        publish(b, "p0", [1], payload=lambda n: {"n": n, "s": "first"})
        wait_for(lambda: influxd.count(db) == 1, lambda: "count %d" % influxd.count(db))
        publish(b, "p0", range(2, 121),
                payload=lambda n: {"n": n, "s": n if n in bad else "x%d" % n})
        wait_for(lambda: sink_metrics(b)["queued"] == 0 and
                 sink_metrics(b)["succeeded"] + sink_metrics(b)["failed"] == 120,
                 lambda: "sink: %r" % sink_metrics(b))
        m = sink_metrics(b)
        assert m["failed"] == 3 and m["dead_lettered"] == 3 and m["succeeded"] == 117, m
        wait_for(lambda: len(got) == 3, lambda: "dead letters: %r" % [g.payload for g in got])
        assert sorted(int(g.payload.split(b"n=")[1].split(b"i")[0]) for g in got) == sorted(bad)
        props = dict(got[0].properties.UserProperty)
        assert props["sink"] == "tsdb" and "field type conflict" in props["reason"], props
        rows = influxd.rows("SELECT n FROM env", db)
        assert [r[1] for r in rows] == [n for n in range(1, 121) if n not in bad]
        st, _, raw = b.rapi.call("GET", "/metrics")
        assert 'antenna_sink_influx_errors_total{sink="tsdb",status="400"} 0' not in raw.decode()
    finally:
        dl.loop_stop()
        dl.disconnect()


def check(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    p = subprocess.run([require_antenna_bin(), "check", "-c", str(path)], capture_output=True,
                       text=True, timeout=30)
    return p.returncode, p.stdout + p.stderr


def test_config_errors_name_file_line_key(tmp_path):
    base = ("sinks:\n  sinks:\n    - name: i\n      type: influxdb\n"
            "      url: http://127.0.0.1:8086\n")
    rc, out = check(tmp_path, base + "      database: d\n")
    assert rc == 0, out
    rc, out = check(tmp_path, base)
    assert rc != 0 and "s.yaml:3: sinks.sinks[0].database: required with version 1" in out, out
    rc, out = check(tmp_path, base + "      database: d\n      precision: minutes\n")
    assert rc != 0 and "s.yaml:7: sinks.sinks[0].precision" in out, out
    rc, out = check(tmp_path, base + "      database: d\n      version: 3\n")
    assert rc != 0 and "s.yaml:7: sinks.sinks[0].version" in out, out
    rc, out = check(tmp_path, base + "      database: d\n      token: x\n")
    assert rc != 0 and "s.yaml:7: sinks.sinks[0].token: only with version 2" in out, out
    rc, out = check(tmp_path, base + "      version: 2\n      org: o\n")
    assert rc != 0 and "sinks.sinks[0].bucket: required with version 2" in out, out
    rc, out = check(tmp_path, base + "      version: 2\n      org: o\n      bucket: b\n")
    assert rc == 0, out
    rc, out = check(tmp_path, base.replace("http://127.0.0.1:8086", "127.0.0.1:8086") +
                    "      database: d\n")
    assert rc != 0 and "s.yaml:5: sinks.sinks[0].url" in out, out
    rc, out = check(tmp_path, base + "      database: d\n      timeout: 1h\n")
    assert rc != 0 and "s.yaml:7: sinks.sinks[0].timeout" in out, out
    rc, out = check(tmp_path, base + "      database: d\n      gzip: maybe\n")
    assert rc != 0 and "s.yaml:7: sinks.sinks[0].gzip" in out, out
    rc, out = check(tmp_path, base + "      database: d\n      max_request_points: 0\n")
    assert rc != 0 and "s.yaml:7: sinks.sinks[0].max_request_points" in out, out


def test_bad_action_refuses_start(influxd, sbroker, tmp_path):
    sec = section(influxd, "x").replace('          fields.n: "${n}"\n',
                                        '          fields.n: "${n"\n')
    b = SectionBroker(tmp_path, 9, sec, {})
    b.write_config()
    p = subprocess.run(b.command(), capture_output=True, text=True, timeout=60)
    out = p.stdout + p.stderr + b.log_text()
    assert p.returncode != 0, out[-2000:]
    assert "fields.n: unclosed" in out, out[-2000:]


def test_two_sinks_metrics_families_stay_together(influxd, sbroker):
    """Two InfluxDB sinks: each driver family has one header and its lines
    of both sinks together (the exposition format wants a family's lines
    contiguous); promtool accepts the page."""
    import shutil
    import subprocess
    db = new_db(influxd)
    second = """    - name: tsdb2
      type: influxdb
      url: %s
      database: %s
""" % (influxd.url, db)
    b = sbroker(section(influxd, db, sink_extra=second))
    publish(b, "two", range(1, 11))
    wait_for(lambda: sink_metrics(b)["succeeded"] == 10, lambda: "sink: %r" % sink_metrics(b))
    st, _, raw = b.rapi.call("GET", "/metrics")
    assert st == 200
    text = raw.decode()
    seen, last = set(), None
    for line in text.splitlines():
        if not line.startswith("antenna_sink_influx_"):
            if not line.startswith("#"):
                last = None
            continue
        fam = line.split("{", 1)[0]
        if fam != last:
            assert fam not in seen, "family %s split in two groups:\n%s" % (fam, text[-4000:])
            seen.add(fam)
            last = fam
    for fam in ("antenna_sink_influx_points_total", "antenna_sink_influx_errors_total"):
        assert text.count("# TYPE %s counter" % fam) == 1, fam
        assert '%s{sink="tsdb"' % fam in text and '%s{sink="tsdb2"' % fam in text, fam
    promtool = shutil.which("promtool")
    if promtool:
        p = subprocess.run([promtool, "check", "metrics"], input=raw, capture_output=True,
                           timeout=30)
        errors = [line for line in p.stdout.decode().splitlines() + p.stderr.decode().splitlines()
                  if "error" in line.lower()]
        assert not errors, errors
