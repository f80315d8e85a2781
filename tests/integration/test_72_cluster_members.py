"""Cluster membership through etcd (src/cluster/cl_member.c, cl_etcd.c;
docs/cluster.md, "Membership"): nodes register under a lease and see each
other; a clean stop leaves at once (the lease is revoked), a killed node
leaves after lease_ttl; a duplicate name is refused at start; a node cut
off from etcd refuses new connections once its lease is gone (503 on
/health/ready) and keeps the ones it has, and comes back when etcd does;
tools/cluster.sh up / down."""

import os
import pathlib
import shlex
import shutil
import subprocess
import time
import urllib.request

import pytest

from cluster_util import cluster, metric, needs_etcd, ready_status, wait_members, wait_nodes, \
    wait_ready  # noqa: F401 (the fixture)
from conftest import IS_MOSQUITTO, free_port, require_antenna_bin, wait_for
import mqttraw
from helpers import Paho

pytestmark = [pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only"), needs_etcd]

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_three_nodes_see_each_other(cluster):
    cluster.start_etcd()
    nodes = cluster.start_nodes(3)
    wait_members(nodes, ["node0", "node1", "node2"])
    for n in nodes:
        j = wait_nodes(n, lambda j: j["lease_ok"] is True, what="lease_ok")
        assert j["clustered"] is True and j["cluster"] == "t" and j["node"] == n.name, j
        others = {x["node"]: x for x in j["nodes"] if not x["self"]}
        # each member's link address comes from its etcd entry
        assert all(x["link"].startswith("127.0.0.1:") for x in others.values()), j
        wait_for(lambda: metric(n, "antenna_cluster_members") == 3, 5, what="metric members 3")
        assert metric(n, "antenna_cluster_lease_ok") == 1
        assert metric(n, "antenna_cluster_etcd_requests_total") >= 3
        assert ready_status(n) == 200
    # keep-alives every lease_ttl / 3
    wait_for(lambda: metric(nodes[0], "antenna_cluster_lease_renewals_total") >= 1, 5,
             what="a lease renewal")
    assert metric(nodes[0], "antenna_cluster_lease_keepalive_age_seconds") < 2.0


def test_clean_stop_leaves_at_once_kill_after_ttl(cluster):
    cluster.start_etcd()
    # a long ttl for the clean stop: leaving must not wait for it
    a, b, c = cluster.start_nodes(3, lease_ttl="30s")
    wait_members([a, b, c], 3)
    t0 = time.monotonic()
    c.stop()
    wait_members([a, b], ["node0", "node1"], timeout=5)
    assert time.monotonic() - t0 < 5
    c.wait_log(r"cluster: left the cluster \(lease \d+ revoked\)")
    a.wait_log(r"cluster: node node2 left")


def test_killed_node_leaves_after_lease_ttl(cluster):
    cluster.start_etcd()
    # cluster.revoke_refused off (on by default, test_130): a dead
    # process's lease is not revoked, it expires
    off = {"revoke_refused": False}
    a, b, c = cluster.start_nodes(3, lease_ttl="2s", cluster_keys=off)
    wait_members([a, b, c], 3)
    t0 = time.monotonic()
    c.kill()
    wait_members([a, b], ["node0", "node1"], timeout=10)
    # etcd expires a lease within about its ttl (in whole seconds, rounded up)
    assert time.monotonic() - t0 > 1.0
    # and a node with that name may join again
    c2 = cluster.start_node("node2", lease_ttl="2s", cluster_keys=off)
    wait_members([a, b, c2], 3)


def test_duplicate_name_is_refused(cluster):
    cluster.start_etcd()
    a = cluster.start_node("a")
    wait_nodes(a, lambda j: j["lease_ok"], what="a registered")
    dup = cluster.make_node("a").spawn()
    try:
        dup.proc.wait(15)
    except subprocess.TimeoutExpired:
        raise AssertionError("the duplicate started:\n" + dup.log_text()[-3000:])
    dup.stopped = True
    assert dup.proc.returncode != 0
    log = dup.log_text()
    assert "node name a is taken by a live member" in log, log[-3000:]
    assert "refusing to start" in log, log[-3000:]
    # the first one is untouched
    assert ready_status(a) == 200
    wait_members([a], ["a"])


def test_etcd_down_then_back(cluster):
    etcd = cluster.start_etcd()
    a, b = cluster.start_nodes(2, lease_ttl="2s")
    wait_members([a, b], 2)
    wait_ready(a)
    wait_ready(b)
    with Paho(a, client_id="stays") as sub:
        sub.subscribe("keep/#", qos=1)
        etcd.kill()
        # after lease_ttl, each node says it is not ready and refuses newcomers
        for n in (a, b):
            wait_ready(n, 503, timeout=10)
            n.wait_log(r"cluster: lease lost", timeout=5)
            assert metric(n, "antenna_cluster_lease_ok") == 0
        with a.raw(timeout=3) as raw:
            try:
                ack = raw.connect("newcomer")
                refused = ack.rc != 0
            except (OSError, mqttraw.Closed, mqttraw.Timeout):
                refused = True
            assert refused, "a new connection was accepted while the lease was lost"
        a.wait_log(r"connection from .* refused: the cluster lease is lost", timeout=5)
        # the connection it had still works
        sub.publish("keep/1", b"still here", qos=1)
        m = sub.get(timeout=5)
        assert (m.topic, m.payload) == ("keep/1", b"still here")
        # etcd back, on the same data directory
        etcd.start()
        for n in (a, b):
            wait_ready(n, 200, timeout=15)
            n.wait_log(r"cluster: lease back", timeout=5)
            assert metric(n, "antenna_cluster_lease_ok") == 1
        wait_members([a, b], 2, timeout=10)
        with Paho(b, client_id="after") as c:
            c.subscribe("after/t", qos=1)
            c.publish("after/t", b"ok", qos=1)
            assert c.get(timeout=5).payload == b"ok"


def read_env(path):
    env = {}
    for line in path.read_text().splitlines():
        k, _, v = line.partition("=")
        env[k] = shlex.split(v)[0] if v.strip() not in ("", '""') else ""
    return env


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy not installed")
def test_cluster_sh_up_down(tmp_path):
    """tools/cluster.sh up 2 / down, in the test's own directory
    (CLUSTER_DIR), not build/cluster."""
    d = tmp_path / "cluster"
    env = dict(os.environ, CLUSTER_DIR=str(d), ANTENNA_BIN=require_antenna_bin(),
               CLUSTER_WAIT_S="40")
    script = str(ROOT / "tools" / "cluster.sh")
    pids = []
    try:
        p = subprocess.run([script, "up", "2"], env=env, capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        e = read_env(d / "cluster.env")
        assert set(e) >= {"ETCD_URL", "LB_PORT", "NODE_PORTS", "API_PORTS", "NODE_PIDS"}, e
        assert len(e["NODE_PORTS"].split()) == 2 and len(e["API_PORTS"].split()) == 2, e
        pids = [int(x) for x in e["NODE_PIDS"].split()]
        for port in e["API_PORTS"].split():
            st = urllib.request.urlopen("http://127.0.0.1:%s/health/ready" % port,
                                        timeout=5).status
            assert st == 200
        # a client through HAProxy (PROXY protocol v2 to the nodes)
        c = mqttraw.RawClient("127.0.0.1", int(e["LB_PORT"]), timeout=5)
        try:
            assert c.connect("via-lb").rc == 0
            assert c.subscribe(1, [("lb/t", 1)]).codes == [1]
            c.publish("lb/t", b"x", qos=1, pid=2)
            assert c.recv_publish().payload == b"x"
        finally:
            c.close()
    finally:
        p = subprocess.run([script, "down"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert not (d / "cluster.env").exists()
    for pid in pids:
        assert not os.path.exists("/proc/%d" % pid) or \
            open("/proc/%d/stat" % pid).read().split()[2] == "Z", pid


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_cluster_sh_session_store_redis(tmp_path):
    """SESSION_STORE=redis tools/cluster.sh up 2: the cluster's own
    redis-server holds both nodes' stores (persistence.backend: redis),
    a persistent session is in it, and down stops it too."""
    d = tmp_path / "cluster"
    env = dict(os.environ, CLUSTER_DIR=str(d), ANTENNA_BIN=require_antenna_bin(),
               CLUSTER_WAIT_S="40", SESSION_STORE="redis")
    script = str(ROOT / "tools" / "cluster.sh")
    redis_pid = None
    try:
        p = subprocess.run([script, "up", "2"], env=env, capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        e = read_env(d / "cluster.env")
        assert e["REDIS_URL"].startswith("redis://127.0.0.1:"), e
        redis_pid = int((d / "redis.pid").read_text())
        port = e["REDIS_URL"].rsplit(":", 1)[1].split("/")[0]
        c = mqttraw.RawClient("127.0.0.1", int(e["NODE_PORTS"].split()[0]), timeout=5)
        try:
            assert c.connect("kept", clean=False).rc == 0
            assert c.subscribe(1, [("kept/t", 1)]).codes == [1]
        finally:
            c.close()

        def stored():
            out = subprocess.run(["redis-cli", "-p", port, "--raw", "keys", "antenna:node0:*"],
                                 capture_output=True, text=True, timeout=10).stdout
            return "antenna:node0:index" in out
        wait_for(stored, 30, what="node0's store in redis")
    finally:
        p = subprocess.run([script, "down"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert redis_pid is not None
    assert not os.path.exists("/proc/%d" % redis_pid) or \
        open("/proc/%d/stat" % redis_pid).read().split()[2] == "Z", redis_pid


def test_etcd_endpoints_tried_in_turn(cluster):
    """cluster.etcd lists a dead endpoint first: requests move on to the
    next one."""
    etcd = cluster.start_etcd()
    dead = "http://127.0.0.1:%d" % free_port()
    a = cluster.start_node("a", cluster_keys={"etcd": dead + "," + etcd.url})
    wait_nodes(a, lambda j: j["lease_ok"] and j["members"] == 1, what="a registered")
    wait_ready(a)
