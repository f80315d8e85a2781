"""MQTT 5.0 flow control: Receive Maximum in both directions, the broker's
max_inflight, and Maximum Packet Size in both directions."""

import pytest

from mqttraw import (
    DISCONNECT, MAXIMUM_PACKET_SIZE, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, RECEIVE_MAXIMUM,
    connect_v5, puback, pubcomp, publish5, pubrec, pubrel, sub_opts)
from helpers import drain, receive_publishes


def v5(b, cid="", **kw):
    return connect_v5(b.host, b.port, cid, **kw)


def subscriber(b, cid, qos=1, topic="fc/#"):
    sub = v5(b, cid)
    assert sub.subscribe(1, [(topic, sub_opts(qos))]).codes == [qos]
    return sub


def publish_n(b, n, qos=1, topic="fc/a", cid="fc-pub"):
    pub = v5(b, cid)
    for i in range(n):
        pub.publish(topic, b"m%d" % i, qos=qos, pid=i + 1)
    return [b"m%d" % i for i in range(n)]


def publishes(pkts):
    assert all(p.type == PUBLISH for p in pkts), pkts
    return [p.payload for p in pkts]


# ------------------------------------------------------------ client's Receive Maximum

def test_client_receive_maximum_limits_unacknowledged_qos1(broker):
    b = broker()
    sub = v5(b, "rm2", props=[(RECEIVE_MAXIMUM, 2)])
    assert sub.subscribe(1, [("fc/#", sub_opts(1))]).codes == [1]
    sent = publish_n(b, 6)
    first = drain(sub, quiet=0.7)
    assert publishes(first) == [b"m0", b"m1"]            # [MQTT-3.3.4-9]
    # acknowledging lets the rest through, in order
    got = list(first)
    for p in first:
        sub.send(puback(p.pid))
    got += receive_publishes(sub, 4, timeout=5, quiet=0.3)
    assert publishes(got) == sent


# antenna_only: mosquitto 2.0.11 sends two more messages for each PUBACK once
# the window is full (3 unacknowledged with Receive Maximum 2), breaking
# [MQTT-3.3.4-9].
@pytest.mark.antenna_only
def test_client_receive_maximum_one_more_per_puback(broker):
    b = broker()
    sub = v5(b, "rm2x", props=[(RECEIVE_MAXIMUM, 2)])
    assert sub.subscribe(1, [("fc/#", sub_opts(1))]).codes == [1]
    publish_n(b, 6)
    window = drain(sub, quiet=0.7)
    assert publishes(window) == [b"m0", b"m1"]
    for i in range(2, 6):
        sub.send(puback(window.pop(0).pid))
        more = drain(sub, quiet=0.5)
        assert publishes(more) == [b"m%d" % i]
        window += more
    for p in window:
        sub.send(puback(p.pid))
    assert drain(sub, quiet=0.3) == []


def test_client_receive_maximum_counts_qos2_until_pubcomp(broker):
    b = broker()
    sub = v5(b, "rm2q2", props=[(RECEIVE_MAXIMUM, 2)])
    assert sub.subscribe(1, [("fc/#", sub_opts(2))]).codes == [2]
    sent = publish_n(b, 4, qos=2)
    first = drain(sub, quiet=0.7)
    assert publishes(first) == [b"m0", b"m1"]
    for p in first:
        sub.send(pubrec(p.pid))
    rels = drain(sub, quiet=0.7)
    # a PUBREC does not free the slot: only PUBRELs, no new PUBLISH
    assert sorted((p.type, p.pid) for p in rels) == sorted((PUBREL, p.pid) for p in first)
    sub.send(pubcomp(first[0].pid))
    nxt = sub.recv_publish(3)
    assert nxt.payload == b"m2"
    sub.send(pubcomp(first[1].pid))
    sub.ack(nxt)
    got = first + [nxt] + receive_publishes(sub, 1, quiet=0.3)
    assert publishes(got) == sent


