/* test_b64.c -- src/core/b64: RFC 4648 section 10 vectors both ways, every
 * padding case (0, 1, 2 '='), round trips of every length 0..64 and of
 * every byte value, and what the strict decoder refuses: characters out of
 * the alphabet, '=' in the middle or too many, a length not a multiple of
 * 4, non-zero unused bits, output larger than cap (with nothing written).
 * base64url: '-' and '_', no padding, the lengths it accepts and refuses.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "b64.h"

static const struct {
    const char *plain, *encoded;
} rfc4648[] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

static void test_encode_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rfc4648) / sizeof(rfc4648[0]); i++) {
        const char *p = rfc4648[i].plain;
        char out[16];
        memset(out, 'x', sizeof(out));
        size_t n = b64_encode((const uint8_t *)p, strlen(p), out);
        assert_int_equal(n, strlen(rfc4648[i].encoded));
        assert_int_equal(n, B64_ENCODED_LEN(strlen(p)));
        assert_string_equal(out, rfc4648[i].encoded);
        char *a = b64_encode_alloc((const uint8_t *)p, strlen(p));
        assert_string_equal(a, rfc4648[i].encoded);
        free(a);
    }
}

static void test_decode_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rfc4648) / sizeof(rfc4648[0]); i++) {
        const char *e = rfc4648[i].encoded;
        uint8_t out[16];
        long n = b64_decode(e, strlen(e), out, sizeof(out));
        assert_int_equal(n, (long)strlen(rfc4648[i].plain));
        assert_memory_equal(out, rfc4648[i].plain, (size_t)n);
        /* exactly enough room is enough */
        assert_int_equal(b64_decode(e, strlen(e), out, (size_t)n), n);
    }
}

/* Every length 0..64 (so every padding case many times) and all 256 byte
 * values, through both decoders (url: the padding stripped, '+/' mapped). */
static void test_round_trip(void **state)
{
    (void)state;
    uint8_t in[256], out[256];
    char text[B64_ENCODED_LEN(256) + 1];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t)(i * 7 + 3);
    for (size_t len = 0; len <= 64; len++) {
        size_t n = b64_encode(in, len, text);
        assert_int_equal(n, B64_ENCODED_LEN(len));
        assert_int_equal(b64_decode(text, n, out, sizeof(out)), (long)len);
        assert_memory_equal(out, in, len);
        size_t pad = len % 3 == 0 ? 0 : 3 - len % 3;
        for (size_t i = 0; i < n - pad; i++)
            text[i] = text[i] == '+' ? '-' : text[i] == '/' ? '_' : text[i];
        assert_int_equal(b64_decode_url(text, n - pad, out, sizeof(out)), (long)len);
        assert_memory_equal(out, in, len);
    }
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t)i;
    size_t n = b64_encode(in, sizeof(in), text);
    assert_true(B64_DECODED_MAX(n) >= sizeof(in));
    assert_int_equal(b64_decode(text, n, out, sizeof(out)), 256);
    assert_memory_equal(out, in, sizeof(in));
}

static void test_padding(void **state)
{
    (void)state;
    uint8_t out[8];
    assert_int_equal(b64_decode("QQ==", 4, out, sizeof(out)), 1); /* two '=' */
    assert_int_equal(out[0], 'A');
    assert_int_equal(b64_decode("QUI=", 4, out, sizeof(out)), 2); /* one '=' */
    assert_memory_equal(out, "AB", 2);
    assert_int_equal(b64_decode("QUJD", 4, out, sizeof(out)), 3); /* none */
    assert_memory_equal(out, "ABC", 3);
    assert_int_equal(b64_decode("", 0, out, sizeof(out)), 0);
    assert_int_equal(b64_decode("QQ==", 4, out, 1), 1);
    assert_int_equal(b64_decode("QUI=", 4, out, 2), 2);
}

