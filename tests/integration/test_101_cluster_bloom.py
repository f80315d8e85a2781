"""Remote exact routes in a counting Bloom filter per peer (src/broker/rbloom.c,
src/cluster/cl_route.c; docs/cluster.md "Routes"): a peer with more exact
filters than cluster.route_bloom_above has them in a Bloom filter, one with
fewer in the exact table.  Across static nodes: routes above and below the
threshold forward (subscribe, publish, unsubscribe, resubscribe), a peer
crossing the threshold by deltas moves into a filter, a filter that doubled
is rebuilt by a resync (and one that shrank goes back to the table), a
restarted node's resync drops its stale routes, a node that leaves (etcd)
takes its filter along, spurious forwards are dropped and counted on the
receiving node (a QoS 1 publisher still gets its PUBACKs), and a node that
learns 16,000 exact routes grows by well under 20 B each (60 before).

The nodes run with cluster.route_bits: false: the receiver's counting
filter is what a node builds for a peer that does not ship its exact routes
as bits (test_107_route_bits.py tests those)."""

import os
import queue

import pytest

from cluster_util import cluster as ecluster, metric, needs_etcd, wait_members  # noqa: F401
from conftest import IS_MOSQUITTO, stop_all, wait_for
from test_61_modules import SectionBroker
from test_73_cluster_links import Cluster, client, close, get, publish

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only")
SANITIZED = os.environ.get("ANTENNA_SANITIZED") == "1"


class BloomCluster(Cluster):
    """test_73's static cluster, one worker, no subscription cap, and a
    given cluster.route_bloom_above (None: the default)."""

    above = None

    def section(self, name):
        s = super().section(name) + "  route_bits: false\n"
        if self.above is not None:
            s += "  route_bloom_above: %d\n" % self.above
        return s

    def start(self, name):
        b = SectionBroker(self.tmp_path, len(self.started), self.section(name),
                          {"api": {"keys_file": str(self.keys)}, "persistence": {"enabled": False},
                           "workers": 1, "limits": {"max_subscriptions": 0}})
        self.started.append(b)
        b.start()
        self.nodes[name] = b
        return b

    def link(self, on, of):
        return self.view(on)[of]["link_state"]


@pytest.fixture
def cluster(tmp_path):
    made = []

    def make(n=3, above=None):
        c = BloomCluster(tmp_path, n)
        c.above = above
        made.append(c)
        for name in c.names:
            c.start(name)
        return c
    yield make
    for c in made:
        stop_all(c.started)


def subscribe(c, topics, qos=1, timeout=30):
    """SUBSCRIBE (one filter or a list of (filter, qos)) and wait for the
    SUBACK (which waits for every node to have the routes)."""
    done = queue.Queue()
    c.on_subscribe = lambda *a: done.put(1)
    c.subscribe(topics, qos) if isinstance(topics, str) else c.subscribe(topics)
    done.get(timeout=timeout)


def unsubscribe(c, topics, timeout=30):
    done = queue.Queue()
    c.on_unsubscribe = lambda *a: done.put(1)
    c.unsubscribe(topics)
    done.get(timeout=timeout)


def forwarded(cl, on, to):
    return sum(cl.link(on, to)["forwarded"])


def none_more(c, timeout=0.3):
    try:
        m = c.q.get(timeout=timeout)
    except queue.Empty:
        return
    raise AssertionError("unexpected message %r %r" % (m.topic, m.payload))


def drain(c, want, timeout=10):
    """The payloads of `want` messages (any order)."""
    return sorted(get(c, timeout).payload for _ in range(want))


def test_routes_above_and_below_the_threshold(cluster):
    cl = cluster(3, above=50)
    cl.wait_links()
    sb = client(cl.nodes["b"], "sb")
    sc = client(cl.nodes["c"], "sc")
    subscribe(sb, [("b/%d/in" % i, 1) for i in range(200)])  # above: a filter
    subscribe(sc, [("c/%d/in" % i, 1) for i in range(30)])   # below: the table
    subscribe(sc, "b/7/in", 1)                               # both nodes, one topic
    cl.wait_routes("a", "b", lambda n: n == 200)
    cl.wait_routes("a", "c", lambda n: n == 31)
    assert cl.link("a", "b")["route_bloom_bytes"] > 0
    assert cl.link("a", "c")["route_bloom_bytes"] == 0
    pub = client(cl.nodes["a"], "pub")
    for i in (0, 7, 199):
        publish(pub, "b/%d/in" % i, b"b%d" % i)
    publish(pub, "c/29/in", b"c29")
    assert drain(sb, 3) == [b"b0", b"b199", b"b7"]
    assert drain(sc, 2) == [b"b7", b"c29"]
    # c crosses the threshold by deltas: its table pairs move into a filter
    subscribe(sc, [("c/%d/in" % i, 1) for i in range(30, 100)])
    cl.wait_routes("a", "c", lambda n: n == 101)
    wait_for(lambda: cl.link("a", "c")["route_bloom_bytes"] > 0, 10, what="c in a filter")
    for i in (0, 29, 30, 99):  # from before and after the move
        publish(pub, "c/%d/in" % i, b"c%d" % i)
    assert drain(sc, 4) == [b"c0", b"c29", b"c30", b"c99"]
    # unsubscribe: no longer delivered (a spurious forward is dropped on b)
    unsubscribe(sb, ["b/%d/in" % i for i in range(100)])
    cl.wait_routes("a", "b", lambda n: n == 100)
    for i in (0, 50, 99):
        publish(pub, "b/%d/in" % i, b"gone")
    publish(pub, "b/150/in", b"kept")
    assert get(sb).payload == b"kept"
    none_more(sb)
    # resubscribe: forwarded again
    subscribe(sb, "b/50/in", 1)
    cl.wait_routes("a", "b", lambda n: n == 101)
    publish(pub, "b/50/in", b"again")
    assert get(sb).payload == b"again"
    close(sb, sc, pub)


