/* test_hashing.c -- tables keyed by strings a client chooses hash them with
 * SipHash under a random key (issue 21, item 9), so keys aimed at the
 * unkeyed FNV-1a the broker used before do not pile up:
 *   - the session table by client id: 256 ids that share FNV-1a's low ten
 *     bits (one bucket before) spread over the buckets, and are all found;
 *   - the home worker of a client id: ids that FNV-1a sent to worker 0
 *     spread over every worker;
 *   - the ban table: a user name locked after failed guesses stays locked
 *     when the attacker then fails with 8 names aimed at its probe (before,
 *     the 8th evicted the lock, and guessing could go on);
 *   - an_siphash: another key, another hash.
 * The "attacker" side computes FNV-1a itself: it is what anyone could aim
 * at when the hash was unkeyed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth_ban.h"
#include "server.h"
#include "sess.h"
#include "util.h"

static uint64_t fnv1a64(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint32_t fnv1a32(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 16777619u;
    return h;
}

/* The next id "prefix-N" (N from *next on) whose 64-bit FNV-1a has
 * (h & mask) == want. */
static int aimed_id(char *out, size_t size, const char *prefix, uint64_t *next, uint64_t mask,
                    uint64_t want)
{
    for (;; (*next)++) {
        int n = snprintf(out, size, "%s-%llu", prefix, (unsigned long long)*next);
        if ((fnv1a64(out, (size_t)n) & mask) == want) {
            (*next)++;
            return n;
        }
    }
}

static void test_sess_table_client_ids(void **state)
{
    (void)state;
    enum { N = 256 };
    sess_table_t t;
    memset(&t, 0, sizeof(t));
    t.kind = SESS_BY_ID;
    sess_t *v[N];
    uint64_t next = 0;
    for (int i = 0; i < N; i++) {
        char id[64];
        int n = aimed_id(id, sizeof(id), "dev", &next, 1023, 0);
        v[i] = calloc(1, sizeof(sess_t) + (size_t)n + 1);
        assert_non_null(v[i]);
        memcpy(v[i]->client_id, id, (size_t)n + 1);
        v[i]->client_id_len = (uint16_t)n;
        v[i]->sid = (uint64_t)i + 1;
        sess_table_add(&t, v[i]);
    }
    assert_int_equal(t.count, N);
    assert_true(t.nbuckets >= N / 4 &&
                t.nbuckets <= 1024); /* by id: chains of 4 at most on average */
    size_t longest = 0;
    for (size_t b = 0; b < t.nbuckets; b++) {
        size_t len = 0;
        for (sess_t *s = t.buckets[b]; s; s = s->id_next)
            len++;
        if (len > longest)
            longest = len;
    }
    /* FNV-1a: all 256 in bucket 0; keyed: a handful at most (256 in 64
     * buckets: Poisson(4), a chain over 20 has odds below 1e-7 in all) */
    assert_true(longest <= 20);
    for (int i = 0; i < N; i++)
        assert_ptr_equal(
            sess_table_find_id(&t, (const uint8_t *)v[i]->client_id, v[i]->client_id_len), v[i]);
    assert_null(sess_table_find_id(&t, (const uint8_t *)"dev-x", 5));
    for (int i = 0; i < N; i += 2)
        sess_table_del(&t, v[i]);
    assert_int_equal(t.count, N / 2);
    for (int i = 0; i < N; i++)
        assert_ptr_equal(
            sess_table_find_id(&t, (const uint8_t *)v[i]->client_id, v[i]->client_id_len),
            i % 2 ? v[i] : NULL);
    sess_table_free(&t);
    for (int i = 0; i < N; i++)
        free(v[i]);
}

static void test_worker_home(void **state)
{
    (void)state;
    enum { N = 400, W = 4 };
    server_t *srv = calloc(1, sizeof(*srv));
    assert_non_null(srv);
    srv->nworkers = W;
    an_random_key(srv->home_key);
    unsigned per[W] = {0};
    uint64_t next = 0;
    for (int i = 0; i < N; i++) {
        char id[64];
        int n;
        for (;; next++) { /* FNV-1a % 4 == 0: worker 0 before */
            n = snprintf(id, sizeof(id), "c-%llu", (unsigned long long)next);
            if (fnv1a64(id, (size_t)n) % W == 0)
                break;
        }
        next++;
        uint32_t h = worker_home(srv, (const uint8_t *)id, (size_t)n);
        assert_true(h < W);
        assert_int_equal(worker_home(srv, (const uint8_t *)id, (size_t)n), h); /* stable */
        per[h]++;
    }
    for (int k = 0; k < W; k++)
        assert_true(per[k] >= N / W / 2); /* 100 expected each */
    free(srv);
}

/* The slot FNV-1a gave a user name in a table of n (auth_ban.c before). */
static uint32_t old_user_slot(const char *user, uint32_t n)
{
    uint8_t key[AUTH_BAN_KEY_LEN], d[SHA256_DIGEST_LENGTH];
    SHA256((const uint8_t *)user, strlen(user), d);
    key[0] = 0xff;
    memcpy(key + 1, d, AUTH_BAN_KEY_LEN - 1);
    return fnv1a32(key, sizeof(key)) % n;
}

static void test_ban_probe_not_aimable(void **state)
{
    (void)state;
    conf_auth_ban_t c = {.max_failures = 3, .window_s = 60, .ban_s = 300, .table_size = 4096};
    auth_ban_t b;
    auth_ban_init(&b, &c, 0);
    uint64_t t = 1000000;
    int what = 0;
    for (uint8_t k = 0; k < 3; k++) {
        uint8_t a[16] = {198, 51, 100, k};
        what |= auth_ban_failure(&b, 0, 2, a, "victim", t + k);
    }
    assert_true(what & AUTH_BAN_USER);
    uint8_t other[16] = {192, 0, 2, 1};
    assert_int_equal(auth_ban_blocked(&b, 0, 2, other, "victim", t + 10), 1);
    /* 8 names whose old slot is the victim's: each failure, from its own
     * address, takes a slot of the probe; the 8th evicted the oldest */
    uint32_t target = old_user_slot("victim", c.table_size);
    uint64_t next = 0;
    for (uint32_t k = 0; k < 8; k++) {
        char name[32];
        for (;; next++) {
            snprintf(name, sizeof(name), "n%llu", (unsigned long long)next);
            if (old_user_slot(name, c.table_size) == target)
                break;
        }
        next++;
        uint8_t a[16] = {203, 0, (uint8_t)(k >> 8), (uint8_t)k};
        auth_ban_failure(&b, 0, 2, a, name, t + 100 + k);
    }
    assert_int_equal(auth_ban_blocked(&b, 0, 2, other, "victim", t + 200), 1);
    auth_ban_destroy(&b);
}

static void test_siphash_keyed(void **state)
{
    (void)state;
    uint64_t k1[2], k2[2];
    an_random_key(k1);
    an_random_key(k2);
    assert_true(k1[0] != k2[0] || k1[1] != k2[1]);
    const char *s = "client-1";
    assert_int_equal(an_siphash(k1, s, 8), an_siphash(k1, s, 8));
    assert_true(an_siphash(k1, s, 8) != an_siphash(k2, s, 8));
    assert_true(an_siphash(k1, s, 8) != an_siphash(k1, s, 7));
    assert_true(an_siphash(k1, "", 0) != an_siphash(k2, "", 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sess_table_client_ids),
        cmocka_unit_test(test_worker_home),
        cmocka_unit_test(test_ban_probe_not_aimable),
        cmocka_unit_test(test_siphash_keyed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
