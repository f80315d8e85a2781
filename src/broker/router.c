/* router.c -- fan a published message out to its subscribers (router.h).
 *
 * The trie is matched under its read lock into the worker's match vector,
 * and shared groups are resolved to one member each under the same lock;
 * nothing is delivered while the lock is held.  Overlapping subscriptions
 * of one session are merged by sorting the (few) matches by session id
 * when there is more than one, so each session gets the message once, at
 * the highest granted QoS -- except that a copy through a shared
 * subscription is separate from one through an ordinary subscription
 * [MQTT5 4.8.2].  Consumers and nodes have one id each, so they merge
 * the same way.
 *
 * Every match is handed to its owner in one place, dispatch(), through
 * srv->route_owners (router.h); the LOCAL and CONSUMER rows are here.
 * Consumers are linked on the server under the trie lock and freed only
 * with the server, so a match (or a held route) never points at a freed
 * consumer.
 */
#include "router.h"

#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "log.h"
#include "migrate.h"
#include "mqtt_codec.h"
#include "persist.h"
#include "retain.h"
#include "rbits.h"
#include "rbloom.h"
#include "rtab.h"
#include "sess.h"
#include "shared.h"
#include "store_rec.h"

typedef struct {
    worker_t *w;
    const msg_t *m;
    const sess_t *from;
} match_ctx_t;

/* A counter per worker, on its own cache line (one writer each). */
typedef struct {
    an_counter_t n;
    char pad[64 - sizeof(an_counter_t)];
} consumer_count_t;

typedef struct consumer_filter_s {
    struct consumer_filter_s *next;
    uint8_t qos;
    uint16_t len;
    char filter[]; /* NUL-terminated */
} consumer_filter_t;

struct router_consumer_s {
    server_t *srv;
    router_consumer_t *next; /* srv->consumers, under trie_lock */
    const consumer_ops_t *ops;
    void *user;
    char *name;
    consumer_filter_t *filters; /* under trie_lock */
    uint32_t nworkers;
    consumer_count_t *delivered; /* [nworkers] */
};

static void push(worker_t *w, const sub_ref_t *sub)
{
    if (w->nmatches == w->matches_cap) {
        w->matches_cap = w->matches_cap ? w->matches_cap * 2 : 64;
        w->matches = an_realloc(w->matches, w->matches_cap * sizeof(*w->matches));
    }
    w->matches[w->nmatches++] = *sub;
}

static void collect(void *ud, const sub_ref_t *sub)
{
    match_ctx_t *ctx = ud;
    worker_t *w = ctx->w;
    if (sub->opts & SUB_SHARED) {
        if (ctx->m->hops > 0)
            return; /* the publishing node picked: router_deliver_shared */
        sub_ref_t member;
        const sess_t *f = ctx->from;
        if (shared_pick(sub, w->srv->conf.shared_strategy, f ? (const uint8_t *)f->client_id : NULL,
                        f ? f->client_id_len : 0, msg_topic(ctx->m), ctx->m->topic_len, 0, &w->rng,
                        &member) == 0) {
            member.opts |= SUB_SHARED;
            push(w, &member);
        }
        return;
    }
    if ((sub->opts & MQTT_SUBOPT_NO_LOCAL) && ctx->from && sub->sid == ctx->from->sid)
        return; /* [MQTT5-3.8.3-3] not to the publisher's own subscription */
    push(w, sub);
}

static sub_ref_t node_ref(uint16_t idx, uint32_t tag);

/* Other nodes' exact routes, under the trie's read lock: the nodes with a
 * filter equal to m's topic in the exact table (rtab.h; or, after a 64-bit
 * collision, another one) and the nodes whose Bloom filter (rbloom.h) or
 * bit filter (rbits.h) may hold it join the matches (either may be a spurious forward: the node
 * drops it); merge_overlaps() then merges them with the same nodes' trie
 * matches (one sid per node). */
static void push_exact_nodes(worker_t *w, const msg_t *m)
{
    const server_t *srv = w->srv;
    uint64_t h = an_siphash(srv->route_key, msg_topic(m), m->topic_len);
    const rtab_t *t = srv->rtab;
    if (rtab_size(t) != 0) {
        size_t i = rtab_home(h, t->cap);
        for (int node; (node = rtab_next_node(t, h, &i)) >= 0;) {
            sub_ref_t r = node_ref((uint16_t)node, 0);
            push(w, &r);
        }
    }
    for (uint32_t i = 0; i < srv->rblooms.n; i++)
        if (rbloom_test(srv->rblooms.v[i].f, h)) {
            sub_ref_t r = node_ref(srv->rblooms.v[i].node, 0);
            push(w, &r);
        }
    for (uint32_t i = 0; i < srv->rbits.n; i++)
        if (rbits_test(srv->rbits.v[i].f, h)) {
            sub_ref_t r = node_ref(srv->rbits.v[i].node, 0);
            push(w, &r);
        }
}

