/* store.c -- the backend-neutral half of the store: batches, the submit
 * queue, the committer thread (group commit and the interval sync timer),
 * the format version check, expiry, statistics and fault injection.
 *
 *   worker 0 --+
 *   worker 1 --+-- store_submit --> FIFO (under s->mu)
 *   worker N --+                        |  taken whole: every waiting batch
 *                                       v  is one group
 *                                   committer --> one backend write (+ fsync: always)
 *                                             --> done(ud, err) per batch, FIFO order
 *
 * Replication (persistence.session_store: replicated): a callback set
 * with store_set_replicate runs on the committer after each group's local
 * write and before its completions (the cluster sends the group to a
 * replica node and waits for it); none set: nothing more than a test.
 *
 * Invariants: the queue, `stopping`, the injection counter and the error
 * text are under s->mu; the committer holds no lock while it writes or runs
 * callbacks, so a callback may submit again and submitters never wait for
 * the disk.  `dirty` and `next_sync_ms` belong to the committer alone.  The
 * counters have one writer (the committer) and are read by store_stats().
 */
#include "store.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "store_int.h"
#include "store_rec.h"
#include "util.h"

struct store {
    store_opts_t opts;
    char *path;
    const store_backend_t *be;
    void *bs; /* the backend's state */
    pthread_t committer;

    pthread_mutex_t mu;
    pthread_cond_t wake; /* the committer's: work queued, stop, or sync due */
    store_batch_t *head, *tail;
    int stopping;
    unsigned inject_n;
    int inject_err;
    char last_err[256];
    uint64_t submitted, pending_batches, pending_bytes;
    store_replicate_fn repl_fn; /* under mu; the committer calls it outside */
    void *repl_ud;
    int in_repl;         /* under mu: the committer is inside repl_fn */
    _Atomic int repl_on; /* repl_fn is set: looked at without mu (off: free) */
    pthread_cond_t repl_idle;

    /* the committer's own */
    int dirty; /* interval: written since the last sync */
    int failing;
    uint64_t next_sync_ms;

    an_counter_t committed, failed, commits, max_group, bytes, syncs, last_sync_us, write_errors;
    an_hist_t sync_hist;  /* fsync durations (a sync write counts whole) */
    an_hist_t write_hist; /* backend write durations, one per group */
};

/* ---- batches ---------------------------------------------------------- */

store_batch_t *store_batch_new(void)
{
    return an_calloc(1, sizeof(store_batch_t));
}

/* Appends an operation's header and key; returns where its value goes. */
static uint8_t *batch_add(store_batch_t *b, int op, const void *k, size_t kl, size_t vl)
{
    if (kl > UINT32_MAX || vl > UINT32_MAX) {
        b->invalid = 1;
        return NULL;
    }
    size_t need = STORE__OP_HDR + kl + vl;
    if (b->cap - b->len < need) {
        size_t cap = AN_MAX(AN_MAX(b->cap * 2, b->len + need), (size_t)256);
        b->buf = an_realloc(b->buf, cap);
        b->cap = cap;
    }
    uint8_t *p = b->buf + b->len;
    p[0] = (uint8_t)op;
    le32_put(p + 1, (uint32_t)kl);
    le32_put(p + 5, (uint32_t)vl);
    if (kl)
        memcpy(p + STORE__OP_HDR, k, kl);
    b->len += need;
    b->nops++;
    b->bytes += kl + vl;
    return p + STORE__OP_HDR + kl;
}

void store_batch_put(store_batch_t *b, const void *k, size_t kl, const void *v, size_t vl)
{
    uint8_t *p = batch_add(b, STORE_OP_PUT, k, kl, vl);
    if (p && vl)
        memcpy(p, v, vl);
}

void *store_batch_put_reserve(store_batch_t *b, const void *k, size_t kl, size_t vl)
{
    return batch_add(b, STORE_OP_PUT, k, kl, vl);
}

void store_batch_del(store_batch_t *b, const void *k, size_t kl)
{
    batch_add(b, STORE_OP_DEL, k, kl, 0);
}

int store_batch_del_prefix(store_batch_t *b, const void *prefix, size_t len)
{
    const uint8_t *p = prefix;
    size_t i = 0;
    while (i < len && p[i] == 0xff)
        i++;
    if (i == len) /* empty or all 0xff: no key bounds it from above */
        return STORE_EINVAL;
    batch_add(b, STORE_OP_DEL_PREFIX, prefix, len, 0);
    return 0;
}

