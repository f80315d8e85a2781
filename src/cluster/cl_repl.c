/* cl_repl.c -- persistence.session_store: replicated: this node's sessions
 * copied to replica nodes over the node links, and the copies this node
 * keeps for others (docs/cluster.md "Where sessions live", "Replicated
 * sessions").  No service beyond etcd.
 *
 * Granularity: a replica per SESSION.  Each key of node N's store has a
 * share key (cl_share.h: a session's client id for its record, queue,
 * in-flight messages and QoS 2 ids; the whole key for a retained message or
 * a meta key), and its replica is the winner of rendezvous hashing of that
 * share key over N's live linked members (the placement: every member
 * whose link with N is up).  So a dead node's sessions are spread over
 * every survivor that had a link with it, and a member that joins or goes
 * moves only the sessions it wins or won.
 *
 * Primary side (store.c's replicate seam, on this node's committer
 * thread): before each group's local write (STORE_REPL_SEND) its
 * operations are split by share (cl_share_split) and each replica that
 * has a part gets it in one CL_F_REPL_DATA frame (posted to the link
 * thread: one frame per replica per group, all sent before the local
 * write); after the write (STORE_REPL_WAIT) the committer waits for every
 * one's CL_F_REPL_ACK (cluster.replication.timeout) before the group's
 * completions run: a PUBACK, PUBREC or CONNACK that depends on a stored
 * change leaves only once the session's replica has it too.
 *
 * When the live set changes (lgen: a link up or down, a member in or out)
 * the committer places the shares again before the next group's
 * completions (place(): one store_scan, the committer being the only
 * writer: a consistent snapshot): a new replica (or one whose link
 * dropped since: it may have missed frames) gets its whole share
 * (CL_REPL_RESET ... CL_REPL_COMPLETE in 1 MiB frames); one that stays
 * gets only the keys that move to it.  Once all acknowledged, etcd names
 * the new set (`/antenna/<cluster>/replica/<N>/<R>`, one key per replica,
 * the new ones put before the old ones are deleted, and `replica/<N>` =
 * "live"); only then is what moved deleted from its old replica (plain
 * deletes in its stream), so a moved session is always on a replica etcd
 * names (for a moment on two: the registry's claims keep one owner).
 * Without a placement in sync the node is degraded:
 * cluster.replication.required false (default) acknowledges on the local
 * commit (counted, logged, retried every second); true fails the group's
 * batches (0x97 to publishers).
 *
 * Replica side (link thread): a REPL_DATA from N is applied to N's copy,
 * a RocksDB store of its own at <persistence.dir>/replica-<N> holding
 * this node's share of N, as one batch (RESET empties it first; COMPLETE
 * adds the marker key REPL_KEY_COMPLETE), and acknowledged once that batch
 * committed (same sync policy).  The copies are under mu: the adopter
 * thread (cl_adopt.c) reads one when N dies and drops it afterwards
 * (cl_repl_copy_open / cl_repl_copy_drop).
 *
 * etcd says who adopts N: each replica named under replica/<N>/ adopts the
 * sessions of its own copy once N's lease expired, then writes
 * "adopted:<R>" to replica/<N> (N started again with its name empties its
 * store, cluster_replica_boot) and takes its name out; "stopped" after a
 * clean stop (the sessions wait for N, as with Redis).
 *
 * The operations travel in the store's flat form, whose lengths are
 * little-endian on every host (store_int.h); the frames' own integers are
 * big-endian (cl_wire.h).
 *
 * Threads: the hook and place() on the committer thread; live[], gen[],
 * acked[], ack_bad[] under mu (written by the link thread); the placement
 * written by the committer under mu (read by the API); copies under mu;
 * stats are atomics.
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
#include "cl_share.h"
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

/* a peer, as the committer placed shares on it */
typedef struct {
    int idx;       /* node index */
    uint64_t gen;  /* its link's gen when its share was copied */
    uint64_t seed; /* cl_share_seed(name) */
    uint64_t sent; /* the seq of the frame sent to it for the group in flight (0: none) */
    uint64_t sessions;
    char name[CL_NAME_MAX];
} rp_place_t;

