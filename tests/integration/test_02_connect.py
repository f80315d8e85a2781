"""CONNECT / CONNACK as a client sees them (raw sockets)."""

import time

import pytest

import mqttraw
from mqttraw import CONNACK, connect


def connack_bytes_ok(c):
    """The CONNACK must be exactly 20 02 00 00 for a new clean session."""
    p = c.recv_type(CONNACK)
    assert p.first == 0x20 and p.body == b"\x00\x00", p
    return p


def test_connect_mqtt311_accepted(broker):
    b = broker()
    with b.raw() as c:
        c.send(connect("c311", level=4))
        connack_bytes_ok(c)
        assert c.is_open()


def test_connect_mqtt31_accepted(broker):
    b = broker()
    with b.raw() as c:
        c.send(connect("c31", proto_name="MQIsdp", level=3))
        connack_bytes_ok(c)
        assert c.is_open()


def test_mqtt31_and_mqtt311_clients_exchange_messages(broker):
    b = broker()
    with b.raw() as old, b.raw() as new:
        assert old.connect("old", proto_name="MQIsdp", level=3).rc == 0
        assert new.connect("new").rc == 0
        assert old.subscribe(1, [("mix/#", 1)]).codes == [1]
        new.publish("mix/a", b"from 3.1.1", qos=1, pid=3)
        p = old.recv_publish()
        assert (p.topic, p.payload, p.qos) == ("mix/a", b"from 3.1.1", 1)
        old.ack(p)


UNSUPPORTED = [
    pytest.param("MQTT", 6, id="MQTT-level-6"),
    pytest.param("MQTT", 3, id="MQTT-level-3"),
    pytest.param("MQIsdp", 4, id="MQIsdp-level-4"),
]


@pytest.mark.parametrize("name,level", UNSUPPORTED)
def test_unsupported_protocol_level_gets_rc1_then_close(broker, name, level):
    b = broker()
    with b.raw() as c:
        c.send(connect("lvl", proto_name=name, level=level))
        got = c.wait_closed(3)
        assert [(p.type, p.rc) for p in got] == [(CONNACK, 1)], got


def test_empty_client_id_with_clean_session_accepted(broker):
    b = broker()
    with b.raw() as c:
        ack = c.connect("", clean=True)
        assert (ack.session_present, ack.rc) == (0, 0)
        # and it is a working client
        assert c.subscribe(1, [("anon/t", 0)]).codes == [0]
        c.publish("anon/t", b"me")
        p = c.recv_publish()
        assert p.payload == b"me"


def test_two_empty_client_ids_are_distinct_clients(broker):
    b = broker()
    with b.raw() as c1, b.raw() as c2:
        assert c1.connect("").rc == 0
        assert c2.connect("").rc == 0
        # neither took the other over
        assert c1.is_open() and c2.is_open()


def test_empty_client_id_without_clean_session_rc2(broker):
    b = broker()
    with b.raw() as c:
        c.send(connect("", clean=False))
        got = c.wait_closed(3)
        assert [(p.type, p.rc) for p in got] == [(CONNACK, 2)], got


def test_mqtt31_empty_client_id_rc2(broker):
    b = broker()
    with b.raw() as c:
        c.send(connect("", proto_name="MQIsdp", level=3))
        got = c.wait_closed(3)
        assert [(p.type, p.rc) for p in got] == [(CONNACK, 2)], got


def test_mqtt31_client_id_of_23_chars_accepted(broker):
    b = broker()
    with b.raw() as c:
        assert c.connect("x" * 23, proto_name="MQIsdp", level=3).rc == 0


# antenna_only: MQTT 3.1 limits client ids to 23 characters; mosquitto 2.0.11
# accepts longer ones (CONNACK 0).
@pytest.mark.antenna_only
def test_mqtt31_client_id_over_23_chars_rc2(broker):
    b = broker()
    with b.raw() as c:
        c.send(connect("x" * 24, proto_name="MQIsdp", level=3))
        got = c.wait_closed(3)
        assert [(p.type, p.rc) for p in got] == [(CONNACK, 2)], got


