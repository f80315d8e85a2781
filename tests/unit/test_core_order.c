/* test_core_order.c -- the store/route/ack ordering of the broker core
 * (persist.h), driven through the in-process harness (tests/harness):
 * one worker on the memory store, real MQTT packets in and out, the loop
 * turned by hand and every store commit released when the test says.
 *
 *   held_puback          a QoS 1 PUBACK and the durable subscriber's copy
 *                        wait for the commit of the message's batch; then
 *                        both leave, messages in publish order
 *   held_routes          a message stored for a durable session reaches no
 *                        subscriber (durable or not) before its commit, and
 *                        later QoS 1 messages of the worker wait behind it
 *   failed_commit_v5     a failed commit: PUBACK 0x97, nothing delivered,
 *                        the connection stays and the next message goes
 *   failed_commit_v311   the same for MQTT 3.1.1: no PUBACK, the
 *                        connection is closed (the client resends)
 *   takeover_v5          a second CONNECT with the same client id takes
 *                        the session: DISCONNECT 0x8E to the old
 *                        connection, the in-flight message resent (DUP)
 *                        to the new one
 *   qos2_held            QoS 2: the PUBREC waits for the commit, and the
 *                        PUBLISH and PUBREL to a durable subscriber each
 *                        wait for the commit of their packet id's state
 *   acks_in_order        acknowledgements leave in publish order when
 *                        their batches commit together, and one that
 *                        wrote nothing waits behind a held one
 *
 * Deterministic: no sleep; every wait is a bounded number of turns.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "harness.h"
#include "mqtt_codec.h"
#include "mqtt_props.h"
#include "store.h"

#define QUIET_TURNS 3

static int setup(void **state)
{
    static harness_t h;
    if (harness_init(&h, NULL) < 0)
        return -1;
    *state = &h;
    return 0;
}

static int teardown(void **state)
{
    harness_free(*state);
    return 0;
}

static hclient_t *client(harness_t *h, uint8_t proto, const char *id, int clean, uint32_t expiry)
{
    hclient_t *c = hc_open(h, proto);
    int present = -1;
    assert_int_equal(hc_connect(c, id, clean, expiry, &present), 0);
    return c;
}

/* The next packet must be a PUBLISH of topic/payload at qos; its pid. */
static uint16_t expect_publish(hclient_t *c, const char *topic, const char *payload, uint8_t qos,
                               uint8_t dup)
{
    hpkt_t p;
    hpub_t pub;
    assert_true(hc_expect(c, &p));
    assert_int_equal(hpkt_publish(c, &p, &pub), 0);
    assert_int_equal(pub.topic_len, strlen(topic));
    assert_memory_equal(pub.topic, topic, pub.topic_len);
    assert_int_equal(pub.payload_len, strlen(payload));
    assert_memory_equal(pub.payload, payload, pub.payload_len);
    assert_int_equal(pub.qos, qos);
    assert_int_equal(pub.dup, dup);
    return pub.pid;
}

static void expect_ack(hclient_t *c, uint8_t type, uint16_t pid, uint8_t reason)
{
    hpkt_t p;
    uint16_t got;
    uint8_t rc;
    assert_true(hc_expect(c, &p));
    assert_int_equal(hpkt_ack(&p, type, &got, &rc), 0);
    assert_int_equal(got, pid);
    assert_int_equal(rc, reason);
}

static void expect_quiet(hclient_t *c)
{
    hpkt_t p;
    assert_false(hc_quiet(c, QUIET_TURNS, &p));
    assert_false(c->eof);
}

