"""A connection moves to the worker its traffic goes to (issue 15, item 2;
src/broker/migrate.h).

Two workers; one subscriber; publishers whose client ids hash to the other
worker send to it.  After a window of messages (MIGRATE_WINDOW, 256) every
such publisher is moved to the subscriber's worker: the API's per-client
`worker` field says where each session lives now, polled with a deadline.
Each publisher's messages arrive in its order across the move (QoS 0, 1, 2;
MQTT 3.1.1 and 5), none lost.  After the move: a new connection with the
same client id takes the session over, the API kicks it, a will is
published when its connection drops, and a persistent session resumes
(session present) after a reconnect and after a broker restart.  TLS and
WebSocket publishers move too."""

import json
import re
import shutil
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt
import pytest

from conftest import require_antenna_bin, wait_for

pytestmark = pytest.mark.antenna_only  # about antenna's workers

NPUB = 4       # publishers on the other worker
MSGS = 700     # per publisher: two windows and more
DEADLINE = 30  # seconds, for anything the broker completes asynchronously
# locality alone: consolidation (test_122) would put every session on worker 0
LOCALITY = {"workers_consolidate": False}


def make_key(path):
    p = subprocess.run([require_antenna_bin(), "apikey", "create", str(path), "ops"],
                       capture_output=True, timeout=10)
    assert p.returncode == 0, p.stderr
    return p.stdout.decode().strip()


class Api:
    def __init__(self, b, key):
        self.b, self.key = b, key

    def call(self, method, path):
        req = urllib.request.Request(self.b.api_url + path, method=method,
                                     headers={"Authorization": "Bearer " + self.key})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def workers(self, prefix):
        """client id -> the worker its session lives on."""
        st, raw = self.call("GET", "/api/v1/clients?limit=1000&client_id_prefix=" + prefix)
        assert st == 200, raw
        return {c["client_id"]: c["worker"] for c in json.loads(raw)["data"]}

    def worker_of(self, cid):
        """The worker of cid's session, once it is listed (worker 0 is
        falsy: not wait_for)."""
        deadline = time.monotonic() + DEADLINE
        while True:
            w = self.workers(cid).get(cid)
            if w is not None:
                return w
            assert time.monotonic() < deadline, cid + " not listed"
            time.sleep(0.05)

    def metric(self, name):
        with urllib.request.urlopen(self.b.api_url + "/metrics", timeout=10) as r:
            m = re.search(r"^%s (\d+)" % name, r.read().decode(), re.M)
        return int(m.group(1)) if m else None


@pytest.fixture
def env(broker, tmp_path):
    keys = tmp_path / "api.keys"
    key = make_key(keys)
    b = broker(workers=2, root=LOCALITY, api={"keys_file": str(keys), "open_metrics": True},
               mqtt={"max_queued": 100000, "max_inflight": 1000})
    assert b.api_url
    return b, Api(b, key)


class Sink:
    def __init__(self):
        self.lock = threading.Lock()
        self.got = {}  # topic -> [payload, ...]

    def on_message(self, _c, _u, msg):
        with self.lock:
            self.got.setdefault(msg.topic, []).append(msg.payload.decode())

    def of(self, topic):
        with self.lock:
            return list(self.got.get(topic, []))


def client(b, cid, proto=mqtt.MQTTv311, clean=True, will=None, on_message=None, tls=False,
           ws=False):
    kw = {"clean_session": clean} if proto != mqtt.MQTTv5 else {}
    if ws:
        kw["transport"] = "websockets"
    c = mqtt.Client(client_id=cid, protocol=proto, **kw)
    if ws:
        c.ws_set_options(path="/mqtt")
    if tls:  # the broker's self-signed certificate, not verified
        c.tls_set(cert_reqs=ssl.CERT_NONE)
        c.tls_insecure_set(True)
    got = {}
    connected = threading.Event()

    def on_connect(_c, _u, flags, rc, *_a):
        got["flags"] = flags
        got["rc"] = rc
        connected.set()

    c.on_connect = on_connect
    c.reconnect_delay_set(min_delay=60, max_delay=120)  # no reconnect behind the test's back
    if on_message:
        c.on_message = on_message
    if will:
        c.will_set(will, b"gone", qos=1)
    if proto == mqtt.MQTTv5:
        from paho.mqtt.properties import Properties
        from paho.mqtt.packettypes import PacketTypes
        props = Properties(PacketTypes.CONNECT)
        if not clean:
            props.SessionExpiryInterval = 3600
        c.connect(b.host, b.port, keepalive=60, clean_start=clean, properties=props)
    else:
        c.connect(b.host, b.port, keepalive=60)
    c.loop_start()
    assert connected.wait(DEADLINE), cid
    c.connack = got
    return c


def stop(c):
    try:
        c.disconnect()
    finally:
        c.loop_stop()


def subscriber(b, api, sink, proto=mqtt.MQTTv311, qos=2, tls=False, ws=False, clean=True):
    s = client(b, "m-sub", proto=proto, on_message=sink.on_message, tls=tls, ws=ws, clean=clean)
    done = threading.Event()
    s.on_subscribe = lambda *_a: done.set()
    s.subscribe("mig/#", qos)
    assert done.wait(DEADLINE)
    home = api.worker_of("m-sub")
    return s, home