def test_filter_grows_by_resync_and_shrinks_back(cluster):
    cl = cluster(2, above=50)
    cl.wait_links()
    sb = client(cl.nodes["b"], "sb")
    subscribe(sb, [("g/%d" % i, 0) for i in range(60)])
    cl.wait_routes("a", "b", lambda n: n == 60)
    wait_for(lambda: cl.link("a", "b")["route_bloom_bytes"] > 0, 10, what="a filter")
    small = cl.link("a", "b")["route_bloom_bytes"]
    # past twice what it was sized for: a asks b for a full sync and
    # rebuilds a bigger filter
    for start in range(60, 1000, 235):
        subscribe(sb, [("g/%d" % i, 0) for i in range(start, min(start + 235, 1000))])
    cl.wait_routes("a", "b", lambda n: n == 1000)
    wait_for(lambda: cl.link("a", "b")["route_resyncs"] >= 1, 10, what="a resync asked")
    wait_for(lambda: cl.link("a", "b")["route_bloom_bytes"] > small, 10, what="a bigger filter")
    assert cl.link("a", "b")["route_bloom_bytes"] <= 1000 * 8 + 64  # 8 B a route at most
    pub = client(cl.nodes["a"], "pub")
    for i in (0, 59, 60, 999):
        publish(pub, "g/%d" % i, b"%d" % i, qos=0)
    assert drain(sb, 4) == [b"0", b"59", b"60", b"999"]
    # down to a few: back into the exact table
    unsubscribe(sb, ["g/%d" % i for i in range(10, 1000)])
    cl.wait_routes("a", "b", lambda n: n == 10)
    wait_for(lambda: cl.link("a", "b")["route_bloom_bytes"] == 0, 10, what="back to the table")
    assert cl.link("a", "b")["routes"] == 10
    sent = forwarded(cl, "a", "b")
    for i in range(10, 200, 10):  # gone: the table is exact, nothing goes
        publish(pub, "g/%d" % i, b"gone", qos=0)
    publish(pub, "g/9", b"nine", qos=0)
    assert get(sb).payload == b"nine"
    assert forwarded(cl, "a", "b") == sent + 1
    close(sb, pub)


def test_spurious_forwards_dropped_and_counted(cluster):
    cl = cluster(2, above=1)
    cl.wait_links()
    sb = client(cl.nodes["b"], "sb")
    subscribe(sb, [("s/%d" % i, 1) for i in range(120)])
    cl.wait_routes("a", "b", lambda n: n == 120)
    assert cl.link("a", "b")["route_bloom_bytes"] > 0
    pub = client(cl.nodes["a"], "pub")
    pub.max_inflight_messages_set(200)
    sent0, unmatched0 = forwarded(cl, "a", "b"), cl.link("b", "a")["unmatched"]
    # topics b has no subscriber for: the filter lets a few through
    n = 6000
    infos = [pub.publish("none/%d" % i, b"x", qos=1 if i % 3 == 0 else 0) for i in range(n)]
    for info in infos:  # every QoS 1 publish acknowledged: nobody held
        info.wait_for_publish(timeout=30)
        assert info.is_published()
    publish(pub, "s/5", b"marker")  # after them on the link
    assert get(sb).payload == b"marker"
    spurious = forwarded(cl, "a", "b") - sent0 - 1
    print("%d spurious forwards for %d publishes" % (spurious, n))
    assert 0 < spurious < n * 0.05, spurious  # ~0.2-3 %
    wait_for(lambda: cl.link("b", "a")["unmatched"] - unmatched0 == spurious, 10,
             what="b counted each spurious forward")
    none_more(sb)
    close(sb, pub)


