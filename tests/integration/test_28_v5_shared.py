"""Shared subscriptions ($share/{group}/{filter}) for 5.0 and 3.1.1 clients:
one member of each group gets each message, groups are independent, normal
subscribers are unaffected, and antenna's distribution strategies."""

import collections

import pytest

from mqttraw import RECEIVE_MAXIMUM, connect_v5, sub_opts
from helpers import receive_publishes

N = 30


def v5(b, cid="", **kw):
    return connect_v5(b.host, b.port, cid, **kw)


def member(b, cid, proto, flt="$share/g/sh/#", qos=1):
    if proto == "v5":
        c = v5(b, cid)
        assert c.subscribe(1, [(flt, sub_opts(qos))]).codes == [qos]
    else:
        c = b.raw_connected(cid)
        assert c.subscribe(1, [(flt, qos)]).codes == [qos]
    return c


def publish_all(b, payloads, topic="sh/a", cid="sh-pub"):
    pub = v5(b, cid)
    for i, pl in enumerate(payloads):
        pub.publish(topic, pl, qos=1, pid=i + 1)
    return pub


def collect(clients, quiet=0.6):
    """{index: [payload, ...]} of what each client got (acknowledged).  The
    first client is read until it has been quiet for `quiet` s; by then the
    broker has long forwarded everything, so the others need less."""
    return {i: [p.payload for p in receive_publishes(c, 0, quiet=quiet if i == 0 else 0.2)]
            for i, c in enumerate(clients)}


def assert_each_once(per_member, payloads):
    allgot = [pl for got in per_member.values() for pl in got]
    assert sorted(allgot) == sorted(payloads), per_member
    assert len(allgot) == len(set(allgot)), "duplicates: %r" % per_member


@pytest.mark.parametrize("protos", [("v5", "v5", "v5"), ("v311", "v311", "v311"),
                                    ("v5", "v311", "v5")], ids=["v5", "v311", "mixed"])
def test_each_message_to_exactly_one_member(broker, protos):
    b = broker()
    members = [member(b, "sh-m%d" % i, proto) for i, proto in enumerate(protos)]
    normal = v5(b, "sh-normal")
    assert normal.subscribe(1, [("sh/#", sub_opts(1))]).codes == [1]
    payloads = [b"%02d" % i for i in range(N)]
    publish_all(b, payloads)
    got = collect(members)
    assert_each_once(got, payloads)
    assert all(len(g) > 0 for g in got.values()), {i: len(g) for i, g in got.items()}
    # the normal subscriber gets everything, in order
    assert [p.payload for p in receive_publishes(normal, N, quiet=0.3)] == payloads


def test_two_groups_each_get_every_message_once(broker):
    b = broker()
    g1 = [member(b, "sh-g1-%d" % i, "v5", "$share/one/sh/#") for i in range(2)]
    g2 = [member(b, "sh-g2-%d" % i, "v311", "$share/two/sh/+") for i in range(2)]
    payloads = [b"%02d" % i for i in range(20)]
    publish_all(b, payloads)
    assert_each_once(collect(g1), payloads)
    assert_each_once(collect(g2), payloads)


def test_shared_and_normal_subscription_of_one_client(broker):
    # a client may be a group member and a normal subscriber at once: it
    # gets every message through its own subscription, and the group's
    # share as well
    b = broker()
    both = v5(b, "sh-both")
    assert both.subscribe(1, [("$share/g/sh/#", sub_opts(1)), ("sh/#", sub_opts(1))]).codes == [1, 1]
    other = member(b, "sh-other", "v5")
    payloads = [b"%02d" % i for i in range(10)]
    publish_all(b, payloads)
    got_both = [p.payload for p in receive_publishes(both, 0, quiet=0.7)]
    got_other = [p.payload for p in receive_publishes(other, 0, quiet=0.3)]
    counts = collections.Counter(got_both + got_other)
    # every message: once for the normal subscription, once for the group
    assert all(counts[pl] == 2 for pl in payloads), counts
    assert set(counts) == set(payloads)
    assert all(pl in got_both for pl in payloads)


def test_member_that_unsubscribes_leaves_the_group(broker):
    b = broker()
    stay = member(b, "sh-stay", "v5")
    leave = member(b, "sh-leave", "v5")
    assert leave.unsubscribe(2, ["$share/g/sh/#"]).codes == [0]
    payloads = [b"%02d" % i for i in range(10)]
    publish_all(b, payloads)
    assert [p.payload for p in receive_publishes(stay, 10, quiet=0.5)] == payloads
    assert receive_publishes(leave, 0, quiet=0.3) == []


def test_member_that_disconnects_leaves_the_group(broker):
    b = broker()
    stay = member(b, "sh-stay2", "v5")
    gone = member(b, "sh-gone", "v311")
    gone.disconnect()
    payloads = [b"%02d" % i for i in range(10)]
    publish_all(b, payloads)
    assert [p.payload for p in receive_publishes(stay, 10, quiet=0.5)] == payloads


def test_group_name_is_part_of_the_subscription(broker):
    # $share/a/x and $share/b/x are different groups; unsubscribing one
    # leaves the other
    b = broker()
    c = v5(b, "sh-names")
    assert c.subscribe(1, [("$share/a/sh/#", sub_opts(1)), ("$share/b/sh/#", sub_opts(1))]).codes == [1, 1]
    publish_all(b, [b"x"])
    assert [p.payload for p in receive_publishes(c, 2, quiet=0.5)] == [b"x", b"x"]
    assert c.unsubscribe(2, ["$share/a/sh/#"]).codes == [0]
    publish_all(b, [b"y"], cid="sh-pub2")
    assert [p.payload for p in receive_publishes(c, 1, quiet=0.5)] == [b"y"]


