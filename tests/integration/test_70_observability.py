"""Observability for fleets (issue 14): JSON log lines with stable fields
on every client-related line (docs/logging.md), control characters of a
client's strings escaped in text and JSON lines, the auth, ACL and ban
families of /metrics, the authenticated username in the API, and the recent
events of a client (GET /api/v1/clients/{id}/events)."""

import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

import mqttraw
from authutil import jwt_hs256, pbkdf2_line
from conftest import require_antenna_bin, wait_for
from test_61_modules import hb_broker  # noqa: F401 (a fixture: module sections)
from test_30_tls import TlsRaw, certs, mutual, tls_wrap  # noqa: F401 (certs: a fixture)
from test_43_auth_redis import redis  # noqa: F401 (a fixture)
from test_53_metrics import fetch, make_key, parse

pytestmark = pytest.mark.antenna_only

ACL = """user alice
allow all ok/#
deny pub secret/#
deny sub private/#
allow sub #
"""

# a client id with a newline, an escape sequence (a terminal's colour) and
# a quote: one log line whatever it holds
ODD_ID = 'ev\nil\x1b[31m"q'


def json_lines(b):
    """Every line the broker wrote, each one JSON object (asserted)."""
    out = []
    for line in b.log_text().splitlines():
        if not line.strip() or line.startswith("antenna: "):
            continue
        out.append(json.loads(line))
    return out


def wait_json(b, pred, what, timeout=5.0):
    def find():
        for o in json_lines(b):
            if pred(o):
                return o
        return None
    return wait_for(find, timeout, what=what)


