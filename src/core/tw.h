/* tw.h -- hierarchical timer wheel, one per worker loop.
 *
 * Millisecond ticks, TW_LEVELS levels of 64 slots each (level k slot spans
 * 64^k ms), so 6 levels reach 2^36 ms (about two years).  Timers are
 * intrusive (tw_timer_t is embedded in the owner's struct; no allocation to
 * arm one).  Add, re-arm and delete are O(1); advancing costs one step per
 * non-empty slot reached plus cascading of the higher levels (each timer is
 * re-placed at most once per level), and jumps over empty spans in one step,
 * so a 10-hour jump of an idle wheel is a scan of the slot heads.  Timers
 * fire in tick order at their exact ms, never early; the ones already due
 * when tw_advance starts (armed for <= now) fire first, in no set order.
 * Expiries beyond 2^36 ms are fine (re-placed once per 2^36 ms).
 *
 * Owned by one loop; never touched from another thread.
 */
#ifndef ANTENNA_TW_H
#define ANTENNA_TW_H

#include <stddef.h>
#include <stdint.h>

#define TW_LEVELS 6
#define TW_SLOTS 64

typedef struct tw_timer_s tw_timer_t;
typedef void (*tw_cb)(tw_timer_t *t);

struct tw_timer_s {
    tw_timer_t *next;
    tw_timer_t **pprev; /* NULL when not pending */
    uint64_t expires;   /* absolute ms */
    tw_cb cb;
};

typedef struct {
    uint64_t now; /* current tick (ms) */
    size_t count; /* pending timers (armed, not yet fired) */
    tw_timer_t *slots[TW_LEVELS][TW_SLOTS];
} tw_t;

void tw_init(tw_t *w, uint64_t now_ms);
/* Set t's callback (does not arm). */
void tw_timer_init(tw_timer_t *t, tw_cb cb);
/* Arm, or re-arm if pending, to fire at `expires` (absolute ms).  A time
 * <= w->now (the past) fires on the next tw_advance call, even one whose
 * now_ms has not moved. */
void tw_add(tw_t *w, tw_timer_t *t, uint64_t expires);
/* Disarm; no-op when not pending. */
void tw_del(tw_t *w, tw_timer_t *t);
static inline int tw_pending(const tw_timer_t *t)
{
    return t->pprev != NULL;
}
/* Fire every timer with expires <= now_ms, tick by tick (w->now is the tick
 * being processed while a callback runs).  A callback may add or delete any
 * timer, itself included: one armed for a later tick <= now_ms fires within
 * this call, one armed for <= the current tick waits for the next call (so a
 * callback re-arming itself into the past cannot loop).  A now_ms earlier
 * than w->now (clock stepped back) only fires what was already due.  Not
 * re-entrant: a callback must not call tw_advance. */
void tw_advance(tw_t *w, uint64_t now_ms);
/* Milliseconds from w->now (the last tw_advance) until the earliest pending
 * timer might fire (0 if due now), or -1 when none is pending.  May be
 * earlier than the true expiry, at a cascade point of a higher level (the
 * loop then wakes, advances and asks again), never later.  Costs at most a
 * scan of the TW_LEVELS x TW_SLOTS heads. */
int64_t tw_next_timeout(const tw_t *w);

#endif
