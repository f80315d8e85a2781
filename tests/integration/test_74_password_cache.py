"""auth.password_cache: persistent (issue 15, item 4): successful PBKDF2
checks of the password file kept in the store, so a restarted broker
answers its devices without hashing again; what must still be refused
(a wrong password, a password changed in the file, an expired entry), the
key file beside the store, and nothing stored in memory mode.  The counts
come from /metrics (antenna_auth_password_checks_total{result=...})."""

import os
import re
import signal
import subprocess
import time
import urllib.request

import pytest

from authutil import paho_connack, scram_line
from conftest import free_port, require_antenna_bin, sanitizer_report, wait_for

pytestmark = pytest.mark.antenna_only


def make_key(path):
    p = subprocess.run([require_antenna_bin(), "apikey", "create", str(path), "prom"],
                       capture_output=True, timeout=10)
    assert p.returncode == 0, p.stderr
    return p.stdout.decode().strip()


class Env:
    def __init__(self, broker, tmp_path):
        self.broker = broker
        self.tmp = tmp_path
        self.store = tmp_path / "store"
        self.pw = tmp_path / "passwd"
        self.keys = tmp_path / "api.keys"
        self.key = make_key(self.keys)

    def start(self, mode="persistent", ttl=None):
        auth = {"password_file": str(self.pw), "password_cache": mode}
        if ttl:
            auth["password_cache_persistent_ttl_s"] = ttl
        self.b = self.broker(auth=auth, mqtt={"allow_anonymous": False},
                             persistence={"dir": str(self.store)},
                             api={"keys_file": str(self.keys)})
        return self.b

    def metrics(self):
        req = urllib.request.Request(self.b.api_url + "/metrics",
                                     headers={"Authorization": "Bearer " + self.key})
        with urllib.request.urlopen(req, timeout=5) as r:
            text = r.read().decode()
        out = {}
        for name, key in (('antenna_auth_password_checks_total{result="cache"}', "cache"),
                          ('antenna_auth_password_checks_total{result="pbkdf2"}', "pbkdf2"),
                          ("antenna_auth_password_cache_loaded", "loaded")):
            m = re.search("^%s (\\d+)$" % re.escape(name), text, re.M)
            assert m, "%s not in /metrics" % name
            out[key] = int(m.group(1))
        return out

    def connack(self, user, password):
        return paho_connack(self.b, user, password)


@pytest.fixture
def env(broker, tmp_path):
    return Env(broker, tmp_path)


def test_reconnect_after_restart_without_pbkdf2(env):
    env.pw.write_text(scram_line("alice", "wonderland") + "\n")
    env.start()
    assert env.connack("alice", "wonderland") == 0
    assert env.metrics() == {"cache": 0, "pbkdf2": 1, "loaded": 0}
    key = env.store / "auth-cache.key"
    st = os.stat(key)
    assert st.st_size == 32 and st.st_mode & 0o777 == 0o600
    env.b.stop()  # commits what is pending

    env.start()
    assert env.metrics()["loaded"] == 1
    assert env.connack("alice", "wonderland") == 0
    assert env.metrics() == {"cache": 1, "pbkdf2": 0, "loaded": 1}
    # a wrong password is hashed (and refused), never answered from the cache
    assert env.connack("alice", "wonder") == 4
    assert env.connack("alice", "") == 4
    m = env.metrics()
    assert m["pbkdf2"] == 2 and m["cache"] == 1
    # the refusals were not stored: still one entry after a restart
    env.b.stop()
    env.start()
    assert env.metrics()["loaded"] == 1


def test_changed_password_refuses_the_old_one(env):
    bob = scram_line("bob", "bob-pw")  # the same line all along
    env.pw.write_text(scram_line("alice", "one") + "\n" + bob + "\n")
    env.start()
    assert env.connack("alice", "one") == 0
    assert env.connack("bob", "bob-pw") == 0
    # SIGHUP with a new line for alice: her entry no longer matches
    env.pw.write_text(scram_line("alice", "two") + "\n" + bob + "\n")
    env.b.proc.send_signal(signal.SIGHUP)
    env.b.wait_log(r"password file .* reloaded: 2 users")
    before = env.metrics()
    assert env.connack("alice", "one") == 4
    assert env.connack("alice", "two") == 0
    assert env.connack("bob", "bob-pw") == 0  # unchanged line: still cached
    m = env.metrics()
    assert m["pbkdf2"] == before["pbkdf2"] + 2 and m["cache"] == before["cache"] + 1
    env.b.stop()

    # changed while the broker was down: the stored entry for "two" is dead
    env.pw.write_text(scram_line("alice", "three") + "\n" + bob + "\n")
    env.start()
    assert env.metrics()["loaded"] >= 2
    assert env.connack("alice", "two") == 4
    assert env.connack("alice", "three") == 0
    assert env.connack("bob", "bob-pw") == 0
    assert env.metrics() == {"cache": 1, "pbkdf2": 2, "loaded": env.metrics()["loaded"]}


