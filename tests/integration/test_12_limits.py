"""Overload protection: each limit acts, is counted in $SYS, and the broker
keeps serving the clients it has."""

import socket
import time

import pytest

from mqttraw import SUBACK, Closed, Timeout, puback, publish, subscribe

pytestmark = pytest.mark.antenna_only  # antenna's limits section


def sys_value(b, topic, timeout=5.0):
    c = b.raw_connected("")
    assert c.subscribe(1, [(topic, 0)]).codes == [0]
    p = c.recv_publish(timeout)
    c.close()
    return int(p.payload)


def test_max_connections_global_refuses_extra(broker):
    b = broker(limits={"max_connections": 3}, extra_listeners=1)
    held = [b.raw_connected("held%d" % i, ) for i in range(2)]
    third = b.raw(port=b.ports[1])
    assert third.connect("held2").rc == 0  # the other listener counts too
    extra = b.raw()
    extra.try_send(b"")
    assert extra.wait_closed(3) == []       # refused at accept, nothing sent
    b.wait_log(r"max_connections reached")  # written after the close: polled
    held[0].go_offline()
    # room again once one left: the broker closes the socket before it
    # releases the connection's slot at the end of that loop turn, so a
    # connect at once may still be refused; it must succeed within a deadline
    deadline = time.monotonic() + 10
    while True:
        again = b.raw()
        try:
            if again.connect("after").rc == 0:
                break
        except (AssertionError, Closed, Timeout, OSError):
            pass
        again.close()
        assert time.monotonic() < deadline, "no room after a client left"
        time.sleep(0.1)
    for c in held[1:] + [third, again]:
        c.close()


def test_connection_rate_refuses_excess_within_a_second(broker):
    b = broker(limits={"max_connection_rate": 5}, mqtt={"sys_interval": 1})
    accepted = refused = 0
    clients = []
    for i in range(12):
        c = b.raw()
        try:
            if c.connect("r%d" % i, timeout=2).rc == 0:
                accepted += 1
                clients.append(c)
                continue
        except (Closed, AssertionError, OSError):
            pass
        refused += 1
        c.close()
    # 12 attempts well inside a second or two: at most 5 per second admitted
    # (the fixture's readiness probe took one of this second's admissions)
    assert refused >= 2, (accepted, refused)
    assert accepted >= 3
    for c in clients:
        c.close()
    time.sleep(1.2)
    assert sys_value(b, "$SYS/broker/limits/refused/connection_rate") >= 2


def test_max_subscriptions_per_client(broker):
    b = broker(limits={"max_subscriptions": 2})
    c = b.raw_connected("subs")
    c.send(subscribe(7, [("a", 1), ("b", 1), ("c", 1)]))
    ack = c.recv_type(SUBACK)
    assert ack.codes == [1, 1, 0x80]
    # re-subscribing to an existing filter is not a new subscription
    c.send(subscribe(8, [("a", 2)]))
    assert c.recv_type(SUBACK).codes == [2]
    c.close()


def test_max_topic_levels_and_length(broker):
    b = broker(limits={"max_topic_levels": 3, "max_topic_length": 20})
    c = b.raw_connected("topics")
    c.send(subscribe(1, [("a/b/c", 0), ("a/b/c/d", 0), ("x" * 21, 0), ("+/+/#", 0)]))
    assert c.recv_type(SUBACK).codes == [0, 0x80, 0x80, 0]
    c.send(publish("a/b/c/d", b"too deep", qos=0))
    assert c.wait_closed(3) == []
    assert "max_topic_levels" in b.log_text()
    b.assert_serving()


