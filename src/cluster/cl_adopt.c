/* cl_adopt.c -- a dead member's sessions adopted by a survivor, from the
 * dead node's Redis store (cl_int.h; docs/cluster.md "A dead node's
 * sessions").  On only with persistence.backend: redis, cluster.etcd and
 * cluster.adopt (the default); or with persistence.session_store:
 * replicated, where the adopters are the nodes etcd's replica/<N>/<R>
 * names (each holds a share of N's sessions) and each reads its own copy
 * (check_repl; cl_repl.c): the same steps 1-4 (adopt_store), then
 * "adopted:<this node>" in etcd and its name out of replica/<N>/, N's
 * records deleted from the copy and the copy dropped.  There every
 * survivor's gate for N stays until each named replica that lives made its
 * claims (CL_F_ADOPT_OVER from each: ad_watch_t.need, .overs), and the
 * watch ends once no live replica is named.
 *
 * When the member table (link thread) sees member N go out, every survivor
 * starts a watch of N here: N's store may hold sessions that no node
 * serves.  While a watch runs, this node's connect gate refuses CONNECTs
 * that resume a session (clean start 0) with 0x88, so that no client
 * starts afresh somewhere while its session waits in N's store (the client
 * retries); the gate closes already when the etcd thread sees N go out
 * (cl_adopt_early, before the link thread starts the watch) and opens as
 * soon as N's adopter says its claims are made (cl_adopt_over: its
 * CL_F_ADOPT_OVER, or this node's own adoption; a watch so opened closes
 * again if the adopter's lock is found gone before N's store says
 * "adopted").  The adopter thread looks at each watched store every
 * ADOPT_POLL_MS (store_redis_peek: lock, state, any session):
 *   - state "stopped" (N closed its store cleanly: a stop or a drain; its
 *     sessions wait for a node with its name), "adopted by ..." (done), no
 *     session stored: nothing to do, the watch ends;
 *   - the lock held by a live process: a survivor adopting it (its lock
 *     token says ":adopting"): wait; N itself, cut off from etcd but
 *     alive and renewing its lock: wait too, but without holding
 *     CONNECTs back (its clients are still with it);
 *   - otherwise, once this node's turn came (its rank among the live
 *     members by rendezvous hashing of N's name, times ADOPT_RANK_MS: the
 *     first survivor at once, the next ones later in case it dies midway),
 *     adopt: only the node that takes N's lock (store_open) does.
 * A watch ends at the latest cluster.adopt_wait after the member went out
 * (logged).  A member that comes back ends its watch.  ADOPT_SCAN_MS after
 * start the adopter thread also looks for the stores in Redis of nodes that
 * are not members (startup_scan: they died before this node came, nobody
 * up saw them go) and watches them the same way (cl_adopt_unseen).
 *
 * An adoption, on the adopter thread, with N's store open (its lock held):
 *   1. read N's sessions, queues and incoming QoS 2 ids (store_scan), each
 *      session made into the hand-over format of cl_owner.c (what a node
 *      sends when a client moves), expired ones left out;
 *   2. post them to their home workers (WM_CL_OWNER, one item per worker,
 *      phase 0): each reserves a range of store keys (ADOPT_SEQ_RANGE),
 *      installs them as a hand-over (cl_owner_install: sessions,
 *      subscriptions and their routes, queues keyed from the range, QoS 2
 *      state; offline: nothing is delivered) and writes them to this
 *      node's store by the normal persist path, then submits its batch at
 *      once; a session of that id already here stays as it is.  Then wait
 *      until every member whose link is up has their routes (wait_routes:
 *      the route barrier of SUBACKs, ADOPT_ROUTES_MS at most), and only
 *      then ask for the copies forwarded to N that it never acknowledged
 *      and those published for it since, kept by the members until they
 *      answer (cl_hand.c: ADOPT_COLLECT_MS at most): once a member has the
 *      routes, what it publishes for those sessions comes here directly
 *      too, so every message is covered one way or both.  The copies go
 *      to the sessions whose subscriptions match them (merge_collected:
 *      not what N had stored), each home worker queues them (phase 1,
 *      merge_item): not what the session holds already (the direct way),
 *      ahead of what came the direct way (keys from the range: below every
 *      later message's), and a copy merged drops its direct twin that
 *      comes later (ad_dedup_hook, sess_deliver's srv->dedup_hook): the
 *      home workers' part and the copies kept are cl_adopt_merge.c's;
 *   3. wait for every worker, then an empty batch on this node's store: a
 *      barrier, committed after every batch submitted before it; a failed
 *      commit meanwhile (store stats) abandons the adoption;
 *      once it committed the members release their kept copies (their
 *      publishers' acknowledgements leave: cl_hand_done);
 *   4. claim the installed client ids in etcd under this node's lease; one
 *      owned by another live node meanwhile (its client connected there
 *      with clean start) ends here (cl_owner_kick); every claim answered:
 *      the ids claimed go to the members and this node's registry, and
 *      the gates open (cl_hand_over: CL_F_ADOPT_IDS, CL_F_ADOPT_OVER;
 *      cl_recent.c);
 *   5. only now delete N's records (sessions, queues, QoS 2 ids and its
 *      retained messages, which every node has already: retained messages
 *      are replicated) and close N's store: the close leaves the state
 *      "adopted by <this node>" and frees the lock.
 * A crash of the adopter before 5 loses nothing: N's records are still
 * there, its lock frees itself (LOCK_TTL_MS) and the next survivor adopts
 * again (QoS 1 messages that were delivered in between come again; QoS 2
 * state is the stored one).  N started again with its name finds an empty
 * store and logs who adopted its sessions (store_redis.c).
 *
 * Threads: cl_adopt_member on the link thread, cl_adopt_pending on any
 * (an atomic), the items and ad_dedup_hook on the workers (the merged
 * copies under seen_mu), the rest on the adopter thread; the watch list and
 * the install counts are under mu.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_adopt_int.h"
#include "cl_etcd.h"
#include "log.h"
#include "persist.h"
#include "sess.h"
#include "store.h"
#include "store_rec.h"
#include "util.h"

#define ADOPT_POLL_MS 100     /* a watched store is looked at this often */
#define ADOPT_RANK_MS 3000    /* the next survivor's turn comes this much later */
#define ADOPT_RETRY_MS 1000   /* after a failed adoption */
#define ADOPT_CLAIMS_MS 10000 /* etcd answers the claims within this */
#define ADOPT_RECLAIM_MS 100  /* an id found owned elsewhere is claimed again this much later, */
#define ADOPT_RECLAIMS 10     /* ... this many times at most, before its session ends here */
#define ADOPT_SCAN_MS 2000    /* after start: the stores of nodes not members looked for */
#define ADOPT_ROUTES_MS 2000  /* the members have the adopted sessions' routes within this */
#define ADOPT_LATE_MS 10000   /* this node's late publishes reach the adopted sessions this long */

