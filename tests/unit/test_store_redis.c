/* test_store_redis.c -- the store's Redis backend (store_redis.c) through
 * store.h, against a real redis-server started by the test on a free
 * loopback port in a temporary directory (appendonly yes, appendfsync
 * always).  Without redis-server in PATH every test is skipped, saying so.
 *
 * Covered: bytewise scan order with binary keys (NUL and 0xff bytes, keys
 * that are prefixes of each other), scans longer than one page, a stop from
 * the callback; DEL_PREFIX (a prefix ending in 0xff, more keys than one
 * page of the script's loop, neighbours kept) and operations applied in
 * order inside one group; random batches checked against the memory
 * backend; two prefixes kept apart and a reopen finding the data; the
 * url's errors and an unreachable server at open; Redis killed (writes
 * fail at once, quickly) and started again from its AOF (writes succeed
 * again, through the NOSCRIPT fallback, and nothing acknowledged is lost).
 * Every wait is bounded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "redis_srv.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "store.h"
#include "store_rec.h"
#include "util.h"

/* ---- the Redis server ---- */

static redis_srv_t srv;
static char srv_url[64];
static int have_redis;
static const char *const SRV_ARGS[] = {"--appendonly", "yes", "--appendfsync", "always", NULL};

static int group_setup(void **state)
{
    (void)state;
    have_redis = system("command -v redis-server >/dev/null 2>&1") == 0;
    if (!have_redis) {
        fprintf(stderr, "test_store_redis: redis-server is not installed: every test skipped\n");
        return 0;
    }
    redis_srv_init(&srv, "antenna-store-redis");
    snprintf(srv_url, sizeof(srv_url), "redis://127.0.0.1:%u/0", srv.port);
    redis_srv_start(&srv, SRV_ARGS);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (have_redis)
        redis_srv_cleanup(&srv);
    return 0;
}

/* ---- helpers ---- */

#define NEED_REDIS()                                                                               \
    do {                                                                                           \
        if (!have_redis)                                                                           \
            skip();                                                                                \
    } while (0)

static store_t *open_prefix(const char *prefix, char *err, size_t errlen)
{
    store_opts_t o = {.backend = STORE_BACKEND_REDIS,
                      .path = prefix,
                      .sync = STORE_SYNC_ALWAYS,
                      .redis_url = srv_url,
                      .redis_prefix = prefix,
                      .redis_connect_timeout_ms = 1000,
                      .redis_timeout_ms = 5000};
    return store_open(&o, err, errlen);
}

/* A store under a prefix of its own, emptied first. */
static store_t *fresh(const char *name)
{
    char prefix[96], err[512] = "", k[128];
    snprintf(prefix, sizeof(prefix), "t:%s:", name);
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", srv.port, tv);
    assert_non_null(c);
    snprintf(k, sizeof(k), "%sdata", prefix);
    freeReplyObject(redisCommand(c, "DEL %s", k));
    snprintf(k, sizeof(k), "%sindex", prefix);
    freeReplyObject(redisCommand(c, "DEL %s", k));
    redisFree(c);
    store_t *s = open_prefix(prefix, err, sizeof(err));
    if (s == NULL)
        fail_msg("store_open: %s", err);
    return s;
}

typedef struct {
    size_t n, cap, stop_at;
    uint8_t **k;
    size_t *kl;
    uint8_t **v;
    size_t *vl;
} coll_t;

static int collect(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    coll_t *c = ud;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->k = realloc(c->k, c->cap * sizeof(*c->k));
        c->kl = realloc(c->kl, c->cap * sizeof(*c->kl));
        c->v = realloc(c->v, c->cap * sizeof(*c->v));
        c->vl = realloc(c->vl, c->cap * sizeof(*c->vl));
    }
    c->k[c->n] = malloc(kl + 1);
    memcpy(c->k[c->n], k, kl);
    c->kl[c->n] = kl;
    c->v[c->n] = malloc(vl + 1);
    if (vl)
        memcpy(c->v[c->n], v, vl);
    c->vl[c->n] = vl;
    c->n++;
    return c->stop_at && c->n == c->stop_at ? 7 : 0;
}

static void coll_free(coll_t *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->k[i]);
        free(c->v[i]);
    }
    free(c->k);
    free(c->kl);
    free(c->v);
    free(c->vl);
    memset(c, 0, sizeof(*c));
}

