"""Replicated sessions spread over the members (issue 16; docs/cluster.md
"Replicated sessions"): each session of a node has its own replica, chosen
by rendezvous hashing of its client id over the node's live members, so a
dead node's sessions are adopted by several survivors, each from its share.

test_spread_and_kill: four nodes a, b, c, d; persistent subscribers on c
(MQTT 3.1.1 QoS 1 and QoS 2, MQTT 5 with a session expiry); c's API and
metrics show its sessions spread over at least two replicas; c is killed
(SIGKILL) while publishers on a and b keep QoS 1 and 2 windows in flight;
at least two survivors adopt a share; every session resumes on a survivor
with session present; every message whose PUBACK / PUBCOMP a publisher got
arrives; no QoS 2 message twice.  REPL_ROUNDS (default 1) kill rounds.

test_member_joins_and_leaves: c's sessions on a and b; d joins: a part of
them moves to d (copied there, then deleted from their old replica); b is
killed: b's share moves to a and d; then c is killed: nothing acknowledged
is lost.
"""

import os
import time

from cluster_util import cluster, metric, metrics, nodes_json, wait_members  # noqa: F401
from conftest import wait_for
from mqttraw import SESSION_EXPIRY_INTERVAL, RawClient, RawClient5
from test_100_redis_takeover import (SLOW, T, Publisher, connect_resume, receive_all,
                                     route_count, start_publishers)
from test_103_replicated import REPL, adoptions, node, subscribe_offline

V5 = {"clean_start": False, "props": [(SESSION_EXPIRY_INTERVAL, 3600)]}


def shares(n):
    """n's replicas in sync and their sessions ({} while not in sync)."""
    rep = nodes_json(n).get("replication") or {}
    if not rep.get("synced"):
        return {}
    return {r["node"]: r["sessions"] for r in rep.get("replicas", []) if r["synced"]}


def adopted_sessions(n):
    return metric(n, "antenna_cluster_adopted_sessions_total") or 0


def make_sessions(c, tag, k):
    """k sessions of each kind on c: (id, kind, topic) where kind is 1
    (3.1.1 QoS 1), 2 (3.1.1 QoS 2) or 5 (MQTT 5, QoS 1)."""
    t1, t2 = tag + "/q1", tag + "/q2"
    subs = []
    for i in range(k):
        subs += [("%s-s1-%d" % (tag, i), 1, t1), ("%s-s2-%d" % (tag, i), 2, t2)]
    subscribe_offline(c, [(cid, t, q) for cid, q, t in subs])
    for i in range(k):
        cid = "%s-s5-%d" % (tag, i)
        s = RawClient5(c.host, c.port, timeout=T)
        assert s.connect(cid, timeout=T, **V5).rc == 0
        assert s.subscribe(1, [(t1, 1)], timeout=T).codes == [1]
        s.go_offline(T)
        subs.append((cid, 5, t1))
    return subs, t1, t2


def kill(c, survivors, tag, t1, t2):
    """Publishers on survivors[:2] through c's SIGKILL; the payloads they got
    acknowledged, once every survivor's adoption is over."""
    before = sum(adopted_sessions(n) for n in survivors)
    pubs = [Publisher(n, "%s-p%s" % (tag, n.name), t1, t2) for n in survivors[:2]]
    start_publishers(pubs, 30)
    c.kill()
    c.stopped = True
    stop = time.monotonic() + 0.3
    for p in pubs:
        p.give_up = stop + 40 * SLOW
        p.stop_at = stop
    wait_for(lambda: sum(adopted_sessions(n) for n in survivors) > before, 30 * SLOW,
             what="%s: an adoption of %s" % (tag, c.name))
    for p in pubs:
        p.join(45 * SLOW)
        assert not p.is_alive() and p.error is None, p.error
    wait_for(lambda: all(metric(n, "antenna_cluster_adoptions_pending") == 0 for n in survivors),
             30 * SLOW, what="no adoption pending")
    acked = set().union(*(p.acked for p in pubs))
    assert len(acked) >= 30 * len(pubs), len(acked)
    return acked


