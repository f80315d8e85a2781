"""MQTT over WebSocket (transport: ws, wss; MQTT spec section 6).

Real WebSocket clients: MQTT.js (tests/integration/js, installed by `make
test` with npm; those tests are skipped when node or its node_modules are
missing) and paho-mqtt with transport="websockets".  Raw sockets check the
strict upgrade parser and the framing rules.  The first listener is the
WebSocket one, the second plain TCP (cross-transport delivery)."""

import base64
import hashlib
import json
import os
import pathlib
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest

import mqttraw

pytestmark = pytest.mark.antenna_only

JS_DIR = pathlib.Path(__file__).resolve().parent / "js"
NODE = shutil.which("node")
HAVE_MQTTJS = NODE is not None and (JS_DIR / "node_modules" / "mqtt" / "package.json").is_file()
needs_mqttjs = pytest.mark.skipif(
    not HAVE_MQTTJS,
    reason="MQTT.js not installed: needs node on PATH and `npm ci` in tests/integration/js "
           "(make test does it)")

from wsraw import GUID, KEY, frame, request


def ws_broker(broker, **kw):
    lst = {"transport": "ws"}
    lst.update(kw.pop("listener", {}))
    return broker(listener=lst, extra_listeners=1, log={"level": "debug"}, **kw)


# ------------------------------------------------------------ raw helpers

def read_response(s, timeout=5):
    """The HTTP response head, and whether the server then closed."""
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def closed_after(s, timeout=5):
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(4096):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


class WsRaw:
    """A raw WebSocket client: upgrade, then frames."""

    def __init__(self, port, host="127.0.0.1", sock=None):
        self.s = sock or socket.create_connection((host, port), timeout=5)
        self.buf = b""
        self.s.sendall(request())
        head, self.buf = read_response(self.s)
        assert head.startswith("HTTP/1.1 101 "), head
        self.head = head

    def send(self, opcode, payload, **kw):
        self.s.sendall(frame(opcode, payload, **kw))

    def recv_frame(self, timeout=5):
        self.s.settimeout(timeout)

        def need(n):
            while len(self.buf) < n:
                chunk = self.s.recv(65536)
                if not chunk:
                    raise mqttraw.Closed("closed")
                self.buf += chunk
        need(2)
        b0, b1 = self.buf[0], self.buf[1]
        assert not (b1 & 0x80), "server frames must not be masked"
        n, off = b1 & 0x7F, 2
        if n == 126:
            need(4)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            need(10)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        need(off + n)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return b0 & 0x0F, payload

    def recv_mqtt(self, timeout=5):
        """MQTT bytes from binary frames until one whole packet is there."""
        data = b""
        while True:
            op, payload = self.recv_frame(timeout)
            assert op == 2, "expected a binary frame, got opcode %d" % op
            data += payload
            if len(data) >= 2:
                return data

    def close(self):
        self.s.close()


# ------------------------------------------------------------ MQTT.js

def node_client(port, *args, scheme="ws", timeout=20):
    cmd = [NODE, str(JS_DIR / "client.js"), "--url", "%s://%s:%d/mqtt" % (
        scheme, "localhost" if scheme == "wss" else "127.0.0.1", port)] + [str(a) for a in args]
    return subprocess.Popen(cmd, cwd=str(JS_DIR), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)


def node_events(proc, timeout=30):
    out, err = proc.communicate(timeout=timeout)
    events = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    return proc.returncode, events, err.decode()


def messages(events):
    return [(e["topic"], e["payload"]) for e in events if e["event"] == "message"]


@needs_mqttjs
@pytest.mark.parametrize("version", [4, 5])
def test_mqttjs_pubsub_over_ws(broker, version):
    b = ws_broker(broker)
    p = node_client(b.port, "--topic", "ws/#", "--qos", "1", "--publish", "ws/a=hello",
                    "--publish", "ws/b=world", "--count", "2", "--version", version)
    rc, ev, err = node_events(p)
    assert rc == 0, (ev, err)
    assert {"event": "subscribed", "granted": [1]} in ev
    assert messages(ev) == [("ws/a", "hello"), ("ws/b", "world")]
    b.wait_log(r"WebSocket upgrade done")


