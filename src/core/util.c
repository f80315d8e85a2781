/* util.c -- allocation wrappers that abort on exhaustion, output buffer
 * growth, the keyed hash, the nearest string for "did you mean" (see
 * util.h). */
#include "util.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>

const uint32_t an_hist_bounds_us[AN_HIST_N - 1] = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000};

static void oom(size_t n)
{
    fprintf(stderr, "antenna: out of memory allocating %zu bytes\n", n);
    abort();
}

void *an_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (unlikely(p == NULL))
        oom(n);
    return p;
}

void *an_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (unlikely(p == NULL))
        oom(n * size);
    return p;
}

void *an_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (unlikely(q == NULL))
        oom(n);
    return q;
}

char *an_strndup(const char *s, size_t n)
{
    char *d = an_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

void buf_make_room(uint8_t **buf, uint32_t *len, uint32_t *off, uint32_t *cap, size_t n)
{
    if ((size_t)*len + n <= *cap)
        return;
    if (*off) { /* compact before growing */
        uint32_t pending = *len - *off;
        memmove(*buf, *buf + *off, pending);
        *len = pending;
        *off = 0;
    }
    if ((size_t)*len + n > *cap) {
        size_t c = (size_t)*cap * 2;
        while (c < (size_t)*len + n)
            c *= 2;
        *buf = an_realloc(*buf, c);
        *cap = (uint32_t)c;
    }
}

#define SIP_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIP_ROUND                                                                                  \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = SIP_ROTL(v1, 13);                                                                     \
        v1 ^= v0;                                                                                  \
        v0 = SIP_ROTL(v0, 32);                                                                     \
        v2 += v3;                                                                                  \
        v3 = SIP_ROTL(v3, 16);                                                                     \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = SIP_ROTL(v3, 21);                                                                     \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = SIP_ROTL(v1, 17);                                                                     \
        v1 ^= v2;                                                                                  \
        v2 = SIP_ROTL(v2, 32);                                                                     \
    } while (0)

uint64_t an_siphash(const uint64_t key[2], const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t v0 = 0x736f6d6570736575ull ^ key[0], v1 = 0x646f72616e646f6dull ^ key[1];
    uint64_t v2 = 0x6c7967656e657261ull ^ key[0], v3 = 0x7465646279746573ull ^ key[1];
    uint64_t last = (uint64_t)n << 56, m;
    size_t i, full = n & ~(size_t)7;
    for (i = 0; i < full; i += 8) {
        memcpy(&m, b + i, 8);
        v3 ^= m;
        SIP_ROUND;
        v0 ^= m;
    }
    for (; i < n; i++)
        last |= (uint64_t)b[i] << (8 * (i & 7));
    v3 ^= last;
    SIP_ROUND;
    v0 ^= last;
    v2 ^= 0xff;
    SIP_ROUND;
    SIP_ROUND;
    SIP_ROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

void an_random_key(uint64_t key[2])
{
    if (getrandom(key, 2 * sizeof(*key), GRND_NONBLOCK) == (ssize_t)(2 * sizeof(*key)))
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    key[0] = (uint64_t)(uintptr_t)key ^ ((uint64_t)ts.tv_nsec << 32) ^ 0x243F6A8885A308D3ull;
    key[1] = (uint64_t)ts.tv_sec * 0x9E3779B97F4A7C15ull ^ an_now_us();
}

/* ---- "did you mean" ---- */

/* Levenshtein distance of a and b, capped: anything above 3 is 4. */
static unsigned edit_distance3(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63 || (la > lb ? la - lb : lb - la) > 3)
        return 4;
    unsigned row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = (unsigned)j;
    for (size_t i = 1; i <= la; i++) {
        unsigned diag = row[0];
        row[0] = (unsigned)i;
        for (size_t j = 1; j <= lb; j++) {
            unsigned up = row[j];
            unsigned best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb] > 3 ? 4 : row[lb];
}

void an_near_try(an_near_t *nr, const char *cand)
{
    size_t len = strlen(nr->key);
    unsigned limit = len >= 12 ? 3 : len >= 6 ? 2 : 1;
    unsigned d = edit_distance3(nr->key, cand);
    if (d <= limit && d < nr->dist) {
        nr->dist = d;
        nr->best = cand;
    }
}
