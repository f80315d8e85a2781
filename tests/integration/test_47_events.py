"""Broker events (issue 21 item 5): every event of src/broker/event.h fires
where it happens, with the right fields, seen through the built-in
`events.log` listener (one "event {JSON}" log line per event).

Delivered fires once per message sent to a subscriber (live, from the queue
after a reconnect, retained on subscribe, shared subscription), not again
for a resend with DUP; acked fires on PUBACK (QoS 1) and on PUBREC (QoS 2)."""

import json
import time

import pytest

import mqttraw
from authutil import pbkdf2_line
from conftest import wait_for

pytestmark = pytest.mark.antenna_only

ALL = {"log": ["all"]}


def events(b, name=None):
    out = []
    for line in b.log_text().splitlines():
        i = line.find(" event {")
        if i < 0:
            continue
        try:
            e = json.loads(line[i + len(" event "):])
        except ValueError:
            continue  # the last line, read while the broker writes it
        if name is None or e["event"] == name:
            out.append(e)
    return out


def matches(e, fields):
    return all(e.get(k) == v for k, v in fields.items())


def wait_event(b, name, timeout=5.0, **fields):
    """The first `name` event with these fields, waiting for it."""
    def find():
        for e in events(b, name):
            if matches(e, fields):
                return e
        return None
    try:
        return wait_for(find, timeout, what="event %s %r" % (name, fields))
    except AssertionError:
        raise AssertionError("no event %s %r; events:\n%s" % (
            name, fields, "\n".join(json.dumps(e) for e in events(b))))


def count(b, name, **fields):
    return sum(1 for e in events(b, name) if matches(e, fields))


def raw5(b, client_id, **kw):
    return mqttraw.connect_v5(b.host, b.port, client_id, **kw)


def test_client_lifecycle_and_messages(broker):
    b = broker(events=ALL, workers=2)
    sub = b.raw_connected("ev-sub", keepalive=30)
    e = wait_event(b, "session_created", client_id="ev-sub")
    assert e["session_expiry"] == 0 and e["listener"] == "mqtt"
    e = wait_event(b, "client_connected", client_id="ev-sub")
    assert e["proto"] == "3.1.1" and e["keepalive"] == 30 and e["clean_start"] is True
    assert e["session_present"] is False and e["peer"].startswith("127.0.0.1:")
    assert e["listener"] == "mqtt" and "username" not in e
    assert sub.subscribe(1, [("a/#", 2)]).codes == [2]
    e = wait_event(b, "subscribed", client_id="ev-sub", filter="a/#")
    assert e["qos"] == 2 and e["new"] is True

    pub = b.raw_connected("ev-pub")
    pub.publish("a/b", b"hello", qos=1, pid=7)
    e = wait_event(b, "message_published", client_id="ev-pub", topic="a/b")
    assert e["qos"] == 1 and e["packet_id"] == 7 and e["payload_len"] == 5
    assert e["receivers"] == 1
    p = sub.recv_publish()
    e = wait_event(b, "message_delivered", client_id="ev-sub", topic="a/b")
    assert e["qos"] == 1 and e["packet_id"] == p.pid and e["retain"] is False
    sub.send(mqttraw.puback(p.pid))
    e = wait_event(b, "message_acked", client_id="ev-sub", topic="a/b")
    assert e["packet"] == "puback" and e["qos"] == 1 and e["packet_id"] == p.pid
    assert e["reason_code"] == 0

    # QoS 2: acknowledged at PUBREC (the message is the subscriber's then)
    pub.publish("a/q2", b"two", qos=2, pid=8)
    p = sub.recv_publish()
    assert p.qos == 2
    wait_event(b, "message_delivered", client_id="ev-sub", topic="a/q2", qos=2)
    sub.ack(p)
    e = wait_event(b, "message_acked", client_id="ev-sub", topic="a/q2")
    assert e["packet"] == "pubrec" and e["qos"] == 2
    assert count(b, "message_acked", topic="a/q2") == 1  # not again at PUBCOMP

    # nobody subscribes: published with 0 receivers, and dropped
    pub.publish("nobody/x", b"x", qos=0)
    e = wait_event(b, "message_published", client_id="ev-pub", topic="nobody/x")
    assert e["receivers"] == 0
    e = wait_event(b, "message_dropped", client_id="ev-pub", topic="nobody/x")
    assert e["reason"] == "no_subscribers" and e["qos"] == 0

    # retained on subscribe: delivered with the retain flag
    pub.publish("r/x", b"kept", qos=1, retain=True, pid=9)
    wait_event(b, "message_published", topic="r/x", retain_published=True)
    sub.subscribe(2, [("r/#", 1)])
    p = sub.recv_publish()
    assert p.retain == 1
    e = wait_event(b, "message_delivered", client_id="ev-sub", topic="r/x")
    assert e["retain"] is True

    sub.send(mqttraw.unsubscribe(3, ["a/#"]))
    sub.wait_for(lambda p: p.type == mqttraw.UNSUBACK)
    wait_event(b, "unsubscribed", client_id="ev-sub", filter="a/#")
    assert count(b, "unsubscribed") == 1

    pub.disconnect()
    e = wait_event(b, "client_disconnected", client_id="ev-pub")
    assert e["by_client"] is True and e["reason_code"] == 0 and e["reason"] == "DISCONNECT"
    sub.close()  # no DISCONNECT: the connection just ends
    e = wait_event(b, "client_disconnected", client_id="ev-sub")
    assert e["by_client"] is False and e["reason_code"] == 0x80
    assert e["reason"] == "connection closed by peer"


