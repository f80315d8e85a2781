"""Malformed packets and protocol violations: the offending connection is
closed, nothing is delivered, and the broker keeps serving everyone else."""

import re
import time

import pytest

import mqttraw
from mqttraw import connect, mqtt_str, packet, publish, subscribe, unsubscribe, varint

# (id, bytes sent after a successful CONNECT)
AFTER_CONNECT = [
    ("remaining-length-5-bytes", b"\x30\xff\xff\xff\xff\x7f"),
    # QoS 3: topic "m/t", packet id 1, payload "x"
    ("publish-qos3", b"\x36" + varint(8) + mqtt_str("m/t") + b"\x00\x01x"),
    ("publish-wildcard-plus", publish("m/+", b"x")),
    ("publish-wildcard-hash", publish("m/#", b"x")),
    ("publish-empty-topic", publish("", b"x")),
    ("publish-topic-invalid-utf8", publish(b"m/\xff\xfe", b"x")),
    ("publish-topic-overlong-utf8", publish(b"m/\xc0\xaf", b"x")),
    ("publish-topic-surrogate", publish(b"m/\xed\xa0\x80", b"x")),
    ("publish-topic-nul", publish(b"m/a\x00b", b"x")),
    ("publish-topic-length-overrun", packet(0x30, b"\x00\x10m/t")),
    ("publish-qos1-pid-0", publish("m/t", b"x", qos=1, pid=0)),
    ("publish-qos2-pid-0", publish("m/t", b"x", qos=2, pid=0)),
    ("subscribe-flags-0", subscribe(1, [("m/t", 0)], first_byte=0x80)),
    ("subscribe-flags-3", subscribe(1, [("m/t", 0)], first_byte=0x83)),
    ("subscribe-pid-0", subscribe(0, [("m/t", 0)])),
    ("subscribe-no-filters", packet(0x82, b"\x00\x01")),
    ("subscribe-qos-3", subscribe(1, [("m/t", 3)])),
    ("subscribe-filter-invalid-utf8", subscribe(1, [(b"m/\xff", 0)])),
    ("unsubscribe-flags-0", unsubscribe(1, ["m/t"], first_byte=0xA0)),
    ("unsubscribe-pid-0", unsubscribe(0, ["m/t"])),
    ("unsubscribe-no-filters", packet(0xA2, b"\x00\x01")),
    ("pubrel-flags-0", packet(0x60, b"\x00\x01")),
    ("puback-short", packet(0x40, b"\x01")),
    ("disconnect-flags", b"\xe1\x00"),
    ("reserved-type-0", b"\x00\x00"),
    ("reserved-type-15", b"\xf0\x00"),
    ("connack-from-client", b"\x20\x02\x00\x00"),
    ("garbage", b"\xde\xad\xbe\xef" * 8),
]

