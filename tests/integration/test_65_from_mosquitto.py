"""Migrating from Mosquitto (issue 14): its password file and ACL file are
read as they are, `antenna passwd -M` writes lines Mosquitto reads, and the
API's users file takes `antenna passwd` output.  Files are written by the
real mosquitto_passwd and read by the real mosquitto where it matters."""

import base64
import os
import pwd
import http.client
import shutil
import socket
import subprocess
import time

import pytest

import mqttraw
from conftest import free_port, port_accepts, wait_for

pytestmark = pytest.mark.antenna_only

MOSQ_PASSWD = shutil.which("mosquitto_passwd")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
needs_mosquitto = pytest.mark.skipif(MOSQ_PASSWD is None, reason="mosquitto not installed")


def c5(b, cid, user=None, pw=None):
    return mqttraw.connect_v5(b.host, b.port, cid, username=user, password=pw)


def connack(b, user, pw, v5=True):
    c = mqttraw.RawClient5(b.host, b.port) if v5 else mqttraw.RawClient(b.host, b.port)
    try:
        return c.connect("m-%s" % user, username=user, password=pw).rc
    finally:
        c.close()


@needs_mosquitto
def test_mosquitto_passwd_file_is_a_password_file(broker, tmp_path, antenna_bin):
    pw = tmp_path / "passwd"
    pw.write_text("")
    subprocess.run([MOSQ_PASSWD, "-b", str(pw), "alice", "wonder"], check=True, timeout=10)
    subprocess.run([MOSQ_PASSWD, "-b", str(pw), "bob", "builder"], check=True, timeout=10)
    assert pw.read_text().startswith("alice:$7$")
    b = broker(auth={"password_file": str(pw)})
    assert connack(b, "alice", "wonder") == 0
    assert connack(b, "bob", "builder") == 0
    assert connack(b, "alice", "builder") == 0x86      # bad user name or password
    # the same file keeps working when antenna passwd adds a user to it
    subprocess.run([antenna_bin, "passwd", "-b", str(pw), "carol", "c4rol"], check=True,
                   timeout=30)
    b.stop()
    b = broker(auth={"password_file": str(pw)})
    assert connack(b, "carol", "c4rol") == 0 and connack(b, "alice", "wonder") == 0


def test_mosquitto_1x_hash_is_refused_with_a_reason(broker, tmp_path, antenna_bin):
    pw = tmp_path / "passwd"
    pw.write_text("old:$6$c2FsdHNhbHQ=$" + "A" * 86 + "==\n")
    p = subprocess.run([antenna_bin, "check", "-c", str(write_conf(tmp_path, pw))],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert "passwd:1" in p.stderr and "$6$" in p.stderr and "too weak" in p.stderr, p.stderr


def write_conf(tmp_path, pw):
    cfg = tmp_path / "antenna.yaml"
    cfg.write_text("listeners:\n  - name: mqtt\n    address: 127.0.0.1\n    port: %d\n"
                   "auth:\n  password_file: %s\npersistence:\n  enabled: false\n"
                   % (free_port(), pw))
    return cfg


class Mosquitto:
    """The real mosquitto on an ephemeral port with a password file."""

    def __init__(self, tmp_path, passwd):
        self.port = free_port()
        conf = tmp_path / "mosquitto.conf"
        # `user`: mosquitto started as root otherwise drops to user
        # "mosquitto", who cannot read the test's 0600 file
        conf.write_text("listener %d 127.0.0.1\nallow_anonymous false\npassword_file %s\n"
                        "persistence false\nuser %s\n"
                        % (self.port, passwd, pwd.getpwuid(os.getuid()).pw_name))
        self.log = open(tmp_path / "mosquitto.log", "wb")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=self.log,
                                     stderr=self.log, stdin=subprocess.DEVNULL)
        wait_for(lambda: port_accepts("127.0.0.1", self.port) or self.proc.poll() is not None,
                 10, what="mosquitto listening")
        assert self.proc.poll() is None, "mosquitto exited"

    def connack(self, user, pw):
        c = mqttraw.RawClient("127.0.0.1", self.port)
        try:
            return c.connect("x", username=user, password=pw).rc
        finally:
            c.close()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@needs_mosquitto
