"""The rule engine (src/rules, docs/rules.md): rules from the file and the
API evaluated on real messages and events, republished to templated topics,
the test endpoint, start-up errors with the column, no republish loop, the
counters."""

import json
import re
import subprocess
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conftest import IS_MOSQUITTO, require_antenna_bin
from helpers import Paho
from test_50_api import Client
from test_61_modules import SectionBrokers

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="antenna's rule engine")

HOT = """rules:
  rules:
    - id: hot
      sql: SELECT clientid, payload.temp AS t, topic(2) AS dev FROM "sensors/+/data" WHERE payload.temp > 30
      actions:
        - type: republish
          topic: alerts/${dev}
          payload: '{"t": ${t}, "c": "${clientid}"}'
"""


@pytest.fixture
def rbroker(tmp_path):
    brokers = SectionBrokers(tmp_path)

    def start(section=HOT, **overrides):
        return brokers(section, **overrides)

    yield start
    brokers.close()


def expect_marker(sub, pub, marker_topic="alerts/marker", first=0):
    """Return everything the subscriber got from the earlier publishes: the
    `first` messages the caller expects, waited for (a republish is routed
    at the worker's next turn, so a marker published now may overtake it),
    then whatever arrives before a marker published through a rule-free
    path (what should not be there)."""
    got = []
    deadline = time.monotonic() + 30
    while len(got) < first:
        assert time.monotonic() < deadline, "%d of %d messages: %r" % (len(got), first, got)
        m = sub.get(timeout=max(0.01, deadline - time.monotonic()))
        got.append((m.topic, m.payload))
    pub.publish(marker_topic, b"end", qos=1)
    while time.monotonic() < deadline:
        m = sub.get(timeout=deadline - time.monotonic())
        if m.topic == marker_topic:
            return got
        got.append((m.topic, m.payload))
    raise AssertionError("no marker; got %r" % got)


def rule(b, rid):
    return b.rapi.json("GET", "/api/v1/rules/" + rid)