static int key_cmp(const void *a, size_t al, const void *b, size_t bl)
{
    size_t m = AN_MIN(al, bl);
    int r = m ? memcmp(a, b, m) : 0;
    return r ? r : al < bl ? -1 : al > bl;
}

static void put(store_batch_t *b, const char *k, size_t kl, const char *v, size_t vl)
{
    store_batch_put(b, k, kl, v, vl);
}

/* ---- tests ---- */

static void scan_binary_keys_in_bytewise_order(void **state)
{
    (void)state;
    NEED_REDIS();
    store_t *s = fresh("order");
    /* in bytewise order already; submitted shuffled */
    static const struct {
        const char *k;
        size_t kl;
    } want[] = {
        {"k/", 2},     {"k/\x00", 3},     {"k/\x00\x00", 4}, {"k/\x00\x01", 4}, {"k/\x01", 3},
        {"k/A", 3},    {"k/a", 3},        {"k/a\x00", 4},    {"k/ab", 4},       {"k/\x7f", 3},
        {"k/\x80", 3}, {"k/\xfe\xff", 4}, {"k/\xff", 3},     {"k/\xff\x00", 4}, {"k/\xff\xff", 4},
    };
    size_t n = sizeof(want) / sizeof(want[0]);
    store_batch_t *b = store_batch_new();
    for (size_t i = 0; i < n; i++) {
        size_t j = (i * 7) % n; /* 7 is prime to 15: a permutation */
        char v[16];
        snprintf(v, sizeof(v), "v%zu", j);
        put(b, want[j].k, want[j].kl, v, strlen(v) + 1); /* with its NUL */
    }
    put(b, "j", 1, "before", 6);
    put(b, "l", 1, "after", 5);
    assert_int_equal(store_submit_sync(s, b), 0);

    coll_t c = {0};
    assert_int_equal(store_scan(s, "k/", 2, collect, &c), 0);
    assert_int_equal(c.n, n);
    for (size_t i = 0; i < n; i++) {
        char v[16];
        snprintf(v, sizeof(v), "v%zu", i);
        assert_int_equal(c.kl[i], want[i].kl);
        assert_memory_equal(c.k[i], want[i].k, want[i].kl);
        assert_int_equal(c.vl[i], strlen(v) + 1);
        assert_memory_equal(c.v[i], v, c.vl[i]);
    }
    coll_free(&c);
    /* a prefix with a NUL and one ending in 0xff */
    assert_int_equal(store_scan(s, "k/\x00", 3, collect, &c), 0);
    assert_int_equal(c.n, 3);
    coll_free(&c);
    assert_int_equal(store_scan(s, "k/\xff", 3, collect, &c), 0);
    assert_int_equal(c.n, 3);
    coll_free(&c);
    /* everything, the format version key included, in order */
    assert_int_equal(store_scan(s, "", 0, collect, &c), 0);
    assert_int_equal(c.n, n + 3);
    for (size_t i = 1; i < c.n; i++)
        assert_true(key_cmp(c.k[i - 1], c.kl[i - 1], c.k[i], c.kl[i]) < 0);
    coll_free(&c);
    void *v = NULL;
    size_t vl = 0;
    assert_int_equal(store_get(s, "k/\xff\x00", 4, &v, &vl), 0);
    assert_int_equal(vl, 4);
    assert_memory_equal(v, "v13", 4);
    free(v);
    assert_int_equal(store_get(s, "k/\xff\x01", 4, &v, &vl), STORE_ENOTFOUND);
    store_close(s);
}

static void scan_pages_and_stop(void **state)
{
    (void)state;
    NEED_REDIS();
    store_t *s = fresh("pages");
    store_batch_t *b = store_batch_new();
    for (int i = 0; i < 1300; i++) { /* two pages and a half */
        char k[32];
        int kl = snprintf(k, sizeof(k), "p/%05d", i);
        put(b, k, (size_t)kl, k, (size_t)kl);
    }
    assert_int_equal(store_submit_sync(s, b), 0);
    coll_t c = {0};
    assert_int_equal(store_scan(s, "p/", 2, collect, &c), 0);
    assert_int_equal(c.n, 1300);
    for (size_t i = 0; i < c.n; i++) {
        char k[32];
        int kl = snprintf(k, sizeof(k), "p/%05zu", i);
        assert_int_equal(c.kl[i], (size_t)kl);
        assert_memory_equal(c.k[i], k, (size_t)kl);
        assert_memory_equal(c.v[i], k, (size_t)kl);
    }
    coll_free(&c);
    c.stop_at = 600; /* in the second page */
    assert_int_equal(store_scan(s, "p/", 2, collect, &c), 7);
    assert_int_equal(c.n, 600);
    coll_free(&c);
    store_close(s);
}

