"""The CoAP downlink (issue 19, docs/coap.md "Downlink"): a device observing
/cmd?c=ID&token=T is a client with a persistent session (client id ID,
subscribed to $cmd/ID/#): commands of the commands module and QoS 1
messages reach it as notifications, queued while it does not observe; the
API lists it with protocol coap; presence events fire; a newer observation
takes the session over.  Driven with libcoap's coap-client-openssl."""

import json
import re
import shutil
import signal
import time

import paho.mqtt.client as mqtt
import pytest

from authutil import pbkdf2_line
from test_61_modules import SectionBrokers
from test_90_coap import Observer, bound_port, coap, metric, wait_metric

pytestmark = [
    pytest.mark.antenna_only,
    pytest.mark.skipif(shutil.which("coap-client-openssl") is None,
                       reason="coap-client-openssl (libcoap3-bin) is not installed"),
]

ACL = """\
any
allow all devices/%c/#
allow sub $cmd/%c/#
allow pub $cmd/%c/reply/#
user ops
allow all #
allow all $cmd/#
"""


@pytest.fixture
def dbroker(tmp_path):
    brokers = SectionBrokers(tmp_path)

    def start(extra="", sections=""):
        pw = tmp_path / "passwd"
        pw.write_text(pbkdf2_line("dev1", "tok1") + "\n" + pbkdf2_line("dev2", "tok2") + "\n" +
                      pbkdf2_line("ops", "o") + "\n")
        acl = tmp_path / "acl"
        acl.write_text(ACL)
        sec = "coap:\n  enabled: true\n  bind: 127.0.0.1\n  port: 0\n%s%s" % (extra, sections)
        b = brokers(sec, auth={"password_file": str(pw), "acl_file": str(acl)})
        b.coap_port = bound_port(b)
        return b

    yield start
    brokers.close()


def client_info(b, cid):
    st, _, raw = b.rapi.call("GET", "/api/v1/clients/" + cid)
    return json.loads(raw) if st == 200 else None


def wait_client(b, cid, connected, deadline=30.0):
    """Until the API lists cid attached over CoAP (connected) or detached."""
    end = time.monotonic() + deadline
    while True:
        o = client_info(b, cid)
        if o and connected and o.get("connected") and o.get("protocol") == "coap":
            return o
        if o and not connected and not o.get("connected"):
            return o
        assert time.monotonic() < end, "%s: %r" % (cid, o)
        time.sleep(0.05)


def ops_client(b):
    c = mqtt.Client(client_id="ops-pub", protocol=mqtt.MQTTv311)
    c.username_pw_set("ops", "o")
    c.connect("127.0.0.1", b.port)
    c.loop_start()
    return c


def test_command_round_trip(dbroker):
    """A command sent through the API reaches the observer of /cmd, the
    device answers with a POST on its reply topic, the command succeeds."""
    b = dbroker(sections="commands:\n  enabled: true\n  reply_timeout: 30s\n")
    obs = Observer(b, "/cmd?c=dev1&token=tok1", 90)
    try:
        o = wait_client(b, "dev1", True)
        assert o["listener"] == "coap" and o["protocol_version"] is None, o
        assert [x["topic"] for x in o["subscriptions"]] == ["$cmd/dev1/#"], o
        assert o["persistent"] and o["session_expiry"] == 3600, o
        r = b.rapi.json("POST", "/api/v1/devices/dev1/commands",
                        {"name": "reboot", "params": {"delay": 3}, "qos": 1}, status=202)
        obs.wait_for('"reply_topic"')
        m = re.search(r'\{"id".*?"reply_topic": ?"([^"]+)"\}', obs.output())
        assert m, obs.output()
        cmd = json.loads(m.group(0))
        assert cmd["id"] == r["id"] and cmd["params"] == {"delay": 3}, cmd
        assert m.group(1) == "$cmd/dev1/reply/" + r["id"]
        # delivered: the CON notification was handed to libcoap (the PUBACK)
        end = time.monotonic() + 30
        while True:
            st = b.rapi.json("GET", "/api/v1/commands/%s" % r["id"])["status"]
            if st == "delivered":
                break
            assert time.monotonic() < end and st in ("queued", "sent"), st
            time.sleep(0.05)
        # another device cannot answer for it: the $cmd guard refuses
        rc, out = coap(b, "post", "/ps/$cmd/dev1/reply/%s?c=dev2&token=tok2" % r["id"],
                       '{"status": "failed"}')
        assert "4.03" in out, out
        rc, out = coap(b, "post", "/ps/%s?c=dev1&token=tok1&qos=1" % m.group(1),
                       json.dumps({"status": "succeeded", "result": 7}))
        assert rc == 0 and "4." not in out and "5." not in out, out
        end = time.monotonic() + 30
        while True:
            o = b.rapi.json("GET", "/api/v1/commands/%s?wait=2s" % r["id"])
            if o["status"] == "succeeded":
                break
            assert time.monotonic() < end, o
        assert o["result"] == 7
    finally:
        obs.close()


