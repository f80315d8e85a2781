"""MQTT 5.0 PUBLISH properties: passed through to subscribers unchanged
(user properties in order with duplicates, content type, response topic,
correlation data, payload format indicator), Message Expiry Interval
(decremented while queued, expired messages dropped), the payload format
check, and mixing 3.1.1 and 5.0 clients."""

import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import mqttraw
from mqttraw import (
    CONTENT_TYPE, CORRELATION_DATA, MESSAGE_EXPIRY_INTERVAL, PAYLOAD_FORMAT_INDICATOR,
    RESPONSE_TOPIC, SESSION_EXPIRY_INTERVAL, TOPIC_ALIAS, USER_PROPERTY, connect_v5,
    publish5, sub_opts)
from helpers import TIMEOUT, Paho, receive_publishes


def v5(b, cid="", **kw):
    return connect_v5(b.host, b.port, cid, **kw)


USER_PROPS = [("k", "v1"), ("a", "x"), ("k", "v1"), ("k", "v2"), ("\u00e9t\u00e9", "\u2603 snow"),
              ("empty", "")]
FULL_PROPS = ([(PAYLOAD_FORMAT_INDICATOR, 1), (CONTENT_TYPE, "application/json; charset=utf-8"),
               (RESPONSE_TOPIC, "reply/to/me"), (CORRELATION_DATA, b"\x00\x01corr\xff")]
              + [(USER_PROPERTY, kv) for kv in USER_PROPS])


def assert_same_properties(got, sent):
    """Every property sent is there with the same value; the user
    properties in the same order; nothing but these (and a Message Expiry
    Interval when one was sent)."""
    assert got.all(USER_PROPERTY) == [kv for k, kv in sent if k == USER_PROPERTY]
    singles = {k: v for k, v in sent if k != USER_PROPERTY}
    for k, v in singles.items():
        assert got.get(k) == v, "property 0x%02x: %r != %r (%r)" % (k, got.get(k), v, got)
    assert set(got.ids()) == set(k for k, _ in sent), got


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_properties_passed_through_unchanged(broker, qos):
    b = broker()
    sub = v5(b, "props-sub")
    assert sub.subscribe(1, [("props/#", sub_opts(2))]).codes == [2]
    pub = v5(b, "props-pub")
    pub.publish("props/a", '{"temp": 21.5}', qos=qos, pid=5, props=FULL_PROPS)
    [p] = receive_publishes(sub, 1, quiet=0.3)
    assert (p.topic, p.payload, p.qos) == ("props/a", b'{"temp": 21.5}', qos)
    assert_same_properties(p.props, FULL_PROPS)


def test_properties_kept_for_an_offline_session(broker):
    b = broker()
    sub = v5(b, "props-off", clean_start=False, props=[(SESSION_EXPIRY_INTERVAL, 60)])
    assert sub.subscribe(1, [("off/#", sub_opts(1))]).codes == [1]
    sub.disconnect()
    pub = v5(b, "props-off-pub")
    pub.publish("off/a", b"queued", qos=1, pid=1, props=FULL_PROPS)
    sub = v5(b, "props-off", clean_start=False, props=[(SESSION_EXPIRY_INTERVAL, 60)])
    assert sub.connack.session_present == 1
    [p] = receive_publishes(sub, 1, quiet=0.3)
    assert (p.topic, p.payload) == ("off/a", b"queued")
    assert_same_properties(p.props, FULL_PROPS)


def test_retained_message_keeps_properties(broker):
    b = broker()
    pub = v5(b, "ret-pub")
    pub.publish("retprops/a", b"kept", qos=1, retain=True, pid=1, props=FULL_PROPS)
    sub = v5(b, "ret-sub")
    assert sub.subscribe(1, [("retprops/#", sub_opts(1))]).codes == [1]
    [p] = receive_publishes(sub, 1, quiet=0.3)
    assert (p.topic, p.payload, p.retain) == ("retprops/a", b"kept", 1)
    assert_same_properties(p.props, FULL_PROPS)
    pub.publish("retprops/a", b"", qos=1, retain=True, pid=2)   # clean up


def test_publisher_topic_alias_is_not_forwarded(broker):
    b = broker()
    sub = v5(b, "alias-sub", props=[(mqttraw.TOPIC_ALIAS_MAXIMUM, 0)])
    assert sub.subscribe(1, [("fwd/#", sub_opts(1))]).codes == [1]
    pub = v5(b, "alias-pub")
    pub.publish("fwd/a", b"one", qos=1, pid=1, props=[(TOPIC_ALIAS, 1), (CONTENT_TYPE, "t")])
    [p] = receive_publishes(sub, 1, quiet=0.3)
    assert p.topic == "fwd/a"
    assert TOPIC_ALIAS not in p.props and p.props.get(CONTENT_TYPE) == "t"


