/* cl_repl.c -- persistence.session_store: replicated: this node's store
 * copied to a replica node over the node links, and the copies this node
 * keeps for others (docs/cluster.md "Where sessions live", "Replicated
 * sessions").  No service beyond etcd.
 *
 * Granularity: one replica per primary NODE: all of node N's store (its
 * sessions, queues, QoS 2 state, retained messages) is copied to one node
 * R(N), the first of the live members whose link is up by rendezvous
 * hashing of N's name, kept while its link lives (sticky).
 *
 * Primary side (store.c's replicate seam, on this node's committer
 * thread): after each group's local write, the group's operations go to R
 * in one CL_F_REPL_DATA frame (posted to the link thread), and the
 * committer waits for R's CL_F_REPL_ACK (cluster.replication.timeout)
 * before the group's completions run: a PUBACK, PUBREC or CONNACK that
 * depends on a stored change leaves only once R has it too.  One round
 * trip per group: batches keep grouping meanwhile.  When R is new (first
 * start, R's link went down and another was chosen, a stream failed), the
 * committer first sends a full copy (CL_REPL_RESET, the whole store by
 * store_scan in 1 MiB frames, CL_REPL_COMPLETE on the last), waits for it,
 * records `/antenna/<cluster>/replica/<N>` = R in etcd, and tells the other
 * members to drop older copies (CL_F_REPL_DROP).  Without a replica in
 * sync the node is degraded: cluster.replication.required false (default)
 * acknowledges on the local commit (counted, logged, retried every
 * second); true fails the group's batches (0x97 to publishers).
 *
 * Replica side (link thread): a REPL_DATA from N is applied to N's copy,
 * a RocksDB store of its own at <persistence.dir>/replica-<N>, as one batch
 * (RESET empties it first; COMPLETE adds the marker key REPL_KEY_COMPLETE),
 * and acknowledged once that batch committed (same sync policy).  The
 * copies are under mu: the adopter thread (cl_adopt.c) reads one when N
 * dies and drops it afterwards (cl_repl_copy_open / cl_repl_copy_drop).
 *
 * etcd's `replica/<N>` says who adopts N: R once N's lease expired
 * ("adopted:<R>" once done: N started again with its name empties its
 * store, cluster_replica_boot); "stopped" after a clean stop (the sessions
 * wait for N, as with Redis).
 *
 * The operations travel in the store's flat form (host byte order: the
 * nodes of a cluster share an architecture).
 *
 * Threads: the hook on the committer thread; target, gen, acked under mu
 * (written by the link thread); copies under mu; stats are atomics.
 */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "cl_etcd.h"
#include "cl_int.h"
#include "cl_link_int.h"
#include "cl_wire.h"
#include "cluster.h"
#include "log.h"
#include "store.h"
#include "util.h"

#define REPL_CHUNK (1u << 20) /* a full copy's frames: about this much each */
#define REPL_FULL_MS 60000    /* a full copy is acknowledged within this */
#define REPL_RETRY_MS 1000    /* degraded: a full copy tried again after this */
#define REPL_ETCD_MS 5000     /* etcd answers within this */
#define REPL_KEY_COMPLETE "\0repl/complete"
#define REPL_KEY_COMPLETE_LEN 14u

typedef struct {
    char name[CL_NAME_MAX]; /* the primary's; "" free */
    store_t *st;
    int complete; /* the full copy's marker is committed in it */
    uint64_t inc; /* the primary process whose stream it follows */
} rp_copy_t;

struct cl_repl_s {
    cl_t *cl;
    store_t *store;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    /* primary side, under mu: the link thread writes target and gen */
    int target; /* node index of the replica, 0: none */
    char target_name[CL_NAME_MAX];
    uint64_t gen;   /* bumped when the target changes or its link drops */
    uint64_t acked; /* REPL_ACKs: every REPL_DATA up to this is in R's copy */
    int ack_bad;    /* R failed to apply one */
    /* the committer's own */
    uint64_t synced_gen; /* the gen whose full copy R acknowledged (0: none) */
    uint64_t seq;
    uint64_t retry_at;                    /* degraded: no full copy before this */
    uint64_t sent_seq, sent_gen, sent_us; /* the group sent before its local write */
    int degraded_logged;
    _Atomic uint64_t wait_since_us; /* a group waits for R since (0: none): the lag */
    /* replica side, under mu */
    rp_copy_t copy[CL_MAX_NODES]; /* by the primary's node index */
    tw_timer_t timer;             /* link thread: an idle node's full copy */
    /* stats */
    _Atomic uint64_t groups, bytes, degraded, fulls, full_ms, failures, applied;
    _Atomic uint32_t synced;
    an_hist_t rtt;
};

