"""Consolidation (workers_consolidate, migrate.h): with two workers and a
light load every connected session lives on worker 0 and the other worker
sleeps; once the load passes the threshold the subscribers go back to their
hash homes and their publishers follow them.  Subscribers move with their
subscriptions while messages flow: none lost, none twice, each publisher's
order kept (the fence: what was matched before a move comes through the old
worker, what comes after it waits on the new one until nothing older can
follow)."""
import threading
import time

import pytest

from conftest import wait_for
from test_110_migrate import DEADLINE, Api, Sink, client, make_key, stop

pytestmark = pytest.mark.antenna_only  # about antenna's workers


def env(broker, tmp_path, **root):
    keys = tmp_path / "api.keys"
    key = make_key(keys)
    b = broker(workers=2, root=root, api={"keys_file": str(keys), "open_metrics": True},
               mqtt={"max_queued": 100000, "max_inflight": 1000})
    return b, Api(b, key)


def subscribers(b, sink, prefix, n):
    subs = []
    for i in range(n):
        s = client(b, "%ssub%d" % (prefix, i), on_message=sink.on_message)
        done = threading.Event()
        s.on_subscribe = lambda *_a, d=done: d.set()
        s.subscribe("co/%d" % i, i % 2)  # QoS 0 and 1
        assert done.wait(DEADLINE)
        subs.append(s)
    return subs


def check_all(sink, sent):
    """Every topic got exactly what its publisher sent, in its order."""
    for i, n in enumerate(sent):
        t = "co/%d" % i
        wait_for(lambda: len(sink.of(t)) >= n, DEADLINE, what="%s: %d messages" % (t, n))
        assert sink.of(t) == [str(k) for k in range(n)], t


def test_light_load_on_worker_0(broker, tmp_path):
    """Idle and light: every session ends on worker 0, subscribers
    included, and their messages still arrive in order."""
    b, api = env(broker, tmp_path)
    n = 10
    sink = Sink()
    subs, pubs = [], []
    try:
        subs = subscribers(b, sink, "c-", n)
        pubs = [client(b, "c-pub%d" % i) for i in range(n)]
        ids = ["c-sub%d" % i for i in range(n)] + ["c-pub%d" % i for i in range(n)]
        wait_for(lambda: all(api.workers("c-").get(i) == 0 for i in ids), DEADLINE,
                 what="every session on worker 0")
        # 20 ids all hashed to worker 0 is 1 in 2^20: some moved
        assert api.metric("antenna_worker_migrations_total") > 0
        assert api.metric("antenna_worker_consolidated") == 1
        for i, p in enumerate(pubs):
            for k in range(50):
                p.publish("co/%d" % i, str(k), qos=1)
        check_all(sink, [50] * n)
    finally:
        for c in pubs + subs:
            stop(c)


def test_subscribers_move_while_messages_flow(broker, tmp_path):
    """Publishers keep publishing (QoS 0 and 1) from before the first sweep
    until after the workers spread (any load over 1 % of a core, never
    consolidated again): subscribers move to worker 0 and back to their hash
    homes under the traffic, and every message arrives once, in order."""
    b, api = env(broker, tmp_path, workers_consolidate_below=0, workers_consolidate_above=1)
    n = 8
    sink = Sink()
    subs, pubs, sent = [], [], [0] * n
    stop_at = [time.monotonic() + 3 * DEADLINE]
    try:
        subs = subscribers(b, sink, "f-", n)
        pubs = [client(b, "f-pub%d" % i) for i in range(n)]

        def run(i):
            p, k = pubs[i], 0
            deadline = time.monotonic() + 3 * DEADLINE
            while time.monotonic() < min(stop_at[0], deadline):
                p.publish("co/%d" % i, str(k), qos=i % 2)
                k += 1
                sent[i] = k
                if k % 20 == 0:
                    time.sleep(0.01)
        ths = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in ths:
            t.start()
        # consolidated from the start, spread once the dwell is over
        wait_for(lambda: api.metric("antenna_worker_consolidations_total") >= 1, DEADLINE,
                 what="spread")
        subids = ["f-sub%d" % i for i in range(n)]
        # 8 subscribers hashed to one worker is 1 in 128: some go back to 1
        wait_for(lambda: 1 in {api.workers("f-").get(i) for i in subids}, DEADLINE,
                 what="subscribers back on worker 1")
        time.sleep(1)  # traffic after the moves as well
        stop_at[0] = 0
        for t in ths:
            t.join(DEADLINE)
        assert min(sent) > 100, sent
        assert api.metric("antenna_worker_consolidated") == 0
        check_all(sink, sent)
    finally:
        stop_at[0] = 0
        for c in pubs + subs:
            stop(c)
