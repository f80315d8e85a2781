"""MQTT 5.0 CONNECT / CONNACK: the properties the broker advertises, session
present, assigned client identifiers and the CONNACK reason codes."""

import pytest

import mqttraw
from mqttraw import (
    ASSIGNED_CLIENT_ID, AUTHENTICATION_METHOD, CONNACK, MAXIMUM_PACKET_SIZE, MAXIMUM_QOS,
    REASON_STRING, RECEIVE_MAXIMUM, REQUEST_PROBLEM_INFO, REQUEST_RESPONSE_INFO,
    RESPONSE_INFO, RETAIN_AVAILABLE, SERVER_KEEP_ALIVE, SERVER_REFERENCE,
    SESSION_EXPIRY_INTERVAL, SHARED_SUB_AVAILABLE, SUBSCRIPTION_ID_AVAILABLE,
    TOPIC_ALIAS_MAXIMUM, USER_PROPERTY, WILDCARD_SUB_AVAILABLE, RawClient5, connect5,
    connect_v5, expect_close5, sub_opts)
from helpers import drain


def v5(b, cid="", **kw):
    return connect_v5(b.host, b.port, cid, **kw)


# ------------------------------------------------------------ CONNACK properties

def test_connack_advertises_configured_limits(broker):
    b = broker(mqtt={"receive_maximum": 7, "max_packet_size": 5000, "topic_alias_max": 3})
    c = v5(b, "limits")
    ack = c.connack
    assert (ack.session_present, ack.rc, ack.ack_flags) == (0, 0, 0)
    pr = ack.props
    assert pr.get(RECEIVE_MAXIMUM) == 7
    assert pr.get(MAXIMUM_PACKET_SIZE) == 5000
    assert pr.get(TOPIC_ALIAS_MAXIMUM) == 3
    # everything is supported and the keepalive (60) is not capped: the
    # properties whose absence means "available" / "as requested" are absent
    for absent in (MAXIMUM_QOS, RETAIN_AVAILABLE, WILDCARD_SUB_AVAILABLE,
                   SUBSCRIPTION_ID_AVAILABLE, SHARED_SUB_AVAILABLE, SERVER_KEEP_ALIVE,
                   ASSIGNED_CLIENT_ID):
        assert absent not in pr, "unexpected property 0x%02x in %r" % (absent, ack)
    for pid in set(pr.ids()) - {USER_PROPERTY, REASON_STRING}:
        assert pr.ids().count(pid) == 1, "property 0x%02x repeated: %r" % (pid, ack)


@pytest.mark.parametrize("max_qos", [0, 1])
def test_connack_maximum_qos_and_retain_unavailable(broker, max_qos):
    b = broker(mqtt={"max_qos": max_qos, "retain_available": False})
    ack = v5(b, "caps").connack
    assert ack.props.get(MAXIMUM_QOS) == max_qos
    assert ack.props.get(RETAIN_AVAILABLE) == 0


def test_connack_topic_alias_maximum_zero_is_omitted(broker):
    # 0 is the default of Topic Alias Maximum: "no aliases" may be said by
    # leaving the property out, or by sending 0
    b = broker(mqtt={"topic_alias_max": 0})
    ack = v5(b, "noalias").connack
    assert ack.props.get(TOPIC_ALIAS_MAXIMUM, 0) == 0


# antenna_only: mosquitto 2.0 cannot switch these features off.
@pytest.mark.antenna_only
def test_connack_feature_flags_when_disabled(broker):
    b = broker(mqtt={"wildcard_subscriptions": False, "subscription_identifiers": False,
                     "shared_subscriptions": False})
    pr = v5(b, "flags").connack.props
    assert pr.get(WILDCARD_SUB_AVAILABLE) == 0
    assert pr.get(SUBSCRIPTION_ID_AVAILABLE) == 0
    assert pr.get(SHARED_SUB_AVAILABLE) == 0


def test_server_keep_alive_sent_only_when_capped(broker):
    b = broker(mqtt={"max_keepalive": 30})
    assert v5(b, "ka100", keepalive=100).connack.props.get(SERVER_KEEP_ALIVE) == 30
    assert v5(b, "ka31", keepalive=31).connack.props.get(SERVER_KEEP_ALIVE) == 30
    assert SERVER_KEEP_ALIVE not in v5(b, "ka20", keepalive=20).connack.props


# ------------------------------------------------------------ client identifiers

@pytest.mark.parametrize("clean_start", [True, False])
def test_assigned_client_identifier_for_empty_id(broker, clean_start):
    b = broker()
    a = v5(b, "", clean_start=clean_start)
    c = v5(b, "", clean_start=clean_start)
    ida = a.connack.props.get(ASSIGNED_CLIENT_ID)
    idc = c.connack.props.get(ASSIGNED_CLIENT_ID)
    assert isinstance(ida, str) and ida, a.connack
    assert isinstance(idc, str) and idc, c.connack
    assert ida != idc
    assert a.connack.session_present == 0
    assert a.is_open() and c.is_open()


def test_assigned_client_identifier_names_a_resumable_session(broker):
    b = broker()
    a = v5(b, "", clean_start=False, props=[(SESSION_EXPIRY_INTERVAL, 60)])
    cid = a.connack.props.get(ASSIGNED_CLIENT_ID)
    assert cid
    assert a.subscribe(1, [("assigned/t", 1)]).codes == [1]
    a.disconnect()
    again = v5(b, cid, clean_start=False, props=[(SESSION_EXPIRY_INTERVAL, 60)])
    assert again.connack.session_present == 1
    assert ASSIGNED_CLIENT_ID not in again.connack.props
    pub = v5(b, "assigned-pub")
    assert pub.publish("assigned/t", b"kept", qos=1, pid=3).rc == 0
    p = again.recv_publish()
    assert (p.topic, p.payload) == ("assigned/t", b"kept")


