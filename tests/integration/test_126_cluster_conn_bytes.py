"""A cluster node's bytes per device (issue 20; src/broker/conn.c
conn_ext_trim, proto.c's connect gate; docs/benchmarks.md "Where the
cluster's bytes per device were").

Every CONNECT on a node with the client-id registry is parked by the
connect gate, and every SUBACK waits for the route barrier; both kept
their state in the connection's conn_ext_t, which then stayed with the
connection for its life: 176 bytes of malloc a device that a standalone
broker's subscriber does not have.  Now the gate's answer and the
barrier's release give it back when it holds nothing else
(`antenna_connection_extensions`, a gauge of the connections holding one):

- plain subscribers on a node of two hold none once subscribed, and still
  get what the other node publishes to their own topic and the broadcast
  topic (the barrier held each SUBACK until the peer had the routes);
- a connection whose conn_ext_t holds something keeps it: a will (the
  will is published when the client is cut off) and an MQTT 5 client's
  Topic Alias Maximum (the second message on a topic comes by alias);
- behind a PROXY listener (HAProxy in front of the nodes) the header's
  state goes once it is read, on a standalone broker too.
Main's binary has no such gauge and keeps one conn_ext_t per connection.
Every wait polls with a deadline."""

import json

import pytest

import mqttraw
from cluster_util import cluster, metric, needs_etcd  # noqa: F401
from conftest import IS_MOSQUITTO, wait_for
from test_77_cluster_owner import connect_retry, start

pytestmark = [pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only"), needs_etcd]

N = 30


def exts(node):
    return metric(node, "antenna_connection_extensions")


def wait_route_count(node, want, timeout=20):
    """node's peers announced at least `want` routes in all."""
    def check():
        st, _, raw = node.client.call("GET", "/api/v1/nodes")
        assert st == 200
        j = json.loads(raw)
        return sum(n.get("link_state", {}).get("routes", 0)
                   for n in j["nodes"] if not n["self"]) >= want
    wait_for(check, timeout, what="%d routes on %s" % (want, node.name))


def test_subscribers_give_their_extension_back(cluster):
    a, b = start(cluster, 2)
    assert exts(a) == 0, "no connection yet"
    devs = []
    for i in range(N):
        cid = "dev%02d" % i
        c = connect_retry(a, cid, v5=False, clean=True)
        ack = c.subscribe(1, [("dev/%s/in" % cid, 1), ("bcast", 1)])
        assert ack.codes == [1, 1]
        devs.append((cid, c))
    # the gate's and the barrier's state was all they held: none left
    wait_for(lambda: exts(a) == 0, 10, what="no conn_ext_t on a (%s)" % exts(a))
    # the routes are b's (the barrier held each SUBACK for them): b's
    # publishes reach every device, each its own and the broadcast
    wait_route_count(b, N + 1)
    pub = connect_retry(b, "pub", v5=False, clean=True)
    for k, (cid, _) in enumerate(devs):
        pub.publish("dev/%s/in" % cid, b"own-" + cid.encode(), qos=1, pid=k + 1)
    pub.publish("bcast", b"all", qos=1, pid=N + 1)
    for cid, c in devs:
        got = set()
        for _ in range(2):
            p = c.recv_publish(10)
            got.add(p.payload)
            c.ack(p)
        assert got == {b"own-" + cid.encode(), b"all"}, (cid, got)
    for _, c in devs:
        c.disconnect()
    pub.disconnect()
    wait_for(lambda: exts(a) == 0 and exts(b) == 0, 10, what="none after the disconnects")


def test_a_will_and_topic_aliases_keep_theirs(cluster):
    a, b = start(cluster, 2)
    watcher = connect_retry(b, "watcher", v5=False, clean=True)
    watcher.subscribe(1, [("will/#", 1)])
    wait_route_count(a, 1)
    # a will: its conn_ext_t holds it through the gate and the barrier
    w = connect_retry(a, "with-will", v5=False, clean=True, will=("will/w", b"gone", 1, False))
    w.subscribe(1, [("dev/with-will/in", 1)])
    # an MQTT 5 client that takes topic aliases from the broker
    al = connect_retry(a, "aliased", v5=True, clean_start=True,
                       props=[(mqttraw.TOPIC_ALIAS_MAXIMUM, 4)])
    al.subscribe(1, [("dev/aliased/in", mqttraw.sub_opts(1))])
    plain = connect_retry(a, "plain", v5=False, clean=True)
    plain.subscribe(1, [("dev/plain/in", 1)])
    wait_for(lambda: exts(a) == 2, 10, what="the will's and the aliases' conn_ext_t (%s)"
             % exts(a))
    # the aliases still work: the second message on the topic by alias
    wait_route_count(b, 3)
    pub = connect_retry(b, "pub", v5=False, clean=True)
    pub.publish("dev/aliased/in", b"one", qos=1, pid=1)
    pub.publish("dev/aliased/in", b"two", qos=1, pid=2)
    first = al.recv_publish(10)
    al.ack(first)
    second = al.recv_publish(10)
    al.ack(second)
    assert (first.payload, second.payload) == (b"one", b"two")
    alias = first.props.get(mqttraw.TOPIC_ALIAS)
    assert first.topic == "dev/aliased/in" and alias
    assert second.topic == "" and second.props.get(mqttraw.TOPIC_ALIAS) == alias
    # the will is still there: cut off, it is published
    w.close()
    p = watcher.recv_publish(10)
    assert (p.topic, p.payload) == ("will/w", b"gone")
    watcher.ack(p)
    wait_for(lambda: exts(a) == 1, 10, what="the aliased client's only (%s)" % exts(a))
    for c in (al, plain, watcher, pub):
        c.disconnect()


def test_proxy_header_gives_it_back(broker, tmp_path):
    """A standalone broker behind a PROXY listener (HAProxy in front of the
    cluster's nodes sends one on every connection): the header's state goes
    once it is read; a client with a will behind it keeps its own."""
    from test_53_metrics import fetch, make_key, parse

    keys = tmp_path / "api.keys"
    key = make_key(keys)
    b = broker(api={"keys_file": str(keys)}, listener={"proxy_protocol": "v1"})

    def gauge():
        st, _, text = fetch(b.api_url + "/metrics", key)
        assert st == 200
        return parse(text)["antenna_connection_extensions"]["samples"][0][2]
    header = b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 %d\r\n" % b.port
    plain = []
    for i in range(5):
        c = b.raw()
        c.sock.sendall(header + mqttraw.connect("px%d" % i))
        assert c.recv_type(mqttraw.CONNACK).rc == 0
        assert c.subscribe(1, [("px/%d" % i, 1)]).codes == [1]
        plain.append(c)
    w = b.raw()
    w.sock.sendall(header + mqttraw.connect("pxw", will=("px/0", b"gone", 1, False)))
    assert w.recv_type(mqttraw.CONNACK).rc == 0
    wait_for(lambda: gauge() == 1, 10, what="only the will's conn_ext_t")
    w.close()
    p = plain[0].recv_publish(10)
    assert p.payload == b"gone"
    plain[0].ack(p)
    wait_for(lambda: gauge() == 0, 10, what="none")
    for c in plain:
        c.disconnect()