static int by_sid(const void *a, const void *b)
{
    const sub_ref_t *x = a, *y = b;
    if (x->sid != y->sid)
        return x->sid < y->sid ? -1 : 1;
    return (x->opts & SUB_SHARED) - (y->opts & SUB_SHARED);
}

/* Sort and merge duplicates in place; returns the new count. */
static size_t merge_overlaps(sub_ref_t *v, size_t n)
{
    if (n < 2)
        return n;
    qsort(v, n, sizeof(*v), by_sid);
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        sub_ref_t *last = out ? &v[out - 1] : NULL;
        if (last && last->sid == v[i].sid && !(last->opts & SUB_SHARED) &&
            !(v[i].opts & SUB_SHARED)) {
            /* each shared group delivers its own copy [MQTT5 4.8.2] */
            uint8_t q = AN_MAX(last->opts & 3, v[i].opts & 3);
            last->opts =
                (uint8_t)((last->opts & ~3) | q | (v[i].opts & MQTT_SUBOPT_RETAIN_AS_PUBLISHED));
            continue;
        }
        v[out++] = v[i];
    }
    return out;
}

int router_deliver_local(worker_t *w, uint64_t sid, msg_t *m, uint8_t qos, uint8_t flags)
{
    sess_t *s = worker_find_sid(w, sid);
    if (s == NULL) { /* the session ended while the message travelled, or moved */
        if (unlikely(w->nfences != 0) && migrate_hand_stray(w, sid, m, qos, flags))
            return 0;
        return -1;
    }
    if (unlikely(s->fenced) && migrate_fence_hold(w, s, m, qos, flags))
        return 0;
    sess_deliver(w, s, m, qos, (uint8_t)(flags & ~DLV_HANDED));
    return 0;
}

/* WM_DELIVER: a message for one of this worker's sessions; the item holds
 * a reference. */
static void run_deliver(worker_t *w, inbox_item_t *it)
{
    msg_t *m = it->ptr;
    router_deliver_local(w, it->sid, m, it->qos, it->flags);
    msg_unref(&m);
}

static void drop_deliver(inbox_item_t *it)
{
    msg_t *m = it->ptr;
    msg_unref(&m);
}

/* The one place where a match meets its owner (router.h). */
static inline void dispatch(worker_t *w, uint8_t kind, uint64_t sid, uint16_t owner, msg_t *m,
                            uint8_t qos, uint8_t flags)
{
    const route_owner_kind_t *k = &w->srv->route_owners[kind & (ROUTE_OWNER_KINDS - 1)];
    if (likely(k->deliver != NULL))
        k->deliver(w, sid, owner, m, qos, flags, k->user);
}

/* Where the publisher's traffic goes (migrate.h): a delivery to a session
 * on worker `owner`. */
static inline void count_delivery(worker_t *w, uint16_t owner)
{
    if (owner == w->id) {
        w->dlv_local++;
    } else {
        if (w->dlv_cross++ == 0)
            w->dlv_to = owner;
        else if (owner != w->dlv_to)
            w->dlv_mixed = 1;
    }
}

/* ROUTE_OWNER_LOCAL: an MQTT session whose home is worker `owner`. */
static void deliver_session(worker_t *w, uint64_t sid, uint16_t owner, msg_t *m, uint8_t qos,
                            uint8_t flags, void *user)
{
    (void)user;
    count_delivery(w, owner);
    if (owner == w->id) {
        /* not here: maybe a subscriber moving in (migrate.h) whose
         * WM_MIGRATE is still in our inbox (its routes name us already):
         * held, in order, until its fence is done */
        if (router_deliver_local(w, sid, m, qos, flags) < 0 && w->srv->homes != NULL &&
            w->srv->conf.workers_consolidate)
            migrate_hold_early(w, sid, m, qos, flags);
    } else {
        inbox_item_t it = {
            .kind = WM_DELIVER, .qos = qos, .flags = flags, .sid = sid, .ptr = msg_ref(m)};
        worker_post(w, owner, &it);
    }
}

/* ROUTE_OWNER_CONSUMER: the consumer's address is in its id. */
static void deliver_consumer(worker_t *w, uint64_t sid, uint16_t owner, msg_t *m, uint8_t qos,
                             uint8_t flags, void *user)
{
    (void)owner;
    (void)user;
    router_consumer_t *c = (router_consumer_t *)(uintptr_t)(sid & ~ROUTE_SID_CONSUMER);
    if (w->id < c->nworkers)
        STAT_ADD(c->delivered[w->id].n, 1);
    c->ops->on_message(w, c, m, qos, flags & DLV_RETAIN, c->user);
}

void router_owner_register(server_t *srv, uint8_t kind, const route_owner_kind_t *k)
{
    if (kind >= ROUTE_OWNER_KINDS)
        abort(); /* a programming error, at start-up */
    srv->route_owners[kind] = *k;
}

