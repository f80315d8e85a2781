"""A small load test: many clients at once, every message accounted for."""

import collections
import time

import pytest

from helpers import Background, Paho, publish_pipelined, receive_publishes

N_PUBLISHERS = 50
N_MESSAGES = 200
BOUND = 60.0


@pytest.mark.deadline(110)
def test_50_publishers_200_qos1_each_to_one_subscriber(broker):
    b = broker(mqtt={"max_queued": 20000})
    sub = Paho(b, "load-sub").connect()
    assert sub.subscribe("t/#", 1) == [1]
    pubs = []
    try:
        for i in range(N_PUBLISHERS):
            pubs.append(Paho(b, "load-pub-%02d" % i).connect())
        t0 = time.monotonic()
        infos = []
        for j in range(N_MESSAGES):
            for i, p in enumerate(pubs):
                infos.append(p.publish("t/%02d" % i, b"%02d:%03d" % (i, j), qos=1, wait=False))
        total = N_PUBLISHERS * N_MESSAGES
        msgs = sub.get_n(total, timeout=BOUND)
        elapsed = time.monotonic() - t0
        # every publish was acknowledged to its publisher
        deadline = time.monotonic() + 10
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            assert info.is_published()
        sub.expect_nothing(0.5)
    finally:
        for p in pubs:
            p.close()
        sub.close()

    payloads = [m.payload for m in msgs]
    assert len(set(payloads)) == total, "duplicates: %d of %d unique" % (len(set(payloads)), total)
    per_topic = collections.defaultdict(list)
    for m in msgs:
        assert m.qos == 1
        i, j = m.payload.split(b":")
        assert m.topic == "t/%s" % i.decode()
        per_topic[m.topic].append(int(j))
    assert len(per_topic) == N_PUBLISHERS
    for topic, seq in per_topic.items():
        assert seq == list(range(N_MESSAGES)), "%s out of order" % topic
    assert elapsed < BOUND


@pytest.mark.deadline(90)
def test_fan_out_to_20_raw_subscribers(broker):
    b = broker(mqtt={"max_queued": 5000})
    n = 250
    subs = []
    for i in range(20):
        s = b.raw_connected("fan-%02d" % i)
        assert s.subscribe(1, [("fan/#", 1)]).codes == [1]
        subs.append(s)
    readers = [Background(receive_publishes, s, n, timeout=45, quiet=0.3) for s in subs]
    pub = b.raw_connected("fan-pub")
    payloads = [b"%04d" % k for k in range(n)]
    acks = publish_pipelined(pub, "fan/x", payloads, 1, timeout=30)
    assert len(acks) == n
    for r in readers:
        got = r.result(50)
        assert [p.payload for p in got] == payloads


@pytest.mark.deadline(60)
def test_connection_churn(broker):
    """300 short connections (connect, publish, vanish) while a subscriber
    counts: the broker keeps up and loses no QoS 1 message."""
    b = broker()
    sub = b.raw_connected("churn-sub")
    assert sub.subscribe(1, [("churn/#", 1)]).codes == [1]
    reader = Background(receive_publishes, sub, 300, timeout=40, quiet=0.5)
    for i in range(300):
        with b.raw() as c:
            assert c.connect("churn-%d" % (i % 7)).rc == 0   # reuses ids: takeovers too
            c.publish("churn/%d" % i, b"%d" % i, qos=1, pid=1)
            if i % 2:
                c.disconnect()
    got = reader.result(45)
    assert sorted(int(p.payload) for p in got) == list(range(300))
    b.assert_serving()
