"""The CoAP gateway (issue 19, section coap): devices publish with POST/PUT
to /ps/{topic} and observe /ps/{filter} (GET + Observe) over UDP, driven
here with libcoap's own client (coap-client-openssl, Debian libcoap3-bin).
Authentication and ACLs through the broker's auth chain (password_file +
acl_file: a device's token is the password of user {c})."""

import queue
import re
import shutil
import signal
import subprocess
import time

import paho.mqtt.client as mqtt
import pytest

from authutil import pbkdf2_line
from test_61_modules import SectionBrokers

pytestmark = [
    pytest.mark.antenna_only,
    pytest.mark.skipif(shutil.which("coap-client-openssl") is None,
                       reason="coap-client-openssl (libcoap3-bin) is not installed"),
]

CLIENT = "coap-client-openssl"

ACL = """\
any
allow all devices/%c/#
user watcher
allow sub #
allow pub #
"""


@pytest.fixture
def cbroker(tmp_path):
    brokers = SectionBrokers(tmp_path)

    def start(extra=""):
        pw = tmp_path / "passwd"
        pw.write_text(pbkdf2_line("dev1", "tok1") + "\n" + pbkdf2_line("dev2", "tok2") + "\n" +
                      pbkdf2_line("watcher", "w") + "\n")
        acl = tmp_path / "acl"
        acl.write_text(ACL)
        sec = "coap:\n  enabled: true\n  bind: 127.0.0.1\n  port: 0\n%s" % extra
        b = brokers(sec, auth={"password_file": str(pw), "acl_file": str(acl)})
        b.coap_port = bound_port(b)
        return b

    yield start
    brokers.close()


