"""Internal consumers and message provenance (issue 21 items 4 and 6).

The broker's example consumer, `examples.message_log` (src/modules/message_log, a module),
subscribes to topic filters without an MQTT session and logs one
"message {JSON}" line per message it receives, with the message's
provenance.  Through it: a consumer gets each matching message exactly once
whatever the overlap of its filters, nothing else; provenance names the
publisher's client id, username, protocol and listener for real clients
(paho 3.1.1 and 5.0, mosquitto_pub), a will, $SYS and the API; a QoS 1
message held for the store's commit (a durable subscriber) still reaches
the consumer; a bad filter stops the broker with file:line:key."""

import json
import shutil
import subprocess
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt
import pytest

from authutil import pbkdf2_line
from conftest import require_antenna_bin, wait_for
from helpers import Paho

pytestmark = pytest.mark.antenna_only

# overlapping on purpose: sensors/a/b matches three of them
FILTERS = ["sensors/#", "sensors/+/b", "sensors/a/b", "will/#"]
USERS = [("alice", "a"), ("bob", "b")]


def lines(b):
    out = []
    for line in b.log_text().splitlines():
        i = line.find(" message {")
        if i < 0:
            continue
        try:
            out.append(json.loads(line[i + len(" message "):]))
        except ValueError:
            continue  # the last line, read while the broker writes it
    return out


def wait_line(b, timeout=5.0, **fields):
    def find():
        for e in lines(b):
            if all(e.get(k) == v for k, v in fields.items()):
                return e
        return None
    try:
        return wait_for(find, timeout, what="message line %r" % (fields,))
    except AssertionError:
        raise AssertionError("no message line %r; lines:\n%s" % (
            fields, "\n".join(json.dumps(e) for e in lines(b))))


def count(b, **fields):
    return sum(1 for e in lines(b) if all(e.get(k) == v for k, v in fields.items()))


@pytest.fixture
def users(tmp_path):
    pw = tmp_path / "passwd"
    pw.write_text("".join(pbkdf2_line(u, p) + "\n" for u, p in USERS))
    return str(pw)


def paho(b, cid, protocol, port=None, **kw):
    c = Paho(b, client_id=cid, protocol=protocol, port=port)
    if kw.get("username"):
        c.client.username_pw_set(kw["username"], kw["password"])
    if kw.get("will"):
        c.client.will_set(*kw["will"])
    return c.connect()


def test_provenance_of_real_clients(broker, users):
    b = broker(workers=2, extra_listeners=1, auth={"password_file": users},
               examples={"message_log": FILTERS})
    b.wait_log(r"examples\.message_log: consumer subscribed to 4 filter")
    t0 = int(time.time() * 1000)

    p3 = paho(b, "prov-3", mqtt.MQTTv311, username="alice", password="a")
    p3.publish("sensors/a/b", b"x" * 7, qos=1)
    e = wait_line(b, client_id="prov-3")
    assert e["consumer"] == "message_log" and e["topic"] == "sensors/a/b"
    assert e["username"] == "alice" and e["proto"] == "mqtt3.1.1" and e["listener"] == "mqtt"
    assert e["qos"] == 1 and e["retain"] is False and e["payload_len"] == 7
    assert e["node"] == 0 and e["hops"] == 0 and e["worker"] in (0, 1)
    assert t0 - 50 <= e["published_at"] <= int(time.time() * 1000) + 50

    # MQTT 5, on the second listener, retained at QoS 0
    connected = threading.Event()
    p5 = mqtt.Client(client_id="prov-5", protocol=mqtt.MQTTv5)
    p5.username_pw_set("bob", "b")
    p5.on_connect = lambda c, u, f, rc, props=None: connected.set()
    p5.connect(b.host, b.ports[1], 60)
    p5.loop_start()
    assert connected.wait(5), "no CONNACK"
    p5.publish("sensors/t", b"hi", qos=0, retain=True)
    e = wait_line(b, client_id="prov-5")
    assert e["username"] == "bob" and e["proto"] == "mqtt5" and e["listener"] == "mqtt1"
    assert e["qos"] == 0 and e["retain"] is True and e["topic"] == "sensors/t"

    # mosquitto_pub, anonymous: no username
    if shutil.which("mosquitto_pub"):
        subprocess.run(["mosquitto_pub", "-h", b.host, "-p", str(b.port), "-i", "prov-mp",
                        "-V", "mqttv31", "-q", "2", "-t", "sensors/mp", "-m", "m"],
                       check=True, timeout=10, stdin=subprocess.DEVNULL)
        e = wait_line(b, client_id="prov-mp")
        assert e["proto"] == "mqtt3.1" and e["qos"] == 2 and "username" not in e

    # a will carries its client's origin
    w = paho(b, "prov-will", mqtt.MQTTv311, username="alice", password="a",
             will=("will/prov", b"gone", 1, False))
    w.client.loop_stop()
    w.client.socket().close()  # no DISCONNECT: the will is published
    e = wait_line(b, topic="will/prov")
    assert e["client_id"] == "prov-will" and e["username"] == "alice"
    assert e["proto"] == "mqtt3.1.1" and e["qos"] == 1
    for c in (p3.client, p5):
        c.disconnect()
        c.loop_stop()