typedef struct {
    ad_job_t *job;
    ad_sess_t *s;
} ad_claim_t;

void ad_job_unref(ad_job_t *j)
{
    if (atomic_fetch_sub(&j->refs, 1) != 1)
        return;
    for (size_t i = 0; i < j->n; i++) {
        free(j->v[i].id);
        free(j->v[i].rec);
        cl_buf_free(&j->v[i].infl);
        cl_buf_free(&j->v[i].queued);
        cl_buf_free(&j->v[i].pids);
        for (uint32_t k = 0; k < j->v[i].nhand; k++)
            msg_unref(&j->v[i].hand[k].m);
        free(j->v[i].hand);
    }
    free(j->v);
    free(j->seq_next);
    free(j->seq_end);
    free(j);
}

void ad_put32(cl_buf_t *b, uint32_t v)
{
    cl_buf_reserve(b, 4);
    uint8_t *p = b->p + b->len;
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    b->len += 4;
}

/* ---- the watches ---- */

static void pending_update(cl_adopt_t *a) /* under mu */
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < a->nwatch; i++)
        n += a->watch[i].gate != 0;
    atomic_store(&a->pending, n);
}

void cl_adopt_member(cl_t *cl, const char *name, int present, int rank)
{
    cl_adopt_t *a = cl->adopt;
    pthread_mutex_lock(&a->mu);
    uint32_t i = 0;
    while (i < a->nwatch && strcmp(a->watch[i].name, name) != 0)
        i++;
    if (present && i < a->nwatch) {
        log_info("cluster: node %s is back: its sessions are its own again", name);
        a->watch[i] = a->watch[--a->nwatch];
    } else if (!present) {
        if (i == a->nwatch && a->nwatch < CL_MAX_NODES)
            a->nwatch++;
        if (i < a->nwatch) {
            ad_watch_t *w = &a->watch[i];
            snprintf(w->name, sizeof(w->name), "%s", name);
            w->since = an_now_ms();
            w->try_at = w->since + (uint64_t)rank * ADOPT_RANK_MS;
            w->gate = 1;
            w->over = 0;
            w->need_known = 0;
            memset(w->need, 0, sizeof(w->need));
            memset(w->overs, 0, sizeof(w->overs));
        }
    }
    pending_update(a);
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

int cl_adopt_pending(cl_t *cl)
{
    return cl->adopt != NULL && (atomic_load_explicit(&cl->adopt->pending, memory_order_relaxed) ||
                                 atomic_load_explicit(&cl->adopt->early, memory_order_acquire) > 0);
}

void cl_adopt_early(cl_t *cl, int delta)
{
    if (cl->adopt != NULL)
        atomic_fetch_add_explicit(&cl->adopt->early, delta, memory_order_acq_rel);
}

static void watch_end(cl_adopt_t *a, const char *name)
{
    cl_hand_watch_end(a->cl, name); /* what this node kept for it, released */
    pthread_mutex_lock(&a->mu);
    for (uint32_t i = 0; i < a->nwatch; i++)
        if (strcmp(a->watch[i].name, name) == 0) {
            a->watch[i] = a->watch[--a->nwatch];
            break;
        }
    pending_update(a);
    pthread_mutex_unlock(&a->mu);
}

static void watch_gate(cl_adopt_t *a, const char *name, int gate)
{
    pthread_mutex_lock(&a->mu);
    for (uint32_t i = 0; i < a->nwatch; i++)
        if (strcmp(a->watch[i].name, name) == 0 && !a->watch[i].over)
            a->watch[i].gate = gate;
    pending_update(a);
    pthread_mutex_unlock(&a->mu);
}

/* replicated: every adopter etcd names made its claims (none named: over) */
static int all_over(const ad_watch_t *w)
{
    if (!w->need_known)
        return 0;
    for (size_t k = 0; k < CL_MAX_NODES / 64; k++)
        if ((w->need[k] & w->overs[k]) != w->need[k])
            return 0;
    return 1;
}

/* over 1: N's adopter (node index from, 0 this node) made its claims
 * (CL_F_ADOPT_OVER, or this node is the adopter): resuming CONNECTs go on
 * at once (a client of N's finds its session's claim, on the adopter or
 * through a take-over from it) instead of waiting for this node's next
 * look at N's store; with replicated sessions only once every replica
 * that adopts a share of N has; 0: that adopter died before it finished
 * (the gate again until the next one has). */
static void watch_over(cl_adopt_t *a, const char *name, int over, int from)
{
    int repl = cl_repl_on(a->cl);
    pthread_mutex_lock(&a->mu);
    for (uint32_t i = 0; i < a->nwatch; i++)
        if (strcmp(a->watch[i].name, name) == 0) {
            ad_watch_t *w = &a->watch[i];
            if (repl && over) {
                w->overs[from / 64] |= 1ull << (from % 64);
                over = all_over(w);
            }
            w->over = over;
            w->gate = !over;
        }
    pending_update(a);
    pthread_mutex_unlock(&a->mu);
}

/* replicated: the adopters etcd names for N now (check_repl) */
static void watch_need(cl_adopt_t *a, const char *name, const uint64_t *need)
{
    pthread_mutex_lock(&a->mu);
    for (uint32_t i = 0; i < a->nwatch; i++)
        if (strcmp(a->watch[i].name, name) == 0) {
            ad_watch_t *w = &a->watch[i];
            memcpy(w->need, need, sizeof(w->need));
            w->need_known = 1;
            w->over = all_over(w);
            w->gate = !w->over;
        }
    pending_update(a);
    pthread_mutex_unlock(&a->mu);
}

void cl_adopt_over(cl_t *cl, const char *name, int from)
{
    if (cl->adopt != NULL && from >= 0 && from < CL_MAX_NODES)
        watch_over(cl->adopt, name, 1, from);
}

static void watch_retry(cl_adopt_t *a, const char *name, uint64_t at)
{
    pthread_mutex_lock(&a->mu);
    for (uint32_t i = 0; i < a->nwatch; i++)
        if (strcmp(a->watch[i].name, name) == 0 && a->watch[i].try_at < at)
            a->watch[i].try_at = at;
    pthread_mutex_unlock(&a->mu);
}

static int stopping(cl_adopt_t *a)
{
    pthread_mutex_lock(&a->mu);
    int s = a->stop;
    pthread_mutex_unlock(&a->mu);
    return s;
}

/* ---- reading the dead node's store ---- */

static int sess_cmp(const void *x, const void *y)
{
    const ad_sess_t *a = x, *b = y;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    return memcmp(a->id, b->id, a->len);
}

static ad_sess_t *job_find(ad_job_t *j, const uint8_t *id, size_t len)
{
    if (len > UINT16_MAX || j->n == 0)
        return NULL;
    ad_sess_t key = {.id = (uint8_t *)id, .len = (uint16_t)len};
    return bsearch(&key, j->v, j->n, sizeof(*j->v), sess_cmp);
}

static int scan_session(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    ad_job_t *j = ud;
    store_key_info_t ki;
    store_session_t rec;
    if (store_key_parse(k, kl, &ki) != 0 || ki.name_len == 0 || ki.name_len > UINT16_MAX ||
        memchr(ki.name, 0, ki.name_len) != NULL || store_rec_decode_session(v, vl, &rec) != 0) {
        j->bad++;
        return 0;
    }
    int expired =
        rec.expiry_interval == 0 || (rec.expiry_interval != SESS_NEVER && rec.expiry_deadline &&
                                     rec.expiry_deadline * 1000u <= j->now_wall_ms);
    store_rec_session_free(&rec);
    if (expired) {
        j->expired++;
        return 0;
    }
    if (j->n == j->cap) {
        j->cap = j->cap ? 2 * j->cap : 64;
        j->v = an_realloc(j->v, j->cap * sizeof(*j->v));
    }
    ad_sess_t *s = &j->v[j->n++];
    memset(s, 0, sizeof(*s));
    s->id = an_malloc(ki.name_len + 1);
    memcpy(s->id, ki.name, ki.name_len);
    s->id[ki.name_len] = '\0';
    s->len = (uint16_t)ki.name_len;
    s->rec = an_malloc(vl ? vl : 1);
    memcpy(s->rec, v, vl);
    s->rec_len = (uint32_t)vl;
    s->rc = -2;
    return 0;
}

/* A queue entry: its expiry from wall seconds to "ms left + 1" (the
 * hand-over's), one that expired before it was sent left out. */
static int scan_outmsg(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    ad_job_t *j = ud;
    store_key_info_t ki;
    store_outmsg_t o;
    if (store_key_parse(k, kl, &ki) != 0 || store_rec_decode_outmsg(v, vl, &o) != 0) {
        j->bad++;
        return 0;
    }
    ad_sess_t *s = job_find(j, ki.name, ki.name_len);
    if (s == NULL)
        return 0; /* its session expired or was unreadable */
    if (o.state != STORE_OUT_WAIT_PUBCOMP && o.expiry) {
        uint64_t at = o.expiry * 1000u;
        if (at <= j->now_wall_ms && o.state == STORE_OUT_QUEUED)
            return 0;
        o.expiry = (at > j->now_wall_ms ? at - j->now_wall_ms : 0) + 1;
    }
    size_t n = store_rec_encode_outmsg(&o, NULL, 0);
    if (n == 0) {
        j->bad++;
        return 0;
    }
    cl_buf_t *b = o.state == STORE_OUT_QUEUED ? &s->queued : &s->infl;
    ad_put32(b, (uint32_t)n);
    cl_buf_reserve(b, n);
    store_rec_encode_outmsg(&o, b->p + b->len, n);
    b->len += n;
    if (o.state == STORE_OUT_QUEUED)
        s->nqueued++;
    else
        s->ninfl++;
    j->messages++;
    return 0;
}

static int scan_incoming(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    ad_job_t *j = ud;
    store_key_info_t ki;
    (void)v, (void)vl;
    ad_sess_t *s = store_key_parse(k, kl, &ki) == 0 ? job_find(j, ki.name, ki.name_len) : NULL;
    if (s != NULL) {
        cl_buf_reserve(&s->pids, 2);
        s->pids.p[s->pids.len++] = (uint8_t)(ki.pid >> 8);
        s->pids.p[s->pids.len++] = (uint8_t)ki.pid;
        s->npids++;
    }
    return 0;
}

/* ---- the claims ---- */

static void on_claim(void *arg, const cl_etcd_res_t *res)
{
    ad_claim_t *c = arg;
    ad_job_t *j = c->job;
    cl_t *cl = j->a->cl;
    int claim = 3;
    if (res->err == CL_ETCD_OK && cl_etcd_txn_ok(res->json)) {
        claim = 1;
    } else if (res->err == CL_ETCD_OK) {
        const json_t *kv = cl_etcd_txn_kv(res->json);
        size_t kcap = 2 * CL_NAME_MAX + 32 + c->s->len;
        char *key = an_malloc(kcap), val[CL_NAME_MAX];
        if (kv != NULL && cl_etcd_kv(kv, key, kcap, val, sizeof(val)) == 0)
            claim = strcmp(val, cl->conf->node) == 0 ? 1 : 2;
        free(key);
    }
    pthread_mutex_lock(&j->a->mu);
    c->s->claim = claim;
    j->claims_left--;
    pthread_cond_broadcast(&j->a->cv);
    pthread_mutex_unlock(&j->a->mu);
    ad_job_unref(j);
    free(c);
}

/* Claim in etcd the ids of the sessions installed (s->rc 0): all of them,
 * or (again) those found owned elsewhere; waits for the answers
 * (ADOPT_CLAIMS_MS at most): 0, or -1. */
static int claims_send(cl_adopt_t *a, ad_job_t *j, cl_etcd_t *e, int64_t lease, int again)
{
    cl_t *cl = a->cl;
    size_t plen = strlen(cl->conf->name) + 20;
    for (size_t i = 0; i < j->n; i++) {
        ad_sess_t *s = &j->v[i];
        if (s->rc != 0 || (again && s->claim != 2))
            continue;
        ad_claim_t *c = an_malloc(sizeof(*c));
        c->job = j;
        c->s = s;
        char *key = an_malloc(plen + s->len + 1);
        snprintf(key, plen + s->len + 1, "/antenna/%s/clients/%s", cl->conf->name,
                 (const char *)s->id);
        pthread_mutex_lock(&a->mu);
        s->claim = 0;
        j->claims_left++;
        pthread_mutex_unlock(&a->mu);
        atomic_fetch_add(&j->refs, 1);
        if (cl_etcd_create(e, key, cl->conf->node, lease, on_claim, c) < 0) {
            pthread_mutex_lock(&a->mu);
            j->claims_left--;
            pthread_mutex_unlock(&a->mu);
            atomic_fetch_sub(&j->refs, 1);
            free(c);
        }
        free(key);
    }
    return ad_wait_zero(a, &j->claims_left, ADOPT_CLAIMS_MS);
}

/* Is some id found owned by another node? */
static int claims_elsewhere(cl_adopt_t *a, ad_job_t *j)
{
    int n = 0;
    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i < j->n && !n; i++)
        n = j->v[i].claim == 2;
    pthread_mutex_unlock(&a->mu);
    return n;
}

