"""Slow and hostile clients: a half-sent CONNECT (slowloris), a CONNECT
dripped one byte at a time, a subscriber that never reads while a publisher
floods it.  The broker closes the first two at connect_timeout, keeps its
memory bounded for the third, and keeps serving everyone else."""

import os
import socket
import threading
import time

import pytest

import mqttraw

pytestmark = pytest.mark.antenna_only

SANITIZED = bool(os.environ.get("ANTENNA_SANITIZED"))


def closed_within(sock, timeout):
    """Seconds until the peer closed `sock` (EOF or reset), or None."""
    t0 = time.monotonic()
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return time.monotonic() - t0
            assert not data.startswith(b"\x20"), "CONNACK for a partial CONNECT: %r" % data
    except (ConnectionResetError, BrokenPipeError):
        return time.monotonic() - t0
    except socket.timeout:
        return None


def sys_value(b, topic, timeout=5.0):
    """The next fresh (not retained) value of a $SYS topic."""
    c = b.raw_connected("")
    assert c.subscribe(1, [(topic, 0)]).codes == [0]
    p = c.recv_publish(timeout)
    while p.retain:
        p = c.recv_publish(timeout)
    c.close()
    return int(p.payload)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


@pytest.mark.deadline(40)
def test_slowloris_half_connect_closed_at_connect_timeout(broker):
    b = broker(mqtt={"connect_timeout": 1})
    pkt = mqttraw.connect("slowloris-client")
    socks = []
    for _ in range(20):
        s = socket.create_connection((b.host, b.port), timeout=5)
        s.sendall(pkt[:len(pkt) // 2])  # the fixed header and half the rest
        socks.append(s)
    b.assert_serving()  # the stalled ones take nothing from the others
    for s in socks:
        took = closed_within(s, 6)
        assert took is not None, "half CONNECT still open after connect_timeout + 5 s"
        s.close()
    b.wait_log(r"disconnected: no CONNECT within connect_timeout")
    b.assert_serving()


@pytest.mark.deadline(40)
def test_byte_by_byte_connect_closed_at_connect_timeout(broker):
    """Bytes arriving do not extend connect_timeout: a CONNECT dripped one
    byte per 0.3 s that would take ~12 s is closed after ~2 s."""
    b = broker(mqtt={"connect_timeout": 2})
    pkt = mqttraw.connect("drip-" + "x" * 20)
    assert len(pkt) * 0.3 > 8
    s = socket.create_connection((b.host, b.port), timeout=5)
    t0 = time.monotonic()
    sent = 0
    closed_at = None
    for byte in pkt:
        try:
            s.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            closed_at = time.monotonic() - t0
            break
        sent += 1
        # the broker's close shows as EOF (or a reset) within the next 0.3 s
        s.settimeout(0.3)
        try:
            data = s.recv(100)
            if not data:
                closed_at = time.monotonic() - t0
                break
            pytest.fail("unexpected bytes %r" % data)
        except socket.timeout:
            pass
        except ConnectionResetError:
            closed_at = time.monotonic() - t0
            break
    s.close()
    assert closed_at is not None, "the whole CONNECT was accepted byte by byte"
    assert sent < len(pkt)
    assert 1.5 <= closed_at <= 4.5, closed_at
    b.wait_log(r"disconnected: no CONNECT within connect_timeout")
    b.assert_serving()


@pytest.mark.deadline(110)
def test_non_reading_subscriber_memory_bounded(broker, monkeypatch):
    """100 MB of QoS 0 to a subscriber that never reads: what the broker
    holds for it stays near limits.max_output_buffer (RSS < 64 MB), the
    publisher is not stalled for good, and others are still served."""
    if SANITIZED:
        # freed memory would sit in ASan's quarantine (256 MB by default)
        monkeypatch.setenv("ASAN_OPTIONS", (os.environ.get("ASAN_OPTIONS", "") +
                                            ":quarantine_size_mb=8").lstrip(":"))
    b = broker(limits={"max_output_buffer": 262144, "slow_subscriber_timeout": 0},
               mqtt={"sys_interval": 1})
    pid = b.proc.pid

    sink = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sink.settimeout(5)
    sink.connect((b.host, b.port))
    sink.sendall(mqttraw.connect("sink") + mqttraw.subscribe(1, [("flood/#", 0)]))
    got = b""
    while len(got) < 4 + 5:  # CONNACK, SUBACK; then never read again
        chunk = sink.recv(9 - len(got))
        assert chunk
        got += chunk
    assert got[0] == 0x20 and got[3] == 0 and got[4] == 0x90, got

    # a healthy subscriber to another topic, served throughout
    other = b.raw_connected("other")
    assert other.subscribe(1, [("calm/t", 0)]).codes == [0]

    base = rss_kib(pid)
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], rss_kib(pid))
            except (OSError, AssertionError):
                return
            time.sleep(0.02)
    t = threading.Thread(target=sample, daemon=True)
    t.start()

    payload = b"f" * 65536
    batch = mqttraw.publish("flood/x", payload, qos=0) * 16  # 1 MiB per sendall
    total = 100 * 1024 * 1024
    pub = socket.create_connection((b.host, b.port), timeout=30)
    pub.sendall(mqttraw.connect("flooder"))
    assert pub.recv(4)[:1] == b"\x20"
    t0 = time.monotonic()
    sent = 0
    try:
        while sent < total:
            pub.sendall(batch)
            sent += len(batch)
        # the flooder is still being read: a PINGREQ gets its PINGRESP
        pub.sendall(mqttraw.pingreq())
        pub.settimeout(30)
        assert pub.recv(2) == b"\xd0\x00"
    finally:
        elapsed = time.monotonic() - t0
        stop.set()
        t.join(2)
    assert b.running()
    # every byte was read and parsed (then dropped for the sink)
    nmsgs = total // len(mqttraw.publish("flood/x", payload, qos=0))
    got_msgs = sys_value(b, "$SYS/broker/messages/received")
    assert got_msgs >= nmsgs, (got_msgs, nmsgs)
    print("RSS base %d KiB, peak %d KiB; %d MiB in %.2f s" % (base, peak[0], sent >> 20, elapsed))
    peak_mib = peak[0] / 1024.0
    grew_mib = (peak[0] - base) / 1024.0
    assert grew_mib < 48, "RSS grew by %.1f MiB (peak %.1f MiB) over %d MiB in %.1fs" % (
        grew_mib, peak_mib, sent >> 20, elapsed)
    if not SANITIZED:
        assert peak_mib < 64, "RSS peak %.1f MiB" % peak_mib

    # the broker keeps serving the others
    with b.raw() as p2:
        assert p2.connect("calm-pub").rc == 0
        p2.publish("calm/t", b"still served", qos=0)
        p2.disconnect()
    assert other.recv_publish(timeout=10).payload == b"still served"
    b.assert_serving()
    pub.close()
    sink.close()
    other.close()
