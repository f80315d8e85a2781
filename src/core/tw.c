/* tw.c -- hierarchical timer wheel (Varghese & Lauck, cascading like Linux).
 *
 * Expiries are read as six 6-bit digits.  A pending timer with expires > now
 * sits at level k = the highest digit where it differs from w->now, in slot
 * digit_k(expires) (always > digit_k(now)).  When now reaches the start of
 * that slot's span the slot is cascaded: its timers are re-placed against the
 * new now and land lower, finally in level 0 where the slot is the exact ms.
 * slots[0][now & 63] is the due list (expires <= now), fired by the next
 * tw_advance; slots[5][0] (otherwise unused) parks timers 2^36 ms or more
 * ahead and is re-placed at each 2^36 boundary.  tw_advance jumps straight to
 * the next non-empty slot, so idle spans cost one scan of the slot heads.
 * Owned by one loop thread: no locks, no allocation.
 */
#include "tw.h"

#include <string.h>

#define TW_BITS 6
#define TW_MASK ((uint64_t)TW_SLOTS - 1)
#define TW_RANGE_BITS (TW_BITS * TW_LEVELS) /* 36 */
#define TW_OVERFLOW(w) (&(w)->slots[TW_LEVELS - 1][0])

_Static_assert(TW_SLOTS == 1 << TW_BITS, "TW_SLOTS must be 2^TW_BITS");

static inline unsigned digit(uint64_t t, int k)
{
    return (unsigned)((t >> (k * TW_BITS)) & TW_MASK);
}

static inline void link_head(tw_timer_t **head, tw_timer_t *t)
{
    t->next = *head;
    if (t->next)
        t->next->pprev = &t->next;
    *head = t;
    t->pprev = head;
}

static inline void unlink_timer(tw_timer_t *t)
{
    *t->pprev = t->next;
    if (t->next)
        t->next->pprev = t->pprev;
    t->next = NULL;
    t->pprev = NULL;
}

/* Put the whole list *from in front of *to. */
static void move_list(tw_timer_t **from, tw_timer_t **to)
{
    tw_timer_t *h = *from, *tail;
    if (!h)
        return;
    for (tail = h; tail->next; tail = tail->next)
        ;
    tail->next = *to;
    if (*to)
        (*to)->pprev = &tail->next;
    *to = h;
    h->pprev = to;
    *from = NULL;
}

static tw_timer_t **slot_for(tw_t *w, uint64_t expires)
{
    uint64_t now = w->now, x;
    int k;
    if (expires <= now)
        return &w->slots[0][now & TW_MASK];
    x = expires ^ now;
    if (x >> TW_RANGE_BITS)
        return TW_OVERFLOW(w);
    k = (63 - __builtin_clzll(x)) / TW_BITS;
    return &w->slots[k][digit(expires, k)];
}

/* The first tick after w->now where a slot fires or cascades, UINT64_MAX if
 * none.  Lower levels always come first: a level-k slot's span starts after
 * the end of the current level-(k-1) block. */
static uint64_t next_event(const tw_t *w)
{
    uint64_t now = w->now;
    for (int k = 0; k < TW_LEVELS; k++) {
        for (unsigned d = digit(now, k) + 1; d < TW_SLOTS; d++) {
            if (w->slots[k][d]) {
                int shift = k * TW_BITS;
                uint64_t base = now & ~((TW_MASK << shift) | (((uint64_t)1 << shift) - 1));
                return base + ((uint64_t)d << shift);
            }
        }
    }
    if (w->slots[TW_LEVELS - 1][0]) {
        uint64_t block = (now >> TW_RANGE_BITS) + 1;
        if (block >> (64 - TW_RANGE_BITS))
            return UINT64_MAX;
        return block << TW_RANGE_BITS;
    }
    return UINT64_MAX;
}

/* w->now just reached a multiple of 64: re-place the one slot whose span
 * starts here (lower levels' slot 0 is never used). */
static void cascade(tw_t *w)
{
    uint64_t t = w->now;
    tw_timer_t **slot = TW_OVERFLOW(w), *list;
    for (int k = 1; k < TW_LEVELS; k++) {
        unsigned d = digit(t, k);
        if (d) {
            slot = &w->slots[k][d];
            break;
        }
    }
    list = *slot;
    *slot = NULL;
    while (list) {
        tw_timer_t *n = list->next;
        link_head(slot_for(w, list->expires), list);
        list = n;
    }
}

/* Fire the due list.  Timers (re-)armed for <= now by the callbacks land in
 * the due list again; they go to *deferred, fired by the next tw_advance. */
static void run_due(tw_t *w, tw_timer_t **deferred)
{
    tw_timer_t **slot = &w->slots[0][w->now & TW_MASK];
    tw_timer_t *list = *slot;
    if (!list)
        return;
    *slot = NULL;
    list->pprev = &list; /* callbacks may tw_del what is still on it */
    while (list) {
        tw_timer_t *t = list;
        unlink_timer(t);
        w->count--;
        t->cb(t);
    }
    move_list(slot, deferred);
}

void tw_init(tw_t *w, uint64_t now_ms)
{
    memset(w, 0, sizeof(*w));
    w->now = now_ms;
}

void tw_timer_init(tw_timer_t *t, tw_cb cb)
{
    t->next = NULL;
    t->pprev = NULL;
    t->expires = 0;
    t->cb = cb;
}

void tw_add(tw_t *w, tw_timer_t *t, uint64_t expires)
{
    if (t->pprev)
        unlink_timer(t);
    else
        w->count++;
    t->expires = expires;
    link_head(slot_for(w, expires), t);
}

void tw_del(tw_t *w, tw_timer_t *t)
{
    if (!t->pprev)
        return;
    unlink_timer(t);
    w->count--;
}

void tw_advance(tw_t *w, uint64_t now_ms)
{
    tw_timer_t *deferred = NULL;
    run_due(w, &deferred);
    while (w->now < now_ms) {
        uint64_t t = next_event(w);
        if (t > now_ms) {
            w->now = now_ms; /* nothing in between: the placement stays valid */
            break;
        }
        w->now = t;
        if (!(t & TW_MASK))
            cascade(w);
        run_due(w, &deferred);
    }
    move_list(&deferred, &w->slots[0][w->now & TW_MASK]);
}

int64_t tw_next_timeout(const tw_t *w)
{
    uint64_t t;
    if (!w->count)
        return -1;
    if (w->slots[0][w->now & TW_MASK])
        return 0;
    t = next_event(w);
    if (t == UINT64_MAX)
        return -1;
    t -= w->now;
    return t > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)t;
}