def wait_metric(b, rid, key, want, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        m = rule(b, rid)["metrics"]
        if m[key] >= want:
            return m
        assert time.monotonic() < deadline, (key, want, m)
        time.sleep(0.05)


def test_where_on_json_payload_republishes_templated(rbroker):
    b = rbroker()
    with Paho(b, "sub") as sub, Paho(b, "pub1") as pub:
        sub.subscribe("alerts/#", qos=1)
        pub.publish("sensors/d1/data", b'{"temp": 25}', qos=1)   # WHERE false
        pub.publish("sensors/d2/data", b'{"temp": 35}', qos=1)   # passes
        pub.publish("sensors/d3/data", b'not json', qos=1)       # payload.temp null
        pub.publish("other/d4/data", b'{"temp": 99}', qos=1)     # not selected
        got = expect_marker(sub, pub, first=1)
        assert got == [("alerts/d2", b'{"t": 35, "c": "pub1"}')], got
        m = wait_metric(b, "hot", "matched", 3)
        assert m["matched"] == 3 and m["passed"] == 1 and m["failed"] == 0, m
        assert m["actions"][0]["success"] == 1, m
    st, _, raw = b.rapi.call("GET", "/metrics")
    assert st == 200
    text = raw.decode()
    assert re.search(r'^antenna_rule_matched_total\{rule="hot"\} 3$', text, re.M), text[-2000:]
    assert re.search(r'^antenna_rule_passed_total\{rule="hot"\} 1$', text, re.M)
    assert 'result="success"} 1' in text


def test_topic_level_and_user_properties(rbroker):
    sec = """rules:
  rules:
    - id: up
      sql: SELECT topic(3) AS lvl, user_property.site AS site, upper(clientid) AS c FROM "a/+/+" WHERE user_property.site = 'north'
      actions:
        - type: republish
          topic: out/${site}/${lvl}
          payload: ${c}
"""
    b = rbroker(sec)
    with Paho(b, "sub") as sub:
        sub.subscribe("out/#", qos=1)
        pub = mqtt.Client(client_id="p5", protocol=mqtt.MQTTv5)
        pub.connect(b.host, b.port)
        pub.loop_start()
        try:
            for site in ("south", "north"):
                pr = Properties(PacketTypes.PUBLISH)
                pr.UserProperty = [("site", site)]
                pub.publish("a/b/" + site + "-lvl", b"x", qos=1, properties=pr).wait_for_publish(5)
            got = expect_marker(sub, pub, "out/marker", 1)
            assert got == [("out/north/north-lvl", b"P5")], got
        finally:
            pub.loop_stop()
            pub.disconnect()


def test_event_rule_on_connect(rbroker):
    sec = """rules:
  rules:
    - id: conn
      sql: SELECT clientid, event, protocol FROM "$events/client_connected" WHERE clientid LIKE 'dev-%'
      actions:
        - type: republish
          topic: presence/${clientid}
"""
    b = rbroker(sec)
    with Paho(b, "watcher") as sub:
        sub.subscribe("presence/#", qos=1)
        with Paho(b, "other"):
            pass
        with Paho(b, "dev-7"):
            m = sub.get()
        assert m.topic == "presence/dev-7", m.topic
        row = json.loads(m.payload)
        assert row == {"clientid": "dev-7", "event": "client_connected",
                       "protocol": "mqtt3.1.1"}, row


def test_api_create_change_disable_delete(rbroker):
    b = rbroker("")
    with Paho(b, "sub") as sub, Paho(b, "pub") as pub:
        sub.subscribe("r/#", qos=1)
        d = {"id": "r1", "sql": "SELECT payload FROM \"in/#\"",
             "actions": [{"type": "republish", "topic": "r/one", "payload": "${payload}"}]}
        created = b.rapi.json("POST", "/api/v1/rules", d, status=201)
        assert created["id"] == "r1" and created["enabled"] is True
        b.rapi.json("POST", "/api/v1/rules", d, status=409)
        pub.publish("in/x", b"a", qos=1)
        assert expect_marker(sub, pub, "r/marker", 1) == [("r/one", b"a")]
        # change: another topic and a WHERE
        d2 = dict(d, sql="SELECT payload FROM \"in/#\" WHERE payload = 'b'",
                  actions=[{"type": "republish", "topic": "r/two", "payload": "${payload}"}])
        b.rapi.json("PUT", "/api/v1/rules/r1", d2)
        pub.publish("in/x", b"a", qos=1)
        pub.publish("in/x", b"b", qos=1)
        assert expect_marker(sub, pub, "r/marker", 1) == [("r/two", b"b")]
        b.rapi.json("POST", "/api/v1/rules/r1/disable")
        assert rule(b, "r1")["enabled"] is False
        pub.publish("in/x", b"b", qos=1)
        assert expect_marker(sub, pub, "r/marker") == []
        b.rapi.json("POST", "/api/v1/rules/r1/enable")
        pub.publish("in/x", b"b", qos=1)
        assert expect_marker(sub, pub, "r/marker", 1) == [("r/two", b"b")]
        listed = b.rapi.json("GET", "/api/v1/rules")["data"]
        assert [r["id"] for r in listed] == ["r1"]
        b.rapi.json("DELETE", "/api/v1/rules/r1", status=204)
        b.rapi.json("GET", "/api/v1/rules/r1", status=404)
        pub.publish("in/x", b"b", qos=1)
        assert expect_marker(sub, pub, "r/marker") == []
        bad = b.rapi.json("POST", "/api/v1/rules", {"id": "x", "sql": "SELECT topic FORM \"t\""},
                         status=400)
        assert bad["column"] == 14 and "FORM" in bad["error"], bad


def test_test_endpoint_rows_and_errors(rbroker):
    b = rbroker("")
    out = b.rapi.json("POST", "/api/v1/rules/test", {
        "sql": "SELECT upper(topic) AS u, payload.a.b[0] AS x FROM \"x/#\"",
        "message": {"topic": "x/y", "payload": "{}"}}, status=400)
    assert out["column"] == 38 and out["token"] == "[", out
    out = b.rapi.json("POST", "/api/v1/rules/test", {
        "sql": "SELECT upper(topic) AS u, payload.a.b AS b, md5('a') AS h, qos + 1 AS q "
               "FROM \"x/#\" WHERE payload.a.n >= 2 AND topic(2) IN ('y', 'z')",
        "message": {"topic": "x/y", "qos": 1, "payload": "{\"a\": {\"b\": [1, 2], \"n\": 2}}"}})
    assert out["matched"] and out["passed"], out
    assert out["rows"] == [{"u": "X/Y", "b": [1, 2], "h": "0cc175b9c0f1b6a831c399e269772661",
                            "q": 2}], out
    out = b.rapi.json("POST", "/api/v1/rules/test", {
        "sql": "SELECT 1 FROM \"x/#\" WHERE payload.n > 5", "message": {"topic": "x/y",
                                                                        "payload": "{\"n\": 1}"}})
    assert out == {"matched": True, "passed": False, "rows": []}, out
    out = b.rapi.json("POST", "/api/v1/rules/test", {"sql": "SELECT topic FORM \"t\""}, status=400)
    assert out["column"] == 14 and out["token"] == "FORM", out
    assert out["error"] == 'column 14: unexpected token "FORM", expected FROM', out


def test_bad_rule_in_file_refuses_start(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("rules:\n  rules:\n    - id: a\n"
                    "      sql: SELECT clientid, payload FORM \"t/#\"\n")
    p = subprocess.run([require_antenna_bin(), "check", "-c", str(path)], capture_output=True,
                       text=True, timeout=30)
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert 'r.yaml:4: rules.rules[0].sql: column 26: unexpected token "FORM", expected FROM' in out, out
    path.write_text("rules:\n  rules:\n    - id: a\n      sql: SELECT 1 FROM \"t\"\n"
                    "      actions:\n        - type: republish\n          topic: x\n          qoss: 1\n")
    p = subprocess.run([require_antenna_bin(), "check", "-c", str(path)], capture_output=True,
                       text=True, timeout=30)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "r.yaml:8: rules.rules[0].actions[0].qoss" in out, out


def test_republish_loop_does_not_loop(rbroker):
    sec = """rules:
  rules:
    - id: loop
      sql: SELECT payload FROM "loop/#"
      actions:
        - type: republish
          topic: loop/again
          payload: ${payload}
"""
    b = rbroker(sec)
    with Paho(b, "sub") as sub, Paho(b, "pub") as pub:
        sub.subscribe("loop/#", qos=1)
        pub.publish("loop/start", b"x", qos=1)
        got = expect_marker(sub, pub, "loop/marker", 2)
        # the original, its one republish; the marker itself is republished
        # once more after it, and nothing else
        assert got == [("loop/start", b"x"), ("loop/again", b"x")], got
        m = sub.get()
        assert (m.topic, m.payload) == ("loop/again", b"end")
        sub.expect_nothing(0.5)
        m = wait_metric(b, "loop", "matched", 2)
        assert m["matched"] == 2 and m["passed"] == 2, m


def test_api_rules_survive_a_restart(rbroker):
    b = rbroker(HOT)
    d = {"id": "kept", "sql": "SELECT payload FROM \"k/#\"",
         "actions": [{"type": "republish", "topic": "k-out/x", "payload": "${payload}"}]}
    b.rapi.json("POST", "/api/v1/rules", d, status=201)
    b.rapi.json("DELETE", "/api/v1/rules/hot", status=204)  # a file rule, deleted for good
    b.stop()
    b.start()
    listed = b.rapi.json("GET", "/api/v1/rules")["data"]
    assert [r["id"] for r in listed] == ["kept"], listed
    with Paho(b, "sub") as sub, Paho(b, "pub") as pub:
        sub.subscribe("k-out/#", qos=1)
        pub.publish("k/1", b"v", qos=1)
        assert expect_marker(sub, pub, "k-out/marker", 1) == [("k-out/x", b"v")]


def test_ctl_rules(rbroker):
    b = rbroker(HOT)
    key = b.rapi.key

    def ctl(*args, ok=True):
        p = subprocess.run([require_antenna_bin(), "ctl", "--url", b.api_url, "--key", key]
                           + list(args), capture_output=True, text=True, timeout=20)
        assert (p.returncode == 0) == ok, (args, p.stdout, p.stderr)
        return p.stdout + p.stderr

    out = ctl("rules")
    assert "hot" in out and "1 rules" in out, out
    d = {"id": "c1", "sql": "SELECT topic FROM \"c/#\""}
    assert '"id": "c1"' in ctl("--json", "rules", "create", json.dumps(d))
    assert "c1" in ctl("rules", "show", "c1")
    ctl("rules", "disable", "c1")
    assert rule(b, "c1")["enabled"] is False
    ctl("rules", "enable", "c1")
    assert rule(b, "c1")["enabled"] is True
    out = json.loads(ctl("--json", "rules", "test", "SELECT topic(2) AS d FROM \"a/#\"",
                         '{"topic": "a/b"}'))
    assert out["rows"] == [{"d": "b"}], out
    out = ctl("rules", "test", "SELECT topic FORM \"a\"", ok=False)
    assert "column 14" in out, out
    assert "deleted" in ctl("rules", "delete", "c1")
    b.rapi.json("GET", "/api/v1/rules/c1", status=404)


RELOADED = """rules:
  rules:
    - id: hot
      sql: SELECT clientid, payload.temp AS t, topic(2) AS dev FROM "sensors/+/data" WHERE payload.temp > 30
      actions:
        - type: republish
          topic: alerts/${dev}
          payload: '{"t": ${t}, "c": "${clientid}"}'
    - id: cold
      sql: SELECT payload.temp AS t, topic(2) AS dev FROM "sensors/+/data" WHERE payload.temp < 0
      actions:
        - type: republish
          topic: frost/${dev}
          payload: '${t}'
"""


def reload(b):
    return b.rapi.json("POST", "/api/v1/reload")


def test_reload_applies_the_files_rules_and_keeps_the_apis(rbroker):
    """SIGHUP / ctl reload: the file's rules change live; an unchanged rule
    keeps its counters; a rule created through the API stays."""
    b = rbroker()
    b.rapi.json("POST", "/api/v1/rules", {
        "id": "api-rule", "sql": 'SELECT topic FROM "api/#"',
        "actions": [{"type": "republish", "topic": "seen/${topic}"}]}, status=201)
    with Paho(b, "sub") as sub, Paho(b, "pub1") as pub:
        sub.subscribe("alerts/#", 1)
        sub.subscribe("frost/#", 1)
        pub.publish("sensors/a/data", b'{"temp": 40}', qos=1)
        wait_metric(b, "hot", "passed", 1)
        b.sections = RELOADED
        b.write_config()
        ans = reload(b)
        assert "rules.rules" in ans["applied"] and ans["errors"] == [], ans
        ids = [r["id"] for r in b.rapi.json("GET", "/api/v1/rules")["data"]]
        assert sorted(ids) == ["api-rule", "cold", "hot"], ids
        # the unchanged rule kept its counters
        assert rule(b, "hot")["metrics"]["passed"] == 1
        pub.publish("sensors/b/data", b'{"temp": -5}', qos=1)
        got = []
        deadline = time.monotonic() + 10
        while ("frost/b", b"-5") not in got:
            assert time.monotonic() < deadline, got
            m = sub.get(timeout=max(0.01, deadline - time.monotonic()))
            got.append((m.topic, m.payload))
        # back to one rule: cold goes, the API's rule stays
        b.sections = HOT
        b.write_config()
        ans = reload(b)
        assert "rules.rules" in ans["applied"], ans
        ids = [r["id"] for r in b.rapi.json("GET", "/api/v1/rules")["data"]]
        assert sorted(ids) == ["api-rule", "hot"], ids


def test_reload_with_a_bad_rule_changes_nothing(rbroker):
    b = rbroker()
    b.sections = HOT + """    - id: drops
      sql: SELECT clientid FROM "$events/message_dropped"
"""
    b.write_config()
    st, _, raw = b.rapi.call("POST", "/api/v1/reload")
    ans = json.loads(raw)
    assert ans["errors"] and "message_dropped" in ans["errors"][0], (st, ans)
    ids = [r["id"] for r in b.rapi.json("GET", "/api/v1/rules")["data"]]
    assert ids == ["hot"], ids
    # a key that needs a restart is named, the rules still apply
    b.sections = RELOADED.replace("rules:\n  rules:", "rules:\n  max_pending: 77\n  rules:", 1)
    b.write_config()
    ans = reload(b)
    assert "rules.max_pending" in ans["restart_required"], ans
    assert "rules.rules" in ans["applied"], ans
    ids = sorted(r["id"] for r in b.rapi.json("GET", "/api/v1/rules")["data"])
    assert ids == ["cold", "hot"], ids