size_t store_batch_count(const store_batch_t *b)
{
    return b->nops;
}

size_t store_batch_bytes(const store_batch_t *b)
{
    return b->bytes;
}

void store_batch_free(store_batch_t *b)
{
    if (b == NULL)
        return;
    free(b->buf);
    free(b);
}

int store__batch_next(const store_batch_t *b, size_t *off, store_op_t *op)
{
    if (*off >= b->len)
        return 0;
    const uint8_t *p = b->buf + *off;
    uint32_t k32 = le32_get(p + 1), v32 = le32_get(p + 5);
    op->op = p[0];
    op->k = p + STORE__OP_HDR;
    op->kl = k32;
    op->v = op->k + k32;
    op->vl = v32;
    *off += STORE__OP_HDR + (size_t)k32 + v32;
    return 1;
}

const store_batch_t *store_group_next(const store_batch_t *b)
{
    return b->next;
}

int store_batch_failed(const store_batch_t *b)
{
    return b->err != 0;
}

const void *store_batch_raw(const store_batch_t *b, size_t *len)
{
    *len = b->len;
    return b->buf;
}

int store_raw_next(const void *buf, size_t len, size_t *off, store_raw_op_t *op)
{
    const uint8_t *p = buf;
    size_t o = *off;
    if (o >= len)
        return 0;
    if (len - o < STORE__OP_HDR)
        return STORE_EINVAL;
    uint32_t k32 = le32_get(p + o + 1), v32 = le32_get(p + o + 5);
    uint8_t t = p[o];
    if ((t != STORE_OP_PUT && t != STORE_OP_DEL && t != STORE_OP_DEL_PREFIX) ||
        (uint64_t)k32 + v32 > len - o - STORE__OP_HDR || (t != STORE_OP_PUT && v32) ||
        (t == STORE_OP_DEL_PREFIX && !k32))
        return STORE_EINVAL;
    op->op = t;
    op->k = p + o + STORE__OP_HDR;
    op->kl = k32;
    op->v = op->k + k32;
    op->vl = v32;
    op->at = o;
    op->size = STORE__OP_HDR + (size_t)k32 + v32;
    *off = o + op->size;
    return 1;
}

int store_batch_append_raw(store_batch_t *b, const void *buf, size_t len)
{
    size_t off = 0, nops = 0, bytes = 0;
    store_raw_op_t op;
    int rc;
    while ((rc = store_raw_next(buf, len, &off, &op)) == 1) { /* whole operations only */
        nops++;
        bytes += op.kl + op.vl;
    }
    if (rc < 0)
        return rc;
    if (len == 0)
        return 0;
    if (b->cap - b->len < len) {
        size_t cap = AN_MAX(AN_MAX(b->cap * 2, b->len + len), (size_t)256);
        b->buf = an_realloc(b->buf, cap);
        b->cap = cap;
    }
    memcpy(b->buf + b->len, buf, len);
    b->len += len;
    b->nops += nops;
    b->bytes += bytes;
    return 0;
}

size_t store__prefix_end(const void *prefix, size_t len, uint8_t *out)
{
    if (len)
        memcpy(out, prefix, len);
    while (len > 0 && out[len - 1] == 0xff)
        len--;
    if (len > 0)
        out[len - 1]++;
    return len;
}

/* ---- the committer ---------------------------------------------------- */

static void set_last_err(store_t *s, const char *msg)
{
    pthread_mutex_lock(&s->mu);
    snprintf(s->last_err, sizeof(s->last_err), "%s", msg);
    pthread_mutex_unlock(&s->mu);
}