void router_register_inbox(server_t *srv)
{
    static const worker_inbox_kind_t deliver = {.run = run_deliver, .drop = drop_deliver};
    worker_inbox_register(srv, WM_DELIVER, &deliver);
    router_owner_register(srv, ROUTE_OWNER_LOCAL,
                          &(route_owner_kind_t){.deliver = deliver_session});
    router_owner_register(srv, ROUTE_OWNER_CONSUMER,
                          &(route_owner_kind_t){.deliver = deliver_consumer});
}

static void hand(worker_t *w, const sub_ref_t *sub, msg_t *m, uint8_t qos, uint8_t flags)
{
    dispatch(w, sub->kind, sub->sid, sub->owner, m, qos, flags);
}

void router_hand_targets(worker_t *w, msg_t *m, const route_target_t *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dispatch(w, t[i].kind, t[i].sid, t[i].owner, m, t[i].qos, t[i].flags);
}

void router_hand_held(worker_t *w, msg_t *m, const route_target_t *t, size_t n, uint64_t ticket)
{
    /* counted for its publisher when it was held (publish_durable) */
    uint32_t local = w->dlv_local, cross = w->dlv_cross;
    uint16_t to = w->dlv_to;
    uint8_t mixed = w->dlv_mixed;
    uint64_t was = w->fwd_ticket;
    w->fwd_ticket = ticket; /* taken when it was held: its copies carry it */
    router_hand_targets(w, m, t, n);
    w->fwd_ticket = was;
    w->dlv_local = local;
    w->dlv_cross = cross;
    w->dlv_to = to;
    w->dlv_mixed = mixed;
}

/* With persistence: store m in the queue of every durable subscriber that
 * takes it at QoS 1/2 (persist.h), then route it now, or after the commit
 * when anything was stored or earlier messages of this worker still wait. */
static void publish_durable(worker_t *w, msg_t *m, size_t n)
{
    server_t *srv = w->srv;
    if (n > w->targets_cap) {
        w->targets_cap = AN_MAX(n, 2 * w->targets_cap);
        w->targets = an_realloc(w->targets, w->targets_cap * sizeof(*w->targets));
    }
    route_target_t *t = w->targets;
    int stored = 0;
    for (size_t i = 0; i < n; i++) {
        const sub_ref_t *sub = &w->matches[i];
        t[i].sid = sub->sid;
        t[i].owner = sub->owner;
        t[i].kind = sub->kind;
        t[i].qos = AN_MIN(m->qos, sub->opts & 3);
        t[i].flags = 0;
        if ((sub->opts & MQTT_SUBOPT_RETAIN_AS_PUBLISHED) && m->retain)
            t[i].flags |= DLV_RETAIN;
        if (sub->opts & SUB_SHARED)
            t[i].flags |= DLV_SHARED;
        const sess_t *s = sub->sess;
        if (t[i].qos == 0 || s == NULL || !sess_flag(s, SESS_F_DURABLE))
            continue;
        if (m->store_seq == 0)
            m->store_seq = persist_next_seq(srv);
        persist_queue_put(w, s->client_id, s->client_id_len, m->store_seq, m, t[i].qos,
                          (t[i].flags & DLV_RETAIN) != 0, STORE_OUT_QUEUED, 0);
        t[i].flags |= DLV_DURABLE;
        stored = 1;
    }
    pthread_rwlock_unlock(&srv->trie_lock);
    if (stored || persist_holding_routes(w)) {
        /* delivered after the commit: counted for its publisher now.  Its
         * copies for other nodes leave after the commit too, but their
         * ticket is taken now (DLV_TICKET: the node row notes the nodes
         * and numbers the copies, sends nothing), so the publisher's
         * acknowledgement, held by the node row, waits for those nodes as
         * well as for the commit.  Before session 36 it waited for the
         * commit only: a node killed just after acknowledging could take
         * the copies down with its link's output (test_104). */
        for (size_t i = 0; i < n; i++) {
            if (t[i].kind == ROUTE_OWNER_LOCAL)
                count_delivery(w, t[i].owner);
            else if (t[i].kind == ROUTE_OWNER_NODE && t[i].qos > 0)
                dispatch(w, t[i].kind, t[i].sid, t[i].owner, m, t[i].qos,
                         (uint8_t)(t[i].flags | DLV_TICKET));
        }
        persist_hold_route(w, m, t, n, w->fwd_ticket);
    } else
        router_hand_targets(w, m, t, n);
}

/* limits.queue_full: refuse: 1 when a session that would take m at QoS 1/2
 * has a full queue.  A pass of its own before anything is done (a
 * refused message is not retained either). */
static int any_queue_full(worker_t *w, msg_t *m, const sess_t *from)
{
    server_t *srv = w->srv;
    match_ctx_t ctx = {w, m, from};
    int full = 0;
    w->nmatches = 0;
    pthread_rwlock_rdlock(&srv->trie_lock);
    trie_match(srv->trie, msg_topic(m), m->topic_len, collect, &ctx);
    for (size_t i = 0; i < w->nmatches && !full; i++) {
        const sub_ref_t *sub = &w->matches[i];
        full = (sub->opts & 3) && sub->sess && sess_flag(sub->sess, SESS_F_FULL);
    }
    pthread_rwlock_unlock(&srv->trie_lock);
    return full;
}

