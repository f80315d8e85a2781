/* inbox.h -- a worker's mailbox: many producers, one consumer, eventfd wake-up.
 *
 * Producers append whole batches under a mutex (one lock per batch, not per
 * item) and write the eventfd only when the inbox goes from empty to
 * non-empty, so a busy consumer is woken once however many batches arrive.
 * The consumer swaps the whole array out under the lock and processes it
 * without the lock.  Items are small fixed-size records (inbox_item_t);
 * order is kept per producer.
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
    int evfd;               /* eventfd, non-blocking */
    _Atomic size_t waiting; /* q.len, readable without the lock */
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
 * kept for reuse) and wake the consumer if needed.  Returns the number of
 * items now waiting (the producer's congestion signal). */
size_t inbox_post(inbox_t *ib, inbox_vec_t *batch);

/* Consumer: clear the eventfd and swap the queued items into *out (which
 * must be empty; its storage is given to the inbox for reuse). */
void inbox_take(inbox_t *ib, inbox_vec_t *out);

#endif