def test_queue_reconnect_takeover_and_expiry(broker):
    b = broker(events=ALL, workers=2, mqtt={"max_queued": 2})
    # a persistent session offline: QoS 1 queued, QoS 0 dropped, full queue
    s = b.raw_connected("ev-durable", clean=False)
    s.subscribe(1, [("q/#", 1)])
    s.close()
    wait_event(b, "client_disconnected", client_id="ev-durable")
    pub = b.raw_connected("ev-qpub")
    pub.publish("q/zero", b"0", qos=0)
    e = wait_event(b, "message_dropped", client_id="ev-durable", topic="q/zero")
    assert e["reason"] == "qos0_offline" and "peer" not in e
    for i in range(3):
        pub.publish("q/%d" % i, b"m", qos=1, pid=10 + i)
    e = wait_event(b, "message_dropped", client_id="ev-durable", topic="q/2")
    assert e["reason"] == "queue_full" and e["qos"] == 1
    assert count(b, "message_delivered", client_id="ev-durable") == 0

    # back: the queued messages are delivered now, once each
    s = b.raw_connected("ev-durable", clean=False)
    got = [s.recv_publish(), s.recv_publish()]
    assert sorted(p.topic for p in got) == ["q/0", "q/1"]
    wait_event(b, "client_connected", client_id="ev-durable", session_present=True)
    wait_event(b, "message_delivered", client_id="ev-durable", topic="q/0")
    wait_event(b, "message_delivered", client_id="ev-durable", topic="q/1")
    assert count(b, "session_created", client_id="ev-durable") == 1

    # not acknowledged, taken over: the resend (DUP) is not delivered again
    s2 = b.raw_connected("ev-durable", clean=False)
    redo = [s2.recv_publish(), s2.recv_publish()]
    assert all(p.dup for p in redo)
    e = wait_event(b, "session_taken_over", client_id="ev-durable")
    assert e["resumed"] is True and e["old_peer"].startswith("127.0.0.1:")
    e = wait_event(b, "client_disconnected", client_id="ev-durable", reason_code=0x8E)
    assert "taken over" in e["reason"] and e["by_client"] is False
    s.wait_closed()
    for p in redo:
        s2.send(mqttraw.puback(p.pid))
    wait_event(b, "message_acked", client_id="ev-durable", topic="q/1")
    assert count(b, "message_delivered", client_id="ev-durable", topic="q/0") == 1
    assert count(b, "message_delivered", client_id="ev-durable", topic="q/1") == 1
    s2.disconnect()

    # MQTT 5: a session expiring 1 s after its connection ended
    c = raw5(b, "ev-exp", clean_start=True,
             props=[(mqttraw.SESSION_EXPIRY_INTERVAL, 1)])
    e = wait_event(b, "session_created", client_id="ev-exp")
    assert e["session_expiry"] == 1 and e["proto"] == "5.0"
    c.disconnect()
    wait_event(b, "session_expired", client_id="ev-exp", timeout=8.0)


def test_message_expiry_and_too_large(broker):
    b = broker(events=ALL, workers=1)
    # queued for an offline MQTT 5 session, expired before it comes back
    c = raw5(b, "ev-late", clean_start=True, props=[(mqttraw.SESSION_EXPIRY_INTERVAL, 60)])
    c.subscribe(1, [("x/#", 1)])
    c.disconnect()
    wait_event(b, "client_disconnected", client_id="ev-late")
    pub = raw5(b, "ev-5pub")
    pub.publish("x/short", b"soon gone", qos=1, pid=1,
                props=[(mqttraw.MESSAGE_EXPIRY_INTERVAL, 1)])
    time.sleep(1.2)  # the message's own expiry: the condition under test
    c = raw5(b, "ev-late", clean_start=False, props=[(mqttraw.SESSION_EXPIRY_INTERVAL, 60)])
    e = wait_event(b, "message_dropped", client_id="ev-late", topic="x/short")
    assert e["reason"] == "expired"
    c.disconnect()

    # over the subscriber's Maximum Packet Size
    small = raw5(b, "ev-small", props=[(mqttraw.MAXIMUM_PACKET_SIZE, 64)])
    small.subscribe(1, [("big/#", 1)])
    pub.publish("big/one", b"x" * 500, qos=1, pid=2)
    e = wait_event(b, "message_dropped", client_id="ev-small", topic="big/one")
    assert e["reason"] == "too_large" and e["proto"] == "5.0"
    assert count(b, "message_delivered", client_id="ev-small") == 0
    small.expect_nothing(0.2)


