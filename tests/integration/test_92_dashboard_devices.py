"""The dashboard's Devices cards (issue 18: "a dashboard page: devices with
presence, a device's shadow and commands, send a command and watch its
status"), web/static/devices.js.

Without a browser: the file is embedded and served as JavaScript under the
API's CSP, after app.js.  In a real browser (Debian's Chromium, headless,
driven by playwright-core: tests/integration/js/dashboard_devices.js through
dashlib.js, skipped as test_52/test_83 are when it is missing): two devices
created through the API, a paho client (MQTT 5) connecting as the first;
the page lists both with their presence, filters by tag and by connected,
opens the first (presence, tags, attributes, shadow), sets desired through
the form (the device gets the delta and reports; the page shows the
report and what is left of the delta), shows a stale version's 409 as a
readable conflict, refuses params that are not JSON, and sends two
commands that the device answers: the page follows each to its final
status (failed, then succeeded) and lists them newest first."""

import json
import subprocess
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conftest import wait_for
from test_52_dashboard import ARTIFACTS, CHROMIUM, JS_DIR, NODE, http_get, skip_reason
from test_61_modules import SectionBrokers

pytestmark = pytest.mark.antenna_only

SECTION = """devices:
  enabled: true
commands:
  enabled: true
  reply_timeout: 20s
  retry_interval: 2s
"""
DEADLINE = 30.0


@pytest.fixture
def dev_broker(tmp_path):
    brokers = SectionBrokers(tmp_path)
    yield brokers
    brokers.close()


class ShadowDevice:
    """A paho MQTT 5 device: follows $shadow/{id}/#, answers its commands
    ("selftest" with failed, the others with succeeded and their params)."""

    def __init__(self, b, cid):
        self.cid = cid
        self.lock = threading.Lock()
        self.deltas, self.commands = [], []
        self.subscribed = threading.Event()
        self.c = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv5)
        self.c.on_connect = lambda cl, *a: cl.subscribe("$shadow/%s/#" % cid, 1)
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_message = self.on_message
        self.c.connect(b.host, b.port, keepalive=30)
        self.c.loop_start()
        assert self.subscribed.wait(DEADLINE), "%s: no SUBACK" % cid

    def on_message(self, client, userdata, msg):
        if msg.topic == "$shadow/%s/delta" % self.cid and msg.payload:
            with self.lock:
                self.deltas.append(json.loads(msg.payload))
            return
        if not msg.topic.startswith("$cmd/"):
            return
        p = json.loads(msg.payload)
        with self.lock:
            self.commands.append(p)
        ok = p["name"] != "selftest"
        body = {"status": "succeeded" if ok else "failed",
                "result": {"echo": p["params"]} if ok else {"error": "self test failed"}}
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = msg.properties.CorrelationData
        client.publish(msg.properties.ResponseTopic, json.dumps(body), qos=1, properties=props)

    def report(self, state):
        info = self.c.publish("$shadow/%s/reported" % self.cid, json.dumps({"state": state}), qos=1)
        info.wait_for_publish(DEADLINE)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_devices_js_is_served(dev_broker):
    b = dev_broker(SECTION)
    st, hdr, body = http_get(b.api_url + "/static/devices.js")
    assert st == 200 and hdr["Content-Type"].startswith("text/javascript"), (st, hdr)
    assert "script-src 'self'" in hdr["Content-Security-Policy"], hdr
    assert b"window.antennaDash" in body and b"/api/v1/devices" in body
    st, _, page = http_get(b.api_url + "/")
    page = page.decode()
    # after app.js, which gives it window.antennaDash
    assert 0 < page.index('src="/static/app.js"') < page.index('src="/static/devices.js"'), page
    for el in ('id="devices-table"', 'id="device-detail"', 'id="shadow-form"', 'id="command-form"'):
        assert el in page, el