BEFORE_CONNECT = [
    ("remaining-length-5-bytes", b"\x10\xff\xff\xff\xff\x7f"),
    ("garbage-http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("garbage-binary", bytes(range(256))),
    ("reserved-type-0", b"\x00\x00"),
    ("reserved-type-15", b"\xf0\x00"),
    ("connect-client-id-invalid-utf8", connect(b"\xff\xfe")),
    ("connect-client-id-nul", connect(b"a\x00b")),
    ("connect-truncated-body", packet(0x10, b"\x00\x04MQTT\x04")),
    ("connect-bad-flags-byte", b"\x11" + connect("x")[1:]),
]


def bystander(b):
    c = b.raw_connected("bystander")
    assert c.subscribe(1, [("#", 1)]).codes == [1]
    return c


def assert_nothing_delivered(by):
    got = mqttraw_drain(by)
    assert got == [], "malformed packet leaked: %r" % got


def mqttraw_drain(c, quiet=0.3):
    out = []
    while True:
        try:
            out.append(c.recv(quiet))
        except mqttraw.Timeout:
            return out


@pytest.mark.parametrize("data", [d for _, d in AFTER_CONNECT], ids=[i for i, _ in AFTER_CONNECT])
def test_malformed_after_connect_closes_connection(broker, data):
    b = broker()
    by = bystander(b)
    with b.raw() as c:
        assert c.connect("offender").rc == 0
        c.try_send(data)
        got = c.wait_closed(3)
        assert all(p.type != mqttraw.SUBACK and p.type != mqttraw.UNSUBACK for p in got), got
    assert_nothing_delivered(by)
    assert by.is_open(), "an unrelated client was disconnected"
    b.assert_serving()


@pytest.mark.parametrize("data", [d for _, d in BEFORE_CONNECT], ids=[i for i, _ in BEFORE_CONNECT])
def test_malformed_before_connect_closes_connection(broker, data):
    b = broker()
    by = bystander(b)
    with b.raw() as c:
        c.try_send(data)
        got = c.wait_closed(3)
        assert all(p.type != mqttraw.CONNACK or p.rc != 0 for p in got), got
    assert by.is_open()
    b.assert_serving()


def test_packet_larger_than_max_packet_size_closes(broker):
    b = broker(mqtt={"max_packet_size": 1024})
    by = bystander(b)
    with b.raw() as c:
        assert c.connect("small-ok").rc == 0
        c.publish("m/size", b"x" * 900, qos=1, pid=1)       # under the limit
        assert c.is_open()
        c.try_send(publish("m/size", b"y" * 2000, qos=1, pid=2))
        got = c.wait_closed(3)
        assert all(p.type != mqttraw.PUBACK or p.pid != 2 for p in got), got
    got = mqttraw_drain(by)
    assert [(p.topic, len(p.payload)) for p in got] == [("m/size", 900)]
    b.assert_serving()


def test_oversized_remaining_length_closes_before_body_arrives(broker):
    """The header alone announces 100000 bytes: close at once, don't buffer."""
    b = broker(mqtt={"max_packet_size": 1024})
    with b.raw() as c:
        assert c.connect("liar").rc == 0
        c.send(b"\x30" + varint(100000))
        c.wait_closed(3)
    b.assert_serving()


def test_oversized_connect_closes(broker):
    b = broker(mqtt={"max_packet_size": 1024})
    with b.raw() as c:
        c.try_send(connect("big", will=("w/t", b"z" * 4000, 0, False)))
        got = c.wait_closed(3)
        assert all(p.type != mqttraw.CONNACK or p.rc != 0 for p in got), got
    b.assert_serving()


def test_many_malformed_clients_in_a_row(broker):
    b = broker()
    by = bystander(b)
    for i, (_, data) in enumerate(AFTER_CONNECT * 2):
        with b.raw() as c:
            assert c.connect("bad-%d" % i).rc == 0
            c.try_send(data)
            c.wait_closed(3)
    assert by.is_open()
    b.assert_serving()


def test_half_packet_then_close_is_harmless(broker):
    b = broker()
    for cut in (1, 2, 5, 9):
        with b.raw() as c:
            assert c.connect("half").rc == 0
            c.send(publish("m/half", b"payload", qos=1, pid=1)[:cut])
    with b.raw() as c:
        c.send(connect("half-connect")[:7])
    time.sleep(0.2)
    b.assert_serving()


# antenna_only: the log wording is antenna's.
@pytest.mark.antenna_only
def test_protocol_error_logged_with_client_id(broker):
    b = broker()
    with b.raw() as c:
        assert c.connect("log-me-7f3a").rc == 0
        c.send(publish("m/+", b"x"))
        c.wait_closed(3)
    b.wait_log(r"log-me-7f3a.*(malformed|protocol error)|(malformed|protocol error).*log-me-7f3a",
               flags=re.I)


@pytest.mark.antenna_only
def test_malformed_before_connect_logged_with_peer_address(broker):
    b = broker()
    with b.raw() as c:
        peer_port = c.sock.getsockname()[1]
        c.send(b"\x10\xff\xff\xff\xff\x7f")
        c.wait_closed(3)
    b.wait_log(r"(?=.*127\.0\.0\.1\D*%d\b)(?=.*(malformed|protocol error))" % peer_port, flags=re.I)
