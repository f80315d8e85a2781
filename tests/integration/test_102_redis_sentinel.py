"""The Redis store behind Redis Sentinel (persistence.redis.url
redis-sentinel://..., persistence.redis.min_replicas; src/store/
store_redis.c, src/core/redis_url.c; docs/persistence.md "Redis Sentinel").

Real servers on loopback in the test's directory: a Redis master and one
replica (appendonly yes, appendfsync always) and one Sentinel watching them
(quorum 1, down after 1 s).  Covered: the broker finds the master through
the Sentinel; publishers flat out while the master is killed with SIGKILL;
the Sentinel promotes the replica, the broker's next connection goes to the
new master; then the broker itself is killed and started again (it reads
its sessions from the new master): a persistent subscriber that was
offline the whole time has every message a publisher got a PUBACK for,
because with min_replicas 1 a PUBACK waits until the replica has the write
(WAIT).  And bad Sentinel urls refuse the start with file:line:key.  Every
wait polls with a deadline."""

import os
import shutil
import subprocess
import time

import pytest

from conftest import Broker, free_port, require_antenna_bin, wait_for
from durability import Publisher, Subscriber, payload

pytestmark = [pytest.mark.antenna_only,
              pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server is not installed")]

SANITIZED = os.environ.get("ANTENNA_SANITIZED") == "1"
SETTLE = 60.0 if SANITIZED else 30.0


def cli(port, *args, check=True):
    r = subprocess.run(["redis-cli", "-p", str(port)] + list(args),
                       capture_output=True, text=True, timeout=10)
    if check:
        assert r.returncode == 0 and not r.stdout.startswith("ERR"), r
    return r.stdout.strip()


class Sentinelled:
    """A master, a replica and a Sentinel named `m`."""

    def __init__(self, tmp_path):
        self.dir = tmp_path / "redis-ha"
        self.dir.mkdir(exist_ok=True)
        self.master, self.replica, self.sentinel = free_port(), free_port(), free_port()
        while self.replica == self.master:
            self.replica = free_port()
        while self.sentinel in (self.master, self.replica):
            self.sentinel = free_port()
        self.procs = {}

    def _server(self, name, port, extra=()):
        d = self.dir / name
        d.mkdir(exist_ok=True)
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d),
                "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                "--logfile", str(d / "redis.log")] + list(extra)
        self.procs[name] = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
        wait_for(lambda: cli(port, "PING", check=False) == "PONG", 15, what=name)

    def start(self):
        self._server("master", self.master)
        self._server("replica", self.replica, ["--replicaof", "127.0.0.1", str(self.master)])
        wait_for(lambda: "master_link_status:up" in cli(self.replica, "INFO", "replication"),
                 20, what="the replica linked to its master")
        conf = self.dir / "sentinel.conf"  # the Sentinel rewrites it
        conf.write_text("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n"
                        "sentinel monitor m 127.0.0.1 %d 1\n"
                        "sentinel down-after-milliseconds m 1000\n"
                        "sentinel failover-timeout m 5000\n"
                        % (self.sentinel, self.dir, self.dir / "sentinel.log", self.master))
        self.procs["sentinel"] = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        wait_for(lambda: self.master_port() == self.master, 15, what="the Sentinel's master")
        wait_for(lambda: "slaves=1" in cli(self.sentinel, "INFO", "sentinel", check=False),
                         30, what="the Sentinel seeing the replica")

    def master_port(self):
        out = cli(self.sentinel, "SENTINEL", "get-master-addr-by-name", "m", check=False)
        lines = out.splitlines()
        return int(lines[1]) if len(lines) == 2 and lines[1].isdigit() else None

    def kill(self, name):
        p = self.procs.pop(name, None)
        if p and p.poll() is None:
            p.kill()
            p.wait(10)

    def stop(self):
        for name in list(self.procs):
            self.kill(name)

    @property
    def url(self):
        return "redis-sentinel://127.0.0.1:%d/m/0" % self.sentinel


@pytest.fixture
def ha(tmp_path):
    h = Sentinelled(tmp_path)
    try:
        h.start()
        yield h
    finally:
        h.stop()


def test_failover_loses_no_acknowledged_message(broker, ha):
    b = broker(workers=2, persistence={
        "enabled": True, "backend": "redis", "sync": "always",
        "redis": {"url": ha.url, "min_replicas": 1, "timeout_ms": 3000,
                  "connect_timeout_ms": 1000}},
        mqtt={"max_queued": 1000000, "receive_maximum": 1000}, limits={"max_queued_bytes": 0})
    b.wait_log(r"store: Redis at redis-sentinel://127\.0\.0\.1:%d/m/0" % ha.sentinel,
               timeout=10)
    offline = Subscriber(b, "ha-offline", "dur/#", 1)
    offline.close()
    pubs = [Publisher(b, "ha%d" % i, 1, limit=10 ** 9, window=10, duration=120)
            for i in range(2)]
    for p in pubs:
        p.start()
    wait_for(lambda: all(len(p.acked) >= 50 for p in pubs), 30, what="PUBACKs before")
    ha.kill("master")
    wait_for(lambda: ha.master_port() == ha.replica, 60, interval=0.2,
             what="the Sentinel promoting the replica")
    # the new master has no replica yet: with min_replicas 1 nothing is
    # acknowledged (WAIT answers 0) until one joins it
    ha._server("replica2", free_port(), ["--replicaof", "127.0.0.1", str(ha.replica)])
    at = {p.name: len(p.acked) for p in pubs}
    wait_for(lambda: all(len(p.acked) >= at[p.name] + 50 for p in pubs), SETTLE,
             interval=0.2, what="PUBACKs through the new master")
    acked = {p.name: p.stop() for p in pubs}
    b.wait_log(r"store: Redis at .* answers again", timeout=10)
    b.kill()  # its sessions and queues are read back from the new master
    b.start()
    sub = Subscriber(b, "ha-offline", None, 1)
    want = {payload(n, s) for n, seqs in acked.items() for s in seqs}
    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline and not sub.has_all(want):
        time.sleep(0.1)
    lost = sub.missing(want)
    assert not lost, "%d acknowledged messages lost, e.g. %r" % (len(lost), lost[:5])
    sub.close()


@pytest.mark.parametrize("url,why", [
    ("redis-sentinel://127.0.0.1/m", "each Sentinel is host:port"),
    ("redis-sentinel://127.0.0.1:26379", "needs host:port"),
    ("redis-sentinel://127.0.0.1:26379/", "master's name is missing"),
    ("redis-sentinel://127.0.0.1:26379/m/x", "database must be a number"),
])
def test_bad_sentinel_url_refuses_start(tmp_path, url, why):
    b = Broker(tmp_path, 0, {"persistence": {"enabled": True, "backend": "redis",
                                             "redis": {"url": url}}})
    path = b.write_config()
    r = subprocess.run([require_antenna_bin(), "--config", str(path)], capture_output=True,
                       text=True, timeout=60, cwd=str(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "persistence.redis.url" in out and why in out, out


def test_no_sentinel_answers_refuses_start(tmp_path):
    dead = free_port()
    b = Broker(tmp_path, 0, {"persistence": {"enabled": True, "backend": "redis", "redis": {
        "url": "redis-sentinel://127.0.0.1:%d/m/0" % dead, "connect_timeout_ms": 500}}})
    path = b.write_config()
    r = subprocess.run([require_antenna_bin(), "--config", str(path)], capture_output=True,
                       text=True, timeout=60, cwd=str(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Sentinel 127.0.0.1:%d" % dead in out, out
