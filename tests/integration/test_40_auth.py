"""Authentication (issue 7, part A): the password file and `antenna passwd`,
JWT (HS256, RS256 with a PEM key, ES256 with a JWKS file), anonymous
clients per listener, SIGHUP reload, brute-force bans.  Real broker, real
paho (3.1.1 and 5) and raw clients."""

import json
import re
import signal
import subprocess
import time

import paho.mqtt.client as mqtt
import pytest

import mqttraw
from authutil import (jwk_of, jwt_hs256, jwt_sign, paho_connack, pbkdf2_line, pem_public,
                      verify_line)
from conftest import ANTENNA_BIN
from test_30_tls import TlsRaw, certs, tls_listener, tls_wrap  # noqa: F401 (certs: a fixture)

pytestmark = pytest.mark.antenna_only

V5 = mqtt.MQTTv5
V311 = mqtt.MQTTv311


def passwd(*args, input=None):
    return subprocess.run([ANTENNA_BIN, "passwd"] + list(args), input=input, timeout=30,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def pwfile(tmp_path):
    p = tmp_path / "passwd"
    p.write_text("# users\n" + pbkdf2_line("alice", "wonderland") + "\n\n" +
                 pbkdf2_line("bob", "builder") + "\n")
    return p


# ------------------------------------------------------------ antenna passwd

def test_passwd_batch_writes_salted_hashes(tmp_path):
    p = tmp_path / "pw"
    r = passwd("-b", "-i", "1000", str(p), "carol", "s3cret")
    assert r.returncode == 0, r.stderr
    r = passwd("-b", "-i", "1000", str(p), "dave", "s3cret")
    assert r.returncode == 0, r.stderr
    lines = p.read_text().splitlines()
    assert len(lines) == 2
    assert "s3cret" not in p.read_text()
    for line, user in zip(lines, ("carol", "dave")):
        assert re.fullmatch(r"%s:\$scram-sha-512\$1000(\$[A-Za-z0-9+/=]+){3}" % user,
                            line), line
        assert verify_line(line, "s3cret")
        assert not verify_line(line, "s3cret!")
    # same password, different salts
    assert lines[0].split("$")[3] != lines[1].split("$")[3]
    assert oct(p.stat().st_mode & 0o777) == "0o600"
    # replace carol, delete dave
    assert passwd("-b", str(p), "carol", "other").returncode == 0
    assert passwd("-D", str(p), "dave").returncode == 0
    lines = p.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("carol:$scram-sha-512$10000$")
    assert verify_line(lines[0], "other")
    assert passwd("-D", str(p), "dave").returncode == 1  # no such user


def test_passwd_reads_stdin_and_rejects_bad_usage(tmp_path):
    p = tmp_path / "pw"
    r = passwd("-i", "1000", str(p), "eve", input="from-stdin\n")
    assert r.returncode == 0, r.stderr
    assert verify_line(p.read_text().strip(), "from-stdin")
    assert passwd(str(p)).returncode == 2
    assert passwd("-b", str(p), "x").returncode == 2
    assert passwd("-b", str(p), "a:b", "pw").returncode == 2
    assert passwd("-i", "5", str(p), "x", input="pw\n").returncode == 2


# ------------------------------------------------------------ password file

def test_password_file_right_wrong_unknown_v311(broker, pwfile):
    b = broker(auth={"password_file": str(pwfile)})
    assert paho_connack(b, "alice", "wonderland") == 0
    assert paho_connack(b, "bob", "builder") == 0
    assert paho_connack(b, "alice", "wrong") == 4       # bad user name or password
    assert paho_connack(b, "mallory", "wonderland") == 4  # unknown user
    assert paho_connack(b, "alice", None) == 4          # no password
    b.wait_log(r"CONNECT refused \(return code 4\): authentication failed")


def test_password_file_reason_codes_v5(broker, pwfile):
    b = broker(auth={"password_file": str(pwfile)})
    assert paho_connack(b, "alice", "wonderland", protocol=V5) == 0
    assert paho_connack(b, "alice", "nope", protocol=V5) == 0x86
    assert paho_connack(b, "nobody", "x", protocol=V5) == 0x86
    # anonymous is still allowed on a loopback-only broker (mqtt default)
    assert paho_connack(b, protocol=V5) == 0


def test_anonymous_refused_when_disallowed(broker, pwfile):
    b = broker(auth={"password_file": str(pwfile)}, mqtt={"allow_anonymous": False})
    assert paho_connack(b) == 5
    assert paho_connack(b, protocol=V5) == 0x87
    assert paho_connack(b, "alice", "wonderland") == 0


def test_anonymous_off_by_default_on_a_public_listener(broker, pwfile):
    """A listener that is not loopback-only: anonymous is off unless said."""
    b = broker(listener={"address": "0.0.0.0"}, auth={"password_file": str(pwfile)})
    assert paho_connack(b) == 5
    assert paho_connack(b, "alice", "wonderland") == 0


def test_allow_anonymous_per_listener(broker, pwfile):
    b = broker(extra_listeners=1, listener={"allow_anonymous": True},
               mqtt={"allow_anonymous": False}, auth={"password_file": str(pwfile)})
    assert paho_connack(b) == 0  # the first listener allows it
    c = mqttraw.RawClient(b.host, b.ports[1])
    assert c.connect("anon").rc == 5  # the second one inherits mqtt: false
    c.close()


def test_malformed_password_file_refused_at_start(tmp_path, pwfile):
    bad = tmp_path / "bad"
    bad.write_text(pbkdf2_line("alice", "x") + "\n# fine\nbob:$pbkdf2-sha512$1000$nope\n")
    cfg = tmp_path / "a.yaml"
    cfg.write_text("listeners:\n  - port: 0\nauth:\n  password_file: %s\n" % bad)
    r = subprocess.run([ANTENNA_BIN, "-c", str(cfg)], timeout=20, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    assert r.returncode != 0
    assert "%s:3:" % bad in r.stdout, r.stdout
    cfg.write_text("listeners:\n  - port: 0\nauth:\n  password_file: %s/missing\n" % tmp_path)
    r = subprocess.run([ANTENNA_BIN, "-c", str(cfg)], timeout=20, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    assert r.returncode != 0 and "missing: cannot open" in r.stdout, r.stdout


def test_unknown_backend_refused_at_start(tmp_path):
    cfg = tmp_path / "a.yaml"
    cfg.write_text("listeners:\n  - port: 0\nauth:\n  chain: [password_file, ldap]\n"
                   "  password_file: /nonexistent\n")
    r = subprocess.run([ANTENNA_BIN, "-c", str(cfg)], timeout=20, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    assert r.returncode != 0
    assert "nonexistent" in r.stdout or "ldap" in r.stdout, r.stdout


def test_sighup_reloads_password_file(broker, pwfile):
    b = broker(auth={"password_file": str(pwfile)}, mqtt={"allow_anonymous": False})
    assert paho_connack(b, "carol", "new") == 4
    pwfile.write_text(pbkdf2_line("carol", "new") + "\n")
    b.proc.send_signal(signal.SIGHUP)
    b.wait_log(r"password file .* reloaded: 1 users")
    assert paho_connack(b, "carol", "new") == 0
    assert paho_connack(b, "alice", "wonderland") == 4  # gone from the file
    # a bad file keeps the users in force
    pwfile.write_text("carol\n")
    b.proc.send_signal(signal.SIGHUP)
    b.wait_log(r"password file not reloaded, the previous users stay: .*:1: expected user:hash")
    assert paho_connack(b, "carol", "new") == 0
    assert b.running()


# ------------------------------------------------------------ brute force

def test_brute_force_gets_banned(broker, pwfile):
    b = broker(auth={"password_file": str(pwfile),
                     "ban": {"max_failures": 3, "window_s": 60, "ban_s": 5, "delay_ms": 400}},
               mqtt={"allow_anonymous": False, "sys_interval": 1})
    for _ in range(3):
        assert paho_connack(b, "alice", "guess", protocol=V5) == 0x86
    b.wait_log(r"127\.0\.0\.1:\d+: banned for 5 s after 3 failed logins")
    banned_at = time.monotonic()
    # banned: even the right password is refused, and only after the delay
    t0 = time.monotonic()
    assert paho_connack(b, "alice", "wonderland", protocol=V5) == 0x8A
    assert time.monotonic() - t0 >= 0.35
    assert paho_connack(b, "alice", "wonderland") == 5  # 3.1.1: not authorized
    # counted in $SYS
    sub = mqttraw.RawClient(b.host, b.port)
    # the sub client itself is refused while banned: wait the ban out first
    time.sleep(max(0.0, banned_at + 5.3 - time.monotonic()))
    assert sub.connect("sys", username="alice", password="wonderland").rc == 0
    sub.subscribe(1, [("$SYS/broker/auth/banned", 0)])
    p = sub.recv_publish(timeout=5)
    assert int(p.payload) >= 2
    sub.close()
    assert paho_connack(b, "alice", "wonderland") == 0


def test_failures_below_the_limit_do_not_ban(broker, pwfile):
    # a success resets its user's count, not the address's (issue 13 item 5:
    # see test_45_auth_hardening.py), so 4 failures stay below 5
    b = broker(auth={"password_file": str(pwfile),
                     "ban": {"max_failures": 5, "window_s": 60, "ban_s": 60}})
    for _ in range(2):
        assert paho_connack(b, "alice", "guess") == 4
    assert paho_connack(b, "alice", "wonderland") == 0
    for _ in range(2):
        assert paho_connack(b, "alice", "guess") == 4
    assert paho_connack(b, "alice", "wonderland") == 0
    assert "banned" not in b.log_text() and "locked" not in b.log_text()


# ------------------------------------------------------------ JWT

SECRET = "a-test-secret-of-some-length"


def claims(**kw):
    c = {"sub": "device-7", "exp": int(time.time()) + 300}
    c.update(kw)
    return c


def test_jwt_hs256(broker):
    b = broker(auth={"jwt": {"secret": SECRET}}, mqtt={"allow_anonymous": False})
    ok = jwt_hs256(claims(), SECRET)
    assert paho_connack(b, "anything", ok, client_id="j1") == 0
    b.wait_log(r"client 'j1' .*connected .*user 'device-7'")
    assert paho_connack(b, "x", ok, protocol=V5) == 0
    now = int(time.time())
    assert paho_connack(b, "x", jwt_hs256(claims(exp=now - 10), SECRET)) == 4  # expired
    assert paho_connack(b, "x", jwt_hs256(claims(nbf=now + 600), SECRET), protocol=V5) == 0x86
    assert paho_connack(b, "x", jwt_hs256(claims(), "another-secret")) == 4   # wrong key
    h, p, s = ok.split(".")
    forged = json.loads(mqttraw_b64(p))
    forged["sub"] = "admin"
    from authutil import b64u
    tampered = h + "." + b64u(json.dumps(forged).encode()) + "." + s
    assert paho_connack(b, "x", tampered) == 4
    none = b64u(b'{"alg":"none","typ":"JWT"}') + "." + p + "."
    assert paho_connack(b, "x", none) == 4
    assert paho_connack(b, "x", jwt_hs256({"exp": now + 60}, SECRET)) == 4  # no sub claim
    assert paho_connack(b, "x", "not-a-token") == 4  # nobody else to ask: default deny
    b.wait_log(r"JWT refused .*expired \(exp\)")
    b.wait_log(r"JWT refused .*not valid yet \(nbf\)")
    b.wait_log(r"JWT refused .*header alg is not the configured one")


def mqttraw_b64(part):
    import base64
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_jwt_in_username_field(broker):
    b = broker(auth={"jwt": {"secret": SECRET, "field": "username", "username_claim": "uid"}},
               mqtt={"allow_anonymous": False})
    tok = jwt_hs256({"uid": "sensor-9", "exp": int(time.time()) + 60}, SECRET)
    assert paho_connack(b, tok, None, client_id="u1") == 0
    b.wait_log(r"client 'u1' .*user 'sensor-9'")


def test_password_file_then_jwt_chain(broker, pwfile):
    b = broker(auth={"chain": ["password_file", "jwt"], "password_file": str(pwfile),
                     "jwt": {"secret": SECRET}}, mqtt={"allow_anonymous": False})
    assert paho_connack(b, "alice", "wonderland") == 0
    assert paho_connack(b, "device", jwt_hs256(claims(), SECRET)) == 0
    assert paho_connack(b, "alice", jwt_hs256(claims(), SECRET)) == 4  # alice is the file's
    assert paho_connack(b, "zed", "plain") == 4


@pytest.fixture
def keys():
    crypto = pytest.importorskip("cryptography")
    assert crypto
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    return {"rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ec": ec.generate_private_key(ec.SECP256R1()),
            "ec2": ec.generate_private_key(ec.SECP256R1())}


def test_jwt_rs256_public_key_file(broker, keys, tmp_path):
    pem = tmp_path / "pub.pem"
    pem.write_bytes(pem_public(keys["rsa"]))
    b = broker(auth={"jwt": {"alg": "RS256", "public_key_file": str(pem)}},
               mqtt={"allow_anonymous": False})
    assert paho_connack(b, "x", jwt_sign(claims(), keys["rsa"], "RS256")) == 0
    assert paho_connack(b, "x", jwt_sign(claims(exp=1), keys["rsa"], "RS256")) == 4
    # HS256 signed with the public key as secret: the alg confusion attack
    assert paho_connack(b, "x", jwt_hs256(claims(), pem.read_text())) == 4
    assert paho_connack(b, "x", jwt_sign(claims(), keys["ec"], "ES256")) == 4


def test_jwt_es256_jwks(broker, keys, tmp_path):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk_of(keys["ec"].public_key(), "k1"),
                                         jwk_of(keys["ec2"].public_key(), "k2")]}))
    b = broker(auth={"jwt": {"alg": "ES256", "jwks_file": str(jwks)}},
               mqtt={"allow_anonymous": False})
    assert paho_connack(b, "x", jwt_sign(claims(), keys["ec"], "ES256", kid="k1")) == 0
    assert paho_connack(b, "x", jwt_sign(claims(), keys["ec2"], "ES256", kid="k2")) == 0
    assert paho_connack(b, "x", jwt_sign(claims(), keys["ec2"], "ES256")) == 0  # no kid: try all
    assert paho_connack(b, "x", jwt_sign(claims(), keys["ec2"], "ES256", kid="k1"),
                        protocol=V5) == 0x86  # wrong kid
    assert paho_connack(b, "x", jwt_sign(claims(exp=5), keys["ec"], "ES256", kid="k1")) == 4