@needs_mqttjs
def test_mqttjs_large_message_and_tcp_subscriber(broker):
    """A 300 KB PUBLISH (many TCP segments, one WebSocket message) reaches
    a TCP subscriber and the WebSocket publisher itself."""
    b = ws_broker(broker)
    with mqttraw.RawClient("127.0.0.1", b.ports[1]) as tcp:
        assert tcp.connect("tcp-sub").rc == 0
        tcp.subscribe(1, [("big/#", 0)])
        p = node_client(b.port, "--topic", "big/#", "--publish", "big/x=z", "--size", 300000,
                        "--count", "1")
        rc, ev, err = node_events(p)
        assert rc == 0, (ev, err)
        m = [e for e in ev if e["event"] == "message"]
        assert m and m[0]["size"] == 300000
        got = tcp.recv_publish(timeout=10)
        assert got.topic == "big/x" and got.payload == b"z" * 300000


@needs_mqttjs
def test_mqttjs_receives_from_tcp_publisher(broker, request):
    b = ws_broker(broker)
    p = node_client(b.port, "--topic", "x/+", "--qos", "1", "--count", "3")
    first = []
    while True:  # wait for the SUBACK (bounded by the client's own timeout)
        line = p.stdout.readline()
        assert line, "client exited before subscribing: %r" % first
        first.append(json.loads(line))
        if first[-1]["event"] == "subscribed":
            break
    with mqttraw.RawClient("127.0.0.1", b.ports[1]) as tcp:
        assert tcp.connect("tcp-pub").rc == 0
        for i in range(3):
            tcp.publish("x/%d" % i, b"m%d" % i, qos=1, pid=i + 1)
    rc, ev, err = node_events(p)
    assert rc == 0, (first + ev, err, b.log_text()[-3000:])
    assert messages(ev) == [("x/0", "m0"), ("x/1", "m1"), ("x/2", "m2")]


# ------------------------------------------------------------ wss

