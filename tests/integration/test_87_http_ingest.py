"""HTTP device ingest (issue 19, http_ingest): devices POST messages to
/devices/{id}/messages on a listener of their own; each reaches MQTT
subscribers through the router.  Authentication and publish ACL through
the broker's auth chain (password_file + acl_file here: the device is
client id {id}, its token the password of user {id})."""

import base64
import http.client
import json
import queue
import time

import paho.mqtt.client as mqtt
import pytest

from authutil import pbkdf2_line
from conftest import free_port
from conftest import stop_all
from test_61_modules import SectionBroker

pytestmark = pytest.mark.antenna_only

ACL = """\
any
allow all devices/%c/#
user watcher
allow sub #
"""


@pytest.fixture
def hbroker(tmp_path):
    started = []

    def start(extra="", **overrides):
        pw = tmp_path / "passwd"
        pw.write_text(pbkdf2_line("dev1", "tok1") + "\n" + pbkdf2_line("dev2", "tok2") + "\n" +
                      pbkdf2_line("watcher", "w") + "\n")
        acl = tmp_path / "acl"
        acl.write_text(ACL)
        port = free_port()
        sec = ("http_ingest:\n  enabled: true\n  bind: 127.0.0.1\n  port: %d\n%s" %
               (port, extra))
        ov = {"auth": {"password_file": str(pw), "acl_file": str(acl)}}
        ov.update(overrides)
        b = SectionBroker(tmp_path, len(started), sec, ov)
        started.append(b)
        b.start()
        b.http_port = port
        return b

    yield start
    stop_all(started)


