"""Output through the worker's turn arena, and memory after a burst (issue
20: broker bytes per subscribed device; src/core/oarena.c, worker.c
worker_buf_*, conn.c conn_flush; docs/benchmarks.md "Bytes per subscribed
device").

A connection's output is a chunk of its worker's turn arena, written at
the end of the turn; what the socket does not take is copied to a buffer of
the connection's own.  What a client sees must not change:

- a QoS 1 broadcast reaches every one of many subscribers (each also
  subscribed to its own device topic), and a second one after it;
- several messages pipelined in one read reach two subscribers of the same
  topic whole and in order (their chunks grow in place, or move when the
  other subscriber's chunk came after);
- a large retained burst to a subscriber that does not read for a while
  (small receive buffer) arrives whole once it reads: partial writes resume
  from the connection's own buffer turn after turn;
- a slow reader of a stream published over many turns gets every message
  in order.

And memory comes back: after a broadcast of 8 kB to every subscriber the
broker's RSS returns to near what it was before (the arena's pages above
256 kB given back, the freed inflight rings and the router's scratch too),
with a deadline.  Before, the output buffers stayed as free memory inside
malloc among the sessions' live allocations."""

import os
import socket
import time

import pytest

import mqttraw
from conftest import IS_MOSQUITTO, wait_for
from helpers import publish_pipelined, receive_publishes

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only")
SANITIZED = os.environ.get("ANTENNA_SANITIZED") == "1"


