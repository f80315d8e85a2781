"""Kill rounds through HAProxy (issue 16; docs/cluster.md "A dead node's
sessions").

Three nodes n0, n1, n2 with the Redis store (one redis-server, appendonly
yes, appendfsync always), etcd with a 2 s lease, HAProxy in front (TCP,
PROXY protocol v2 to the nodes, leastconn, health checks on each node's
/health/ready).  Every client goes through HAProxy: persistent subscribers
(clean session 0) at QoS 1 and QoS 2 that stay connected and reconnect when
their connection drops, and publishers (clean session) publishing QoS 1
and QoS 2 in turn with a window of messages in flight, reconnecting too.
Each round the node holding the most subscribers of QoS 1 (even rounds) or
QoS 2 (odd rounds) is killed with SIGKILL;
its subscribers reconnect through HAProxy (0x88 while the adoption is
pending) and resume their sessions on a survivor (session present 1,
through a take-over from the adopter when HAProxy picks the other one);
then the node starts again with its name (its store adopted: empty) before
the next round.  At the end every message whose PUBACK / PUBCOMP a
publisher got has reached every subscriber of its QoS, and no QoS 2
message came twice to a subscriber (the subscriber keeps the packet ids it
sent PUBREC for until their PUBREL, as MQTT's receiver must, across its
reconnects).

The publishers go on publishing through the kill, the adoption and the
subscribers' return, never paused (their windows in flight at the kill
and what they publish for the dead node's subscribers until the adopter
asks are held for it; what they publish once the adopter's routes are
known goes to it directly; docs/cluster.md "A dead node's sessions"; a
subscriber that comes back on another node than the adopter moves its
session from the adopter, a live node, without a gap: "Client-id
ownership", src/cluster/cl_move.c).  FAILOVER_PAUSE=moves pauses the
publishers while the dead node's subscribers come back (as before moves
between live nodes were covered: main's binary then lost a few messages
per 5-round run with this default); FAILOVER_PAUSE=kill pauses
them from 0.3 s after the kill (as before the adoption's window was
covered).

FAILOVER_ROUNDS kill rounds (default 2; the issue's run: 10).  The nodes run
with cluster.revoke_refused (the default: a killed node out at once, not
lease_ttl later); FAILOVER_REVOKE=0 turns it off (out when its 2 s lease
expires).

The same rounds run with `persistence.session_store: replicated` (no
Redis: each node's sessions are copied to a replica node over the links;
docs/cluster.md "Replicated sessions"): before each kill every node's
replica is in sync; odd rounds also delete the killed node's store
directory, as if its machine were lost.

test_node_started_after_the_death: a node that starts after a member died
(its lease expired, no node up saw it go out) finds its store in Redis and
adopts its sessions."""

import base64
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from cluster_util import cluster, metric, metrics, wait_members  # noqa: F401
from conftest import free_port, wait_for
from helpers import CheckedThread
from mqttraw import (CONNACK, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, Closed, RawClient,
                     Timeout, puback, pubcomp, publish, pubrec, pubrel)
from mqttraw import connect as mqtt_connect
from test_95_store_redis import SANITIZED, redis, redis_persistence  # noqa: F401

ROUNDS = max(1, min(10, int(os.environ.get("FAILOVER_ROUNDS", "2"))))
PAUSE = os.environ.get("FAILOVER_PAUSE", "none")  # none, moves or kill
SLOW = 3 if SANITIZED else 1
T = 10 * SLOW  # per packet: a loaded 2-core machine, ASan
NSUB = 3  # subscribers per QoS
NPUB = 2
TOPIC = {1: "fo/q1", 2: "fo/q2"}

pytestmark = [pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed"),
              pytest.mark.deadline(600)]