def post(b, path, body, token="tok1", ctype="application/json", conn=None, auth=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", b.http_port, timeout=30)
    headers = {"Content-Type": ctype}
    if auth is not None:
        headers["Authorization"] = auth
    elif token is not None:
        headers["Authorization"] = "Bearer " + token
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    c.request("POST", path, body=data, headers=headers)
    r = c.getresponse()
    text = r.read()
    if conn is None:
        c.close()
    return r.status, (json.loads(text) if text else None)


def wait_listening(b, deadline=30.0):
    end = time.monotonic() + deadline
    while True:
        try:
            st, _ = post(b, "/nothing", {}, token=None)
            if st == 404:
                return
        except OSError:
            pass
        assert time.monotonic() < end, "http_ingest not listening"
        time.sleep(0.1)


def subscriber(b, topic):
    got = queue.Queue()
    ready = queue.Queue()
    c = mqtt.Client(client_id="watcher-c", protocol=mqtt.MQTTv311)
    c.username_pw_set("watcher", "w")
    c.on_connect = lambda cl, *a: cl.subscribe(topic, 1)
    c.on_subscribe = lambda *a: ready.put(1)
    c.on_message = lambda cl, u, m: got.put((m.topic, m.payload, m.qos, m.retain))
    c.connect("127.0.0.1", b.port)
    c.loop_start()
    ready.get(timeout=30)
    return c, got


def test_publish_reaches_subscriber(hbroker):
    b = hbroker()
    wait_listening(b)
    c, got = subscriber(b, "devices/#")
    try:
        st, o = post(b, "/devices/dev1/messages", {"topic": "devices/dev1/t", "payload": "hello"})
        assert st == 200, o
        assert got.get(timeout=30)[:2] == ("devices/dev1/t", b"hello")
        st, o = post(b, "/devices/dev1/messages",
                     {"topic": "devices/dev1/q1", "payload": base64.b64encode(b"\x00\x01").decode(),
                      "encoding": "base64", "qos": 1})
        assert st == 200 and o["delivered"] == 1, o
        t, p, q, _ = got.get(timeout=30)
        assert (t, p, q) == ("devices/dev1/q1", b"\x00\x01", 1)
        # raw body with ?topic=, retained
        st, o = post(b, "/devices/dev1/messages?topic=devices/dev1/r&qos=1&retain=true",
                     b"raw-bytes", ctype="application/octet-stream")
        assert st == 200, o
        assert got.get(timeout=30)[:2] == ("devices/dev1/r", b"raw-bytes")
    finally:
        c.loop_stop()
        c.disconnect()
    c2, got2 = subscriber(b, "devices/dev1/r")
    try:
        t, p, q, retain = got2.get(timeout=30)
        assert (t, p, retain) == ("devices/dev1/r", b"raw-bytes", True)
    finally:
        c2.loop_stop()
        c2.disconnect()


def test_batch_auth_acl_and_errors(hbroker):
    b = hbroker()
    wait_listening(b)
    c, got = subscriber(b, "devices/#")
    try:
        batch = [{"topic": "devices/dev2/a", "payload": "1"},
                 {"topic": "other/x", "payload": "2"},
                 {"topic": "devices/dev2/b", "payload": "3", "qos": 1}]
        st, o = post(b, "/devices/dev2/messages", batch, token="tok2")
        assert st == 200, o
        assert [r["status"] for r in o["results"]] == [200, 403, 200]
        seen = {got.get(timeout=30)[0] for _ in range(2)}
        assert seen == {"devices/dev2/a", "devices/dev2/b"}
    finally:
        c.loop_stop()
        c.disconnect()
    # basic auth works too
    basic = "Basic " + base64.b64encode(b"dev1:tok1").decode()
    st, _ = post(b, "/devices/dev1/messages", {"topic": "devices/dev1/x"}, auth=basic)
    assert st == 200
    assert post(b, "/devices/dev1/messages", {"topic": "devices/dev1/x"}, token="bad")[0] == 401
    assert post(b, "/devices/dev1/messages", {"topic": "devices/dev1/x"}, token=None)[0] == 401
    st, o = post(b, "/devices/dev1/messages", {"topic": "devices/dev2/x"})
    assert st == 403 and o["field"] == "topic"
    st, o = post(b, "/devices/dev1/messages", {"topic": "a/#"})
    assert st == 400 and o["field"] == "topic"
    st, o = post(b, "/devices/dev1/messages", {"topic": "devices/dev1/x", "qos": 7})
    assert st == 400 and o["field"] == "qos"
    st, o = post(b, "/devices/dev1/messages", b"{not json")
    assert st == 400 and o["field"] == "body"
    assert post(b, "/devices/dev1/other", {})[0] == 404


def test_limits_and_keepalive(hbroker):
    b = hbroker("  max_body: 1024\n  max_messages: 3\n  rate: 5\n")
    wait_listening(b)
    st, o = post(b, "/devices/dev1/messages", {"topic": "devices/dev1/x", "payload": "x" * 4096})
    assert st == 413 and o["field"] == "body"
    st, o = post(b, "/devices/dev1/messages", [{"topic": "devices/dev1/x"}] * 4)
    assert st == 413
    # keep-alive: one connection, several requests, until the rate refuses
    conn = http.client.HTTPConnection("127.0.0.1", b.http_port, timeout=30)
    statuses = []
    for _ in range(20):
        st, _ = post(b, "/devices/dev1/messages", {"topic": "devices/dev1/k"}, conn=conn)
        statuses.append(st)
        if st == 429:
            break
    conn.close()
    assert statuses[0] == 200 and 429 in statuses, statuses
    assert statuses.count(200) >= 2  # the connection was reused


def test_module_topics_are_guarded(hbroker, tmp_path):
    """A device the ACL lets publish anywhere under $cmd/ still posts only to
    its own reply topic: the commands module's topic guard judges HTTP
    devices as it judges MQTT clients (router.h, router_guard)."""
    acl = tmp_path / "acl-open"
    acl.write_text("any\nallow all $cmd/#\nallow all devices/#\n")
    b = hbroker("commands:\n  enabled: true\n",
                auth={"password_file": str(tmp_path / "passwd"), "acl_file": str(acl)})
    wait_listening(b)
    st, o = post(b, "/devices/dev1/messages", {"topic": "$cmd/dev2/reply", "payload": "{}"})
    assert st == 403 and o["field"] == "topic", (st, o)
    st, o = post(b, "/devices/dev1/messages", {"topic": "$cmd/dev1/reply", "payload": "{}"})
    assert st == 200, (st, o)
