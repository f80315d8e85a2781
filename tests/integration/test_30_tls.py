"""MQTT over TLS (transport: tls): certificates are generated per session
into a tmp dir (never committed): a CA, a server certificate for
localhost/127.0.0.1/::1, a client certificate signed by the CA, one signed
by an unknown CA, and an expired one."""

import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

import mqttraw

pytestmark = [pytest.mark.antenna_only,
              pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")]

MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"


def run(*args, cwd=None, check=True, timeout=30, input=None):
    return subprocess.run(list(args), cwd=cwd, check=check, timeout=timeout, input=input,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


class Certs:
    def __init__(self, d):
        self.d = d

    def __getattr__(self, name):  # certs.ca_crt -> <dir>/ca.crt
        stem, ext = name.rsplit("_", 1)
        return str(self.d / ("%s.%s" % (stem.replace("__", "-"), ext)))


def make_ca(d, name):
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "%s.key" % name,
        "-out", "%s.crt" % name, "-days", "30", "-subj", "/CN=antenna test %s" % name,
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def make_leaf(d, name, ca, ext):
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "%s.key" % name,
        "-out", "%s.csr" % name, "-subj", "/CN=%s" % name, cwd=d)
    (d / ("%s.ext" % name)).write_text(ext + "\n")
    run("openssl", "x509", "-req", "-in", "%s.csr" % name, "-CA", "%s.crt" % ca,
        "-CAkey", "%s.key" % ca, "-CAcreateserial", "-out", "%s.crt" % name, "-days", "30",
        "-extfile", "%s.ext" % name, cwd=d)


def make_expired(d, name, ca):
    """`openssl ca` takes explicit -startdate/-enddate (OpenSSL 3.0's x509
    has no -not_before/-not_after)."""
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "%s.key" % name,
        "-out", "%s.csr" % name, "-subj", "/CN=%s" % name, cwd=d)
    db = d / "cadb"
    db.mkdir(exist_ok=True)
    (db / "index.txt").write_text("")
    (db / "serial").write_text("1000\n")
    (d / "ca.cnf").write_text(
        "[ca]\ndefault_ca = test\n"
        "[test]\ndir = %s\ndatabase = $dir/index.txt\nserial = $dir/serial\n"
        "new_certs_dir = $dir\ndefault_md = sha256\npolicy = any\n"
        "unique_subject = no\ncopy_extensions = none\nx509_extensions = leaf\n"
        "[any]\ncommonName = supplied\n"
        "[leaf]\nbasicConstraints = CA:FALSE\nextendedKeyUsage = clientAuth\n" % db)
    run("openssl", "ca", "-batch", "-config", "ca.cnf", "-cert", "%s.crt" % ca,
        "-keyfile", "%s.key" % ca, "-in", "%s.csr" % name, "-out", "%s.crt" % name,
        "-startdate", "20200101000000Z", "-enddate", "20200201000000Z", "-notext", cwd=d)


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    make_ca(d, "ca")
    make_ca(d, "other")
    make_leaf(d, "server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n"
              "extendedKeyUsage=serverAuth")
    make_leaf(d, "client", "ca", "extendedKeyUsage=clientAuth")
    # a second server certificate (reload on SIGHUP), a device certificate
    # whose CN and SANs name a user (cert_username)
    make_leaf(d, "server2", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n"
              "extendedKeyUsage=serverAuth")
    make_leaf(d, "device-42", "ca", "extendedKeyUsage=clientAuth\n"
              "subjectAltName=DNS:dev42.example.com,email:dev42@example.com")
    make_leaf(d, "untrusted", "other", "extendedKeyUsage=clientAuth")
    make_expired(d, "expired", "ca")
    return Certs(d)


def tls_listener(certs, **kw):
    lst = {"transport": "tls", "cert_file": certs.server_crt, "key_file": certs.server_key}
    lst.update(kw)
    return lst


def mutual(certs, **kw):
    return tls_listener(certs, ca_file=certs.ca_crt, require_client_cert=True, **kw)


def pub(b, certs, *extra, topic="tls/t", msg="hello"):
    return run(MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(b.port), "--cafile", certs.ca_crt,
               "-t", topic, "-m", msg, "-q", "1", *extra, check=False, timeout=15)


