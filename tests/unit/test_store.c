/* test_store.c -- the store (store.h) through both backends.
 *
 * One table of behaviour tests runs twice, once per backend (the cmocka
 * prestate is the backend); the RocksDB-only tests cover what needs a disk:
 * reopening, the LOCK, the format version, corrupt directories, a SIGKILL
 * in the middle of acknowledged sync=always writes, and a really full disk.
 * Each test works in its own mkdtemp() directory under /tmp and removes it.
 *
 * Child processes re-execute this binary (/proc/self/exe) with a --*-child
 * argument instead of running on after fork(): RocksDB's background thread
 * pool does not survive a fork, and the children must behave like a second
 * broker process.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store.h"
#include "store_rec.h"

#define SKIP_EXIT 77

/* ---- helpers ---------------------------------------------------------- */

typedef struct {
    store_backend_kind_t kind;
    char dir[64];
    char path[128];
    store_t *s;
} fx_t;

static store_backend_kind_t memory_kind = STORE_BACKEND_MEMORY;
static store_backend_kind_t rocksdb_kind = STORE_BACKEND_ROCKSDB;

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(p);
    return 0;
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static store_t *open_store(store_backend_kind_t kind, const char *path, store_sync_t sync,
                           uint32_t interval_ms, char *err, size_t errlen)
{
    store_opts_t o = {.backend = kind, .path = path, .sync = sync, .sync_interval_ms = interval_ms};
    return store_open(&o, err, errlen);
}

static store_t *must_open(fx_t *f, store_sync_t sync, uint32_t interval_ms)
{
    char err[512] = "";
    store_t *s = open_store(f->kind, f->path, sync, interval_ms, err, sizeof(err));
    if (s == NULL)
        fail_msg("store_open: %s", err);
    return s;
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    f->kind = *(store_backend_kind_t *)*state;
    snprintf(f->dir, sizeof(f->dir), "/tmp/antenna-store-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/db", f->dir);
    f->s = must_open(f, STORE_SYNC_ALWAYS, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    store_close(f->s);
    rm_rf(f->dir);
    free(f);
    return 0;
}

static int put1(store_t *s, const char *k, const char *v)
{
    store_batch_t *b = store_batch_new();
    store_batch_put(b, k, strlen(k), v, strlen(v));
    return store_submit_sync(s, b);
}

static int del1(store_t *s, const char *k)
{
    store_batch_t *b = store_batch_new();
    store_batch_del(b, k, strlen(k));
    return store_submit_sync(s, b);
}

static void assert_value(store_t *s, const void *k, size_t kl, const char *want)
{
    void *v = NULL;
    size_t vl = 0;
    int rc = store_get(s, k, kl, &v, &vl);
    if (want == NULL) {
        assert_int_equal(rc, STORE_ENOTFOUND);
        assert_null(v);
        return;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(vl, strlen(want));
    assert_memory_equal(v, want, vl);
    free(v);
}

#define ASSERT_VALUE(s, k, want) assert_value((s), (k), strlen(k), (want))

/* Collects the keys a scan visits. */
typedef struct {
    int n, stop_at;
    char keys[64][48];
    size_t lens[64];
} collect_t;

static int collect_cb(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    collect_t *c = ud;
    (void)v, (void)vl;
    if (c->n < 64 && kl <= sizeof(c->keys[0])) {
        memcpy(c->keys[c->n], k, kl);
        c->lens[c->n] = kl;
    }
    c->n++;
    return c->stop_at && c->n == c->stop_at ? 42 : 0;
}

/* A gate: a done() callback that holds the committer until opened, so that
 * every batch submitted meanwhile waits and forms one group. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int entered, open;
} gate_t;

static void gate_init(gate_t *g)
{
    memset(g, 0, sizeof(*g));
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
}

static void gate_done(void *ud, int err)
{
    gate_t *g = ud;
    assert_int_equal(err, 0);
    pthread_mutex_lock(&g->mu);
    g->entered = 1;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_close_committer(store_t *s, gate_t *g)
{
    gate_init(g);
    store_batch_t *b = store_batch_new();
    store_batch_put(b, "gate", 4, "1", 1);
    assert_int_equal(store_submit(s, b, gate_done, g), 0);
    pthread_mutex_lock(&g->mu);
    while (!g->entered)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_open(gate_t *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void barrier(store_t *s)
{
    assert_int_equal(store_submit_sync(s, store_batch_new()), 0);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- both backends ---------------------------------------------------- */

static void store_put_get_delete(void **state)
{
    fx_t *f = *state;
    store_t *s = f->s;
    assert_int_equal(put1(s, "k1", "v1"), 0);
    assert_int_equal(put1(s, "k2", "v2"), 0);
    ASSERT_VALUE(s, "k1", "v1");
    ASSERT_VALUE(s, "k2", "v2");
    assert_int_equal(put1(s, "k1", "overwritten"), 0);
    ASSERT_VALUE(s, "k1", "overwritten");
    assert_int_equal(del1(s, "k1"), 0);
    ASSERT_VALUE(s, "k1", NULL);
    assert_int_equal(del1(s, "never-there"), 0);
    /* empty values and binary keys with NUL bytes */
    store_batch_t *b = store_batch_new();
    store_batch_put(b, "bin\0key", 7, "", 0);
    store_batch_put(b, "bin\0kez", 7, "\0\1", 2);
    assert_int_equal(store_batch_count(b), 2);
    assert_int_equal(store_batch_bytes(b), 7 + 7 + 2);
    assert_int_equal(store_submit_sync(s, b), 0);
    assert_value(s, "bin\0key", 7, "");
    void *v;
    size_t vl;
    assert_int_equal(store_get(s, "bin\0kez", 7, &v, &vl), 0);
    assert_int_equal(vl, 2);
    assert_memory_equal(v, "\0\1", 2);
    free(v);
    assert_value(s, "bin", 3, NULL);
    /* operations of one batch apply in order */
    b = store_batch_new();
    store_batch_put(b, "k3", 2, "a", 1);
    store_batch_del(b, "k3", 2);
    store_batch_put(b, "k4", 2, "b", 1);
    store_batch_put(b, "k4", 2, "c", 1);
    uint8_t *p = store_batch_put_reserve(b, "k5", 2, 3);
    memcpy(p, "xyz", 3);
    assert_int_equal(store_submit_sync(s, b), 0);
    ASSERT_VALUE(s, "k3", NULL);
    ASSERT_VALUE(s, "k4", "c");
    ASSERT_VALUE(s, "k5", "xyz");
    store_stats_t st;
    store_stats(s, &st);
    assert_true(st.batches_committed >= 6);
    assert_int_equal(st.batches_failed, 0);
    assert_true(st.bytes_written > 0);
}

static void store_scan_prefix_in_key_order(void **state)
{
    fx_t *f = *state;
    store_t *s = f->s;
    static const uint64_t seqs[] = {65536, 3, 256, 255, 0, 1ull << 40, 7};
    store_batch_t *b = store_batch_new();
    uint8_t k[STORE_KEY_MAX];
    for (size_t i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++) {
        size_t n = store_key_queue(k, sizeof(k), "c1", 2, seqs[i]);
        store_batch_put(b, k, n, "m", 1);
        n = store_key_queue(k, sizeof(k), "c2", 2, seqs[i]);
        store_batch_put(b, k, n, "m", 1);
    }
    store_batch_put(b, "r/z", 3, "x", 1);
    store_batch_put(b, "r/a", 3, "x", 1);
    store_batch_put(b, "s/c1", 4, "x", 1);
    assert_int_equal(store_submit_sync(s, b), 0);

    collect_t c = {0};
    size_t pl = store_key_queue_prefix(k, sizeof(k), "c1", 2);
    assert_int_equal(store_scan(s, k, pl, collect_cb, &c), 0);
    assert_int_equal(c.n, 7);
    static const uint64_t sorted[] = {0, 3, 7, 255, 256, 65536, 1ull << 40};
    for (int i = 0; i < 7; i++) {
        store_key_info_t ki;
        assert_int_equal(store_key_parse(c.keys[i], c.lens[i], &ki), 0);
        assert_int_equal(ki.kind, STORE_KEY_QUEUE);
        assert_memory_equal(ki.name, "c1", 2);
        assert_true(ki.seq == sorted[i]);
    }
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_scan(s, "r/", 2, collect_cb, &c), 0);
    assert_int_equal(c.n, 2);
    assert_memory_equal(c.keys[0], "r/a", 3);
    assert_memory_equal(c.keys[1], "r/z", 3);
    /* a callback's non-zero return stops the scan and is returned */
    memset(&c, 0, sizeof(c));
    c.stop_at = 3;
    assert_int_equal(store_scan(s, "q/", 2, collect_cb, &c), 42);
    assert_int_equal(c.n, 3);
    /* the empty prefix is every key, the format version first */
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_scan(s, "", 0, collect_cb, &c), 0);
    assert_int_equal(c.n, 14 + 3 + 1);
    assert_int_equal(c.lens[0], STORE_KEY_VERSION_LEN);
    assert_memory_equal(c.keys[0], STORE_KEY_VERSION, STORE_KEY_VERSION_LEN);
    /* no match */
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_scan(s, "zz", 2, collect_cb, &c), 0);
    assert_int_equal(c.n, 0);
}

