"""The lease before the claims (issue 20, the connect storm at 53 nodes;
src/cluster/cl_member.c on_keepalive, cl_etcd.c cl_etcd_hold and the
batches' window; docs/cluster.md "Membership").

Under a storm of claims etcd's applies fall behind its commits, and etcd
answers a keep-alive only once it applied what it committed before (1 s at
most, else HTTP 503): one 1,000,000-device run lost every node's lease so.
So a node whose keep-alive fails sends no more batches of claims until a
keep-alive is answered, and while etcd answers a batch in a second or more
it keeps one batch in flight, not four.

- etcd stopped: the next keep-alive fails and the claims are held, a
  CONNECT then waits (no batch is sent; without the hold its claim would
  fail at once and the CONNECT be refused with 0x88); etcd back, the
  keep-alive is answered first, then the claim: CONNACK 0, and the lease
  was never lost.
- etcd frozen while a claim is in flight: the batch's slow answer cuts the
  window (antenna_cluster_etcd_slow_total), and the claims after it go on.

Every wait polls with a deadline."""

import os
import signal
import time

import pytest

import mqttraw
from cluster_util import cluster, metric, needs_etcd, wait_members  # noqa: F401
from conftest import IS_MOSQUITTO, freeze, wait_for
from test_82_cluster_registry import Burst, claims_sent

pytestmark = [pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only"), needs_etcd]


def counter(node, name):
    v = metric(node, name)
    assert v is not None, "no %s in the metrics" % name
    return v


def test_claims_wait_for_the_keepalive(cluster):
    cluster.start_etcd()
    # lease_ttl 20 s: keep-alives every ~6.7 s; etcd is away for less than
    # the lease, so the node must keep it throughout
    (a,) = cluster.start_nodes(1, lease_ttl="20s")
    wait_members([a], 1, timeout=20)
    before = mqttraw.connect_v5(a.host, a.port, "ka-before")
    renewals0 = counter(a, "antenna_cluster_lease_renewals_total")
    held0 = counter(a, "antenna_cluster_etcd_batches_held_total")
    burst = None
    cluster.etcd.stop()
    try:
        # the next keep-alive cannot reach etcd: the batches are held
        wait_for(lambda: counter(a, "antenna_cluster_etcd_batches_held_total") > held0, 15,
                 what="a failed keep-alive holding the claims")
        batches0 = counter(a, "antenna_cluster_etcd_txn_batches_total")
        sent0 = claims_sent(a)
        burst = Burst([(a, "ka-during")])
        burst.start()
        wait_for(lambda: claims_sent(a) > sent0, 10, what="the claim queued")
        # held: no batch goes to the etcd that is away, the CONNECT waits
        # (without the hold: a batch sent at once, failed, CONNACK 0x88)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert counter(a, "antenna_cluster_etcd_txn_batches_total") == batches0, \
                "a batch went while the keep-alive failed"
            assert not burst.results, "the CONNECT was answered: %r" % burst.results
            time.sleep(0.1)
    finally:
        cluster.etcd.start()
    try:
        burst.join()
        assert burst.results[("node0", "ka-during")][1] == 0, burst.results
        assert counter(a, "antenna_cluster_lease_renewals_total") > renewals0
        assert counter(a, "antenna_cluster_etcd_txn_batches_total") > batches0
        assert counter(a, "antenna_cluster_lease_ok") == 1
        assert "lease lost" not in a.log_text()
        assert before.is_open(1)
    finally:
        burst.close()
        before.close()


def test_slow_answer_cuts_the_window(cluster):
    cluster.start_etcd()
    (a,) = cluster.start_nodes(1, lease_ttl="20s")
    wait_members([a], 1, timeout=20)
    slow0 = counter(a, "antenna_cluster_etcd_slow_total")
    sent0 = claims_sent(a)
    pid = cluster.etcd.proc.pid
    burst = Burst([(a, "slow-%d" % i) for i in range(5)])
    freeze(pid)
    try:
        burst.start()
        wait_for(lambda: claims_sent(a) >= sent0 + 5, 10, what="the claims sent")
        # the stimulus: etcd away for longer than CL_ETCD_SLOW_MS (1 s)
        time.sleep(1.5)
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        burst.join()
        assert all(rc == 0 for _, rc in burst.results.values()), burst.results
        assert counter(a, "antenna_cluster_etcd_slow_total") > slow0
        # the claims after it go on (one batch in flight, then more)
        after = [mqttraw.connect_v5(a.host, a.port, "after-%d" % i) for i in range(10)]
        for c in after:
            c.close()
    finally:
        burst.close()
