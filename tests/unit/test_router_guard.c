/* test_router_guard.c -- the router's topic guards (router.h,
 * router_guard): which prefixes a module may take, which guard judges a
 * client's PUBLISH, that the first-byte test lets other topics through
 * without a call, and that every subscribe function sees every filter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "router.h"

typedef struct {
    int calls;
    int answer;
} judge_t;

static int judge(const router_who_t *who, const uint8_t *topic, size_t len, void *ud)
{
    (void)who;
    (void)topic;
    (void)len;
    judge_t *j = ud;
    j->calls++;
    return j->answer;
}

static int allowed(server_t *srv, const char *topic)
{
    router_who_t who = {"dev", 3, NULL};
    return router_guard_publish(srv, &who, (const uint8_t *)topic, strlen(topic));
}

static void test_prefixes_and_publish(void **state)
{
    (void)state;
    server_t *srv = calloc(1, sizeof(*srv));
    judge_t a = {0, 0}, b = {0, 1};
    router_guard_t ga = {.publish = judge, .ud = &a}, gb = {.publish = judge, .ud = &b};
    assert_int_equal(router_guard(srv, "$shadow/", &ga), 0);
    assert_int_equal(router_guard(srv, "$shadow/x/", &gb), -1); /* covered */
    assert_int_equal(router_guard(srv, "$sha", &gb), -1);       /* covers */
    assert_int_equal(router_guard(srv, "$SYS/", &gb), -1);
    assert_int_equal(router_guard(srv, "a/+/b", &gb), -1);
    assert_int_equal(router_guard(srv, "", &gb), -1);
    assert_int_equal(router_guard(srv, "$cmd", &gb), 0);
    assert_int_equal(router_guard(srv, "fleet/", &gb), 0); /* not '$': allowed too */
    assert_int_equal(srv->nguards, 3);
    assert_true(router_guard_first(srv, '$'));
    assert_true(router_guard_first(srv, 'f'));
    assert_false(router_guard_first(srv, 'g'));

    assert_int_equal(allowed(srv, "$shadow/d1/reported"), 0);
    assert_int_equal(a.calls, 1);
    assert_int_equal(allowed(srv, "$cmd/d1/reply"), 1);
    assert_int_equal(allowed(srv, "fleet/x"), 1);
    assert_int_equal(b.calls, 2);
    /* no guard's prefix: allowed without a call */
    assert_int_equal(allowed(srv, "$shadowx/d1"), 1);
    assert_int_equal(allowed(srv, "$share"), 1);
    assert_int_equal(allowed(srv, "$shadow"), 1);
    assert_int_equal(allowed(srv, "glass/x"), 1);
    assert_int_equal(a.calls + b.calls, 3);
    router_guard_free(srv);
    assert_int_equal(srv->nguards, 0);
    assert_false(router_guard_first(srv, '$'));
    assert_int_equal(allowed(srv, "$shadow/d1/reported"), 1);
    free(srv);
}

static void test_subscribe_asks_every_guard(void **state)
{
    (void)state;
    server_t *srv = calloc(1, sizeof(*srv));
    judge_t pub = {0, 1}, yes = {0, 1}, no = {0, 0};
    router_guard_t g1 = {.publish = judge, .ud = &pub};
    router_guard_t g2 = {.publish = judge, .subscribe = judge, .ud = &yes};
    assert_int_equal(router_guard(srv, "$shadow/", &g1), 0);
    assert_int_equal(router_guard(srv, "$cmd", &g2), 0);
    assert_int_equal(srv->nguards_sub, 1);
    const uint8_t f[] = "#";
    router_who_t who = {"dev", 3, NULL};
    assert_int_equal(router_guard_subscribe(srv, &who, f, 1), 1);
    assert_int_equal(yes.calls, 1);
    router_guard_t g3 = {.publish = judge, .subscribe = judge, .ud = &no};
    assert_int_equal(router_guard(srv, "other/", &g3), 0);
    assert_int_equal(router_guard_subscribe(srv, &who, f, 1), 0);
    assert_int_equal(no.calls, 1);
    assert_int_equal(pub.calls, 0); /* no subscribe function: not asked */
    router_guard_free(srv);
    free(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefixes_and_publish),
        cmocka_unit_test(test_subscribe_asks_every_guard),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
