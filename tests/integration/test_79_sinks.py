"""Sinks (src/sinks, docs/sinks.md): rules feeding the webhook sink, checked
against a local HTTP receiver: delivery exactly once and in order, retries
through 5xx, dead letters for 4xx, the overflow policies while the
receiver is down, the buffer in the store across a SIGKILL, "ack": "sink"
(the PUBACK waits for the receiver), configuration errors, GET
/api/v1/sinks and /metrics."""

import http.server
import json
import re
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from conftest import IS_MOSQUITTO, free_port, require_antenna_bin
from helpers import Paho
from test_50_api import Client
from test_61_modules import SectionBroker, SectionBrokers

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="antenna's sinks")


class Receiver:
    """An HTTP server in a thread on a fixed port: records each request's
    body; `answer(body) -> status` decides the status (200 by default).
    stop() closes the port (the receiver is down), start() opens it again."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.bodies = []
        self.requests = 0
        self.lock = threading.Lock()
        self.answer = lambda body: 200
        # seconds to hold a request before answering 503 (not recorded):
        # a receiver that times out; 0: answer at once
        self.hang = lambda body: 0.0
        self.srv = None

    def start(self):
        rec = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with rec.lock:
                    hold = rec.hang(body)
                if hold > 0:
                    time.sleep(hold)
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with rec.lock:
                    rec.requests += 1
                    status = rec.answer(body)
                    if 200 <= status < 300:
                        rec.bodies.append(body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.srv:
            self.srv.shutdown()
            self.srv.server_close()
            self.srv = None

    def got(self):
        with self.lock:
            return list(self.bodies)

    def wait(self, n, timeout=20.0):
        deadline = time.monotonic() + timeout
        while True:
            g = self.got()
            if len(g) >= n:
                return g
            assert time.monotonic() < deadline, "received %d of %d: %r" % (len(g), n, g[-5:])
            time.sleep(0.05)


def section(port, sink_extra="", action_extra="", sql='SELECT payload.n AS n, clientid FROM "s/#"'):
    return """sinks:
  sinks:
    - name: hook
      type: webhook
      url: http://127.0.0.1:%d/in
      body: '${n}'
      timeout: 2s
      connect_timeout: 500ms
%s
rules:
  rules:
    - id: r
      sql: %s
      actions:
        - type: sink
          sink: hook
