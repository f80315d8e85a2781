"""Back-pressure from subscribers to publishers (issue 15): while a
connected subscriber's queue holds more than limits.publisher_backpressure
messages, the QoS 1/2 publishers sending to it are paused, so that they
feel its pace instead of filling its queue; nothing is lost, order is kept,
and an offline session's queue pauses nobody."""

import time

import pytest

from mqttraw import PUBACK, puback, publish
from test_12_limits import sys_value

pytestmark = pytest.mark.antenna_only


def pump_publishes(p, topic, count, first_pid=1):
    """Send `count` QoS 1 PUBLISHes without waiting (the socket buffers
    them), return when all are written; payload i is the message's number
    (first_pid - 1 + i)."""
    data = b"".join(publish(topic, b"%06d" % (first_pid - 1 + i), qos=1, pid=first_pid + i)
                    for i in range(count))
    p.sock.sendall(data)


def test_slow_subscriber_pauses_its_publisher_and_loses_nothing(broker):
    N = 3000
    b = broker(mqtt={"max_inflight": 5, "max_queued": 100000, "sys_interval": 1},
               limits={"publisher_backpressure": 20})
    sub = b.raw_connected("bp-sub")
    assert sub.subscribe(1, [("bp/t", 1)]).codes == [1]
    pub = b.raw_connected("bp-pub")
    # A first wave: the subscriber does not acknowledge, its window (5)
    # fills and its queue passes the bound.  Its worker raises the flag when
    # it queues them, after the publisher's worker routed them (a publish
    # sees the flag of the queue as it is then), so wait for that first.
    FIRST = 200
    pump_publishes(pub, "bp/t", FIRST)
    deadline = time.monotonic() + 20
    while sys_value(b, "$SYS/broker/messages/queued") <= 20:
        assert time.monotonic() < deadline, "the first wave was not queued"
        time.sleep(0.2)
    # the second wave meets a subscriber that is behind: its publisher is
    # paused, again and again
    pump_publishes(pub, "bp/t", N - FIRST, first_pid=1 + FIRST)
    deadline = time.monotonic() + 20
    while sys_value(b, "$SYS/broker/limits/backpressure_pauses") == 0:
        assert time.monotonic() < deadline, "the publisher was never paused"
        time.sleep(0.2)
    # now the subscriber takes everything: all N arrive, in order, once
    got = []
    acks = 0
    deadline = time.monotonic() + 60
    while len(got) < N:
        assert time.monotonic() < deadline, "only %d of %d delivered" % (len(got), N)
        m = sub.recv_publish(10)
        sub.send(puback(m.pid))
        got.append(int(m.payload))
    assert got == list(range(N))
    # and every publish was acknowledged to the publisher
    deadline = time.monotonic() + 30
    while acks < N:
        assert time.monotonic() < deadline, "%d of %d PUBACKs" % (acks, N)
        p = pub.recv(10)
        if p.type == PUBACK:
            acks += 1
    sub.close()
    pub.close()


def test_offline_session_pauses_nobody(broker):
    """A persistent session whose client is away queues without pausing
    anyone: back-pressure follows a connected subscriber's pace only."""
    N = 500
    b = broker(mqtt={"max_inflight": 5, "max_queued": 100000, "sys_interval": 1},
               limits={"publisher_backpressure": 20})
    s = b.raw_connected("bp-off", clean=False)
    assert s.subscribe(1, [("bp/off", 1)]).codes == [1]
    s.go_offline()
    pub = b.raw_connected("bp-pub2")
    for i in range(N):
        pub.publish("bp/off", b"%06d" % i, qos=1, pid=1 + (i % 60000))
    assert sys_value(b, "$SYS/broker/limits/backpressure_pauses") == 0
    s = b.raw_connected("bp-off", clean=False)
    got = []
    while len(got) < N:
        m = s.recv_publish(10)
        s.send(puback(m.pid))
        got.append(int(m.payload))
    assert got == list(range(N))
    s.close()
    pub.close()


def test_off_when_zero(broker):
    N = 300
    b = broker(mqtt={"max_inflight": 5, "max_queued": 100000, "sys_interval": 1},
               limits={"publisher_backpressure": 0})
    sub = b.raw_connected("bp0-sub")
    assert sub.subscribe(1, [("bp0/t", 1)]).codes == [1]
    pub = b.raw_connected("bp0-pub")
    for i in range(N):   # each PUBACK arrives at once: nobody waits for the subscriber
        pub.publish("bp0/t", b"%06d" % i, qos=1, pid=1 + i)
    assert sys_value(b, "$SYS/broker/limits/backpressure_pauses") == 0
    got = []
    while len(got) < N:
        m = sub.recv_publish(10)
        sub.send(puback(m.pid))
        got.append(int(m.payload))
    assert got == list(range(N))