/* (a) */
static void held_puback(void **state)
{
    harness_t *h = *state;
    hclient_t *sub = client(h, MQTT_PROTO_V5, "a-sub", 1, 300);
    assert_int_equal(hc_subscribe(sub, 1, "a/t", 1), 1);
    hclient_t *pub = client(h, MQTT_PROTO_V5, "a-pub", 1, 0);
    assert_true(harness_settle(h));

    hc_publish(pub, "a/t", "m1", 1, 11);
    assert_true(harness_wait_commits(h, 1)); /* handled; its batch is back */
    hc_publish(pub, "a/t", "m2", 1, 12);
    assert_true(harness_wait_commits(h, 2));
    expect_quiet(pub);
    expect_quiet(sub);

    assert_int_equal(harness_commit_release(h, 2), 2);
    expect_ack(pub, MQTT_PUBACK, 11, 0);
    expect_ack(pub, MQTT_PUBACK, 12, 0);
    uint16_t p1 = expect_publish(sub, "a/t", "m1", 1, 0);
    uint16_t p2 = expect_publish(sub, "a/t", "m2", 1, 0);
    hc_ack(sub, MQTT_PUBACK, p1);
    hc_ack(sub, MQTT_PUBACK, p2);
    assert_true(harness_settle(h));
    expect_quiet(pub);
    expect_quiet(sub);
    hc_close(sub);
    hc_close(pub);
}

/* (b) */
static void held_routes(void **state)
{
    harness_t *h = *state;
    hclient_t *durable = client(h, MQTT_PROTO_V5, "b-durable", 1, 300);
    assert_int_equal(hc_subscribe(durable, 1, "b/stored", 1), 1);
    hclient_t *plain = client(h, MQTT_PROTO_V311, "b-plain", 1, 0);
    assert_int_equal(hc_subscribe(plain, 1, "b/#", 1), 1);
    hclient_t *pub = client(h, MQTT_PROTO_V311, "b-pub", 1, 0);
    assert_true(harness_settle(h));

    /* stored for the durable session: routed to nobody before the commit */
    hc_publish(pub, "b/stored", "one", 1, 1);
    assert_true(harness_wait_commits(h, 1));
    /* stored for nobody, but behind a held message: waits for its own batch */
    hc_publish(pub, "b/plain", "two", 1, 2);
    assert_true(harness_wait_commits(h, 2));
    expect_quiet(durable);
    expect_quiet(plain);

    assert_int_equal(harness_commit_release(h, 1), 1);
    uint16_t d1 = expect_publish(durable, "b/stored", "one", 1, 0);
    uint16_t n1 = expect_publish(plain, "b/stored", "one", 1, 0);
    expect_quiet(plain); /* "two" still waits for the second commit */

    assert_int_equal(harness_commit_release(h, 1), 1);
    uint16_t n2 = expect_publish(plain, "b/plain", "two", 1, 0);
    expect_quiet(durable);
    hc_ack(durable, MQTT_PUBACK, d1);
    hc_ack(plain, MQTT_PUBACK, n1);
    hc_ack(plain, MQTT_PUBACK, n2);
    expect_ack(pub, MQTT_PUBACK, 1, 0);
    expect_ack(pub, MQTT_PUBACK, 2, 0);
    assert_true(harness_settle(h));
    hc_close(durable);
    hc_close(plain);
    hc_close(pub);
}

/* (c), MQTT 5: persist.c refuses what it could not store with 0x97 */
static void failed_commit_v5(void **state)
{
    harness_t *h = *state;
    hclient_t *sub = client(h, MQTT_PROTO_V5, "c-sub", 1, 300);
    assert_int_equal(hc_subscribe(sub, 1, "c/t", 1), 1);
    hclient_t *pub = client(h, MQTT_PROTO_V5, "c-pub", 1, 0);
    assert_true(harness_settle(h));

    store_inject_write_failures(h->srv.store, 1, STORE_ENOSPC);
    hc_publish(pub, "c/t", "lost", 1, 5);
    assert_true(harness_wait_commits(h, 1));
    assert_int_equal(h->commits[0], STORE_ENOSPC); /* the store failed it */
    expect_quiet(pub);
    expect_quiet(sub);
    assert_int_equal(harness_commit_release(h, 1), 1);
    expect_ack(pub, MQTT_PUBACK, 5, MQTT_RC_QUOTA_EXCEEDED);
    expect_quiet(sub); /* dropped: never delivered */

    /* the connection stays and the store works again */
    hc_publish(pub, "c/t", "kept", 1, 6);
    assert_true(harness_wait_commits(h, 1));
    assert_int_equal(h->commits[0], 0);
    harness_commit_release(h, 1);
    expect_ack(pub, MQTT_PUBACK, 6, 0);
    hc_ack(sub, MQTT_PUBACK, expect_publish(sub, "c/t", "kept", 1, 0));
    assert_true(harness_settle(h));
    hc_close(sub);
    hc_close(pub);
}

