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
 *      comes later (dedup_hook, sess_deliver's srv->dedup_hook);
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
 * (an atomic), the items and dedup_hook on the workers (seen[w]: worker w's
 * own), the rest on the adopter thread; the watch list and the install
 * counts are under mu.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_etcd.h"
#include "cl_int.h"
#include "cl_wire.h"
#include "log.h"
#include "persist.h"
#include "sess.h"
#include "store.h"
#include "store_rec.h"
#include "trie.h"
#include "util.h"

#define ADOPT_POLL_MS 100            /* a watched store is looked at this often */
#define ADOPT_RANK_MS 3000           /* the next survivor's turn comes this much later */
#define ADOPT_RETRY_MS 1000          /* after a failed adoption */
#define ADOPT_INSTALL_MS 60000       /* the workers install within this, or it fails */
#define ADOPT_CLAIMS_MS 10000        /* etcd answers the claims within this */
#define ADOPT_COLLECT_MS 5000        /* the members send what they kept for N within this */
#define ADOPT_SCAN_MS 2000           /* after start: the stores of nodes not members looked for */
#define ADOPT_ROUTES_MS 2000         /* the members have the adopted sessions' routes within this */
#define ADOPT_DEDUP_MS 60000         /* a kept copy merged drops its direct twin this long */
#define ADOPT_SEQ_RANGE (1ull << 32) /* store keys reserved per worker and adoption */
#define ADOPT_LATE_MS 10000 /* this node's late publishes reach the adopted sessions this long */

typedef struct {
    char name[CL_NAME_MAX];
    uint64_t since, try_at; /* monotonic ms */
    int gate;               /* resuming CONNECTs wait (0: N itself holds its lock) */
    int over;               /* its adopter claimed the client ids: no gate (cl_adopt_over) */
    /* replicated: the adopters (node indexes, 0 this node) etcd names, once
     * read (need_known), and those that made their claims (CL_F_ADOPT_OVER) */
    int need_known;
    uint64_t need[CL_MAX_NODES / 64], overs[CL_MAX_NODES / 64];
} ad_watch_t;

/* A copy merged into adopted session sid on its home worker: a copy that
 * comes the direct way too (published while both N's routes and this
 * node's were known) is dropped when it reaches the session (dedup_hook),
 * until `until` (monotonic ms).  Each one drops one copy at most. */
typedef struct {
    uint64_t sid, until;
    msg_t *m;
} ad_seen_t;

typedef struct {
    ad_seen_t *v;
    size_t n, cap;
} ad_seenv_t;

struct cl_adopt_s {
    cl_t *cl;
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;                       /* under mu */
    ad_watch_t watch[CL_MAX_NODES]; /* under mu */
    uint32_t nwatch;
    _Atomic uint32_t pending; /* watches with gate set, for the connect gate */
    _Atomic int32_t early;    /* departures the etcd thread saw, not yet watched (link thread) */
    _Atomic uint64_t adoptions, sessions, messages, failures, last_ms, last_sessions;
    _Atomic uint64_t handed; /* copies kept by the members, merged into adopted sessions */
    /* the copies the members kept for the node being adopted (cl_hand.c),
     * under mu: coll_on while adopt() collects, coll_left answers due */
    char coll_name[CL_NAME_MAX];
    int coll_on;
    uint32_t coll_left;
    msg_t **coll;
    uint32_t ncoll, cap_coll;
    ad_seenv_t *seen; /* [nworkers]: each worker's own (dedup_hook) */
    /* the latest adoption here, for cl_adopt_late (under mu; a reference) */
    struct ad_job_s *late_job;
    char late_name[CL_NAME_MAX];
    uint64_t late_until;
    _Atomic uint64_t dropped_direct; /* direct copies dropped as handed already */
};

/* A copy kept by a member for N, to be queued to one adopted session. */
typedef struct {
    msg_t *m;
    uint8_t qos, retain;
} ad_hand_t;

/* One session of the dead node, in the hand-over format being built. */
typedef struct {
    uint8_t *id;
    uint16_t len;
    uint32_t home;
    uint8_t *rec; /* the session record */
    uint32_t rec_len;
    cl_buf_t infl, queued; /* u32 len | outmsg record, each */
    uint32_t ninfl, nqueued;
    cl_buf_t pids;
    uint32_t npids;
    ad_hand_t *hand; /* the kept copies for it (merge_collected), queued by merge_item */
    uint32_t nhand;
    int rc;    /* cl_owner_install's, -2 not run */
    int claim; /* 0 not answered, 1 ours, 2 another node's, 3 failed */
} ad_sess_t;

typedef struct ad_job_s {
    cl_adopt_t *a;
    _Atomic int refs;
    uint32_t left, claims_left; /* under a->mu */
    ad_sess_t *v;
    size_t n, cap;
    uint64_t now_wall_ms;
    size_t messages, expired, bad;
    /* per worker: the store keys reserved for the adopted sessions' stored
     * messages and then the kept copies (below every key of a message that
     * reaches them the direct way); seq_next, seq_end[nworkers] */
    uint64_t *seq_next, *seq_end;
    _Atomic uint64_t merged, skipped; /* kept copies queued / found there already */
} ad_job_t;

/* What a home worker does with its adopted sessions: install them (phase
 * 0), then queue the copies the members kept (phase 1, merge_item). */
typedef struct {
    ad_job_t *job;
    int phase;
    int late; /* cl_adopt_late's: s[] are its own (one copy each), not waited for */
    uint32_t n;
    ad_sess_t *s[];
} ad_item_t;

typedef struct {
    ad_job_t *job;
    ad_sess_t *s;
} ad_claim_t;


/* What a queued message counts against the session's limits.max_queued_bytes
 * (sess.h: the queue ring keeps the sum). */
static uint64_t queued_bytes(const msg_t *m)
{
    return m ? (uint64_t)m->topic_len + m->props_len + m->payload_len : 0;
}

static void job_unref(ad_job_t *j)
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

static void put32(cl_buf_t *b, uint32_t v)
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
    put32(b, (uint32_t)n);
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

/* ---- on the home workers ---- */

/* The same message: topic, payload, properties, and the publish time when
 * both know it (a copy rebuilt from N's store does not). */
static int same_msg(const msg_t *x, const msg_t *y)
{
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

/* The merged copies of worker w: those past their time or used go. */
static void seen_prune(ad_seenv_t *sv, uint64_t now)
{
    size_t k = 0;
    for (size_t i = 0; i < sv->n; i++) {
        if (sv->v[i].m != NULL && sv->v[i].until > now)
            sv->v[k++] = sv->v[i];
        else if (sv->v[i].m != NULL)
            msg_unref(&sv->v[i].m);
    }
    sv->n = k;
}

static int seen_cmp(const void *x, const void *y)
{
    const ad_seen_t *a = x, *b = y;
    return a->sid < b->sid ? -1 : a->sid > b->sid;
}

/* srv->dedup_hook, for a session marked adopt_dedup, on its home worker:
 * 1 when m is the direct twin of a kept copy merged into it (dropped). */
static int dedup_hook(worker_t *w, sess_t *s, const msg_t *m, void *user)
{
    cl_adopt_t *a = user;
    ad_seenv_t *sv = &a->seen[w->id];
    size_t lo = 0, hi = sv->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sv->v[mid].sid < s->sid)
            lo = mid + 1;
        else
            hi = mid;
    }
    int live = 0;
    for (size_t i = lo; i < sv->n && sv->v[i].sid == s->sid; i++) {
        ad_seen_t *e = &sv->v[i];
        if (e->m == NULL || e->until <= w->now)
            continue;
        if (same_msg(e->m, m)) {
            msg_unref(&e->m);
            atomic_fetch_add_explicit(&a->dropped_direct, 1, memory_order_relaxed);
            return 1;
        }
        live = 1;
    }
    if (!live)
        s->adopt_dedup = 0;
    return 0;
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
        put32(&b, s->rec_len);
        cl_buf_reserve(&b, s->rec_len);
        memcpy(b.p + b.len, s->rec, s->rec_len);
        b.len += s->rec_len;
        put32(&b, s->ninfl + s->nqueued);
        cl_buf_reserve(&b, s->infl.len + s->queued.len);
        if (s->infl.len)
            memcpy(b.p + b.len, s->infl.p, s->infl.len);
        b.len += s->infl.len;
        if (s->queued.len)
            memcpy(b.p + b.len, s->queued.p, s->queued.len);
        b.len += s->queued.len;
        put32(&b, s->npids);
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
 * later (dedup_hook, ADOPT_DEDUP_MS). */
static void merge_item(worker_t *w, ad_item_t *it)
{
    ad_job_t *j = it->job;
    ad_seenv_t *sv = &j->a->seen[w->id];
    uint64_t end = j->seq_end[w->id], merged = 0, skipped = 0;
    seen_prune(sv, w->now);
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
            add[k] =
                !msg_expired(m, w->now) && !sq_holds(&s->inflight, m) && !sq_holds(&s->queue, m);
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
    job_unref(j);
    free(it);
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
    job_unref(j);
    free(c);
}

/* Waits until *count is 0 (under mu), at most ms or until stop: 0 or -1. */
static int wait_zero(cl_adopt_t *a, uint32_t *count, uint32_t ms)
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
        if (same_bytes(o.topic, o.topic_len, msg_topic(m), m->topic_len) &&
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
static size_t collect(cl_adopt_t *a, ad_job_t *j, const char *name)
{
    pthread_mutex_lock(&a->mu);
    size_t nl = strnlen(name, sizeof(a->coll_name) - 1);
    memcpy(a->coll_name, name, nl);
    a->coll_name[nl] = '\0';
    a->coll_on = 1;
    a->coll_left = UINT32_MAX; /* until the link thread says how many it asked */
    pthread_mutex_unlock(&a->mu);
    int rc = cl_hand_ask(a->cl, name) == 0 ? wait_zero(a, &a->coll_left, ADOPT_COLLECT_MS) : -1;
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
    job_unref(j);
}

/* Posts each home worker its sessions of j (phase 0: install them, 1:
 * queue the kept copies) and waits for them: 0, or -1 (ADOPT_INSTALL_MS
 * passed, or stopping). */
static int run_items(cl_adopt_t *a, ad_job_t *j, int phase)
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
    return wait_zero(a, &j->left, ADOPT_INSTALL_MS);
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

    /* 2. to the home workers, and their routes to every member */
    store_stats_t st0, st1;
    store_stats(srv->store, &st0);
    j->seq_next = an_calloc(srv->nworkers, sizeof(*j->seq_next));
    j->seq_end = an_calloc(srv->nworkers, sizeof(*j->seq_end));
    if (run_items(a, j, 0) < 0) {
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
        job_unref(old_late);
    /* the copies forwarded to N that it never acknowledged, and those
     * published for its sessions since, kept by their senders until now
     * (cl_hand.c): the members had this node's routes before they answer,
     * so what they publish after their answer comes the direct way */
    if (collect(a, j, name) > 0 && run_items(a, j, 1) < 0) {
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
    size_t plen = strlen(cl->conf->name) + 20;
    for (size_t i = 0; i < j->n; i++) {
        ad_sess_t *s = &j->v[i];
        if (s->rc != 0) {
            here += s->rc == 1;
            unreadable += s->rc < 0;
            continue;
        }
        installed++;
        ad_claim_t *c = an_malloc(sizeof(*c));
        c->job = j;
        c->s = s;
        char *key = an_malloc(plen + s->len + 1);
        snprintf(key, plen + s->len + 1, "/antenna/%s/clients/%s", cl->conf->name,
                 (const char *)s->id);
        pthread_mutex_lock(&a->mu);
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
    if (wait_zero(a, &j->claims_left, ADOPT_CLAIMS_MS) < 0)
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
    if (rc != 0)
        atomic_fetch_add(&a->failures, 1);
    job_unref(j);
    return rc;
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
            job_unref(j);
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
    a->seen = an_calloc(cl->srv->nworkers, sizeof(*a->seen));
    cl->srv->dedup_hook = dedup_hook;
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
        job_unref(a->late_job);
    for (uint32_t w = 0; w < cl->srv->nworkers; w++) {
        seen_prune(&a->seen[w], UINT64_MAX); /* every one past its time */
        free(a->seen[w].v);
    }
    free(a->seen);
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
