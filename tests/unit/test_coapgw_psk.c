/* test_coapgw_psk.c -- src/gateways/coap/coapgw_psk: the DTLS key file of
 * the CoAP gateway.  Plain and hex: keys, comments and blank lines, lookups
 * of present, absent and prefix identities among many, and what the loader
 * refuses (naming the line): no colon, an empty identity or key, bad hex, a
 * key too long, an identity given twice, a missing file.
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

#include "gateways/coap/coapgw_psk.h"

static char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/test_coapgw_psk.XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_load_and_find(void **state)
{
    (void)state;
    char *p = write_tmp("# devices\n\ndev1:secret:with:colons\r\ndev2:hex:0A0b\n");
    char err[200] = "";
    coapgw_psk_t *t = coapgw_psk_load(p, err, sizeof(err));
    unlink(p);
    assert_non_null(t);
    assert_int_equal(coapgw_psk_count(t), 2);
    size_t kl = 0;
    const uint8_t *k = coapgw_psk_find(t, (const uint8_t *)"dev1", 4, &kl);
    assert_non_null(k);
    assert_int_equal(kl, strlen("secret:with:colons"));
    assert_memory_equal(k, "secret:with:colons", kl);
    k = coapgw_psk_find(t, (const uint8_t *)"dev2", 4, &kl);
    assert_non_null(k);
    assert_int_equal(kl, 2);
    assert_int_equal(k[0], 0x0a);
    assert_int_equal(k[1], 0x0b);
    assert_null(coapgw_psk_find(t, (const uint8_t *)"dev", 3, &kl));
    assert_null(coapgw_psk_find(t, (const uint8_t *)"dev10", 5, &kl));
    coapgw_psk_free(t);
}

static void test_many(void **state)
{
    (void)state;
    size_t cap = 300 * 40;
    char *text = malloc(cap);
    size_t n = 0;
    for (int i = 299; i >= 0; i--)
        n += (size_t)snprintf(text + n, cap - n, "id-%d:key-%d\n", i, i);
    char *p = write_tmp(text);
    free(text);
    char err[200] = "";
    coapgw_psk_t *t = coapgw_psk_load(p, err, sizeof(err));
    unlink(p);
    assert_non_null(t);
    for (int i = 0; i < 300; i++) {
        char id[32], key[32];
        snprintf(id, sizeof(id), "id-%d", i);
        snprintf(key, sizeof(key), "key-%d", i);
        size_t kl = 0;
        const uint8_t *k = coapgw_psk_find(t, (const uint8_t *)id, strlen(id), &kl);
        assert_non_null(k);
        assert_int_equal(kl, strlen(key));
        assert_memory_equal(k, key, kl);
    }
    coapgw_psk_free(t);
}

static void test_refused(void **state)
{
    (void)state;
    static const struct {
        const char *text, *err;
    } bad[] = {
        {"dev1\n", "line 1: expected identity:key"},
        {"# c\n:key\n", "line 2: expected identity:key"},
        {"dev1:\n", "line 1: the key must be"},
        {"dev1:hex:0g\n", "line 1: not a hex digit"},
        {"dev1:hex:abc\n", "line 1: hex: needs"},
        {"dev1:0123456789012345678901234567890123456789012345678901234567890123456789\n",
         "line 1: the key must be"},
        {"a:1\nb:2\na:3\n", "identity \"a\" is given twice"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *p = write_tmp(bad[i].text);
        char err[200] = "";
        assert_null(coapgw_psk_load(p, err, sizeof(err)));
        unlink(p);
        if (strstr(err, bad[i].err) == NULL)
            fail_msg("case %zu: \"%s\" does not contain \"%s\"", i, err, bad[i].err);
    }
    char err[200] = "";
    assert_null(coapgw_psk_load("/nonexistent/psk", err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/psk"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_and_find),
        cmocka_unit_test(test_many),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
