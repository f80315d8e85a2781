/* test_proxy.c -- proxy_parse(): PROXY protocol v1 and v2 headers, valid
 * (IPv4, IPv6, UNKNOWN/LOCAL), incremental (every prefix asks for more),
 * truncated, oversized and garbage. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "net_proxy.h"

static const uint8_t SIG[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* Every strict prefix of a valid header needs more bytes. */
static void assert_prefixes_need_more(const uint8_t *h, size_t n, int version)
{
    for (size_t i = 0; i < n; i++) {
        proxy_result_t r;
        const char *why = NULL;
        int rc = proxy_parse(h, i, version, &r, &why);
        if (rc != 0)
            print_error("prefix of %zu bytes: rc %d (%s)\n", i, rc, why ? why : "");
        assert_int_equal(rc, 0);
    }
}

static int parse(const void *h, size_t n, int version, proxy_result_t *r)
{
    const char *why = NULL;
    int rc = proxy_parse(h, n, version, r, &why);
    if (rc < 0)
        assert_non_null(why);
    return rc;
}

static void test_v1_tcp4(void **state)
{
    (void)state;
    const char *h = "PROXY TCP4 203.0.113.7 192.0.2.1 51234 1883\r\nMQTT...";
    size_t hl = strlen("PROXY TCP4 203.0.113.7 192.0.2.1 51234 1883\r\n");
    proxy_result_t r;
    assert_int_equal(parse(h, strlen(h), 1, &r), (int)hl);
    assert_int_equal(r.version, 1);
    assert_int_equal(r.local, 0);
    assert_int_equal(r.family, AF_INET);
    uint8_t want[4] = {203, 0, 113, 7};
    assert_memory_equal(r.src, want, 4);
    assert_int_equal(r.src_port, 51234);
    assert_int_equal(r.dst_port, 1883);
    assert_int_equal(parse(h, strlen(h), 0, &r), (int)hl);
    assert_prefixes_need_more((const uint8_t *)h, hl, 1);
    /* a v1 header on a v2 listener */
    assert_int_equal(parse(h, strlen(h), 2, &r), -1);
}

static void test_v1_tcp6_unknown(void **state)
{
    (void)state;
    proxy_result_t r;
    const char *h = "PROXY TCP6 2001:db8::1 ::1 65535 0\r\n";
    assert_int_equal(parse(h, strlen(h), 1, &r), (int)strlen(h));
    assert_int_equal(r.family, AF_INET6);
    uint8_t want[16];
    inet_pton(AF_INET6, "2001:db8::1", want);
    assert_memory_equal(r.src, want, 16);
    assert_int_equal(r.src_port, 65535);
    assert_int_equal(r.dst_port, 0);

    h = "PROXY UNKNOWN\r\n";
    assert_int_equal(parse(h, strlen(h), 1, &r), (int)strlen(h));
    assert_int_equal(r.local, 1);
    h = "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
    assert_int_equal(parse(h, strlen(h), 1, &r), (int)strlen(h));
    assert_int_equal(r.local, 1);

    /* the longest possible header: 107 bytes */
    const char *longest = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                          "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_int_equal(strlen(longest), 104);
    assert_int_equal(parse(longest, strlen(longest), 1, &r), 104);
}

