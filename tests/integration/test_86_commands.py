"""Downlink commands (src/commands, docs/commands.md): POST a command to a
device, delivered as a PUBLISH to $cmd/{id}/{name}, the device's replies on
$cmd/{id}/reply (MQTT 5: Correlation Data) or $cmd/{id}/reply/{cmd id}
(MQTT 3.1.1), the lifecycle read back through GET ?wait=, timeouts,
expiry, cancel, queued commands to an offline device, the metrics."""

import json
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conftest import IS_MOSQUITTO, wait_for
from test_61_modules import section_fixture

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="antenna's commands module")

SECTION = """commands:
  enabled: true
  reply_timeout: 20s
  retry_interval: 500ms
"""
DEADLINE = 20.0


@pytest.fixture
def cbroker(tmp_path):
    yield from section_fixture(tmp_path, SECTION)


class Device:
    """A paho device that answers commands: mode "ok", "fail", "silent",
    "ack" (an ack, then a result after `late` seconds)."""

    def __init__(self, b, cid, v5=True, mode="ok", late=0.0, clean=True):
        self.b, self.cid, self.v5, self.mode, self.late = b, cid, v5, mode, late
        self.got = []
        self.connected = False
        proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        kw = {} if v5 else {"clean_session": clean}
        self.c = mqtt.Client(client_id=cid, protocol=proto, **kw)
        self.c.on_message = self.on_message
        self.c.on_connect = lambda *a: setattr(self, "connected", True)

    def connect(self):
        self.c.connect(self.b.host, self.b.port, keepalive=30)
        self.c.loop_start()
        wait_for(lambda: self.connected, DEADLINE, what="%s connected" % self.cid)
        return self

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()

    def reply(self, msg, body):
        data = json.dumps(body)
        if self.v5:
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = msg.properties.CorrelationData
            self.c.publish(msg.properties.ResponseTopic, data, qos=1, properties=props)
        else:
            self.c.publish(json.loads(msg.payload)["reply_topic"], data, qos=1)

    def on_message(self, client, userdata, msg):
        self.got.append(msg)
        if self.mode == "silent":
            return
        if self.mode == "ack":
            self.reply(msg, {"ack": True})
            if self.late:
                import threading
                threading.Timer(self.late, self.reply,
                                (msg, {"status": "succeeded", "result": {"late": True}})).start()
            return
        p = json.loads(msg.payload)
        status = "succeeded" if self.mode == "ok" else "failed"
        self.reply(msg, {"status": status, "result": {"echo": p["params"]}})


def send(b, dev, body, status=202):
    return b.rapi.json("POST", "/api/v1/devices/%s/commands" % dev, body, status=status)


def final(b, cid, deadline=DEADLINE):
    """GET ?wait= until the command is final (bounded)."""
    end = time.monotonic() + deadline
    while True:
        c = b.rapi.get("/api/v1/commands/%s?wait=2s" % cid)
        if c["status"] in ("succeeded", "failed", "timed_out", "expired", "cancelled"):
            return c
        assert time.monotonic() < end, "command %s still %s" % (cid, c["status"])


def state(b, cid):
    return b.rapi.get("/api/v1/commands/%s" % cid)["status"]


def test_v5_device_succeeds(cbroker):
    b = cbroker()
    d = Device(b, "dev5").connect()
    r = send(b, "dev5", {"name": "reboot", "params": {"delay": 3}, "qos": 1})
    assert r["status"] == "queued" and r["id"].startswith("c")
    c = final(b, r["id"])
    assert c["status"] == "succeeded", c
    assert c["result"] == {"echo": {"delay": 3}}
    assert c["device"] == "dev5" and c["name"] == "reboot" and c["attempts"] == 1
    m = d.got[0]
    assert m.topic == "$cmd/dev5/reboot" and m.qos == 1
    assert m.properties.ResponseTopic == "$cmd/dev5/reply"
    assert m.properties.CorrelationData == r["id"].encode()
    assert json.loads(m.payload)["params"] == {"delay": 3}
    lst = b.rapi.get("/api/v1/devices/dev5/commands")["data"]
    assert [x["id"] for x in lst] == [r["id"]]
    d.close()


