"""Copies of one publish told apart from other publishes of the same bytes
by their publish id (issue 16; docs/cluster.md "A dead node's sessions",
the hand-over; msg.h).

Three nodes a, b, c (etcd with a 2 s lease; the Redis store with
cluster.adopt, or persistence.session_store: replicated).  Persistent
subscribers at QoS 1 and QoS 2 sit offline on c.  A publisher on a and one
on b send the same payload again and again (their client id), two
PUBLISHes at a time in one write (the same topic, payload and properties,
in the same worker turn: the same publish time), QoS 1 and QoS 2 pairs in
turn, while c is killed with SIGKILL and its sessions are adopted, and for
a moment after.  So the adopter finds copies of that payload in c's store
(no publish time there), kept by a and b for c (handed over), and coming
the direct way once its routes are known.  Then the subscribers resume on
a or b: each publisher's payload arrives at least as often as it was
acknowledged at QoS 1, and exactly as often at QoS 2 (never twice).

Before the publish id, the adopter took copies with the same topic,
payload and properties for one message (and the same publish time when
both knew it): a copy kept for c was left out when c's store held a
message with those bytes (c's records have no publish time), or a copy
that came the direct way did.  The main binary at 97e46d8 failed here in 6
runs of 6 (3 per store): the QoS 1 subscriber got 64-78 of each
publisher's 154-166 acknowledged messages, about half of them lost.

PUBID_ROUNDS kill rounds per store (default 1)."""

import os
import threading
import time

import pytest

from cluster_util import cluster, metric, metrics, wait_members  # noqa: F401
from conftest import wait_for
from helpers import CheckedThread
from mqttraw import (PUBACK, PUBCOMP, PUBLISH, PUBREC, RawClient, Timeout, publish, pubcomp,
                     puback, pubrec, pubrel)
from test_100_redis_takeover import SLOW, T, connect_resume, route_count, sessions_in
from test_95_store_redis import redis, redis_persistence  # noqa: F401

ROUNDS = max(1, min(10, int(os.environ.get("PUBID_ROUNDS", "1"))))
REPL = {"session_store": "replicated", "sync": "always"}


def start(cluster, redis, name):
    persistence = redis_persistence(redis) if redis is not None else dict(REPL)
    return cluster.start_node(name, workers=2, persistence=persistence,
                              mqtt={"max_queued": 100000})  # nothing dropped for a full queue


def adoptions(n):
    return metric(n, "antenna_cluster_adoptions_total") or 0


def replica_synced(n):
    vals = [line.split()[1] for line in metrics(n).splitlines()
            if line.startswith("antenna_cluster_replica_synced{")]
    return bool(vals) and all(v == "1" for v in vals)


class PairPublisher(CheckedThread):
    """Sends its client id as the payload, two PUBLISHes in one write (QoS 1
    to t1 and QoS 2 to t2 in turn), up to `window` messages in flight, until
    stopped; counts what was sent and acknowledged, by QoS."""

    def __init__(self, n, cid, t1, t2, window=2000, pace=0.004):
        super().__init__()
        self.n, self.cid, self.t1, self.t2 = n, cid, t1, t2
        self.payload = cid.encode()
        self.window, self.pace = window, pace
        self.sent, self.acked = {1: 0, 2: 0}, {1: 0, 2: 0}
        self.stop_at = None  # monotonic: no new PUBLISH after this
        self.give_up = None  # ... and no more waiting for acks after this
        self.started_ok = threading.Event()

    def _run(self):
        c = RawClient(self.n.host, self.n.port, timeout=T)
        assert c.connect(self.cid, clean=True, timeout=T).rc == 0
        self.started_ok.set()
        inflight, pid, k = {}, 0, 0
        next_send = time.monotonic()
        while True:
            now = time.monotonic()
            stopping = self.stop_at is not None and now >= self.stop_at
            if stopping and (not inflight or (self.give_up and now >= self.give_up)):
                break
            if not stopping and len(inflight) + 2 <= self.window and now >= next_send:
                qos = 1 + k % 2
                t = self.t1 if qos == 1 else self.t2
                pkts = b""
                for _ in range(2):
                    pid = pid % 65535 + 1
                    pkts += publish(t, self.payload, qos=qos, pid=pid)
                    inflight[pid] = qos
                c.send(pkts)  # one write: the same worker turn, the same publish time
                self.sent[qos] += 2
                k += 1
                next_send = now + self.pace
                continue
            try:
                p = c.recv(0.02)
            except Timeout:
                continue
            if p.type in (PUBACK, PUBCOMP) and p.pid in inflight:
                self.acked[inflight.pop(p.pid)] += 1
            elif p.type == PUBREC:
                c.send(pubrel(p.pid))
        c.close()


