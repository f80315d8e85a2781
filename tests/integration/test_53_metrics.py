"""/metrics: the Prometheus text exposition checked line by line, and
scraped by a real Prometheus server (Debian /usr/bin/prometheus) started on
loopback with a temp config and storage: it must see the number of clients
the test connected (antenna_connections_active) through its own query API, with
the API key as its bearer token.
"""

import json
import math
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from conftest import free_port, require_antenna_bin, wait_for
from helpers import Paho

pytestmark = pytest.mark.antenna_only

PROMETHEUS = "/usr/bin/prometheus"


def make_key(path):
    p = subprocess.run([require_antenna_bin(), "apikey", "create", str(path), "prom"],
                       capture_output=True, timeout=10)
    assert p.returncode == 0, p.stderr
    return p.stdout.decode().strip()


def fetch(url, key=None, timeout=5):
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + key} if key else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"]*"'
                  r'(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*)?\})? (\S+)$')


def parse(text):
    """Returns {family: {"type", "help", "samples": [(name, labels, value)]}};
    asserts the format rules on the way."""
    fams = {}
    cur = None
    for line in text.splitlines():
        assert line == line.strip() and line, repr(line)
        if line.startswith("# HELP "):
            name, help_ = line[7:].split(" ", 1)
            assert name not in fams, "family %s twice" % name
            fams[name] = {"help": help_, "type": None, "samples": []}
            cur = name
            continue
        if line.startswith("# TYPE "):
            name, typ = line[7:].split(" ")
            assert name == cur, "TYPE %s after HELP %s" % (name, cur)
            assert typ in ("counter", "gauge", "histogram")
            fams[name]["type"] = typ
            continue
        m = LINE.match(line)
        assert m, "bad sample line %r" % line
        name, labels, value = m.group(1), m.group(3) or "", m.group(5)
        v = float(value)
        assert not math.isnan(v)
        base = re.sub(r"_(bucket|sum|count)$", "", name) if fams[cur]["type"] == "histogram" else name
        assert base == cur, "sample %s outside its family %s" % (name, cur)
        fams[cur]["samples"].append((name, labels, v))
    return fams


@pytest.fixture
def metrics_broker(broker, tmp_path):
    keys = tmp_path / "api.keys"
    key = make_key(keys)
    b = broker(api={"keys_file": str(keys)}, persistence={"enabled": True,
                                                         "dir": str(tmp_path / "data")})
    return b, key


def test_metrics_text_format(metrics_broker):
    b, key = metrics_broker
    clients = [Paho(b, client_id="m%d" % i).connect() for i in range(3)]
    clients[0].subscribe("m/#", 1)
    clients[1].publish("m/x", b"1", qos=1)
    clients[1].publish("m/r", b"keep", qos=0, retain=True)
    clients[1].publish("m/y", b"0", qos=0)
    time.sleep(0.3)
    st, ctype, text = fetch(b.api_url + "/metrics", key)
    assert st == 200 and ctype.startswith("text/plain; version=0.0.4")
    fams = parse(text)
    for name, fam in fams.items():
        assert name.startswith(("antenna_", "process_"))
        assert fam["type"] and fam["help"], name
        if fam["type"] == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), name
    def value(name, labels=""):
        fam = name if name in fams else re.sub(r"_(bucket|sum|count)$", "", name)
        for n, l, v in fams[fam]["samples"]:
            if n == name and l == labels:
                return v
        raise KeyError((name, labels))
    assert value("antenna_connections_active") == 3
    assert value("antenna_connections_total") >= 3
    assert value("antenna_listener_connections", 'listener="mqtt",transport="tcp"') == 3
    assert value("antenna_packets_received_total", 'type="connect"') >= 3
    assert value("antenna_packets_sent_total", 'type="connack"') >= 3
    assert value("antenna_packets_received_total", 'type="publish"') >= 3
    assert value("antenna_packets_sent_total", 'type="puback"') >= 1
    assert value("antenna_messages_received_total", 'qos="1"') >= 1
    assert value("antenna_messages_received_total", 'qos="0"') >= 2
    assert value("antenna_messages_sent_total", 'qos="1"') >= 1
    assert value("antenna_retained_messages") >= 1
    assert value("antenna_subscriptions") >= 1
    for reason in ("max_connections", "rate", "memory", "fd_limit"):
        value("antenna_connections_refused_total", 'reason="%s"' % reason)
    for fam in ("antenna_sessions", "antenna_inflight_messages", "antenna_queued_messages",
                "antenna_auth_success_total", "antenna_auth_failure_total",
                "antenna_messages_dropped_total", "antenna_bytes_received_total",
                "antenna_store_batches_total"):
        assert fam in fams, fam
    # histograms: cumulative buckets ending in +Inf == _count, per worker
    for hist, labels in (("antenna_worker_loop_seconds", 'worker="0",'),
                         ("antenna_worker_loop_seconds", 'worker="1",'),
                         ("antenna_store_fsync_seconds", ""),
                         ("antenna_store_write_seconds", "")):
        assert fams[hist]["type"] == "histogram"
        buckets = [(l, v) for n, l, v in fams[hist]["samples"]
                   if n == hist + "_bucket" and l.startswith(labels)]
        assert buckets and buckets[-1][0].endswith('le="+Inf"'), buckets
        vals = [v for _, v in buckets]
        assert vals == sorted(vals), (hist, vals)
        count = value(hist + "_count", labels.rstrip(","))
        assert vals[-1] == count
    assert value("antenna_worker_loop_seconds_count", 'worker="0"') > 0
    assert value("antenna_store_backend_info", 'backend="rocksdb"') == 1
    # the retained message went to the store: one fsync at least (sync: always)
    wait_for(lambda: parse(fetch(b.api_url + "/metrics", key)[2])
             ["antenna_store_fsync_seconds"]["samples"][-1][2] >= 1, 5,
             what="an fsync counted")
    # sessions are a gauge refreshed every second
    wait_for(lambda: dict(((n, l), v) for n, l, v in
                          parse(fetch(b.api_url + "/metrics", key)[2])["antenna_sessions"]["samples"])
             [("antenna_sessions", "")] == 3, 5, what="antenna_sessions == 3")
    for c in clients:
        c.client.disconnect()


