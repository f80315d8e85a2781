"""Fixtures for the black-box integration tests.

`broker(**overrides)` starts a broker on a free 127.0.0.1 port with a config
written into the test's tmp dir and returns a Broker (.host, .port, .proc,
.log_path, .stop(), ...).  It is antenna (env ANTENNA_BIN, default
<repo>/build/antenna) unless BROKER_IMPL=mosquitto, which runs
/usr/sbin/mosquitto with an equivalent mosquitto.conf.

Overrides follow antenna's YAML config:
    broker()                                   # workers: 2, defaults otherwise
    broker(mqtt={"max_inflight": 5}, workers=1)
    broker(log={"file": str(tmp_path / "a.log")})
    broker(listener={"max_connections": 2})    # merged into the first listener
    broker(extra_listeners=1)                  # .ports has 2 ports
    broker(listener={"address": "::1"})        # .host becomes "::1"
    broker(listener={"transport": "tls", "cert_file": ..., "key_file": ...})
    broker(api={"keys_file": str(keys)})       # management API on an ephemeral
                                               # port: .api_port, .api_url
    broker(rlimit_nofile=64)                   # RLIMIT_NOFILE (soft and hard)
                                               # of the broker process

On teardown every broker still running is stopped with SIGTERM (exit code
must be 0 within 10 s) and the test fails if its output contains a sanitizer
report.
"""

import json
import math
import os
import pathlib
import random
import re
import resource
import signal
import socket
import subprocess
import time

import pytest

import mqttraw

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
IMPL = os.environ.get("BROKER_IMPL", "antenna").strip().lower() or "antenna"
ANTENNA_BIN = os.environ.get("ANTENNA_BIN", str(REPO / "build" / "antenna"))
MOSQUITTO_BIN = os.environ.get("MOSQUITTO_BIN", "/usr/sbin/mosquitto")
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                     "ThreadSanitizer")
# A ThreadSanitizer build (make tsan) reads its suppressions (uninstrumented
# libraries only) from here; every antenna the tests start inherits it.
os.environ.setdefault("TSAN_OPTIONS", "suppressions=%s" % (REPO / "tests" / "tsan.supp"))
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
TEST_DEADLINE = 120  # seconds; any single test running longer is aborted

# antenna's documented defaults; the mosquitto config is written from these
# so both brokers run with the same limits.
MQTT_DEFAULTS = {
    "max_packet_size": 1048576,
    "connect_timeout": 10,
    "max_keepalive": 65535,
    "max_inflight": 32,
    "max_queued": 1000,
    "retry_interval": 20,
    "session_expiry": 7200,
    "allow_anonymous": True,
    "sys_interval": 10,
}

# MQTT 5.0 keys (antenna's documented defaults).  They are written into the
# antenna config only when a test overrides them; for mosquitto, an override
# is mapped to its nearest option (see Broker.mosquitto_conf) and the keys
# mosquitto has no equivalent for are left out (tests that need them are
# antenna_only).
MQTT5_DEFAULTS = {
    "max_qos": 2,
    "retain_available": True,
    "wildcard_subscriptions": True,
    "shared_subscriptions": True,
    "subscription_identifiers": True,
    "topic_alias_max": 10,
    "receive_maximum": 100,
    "server_reference": "",
    "shared_strategy": "round_robin",
}

IS_MOSQUITTO = IMPL == "mosquitto"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "antenna_only: behaviour specific to antenna (or where mosquitto differs "
        "from antenna's spec); skipped when BROKER_IMPL=mosquitto")
    config.addinivalue_line(
        "markers", "deadline(seconds): per-test watchdog (default %d s)" % TEST_DEADLINE)
    if IMPL not in ("antenna", "mosquitto"):
        raise pytest.UsageError("BROKER_IMPL must be 'antenna' or 'mosquitto', not %r" % IMPL)


def pytest_report_header(config):
    if IS_MOSQUITTO:
        return "broker under test: mosquitto (%s)" % MOSQUITTO_BIN
    return "broker under test: antenna (%s)" % ANTENNA_BIN


