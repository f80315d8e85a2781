"""The dashboard that manages (issue 14), in a real browser: Debian's
Chromium, headless, driven by playwright-core
(tests/integration/js/dashboard_manage.js, the conventions of test_52).

Two paho clients log in with users of the broker's password file (an MQTT
5.0 client with a persistent session and a subscription with options, an
MQTT 3.1.1 one subscribed to the publish topic).  The browser sees their
usernames and protocol versions in the clients table, opens the 5.0
client's detail view (fields checked against what the client did), kicks it
from there (the session stays, offline), publishes from the form (a
wildcard topic first: the API's JSON error is shown), and the 3.1.1 client
receives the message.  The test then stops the broker: the badge turns red
with a growing "last update N s ago"; started again on the same ports, it
turns green.  Screenshots in tests/integration/artifacts/.

Also `antenna ctl` (no browser): `retained get` prints a retained message's
MQTT 5 properties and user properties; basic auth from ANTENNA_API_USER /
ANTENNA_API_PASSWORD (or --user with ANTENNA_API_PASSWORD); protocol
versions and times by name; the Retained figure's source (`retained_sys`).
"""

import base64
import json
import os
import re
import subprocess
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from authutil import pbkdf2_line
from conftest import free_port, sanitizer_report
from test_52_dashboard import ARTIFACTS, CHROMIUM, JS_DIR, NODE, http_get, new_key, skip_reason

pytestmark = pytest.mark.antenna_only

TIMEOUT = 10


class V5:
    """A paho client (3.1.1 or 5.0) with a username, its network loop in a
    thread, bounded waits; no automatic reconnect after a disconnect."""

    def __init__(self, b, client_id, user, password, protocol=mqtt.MQTTv5):
        self.client = mqtt.Client(client_id=client_id, protocol=protocol)
        self.client.username_pw_set(user, password)
        self.protocol = protocol
        self.b = b
        self.connected = threading.Event()
        self.gone = threading.Event()
        self.acks = {}
        self.cond = threading.Condition()
        self.messages = []
        self.client.on_connect = self.on_connect
        self.client.on_disconnect = self.on_disconnect
        self.client.on_subscribe = self.on_subscribe
        self.client.on_message = self.on_message

    def on_connect(self, client, userdata, flags, rc, props=None):
        if rc == 0:
            self.connected.set()

    def on_disconnect(self, client, userdata, rc, props=None):
        self.gone.set()
        client.disconnect()  # the kick must stick: no automatic reconnect

    def on_subscribe(self, client, userdata, mid, granted, props=None):
        with self.cond:
            self.acks[mid] = granted
            self.cond.notify_all()

    def on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def connect(self, **kw):
        self.client.connect(self.b.host, self.b.port, keepalive=45, **kw)
        self.client.loop_start()
        assert self.connected.wait(TIMEOUT), "no CONNACK"
        return self

    def subscribe(self, *args, **kw):
        rc, mid = self.client.subscribe(*args, **kw)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        with self.cond:
            assert self.cond.wait_for(lambda: mid in self.acks, TIMEOUT), "no SUBACK"

    def wait_message(self, topic, timeout=TIMEOUT):
        with self.cond:
            ok = self.cond.wait_for(lambda: any(m.topic == topic for m in self.messages), timeout)
            assert ok, "no message on %s within %ss" % (topic, timeout)
            return [m for m in self.messages if m.topic == topic][0]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def restart(b):
    """Start the stopped broker again with the same config (same ports).
    Its output file starts anew: the first run's is checked here."""
    rep = sanitizer_report(b.log_text())
    assert not rep, "sanitizer report in broker output:\n" + rep
    b.stopped = False
    b.returncode = None
    b.start()