def test_v311_device_fails_and_qos2(cbroker):
    b = cbroker()
    d = Device(b, "dev3", v5=False, mode="fail").connect()
    r = send(b, "dev3", {"name": "flash", "params": [1, 2], "qos": 2})
    c = final(b, r["id"])
    assert c["status"] == "failed" and c["result"] == {"echo": [1, 2]}, c
    assert json.loads(d.got[0].payload)["reply_topic"] == "$cmd/dev3/reply/" + r["id"]
    d.close()


def test_ack_then_late_result(cbroker):
    b = cbroker()
    d = Device(b, "devlate", mode="ack", late=1.0).connect()
    r = send(b, "devlate", {"name": "scan", "qos": 1})
    wait_for(lambda: state(b, r["id"]) in ("acked", "succeeded"), DEADLINE, what="acked")
    c = final(b, r["id"])
    assert c["status"] == "succeeded" and c["result"] == {"late": True}, c
    d.close()


def test_silent_device_times_out(cbroker):
    b = cbroker()
    d = Device(b, "devmute", mode="silent").connect()
    r = send(b, "devmute", {"name": "noop", "qos": 1, "reply_timeout": 1})
    c = final(b, r["id"])
    assert c["status"] == "timed_out", c
    assert len(d.got) >= 1
    d.close()


def test_offline_device_gets_it_when_back(cbroker):
    b = cbroker()
    r = send(b, "devoff", {"name": "sync", "params": {"x": 1}, "qos": 1})
    assert state(b, r["id"]) == "queued"
    d = Device(b, "devoff").connect()
    c = final(b, r["id"])
    assert c["status"] == "succeeded", c
    d.close()


def test_expired_and_cancelled(cbroker):
    b = cbroker()
    r1 = send(b, "nobody", {"name": "a", "expiry": 0.5})
    r2 = send(b, "nobody", {"name": "b"})
    assert final(b, r1["id"])["status"] == "expired"
    c = b.rapi.json("DELETE", "/api/v1/commands/%s" % r2["id"])
    assert c["status"] == "cancelled"
    b.rapi.json("DELETE", "/api/v1/commands/%s" % r2["id"], status=409)
    # a cancelled command is not sent when the device comes
    d = Device(b, "nobody").connect()
    r3 = send(b, "nobody", {"name": "c"})
    assert final(b, r3["id"])["status"] == "succeeded"
    assert [m.topic for m in d.got] == ["$cmd/nobody/c"]
    d.close()


def test_only_the_device_replies(cbroker):
    b = cbroker()
    d = Device(b, "devx", mode="silent").connect()
    r = send(b, "devx", {"name": "open", "qos": 1, "reply_timeout": 30})
    wait_for(lambda: d.got, DEADLINE, what="command received")
    other = mqtt.Client(client_id="intruder",
                        protocol=mqtt.MQTTv311)
    other.connect(b.host, b.port)
    other.loop_start()
    other.publish("$cmd/devx/reply/" + r["id"], json.dumps({"status": "succeeded"}), qos=1).wait_for_publish(10)
    other.publish("$cmd/intruder/reply/" + r["id"], json.dumps({"status": "succeeded"}), qos=1).wait_for_publish(10)
    # the device's own reply afterwards is what counts
    d.mode = "ok"
    d.reply(d.got[0], {"status": "failed", "result": "mine"})
    c = final(b, r["id"])
    assert c["status"] == "failed" and c["result"] == "mine", c
    other.disconnect()
    other.loop_stop()
    d.close()


def test_errors_and_metrics(cbroker):
    b = cbroker()
    send(b, "d1", {"name": "a/b"}, status=400)
    send(b, "d1", {"name": "x", "qos": 3}, status=400)
    b.rapi.json("GET", "/api/v1/commands/c999", status=404)
    r = send(b, "d1", {"name": "x"})
    b.rapi.json("DELETE", "/api/v1/commands/%s" % r["id"])
    st, _, raw = b.rapi.call("GET", "/metrics")
    text = raw.decode()
    assert 'antenna_commands{status="cancelled"} 1' in text
    assert "antenna_commands_in_flight 0" in text


