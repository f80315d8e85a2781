"""Every thread of the broker at once (issue 21, the ThreadSanitizer rail).

One broker with two workers, the store (committer thread), the password
file (hashing pool), an ACL file, a TLS listener, the management API
(libmicrohttpd's threads and the connection reaper) and a log file; for a
few seconds, in parallel: clients that authenticate with a password, publish
QoS 1 (stored) and take each other's persistent sessions over across the
workers; TLS clients; API requests (lists, a kick, the metrics); SIGHUP
every 100 ms (the main thread reopens the log and reloads the password
file, the ACL, the TLS certificate and the API keys while the others read
them).  Under `make tsan` any data race fails the test (conftest); in every
build each activity must have made progress and the broker must still
serve.  ~5 s in the release build.
"""

import os
import signal
import ssl
import subprocess
import threading
import time
import urllib.request

import pytest

import mqttraw
from authutil import pbkdf2_line
from conftest import require_antenna_bin

SANITIZED = os.environ.get("ANTENNA_SANITIZED") == "1"
SECONDS = 6.0 if SANITIZED else 3.0
USERS = [("u%d" % i, "pw%d" % i) for i in range(4)]
ACL = "any\nallow all t/%u/#\ndeny sub secret/#\n\nuser u0\nallow all t/#\n"


def make_cert(d):
    crt, key = d / "srv.crt", d / "srv.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(crt), "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True, timeout=30)
    return crt, key


def replace(path, text):
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def make_key(path):
    p = subprocess.run([require_antenna_bin(), "apikey", "create", str(path), "ops"],
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout.decode().strip()


class Loop(threading.Thread):
    """Runs step() until stop is set; counts successes, keeps the first
    error (a step that raises ends the loop)."""

    def __init__(self, name, step, stop):
        super().__init__(name=name, daemon=True)
        self.step, self.stop, self.count, self.error = step, stop, 0, None

    def run(self):
        i = 0
        while not self.stop.is_set() and i < 100000:
            i += 1
            try:
                self.step(i)
            except Exception as e:  # reported by the test
                self.error = "%s: %r" % (self.name, e)
                return
            self.count += 1


@pytest.mark.antenna_only
@pytest.mark.deadline(120)
def test_every_thread_at_once(broker, tmp_path):
    crt, key = make_cert(tmp_path)
    pw = tmp_path / "passwd"
    pw.write_text("".join(pbkdf2_line(u, p) + "\n" for u, p in USERS))
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    keys = tmp_path / "api.keys"
    api_key = make_key(keys)
    log = tmp_path / "antenna.log"
    b = broker(listener={"transport": "tls", "cert_file": str(crt), "key_file": str(key)},
               extra_listeners=1, log={"file": str(log)},
               auth={"password_file": str(pw), "acl_file": str(acl), "acl_default": "allow"},
               api={"keys_file": str(keys)}, mqtt={"sys_interval": 1})
    plain = b.ports[1]
    stop = threading.Event()

    def password_client(n):
        def step(i):
            user, secret = USERS[(n + i) % len(USERS)]
            # persistent sessions shared by two loops: takeovers, across workers
            # (closed by the other loop's takeover or by the API's kick)
            cid = "p%d-%d" % (n % 2, i % 3)
            with mqttraw.RawClient(b.host, plain) as c:
                try:
                    ack = c.connect(cid, clean=False, username=user, password=secret)
                    assert ack.rc == 0, ack
                    assert c.subscribe(1, [("t/%s/#" % user, 1)]).codes == [1]
                    c.publish("t/%s/x" % user, b"m%d" % i, qos=1, pid=2)
                    c.disconnect()
                except (mqttraw.Closed, ConnectionError):
                    pass
        return step

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    def tls_client(i):
        c = mqttraw.RawClient(b.host, b.port)
        c.sock = ctx.wrap_socket(c.sock)
        with c:
            assert c.connect("tls%d" % (i % 4), username="u1", password="pw1").rc == 0
            c.publish("t/u1/tls", b"x", qos=1, pid=1)
            c.disconnect()

    def api_get(path):
        req = urllib.request.Request(b.api_url + path,
                                     headers={"Authorization": "Bearer " + api_key})
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read()

    def api_client(i):
        for path in ("/api/v1/clients", "/api/v1/subscriptions", "/api/v1/clients/p0-0",
                     "/metrics"):
            try:
                st, _ = api_get(path)
            except urllib.error.HTTPError as e:
                st = e.code
            assert st in (200, 404), (path, st)
        if i % 5 == 0:  # a kick: the worker closes a client the API named
            req = urllib.request.Request(b.api_url + "/api/v1/clients/p1-1", method="DELETE",
                                         headers={"Authorization": "Bearer " + api_key})
            try:
                urllib.request.urlopen(req, timeout=20).close()
            except urllib.error.HTTPError as e:
                assert e.code == 404, e.code

    def sighup(i):
        if i % 5 == 0:  # the files change (renamed into place) between reloads
            replace(pw, "".join(pbkdf2_line(u, p) + "\n" for u, p in USERS))
            replace(acl, ACL + "# %d\n" % i)
        b.proc.send_signal(signal.SIGHUP)
        time.sleep(0.1)

    loops = [Loop("password%d" % n, password_client(n), stop) for n in range(3)]
    loops += [Loop("tls", tls_client, stop), Loop("api", api_client, stop),
              Loop("sighup", sighup, stop)]
    for t in loops:
        t.start()
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline and all(t.is_alive() for t in loops):
        time.sleep(0.1)
    stop.set()
    for t in loops:
        t.join(60)
    errors = [t.error for t in loops if t.error] + [t.name + " hung" for t in loops
                                                    if t.is_alive()]
    assert not errors, errors
    assert all(t.count > 0 for t in loops), [(t.name, t.count) for t in loops]
    b.wait_log(r"log reopened \(reload\)")
    with mqttraw.RawClient(b.host, plain) as c:
        assert c.connect("after", username="u0", password="pw0").rc == 0
        assert c.subscribe(1, [("t/u0/#", 1)]).codes == [1]
        c.publish("t/u0/end", b"ok", qos=1, pid=1)
        p = c.recv_publish()
        assert (p.topic, p.payload) == ("t/u0/end", b"ok")
        c.ack(p)
        c.disconnect()
