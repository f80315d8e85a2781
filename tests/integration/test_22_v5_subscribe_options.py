"""MQTT 5.0 subscription options (No Local, Retain As Published, Retain
Handling, Maximum QoS) and Subscription Identifiers."""

import pytest

from mqttraw import (
    SUBSCRIPTION_ID, SUBSCRIPTION_ID_AVAILABLE, connect_v5, expect_close5, subscribe5,
    sub_opts)
from helpers import receive_publishes


def v5(b, cid="", **kw):
    return connect_v5(b.host, b.port, cid, **kw)


# ------------------------------------------------------------ No Local

def test_no_local_suppresses_own_messages(broker):
    b = broker()
    me = v5(b, "nl-me")
    assert me.subscribe(1, [("nl/#", sub_opts(1, no_local=True))]).codes == [1]
    other = v5(b, "nl-other")
    me.publish("nl/a", b"own", qos=1, pid=10)
    other.publish("nl/a", b"foreign", qos=1, pid=11)
    pubs = receive_publishes(me, 1, quiet=0.5)
    assert [p.payload for p in pubs] == [b"foreign"]


def test_without_no_local_own_messages_are_received(broker):
    b = broker()
    me = v5(b, "nl0-me")
    assert me.subscribe(1, [("nl0/#", sub_opts(1))]).codes == [1]
    me.publish("nl0/a", b"own", qos=1, pid=10)
    assert [p.payload for p in receive_publishes(me, 1, quiet=0.5)] == [b"own"]


def test_no_local_is_per_subscription(broker):
    # one client, two overlapping subscriptions: the one without No Local
    # still delivers the client's own message
    b = broker()
    me = v5(b, "nl2-me")
    assert me.subscribe(1, [("nl2/#", sub_opts(1, no_local=True)),
                            ("nl2/x", sub_opts(1))]).codes == [1, 1]
    me.publish("nl2/x", b"own-x", qos=1, pid=10)
    me.publish("nl2/y", b"own-y", qos=1, pid=11)
    pubs = receive_publishes(me, 1, quiet=0.5)
    assert [(p.topic, p.payload) for p in pubs] == [("nl2/x", b"own-x")]


# ------------------------------------------------------------ Retain As Published

def test_retain_as_published_on_live_delivery(broker):
    b = broker()
    sub = v5(b, "rap-sub")
    assert sub.subscribe(1, [("rap/keep/#", sub_opts(1, retain_as_published=True)),
                             ("rap/clear/#", sub_opts(1))]).codes == [1, 1]
    pub = v5(b, "rap-pub")
    pub.publish("rap/keep/a", b"k", qos=1, retain=True, pid=1)
    pub.publish("rap/clear/a", b"c", qos=1, retain=True, pid=2)
    pub.publish("rap/keep/b", b"n", qos=1, retain=False, pid=3)
    pubs = receive_publishes(sub, 3, quiet=0.3)
    got = sorted((p.topic, p.retain) for p in pubs)
    assert got == [("rap/clear/a", 0), ("rap/keep/a", 1), ("rap/keep/b", 0)]
    for t in ("rap/keep/a", "rap/clear/a"):
        pub.publish(t, b"", qos=1, retain=True, pid=9)


def test_retained_message_sent_on_subscribe_has_retain_flag(broker):
    # whatever Retain As Published says, a message sent because of a new
    # subscription carries RETAIN 1 [MQTT-3.3.1-9]
    b = broker()
    pub = v5(b, "rap2-pub")
    pub.publish("rap2/a", b"stored", qos=1, retain=True, pid=1)
    sub = v5(b, "rap2-sub")
    assert sub.subscribe(1, [("rap2/#", sub_opts(1, retain_as_published=False))]).codes == [1]
    [p] = receive_publishes(sub, 1, quiet=0.3)
    assert (p.topic, p.payload, p.retain) == ("rap2/a", b"stored", 1)
    pub.publish("rap2/a", b"", qos=1, retain=True, pid=2)


# ------------------------------------------------------------ Retain Handling

@pytest.mark.parametrize("rh,expected", [(0, [1, 1]), (1, [1, 0]), (2, [0, 0])],
                         ids=["rh0-always", "rh1-new-only", "rh2-never"])