/* ---- etcd, synchronously (committer, adopter and main threads) ---- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, ok, found;
    char val[CL_NAME_MAX + 16];
} esync_t;

static void esync_done(void *arg, const cl_etcd_res_t *res)
{
    esync_t *s = arg;
    pthread_mutex_lock(&s->mu);
    s->ok = res->err == CL_ETCD_OK;
    if (s->ok && res->json != NULL) {
        json_t *kvs = json_object_get(res->json, "kvs");
        if (json_is_array(kvs) && json_array_size(kvs) > 0) {
            char key[512];
            s->found =
                cl_etcd_kv(json_array_get(kvs, 0), key, sizeof(key), s->val, sizeof(s->val)) == 0;
        }
    }
    s->done = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* 0 (val: the value, "" when absent), -1 etcd failed or did not answer. */
static int etcd_sync(cl_etcd_t *e, const char *path, json_t *body, char *val, size_t cap)
{
    esync_t *s = an_calloc(1, sizeof(*s)); /* the answer may come after a timeout: leaked
                                            * then rather than freed under it */
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (e == NULL || cl_etcd_call(e, path, body, REPL_ETCD_MS, esync_done, s) < 0) {
        if (e == NULL)
            json_decref(body);
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return -1;
    }
    uint64_t deadline = an_now_ms() + REPL_ETCD_MS + 2000;
    pthread_mutex_lock(&s->mu);
    while (!s->done && an_now_ms() < deadline) {
        struct timespec ts = an_wall_after(50);
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    int done = s->done, ok = s->ok;
    if (val != NULL)
        snprintf(val, cap, "%s", s->found ? s->val : "");
    pthread_mutex_unlock(&s->mu);
    if (!done)
        return -1; /* s stays: esync_done writes it later */
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
    return ok ? 0 : -1;
}

static void replica_key(const char *cluster, const char *node, char *out, size_t cap)
{
    snprintf(out, cap, "/antenna/%s/replica/%s", cluster, node);
}

static int etcd_put(cl_etcd_t *e, const char *key, const char *val)
{
    return etcd_sync(e, "/v3/kv/put", cl_etcd_put_req(key, val, 0), NULL, 0);
}

int cl_repl_etcd_get(cl_t *cl, const char *node, char *val, size_t cap)
{
    char key[256];
    replica_key(cl->conf->name, node, key, sizeof(key));
    return etcd_sync(cl_member_etcd(cl), "/v3/kv/range", cl_etcd_range_req(key, NULL), val, cap);
}

int cl_repl_etcd_adopted(cl_t *cl, const char *node)
{
    char key[256], val[CL_NAME_MAX + 16];
    replica_key(cl->conf->name, node, key, sizeof(key));
    snprintf(val, sizeof(val), "adopted:%s", cl->conf->node);
    return etcd_put(cl_member_etcd(cl), key, val);
}

/* ---- the copies kept here (replica side) ---- */

static void copy_path(const cl_t *cl, const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/replica-%s", cl->srv->conf.data_dir, name);
}

static store_t *copy_store_open(cl_t *cl, const char *name, int *complete)
{
    const conf_t *cf = &cl->srv->conf;
    char path[512], err[768];
    copy_path(cl, name, path, sizeof(path));
    store_opts_t o = {.backend = STORE_BACKEND_ROCKSDB,
                      .path = path,
                      .sync = (store_sync_t)cf->persistence_sync,
                      .sync_interval_ms = cf->sync_interval_ms};
    store_t *st = store_open(&o, err, sizeof(err));
    if (st == NULL) {
        log_limited(5000, AN_LOG_ERROR, "cluster: the copy of node %s's store: %s", name, err);
        return NULL;
    }
    void *v = NULL;
    size_t vl = 0;
    *complete = store_get(st, REPL_KEY_COMPLETE, REPL_KEY_COMPLETE_LEN, &v, &vl) == 0;
    free(v);
    return st;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p) < 0 && errno != ENOENT ? -1 : 0;
}

static void copy_remove_dir(cl_t *cl, const char *name)
{
    char path[512];
    copy_path(cl, name, path, sizeof(path));
    if (nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT)
        log_warn("cluster: removing %s: %s", path, strerror(errno));
}

/* The copy of `name` (open, or opened from its directory), or NULL; *complete. */
store_t *cl_repl_copy_open(cl_t *cl, const char *name, int *complete, int *loose)
{
    cl_repl_t *r = cl->repl;
    *complete = 0;
    *loose = 0;
    if (r == NULL)
        return NULL;
    pthread_mutex_lock(&r->mu);
    store_t *st = NULL;
    for (int i = 1; i < CL_MAX_NODES; i++)
        if (r->copy[i].st != NULL && strcmp(r->copy[i].name, name) == 0) {
            st = r->copy[i].st;
            *complete = r->copy[i].complete;
        }
    pthread_mutex_unlock(&r->mu);
    if (st != NULL)
        return st;
    char path[512];
    struct stat sb;
    copy_path(cl, name, path, sizeof(path));
    if (stat(path, &sb) < 0)
        return NULL;
    *loose = 1;
    return copy_store_open(cl, name, complete);
}