/* Waits until *count is 0 (under mu), at most ms or until stop: 0 or -1. */
int ad_wait_zero(cl_adopt_t *a, uint32_t *count, uint32_t ms)
{
    uint64_t deadline = an_now_ms() + ms;
    pthread_mutex_lock(&a->mu);
    while (*count > 0 && !a->stop && an_now_ms() < deadline) {
        struct timespec ts = an_wall_after(100);
        pthread_cond_timedwait(&a->cv, &a->mu, &ts);
    }
    int rc = *count == 0 ? 0 : -1;
    pthread_mutex_unlock(&a->mu);
    return rc;
}

/* Every member whose link is up has the routes of the sessions installed
 * (the route barrier a SUBACK waits for, cl_route.c), ADOPT_ROUTES_MS at
 * most: 0, or -1. */
static int wait_routes(cl_adopt_t *a)
{
    uint64_t posted, done, later, deadline = an_now_ms() + ADOPT_ROUTES_MS;
    cl_route_progress(a->cl, &posted, &done);
    pthread_mutex_lock(&a->mu);
    while (done < posted && !a->stop && an_now_ms() < deadline) {
        struct timespec ts = an_wall_after(5); /* route marks go every 20 ms at most */
        pthread_cond_timedwait(&a->cv, &a->mu, &ts);
        cl_route_progress(a->cl, &later, &done);
    }
    pthread_mutex_unlock(&a->mu);
    return done >= posted ? 0 : -1;
}

