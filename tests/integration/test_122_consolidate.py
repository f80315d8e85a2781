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
from mqttraw import PUBLISH, RawClient, Timeout, puback, publish
from test_110_migrate import DEADLINE, Api, Sink, client, make_key, stop

pytestmark = pytest.mark.antenna_only  # about antenna's workers


def env(broker, tmp_path, mqtt=None, workers=2, **root):
    root.setdefault("workers_consolidate", True)  # the default; said, as the thresholds
    keys = tmp_path / "api.keys"
    key = make_key(keys)
    b = broker(workers=workers, root=root, api={"keys_file": str(keys), "open_metrics": True},
               mqtt=dict({"max_queued": 100000, "max_inflight": 1000}, **(mqtt or {})))
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


@pytest.mark.parametrize("workers", [2, 3])
def test_light_load_on_worker_0(broker, tmp_path, workers):
    """Idle and light: every session ends on worker 0, subscribers
    included, and their messages still arrive in order (with 3 workers a
    fence asks two: their inboxes may never have been posted to)."""
    b, api = env(broker, tmp_path, workers=workers)
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
    n = 12
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
        # 12 subscribers hashed to worker 0 is 1 in 4,096: some go back to 1
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


def test_subscribers_move_with_messages_in_flight(broker, tmp_path):
    """MQTT 3.1.1 QoS 1 subscribers that have not acknowledged what they
    got move all the same when the workers spread (a busy QoS 1 subscriber
    always has something in flight): the new worker resends it (the retry
    timer came along), takes its PUBACK and sends what follows."""
    b, api = env(broker, tmp_path, mqtt={"retry_interval": 1},
                 workers_consolidate_below=0, workers_consolidate_above=50)
    n = 16  # all 16 hashed to worker 0 is 1 in 65,536: some go back to 1
    subs, pub, flooder = [], None, None
    stop_flood = threading.Event()
    try:
        for i in range(n):
            s = RawClient(b.host, b.port, timeout=DEADLINE)
            assert s.connect("i-sub%d" % i).rc == 0
            assert s.subscribe(1, [("in/%d" % i, 1)]).codes == [1]
            subs.append(s)
        ids = ["i-sub%d" % i for i in range(n)]
        wait_for(lambda: all(api.workers("i-").get(i) == 0 for i in ids), DEADLINE,
                 what="every subscriber on worker 0")
        pub = RawClient(b.host, b.port, timeout=DEADLINE)
        assert pub.connect("i-pub").rc == 0
        first = []
        for i, s in enumerate(subs):
            pub.publish("in/%d" % i, b"one", qos=1, pid=i + 1)
            p = s.recv_publish(DEADLINE)
            assert (p.topic, p.payload, p.qos) == ("in/%d" % i, b"one", 1), p
            first.append(p.pid)  # not acknowledged: in flight

        # load over half a core (QoS 0 to a topic nobody reads) spreads the
        # workers; the subscribers consolidation moved go home, in flight
        flooder = RawClient(b.host, b.port, timeout=DEADLINE)
        assert flooder.connect("i-flood").rc == 0
        blob = publish("nobody/reads", b"x" * 64) * 2000

        def flood():
            deadline = time.monotonic() + 3 * DEADLINE
            while not stop_flood.is_set() and time.monotonic() < deadline:
                if not flooder.try_send(blob):
                    return
        th = threading.Thread(target=flood)
        th.start()
        wait_for(lambda: 1 in set(api.workers("i-sub").values()), DEADLINE,
                 what="a subscriber back on worker 1")
        stop_flood.set()
        th.join(DEADLINE)
        wait_for(lambda: api.metric("antenna_worker_consolidated") == 0, DEADLINE,
                 what="spread")
        moved = [int(cid[len("i-sub"):]) for cid, w in api.workers("i-sub").items() if w == 1]
        for i in moved:
            # what the old worker sent is in the socket already: read it all
            s = subs[i]
            s.backlog.clear()
            while True:
                try:
                    s.recv(0.3)
                except Timeout:
                    break
            p = s.wait_for(lambda p, i=i: p.type == PUBLISH and p.dup and p.pid == first[i],
                           DEADLINE, "i-sub%d: its message resent by the new worker" % i)
            assert p.payload == b"one"
        for i, s in enumerate(subs):
            s.send(puback(first[i]))
            pub.publish("in/%d" % i, b"two", qos=1, pid=i + 1)
            p = s.wait_for(lambda p: p.type == PUBLISH and p.payload == b"two", DEADLINE,
                           "in/%d: the message after the acknowledgement" % i)
            assert p.qos == 1 and p.pid != first[i], p
            s.ack(p)
        assert moved
    finally:
        stop_flood.set()
        for c in subs + [pub, flooder]:
            if c is not None:
                c.close()