class Haproxy:
    """HAProxy in front of the nodes' PROXY v2 listeners, as tools/cluster.sh
    starts it; a dead node's connections are dispatched to another."""

    def __init__(self, tmp_path, nodes):
        self.port = free_port()
        servers = "".join(
            "  server %s 127.0.0.1:%d send-proxy-v2 check port %d inter 300 fall 2 rise 1\n"
            % (n.name, n.port, n.api_fixed) for n in nodes)
        self.cfg = tmp_path / "haproxy.cfg"
        self.cfg.write_text(
            "global\n  maxconn 2000\n"
            "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 1h\n"
            "  timeout server 1h\n  retries 2\n  option redispatch\n"
            "frontend mqtt\n  bind 127.0.0.1:%d\n  default_backend nodes\n"
            "backend nodes\n  balance leastconn\n  option httpchk GET /health/ready\n%s"
            % (self.port, servers))
        self.log = open(tmp_path / "haproxy.log", "wb")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(self.cfg)],
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)

        def up():
            assert self.proc.poll() is None, "haproxy exited"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False
        wait_for(up, 10 * SLOW, what="haproxy listening")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


def lb_connect(port, cid, clean, deadline):
    """CONNECT through HAProxy until a node accepts (0x88 / rc 3 while an
    adoption is pending, a dead node's connection closed): the client and
    its CONNACK."""
    while True:
        c = None
        try:
            c = RawClient("127.0.0.1", port, timeout=T)
            c.send(mqtt_connect(cid, clean=clean, keepalive=30))
            ack = c.recv(T)
            if ack.type == CONNACK and ack.rc == 0:
                return c, ack
            last = ack
        except (OSError, Closed, Timeout) as e:
            last = e
        if c is not None:
            c.close()
        assert time.monotonic() < deadline, "%s refused on every try (last %r)" % (cid, last)
        time.sleep(0.1)


class Sub(CheckedThread):
    """A persistent subscriber through HAProxy: reconnects with clean
    session 0 when its connection drops; `got` the payloads delivered to
    the application (QoS 2: once per packet id until its PUBREL)."""

    def __init__(self, port, cid, qos):
        super().__init__()
        self.port, self.cid, self.qos = port, cid, qos
        self.got = []
        self.connected = threading.Event()
        self.drops = 0
        self.stop = False
        self.rec = set()  # QoS 2: PUBREC sent, PUBREL not yet received
        self.may_return = threading.Event()  # cleared: wait before reconnecting
        self.may_return.set()

    def _run(self):
        deadline = time.monotonic() + 60 * SLOW
        c, ack = lb_connect(self.port, self.cid, False, deadline)
        assert c.subscribe(1, [(TOPIC[self.qos], self.qos)], timeout=T).codes == [self.qos]
        self.connected.set()
        while not self.stop:
            try:
                p = c.recv(0.1)
            except Timeout:
                continue
            except (Closed, OSError):
                self.connected.clear()
                self.drops += 1
                c.close()
                assert self.may_return.wait(60 * SLOW), "%s: never let back" % self.cid
                c, ack = lb_connect(self.port, self.cid, False,
                                    time.monotonic() + 60 * SLOW)
                assert ack.session_present == 1, "%s: the session is gone" % self.cid
                self.connected.set()
                continue
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
        c.close()


