"""Live reload of the YAML (SIGHUP, POST /api/v1/reload, `antenna ctl
reload`) and drain mode (POST /api/v1/drain, `antenna ctl drain`), issue 14
("Change without disconnecting the fleet"): what is applied live, what is
named as needing a restart, a bad file changing nothing; listeners added and
removed; an ACL change without reconnecting; a drain with a server reference,
the broker exiting 0 when empty, a queued QoS 1 message surviving it."""

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

import mqttraw
from conftest import free_port, port_accepts, require_antenna_bin, wait_for

pytestmark = pytest.mark.antenna_only


@pytest.fixture
def abroker(broker, tmp_path):
    """broker(...) with the management API and a key (b.key)."""
    keys = tmp_path / "api.keys"
    p = subprocess.run([require_antenna_bin(), "apikey", "create", str(keys), "ops"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr

    def start(**kw):
        b = broker(api={"keys_file": str(keys)}, **kw)
        b.key = p.stdout.strip()
        return b
    return start


def call(b, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(b.api_url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json",
                                          "Authorization": "Bearer " + b.key})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def reload(b, status=200):
    st, ans = call(b, "POST", "/api/v1/reload")
    assert st == status, (st, ans)
    return ans


def ctl(b, *args):
    return subprocess.run([require_antenna_bin(), "ctl", "--url", b.api_url, "--key", b.key] + list(args),
                          capture_output=True, text=True, timeout=20)


def ping(c):
    c.send(mqttraw.pingreq())
    return c.recv_type(mqttraw.PINGRESP).type == mqttraw.PINGRESP


def test_reload_log_level_and_limit_keeps_clients(abroker):
    b = abroker()
    old = mqttraw.connect_v5(b.host, b.port, "stays")
    # a 600-byte publish is fine under the default max_packet_size
    assert old.publish("t/a", b"x" * 600, qos=1, pid=1).rc in (0, 0x10)
    b.mqtt["max_packet_size"] = 256
    b.log_cfg["level"] = "error"
    b.write_config()
    ans = reload(b)
    assert "mqtt.max_packet_size" in ans["applied"], ans
    assert "log.level" in ans["applied"], ans
    assert ans["restart_required"] == [] and ans["errors"] == [], ans
    assert ping(old), "the client connected before the reload was dropped"
    # the new limit: a new client's large publish is refused, a small one passes
    small = mqttraw.connect_v5(b.host, b.port, "small")
    assert small.publish("t/a", b"y" * 50, qos=1, pid=1).rc in (0, 0x10)
    small.disconnect()
    big = mqttraw.connect_v5(b.host, b.port, "big")
    big.send(mqttraw.publish5("t/a", b"z" * 600, qos=1, pid=2))
    big.expect_disconnect(mqttraw.RC_PACKET_TOO_LARGE)
    # the log level: "quiet" leaves no line at error level; back to info,
    # "loud" does (its line is written after quiet's would have been)
    quiet = mqttraw.connect_v5(b.host, b.port, "quiet-client")
    quiet.disconnect()
    b.log_cfg["level"] = "info"
    b.write_config()
    assert "log.level" in reload(b)["applied"]
    loud = mqttraw.connect_v5(b.host, b.port, "loud-client")
    loud.disconnect()
    b.wait_log(r"loud-client")
    assert "quiet-client" not in b.log_text()
    assert ping(old)
    old.disconnect()


def test_bad_file_changes_nothing(abroker):
    b = abroker()
    c = mqttraw.connect_v5(b.host, b.port, "c1")
    text = b.config_path.read_text()
    b.config_path.write_text(text + "limits:\n  max_inflight_typo: 3\n")
    ans = reload(b, 400)
    assert ans["applied"] == [] and len(ans["errors"]) == 1, ans
    err = ans["errors"][0]
    line = len(text.splitlines()) + 2
    assert err.startswith("%s:%d: limits.max_inflight_typo" % (b.config_path, line)), err
    # a good change next to a bad value: not applied either
    b.mqtt["max_packet_size"] = 128
    b.write_config()
    b.config_path.write_text(b.config_path.read_text() + "workers: many\n")
    ans = reload(b, 400)
    assert "workers" in ans["errors"][0] and ans["applied"] == [], ans
    assert c.publish("t/b", b"x" * 400, qos=1, pid=1).rc in (0, 0x10)
    b.wait_log(r"reload: .*limits\.max_inflight_typo.*nothing changed")
    c.disconnect()


def test_restart_required_keys_are_named(abroker):
    b = abroker()
    b.workers = 3
    b.persistence["sync"] = "none"
    b.limits["max_subscriptions"] = 7
    b.write_config()
    ans = reload(b)
    assert "workers" in ans["restart_required"], ans
    assert "persistence.sync" in ans["restart_required"], ans
    assert ans["applied"] == ["limits.max_subscriptions"], ans
    b.wait_log(r"reload: workers changed: not applied, needs a restart")
    # still named on the next reload, until a restart
    ans = reload(b)
    assert "workers" in ans["restart_required"] and ans["applied"] == [], ans
    # ctl prints the answer readably
    p = ctl(b, "reload")
    assert p.returncode == 0, p.stderr
    assert "need a restart:" in p.stdout and "  workers" in p.stdout, p.stdout


def test_sighup_reloads_the_yaml(broker):
    b = broker()
    c = mqttraw.connect_v5(b.host, b.port, "s1")
    b.limits["max_subscriptions"] = 1
    b.write_config()
    b.proc.send_signal(signal.SIGHUP)
    b.wait_log(r"reload: applied limits\.max_subscriptions = 1")
    assert c.subscribe(1, [("a", 0)]).codes == [0]
    assert c.subscribe(2, [("b", 0)]).codes[0] >= 0x80
    c.disconnect()


def test_listener_added_then_removed(abroker):
    b = abroker()
    port = free_port()
    b.listeners.append({"name": "extra", "address": "127.0.0.1", "port": port})
    b.write_config()
    ans = reload(b)
    assert "listeners[extra]" in ans["applied"], ans
    keep = mqttraw.connect_v5(b.host, port, "on-extra")
    st, ls = call(b, "GET", "/api/v1/listeners")
    assert [l["name"] for l in ls["data"]] == ["mqtt", "extra"], ls
    b.listeners.pop()
    b.write_config()
    ans = reload(b)
    assert "listeners[extra]" in ans["applied"], ans
    wait_for(lambda: not port_accepts(b.host, port), 5, what="the removed port refusing")
    assert ping(keep), "a connection of the removed listener was dropped"
    # readiness is not hurt by a removed listener
    st, _ = call(b, "GET", "/health/ready")
    assert st == 200
    # and it can come back (a new slot or the old one)
    b.listeners.append({"name": "extra2", "address": "127.0.0.1", "port": port})
    b.write_config()
    assert "listeners[extra2]" in reload(b)["applied"]
    again = mqttraw.connect_v5(b.host, port, "on-extra2")
    again.disconnect()
    keep.disconnect()


def test_acl_change_without_reconnecting(abroker, tmp_path):
    open_acl = tmp_path / "acl-open"
    open_acl.write_text("any\nallow all #\n")
    strict = tmp_path / "acl-strict"
    strict.write_text("any\nallow all public/#\n")
    b = abroker(auth={"acl_file": str(open_acl)})
    c = mqttraw.connect_v5(b.host, b.port, "acl1")
    assert c.publish("secret/x", b"1", qos=1, pid=1).rc in (0, 0x10)
    b.auth["acl_file"] = str(strict)
    b.write_config()
    ans = reload(b)
    assert "auth.acl_file" in ans["applied"], ans
    assert c.publish("secret/x", b"2", qos=1, pid=2).rc == 0x87
    assert c.publish("public/x", b"3", qos=1, pid=3).rc in (0, 0x10)
    c.disconnect()


def wait_exit(b, timeout=15):
    wait_for(lambda: b.proc.poll() is not None, timeout, what="the broker to exit")
    b.stopped = True
    b.returncode = b.proc.returncode
    return b.returncode


def test_drain_with_server_reference(abroker):
    b = abroker()
    v5 = [mqttraw.connect_v5(b.host, b.port, "d5-%d" % i) for i in range(3)]
    v3 = []
    for i in range(3):
        c = mqttraw.RawClient(b.host, b.port)
        assert c.connect("d3-%d" % i).rc == 0
        v3.append(c)
    p = ctl(b, "drain", "--rate", "4", "--server-reference", "other.example:1883")
    assert p.returncode == 0, p.stderr
    assert "draining: yes" in p.stdout and "other.example:1883" in p.stdout, p.stdout
    # no new connection, not ready
    assert not port_accepts(b.host, b.port)
    st, body = call(b, "GET", "/health/ready")
    assert st == 503 and body["status"] == "draining", body
    st, body = call(b, "GET", "/api/v1/drain")
    assert body["draining"] and body["rate"] == 4, body
    for c in v5:
        d = c.expect_disconnect(0x9C, timeout=10)  # Use another server
        assert d.props.get(mqttraw.SERVER_REFERENCE) == "other.example:1883", d
    for c in v3:
        got = c.wait_closed(10)
        assert all(p.type != mqttraw.DISCONNECT for p in got), got
    assert wait_exit(b) == 0
    log = b.log_text()
    assert "drain: started" in log and "drain: finished" in log, log[-2000:]


def test_drain_keeps_queued_message(abroker):
    b = abroker()
    sub = mqttraw.RawClient(b.host, b.port)
    assert sub.connect("keeper", clean=False).rc == 0
    sub.subscribe(1, [("q/t", 1)])
    sub.go_offline()
    pub = mqttraw.connect_v5(b.host, b.port, "pub")
    assert pub.publish("q/t", b"survives", qos=1, pid=1).rc == 0
    st, _ = call(b, "POST", "/api/v1/drain", {"rate": 1000})
    assert st == 202
    pub.expect_disconnect(mqttraw.RC_SERVER_SHUTTING_DOWN, timeout=10)
    assert wait_exit(b) == 0
    b.stopped = False
    b.start()
    sub = mqttraw.RawClient(b.host, b.port)
    ack = sub.connect("keeper", clean=False)
    assert ack.rc == 0 and ack.session_present, ack
    m = sub.recv_publish(timeout=10)
    assert m.payload == b"survives", m
    sub.ack(m)
    sub.disconnect()


def test_drain_stay_and_metrics(abroker):
    b = abroker()
    c = mqttraw.RawClient(b.host, b.port)
    assert c.connect("m1").rc == 0
    p = ctl(b, "drain", "--stay")
    assert p.returncode == 0, p.stderr
    c.wait_closed(10)

    def metrics():
        req = urllib.request.Request(b.api_url + "/metrics",
                                     headers={"Authorization": "Bearer " + b.key})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read().decode()
    wait_for(lambda: "antenna_drain_clients_left 0" in metrics(), 10, what="no client left")
    assert "antenna_draining 1" in metrics()
    b.wait_log(r"drain: finished after .*no client left \(the broker stays up\)")
    assert b.running()
    st, body = call(b, "POST", "/api/v1/drain", {})
    assert st == 409, body


def self_signed(d, name):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(d / (name + ".key")), "-out", str(d / (name + ".crt")),
                    "-days", "2", "-subj", "/CN=" + name], check=True, capture_output=True,
                   timeout=30)
    return str(d / (name + ".crt")), str(d / (name + ".key"))