def test_antenna_passwd_M_writes_what_mosquitto_reads(tmp_path, antenna_bin, broker):
    pw = tmp_path / "passwd"
    subprocess.run([antenna_bin, "passwd", "-M", "-b", str(pw), "dora", "expl0rer"],
                   check=True, timeout=30)
    assert pw.read_text().startswith("dora:$7$")
    m = Mosquitto(tmp_path, pw)
    try:
        assert m.connack("dora", "expl0rer") == 0
        assert m.connack("dora", "wrong") == 5             # not authorized (3.1.1)
    finally:
        m.stop()
    b = broker(auth={"password_file": str(pw)})            # and antenna reads it too
    assert connack(b, "dora", "expl0rer") == 0
    assert connack(b, "dora", "wrong") == 0x86


def api_status(b, user, pw):
    conn = http.client.HTTPConnection("127.0.0.1", b.api_port, timeout=10)
    try:
        tok = base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()
        conn.request("GET", "/api/v1/info", headers={"Authorization": "Basic " + tok})
        return conn.getresponse().status
    finally:
        conn.close()


def test_api_users_file_takes_antenna_passwd_output(broker, tmp_path, antenna_bin):
    users = tmp_path / "users"
    subprocess.run([antenna_bin, "passwd", "-b", str(users), "admin", "s3cret"], check=True,
                   timeout=30)
    assert users.read_text().startswith("admin:$scram-sha-512$")
    b = broker(api={"users_file": str(users)})
    wait_for(lambda: b.api_port, 10, what="API port known")
    assert api_status(b, "admin", "s3cret") == 200
    assert api_status(b, "admin", "wrong") == 401
    assert api_status(b, "nobody", "s3cret") == 401


MOSQ_ACL = """\
# Mosquitto ACL file, as written for mosquitto: this comment has many words in it
topic read public/#

# alice's own topics
user alice
topic readwrite alice/#
topic deny alice/secret
topic write shared/in

pattern write devices/%u/up
pattern read devices/%c/down
"""


@needs_mosquitto
def test_mosquitto_acl_file_means_what_it_means_in_mosquitto(broker, tmp_path):
    pw = tmp_path / "passwd"
    pw.write_text("")
    subprocess.run([MOSQ_PASSWD, "-b", str(pw), "alice", "a"], check=True, timeout=10)
    subprocess.run([MOSQ_PASSWD, "-b", str(pw), "bob", "b"], check=True, timeout=10)
    acl = tmp_path / "acl"
    acl.write_text(MOSQ_ACL)
    b = broker(auth={"password_file": str(pw), "acl_file": str(acl)})
    anon = c5(b, "anon")
    alice = c5(b, "alice-1", "alice", "a")
    bob = c5(b, "bob-1", "bob", "b")
    # the section before any user line: clients without a user name only
    assert anon.subscribe(1, [("public/#", 0)]).codes == [0]
    assert alice.subscribe(1, [("public/#", 0)]).codes == [0x87]
    assert anon.publish("public/x", b"1", qos=1, pid=1).rc == 0x87       # read only
    # alice: readwrite alice/#, except the deny, wherever it is written
    assert alice.publish("alice/x", b"1", qos=1, pid=2).rc in (0, 0x10)
    assert alice.publish("alice/secret", b"1", qos=1, pid=3).rc == 0x87
    assert alice.subscribe(2, [("alice/secret", 0)]).codes == [0x87]
    assert alice.publish("shared/in", b"1", qos=1, pid=4).rc in (0, 0x10)
    assert bob.publish("alice/x", b"1", qos=1, pid=5).rc == 0x87
    # patterns: every client, %u and %c
    assert bob.publish("devices/bob/up", b"1", qos=1, pid=6).rc in (0, 0x10)
    assert bob.publish("devices/alice/up", b"1", qos=1, pid=7).rc == 0x87
    assert bob.subscribe(3, [("devices/bob-1/down", 0)]).codes == [0]
    assert bob.subscribe(4, [("devices/alice-1/down", 0)]).codes == [0x87]
    for c in (anon, alice, bob):
        c.disconnect()
