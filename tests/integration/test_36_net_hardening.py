"""Network and logging hardening (issue 13, items 3, 8, 9, 14 and the
WebSocket origin check).

- an empty WebSocket binary frame right after the upgrade is harmless
  (it was undefined behaviour: the sanitizer build aborted);
- ws_allowed_origins: an upgrade from another Origin gets 403;
- a client id with control characters cannot forge log lines;
- out of file descriptors, the workers neither spin nor flood the log, and
  serve again once descriptors are free;
- reason codes reach the client: after a DISCONNECT or a refusing CONNACK
  the broker closes gracefully (lingering close), so a client that was
  still writing reads the packet instead of a reset.
"""

import os
import resource
import socket
import struct
import time

import pytest

import mqttraw

pytestmark = pytest.mark.antenna_only

SANITIZED = os.environ.get("ANTENNA_SANITIZED") == "1"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


# ------------------------------------------------------------ WebSocket helpers

def ws_request(path="/mqtt", origin=None):
    lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: %s" % KEY,
             "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: mqtt"]
    if origin is not None:
        lines.append("Origin: %s" % origin)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def ws_frame(opcode, payload, fin=True, mask=b"\x11\x22\x33\x44"):
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        hdr = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        hdr = struct.pack("!BBQ", first, 0x80 | 127, n)
    return hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def recv_until(s, pred, timeout=5.0):
    """Bytes read from s until pred(data) is true, EOF or the deadline."""
    s.settimeout(0.2)
    data = b""
    deadline = time.monotonic() + timeout
    while not pred(data) and time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            break
        data += chunk
    return data


def ws_upgrade(port, origin=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(ws_request(origin=origin))
    data = recv_until(s, lambda d: b"\r\n\r\n" in d)
    head, _, rest = data.partition(b"\r\n\r\n")
    return s, head.decode("latin-1"), rest


def ws_frames(data):
    """(opcode, payload) of the complete unmasked server frames in data."""
    out, off = [], 0
    while off + 2 <= len(data):
        b0, b1 = data[off], data[off + 1]
        n, hl = b1 & 0x7F, 2
        if n == 126:
            n, hl = struct.unpack("!H", data[off + 2:off + 4])[0], 4
        elif n == 127:
            n, hl = struct.unpack("!Q", data[off + 2:off + 10])[0], 10
        if off + hl + n > len(data):
            break
        out.append((b0 & 0x0F, data[off + hl:off + hl + n]))
        off += hl + n
    return out


def tcp_serving(b, port=None):
    """A fresh MQTT client on the TCP listener gets its own message."""
    with mqttraw.RawClient(b.host, port or b.ports[-1]) as c:
        assert c.connect("serving-check").rc == 0
        assert c.subscribe(1, [("serving/check", 1)]).codes == [1]
        c.publish("serving/check", b"ok", qos=1, pid=2)
        p = c.recv_publish()
        assert (p.topic, p.payload) == ("serving/check", b"ok")
        c.ack(p)
        c.disconnect()


def ws_broker(broker, **listener):
    lst = {"transport": "ws"}
    lst.update(listener)
    return broker(listener=lst, extra_listeners=1)


# ------------------------------------------------------------ item 9

@pytest.mark.parametrize("empty_first", [1, 3])
def test_ws_empty_binary_frames_then_connect(broker, empty_first):
    """Empty binary frames (right after the upgrade, and between packets)
    carry no MQTT bytes and must not upset the broker (undefined behaviour
    in net_ws.c before: memcpy from a NULL buffer)."""
    b = ws_broker(broker)
    s, head, rest = ws_upgrade(b.port)
    try:
        assert head.startswith("HTTP/1.1 101 "), head
        for _ in range(empty_first):
            s.sendall(ws_frame(2, b""))
        s.sendall(ws_frame(2, mqttraw.connect("ws-empty")) + ws_frame(2, b""))
        data = recv_until(s, lambda d: any(op == 2 for op, _ in ws_frames(rest + d)))
        frames = ws_frames(rest + data)
        assert frames and frames[0][0] == 2, frames
        assert frames[0][1][:1] == b"\x20" and frames[0][1][3] == 0, frames  # CONNACK 0
        # an empty continuation of a fragmented message, then PINGREQ
        s.sendall(ws_frame(2, b"", fin=False) + ws_frame(0, mqttraw.pingreq()))
        data = recv_until(s, lambda d: any(p[:1] == b"\xd0" for _, p in ws_frames(d)))
        assert any(p[:1] == b"\xd0" for _, p in ws_frames(data)), data
    finally:
        s.close()
    tcp_serving(b)


# ------------------------------------------------------------ WebSocket origins

def test_ws_allowed_origins(broker):
    b = ws_broker(broker, ws_allowed_origins=["https://app.example.com",
                                              "http://localhost:8080"])
    for origin, ok in [("https://app.example.com", True), ("HTTPS://APP.example.COM", True),
                       ("http://localhost:8080", True), ("https://evil.example.com", False),
                       ("https://app.example.com.evil.net", False),
                       ("http://localhost:8081", False), ("null", False), (None, True)]:
        s, head, _ = ws_upgrade(b.port, origin)
        try:
            if ok:
                assert head.startswith("HTTP/1.1 101 "), (origin, head)
            else:
                assert head.startswith("HTTP/1.1 403 "), (origin, head)
                assert recv_until(s, lambda d: False, timeout=3) == b""  # closed
        finally:
            s.close()
    b.wait_log(r"origin .*evil\.example\.com.* not allowed")
    tcp_serving(b)


def test_ws_any_origin_by_default(broker):
    b = ws_broker(broker)
    s, head, _ = ws_upgrade(b.port, "https://anything.example")
    s.close()
    assert head.startswith("HTTP/1.1 101 "), head


# ------------------------------------------------------------ item 8

@pytest.mark.parametrize("fmt", ["text", "json"])
def test_client_id_cannot_forge_log_lines(broker, tmp_path, fmt):
    """A client id with a line feed (and other control bytes) stays on its
    own log line, escaped; nothing starts a line of its own."""
    log = tmp_path / "broker.log"
    b = broker(log={"file": str(log), "format": fmt})
    evil = "a\nFAKE LINE error everything is broken\r\x1b[31m\x7f"
    with b.raw() as c:
        ack = c.connect(evil)
        if ack.rc == 0:
            c.disconnect()
    b.wait_log(r"FAKE LINE")
    b.stop()
    lines = log.read_bytes().decode("utf-8", "replace").split("\n")
    assert not any(l.startswith("FAKE") for l in lines), lines
    hits = [l for l in lines if "FAKE LINE" in l]
    assert hits, lines
    for l in hits:
        assert "\r" not in l and "\x1b" not in l and "\x7f" not in l, repr(l)
        if fmt == "text":
            assert "a\\x0aFAKE LINE" in l and "\\x0d\\x1b[31m\\x7f" in l, repr(l)
        else:
            assert "a\\nFAKE LINE" in l or "a\\u000aFAKE LINE" in l, repr(l)