@pytest.fixture(scope="module")
def ws_certs(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    from test_30_tls import make_ca, make_leaf
    d = tmp_path_factory.mktemp("wscerts")
    make_ca(d, "ca")
    make_leaf(d, "server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
              "extendedKeyUsage=serverAuth")
    return d


def wss_broker(broker, d, **kw):
    return ws_broker(broker, listener={"transport": "wss", "cert_file": str(d / "server.crt"),
                                       "key_file": str(d / "server.key")}, **kw)


@needs_mqttjs
def test_mqttjs_over_wss(broker, ws_certs):
    b = wss_broker(broker, ws_certs)
    p = node_client(b.port, "--topic", "s/#", "--qos", "1", "--publish", "s/1=secure",
                    "--count", "1", "--ca", ws_certs / "ca.crt", scheme="wss")
    rc, ev, err = node_events(p)
    assert rc == 0, (ev, err)
    assert messages(ev) == [("s/1", "secure")]
    b.wait_log(r"TLS handshake done")
    b.wait_log(r"WebSocket upgrade done")


@needs_mqttjs
def test_mqttjs_wss_rejects_unknown_ca(broker, ws_certs, tmp_path):
    """rejectUnauthorized is on: a CA the server is not signed by fails."""
    from test_30_tls import make_ca
    make_ca(tmp_path, "other")
    b = wss_broker(broker, ws_certs)
    p = node_client(b.port, "--topic", "s/#", "--ca", tmp_path / "other.crt", "--timeout", 5,
                    scheme="wss")
    rc, ev, err = node_events(p)
    assert rc != 0
    assert not any(e["event"] == "connected" for e in ev)


def test_raw_wss_upgrade(broker, ws_certs):
    b = wss_broker(broker, ws_certs)
    ctx = ssl.create_default_context(cafile=str(ws_certs / "ca.crt"))
    raw = socket.create_connection(("127.0.0.1", b.port), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    c = WsRaw(b.port, sock=s)
    c.send(2, mqttraw.connect("wss-raw"))
    data = c.recv_mqtt()
    assert data[0] == 0x20 and data[3] == 0, data
    c.close()


def test_wss_sighup_reload_keeps_connections(broker, ws_certs, tmp_path):
    """SIGHUP rebuilds the wss listener's TLS context: a connection made
    before keeps working, a new one is served with the reloaded files."""
    import signal
    crt, key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(ws_certs / "server.crt", crt)
    shutil.copy(ws_certs / "server.key", key)
    b = ws_broker(broker, listener={"transport": "wss", "cert_file": str(crt),
                                    "key_file": str(key)})
    ctx = ssl.create_default_context(cafile=str(ws_certs / "ca.crt"))

    def wss():
        raw = socket.create_connection(("127.0.0.1", b.port), timeout=5)
        return WsRaw(b.port, sock=ctx.wrap_socket(raw, server_hostname="localhost"))
    first = wss()
    first.send(2, mqttraw.connect("wss-before"))
    assert first.recv_mqtt()[:4] == b"\x20\x02\x00\x00"
    first.send(2, mqttraw.subscribe(1, [("wss/r", 0)]))
    assert first.recv_mqtt()[0] == 0x90
    b.proc.send_signal(signal.SIGHUP)
    b.wait_log(r"TLS certificates reloaded: 1 listener\(s\), 0 failed")
    second = wss()
    second.send(2, mqttraw.connect("wss-after"))
    assert second.recv_mqtt()[:4] == b"\x20\x02\x00\x00"
    second.send(2, mqttraw.publish("wss/r", b"across the reload"))
    data = first.recv_mqtt()
    assert data[0] == 0x30 and data.endswith(b"across the reload"), data
    first.close()
    second.close()


# ------------------------------------------------------------ paho

def test_paho_websockets_to_tcp_subscriber(broker):
    paho = pytest.importorskip("paho.mqtt.client")
    b = ws_broker(broker)
    with mqttraw.RawClient("127.0.0.1", b.ports[1]) as tcp:
        assert tcp.connect("tcp-sub").rc == 0
        tcp.subscribe(1, [("paho/#", 1)])
        got = []
        connected = threading.Event()
        c = paho.Client(client_id="paho-ws", transport="websockets")
        c.ws_set_options(path="/mqtt")
        c.on_connect = lambda cl, u, f, rc: (rc == 0 and connected.set())
        c.on_message = lambda cl, u, m: got.append((m.topic, m.payload))
        c.connect("127.0.0.1", b.port, keepalive=30)
        c.loop_start()
        try:
            assert connected.wait(5)
            c.subscribe("back/#", 1)
            time.sleep(0.3)
            info = c.publish("paho/t", b"over websocket", qos=1)
            info.wait_for_publish(5)
            p = tcp.recv_publish(timeout=5)
            assert (p.topic, p.payload) == ("paho/t", b"over websocket")
            tcp.ack(p)
            tcp.publish("back/t", b"over tcp", qos=1, pid=7)
            deadline = time.time() + 5
            while not got and time.time() < deadline:
                time.sleep(0.05)
            assert got == [("back/t", b"over tcp")]
        finally:
            c.disconnect()
            c.loop_stop()


# ------------------------------------------------------------ upgrade parser

def test_upgrade_response_headers(broker):
    b = ws_broker(broker)
    c = WsRaw(b.port)
    h = c.head.lower()
    want = base64.b64encode(hashlib.sha1(KEY.encode() + GUID).digest()).decode().lower()
    assert "sec-websocket-accept: %s" % want in h
    assert "sec-websocket-protocol: mqtt\r\n" in h + "\r\n"
    assert "upgrade: websocket" in h and "connection: upgrade" in h
    c.close()


def test_upgrade_mqttv31_subprotocol_echoed(broker):
    b = ws_broker(broker)
    with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s:
        s.sendall(request(proto="mqttv3.1", connection="keep-alive, Upgrade",
                          upgrade="WebSocket"))
        head, _ = read_response(s)
        assert head.startswith("HTTP/1.1 101"), head
        assert "Sec-WebSocket-Protocol: mqttv3.1" in head


@pytest.mark.parametrize("req,why", [
    (b"POST /mqtt HTTP/1.1\r\nHost: x\r\n\r\n", "not a GET"),
    (request().replace(b"HTTP/1.1", b"HTTP/1.0", 1), "bad request line"),
    (request(host=None), "no Host"),
    (request(upgrade=None), "Upgrade"),
    (request(connection="keep-alive"), "Connection"),
    (request(version="8"), "Version"),
    (request(key="short"), "Sec-WebSocket-Key"),
    (request(key=None), "Sec-WebSocket-Key"),
    (request(proto=None), "does not offer mqtt"),
    (request(proto="wamp, chat"), "does not offer mqtt"),
    (request().replace(b"\r\n", b"\n"), "bare LF"),
    (request(extra=" folded\r\n"), "folding"),
    (request(extra="Bad Header: x\r\n"), "malformed header"),
])
def test_bad_upgrade_gets_400(broker, req, why):
    b = ws_broker(broker)
    with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s:
        s.sendall(req)
        head, _ = read_response(s)
        assert head.startswith("HTTP/1.1 400 Bad Request"), head
        assert closed_after(s)
    b.wait_log(r"disconnected: WebSocket upgrade: .*" + why)


def test_wrong_path_gets_404(broker):
    b = ws_broker(broker)
    with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s:
        s.sendall(request(path="/other"))
        head, _ = read_response(s)
        assert head.startswith("HTTP/1.1 404 Not Found"), head
        assert closed_after(s)


def test_configured_path(broker):
    b = ws_broker(broker, listener={"ws_path": "/broker/ws"})
    with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s:
        s.sendall(request(path="/broker/ws?x=1"))
        head, _ = read_response(s)
        assert head.startswith("HTTP/1.1 101"), head
    with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s:
        s.sendall(request(path="/mqtt"))
        head, _ = read_response(s)
        assert head.startswith("HTTP/1.1 404"), head


def test_oversized_headers_get_400(broker):
    b = ws_broker(broker)
    with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s:
        s.sendall(request(extra="X-Filler: %s\r\n" % ("a" * 9000)))
        head, _ = read_response(s)
        assert head.startswith("HTTP/1.1 400 Bad Request"), head
        assert closed_after(s)
    b.wait_log(r"over 8 KiB")


def test_upgrade_in_small_pieces(broker):
    b = ws_broker(broker)
    with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(request()), 7):
            s.sendall(request()[i:i + 7])
            time.sleep(0.005)
        head, _ = read_response(s)
        assert head.startswith("HTTP/1.1 101"), head


def test_upgrade_timeout(broker):
    b = ws_broker(broker, mqtt={"connect_timeout": 1})
    with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s:
        s.sendall(b"GET /mqtt HTTP/1.1\r\n")
        assert closed_after(s, timeout=5)
    b.wait_log(r"WebSocket upgrade not completed within connect_timeout")


# ------------------------------------------------------------ framing

def test_packet_split_across_frames_and_frames_with_several_packets(broker):
    b = ws_broker(broker)
    c = WsRaw(b.port)
    conn = mqttraw.connect("split")
    c.send(2, conn[:3])
    c.send(2, conn[3:])
    data = c.recv_mqtt()
    assert data[:4] == b"\x20\x02\x00\x00", data
    # SUBSCRIBE and a PUBLISH in one frame, then a PINGREQ fragmented
    c.send(2, mqttraw.subscribe(1, [("f/t", 0)]) + mqttraw.publish("f/t", b"one"))
    got = b""
    while b"one" not in got:
        got += c.recv_mqtt()
    assert got.startswith(b"\x90"), got  # SUBACK first
    c.send(2, b"\xc0", fin=False)
    c.send(0, b"\x00")  # continuation
    assert c.recv_mqtt() == b"\xd0\x00"  # PINGRESP
    c.close()


def test_ping_gets_pong_and_close_is_answered(broker):
    b = ws_broker(broker)
    c = WsRaw(b.port)
    c.send(2, mqttraw.connect("pinger"))
    c.recv_mqtt()
    c.send(9, b"hi")
    assert c.recv_frame() == (10, b"hi")
    c.send(8, struct.pack("!H", 1000))
    op, payload = c.recv_frame()
    assert op == 8
    assert closed_after(c.s)
    b.wait_log(r"disconnected: WebSocket close received")


def test_text_frame_closes_1003(broker):
    b = ws_broker(broker)
    c = WsRaw(b.port)
    c.send(1, b"hello")
    op, payload = c.recv_frame()
    assert op == 8 and struct.unpack("!H", payload[:2])[0] == 1003
    assert closed_after(c.s)
    b.wait_log(r"text frame")


def test_frame_above_ws_max_frame_closes_1009(broker):
    b = ws_broker(broker, listener={"ws_max_frame": 1024})
    c = WsRaw(b.port)
    c.send(2, mqttraw.connect("big"))
    c.recv_mqtt()
    c.send(2, mqttraw.publish("t", b"x" * 2000))
    op, payload = c.recv_frame()
    assert op == 8 and struct.unpack("!H", payload[:2])[0] == 1009
    assert closed_after(c.s)
    b.wait_log(r"larger than ws_max_frame")


def test_unmasked_frame_is_protocol_error(broker):
    b = ws_broker(broker)
    c = WsRaw(b.port)
    c.s.sendall(b"\x82\x02\x10\x00")
    op, payload = c.recv_frame()
    assert op == 8 and struct.unpack("!H", payload[:2])[0] == 1002
    assert closed_after(c.s)


def test_broker_close_sends_close_frame(broker):
    """A first packet that is not CONNECT: the MQTT layer closes, the
    client sees a close frame then the end of the stream."""
    b = ws_broker(broker)
    c = WsRaw(b.port)
    c.send(2, mqttraw.pingreq())
    op, _ = c.recv_frame()
    assert op == 8
    assert closed_after(c.s)
