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