@pytest.mark.deadline(150)
def test_dashboard_detail_kick_publish_unreachable(broker, antenna_bin, tmp_path):
    why = skip_reason()
    if why:
        pytest.skip(why)
    key = new_key(antenna_bin, tmp_path / "keys")
    pw = tmp_path / "passwd"
    pw.write_text(pbkdf2_line("alice", "wonderland") + "\n" + pbkdf2_line("bob", "builder") + "\n")
    # a fixed API port: the browser finds the restarted broker where it was
    b = broker(api={"keys_file": str(tmp_path / "keys"), "port": free_port()},
               auth={"password_file": str(pw)})
    tag = str(os.getpid())
    v5_id, v311_id = "dm-five-" + tag, "dm-three-" + tag
    topic = "dm/%s/cmd" % tag
    payload = "on <b>&amp;</b> \u00e9"  # shown and sent as text, never as HTML

    five = V5(b, v5_id, "alice", "wonderland")
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 300
    five.connect(clean_start=False, properties=props)
    sub_props = Properties(PacketTypes.SUBSCRIBE)
    sub_props.SubscriptionIdentifier = 7
    five.subscribe("dm/+/state", options=SubscribeOptions(qos=1, noLocal=True,
                                                          retainAsPublished=True,
                                                          retainHandling=1),
                   properties=sub_props)
    three = V5(b, v311_id, "bob", "builder", protocol=mqtt.MQTTv311).connect()
    three.subscribe(topic, 1)

    ARTIFACTS.mkdir(exist_ok=True)
    for name in ("dashboard-detail.png", "dashboard-publish.png", "dashboard-unreachable.png"):
        if (ARTIFACTS / name).exists():
            (ARTIFACTS / name).unlink()
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    proc = subprocess.Popen(
        [NODE, str(JS_DIR / "dashboard_manage.js"), "--url", b.api_url + "/", "--key", key,
         "--client", v5_id, "--other", v311_id, "--publish-topic", topic, "--payload", payload,
         "--user-data-dir", str(profile), "--artifacts", str(ARTIFACTS), "--timeout", "120",
         "--chromium", CHROMIUM],
        cwd=str(JS_DIR), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    events = []
    received = None
    try:
        for line in proc.stdout:
            events.append(json.loads(line))
            name = events[-1]["event"]
            if name == "published":
                # the form's message reached the MQTT subscriber; then the broker goes away
                received = three.wait_message(topic)
                three.close()
                b.stop()
            elif name == "unreachable":
                restart(b)
            elif name in ("recovered", "error"):
                break
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        five.client.loop_stop()
    err = proc.stderr.read().decode(errors="replace")
    names = [e["event"] for e in events]
    assert names == ["logged_in", "clients", "detail", "kicked", "publish_refused", "published",
                     "unreachable", "recovered"], (events, err[-3000:])
    assert rc == 0, (events, err[-3000:])
    ev = {e["event"]: e for e in events}

    # the clients table: usernames from the password file, versions by name
    assert ev["clients"]["usernames"] == {v5_id: "alice", v311_id: "bob"}
    assert ev["clients"]["protocols"] == {v5_id: "5.0", v311_id: "3.1.1"}
    for text, title in ev["clients"]["since"].values():
        assert re.fullmatch(r"just now|\d+ s ago", text), text
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", title), title

    # the detail view, against what the 5.0 client did
    f = ev["detail"]["fields"]
    # its recent events (GET /api/v1/clients/{id}/events), newest first
    assert ev["detail"]["events"][-1] == "client_connected", ev["detail"]
    assert "subscribed" in ev["detail"]["events"], ev["detail"]
    assert f["state"] == "connected" and f["username"] == "alice", f
    assert f["address"].startswith("127.0.0.1:") and f["listener"] == "mqtt", f
    assert f["protocol"] == "MQTT 5.0" and f["keepalive"] == "45 s", f
    assert re.fullmatch(r"just now|\d+ s ago", f["connected_at"]), f
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", ev["detail"]["connected_title"])
    assert f["persistent"] == "yes" and f["session_expiry"] == "5m 0s", f
    assert f["inflight"] == "0" and f["queued"] == "0" and f["subscriptions"] == "1", f
    assert ev["detail"]["subscriptions"] == [
        ["dm/+/state", "1", "no local, retain as published, retain handling 1, id 7"]]

    # kicked from the detail view: disconnected for real, the session kept offline
    assert five.gone.wait(5), "the kicked client was not disconnected"
    assert ev["kicked"]["state"] == "offline"
    assert ev["kicked"]["fields"]["state"] == "offline"
    assert ev["kicked"]["fields"]["persistent"] == "yes"

    # the publish form: the API's JSON error, then the message delivered
    refused = ev["publish_refused"]
    assert refused["json"]["code"] == "bad_request" and refused["json"]["field"] == "topic", refused
    assert "HTTP 400" in refused["text"], refused
    assert "delivered to 1 session" in ev["published"]["text"], ev["published"]
    assert received.payload.decode() == payload and received.qos == 1

    # unreachable: red, counting; then green again
    t0, t1 = [int(re.search(r"last update (\d+) s ago", t).group(1)) for t in ev["unreachable"]["texts"]]
    assert t1 >= t0 + 2, ev["unreachable"]
    assert ev["unreachable"]["stale"] is True
    assert ev["unreachable"]["colour"] == "rgb(212, 63, 58)", ev["unreachable"]  # --bad
    assert ev["recovered"]["text"] == "ready"
    for name in ("dashboard-detail.png", "dashboard-publish.png", "dashboard-unreachable.png"):
        assert (ARTIFACTS / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


# ------------------------------------------------------------ antenna ctl


def ctl(bin_, *args, env=None, timeout=20):
    e = {k: v for k, v in os.environ.items() if not k.startswith("ANTENNA_API_")}
    e.update(env or {})
    p = subprocess.run([bin_, "ctl"] + list(args), env=e, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def test_ctl_retained_get_properties_and_password_env(broker, antenna_bin, tmp_path):
    users = tmp_path / "users"
    p = subprocess.run([antenna_bin, "apikey", "passwd", "-i", "1000", str(users), "ops"],
                       input=b"s3cret pass\n", capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    b = broker(api={"users_file": str(users)})
    c = V5(b, "dm-ctl-%d" % os.getpid(), "x", "y")
    c.connect()
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("trace", "abc-1"), ("site", "north\tgate")]
    props.ContentType = "application/json"
    props.ResponseTopic = "dm/reply"
    props.CorrelationData = b"\x01\x02"
    props.MessageExpiryInterval = 3600
    info = c.client.publish("dm/conf", b'{"on": true}', qos=1, retain=True, properties=props)
    info.wait_for_publish(TIMEOUT)
    assert info.is_published()

    url = ["--url", b.api_url]
    env = {"ANTENNA_API_USER": "ops", "ANTENNA_API_PASSWORD": "s3cret pass"}
    rc, out, err = ctl(antenna_bin, *url, "retained", "get", "dm/conf", env=env)
    assert rc == 0, err
    lines = out.splitlines()
    assert re.search(r"^topic\s+dm/conf$", out, re.M), out
    assert re.search(r"^properties\.content_type\s+application/json$", out, re.M), out
    assert re.search(r"^properties\.response_topic\s+dm/reply$", out, re.M), out
    assert re.search(r"^properties\.correlation_data\s+AQI=$", out, re.M), out
    assert re.search(r"^properties\.message_expiry_interval\s+(3600|359\d)$", out, re.M), out
    # the user properties as a table, in order, control characters made visible
    i = lines.index("properties.user_properties (2):")
    assert re.fullmatch(r"KEY\s+VALUE", lines[i + 1]), lines
    assert re.fullmatch(r"trace\s+abc-1", lines[i + 2]), lines
    assert re.fullmatch(r"site\s+north\?gate", lines[i + 3]), lines

    # --json is the API's answer
    rc, out, err = ctl(antenna_bin, *url, "--json", "retained", "get", "dm/conf", env=env)
    assert rc == 0, err
    assert json.loads(out)["properties"]["user_properties"] == [["trace", "abc-1"],
                                                               ["site", "north\tgate"]]

    # --user with the password from the environment; a wrong one is a 401
    rc, out, err = ctl(antenna_bin, *url, "--user", "ops", "status",
                       env={"ANTENNA_API_PASSWORD": "s3cret pass"})
    assert rc == 0, err
    rc, out, err = ctl(antenna_bin, *url, "--user", "ops", "status",
                       env={"ANTENNA_API_PASSWORD": "wrong"})
    assert rc == 1 and "HTTP 401" in err, (out, err)
    # --password on the command line wins over the environment
    rc, out, err = ctl(antenna_bin, *url, "--user", "ops", "--password", "s3cret pass", "health",
                       env={"ANTENNA_API_PASSWORD": "wrong"})
    assert rc == 0, err
    # ANTENNA_API_USER without a password: refused, not a crash
    rc, out, err = ctl(antenna_bin, *url, "status", env={"ANTENNA_API_USER": "ops"})
    assert rc == 1 and "HTTP 401" in err, (out, err)

    # human forms: the protocol version by name, *_at times in UTC
    rc, out, err = ctl(antenna_bin, *url, "clients", "show", c.client._client_id.decode(), env=env)
    assert rc == 0, err
    assert re.search(r"^protocol_version\s+5\.0$", out, re.M), out
    assert re.search(r"^connected_at\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", out, re.M), out
    rc, out, err = ctl(antenna_bin, *url, "clients", env=env)
    assert rc == 0 and re.search(r"\b5\.0\b", out), out

    # the Retained figure's source: $SYS counted apart
    basic = "Basic " + base64.b64encode(b"ops:s3cret pass").decode()
    st, _, body = http_get(b.api_url + "/api/v1/stats", {"Authorization": basic})
    stats = json.loads(body)
    assert st == 200 and stats["retained"] - stats["retained_sys"] == 1, stats

    rc, out, err = ctl(antenna_bin, "--help")
    assert rc == 0 and "ANTENNA_API_PASSWORD" in out and "ANTENNA_API_USER" in out, out
    c.close()
