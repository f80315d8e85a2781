/* router.c -- fan a published message out to its subscribers (router.h).
 *
 * The trie is matched under its read lock into the worker's match vector;
 * nothing is delivered while the lock is held.  Overlapping subscriptions
 * of one session are merged by sorting the (few) matches by session id
 * when there is more than one, so each session gets the message once, at
 * the highest granted QoS.
 */
#include "router.h"

#include <stdlib.h>
#include <string.h>

#include "retain.h"
#include "sess.h"

static void collect(void *ud, const sub_ref_t *sub)
{
    worker_t *w = ud;
    if (w->nmatches == w->matches_cap) {
        w->matches_cap = w->matches_cap ? w->matches_cap * 2 : 64;
        w->matches = an_realloc(w->matches, w->matches_cap * sizeof(*w->matches));
    }
    w->matches[w->nmatches++] = *sub;
}

static int by_sid(const void *a, const void *b)
{
    uint64_t x = ((const sub_ref_t *)a)->sid, y = ((const sub_ref_t *)b)->sid;
    return x < y ? -1 : x > y;
}

/* Sort and merge duplicates in place; returns the new count. */
static size_t merge_overlaps(sub_ref_t *v, size_t n)
{
    if (n < 2)
        return n;
    qsort(v, n, sizeof(*v), by_sid);
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        if (out > 0 && v[out - 1].sid == v[i].sid) {
            if ((v[i].opts & 3) > (v[out - 1].opts & 3))
                v[out - 1].opts = (uint8_t)((v[out - 1].opts & ~3) | (v[i].opts & 3));
            continue;
        }
        v[out++] = v[i];
    }
    return out;
}

void router_deliver_local(worker_t *w, uint64_t sid, msg_t *m, uint8_t qos)
{
    sess_t *s = worker_find_sid(w, sid);
    if (s == NULL)
        return; /* the session ended while the message travelled */
    sess_deliver(w, s, m, qos, 0);
}

void router_publish(worker_t *w, msg_t *m)
{
    server_t *srv = w->srv;
    /* Hook seam: authorization and rules will run here, before routing. */
    if (m->retain)
        retain_set(srv->retain, m);

    w->nmatches = 0;
    pthread_rwlock_rdlock(&srv->trie_lock);
    trie_match(srv->trie, msg_topic(m), m->topic_len, collect, w);
    pthread_rwlock_unlock(&srv->trie_lock);
    size_t n = merge_overlaps(w->matches, w->nmatches);

    for (size_t i = 0; i < n; i++) {
        const sub_ref_t *sub = &w->matches[i];
        uint8_t qos = AN_MIN(m->qos, sub->opts & 3);
        if (sub->owner == w->id) {
            router_deliver_local(w, sub->sid, m, qos);
        } else {
            inbox_item_t it = {.kind = WM_DELIVER, .qos = qos, .sid = sub->sid,
                               .ptr = msg_ref(m)};
            worker_post(w, sub->owner, &it);
        }
    }
}

typedef struct {
    worker_t *w;
    sess_t *s;
    uint8_t qos;
} retained_ctx_t;

static void send_one_retained(void *ud, msg_t *m)
{
    retained_ctx_t *ctx = ud;
    /* [MQTT-3.3.1-8] retained messages sent on subscribe carry retain 1 */
    sess_deliver(ctx->w, ctx->s, m, AN_MIN(m->qos, ctx->qos), 1);
    msg_unref(&m);
}

void router_send_retained(worker_t *w, sess_t *s, const uint8_t *filter,
                          uint16_t len, uint8_t qos)
{
    retained_ctx_t ctx = {w, s, qos};
    retain_match(w->srv->retain, filter, len, send_one_retained, &ctx);
}
