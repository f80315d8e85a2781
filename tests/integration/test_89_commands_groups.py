"""Group commands (src/commands/commands_group.c, docs/commands.md): a tags
selector over the device registry (offline devices get theirs queued), a
group's concurrency and rate limits seen from the devices, progress counts,
GET ?wait=, DELETE cancelling the queued ones; the $cmd ACL
(commands_acl.c): SUBSCRIBE to another device's $cmd/... refused with 0x87
(MQTT 5) / 0x80 (3.1.1), PUBLISH only to its own reply topic, acl_admins
pass."""

import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import mqttraw
from authutil import pbkdf2_line
from conftest import IS_MOSQUITTO, wait_for
from test_61_modules import section_fixture

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="antenna's commands module")

SECTION = """commands:
  enabled: true
  reply_timeout: 20s
  retry_interval: 5s
  acl_admins: [ops]
devices:
  enabled: true
"""
DEADLINE = 20.0
FINAL = ("succeeded", "failed", "timed_out", "expired", "cancelled")


@pytest.fixture
def gbroker(tmp_path):
    yield from section_fixture(tmp_path, SECTION)


class Fleet:
    """Shared bookkeeping of the devices: commands outstanding on the
    device side (received, not answered yet), the most seen at once, the
    time of each command's arrival."""

    def __init__(self):
        self.lock = threading.Lock()
        self.outstanding = 0
        self.max_outstanding = 0
        self.arrivals = []


class Device:
    """A paho MQTT 5 device answering each command with a success after
    `delay` seconds (on a timer, so several wait at once)."""

    def __init__(self, b, cid, fleet=None, delay=0.0, silent=False, **kw):
        self.b, self.cid, self.fleet, self.delay, self.silent = b, cid, fleet, delay, silent
        self.got = []
        self.connected = False
        self.c = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv5)
        if kw.get("username"):
            self.c.username_pw_set(kw["username"])
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

    def answer(self, msg):
        if self.fleet:
            with self.fleet.lock:
                self.fleet.outstanding -= 1
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = msg.properties.CorrelationData
        self.c.publish(msg.properties.ResponseTopic, json.dumps({"status": "succeeded"}),
                       qos=1, properties=props)

    def on_message(self, client, userdata, msg):
        self.got.append(msg)
        if self.silent:
            return
        if self.fleet:
            with self.fleet.lock:
                self.fleet.outstanding += 1
                self.fleet.max_outstanding = max(self.fleet.max_outstanding,
                                                 self.fleet.outstanding)
                self.fleet.arrivals.append(time.monotonic())
        if self.delay:
            threading.Timer(self.delay, self.answer, (msg,)).start()
        else:
            self.answer(msg)


def post_group(b, body, status=202):
    return b.rapi.json("POST", "/api/v1/groups/commands", body, status=status)


def progress(b, g, wait=None):
    return b.rapi.get("/api/v1/groups/commands/%s%s" % (g, "?wait=%s" % wait if wait else ""))


def all_finished(b, g, deadline=DEADLINE):
    """GET ?wait= until the group is finished (bounded)."""
    end = time.monotonic() + deadline
    while True:
        p = progress(b, g, "2s")
        if p["finished"] == p["total"]:
            return p
        assert time.monotonic() < end, "group %s: %s" % (g, p)


