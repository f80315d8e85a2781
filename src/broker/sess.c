/* sess.c -- sessions: tables, subscriptions, QoS 1/2 state, queues.
 *
 * Runs on the session's home worker only (see sess.h for the model).  The
 * trie is the one shared structure touched here, under its write lock, on
 * subscribe, unsubscribe and session end.  Packet ids for outgoing
 * messages come from a per-session counter that skips ids still in flight.
 * Everything for the client leaves through the session's endpoint
 * (endpoint.h): one indirect call per delivery or acknowledgement, its
 * limits read as fields.
 */
#include "sess.h"

#include <string.h>

#include "log.h"
#include "migrate.h"
#include "mqtt_codec.h"
#include "persist.h"
#include "router.h"
#include "sess_acl.h"
#include "shared.h"
#include "store_rec.h"
#include "subidx.h"
#include "util.h"

/* ---- ring buffer of entries ------------------------------------------ */

void sq_push(sq_t *q, const sq_entry_t *e)
{
    sq_ring_t *r = q->r;
    if (r == NULL || r->len == r->cap) {
        uint32_t cap = r ? r->cap * 2 : 4;
        sq_ring_t *n = an_malloc(sizeof(*n) + cap * sizeof(sq_entry_t));
        n->head = 0;
        n->len = r ? r->len : 0;
        n->cap = cap;
        n->bytes = r ? r->bytes : 0;
        for (uint32_t i = 0; i < n->len; i++)
            n->e[i] = r->e[(r->head + i) & (r->cap - 1)];
        free(r);
        q->r = r = n;
    }
    r->e[(r->head + r->len) & (r->cap - 1)] = *e;
    r->len++;
}

sq_entry_t *sq_at(sq_t *q, uint32_t i)
{
    return &q->r->e[(q->r->head + i) & (q->r->cap - 1)];
}

/* Storage goes back when the ring empties: idle sessions hold none. */
static void sq_shrink_if_empty(sq_t *q)
{
    if (q->r && q->r->len == 0) {
        free(q->r);
        q->r = NULL;
    }
}

int sq_pop(sq_t *q, sq_entry_t *out)
{
    sq_ring_t *r = q->r;
    if (r == NULL || r->len == 0)
        return 0;
    *out = r->e[r->head];
    r->head = (r->head + 1) & (r->cap - 1);
    r->len--;
    sq_shrink_if_empty(q);
    return 1;
}

void sq_remove(sq_t *q, uint32_t i)
{
    for (uint32_t j = i; j + 1 < q->r->len; j++)
        *sq_at(q, j) = *sq_at(q, j + 1);
    q->r->len--;
    sq_shrink_if_empty(q);
}

void sq_clear(sq_t *q)
{
    for (uint32_t i = 0; i < sq_len(q); i++)
        msg_unref(&sq_at(q, i)->m);
    free(q->r);
    q->r = NULL;
}

/* Arrays of a session whose capacity is implied by their length: a power
 * of two, at least `first` and at least the length (removals never shrink
 * them; an emptied array is freed), so a session pays no capacity fields.
 * Before appending to an array of n entries: the capacity to reallocate to,
 * or 0 when there is room. */
static uint32_t implied_growth(uint32_t n, uint32_t first)
{
    if (n == 0)
        return first;
    if (n >= first && (n & (n - 1)) == 0)
        return 2 * n;
    return 0;
}

/* ---- session tables ----------------------------------------------------- */

static sess_t **chain_of(sess_t *s, int kind)
{
    return kind == SESS_BY_ID ? &s->id_next : &s->sid_next;
}

/* Client ids: keyed SipHash (a client picks them); session ids: the
 * broker's own counter, mixed. */
static uint64_t key_hash(const sess_table_t *t, const sess_t *s)
{
    return t->kind == SESS_BY_ID ? an_siphash(t->key, s->client_id, s->client_id_len)
                                 : an_hash64(s->sid);
}

void sess_table_add(sess_table_t *t, sess_t *s)
{
    if (t->nbuckets == 0 && t->kind == SESS_BY_ID)
        an_random_key(t->key); /* empty: a new key costs nothing */
    /* chains of 2 on average at most by session id (every cross-worker
     * delivery looks one up), of 4 by client id (CONNECTs, the API): half
     * the buckets, 3.5 bytes less per idle connection */
    size_t per = t->kind == SESS_BY_ID ? 4 : 2;
    if (t->count + 1 > per * t->nbuckets) {
        size_t nb = t->nbuckets ? t->nbuckets * 2 : 64;
        sess_t **b = an_calloc(nb, sizeof(*b));
        for (size_t i = 0; i < t->nbuckets; i++) {
            sess_t *e = t->buckets[i];
            while (e) {
                sess_t *next = *chain_of(e, t->kind);
                size_t h = key_hash(t, e) & (nb - 1);
                *chain_of(e, t->kind) = b[h];
                b[h] = e;
                e = next;
            }
        }
        free(t->buckets);
        t->buckets = b;
        t->nbuckets = nb;
    }
    size_t h = key_hash(t, s) & (t->nbuckets - 1);
    *chain_of(s, t->kind) = t->buckets[h];
    t->buckets[h] = s;
    t->count++;
}

void sess_table_del(sess_table_t *t, sess_t *s)
{
    if (t->nbuckets == 0)
        return;
    sess_t **pp = &t->buckets[key_hash(t, s) & (t->nbuckets - 1)];
    while (*pp && *pp != s)
        pp = chain_of(*pp, t->kind);
    if (*pp) {
        *pp = *chain_of(s, t->kind);
        t->count--;
    }
}

sess_t *sess_table_find_id(const sess_table_t *t, const uint8_t *id, size_t len)
{
    if (t->nbuckets == 0)
        return NULL;
    sess_t *s = t->buckets[an_siphash(t->key, id, len) & (t->nbuckets - 1)];
    for (; s; s = s->id_next)
        if (s->client_id_len == len && memcmp(s->client_id, id, len) == 0)
            return s;
    return NULL;
}

