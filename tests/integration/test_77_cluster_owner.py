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
from conftest import IS_MOSQUITTO, freeze, wait_for

pytestmark = [pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only"), needs_etcd]


def owner_of(cluster, cid):
    """The node name etcd holds for cid, or None."""
    key = base64.b64encode(("/antenna/t/clients/" + cid).encode()).decode()
    j = cluster.etcd.call("/v3/kv/range", {"key": key})
    kvs = j.get("kvs") or []
    return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


def links_up(nodes, timeout=30):
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


def routes_seen(on, of):
    """How many filters node `on` knows node `of` has subscribers for."""
    j = wait_nodes(on, lambda j: True)
    peer = {x["node"]: x for x in j["nodes"] if not x["self"]}.get(of.name, {})
    return peer.get("link_state", {}).get("routes", 0)


def queued_on(node, cid):
    try:
        j = node.client.get("/api/v1/clients/" + cid)
    except Exception:  # noqa: BLE001 - not there (yet)
        return -1
    j = j.get("client", j)
    return j.get("queued", -1)


@pytest.mark.parametrize("v5", [True, False], ids=["mqtt5", "mqtt311"])
def test_persistent_session_moves_with_its_queue(cluster, v5):
    a, b, c = start(cluster, 3)
    cid = "mover-%d" % (5 if v5 else 3)
    topic = "dev/%s/cmd" % cid
    if v5:
        kw = {"clean_start": False, "props": [(mqttraw.SESSION_EXPIRY_INTERVAL, 300)]}
        s1 = mqttraw.connect_v5(a.host, a.port, cid, **kw)
        s1.subscribe(1, [(topic, mqttraw.sub_opts(1))], props=[(mqttraw.SUBSCRIPTION_ID, 7)])
    else:
        kw = {"clean": False}
        s1 = mqttraw.RawClient(a.host, a.port)
        assert s1.connect(cid, **kw).rc == 0
        s1.subscribe(1, [(topic, 1)])
    s1.disconnect()
    wait_for(lambda: routes_seen(b, a) >= 1, 10, what="node1 knows node0's route")
    # published on B while the client is offline: queued in its session on A
    pub = mqttraw.RawClient(b.host, b.port)
    assert pub.connect("pub-" + cid).rc == 0
    pub.publish(topic, b"while-away", qos=1, pid=1)
    wait_for(lambda: queued_on(a, cid) >= 1, 10, what="queued on node0")
    # back on C: the session follows, with the message
    s2 = connect_retry(c, cid, v5=v5, **kw)
    assert s2.connack.session_present == 1, s2.connack
    p = s2.wait_for(lambda p: p.type == mqttraw.PUBLISH, 5, what="the queued message")
    assert p.payload == b"while-away" and p.qos == 1
    if v5:
        assert p.props.get(mqttraw.SUBSCRIPTION_ID) == 7, p.props
    s2.ack(p)
    assert owner_of(cluster, cid) == "node2"
    wait_for(lambda: queued_on(a, cid) == -1, 5, what="the session gone from node0")
    # its subscription works there: a publish on A reaches it
    wait_for(lambda: routes_seen(a, c) >= 1, 10, what="node0 knows node2's route")
    pa = mqttraw.RawClient(a.host, a.port)
    assert pa.connect("pub2-" + cid).rc == 0
    pa.publish(topic, b"from-a", qos=1, pid=1)
    p = s2.wait_for(lambda p: p.type == mqttraw.PUBLISH, 5, what="a publish from node0")
    assert p.payload == b"from-a"
    s2.ack(p)
    for x in (s2, pub, pa):
        x.close()


def test_lease_lost_then_back_closes_ids_claimed_meanwhile(cluster):
    import os
    import signal
    a, b = start(cluster, 2, lease_ttl="2s")
    first = mqttraw.connect_v5(a.host, a.port, "dev-l")
    keep = mqttraw.connect_v5(a.host, a.port, "dev-keep")
    wait_for(lambda: owner_of(cluster, "dev-l") == "node0", 5, what="claim by node0")
    # node0 frozen past its lease: etcd drops it and its claims
    try:
        freeze(a.proc.pid)
        wait_members([b], ["node1"], timeout=15)
        wait_for(lambda: owner_of(cluster, "dev-l") is None, 10, what="claims gone with the lease")
        second = connect_retry(b, "dev-l")
        assert owner_of(cluster, "dev-l") == "node1"
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    # node0 back with a new lease: claims its clients again; dev-l is node1's
    a.wait_log(r"cluster: lease back")
    first.expect_disconnect(0x8E, timeout=10)
    wait_for(lambda: owner_of(cluster, "dev-keep") == "node0", 10, what="dev-keep claimed again")
    assert keep.is_open()
    assert second.is_open()
    assert owner_of(cluster, "dev-l") == "node1"


def test_drain_hands_the_session_over_then_stops(cluster):
    """A drain on a node of a cluster with etcd: its MQTT 5 client is told
    to move (0x9C with the server reference), reconnects on another node,
    which takes the session with the message queued meanwhile; the drained
    node stops only once the session is taken (cluster.drain_handover_wait),
    not when its last client left."""
    a, b = start(cluster, 2)
    cid, topic = "drained-1", "dev/drained-1/cmd"
    kw = {"clean_start": False, "props": [(mqttraw.SESSION_EXPIRY_INTERVAL, 300)]}
    s1 = mqttraw.connect_v5(a.host, a.port, cid, **kw)
    s1.subscribe(1, [(topic, mqttraw.sub_opts(1))])
    wait_for(lambda: routes_seen(b, a) >= 1, 10, what="node1 knows node0's route")
    a.client.json("POST", "/api/v1/drain", {"server_reference": "%s:%d" % (b.host, b.port)},
                  status=202)
    d = s1.expect_disconnect(0x9C, timeout=10)  # Use another server
    assert d.props.get(mqttraw.SERVER_REFERENCE) == "%s:%d" % (b.host, b.port), d
    # no client left on node0, its session still there: node0 waits
    pub = mqttraw.RawClient(b.host, b.port)
    assert pub.connect("pub-" + cid).rc == 0
    pub.publish(topic, b"while-moving", qos=1, pid=1)
    wait_for(lambda: queued_on(a, cid) >= 1, 10, what="queued on node0")
    body = a.client.get("/api/v1/drain")
    assert body["clients_left"] == 0 and body["sessions_to_hand_over"] >= 1, body
    assert a.proc.poll() is None, "node0 stopped with a session not handed over"
    # the client moves as told: node1 takes the session and its message
    s2 = connect_retry(b, cid, **kw)
    assert s2.connack.session_present == 1, s2.connack
    p = s2.wait_for(lambda p: p.type == mqttraw.PUBLISH, 5, what="the queued message")
    assert p.payload == b"while-moving"
    s2.ack(p)
    # and node0, empty now, stops by itself
    wait_for(lambda: a.proc.poll() is not None, 15, what="node0 stopped after the hand-over")
    assert a.proc.returncode == 0, a.log_text()[-2000:]
    assert "drain: finished" in a.log_text()
    s2.close()
    pub.close()
