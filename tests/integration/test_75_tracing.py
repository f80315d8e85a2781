"""OpenTelemetry traces (src/modules/tracing): a local OTLP/HTTP receiver
gets the spans of a message's path -- "mqtt.publish" on the publisher's
side and one "mqtt.deliver" per subscriber, its child, ending at the
subscriber's acknowledgement -- with the W3C traceparent of the publisher
continued and the broker's own passed on to MQTT 5 subscribers; sampling
by ratio; errors in the section name file:line:key."""

import http.server
import json
import re
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from conftest import IS_MOSQUITTO, require_antenna_bin
from helpers import Paho, receive_publishes
from mqttraw import USER_PROPERTY, connect_v5, sub_opts
from test_50_api import Client, make_key
from test_61_modules import SectionBroker

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only")

TP = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class Collector:
    """An OTLP/HTTP traces receiver on an ephemeral port: keeps every span
    of every POST /v1/traces (JSON)."""

    def __init__(self):
        self.spans = []
        self.posts = 0
        self.cv = threading.Condition()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                doc = json.loads(body)
                got = []
                for rs in doc["resourceSpans"]:
                    attrs = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
                    assert attrs["service.name"] == {"stringValue": "antenna-test"}
                    for ss in rs["scopeSpans"]:
                        got.extend(ss["spans"])
                with outer.cv:
                    outer.posts += 1
                    outer.spans.extend(got)
                    outer.cv.notify_all()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/v1/traces" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def wait(self, pred, timeout=15.0, what="spans"):
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                found = [s for s in self.spans if pred(s)]
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no %s within %.0fs; got %r" % (what, timeout,
                                                                        self.spans[-6:]))
                self.cv.wait(left)

    def close(self):
        self.srv.shutdown()


def attrs(span):
    out = {}
    for a in span.get("attributes", []):
        v = a["value"]
        out[a["key"]] = v.get("stringValue", v.get("intValue"))
    return out


@pytest.fixture
def traced(tmp_path):
    """start(ratio): a broker exporting to a fresh collector, with its API
    (b.api_client) for the tracing counters."""
    started, collectors = [], []
    keys = tmp_path / "api.keys"
    key = make_key(keys)

    def start(ratio="1", extra=""):
        col = Collector()
        collectors.append(col)
        sec = ("tracing:\n  endpoint: %s\n  sample_ratio: \"%s\"\n  service_name: antenna-test\n"
               "  flush_interval: 50ms\n%s" % (col.url, ratio, extra))
        b = SectionBroker(tmp_path, len(started), sec, {"api": {"keys_file": str(keys)}})
        started.append(b)
        b.start()
        b.api_client = Client(b, key)
        return b, col

    yield start
    for b in started:
        b.stop()
    for c in collectors:
        c.close()


def tracing_counters(b):
    st, _, raw = b.api_client.call("GET", "/metrics")
    assert st == 200
    out = {}
    for name in ("traced", "exported", "dropped"):
        pat = r"^antenna_tracing_(?:messages|spans)_%s_total (\d+)$" % name
        mm = re.search(pat, raw.decode(), re.M)
        assert mm, (name, raw[-1500:])
        out[name] = int(mm.group(1))
    return out


def traceparent_of(p):
    tps = [v for k, v in p.props.all(USER_PROPERTY) if k == "traceparent"]
    assert len(tps) == 1, p.props.all(USER_PROPERTY)
    m = TP.match(tps[0])
    assert m, tps[0]
    return m.group(1), m.group(2)


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_and_deliver_spans_with_parent_links(traced, qos):
    b, col = traced("1")
    sub = connect_v5(b.host, b.port, "tr-sub-%d" % qos)
    assert sub.subscribe(1, [("tr/#", sub_opts(qos))]).codes == [qos]
    pub = connect_v5(b.host, b.port, "tr-pub-%d" % qos)
    pub.publish("tr/a", b"x", qos=qos, pid=7 if qos else None,
                props=[(USER_PROPERTY, ("k", "v"))])
    [p] = receive_publishes(sub, 1)  # acknowledged: QoS 1 PUBACK, QoS 2 PUBREC/PUBCOMP
    trace, parent = traceparent_of(p)
    # the publisher's other user property is kept, in its place
    assert p.props.all(USER_PROPERTY)[0] == ("k", "v")
    [pubspan] = col.wait(lambda s: s["name"] == "mqtt.publish" and s["traceId"] == trace)
    assert pubspan["spanId"] == parent  # subscribers continue from the broker's span
    assert "parentSpanId" not in pubspan  # sampled here: a new trace
    a = attrs(pubspan)
    assert a["messaging.destination.name"] == "tr/a"
    assert a["messaging.client.id"] == "tr-pub-%d" % qos
    assert a["mqtt.qos"] == str(qos) and a["mqtt.receivers"] == "1"
    [dspan] = col.wait(lambda s: s["name"] == "mqtt.deliver" and s["traceId"] == trace)
    assert dspan["parentSpanId"] == pubspan["spanId"]
    assert dspan["spanId"] != pubspan["spanId"]
    d = attrs(dspan)
    assert d["messaging.client.id"] == "tr-sub-%d" % qos
    assert d["mqtt.acknowledged"] == ("1" if qos else "0")
    assert "status" not in dspan, dspan
    assert int(dspan["endTimeUnixNano"]) >= int(dspan["startTimeUnixNano"])
    assert int(pubspan["endTimeUnixNano"]) >= int(pubspan["startTimeUnixNano"])


