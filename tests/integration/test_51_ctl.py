"""`antenna ctl`: every command against a real broker with the management
API enabled (an API key made by `antenna ctl keys create`), with real paho
clients connected; the human tables and the --json output (parsed), and the
exit codes: 0 success, 1 an API or connection error (printed), 2 bad usage.
Also basic auth (a mosquitto_passwd users file) and HTTPS (a self-signed
certificate made by openssl: trusted with --cacert, refused without).
"""

import json
import os
import shutil
import subprocess
import threading

import paho.mqtt.client as mqtt
import pytest

from conftest import free_port, wait_for
from helpers import Paho

pytestmark = pytest.mark.antenna_only


def ctl(bin_, *args, url=None, key=None, env=None, timeout=20):
    """Runs `antenna ctl ARGS`; returns (exit code, stdout, stderr)."""
    cmd = [bin_, "ctl"]
    if url:
        cmd += ["--url", url]
    if key:
        cmd += ["--key", key]
    cmd += list(args)
    e = dict(os.environ)
    e.pop("ANTENNA_API_URL", None)
    e.pop("ANTENNA_API_KEY", None)
    e.update(env or {})
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, env=e,
                       timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def make_key(bin_, path, name="ops"):
    rc, out, err = ctl(bin_, "keys", "create", name, "--keys-file", str(path))
    assert rc == 0, err
    key = out.strip()
    assert key.startswith("ak_") and len(key) == 67, out
    return key


class Api:
    """A broker with the API on an ephemeral port and a key; .run(*args)
    runs ctl against it, .ok(*args) asserts exit 0 and returns stdout,
    .json(*args) adds --json and parses."""

    def __init__(self, bin_, b, key):
        self.bin, self.b, self.key = bin_, b, key

    def run(self, *args, **kw):
        return ctl(self.bin, *args, url=self.b.api_url, key=self.key, **kw)

    def ok(self, *args):
        rc, out, err = self.run(*args)
        assert rc == 0, "ctl %s: exit %d\n%s%s" % (" ".join(args), rc, out, err)
        return out

    def json(self, *args):
        return json.loads(self.ok("--json", *args))

    def fails(self, *args, code=1):
        rc, out, err = self.run(*args)
        assert rc == code, "ctl %s: exit %d, wanted %d\n%s%s" % (" ".join(args), rc, code,
                                                                  out, err)
        return out, err


@pytest.fixture
def api(broker, antenna_bin, tmp_path):
    key = make_key(antenna_bin, tmp_path / "api.keys")
    b = broker(api={"keys_file": str(tmp_path / "api.keys")})
    assert b.api_url, b.log_text()
    return Api(antenna_bin, b, key)


def paho_client(b, client_id, protocol=mqtt.MQTTv311, clean=True):
    """A connected paho client that stays down once the broker drops it
    (no automatic reconnect); .gone is set on its disconnection, .reason is
    the reason code it got (MQTT 5) or the rc."""
    p = Paho(b, client_id=client_id, protocol=protocol,
             clean_session=None if protocol == mqtt.MQTTv5 else clean)
    p.gone = threading.Event()
    p.reason = None
    if protocol == mqtt.MQTTv5:  # paho's MQTT 5 callbacks take reason codes and properties
        p.client.on_connect = lambda c, u, flags, rc, props=None: p._on_connect(
            c, u, flags, getattr(rc, "value", rc))
        p.client.on_subscribe = lambda c, u, mid, rcs, props=None: p._on_subscribe(
            c, u, mid, [getattr(r, "value", r) for r in rcs])

    def on_disconnect(client, userdata, rc, *props):
        p.reason = getattr(rc, "value", rc)
        p.gone.set()
        client.disconnect()  # stops paho's loop from reconnecting

    p.client.on_disconnect = on_disconnect
    return p.connect()


# ------------------------------------------------------------ no broker needed