/* Every id claimed: tell the members which (they ask this node for those
 * sessions without a claim of their own first) and open their gates. */
static void over(cl_adopt_t *a, ad_job_t *j, const char *name, int64_t lease)
{
    cl_buf_t ids = {0};
    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i < j->n; i++)
        if (j->v[i].claim == 1) {
            cl_buf_reserve(&ids, 2u + j->v[i].len);
            ids.p[ids.len++] = (uint8_t)(j->v[i].len >> 8);
            ids.p[ids.len++] = (uint8_t)j->v[i].len;
            memcpy(ids.p + ids.len, j->v[i].id, j->v[i].len);
            ids.len += j->v[i].len;
        }
    pthread_mutex_unlock(&a->mu);
    cl_hand_over(a->cl, name, lease, ids.p, ids.len);
}

/* ---- one adoption ---- */

/* Steps 1-5 from ns, N's store (its Redis store, or its replica's copy
 * here: repl, where "adopted:<this node>" goes to etcd before step 5):
 * 0 adopted, -1 failed (try again later).  ns stays open. */
static int adopt_store(cl_adopt_t *a, const char *name, store_t *ns, const char *from, int repl)
{
    cl_t *cl = a->cl;
    server_t *srv = cl->srv;
    uint64_t t0 = an_now_ms();
    int rc = -1;
    ad_job_t *j = an_calloc(1, sizeof(*j));
    j->a = a;
    atomic_init(&j->refs, 1);
    j->now_wall_ms = an_wall_ms();
    int src = store_scan(ns, "s/", 2, scan_session, j);
    if (src == 0) {
        if (j->n > 0) /* a replica's copy may hold none */
            qsort(j->v, j->n, sizeof(*j->v), sess_cmp);
        src = store_scan(ns, "q/", 2, scan_outmsg, j);
    }
    if (src == 0)
        src = store_scan(ns, "i/", 2, scan_incoming, j);
    if (src != 0) {
        log_warn("cluster: reading the sessions of node %s: %s", name, store_strerror(src));
        goto done;
    }
    uint64_t t_read = an_now_ms();
    pthread_mutex_lock(&a->mu);
    a->cur = j; /* its ids are this node's to claim (cl_adopt_holds) */
    pthread_mutex_unlock(&a->mu);

    /* 2. to the home workers, and their routes to every member */
    store_stats_t st0, st1;
    store_stats(srv->store, &st0);
    j->seq_next = an_calloc(srv->nworkers, sizeof(*j->seq_next));
    j->seq_end = an_calloc(srv->nworkers, sizeof(*j->seq_end));
    if (ad_run_items(a, j, 0) < 0) {
        log_warn("cluster: adopting the sessions of node %s: the workers did not install them "
                 "in time: abandoned",
                 name);
        goto done;
    }
    uint64_t t_inst = an_now_ms();
    if (wait_routes(a) < 0)
        log_warn("cluster: adopting the sessions of node %s: not every member acknowledged "
                 "their routes within %u ms: asking for the messages kept anyway",
                 name, ADOPT_ROUTES_MS);
    uint64_t t_routes = an_now_ms();
    /* what this node routed for N before its sessions were here and its
     * link thread applies after its own ask: cl_adopt_late */
    atomic_fetch_add(&j->refs, 1);
    pthread_mutex_lock(&a->mu);
    ad_job_t *old_late = a->late_job;
    a->late_job = j;
    snprintf(a->late_name, sizeof(a->late_name), "%s", name);
    a->late_until = an_now_ms() + ADOPT_LATE_MS;
    pthread_mutex_unlock(&a->mu);
    if (old_late != NULL)
        ad_job_unref(old_late);
    /* the copies forwarded to N that it never acknowledged, and those
     * published for its sessions since, kept by their senders until now
     * (cl_hand.c): the members had this node's routes before they answer,
     * so what they publish after their answer comes the direct way */
    if (ad_collect(a, j, name) > 0 && ad_run_items(a, j, 1) < 0) {
        log_warn("cluster: adopting the sessions of node %s: the workers did not queue the "
                 "messages kept for them in time: abandoned",
                 name);
        goto done;
    }
    atomic_fetch_add(&a->handed, atomic_load(&j->merged));
    j->messages += atomic_load(&j->merged);

    /* 3. in this node's store */
    int brc = store_submit_sync(srv->store, store_batch_new());
    store_stats(srv->store, &st1);
    if (brc != 0 || st1.batches_failed != st0.batches_failed) {
        log_warn("cluster: adopting the sessions of node %s: this node's store failed a commit "
                 "meanwhile (%s): abandoned, adopted again later",
                 name, brc ? store_strerror(brc) : "see above");
        goto done;
    }
    cl_hand_done(cl, name); /* stored here: their senders release the copies */
    uint64_t t_stored = an_now_ms();

    /* 4. the client ids */
    cl_etcd_t *e = cl_member_etcd(cl);
    int64_t lease = cl_member_lease(cl);
    size_t installed = 0, here = 0, unreadable = 0, elsewhere = 0;
    if (e == NULL || lease == 0) {
        log_warn("cluster: adopting the sessions of node %s: no lease: abandoned", name);
        goto done;
    }
    for (size_t i = 0; i < j->n; i++) {
        ad_sess_t *s = &j->v[i];
        if (s->rc != 0) {
            here += s->rc == 1;
            unreadable += s->rc < 0;
            continue;
        }
        installed++;
    }
    int crc = claims_send(a, j, e, lease, 0);
    /* An id owned elsewhere may be a claim on its way out: a node that
     * claimed it between the dead node's lease going and its own sight of
     * the member going out refuses that CONNECT and deletes its claim
     * (cl_owner.c unclaim_refuse); ending the session at once lost it
     * (test_104).  Claimed again a few times first: a claim that stays (a
     * client started afresh elsewhere meanwhile) ends it as before. */
    for (int r = 0; r < ADOPT_RECLAIMS && crc == 0 && claims_elsewhere(a, j) && !a->stop; r++) {
        struct timespec ts = {0, ADOPT_RECLAIM_MS * 1000000L};
        nanosleep(&ts, NULL);
        crc = claims_send(a, j, e, lease, 1);
    }
    if (crc < 0)
        log_warn("cluster: adopting the sessions of node %s: etcd did not answer every claim "
                 "in time (the sessions stay here)",
                 name);
    else
        over(a, j, name, lease); /* every id claimed: the members' gates open */
    uint64_t t_claimed = an_now_ms();
    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i < j->n; i++)
        if (j->v[i].claim == 2) {
            elsewhere++;
            cl_owner_kick(cl, (const char *)j->v[i].id);
        }
    pthread_mutex_unlock(&a->mu);

    /* 5. out of the dead node's store; with a replica, etcd says first
     * that N's sessions are here (N started again empties its own) */
    if (repl && cl_repl_etcd_adopted(cl, name, 1) < 0) {
        log_warn("cluster: adopting the sessions of node %s: recording the adoption in etcd "
                 "failed (tried again later: the sessions here stay)",
                 name);
        goto done;
    }
    store_batch_t *del = store_batch_new();
    static const char *const fam[] = {"s/", "q/", "i/", "r/"};
    for (size_t f = 0; f < 4; f++)
        store_batch_del_prefix(del, fam[f], 2);
    int drc = store_submit_sync(ns, del);
    if (drc != 0) {
        log_warn("cluster: adopting the sessions of node %s: deleting them from its store: %s "
                 "(adopted again later: the sessions here stay)",
                 name, store_strerror(drc));
        goto done;
    }
    uint64_t ms = an_now_ms() - t0;
    atomic_fetch_add(&a->adoptions, 1);
    atomic_fetch_add(&a->sessions, installed);
    atomic_fetch_add(&a->messages, j->messages);
    atomic_store(&a->last_ms, ms);
    atomic_store(&a->last_sessions, installed);
    log_info("cluster: adopted the sessions of node %s from %s: %zu sessions with %zu "
             "messages in %" PRIu64 " ms (read in %" PRIu64 ", installed %" PRIu64
             ", routes known %" PRIu64 ", stored %" PRIu64 ", claimed %" PRIu64
             " ms after the start; %" PRIu64 " kept copies queued, %" PRIu64
             " there already; %zu here already, %zu owned elsewhere meanwhile and ended here, "
             "%zu expired, %zu unreadable)",
             name, from, installed, j->messages, ms, t_read - t0, t_inst - t0, t_routes - t0,
             t_stored - t0, t_claimed - t0, atomic_load(&j->merged), atomic_load(&j->skipped), here,
             elsewhere, j->expired, unreadable + j->bad);
    rc = 0;