def test_publisher_traceparent_is_continued(traced):
    b, col = traced("0")  # nothing sampled: only messages that carry a traceparent
    sub = connect_v5(b.host, b.port, "tc-sub")
    assert sub.subscribe(1, [("tc/#", sub_opts(1))]).codes == [1]
    pub = connect_v5(b.host, b.port, "tc-pub")
    pub.publish("tc/untraced", b"u", qos=1, pid=1)
    mine_trace, mine_parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    pub.publish("tc/traced", b"t", qos=1, pid=2,
                props=[(USER_PROPERTY, ("traceparent", "00-%s-%s-01" % (mine_trace, mine_parent)))])
    got = receive_publishes(sub, 2)
    by_topic = {p.topic: p for p in got}
    assert not [k for k, _ in by_topic["tc/untraced"].props.all(USER_PROPERTY)]
    trace, parent = traceparent_of(by_topic["tc/traced"])
    assert trace == mine_trace and parent != mine_parent
    [pubspan] = col.wait(lambda s: s["name"] == "mqtt.publish" and s["traceId"] == mine_trace)
    assert pubspan["parentSpanId"] == mine_parent and pubspan["spanId"] == parent
    col.wait(lambda s: s["name"] == "mqtt.deliver" and s["traceId"] == mine_trace)
    # the untraced message, routed before the traced one, made no span
    with col.cv:
        topics = [attrs(s)["messaging.destination.name"] for s in col.spans]
    assert "tc/untraced" not in topics, topics


def test_mqtt311_publisher_sampled_reaches_v5_subscriber_with_context(traced):
    b, col = traced("1")
    sub = connect_v5(b.host, b.port, "t3-sub")
    assert sub.subscribe(1, [("t3/#", sub_opts(0))]).codes == [0]
    old = Paho(b, client_id="t3-pub", protocol=mqtt.MQTTv311).connect()
    old.publish("t3/x", b"y", qos=1)
    [p] = receive_publishes(sub, 1)
    trace, parent = traceparent_of(p)
    [pubspan] = col.wait(lambda s: s["name"] == "mqtt.publish" and s["traceId"] == trace)
    assert pubspan["spanId"] == parent
    old.client.disconnect()


def test_sampling_ratio_is_applied(traced):
    b, col = traced("0.25")
    sub = Paho(b, client_id="ts-sub").connect()
    sub.subscribe("ts/#", 0)
    pub = Paho(b, client_id="ts-pub").connect()
    n = 400
    for i in range(n):
        pub.publish("ts/%d" % i, b"p", qos=1)
    sub.get_n(n, timeout=20)
    # a marker, sent last, shows the export of everything before it is done
    carrier = connect_v5(b.host, b.port, "ts-mark")
    carrier.publish("ts/marker", b"m", qos=1, pid=1, props=[(
        USER_PROPERTY, ("traceparent", "00-%s-%s-01" % ("ab" * 16, "cd" * 8)))])
    col.wait(lambda s: s["name"] == "mqtt.publish" and s["traceId"] == "ab" * 16)
    # every span made so far reached the collector: exported == 2 x traced
    # (a publish and a delivery each), counted once the collector answered
    deadline = time.monotonic() + 20
    while True:
        m = tracing_counters(b)
        if m["exported"] == 2 * m["traced"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert m["exported"] == 2 * m["traced"] and m["dropped"] == 0, m
    with col.cv:
        sampled = [s for s in col.spans if s["name"] == "mqtt.publish" and
                   attrs(s)["messaging.destination.name"] != "ts/marker"]
    # 25 % of 400 = 100; the bounds are 5 standard deviations wide
    assert 50 <= len(sampled) <= 150, len(sampled)


@pytest.mark.parametrize("section,key,words", [
    ("tracing:\n  endpoint: ftp://x\n", "tracing.endpoint", "http"),
    ("tracing:\n  endpoint: http://127.0.0.1:4318/v1/traces\n  sample_ratio: \"2\"\n",
     "tracing.sample_ratio", "from 0 to 1"),
    ("tracing:\n  sample_ratio: \"x\"\n", "tracing.sample_ratio", "from 0 to 1"),
    ("tracing:\n  batch_size: 0\n", "tracing.batch_size", ""),
])
def test_bad_tracing_section(tmp_path, section, key, words):
    path = tmp_path / "t.yaml"
    path.write_text(section)
    p = subprocess.run([require_antenna_bin(), "check", "-c", str(path)], capture_output=True,
                       text=True, timeout=30)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "t.yaml:" in out and key in out and words in out, out