/* Back-pressure: does a connected subscriber among the n merged matches
 * hold more than limits.publisher_backpressure messages in its queue?  Under
 * the trie lock (the sessions behind the references are valid only there);
 * a relaxed read of a flag the home worker changes rarely. */
static int any_backlogged(const worker_t *w, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const sub_ref_t *sub = &w->matches[i];
        if (sub->kind == ROUTE_OWNER_LOCAL && sub->sess && sess_flag(sub->sess, SESS_F_BACKLOG))
            return 1;
    }
    return 0;
}

size_t router_publish(worker_t *w, msg_t *m, const sess_t *from)
{
    server_t *srv = w->srv;
    w->fwd_ticket = 0; /* the node row sets it again when it forwards m */
    if (m->qos > 0 && server_live(srv)->queue_full_policy == CONF_QUEUE_FULL_REFUSE &&
        any_queue_full(w, m, from)) {
        STAT_ADD(w->stats.refused_queue_full, 1);
        return ROUTER_REFUSED;
    }
    if (m->published_at == 0)
        m->published_at = w->wall_ms;
    if (srv->msg_ids && m->hops == 0 && m->id_seq == 0) { /* published here: its id */
        msg_id_next(&w->id_epoch, &w->id_seq);
        m->id_epoch = w->id_epoch;
        m->id_seq = w->id_seq;
    }
    if (m->retain) {
        int own = from == NULL && router_is_sys_topic(msg_topic(m), m->topic_len);
        if (retain_set_max(srv->retain, m, own ? 0 : server_live(srv)->max_retained) < 0)
            return ROUTER_NO_RETAIN; /* a new topic and the tree is full */
        persist_retained(w, m);
        const route_owner_kind_t *nk = &srv->route_owners[ROUTE_OWNER_NODE];
        if (nk->retained && m->hops == 0 && !router_is_sys_topic(msg_topic(m), m->topic_len))
            nk->retained(w, m, nk->user); /* a cluster: retained on every node */
    }

    match_ctx_t ctx = {w, m, from};
    w->nmatches = 0;
    pthread_rwlock_rdlock(&srv->trie_lock);
    trie_match(srv->trie, msg_topic(m), m->topic_len, collect, &ctx);
    if ((rtab_size(srv->rtab) != 0 || srv->rblooms.n != 0 || srv->rbits.n != 0) &&
        m->hops == 0) /* a node never forwards a node's message */
        push_exact_nodes(w, m);
    size_t n = merge_overlaps(w->matches, w->nmatches);
    /* QoS 0 is never queued for a connected client: only QoS 1/2 publishers
     * feel a subscriber's backlog */
    if (m->qos > 0 && (from || m->hops > 0) && server_live(srv)->publisher_backpressure &&
        any_backlogged(w, n)) /* hops: the cluster slows the link it came on */
        w->publish_backlogged = 1;
    if (srv->store && m->qos > 0) {
        /* the sessions behind the references are used under the lock */
        publish_durable(w, m, n); /* unlocks */
        return n;
    }
    pthread_rwlock_unlock(&srv->trie_lock);

    for (size_t i = 0; i < n; i++) {
        const sub_ref_t *sub = &w->matches[i];
        uint8_t qos = AN_MIN(m->qos, sub->opts & 3);
        uint8_t flags = 0;
        if ((sub->opts & MQTT_SUBOPT_RETAIN_AS_PUBLISHED) && m->retain)
            flags |= DLV_RETAIN;
        if (sub->opts & SUB_SHARED)
            flags |= DLV_SHARED;
        hand(w, sub, m, qos, flags);
    }
    return n;
}

int router_reshare(worker_t *w, sess_t *s, msg_t *m, uint8_t qos)
{
    server_t *srv = w->srv;
    sub_ref_t member;
    int found = -1;
    pthread_rwlock_rdlock(&srv->trie_lock);
    for (uint32_t i = 0; i < s->nsubs && found < 0; i++) {
        const sess_sub_t *sub = &s->subs[i];
        const uint8_t *group, *filter;
        size_t gl, fl;
        if (mqtt_shared_filter_parse(sess_sub_filter(sub), sub->len, &group, &gl, &filter, &fl) !=
                1 ||
            !topic_matches(filter, fl, msg_topic(m), m->topic_len))
            continue;
        found = shared_pick_named(srv->groups, group, gl, filter, fl, srv->conf.shared_strategy,
                                  s->sid, &w->rng, &member);
    }
    pthread_rwlock_unlock(&srv->trie_lock);
    if (found < 0)
        return 0;
    hand(w, &member, m, AN_MIN(qos, member.opts & 3), DLV_SHARED);
    return 1;
}

