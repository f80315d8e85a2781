"""Rounds of route changes clocked by the peers' answers (issue 20;
src/cluster/cl_route.c cl_route_marks; docs/cluster.md "Routes").

A node writes its route changes to its links in rounds, each ending with a
ROUTE_MARK that every peer answers.  While a peer has not answered the last
round, the next one waits for the answers, CL_MARK_HOLD_MS (250 ms) at
most: with 52 peers under a storm of SUBSCRIBEs a round then carries the
changes of everything the last one took, not of 20 ms.

- A peer that does not answer (SIGSTOP) keeps the others from no route:
  a filter subscribed on a while a round is not answered by the frozen
  node reaches b in well under the 6 s a silent link lasts (the hold is
  250 ms at most); once it answers again the rounds go on and the next
  SUBACK comes well before the barrier's 2 s bound.
- The barrier still holds: many clients subscribing at once on a get their
  SUBACK only once every node has their route (a publish on b right after
  each SUBACK arrives), and they take fewer rounds than SUBSCRIBEs
  (antenna_cluster_route_mark_rounds_total)."""

import os
import queue
import signal
import time

import pytest

from conftest import IS_MOSQUITTO, freeze
from test_73_cluster_links import client, get, publish
from test_101_cluster_bloom import cluster  # noqa: F401
from test_105_scale_mem import close_all

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only")
SANITIZED = os.environ.get("ANTENNA_SANITIZED") == "1"


def mark_rounds(cl, name):
    st, _, raw = cl.api(name).call("GET", "/metrics")
    assert st == 200, st
    for line in raw.decode().splitlines():
        if line.startswith("antenna_cluster_route_mark_rounds_total "):
            return int(line.split()[1])
    raise AssertionError("no antenna_cluster_route_mark_rounds_total in %s's metrics" % name)


def test_unanswered_round_holds_the_next_one_briefly(cluster):
    cl = cluster(3)
    cl.wait_links()
    s1 = client(cl.nodes["a"], "hold-s1")
    s2 = client(cl.nodes["a"], "hold-s2")
    base = cl.view("b")["a"]["link_state"]["routes"]
    freeze(cl.nodes["c"].proc.pid)
    try:
        # a round c does not answer, then a change while it is unanswered
        s1.subscribe("hold/1", 1)
        cl.wait_routes("b", "a", lambda n: n == base + 1, timeout=5)
        t0 = time.monotonic()
        s2.subscribe("hold/2", 1)
        # b gets the route within the hold (250 ms) and the host's delays;
        # held until c's link is closed as silent it would be 6 s (s2's
        # SUBACK, and what follows it, waits for c: CL_ROUTE_WAIT_MS, 2 s;
        # hence b's view, not a message)
        cl.wait_routes("b", "a", lambda n: n == base + 2, timeout=3.5)
        assert time.monotonic() - t0 < 3.5
    finally:
        os.kill(cl.nodes["c"].proc.pid, signal.SIGCONT)
    # c answers again: the rounds go on, clocked by its answers, and a new
    # SUBSCRIBE is answered once all three have the route, well before the
    # barrier's 2 s bound (rounds stalled behind the frozen peer's missing
    # answers would leave it to that bound)
    cl.wait_routes("c", "a", lambda n: n == base + 2, timeout=10)
    s3 = client(cl.nodes["a"], "hold-s3")
    done = queue.Queue()
    s3.on_subscribe = lambda *a: done.put(time.monotonic())
    t1 = time.monotonic()
    s3.subscribe("hold/3", 1)
    assert done.get(timeout=10) - t1 < 1.5
    cl.wait_routes("c", "a", lambda n: n == base + 3, timeout=1)
    close_all(s1, s2, s3)


def test_burst_of_subscribes_fewer_rounds_barrier_kept(cluster):
    cl = cluster(3)
    cl.wait_links()
    k = 20 if SANITIZED else 60
    subs = [client(cl.nodes["a"], "r%d" % i) for i in range(k)]
    pub = client(cl.nodes["c"], "burst-pub")
    before = mark_rounds(cl, "a")
    acked = queue.Queue()
    for i, s in enumerate(subs):
        s.on_subscribe = (lambda i: lambda *a: acked.put(i))(i)
    for i, s in enumerate(subs):  # all at once
        s.subscribe([("burst/%d" % i, 1)])
    for _ in range(k):
        i = acked.get(timeout=30)
        publish(pub, "burst/%d" % i, b"hello %d" % i)  # c has the route already
    for i, s in enumerate(subs):
        assert get(s, 10).payload == b"hello %d" % i
    rounds = mark_rounds(cl, "a") - before
    assert 1 <= rounds < k, rounds
    close_all(pub, *subs)