def test_group_by_tags_offline_queued(gbroker):
    b = gbroker()
    for dev, site in (("t-1", "lyon"), ("t-2", "lyon"), ("t-3", "paris"), ("t-4", "lyon")):
        b.rapi.json("POST", "/api/v1/devices",
                    {"id": dev, "tags": {"site": site, "kind": "pump"}}, status=201)
    devs = [Device(b, d).connect() for d in ("t-1", "t-2", "t-3")]
    r = post_group(b, {"selector": {"tags": {"site": "lyon", "kind": "pump"}}, "name": "reboot",
                       "qos": 1, "expiry": 60})
    assert r["count"] == 3 and sorted(c["device"] for c in r["commands"]) == ["t-1", "t-2", "t-4"]
    g = r["group"]
    wait_for(lambda: progress(b, g)["by_status"]["succeeded"] == 2, DEADLINE,
             what="the connected devices' commands succeeded")
    p = progress(b, g)
    assert p["total"] == 3 and p["finished"] == 2 and p["by_status"]["queued"] == 1, p
    assert devs[2].got == []  # paris
    late = Device(b, "t-4").connect()  # offline until now: its command was queued
    p = all_finished(b, g)
    assert p["by_status"]["succeeded"] == 3, p
    assert [m.topic for m in late.got] == ["$cmd/t-4/reboot"]
    # no device matches: an empty group; tags must be strings
    assert post_group(b, {"selector": {"tags": {"site": "rome"}}, "name": "x"})["count"] == 0
    post_group(b, {"selector": {"tags": {"site": 1}}, "name": "x"}, status=400)
    post_group(b, {"selector": {"tags": {}}, "name": "x", "concurrency": 0}, status=400)
    for d in devs + [late]:
        d.close()


def test_tags_need_the_registry(gbroker):
    b = gbroker("commands:\n  enabled: true\n")
    post_group(b, {"selector": {"tags": {"site": "lyon"}}, "name": "x"}, status=409)


def test_group_concurrency_limit(gbroker):
    b = gbroker()
    fleet = Fleet()
    devs = [Device(b, "cc-%d" % i, fleet, delay=0.3).connect() for i in range(8)]
    r = post_group(b, {"selector": {"client_id_prefix": "cc-"}, "name": "upd", "qos": 1,
                       "concurrency": 2})
    assert r["count"] == 8 and r["concurrency"] == 2
    seen_active = 0
    end = time.monotonic() + DEADLINE
    while True:  # the broker's count, polled while they run
        p = progress(b, r["group"])
        seen_active = max(seen_active, p["active"])
        assert p["active"] <= 2, p
        if p["finished"] == p["total"]:
            break
        assert time.monotonic() < end, p
        time.sleep(0.05)
    assert p["by_status"]["succeeded"] == 8, p
    assert 1 <= fleet.max_outstanding <= 2, fleet.max_outstanding
    assert len(fleet.arrivals) == 8
    for d in devs:
        d.close()


def test_group_rate_limit(gbroker):
    b = gbroker()
    fleet = Fleet()
    devs = [Device(b, "rr-%d" % i, fleet).connect() for i in range(6)]
    r = post_group(b, {"selector": {"client_id_prefix": "rr-"}, "name": "upd", "qos": 1,
                       "rate": 4})
    p = all_finished(b, r["group"])
    assert p["by_status"]["succeeded"] == 6 and p["rate"] == 4, p
    a = sorted(fleet.arrivals)
    # 4 a second, no burst beyond one: 6 sends span >= 1.25 s (ideal);
    # generous bounds for a busy machine, and never all at once
    assert a[-1] - a[0] >= 0.9, a
    assert sum(1 for t in a if t - a[0] < 0.2) <= 3, a
    for d in devs:
        d.close()


def test_group_wait_and_cancel(gbroker):
    b = gbroker()
    devs = [Device(b, "w-%d" % i, delay=0.2).connect() for i in range(3)]
    r = post_group(b, {"selector": {"client_id_prefix": "w-"}, "name": "ping", "qos": 1})
    p = all_finished(b, r["group"])  # ?wait= returns when all are finished
    assert p["total"] == 3 and p["finished"] == 3 and p["by_status"]["succeeded"] == 3, p
    # a group that cannot progress: one sent (never answered), the rest queued
    quiet = [Device(b, "q-%d" % i, silent=True).connect() for i in range(4)]
    r = post_group(b, {"selector": {"client_id_prefix": "q-"}, "name": "ping", "qos": 1,
                       "concurrency": 1})
    g = r["group"]
    wait_for(lambda: progress(b, g)["active"] == 1, DEADLINE, what="one command sent")
    t0 = time.monotonic()
    p = progress(b, g, "300ms")
    assert p["finished"] == 0 and time.monotonic() - t0 >= 0.25, p
    c = b.rapi.json("DELETE", "/api/v1/groups/commands/%s" % g)
    assert c["total"] == 4 and c["cancelled"] == 3, c
    p = progress(b, g)
    assert p["by_status"]["cancelled"] == 3 and p["by_status"]["queued"] == 0, p
    assert sum(len(d.got) for d in quiet) == 1
    b.rapi.json("DELETE", "/api/v1/groups/commands/g999", status=404)
    b.rapi.json("GET", "/api/v1/groups/commands/%s?wait=x" % g, status=400)
    for d in devs + quiet:
        d.close()