def pytest_collection_modifyitems(config, items):
    if not IS_MOSQUITTO:
        return
    skip = pytest.mark.skip(reason="antenna_only: not checked against mosquitto")
    for item in items:
        if "antenna_only" in item.keywords:
            item.add_marker(skip)


# ------------------------------------------------------------------ helpers

class TestDeadlineExceeded(Exception):
    pass


@pytest.fixture(autouse=True)
def _deadline(request):
    """Abort a test that runs past its deadline (all waits are bounded
    anyway; this is a safety net so one hang cannot stall the suite)."""
    m = request.node.get_closest_marker("deadline")
    secs = m.args[0] if m else TEST_DEADLINE

    def on_alarm(signum, frame):
        raise TestDeadlineExceeded("test exceeded its %s s deadline" % secs)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, secs)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


_PORTS_GIVEN = set()


def free_port():
    """A port that is free now, for a config that must name it in advance
    (node links, a fixed API port).  Taken at random below the kernel's
    ephemeral range (32768-60999 here), where no connect() or bind(0) of
    another test or suite running beside this one lands between this check
    and the broker's bind; never the same one twice in this process.  Under
    pytest-xdist (make test runs the suite in 2 processes) each worker
    takes its own slice of the range, so two workers never pick one port."""
    rnd = random.SystemRandom()
    lo, hi = 20000, 32768
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if worker.startswith("gw") and worker[2:].isdigit() and count > 1:
        k, width = int(worker[2:]) % count, (hi - lo) // count
        lo, hi = lo + k * width, lo + (k + 1) * width
    for _ in range(1000):
        port = rnd.randrange(lo, hi)
        if port in _PORTS_GIVEN:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_GIVEN.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(host, port, timeout=0.2):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(cond, timeout, interval=0.05, what="condition"):
    """Poll cond() until truthy; return its value or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def freeze(pid, timeout=10.0):
    """SIGSTOP pid and wait until every thread of it is stopped.  kill()
    returns before the stop is done: the kernel wakes one thread, which
    stops the others when it runs; on a busy machine another thread (a link
    thread woken by the network) can run on for tens of milliseconds
    meanwhile.  A test that needs the process silent waits for this."""
    os.kill(pid, signal.SIGSTOP)

    def all_stopped():
        try:
            tids = os.listdir("/proc/%d/task" % pid)
        except FileNotFoundError:
            return False
        for t in tids:
            try:
                with open("/proc/%d/task/%s/stat" % (pid, t)) as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, ProcessLookupError):
                continue
            if state not in ("T", "t"):
                return False
        return True

    wait_for(all_stopped, timeout, interval=0.005, what="every thread of %d stopped" % pid)


def yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    v = str(v)
    word = re.fullmatch(r"[A-Za-z_/][A-Za-z0-9_./-]*", v) and v.lower() not in YAML_SPECIAL
    ipv4 = re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", v)
    if word or ipv4:
        return v               # plain scalar, as in the documented example
    return json.dumps(v)       # a JSON string is a valid YAML double-quoted scalar


YAML_SPECIAL = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def to_yaml(obj, indent=0):
    pad = "  " * indent
    lines = []
    for k, v in obj.items():
        if isinstance(v, dict):
            lines.append("%s%s:" % (pad, k))
            lines.extend(to_yaml(v, indent + 1))
        elif isinstance(v, list):
            lines.append("%s%s:" % (pad, k))
            for item in v:
                if not isinstance(item, dict):  # a list of scalars (auth.chain)
                    lines.append("%s  - %s" % (pad, yaml_scalar(item)))
                    continue
                sub = to_yaml(item, indent + 2)
                first = sub[0].lstrip()
                lines.append("%s  - %s" % (pad, first))
                lines.extend(sub[1:])
        else:
            lines.append("%s%s: %s" % (pad, k, yaml_scalar(v)))
    return lines


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def require_antenna_bin():
    if not (os.path.isfile(ANTENNA_BIN) and os.access(ANTENNA_BIN, os.X_OK)):
        pytest.fail("antenna binary not found at %s: build it (cmake -B build && "
                    "cmake --build build) or set ANTENNA_BIN" % ANTENNA_BIN)
    return ANTENNA_BIN


def sanitizer_report(text):
    for marker in SANITIZER_MARKERS:
        if marker in text:
            i = text.index(marker)
            return text[max(0, i - 200):i + 3000]
    return None


# ------------------------------------------------------------------ broker

class Broker:
    host = "127.0.0.1"

    def __init__(self, tmp_path, index, overrides):
        self.impl = IMPL
        self.dir = tmp_path
        self.index = index
        ov = dict(overrides)
        extra = ov.pop("extra_listeners", 0)
        listener = ov.pop("listener", {})
        self.workers = ov.pop("workers", 2)
        self.log_cfg = dict(level="info", file="")
        self.log_cfg.update(ov.pop("log", {}))
        self.mqtt = dict(ov.pop("mqtt", {}))
        self.limits = dict(ov.pop("limits", {}))
        # the broker's default (persistence on, in RocksDB) in this test's
        # own directory, unless the test says otherwise
        self.persistence = dict(ov.pop("persistence", {}))
        self.persistence.setdefault("dir", str(tmp_path / ("store%d" % index)))
        self.auth = dict(ov.pop("auth", {}))  # antenna-only: the auth section
        self.events = ov.pop("events", None)  # antenna-only: the events section
        self.examples = ov.pop("examples", None)  # antenna-only: the examples section
        self.root = dict(ov.pop("root", {}))  # antenna-only: other top-level keys
        extra_mqtt = dict(ov.pop("extra_mqtt", {}))  # antenna-only mqtt keys
        # the management API (antenna only): None = `api: {enabled: false}`
        # (parallel brokers must not share its default port); a dict is the
        # `api:` section, port 0 (ephemeral) unless given
        api = ov.pop("api", None)
        self.api = None if api is None else dict({"port": 0}, **api)
        self.rlimit_nofile = ov.pop("rlimit_nofile", None)
        self.api_port = None
        self.api_url = None
        unknown_mqtt = set(self.mqtt) - set(MQTT_DEFAULTS) - set(MQTT5_DEFAULTS)
        self.extra_mqtt = extra_mqtt
        if unknown_mqtt or ov:
            raise ValueError("unknown broker overrides: %r %r" % (unknown_mqtt, ov))
        self.ports = [free_port() for _ in range(1 + extra)]
        while len(set(self.ports)) != len(self.ports):
            self.ports = [free_port() for _ in range(1 + extra)]
        self.port = self.ports[0]
        self.listeners = []
        for i, p in enumerate(self.ports):
            lst = {"name": "mqtt%d" % i if i else "mqtt", "address": "127.0.0.1", "port": p}
            if i == 0:
                lst.update(listener)
            self.listeners.append(lst)
        # an IPv6 first listener (listener={"address": "::1"}): clients and
        # the start-up probe use that address
        if ":" in self.listeners[0]["address"]:
            self.host = self.listeners[0]["address"]
        self.stderr_path = tmp_path / ("broker%d.stderr.log" % index)
        self.log_path = pathlib.Path(self.log_cfg["file"]) if self.log_cfg["file"] else self.stderr_path
        self.proc = None
        self.stopped = False
        self.returncode = None

    # -- config
    def write_config(self):
        if self.impl == "mosquitto":
            path = self.dir / ("mosquitto%d.conf" % self.index)
            path.write_text(self.mosquitto_conf())
        else:
            cfg = {"workers": self.workers, "log": self.log_cfg,
                   "listeners": self.listeners}
            if self.mqtt or self.extra_mqtt:
                cfg["mqtt"] = dict(self.mqtt, **self.extra_mqtt)
            if self.limits:
                cfg["limits"] = self.limits
            if self.persistence:
                cfg["persistence"] = self.persistence
            if self.auth:
                cfg["auth"] = self.auth
            if self.events:
                cfg["events"] = self.events
            if self.examples:
                cfg["examples"] = self.examples
            cfg.update(self.root)
            cfg["api"] = self.api if self.api is not None else {"enabled": False}
            path = self.dir / ("antenna%d.yaml" % self.index)
            path.write_text("\n".join(to_yaml(cfg)) + "\n")
        self.config_path = path
        return path

    def mosquitto_conf(self):
        m = dict(MQTT_DEFAULTS)
        m.update(self.mqtt)
        lines = ["# generated from antenna overrides %r" % (self.mqtt,),
                 "per_listener_settings false",
                 "persistence false",
                 "set_tcp_nodelay true",
                 "allow_anonymous %s" % ("true" if m["allow_anonymous"] else "false"),
                 "max_inflight_messages %d" % m["max_inflight"],
                 "max_queued_messages %d" % m["max_queued"],
                 "max_packet_size %d" % m["max_packet_size"],
                 "max_keepalive %d" % m["max_keepalive"],
                 "sys_interval %d" % m["sys_interval"],
                 "connection_messages true"]
        # connect_timeout and retry_interval have no mosquitto 2 equivalent.
        # MQTT 5 keys, only when overridden (mosquitto's defaults otherwise):
        # mosquitto's max_inflight_messages is both the outgoing window and
        # the Receive Maximum it sends in CONNACK, so receive_maximum
        # overrides it; max_qos and max_topic_alias are listener options
        # (below); wildcard_subscriptions, shared_subscriptions,
        # subscription_identifiers, server_reference and shared_strategy
        # have no mosquitto 2.0 equivalent.
        if "receive_maximum" in self.mqtt:
            lines = [l for l in lines if not l.startswith("max_inflight_messages ")]
            lines.append("max_inflight_messages %d" % self.mqtt["receive_maximum"])
        if "retain_available" in self.mqtt:
            lines.append("retain_available %s" % ("true" if self.mqtt["retain_available"] else "false"))
        if m["session_expiry"]:
            lines.append("persistent_client_expiration %dh" % max(1, math.ceil(m["session_expiry"] / 3600)))
        if self.log_cfg["file"]:
            lines.append("log_dest file %s" % self.log_cfg["file"])
        else:
            lines.append("log_dest stderr")
        types = {"error": ["error"], "warn": ["error", "warning"],
                 "info": ["error", "warning", "notice", "information"],
                 "debug": ["all"]}[self.log_cfg["level"]]
        lines += ["log_type %s" % t for t in types]
        if os.geteuid() == 0:
            lines.append("user root")
        for lst in self.listeners:
            lines.append("listener %d %s" % (lst["port"], lst["address"]))
            if lst.get("max_connections"):
                lines.append("max_connections %d" % lst["max_connections"])
            if "max_qos" in self.mqtt:
                lines.append("max_qos %d" % self.mqtt["max_qos"])
            if "topic_alias_max" in self.mqtt:
                lines.append("max_topic_alias %d" % self.mqtt["topic_alias_max"])
        return "\n".join(lines) + "\n"

    # -- process
    def command(self):
        if self.impl == "mosquitto":
            return [MOSQUITTO_BIN, "-c", str(self.config_path)]
        return [require_antenna_bin(), "--config", str(self.config_path)]

    def start(self):
        # started (again, after stop() or kill()): stop() must stop it
        self.stopped = False
        self.returncode = None
        self.write_config()
        env = dict(os.environ)
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        preexec = None
        if self.rlimit_nofile is not None:
            n = self.rlimit_nofile

            def preexec():
                resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
        # KEEP_LOGS=1: a restarted broker's earlier output is kept beside
        # (brokerN.stderr.0, .1, ...) instead of overwritten: kill rounds
        if os.environ.get("KEEP_LOGS") and self.stderr_path.exists():
            k = 0
            while self.stderr_path.with_suffix(".%d" % k).exists():
                k += 1
            self.stderr_path.rename(self.stderr_path.with_suffix(".%d" % k))
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err, env=env,
                                         cwd=str(self.dir), preexec_fn=preexec)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                self.stopped = True
                self.returncode = self.proc.returncode
                pytest.fail("broker exited during start-up with code %s; output:\n%s"
                            % (self.proc.returncode, self.log_text()[-4000:]))
            if all(port_accepts(self.host if i == 0 else Broker.host, p)
                   for i, p in enumerate(self.ports)) and self.api_ready():
                return self
            if time.monotonic() >= deadline:
                self.kill()
                pytest.fail("broker did not accept connections on %s within %.0fs; output:\n%s"
                            % (self.ports, START_TIMEOUT, self.log_text()[-4000:]))
            time.sleep(0.05)

    def api_ready(self):
        """With an `api:` section: true once the log says where the API
        listens (sets .api_port and .api_url)."""
        if self.api is None or self.api.get("enabled") is False or self.impl == "mosquitto":
            return True
        m = re.search(r"api: listening on (\S+):(\d+)", self.log_text())
        if not m:
            return False
        host = m.group(1).strip("[]")
        self.api_port = int(m.group(2))
        scheme = "https" if self.api.get("tls_cert") else "http"
        self.api_url = "%s://%s:%d" % (scheme, "[%s]" % host if ":" in host else host,
                                       self.api_port)
        return True

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.running():
            self.proc.kill()
            self.proc.wait(5)
        self.stopped = True

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Send `sig` (SIGTERM), wait up to `timeout` s, assert exit code 0."""
        if self.stopped:
            return self.returncode
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError("broker did not exit within %.0fs of signal %d; output:\n%s"
                                     % (timeout, sig, self.log_text()[-4000:]))
            self.returncode = self.proc.returncode
        else:
            self.returncode = self.proc.returncode
            raise AssertionError("broker had already exited (code %s) before stop(); output:\n%s"
                                 % (self.returncode, self.log_text()[-4000:]))
        assert self.returncode == 0, "broker exit code %s after signal %d; output:\n%s" % (
            self.returncode, sig, self.log_text()[-4000:])
        return self.returncode

    # -- logs
    def log_text(self):
        """Everything the broker wrote: stderr plus the log file if any."""
        text = read_text(self.stderr_path)
        if self.log_path != self.stderr_path:
            text += read_text(self.log_path)
        return text

    def wait_log(self, pattern, timeout=5.0, flags=0):
        """Wait until a log line matches regex `pattern`; return the match."""
        rx = re.compile(pattern, flags)

        def find():
            for line in self.log_text().splitlines():
                m = rx.search(line)
                if m:
                    return m
            return None
        try:
            return wait_for(find, timeout, interval=0.05, what="log line /%s/" % pattern)
        except AssertionError:
            raise AssertionError("no log line matching /%s/ within %.1fs; log:\n%s"
                                 % (pattern, timeout, self.log_text()[-4000:]))

    # -- clients
    def raw(self, port=None, timeout=mqttraw.DEFAULT_TIMEOUT):
        return mqttraw.RawClient(self.host, port or self.port, timeout=timeout)

    def raw_connected(self, client_id="", **kw):
        c = self.raw()
        ack = c.connect(client_id, **kw)
        assert ack.rc == 0, ack
        return c

    def assert_serving(self):
        """A fresh client can connect, subscribe and get its own message."""
        assert self.running(), "broker exited: code %s" % self.proc.poll()
        with self.raw() as c:
            ack = c.connect("health-check")
            assert ack.rc == 0
            sub = c.subscribe(1, [("health/check", 1)])
            assert sub.codes == [1]
            c.publish("health/check", b"ok", qos=1, pid=2)
            p = c.recv_publish()
            assert (p.topic, p.payload) == ("health/check", b"ok")
            c.ack(p)
            c.disconnect()


def stop_all(started):
    """Stop the brokers a fixture started (kill what does not stop), then
    fail the test with every problem at once: a broker that did not stop
    cleanly, a sanitizer report in its output."""
    errors = []
    for b in started:
        if b.proc is None:
            continue
        try:
            if not b.stopped:
                b.stop()
        except AssertionError as e:
            errors.append(str(e))
        finally:
            if b.running():
                b.kill()
        rep = sanitizer_report(b.log_text())
        if rep:
            errors.append("sanitizer report in broker output:\n" + rep)
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.fixture
def broker(tmp_path):
    started = []

    def start(**overrides):
        b = Broker(tmp_path, len(started), overrides)
        started.append(b)
        return b.start()

    yield start
    stop_all(started)


@pytest.fixture
def antenna_bin():
    if IS_MOSQUITTO:
        pytest.skip("antenna_only")
    return require_antenna_bin()