class Pub(CheckedThread):
    """Publishes QoS 1 and QoS 2 in turn through HAProxy, `window` in
    flight, reconnecting (clean session) when its connection drops (what
    was in flight then was never acknowledged); `acked` by QoS."""

    def __init__(self, port, cid, window=8, pace=0.004):
        super().__init__()
        self.port, self.cid, self.window, self.pace = port, cid, window, pace
        self.acked = {1: set(), 2: set()}
        self.acked_at = {}  # payload: when its PUBACK / PUBCOMP came (a failure's report)
        self.in_flight = 0  # PUBLISHes not acknowledged yet
        self.paused = False
        self.stop_at = None  # monotonic: no new PUBLISH after this
        self.give_up = None  # ... and no more waiting for acks after this
        self.i = 0

    def _run(self):
        c, _ = lb_connect(self.port, self.cid, True, time.monotonic() + 60 * SLOW)
        inflight, pid = {}, 0
        next_send = time.monotonic()
        while True:
            now = time.monotonic()
            self.in_flight = len(inflight)
            stopping = self.stop_at is not None and now >= self.stop_at
            if stopping and (not inflight or (self.give_up and now >= self.give_up)):
                break
            if (not stopping and not self.paused and len(inflight) < self.window and
                    now >= next_send):
                pid = pid % 65535 + 1
                qos = 1 + self.i % 2
                payload = b"%s-%d" % (self.cid.encode(), self.i)
                self.i += 1
                inflight[pid] = (qos, payload)
                next_send = now + self.pace
                if c.try_send(publish(TOPIC[qos], payload, qos=qos, pid=pid)):
                    continue
            try:
                p = c.recv(0.02)
            except Timeout:
                continue
            except (Closed, OSError):
                c.close()
                inflight.clear()  # never acknowledged: not promised
                c, _ = lb_connect(self.port, self.cid, True, time.monotonic() + 60 * SLOW)
                continue
            if p.type in (PUBACK, PUBCOMP) and p.pid in inflight:
                qos, payload = inflight.pop(p.pid)
                self.acked[qos].add(payload)
                self.acked_at[payload] = time.monotonic()
            elif p.type == PUBREC:
                c.try_send(pubrel(p.pid))
        c.close()

    def count(self):
        return len(self.acked[1]) + len(self.acked[2])


REPLICATED = {"session_store": "replicated", "sync": "always"}
REVOKE = os.environ.get("FAILOVER_REVOKE", "1") != "0"  # cluster.revoke_refused


def start_node(cluster, redis, name, api_port=None):
    """A node behind HAProxy; `redis` None: the replicated store."""
    persistence = redis_persistence(redis) if redis is not None else dict(REPLICATED)
    keys = None if REVOKE else {"revoke_refused": False}
    n = cluster.make_node(name, workers=2, persistence=persistence,
                          listener={"proxy_protocol": "v2"},
                          api={"port": api_port or free_port()}, cluster_keys=keys)
    n.api_fixed = n.api["port"]
    return n.start()


def replica_synced(n):
    """n's store has a replica in sync (antenna_cluster_replica_synced 1
    for some peer, none at 0)."""
    vals = [line.split()[1] for line in metrics(n).splitlines()
            if line.startswith("antenna_cluster_replica_synced{")]
    return bool(vals) and all(v == "1" for v in vals)


def subs_on(n):
    """The subscribers connected to node n (the API's client list)."""
    j = n.client.get("/api/v1/clients?connected=true&client_id_prefix=fo-s&limit=1000")
    return [x["client_id"] for x in j["data"]]


def route_count(n, peer):
    for line in metrics(n).splitlines():
        if line.startswith('antenna_cluster_routes{peer="%s"} ' % peer):
            return int(float(line.split()[1]))
    return 0


def check_alive(threads):
    for t in threads:
        assert t.error is None, "%s: %r" % (t.name, t.error)
        assert t.is_alive(), "%s ended" % t.name


