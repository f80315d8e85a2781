"""Devices, part 2 (src/devices, docs/devices.md): disabling or deleting a
connected device closes its connection, the presence's node and the
device_presence event, and the device shadow (desired/reported documents
with versions, the delta to the device, reports over MQTT, kept across a
restart)."""

import json
import signal
import threading
import time

import pytest

from conftest import IS_MOSQUITTO
from test_85_devices import AUTH, ON, dbroker, wait_for  # noqa: F401 (the fixture)

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="antenna's device registry")


class Device:
    """A paho client (3.1.1 or 5) that records what it gets and how it ended."""

    def __init__(self, b, cid, token=None, v5=False, subscribe=()):
        import paho.mqtt.client as mqtt
        self.mqtt = mqtt
        self.cid = cid
        self.msgs = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.gone = threading.Event()
        self.disconnect_rc = None
        self.c = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
        if token is not None:
            self.c.username_pw_set(cid, token)
        self.topics = list(subscribe)

        def on_connect(cl, ud, flags, rc, props=None):
            if self.topics:
                cl.subscribe([(t, 1) for t in self.topics])
            self.connected.set()

        def on_subscribe(cl, ud, mid, granted, props=None):
            self.subscribed.set()

        def on_message(cl, ud, m):
            with self.lock:
                self.msgs.append((m.topic, m.payload, m.retain))

        def on_disconnect(cl, ud, rc, props=None):
            self.disconnect_rc = rc.value if hasattr(rc, "value") else rc
            self.gone.set()

        self.c.on_connect = on_connect
        self.c.on_subscribe = on_subscribe
        self.c.on_message = on_message
        self.c.on_disconnect = on_disconnect
        self.c.connect(b.host, b.port, keepalive=30)
        self.c.loop_start()
        assert self.connected.wait(15), "%s: no CONNACK" % cid
        if self.topics:
            assert self.subscribed.wait(15), "%s: no SUBACK" % cid

    def publish(self, topic, obj, qos=1):
        info = self.c.publish(topic, json.dumps(obj) if not isinstance(obj, bytes) else obj,
                              qos=qos)
        info.wait_for_publish(15)

    def wait_msg(self, topic, pred=lambda p: True, timeout=15.0):
        """The first message on topic whose JSON payload passes pred."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for t, p, r in self.msgs:
                    if t == topic:
                        try:
                            j = json.loads(p) if p else None
                        except ValueError:
                            continue
                        if pred(j):
                            return j
            time.sleep(0.05)
        with self.lock:
            raise AssertionError("%s: nothing on %s within %.0f s (got %r)"
                                 % (self.cid, topic, timeout, self.msgs[-10:]))

    def clear(self):
        with self.lock:
            self.msgs.clear()

    def close(self):
        try:
            self.c.disconnect()
        finally:
            self.c.loop_stop()


@pytest.mark.parametrize("v5", [False, True])
@pytest.mark.parametrize("how", ["disable", "put", "delete"])
def test_disable_closes_connection(dbroker, v5, how):
    b = dbroker(section=AUTH % "pass", auth={"chain": ["devices"]})
    api = b.rapi
    api.json("POST", "/api/v1/devices", {"id": "k-dev", "token": "tk"}, status=201)
    d = Device(b, "k-dev", "tk", v5)
    try:
        wait_for(lambda: api.get("/api/v1/devices/k-dev")["presence"]["connected"],
                 "k-dev connected")
        if how == "disable":
            api.json("POST", "/api/v1/devices/k-dev/disable")
        elif how == "put":
            api.json("PATCH", "/api/v1/devices/k-dev", {"disabled": True})
        else:
            api.json("DELETE", "/api/v1/devices/k-dev", status=204)
        assert d.gone.wait(15), "the connection of k-dev stayed open"
        if v5:
            assert d.disconnect_rc == 0x98, d.disconnect_rc  # administrative action
        wait_for(lambda: "device 'k-dev' %s: its connection is closed"
                 % ("deleted" if how == "delete" else "disabled") in b.log_text(),
                 "the log line")
        if how != "delete":
            wait_for(lambda: not api.get("/api/v1/devices/k-dev")["presence"]["connected"],
                     "k-dev disconnected")
    finally:
        d.close()


def test_import_that_disables_closes_connection(dbroker):
    b = dbroker(section=AUTH % "pass", auth={"chain": ["devices"]})
    api = b.rapi
    api.json("POST", "/api/v1/devices", {"id": "i-dev", "token": "tk"}, status=201)
    d = Device(b, "i-dev", "tk", v5=True)
    try:
        wait_for(lambda: api.get("/api/v1/devices/i-dev")["presence"]["connected"],
                 "i-dev connected")
        r = api.json("POST", "/api/v1/devices/import?format=csv",
                     b"id,token,disabled\ni-dev,tk,true\ni-new,tk2,true\n")
        assert r["replaced"] == 1 and r["created"] == 1, r
        assert d.gone.wait(15) and d.disconnect_rc == 0x98, d.disconnect_rc
        wait_for(lambda: "device 'i-dev' disabled by an import: its connection is closed"
                 in b.log_text(), "the log line")
    finally:
        d.close()


PRESENCE_RULE = """rules:
  rules:
    - id: presence
      sql: SELECT clientid, reason AS st, payload.node AS node, payload.peer AS peer,
        payload.protocol AS proto, payload.at_ms AS at FROM "$events/device_presence"
      actions:
        - type: republish
          topic: presence/${clientid}
          payload: '{"st": "${st}", "node": "${node}", "peer": "${peer}", "proto": "${proto}", "at": ${at}}'
