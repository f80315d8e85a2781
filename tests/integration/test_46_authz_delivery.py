"""Authorization at delivery (issue 13, item 2): a client id is not a key
to another user's messages, an ACL reloaded by SIGHUP binds existing
subscriptions, a wildcard that merely overlaps a deny rule is granted and
filtered message by message, and client ids can be bound to users."""

import signal
import time

import pytest

import mqttraw
from authutil import pbkdf2_line

pytestmark = pytest.mark.antenna_only

USERS = [("alice", "a"), ("bob", "b"), ("carol", "c"), ("ops", "o")]

ACL = """\
any
allow sub $SYS/#
user alice
allow all alice/#
user bob
allow all bob/#
user carol
allow all feed/#
user ops
allow all #
"""


def start(broker, tmp_path, acl=ACL, **auth):
    pw = tmp_path / "passwd"
    pw.write_text("".join(pbkdf2_line(u, p) + "\n" for u, p in USERS))
    path = tmp_path / "acl"
    path.write_text(acl)
    b = broker(auth=dict({"password_file": str(pw), "acl_file": str(path)}, **auth),
               mqtt={"sys_interval": 1})
    b.acl_path = path
    return b


def c3(b, cid, user=None, pw=None, clean=True, rc=0):
    c = mqttraw.RawClient(b.host, b.port)
    ack = c.connect(cid, username=user, password=pw, clean=clean)
    assert ack.rc == rc, ack
    c.connack = ack
    return c


def drain(c, quiet=0.5, limit=1000):
    """Every PUBLISH that arrives until `quiet` s pass without one (acked)."""
    got = []
    for _ in range(limit):
        try:
            p = c.recv_publish(quiet)
        except (mqttraw.Timeout, AssertionError):
            break
        if p.qos:
            c.ack(p)
        got.append(p)
    return got


def sys_value(b, topic, want, timeout=10.0):
    """Poll $SYS (published every second) until `topic` reaches `want`."""
    c = c3(b, "sys-%d" % time.monotonic_ns(), "ops", "o")
    c.subscribe(1, [(topic, 0)])
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        try:
            p = c.recv_publish(max(0.1, deadline - time.monotonic()))
        except (mqttraw.Timeout, AssertionError):
            break
        if p.topic == topic:
            value = int(p.payload)
            if value >= want:
                break
    c.close()
    return value


def test_other_user_resuming_a_session_gets_none_of_its_messages(broker, tmp_path):
    b = start(broker, tmp_path)
    alice = c3(b, "alice-dev", "alice", "a", clean=False)
    assert alice.subscribe(1, [("alice/#", 1)]).codes == [1]
    alice.disconnect()
    pub = c3(b, "alice-pub", "alice", "a")
    pub.publish("alice/retained", b"r", qos=1, retain=True, pid=1)
    for i in range(5):
        pub.publish("alice/queued", b"q%d" % i, qos=1, pid=10 + i)

    bob = c3(b, "alice-dev", "bob", "b", clean=False)
    assert bob.connack.session_present == 1  # resumed: but only what bob may read
    assert drain(bob) == []
    b.wait_log(r"client 'alice-dev': CONNECT by user 'bob' .* for the session of "
               r"user 'alice': the session resumed")
    pub.publish("alice/live", b"live", qos=1, pid=20)
    # bob may not subscribe to alice's topics; '#' is granted for bob's own
    # and retained or live messages of alice's are not delivered through it
    assert bob.subscribe(2, [("alice/#", 1), ("#", 1)]).codes == [0x80, 1]
    pub.publish("alice/live", b"live2", qos=1, pid=21)
    bobpub = c3(b, "bob-pub", "bob", "b")
    bobpub.publish("bob/own", b"mine", qos=1, pid=1)
    got = drain(bob)
    assert [(p.topic, p.payload) for p in got] == [("bob/own", b"mine")]

    # alice takes her client id back (counted too: the session was bob's),
    # then a connected alice is taken over by bob: kicked, nothing leaks
    bob.disconnect()
    alice = c3(b, "alice-dev", "alice", "a", clean=False)
    assert drain(alice) == []
    pub.publish("alice/back", b"x", qos=1, pid=22)
    assert [p.payload for p in drain(alice)] == [b"x"]
    bob2 = c3(b, "alice-dev", "bob", "b", clean=False)
    alice.wait_closed()
    pub.publish("alice/after", b"x", qos=1, pid=30)
    assert drain(bob2) == []
    assert sys_value(b, "$SYS/broker/auth/takeovers_other_user", 3) == 3
    for c in (pub, bobpub, bob2):
        c.disconnect()