sess_t *sess_table_find_sid(const sess_table_t *t, uint64_t sid)
{
    if (t->nbuckets == 0)
        return NULL;
    sess_t *s = t->buckets[an_hash64(sid) & (t->nbuckets - 1)];
    for (; s; s = s->sid_next)
        if (s->sid == sid)
            return s;
    return NULL;
}

void sess_table_free(sess_table_t *t)
{
    free(t->buckets);
    t->buckets = NULL;
    t->nbuckets = t->count = 0;
}

/* ---- life cycle ------------------------------------------------------- */

void sess_set_expiry(sess_t *s, uint32_t expiry)
{
    s->expiry = expiry;
    unsigned persistent = expiry != 0;
    if (persistent != s->counted) {
        s->counted = persistent;
        atomic_fetch_add_explicit(&s->w->srv->persistent_sessions, persistent ? 1 : (uint64_t)-1,
                                  memory_order_relaxed);
    }
}

sess_t *sess_new(worker_t *w, const uint8_t *client_id, uint16_t len, uint32_t expiry)
{
    int cls = sess_slab_class(len);
    sess_t *s = cls >= 0 ? slab_alloc(&w->srv->sess_slab[cls]) : an_calloc(1, sess_alloc_size(len));
    s->sid = atomic_fetch_add(&w->srv->next_sid, 1);
    s->w = w;
    sess_set_expiry(s, expiry);
    s->next_pid = 1;
    s->client_id_len = len;
    memcpy(s->client_id, client_id, len);
    s->client_id[len] = '\0';
    sess_table_add(&w->by_id, s);
    sess_table_add(&w->by_sid, s);
    if (w->srv->homes) /* made where a moved one lived: the table keeps saying so */
        migrate_home_claim(w->srv, s);
    return s;
}

/* Spare sess_ext_t kept by a worker (a spare links the next through its
 * `s`): a QoS 1 subscriber taking one message at a time takes and gives
 * back one without malloc; past EXT_SPARES they go back to malloc. */
#define EXT_SPARES 64

sess_ext_t *sess_ext(sess_t *s)
{
    if (s->x == NULL) {
        worker_t *w = s->w;
        sess_ext_t *x = w->ext_spare;
        if (x != NULL) {
            w->ext_spare = (sess_ext_t *)x->s;
            w->ext_spares--;
            memset(x, 0, sizeof(*x));
        } else {
            x = an_calloc(1, sizeof(*x));
        }
        tw_timer_init(&x->timer, sess_on_timer);
        x->s = s;
        s->x = x;
    }
    return s->x;
}

/* Give s->x back when nothing is in it (its timer stopped): after a QoS 1
 * broadcast every session would otherwise keep one, ~96 B a device, among
 * the freed inflight rings (a heap malloc cannot give back, issue 20). */
static void ext_release_if_idle(sess_t *s)
{
    sess_ext_t *x = s->x;
    if (x == NULL || x->subs_idx || x->qos2_in || x->will || x->owner || x->expire_at ||
        x->timer_kind != SESS_TIMER_NONE || tw_pending(&x->timer))
        return;
    s->x = NULL;
    worker_t *w = s->w;
    if (w->ext_spares < EXT_SPARES) {
        x->s = (sess_t *)w->ext_spare;
        w->ext_spare = x;
        w->ext_spares++;
    } else {
        free(x);
    }
}

void sess_ext_spares_free(worker_t *w)
{
    while (w->ext_spare) {
        sess_ext_t *x = w->ext_spare;
        w->ext_spare = (sess_ext_t *)x->s;
        free(x);
    }
    w->ext_spares = 0;
}

/* Disarm the session's timer, if it has one. */
static void timer_stop(sess_t *s)
{
    if (s->x == NULL)
        return;
    tw_del(&s->w->tw, &s->x->timer);
    s->x->timer_kind = SESS_TIMER_NONE;
}

static int has_will(const sess_t *s)
{
    return s->x && s->x->will;
}

static void publish_pending_will(worker_t *w, sess_t *s)
{
    if (!has_will(s))
        return;
    msg_t *will = s->x->will;
    s->x->will = NULL;
    router_publish(w, will, NULL);
    msg_unref(&will);
}

static void drop_pending_will(sess_t *s)
{
    if (has_will(s))
        msg_unref(&s->x->will);
}

/* Fill sub for a filter of len bytes: the trie's copy (key, from
 * trie_exact_key), or a copy of its own from the slab of its size. */
static void sub_init(server_t *srv, sess_sub_t *sub, const uint8_t *filter, uint16_t len,
                     const uint8_t *key)
{
    memset(sub, 0, sizeof(*sub)); /* acl: set by sess_acl_subscribed, or judged at attach */
    sub->len = len;
    sub->by_ref = key != NULL;
    if (key) {
        sub->filter = key;
    } else {
        int cls = sess_sub_slab_class(len);
        uint8_t *f = cls >= 0 ? slab_alloc(&srv->sub_slab[cls]) : an_malloc(len ? len : 1);
        memcpy(f, filter, len);
        sub->filter = f;
    }
}

static void sub_release(server_t *srv, sess_sub_t *sub)
{
    if (sub->by_ref)
        return;
    int cls = sess_sub_slab_class(sub->len);
    if (cls >= 0)
        slab_free(&srv->sub_slab[cls], (void *)sub->filter);
    else
        free((void *)sub->filter);
}

/* The session's array of subscriptions.  Its capacity is implied by nsubs
 * (a power of two, at least 2: subs_cap), and while it is at most 8
 * subscriptions it is a chunk of the subscription slabs (a device's two
 * take 32 bytes where two pointers and two allocations took 48), larger
 * ones malloc'd.  So that the capacity stays implied, an unsubscribe that
 * halves it moves the array to the smaller size (subscribing is not on
 * the message path). */