def test_max_queued_bytes_drops_beyond_budget(broker):
    b = broker(limits={"max_queued_bytes": 1000}, mqtt={"max_queued": 1000, "sys_interval": 1})
    s = b.raw_connected("qb", clean=False)
    assert s.subscribe(1, [("qb/t", 1)]).codes == [1]
    # A DISCONNECT, and the broker's close seen: the session is offline
    # before the first publish (a bare close raced the publisher on a busy
    # machine, and a message sent to the still-attached session is in
    # flight, not queued, so it does not count against the budget).
    s.go_offline()
    p = b.raw_connected("qb-pub")
    for i in range(20):  # 20 x (4 + 96) bytes: only ~10 fit in 1000 bytes
        p.publish("qb/t", b"%03d" % i + b"x" * 93, qos=1, pid=i + 1)
    p.close()
    # A PUBACK means stored, not yet queued at the subscriber's worker: wait
    # for at least 10 drops (at most 10 fit), else the subscriber could come
    # back while later messages are still on their way and take them in
    # flight, past the queue budget.
    deadline = time.monotonic() + 10
    while sys_value(b, "$SYS/broker/messages/dropped") < 10:
        assert time.monotonic() < deadline, "drops not counted in $SYS"
        time.sleep(0.3)
    s = b.raw_connected("qb", clean=False)
    got = []
    while True:
        try:
            m = s.recv_publish(1.0)
        except Exception:
            break
        s.send(puback(m.pid))
        got.append(int(m.payload[:3]))
    assert 8 <= len(got) <= 10, got
    assert got == sorted(got) and got[0] == 0  # the first ones kept, in order
    s.close()


def test_queue_full_refuse_answers_0x97_and_routes_nothing(broker):
    import mqttraw
    b = broker(mqtt={"max_queued": 3, "max_inflight": 1, "sys_interval": 1},
               limits={"queue_full": "refuse"})
    s = b.raw_connected("qr-sub", clean=False)
    assert s.subscribe(1, [("qr/#", 1)]).codes == [1]
    other = b.raw_connected("qr-other")
    assert other.subscribe(1, [("qr/#", 1)]).codes == [1]
    s.go_offline()  # offline: its queue fills
    p = mqttraw.connect_v5(b.host, b.port, "qr-pub5")
    for i in range(3):
        assert p.publish("qr/t", b"ok%d" % i, qos=1, pid=1 + i).rc == 0
    # A PUBACK means stored; the subscriber's worker queues the message
    # after that.  Wait until it has (3 queued for qr-sub, 2 behind the
    # window of 1 for qr-other) before the publish that must be refused.
    deadline = time.monotonic() + 10
    while sys_value(b, "$SYS/broker/messages/queued") < 5:
        assert time.monotonic() < deadline, "messages not queued"
        time.sleep(0.3)
    # the queue holds 3: the next QoS 1 and QoS 2 are refused, not routed
    assert p.publish("qr/t", b"refused", qos=1, pid=10).rc == mqttraw.RC_QUOTA_EXCEEDED
    rec = p.publish("qr/t", b"refused2", qos=2, pid=11)
    assert rec.rc == mqttraw.RC_QUOTA_EXCEEDED
    # QoS 0 is not refused (dropped for the full queue, delivered elsewhere)
    p.publish("qr/t", b"zero", qos=0)
    got = []
    for _ in range(4):
        m = other.recv_publish(3)
        if m.qos:
            other.send(puback(m.pid))
        got.append(m.payload)
    assert got == [b"ok0", b"ok1", b"ok2", b"zero"]  # nothing refused reached anyone
    # an MQTT 3.1.1 publisher cannot be told: acknowledged and dropped
    p3 = b.raw_connected("qr-pub3")
    p3.publish("qr/t", b"dropped311", qos=1, pid=5)
    deadline = time.monotonic() + 30
    while sys_value(b, "$SYS/broker/limits/refused_queue_full") < 3:
        assert time.monotonic() < deadline, "refusals not counted in $SYS"
        time.sleep(0.3)
    # the subscriber comes back: its 3 queued messages, none of the refused
    s = b.raw_connected("qr-sub", clean=False)
    back = []
    for _ in range(3):
        m = s.recv_publish(3)
        s.send(puback(m.pid))
        back.append(m.payload)
    assert back == [b"ok0", b"ok1", b"ok2"]
    # the queue drained: QoS 1 is accepted again
    assert p.publish("qr/t", b"later", qos=1, pid=20).rc == 0
    for c in (s, other, p, p3):
        c.close()


