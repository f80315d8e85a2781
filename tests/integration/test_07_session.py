"""Persistent sessions (clean_session 0), offline queues, takeover."""

import time

import pytest

from mqttraw import PUBREL, puback, pubcomp, pubrec
from helpers import Paho, receive_publishes


def persistent(b, cid, filters=None):
    """Connect with clean_session 0 (optionally subscribe) and return the client."""
    c = b.raw()
    ack = c.connect(cid, clean=False)
    assert ack.rc == 0
    if filters:
        assert c.subscribe(1, filters).codes == [q for _, q in filters]
    return c, ack


def test_subscriptions_survive_reconnect(broker):
    b = broker()
    c, ack = persistent(b, "keep", [("s/t", 1)])
    assert ack.session_present == 0
    c.go_offline()
    c, ack = persistent(b, "keep")           # no SUBSCRIBE this time
    assert ack.session_present == 1
    pub = b.raw_connected("pub")
    pub.publish("s/t", b"still subscribed", qos=1, pid=1)
    pubs = receive_publishes(c, 1, quiet=0.3)
    assert [(p.topic, p.payload, p.qos) for p in pubs] == [("s/t", b"still subscribed", 1)]


def test_offline_qos1_and_qos2_delivered_in_order_on_return(broker):
    b = broker()
    c, _ = persistent(b, "away", [("s/q", 2)])
    c.go_offline()
    pub = b.raw_connected("pub")
    for i in range(5):
        pub.publish("s/q", b"m%d" % i, qos=1, pid=i + 1)
    for i in range(5, 10):
        pub.publish("s/q", b"m%d" % i, qos=2, pid=i + 1)
    c, ack = persistent(b, "away")
    assert ack.session_present == 1
    pubs = receive_publishes(c, 10, quiet=0.5)
    assert [(p.payload, p.qos) for p in pubs] == [(b"m%d" % i, 1 if i < 5 else 2) for i in range(10)]
    assert all(p.dup == 0 for p in pubs)


def test_offline_qos0_not_queued(broker):
    b = broker()
    c, _ = persistent(b, "away0", [("s/z", 2)])
    c.go_offline()
    pub = b.raw_connected("pub")
    pub.publish("s/z", b"qos0-a")
    pub.publish("s/z", b"qos1", qos=1, pid=1)
    pub.publish("s/z", b"qos0-b")
    pub.publish("s/z", b"qos2", qos=2, pid=2)
    c, _ = persistent(b, "away0")
    pubs = receive_publishes(c, 2, quiet=0.7)
    assert [p.payload for p in pubs] == [b"qos1", b"qos2"]


def test_offline_message_downgraded_to_qos0_subscription_not_queued(broker):
    b = broker()
    c, _ = persistent(b, "away-sub0", [("s/d", 0)])
    c.go_offline()
    pub = b.raw_connected("pub")
    pub.publish("s/d", b"q1", qos=1, pid=1)
    c, _ = persistent(b, "away-sub0")
    assert receive_publishes(c, 0, quiet=0.7) == []


def test_unacked_qos1_redelivered_on_reconnect_with_dup(broker):
    b = broker()
    c, _ = persistent(b, "forgetful", [("s/u", 1)])
    pub = b.raw_connected("pub")
    pub.publish("s/u", b"ack me", qos=1, pid=1)
    first = c.recv_publish()
    assert (first.payload, first.dup) == (b"ack me", 0)
    c.close()                                 # dropped without PUBACK
    c, ack = persistent(b, "forgetful")
    assert ack.session_present == 1
    again = c.recv_publish()
    assert (again.topic, again.payload, again.qos, again.dup, again.pid) == (
        "s/u", b"ack me", 1, 1, first.pid)
    c.send(puback(again.pid))
    assert receive_publishes(c, 0, quiet=0.5) == []


def test_unacked_qos2_publish_redelivered_on_reconnect_with_dup(broker):
    b = broker()
    c, _ = persistent(b, "forgetful2", [("s/u2", 2)])
    pub = b.raw_connected("pub")
    pub.publish("s/u2", b"two", qos=2, pid=1)
    first = c.recv_publish()
    assert first.qos == 2
    c.close()                                 # no PUBREC
    c, _ = persistent(b, "forgetful2")
    again = c.recv_publish()
    assert (again.payload, again.qos, again.dup, again.pid) == (b"two", 2, 1, first.pid)
    c.send(pubrec(again.pid))
    rel = c.recv_type(PUBREL)
    assert rel.pid == first.pid
    c.send(pubcomp(rel.pid))
    assert receive_publishes(c, 0, quiet=0.5) == []


