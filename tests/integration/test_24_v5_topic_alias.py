"""MQTT 5.0 topic aliases, client to broker (the broker resolves them and
rejects bad ones) and broker to client (only within the client's Topic
Alias Maximum, and always resolvable)."""

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqttraw import (
    PUBLISH, SESSION_EXPIRY_INTERVAL, TOPIC_ALIAS, TOPIC_ALIAS_MAXIMUM, USER_PROPERTY, connect_v5, expect_close5,
    publish5, sub_opts)
from helpers import TIMEOUT, Paho, receive_publishes


def v5(b, cid="", **kw):
    return connect_v5(b.host, b.port, cid, **kw)


# ------------------------------------------------------------ client -> broker

def test_client_alias_resolved_for_subscribers(broker):
    b = broker(mqtt={"topic_alias_max": 3})
    sub5 = v5(b, "ta-sub5")
    assert sub5.subscribe(1, [("ta/#", sub_opts(1))]).codes == [1]
    sub3 = b.raw_connected("ta-sub311")
    assert sub3.subscribe(1, [("ta/#", 1)]).codes == [1]
    pub = v5(b, "ta-pub")
    assert pub.connack.props.get(TOPIC_ALIAS_MAXIMUM) == 3
    steps = [("ta/one", 1, b"1"), ("", 1, b"2"), ("ta/two", 3, b"3"), ("", 3, b"4"),
             ("", 1, b"5"), ("ta/three", 1, b"6"), ("", 1, b"7"), ("", 3, b"8")]
    for i, (topic, alias, payload) in enumerate(steps):
        ack = pub.publish(topic, payload, qos=1, pid=i + 1,
                          props=[(TOPIC_ALIAS, alias), (USER_PROPERTY, ("n", str(i)))])
        assert ack.rc == 0x00, ack
    want = [("ta/one", b"1"), ("ta/one", b"2"), ("ta/two", b"3"), ("ta/two", b"4"),
            ("ta/one", b"5"), ("ta/three", b"6"), ("ta/three", b"7"), ("ta/two", b"8")]
    got5 = receive_publishes(sub5, 8, quiet=0.3)
    assert [(p.topic, p.payload) for p in got5] == want
    # the subscriber set no Topic Alias Maximum: no alias may reach it
    assert all(TOPIC_ALIAS not in p.props for p in got5)
    assert [p.props.all(USER_PROPERTY) for p in got5] == [[("n", str(i))] for i in range(8)]
    got3 = receive_publishes(sub3, 8, quiet=0.3)
    assert [(p.topic, p.payload) for p in got3] == want


def test_client_alias_with_qos0_and_retain(broker):
    b = broker()
    pub = v5(b, "ta-ret")
    pub.publish("ta/ret", b"r", qos=0, retain=True, props=[(TOPIC_ALIAS, 2)])
    pub.publish("", b"r2", qos=1, retain=True, pid=2, props=[(TOPIC_ALIAS, 2)])
    sub = v5(b, "ta-ret-sub")
    assert sub.subscribe(1, [("ta/#", sub_opts(1))]).codes == [1]
    [p] = receive_publishes(sub, 1, quiet=0.3)
    assert (p.topic, p.payload, p.retain) == ("ta/ret", b"r2", 1)
    pub.publish("ta/ret", b"", qos=1, retain=True, pid=3)


@pytest.mark.parametrize("alias_max,alias", [(3, 4), (10, 11), (0, 1)],
                         ids=["above-3", "above-10", "none-allowed"])
def test_alias_above_maximum_disconnect_0x94(broker, alias_max, alias):
    b = broker(mqtt={"topic_alias_max": alias_max})
    by = v5(b, "ta-by")
    assert by.subscribe(1, [("#", sub_opts(1))]).codes == [1]
    c = v5(b, "ta-big")
    assert c.connack.props.get(TOPIC_ALIAS_MAXIMUM, 0) == alias_max
    c.send(publish5("ta/x", b"x", qos=1, pid=1, props=[(TOPIC_ALIAS, alias)]))
    c.expect_disconnect(0x94)
    assert receive_publishes(by, 0, quiet=0.3) == []


def test_alias_zero_closes_connection(broker):
    # [MQTT-3.3.2-8]: a Topic Alias of 0 is not permitted.  mosquitto
    # answers 0x81; antenna's codec reports an out-of-range value as a
    # Protocol Error (0x82); 0x94 (Topic Alias invalid) would do as well.
    b = broker()
    c = v5(b, "ta-zero")
    c.send(publish5("ta/x", b"x", qos=0, props=[(TOPIC_ALIAS, 0)]))
    expect_close5(c, (0x81, 0x82, 0x94))
    b.assert_serving()


@pytest.mark.parametrize("props", [[(TOPIC_ALIAS, 2)], None], ids=["unknown-alias", "no-alias"])
def test_empty_topic_without_known_alias_disconnect_0x82(broker, props):
    b = broker()
    c = v5(b, "ta-unknown")
    c.publish("ta/x", b"x", qos=1, pid=1, props=[(TOPIC_ALIAS, 1)])   # alias 1 only
    c.send(publish5("", b"x", qos=1, pid=2, props=props))
    c.expect_disconnect(0x82)


def test_aliases_do_not_survive_the_connection(broker):
    b = broker()
    props = [(SESSION_EXPIRY_INTERVAL, 60)]
    c = v5(b, "ta-conn", clean_start=False, props=props)
    c.publish("ta/x", b"x", qos=1, pid=1, props=[(TOPIC_ALIAS, 1)])
    c.disconnect()
    c = v5(b, "ta-conn", clean_start=False, props=props)
    assert c.connack.session_present == 1
    c.send(publish5("", b"x", qos=1, pid=2, props=[(TOPIC_ALIAS, 1)]))
    c.expect_disconnect(0x82)