static void test_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "QQ",       /* padding missing (url style) */
        "QUI",      /* padding missing */
        "Q",        /* length 1 */
        "QUJDR",    /* length 5 */
        "QQ=",      /* length 3 */
        "Q===",     /* three '=' */
        "====",     /* only padding */
        "=QUJ",     /* '=' first */
        "QQ=A",     /* '=' in the middle */
        "QQ==QUJD", /* padding, then more */
        "QUJD====", /* a padding block */
        "QR==",     /* non-zero unused bits (4) */
        "QUJ=",     /* non-zero unused bits (2) */
        "QU-D",     /* url character */
        "QU_D",     /* url character */
        "QU D",     /* space */
        " QUJD",    /* leading space, length 5 */
        "QUJD\n",   /* newline */
        "QUJ\x80",  /* high byte */
        "QU*D",     /* out of the alphabet */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t out[16];
        assert_int_equal(b64_decode(bad[i], strlen(bad[i]), out, sizeof(out)), -1);
    }
    uint8_t nul[4] = {'Q', 0, 'Q', 'Q'}; /* a NUL inside: an invalid character */
    uint8_t out[8];
    assert_int_equal(b64_decode((const char *)nul, 4, out, sizeof(out)), -1);
}

static void test_over_cap(void **state)
{
    (void)state;
    uint8_t out[8];
    memset(out, 0xAA, sizeof(out));
    assert_int_equal(b64_decode("Zm9vYmFy", 8, out, 5), -1);
    assert_int_equal(b64_decode("Zm9vYmE=", 8, out, 4), -1);
    assert_int_equal(b64_decode("Zg==", 4, out, 0), -1);
    assert_int_equal(b64_decode_url("Zm9vYmE", 7, out, 4), -1);
    for (size_t i = 0; i < sizeof(out); i++)
        assert_int_equal(out[i], 0xAA); /* refused before writing */
    assert_int_equal(b64_decode("", 0, NULL, 0), 0);
}

static void test_url(void **state)
{
    (void)state;
    uint8_t out[16];
    /* 0xfb 0xff 0xbf: "+/+/" in the standard alphabet */
    assert_int_equal(b64_decode_url("-_-_", 4, out, sizeof(out)), 3);
    assert_memory_equal(out, "\xfb\xff\xbf", 3);
    assert_int_equal(b64_decode("+/+/", 4, out, sizeof(out)), 3);
    assert_memory_equal(out, "\xfb\xff\xbf", 3);
    assert_int_equal(b64_decode_url("Zm9vYmE", 7, out, sizeof(out)), 5);
    assert_memory_equal(out, "fooba", 5);
    assert_int_equal(b64_decode_url("Zm9vYg", 6, out, sizeof(out)), 4);
    assert_memory_equal(out, "foob", 4);
    assert_int_equal(b64_decode_url("Zm9vYmFy", 8, out, sizeof(out)), 6);
    assert_int_equal(b64_decode_url("", 0, out, sizeof(out)), 0);
    /* {"alg":"HS256","typ":"JWT"} */
    const char *hdr = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
    assert_int_equal(b64_decode_url(hdr, strlen(hdr), out, 0), -1);
    uint8_t big[32];
    assert_int_equal(b64_decode_url(hdr, strlen(hdr), big, sizeof(big)), 27);
    assert_memory_equal(big, "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", 27);
    static const char *const bad[] = {
        "Zg==",  /* padding */
        "Zg=",   /* padding */
        "Z",     /* length 1 mod 4 */
        "Zm9vY", /* length 1 mod 4 */
        "+/+/",  /* standard alphabet */
        "Zh",    /* non-zero unused bits */
        "Zm9",   /* non-zero unused bits */
        "Zm 9",  /* space */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(b64_decode_url(bad[i], strlen(bad[i]), out, sizeof(out)), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_vectors),
        cmocka_unit_test(test_decode_vectors),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_padding),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_over_cap),
        cmocka_unit_test(test_url),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