def served_cert(port):
    import socket
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s) as t:
            return t.getpeercert(binary_form=True)


def test_tls_listener_added_and_its_certificate_changed(abroker, tmp_path):
    import ssl
    one = self_signed(tmp_path, "one")
    two = self_signed(tmp_path, "two")
    b = abroker()
    port = free_port()
    tls = {"name": "tls", "address": "127.0.0.1", "port": port, "transport": "tls",
           "cert_file": one[0], "key_file": one[1]}
    b.listeners.append(tls)
    b.write_config()
    assert "listeners[tls]" in reload(b)["applied"]
    assert served_cert(port) == ssl.PEM_cert_to_DER_cert(open(one[0]).read())
    tls["cert_file"], tls["key_file"] = two
    tls["handshake_timeout"] = 5  # not live: named
    b.write_config()
    ans = reload(b)
    assert "listeners[tls].tls" in ans["applied"], ans
    assert "listeners[tls].handshake_timeout" in ans["restart_required"], ans
    assert served_cert(port) == ssl.PEM_cert_to_DER_cert(open(two[0]).read())
    # a certificate that does not load changes nothing
    tls["cert_file"] = str(tmp_path / "missing.crt")
    b.write_config()
    ans = reload(b, 400)
    assert ans["applied"] == [] and "missing.crt" in ans["errors"][0], ans
    assert served_cert(port) == ssl.PEM_cert_to_DER_cert(open(two[0]).read())