static uint32_t subs_cap(uint32_t n)
{
    uint32_t c = 2;
    while (c < n)
        c *= 2;
    return n ? c : 0;
}

static int subs_class(uint32_t cap)
{
    return sess_sub_slab_class((size_t)cap * sizeof(sess_sub_t));
}

/* Move the first n of a (capacity ocap, or NULL) to an array of capacity
 * cap (0: none); returns it. */
static sess_sub_t *subs_resize(server_t *srv, sess_sub_t *a, uint32_t n, uint32_t ocap,
                               uint32_t cap)
{
    sess_sub_t *na = NULL;
    if (cap) {
        int cls = subs_class(cap);
        na = cls >= 0 ? slab_alloc(&srv->sub_slab[cls]) : an_malloc(cap * sizeof(*na));
        if (n)
            memcpy(na, a, n * sizeof(*na));
    }
    if (a) {
        int cls = subs_class(ocap);
        if (cls >= 0)
            slab_free(&srv->sub_slab[cls], a);
        else
            free(a);
    }
    return na;
}

/* Remove one subscription from the trie or its shared group; trie write
 * lock held. */
static void unroute(worker_t *w, sess_t *s, const uint8_t *f, uint16_t len)
{
    const uint8_t *group, *real;
    size_t gl, rl;
    if (mqtt_shared_filter_parse(f, len, &group, &gl, &real, &rl) == 1)
        shared_leave(w->srv->trie, &w->srv->groups, group, gl, real, rl, s->sid);
    else
        trie_remove(w->srv->trie, f, len, s->sid);
}

void sess_destroy(worker_t *w, sess_t *s)
{
    if (s->ep) {
        /* first, while the session is whole: its endpoint must not detach
         * what is being freed */
        endpoint_t *ep = s->ep;
        s->ep = NULL;
        ep_close(ep, EP_CLOSE_SESSION_ENDED, "session ended");
    }
    if (s->nsubs) {
        /* a filter kept by reference is gone with its route: each is read
         * once, before its own unroute */
        pthread_rwlock_wrlock(&w->srv->trie_lock);
        for (uint32_t i = 0; i < s->nsubs; i++)
            unroute(w, s, s->subs[i].filter, s->subs[i].len);
        pthread_rwlock_unlock(&w->srv->trie_lock);
    }
    for (uint32_t i = 0; i < s->nsubs; i++)
        sub_release(w->srv, &s->subs[i]);
    s->subs = subs_resize(w->srv, s->subs, 0, subs_cap(s->nsubs), 0);
    s->nsubs = 0;
    if (s->x)
        subidx_free(&s->x->subs_idx);
    persist_session_drop(w, s);
    sess_set_expiry(s, 0);
    sq_clear(&s->inflight);
    sq_clear(&s->queue);
    timer_stop(s);
    sess_table_del(&w->by_id, s);
    sess_table_del(&w->by_sid, s);
    if (s->moved) /* its id homes by hash again (migrate.h) */
        migrate_home_drop(w->srv, s);
    publish_pending_will(w, s); /* [MQTT5 3.1.3.2.2] at the latest when the session ends */
    if (s->x) {
        free(s->x->owner);
        free(s->x->qos2_in);
        subidx_free(&s->x->subs_idx);
    }
    free(s->x);
    int cls = sess_slab_class(s->client_id_len);
    if (cls >= 0)
        slab_free(&w->srv->sess_slab[cls], s);
    else
        free(s);
}

void sess_free_detached(sess_t *s)
{
    for (uint32_t i = 0; i < s->nsubs; i++)
        sub_release(s->w->srv, &s->subs[i]); /* from slabs: free() would not do */
    s->subs = subs_resize(s->w->srv, s->subs, 0, subs_cap(s->nsubs), 0);
    sess_set_expiry(s, 0);
    sq_clear(&s->inflight);
    sq_clear(&s->queue);
    if (s->x) {
        drop_pending_will(s);
        free(s->x->owner);
        free(s->x->qos2_in);
        subidx_free(&s->x->subs_idx);
    }
    free(s->x);
    int cls = sess_slab_class(s->client_id_len);
    if (cls >= 0)
        slab_free(&s->w->srv->sess_slab[cls], s);
    else
        free(s);
}

/* ---- sending ------------------------------------------------------------ */

/* The stored copy of an entry (persist.h): gone, or in its new state. */
static void entry_forget(sess_t *s, const sq_entry_t *e)
{
    if (e->seq)
        persist_queue_del(s->w, s->client_id, s->client_id_len, e->seq);
}

static void entry_record(sess_t *s, const sq_entry_t *e)
{
    if (e->seq)
        persist_queue_put(s->w, s->client_id, s->client_id_len, e->seq, e->m, e->qos, e->retain,
                          e->state, e->pid);
}

static uint16_t alloc_pid(sess_t *s)
{
    for (;;) {
        uint16_t pid = s->next_pid++;
        if (s->next_pid == 0)
            s->next_pid = 1;
        int used = 0;
        for (uint32_t i = 0; i < sq_len(&s->inflight) && !used; i++)
            used = sq_at(&s->inflight, i)->pid == pid;
        if (!used)
            return pid;
    }
}

static void arm_retry(sess_t *s)
{
    /* only where the endpoint's protocol wants it: MQTT 5 forbids
     * resending while connected [MQTT5-4.4.0-1] */
    if (s->ep && (s->ep->flags & EP_F_RETRY) && sq_len(&s->inflight) &&
        !(s->x && tw_pending(&s->x->timer))) {
        sess_ext_t *x = sess_ext(s);
        x->timer_kind = SESS_TIMER_RETRY;
        tw_add(&s->w->tw, &x->timer,
               s->w->now + (uint64_t)server_live(s->w->srv)->retry_interval * 1000u);
    }
}

