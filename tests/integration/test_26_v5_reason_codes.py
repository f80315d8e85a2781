"""MQTT 5.0 reason codes in acknowledgements, and DISCONNECT in both
directions."""

import time

import pytest

from mqttraw import (
    AUTHENTICATION_METHOD, DISCONNECT, PUBCOMP, PUBREL, REASON_STRING, SHARED_SUB_AVAILABLE,
    USER_PROPERTY, WILDCARD_SUB_AVAILABLE, auth5, connect5, connect_v5,
    disconnect5, expect_close5, mqtt_str, packet, publish5, pubrec5, pubrel5, subscribe5,
    sub_opts)
from helpers import receive_publishes


def v5(b, cid="", **kw):
    return connect_v5(b.host, b.port, cid, **kw)


# ------------------------------------------------------------ PUBACK / PUBREC

def test_puback_no_matching_subscribers_0x10(broker):
    b = broker()
    pub = v5(b, "rc-pub")
    assert pub.publish("rc/nobody", b"x", qos=1, pid=1).rc == 0x10
    sub = v5(b, "rc-sub")
    assert sub.subscribe(1, [("rc/somebody", sub_opts(1))]).codes == [1]
    assert pub.publish("rc/somebody", b"x", qos=1, pid=2).rc == 0x00
    assert pub.publish("rc/nobody", b"x", qos=1, pid=3).rc == 0x10
    assert [p.topic for p in receive_publishes(sub, 1, quiet=0.3)] == ["rc/somebody"]


# ------------------------------------------------------------ SUBACK

def test_suback_granted_qos_per_filter(broker):
    b = broker()
    c = v5(b, "rc-granted")
    ack = c.subscribe(1, [("g/0", sub_opts(0)), ("g/1", sub_opts(1)), ("g/2", sub_opts(2)),
                          ("g/+/x", sub_opts(2, no_local=True))])
    assert ack.codes == [0, 1, 2, 2]


def test_suback_granted_qos_capped_by_max_qos(broker):
    b = broker(mqtt={"max_qos": 1})
    c = v5(b, "rc-capped")
    assert c.subscribe(1, [("g/0", sub_opts(0)), ("g/1", sub_opts(1)),
                           ("g/2", sub_opts(2))]).codes == [0, 1, 1]


@pytest.mark.parametrize("flt", ["bad/#/x", "bad/a+", "bad#", ""])
def test_invalid_topic_filter_is_malformed_0x81(broker, flt):
    # an ill-formed filter is a Malformed Packet (the whole SUBSCRIBE), not a
    # per-filter 0x8F: both brokers close with DISCONNECT 0x81
    b = broker()
    c = v5(b, "rc-badfilter")
    c.send(subscribe5(1, [("ok/a", sub_opts(1)), (flt, sub_opts(1))]))
    c.expect_disconnect(0x81)


# antenna_only: mosquitto 2.0 cannot disable wildcard subscriptions.
@pytest.mark.antenna_only
def test_wildcards_not_supported_0xa2(broker):
    b = broker(mqtt={"wildcard_subscriptions": False})
    c = v5(b, "rc-nowild")
    assert c.connack.props.get(WILDCARD_SUB_AVAILABLE) == 0
    ack = c.subscribe(1, [("w/a", sub_opts(1)), ("w/+", sub_opts(1)), ("w/#", sub_opts(0)),
                          ("w/b", sub_opts(2))])
    assert ack.codes == [1, 0xA2, 0xA2, 2]
    assert c.is_open()


# antenna_only: mosquitto 2.0 cannot disable shared subscriptions.
@pytest.mark.antenna_only
def test_shared_not_supported_0x9e(broker):
    b = broker(mqtt={"shared_subscriptions": False})
    c = v5(b, "rc-noshare")
    assert c.connack.props.get(SHARED_SUB_AVAILABLE) == 0
    ack = c.subscribe(1, [("$share/g/s/a", sub_opts(1)), ("s/a", sub_opts(1))])
    assert ack.codes == [0x9E, 1]
    assert c.is_open()


