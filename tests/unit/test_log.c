/* test_log.c -- src/core/log: the per-call-site rate limit (one line per
 * interval, the count of dropped lines handed to the next one, shared by
 * threads), the escaping of control bytes in text lines (one line per
 * message whatever a client put in it), and JSON lines: every field of
 * log_ev (the stable contract of docs/logging.md) escaped as JSON, NULL
 * fields left out, a long message cut before a field is.
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

/* Write lines with `fill` into a fresh file; returns its text (static). */
static const char *capture(int json, void (*fill)(void))
{
    static char buf[16384];
    char path[] = "/tmp/antenna-test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(log_open(path, AN_LOG_INFO), 0);
    log_set_output(json, 0);
    fill();
    log_close();
    log_set_output(0, 0);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    unlink(path);
    buf[n] = '\0';
    return buf;
}

static void fill_fields(void)
{
    log_fields_t f = {.event = "auth_failed",
                      .client_id = "id\n\"x\\\x1b",
                      .username = "bob",
                      .peer = "127.0.0.1:5",
                      .listener = "mqtt",
                      .reason = "bad_credentials",
                      .backend = "password_file"};
    log_ev(AN_LOG_INFO, &f, "client '%s' refused", f.client_id);
    log_fields_t g = {.event = "client_connected", .client_id = "c"};
    log_ev(AN_LOG_WARN, &g, "short");
    log_ev(AN_LOG_DEBUG, &g, "below the level: not written");
}

static void test_json_fields(void **state)
{
    (void)state;
    const char *out = capture(1, fill_fields);
    const char *nl = strchr(out, '\n');
    assert_non_null(nl);
    /* two lines, each one object */
    assert_non_null(strchr(nl + 1, '\n'));
    assert_null(strchr(strchr(nl + 1, '\n') + 1, '\n'));
    assert_int_equal(out[0], '{');
    assert_int_equal(nl[-1], '}');
    assert_non_null(strstr(out, "\"level\":\"info\",\"event\":\"auth_failed\","
                                "\"client_id\":\"id\\n\\\"x\\\\\\u001b\","
                                "\"username\":\"bob\",\"peer\":\"127.0.0.1:5\","
                                "\"listener\":\"mqtt\",\"reason\":\"bad_credentials\","
                                "\"backend\":\"password_file\",\"msg\":\"client 'id\\n"));
    /* NULL fields are left out */
    const char *second = nl + 1;
    assert_non_null(strstr(second, "\"level\":\"warn\",\"event\":\"client_connected\","
                                   "\"client_id\":\"c\",\"msg\":\"short\"}\n"));
    assert_null(strstr(second, "username"));
    assert_null(strstr(out, "below the level"));
}

static void fill_long(void)
{
    char big[1100];
    memset(big, '\x01', sizeof(big) - 1); /* 6 bytes each in JSON */
    big[sizeof(big) - 1] = '\0';
    log_fields_t f = {.event = "e", .client_id = big, .backend = "last"};
    log_ev(AN_LOG_INFO, &f, "%s", big);
}

static void test_json_long_values_stay_one_object(void **state)
{
    (void)state;
    const char *out = capture(1, fill_long);
    size_t n = strlen(out);
    assert_true(n > 2);
    assert_int_equal(out[n - 1], '\n');
    assert_int_equal(out[n - 2], '}');
    assert_non_null(strstr(out, "\"backend\":\"last\""));
    assert_null(strchr(out, '\x01'));
    assert_int_equal(strchr(out, '\n') - out, (long)n - 1); /* one line */
}

static void fill_text(void)
{
    log_fields_t f = {.event = "client_connected", .client_id = "x", .reason = "r"};
    log_ev(AN_LOG_INFO, &f, "client 'a\x1b[2Jb' connected");
}

static void test_text_lines_keep_their_look(void **state)
{
    (void)state;
    const char *out = capture(0, fill_text);
    /* the message only, escaped; no field in a text line */
    assert_non_null(strstr(out, "Z info  client 'a\\x1b[2Jb' connected\n"));
    assert_null(strstr(out, "client_connected"));
}

static void test_slug(void **state)
{
    (void)state;
    char b[48];
    assert_string_equal(log_slug("Keep Alive timeout", b, sizeof(b)), "keep_alive_timeout");
    assert_string_equal(log_slug("Bad User Name or Password", b, sizeof(b)),
                        "bad_user_name_or_password");
    assert_string_equal(log_slug("Session taken over", b, sizeof(b)), "session_taken_over");
    assert_string_equal(log_slug("  --x--  ", b, sizeof(b)), "x");
    assert_string_equal(log_slug("abcdef", b, 4), "ab");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limit_one_per_interval),
        cmocka_unit_test(test_limit_threads),
        cmocka_unit_test(test_text_escaping),
        cmocka_unit_test(test_json_fields),
        cmocka_unit_test(test_json_long_values_stay_one_object),
        cmocka_unit_test(test_text_lines_keep_their_look),
        cmocka_unit_test(test_slug),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