def test_queued_while_away_and_presence(dbroker):
    """QoS 1 messages published while the device does not observe wait in its
    session and come with its next observation; client_connected and
    client_disconnected fire for it."""
    b = dbroker()
    obs = Observer(b, "/cmd?c=dev1&token=tok1", 2)  # cancels after 2 s
    try:
        wait_client(b, "dev1", True)
        assert obs.p.wait(timeout=60) == 0
        wait_client(b, "dev1", False)
    finally:
        obs.close()
    pub = ops_client(b)
    try:
        for i in range(3):
            pub.publish("$cmd/dev1/x", "queued-%d" % i, qos=1).wait_for_publish(timeout=30)
        end = time.monotonic() + 30
        while client_info(b, "dev1")["queued"] + client_info(b, "dev1")["inflight"] < 3:
            assert time.monotonic() < end, client_info(b, "dev1")
            time.sleep(0.05)
        obs = Observer(b, "/cmd?c=dev1&token=tok1", 90)
        try:
            for i in range(3):
                obs.wait_for("queued-%d" % i)
            # acknowledged: nothing left in the session
            end = time.monotonic() + 30
            while True:
                o = client_info(b, "dev1")
                if o["connected"] and o["queued"] == 0 and o["inflight"] == 0:
                    break
                assert time.monotonic() < end, o
                time.sleep(0.05)
            # live, QoS 0 and 1
            pub.publish("$cmd/dev1/y", "live-0", qos=0)
            pub.publish("$cmd/dev1/y", "live-1", qos=1).wait_for_publish(timeout=30)
            obs.wait_for("live-1")
        finally:
            obs.close()
    finally:
        pub.loop_stop()
        pub.disconnect()
    end = time.monotonic() + 30
    while True:
        evs = b.rapi.json("GET", "/api/v1/clients/dev1/events")["events"]
        kinds = [e["event"] for e in evs]
        if kinds.count("client_connected") >= 2 and "client_disconnected" in kinds:
            break
        assert time.monotonic() < end, evs
        time.sleep(0.05)
    conn = [e for e in evs if e["event"] == "client_connected"][0]
    assert "coap" in conn["detail"] and "CoAP" in conn["detail"], conn
    assert metric(b, "antenna_coap_downlink_attached_total") >= 2


def test_takeover_and_kill(dbroker):
    """A newer observation for the same device takes the session over (the
    older one ends with a 5.03); a killed observer is dropped after the
    observation lifetime and its session stays."""
    b = dbroker("  observe_lifetime_s: 3\n")
    first = Observer(b, "/cmd?c=dev1&token=tok1", 90)
    second = None
    try:
        wait_client(b, "dev1", True)
        wait_metric(b, "antenna_coap_observers", 1)
        second = Observer(b, "/cmd?c=dev1&token=tok1", 90)
        first.wait_for("5.03")
        wait_metric(b, "antenna_coap_downlink_takeovers_total", 1)
        wait_metric(b, "antenna_coap_observers", 1)
        o = wait_client(b, "dev1", True)
        assert o["connected"], o
        second.p.send_signal(signal.SIGKILL)
        second.p.wait(timeout=30)
        wait_metric(b, "antenna_coap_observers", 0)
        o = wait_client(b, "dev1", False)
        assert o["persistent"], o
    finally:
        first.close()
        if second:
            second.close()


def test_kick_and_mqtt_takeover(dbroker):
    """An administrator's kick ends the observation (5.03); an MQTT CONNECT
    with the device's client id takes the session from an observation, and
    an observation takes it back from the MQTT connection."""
    import threading
    b = dbroker()
    obs = Observer(b, "/cmd?c=dev1&token=tok1", 90)
    try:
        wait_client(b, "dev1", True)
        st, _, _ = b.rapi.call("DELETE", "/api/v1/clients/dev1")
        assert st in (200, 204)
        obs.wait_for("5.03")
        wait_client(b, "dev1", False)
    finally:
        obs.close()
    obs = Observer(b, "/cmd?c=dev1&token=tok1", 90)
    m = None
    try:
        wait_client(b, "dev1", True)
        m = mqtt.Client(client_id="dev1", protocol=mqtt.MQTTv311, clean_session=False)
        m.username_pw_set("dev1", "tok1")
        m.reconnect_delay_set(min_delay=120, max_delay=120)  # no reconnect to race
        disc = threading.Event()
        m.on_disconnect = lambda *a: disc.set()
        m.connect("127.0.0.1", b.port)
        m.loop_start()
        obs.wait_for("5.03")
        end = time.monotonic() + 30
        while (client_info(b, "dev1") or {}).get("protocol") != "mqtt":
            assert time.monotonic() < end, client_info(b, "dev1")
            time.sleep(0.05)
        again = Observer(b, "/cmd?c=dev1&token=tok1", 90)
        try:
            assert disc.wait(30)
            wait_client(b, "dev1", True)
        finally:
            again.close()
    finally:
        obs.close()
        if m:
            m.loop_stop()
            m.disconnect()


