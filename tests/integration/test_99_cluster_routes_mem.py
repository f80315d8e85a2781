"""Compact remote routes (src/broker/rtab.c, src/cluster/cl_route.c;
docs/cluster.md "Routes"): another node's exact filters live in the
router's hash table, its wildcard and shared ones in the trie.  Across
three static nodes: exact and wildcard routes forward once per node,
unsubscribe / resubscribe, a restarted node's resync drops its stale
exact routes (nothing more is forwarded to it), a node that leaves
(etcd) takes its routes along, and a node that learns thousands of exact
routes grows by well under 120 B each (the trie took ~265)."""

import os
import queue

import pytest

from cluster_util import cluster as ecluster, metric, needs_etcd, wait_members  # noqa: F401
from conftest import IS_MOSQUITTO, stop_all, wait_for
from test_61_modules import SectionBroker
from test_73_cluster_links import Cluster, client, close, get, publish

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only")
SANITIZED = os.environ.get("ANTENNA_SANITIZED") == "1"


class BigCluster(Cluster):
    """test_73's static cluster, one worker, no subscription cap."""

    def start(self, name):
        b = SectionBroker(self.tmp_path, len(self.started), self.section(name),
                          {"api": {"keys_file": str(self.keys)}, "persistence": {"enabled": False},
                           "workers": 1, "limits": {"max_subscriptions": 0}})
        self.started.append(b)
        b.start()
        self.nodes[name] = b
        return b


@pytest.fixture
def cluster(tmp_path):
    made = []

    def make(n=3):
        c = BigCluster(tmp_path, n)
        made.append(c)
        for name in c.names:
            c.start(name)
        return c
    yield make
    for c in made:
        stop_all(c.started)


def subscribe(c, topics, qos=1, timeout=20):
    """SUBSCRIBE (one filter or a list of (filter, qos)) and wait for the
    SUBACK (which waits for every node to have the routes)."""
    done = queue.Queue()
    c.on_subscribe = lambda *a: done.put(1)
    c.subscribe(topics, qos) if isinstance(topics, str) else c.subscribe(topics)
    done.get(timeout=timeout)


def forwarded(cl, on, to):
    """Messages node `on` forwarded to node `to` (every QoS)."""
    return sum(cl.view(on)[to]["link_state"]["forwarded"])


def none_more(c, timeout=0.3):
    try:
        m = c.q.get(timeout=timeout)
    except queue.Empty:
        return
    raise AssertionError("unexpected message %r %r" % (m.topic, m.payload))


def test_exact_and_wildcard_routes_forward_once(cluster):
    cl = cluster()
    cl.wait_links()
    sb = client(cl.nodes["b"], "sb")
    sc = client(cl.nodes["c"], "sc")
    subscribe(sb, "r/1/in", 1)
    subscribe(sc, "r/1/in", 1)
    subscribe(sc, "r/+/in", 0)     # overlaps the exact one: still one copy
    subscribe(sc, "all", 1)
    subscribe(sb, "all", 1)
    cl.wait_routes("a", "b", lambda n: n == 2)
    cl.wait_routes("a", "c", lambda n: n == 3)
    pub = client(cl.nodes["a"], "pub")
    for i in range(3):
        publish(pub, "r/1/in", b"x%d" % i)
        publish(pub, "all", b"y%d" % i)
    for s in (sb, sc):
        got = [(m.topic, m.payload) for m in (get(s) for _ in range(6))]
        assert sorted(got) == sorted([("r/1/in", b"x%d" % i) for i in range(3)] +
                                     [("all", b"y%d" % i) for i in range(3)]), got
    publish(pub, "r/2/in", b"wild")  # only c's wildcard
    m = get(sc)
    assert (m.topic, m.payload) == ("r/2/in", b"wild"), (m.topic, m.payload)
    none_more(sb)
    # c drops its exact filter: its wildcard still takes r/1/in, b's exact too
    sc.unsubscribe("r/1/in")
    cl.wait_routes("a", "c", lambda n: n == 2)
    sc.unsubscribe("r/+/in")
    cl.wait_routes("a", "c", lambda n: n == 1)
    sent = forwarded(cl, "a", "c")
    publish(pub, "r/1/in", b"only-b")
    publish(pub, "all", b"marker")
    assert get(sb).payload == b"only-b"
    assert get(sb).payload == b"marker"
    m = get(sc)
    assert (m.topic, m.payload) == ("all", b"marker"), (m.topic, m.payload)
    assert forwarded(cl, "a", "c") == sent + 1  # r/1/in did not go to c
    # resubscribe: forwarded again
    subscribe(sc, "r/1/in", 1)
    cl.wait_routes("a", "c", lambda n: n == 2)
    publish(pub, "r/1/in", b"again")
    assert get(sc).payload == b"again"
    assert get(sb).payload == b"again"
    none_more(sc)
    close(sb, sc, pub)


