/* b64.c -- base64 encoding and strict decoding (RFC 4648), table-driven.
 *
 * One module for every place that reads or writes base64: password hashes
 * (auth_passwd, api_keys), SCRAM messages, HTTP Basic credentials, the
 * REST API's binary payloads, store exports, JWT parts and JWKS keys.
 *
 * Decoding uses one 256-entry table holding value + 1, so the zero that
 * the partial initializer leaves everywhere else (every byte >= 0x80, '='
 * and whitespace included) means "not in the alphabet".  Both decoders
 * share one loop over the unpadded characters: b64_decode first strips the
 * one or two '=' that end a length multiple of 4; b64_decode_url takes the
 * text as it is and reads '-' and '_' as '+' and '/' (refusing those two).
 * The output length is known before the loop, so the cap check happens
 * before any byte is written (on a refusal part of out may have been
 * written, never past cap).  A final group of 2 or 3 characters must leave
 * its unused low bits zero (RFC 4648 section 3.5): "QR==" is refused, only
 * "QQ==" means "A", so each byte string has exactly one accepted text.
 *
 * No state, no locks, no OpenSSL: EVP_DecodeBlock, which the callers used
 * before, reads '=' anywhere as zero bits and skips leading and trailing
 * whitespace, so each caller had wrapped it in checks of its own.
 */
#include "b64.h"

#include "util.h"

static const char std_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* value + 1 of each character of std_alphabet; 0: not in it */
static const uint8_t values[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  63,
    0,  0,  0,  64, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 0,  0,  0,  0,  0,  0,  0,  1,
    2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
    24, 25, 26, 0,  0,  0,  0,  0,  0,  27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39,
    40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 0,  0,  0,  0,  0,
};

size_t b64_encode(const uint8_t *in, size_t n, char *out)
{
    char *o = out;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *o++ = std_alphabet[v >> 18];
        *o++ = std_alphabet[(v >> 12) & 63];
        *o++ = std_alphabet[(v >> 6) & 63];
        *o++ = std_alphabet[v & 63];
    }
    if (n - i > 0) {
        uint32_t v = (uint32_t)in[i] << 16 | (n - i == 2 ? (uint32_t)in[i + 1] << 8 : 0);
        *o++ = std_alphabet[v >> 18];
        *o++ = std_alphabet[(v >> 12) & 63];
        *o++ = n - i == 2 ? std_alphabet[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o = '\0';
    return (size_t)(o - out);
}

char *b64_encode_alloc(const uint8_t *in, size_t n)
{
    char *out = an_malloc(B64_ENCODED_LEN(n) + 1);
    b64_encode(in, n, out);
    return out;
}

/* len characters to bytes: the standard alphabet, or with url its two
 * substitutes ('-' for '+', '_' for '/') instead.  No padding here. */
static long decode(const char *in, size_t len, int url, uint8_t *out, size_t cap)
{
    size_t tail = len % 4;
    if (tail == 1)
        return -1; /* 6 bits: not even one byte */
    size_t outlen = len / 4 * 3 + (tail ? tail - 1 : 0);
    if (outlen > cap)
        return -1;
    uint8_t *o = out;
    uint32_t acc = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (url) {
            if (ch == '+' || ch == '/')
                return -1;
            ch = ch == '-' ? '+' : ch == '_' ? '/' : ch;
        }
        unsigned v = values[ch];
        if (v == 0)
            return -1;
        acc = acc << 6 | (v - 1);
        if (i % 4 == 3) {
            *o++ = (uint8_t)(acc >> 16);
            *o++ = (uint8_t)(acc >> 8);
            *o++ = (uint8_t)acc;
            acc = 0;
        }
    }
    if (tail == 2) { /* 12 bits: one byte and 4 bits that must be zero */
        if (acc & 0xf)
            return -1;
        *o++ = (uint8_t)(acc >> 4);
    } else if (tail == 3) { /* 18 bits: two bytes and 2 zero bits */
        if (acc & 0x3)
            return -1;
        *o++ = (uint8_t)(acc >> 10);
        *o++ = (uint8_t)(acc >> 2);
    }
    return (long)outlen;
}

long b64_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
    if (len % 4 != 0)
        return -1;
    size_t pad = 0;
    if (len > 0 && in[len - 1] == '=')
        pad = in[len - 2] == '=' ? 2 : 1;
    return decode(in, len - pad, 0, out, cap);
}

long b64_decode_url(const char *in, size_t len, uint8_t *out, size_t cap)
{
    return decode(in, len, 1, out, cap);
}