class Paho5(Paho):
    """helpers.Paho speaking MQTT 5 (paho 1.6 calls on_connect and
    on_subscribe with the 5.0 signatures)."""

    def __init__(self, broker, client_id="", **kw):
        super().__init__(broker, client_id, clean_session=None, protocol=mqtt.MQTTv5, **kw)

    def _on_connect(self, client, userdata, flags, reason, properties):
        self.connack = (flags.get("session present", 0), reason.value)
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self.suback_evt:
            self.subacks[mid] = [rc.value for rc in reason_codes]
            self.suback_evt.notify_all()


def test_paho_v5_properties_round_trip(broker):
    b = broker()
    with Paho5(b, "paho5-sub") as sub, Paho5(b, "paho5-pub") as pub:
        assert sub.subscribe("paho5/#", 1) == [1]
        pr = Properties(PacketTypes.PUBLISH)
        pr.UserProperty = [("k", "v1"), ("k", "v2"), ("a", "b")]
        pr.ContentType = "text/plain"
        pr.ResponseTopic = "paho5/reply"
        pr.CorrelationData = b"\x01\x02"
        pr.PayloadFormatIndicator = 1
        info = pub.client.publish("paho5/t", "caf\u00e9", 1, False, properties=pr)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published()
        m = sub.get()
        assert (m.topic, m.payload, m.qos) == ("paho5/t", "caf\u00e9".encode(), 1)
        assert m.properties.UserProperty == [("k", "v1"), ("k", "v2"), ("a", "b")]
        assert m.properties.ContentType == "text/plain"
        assert m.properties.ResponseTopic == "paho5/reply"
        assert m.properties.CorrelationData == b"\x01\x02"
        assert m.properties.PayloadFormatIndicator == 1


# ------------------------------------------------------------ 3.1.1 <-> 5.0

def test_v311_subscriber_gets_v5_message_without_properties(broker):
    b = broker()
    old = b.raw_connected("old-sub")
    assert old.subscribe(1, [("mix/#", 1)]).codes == [1]
    pub = v5(b, "new-pub")
    pub.publish("mix/a", b"payload", qos=1, pid=1, props=FULL_PROPS)
    [p] = receive_publishes(old, 1, quiet=0.3)
    # a 3.1.1 PUBLISH has no property block: the payload is exactly the bytes
    assert (p.topic, p.payload, p.qos) == ("mix/a", b"payload", 1)


def test_v5_subscriber_gets_v311_message(broker):
    b = broker()
    sub = v5(b, "new-sub")
    assert sub.subscribe(1, [("mix/#", sub_opts(1))]).codes == [1]
    old = b.raw_connected("old-pub")
    old.publish("mix/b", b"from 3.1.1", qos=1, pid=1)
    [p] = receive_publishes(sub, 1, quiet=0.3)
    assert (p.topic, p.payload, p.qos) == ("mix/b", b"from 3.1.1", 1)
    assert len(p.props) == 0, p


# ------------------------------------------------------------ message expiry

def test_message_expiry_on_live_delivery(broker):
    b = broker()
    sub = v5(b, "exp-live")
    assert sub.subscribe(1, [("exp/#", sub_opts(1))]).codes == [1]
    pub = v5(b, "exp-pub")
    pub.publish("exp/a", b"x", qos=1, pid=1, props=[(MESSAGE_EXPIRY_INTERVAL, 10)])
    pub.publish("exp/b", b"y", qos=1, pid=2)
    p, q = receive_publishes(sub, 2, quiet=0.3)
    assert 9 <= p.props.get(MESSAGE_EXPIRY_INTERVAL) <= 10, p
    assert MESSAGE_EXPIRY_INTERVAL not in q.props, q


def test_message_expiry_decremented_while_queued(broker):
    b = broker()
    sess = [(SESSION_EXPIRY_INTERVAL, 60)]
    sub = v5(b, "exp-q", clean_start=False, props=sess)
    assert sub.subscribe(1, [("expq/#", sub_opts(1))]).codes == [1]
    sub.disconnect()
    pub = v5(b, "exp-q-pub")
    pub.publish("expq/a", b"ten", qos=1, pid=1, props=[(MESSAGE_EXPIRY_INTERVAL, 10)])
    time.sleep(2.0)
    sub = v5(b, "exp-q", clean_start=False, props=sess)
    [p] = receive_publishes(sub, 1, quiet=0.3)
    assert p.payload == b"ten"
    # [MQTT-3.3.2-6]: the received value is the interval minus the time
    # the message waited in the server (2 s here)
    assert 5 <= p.props.get(MESSAGE_EXPIRY_INTERVAL) <= 8, p