typedef struct {
    worker_t *w;
    sess_t *s;
    uint8_t qos;
} retained_ctx_t;

static void send_one_retained(void *ud, msg_t *m)
{
    retained_ctx_t *ctx = ud;
    /* [MQTT-3.3.1-8] retained messages sent on subscribe carry retain 1;
     * the ACL may forbid reading some topics a granted filter matches:
     * sess_deliver checks (sess_acl.h) */
    if (!msg_expired(m, ctx->w->now))
        sess_deliver(ctx->w, ctx->s, m, AN_MIN(m->qos, ctx->qos), DLV_RETAIN);
    msg_unref(&m);
}

void router_send_retained(worker_t *w, sess_t *s, const uint8_t *filter, uint16_t len, uint8_t qos)
{
    retained_ctx_t ctx = {w, s, qos};
    retain_match(w->srv->retain, filter, len, send_one_retained, &ctx);
}

/* ---- remote nodes ------------------------------------------------------ */

static sub_ref_t node_ref(uint16_t idx, uint32_t tag)
{
    /* Retain As Published: the receiving node needs the flag as published
     * (its own subscribers' options apply there) */
    sub_ref_t r = {.sid = ROUTE_SID_NODE | ((uint64_t)tag << 16) | idx,
                   .owner = idx,
                   .kind = ROUTE_OWNER_NODE,
                   .opts = (uint8_t)(2 | MQTT_SUBOPT_RETAIN_AS_PUBLISHED)};
    return r;
}

int router_node_subscribe(server_t *srv, uint16_t idx, const uint8_t *filter, size_t len)
{
    if (len == 0 || len > UINT16_MAX || !mqtt_topic_filter_valid(filter, len))
        return -1;
    const uint8_t *g, *real;
    size_t gl, rl;
    int shared = mqtt_shared_filter_parse(filter, len, &g, &gl, &real, &rl);
    if (shared < 0)
        return -1;
    int rc;
    pthread_rwlock_wrlock(&srv->trie_lock);
    if (shared == 1) { /* the node is one member of group g on f */
        sub_ref_t ref = node_ref(idx, router_share_tag(filter, len));
        shared_join(srv->trie, &srv->groups, g, gl, real, rl, &ref);
        rc = 1;
    } else {
        sub_ref_t ref = node_ref(idx, 0);
        rc = trie_insert(srv->trie, filter, len, &ref);
    }
    pthread_rwlock_unlock(&srv->trie_lock);
    if (rc < 0) {
        log_error("cluster: out of memory adding a route");
        abort(); /* an_* policy */
    }
    return rc;
}

int router_route_exact(const server_t *srv, const uint8_t *filter, size_t len, uint64_t *h)
{
    if (len == 0 || len > UINT16_MAX || !mqtt_topic_filter_valid(filter, len))
        return -1;
    if (memchr(filter, '+', len) || memchr(filter, '#', len) ||
        (len >= 7 && memcmp(filter, "$share/", 7) == 0))
        return 0;
    *h = an_siphash(srv->route_key, filter, len);
    return 1;
}

/* Node idx's entry in a list of peers' filters (srv->rblooms, srv->rbits),
 * or NULL (under trie_lock). */
static rpeer_t *peer_of(const rpeers_t *l, uint16_t idx)
{
    for (uint32_t i = 0; i < l->n; i++)
        if (l->v[i].node == idx)
            return &l->v[i];
    return NULL;
}

/* Install f as idx's filter in l (NULL: none); returns the one it
 * replaces.  Under the write lock. */
static void *peer_set(rpeers_t *l, uint16_t idx, void *f)
{
    rpeer_t *p = peer_of(l, idx);
    void *old = p ? p->f : NULL;
    if (p != NULL && f != NULL) {
        p->f = f;
    } else if (p != NULL) {
        *p = l->v[--l->n];
    } else if (f != NULL) {
        if (l->n == l->cap) {
            l->cap = l->cap ? l->cap * 2 : 8;
            l->v = an_realloc(l->v, l->cap * sizeof(*l->v));
        }
        l->v[l->n++] = (rpeer_t){f, idx};
    }
    return old;
}

/* Node idx's filter of each kind, or NULL (under trie_lock). */
static rbloom_t *bloom_of(const server_t *srv, uint16_t idx)
{
    rpeer_t *p = peer_of(&srv->rblooms, idx);
    return p ? p->f : NULL;
}

static rbits_t *bits_of(const server_t *srv, uint16_t idx)
{
    rpeer_t *p = peer_of(&srv->rbits, idx);
    return p ? p->f : NULL;
}