def check_all_resumed(survivors, subs, acked, what):
    want1 = {m for m in acked if int(m.rsplit(b"-", 1)[1]) % 2 == 0}
    for i, (cid, kind, _t) in enumerate(subs):
        order = survivors[i % len(survivors):] + survivors[:i % len(survivors)]
        if kind == 5:
            s, ack = connect_resume(order, cid, 20 * SLOW, client=RawClient5, **V5)
        else:
            s, ack = connect_resume(order, cid, 20 * SLOW)
        assert ack.session_present == 1, cid
        qos = 2 if kind == 2 else 1
        got = receive_all(s, acked - want1 if qos == 2 else want1, qos, 30 * SLOW,
                          "%s: %s" % (what, cid))
        if qos == 2:
            twice = sorted(m for m in set(got) if got.count(m) > 1)
            assert not twice, "%s: %s: QoS 2 twice: %r" % (what, cid, twice[:10])
        s.close()


def test_spread_and_kill(cluster):
    rounds = max(1, min(10, int(os.environ.get("REPL_ROUNDS", "1"))))
    cluster.start_etcd()
    a, b, d = node(cluster, "a"), node(cluster, "b"), node(cluster, "d")
    wait_members([a, b, d], 3, timeout=30 * SLOW)
    c = node(cluster, "c")
    t_end = time.monotonic() + 100 * SLOW * rounds
    for rnd in range(rounds):
        assert time.monotonic() < t_end, "round %d: out of time" % rnd
        survivors = [a, b, d]
        wait_members(survivors + [c], 4, timeout=30 * SLOW)
        tag = "sp%d" % rnd
        subs, t1, t2 = make_sessions(c, tag, 4)
        wait_for(lambda: route_count(a, "c") >= 2 and route_count(b, "c") >= 2, 10 * SLOW,
                 what="c's routes on a and b")
        # the replicas place the shares again after each member change; the
        # sessions just made are in them once all three are in sync
        wait_for(lambda: sorted(shares(c)) == ["a", "b", "d"], 30 * SLOW,
                 what="c's sessions spread over a, b and d")
        m = metrics(c)
        assert 'antenna_cluster_replica_synced{peer="a"} 1' in m, m
        # the counts are those of the last placement: sessions made after it
        # are not in them, but the members' copies are complete
        for n in survivors:
            wait_for(lambda: {"node": "c", "complete": True} in
                     nodes_json(n)["replication"]["copies"], 10 * SLOW,
                     what="c's copy on " + n.name)
        before = {n.name: adoptions(n) for n in survivors}
        before_s = sum(adopted_sessions(n) for n in survivors)
        acked = kill(c, survivors, tag, t1, t2)
        adopters = [n.name for n in survivors if adoptions(n) > before[n.name]]
        assert len(adopters) >= 2, adopters
        assert sum(adopted_sessions(n) for n in survivors) - before_s == len(subs)
        check_all_resumed(survivors, subs, acked, tag)
        c = cluster.start_node("c", workers=2, persistence=dict(REPL, dir=c.persistence["dir"]))
        assert c.wait_log(r"sessions of this node were adopted by", 20 * SLOW)
    wait_members([a, b, c, d], 4, timeout=30 * SLOW)


def test_member_joins_and_leaves(cluster):
    cluster.start_etcd()
    a, b = node(cluster, "a"), node(cluster, "b")
    wait_members([a, b], 2, timeout=30 * SLOW)
    c = node(cluster, "c")
    wait_members([a, b, c], 3, timeout=30 * SLOW)
    subs, t1, t2 = make_sessions(c, "jl", 5)
    wait_for(lambda: sorted(shares(c)) == ["a", "b"], 30 * SLOW, what="c's shares on a and b")
    # a change made while the shares are on a and b
    store_before = metric(c, "antenna_cluster_replica_moved_keys_total") or 0
    d = node(cluster, "d")
    wait_members([a, b, c, d], 4, timeout=30 * SLOW)
    wait_for(lambda: sorted(shares(c)) == ["a", "b", "d"] and shares(c)["d"] > 0, 30 * SLOW,
             what="a share of c's sessions on d")
    sh = shares(c)
    assert sum(sh.values()) == len(subs), sh
    assert (metric(c, "antenna_cluster_replica_moved_keys_total") or 0) > store_before
    # b leaves (killed): its share moves to a and d
    b.kill()
    b.stopped = True
    wait_for(lambda: sorted(shares(c)) == ["a", "d"], 30 * SLOW, what="c's shares on a and d")
    assert sum(shares(c).values()) == len(subs)
    survivors = [a, d]
    wait_for(lambda: route_count(a, "c") >= 2 and route_count(d, "c") >= 2, 10 * SLOW,
             what="c's routes on a and d")
    acked = kill(c, survivors, "jl", t1, t2)
    check_all_resumed(survivors, subs, acked, "joined and left")