def test_exactly_once_and_only_matching(broker):
    b = broker(workers=2, examples={"message_log": FILTERS})
    pubs = [b.raw_connected("once-%d" % i) for i in range(3)]
    topics = ["sensors/a/b", "sensors/x/b", "sensors/a", "other/a/b", "sensorsx/a/b"]
    for i, c in enumerate(pubs):
        for t in topics:
            c.publish(t, b"%d" % i, qos=1, pid=1)  # waits for the PUBACK
    # 3 publishers x 3 matching topics; the two others never reach it
    wait_for(lambda: len(lines(b)) >= 9, 5.0, what="9 message lines")
    fence = b.raw_connected("once-fence")
    fence.publish("sensors/fence", b"", qos=1, pid=1)
    wait_line(b, topic="sensors/fence")
    for i in range(3):
        for t in topics[:3]:
            assert count(b, client_id="once-%d" % i, topic=t) == 1, (i, t)
        for t in topics[3:]:
            assert count(b, topic=t) == 0
    assert len(lines(b)) == 10
    b.stop()
    assert "examples.message_log: 10 message(s) consumed" in b.log_text()


def test_held_for_commit(broker):
    """With a durable QoS 1 subscriber the route waits for the store's
    commit; the consumer and the session both get the message once."""
    b = broker(workers=2, examples={"message_log": ["held/#"]})
    sub = b.raw()
    assert sub.connect("held-sub", clean=False).rc == 0
    assert sub.subscribe(1, [("held/#", 1), ("held/+", 1)]).codes == [1, 1]
    pub = b.raw_connected("held-pub")
    for i in range(5):
        pub.publish("held/%d" % i, b"v", qos=1, pid=i + 1)
    got = []
    for _ in range(5):
        p = sub.recv_publish()
        got.append(p.topic)
        sub.ack(p)
    assert sorted(got) == ["held/%d" % i for i in range(5)]
    wait_for(lambda: len(lines(b)) >= 5, 5.0, what="5 message lines")
    assert [e["topic"] for e in lines(b)] == ["held/%d" % i for i in range(5)]


def test_sys_and_api_origins(broker, tmp_path):
    keys = tmp_path / "api.keys"
    p = subprocess.run([require_antenna_bin(), "apikey", "create", str(keys), "ops"],
                       capture_output=True, timeout=10)
    assert p.returncode == 0, p.stderr
    key = p.stdout.decode().strip()
    b = broker(workers=2, mqtt={"sys_interval": 1}, api={"keys_file": str(keys)},
               examples={"message_log": ["$SYS/broker/uptime", "api/#"]})
    e = wait_line(b, topic="$SYS/broker/uptime")
    assert e["proto"] == "sys" and "client_id" not in e and e["retain"] is True
    req = urllib.request.Request(
        b.api_url + "/api/v1/publish", method="POST",
        data=json.dumps({"topic": "api/x", "payload": "on", "qos": 1}).encode(),
        headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    e = wait_line(b, topic="api/x")
    assert e["proto"] == "api" and e["qos"] == 1 and "client_id" not in e


@pytest.mark.parametrize("filters,line", [
    ('["a/#/b"]', 3), ('["ok/#", "x+"]', 3), ('["$share/g/a"]', 3)])
def test_bad_filter_refused(tmp_path, filters, line):
    antenna = require_antenna_bin()
    path = tmp_path / "bad.yaml"
    path.write_text("workers: 1\nexamples:\n  message_log: %s\n" % filters)
    p = subprocess.run([antenna, "--config", str(path)], capture_output=True, timeout=10,
                       stdin=subprocess.DEVNULL)
    err = p.stderr.decode(errors="replace")
    assert p.returncode != 0
    assert "%s:%d: examples.message_log: " % (path, line) in err, err