/* (c), MQTT 3.1.1: no negative acknowledgement: the publisher is closed */
static void failed_commit_v311(void **state)
{
    harness_t *h = *state;
    hclient_t *sub = client(h, MQTT_PROTO_V311, "c3-sub", 0, 1); /* clean 0: durable */
    assert_int_equal(hc_subscribe(sub, 1, "c3/t", 1), 1);
    hclient_t *pub = client(h, MQTT_PROTO_V311, "c3-pub", 1, 0);
    hclient_t *other = client(h, MQTT_PROTO_V311, "c3-other", 1, 0);
    assert_true(harness_settle(h));

    hc_publish(pub, "c3/t", "lost", 1, 9);
    assert_true(harness_wait_commits(h, 1));
    expect_quiet(pub);
    assert_int_equal(harness_commit_release_err(h, 1, STORE_EIO), 1);
    assert_true(hc_wait_eof(pub));
    hpkt_t p;
    assert_false(hc_poll(pub, &p)); /* closed without a PUBACK */
    expect_quiet(sub);
    /* only the publisher whose message was lost is closed */
    hc_publish(other, "c3/none", "x", 1, 3);
    expect_ack(other, MQTT_PUBACK, 3, 0);
    assert_true(harness_settle(h));
    hc_close(sub);
    hc_close(pub);
    hc_close(other);
}

/* (d) */
static void takeover_v5(void **state)
{
    harness_t *h = *state;
    h->hold_commits = 0; /* commits pass as in the broker: not the point here */
    hclient_t *old = client(h, MQTT_PROTO_V5, "d-dev", 1, 300);
    assert_int_equal(hc_subscribe(old, 1, "d/t", 1), 1);
    hclient_t *pub = client(h, MQTT_PROTO_V5, "d-pub", 1, 0);
    hc_publish(pub, "d/t", "inflight", 1, 1);
    expect_ack(pub, MQTT_PUBACK, 1, 0);
    uint16_t pid = expect_publish(old, "d/t", "inflight", 1, 0); /* not acknowledged */
    assert_true(harness_settle(h));

    hclient_t *neu = hc_open(h, MQTT_PROTO_V5);
    int present = 0;
    assert_int_equal(hc_connect(neu, "d-dev", 0, 300, &present), 0);
    assert_int_equal(present, 1);
    hpkt_t p;
    uint8_t reason = 0;
    assert_true(hc_expect(old, &p));
    assert_int_equal(hpkt_disconnect(&p, &reason), 0);
    assert_int_equal(reason, MQTT_RC_SESSION_TAKEN_OVER);
    assert_true(hc_wait_eof(old));
    /* the in-flight message again, same packet id, DUP set */
    assert_int_equal(expect_publish(neu, "d/t", "inflight", 1, 1), pid);
    hc_ack(neu, MQTT_PUBACK, pid);
    assert_true(harness_settle(h));
    expect_quiet(neu);
    h->hold_commits = 1;
    hc_close(old);
    hc_close(neu);
    hc_close(pub);
}

