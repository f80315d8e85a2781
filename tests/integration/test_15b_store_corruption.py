"""A damaged store is reported, not silently emptied (issue 13, item 10).

One flipped bit in the middle of RocksDB's write-ahead log used to start
the broker with none of its 200 retained and 300 queued messages and no
log line (point-in-time recovery stopped at the damaged record and dropped
everything after it).  Now: the broker refuses to start (exit code 1, the
store's directory and RocksDB's message on stderr), `antenna store
inspect` says the store is corrupt, and `antenna --recover` starts, keeps
every intact record, says what it dropped and copies the original logs
aside.  A torn last record, which a kill -9 in the middle of a write
leaves, is normal: the broker starts on it without a word.
"""

import os
import pathlib
import re
import subprocess
import time

import pytest

import mqttraw
from conftest import ANTENNA_BIN, START_TIMEOUT

pytestmark = pytest.mark.antenna_only  # antenna's store

SANITIZED = os.environ.get("ANTENNA_SANITIZED") == "1"
RETAINED = 200
QUEUED = 300


def fill(b):
    """RETAINED retained messages and QUEUED QoS 1 messages queued for the
    offline persistent session "corrupt-sub", each acknowledged (stored)."""
    sub = b.raw_connected("corrupt-sub", clean=False)
    assert sub.subscribe(1, [("queue/#", 1)]).codes == [1]
    sub.disconnect()
    sub.close()
    pub = b.raw_connected("corrupt-pub")
    for i in range(RETAINED):
        pub.publish("keep/%03d" % i, b"retained %d" % i, qos=1, retain=True, pid=i + 1)
    for i in range(QUEUED):  # publish() waits for each PUBACK
        pub.publish("queue/%03d" % i, b"queued %d" % i, qos=1, pid=i + 1)
    pub.close()


def wal(store):
    """The store's write-ahead log holding the messages: its largest .log."""
    logs = sorted(pathlib.Path(store).glob("*.log"), key=lambda p: p.stat().st_size)
    assert logs and logs[-1].stat().st_size > 10000, "no write-ahead log with the messages in %s: %r" % (
        store, [(p.name, p.stat().st_size) for p in logs])
    return logs[-1]


def run_refused(args):
    """Run the broker, which must exit on its own; returns (code, output)."""
    p = subprocess.Popen([ANTENNA_BIN] + args, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=START_TIMEOUT * (3 if SANITIZED else 1))
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail("the broker started on a corrupt store:\n" + err.decode(errors="replace"))
    return p.returncode, err.decode(errors="replace") + out.decode(errors="replace")


def drain(c, quiet):
    """Payloads of the PUBLISHes c receives until `quiet` s pass without one."""
    got = []
    while True:
        try:
            p = c.recv_publish(quiet)
        except mqttraw.Timeout:
            return got
        got.append(p.payload)
        if p.qos:
            c.ack(p)


def loaded_counts(b):
    """(retained, queued) as the broker's start-up lines report them (the
    listeners take connections into their backlog before the sessions are
    read, so the second line may come after start() returned)."""
    b.wait_log(r"sessions with \d+ messages restored", timeout=10)
    text = b.log_text()
    r = re.findall(r"(\d+) retained messages loaded", text)
    q = re.findall(r"sessions with (\d+) messages restored", text)
    assert r and q, text[-3000:]
    return int(r[-1]), int(q[-1])


def test_flipped_bit_in_the_log_refuses_start_and_recover_salvages(broker, tmp_path):
    store = str(tmp_path / "store")
    b = broker(persistence={"enabled": True, "dir": store, "sync": "none"})
    fill(b)
    b.kill()  # everything is in the write-ahead log, nothing in a table file
    log = wal(store)
    data = bytearray(log.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0x10
    log.write_bytes(bytes(data))

    # refused, with the reason on stderr
    code, out = run_refused(["--config", str(b.config_path)])
    assert code != 0, out
    assert "Corruption" in out and store in out and "--recover" in out, out
    # the store tool reports it too, and changes nothing
    r = subprocess.run([ANTENNA_BIN, "store", "inspect", store], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0, r.stdout[-2000:]
    assert "corrupt" in r.stderr.lower() and store in r.stderr, r.stderr
    assert log.read_bytes() == bytes(data), "the refused opens changed the damaged log"

    # --recover: starts, says what it did, keeps the log's copy
    b.command = lambda: [ANTENNA_BIN, "--config", str(b.config_path), "--recover"]
    b.stopped = False
    b.start()
    text = b.log_text()
    assert re.search(r"store: '%s' is corrupt" % re.escape(store), text), text[-3000:]
    assert "dropping" in text and "recovered" in text, text[-3000:]
    saved = list(pathlib.Path(store).glob("corrupt-wal-*/%s" % log.name))
    assert saved and saved[0].read_bytes() == bytes(data), "the damaged log was not kept"
    retained, queued = loaded_counts(b)
    # one damaged record is dropped, the intact ones after it are kept
    assert 0 < retained + queued < RETAINED + QUEUED, (retained, queued)
    assert retained > RETAINED // 2 or queued > QUEUED // 2, (retained, queued)
    # what was restored is served
    reader = b.raw_connected("corrupt-reader")
    assert reader.subscribe(1, [("keep/#", 1)]).codes == [1]
    assert len(drain(reader, 1.0)) == retained
    reader.close()
    sub = b.raw_connected("corrupt-sub", clean=False)
    assert len(drain(sub, 1.0)) == queued
    sub.close()
    b.stop()

    # the recovered store opens normally from now on
    del b.command
    b.stopped = False
    b.start()
    assert "corrupt" not in b.log_text()  # the log of this start only
    b.stop()


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_torn_last_record_after_kill9_still_starts(broker, tmp_path, cut):
    """A kill -9 in the middle of a write leaves a torn last record: the
    broker starts on it, quietly, and keeps every complete record."""
    store = str(tmp_path / "store")
    b = broker(persistence={"enabled": True, "dir": store, "sync": "none"})
    fill(b)
    b.kill()
    log = wal(store)
    with open(log, "r+b") as f:
        f.truncate(log.stat().st_size - cut)  # the end of the last record never written
    b.stopped = False
    b.start()
    retained, queued = loaded_counts(b)
    text = b.log_text()
    assert "Corruption" not in text and "corrupt" not in text, text[-3000:]
    # only the last write (one queued message) is gone
    assert retained == RETAINED and queued == QUEUED - 1, (retained, queued)
    b.stop()


def test_kill9_under_load_restarts_without_recover(broker, tmp_path):
    """A real kill -9 while messages are written: the restart needs no
    --recover (test_19 does this many times; this one kills mid-write
    with large messages to make a torn tail likely)."""
    store = str(tmp_path / "store")
    b = broker(persistence={"enabled": True, "dir": store, "sync": "none"})
    sub = b.raw_connected("torn-sub", clean=False)
    assert sub.subscribe(1, [("big/#", 1)]).codes == [1]
    sub.close()
    pub = b.raw_connected("torn-pub")
    big = os.urandom(200 * 1024)
    for i in range(20):
        pub.send(mqttraw.publish("big/%d" % i, big, qos=1, pid=i + 1))
    pub.recv_type(mqttraw.PUBACK, 5)  # writes are under way
    b.kill()
    pub.close()
    b.stopped = False
    b.start()
    assert "corrupt" not in b.log_text().lower(), b.log_text()[-3000:]
    b.stop()
