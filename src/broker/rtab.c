/* rtab.c -- the compact table of other nodes' exact routes (rtab.h).
 *
 * Linear probing from home(h) = the high half of h scaled to the
 * capacity (a keyed hash: uniform already).  A run of occupied slots ends at an empty one; every slot of
 * hash h lies in the run that holds home(h), after it.  Deleting slot i
 * moves back each later slot of the run whose home is not in (i, j], so no
 * lookup ever stops early.
 *
 * Retired nodes (rtab_drop_node without a callback, rtab.h): their slots
 * stay in the runs (a run must not be cut) and are skipped by lookups;
 * every rebuild (a resize, a sweep) leaves them out and counts each node's
 * pairs again.
 */
#include "rtab.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

static inline uint64_t slot_hash(const rtab_slot_t *s)
{
    return (uint64_t)s->hhi << 32 | s->hlo;
}

static inline size_t home(const rtab_t *t, uint64_t h)
{
    return rtab_home(h, t->cap);
}

/* Slots in use: live pairs and retired ones not swept yet. */
static inline size_t occupied(const rtab_t *t)
{
    return t->n + t->nretired;
}

/* Node's counts, the array grown to hold it. */
static rtab_node_t *node_at(rtab_t *t, uint16_t node)
{
    if (node >= t->nnodes) {
        uint32_t nn = t->nnodes ? t->nnodes : 16;
        while (nn <= node)
            nn *= 2;
        t->nodes = an_realloc(t->nodes, nn * sizeof(*t->nodes));
        memset(t->nodes + t->nnodes, 0, (nn - t->nnodes) * sizeof(*t->nodes));
        t->nnodes = nn;
    }
    return &t->nodes[node];
}

/* (Writers sweep a retired node's slots before they look for its pairs.) */
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
    node_at(t, node)->pairs++;
}

/* The table rebuilt at cap: without the retired nodes' slots (a sweep),
 * and without drop's (calling fn for each first) unless drop < 0. */
static void rebuild(rtab_t *t, size_t cap, int drop,
                    void (*fn)(void *ud, uint64_t h, uint32_t count), void *ud)
{
    rtab_slot_t *old = t->slots;
    size_t ocap = t->cap;
    t->slots = an_calloc(cap, sizeof(*t->slots));
    t->cap = cap;
    t->n = 0;
    for (uint32_t i = 0; i < t->nnodes; i++)
        t->nodes[i].pairs = 0; /* counted again by put */
    for (size_t i = 0; i < ocap; i++) {
        const rtab_slot_t *s = &old[i];
        if (s->count == 0 || (s->node < t->nnodes && t->nodes[s->node].retired))
            continue;
        if (s->node == drop) {
            if (fn != NULL)
                fn(ud, slot_hash(s), s->count);
            continue;
        }
        put(t, slot_hash(s), s->node, s->count);
    }
    for (uint32_t i = 0; i < t->nnodes; i++)
        t->nodes[i].retired = 0;
    t->nretired = 0;
    free(old);
}

static void resize(rtab_t *t, size_t cap)
{
    rebuild(t, cap, -1, NULL, NULL);
}

/* The capacity for live pairs after a sweep: halved while under 1/8 full. */
static size_t cap_for(const rtab_t *t, size_t live)
{
    size_t cap = t->cap;
    while (cap > RTAB_MIN && live * 8 < cap)
        cap = AN_MAX(cap / 2, (size_t)RTAB_MIN);
    return cap;
}

static void sweep(rtab_t *t)
{
    if (t->nretired != 0)
        resize(t, cap_for(t, t->n));
}

/* Before a write for node: its retired slots must not be found. */
static void sweep_for(rtab_t *t, uint16_t node)
{
    if (rtab_retired(t, node))
        sweep(t);
}

/* Room for one more pair: a sweep first when it makes room, else grow by
 * half. */
static void room_for_one(rtab_t *t)
{
    if (!rtab_full(occupied(t), t->cap))
        return;
    sweep(t);
    if (rtab_full(occupied(t), t->cap))
        resize(t, t->cap + t->cap / 2);
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
    free(t->nodes);
    free(t);
}

/* Empty slot s (a live pair) and close the gap (backward shift); no
 * resize. */
static void shift_out(rtab_t *t, rtab_slot_t *s)
{
    size_t cap = t->cap, i = (size_t)(s - t->slots);
    t->nodes[s->node].pairs--;
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
    size_t cap = cap_for(t, occupied(t));
    if (cap != t->cap)
        resize(t, cap_for(t, t->n)); /* sweeps too */
}

static void remove_at(rtab_t *t, rtab_slot_t *s)
{
    shift_out(t, s);
    shrink(t);
}

uint32_t rtab_add(rtab_t *t, uint64_t h, uint16_t node)
{
    sweep_for(t, node);
    rtab_slot_t *s = find(t, h, node);
    if (s != NULL) {
        if (s->count < UINT16_MAX)
            s->count++;
        return s->count;
    }
    room_for_one(t);
    put(t, h, node, 1);
    return 1;
}

uint32_t rtab_del(rtab_t *t, uint64_t h, uint16_t node, int all)
{
    sweep_for(t, node);
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
    sweep_for(t, node);
    rtab_slot_t *s = find(t, h, node);
    if (s != NULL) {
        uint32_t old = s->count;
        s->count = (uint16_t)count;
        return old;
    }
    room_for_one(t);
    put(t, h, node, (uint16_t)count);
    return 0;
}

uint32_t rtab_count(const rtab_t *t, uint64_t h, uint16_t node)
{
    if (rtab_retired(t, node))
        return 0;
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
    if (node >= t->nnodes || t->nodes[node].retired || t->nodes[node].pairs == 0)
        return 0;
    size_t n = t->nodes[node].pairs;
    if (fn != NULL) { /* at once: one pass, the retired ones swept with it */
        rebuild(t, cap_for(t, t->n - n), node, fn, ud);
        return n;
    }
    t->nodes[node].retired = 1;
    t->n -= n;
    t->nretired += n;
    if (t->nretired * 2 >= occupied(t)) /* as many as the live ones */
        sweep(t);
    return n;
}
