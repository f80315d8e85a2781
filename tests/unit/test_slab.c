/* test_slab.c -- the object pools of src/core/slab.c: zeroed objects, the
 * size rounded to 8, freed objects reused before a new page is touched,
 * pages counted, and two threads allocating and freeing at once. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "slab.h"

static void test_zeroed_and_reused(void **state)
{
    (void)state;
    slab_t s;
    slab_init(&s, 13);
    assert_int_equal(s.size, 16);
    uint8_t *a = slab_alloc(&s);
    uint8_t *b = slab_alloc(&s);
    assert_non_null(a);
    assert_ptr_not_equal(a, b);
    for (size_t i = 0; i < 16; i++)
        assert_int_equal(a[i], 0);
    memset(a, 0xab, 16);
    assert_int_equal(slab_in_use(&s), 2);
    slab_free(&s, a);
    slab_free(&s, NULL); /* allowed, like free() */
    assert_int_equal(slab_in_use(&s), 1);
    uint8_t *c = slab_alloc(&s);
#ifndef ANTENNA_SLAB_MALLOC
    assert_ptr_equal(c, a); /* the freed one first */
#endif
    for (size_t i = 0; i < 16; i++)
        assert_int_equal(c[i], 0); /* zeroed again */
    slab_free(&s, b);
    slab_free(&s, c);
    assert_int_equal(slab_in_use(&s), 0);
    slab_destroy(&s);
}

static void test_pages(void **state)
{
    (void)state;
    slab_t s;
    slab_init(&s, 200);
    enum { N = 1000 }; /* 200,000 bytes: 4 pages of 64 KiB */
    void *v[N];
    for (int i = 0; i < N; i++) {
        v[i] = slab_alloc(&s);
        memset(v[i], i & 0xff, 200);
    }
    for (int i = 0; i < N; i++) /* no object overlaps another */
        assert_int_equal(((uint8_t *)v[i])[199], i & 0xff);
#ifndef ANTENNA_SLAB_MALLOC
    assert_int_equal(slab_bytes(&s), 4 * SLAB_PAGE);
#endif
    for (int i = 0; i < N; i++)
        slab_free(&s, v[i]);
    for (int i = 0; i < N; i++)
        v[i] = slab_alloc(&s);
#ifndef ANTENNA_SLAB_MALLOC
    assert_int_equal(slab_bytes(&s), 4 * SLAB_PAGE); /* no new page for reused objects */
#endif
    for (int i = 0; i < N; i++)
        slab_free(&s, v[i]);
    slab_destroy(&s);
}

enum { ROUNDS = 20000 };

static void *churn(void *arg)
{
    slab_t *s = arg;
    void *keep[64] = {0};
    for (int i = 0; i < ROUNDS; i++) {
        int k = i % 64;
        slab_free(s, keep[k]);
        keep[k] = slab_alloc(s);
        *(uint64_t *)keep[k] = (uint64_t)i;
    }
    for (int k = 0; k < 64; k++)
        slab_free(s, keep[k]);
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    slab_t s;
    slab_init(&s, 120);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, churn, &s), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(slab_in_use(&s), 0);
    slab_destroy(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zeroed_and_reused),
        cmocka_unit_test(test_pages),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