uint32_t router_node_exact(server_t *srv, uint16_t idx, uint64_t h, int op)
{
    uint32_t rc;
    pthread_rwlock_wrlock(&srv->trie_lock);
    rbloom_t *bf = bloom_of(srv, idx);
    if (bf != NULL) {
        if (op == ROUTER_EXACT_ADD) {
            rbloom_add(bf, h);
            rc = 1;
        } else {
            rc = (uint32_t)rbloom_del(bf, h);
        }
    } else if (op == ROUTER_EXACT_ADD) {
        if (srv->rtab == NULL) /* the first remote route: a single node never has one */
            srv->rtab = rtab_new();
        rc = rtab_add(srv->rtab, h, idx) != 0;
    } else {
        rc = srv->rtab != NULL ? (rtab_del(srv->rtab, h, idx, 0) != 0) : 0;
    }
    pthread_rwlock_unlock(&srv->trie_lock);
    return rc;
}

void router_node_exact_replace(server_t *srv, uint16_t idx, rbloom_t *b, const uint64_t *hashes,
                               size_t n)
{
    pthread_rwlock_wrlock(&srv->trie_lock);
    if (srv->rtab != NULL)
        rtab_drop_node(srv->rtab, idx, NULL, NULL);
    rbloom_t *old = peer_set(&srv->rblooms, idx, b);
    rbits_t *oldbits = peer_set(&srv->rbits, idx, NULL);
    if (b == NULL && n > 0) {
        if (srv->rtab == NULL)
            srv->rtab = rtab_new();
        for (size_t i = 0; i < n; i++)
            rtab_add(srv->rtab, hashes[i], idx);
    }
    pthread_rwlock_unlock(&srv->trie_lock);
    rbloom_free(old);
    rbits_free(oldbits);
}

void router_node_bits_set(server_t *srv, uint16_t idx, rbits_t *b, int had_pairs)
{
    pthread_rwlock_wrlock(&srv->trie_lock);
    if (had_pairs && srv->rtab != NULL)
        rtab_drop_node(srv->rtab, idx, NULL, NULL);
    rbloom_t *old = peer_set(&srv->rblooms, idx, NULL);
    rbits_t *oldbits = peer_set(&srv->rbits, idx, b);
    pthread_rwlock_unlock(&srv->trie_lock);
    rbloom_free(old);
    rbits_free(oldbits);
}

int router_node_bits_apply(server_t *srv, uint16_t idx, uint32_t nblocks, uint64_t n,
                           const uint32_t *ent, size_t count)
{
    int rc = 0;
    pthread_rwlock_wrlock(&srv->trie_lock);
    rbits_t *bf = bits_of(srv, idx);
    if (bf == NULL || bf->nblocks != nblocks) {
        rc = -1; /* not the filter these positions belong to */
    } else {
        for (size_t i = 0; i < count && rc == 0; i++)
            rc = rbits_put(bf, ent[i] & RBITS_POS_MASK, (ent[i] & RBITS_POS_SET) != 0);
        bf->n = n;
    }
    pthread_rwlock_unlock(&srv->trie_lock);
    return rc;
}

static void into_bloom(void *ud, uint64_t h, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++)
        rbloom_add(ud, h);
}

void router_node_exact_to_bloom(server_t *srv, uint16_t idx, uint64_t routes)
{
    rbloom_t *b = rbloom_new(routes); /* the allocation outside the lock */
    pthread_rwlock_wrlock(&srv->trie_lock);
    if (srv->rtab != NULL)
        rtab_drop_node(srv->rtab, idx, into_bloom, b);
    rbloom_t *old = peer_set(&srv->rblooms, idx, b);
    pthread_rwlock_unlock(&srv->trie_lock);
    rbloom_free(old);
}

int router_node_exact_info(server_t *srv, uint16_t idx, size_t *bytes, uint64_t *sized)
{
    pthread_rwlock_rdlock(&srv->trie_lock);
    const rbloom_t *bf = bloom_of(srv, idx);
    const rbits_t *xf = bits_of(srv, idx);
    int rc = bf != NULL ? 1 : xf != NULL ? 2 : 0;
    *bytes = bf ? rbloom_bytes(bf) : xf ? rbits_bytes(xf) : 0;
    *sized = bf ? bf->sized : 0;
    pthread_rwlock_unlock(&srv->trie_lock);
    return rc;
}

size_t router_node_exact_count(const server_t *srv)
{
    size_t n = rtab_size(srv->rtab);
    for (uint32_t i = 0; i < srv->rblooms.n; i++)
        n += (size_t)((const rbloom_t *)srv->rblooms.v[i].f)->n;
    for (uint32_t i = 0; i < srv->rbits.n; i++)
        n += (size_t)((const rbits_t *)srv->rbits.v[i].f)->n;
    return n;
}

int router_node_unsubscribe(server_t *srv, uint16_t idx, const uint8_t *filter, size_t len)
{
    const uint8_t *g, *real;
    size_t gl, rl;
    int rc;
    pthread_rwlock_wrlock(&srv->trie_lock);
    if (mqtt_shared_filter_parse(filter, len, &g, &gl, &real, &rl) == 1)
        rc = shared_leave(srv->trie, &srv->groups, g, gl, real, rl,
                          node_ref(idx, router_share_tag(filter, len)).sid);
    else
        rc = trie_remove(srv->trie, filter, len, node_ref(idx, 0).sid);
    pthread_rwlock_unlock(&srv->trie_lock);
    return rc;
}

