"""The Semtech UDP packet forwarder gateway (issue 19, section lora): a
Python socket on 127.0.0.1 plays a gateway.  PUSH_DATA is acknowledged with
its token and its rxpk / stat are published as JSON (the DevAddr topic for
LoRaWAN data uplinks); PULL_DATA is acknowledged and gives the downlink
address; an MQTT publish on lora/{eui}/down reaches the gateway as
PULL_RESP; TX_ACK is published on lora/{eui}/down/ack; the retained
presence goes online and offline; malformed datagrams are counted and the
broker keeps serving; bad keys refuse the file with file:line:key.  Every
wait polls with a deadline."""

import base64
import json
import queue
import re
import socket
import subprocess
import time

import paho.mqtt.client as mqtt
import pytest

from conftest import require_antenna_bin, wait_for
from test_61_modules import SectionBrokers

pytestmark = pytest.mark.antenna_only

EUI = "aa555a0000000101"
EUI_B = bytes.fromhex(EUI)
# a LoRaWAN unconfirmed data up: MHDR 0x40, DevAddr 0x26011bda little-endian
PHY = bytes([0x40, 0xda, 0x1b, 0x01, 0x26, 0x00, 0x01, 0x00, 0x01, 0xaa, 0xbb, 0xcc, 0xdd])


def section(extra=""):
    return ("lora:\n  enabled: true\n  bind: 127.0.0.1\n  port: 0\n  qos: 1\n%s" % extra)


@pytest.fixture
def lbroker(tmp_path):
    brokers = SectionBrokers(tmp_path)
    yield brokers
    brokers.close()


def lora_port(b):
    return wait_for(lambda: b.rapi.get("/api/v1/lora/gateways")["port"], 30, what="the lora port")


class Gateway:
    """A packet forwarder: one UDP socket, datagrams by hand."""

    def __init__(self, port, eui=EUI_B, version=2):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind(("127.0.0.1", 0))
        self.s.settimeout(30)
        self.dst = ("127.0.0.1", port)
        self.eui, self.version = eui, version

    def send(self, token, typ, body=b"", eui=True):
        self.s.sendto(bytes([self.version]) + token.to_bytes(2, "big") + bytes([typ]) +
                      (self.eui if eui else b"") + body, self.dst)

    def recv(self):
        return self.s.recvfrom(65536)[0]

    def push(self, token, obj):
        self.send(token, 0x00, json.dumps(obj).encode())
        assert self.recv() == bytes([self.version]) + token.to_bytes(2, "big") + b"\x01"

    def pull(self, token):
        self.send(token, 0x02)
        assert self.recv() == bytes([self.version]) + token.to_bytes(2, "big") + b"\x04"

    def close(self):
        self.s.close()


def subscriber(b, topic="lora/#"):
    got = queue.Queue()
    ready = queue.Queue()
    c = mqtt.Client(client_id="lora-watch", protocol=mqtt.MQTTv311)
    c.on_connect = lambda cl, *a: cl.subscribe(topic, 1)
    c.on_subscribe = lambda *a: ready.put(1)
    c.on_message = lambda cl, u, m: got.put((m.topic, m.payload, m.qos, m.retain))
    c.connect("127.0.0.1", b.port)
    c.loop_start()
    ready.get(timeout=30)
    return c, got


def take(got, topic, timeout=30.0, pred=None):
    """The first message on topic (matching pred) not taken yet, as (payload
    json, qos, retain); messages on other topics stay for later calls."""
    stash = got.__dict__.setdefault("stash", [])
    end = time.monotonic() + timeout
    while True:
        for i, (t, p, q, r) in enumerate(stash):
            if t == topic:
                o = json.loads(p)
                if pred is None or pred(o):
                    del stash[i]
                    return o, q, r
        left = end - time.monotonic()
        assert left > 0, "no message on %s (have %r)" % (topic, stash)
        try:
            stash.append(got.get(timeout=min(left, 1.0)))
        except queue.Empty:
            pass


def publisher(b):
    c = mqtt.Client(client_id="lora-app", protocol=mqtt.MQTTv311)
    c.connect("127.0.0.1", b.port)
    c.loop_start()
    return c