static void stat_max(an_counter_t *c, uint64_t v)
{
    if (v > STAT_GET(*c))
        atomic_store_explicit(c, v, memory_order_relaxed);
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void report_write(store_t *s, int rc, const char *msg)
{
    if (rc != 0) {
        STAT_ADD(s->write_errors, 1);
        set_last_err(s, msg);
        if (!s->failing)
            log_error("store '%s': write failed: %s; failing batches until a write succeeds",
                      s->path, msg);
        s->failing = 1;
    } else if (s->failing) {
        log_info("store '%s': writes succeed again", s->path);
        s->failing = 0;
    }
}

static int interval_sync(const store_t *s)
{
    return s->opts.sync == STORE_SYNC_INTERVAL && s->be->durable;
}

static void sync_now(store_t *s)
{
    char msg[256] = "";
    uint64_t t0 = now_us();
    int rc = s->be->sync(s->bs, msg, sizeof(msg));
    s->dirty = 0;
    if (rc == 0) {
        uint64_t us = now_us() - t0;
        STAT_ADD(s->syncs, 1);
        atomic_store_explicit(&s->last_sync_us, us, memory_order_relaxed);
        an_hist_add(&s->sync_hist, us);
    }
    report_write(s, rc, msg);
}

/* One group: a single backend write for every batch not failed by
 * injection, then the callbacks in submission order. */
static void commit_group(store_t *s, store_batch_t *group)
{
    size_t nbatches = 0, nops = 0;
    int sync = s->opts.sync == STORE_SYNC_ALWAYS && s->be->durable;
    int rc = 0;

    for (store_batch_t *b = group; b; b = b->next) {
        nbatches++;
        if (b->err == 0)
            nops += b->nops;
    }
    stat_max(&s->max_group, nbatches);
    /* replication: the group goes to the replica before the local write
     * (both run at once), its acknowledgement is awaited after it */
    store_replicate_fn fn = NULL;
    void *ud = NULL;
    if (atomic_load_explicit(&s->repl_on, memory_order_acquire)) {
        pthread_mutex_lock(&s->mu);
        fn = s->repl_fn;
        ud = s->repl_ud;
        s->in_repl = fn != NULL;
        pthread_mutex_unlock(&s->mu);
        if (fn != NULL)
            fn(ud, s, group, STORE_REPL_SEND);
    }
    if (nops > 0) {
        char msg[256] = "";
        uint64_t t0 = now_us();
        rc = s->be->write(s->bs, group, sync, msg, sizeof(msg));
        uint64_t us = now_us() - t0;
        STAT_ADD(s->commits, 1);
        an_hist_add(&s->write_hist, us);
        if (rc == 0 && sync) {
            STAT_ADD(s->syncs, 1);
            atomic_store_explicit(&s->last_sync_us, us, memory_order_relaxed);
            an_hist_add(&s->sync_hist, us);
        }
        if (rc == 0 && interval_sync(s) && !s->dirty) {
            s->dirty = 1;
            s->next_sync_ms = an_now_ms() + s->opts.sync_interval_ms;
        }
        report_write(s, rc, msg);
    }
    if (fn != NULL) {
        int r = fn(ud, s, group, rc == 0 ? STORE_REPL_WAIT : STORE_REPL_ABORT);
        if (rc == 0)
            rc = r;
        pthread_mutex_lock(&s->mu);
        s->in_repl = 0;
        pthread_cond_broadcast(&s->repl_idle);
        pthread_mutex_unlock(&s->mu);
    }
    while (group) {
        store_batch_t *b = group;
        group = b->next;
        int err = b->err ? b->err : rc;
        if (err == 0) {
            STAT_ADD(s->committed, 1);
            STAT_ADD(s->bytes, b->bytes);
        } else {
            STAT_ADD(s->failed, 1);
        }
        if (b->done)
            b->done(b->ud, err);
        store_batch_free(b);
    }
}

static int sync_due(const store_t *s, uint64_t now_ms)
{
    return s->dirty && now_ms >= s->next_sync_ms;
}

static void *committer_main(void *arg)
{
    store_t *s = arg;
    uint64_t next_tick = s->be->tick ? an_now_ms() + s->be->tick_ms : UINT64_MAX;
    for (;;) {
        uint64_t now = an_now_ms();
        pthread_mutex_lock(&s->mu);
        while (s->head == NULL && !s->stopping && !sync_due(s, now) && now < next_tick) {
            if (s->dirty || next_tick != UINT64_MAX) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                uint64_t until = s->dirty ? AN_MIN(s->next_sync_ms, next_tick) : next_tick;
                uint64_t wait_ms = until > now ? until - now : 0;
                ts.tv_sec += (time_t)(wait_ms / 1000);
                ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L + 999999L; /* round up */
                if (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&s->wake, &s->mu, &ts);
            } else {
                pthread_cond_wait(&s->wake, &s->mu);
            }
            now = an_now_ms();
        }
        store_batch_t *group = s->head;
        int stopping = s->stopping;
        s->head = s->tail = NULL;
        s->pending_batches = 0;
        s->pending_bytes = 0;
        for (store_batch_t *b = group; b && s->inject_n > 0; b = b->next) {
            b->err = s->inject_err;
            s->inject_n--;
            snprintf(s->last_err, sizeof(s->last_err), "injected write failure: %s",
                     store_strerror(s->inject_err));
        }
        pthread_mutex_unlock(&s->mu);

        if (group)
            commit_group(s, group);
        if (s->dirty && (sync_due(s, an_now_ms()) || (stopping && group == NULL)))
            sync_now(s);
        if (s->be->tick && an_now_ms() >= next_tick) {
            s->be->tick(s->bs);
            next_tick = an_now_ms() + s->be->tick_ms;
        }
        if (stopping && group == NULL)
            return NULL;
    }
}