def rss(b):
    with open("/proc/%d/status" % b.proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def devices(b, n, prefix):
    """n raw clients, each subscribed to dev/<id>/in and bcast at QoS 1."""
    cs = []
    for i in range(n):
        c = mqttraw.RawClient(b.host, b.port, timeout=30)
        cid = "%s%d" % (prefix, i)
        assert c.connect(cid, keepalive=0).rc == 0
        sa = c.subscribe(1, [("dev/%s/in" % cid, 1), ("bcast", 1)])
        assert sa.codes == [1, 1]
        cs.append(c)
    return cs


def close_all(cs):
    for c in cs:
        c.close()


def receive_all(cs, payload, timeout=30):
    for c in cs:
        p = c.recv_publish(timeout)
        assert p.topic == "bcast" and p.payload == payload, p
        c.send(mqttraw.puback(p.pid))


def test_broadcast_reaches_every_device(broker):
    b = broker(workers=1)
    n = 100 if SANITIZED else 300
    cs = devices(b, n, "d")
    pub = b.raw_connected("pub")
    for k, payload in enumerate((b"first", os.urandom(3000))):
        pub.publish("bcast", payload, qos=1, pid=k + 1)
        receive_all(cs, payload)
    # and each device's own topic
    for i in (0, n // 2, n - 1):
        pub.publish("dev/d%d/in" % i, b"own", qos=1, pid=10 + i)
        p = cs[i].recv_publish(10)
        assert p.topic == "dev/d%d/in" % i and p.payload == b"own"
        cs[i].send(mqttraw.puback(p.pid))
    for c in cs[:5]:
        c.expect_nothing(0.2)
    pub.close()
    close_all(cs)


def test_pipelined_messages_to_two_subscribers(broker):
    b = broker(workers=1)
    subs = [b.raw_connected("s%d" % i) for i in range(2)]
    for s in subs:
        s.subscribe(1, [("pipe/t", 1)])
    pub = b.raw_connected("pub")
    # sizes that make each subscriber's chunk grow past the other's: in
    # place for the newest, moved to a doubled chunk for the other
    payloads = [(b"%04d" % i) * (1 + (i * 37) % 700) for i in range(120)]
    acks = publish_pipelined(pub, "pipe/t", payloads, 1)
    assert len(acks) == len(payloads)
    for s in subs:
        got = receive_publishes(s, len(payloads), timeout=30)
        assert [p.payload for p in got] == payloads
    pub.close()
    close_all(subs)


def test_retained_burst_to_a_subscriber_that_reads_late(broker):
    b = broker(workers=1, mqtt={"max_inflight": 65535, "max_queued": 100000})
    pub = b.raw_connected("pub")
    n = 120 if SANITIZED else 300
    payloads = [bytes([i % 251]) * 10000 for i in range(n)]
    for i, pl in enumerate(payloads):
        pub.send(mqttraw.publish("ret/%04d" % i, pl, 0, retain=True))
    pub.publish("ret/zzzz", b"sync", qos=1, retain=True, pid=1)  # all stored before it
    # a subscriber with a small receive buffer that does not read at first
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((b.host, b.port))
    s = mqttraw.RawClient.__new__(mqttraw.RawClient)
    s.sock, s.buf, s.closed, s.backlog = sock, bytearray(), False, []
    s.send(mqttraw.connect("late", keepalive=0))
    s.recv_type(mqttraw.CONNACK, 10)
    s.send(mqttraw.subscribe(1, [("ret/#", 0)]))
    time.sleep(0.5)  # the broker fills the socket and keeps the rest
    got = {}
    deadline = time.monotonic() + 60
    while len(got) < n + 1:
        assert time.monotonic() < deadline, "%d of %d retained messages" % (len(got), n + 1)
        p = s.recv(max(0.1, deadline - time.monotonic()))
        if p.type == mqttraw.PUBLISH:
            assert p.retain
            assert p.topic not in got, "twice: %s" % p.topic
            got[p.topic] = p.payload
    for i, pl in enumerate(payloads):
        assert got["ret/%04d" % i] == pl, i
    s.expect_nothing(0.3)
    s.close()
    pub.close()


def test_slow_reader_gets_a_stream_in_order(broker):
    b = broker(workers=1, mqtt={"max_inflight": 65535, "max_queued": 100000})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((b.host, b.port))
    s = mqttraw.RawClient.__new__(mqttraw.RawClient)
    s.sock, s.buf, s.closed, s.backlog = sock, bytearray(), False, []
    s.send(mqttraw.connect("slow", keepalive=0))
    s.recv_type(mqttraw.CONNACK, 10)
    s.subscribe(1, [("stream/t", 1)])
    pub = b.raw_connected("pub")
    n = 400 if SANITIZED else 1500
    for k in range(0, n, 50):  # many turns: 50 messages a write, QoS 1
        publish_pipelined(pub, "stream/t", [b"%06d" % i + b"." * 2000
                                            for i in range(k, min(n, k + 50))], 1,
                          first_pid=k + 1, timeout=30)
    got = []
    deadline = time.monotonic() + 60
    while len(got) < n:
        assert time.monotonic() < deadline, "%d of %d" % (len(got), n)
        p = s.recv(max(0.1, deadline - time.monotonic()))
        assert p.type == mqttraw.PUBLISH, p
        s.send(mqttraw.puback(p.pid))
        got.append(int(p.payload[:6]))
    assert got == list(range(n))
    s.close()
    pub.close()


@pytest.mark.skipif(SANITIZED, reason="RSS under AddressSanitizer holds its quarantine")
def test_memory_comes_back_after_a_broadcast(broker):
    b = broker(workers=1)
    n = 400
    cs = devices(b, n, "m")
    pub = b.raw_connected("pub")
    time.sleep(0.5)
    before = rss(b)
    payload = os.urandom(8000)  # 400 x 8 kB of output in one turn: 3.2 MB
    pub.publish("bcast", payload, qos=1, pid=2)
    receive_all(cs, payload)
    # within a few seconds the burst's memory is back: at most 1 MB more
    # than before (main's broker kept ~5 MB of it)
    wait_for(lambda: rss(b) <= before + 1024 * 1024, 20,
             what="RSS back near %d B (now %d B)" % (before, rss(b)))
    # and it still delivers
    pub.publish("bcast", b"after", qos=1, pid=3)
    receive_all(cs, b"after")
    pub.close()
    close_all(cs)