def test_disabled_by_default(cbroker):
    b = cbroker(section="")
    b.rapi.json("POST", "/api/v1/devices/d/commands", {"name": "x"}, status=409)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_queued_command_survives_restart(cbroker, how):
    b = cbroker()
    r = send(b, "devr", {"name": "later", "params": {"n": 7}, "qos": 1})
    done = send(b, "devr", {"name": "gone"})
    b.rapi.json("DELETE", "/api/v1/commands/%s" % done["id"])
    # the POST's record is committed before its 202; the cancel is queued
    # to the store: wait until a SIGKILL cannot lose it (a barrier: the
    # next POST is synchronous and commits after it)
    send(b, "other", {"name": "barrier"})
    if how == "sigkill":
        b.kill()
    else:
        b.stop()
    b.stopped = False
    b.start()
    assert state(b, r["id"]) == "queued"
    assert state(b, done["id"]) == "cancelled"
    d = Device(b, "devr").connect()
    c = final(b, r["id"])
    assert c["status"] == "succeeded" and c["result"] == {"echo": {"n": 7}}, c
    assert [m.topic for m in d.got] == ["$cmd/devr/later"]
    # ids go on after the stored ones
    r2 = send(b, "devr", {"name": "next"})
    assert int(r2["id"][1:], 16) > int(r["id"][1:], 16)
    d.close()


RULES = SECTION + """rules:
  rules:
    - id: cmdstatus
      sql: SELECT clientid, reason AS st, payload.id AS cid FROM "$events/command_status"
      actions:
        - type: republish
          topic: cmdstatus/${clientid}
          payload: '{"id": "${cid}", "status": "${st}"}'
"""


def test_command_status_events_reach_rules(cbroker):
    b = cbroker(section=RULES)
    seen = []
    sub = mqtt.Client(client_id="watcher")
    sub.on_message = lambda c, u, m: seen.append(json.loads(m.payload))
    subscribed = []
    sub.on_subscribe = lambda *a: subscribed.append(1)
    sub.connect(b.host, b.port)
    sub.loop_start()
    sub.subscribe("cmdstatus/#", qos=1)
    wait_for(lambda: subscribed, DEADLINE, what="subscribed")
    d = Device(b, "devev").connect()
    r = send(b, "devev", {"name": "x", "qos": 1})
    assert final(b, r["id"])["status"] == "succeeded"
    wait_for(lambda: any(e["status"] == "succeeded" for e in seen), DEADLINE, what="events")
    got = [e["status"] for e in seen if e["id"] == r["id"]]
    assert got[0] == "queued" and got[-1] == "succeeded", got
    assert "sent" in got, got
    r2 = send(b, "offline1", {"name": "y"})
    b.rapi.json("DELETE", "/api/v1/commands/%s" % r2["id"])
    wait_for(lambda: any(e["id"] == r2["id"] and e["status"] == "cancelled" for e in seen),
             DEADLINE, what="cancelled event")
    sub.disconnect()
    sub.loop_stop()
    d.close()


def test_resent_until_acknowledged(cbroker):
    """A device that does not PUBACK gets the command again every
    retry_interval, `retries` times; its PUBACK then makes it delivered."""
    b = cbroker()
    raw = b.raw_connected("devraw")
    r = send(b, "devraw", {"name": "blink", "qos": 1, "retries": 2, "retry_interval": 0.3,
                           "reply_timeout": 30})
    pubs = [raw.recv_publish(timeout=DEADLINE) for _ in range(3)]
    assert all(p.topic == "$cmd/devraw/blink" for p in pubs)
    assert all(json.loads(p.payload)["id"] == r["id"] for p in pubs)
    wait_for(lambda: b.rapi.get("/api/v1/commands/%s" % r["id"])["attempts"] == 3, DEADLINE,
             what="3 attempts")
    raw.expect_nothing(timeout=0.8)  # no fourth
    assert state(b, r["id"]) == "sent"
    raw.ack(pubs[-1])
    wait_for(lambda: state(b, r["id"]) == "delivered", DEADLINE, what="delivered")
    raw.publish(json.loads(pubs[0].payload)["reply_topic"],
                json.dumps({"status": "succeeded", "result": 1}).encode())
    assert final(b, r["id"])["status"] == "succeeded"
    raw.close()