def test_refused(dbroker):
    b = dbroker()
    rc, out = coap(b, "get", "/cmd?token=tok1", extra=["-s", "1"])
    assert "4.00" in out, out
    rc, out = coap(b, "get", "/cmd?c=dev1&token=bad", extra=["-s", "1"])
    assert "4.01" in out, out
    rc, out = coap(b, "post", "/cmd?c=dev1&token=tok1", "x")
    assert "4.05" in out, out
    rc, out = coap(b, "get", "/cmd/more?c=dev1&token=tok1")
    assert "4.04" in out, out
    assert client_info(b, "dev1") is None


def test_stop_while_observing(dbroker):
    """The broker stops cleanly (nothing leaked under ASan) with a device
    observing /cmd and a message on its way."""
    b = dbroker()
    obs = Observer(b, "/cmd?c=dev1&token=tok1", 90)
    pub = ops_client(b)
    try:
        wait_client(b, "dev1", True)
        pub.publish("$cmd/dev1/z", "bye", qos=1).wait_for_publish(timeout=30)
        obs.wait_for("bye")
    finally:
        pub.loop_stop()
        pub.disconnect()
    try:
        b.stop()
    finally:
        obs.close()


@pytest.mark.parametrize("bad, key", [("session_expiry: -1", "coap.session_expiry"),
                                      ("rate: -1", "coap.rate"),
                                      ("subscriptions: [\"a/#/b\"]", "coap.subscriptions")])
def test_bad_config_refused(tmp_path, bad, key):
    import subprocess

    from conftest import require_antenna_bin
    cfg = tmp_path / "a.yaml"
    cfg.write_text("persistence:\n  enabled: false\ncoap:\n  enabled: true\n  %s\n" % bad)
    p = subprocess.run([require_antenna_bin(), "check", "-c", str(cfg)], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode != 0
    assert "a.yaml:5" in p.stderr + p.stdout and key in p.stderr + p.stdout, p.stderr + p.stdout


def test_device_registry_presence(tmp_path):
    """The device registry (src/devices) authenticates the device's token and
    shows its presence over CoAP."""
    brokers = SectionBrokers(tmp_path)
    try:
        b = brokers("devices:\n  enabled: true\n  auth_unknown: deny\n"
                    "coap:\n  enabled: true\n  bind: 127.0.0.1\n  port: 0\n",
                    auth={"chain": ["devices"]})
        b.coap_port = bound_port(b)
        b.rapi.json("POST", "/api/v1/devices", {"id": "c-dev", "token": "ct"}, status=201)
        obs = Observer(b, "/cmd?c=c-dev&token=ct", 90)
        try:
            end = time.monotonic() + 30
            while True:
                p = b.rapi.json("GET", "/api/v1/devices/c-dev")["presence"]
                if p["connected"]:
                    break
                assert time.monotonic() < end, p
                time.sleep(0.05)
            assert p["protocol"] == "coap" and p["listener"] == "coap", p
            assert p["peer"].startswith("127.0.0.1:"), p
        finally:
            obs.close()
        rc, out = coap(b, "get", "/cmd?c=c-dev&token=wrong", extra=["-s", "1"])
        assert "4.01" in out, out
    finally:
        brokers.close()


def test_rate_per_source_address(dbroker):
    """coap.rate: requests per second per source address; past it 4.29
    (no payload), counted; the bucket refills."""
    import socket
    import struct
    b = dbroker("  rate: 5\n")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    try:
        def ask(mid):
            # CON GET /nothing: 4.04 when let through
            s.sendto(struct.pack("!BBH", 0x40, 0x01, mid) + b"\xb7nothing",
                     ("127.0.0.1", b.coap_port))
            while True:
                data, _ = s.recvfrom(2048)
                if struct.unpack("!H", data[2:4])[0] == mid:
                    return data
        codes = []
        while len(codes) < 300 and (4 << 5) | 29 not in codes:  # bounded
            codes.append(ask(len(codes) + 1)[1])
        limited = [c for c in codes if c == (4 << 5) | 29]
        assert limited and codes[0] == (4 << 5) | 4, codes
        wait_metric(b, "antenna_coap_rate_limited_total", len(limited))
        # 4.29 carries no payload: no larger than the request
        mid = 100
        end = time.monotonic() + 30
        while True:
            d = ask(mid)
            mid += 1
            if d[1] == (4 << 5) | 4:
                break  # refilled
            assert d[1] == (4 << 5) | 29 and len(d) == 4, d
            assert time.monotonic() < end
            time.sleep(0.05)
    finally:
        s.close()


def test_dtls_identity_is_the_device(dbroker, tmp_path):
    """Over DTLS-PSK the identity is the device: /cmd needs no query."""
    import subprocess

    from test_90_coap import CLIENT, dtls_port
    psk = tmp_path / "coap.psk"
    psk.write_text("dev1:secret-one\n")
    b = dbroker("  psk_file: %s\n  dtls_port: 0\n" % psk)
    port = dtls_port(b)
    out_path = tmp_path / "dtls-observer.out"
    with open(out_path, "wb") as f:
        p = subprocess.Popen([CLIENT, "-m", "get", "-s", "90", "-B", "120", "-u", "dev1", "-k",
                              "secret-one", "coaps://127.0.0.1:%d/cmd" % port],
                             stdout=f, stderr=subprocess.STDOUT)
        pub = ops_client(b)
        try:
            o = wait_client(b, "dev1", True)
            assert o["username"] == "dev1", o
            pub.publish("$cmd/dev1/x", "secret-command", qos=1).wait_for_publish(timeout=30)
            end = time.monotonic() + 30
            while b"secret-command" not in out_path.read_bytes():
                assert time.monotonic() < end and p.poll() is None, out_path.read_bytes()
                time.sleep(0.05)
        finally:
            pub.loop_stop()
            pub.disconnect()
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)


