/* test_retain.c -- retained messages: set, replace, clear, match by filter. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "retain.h"
#include "sess.h"

typedef struct {
    char topics[64][64];
    char payloads[64][16];
    int n;
} seen_t;

static void record(void *ud, msg_t *m)
{
    seen_t *s = ud;
    if (s->n < 64) {
        memcpy(s->topics[s->n], msg_topic(m), m->topic_len);
        s->topics[s->n][m->topic_len] = '\0';
        memcpy(s->payloads[s->n], msg_payload(m), m->payload_len);
        s->payloads[s->n][m->payload_len] = '\0';
        s->n++;
    }
    msg_unref(&m);
}

static void put(retain_t *r, const char *topic, const char *payload)
{
    msg_t *m = msg_new((const uint8_t *)topic, (uint16_t)strlen(topic), (const uint8_t *)payload,
                       (uint32_t)strlen(payload), 1, 1);
    retain_set(r, m);
    msg_unref(&m);
}

static int has(const seen_t *s, const char *topic)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->topics[i], topic) == 0)
            return 1;
    return 0;
}

static seen_t match(retain_t *r, const char *filter)
{
    seen_t s;
    memset(&s, 0, sizeof(s));
    retain_match(r, (const uint8_t *)filter, strlen(filter), record, &s);
    return s;
}

static void retain_set_replace_and_clear(void **state)
{
    (void)state;
    retain_t *r = retain_new();
    put(r, "a/b", "1");
    put(r, "a/b", "2");
    assert_int_equal(retain_count(r), 1);
    seen_t s = match(r, "a/b");
    assert_int_equal(s.n, 1);
    assert_string_equal(s.payloads[0], "2");
    put(r, "a/b", ""); /* empty payload clears */
    assert_int_equal(retain_count(r), 0);
    s = match(r, "a/b");
    assert_int_equal(s.n, 0);
    put(r, "x/y/z", ""); /* clearing what is not there is harmless */
    assert_int_equal(retain_count(r), 0);
    retain_free(r);
}

static void retain_match_wildcards(void **state)
{
    (void)state;
    retain_t *r = retain_new();
    const char *topics[] = {"sport", "sport/tennis", "sport/tennis/p1", "sport/golf",
                            "/lead", "a//b",         "$SYS/x",          "news"};
    for (size_t i = 0; i < sizeof(topics) / sizeof(*topics); i++)
        put(r, topics[i], "v");
    seen_t s = match(r, "#");
    assert_int_equal(s.n, 7); /* all but $SYS/x */
    assert_false(has(&s, "$SYS/x"));
    s = match(r, "sport/#");
    assert_int_equal(s.n, 4); /* "sport/#" matches "sport" too */
    assert_true(has(&s, "sport"));
    s = match(r, "sport/+");
    assert_int_equal(s.n, 2);
    assert_true(has(&s, "sport/tennis") && has(&s, "sport/golf"));
    s = match(r, "+");
    assert_int_equal(s.n, 2); /* sport, news */
    s = match(r, "+/+");
    assert_true(has(&s, "/lead") && has(&s, "sport/tennis") && !has(&s, "$SYS/x"));
    s = match(r, "a/+/b");
    assert_int_equal(s.n, 1);
    assert_true(has(&s, "a//b"));
    s = match(r, "$SYS/#");
    assert_int_equal(s.n, 1);
    s = match(r, "+/tennis/#");
    assert_int_equal(s.n, 2);
    s = match(r, "nothing/here");
    assert_int_equal(s.n, 0);
    retain_free(r);
}

static void retain_prunes_cleared_branches(void **state)
{
    (void)state;
    retain_t *r = retain_new();
    char topic[64];
    for (int i = 0; i < 1000; i++) {
        snprintf(topic, sizeof(topic), "dev/%d/state", i);
        put(r, topic, "on");
    }
    assert_int_equal(retain_count(r), 1000);
    seen_t s = match(r, "dev/+/state");
    assert_int_equal(s.n, 64); /* the recorder keeps 64; the count matters below */
    for (int i = 0; i < 1000; i++) {
        snprintf(topic, sizeof(topic), "dev/%d/state", i);
        put(r, topic, "");
    }
    assert_int_equal(retain_count(r), 0);
    s = match(r, "#");
    assert_int_equal(s.n, 0);
    retain_free(r); /* ASan build checks nothing leaked */
}

/* retain_count_dollar follows the '$' topics through set, replace, clear
 * and expiry; the other topics are not in it. */
static void retain_counts_dollar_topics(void **state)
{
    (void)state;
    retain_t *r = retain_new();
    put(r, "$SYS/broker/uptime", "1");
    put(r, "$SYS/broker/uptime", "2"); /* replaced: still one */
    put(r, "$SYS/broker/version", "x");
    put(r, "a/$b", "1"); /* '$' not at the start */
    assert_int_equal(retain_count(r), 3);
    assert_int_equal(retain_count_dollar(r), 2);
    put(r, "$SYS/broker/version", "");
    assert_int_equal(retain_count_dollar(r), 1);
    put(r, "$SYS/none", ""); /* clearing nothing changes nothing */
    assert_int_equal(retain_count_dollar(r), 1);
    msg_t *m =
        msg_new_v5((const uint8_t *)"$x/exp", 6, NULL, 0, (const uint8_t *)"e", 1, 0, 1, 1000);
    retain_set(r, m);
    msg_unref(&m);
    assert_int_equal(retain_count_dollar(r), 2);
    seen_t s;
    memset(&s, 0, sizeof(s));
    assert_int_equal(retain_expire(r, 2000, record, &s), 1);
    assert_int_equal(retain_count_dollar(r), 1);
    assert_int_equal(retain_count(r), 2);
    retain_free(r);
}

/* The per-connection memory goal's tripwire: an idle client costs one
 * conn_t and one sess_t (plus its client id) of the broker's own memory. */
static void idle_client_structs_stay_small(void **state)
{
    (void)state;
    assert_true(sizeof(conn_t) <= 184);              /* in a slab: no header, no rounding */
    assert_true(offsetof(sess_t, client_id) <= 100); /* the timer lives in sess_ext_t */
    assert_true(sizeof(conn_t) + offsetof(sess_t, client_id) <= 284);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(retain_set_replace_and_clear),
        cmocka_unit_test(retain_match_wildcards),
        cmocka_unit_test(retain_prunes_cleared_branches),
        cmocka_unit_test(retain_counts_dollar_topics),
        cmocka_unit_test(idle_client_structs_stay_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
