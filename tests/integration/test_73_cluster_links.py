"""Node links, route sharing and forwarding (src/cluster/cl_link.c,
cl_fwd.c, cl_route.c; docs/cluster.md): three nodes with static members
(no etcd) that list each other.  Each test waits, through GET
/api/v1/nodes, for the links to be up and for the routes it needs to be
known before it publishes: the links and the route announcements are
asynchronous."""

import os
import queue
import re
import signal
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
import pytest

import mqttraw
from conftest import IS_MOSQUITTO, free_port, freeze, stop_all, wait_for
from test_50_api import Client, make_key
from test_61_modules import SectionBroker

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only")

NAMES = ("a", "b", "c")


class Cluster:
    def __init__(self, tmp_path, n=3, secrets=None):
        self.tmp_path = tmp_path
        self.keys = tmp_path / "api.keys"
        self.key = make_key(self.keys)
        self.names = NAMES[:n]
        self.link_ports = {name: free_port() for name in self.names}
        self.secrets = secrets or {name: "s3cret" for name in self.names}
        self.nodes = {}
        self.started = []

    def section(self, name):
        members = ", ".join("%s@127.0.0.1:%d" % (m, self.link_ports[m]) for m in self.names)
        return ("cluster:\n  node: %s\n  etcd: \"\"\n  listen: 127.0.0.1:%d\n"
                "  secret: %s\n  static_members: [%s]\n"
                % (name, self.link_ports[name], self.secrets[name], members))

    def start(self, name):
        b = SectionBroker(self.tmp_path, len(self.started), self.section(name),
                          {"api": {"keys_file": str(self.keys)}, "persistence": {"enabled": False}})
        self.started.append(b)
        b.start()
        self.nodes[name] = b
        return b

    def api(self, name):
        return Client(self.nodes[name], self.key)

    def view(self, name):
        return {n["node"]: n for n in self.api(name).get("/api/v1/nodes")["nodes"]}

    def wait_links(self, names=None, timeout=15):
        names = names or self.names

        def up():
            for a in names:
                v = self.view(a)
                for b in names:
                    if b != a and v.get(b, {}).get("link_state", {}).get("state") != "up":
                        return False
            return True
        wait_for(up, timeout, what="links up between %r" % (names,))

    def wait_routes(self, on, of, pred, timeout=10, what="routes"):
        """Wait until node `on` sees node `of` with pred(routes count)."""
        def ok():
            return pred(self.view(on)[of]["link_state"]["routes"])
        wait_for(ok, timeout, what="%s: %s's view of %s" % (what, on, of))


@pytest.fixture
def cluster(tmp_path):
    made = []

    def make(n=3, secrets=None, start=True):
        c = Cluster(tmp_path, n, secrets)
        made.append(c)
        if start:
            for name in c.names:
                c.start(name)
        return c
    yield make
    for c in made:
        stop_all(c.started)


def client(b, cid, v5=False, clean=True):
    kw = {"client_id": cid, "protocol": mqtt.MQTTv5 if v5 else mqtt.MQTTv311}
    if not v5:
        kw["clean_session"] = clean
    if hasattr(mqtt, "CallbackAPIVersion"):
        kw["callback_api_version"] = mqtt.CallbackAPIVersion.VERSION1
    c = mqtt.Client(**kw)
    c.q = queue.Queue()
    c.on_message = lambda cl, ud, msg: c.q.put(msg)
    c.connect(b.host, b.port, keepalive=30)
    c.loop_start()
    return c


def subscribe(c, topic, qos=1):
    done = queue.Queue()
    c.on_subscribe = lambda *a: done.put(1)
    c.subscribe(topic, qos)
    done.get(timeout=5)


def publish(c, topic, payload, qos=1, retain=False, props=None):
    info = c.publish(topic, payload, qos=qos, retain=retain, properties=props)
    info.wait_for_publish(5)


def get(c, timeout=5):
    return c.q.get(timeout=timeout)


