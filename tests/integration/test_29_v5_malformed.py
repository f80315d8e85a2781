"""Malformed MQTT 5.0 packets and property-level protocol errors: the
connection is closed within 3 s (a CONNACK or DISCONNECT 0x81 / 0x82 may
come first), nothing is delivered, and the broker keeps serving."""

import pytest

from mqttraw import (
    AUTHENTICATION_DATA, CONTENT_TYPE, CORRELATION_DATA, MAXIMUM_PACKET_SIZE,
    MESSAGE_EXPIRY_INTERVAL, PAYLOAD_FORMAT_INDICATOR, REASON_STRING, RECEIVE_MAXIMUM,
    REQUEST_PROBLEM_INFO, RESPONSE_TOPIC, SESSION_EXPIRY_INTERVAL, SUBSCRIPTION_ID, TOPIC_ALIAS,
    TOPIC_ALIAS_MAXIMUM, USER_PROPERTY, WILL_DELAY_INTERVAL, RawClient5, connect5, connect_v5,
    expect_close5, mqtt_str, packet, puback5, publish5, subscribe5, sub_opts, unsubscribe5)
from helpers import receive_publishes


def v5(b, cid="", **kw):
    return connect_v5(b.host, b.port, cid, **kw)


def bystander(b):
    by = v5(b, "bystander")
    assert by.subscribe(1, [("#", sub_opts(1))]).codes == [1]
    return by


# A property block with a bad length: says 9 bytes, holds 3.
OVERRUN = b"\x09\x01\x01\x02"
# An identifier that does not exist (0x7F).
UNKNOWN_ID = b"\x02\x7f\x00"

# (id, CONNECT bytes): refused before any CONNACK 0
BEFORE_CONNECT = [
    ("dup-session-expiry", connect5("m1", props=[(SESSION_EXPIRY_INTERVAL, 1),
                                                 (SESSION_EXPIRY_INTERVAL, 2)])),
    ("dup-receive-maximum", connect5("m1b", props=[(RECEIVE_MAXIMUM, 5), (RECEIVE_MAXIMUM, 5)])),
    ("receive-maximum-0", connect5("m2", props=[(RECEIVE_MAXIMUM, 0)])),
    ("maximum-packet-size-0", connect5("m3", props=[(MAXIMUM_PACKET_SIZE, 0)])),
    ("request-problem-info-2", connect5("m4", props=[(REQUEST_PROBLEM_INFO, 2)])),
    ("topic-alias-not-allowed", connect5("m5", props=[(TOPIC_ALIAS, 1)])),
    ("subscription-id-not-allowed", connect5("m5b", props=[(SUBSCRIPTION_ID, 1)])),
    ("property-length-overrun", connect5("m6", props=OVERRUN)),
    ("unknown-property", connect5("m7", props=UNKNOWN_ID)),
    ("will-property-not-allowed", connect5("m8", will=("w/t", b"x", 0, False,
                                                        [(SESSION_EXPIRY_INTERVAL, 3)]))),
    ("will-dup-delay", connect5("m9", will=("w/t", b"x", 0, False,
                                            [(WILL_DELAY_INTERVAL, 1), (WILL_DELAY_INTERVAL, 2)]))),
    ("will-props-overrun", connect5("m10", will=("w/t", b"x", 0, False, OVERRUN))),
    # Property Length as a 5-byte Variable Byte Integer
    ("property-length-5-bytes", connect5("m11", props=b"\x80\x80\x80\x80\x01")),
]


@pytest.mark.parametrize("data", [d for _, d in BEFORE_CONNECT], ids=[i for i, _ in BEFORE_CONNECT])
def test_malformed_connect_closes(broker, data):
    b = broker()
    c = RawClient5(b.host, b.port)
    c.send(data)
    got = expect_close5(c)
    # a refusal CONNACK is the only packet allowed before CONNACK 0
    assert all(p.type == 2 for p in got), got
    b.assert_serving()


# antenna_only: mosquitto 2.0.11 accepts Authentication Data without an
# Authentication Method, a Protocol Error [MQTT5 3.1.2.11.10].
@pytest.mark.antenna_only
def test_authentication_data_without_method_closes(broker):
    b = broker()
    c = RawClient5(b.host, b.port)
    c.send(connect5("ad", props=[(AUTHENTICATION_DATA, b"zz")]))
    got = expect_close5(c)
    assert all(p.type == 2 for p in got), got