def test_qos0_to_a_slow_subscriber(broker):
    # the output limit at its minimum: a burst of QoS 0 in one turn
    # overflows it whatever the socket takes
    b = broker(events={"log": ["message_dropped", "message_delivered"]}, workers=1,
               limits={"max_output_buffer": 1024})
    sub = b.raw_connected("ev-slow")
    sub.subscribe(1, [("s/#", 0)])
    pub = b.raw()
    pub.connect("ev-fast")
    pub.send(b"".join(mqttraw.publish("s/x", b"y" * 900, qos=0) for _ in range(20)))
    e = wait_event(b, "message_dropped", client_id="ev-slow")
    assert e["reason"] == "qos0_slow_subscriber" and e["topic"] == "s/x"
    assert count(b, "message_delivered", client_id="ev-slow") >= 1
    # only the kinds asked for are written
    assert events(b, "client_connected") == [] and events(b, "subscribed") == []


USERS = [("alice", "a"), ("ops", "o")]
ACL = """\
user alice
allow all alice/#
deny all private/#
allow sub #
user ops
allow all #
"""


def test_auth_and_acl_events(broker, tmp_path):
    pw = tmp_path / "passwd"
    pw.write_text("".join(pbkdf2_line(u, p) + "\n" for u, p in USERS))
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    b = broker(events=ALL, workers=2, mqtt={"allow_anonymous": False},
               auth={"password_file": str(pw), "acl_file": str(acl),
                     "client_id_binding": "prefix_username",
                     "ban": {"max_failures": 2, "delay_ms": 0}})
    c = b.raw()
    assert c.connect("alice-1", username="alice", password="wrong").rc != 0
    e = wait_event(b, "auth_failed", client_id="alice-1")
    assert e["cause"] == "bad_credentials" and e["reason_code"] == 0x86 and e["username"] == "alice"
    c = b.raw()
    assert c.connect("anon-1").rc != 0
    e = wait_event(b, "auth_failed", client_id="anon-1")
    assert e["cause"] == "anonymous" and e["reason_code"] == 0x87
    c = b.raw()
    assert c.connect("someone", username="ops", password="o").rc != 0
    e = wait_event(b, "auth_failed", client_id="someone")
    assert e["cause"] == "client_id_not_bound" and e["reason_code"] == 0x85

    alice = b.raw_connected("alice-2", username="alice", password="a")
    e = wait_event(b, "client_connected", client_id="alice-2")
    assert e["username"] == "alice"
    alice.subscribe(1, [("#", 1)])  # granted; private/# filtered at delivery
    ops = b.raw_connected("ops-1", username="ops", password="o")
    ops.publish("private/x", b"secret", qos=1, pid=1)
    e = wait_event(b, "message_dropped", client_id="alice-2", topic="private/x")
    assert e["reason"] == "acl_denied" and e["username"] == "alice"
    assert count(b, "message_delivered", client_id="alice-2", topic="private/x") == 0
    alice.publish("private/y", b"no", qos=1, pid=2)  # 3.1.1: acknowledged, dropped
    e = wait_event(b, "message_dropped", client_id="alice-2", topic="private/y")
    assert e["reason"] == "publish_denied"
    assert count(b, "message_published", topic="private/y") == 0

    # a second failure of this address bans it (ban.max_failures 2)
    c = b.raw()
    assert c.connect("alice-3", username="alice", password="wrong").rc != 0
    c = b.raw()
    assert c.connect("alice-4", username="alice", password="a").rc != 0
    e = wait_event(b, "auth_failed", client_id="alice-4")
    assert e["cause"] == "banned" and e["reason_code"] == 0x8A


def test_nothing_when_not_configured(broker):
    b = broker(workers=1)
    c = b.raw_connected("ev-quiet")
    c.subscribe(1, [("t", 1)])
    c.publish("t", b"m", qos=1, pid=1)
    c.recv_publish()
    c.disconnect()
    b.wait_log(r"ev-quiet.*disconnected")
    assert events(b) == []