def bound_port(b, deadline=30.0):
    """The UDP port the gateway logged ("coap: listening on udp 127.0.0.1:N")."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            m = re.search(r"coap: listening on udp [0-9.]+:(\d+)", b.log_path.read_text())
        except OSError:
            m = None
        if m:
            return int(m.group(1))
        time.sleep(0.1)
    raise AssertionError("the coap gateway did not log its port")


def client_output(r):
    """coap-client's stdout and stderr as text, its log lines' clock times
    taken out: a time such as 20:06:52.049 holds "2.04", which is not a
    response code."""
    text = (r.stdout + r.stderr).decode(errors="replace")
    return re.sub(r"\b\d\d:\d\d:\d\d\.\d+\b", "hh:mm:ss", text)


def coap(b, method, path, payload=None, extra=(), timeout=60):
    """One request with coap-client; (returncode, stdout+stderr)."""
    args = [CLIENT, "-m", method, "-B", "20"] + list(extra)
    if payload is not None:
        args += ["-e", payload]
    args.append("coap://127.0.0.1:%d%s" % (b.coap_port, path))
    r = subprocess.run(args, capture_output=True, timeout=timeout)
    return r.returncode, client_output(r)


def subscriber(b, topic, cid="watcher-c"):
    got = queue.Queue()
    ready = queue.Queue()
    c = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv311)
    c.username_pw_set("watcher", "w")
    c.on_connect = lambda cl, *a: cl.subscribe(topic, 1)
    c.on_subscribe = lambda *a: ready.put(1)
    c.on_message = lambda cl, u, m: got.put((m.topic, m.payload, m.qos, m.retain))
    c.connect("127.0.0.1", b.port)
    c.loop_start()
    ready.get(timeout=30)
    return c, got


def metric(b, name):
    st, _, raw = b.rapi.call("GET", "/metrics")
    assert st == 200
    m = re.search(r"^%s (\d+)$" % re.escape(name), raw.decode(), re.M)
    return int(m.group(1)) if m else None


def wait_metric(b, name, value, deadline=30.0, at_least=False):
    end = time.monotonic() + deadline
    while True:
        v = metric(b, name)
        if v == value or (at_least and v is not None and v >= value):
            return
        assert time.monotonic() < end, "%s is %r, not %r" % (name, v, value)
        time.sleep(0.1)


def test_publish_into_mqtt(cbroker):
    b = cbroker()
    c, got = subscriber(b, "devices/#")
    try:
        rc, out = coap(b, "put", "/ps/devices/dev1/temp?c=dev1&token=tok1", "21.5")
        assert rc == 0 and "4." not in out and "5." not in out, out
        assert got.get(timeout=30)[:3] == ("devices/dev1/temp", b"21.5", 0)
        rc, out = coap(b, "post", "/ps/devices/dev1/q?u=dev1&p=tok1&qos=1", "one")
        assert rc == 0 and "4." not in out, out
        assert got.get(timeout=30)[:3] == ("devices/dev1/q", b"one", 1)
        # retained: a later subscriber gets it
        rc, out = coap(b, "put", "/ps/devices/dev1/r?c=dev1&token=tok1&retain=1", "kept")
        assert rc == 0 and "4." not in out, out
        assert got.get(timeout=30)[:2] == ("devices/dev1/r", b"kept")
    finally:
        c.loop_stop()
        c.disconnect()
    c2, got2 = subscriber(b, "devices/dev1/r", cid="watcher-2")
    try:
        t, p, _, retain = got2.get(timeout=30)
        assert (t, p, retain) == ("devices/dev1/r", b"kept", True)
    finally:
        c2.loop_stop()
        c2.disconnect()
    assert metric(b, "antenna_coap_published_total") == 3


def test_bad_requests_and_auth(cbroker):
    b = cbroker("  max_body: 1000\n")
    cases = [
        ("/nothing/here?c=dev1&token=tok1", "x", "4.04"),
        ("/ps/devices/dev1/a?c=dev1&token=tok1&qos=2", "x", "4.00"),
        ("/ps/devices/+/a?c=dev1&token=tok1", "x", "4.00"),
        ("/ps?c=dev1&token=tok1", "x", "4.00"),
        ("/ps/devices/dev1/a?c=dev1&token=wrong", "x", "4.01"),
        ("/ps/devices/dev1/a", "x", "4.01"),
        ("/ps/devices/dev2/a?c=dev1&token=tok1", "x", "4.03"),
        ("/ps/devices/dev1/a?c=dev1&token=tok1", "y" * 1500, "4.13"),
    ]
    for path, payload, code in cases:
        rc, out = coap(b, "put", path, payload)
        assert code in out, (path, out)
    assert metric(b, "antenna_coap_auth_refused_total") == 2
    assert metric(b, "antenna_coap_published_total") == 0


def test_large_payload_blockwise(cbroker):
    b = cbroker()
    c, got = subscriber(b, "devices/#")
    try:
        body = "".join(chr(ord("a") + i % 26) for i in range(5000))
        rc, out = coap(b, "put", "/ps/devices/dev1/big?c=dev1&token=tok1", body,
                       extra=["-b", "64"])
        assert rc == 0 and "4." not in out, out
        t, p, _, _ = got.get(timeout=30)
        assert (t, p) == ("devices/dev1/big", body.encode())
    finally:
        c.loop_stop()
        c.disconnect()


class Observer:
    """coap-client -s N observing a path, its output read as it comes."""

    def __init__(self, b, path, seconds, extra=()):
        args = [CLIENT, "-m", "get", "-s", str(seconds), "-B", str(seconds + 30)] + list(extra)
        args.append("coap://127.0.0.1:%d%s" % (b.coap_port, path))
        self.out_path = b.log_path.parent / ("observer%d.out" % id(self))
        self.f = open(self.out_path, "wb")
        self.p = subprocess.Popen(args, stdout=self.f, stderr=subprocess.STDOUT)

    def output(self):
        return self.out_path.read_bytes().decode(errors="replace")

    def wait_for(self, text, deadline=30.0):
        end = time.monotonic() + deadline
        while text not in self.output():
            assert time.monotonic() < end, "%r not in %r" % (text, self.output())
            assert self.p.poll() is None or text in self.output(), self.output()
            time.sleep(0.1)

    def close(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
        self.p.wait(timeout=30)
        self.f.close()


def publisher(b):
    c = mqtt.Client(client_id="pub-watcher", protocol=mqtt.MQTTv311)
    c.username_pw_set("watcher", "w")
    c.connect("127.0.0.1", b.port)
    c.loop_start()
    return c


def publish_until(b, c, topic, payload, obs, deadline=30.0):
    """The observation is registered once the gauge says so; publish then
    (again if needed, the output polled) until the observer printed it."""
    end = time.monotonic() + deadline
    while True:
        c.publish(topic, payload, qos=1).wait_for_publish(timeout=30)
        stop = time.monotonic() + 2
        while time.monotonic() < stop:
            if payload in obs.output():
                return
            time.sleep(0.05)
        assert time.monotonic() < end, obs.output()


def test_observe_receives_mqtt_and_cancel(cbroker):
    # one idle libcoap session at most: the other clients' sessions recycle
    # each other, the observer's is held
    b = cbroker("  max_idle_sessions: 1\n")
    obs = Observer(b, "/ps/devices/dev1/%23?c=dev1&token=tok1", 12)
    pub = publisher(b)
    try:
        wait_metric(b, "antenna_coap_observers", 1)
        publish_until(b, pub, "devices/dev1/x", "from-mqtt-1", obs)
        for i in range(3):  # each coap-client from a port of its own
            rc, out = coap(b, "put", "/ps/devices/dev1/c?c=dev1&token=tok1", "via-coap-%d" % i)
            assert rc == 0 and "4." not in out, out
        obs.wait_for("via-coap-2")
        publish_until(b, pub, "devices/dev1/y/z", "from-mqtt-2", obs)
        pub.publish("devices/dev2/other", "not-mine", qos=1).wait_for_publish(timeout=30)
        # the client's -s time ends: it cancels the observation (GET Observe=1)
        assert obs.p.wait(timeout=60) == 0
        assert "not-mine" not in obs.output()
        wait_metric(b, "antenna_coap_observers", 0)
        assert metric(b, "antenna_coap_notifications_total") >= 2
    finally:
        obs.close()
        pub.loop_stop()
        pub.disconnect()


def test_observe_gets_the_retained_messages_first(cbroker):
    """A new observation's first notifications are the retained messages
    its filter matches (as an MQTT subscription's), those the ACL lets the
    device read; then live ones."""
    b = cbroker()
    pub = publisher(b)
    try:
        for t, p in (("devices/dev1/r/a", "kept-a"), ("devices/dev1/r/b", "kept-b"),
                     ("devices/dev2/r/a", "not-dev1s")):
            pub.publish(t, p, qos=1, retain=True).wait_for_publish(timeout=30)
        # ACL: dev1 may read devices/dev1/# only: a filter over every device
        # is partly granted, and devices/dev2's retained message is not sent
        obs = Observer(b, "/ps/devices/%2B/r/%2B?c=dev1&token=tok1", 8)
        try:
            obs.wait_for("kept-a")
            obs.wait_for("kept-b")
            publish_until(b, pub, "devices/dev1/r/c", "live-c", obs)
            assert obs.p.wait(timeout=60) == 0
            assert "not-dev1s" not in obs.output()
        finally:
            obs.close()
        # a plain GET reads a topic's retained message: its current value
        rc, out = coap(b, "get", "/ps/devices/dev1/r/b?c=dev1&token=tok1")
        assert rc == 0 and out.strip() == "kept-b", out
        rc, out = coap(b, "get", "/ps/devices/dev1/none?c=dev1&token=tok1")
        assert "4.04" in out, out
        rc, out = coap(b, "get", "/ps/devices/dev2/r/a?c=dev1&token=tok1")
        assert "4.03" in out and "not-dev1s" not in out, out
        rc, out = coap(b, "get", "/ps/devices/%2B/r/a?c=dev1&token=tok1")
        assert "4.00" in out, out
        rc, out = coap(b, "get", "/ps/devices/dev1/r/b?c=dev1&token=bad")
        assert "4.01" in out, out
    finally:
        pub.loop_stop()
        pub.disconnect()


def test_observe_blockwise_notification(cbroker):
    """A message larger than one datagram reaches the observer block-wise
    (Block2, RFC 7959): libcoap sends the first block with the notification
    and answers the client's requests for the others."""
    b = cbroker()
    obs = Observer(b, "/ps/devices/dev1/big?c=dev1&token=tok1", 10)
    pub = publisher(b)
    try:
        wait_metric(b, "antenna_coap_observers", 1)
        body = "".join(chr(ord("A") + i % 26) for i in range(3000)) + "-END"
        publish_until(b, pub, "devices/dev1/big", body, obs)
        assert metric(b, "antenna_coap_dropped_total") == 0
    finally:
        obs.close()
        pub.loop_stop()
        pub.disconnect()


def test_observe_refused_and_lifetime(cbroker):
    b = cbroker("  observe_lifetime_s: 2\n  confirmable: true\n")
    rc, out = coap(b, "get", "/ps/devices/dev2/%23?c=dev1&token=tok1", extra=["-s", "1"])
    assert "4.03" in out, out
    rc, out = coap(b, "get", "/ps/%23?c=dev1&token=bad", extra=["-s", "1"])
    assert "4.01" in out, out
    # a client that disappears (killed: no cancel) is dropped after the lifetime
    obs = Observer(b, "/ps/devices/dev1/%23?c=dev1&token=tok1", 60)
    pub = publisher(b)
    try:
        wait_metric(b, "antenna_coap_observers", 1)
        publish_until(b, pub, "devices/dev1/con", "confirmable-1", obs)
        obs.p.send_signal(signal.SIGKILL)
        obs.p.wait(timeout=30)
        wait_metric(b, "antenna_coap_observers", 0)
        assert metric(b, "antenna_coap_observations_expired_total") >= 1 or \
            metric(b, "antenna_coap_observers") == 0
    finally:
        obs.close()
        pub.loop_stop()
        pub.disconnect()


@pytest.mark.parametrize("bad, key", [("port: 70000", "coap.port"),
                                      ("bind: not-an-address", "coap.bind"),
                                      ("observe_lifetime_s: 0", "coap.observe_lifetime_s"),
                                      ("psk_file: /nonexistent/psk", "coap.psk_file")])
def test_bad_config_refused(tmp_path, bad, key):
    from conftest import require_antenna_bin
    cfg = tmp_path / "a.yaml"
    cfg.write_text("persistence:\n  enabled: false\ncoap:\n  enabled: true\n  %s\n" % bad)
    p = subprocess.run([require_antenna_bin(), "check", "-c", str(cfg)], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode != 0
    assert "a.yaml:5" in p.stderr + p.stdout and key in p.stderr + p.stdout, p.stderr + p.stdout


def dtls_port(b, deadline=30.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        m = re.search(r"coap: listening on dtls [0-9.]+:(\d+)", b.log_path.read_text())
        if m:
            return int(m.group(1))
        time.sleep(0.1)
    raise AssertionError("the coap gateway did not log its DTLS port")


def test_dtls_psk(cbroker, tmp_path):
    psk = tmp_path / "coap.psk"
    psk.write_text("# identity:key\ndev1:secret-one\ndev2:hex:00112233445566778899\n")
    b = cbroker("  psk_file: %s\n  dtls_port: 0\n" % psk)
    port = dtls_port(b)
    c, got = subscriber(b, "devices/#")

    def put(path, ident, key, payload, wait=20):
        args = [CLIENT, "-m", "put", "-B", str(wait), "-u", ident, "-k", key, "-e", payload,
                "coaps://127.0.0.1:%d%s" % (port, path)]
        r = subprocess.run(args, capture_output=True, timeout=60)
        return r.returncode, client_output(r)

    try:
        # the identity is the user and, without ?c=, the client id: no query credentials
        rc, out = put("/ps/devices/dev1/secure", "dev1", "secret-one", "over-dtls")
        assert rc == 0 and "4." not in out, out
        assert got.get(timeout=30)[:2] == ("devices/dev1/secure", b"over-dtls")
        rc, out = put("/ps/devices/dev2/secure", "dev1", "secret-one", "not-mine")
        assert "4.03" in out, out
        refused = metric(b, "antenna_coap_auth_refused_total")
        # a wrong key or an unknown identity: the handshake fails, nothing is published
        # (coap-client only logs "cannot send CoAP pdu")
        rc, out = put("/ps/devices/dev1/secure", "dev1", "wrong-key", "bad", wait=2)
        assert "2.04" not in out, out
        rc, out = put("/ps/devices/dev1/secure", "nobody", "x", "bad", wait=5)
        assert "2.04" not in out, out
        wait_metric(b, "antenna_coap_auth_refused_total", refused + 1, at_least=True)
        assert metric(b, "antenna_coap_published_total") == 1
        assert got.empty()
    finally:
        c.loop_stop()
        c.disconnect()