def test_metrics_needs_credentials_unless_open(broker, tmp_path):
    keys = tmp_path / "k"
    make_key(keys)
    b = broker(api={"keys_file": str(keys)})
    with pytest.raises(urllib.error.HTTPError) as e:
        fetch(b.api_url + "/metrics")
    assert e.value.code == 401
    b2 = broker(api={"keys_file": str(keys), "open_metrics": True})
    assert fetch(b2.api_url + "/metrics")[0] == 200


@pytest.mark.skipif(not shutil.which(PROMETHEUS), reason="prometheus not installed")
def test_prometheus_scrapes_connections(metrics_broker, tmp_path):
    b, key = metrics_broker
    port = free_port()
    target = b.api_url.split("://", 1)[1]
    (tmp_path / "prom.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: antenna\n"
        "    scrape_interval: 1s\n"
        "    scrape_timeout: 900ms\n"
        "    authorization:\n"
        "      type: Bearer\n"
        "      credentials: %s\n"
        "    static_configs:\n"
        "      - targets: ['%s']\n" % (key, target))
    log = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen([PROMETHEUS, "--config.file=%s" % (tmp_path / "prom.yml"),
                             "--storage.tsdb.path=%s" % (tmp_path / "tsdb"),
                             "--web.listen-address=127.0.0.1:%d" % port,
                             "--log.level=warn"],
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    clients = []
    try:
        clients = [Paho(b, client_id="p%d" % i).connect() for i in range(4)]
        q = "http://127.0.0.1:%d/api/v1/query?query=%s" % (port, urllib.parse.quote("antenna_connections_active"))

        def seen():
            assert prom.poll() is None, "prometheus exited: %s" % (
                (tmp_path / "prometheus.log").read_text()[-2000:])
            try:
                with urllib.request.urlopen(q, timeout=2) as r:
                    j = json.loads(r.read())
            except OSError:
                return None
            res = j.get("data", {}).get("result", [])
            return res[0] if res and float(res[0]["value"][1]) == 4 else None
        res = wait_for(seen, 60, interval=0.5, what="prometheus to see antenna_connections_active 4")
        assert res["metric"]["job"] == "antenna"
        # and the scrape itself is healthy (auth accepted, format parsed)
        with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/targets" % port, timeout=5) as r:
            t = json.loads(r.read())["data"]["activeTargets"]
        assert t and t[0]["health"] == "up", t
    finally:
        for c in clients:
            c.client.disconnect()
        prom.terminate()
        try:
            prom.wait(10)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait(5)
        log.close()