#define MAX_SUBIDS 16

/* Subscription identifiers of this session's subscriptions that match the
 * topic [MQTT5-3.3.4-3]; computed when sending, so queued entries need not
 * carry them. */
static uint32_t match_subids(const sess_t *s, const msg_t *m, uint32_t *ids)
{
    uint32_t n = 0;
    if (!s->has_subids)
        return 0;
    for (uint32_t i = 0; i < s->nsubs && n < MAX_SUBIDS; i++) {
        const sess_sub_t *sub = &s->subs[i];
        if (sub->subid == 0)
            continue;
        const uint8_t *f = sess_sub_filter(sub), *real;
        size_t fl = sub->len, rl;
        if (mqtt_shared_filter_parse(f, fl, NULL, NULL, &real, &rl) == 1) {
            f = real;
            fl = rl;
        }
        if (topic_matches(f, fl, msg_topic(m), m->topic_len))
            ids[n++] = sub->subid;
    }
    return n;
}

void sess_event_client(const sess_t *s, event_client_t *out, char *peer, size_t size)
{
    if (s->ep) {
        ep_info_t info;
        ep_describe(s->ep, &info, peer, size);
        *out = info.client;
    } else {
        *out = (event_client_t){0};
    }
    out->client_id = s->client_id;
}

void sess_event_dropped(sess_t *s, const msg_t *m, uint8_t qos, event_drop_reason_t reason)
{
    char peer[64];
    event_dropped_t ev = {
        .msg = m, .topic = msg_topic(m), .topic_len = m->topic_len, .qos = qos, .reason = reason};
    sess_event_client(s, &ev.client, peer, sizeof(peer));
    event_emit(s->w, &s->w->srv->events, EVENT_MESSAGE_DROPPED, &ev);
}

/* ep_deliver, then message_delivered for a first send (not for a
 * resend with DUP).  Out of line: send_publish stays a tail call. */
static __attribute__((noinline)) int send_publish_event(sess_t *s, msg_t *m, uint8_t qos,
                                                        uint8_t retain, uint8_t dup, uint16_t pid,
                                                        const uint32_t *ids, uint32_t n)
{
    int rc = ep_deliver(s->ep, m, qos, retain, dup, pid, ids, n);
    if (rc == 0 && !dup) {
        char peer[64];
        event_delivered_t ev = {.msg = m, .packet_id = pid, .qos = qos, .retain = retain};
        sess_event_client(s, &ev.client, peer, sizeof(peer));
        event_emit(s->w, &s->w->srv->events, EVENT_MESSAGE_DELIVERED, &ev);
    }
    return rc;
}

/* Every PUBLISH to the client leaves through here. */
static int send_publish(sess_t *s, msg_t *m, uint8_t qos, uint8_t retain, uint8_t dup, uint16_t pid)
{
    uint32_t ids[MAX_SUBIDS];
    uint32_t n = (s->ep->flags & EP_F_SUBIDS) ? match_subids(s, m, ids) : 0;
    if (event_wanted_msg(s->w->srv, EVENT_MESSAGE_DELIVERED, m))
        return send_publish_event(s, m, qos, retain, dup, pid, ids, n);
    return ep_deliver(s->ep, m, qos, retain, dup, pid, ids, n);
}

static void send_entry(sess_t *s, sq_entry_t *e, uint8_t dup)
{
    e->sent_ms = s->w->now;
    if (e->state == SQ_WAIT_PUBCOMP)
        ep_ack(s->ep, EP_ACK_PUBREL, e->pid, 0, 0);
    else
        send_publish(s, e->m, e->qos, e->retain, dup, e->pid);
}

/* The window: our max_inflight, and the endpoint's (MQTT: the client's
 * Receive Maximum). */
static uint32_t window(const sess_t *s)
{
    return AN_MIN((uint32_t)server_live(s->w->srv)->max_inflight, (uint32_t)s->ep->receive_max);
}

/* Put a QoS 1/2 message in flight and send it; the window has room. */
static void send_inflight(sess_t *s, msg_t *m, uint8_t qos, uint8_t retain, uint8_t shared,
                          uint64_t seq)
{
    sq_entry_t e = {.m = m,
                    .qos = qos,
                    .retain = retain,
                    .shared = shared,
                    .seq = seq,
                    .pid = alloc_pid(s),
                    .state = qos == 1 ? SQ_WAIT_PUBACK : SQ_WAIT_PUBREC};
    sq_push(&s->inflight, &e);
    if (qos == 2 && seq && persist_on(s->w)) {
        /* the packet id is stored before the PUBLISH leaves, so after a
         * crash the same PUBLISH is resent (DUP) and never taken by the
         * client for a new message; QoS 1 sends are not recorded */
        entry_record(s, &e);
        sq_at(&s->inflight, sq_len(&s->inflight) - 1)->sent_ms = s->w->now;
        persist_hold_send(s->w, s->sid, e.pid);
    } else {
        send_entry(s, sq_at(&s->inflight, sq_len(&s->inflight) - 1), 0);
    }
    arm_retry(s);
}

static uint64_t msg_bytes(const msg_t *m)
{
    return (uint64_t)m->topic_len + m->props_len + m->payload_len;
}

/* Make room in a full queue by dropping its oldest QoS 0 message.  Returns
 * 1 when one was dropped. */
static int drop_oldest_qos0(sess_t *s)
{
    for (uint32_t i = 0; i < sq_len(&s->queue); i++) {
        sq_entry_t *e = sq_at(&s->queue, i);
        if (e->qos == 0) {
            if (event_wanted(s->w->srv, EVENT_MESSAGE_DROPPED))
                sess_event_dropped(s, e->m, 0, EVENT_DROP_QUEUE_FULL);
            sq_bytes_sub(&s->queue, msg_bytes(e->m));
            msg_unref(&e->m);
            sq_remove(&s->queue, i);
            return 1;
        }
    }
    return 0;
}

