/* rtab.c -- the compact table of other nodes' exact routes (rtab.h).
 *
 * Linear probing from home(h) = the high half of h scaled to the
 * capacity (a keyed hash: uniform already).  A run of occupied slots ends at an empty one; every slot of
 * hash h lies in the run that holds home(h), after it.  Deleting slot i
 * moves back each later slot of the run whose home is not in (i, j], so no
 * lookup ever stops early.
 */
#include "rtab.h"

#include <stdlib.h>

#include "util.h"

static inline uint64_t slot_hash(const rtab_slot_t *s)
{
    return (uint64_t)s->hhi << 32 | s->hlo;
}

static inline size_t home(const rtab_t *t, uint64_t h)
{
    return rtab_home(h, t->cap);
}

static rtab_slot_t *find(const rtab_t *t, uint64_t h, uint16_t node)
{
    uint32_t lo = (uint32_t)h, hi = (uint32_t)(h >> 32);
    for (size_t i = home(t, h);; i = rtab_next(i, t->cap)) {
        rtab_slot_t *s = &t->slots[i];
        if (s->count == 0)
            return NULL;
        if (s->hlo == lo && s->hhi == hi && s->node == node)
            return s;
    }
}

/* Into a free slot (the pair is absent; there is room). */
static void put(rtab_t *t, uint64_t h, uint16_t node, uint16_t count)
{
    size_t i = home(t, h);
    while (t->slots[i].count != 0)
        i = rtab_next(i, t->cap);
    t->slots[i] = (rtab_slot_t){(uint32_t)h, (uint32_t)(h >> 32), node, count};
    t->n++;
}

static void resize(rtab_t *t, size_t cap)
{
    rtab_slot_t *old = t->slots;
    size_t ocap = t->cap;
    t->slots = an_calloc(cap, sizeof(*t->slots));
    t->cap = cap;
    t->n = 0;
    for (size_t i = 0; i < ocap; i++)
        if (old[i].count != 0)
            put(t, slot_hash(&old[i]), old[i].node, old[i].count);
    free(old);
}

rtab_t *rtab_new(void)
{
    rtab_t *t = an_calloc(1, sizeof(*t));
    t->cap = RTAB_MIN;
    t->slots = an_calloc(t->cap, sizeof(*t->slots));
    return t;
}

void rtab_free(rtab_t *t)
{
    if (t == NULL)
        return;
    free(t->slots);
    free(t);
}

/* Empty slot s and close the gap (backward shift); no resize. */
static void shift_out(rtab_t *t, rtab_slot_t *s)
{
    size_t cap = t->cap, i = (size_t)(s - t->slots);
    for (size_t j = rtab_next(i, cap); t->slots[j].count != 0; j = rtab_next(j, cap)) {
        size_t k = home(t, slot_hash(&t->slots[j]));
        /* j may move to i unless its home lies cyclically in (i, j] */
        if (rtab_dist(k, j, cap) >= rtab_dist(i, j, cap)) {
            t->slots[i] = t->slots[j];
            i = j;
        }
    }
    t->slots[i].count = 0;
    t->n--;
}

static void shrink(rtab_t *t)
{
    size_t cap = t->cap;
    while (cap > RTAB_MIN && t->n * 8 < cap)
        cap = AN_MAX(cap / 2, (size_t)RTAB_MIN);
    if (cap != t->cap)
        resize(t, cap);
}

static void remove_at(rtab_t *t, rtab_slot_t *s)
{
    shift_out(t, s);
    shrink(t);
}

uint32_t rtab_add(rtab_t *t, uint64_t h, uint16_t node)
{
    rtab_slot_t *s = find(t, h, node);
    if (s != NULL) {
        if (s->count < UINT16_MAX)
            s->count++;
        return s->count;
    }
    if (rtab_full(t->n, t->cap))
        resize(t, t->cap + t->cap / 2);
    put(t, h, node, 1);
    return 1;
}

uint32_t rtab_del(rtab_t *t, uint64_t h, uint16_t node, int all)
{
    rtab_slot_t *s = find(t, h, node);
    if (s == NULL)
        return 0;
    if (!all && s->count > 1) {
        s->count--;
        return 1;
    }
    uint32_t n = s->count;
    remove_at(t, s);
    return n;
}

uint32_t rtab_set(rtab_t *t, uint64_t h, uint16_t node, uint32_t count)
{
    if (count == 0)
        return rtab_del(t, h, node, 1);
    if (count > UINT16_MAX)
        count = UINT16_MAX;
    rtab_slot_t *s = find(t, h, node);
    if (s != NULL) {
        uint32_t old = s->count;
        s->count = (uint16_t)count;
        return old;
    }
    if (rtab_full(t->n, t->cap))
        resize(t, t->cap + t->cap / 2);
    put(t, h, node, (uint16_t)count);
    return 0;
}

uint32_t rtab_count(const rtab_t *t, uint64_t h, uint16_t node)
{
    const rtab_slot_t *s = find(t, h, node);
    return s ? s->count : 0;
}

size_t rtab_lookup(const rtab_t *t, uint64_t h, uint16_t *out, size_t cap)
{
    size_t n = 0, i = home(t, h);
    for (int node; (node = rtab_next_node(t, h, &i)) >= 0; n++)
        if (n < cap)
            out[n] = (uint16_t)node;
    return n;
}

size_t rtab_drop_node(rtab_t *t, uint16_t node, void (*fn)(void *ud, uint64_t h, uint32_t count),
                      void *ud)
{
    size_t n = 0;
    /* a shift moves later slots back into slot i, never one of node's
     * into a slot already passed: look at slot i again after each */
    for (size_t i = 0; i < t->cap;) {
        rtab_slot_t *s = &t->slots[i];
        if (s->count != 0 && s->node == node) {
            if (fn != NULL)
                fn(ud, slot_hash(s), s->count);
            n++;
            shift_out(t, s);
        } else {
            i++;
        }
    }
    shrink(t);
    return n;
}
