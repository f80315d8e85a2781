"""A persistent session moving between two live nodes loses nothing
acknowledged (issues 16 and 20; src/cluster/cl_move.c; docs/cluster.md
"Client-id ownership", "A session that moves between live nodes").

Three nodes a, b, c (etcd, 2 workers each) with the RocksDB store (the
default, sync always) or, second parameter, the Redis store with adoption.
Two publishers, one on c and one on a, publish QoS 1 and QoS 2 in turn to
fo/q1 and fo/q2 without pause (8 in flight each, test_104's Pub).  Two
persistent subscribers (MQTT 3.1.1, clean session 0), one at QoS 1 on
fo/q1 and one at QoS 2 on fo/q2, move a -> b -> a ... MOVES times while
they publish: odd moves close the old connection and then connect to the
other node (the old node hands an offline session over), even moves
connect to the other node first (the old connection is taken over, 0x8E).
Each CONNECT must come back with session present 1.  At the end every
message whose PUBACK / PUBCOMP a publisher got has reached its subscriber,
and no QoS 2 message came twice (the subscriber keeps the packet ids it
sent PUBREC for until their PUBREL, across its moves, as MQTT's receiver
must).  Before cl_move.c a move lost what was published for the session
between the old node ending it and the new node's routes reaching the
publisher's node: main's binary before it (97e46d8) failed 3 runs of 3
with the RocksDB store, 5, 16 and 17 acknowledged messages missing.

MOVES (env LIVEMOVE_MOVES, default 8) moves; each subscriber stays about
DWELL seconds on a node.  The CONNECT time of each move is printed (the
move waits for the route barrier and the old node's copies)."""

import collections
import os
import threading
import time

import pytest

from cluster_util import cluster, metric, needs_etcd, wait_members  # noqa: F401
from conftest import IS_MOSQUITTO, wait_for
from helpers import CheckedThread
from mqttraw import PUBLISH, PUBREL, Closed, Timeout, puback, pubcomp, pubrec
from test_104_failover_rounds import Pub, SLOW, T, TOPIC, lb_connect
from test_77_cluster_owner import links_up
from test_95_store_redis import redis, redis_persistence  # noqa: F401

MOVES = max(2, min(40, int(os.environ.get("LIVEMOVE_MOVES", "8"))))
DWELL = 1.5

pytestmark = [pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only"), needs_etcd,
              pytest.mark.deadline(600)]


class Mover(CheckedThread):
    """A persistent subscriber that moves between two nodes; `got` the
    payloads given to the application (QoS 2: once per packet id until its
    PUBREL), `connect_ms` the time of each move's CONNECT."""

    def __init__(self, nodes, cid, qos):
        super().__init__()
        self.nodes, self.cid, self.qos = nodes, cid, qos
        self.got = []
        self.rec = set()
        self.connect_ms = []
        self.moves = 0
        self.subscribed = threading.Event()
        self.stop = False


    def read(self, c, until):
        while time.monotonic() < until and not self.stop:
            try:
                p = c.recv(0.05)
            except Timeout:
                continue
            except (Closed, OSError):
                return False
            if p.type == PUBLISH:
                assert p.qos == self.qos, p
                if self.qos == 1:
                    self.got.append(p.payload)
                    c.try_send(puback(p.pid))
                else:
                    if p.pid not in self.rec:
                        self.got.append(p.payload)
                        self.rec.add(p.pid)
                    c.try_send(pubrec(p.pid))
            elif p.type == PUBREL:
                self.rec.discard(p.pid)
                c.try_send(pubcomp(p.pid))
        return True

    def connect(self, node):
        t0 = time.monotonic()
        c, ack = lb_connect(node.port, self.cid, False, time.monotonic() + 30 * SLOW)
        self.connect_ms.append((time.monotonic() - t0) * 1000)
        return c, ack

    def _run(self):
        at = 0
        c, _ = lb_connect(self.nodes[0].port, self.cid, False, time.monotonic() + 30 * SLOW)
        assert c.subscribe(1, [(TOPIC[self.qos], self.qos)], timeout=T).codes == [self.qos]
        self.subscribed.set()
        while not self.stop:
            self.read(c, time.monotonic() + DWELL)
            if self.stop or self.moves >= MOVES:
                continue
            at = 1 - at
            if self.moves % 2 == 0:  # gone first: an offline session moves
                c.close()
                c, ack = self.connect(self.nodes[at])
            else:  # the new connection takes the old one over
                old = c
                c, ack = self.connect(self.nodes[at])
                old.close()
            assert ack.session_present == 1, "%s: the session is gone after move %d" % (
                self.cid, self.moves + 1)
            self.moves += 1
        c.close()