%s
""" % (port, sink_extra, sql, action_extra)


@pytest.fixture
def sbroker(tmp_path):
    brokers = SectionBrokers(tmp_path)
    brokers.receivers = []
    yield brokers
    brokers.close()
    for r in brokers.receivers:
        r.stop()


def sink(b, name="hook"):
    return b.rapi.json("GET", "/api/v1/sinks/" + name)


def wait_sink(b, pred, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        s = sink(b)
        if pred(s["metrics"]):
            return s["metrics"]
        assert time.monotonic() < deadline, s
        time.sleep(0.05)


def publish_all(b, cid, values, topic="s/a", qos=1):
    with Paho(b, cid) as p:
        for v in values:
            p.publish(topic, json.dumps({"n": v}).encode(), qos=qos)


def test_delivered_once_in_order_api_and_metrics(sbroker):
    r = Receiver().start()
    sbroker.receivers.append(r)
    b = sbroker(section(r.port, sink_extra="      max_inflight: 1"))
    publish_all(b, "p1", range(200))
    got = r.wait(200)
    assert got == [str(i).encode() for i in range(200)], got[:20]
    m = wait_sink(b, lambda m: m["succeeded"] == 200 and m["queued"] == 0)
    assert m["appended"] == 200 and m["failed"] == 0 and m["dropped"] == 0, m
    time.sleep(0.3)  # nothing more may come (exactly once)
    assert len(r.got()) == 200
    lst = b.rapi.json("GET", "/api/v1/sinks")
    assert lst["total"] == 1 and lst["data"][0]["name"] == "hook", lst
    assert lst["data"][0]["type"] == "webhook" and lst["data"][0]["max_inflight"] == 1, lst
    b.rapi.json("GET", "/api/v1/sinks/nope", status=404)
    st, _, raw = b.rapi.call("GET", "/metrics")
    text = raw.decode()
    assert st == 200
    assert re.search(r'^antenna_sink_records_total\{sink="hook",result="succeeded"\} 200$',
                     text, re.M), text[-3000:]
    assert re.search(r'^antenna_sink_queued\{sink="hook"\} 0$', text, re.M)
    assert re.search(r'^antenna_sink_latency_seconds_count\{sink="hook"\} 200$', text, re.M)


def test_parallel_publishers_each_in_order(sbroker):
    r = Receiver().start()
    sbroker.receivers.append(r)
    b = sbroker(section(r.port, sink_extra="      max_inflight: 1",
                        sql='SELECT payload.n AS n FROM "s/#"'))
    ths = [threading.Thread(target=publish_all, args=(b, "p%d" % k, ["%d-%d" % (k, i)
                                                                      for i in range(100)]))
           for k in range(3)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(60)
    got = r.wait(300)
    assert len(got) == 300 and len(set(got)) == 300, len(got)
    for k in range(3):
        mine = [g for g in got if g.startswith(b"%d-" % k)]
        assert mine == [b"%d-%d" % (k, i) for i in range(100)], mine[:10]


def test_500_then_recovery_loses_nothing(sbroker):
    r = Receiver().start()
    sbroker.receivers.append(r)
    fails = {"left": 25}

    def answer(body):
        if fails["left"] > 0:
            fails["left"] -= 1
            return 500
        return 200
    r.answer = answer
    b = sbroker(section(r.port, sink_extra="""      max_inflight: 4
      retry:
        max_attempts: 1000
        backoff: 10ms
        max_backoff: 100ms"""))
    publish_all(b, "p1", range(50))
    got = r.wait(50)
    assert sorted(int(g) for g in got) == list(range(50)), got
    m = wait_sink(b, lambda m: m["succeeded"] == 50 and m["queued"] == 0)
    assert m["retried"] >= 25 and m["failed"] == 0, m


def test_receiver_timing_out_then_back_loses_nothing(sbroker):
    """The receiver holds its first requests past the sink's timeout (2 s):
    they count as failed attempts and are sent again; nothing is lost and
    each message arrives once (a held request is answered 503, not kept)."""
    r = Receiver().start()
    sbroker.receivers.append(r)
    held = {"left": 3}

    def hang(body):
        if held["left"] > 0:
            held["left"] -= 1
            return 2.5
        return 0.0
    r.hang = hang
    b = sbroker(section(r.port, sink_extra="""      max_inflight: 2
      retry:
        max_attempts: 1000
        backoff: 10ms
        max_backoff: 100ms"""))
    publish_all(b, "p1", range(20))
    got = r.wait(20, timeout=60)
    assert sorted(int(g) for g in got) == list(range(20)), got
    m = wait_sink(b, lambda m: m["succeeded"] == 20 and m["queued"] == 0, timeout=60)
    assert m["retried"] >= 3 and m["failed"] == 0, m


def test_4xx_goes_to_dead_letter_topic(sbroker):
    r = Receiver().start()
    sbroker.receivers.append(r)
    r.answer = lambda body: 400 if int(body) % 5 == 0 else 200
    b = sbroker(section(r.port, sink_extra="      dead_letter_topic: dl/hook"))
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
        publish_all(b, "p1", range(20))
        r.wait(16)
        deadline = time.monotonic() + 20
        while len(got) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(int(m.payload) for m in got) == [0, 5, 10, 15], [m.payload for m in got]
        props = dict(got[0].properties.UserProperty)
        assert props["sink"] == "hook" and props["reason"] == "HTTP 400", props
        assert got[0].topic == "dl/hook"
    finally:
        dl.loop_stop()
        dl.disconnect()
    m = wait_sink(b, lambda m: m["dead_lettered"] == 4 and m["queued"] == 0)
    assert m["failed"] == 4 and m["succeeded"] == 16, m


def test_receiver_down_drop_oldest(sbroker):
    r = Receiver()
    sbroker.receivers.append(r)
    b = sbroker(section(r.port, sink_extra="""      max_inflight: 1
      buffer:
        max_messages: 10
      retry:
        max_attempts: 100000
        backoff: 20ms
        max_backoff: 50ms"""))
    publish_all(b, "p1", range(30))
    m = wait_sink(b, lambda m: m["appended"] == 30 and m["dropped"] >= 19)
    assert m["queued"] + m["dropped"] == 30 and m["queued"] <= 11, m
    kept = m["queued"]
    # the rule's view of its action: appended, and what the sink holds
    act = b.rapi.json("GET", "/api/v1/rules/r")["metrics"]["actions"][0]
    assert act["type"] == "sink" and act["sink"] == "hook", act
    assert act["success"] == 30 and act["queued"] == kept, (act, m)
    r.start()
    m = wait_sink(b, lambda m: m["queued"] == 0 and m["succeeded"] + m["dropped"] == 30)
    n = m["succeeded"]
    got = r.wait(n)
    assert len(got) == n, got
    # the newest survive.  A record in flight when the buffer overflowed is
    # not dropped then (sink.c take_intake), so the oldest kept may be one
    # sent earlier, and then the next-oldest one made room; but once its
    # attempt failed it waits for a retry, the oldest record not in flight,
    # and the next intake may drop it after all (kept - 1 delivered)
    assert n in (kept, kept - 1), (n, kept, m)
    if n == kept:
        assert got[1:] == [str(i).encode() for i in range(31 - kept, 30)], got
        assert int(got[0]) <= 30 - kept, got
    else:
        assert got == [str(i).encode() for i in range(30 - n, 30)], got


def test_receiver_down_backpressure_refuses_and_pauses(sbroker):
    r = Receiver()
    sbroker.receivers.append(r)
    b = sbroker(section(r.port, sink_extra="""      max_inflight: 1
      buffer:
        max_messages: 8
        overflow: backpressure
      retry:
        max_attempts: 100000
        backoff: 20ms
        max_backoff: 50ms"""))
    publish_all(b, "p1", range(30))
    m = wait_sink(b, lambda m: m["appended"] + m["refused"] == 30)
    assert m["refused"] >= 22 and m["dropped"] == 0 and m["queued"] <= 8, m
    st, _, raw = b.rapi.call("GET", "/metrics")
    pauses = re.search(r"^antenna_backpressure_pauses_total (\d+)$", raw.decode(), re.M)
    assert pauses and int(pauses.group(1)) > 0, raw.decode()[-2000:]
    r.start()
    got = r.wait(m["appended"])
    assert got == [str(i).encode() for i in range(m["appended"])], got


@pytest.mark.parametrize("durable", [False, True])
def test_sigkill_with_buffered_records_all_arrive_after_restart(sbroker, durable):
    r = Receiver()
    sbroker.receivers.append(r)
    b = sbroker(section(r.port, sink_extra="""      retry:
        max_attempts: 100000
        backoff: 20ms
        max_backoff: 100ms"""))
    if durable:
        # a durable subscriber: the messages reach the rule (and the sink)
        # only after their commit; their PUBACK must still wait for the record
        with Paho(b, "dur", clean_session=False) as d:
            d.subscribe("s/#", qos=1)
    n = 40
    publish_all(b, "p1", range(n))  # every PUBACK received
    b.kill()
    b.stopped = False
    r.start()
    b.start()
    got = r.wait(n, timeout=30)
    assert sorted(int(g) for g in got) == list(range(n)), got
    wait_sink(b, lambda m: m["queued"] == 0)
    # completed records left the store: a second restart sends nothing again
    b.stop()
    b.stopped = False
    b.start()
    time.sleep(0.5)
    assert len(r.got()) == n and sink(b)["metrics"]["queued"] == 0


def check(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    p = subprocess.run([require_antenna_bin(), "check", "-c", str(path)], capture_output=True,
                       text=True, timeout=30)
    return p.returncode, p.stdout + p.stderr


def test_config_errors_name_file_line_key(tmp_path):
    base = "sinks:\n  sinks:\n    - name: h\n      type: webhook\n      url: http://127.0.0.1:9/\n"
    rc, out = check(tmp_path, base + "      buffer:\n        overflow: sometimes\n")
    assert rc != 0 and "s.yaml:7: sinks.sinks[0].buffer.overflow" in out, out
    rc, out = check(tmp_path, base + "      urll: x\n")
    assert rc != 0 and "s.yaml:6: sinks.sinks[0].urll" in out, out
    rc, out = check(tmp_path, base.replace("webhook", "carrier-pigeon"))
    assert rc != 0 and "s.yaml:4: sinks.sinks[0].type" in out, out
    rc, out = check(tmp_path, base.replace("http://127.0.0.1:9/", "ftp://x"))
    assert rc != 0 and "s.yaml:5: sinks.sinks[0].url" in out, out
    rc, out = check(tmp_path, base + "      retry:\n        backoff: 5s\n        max_backoff: 1s\n")
    assert rc != 0 and "sinks.sinks[0].retry" in out, out
    rc, out = check(tmp_path, base + "    - name: h\n      type: webhook\n      url: http://a/\n")
    assert rc != 0 and "s.yaml:6: sinks.sinks[1].name" in out, out
    rc, out = check(tmp_path, base)
    assert rc == 0, out


def test_unknown_sink_in_rule_refuses_start(sbroker, tmp_path):
    sec = section(free_port()).replace("sink: hook", "sink: nothere")
    b = SectionBroker(tmp_path, 9, sec, {})
    b.write_config()
    p = subprocess.run(b.command(), capture_output=True, text=True, timeout=60)
    out = p.stdout + p.stderr + b.log_text()
    assert p.returncode != 0, out[-2000:]
    assert 'no sink named "nothere"' in out, out[-2000:]


def test_unknown_sink_in_api_rule_is_refused(sbroker):
    r = Receiver().start()
    sbroker.receivers.append(r)
    b = sbroker(section(r.port))
    out = b.rapi.json("POST", "/api/v1/rules", {
        "id": "x", "sql": "SELECT 1 FROM \"t\"",
        "actions": [{"type": "sink", "sink": "nothere"}]}, status=400)
    assert 'no sink named \\"nothere\\"' in json.dumps(out) or "nothere" in out["error"], out
    out = b.rapi.json("POST", "/api/v1/rules", {
        "id": "y", "sql": "SELECT payload AS p FROM \"api/#\"",
        "actions": [{"type": "sink", "sink": "hook", "body": "api:${p}"}]}, status=201)
    with Paho(b, "pa") as p:
        p.publish("api/1", b"hello", qos=1)
    got = r.wait(1)
    assert got == [b"api:hello"], got


def test_ack_sink_holds_puback_until_the_receiver_confirmed(sbroker):
    r = Receiver()
    sbroker.receivers.append(r)
    b = sbroker(section(r.port, action_extra="          ack: sink", sink_extra="""      retry:
        max_attempts: 100000
        backoff: 20ms
        max_backoff: 50ms"""))
    p = mqtt.Client(client_id="acker")
    p.connect(b.host, b.port)
    p.loop_start()
    try:
        info = p.publish("s/a", json.dumps({"n": 1}).encode(), qos=1)
        # stored and tried at least once (the receiver is down): still no PUBACK
        wait_sink(b, lambda m: m["appended"] == 1 and m["retried"] >= 1)
        assert not info.is_published()
        r.start()
        info.wait_for_publish(20)
        assert info.is_published() and r.got() == [b"1"]
        # refused for good (4xx): the acknowledgement is released too
        r.answer = lambda body: 400
        info = p.publish("s/a", json.dumps({"n": 2}).encode(), qos=1)
        info.wait_for_publish(20)
        assert info.is_published()
        wait_sink(b, lambda m: m["failed"] == 1 and m["queued"] == 0)
    finally:
        p.loop_stop()
        p.disconnect()
    # without persistence, "ack": "sink" is accepted with a warning
    b2 = sbroker(section(free_port()), persistence={"enabled": False})
    b2.rapi.json("POST", "/api/v1/rules", {
        "id": "a", "sql": "SELECT 1 FROM \"t\"",
        "actions": [{"type": "sink", "sink": "hook", "ack": "sink"}]}, status=201)
    deadline = time.monotonic() + 10
    while "acknowledgements do not wait for the sink" not in b2.log_text():
        assert time.monotonic() < deadline, b2.log_text()[-2000:]
        time.sleep(0.05)