def test_entries_past_their_ttl_are_not_used(env):
    env.pw.write_text(scram_line("alice", "wonderland") + "\n")
    env.start(ttl=2)
    t0 = time.time()
    assert env.connack("alice", "wonderland") == 0
    assert env.connack("alice", "wonderland") == 0
    assert env.metrics()["cache"] == 1
    env.b.stop()
    wait_for(lambda: time.time() > t0 + 2.5, 10, what="the entry's TTL")
    env.start(ttl=2)
    assert env.metrics()["loaded"] == 0  # expired at load (and deleted)
    assert env.connack("alice", "wonderland") == 0
    assert env.metrics()["pbkdf2"] == 1
    # and in memory: a fresh entry is used, then expires
    assert env.connack("alice", "wonderland") == 0
    assert env.metrics()["cache"] == 1
    t1 = time.time()
    wait_for(lambda: time.time() > t1 + 2.5, 10, what="the entry's TTL")
    assert env.connack("alice", "wonderland") == 0
    assert env.metrics() == {"cache": 1, "pbkdf2": 2, "loaded": 0}


def test_memory_mode_stores_nothing(env):
    env.pw.write_text(scram_line("alice", "wonderland") + "\n")
    env.start()  # persistent, no login: makes the key, stores nothing
    env.b.stop()
    env.start(mode="memory")
    assert env.connack("alice", "wonderland") == 0
    assert env.connack("alice", "wonderland") == 0
    assert env.metrics() == {"cache": 1, "pbkdf2": 1, "loaded": 0}
    env.b.stop()
    env.start()  # the same key: anything memory mode had stored would load
    assert env.metrics()["loaded"] == 0
    assert env.connack("alice", "wonderland") == 0
    assert env.metrics()["pbkdf2"] == 1


def start_fails(antenna_bin, tmp_path, body, persistence=None):
    cfg = tmp_path / "bad.yaml"
    if persistence is None:
        persistence = "persistence:\n  dir: %s\n" % (tmp_path / "store")
    cfg.write_text("listeners:\n  - name: mqtt\n    address: 127.0.0.1\n    port: %d\n"
                   "api:\n  enabled: false\n%s%s" % (free_port(), persistence, body))
    p = subprocess.run([antenna_bin, "-c", str(cfg)], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=30, cwd=str(tmp_path))
    err = p.stderr.decode(errors="replace")
    assert sanitizer_report(err) is None, err
    assert p.returncode == 1, (p.returncode, err)
    return err


def test_bad_key_file_refuses_to_start(antenna_bin, tmp_path):
    pw = tmp_path / "passwd"
    pw.write_text(scram_line("alice", "wonderland") + "\n")
    (tmp_path / "store").mkdir()
    key = tmp_path / "store" / "auth-cache.key"
    auth = "auth:\n  password_file: %s\n  password_cache: persistent\n" % pw
    key.write_bytes(os.urandom(32))
    os.chmod(key, 0o644)
    err = start_fails(antenna_bin, tmp_path, auth)
    assert str(key) in err and "0644" in err and "chmod 600" in err, err
    os.chmod(key, 0o600)
    key.write_bytes(os.urandom(31))
    err = start_fails(antenna_bin, tmp_path, auth)
    assert str(key) in err and "31 bytes, expected 32" in err, err
    # persistent without persistence: refused by the configuration, with the key's line
    err = start_fails(antenna_bin, tmp_path, auth, persistence="persistence:\n  enabled: false\n")
    assert "bad.yaml:" in err and "auth.password_cache" in err and "persistence.enabled" in err, err