def metrics(b):
    st, _, raw = b.rapi.call("GET", "/metrics")
    assert st == 200
    out = {}
    for line in raw.decode().splitlines():
        m = re.match(r"^(antenna_lora_[a-z_]+(?:\{[^}]*\})?) (\d+)$", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def metric(b, name):
    return metrics(b).get(name, 0)


def test_uplinks_stats_downlink_and_tx_ack(lbroker):
    b = lbroker(section())
    port = lora_port(b)
    sub, got = subscriber(b)
    app = publisher(b)
    gw = Gateway(port)
    try:
        rx1 = {"tmst": 3512348611, "chan": 2, "rfch": 0, "freq": 868.1, "stat": 1,
               "modu": "LORA", "datr": "SF7BW125", "codr": "4/5", "rssi": -35, "lsnr": 5.1,
               "size": len(PHY), "data": base64.b64encode(PHY).decode()}
        rx2 = {"tmst": 3512348612, "freq": 868.3, "modu": "LORA", "datr": "SF9BW125",
               "size": 3, "data": base64.b64encode(b"\xe0\x01\x02").decode()}  # proprietary
        stat = {"time": "2026-12-06 18:00:00 GMT", "rxnb": 2, "rxok": 2, "rxfw": 2, "ackr": 100.0,
                "dwnb": 0, "txnb": 0}
        gw.push(0x1234, {"rxpk": [rx1, rx2], "stat": stat})  # PUSH_ACK, same token

        st, q, r = take(got, "lora/%s/status" % EUI)
        assert st["online"] is True and st["address"] is None and st["gateway"] == EUI
        up1, q, _ = take(got, "lora/%s/up" % EUI)
        assert q == 1
        assert up1["gateway"] == EUI and up1["received_ms"] > 0
        for k, v in rx1.items():
            assert up1[k] == v, (k, up1)
        up2, _, _ = take(got, "lora/%s/up" % EUI)
        assert up2["tmst"] == 3512348612
        da, _, _ = take(got, "lora/%s/devaddr/26011bda" % EUI)
        assert da["tmst"] == 3512348611
        s, _, _ = take(got, "lora/%s/stats" % EUI)
        assert s["rxnb"] == 2 and s["gateway"] == EUI

        # PULL_DATA: acknowledged; the presence now names the address
        gw.pull(0x0042)
        me = "127.0.0.1:%d" % gw.s.getsockname()[1]
        take(got, "lora/%s/status" % EUI, pred=lambda o: o["address"] == me)

        # a downlink: a bare txpk, then a wrapped one
        txpk = {"imme": True, "freq": 869.525, "rfch": 0, "powe": 14, "modu": "LORA",
                "datr": "SF9BW125", "codr": "4/5", "ipol": True, "size": 2, "data": "AQI="}
        app.publish("lora/%s/down" % EUI, json.dumps(txpk), qos=1)
        d = gw.recv()
        assert d[0] == 2 and d[3] == 0x03, d[:4]
        assert json.loads(d[4:]) == {"txpk": txpk}
        token = int.from_bytes(d[1:3], "big")
        app.publish("lora/%s/down" % EUI, json.dumps({"txpk": dict(txpk, size=3)}), qos=0)
        d = gw.recv()
        assert d[3] == 0x03 and json.loads(d[4:])["txpk"]["size"] == 3

        # TX_ACK: an error, then none (v2: no JSON)
        gw.send(token, 0x05, json.dumps({"txpk_ack": {"error": "TOO_LATE"}}).encode())
        a, _, _ = take(got, "lora/%s/down/ack" % EUI)
        assert a == {"gateway": EUI, "token": token, "error": "TOO_LATE",
                     "received_ms": a["received_ms"]}
        gw.send(7, 0x05)
        a, _, _ = take(got, "lora/%s/down/ack" % EUI)
        assert a["error"] == "NONE" and a["token"] == 7

        m = wait_for(lambda: (lambda m: m if m.get("antenna_lora_downlinks_total") == 2 else None)
                     (metrics(b)), 30, what="the downlink counter")
        assert m['antenna_lora_datagrams_total{type="push_data"}'] == 1
        assert m['antenna_lora_datagrams_total{type="pull_data"}'] == 1
        assert m['antenna_lora_datagrams_total{type="tx_ack"}'] == 2
        assert m["antenna_lora_uplinks_total"] == 2
        assert m["antenna_lora_tx_ack_errors_total"] == 1
        assert m["antenna_lora_gateways_online"] == 1
        gws = b.rapi.get("/api/v1/lora/gateways")["gateways"]
        assert [(g["gateway"], g["online"], g["address"]) for g in gws] == [(EUI, True, me)]
    finally:
        gw.close()
        for c in (sub, app):
            c.loop_stop()
            c.disconnect()


def test_v1_gateway_gets_token_zero(lbroker):
    b = lbroker(section())
    port = lora_port(b)
    app = publisher(b)
    gw = Gateway(port, eui=bytes.fromhex("0000000000000001"), version=1)
    try:
        gw.pull(0x0909)
        wait_for(lambda: b.rapi.get("/api/v1/lora/gateways")["gateways"], 30, what="the gateway")
        app.publish("lora/0000000000000001/down", json.dumps({"imme": True, "data": ""}), qos=1)
        d = gw.recv()
        assert d[:4] == b"\x01\x00\x00\x03", d[:4]
    finally:
        gw.close()
        app.loop_stop()
        app.disconnect()


def test_malformed_counted_and_unknown_downlinks_dropped(lbroker):
    b = lbroker(section())
    port = lora_port(b)
    app = publisher(b)
    gw = Gateway(port)
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        dst = ("127.0.0.1", port)
        raw.sendto(b"\x02\x00", dst)                      # short
        raw.sendto(b"\x03\x00\x01\x00" + EUI_B, dst)      # version 3
        raw.sendto(b"\x02\x00\x01\x09" + EUI_B, dst)      # unknown type
        raw.sendto(b"\x02\x00\x01\x01", dst)              # PUSH_ACK: the server's type
        raw.sendto(b"\x02\x00\x01\x02\x01\x02", dst)      # PULL_DATA without its EUI
        raw.sendto(b"\x02\x00\x01\x00" + EUI_B + b"{not json", dst)
        raw.sendto(b"\x02\x00\x01\x00" + EUI_B + b'{"rxpk": 3}', dst)
        want = {"short": 2, "version": 1, "type": 2, "json": 2}

        def counted():
            m = metrics(b)
            return all(m.get('antenna_lora_malformed_total{reason="%s"}' % k) == v
                       for k, v in want.items())
        wait_for(counted, 30, what="the malformed counters")

        # a downlink for a gateway never seen, and a topic level that is no EUI
        app.publish("lora/0000000000000099/down", '{"imme":true}', qos=1)
        app.publish("lora/not-an-eui/down", '{"imme":true}', qos=1)
        wait_for(lambda: metric(b, 'antenna_lora_downlinks_dropped_total'
                                   '{reason="unknown_gateway"}') == 1 and
                 metric(b, 'antenna_lora_downlinks_dropped_total{reason="invalid"}') == 1,
                 30, what="the dropped downlinks")
        # a seen gateway, a payload that is no txpk
        gw.pull(1)
        # listed with its PULL_DATA address (the bad PUSH_DATA above may have
        # listed it already, without one: a downlink then is unknown_gateway)
        wait_for(lambda: any(g["gateway"] == EUI and g["address"]
                             for g in b.rapi.get("/api/v1/lora/gateways")["gateways"]),
                 30, what="the gateway's PULL_DATA")
        app.publish("lora/%s/down" % EUI, '[1,2]', qos=1)
        wait_for(lambda: metric(b, 'antenna_lora_downlinks_dropped_total{reason="invalid"}') == 2,
                 30, what="the invalid downlink")

        # still serving: a good PUSH_DATA is published
        sub, got = subscriber(b, "lora/+/up")
        try:
            gw.push(0xbeef, {"rxpk": [{"tmst": 1, "data": ""}]})
            up, _, _ = take(got, "lora/%s/up" % EUI)
            assert up["tmst"] == 1
        finally:
            sub.loop_stop()
            sub.disconnect()
    finally:
        raw.close()
        gw.close()
        app.loop_stop()
        app.disconnect()


def test_presence_online_offline(lbroker):
    b = lbroker(section("  keepalive: 300ms\n"))
    port = lora_port(b)
    gw = Gateway(port)
    try:
        gw.pull(1)
        # retained: a subscriber arriving later gets the current presence
        sub, got = subscriber(b, "lora/+/status")
        try:
            st, _, _ = take(got, "lora/%s/status" % EUI, pred=lambda o: o["online"])
            # silent: offline after 3 x keepalive (polled: the machine is busy)
            st, _, _ = take(got, "lora/%s/status" % EUI, pred=lambda o: not o["online"])
            assert st["address"] is not None
            wait_for(lambda: metric(b, "antenna_lora_gateways_online") == 0, 30,
                     what="no gateway online")
            gw.pull(2)
            take(got, "lora/%s/status" % EUI, pred=lambda o: o["online"])
        finally:
            sub.loop_stop()
            sub.disconnect()
    finally:
        gw.close()


@pytest.mark.parametrize("extra,want", [
    ("  topic_down: lora/down\n", "l.yaml:4: lora.topic_down"),
    ("  topic_up: lora/x{gateway}/up\n", "l.yaml:4: lora.topic_up"),
    ("  topic_devaddr: lora/{gateway}/d\n", "l.yaml:4: lora.topic_devaddr"),
    ("  topic_stats: lora/{gateway}/#\n", "l.yaml:4: lora.topic_stats"),
    ("  qos: 3\n", "l.yaml:4: lora.qos"),
    ("  bind: nowhere\n", "lora.bind"),
])
def test_bad_keys_refused(tmp_path, extra, want):
    path = tmp_path / "l.yaml"
    path.write_text("lora:\n  enabled: true\n  port: 0\n" + extra)
    p = subprocess.run([require_antenna_bin(), "check", "-c", str(path)], capture_output=True,
                       text=True, timeout=60)
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert want in out, out