done:
    pthread_mutex_lock(&a->mu);
    if (a->cur == j)
        a->cur = NULL;
    pthread_mutex_unlock(&a->mu);
    if (rc != 0)
        atomic_fetch_add(&a->failures, 1);
    ad_job_unref(j);
    return rc;
}

int cl_adopt_holds(cl_t *cl, const char *id, size_t len)
{
    cl_adopt_t *a = cl->adopt;
    if (a == NULL)
        return 0;
    pthread_mutex_lock(&a->mu);
    int held = a->cur != NULL && job_find(a->cur, (const uint8_t *)id, len) != NULL;
    pthread_mutex_unlock(&a->mu);
    return held;
}

/* 0 adopted (or nothing to adopt), -1 failed or busy: try again later. */
static int adopt(cl_adopt_t *a, const char *name)
{
    cl_t *cl = a->cl;
    const conf_t *cf = &cl->srv->conf;
    char prefix[sizeof(cf->persistence_redis.prefix) + CL_NAME_MAX], where[sizeof(prefix) + 96];
    char err[768];

    persist_redis_prefix(cf, name, prefix, sizeof(prefix));
    snprintf(where, sizeof(where), "%s (node %.63s)", prefix, name);
    store_opts_t o = {.backend = STORE_BACKEND_REDIS,
                      .path = where,
                      .sync = (store_sync_t)cf->persistence_sync,
                      .sync_interval_ms = cf->sync_interval_ms,
                      .redis_url = cf->persistence_redis.url,
                      .redis_prefix = prefix,
                      .redis_connect_timeout_ms = cf->persistence_redis.connect_timeout_ms,
                      .redis_timeout_ms = cf->persistence_redis.timeout_ms,
                      .redis_adopted_by = cl->conf->node};
    store_t *ns = store_open(&o, err, sizeof(err));
    if (ns == NULL) {
        log_limited(5000, AN_LOG_WARN, "cluster: cannot adopt the sessions of node %s yet: %s",
                    name, err);
        return -1;
    }
    int rc = adopt_store(a, name, ns, "Redis", 0);
    store_close(ns); /* the state says "adopted by" once no session is left */
    return rc;
}

