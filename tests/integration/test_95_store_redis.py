"""The persistence store in Redis (persistence.backend: redis,
src/store/store_redis.c; docs/persistence.md): a real redis-server
(Debian's) started by the test on a free loopback port in the test's
temporary directory, with appendonly yes and appendfsync always.

Covered: persistent sessions (subscriptions, queued QoS 1 and 2 messages, an
in-flight QoS 1 message) and retained messages survive a kill -9 of the
broker (MQTT 3.1.1 and 5); the kill -9 durability rule of test_19 (every
PUBACKed message is found after the restart) over a few rounds; two node
names on one Redis keep their sessions apart and the same name resumes
them; Redis killed while the broker runs (QoS 1 PUBACK 0x97 in MQTT 5, the
connection closed in 3.1.1) and restarted from its AOF (publishes are
acknowledged again, nothing acknowledged is lost); a Redis that cannot be
reached or a malformed url at start-up (exit 1, a clear message, no
password in it).  Every wait polls with a deadline."""

import os
import random
import shutil
import subprocess
import time

import paho.mqtt.client as mqtt
import pytest

from conftest import Broker, free_port, require_antenna_bin, wait_for
from durability import Publisher, RawPublisher, Subscriber, payload
from mqttraw import (PUBACK, SESSION_EXPIRY_INTERVAL, RawClient, RawClient5, puback)
from test_61_modules import SectionBroker