# ------------------------------------------------------------ UNSUBACK

def test_unsuback_per_filter_codes(broker):
    b = broker()
    c = v5(b, "rc-unsub")
    assert c.subscribe(1, [("u/a", sub_opts(1)), ("u/+", sub_opts(0))]).codes == [1, 0]
    ack = c.unsubscribe(2, ["u/a", "u/never", "u/+", "u/a"])
    assert ack.codes == [0x00, 0x11, 0x00, 0x11]
    assert c.unsubscribe(3, ["u/a"]).codes == [0x11]


# ------------------------------------------------------------ unknown packet ids

# antenna_only: mosquitto 2.0.11 answers a PUBREL / PUBREC for a packet id it
# does not know with reason code 0x00 instead of 0x92 (Packet Identifier not
# found).
@pytest.mark.antenna_only
def test_pubrel_unknown_packet_id_pubcomp_0x92(broker):
    b = broker()
    c = v5(b, "rc-rel")
    c.send(pubrel5(0x1234))
    p = c.recv_type(PUBCOMP, 3)
    assert (p.pid, p.rc) == (0x1234, 0x92)
    assert c.is_open()


@pytest.mark.antenna_only   # see above
def test_pubrec_unknown_packet_id_pubrel_0x92(broker):
    b = broker()
    c = v5(b, "rc-rec")
    c.send(pubrec5(0x2345))
    p = c.recv_type(PUBREL, 3)
    assert (p.pid, p.rc, p.flags) == (0x2345, 0x92, 0x2)
    assert c.is_open()


def test_pubrel_for_known_id_pubcomp_success(broker):
    b = broker()
    c = v5(b, "rc-rel-ok")
    c.send(publish5("rc/q2", b"x", qos=2, pid=9))
    assert c.recv(3).pid == 9
    c.send(pubrel5(9))
    p = c.recv_type(PUBCOMP, 3)
    assert (p.pid, p.rc) == (9, 0x00)


# ------------------------------------------------------------ capability violations

def test_publish_above_maximum_qos_disconnect_0x9b(broker):
    b = broker(mqtt={"max_qos": 1})
    by = v5(b, "rc-by")
    assert by.subscribe(1, [("#", sub_opts(1))]).codes == [1]
    c = v5(b, "rc-q2")
    assert c.publish("rc/q", b"ok", qos=1, pid=1).rc == 0
    c.send(publish5("rc/q", b"too high", qos=2, pid=2))
    c.expect_disconnect(0x9B)
    assert [p.payload for p in receive_publishes(by, 1, quiet=0.5)] == [b"ok"]


def test_publish_qos1_with_max_qos_0_disconnect_0x9b(broker):
    b = broker(mqtt={"max_qos": 0})
    c = v5(b, "rc-q1")
    c.send(publish5("rc/q", b"x", qos=1, pid=1))
    c.expect_disconnect(0x9B)


@pytest.mark.parametrize("payload", [b"value", b""], ids=["set", "clear"])
def test_retained_publish_without_retain_available_disconnect_0x9a(broker, payload):
    b = broker(mqtt={"retain_available": False})
    c = v5(b, "rc-ret")
    c.send(publish5("rc/r", payload, qos=1, retain=True, pid=1))
    c.expect_disconnect(0x9A)


# ------------------------------------------------------------ DISCONNECT from the client

def will_watcher(b, cid="will-watch"):
    w = v5(b, cid)
    assert w.subscribe(1, [("will/#", sub_opts(1))]).codes == [1]
    return w


def test_disconnect_0x04_publishes_will(broker):
    b = broker()
    w = will_watcher(b)
    c = v5(b, "d04", will=("will/d04", b"asked for", 1, False))
    c.disconnect(0x04)
    pubs = receive_publishes(w, 1, timeout=3, quiet=0.3)
    assert [(p.topic, p.payload) for p in pubs] == [("will/d04", b"asked for")]