static int count_prefix(store_t *s, const void *p, size_t n)
{
    collect_t c = {0};
    assert_int_equal(store_scan(s, p, n, collect_cb, &c), 0);
    return c.n;
}

static void store_delete_prefix_drops_one_queue(void **state)
{
    fx_t *f = *state;
    store_t *s = f->s;
    static const char *cids[] = {"a", "a/b", "ab", "b"};
    uint8_t k[STORE_KEY_MAX];
    store_batch_t *b = store_batch_new();
    for (int c = 0; c < 4; c++)
        for (uint64_t q = 0; q < 50; q++) {
            size_t n = store_key_queue(k, sizeof(k), cids[c], strlen(cids[c]), q);
            store_batch_put(b, k, n, "m", 1);
        }
    assert_int_equal(store_submit_sync(s, b), 0);

    b = store_batch_new();
    size_t pl = store_key_queue_prefix(k, sizeof(k), "a", 1);
    assert_int_equal(store_batch_del_prefix(b, k, pl), 0);
    assert_int_equal(store_submit_sync(s, b), 0);
    assert_int_equal(count_prefix(s, k, pl), 0);
    for (int c = 1; c < 4; c++) {
        pl = store_key_queue_prefix(k, sizeof(k), cids[c], strlen(cids[c]));
        assert_int_equal(count_prefix(s, k, pl), 50);
    }

    /* in one batch, order matters: put after the range deletion survives */
    b = store_batch_new();
    store_batch_put(b, "x/1", 3, "a", 1);
    assert_int_equal(store_batch_del_prefix(b, "x/", 2), 0);
    store_batch_put(b, "x/2", 3, "b", 1);
    assert_int_equal(store_submit_sync(s, b), 0);
    ASSERT_VALUE(s, "x/1", NULL);
    ASSERT_VALUE(s, "x/2", "b");

    /* a prefix ending in 0xff bytes still has a successor */
    b = store_batch_new();
    store_batch_put(b,
                    "y\xff\xff"
                    "1",
                    4, "a", 1);
    store_batch_put(b, "z", 1, "keep", 4);
    assert_int_equal(store_batch_del_prefix(b, "y\xff\xff", 3), 0);
    assert_int_equal(store_submit_sync(s, b), 0);
    assert_value(s,
                 "y\xff\xff"
                 "1",
                 4, NULL);
    ASSERT_VALUE(s, "z", "keep");

    /* prefixes without a successor are refused, the batch unchanged */
    b = store_batch_new();
    assert_int_equal(store_batch_del_prefix(b, "", 0), STORE_EINVAL);
    assert_int_equal(store_batch_del_prefix(b, "\xff\xff", 2), STORE_EINVAL);
    assert_int_equal(store_batch_count(b), 0);
    store_batch_free(b);
}

typedef struct {
    int last_seen[8];
    atomic_int done;
    int order_ok;
} order_t;

typedef struct {
    order_t *o;
    int thread, seq;
} order_item_t;

static void order_done(void *ud, int err)
{
    order_item_t *it = ud;
    /* callbacks run one at a time on the committer: no lock needed */
    if (err != 0 || it->seq != it->o->last_seen[it->thread] + 1)
        it->o->order_ok = 0;
    it->o->last_seen[it->thread] = it->seq;
    atomic_fetch_add(&it->o->done, 1);
    free(it);
}

#define GC_THREADS 4
#define GC_BATCHES 250

typedef struct {
    store_t *s;
    order_t *o;
    int thread;
} submitter_t;

static void *submitter_main(void *arg)
{
    submitter_t *t = arg;
    for (int i = 0; i < GC_BATCHES; i++) {
        char key[32], val[100];
        int kl = snprintf(key, sizeof(key), "g/%d/%04d", t->thread, i);
        memset(val, 'a' + t->thread, sizeof(val));
        store_batch_t *b = store_batch_new();
        store_batch_put(b, key, (size_t)kl, val, sizeof(val));
        order_item_t *it = malloc(sizeof(*it));
        *it = (order_item_t){t->o, t->thread, i};
        if (store_submit(t->s, b, order_done, it) != 0)
            abort();
    }
    return NULL;
}

static void run_submitters(store_t *s, order_t *o)
{
    pthread_t th[GC_THREADS];
    submitter_t sub[GC_THREADS];
    for (int t = 0; t < GC_THREADS; t++) {
        sub[t] = (submitter_t){s, o, t};
        o->last_seen[t] = -1;
        assert_int_equal(pthread_create(&th[t], NULL, submitter_main, &sub[t]), 0);
    }
    for (int t = 0; t < GC_THREADS; t++)
        pthread_join(th[t], NULL);
}

/* Batches that wait while the committer is busy are committed together:
 * one backend write (and one fsync) for all of them. */
