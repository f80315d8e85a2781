"""QoS across nodes and shared subscriptions across nodes (src/cluster/
cl_ack.c, cl_fwd.c; docs/cluster.md "QoS across nodes"): nodes with static
members (test_73's Cluster), links and routes awaited through GET
/api/v1/nodes before anything is published."""

import os
import signal
import time

import pytest

import cluster_util
from conftest import IS_MOSQUITTO, freeze, wait_for
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
    try:
        freeze(pid)
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


def test_puback_waits_for_the_remote_node_when_stored(cluster):
    """With persistence on the publisher's node and a durable subscriber
    there, the message's local delivery waits for the store commit; its
    copy for node b must still be acknowledged by b before the publisher's
    PUBACK (QoS 1) or PUBREC (QoS 2): until session 36 the copy left after
    the commit and the acknowledgement did not wait for b, so a node killed
    just after acknowledging could lose it (test_104)."""
    cl = cluster(2, start=False)
    # a with its store (the fixture's default: RocksDB in the test's
    # directory), b without
    a = cluster_util_section_broker(cl, "a")
    cl.start("b")
    cl.wait_links()
    local = client(a, "durable-a", clean=False)  # stored messages: held for the commit
    subscribe(local, "held/s", 1)
    sub = client(cl.nodes["b"], "sub-b")
    subscribe(sub, "held/s", 2)
    cl.wait_routes("a", "b", lambda n: n >= 1)
    pub = client(a, "pub-a")
    info = pub.publish("held/s", b"warm", qos=1)
    info.wait_for_publish(5)
    assert get(sub).payload == b"warm" and get(local).payload == b"warm"

    pid = cl.nodes["b"].proc.pid
    try:
        freeze(pid)
        held = [pub.publish("held/s", b"held-%d" % q, qos=q) for q in (1, 2)]
        # b is stopped: neither acknowledgement may come (a bounded window,
        # well under the link's 6 s dead time); a's own subscriber has them
        got = [get(local, timeout=10).payload for _ in range(2)]
        assert sorted(got) == [b"held-1", b"held-2"], got
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert not any(i.is_published() for i in held), \
                "acknowledged before the remote node had the message"
            time.sleep(0.05)
    finally:
        os.kill(pid, signal.SIGCONT)
    for i in held:
        i.wait_for_publish(10)
        assert i.is_published()
    assert sorted(get(sub, timeout=10).payload for _ in range(2)) == [b"held-1", b"held-2"]
    close(pub, sub, local)


def cluster_util_section_broker(cl, name):
    """Start node `name` of test_73's Cluster with the fixture's default
    persistence (its store in the test's directory) instead of none."""
    from test_61_modules import SectionBroker
    b = SectionBroker(cl.tmp_path, len(cl.started), cl.section(name),
                      {"api": {"keys_file": str(cl.keys)}})
    cl.started.append(b)
    b.start()
    cl.nodes[name] = b
    return b


def count_until(clients, total, timeout=15):
    """Collect from several clients until they hold `total` messages between
    them (or the deadline); then whatever else comes within 0.5 s."""
    got = {id(c): [] for c in clients}
    deadline = time.monotonic() + timeout
    while sum(len(v) for v in got.values()) < total and time.monotonic() < deadline:
        for c in clients:
            while not c.q.empty():
                got[id(c)].append(c.q.get().payload)
        time.sleep(0.02)
    quiet = time.monotonic() + 0.5
    while time.monotonic() < quiet:
        for c in clients:
            while not c.q.empty():
                got[id(c)].append(c.q.get().payload)
        time.sleep(0.02)
    return [got[id(c)] for c in clients]