static void del_prefix_and_order_in_a_group(void **state)
{
    (void)state;
    NEED_REDIS();
    store_t *s = fresh("delprefix");
    store_batch_t *b = store_batch_new();
    for (int i = 0; i < 1200; i++) { /* more than the script's page of 512 */
        char k[32];
        int kl = snprintf(k, sizeof(k), "q/a\xff/%04d", i);
        put(b, k, (size_t)kl, "x", 1);
    }
    put(b, "q/a\xff", 4, "the prefix itself", 17);
    put(b, "q/a\xfe", 4, "below", 5);
    put(b, "q/b", 3, "above", 5);
    put(b, "q/a", 3, "shorter", 7);
    assert_int_equal(store_submit_sync(s, b), 0);

    b = store_batch_new();
    /* in order: the put before the deletion goes, the one after stays */
    put(b, "q/a\xff/zzz", 8, "gone", 4);
    assert_int_equal(store_batch_del_prefix(b, "q/a\xff", 4), 0);
    put(b, "q/a\xff/new", 8, "kept", 4);
    store_batch_del(b, "q/a", 3);
    assert_int_equal(store_submit_sync(s, b), 0);

    coll_t c = {0};
    assert_int_equal(store_scan(s, "q/", 2, collect, &c), 0);
    assert_int_equal(c.n, 3);
    assert_memory_equal(c.k[0], "q/a\xfe", 4);
    assert_memory_equal(c.k[1], "q/a\xff/new", 8);
    assert_memory_equal(c.v[1], "kept", 4);
    assert_memory_equal(c.k[2], "q/b", 3);
    coll_free(&c);
    /* a prefix whose successor has no 0xff left: "\xff\xff" is refused by
     * store_batch_del_prefix; "z\xff\xff" deletes up to "{" */
    b = store_batch_new();
    put(b, "z\xff\xff\x01", 4, "1", 1);
    put(b, "z\xff\xff", 3, "2", 1);
    put(b, "{", 1, "3", 1);
    assert_int_equal(store_batch_del_prefix(b, "z\xff\xff", 3), 0);
    assert_int_equal(store_submit_sync(s, b), 0);
    assert_int_equal(store_scan(s, "z", 1, collect, &c), 0);
    assert_int_equal(c.n, 0);
    coll_free(&c);
    assert_int_equal(store_scan(s, "{", 1, collect, &c), 0);
    assert_int_equal(c.n, 1);
    coll_free(&c);
    store_close(s);
}

static uint64_t rng_next(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* The same random batches to Redis and to the memory backend: full scans
 * must match, key by key and value by value. */
static void random_batches_match_memory(void **state)
{
    (void)state;
    NEED_REDIS();
    store_t *s = fresh("random");
    char err[256];
    store_opts_t mo = {.backend = STORE_BACKEND_MEMORY, .sync = STORE_SYNC_ALWAYS};
    store_t *m = store_open(&mo, err, sizeof(err));
    assert_non_null(m);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int round = 0; round < 40; round++) {
        store_batch_t *b1 = store_batch_new(), *b2 = store_batch_new();
        int nops = 1 + (int)(rng_next(&x) % 40);
        for (int i = 0; i < nops; i++) {
            uint8_t k[6];
            size_t kl = 1 + rng_next(&x) % sizeof(k);
            for (size_t j = 0; j < kl; j++) /* a small alphabet: many shared prefixes */
                k[j] = (uint8_t[]){0x00, 0x01, 'a', 0x7f, 0x80, 0xff}[rng_next(&x) % 6];
            uint64_t what = rng_next(&x) % 10;
            if (what < 6) {
                uint8_t v[8];
                size_t vl = rng_next(&x) % sizeof(v);
                for (size_t j = 0; j < vl; j++)
                    v[j] = (uint8_t)rng_next(&x);
                store_batch_put(b1, k, kl, v, vl);
                store_batch_put(b2, k, kl, v, vl);
            } else if (what < 9) {
                store_batch_del(b1, k, kl);
                store_batch_del(b2, k, kl);
            } else {
                kl = AN_MIN(kl, (size_t)2);
                if (store_batch_del_prefix(b1, k, kl) == 0)
                    assert_int_equal(store_batch_del_prefix(b2, k, kl), 0);
            }
        }
        assert_int_equal(store_submit_sync(s, b1), 0);
        assert_int_equal(store_submit_sync(m, b2), 0);
    }
    coll_t a = {0}, c = {0};
    assert_int_equal(store_scan(s, "", 0, collect, &a), 0);
    assert_int_equal(store_scan(m, "", 0, collect, &c), 0);
    assert_int_equal(a.n, c.n);
    assert_true(a.n > 10);
    for (size_t i = 0; i < a.n; i++) {
        assert_int_equal(key_cmp(a.k[i], a.kl[i], c.k[i], c.kl[i]), 0);
        assert_int_equal(a.vl[i], c.vl[i]);
        if (a.vl[i])
            assert_memory_equal(a.v[i], c.v[i], a.vl[i]);
    }
    coll_free(&a);
    coll_free(&c);
    store_close(m);
    store_close(s);
}