# antenna_only: mosquitto 2.0.11 uses the client's Receive Maximum for
# v5 clients and ignores max_inflight_messages.
@pytest.mark.antenna_only
def test_max_inflight_caps_below_client_receive_maximum(broker):
    b = broker(mqtt={"max_inflight": 3})
    sub = v5(b, "inflight3", props=[(RECEIVE_MAXIMUM, 10)])
    assert sub.subscribe(1, [("fc/#", sub_opts(1))]).codes == [1]
    sent = publish_n(b, 6)
    first = drain(sub, quiet=0.7)
    assert publishes(first) == [b"m0", b"m1", b"m2"]
    for p in first:
        sub.send(puback(p.pid))
    got = first + receive_publishes(sub, 3, quiet=0.3)
    assert publishes(got) == sent


# ------------------------------------------------------------ broker's receive_maximum

def test_broker_receive_maximum_quota_released_by_completed_flows(broker):
    b = broker(mqtt={"receive_maximum": 2})
    c = v5(b, "quota")
    assert c.connack.props.get(RECEIVE_MAXIMUM) == 2
    c.send(publish5("fc/q", b"1", qos=2, pid=1) + publish5("fc/q", b"2", qos=2, pid=2))
    recs = [c.recv(3), c.recv(3)]
    assert sorted((p.type, p.pid) for p in recs) == [(PUBREC, 1), (PUBREC, 2)]
    assert all(p.rc in (0x00, 0x10) for p in recs), recs   # no subscriber: 0x10 allowed
    c.send(pubrel(1))
    comp = c.recv_type(PUBCOMP, 3)
    assert (comp.pid, comp.rc) == (1, 0)
    # one slot free again: a third QoS 2 PUBLISH is accepted
    c.send(publish5("fc/q", b"3", qos=2, pid=3))
    rec = c.recv_type(PUBREC, 3)
    assert rec.pid == 3 and rec.rc < 0x80, rec
    for pid in (2, 3):
        c.send(pubrel(pid))
        assert c.recv_type(PUBCOMP, 3).pid == pid
    assert c.is_open()


# antenna_only: mosquitto 2.0.11 answers the PUBLISH over its receive maximum
# with PUBREC 0x97 (Quota exceeded) and keeps the connection; the spec
# (section 4.9) says DISCONNECT 0x93 (Receive Maximum exceeded).
@pytest.mark.antenna_only
def test_client_exceeding_broker_receive_maximum_disconnect_0x93(broker):
    b = broker(mqtt={"receive_maximum": 2})
    by = subscriber(b, "rmx-by")
    c = v5(b, "rmx")
    assert c.connack.props.get(RECEIVE_MAXIMUM) == 2
    c.send(b"".join(publish5("fc/x", b"%d" % i, qos=2, pid=i) for i in (1, 2, 3)))
    got = c.wait_closed(3)
    assert [(p.type, p.pid) for p in got[:2]] == [(PUBREC, 1), (PUBREC, 2)], got
    assert [(p.type, p.rc) for p in got[2:]] == [(DISCONNECT, 0x93)], got
    # the messages the broker accepted (PUBREC < 0x80) are delivered once;
    # never the third
    pubs = receive_publishes(by, 0, quiet=0.5)
    assert set(p.payload for p in pubs) <= {b"1", b"2"}


# ------------------------------------------------------------ Maximum Packet Size

def sized_payload(topic, size, qos=1):
    """A payload whose PUBLISH (as the broker sends it to a 5.0 subscriber
    with no subscription identifier: empty property block) is `size` bytes."""
    n = size - len(publish5(topic, b"", qos=qos, pid=1 if qos else None))
    # the remaining-length field grows at 128 bytes
    while len(publish5(topic, b"x" * n, qos=qos, pid=1 if qos else None)) > size:
        n -= 1
    assert len(publish5(topic, b"x" * n, qos=qos, pid=1 if qos else None)) == size
    return b"x" * n


