"""HTTP device downlink (issue 19, http_ingest): a device's long poll
(GET /devices/{id}/messages?wait=S&max=N) and event stream (GET
/devices/{id}/events, server-sent events) receive what its persistent
session (client id {id}, subscribed to $cmd/{id}/#) receives: messages
published over MQTT, QoS 1 queued while no request is open, a takeover
ending the older request, the device listed by the API while attached."""

import base64
import http.client
import json
import shutil
import ssl
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from authutil import pbkdf2_line
from conftest import free_port
from conftest import stop_all
from test_50_api import Client
from test_50_api import make_key
from test_61_modules import SectionBroker

pytestmark = pytest.mark.antenna_only

ACL = """\
any
allow all devices/%c/#
allow sub $cmd/%c/#
allow pub $cmd/%c/reply/#
user ops
allow all #
allow all $cmd/#
"""


@pytest.fixture
def dbroker(tmp_path):
    started = []

    def start(extra=""):
        pw = tmp_path / "passwd"
        pw.write_text(pbkdf2_line("dev1", "tok1") + "\n" + pbkdf2_line("dev2", "tok2") + "\n" +
                      pbkdf2_line("ops", "o") + "\n")
        acl = tmp_path / "acl"
        acl.write_text(ACL)
        keys = tmp_path / "api.keys"
        key = make_key(keys)
        port = free_port()
        sec = ("http_ingest:\n  enabled: true\n  bind: 127.0.0.1\n  port: %d\n%s" %
               (port, extra))
        ov = {"auth": {"password_file": str(pw), "acl_file": str(acl)},
              "api": {"keys_file": str(keys)}}
        b = SectionBroker(tmp_path, len(started), sec, ov)
        started.append(b)
        b.start()
        b.http_port = port
        b.rapi = Client(b, key)
        if "tls_cert" not in extra:  # HTTPS: the test waits itself
            wait_listening(b)
        return b

    yield start
    stop_all(started)


