/* fuzz_b64.c -- libFuzzer: b64_decode and b64_decode_url on arbitrary text.
 * Checks the decoders' contract: the output buffer is exactly cap bytes on
 * the heap (ASan sees a write past it); an accepted text is canonical, so
 * encoding the bytes gives the text back; an accepted text also decodes
 * with every cap >= its length and with none smaller; base64url and
 * standard base64 agree on the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "b64.h"

static void check(const char *text, size_t len, int url)
{
    size_t cap = B64_DECODED_MAX(len);
    uint8_t *out = malloc(cap ? cap : 1);
    long n = url ? b64_decode_url(text, len, out, cap) : b64_decode(text, len, out, cap);
    if (n < 0) {
        free(out);
        return;
    }
    if ((size_t)n > cap)
        abort();
    char *again = malloc(B64_ENCODED_LEN((size_t)n) + 1);
    size_t el = b64_encode(out, (size_t)n, again);
    if (url) { /* the same bytes in the other alphabet, padding stripped */
        while (el > 0 && again[el - 1] == '=')
            el--;
        for (size_t i = 0; i < el; i++)
            again[i] = again[i] == '+' ? '-' : again[i] == '/' ? '_' : again[i];
    }
    if (el != len || memcmp(again, text, len) != 0)
        abort();
    free(again);
    if (n > 0) { /* one byte less room: refused */
        uint8_t *tight = malloc(n > 1 ? (size_t)n - 1 : 1);
        long m = url ? b64_decode_url(text, len, tight, (size_t)n - 1)
                     : b64_decode(text, len, tight, (size_t)n - 1);
        if (m != -1)
            abort();
        free(tight);
    }
    uint8_t *exact = malloc(n ? (size_t)n : 1);
    long m =
        url ? b64_decode_url(text, len, exact, (size_t)n) : b64_decode(text, len, exact, (size_t)n);
    if (m != n || memcmp(exact, out, (size_t)n) != 0)
        abort();
    free(exact);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check((const char *)data, size, 0);
    check((const char *)data, size, 1);
    return 0;
}