def test_aliases_are_per_connection(broker):
    b = broker()
    a = v5(b, "ta-a")
    a.publish("ta/a", b"x", qos=1, pid=1, props=[(TOPIC_ALIAS, 1)])
    other = v5(b, "ta-b")
    other.send(publish5("", b"x", qos=1, pid=2, props=[(TOPIC_ALIAS, 1)]))
    other.expect_disconnect(0x82)
    assert a.is_open()


# ------------------------------------------------------------ broker -> client

TOPICS = ["tb/alpha", "tb/beta", "tb/gamma"]


def publish_round(b, n=9):
    pub = v5(b, "tb-pub")
    sent = []
    for i in range(n):
        t = TOPICS[i % 3] if i < 6 else TOPICS[0]
        pub.publish(t, b"m%d" % i, qos=1, pid=i + 1)
        sent.append((t, b"m%d" % i))
    return sent


def resolve(pubs, maximum):
    """Resolve broker-sent aliases as a client must; check the rules."""
    aliases = {}
    out = []
    for p in pubs:
        alias = p.props.get(TOPIC_ALIAS)
        if alias is None:
            assert p.topic, p
            out.append((p.topic, p.payload))
            continue
        assert 1 <= alias <= maximum, "alias %d outside 1..%d: %r" % (alias, maximum, p)
        assert p.props.all(TOPIC_ALIAS) == [alias], p
        if p.topic:
            aliases[alias] = p.topic
        else:
            assert alias in aliases, "alias %d used before it was set: %r" % (alias, p)
        out.append((aliases[alias], p.payload))
    return out


def test_no_alias_sent_to_client_without_topic_alias_maximum(broker):
    # [MQTT-3.1.2-27]: Topic Alias Maximum absent (0) -> the server MUST NOT
    # send any Topic Alias
    b = broker()
    sub = v5(b, "tb-none")
    assert sub.subscribe(1, [("tb/#", sub_opts(1))]).codes == [1]
    sent = publish_round(b)
    got = receive_publishes(sub, len(sent), quiet=0.3)
    assert [(p.topic, p.payload) for p in got] == sent
    assert all(TOPIC_ALIAS not in p.props for p in got)


@pytest.mark.parametrize("maximum", [1, 5])
def test_broker_aliases_within_client_maximum_and_resolvable(broker, maximum):
    b = broker()
    sub = v5(b, "tb-max%d" % maximum, props=[(TOPIC_ALIAS_MAXIMUM, maximum)])
    assert sub.subscribe(1, [("tb/#", sub_opts(1))]).codes == [1]
    sent = publish_round(b)
    got = receive_publishes(sub, len(sent), quiet=0.3)
    assert resolve(got, maximum) == sent


# antenna_only: mosquitto 2.0.11 never sends topic aliases to clients; using
# them is a MAY of the spec, antenna does it.
@pytest.mark.antenna_only
def test_broker_uses_aliases_after_first_message(broker):
    b = broker()
    sub = v5(b, "tb-use", props=[(TOPIC_ALIAS_MAXIMUM, 5)])
    assert sub.subscribe(1, [("tb/#", sub_opts(1))]).codes == [1]
    sent = publish_round(b)
    got = receive_publishes(sub, len(sent), quiet=0.3)
    assert resolve(got, 5) == sent
    first = {}
    for p in got:
        assert p.type == PUBLISH and TOPIC_ALIAS in p.props, p
        topic_seen = p.props.get(TOPIC_ALIAS) in first
        if not topic_seen:
            assert p.topic, p                          # first use: topic + alias
            first[p.props.get(TOPIC_ALIAS)] = p.topic
        else:
            assert p.topic == "", p                    # later: alias only
    assert sorted(first.values()) == sorted(TOPICS)
    assert len(set(first)) == 3


class Paho5(Paho):
    """helpers.Paho speaking MQTT 5 with CONNECT properties."""

    def __init__(self, broker, client_id="", connect_props=None, **kw):
        super().__init__(broker, client_id, clean_session=None, protocol=mqtt.MQTTv5, **kw)
        self.connect_props = connect_props

    def _on_connect(self, client, userdata, flags, reason, properties):
        self.connack = (flags.get("session present", 0), reason.value)
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self.suback_evt:
            self.subacks[mid] = [rc.value for rc in reason_codes]
            self.suback_evt.notify_all()

    def connect(self, timeout=TIMEOUT):
        self.client.connect(self.host, self.port, self.keepalive,
                            properties=self.connect_props)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            raise AssertionError("paho client got no CONNACK within %.1fs" % timeout)
        assert self.connack[1] == 0, "CONNACK %r" % (self.connack,)
        return self


def test_paho_client_with_topic_alias_maximum(broker):
    """paho 1.6.1 does not resolve incoming topic aliases itself: the test
    does, from msg.properties.TopicAlias, as an application would."""
    b = broker()
    cp = Properties(PacketTypes.CONNECT)
    cp.TopicAliasMaximum = 5
    with Paho5(b, "tb-paho", connect_props=cp) as sub:
        assert sub.subscribe("tb/#", 1) == [1]
        sent = publish_round(b)
        msgs = sub.get_n(len(sent))
        sub.expect_nothing(0.3)
    aliases, got = {}, []
    for m in msgs:
        alias = getattr(m.properties, "TopicAlias", None)
        topic = m.topic
        if alias is not None:
            assert 1 <= alias <= 5
            if topic:
                aliases[alias] = topic
            topic = aliases[alias]
        got.append((topic, m.payload))
    assert got == sent
