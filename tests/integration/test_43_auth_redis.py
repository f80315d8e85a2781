"""The Redis auth backend (auth.chain: [redis]) end to end: a real
redis-server (Debian's) started by the test on a free loopback port in the
test's temporary directory, filled with redis-cli; the real broker looks
users and their ACL rules up in it.

Covered: right and wrong password (MQTT 5 and 3.1.1 codes), unknown user,
ACL rules from Redis applied to PUBLISH (PUBACK 0x87) and SUBSCRIBE (SUBACK
0x87), and Redis stopped (CONNACK 0x88 at once, logged) then started again
(the broker reconnects by itself)."""

import base64
import hashlib
import os
import shutil
import subprocess
import time

import pytest

from authutil import paho_connack
from conftest import free_port, wait_for
from mqttraw import PUBACK, RawClient5

pytestmark = [pytest.mark.antenna_only,
              pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server is not installed")]

RC_BAD_USER_PASS = 0x86
RC_NOT_AUTHORIZED = 0x87
RC_SERVER_UNAVAILABLE = 0x88


def pbkdf2_hash(password, iterations=1000):
    """The password-file format: $pbkdf2-sha512$ITER$SALT_B64$HASH_B64."""
    salt = os.urandom(16)
    dk = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return "$pbkdf2-sha512$%d$%s$%s" % (iterations, base64.b64encode(salt).decode(),
                                        base64.b64encode(dk).decode())


class Redis:
    def __init__(self, tmp_path):
        self.dir = tmp_path / "redis"
        self.dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir), "--save", "", "--appendonly", "no",
             "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.cli("PING", check=False) == "PONG", 5, what="redis-server")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def cli(self, *args, check=True):
        r = subprocess.run(["redis-cli", "-p", str(self.port)] + list(args),
                           capture_output=True, text=True, timeout=5)
        if check:
            assert r.returncode == 0 and not r.stdout.startswith("ERR"), r
        return r.stdout.strip()

    def add_user(self, user, password, rules=()):
        self.cli("HSET", "antenna:user:" + user, "password", pbkdf2_hash(password))
        self.cli("DEL", "antenna:acl:" + user)
        if rules:
            self.cli("RPUSH", "antenna:acl:" + user, *rules)


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path)
    r.start()
    yield r
    r.stop()


def redis_broker(broker, redis, mqtt=None, **kw):
    cfg = {"port": redis.port, "timeout_ms": 500, "pool_size": 2}
    cfg.update(kw)
    return broker(mqtt=mqtt or {"sys_interval": 1},
                  auth={"chain": ["redis"], "default": "deny", "acl_default": "deny",
                        "redis": cfg})


def connect5(b, cid, user=None, pw=None):
    c = RawClient5(b.host, b.port, timeout=5)
    ack = c.connect(cid, username=user, password=pw)
    return c, ack


def test_right_and_wrong_password(broker, redis):
    redis.add_user("alice", "s3cret")
    b = redis_broker(broker, redis)
    c, ack = connect5(b, "r-1", "alice", "s3cret")
    assert ack.rc == 0
    c.close()
    c, ack = connect5(b, "r-2", "alice", "wrong")
    assert ack.rc == RC_BAD_USER_PASS
    c.close()
    c, ack = connect5(b, "r-3", "alice", None)
    assert ack.rc == RC_BAD_USER_PASS
    c.close()
    # MQTT 3.1.1: CONNACK 4
    assert paho_connack(b, "alice", "wrong", client_id="r-4") == 4


def test_unknown_user(broker, redis):
    b = redis_broker(broker, redis, mqtt={"allow_anonymous": False})
    c, ack = connect5(b, "u-1", "nobody", "pw")
    assert ack.rc in (RC_BAD_USER_PASS, RC_NOT_AUTHORIZED)  # passed, auth.default denies
    c.close()
    c, ack = connect5(b, "u-2")  # no username: not Redis' to judge (passed)
    assert ack.rc in (RC_BAD_USER_PASS, RC_NOT_AUTHORIZED)
    c.close()


def test_acl_rules_from_redis(broker, redis):
    redis.add_user("dev7", "pw", ["deny pub devices/dev7/secret",
                                  "allow all devices/dev7/#",
                                  "sub broadcast/+"])
    b = redis_broker(broker, redis)
    c, ack = connect5(b, "dev7-c", "dev7", "pw")
    assert ack.rc == 0
    ok = c.publish("devices/dev7/temp", b"21", qos=1, pid=1)
    assert ok.rc < 0x80, ok
    denied = c.publish("devices/other/temp", b"21", qos=1, pid=2)
    assert (denied.type, denied.rc) == (PUBACK, RC_NOT_AUTHORIZED)
    denied = c.publish("devices/dev7/secret", b"x", qos=1, pid=3)
    assert denied.rc == RC_NOT_AUTHORIZED
    sub = c.subscribe(4, [("broadcast/all", 1), ("devices/dev7/#", 1), ("other/#", 1)])
    assert sub.codes == [1, 1, RC_NOT_AUTHORIZED]
    # publish is not allowed on broadcast/+ (sub only)
    denied = c.publish("broadcast/all", b"x", qos=1, pid=5)
    assert denied.rc == RC_NOT_AUTHORIZED
    c.disconnect()


def test_redis_down_and_back(broker, redis):
    redis.add_user("erin", "pw")
    b = redis_broker(broker, redis)
    c, ack = connect5(b, "e-1", "erin", "pw")
    assert ack.rc == 0
    c.close()

    redis.stop()
    t0 = time.monotonic()
    c, ack = connect5(b, "e-2", "erin", "pw")
    assert ack.rc == RC_SERVER_UNAVAILABLE
    assert time.monotonic() - t0 < 1.5
    c.close()
    b.wait_log(r"auth redis: connect of client 'e-2'.*denied")
    # the broker itself is fine meanwhile: an already refused client can
    # retry, and gets an answer each time
    c, ack = connect5(b, "e-3", "erin", "pw")
    assert ack.rc == RC_SERVER_UNAVAILABLE
    c.close()

    redis.start()  # same port, empty: fill it again
    redis.add_user("erin", "pw")

    def connects():
        c, ack = connect5(b, "e-4", "erin", "pw")
        c.close()
        return ack.rc == 0
    wait_for(connects, 8, interval=0.2, what="a CONNECT through Redis again")
    b.wait_log(r"auth redis: connected to .* again")
    # the failures were counted ($SYS, rules from Redis allow the read)
    redis.add_user("erin", "pw", ["sub $SYS/broker/auth/redis/+"])
    c, ack = connect5(b, "e-5", "erin", "pw")
    assert ack.rc == 0
    assert c.subscribe(1, [("$SYS/broker/auth/redis/+", 0)]).codes == [0]
    deadline = time.monotonic() + 30
    errors = None
    while time.monotonic() < deadline and not (errors and errors >= 2):
        p = c.recv_publish(timeout=max(0.05, deadline - time.monotonic()))
        if p.topic == "$SYS/broker/auth/redis/errors":
            errors = int(p.payload)
    assert errors is not None and errors >= 2, errors
    c.disconnect()