def test_unacked_pubrel_resent_on_reconnect(broker):
    b = broker()
    c, _ = persistent(b, "forgetful3", [("s/u3", 2)])
    pub = b.raw_connected("pub")
    pub.publish("s/u3", b"three", qos=2, pid=1)
    p = c.recv_publish()
    c.send(pubrec(p.pid))
    assert c.recv_type(PUBREL).pid == p.pid
    c.close()                                 # no PUBCOMP
    c, _ = persistent(b, "forgetful3")
    rel = c.recv(3)
    # the message was received: only the PUBREL is resent, never the PUBLISH
    assert (rel.type, rel.first, rel.pid) == (PUBREL, 0x62, p.pid), rel
    c.send(pubcomp(rel.pid))
    assert receive_publishes(c, 0, quiet=0.5) == []


def test_takeover_closes_first_connection(broker):
    b = broker()
    first = b.raw()
    assert first.connect("same-id").rc == 0
    second = b.raw()
    assert second.connect("same-id").rc == 0
    first.wait_closed(3)
    assert second.is_open()
    # the new connection is the one that gets messages
    second.subscribe(1, [("s/take", 0)])
    pub = b.raw_connected("pub")
    pub.publish("s/take", b"to second")
    assert second.recv_publish().payload == b"to second"


def test_takeover_keeps_persistent_session(broker):
    b = broker()
    first, _ = persistent(b, "same-p", [("s/tp", 1)])
    second, ack = persistent(b, "same-p")
    assert ack.session_present == 1
    first.wait_closed(3)
    pub = b.raw_connected("pub")
    pub.publish("s/tp", b"kept", qos=1, pid=1)
    pubs = receive_publishes(second, 1, quiet=0.3)
    assert [p.payload for p in pubs] == [b"kept"]


def test_clean_session_discards_old_session(broker):
    b = broker()
    c, _ = persistent(b, "wipe", [("s/w", 1)])
    c.go_offline()
    pub = b.raw_connected("pub")
    pub.publish("s/w", b"queued-before-clean", qos=1, pid=1)
    with b.raw() as c:
        ack = c.connect("wipe", clean=True)
        assert (ack.session_present, ack.rc) == (0, 0)
        pub.publish("s/w", b"after-clean", qos=1, pid=2)
        # neither the queued message nor the old subscription survive
        assert receive_publishes(c, 0, quiet=0.7) == []
        c.go_offline()
    c, ack = persistent(b, "wipe")
    assert ack.session_present == 0
    pub.publish("s/w", b"no-sub", qos=1, pid=3)
    assert receive_publishes(c, 0, quiet=0.7) == []


def test_clean_session_client_leaves_nothing_behind(broker):
    b = broker()
    with b.raw() as c:
        assert c.connect("transient", clean=True).rc == 0
        c.subscribe(1, [("s/tr", 1)])
        c.go_offline()
    pub = b.raw_connected("pub")
    pub.publish("s/tr", b"lost", qos=1, pid=1)
    c, ack = persistent(b, "transient")
    assert ack.session_present == 0
    assert receive_publishes(c, 0, quiet=0.7) == []


def test_persistent_session_with_paho(broker):
    b = broker()
    p = Paho(b, "paho-persist", clean_session=False).connect()
    assert p.connack[0] == 0
    p.subscribe("s/paho", 1)
    p.close()
    with Paho(b, "paho-pub") as pub:
        for i in range(5):
            pub.publish("s/paho", b"%d" % i, qos=1)
    with Paho(b, "paho-persist", clean_session=False) as p:
        assert p.connack[0] == 1
        msgs = p.get_n(5)
        assert [m.payload for m in msgs] == [b"%d" % i for i in range(5)]


# antenna_only: mosquitto's persistent_client_expiration has a granularity of
# hours; antenna's session_expiry is in seconds.
@pytest.mark.antenna_only
def test_session_expiry_drops_offline_session(broker):
    b = broker(mqtt={"session_expiry": 1})
    c, _ = persistent(b, "expiring", [("s/e", 1)])
    c.go_offline()                           # the expiry counts from here
    time.sleep(2.5)
    pub = b.raw_connected("pub")
    pub.publish("s/e", b"too late", qos=1, pid=1)
    c, ack = persistent(b, "expiring")
    assert ack.session_present == 0
    assert receive_publishes(c, 0, quiet=0.5) == []


@pytest.mark.antenna_only
def test_session_within_expiry_is_kept(broker):
    # an expiry far above the pause: a loaded machine may take seconds to
    # run the reconnect
    b = broker(mqtt={"session_expiry": 60})
    c, _ = persistent(b, "not-yet", [("s/e", 1)])
    c.go_offline()
    time.sleep(1.0)
    c, ack = persistent(b, "not-yet")
    assert ack.session_present == 1