def test_ctl_usage_errors_exit_2(antenna_bin):
    rc, out, err = ctl(antenna_bin)
    assert rc == 2 and "Usage: antenna ctl" in err
    rc, out, err = ctl(antenna_bin, "--help")
    assert rc == 0
    for word in ("status", "clients", "kick", "sessions drop", "subscriptions", "retained",
                 "publish", "reload", "--json"):
        assert word in out, word
    for args, msg in [(["frobnicate"], "unknown command 'frobnicate'"),
                      (["clients", "explode"], "unknown clients command"),
                      (["clients", "show"], "one CLIENT_ID"),
                      (["publish", "a/b"], "TOPIC PAYLOAD"),
                      (["publish", "a/b", "x", "--qos", "3"], "--qos must be 0, 1 or 2"),
                      (["clients", "--limit", "zero"], "--limit"),
                      (["clients", "--connected", "maybe"], "--connected"),
                      (["status", "--bogus"], "unknown option --bogus"),
                      (["status", "--url"], "needs a value"),
                      (["--url", "ftp://x", "status"], "--url must start with http"),
                      (["--key", "k", "--user", "u", "status"], "exclusive"),
                      (["publish", "t", "p", "--user-property", "novalue"], "KEY=VALUE"),
                      (["keys", "create", "n"], "--keys-file")]:
        rc, out, err = ctl(antenna_bin, *args)
        assert rc == 2, (args, rc, out, err)
        assert msg in err, (args, err)


def test_ctl_unreachable_server_exit_1(antenna_bin):
    port = free_port()
    rc, out, err = ctl(antenna_bin, "status", url="http://127.0.0.1:%d" % port, key="ak_x")
    assert rc == 1
    assert "127.0.0.1:%d" % port in err and "connect" in err.lower(), err


