/* test_router_dollar.c -- the router's '$' guards (router.h,
 * router_dollar_guard): which prefixes a module may take, and which guard
 * judges a client's PUBLISH to a '$' topic. */
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

static int judge(const sess_t *from, const uint8_t *topic, size_t len, void *user)
{
    (void)from;
    (void)topic;
    (void)len;
    judge_t *j = user;
    j->calls++;
    return j->answer;
}

static int allowed(server_t *srv, const char *topic)
{
    return router_dollar_allowed(srv, NULL, (const uint8_t *)topic, strlen(topic));
}

static void test_prefixes(void **state)
{
    (void)state;
    server_t *srv = calloc(1, sizeof(*srv));
    judge_t a = {0, 0}, b = {0, 1};
    assert_int_equal(router_dollar_guard(srv, "$shadow/", judge, &a), 0);
    assert_int_equal(router_dollar_guard(srv, "$shadow/x/", judge, &b), -1); /* covered */
    assert_int_equal(router_dollar_guard(srv, "$sha", judge, &b), -1);       /* covers */
    assert_int_equal(router_dollar_guard(srv, "$SYS/", judge, &b), -1);
    assert_int_equal(router_dollar_guard(srv, "shadow/", judge, &b), -1);
    assert_int_equal(router_dollar_guard(srv, "$", judge, &b), -1);
    assert_int_equal(router_dollar_guard(srv, "$cmd/", judge, &b), 0);
    assert_int_equal(srv->ndollar_guards, 2);

    assert_int_equal(allowed(srv, "$shadow/d1/reported"), 0);
    assert_int_equal(a.calls, 1);
    assert_int_equal(allowed(srv, "$cmd/d1/reply"), 1);
    assert_int_equal(b.calls, 1);
    /* no guard's prefix: allowed without a call */
    assert_int_equal(allowed(srv, "$shadowx/d1"), 1);
    assert_int_equal(allowed(srv, "$share"), 1);
    assert_int_equal(allowed(srv, "$shadow"), 1);
    assert_int_equal(a.calls + b.calls, 2);
    router_dollar_free(srv);
    assert_int_equal(srv->ndollar_guards, 0);
    assert_int_equal(allowed(srv, "$shadow/d1/reported"), 1);
    free(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefixes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