static int queue_full(const sess_t *s, uint64_t more)
{
    const conf_t *cf = server_live(s->w->srv);
    return sq_len(&s->queue) >= cf->max_queued ||
           (cf->max_queued_bytes && sess_queued_bytes(s) + more > cf->max_queued_bytes);
}

/* Back-pressure (limits.publisher_backpressure): a connected subscriber
 * whose queue grew beyond the bound raises SESS_F_BACKLOG, which publishers
 * routing to it see (router.c) and answer by pausing their reads (proto.c);
 * it is lowered once the queue is back under half the bound, or when the
 * client goes (an offline session's queue pauses nobody).  A hysteresis of
 * half the bound keeps the flag from flapping at every message. */
static void backlog_check(sess_t *s)
{
    uint32_t bound = server_live(s->w->srv)->publisher_backpressure;
    if (bound == 0)
        return;
    uint32_t n = sq_len(&s->queue);
    int on = sess_flag(s, SESS_F_BACKLOG);
    if (!on && s->ep && n > bound)
        sess_set_flag(s, SESS_F_BACKLOG, 1);
    else if (on && (!s->ep || n <= bound / 2))
        sess_set_flag(s, SESS_F_BACKLOG, 0);
}

/* A message the client said it cannot take [MQTT5-3.1.2-25]: skipped as if
 * sent. */
static int too_big_for_client(const sess_t *s, const msg_t *m, uint8_t qos)
{
    uint32_t max = s->ep->max_packet;
    if (max == 0)
        return 0;
    size_t props = m->props_len + 5 + 3 + (s->has_subids ? 5u * MAX_SUBIDS : 0);
    return mqtt_publish_v5_size(m->topic_len, qos, props, m->payload_len) > max &&
           mqtt_publish_v5_size(m->topic_len, qos, m->props_len, m->payload_len) > max;
}

/* Move queued messages into the window while it has room. */
static void pump(sess_t *s)
{
    while (s->ep && sq_len(&s->queue)) {
        sq_entry_t *head = sq_at(&s->queue, 0);
        if (head->qos > 0 && sq_len(&s->inflight) >= window(s))
            break;
        sq_bytes_sub(&s->queue, msg_bytes(head->m)); /* while the ring is there */
        sq_entry_t e;
        sq_pop(&s->queue, &e);
        if (sess_flag(s, SESS_F_FULL) && !queue_full(s, 0))
            sess_set_flag(s, SESS_F_FULL, 0);
        backlog_check(s);
        int expired = msg_expired(e.m, s->w->now);
        if (expired || too_big_for_client(s, e.m, e.qos)) {
            STAT_ADD(s->w->stats.msgs_dropped, 1);
            if (event_wanted(s->w->srv, EVENT_MESSAGE_DROPPED))
                sess_event_dropped(s, e.m, e.qos,
                                   expired ? EVENT_DROP_EXPIRED : EVENT_DROP_TOO_LARGE);
            entry_forget(s, &e);
            msg_unref(&e.m);
        } else if (e.qos == 0) {
            if (send_publish(s, e.m, 0, e.retain, 0, 0) < 0) {
                STAT_ADD(s->w->stats.msgs_dropped, 1);
                if (event_wanted(s->w->srv, EVENT_MESSAGE_DROPPED))
                    sess_event_dropped(s, e.m, 0, EVENT_DROP_QOS0_SLOW);
            }
            msg_unref(&e.m);
        } else {
            send_inflight(s, e.m, e.qos, e.retain, e.shared, e.seq);
        }
    }
}