/* Done with the copy of `name` (adopted, or given up): closed, removed. */
void cl_repl_copy_drop(cl_t *cl, const char *name, store_t *st)
{
    cl_repl_t *r = cl->repl;
    int owned = 0;
    pthread_mutex_lock(&r->mu);
    for (int i = 1; i < CL_MAX_NODES; i++)
        if (r->copy[i].st != NULL && r->copy[i].st == st) {
            memset(&r->copy[i], 0, sizeof(r->copy[i]));
            owned = 1;
        }
    pthread_mutex_unlock(&r->mu);
    (void)owned;
    store_close(st);
    copy_remove_dir(cl, name);
}

/* A copy of `name` kept here that etcd says is not the one to adopt from
 * (another node is its replica, or adopted it): closed and removed. */
void cl_repl_copy_forget(cl_t *cl, const char *name)
{
    cl_repl_t *r = cl->repl;
    store_t *st = NULL;
    pthread_mutex_lock(&r->mu);
    for (int i = 1; i < CL_MAX_NODES; i++)
        if (r->copy[i].st != NULL && strcmp(r->copy[i].name, name) == 0) {
            st = r->copy[i].st;
            memset(&r->copy[i], 0, sizeof(r->copy[i]));
        }
    pthread_mutex_unlock(&r->mu);
    char path[512];
    struct stat sb;
    copy_path(cl, name, path, sizeof(path));
    if (st == NULL && stat(path, &sb) < 0)
        return;
    store_close(st);
    copy_remove_dir(cl, name);
    log_info("cluster: the copy of node %s's store here is not its replica's: dropped", name);
}

typedef struct {
    cl_t *cl;
    int idx;
    uint64_t seq, inc;
    uint8_t flags;
    int err;
} rp_applied_t;

static void ack_task(cl_t *cl, void *arg)
{
    rp_applied_t *a = arg;
    cl_repl_t *r = cl->repl;
    if (a->err == 0 && (a->flags & CL_REPL_COMPLETE)) {
        pthread_mutex_lock(&r->mu);
        if (r->copy[a->idx].st != NULL && r->copy[a->idx].inc == a->inc)
            r->copy[a->idx].complete = 1;
        pthread_mutex_unlock(&r->mu);
        log_info("cluster: the copy of node %s's store is complete here", cl->nodes[a->idx].name);
    }
    cl_conn_t *c = cl->links ? cl->links->peers[a->idx].conn : NULL;
    if (c != NULL && c->up && c->peer_inc == a->inc) {
        cl_enc_repl_ack(&c->out, a->seq, a->err == 0);
        cl_conn_flush(cl, c);
    }
    free(a);
}

static void on_applied(void *ud, int err)
{
    rp_applied_t *a = ud;
    a->err = err;
    if (err == 0)
        CL_STAT_ADD(a->cl->repl->applied, 1);
    if (cl_post(a->cl, ack_task, a) < 0)
        free(a);
}

/* Link thread: REPL_DATA from peer idx. */
static int recv_data(cl_t *cl, cl_conn_t *c, const uint8_t *body, uint32_t len)
{
    cl_repl_t *r = cl->repl;
    uint64_t seq;
    uint8_t flags;
    const uint8_t *ops;
    uint32_t olen;
    if (cl_dec_repl_data(body, len, &seq, &flags, &ops, &olen) < 0)
        return -1;
    int idx = c->idx;
    const char *name = cl->nodes[idx].name;
    pthread_mutex_lock(&r->mu);
    rp_copy_t *cp = &r->copy[idx];
    store_t *st = cp->st;
    pthread_mutex_unlock(&r->mu);
    if (st == NULL) {
        int complete = 0;
        st = copy_store_open(cl, name, &complete);
        if (st == NULL) {
            cl_enc_repl_ack(&c->out, seq, 0);
            return 0;
        }
        pthread_mutex_lock(&r->mu);
        snprintf(cp->name, sizeof(cp->name), "%s", name);
        cp->st = st;
        cp->complete = complete;
        cp->inc = 0; /* follows a stream only from its full copy (RESET) on */
        pthread_mutex_unlock(&r->mu);
    }
    store_batch_t *b = store_batch_new();
    if (flags & CL_REPL_RESET) {
        pthread_mutex_lock(&r->mu);
        cp->complete = 0;
        cp->inc = c->peer_inc;
        pthread_mutex_unlock(&r->mu);
        for (unsigned k = 0; k < 0xff; k++) { /* every key (their first byte) */
            uint8_t p = (uint8_t)k;
            store_batch_del_prefix(b, &p, 1);
        }
    } else if (cp->inc != c->peer_inc) {
        /* a stream of another process of N without its full copy: refused
         * (N sends a full copy after a failed ack) */
        store_batch_free(b);
        cl_enc_repl_ack(&c->out, seq, 0);
        return 0;
    }
    if (store_batch_append_raw(b, ops, olen) < 0) {
        store_batch_free(b);
        return -1;
    }
    if (flags & CL_REPL_COMPLETE)
        store_batch_put(b, REPL_KEY_COMPLETE, REPL_KEY_COMPLETE_LEN, "1", 1);
    rp_applied_t *a = an_calloc(1, sizeof(*a));
    *a = (rp_applied_t){.cl = cl, .idx = idx, .seq = seq, .inc = c->peer_inc, .flags = flags};
    /* under mu: the adopter thread closes a copy only once it is out of
     * the table (cl_repl_copy_drop, _forget) */
    pthread_mutex_lock(&r->mu);
    int same = cp->st == st;
    int rc = same ? store_submit(st, b, on_applied, a) : -1; /* takes b in every case */
    pthread_mutex_unlock(&r->mu);
    if (rc < 0) {
        if (!same)
            store_batch_free(b);
        free(a);
        cl_enc_repl_ack(&c->out, seq, 0);
    }
    return 0;
}

