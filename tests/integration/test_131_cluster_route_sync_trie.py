"""A node's exact routes are kept once, in its topic trie, not a second
time as strings by its link thread (src/cluster/cl_route.c,
trie_walk_exact_local; docs/cluster.md "Routes"): a route sync reads them
from the trie as of a numbered change, and the changes up to that one that
are still on their way to the link thread are not sent again; the owner's
bit filter is built from the trie the same way.

Checked where that could go wrong: a peer restarts (its link comes up and
gets a sync) twice while the owner's clients subscribe and unsubscribe
without waiting, with the exact routes going as strings (the peer's exact
table counts each ADD: one sent twice would stay after its DEL) and as
bits (the owner's filter built, resized and dropped from the trie during
the churn).  Afterwards the peer counts exactly the owner's routes, every
subscribed topic is forwarded to the owner and no unsubscribed one (with
bits, a false positive or two at most)."""

import threading
import time

import pytest

from conftest import IS_MOSQUITTO, wait_for
from test_101_cluster_bloom import drain, forwarded, none_more, subscribe
from test_107_route_bits import cluster  # noqa: F401
from test_73_cluster_links import client, close, publish

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only")

CHURNERS = 3
PER = 240  # exact topics a churner plays with
FINAL = range(0, PER, 2)  # what each keeps in the end


def topic(k, i):
    return "ch%d/%d/in" % (k, i)


def acked(c, call, *args, timeout=30):
    """c.subscribe / c.unsubscribe, then wait for ITS acknowledgement (the
    churn's earlier ones may still be coming)."""
    got = set()
    cond = threading.Condition()

    def on_ack(cl, ud, mid, *rest):
        with cond:
            got.add(mid)
            cond.notify_all()
    c.on_subscribe = c.on_unsubscribe = on_ack
    with cond:  # the answer cannot be handled before the mid is known
        _, mid = call(*args)
        assert cond.wait_for(lambda: mid in got, timeout), "no answer to %d" % mid


def churn(c, k, stop, rounds):
    """A SUBSCRIBE and an UNSUBSCRIBE of batches of c's topics a round, the
    next round once the UNSUBSCRIBE is answered (each waits for the route
    barrier: a few rounds a second, the churners side by side), until stop
    is set or 3,000 rounds (bounded)."""
    r = 0
    while not stop.is_set() and r < 3000:
        part = r % 6
        c.subscribe([(topic(k, i), 1) for i in range(part, PER, 6)])
        acked(c, c.unsubscribe, [topic(k, i) for i in range((part + 3) % 6, PER, 6)])
        r += 1
    rounds.append(r)


@pytest.mark.parametrize("above", [100000, 60])
def test_sync_and_bits_from_the_trie_under_churn(cluster, above):  # noqa: F811
    cl = cluster(2, above=above)
    cl.wait_links()
    sb = client(cl.nodes["b"], "sb")
    subscribe(sb, [("w/+/x", 1), ("fixed/0", 1)])  # a wildcard (kept as a string) and one exact
    cl.wait_routes("a", "b", lambda n: n == 2)
    churners = [client(cl.nodes["b"], "churn%d" % k) for k in range(CHURNERS)]
    stop, rounds = threading.Event(), []
    threads = [threading.Thread(target=churn, args=(c, k, stop, rounds))
               for k, c in enumerate(churners)]
    for t in threads:
        t.start()
    try:
        for _ in range(2):  # a restarts: b syncs to it while the churn goes on
            time.sleep(0.5)
            cl.nodes["a"].kill()
            wait_for(lambda: cl.link("b", "a")["state"] != "up", 15, what="b sees a down")
            cl.start("a")
            cl.wait_links()
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    print("churn rounds", rounds)
    assert len(rounds) == CHURNERS and min(rounds) > 0, rounds
    # the end state, whatever the churn left: each churner's FINAL topics
    for k, c in enumerate(churners):
        acked(c, c.unsubscribe, [topic(k, i) for i in range(PER)])
        acked(c, c.subscribe, [(topic(k, i), 1) for i in FINAL])
    want = 2 + CHURNERS * len(FINAL)
    wait_for(lambda: cl.view("b")["b"]["routes"] == want, 10,
             what="b counts its routes (%d wanted)" % want)
    cl.wait_routes("a", "b", lambda n: n == want, timeout=15,
                   what="a counts b's routes exactly (none sent twice)")
    if above < want:
        wait_for(lambda: cl.link("a", "b")["route_bits"], 10, what="b's routes as bits on a")
    else:
        assert not cl.link("a", "b")["route_bits"]
    pub = client(cl.nodes["a"], "pub")
    sent = forwarded(cl, "a", "b")
    gone = 0
    for k in range(CHURNERS):
        for i in range(1, PER, 2):  # unsubscribed in the end
            publish(pub, topic(k, i), b"gone", qos=0)
            gone += 1
    publish(pub, "w/1/x", b"wild")
    assert drain(sb, 1) == [b"wild"]
    spurious = forwarded(cl, "a", "b") - sent - 1
    assert spurious <= (0 if above > want else 4), \
        "%d of %d unsubscribed topics forwarded" % (spurious, gone)
    for k, c in enumerate(churners):
        for i in (0, PER // 2, PER - 2):
            publish(pub, topic(k, i), b"%d/%d" % (k, i))
    for k, c in enumerate(churners):
        assert drain(c, 3) == sorted(b"%d/%d" % (k, i) for i in (0, PER // 2, PER - 2))
    for c in churners:
        none_more(c)
    close(sb, pub, *churners)


def trims(cl, name):
    st, _, raw = cl.api(name).call("GET", "/metrics")
    assert st == 200, st
    for line in raw.decode().splitlines():
        if line.startswith("antenna_cluster_route_trims_total "):
            return float(line.split()[1])
    raise AssertionError("no antenna_cluster_route_trims_total")


def test_trim_once_a_route_storm_is_over(cluster):  # noqa: F811
    """The link thread calls malloc_trim once 1,024 route changes came and
    a second saw fewer than 64: on the node that made them and on the one
    that received them; not while they keep coming, and not for a few."""
    cl = cluster(2, above=100000)
    cl.wait_links()
    sb = client(cl.nodes["b"], "sb")
    subscribe(sb, [("few/%d" % i, 1) for i in range(100)])
    cl.wait_routes("a", "b", lambda n: n == 100)
    time.sleep(2.5)  # quiet: the timer has fired
    base = {n: trims(cl, n) for n in ("a", "b")}
    assert base == {"a": 0, "b": 0}, base  # 100 changes: no trim
    for start in range(0, 1500, 300):  # a storm of 1,500 more on b
        subscribe(sb, [("storm/%d" % i, 1) for i in range(start, start + 300)])
    cl.wait_routes("a", "b", lambda n: n == 1600)
    for n in ("a", "b"):
        wait_for(lambda n=n: trims(cl, n) == 1, 10, what="%s trimmed once" % n)
    time.sleep(2.5)
    assert {n: trims(cl, n) for n in ("a", "b")} == {"a": 1, "b": 1}
    close(sb)
