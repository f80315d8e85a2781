"""A cluster node's memory and CPU at scale (issue 20; src/cluster/cl_link.c,
cl_route.c; docs/cluster.md "Node links", "Routes"; docs/benchmarks.md
"Cluster: where a node's memory goes").

- A link's buffers go back once it is quiet: a 700 KB message grows the
  sender's output and the receiver's input for one frame; a tick later
  both links hold a few kB again (`link_state.buffer_bytes`, with the peak
  in `buffer_peak`).  Before, a drained output of up to 1 MB stayed with
  its link for good, and every link kept a 64-128 kB input buffer.
- Reads of every link go through one buffer of the link thread and a link
  keeps only the frame it read in part: many mid-sized messages from two
  nodes at once (frames split across reads everywhere) all arrive, each
  publisher's in order.
- Route changes are written once per run of the link thread's tasks (with
  their ROUTE_MARK) instead of one write per route and link: many clients
  subscribing at once on one node still get their SUBACK only once every
  node has the route (a publish on another node right after each SUBACK
  arrives)."""

import os
import queue
import threading

import pytest

from conftest import IS_MOSQUITTO, wait_for
from test_73_cluster_links import client, get, publish
from test_101_cluster_bloom import cluster, subscribe  # noqa: F401

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only")
SANITIZED = os.environ.get("ANTENNA_SANITIZED") == "1"
SMALL = 16384  # what an idle link may hold: a PING's buffer, a partial frame


def close_all(*cs):
    """Disconnect every client, then stop their loops (a loop stopped
    first takes up to a second per client to end)."""
    for c in cs:
        c.disconnect()
    for c in cs:
        c.loop_stop()


def test_link_buffers_shrink_after_a_burst(cluster):
    cl = cluster(2)
    cl.wait_links()
    sb = client(cl.nodes["b"], "sb")
    subscribe(sb, "big/one", 1)
    cl.wait_routes("a", "b", lambda n: n == 1)
    pub = client(cl.nodes["a"], "pub")
    payload = os.urandom(700 * 1024)
    publish(pub, "big/one", payload, qos=1)
    m = get(sb, 20)
    assert m.payload == payload
    # the sender's output held the whole frame once
    wait_for(lambda: cl.link("a", "b")["buffer_peak"] >= len(payload), 10,
             what="a's link to b: its peak")
    # ... and both ends give their buffers back within a few ticks
    wait_for(lambda: cl.link("a", "b")["buffer_bytes"] <= SMALL, 15,
             what="a's link to b back under %d B" % SMALL)
    wait_for(lambda: cl.link("b", "a")["buffer_bytes"] <= SMALL, 15,
             what="b's link to a back under %d B" % SMALL)
    # the link still works afterwards
    publish(pub, "big/one", b"small", qos=1)
    assert get(sb, 10).payload == b"small"
    close_all(sb, pub)


def test_split_frames_from_two_nodes_at_once(cluster):
    cl = cluster(3)
    cl.wait_links()
    sc = client(cl.nodes["c"], "sc")
    subscribe(sc, "mid/#", 1)
    cl.wait_routes("a", "c", lambda n: n == 1)
    cl.wait_routes("b", "c", lambda n: n == 1)
    n = 150 if SANITIZED else 400
    pubs = {name: client(cl.nodes[name], "pub-" + name) for name in ("a", "b")}
    for p in pubs.values():
        p.max_inflight_messages_set(100)

    def run(name):
        p = pubs[name]
        infos = [p.publish("mid/" + name, b"%s:%05d:" % (name.encode(), i) + b"x" * (7000 + i % 997),
                           qos=1) for i in range(n)]
        for info in infos:
            info.wait_for_publish(60)

    ts = [threading.Thread(target=run, args=(name,)) for name in pubs]
    for t in ts:
        t.start()
    got = {"a": [], "b": []}
    for _ in range(2 * n):
        m = sc.q.get(timeout=60)
        name, seq, _ = m.payload.split(b":", 2)
        assert len(m.payload) == len(b"a:00000:") + 7000 + int(seq) % 997
        got[name.decode()].append(int(seq))
    for t in ts:
        t.join(60)
    for name in got:  # each publisher's messages in order, none lost or doubled
        assert got[name] == list(range(n)), name
    with pytest.raises(queue.Empty):
        sc.q.get(timeout=0.3)
    close_all(sc, *pubs.values())


def test_concurrent_subscribes_suback_after_routes(cluster):
    cl = cluster(3)
    cl.wait_links()
    k = 20 if SANITIZED else 60
    subs = [client(cl.nodes["a"], "s%d" % i) for i in range(k)]
    pub = client(cl.nodes["b"], "pub")
    acked = queue.Queue()
    for i, s in enumerate(subs):
        s.on_subscribe = (lambda i: lambda *a: acked.put(i))(i)
    for i, s in enumerate(subs):  # all at once: the link thread batches them
        s.subscribe([("dev/s%d/in" % i, 1), ("bcast", 1)])
    for _ in range(k):
        i = acked.get(timeout=30)
        # the SUBACK came: b has the route already, so this is forwarded
        publish(pub, "dev/s%d/in" % i, b"hello %d" % i)
    for i, s in enumerate(subs):
        assert get(s, 10).payload == b"hello %d" % i
    cl.wait_routes("c", "a", lambda n: n == k + 1)
    publish(pub, "bcast", b"all")
    for s in subs:
        assert get(s, 10).payload == b"all"
    close_all(pub, *subs)