def test_group_command_by_prefix(cbroker):
    b = cbroker()
    devs = [Device(b, "fleet-%d" % i, v5=bool(i % 2)).connect() for i in range(3)]
    quiet = Device(b, "fleet-x", mode="silent").connect()
    other = Device(b, "other-1").connect()
    r = b.rapi.json("POST", "/api/v1/groups/commands",
                    {"selector": {"client_id_prefix": "fleet-"}, "name": "update",
                     "params": {"v": 2}, "qos": 1, "reply_timeout": 1.5}, status=202)
    assert r["count"] == 4 and r["group"].startswith("g"), r
    assert sorted(c["device"] for c in r["commands"]) == ["fleet-0", "fleet-1", "fleet-2",
                                                          "fleet-x"]
    for c in r["commands"]:
        final(b, c["id"])
    p = b.rapi.get("/api/v1/groups/commands/%s" % r["group"])
    assert p["count"] == 4 and p["done"] == 4, p
    assert p["by_status"]["succeeded"] == 3 and p["by_status"]["timed_out"] == 1, p
    assert other.got == []
    b.rapi.json("POST", "/api/v1/groups/commands",
                {"selector": {"tags": ["a"]}, "name": "x"}, status=400)
    b.rapi.json("GET", "/api/v1/groups/commands/g999", status=404)
    for d in devs + [quiet, other]:
        d.close()


def test_ctl_commands(cbroker):
    import subprocess
    from conftest import require_antenna_bin
    b = cbroker()

    def ctl(*args, ok=True):
        p = subprocess.run([require_antenna_bin(), "ctl", "--url", b.api_url, "--key", b.rapi.key]
                           + list(args), capture_output=True, text=True, timeout=20)
        assert (p.returncode == 0) == ok, (args, p.stdout, p.stderr)
        return p.stdout + p.stderr

    d = Device(b, "devctl").connect()
    out = ctl("--json", "commands", "send", "devctl", "ping", '{"a": 1}')
    cid = json.loads(out)["id"]
    assert final(b, cid)["status"] == "succeeded"
    assert "succeeded" in ctl("commands", "show", cid)
    out = ctl("commands", "list", "devctl")
    assert cid in out and "ping" in out, out
    r = send(b, "offline-ctl", {"name": "z"})
    ctl("commands", "cancel", r["id"])
    assert state(b, r["id"]) == "cancelled"
    ctl("commands", "send", "devctl", "x", "{not json", ok=False)
    ctl("commands", "bogus", "x", ok=False)
    # a group by client id prefix: one device up, one away (queued, cancelled)
    send(b, "devctl-away", {"name": "warm", "expiry": 300000})  # a session to select
    out = ctl("--json", "commands", "group-send", "ping", '{"g": 1}', "prefix:devctl")
    g = json.loads(out)
    assert g["count"] >= 1, g
    gid = g["group"]
    assert "total" in ctl("commands", "group-show", gid)
    ctl("commands", "group-cancel", gid)
    ctl("commands", "group-send", "ping", "prefix:x", "site=a", ok=False)  # both
    ctl("commands", "group-send", "ping", "neither", ok=False)
    d.close()


@pytest.mark.parametrize("bad, key", [("topic_prefix: a/+", "commands.topic_prefix"),
                                      ("retries: 1000", "commands.retries"),
                                      ("reply_timeout: 1ms", "commands.reply_timeout")])
def test_bad_config_refused(tmp_path, bad, key):
    import subprocess
    from conftest import require_antenna_bin
    cfg = tmp_path / "a.yaml"
    cfg.write_text("persistence:\n  enabled: false\ncommands:\n  enabled: true\n  %s\n" % bad)
    p = subprocess.run([require_antenna_bin(), "check", "-c", str(cfg)], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode != 0
    assert "a.yaml:5" in p.stderr + p.stdout and key in p.stderr + p.stdout, p.stderr + p.stdout