def test_retain_handling(broker, rh, expected):
    b = broker()
    pub = v5(b, "rh-pub")
    pub.publish("rh/a", b"stored", qos=1, retain=True, pid=1)
    sub = v5(b, "rh-sub")
    counts = []
    for pid in (1, 2):   # the second SUBSCRIBE replaces the existing subscription
        assert sub.subscribe(pid, [("rh/#", sub_opts(1, retain_handling=rh))]).codes == [1]
        pubs = receive_publishes(sub, 0, quiet=0.4)
        assert all((p.topic, p.payload, p.retain) == ("rh/a", b"stored", 1) for p in pubs), pubs
        counts.append(len(pubs))
    assert counts == expected
    # the subscription is live whatever the retain handling
    pub.publish("rh/a", b"live", qos=1, pid=2)
    assert [p.payload for p in receive_publishes(sub, 1, quiet=0.3)] == [b"live"]


def test_retain_handling_1_sends_again_after_unsubscribe(broker):
    b = broker()
    pub = v5(b, "rh1-pub")
    pub.publish("rh1/a", b"stored", qos=1, retain=True, pid=1)
    sub = v5(b, "rh1-sub")
    opts = sub_opts(1, retain_handling=1)
    assert sub.subscribe(1, [("rh1/#", opts)]).codes == [1]
    assert len(receive_publishes(sub, 1, quiet=0.3)) == 1
    assert sub.unsubscribe(2, ["rh1/#"]).codes == [0]
    assert sub.subscribe(3, [("rh1/#", opts)]).codes == [1]   # new again
    assert len(receive_publishes(sub, 1, quiet=0.3)) == 1


# ------------------------------------------------------------ Maximum QoS

@pytest.mark.parametrize("sub_qos", [0, 1, 2])
def test_subscription_qos_downgrades_delivery(broker, sub_qos):
    b = broker()
    sub = v5(b, "mq-sub")
    assert sub.subscribe(1, [("mq/#", sub_opts(sub_qos))]).codes == [sub_qos]
    pub = v5(b, "mq-pub")
    for pub_qos in (0, 1, 2):
        pub.publish("mq/%d" % pub_qos, b"q%d" % pub_qos, qos=pub_qos, pid=pub_qos or None)
    pubs = receive_publishes(sub, 3, quiet=0.3)
    got = sorted((p.topic, p.qos) for p in pubs)
    assert got == [("mq/%d" % q, min(q, sub_qos)) for q in (0, 1, 2)]


# ------------------------------------------------------------ Subscription Identifiers

def test_subscription_identifier_delivered(broker):
    b = broker()
    sub = v5(b, "sid-sub")
    assert sub.subscribe(1, [("sid/#", sub_opts(1))], props=[(SUBSCRIPTION_ID, 7)]).codes == [1]
    assert sub.subscribe(2, [("big/#", sub_opts(1))],
                         props=[(SUBSCRIPTION_ID, 268435455)]).codes == [1]
    assert sub.subscribe(3, [("none/#", sub_opts(1))]).codes == [1]
    pub = v5(b, "sid-pub")
    pub.publish("sid/a", b"1", qos=1, pid=1)
    pub.publish("big/a", b"2", qos=1, pid=2)
    pub.publish("none/a", b"3", qos=1, pid=3)
    pubs = receive_publishes(sub, 3, quiet=0.3)
    got = {p.topic: p.props.all(SUBSCRIPTION_ID) for p in pubs}
    assert got == {"sid/a": [7], "big/a": [268435455], "none/a": []}


def test_subscription_identifier_replaced_on_resubscribe(broker):
    b = broker()
    sub = v5(b, "sidr-sub")
    pub = v5(b, "sidr-pub")
    got = []
    # each message is received before the next SUBSCRIBE: the PUBACK to the
    # publisher does not order the delivery against the subscriber's packets
    for pid, props in ((1, [(SUBSCRIPTION_ID, 5)]), (2, [(SUBSCRIPTION_ID, 6)]), (3, None)):
        assert sub.subscribe(pid, [("sidr/#", sub_opts(1))], props=props).codes == [1]
        pub.publish("sidr/a", b"%d" % pid, qos=1, pid=pid)
        got += receive_publishes(sub, 1)
    assert receive_publishes(sub, 0, quiet=0.3) == []
    assert [(p.payload, p.props.all(SUBSCRIPTION_ID)) for p in got] == [
        (b"1", [5]), (b"2", [6]), (b"3", [])]