# (id, bytes sent after CONNACK 0)
AFTER_CONNECT = [
    ("publish-dup-content-type",
     publish5("m/t", b"x", props=[(CONTENT_TYPE, "a"), (CONTENT_TYPE, "b")])),
    ("publish-dup-message-expiry",
     publish5("m/t", b"x", qos=1, pid=1, props=[(MESSAGE_EXPIRY_INTERVAL, 5),
                                                (MESSAGE_EXPIRY_INTERVAL, 5)])),
    ("publish-dup-correlation-data",
     publish5("m/t", b"x", props=[(CORRELATION_DATA, b"1"), (CORRELATION_DATA, b"2")])),
    ("publish-topic-alias-0", publish5("m/t", b"x", props=[(TOPIC_ALIAS, 0)])),
    ("publish-session-expiry-not-allowed",
     publish5("m/t", b"x", props=[(SESSION_EXPIRY_INTERVAL, 3)])),
    ("publish-reason-string-not-allowed", publish5("m/t", b"x", props=[(REASON_STRING, "r")])),
    ("publish-property-length-overrun", publish5("m/t", b"", props=OVERRUN)),
    ("publish-unknown-property", publish5("m/t", b"x", props=UNKNOWN_ID)),
    ("publish-user-property-truncated",
     packet(0x30, mqtt_str("m/t") + b"\x06\x26\x00\x01k\x00\x05")),
    ("subscribe-dup-subscription-id",
     subscribe5(1, [("m/#", sub_opts(0))], props=[(SUBSCRIPTION_ID, 1), (SUBSCRIPTION_ID, 2)])),
    ("subscribe-property-not-allowed",
     subscribe5(1, [("m/#", sub_opts(0))], props=[(TOPIC_ALIAS_MAXIMUM, 1)])),
    ("subscribe-options-reserved-bits", subscribe5(1, [("m/#", 0xC0)])),
    ("subscribe-retain-handling-3", subscribe5(1, [("m/#", 0x30)])),
    ("subscribe-qos-3", subscribe5(1, [("m/#", 0x03)])),
    ("subscribe-shared-bad-group", subscribe5(1, [("$share/g+/m/#", sub_opts(0))])),
    ("unsubscribe-subscription-id-not-allowed",
     unsubscribe5(1, ["m/#"], props=[(SUBSCRIPTION_ID, 1)])),
    ("puback-property-not-allowed", puback5(1, 0, [(TOPIC_ALIAS, 1)])),
]


@pytest.mark.parametrize("data", [d for _, d in AFTER_CONNECT], ids=[i for i, _ in AFTER_CONNECT])
def test_malformed_packet_after_connect_closes(broker, data):
    b = broker()
    by = bystander(b)
    c = v5(b, "malformed")
    c.send(data)
    expect_close5(c)
    assert receive_publishes(by, 0, quiet=0.3) == []
    b.assert_serving()


# Protocol errors mosquitto 2.0.11 lets through (it accepts each of these
# packets); all are errors in MQTT 5.0:
ANTENNA_ONLY = [
    # a client may not send a Subscription Identifier in PUBLISH [MQTT-3.3.4-6]
    ("publish-subscription-id", publish5("m/t", b"x", props=[(SUBSCRIPTION_ID, 3)])),
    # Payload Format Indicator is 0 or 1
    ("publish-payload-format-2", publish5("m/t", b"x", props=[(PAYLOAD_FORMAT_INDICATOR, 2)])),
    # the Response Topic is a Topic Name: no wildcards [MQTT-3.3.2-14]
    ("publish-response-topic-wildcard", publish5("m/t", b"x", props=[(RESPONSE_TOPIC, "r/#")])),
    # No Local on a shared subscription [MQTT-3.8.3-4]
    ("subscribe-shared-no-local", subscribe5(1, [("$share/g/m/#", sub_opts(0, no_local=True))])),
    # $share/{group} needs a filter after the group name [MQTT5 4.8.2]
    ("subscribe-shared-without-filter", subscribe5(1, [("$share/g", sub_opts(0))])),
]


@pytest.mark.antenna_only
@pytest.mark.parametrize("data", [d for _, d in ANTENNA_ONLY], ids=[i for i, _ in ANTENNA_ONLY])
def test_protocol_error_after_connect_closes(broker, data):
    b = broker()
    by = bystander(b)
    c = v5(b, "protoerr")
    c.send(data)
    expect_close5(c)
    assert receive_publishes(by, 0, quiet=0.3) == []


def test_valid_properties_in_every_position_are_accepted(broker):
    """The counterpart of the above: the same properties where they are
    allowed, including repeated user properties, keep the connection."""
    b = broker()
    c = v5(b, "wellformed", props=[(USER_PROPERTY, ("a", "1")), (USER_PROPERTY, ("a", "1")),
                                   (RECEIVE_MAXIMUM, 1), (MAXIMUM_PACKET_SIZE, 1 << 20),
                                   (REQUEST_PROBLEM_INFO, 1)])
    assert c.subscribe(1, [("m/#", sub_opts(1))],
                       props=[(SUBSCRIPTION_ID, 1), (USER_PROPERTY, ("s", "1"))]).codes == [1]
    assert c.publish("m/t", b"x", qos=1, pid=2,
                     props=[(CONTENT_TYPE, "a"), (USER_PROPERTY, ("u", "1")),
                            (USER_PROPERTY, ("u", "1"))]).rc == 0
    p = c.recv_publish()
    c.send(puback5(p.pid, 0, [(REASON_STRING, "thanks"), (USER_PROPERTY, ("k", "v"))]))
    assert c.unsubscribe(3, ["m/#"], props=[(USER_PROPERTY, ("x", "y"))]).codes == [0]
    assert c.is_open()