static void prefixes_apart_and_reopen(void **state)
{
    (void)state;
    NEED_REDIS();
    char err[512] = "";
    store_t *a = fresh("node-a");
    store_t *b = fresh("node-b");
    store_batch_t *bt = store_batch_new();
    put(bt, "s/only-a", 8, "1", 1);
    assert_int_equal(store_submit_sync(a, bt), 0);
    coll_t c = {0};
    assert_int_equal(store_scan(b, "s/", 2, collect, &c), 0);
    assert_int_equal(c.n, 0);
    store_close(a);
    store_close(b);
    a = open_prefix("t:node-a:", err, sizeof(err));
    assert_non_null(a);
    assert_int_equal(store_scan(a, "s/", 2, collect, &c), 0);
    assert_int_equal(c.n, 1);
    coll_free(&c);
    store_close(a);
}

/* The state key: "stopped" after a clean close, cleared by the next open;
 * an adoption's close marks "adopted by" only once no session is left;
 * redis_keep_state (antenna store) changes nothing; store_redis_peek. */
static void state_and_peek(void **state)
{
    (void)state;
    NEED_REDIS();
    char err[512] = "";
    store_redis_peek_t pk;
    store_t *s = fresh("adopt-me");
    store_batch_t *bt = store_batch_new();
    put(bt, "s/dev1", 6, "x", 1);
    assert_int_equal(store_submit_sync(s, bt), 0);
    assert_int_equal(store_redis_peek(srv_url, "t:adopt-me:", 1000, &pk, err, sizeof(err)), 0);
    assert_true(pk.holder[0] != '\0');
    assert_false(pk.holder_gone); /* this process holds it */
    assert_false(pk.adopting);
    assert_string_equal(pk.state, "");
    assert_int_equal(pk.has_sessions, 1);
    store_close(s);
    assert_int_equal(store_redis_peek(srv_url, "t:adopt-me:", 1000, &pk, err, sizeof(err)), 0);
    assert_string_equal(pk.holder, "");
    assert_string_equal(pk.state, "stopped");

    store_opts_t o = {.backend = STORE_BACKEND_REDIS,
                      .path = "adopt",
                      .sync = STORE_SYNC_ALWAYS,
                      .redis_url = srv_url,
                      .redis_prefix = "t:adopt-me:",
                      .redis_keep_state = 1};
    s = store_open(&o, err, sizeof(err)); /* a tool: the state stays */
    assert_non_null(s);
    store_close(s);
    assert_int_equal(store_redis_peek(srv_url, "t:adopt-me:", 1000, &pk, err, sizeof(err)), 0);
    assert_string_equal(pk.state, "stopped");

    s = open_prefix("t:adopt-me:", err, sizeof(err)); /* the node again: running */
    assert_non_null(s);
    assert_int_equal(store_redis_peek(srv_url, "t:adopt-me:", 1000, &pk, err, sizeof(err)), 0);
    assert_string_equal(pk.state, "");
    redisContext *c = redisConnectWithTimeout("127.0.0.1", srv.port, (struct timeval){2, 0});
    assert_non_null(c);
    freeReplyObject(redisCommand(c, "DEL t:adopt-me:lock")); /* as if it had died */
    store_close(s);                                          /* not ours: nothing changes */

    o.redis_keep_state = 0;
    o.redis_adopted_by = "n2";
    s = store_open(&o, err, sizeof(err));
    assert_non_null(s);
    assert_int_equal(store_redis_peek(srv_url, "t:adopt-me:", 1000, &pk, err, sizeof(err)), 0);
    assert_true(pk.adopting); /* the others wait for an adopter */
    store_close(s);           /* a session is left: no mark (another survivor adopts again) */
    assert_int_equal(store_redis_peek(srv_url, "t:adopt-me:", 1000, &pk, err, sizeof(err)), 0);
    assert_string_equal(pk.state, "");
    assert_int_equal(pk.has_sessions, 1);
    s = store_open(&o, err, sizeof(err));
    assert_non_null(s);
    bt = store_batch_new();
    assert_int_equal(store_batch_del_prefix(bt, "s/", 2), 0);
    assert_int_equal(store_submit_sync(s, bt), 0);
    store_close(s);
    assert_int_equal(store_redis_peek(srv_url, "t:adopt-me:", 1000, &pk, err, sizeof(err)), 0);
    assert_string_equal(pk.state, "adopted by n2");
    assert_int_equal(pk.has_sessions, 0);
    assert_string_equal(pk.holder, "");
    freeReplyObject(redisCommand(c, "DEL t:adopt-me:state"));
    redisFree(c);
}