void router_barrier_passed(worker_t *w, uint64_t ticket)
{
    conn_routes_done(w, ticket);
}

void router_set_local_hook(server_t *srv, trie_local_fn fn, void *ud)
{
    pthread_rwlock_wrlock(&srv->trie_lock);
    trie_set_local_hook(srv->trie, fn, ud);
    if (fn)
        shared_announce_all(srv->trie, srv->groups);
    pthread_rwlock_unlock(&srv->trie_lock);
}

void router_walk_exact_local(server_t *srv, trie_local_fn fn, void *ud,
                             const _Atomic uint64_t *counter, uint64_t *at)
{
    pthread_rwlock_rdlock(&srv->trie_lock);
    *at = atomic_load_explicit(counter, memory_order_relaxed);
    trie_walk_exact_local(srv->trie, fn, ud);
    pthread_rwlock_unlock(&srv->trie_lock);
}

int router_deliver_shared(worker_t *w, msg_t *m, const uint8_t *filter, size_t len)
{
    server_t *srv = w->srv;
    const uint8_t *g, *real;
    size_t gl, rl;
    sub_ref_t member;
    if (mqtt_shared_filter_parse(filter, len, &g, &gl, &real, &rl) != 1)
        return 0;
    pthread_rwlock_rdlock(&srv->trie_lock);
    int rc = shared_pick_local(srv->groups, g, gl, real, rl, &w->rng, &member);
    pthread_rwlock_unlock(&srv->trie_lock);
    if (rc < 0)
        return 0; /* its last member left meanwhile */
    uint8_t flags = DLV_SHARED;
    if ((member.opts & MQTT_SUBOPT_RETAIN_AS_PUBLISHED) && m->retain)
        flags |= DLV_RETAIN;
    hand(w, &member, m, AN_MIN(m->qos, member.opts & 3), flags);
    return 1;
}

int router_reshare_named(worker_t *w, msg_t *m, const uint8_t *filter, size_t len)
{
    server_t *srv = w->srv;
    const uint8_t *g, *real;
    size_t gl, rl;
    sub_ref_t member;
    if (mqtt_shared_filter_parse(filter, len, &g, &gl, &real, &rl) != 1)
        return 0;
    pthread_rwlock_rdlock(&srv->trie_lock);
    int rc = shared_pick_named(srv->groups, g, gl, real, rl, srv->conf.shared_strategy, 0, &w->rng,
                               &member);
    pthread_rwlock_unlock(&srv->trie_lock);
    if (rc < 0)
        return 0;
    hand(w, &member, m, AN_MIN(m->qos, member.opts & 3), DLV_SHARED);
    return 1;
}

/* ---- internal consumers ------------------------------------------------ */

void router_want_origins(server_t *srv)
{
    atomic_store_explicit(&srv->origins_wanted, 1, memory_order_relaxed);
}

router_consumer_t *router_consumer_new(server_t *srv, const char *name, const consumer_ops_t *ops,
                                       void *user)
{
    router_consumer_t *c = an_calloc(1, sizeof(*c));
    c->srv = srv;
    c->ops = ops;
    c->user = user;
    c->name = an_strndup(name, strlen(name));
    c->nworkers = srv->nworkers ? srv->nworkers : 1;
    c->delivered = an_calloc(c->nworkers, sizeof(*c->delivered));
    router_want_origins(srv); /* a consumer reads provenance */
    pthread_rwlock_wrlock(&srv->trie_lock);
    c->next = srv->consumers;
    srv->consumers = c;
    pthread_rwlock_unlock(&srv->trie_lock);
    return c;
}

static sub_ref_t consumer_ref(const router_consumer_t *c, uint8_t qos)
{
    /* Retain As Published: a consumer sees the flag the publisher set */
    sub_ref_t r = {.sid = ROUTE_SID_CONSUMER | (uint64_t)(uintptr_t)c,
                   .kind = ROUTE_OWNER_CONSUMER,
                   .opts = (uint8_t)(qos | MQTT_SUBOPT_RETAIN_AS_PUBLISHED)};
    return r;
}

int router_consumer_subscribe(router_consumer_t *c, const char *filter, uint8_t qos)
{
    size_t len = strlen(filter);
    const uint8_t *g, *real;
    size_t gl, rl;
    if (qos > 2 || len == 0 || len > UINT16_MAX ||
        !mqtt_topic_filter_valid((const uint8_t *)filter, len) ||
        mqtt_shared_filter_parse((const uint8_t *)filter, len, &g, &gl, &real, &rl) != 0)
        return -1;
    server_t *srv = c->srv;
    sub_ref_t ref = consumer_ref(c, qos);
    consumer_filter_t *f = an_malloc(sizeof(*f) + len + 1);
    f->qos = qos;
    f->len = (uint16_t)len;
    memcpy(f->filter, filter, len + 1);
    pthread_rwlock_wrlock(&srv->trie_lock);
    int rc = trie_insert(srv->trie, (const uint8_t *)filter, len, &ref);
    if (rc == 1) {
        f->next = c->filters;
        c->filters = f;
        f = NULL;
    } else if (rc == 0) {
        for (consumer_filter_t *e = c->filters; e; e = e->next)
            if (e->len == len && memcmp(e->filter, filter, len) == 0)
                e->qos = qos;
    }
    pthread_rwlock_unlock(&srv->trie_lock);
    free(f);
    if (rc < 0) {
        log_error("consumer %s: out of memory adding %s", c->name, filter);
        abort(); /* an_* policy */
    }
    return 0;
}