def next_is(c, topic, payload):
    """The next message c gets is (topic, payload): what was published
    before it by the same publisher and did not come is not coming (one
    publisher's messages travel in order, on one link and one worker)."""
    m = get(c)
    assert (m.topic, m.payload) == (topic, payload), (m.topic, m.payload)


def close(*cs):
    for c in cs:
        c.loop_stop()
        c.disconnect()


def test_forward_every_qos_and_protocol(cluster):
    cl = cluster()
    cl.wait_links()
    sub = client(cl.nodes["b"], "sub-b")
    sub5 = client(cl.nodes["c"], "sub-c", v5=True)
    subscribe(sub, "t/+/x", 2)
    subscribe(sub, "t/marker", 2)
    subscribe(sub5, "t/#", 2)
    # a and the other node both know the two routes
    cl.wait_routes("a", "b", lambda n: n >= 1)
    cl.wait_routes("a", "c", lambda n: n >= 1)
    pub = client(cl.nodes["a"], "pub-a")
    pub5 = client(cl.nodes["a"], "pub5-a", v5=True)
    for q in (0, 1, 2):
        publish(pub, "t/%d/x" % q, b"m%d" % q, qos=q)
        for s in (sub, sub5):
            m = get(s)
            assert (m.topic, m.payload, m.qos) == ("t/%d/x" % q, b"m%d" % q, q)
    publish(pub5, "t/deep/er/y", b"v5", qos=1)
    m = get(sub5)
    assert (m.topic, m.payload, m.qos) == ("t/deep/er/y", b"v5", 1)
    publish(pub5, "t/marker", b"end", qos=1)
    next_is(sub, "t/marker", b"end")  # t/+/x does not match t/deep/er/y
    next_is(sub5, "t/marker", b"end")
    # from b to c and a node-local subscriber on the same node too
    local = client(cl.nodes["b"], "local-b")
    subscribe(local, "t/+/x", 1)
    publish(client(cl.nodes["b"], "pub-b"), "t/b/x", b"from-b", qos=1)
    assert get(local).payload == b"from-b"
    assert get(sub).payload == b"from-b"
    assert get(sub5).payload == b"from-b"
    view = cl.view("a")
    assert view["b"]["link_state"]["forwarded"][2] >= 1, view
    metrics = cl.api("a").call("GET", "/metrics")[2].decode()
    assert re.search(r'antenna_cluster_link_up\{peer="b"\} 1', metrics), metrics[-3000:]
    assert re.search(r'antenna_cluster_forwarded_total\{peer="c",qos="1"\} [1-9]', metrics)
    assert re.search(r'antenna_cluster_routes\{peer="c"\} [1-9]', metrics)


def test_overlapping_subscriptions_one_copy_each(cluster):
    cl = cluster()
    cl.wait_links()
    s1 = client(cl.nodes["b"], "s1")
    s2 = client(cl.nodes["b"], "s2")
    subscribe(s1, "o/#", 1)
    subscribe(s1, "o/+", 1)  # overlapping on one session: one copy
    subscribe(s2, "o/x", 1)
    subscribe(s2, "o/y/end", 1)
    cl.wait_routes("a", "b", lambda n: n >= 4)
    pub = client(cl.nodes["a"], "p")
    for i in range(20):
        publish(pub, "o/x", b"%d" % i, qos=1)
    got1 = [get(s1).payload for _ in range(20)]
    got2 = [get(s2).payload for _ in range(20)]
    assert got1 == [b"%d" % i for i in range(20)], got1  # in order, once each
    assert got2 == got1
    publish(pub, "o/y/end", b"end", qos=1)  # o/# and o/y/end: one copy each
    next_is(s1, "o/y/end", b"end")
    next_is(s2, "o/y/end", b"end")
    # to b once per message, whatever the overlap on b
    assert cl.view("a")["b"]["link_state"]["forwarded"][1] == 21