static void store_group_commit_takes_every_waiting_batch(void **state)
{
    fx_t *f = *state;
    store_t *s = f->s;
    order_t o = {.order_ok = 1};
    gate_t g;
    store_stats_t before, after;

    store_stats(s, &before);
    gate_close_committer(s, &g);
    run_submitters(s, &o);
    store_stats(s, &after);
    assert_int_equal(after.pending_batches, GC_THREADS * GC_BATCHES);
    assert_true(after.pending_bytes >= GC_THREADS * GC_BATCHES * 100);
    gate_open(&g);
    barrier(s);
    store_stats(s, &after);
    assert_int_equal(atomic_load(&o.done), GC_THREADS * GC_BATCHES);
    assert_true(o.order_ok);
    /* the gate's commit, then one for all 1000 batches */
    assert_int_equal(after.commits - before.commits, 2);
    assert_true(after.max_group >= GC_THREADS * GC_BATCHES);
    if (f->kind == STORE_BACKEND_ROCKSDB)
        assert_int_equal(after.syncs - before.syncs, 2);
    assert_int_equal(after.pending_batches, 0);
    ASSERT_VALUE(s, "g/3/0249",
                 "dddddddddddddddddddddddddddddddddddddddddddddddddd"
                 "dddddddddddddddddddddddddddddddddddddddddddddddddd");
    assert_int_equal(count_prefix(s, "g/", 2), GC_THREADS * GC_BATCHES);
}

/* Free-running: threads submit while the committer writes; with fsyncs to
 * wait for, groups form by themselves. */
static void store_group_commit_under_load(void **state)
{
    fx_t *f = *state;
    store_t *s = f->s;
    order_t o = {.order_ok = 1};
    store_stats_t before, after;

    store_stats(s, &before);
    run_submitters(s, &o);
    barrier(s);
    store_stats(s, &after);
    assert_int_equal(atomic_load(&o.done), GC_THREADS * GC_BATCHES);
    assert_true(o.order_ok);
    assert_int_equal(after.batches_committed - before.batches_committed,
                     GC_THREADS * GC_BATCHES + 1);
    if (f->kind == STORE_BACKEND_ROCKSDB) {
        print_message("group commit: %d batches in %llu commits, largest group %llu\n",
                      GC_THREADS * GC_BATCHES, (unsigned long long)(after.commits - before.commits),
                      (unsigned long long)after.max_group);
        assert_true(after.commits - before.commits < GC_THREADS * GC_BATCHES);
        assert_int_equal(after.syncs - before.syncs, after.commits - before.commits);
    }
    assert_int_equal(count_prefix(s, "g/", 2), GC_THREADS * GC_BATCHES);
}

typedef struct {
    store_t *s;
    int calls, visible;
    uint64_t syncs, commits;
} seen_t;

static void seen_done(void *ud, int err)
{
    seen_t *w = ud;
    void *v = NULL;
    size_t vl;
    store_stats_t st;
    assert_int_equal(err, 0);
    w->calls++;
    if (store_get(w->s, "durable", 7, &v, &vl) == 0)
        w->visible = 1;
    free(v);
    store_stats(w->s, &st);
    w->syncs = st.syncs;
    w->commits = st.commits;
}

/* sync=always: when done() runs the batch is committed and (RocksDB) the
 * fsync covering it has returned: every commit so far was a sync write. */
static void store_sync_always_completes_after_commit(void **state)
{
    fx_t *f = *state;
    seen_t w = {.s = f->s};
    store_batch_t *b = store_batch_new();
    store_batch_put(b, "durable", 7, "yes", 3);
    assert_int_equal(store_submit(f->s, b, seen_done, &w), 0);
    barrier(f->s);
    assert_int_equal(w.calls, 1);
    assert_true(w.visible);
    if (f->kind == STORE_BACKEND_ROCKSDB) {
        assert_true(w.syncs >= 1);
        assert_true(w.syncs == w.commits);
        store_stats_t st;
        store_stats(f->s, &st);
        assert_true(st.last_sync_us > 0);
    } else {
        assert_true(w.syncs == 0);
    }
}

/* sync=interval: done() runs before any fsync; the timer syncs later.
 * sync=none: never an fsync from the store. */
static void store_sync_interval_and_none(void **state)
{
    fx_t *f = *state;
    store_close(f->s);
    f->s = must_open(f, STORE_SYNC_INTERVAL, 200);
    seen_t w = {.s = f->s};
    store_batch_t *b = store_batch_new();
    store_batch_put(b, "durable", 7, "yes", 3);
    assert_int_equal(store_submit(f->s, b, seen_done, &w), 0);
    barrier(f->s);
    assert_true(w.visible);
    assert_true(w.syncs == 0); /* acknowledged before the sync */
    store_stats_t st;
    for (int i = 0; i < 300; i++) {
        store_stats(f->s, &st);
        if (st.syncs > 0 || f->kind == STORE_BACKEND_MEMORY)
            break;
        sleep_ms(10);
    }
    if (f->kind == STORE_BACKEND_ROCKSDB) {
        assert_int_equal(st.syncs, 1);
        /* no writes, no more syncs */
        sleep_ms(500);
        store_stats(f->s, &st);
        assert_int_equal(st.syncs, 1);
    } else {
        assert_int_equal(st.syncs, 0);
    }

    store_close(f->s);
    f->s = must_open(f, STORE_SYNC_NONE, 0);
    ASSERT_VALUE(f->s, "durable", f->kind == STORE_BACKEND_ROCKSDB ? "yes" : NULL);
    assert_int_equal(put1(f->s, "k", "v"), 0);
    sleep_ms(100);
    store_stats(f->s, &st);
    assert_int_equal(st.syncs, 0);
    assert_int_equal(st.batches_committed, 1);
}

typedef struct {
    int errs[8];
    int n;
} errs_t;

static void record_err(void *ud, int err)
{
    errs_t *e = ud;
    if (e->n < 8)
        e->errs[e->n] = err;
    e->n++;
}

/* A failed write reaches the batch's callback with its error, the store
 * keeps running, and the next batch commits. */
static void store_injected_write_failure_then_recovery(void **state)
{
    fx_t *f = *state;
    store_t *s = f->s;
    errs_t e = {0};
    char msg[256];

    store_inject_write_failures(s, 1, STORE_ENOSPC);
    store_batch_t *b = store_batch_new();
    store_batch_put(b, "lost", 4, "x", 1);
    assert_int_equal(store_submit(s, b, record_err, &e), 0);
    b = store_batch_new();
    store_batch_put(b, "kept", 4, "y", 1);
    assert_int_equal(store_submit(s, b, record_err, &e), 0);
    barrier(s);
    assert_int_equal(e.n, 2);
    assert_int_equal(e.errs[0], STORE_ENOSPC);
    assert_int_equal(e.errs[1], 0);
    ASSERT_VALUE(s, "lost", NULL);
    ASSERT_VALUE(s, "kept", "y");
    store_last_error(s, msg, sizeof(msg));
    assert_non_null(strstr(msg, "injected"));
    store_stats_t st;
    store_stats(s, &st);
    assert_int_equal(st.batches_failed, 1);

    /* inside one group only the injected batches fail */
    gate_t g;
    memset(&e, 0, sizeof(e));
    gate_close_committer(s, &g);
    for (int i = 0; i < 5; i++) {
        char k[8];
        snprintf(k, sizeof(k), "g%d", i);
        b = store_batch_new();
        store_batch_put(b, k, strlen(k), "v", 1);
        assert_int_equal(store_submit(s, b, record_err, &e), 0);
    }
    store_inject_write_failures(s, 2, STORE_EIO);
    gate_open(&g);
    barrier(s);
    assert_int_equal(e.n, 5);
    assert_int_equal(e.errs[0], STORE_EIO);
    assert_int_equal(e.errs[1], STORE_EIO);
    for (int i = 2; i < 5; i++)
        assert_int_equal(e.errs[i], 0);
    ASSERT_VALUE(s, "g1", NULL);
    ASSERT_VALUE(s, "g2", "v");
    assert_int_equal(put1(s, "after", "ok"), 0);
}

