"""Command line, configuration file, signals and logging."""

import os
import re
import signal
import socket
import subprocess
import time

import pytest

import mqttraw
from conftest import REPO, free_port, port_accepts, read_text, sanitizer_report, wait_for
from helpers import Paho


def cmake_version():
    text = (REPO / "CMakeLists.txt").read_text()
    m = re.search(r"project\(\s*antenna\s+VERSION\s+([0-9][0-9.]*)", text)
    assert m, "no project(antenna VERSION x.y.z) in CMakeLists.txt"
    return m.group(1)


def run(args, timeout=5, **kw):
    """Run antenna to completion (bounded); return CompletedProcess."""
    p = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout, **kw)
    out = p.stdout.decode(errors="replace")
    err = p.stderr.decode(errors="replace")
    rep = sanitizer_report(out + err)
    assert rep is None, "sanitizer report:\n" + rep
    return p.returncode, out, err


class Running:
    """antenna started directly (not through the fixture), stderr to a file."""

    def __init__(self, args, tmp_path):
        self.err_path = tmp_path / "stderr.log"
        with open(self.err_path, "wb") as f:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                         cwd=str(tmp_path))

    def stderr(self):
        return read_text(self.err_path)

    def wait_stderr(self, pattern, timeout=10):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.stderr())
            if m:
                return m
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("no /%s/ in stderr within %ss (exit code %s):\n%s"
                                     % (pattern, timeout, self.proc.poll(), self.stderr()[-3000:]))
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("antenna did not exit within 10 s of signal %d" % sig)
        rep = sanitizer_report(self.stderr())
        assert rep is None, "sanitizer report:\n" + rep
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


# ------------------------------------------------------------ command line

@pytest.mark.antenna_only
def test_help_prints_usage_and_exits_0(antenna_bin):
    rc, out, err = run([antenna_bin, "--help"])
    assert rc == 0
    assert re.search(r"usage", out, re.I), out + err
    assert "--config" in out and "--port" in out, out


@pytest.mark.antenna_only
def test_version_prints_name_and_version(antenna_bin):
    rc, out, err = run([antenna_bin, "--version"])
    assert rc == 0
    assert out.strip() == "antenna %s" % cmake_version(), (out, err)


@pytest.mark.antenna_only
@pytest.mark.parametrize("args", [["--bogus"], ["-Z"], ["--port"]],
                         ids=["long", "short", "missing-arg"])
def test_bad_command_line_exits_1(antenna_bin, args):
    rc, out, err = run([antenna_bin] + args)
    assert rc == 1, (rc, out, err)
    assert err.strip(), "an explanation on stderr"


@pytest.mark.antenna_only
@pytest.mark.parametrize("opt", ["--port", "-p"])
def test_port_without_config_is_local_only(antenna_bin, tmp_path, opt):
    port = free_port()
    with Running([antenna_bin, opt, str(port)], tmp_path) as a:
        a.wait_stderr(r"listening on 127\.0\.0\.1:%d\b" % port)
        assert "local-only" in a.stderr()
        wait_for(lambda: port_accepts("127.0.0.1", port), 5, what="port open")
        with mqttraw.RawClient("127.0.0.1", port) as c:
            assert c.connect("cli-port").rc == 0
            assert c.is_open()
        assert a.stop() == 0


@pytest.mark.antenna_only
def test_default_listener_is_127_0_0_1_1883(antenna_bin, tmp_path):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", 1883))
        except OSError:
            pytest.skip("port 1883 is in use on this machine")
    with Running([antenna_bin], tmp_path) as a:
        a.wait_stderr(r"listening on 127\.0\.0\.1:1883\b")
        assert "local-only" in a.stderr()
        with mqttraw.RawClient("127.0.0.1", 1883) as c:
            assert c.connect("cli-default").rc == 0
        assert a.stop() == 0


# ------------------------------------------------------------ config errors

