"""The edges of a session moving between live nodes (issue 20;
src/cluster/cl_move.c; docs/cluster.md "A session that moves between live
nodes").

A clean-start CONNECT on b for an id whose persistent session a holds: b
needs nothing of a's, so b tells a at once (CL_F_MOVE_DROP) and a ends the
tombstone it kept for the move: its routes go from every node well before
the 10 s a kept an unasked tombstone, nothing is counted lost, and the
session's delayed will is published then (the session ended), as a clean
start ends a session on one node.  Before the fix a kept the tombstone
(subscribed, queueing) 10 s, so c still saw a's route after 3 s and the
will came at the 10 s.
A drain (the second test): a waits for its tombstones before it stops.
The store tool (the third): export and import keep publish ids.
Every wait polls with a deadline."""

import json
import os
import signal
import subprocess
import threading
import time

import pytest

import mqttraw
from cluster_util import cluster, metric, needs_etcd  # noqa: F401
from conftest import IS_MOSQUITTO, freeze, require_antenna_bin, wait_for
from helpers import CheckedThread
from mqttraw import SESSION_EXPIRY_INTERVAL as SE, WILL_DELAY_INTERVAL, connect_v5, sub_opts
from test_124_move_will import client_info, offline_on, wait_will, watcher
from test_104_failover_rounds import SLOW, T
from test_77_cluster_owner import connect_retry, routes_seen, start
from test_95_store_redis import redis  # noqa: F401

