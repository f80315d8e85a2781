"""SUBSCRIBE / UNSUBSCRIBE: matching, SUBACK codes, overlapping filters."""

import time

import pytest

from mqttraw import SUBACK, UNSUBACK, puback, subscribe, unsubscribe
from helpers import drain, receive_publishes

TOPICS = ["a", "a/b", "a/b/c", "a/c", "a/b/c/d", "/a", "a/", "b/a", "A/b", "a//c", "/", "x/a/b"]

MATCHING = [
    ("a/b", ["a/b"]),
    ("a/+", ["a/b", "a/c", "a/"]),
    ("a/+/c", ["a/b/c", "a//c"]),
    ("a/#", ["a", "a/b", "a/b/c", "a/c", "a/b/c/d", "a/", "a//c"]),
    ("+/b", ["a/b", "A/b"]),
    ("+", ["a"]),
    ("/+", ["/a", "/"]),
    ("+/+", ["a/b", "a/c", "/a", "a/", "b/a", "A/b", "/"]),
    ("#", TOPICS),
    ("+/#", TOPICS),
    ("a/b/#", ["a/b", "a/b/c", "a/b/c/d"]),
    ("+/a/#", ["b/a", "x/a/b", "/a"]),
    ("A/b", ["A/b"]),
    ("a//c", ["a//c"]),
]


@pytest.mark.parametrize("flt,expected", MATCHING, ids=[f for f, _ in MATCHING])
def test_topic_filter_matching(broker, flt, expected):
    b = broker()
    sub = b.raw_connected("matcher")
    assert sub.subscribe(1, [(flt, 1), ("zz/sentinel", 1)]).codes == [1, 1]
    pub = b.raw_connected("publisher")
    for i, t in enumerate(TOPICS):
        pub.publish(t, t.encode(), qos=1, pid=i + 1)
    pub.publish("zz/sentinel", b"end", qos=1, pid=100)
    pubs = []
    while True:
        p = sub.recv_publish(5)
        sub.send(puback(p.pid))
        if p.topic == "zz/sentinel":
            break
        pubs.append(p)
    pubs += [p for p in receive_publishes(sub, 0, quiet=0.3) if p.topic != "zz/sentinel"]
    got = sorted(p.topic for p in pubs)
    assert got == sorted(expected), "filter %r" % flt
    assert all(p.payload == p.topic.encode() for p in pubs)


def test_suback_grants_requested_qos_in_order(broker):
    b = broker()
    with b.raw() as c:
        assert c.connect("suback").rc == 0
        c.send(subscribe(0x4242, [("s/0", 0), ("s/1", 1), ("s/2", 2), ("s/#", 1)]))
        ack = c.recv_type(SUBACK)
        assert ack.first == 0x90
        assert ack.pid == 0x4242
        assert ack.codes == [0, 1, 2, 1]


def test_subscribe_again_replaces_qos_without_duplicates(broker):
    b = broker()
    sub = b.raw_connected("resub")
    assert sub.subscribe(1, [("r/t", 0)]).codes == [0]
    assert sub.subscribe(2, [("r/t", 2)]).codes == [2]
    pub = b.raw_connected("pub")
    pub.publish("r/t", b"one", qos=2, pid=1)
    pubs = receive_publishes(sub, 1, quiet=0.5)
    assert [(p.payload, p.qos) for p in pubs] == [(b"one", 2)]


def test_hash_does_not_match_sys_topics(broker):
    b = broker(mqtt={"sys_interval": 1})
    sub = b.raw_connected("no-sys")
    assert sub.subscribe(1, [("#", 0), ("+/broker/#", 0), ("+/broker/version", 0)]).codes == [0, 0, 0]
    pub = b.raw_connected("pub")
    pub.publish("plain/topic", b"x")
    pubs = receive_publishes(sub, 1, quiet=2.5)   # > 2 sys intervals
    assert [p.topic for p in pubs] == ["plain/topic"], [p.topic for p in pubs]


def test_explicit_sys_subscription_receives_sys(broker):
    b = broker(mqtt={"sys_interval": 1})
    sub = b.raw_connected("sys")
    assert sub.subscribe(1, [("$SYS/#", 0)]).codes == [0]
    p = sub.recv_publish(3)
    assert p.topic.startswith("$SYS/")


def test_clients_cannot_publish_into_sys_matching_hash(broker):
    """A client publishing to a $-topic must not reach '#' subscribers."""
    b = broker()
    sub = b.raw_connected("hash")
    sub.subscribe(1, [("#", 0)])
    pub = b.raw_connected("pub")
    pub.publish("$private/x", b"hidden")
    pub.publish("public/x", b"shown")
    pubs = receive_publishes(sub, 1, quiet=0.5)
    assert [p.topic for p in pubs] == ["public/x"]