def config_error(antenna_bin, tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    t0 = time.monotonic()
    rc, out, err = run([antenna_bin, "--config", str(path)], timeout=10)
    assert time.monotonic() - t0 < 5, "a config error must stop start-up at once"
    return path, rc, err


def assert_config_message(err, path, line, key):
    # "FILE:LINE: KEY: problem"; KEY may be qualified (mqtt.max_inflight,
    # listeners[0].port ...).
    rx = re.compile(r"%s:%d: (?:[\w\[\].]*\.)?%s: \S" % (re.escape(str(path)), line, re.escape(key)))
    assert any(rx.search(l) for l in err.splitlines()), \
        "expected '%s:%d: %s: ...' on stderr, got:\n%s" % (path, line, key, err)


UNKNOWN_KEYS = [
    ("workers: 2\nbogus: 1\n", 2, "bogus"),
    ("workers: 2\nmqtt:\n  max_inflight: 4\n  max_infligth: 5\n", 4, "max_infligth"),
    ("log:\n  level: info\n  colour: red\n", 3, "colour"),
    ("listeners:\n  - name: mqtt\n    address: 127.0.0.1\n    prot: 1883\n", 4, "prot"),
]


@pytest.mark.antenna_only
@pytest.mark.parametrize("text,line,key", UNKNOWN_KEYS, ids=[k for _, _, k in UNKNOWN_KEYS])
def test_config_unknown_key_names_file_line_key(antenna_bin, tmp_path, text, line, key):
    path, rc, err = config_error(antenna_bin, tmp_path, text)
    assert rc == 1, err
    assert_config_message(err, path, line, key)


BAD_VALUES = [
    ("mqtt:\n  max_inflight: lots\n", 2, "max_inflight"),
    ("workers: 1\nlog:\n  level: loud\n", 3, "level"),
    ("listeners:\n  - name: mqtt\n    address: 127.0.0.1\n    port: 70000\n", 4, "port"),
    ("mqtt:\n  allow_anonymous: maybe\n", 2, "allow_anonymous"),
    ("workers: -1\n", 1, "workers"),
    ("mqtt:\n  max_keepalive: 65536\n", 2, "max_keepalive"),
    ("mqtt:\n  max_packet_size: 268435456\n", 2, "max_packet_size"),
]


@pytest.mark.antenna_only
@pytest.mark.parametrize("text,line,key", BAD_VALUES,
                         ids=["inflight-word", "level", "port-range", "bool", "negative",
                              "keepalive-range", "packet-size-range"])
def test_config_bad_value_names_file_line_key(antenna_bin, tmp_path, text, line, key):
    path, rc, err = config_error(antenna_bin, tmp_path, text)
    assert rc == 1, err
    assert_config_message(err, path, line, key)


@pytest.mark.antenna_only
def test_config_missing_file_exits_1(antenna_bin, tmp_path):
    rc, out, err = run([antenna_bin, "--config", str(tmp_path / "nope.yaml")])
    assert rc == 1
    assert "nope.yaml" in err


@pytest.mark.antenna_only
def test_full_documented_config_is_accepted(broker):
    # Every documented key, at its documented default (plus our port).
    b = broker(workers=2, log={"level": "debug", "file": ""},
               listener={"max_connections": 0},
               mqtt={"max_packet_size": 1048576, "connect_timeout": 10, "max_keepalive": 65535,
                     "max_inflight": 32, "max_queued": 1000, "retry_interval": 20,
                     "session_expiry": 7200, "allow_anonymous": True, "sys_interval": 10})
    b.assert_serving()


@pytest.mark.antenna_only
def test_logs_listening_address(broker):
    b = broker()
    b.wait_log(r"listening on 127\.0\.0\.1:%d\b" % b.port)


# ------------------------------------------------------------ listeners and workers

@pytest.mark.parametrize("workers", [1, 0])
def test_workers_setting_serves_clients(broker, workers):
    b = broker(workers=workers)
    b.assert_serving()


def test_two_listeners_share_one_broker(broker):
    b = broker(extra_listeners=1)
    with b.raw(port=b.ports[1]) as sub, b.raw(port=b.ports[0]) as pub:
        assert sub.connect("on-second").rc == 0
        assert sub.subscribe(1, [("x/y", 1)]).codes == [1]
        assert pub.connect("on-first").rc == 0
        pub.publish("x/y", b"across", qos=1, pid=9)
        p = sub.recv_publish()
        assert (p.topic, p.payload, p.qos) == ("x/y", b"across", 1)


# antenna_only: mosquitto 2.0.11 accepted (CONNACK 0) a third client on a
# listener with max_connections 2 in our runs.
@pytest.mark.antenna_only
def test_max_connections_refuses_extra_clients(broker):
    b = broker(listener={"max_connections": 2})
    a1 = b.raw_connected("mc-1")
    a2 = b.raw_connected("mc-2")
    c = b.raw()
    c.try_send(mqttraw.connect("mc-3"))
    got = c.wait_closed(3)
    assert all(p.type != mqttraw.CONNACK or p.rc != 0 for p in got), got
    # the first two are unaffected
    assert a1.is_open() and a2.is_open()
    a1.disconnect()
    a2.disconnect()


# ------------------------------------------------------------ signals

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_with_clients_connected_exits_0(broker, sig):
    b = broker()
    raws = [b.raw_connected("sig-%d" % i) for i in range(3)]
    raws[0].subscribe(1, [("sig/#", 1)])
    with Paho(b, "sig-paho") as p:
        p.subscribe("sig/#", 1)
        t0 = time.monotonic()
        assert b.stop(sig) == 0
        assert time.monotonic() - t0 < 10
    for c in raws:
        c.wait_closed(3)
        c.close()
    assert not port_accepts(b.host, b.port)


@pytest.mark.antenna_only
def test_sighup_reopens_log_file(broker, tmp_path):
    log = tmp_path / "antenna.log"
    b = broker(log={"file": str(log)})
    assert b.log_path == log
    wait_for(lambda: "listening on" in read_text(log), 5, what="start-up lines in log.file")
    rotated = tmp_path / "antenna.log.1"
    os.rename(log, rotated)
    b.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: log.exists() and "log reopened" in read_text(log), 5,
             what="'log reopened' in the new log file")
    assert b.running()
    b.assert_serving()
