/* persist_held.c -- the ring of things waiting for a store commit (see
 * persist_held.h).  It grows by doubling (a power of two, so an index is a
 * mask) and never shrinks: a worker's peak of held items is small and
 * comes back.
 */
#include "persist_held.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

#define HELD_MIN_CAP 64

held_item_t *held_push(held_ring_t *h)
{
    if (h->len == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : HELD_MIN_CAP;
        held_item_t *v = an_malloc(cap * sizeof(*v));
        for (size_t i = 0; i < h->len; i++)
            v[i] = *held_at(h, i);
        free(h->v);
        h->v = v;
        h->cap = cap;
        h->head = 0;
    }
    held_item_t *e = held_at(h, h->len++);
    memset(e, 0, sizeof(*e));
    e->batch = h->batch_no;
    return e;
}

void held_submitted(held_ring_t *h)
{
    h->batch_no++;
}

void held_submit_failed(held_ring_t *h)
{
    for (size_t i = 0; i < h->len; i++) {
        held_item_t *e = held_at(h, i);
        if (e->batch == h->batch_no)
            e->failed = 1;
    }
}

uint64_t held_committed(held_ring_t *h)
{
    return ++h->committed_no;
}

int held_pop(held_ring_t *h, held_item_t *out)
{
    if (h->len == 0)
        return 0;
    held_item_t *e = held_at(h, 0);
    if (!held_batch_is_committed(e->batch, h->committed_no))
        return 0;
    *out = *e;
    h->head = (h->head + 1) & (h->cap - 1);
    h->len--;
    return 1;
}

int held_shift(held_ring_t *h, held_item_t *out)
{
    if (h->len == 0)
        return 0;
    *out = *held_at(h, 0);
    h->head = (h->head + 1) & (h->cap - 1);
    h->len--;
    return 1;
}

void held_forget_endpoint(held_ring_t *h, const struct endpoint_s *ep)
{
    for (size_t i = 0; i < h->len; i++) {
        held_item_t *e = held_at(h, i);
        if (e->ep == ep)
            e->ep = NULL;
    }
    if (h->after_sink)
        held_forget_endpoint(h->after_sink, ep);
}

void held_free(held_ring_t *h)
{
    if (h->after_sink) {
        held_free(h->after_sink);
        free(h->after_sink);
        h->after_sink = NULL;
    }
    free(h->sink_ooo);
    h->sink_ooo = NULL;
    h->nsink_ooo = h->cap_sink_ooo = 0;
    free(h->v);
    h->v = NULL;
    h->head = h->len = h->cap = h->routes = 0;
}