def test_owner_survives_a_restart(broker, tmp_path):
    b = start(broker, tmp_path)
    alice = c3(b, "alice-keep", "alice", "a", clean=False)
    alice.subscribe(1, [("alice/#", 1)])
    alice.disconnect()
    pub = c3(b, "alice-pub", "alice", "a")
    pub.publish("alice/stored", b"s", qos=1, pid=1)
    pub.disconnect()
    b.stop()
    b.start()
    bob = c3(b, "alice-keep", "bob", "b", clean=False)
    assert bob.connack.session_present == 1
    assert drain(bob) == []  # the stored message is alice's
    b.wait_log(r"CONNECT by user 'bob' .* for the session of user 'alice'")
    bob.disconnect()
    # alice is back to an empty session: the message was dropped, not kept
    alice = c3(b, "alice-keep", "alice", "a", clean=False)
    assert drain(alice) == []
    alice.disconnect()


def test_sighup_revokes_existing_subscription(broker, tmp_path):
    b = start(broker, tmp_path)
    sub = c3(b, "carol-sub", "carol", "c")
    assert sub.subscribe(1, [("feed/#", 1)]).codes == [1]
    pub = c3(b, "carol-pub", "carol", "c")
    pub.publish("feed/a", b"before", qos=1, pid=1)
    assert sub.recv_publish().payload == b"before"

    b.acl_path.write_text(ACL.replace("allow all feed/#", "allow pub feed/#"))
    b.proc.send_signal(signal.SIGHUP)
    b.wait_log(r"ACL file .* reloaded")
    deadline = time.monotonic() + 10
    pid = 100
    while True:  # the reload reaches the workers within a loop turn or two
        pid += 1
        pub.publish("feed/probe", b"%d" % pid, qos=1, pid=pid)
        if not drain(sub, 0.3):
            break
        assert time.monotonic() < deadline, "still delivered after SIGHUP"
    for i in range(20):
        pub.publish("feed/b", b"after %d" % i, qos=1, pid=200 + i)
    pub.publish("feed/c", b"q0", qos=0)
    assert drain(sub) == []
    b.wait_log(r"client 'carol-sub': subscription 'feed/#' is now denied by the ACL")

    # the subscription was kept, not dropped: allowed again, it delivers
    b.acl_path.write_text(ACL)
    b.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while True:
        pid += 1
        pub.publish("feed/probe2", b"%d" % pid, qos=1, pid=pid)
        if drain(sub, 0.3):
            break
        assert time.monotonic() < deadline, "not delivered again after SIGHUP"
    sub.disconnect()
    pub.disconnect()


@pytest.mark.parametrize("v5", [False, True])
def test_wildcard_overlapping_a_deny_rule_is_filtered(broker, tmp_path, v5):
    acl = tmp_path / "acl"
    acl.write_text("deny sub test/nosubscribe\nallow all #\n")
    b = broker(auth={"acl_file": str(acl)})
    pub = c3(b, "pub")
    pub.publish("test/nosubscribe", b"secret", qos=1, retain=True, pid=1)
    pub.publish("test/ret", b"visible", qos=1, retain=True, pid=2)
    sub = mqttraw.connect_v5(b.host, b.port, "sub") if v5 else c3(b, "sub")
    codes = sub.subscribe(1, [("#", 2), ("+/+", 1), ("test/nosubscribe", 0), ("test/+", 0)]).codes
    assert codes == [2, 1, 0x87 if v5 else 0x80, 0]
    got = drain(sub)
    assert [p.topic for p in got] == ["test/ret"] * 3  # one retained copy per filter
    for i in range(10):
        pub.publish("test/nosubscribe", b"no %d" % i, qos=i % 3, pid=10 + i)
        pub.publish("test/yes", b"yes %d" % i, qos=1, pid=40 + i)
        pub.publish("a/b/c", b"deep %d" % i, qos=0)
    got = drain(sub)
    topics = [p.topic for p in got]
    assert "test/nosubscribe" not in topics
    assert topics.count("test/yes") == 10 and topics.count("a/b/c") == 10
    sub.disconnect()
    pub.disconnect()


def test_client_id_binding(broker, tmp_path):
    b = start(broker, tmp_path, client_id_binding="prefix_username")
    for cid in ("alice", "alice-phone", "alice/2"):
        c3(b, cid, "alice", "a").disconnect()
    c3(b, "alicex", "alice", "a", rc=2).close()          # not a separator
    c3(b, "alice-phone", "bob", "b", rc=2).close()       # another user's id
    c3(b, "someone", rc=2).close()                       # anonymous: no id of its own
    c3(b, "", rc=0).disconnect()                         # assigned by the broker: fine
    c = mqttraw.RawClient5(b.host, b.port)
    assert c.connect("alice-1", username="bob", password="b").rc == 0x85
    c.close()
    b.wait_log(r"client id not bound to the user \(auth.client_id_binding\)")


def test_client_id_binding_exact(broker, tmp_path):
    b = start(broker, tmp_path, client_id_binding="username")
    c3(b, "bob", "bob", "b").disconnect()
    c3(b, "bob-1", "bob", "b", rc=2).close()