static void test_v1_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "PROXY TCP4 203.0.113.7 192.0.2.1 51234 1883\n",     /* LF alone */
        "PROXY TCP4 203.0.113.7 192.0.2.1 51234 1883\rX",    /* CR alone */
        "PROXY TCP4 203.0.113.7  192.0.2.1 51234 1883\r\n",  /* two spaces */
        "PROXY TCP4 203.0.113.7 192.0.2.1 51234\r\n",        /* a port missing */
        "PROXY TCP4 203.0.113.7 192.0.2.1 51234 1883 9\r\n", /* one too many */
        "PROXY TCP4 2001:db8::1 ::1 1 2\r\n",                /* v6 in TCP4 */
        "PROXY TCP6 1.2.3.4 1.2.3.5 1 2\r\n",                /* v4 in TCP6 */
        "PROXY TCP4 1.2.3.4 1.2.3.5 65536 2\r\n",            /* port range */
        "PROXY TCP4 1.2.3.4 1.2.3.5 01 2\r\n",               /* leading zero */
        "PROXY TCP4 1.2.3.256 1.2.3.5 1 2\r\n",              /* address */
        "PROXY UDP4 1.2.3.4 1.2.3.5 1 2\r\n",                /* protocol */
        "PROXY tcp4 1.2.3.4 1.2.3.5 1 2\r\n",                /* case */
        "PROXY UNKNOWNX\r\n",
        "PROXY\r\n",
        "proxy TCP4 1.2.3.4 1.2.3.5 1 2\r\n",
        "GET / HTTP/1.1\r\n",
        "\x10\x0c\x00\x04MQTT", /* an MQTT CONNECT */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        proxy_result_t r;
        int rc = parse(bad[i], strlen(bad[i]), 1, &r);
        if (rc != -1)
            print_error("accepted #%zu: %s\n", i, bad[i]);
        assert_int_equal(rc, -1);
    }
    /* oversized: no CRLF within 107 bytes */
    char big[200];
    memset(big, 'A', sizeof(big));
    memcpy(big, "PROXY UNKNOWN ", 14);
    proxy_result_t r;
    assert_int_equal(parse(big, 106, 1, &r), 0);
    assert_int_equal(parse(big, 107, 1, &r), -1);
    assert_int_equal(parse(big, sizeof(big), 1, &r), -1);
    /* CRLF ending at byte 108: one too long */
    big[106] = '\r';
    big[107] = '\n';
    assert_int_equal(parse(big, 108, 1, &r), -1);
    big[105] = '\r';
    big[106] = '\n';
    assert_int_equal(parse(big, 108, 1, &r), 107);
    /* a control character */
    const char *ctl = "PROXY TCP4 1.2.3.4\t1.2.3.5 1 2\r\n";
    assert_int_equal(parse(ctl, strlen(ctl), 1, &r), -1);
}

static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *addr, size_t alen,
                 size_t tlvs)
{
    memcpy(out, SIG, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)((alen + tlvs) >> 8);
    out[15] = (uint8_t)(alen + tlvs);
    memcpy(out + 16, addr, alen);
    memset(out + 16 + alen, 0x20, tlvs);
    return 16 + alen + tlvs;
}

static void test_v2_ipv4(void **state)
{
    (void)state;
    uint8_t a[12] = {198, 51, 100, 9, 127, 0, 0, 1, 0xC8, 0x2E, 0x07, 0x5B};
    uint8_t h[64];
    size_t n = v2(h, 0x21, 0x11, a, sizeof(a), 3);
    proxy_result_t r;
    assert_int_equal(parse(h, n, 2, &r), (int)n);
    assert_int_equal(r.version, 2);
    assert_int_equal(r.local, 0);
    assert_int_equal(r.family, AF_INET);
    assert_memory_equal(r.src, a, 4);
    assert_memory_equal(r.dst, a + 4, 4);
    assert_int_equal(r.src_port, 0xC82E);
    assert_int_equal(r.dst_port, 1883);
    assert_prefixes_need_more(h, n, 2);
    assert_int_equal(parse(h, n, 1, &r), -1);
    /* bytes after the header are not part of it */
    memcpy(h + n, "\x10\x0c", 2);
    assert_int_equal(parse(h, n + 2, 0, &r), (int)n);
}