struct cl_repl_s {
    cl_t *cl;
    store_t *store;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    /* primary side, under mu, written by the link thread: the members
     * whose link is up (the set the shares are spread over) */
    uint8_t live[CL_MAX_NODES];
    char live_name[CL_MAX_NODES][CL_NAME_MAX];
    uint64_t gen[CL_MAX_NODES];    /* bumped when the peer's link goes down or up */
    uint64_t lgen;                 /* bumped when live[] or a gen changes */
    uint64_t acked[CL_MAX_NODES];  /* REPL_ACKs: every REPL_DATA to it up to this is applied */
    uint8_t ack_bad[CL_MAX_NODES]; /* it failed to apply one */
    /* the placement (committer writes, under mu; the API reads): the peers
     * the shares are on, each in sync, while placed_ok */
    rp_place_t *place;     /* CL_MAX_NODES */
    uint64_t *place_seeds; /* CL_MAX_NODES: place[].seed (cl_share_split) */
    int nplace;
    int placed_ok;
    uint64_t placed_lgen;
    /* the committer's own */
    uint64_t seq;
    uint64_t retry_at; /* degraded: no new placement before this */
    uint64_t sent_us;  /* the group sent before its local write */
    int nsent;
    int degraded_logged;
    _Atomic uint64_t wait_since_us; /* a group waits for its replicas since (0: none): the lag */
    /* replica side, under mu */
    rp_copy_t copy[CL_MAX_NODES]; /* by the primary's node index */
    tw_timer_t timer;             /* link thread: an idle node's placement */
    /* stats */
    _Atomic uint64_t groups, bytes, degraded, fulls, full_ms, failures, applied, moved;
    _Atomic uint32_t synced;
    an_hist_t rtt;
};

/* ---- etcd, synchronously (committer, adopter and main threads) ---- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, ok, found, want_all;
    char val[CL_NAME_MAX + 16];
    json_t *kvs; /* want_all: every kv of the answer */
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
            if (s->want_all)
                s->kvs = json_incref(kvs);
        }
    }
    s->done = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* 0 (val: the value, "" when absent; *all: every kv, NULL when none),
 * -1 etcd failed or did not answer. */
