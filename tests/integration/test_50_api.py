"""The management REST API (docs/api.md) against a real broker: every
documented endpoint answers (the list is parsed from docs/api.md), auth (API
key made by `antenna apikey create`, basic auth with a mosquitto_passwd
file, 401 without), bad requests name the field, kick of a paho MQTT 5
client (DISCONNECT 0x98), publish received by a paho subscriber, retained
get/delete, pagination and filters, reload, JSON logs with client fields.
"""

import base64
import json
import os
import pathlib
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
import pytest

from conftest import require_antenna_bin, wait_for
from helpers import Paho

pytestmark = pytest.mark.antenna_only

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "api.md"


def make_key(path, name="ops"):
    p = subprocess.run([require_antenna_bin(), "apikey", "create", str(path), name],
                       capture_output=True, timeout=10)
    assert p.returncode == 0, p.stderr
    key = p.stdout.decode().strip()
    assert re.fullmatch(r"ak_[0-9a-f]{64}", key), key
    return key


class Client:
    def __init__(self, b, key=None, basic=None):
        self.b, self.key, self.basic = b, key, basic

    def call(self, method, path, body=None, headers=None, auth=True):
        data = None
        h = dict(headers or {})
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        if auth and self.key:
            h["Authorization"] = "Bearer " + self.key
        elif auth and self.basic:
            h["Authorization"] = "Basic " + base64.b64encode(self.basic.encode()).decode()
        req = urllib.request.Request(self.b.api_url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                raw = r.read()
                return r.status, dict(r.headers), raw
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def json(self, method, path, body=None, status=200, **kw):
        st, hdrs, raw = self.call(method, path, body, **kw)
        assert st == status, "%s %s: %d %r" % (method, path, st, raw[:500])
        return json.loads(raw) if raw else None

    def get(self, path, **kw):
        return self.json("GET", path, **kw)


@pytest.fixture
def api(broker, tmp_path):
    keys = tmp_path / "api.keys"
    key = make_key(keys)
    b = broker(api={"keys_file": str(keys)}, mqtt={"sys_interval": 1})
    assert b.api_url, "no 'api: listening on' line"
    return Client(b, key)


def documented_endpoints():
    eps = re.findall(r"^### `([A-Z]+) (/[^`]*)`", DOC.read_text(), re.M)
    assert len(eps) >= 18, eps
    return eps


# the forms that take the client id in the body (kick and drop: 404 once
# the client above is gone, like the path forms)
BY_BODY = ("/api/v1/clients/lookup", "/api/v1/clients/kick", "/api/v1/clients/events",
           "/api/v1/sessions/drop")


def test_every_documented_endpoint_exists(api):
    """Parses docs/api.md: each endpoint answers with neither 404-for-an-
    unknown-route nor 405 (path parameters get a real value)."""
    c = Paho(api.b, client_id="doc-client", protocol=mqtt.MQTTv311).connect()
    c.subscribe("doc/#", 1)
    c.publish("doc/t", b"x", qos=1, retain=True)
    seen = []
    for method, path in documented_endpoints():
        if (method, path) == ("POST", "/api/v1/drain"):
            continue  # it would take this broker out of service (test_69)
        real = path.replace("{client_id}", "doc-client").replace("{topic}", "doc%2Ft")
        body = {"topic": "doc/p", "payload": "1"} if method == "POST" else None
        if path in BY_BODY:  # a client id in the body instead of the path
            body = {"client_id": "doc-client"}
        st, hdrs, raw = api.call(method, real, body)
        assert st != 405, (method, path, raw)
        if st == 404:
            # a 404 is allowed only as "that resource is gone" (kick/drop of
            # the client above, once), never as an unknown route
            assert b"no endpoint" not in raw, (method, path, raw)
            if path != "/":
                assert json.loads(raw)["code"] == "not_found"
        assert st < 500, (method, path, st, raw)
        off = st == 409 and json.loads(raw).get("code", "").endswith("_disabled")
        seen.append((method, path, st, off))
    # the dashboard is part D's; everything else answered 2xx
    for method, path, st, off in seen:
        # a module that is off here (commands) answers 409 "..._disabled"
        if (path != "/" and "{client_id}" not in path and path not in BY_BODY
                and not (st == 409 and off)):
            assert 200 <= st < 300, (method, path, st)
    c.client.disconnect()


def test_unknown_route_and_method(api):
    st, _, raw = api.call("GET", "/api/v1/nope")
    assert st == 404 and json.loads(raw)["code"] == "not_found"
    st, hdrs, raw = api.call("PUT", "/api/v1/info")
    assert st == 405
    assert json.loads(raw)["code"] == "method_not_allowed"
    assert hdrs.get("Allow") == "GET"
    st, hdrs, raw = api.call("GET", "/api/v1/publish")
    assert st == 405 and hdrs.get("Allow") == "POST"


def test_401_without_or_with_wrong_credentials(api):
    for path in ("/api/v1/info", "/api/v1/stats", "/metrics", "/api/v1/clients"):
        st, hdrs, raw = api.call("GET", path, auth=False)
        assert st == 401, path
        j = json.loads(raw)
        assert j["code"] == "unauthorized" and j["error"]
        assert "Bearer" in hdrs.get("WWW-Authenticate", "")
        assert "Basic" in hdrs.get("WWW-Authenticate", "")
    bad = Client(api.b, key="ak_" + "0" * 64)
    st, _, _ = bad.call("GET", "/api/v1/info")
    assert st == 401
    st, _, _ = api.call("GET", "/api/v1/info", auth=False,
                        headers={"Authorization": "Bearer " + api.key[:-1] + "0"})
    assert st == 401 or api.key.endswith("0")
    # the dashboard's calls get no browser challenge
    st, hdrs, _ = api.call("GET", "/api/v1/info", auth=False,
                           headers={"X-Requested-With": "antenna-dashboard"})
    assert st == 401 and "WWW-Authenticate" not in hdrs
    # health is open by default, metrics is not
    assert api.call("GET", "/health/live", auth=False)[0] == 200
    assert api.call("GET", "/health/ready", auth=False)[0] == 200


def test_keys_file_stores_only_the_hash(api, tmp_path):
    text = (tmp_path / "api.keys").read_text()
    assert api.key not in text
    import hashlib
    assert "ops:" + hashlib.sha256(api.key.encode()).hexdigest() in text
    assert oct(os.stat(tmp_path / "api.keys").st_mode & 0o777) == "0o600"


def test_basic_auth_with_mosquitto_passwd_file(broker, tmp_path):
    mp = shutil.which("mosquitto_passwd")
    if mp is None:
        pytest.skip("mosquitto_passwd not installed")
    users = tmp_path / "users"
    users.write_text("")
    subprocess.run([mp, "-b", str(users), "admin", "s3cret"], check=True, timeout=10)
    # mosquitto_passwd writes 101 iterations: accepted only when asked
    b = broker(api={"users_file": str(users), "min_password_iterations": 101})
    assert Client(b, basic="admin:s3cret").get("/api/v1/info")["workers"] == 2
    st, _, _ = Client(b, basic="admin:wrong").call("GET", "/api/v1/info")
    assert st == 401
    st, _, _ = Client(b, basic="nobody:s3cret").call("GET", "/api/v1/info")
    assert st == 401


def test_bad_keys_file_refuses_start(broker, tmp_path):
    keys = tmp_path / "bad.keys"
    keys.write_text("ops:not-hex\n")
    with pytest.raises(pytest.fail.Exception) as e:
        broker(api={"keys_file": str(keys)})
    assert "bad.keys:1" in str(e.value)


def test_info_stats_listeners_config(api):
    info = api.get("/api/v1/info")
    assert info["workers"] == 2 and info["listeners"] == 1
    assert info["version"] and info["node"].startswith("antenna@")
    assert info["uptime_s"] >= 0 and info["started_at"] > 1600000000
    c = Paho(api.b, client_id="stats-1").connect()
    c.subscribe("s/#", 1)
    c.publish("s/x", b"hi", qos=1)

    def stats_ok():
        s = api.get("/api/v1/stats")
        return s if (s["connections"]["current"] == 1 and s["sessions"] == 1
                     and s["messages"]["received"] >= 1) else None
    s = wait_for(stats_ok, 5, what="stats to count the client")
    assert s["subscriptions"] >= 1
    assert s["packets"]["received"]["connect"] >= 1
    assert s["packets"]["sent"]["connack"] >= 1
    assert s["packets"]["received"]["subscribe"] >= 1
    assert s["packets"]["sent"]["suback"] >= 1
    assert s["bytes"]["received"] > 0 and s["bytes"]["sent"] > 0
    assert set(s["connections"]["refused"]) == {"max_connections", "rate", "memory", "fd_limit"}
    ls = api.get("/api/v1/listeners")["data"]
    assert ls[0]["port"] == api.b.port and ls[0]["transport"] == "tcp"
    assert ls[0]["connections"] == 1 and ls[0]["type"] == "mqtt"
    cfg = api.get("/api/v1/config")
    assert cfg["listeners"][0]["name"] == "mqtt"
    assert cfg["api"]["keys_file"].endswith("api.keys")
    assert cfg["mqtt"]["sys_interval"] == 1
    assert api.key not in json.dumps(cfg)
    # a module section shows the keys its file takes (conf_key_t tables)
    assert cfg["tracing"]["flush_interval"] > 0 and "flush_interval_ms" not in cfg["tracing"]
    assert cfg["commands"]["acl_admins"] == []
    c.client.disconnect()


def test_clients_list_filters_pagination_and_detail(api):
    clients = []
    for i in range(5):
        c = Paho(api.b, client_id="dev-%d" % i, clean_session=(i != 4)).connect()
        clients.append(c)
    other = Paho(api.b, client_id="other").connect()
    clients[0].subscribe("a/#", 1)
    clients[0].subscribe("b/+", 0)
    j = api.get("/api/v1/clients?client_id_prefix=dev-&limit=2&page=2")
    assert j["total"] == 5 and j["count"] == 2 and j["page"] == 2 and j["limit"] == 2
    assert [x["client_id"] for x in j["data"]] == ["dev-2", "dev-3"]
    j = api.get("/api/v1/clients?limit=1000")
    assert {"dev-0", "dev-4", "other"} <= {x["client_id"] for x in j["data"]}
    j = api.get("/api/v1/clients?address=127.0.0.1&client_id_prefix=other")
    assert j["total"] == 1 and j["data"][0]["address"].startswith("127.0.0.1:")
    j = api.get("/api/v1/clients?address=10.")
    assert j["total"] == 0
    # an offline persistent session
    clients[4].client.disconnect()
    clients[4].client.loop_stop()
    wait_for(lambda: api.get("/api/v1/clients?connected=false")["total"] == 1, 5,
             what="offline session listed")
    off = api.get("/api/v1/clients?connected=false")["data"][0]
    assert off["client_id"] == "dev-4" and off["connected"] is False and off["address"] is None
    assert api.get("/api/v1/clients?connected=true&client_id_prefix=dev-")["total"] == 4
    d = api.get("/api/v1/clients/dev-0")
    assert d["connected"] and d["protocol_version"] == 4 and d["keepalive"] == 60
    assert d["listener"] == "mqtt" and d["connected_at"] > 1600000000
    assert sorted(s["topic"] for s in d["subscriptions"]) == ["a/#", "b/+"]
    assert {s["qos"] for s in d["subscriptions"]} == {0, 1}
    assert d["inflight"] == 0 and d["queued"] == 0
    api.json("GET", "/api/v1/clients/nobody", status=404)
    for bad in ("page=0", "page=x", "limit=0", "limit=1001", "connected=maybe", "limit=-1"):
        st, _, raw = api.call("GET", "/api/v1/clients?" + bad)
        assert st == 400, bad
        j = json.loads(raw)
        assert j["code"] == "bad_request" and j["field"] == bad.split("=")[0], j
    for c in clients[:4] + [other]:
        c.client.disconnect()


def test_subscriptions_and_topics(api):
    a = Paho(api.b, client_id="sub-a").connect()
    b2 = Paho(api.b, client_id="sub-b").connect()
    a.subscribe("t/1", 1)
    a.subscribe("t/#", 0)
    b2.subscribe("t/#", 2)
    j = api.get("/api/v1/subscriptions?client_id=sub-a")
    assert j["total"] == 2 and {s["topic"] for s in j["data"]} == {"t/1", "t/#"}
    j = api.get("/api/v1/subscriptions?topic=t/%23")
    assert j["total"] == 2 and {s["client_id"] for s in j["data"]} == {"sub-a", "sub-b"}
    assert {s["qos"] for s in j["data"]} == {0, 2}
    j = api.get("/api/v1/subscriptions?limit=1")
    assert j["count"] == 1 and j["total"] >= 3
    t = {x["topic"]: x["subscribers"] for x in api.get("/api/v1/topics")["data"]}
    assert t["t/#"] == 2 and t["t/1"] == 1
    a.client.disconnect()
    b2.client.disconnect()


def test_kick_mqtt5_client_gets_0x98(api):
    got = {}
    ev = threading.Event()
    cl = mqtt.Client(client_id="kick-me", protocol=mqtt.MQTTv5)

    def on_disconnect(client, userdata, rc, properties=None):
        got["rc"] = rc
        ev.set()
    cl.on_disconnect = on_disconnect
    cl.connect(api.b.host, api.b.port, 60)
    cl.loop_start()
    try:
        wait_for(lambda: api.get("/api/v1/clients?client_id_prefix=kick-me")["total"] == 1, 5,
                 what="client listed")
        st, _, raw = api.call("DELETE", "/api/v1/clients/kick-me")
        assert st == 204 and raw == b""
        assert ev.wait(5), "paho saw no disconnect"
        rc = got["rc"]
        assert getattr(rc, "value", rc) == 0x98, rc
        api.b.wait_log(r"kick-me.*kicked by the management API")
        # not connected any more: a second kick is 404
        st, _, raw = api.call("DELETE", "/api/v1/clients/kick-me")
        assert st == 404 and json.loads(raw)["code"] == "not_found"
    finally:
        cl.loop_stop()


def test_drop_session(api):
    c = Paho(api.b, client_id="persist-1", clean_session=False).connect()
    c.subscribe("p/#", 1)
    c.client.disconnect()
    c.client.loop_stop()
    wait_for(lambda: api.call("GET", "/api/v1/clients/persist-1")[0] == 200, 5,
             what="offline session")
    st, _, _ = api.call("DELETE", "/api/v1/sessions/persist-1")
    assert st == 204
    api.json("GET", "/api/v1/clients/persist-1", status=404)
    assert api.get("/api/v1/subscriptions?client_id=persist-1")["total"] == 0
    st, _, raw = api.call("DELETE", "/api/v1/sessions/persist-1")
    assert st == 404
    # a connected client: kicked and its session gone
    c2 = Paho(api.b, client_id="persist-2", clean_session=False).connect()
    assert api.call("DELETE", "/api/v1/sessions/persist-2")[0] == 204
    api.json("GET", "/api/v1/clients/persist-2", status=404)
    c2.client.loop_stop()


def test_publish_reaches_paho_subscriber(api):
    import queue
    msgs = queue.Queue()
    acked = threading.Event()
    cl = mqtt.Client(client_id="listener", protocol=mqtt.MQTTv5)
    cl.on_message = lambda c, u, m: msgs.put(m)
    cl.on_subscribe = lambda c, u, mid, rcs, props=None: acked.set()
    cl.on_connect = lambda c, u, f, rc, props=None: c.subscribe("cmd/#", 1)
    cl.connect(api.b.host, api.b.port, 60)
    cl.loop_start()
    assert acked.wait(5), "no SUBACK"
    j = api.json("POST", "/api/v1/publish", {
        "topic": "cmd/1", "payload": "on", "qos": 1,
        "properties": {"content_type": "text/plain", "response_topic": "rsp/1",
                       "correlation_data": base64.b64encode(b"\x01\x02").decode(),
                       "payload_format_indicator": 1, "message_expiry_interval": 60,
                       "user_properties": [["k", "v"], ["k", "w"]]}})
    assert j == {"delivered": 1}
    m = msgs.get(timeout=5)
    assert m.topic == "cmd/1" and m.payload == b"on" and m.qos == 1
    p = m.properties
    assert p.ContentType == "text/plain" and p.ResponseTopic == "rsp/1"
    assert p.CorrelationData == b"\x01\x02" and p.PayloadFormatIndicator == 1
    assert p.UserProperty == [("k", "v"), ("k", "w")]
    assert 0 < p.MessageExpiryInterval <= 60
    # base64 payload, binary
    j = api.json("POST", "/api/v1/publish", {"topic": "cmd/2", "payload_encoding": "base64",
                                             "payload": base64.b64encode(b"\x00\xff").decode()})
    assert j["delivered"] == 1
    m = msgs.get(timeout=5)
    assert m.payload == b"\x00\xff"
    # nobody subscribed
    assert api.json("POST", "/api/v1/publish", {"topic": "nobody/here"})["delivered"] == 0
    cl.disconnect()
    cl.loop_stop()


@pytest.mark.parametrize("body,field", [
    ({}, "topic"),
    ({"topic": ""}, "topic"),
    ({"topic": "a/+"}, "topic"),
    ({"topic": 5}, "topic"),
    ({"topic": "a", "qos": 3}, "qos"),
    ({"topic": "a", "qos": "1"}, "qos"),
    ({"topic": "a", "retain": "yes"}, "retain"),
    ({"topic": "a", "payload": 1}, "payload"),
    ({"topic": "a", "payload": "***", "payload_encoding": "base64"}, "payload"),
    ({"topic": "a", "payload_encoding": "hex"}, "payload_encoding"),
    ({"topic": "a", "extra": 1}, "extra"),
    ({"topic": "a", "properties": []}, "properties"),
    ({"topic": "a", "properties": {"bogus": 1}}, "properties"),
    ({"topic": "a", "properties": {"content_type": 1}}, "properties.content_type"),
    ({"topic": "a", "properties": {"response_topic": "r/#"}}, "properties.response_topic"),
    ({"topic": "a", "properties": {"message_expiry_interval": -1}},
     "properties.message_expiry_interval"),
    ({"topic": "a", "properties": {"payload_format_indicator": 2}},
     "properties.payload_format_indicator"),
    ({"topic": "a", "properties": {"user_properties": [["k"]]}}, "properties.user_properties"),
    ({"topic": "a", "properties": {"correlation_data": "!!"}}, "properties.correlation_data"),
])
def test_publish_validation_names_the_field(api, body, field):
    st, _, raw = api.call("POST", "/api/v1/publish", body)
    assert st == 400, raw
    j = json.loads(raw)
    assert j["code"] == "bad_request" and j["field"] == field, j
    assert j["error"]


def test_publish_refused_when_a_queue_is_full(broker, tmp_path):
    """limits.queue_full: refuse: a QoS 1 publish for a full queue is not
    published (429 quota_exceeded); QoS 0 still is."""
    keys = tmp_path / "api.keys"
    key = make_key(keys)
    c = Client(broker(api={"keys_file": str(keys)}, mqtt={"max_queued": 2, "max_inflight": 1},
                      limits={"queue_full": "refuse"}), key)
    s = c.b.raw_connected("full-q", clean=False)
    assert s.subscribe(1, [("fq/#", 1)]).codes == [1]
    s.go_offline()
    for i in range(2):
        assert c.json("POST", "/api/v1/publish", {"topic": "fq/a", "qos": 1}) == {"delivered": 1}
    # queued by the session's worker (after the store commit)
    wait_for(lambda: c.json("GET", "/api/v1/clients/full-q")["queued"] == 2, 10,
             what="2 messages queued for full-q")
    j = c.json("POST", "/api/v1/publish", {"topic": "fq/a", "qos": 1}, status=429)
    assert j["code"] == "quota_exceeded", j
    assert c.json("POST", "/api/v1/publish", {"topic": "fq/a", "qos": 0}) == {"delivered": 1}


def test_publish_body_not_json(api):
    for body in (b"not json", b"[1,2]", b""):
        st, _, raw = api.call("POST", "/api/v1/publish", body)
        assert st == 400
        assert json.loads(raw)["field"] == "body"


def test_retained_list_get_delete(api):
    api.json("POST", "/api/v1/publish", {"topic": "ret/a/b", "payload": "hello", "qos": 1,
                                         "retain": True,
                                         "properties": {"content_type": "text/plain"}})
    api.json("POST", "/api/v1/publish", {"topic": "ret/bin", "payload_encoding": "base64",
                                         "payload": base64.b64encode(b"\xff\xfe").decode(),
                                         "retain": True})
    j = api.get("/api/v1/retained?topic_prefix=ret/")
    assert j["total"] == 2
    items = {x["topic"]: x for x in j["data"]}
    assert items["ret/a/b"]["preview"] == "hello" and items["ret/a/b"]["payload_size"] == 5
    assert items["ret/bin"]["preview"] is None
    r = api.get("/api/v1/retained/ret%2Fa%2Fb")
    assert r["payload"] == "hello" and r["qos"] == 1
    assert base64.b64decode(r["payload_base64"]) == b"hello"
    assert r["properties"]["content_type"] == "text/plain"
    r = api.get("/api/v1/retained/ret/bin")  # unencoded slashes work too
    assert r["payload"] is None and base64.b64decode(r["payload_base64"]) == b"\xff\xfe"
    # a new subscriber gets it, then it is deleted and a new one does not
    s1 = Paho(api.b, client_id="r1").connect()
    s1.subscribe("ret/a/b", 0)
    assert s1.messages.get(timeout=5).payload == b"hello"
    assert api.call("DELETE", "/api/v1/retained/ret%2Fa%2Fb")[0] == 204
    api.json("GET", "/api/v1/retained/ret%2Fa%2Fb", status=404)
    api.json("DELETE", "/api/v1/retained/ret%2Fa%2Fb", status=404)
    s2 = Paho(api.b, client_id="r2").connect()
    s2.subscribe("ret/a/b", 0)
    time.sleep(0.5)
    assert s2.messages.empty()
    j = api.json("GET", "/api/v1/retained/ret%2F%23", status=400)
    assert j["field"] == "topic"
    # pagination over $SYS + ours, sorted by topic
    all1 = api.get("/api/v1/retained?limit=1000")["data"]
    topics = [x["topic"] for x in all1]
    assert topics == sorted(topics) and "ret/bin" in topics
    p2 = api.get("/api/v1/retained?limit=3&page=2")
    assert [x["topic"] for x in p2["data"]] == topics[3:6]
    s1.client.disconnect()
    s2.client.disconnect()


def test_health(api):
    assert api.get("/health/live") == {"status": "ok"}
    r = api.get("/health/ready")
    assert r["status"] == "ready" and r["workers"] == 2


def test_reload_rereads_keys_file(api, tmp_path):
    newkey = make_key(tmp_path / "api.keys", "second")
    assert Client(api.b, key=newkey).call("GET", "/api/v1/info")[0] == 401
    ans = api.json("POST", "/api/v1/reload")
    assert ans["reloaded"] is True and ans["errors"] == [], ans
    wait_for(lambda: Client(api.b, key=newkey).call("GET", "/api/v1/info")[0] == 200, 5,
             what="new key accepted after reload")
    assert api.call("GET", "/api/v1/info")[0] == 200  # the old key still works


def test_request_body_limit(api):
    st, _, raw = api.call("POST", "/api/v1/publish", b"x" * (1024 * 1024 + 8192))
    assert st == 413 and json.loads(raw)["code"] == "payload_too_large"


def test_api_port_in_use_stops_the_broker(broker, tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        with pytest.raises(pytest.fail.Exception) as e:
            broker(api={"port": port})
        assert "api: cannot listen on 127.0.0.1:%d" % port in str(e.value)
    finally:
        s.close()


def test_apikey_cli_usage(tmp_path):
    b = require_antenna_bin()
    p = subprocess.run([b, "apikey"], capture_output=True, timeout=10)
    assert p.returncode == 2
    p = subprocess.run([b, "apikey", "create", str(tmp_path / "k"), "bad:name"],
                       capture_output=True, timeout=10)
    assert p.returncode == 1 and b"bad key name" in p.stderr
    p = subprocess.run([b, "apikey", "create", str(tmp_path / "nodir" / "k"), "x"],
                       capture_output=True, timeout=10)
    assert p.returncode == 1 and b"cannot open" in p.stderr


def test_json_log_lines_carry_client_fields(broker, tmp_path):
    b = broker(log={"format": "json"})
    c = Paho(b, client_id="json-client").connect()
    c.client.disconnect()
    b.wait_log(r'"client_id":"json-client"')
    b.stop()
    lines = [l for l in b.log_text().splitlines() if l.strip()]
    objs = []
    for l in lines:
        if l.startswith("{"):
            objs.append(json.loads(l))  # every line is valid JSON
    assert len(objs) >= 4 and len(objs) == len([l for l in lines if "ERROR: " not in l])
    for o in objs:
        assert {"ts", "level", "msg"} <= set(o)
    conn = [o for o in objs if o.get("client_id") == "json-client"]
    assert any("connected (MQTT" in o["msg"] for o in conn)
    assert any("disconnected" in o["msg"] for o in conn)
    assert all(re.fullmatch(r"127\.0\.0\.1:\d+", o["peer"]) for o in conn)


def test_log_target_file_needs_file(broker, tmp_path):
    with pytest.raises(pytest.fail.Exception) as e:
        broker(log={"target": "file"})
    assert "log.target is file but log.file is empty" in str(e.value)


def test_refused_connection_log_names_the_peer(broker):
    b = broker(listener={"max_connections": 1})
    c = Paho(b, client_id="first").connect()
    import socket
    s = socket.create_connection((b.host, b.port), timeout=5)
    try:
        b.wait_log(r"connection from 127\.0\.0\.1:\d+ refused: the listener's max_connections")
    finally:
        s.close()
        c.client.disconnect()


def test_connect_refusal_logs_client_and_counts_auth_failure(broker, tmp_path):
    keys = tmp_path / "k"
    key = make_key(keys)
    b = broker(log={"format": "json"}, mqtt={"allow_anonymous": False},
               api={"keys_file": str(keys)})
    api = Client(b, key)
    c = b.raw()
    ack = c.connect("anon-1")
    assert ack.rc == 5
    m = b.wait_log(r'"client_id":"anon-1"')
    line = [l for l in b.log_text().splitlines() if '"client_id":"anon-1"' in l][0]
    o = json.loads(line)
    assert "CONNECT refused" in o["msg"] and "anonymous" in o["msg"]
    assert re.fullmatch(r"127\.0\.0\.1:\d+", o["peer"])
    ok = Paho(b, client_id="named")
    ok.client.username_pw_set("user", "pw")
    ok.connect()
    s = api.get("/api/v1/stats")
    assert s["auth"] == {"success": 1, "failure": 1}
    ok.client.disconnect()


def test_sys_topics_extended(broker):
    b = broker(mqtt={"sys_interval": 1})
    c = Paho(b, client_id="sys-reader").connect()
    c.subscribe("$SYS/broker/#", 0)
    want = {"$SYS/broker/packets/received/connect", "$SYS/broker/packets/sent/connack",
            "$SYS/broker/packets/received/subscribe", "$SYS/broker/messages/received/qos0",
            "$SYS/broker/sessions/count", "$SYS/broker/messages/inflight",
            "$SYS/broker/messages/queued", "$SYS/broker/auth/success"}
    got = {}
    deadline = time.monotonic() + 10
    def done():
        return (want <= set(got) and got["$SYS/broker/sessions/count"] == b"1"
                and int(got["$SYS/broker/packets/received/connect"]) >= 1
                and int(got["$SYS/broker/auth/success"]) >= 1)
    while time.monotonic() < deadline and not done():
        try:
            m = c.messages.get(timeout=1)
        except Exception:
            continue
        got[m.topic] = m.payload
    assert want <= set(got), want - set(got)
    assert int(got["$SYS/broker/packets/received/connect"]) >= 1
    assert got["$SYS/broker/sessions/count"] == b"1"
    c.client.disconnect()


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")
def test_https(broker, tmp_path):
    """api.tls_cert/tls_key: HTTPS (libmicrohttpd with GnuTLS), the
    certificate verified by the client against itself."""
    import ssl
    crt, key_pem = tmp_path / "api.crt", tmp_path / "api.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key_pem), "-out", str(crt), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True, timeout=60)
    keys = tmp_path / "k"
    key = make_key(keys)
    b = broker(api={"keys_file": str(keys), "tls_cert": str(crt), "tls_key": str(key_pem)})
    assert b.api_url.startswith("https://")
    ctx = ssl.create_default_context(cafile=str(crt))
    req = urllib.request.Request(b.api_url + "/api/v1/info",
                                 headers={"Authorization": "Bearer " + key})
    with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
        assert r.status == 200 and json.loads(r.read())["workers"] == 2
    # plain HTTP on the HTTPS port gets no API answer
    with pytest.raises(Exception):
        urllib.request.urlopen(b.api_url.replace("https", "http") + "/health/live", timeout=5).read()


def test_tls_files_missing_refuse_start(broker, tmp_path):
    with pytest.raises(pytest.fail.Exception) as e:
        broker(api={"tls_cert": str(tmp_path / "none.crt"), "tls_key": str(tmp_path / "none.key")})
    assert "none.crt" in str(e.value)


def test_kick_publishes_the_will_drop_does_not(api):
    watcher = Paho(api.b, client_id="will-watch").connect()
    watcher.subscribe("will/#", 0)
    k = Paho(api.b, client_id="will-k", will=("will/k", b"gone-k", 0, False)).connect()
    d = Paho(api.b, client_id="will-d", will=("will/d", b"gone-d", 0, False)).connect()
    assert api.call("DELETE", "/api/v1/clients/will-k")[0] == 204
    m = watcher.messages.get(timeout=5)
    assert (m.topic, m.payload) == ("will/k", b"gone-k")
    assert api.call("DELETE", "/api/v1/sessions/will-d")[0] == 204
    time.sleep(0.5)
    assert watcher.messages.empty()
    for c in (k, d):
        c.client.loop_stop()
    watcher.client.disconnect()
