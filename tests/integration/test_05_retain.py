"""Retained messages."""

import pytest

from helpers import receive_publishes


def retain(b, topic, payload, qos=1, pid=1, client="retainer"):
    """Publish a retained message and return once the broker holds it: a
    QoS 0 one has no acknowledgement, so a ping answered after it on the
    same connection says it was handled (else a subscriber coming next may
    get it live, without the retain flag)."""
    with b.raw() as c:
        assert c.connect(client).rc == 0
        c.publish(topic, payload, qos=qos, retain=True, pid=pid)
        assert c.is_open(timeout=10), "no PINGRESP after the retained publish"
        c.disconnect()


def subscribe_and_collect(b, filters, n, client="late", quiet=0.5):
    c = b.raw_connected(client)
    ack = c.subscribe(1, filters)
    assert ack.codes == [q for _, q in filters]
    return c, receive_publishes(c, n, quiet=quiet)


def test_retained_delivered_on_subscribe_with_retain_flag(broker):
    b = broker()
    retain(b, "r/t", b"v1")
    c, pubs = subscribe_and_collect(b, [("r/t", 1)], 1)
    assert [(p.topic, p.payload, p.retain, p.qos, p.dup) for p in pubs] == [("r/t", b"v1", 1, 1, 0)]
    assert pubs[0].first & 0x01


def test_retained_replaced_by_newer(broker):
    b = broker()
    retain(b, "r/t", b"v1")
    retain(b, "r/t", b"v2", pid=2)
    c, pubs = subscribe_and_collect(b, [("r/t", 0)], 1)
    assert [(p.payload, p.retain) for p in pubs] == [(b"v2", 1)]


def test_empty_payload_deletes_retained(broker):
    b = broker()
    retain(b, "r/t", b"v1")
    live = b.raw_connected("live")
    live.subscribe(1, [("r/t", 1)])
    first = receive_publishes(live, 1)   # the retained v1
    assert (first[0].payload, first[0].retain) == (b"v1", 1)
    retain(b, "r/t", b"", pid=3)
    # the delete itself is delivered to existing subscribers as a normal
    # (non-retained) empty message
    pubs = receive_publishes(live, 1, quiet=0.3)
    assert [(p.payload, p.retain) for p in pubs] == [(b"", 0)]
    c, pubs = subscribe_and_collect(b, [("r/t", 1)], 0)
    assert pubs == []


def test_live_delivery_has_retain_flag_0(broker):
    b = broker()
    live = b.raw_connected("live")
    live.subscribe(1, [("r/live", 1)])
    retain(b, "r/live", b"now")
    pubs = receive_publishes(live, 1, quiet=0.3)
    assert [(p.payload, p.retain) for p in pubs] == [(b"now", 0)]
    assert not pubs[0].first & 0x01


def test_retained_with_wildcard_subscriptions(broker):
    b = broker()
    for i, t in enumerate(["w/a", "w/b", "w/c/d", "x/a"]):
        retain(b, t, t.encode(), pid=i + 1)
    c, pubs = subscribe_and_collect(b, [("w/+", 1)], 2, client="plus")
    assert sorted((p.topic, p.payload, p.retain) for p in pubs) == [
        ("w/a", b"w/a", 1), ("w/b", b"w/b", 1)]
    c, pubs = subscribe_and_collect(b, [("w/#", 1)], 3, client="hash")
    assert sorted(p.topic for p in pubs) == ["w/a", "w/b", "w/c/d"]
    assert all(p.retain == 1 for p in pubs)
    c, pubs = subscribe_and_collect(b, [("+/a", 1)], 2, client="plus-a")
    assert sorted(p.topic for p in pubs) == ["w/a", "x/a"]


@pytest.mark.parametrize("pub_qos,sub_qos", [(0, 1), (1, 1), (2, 2), (2, 0), (1, 2)])
def test_retained_qos_is_min_of_stored_and_subscription(broker, pub_qos, sub_qos):
    b = broker()
    retain(b, "r/q", b"q", qos=pub_qos, pid=5)
    c, pubs = subscribe_and_collect(b, [("r/q", sub_qos)], 1)
    assert [(p.payload, p.retain, p.qos) for p in pubs] == [(b"q", 1, min(pub_qos, sub_qos))]


def test_retained_resent_on_resubscribe(broker):
    b = broker()
    retain(b, "r/again", b"sticky")
    c, pubs = subscribe_and_collect(b, [("r/again", 1)], 1)
    assert [p.payload for p in pubs] == [b"sticky"]
    assert c.subscribe(2, [("r/again", 1)]).codes == [1]
    pubs = receive_publishes(c, 1, quiet=0.3)
    assert [(p.payload, p.retain) for p in pubs] == [(b"sticky", 1)]


def test_retained_not_sent_for_non_matching_filter(broker):
    b = broker()
    retain(b, "r/one", b"1")
    c, pubs = subscribe_and_collect(b, [("r/two", 1), ("r/one/+", 1)], 0)
    assert pubs == []


def test_retained_large_payload(broker):
    b = broker()
    payload = bytes(i % 251 for i in range(200000))
    retain(b, "r/big", payload)
    c, pubs = subscribe_and_collect(b, [("r/big", 1)], 1)
    assert pubs[0].payload == payload and pubs[0].retain == 1


def test_many_retained_topics(broker):
    b = broker()
    with b.raw() as c:
        assert c.connect("bulk").rc == 0
        for i in range(200):
            c.publish("bulk/%03d" % i, b"%d" % i, qos=1, retain=True, pid=i + 1)
    c, pubs = subscribe_and_collect(b, [("bulk/#", 1)], 200)
    assert sorted(p.topic for p in pubs) == ["bulk/%03d" % i for i in range(200)]
    assert all(p.payload == b"%d" % int(p.topic[5:]) and p.retain for p in pubs)