static void count_cb(void *ud, int err)
{
    atomic_int *n = ud;
    if (err == 0)
        atomic_fetch_add(n, 1);
}

/* store_close() commits what is pending (callbacks run) before returning. */
static void store_close_commits_pending_batches(void **state)
{
    fx_t *f = *state;
    atomic_int n = 0;
    for (int i = 0; i < 200; i++) {
        char k[16];
        snprintf(k, sizeof(k), "p/%03d", i);
        store_batch_t *b = store_batch_new();
        store_batch_put(b, k, strlen(k), "v", 1);
        assert_int_equal(store_submit(f->s, b, count_cb, &n), 0);
    }
    store_close(f->s);
    assert_int_equal(atomic_load(&n), 200);
    f->s = must_open(f, STORE_SYNC_ALWAYS, 0);
    if (f->kind == STORE_BACKEND_ROCKSDB)
        assert_int_equal(count_prefix(f->s, "p/", 2), 200);
}

typedef struct {
    store_t *s;
    int depth;
    atomic_int finished;
} chain_t;

static void chain_done(void *ud, int err)
{
    chain_t *c = ud;
    assert_int_equal(err, 0);
    if (++c->depth < 10) {
        store_batch_t *b = store_batch_new();
        char k[8];
        snprintf(k, sizeof(k), "c%d", c->depth);
        store_batch_put(b, k, strlen(k), "v", 1);
        assert_int_equal(store_submit(c->s, b, chain_done, c), 0);
    } else {
        atomic_store(&c->finished, 1);
    }
}

/* A callback may submit the next batch. */
static void store_submit_from_callback(void **state)
{
    fx_t *f = *state;
    chain_t c = {.s = f->s};
    store_batch_t *b = store_batch_new();
    store_batch_put(b, "c0", 2, "v", 1);
    assert_int_equal(store_submit(f->s, b, chain_done, &c), 0);
    for (int i = 0; i < 500 && !atomic_load(&c.finished); i++)
        sleep_ms(10);
    assert_true(atomic_load(&c.finished));
    ASSERT_VALUE(f->s, "c9", "v");
}

static size_t enc_retained(uint8_t *buf, size_t cap, const char *topic, uint64_t expiry)
{
    store_retained_t r = {.qos = 1,
                          .expiry = expiry,
                          .topic = (const uint8_t *)topic,
                          .topic_len = strlen(topic),
                          .payload = (const uint8_t *)"p",
                          .payload_len = 1};
    return store_rec_encode_retained(&r, buf, cap);
}

static void put_outmsg(store_batch_t *b, const char *cid, uint64_t seq, uint8_t st, uint64_t exp)
{
    uint8_t k[STORE_KEY_MAX];
    store_outmsg_t m = {.state = st,
                        .qos = st == STORE_OUT_WAIT_PUBACK ? 1 : 2,
                        .pid = st ? 5 : 0,
                        .expiry = exp,
                        .topic = (const uint8_t *)"t",
                        .topic_len = 1};
    size_t kl = store_key_queue(k, sizeof(k), cid, strlen(cid), seq);
    size_t vl = store_rec_encode_outmsg(&m, NULL, 0);
    store_rec_encode_outmsg(&m, store_batch_put_reserve(b, k, kl, vl), vl);
}

static void put_session(store_batch_t *b, const char *cid, uint64_t deadline)
{
    uint8_t k[STORE_KEY_MAX], v[64];
    store_sub_t sub = {.filter = (const uint8_t *)"#", .filter_len = 1, .options = 1};
    store_session_t ss = {.expiry_interval = 60,
                          .expiry_deadline = deadline,
                          .next_pid = 9,
                          .nsubs = 1,
                          .subs = &sub};
    size_t kl = store_key_session(k, sizeof(k), cid, strlen(cid));
    size_t vl = store_rec_encode_session(&ss, v, sizeof(v));
    store_batch_put(b, k, kl, v, vl);
    kl = store_key_incoming(k, sizeof(k), cid, strlen(cid), 77);
    vl = store_rec_encode_incoming(v, sizeof(v));
    store_batch_put(b, k, kl, v, vl);
}

/* Expired retained messages, queued messages and sessions (with their
 * queues and QoS 2 ids) go; inflight messages, live entries and malformed
 * records stay. */
static void store_expire_removes_expired_entries(void **state)
{
    fx_t *f = *state;
    store_t *s = f->s;
    uint8_t k[STORE_KEY_MAX], v[256];
    const uint64_t now = 1000;
    store_batch_t *b = store_batch_new();

    size_t kl = store_key_retained(k, sizeof(k), "old", 3);
    store_batch_put(b, k, kl, v, enc_retained(v, sizeof(v), "old", now));
    kl = store_key_retained(k, sizeof(k), "new", 3);
    store_batch_put(b, k, kl, v, enc_retained(v, sizeof(v), "new", now + 1));
    kl = store_key_retained(k, sizeof(k), "forever", 7);
    store_batch_put(b, k, kl, v, enc_retained(v, sizeof(v), "forever", 0));
    store_batch_put(b, "r/garbage", 9, "\x52\x01\x00", 3);
    put_session(b, "gone", now - 1);
    put_outmsg(b, "gone", 1, STORE_OUT_QUEUED, 0);
    put_session(b, "live", now + 100);
    put_outmsg(b, "live", 1, STORE_OUT_QUEUED, now - 5);      /* expired: removed */
    put_outmsg(b, "live", 2, STORE_OUT_WAIT_PUBREC, now - 5); /* inflight: kept */
    put_outmsg(b, "live", 3, STORE_OUT_QUEUED, now + 5);
    put_session(b, "online", 0);
    assert_int_equal(store_submit_sync(s, b), 0);

    store_expire_counts_t n;
    assert_int_equal(store_expire(s, now, &n), 0);
    assert_int_equal(n.retained, 1);
    assert_int_equal(n.sessions, 1);
    assert_int_equal(n.messages, 1);
    assert_int_equal(n.malformed, 1);

    assert_int_equal(count_prefix(s, "r/", 2), 3); /* new, forever, garbage */
    ASSERT_VALUE(s, "r/old", NULL);
    kl = store_key_session(k, sizeof(k), "gone", 4);
    assert_value(s, k, kl, NULL);
    kl = store_key_queue_prefix(k, sizeof(k), "gone", 4);
    assert_int_equal(count_prefix(s, k, kl), 0);
    kl = store_key_incoming_prefix(k, sizeof(k), "gone", 4);
    assert_int_equal(count_prefix(s, k, kl), 0);
    kl = store_key_queue_prefix(k, sizeof(k), "live", 4);
    assert_int_equal(count_prefix(s, k, kl), 2);
    kl = store_key_incoming_prefix(k, sizeof(k), "live", 4);
    assert_int_equal(count_prefix(s, k, kl), 1);
    assert_int_equal(count_prefix(s, "s/", 2), 2);
    /* nothing more to do */
    assert_int_equal(store_expire(s, now, &n), 0);
    assert_int_equal(n.retained + n.sessions + n.messages, 0);
}

static long long sst_bytes(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "du -cb %s/*.sst 2>/dev/null | tail -n1 | cut -f1", dir);
    FILE *p = popen(cmd, "r");
    long long n = 0;
    if (p) {
        if (fscanf(p, "%lld", &n) != 1)
            n = 0;
        pclose(p);
    }
    return n;
}