def test_shared_group_spans_the_cluster(cluster):
    cl = cluster(3)
    cl.wait_links()
    mb = client(cl.nodes["b"], "member-b")
    mc = client(cl.nodes["c"], "member-c")
    plain = client(cl.nodes["b"], "plain-b")
    subscribe(mb, "$share/g/s/t", 1)
    subscribe(mc, "$share/g/s/t", 1)
    subscribe(plain, "s/t", 1)
    # b announces s/t and $share/g/s/t, c announces $share/g/s/t
    cl.wait_routes("a", "b", lambda n: n >= 2)
    cl.wait_routes("a", "c", lambda n: n >= 1)
    pub = client(cl.nodes["a"], "pub-a")
    infos = [pub.publish("s/t", b"%d" % i, qos=1) for i in range(200)]
    wait_for(lambda: all(i.is_published() for i in infos), 15, what="200 PUBACKs")
    gb, gc, gp = count_until([mb, mc, plain], 400)
    want = sorted(b"%d" % i for i in range(200))
    # each message reaches exactly one member across the cluster
    assert sorted(gb + gc) == want, (len(gb), len(gc))
    assert gb and gc, (len(gb), len(gc))
    # and the plain subscriber on b (a member's node too) once each
    assert sorted(gp) == want, len(gp)

    # c's member leaves: c withdraws the group, b's member gets everything
    close(mc)
    cl.wait_routes("a", "c", lambda n: n == 0, what="c withdraws $share/g/s/t")
    infos = [pub.publish("s/t", b"after%d" % i, qos=1) for i in range(50)]
    wait_for(lambda: all(i.is_published() for i in infos), 15, what="50 PUBACKs")
    gb, gp = count_until([mb, plain], 100)
    want = sorted(b"after%d" % i for i in range(50))
    assert sorted(gb) == want, len(gb)
    assert sorted(gp) == want, len(gp)
    close(pub, mb, plain)


def test_shared_group_local_and_remote_members(cluster):
    """A group with a member on the publisher's node and one elsewhere: one
    copy per message; a group only on the publisher's node is not announced
    as a plain route."""
    cl = cluster(2)
    cl.wait_links()
    ma = client(cl.nodes["a"], "member-a")
    mb = client(cl.nodes["b"], "member-b")
    subscribe(ma, "$share/h/u/#", 1)
    subscribe(mb, "$share/h/u/#", 1)
    cl.wait_routes("a", "b", lambda n: n >= 1)
    # a's group is announced as the group, not as a plain u/# route: b has
    # exactly one route of a
    cl.wait_routes("b", "a", lambda n: n == 1)
    pub = client(cl.nodes["b"], "pub-b")
    infos = [pub.publish("u/x", b"%d" % i, qos=1) for i in range(100)]
    wait_for(lambda: all(i.is_published() for i in infos), 15, what="100 PUBACKs")
    ga, gb = count_until([ma, mb], 100)
    assert sorted(ga + gb) == sorted(b"%d" % i for i in range(100)), (len(ga), len(gb))
    assert ga and gb
    close(pub, ma, mb)


@pytest.fixture
def ecluster(tmp_path):
    """cluster_util's etcd-backed cluster (nodes that really leave)."""
    c = cluster_util.Cluster(tmp_path)
    try:
        yield c
    finally:
        errors = c.stop()
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


def link_view(node, of):
    for n in cluster_util.nodes_json(node)["nodes"]:
        if n["node"] == of:
            return n.get("link_state", {})
    return {}


def three_linked(ecluster):
    """Three etcd members (2 s leases) with every link up."""
    ecluster.start_etcd()
    nodes = ecluster.start_nodes(3, lease_ttl="2s")
    names = [n.name for n in nodes]
    cluster_util.wait_members(nodes, names, timeout=15)
    for x in nodes:
        for y in names:
            if y != x.name:
                wait_for(lambda: link_view(x, y).get("state") == "up", 15,
                         what="link %s-%s up" % (x.name, y))
    return nodes


@cluster_util.needs_etcd
def test_member_nodes_leaving(ecluster):
    """A held PUBACK is released when the node that should acknowledge dies
    (its lease expires: it left); a shared group's remaining member node
    gets everything once another member node left cleanly."""
    a, b, c = three_linked(ecluster)
    mb = client(b, "member-b")
    mc = client(c, "member-c")
    subscribe(mb, "$share/g/l/t", 1)
    subscribe(mc, "$share/g/l/t", 1)
    plain_c = client(c, "plain-c")
    subscribe(plain_c, "only/c", 1)
    wait_for(lambda: link_view(a, b.name).get("routes") == 1, 10, what="b's group on a")
    wait_for(lambda: link_view(a, c.name).get("routes") == 2, 10, what="c's routes on a")
    pub = client(a, "pub-a")

    # c leaves cleanly: b's member gets every message of the group
    close(mc, plain_c)
    c.stop()
    cluster_util.wait_members([a, b], [a.name, b.name], timeout=15)
    infos = [pub.publish("l/t", b"%d" % i, qos=1) for i in range(50)]
    wait_for(lambda: all(i.is_published() for i in infos), 15, what="50 PUBACKs")
    (gb,) = count_until([mb], 50)
    assert sorted(gb) == sorted(b"%d" % i for i in range(50)), len(gb)

    # b stops answering with a message for it: no PUBACK; b is killed and
    # its lease expires (it left): the PUBACK comes
    pid = b.proc.pid
    try:
        freeze(pid)
        info = pub.publish("l/t", b"last", qos=1)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert not info.is_published(), "PUBACK before b had the message or left"
            time.sleep(0.05)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGCONT)
    b.proc.wait(5)
    b.stopped = True
    cluster_util.wait_members([a], [a.name], timeout=15)
    wait_for(info.is_published, 10, what="the PUBACK once b left")
    close(pub)
    mb.loop_stop()