@pytest.mark.parametrize("store", ["redis", "replicated"])
def test_kill_rounds_through_haproxy(store, request, cluster):
    redis = request.getfixturevalue("redis") if store == "redis" else None
    cluster.start_etcd()
    nodes = [start_node(cluster, redis, "n%d" % i) for i in range(3)]
    wait_members(nodes, 3, timeout=30 * SLOW)
    lb = Haproxy(cluster.dir, nodes)
    subs, pubs = [], []
    try:
        for k in range(NSUB):
            for q in (1, 2):
                s = Sub(lb.port, "fo-s%d-q%d" % (k, q), q)
                s.name = s.cid
                s.start()
                subs.append(s)
        for s in subs:
            assert s.connected.wait(30 * SLOW), s.error
        for k in range(NPUB):
            p = Pub(lb.port, "fo-p%d" % k)
            p.name = p.cid
            p.start()
            pubs.append(p)
        t_end = time.monotonic() + (60 + 60 * ROUNDS) * SLOW
        adopted_total = 0
        t0 = time.monotonic()
        events = []  # (seconds since t0, what): a failure's report
        for rnd in range(ROUNDS):
            assert time.monotonic() < t_end, "round %d: out of time" % rnd
            base = [p.count() for p in pubs]
            wait_for(lambda: all(p.count() >= b + 30 for p, b in zip(pubs, base)) or
                     any(t.error for t in pubs + subs), 30 * SLOW,
                     what="round %d: the publishers under way" % rnd)
            check_alive(subs + pubs)
            if redis is None:  # every change acknowledged is on a replica
                wait_for(lambda: all(replica_synced(n) for n in nodes), 30 * SLOW,
                         what="round %d: every node's replica in sync" % rnd)
            held = {n.name: subs_on(n) for n in nodes}
            # QoS 1 and QoS 2 subscribers' nodes in turn: the one holding
            # the most of this round's QoS, then the most subscribers
            q = str(1 + rnd % 2)
            victim = max(nodes, key=lambda n: (sum(c.endswith(q) for c in held[n.name]),
                                               len(held[n.name])))
            assert held[victim.name], held
            survivors = [n for n in nodes if n is not victim]
            before = sum(metric(n, "antenna_cluster_adoptions_total") or 0 for n in survivors)
            if PAUSE == "moves":
                for s in subs:
                    s.may_return.clear()
            victim.kill()
            t_kill = time.monotonic()
            events.append((t_kill - t0, "round %d: %s killed" % (rnd, victim.name)))
            if redis is None and rnd % 2 == 1:  # the machine lost: its disk too
                shutil.rmtree(victim.persistence["dir"], ignore_errors=True)
            if PAUSE == "kill":
                time.sleep(0.3)  # the publishers go on through the kill for a moment
                for p in pubs:
                    p.paused = True
            wait_for(lambda: sum(metric(n, "antenna_cluster_adoptions_total") or 0
                                 for n in survivors) >= before + 1, 30 * SLOW,
                     what="round %d: an adoption of %s" % (rnd, victim.name))
            adopted_total += 1
            events.append((time.monotonic() - t0, "adopted"))
            wait_for(lambda: all(metric(n, "antenna_cluster_adoptions_pending") == 0
                                 for n in survivors), 20 * SLOW, what="no adoption pending")
            events.append((time.monotonic() - t0, "no adoption pending"))
            if PAUSE == "moves":  # the sessions move from the adopter: nothing published
                for p in pubs:
                    p.paused = True
                wait_for(lambda: all(p.in_flight == 0 for p in pubs), 20 * SLOW,
                         what="round %d: the publishers' windows acknowledged" % rnd)
                for s in subs:
                    s.may_return.set()
            try:
                wait_for(lambda: all(s.connected.is_set() for s in subs) and
                         sum(len(subs_on(n)) for n in survivors) == len(subs), 40 * SLOW,
                         what="round %d: the subscribers back" % rnd)
            except AssertionError as e:
                raise AssertionError("%s: %r, on the survivors: %r" % (
                    e, [(s.cid, s.connected.is_set(), s.error) for s in subs],
                    {n.name: subs_on(n) for n in survivors}))
            check_alive(subs)
            events.append((time.monotonic() - t0, "subscribers back"))
            print("round %d: %s killed holding %s; all back %.1f s after the kill"
                  % (rnd, victim.name, held[victim.name], time.monotonic() - t_kill))

            def routes_settled():
                on = {n.name: {TOPIC[int(c[-1])] for c in subs_on(n)} for n in survivors}
                return all(route_count(x, y.name) >= len(on[y.name])
                           for x in survivors for y in survivors if x is not y)
            wait_for(routes_settled, 20 * SLOW, what="round %d: the routes settled" % rnd)
            events.append((time.monotonic() - t0, "routes settled"))
            for p in pubs:
                p.paused = False
            victim.start()
            wait_members(nodes, 3, timeout=30 * SLOW)
            events.append((time.monotonic() - t0, "%s back" % victim.name))
            check_alive(pubs)
        # the end: every acknowledged message reaches every subscriber of its QoS
        stop = time.monotonic() + 0.5
        for p in pubs:
            p.stop_at = stop
            p.give_up = stop + 30 * SLOW
        for p in pubs:
            p.join(40 * SLOW)
            assert not p.is_alive() and p.error is None, (p.cid, p.error)
        want = {q: set().union(*(p.acked[q] for p in pubs)) for q in (1, 2)}
        assert len(want[1]) + len(want[2]) >= 60 * ROUNDS, {q: len(want[q]) for q in want}
        acked_at = {m: t - t0 for p in pubs for m, t in p.acked_at.items()}
        # every subscriber waited for, then every miss reported at once: who
        # lost what tells a node's loss from one session's
        try:
            wait_for(lambda: all(want[s.qos] <= set(s.got) or s.error is not None for s in subs),
                     30 * SLOW, what="every acknowledged message at its subscribers")
        except AssertionError:
            pass
        missing = {s.cid: sorted((round(acked_at[m], 3), m)
                                 for m in want[s.qos] - set(s.got))[:10]
                   for s in subs if not want[s.qos] <= set(s.got)}
        assert not missing, "acknowledged messages missing (acknowledged at, s): %r; events: %r" % (
            missing, [(round(t, 2), w) for t, w in events])
        for s in subs:
            assert s.error is None, (s.cid, s.error)
            if s.qos == 2:
                twice = sorted(m for m in set(s.got) if s.got.count(m) > 1)
                assert not twice, "%s: QoS 2 twice: %r" % (s.cid, twice[:10])
        print("%d rounds: %d + %d acknowledged (QoS 1 + 2), subscribers dropped %d times"
              % (ROUNDS, len(want[1]), len(want[2]), sum(s.drops for s in subs)))
        assert sum(s.drops for s in subs) >= ROUNDS  # each round dropped some
        assert adopted_total == ROUNDS
    finally:
        for s in subs:
            s.stop = True
        for p in pubs:
            p.stop_at = p.give_up = time.monotonic()
        for t in subs + pubs:
            t.join(5)
        lb.stop()