pytestmark = [pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only"), needs_etcd]


def test_clean_start_elsewhere_ends_the_old_session_at_once(cluster):
    a, b, c = start(cluster, 3)
    cid = "mc-x"
    w = watcher(c, "mc-watch", "mcwill/#")
    wait_for(lambda: routes_seen(a, c) >= 1, 10, what="a knows c's route")
    will = ("mcwill/" + cid, b"ended", 1, False, [(WILL_DELAY_INTERVAL, 30)])
    x = connect_v5(a.host, a.port, cid, clean_start=False, props=[(SE, 300)], will=will)
    assert x.subscribe(1, [("mc/x/#", sub_opts(1)), ("mc/y", sub_opts(1))]).codes == [1, 1]
    wait_for(lambda: routes_seen(c, a) == 2, 10, what="c knows a's 2 routes")
    x.close()  # no DISCONNECT: the will waits for its delay
    wait_for(lambda: offline_on(a, cid), 5, what="X offline on a")
    # a message queued for X on a: the clean start discards it
    p = connect_v5(c.host, c.port, "mc-pub")
    p.publish("mc/y", b"queued", qos=1, pid=1)
    wait_for(lambda: (client_info(a, cid) or {}).get("queued", 0) >= 1, 10, what="queued on a")
    t0 = time.monotonic()
    x = connect_v5(b.host, b.port, cid, clean_start=True, props=[(SE, 300)])
    assert x.connack.session_present == 0, x.connack
    # a's routes for X go from c well before a's 10 s bound
    wait_for(lambda: routes_seen(c, a) == 0, 3, what="a's routes gone from c")
    print("a's routes gone from c %.0f ms after the clean-start CONNECT on b"
          % ((time.monotonic() - t0) * 1000))
    # the old session ended: its will goes (as a clean start on one node)
    m, _ = wait_will(w, 3)
    assert m is not None and (m.topic, m.payload) == ("mcwill/" + cid, b"ended"), m
    assert metric(a, "antenna_cluster_move_discarded_total") == 1
    assert metric(a, "antenna_cluster_move_lost_total") == 0
    x.close()
    p.close()
    w.close()



class DrainSub(CheckedThread):
    """A persistent MQTT 5 subscriber at QoS 1 on its own topic: on `first`
    until the drain tells it to move (DISCONNECT 0x9C), then on `then`
    (clean start 0: its session follows); `got` the payloads, `present` the
    session present flag of the CONNACK after the move."""

    def __init__(self, first, then, cid, topic):
        super().__init__()
        self.first, self.then, self.cid, self.topic = first, then, cid, topic
        self.got, self.present, self.moved_rc = [], [], None
        self.subscribed = threading.Event()
        self.stop = False


    def read(self, c):
        """Until the connection closes, or stop."""
        while not self.stop:
            try:
                p = c.recv(0.05)
            except mqttraw.Timeout:
                continue
            except (mqttraw.Closed, OSError):
                return
            if p.type == mqttraw.PUBLISH:
                self.got.append(p.payload)
                c.try_send(mqttraw.puback(p.pid))
            elif p.type == mqttraw.DISCONNECT:
                self.moved_rc = p.rc

    def _run(self):
        kw = {"clean_start": False, "props": [(SE, 300)]}
        c = connect_v5(self.first.host, self.first.port, self.cid, **kw)
        assert c.subscribe(1, [(self.topic, sub_opts(1))]).codes == [1]
        self.subscribed.set()
        self.read(c)
        c.close()
        if self.stop:
            return
        c = connect_retry(self.then, self.cid, timeout=60 * SLOW, **kw)
        self.present.append(c.connack.session_present)
        self.read(c)
        c.close()


class Publisher(CheckedThread):
    """QoS 1 to each topic in turn, `window` in flight, one every `pace`
    seconds at most; `acked` the payloads whose PUBACK came, by topic."""

    def __init__(self, node, cid, topics, window=16, pace=0.002):
        super().__init__()
        self.node, self.cid, self.topics, self.window = node, cid, topics, window
        self.pace = pace
        self.acked = {t: set() for t in topics}
        self.stop_at = None

    def _run(self):
        c = mqttraw.RawClient(self.node.host, self.node.port, timeout=T)
        assert c.connect(self.cid).rc == 0
        inflight, pid, i = {}, 0, 0
        give_up, next_send = None, time.monotonic()
        while True:
            now = time.monotonic()
            stopping = self.stop_at is not None and now >= self.stop_at
            if stopping:
                give_up = give_up or now + 30 * SLOW
                if not inflight or now >= give_up:
                    break
            elif len(inflight) < self.window and now >= next_send:
                next_send = now + self.pace
                pid = pid % 65535 + 1
                topic = self.topics[i % len(self.topics)]
                payload = b"%s-%d" % (self.cid.encode(), i)
                i += 1
                inflight[pid] = (topic, payload)
                assert c.try_send(mqttraw.publish(topic, payload, qos=1, pid=pid))
                continue
            try:
                p = c.recv(0.02)
            except mqttraw.Timeout:
                continue
            if p.type == mqttraw.PUBACK and p.pid in inflight:
                topic, payload = inflight.pop(p.pid)
                self.acked[topic].add(payload)
        c.close()

    def count(self):
        return sum(len(v) for v in self.acked.values())


def test_drain_waits_for_its_tombstones(cluster):
    """`POST /api/v1/drain` (what `antenna ctl drain` sends) on a under a
    QoS 1 publisher on c: a's 8 subscribers (one topic each) are told to
    move (0x9C) and resume on b.  d is frozen meanwhile, so b's route
    barrier holds each move's ask up to its 2 s bound: what reached a's
    tombstones before c knew b's routes waits there that long.  a stops
    only once its tombstones were asked and answered, so every acknowledged
    message reaches its subscriber.  Before, a stopped as soon as its
    persistent sessions were taken, and its tombstones went with it (b
    then resumed without their copies: acknowledged messages lost)."""
    a, b, c, d = start(cluster, 4, lease_ttl="10s")
    topics = ["md/t%d" % i for i in range(8)]
    subs = [DrainSub(a, b, "md-s%d" % i, t) for i, t in enumerate(topics)]
    for s in subs:
        s.start()
    for s in subs:
        assert s.subscribed.wait(30 * SLOW), "%s never subscribed" % s.cid
    wait_for(lambda: routes_seen(c, a) >= len(topics), 10 * SLOW, what="c knows a's routes")
    pub = Publisher(c, "md-pub", topics)
    pub.start()
    wait_for(lambda: pub.error is not None or pub.count() >= 100, 30 * SLOW, what="publishing")
    assert pub.error is None, pub.error
    freeze(d.proc.pid)
    try:
        t0 = time.monotonic()
        a.client.json("POST", "/api/v1/drain",
                      {"server_reference": "%s:%d" % (b.host, b.port)}, status=202)
        wait_for(lambda: a.proc.poll() is not None, 60 * SLOW, what="a stopped after the drain")
        print("a stopped %.0f ms after the drain began" % ((time.monotonic() - t0) * 1000))
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)
    assert a.proc.returncode == 0, a.log_text()[-2000:]
    wait_for(lambda: all(s.present for s in subs) or any(s.error for s in subs), 60 * SLOW,
             what="every subscriber moved to b")
    for s in subs:
        assert s.error is None, (s.cid, s.error)
        assert s.moved_rc == 0x9C and s.present == [1], (s.cid, s.moved_rc, s.present)
    pub.stop_at = time.monotonic()
    pub.join(40 * SLOW)
    assert not pub.is_alive() and pub.error is None, pub.error

    def missing():
        return {s.cid: pub.acked[s.topic] - set(s.got) for s in subs
                if pub.acked[s.topic] - set(s.got)}
    try:
        wait_for(lambda: not missing(), 30 * SLOW, what="every acknowledged message delivered")
    finally:
        for s in subs:
            s.stop = True
        for s in subs:
            s.join(10)
        print("b:", {k: metric(b, k) for k in (
            "antenna_cluster_moves_in_total", "antenna_cluster_move_merged_total",
            "antenna_cluster_move_timeouts_total")})
        for cid, m in sorted(missing().items()):
            print("%s: %d acknowledged missing %s" % (cid, len(m), sorted(m)[:10]))