@cluster_util.needs_etcd
def test_shared_copies_of_a_dead_node_picked_again(ecluster):
    """A shared group with member sessions on b and c, publishes on a: the
    QoS 1 copies a forwarded to c (the group picked c) and c never
    acknowledged are picked again among the group's other members once c
    died (its lease expired): b's member gets every message, none lost;
    the publisher gets every PUBACK (docs/cluster.md "QoS across nodes")."""
    a, b, c = three_linked(ecluster)
    mb = client(b, "rs-member-b")
    mc = client(c, "rs-member-c")
    subscribe(mb, "$share/g/rs/t", 1)
    subscribe(mc, "$share/g/rs/t", 1)
    wait_for(lambda: link_view(a, b.name).get("routes") == 1, 10, what="b's group on a")
    wait_for(lambda: link_view(a, c.name).get("routes") == 1, 10, what="c's group on a")
    pub = client(a, "rs-pub")
    pid = c.proc.pid
    try:
        freeze(pid)  # c takes nothing more: what the group picks it for waits
        infos = [pub.publish("rs/t", b"%d" % i, qos=1) for i in range(40)]
        # some were picked for c: their PUBACKs wait (paho sends the rest
        # as PUBACKs come)
        wait_for(lambda: sum(i.is_published() for i in infos) >= 1, 10, what="PUBACKs via b")
        assert not all(i.is_published() for i in infos), "the group never picked c"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGCONT)
    c.proc.wait(5)
    c.stopped = True
    cluster_util.wait_members([a, b], [a.name, b.name], timeout=15)
    wait_for(lambda: all(i.is_published() for i in infos), 20, what="40 PUBACKs once c left")
    (gb,) = count_until([mb], 40)
    assert sorted(set(gb)) == sorted(b"%d" % i for i in range(40)), len(gb)
    assert a.wait_log(r"for shared groups that node %s had not acknowledged" % c.name, 10)
    close(pub, mb)
    mc.loop_stop()


def test_message_expiry_crosses_nodes(cluster):
    """MQTT 5 Message Expiry Interval on a forwarded message and on a
    retained message a node learns from another (cl_msg_of): the receiver
    gets what is left of it, and a message that ran out is not sent."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    cl = cluster(2)
    cl.wait_links()
    sub = client(cl.nodes["b"], "exp-sub", v5=True)
    subscribe(sub, "exp/#", 1)
    cl.wait_routes("a", "b", lambda n: n >= 1)
    pub = client(cl.nodes["a"], "exp-pub", v5=True)
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = 120
    for retain in (False, True):
        info = pub.publish("exp/t%d" % retain, b"x", qos=1, retain=retain, properties=props)
        info.wait_for_publish(5)
        m = get(sub, timeout=10)
        left = getattr(m.properties, "MessageExpiryInterval", None)
        assert left is not None and 0 < left <= 120, (m.topic, left)
    # the retained one, read on b by a new subscriber, still carries it
    late = client(cl.nodes["b"], "exp-late", v5=True)
    subscribe(late, "exp/t1", 1)
    m = get(late, timeout=10)
    assert m.retain and 0 < m.properties.MessageExpiryInterval <= 120
    # no expiry: none on the other side either
    info = pub.publish("exp/none", b"y", qos=1)
    info.wait_for_publish(5)
    m = get(sub, timeout=10)
    assert m.topic == "exp/none"
    assert getattr(m.properties, "MessageExpiryInterval", None) is None
    close(pub, sub, late)
