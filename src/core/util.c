/* util.c -- allocation wrappers that abort on exhaustion, output buffer
 * growth (see util.h). */
#include "util.h"

#include <stdio.h>
#include <string.h>

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
