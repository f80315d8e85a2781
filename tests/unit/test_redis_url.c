/* test_redis_url.c -- redis_url_parse (src/core/redis_url.c): the three
 * forms of persistence.redis.url, defaults, credentials kept out of the
 * display text, and the errors conf.c reports with file:line:key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "redis_url.h"

static redis_url_t u;
static char err[256];

static int parse(const char *url)
{
    err[0] = '\0';
    return redis_url_parse(url, &u, err, sizeof(err));
}

static void test_plain(void **state)
{
    (void)state;
    assert_int_equal(parse("redis://127.0.0.1"), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_int_equal(u.nsent, 0);
    assert_int_equal(parse("redis://me:s3cret@[::1]:7000/3"), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 3);
    assert_string_equal(u.user, "me");
    assert_string_equal(u.pass, "s3cret");
    assert_null(strstr(u.display, "s3cret"));
    assert_int_equal(parse("unix:/run/redis.sock"), 0);
    assert_string_equal(u.unix_path, "/run/redis.sock");
}

static void test_sentinel(void **state)
{
    (void)state;
    assert_int_equal(parse("redis-sentinel://:pw@10.0.0.1:26379,s2:26380,[::1]:5/mymaster/2"), 0);
    assert_int_equal(u.nsent, 3);
    assert_string_equal(u.sent[0].host, "10.0.0.1");
    assert_int_equal(u.sent[0].port, 26379);
    assert_string_equal(u.sent[1].host, "s2");
    assert_int_equal(u.sent[1].port, 26380);
    assert_string_equal(u.sent[2].host, "::1");
    assert_int_equal(u.sent[2].port, 5);
    assert_string_equal(u.master, "mymaster");
    assert_int_equal(u.db, 2);
    assert_string_equal(u.pass, "pw");
    assert_null(strstr(u.display, "pw@"));
    assert_non_null(strstr(u.display, "mymaster"));
    assert_int_equal(parse("redis-sentinel://h:1/m"), 0);
    assert_int_equal(u.db, 0);
    assert_int_equal(u.nsent, 1);
}

static void test_errors(void **state)
{
    (void)state;
    assert_int_equal(parse("http://x"), -1);
    assert_non_null(strstr(err, "expected"));
    assert_int_equal(parse("redis://h:0"), -1);
    assert_int_equal(parse("redis://h/x"), -1);
    assert_int_equal(parse("redis-sentinel://h/m"), -1);
    assert_non_null(strstr(err, "host:port"));
    assert_int_equal(parse("redis-sentinel://h:1"), -1);
    assert_int_equal(parse("redis-sentinel://h:1/"), -1);
    assert_int_equal(parse("redis-sentinel://h:70000/m"), -1);
    assert_int_equal(parse("redis-sentinel://h:1,/m"), -1);
    assert_int_equal(parse("redis-sentinel://a:1,b:2,c:3,d:4,e:5,f:6,g:7,h:8,i:9/m"), -1);
    assert_non_null(strstr(err, "at most 8"));
    assert_int_equal(parse("redis-sentinel://h:1/m/x"), -1);
    assert_int_equal(parse("redis-sentinel://user:pw@h:1/m/x"), -1);
    assert_null(strstr(err, "pw")); /* the url is never in a message */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_sentinel),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