def test_restart_resync_drops_stale_exact_routes(cluster):
    cl = cluster()
    cl.wait_links()
    sc = client(cl.nodes["c"], "sc")
    sc.subscribe([("s/%d" % i, 1) for i in range(200)] + [("w/#", 1)])
    cl.wait_routes("a", "c", lambda n: n == 201)
    cl.wait_routes("b", "c", lambda n: n == 201)
    # c is killed: a keeps its routes until c's resync
    cl.nodes["c"].kill()
    wait_for(lambda: cl.view("a")["c"]["link_state"]["state"] != "up", 15, what="a sees c down")
    assert cl.view("a")["c"]["link_state"]["routes"] == 201
    cl.start("c")
    cl.wait_links()
    cl.wait_routes("a", "c", lambda n: n == 0, timeout=15, what="stale routes swept")
    sc2 = client(cl.nodes["c"], "sc2")
    subscribe(sc2, "s/keep", 1)
    cl.wait_routes("a", "c", lambda n: n == 1)
    cl.wait_routes("b", "c", lambda n: n == 1)
    pub = client(cl.nodes["a"], "pub")
    sent = forwarded(cl, "a", "c")
    for i in range(0, 200, 20):
        publish(pub, "s/%d" % i, b"stale")
    publish(pub, "w/x", b"stale")
    publish(pub, "s/keep", b"live")
    m = get(sc2)
    assert (m.topic, m.payload) == ("s/keep", b"live")
    assert forwarded(cl, "a", "c") == sent + 1, "a stale route was still forwarded to"
    close(sc2, pub)


def remote_route_growth(cl, n, timeout):
    """Node a subscribes to n exact filters dev/<i>/in (after 500 to warm
    b's link buffers and first table sizes); returns (a's client, b's RSS
    growth in bytes, per route) once b has every route."""
    b = cl.nodes["b"]

    def rss():
        with open("/proc/%d/status" % b.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")
    sa = client(cl.nodes["a"], "sa")
    subscribe(sa, [("warm/%d" % i, 0) for i in range(500)])
    cl.wait_routes("b", "a", lambda k: k == 500, timeout=20)
    before = rss()
    for start in range(0, n, 1000):
        subscribe(sa, [("dev/%d/in" % i, 0) for i in range(start, start + 1000)])
    cl.wait_routes("b", "a", lambda k: k == n + 500, timeout=timeout)
    grown = rss() - before
    print("b grew by %d B for %d exact routes: %.1f B each" % (grown, n, grown / n))
    return sa, grown, grown / n


def test_memory_per_remote_exact_route(cluster):
    cl = cluster(2)
    cl.wait_links()
    b = cl.nodes["b"]
    n = 8000
    sa, grown, per = remote_route_growth(cl, n, 30)
    pub = client(b, "pub")
    publish(pub, "dev/%d/in" % (n - 1), b"last")
    assert get(sa).payload == b"last"
    if not SANITIZED:  # ASan's allocator and quarantine are not the broker's memory
        assert per < 120, "b grew by %.0f B per remote route (%d B for %d)" % (per, grown, n)
    close(sa, pub)


@needs_etcd
def test_a_node_that_leaves_takes_its_routes(ecluster):
    ecluster.start_etcd()
    a, b, c = ecluster.start_nodes(3, lease_ttl="30s")
    wait_members([a, b, c], 3)
    base = metric(a, "antenna_subscriptions")
    sc = client(c, "sc")
    subscribe(sc, [("e/%d" % i, 1) for i in range(50)] + [("e/+/w", 1)])
    wait_for(lambda: metric(a, "antenna_subscriptions") == base + 51, 15, what="c's routes on a")
    close(sc)
    c.stop()
    wait_members([a, b], ["node0", "node1"], timeout=10)
    wait_for(lambda: metric(a, "antenna_subscriptions") == base, 15, what="c's routes gone")