def test_properties_survive_the_hop(cluster):
    cl = cluster()
    cl.wait_links()
    sub = client(cl.nodes["c"], "sub", v5=True)
    subscribe(sub, "p/t", 1)
    cl.wait_routes("a", "c", lambda n: n >= 1)
    pub = client(cl.nodes["a"], "pub", v5=True)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("k1", "v1"), ("k2", "v2")]
    props.ContentType = "application/json"
    props.ResponseTopic = "reply/here"
    props.CorrelationData = b"\x01\x02"
    publish(pub, "p/t", b"{}", qos=1, props=props)
    m = get(sub)
    assert m.payload == b"{}"
    assert m.properties.UserProperty == [("k1", "v1"), ("k2", "v2")]
    assert m.properties.ContentType == "application/json"
    assert m.properties.ResponseTopic == "reply/here"
    assert m.properties.CorrelationData == b"\x01\x02"


def test_retained_everywhere_and_clear(cluster):
    cl = cluster()
    cl.wait_links()
    pub = client(cl.nodes["a"], "pub")
    publish(pub, "r/one", b"kept", qos=1, retain=True)
    # nobody subscribed anywhere: still on every node
    for name in ("b", "c"):
        def has():
            s = client(cl.nodes[name], "probe-" + name)
            subscribe(s, "r/#", 1)
            try:
                m = get(s, 0.5)
                return m.payload == b"kept" and m.retain
            except queue.Empty:
                return False
            finally:
                close(s)
        wait_for(has, 10, what="retained on %s" % name)
    publish(pub, "r/one", b"", qos=1, retain=True)  # clear

    def cleared():
        s = client(cl.nodes["c"], "probe2")
        subscribe(s, "r/#", 1)
        try:
            get(s, 0.3)
            return False
        except queue.Empty:
            return True
        finally:
            close(s)
    wait_for(cleared, 10, what="the retained clear on c")


def test_unsubscribe_stops_forwarding(cluster):
    cl = cluster()
    cl.wait_links()
    sub = client(cl.nodes["b"], "sub")
    subscribe(sub, "u/t", 1)
    subscribe(sub, "u/marker", 1)
    cl.wait_routes("a", "b", lambda n: n == 2)
    cl.wait_routes("c", "b", lambda n: n == 2)
    pub = client(cl.nodes["a"], "pub")
    publish(pub, "u/t", b"1")
    assert get(sub).payload == b"1"
    done = queue.Queue()
    sub.on_unsubscribe = lambda *a: done.put(1)
    sub.unsubscribe("u/t")
    done.get(timeout=5)
    cl.wait_routes("a", "b", lambda n: n == 1)
    cl.wait_routes("c", "b", lambda n: n == 1)
    before = cl.view("a")["b"]["link_state"]["forwarded"]
    publish(pub, "u/t", b"2")
    publish(pub, "u/marker", b"end")
    next_is(sub, "u/marker", b"end")
    after = cl.view("a")["b"]["link_state"]["forwarded"]
    assert after[1] == before[1] + 1, (before, after)  # the marker only


def test_wrong_secret_refuses_the_link(cluster):
    cl = cluster(n=2, secrets={"a": "right", "b": "wrong"})
    # a sorts first: it dials, b accepts; each refuses the other's AUTH
    cl.nodes["a"].wait_log(r"cluster: link to b .* refused: wrong secret", timeout=10)
    cl.nodes["b"].wait_log(r"cluster: link from a .* refused: wrong secret", timeout=10)
    s = client(cl.nodes["b"], "sub")
    subscribe(s, "w/t", 1)
    # a dials again (backoff) after b has the route: refused again
    def refusals():
        return (cl.view("a")["b"]["link_state"]["refused"] +
                cl.view("b")["a"]["link_state"]["refused"])
    before = refusals()
    wait_for(lambda: refusals() > before, 15, what="another refused attempt")
    v = cl.view("a")["b"]["link_state"]
    assert v["state"] != "up" and v["routes"] == 0 and v["ups"] == 0, v


