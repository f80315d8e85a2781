"""`antenna ctl nodes` (src/api/api_ctl.c over GET /api/v1/nodes;
docs/cluster.md "Operations") against a 2-node cluster with etcd: the
table (members, link state, routes, queued, lag) and --json; the lag of a
peer that stops reading (SIGSTOP) grows with its oldest unacknowledged
QoS 1 message; a broker without a cluster says so.  Every wait polls with
a deadline."""

import json
import os
import signal

import pytest

import mqttraw
from cluster_util import cluster, needs_etcd, wait_members, wait_nodes  # noqa: F401
from conftest import IS_MOSQUITTO, require_antenna_bin, wait_for
from test_51_ctl import ctl
from test_50_api import make_key

pytestmark = [pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only"), needs_etcd]


def run(node, key, *args):
    return ctl(require_antenna_bin(), *args, url=node.api_url, key=key)


def nodes_of(node, key):
    rc, out, err = run(node, key, "nodes", "--json")
    assert rc == 0, err
    return json.loads(out)


def peer(j, name):
    return next(n for n in j["nodes"] if n["node"] == name)


def test_ctl_nodes_table_json_and_lag(cluster):
    cluster.start_etcd()
    # lease_ttl 15s: node1 stays a member while it is stopped below
    a, b = cluster.start_nodes(2, lease_ttl="15s")
    wait_members([a, b], 2, timeout=20)
    sub = mqttraw.connect_v5(b.host, b.port, "ctl-sub")
    sub.subscribe(1, [("ctl/x", mqttraw.sub_opts(1))])
    wait_nodes(a, lambda j: peer(j, "node1").get("link_state", {}).get("state") == "up"
               and peer(j, "node1")["link_state"]["routes"] >= 1, 20,
               "node1's link up with its route")

    j = nodes_of(a, cluster.key)
    assert j["clustered"] is True and j["node"] == "node0" and j["members"] == 2
    assert peer(j, "node0")["self"] is True
    ls = peer(j, "node1")["link_state"]
    assert ls["state"] == "up" and ls["routes"] >= 1 and ls["lag_ms"] == 0, ls

    rc, out, err = run(a, cluster.key, "nodes")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("node node0, cluster t,") and "2 members, lease ok" in lines[0], out
    head = lines[1].split()
    for col in ("NODE", "MEMBER", "STATE", "ROUTES", "QUEUED", "LAG", "FORWARDED"):
        assert col in head, out
    row1 = next(line.split() for line in lines[2:] if line.split()[:1] == ["node1"])
    assert row1[head.index("STATE")] == "up", out
    assert int(row1[head.index("ROUTES")]) >= 1, out
    assert row1[head.index("LAG")] == "0ms", out
    assert any(line.split()[:1] == ["node0"] for line in lines[2:]), out

    # node1 stops reading: node0's QoS 1 copy for it waits, and its age shows
    os.kill(b.proc.pid, signal.SIGSTOP)
    try:
        pub = mqttraw.RawClient(a.host, a.port)
        assert pub.connect("ctl-pub").rc == 0
        pub.send(mqttraw.publish("ctl/x", b"m", qos=1, pid=1))
        wait_for(lambda: peer(nodes_of(a, cluster.key), "node1")["link_state"]["queued"] >= 1
                 and peer(nodes_of(a, cluster.key), "node1")["link_state"]["lag_ms"] >= 300,
                 10, what="queued and lag_ms >= 300 for node1")
        rc, out, err = run(a, cluster.key, "nodes")
        assert rc == 0, err
        head = out.splitlines()[1].split()
        row1 = next(line.split() for line in out.splitlines()[2:]
                    if line.split()[:1] == ["node1"])
        lag = row1[head.index("LAG")]
        assert lag.endswith("ms") and int(lag[:-2]) >= 300, out
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)
    # acknowledged once node1 runs again: the lag is gone
    wait_for(lambda: peer(nodes_of(a, cluster.key), "node1")["link_state"]["queued"] == 0
             and peer(nodes_of(a, cluster.key), "node1")["link_state"]["lag_ms"] == 0,
             15, what="node1 acknowledged")
    p = sub.wait_for(lambda p: p.type == mqttraw.PUBLISH, 10, what="the message on node1")
    assert p.payload == b"m"
    pub.close()
    sub.close()

    # usage
    rc, _, err = run(a, cluster.key, "nodes", "extra")
    assert rc == 2 and "nodes takes no argument" in err


def test_ctl_nodes_without_a_cluster(broker, tmp_path):
    keys = tmp_path / "api.keys"
    key = make_key(keys)
    b = broker(api={"keys_file": str(keys)})
    rc, out, err = ctl(require_antenna_bin(), "nodes", url=b.api_url, key=key)
    assert rc == 0, err
    assert out.strip() == "not clustered (cluster.node is not set)"
    rc, out, err = ctl(require_antenna_bin(), "nodes", "--json", url=b.api_url, key=key)
    assert rc == 0, err
    assert json.loads(out) == {"clustered": False, "nodes": []}