def other_ids(api, home, prefix, n, tls=False, ws=False):
    """n client ids (prefix-<i>) whose hash home is not `home`: each one is
    connected once and asked for; those on `home` are skipped."""
    picked, i = [], 0
    while len(picked) < n and i < 64:
        cid = "%s%d" % (prefix, i)
        i += 1
        c = client(api.b, cid, tls=tls, ws=ws)
        w = api.worker_of(cid)
        stop(c)
        wait_for(lambda: cid not in api.workers(cid), DEADLINE, what=cid + " gone")
        if w != home:
            picked.append(cid)
    assert len(picked) == n, picked
    return picked


def publish_all(c, topic, qos, n):
    infos = [c.publish(topic, str(i), qos=qos) for i in range(n)]
    for inf in infos:
        inf.wait_for_publish(DEADLINE)


def wait_moved(api, ids, home, prefix):
    wait_for(lambda: all(api.workers(prefix).get(i) == home for i in ids), DEADLINE,
             what="publishers moved to worker %d" % home)


@pytest.mark.parametrize("qos,proto", [(0, mqtt.MQTTv311), (1, mqtt.MQTTv5),
                                       (2, mqtt.MQTTv311), (2, mqtt.MQTTv5)])
def test_fanin_publishers_move_in_order(env, qos, proto):
    b, api = env
    sink = Sink()
    s, home = subscriber(b, api, sink, proto)
    ids = other_ids(api, home, "m-p", NPUB)
    pubs = [client(b, i, proto=proto) for i in ids]
    try:
        ths = [threading.Thread(target=publish_all, args=(p, "mig/" + i, qos, MSGS))
               for p, i in zip(pubs, ids)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(DEADLINE * 2)
        wait_moved(api, ids, home, "m-p")
        want = [str(i) for i in range(MSGS)]
        for i in ids:
            wait_for(lambda: len(sink.of("mig/" + i)) >= MSGS, DEADLINE, what=i + " all")
            assert sink.of("mig/" + i) == want, i  # in order, once each
        assert api.metric("antenna_worker_migrations_total") >= NPUB
        # the moved connections keep working
        for p, i in zip(pubs, ids):
            p.publish("mig/" + i, "after", qos=qos).wait_for_publish(DEADLINE)
        for i in ids:
            wait_for(lambda: sink.of("mig/" + i)[-1:] == ["after"], DEADLINE, what=i + " after")
    finally:
        for p in pubs:
            stop(p)
        stop(s)


@pytest.mark.parametrize("qos", [1, 2])
def test_publishers_to_a_durable_subscriber_move(env, qos):
    """A persistent subscriber: its QoS 1/2 messages are stored before they
    are delivered (after the commit); they count for their publishers'
    move all the same, and arrive in order, once each."""
    b, api = env
    moves_in_order(b, api, "m-d%d-" % qos, qos=qos, durable=True)


def moved_publisher(b, api, sink, home, cid, **kw):
    """A publisher on the other worker, moved to `home` by its traffic."""
    p = client(b, cid, **kw)
    publish_all(p, "mig/" + cid, 0, 2 * 256 + 50)
    wait_moved(api, [cid], home, cid)
    wait_for(lambda: len(sink.of("mig/" + cid)) >= 2 * 256 + 50, DEADLINE, what="delivered")
    return p


def test_takeover_and_kick_after_move(env):
    b, api = env
    sink = Sink()
    s, home = subscriber(b, api, sink)
    (cid,) = other_ids(api, home, "m-t", 1)
    p = moved_publisher(b, api, sink, home, cid)
    dropped = threading.Event()
    p.on_disconnect = lambda *_a: dropped.set()
    p2 = client(b, cid)  # the same id: handed to the new home, takes over
    try:
        assert dropped.wait(DEADLINE), "the first connection was not taken over"
        p.loop_stop()
        assert api.workers(cid)[cid] == home
        p2.publish("mig/" + cid, "p2", qos=1).wait_for_publish(DEADLINE)
        wait_for(lambda: sink.of("mig/" + cid)[-1:] == ["p2"], DEADLINE, what="p2")
        kicked = threading.Event()
        p2.on_disconnect = lambda *_a: kicked.set()
        st, raw = api.call("DELETE", "/api/v1/clients/" + cid)
        assert st == 204, raw
        assert kicked.wait(DEADLINE), "not kicked"
    finally:
        p2.loop_stop()
        stop(s)


def test_will_after_move(env):
    b, api = env
    sink = Sink()
    s, home = subscriber(b, api, sink)
    (cid,) = other_ids(api, home, "m-w", 1)
    p = moved_publisher(b, api, sink, home, cid, will="mig/will/" + cid)
    try:
        p.loop_stop()
        p.socket().close()  # no DISCONNECT: the will goes out
        wait_for(lambda: sink.of("mig/will/" + cid) == ["gone"], DEADLINE, what="will")
    finally:
        stop(s)


@pytest.mark.parametrize("proto", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_persistent_session_after_move_and_restart(env, proto):
    b, api = env
    sink = Sink()
    s, home = subscriber(b, api, sink)
    (cid,) = other_ids(api, home, "m-s", 1)
    p = moved_publisher(b, api, sink, home, cid, proto=proto, clean=False)
    stop(p)
    wait_for(lambda: cid in api.workers(cid), DEADLINE, what="session kept")
    p = client(b, cid, proto=proto, clean=False)  # resumed where it moved
    assert p.connack["flags"]["session present"] == 1
    assert api.workers(cid)[cid] == home
    p.publish("mig/" + cid, "resumed", qos=1).wait_for_publish(DEADLINE)
    wait_for(lambda: sink.of("mig/" + cid)[-1:] == ["resumed"], DEADLINE, what="resumed")
    stop(p)
    stop(s)
    b.stop()
    b.start()  # sessions load on their hash home (a new key: any worker)
    p = client(b, cid, proto=proto, clean=False)
    try:
        assert p.connack["flags"]["session present"] == 1
        api.worker_of(cid)
    finally:
        stop(p)


def test_p2p_pairs_colocated_and_spread(env):
    """Point to point: each publisher joins its own subscriber; subscribers
    stay where their hash put them, so the pairs end spread over both."""
    b, api = env
    npairs = 12
    sink = Sink()
    subs, pubs = [], []
    try:
        for i in range(npairs):
            s = client(b, "m-q-sub%d" % i, on_message=sink.on_message)
            done = threading.Event()
            s.on_subscribe = lambda *_a, d=done: d.set()
            s.subscribe("mig/pair/%d" % i, 0)
            assert done.wait(DEADLINE)
            subs.append(s)
        pubs = [client(b, "m-q-pub%d" % i) for i in range(npairs)]
        ths = [threading.Thread(target=publish_all, args=(p, "mig/pair/%d" % i, 0, 2 * 256 + 50))
               for i, p in enumerate(pubs)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(DEADLINE * 2)

        def colocated():
            w = api.workers("m-q-")
            return all(w.get("m-q-pub%d" % i) == w.get("m-q-sub%d" % i) for i in range(npairs))
        wait_for(colocated, DEADLINE, what="pairs co-located")
        w = api.workers("m-q-")
        # the subscribers' hash spreads them: 12 on one worker is 1 in 2048
        assert len({w["m-q-sub%d" % i] for i in range(npairs)}) == 2, w
        for i in range(npairs):
            t = "mig/pair/%d" % i
            wait_for(lambda: len(sink.of(t)) >= 2 * 256 + 50, DEADLINE, what=t + " all")
            assert sink.of(t) == [str(k) for k in range(2 * 256 + 50)]
    finally:
        for c in pubs + subs:
            stop(c)


def moves_in_order(b, api, prefix, qos=1, durable=False, **kw):
    """Two publishers over the transport kw names (tls=True, ws=True) on the
    other worker move to their subscriber's (a persistent session when
    durable): every message arrives in order across the move, and one after
    it."""
    sink = Sink()
    s, home = subscriber(b, api, sink, qos=qos, clean=not durable, **kw)
    ids = other_ids(api, home, prefix, 2, **kw)
    pubs = [client(b, i, **kw) for i in ids]
    try:
        for p, i in zip(pubs, ids):
            publish_all(p, "mig/" + i, qos, MSGS)
        wait_moved(api, ids, home, prefix)
        for p, i in zip(pubs, ids):
            p.publish("mig/" + i, "after", qos=qos).wait_for_publish(DEADLINE)
        want = [str(k) for k in range(MSGS)] + ["after"]
        for i in ids:
            wait_for(lambda: len(sink.of("mig/" + i)) >= MSGS + 1, DEADLINE, what=i + " all")
            assert sink.of("mig/" + i) == want, i
    finally:
        for p in pubs:
            stop(p)
        stop(s)


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")
def test_tls_publisher_moves(broker, tmp_path):
    """A connection over TLS moves too (its transport state is its own)."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    "srv.key", "-out", "srv.crt", "-days", "2", "-subj", "/CN=127.0.0.1"],
                   cwd=str(tmp_path), check=True, capture_output=True, timeout=60)
    keys = tmp_path / "api.keys"
    key = make_key(keys)
    b = broker(workers=2, root=LOCALITY, api={"keys_file": str(keys)},
               listener={"transport": "tls", "cert_file": str(tmp_path / "srv.crt"),
                         "key_file": str(tmp_path / "srv.key")})
    moves_in_order(b, Api(b, key), "m-tls", tls=True)


def test_websocket_publisher_moves(broker, tmp_path):
    """A connection over WebSocket moves too (its framing state is its own):
    every message in order across the move, and after it."""
    keys = tmp_path / "api.keys"
    key = make_key(keys)
    b = broker(workers=2, root=LOCALITY, api={"keys_file": str(keys)}, listener={"transport": "ws"})
    moves_in_order(b, Api(b, key), "m-ws", ws=True)
