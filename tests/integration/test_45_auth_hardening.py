"""Authentication hardening (issue 13 items 4, 5, 11, 12 and the defaults):
SCRAM without pass-the-hash, bans that an attacker's own login does not
reset (on by default on public listeners), no user enumeration by timing or
by SCRAM's answers, password hashing off the worker threads with a cache of
successful checks, JWT exp/aud/iss/required claims, and a public listener
without backends that refuses credentials.  Real broker, raw clients."""

import base64
import hashlib
import hmac
import os
import signal
import socket
import statistics
import threading
import time
import urllib.error
import urllib.request

import pytest

import mqttraw
from authutil import jwt_hs256, paho_connack, pbkdf2_line, scram_line
from mqttraw import (AUTH, AUTHENTICATION_DATA as DATA, AUTHENTICATION_METHOD as METHOD,
                     CONNACK, auth5, connect5)

pytestmark = pytest.mark.antenna_only

M = "SCRAM-SHA-512"
V5 = 5


def line_fields(line):
    """user, scheme, iterations, salt, key1[, key2] of a password-file line."""
    user, h = line.split(":", 1)
    parts = h.split("$")
    return user, parts[1], int(parts[2]), [base64.b64decode(p) for p in parts[3:]]


class SaltedScram(mqttraw.ScramClient):
    """A SCRAM client that uses `salted` as its SaltedPassword: the attacker
    who stole the password file and knows no password."""

    def __init__(self, user, salted):
        super().__init__(user, "unknown")
        self.salted = salted

    def final(self, server_first, password=None):
        sf = server_first.decode()
        attrs = dict(kv.split("=", 1) for kv in sf.split(","))
        without_proof = "c=biws,r=%s" % attrs["r"]
        auth_msg = ("%s,%s,%s" % (self.bare, sf, without_proof)).encode()
        client_key = hmac.new(self.salted, b"Client Key", hashlib.sha512).digest()
        stored = hashlib.sha512(client_key).digest()
        sig = hmac.new(stored, auth_msg, hashlib.sha512).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        return ("%s,p=%s" % (without_proof, base64.b64encode(proof).decode())).encode()


def scram_try(b, client, cid):
    """The whole exchange: (server-first, CONNACK reason code)."""
    c = mqttraw.RawClient5(b.host, b.port)
    try:
        c.send(connect5(cid, props=[(METHOD, M), (DATA, client.first())]))
        p = c.recv()
        if p.type == CONNACK:
            return None, p.rc
        assert p.type == AUTH and p.rc == 0x18, p
        sf = p.props.get(DATA)
        c.send(auth5(0x18, [(METHOD, M), (DATA, client.final(sf))]))
        return sf, c.recv_type(CONNACK).rc
    finally:
        c.close()


# ------------------------------------------------------------ item 4: SCRAM

def test_scram_stolen_password_file_does_not_log_in(broker, tmp_path):
    alice = scram_line("alice", "wonderland")       # what `antenna passwd` writes
    bob = pbkdf2_line("bob", "builder")              # an older line
    pw = tmp_path / "passwd"
    pw.write_text(alice + "\n" + bob + "\n")
    b = broker(auth={"password_file": str(pw)}, mqtt={"allow_anonymous": False})
    # the older line's hash was SCRAM's SaltedPassword: it logged in alone
    _, _, _, (salt, dk) = line_fields(bob)
    sf, rc = scram_try(b, SaltedScram("bob", dk), "thief-1")
    assert sf is not None and rc == 0x86
    b.wait_log(r"SCRAM-SHA-512 refused for user 'bob'.*run `antenna passwd`")
    # bob's password still works on a plain CONNECT, not through SCRAM
    assert paho_connack(b, "bob", "builder") == 0
    assert scram_try(b, mqttraw.ScramClient("bob", "builder"), "bob-scram")[1] == 0x86
    # the new line: neither key is a SaltedPassword, nor a password
    _, scheme, _, (salt, stored, server) = line_fields(alice)
    assert scheme == "scram-sha-512"
    for i, k in enumerate((stored, server)):
        assert scram_try(b, SaltedScram("alice", k), "thief-%d" % (i + 2))[1] == 0x86
    assert paho_connack(b, "alice", alice.split(":", 1)[1]) == 4
    # the password does log in, both ways
    sf, rc = scram_try(b, mqttraw.ScramClient("alice", "wonderland"), "alice-scram")
    assert rc == 0
    assert paho_connack(b, "alice", "wonderland") == 0


# ------------------------------------------------------------ item 5: bans