/* A live member's node index (0: this node), -1 when `name` is not one. */
static int member_index(cl_t *cl, const char *name)
{
    if (strcmp(name, cl->conf->node) == 0)
        return 0;
    int idx = -1;
    pthread_mutex_lock(&cl->snap_mu);
    for (int i = 1; i < CL_MAX_NODES && idx < 0; i++)
        if (cl->snap[i].used && cl->snap[i].member && strcmp(cl->snap[i].name, name) == 0)
            idx = i;
    pthread_mutex_unlock(&cl->snap_mu);
    return idx;
}

/* session_store: replicated: etcd's replica/<N>/<R> names the replicas of
 * N's shares; each adopts the sessions of its own copy of N's store and
 * then takes its name out.  Every survivor keeps the gate until each named
 * replica that lives made its claims (CL_F_ADOPT_OVER) and ends its watch
 * once none that lives is named, or N stopped cleanly. */
static void check_repl(cl_adopt_t *a, const ad_watch_t *w)
{
    cl_t *cl = a->cl;
    char val[CL_NAME_MAX + 16];
    if (cl_repl_etcd_get(cl, w->name, val, sizeof(val)) < 0) {
        log_limited(5000, AN_LOG_WARN, "cluster: etcd did not say who holds node %s's sessions",
                    w->name);
        return;
    }
    if (strcmp(val, "stopped") == 0) {
        log_info("cluster: node %s stopped cleanly: its sessions wait for a node with its name",
                 w->name);
        watch_end(a, w->name);
        return;
    }
    char(*names)[CL_NAME_MAX] = an_calloc(CL_MAX_NODES, CL_NAME_MAX);
    int n = cl_repl_etcd_replicas(cl, w->name, names, CL_MAX_NODES);
    if (n < 0) {
        log_limited(5000, AN_LOG_WARN, "cluster: etcd did not say who holds node %s's sessions",
                    w->name);
        free(names);
        return;
    }
    uint64_t need[CL_MAX_NODES / 64] = {0};
    int mine = 0, live = 0;
    for (int i = 0; i < n; i++) {
        int idx = member_index(cl, names[i]);
        if (idx < 0)
            continue; /* gone too: its share is not adopted */
        need[idx / 64] |= 1ull << (idx % 64);
        live++;
        mine |= idx == 0;
    }
    free(names);
    if (!mine)
        cl_repl_copy_forget(cl, w->name); /* not a copy to adopt from (if any): stale */
    if (live == 0) {
        if (strncmp(val, "adopted:", 8) == 0)
            log_info("cluster: node %s's sessions were adopted by its replicas", w->name);
        else
            log_warn("cluster: node %s has no live replica in sync: its sessions (or those not "
                     "adopted yet) are not adopted",
                     w->name);
        watch_end(a, w->name);
        return;
    }
    watch_need(a, w->name, need);
    if (!mine)
        return; /* its replicas adopt: the gate stays until they made their claims */
    int complete = 0, loose = 0;
    store_t *ns = cl_repl_copy_open(cl, w->name, &complete, &loose);
    if (ns == NULL || !complete) {
        log_warn("cluster: this node is named a replica of node %s but holds no complete copy of "
                 "its share: those sessions are not adopted",
                 w->name);
        if (ns != NULL && loose)
            store_close(ns);
        if (cl_repl_etcd_adopted(cl, w->name, 0) < 0) /* the others stop waiting for it */
            watch_retry(a, w->name, an_now_ms() + ADOPT_RETRY_MS);
        return;
    }
    if (adopt_store(a, w->name, ns, "its replica here", 1) == 0) {
        cl_repl_copy_drop(cl, w->name, ns); /* the sessions are this node's own now; the
                                             * watch ends once no other replica adopts */
    } else {
        if (loose)
            store_close(ns);
        watch_retry(a, w->name, an_now_ms() + ADOPT_RETRY_MS);
    }
}