def test_group_survives_restart_with_its_limit(gbroker):
    b = gbroker()
    for dev in ("r-1", "r-2", "r-3"):
        b.rapi.json("POST", "/api/v1/devices", {"id": dev, "tags": {"ring": "r"}}, status=201)
    r = post_group(b, {"selector": {"tags": {"ring": "r"}}, "name": "upd", "qos": 1,
                       "concurrency": 1})
    assert r["count"] == 3  # all offline: queued, stored before the 202
    b.stop()
    b.stopped = False
    b.start()
    p = progress(b, r["group"])
    assert p["total"] == 3 and p["by_status"]["queued"] == 3 and p["concurrency"] == 1, p
    fleet = Fleet()
    devs = [Device(b, d, fleet, delay=0.2).connect() for d in ("r-1", "r-2", "r-3")]
    p = all_finished(b, r["group"])
    assert p["by_status"]["succeeded"] == 3, p
    assert fleet.max_outstanding == 1
    for d in devs:
        d.close()


class V5Sub:
    """A paho MQTT 5 client that reports SUBACK reason codes."""

    def __init__(self, b, cid, username=None, password=None):
        self.codes = {}
        self.msgs = []
        self.connected = False
        self.c = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv5)
        if username:
            self.c.username_pw_set(username, password)
        self.c.on_connect = lambda *a: setattr(self, "connected", True)
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.codes.__setitem__(
            mid, [rc.value for rc in rcs])
        self.c.on_message = lambda c, u, m: self.msgs.append(m)
        self.c.connect(b.host, b.port, keepalive=30)
        self.c.loop_start()
        wait_for(lambda: self.connected, DEADLINE, what="%s connected" % cid)

    def sub(self, f):
        _, mid = self.c.subscribe(f, qos=1)
        return wait_for(lambda: self.codes.get(mid), DEADLINE, what="SUBACK of %s" % f)[0]

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_cmd_acl_subscribe_v5_and_admin(gbroker, tmp_path):
    pw = tmp_path / "passwd"
    pw.write_text(pbkdf2_line("ops", "pw1") + "\n" + pbkdf2_line("dev", "pw2") + "\n")
    b = gbroker(auth={"password_file": str(pw)})
    a = V5Sub(b, "a1")
    assert a.sub("$cmd/a1/#") == 1
    assert a.sub("$cmd/a1/reboot") == 1
    for f in ("$cmd/b1/#", "$cmd/#", "$cmd/+/x", "$cmd/+/#", "$cmd/a1x/y", "$cmd/+"):
        assert a.sub(f) == 0x87, f
    assert a.sub("#") == 1  # a first-level wildcard does not match $ topics
    assert a.sub("+/b1/x") == 1
    assert a.sub("$share/g/$cmd/b1/#") == 0x87
    ops = V5Sub(b, "ops-console", "ops", "pw1")  # commands.acl_admins
    assert ops.sub("$cmd/#") == 1
    dev = V5Sub(b, "dev-console", "dev", "pw2")  # authenticated, not an admin
    assert dev.sub("$cmd/#") == 0x87
    dev.close()
    # publishes: another device's reply topic is refused, its own passes
    b1 = V5Sub(b, "b1")
    a.c.publish("$cmd/b1/reply/c1", '{"status": "succeeded"}', qos=1).wait_for_publish(5)
    a.c.publish("$cmd/a1/reboot", "forged", qos=1).wait_for_publish(5)
    b1.c.publish("$cmd/b1/reply/c1", '{"mine": true}', qos=1).wait_for_publish(5)
    wait_for(lambda: ops.msgs, DEADLINE, what="the allowed reply")
    assert [m.topic for m in ops.msgs] == ["$cmd/b1/reply/c1"]
    assert json.loads(ops.msgs[0].payload) == {"mine": True}
    for c in (a, ops, b1):
        c.close()


