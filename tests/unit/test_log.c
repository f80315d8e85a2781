/* test_log.c -- src/core/log: the per-call-site rate limit (one line per
 * interval, the count of dropped lines handed to the next one, shared by
 * threads) and the escaping of control bytes in text lines (one line per
 * message whatever a client put in it).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_limit_one_per_interval(void **state)
{
    (void)state;
    log_limit_t l = {0};
    uint64_t sup = 99;
    assert_int_equal(log_limit_pass(&l, 50, &sup), 1);
    assert_int_equal(sup, 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(log_limit_pass(&l, 60000, &sup), 0);
    /* the next interval: one passes, carrying the 10 dropped */
    int passed = 0;
    for (int i = 0; i < 200 && !passed; i++) {
        sleep_ms(5);
        passed = log_limit_pass(&l, 50, &sup);
    }
    assert_int_equal(passed, 1);
    assert_true(sup >= 10);
    assert_int_equal(log_limit_pass(&l, 50, &sup), 0);
}

static log_limit_t shared;
static _Atomic uint64_t passed_total, suppressed_total;

static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100000; i++) {
        uint64_t sup = 0;
        if (log_limit_pass(&shared, 600000, &sup)) {
            passed_total++;
            suppressed_total += sup;
        }
    }
    return NULL;
}

static void test_limit_threads(void **state)
{
    (void)state;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, NULL), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    /* one line in a 10-minute interval; everything else counted */
    assert_int_equal(passed_total, 1);
    assert_int_equal(atomic_load(&shared.suppressed), 4 * 100000 - 1);
}

static void test_text_escaping(void **state)
{
    (void)state;
    char path[] = "/tmp/antenna-test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(log_open(path, AN_LOG_INFO), 0);
    log_set_output(0, 0);
    log_kv(AN_LOG_INFO, "a\nb", NULL, "client '%s' said \"%s\"", "a\nFAKE LINE", "\r\t\x1b\x7f");
    for (int i = 0; i < 5; i++)
        log_limited(1000, AN_LOG_WARN, "limited %d", i);
    log_close();
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    unlink(path);
    buf[n] = '\0';
    /* two lines: the escaped one and the first limited one */
    int lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += buf[i] == '\n';
    assert_int_equal(lines, 2);
    assert_non_null(strstr(buf, "client 'a\\x0aFAKE LINE' said \"\\x0d\\x09\\x1b\\x7f\"\n"));
    assert_non_null(strstr(buf, "limited 0\n"));
    assert_null(strstr(buf, "limited 1"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limit_one_per_interval),
        cmocka_unit_test(test_limit_threads),
        cmocka_unit_test(test_text_escaping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
