/* test_event.c -- the registry of broker events (event.h): registration
 * sets the kind's has-listeners bit and only it, handlers run in
 * registration order with their user pointer and the emitter's data, the
 * per-kind limit, no registration once frozen, names and their parsing,
 * and the events.log configuration key (names, "all", errors naming
 * file:line:key).
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

#include "conf.h"
#include "event.h"

typedef struct {
    char trace[64];
    size_t n;
    const void *data;
    event_kind_t kind;
    struct worker_s *w;
} rec_t;

/* Each handler appends its letter (the user pointer's first byte). */
static rec_t rec;

static void h_letter(struct worker_s *w, event_kind_t kind, const void *data, void *user)
{
    rec.trace[rec.n++] = *(const char *)user;
    rec.data = data;
    rec.kind = kind;
    rec.w = w;
}

static void test_wanted_bits(void **state)
{
    (void)state;
    event_bus_t b;
    memset(&b, 0, sizeof(b));
    for (int k = 0; k < EVENT_COUNT; k++)
        assert_false(event_listened(&b, (event_kind_t)k));
    assert_int_equal(event_listen(&b, EVENT_MESSAGE_DROPPED, h_letter, "a"), 0);
    for (int k = 0; k < EVENT_COUNT; k++)
        assert_int_equal(event_listened(&b, (event_kind_t)k), k == EVENT_MESSAGE_DROPPED);
    assert_int_equal(event_listen(&b, EVENT_CLIENT_CONNECTED, h_letter, "b"), 0);
    assert_true(event_listened(&b, EVENT_CLIENT_CONNECTED));
    assert_false(event_listened(&b, EVENT_CLIENT_DISCONNECTED));
    assert_int_equal(b.wanted, (1u << EVENT_MESSAGE_DROPPED) | (1u << EVENT_CLIENT_CONNECTED));
}

/* message_dropped by reason: event_listen wants every reason,
 * event_listen_drops only the ones it names (the masks add up). */
static void test_drop_reasons(void **state)
{
    (void)state;
    event_bus_t b;
    memset(&b, 0, sizeof(b));
    uint32_t some = (1u << EVENT_DROP_QUEUE_FULL) | (1u << EVENT_DROP_QOS0_OFFLINE);
    assert_int_equal(event_listen_drops(&b, some, h_letter, "a"), 0);
    assert_true(event_listened(&b, EVENT_MESSAGE_DROPPED));
    assert_int_equal(b.drops, some);
    assert_false((b.drops >> EVENT_DROP_NO_SUBSCRIBERS) & 1u);
    assert_int_equal(event_listen_drops(&b, 1u << EVENT_DROP_EXPIRED, h_letter, "b"), 0);
    assert_int_equal(b.drops, some | (1u << EVENT_DROP_EXPIRED));
    assert_int_equal(event_listen(&b, EVENT_MESSAGE_DROPPED, h_letter, "c"), 0);
    assert_true((b.drops >> EVENT_DROP_NO_SUBSCRIBERS) & 1u);
    /* a refused registration leaves the mask alone */
    event_bus_t f;
    memset(&f, 0, sizeof(f));
    event_freeze(&f);
    assert_int_equal(event_listen_drops(&f, some, h_letter, "a"), -1);
    assert_int_equal(f.drops, 0);
}

static void test_order_user_data(void **state)
{
    (void)state;
    event_bus_t b;
    memset(&b, 0, sizeof(b));
    memset(&rec, 0, sizeof(rec));
    static char a = 'a', bb = 'b', c = 'c', x = 'x';
    assert_int_equal(event_listen(&b, EVENT_SUBSCRIBED, h_letter, &a), 0);
    assert_int_equal(event_listen(&b, EVENT_UNSUBSCRIBED, h_letter, &x), 0);
    assert_int_equal(event_listen(&b, EVENT_SUBSCRIBED, h_letter, &bb), 0);
    assert_int_equal(event_listen(&b, EVENT_SUBSCRIBED, h_letter, &c), 0);
    event_subscribed_t ev = {.filter = (const uint8_t *)"a/#", .filter_len = 3, .qos = 1};
    struct worker_s *w = (struct worker_s *)&ev; /* opaque: passed through */
    event_emit(w, &b, EVENT_SUBSCRIBED, &ev);
    assert_string_equal(rec.trace, "abc");
    assert_ptr_equal(rec.data, &ev);
    assert_ptr_equal(rec.w, w);
    assert_int_equal(rec.kind, EVENT_SUBSCRIBED);
    /* a kind nobody listens to: no handler runs */
    event_emit(w, &b, EVENT_SESSION_EXPIRED, &ev);
    assert_string_equal(rec.trace, "abc");
    event_emit(NULL, &b, EVENT_UNSUBSCRIBED, &ev);
    assert_string_equal(rec.trace, "abcx");
}

