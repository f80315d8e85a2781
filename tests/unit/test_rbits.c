/* test_rbits.c -- exact routes as a plain bit filter built by their owner
 * (rbits.h): the owner's counters and the flips it reports, a receiver's
 * bits kept in step by the whole bitmap and then the deltas only (adds,
 * deletes, keys added twice, a resize that sends the whole bitmap again),
 * the false-positive rate measured when built (12 bits a route) and at the
 * resize bound (10 bits a route), and the misfit rule.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "rbits.h"

/* splitmix64: keys as uniform as the SipHash of a filter */
static uint64_t next_key(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A receiver: the owner's whole bitmap. */
static rbits_t *receiver_of(const rbcount_t *c)
{
    uint8_t *bits = malloc((size_t)c->nblocks * RBITS_BLOCK);
    rbcount_bits(c, bits);
    rbits_t *b = rbits_new(c->nblocks, bits);
    b->n = c->n;
    free(bits);
    return b;
}

/* The flips of one change, applied to the receiver as the owner sends them
 * (position | its value now). */
static void apply(rbits_t *b, const rbcount_t *c, const uint32_t *flips, int nf)
{
    for (int i = 0; i < nf; i++)
        assert_int_equal(rbits_put(b, flips[i], rbcount_bit(c, flips[i])), 0);
}

static int same_bits(const rbits_t *b, const rbcount_t *c)
{
    uint8_t *bits = malloc(rbits_bytes(b));
    rbcount_bits(c, bits);
    int same = b->nblocks == c->nblocks && memcmp(bits, b->bits, rbits_bytes(b)) == 0;
    free(bits);
    return same;
}

static void test_flips(void **state)
{
    (void)state;
    rbcount_t *c = rbcount_new(100);
    assert_true(c->sized >= 100);
    assert_int_equal(c->nblocks, rbits_blocks_for(100));
    rbits_t *b = receiver_of(c);
    assert_int_equal(((uintptr_t)b->bits) % RBITS_BLOCK, 0);
    uint64_t h = 0x0123456789abcdefull, other = 0xfedcba9876543210ull;
    uint32_t f[RBITS_K];
    assert_false(rbits_test(b, h));
    int nf = rbcount_add(c, h, f);
    assert_true(nf >= 1 && nf <= RBITS_K);
    apply(b, c, f, nf);
    assert_true(rbits_test(b, h));
    /* a second filter with this hash: nothing flips, nothing to send */
    assert_int_equal(rbcount_add(c, h, f), 0);
    assert_int_equal(rbcount_del(c, h, f), 0); /* kept while one lives */
    assert_true(rbits_test(b, h));
    nf = rbcount_del(c, h, f);
    assert_true(nf >= 1);
    apply(b, c, f, nf);
    assert_false(rbits_test(b, h));
    assert_int_equal(c->n, 0);
    for (size_t i = 0; i < rbits_bytes(b); i++)
        assert_int_equal(b->bits[i], 0);
    nf = rbcount_add(c, other, f);
    apply(b, c, f, nf);
    assert_true(rbits_test(b, other));
    assert_true(same_bits(b, c));
    /* out of range: refused */
    assert_int_equal(rbits_put(b, b->nblocks * RBITS_BLOCK_BITS, 1), -1);
    rbits_free(b);
    rbcount_free(c);
    rbits_free(NULL);
    rbcount_free(NULL);
}

/* Random adds and deletes on the owner, the receiver fed only the deltas
 * of each run of changes (a run of 50, positions deduplicated by their
 * final value as cl_bits.c sends them): its bits equal the owner's after
 * every run, every live key tests present; a resize sends the whole
 * bitmap again. */
static void test_deltas(void **state)
{
    (void)state;
    enum { POOL = 4000, STEPS = 60000, RUN = 50 };
    static uint64_t keys[POOL];
    static int count[POOL];
    uint64_t s = 99, r = 12345;
    for (int i = 0; i < POOL; i++)
        keys[i] = next_key(&s);
    rbcount_t *c = rbcount_new(RBITS_MIN_ROUTES);
    rbits_t *b = receiver_of(c);
    uint32_t *run = malloc(sizeof(*run) * RUN * RBITS_K);
    int nrun = 0, resizes = 0;
    uint64_t n = 0;
    for (int step = 1; step <= STEPS; step++) {
        int k = (int)(next_key(&r) % POOL);
        uint32_t f[RBITS_K];
        int nf = 0;
        if (count[k] > 0 && next_key(&r) % 3 == 0) {
            nf = rbcount_del(c, keys[k], f);
            count[k]--;
            n--;
        } else if (count[k] < 2) {
            nf = rbcount_add(c, keys[k], f);
            count[k]++;
            n++;
        }
        memcpy(run + nrun, f, sizeof(*f) * (size_t)nf);
        nrun += nf;
        if (step % RUN != 0)
            continue;
        if (rbcount_misfit(c->sized, n)) { /* rebuilt at n: the whole bitmap */
            rbcount_t *nc = rbcount_new(n);
            for (int i = 0; i < POOL; i++)
                for (int j = 0; j < count[i]; j++)
                    (void)rbcount_add(nc, keys[i], f);
            rbcount_free(c);
            c = nc;
            rbits_free(b);
            b = receiver_of(c);
            resizes++;
        } else {
            apply(b, c, run, nrun);
        }
        nrun = 0;
        assert_true(same_bits(b, c));
        for (int i = 0; i < POOL; i++)
            if (count[i] > 0)
                assert_true(rbits_test(b, keys[i]));
    }
    assert_int_equal(c->n, n);
    print_message("%d resizes on the way to %llu routes (%u blocks)\n", resizes,
                  (unsigned long long)n, c->nblocks);
    assert_true(resizes >= 3);
    free(run);
    rbits_free(b);
    rbcount_free(c);
}

/* The share of `tries` fresh keys that b says it may hold. */
static double fp_rate(const rbits_t *b, uint64_t seed, int tries)
{
    int fp = 0;
    for (int i = 0; i < tries; i++)
        fp += rbits_test(b, next_key(&seed));
    return (double)fp / tries;
}

static void test_false_positives(void **state)
{
    (void)state;
    enum { N = 20000 };
    rbcount_t *c = rbcount_new(N);
    /* 12 bits a route when built: 1.5 B, the receiver's whole cost */
    assert_true((size_t)c->nblocks * RBITS_BLOCK <= (size_t)N * 12 / 8 + RBITS_BLOCK);
    uint64_t s = 1;
    uint32_t f[RBITS_K];
    for (int i = 0; i < N; i++)
        (void)rbcount_add(c, next_key(&s), f);
    rbits_t *b = receiver_of(c);
    s = 1;
    for (int i = 0; i < N; i++)
        assert_true(rbits_test(b, next_key(&s))); /* no false negative */
    double built = fp_rate(b, 1u << 30, 400000);
    print_message("false positives at %d routes (12 bits each): %.3f %%\n", N, built * 100);
    assert_true(built < 0.0065); /* 0.44 % expected */
    rbits_free(b);
    /* up to the resize bound: 6/5 of the size, 10 bits a route */
    for (int i = 0; i < N / 5; i++)
        (void)rbcount_add(c, next_key(&s), f);
    assert_false(rbcount_misfit(c->sized, c->n));
    (void)rbcount_add(c, next_key(&s), f);
    assert_true(rbcount_misfit(c->sized, c->n));
    b = receiver_of(c);
    double bound = fp_rate(b, 1u << 30, 400000);
    print_message("false positives at %llu routes (10 bits each): %.3f %%\n",
                  (unsigned long long)c->n, bound * 100);
    assert_true(bound < 0.013); /* 0.96 % expected */
    rbits_free(b);
    rbcount_free(c);
}

static void test_misfit(void **state)
{
    (void)state;
    assert_false(rbcount_misfit(1000, 1000));
    assert_false(rbcount_misfit(1000, 1200));
    assert_true(rbcount_misfit(1000, 1201));
    assert_false(rbcount_misfit(1000, 250));
    assert_true(rbcount_misfit(1000, 249));
    /* the smallest filter never shrinks */
    assert_false(rbcount_misfit(RBITS_MIN_ROUTES, 0));
    rbcount_t *c = rbcount_new(0);
    assert_int_equal(c->sized, RBITS_MIN_ROUTES);
    assert_int_equal(c->nblocks, 2); /* 64 routes x 12 bits = 768 bits */
    rbcount_free(c);
    assert_int_equal(rbits_blocks_for(0), 1);
    assert_int_equal(rbits_blocks_for(UINT64_MAX / 16), RBITS_MAX_BLOCKS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flips),
        cmocka_unit_test(test_deltas),
        cmocka_unit_test(test_false_positives),
        cmocka_unit_test(test_misfit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
