"""The edges of a session moving between live nodes (issue 20;
src/cluster/cl_move.c; docs/cluster.md "A session that moves between live
nodes").

A clean-start CONNECT on b for an id whose persistent session a holds: b
needs nothing of a's, so b tells a at once (CL_F_MOVE_DROP) and a ends the
tombstone it kept for the move: its routes go from every node well before
the 10 s a kept an unasked tombstone, nothing is counted lost, and the
session's delayed will is published then (the session ended), as a clean
start ends a session on one node.  Before the fix a kept the tombstone
(subscribed, queueing) 10 s, so c still saw a's route after 3 s and the
will came at the 10 s.
Every wait polls with a deadline."""

import time

import pytest

from cluster_util import cluster, metric, needs_etcd  # noqa: F401
from conftest import IS_MOSQUITTO, wait_for
from mqttraw import SESSION_EXPIRY_INTERVAL as SE, WILL_DELAY_INTERVAL, connect_v5, sub_opts
from test_124_move_will import client_info, offline_on, wait_will, watcher
from test_77_cluster_owner import routes_seen, start

pytestmark = [pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only"), needs_etcd]


def test_clean_start_elsewhere_ends_the_old_session_at_once(cluster):
    a, b, c = start(cluster, 3)
    cid = "mc-x"
    w = watcher(c, "mc-watch", "mcwill/#")
    wait_for(lambda: routes_seen(a, c) >= 1, 10, what="a knows c's route")
    will = ("mcwill/" + cid, b"ended", 1, False, [(WILL_DELAY_INTERVAL, 30)])
    x = connect_v5(a.host, a.port, cid, clean_start=False, props=[(SE, 300)], will=will)
    assert x.subscribe(1, [("mc/x/#", sub_opts(1)), ("mc/y", sub_opts(1))]).codes == [1, 1]
    wait_for(lambda: routes_seen(c, a) == 2, 10, what="c knows a's 2 routes")
    x.close()  # no DISCONNECT: the will waits for its delay
    wait_for(lambda: offline_on(a, cid), 5, what="X offline on a")
    # a message queued for X on a: the clean start discards it
    p = connect_v5(c.host, c.port, "mc-pub")
    p.publish("mc/y", b"queued", qos=1, pid=1)
    wait_for(lambda: (client_info(a, cid) or {}).get("queued", 0) >= 1, 10, what="queued on a")
    t0 = time.monotonic()
    x = connect_v5(b.host, b.port, cid, clean_start=True, props=[(SE, 300)])
    assert x.connack.session_present == 0, x.connack
    # a's routes for X go from c well before a's 10 s bound
    wait_for(lambda: routes_seen(c, a) == 0, 3, what="a's routes gone from c")
    print("a's routes gone from c %.0f ms after the clean-start CONNECT on b"
          % ((time.monotonic() - t0) * 1000))
    # the old session ended: its will goes (as a clean start on one node)
    m, _ = wait_will(w, 3)
    assert m is not None and (m.topic, m.payload) == ("mcwill/" + cid, b"ended"), m
    assert metric(a, "antenna_cluster_move_discarded_total") == 1
    assert metric(a, "antenna_cluster_move_lost_total") == 0
    x.close()
    p.close()
    w.close()