static void test_limits_and_freeze(void **state)
{
    (void)state;
    event_bus_t b;
    memset(&b, 0, sizeof(b));
    for (int i = 0; i < EVENT_MAX_HANDLERS; i++)
        assert_int_equal(event_listen(&b, EVENT_AUTH_FAILED, h_letter, "a"), 0);
    assert_int_equal(event_listen(&b, EVENT_AUTH_FAILED, h_letter, "a"), -1);
    assert_int_equal(event_listen(&b, EVENT_COUNT, h_letter, "a"), -1);
    assert_int_equal(event_listen(&b, (event_kind_t)-1, h_letter, "a"), -1);
    assert_int_equal(event_listen(&b, EVENT_SUBSCRIBED, NULL, "a"), -1);
    assert_false(event_listened(&b, EVENT_SUBSCRIBED));
    event_freeze(&b);
    assert_int_equal(event_listen(&b, EVENT_SUBSCRIBED, h_letter, "a"), -1);
    assert_false(event_listened(&b, EVENT_SUBSCRIBED));
    assert_true(event_listened(&b, EVENT_AUTH_FAILED));
}

static void test_names(void **state)
{
    (void)state;
    for (int k = 0; k < EVENT_COUNT; k++) {
        const char *n = event_name((event_kind_t)k);
        assert_non_null(n);
        assert_int_equal(event_parse(n), k);
        for (int j = 0; j < k; j++)
            assert_string_not_equal(n, event_name((event_kind_t)j));
    }
    assert_null(conf_event_names[EVENT_COUNT]); /* the tables agree in length */
    assert_null(event_name(EVENT_COUNT));
    assert_int_equal(event_parse("nope"), -1);
    assert_string_equal(event_name(EVENT_CLIENT_CONNECTED), "client_connected");
    assert_string_equal(event_name(EVENT_SESSION_TAKEN_OVER), "session_taken_over");
    for (int r = 0; r < EVENT_DROP_REASONS; r++)
        assert_string_not_equal(event_drop_reason_name((event_drop_reason_t)r), "?");
    assert_string_equal(event_drop_reason_name(EVENT_DROP_REASONS), "?");
}

static int load_yaml(conf_t *c, const char *yaml, char *err, size_t errlen)
{
    char path[] = "/tmp/antenna-test-event-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
    close(fd);
    conf_defaults(c);
    int rc = conf_load(c, path, err, errlen);
    unlink(path);
    return rc;
}

static void test_conf_events_log(void **state)
{
    (void)state;
    conf_t c;
    char err[512];
    conf_defaults(&c);
    assert_int_equal(c.events_log, 0); /* default: none */
    assert_int_equal(
        load_yaml(&c, "events:\n  log: [client_connected, message_dropped]\n", err, sizeof(err)),
        0);
    assert_int_equal(c.events_log, (1u << EVENT_CLIENT_CONNECTED) | (1u << EVENT_MESSAGE_DROPPED));
    assert_int_equal(load_yaml(&c, "events:\n  log: [all]\n", err, sizeof(err)), 0);
    assert_int_equal(c.events_log, (1u << EVENT_COUNT) - 1);
    assert_int_equal(load_yaml(&c, "events:\n  log: []\n", err, sizeof(err)), 0);
    assert_int_equal(c.events_log, 0);
    assert_int_equal(
        load_yaml(&c, "events:\n  log:\n    - subscribed\n    - connected\n", err, sizeof(err)),
        -1);
    assert_non_null(strstr(err, ":4: events.log: unknown name \"connected\""));
    assert_int_equal(load_yaml(&c, "events:\n  log: client_connected\n", err, sizeof(err)), -1);
    assert_non_null(strstr(err, ":2: events.log: expected a sequence"));
    assert_int_equal(load_yaml(&c, "events:\n  logs: [all]\n", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "events.logs: unknown key"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wanted_bits),       cmocka_unit_test(test_order_user_data),
        cmocka_unit_test(test_limits_and_freeze), cmocka_unit_test(test_names),
        cmocka_unit_test(test_conf_events_log),   cmocka_unit_test(test_drop_reasons),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