def sub_one(b, certs, *extra, topic="tls/t"):
    return subprocess.Popen(
        [MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(b.port), "--cafile", certs.ca_crt,
         "-t", topic, "-q", "1", "-C", "1", "-W", "10", "-d", *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_subscribed(b, proc):
    b.wait_log(r"connected \(MQTT", timeout=5)
    time.sleep(0.3)  # SUBACK after CONNACK; mosquitto_sub -d would tell us, buffered


def s_client(b, certs, *extra, data=b""):
    return run("openssl", "s_client", "-connect", "127.0.0.1:%d" % b.port,
               "-CAfile", certs.ca_crt, *extra, input=data, check=False, timeout=15)


def tls_wrap(b, certs, cert=None):
    ctx = ssl.create_default_context(cafile=certs.ca_crt)
    if cert:
        ctx.load_cert_chain(*cert)
    raw = socket.create_connection(("127.0.0.1", b.port), timeout=5)
    return ctx.wrap_socket(raw, server_hostname="localhost")


@pytest.mark.skipif(not shutil.which("mosquitto_sub"), reason="mosquitto-clients not installed")
def test_mosquitto_clients_over_tls(broker, certs):
    b = broker(listener=tls_listener(certs), log={"level": "debug"})
    s = sub_one(b, certs)
    wait_subscribed(b, s)
    r = pub(b, certs)
    assert r.returncode == 0, r.stdout
    out, _ = s.communicate(timeout=15)
    assert b"hello" in out, out
    b.wait_log(r"TLS handshake done \(TLSv1\.[23] ")


@pytest.mark.skipif(not shutil.which("mosquitto_sub"), reason="mosquitto-clients not installed")
def test_mutual_tls_mosquitto(broker, certs):
    b = broker(listener=mutual(certs))
    s = sub_one(b, certs, "--cert", certs.client_crt, "--key", certs.client_key)
    wait_subscribed(b, s)
    r = pub(b, certs, "--cert", certs.client_crt, "--key", certs.client_key)
    assert r.returncode == 0, r.stdout
    out, _ = s.communicate(timeout=15)
    assert b"hello" in out, out
    # no certificate: refused
    r = pub(b, certs)
    assert r.returncode != 0, r.stdout
    b.wait_log(r"TLS handshake failed: .*certificate")


def test_raw_mqtt_over_tls_and_handoff(broker, certs):
    """Python's ssl module, several clients (some move to another worker
    after CONNECT: the TLS state moves with the connection)."""
    b = broker(listener=tls_listener(certs), workers=4)
    socks = []
    for i in range(8):
        s = tls_wrap(b, certs)
        s.sendall(mqttraw.connect("tls-%d" % i) + mqttraw.subscribe(1, [("tls/x", 1)]))
        socks.append(s)
    for s in socks:
        data = b""
        while len(data) < 4 + 5:
            chunk = s.recv(100)
            assert chunk, "closed"
            data += chunk
        assert data[0] == 0x20 and data[3] == 0, data  # CONNACK accepted
        assert data[4] == 0x90, data                   # SUBACK
    socks[0].sendall(mqttraw.publish("tls/x", b"p" * 20000, qos=0))
    for s in socks:
        want = 1 + 3 + 2 + 5 + 20000  # fixed header (3-byte length), topic, payload
        data = b""
        while len(data) < want:
            chunk = s.recv(65536)
            assert chunk, "closed"
            data += chunk
        assert data.endswith(b"p" * 20000)
        s.sendall(mqttraw.disconnect())
        s.close()


def test_paho_tls(broker, certs):
    mqtt = pytest.importorskip("paho.mqtt.client")
    b = broker(listener=mutual(certs))
    got = threading.Event()
    payloads = []
    kw = {}
    if hasattr(mqtt, "CallbackAPIVersion"):
        kw["callback_api_version"] = mqtt.CallbackAPIVersion.VERSION1
    c = mqtt.Client(client_id="paho-tls", **kw)
    c.tls_set(ca_certs=certs.ca_crt, certfile=certs.client_crt, keyfile=certs.client_key)
    subscribed = threading.Event()
    c.on_connect = lambda cl, u, f, rc: cl.subscribe("paho/t", 1)
    c.on_subscribe = lambda *a: subscribed.set()

    def on_message(cl, u, m):
        payloads.append(m.payload)
        got.set()
    c.on_message = on_message
    c.connect("localhost", b.port, 30)
    c.loop_start()
    try:
        assert subscribed.wait(10)
        c.publish("paho/t", b"over tls", qos=1)
        assert got.wait(10)
        assert payloads == [b"over tls"]
    finally:
        c.disconnect()
        c.loop_stop()


def test_untrusted_client_cert_refused(broker, certs):
    b = broker(listener=mutual(certs))
    r = s_client(b, certs, "-cert", certs.untrusted_crt, "-key", certs.untrusted_key,
                 data=mqttraw.connect("untrusted"))
    b.wait_log(r"127\.0\.0\.1:\d+: disconnected: TLS handshake failed: .*certificate")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        s = tls_wrap(b, certs, (certs.untrusted_crt, certs.untrusted_key))
        s.sendall(mqttraw.connect("untrusted"))
        if not s.recv(10):
            raise ConnectionError("closed")
    assert b"CONNACK" not in r.stdout


def test_expired_client_cert_refused(broker, certs):
    b = broker(listener=mutual(certs))
    s_client(b, certs, "-cert", certs.expired_crt, "-key", certs.expired_key,
             data=mqttraw.connect("expired"))
    b.wait_log(r"TLS handshake failed: .*certificate has expired")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        s = tls_wrap(b, certs, (certs.expired_crt, certs.expired_key))
        s.sendall(mqttraw.connect("expired"))
        if not s.recv(10):
            raise ConnectionError("closed")


def test_plain_tcp_on_tls_port_closed(broker, certs):
    b = broker(listener=tls_listener(certs))
    c = b.raw()
    c.sock.sendall(mqttraw.connect("plain"))
    data = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            chunk = c.sock.recv(100)
        except ConnectionError:
            break
        if not chunk:
            break
        data += chunk
    else:
        pytest.fail("still open")
    assert not data.startswith(b"\x20"), data  # no CONNACK; at most a TLS alert
    c.close()
    b.wait_log(r"disconnected: TLS handshake failed")


def test_tls10_refused(broker, certs):
    b = broker(listener=tls_listener(certs))
    r = s_client(b, certs, "-tls1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert b"Cipher is (NONE)" in r.stdout or r.returncode != 0, r.stdout
    b.wait_log(r"TLS handshake failed: unsupported protocol")


def test_tls13_minimum(broker, certs):
    b = broker(listener=tls_listener(certs, tls_min_version="1.3"))
    r = s_client(b, certs, "-tls1_2")
    assert r.returncode != 0, r.stdout
    r = s_client(b, certs, "-tls1_3")
    assert b"TLSv1.3" in r.stdout, r.stdout


@pytest.mark.deadline(30)
def test_handshake_timeout(broker, certs):
    b = broker(listener=tls_listener(certs, handshake_timeout=1))
    s = socket.create_connection(("127.0.0.1", b.port), timeout=5)
    t0 = time.monotonic()
    assert s.recv(10) == b""  # closed by the broker, nothing sent
    assert time.monotonic() - t0 < 4
    s.close()
    b.wait_log(r"disconnected: TLS handshake not completed within handshake_timeout")


def test_session_resumption(broker, certs, tmp_path):
    b = broker(listener=tls_listener(certs, tls_min_version="1.2"))
    sess = str(tmp_path / "sess.pem")
    r = s_client(b, certs, "-tls1_2", "-sess_out", sess)
    assert b"New, TLSv1.2" in r.stdout, r.stdout
    r = s_client(b, certs, "-tls1_2", "-sess_in", sess)
    assert b"Reused, TLSv1.2" in r.stdout, r.stdout


def test_bad_cert_file_exits_1(antenna_bin, tmp_path, certs):
    cfg = tmp_path / "a.yaml"
    cfg.write_text("listeners:\n  - name: secure\n    port: 0\n    transport: tls\n"
                   "    cert_file: %s\n    key_file: %s\n"
                   % (tmp_path / "missing.crt", certs.server_key))
    r = run(antenna_bin, "--config", str(cfg), check=False)
    assert r.returncode == 1, r.stdout
    assert b"listener secure" in r.stdout and b"missing.crt" in r.stdout, r.stdout
    # a key that does not match the certificate
    cfg.write_text("listeners:\n  - name: secure\n    port: 0\n    transport: tls\n"
                   "    cert_file: %s\n    key_file: %s\n" % (certs.server_crt, certs.client_key))
    r = run(antenna_bin, "--config", str(cfg), check=False)
    assert r.returncode == 1, r.stdout
    assert b"listener secure" in r.stdout and b"client.key" in r.stdout, r.stdout


@pytest.mark.parametrize("yaml,key,msg", [
    ("    transport: wss\n", "listeners[0].cert_file", b"required when transport is tls or wss"),
    ("    transport: ws\n    ws_path: mqtt\n", "listeners[0].ws_path", b"starting with"),
    ("    ws_path: /mqtt\n", "listeners[0].ws_path", b"only meaningful with transport: ws"),
])
def test_websocket_listener_config_errors(antenna_bin, tmp_path, yaml, key, msg):
    """ws and wss are supported (test_33_websocket.py); their keys are
    checked at load."""
    cfg = tmp_path / "a.yaml"
    cfg.write_text("listeners:\n  - port: 0\n" + yaml)
    r = run(antenna_bin, "--config", str(cfg), check=False)
    assert r.returncode == 1, r.stdout
    assert (": %s:" % key).encode() in r.stdout, r.stdout
    assert msg in r.stdout, r.stdout


# ------------------------------------------------------------ SIGHUP reload

class TlsRaw(mqttraw.RawClient):
    """mqttraw.RawClient over an ssl socket (bytes OpenSSL already
    decrypted are read before waiting on the socket)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.closed = False
        self.backlog = []

    def _fill(self, deadline):
        if self.sock.pending():
            self.buf += self.sock.recv(65536)
            return
        super()._fill(deadline)


def server_subject(b, certs, *extra):
    r = s_client(b, certs, "-servername", "localhost", *extra)
    for line in r.stdout.decode(errors="replace").splitlines():
        if line.startswith("subject="):
            return line, r.stdout
    return None, r.stdout


@pytest.mark.deadline(60)
def test_sighup_reloads_certificates(broker, certs, tmp_path):
    """SIGHUP: new connections get the new certificate, a connection made
    before keeps working, TLS 1.2 sessions resume across the reload (the
    ticket keys are kept), unreadable files keep the previous certificate."""
    crt, key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(certs.server_crt, crt)
    shutil.copy(certs.server_key, key)
    b = broker(listener=tls_listener(certs, cert_file=str(crt), key_file=str(key)))
    subj, out = server_subject(b, certs)
    assert subj and "CN = server" in subj and "server2" not in subj, out
    sess = str(tmp_path / "sess.pem")
    r = s_client(b, certs, "-tls1_2", "-sess_out", sess)
    assert b"New, TLSv1.2" in r.stdout, r.stdout

    first = TlsRaw(tls_wrap(b, certs))
    assert first.connect("before-reload").rc == 0
    assert first.subscribe(1, [("reload/t", 1)]).codes == [1]

    shutil.copy(certs.server2_crt, crt)
    shutil.copy(certs.server2_key, key)
    b.proc.send_signal(signal.SIGHUP)
    b.wait_log(r"^.*TLS certificates reloaded: 1 listener\(s\), 0 failed")
    subj, out = server_subject(b, certs)
    assert subj and "CN = server2" in subj, out
    r = s_client(b, certs, "-tls1_2", "-sess_in", sess)
    assert b"Reused, TLSv1.2" in r.stdout, r.stdout

    # the connection made before the reload still works both ways
    first.publish("reload/t", b"still here", qos=1, pid=7)
    p = first.recv_publish()
    assert (p.topic, p.payload) == ("reload/t", b"still here")
    first.ack(p)
    second = TlsRaw(tls_wrap(b, certs))
    assert second.connect("after-reload").rc == 0
    second.publish("reload/t", b"from the new one", qos=0)
    p = first.recv_publish()
    assert p.payload == b"from the new one"

    # a broken file: logged with its name, the certificate in use stays
    crt.write_text("not a certificate\n")
    b.proc.send_signal(signal.SIGHUP)
    b.wait_log(r"listener mqtt: cert_file %s: .*TLS certificates not reloaded" % re.escape(str(crt)))
    b.wait_log(r"TLS certificates reloaded: 0 listener\(s\), 1 failed")
    subj, out = server_subject(b, certs)
    assert subj and "CN = server2" in subj, out
    first.publish("reload/t", b"after a failed reload", qos=0)
    assert first.recv_publish().payload == b"after a failed reload"
    first.disconnect()
    second.disconnect()


# ------------------------------------------------------------ cert_username

def test_cert_username_cn(broker, certs):
    b = broker(listener=mutual(certs, cert_username="cn"), mqtt={"allow_anonymous": False})
    c = TlsRaw(tls_wrap(b, certs, (certs.device__42_crt, certs.device__42_key)))
    ack = c.connect("dev")  # no MQTT username: accepted because of the certificate
    assert ack.rc == 0, ack
    b.wait_log(r"client 'dev' \(127\.0\.0\.1:\d+\): connected \(MQTT 3\.1\.1, .*, "
               r"user 'device-42'\)")
    c.disconnect()


def test_cert_username_san(broker, certs):
    b = broker(listener=mutual(certs, cert_username="san"), workers=4)
    for i in range(4):  # some move to their home worker: the name moves too
        c = TlsRaw(tls_wrap(b, certs, (certs.device__42_crt, certs.device__42_key)))
        assert c.connect("dev-%d" % i).rc == 0
        b.wait_log(r"client 'dev-%d' .*: connected .*user 'dev42\.example\.com'\)" % i)
        c.disconnect()


def test_no_cert_username_still_anonymous(broker, certs):
    """Without cert_username a certificate is not a username."""
    b = broker(listener=mutual(certs), mqtt={"allow_anonymous": False})
    c = TlsRaw(tls_wrap(b, certs, (certs.device__42_crt, certs.device__42_key)))
    assert c.connect("dev").rc == 5
    b.wait_log(r"anonymous clients are not allowed")
    assert "user '" not in b.log_text()


def test_cert_username_optional_client_cert(broker, certs):
    """cert_username with an optional client certificate: a client without
    one has no certificate username (and needs an MQTT username)."""
    b = broker(listener=tls_listener(certs, ca_file=certs.ca_crt, cert_username="cn"),
               mqtt={"allow_anonymous": False})
    c = TlsRaw(tls_wrap(b, certs))
    assert c.connect("nocert").rc == 5
    c = TlsRaw(tls_wrap(b, certs))
    assert c.connect("named", username="alice").rc == 0
    c.disconnect()
    c = TlsRaw(tls_wrap(b, certs, (certs.device__42_crt, certs.device__42_key)))
    assert c.connect("dev").rc == 0
    b.wait_log(r"client 'dev' .*user 'device-42'")
    c.disconnect()


@pytest.mark.parametrize("yaml,key,msg", [
    ("    cert_username: cn\n", "listeners[0].cert_username",
     b"only meaningful with transport: tls or wss"),
    ("    transport: tls\n    cert_file: /x.crt\n    key_file: /x.key\n    cert_username: cn\n",
     "listeners[0].ca_file", b"required when cert_username is cn or san"),
    ("    transport: tls\n    cert_file: /x.crt\n    key_file: /x.key\n    cert_username: dn\n",
     "listeners[0].cert_username", b"one of: none, cn, san"),
])
def test_cert_username_config_errors(antenna_bin, tmp_path, yaml, key, msg):
    cfg = tmp_path / "a.yaml"
    cfg.write_text("listeners:\n  - port: 0\n" + yaml)
    r = run(antenna_bin, "--config", str(cfg), check=False)
    assert r.returncode == 1, r.stdout
    assert (": %s:" % key).encode() in r.stdout, r.stdout
    assert msg in r.stdout, r.stdout