def test_node_started_after_the_death(redis, cluster):
    """A node that starts after a member died (no node up saw it go out)
    finds its store in Redis and adopts its sessions: the subscriber
    resumes there with its queued message."""
    cluster.start_etcd()
    a = cluster.start_node("a", workers=2, persistence=redis_persistence(redis))
    wait_members([a], 1, timeout=30 * SLOW)
    s = RawClient(a.host, a.port, timeout=T)
    assert s.connect("late-sub", clean=False, timeout=T).rc == 0
    assert s.subscribe(1, [("late/t", 1)], timeout=T).codes == [1]
    s.go_offline(T)
    p = RawClient(a.host, a.port, timeout=T)
    assert p.connect("late-pub", timeout=T).rc == 0
    p.send(publish("late/t", b"kept", qos=1, pid=1))
    assert p.recv(T).type == PUBACK
    p.close()
    a.kill()

    def a_gone():  # its lease expired: no member key left
        j = cluster.etcd.call("/v3/kv/range", {
            "key": base64.b64encode(b"/antenna/t/members/").decode(),
            "range_end": base64.b64encode(b"/antenna/t/members0").decode(),
            "count_only": True})
        return int(j.get("count", 0)) == 0
    wait_for(a_gone, 20 * SLOW, what="a's member key gone with its lease")
    b = cluster.start_node("b", workers=2, persistence=redis_persistence(redis))
    wait_for(lambda: (metric(b, "antenna_cluster_adoptions_total") or 0) == 1, 30 * SLOW,
             what="b adopted a's sessions")
    c, ack = lb_connect(b.port, "late-sub", False, time.monotonic() + 20 * SLOW)
    assert ack.session_present == 1
    m = c.recv(T)
    assert m.type == PUBLISH and m.payload == b"kept", m
    c.send(puback(m.pid))
    c.close()
