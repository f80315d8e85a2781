/* cl_adopt_merge.c -- the home workers' part of an adoption (cl_adopt.c
 * runs the steps; docs/cluster.md "A dead node's sessions", "The
 * hand-over"), and the copies the members kept for the dead node N.
 *
 * Phase 0 (install_item): each home worker reserves ADOPT_SEQ_RANGE store
 * keys and installs its share of N's sessions as a hand-over
 * (cl_owner_install), their stored messages keyed from the range.  Phase 1
 * (merge_item): once the members answered the ask (ad_collect,
 * cl_adopt_collected; merge_collected sorts each copy to the sessions
 * whose not-shared subscriptions match it, at the granted QoS, unless N's
 * records hold it already: holds), each worker queues the copies into its
 * installed sessions, still offline: a copy the session holds already (N
 * stored it, or it came the direct way too: cl_adopt_sess_holds) is left out; the
 * others go ahead of what came the direct way, with the rest of the range's
 * keys (below every key a later message gets), so each publisher's order
 * is kept.  Each copy merged is remembered for its session (a->seen, the
 * node's, sorted by session id: found on whichever worker the session is
 * when its twin comes; ad_seen_t says how long) and drops one direct twin
 * that reaches the session later (ad_dedup_hook, sess_deliver's
 * srv->dedup_hook; the session's adopt_dedup flag says there may be one).
 * cl_adopt_late: a publish this node routed for N before its sessions were
 * here, applied after its own ask, is merged the same way (an item of its
 * own, not waited for).
 *
 * "The same message" (same_msg, holds, seen_same) is the same publish id
 * when both copies have one (msg.h: exact: two publishes of the same bytes
 * in the same millisecond are two); without, topic, payload and
 * properties, and the publish time when both copies know it (a copy
 * rebuilt from N's store does not).
 *
 * Threads: install_item, merge_item and ad_dedup_hook on the workers
 * (a->seen under a->seen_mu: the sessions of several workers, rarely
 * contended: only adopted sessions with merged copies ask);
 * ad_run_items, ad_collect and merge_collected on the adopter thread;
 * cl_adopt_expect, cl_adopt_collected and cl_adopt_late on the link thread
 * (coll* and late_* under a->mu).
 */
#include <stdlib.h>
#include <string.h>

#include "cl_adopt_int.h"
#include "log.h"
#include "persist.h"
#include "sess.h"
#include "store.h"
#include "store_rec.h"
#include "trie.h"
#include "util.h"

#define ADOPT_INSTALL_MS 60000       /* the workers install within this, or it fails */
#define ADOPT_COLLECT_MS 5000        /* the members send what they kept for N within this */
#define ADOPT_DEDUP_MS 60000         /* a kept copy merged drops its direct twin this long */
#define ADOPT_DEDUP_ID_MS 600000     /* ... one with a publish id at most this long */
#define ADOPT_SEQ_RANGE (1ull << 32) /* store keys reserved per worker and adoption */

/* What a queued message counts against the session's limits.max_queued_bytes
 * (sess.h: the queue ring keeps the sum). */
static uint64_t queued_bytes(const msg_t *m)
{
    return m ? (uint64_t)m->topic_len + m->props_len + m->payload_len : 0;
}

/* ---- on the home workers ---- */

/* The same message: the same publish id when both have one (msg.h: exact);
 * else topic, payload, properties, and the publish time when both know it
 * (a copy rebuilt from N's store does not). */
static int same_msg(const msg_t *x, const msg_t *y)
{
    if (x->id_seq != 0 && y->id_seq != 0)
        return msg_same_id(x, y);
    return x->topic_len == y->topic_len && x->payload_len == y->payload_len &&
           x->props_len == y->props_len &&
           (x->published_at == 0 || y->published_at == 0 || x->published_at == y->published_at) &&
           memcmp(msg_topic(x), msg_topic(y), x->topic_len) == 0 &&
           memcmp(msg_props(x), msg_props(y), x->props_len) == 0 &&
           memcmp(msg_payload(x), msg_payload(y), x->payload_len) == 0;
}

int cl_adopt_same(const msg_t *x, const msg_t *y)
{
    return same_msg(x, y);
}