/* Deleting a prefix and compacting it gives the space back (RocksDB); in
 * memory compaction is a no-op that succeeds. */
static void store_compact_gives_space_back(void **state)
{
    fx_t *f = *state;
    store_t *s = f->s;
    uint64_t val[512], x = 88172645463325252ull;
    for (int i = 0; i < 8; i++) {
        store_batch_t *b = store_batch_new();
        for (int j = 0; j < 128; j++) {
            char k[32];
            snprintf(k, sizeof(k), "big/%02d/%03d", i, j);
            for (size_t w = 0; w < 512; w++) { /* incompressible values */
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                val[w] = x;
            }
            store_batch_put(b, k, strlen(k), val, sizeof(val));
        }
        assert_int_equal(store_submit_sync(s, b), 0);
    }
    assert_int_equal(store_compact(s, "big/", 4), 0);
    long long full = sst_bytes(f->path);
    store_batch_t *b = store_batch_new();
    assert_int_equal(store_batch_del_prefix(b, "big/", 4), 0);
    assert_int_equal(store_submit_sync(s, b), 0);
    assert_int_equal(count_prefix(s, "big/", 4), 0);
    assert_int_equal(store_compact(s, "big/", 4), 0);
    assert_int_equal(store_compact(s, "", 0), 0);
    long long empty = sst_bytes(f->path);
    if (f->kind == STORE_BACKEND_ROCKSDB) {
        print_message("compaction: %lld bytes of SST before, %lld after\n", full, empty);
        assert_true(full > 1000000);
        assert_true(empty < full / 10);
    }
    assert_int_equal(count_prefix(s, "big/", 4), 0);
}

/* Random puts, deletes and prefix deletions in random batches against a
 * plain array model: the full scan must equal the model, in key order. */
#define MODEL_A 10
#define MODEL_B 10
#define MODEL_KEY 24

static void model_key(char *k, int a, int b)
{
    snprintf(k, MODEL_KEY, "k/%d/%d", a, b);
}

typedef struct {
    int vals[MODEL_A * MODEL_B]; /* -1: absent */
    int at, ok;
} model_t;

static int model_cb(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    model_t *m = ud;
    char want[MODEL_KEY], val[16];
    while (m->at < MODEL_A * MODEL_B && m->vals[m->at] < 0)
        m->at++;
    if (m->at == MODEL_A * MODEL_B) {
        m->ok = 0;
        return 1;
    }
    model_key(want, m->at / MODEL_B, m->at % MODEL_B);
    snprintf(val, sizeof(val), "%d", m->vals[m->at]);
    if (kl != strlen(want) || memcmp(k, want, kl) != 0 || vl != strlen(val) ||
        memcmp(v, val, vl) != 0)
        m->ok = 0;
    m->at++;
    return 0;
}

static void store_random_ops_match_a_model(void **state)
{
    fx_t *f = *state;
    model_t m;
    uint64_t x = 0x2545f4914f6cdd1dull;
    for (int i = 0; i < MODEL_A * MODEL_B; i++)
        m.vals[i] = -1;
    for (int round = 0; round < 300; round++) {
        store_batch_t *b = store_batch_new();
        int ops = 1 + (int)(x % 20);
        for (int i = 0; i < ops; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            int a = (int)((x >> 8) % MODEL_A), bb = (int)((x >> 16) % MODEL_B);
            int what = (int)(x % 10);
            char k[MODEL_KEY], v[16];
            model_key(k, a, bb);
            if (what < 6) {
                int val = (int)((x >> 24) % 100000);
                snprintf(v, sizeof(v), "%d", val);
                store_batch_put(b, k, strlen(k), v, strlen(v));
                m.vals[a * MODEL_B + bb] = val;
            } else if (what < 9) {
                store_batch_del(b, k, strlen(k));
                m.vals[a * MODEL_B + bb] = -1;
            } else {
                k[4] = '\0'; /* "k/a/" */
                assert_int_equal(store_batch_del_prefix(b, k, 4), 0);
                for (int j = 0; j < MODEL_B; j++)
                    m.vals[a * MODEL_B + j] = -1;
            }
        }
        assert_int_equal(store_submit_sync(f->s, b), 0);
        if (round % 50 == 49 || round == 299) {
            m.at = 0;
            m.ok = 1;
            assert_int_equal(store_scan(f->s, "k/", 2, model_cb, &m), 0);
            while (m.at < MODEL_A * MODEL_B && m.vals[m.at] < 0)
                m.at++;
            assert_true(m.ok);
            assert_int_equal(m.at, MODEL_A * MODEL_B);
        }
    }
}

typedef struct {
    store_t *s;
    atomic_int stop;
    atomic_long scans;
} reader_t;

static int count_only(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k, (void)kl, (void)v, (void)vl;
    (*(int *)ud)++;
    return 0;
}

static void *reader_main(void *arg)
{
    reader_t *r = arg;
    while (!atomic_load(&r->stop)) {
        int n = 0;
        void *v = NULL;
        size_t vl;
        if (store_scan(r->s, "w/", 2, count_only, &n) != 0 || n % 10 != 0)
            abort(); /* batches of 10 are atomic: never half of one */
        if (store_get(r->s, "w/0000/0", 8, &v, &vl) == 0)
            free(v);
        r->scans++;
    }
    return NULL;
}

/* Readers on other threads while the committer writes and deletes: they
 * see whole batches only, and nothing breaks. */
static void store_reads_during_writes(void **state)
{
    fx_t *f = *state;
    reader_t r = {.s = f->s};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, reader_main, &r), 0);
    for (int i = 0; i < 300; i++) {
        store_batch_t *b = store_batch_new();
        if (i % 7 == 6) {
            assert_int_equal(store_batch_del_prefix(b, "w/", 2), 0);
        }
        for (int j = 0; j < 10; j++) {
            char k[16];
            snprintf(k, sizeof(k), "w/%04d/%d", i, j);
            store_batch_put(b, k, strlen(k), "v", 1);
        }
        assert_int_equal(store_submit(f->s, b, NULL, NULL), 0);
    }
    barrier(f->s);
    /* on a loaded machine the reader may not have had a turn yet: give it
     * one (bounded) before stopping it */
    for (int i = 0; i < 5000 && atomic_load(&r.scans) == 0; i++)
        usleep(1000);
    atomic_store(&r.stop, 1);
    pthread_join(th, NULL);
    assert_true(atomic_load(&r.scans) > 0);
}

/* ---- RocksDB only ----------------------------------------------------- */

/* The replicate seam: the hook sees each group after its local write and
 * before its completions, in the flat form store_batch_append_raw takes
 * back; its error fails the group's batches (applied here all the same). */
typedef struct {
    store_t *copy; /* what the hook "replicates" into */
    int calls, fail;
    size_t groups_ops;
} repl_fx_t;

static int repl_hook(void *ud, store_t *s, const store_batch_t *group, int phase)
{
    repl_fx_t *r = ud;
    (void)s;
    if (phase != STORE_REPL_WAIT)
        return phase == STORE_REPL_SEND ? 0 : -1;
    r->calls++;
    store_batch_t *b = store_batch_new();
    for (const store_batch_t *x = group; x; x = store_group_next(x)) {
        size_t len;
        const void *raw = store_batch_raw(x, &len);
        if (!store_batch_failed(x))
            assert_int_equal(store_batch_append_raw(b, raw, len), 0);
    }
    r->groups_ops += store_batch_count(b);
    int rc = store_submit_sync(r->copy, b);
    return rc ? rc : r->fail;
}

