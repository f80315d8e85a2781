/* test_oarena.c -- the turn arena of src/core/oarena.c: chunks rounded to
 * 16 and disjoint, the newest grows in place and only it, a full arena
 * says so, a reset starts again at the bottom, and a trim gives back only
 * the pages above the recent peak (and never below a live chunk). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "oarena.h"

static void test_alloc_grow_reset(void **state)
{
    (void)state;
    oarena_t a;
    assert_int_equal(oarena_init(&a, 1 << 20), 0);
    size_t ca, cb;
    uint8_t *p = oarena_alloc(&a, 5, &ca);
    assert_non_null(p);
    assert_int_equal(ca, 16);
    assert_true(oarena_owns(&a, p));
    memset(p, 0xaa, ca);
    uint8_t *q = oarena_alloc(&a, 100, &cb);
    assert_non_null(q);
    assert_int_equal(cb, 112);
    assert_true(q >= p + ca); /* disjoint */
    memset(q, 0xbb, cb);
    /* p is not the newest: no growth in place */
    size_t c = ca;
    assert_int_equal(oarena_grow(&a, p, 40, &c), 0);
    assert_int_equal(c, ca);
    /* q is: it grows, its bytes stay */
    c = cb;
    assert_int_equal(oarena_grow(&a, q, 1000, &c), 1);
    assert_int_equal(c, 1008);
    assert_int_equal(q[0], 0xbb);
    memset(q, 0xcc, c);
    assert_int_equal(p[ca - 1], 0xaa);
    int x;
    assert_false(oarena_owns(&a, &x));
    oarena_reset(&a);
    assert_int_equal(a.used, 0);
    uint8_t *r = oarena_alloc(&a, 8, &c);
    assert_ptr_equal(r, p); /* the bottom again */
    oarena_destroy(&a);
}

static void test_full(void **state)
{
    (void)state;
    oarena_t a;
    assert_int_equal(oarena_init(&a, 64 * 1024), 0);
    size_t c, n = 0;
    while (oarena_alloc(&a, 1000, &c) != NULL)
        n++;
    assert_true(n >= 50 && n <= 65); /* 65,536 / 1,008 */
    assert_null(oarena_alloc(&a, 1000, &c));
    oarena_reset(&a);
    assert_non_null(oarena_alloc(&a, 1000, &c));
    oarena_destroy(&a);
}

static void test_trim(void **state)
{
    (void)state;
    oarena_t a;
    assert_int_equal(oarena_init(&a, 8 << 20), 0);
    size_t c;
    /* a burst: 4 MB touched in one turn */
    for (int i = 0; i < 4096; i++) {
        uint8_t *p = oarena_alloc(&a, 1000, &c);
        assert_non_null(p);
        memset(p, 1, c);
    }
    size_t burst = oarena_resident(&a);
    assert_true(burst >= 4000000);
    oarena_reset(&a);
    /* the first trim still sees the burst's peak: nothing */
    assert_int_equal(oarena_trim(&a, 64 * 1024), 0);
    /* a quiet second later: down to the 64 kB kept */
    uint8_t *live = oarena_alloc(&a, 100, &c);
    memset(live, 7, c);
    size_t back = oarena_trim(&a, 64 * 1024);
    assert_true(back > 0);
    assert_int_equal(oarena_resident(&a), 64 * 1024);
    assert_int_equal(a.given_back, back);
    assert_int_equal(live[0], 7); /* below the floor: untouched */
    /* a steady load that uses most of what is resident keeps it */
    oarena_reset(&a);
    for (int i = 0; i < 60; i++)
        assert_non_null(oarena_alloc(&a, 1000, &c));
    oarena_reset(&a);
    assert_int_equal(oarena_trim(&a, 64 * 1024), 0);
    /* pages given back read as zeroes when touched again */
    oarena_reset(&a);
    for (int i = 0; i < 2048; i++) {
        uint8_t *p = oarena_alloc(&a, 1000, &c);
        assert_non_null(p);
        if (i == 2047)
            assert_int_equal(p[0], 0);
    }
    oarena_destroy(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_grow_reset),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_trim),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