static int etcd_call(cl_etcd_t *e, const char *path, json_t *body, char *val, size_t cap,
                     json_t **all)
{
    esync_t *s = an_calloc(1, sizeof(*s)); /* the answer may come after a timeout: leaked
                                            * then rather than freed under it */
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->want_all = all != NULL;
    if (all != NULL)
        *all = NULL;
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
    if (done && all != NULL) {
        *all = s->kvs;
        s->kvs = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    if (!done)
        return -1; /* s stays: esync_done writes it later */
    json_decref(s->kvs);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
    return ok ? 0 : -1;
}

static int etcd_sync(cl_etcd_t *e, const char *path, json_t *body, char *val, size_t cap)
{
    return etcd_call(e, path, body, val, cap, NULL);
}

/* replica/<N>: N's state ("live", "stopped", "adopted:<R>"); replica/<N>/<R>:
 * R holds a share of N's store in sync (one key per replica) */
static void replica_key(const char *cluster, const char *node, char *out, size_t cap)
{
    snprintf(out, cap, "/antenna/%s/replica/%s", cluster, node);
}

static void share_key(const char *cluster, const char *node, const char *peer, char *out,
                      size_t cap)
{
    snprintf(out, cap, "/antenna/%s/replica/%s/%s", cluster, node, peer);
}

static int etcd_put(cl_etcd_t *e, const char *key, const char *val)
{
    return etcd_sync(e, "/v3/kv/put", cl_etcd_put_req(key, val, 0), NULL, 0);
}

static int etcd_del(cl_etcd_t *e, const char *key, const char *end)
{
    return etcd_sync(e, "/v3/kv/deleterange", cl_etcd_range_req(key, end), NULL, 0);
}

int cl_repl_etcd_get(cl_t *cl, const char *node, char *val, size_t cap)
{
    char key[256];
    replica_key(cl->conf->name, node, key, sizeof(key));
    return etcd_sync(cl_member_etcd(cl), "/v3/kv/range", cl_etcd_range_req(key, NULL), val, cap);
}

/* The replicas etcd names for node (replica/<N>/<R>): their count (names
 * in names[], at most max), or -1 (etcd failed). */
static int etcd_replicas(cl_etcd_t *e, const char *cluster, const char *node,
                         char (*names)[CL_NAME_MAX], int max)
{
    char pre[256], end[256];
    share_key(cluster, node, "", pre, sizeof(pre));
    if (cl_etcd_prefix_end(pre, end, sizeof(end)) < 0)
        return -1;
    json_t *kvs = NULL;
    if (etcd_call(e, "/v3/kv/range", cl_etcd_range_req(pre, end), NULL, 0, &kvs) < 0)
        return -1;
    int n = 0;
    size_t i;
    json_t *kv;
    size_t pl = strlen(pre);
    json_array_foreach(kvs, i, kv)
    {
        char key[512], val[64];
        if (cl_etcd_kv(kv, key, sizeof(key), val, sizeof(val)) != 0 || strlen(key) <= pl ||
            strlen(key + pl) >= CL_NAME_MAX || n == max)
            continue;
        snprintf(names[n++], CL_NAME_MAX, "%s", key + pl);
    }
    json_decref(kvs);
    return n;
}

int cl_repl_etcd_replicas(cl_t *cl, const char *node, char (*names)[CL_NAME_MAX], int max)
{
    return etcd_replicas(cl_member_etcd(cl), cl->conf->name, node, names, max);
}

/* This node's share of N is adopted (or there is none to adopt): N's state
 * says so (N started again empties its store), and this node is no longer
 * named among N's replicas (the others stop waiting for it). */
int cl_repl_etcd_adopted(cl_t *cl, const char *node, int adopted)
{
    char key[256], val[CL_NAME_MAX + 16];
    cl_etcd_t *e = cl_member_etcd(cl);
    replica_key(cl->conf->name, node, key, sizeof(key));
    snprintf(val, sizeof(val), "adopted:%s", cl->conf->node);
    if (adopted && etcd_put(e, key, val) < 0)
        return -1;
    share_key(cl->conf->name, node, cl->conf->node, key, sizeof(key));
    return etcd_del(e, key, NULL);
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

/* ---- the live set (link thread) ---- */

static int link_up(cl_t *cl, int i)
{
    cl_conn_t *c = cl->links ? cl->links->peers[i].conn : NULL;
    return cl->nodes[i].used && cl->nodes[i].member && c != NULL && c->up;
}

/* live[] from the member table and the links; a change makes the
 * committer place the shares again (a barrier now). */
static void choose(cl_t *cl)
{
    cl_repl_t *r = cl->repl;
    int changed = 0, n = 0;
    pthread_mutex_lock(&r->mu);
    for (int i = 1; i < CL_MAX_NODES; i++) {
        uint8_t up = (uint8_t)link_up(cl, i);
        n += up;
        if (up != r->live[i]) {
            r->live[i] = up;
            changed = 1;
            if (up)
                snprintf(r->live_name[i], CL_NAME_MAX, "%s", cl->nodes[i].name);
        }
    }
    if (changed) {
        r->lgen++;
        atomic_store(&r->synced, 0);
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
    if (changed) {
        if (n)
            log_info("cluster: %d member%s to spread this node's sessions over: the shares "
                     "that move are copied",
                     n, n == 1 ? "" : "s");
        else
            log_warn("cluster: no replica for this node's sessions (no other member with a "
                     "link up): degraded");
        if (n)
            store_submit(r->store, store_batch_new(), NULL, NULL); /* placed now */
    }
}

void cl_repl_link(cl_t *cl, int idx, int up)
{
    cl_repl_t *r = cl->repl;
    if (r == NULL)
        return;
    (void)up;
    pthread_mutex_lock(&r->mu);
    r->gen[idx]++; /* down: what was in flight is lost; up: maybe another process */
    r->lgen++;
    r->live[idx] = 0; /* choose() sees it come (back) */
    atomic_store(&r->synced, 0);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    choose(cl);
}

static void on_timer(tw_timer_t *t)
{
    cl_repl_t *r = container_of(t, cl_repl_t, timer);
    cl_t *cl = r->cl;
    choose(cl);
    pthread_mutex_lock(&r->mu);
    int any = 0;
    for (int i = 1; i < CL_MAX_NODES && !any; i++)
        any = r->live[i];
    int want = any && !atomic_load(&r->synced) && !r->stop;
    pthread_mutex_unlock(&r->mu);
    if (want) /* an idle node still gets its replicas in sync */
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
    int ok = r->gen[s->idx] == s->gen;
    pthread_mutex_unlock(&r->mu);
    cl_conn_t *c = ok && cl->links ? cl->links->peers[s->idx].conn : NULL;
    if (c != NULL && c->up) {
        cl_buf_reserve(&c->out, s->b.len);
        memcpy(c->out.p + c->out.len, s->b.p, s->b.len);
        c->out.len += s->b.len;
        cl_conn_flush(cl, c);
    } else {
        pthread_mutex_lock(&r->mu);
        if (r->gen[s->idx] == s->gen)
            r->ack_bad[s->idx] = 1;
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

/* 0 once peer idx acknowledged seq, -1 failed (its gen changed, it
 * refused, stop, timeout). */
static int wait_ack(cl_repl_t *r, int idx, uint64_t seq, uint64_t gen, uint32_t ms)
{
    uint64_t deadline = an_now_ms() + ms;
    pthread_mutex_lock(&r->mu);
    while (!r->stop && r->gen[idx] == gen && !r->ack_bad[idx] && r->acked[idx] < seq) {
        uint64_t now = an_now_ms();
        if (now >= deadline)
            break;
        struct timespec ts = an_wall_after(deadline - now);
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
    int ok = !r->stop && r->gen[idx] == gen && !r->ack_bad[idx] && r->acked[idx] >= seq;
    pthread_mutex_unlock(&r->mu);
    return ok ? 0 : -1;
}

static int stopping(cl_repl_t *r);
static int settle(cl_repl_t *r, store_t *s);

/* The placement's peer at position j (-1: every one) is no longer in sync
 * (its frames failed, or a placement failed midway): its whole share is
 * copied again at the next placement (a live peer's gen is never 0). */
static void invalidate(cl_repl_t *r, int j)
{
    pthread_mutex_lock(&r->mu);
    for (int k = 0; k < r->nplace; k++)
        if (j < 0 || k == j)
            r->place[k].gen = 0;
    r->placed_ok = 0;
    pthread_mutex_unlock(&r->mu);
}

/* A placement being made: the new set (np peers), what each gets. */
typedef struct {
    cl_repl_t *r;
    int np;
    rp_place_t *p;      /* the new set */
    uint8_t *full;      /* [np]: its whole share (a new replica), else only what moves to it */
    uint64_t *seeds;    /* [np] */
    store_batch_t **ch; /* [np]: the frame being filled */
    uint8_t *first;     /* [np]: its next frame is its first (RESET when full) */
    uint64_t *last;     /* [np]: the seq of its last frame */
    uint64_t *keys;     /* [np] */
    /* the old set, in sync: what moves away is deleted there afterwards */
    int nold;
    const rp_place_t *old;
    uint64_t *old_seeds;  /* [nold] */
    int *old_in_new;      /* [nold]: its position in the new set, -1 none */
    store_batch_t **dels; /* [nold] */
    uint64_t moved;
    int err;
} rp_full_t;

static int full_flush(rp_full_t *f, int j, uint8_t last)
{
    cl_buf_t b = {0};
    size_t rl;
    const void *raw = store_batch_raw(f->ch[j], &rl);
    uint8_t flags = (uint8_t)((f->full[j] && f->first[j] ? CL_REPL_RESET : 0) | last);
    f->last[j] = ++f->r->seq;
    cl_enc_repl_head(&b, f->last[j], flags);
    cl_buf_reserve(&b, rl);
    if (rl)
        memcpy(b.p + b.len, raw, rl);
    b.len += rl;
    cl_enc_patch_len(&b, 0);
    f->first[j] = 0;
    store_batch_free(f->ch[j]);
    f->ch[j] = store_batch_new();
    return post_frame(f->r, f->p[j].idx, f->p[j].gen, &b);
}

static int full_key(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    rp_full_t *f = ud;
    const uint8_t *pk;
    size_t pkl;
    if (!cl_share_key(STORE_RAW_PUT, k, kl, &pk, &pkl)) { /* a meta key: every copy has it */
        for (int j = 0; j < f->np; j++)
            if (f->full[j]) {
                store_batch_put(f->ch[j], k, kl, v, vl);
                f->keys[j]++;
                if (store_batch_bytes(f->ch[j]) >= REPL_CHUNK && full_flush(f, j, 0) < 0)
                    return -1;
            }
        return 0;
    }
    int j = cl_share_pick(f->seeds, f->np, pk, pkl);
    int o = f->nold ? cl_share_pick(f->old_seeds, f->nold, pk, pkl) : -1;
    int moved = o < 0 || f->old[o].idx != f->p[j].idx;
    if (f->full[j] || moved) {
        store_batch_put(f->ch[j], k, kl, v, vl);
        f->keys[j]++;
        if (kl > 2 && memcmp(k, "s/", 2) == 0)
            f->p[j].sessions++;
        if (store_batch_bytes(f->ch[j]) >= REPL_CHUNK && full_flush(f, j, 0) < 0)
            return -1;
    } else if (kl > 2 && memcmp(k, "s/", 2) == 0) {
        f->p[j].sessions++;
    }
    if (o >= 0 && moved && f->old_in_new[o] >= 0 && !f->full[f->old_in_new[o]]) {
        store_batch_del(f->dels[o], k, kl); /* there until the new one has it */
        f->moved++;
    }
    return 0;
}

/* etcd: N's replicas are exactly the peers of the new set (those put first:
 * while both are named, either may adopt), N's state "live". */
static int record_placement(cl_repl_t *r, const rp_place_t *p, int np)
{
    cl_t *cl = r->cl;
    cl_etcd_t *e = cl_member_etcd(cl);
    char key[256];
    for (int j = 0; j < np; j++) {
        share_key(cl->conf->name, cl->conf->node, p[j].name, key, sizeof(key));
        if (etcd_put(e, key, "1") < 0)
            return -1;
    }
    replica_key(cl->conf->name, cl->conf->node, key, sizeof(key));
    if (etcd_put(e, key, "live") < 0)
        return -1;
    char(*names)[CL_NAME_MAX] = an_calloc(CL_MAX_NODES, CL_NAME_MAX);
    int n = etcd_replicas(e, cl->conf->name, cl->conf->node, names, CL_MAX_NODES);
    for (int i = 0; i < n; i++) {
        int keep = 0;
        for (int j = 0; j < np && !keep; j++)
            keep = strcmp(names[i], p[j].name) == 0;
        share_key(cl->conf->name, cl->conf->node, names[i], key, sizeof(key));
        if (!keep && etcd_del(e, key, NULL) < 0)
            n = -1;
    }
    free(names);
    return n < 0 ? -1 : 0;
}

/* The shares placed over the members whose link is up: a new replica gets
 * its whole share (RESET ... COMPLETE), one that was in sync only the
 * session keys that move to it; all acknowledged, etcd names the new set,
 * then what moved away is deleted from its old replica.  The committer is
 * the only writer meanwhile (a consistent snapshot).  0 placed, -1 not. */
static int place(cl_repl_t *r, store_t *s)
{
    cl_t *cl = r->cl;
    uint64_t t0 = an_now_ms();
    int np = 0, rc = -1;
    rp_place_t *p = an_calloc(CL_MAX_NODES, sizeof(*p));
    pthread_mutex_lock(&r->mu);
    uint64_t lgen = r->lgen;
    for (int i = 1; i < CL_MAX_NODES; i++)
        if (r->live[i]) {
            p[np].idx = i;
            p[np].gen = r->gen[i];
            memcpy(p[np].name, r->live_name[i], CL_NAME_MAX);
            p[np].seed = cl_share_seed(p[np].name);
            r->ack_bad[i] = 0;
            np++;
        }
    int nold = r->nplace; /* a peer there is in sync while its gen is (0: not) */
    rp_place_t *old = an_calloc(CL_MAX_NODES, sizeof(*old));
    memcpy(old, r->place, (size_t)nold * sizeof(*old));
    r->placed_ok = 0; /* until this one is done */
    pthread_mutex_unlock(&r->mu);
    if (np == 0) {
        free(p);
        free(old);
        return -1;
    }
    rp_full_t f = {.r = r, .np = np, .p = p, .nold = nold, .old = old};
    f.full = an_calloc((size_t)np, 1);
    f.first = an_calloc((size_t)np, 1);
    f.seeds = an_calloc((size_t)np, sizeof(uint64_t));
    f.ch = an_calloc((size_t)np, sizeof(store_batch_t *));
    f.last = an_calloc((size_t)np, sizeof(uint64_t));
    f.keys = an_calloc((size_t)np, sizeof(uint64_t));
    f.old_seeds = an_calloc((size_t)nold + 1, sizeof(uint64_t));
    f.old_in_new = an_calloc((size_t)nold + 1, sizeof(int));
    f.dels = an_calloc((size_t)nold + 1, sizeof(store_batch_t *));
    int nfull = 0;
    for (int j = 0; j < np; j++) {
        f.seeds[j] = p[j].seed;
        f.ch[j] = store_batch_new();
        f.first[j] = 1;
        f.full[j] = 1;
        for (int o = 0; o < nold; o++)
            if (old[o].idx == p[j].idx && old[o].gen == p[j].gen)
                f.full[j] = 0; /* in sync: only what moves to it */
        nfull += f.full[j];
    }
    for (int o = 0; o < nold; o++) {
        f.old_seeds[o] = old[o].seed;
        f.old_in_new[o] = -1;
        for (int j = 0; j < np; j++)
            if (old[o].idx == p[j].idx && old[o].gen == p[j].gen)
                f.old_in_new[o] = j;
        f.dels[o] = store_batch_new();
    }
    int src = store_scan(s, "", 0, full_key, &f);
    for (int j = 0; j < np && src == 0; j++)
        if (f.full[j] || store_batch_count(f.ch[j]) > 0)
            src = full_flush(&f, j, f.full[j] ? CL_REPL_COMPLETE : 0);
    for (int j = 0; j < np && src == 0; j++)
        if (f.last[j] && wait_ack(r, p[j].idx, f.last[j], p[j].gen, REPL_FULL_MS) < 0)
            src = -1;
    if (src != 0) {
        if (!stopping(r))
            log_warn("cluster: copying the shares of this node's sessions to their replicas "
                     "failed");
        goto done;
    }
    if (record_placement(r, p, np) < 0) {
        log_warn("cluster: recording this node's replicas in etcd failed");
        goto done;
    }
    /* the moved sessions are on their new replica and etcd names it: out of
     * the old one */
    for (int o = 0; o < nold && src == 0; o++) {
        int j = f.old_in_new[o];
        if (j < 0 || store_batch_count(f.dels[o]) == 0)
            continue;
        store_batch_free(f.ch[j]);
        f.ch[j] = f.dels[o];
        f.dels[o] = NULL;
        f.first[j] = 0;
        if (full_flush(&f, j, 0) < 0 || wait_ack(r, p[j].idx, f.last[j], p[j].gen, REPL_FULL_MS))
            src = -1;
    }
    if (src != 0) {
        log_warn("cluster: deleting the moved sessions from their old replicas failed");
        goto done;
    }
    uint64_t ms = an_now_ms() - t0, keys = 0;
    for (int j = 0; j < np; j++)
        keys += f.keys[j];
    pthread_mutex_lock(&r->mu);
    memcpy(r->place, p, (size_t)np * sizeof(*p));
    r->nplace = np;
    r->placed_ok = 1;
    r->placed_lgen = lgen;
    pthread_mutex_unlock(&r->mu);
    CL_STAT_ADD(r->fulls, (uint64_t)nfull);
    CL_STAT_ADD(r->moved, f.moved);
    CL_STAT_SET(r->full_ms, ms);
    char list[512] = "";
    for (int j = 0; j < np; j++)
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s %" PRIu64 "%s",
                 j ? ", " : "", p[j].name, p[j].sessions, f.full[j] ? " (whole share)" : "");
    log_info("cluster: this node's sessions are replicated over %d member%s (sessions per "
             "replica: %s; %" PRIu64 " keys copied, %" PRIu64 " moved, in %" PRIu64 " ms)",
             np, np == 1 ? "" : "s", list, keys, f.moved, ms);
    cl_repl_drop_others(cl);
    rc = 0;
done:
    if (rc != 0) /* some got a part of it: every share whole the next time */
        invalidate(r, -1);
    for (int j = 0; j < np; j++)
        store_batch_free(f.ch[j]);
    for (int o = 0; o < nold; o++)
        store_batch_free(f.dels[o]);
    free(f.full), free(f.first), free(f.seeds), free(f.ch), free(f.last), free(f.keys);
    free(f.old_seeds), free(f.old_in_new), free(f.dels);
    free(p);
    free(old);
    return rc;
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
    CL_STAT_ADD(r->degraded, 1);
    if (!r->degraded_logged) {
        log_warn("cluster: this node's sessions are not replicated (%s): %s", why,
                 cl->conf->repl_required ? "stored changes are refused until their replicas "
                                           "are in sync (cluster.replication.required)"
                                         : "acknowledged on the local commit meanwhile");
        r->degraded_logged = 1;
    }
    return cl->conf->repl_required ? STORE_EIO : 0;
}

/* SEND (before the local write): each replica of the placement in sync
 * gets its part of the group at once (one frame per replica that has a
 * part), so their writes and ours run together.  Also when the live set
 * changed since (the placement made after this group's write counts on
 * the replicas that stay having every change up to it). */
static void repl_send(cl_repl_t *r, const store_batch_t *group)
{
    rp_place_t *p = r->place;
    int np = r->nplace;
    cl_buf_t one[1] = {{0}}, *b = np > 1 ? an_calloc((size_t)np, sizeof(*b)) : one;
    size_t head = 0;
    uint64_t seq0 = r->seq;
    for (int j = 0; j < np; j++) {
        cl_enc_repl_head(&b[j], seq0 + 1 + (uint64_t)j, 0);
        head = b[j].len;
        p[j].sent = 0;
    }
    int bad = 0;
    for (const store_batch_t *x = group; x; x = store_group_next(x)) {
        size_t rl;
        const void *raw = store_batch_raw(x, &rl);
        if (store_batch_failed(x) || rl == 0)
            continue;
        if (np == 1) {
            cl_buf_reserve(&b[0], rl);
            memcpy(b[0].p + b[0].len, raw, rl);
            b[0].len += rl;
        } else if (cl_share_split(raw, rl, r->place_seeds, np, b) < 0) {
            bad = 1;
        }
    }
    r->seq += (uint64_t)np;
    r->nsent = 0;
    r->sent_us = an_now_us();
    for (int j = 0; j < np; j++) {
        if (b[j].len == head || bad) { /* nothing for it (a barrier, another's sessions) */
            cl_buf_free(&b[j]);
            continue;
        }
        if (p[j].gen == 0) { /* not in sync: its share is copied whole later */
            cl_buf_free(&b[j]);
            continue;
        }
        cl_enc_patch_len(&b[j], 0);
        p[j].sent =
            post_frame(r, p[j].idx, p[j].gen, &b[j]) == 0 ? seq0 + 1 + (uint64_t)j : UINT64_MAX;
        r->nsent++;
    }
    if (r->nsent)
        atomic_store(&r->wait_since_us, r->sent_us);
    if (b != one)
        free(b);
}

static int repl_hook(void *ud, store_t *s, const store_batch_t *group, int phase)
{
    cl_repl_t *r = ud;
    if (stopping(r))
        return 0;
    if (phase == STORE_REPL_SEND) {
        r->nsent = 0;
        if (r->nplace > 0)
            repl_send(r, group);
        return 0;
    }
    if (phase == STORE_REPL_ABORT) { /* the replicas may have what we do not */
        atomic_store(&r->wait_since_us, 0);
        for (int j = 0; j < r->nplace; j++)
            if (r->place[j].sent != 0) {
                r->place[j].sent = 0;
                invalidate(r, j);
            }
        r->nsent = 0;
        return 0;
    }
    if (r->nsent > 0) { /* sent before the write: every part's acknowledgement */
        int failed = 0;
        for (int j = 0; j < r->nplace; j++) {
            uint64_t seq = r->place[j].sent;
            if (seq == 0)
                continue;
            r->place[j].sent = 0;
            if (seq == UINT64_MAX ||
                wait_ack(r, r->place[j].idx, seq, r->place[j].gen, r->cl->conf->repl_timeout_ms)) {
                failed = 1;
                invalidate(r, j); /* its share copied whole again (the group with it) */
            }
        }
        r->nsent = 0;
        atomic_store(&r->wait_since_us, 0);
        if (failed) {
            r->retry_at = 0;
            if (!r->cl->conf->repl_required)
                return degraded(r, "a replica did not acknowledge a change in time");
        } else {
            an_hist_add(&r->rtt, an_now_us() - r->sent_us);
            CL_STAT_ADD(r->groups, 1);
        }
    }
    return settle(r, s);
}

/* WAIT, after the group's own acknowledgements: the shares placed again
 * if the live set changed (the group is in the copies then).  Not placed:
 * degraded; with cluster.replication.required and a member to place them
 * on, the group is held first (every later one waits too) while they are
 * being placed, for cluster.replication.timeout at most. */
static int settle(cl_repl_t *r, store_t *s)
{
    int required = r->cl->conf->repl_required;
    uint64_t deadline = an_now_ms() + r->cl->conf->repl_timeout_ms;
    const char *why = "copying the shares failed";
    for (;;) {
        pthread_mutex_lock(&r->mu);
        int stop = r->stop, same = r->placed_ok && r->placed_lgen == r->lgen && r->nplace > 0;
        int any = 0;
        for (int i = 1; i < CL_MAX_NODES && !any; i++)
            any = r->live[i];
        uint64_t lgen = r->lgen;
        pthread_mutex_unlock(&r->mu);
        if (stop || same)
            return 0;
        if (!any)
            return degraded(r, "no other member");
        uint64_t now = an_now_ms();
        if (now >= r->retry_at) {
            if (place(r, s) == 0) {
                for (int j = 0; j < r->nplace; j++)
                    r->place_seeds[j] = r->place[j].seed;
                r->degraded_logged = 0;
                atomic_store(&r->synced, 1);
                return 0; /* the group is in the copies */
            }
            r->retry_at = an_now_ms() + REPL_RETRY_MS;
            now = an_now_ms();
        }
        if (!required || now >= deadline)
            return degraded(r, why);
        uint64_t until = AN_MIN(deadline, r->retry_at); /* held: the next try */
        pthread_mutex_lock(&r->mu);
        if (!r->stop && r->lgen == lgen && until > now) {
            struct timespec ts = an_wall_after(until - now);
            pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        }
        pthread_mutex_unlock(&r->mu);
    }
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
    if (!ok)
        r->ack_bad[c->idx] = 1;
    else if (seq > r->acked[c->idx])
        r->acked[c->idx] = seq;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

/* arg: the placement's members (node indexes, CL_MAX_NODES bytes), as
 * when it was made: this task runs after the frames posted before it and
 * before those of a later placement (cl_post is in order) */
static void drop_task(cl_t *cl, void *arg)
{
    uint8_t *in = arg;
    for (int i = 1; i < CL_MAX_NODES; i++)
        if (!in[i] && link_up(cl, i)) { /* a copy of an older placement there */
            cl_conn_t *c = cl->links->peers[i].conn;
            cl_enc_empty(&c->out, CL_F_REPL_DROP);
            cl_conn_flush(cl, c);
        }
    free(in);
}

void cl_repl_drop_others(cl_t *cl)
{
    cl_repl_t *r = cl->repl;
    uint8_t *in = an_calloc(CL_MAX_NODES, 1);
    pthread_mutex_lock(&r->mu);
    for (int j = 0; r->placed_ok && j < r->nplace; j++)
        in[r->place[j].idx] = 1;
    int ok = r->placed_ok;
    pthread_mutex_unlock(&r->mu);
    if (!ok || cl_post(cl, drop_task, in) < 0)
        free(in);
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
    r->place = an_calloc(CL_MAX_NODES, sizeof(*r->place));
    r->place_seeds = an_calloc(CL_MAX_NODES, sizeof(*r->place_seeds));
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
    free(r->place);
    free(r->place_seeds);
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
    int copies = 0, np = 0, ok;
    rp_place_t *p = an_malloc(CL_MAX_NODES * sizeof(*p));
    pthread_mutex_lock(&r->mu);
    ok = r->placed_ok && atomic_load(&r->synced);
    np = r->nplace;
    memcpy(p, r->place, (size_t)np * sizeof(*p));
    for (int i = 1; i < CL_MAX_NODES; i++)
        copies += r->copy[i].st != NULL;
    pthread_mutex_unlock(&r->mu);
    uint64_t since = atomic_load(&r->wait_since_us), now = an_now_us();
    module_metrics_family(mm, "antenna_cluster_replica_synced", "gauge",
                          "1 when this node's replica (the label) has its share of this node's "
                          "sessions and follows the stream (0: degraded).");
    for (int j = 0; j < np; j++)
        module_metrics_printf(mm, "antenna_cluster_replica_synced{peer=\"%s\"} %d\n", p[j].name,
                              ok);
    module_metrics_family(mm, "antenna_cluster_replica_share_sessions", "gauge",
                          "Sessions of this node in the replica's (the label) share when the "
                          "shares were last placed.");
    for (int j = 0; j < np; j++)
        module_metrics_printf(mm,
                              "antenna_cluster_replica_share_sessions{peer=\"%s\"} %" PRIu64 "\n",
                              p[j].name, p[j].sessions);
    free(p);
    module_metrics_family(mm, "antenna_cluster_replication_lag_seconds", "gauge",
                          "How long the group being replicated has waited for its replicas' "
                          "acknowledgements (0: none waits).");
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
         "Whole shares of this node's store sent to a new replica."},
        {"antenna_cluster_replica_moved_keys_total", "counter",
         "Keys of sessions whose replica changed, copied to the new one and then deleted from "
         "the old one."},
        {"antenna_cluster_replica_full_copy_last_ms", "gauge", "How long the last full copy took."},
        {"antenna_cluster_replica_applied_total", "counter",
         "Replication frames of other nodes applied to their copies here."},
        {"antenna_cluster_replica_copies", "gauge", "Copies of other nodes' stores open here."},
    };
    uint64_t v[] = {atomic_load(&r->groups),  atomic_load(&r->bytes), atomic_load(&r->degraded),
                    atomic_load(&r->fulls),   atomic_load(&r->moved), atomic_load(&r->full_ms),
                    atomic_load(&r->applied), (uint64_t)copies};
    for (size_t i = 0; i < sizeof(fam) / sizeof(fam[0]); i++) {
        module_metrics_family(mm, fam[i].name, fam[i].type, fam[i].help);
        module_metrics_printf(mm, "%s %" PRIu64 "\n", fam[i].name, v[i]);
    }
    module_metrics_family(
        mm, "antenna_cluster_replication_rtt_seconds", "histogram",
        "Round trip of one replicated group: sent to acknowledged by every replica it went to.");
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
    json_t *copies = json_array(), *reps = json_array();
    pthread_mutex_lock(&r->mu);
    int ok = r->placed_ok && atomic_load(&r->synced);
    json_t *o = json_pack("{s:b,s:b}", "synced", ok, "required", cl->conf->repl_required != 0);
    for (int j = 0; j < r->nplace; j++)
        json_array_append_new(reps, json_pack("{s:s,s:I,s:b}", "node", r->place[j].name, "sessions",
                                              (json_int_t)r->place[j].sessions, "synced", ok));
    json_object_set_new(o, "replica",
                        r->nplace && ok ? json_string(r->place[0].name) : json_null());
    for (int i = 1; i < CL_MAX_NODES; i++)
        if (r->copy[i].st != NULL)
            json_array_append_new(copies, json_pack("{s:s,s:b}", "node", r->copy[i].name,
                                                    "complete", r->copy[i].complete != 0));
    pthread_mutex_unlock(&r->mu);
    json_object_set_new(o, "replicas", reps);
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
            /* the replicas named for the process before: their copies are
             * not this store's any more (each gets its share again) */
            char pre[256], end[256];
            share_key(c->name, c->node, "", pre, sizeof(pre));
            if (cl_etcd_prefix_end(pre, end, sizeof(end)) == 0)
                etcd_del(e, pre, end);
        }
    }
    cl_etcd_free(e);
    return rc < 0 && strncmp(val, "adopted:", 8) == 0 ? -1 : 0; /* the wipe failed */
}
