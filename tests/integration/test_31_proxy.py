"""PROXY protocol v1/v2 on a listener (proxy_protocol: v1 | v2): the header
comes first, its source address is the client's address in the logs; a
connection without a valid header is closed with a log line."""

import shutil
import socket
import ssl
import struct
import subprocess
import time

import pytest

import mqttraw
from conftest import free_port, wait_for

pytestmark = pytest.mark.antenna_only

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(src, sport, dst, dport, family=socket.AF_INET, command=1):
    if command == 0:
        return V2_SIG + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    a = socket.inet_pton(family, src) + socket.inet_pton(family, dst)
    body = a + struct.pack("!HH", sport, dport)
    fam = 0x11 if family == socket.AF_INET else 0x21
    return V2_SIG + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


def connect_with(b, header, client_id, split=False):
    c = b.raw()
    if split:  # the header in pieces: the broker must wait for the rest
        for i in range(0, len(header), 5):
            c.sock.sendall(header[i:i + 5])
            time.sleep(0.02)
        c.sock.sendall(mqttraw.connect(client_id))
        ack = c.recv_type(mqttraw.CONNACK)
    else:
        c.sock.sendall(header + mqttraw.connect(client_id))
        ack = c.recv_type(mqttraw.CONNACK)
    return c, ack


@pytest.mark.parametrize("split", [False, True])
def test_v1_tcp4(broker, split):
    b = broker(listener={"proxy_protocol": "v1"})
    c, ack = connect_with(b, b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 %d\r\n" % b.port,
                          "p1", split)
    assert ack.rc == 0
    b.wait_log(r"client 'p1' \(203\.0\.113\.7:51234\): connected")
    c.disconnect()


def test_v1_tcp6_and_unknown(broker):
    b = broker(listener={"proxy_protocol": "v1"})
    c, ack = connect_with(b, b"PROXY TCP6 2001:db8::7 ::1 40000 1883\r\n", "p6")
    assert ack.rc == 0
    b.wait_log(r"client 'p6' \(2001:db8::7:40000\): connected")
    c.disconnect()
    c, ack = connect_with(b, b"PROXY UNKNOWN\r\n", "pu")
    assert ack.rc == 0
    b.wait_log(r"client 'pu' \(127\.0\.0\.1:\d+\): connected")
    c.disconnect()


@pytest.mark.parametrize("split", [False, True])
def test_v2_ipv4_ipv6_local(broker, split):
    b = broker(listener={"proxy_protocol": "v2"})
    c, ack = connect_with(b, v2_header("198.51.100.9", 50000, "127.0.0.1", b.port),
                          "v2a", split)
    assert ack.rc == 0
    c2, ack = connect_with(b, v2_header("2001:db8::42", 4660, "::1", b.port,
                                        family=socket.AF_INET6), "v2b", split)
    assert ack.rc == 0
    c3, ack = connect_with(b, v2_header(None, 0, None, 0, command=0), "v2l", split)
    assert ack.rc == 0
    b.wait_log(r"client 'v2a' \(198\.51\.100\.9:50000\): connected")
    b.wait_log(r"client 'v2b' \(2001:db8::42:4660\): connected")
    b.wait_log(r"client 'v2l' \(127\.0\.0\.1:\d+\): connected")
    # the connections work after the header
    sub = c.subscribe(1, [("px/t", 1)])
    assert sub.codes == [1]
    c2.publish("px/t", b"via proxy", qos=1, pid=1)
    p = c.recv_publish()
    assert p.payload == b"via proxy"
    for x in (c, c2, c3):
        x.disconnect()


@pytest.mark.parametrize("version,first", [
    ("v1", None),                                   # plain MQTT, no header
    ("v2", None),
    ("v1", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"),    # LF without CR
    ("v1", b"PROXY TCP4 " + b"9" * 120 + b"\r\n"),  # over 107 bytes
    ("v2", V2_SIG[:11] + b"X" + b"\x21\x11\x00\x0c" + bytes(12)),
    ("v2", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),  # v1 on a v2 listener
])
def test_without_valid_header_closed(broker, version, first):
    b = broker(listener={"proxy_protocol": version})
    c = b.raw()
    c.sock.sendall((first or b"") + mqttraw.connect("nohdr"))
    c.wait_closed()
    b.wait_log(r"127\.0\.0\.1:\d+: disconnected: invalid PROXY protocol header: ")


@pytest.mark.deadline(30)
def test_header_never_sent_times_out(broker):
    b = broker(listener={"proxy_protocol": "v2", "handshake_timeout": 1})
    c = b.raw()
    c.sock.sendall(V2_SIG[:6])  # a valid start, then nothing
    t0 = time.monotonic()
    c.wait_closed(timeout=5)
    assert time.monotonic() - t0 < 4
    b.wait_log(r"disconnected: no PROXY header within handshake_timeout")


def test_proxy_then_tls(broker, tmp_path_factory):
    """PROXY v2 header in clear, then the TLS handshake on the same socket."""
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("pxcert")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", "k.pem", "-out", "c.pem", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"],
                   cwd=d, check=True, capture_output=True)
    b = broker(listener={"proxy_protocol": "v2", "transport": "tls",
                         "cert_file": str(d / "c.pem"), "key_file": str(d / "k.pem")})
    raw = socket.create_connection(("127.0.0.1", b.port), timeout=5)
    raw.sendall(v2_header("192.0.2.55", 1234, "127.0.0.1", b.port))
    ctx = ssl.create_default_context(cafile=str(d / "c.pem"))
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    s.sendall(mqttraw.connect("pxtls"))
    data = s.recv(4)
    assert data[:1] == b"\x20" and data[3] == 0, data
    b.wait_log(r"client 'pxtls' \(192\.0\.2\.55:1234\): connected")
    s.sendall(mqttraw.disconnect())
    s.close()


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy not installed")
@pytest.mark.deadline(60)
def test_haproxy_send_proxy_v2(broker, tmp_path):
    b = broker(listener={"proxy_protocol": "v2"})
    front = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        "global\n  log stderr format raw local0\n"
        "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n"
        "  timeout server 30s\n"
        "frontend f\n  bind 127.0.0.1:%d\n  default_backend be\n"
        "backend be\n  server antenna 127.0.0.1:%d send-proxy-v2\n" % (front, b.port))
    hp = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def up():
            try:
                socket.create_connection(("127.0.0.1", front), timeout=0.2).close()
                return True
            except OSError:
                return False
        wait_for(up, 10, what="haproxy listening")
        c = mqttraw.RawClient("127.0.0.1", front)
        local_port = c.sock.getsockname()[1]
        ack = c.connect("behind-haproxy")
        assert ack.rc == 0
        # the log names the client's own address and port, not haproxy's
        b.wait_log(r"client 'behind-haproxy' \(127\.0\.0\.1:%d\): connected" % local_port)
        c.disconnect()
    finally:
        hp.terminate()
        try:
            hp.wait(5)
        except subprocess.TimeoutExpired:
            hp.kill()
            hp.wait(5)