def receive_counts(s, want, qos, deadline_s, what):
    """Read PUBLISHes (acknowledging them) until each payload came want[p]
    times and nothing more arrives for a while: the count of each."""
    got = {}
    deadline = time.monotonic() + deadline_s
    quiet_until = None
    while True:
        if all(got.get(p, 0) >= n for p, n in want.items()):
            if quiet_until is None:
                quiet_until = time.monotonic() + 1.0 * SLOW
            if time.monotonic() >= quiet_until:
                return got
        assert time.monotonic() < deadline, "%s: got %r of %r" % (what, got, want)
        wait = 0.1 if quiet_until is not None else max(0.1, deadline - time.monotonic())
        try:
            p = s.wait_for(lambda q: q.type == PUBLISH, min(wait, 1.0), "a PUBLISH")
        except AssertionError:
            continue  # nothing within the wait: look at the deadlines again
        assert p.qos == qos, p
        got[p.payload] = got.get(p.payload, 0) + 1
        if qos == 1:
            s.send(puback(p.pid))
        else:
            s.send(pubrec(p.pid))
            s.send(pubcomp(s.wait_pubrel(p.pid, T).pid))


@pytest.mark.parametrize("store", ["redis", "replicated"])
def test_same_bytes_published_twice(store, request, cluster):
    redis = request.getfixturevalue("redis") if store == "redis" else None
    cluster.start_etcd()
    a, b = start(cluster, redis, "a"), start(cluster, redis, "b")
    wait_members([a, b], 2, timeout=30 * SLOW)
    t_end = time.monotonic() + 120 * SLOW * ROUNDS
    for rnd in range(ROUNDS):
        assert time.monotonic() < t_end, "round %d: out of time" % rnd
        c = start(cluster, redis, "c")
        wait_members([a, b, c], 3, timeout=30 * SLOW)
        t1, t2 = "pid%d/q1" % rnd, "pid%d/q2" % rnd
        subs = [("pid%d-s-q1" % rnd, t1, 1), ("pid%d-s-q2" % rnd, t2, 2)]
        for cid, t, q in subs:
            s = RawClient(c.host, c.port, timeout=T)
            assert s.connect(cid, clean=False, timeout=T).rc == 0
            assert s.subscribe(1, [(t, q)], timeout=T).codes == [q]
            s.go_offline(T)
        wait_for(lambda: route_count(a, "c") >= 2 and route_count(b, "c") >= 2, 10 * SLOW,
                 what="c's routes on a and b")
        if redis is not None:
            wait_for(lambda: sessions_in(redis, "antenna:c:") >= len(subs), 10 * SLOW,
                     what="the sessions in c's store")
        else:
            wait_for(lambda: replica_synced(c), 20 * SLOW, what="c's replicas in sync")
        pubs = [PairPublisher(n, "pid%d-p%s" % (rnd, n.name), t1, t2) for n in (a, b)]
        for p in pubs:
            p.start()
        for p in pubs:
            assert p.started_ok.wait(T), p.error
        # c's store holds some of each publisher's payload at both QoS
        wait_for(lambda: all((p.acked[1] >= 40 and p.acked[2] >= 40) or p.error for p in pubs),
                 20 * SLOW, what="the publishers under way")
        before = adoptions(a) + adoptions(b)
        c.kill()
        c.stopped = True
        wait_for(lambda: adoptions(a) + adoptions(b) > before, 30 * SLOW,
                 what="round %d: an adoption of c" % rnd)
        wait_for(lambda: all(metric(n, "antenna_cluster_adoptions_pending") == 0
                             for n in (a, b)), 30 * SLOW, what="no adoption pending")
        stop = time.monotonic() + 0.5
        for p in pubs:
            p.give_up = stop + 40 * SLOW
            p.stop_at = stop
        for p in pubs:
            p.join(45 * SLOW)
            assert not p.is_alive() and p.error is None, p.error
        handed = sum(metric(n, "antenna_cluster_adopted_handed_total") or 0 for n in (a, b))
        order = [b, a] if rnd % 2 else [a, b]
        for cid, t, q in subs:
            want = {p.payload: p.acked[q] for p in pubs}
            s, ack = connect_resume(order, cid, 20 * SLOW)
            assert ack.session_present == 1, cid
            got = receive_counts(s, want, q, 30 * SLOW, "round %d, %s" % (rnd, cid))
            s.close()
            if q == 2:  # every one acknowledged came, none twice
                for p in pubs:
                    assert p.acked[2] <= got.get(p.payload, 0) <= p.sent[2], (
                        "round %d, %s: %s sent %d, acknowledged %d, received %d" % (
                            rnd, cid, p.cid, p.sent[2], p.acked[2], got.get(p.payload, 0)))
        print("round %d (%s): sent %r, acknowledged %r, %d kept copies handed over" % (
            rnd, store, [p.sent for p in pubs], [p.acked for p in pubs], handed))