@pytest.mark.parametrize("props", [None, [(REASON_STRING, "bye"), (USER_PROPERTY, ("k", "v"))]],
                         ids=["bare", "with-properties"])
def test_disconnect_0x00_discards_will(broker, props):
    b = broker()
    w = will_watcher(b)
    c = v5(b, "d00", will=("will/d00", b"never", 1, False))
    c.send(disconnect5(0x00, props))
    c.wait_closed(3)
    assert receive_publishes(w, 0, quiet=0.7) == []


# ------------------------------------------------------------ DISCONNECT from the broker

def test_session_takeover_closes_old_connection(broker):
    b = broker()
    old = v5(b, "takeover")
    new = v5(b, "takeover")
    got = old.wait_closed(3)
    assert all(p.type == DISCONNECT and p.rc == 0x8E for p in got), got
    assert new.is_open()


# antenna_only: mosquitto 2.0.11 closes the old connection without a
# DISCONNECT packet; the spec says it sends DISCONNECT 0x8E [MQTT-3.1.4-3].
@pytest.mark.antenna_only
def test_session_takeover_disconnect_0x8e(broker):
    b = broker()
    old = v5(b, "takeover8e")
    v5(b, "takeover8e")
    old.expect_disconnect(0x8E)


# antenna_only: mosquitto 2.0.11 closes a timed-out connection without a
# DISCONNECT (and only after about 6 s for keepalive 1).
@pytest.mark.antenna_only
def test_keepalive_timeout_disconnect_0x8d(broker):
    b = broker()
    c = v5(b, "ka8d", keepalive=1)
    t0 = time.monotonic()
    c.expect_disconnect(0x8D, timeout=5)
    assert time.monotonic() - t0 >= 1.0


def test_publish_qos3_disconnect_0x81(broker):
    b = broker()
    c = v5(b, "qos3")
    body = mqtt_str("m/t") + b"\x00\x01" + b"\x00" + b"x"
    c.send(packet(0x36, body))
    c.expect_disconnect(0x81)


def test_second_connect_closes_connection(broker):
    b = broker()
    c = v5(b, "twice")
    c.send(connect5("twice"))
    expect_close5(c, (0x82,))


# antenna_only: mosquitto 2.0.11 closes without a DISCONNECT packet.
@pytest.mark.antenna_only
def test_second_connect_disconnect_0x82(broker):
    b = broker()
    c = v5(b, "twice82")
    c.send(connect5("twice82"))
    c.expect_disconnect(0x82)


def test_auth_without_authentication_method_closes(broker):
    b = broker()
    c = v5(b, "auth")
    c.send(auth5(0x19, [(AUTHENTICATION_METHOD, "SCRAM-SHA-1")]))
    expect_close5(c, (0x82,))


# antenna_only: mosquitto 2.0.11 closes without a DISCONNECT packet; a
# client that did not authenticate with a method sending AUTH is a Protocol
# Error [MQTT-4.12.0-6 / 3.15].
@pytest.mark.antenna_only
@pytest.mark.parametrize("pkt", [auth5(0x19), auth5(0x18, [(AUTHENTICATION_METHOD, "X")])],
                         ids=["reauthenticate", "continue"])
def test_auth_without_authentication_method_disconnect_0x82(broker, pkt):
    b = broker()
    c = v5(b, "auth82")
    c.send(pkt)
    c.expect_disconnect(0x82)


# antenna_only: mosquitto 2.0.11 closes client connections without a
# DISCONNECT when it shuts down.
@pytest.mark.antenna_only
def test_server_shutting_down_disconnect_0x8b(broker):
    b = broker()
    c = v5(b, "shutdown")
    sub = v5(b, "shutdown-sub")
    assert sub.subscribe(1, [("sd/#", sub_opts(1))]).codes == [1]
    b.stop()                         # SIGTERM; exit code 0 asserted
    for x in (c, sub):
        x.expect_disconnect(0x8B)
