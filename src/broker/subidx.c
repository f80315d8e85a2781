/* subidx.c -- the filter index of a session's subscriptions (subidx.h).
 *
 * A slot holds the 32-bit hash of a filter and its array position + 1
 * (0 = empty), so growing, shrinking and deleting never hash a filter
 * again, and a probe compares filter bytes only when the hashes agree.
 */
#include "subidx.h"

#include <string.h>

#include "util.h"

#define SUBIDX_BITS0 5 /* the smallest table: 32 slots */

struct subidx_s {
    uint64_t key[2]; /* SipHash key, random per index */
    uint32_t bits;   /* 2^bits slots */
    uint64_t slot[]; /* hash << 32 | (position + 1); 0 = empty */
};

#define SLOT_HASH(s) ((uint32_t)((s) >> 32))
#define SLOT_POS1(s) ((uint32_t)(s)) /* position + 1 */

static uint32_t filter_hash(const subidx_t *x, const uint8_t *f, uint16_t len)
{
    uint64_t h = an_siphash(x->key, f, len);
    return (uint32_t)(h ^ (h >> 32));
}

static int same_filter(const sess_sub_t *s, const uint8_t *f, uint16_t len)
{
    return s->len == len && memcmp(sess_sub_filter(s), f, len) == 0;
}

static uint32_t mask_of(const subidx_t *x)
{
    return ((uint32_t)1 << x->bits) - 1;
}

static void put(subidx_t *x, uint32_t h, uint32_t pos)
{
    uint32_t mask = mask_of(x), j = h & mask;
    while (x->slot[j])
        j = (j + 1) & mask;
    x->slot[j] = (uint64_t)h << 32 | (pos + 1u);
}

static subidx_t *alloc_table(const uint64_t key[2], uint32_t bits)
{
    subidx_t *x = an_calloc(1, sizeof(*x) + ((size_t)1 << bits) * sizeof(uint64_t));
    x->key[0] = key[0];
    x->key[1] = key[1];
    x->bits = bits;
    return x;
}

/* The same entries in a table of 2^bits slots (hashes kept, none recomputed). */
static subidx_t *resize(subidx_t *x, uint32_t bits)
{
    subidx_t *n = alloc_table(x->key, bits);
    for (uint32_t j = 0; j <= mask_of(x); j++)
        if (x->slot[j])
            put(n, SLOT_HASH(x->slot[j]), SLOT_POS1(x->slot[j]) - 1);
    free(x);
    return n;
}

/* Slot index holding position pos (which must be there). */
static uint32_t slot_of(const subidx_t *x, const sess_sub_t *v, uint32_t pos)
{
    uint32_t mask = mask_of(x), j = filter_hash(x, v[pos].filter, v[pos].len) & mask;
    while (SLOT_POS1(x->slot[j]) != pos + 1)
        j = (j + 1) & mask;
    return j;
}

long subidx_find(const subidx_t *x, const sess_sub_t *v, uint32_t n, const uint8_t *f, uint16_t len)
{
    if (x == NULL) {
        for (uint32_t i = 0; i < n; i++)
            if (same_filter(&v[i], f, len))
                return (long)i;
        return -1;
    }
    uint32_t h = filter_hash(x, f, len), mask = mask_of(x);
    for (uint32_t j = h & mask; x->slot[j]; j = (j + 1) & mask) {
        uint64_t s = x->slot[j];
        if (SLOT_HASH(s) == h && same_filter(&v[SLOT_POS1(s) - 1], f, len))
            return (long)SLOT_POS1(s) - 1;
    }
    return -1;
}

void subidx_added(subidx_t **xp, const sess_sub_t *v, uint32_t n)
{
    subidx_t *x = *xp;
    if (x == NULL) {
        if (n <= SUBIDX_MIN)
            return;
        uint64_t key[2];
        uint32_t bits = SUBIDX_BITS0;
        while ((uint64_t)n * 2 > ((uint64_t)1 << bits))
            bits++;
        an_random_key(key);
        x = alloc_table(key, bits);
        for (uint32_t i = 0; i < n; i++)
            put(x, filter_hash(x, v[i].filter, v[i].len), i);
        *xp = x;
        return;
    }
    if ((uint64_t)n * 2 > ((uint64_t)1 << x->bits))
        x = *xp = resize(x, x->bits + 1);
    put(x, filter_hash(x, v[n - 1].filter, v[n - 1].len), n - 1);
}

void subidx_removing(subidx_t **xp, const sess_sub_t *v, uint32_t n, uint32_t i)
{
    subidx_t *x = *xp;
    if (x == NULL)
        return;
    if (n - 1 < SUBIDX_MIN / 2) {
        subidx_free(xp);
        return;
    }
    uint32_t mask = mask_of(x), j = slot_of(x, v, i);
    /* backward-shift deletion: later entries of the run move up into the
     * hole when their home slot allows it, so lookups never need tombstones */
    x->slot[j] = 0;
    for (uint32_t k = (j + 1) & mask; x->slot[k]; k = (k + 1) & mask) {
        uint32_t home = SLOT_HASH(x->slot[k]) & mask;
        if (((k - home) & mask) >= ((k - j) & mask)) {
            x->slot[j] = x->slot[k];
            x->slot[k] = 0;
            j = k;
        }
    }
    if (i != n - 1) { /* the last entry moves to position i */
        uint32_t l = slot_of(x, v, n - 1);
        x->slot[l] = (x->slot[l] & ~(uint64_t)UINT32_MAX) | (i + 1u);
    }
    if (x->bits > SUBIDX_BITS0 && (uint64_t)(n - 1) * 8 < ((uint64_t)1 << x->bits))
        *xp = resize(x, x->bits - 1);
}

void subidx_free(subidx_t **xp)
{
    free(*xp);
    *xp = NULL;
}

uint32_t subidx_capacity(const subidx_t *x)
{
    return x ? (uint32_t)1 << x->bits : 0;
}