static void test_v2_ipv6_local_unspec(void **state)
{
    (void)state;
    uint8_t a[36] = {0};
    inet_pton(AF_INET6, "2001:db8::42", a);
    inet_pton(AF_INET6, "::1", a + 16);
    a[32] = 0x12;
    a[33] = 0x34;
    a[34] = 0x07;
    a[35] = 0x5B;
    uint8_t h[128];
    size_t n = v2(h, 0x21, 0x21, a, sizeof(a), 0);
    proxy_result_t r;
    assert_int_equal(parse(h, n, 2, &r), (int)n);
    assert_int_equal(r.family, AF_INET6);
    assert_memory_equal(r.src, a, 16);
    assert_int_equal(r.src_port, 0x1234);
    assert_prefixes_need_more(h, n, 2);

    /* LOCAL (a health check): the socket address is kept */
    n = v2(h, 0x20, 0x00, a, 0, 0);
    assert_int_equal(parse(h, n, 2, &r), 16);
    assert_int_equal(r.local, 1);
    n = v2(h, 0x20, 0x11, a, 12, 0);
    assert_int_equal(parse(h, n, 2, &r), 28);
    assert_int_equal(r.local, 1);
    /* PROXY with UNSPEC */
    n = v2(h, 0x21, 0x00, a, 0, 0);
    assert_int_equal(parse(h, n, 2, &r), 16);
    assert_int_equal(r.local, 1);
}

static void test_v2_invalid(void **state)
{
    (void)state;
    uint8_t a[216] = {0};
    uint8_t h[PROXY_MAX_HEADER + 64];
    proxy_result_t r;
    size_t n;
    n = v2(h, 0x11, 0x11, a, 12, 0); /* version 1 */
    assert_int_equal(parse(h, n, 2, &r), -1);
    n = v2(h, 0x22, 0x11, a, 12, 0); /* command 2 */
    assert_int_equal(parse(h, n, 2, &r), -1);
    n = v2(h, 0x21, 0x41, a, 12, 0); /* family 4 */
    assert_int_equal(parse(h, n, 2, &r), -1);
    n = v2(h, 0x21, 0x13, a, 12, 0); /* transport 3 */
    assert_int_equal(parse(h, n, 2, &r), -1);
    n = v2(h, 0x21, 0x12, a, 12, 0); /* DGRAM */
    assert_int_equal(parse(h, n, 2, &r), -1);
    n = v2(h, 0x21, 0x11, a, 11, 0); /* address block too short for INET */
    assert_int_equal(parse(h, n, 2, &r), -1);
    n = v2(h, 0x21, 0x21, a, 12, 0); /* too short for INET6 */
    assert_int_equal(parse(h, n, 2, &r), -1);
    n = v2(h, 0x21, 0x31, a, 200, 0); /* too short for UNIX */
    assert_int_equal(parse(h, n, 2, &r), -1);
    n = v2(h, 0x21, 0x31, a, 216, 0); /* UNIX: socket address kept */
    assert_int_equal(parse(h, n, 2, &r), (int)n);
    assert_int_equal(r.local, 1);
    /* oversized: TLVs beyond PROXY_MAX_HEADER */
    n = v2(h, 0x21, 0x11, a, 12, PROXY_MAX_HEADER - 16 - 12 + 1);
    assert_int_equal(parse(h, 16, 2, &r), -1);
    n = v2(h, 0x21, 0x11, a, 12, PROXY_MAX_HEADER - 16 - 12);
    assert_int_equal(parse(h, n, 2, &r), (int)n);
    /* truncated: a valid start needs more */
    n = v2(h, 0x21, 0x11, a, 12, 0);
    assert_int_equal(parse(h, n - 1, 2, &r), 0);
    /* a bad signature byte */
    n = v2(h, 0x21, 0x11, a, 12, 0);
    h[7] ^= 1;
    assert_int_equal(parse(h, 8, 2, &r), -1);
    /* garbage */
    uint8_t g[64];
    for (size_t i = 0; i < sizeof(g); i++)
        g[i] = (uint8_t)(i * 37 + 11);
    assert_int_equal(parse(g, sizeof(g), 0, &r), -1);
    assert_int_equal(parse(g, 0, 0, &r), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_tcp4),
        cmocka_unit_test(test_v1_tcp6_unknown),
        cmocka_unit_test(test_v1_invalid),
        cmocka_unit_test(test_v2_ipv4),
        cmocka_unit_test(test_v2_ipv6_local_unspec),
        cmocka_unit_test(test_v2_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
