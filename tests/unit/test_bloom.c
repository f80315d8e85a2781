/* test_bloom.c -- the counting Bloom filter of a peer's exact routes
 * (rbloom.h): add/delete/counts (a key added twice stays until deleted
 * twice, an absent key's delete changes nothing), saturation (a counter
 * at 15 sticks: a deleted key may look present, never the reverse), the
 * false-positive rate of N random keys within its bound when built (8 B a
 * key) and when doubled (4 B a key), no false negative through a random
 * run of adds and deletes against a reference, and a rebuild (a new
 * filter from a sync) that forgets the stale keys.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "rbloom.h"

/* splitmix64: keys as uniform as the SipHash of a filter */
static uint64_t next_key(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void test_counts(void **state)
{
    (void)state;
    rbloom_t *b = rbloom_new(100);
    assert_true(b->sized >= 100);
    assert_true(rbloom_bytes(b) <= 100 * 8 + RBLOOM_BLOCK);
    uint64_t h = 0x0123456789abcdefull, other = 0xfedcba9876543210ull;
    assert_false(rbloom_test(b, h));
    rbloom_add(b, h);
    assert_true(rbloom_test(b, h));
    assert_int_equal(b->n, 1);
    rbloom_add(b, h); /* a second filter with this hash */
    assert_int_equal(b->n, 2);
    assert_int_equal(rbloom_del(b, h), 1);
    assert_true(rbloom_test(b, h)); /* kept while one lives */
    assert_int_equal(rbloom_del(b, h), 1);
    assert_false(rbloom_test(b, h));
    assert_int_equal(b->n, 0);
    /* an absent key: nothing changes */
    rbloom_add(b, other);
    assert_int_equal(rbloom_del(b, h), 0);
    assert_true(rbloom_test(b, other));
    assert_int_equal(b->n, 1);
    /* the filter is all zero again after the last delete */
    assert_int_equal(rbloom_del(b, other), 1);
    for (size_t i = 0; i < rbloom_bytes(b); i++)
        assert_int_equal(b->c[i], 0);
    assert_int_equal(((uintptr_t)b->c) % RBLOOM_BLOCK, 0);
    rbloom_free(b);
    rbloom_free(NULL);
}

static void test_saturation(void **state)
{
    (void)state;
    rbloom_t *b = rbloom_new(64);
    uint64_t h = 42;
    for (int i = 0; i < 20; i++)
        rbloom_add(b, h);
    assert_true(b->saturated >= 1 && b->saturated <= RBLOOM_K);
    for (int i = 0; i < 20; i++)
        assert_int_equal(rbloom_del(b, h), 1);
    /* saturated counters never go down: still "maybe" (a spurious
     * forward), never a missed one */
    assert_true(rbloom_test(b, h));
    assert_int_equal(b->n, 0);
    /* keys sharing the block are never lost to it either */
    uint64_t s = 7, keys[200];
    for (int i = 0; i < 200; i++) {
        keys[i] = next_key(&s);
        rbloom_add(b, keys[i]);
    }
    for (int i = 0; i < 200; i++)
        assert_true(rbloom_test(b, keys[i]));
    rbloom_free(b);
}

/* The share of `tries` fresh keys that b says it may hold. */
static double fp_rate(const rbloom_t *b, uint64_t seed, int tries)
{
    int fp = 0;
    for (int i = 0; i < tries; i++)
        fp += rbloom_test(b, next_key(&seed));
    return (double)fp / tries;
}

static void test_false_positives(void **state)
{
    (void)state;
    enum { N = 20000 };
    rbloom_t *b = rbloom_new(N);
    assert_true(rbloom_bytes(b) <= (size_t)N * 8 + RBLOOM_BLOCK); /* 8 B a route */
    uint64_t s = 1;
    for (int i = 0; i < N; i++)
        rbloom_add(b, next_key(&s));
    s = 1;
    for (int i = 0; i < N; i++)
        assert_true(rbloom_test(b, next_key(&s))); /* no false negative */
    double built = fp_rate(b, 1u << 30, 200000);
    print_message("false positives at %d routes (16 counters each): %.3f %%\n", N, built * 100);
    assert_true(built < 0.005); /* ~0.22 % expected */
    for (int i = 0; i < N; i++) /* doubled: the owner resyncs now */
        rbloom_add(b, next_key(&s));
    double doubled = fp_rate(b, 1u << 30, 200000);
    print_message("false positives at %d routes (8 counters each): %.3f %%\n", 2 * N,
                  doubled * 100);
    assert_true(doubled < 0.04); /* ~2.9 % expected */
    /* the first half goes: back to the built rate, the second half kept */
    s = 1;
    for (int i = 0; i < N; i++)
        assert_int_equal(rbloom_del(b, next_key(&s)), 1);
    for (int i = 0; i < N; i++)
        assert_true(rbloom_test(b, next_key(&s)));
    assert_true(fp_rate(b, 1u << 30, 200000) < 0.005);
    assert_int_equal(b->n, N);
    rbloom_free(b);
}

/* Random adds and deletes of a pool of keys (some added several times,
 * as 64-bit collisions would be): every key with a count > 0 tests
 * present after every step. */
static void test_random(void **state)
{
    (void)state;
    enum { POOL = 3000, STEPS = 60000 };
    static uint64_t keys[POOL];
    static int count[POOL];
    uint64_t s = 99, r = 12345;
    for (int i = 0; i < POOL; i++)
        keys[i] = next_key(&s);
    rbloom_t *b = rbloom_new(POOL / 2);
    uint64_t n = 0;
    for (int step = 0; step < STEPS; step++) {
        int k = (int)(next_key(&r) % POOL);
        if (count[k] > 0 && next_key(&r) % 2) {
            assert_int_equal(rbloom_del(b, keys[k]), 1);
            count[k]--;
            n--;
        } else if (count[k] < 3) {
            rbloom_add(b, keys[k]);
            count[k]++;
            n++;
        }
        if (step % 1000 == 0)
            for (int i = 0; i < POOL; i++)
                if (count[i] > 0)
                    assert_true(rbloom_test(b, keys[i]));
    }
    assert_int_equal(b->n, n);
    rbloom_free(b);
}

/* A sync builds a new filter from the routes it names: the stale ones are
 * gone (up to the new filter's false positives), the named ones present. */
static void test_rebuild(void **state)
{
    (void)state;
    enum { N = 5000 };
    uint64_t s = 5;
    static uint64_t keys[2 * N];
    for (int i = 0; i < 2 * N; i++)
        keys[i] = next_key(&s);
    rbloom_t *old = rbloom_new(N);
    for (int i = 0; i < N; i++)
        rbloom_add(old, keys[i]);
    rbloom_t *b = rbloom_new(N); /* the sync names the second half only */
    for (int i = N; i < 2 * N; i++)
        rbloom_add(b, keys[i]);
    rbloom_free(old);
    int stale = 0;
    for (int i = 0; i < N; i++)
        stale += rbloom_test(b, keys[i]);
    for (int i = N; i < 2 * N; i++)
        assert_true(rbloom_test(b, keys[i]));
    assert_true(stale < N / 100); /* false positives only */
    rbloom_free(b);
    /* tiny and huge sizes */
    b = rbloom_new(0);
    assert_int_equal(b->sized, RBLOOM_MIN_ROUTES);
    assert_true(b->nblocks >= 1);
    rbloom_add(b, 1);
    assert_true(rbloom_test(b, 1));
    rbloom_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts),          cmocka_unit_test(test_saturation),
        cmocka_unit_test(test_false_positives), cmocka_unit_test(test_random),
        cmocka_unit_test(test_rebuild),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
