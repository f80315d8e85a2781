"""Memory after a burst of acknowledged deliveries that the turn arena did
not notice (issue 20; src/broker/worker.c on_gauge_timer; docs/benchmarks.md
"Where the cluster's bytes per device were").

A QoS 1 broadcast to an MQTT 3.1.1 subscriber allocates its session's
inflight ring and its sess_ext_t (the resend timer); the PUBACK frees both.
Freed among the sessions' live allocations they stay inside malloc (its
fast bins and holes: ~270 B a device) until malloc_trim.  The worker
called it only when a burst's output passed the turn arena's keep (256
kB), which a broadcast of a small message to fewer than ~15,000 devices on
a worker does not: a cluster node's share of the 1,000,000-device
broadcast kept ~300 B a device for good.  Now a second with few
acknowledgements after many (1,024 or more since the last trim) trims too:

- 2,000 devices (antenna-bench sub beside the broker's binary, MQTT
  3.1.1, each subscribed to its own topic and `bcast` at QoS 1), two
  broadcasts of a 9-byte message, every copy acknowledged: within a
  deadline the broker's RSS is back within 400 kB of what it was before
  (the turn arena keeps up to 256 kB; main's binary: ~650-690 kB more, for
  good);
- and it still delivers: the generator counts both broadcasts on every
  device.
Skipped under ASan (its allocator is not glibc's)."""

import json
import os
import subprocess

import pytest

from conftest import IS_MOSQUITTO, require_antenna_bin, wait_for
from test_108_sub_mem import rss

pytestmark = [pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only"),
              pytest.mark.skipif(os.environ.get("ANTENNA_SANITIZED") == "1",
                                 reason="ASan's allocator: no malloc_trim")]

N = 2000
# the turn arena keeps up to 256 kB it touched (a busy host's turns carry
# more output), and a few pages of malloc's: main's binary keeps ~650 kB more
KEEP = 400 * 1024
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_memory_comes_back_after_small_broadcasts(broker, tmp_path):
    bench = os.path.join(os.path.dirname(require_antenna_bin()), "antenna-bench")
    if not os.access(bench, os.X_OK):
        pytest.skip("no antenna-bench beside the broker's binary")
    b = broker(workers=1, listener={"max_connections": N + 10})
    ready = tmp_path / "ready"
    gen = subprocess.Popen(
        [bench, "sub", "-p", str(b.port), "-c", str(N), "--client-prefix", "t",
         "--sub-topic", "dev/%c/in", "--extra-sub", "bcast", "-q", "1", "-d", "60",
         "--ready-file", str(ready), "--json", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        wait_for(ready.exists, 60, what="%d devices subscribed" % N)
        pub = b.raw_connected("pub")
        pub.publish("warm/up", b"x", qos=1, pid=1)  # the publisher's first message
        # the baseline, subscribed and quiet (2 s without a change)
        last = [rss(b)]

        def settled():
            now = rss(b)
            same = now == last[0]
            last[0] = now
            return same
        wait_for(settled, 20, interval=2.0, what="a quiet RSS")
        before = rss(b)
        for k in range(2):
            pub.publish("bcast", b"broadcast", qos=1, pid=k + 2)
        # both reached the devices (the broker's RSS grew) ...
        wait_for(lambda: rss(b) > before + 100 * 1024, 10, what="the broadcasts delivered")
        grown = rss(b) - before
        try:
            wait_for(lambda: rss(b) <= before + KEEP, 30,
                     what="RSS back within %d kB of %d B (it grew %d B)"
                     % (KEEP >> 10, before, grown))
        except AssertionError as e:  # what malloc holds then, for the reader
            mem = subprocess.run([os.path.join(ROOT, "bench", "node_mem.py"), "--malloc",
                                  str(b.proc.pid)], capture_output=True, text=True, timeout=60)
            raise AssertionError("%s; now %d B\n%s" % (e, rss(b), mem.stdout)) from None
        pub.disconnect()
    finally:
        gen.terminate()
        out, _ = gen.communicate(timeout=30)
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("{")]
    if lines:  # both broadcasts reached every device
        assert json.loads(lines[-1]).get("recv", 0) >= 2 * N, lines[-1]
