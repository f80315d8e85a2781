/* test_api_keys.c -- credentials of the management API: a created key is
 * accepted as a bearer token and only its hash is on disk; a wrong or
 * truncated key, another scheme or garbage is refused; users in the $7$
 * PBKDF2-SHA512 format (a line written by mosquitto_passwd, password
 * "s3cret") accept the right password only; bad files name their line;
 * a histogram (util.h) puts values in the right buckets.
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

#include "api_keys.h"
#include "util.h"

static char dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/test_api_keys.XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void path(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

static void test_key_roundtrip(void **state)
{
    (void)state;
    char file[128], key[API_KEY_LEN + 1], key2[API_KEY_LEN + 1], err[256], hdr[128];
    path(file, sizeof(file), "keys");
    assert_int_equal(api_keys_create(file, "ops", key, err, sizeof(err)), 0);
    assert_int_equal(api_keys_create(file, "ci", key2, err, sizeof(err)), 0);
    assert_int_equal(strlen(key), API_KEY_LEN);
    assert_memory_equal(key, "ak_", 3);
    assert_string_not_equal(key, key2);

    FILE *f = fopen(file, "r");
    char text[1024] = "";
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    assert_null(strstr(text, key + 3)); /* only the hash is stored */
    assert_non_null(strstr(text, "ops:"));

    api_creds_t *c = api_creds_load(file, "", 1000, err, sizeof(err));
    assert_non_null(c);
    assert_int_equal(api_creds_count(c), 2);
    snprintf(hdr, sizeof(hdr), "Bearer %s", key);
    assert_string_equal(api_creds_check(c, hdr), "ops");
    snprintf(hdr, sizeof(hdr), "bearer %s", key2);
    assert_string_equal(api_creds_check(c, hdr), "ci");
    snprintf(hdr, sizeof(hdr), "Bearer %.*s", API_KEY_LEN - 1, key);
    assert_null(api_creds_check(c, hdr));
    hdr[strlen(hdr) - 1] ^= 1;
    assert_null(api_creds_check(c, hdr));
    assert_null(api_creds_check(c, "Bearer "));
    assert_null(api_creds_check(c, "Token abc"));
    assert_null(api_creds_check(c, ""));
    assert_null(api_creds_check(c, NULL));
    assert_null(api_creds_check(c, "Basic b3BzOnBhc3N3b3Jk")); /* ops:password: not a user */
    api_creds_free(c);
    /* bad names are refused before anything is written */
    assert_int_equal(api_keys_create(file, "a:b", key, err, sizeof(err)), -1);
    assert_int_equal(api_keys_create(file, "", key, err, sizeof(err)), -1);
}

/* mosquitto_passwd -b users admin s3cret */
static const char *const USER_LINE =
    "admin:$7$101$L4en1cpzLVPxwlXw$J1eOX3WctyoJX/gr8Bes2MfhALpIIkWMCiy4GdL9Bt0cFT2E5mXbhEw8yEJkoJw1"
    "DaTzIird9kU2d5pKRYulZA==\n";

static void write_file(const char *p, const char *text)
{
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
}

static void test_users(void **state)
{
    (void)state;
    char file[128], err[256];
    path(file, sizeof(file), "users");
    char text[512];
    snprintf(text, sizeof(text), "# users\n\n%s", USER_LINE);
    write_file(file, text);
    /* USER_LINE is mosquitto_passwd's: 101 iterations, accepted knowingly */
    api_creds_t *c = api_creds_load("", file, 101, err, sizeof(err));
    assert_non_null(c);
    assert_string_equal(api_creds_check(c, "Basic YWRtaW46czNjcmV0"), "admin"); /* admin:s3cret */
    assert_null(api_creds_check(c, "Basic YWRtaW46czNjcmV1"));                  /* admin:s3creu */
    assert_null(api_creds_check(c, "Basic YWRtaW4="));                          /* admin */
    assert_null(api_creds_check(c, "Basic !!!!"));
    assert_null(api_creds_check(c, "Basic "));
    assert_null(api_creds_check(c, "Bearer YWRtaW46czNjcmV0"));
    api_creds_free(c);
}

/* A users line with fewer iterations than the minimum: refused, naming the
 * file, the line, the count and what to do. */
static void test_min_iterations(void **state)
{
    (void)state;
    char file[128], err[512];
    path(file, sizeof(file), "weak");
    char text[512];
    snprintf(text, sizeof(text), "# users\n\n%s", USER_LINE);
    write_file(file, text);
    assert_null(api_creds_load("", file, 1000, err, sizeof(err)));
    assert_non_null(strstr(err, "weak:3: user 'admin'"));
    assert_non_null(strstr(err, "101 PBKDF2 iterations"));
    assert_non_null(strstr(err, "api.min_password_iterations (1000)"));
    assert_non_null(strstr(err, "antenna apikey passwd"));
    api_creds_t *c = api_creds_load("", file, 101, err, sizeof(err));
    assert_non_null(c);
    api_creds_free(c);
}

static void test_bad_files(void **state)
{
    (void)state;
    char file[128], err[256];
    path(file, sizeof(file), "bad");
    write_file(file, "ok:0000000000000000000000000000000000000000000000000000000000000000\n"
                     "broken line\n");
    assert_null(api_creds_load(file, "", 1000, err, sizeof(err)));
    assert_non_null(strstr(err, "bad:2"));
    write_file(file, "x:$6$abc$def\n");
    assert_null(api_creds_load("", file, 1000, err, sizeof(err)));
    assert_non_null(strstr(err, "bad:1"));
    path(file, sizeof(file), "missing");
    assert_null(api_creds_load(file, "", 1000, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot open"));
}

static void test_histogram(void **state)
{
    (void)state;
    an_hist_t h;
    memset(&h, 0, sizeof(h));
    an_hist_add(&h, 0);       /* <= 50 us */
    an_hist_add(&h, 50);      /* <= 50 us (le) */
    an_hist_add(&h, 51);      /* <= 100 us */
    an_hist_add(&h, 999999);  /* <= 1 s */
    an_hist_add(&h, 5000000); /* +Inf */
    assert_int_equal(STAT_GET(h.bucket[0]), 2);
    assert_int_equal(STAT_GET(h.bucket[1]), 1);
    assert_int_equal(STAT_GET(h.bucket[AN_HIST_N - 2]), 1);
    assert_int_equal(STAT_GET(h.bucket[AN_HIST_N - 1]), 1);
    assert_int_equal(STAT_GET(h.sum_us), 0 + 50 + 51 + 999999 + 5000000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_roundtrip), cmocka_unit_test(test_users),
        cmocka_unit_test(test_bad_files),     cmocka_unit_test(test_min_iterations),
        cmocka_unit_test(test_histogram),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
