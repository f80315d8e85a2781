"""Modules (src/broker/module.h) through the example module, heartbeat
(src/modules/heartbeat): its own configuration section, a context and a
tick on every worker, a clean stop; errors in its section name
file:line:key and the broker refuses to start."""

import json
import re
import subprocess
import time

import pytest

from conftest import IS_MOSQUITTO, Broker, free_port, port_accepts, sanitizer_report, stop_all, \
    require_antenna_bin
from helpers import Paho

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only")


class SectionBroker(Broker):
    """The fixture's broker, with top-level sections of modules added to its
    configuration file."""

    def __init__(self, tmp_path, index, sections, overrides):
        super().__init__(tmp_path, index, overrides)
        self.sections = sections

    def write_config(self):
        path = super().write_config()
        with open(path, "a") as f:
            f.write(self.sections)
        return path


class SectionBrokers:
    """Brokers with module sections sharing one API key: calling it with a
    section (and the fixture's overrides) starts one, with b.rapi an API
    client; close() stops those still running.  The fixtures of the rules
    and sinks tests are this."""

    def __init__(self, tmp_path):
        from test_50_api import Client, make_key
        self.tmp_path = tmp_path
        self.keys = tmp_path / "api.keys"
        self.key = make_key(self.keys)
        self.client = Client
        self.started = []

    def __call__(self, section, **overrides):
        ov = {"api": {"keys_file": str(self.keys)}}
        ov.update(overrides)
        b = SectionBroker(self.tmp_path, len(self.started), section, ov)
        self.started.append(b)
        b.start()
        b.rapi = self.client(b, self.key)
        return b

    def close(self):
        for b in self.started:
            if b.running():
                b.stop()


def section_fixture(tmp_path, default_section):
    """The body of a fixture of SectionBrokers: yields start(section=
    default_section, **overrides); the brokers stop at the end.  A module's
    test file: `yield from section_fixture(tmp_path, SECTION)`."""
    brokers = SectionBrokers(tmp_path)

    def start(section=default_section, **overrides):
        return brokers(section, **overrides)

    try:
        yield start
    finally:
        brokers.close()


@pytest.fixture
def hb_broker(tmp_path):
    started = []

    def start(sections, **overrides):
        b = SectionBroker(tmp_path, len(started), sections, overrides)
        started.append(b)
        return b.start()

    yield start
    stop_all(started)


def beats(client, want_workers, min_seq=1, timeout=8.0):
    """Read heartbeats until every worker in want_workers has sent one with
    seq >= min_seq; return {worker: last payload}."""
    last = {}
    deadline = time.monotonic() + timeout
    while not all(w in last and last[w]["seq"] >= min_seq for w in want_workers):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("heartbeats of workers %r with seq >= %d not seen within "
                                 "%.1fs; last: %r" % (want_workers, min_seq, timeout, last))
        m = client.get(timeout=left)
        p = json.loads(m.payload)
        assert m.topic == "hb/t/%d" % p["worker"], (m.topic, p)
        last[p["worker"]] = p
    return last


def test_a_context_and_a_tick_on_every_worker(hb_broker):
    b = hb_broker("heartbeat:\n  interval: 1\n  topic: hb/t\n", workers=3)
    b.wait_log(r"heartbeat: publishing on hb/t/0\.\.2 every 1 s")
    with Paho(b) as c:
        c.subscribe("hb/t/+")
        last = beats(c, {0, 1, 2}, min_seq=2)
    assert set(last) == {0, 1, 2}
    for w, p in last.items():
        assert set(p) == {"worker", "seq", "uptime_s", "clients"}
    # the subscriber's worker counts it
    assert sum(p["clients"] for p in last.values()) == 1
    b.stop()
    m = b.wait_log(r"heartbeat: stopped after (\d+) beats")
    assert int(m.group(1)) >= 6
    rep = sanitizer_report(b.log_text())
    assert rep is None, rep


def test_retained_beats_reach_a_later_subscriber(hb_broker):
    b = hb_broker("heartbeat:\n  interval: 60\n  topic: hb/t\n  retain: true\n", workers=2)
    # the first beats go out as the workers start; a subscriber that comes
    # afterwards gets each worker's last one, retained
    deadline = time.monotonic() + 8.0
    while True:
        with Paho(b) as c:
            c.subscribe("hb/t/+")
            got = set()
            try:
                while got != {0, 1}:
                    m = c.get(timeout=0.5)
                    assert m.retain
                    got.add(json.loads(m.payload)["worker"])
            except AssertionError:
                pass
        if got == {0, 1}:
            break
        assert time.monotonic() < deadline, "retained heartbeats of both workers not seen"


def test_off_without_its_section(hb_broker):
    b = hb_broker("", workers=2, mqtt={"sys_interval": 1})
    with Paho(b) as sys, Paho(b) as hb:
        hb.subscribe("antenna/heartbeat/#")
        sys.subscribe("$SYS/broker/uptime")
        # $SYS (a module too) still publishes; the heartbeat does not
        assert sys.get(timeout=5.0).topic == "$SYS/broker/uptime"
        hb.expect_nothing(timeout=1.2)
    assert "heartbeat:" not in b.log_text()


BAD = [
    ("heartbeat:\n  interval: 100000\n", 2, "heartbeat.interval",
     "100000 is out of range 0..86400"),
    ("heartbeat:\n  interval: \"5\"\n", 2, "heartbeat.interval",
     "expected an integer, got a quoted string"),
    ("heartbeat:\n  interval: 5\n  bogus: 1\n", 3, "heartbeat.bogus", "unknown key"),
    ("heartbeat:\n  interval: 5\n  topic: a/+/b\n", 3, "heartbeat.topic",
     "\"a/+/b\": a topic to publish on has no wildcards"),
    ("heartbeat:\n  topic: \"\"\n", 2, "heartbeat.topic", "must not be empty"),
    ("heartbeat:\n  retain: maybe\n", 2, "heartbeat.retain",
     "expected true or false (yes/no, on/off), got \"maybe\""),
    ("heartbeat:\n  interval: 1\n  interval: 2\n", 3, "heartbeat.interval", "duplicate key"),
    ("heartbeat: 5\n", 1, "heartbeat", "expected a mapping, got a scalar"),
    ("heartbeat:\n  interval: 1\nheartbeat:\n  interval: 2\n", 3, "heartbeat",
     "duplicate key"),
    ("heartbeet:\n  interval: 1\n", 1, "heartbeet", "unknown key"),
]


@pytest.mark.parametrize("text,line,key,problem", BAD)
def test_errors_in_its_section_stop_the_start(tmp_path, text, line, key, problem):
    port = free_port()
    path = tmp_path / "bad.yaml"
    # two lines of listener, then the section: its line numbers move by 2
    path.write_text("listeners:\n  - port: %d\n" % port + text)
    p = subprocess.run([require_antenna_bin(), "--config", str(path)], cwd=str(tmp_path),
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    err = p.stderr.decode(errors="replace")
    assert sanitizer_report(err) is None, err
    assert p.returncode == 1, (p.returncode, err)
    want = "antenna: %s:%d: %s: %s" % (path, line + 2, key, problem)
    assert want in err, (want, err)
    assert not port_accepts("127.0.0.1", port)