pytestmark = [pytest.mark.antenna_only,
              pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server is not installed")]

SANITIZED = os.environ.get("ANTENNA_SANITIZED") == "1"
SETTLE = 60.0 if SANITIZED else 30.0
RC_UNSPECIFIED = 0x80
RC_IMPL_SPECIFIC = 0x83
RC_QUOTA = 0x97


class Redis:
    """redis-server on its own port and directory; start() again after
    kill() reloads its append-only file."""

    def __init__(self, tmp_path, password=None):
        self.dir = tmp_path / "redis"
        self.dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.password = password
        self.proc = None

    def start(self):
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--save", "", "--appendonly", "yes",
                "--appendfsync", "always", "--logfile", str(self.dir / "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.cli("PING", check=False) == "PONG", 15, what="redis-server")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def cli(self, *args, check=True):
        pw = ["-a", self.password, "--no-auth-warning"] if self.password else []
        r = subprocess.run(["redis-cli", "-p", str(self.port)] + pw + list(args),
                           capture_output=True, text=True, timeout=10)
        if check:
            assert r.returncode == 0 and not r.stdout.startswith("ERR"), r
        return r.stdout.strip()

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path)
    r.start()
    yield r
    r.kill()


def redis_persistence(srv, **kw):
    p = {"enabled": True, "backend": "redis", "sync": "always",
         "redis": {"url": srv.url, "timeout_ms": 10000 if SANITIZED else 5000}}
    p["redis"].update(kw.pop("redis", {}))
    p.update(kw)
    return p


def raw(b, proto):
    return (RawClient5 if proto == "5" else RawClient)(b.host, b.port)


def connect_persistent(b, proto, cid):
    c = raw(b, proto)
    if proto == "5":
        ack = c.connect(cid, clean_start=False, props=[(SESSION_EXPIRY_INTERVAL, 3600)])
    else:
        ack = c.connect(cid, clean=False)
    assert ack.rc == 0, ack
    return c, ack.session_present


def retained_on(b, flt):
    c = b.raw_connected("reader-%d" % time.monotonic_ns())
    assert c.subscribe(1, [(flt, 1)]).codes == [1]
    got = {}
    while True:
        try:
            p = c.recv_publish(1.0)
        except Exception:
            break
        got[p.topic] = p.payload
        if p.qos:
            c.ack(p)
    c.close()
    return got


@pytest.mark.parametrize("proto", ["3.1.1", "5"])
def test_sessions_and_retained_survive_kill9(broker, redis, proto):
    b = broker(workers=2, persistence=redis_persistence(redis))
    s, present = connect_persistent(b, proto, "rs-sub")
    assert present == 0
    assert s.subscribe(1, [("rs/one/#", 1), ("rs/two/#", 2), ("rs/zero", 0)]).codes == [1, 2, 0]
    pub = b.raw_connected("rs-pub")
    pub.publish("rs/one/a", b"in flight", qos=1, pid=1)
    first = s.recv_publish(5)
    assert first.payload == b"in flight"
    s.go_offline()  # no PUBACK: stays in flight
    for i in range(5):
        pub.publish("rs/one/q", b"queued %d" % i, qos=1, pid=10 + i)
    pub.publish("rs/two/q", b"exactly once", qos=2, pid=20)
    pub.publish("rs/keep", b"retained \x00\xff binary", qos=1, retain=True, pid=30)
    pub.close()
    assert int(redis.cli("ZCARD", "antenna:default:index")) > 0
    b.kill()
    b.start()
    wait_for(lambda: "sessions with 7 messages restored" in b.log_text(), SETTLE,
             what="the sessions restored")
    s, present = connect_persistent(b, proto, "rs-sub")
    assert present == 1
    again = s.recv_publish(5)  # first (after a kill -9 its record says queued)
    assert again.payload == b"in flight"
    s.send(puback(again.pid))
    got = []
    for _ in range(6):
        m = s.recv_publish(5)
        got.append((m.qos, m.payload))
        s.ack(m)
    assert got == [(1, b"queued %d" % i) for i in range(5)] + [(2, b"exactly once")]
    s.expect_nothing(0.5)  # the QoS 2 message once
    assert retained_on(b, "rs/keep") == {"rs/keep": b"retained \x00\xff binary"}
    p2 = b.raw_connected("rs-pub2")  # the subscriptions came back too
    p2.publish("rs/zero", b"live", qos=0)
    assert s.recv_publish(5).payload == b"live"
    s.close()
    p2.close()
    assert "store: Redis at %s" % redis.url in b.log_text()


ROUNDS = int(os.environ.get("DURABILITY_ROUNDS", "1" if SANITIZED else "2"))
SEED = int(os.environ.get("DURABILITY_SEED", str(random.randrange(1 << 30))))
PROTOCOLS = {"3.1.1": mqtt.MQTTv311, "5": mqtt.MQTTv5}


@pytest.mark.deadline(60 + ROUNDS * (60 if SANITIZED else 25))
@pytest.mark.parametrize("proto", sorted(PROTOCOLS))
def test_kill9_loses_no_acknowledged_message(broker, redis, proto):
    """test_19's rule with Redis: publishers flat out, the broker killed
    at a random moment; after the restart both subscribers (one online,
    one offline: its only copy is in Redis) have every PUBACKed message."""
    protocol = PROTOCOLS[proto]
    rng = random.Random("%d-%s" % (SEED, proto))
    b = broker(workers=2, persistence=redis_persistence(redis),
               mqtt={"max_queued": 1000000, "max_inflight": 200, "receive_maximum": 1000},
               limits={"max_queued_bytes": 0})
    online = Subscriber(b, "rd-online", "dur/#", 1, protocol=protocol, reconnect_delay=0.1)
    offline = Subscriber(b, "rd-offline", "dur/#", 1, protocol=protocol)
    offline.close()
    for rnd in range(ROUNDS):
        pubs = [Publisher(b, "r%d-paho%d" % (rnd, i), 1, limit=10 ** 9, protocol=protocol,
                          window=10, pad=8000) for i in range(2)]
        pubs.append(RawPublisher(b, "r%d-raw" % rnd, protocol=protocol, window=16, pad=8000))
        for p in pubs:
            p.start()
        wait_for(lambda: all(p.acked for p in pubs), 20, what="a PUBACK for every publisher")
        time.sleep(rng.uniform(0.05, 0.5))
        b.kill()
        acked = {p.name: p.stop() for p in pubs}
        b.start()
        offline = Subscriber(b, "rd-offline", None, 1, protocol=protocol)
        want = {payload(n, s) for n, seqs in acked.items() for s in seqs}
        deadline = time.monotonic() + SETTLE
        while time.monotonic() < deadline and not (offline.has_all(want) and online.has_all(want)):
            time.sleep(0.1)
        lost = offline.missing(want) + online.missing(want)
        assert not lost, ("MQTT %s round %d (DURABILITY_SEED=%d): %d acknowledged messages "
                          "lost, e.g. %r" % (proto, rnd + 1, SEED, len(lost), lost[:5]))
        offline.close()
    online.close()


def node_section(name, link_port):
    return ("cluster:\n  node: %s\n  etcd: \"\"\n  listen: 127.0.0.1:%d\n  secret: s3cret\n"
            "  static_members: [%s@127.0.0.1:%d]\n" % (name, link_port, name, link_port))


def test_node_names_keep_stores_apart(tmp_path, redis):
    started = []

    def node(name):
        b = SectionBroker(tmp_path, len(started), node_section(name, free_port()),
                          {"persistence": redis_persistence(redis)})
        started.append(b)
        return b.start()

    try:
        n1 = node("n1")
        s, present = connect_persistent(n1, "5", "roamer")
        assert s.subscribe(1, [("roam/#", 1)]).codes == [1]
        s.go_offline()
        pub = n1.raw_connected("roam-pub")
        pub.publish("roam/x", b"for n1's session", qos=1, pid=1)
        pub.close()
        n1.kill()
        assert int(redis.cli("ZCARD", "antenna:n1:index")) > 0
        n2 = node("n2")  # another node on the same Redis: none of n1's sessions
        s, present = connect_persistent(n2, "5", "roamer")
        assert present == 0
        s.expect_nothing(0.5)
        s.close()
        n2.stop()
        assert int(redis.cli("ZCARD", "antenna:n2:index")) > 0
        n1b = node("n1")  # n1 again (as if on another machine: a new directory)
        s, present = connect_persistent(n1b, "5", "roamer")
        assert present == 1
        m = s.recv_publish(5)
        assert m.payload == b"for n1's session"
        s.ack(m)
        s.close()
    finally:
        for b in started:
            if b.running():
                b.kill()


def publish_rc(c, proto, pid):
    """A QoS 1 publish: the PUBACK's reason code, or None when the broker
    closed the connection instead (3.1.1 has no way to say no)."""
    try:
        if proto == "5":
            return c.publish("rd/x", b"m%d" % pid, qos=1, pid=pid, timeout=10).rc
        c.publish("rd/x", b"m%d" % pid, qos=1, pid=pid, timeout=10)
        return 0
    except Exception:
        return None


@pytest.mark.parametrize("proto", ["3.1.1", "5"])
def test_redis_down_then_back(broker, redis, proto):
    b = broker(workers=1, persistence=redis_persistence(
        redis, redis={"timeout_ms": 2000, "connect_timeout_ms": 1000}))
    sub, _ = connect_persistent(b, proto, "down-sub")
    assert sub.subscribe(1, [("rd/#", 1)]).codes == [1]
    sub.go_offline()
    c = raw(b, proto)
    assert c.connect("down-pub").rc == 0
    assert publish_rc(c, proto, 1) == 0
    redis.kill()
    rc = publish_rc(c, proto, 2)
    if proto == "5":
        assert rc == RC_QUOTA, "PUBACK 0x%02x with Redis down" % rc
    else:
        assert rc is None, "a PUBACK with Redis down"
    b.wait_log(r"store '.*': write failed: .*Redis at %s" % redis.url, timeout=10)
    redis.start()  # from its AOF
    pid = [10]

    def acknowledged():
        nonlocal c
        if proto == "3.1.1" and not c.is_open(0.1):
            c = raw(b, proto)
            assert c.connect("down-pub").rc == 0
        pid[0] += 1
        return publish_rc(c, proto, pid[0]) == 0
    wait_for(acknowledged, SETTLE, interval=0.2, what="a PUBACK once Redis is back")
    b.wait_log(r"store: Redis at .* answers again", timeout=10)
    c.close()
    b.kill()  # the acknowledged messages are in Redis
    b.start()
    sub, present = connect_persistent(b, proto, "down-sub")
    assert present == 1
    got = []
    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline and b"m%d" % pid[0] not in got:
        m = sub.recv_publish(10)
        sub.ack(m)
        got.append(m.payload)
    assert got[0] == b"m1" and got[-1] == b"m%d" % pid[0], got
    sub.close()


def start_fails(tmp_path, persistence):
    b = Broker(tmp_path, 0, {"persistence": persistence})
    path = b.write_config()
    r = subprocess.run([require_antenna_bin(), "--config", str(path)], capture_output=True,
                       text=True, timeout=60, cwd=str(tmp_path))
    return r.returncode, r.stdout + r.stderr


def test_unreachable_or_malformed_redis_refuses_start(tmp_path):
    port = free_port()  # nobody listens there
    rc, out = start_fails(tmp_path, {"backend": "redis", "redis": {
        "url": "redis://:sekrit@127.0.0.1:%d/3" % port, "connect_timeout_ms": 500}})
    assert rc == 1, out
    assert "cannot connect to Redis at redis://127.0.0.1:%d/3" % port in out, out
    assert "sekrit" not in out
    rc, out = start_fails(tmp_path, {"backend": "redis", "redis": {"url": "http://x:1"}})
    assert rc == 1, out
    assert "persistence.redis.url" in out and "expected redis://" in out, out
    assert ".yaml:" in out  # file:line
    rc, out = start_fails(tmp_path, {"backend": "redis", "redis": {"url": "redis://h:99999"}})
    assert rc == 1 and "port" in out, out
    rc, out = start_fails(tmp_path, {"backend": "etcd"})
    assert rc == 1 and "persistence.backend" in out, out


def test_password_and_database(broker, tmp_path):
    r = Redis(tmp_path, password="pa55")
    r.start()
    try:
        from test_50_api import Client, make_key
        keys = tmp_path / "api.keys"
        key = make_key(keys)
        b = broker(persistence={"enabled": True, "backend": "redis", "redis": {
            "url": "redis://:pa55@127.0.0.1:%d/2" % r.port, "prefix": "t:{node}:x:"}},
            api={"keys_file": str(keys)})
        cfg = Client(b, key).get("/api/v1/config")
        assert cfg["persistence"]["redis"]["url"] == \
            "redis://:<redacted>@127.0.0.1:%d/2" % r.port, cfg["persistence"]
        assert cfg["persistence"]["backend"] == "redis"
        c = b.raw_connected("pw-pub")
        c.publish("pw/keep", b"kept", qos=1, retain=True, pid=1)
        c.close()
        assert int(r.cli("-n", "2", "ZCARD", "t:default:x:index")) > 0
        # /metrics names the backend; a write is one Redis round trip
        from test_53_metrics import fetch, parse
        fams = parse(fetch(b.api_url + "/metrics", key)[2])
        info = fams["antenna_store_backend_info"]["samples"]
        assert info == [("antenna_store_backend_info", 'backend="redis"', 1)], info
        assert fams["antenna_store_write_seconds"]["type"] == "histogram"
        assert "pa55" not in b.log_text()
        b.kill()
        # an export names its source without the password
        out = subprocess.run([require_antenna_bin(), "store", "export",
                              "redis://:pa55@127.0.0.1:%d/2?prefix=t:default:x:" % r.port, "-"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        header = out.stdout.splitlines()[0]
        assert "pa55" not in out.stdout and "t:default:x:" in header, header
        b.start()
        assert retained_on(b, "pw/#") == {"pw/keep": b"kept"}
    finally:
        r.kill()


def test_store_tools_on_redis(broker, redis, tmp_path):
    """antenna store works on a Redis store named by its url: what a
    broker stored is inspected, exported and imported under another
    prefix, where a broker finds it."""
    b = broker(persistence=redis_persistence(redis))
    c = b.raw_connected("tool-pub")
    c.publish("tool/keep", b"kept", qos=1, retain=True, pid=1)
    c.close()
    b.stop()
    tool = [require_antenna_bin(), "store"]
    src = redis.url + "?prefix=antenna:default:"
    r = subprocess.run(tool + ["inspect", src, "--retained"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "tool/keep" in r.stdout, r
    backup = str(tmp_path / "backup.jsonl")
    r = subprocess.run(tool + ["export", src, backup], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r
    r = subprocess.run(tool + ["import", redis.url + "?prefix=antenna:copy:", backup],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "1 retained" in r.stdout + r.stderr, r
    b2 = broker(persistence=redis_persistence(redis, redis={"prefix": "antenna:copy:"}))
    assert retained_on(b2, "tool/#") == {"tool/keep": b"kept"}


def test_one_broker_per_store_and_a_lost_lock_writes_nothing(broker, redis, tmp_path):
    """Like RocksDB's LOCK file: a second broker on the same Redis and
    prefix refuses to start while the first runs; a broker whose lock was
    taken from it (here: overwritten by hand, as another process would
    after a pause past the lock's TTL) refuses QoS 1 publishes (0x97)
    rather than write beside the new holder."""
    b = broker(persistence=redis_persistence(redis))
    holder = redis.cli("GET", "antenna:default:lock").strip()
    assert holder.split(":")[1] == str(b.proc.pid), holder
    second = tmp_path / "second"
    second.mkdir()
    rc, out = start_fails(second, redis_persistence(redis))
    assert rc == 1, out
    assert "in use by %s" % holder in out and "another broker with this node name" in out, out
    c = RawClient5(b.host, b.port)
    assert c.connect("locked-pub").rc == 0
    # retained: each publish is a store write before its PUBACK
    assert c.publish("lk/a", b"before", qos=1, retain=True, pid=1).rc in (0, 0x10)
    redis.cli("SET", "antenna:default:lock", "elsewhere:1:00")
    assert c.publish("lk/b", b"after", qos=1, retain=True, pid=2, timeout=10).rc == 0x97
    b.wait_log(r"lost the store's lock")
    c.close()
    # let go at a clean stop: another broker starts at once
    redis.cli("SET", "antenna:default:lock", holder)
    b.stop()
    assert redis.cli("EXISTS", "antenna:default:lock").strip() == "0"
    b.start()
    assert retained_on(b, "lk/#") == {"lk/a": b"before"}
