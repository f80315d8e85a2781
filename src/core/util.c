/* util.c -- allocation wrappers that abort on exhaustion (see util.h). */
#include "util.h"

#include <stdio.h>
#include <string.h>

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