class SrcClient(mqttraw.RawClient5):
    """A raw MQTT 5 client from a chosen loopback source address."""

    def __init__(self, host, port, src):
        self.sock = socket.create_connection((host, port), timeout=5, source_address=(src, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.closed = False
        self.backlog = []


def connack_from(b, src, user, password, port=None):
    c = SrcClient(b.host, port or b.port, src)
    try:
        return c.connect("c-%s-%s" % (src, user), username=user, password=password,
                         timeout=5).rc
    finally:
        c.close()


@pytest.fixture
def two_users(tmp_path):
    pw = tmp_path / "passwd"
    pw.write_text(scram_line("victim", "secret-v") + "\n" + scram_line("mallory", "mine") + "\n")
    return pw


def test_own_login_does_not_reset_the_ban_and_public_listeners_ban_by_default(broker,
                                                                               two_users):
    # listener 0 is public (bound to 0.0.0.0, reached through 127.0.0.1);
    # listener 1 is loopback: no ban there by default.  Nothing about the
    # ban is configured but the delay.
    b = broker(listener={"address": "0.0.0.0"}, extra_listeners=1,
               auth={"password_file": str(two_users), "ban": {"delay_ms": 50}},
               mqtt={"allow_anonymous": False})
    banned_after = None
    for i in range(80):  # 80 guesses, the attacker's own login every four
        rc = connack_from(b, "127.0.0.1", "victim", "guess-%d" % i)
        if rc == 0x8A:
            banned_after = i
            break
        assert rc == 0x86
        if i % 4 == 3:
            rc = connack_from(b, "127.0.0.1", "mallory", "mine")
            if rc == 0x8A:
                banned_after = i
                break
            assert rc == 0
    assert banned_after is not None and banned_after <= 12, banned_after
    b.wait_log(r"127\.0\.0\.1:\d+: banned for 300 s after 10 failed logins")
    b.wait_log(r"user 'victim' locked for 300 s")
    # the address is banned, even with a right password
    assert connack_from(b, "127.0.0.1", "mallory", "mine") == 0x8A
    # another address: the victim's name is locked, other users are not
    assert connack_from(b, "127.0.0.2", "victim", "secret-v") == 0x8A
    assert connack_from(b, "127.0.0.2", "mallory", "mine") == 0
    # the loopback listener bans nobody by default
    lo = b.ports[1]
    for i in range(15):
        assert connack_from(b, "127.0.0.3", "mallory", "no-%d" % i, port=lo) == 0x86
    assert connack_from(b, "127.0.0.3", "mallory", "mine", port=lo) == 0


# ------------------------------------------------------------ defaults: public listener

def test_public_listener_without_backend_refuses_credentials(broker):
    b = broker(listener={"address": "0.0.0.0"}, extra_listeners=1)
    b.wait_log(r"listener 'mqtt' \(0\.0\.0\.0 port \d+\) is not loopback and no "
               r"authentication backend is configured: clients with a user name or password "
               r"are REFUSED")
    assert paho_connack(b, "anyone", "anything") == 4
    assert paho_connack(b, "anyone", "anything", protocol=V5) == 0x86
    assert paho_connack(b) == 5  # anonymous: allow_anonymous is off (a public listener)
    # the loopback listener keeps today's behaviour for local tools
    c = mqttraw.RawClient(b.host, b.ports[1])
    assert c.connect("local", username="anyone", password="anything").rc == 0
    c.close()
    # auth.default: allow says so explicitly
    b2 = broker(listener={"address": "0.0.0.0"}, auth={"default": "allow"})
    assert paho_connack(b2, "anyone", "anything") == 0
    assert "is not loopback" not in b2.log_text()


# ------------------------------------------------------------ item 11: enumeration

def timed_connack(b, user, password):
    c = mqttraw.RawClient(b.host, b.port)
    try:
        t0 = time.perf_counter()
        rc = c.connect("t", username=user, password=password, timeout=10).rc
        return time.perf_counter() - t0, rc
    finally:
        c.close()


@pytest.fixture
def realistic(tmp_path):
    """alice with the default 10,000 iterations (the broker's own line)."""
    from conftest import ANTENNA_BIN
    import subprocess
    pw = tmp_path / "passwd"
    r = subprocess.run([ANTENNA_BIN, "passwd", "-b", str(pw), "alice", "wonderland"],
                       timeout=30, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return pw


def test_unknown_and_known_users_answer_alike(broker, realistic):
    b = broker(auth={"password_file": str(realistic)}, mqtt={"allow_anonymous": False})
    known, unknown = [], []
    for i in range(9):  # interleaved, so load on the machine hits both alike
        t, rc = timed_connack(b, "alice", "wrong-%d" % i)
        assert rc == 4
        known.append(t)
        t, rc = timed_connack(b, "nobody-%d" % i, "wrong")
        assert rc == 4
        unknown.append(t)
    mk, mu = statistics.median(known), statistics.median(unknown)
    # before: 0.3 ms against 15+ ms; now both cost one PBKDF2
    assert mu >= 0.4 * mk, "unknown %.2f ms, known %.2f ms" % (mu * 1e3, mk * 1e3)
    # SCRAM: an unknown user's server-first looks like a known one's, and
    # its fake salt is the same on every try
    shapes = {}
    for user in ("alice", "nobody", "nobody"):
        c = mqttraw.RawClient5(b.host, b.port)
        s = mqttraw.ScramClient(user, "x")
        c.send(connect5("s-" + user, props=[(METHOD, M), (DATA, s.first())]))
        a = c.recv_type(AUTH)
        attrs = dict(kv.split("=", 1) for kv in a.props.get(DATA).decode().split(","))
        assert list(attrs) == ["r", "s", "i"] and attrs["r"].startswith(s.nonce)
        assert len(attrs["r"]) == len(s.nonce) + 24
        shapes.setdefault(user, []).append((len(base64.b64decode(attrs["s"])), attrs["i"],
                                            attrs["s"]))
        c.send(auth5(0x18, [(METHOD, M), (DATA, s.final(a.props.get(DATA)))]))
        assert c.recv_type(CONNACK).rc == 0x86
        c.close()
    assert shapes["alice"][0][:2] == shapes["nobody"][0][:2] == (16, "10000")
    assert shapes["nobody"][0] == shapes["nobody"][1]


def mosquitto7_line(user, password, iterations, salt=None):
    salt = salt or os.urandom(12)
    dk = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return "%s:$7$%d$%s$%s" % (user, iterations, base64.b64encode(salt).decode(),
                               base64.b64encode(dk).decode())


def test_api_basic_auth_unknown_user_costs_the_same(broker, tmp_path):
    users = tmp_path / "users"
    users.write_text(mosquitto7_line("admin", "s3cret", 20000) + "\n")
    b = broker(api={"users_file": str(users)})

    def timed(cred):
        req = urllib.request.Request(b.api_url + "/api/v1/info", headers={
            "Authorization": "Basic " + base64.b64encode(cred.encode()).decode()})
        t0 = time.perf_counter()
        try:
            urllib.request.urlopen(req, timeout=10).read()
            st = 200
        except urllib.error.HTTPError as e:
            st = e.code
        return time.perf_counter() - t0, st

    known, unknown = [], []
    for i in range(7):
        t, st = timed("admin:wrong-%d" % i)
        assert st == 401
        known.append(t)
        t, st = timed("nobody-%d:wrong" % i)
        assert st == 401
        unknown.append(t)
    assert timed("admin:s3cret")[1] == 200
    mk, mu = statistics.median(known), statistics.median(unknown)
    assert mu >= 0.4 * mk, "unknown %.2f ms, known %.2f ms" % (mu * 1e3, mk * 1e3)


# ------------------------------------------------------------ item 12: hashing off the workers

def flood(b, stop, counts, sockets=24, rounds=40):
    """Wrong-password CONNECTs in bursts of `sockets` connections, until
    `stop` is set or `rounds` bursts are done."""
    for _ in range(rounds):
        if stop.is_set():
            return
        conns = []
        for k in range(sockets):
            try:
                s = socket.create_connection((b.host, b.port), timeout=5)
                s.sendall(mqttraw.connect("f%d" % k, username="alice", password="bad"))
                conns.append(s)
            except OSError:
                pass
        for s in conns:
            try:
                s.settimeout(10)
                s.recv(16)
                counts[0] += 1
            except OSError:
                pass
            s.close()


def sys_value(b, topic, want, timeout=8.0):
    """Wait until the retained-or-periodic $SYS topic reaches `want`."""
    c = mqttraw.RawClient(b.host, b.port)
    try:
        assert c.connect("sys-%s" % topic.rsplit("/", 1)[-1], username="alice",
                         password="wonderland").rc == 0
        c.subscribe(1, [(topic, 0)])
        deadline = time.monotonic() + timeout
        v = None
        while time.monotonic() < deadline:
            try:
                p = c.recv_publish(timeout=max(0.1, deadline - time.monotonic()))
            except mqttraw.Timeout:
                break
            v = int(p.payload)
            if v >= want:
                return v
        raise AssertionError("%s: %r, wanted >= %d" % (topic, v, want))
    finally:
        c.close()


def test_wrong_password_flood_does_not_stall_other_clients(broker, realistic):
    b = broker(auth={"password_file": str(realistic)}, mqtt={"sys_interval": 1})
    pinger = mqttraw.RawClient(b.host, b.port)
    assert pinger.connect("pinger").rc == 0  # anonymous: allowed on loopback
    stop, counts = threading.Event(), [0]
    floods = [threading.Thread(target=flood, args=(b, stop, counts)) for _ in range(2)]
    for t in floods:
        t.start()
    rtts = []
    try:
        time.sleep(0.3)  # let the flood fill the broker's queues
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and len(rtts) < 60:
            t0 = time.perf_counter()
            assert pinger.is_open(timeout=5.0)
            rtts.append(time.perf_counter() - t0)
            time.sleep(0.03)
    finally:
        stop.set()
        for t in floods:
            t.join(30)
    assert counts[0] >= 20, "the flood did not run (%d refusals)" % counts[0]
    med = statistics.median(rtts)
    # before: PBKDF2 on the workers, pings waited behind it (hundreds of ms)
    assert med < 0.05, "median ping %.1f ms during the flood (%d pings, %d refusals)" % (
        med * 1e3, len(rtts), counts[0])
    assert b.running()
    pinger.close()


def test_reconnects_are_served_from_the_cache_until_a_reload(broker, tmp_path):
    pw = tmp_path / "passwd"
    pw.write_text(scram_line("alice", "wonderland") + "\n")
    b = broker(auth={"password_file": str(pw)}, mqtt={"sys_interval": 1})
    for _ in range(3):
        assert paho_connack(b, "alice", "wonderland") == 0
    # two of the three (and the $SYS reader's own CONNECT) hit the cache
    sys_value(b, "$SYS/broker/auth/password/cache_hits", 2)
    # a wrong password is never cached, and a reload forgets the cache
    assert paho_connack(b, "alice", "wonder") == 4
    pw.write_text(scram_line("alice", "looking-glass") + "\n")
    b.proc.send_signal(signal.SIGHUP)
    b.wait_log(r"password file .* reloaded: 1 users")
    assert paho_connack(b, "alice", "wonderland") == 4
    assert paho_connack(b, "alice", "looking-glass") == 0


# ------------------------------------------------------------ JWT

SECRET = "hardening-secret-of-some-length"


def test_jwt_exp_audience_issuer_required_claims(broker):
    now = int(time.time())
    b = broker(auth={"jwt": {"secret": SECRET, "audience": "antenna", "issuer": "https://idp",
                             "required_claims": ["tenant", "jti"]}},
               mqtt={"allow_anonymous": False})
    good = {"sub": "d1", "exp": now + 60, "aud": "antenna", "iss": "https://idp",
            "tenant": "t1", "jti": "1"}
    assert paho_connack(b, "x", jwt_hs256(good, SECRET)) == 0
    assert paho_connack(b, "x", jwt_hs256(dict(good, aud=["other", "antenna"]), SECRET)) == 0
    cases = [
        ({k: v for k, v in good.items() if k != "exp"}, r"no exp claim"),
        (dict(good, aud="other"), r"aud does not name auth\.jwt\.audience"),
        (dict(good, aud=["a", "b"]), r"aud does not name"),
        ({k: v for k, v in good.items() if k != "aud"}, r"aud does not name"),
        (dict(good, iss="https://evil"), r"iss is not auth\.jwt\.issuer"),
        ({k: v for k, v in good.items() if k != "iss"}, r"iss is not"),
        ({k: v for k, v in good.items() if k != "tenant"}, r"required_claims is missing"),
        (dict(good, jti=None), r"required_claims is missing"),
    ]
    for claims, why in cases:
        assert paho_connack(b, "x", jwt_hs256(claims, SECRET)) == 4, claims
        b.wait_log(r"JWT refused .*" + why)
    # without the checks configured, only exp is required (by default)
    b2 = broker(auth={"jwt": {"secret": SECRET}}, mqtt={"allow_anonymous": False})
    assert paho_connack(b2, "x", jwt_hs256({"sub": "d2", "exp": now + 60}, SECRET)) == 0
    assert paho_connack(b2, "x", jwt_hs256({"sub": "d2"}, SECRET)) == 4
    b3 = broker(auth={"jwt": {"secret": SECRET, "require_exp": False}},
                mqtt={"allow_anonymous": False})
    assert paho_connack(b3, "x", jwt_hs256({"sub": "d3"}, SECRET)) == 0
