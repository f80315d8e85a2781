/* inbox.c -- a worker's mailbox (see inbox.h).
 *
 * The doorbell: `rung` (under the lock) says the eventfd was written since
 * the consumer last took; it is written at most once per take, and only
 * while the consumer is asleep.  inbox_take reads (clears) the eventfd
 * under the same lock just before it swaps the items out, and only when it
 * was rung.  A consumer that runs is not rung: inbox_sleep, before its
 * wait, publishes asleep = 1 and then looks at `waiting`, and a producer
 * publishes `waiting` and then looks at `asleep` (both sequentially
 * consistent: Dekker's pairing), so no wake-up is lost; a spurious one
 * (a producer that read asleep just before the consumer woke) costs one
 * empty turn.
 */
#include "inbox.h"

#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "util.h"

int inbox_init(inbox_t *ib)
{
    memset(ib, 0, sizeof(*ib));
    ib->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ib->evfd < 0)
        return -1;
    pthread_mutex_init(&ib->mu, NULL);
    atomic_init(&ib->asleep, 1); /* until the consumer says it runs */
    return 0;
}

void inbox_destroy(inbox_t *ib)
{
    if (ib->evfd >= 0)
        close(ib->evfd);
    ib->evfd = -1;
    pthread_mutex_destroy(&ib->mu);
    inbox_vec_free(&ib->q);
}

void inbox_vec_push(inbox_vec_t *v, const inbox_item_t *it)
{
    if (v->len == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        v->items = an_realloc(v->items, v->cap * sizeof(*v->items));
    }
    v->items[v->len++] = *it;
}

void inbox_vec_free(inbox_vec_t *v)
{
    free(v->items);
    v->items = NULL;
    v->len = v->cap = 0;
}

/* Counters are written under the lock: a plain increment, read relaxed. */
static inline void count(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* Under the lock, the consumer asleep and not rung yet. */
static void ring_locked(inbox_t *ib)
{
    uint64_t one = 1;
    ssize_t w = write(ib->evfd, &one, sizeof(one));
    (void)w; /* EAGAIN only when the counter is huge: already readable */
    ib->rung = 1;
    count(&ib->rings);
}

size_t inbox_post_defer(inbox_t *ib, inbox_vec_t *batch, uint64_t now_us, uint32_t defer_us,
                        int *owed)
{
    if (batch->len == 0)
        return 0;
    pthread_mutex_lock(&ib->mu);
    if (ib->q.len == 0 && ib->q.cap < batch->len) {
        /* swap storage: the common case costs no copy */
        inbox_vec_t tmp = ib->q;
        ib->q = *batch;
        *batch = tmp;
        batch->len = 0;
    } else {
        if (ib->q.len + batch->len > ib->q.cap) {
            size_t cap = ib->q.cap ? ib->q.cap : 64;
            while (cap < ib->q.len + batch->len)
                cap *= 2;
            ib->q.items = an_realloc(ib->q.items, cap * sizeof(*ib->q.items));
            ib->q.cap = cap;
        }
        memcpy(ib->q.items + ib->q.len, batch->items, batch->len * sizeof(*batch->items));
        ib->q.len += batch->len;
        batch->len = 0;
    }
    size_t waiting = ib->q.len;
    /* publish the items, then look whether the consumer sleeps (inbox_sleep
     * does the opposite) */
    atomic_store_explicit(&ib->waiting, waiting, memory_order_seq_cst);
    if (!ib->rung) {
        if (!atomic_load_explicit(&ib->asleep, memory_order_seq_cst)) {
            count(&ib->skipped); /* it runs: it takes them before it waits */
        } else if (defer_us &&
                   (int64_t)(now_us - atomic_load_explicit(&ib->woke_us, memory_order_relaxed)) <
                       (int64_t)defer_us) {
            count(&ib->skipped); /* it woke just now: the producer rings later if needed */
            *owed = 1;
        } else {
            ring_locked(ib);
        }
    }
    pthread_mutex_unlock(&ib->mu);
    return waiting;
}

size_t inbox_post(inbox_t *ib, inbox_vec_t *batch)
{
    return inbox_post_defer(ib, batch, 0, 0, NULL);
}

int inbox_ring_due(inbox_t *ib, int ring)
{
    if (atomic_load_explicit(&ib->waiting, memory_order_seq_cst) == 0 ||
        !atomic_load_explicit(&ib->asleep, memory_order_seq_cst))
        return 0; /* taken, or the consumer runs and takes them before it waits */
    if (!ring)
        return 1;
    pthread_mutex_lock(&ib->mu);
    if (!ib->rung && ib->q.len)
        ring_locked(ib);
    pthread_mutex_unlock(&ib->mu);
    return 0;
}

void inbox_take(inbox_t *ib, inbox_vec_t *out)
{
    uint64_t v;
    pthread_mutex_lock(&ib->mu);
    if (ib->rung) {
        ssize_t r = read(ib->evfd, &v, sizeof(v));
        (void)r;
        ib->rung = 0;
    }
    inbox_vec_t tmp = ib->q;
    ib->q = *out;
    ib->q.len = 0;
    *out = tmp;
    atomic_store_explicit(&ib->waiting, 0, memory_order_relaxed);
    pthread_mutex_unlock(&ib->mu);
}

int inbox_sleep(inbox_t *ib)
{
    atomic_store_explicit(&ib->asleep, 1, memory_order_seq_cst);
    return atomic_load_explicit(&ib->waiting, memory_order_seq_cst) == 0;
}

void inbox_wake(inbox_t *ib, uint64_t now_us)
{
    atomic_store_explicit(&ib->woke_us, now_us, memory_order_relaxed);
    atomic_store_explicit(&ib->asleep, 0, memory_order_relaxed);
}
