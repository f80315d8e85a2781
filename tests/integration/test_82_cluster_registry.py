"""The client-id registry's batches (src/cluster/cl_etcd.c cl_etcd_create,
cl_owner.c; docs/cluster.md "Client-id ownership"): claims of many ids at
once go to etcd as one txn (creates compared together); a batch where some
ids are held elsewhere fails as a whole, the held ones are taken over as
one at a time would be, the absent ones are created in the next batch;
two nodes racing for many ids at once end with exactly one owner each.

To make the batches certain, etcd is paused (SIGSTOP) while the CONNECTs
arrive: every claim waits on the node's batch queue, and they leave
together when etcd runs again (at most CL_ETCD_BATCHES_INFLIGHT requests
were sent before).  lease_ttl 15s gives etcd requests a 5 s timeout, far
more than the pause.  Every wait polls with a deadline."""

import base64
import os
import signal
import threading

import pytest

import mqttraw
from cluster_util import cluster, metric, needs_etcd, wait_members, wait_nodes  # noqa: F401
from conftest import IS_MOSQUITTO, wait_for

pytestmark = [pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only"), needs_etcd]

PREFIX = "/antenna/t/clients/"


def owners(cluster):
    """{client id: owning node} for every claim in etcd."""
    end = PREFIX[:-1] + chr(ord(PREFIX[-1]) + 1)
    j = cluster.etcd.call("/v3/kv/range", {
        "key": base64.b64encode(PREFIX.encode()).decode(),
        "range_end": base64.b64encode(end.encode()).decode()})
    out = {}
    for kv in j.get("kvs") or []:
        out[base64.b64decode(kv["key"]).decode()[len(PREFIX):]] = \
            base64.b64decode(kv.get("value", "")).decode()
    return out


def start(cluster, n=2):
    cluster.start_etcd()
    nodes = cluster.start_nodes(n, lease_ttl="15s")
    wait_members(nodes, n, timeout=20)

    def up(node):
        def check(j):
            return all(x.get("link_state", {}).get("state") == "up"
                       for x in j["nodes"] if not x["self"])
        return check
    for node in nodes:
        wait_nodes(node, up(node), timeout=20, what="links up")
    return nodes


def claims_sent(node):
    return metric(node, 'antenna_cluster_client_claims_total{outcome="sent"}') or 0


class Burst:
    """CONNECTs (MQTT 5) of (node, client id) pairs, each on its own thread,
    started together; results[(node name, id)] = (client, reason code or
    None when the connection broke or timed out)."""

    def __init__(self, pairs):
        self.results = {}
        self.threads = [threading.Thread(target=self.go, args=p) for p in pairs]

    def go(self, node, cid):
        c = None
        try:
            c = mqttraw.RawClient5(node.host, node.port, timeout=30)
            ack = c.connect(cid, timeout=30)
            self.results[(node.name, cid)] = (c, ack.rc)
        except (mqttraw.Closed, mqttraw.Timeout, OSError):
            self.results[(node.name, cid)] = (c, None)

    def start(self):
        for t in self.threads:
            t.start()

    def join(self):
        for t in self.threads:
            t.join(40)
        assert not any(t.is_alive() for t in self.threads), "CONNECTs still waiting"

    def close(self):
        for c, _ in self.results.values():
            if c is not None:
                c.close()


def with_etcd_paused(cluster, burst, until, before=None):
    """Run before() and burst while etcd is stopped, until until() holds (the
    claims are queued on the nodes), then let etcd go on and wait for the
    CONNACKs."""
    pid = cluster.etcd.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        if before:
            before()
        burst.start()
        wait_for(until, 15, what="the claims queued on the nodes")
    finally:
        os.kill(pid, signal.SIGCONT)
    burst.join()


def test_batch_with_held_and_absent_ids(cluster):
    a, b = start(cluster)
    held = ["held-%d" % i for i in range(20)]
    new = ["new-%d" % i for i in range(20)]
    gone = ["gone-%d" % i for i in range(5)]
    first = {cid: mqttraw.connect_v5(a.host, a.port, cid) for cid in held}
    leaving = [mqttraw.connect_v5(b.host, b.port, cid) for cid in gone]
    wait_for(lambda: all(owners(cluster).get(cid) == "node0" for cid in held)
             and all(owners(cluster).get(cid) == "node1" for cid in gone), 10,
             what="node0 owns the held ids, node1 the gone ones")
    sent0 = claims_sent(b)
    burst = Burst([(b, cid) for pair in zip(held, new) for cid in pair])

    def leave():
        # clean sessions closing on node1: their releases (nested txns) wait
        # in the same queue as the claims, and share the failing batch
        for c in leaving:
            c.disconnect()
    try:
        with_etcd_paused(cluster, burst, lambda: claims_sent(b) >= sent0 + 40, leave)
        bad = {k: rc for k, (_, rc) in burst.results.items() if rc != 0}
        assert not bad, "CONNACKs not 0 on node1: %r" % bad
        # the held ones were taken over from node0 (0x8E), the new ones created
        for cid in held:
            first[cid].expect_disconnect(0x8E, timeout=10)
        wait_for(lambda: all(owners(cluster).get(cid) == "node1" for cid in held + new), 10,
                 what="node1 owns all 40")
        wait_for(lambda: not set(gone) & set(owners(cluster)), 10, what="the gone ids released")
        # one batch held both kinds: it failed as a whole, its absent ids
        # went again (nested) and were created
        assert metric(b, "antenna_cluster_etcd_txn_batches_retried_total") >= 1
        assert metric(b, "antenna_cluster_etcd_batched_txns_total") > \
            metric(b, "antenna_cluster_etcd_txn_batches_total")
        assert all(c.is_open(2) for c, _ in burst.results.values())
    finally:
        burst.close()
        for c in first.values():
            c.close()


def test_two_nodes_race_many_ids_at_once(cluster):
    a, b = start(cluster)
    ids = ["race-%d" % i for i in range(30)]
    s0, s1 = claims_sent(a), claims_sent(b)
    burst = Burst([(n, cid) for cid in ids for n in (a, b)])
    try:
        with_etcd_paused(cluster, burst,
                         lambda: claims_sent(a) >= s0 + 30 and claims_sent(b) >= s1 + 30)

        def settled():
            own = owners(cluster)
            for cid in ids:
                open_ = [name for name in ("node0", "node1")
                         if burst.results[(name, cid)][1] == 0
                         and burst.results[(name, cid)][0].is_open(0.5)]
                if len(open_) != 1 or own.get(cid) != open_[0]:
                    return None
            return own
        own = wait_for(settled, 20, interval=0.2,
                       what="exactly one connection per id, on its owner")
        assert sorted(own.get(cid) is not None for cid in ids) == [True] * len(ids)
    finally:
        burst.close()
    # both nodes' claims were batched
    for n in (a, b):
        assert metric(n, "antenna_cluster_etcd_batched_txns_total") > \
            metric(n, "antenna_cluster_etcd_txn_batches_total")