def test_cmd_acl_subscribe_311(gbroker):
    b = gbroker()
    c = mqttraw.RawClient(b.host, b.port)
    assert c.connect("d311").rc == 0
    assert c.subscribe(1, [("$cmd/d311/#", 1)]).codes == [1]
    assert c.subscribe(2, [("$cmd/other/#", 1), ("$cmd/#", 0), ("$cmd/+/reply", 0)]).codes == \
        [0x80, 0x80, 0x80]
    c.close()


def test_cmd_acl_off(gbroker):
    b = gbroker("commands:\n  enabled: true\n  acl: false\n")
    a = V5Sub(b, "a1")
    assert a.sub("$cmd/#") == 1
    a.close()


@pytest.mark.parametrize("bad, key", [("group_concurrency: 0", "commands.group_concurrency"),
                                      ("group_rate: -1", "commands.group_rate"),
                                      ("acl: maybe", "commands.acl"),
                                      ("acl_admins: ops", "commands.acl_admins")])
def test_bad_config_refused(tmp_path, bad, key):
    import subprocess
    from conftest import require_antenna_bin
    cfg = tmp_path / "a.yaml"
    cfg.write_text("persistence:\n  enabled: false\ncommands:\n  enabled: true\n  %s\n" % bad)
    p = subprocess.run([require_antenna_bin(), "check", "-c", str(cfg)], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode != 0
    assert "a.yaml:5" in p.stderr + p.stdout and key in p.stderr + p.stdout, p.stderr + p.stdout


def test_cmd_acl_applies_to_a_restored_subscription(gbroker):
    """A persistent session subscribed to $cmd/# while the $cmd ACL was off
    keeps that subscription across a restart with the ACL on, but reads
    only its own commands: the guard judges it again at delivery."""
    b = gbroker("commands:\n  enabled: true\n  acl: false\ndevices:\n  enabled: true\n")
    for dev in ("victim", "spy"):
        b.rapi.json("POST", "/api/v1/devices", {"id": dev}, status=201)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    got = []
    connected = []
    spy = mqtt.Client(client_id="spy", protocol=mqtt.MQTTv5)
    spy.on_connect = lambda *a: connected.append(1)
    spy.on_message = lambda c, u, m: got.append(m.topic)
    subacks = []
    spy.on_subscribe = lambda c, u, mid, rcs, p: subacks.append([rc.value for rc in rcs])
    spy.connect(b.host, b.port, keepalive=30, clean_start=False, properties=props)
    spy.loop_start()
    wait_for(lambda: connected, DEADLINE, what="spy connected")
    spy.subscribe("$cmd/#", qos=1)
    wait_for(lambda: subacks, DEADLINE, what="SUBACK")
    assert subacks == [[1]]
    spy.disconnect()
    spy.loop_stop()
    # the ACL on (the default), the session restored from the store
    b.stop()
    b.sections = SECTION
    b.stopped = False
    b.start()
    connected.clear()
    spy.reconnect()
    spy.loop_start()
    wait_for(lambda: connected, DEADLINE, what="spy reconnected")
    victim = Device(b, "victim").connect()
    r = b.rapi.json("POST", "/api/v1/devices/victim/commands", {"name": "open", "qos": 1},
                    status=202)
    wait_for(lambda: b.rapi.json("GET", "/api/v1/commands/%s" % r["id"])["status"] == "succeeded",
             DEADLINE, what="the victim's command done")
    # its own commands still arrive on the old subscription
    b.rapi.json("POST", "/api/v1/devices/spy/commands", {"name": "mine", "qos": 1}, status=202)
    wait_for(lambda: any(t.startswith("$cmd/spy/") for t in got), DEADLINE,
             what="the spy's own command")
    time.sleep(0.5)  # anything else routed by then would have arrived with it
    assert not [t for t in got if t.startswith("$cmd/victim/")], got
    spy.disconnect()
    spy.loop_stop()
    victim.close()
