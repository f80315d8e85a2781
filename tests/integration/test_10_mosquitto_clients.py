"""Smoke tests with the stock mosquitto_pub / mosquitto_sub command line clients."""

import shutil
import subprocess
import threading

import pytest

MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
FMT = "MSG|%t|%q|%r|%p"
# mosquitto_sub's stdout is a pipe here: line-buffer it so that its "-d"
# debug line "received SUBACK" arrives as soon as it subscribed.
LINEBUF = [shutil.which("stdbuf"), "-oL"] if shutil.which("stdbuf") else []

pytestmark = pytest.mark.skipif(not shutil.which("mosquitto_sub"),
                                reason="mosquitto-clients not installed")


class Sub:
    """mosquitto_sub in the background; .messages are (topic, qos, retain, payload)."""

    def __init__(self, b, topic, qos=0, count=1, wait=8, extra=()):
        self.proc = subprocess.Popen(
            LINEBUF + [MOSQUITTO_SUB, "-h", b.host, "-p", str(b.port), "-t", topic, "-q", str(qos),
             "-C", str(count), "-W", str(wait), "-d", "-F", FMT, *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines = []
        self.subscribed = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if "SUBACK" in line:
                self.subscribed.set()

    def wait_subscribed(self, timeout=5):
        assert self.subscribed.wait(timeout), "mosquitto_sub never subscribed:\n" + "\n".join(self.lines)

    def finish(self, timeout=10):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("mosquitto_sub did not finish:\n" + "\n".join(self.lines))
        self.reader.join(5)
        return rc

    @property
    def messages(self):
        out = []
        for l in self.lines:
            if l.startswith("MSG|"):
                _, topic, qos, retain, payload = l.split("|", 4)
                out.append((topic, int(qos), int(retain), payload))
        return out


def pub(b, *args, stdin=None):
    p = subprocess.run([MOSQUITTO_PUB, "-h", b.host, "-p", str(b.port), *args],
                       input=stdin, capture_output=True, timeout=10)
    assert p.returncode == 0, p.stderr.decode(errors="replace")


@pytest.mark.parametrize("version", ["mqttv311", "mqttv31"])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_pub_sub_each_qos(broker, qos, version):
    b = broker()
    s = Sub(b, "cli/t", qos=qos, extra=("-V", version))
    s.wait_subscribed()
    pub(b, "-t", "cli/t", "-q", str(qos), "-m", "hello %d" % qos, "-V", version)
    assert s.finish() == 0
    assert s.messages == [("cli/t", qos, 0, "hello %d" % qos)]


def test_qos_downgraded_to_subscription(broker):
    b = broker()
    s = Sub(b, "cli/#", qos=1)
    s.wait_subscribed()
    pub(b, "-t", "cli/down", "-q", "2", "-m", "two")
    assert s.finish() == 0
    assert s.messages == [("cli/down", 1, 0, "two")]


def test_retained_set_and_cleared(broker):
    b = broker()
    pub(b, "-t", "cli/r", "-q", "1", "-r", "-m", "kept")
    s = Sub(b, "cli/r", qos=1)
    assert s.finish() == 0
    assert s.messages == [("cli/r", 1, 1, "kept")]
    pub(b, "-t", "cli/r", "-q", "1", "-r", "-n")          # -n: empty payload
    s = Sub(b, "cli/r", qos=1, wait=1)
    s.finish()
    assert s.messages == []


def test_many_lines_in_order(broker):
    b = broker()
    n = 200
    s = Sub(b, "cli/lines", qos=1, count=n, wait=15)
    s.wait_subscribed()
    pub(b, "-t", "cli/lines", "-q", "1", "-l", stdin=b"".join(b"line %03d\n" % i for i in range(n)))
    assert s.finish(20) == 0
    assert [m[3] for m in s.messages] == ["line %03d" % i for i in range(n)]


def test_sub_sees_will_of_killed_client(broker):
    b = broker()
    s = Sub(b, "cli/will", qos=1)
    s.wait_subscribed()
    # mosquitto_sub with a will, killed with SIGKILL: no DISCONNECT
    victim = Sub(b, "cli/none", wait=30, extra=("--will-topic", "cli/will", "--will-payload",
                                                "died", "--will-qos", "1"))
    try:
        victim.wait_subscribed()
    finally:
        victim.proc.kill()
        victim.proc.wait(5)
    assert s.finish() == 0
    assert s.messages == [("cli/will", 1, 0, "died")]
