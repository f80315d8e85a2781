/* test_cl_recent.c -- the ids of recent adoptions (src/cluster/cl_recent.c):
 * found once with their owner and lease, unknown ids not found, a newer
 * table beside an older one, tables dropped after their time or when the
 * oldest must make room, a malformed tail ignored. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/cl_int.h"

/* "a", "bb", ... as u16 len | id, each */
static size_t enc(uint8_t *out, const char *const *ids, size_t n)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(ids[i]);
        out[len++] = (uint8_t)(l >> 8);
        out[len++] = (uint8_t)l;
        memcpy(out + len, ids[i], l);
        len += l;
    }
    return len;
}

static int take(cl_recent_t *r, const char *id, uint64_t now, char *owner, int64_t *lease)
{
    return cl_recent_take(r, id, strlen(id), now, owner, lease);
}

static void test_once_with_owner(void **state)
{
    (void)state;
    cl_recent_t *r = cl_recent_new();
    char owner[CL_NAME_MAX];
    int64_t lease = 0;
    assert_int_equal(take(r, "dev-1", 1000, owner, &lease), 0); /* empty */
    static const char *const ids[] = {"dev-1", "dev-2", "dev-1", "x"};
    uint8_t buf[64];
    cl_recent_add(r, "n1", 77, buf, enc(buf, ids, 4), 1000);
    assert_int_equal(take(r, "dev-3", 1001, owner, &lease), 0);
    assert_int_equal(take(r, "dev-", 1001, owner, &lease), 0);
    assert_int_equal(take(r, "dev-1", 1001, owner, &lease), 1);
    assert_string_equal(owner, "n1");
    assert_int_equal(lease, 77);
    assert_int_equal(take(r, "dev-1", 1002, owner, &lease), 0); /* once (a duplicate too) */
    assert_int_equal(take(r, "x", 1002, owner, &lease), 1);
    /* a newer table beside it */
    static const char *const more[] = {"dev-9"};
    cl_recent_add(r, "n2", 0, buf, enc(buf, more, 1), 2000);
    assert_int_equal(take(r, "dev-9", 2001, owner, &lease), 1);
    assert_string_equal(owner, "n2");
    assert_int_equal(lease, 0);
    assert_int_equal(take(r, "dev-2", 2001, owner, &lease), 1);
    assert_string_equal(owner, "n1");
    cl_recent_free(r);
}

static void test_expiry_and_room(void **state)
{
    (void)state;
    cl_recent_t *r = cl_recent_new();
    char owner[CL_NAME_MAX], id[16];
    int64_t lease;
    uint8_t buf[64];
    /* five tables: the first (the oldest) makes room for the fifth */
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof(id), "c%d", i);
        const char *ids[] = {id, "keep"};
        cl_recent_add(r, "n", 0, buf, enc(buf, ids, 2), 1000u + (unsigned)i);
    }
    assert_int_equal(take(r, "c0", 1010, owner, &lease), 0);
    for (int i = 1; i < 5; i++) {
        snprintf(id, sizeof(id), "c%d", i);
        assert_int_equal(take(r, id, 1010, owner, &lease), 1);
    }
    /* after their time: gone */
    assert_int_equal(take(r, "keep", 1000 + 3600 * 1000, owner, &lease), 0);
    /* a malformed tail: what came before it is kept */
    size_t n = enc(buf, (const char *const[]){"ok"}, 1);
    buf[n++] = 0;
    buf[n++] = 40; /* 40 bytes announced, 1 there */
    buf[n++] = 'z';
    cl_recent_add(r, "n", 0, buf, n, 5000);
    assert_int_equal(take(r, "ok", 5001, owner, &lease), 1);
    assert_int_equal(take(r, "z", 5001, owner, &lease), 0);
    cl_recent_free(r);
}

static void test_many(void **state)
{
    (void)state;
    cl_recent_t *r = cl_recent_new();
    enum { N = 5000 };
    static uint8_t buf[N * 16];
    size_t len = 0;
    char id[16], owner[CL_NAME_MAX];
    int64_t lease;
    for (int i = 0; i < N; i++) {
        int l = snprintf(id, sizeof(id), "fo_s%d", i);
        buf[len++] = 0;
        buf[len++] = (uint8_t)l;
        memcpy(buf + len, id, (size_t)l);
        len += (size_t)l;
    }
    cl_recent_add(r, "n0", 5, buf, len, 0);
    for (int i = N - 1; i >= 0; i--) {
        snprintf(id, sizeof(id), "fo_s%d", i);
        assert_int_equal(take(r, id, 10, owner, &lease), 1);
    }
    assert_int_equal(take(r, "fo_s0", 10, owner, &lease), 0);
    cl_recent_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_once_with_owner),
        cmocka_unit_test(test_expiry_and_room),
        cmocka_unit_test(test_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