def test_second_connect_closes_connection(broker):
    b = broker()
    with b.raw() as c:
        assert c.connect("twice").rc == 0
        c.send(connect("twice-again"))
        got = c.wait_closed(3)
        assert got == [], "no second CONNACK: %r" % got
    b.assert_serving()


@pytest.mark.parametrize("first", [
    pytest.param(mqttraw.pingreq(), id="PINGREQ"),
    pytest.param(mqttraw.publish("a/b", b"x"), id="PUBLISH"),
    pytest.param(mqttraw.subscribe(1, [("a/b", 0)]), id="SUBSCRIBE"),
    pytest.param(mqttraw.disconnect(), id="DISCONNECT"),
])
def test_first_packet_not_connect_closes(broker, first):
    b = broker()
    with b.raw() as c:
        c.send(first)
        assert c.wait_closed(3) == []


# antenna_only: connect_timeout is antenna's setting; mosquitto 2.0.11 kept a
# socket that never sent CONNECT open for > 15 s in our runs.
@pytest.mark.antenna_only
def test_connect_timeout_closes_idle_socket(broker):
    b = broker(mqtt={"connect_timeout": 1})
    with b.raw() as c:
        t0 = time.monotonic()
        assert c.wait_closed(4) == []
        elapsed = time.monotonic() - t0
        assert 0.5 <= elapsed <= 3.0, elapsed
    with b.raw() as c:
        # a client that does send CONNECT in time is not affected
        assert c.connect("in-time").rc == 0
        time.sleep(1.5)
        assert c.is_open()


@pytest.mark.parametrize("flags", [
    pytest.param(0x03, id="reserved-bit"),
    pytest.param(0x02 | 0x08, id="will-qos-without-will-flag"),
    pytest.param(0x02 | 0x20, id="will-retain-without-will-flag"),
    pytest.param(0x02 | 0x04 | 0x18, id="will-qos-3"),
    pytest.param(0x02 | 0x40, id="password-without-username"),
])
def test_bad_connect_flags_close_without_connack(broker, flags):
    b = broker()
    with b.raw() as c:
        # a will topic/message is present whenever the will flag is set
        body = connect("flags", flags=flags,
                       will=("w/t", b"bye", 0, False) if flags & 0x04 else None)
        if flags & 0x40:
            body = connect("flags", password="pw", flags=flags)
        c.send(body)
        assert c.wait_closed(3) == []
    b.assert_serving()


def test_session_present_flag(broker):
    b = broker()
    # clean session: never present
    with b.raw() as c:
        assert (c.connect("sp", clean=True).session_present, ) == (0,)
        c.disconnect()
    # first persistent connect: nothing to resume
    with b.raw() as c:
        ack = c.connect("sp", clean=False)
        assert (ack.session_present, ack.rc) == (0, 0)
        c.subscribe(1, [("sp/t", 1)])
        c.disconnect()
    # resume
    with b.raw() as c:
        ack = c.connect("sp", clean=False)
        assert (ack.first, ack.session_present, ack.rc) == (0x20, 1, 0)
        c.disconnect()
    # clean session discards it, and says so
    with b.raw() as c:
        assert c.connect("sp", clean=True).session_present == 0
        c.disconnect()
    with b.raw() as c:
        assert c.connect("sp", clean=False).session_present == 0
        c.disconnect()


def test_username_and_password_accepted_with_anonymous_allowed(broker):
    b = broker()
    with b.raw() as c:
        assert c.connect("creds", username="alice", password="secret").rc == 0


def test_connect_with_will_and_credentials_split_across_writes(broker):
    """The CONNECT arrives one byte at a time: the broker must reassemble."""
    b = broker()
    data = connect("slow", will=("w/slow", b"bye", 1, False), username="u", password="p")
    with b.raw() as c:
        for i in range(len(data)):
            c.send(data[i:i + 1])
            time.sleep(0.002)
        ack = c.recv_type(CONNACK)
        assert ack.rc == 0


def test_many_clients_connect(broker):
    b = broker()
    clients = [b.raw() for _ in range(100)]
    try:
        for i, c in enumerate(clients):
            c.send(connect("many-%d" % i))
        for c in clients:
            assert c.recv_type(CONNACK).rc == 0
        for c in clients:
            assert c.is_open()
    finally:
        for c in clients:
            c.close()