/* ---- open and close --------------------------------------------------- */

typedef struct {
    int any;
} first_key_t;

static int found_key(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k, (void)kl, (void)v, (void)vl;
    ((first_key_t *)ud)->any = 1;
    return 1;
}

/* A new (empty) store gets the format version; an existing one must carry
 * exactly this build's. */
static int check_version(store_t *s, char *err, size_t errlen)
{
    void *val = NULL;
    size_t vl = 0;
    char msg[256] = "";
    int rc = s->be->get(s->bs, STORE_KEY_VERSION, STORE_KEY_VERSION_LEN, &val, &vl);

    if (rc == 0) {
        const uint8_t *p = val;
        uint32_t v =
            vl == 4 ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3] : 0;
        if (vl != 4) {
            snprintf(err, errlen,
                     "store: cannot open '%s': malformed format version key "
                     "(%zu bytes)",
                     s->path, vl);
            rc = STORE_ECORRUPT;
        } else if (v != STORE_FORMAT_VERSION) {
            snprintf(err, errlen,
                     "store: cannot open '%s': format version %u, this build "
                     "reads version %u only",
                     s->path, v, STORE_FORMAT_VERSION);
            rc = STORE_EVERSION;
        }
        goto out;
    }
    if (rc != STORE_ENOTFOUND) {
        snprintf(err, errlen, "store: cannot open '%s': reading the format version: %s", s->path,
                 store_strerror(rc));
        goto out;
    }
    first_key_t first = {0};
    rc = s->be->scan(s->bs, "", 0, found_key, &first);
    if (rc < 0) {
        snprintf(err, errlen, "store: cannot open '%s': %s", s->path, store_strerror(rc));
        goto out;
    }
    if (first.any) {
        snprintf(err, errlen,
                 "store: cannot open '%s': not an antenna store (keys but no "
                 "format version)",
                 s->path);
        rc = STORE_EVERSION;
        goto out;
    }
    uint8_t ver[4] = {0, 0, 0, STORE_FORMAT_VERSION};
    store_batch_t *b = store_batch_new();
    store_batch_put(b, STORE_KEY_VERSION, STORE_KEY_VERSION_LEN, ver, sizeof(ver));
    rc = s->be->write(s->bs, b, s->be->durable, msg, sizeof(msg));
    store_batch_free(b);
    if (rc)
        snprintf(err, errlen, "store: cannot open '%s': writing the format version: %s", s->path,
                 msg);
out:
    free(val);
    return rc;
}

store_t *store_open(const store_opts_t *o, char *err, size_t errlen)
{
    store_t *s = NULL;
    pthread_condattr_t ca;
    int rc;
    const char *path = o->path ? o->path : "";

    if (o->backend != STORE_BACKEND_MEMORY && o->backend != STORE_BACKEND_ROCKSDB &&
        o->backend != STORE_BACKEND_REDIS) {
        snprintf(err, errlen, "store: unknown backend %d", (int)o->backend);
        return NULL;
    }
    if (o->backend == STORE_BACKEND_ROCKSDB && path[0] == '\0') {
        snprintf(err, errlen, "store: the rocksdb backend needs a path");
        return NULL;
    }
    if (o->sync != STORE_SYNC_ALWAYS && o->sync != STORE_SYNC_INTERVAL &&
        o->sync != STORE_SYNC_NONE) {
        snprintf(err, errlen, "store '%s': unknown sync policy %d", path, (int)o->sync);
        return NULL;
    }
    if (o->sync == STORE_SYNC_INTERVAL && o->sync_interval_ms == 0) {
        snprintf(err, errlen, "store '%s': sync interval needs sync_interval_ms > 0", path);
        return NULL;
    }

    s = an_calloc(1, sizeof(*s));
    s->opts = *o;
    path = path[0] ? path : o->backend == STORE_BACKEND_REDIS ? "(redis)" : "(memory)";
    s->path = an_strndup(path, strlen(path));
    s->opts.path = s->path;
    s->be = o->backend == STORE_BACKEND_MEMORY  ? &store__memory_backend
            : o->backend == STORE_BACKEND_REDIS ? &store__redis_backend
                                                : &store__rocksdb_backend;
    if (s->be->open(&s->opts, &s->bs, err, errlen) != 0)
        goto fail_free;
    if (check_version(s, err, errlen) != 0)
        goto fail_backend;

    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->wake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&s->repl_idle, NULL);
    if ((rc = pthread_create(&s->committer, NULL, committer_main, s)) != 0) {
        snprintf(err, errlen, "store '%s': cannot start the committer thread: %s", s->path,
                 strerror(rc));
        goto fail_sync;
    }
    return s;

