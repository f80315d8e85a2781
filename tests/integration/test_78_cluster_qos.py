"""QoS across nodes and shared subscriptions across nodes (src/cluster/
cl_ack.c, cl_fwd.c; docs/cluster.md "QoS across nodes"): nodes with static
members (test_73's Cluster), links and routes awaited through GET
/api/v1/nodes before anything is published."""

import os
import signal
import time

import pytest

from conftest import IS_MOSQUITTO, wait_for
from test_73_cluster_links import client, close, cluster, get, subscribe  # noqa: F401

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only")


def test_puback_waits_for_the_remote_node(cluster):
    cl = cluster(2)
    cl.wait_links()
    sub = client(cl.nodes["b"], "sub-b")
    subscribe(sub, "held/t", 1)
    cl.wait_routes("a", "b", lambda n: n >= 1)
    pub = client(cl.nodes["a"], "pub-a")
    # the path works, and is acknowledged, while b runs
    info = pub.publish("held/t", b"warm", qos=1)
    info.wait_for_publish(5)
    assert info.is_published()
    assert get(sub).payload == b"warm"

    pid = cl.nodes["b"].proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        info = pub.publish("held/t", b"held", qos=1)
        # b is stopped: its link is silent, the PUBACK must not come (a
        # bounded window, well under the link's 6 s dead time)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert not info.is_published(), "PUBACK before the remote node had the message"
            time.sleep(0.05)
    finally:
        os.kill(pid, signal.SIGCONT)
    info.wait_for_publish(10)
    assert info.is_published()
    assert get(sub, timeout=10).payload == b"held"
    close(pub, sub)
