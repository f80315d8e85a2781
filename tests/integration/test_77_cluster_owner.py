"""Client-id ownership across nodes (src/cluster/cl_owner.c, the connect
gate in proto.c; docs/cluster.md "Client-id ownership"): etcd holds
/antenna/t/clients/<id> = the owning node; a CONNECT on another node takes
the id (and the session) over; two CONNECTs racing on two nodes end with
one connection; a killed node's ids are free after its lease.  Every wait
polls with a deadline."""

import base64
import threading
import time

import pytest

import mqttraw
from cluster_util import cluster, needs_etcd, wait_members, wait_nodes  # noqa: F401
from conftest import IS_MOSQUITTO, wait_for

pytestmark = [pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only"), needs_etcd]


def owner_of(cluster, cid):
    """The node name etcd holds for cid, or None."""
    key = base64.b64encode(("/antenna/t/clients/" + cid).encode()).decode()
    j = cluster.etcd.call("/v3/kv/range", {"key": key})
    kvs = j.get("kvs") or []
    return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


def links_up(nodes, timeout=15):
    names = {n.name for n in nodes}

    def up(n):
        def check(j):
            peers = {x["node"]: x for x in j["nodes"] if not x["self"]}
            return all(peers.get(o, {}).get("link_state", {}).get("state") == "up"
                       for o in names - {n.name})
        return check
    for n in nodes:
        wait_nodes(n, up(n), timeout=timeout, what="links up")


def start(cluster, n, **kw):
    cluster.start_etcd()
    nodes = cluster.start_nodes(n, lease_ttl=kw.pop("lease_ttl", "3s"), **kw)
    wait_members(nodes, n)
    links_up(nodes)
    return nodes


def connect_retry(node, cid, v5=True, timeout=10.0, **kw):
    """Connect until the CONNACK says yes (0x88 while a claim cannot be
    decided yet); returns the client."""
    deadline = time.monotonic() + timeout
    while True:
        c = mqttraw.RawClient5(node.host, node.port) if v5 else \
            mqttraw.RawClient(node.host, node.port)
        try:
            ack = c.connect(cid, **kw)
            if ack.rc == 0:
                c.connack = ack
                return c
        except (mqttraw.Closed, mqttraw.Timeout, OSError):
            pass
        c.close()
        assert time.monotonic() < deadline, "no CONNACK 0 for %s on %s" % (cid, node.name)
        time.sleep(0.1)


def test_second_connection_on_another_node_takes_over(cluster):
    a, b = start(cluster, 2)
    first = mqttraw.connect_v5(a.host, a.port, "dev-1")
    wait_for(lambda: owner_of(cluster, "dev-1") == "node0", 5, what="claim by node0")
    second = mqttraw.connect_v5(b.host, b.port, "dev-1")
    assert second.connack.rc == 0
    first.expect_disconnect(0x8E, timeout=5)  # Session taken over
    wait_for(lambda: owner_of(cluster, "dev-1") == "node1", 5, what="claim by node1")
    # the second one works: a round trip through node1
    second.subscribe(1, [("own/t", mqttraw.sub_opts(1))])
    second.publish("own/t", b"hi", qos=1, pid=2)
    got = second.wait_for(lambda p: p.type == mqttraw.PUBLISH, 5, what="own message")
    assert got.payload == b"hi"
    second.disconnect()
    # a clean session ends: its claim goes
    wait_for(lambda: owner_of(cluster, "dev-1") is None, 5, what="claim released")


def test_mqtt311_takeover_closes_the_first(cluster):
    a, b = start(cluster, 2)
    first = mqttraw.RawClient(a.host, a.port)
    assert first.connect("dev-3", clean=True).rc == 0
    second = connect_retry(b, "dev-3", v5=False, clean=True)
    first.wait_closed(5)
    assert second.is_open()
    assert owner_of(cluster, "dev-3") == "node1"


def test_racing_connections_end_with_one(cluster):
    a, b = start(cluster, 2)
    for round_ in range(5):
        cid = "race-%d" % round_
        clients = {}

        def go(node):
            c = mqttraw.RawClient5(node.host, node.port)
            try:
                ack = c.connect(cid)
                clients[node.name] = (c, ack.rc)
            except (mqttraw.Closed, mqttraw.Timeout, OSError):
                clients[node.name] = (c, None)
        ts = [threading.Thread(target=go, args=(n,)) for n in (a, b)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(15)

        def settled():
            open_ = [name for name, (c, rc) in clients.items() if rc == 0 and c.is_open(0.2)]
            owner = owner_of(cluster, cid)
            return open_ if len(open_) == 1 and owner == open_[0] else None
        winner = wait_for(settled, 10, what="exactly one connection for %s" % cid)
        assert owner_of(cluster, cid) == winner[0]
        for c, _ in clients.values():
            c.close()


def test_killed_node_ids_free_after_lease(cluster):
    a, b, c = start(cluster, 3, lease_ttl="2s")
    held = mqttraw.connect_v5(c.host, c.port, "dev-k")
    wait_for(lambda: owner_of(cluster, "dev-k") == "node2", 5, what="claim by node2")
    c.kill()
    t0 = time.monotonic()
    # refused (0x88) while node2 is still a member without a link; then free
    moved = connect_retry(a, "dev-k", timeout=15)
    assert moved.connack.rc == 0
    assert owner_of(cluster, "dev-k") == "node0"
    assert time.monotonic() - t0 < 15
    held.close()