def get(b, path, token="tok1", timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", b.http_port, timeout=timeout)
    headers = {"Authorization": "Bearer " + token} if token else {}
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    text = r.read()
    c.close()
    return r.status, (json.loads(text) if text else None)


def wait_listening(b, deadline=30.0):
    end = time.monotonic() + deadline
    while True:
        try:
            if get(b, "/nothing", token=None)[0] == 404:
                return
        except OSError:
            pass
        assert time.monotonic() < end, "http_ingest not listening"
        time.sleep(0.1)


def publisher(b):
    c = mqtt.Client(client_id="ops-pub", protocol=mqtt.MQTTv311)
    c.username_pw_set("ops", "o")
    c.connect("127.0.0.1", b.port)
    c.loop_start()
    return c


def publish(c, topic, payload, qos=1):
    info = c.publish(topic, payload, qos=qos)
    info.wait_for_publish(timeout=30)
    assert info.is_published()


def client_info(b, cid):
    st, _, raw = b.rapi.call("GET", "/api/v1/clients/" + cid)
    return json.loads(raw) if st == 200 else None


def wait_attached(b, cid, deadline=30.0):
    """Until the API lists cid connected over HTTP (a poll or stream is
    attached to its session on the home worker)."""
    end = time.monotonic() + deadline
    while True:
        o = client_info(b, cid)
        if o and o.get("connected") and o.get("protocol") == "http":
            return o
        assert time.monotonic() < end, "%s never attached: %r" % (cid, o)
        time.sleep(0.05)


class Stream:
    """A server-sent events stream read line by line."""

    def __init__(self, b, dev="dev1", token="tok1"):
        self.c = http.client.HTTPConnection("127.0.0.1", b.http_port, timeout=30)
        self.c.request("GET", "/devices/%s/events" % dev,
                       headers={"Authorization": "Bearer " + token})
        self.r = self.c.getresponse()

    def next_event(self):
        """(event, data) of the next event, skipping comments; None at the end."""
        ev, data = None, None
        while True:
            line = self.r.readline()
            if not line:
                return None
            line = line.decode().rstrip("\n")
            if line.startswith(":"):
                continue
            if line == "":
                if ev:
                    return ev, data
                continue
            k, _, v = line.partition(": ")
            if k == "event":
                ev = v
            elif k == "data":
                data = json.loads(v)

    def close(self):
        self.c.close()


def test_poll_queued_then_live(dbroker):
    b = dbroker()
    # the first poll creates the session and its subscription
    assert get(b, "/devices/dev1/messages?wait=0")[0] == 204
    pub = publisher(b)
    try:
        # QoS 1 while no poll is open: queued, answered at once by the next
        publish(pub, "$cmd/dev1/x", b"queued-1")
        publish(pub, "$cmd/dev1/y", b"\x00\xff")  # not UTF-8: base64
        t0 = time.monotonic()
        st, msgs = get(b, "/devices/dev1/messages?wait=20")
        assert st == 200, msgs
        assert time.monotonic() - t0 < 15
        assert [m["topic"] for m in msgs] == ["$cmd/dev1/x", "$cmd/dev1/y"]
        assert msgs[0]["payload"] == "queued-1" and msgs[0]["qos"] == 1
        assert "encoding" not in msgs[0] and msgs[0]["retain"] is False
        assert msgs[1]["encoding"] == "base64"
        assert base64.b64decode(msgs[1]["payload"]) == b"\x00\xff"
        # acknowledged: the next poll does not get them again
        assert get(b, "/devices/dev1/messages?wait=0")[0] == 204
        # a poll that waits gets a message published during its wait
        out = {}

        def poll():
            out["r"] = get(b, "/devices/dev1/messages?wait=20&max=5")

        th = threading.Thread(target=poll)
        th.start()
        info = wait_attached(b, "dev1")  # listed by the API while it waits
        assert info["username"] == "dev1" and info["listener"] == "http_ingest"
        assert info["persistent"] is True
        publish(pub, "$cmd/dev1/live", b"now", qos=0)
        th.join(30)
        assert not th.is_alive()
        st, msgs = out["r"]
        assert st == 200 and [(m["topic"], m["payload"], m["qos"]) for m in msgs] == \
            [("$cmd/dev1/live", "now", 0)]
        # not attached any more between polls
        end = time.monotonic() + 30
        while client_info(b, "dev1")["connected"]:
            assert time.monotonic() < end
            time.sleep(0.05)
        # max: at most that many QoS 1 messages, the rest for the next poll
        for i in range(3):
            publish(pub, "$cmd/dev1/m", str(i).encode())
        st, msgs = get(b, "/devices/dev1/messages?wait=5&max=2")
        assert st == 200 and [m["payload"] for m in msgs] == ["0", "1"]
        st, msgs = get(b, "/devices/dev1/messages?wait=5&max=2")
        assert st == 200 and [m["payload"] for m in msgs] == ["2"]
    finally:
        pub.loop_stop()
        pub.disconnect()


def test_sse_stream_in_order(dbroker):
    b = dbroker("  heartbeat: 1s\n")
    s = Stream(b)
    pub = publisher(b)
    try:
        assert s.r.status == 200
        assert s.r.getheader("Content-Type") == "text/event-stream"
        wait_attached(b, "dev1")
        for i in range(5):
            publish(pub, "$cmd/dev1/seq", str(i).encode(), qos=i % 2)
        got = []
        for _ in range(5):
            e = s.next_event()
            assert e and e[0] == "message", e
            got.append(e[1]["payload"])
        assert got == [str(i) for i in range(5)]
        # heartbeats keep coming while the stream is idle
        end = time.monotonic() + 20
        beats = 0
        while beats < 2:
            line = s.r.readline()
            assert line and time.monotonic() < end
            beats += line.startswith(b": heartbeat")
    finally:
        s.close()
        pub.loop_stop()
        pub.disconnect()
    # the client went: the session is detached (seen at the next heartbeat)
    end = time.monotonic() + 30
    while client_info(b, "dev1")["connected"]:
        assert time.monotonic() < end, "the stream's endpoint stayed attached"
        time.sleep(0.05)


def test_takeover_ends_the_older(dbroker):
    b = dbroker()
    s = Stream(b)
    try:
        wait_attached(b, "dev1")
        out = {}

        def poll():
            out["r"] = get(b, "/devices/dev1/messages?wait=20")

        th = threading.Thread(target=poll)
        th.start()
        e = s.next_event()  # the older request ends
        assert e and e[0] == "close" and e[1]["code"] == "taken_over", e
        assert s.next_event() is None
        # the poll that took it over is attached; a newer one takes the
        # session from it: the waiting poll answers 409
        wait_attached(b, "dev1")
        assert get(b, "/devices/dev1/messages?wait=0")[0] == 204
        th.join(30)
        assert not th.is_alive()
        st, o = out["r"]
        assert st == 409 and o["code"] == "taken_over", out
    finally:
        s.close()


def test_refused(dbroker):
    b = dbroker('  subscriptions: ["$cmd/{id}/#", "secret/{id}"]\n')
    assert get(b, "/devices/dev1/messages", token="bad")[0] == 401
    assert get(b, "/devices/dev1/messages", token=None)[0] == 401
    assert get(b, "/devices/dev1/events", token="bad")[0] == 401
    st, o = get(b, "/devices/dev1/messages?wait=x")
    assert st == 400 and o["field"] == "wait"
    st, o = get(b, "/devices/dev1/messages?max=0")
    assert st == 400 and o["field"] == "max"
    # each subscription is checked by the ACL: secret/dev2 is denied
    assert get(b, "/devices/dev2/messages?wait=0", token="tok2")[0] == 204
    o = b.rapi.json("GET", "/api/v1/clients/dev2")
    assert [x["topic"] for x in o["subscriptions"]] == ["$cmd/dev2/#"], o


def test_presence_kick_and_mqtt_takeover(dbroker):
    b = dbroker()
    assert get(b, "/devices/dev1/messages?wait=0")[0] == 204
    # client_connected and client_disconnected fired for the poll
    end = time.monotonic() + 30
    while True:
        evs = b.rapi.json("GET", "/api/v1/clients/dev1/events")["events"]
        kinds = [e["event"] for e in evs]
        if "client_connected" in kinds and "client_disconnected" in kinds:
            break
        assert time.monotonic() < end, evs
        time.sleep(0.05)
    conn = [e for e in evs if e["event"] == "client_connected"][0]
    assert "http_ingest" in conn["detail"] and "HTTP" in conn["detail"], conn
    # an administrator's kick ends the stream
    s = Stream(b)
    try:
        wait_attached(b, "dev1")
        st, _, _ = b.rapi.call("DELETE", "/api/v1/clients/dev1")
        assert st in (200, 204)
        e = s.next_event()
        assert e and e[0] == "close" and e[1]["code"] == "kicked", e
    finally:
        s.close()
    # an MQTT connection with the device's id takes the session from a stream
    s = Stream(b)
    m = None
    try:
        wait_attached(b, "dev1")
        m = mqtt.Client(client_id="dev1", protocol=mqtt.MQTTv311, clean_session=False)
        m.username_pw_set("dev1", "tok1")
        m.connect("127.0.0.1", b.port)
        m.loop_start()
        e = s.next_event()
        assert e and e[0] == "close" and e[1]["code"] == "taken_over", e
        end = time.monotonic() + 30
        while (client_info(b, "dev1") or {}).get("protocol") != "mqtt":
            assert time.monotonic() < end
            time.sleep(0.05)
        # and a poll takes it back from the MQTT connection
        disc = threading.Event()
        m.on_disconnect = lambda *a: disc.set()
        assert get(b, "/devices/dev1/messages?wait=0")[0] == 204
        assert disc.wait(30)
    finally:
        s.close()
        if m:
            m.loop_stop()
            m.disconnect()


def test_stop_with_open_requests(dbroker):
    """The broker stops cleanly (exit 0, nothing leaked under ASan) with a
    stream open and a poll waiting: both end."""
    b = dbroker()
    s = Stream(b)
    out = {}

    def poll():
        try:
            out["r"] = get(b, "/devices/dev2/messages?wait=25", token="tok2")
        except (OSError, http.client.HTTPException) as e:
            out["r"] = (None, repr(e))

    th = threading.Thread(target=poll)
    try:
        wait_attached(b, "dev1")
        th.start()
        wait_attached(b, "dev2")
        b.stop()
        th.join(30)
        assert not th.is_alive()
        assert out["r"][0] in (None, 503), out
        assert s.next_event() is None
    finally:
        s.close()


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")
def test_tls(dbroker, tmp_path):
    """tls_cert/tls_key: the device listener speaks HTTPS (MHD with GnuTLS),
    the long poll too."""
    crt, key = tmp_path / "d.crt", tmp_path / "d.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(crt), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True, timeout=60)
    b = dbroker("  tls_cert: %s\n  tls_key: %s\n" % (crt, key))
    ctx = ssl.create_default_context(cafile=str(crt))
    end = time.monotonic() + 30
    while True:
        try:
            c = http.client.HTTPSConnection("127.0.0.1", b.http_port, timeout=30, context=ctx)
            c.request("GET", "/devices/dev1/messages?wait=0",
                      headers={"Authorization": "Bearer tok1"})
            r = c.getresponse()
            r.read()
            c.close()
            break
        except OSError:
            assert time.monotonic() < end, "no HTTPS listener"
            time.sleep(0.1)
    assert r.status == 204
    # plain HTTP gets no answer from it
    with pytest.raises((OSError, http.client.HTTPException)):
        get(b, "/devices/dev1/messages?wait=0", timeout=5)
    # one without the other refuses the file, naming the key
    with pytest.raises(pytest.fail.Exception) as e:
        dbroker("  tls_cert: %s\n" % crt)
    assert "http_ingest.tls_key" in str(e.value)


def test_command_round_trip(dbroker):
    """A command of the commands module (docs/commands.md) reaches a polling
    device, with its MQTT 5 properties; the device answers with a POST."""
    b = dbroker("commands:\n  enabled: true\n  reply_timeout: 20s\n")
    assert get(b, "/devices/dev1/messages?wait=0")[0] == 204
    r = b.rapi.json("POST", "/api/v1/devices/dev1/commands",
                    {"name": "reboot", "params": {"delay": 3}, "qos": 1}, status=202)
    end = time.monotonic() + 30
    msgs = []
    while not msgs:
        st, msgs = get(b, "/devices/dev1/messages?wait=5")
        assert st in (200, 204) and time.monotonic() < end
        msgs = msgs or []
    m = msgs[0]
    assert m["topic"] == "$cmd/dev1/reboot" and m["qos"] == 1, m
    assert json.loads(m["payload"])["params"] == {"delay": 3}
    assert m["properties"]["response_topic"] == "$cmd/dev1/reply"
    assert m["properties"]["correlation_data"] == r["id"]
    body = json.dumps({"topic": "$cmd/dev1/reply/" + r["id"],
                       "payload": json.dumps({"status": "succeeded", "result": 1})}).encode()
    c = http.client.HTTPConnection("127.0.0.1", b.http_port, timeout=30)
    c.request("POST", "/devices/dev1/messages", body=body,
              headers={"Authorization": "Bearer tok1", "Content-Type": "application/json"})
    resp = c.getresponse()
    resp.read()
    c.close()
    assert resp.status == 200
    end = time.monotonic() + 30
    while True:
        o = b.rapi.json("GET", "/api/v1/commands/%s?wait=2s" % r["id"])
        if o["status"] == "succeeded":
            break
        assert time.monotonic() < end, o
    assert o["result"] == 1