@pytest.mark.deadline(240)
def test_devices_view_shadow_and_commands(dev_broker, tmp_path):
    why = skip_reason()
    if why:
        pytest.skip(why)
    b = dev_broker(SECTION)
    api = b.rapi
    api.json("POST", "/api/v1/devices", {"id": "dd-1", "tags": {"site": "lyon", "kind": "pump"},
                                         "attributes": {"fw": "2.1"}}, status=201)
    api.json("POST", "/api/v1/devices", {"id": "dd-2", "tags": {"site": "paris"}}, status=201)
    d = ShadowDevice(b, "dd-1")
    wait_for(lambda: api.get("/api/v1/devices/dd-1")["presence"]["connected"], DEADLINE,
             what="dd-1 connected")

    ARTIFACTS.mkdir(exist_ok=True)
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    proc = subprocess.Popen(
        [NODE, str(JS_DIR / "dashboard_devices.js"), "--url", b.api_url + "/", "--key", api.key,
         "--device", "dd-1", "--offline", "dd-2", "--tag", "site=lyon",
         "--user-data-dir", str(profile), "--artifacts", str(ARTIFACTS), "--timeout", "200",
         "--chromium", CHROMIUM],
        cwd=str(JS_DIR), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    events, delta_ok, conflict_ok = [], False, False
    try:
        for line in proc.stdout:
            events.append(json.loads(line))
            name = events[-1]["event"]
            if name == "desired_set":
                # the form's change reached the device as the delta
                def got_delta():
                    with d.lock:
                        return any(x["state"] == {"led": "on", "rate": 5} for x in d.deltas)
                wait_for(got_delta, DEADLINE, what="the delta at dd-1")
                d.report({"led": "on"})
                delta_ok = True
            elif name == "conflict":
                s = api.get("/api/v1/devices/dd-1/shadow")
                assert s["desired"] == {"led": "on", "rate": 5} and s["version_desired"] == 1, s
                conflict_ok = True
            elif name in ("commands_listed", "error"):
                break
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        d.close()
    err = proc.stderr.read().decode(errors="replace")
    by = {e["event"]: e for e in events}
    assert rc == 0 and "error" not in by, "browser flow failed: %r\n%s" % (events, err[-3000:])

    rows = by["listed"]["rows"]
    assert rows["dd-1"]["presence"] == "connected" and rows["dd-1"]["protocol"] == "MQTT 5.0", rows
    assert rows["dd-1"]["peer"].startswith("127.0.0.1:") and rows["dd-1"]["node"].startswith("antenna@")
    assert "site=lyon" in rows["dd-1"]["tags"], rows
    assert rows["dd-2"]["presence"] == "disconnected" and rows["dd-2"]["peer"] == "-", rows
    assert by["filtered"]["tag"] == ["dd-1"], by["filtered"]
    assert by["filtered"]["disconnected"] == ["dd-2"], by["filtered"]
    op = by["opened"]
    assert op["facts"]["state"] == "connected" and op["facts"]["protocol"] == "MQTT 5.0", op
    assert "kind=pump" in op["registry"]["tags"] and json.loads(op["attributes"]) == {"fw": "2.1"}
    assert op["version"] == "0", op
    assert delta_ok and conflict_ok, events
    assert by["desired_set"]["desired"] == {"led": "on", "rate": 5}, by["desired_set"]
    assert "version 1" in by["desired_set"]["text"], by["desired_set"]
    assert by["reported"]["reported"] == {"led": "on"} and by["reported"]["delta"] == {"rate": 5}
    assert "Version conflict" in by["conflict"]["text"] and "version 1" in by["conflict"]["text"]
    assert "Params is not JSON" in by["command_refused"]["text"], by["command_refused"]
    assert "failed" in by["command_failed"]["text"], by["command_failed"]
    ok = by["command_succeeded"]
    assert "succeeded" in ok["text"] and ok["output"] == {"echo": {"delay": 1}}, ok
    listed = by["commands_listed"]["rows"]
    assert [(r["name"], r["status"]) for r in listed[:2]] == [("reboot", "succeeded"),
                                                             ("selftest", "failed")], listed
    # the page's commands are the API's
    cmds = api.get("/api/v1/devices/dd-1/commands")["data"]
    assert [c["id"] for c in cmds][::-1][:2] == [r["id"] for r in listed[:2]], (cmds, listed)
    with d.lock:  # (a retry may deliver one twice)
        names = {c["id"]: c["name"] for c in d.commands}
    assert sorted(names.values()) == ["reboot", "selftest"], d.commands