def test_ctl_keys_create_appends_hashed_keys(antenna_bin, tmp_path):
    f = tmp_path / "k"
    k1 = make_key(antenna_bin, f, "one")
    k2 = make_key(antenna_bin, f, "two")
    assert k1 != k2
    text = f.read_text()
    assert k1 not in text and k2 not in text  # stored hashed only
    names = [line.split(":")[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert names == ["one", "two"], text
    assert os.stat(f).st_mode & 0o077 == 0, oct(os.stat(f).st_mode)


# ------------------------------------------------------------ against the broker

def test_ctl_auth_and_env_defaults(api, antenna_bin):
    # a wrong key: the API's 401 message, exit 1
    rc, out, err = ctl(antenna_bin, "status", url=api.b.api_url, key="ak_" + "0" * 64)
    assert rc == 1
    assert "401" in err and "unauthorized" in err, err
    # no credentials at all
    rc, out, err = ctl(antenna_bin, "clients", url=api.b.api_url)
    assert rc == 1 and "401" in err, err
    # --json prints the error body on stdout for scripts
    rc, out, err = ctl(antenna_bin, "--json", "status", url=api.b.api_url, key="ak_bad")
    assert rc == 1 and json.loads(out)["code"] == "unauthorized"
    # ANTENNA_API_URL / ANTENNA_API_KEY as defaults
    rc, out, err = ctl(antenna_bin, "--json", "status",
                       env={"ANTENNA_API_URL": api.b.api_url, "ANTENNA_API_KEY": api.key})
    assert rc == 0, err
    assert json.loads(out)["info"]["version"]


def test_ctl_status_health_listeners_config(api):
    with Paho(api.b, client_id="st-1"), Paho(api.b, client_id="st-2"):
        out = api.ok("status")
        assert "version" in out and "uptime_s" in out, out
        assert "ready  yes" in out, out
        lines = {l.split()[0]: l.split()[-1] for l in out.splitlines() if l.strip()}
        assert lines["connections.current"] == "2", out
        st = api.json("status")
        assert st["ready"] is True
        assert st["info"]["workers"] == 2
        assert st["stats"]["connections"]["current"] == 2
        assert st["stats"]["messages"]["received"] >= 0

    out = api.ok("health")
    assert "live   yes" in out and "ready  yes" in out, out
    h = api.json("health")
    assert h["live"]["status"] == "ok"

    out = api.ok("listeners")
    assert "PORT" in out and str(api.b.port) in out, out
    ls = api.json("listeners")["data"]
    assert [l["port"] for l in ls] == [api.b.port]

    cfg = api.json("config")
    assert cfg["workers"] == 2
    assert cfg["listeners"][0]["port"] == api.b.port
    out = api.ok("config")
    assert "listeners" in out and "workers" in out


def test_ctl_clients_list_show_kick(api):
    v3 = paho_client(api.b, "ctl-v3-a")
    v5 = paho_client(api.b, "ctl-v5-b", protocol=mqtt.MQTTv5)
    other = paho_client(api.b, "zz-other")
    try:
        v5.subscribe("kick/#", 1)
        out = api.ok("clients")
        header = out.splitlines()[0]
        assert header.startswith("CLIENT ID") and "ADDRESS" in header, out
        rows = [l.split()[0] for l in out.splitlines()[1:-1]]
        assert rows == ["ctl-v3-a", "ctl-v5-b", "zz-other"], out  # sorted by client id
        assert out.splitlines()[-1].startswith("3 clients of 3"), out
        # columns line up: every row's ADDRESS starts where the header's does
        col = header.index("ADDRESS")
        for l in out.splitlines()[1:-1]:
            assert l[col:].startswith("127.0.0.1:"), (l, col)

        data = api.json("clients", "--prefix", "ctl-")
        assert [c["client_id"] for c in data["data"]] == ["ctl-v3-a", "ctl-v5-b"]
        assert data["total"] == 2
        page = api.json("clients", "--limit", "1", "--page", "2")
        assert [c["client_id"] for c in page["data"]] == ["ctl-v5-b"]
        assert page["page"] == 2 and page["limit"] == 1 and page["total"] == 3

        out = api.ok("clients", "show", "ctl-v5-b")
        assert "protocol_version  5" in out, out
        assert "subscriptions (1):" in out and "kick/#" in out, out
        one = api.json("clients", "show", "ctl-v5-b")
        assert one["connected"] is True and one["protocol_version"] == 5
        assert [s["topic"] for s in one["subscriptions"]] == ["kick/#"]

        # kick: the v5 client gets DISCONNECT 0x98, the v3 one a closed socket
        assert "kicked client 'ctl-v5-b'" in api.ok("clients", "kick", "ctl-v5-b")
        assert v5.gone.wait(5), "the kicked MQTT 5 client was not disconnected"
        assert v5.reason == 0x98, v5.reason
        assert api.json("clients", "kick", "ctl-v3-a") == {"ok": True}
        assert v3.gone.wait(5), "the kicked MQTT 3.1.1 client was not disconnected"
        assert not other.gone.is_set()
        api.b.wait_log(r"client 'ctl-v5-b' .*: disconnected: kicked by the management API")
        wait_for(lambda: [c["client_id"] for c in api.json("clients", "--connected", "true")["data"]]
                 == ["zz-other"], 5, what="only zz-other connected")
        # kicking a client that is not connected: the API's 404, exit 1
        out, err = api.fails("clients", "kick", "ctl-v3-a")
        assert "404" in err and "not_found" in err, err
        out, err = api.fails("clients", "show", "no-such-client")
        assert "404" in err, err
    finally:
        for p in (v3, v5, other):
            p.close()


def test_ctl_sessions_drop(api):
    p = paho_client(api.b, "persist-1", clean=False)
    p.subscribe("keep/#", 1)
    p.close()
    wait_for(lambda: [c["client_id"] for c in api.json("clients", "--connected", "false")["data"]]
             == ["persist-1"], 5, what="persist-1 offline with its session")
    out = api.ok("clients", "--connected", "false")
    assert "persist-1" in out and "false" in out, out
    assert "dropped the session of 'persist-1'" in api.ok("sessions", "drop", "persist-1")
    out, err = api.fails("clients", "show", "persist-1")
    assert "404" in err
    out, err = api.fails("sessions", "drop", "persist-1")
    assert "404" in err
    assert api.json("subscriptions", "--client", "persist-1")["data"] == []


def test_ctl_subscriptions_and_topics(api):
    a = paho_client(api.b, "sub-a")
    c = paho_client(api.b, "sub-c", protocol=mqtt.MQTTv5)
    try:
        a.subscribe("s/one", 1)
        a.subscribe("s/+/x", 2)
        c.subscribe("s/one", 0)
        out = api.ok("subscriptions")
        assert out.splitlines()[0].split()[:4] == ["CLIENT", "ID", "TOPIC", "QOS"], out
        rows = [l.split()[:3] for l in out.splitlines()[1:-1]]
        assert rows == [["sub-a", "s/+/x", "2"], ["sub-a", "s/one", "1"], ["sub-c", "s/one", "0"]], out
        d = api.json("subscriptions", "--client", "sub-c")["data"]
        assert [(s["client_id"], s["topic"], s["qos"]) for s in d] == [("sub-c", "s/one", 0)]
        t = api.json("topics")["data"]
        assert {x["topic"]: x["subscribers"] for x in t} == {"s/one": 2, "s/+/x": 1}
        out = api.ok("topics")
        assert "SUBSCRIBERS" in out and "s/+/x" in out, out
    finally:
        a.close()
        c.close()


def test_ctl_retained_list_get_delete(api):
    with Paho(api.b, client_id="ret-pub") as p:
        p.publish("r/a/b", b"hello", qos=1, retain=True)
        p.publish("r/bin", bytes([0xff, 0x00, 0xfe]), qos=0, retain=True)
        p.publish("other/x", b"nope", qos=1, retain=True)
    wait_for(lambda: len(api.json("retained", "--prefix", "r/")["data"]) == 2, 5,
             what="two retained messages under r/")
    out = api.ok("retained", "--prefix", "r/")
    assert out.splitlines()[0].startswith("TOPIC"), out
    assert "r/a/b" in out and "hello" in out and "r/bin" in out and "other/x" not in out, out
    out = api.ok("retained", "get", "r/a/b")
    assert "payload         hello" in out or "payload  " in out, out
    m = api.json("retained", "get", "r/a/b")
    assert (m["topic"], m["qos"], m["payload"], m["payload_base64"]) == ("r/a/b", 1, "hello", "aGVsbG8=")
    m = api.json("retained", "get", "r/bin")
    assert m["payload"] is None and m["payload_base64"] == "/wD+"
    assert "deleted the retained message of 'r/a/b'" in api.ok("retained", "delete", "r/a/b")
    out, err = api.fails("retained", "get", "r/a/b")
    assert "404" in err
    out, err = api.fails("retained", "delete", "r/a/b")
    assert "404" in err
    left = [m["topic"] for m in api.json("retained", "--limit", "1000")["data"]]
    assert [t for t in left if not t.startswith("$SYS/")] == ["other/x", "r/bin"], left
    # a topic that needs escaping in a URL path: space, UTF-8, '%', '?', '&', '=', '//'
    odd = "r/with space/\u00fc%2F?&=//x"
    with Paho(api.b, client_id="ret-odd") as p:
        p.publish(odd, b"odd", qos=1, retain=True)
    assert api.json("retained", "get", odd)["topic"] == odd
    assert "deleted" in api.ok("retained", "delete", odd)
    out, err = api.fails("retained", "get", odd)
    assert "404" in err


def test_ctl_publish(api):
    s5 = paho_client(api.b, "pub-sub5", protocol=mqtt.MQTTv5)
    s3 = paho_client(api.b, "pub-sub3")
    try:
        s5.subscribe("p/#", 1)
        s3.subscribe("p/x", 0)
        out = api.ok("publish", "p/x", "hi there", "--qos", "1", "--content-type", "text/plain",
                     "--user-property", "k=v", "--user-property", "k2=a=b",
                     "--response-topic", "r/1", "--expiry", "60")
        assert "published to 'p/x' (delivered to 2 subscribers)" in out, out
        m = s5.get()
        assert (m.topic, m.payload, m.qos) == ("p/x", b"hi there", 1)
        props = m.properties
        assert props.ContentType == "text/plain" and props.ResponseTopic == "r/1"
        assert props.UserProperty == [("k", "v"), ("k2", "a=b")]
        assert 0 < props.MessageExpiryInterval <= 60
        assert s3.get().payload == b"hi there"

        r = api.json("publish", "p/y", "AAEC", "--base64", "--retain")
        assert r == {"delivered": 1}
        assert s5.get().payload == bytes([0, 1, 2])
        s3.expect_nothing(0.3)
        assert api.json("retained", "get", "p/y")["payload_base64"] == "AAEC"

        # the API's validation error, naming the field: exit 1
        out, err = api.fails("publish", "p/+", "x")
        assert "400" in err and "field topic" in err, err
        out, err = api.fails("publish", "p/z", "!!notbase64", "--base64")
        assert "400" in err and "field payload" in err, err
    finally:
        s5.close()
        s3.close()


def test_ctl_reload(api):
    out = api.ok("reload")
    assert "reloaded" in out
    assert api.json("reload")["reloaded"] is True
    api.b.wait_log(r"reload", timeout=5)
    api.b.assert_serving()


def test_ctl_basic_auth(broker, antenna_bin, tmp_path):
    mp = shutil.which("mosquitto_passwd")
    if mp is None:
        pytest.skip("mosquitto_passwd not installed")
    users = tmp_path / "users"
    users.write_text("")
    subprocess.run([mp, "-b", str(users), "admin", "s3cret pass"], check=True, timeout=10)
    # mosquitto_passwd writes 101 iterations: accepted only when asked
    b = broker(api={"users_file": str(users), "min_password_iterations": 101})
    rc, out, err = ctl(antenna_bin, "--user", "admin", "--password", "s3cret pass", "--json",
                       "status", url=b.api_url)
    assert rc == 0, err
    assert json.loads(out)["info"]["workers"] == 2
    rc, out, err = ctl(antenna_bin, "--user", "admin", "--password", "wrong", "status",
                       url=b.api_url)
    assert rc == 1 and "401" in err, err
    # --user wins over a key in the environment
    rc, out, err = ctl(antenna_bin, "--user", "admin", "--password", "s3cret pass", "health",
                       url=b.api_url, env={"ANTENNA_API_KEY": "ak_wrong"})
    assert rc == 0, err


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")
def test_ctl_https(broker, antenna_bin, tmp_path):
    crt, key_pem = tmp_path / "api.crt", tmp_path / "api.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key_pem), "-out", str(crt), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True, timeout=60)
    key = make_key(antenna_bin, tmp_path / "k")
    b = broker(api={"keys_file": str(tmp_path / "k"), "tls_cert": str(crt),
                    "tls_key": str(key_pem)})
    assert b.api_url.startswith("https://")
    with Paho(b, client_id="over-https"):
        rc, out, err = ctl(antenna_bin, "--cacert", str(crt), "--json", "clients",
                           url=b.api_url, key=key)
        assert rc == 0, err
        assert [c["client_id"] for c in json.loads(out)["data"]] == ["over-https"]
    # the same certificate from the environment
    rc, out, err = ctl(antenna_bin, "health", url=b.api_url, key=key,
                       env={"ANTENNA_API_CACERT": str(crt)})
    assert rc == 0, err
    # a certificate nobody vouched for: refused, exit 1, the TLS reason printed
    rc, out, err = ctl(antenna_bin, "status", url=b.api_url, key=key)
    assert rc == 1 and "certificate" in err.lower(), err
    rc, out, err = ctl(antenna_bin, "--insecure", "status", url=b.api_url, key=key)
    assert rc == 0, err
    # plain http on the https port: no answer the CLI mistakes for success
    rc, out, err = ctl(antenna_bin, "--timeout", "3", "status",
                       url=b.api_url.replace("https://", "http://"), key=key)
    assert rc == 1, (out, err)
