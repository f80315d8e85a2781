"""Exact routes as a plain bit filter built by their owner (src/broker/rbits.c,
src/cluster/cl_bits.c; docs/cluster.md "Routes"): a node with more exact
filters than cluster.route_bloom_above ships them to the peers that ask
(ROUTE_BITS_WANT) as one bitmap, then as the positions that flipped.
Across static nodes with a low threshold: every device topic reaches its
subscriber from every node; the SUBACK still means every node has the route
(bits deltas before the ROUTE_MARK); an unsubscribe stops the forwards once
the deltas are in; the owner's resizes (whole bitmaps) and its fall back to
strings keep every route; a restarted owner's sync replaces its stale bits
and a restarted receiver gets the bitmap at link-up; a node that does not
speak the frames (cluster.route_bits: false, as an older node) still links
and routes both ways with strings; spurious forwards are dropped and
counted by the receiver."""

import pytest

from conftest import IS_MOSQUITTO, stop_all, wait_for
from test_101_cluster_bloom import BloomCluster, drain, forwarded, none_more, subscribe, \
    unsubscribe
from test_73_cluster_links import client, close, get, publish

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only")


class BitsCluster(BloomCluster):
    """test_101's static cluster with route bits on (the default), except on
    the nodes named in `old` (route_bits: false)."""

    old = ()

    def section(self, name):
        s = super().section(name).replace("  route_bits: false\n", "")
        if name in self.old:
            s += "  route_bits: false\n"
        return s


@pytest.fixture
def cluster(tmp_path):
    made = []

    def make(n=3, above=20, old=()):
        c = BitsCluster(tmp_path, n)
        c.above = above
        c.old = old
        made.append(c)
        for name in c.names:
            c.start(name)
        return c
    yield make
    for c in made:
        stop_all(c.started)


def bits(cl, on, of):
    return cl.link(on, of)["route_bits"]