# Overlapping subscriptions of one client: the message is delivered once, at
# the highest QoS of the matching subscriptions.  mosquitto 2.0.11 also
# delivers once, but picks the QoS of one subscription rather than the
# maximum: the cases where it gets the QoS wrong are antenna_only.
OVERLAP = [
    pytest.param([("o/#", 1), ("o/b", 2)], 2, id="hash1-exact2"),
    pytest.param([("o/b", 2), ("o/#", 1)], 2, id="exact2-hash1"),
    pytest.param([("o/#", 1), ("o/+", 0), ("o/b", 2)], 2, id="three"),
    pytest.param([("o/b", 0), ("o/#", 2)], 2, id="exact0-hash2", marks=pytest.mark.antenna_only),
    pytest.param([("o/b", 0), ("o/+", 1)], 1, id="exact0-plus1", marks=pytest.mark.antenna_only),
]


@pytest.mark.parametrize("filters,qos", OVERLAP)
def test_overlapping_subscriptions_deliver_once_at_highest_qos(broker, filters, qos):
    b = broker()
    sub = b.raw_connected("overlap")
    assert sub.subscribe(1, filters).codes == [q for _, q in filters]
    pub = b.raw_connected("pub")
    pub.publish("o/b", b"once", qos=2, pid=3)
    pubs = receive_publishes(sub, 1, quiet=0.7)
    assert [(p.topic, p.payload, p.qos) for p in pubs] == [("o/b", b"once", qos)], pubs


def test_unsubscribe_stops_delivery(broker):
    b = broker()
    sub = b.raw_connected("unsub")
    assert sub.subscribe(1, [("u/a", 1), ("u/b", 1)]).codes == [1, 1]
    sub.send(unsubscribe(0x0F0E, ["u/a"]))
    ack = sub.recv_type(UNSUBACK)
    assert (ack.first, ack.pid) == (0xB0, 0x0F0E)
    pub = b.raw_connected("pub")
    pub.publish("u/a", b"gone", qos=1, pid=1)
    pub.publish("u/b", b"kept", qos=1, pid=2)
    pubs = receive_publishes(sub, 1, quiet=0.5)
    assert [(p.topic, p.payload) for p in pubs] == [("u/b", b"kept")]


def test_unsubscribe_unknown_filter_still_acked(broker):
    b = broker()
    with b.raw() as c:
        assert c.connect("unsub2").rc == 0
        c.send(unsubscribe(77, ["never/subscribed", "x/#"]))
        ack = c.recv_type(UNSUBACK)
        assert ack.pid == 77
        assert c.is_open()


def test_unsubscribe_wildcard_filter_is_exact_match_on_filter(broker):
    """UNSUBSCRIBE 'w/+' removes the 'w/+' subscription only, not 'w/a'."""
    b = broker()
    sub = b.raw_connected("unsub3")
    assert sub.subscribe(1, [("w/+", 0), ("w/a", 1)]).codes == [0, 1]
    sub.send(unsubscribe(2, ["w/+"]))
    assert sub.recv_type(UNSUBACK).pid == 2
    pub = b.raw_connected("pub")
    pub.publish("w/a", b"a", qos=1, pid=1)
    pub.publish("w/b", b"b", qos=1, pid=2)
    pubs = receive_publishes(sub, 1, quiet=0.5)
    assert [(p.topic, p.qos) for p in pubs] == [("w/a", 1)]


@pytest.mark.parametrize("flt", ["a/#/b", "a+", "a/b#", "+a/b", "a/#b", "#/", ""],
                         ids=["hash-middle", "plus-suffix", "hash-suffix", "plus-prefix",
                              "hash-in-level", "hash-slash", "empty"])
def test_invalid_filter_closes_connection(broker, flt):
    b = broker()
    with b.raw() as c:
        assert c.connect("badfilter").rc == 0
        c.send(subscribe(1, [(flt, 0)]))
        got = c.wait_closed(3)
        assert got == [], "no SUBACK for an invalid filter: %r" % got
    b.assert_serving()


def test_many_subscribers_each_get_one_copy(broker):
    b = broker()
    subs = []
    for i in range(20):
        s = b.raw_connected("fan-%d" % i)
        s.subscribe(1, [("fan/out", 1)])
        subs.append(s)
    pub = b.raw_connected("pub")
    pub.publish("fan/out", b"all", qos=1, pid=1)
    for s in subs:
        pubs = receive_publishes(s, 1)
        assert [p.payload for p in pubs] == [b"all"]
    time.sleep(0.3)
    for s in subs:
        s.expect_nothing(0.01)


def test_subscription_survives_other_clients_leaving(broker):
    b = broker()
    sub = b.raw_connected("stay")
    sub.subscribe(1, [("k/#", 0)])
    other = b.raw_connected("leave")
    other.subscribe(1, [("k/#", 0)])
    other.close()
    pub = b.raw_connected("pub")
    pub.publish("k/1", b"still")
    assert sub.recv_publish().payload == b"still"
    assert drain(sub, 0.3) == []