def test_restart_resync_drops_stale_routes(cluster):
    cl = cluster(3, above=50)
    cl.wait_links()
    sc = client(cl.nodes["c"], "sc")
    subscribe(sc, [("r/%d" % i, 1) for i in range(300)])
    cl.wait_routes("a", "c", lambda n: n == 300)
    cl.wait_routes("b", "c", lambda n: n == 300)
    assert cl.link("a", "c")["route_bloom_bytes"] > 0
    cl.nodes["c"].kill()
    wait_for(lambda: cl.link("a", "c")["state"] != "up", 15, what="a sees c down")
    assert cl.link("a", "c")["routes"] == 300  # kept until c's resync
    cl.start("c")
    cl.wait_links()
    cl.wait_routes("a", "c", lambda n: n == 0, timeout=15, what="stale routes swept")
    wait_for(lambda: cl.link("a", "c")["route_bloom_bytes"] == 0, 10, what="filter dropped")
    sc2 = client(cl.nodes["c"], "sc2")
    subscribe(sc2, [("r/%d" % i, 1) for i in range(1000, 1100)] + [("r/keep", 1)])
    cl.wait_routes("a", "c", lambda n: n == 101)
    assert cl.link("a", "c")["route_bloom_bytes"] > 0
    pub = client(cl.nodes["a"], "pub")
    sent = forwarded(cl, "a", "c")
    for i in range(0, 300, 30):  # stale: at most a false positive goes
        publish(pub, "r/%d" % i, b"stale")
    publish(pub, "r/keep", b"live")
    publish(pub, "r/1050", b"new")
    assert drain(sc2, 2) == [b"live", b"new"]
    assert forwarded(cl, "a", "c") - sent <= 2 + 3, "stale routes were still forwarded to"
    none_more(sc2)
    close(sc2, pub)


def test_restarted_receiver_builds_its_filter_from_the_sync(cluster):
    """a restarts while b has 300 exact routes: a's link-up sync passes the
    threshold with nothing known of b (a filter for twice the threshold),
    finds it short at SYNC_END and asks once more, sized right."""
    cl = cluster(2, above=50)
    cl.wait_links()
    sb = client(cl.nodes["b"], "sb")
    subscribe(sb, [("x/%d" % i, 1) for i in range(300)])
    cl.wait_routes("a", "b", lambda n: n == 300)
    cl.nodes["a"].kill()
    wait_for(lambda: cl.link("b", "a")["state"] != "up", 15, what="b sees a down")
    cl.start("a")
    cl.wait_links()
    cl.wait_routes("a", "b", lambda n: n == 300, timeout=15)
    wait_for(lambda: cl.link("a", "b")["route_resyncs"] == 1, 10, what="one resync")
    wait_for(lambda: 300 * 8 <= cl.link("a", "b")["route_bloom_bytes"] <= 300 * 8 + 64, 10,
             what="a filter sized for 300")
    pub = client(cl.nodes["a"], "pub")
    for i in (0, 150, 299):
        publish(pub, "x/%d" % i, b"%d" % i)
    assert drain(sb, 3) == sorted(b"%d" % i for i in (0, 150, 299))
    close(sb, pub)


@needs_etcd
def test_a_node_that_leaves_takes_its_filter(ecluster):
    ecluster.start_etcd()
    keys = {"route_bloom_above": 20, "route_bits": False}
    a, b, c = ecluster.start_nodes(3, lease_ttl="30s", cluster_keys=keys)
    wait_members([a, b, c], 3)
    base = metric(a, "antenna_subscriptions")
    sc = client(c, "sc")
    subscribe(sc, [("e/%d" % i, 1) for i in range(100)] + [("e/+/w", 1)])
    wait_for(lambda: metric(a, "antenna_subscriptions") == base + 101, 15, what="c's routes on a")
    bloom = [ln for ln in a.client.call("GET", "/metrics")[2].decode().splitlines()
             if ln.startswith("antenna_cluster_route_bloom_bytes{peer=\"node2\"}")]
    assert bloom and float(bloom[0].split()[1]) > 0, bloom
    close(sc)
    c.stop()
    wait_members([a, b], ["node0", "node1"], timeout=10)
    wait_for(lambda: metric(a, "antenna_subscriptions") == base, 15, what="c's routes gone")


def test_memory_per_remote_exact_route(cluster):
    from test_99_cluster_routes_mem import remote_route_growth
    cl = cluster(2, above=10000)  # one filter, no rebuild on the way
    cl.wait_links()
    b = cl.nodes["b"]
    n = 16000
    sa, grown, per = remote_route_growth(cl, n, 60)
    assert cl.link("b", "a")["route_bloom_bytes"] > 0
    pub = client(b, "pub")
    for i in (0, n // 2, n - 1):
        publish(pub, "dev/%d/in" % i, b"%d" % i)
    assert drain(sa, 3) == sorted(b"%d" % i for i in (0, n // 2, n - 1))
    if not SANITIZED:  # ASan's allocator and quarantine are not the broker's memory
        assert per < 20, "b grew by %.0f B per remote route (%d B for %d)" % (per, grown, n)
    close(sa, pub)
