"""Fewer bytes per subscribed device, same behaviour (issue 20; sess.h,
trie.c, conn.h; docs/benchmarks.md "Bytes per subscribed device").

An exact filter (no wildcard, not shared) is kept once, by the topic trie:
each subscription points at the trie node's copy, which lives as long as
the filter has a subscriber.  So one client leaving a filter (unsubscribe,
a clean session ending, a takeover) must not disturb the others on it, and
the filter comes back whole when a new client subscribes to it again.  A
session's array of subscriptions grows and shrinks through the slab sizes
and its filter index must keep finding the rest while some leave.  The
incoming QoS 2 ids live in the session's on-demand extension: a resent
PUBLISH before PUBREL is still delivered once.
"""

import pytest

import mqttraw
from conftest import IS_MOSQUITTO

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only")


def recv_topics(c, n, timeout=10):
    got = []
    for _ in range(n):
        p = c.recv_publish(timeout)
        if p.qos == 1:
            c.send(mqttraw.puback(p.pid))
        got.append((p.topic, p.payload))
    return got


def test_exact_filter_outlives_each_of_its_subscribers(broker):
    b = broker(workers=2)
    a = b.raw_connected("fa")
    bb = b.raw_connected("fb")
    c = b.raw_connected("fc")
    w = b.raw_connected("fw")
    for k, cl in enumerate((a, bb, c)):
        assert cl.subscribe(k + 1, [("dev/x/in", 1)]).codes == [1]
    assert w.subscribe(9, [("dev/+/in", 1)]).codes == [1]
    pub = b.raw_connected("fpub")

    # one unsubscribes, one goes away (clean session: its subscriptions end)
    a.send(mqttraw.unsubscribe(2, ["dev/x/in"]))
    a.recv_type(mqttraw.UNSUBACK)
    bb.close()
    pub.publish("dev/x/in", b"one", qos=1, pid=1)
    assert recv_topics(c, 1) == [("dev/x/in", b"one")]
    assert recv_topics(w, 1) == [("dev/x/in", b"one")]
    a.expect_nothing(0.3)

    # the last exact subscriber leaves: the node goes; a new one brings it back
    c.send(mqttraw.unsubscribe(3, ["dev/x/in"]))
    c.recv_type(mqttraw.UNSUBACK)
    pub.publish("dev/x/in", b"two", qos=1, pid=2)
    assert recv_topics(w, 1) == [("dev/x/in", b"two")]
    c.expect_nothing(0.3)
    d = b.raw_connected("fd")
    assert d.subscribe(4, [("dev/x/in", 1)]).codes == [1]
    pub.publish("dev/x/in", b"three", qos=1, pid=3)
    assert recv_topics(d, 1) == [("dev/x/in", b"three")]
    assert recv_topics(w, 1) == [("dev/x/in", b"three")]

    # a takeover: the new connection keeps the persistent session's filter
    p1 = b.raw_connected("fp", clean=False)
    assert p1.subscribe(5, [("dev/p/in", 1)]).codes == [1]
    p2 = b.raw_connected("fp", clean=False)
    pub.publish("dev/p/in", b"four", qos=1, pid=4)
    assert recv_topics(p2, 1) == [("dev/p/in", b"four")]
    for cl in (a, c, d, w, pub, p1, p2):
        cl.close()


def test_many_exact_subscriptions_leave_in_any_order(broker):
    b = broker(workers=1)
    s = b.raw_connected("many")
    n = 40
    filters = ["m/%d/in" % i for i in range(n)]
    # in several SUBSCRIBEs: the array grows through the slab sizes, the
    # session's filter index starts past 8
    for k in range(0, n, 10):
        ack = s.subscribe(k + 1, [(f, 1) for f in filters[k:k + 10]])
        assert ack.codes == [1] * 10
    assert s.subscribe(100, [("m/+/x", 0), ("$share/g/m/0/in", 1)]).codes == [0, 1]
    # odd ones leave, last first, then every fourth even one
    gone = set(range(n - 1, 0, -2)) | set(range(0, n, 4))
    for k, i in enumerate(sorted(gone, reverse=True)):
        s.send(mqttraw.unsubscribe(200 + k, [filters[i]]))
        s.recv_type(mqttraw.UNSUBACK)
    pub = b.raw_connected("many-pub")
    for i, f in enumerate(filters):
        pub.publish(f, b"%d" % i, qos=1, pid=i + 1)
    want = [(filters[i], b"%d" % i) for i in range(n) if i not in gone]
    # m/0/in left as an exact subscription, still there through the group
    want_shared = [(filters[0], b"0")]
    got = recv_topics(s, len(want) + len(want_shared))
    assert sorted(got) == sorted(want + want_shared)
    s.expect_nothing(0.3)
    # the ones left can still be unsubscribed, each exactly once
    for k, (f, _) in enumerate(want):
        s.send(mqttraw.unsubscribe(300 + k, [f]))
        s.recv_type(mqttraw.UNSUBACK)
    for i, f in enumerate(filters[1:], 1):
        pub.publish(f, b"late", qos=0)
    pub.publish("m/0/in", b"shared", qos=1, pid=99)
    assert recv_topics(s, 1) == [("m/0/in", b"shared")]
    s.expect_nothing(0.3)
    s.close()
    pub.close()


def test_qos2_resend_before_pubrel_delivered_once(broker):
    b = broker(workers=1)
    sub = b.raw_connected("q2-sub")
    assert sub.subscribe(1, [("q2/t", 2)]).codes == [2]
    pub = b.raw_connected("q2-pub")
    pids = list(range(1, 9))
    for pid in pids:
        pub.send(mqttraw.publish("q2/t", b"m%d" % pid, qos=2, pid=pid))
    recs = [pub.recv_type(mqttraw.PUBREC).pid for _ in pids]
    assert sorted(recs) == pids
    # the same ids again (a resend with dup): remembered, not delivered again
    for pid in pids[:4]:
        pub.send(mqttraw.publish("q2/t", b"m%d" % pid, qos=2, dup=True, pid=pid))
    assert sorted(pub.recv_type(mqttraw.PUBREC).pid for _ in pids[:4]) == pids[:4]
    for pid in pids:
        pub.send(mqttraw.pubrel(pid))
    assert sorted(pub.recv_type(mqttraw.PUBCOMP).pid for _ in pids) == pids
    got = []
    for _ in pids:
        p = sub.recv_publish(10)
        sub.ack(p)
        got.append(p.payload)
    assert sorted(got) == sorted(b"m%d" % pid for pid in pids)
    sub.expect_nothing(0.5)
    # after the releases the ids are free again: a new message with id 1
    pub.send(mqttraw.publish("q2/t", b"again", qos=2, pid=1))
    assert pub.recv_type(mqttraw.PUBREC).pid == 1
    pub.send(mqttraw.pubrel(1))
    assert pub.recv_type(mqttraw.PUBCOMP).pid == 1
    p = sub.recv_publish(10)
    assert p.payload == b"again"
    sub.ack(p)
    sub.close()
    pub.close()