def start_nodes(cluster, store, redis_srv):
    cluster.start_etcd()
    if store == "redis":
        persistence = redis_persistence(redis_srv)
    else:
        persistence = {"sync": "always"}
    nodes = [cluster.start_node(n, workers=2, lease_ttl="3s", persistence=dict(persistence))
             for n in ("a", "b", "c")]
    wait_members(nodes, 3)
    return nodes


@pytest.fixture(params=["rocksdb", "redis"])
def store(request):
    return request.param


def test_moves_between_live_nodes_lose_nothing(cluster, store, request):
    redis_srv = request.getfixturevalue("redis") if store == "redis" else None
    a, b, c = start_nodes(cluster, store, redis_srv)
    # every link up: a SUBACK then covers every node (the route barrier)
    links_up([a, b, c], timeout=30 * SLOW)
    movers = [Mover([a, b], "lm-s%d" % q, q) for q in (1, 2)]
    for m in movers:
        m.start()
    for m in movers:
        assert m.subscribed.wait(30 * SLOW), "%s never subscribed" % m.cid
    pubs = [Pub(c.port, "lm-pc"), Pub(a.port, "lm-pa")]
    for p in pubs:
        p.start()

    def check_alive(threads):
        for t in threads:
            assert t.error is None, "%s: %r" % (t.name, t.error)
            assert t.is_alive(), "%s ended" % t.name
    wait_for(lambda: (check_alive(movers + pubs), all(m.moves >= MOVES for m in movers))[1],
             (MOVES * DWELL + 60) * SLOW, what="%d moves" % MOVES)
    stop = time.monotonic()
    for p in pubs:
        p.give_up = stop + 30 * SLOW
        p.stop_at = stop
    for p in pubs:
        p.join(40 * SLOW)
        assert not p.is_alive() and p.error is None, (p.cid, p.error)
    acked = {q: set().union(*(p.acked[q] for p in pubs)) for q in (1, 2)}
    assert acked[1] and acked[2], "nothing acknowledged"
    by_qos = {m.qos: m for m in movers}

    def all_in():
        check_alive(movers)
        return all(acked[q] <= set(by_qos[q].got) for q in (1, 2))
    try:
        wait_for(all_in, 30 * SLOW, what="every acknowledged message delivered")
    finally:
        for m in movers:
            m.stop = True
        for m in movers:
            m.join(10)
        for m in movers:
            print("%s: %d moves, CONNECT ms %s" % (
                m.cid, m.moves, " ".join("%.0f" % x for x in m.connect_ms)))
        for n in (a, b, c):
            print(n.name, {k: metric(n, k) for k in (
                "antenna_cluster_moves_in_total", "antenna_cluster_moves_out_total",
                "antenna_cluster_move_kept_total", "antenna_cluster_move_late_total",
                "antenna_cluster_move_merged_total", "antenna_cluster_move_skipped_total",
                "antenna_cluster_move_twins_dropped_total", "antenna_cluster_move_timeouts_total",
                "antenna_cluster_move_lost_total")})
        for q in (1, 2):
            missing = acked[q] - set(by_qos[q].got)
            print("qos %d: %d acknowledged, %d delivered, %d missing %s" % (
                q, len(acked[q]), len(by_qos[q].got), len(missing), sorted(missing)[:10]))
    twice = [p for p, k in collections.Counter(by_qos[2].got).items() if k > 1]
    assert not twice, "QoS 2 messages delivered twice: %r" % twice[:10]
