"""MQTT 5.0 will messages: Will Delay Interval, will properties, and the
will published when the session ends before the delay."""

import time

import pytest

from mqttraw import (
    CONTENT_TYPE, CORRELATION_DATA, MESSAGE_EXPIRY_INTERVAL, PAYLOAD_FORMAT_INDICATOR,
    RESPONSE_TOPIC, SESSION_EXPIRY_INTERVAL, USER_PROPERTY, WILL_DELAY_INTERVAL, connect_v5,
    sub_opts)
from helpers import receive_publishes

SE = SESSION_EXPIRY_INTERVAL


def v5(b, cid="", **kw):
    return connect_v5(b.host, b.port, cid, **kw)


def watcher(b, cid="will-watch"):
    w = v5(b, cid)
    assert w.subscribe(1, [("will/#", sub_opts(1))]).codes == [1]
    return w


def wait_will(w, timeout):
    """(PUBLISH, seconds waited) of the next will, or (None, timeout)."""
    t0 = time.monotonic()
    pubs = []
    try:
        pubs = receive_publishes(w, 1, timeout=timeout)
    except AssertionError:
        return None, timeout
    return pubs[0], time.monotonic() - t0


def test_will_without_delay_published_on_close(broker):
    b = broker()
    w = watcher(b)
    c = v5(b, "w-now", will=("will/now", b"gone", 1, False))
    c.close()
    p, _ = wait_will(w, 3)
    assert p is not None and (p.topic, p.payload, p.qos) == ("will/now", b"gone", 1)


def test_will_delay_not_published_if_client_reconnects(broker):
    b = broker()
    w = watcher(b)
    # a delay of 4 s: a loaded machine may take seconds to run the reconnect
    will = ("will/back", b"late", 1, False, [(WILL_DELAY_INTERVAL, 4)])
    c = v5(b, "w-back", props=[(SE, 60)], will=will)
    c.close()
    time.sleep(0.5)
    c = v5(b, "w-back", clean_start=False, props=[(SE, 60)])
    assert c.connack.session_present == 1
    # well past the 4 s delay: nothing
    assert receive_publishes(w, 0, quiet=4.0) == []
    c.disconnect()
    assert receive_publishes(w, 0, quiet=0.3) == []


def test_will_delay_published_after_delay(broker):
    b = broker()
    w = watcher(b)
    will = ("will/delayed", b"late", 1, False, [(WILL_DELAY_INTERVAL, 1)])
    c = v5(b, "w-delay", props=[(SE, 60)], will=will)
    c.close()
    p, waited = wait_will(w, 4)
    assert p is not None, "will not published within 4 s"
    assert (p.topic, p.payload) == ("will/delayed", b"late")
    assert waited >= 0.8, "will published %.2f s after the close, delay was 1 s" % waited
    assert WILL_DELAY_INTERVAL not in p.props


def test_will_properties_passed_through(broker):
    b = broker()
    w = watcher(b)
    props = [(USER_PROPERTY, ("k", "v1")), (CONTENT_TYPE, "text/plain"),
             (USER_PROPERTY, ("k", "v1")), (USER_PROPERTY, ("z", "last")),
             (RESPONSE_TOPIC, "will/reply"), (CORRELATION_DATA, b"\x00cd"),
             (PAYLOAD_FORMAT_INDICATOR, 1), (MESSAGE_EXPIRY_INTERVAL, 60)]
    c = v5(b, "w-props", will=("will/props", "d\u00e9connect\u00e9", 1, False, props))
    c.close()
    p, _ = wait_will(w, 3)
    assert p is not None
    assert (p.topic, p.payload) == ("will/props", "d\u00e9connect\u00e9".encode())
    assert p.props.all(USER_PROPERTY) == [("k", "v1"), ("k", "v1"), ("z", "last")]
    assert p.props.get(CONTENT_TYPE) == "text/plain"
    assert p.props.get(RESPONSE_TOPIC) == "will/reply"
    assert p.props.get(CORRELATION_DATA) == b"\x00cd"
    assert p.props.get(PAYLOAD_FORMAT_INDICATOR) == 1
    assert 55 <= p.props.get(MESSAGE_EXPIRY_INTERVAL) <= 60


def test_will_published_at_session_end_before_delay(broker):
    """Will Delay 30 s, Session Expiry 1 s: the will goes out when the
    session ends (about 1 s), not after 30 s [MQTT-3.1.3-9]."""
    b = broker()
    w = watcher(b)
    will = ("will/sessend", b"session over", 1, False, [(WILL_DELAY_INTERVAL, 30)])
    c = v5(b, "w-sess", props=[(SE, 1)], will=will)
    c.close()
    p, waited = wait_will(w, 5)
    assert p is not None, "will not published within 5 s"
    assert (p.topic, p.payload) == ("will/sessend", b"session over")
    assert waited >= 0.8, waited


# antenna_only: mosquitto 2.0.11 keeps a delayed will for the whole delay
# even when the session (expiry 0) ended with the connection.
@pytest.mark.antenna_only
def test_will_published_at_once_when_session_expiry_zero(broker):
    b = broker()
    w = watcher(b)
    will = ("will/zero", b"now", 1, False, [(WILL_DELAY_INTERVAL, 30)])
    c = v5(b, "w-zero", props=[(SE, 0)], will=will)
    c.close()
    p, waited = wait_will(w, 3)
    assert p is not None and p.payload == b"now"


def test_will_delay_normal_disconnect_discards_will(broker):
    b = broker()
    w = watcher(b)
    will = ("will/normal", b"never", 1, False, [(WILL_DELAY_INTERVAL, 1)])
    c = v5(b, "w-normal", props=[(SE, 60)], will=will)
    c.disconnect(0x00)
    assert receive_publishes(w, 0, quiet=2.0) == []


def test_disconnect_with_will_and_delay(broker):
    b = broker()
    w = watcher(b)
    will = ("will/d04", b"asked", 1, False, [(WILL_DELAY_INTERVAL, 1)])
    c = v5(b, "w-d04", props=[(SE, 60)], will=will)
    c.disconnect(0x04)
    p, waited = wait_will(w, 4)
    assert p is not None and p.payload == b"asked"
    assert waited >= 0.8, waited


def test_will_retained_with_properties(broker):
    b = broker()
    c = v5(b, "w-ret", will=("will/ret", b"offline", 1, True, [(CONTENT_TYPE, "status")]))
    c.close()
    time.sleep(0.5)
    late = v5(b, "w-late")
    assert late.subscribe(1, [("will/ret", sub_opts(1))]).codes == [1]
    [p] = receive_publishes(late, 1, timeout=3, quiet=0.3)
    assert (p.topic, p.payload, p.retain) == ("will/ret", b"offline", 1)
    assert p.props.get(CONTENT_TYPE) == "status"
    v5(b, "w-clean").publish("will/ret", b"", qos=1, retain=True, pid=1)