def test_qos1_acknowledged_at_the_devices_ack(dbroker):
    """A QoS 1 command is sent as a CON notification and is delivered (the
    session's PUBACK) only when the device ACKs it: a raw CoAP device that
    does not ACK leaves it in flight (libcoap retransmits), its ACK ends it."""
    import socket
    import struct
    b = dbroker(sections="commands:\n  enabled: true\n  reply_timeout: 60s\n")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(30)
    try:
        # CON GET /cmd?c=dev1&token=tok1, Observe: 0, token 0x7a
        reg = (struct.pack("!BBHB", 0x41, 0x01, 1, 0x7a) + b"\x60" + b"\x53cmd" +
               b"\x46c=dev1" + b"\x0atoken=tok1")
        s.sendto(reg, ("127.0.0.1", b.coap_port))
        ack = s.recvfrom(2048)[0]
        assert ack[0] >> 4 & 3 == 2 and ack[1] == (2 << 5) | 5, ack  # ACK 2.05
        wait_client(b, "dev1", True)
        r = b.rapi.json("POST", "/api/v1/devices/dev1/commands",
                        {"name": "open", "qos": 1}, status=202)
        end = time.monotonic() + 30
        while True:
            d = s.recvfrom(2048)[0]
            if b'"open"' in d:
                break
            assert time.monotonic() < end
        assert d[0] >> 4 & 3 == 0 and d[4] == 0x7a, d  # CON, the observation's token
        mid = struct.unpack("!H", d[2:4])[0]
        # not ACKed: libcoap sends it again (ACK_TIMEOUT 2-3 s), and until the
        # ACK it stays in flight, the command "sent"
        while True:
            again = s.recvfrom(2048)[0]
            if again[2:4] == d[2:4]:
                break
            assert time.monotonic() < end + 30
        assert b.rapi.json("GET", "/api/v1/commands/%s" % r["id"])["status"] == "sent"
        assert client_info(b, "dev1")["inflight"] == 1
        s.sendto(struct.pack("!BBH", 0x60, 0, mid), ("127.0.0.1", b.coap_port))
        # seen at once by the gateway's peek; if the ACK slipped in between the
        # peek and libcoap's read (a busy machine), after MAX_TRANSMIT_WAIT
        # (93 s) without libcoap giving up (coapgw_down.c wait_sweep)
        end = time.monotonic() + 130
        while True:
            o = client_info(b, "dev1")
            st = b.rapi.json("GET", "/api/v1/commands/%s" % r["id"])["status"]
            if st == "delivered" and o["inflight"] == 0:
                break
            assert time.monotonic() < end, (st, o)
            time.sleep(0.05)
    finally:
        s.close()