static int sq_holds(sq_t *q, const msg_t *m)
{
    for (uint32_t i = 0; i < sq_len(q); i++) {
        const sq_entry_t *e = sq_at(q, i);
        if (e->m != NULL && same_msg(e->m, m))
            return 1;
    }
    return 0;
}

int cl_adopt_sess_holds(sess_t *s, const msg_t *m)
{
    return sq_holds(&s->inflight, m) || sq_holds(&s->queue, m);
}

/* The merged copies: those past their time or used go. */
void ad_seen_prune(ad_seenv_t *sv, uint64_t now)
{
    size_t k = 0;
    for (size_t i = 0; i < sv->n; i++) {
        if (sv->v[i].until > now)
            sv->v[k++] = sv->v[i];
        else if (sv->v[i].m != NULL)
            msg_unref(&sv->v[i].m);
    }
    sv->n = k;
}

/* Is m the twin of the merged copy e? */
static int seen_same(const ad_seen_t *e, const msg_t *m)
{
    if (e->id_seq != 0 && m->id_seq != 0)
        return e->id_seq == m->id_seq && e->id_epoch == m->id_epoch;
    return e->m != NULL && same_msg(e->m, m);
}

static int seen_cmp(const void *x, const void *y)
{
    const ad_seen_t *a = x, *b = y;
    return a->sid < b->sid ? -1 : a->sid > b->sid;
}

/* srv->dedup_hook, for a session marked adopt_dedup, on its home worker:
 * 1 when m is the direct twin of a kept copy merged into it (dropped). */
int ad_dedup_hook(worker_t *w, sess_t *s, const msg_t *m, void *user)
{
    cl_adopt_t *a = user;
    ad_seenv_t *sv = &a->seen;
    pthread_mutex_lock(&a->seen_mu);
    size_t lo = 0, hi = sv->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sv->v[mid].sid < s->sid)
            lo = mid + 1;
        else
            hi = mid;
    }
    int live = 0, twin = 0;
    for (size_t i = lo; i < sv->n && sv->v[i].sid == s->sid; i++) {
        ad_seen_t *e = &sv->v[i];
        if (e->until <= w->now)
            continue;
        if (!twin && seen_same(e, m)) {
            e->until = 0; /* each drops one */
            if (e->m != NULL)
                msg_unref(&e->m);
            twin = 1;
            continue;
        }
        if (e->id_seq != 0 && m->qos > 0 && !m->retain && m->id_seq > e->id_seq &&
            m->id_epoch == e->id_epoch) {
            e->until = 0; /* its publisher's stream is past it: its twin cannot come now */
            continue;
        }
        live = 1;
    }
    pthread_mutex_unlock(&a->seen_mu);
    if (twin)
        atomic_fetch_add_explicit(&a->dropped_direct, 1, memory_order_relaxed);
    if (!live)
        s->adopt_dedup = 0;
    return twin;
}

/* Phase 0: the sessions installed (their stored messages keyed from the
 * range reserved here: every message that reaches them afterwards has a
 * higher key). */
static void install_item(worker_t *w, ad_item_t *it)
{
    ad_job_t *j = it->job;
    j->seq_next[w->id] = persist_reserve_seq(w->srv, ADOPT_SEQ_RANGE);
    j->seq_end[w->id] = j->seq_next[w->id] + ADOPT_SEQ_RANGE;
    cl_buf_t b = {0};
    for (uint32_t i = 0; i < it->n; i++) {
        ad_sess_t *s = it->s[i];
        b.len = 0;
        ad_put32(&b, s->rec_len);
        cl_buf_reserve(&b, s->rec_len);
        memcpy(b.p + b.len, s->rec, s->rec_len);
        b.len += s->rec_len;
        ad_put32(&b, s->ninfl + s->nqueued);
        cl_buf_reserve(&b, s->infl.len + s->queued.len);
        if (s->infl.len)
            memcpy(b.p + b.len, s->infl.p, s->infl.len);
        b.len += s->infl.len;
        if (s->queued.len)
            memcpy(b.p + b.len, s->queued.p, s->queued.len);
        b.len += s->queued.len;
        ad_put32(&b, s->npids);
        cl_buf_reserve(&b, s->pids.len);
        if (s->pids.len)
            memcpy(b.p + b.len, s->pids.p, s->pids.len);
        b.len += s->pids.len;
        s->rc = cl_owner_install(w, (const char *)s->id, s->len, b.p, b.len, &j->seq_next[w->id]);
    }
    cl_buf_free(&b);
}