fail_sync:
    pthread_cond_destroy(&s->repl_idle);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->mu);
fail_backend:
    s->be->close(s->bs);
fail_free:
    free(s->path);
    free(s);
    return NULL;
}

void store_close(store_t *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->committer, NULL);
    s->be->close(s->bs);
    pthread_cond_destroy(&s->repl_idle);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->mu);
    free(s->path);
    free(s);
}

void store_set_replicate(store_t *s, store_replicate_fn fn, void *ud)
{
    pthread_mutex_lock(&s->mu);
    while (s->in_repl)
        pthread_cond_wait(&s->repl_idle, &s->mu);
    s->repl_fn = fn;
    s->repl_ud = ud;
    atomic_store_explicit(&s->repl_on, fn != NULL, memory_order_release);
    pthread_mutex_unlock(&s->mu);
}

/* ---- submitting ------------------------------------------------------- */

int store_submit(store_t *s, store_batch_t *b, store_done_fn done, void *ud)
{
    int was_empty;

    if (b->invalid) {
        store_batch_free(b);
        return STORE_EINVAL;
    }
    b->done = done;
    b->ud = ud;
    b->err = 0;
    b->next = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->stopping) {
        pthread_mutex_unlock(&s->mu);
        store_batch_free(b);
        return STORE_ESHUTDOWN;
    }
    was_empty = s->head == NULL;
    if (s->tail)
        s->tail->next = b;
    else
        s->head = b;
    s->tail = b;
    s->submitted++;
    s->pending_batches++;
    s->pending_bytes += b->bytes;
    pthread_mutex_unlock(&s->mu);
    /* The committer sleeps only on an empty queue, so only the batch that
     * makes it non-empty needs to wake it. */
    if (was_empty)
        pthread_cond_signal(&s->wake);
    return 0;
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, err;
} waiter_t;

