"""A member whose process is gone is out at once, not lease_ttl later
(src/cluster/cl_link.c "the probe", cl_member.c cl_member_dead;
docs/cluster.md "A dead node's process"): when a node's link goes down and
its link address then refuses connections, the others revoke its lease.
A node that is alive but does not answer (SIGSTOP: the kernel still
accepts connections for it) keeps its lease.  cluster.revoke_refused is
on by default (docs/cluster.md): the first test runs with the default,
the others say it; without it a killed node is out only when its lease
expires (test_72's test_killed_node_leaves_after_lease_ttl)."""

import os
import re
import signal
import time

import pytest

from cluster_util import cluster, metric, needs_etcd, wait_members, wait_nodes  # noqa: F401 (the fixture)
from conftest import IS_MOSQUITTO, wait_for

pytestmark = [pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only"), needs_etcd]

LONG_TTL = "30s"  # far longer than what the tests wait: only a revoke ends the lease early
ON = {"revoke_refused": True}


def revoked(nodes):
    """The leases of dead members the nodes revoked, summed."""
    return sum(metric(n, "antenna_cluster_dead_leases_revoked_total") or 0 for n in nodes)


def links_up(nodes, timeout=20):
    """Each node's links to every other member are up (a link that never
    came up cannot go down)."""
    for n in nodes:
        wait_nodes(n, lambda j: all(x.get("link_state", {}).get("state") == "up"
                                    for x in j["nodes"] if not x["self"]),
                   timeout=timeout, what="%s's links up" % n.name)


def test_killed_node_is_out_before_its_lease_expires(cluster):
    cluster.start_etcd()
    # the default configuration (cluster.revoke_refused on)
    a, b, c = cluster.start_nodes(3, lease_ttl=LONG_TTL)
    wait_members([a, b, c], 3)
    links_up([a, b, c])
    t0 = time.monotonic()
    c.kill()
    # session 34's binary: out only after the 30 s lease
    wait_members([a, b], ["node0", "node1"], timeout=15)
    took = time.monotonic() - t0
    assert took < 15, took
    # both saw the link go down and the address refuse; one revoke went
    # through (the other finds the lease gone)
    wait_for(lambda: revoked([a, b]) >= 1, 10, what="node2's lease revoked")
    assert any(re.search(r"node2's link address refuses connections after its link went down: "
                         r"revoking its lease \d+", n.log_text()) for n in (a, b))
    a.wait_log(r"cluster: node node2 left")
    # its name is free again at once (the old lease is gone)
    c2 = cluster.start_node("node2", lease_ttl=LONG_TTL)
    wait_members([a, b, c2], 3, timeout=15)


def test_frozen_node_keeps_its_lease(cluster):
    cluster.start_etcd()
    a, b, c = cluster.start_nodes(3, lease_ttl=LONG_TTL, cluster_keys=ON)
    wait_members([a, b, c], 3)
    links_up([a, b, c])
    os.kill(c.proc.pid, signal.SIGSTOP)
    try:
        # its links fall silent and are closed (CL_DEAD_MS, 6 s); the probes
        # that follow are accepted by the kernel for the stopped process
        for n in (a, b):
            n.wait_log(r"cluster: link to node2 down", timeout=20)
        # the probes' whole window (10 x 100 ms) and then some, on a slow host
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert revoked([a, b]) == 0
            time.sleep(0.2)
        wait_members([a, b], 3, timeout=5)
    finally:
        os.kill(c.proc.pid, signal.SIGCONT)
    wait_members([a, b, c], 3, timeout=20)
    assert not any("revoking its lease" in n.log_text() for n in (a, b))