static void store_replicate_hook(void **state)
{
    fx_t *f = *state;
    char err[512], path[160];
    snprintf(path, sizeof(path), "%s/copy", f->dir);
    repl_fx_t r = {
        .copy = open_store(STORE_BACKEND_MEMORY, path, STORE_SYNC_ALWAYS, 0, err, sizeof(err))};
    assert_non_null(r.copy);
    store_set_replicate(f->s, repl_hook, &r);
    assert_int_equal(put1(f->s, "s/a", "1"), 0);
    assert_int_equal(put1(f->s, "s/b", "2"), 0);
    assert_int_equal(del1(f->s, "s/a"), 0);
    store_batch_t *b = store_batch_new();
    assert_int_equal(store_batch_del_prefix(b, "q/", 2), 0);
    assert_int_equal(store_submit_sync(f->s, b), 0);
    assert_int_equal(r.groups_ops, 4);
    void *v = NULL;
    size_t vl = 0;
    assert_int_equal(store_get(r.copy, "s/a", 3, &v, &vl), STORE_ENOTFOUND);
    assert_int_equal(store_get(r.copy, "s/b", 3, &v, &vl), 0);
    assert_memory_equal(v, "2", 1);
    free(v);
    int before = r.calls;
    assert_int_equal(store_submit_sync(f->s, store_batch_new()), 0); /* a barrier: called too */
    assert_int_equal(r.calls, before + 1);
    r.fail = STORE_EIO; /* the replica refuses: the batch fails */
    assert_int_equal(put1(f->s, "s/c", "3"), STORE_EIO);
    store_set_replicate(f->s, NULL, NULL);
    before = r.calls;
    assert_int_equal(put1(f->s, "s/d", "4"), 0);
    assert_int_equal(r.calls, before);
    /* malformed flat operations are refused whole */
    store_batch_t *x = store_batch_new();
    uint8_t bad[12] = {1 /* put */, 200, 0, 0, 0, 0, 0, 0, 0, 'k', 'e', 'y'};
    assert_int_equal(store_batch_append_raw(x, bad, sizeof(bad)), STORE_EINVAL);
    assert_int_equal(store_batch_append_raw(x, bad, 5), STORE_EINVAL);
    assert_int_equal(store_batch_count(x), 0);
    store_batch_free(x);
    store_close(r.copy);
}

static void rocks_reopen_keeps_data(void **state)
{
    fx_t *f = *state;
    assert_int_equal(put1(f->s, "r/t", "retained"), 0);
    store_batch_t *b = store_batch_new();
    store_batch_put(b, "gone", 4, "x", 1);
    assert_int_equal(store_submit_sync(f->s, b), 0);
    assert_int_equal(del1(f->s, "gone"), 0);
    store_close(f->s);
    f->s = must_open(f, STORE_SYNC_ALWAYS, 0);
    ASSERT_VALUE(f->s, "r/t", "retained");
    ASSERT_VALUE(f->s, "gone", NULL);
    void *v;
    size_t vl;
    assert_int_equal(store_get(f->s, STORE_KEY_VERSION, STORE_KEY_VERSION_LEN, &v, &vl), 0);
    assert_int_equal(vl, 4);
    assert_memory_equal(v, "\0\0\0\1", 4);
    free(v);
}

/* Runs this binary as a child with args; returns its exit status, and its
 * standard output in out. */