void sess_deliver(worker_t *w, sess_t *s, msg_t *m, uint8_t qos, uint8_t flags)
{
    endpoint_t *ep = s->ep;
    uint8_t retain = (flags & DLV_RETAIN) ? 1 : 0, shared = (flags & DLV_SHARED) ? 1 : 0;
    uint64_t seq = (flags & DLV_DURABLE) ? m->store_seq : 0;
    if (unlikely(s->adopt_dedup) && w->srv->dedup_hook &&
        w->srv->dedup_hook(w, s, m, w->srv->dedup_user)) {
        persist_queue_del(w, s->client_id, s->client_id_len, seq); /* a copy it has */
        return;
    }
    if (msg_expired(m, w->now) || (ep && !sess_acl_may_read(w, s, m))) {
        /* offline, the ACL waits for the client that resumes the session */
        if (event_wanted(w->srv, EVENT_MESSAGE_DROPPED))
            sess_event_dropped(s, m, qos,
                               msg_expired(m, w->now) ? EVENT_DROP_EXPIRED : EVENT_DROP_ACL_DENIED);
        persist_queue_del(w, s->client_id, s->client_id_len, seq);
        return;
    }
    if (ep && sq_len(&s->queue) == 0) {
        if (too_big_for_client(s, m, qos)) {
            STAT_ADD(w->stats.msgs_dropped, 1);
            if (event_wanted(w->srv, EVENT_MESSAGE_DROPPED))
                sess_event_dropped(s, m, qos, EVENT_DROP_TOO_LARGE);
            persist_queue_del(w, s->client_id, s->client_id_len, seq);
            return;
        }
        if (qos == 0) {
            if (atomic_load_explicit(&w->srv->over_high_water, memory_order_relaxed) &&
                ep_backlog(ep) > 65536) {
                /* memory is short and this subscriber is behind: QoS 0 goes */
                STAT_ADD(w->stats.msgs_dropped, 1);
                if (event_wanted(w->srv, EVENT_MESSAGE_DROPPED))
                    sess_event_dropped(s, m, 0, EVENT_DROP_QOS0_SLOW);
                return;
            }
            if (send_publish(s, m, 0, retain, 0, 0) < 0) {
                STAT_ADD(w->stats.msgs_dropped, 1);
                if (event_wanted(w->srv, EVENT_MESSAGE_DROPPED))
                    sess_event_dropped(s, m, 0, EVENT_DROP_QOS0_SLOW);
            }
            return;
        }
        if (sq_len(&s->inflight) < window(s)) {
            send_inflight(s, msg_ref(m), qos, retain, shared, seq);
            return;
        }
    }
    if (ep == NULL && qos == 0) {
        STAT_ADD(w->stats.msgs_dropped, 1);
        if (event_wanted(w->srv, EVENT_MESSAGE_DROPPED))
            sess_event_dropped(s, m, 0, EVENT_DROP_QOS0_OFFLINE);
        return;
    }
    uint64_t bytes = msg_bytes(m);
    while (queue_full(s, bytes) && drop_oldest_qos0(s)) {
        STAT_ADD(w->stats.msgs_dropped, 1);
        STAT_ADD(w->stats.dropped_queue_full, 1);
    }
    if (queue_full(s, bytes)) {
        sess_set_flag(s, SESS_F_FULL, 1);
        STAT_ADD(w->stats.msgs_dropped, 1);
        STAT_ADD(w->stats.dropped_queue_full, 1);
        /* one line per worker per second at most: a full queue under load
         * would otherwise log every message */
        if (w->now >= w->qfull_logged_at + 1000u) {
            w->qfull_logged_at = w->now;
            log_fields_t f = {
                .event = "messages_dropped", .client_id = s->client_id, .reason = "queue_full"};
            log_ev(AN_LOG_INFO, &f, "%s: queue full (%u messages, %llu bytes): messages dropped",
                   s->client_id, sq_len(&s->queue), (unsigned long long)sess_queued_bytes(s));
        }
        if (event_wanted(w->srv, EVENT_MESSAGE_DROPPED))
            sess_event_dropped(s, m, qos, EVENT_DROP_QUEUE_FULL);
        persist_queue_del(w, s->client_id, s->client_id_len, seq);
        return;
    }
    sq_entry_t e = {.m = msg_ref(m),
                    .qos = qos,
                    .retain = retain,
                    .shared = shared,
                    .state = SQ_QUEUED,
                    .seq = seq};
    sq_push(&s->queue, &e);
    sq_bytes_add(&s->queue, bytes);
    if (queue_full(s, 0))
        sess_set_flag(s, SESS_F_FULL, 1);
    backlog_check(s);
}

void sess_attach(sess_t *s, endpoint_t *ep)
{
    s->ep = ep;
    s->connected_at = (uint32_t)an_wall_s();
    timer_stop(s);
    drop_pending_will(s); /* back before the will delay: no will */
    /* [MQTT-4.4.0-1] resend unacknowledged PUBLISH and PUBREL, in order */
    for (uint32_t i = 0; i < sq_len(&s->inflight); i++)
        send_entry(s, sq_at(&s->inflight, i), 1);
    arm_retry(s);
    pump(s);
}

/* Failover: unacknowledged messages that came through a shared
 * subscription go to another member of the group [MQTT5 4.8.2]. */
static void reshare(worker_t *w, sess_t *s, sq_t *q, int queued)
{
    for (uint32_t i = 0; i < sq_len(q);) {
        sq_entry_t *e = sq_at(q, i);
        if (e->shared && e->m && e->state != SQ_WAIT_PUBCOMP &&
            router_reshare(w, s, e->m, e->qos)) {
            if (queued)
                sq_bytes_sub(q, msg_bytes(e->m));
            msg_unref(&e->m);
            sq_remove(q, i);
            continue;
        }
        i++;
    }
}

static void arm_expiry(worker_t *w, sess_t *s)
{
    uint64_t at = UINT64_MAX;
    if (s->expiry != SESS_NEVER)
        at = sess_expire_at(s);
    if (has_will(s) && s->x->will_at < at)
        at = s->x->will_at;
    if (at == UINT64_MAX)
        return;
    sess_ext_t *x = sess_ext(s);
    x->timer_kind = SESS_TIMER_EXPIRY;
    tw_add(&w->tw, &x->timer, at);
}

sess_t *sess_restore(worker_t *w, const uint8_t *client_id, uint16_t len, uint32_t expiry,
                     uint64_t expire_at, uint16_t next_pid)
{
    sess_t *s = sess_new(w, client_id, len, expiry);
    s->next_pid = next_pid ? next_pid : 1;
    if (expiry != 0 && expiry != SESS_NEVER)
        sess_ext(s)->expire_at = expire_at;
    arm_expiry(w, s);
    return s;
}

void sess_delay_will(sess_t *s, msg_t *will, uint32_t delay)
{
    drop_pending_will(s);
    sess_ext(s)->will = will;
    s->x->will_at = s->w->now + (uint64_t)delay * 1000u;
}

msg_t *sess_will_take(sess_t *s)
{
    if (!has_will(s))
        return NULL;
    msg_t *will = s->x->will;
    s->x->will = NULL;
    return will;
}

void sess_take_over(sess_t *s, const char *why)
{
    endpoint_t *ep = s->ep;
    if (ep == NULL)
        return;
    s->ep = NULL;
    timer_stop(s); /* a retry has nobody to go to */
    ep_close(ep, EP_CLOSE_TAKEN_OVER, why);
}

void sess_detach(worker_t *w, sess_t *s)
{
    s->ep = NULL;
    backlog_check(s); /* offline: nobody waits for this client */
    timer_stop(s);
    if (s->nsubs) {
        reshare(w, s, &s->inflight, 0);
        reshare(w, s, &s->queue, 1);
    }
    if (s->expiry == 0) {
        sess_destroy(w, s);
        return;
    }
    if (s->expiry != SESS_NEVER)
        sess_ext(s)->expire_at = w->now + (uint64_t)s->expiry * 1000u;
    persist_session_update(w, s); /* with its deadline */
    arm_expiry(w, s);
}