/* ---- at start: stores of nodes that died before this node came ---- */

typedef struct {
    char names[CL_MAX_NODES][CL_NAME_MAX];
    uint32_t n;
    const char *pre, *post;
    size_t prel, postl;
} ad_scan_t;

static void scan_key(void *arg, const char *k, size_t len)
{
    ad_scan_t *s = arg;
    if (len <= s->prel + s->postl || memcmp(k, s->pre, s->prel) != 0 ||
        memcmp(k + len - s->postl, s->post, s->postl) != 0)
        return;
    size_t nl = len - s->prel - s->postl;
    if (nl >= CL_NAME_MAX || memchr(k + s->prel, 0, nl) != NULL)
        return;
    for (uint32_t i = 0; i < s->n; i++)
        if (strlen(s->names[i]) == nl && memcmp(s->names[i], k + s->prel, nl) == 0)
            return; /* SCAN may give a key twice */
    if (s->n == CL_MAX_NODES)
        return;
    memcpy(s->names[s->n], k + s->prel, nl);
    s->names[s->n++][nl] = '\0';
}

/* glob-escaped src (SCAN's MATCH) at the end of out */
static void glob_cat(char *out, size_t cap, const char *src, size_t n)
{
    size_t o = strlen(out);
    for (size_t i = 0; i < n && o + 2 < cap; i++) {
        if (strchr("*?[]\\", src[i]) != NULL)
            out[o++] = '\\';
        out[o++] = src[i];
    }
    out[o] = '\0';
}

/* Every node's store in Redis whose node is not a member (it died while no
 * node that is up now was a member: nobody saw it go out) is watched as if
 * this node had seen it go out: its sessions are adopted by the same rules
 * (a store stopped cleanly, adopted or empty ends its watch at once). */
static void startup_scan(cl_adopt_t *a)
{
    const conf_t *cf = &a->cl->srv->conf;
    const char *tmpl = cf->persistence_redis.prefix, *at = strstr(tmpl, "{node}");
    if (at == NULL)
        return;
    ad_scan_t *s = an_calloc(1, sizeof(*s));
    char post[sizeof(cf->persistence_redis.prefix) + 8], pattern[4 * sizeof(post) + 8] = "";
    char err[512];
    snprintf(post, sizeof(post), "%sindex", at + 6);
    s->pre = tmpl;
    s->prel = (size_t)(at - tmpl);
    s->post = post;
    s->postl = strlen(post);
    glob_cat(pattern, sizeof(pattern), tmpl, s->prel);
    strcat(pattern, "*");
    glob_cat(pattern, sizeof(pattern), post, s->postl);
    if (store_redis_scan_keys(cf->persistence_redis.url, pattern, cf->persistence_redis.timeout_ms,
                              1000, scan_key, s, err, sizeof(err)) != 0) {
        log_warn("cluster: looking for the stores of nodes that are not members: %s", err);
    } else {
        for (uint32_t i = 0; i < s->n; i++)
            if (strcmp(s->names[i], a->cl->conf->node) != 0)
                cl_adopt_unseen(a->cl, s->names[i]);
    }
    free(s);
}

/* ---- the adopter thread ---- */

static void check(cl_adopt_t *a, const ad_watch_t *w, uint64_t now)
{
    const conf_t *cf = &a->cl->srv->conf;
    char prefix[sizeof(cf->persistence_redis.prefix) + CL_NAME_MAX], err[512];
    if (now - w->since > a->cl->conf->adopt_wait_ms) {
        log_warn("cluster: node %s went out %u ms ago and its sessions were not adopted: "
                 "not waiting any longer (cluster.adopt_wait)",
                 w->name, a->cl->conf->adopt_wait_ms);
        watch_end(a, w->name);
        return;
    }
    if (cl_repl_on(a->cl)) {
        check_repl(a, w);
        return;
    }
    persist_redis_prefix(cf, w->name, prefix, sizeof(prefix));
    store_redis_peek_t pk;
    if (store_redis_peek(cf->persistence_redis.url, prefix, cf->persistence_redis.timeout_ms, &pk,
                         err, sizeof(err)) != 0) {
        log_limited(5000, AN_LOG_WARN, "cluster: looking at the store of node %s: %s", w->name,
                    err);
        return;
    }
    if (strcmp(pk.state, "stopped") == 0 || strncmp(pk.state, "adopted ", 8) == 0 ||
        !pk.has_sessions) {
        if (strcmp(pk.state, "stopped") == 0 && pk.has_sessions)
            log_info("cluster: node %s stopped cleanly: its sessions wait for a node with its "
                     "name",
                     w->name);
        watch_end(a, w->name);
        return;
    }
    /* its lock held by a live process that is not an adopter: N itself, cut
     * off from etcd but alive (it renews its lock): its clients stay with
     * it, nobody else needs to wait (until its lock expires) */
    int own_holder = pk.holder[0] && !pk.holder_gone && !pk.adopting;
    if (w->over && !(pk.holder[0] && !pk.holder_gone))
        watch_over(a, w->name, 0, 0); /* its adopter died before it deleted N's sessions */
    if (own_holder == w->gate)
        watch_gate(a, w->name, !own_holder);
    if ((pk.holder[0] && !pk.holder_gone) || now < w->try_at)
        return; /* a live holder (N, or a survivor adopting), or not our turn yet */
    if (adopt(a, w->name) == 0)
        watch_end(a, w->name);
    else
        watch_retry(a, w->name, an_now_ms() + ADOPT_RETRY_MS);
}

/* Waits on a->cv (a->mu held) for ADOPT_POLL_MS at most. */
static void poll_wait(cl_adopt_t *a)
{
    struct timespec ts = an_wall_after(ADOPT_POLL_MS);
    pthread_cond_timedwait(&a->cv, &a->mu, &ts);
}