def test_store_export_import_keeps_publish_ids(cluster, tmp_path, request):
    """`antenna store export` / `import` carry a queued message's publish id
    (docs/persistence.md): a cluster node's RocksDB store (its queued
    records carry ids) exported, imported into Redis, exported from there:
    the same ids, and the import of an export whose lines lack them (an
    older one) still works."""
    redis = request.getfixturevalue("redis")
    cluster.start_etcd()
    a = cluster.start_node("a", persistence={"sync": "always"})
    x = connect_v5(a.host, a.port, "ex-sub", clean_start=False, props=[(SE, 300)])
    assert x.subscribe(1, [("ex/t", sub_opts(1))]).codes == [1]
    x.close()
    wait_for(lambda: offline_on(a, "ex-sub"), 5, what="the subscriber offline")
    p = connect_v5(a.host, a.port, "ex-pub")
    for i in range(3):
        assert p.publish("ex/t", b"m%d" % i, qos=1, pid=i + 1).rc in (0, 0x10)
    p.close()
    wait_for(lambda: (client_info(a, "ex-sub") or {}).get("queued", 0) == 3, 10, what="queued")
    a.stop()
    tool = [require_antenna_bin(), "store"]

    def run(*args):
        r = subprocess.run(tool + list(args), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r
        return r

    def ids(path):
        return sorted((m["payload"], m["id_epoch"], m["id_seq"]) for m in map(
            json.loads, open(path).read().splitlines()) if m.get("type") == "message")
    first, second = str(tmp_path / "rocks.jsonl"), str(tmp_path / "redis.jsonl")
    run("export", a.persistence["dir"], first)
    got = ids(first)
    assert len(got) == 3 and all(s > 0 for _, _, s in got), got
    url = redis.url + "?prefix=antenna:exp:"
    run("import", url, first)
    run("export", url, second)
    assert ids(second) == got
    # an export without ids (as older builds wrote it) imports, ids and all gone
    older = str(tmp_path / "older.jsonl")
    with open(older, "w") as f:
        for line in open(first).read().splitlines():
            m = json.loads(line)
            m.pop("id_epoch", None)
            m.pop("id_seq", None)
            f.write(json.dumps(m) + "\n")
    run("import", redis.url + "?prefix=antenna:old:", older)
    run("export", redis.url + "?prefix=antenna:old:", second)
    assert [m for m in map(json.loads, open(second).read().splitlines())
            if m.get("type") == "message" and "id_seq" in m] == []
