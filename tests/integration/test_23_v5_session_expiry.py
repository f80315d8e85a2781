"""MQTT 5.0 Session Expiry Interval: 0 ends the session with the connection,
> 0 keeps it (subscriptions and queued messages) for that long, 0xFFFFFFFF
never expires, and DISCONNECT can change it."""

import time

import pytest

from mqttraw import SESSION_EXPIRY_INTERVAL, connect_v5, disconnect5, sub_opts
from helpers import receive_publishes

SE = SESSION_EXPIRY_INTERVAL


def v5(b, cid="", **kw):
    return connect_v5(b.host, b.port, cid, **kw)


def persistent(b, cid, expiry, topic="se/#"):
    """Connect with clean start, subscribe at QoS 1, disconnect normally."""
    c = v5(b, cid, clean_start=True, props=None if expiry is None else [(SE, expiry)])
    assert c.subscribe(1, [(topic, sub_opts(1))]).codes == [1]
    return c


def publish_one(b, topic, payload, pid=1):
    pub = v5(b, "pub-%d-%s" % (pid, payload.decode()))
    pub.publish(topic, payload, qos=1, pid=pid)
    pub.disconnect()


@pytest.mark.parametrize("expiry", [None, 0], ids=["absent", "zero"])
def test_session_ends_with_connection_when_expiry_is_zero(broker, expiry):
    b = broker()
    c = persistent(b, "se0", expiry)
    c.disconnect()
    publish_one(b, "se/a", b"lost")
    c = v5(b, "se0", clean_start=False, props=[(SE, 60)])
    assert c.connack.session_present == 0
    # no subscription survived and nothing was queued
    assert receive_publishes(c, 0, quiet=0.5) == []
    publish_one(b, "se/a", b"after", pid=2)
    assert receive_publishes(c, 0, quiet=0.5) == []


def test_session_resumed_within_expiry(broker):
    b = broker()
    c = persistent(b, "se60", 60)
    c.disconnect()
    publish_one(b, "se/a", b"queued")
    c = v5(b, "se60", clean_start=False, props=[(SE, 60)])
    assert c.connack.session_present == 1
    [p] = receive_publishes(c, 1, quiet=0.3)
    assert (p.topic, p.payload, p.qos) == ("se/a", b"queued", 1)
    # the subscription is still there for live messages
    publish_one(b, "se/b", b"live", pid=2)
    [p] = receive_publishes(c, 1, quiet=0.3)
    assert (p.topic, p.payload) == ("se/b", b"live")


def test_session_resumed_after_network_close_within_expiry(broker):
    b = broker()
    c = persistent(b, "se-drop", 60)
    c.close()                      # no DISCONNECT: the session stays all the same
    time.sleep(0.3)
    publish_one(b, "se/a", b"queued")
    c = v5(b, "se-drop", clean_start=False, props=[(SE, 60)])
    assert c.connack.session_present == 1
    assert [p.payload for p in receive_publishes(c, 1, quiet=0.3)] == [b"queued"]


def test_session_expires_after_interval_but_not_max(broker):
    """Expiry 1 s (from CONNECT, or set by DISCONNECT over a longer one):
    gone 3 s later.  Expiry 0xFFFFFFFF: still there, with its message."""
    b = broker()
    short = persistent(b, "se-short", 1)
    shortened = persistent(b, "se-shortened", 3600)
    never = persistent(b, "se-never", 0xFFFFFFFF)
    short.disconnect()
    shortened.disconnect(0, [(SE, 1)])
    never.disconnect()
    publish_one(b, "se/a", b"queued")
    time.sleep(3.0)
    short = v5(b, "se-short", clean_start=False, props=[(SE, 60)])
    shortened = v5(b, "se-shortened", clean_start=False, props=[(SE, 60)])
    never = v5(b, "se-never", clean_start=False, props=[(SE, 0xFFFFFFFF)])
    assert short.connack.session_present == 0
    assert shortened.connack.session_present == 0
    assert never.connack.session_present == 1
    assert receive_publishes(short, 0, quiet=0.3) == []
    assert receive_publishes(shortened, 0, quiet=0.1) == []
    assert [p.payload for p in receive_publishes(never, 1, quiet=0.3)] == [b"queued"]


def test_clean_start_discards_existing_session(broker):
    b = broker()
    c = persistent(b, "se-clean", 60)
    c.disconnect()
    publish_one(b, "se/a", b"queued")
    c = v5(b, "se-clean", clean_start=True, props=[(SE, 60)])
    assert c.connack.session_present == 0
    assert receive_publishes(c, 0, quiet=0.5) == []
    publish_one(b, "se/a", b"after", pid=2)
    assert receive_publishes(c, 0, quiet=0.5) == []


def test_disconnect_sets_expiry_to_zero(broker):
    b = broker()
    c = persistent(b, "se-d0", 60)
    c.disconnect(0, [(SE, 0)])
    time.sleep(0.3)
    publish_one(b, "se/a", b"lost")
    c = v5(b, "se-d0", clean_start=False, props=[(SE, 60)])
    assert c.connack.session_present == 0
    assert receive_publishes(c, 0, quiet=0.5) == []


def test_disconnect_cannot_set_expiry_after_zero(broker):
    """[MQTT-3.14.2-2]: Session Expiry Interval 0 in CONNECT and > 0 in
    DISCONNECT is a Protocol Error: the server answers DISCONNECT 0x82 and
    the session still ends."""
    b = broker()
    c = persistent(b, "se-0to60", 0)
    c.send(disconnect5(0, [(SE, 60)]))
    c.expect_disconnect(0x82)
    publish_one(b, "se/a", b"lost")
    c = v5(b, "se-0to60", clean_start=False, props=[(SE, 60)])
    assert c.connack.session_present == 0
    assert receive_publishes(c, 0, quiet=0.5) == []


def test_expiry_from_reconnect_applies(broker):
    """The interval of the latest CONNECT counts: a session first made
    with 3600 s and resumed with 0 ends with that connection."""
    b = broker()
    c = persistent(b, "se-re", 3600)
    c.disconnect()
    c = v5(b, "se-re", clean_start=False, props=[(SE, 0)])
    assert c.connack.session_present == 1
    c.disconnect()
    c = v5(b, "se-re", clean_start=False, props=[(SE, 60)])
    assert c.connack.session_present == 0