/* ---- acknowledgements ------------------------------------------------- */

static int find_inflight(sess_t *s, uint16_t pid, uint8_t state)
{
    for (uint32_t i = 0; i < sq_len(&s->inflight); i++) {
        sq_entry_t *e = sq_at(&s->inflight, i);
        if (e->pid == pid)
            return e->state == state ? (int)i : -1;
    }
    return -1;
}

/* message_acked: the subscriber answered the PUBLISH in e (PUBACK, PUBREC). */
static void emit_acked(sess_t *s, const sq_entry_t *e, uint8_t type, uint8_t reason)
{
    char peer[64];
    event_acked_t ev = {.msg = e->m,
                        .packet_id = e->pid,
                        .qos = e->qos,
                        .packet_type = type,
                        .reason_code = reason};
    sess_event_client(s, &ev.client, peer, sizeof(peer));
    event_emit(s->w, &s->w->srv->events, EVENT_MESSAGE_ACKED, &ev);
}

static int complete(sess_t *s, uint16_t pid, uint8_t state, uint8_t reason)
{
    int i = find_inflight(s, pid, state);
    if (i < 0)
        return -1;
    if (state != SQ_WAIT_PUBCOMP &&
        event_wanted_msg(s->w->srv, EVENT_MESSAGE_ACKED, sq_at(&s->inflight, (uint32_t)i)->m))
        emit_acked(s, sq_at(&s->inflight, (uint32_t)i),
                   state == SQ_WAIT_PUBACK ? MQTT_PUBACK : MQTT_PUBREC, reason);
    entry_forget(s, sq_at(&s->inflight, (uint32_t)i));
    msg_unref(&sq_at(&s->inflight, (uint32_t)i)->m);
    sq_remove(&s->inflight, (uint32_t)i);
    if (sq_len(&s->inflight) == 0 && s->x && s->x->timer_kind == SESS_TIMER_RETRY) {
        timer_stop(s);
        ext_release_if_idle(s);
    }
    pump(s);
    return 0;
}

int sess_on_puback(sess_t *s, uint16_t pid, uint8_t reason)
{
    return complete(s, pid, SQ_WAIT_PUBACK, reason);
}

int sess_on_pubcomp(sess_t *s, uint16_t pid)
{
    return complete(s, pid, SQ_WAIT_PUBCOMP, 0);
}

int sess_on_pubrec(sess_t *s, uint16_t pid, uint8_t reason)
{
    if (reason >= 0x80) /* [MQTT5 4.3.3] a failed PUBREC ends the exchange */
        return complete(s, pid, SQ_WAIT_PUBREC, reason);
    int i = find_inflight(s, pid, SQ_WAIT_PUBREC);
    if (i < 0) {
        /* a PUBREC resent after we moved on: answer it again */
        if (find_inflight(s, pid, SQ_WAIT_PUBCOMP) >= 0) {
            ep_ack(s->ep, EP_ACK_PUBREL, pid, 0, 0);
            return 0;
        }
        return -1;
    }
    sq_entry_t *e = sq_at(&s->inflight, (uint32_t)i);
    if (event_wanted_msg(s->w->srv, EVENT_MESSAGE_ACKED, e->m))
        emit_acked(s, e, MQTT_PUBREC, reason);
    msg_unref(&e->m); /* the message is delivered; only PUBREL is left */
    e->state = SQ_WAIT_PUBCOMP;
    if (e->seq && persist_on(s->w)) {
        entry_record(s, e); /* PUBREL only once "delivered" is stored */
        e->sent_ms = s->w->now;
        persist_hold_send(s->w, s->sid, pid);
        return 0;
    }
    send_entry(s, e, 0);
    return 0;
}

void sess_send_held(sess_t *s, uint16_t pid)
{
    if (s->ep == NULL)
        return;
    for (uint32_t i = 0; i < sq_len(&s->inflight); i++) {
        sq_entry_t *e = sq_at(&s->inflight, i);
        if (e->pid == pid && e->qos == 2) {
            send_entry(s, e, 0);
            return;
        }
    }
}

int sess_qos2_in_known(const sess_t *s, uint16_t pid)
{
    for (uint32_t i = 0; i < sess_qos2_in_count(s); i++)
        if (s->x->qos2_in->id[i] == pid)
            return 1;
    return 0;
}

int sess_qos2_in_begin(sess_t *s, uint16_t pid)
{
    uint32_t n = sess_qos2_in_count(s);
    for (uint32_t i = 0; i < n; i++)
        if (s->x->qos2_in->id[i] == pid)
            return 0;
    sess_ext_t *x = sess_ext(s);
    uint32_t cap = implied_growth(n, 4);
    if (cap) {
        x->qos2_in = an_realloc(x->qos2_in, sizeof(sess_qos2_t) + cap * sizeof(uint16_t));
        x->qos2_in->n = n;
    }
    x->qos2_in->id[x->qos2_in->n++] = pid;
    return 1;
}

int sess_qos2_in_end(sess_t *s, uint16_t pid)
{
    int found = 0;
    sess_qos2_t *q = s->x ? s->x->qos2_in : NULL;
    for (uint32_t i = 0; q && i < q->n; i++)
        if (q->id[i] == pid) {
            q->id[i] = q->id[--q->n];
            found = 1;
            break;
        }
    if (q && q->n == 0) {
        free(q);
        s->x->qos2_in = NULL;
        ext_release_if_idle(s);
    }
    return found;
}

/* ---- subscriptions ---------------------------------------------------- */

static long find_sub(const sess_t *s, const uint8_t *filter, uint16_t len)
{
    return subidx_find(s->x ? s->x->subs_idx : NULL, s->subs, s->nsubs, filter, len);
}

int sess_has_sub(const sess_t *s, const uint8_t *filter, uint16_t len)
{
    return find_sub(s, filter, len) >= 0;
}