/* Phase 1: the copies the members kept, into the installed sessions (still
 * offline: their queues only grew at the end since phase 0).  A copy the
 * session holds already (N stored it, or it came the direct way too) is
 * left out; the others go ahead of what came the direct way (keys above
 * the reserved range), so each publisher's order is kept: kept = published
 * up to the ask, direct = published once this node's routes were known,
 * their overlap once.  Each one merged drops its direct twin if that comes
 * later (ad_dedup_hook; ad_seen_t). */
static void merge_item(worker_t *w, ad_item_t *it)
{
    ad_job_t *j = it->job;
    ad_seenv_t *sv = &j->a->seen;
    uint64_t end = j->seq_end[w->id], merged = 0, skipped = 0;
    pthread_mutex_lock(&j->a->seen_mu);
    ad_seen_prune(sv, w->now);
    sq_entry_t *tail = NULL;
    uint8_t *add = NULL;
    uint32_t cap_tail = 0, cap_add = 0;
    for (uint32_t i = 0; i < it->n; i++) {
        ad_sess_t *as = it->s[i];
        sess_t *s =
            as->rc == 0 && as->nhand ? sess_table_find_id(&w->by_id, as->id, as->len) : NULL;
        if (s == NULL)
            continue; /* not installed here, nothing kept for it, or ended since */
        if (as->nhand > cap_add) {
            cap_add = as->nhand;
            add = an_realloc(add, cap_add);
        }
        uint32_t nadd = 0;
        for (uint32_t k = 0; k < as->nhand; k++) {
            const msg_t *m = as->hand[k].m;
            add[k] = !msg_expired(m, w->now) && !cl_adopt_sess_holds(s, m);
            nadd += add[k];
            skipped += !add[k];
        }
        if (nadd == 0)
            continue;
        /* what came the direct way, off the end for now */
        uint32_t k = sq_len(&s->queue);
        while (k > 0 && (sq_at(&s->queue, k - 1)->seq == 0 || sq_at(&s->queue, k - 1)->seq >= end))
            k--;
        uint32_t nd = sq_len(&s->queue) - k;
        if (nd > cap_tail) {
            cap_tail = nd;
            tail = an_realloc(tail, cap_tail * sizeof(*tail));
        }
        for (uint32_t d = nd; d-- > 0;) {
            tail[d] = *sq_at(&s->queue, k + d);
            /* the queue's byte count is in its ring, which goes when it
             * empties: each entry's bytes leave and come back with it */
            sq_bytes_sub(&s->queue, queued_bytes(tail[d].m));
            sq_remove(&s->queue, k + d);
        }
        for (uint32_t h = 0; h < as->nhand; h++) {
            if (!add[h])
                continue;
            msg_t *m = as->hand[h].m;
            sq_entry_t e = {.m = msg_ref(m),
                            .qos = as->hand[h].qos,
                            .retain = as->hand[h].retain,
                            .state = SQ_QUEUED,
                            .seq = j->seq_next[w->id]++};
            persist_queue_put(w, s->client_id, s->client_id_len, e.seq, m, e.qos, e.retain,
                              SQ_QUEUED, 0);
            sq_push(&s->queue, &e);
            sq_bytes_add(&s->queue, queued_bytes(m));
            if (sv->n == sv->cap) {
                sv->cap = sv->cap ? 2 * sv->cap : 64;
                sv->v = an_realloc(sv->v, sv->cap * sizeof(*sv->v));
            }
            if (m->id_seq != 0) /* the id alone: no message held */
                sv->v[sv->n++] = (ad_seen_t){.sid = s->sid,
                                             .until = w->now + ADOPT_DEDUP_ID_MS,
                                             .id_epoch = m->id_epoch,
                                             .id_seq = m->id_seq};
            else
                sv->v[sv->n++] =
                    (ad_seen_t){.sid = s->sid, .until = w->now + ADOPT_DEDUP_MS, .m = msg_ref(m)};
            merged++;
        }
        for (uint32_t d = 0; d < nd; d++) {
            sq_push(&s->queue, &tail[d]);
            sq_bytes_add(&s->queue, queued_bytes(tail[d].m));
        }
        s->adopt_dedup = 1;
    }
    free(tail);
    free(add);
    if (sv->n > 1)
        qsort(sv->v, sv->n, sizeof(*sv->v), seen_cmp);
    pthread_mutex_unlock(&j->a->seen_mu);
    atomic_fetch_add(&j->merged, merged);
    atomic_fetch_add(&j->skipped, skipped);
    if (it->late)
        atomic_fetch_add(&j->a->handed, merged);
}