def test_node_restart_links_and_routes_come_back(cluster):
    cl = cluster()
    cl.wait_links()
    sub = client(cl.nodes["c"], "sub")
    subscribe(sub, "k/t", 1)
    cl.wait_routes("a", "c", lambda n: n == 1)
    # b is killed: a and c go on
    cl.nodes["b"].kill()
    wait_for(lambda: cl.view("a")["b"]["link_state"]["state"] != "up", 15, what="a sees b down")
    pub = client(cl.nodes["a"], "pub")
    publish(pub, "k/t", b"while-b-down")
    assert get(sub).payload == b"while-b-down"
    publish(pub, "k/r", b"set-while-b-down", retain=True)  # b gets it by the sync
    # b comes back (same name, same link port): links and routes again
    cl.start("b")
    cl.wait_links()
    probe = client(cl.nodes["b"], "probe")

    def synced():
        subscribe(probe, "k/r", 1)  # again: the retained copy comes with each SUBACK
        try:
            return get(probe, 0.5).payload == b"set-while-b-down"
        except queue.Empty:
            return False
    wait_for(synced, 10, what="the retained set synced to the new b")
    close(probe)
    subb = client(cl.nodes["b"], "subb")
    subscribe(subb, "k/t", 1)
    cl.wait_routes("a", "b", lambda n: n == 1)
    cl.wait_routes("b", "c", lambda n: n == 1)
    pubb = client(cl.nodes["b"], "pubb")
    publish(pubb, "k/t", b"from-new-b")
    assert get(sub).payload == b"from-new-b"
    assert get(subb).payload == b"from-new-b"
    publish(pub, "k/t", b"to-new-b")
    assert get(subb).payload == b"to-new-b"
    assert get(sub).payload == b"to-new-b"
    # c restarted: its subscriber's route is gone (a clean session), a
    # resyncs to the new c's empty set
    close(sub)
    cl.nodes["c"].stop()
    cl.start("c")
    cl.wait_links()
    cl.wait_routes("a", "c", lambda n: n == 0)


def test_qos1_kept_across_a_link_break(cluster):
    """b stops answering (SIGSTOP): a closes the silent link, keeps what it
    forwards at QoS 1 and drops QoS 0 (counted); b comes back: the link is
    redialled and the QoS 1 messages arrive, once each, in order."""
    import signal
    cl = cluster(n=2)
    cl.wait_links()
    sub = client(cl.nodes["b"], "sub")
    subscribe(sub, "q/#", 1)
    cl.wait_routes("a", "b", lambda n: n == 1)
    pub = client(cl.nodes["a"], "pub")
    publish(pub, "q/before", b"0")
    next_is(sub, "q/before", b"0")
    b = cl.nodes["b"]
    try:
        freeze(b.proc.pid)
        wait_for(lambda: cl.view("a")["b"]["link_state"]["state"] != "up", 20,
                 what="a closes the silent link")
        # not acknowledged while b does not have them (test_78): sent
        # without waiting for their PUBACKs
        infos = [pub.publish("q/t", b"%d" % i, qos=1) for i in range(10)]
        publish(pub, "q/t0", b"lost", qos=0)
        wait_for(lambda: cl.view("a")["b"]["link_state"]["queued"] == 10, 5,
                 what="10 QoS 1 messages kept for b")
        assert cl.view("a")["b"]["link_state"]["dropped"] >= 1
    finally:
        b.proc.send_signal(signal.SIGCONT)
    cl.wait_links(timeout=20)
    got = [get(sub, 10).payload for _ in range(10)]
    assert got == [b"%d" % i for i in range(10)], got
    wait_for(lambda: cl.view("a")["b"]["link_state"]["queued"] == 0, 10,
             what="b acknowledged them")
    wait_for(lambda: all(i.is_published() for i in infos), 10,
             what="the publisher's PUBACKs, once b had them")
    publish(pub, "q/after", b"end")
    next_is(sub, "q/after", b"end")  # nothing twice, the QoS 0 one lost
    metrics = cl.api("a").call("GET", "/metrics")[2].decode()
    assert re.search(r'antenna_cluster_dropped_total\{peer="b"\} [1-9]', metrics)