sess_sub_t *sess_sub_find(const sess_t *s, const uint8_t *filter, uint16_t len)
{
    int i = find_sub(s, filter, len);
    return i < 0 ? NULL : &s->subs[i];
}

int sess_subscribe(worker_t *w, sess_t *s, const uint8_t *filter, uint16_t len, uint8_t opts,
                   uint32_t subid)
{
    sub_ref_t ref = {.sid = s->sid,
                     .subid = subid,
                     .owner = (uint16_t)w->id,
                     .opts = (uint8_t)(opts & 0x3f),
                     .sess = s};
    long i = find_sub(s, filter, len);
    int added = i < 0;
    if (i >= 0) {
        s->subs[i].opts = opts;
        s->subs[i].subid = subid;
    }
    if (subid)
        s->has_subids = 1;
    const uint8_t *group, *real, *key = NULL;
    size_t gl, rl;
    pthread_rwlock_wrlock(&w->srv->trie_lock);
    int rc = 0;
    if (mqtt_shared_filter_parse(filter, len, &group, &gl, &real, &rl) == 1) {
        shared_join(w->srv->trie, &w->srv->groups, group, gl, real, rl, &ref);
    } else {
        rc = trie_insert(w->srv->trie, filter, len, &ref);
        if (added && rc >= 0)
            key = trie_exact_key(w->srv->trie, filter, len); /* the filter kept once */
    }
    pthread_rwlock_unlock(&w->srv->trie_lock);
    if (rc < 0) {
        log_error("%s: out of memory adding a subscription", s->client_id);
        abort();
    }
    if (added) {
        uint32_t cap = implied_growth(s->nsubs, 2);
        if (cap)
            s->subs = subs_resize(w->srv, s->subs, s->nsubs, subs_cap(s->nsubs), cap);
        sess_sub_t *sub = &s->subs[s->nsubs++];
        sub_init(w->srv, sub, filter, len, key);
        sub->opts = opts;
        sub->subid = subid;
        if (s->nsubs > SUBIDX_MIN)
            subidx_added(&sess_ext(s)->subs_idx, s->subs, s->nsubs);
    }
    return added;
}

int sess_unsubscribe(worker_t *w, sess_t *s, const uint8_t *filter, uint16_t len)
{
    long i = find_sub(s, filter, len);
    if (i < 0)
        return 0;
    if (s->x) /* first: it reads the filter, which may go with the route */
        subidx_removing(&s->x->subs_idx, s->subs, s->nsubs, (uint32_t)i);
    pthread_rwlock_wrlock(&w->srv->trie_lock);
    unroute(w, s, filter, len);
    pthread_rwlock_unlock(&w->srv->trie_lock);
    sub_release(w->srv, &s->subs[i]);
    s->subs[i] = s->subs[--s->nsubs];
    uint32_t cap = subs_cap(s->nsubs), ocap = subs_cap(s->nsubs + 1);
    if (cap < ocap)
        s->subs = subs_resize(w->srv, s->subs, s->nsubs, ocap, cap);
    return 1;
}

void sess_subscriptions_saved(worker_t *w, sess_t *s)
{
    if (s->stored)
        persist_session_update(w, s);
}

/* ---- timers ---------------------------------------------------------- */

void sess_on_timer(tw_timer_t *t)
{
    sess_ext_t *x = container_of(t, sess_ext_t, timer);
    sess_t *s = x->s;
    worker_t *w = s->w;
    if (x->timer_kind == SESS_TIMER_EXPIRY) {
        if (has_will(s) && w->now >= s->x->will_at)
            publish_pending_will(w, s); /* the Will Delay Interval passed */
        if (s->expiry != SESS_NEVER && w->now >= x->expire_at) {
            log_fields_t f = {.event = "session_expired", .client_id = s->client_id};
            log_ev(AN_LOG_INFO, &f, "%s: session expired", s->client_id);
            if (event_wanted(w->srv, EVENT_SESSION_EXPIRED)) {
                event_session_expired_t ev = {.client = {.client_id = s->client_id}};
                event_emit(w, &w->srv->events, EVENT_SESSION_EXPIRED, &ev);
            }
            sess_destroy(w, s);
            return;
        }
        arm_expiry(w, s);
        return;
    }
    if (x->timer_kind != SESS_TIMER_RETRY || s->ep == NULL)
        return;
    uint64_t retry = (uint64_t)server_live(w->srv)->retry_interval * 1000u;
    uint64_t oldest = UINT64_MAX;
    for (uint32_t i = 0; i < sq_len(&s->inflight); i++) {
        sq_entry_t *e = sq_at(&s->inflight, i);
        if (e->sent_ms + retry <= w->now)
            send_entry(s, e, 1);
        if (e->sent_ms < oldest)
            oldest = e->sent_ms;
    }
    if (sq_len(&s->inflight))
        tw_add(&w->tw, &x->timer, oldest + retry);
    else
        x->timer_kind = SESS_TIMER_NONE;
}

void sess_timer_move_out(sess_t *s)
{
    if (s->x && s->x->timer_kind == SESS_TIMER_RETRY)
        tw_del(&s->w->tw, &s->x->timer);
}

void sess_timer_move_in(sess_t *s)
{
    if (s->x == NULL || s->x->timer_kind != SESS_TIMER_RETRY)
        return;
    /* the oldest unacknowledged message sets the time, as sess_on_timer */
    uint64_t oldest = s->w->now;
    for (uint32_t i = 0; i < sq_len(&s->inflight); i++)
        if (sq_at(&s->inflight, i)->sent_ms < oldest)
            oldest = sq_at(&s->inflight, i)->sent_ms;
    tw_add(&s->w->tw, &s->x->timer,
           oldest + (uint64_t)server_live(s->w->srv)->retry_interval * 1000u);
}

_Static_assert(offsetof(sess_t, client_id) <= 100, "sess_t grew: every idle client pays for it");
