/* inbox.h -- a worker's mailbox: many producers, one consumer, eventfd wake-up.
 *
 * Producers append whole batches under a mutex (one lock per batch, not per
 * item).  The consumer swaps the whole array out under the lock and
 * processes it without the lock.  Items are small fixed-size records
 * (inbox_item_t); order is kept per producer.
 *
 * The doorbell (the eventfd write) is rung only for a consumer that sleeps
 * and was not rung since it last took: a consumer that runs its loop (a
 * worker between inbox_wake and inbox_sleep) takes what arrived before it
 * waits again, so a producer needs no syscall for it.  A consumer that
 * never calls inbox_wake counts as asleep and is rung once per take, as
 * before (the CoAP gateway's inbox).
 *
 * The protocol (inbox.c): the consumer stores asleep = 1 and then reads
 * `waiting`; a producer stores `waiting` and then reads `asleep` (both
 * sequentially consistent), so one of them sees the other: either the
 * consumer finds the items and does not block, or the producer rings.
 *
 * A producer with a loop of its own (another worker) may defer the
 * doorbell of a consumer that woke less than `defer_us` ago (it is busy
 * and likely to wake again by itself) and ring later if still needed
 * (inbox_ring_due): coalesced wake-ups, bounded in time.
 */
#ifndef ANTENNA_INBOX_H
#define ANTENNA_INBOX_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t kind; /* meaning is the consumer's (server.h WM_*, a handler each) */
    uint8_t qos;
    uint8_t flags;
    uint64_t sid;
    void *ptr;
} inbox_item_t;

/* A growable array of items: a producer's outgoing batch, or what the
 * consumer took. */
typedef struct {
    inbox_item_t *items;
    size_t len, cap;
} inbox_vec_t;

typedef struct {
    pthread_mutex_t mu;
    inbox_vec_t q;
    int evfd;                 /* eventfd, non-blocking */
    int rung;                 /* under mu: the eventfd was written since the last take */
    _Atomic size_t waiting;   /* q.len, readable without the lock */
    _Atomic int asleep;       /* the consumer waits (or is about to): ring it */
    _Atomic uint64_t woke_us; /* an_now_us() of the consumer's last wake-up */
    /* counters (relaxed; /metrics): doorbells rung, doorbells a running
     * or recently woken consumer made unnecessary or deferred */
    _Atomic uint64_t rings, skipped;
} inbox_t;

/* Items waiting, without taking the lock (a producer's congestion check). */
static inline size_t inbox_waiting(inbox_t *ib)
{
    return atomic_load_explicit(&ib->waiting, memory_order_relaxed);
}

int inbox_init(inbox_t *ib);
void inbox_destroy(inbox_t *ib);

void inbox_vec_push(inbox_vec_t *v, const inbox_item_t *it);
void inbox_vec_free(inbox_vec_t *v);

/* Move every item of batch into the inbox (batch is left empty, its storage
 * kept for reuse) and ring the consumer if it sleeps.  Returns the number
 * of items now waiting (the producer's congestion signal). */
size_t inbox_post(inbox_t *ib, inbox_vec_t *batch);

/* inbox_post for a producer that can come back: when the consumer sleeps
 * but woke less than defer_us before now_us, the doorbell is not rung and
 * *owed is set; the producer then calls inbox_ring_due before it sleeps
 * itself or once the delay is over.  defer_us 0 is inbox_post. */
size_t inbox_post_defer(inbox_t *ib, inbox_vec_t *batch, uint64_t now_us, uint32_t defer_us,
                        int *owed);

/* A deferred doorbell: 1 while it is still needed (the consumer sleeps with
 * items it was not rung for); ring 1 rings it then (and returns 0). */
int inbox_ring_due(inbox_t *ib, int ring);

/* Consumer: clear the eventfd and swap the queued items into *out (which
 * must be empty; its storage is given to the inbox for reuse). */
void inbox_take(inbox_t *ib, inbox_vec_t *out);

/* Consumer with a loop: inbox_sleep right before its wait returns 0 when
 * items wait that no doorbell will announce (then it must not block, and
 * takes them); inbox_wake right after the wait (now_us: the time). */
int inbox_sleep(inbox_t *ib);
void inbox_wake(inbox_t *ib, uint64_t now_us);

#endif