def test_session_present_flag(broker):
    b = broker()
    props = [(SESSION_EXPIRY_INTERVAL, 60)]
    c = v5(b, "sp", clean_start=False, props=props)
    assert c.connack.session_present == 0
    c.disconnect()
    c = v5(b, "sp", clean_start=False, props=props)
    assert c.connack.session_present == 1
    c.disconnect()
    c = v5(b, "sp", clean_start=True, props=props)
    assert c.connack.session_present == 0


# ------------------------------------------------------------ CONNACK reason codes

def test_unsupported_protocol_level_is_refused(broker):
    # [MQTT-3.1.2-2]: the server MAY answer CONNACK 0x84 and MUST close.
    # mosquitto 2.0.11 and antenna both answer with the 3.1.1 return code
    # 0x01 (in the 3.1.1 CONNACK layout, which a client of any level can
    # read); the 5.0 code 0x84 is the other acceptable answer.
    b = broker()
    c = RawClient5(b.host, b.port)
    c.send(connect5("lvl6", level=6))
    got = c.wait_closed(3)
    assert len(got) <= 1, got
    if got:
        assert got[0].type == CONNACK and got[0].rc in (0x01, 0x84), got
    b.assert_serving()


def test_client_identifier_not_valid_utf8_is_refused(broker):
    # antenna treats an ill-formed UTF-8 client id as a malformed packet
    # (0x81); 0x85 (Client Identifier not valid) is the other answer allowed
    b = broker()
    c = RawClient5(b.host, b.port)
    c.send(connect5(b"bad\xff\xfeid"))
    expect_close5(c, (0x81, 0x85))
    b.assert_serving()


def test_bad_authentication_method(broker):
    b = broker()
    c = RawClient5(b.host, b.port)
    c.send(connect5("scram", props=[(AUTHENTICATION_METHOD, "SCRAM-SHA-1")]))
    got = c.wait_closed(3)
    assert [(p.type, p.rc) for p in got] == [(CONNACK, 0x8C)], got
    assert got[0].session_present == 0


# antenna_only: mosquitto 2.0 has no server_reference setting.
@pytest.mark.antenna_only
def test_server_moved_with_server_reference(broker):
    b = broker(mqtt={"server_reference": "other.example.net:1884"})
    for cid in ("moved", ""):
        c = RawClient5(b.host, b.port)
        c.send(connect5(cid))
        got = c.wait_closed(3)
        assert [(p.type, p.rc) for p in got] == [(CONNACK, 0x9D)], got
        assert got[0].props.get(SERVER_REFERENCE) == "other.example.net:1884"


def test_will_qos_above_maximum_qos_is_refused(broker):
    # [MQTT-3.2.2-12]: a Will QoS the server does not support -> 0x9B
    b = broker(mqtt={"max_qos": 1})
    c = RawClient5(b.host, b.port)
    ack = c.connect("wq", will=("will/wq", b"x", 2, False))
    assert ack.rc == 0x9B, ack
    c.wait_closed(3)


def test_will_retain_without_retain_available_is_refused(broker):
    # [MQTT-3.2.2-13]: Will Retain 1 while Retain Available is 0 -> 0x9A
    b = broker(mqtt={"retain_available": False})
    c = RawClient5(b.host, b.port)
    ack = c.connect("wr", will=("will/wr", b"x", 0, True))
    assert ack.rc == 0x9A, ack
    c.wait_closed(3)


# ------------------------------------------------------------ problem / response information

def test_request_problem_information_0_suppresses_reason_strings(broker):
    """With Request Problem Information 0 the server may send a Reason
    String or User Property only on PUBLISH, CONNACK and DISCONNECT
    [MQTT-3.1.2-29]: drive it through error acks of every other kind."""
    b = broker()
    c = v5(b, "rpi0", props=[(REQUEST_PROBLEM_INFO, 0)])
    acks = [
        c.publish("rpi/nobody", b"x", qos=1, pid=1),       # PUBACK 0x10
        c.publish("rpi/nobody", b"x", qos=2, pid=2),       # PUBREC
        c.unsubscribe(3, ["rpi/never"]),                    # UNSUBACK 0x11
        c.subscribe(4, [("rpi/a", 2), ("rpi/b", 1)]),      # SUBACK
    ]
    c.send(mqttraw.pubrel5(0x4242))                         # PUBCOMP (unknown id)
    acks.append(c.wait_for(lambda p: p.type == mqttraw.PUBCOMP, 3, "PUBCOMP"))
    c.send(mqttraw.pubrec5(0x4343))                         # PUBREL (unknown id)
    acks.append(c.wait_for(lambda p: p.type == mqttraw.PUBREL, 3, "PUBREL"))
    assert acks[0].rc == 0x10 and acks[1].rc in (0x00, 0x10)
    assert acks[2].codes == [0x11] and acks[3].codes == [2, 1]
    for a in acks:
        assert REASON_STRING not in a.props and USER_PROPERTY not in a.props, a
    assert c.is_open()


def test_request_response_information_is_accepted(broker):
    b = broker()
    c = v5(b, "rri", props=[(REQUEST_RESPONSE_INFO, 1)])
    info = c.connack.props.get(RESPONSE_INFO)
    assert info is None or isinstance(info, str)
    # the connection is fully usable
    assert c.subscribe(1, [("rri/t", sub_opts(1))]).codes == [1]
    c.publish("rri/t", b"hello", qos=1, pid=2)
    p = c.recv_publish()
    assert (p.topic, p.payload) == ("rri/t", b"hello")
    c.send(mqttraw.puback(p.pid))
    assert drain(c, quiet=0.3) == []