def retained_before_marker(node, topic, marker):
    """Subscribe to topic and marker at once on node: the retained messages
    come in the filters' order, so what arrives before the marker's copy is
    topic's (none when it is cleared there)."""
    c = client(node, "probe-%s-%d" % (marker.replace("/", "-"), time.monotonic_ns()))
    done = queue.Queue()
    c.on_subscribe = lambda *a: done.put(1)
    c.subscribe([(topic, 1), (marker, 1)])
    done.get(timeout=5)
    got = []
    deadline = time.monotonic() + 10
    while True:
        m = get(c, max(0.01, deadline - time.monotonic()))
        if m.topic == marker:
            break
        got.append((m.topic, m.payload))
    close(c)
    return got


def test_retained_clear_while_the_link_is_down_stays_cleared(cluster):
    """A retained topic cleared on a (QoS 0, so nothing waits for b) while
    the link to b is down: when the link is back, b's surviving copy does
    not come back to a, and b's copy is cleared too (the tombstone)."""
    import signal
    cl = cluster(n=2)
    cl.wait_links()
    pub = client(cl.nodes["a"], "pub")
    publish(pub, "t/r", b"old", qos=1, retain=True)
    publish(pub, "t/m1", b"m1", qos=1, retain=True)
    wait_for(lambda: retained_before_marker(cl.nodes["b"], "t/r", "t/m1") == [("t/r", b"old")], 10,
             what="b has the retained copy")
    b = cl.nodes["b"]
    try:
        freeze(b.proc.pid)
        wait_for(lambda: cl.view("a")["b"]["link_state"]["state"] != "up", 20,
                 what="a closes the silent link")
        publish(pub, "t/r", b"", qos=0, retain=True)  # the clear: dropped for b
    finally:
        b.proc.send_signal(signal.SIGCONT)
    cl.wait_links(timeout=20)
    # a marker set on b after the link is up follows b's retained sync to a
    pubb = client(b, "pubb")
    publish(pubb, "t/m2", b"m2", qos=1, retain=True)
    wait_for(lambda: retained_before_marker(cl.nodes["a"], "t/r", "t/m2") == [], 10,
             what="t/r stays cleared on a (b's older copy refused)")
    wait_for(lambda: retained_before_marker(b, "t/r", "t/m2") == [], 10,
             what="b's copy cleared by a's tombstone")
    close(pub, pubb)


def test_suback_means_every_node_has_the_route(cluster):
    """A SUBACK leaves once every node whose link is up has the new route
    (the route barrier, docs/cluster.md "Routes"): a message published on
    another node right after it is forwarded.  Without the barrier about
    one round in three lost its message on this machine."""
    import os
    cl = cluster()
    cl.wait_links()
    pub = mqttraw.RawClient("127.0.0.1", cl.nodes["a"].port)
    pub.connect("barrier-pub")
    for i in range(40):
        sub = mqttraw.RawClient("127.0.0.1", cl.nodes[("b", "c")[i % 2]].port)
        sub.connect("barrier-sub-%d" % i)
        assert sub.subscribe(1, [("barrier/%d" % i, 1)]).codes == [1]
        pub.publish("barrier/%d" % i, b"m%d" % i, qos=1, pid=i + 1)
        p = sub.recv_publish(timeout=10)
        assert (p.topic, p.payload) == ("barrier/%d" % i, b"m%d" % i)
        sub.close()
    pub.close()
    # a node that does not answer holds a SUBACK for a bounded time only
    freeze(cl.nodes["c"].proc.pid)
    try:
        sub = mqttraw.RawClient("127.0.0.1", cl.nodes["b"].port)
        sub.connect("barrier-frozen")
        t0 = time.monotonic()
        assert sub.subscribe(1, [("barrier/frozen", 1)], timeout=15).codes == [1]
        assert time.monotonic() - t0 < 12
        sub.close()
    finally:
        os.kill(cl.nodes["c"].proc.pid, signal.SIGCONT)