# antenna_only: mosquitto 2.0.11 sends retained messages to a new shared
# subscription; MQTT 5.0 says they are not sent to a Shared Subscription
# when it is made (section 4.8.2).
@pytest.mark.antenna_only
def test_retained_messages_not_sent_to_shared_subscription(broker):
    b = broker()
    pub = v5(b, "sh-ret-pub")
    pub.publish("sh/ret", b"stored", qos=1, retain=True, pid=1)
    m = member(b, "sh-ret-m", "v5")
    m3 = member(b, "sh-ret-m3", "v311", "$share/h/sh/#")
    assert receive_publishes(m, 0, quiet=0.5) == []
    assert receive_publishes(m3, 0, quiet=0.1) == []
    normal = v5(b, "sh-ret-normal")
    assert normal.subscribe(1, [("sh/#", sub_opts(1))]).codes == [1]
    assert [p.payload for p in receive_publishes(normal, 1, quiet=0.3)] == [b"stored"]
    pub.publish("sh/ret", b"", qos=1, retain=True, pid=2)


# antenna_only: mosquitto 2.0.11 drops the unacknowledged messages of a
# member whose session ends; MQTT 5.0 section 4.8.2 says they SHOULD go to
# another member.
@pytest.mark.antenna_only
def test_unacknowledged_messages_of_a_leaving_member_go_to_another(broker):
    b = broker()
    lazy = v5(b, "sh-lazy", props=[(RECEIVE_MAXIMUM, 5)])   # session ends with the connection
    assert lazy.subscribe(1, [("$share/g/sh/#", sub_opts(1))]).codes == [1]
    good = member(b, "sh-good", "v5")
    payloads = [b"%02d" % i for i in range(12)]
    publish_all(b, payloads)
    held = [p.payload for p in receive_publishes(lazy, 0, ack=False, quiet=0.7)]
    assert 1 <= len(held) <= 5, held
    lazy.close()
    got = [p.payload for p in receive_publishes(good, 0, quiet=1.5)]
    assert sorted(set(got)) == payloads, "missing %r" % sorted(set(payloads) - set(got))
    assert set(held) <= set(got)


# ------------------------------------------------------------ strategies (antenna)

def strategy_broker(broker, strategy):
    return broker(mqtt={"shared_strategy": strategy})


# antenna_only: shared_strategy is antenna's setting (mosquitto always
# distributes round-robin).
@pytest.mark.antenna_only
@pytest.mark.parametrize("strategy", ["round_robin", "random"])
def test_strategy_delivers_each_message_once(broker, strategy):
    b = strategy_broker(broker, strategy)
    members = [member(b, "st-%d" % i, "v5") for i in range(3)]
    payloads = [b"%02d" % i for i in range(N)]
    publish_all(b, payloads)
    got = collect(members)
    assert_each_once(got, payloads)
    if strategy == "round_robin":
        assert all(len(g) > 0 for g in got.values()), {i: len(g) for i, g in got.items()}


@pytest.mark.antenna_only   # see above
def test_strategy_hash_clientid_keeps_a_publisher_on_one_member(broker):
    b = strategy_broker(broker, "hash_clientid")
    members = [member(b, "hc-%d" % i, "v5") for i in range(3)]
    pubs = [v5(b, "hc-pub-%d" % k) for k in range(5)]
    payloads = []
    for i in range(8):
        for k, pub in enumerate(pubs):
            pl = b"p%d-%d" % (k, i)
            pub.publish("sh/a" if i % 2 else "sh/b", pl, qos=1, pid=i + 1)
            payloads.append(pl)
    got = collect(members)
    assert_each_once(got, payloads)
    for k in range(5):
        holders = {i for i, g in got.items() if any(pl.startswith(b"p%d-" % k) for pl in g)}
        assert len(holders) == 1, "publisher %d spread over members %r" % (k, holders)


@pytest.mark.antenna_only   # see above
def test_strategy_hash_topic_keeps_a_topic_on_one_member(broker):
    b = strategy_broker(broker, "hash_topic")
    members = [member(b, "ht-%d" % i, "v5") for i in range(3)]
    pub = v5(b, "ht-pub")
    payloads = []
    for i in range(6):
        for t in range(5):
            pl = b"t%d-%d" % (t, i)
            pub.publish("sh/topic%d" % t, pl, qos=1, pid=len(payloads) + 1)
            payloads.append(pl)
    got = collect(members)
    assert_each_once(got, payloads)
    for t in range(5):
        holders = {i for i, g in got.items() if any(pl.startswith(b"t%d-" % t) for pl in g)}
        assert len(holders) == 1, "topic %d spread over members %r" % (t, holders)


@pytest.mark.antenna_only   # see above
def test_strategy_sticky_until_the_member_leaves(broker):
    b = strategy_broker(broker, "sticky")
    members = [member(b, "sk-%d" % i, "v5") for i in range(3)]
    first = [b"a%02d" % i for i in range(12)]
    publish_all(b, first)
    got = collect(members)
    assert_each_once(got, first)
    holders = [i for i, g in got.items() if g]
    assert len(holders) == 1, got
    chosen = holders[0]
    members[chosen].disconnect()
    rest = [m for i, m in enumerate(members) if i != chosen]
    second = [b"b%02d" % i for i in range(12)]
    publish_all(b, second, cid="sk-pub2")
    got2 = collect(rest)
    assert_each_once(got2, second)
    assert len([i for i, g in got2.items() if g]) == 1, got2