static void *adopt_main(void *arg)
{
    cl_adopt_t *a = arg;
    pthread_setname_np(pthread_self(), "an-adopt");
    /* the start-up look is Redis': a replicated node's copies are named in
     * etcd by the nodes that made them */
    uint64_t scan_at = cl_repl_on(a->cl) ? 0 : an_now_ms() + ADOPT_SCAN_MS;
    pthread_mutex_lock(&a->mu);
    while (!a->stop) {
        if (a->late_job != NULL && an_now_ms() > a->late_until) {
            ad_job_t *j = a->late_job; /* its sessions' records are not needed any more */
            a->late_job = NULL;
            pthread_mutex_unlock(&a->mu);
            ad_job_unref(j);
            pthread_mutex_lock(&a->mu);
            continue;
        }
        if (scan_at != 0 && an_now_ms() >= scan_at) {
            scan_at = 0;
            pthread_mutex_unlock(&a->mu);
            startup_scan(a);
            pthread_mutex_lock(&a->mu);
            continue;
        }
        if (a->nwatch == 0) {
            if (scan_at == 0 && a->late_job == NULL) {
                pthread_cond_wait(&a->cv, &a->mu);
            } else {
                poll_wait(a);
            }
            continue;
        }
        ad_watch_t copy[CL_MAX_NODES];
        uint32_t n = a->nwatch;
        memcpy(copy, a->watch, n * sizeof(*copy));
        pthread_mutex_unlock(&a->mu);
        uint64_t now = an_now_ms();
        for (uint32_t i = 0; i < n && !stopping(a); i++)
            check(a, &copy[i], now);
        pthread_mutex_lock(&a->mu);
        if (a->stop || a->nwatch == 0)
            continue;
        poll_wait(a);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* ---- the module's calls ---- */

int cl_adopt_init(cl_t *cl)
{
    const conf_t *cf = &cl->srv->conf;
    if (!cl->conf->adopt || cl->conf->etcd[0] == '\0' || !cf->persistence_enabled ||
        (cf->persistence_backend != CONF_STORE_REDIS && !cl_repl_on(cl)))
        return 0;
    if (!cl_repl_on(cl) && strstr(cf->persistence_redis.prefix, "{node}") == NULL) {
        log_warn("cluster: persistence.redis.prefix has no {node}: the nodes share one store "
                 "and no dead node's sessions can be adopted (cluster.adopt is ignored)");
        return 0;
    }
    cl_adopt_t *a = an_calloc(1, sizeof(*a));
    a->cl = cl;
    pthread_mutex_init(&a->seen_mu, NULL);
    cl->srv->dedup_hook = ad_dedup_hook;
    cl->srv->dedup_user = a;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    cl->adopt = a;
    return 0;
}

int cl_adopt_start(cl_t *cl)
{
    cl_adopt_t *a = cl->adopt;
    if (a == NULL)
        return 0;
    int rc = pthread_create(&a->thread, NULL, adopt_main, a);
    if (rc != 0) {
        log_error("cluster: cannot start the adopter thread: %s", strerror(rc));
        return -1;
    }
    a->started = 1;
    return 0;
}

void cl_adopt_stop(cl_t *cl)
{
    cl_adopt_t *a = cl->adopt;
    if (a == NULL || !a->started)
        return;
    pthread_mutex_lock(&a->mu);
    a->stop = 1;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    a->started = 0;
}

void cl_adopt_free(cl_t *cl)
{
    cl_adopt_t *a = cl->adopt;
    if (a == NULL)
        return;
    cl_adopt_stop(cl);
    for (uint32_t i = 0; i < a->ncoll; i++)
        msg_unref(&a->coll[i]);
    free(a->coll);
    if (a->late_job != NULL)
        ad_job_unref(a->late_job);
    ad_seen_prune(&a->seen, UINT64_MAX); /* every one past its time */
    free(a->seen.v);
    pthread_mutex_destroy(&a->seen_mu);
    cl->srv->dedup_hook = NULL;
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a);
    cl->adopt = NULL;
}

void cl_adopt_metrics(cl_t *cl, module_metrics_t *mm)
{
    cl_adopt_t *a = cl->adopt;
    if (a == NULL)
        return;
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"antenna_cluster_adoptions_total", "counter",
         "Dead members whose sessions this node adopted from their Redis store."},
        {"antenna_cluster_adopted_sessions_total", "counter",
         "Sessions this node adopted from dead members' stores."},
        {"antenna_cluster_adopted_messages_total", "counter",
         "Queued and in-flight messages of the sessions adopted."},
        {"antenna_cluster_adoption_failures_total", "counter",
         "Adoptions abandoned midway (tried again later; nothing lost)."},
        {"antenna_cluster_adoption_last_duration_ms", "gauge",
         "How long the last adoption took, from opening the dead node's store to deleting it."},
        {"antenna_cluster_adoption_last_sessions", "gauge",
         "Sessions the last adoption installed."},
        {"antenna_cluster_adoptions_pending", "gauge",
         "Members gone out whose stores may still hold sessions to adopt (resuming CONNECTs "
         "are refused with 0x88 meanwhile)."},
        {"antenna_cluster_adopted_handed_total", "counter",
         "Messages forwarded to the dead members and never acknowledged by them, kept by "
         "the members and queued to the adopted sessions."},
        {"antenna_cluster_adopted_twins_dropped_total", "counter",
         "Messages that reached an adopted session the direct way after the same message, "
         "kept by a member, was queued to it: dropped."},
    };
    uint64_t v[] = {
        atomic_load(&a->adoptions), atomic_load(&a->sessions), atomic_load(&a->messages),
        atomic_load(&a->failures),  atomic_load(&a->last_ms),  atomic_load(&a->last_sessions),
        atomic_load(&a->pending),   atomic_load(&a->handed),   atomic_load(&a->dropped_direct)};
    for (size_t i = 0; i < sizeof(fam) / sizeof(fam[0]); i++) {
        module_metrics_family(mm, fam[i].name, fam[i].type, fam[i].help);
        module_metrics_printf(mm, "%s %" PRIu64 "\n", fam[i].name, v[i]);
    }
}