"""


def test_presence_node_and_event(dbroker):
    b = dbroker(section=AUTH % "pass" + PRESENCE_RULE, auth={"chain": ["devices"]})
    api = b.rapi
    node = api.get("/api/v1/info")["node"]
    api.json("POST", "/api/v1/devices", {"id": "e-dev", "token": "tk"}, status=201)
    assert api.get("/api/v1/devices/e-dev")["presence"]["node"] == node
    # the watcher is not a device: its own connection makes no event
    w = Device(b, "watcher", subscribe=["presence/#"])
    try:
        d = Device(b, "e-dev", "tk", v5=True)
        on = w.wait_msg("presence/e-dev", lambda j: j["st"] == "connected")
        assert on["node"] == node and on["proto"] == "5.0" and on["peer"].startswith("127.0.0.1:")
        assert on["at"] > 0, on
        d.close()
        w.wait_msg("presence/e-dev", lambda j: j["st"] == "disconnected")
        with w.lock:
            assert not any(t == "presence/watcher" for t, _, _ in w.msgs), w.msgs
    finally:
        w.close()


SHADOW_TOPICS = ["$shadow/%s/delta", "$shadow/%s/reported/accepted",
                 "$shadow/%s/reported/rejected", "$shadow/%s/get/accepted"]


def shadow_device(b, cid, v5=False):
    b.rapi.call("POST", "/api/v1/devices", {"id": cid, "token": "tk-" + cid})
    return Device(b, cid, "tk-" + cid, v5, subscribe=[t % cid for t in SHADOW_TOPICS])


@pytest.mark.parametrize("v5", [False, True])
def test_shadow_desired_delta_and_reports(dbroker, v5):
    b = dbroker(section=AUTH % "pass", auth={"chain": ["devices"]})
    api = b.rapi
    d = shadow_device(b, "s-dev", v5)
    other = shadow_device(b, "o-dev")
    try:
        sh = api.get("/api/v1/devices/s-dev/shadow")
        assert sh["desired"] == {} and sh["version_desired"] == 0 and sh["delta"] == {}, sh
        sh = api.json("PATCH", "/api/v1/devices/s-dev/shadow/desired",
                      {"state": {"led": "on", "cfg": {"rate": 5, "mode": "eco"}}})
        assert sh["version_desired"] == 1 and sh["delta"]["cfg"]["rate"] == 5, sh
        delta = d.wait_msg("$shadow/s-dev/delta", lambda j: j and j["version"] == 1)
        assert delta["state"] == {"led": "on", "cfg": {"rate": 5, "mode": "eco"}}, delta

        # a partial report: the delta that remains comes again
        d.publish("$shadow/s-dev/reported", {"state": {"led": "on", "cfg": {"rate": 5}}})
        acc = d.wait_msg("$shadow/s-dev/reported/accepted")
        assert acc["version"] == 1 and acc["state"]["cfg"] == {"rate": 5}, acc
        d.wait_msg("$shadow/s-dev/delta", lambda j: j and j["state"] == {"cfg": {"mode": "eco"}})
        sh = api.get("/api/v1/devices/s-dev/shadow")
        assert sh["delta"] == {"cfg": {"mode": "eco"}} and sh["version_reported"] == 1, sh

        # the rest, with the right version: nothing left, the delta is cleared
        d.clear()
        d.publish("$shadow/s-dev/reported", {"state": {"cfg": {"mode": "eco"}}, "version": 1})
        assert d.wait_msg("$shadow/s-dev/reported/accepted")["version"] == 2
        d.wait_msg("$shadow/s-dev/delta", lambda j: j is None)  # the empty retained message
        assert api.get("/api/v1/devices/s-dev/shadow")["delta"] == {}

        # a stale version or bad JSON: rejected with the reason
        d.publish("$shadow/s-dev/reported", {"state": {"led": "off"}, "version": 1})
        rej = d.wait_msg("$shadow/s-dev/reported/rejected")
        assert rej["code"] == 409 and "version" in rej["error"] and rej["version"] == 2, rej
        d.clear()
        d.publish("$shadow/s-dev/reported", b"{not json")
        assert d.wait_msg("$shadow/s-dev/reported/rejected")["code"] == 400

        # the API: a stale version is 409 with a JSON error; PUT replaces;
        # PATCH's null deletes
        st, _, raw = api.call("PATCH", "/api/v1/devices/s-dev/shadow/desired",
                              {"state": {"led": "off"}, "version": 0})
        assert st == 409 and json.loads(raw)["code"] == "version_conflict", raw
        sh = api.json("PUT", "/api/v1/devices/s-dev/shadow/desired",
                      {"state": {"led": "off", "x": 1}, "version": 1})
        assert sh["desired"] == {"led": "off", "x": 1} and sh["version_desired"] == 2, sh
        assert sh["delta"] == {"led": "off", "x": 1}, sh
        sh = api.json("PATCH", "/api/v1/devices/s-dev/shadow/desired", {"state": {"x": None}})
        assert sh["desired"] == {"led": "off"} and sh["delta"] == {"led": "off"}, sh
        d.wait_msg("$shadow/s-dev/delta", lambda j: j and j["version"] == 3)
        st, _, raw = api.call("PATCH", "/api/v1/devices/s-dev/shadow/desired", {"x": 1})
        assert st == 400, raw
        api.json("GET", "/api/v1/devices/nobody/shadow", status=404)

        # get: the whole shadow
        d.publish("$shadow/s-dev/get", b"")
        got = d.wait_msg("$shadow/s-dev/get/accepted")
        assert got["desired"] == {"led": "off"} and got["version_reported"] == 2, got

        # another device cannot report for s-dev, nor forge its delta: the
        # '$' guard refuses them as the ACL would (MQTT 5: PUBACK 0x87)
        other.publish("$shadow/s-dev/reported", {"state": {"led": "off"}})
        wait_for(lambda: "PUBLISH to '$shadow/s-dev/reported' refused" in b.log_text(),
                 "the refusal")
        d.clear()
        info = d.c.publish("$shadow/s-dev/delta", json.dumps({"state": {"evil": 1}}), qos=1)
        info.wait_for_publish(15)
        d.publish("$shadow/s-dev/get", b"")
        d.wait_msg("$shadow/s-dev/get/accepted")
        with d.lock:
            assert not any(t == "$shadow/s-dev/delta" for t, _, _ in d.msgs), d.msgs
        assert api.get("/api/v1/devices/s-dev/shadow")["version_reported"] == 2
    finally:
        d.close()
        other.close()


def test_shadow_delta_after_reconnect(dbroker):
    b = dbroker(section=AUTH % "pass", auth={"chain": ["devices"]})
    api = b.rapi
    api.json("POST", "/api/v1/devices", {"id": "r-dev", "token": "tk-r-dev"}, status=201)
    api.json("PUT", "/api/v1/devices/r-dev/shadow/desired", {"state": {"fw": "2.0"}})
    # offline when desired changed: the delta waits, retained
    d = shadow_device(b, "r-dev", v5=True)
    try:
        got = d.wait_msg("$shadow/r-dev/delta")
        assert got["state"] == {"fw": "2.0"} and got["version"] == 1, got
        with d.lock:
            assert [r for t, _, r in d.msgs if t == "$shadow/r-dev/delta"][0]
    finally:
        d.close()
    # deleting the device forgets its shadow and its retained delta
    assert any(m["topic"] == "$shadow/r-dev/delta"
               for m in api.get("/api/v1/retained").get("data", []))
    api.json("DELETE", "/api/v1/devices/r-dev", status=204)
    wait_for(lambda: not any(m["topic"] == "$shadow/r-dev/delta"
                             for m in api.get("/api/v1/retained").get("data", [])),
             "the retained delta cleared")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_shadow_survives_restart(dbroker, sig):
    b = dbroker(section=AUTH % "pass", auth={"chain": ["devices"]})
    api = b.rapi
    d = shadow_device(b, "p-dev")
    try:
        api.json("PATCH", "/api/v1/devices/p-dev/shadow/desired", {"state": {"a": 1, "b": 2}})
        d.publish("$shadow/p-dev/reported", {"state": {"a": 1}})
        d.wait_msg("$shadow/p-dev/reported/accepted")
    finally:
        d.close()
    # a later API write commits after the report's (one FIFO in the store)
    before = api.json("PATCH", "/api/v1/devices/p-dev/shadow/desired", {"state": {"c": 3}})
    if sig == signal.SIGKILL:
        b.kill()
    else:
        b.stop()
    b2 = dbroker(section=AUTH % "pass", auth={"chain": ["devices"]},
                 persistence={"dir": b.persistence["dir"]})
    after = b2.rapi.get("/api/v1/devices/p-dev/shadow")
    for k in ("desired", "reported", "delta", "version_desired", "version_reported"):
        assert after[k] == before[k], (k, before, after)
    assert after["desired"] == {"a": 1, "b": 2, "c": 3} and after["reported"] == {"a": 1}


def test_shadow_config(dbroker):
    with pytest.raises(pytest.fail.Exception, match=r"yaml:\d+: devices.shadow.max_bytes"):
        dbroker(section=ON + "  shadow:\n    max_bytes: 0\n")
    with pytest.raises(pytest.fail.Exception, match=r"devices.shadow.topic_prefix"):
        dbroker(section=ON + "  shadow:\n    topic_prefix: a/+\n")
    with pytest.raises(pytest.fail.Exception, match=r"devices.shadow.topic_prefix"):
        dbroker(section=ON + "  shadow:\n    topic_prefix: shadow\n")
    b = dbroker(section=ON + "  shadow:\n    enabled: false\n")
    cfg = b.rapi.get("/api/v1/config")
    assert cfg["devices"]["shadow"] == {"enabled": False, "max_bytes": 16384,
                                        "topic_prefix": "$shadow"}, cfg.get("devices")
    b.rapi.json("POST", "/api/v1/devices", {"id": "x"}, status=201)
    st, _, raw = b.rapi.call("GET", "/api/v1/devices/x/shadow")
    assert st == 409 and json.loads(raw)["code"] == "shadow_disabled", raw
    b2 = dbroker(section=ON + "  shadow:\n    max_bytes: 20\n")
    b2.rapi.json("POST", "/api/v1/devices", {"id": "x"}, status=201)
    st, _, raw = b2.rapi.call("PUT", "/api/v1/devices/x/shadow/desired",
                              {"state": {"k": "a long value over twenty bytes"}})
    assert st == 413, raw


def test_ctl_shadow_and_disable(dbroker):
    import subprocess
    from conftest import require_antenna_bin
    b = dbroker(section=AUTH % "pass", auth={"chain": ["devices"]})

    def ctl(*args):
        p = subprocess.run([require_antenna_bin(), "ctl", "--url", b.api_url, "--key",
                            b.rapi.key, "--json", "devices"] + list(args),
                           capture_output=True, timeout=30)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    d = shadow_device(b, "c-dev", v5=True)
    try:
        rc, out, err = ctl("shadow", "c-dev", '{"led": "on"}')
        assert rc == 0 and json.loads(out)["version_desired"] == 1, (out, err)
        d.wait_msg("$shadow/c-dev/delta", lambda j: j and j["state"] == {"led": "on"})
        rc, out, err = ctl("shadow", "c-dev")
        assert rc == 0 and json.loads(out)["delta"] == {"led": "on"}, (out, err)
        rc, _, err = ctl("shadow", "c-dev", "[1]")
        assert rc == 2 and "JSON object" in err, err
        rc, _, err = ctl("shadow", "nobody")
        assert rc == 1 and "404" in err, err
        # ctl disable closes the device's connection
        assert ctl("disable", "c-dev")[0] == 0
        assert d.gone.wait(15) and d.disconnect_rc == 0x98, d.disconnect_rc
    finally:
        d.close()
