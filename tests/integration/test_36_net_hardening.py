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


# ------------------------------------------------------------ item 3

def cpu_seconds(pid):
    """User + system CPU time of a process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def metric(b, name):
    import urllib.request
    with urllib.request.urlopen(b.api_url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError("no %s in /metrics" % name)


@pytest.mark.deadline(60)
def test_out_of_file_descriptors_no_spin_no_log_flood(broker, tmp_path):
    """With RLIMIT_NOFILE 64 and 200 idle connections, the broker neither
    spins (accept4 EMFILE on a level-triggered listener) nor floods its
    log; the connections it cannot take are refused and counted; once
    descriptors are free again, clients connect."""
    log = tmp_path / "broker.log"
    b = broker(rlimit_nofile=64, log={"file": str(log)}, persistence={"enabled": False},
               api={"open_metrics": True})
    pid = b.proc.pid
    socks = []
    try:
        for _ in range(200):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect((b.host, b.port))  # completes in the kernel's backlog
            socks.append(s)
        # the broker fills its table, then either refuses or pauses
        wait_for_value(lambda: open_fds(pid) >= 60, 10, "the broker to run out of descriptors")
        t0, c0 = time.monotonic(), cpu_seconds(pid)
        time.sleep(2.0)  # the measurement window itself
        cpu = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        assert cpu < 0.3, "broker used %.0f%% of a core while out of descriptors" % (cpu * 100)
        lines = log.read_text(errors="replace").splitlines()
        assert len(lines) < 100, "%d log lines, e.g. %r" % (len(lines), lines[-3:])
        assert any("accept: Too many open files" in l for l in lines), lines[-20:]
    finally:
        for s in socks:
            s.close()
    # descriptors come back as the broker sees the closes; then it serves
    deadline = time.monotonic() + 15
    while True:
        try:
            tcp_serving(b, b.port)
            break
        except (AssertionError, OSError, mqttraw.Closed, mqttraw.Timeout):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert metric(b, 'antenna_connections_refused_total{reason="fd_limit"}') > 0


def wait_for_value(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)