def test_oldest_qos0_dropped_first_when_queue_full(broker):
    b = broker(mqtt={"max_queued": 5, "max_inflight": 1})
    s = b.raw_connected("q0", clean=False)
    assert s.subscribe(1, [("q0/#", 2)]).codes == [2]
    p = b.raw_connected("q0-pub")
    # the subscriber does not ack yet: one QoS 1 message in flight, the rest
    # queue behind it (QoS 0 too, to keep the order)
    p.publish("q0/x", b"inflight", qos=1, pid=1)
    first = s.recv_publish(3)
    assert first.payload == b"inflight"
    p.publish("q0/x", b"one-a", qos=1, pid=2)
    for i in range(4):
        p.publish("q0/x", b"zero%d" % i, qos=0)
    # queue: one-a, zero0..3 = 5, full: one-b drops the oldest QoS 0 (zero0)
    p.publish("q0/x", b"one-b", qos=1, pid=3)
    time.sleep(0.3)
    s.send(puback(first.pid))
    got = []
    for _ in range(5):
        m = s.recv_publish(3)
        if m.qos:
            s.send(puback(m.pid))
        got.append(m.payload)
    assert got == [b"one-a", b"zero1", b"zero2", b"zero3", b"one-b"]
    s.close()
    p.close()


def test_message_rate_throttles_reads_without_loss(broker):
    b = broker(limits={"max_message_rate": 20})
    s = b.raw_connected("rate-sub")
    assert s.subscribe(1, [("rate/t", 1)]).codes == [1]
    p = b.raw_connected("rate-pub")
    t0 = time.monotonic()
    for i in range(60):  # pipelined: sent at once, read 20 per second
        p.send(publish("rate/t", b"%d" % i, qos=1, pid=i + 1))
    acks = 0
    while acks < 60:
        pk = p.recv(10)
        if pk.type == 4:
            acks += 1
    elapsed = time.monotonic() - t0
    assert elapsed >= 1.0, elapsed  # 60 messages at 20/s span three one-second windows
    got = []
    while len(got) < 60:
        m = s.recv_publish(5)
        s.send(puback(m.pid))
        got.append(int(m.payload))
    assert got == list(range(60))  # nothing dropped, order kept
    s.close()
    p.close()


def test_slow_subscriber_disconnected(broker):
    b = broker(limits={"slow_subscriber_timeout": 1})
    slow = socket.create_connection((b.host, b.port))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    from mqttraw import connect
    slow.sendall(connect("slowpoke", keepalive=0))
    slow.sendall(subscribe(1, [("slow/t", 0)]))
    time.sleep(0.3)
    p = b.raw_connected("flood")
    payload = b"x" * 60000
    deadline = time.monotonic() + 15
    while "slow subscriber" not in b.log_text() and time.monotonic() < deadline:
        for _ in range(20):
            p.publish("slow/t", payload, qos=0)
        time.sleep(0.1)
    assert "slow subscriber" in b.log_text()
    slow.close()
    p.close()
    b.assert_serving()


def test_keepalive_over_max_cap_accepts(broker):
    b = broker(mqtt={"max_keepalive": 10}, extra_mqtt={"keepalive_over_max": "cap"})
    c = b.raw()
    assert c.connect("cap", keepalive=100).rc == 0
    c.close()


def test_memory_high_water_refuses_new_connections(broker):
    b = broker(limits={"memory_high_water": 1024})  # any RSS is above 1 KiB
    deadline = time.monotonic() + 30
    while "above memory_high_water" not in b.log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "above memory_high_water" in b.log_text()
    c = b.raw()
    c.try_send(b"")
    assert c.wait_closed(3) == []
