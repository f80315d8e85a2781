/* oarena.c -- the per-thread bump arena for one turn's output (oarena.h).
 * A chunk is rounded to 16 bytes; under AddressSanitizer a 16-byte
 * poisoned redzone follows it and a reset poisons the whole range. */
#include "oarena.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define OARENA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define OARENA_ASAN 1
#endif
#endif

#ifdef OARENA_ASAN
#include <sanitizer/asan_interface.h>
#define REDZONE 16u
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define REDZONE 0u
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define ROUND16(n) (((n) + 15u) & ~(size_t)15u)

int oarena_init(oarena_t *a, size_t size)
{
    memset(a, 0, sizeof(*a));
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size = (size + pg - 1) & ~(pg - 1);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED)
        return -1;
    a->base = p;
    a->size = size;
    POISON(a->base, a->size);
    return 0;
}

void oarena_destroy(oarena_t *a)
{
    if (a->base) {
        UNPOISON(a->base, a->size);
        munmap(a->base, a->size);
    }
    memset(a, 0, sizeof(*a));
}

static void note_use(oarena_t *a)
{
    if (a->used > a->touched)
        a->touched = a->used;
    if (a->used > a->peak)
        a->peak = a->used;
}

void *oarena_alloc(oarena_t *a, size_t n, size_t *cap)
{
    size_t c = ROUND16(n ? n : 1);
    if (a->base == NULL || c + REDZONE > a->size - a->used)
        return NULL;
    uint8_t *p = a->base + a->used;
    a->used += c + REDZONE;
    a->last = p;
    note_use(a);
    UNPOISON(p, c);
    *cap = c;
    return p;
}

int oarena_grow(oarena_t *a, void *p, size_t n, size_t *cap)
{
    if (n <= *cap)
        return 1;
    if (p == NULL || p != a->last)
        return 0;
    size_t c = ROUND16(n);
    size_t end = (size_t)((uint8_t *)p - a->base) + *cap + REDZONE; /* == used */
    if (end != a->used || c - *cap > a->size - a->used)
        return 0;
    a->used += c - *cap;
    note_use(a);
    UNPOISON(p, c);
    *cap = c;
    return 1;
}

void oarena_reset(oarena_t *a)
{
    if (a->used)
        POISON(a->base, a->used);
    a->used = 0;
    a->last = NULL;
}

size_t oarena_trim(oarena_t *a, size_t keep)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t floor = a->peak > keep ? a->peak : keep;
    if (floor < a->used)
        floor = a->used; /* never below a live chunk */
    floor = (floor + pg - 1) & ~(pg - 1);
    a->peak = a->used;
    if (a->touched <= floor || floor * 2 > a->touched)
        return 0;
    size_t n = a->touched - floor;
    /* the range stays reserved and readable: the pages come back zeroed
     * when touched again */
    if (madvise(a->base + floor, n, MADV_DONTNEED) != 0)
        return 0;
    a->touched = floor;
    a->given_back += n;
    return n;
}
