"""A delayed will (MQTT 5 Will Delay Interval) when its session moves
between live nodes (issue 20; src/cluster/cl_move.c; docs/cluster.md "A
session that moves between live nodes", its step 7).

Three nodes a, b, c (etcd).  Client X (MQTT 5, clean start 0, session
expiry 60 s, a will with a Will Delay Interval) connects to a; a watcher on
c subscribes to the will's topic.
- X's connection ends without DISCONNECT and X resumes its session on b
  within the delay: a new connection to the session was made before the
  delay passed, so the will is never sent [MQTT-3.1.3-9].  Before the fix
  a's tombstone of the moved session published it when it ended (0.5 s
  after b's ask).
- X does not come back: a publishes the will once the delay passed, and c
  gets it.
- X still connected and taken over (0x8E) by a CONNECT on the same node
  or on b: a will with a delay is not sent when the new connection resumes
  the session, and is when it starts clean [MQTT5 3.1.4].
Every wait polls with a deadline; "no will" is a bounded quiet read that
ends with a marker published after the will would have been."""

import json
import time

import pytest

from cluster_util import cluster, metric, needs_etcd  # noqa: F401
from conftest import IS_MOSQUITTO, wait_for
from helpers import receive_publishes
from mqttraw import SESSION_EXPIRY_INTERVAL as SE, WILL_DELAY_INTERVAL, connect_v5, sub_opts
from test_77_cluster_owner import routes_seen, start

pytestmark = [pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only"), needs_etcd]


def client_info(node, cid):
    """GET /api/v1/clients/<cid>: the client's object, or None when the
    node has no session of that id."""
    st, _, raw = node.client.call("GET", "/api/v1/clients/" + cid)
    if st == 404:
        return None
    assert st == 200, (st, raw[:300])
    j = json.loads(raw)
    return j.get("client", j)


def offline_on(node, cid):
    info = client_info(node, cid)
    return info is not None and not info.get("connected", True)


def watcher(node, cid, topic):
    w = connect_v5(node.host, node.port, cid)
    assert w.subscribe(1, [(topic, sub_opts(1))]).codes == [1]
    return w


def wait_will(w, timeout):
    """(PUBLISH, seconds waited) of the next message, or (None, timeout)."""
    t0 = time.monotonic()
    try:
        pubs = receive_publishes(w, 1, timeout=timeout)
    except AssertionError:
        return None, timeout
    return pubs[0], time.monotonic() - t0


def test_delayed_will_cancelled_when_the_session_resumes_on_another_node(cluster):
    a, b, c = start(cluster, 3)
    cid, delay = "mw-back", 3
    w = watcher(c, "mw-watch", "mwill/#")
    wait_for(lambda: routes_seen(a, c) >= 1 and routes_seen(b, c) >= 1, 10,
             what="a and b know c's route")
    will = ("mwill/" + cid, b"gone", 1, False, [(WILL_DELAY_INTERVAL, delay)])
    x = connect_v5(a.host, a.port, cid, clean_start=False, props=[(SE, 60)], will=will)
    x.close()  # no DISCONNECT: the will waits for its delay on a
    closed = time.monotonic()
    wait_for(lambda: offline_on(a, cid), 5, what="X offline on a")
    # back on b before the delay passed: the session moves from a
    x = connect_v5(b.host, b.port, cid, clean_start=False, props=[(SE, 60)], will=will)
    assert x.connack.session_present == 1, x.connack
    assert time.monotonic() - closed < delay, "the reconnect took longer than the will delay"
    # a's tombstone ends (its linger), and the delay passes
    wait_for(lambda: client_info(a, cid) is None, 15, what="the tombstone on a gone")
    while time.monotonic() < closed + delay + 1.0:
        time.sleep(0.05)
    # a marker published on a after both: the watcher reads up to it
    p = connect_v5(a.host, a.port, "mw-pub")
    p.publish("mwill/marker", b"marker", qos=1, pid=1)
    got = [m.payload for m in receive_publishes(w, 1, timeout=10, quiet=0.5)]
    assert got == [b"marker"], "a will came though X resumed in time: %r" % got
    assert metric(a, "antenna_cluster_move_wills_cancelled_total") == 1
    # control: X's connection on b ends without DISCONNECT: b publishes
    # its will after the delay, and c gets it
    x.close()
    m, waited = wait_will(w, delay + 10)
    assert m is not None and (m.topic, m.payload) == ("mwill/" + cid, b"gone"), m
    assert waited >= delay - 0.5, waited
    p.close()
    w.close()


def test_delayed_will_published_when_the_client_does_not_come_back(cluster):
    a, b, c = start(cluster, 3)
    cid, delay = "mw-gone", 2
    w = watcher(c, "mw-watch2", "mwill/#")
    wait_for(lambda: routes_seen(a, c) >= 1, 10, what="a knows c's route")
    will = ("mwill/" + cid, b"gone", 1, False, [(WILL_DELAY_INTERVAL, delay)])
    x = connect_v5(a.host, a.port, cid, clean_start=False, props=[(SE, 60)], will=will)
    x.close()
    m, waited = wait_will(w, delay + 10)
    assert m is not None and (m.topic, m.payload) == ("mwill/" + cid, b"gone"), m
    assert waited >= delay - 0.5, waited
    assert offline_on(a, cid), "the session on a should outlive its will"
    w.close()


def takeover(first_node, second_node, w, cid, clean_start, delay):
    """X (will with a delay) connected on first_node, taken over (0x8E) by
    a CONNECT of the same id on second_node with clean_start.  The payloads
    the watcher w got up to a marker published once the delay passed."""
    will = ("mwill/" + cid, b"taken", 1, False, [(WILL_DELAY_INTERVAL, delay)])
    first = connect_v5(first_node.host, first_node.port, cid, clean_start=False,
                       props=[(SE, 60)], will=will)
    second = connect_v5(second_node.host, second_node.port, cid, clean_start=clean_start,
                        props=[(SE, 60)])
    assert second.connack.session_present == (0 if clean_start else 1), second.connack
    first.expect_disconnect(0x8E, timeout=5)
    taken = time.monotonic()
    while time.monotonic() < taken + delay + 1.0:
        time.sleep(0.05)
    p = connect_v5(first_node.host, first_node.port, cid + "-pub")
    p.publish("mwill/marker", b"marker", qos=1, pid=1)
    got = [m.payload for m in receive_publishes(w, 1, timeout=10, quiet=0.5)]
    p.close()
    second.close()
    return got


def test_takeover_of_a_connected_client_and_its_delayed_will(cluster):
    """[MQTT5 3.1.4, "Session taken over"]: the old connection's will with
    a delay is not sent when the new connection resumes the session (a new
    connection was made before the delay passed); it is when the new one
    starts clean (the session ends).  On one node and across two, where
    the old node's tombstone holds it until the new node says which."""
    a, b, c = start(cluster, 3)
    delay = 2
    w = watcher(c, "mw-watch3", "mwill/#")
    wait_for(lambda: routes_seen(a, c) >= 1 and routes_seen(b, c) >= 1, 10,
             what="a and b know c's route")
    # one node
    assert takeover(a, a, w, "mw-local", False, delay) == [b"marker"]
    assert takeover(a, a, w, "mw-local-clean", True, delay) == [b"taken", b"marker"]
    # across nodes
    assert takeover(a, b, w, "mw-take", False, delay) == [b"marker"]
    assert takeover(a, b, w, "mw-take-clean", True, delay) == [b"taken", b"marker"]
    w.close()
