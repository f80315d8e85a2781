/* inbox.c -- a worker's mailbox (see inbox.h).
 *
 * The eventfd is written only on the empty -> non-empty transition, under the
 * lock, and read (cleared) by the consumer under the same lock just before it
 * swaps the items out: no wake-up is lost and none is spurious for long.
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

size_t inbox_post(inbox_t *ib, inbox_vec_t *batch)
{
    if (batch->len == 0)
        return 0;
    pthread_mutex_lock(&ib->mu);
    int was_empty = ib->q.len == 0;
    if (was_empty && ib->q.cap < batch->len) {
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
    if (was_empty) {
        uint64_t one = 1;
        ssize_t w = write(ib->evfd, &one, sizeof(one));
        (void)w; /* EAGAIN only when the counter is huge: already readable */
    }
    size_t waiting = ib->q.len;
    atomic_store_explicit(&ib->waiting, waiting, memory_order_relaxed);
    pthread_mutex_unlock(&ib->mu);
    return waiting;
}

void inbox_take(inbox_t *ib, inbox_vec_t *out)
{
    uint64_t v;
    pthread_mutex_lock(&ib->mu);
    ssize_t r = read(ib->evfd, &v, sizeof(v));
    (void)r;
    inbox_vec_t tmp = ib->q;
    ib->q = *out;
    ib->q.len = 0;
    *out = tmp;
    atomic_store_explicit(&ib->waiting, 0, memory_order_relaxed);
    pthread_mutex_unlock(&ib->mu);
}