static void wake_waiter(void *ud, int err)
{
    waiter_t *w = ud;
    pthread_mutex_lock(&w->mu);
    w->done = 1;
    w->err = err;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int store_submit_sync(store_t *s, store_batch_t *b)
{
    waiter_t w = {.done = 0, .err = 0};
    int rc;

    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    if ((rc = store_submit(s, b, wake_waiter, &w)) != 0)
        goto out;
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    rc = w.err;
out:
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return rc;
}

/* ---- reads ------------------------------------------------------------ */

int store_get(store_t *s, const void *k, size_t kl, void **val, size_t *vl)
{
    *val = NULL;
    *vl = 0;
    return s->be->get(s->bs, k, kl, val, vl);
}

int store_scan(store_t *s, const void *prefix, size_t len, store_scan_fn cb, void *ud)
{
    return s->be->scan(s->bs, prefix, len, cb, ud);
}

int store_compact(store_t *s, const void *prefix, size_t len)
{
    return s->be->compact(s->bs, prefix, len);
}

/* ---- expiry ----------------------------------------------------------- */

typedef struct {
    uint64_t now;
    store_batch_t *b;
    store_expire_counts_t n;
} expire_t;

static int expire_retained(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    expire_t *e = ud;
    store_retained_t r;
    if (store_rec_decode_retained(v, vl, &r) != 0)
        e->n.malformed++;
    else if (r.expiry != 0 && r.expiry <= e->now) {
        store_batch_del(e->b, k, kl);
        e->n.retained++;
    }
    return 0;
}

static int expire_session(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    expire_t *e = ud;
    store_session_t ss;
    store_key_info_t ki;
    uint8_t prefix[STORE_KEY_MAX];

    if (store_key_parse(k, kl, &ki) != 0 || store_rec_decode_session(v, vl, &ss) != 0) {
        e->n.malformed++;
        return 0;
    }
    if (ss.expiry_deadline != 0 && ss.expiry_deadline <= e->now) {
        store_batch_del(e->b, k, kl);
        size_t n = store_key_queue_prefix(prefix, sizeof(prefix), ki.name, ki.name_len);
        store_batch_del_prefix(e->b, prefix, n);
        n = store_key_incoming_prefix(prefix, sizeof(prefix), ki.name, ki.name_len);
        store_batch_del_prefix(e->b, prefix, n);
        e->n.sessions++;
    }
    store_rec_session_free(&ss);
    return 0;
}

static int expire_message(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    expire_t *e = ud;
    store_outmsg_t m;
    if (store_rec_decode_outmsg(v, vl, &m) != 0)
        e->n.malformed++;
    else if (m.state == STORE_OUT_QUEUED && m.expiry != 0 && m.expiry <= e->now) {
        store_batch_del(e->b, k, kl);
        e->n.messages++;
    }
    return 0;
}

int store_expire(store_t *s, uint64_t now_s, store_expire_counts_t *out)
{
    expire_t e = {.now = now_s, .b = store_batch_new()};
    int rc;

    if ((rc = store_scan(s, "r/", 2, expire_retained, &e)) != 0 ||
        (rc = store_scan(s, "s/", 2, expire_session, &e)) != 0 ||
        (rc = store_scan(s, "q/", 2, expire_message, &e)) != 0)
        goto out;
    if (store_batch_count(e.b) > 0) {
        rc = store_submit_sync(s, e.b);
        e.b = NULL;
    }
out:
    store_batch_free(e.b);
    if (out)
        *out = e.n;
    return rc;
}

/* ---- statistics and test hooks ---------------------------------------- */

void store_stats(store_t *s, store_stats_t *out)
{
    pthread_mutex_lock(&s->mu);
    out->batches_submitted = s->submitted;
    out->pending_batches = s->pending_batches;
    out->pending_bytes = s->pending_bytes;
    pthread_mutex_unlock(&s->mu);
    out->batches_committed = STAT_GET(s->committed);
    out->batches_failed = STAT_GET(s->failed);
    out->commits = STAT_GET(s->commits);
    out->max_group = STAT_GET(s->max_group);
    out->bytes_written = STAT_GET(s->bytes);
    out->syncs = STAT_GET(s->syncs);
    out->last_sync_us = STAT_GET(s->last_sync_us);
    out->write_errors = STAT_GET(s->write_errors);
    for (int i = 0; i < AN_HIST_N; i++) {
        out->sync_hist[i] = STAT_GET(s->sync_hist.bucket[i]);
        out->write_hist[i] = STAT_GET(s->write_hist.bucket[i]);
    }
    out->sync_sum_us = STAT_GET(s->sync_hist.sum_us);
    out->write_sum_us = STAT_GET(s->write_hist.sum_us);
}

void store_last_error(store_t *s, char *buf, size_t len)
{
    pthread_mutex_lock(&s->mu);
    snprintf(buf, len, "%s", s->last_err);
    pthread_mutex_unlock(&s->mu);
}

void store_inject_write_failures(store_t *s, unsigned n, int err)
{
    pthread_mutex_lock(&s->mu);
    s->inject_n = n;
    s->inject_err = err < 0 ? err : STORE_EIO;
    pthread_mutex_unlock(&s->mu);
}

const char *store_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case STORE_ENOTFOUND:
        return "not found";
    case STORE_EIO:
        return "I/O error";
    case STORE_ENOSPC:
        return "no space left on device";
    case STORE_ECORRUPT:
        return "corrupt or malformed data";
    case STORE_EVERSION:
        return "unknown format version";
    case STORE_EBUSY:
        return "in use by another process or store (LOCK held)";
    case STORE_EACCES:
        return "permission denied";
    case STORE_EINVAL:
        return "invalid argument";
    case STORE_ESHUTDOWN:
        return "store is closing";
    default:
        return "store error";
    }
}
