"""Will messages and keepalive."""

import time

import pytest

import mqttraw
from mqttraw import PINGRESP, connect, pingreq
from helpers import receive_publishes


def watcher(b, flt="will/#", qos=1, client="watcher"):
    w = b.raw_connected(client)
    assert w.subscribe(1, [(flt, qos)]).codes == [qos]
    return w


@pytest.mark.parametrize("will_qos", [0, 1, 2])
def test_will_published_on_socket_close_without_disconnect(broker, will_qos):
    b = broker()
    w = watcher(b, qos=2)
    c = b.raw()
    assert c.connect("mortal", will=("will/mortal", b"gone", will_qos, False)).rc == 0
    c.close()
    pubs = receive_publishes(w, 1, timeout=3, quiet=0.5)
    assert [(p.topic, p.payload, p.qos, p.retain) for p in pubs] == [
        ("will/mortal", b"gone", will_qos, 0)]


def test_will_not_published_after_disconnect(broker):
    b = broker()
    w = watcher(b)
    c = b.raw()
    assert c.connect("polite", will=("will/polite", b"gone", 1, False)).rc == 0
    c.send(mqttraw.disconnect())
    c.wait_closed(3)   # the broker closes after DISCONNECT
    c.close()
    assert receive_publishes(w, 0, quiet=1.5) == []


def test_will_with_retain_is_retained(broker):
    b = broker()
    c = b.raw()
    assert c.connect("ret", will=("will/ret", b"offline", 1, True)).rc == 0
    c.close()
    late = b.raw_connected("late")
    # the will is published asynchronously after the close: when it comes
    # after the SUBSCRIBE it arrives live (retain 0, [MQTT-3.3.1-9]); each
    # new SUBSCRIBE then sends the retained copy, with retain 1
    retained = []
    pid = 1
    deadline = time.monotonic() + 30
    while not retained and time.monotonic() < deadline:
        late.subscribe(pid, [("will/ret", 1)])
        pid += 1
        pubs = receive_publishes(late, 0, quiet=0.3)
        assert all((p.topic, p.payload) == ("will/ret", b"offline") for p in pubs), pubs
        retained = [p for p in pubs if p.retain]
    assert retained, "the will was not retained"


def test_will_published_on_protocol_error(broker):
    b = broker()
    w = watcher(b)
    c = b.raw()
    assert c.connect("broken", will=("will/broken", b"bad", 1, False)).rc == 0
    c.send(b"\x36\x05\x00\x01a\x00\x01")   # PUBLISH with QoS 3
    c.wait_closed(3)
    pubs = receive_publishes(w, 1, timeout=3, quiet=0.3)
    assert [(p.topic, p.payload) for p in pubs] == [("will/broken", b"bad")]


def test_will_from_mqtt31_client(broker):
    b = broker()
    w = watcher(b)
    c = b.raw()
    assert c.connect("old", proto_name="MQIsdp", level=3,
                     will=("will/old", b"31", 1, False)).rc == 0
    c.close()
    pubs = receive_publishes(w, 1, timeout=3)
    assert [(p.topic, p.payload) for p in pubs] == [("will/old", b"31")]


def test_keepalive_timeout_closes_silent_client_and_publishes_will(broker):
    b = broker()
    w = watcher(b)
    c = b.raw()
    c.send(connect("silent", keepalive=2, will=("will/silent", b"timeout", 1, False)))
    assert c.recv_type(mqttraw.CONNACK).rc == 0
    t0 = time.monotonic()
    assert c.wait_closed(8) == []
    elapsed = time.monotonic() - t0
    # 1.5 x keepalive = 3 s (allowing for a coarse timer)
    assert 2.5 <= elapsed <= 6.0, elapsed
    pubs = receive_publishes(w, 1, timeout=3)
    assert [(p.topic, p.payload) for p in pubs] == [("will/silent", b"timeout")]


def test_pingreq_keeps_connection_alive(broker):
    b = broker()
    with b.raw() as c:
        assert c.connect("pinger", keepalive=2).rc == 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5.0:   # well past 1.5 x keepalive
            time.sleep(1.0)
            c.send(pingreq())
            p = c.recv(2)
            assert p.type == PINGRESP and p.first == 0xD0 and p.body == b"", p
        assert c.is_open()


def test_other_traffic_keeps_connection_alive(broker):
    b = broker()
    with b.raw() as c:
        assert c.connect("talker", keepalive=2).rc == 0
        c.subscribe(1, [("ka/t", 0)])
        t0 = time.monotonic()
        while time.monotonic() - t0 < 4.5:
            time.sleep(1.0)
            c.publish("ka/t", b"tick")
            assert c.recv_publish(2).payload == b"tick"
        assert c.is_open()


def test_keepalive_only_affects_the_silent_client(broker):
    b = broker()
    with b.raw() as quiet, b.raw() as normal:
        assert quiet.connect("quiet", keepalive=2).rc == 0
        assert normal.connect("normal", keepalive=60).rc == 0
        quiet.wait_closed(6)
        assert normal.is_open()
