/* test_sink_ack.c -- a sink's record and the publisher's PUBACK, through
 * the in-process harness (tests/harness): one worker on the memory store,
 * a rule feeding a webhook sink (its thread is not started: records stay
 * in the buffer), commits released by hand.
 *
 *   record_before_puback      no durable subscriber: the rule runs in the
 *                             publish's turn, its record is in that turn's
 *                             batch, and the PUBACK waits for its commit
 *   routed_after_commit       a durable subscriber: the message reaches the
 *                             rule only after its own commit, so the
 *                             record lands in a later batch; the PUBACK
 *                             must wait for that one too (persist.c)
 *
 * Deterministic: no sleep; every wait is a bounded number of turns.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "module.h"
#include "mqtt_codec.h"
#include "store.h"

#define QUIET_TURNS 3

static const char yaml[] = "sinks:\n"
                           "  sinks:\n"
                           "    - name: hook\n"
                           "      type: webhook\n"
                           "      url: http://127.0.0.1:9/\n"
                           "rules:\n"
                           "  rules:\n"
                           "    - id: r\n"
                           "      sql: SELECT payload AS p FROM \"s/#\"\n"
                           "      actions:\n"
                           "        - type: sink\n"
                           "          sink: hook\n";

static void tweak(conf_t *cf)
{
    module_conf_defaults(cf);
    char path[] = "/tmp/test_sink_ack_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, yaml, sizeof(yaml) - 1), (ssize_t)(sizeof(yaml) - 1));
    close(fd);
    char err[512];
    int rc = conf_load(cf, path, err, sizeof(err));
    unlink(path);
    if (rc < 0)
        fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    cf->workers = 1;
}

static int setup(void **state)
{
    static harness_t h;
    if (harness_init(&h, tweak) < 0)
        return -1;
    *state = &h;
    return 0;
}

static int teardown(void **state)
{
    harness_free(*state);
    return 0;
}

static hclient_t *client(harness_t *h, const char *id, int clean, uint32_t expiry)
{
    hclient_t *c = hc_open(h, MQTT_PROTO_V5);
    int present = -1;
    assert_int_equal(hc_connect(c, id, clean, expiry, &present), 0);
    return c;
}

static void expect_puback(hclient_t *c, uint16_t pid)
{
    hpkt_t p;
    uint16_t got;
    uint8_t rc;
    assert_true(hc_expect(c, &p));
    assert_int_equal(hpkt_ack(&p, MQTT_PUBACK, &got, &rc), 0);
    assert_int_equal(got, pid);
}

static void expect_quiet(hclient_t *c)
{
    hpkt_t p;
    assert_false(hc_quiet(c, QUIET_TURNS, &p));
    assert_false(c->eof);
}

static int count_rec(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k, (void)kl, (void)v, (void)vl;
    (*(int *)ud)++;
    return 0;
}

/* Records of sink "hook" committed to the store. */
static int stored(harness_t *h)
{
    int n = 0;
    assert_int_equal(store_scan(h->srv.store, "\0sink/hook/", 11, count_rec, &n), 0);
    return n;
}

static void record_before_puback(void **state)
{
    harness_t *h = *state;
    hclient_t *pub = client(h, "pub", 1, 0);
    assert_true(harness_settle(h));
    hc_publish(pub, "s/a", "one", 1, 7);
    assert_true(harness_wait_commits(h, 1));
    expect_quiet(pub);
    assert_int_equal(stored(h), 1);
    assert_int_equal(harness_commit_release(h, 1), 1);
    expect_puback(pub, 7);
    hc_close(pub);
}

static void routed_after_commit(void **state)
{
    harness_t *h = *state;
    h->hold_commits = 0;
    hclient_t *sub = client(h, "dur", 1, 300);
    assert_int_equal(hc_subscribe(sub, 1, "s/#", 1), 1);
    hclient_t *pub = client(h, "pub", 1, 0);
    assert_true(harness_settle(h));
    h->hold_commits = 1;

    hc_publish(pub, "s/a", "two", 1, 8);
    assert_true(harness_wait_commits(h, 1)); /* the message's batch: its queue entry */
    expect_quiet(pub);
    assert_int_equal(stored(h), 0); /* the rule has not seen it yet */
    assert_int_equal(harness_commit_release(h, 1), 1);
    /* routed now: the record is written to the next batch; no PUBACK yet */
    expect_quiet(pub);
    assert_true(harness_wait_commits(h, 1));
    assert_int_equal(stored(h), 1);
    expect_quiet(pub);
    assert_int_equal(harness_commit_release(h, 1), 1);
    expect_puback(pub, 8);
    hpkt_t p;
    assert_true(hc_expect(sub, &p)); /* the subscriber's copy */
    hc_close(sub);
    hc_close(pub);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(record_before_puback, setup, teardown),
        cmocka_unit_test_setup_teardown(routed_after_commit, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