def test_subscription_identifier_is_per_client(broker):
    b = broker()
    s1 = v5(b, "sidc-1")
    s2 = v5(b, "sidc-2")
    assert s1.subscribe(1, [("sidc/#", sub_opts(1))], props=[(SUBSCRIPTION_ID, 11)]).codes == [1]
    assert s2.subscribe(1, [("sidc/#", sub_opts(1))], props=[(SUBSCRIPTION_ID, 22)]).codes == [1]
    v5(b, "sidc-pub").publish("sidc/a", b"x", qos=1, pid=1)
    [p1] = receive_publishes(s1, 1, quiet=0.3)
    [p2] = receive_publishes(s2, 1, quiet=0.3)
    assert p1.props.all(SUBSCRIPTION_ID) == [11] and p2.props.all(SUBSCRIPTION_ID) == [22]


def overlapping(b, cid):
    sub = v5(b, cid)
    assert sub.subscribe(1, [("ov/#", sub_opts(1))], props=[(SUBSCRIPTION_ID, 1)]).codes == [1]
    assert sub.subscribe(2, [("ov/+", sub_opts(1))], props=[(SUBSCRIPTION_ID, 2)]).codes == [1]
    v5(b, cid + "-pub").publish("ov/x", b"both", qos=1, pid=1)
    return receive_publishes(sub, 1, quiet=0.7)


def test_overlapping_subscriptions_carry_their_identifiers(broker):
    """[MQTT-3.3.4-3/4/5]: one copy carries the identifiers of all matching
    subscriptions; with one copy per subscription, each copy carries its
    subscription's identifier.  Either way ids 1 and 2 each appear once."""
    b = broker()
    pubs = overlapping(b, "ov-any")
    assert all(p.payload == b"both" for p in pubs)
    assert 1 <= len(pubs) <= 2, pubs
    ids = sorted(i for p in pubs for i in p.props.all(SUBSCRIPTION_ID))
    assert ids == [1, 2], pubs
    if len(pubs) == 2:
        assert all(len(p.props.all(SUBSCRIPTION_ID)) == 1 for p in pubs), pubs


# antenna_only: antenna delivers a message once per client even when several
# subscriptions match (as it does for 3.1.1); mosquitto 2.0.11 sends one copy
# per subscription that has an identifier.
@pytest.mark.antenna_only
def test_overlapping_subscriptions_single_copy_with_both_identifiers(broker):
    b = broker()
    pubs = overlapping(b, "ov-one")
    assert len(pubs) == 1, pubs
    assert sorted(pubs[0].props.all(SUBSCRIPTION_ID)) == [1, 2]


def test_subscription_identifier_0_closes_connection(broker):
    # a Subscription Identifier of 0 is a Protocol Error [MQTT5 3.8.2.1.2];
    # mosquitto reports it as malformed (0x81)
    b = broker()
    c = v5(b, "sid0")
    c.send(subscribe5(1, [("sid0/#", sub_opts(1))], props=[(SUBSCRIPTION_ID, 0)]))
    expect_close5(c)
    b.assert_serving()


# antenna_only: mosquitto 2.0 cannot disable subscription identifiers.
@pytest.mark.antenna_only
def test_subscription_identifiers_disabled(broker):
    b = broker(mqtt={"subscription_identifiers": False})
    c = v5(b, "sidoff")
    assert c.connack.props.get(SUBSCRIPTION_ID_AVAILABLE) == 0
    assert c.subscribe(1, [("sidoff/#", sub_opts(1))]).codes == [1]   # without one: fine
    c.send(subscribe5(2, [("sidoff/#", sub_opts(1))], props=[(SUBSCRIPTION_ID, 3)]))
    c.expect_disconnect(0xA1)