static void open_errors(void **state)
{
    (void)state;
    NEED_REDIS();
    char err[512] = "", url[64];
    uint16_t port = redis_srv_free_port(); /* nobody listens there */
    snprintf(url, sizeof(url), "redis://:pw@127.0.0.1:%u/1", port);
    store_opts_t o = {.backend = STORE_BACKEND_REDIS,
                      .path = "x",
                      .sync = STORE_SYNC_ALWAYS,
                      .redis_url = url,
                      .redis_connect_timeout_ms = 500};
    assert_null(store_open(&o, err, sizeof(err)));
    char want[96];
    snprintf(want, sizeof(want), "cannot connect to Redis at redis://127.0.0.1:%u/1", port);
    if (strstr(err, want) == NULL)
        fail_msg("%s", err);
    assert_null(strstr(err, "pw@"));
    o.redis_url = "redis://";
    assert_null(store_open(&o, err, sizeof(err)));
    assert_non_null(strstr(err, "no host"));
    o.redis_url = "unix:relative";
    assert_null(store_open(&o, err, sizeof(err)));
    assert_non_null(strstr(err, "absolute"));
    o.redis_url = NULL;
    assert_null(store_open(&o, err, sizeof(err)));
}

static void down_then_back_from_the_aof(void **state)
{
    (void)state;
    NEED_REDIS();
    store_t *s = fresh("downup");
    store_batch_t *b = store_batch_new();
    put(b, "d/1", 3, "before", 6);
    assert_int_equal(store_submit_sync(s, b), 0);

    redis_srv_kill(&srv);
    uint64_t t0 = an_now_ms();
    b = store_batch_new();
    put(b, "d/2", 3, "while down", 10);
    assert_int_equal(store_submit_sync(s, b), STORE_EIO);
    b = store_batch_new(); /* in the backoff: at once */
    put(b, "d/2", 3, "while down", 10);
    assert_int_equal(store_submit_sync(s, b), STORE_EIO);
    assert_true(an_now_ms() - t0 < 3000);
    store_stats_t st;
    store_stats(s, &st);
    assert_true(st.write_errors >= 2);

    redis_srv_start(&srv, SRV_ARGS); /* from its AOF; its script cache is empty */
    int rc = -1;
    for (int i = 0; i < 200 && rc != 0; i++) { /* the backoff is at most 2 s */
        b = store_batch_new();
        put(b, "d/3", 3, "after", 5);
        if ((rc = store_submit_sync(s, b)) != 0)
            usleep(50 * 1000);
    }
    assert_int_equal(rc, 0);
    coll_t c = {0};
    assert_int_equal(store_scan(s, "d/", 2, collect, &c), 0);
    assert_int_equal(c.n, 2);
    assert_memory_equal(c.k[0], "d/1", 3);
    assert_memory_equal(c.k[1], "d/3", 3);
    coll_free(&c);
    store_close(s);
}

int main(void)
{
    log_open(NULL, AN_LOG_ERROR);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(scan_binary_keys_in_bytewise_order),
        cmocka_unit_test(scan_pages_and_stop),
        cmocka_unit_test(del_prefix_and_order_in_a_group),
        cmocka_unit_test(random_batches_match_memory),
        cmocka_unit_test(prefixes_apart_and_reopen),
        cmocka_unit_test(state_and_peek),
        cmocka_unit_test(open_errors),
        cmocka_unit_test(down_then_back_from_the_aof), /* last: restarts the server */
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
