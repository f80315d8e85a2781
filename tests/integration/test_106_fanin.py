"""Fan-in across two workers with wake-up coalescing (issue 15, item 2).

Publishers spread over both workers send to one subscriber, so half of what
it gets crosses from one worker to the other through the inbox, whose
doorbell is skipped for a running worker, deferred for one that has just
woken, and whose owner may hold back its next poll for workers_coalesce_us
(docs/architecture.md, Wake-ups).  A lost wake-up stalls a delivery until
something else wakes the worker: in a trickle (a message at a time, the
workers idle in between) nothing else would, so every message of the
trickle must arrive well within its deadline.  A burst must arrive whole,
in each publisher's order.  Run at the default (the window off), at 100 us and at
its maximum."""

import re
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt
import pytest

pytestmark = pytest.mark.antenna_only  # about antenna's workers

NPUB = 16
TRICKLE = 3  # messages per publisher, one at a time
BURST = 150  # messages per publisher, all at once


class Sink:
    """The subscriber: what arrived, per publisher, with arrival times."""

    def __init__(self):
        self.lock = threading.Lock()
        self.got = {}  # publisher -> [seq, ...]
        self.at = {}  # (publisher, seq) -> monotonic arrival

    def on_message(self, _c, _u, msg):
        pub, seq = msg.payload.decode().split(":")
        with self.lock:
            self.got.setdefault(pub, []).append(int(seq))
            self.at[(pub, int(seq))] = time.monotonic()

    def arrived(self, pub, seq):
        with self.lock:
            return self.at.get((pub, seq))

    def count(self):
        with self.lock:
            return sum(len(v) for v in self.got.values())


def client(b, cid, on_message=None):
    c = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv311)
    connected = threading.Event()
    c.on_connect = lambda *_a: connected.set()
    if on_message:
        c.on_message = on_message
    c.connect(b.host, b.port, keepalive=60)
    c.loop_start()
    assert connected.wait(10), cid
    return c


def start_with_window(broker, coalesce_us):
    """A 2-worker broker with workers_coalesce_us set (None: the default)."""
    # the burst (NPUB * BURST to one subscriber at once) fits its queue: over
    # max_queued a broker may drop QoS 1 messages, which is not what this tests
    b = broker(workers=2, persistence={"enabled": False}, api={"open_metrics": True},
               mqtt={"max_queued": 100000})
    if coalesce_us is None:
        return b
    b.stop()
    write = b.write_config

    def write_with_window():
        path = write()
        path.write_text(path.read_text() + "workers_coalesce_us: %d\n" % coalesce_us)
        return path

    b.write_config = write_with_window
    b.start()
    assert "workers_coalesce_us: %d" % coalesce_us in b.config_path.read_text()
    return b


def metric(b, name):
    raw = urllib.request.urlopen(b.api_url + "/metrics", timeout=10).read().decode()
    m = re.search(r"^%s (\d+)$" % name, raw, re.M)
    assert m, name
    return int(m.group(1))


@pytest.mark.parametrize("coalesce_us", [None, 100, 10000], ids=["default", "100us", "max"])
def test_fanin_across_workers_trickle_and_burst(broker, coalesce_us):
    b = start_with_window(broker, coalesce_us)
    sink = Sink()
    sub = client(b, "fanin-sub", sink.on_message)
    done = threading.Event()
    sub.on_subscribe = lambda *_a: done.set()
    sub.subscribe("fi/#", qos=1)
    assert done.wait(10)
    pubs = [client(b, "fanin-pub-%d" % i) for i in range(NPUB)]

    # the trickle: one message at a time, each awaited before the next (the
    # workers fall idle in between); a stall shows as a missed deadline
    worst = 0.0
    for r in range(TRICKLE):
        for i, p in enumerate(pubs):
            sent = time.monotonic()
            p.publish("fi/%d" % i, ("p%d:%d" % (i, r)).encode(), qos=0)
            deadline = sent + 5.0
            while sink.arrived("p%d" % i, r) is None and time.monotonic() < deadline:
                time.sleep(0.002)
            got = sink.arrived("p%d" % i, r)
            assert got is not None, "message %d of publisher %d never arrived" % (r, i)
            worst = max(worst, got - sent)
    # a lost wake-up waits for the next timer (seconds); a deferred doorbell
    # waits at most the window
    assert worst < 2.0, worst

    # the burst: every publisher at once, QoS 1, all of it in order
    base = sink.count()
    for i, p in enumerate(pubs):
        for s in range(TRICKLE, TRICKLE + BURST):
            p.publish("fi/%d" % i, ("p%d:%d" % (i, s)).encode(), qos=1)
    deadline = time.monotonic() + 30
    while sink.count() < base + NPUB * BURST and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sink.count() == base + NPUB * BURST
    with sink.lock:
        for i in range(NPUB):
            assert sink.got["p%d" % i] == list(range(TRICKLE + BURST)), i

    # the counters are there; a worker that was running needed no doorbell
    assert metric(b, "antenna_worker_inbox_doorbells_total") > 0
    assert metric(b, "antenna_worker_inbox_doorbells_saved_total") >= 0
    for c in pubs + [sub]:
        c.disconnect()
        c.loop_stop()