void cl_adopt_item(worker_t *w, void *ptr)
{
    ad_item_t *it = ptr;
    if (it->phase == 0)
        install_item(w, it);
    else
        merge_item(w, it);
    /* now, not at the turn's end: the adopter's barrier must come after */
    persist_flush(w);
    cl_adopt_item_drop(it);
}

/* An item is done, run or dropped (a worker stopping): its job waits for
 * one less. */
void cl_adopt_item_drop(void *ptr)
{
    ad_item_t *it = ptr;
    ad_job_t *j = it->job;
    if (it->late) {
        for (uint32_t i = 0; i < it->n; i++) {
            msg_unref(&it->s[i]->hand[0].m);
            free(it->s[i]->hand);
            free(it->s[i]);
        }
    } else {
        pthread_mutex_lock(&j->a->mu);
        j->left--;
        pthread_cond_broadcast(&j->a->cv);
        pthread_mutex_unlock(&j->a->mu);
    }
    ad_job_unref(j);
    free(it);
}

/* ---- the copies the members kept (cl_hand.c) ---- */

void cl_adopt_expect(cl_t *cl, const char *name, uint32_t asked)
{
    cl_adopt_t *a = cl->adopt;
    if (a == NULL)
        return;
    pthread_mutex_lock(&a->mu);
    if (a->coll_on && strcmp(a->coll_name, name) == 0)
        a->coll_left = asked;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

void cl_adopt_collected(cl_t *cl, const char *name, msg_t **v, uint32_t n, int from_peer)
{
    cl_adopt_t *a = cl->adopt;
    uint32_t i = 0;
    if (a != NULL) {
        pthread_mutex_lock(&a->mu);
        if (a->coll_on && strcmp(a->coll_name, name) == 0) {
            if (a->ncoll + n > a->cap_coll) {
                a->cap_coll = a->ncoll + n + 64;
                a->coll = an_realloc(a->coll, a->cap_coll * sizeof(*a->coll));
            }
            for (; i < n; i++)
                a->coll[a->ncoll++] = v[i];
            if (from_peer && a->coll_left > 0 && a->coll_left != UINT32_MAX)
                a->coll_left--;
            pthread_cond_broadcast(&a->cv);
        }
        pthread_mutex_unlock(&a->mu);
    }
    for (; i < n; i++) /* not adopting that node (any more) */
        msg_unref(&v[i]);
}

static int same_bytes(const uint8_t *x, size_t xl, const uint8_t *y, size_t yl)
{
    return xl == yl && (xl == 0 || memcmp(x, y, xl) == 0);
}

/* Does buffer b (u32 len | outmsg record, each) hold this message? */
static int holds(const cl_buf_t *b, const msg_t *m)
{
    size_t off = 0;
    while (off + 4 <= b->len) {
        const uint8_t *p = b->p + off;
        uint32_t l = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        store_outmsg_t o;
        if (off + 4 + l > b->len || store_rec_decode_outmsg(p + 4, l, &o) != 0)
            return 0;
        if (o.id_seq != 0 && m->id_seq != 0) { /* both have a publish id: exact */
            if (o.id_seq == m->id_seq && o.id_epoch == m->id_epoch)
                return 1;
        } else if (same_bytes(o.topic, o.topic_len, msg_topic(m), m->topic_len) &&
                   same_bytes(o.payload, o.payload_len, msg_payload(m), m->payload_len) &&
                   same_bytes(o.props, o.props_len, msg_props(m), m->props_len))
            return 1;
        off += 4 + (size_t)l;
    }
    return 0;
}

/* The QoS session record rec takes m at through its (not shared)
 * subscriptions, 0 none; *rap: one of them has Retain As Published. */
static uint8_t sub_qos(const store_session_t *rec, const msg_t *m, uint8_t *rap)
{
    uint8_t best = 0;
    for (uint32_t f = 0; f < rec->nsubs; f++) {
        const store_sub_t *sub = &rec->subs[f];
        if (sub->filter_len >= 7 && memcmp(sub->filter, "$share/", 7) == 0)
            continue; /* a group's pick was made for N alone */
        if (!topic_matches(sub->filter, sub->filter_len, msg_topic(m), m->topic_len))
            continue;
        uint8_t q = (uint8_t)((sub->options & 3) + 1); /* +1: matched */
        best = AN_MAX(best, q);
        *rap |= (sub->options & 8) != 0;
    }
    return best ? AN_MIN(m->qos, (uint8_t)(best - 1)) : 0;
}

/* The collected copies, sorted to the sessions read from N's store: each
 * goes to every session with a (not shared) subscription matching it, at
 * the granted QoS, unless the session's stored messages hold it already
 * (N stored it before it could acknowledge it: a QoS 2 message must not
 * come twice); the home workers queue them (merge_item).  Returns the
 * copies sorted to a session. */
static size_t merge_collected(ad_job_t *j, msg_t **v, uint32_t n)
{
    size_t added = 0;
    uint64_t now = an_now_ms();
    for (size_t i = 0; i < j->n && n > 0; i++) {
        ad_sess_t *s = &j->v[i];
        store_session_t rec;
        if (s->rc != 0 || store_rec_decode_session(s->rec, s->rec_len, &rec) != 0)
            continue;
        for (uint32_t k = 0; k < n; k++) {
            msg_t *m = v[k];
            uint8_t rap = 0, qos = sub_qos(&rec, m, &rap);
            if (qos == 0 || (m->expire_at && m->expire_at <= now) || holds(&s->infl, m) ||
                holds(&s->queued, m))
                continue;
            if (s->nhand == 0 || (s->nhand >= 4 && (s->nhand & (s->nhand - 1)) == 0))
                s->hand = an_realloc(s->hand, AN_MAX(4u, 2 * s->nhand) * sizeof(*s->hand));
            s->hand[s->nhand++] =
                (ad_hand_t){.m = msg_ref(m), .qos = qos, .retain = rap && m->retain};
            added++;
        }
        store_rec_session_free(&rec);
    }
    return added;
}

/* Ask the members for what they kept for N, wait for their answers
 * (ADOPT_COLLECT_MS at most), sort it to j's sessions: the copies sorted. */
size_t ad_collect(cl_adopt_t *a, ad_job_t *j, const char *name)
{
    pthread_mutex_lock(&a->mu);
    size_t nl = strnlen(name, sizeof(a->coll_name) - 1);
    memcpy(a->coll_name, name, nl);
    a->coll_name[nl] = '\0';
    a->coll_on = 1;
    a->coll_left = UINT32_MAX; /* until the link thread says how many it asked */
    pthread_mutex_unlock(&a->mu);
    int rc = cl_hand_ask(a->cl, name) == 0 ? ad_wait_zero(a, &a->coll_left, ADOPT_COLLECT_MS) : -1;
    pthread_mutex_lock(&a->mu);
    a->coll_on = 0;
    msg_t **v = a->coll;
    uint32_t n = a->ncoll;
    a->coll = NULL;
    a->ncoll = a->cap_coll = 0;
    pthread_mutex_unlock(&a->mu);
    if (rc < 0)
        log_warn("cluster: adopting the sessions of node %s: not every member sent the messages "
                 "it kept for it in time",
                 name);
    size_t added = merge_collected(j, v, n);
    if (n > 0)
        log_info("cluster: adopting the sessions of node %s: %u messages kept by the members for "
                 "it, %zu copies for its sessions",
                 name, n, added);
    for (uint32_t i = 0; i < n; i++)
        msg_unref(&v[i]);
    free(v);
    return added;
}

void cl_adopt_late(cl_t *cl, const char *name, msg_t *m)
{
    cl_adopt_t *a = cl->adopt;
    if (a == NULL)
        return;
    pthread_mutex_lock(&a->mu);
    ad_job_t *j = a->late_job;
    if (j == NULL || strcmp(a->late_name, name) != 0 || an_now_ms() > a->late_until)
        j = NULL;
    else
        atomic_fetch_add(&j->refs, 1);
    pthread_mutex_unlock(&a->mu);
    if (j == NULL)
        return;
    uint32_t nw = cl->srv->nworkers;
    ad_item_t **items = an_calloc(nw, sizeof(*items));
    uint32_t *cap = an_calloc(nw, sizeof(*cap));
    for (size_t i = 0; i < j->n; i++) {
        const ad_sess_t *s = &j->v[i];
        store_session_t rec;
        if (s->rc != 0 || store_rec_decode_session(s->rec, s->rec_len, &rec) != 0)
            continue;
        uint8_t rap = 0, qos = sub_qos(&rec, m, &rap);
        store_rec_session_free(&rec);
        if (qos == 0)
            continue;
        ad_sess_t *sh = an_calloc(1, sizeof(*sh)); /* the item's own: id borrowed from j */
        sh->id = s->id;
        sh->len = s->len;
        sh->home = s->home;
        sh->hand = an_malloc(sizeof(*sh->hand));
        sh->hand[0] = (ad_hand_t){.m = msg_ref(m), .qos = qos, .retain = rap && m->retain};
        sh->nhand = 1;
        ad_item_t *it = items[s->home];
        if (it == NULL || it->n == cap[s->home]) {
            cap[s->home] = cap[s->home] ? 2 * cap[s->home] : 8;
            it = an_realloc(it, sizeof(*it) + cap[s->home] * sizeof(it->s[0]));
            if (items[s->home] == NULL)
                *it = (ad_item_t){.job = j, .phase = 1, .late = 1, .n = 0};
            items[s->home] = it;
        }
        it->s[it->n++] = sh;
    }
    for (uint32_t k = 0; k < nw; k++)
        if (items[k]) {
            atomic_fetch_add(&j->refs, 1);
            cl_owner_post_adopt(cl, k, items[k]);
        }
    free(items);
    free(cap);
    ad_job_unref(j);
}

/* Posts each home worker its sessions of j (phase 0: install them, 1:
 * queue the kept copies) and waits for them: 0, or -1 (ADOPT_INSTALL_MS
 * passed, or stopping). */
int ad_run_items(cl_adopt_t *a, ad_job_t *j, int phase)
{
    uint32_t nw = a->cl->srv->nworkers;
    uint32_t *per = an_calloc(nw, sizeof(*per));
    for (size_t i = 0; i < j->n; i++) {
        if (phase == 0)
            j->v[i].home = worker_home(a->cl->srv, j->v[i].id, j->v[i].len);
        if (phase == 0 || (j->v[i].rc == 0 && j->v[i].nhand > 0))
            per[j->v[i].home]++;
    }
    ad_item_t **items = an_calloc(nw, sizeof(*items));
    for (uint32_t k = 0; k < nw; k++)
        if (per[k]) {
            items[k] = an_malloc(sizeof(ad_item_t) + per[k] * sizeof(ad_sess_t *));
            items[k]->job = j;
            items[k]->phase = phase;
            items[k]->late = 0;
            items[k]->n = 0;
        }
    for (size_t i = 0; i < j->n; i++) {
        ad_item_t *it = items[j->v[i].home];
        if (phase == 0 || (j->v[i].rc == 0 && j->v[i].nhand > 0))
            it->s[it->n++] = &j->v[i];
    }
    pthread_mutex_lock(&a->mu);
    for (uint32_t k = 0; k < nw; k++)
        j->left += per[k] != 0;
    pthread_mutex_unlock(&a->mu);
    for (uint32_t k = 0; k < nw; k++)
        if (items[k]) {
            atomic_fetch_add(&j->refs, 1);
            cl_owner_post_adopt(a->cl, k, items[k]);
        }
    free(items);
    free(per);
    return ad_wait_zero(a, &j->left, ADOPT_INSTALL_MS);
}