int router_consumer_unsubscribe(router_consumer_t *c, const char *filter)
{
    size_t len = strlen(filter);
    server_t *srv = c->srv;
    consumer_filter_t *gone = NULL;
    pthread_rwlock_wrlock(&srv->trie_lock);
    for (consumer_filter_t **pp = &c->filters; *pp; pp = &(*pp)->next)
        if ((*pp)->len == len && memcmp((*pp)->filter, filter, len) == 0) {
            gone = *pp;
            *pp = gone->next;
            trie_remove(srv->trie, (const uint8_t *)filter, len, consumer_ref(c, 0).sid);
            break;
        }
    pthread_rwlock_unlock(&srv->trie_lock);
    free(gone);
    return gone != NULL;
}

const char *router_consumer_name(const router_consumer_t *c)
{
    return c->name;
}

uint64_t router_consumer_delivered(const router_consumer_t *c)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < c->nworkers; i++)
        n += STAT_GET(c->delivered[i].n);
    return n;
}

void router_consumers_free(server_t *srv)
{
    router_consumer_t *c = srv->consumers;
    srv->consumers = NULL;
    while (c) {
        router_consumer_t *next = c->next;
        while (c->filters) {
            consumer_filter_t *f = c->filters;
            c->filters = f->next;
            if (srv->trie)
                trie_remove(srv->trie, (const uint8_t *)f->filter, f->len, consumer_ref(c, 0).sid);
            free(f);
        }
        if (c->ops->free)
            c->ops->free(c, c->user);
        free(c->delivered);
        free(c->name);
        free(c);
        c = next;
    }
}

struct router_guard_s {
    char *prefix; /* "$shadow/" */
    size_t len;
    router_guard_t g;
};

int router_guard(server_t *srv, const char *prefix, const router_guard_t *g)
{
    size_t n = strlen(prefix);
    if (n == 0 || g->publish == NULL || strpbrk(prefix, "+#") != NULL ||
        router_is_sys_topic((const uint8_t *)prefix, AN_MIN(n, 4)) ||
        (n >= 4 && memcmp(prefix, "$SYS", 4) == 0))
        return -1;
    for (uint32_t i = 0; i < srv->nguards; i++) {
        const struct router_guard_s *o = &srv->guards[i];
        if (memcmp(o->prefix, prefix, AN_MIN(o->len, n)) == 0)
            return -1; /* one prefix covers the other */
    }
    srv->guards = an_realloc(srv->guards, (srv->nguards + 1) * sizeof(*srv->guards));
    srv->guards[srv->nguards++] = (struct router_guard_s){an_strndup(prefix, n), n, *g};
    srv->nguards_sub += g->subscribe != NULL;
    uint8_t c = (uint8_t)prefix[0];
    srv->guard_first[c >> 6] |= (uint64_t)1 << (c & 63);
    return 0;
}

int router_guard_publish(const server_t *srv, const router_who_t *who, const uint8_t *topic,
                         size_t len)
{
    if (len == 0 || !router_guard_first(srv, topic[0]))
        return 1;
    for (uint32_t i = 0; i < srv->nguards; i++) {
        const struct router_guard_s *o = &srv->guards[i];
        if (len >= o->len && memcmp(topic, o->prefix, o->len) == 0)
            return o->g.publish(who, topic, len, o->g.ud);
    }
    return 1;
}

int router_guard_subscribe(const server_t *srv, const router_who_t *who, const uint8_t *filter,
                           size_t len)
{
    for (uint32_t i = 0; i < srv->nguards; i++) {
        const struct router_guard_s *o = &srv->guards[i];
        if (o->g.subscribe && !o->g.subscribe(who, filter, len, o->g.ud))
            return 0;
    }
    return 1;
}

void router_guard_free(server_t *srv)
{
    for (uint32_t i = 0; i < srv->nguards; i++)
        free(srv->guards[i].prefix);
    free(srv->guards);
    srv->guards = NULL;
    srv->nguards = srv->nguards_sub = 0;
    memset(srv->guard_first, 0, sizeof(srv->guard_first));
}

int router_receive_hook(server_t *srv, router_receive_fn fn, void *user)
{
    if (srv->receive_hook != NULL)
        return -1;
    srv->receive_hook = fn;
    srv->receive_user = user;
    return 0;
}