static void recv_drop(cl_t *cl, cl_conn_t *c)
{
    cl_repl_t *r = cl->repl;
    pthread_mutex_lock(&r->mu);
    rp_copy_t cp = r->copy[c->idx];
    memset(&r->copy[c->idx], 0, sizeof(r->copy[c->idx]));
    pthread_mutex_unlock(&r->mu);
    char path[512];
    struct stat sb;
    copy_path(cl, cl->nodes[c->idx].name, path, sizeof(path));
    if (cp.st == NULL && stat(path, &sb) < 0)
        return;
    if (cp.st != NULL)
        store_close(cp.st); /* waits for what it was applying: acks not sent */
    copy_remove_dir(cl, cl->nodes[c->idx].name);
    log_info("cluster: node %s has another replica now: its copy here is dropped",
             cl->nodes[c->idx].name);
}

/* ---- the replica's choice (link thread) ---- */

static int link_up(cl_t *cl, int i)
{
    cl_conn_t *c = cl->links ? cl->links->peers[i].conn : NULL;
    return cl->nodes[i].used && cl->nodes[i].member && c != NULL && c->up;
}

static void choose(cl_t *cl)
{
    cl_repl_t *r = cl->repl;
    pthread_mutex_lock(&r->mu);
    int cur = r->target;
    pthread_mutex_unlock(&r->mu);
    if (cur > 0 && link_up(cl, cur))
        return; /* sticky */
    int best = 0;
    uint64_t bh = 0;
    for (int i = 1; i < CL_MAX_NODES; i++)
        if (link_up(cl, i)) {
            uint64_t h = cl_rdv(cl->nodes[i].name, cl->conf->node);
            if (best == 0 || h > bh ||
                (h == bh && strcmp(cl->nodes[i].name, cl->nodes[best].name) < 0))
                best = i, bh = h;
        }
    pthread_mutex_lock(&r->mu);
    if (best != r->target) {
        r->target = best;
        snprintf(r->target_name, sizeof(r->target_name), "%s", best ? cl->nodes[best].name : "");
        r->gen++;
        atomic_store(&r->synced, 0);
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
    if (best != cur) {
        if (best)
            log_info("cluster: node %s is this node's replica now: a full copy follows",
                     cl->nodes[best].name);
        else
            log_warn("cluster: no replica for this node's sessions (no other member with a "
                     "link up): degraded");
        if (best)
            store_submit(r->store, store_batch_new(), NULL, NULL); /* the full copy now */
    }
}

void cl_repl_link(cl_t *cl, int idx, int up)
{
    cl_repl_t *r = cl->repl;
    if (r == NULL)
        return;
    if (!up) {
        pthread_mutex_lock(&r->mu);
        if (r->target == idx) {
            r->target = 0;
            r->target_name[0] = '\0';
            r->gen++;
            atomic_store(&r->synced, 0);
            pthread_cond_broadcast(&r->cv);
        }
        pthread_mutex_unlock(&r->mu);
    }
    choose(cl);
}

static void on_timer(tw_timer_t *t)
{
    cl_repl_t *r = container_of(t, cl_repl_t, timer);
    cl_t *cl = r->cl;
    choose(cl);
    pthread_mutex_lock(&r->mu);
    int want = r->target != 0 && !atomic_load(&r->synced) && !r->stop;
    pthread_mutex_unlock(&r->mu);
    if (want) /* an idle node still gets its replica in sync */
        store_submit(r->store, store_batch_new(), NULL, NULL);
    tw_add(&cl->tw, &r->timer, cl->now + REPL_RETRY_MS);
}

/* ---- the primary's stream (committer thread) ---- */

typedef struct {
    int idx;
    uint64_t gen;
    cl_buf_t b;
} rp_send_t;

static void send_task(cl_t *cl, void *arg)
{
    rp_send_t *s = arg;
    cl_repl_t *r = cl->repl;
    pthread_mutex_lock(&r->mu);
    int ok = r->gen == s->gen && r->target == s->idx;
    pthread_mutex_unlock(&r->mu);
    cl_conn_t *c = ok && cl->links ? cl->links->peers[s->idx].conn : NULL;
    if (c != NULL && c->up) {
        cl_buf_reserve(&c->out, s->b.len);
        memcpy(c->out.p + c->out.len, s->b.p, s->b.len);
        c->out.len += s->b.len;
        cl_conn_flush(cl, c);
    } else {
        pthread_mutex_lock(&r->mu);
        if (r->gen == s->gen)
            r->ack_bad = 1;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
    }
    cl_buf_free(&s->b);
    free(s);
}

static int post_frame(cl_repl_t *r, int idx, uint64_t gen, cl_buf_t *b)
{
    rp_send_t *s = an_malloc(sizeof(*s));
    s->idx = idx;
    s->gen = gen;
    s->b = *b;
    *b = (cl_buf_t){0};
    CL_STAT_ADD(r->bytes, s->b.len);
    if (cl_post(r->cl, send_task, s) < 0) {
        cl_buf_free(&s->b);
        free(s);
        return -1;
    }
    return 0;
}

/* 0 once R acknowledged seq, -1 failed (gen changed, R refused, stop, timeout). */
static int wait_ack(cl_repl_t *r, uint64_t seq, uint64_t gen, uint32_t ms)
{
    uint64_t deadline = an_now_ms() + ms;
    pthread_mutex_lock(&r->mu);
    while (!r->stop && r->gen == gen && !r->ack_bad && r->acked < seq) {
        uint64_t now = an_now_ms();
        if (now >= deadline)
            break;
        struct timespec ts = an_wall_after(deadline - now);
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
    int ok = !r->stop && r->gen == gen && !r->ack_bad && r->acked >= seq;
    pthread_mutex_unlock(&r->mu);
    return ok ? 0 : -1;
}

static int stopping(cl_repl_t *r);

typedef struct {
    cl_repl_t *r;
    int idx;
    uint64_t gen;
    store_batch_t *chunk;
    uint8_t flags;
    uint64_t keys;
    int err;
} rp_full_t;

static int full_flush(rp_full_t *f, uint8_t last)
{
    cl_buf_t b = {0};
    size_t rl;
    const void *raw = store_batch_raw(f->chunk, &rl);
    cl_enc_repl_head(&b, ++f->r->seq, (uint8_t)(f->flags | last));
    cl_buf_reserve(&b, rl);
    if (rl)
        memcpy(b.p + b.len, raw, rl);
    b.len += rl;
    cl_enc_patch_len(&b, 0);
    f->flags = 0;
    store_batch_free(f->chunk);
    f->chunk = store_batch_new();
    return post_frame(f->r, f->idx, f->gen, &b);
}

static int full_key(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    rp_full_t *f = ud;
    store_batch_put(f->chunk, k, kl, v, vl);
    f->keys++;
    if (store_batch_bytes(f->chunk) >= REPL_CHUNK && full_flush(f, 0) < 0)
        return -1;
    return 0;
}

/* The whole store to R: 0 once R acknowledged it and etcd names R. */
static int full_copy(cl_repl_t *r, store_t *s, int idx, uint64_t gen, const char *rname)
{
    cl_t *cl = r->cl;
    uint64_t t0 = an_now_ms();
    pthread_mutex_lock(&r->mu);
    r->ack_bad = 0;
    pthread_mutex_unlock(&r->mu);
    rp_full_t f = {
        .r = r, .idx = idx, .gen = gen, .chunk = store_batch_new(), .flags = CL_REPL_RESET};
    int rc = store_scan(s, "", 0, full_key, &f);
    if (rc == 0)
        rc = full_flush(&f, CL_REPL_COMPLETE);
    store_batch_free(f.chunk);
    if (rc == 0)
        rc = wait_ack(r, r->seq, gen, REPL_FULL_MS);
    if (rc != 0) {
        if (!stopping(r))
            log_warn("cluster: the full copy of this node's store to node %s failed", rname);
        return -1;
    }
    char key[256];
    replica_key(cl->conf->name, cl->conf->node, key, sizeof(key));
    if (etcd_put(cl_member_etcd(cl), key, rname) < 0) {
        log_warn("cluster: recording node %s as this node's replica in etcd failed", rname);
        return -1;
    }
    uint64_t ms = an_now_ms() - t0;
    CL_STAT_ADD(r->fulls, 1);
    CL_STAT_SET(r->full_ms, ms);
    log_info("cluster: node %s has a full copy of this node's store (%" PRIu64 " keys in %" PRIu64
             " ms): replicated",
             rname, f.keys, ms);
    cl_repl_drop_others(cl);
    return 0;
}

static int stopping(cl_repl_t *r)
{
    pthread_mutex_lock(&r->mu);
    int stop = r->stop;
    pthread_mutex_unlock(&r->mu);
    return stop;
}

static int degraded(cl_repl_t *r, const char *why)
{
    const cl_t *cl = r->cl;
    if (stopping(r)) /* the hook goes: the last groups are this node's alone */
        return 0;
    atomic_store(&r->synced, 0);
    r->synced_gen = 0;
    CL_STAT_ADD(r->degraded, 1);
    if (!r->degraded_logged) {
        log_warn("cluster: this node's sessions are not replicated (%s): %s", why,
                 cl->conf->repl_required ? "stored changes are refused until a replica is in "
                                           "sync (cluster.replication.required)"
                                         : "acknowledged on the local commit meanwhile");
        r->degraded_logged = 1;
    }
    return cl->conf->repl_required ? STORE_EIO : 0;
}

/* SEND (before the local write): a replica in sync gets the group at
 * once, so its write and ours run together; remembered in sent_seq. */
static void repl_send(cl_repl_t *r, const store_batch_t *group, int idx, uint64_t gen)
{
    r->sent_seq = 0;
    if (idx == 0 || r->synced_gen != gen)
        return; /* none, or a full copy first (after the write) */
    cl_buf_t b = {0};
    cl_enc_repl_head(&b, r->seq + 1, 0);
    size_t head = b.len;
    for (const store_batch_t *x = group; x; x = store_group_next(x)) {
        size_t rl;
        const void *raw = store_batch_raw(x, &rl);
        if (store_batch_failed(x) || rl == 0)
            continue;
        cl_buf_reserve(&b, rl);
        memcpy(b.p + b.len, raw, rl);
        b.len += rl;
    }
    if (b.len == head) { /* a barrier: every earlier group was acknowledged */
        cl_buf_free(&b);
        return;
    }
    uint64_t seq = ++r->seq;
    cl_enc_patch_len(&b, 0);
    r->sent_us = an_now_us();
    atomic_store(&r->wait_since_us, r->sent_us);
    r->sent_gen = gen;
    r->sent_seq = post_frame(r, idx, gen, &b) == 0 ? seq : UINT64_MAX; /* MAX: failed */
}

static int repl_hook(void *ud, store_t *s, const store_batch_t *group, int phase)
{
    cl_repl_t *r = ud;
    char rname[CL_NAME_MAX];
    pthread_mutex_lock(&r->mu);
    int stop = r->stop, idx = r->target;
    uint64_t gen = r->gen;
    memcpy(rname, r->target_name, sizeof(rname));
    pthread_mutex_unlock(&r->mu);
    if (stop)
        return 0;
    if (phase == STORE_REPL_SEND) {
        repl_send(r, group, idx, gen);
        return 0;
    }
    if (phase == STORE_REPL_ABORT) { /* the replica may have what we do not: a full copy */
        atomic_store(&r->wait_since_us, 0);
        r->synced_gen = 0;
        r->sent_seq = 0;
        return 0;
    }
    if (r->sent_seq != 0) { /* sent before the write: its acknowledgement */
        uint64_t seq = r->sent_seq;
        r->sent_seq = 0;
        int rc =
            seq != UINT64_MAX ? wait_ack(r, seq, r->sent_gen, r->cl->conf->repl_timeout_ms) : -1;
        atomic_store(&r->wait_since_us, 0);
        if (rc != 0) {
            r->retry_at = 0; /* a full copy at the next group (another replica, or the same) */
            return degraded(r, "the replica did not acknowledge a change in time");
        }
        an_hist_add(&r->rtt, an_now_us() - r->sent_us);
        CL_STAT_ADD(r->groups, 1);
        return 0;
    }
    if (idx == 0)
        return degraded(r, "no other member");
    if (r->synced_gen != gen) {
        uint64_t now = an_now_ms();
        if (now < r->retry_at)
            return degraded(r, "the full copy failed");
        if (full_copy(r, s, idx, gen, rname) < 0) {
            r->retry_at = an_now_ms() + REPL_RETRY_MS;
            return degraded(r, "the full copy failed");
        }
        r->synced_gen = gen;
        r->degraded_logged = 0;
        atomic_store(&r->synced, 1);
        return 0; /* the group is in the full copy */
    }
    return 0; /* a barrier, or a group sent under an earlier gen is in the full copy */
}

/* ---- frames (link thread) ---- */

int cl_repl_recv(cl_t *cl, cl_conn_t *c, uint8_t type, const uint8_t *body, uint32_t len)
{
    cl_repl_t *r = cl->repl;
    if (type == CL_F_REPL_DATA) {
        if (r == NULL) { /* not replicated here: refused, N tries another */
            uint64_t seq;
            uint8_t flags;
            const uint8_t *ops;
            uint32_t olen;
            if (cl_dec_repl_data(body, len, &seq, &flags, &ops, &olen) < 0)
                return -1;
            cl_enc_repl_ack(&c->out, seq, 0);
            return 0;
        }
        return recv_data(cl, c, body, len);
    }
    if (type == CL_F_REPL_DROP) {
        if (r != NULL)
            recv_drop(cl, c);
        return 0;
    }
    uint64_t seq;
    uint8_t ok;
    if (cl_dec_repl_ack(body, len, &seq, &ok) < 0)
        return -1;
    if (r == NULL)
        return 0;
    pthread_mutex_lock(&r->mu);
    if (r->target == c->idx) {
        if (!ok)
            r->ack_bad = 1;
        else if (seq > r->acked)
            r->acked = seq;
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
    return 0;
}

static void drop_task(cl_t *cl, void *arg)
{
    (void)arg;
    cl_repl_t *r = cl->repl;
    pthread_mutex_lock(&r->mu);
    int tgt = r->target;
    pthread_mutex_unlock(&r->mu);
    for (int i = 1; i < CL_MAX_NODES; i++)
        if (i != tgt && link_up(cl, i)) {
            cl_conn_t *c = cl->links->peers[i].conn;
            cl_enc_empty(&c->out, CL_F_REPL_DROP);
            cl_conn_flush(cl, c);
        }
}

void cl_repl_drop_others(cl_t *cl)
{
    cl_post(cl, drop_task, NULL);
}

/* ---- the module's calls ---- */

int cl_repl_init(cl_t *cl)
{
    const conf_t *cf = &cl->srv->conf;
    if (cf->session_store != CONF_SESSIONS_REPLICATED || cl->srv->store == NULL)
        return 0;
    if (cl->conf->etcd[0] == '\0') {
        log_error("cluster: persistence.session_store: replicated needs cluster.etcd (who "
                  "adopts a dead node's sessions is recorded there)");
        return -1;
    }
    cl_repl_t *r = an_calloc(1, sizeof(*r));
    r->cl = cl;
    r->store = cl->srv->store;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    tw_timer_init(&r->timer, on_timer);
    cl->repl = r;
    store_set_replicate(r->store, repl_hook, r);
    return 0;
}

void cl_repl_start(cl_t *cl)
{
    cl_repl_t *r = cl->repl;
    if (r != NULL)
        tw_add(&cl->tw, &r->timer, cl->now + REPL_RETRY_MS);
}

void cl_repl_stop(cl_t *cl)
{
    cl_repl_t *r = cl->repl;
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    int was = r->stop;
    r->stop = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (was)
        return;
    store_set_replicate(r->store, NULL, NULL);
    /* a clean stop: the sessions wait for a node with this name (the
     * replica does not adopt them), as a stopped Redis store */
    char key[256];
    replica_key(cl->conf->name, cl->conf->node, key, sizeof(key));
    if (etcd_put(cl_member_etcd(cl), key, "stopped") < 0)
        log_warn("cluster: could not record the clean stop in etcd: the replica may adopt "
                 "this node's sessions");
}

void cl_repl_free(cl_t *cl)
{
    cl_repl_t *r = cl->repl;
    if (r == NULL)
        return;
    for (int i = 1; i < CL_MAX_NODES; i++)
        if (r->copy[i].st != NULL)
            store_close(r->copy[i].st);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
    cl->repl = NULL;
}

int cl_repl_on(const cl_t *cl)
{
    return cl->repl != NULL;
}

void cl_repl_metrics(cl_t *cl, module_metrics_t *mm)
{
    cl_repl_t *r = cl->repl;
    if (r == NULL)
        return;
    char rname[CL_NAME_MAX];
    int copies = 0;
    pthread_mutex_lock(&r->mu);
    memcpy(rname, r->target_name, sizeof(rname));
    for (int i = 1; i < CL_MAX_NODES; i++)
        copies += r->copy[i].st != NULL;
    pthread_mutex_unlock(&r->mu);
    uint64_t since = atomic_load(&r->wait_since_us), now = an_now_us();
    module_metrics_family(mm, "antenna_cluster_replica_synced", "gauge",
                          "1 when this node's replica has a full copy and follows the stream "
                          "(0: degraded), labelled with the replica.");
    module_metrics_printf(mm, "antenna_cluster_replica_synced{peer=\"%s\"} %u\n", rname,
                          atomic_load(&r->synced));
    module_metrics_family(mm, "antenna_cluster_replication_lag_seconds", "gauge",
                          "How long the group being replicated has waited for the replica's "
                          "acknowledgement (0: none waits).");
    module_metrics_printf(mm, "antenna_cluster_replication_lag_seconds %.6f\n",
                          since && now > since ? (double)(now - since) / 1e6 : 0.0);
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"antenna_cluster_replicated_groups_total", "counter",
         "Groups of store changes the replica acknowledged."},
        {"antenna_cluster_replicated_bytes_total", "counter",
         "Bytes of replication frames sent to the replica."},
        {"antenna_cluster_replication_degraded_total", "counter",
         "Groups committed without a replica in sync (acknowledged locally, or refused with "
         "cluster.replication.required)."},
        {"antenna_cluster_replica_full_copies_total", "counter",
         "Full copies of this node's store sent to a replica."},
        {"antenna_cluster_replica_full_copy_last_ms", "gauge", "How long the last full copy took."},
        {"antenna_cluster_replica_applied_total", "counter",
         "Replication frames of other nodes applied to their copies here."},
        {"antenna_cluster_replica_copies", "gauge", "Copies of other nodes' stores open here."},
    };
    uint64_t v[] = {atomic_load(&r->groups), atomic_load(&r->bytes),   atomic_load(&r->degraded),
                    atomic_load(&r->fulls),  atomic_load(&r->full_ms), atomic_load(&r->applied),
                    (uint64_t)copies};
    for (size_t i = 0; i < sizeof(fam) / sizeof(fam[0]); i++) {
        module_metrics_family(mm, fam[i].name, fam[i].type, fam[i].help);
        module_metrics_printf(mm, "%s %" PRIu64 "\n", fam[i].name, v[i]);
    }
    module_metrics_family(mm, "antenna_cluster_replication_rtt_seconds", "histogram",
                          "Round trip of one replicated group: sent to acknowledged.");
    uint64_t cum = 0;
    for (int i = 0; i < AN_HIST_N; i++) {
        cum += STAT_GET(r->rtt.bucket[i]);
        if (i < AN_HIST_N - 1)
            module_metrics_printf(mm,
                                  "antenna_cluster_replication_rtt_seconds_bucket{le=\"%g\"} "
                                  "%" PRIu64 "\n",
                                  an_hist_bounds_us[i] / 1e6, cum);
        else
            module_metrics_printf(
                mm, "antenna_cluster_replication_rtt_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n",
                cum);
    }
    module_metrics_printf(mm, "antenna_cluster_replication_rtt_seconds_sum %.6f\n",
                          STAT_GET(r->rtt.sum_us) / 1e6);
    module_metrics_printf(mm, "antenna_cluster_replication_rtt_seconds_count %" PRIu64 "\n", cum);
}

/* GET /api/v1/nodes' "replication": this node's replica and whether it is
 * in sync, the copies of other nodes kept here (any thread). */
json_t *cl_repl_json(cl_t *cl)
{
    cl_repl_t *r = cl->repl;
    if (r == NULL)
        return NULL;
    json_t *copies = json_array();
    pthread_mutex_lock(&r->mu);
    json_t *o =
        json_pack("{s:s?,s:b,s:b}", "replica", r->target_name[0] ? r->target_name : NULL, "synced",
                  atomic_load(&r->synced) != 0, "required", cl->conf->repl_required != 0);
    for (int i = 1; i < CL_MAX_NODES; i++)
        if (r->copy[i].st != NULL)
            json_array_append_new(copies, json_pack("{s:s,s:b}", "node", r->copy[i].name,
                                                    "complete", r->copy[i].complete != 0));
    pthread_mutex_unlock(&r->mu);
    json_object_set_new(o, "copies", copies);
    return o;
}

/* ---- before the sessions are read (persist_open, main thread) ---- */

int cluster_replica_boot(const conf_t *cf, store_t *st)
{
    const cl_conf_t *c = conf_section_values(cf, cluster_module.section);
    if (c == NULL || c->node[0] == '\0' || c->etcd[0] == '\0') {
        log_warn("persistence: session_store: replicated without a cluster with etcd: no "
                 "replica, the sessions live in this node's store only (degraded)");
        return 0;
    }
    char err[256], key[256], val[CL_NAME_MAX + 16];
    cl_etcd_opts_t eo = {.endpoints = c->etcd, .timeout_ms = REPL_ETCD_MS};
    cl_etcd_t *e = cl_etcd_new(&eo, err, sizeof(err));
    if (e == NULL) {
        log_warn("persistence: cannot ask etcd whether this node's sessions were adopted: %s", err);
        return 0;
    }
    replica_key(c->name, c->node, key, sizeof(key));
    int rc = etcd_sync(e, "/v3/kv/range", cl_etcd_range_req(key, NULL), val, sizeof(val));
    if (rc < 0) {
        log_warn("persistence: etcd did not say whether this node's sessions were adopted: "
                 "starting with the store as it is");
    } else if (strncmp(val, "adopted:", 8) == 0) {
        store_batch_t *b = store_batch_new();
        static const char *const fam[] = {"s/", "q/", "i/"};
        for (size_t i = 0; i < 3; i++)
            store_batch_del_prefix(b, fam[i], 2);
        rc = store_submit_sync(st, b);
        if (rc != 0) {
            log_error("persistence: emptying the sessions adopted by %s: %s", val + 8,
                      store_strerror(rc));
        } else {
            log_info("persistence: the sessions of this node were adopted by %s while it was "
                     "down: starting without them",
                     val + 8);
            etcd_sync(e, "/v3/kv/txn", cl_etcd_del_if_value_req(key, val), NULL, 0);
        }
    }
    cl_etcd_free(e);
    return rc < 0 && strncmp(val, "adopted:", 8) == 0 ? -1 : 0; /* the wipe failed */
}