def test_device_topics_from_every_node(cluster):
    cl = cluster(3, above=20)
    cl.wait_links()
    subs = {n: client(cl.nodes[n], "s" + n) for n in cl.names}
    counts = {"a": 40, "b": 150, "c": 90}
    for n, k in counts.items():
        subscribe(subs[n], [("%s/%d/in" % (n, i), 1) for i in range(k)])
    for on in cl.names:
        for of in cl.names:
            if of != on:
                cl.wait_routes(on, of, lambda x, of=of: x == counts[of])
                assert bits(cl, on, of), "%s takes %s's routes as bits" % (on, of)
                assert cl.link(on, of)["route_bloom_bytes"] > 0
    pubs = {n: client(cl.nodes[n], "p" + n) for n in cl.names}
    for pn, pub in pubs.items():
        for n, k in counts.items():
            for i in (0, k // 2, k - 1):
                publish(pub, "%s/%d/in" % (n, i), ("%s>%s%d" % (pn, n, i)).encode())
    for n, k in counts.items():
        want = sorted(("%s>%s%d" % (pn, n, i)).encode() for pn in cl.names
                      for i in (0, k // 2, k - 1))
        assert drain(subs[n], len(want)) == want
    # unsubscribe: once the deltas are in (the route count says so), the
    # forwards stop (a false positive at most: dropped and counted on b)
    unsubscribe(subs["b"], ["b/%d/in" % i for i in range(100)])
    for on in ("a", "c"):
        cl.wait_routes(on, "b", lambda x: x == 50)
    sent = forwarded(cl, "a", "b")
    for i in range(0, 100, 5):
        publish(pubs["a"], "b/%d/in" % i, b"gone")
    publish(pubs["a"], "b/120/in", b"kept")
    assert get(subs["b"]).payload == b"kept"
    assert forwarded(cl, "a", "b") - sent <= 1 + 3, "unsubscribed topics still forwarded"
    none_more(subs["b"])
    close(*subs.values(), *pubs.values())


def test_suback_means_every_node_has_the_bits(cluster):
    """A publish on another node right after the SUBACK reaches the new
    subscriber: the run's ROUTE_BITS_DELTA goes before its ROUTE_MARK."""
    cl = cluster(3, above=10)
    cl.wait_links()
    sb = client(cl.nodes["b"], "sb")
    subscribe(sb, [("base/%d" % i, 1) for i in range(30)])  # b ships bits
    cl.wait_routes("a", "b", lambda x: x == 30)
    cl.wait_routes("c", "b", lambda x: x == 30)
    assert bits(cl, "a", "b") and bits(cl, "c", "b")
    pa = client(cl.nodes["a"], "pa")
    pc = client(cl.nodes["c"], "pc")
    for i in range(25):
        subscribe(sb, "fresh/%d" % i, 1)
        publish(pa, "fresh/%d" % i, b"a%d" % i)
        publish(pc, "fresh/%d" % i, b"c%d" % i)
        assert drain(sb, 2) == [b"a%d" % i, b"c%d" % i]
    close(sb, pa, pc)


def test_owner_resizes_and_falls_back_to_strings(cluster):
    cl = cluster(2, above=50)
    cl.wait_links()
    sb = client(cl.nodes["b"], "sb")
    subscribe(sb, [("g/%d" % i, 0) for i in range(40)])
    cl.wait_routes("a", "b", lambda n: n == 40)
    assert not bits(cl, "a", "b")  # under the threshold: strings, the exact table
    assert cl.link("a", "b")["route_bloom_bytes"] == 0
    subscribe(sb, [("g/%d" % i, 0) for i in range(40, 60)])  # past it: bits
    cl.wait_routes("a", "b", lambda n: n == 60)
    wait_for(lambda: bits(cl, "a", "b"), 10, what="b's routes as bits on a")
    small = cl.link("a", "b")["route_bloom_bytes"]
    for start in range(60, 2000, 300):  # grown: b resizes, the whole bitmap again
        subscribe(sb, [("g/%d" % i, 0) for i in range(start, min(start + 300, 2000))])
    cl.wait_routes("a", "b", lambda n: n == 2000)
    wait_for(lambda: cl.link("a", "b")["route_bloom_bytes"] > small, 10, what="a bigger bitmap")
    assert cl.link("a", "b")["route_bloom_bytes"] <= 2000 * 12 // 8 + 64  # 1.5 B a route
    assert cl.link("a", "b")["route_resyncs"] == 0  # the owner resized, a asked nothing
    pub = client(cl.nodes["a"], "pub")
    for i in (0, 59, 60, 1999):
        publish(pub, "g/%d" % i, b"%d" % i, qos=0)
    assert drain(sb, 4) == [b"0", b"1999", b"59", b"60"]
    # few again (under half the threshold): strings, exact
    unsubscribe(sb, ["g/%d" % i for i in range(10, 2000)])
    cl.wait_routes("a", "b", lambda n: n == 10)
    wait_for(lambda: not bits(cl, "a", "b"), 10, what="strings again")
    assert cl.link("a", "b")["route_bloom_bytes"] == 0
    sent = forwarded(cl, "a", "b")
    for i in range(10, 200, 10):  # gone: the table is exact, nothing goes
        publish(pub, "g/%d" % i, b"gone", qos=0)
    publish(pub, "g/9", b"nine", qos=0)
    assert get(sb).payload == b"nine"
    assert forwarded(cl, "a", "b") == sent + 1
    close(sb, pub)


def test_restarts_resync(cluster):
    cl = cluster(3, above=50)
    cl.wait_links()
    sc = client(cl.nodes["c"], "sc")
    subscribe(sc, [("r/%d" % i, 1) for i in range(300)])
    cl.wait_routes("a", "c", lambda n: n == 300)
    assert bits(cl, "a", "c")
    # the owner restarts with other routes: its sync replaces the stale bits
    cl.nodes["c"].kill()
    wait_for(lambda: cl.link("a", "c")["state"] != "up", 15, what="a sees c down")
    cl.start("c")
    cl.wait_links()
    cl.wait_routes("a", "c", lambda n: n == 0, timeout=15, what="stale routes swept")
    sc2 = client(cl.nodes["c"], "sc2")
    subscribe(sc2, [("r/%d" % i, 1) for i in range(1000, 1100)] + [("r/keep", 1)])
    cl.wait_routes("a", "c", lambda n: n == 101)
    cl.wait_routes("b", "c", lambda n: n == 101)
    wait_for(lambda: bits(cl, "a", "c"), 10, what="c's routes as bits again")
    pub = client(cl.nodes["a"], "pub")
    sent = forwarded(cl, "a", "c")
    for i in range(0, 300, 30):  # stale: at most a false positive goes
        publish(pub, "r/%d" % i, b"stale")
    publish(pub, "r/keep", b"live")
    publish(pub, "r/1050", b"new")
    assert drain(sc2, 2) == [b"live", b"new"]
    assert forwarded(cl, "a", "c") - sent <= 2 + 3, "stale routes were still forwarded to"
    close(pub)
    # a receiver restarts: c's bitmap comes with its link-up sync
    cl.nodes["a"].kill()
    wait_for(lambda: cl.link("c", "a")["state"] != "up", 15, what="c sees a down")
    cl.start("a")
    cl.wait_links()
    cl.wait_routes("a", "c", lambda n: n == 101, timeout=15)
    assert bits(cl, "a", "c")
    assert cl.link("a", "c")["route_resyncs"] == 0
    pub = client(cl.nodes["a"], "pub2")
    for t in ("r/1000", "r/1099", "r/keep"):
        publish(pub, t, t.encode())
    assert drain(sc2, 3) == [b"r/1000", b"r/1099", b"r/keep"]
    none_more(sc2)
    close(sc2, pub)


def test_a_node_without_the_frames(cluster):
    """c does not ask for bits and ignores the frames (route_bits: false,
    as a node from before them): a and c exchange strings both ways (a
    keeps a counting filter of c's), a and b bits."""
    cl = cluster(3, above=20, old=("c",))
    cl.wait_links()
    subs = {n: client(cl.nodes[n], "s" + n) for n in cl.names}
    for n in cl.names:
        subscribe(subs[n], [("%s/%d/in" % (n, i), 1) for i in range(60)])
    for on in cl.names:
        for of in cl.names:
            if of != on:
                cl.wait_routes(on, of, lambda x: x == 60)
    assert bits(cl, "a", "b") and bits(cl, "b", "a")
    assert not bits(cl, "c", "a") and not bits(cl, "c", "b")
    assert not bits(cl, "a", "c") and not bits(cl, "b", "c")
    assert cl.link("a", "c")["route_bloom_bytes"] > 0  # a's counting filter of c's
    pubs = {n: client(cl.nodes[n], "p" + n) for n in cl.names}
    for pn, pub in pubs.items():
        for n in cl.names:
            publish(pub, "%s/7/in" % n, ("%s>%s" % (pn, n)).encode())
    for n in cl.names:
        assert drain(subs[n], 3) == sorted(("%s>%s" % (pn, n)).encode() for pn in cl.names)
    # c's routes change by strings; a's by bits to b and strings to c
    unsubscribe(subs["a"], ["a/%d/in" % i for i in range(30)])
    cl.wait_routes("c", "a", lambda x: x == 30)
    cl.wait_routes("b", "a", lambda x: x == 30)
    publish(pubs["c"], "a/3/in", b"gone")
    publish(pubs["c"], "a/45/in", b"kept")
    assert get(subs["a"]).payload == b"kept"
    none_more(subs["a"])
    close(*subs.values(), *pubs.values())


def test_spurious_forwards_dropped_and_counted(cluster):
    cl = cluster(2, above=1)
    cl.wait_links()
    sb = client(cl.nodes["b"], "sb")
    subscribe(sb, [("s/%d" % i, 1) for i in range(200)])
    cl.wait_routes("a", "b", lambda n: n == 200)
    assert bits(cl, "a", "b")
    pub = client(cl.nodes["a"], "pub")
    pub.max_inflight_messages_set(200)
    sent0, unmatched0 = forwarded(cl, "a", "b"), cl.link("b", "a")["unmatched"]
    # topics b has no subscriber for: the bits let ~0.5-1 % through
    n = 6000
    infos = [pub.publish("none/%d" % i, b"x", qos=1 if i % 3 == 0 else 0) for i in range(n)]
    for info in infos:  # every QoS 1 publish acknowledged: nobody held
        info.wait_for_publish(timeout=30)
        assert info.is_published()
    publish(pub, "s/5", b"marker")  # after them on the link
    assert get(sb).payload == b"marker"
    spurious = forwarded(cl, "a", "b") - sent0 - 1
    print("%d spurious forwards for %d publishes" % (spurious, n))
    assert 0 < spurious < n * 0.03, spurious
    wait_for(lambda: cl.link("b", "a")["unmatched"] - unmatched0 == spurious, 10,
             what="b counted each spurious forward")
    none_more(sb)
    close(sb, pub)
