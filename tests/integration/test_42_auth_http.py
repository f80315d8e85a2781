"""The webhook auth backend (auth.chain: [http]) end to end: the real broker
asks a real HTTP server started by the test (http.server in a thread, on
127.0.0.1 with an ephemeral port, HTTP/1.1 keep-alive) that counts requests
and TCP connections and answers as each test says.

Covered: allow and deny from the status code, from a JSON body, the OPA
format, the result cache (hit within the TTL, asked again after it), a slow
webhook (timeout -> CONNACK 0x88 while an already connected client keeps
publishing and receiving quickly), a webhook that is down or answers
garbage (on_error deny and pass), and connection reuse (never a connection
per request)."""

import http.server
import json
import shutil
import ssl
import subprocess
import threading
import time

import pytest

import mqttraw
from authutil import paho_connack
from conftest import free_port
from mqttraw import CONNACK, RawClient5

pytestmark = pytest.mark.antenna_only

RC_BAD_USER_PASS = 0x86
RC_NOT_AUTHORIZED = 0x87
RC_SERVER_UNAVAILABLE = 0x88


class Webhook:
    """An HTTP server in a thread.  decide(req) -> (status, body[, delay_s])
    where req is the decoded JSON request; records every request."""

    def __init__(self, decide, tls=None):
        self.decide = decide
        self.lock = threading.Lock()
        self.requests = []
        self.connections = 0
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive

            def setup(self):
                super().setup()
                with hook.lock:
                    hook.connections += 1

            def log_message(self, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(n)
                try:
                    req = json.loads(raw)
                except ValueError:
                    req = {"unparsable": raw.decode("latin-1")}
                with hook.lock:
                    hook.requests.append(req)
                answer = hook.decide(req)
                status, body = answer[0], answer[1]
                if len(answer) > 2 and answer[2]:
                    time.sleep(answer[2])
                data = body.encode() if isinstance(body, str) else body
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the broker gave up (timeout) and closed

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls:  # (cert, key): HTTPS
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = "%s://127.0.0.1:%d/mqtt/auth" % ("https" if tls else "http", self.port)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def of_action(self, action):
        with self.lock:
            return [r for r in self.requests if r.get("action") == action
                    or r.get("input", {}).get("action") == action]

    def count(self):
        with self.lock:
            return len(self.requests)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    hooks = []

    def start(decide, tls=None):
        h = Webhook(decide, tls)
        hooks.append(h)
        return h

    yield start
    for h in hooks:
        h.close()


def http_broker(broker, url, default="deny", acl_default="allow", **http):
    cfg = {"url": url}
    cfg.update(http)
    return broker(mqtt={"sys_interval": 1}, auth={"chain": ["http"], "default": default, "acl_default": acl_default,
                        "http": cfg})


def connect5(b, cid, user=None, pw=None, timeout=5.0):
    c = RawClient5(b.host, b.port, timeout=timeout)
    ack = c.connect(cid, username=user, password=pw, timeout=timeout)
    return c, ack


def wait_sys(client, name, pred, timeout=5.0):
    """Read $SYS/broker/auth/http/NAME (published every second with
    sys_interval 1) until pred(value) holds; the client must be subscribed
    to $SYS/broker/auth/http/+.  Returns the value."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        try:
            p = client.recv_publish(timeout=max(0.05, deadline - time.monotonic()))
        except mqttraw.Timeout:
            break
        if p.topic == "$SYS/broker/auth/http/" + name:
            seen = int(p.payload)
            if pred(seen):
                return seen
    raise AssertionError("$SYS/broker/auth/http/%s: last value %r" % (name, seen))


def by_password(req):
    return (204, "") if req.get("password") == "good" else (403, "")


# ------------------------------------------------------------ allow / deny

def test_status_code_allows_and_denies(broker, webhook):
    h = webhook(by_password)
    b = http_broker(broker, h.url)
    c, ack = connect5(b, "dev-1", "alice", "good")
    assert ack.rc == 0
    c.close()
    req = h.of_action("connect")[0]
    assert req["clientid"] == "dev-1"
    assert req["username"] == "alice"
    assert req["password"] == "good"
    assert req["listener"] == "mqtt"
    assert req["peer"].startswith("127.0.0.1:")
    assert req["topic"] is None

    c, ack = connect5(b, "dev-2", "alice", "bad")
    assert ack.rc == RC_BAD_USER_PASS
    c.close()
    # MQTT 3.1.1 (paho): CONNACK 4, bad user name or password
    assert paho_connack(b, "alice", "bad", client_id="dev-3") == 4


def test_json_body_result(broker, webhook):
    answers = {"a": {"result": "allow"}, "d": {"result": "deny"}, "i": {"result": "ignore"}}
    h = webhook(lambda req: (200, json.dumps(answers[req["username"]])))
    b = http_broker(broker, h.url)
    c, ack = connect5(b, "j-a", "a", "x")
    assert ack.rc == 0
    c.close()
    c, ack = connect5(b, "j-d", "d", "x")
    assert ack.rc == RC_BAD_USER_PASS
    c.close()
    # ignore: no backend decides, auth.default (deny) does
    c, ack = connect5(b, "j-i", "i", "x")
    assert ack.rc >= 0x80
    c.close()
    assert len(h.of_action("connect")) == 3


def test_opa_format(broker, webhook):
    def opa(req):
        inp = req.get("input")
        if not isinstance(inp, dict):
            return (400, "")
        return (200, json.dumps({"result": inp.get("username") == "opa-ok"}))
    h = webhook(opa)
    b = http_broker(broker, h.url, format="opa")
    c, ack = connect5(b, "o-1", "opa-ok", "pw")
    assert ack.rc == 0
    c.close()
    c, ack = connect5(b, "o-2", "opa-no", "pw")
    assert ack.rc == RC_BAD_USER_PASS
    c.close()
    reqs = h.of_action("connect")
    assert len(reqs) == 2
    assert reqs[0]["input"]["clientid"] == "o-1"
    assert set(reqs[0]) == {"input"}


# ------------------------------------------------------------ the cache

def test_cache_hit_within_ttl(broker, webhook):
    h = webhook(by_password)
    b = http_broker(broker, h.url, cache_ttl_ms=60000)
    for _ in range(2):
        c, ack = connect5(b, "cached", "u", "good")
        assert ack.rc == 0
        c.close()
    assert len(h.of_action("connect")) == 1
    # a deny is cached too
    for _ in range(2):
        c, ack = connect5(b, "cached", "u", "bad")
        assert ack.rc == RC_BAD_USER_PASS
        c.close()
    assert len(h.of_action("connect")) == 2
    # the counters in $SYS
    c, ack = connect5(b, "cached", "u", "good")
    assert ack.rc == 0
    assert c.subscribe(1, [("$SYS/broker/auth/http/+", 0)]).codes == [0]
    wait_sys(c, "cache_hits", lambda v: v >= 3)
    wait_sys(c, "errors", lambda v: v == 0)
    c.disconnect()


def test_cache_expiry(broker, webhook):
    h = webhook(by_password)
    b = http_broker(broker, h.url, cache_ttl_ms=300)
    c, ack = connect5(b, "exp", "u", "good")
    assert ack.rc == 0
    c.close()
    time.sleep(0.5)
    c, ack = connect5(b, "exp", "u", "good")
    assert ack.rc == 0
    c.close()
    assert len(h.of_action("connect")) == 2


# ------------------------------------------------------------ failures

def test_slow_webhook_times_out_and_others_stay_fast(broker, webhook):
    state = {"delay": 0}

    def decide(req):
        if req.get("username") == "watcher":
            return (204, "")
        return (204, "", state["delay"])
    h = webhook(decide)
    b = http_broker(broker, h.url, timeout_ms=500, pool_size=2)
    # a client connected before the webhook hangs
    w, ack = connect5(b, "watcher", "watcher", "pw")
    assert ack.rc == 0
    assert w.subscribe(1, [("live/echo", 1)]).codes == [1]
    w.publish("live/echo", b"warm", qos=1, pid=1)
    p = w.recv_publish()
    w.ack(p)

    state["delay"] = 3.0
    waiting = []
    t0 = time.monotonic()
    for i in range(20):
        c = RawClient5(b.host, b.port, timeout=10)
        c.send(mqttraw.connect5("slow-%d" % i, username="slow", password="pw%d" % i))
        waiting.append(c)
    # while 20 CONNECTs wait on the hung webhook, the watcher's round trips
    # stay fast
    rtts = []
    for i in range(10):
        s = time.monotonic()
        w.publish("live/echo", b"ping%d" % i, qos=1, pid=2 + i)
        p = w.recv_publish(timeout=2)
        assert p.payload == b"ping%d" % i
        w.ack(p)
        rtts.append(time.monotonic() - s)
        time.sleep(0.02)
    assert max(rtts) < 0.2, rtts
    # every waiting CONNECT is refused once the timeout passes
    for c in waiting:
        ack = c.recv_type(CONNACK, timeout=5)
        assert ack.rc == RC_SERVER_UNAVAILABLE, ack
        c.close()
    elapsed = time.monotonic() - t0
    assert elapsed < 3.0, elapsed  # the timeout (0.5 s), not the webhook (3 s)
    b.wait_log(r"auth http: connect of client 'slow-\d+'.*timed out")
    assert w.subscribe(30, [("$SYS/broker/auth/http/+", 0)]).codes == [0]
    wait_sys(w, "timeouts", lambda v: v >= 20)
    w.disconnect()


def test_webhook_down(broker):
    b = http_broker(broker, "http://127.0.0.1:%d/auth" % free_port())
    t0 = time.monotonic()
    c, ack = connect5(b, "down-1", "u", "p")
    assert ack.rc == RC_SERVER_UNAVAILABLE
    assert time.monotonic() - t0 < 1.5
    c.close()
    b.wait_log(r"auth http: connect of client 'down-1'.*(refused|connect).*denied")


@pytest.mark.parametrize("body", ["not json at all", "{\"result\": 42}", "[]", "{\"no\": 1}"])
def test_garbage_body(broker, webhook, body):
    h = webhook(lambda req: (200, body))
    b = http_broker(broker, h.url)
    c, ack = connect5(b, "garbage", "u", "p")
    assert ack.rc == RC_SERVER_UNAVAILABLE
    c.close()
    b.wait_log(r"auth http: connect of client 'garbage'.*HTTP 200")


def test_on_error_pass(broker, webhook):
    h = webhook(lambda req: (500, "boom"))
    b = http_broker(broker, h.url, on_error="pass", default="allow")
    c, ack = connect5(b, "err-pass", "u", "p")
    assert ack.rc == 0  # the webhook failed, passed, auth.default allowed
    c.close()
    assert len(h.of_action("connect")) == 1
    b.wait_log(r"auth http: connect of client 'err-pass'.*HTTP 500.*passed")


def test_connection_reuse(broker, webhook):
    h = webhook(by_password)
    b = http_broker(broker, h.url, cache_ttl_ms=0, pool_size=2)
    for i in range(30):
        c, ack = connect5(b, "reuse-%d" % i, "u", "good")
        assert ack.rc == 0
        c.close()
    assert len(h.of_action("connect")) == 30
    with h.lock:
        conns = h.connections
    assert 1 <= conns <= 2, conns


def test_acl_rules_in_the_answer(broker, webhook):
    """An allow may carry the client's rules; they decide its PUBLISH and
    SUBSCRIBE, also when the CONNECT is answered from the cache."""
    def decide(req):
        if req["action"] != "connect":
            return (403, "")
        return (200, json.dumps({"result": "allow",
                                 "acl": ["deny pub dev/%c/secret", "allow all dev/%c/#"]}))
    h = webhook(decide)
    b = http_broker(broker, h.url, acl_default="deny")
    for attempt in range(2):  # the second CONNECT is a cache hit
        c, ack = connect5(b, "acl-dev", "u", "pw")
        assert ack.rc == 0
        assert c.publish("dev/acl-dev/temp", b"1", qos=1, pid=1).rc < 0x80
        assert c.publish("dev/acl-dev/secret", b"1", qos=1, pid=2).rc == RC_NOT_AUTHORIZED
        assert c.publish("dev/other/temp", b"1", qos=1, pid=3).rc == RC_NOT_AUTHORIZED
        assert c.subscribe(4, [("dev/acl-dev/#", 1), ("dev/other/#", 1)]).codes == \
            [1, RC_NOT_AUTHORIZED]
        c.disconnect()
    assert len(h.of_action("connect")) == 1


def openssl(d, *args):
    subprocess.run(["openssl"] + list(args), cwd=d, check=True, timeout=30,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")
def test_https_webhook_with_private_ca(broker, webhook, tmp_path):
    """An https webhook whose certificate comes from a private CA: accepted
    with auth.http.ca_file, refused (0x88, a verification error) without."""
    d = tmp_path
    openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
            "-out", "ca.crt", "-days", "2", "-subj", "/CN=webhook test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl(d, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "hook.key", "-out",
            "hook.csr", "-subj", "/CN=webhook")
    (d / "hook.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl(d, "x509", "-req", "-in", "hook.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "hook.crt", "-days", "2", "-extfile", "hook.ext")
    h = webhook(by_password, tls=(str(d / "hook.crt"), str(d / "hook.key")))
    assert h.url.startswith("https://")

    b = http_broker(broker, h.url, ca_file=str(d / "ca.crt"))
    c, ack = connect5(b, "tls-1", "u", "good")
    assert ack.rc == 0
    c.close()
    c, ack = connect5(b, "tls-2", "u", "bad")
    assert ack.rc == RC_BAD_USER_PASS
    c.close()
    assert len(h.of_action("connect")) == 2

    b2 = http_broker(broker, h.url)  # the system's CAs: not this one
    c, ack = connect5(b2, "tls-3", "u", "good")
    assert ack.rc == RC_SERVER_UNAVAILABLE
    c.close()
    b2.wait_log(r"auth http: connect of client 'tls-3'.*(certificate|SSL)")
    assert len(h.of_action("connect")) == 2


def test_several_webhooks_failover(broker, webhook):
    h = webhook(by_password)
    down = "http://127.0.0.1:%d/auth" % free_port()
    b = broker(auth={"chain": ["http"], "default": "deny",
                     "http": {"urls": [down, h.url], "cache_ttl_ms": 0}})
    for i in range(6):
        c, ack = connect5(b, "fo-%d" % i, "u", "good")
        assert ack.rc == 0  # never an error: the dead webhook is skipped
        c.close()
    assert len(h.of_action("connect")) == 6
    b.wait_log(r"auth http: webhook 1 of 2: .*trying the next one")