def test_expired_messages_dropped_from_the_queue(broker):
    b = broker()
    sess = [(SESSION_EXPIRY_INTERVAL, 60)]
    sub = v5(b, "exp-drop", clean_start=False, props=sess)
    assert sub.subscribe(1, [("expd/#", sub_opts(1))]).codes == [1]
    sub.disconnect()
    pub = v5(b, "exp-drop-pub")
    pub.publish("expd/a", b"short", qos=1, pid=1, props=[(MESSAGE_EXPIRY_INTERVAL, 1)])
    pub.publish("expd/a", b"forever", qos=1, pid=2)
    pub.publish("expd/a", b"long", qos=1, pid=3, props=[(MESSAGE_EXPIRY_INTERVAL, 60)])
    time.sleep(2.5)
    sub = v5(b, "exp-drop", clean_start=False, props=sess)
    assert sub.connack.session_present == 1
    pubs = receive_publishes(sub, 2, quiet=0.5)
    assert [p.payload for p in pubs] == [b"forever", b"long"]


def test_expired_retained_message_not_sent(broker):
    b = broker()
    pub = v5(b, "exp-ret-pub")
    pub.publish("expr/short", b"s", qos=1, retain=True, pid=1, props=[(MESSAGE_EXPIRY_INTERVAL, 1)])
    pub.publish("expr/long", b"l", qos=1, retain=True, pid=2, props=[(MESSAGE_EXPIRY_INTERVAL, 30)])
    time.sleep(2.5)
    sub = v5(b, "exp-ret-sub")
    assert sub.subscribe(1, [("expr/#", sub_opts(1))]).codes == [1]
    pubs = receive_publishes(sub, 1, quiet=0.5)
    assert [(p.topic, p.retain) for p in pubs] == [("expr/long", 1)]
    assert 20 <= pubs[0].props.get(MESSAGE_EXPIRY_INTERVAL) <= 28, pubs[0]
    pub.publish("expr/long", b"", qos=1, retain=True, pid=3)


# ------------------------------------------------------------ payload format indicator

def test_payload_format_indicator_valid_utf8_delivered(broker):
    b = broker()
    sub = v5(b, "pfi-sub")
    assert sub.subscribe(1, [("pfi/#", sub_opts(1))]).codes == [1]
    pub = v5(b, "pfi-pub")
    text = "h\u00e9llo \u2603 \U0001f600".encode()
    assert pub.publish("pfi/a", text, qos=1, pid=1,
                       props=[(PAYLOAD_FORMAT_INDICATOR, 1)]).rc == 0
    [p] = receive_publishes(sub, 1, quiet=0.3)
    assert p.payload == text and p.props.get(PAYLOAD_FORMAT_INDICATOR) == 1


# antenna_only: mosquitto 2.0.11 does not check the payload against the
# Payload Format Indicator (it forwards the message; the spec lets a server
# check it [MQTT-3.3.2-4] and answer 0x99 Payload format invalid).
@pytest.mark.antenna_only
def test_payload_format_invalid_qos1_puback_0x99(broker):
    b = broker()
    sub = v5(b, "pfi-bad-sub")
    assert sub.subscribe(1, [("pfib/#", sub_opts(1))]).codes == [1]
    pub = v5(b, "pfi-bad-pub")
    ack = pub.publish("pfib/a", b"bad \xff\xfe utf8", qos=1, pid=1,
                      props=[(PAYLOAD_FORMAT_INDICATOR, 1)])
    assert ack.rc == 0x99, ack
    assert receive_publishes(sub, 0, quiet=0.5) == []
    assert pub.is_open()
    # the same bytes with indicator 0 (unspecified bytes) are fine
    assert pub.publish("pfib/a", b"bad \xff\xfe utf8", qos=1, pid=2,
                       props=[(PAYLOAD_FORMAT_INDICATOR, 0)]).rc == 0
    assert [p.payload for p in receive_publishes(sub, 1)] == [b"bad \xff\xfe utf8"]


# antenna_only: as above (mosquitto does not check); for QoS 0 there is no
# acknowledgement, so antenna closes with DISCONNECT 0x99.
@pytest.mark.antenna_only
def test_payload_format_invalid_qos0_disconnect_0x99(broker):
    b = broker()
    sub = v5(b, "pfi0-sub")
    assert sub.subscribe(1, [("pfi0/#", sub_opts(1))]).codes == [1]
    pub = v5(b, "pfi0-pub")
    pub.send(publish5("pfi0/a", b"\xc0\xaf", qos=0, props=[(PAYLOAD_FORMAT_INDICATOR, 1)]))
    pub.expect_disconnect(0x99)
    assert receive_publishes(sub, 0, quiet=0.5) == []