def api(b, key, path, method="GET", body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(b.api_url + path, data=data, method=method,
                                 headers={"Authorization": "Bearer " + key,
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@pytest.fixture
def obs_broker(broker, tmp_path):
    pw = tmp_path / "passwd"
    pw.write_text(pbkdf2_line("alice", "wonder") + "\n")
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    make_key_path = tmp_path / "api.keys"
    key = make_key(make_key_path)
    b = broker(log={"format": "json"},
               api={"keys_file": str(make_key_path)},
               auth={"password_file": str(pw), "acl_file": str(acl)})
    b.key = key
    return b


def test_json_lines_carry_the_client_fields(obs_broker):
    b = obs_broker
    c = mqttraw.RawClient(b.host, b.port)
    ack = c.connect(ODD_ID, username="alice", password="wonder")
    assert ack.rc == 0, ack
    con = wait_json(b, lambda o: o.get("event") == "client_connected"
                    and o.get("client_id") == ODD_ID, "client_connected line")
    assert con["username"] == "alice" and con["listener"] == "mqtt", con
    assert con["peer"].startswith("127.0.0.1:") and con["level"] == "info", con
    assert "msg" in con and "ts" in con
    # ACL: a denied publish and a denied subscription
    c.send(mqttraw.publish("secret/x", b"p"))
    den = wait_json(b, lambda o: o.get("event") == "acl_denied" and o.get("reason") == "publish",
                    "acl_denied publish line")
    assert den["client_id"] == ODD_ID and den["username"] == "alice", den
    c.subscribe(1, [("private/y", 0)])
    den = wait_json(b, lambda o: o.get("event") == "acl_denied"
                    and o.get("reason") == "subscribe", "acl_denied subscribe line")
    assert den["client_id"] == ODD_ID, den
    # a protocol error: a second CONNECT
    c.send(mqttraw.connect(ODD_ID, username="alice", password="wonder"))
    c.wait_closed()
    pe = wait_json(b, lambda o: o.get("event") == "protocol_error", "protocol_error line")
    assert pe["client_id"] == ODD_ID and pe["reason"] == "protocol_error", pe
    assert pe["username"] == "alice" and pe["listener"] == "mqtt", pe

    # a wrong password: auth_failed, with the refusing backend
    c = mqttraw.RawClient(b.host, b.port)
    ack = c.connect("bad-pw", username="alice", password="nope")
    assert ack.rc == 4, ack
    c.close()
    af = wait_json(b, lambda o: o.get("event") == "auth_failed"
                   and o.get("client_id") == "bad-pw", "auth_failed line")
    assert af["backend"] == "password_file" and af["reason"] == "bad_credentials", af
    assert af["username"] == "alice" and af["peer"].startswith("127.0.0.1:"), af

    # a normal DISCONNECT, and a keepalive timeout
    c = mqttraw.RawClient(b.host, b.port)
    assert c.connect("bye", username="alice", password="wonder").rc == 0
    c.send(mqttraw.disconnect())
    d = wait_json(b, lambda o: o.get("event") == "client_disconnected"
                  and o.get("client_id") == "bye", "client_disconnected line")
    assert d["reason"] == "normal_disconnection" and d["username"] == "alice", d
    c.close()
    k = mqttraw.RawClient(b.host, b.port)
    assert k.connect("sleepy", keepalive=1, username="alice", password="wonder").rc == 0
    ka = wait_json(b, lambda o: o.get("event") == "keepalive_timeout", "keepalive line",
                   timeout=10)
    assert ka["client_id"] == "sleepy" and ka["reason"] == "keep_alive_timeout", ka
    k.close()

    # a takeover: the old connection's line
    t1 = mqttraw.RawClient(b.host, b.port)
    assert t1.connect("twin", username="alice", password="wonder").rc == 0
    t2 = mqttraw.RawClient(b.host, b.port)
    assert t2.connect("twin", username="alice", password="wonder").rc == 0
    tk = wait_json(b, lambda o: o.get("event") == "takeover" and o.get("client_id") == "twin",
                   "takeover line")
    assert tk["reason"] == "session_taken_over", tk
    t1.close()
    t2.close()
    # every line is one JSON object: json_lines asserted it for all of them
    assert len(json_lines(b)) > 5


def test_text_lines_escape_control_characters(broker):
    b = broker()
    c = mqttraw.RawClient(b.host, b.port)
    assert c.connect(ODD_ID).rc == 0
    b.wait_log(r"client 'ev\\x0ail\\x1b\[31m\"q' \(127\.0\.0\.1:\d+\): connected")
    c.close()
    b.wait_log(r"client 'ev\\x0ail\\x1b\[31m\"q' .*disconnected")
    text = b.log_text()
    assert "\x1b" not in text
    # the newline of the id did not start a line of its own
    assert not any(line.startswith("il") for line in text.splitlines())


def metric(fams, family, **labels):
    """The value of one sample (family may be a histogram's _bucket, ...)."""
    base = family
    for suffix in ("_bucket", "_sum", "_count"):
        if family.endswith(suffix) and family[:-len(suffix)] in fams:
            base = family[:-len(suffix)]
    for name, lab, val in fams[base]["samples"]:
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"', lab))
        if name == family and all(got.get(k) == v for k, v in labels.items()):
            return val
    return None


def test_auth_acl_ban_metrics(broker, tmp_path):
    pw = tmp_path / "passwd"
    pw.write_text(pbkdf2_line("alice", "wonder") + "\n")
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    keys = tmp_path / "api.keys"
    key = make_key(keys)
    b = broker(api={"keys_file": str(keys)},
               auth={"chain": ["password_file", "jwt"], "password_file": str(pw),
                     "jwt": {"secret": "s3cret-s3cret-s3cret-s3cret-s3cret!"},
                     "acl_file": str(acl),
                     "ban": {"max_failures": 3, "loopback": True, "delay_ms": 10,
                             "ban_s": 300}})

    def fams():
        st, _, text = fetch(b.api_url + "/metrics", key)
        assert st == 200
        return parse(text)

    f = fams()
    assert f["antenna_auth_backend_duration_seconds"]["type"] == "histogram"
    assert metric(f, "antenna_auth_backend_answers_total", backend="jwt", answer="allow") == 0
    assert metric(f, "antenna_bans_active", kind="address") == 0
    c = mqttraw.RawClient(b.host, b.port)
    assert c.connect("m-ok", username="alice", password="wonder").rc == 0
    c.send(mqttraw.publish("secret/x", b"p"))
    c.subscribe(1, [("private/y", 0)])
    c.close()
    # a JWT (the password file passes: not its user), then a wrong password
    tok = jwt_hs256({"sub": "jwt-user", "exp": int(time.time()) + 600},
                    "s3cret-s3cret-s3cret-s3cret-s3cret!")
    c = mqttraw.RawClient(b.host, b.port)
    assert c.connect("m-jwt", username="token", password=tok).rc == 0
    c.close()

    def counted():
        f = fams()
        return f if (metric(f, "antenna_acl_denied_total", action="publish") == 1
                     and metric(f, "antenna_acl_denied_total", action="subscribe") == 1) else None
    f = wait_for(counted, 5, what="ACL denials counted")
    assert metric(f, "antenna_auth_backend_answers_total", backend="password_file",
                  answer="allow") == 1
    assert metric(f, "antenna_auth_backend_answers_total", backend="password_file",
                  answer="pass") == 1
    assert metric(f, "antenna_auth_backend_answers_total", backend="jwt", answer="allow") == 1
    assert metric(f, "antenna_auth_backend_duration_seconds_count", backend="password_file") == 2
    assert metric(f, "antenna_auth_backend_duration_seconds_count", backend="jwt") == 1
    inf = metric(f, "antenna_auth_backend_duration_seconds_bucket", backend="password_file",
                 le="+Inf")
    assert inf == 2
    # the old family keeps its name
    assert metric(f, "antenna_auth_attempts_total", result="success") == 2

    # three failures ban the address (a loopback listener counts here)
    for i in range(3):
        c = mqttraw.RawClient(b.host, b.port)
        assert c.connect("m-bad%d" % i, username="alice", password="no").rc != 0
        c.close()

    def banned():
        f = fams()
        return f if metric(f, "antenna_bans_total") and metric(
            f, "antenna_bans_active", kind="address") == 1 else None
    f = wait_for(banned, 5, what="the ban counted")
    assert metric(f, "antenna_auth_backend_answers_total", backend="password_file",
                  answer="deny") == 3


def test_username_in_the_api_password_file_and_jwt(broker, tmp_path):
    pw = tmp_path / "passwd"
    pw.write_text(pbkdf2_line("alice", "wonder") + "\n")
    keys = tmp_path / "api.keys"
    key = make_key(keys)
    secret = "s3cret-s3cret-s3cret-s3cret-s3cret!"
    b = broker(api={"keys_file": str(keys)},
               auth={"chain": ["password_file", "jwt"], "password_file": str(pw),
                     "jwt": {"secret": secret}})
    a = mqttraw.RawClient(b.host, b.port)
    assert a.connect("u-pw", username="alice", password="wonder").rc == 0
    tok = jwt_hs256({"sub": "device-42", "exp": int(time.time()) + 600}, secret)
    j = mqttraw.RawClient(b.host, b.port)
    assert j.connect("u-jwt", username="whatever", password=tok).rc == 0
    st, one = api(b, key, "/api/v1/clients/u-pw")
    assert st == 200 and one["username"] == "alice", one
    st, one = api(b, key, "/api/v1/clients/u-jwt")
    assert st == 200 and one["username"] == "device-42", one
    st, lst = api(b, key, "/api/v1/clients?username=device-42")
    assert st == 200, lst
    items = lst["data"] if isinstance(lst, dict) and "data" in lst else lst
    assert [c["client_id"] for c in items] == ["u-jwt"], lst
    a.close()
    j.close()


def test_recent_events_of_a_client(obs_broker):
    b = obs_broker
    cid = "rec-1"
    c = mqttraw.RawClient(b.host, b.port)
    assert c.connect(cid, username="alice", password="wonder").rc == 0
    c.subscribe(1, [("ok/a", 1)])
    c.send(mqttraw.unsubscribe(2, ["ok/a"]))
    c.recv_type(mqttraw.UNSUBACK)
    c.send(mqttraw.disconnect())
    c.close()
    # a failed login of the same id, then a takeover
    f = mqttraw.RawClient(b.host, b.port)
    assert f.connect(cid, username="alice", password="bad").rc == 4
    f.close()
    t1 = mqttraw.RawClient(b.host, b.port)
    assert t1.connect(cid, username="alice", password="wonder").rc == 0
    t2 = mqttraw.RawClient(b.host, b.port)
    assert t2.connect(cid, username="alice", password="wonder").rc == 0

    want = ["session_taken_over", "client_connected", "auth_failed", "client_disconnected",
            "unsubscribed", "subscribed", "client_connected"]

    def events():
        st, body = api(b, b.key, "/api/v1/clients/%s/events" % cid)
        assert st == 200, body
        names = [e["event"] for e in body["events"]]
        return body if all(w in names for w in want) else None
    body = wait_for(events, 5, what="the recent events")
    evs = body["events"]
    assert body["client_id"] == cid
    ats = [e["at_ms"] for e in evs]
    assert ats == sorted(ats, reverse=True), evs  # newest first
    by = {}
    for e in evs:
        by.setdefault(e["event"], e)
    # the first connection's DISCONNECT (the taken-over one's is newer)
    bye = [e for e in evs if e["event"] == "client_disconnected" and e["reason_code"] == 0]
    assert bye and bye[0]["detail"].startswith("by the client"), evs
    assert by["subscribed"]["detail"] == "ok/a" and by["subscribed"]["qos"] == 1, by
    assert by["unsubscribed"]["detail"] == "ok/a", by
    assert by["auth_failed"]["detail"].startswith("bad_credentials"), by
    assert abs(by["client_connected"]["at"] - time.time()) < 60
    # the body form, for any id; an unknown id has no events
    st, same = api(b, b.key, "/api/v1/clients/events", "POST", {"client_id": cid})
    assert st == 200 and [e["event"] for e in same["events"]][:len(evs)] == \
        [e["event"] for e in evs][:len(same["events"])]
    st, none = api(b, b.key, "/api/v1/clients/%s/events" % urllib.parse.quote("nobody-x"))
    assert st == 200 and none["events"] == [], none
    # bounded: a flood of subscriptions keeps at most 64 answered
    for i in range(80):
        t2.subscribe(10 + i, [("ok/f%d" % i, 0)])
    def bounded():
        st, body = api(b, b.key, "/api/v1/clients/%s/events" % cid)
        return body if any(e.get("detail") == "ok/f79" for e in body["events"]) else None
    body = wait_for(bounded, 5, what="the 80th subscription")
    assert len(body["events"]) == 64
    assert body["events"][0]["detail"] == "ok/f79"
    t1.close()
    t2.close()


def test_username_in_the_api_redis_and_certificate(broker, tmp_path, redis, certs):
    """The backends that do not rename the user (Redis: the CONNECT's user
    name once it checked it) and a client certificate (cert_username)."""
    redis.add_user("rita", "s3cret")
    keys = tmp_path / "api.keys"
    key = make_key(keys)
    b = broker(api={"keys_file": str(keys)}, log={"format": "json"},
               auth={"chain": ["redis"], "default": "deny",
                     "redis": {"port": redis.port, "timeout_ms": 2000, "pool_size": 1}})
    c = mqttraw.RawClient(b.host, b.port)
    assert c.connect("u-redis", username="rita", password="s3cret").rc == 0
    st, one = api(b, key, "/api/v1/clients/u-redis")
    assert st == 200 and one["username"] == "rita", one
    c.close()
    # an asynchronous backend's refusal names it in the log line
    c = mqttraw.RawClient(b.host, b.port)
    assert c.connect("u-redis-bad", username="rita", password="nope").rc != 0
    c.close()
    af = wait_json(b, lambda o: o.get("event") == "auth_failed"
                   and o.get("client_id") == "u-redis-bad", "auth_failed line")
    assert af["backend"] == "redis" and af["username"] == "rita", af
    st, _, text = fetch(b.api_url + "/metrics", key)
    f = parse(text)
    assert metric(f, "antenna_auth_backend_duration_seconds_count", backend="redis") == 2

    t = broker(listener=mutual(certs, cert_username="cn"), mqtt={"allow_anonymous": False},
               api={"keys_file": str(keys)})
    c = TlsRaw(tls_wrap(t, certs, (certs.device__42_crt, certs.device__42_key)))
    assert c.connect("u-cert").rc == 0
    st, one = api(t, key, "/api/v1/clients/u-cert")
    assert st == 200 and one["username"] == "device-42", one
    c.disconnect()


def test_recent_events_coalesce_drops(obs_broker):
    """A burst of drops for one client is one event with its count."""
    b = obs_broker
    sub = mqttraw.RawClient(b.host, b.port)
    assert sub.connect("rec-off", clean=False, username="alice", password="wonder").rc == 0
    sub.subscribe(1, [("ok/d", 0)])
    sub.send(mqttraw.disconnect())
    sub.close()

    def offline():
        st, one = api(b, b.key, "/api/v1/clients/rec-off")
        return st == 200 and one["connected"] is False
    wait_for(offline, 5, what="the session offline")
    pub = mqttraw.RawClient(b.host, b.port)
    assert pub.connect("rec-pub", username="alice", password="wonder").rc == 0
    for i in range(30):
        pub.send(mqttraw.publish("ok/d", b"x%d" % i))
    pub.send(mqttraw.pingreq())
    pub.recv_type(mqttraw.PINGRESP)

    def dropped():
        st, body = api(b, b.key, "/api/v1/clients/rec-off/events")
        drops = [e for e in body["events"] if e["event"] == "message_dropped"]
        return drops if sum(e["count"] for e in drops) == 30 else None
    drops = wait_for(dropped, 5, what="30 drops counted")
    assert len(drops) <= 2, drops  # coalesced (a second boundary may split them)
    assert drops[0]["detail"] == "qos0_offline: ok/d" and drops[0]["qos"] == 0, drops
    pub.close()


def test_recent_events_off(hb_broker, tmp_path):
    """recent_events.enabled: false keeps nothing; a bad size is refused."""
    keys = tmp_path / "api.keys"
    key = make_key(keys)
    b = hb_broker("recent_events:\n  enabled: false\n", api={"keys_file": str(keys)})
    c = mqttraw.RawClient(b.host, b.port)
    assert c.connect("off-1").rc == 0
    c.subscribe(1, [("a/b", 0)])
    st, body = api(b, key, "/api/v1/clients/off-1/events")
    assert st == 200 and body["events"] == [], body
    c.close()
    st, cfg = api(b, key, "/api/v1/config")
    assert st == 200 and cfg["recent_events"] == {"enabled": False, "size": 256}, cfg
    bad = tmp_path / "bad.yaml"
    bad.write_text("recent_events:\n  size: 3\n")
    p = subprocess.run([require_antenna_bin(), "check", "-c", str(bad)], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode != 0 and "recent_events.size" in p.stdout + p.stderr, p