/* QoS 2, both directions */
static void qos2_held(void **state)
{
    harness_t *h = *state;
    hclient_t *sub = client(h, MQTT_PROTO_V5, "q-sub", 1, 300);
    assert_int_equal(hc_subscribe(sub, 1, "q/t", 2), 2);
    hclient_t *pub = client(h, MQTT_PROTO_V5, "q-pub", 1, 0);
    assert_true(harness_settle(h));

    hc_publish(pub, "q/t", "twice", 2, 21);
    assert_true(harness_wait_commits(h, 1));
    expect_quiet(pub);
    expect_quiet(sub);
    harness_commit_release(h, 1);
    expect_ack(pub, MQTT_PUBREC, 21, 0);
    /* routed now; its packet id is recorded before the PUBLISH leaves */
    assert_true(harness_wait_commits(h, 1));
    expect_quiet(sub);
    harness_commit_release(h, 1);
    uint16_t pid = expect_publish(sub, "q/t", "twice", 2, 0);

    hc_ack(sub, MQTT_PUBREC, pid);
    assert_true(harness_wait_commits(h, 1));
    expect_quiet(sub); /* the PUBREL waits for the PUBREC's record */
    harness_commit_release(h, 1);
    expect_ack(sub, MQTT_PUBREL, pid, 0);
    hc_ack(sub, MQTT_PUBCOMP, pid);
    hc_ack(pub, MQTT_PUBREL, 21);
    expect_ack(pub, MQTT_PUBCOMP, 21, 0);
    assert_true(harness_settle(h));
    expect_quiet(sub);
    hc_close(sub);
    hc_close(pub);
}

/* (e) */
static void acks_in_order(void **state)
{
    harness_t *h = *state;
    hclient_t *sub = client(h, MQTT_PROTO_V5, "e-sub", 1, 300);
    assert_int_equal(hc_subscribe(sub, 1, "e/t", 1), 1);
    hclient_t *pub = client(h, MQTT_PROTO_V5, "e-pub", 1, 0);
    assert_true(harness_settle(h));

    /* nothing held, nothing stored: acknowledged at once */
    hc_publish(pub, "e/none", "x", 1, 1);
    expect_ack(pub, MQTT_PUBACK, 1, MQTT_RC_NO_MATCHING_SUBSCRIBERS);

    /* three batches: stored, stored, and one that stored nothing but must
     * wait behind the others; committed together */
    hc_publish(pub, "e/t", "a", 1, 2);
    assert_true(harness_wait_commits(h, 1));
    hc_publish(pub, "e/t", "b", 1, 3);
    assert_true(harness_wait_commits(h, 2));
    hc_publish(pub, "e/none", "c", 1, 4);
    assert_true(harness_wait_commits(h, 3));
    expect_quiet(pub);
    assert_int_equal(harness_commit_release(h, 3), 3);
    expect_ack(pub, MQTT_PUBACK, 2, 0);
    expect_ack(pub, MQTT_PUBACK, 3, 0);
    expect_ack(pub, MQTT_PUBACK, 4, MQTT_RC_NO_MATCHING_SUBSCRIBERS);
    hc_ack(sub, MQTT_PUBACK, expect_publish(sub, "e/t", "a", 1, 0));
    hc_ack(sub, MQTT_PUBACK, expect_publish(sub, "e/t", "b", 1, 0));
    assert_true(harness_settle(h)); /* the acks' deletes committed */

    /* one commit at a time: only its own acknowledgement leaves */
    hc_publish(pub, "e/t", "d", 1, 5);
    assert_true(harness_wait_commits(h, 1));
    hc_publish(pub, "e/none", "e", 1, 6);
    assert_true(harness_wait_commits(h, 2));
    harness_commit_release(h, 1);
    expect_ack(pub, MQTT_PUBACK, 5, 0);
    expect_quiet(pub);
    harness_commit_release(h, 1);
    expect_ack(pub, MQTT_PUBACK, 6, MQTT_RC_NO_MATCHING_SUBSCRIBERS);
    hc_ack(sub, MQTT_PUBACK, expect_publish(sub, "e/t", "d", 1, 0));
    assert_true(harness_settle(h));
    hc_close(sub);
    hc_close(pub);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(held_puback, setup, teardown),
        cmocka_unit_test_setup_teardown(held_routes, setup, teardown),
        cmocka_unit_test_setup_teardown(failed_commit_v5, setup, teardown),
        cmocka_unit_test_setup_teardown(failed_commit_v311, setup, teardown),
        cmocka_unit_test_setup_teardown(takeover_v5, setup, teardown),
        cmocka_unit_test_setup_teardown(qos2_held, setup, teardown),
        cmocka_unit_test_setup_teardown(acks_in_order, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
