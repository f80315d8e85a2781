/* test_subidx.c -- the filter index of a session's subscriptions: lookups
 * agree with a scan through growth, shrinking and swap-removals in random
 * order (randomized against a naive reference), the index appears above
 * SUBIDX_MIN and goes below SUBIDX_MIN / 2, filters differing only by
 * length or by a "$share/g/" prefix are distinct keys, and 65,535 filters
 * (one maximal SUBSCRIBE) are added and found again far faster than the
 * quadratic scan this replaced.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subidx.h"

typedef struct {
    sess_sub_t *v; /* by value, as in sess_t */
    uint32_t n, cap;
    subidx_t *x;
} tab_t;

static sess_sub_t sub_new(const char *f)
{
    size_t len = strlen(f);
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, f, len);
    return (sess_sub_t){.filter = copy, .len = (uint16_t)len};
}

static void add(tab_t *t, const char *f)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 4;
        t->v = realloc(t->v, t->cap * sizeof(*t->v));
    }
    t->v[t->n++] = sub_new(f);
    subidx_added(&t->x, t->v, t->n);
}

static void del(tab_t *t, uint32_t i)
{
    subidx_removing(&t->x, t->v, t->n, i);
    free((void *)t->v[i].filter);
    t->v[i] = t->v[--t->n];
}

static long find(const tab_t *t, const char *f)
{
    return subidx_find(t->x, t->v, t->n, (const uint8_t *)f, (uint16_t)strlen(f));
}

static long scan(const tab_t *t, const char *f)
{
    size_t len = strlen(f);
    for (uint32_t i = 0; i < t->n; i++)
        if (t->v[i].len == len && memcmp(t->v[i].filter, f, len) == 0)
            return (long)i;
    return -1;
}

static void tab_free(tab_t *t)
{
    for (uint32_t i = 0; i < t->n; i++)
        free((void *)t->v[i].filter);
    free(t->v);
    subidx_free(&t->x);
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void test_index_built_and_dropped(void **state)
{
    (void)state;
    tab_t t = {0};
    char f[32];
    for (int i = 0; i < SUBIDX_MIN; i++) {
        snprintf(f, sizeof(f), "a/%d", i);
        add(&t, f);
    }
    assert_null(t.x); /* a handful: a scan, no index */
    add(&t, "a/more");
    assert_non_null(t.x);
    assert_true(subidx_capacity(t.x) >= 2 * t.n);
    for (int i = 0; i <= SUBIDX_MIN; i++) {
        snprintf(f, sizeof(f), "a/%d", i);
        assert_int_equal(find(&t, f), scan(&t, f));
    }
    while (t.n >= SUBIDX_MIN / 2)
        del(&t, 0);
    assert_null(t.x);
    assert_int_equal(find(&t, "a/more"), scan(&t, "a/more"));
    tab_free(&t);
}

static void test_distinct_keys(void **state)
{
    (void)state;
    tab_t t = {0};
    const char *keys[] = {
        "a", "a/", "a/b", "$share/g/a/b", "$share/h/a/b", "$share/g/a/b/", "",     "/",
        "+", "#",  "a/+", "a/#",          "+/+",          "A/B",           "a//b", "a/b/c"};
    size_t nk = sizeof(keys) / sizeof(keys[0]);
    for (size_t i = 0; i < nk; i++)
        add(&t, keys[i]);
    assert_non_null(t.x);
    for (size_t i = 0; i < nk; i++)
        assert_int_equal(find(&t, keys[i]), (long)i);
    assert_int_equal(find(&t, "$share/g/a"), -1);
    assert_int_equal(find(&t, "a/b/c/"), -1);
    tab_free(&t);
}

/* Random adds and removes; every filter (present or not) is looked up and
 * checked against a scan after each step of a few. */
static void test_random_against_scan(void **state)
{
    (void)state;
    uint64_t seed = 42;
    tab_t t = {0};
    char f[64];
    for (int step = 0; step < 20000; step++) {
        uint64_t r = rng_next(&seed);
        if (t.n == 0 || r % 3 != 0) {
            snprintf(f, sizeof(f), "dev/%llu/+/x", (unsigned long long)(r >> 8) % 3000);
            if (scan(&t, f) < 0)
                add(&t, f);
        } else {
            del(&t, (uint32_t)((r >> 8) % t.n));
        }
        if (step % 97 == 0) {
            for (int k = 0; k < 3000; k++) {
                snprintf(f, sizeof(f), "dev/%d/+/x", k);
                assert_int_equal(find(&t, f), scan(&t, f));
            }
            if (t.x)
                assert_true(subidx_capacity(t.x) >= 2 * t.n);
        }
    }
    /* empty it again, in random order */
    while (t.n) {
        uint32_t i = (uint32_t)(rng_next(&seed) % t.n);
        char keep[64];
        snprintf(keep, sizeof(keep), "%.*s", (int)t.v[i].len, (const char *)t.v[i].filter);
        del(&t, i);
        assert_int_equal(find(&t, keep), -1);
    }
    assert_null(t.x);
    tab_free(&t);
}

/* One SUBSCRIBE's worth: 65,535 filters.  A scan per add would be 2 billion
 * comparisons; the index makes it linear (well under a second, ASan too). */
static void test_65535_filters(void **state)
{
    (void)state;
    tab_t t = {0};
    char f[32];
    for (int i = 0; i < 65535; i++) {
        snprintf(f, sizeof(f), "bomb/%05d", i);
        assert_int_equal(find(&t, f), -1);
        add(&t, f);
    }
    for (int i = 0; i < 65535; i++) {
        snprintf(f, sizeof(f), "bomb/%05d", i);
        long p = find(&t, f);
        assert_true(p >= 0);
        assert_memory_equal(t.v[p].filter, f, strlen(f));
    }
    assert_true(subidx_capacity(t.x) <= 4u * 65536u);
    for (int i = 0; i < 65535; i += 2) {
        snprintf(f, sizeof(f), "bomb/%05d", i);
        del(&t, (uint32_t)find(&t, f));
    }
    for (int i = 0; i < 65535; i++) {
        snprintf(f, sizeof(f), "bomb/%05d", i);
        assert_int_equal(find(&t, f) >= 0, i % 2 == 1);
    }
    tab_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_index_built_and_dropped),
        cmocka_unit_test(test_distinct_keys),
        cmocka_unit_test(test_random_against_scan),
        cmocka_unit_test(test_65535_filters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
