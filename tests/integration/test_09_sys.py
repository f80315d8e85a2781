"""$SYS topics."""

import re
import time

import pytest

import mqttraw
from conftest import REPO

SYS_TOPICS = [
    "$SYS/broker/version",
    "$SYS/broker/uptime",
    "$SYS/broker/clients/connected",
    "$SYS/broker/messages/received",
    "$SYS/broker/messages/sent",
]


def number(payload):
    m = re.match(rb"\s*(\d+)", payload)
    assert m, "not a number: %r" % payload
    return int(m.group(1))


def sys_watcher(b, topics, client="sys-watcher"):
    c = b.raw_connected(client)
    assert c.subscribe(1, [(t, 0) for t in topics]).codes == [0] * len(topics)
    return c


def wait_value(c, topic, pred, timeout):
    """Read $SYS publishes until one on `topic` satisfies pred(payload)."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no %s value satisfying the condition within %.1fs; saw %r"
                                 % (topic, timeout, seen))
        try:
            p = c.recv(left)
        except mqttraw.Timeout:
            continue
        assert p.type == mqttraw.PUBLISH, p
        if p.topic == topic:
            seen.append(p.payload)
            if pred(p.payload):
                return p


def collect_sys(c, deadline_s):
    got = {}
    deadline = time.monotonic() + deadline_s
    while len(got) < len(SYS_TOPICS) and time.monotonic() < deadline:
        try:
            p = c.recv(max(0.01, deadline - time.monotonic()))
        except mqttraw.Timeout:
            break
        got[p.topic] = p
    return got


def test_sys_topics_published_at_start_and_retained(broker):
    b = broker()   # sys_interval 10: the start-up publish comes long before the next
    # the first watcher may subscribe before or after the start-up publish
    # (a busy machine): live or retained, every topic arrives
    got = collect_sys(sys_watcher(b, SYS_TOPICS), 30)
    assert sorted(got) == sorted(SYS_TOPICS)
    # once published, they are retained: a later subscriber gets them all so
    got = collect_sys(sys_watcher(b, SYS_TOPICS, client="sys-watcher-2"), 30)
    assert sorted(got) == sorted(SYS_TOPICS)
    assert all(p.retain == 1 for p in got.values()), {t: p.retain for t, p in got.items()}
    assert got["$SYS/broker/version"].payload.strip()
    for t in SYS_TOPICS[1:]:
        number(got[t].payload)


def test_sys_version_has_a_value(broker):
    b = broker(mqtt={"sys_interval": 1})
    c = sys_watcher(b, ["$SYS/broker/version"])
    p = c.recv_publish(3)
    assert p.topic == "$SYS/broker/version"
    assert len(p.payload.strip()) > 0


@pytest.mark.antenna_only
def test_sys_version_names_antenna(broker):
    b = broker(mqtt={"sys_interval": 1})
    c = sys_watcher(b, ["$SYS/broker/version"])
    p = c.recv_publish(3)
    version = re.search(r"project\(antenna\s+VERSION\s+([0-9.]+)", (REPO / "CMakeLists.txt").read_text()).group(1)
    assert b"antenna" in p.payload and version.encode() in p.payload, p.payload


def test_sys_clients_connected_follows_clients(broker):
    b = broker(mqtt={"sys_interval": 1})
    topic = "$SYS/broker/clients/connected"
    c = sys_watcher(b, [topic])
    wait_value(c, topic, lambda v: number(v) == 1, 4)
    others = [b.raw_connected("extra-%d" % i) for i in range(3)]
    wait_value(c, topic, lambda v: number(v) == 4, 4)
    for o in others[:2]:
        o.disconnect()
    wait_value(c, topic, lambda v: number(v) == 2, 4)


def test_sys_uptime_increases(broker):
    b = broker(mqtt={"sys_interval": 1})
    topic = "$SYS/broker/uptime"
    c = sys_watcher(b, [topic])
    first = number(c.recv_publish(3).payload)
    later = wait_value(c, topic, lambda v: number(v) > first, 4)
    assert number(later.payload) <= first + 5


@pytest.mark.parametrize("topic", ["$SYS/broker/messages/received", "$SYS/broker/messages/sent"])
def test_sys_message_counters_increase_with_traffic(broker, topic):
    b = broker(mqtt={"sys_interval": 1})
    c = sys_watcher(b, [topic])
    before = number(c.recv_publish(3).payload)
    with b.raw() as p:
        assert p.connect("traffic").rc == 0
        p.subscribe(1, [("traffic/t", 1)])
        for i in range(20):
            p.publish("traffic/t", b"x", qos=1, pid=i + 1)
        # 20 received from us and 20 sent back to us (plus acks)
        wait_value(c, topic, lambda v: number(v) >= before + 20, 4)


def test_sys_is_read_only_for_clients(broker):
    """A client publishing into $SYS must not overwrite the broker's values."""
    b = broker(mqtt={"sys_interval": 1})
    with b.raw() as p:
        assert p.connect("vandal").rc == 0
        p.send(mqttraw.publish("$SYS/broker/version", b"fake", retain=True))
        time.sleep(0.2)
    time.sleep(1.2)   # the broker's next $SYS update
    c = sys_watcher(b, ["$SYS/broker/version"])
    p = c.recv_publish(3)
    assert p.payload != b"fake"
