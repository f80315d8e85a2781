"""The Kafka sink (src/sinks/sink_kafka.c, docs/sinks.md#kafka): the broker's
rule feeds a sink that points at librdkafka's mock cluster (3 brokers, 6
partitions) running in a process of our own (tests/tools/kafka_mock.c);
what arrived is consumed back with a real librdkafka consumer.  Checked:
every message exactly once (idempotent producer, acks=all), in order per
device (the key: the client id), across produce errors and a broker down
then up injected through the mock API, and across a SIGKILL of the broker
while the whole cluster is down; the producer's metrics; start-up errors
naming file:line:key."""

import json
import os
import pathlib
import queue
import subprocess
import threading
import time

import pytest

import mqttraw
from conftest import ANTENNA_BIN, IS_MOSQUITTO, require_antenna_bin, wait_for
from helpers import publish_pipelined
from test_61_modules import SectionBrokers

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="antenna's sinks")

KAFKA_MOCK = os.environ.get("KAFKA_MOCK_BIN",
                            str(pathlib.Path(ANTENNA_BIN).resolve().parent / "kafka_mock"))
TOPIC = "telemetry"
PARTITIONS = 6


def tsan_build():
    """librdkafka starts its threads with glibc's thrd_create, which
    ThreadSanitizer does not intercept (its allocator crashes in them): a
    TSan build cannot run a producer or the mock cluster."""
    try:
        out = subprocess.run(["ldd", ANTENNA_BIN], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "libtsan" in out


class KafkaMock:
    """kafka_mock in its own process; cmd() sends one line and returns the
    lines before its "ok ..." answer (an "error ..." answer fails)."""

    def __init__(self, brokers=3, topics=((TOPIC, PARTITIONS),)):
        if tsan_build():
            pytest.skip("librdkafka's threads under ThreadSanitizer (see tsan_build)")
        if not os.access(KAFKA_MOCK, os.X_OK):
            pytest.skip("no kafka_mock at %s (build it: cmake --build build)" % KAFKA_MOCK)
        args = [KAFKA_MOCK, "-b", str(brokers)]
        for name, n in topics:
            args += ["-t", "%s:%d" % (name, n)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        first = self._line(30)
        assert first.startswith("bootstrap "), first
        self.bootstrap = first.split()[1]

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _line(self, timeout):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("kafka_mock said nothing within %.0f s" % timeout)
        assert line is not None, "kafka_mock exited"
        return line

    def cmd(self, line, timeout=90):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        out = []
        deadline = time.monotonic() + timeout
        while True:
            got = self._line(max(0.1, deadline - time.monotonic()))
            if got.startswith("ok"):
                return out, got
            assert not got.startswith("error"), "%s: %s" % (line, got)
            out.append(got)

    def count(self, topic=TOPIC):
        return int(self.cmd("count " + topic)[1].split()[1])

    def consume(self, topic=TOPIC):
        """[(partition, offset, key, value)] of everything so far."""
        lines, _ = self.cmd("consume " + topic)
        return [tuple(l.split("\t", 3)) for l in lines]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def kafka():
    k = KafkaMock()
    yield k
    k.close()


def sections(bootstrap, sink_extra="", action_extra=""):
    return """sinks:
  sinks:
    - name: kafka
      type: kafka
      bootstrap_servers: "%s"
      topic: %s
      linger: 2ms
      max_inflight: 10000
      retry:
        max_attempts: 100000
        backoff: 50ms
        max_backoff: 500ms
%s
rules:
  rules:
    - id: tokafka
      sql: SELECT clientid, payload.n AS n FROM "dev/+/data"
      actions:
        - type: sink
          sink: kafka
%s
""" % (bootstrap, TOPIC, sink_extra, action_extra)


@pytest.fixture
def kbroker(tmp_path):
    brokers = SectionBrokers(tmp_path)
    yield brokers
    brokers.close()


def publish_devices(b, devices, first, count):
    """Each device publishes n = first..first+count-1 (QoS 1, pipelined)."""
    for dev in devices:
        c = b.raw_connected(client_id=dev)
        payloads = [json.dumps({"n": n}).encode() for n in range(first, first + count)]
        publish_pipelined(c, "dev/%s/data" % dev, payloads, 1, timeout=60)
        c.close()


def queue_length(b):
    st, _, raw = b.rapi.call("GET", "/metrics")
    assert st == 200, st
    for line in raw.decode().splitlines():
        if line.startswith('antenna_sink_kafka_queue_length{sink="kafka"} '):
            return int(line.split()[-1])
    raise AssertionError("no antenna_sink_kafka_queue_length in /metrics")


def check_delivered(msgs, devices, total_per_device):
    """Exactly once, in order per device, one partition per device."""
    seen = {}
    parts = {}
    for part, _off, key, value in msgs:
        row = json.loads(value)
        assert row["clientid"] == key, (key, value)
        seen.setdefault(key, []).append(row["n"])
        parts.setdefault(key, set()).add(part)
    assert sorted(seen) == sorted(devices), sorted(seen)
    for dev in devices:
        ns = seen[dev]
        assert ns == list(range(total_per_device)), \
            "%s: %d messages, first out of order or repeated at %s" % (
                dev, len(ns), next((i for i, n in enumerate(ns) if n != i), None))
        assert len(parts[dev]) == 1, (dev, parts[dev])


@pytest.mark.deadline(240)
def test_every_message_once_in_order(kafka, kbroker):
    b = kbroker(sections(kafka.bootstrap))
    devices = ["dev%d" % i for i in range(5)]
    publish_devices(b, devices, 0, 200)
    wait_for(lambda: kafka.count() >= 1000, 90, interval=0.3, what="1000 messages in Kafka")
    check_delivered(kafka.consume(), devices, 200)
    assert queue_length(b) == 0


@pytest.mark.deadline(240)
def test_broker_failure_loses_nothing(kafka, kbroker):
    b = kbroker(sections(kafka.bootstrap))
    devices = ["dev%d" % i for i in range(4)]
    publish_devices(b, devices, 0, 150)
    wait_for(lambda: kafka.count() >= 600, 90, interval=0.3, what="the first 600 messages")
    # produce requests fail (retriable), then broker 2 goes down mid-stream:
    # what it leads waits (less than message_timeout), the rest goes on
    kafka.cmd("push errors 12")
    publish_devices(b, devices, 150, 75)
    kafka.cmd("down 2")
    publish_devices(b, devices, 225, 75)
    # the outage is felt: records wait in the producer's queue
    wait_for(lambda: queue_length(b) > 0 or kafka.count() >= 1200, 30, interval=0.1,
             what="records waiting for broker 2")
    kafka.cmd("up 2")
    wait_for(lambda: kafka.count() >= 1200, 90, interval=0.3, what="1200 messages in Kafka")
    msgs = kafka.consume()
    assert len(msgs) == 1200, len(msgs)
    check_delivered(msgs, devices, 300)
    wait_for(lambda: queue_length(b) == 0, 30, what="an empty producer queue")


def sink_metrics(b):
    return b.rapi.json("GET", "/api/v1/sinks/kafka")["metrics"]


@pytest.mark.deadline(240)
def test_sigkill_while_kafka_is_down_loses_nothing(kafka, kbroker):
    """Every broker of the cluster down: acknowledged messages wait in the
    sink's buffer (the store) and in the producer's queue; the broker is
    killed with SIGKILL, Kafka comes back, the broker restarts and sends
    them: each arrives once, in order per device."""
    b = kbroker(sections(kafka.bootstrap))
    for i in (1, 2, 3):
        kafka.cmd("down %d" % i)
    devices = ["dev%d" % i for i in range(3)]
    publish_devices(b, devices, 0, 40)  # every PUBACK received: stored
    wait_for(lambda: sink_metrics(b)["appended"] >= 120, 30, what="120 records appended")
    b.kill()
    b.stopped = False
    for i in (1, 2, 3):
        kafka.cmd("up %d" % i)
    b.start()
    wait_for(lambda: kafka.count() >= 120, 90, interval=0.3, what="120 messages in Kafka")
    wait_for(lambda: sink_metrics(b)["queued"] == 0, 30, what="an empty sink buffer")
    msgs = kafka.consume()
    assert len(msgs) == 120, len(msgs)
    check_delivered(msgs, devices, 40)


def check_refused(tmp_path, text, want):
    path = tmp_path / "k.yaml"
    path.write_text(text)
    p = subprocess.run([require_antenna_bin(), "check", "-c", str(path)], capture_output=True,
                       text=True, timeout=60)
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert want in out, out


SINK_HEAD = """sinks:
  sinks:
    - name: k
      type: kafka
      bootstrap_servers: "127.0.0.1:1"
"""


def test_config_errors_name_file_line_key(tmp_path):
    check_refused(tmp_path, SINK_HEAD + "      acks: 1\n",
                  "k.yaml:6: sinks.sinks[0].acks: enable_idempotence needs acks: all")
    check_refused(tmp_path, SINK_HEAD + "      compression: brotli\n",
                  "k.yaml:6: sinks.sinks[0].compression")
    check_refused(tmp_path, SINK_HEAD + "      properties:\n        linger.mss: 5\n",
                  "k.yaml:7: sinks.sinks[0].properties.linger.mss: librdkafka: "
                  "No such configuration property")
    check_refused(tmp_path, SINK_HEAD + "      tls:\n        ca_file: /nonexistent.pem\n",
                  "k.yaml:7: sinks.sinks[0].tls.ca_file: cannot read")
    check_refused(tmp_path, SINK_HEAD + "      topic: 'not a topic'\n",
                  "k.yaml:6: sinks.sinks[0].topic")
    check_refused(tmp_path, SINK_HEAD.replace('      bootstrap_servers: "127.0.0.1:1"\n', ""),
                  "sinks.sinks[0].bootstrap_servers: required")