static int run_child(char *const argv[], char *out, size_t outlen)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    close(p[1]);
    size_t n = 0;
    ssize_t r;
    while ((r = read(p[0], out + n, outlen - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = '\0';
    close(p[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The LOCK: a second open of an open store fails with an error naming the
 * path, in this process and from another one. */
static void rocks_second_open_fails_on_lock(void **state)
{
    fx_t *f = *state;
    char err[512] = "";
    store_t *s2 =
        open_store(STORE_BACKEND_ROCKSDB, f->path, STORE_SYNC_ALWAYS, 0, err, sizeof(err));
    assert_null(s2);
    print_message("same process: %s\n", err);
    assert_non_null(strstr(err, f->path));
    assert_non_null(strstr(err, "LOCK"));

    char out[1024];
    char *argv[] = {"test_store", "--lock-child", f->path, NULL};
    assert_int_equal(run_child(argv, out, sizeof(out)), 0);
    print_message("other process: %s\n", out);
    assert_non_null(strstr(out, f->path));
    assert_non_null(strstr(out, "LOCK"));
    /* the first store is unharmed */
    assert_int_equal(put1(f->s, "still", "works"), 0);
}

static void write_version(store_t *s, const void *v, size_t vl)
{
    store_batch_t *b = store_batch_new();
    store_batch_put(b, STORE_KEY_VERSION, STORE_KEY_VERSION_LEN, v, vl);
    assert_int_equal(store_submit_sync(s, b), 0);
}

static void expect_open_error(fx_t *f, const char *needle)
{
    char err[512] = "";
    store_t *s = open_store(STORE_BACKEND_ROCKSDB, f->path, STORE_SYNC_ALWAYS, 0, err, sizeof(err));
    if (s != NULL) {
        store_close(s);
        fail_msg("open of %s succeeded, expected '%s'", f->path, needle);
    }
    print_message("%s\n", err);
    assert_non_null(strstr(err, f->path));
    if (strstr(err, needle) == NULL)
        fail_msg("error '%s' does not say '%s'", err, needle);
}

/* A store of a newer (or unknown) format version, a malformed version, or
 * a RocksDB database that is not an antenna store: refused, naming the path. */
static void rocks_wrong_version_fails(void **state)
{
    fx_t *f = *state;
    write_version(f->s, "\0\0\0\2", 4);
    store_close(f->s);
    f->s = NULL;
    expect_open_error(f, "format version 2");

    f->s = NULL;
    rm_rf(f->path);
    f->s = must_open(f, STORE_SYNC_ALWAYS, 0);
    write_version(f->s, "\1", 1);
    store_close(f->s);
    f->s = NULL;
    expect_open_error(f, "malformed format version");

    rm_rf(f->path);
    f->s = must_open(f, STORE_SYNC_ALWAYS, 0);
    assert_int_equal(put1(f->s, "foreign", "data"), 0);
    store_batch_t *b = store_batch_new();
    store_batch_del(b, STORE_KEY_VERSION, STORE_KEY_VERSION_LEN);
    assert_int_equal(store_submit_sync(f->s, b), 0);
    store_close(f->s);
    f->s = NULL;
    expect_open_error(f, "not an antenna store");
    f->s = NULL;
    rm_rf(f->path);
    f->s = must_open(f, STORE_SYNC_ALWAYS, 0); /* for the teardown */
}

static void write_file(const char *path, const char *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
}

/* Garbage instead of a store: refused cleanly (no crash, no hang), with an
 * error naming the path. */
static void rocks_corrupt_directory_fails(void **state)
{
    fx_t *f = *state;
    char p[256];
    assert_int_equal(put1(f->s, "k", "v"), 0);
    store_close(f->s);
    f->s = NULL;

    /* a CURRENT that names no manifest */
    snprintf(p, sizeof(p), "%s/CURRENT", f->path);
    write_file(p, "garbage\n", 8);
    expect_open_error(f, f->path);

    /* every file of the store overwritten with garbage */
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "for x in %s/*; do head -c 4096 /dev/urandom > \"$x\"; done; "
             "echo MANIFEST-000001 > %s/CURRENT",
             f->path, f->path);
    assert_int_equal(system(cmd), 0);
    expect_open_error(f, f->path);

    /* the path is a regular file */
    rm_rf(f->path);
    write_file(f->path, "not a directory", 15);
    expect_open_error(f, f->path);
    remove(f->path);

    /* a directory where the store cannot be created */
    char saved[128];
    snprintf(saved, sizeof(saved), "%s", f->path);
    snprintf(f->path, sizeof(f->path), "%s/no/such/parent", f->dir);
    expect_open_error(f, f->path);
    snprintf(f->path, sizeof(f->path), "%s", saved);

    /* permissions (root ignores them) */
    if (geteuid() != 0) {
        mkdir(f->path, 0755);
        chmod(f->path, 0);
        expect_open_error(f, f->path);
        chmod(f->path, 0755);
    }
    f->s = must_open(f, STORE_SYNC_ALWAYS, 0);
}

static void rocks_bad_options_fail(void **state)
{
    (void)state;
    char err[256];
    assert_null(open_store(STORE_BACKEND_ROCKSDB, "", STORE_SYNC_ALWAYS, 0, err, sizeof(err)));
    assert_non_null(strstr(err, "path"));
    assert_null(open_store(STORE_BACKEND_MEMORY, NULL, STORE_SYNC_INTERVAL, 0, err, sizeof(err)));
    assert_non_null(strstr(err, "sync_interval_ms"));
}

/* ---- crash test ------------------------------------------------------- */

#define CRASH_ACKS 400
#define CRASH_VAL 100

static size_t crash_key(uint8_t *k, uint64_t seq)
{
    k[0] = 'c';
    k[1] = '/';
    for (int i = 0; i < 8; i++)
        k[2 + i] = (uint8_t)(seq >> (56 - 8 * i));
    return 10;
}

static void crash_val(uint8_t *v, uint64_t seq)
{
    for (int i = 0; i < CRASH_VAL; i++)
        v[i] = (uint8_t)(seq * 31 + (uint64_t)i);
}

/* The child: two threads submit sync=always batches as fast as the store
 * takes them (16 in flight each); each acknowledged batch's sequence number
 * goes to the pipe from its done() callback, after the commit. */
typedef struct {
    store_t *s;
    int fd;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int inflight[2];
    atomic_uint_fast64_t next_seq;
} crash_ctx_t;

typedef struct {
    crash_ctx_t *c;
    int thread;
    uint64_t seq[3];
    int n;
} crash_item_t;

static void crash_done(void *ud, int err)
{
    crash_item_t *it = ud;
    if (err == 0)
        for (int i = 0; i < it->n; i++)
            if (write(it->c->fd, &it->seq[i], 8) != 8)
                _exit(3);
    pthread_mutex_lock(&it->c->mu);
    it->c->inflight[it->thread]--;
    pthread_cond_broadcast(&it->c->cv);
    pthread_mutex_unlock(&it->c->mu);
    free(it);
}

static void *crash_thread(void *arg)
{
    crash_item_t *proto = arg;
    crash_ctx_t *c = proto->c;
    for (unsigned i = 0;; i++) {
        pthread_mutex_lock(&c->mu);
        while (c->inflight[proto->thread] >= 16)
            pthread_cond_wait(&c->cv, &c->mu);
        c->inflight[proto->thread]++;
        pthread_mutex_unlock(&c->mu);
        crash_item_t *it = calloc(1, sizeof(*it));
        it->c = c;
        it->thread = proto->thread;
        it->n = 1 + (int)(i % 3);
        store_batch_t *b = store_batch_new();
        for (int j = 0; j < it->n; j++) {
            uint8_t k[16], v[CRASH_VAL];
            it->seq[j] = atomic_fetch_add(&c->next_seq, 1);
            crash_val(v, it->seq[j]);
            store_batch_put(b, k, crash_key(k, it->seq[j]), v, sizeof(v));
        }
        if (store_submit(c->s, b, crash_done, it) != 0)
            _exit(4);
    }
    return NULL;
}

static int crash_child(const char *path, int fd)
{
    char err[512];
    crash_ctx_t c = {.fd = fd};
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    c.s = open_store(STORE_BACKEND_ROCKSDB, path, STORE_SYNC_ALWAYS, 0, err, sizeof(err));
    if (c.s == NULL) {
        fprintf(stderr, "crash child: %s\n", err);
        return 2;
    }
    crash_item_t proto[2] = {{.c = &c, .thread = 0}, {.c = &c, .thread = 1}};
    pthread_t th[2];
    for (int t = 0; t < 2; t++)
        pthread_create(&th[t], NULL, crash_thread, &proto[t]);
    for (int t = 0; t < 2; t++)
        pthread_join(th[t], NULL); /* never: SIGKILL ends us */
    return 0;
}

/* Kill -9 in the middle of sync=always writes: after reopening, every
 * batch whose done() had reported success is there, whole. */
static void rocks_sigkill_keeps_every_acknowledged_batch(void **state)
{
    fx_t *f = *state;
    store_close(f->s);
    f->s = NULL;
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char fd[16];
        close(p[0]);
        snprintf(fd, sizeof(fd), "%d", p[1]);
        execl("/proc/self/exe", "test_store", "--crash-child", f->path, fd, (char *)NULL);
        _exit(127);
    }
    close(p[1]);

    size_t cap = 1 << 16, n = 0, have = 0;
    uint64_t *acks = malloc(cap * sizeof(*acks));
    uint8_t buf[4096];
    int killed = 0;
    time_t deadline = time(NULL) + 60;
    for (;;) {
        struct pollfd pf = {.fd = p[0], .events = POLLIN};
        if (!killed && (n >= CRASH_ACKS || time(NULL) > deadline)) {
            kill(pid, SIGKILL);
            killed = 1;
        }
        if (poll(&pf, 1, 1000) <= 0)
            continue;
        ssize_t r = read(p[0], buf + have, sizeof(buf) - have);
        if (r <= 0)
            break; /* EOF: the child is gone and every ack is read */
        have += (size_t)r;
        size_t i = 0;
        for (; i + 8 <= have; i += 8) {
            if (n == cap)
                acks = realloc(acks, (cap *= 2) * sizeof(*acks));
            memcpy(&acks[n++], buf + i, 8);
        }
        memmove(buf, buf + i, have - i);
        have -= i;
    }
    close(p[0]);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
    assert_int_equal(have, 0);
    assert_true(n >= CRASH_ACKS);

    f->s = must_open(f, STORE_SYNC_ALWAYS, 0);
    for (size_t i = 0; i < n; i++) {
        uint8_t k[16], want[CRASH_VAL];
        void *v = NULL;
        size_t vl = 0;
        size_t kl = crash_key(k, acks[i]);
        int rc = store_get(f->s, k, kl, &v, &vl);
        if (rc != 0)
            fail_msg("acknowledged sequence %llu missing after SIGKILL (%s)",
                     (unsigned long long)acks[i], store_strerror(rc));
        crash_val(want, acks[i]);
        assert_int_equal(vl, CRASH_VAL);
        assert_memory_equal(v, want, CRASH_VAL);
        free(v);
    }
    int total = count_prefix(f->s, "c/", 2);
    print_message("crash: %zu acknowledged before SIGKILL, all present; %d keys in the store\n", n,
                  total);
    assert_true((size_t)total >= n);
    free(acks);
}

/* ---- a really full disk ----------------------------------------------- */

static int submit_big(store_t *s, const char *key, size_t vl)
{
    char *v = malloc(vl);
    memset(v, 'f', vl);
    store_batch_t *b = store_batch_new();
    store_batch_put(b, key, strlen(key), v, vl);
    free(v);
    return store_submit_sync(s, b);
}

#define CHILD_CHECK(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "enospc child: %s:%d: %s\n", __FILE__, __LINE__, #cond);               \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

/* In a private mount namespace: a 16 MiB tmpfs, a store on it, the disk
 * filled up.  Writes fail with ENOSPC (reported, no crash), opening another
 * store there fails naming its path, and once space is freed writes work
 * again and everything acknowledged is there. */
static int enospc_child(const char *dir)
{
    char path[256], path2[256], filler[256], err[512];
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", dir, "tmpfs", 0, "size=16m") != 0)
        return SKIP_EXIT;
    snprintf(path, sizeof(path), "%s/db", dir);
    snprintf(path2, sizeof(path2), "%s/db2", dir);
    snprintf(filler, sizeof(filler), "%s/filler", dir);

    store_t *s = open_store(STORE_BACKEND_ROCKSDB, path, STORE_SYNC_ALWAYS, 0, err, sizeof(err));
    CHILD_CHECK(s != NULL);
    CHILD_CHECK(put1(s, "before", "full") == 0);

    int fd = open(filler, O_WRONLY | O_CREAT, 0600);
    CHILD_CHECK(fd >= 0);
    char *block = calloc(1, 65536);
    while (write(fd, block, 65536) > 0)
        ;
    while (write(fd, block, 512) > 0)
        ;
    close(fd);
    free(block);

    /* Write 256 KiB values until the disk is full, and on: a failed write
     * is reported, the next one tried again (a reopen can free the space
     * of the torn log record, so some later writes may succeed). */
    int rc, acked[64] = {0}, failures = 0, first_fail = -1;
    for (int i = 0; i < 64 && failures < 3; i++) {
        char key[16];
        snprintf(key, sizeof(key), "during%02d", i);
        rc = submit_big(s, key, 256 * 1024);
        if (rc == 0) {
            acked[i] = 1;
            continue;
        }
        if (first_fail < 0) {
            first_fail = i;
            fprintf(stderr, "enospc child: write %d on a full disk: %s\n", i, store_strerror(rc));
            CHILD_CHECK(rc == STORE_ENOSPC);
        }
        failures++;
    }
    CHILD_CHECK(failures == 3);
    store_stats_t st;
    store_stats(s, &st);
    CHILD_CHECK(st.batches_failed == 3);
    char msg[256];
    store_last_error(s, msg, sizeof(msg));
    fprintf(stderr, "enospc child: last error: %s\n", msg);

    store_t *s2 = open_store(STORE_BACKEND_ROCKSDB, path2, STORE_SYNC_ALWAYS, 0, err, sizeof(err));
    fprintf(stderr, "enospc child: open on a full disk: %s\n", s2 ? "succeeded" : err);
    CHILD_CHECK(s2 == NULL);
    CHILD_CHECK(strstr(err, path2) != NULL);

    CHILD_CHECK(unlink(filler) == 0);
    for (int i = 0; i < 100; i++) {
        if ((rc = submit_big(s, "after", 1024)) == 0)
            break;
        sleep_ms(50);
    }
    CHILD_CHECK(rc == 0);
    CHILD_CHECK(put1(s, "after2", "ok") == 0);
    void *v;
    size_t vl;
    CHILD_CHECK(store_get(s, "before", 6, &v, &vl) == 0);
    free(v);
    store_close(s);
    s = open_store(STORE_BACKEND_ROCKSDB, path, STORE_SYNC_ALWAYS, 0, err, sizeof(err));
    CHILD_CHECK(s != NULL);
    CHILD_CHECK(store_get(s, "before", 6, &v, &vl) == 0);
    free(v);
    CHILD_CHECK(store_get(s, "after2", 6, &v, &vl) == 0);
    free(v);
    for (int i = 0; i < 64; i++) {
        char key[16];
        snprintf(key, sizeof(key), "during%02d", i);
        if (acked[i]) {
            CHILD_CHECK(store_get(s, key, strlen(key), &v, &vl) == 0);
            CHILD_CHECK(vl == 256 * 1024);
            free(v);
        }
    }
    store_close(s);
    umount(dir);
    return 0;
}

static void rocks_disk_full_reported_and_recovered(void **state)
{
    fx_t *f = *state;
    char sub[256], out[256];
    snprintf(sub, sizeof(sub), "%s/tmpfs", f->dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    char *argv[] = {"test_store", "--enospc-child", sub, NULL};
    int rc = run_child(argv, out, sizeof(out));
    if (rc == SKIP_EXIT)
        skip(); /* no mount namespace here (not root) */
    assert_int_equal(rc, 0);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--lock-child") == 0) {
        char err[512] = "";
        store_t *s =
            open_store(STORE_BACKEND_ROCKSDB, argv[2], STORE_SYNC_ALWAYS, 0, err, sizeof(err));
        if (s != NULL) {
            store_close(s);
            return 1;
        }
        fputs(err, stdout);
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "--crash-child") == 0)
        return crash_child(argv[2], atoi(argv[3]));
    if (argc == 3 && strcmp(argv[1], "--enospc-child") == 0)
        return enospc_child(argv[2]);

#define BOTH(t)                                                                                    \
    cmocka_unit_test_prestate_setup_teardown(t, setup, teardown, &memory_kind),                    \
        cmocka_unit_test_prestate_setup_teardown(t, setup, teardown, &rocksdb_kind)
#define ROCKS(t) cmocka_unit_test_prestate_setup_teardown(t, setup, teardown, &rocksdb_kind)

    const struct CMUnitTest tests[] = {
        BOTH(store_put_get_delete),
        BOTH(store_scan_prefix_in_key_order),
        BOTH(store_delete_prefix_drops_one_queue),
        BOTH(store_group_commit_takes_every_waiting_batch),
        BOTH(store_group_commit_under_load),
        BOTH(store_sync_always_completes_after_commit),
        BOTH(store_sync_interval_and_none),
        BOTH(store_injected_write_failure_then_recovery),
        BOTH(store_close_commits_pending_batches),
        BOTH(store_submit_from_callback),
        BOTH(store_expire_removes_expired_entries),
        BOTH(store_compact_gives_space_back),
        BOTH(store_random_ops_match_a_model),
        BOTH(store_reads_during_writes),
        BOTH(store_replicate_hook),
        ROCKS(rocks_reopen_keeps_data),
        ROCKS(rocks_second_open_fails_on_lock),
        ROCKS(rocks_wrong_version_fails),
        ROCKS(rocks_corrupt_directory_fails),
        cmocka_unit_test(rocks_bad_options_fail),
        ROCKS(rocks_sigkill_keeps_every_acknowledged_batch),
        ROCKS(rocks_disk_full_reported_and_recovered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