def test_jwt_rs256_jwks(broker, keys, tmp_path):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk_of(keys["rsa"].public_key(), "r1")]}))
    b = broker(auth={"jwt": {"alg": "RS256", "jwks_file": str(jwks)}},
               mqtt={"allow_anonymous": False})
    assert paho_connack(b, "x", jwt_sign(claims(), keys["rsa"], "RS256", kid="r1")) == 0


def test_bad_jwks_refused_at_start(tmp_path):
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": [{"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}]}')
    cfg = tmp_path / "a.yaml"
    cfg.write_text("listeners:\n  - port: 0\nauth:\n  jwt:\n    alg: ES256\n"
                   "    jwks_file: %s\n" % jwks)
    r = subprocess.run([ANTENNA_BIN, "-c", str(cfg)], timeout=20, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    assert r.returncode != 0 and "jwks.json: key 0: bad EC key" in r.stdout, r.stdout


# ------------------------------------------------------------ asynchronous answers

class SlowHook:
    """A webhook (python http.server on loopback) that answers after
    `delay` seconds: 200 (allow) unless the body names user 'bad'."""

    def __init__(self, delay):
        import http.server
        import threading
        hook = self
        self.delay = delay
        self.calls = 0

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.calls += 1
                if b'"connect"' in body:
                    time.sleep(hook.delay)
                deny = b'"username": "bad"' in body or b'"username":"bad"' in body
                self.send_response(403 if deny else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d/auth" % self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def slow_hook():
    h = SlowHook(0.6)
    yield h
    h.close()


def test_connect_waits_for_an_async_answer(broker, slow_hook):
    """The CONNECT waits for the webhook; the packets pipelined behind it
    are kept and handled once it is allowed; other clients are not held."""
    b = broker(auth={"chain": ["http"], "http": {"url": slow_hook.url, "timeout_ms": 5000}},
               mqtt={"allow_anonymous": False})
    sub = mqttraw.RawClient(b.host, b.port)
    t0 = time.monotonic()
    # CONNECT, SUBSCRIBE and PUBLISH in one write: all wait for the answer
    sub.send(mqttraw.connect("pipelined", username="u", password="p") +
             mqttraw.subscribe(1, [("p/t", 1)]) +
             mqttraw.publish("p/t", b"to myself", qos=1, pid=2))
    assert sub.recv_type(mqttraw.CONNACK).rc == 0
    assert time.monotonic() - t0 >= 0.5
    assert sub.recv_type(mqttraw.SUBACK).codes == [1]
    got = sub.wait_for(lambda p: p.type == mqttraw.PUBLISH, what="PUBLISH")
    assert got.payload == b"to myself"
    # a refusal through the same path
    bad = mqttraw.RawClient(b.host, b.port)
    assert bad.connect("b1", username="bad", password="p").rc == 4
    bad.close()
    v5 = mqttraw.RawClient5(b.host, b.port)
    assert v5.connect("b2", username="bad", password="p").rc == 0x86
    v5.close()
    sub.disconnect()


def test_connection_closed_while_waiting(broker, slow_hook):
    """A client that goes before the answer: the late answer finds no
    connection (no crash, no leak under ASan), the broker goes on."""
    b = broker(auth={"chain": ["http"], "http": {"url": slow_hook.url, "timeout_ms": 5000}},
               mqtt={"allow_anonymous": False})
    for i in range(5):
        c = mqttraw.RawClient(b.host, b.port)
        c.send(mqttraw.connect("gone-%d" % i, username="u", password="p"))
        c.close()
    time.sleep(1.0)  # the answers arrive after the clients left
    c = mqttraw.RawClient(b.host, b.port)
    assert c.connect("after", username="u", password="p").rc == 0
    c.disconnect()
    assert b.running()


def test_async_answer_later_than_connect_timeout(broker):
    hook = SlowHook(2.5)
    try:
        b = broker(auth={"chain": ["http"], "http": {"url": hook.url, "timeout_ms": 10000}},
                   mqtt={"allow_anonymous": False, "connect_timeout": 1})
        c = mqttraw.RawClient(b.host, b.port)
        c.send(mqttraw.connect("late", username="u", password="p"))
        got = c.wait_closed(timeout=5)
        assert not any(p.type == mqttraw.CONNACK for p in got)
        b.wait_log(r"authentication not answered within connect_timeout")
        time.sleep(2.0)  # the answer comes for a connection that is gone
        assert b.running()
    finally:
        hook.close()


# ------------------------------------------------------------ client certificates

def test_cert_backend(broker, pwfile, certs):
    b = broker(listener=tls_listener(certs, ca_file=certs.ca_crt, cert_username="cn"),
               mqtt={"allow_anonymous": False},
               auth={"chain": ["cert", "password_file"], "password_file": str(pwfile)})
    c = TlsRaw(tls_wrap(b, certs, (certs.device__42_crt, certs.device__42_key)))
    assert c.connect("dev").rc == 0  # the certificate alone
    b.wait_log(r"client 'dev' .*connected .*user 'device-42'")
    c.disconnect()
    c = TlsRaw(tls_wrap(b, certs))  # no certificate: the password file decides
    assert c.connect("pw", username="alice", password="wonderland").rc == 0
    c.disconnect()
    c = TlsRaw(tls_wrap(b, certs))
    assert c.connect("pw2", username="alice", password="nope").rc == 4
    c.close()