@pytest.mark.parametrize("qos", [0, 1])
def test_client_maximum_packet_size_skips_larger_messages(broker, qos):
    b = broker()
    sub = v5(b, "mps", props=[(MAXIMUM_PACKET_SIZE, 200)])
    assert sub.subscribe(1, [("mps/#", sub_opts(qos))]).codes == [qos]
    pub = v5(b, "mps-pub")
    pub.publish("mps/a", b"B" * 500, qos=1, pid=1)
    pub.publish("mps/a", sized_payload("mps/a", 250, qos), qos=1, pid=2)
    pub.publish("mps/a", b"small", qos=1, pid=3)
    pub.publish("mps/a", b"C" * 300, qos=1, pid=4)
    pub.publish("mps/a", b"last", qos=1, pid=5)
    got = receive_publishes(sub, 2, quiet=0.5)
    # [MQTT-3.1.2-25]: too large for the client -> discarded, as if sent
    assert [p.payload for p in got] == [b"small", b"last"]
    assert receive_publishes(sub, 0, quiet=0.3) == []


# antenna_only: mosquitto 2.0.11 is one byte off: it still sends a
# 201-byte PUBLISH to a client whose Maximum Packet Size is 200.
@pytest.mark.antenna_only
@pytest.mark.parametrize("qos", [0, 1])
def test_client_maximum_packet_size_exact_boundary(broker, qos):
    b = broker()
    sub = v5(b, "mpsx", props=[(MAXIMUM_PACKET_SIZE, 200)])
    assert sub.subscribe(1, [("mps/#", sub_opts(qos))]).codes == [qos]
    pub = v5(b, "mpsx-pub")
    fits = sized_payload("mps/a", 200, qos)
    over = sized_payload("mps/a", 201, qos)
    pub.publish("mps/a", over, qos=1, pid=1)
    pub.publish("mps/a", fits, qos=1, pid=2)
    pub.publish("mps/a", b"small", qos=1, pid=3)
    got = receive_publishes(sub, 2, quiet=0.5)
    assert [p.payload for p in got] == [fits, b"small"]


def test_client_maximum_packet_size_other_clients_unaffected(broker):
    b = broker()
    small = v5(b, "mps-small", props=[(MAXIMUM_PACKET_SIZE, 100)])
    big = v5(b, "mps-big")
    for c in (small, big):
        assert c.subscribe(1, [("mps2/#", sub_opts(1))]).codes == [1]
    v5(b, "mps2-pub").publish("mps2/a", b"L" * 1000, qos=1, pid=1)
    assert [len(p.payload) for p in receive_publishes(big, 1, quiet=0.3)] == [1000]
    assert receive_publishes(small, 0, quiet=0.3) == []


def test_broker_max_packet_size_disconnect_0x95(broker):
    b = broker(mqtt={"max_packet_size": 300})
    by = subscriber(b, "mpsb-by", topic="mpsb/#")
    c = v5(b, "mpsb")
    assert c.connack.props.get(MAXIMUM_PACKET_SIZE) == 300
    assert c.publish("mpsb/a", b"y" * 250, qos=1, pid=1).rc == 0
    c.send(publish5("mpsb/a", b"z" * 400, qos=1, pid=2))
    c.expect_disconnect(0x95)
    got = receive_publishes(by, 1, quiet=0.5)
    assert [p.payload for p in got] == [b"y" * 250]


# antenna_only: mosquitto 2.0.11 compares the Remaining Length, not the
# whole packet, with max_packet_size: it accepts packets of up to 302 bytes
# with a maximum of 300 ([MQTT-3.2.2-15] counts the whole packet).
@pytest.mark.antenna_only
def test_broker_max_packet_size_exact_boundary(broker):
    b = broker(mqtt={"max_packet_size": 300})
    by = subscriber(b, "mpsbx-by", topic="mpsb/#")
    c = v5(b, "mpsbx")
    at = publish5("mpsb/a", sized_payload("mpsb/a", 300), qos=1, pid=1)
    assert len(at) == 300
    c.send(at)
    assert c.recv_type(PUBACK, 3).rc == 0   # exactly the maximum is fine
    over = publish5("mpsb/a", sized_payload("mpsb/a", 301), qos=1, pid=2)
    assert len(over) == 301
    c.send(over)
    c.expect_disconnect(0x95)
    got = receive_publishes(by, 1, quiet=0.5)
    assert [len(p.payload) for p in got] == [len(sized_payload("mpsb/a", 300))]
