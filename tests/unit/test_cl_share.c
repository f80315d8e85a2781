/* test_cl_share.c -- replicated sessions' shares (src/cluster/cl_share.c)
 * and the store's flat form (store_raw_next): a session's keys (record,
 * queue, QoS 2 ids, their prefix deletes) share one share key; other keys
 * go by the whole key; meta keys and family deletes concern every share; the pick
 * spreads ids over the peers and moves only the ids a new peer wins; a
 * split puts each operation where its pick says, and every replica gets
 * the family deletes; the lengths are little-endian on every host; a
 * truncated or unknown operation is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/cl_share.h"
#include "store.h"
#include "store_rec.h"

static void check_key(int op, const uint8_t *k, size_t kl, const char *want)
{
    const uint8_t *pk;
    size_t pkl;
    int rc = cl_share_key(op, k, kl, &pk, &pkl);
    if (want == NULL) {
        assert_int_equal(rc, 0);
        return;
    }
    assert_int_equal(rc, 1);
    assert_int_equal(pkl, strlen(want));
    assert_memory_equal(pk, want, pkl);
}

static void test_share_key(void **state)
{
    (void)state;
    uint8_t k[STORE_KEY_MAX];
    size_t n = store_key_session(k, sizeof(k), "dev/1", 5);
    check_key(STORE_RAW_PUT, k, n, "dev/1");
    check_key(STORE_RAW_DEL, k, n, "dev/1");
    n = store_key_queue(k, sizeof(k), "dev/1", 5, 77);
    check_key(STORE_RAW_PUT, k, n, "dev/1");
    n = store_key_queue_prefix(k, sizeof(k), "dev/1", 5);
    check_key(STORE_RAW_DEL_PREFIX, k, n, "dev/1");
    n = store_key_incoming(k, sizeof(k), "dev/1", 5, 9);
    check_key(STORE_RAW_DEL, k, n, "dev/1");
    n = store_key_incoming_prefix(k, sizeof(k), "dev/1", 5);
    check_key(STORE_RAW_DEL_PREFIX, k, n, "dev/1");
    n = store_key_retained(k, sizeof(k), "a/b", 3);
    check_key(STORE_RAW_PUT, k, n, "r/a/b");
    check_key(STORE_RAW_DEL_PREFIX, (const uint8_t *)"s/", 2, NULL);
    check_key(STORE_RAW_DEL_PREFIX, (const uint8_t *)"q/", 2, NULL);
    check_key(STORE_RAW_DEL_PREFIX, (const uint8_t *)"s/dev", 5, NULL);
    check_key(STORE_RAW_DEL_PREFIX, (const uint8_t *)"r/", 2, NULL);
    /* meta keys: every copy (each is a store with its format version) */
    check_key(STORE_RAW_PUT, (const uint8_t *)STORE_KEY_VERSION, STORE_KEY_VERSION_LEN, NULL);
    check_key(STORE_RAW_DEL, (const uint8_t *)"\0auth/x", 7, NULL);
    /* a queue key whose length runs past the key: by the whole key */
    const uint8_t bad[] = {'q', '/', 0, 9, 'a'};
    const uint8_t *pk;
    size_t pkl;
    assert_int_equal(cl_share_key(STORE_RAW_PUT, bad, sizeof(bad), &pk, &pkl), 1);
    assert_ptr_equal(pk, bad);
    assert_int_equal(pkl, sizeof(bad));
}

static void test_pick_spreads_and_moves_little(void **state)
{
    (void)state;
    uint64_t seeds[4] = {cl_share_seed("a"), cl_share_seed("b"), cl_share_seed("c"),
                         cl_share_seed("d")};
    int count[4] = {0}, moved = 0;
    for (int i = 0; i < 3000; i++) {
        char id[32];
        int n = snprintf(id, sizeof(id), "client-%d", i);
        int p3 = cl_share_pick(seeds, 3, (const uint8_t *)id, (size_t)n);
        int p4 = cl_share_pick(seeds, 4, (const uint8_t *)id, (size_t)n);
        count[p3]++;
        if (p4 != p3) {
            assert_int_equal(p4, 3); /* only to the new peer */
            moved++;
        }
    }
    for (int j = 0; j < 3; j++)
        assert_true(count[j] > 800 && count[j] < 1200);
    assert_true(moved > 550 && moved < 950); /* about a quarter */
    /* the same answer whatever the order of the other peers */
    uint64_t rev[3] = {seeds[2], seeds[1], seeds[0]};
    for (int i = 0; i < 200; i++) {
        char id[32];
        int n = snprintf(id, sizeof(id), "x%d", i);
        int a = cl_share_pick(seeds, 3, (const uint8_t *)id, (size_t)n);
        int b = cl_share_pick(rev, 3, (const uint8_t *)id, (size_t)n);
        assert_int_equal(a, 2 - b);
    }
}

static int count_ops(const cl_buf_t *b, int *dels_prefix)
{
    size_t off = 0;
    store_raw_op_t op;
    int n = 0, rc;
    while ((rc = store_raw_next(b->p, b->len, &off, &op)) == 1) {
        n++;
        if (op.op == STORE_RAW_DEL_PREFIX && op.kl == 2)
            (*dels_prefix)++;
    }
    assert_int_equal(rc, 0);
    return n;
}

static void test_split(void **state)
{
    (void)state;
    uint64_t seeds[3] = {cl_share_seed("n1"), cl_share_seed("n2"), cl_share_seed("n3")};
    store_batch_t *b = store_batch_new();
    uint8_t k[STORE_KEY_MAX];
    int want[3] = {0};
    for (int i = 0; i < 60; i++) {
        char id[16];
        int l = snprintf(id, sizeof(id), "c%d", i);
        int j = cl_share_pick(seeds, 3, (const uint8_t *)id, (size_t)l);
        size_t n = store_key_session(k, sizeof(k), id, (size_t)l);
        store_batch_put(b, k, n, "S", 1);
        n = store_key_queue(k, sizeof(k), id, (size_t)l, 1);
        store_batch_put(b, k, n, "Q", 1);
        n = store_key_incoming_prefix(k, sizeof(k), id, (size_t)l);
        store_batch_del_prefix(b, k, n);
        want[j] += 3;
    }
    store_batch_del_prefix(b, "s/", 2); /* to every share */
    want[0]++, want[1]++, want[2]++;
    size_t rl;
    const void *raw = store_batch_raw(b, &rl);
    cl_buf_t out[3] = {{0}};
    assert_int_equal(cl_share_split(raw, rl, seeds, 3, out), 0);
    for (int j = 0; j < 3; j++) {
        int fam = 0;
        assert_int_equal(count_ops(&out[j], &fam), want[j]);
        assert_int_equal(fam, 1);
        assert_true(want[j] > 3);
        /* the part goes back into a batch as it is */
        store_batch_t *x = store_batch_new();
        assert_int_equal(store_batch_append_raw(x, out[j].p, out[j].len), 0);
        assert_int_equal((int)store_batch_count(x), want[j]);
        store_batch_free(x);
        cl_buf_free(&out[j]);
    }
    /* not a flat form */
    uint8_t junk[5] = {1, 2, 3, 4, 5};
    cl_buf_t one[1] = {{0}};
    assert_int_equal(cl_share_split(junk, sizeof(junk), seeds, 1, one), -1);
    cl_buf_free(&one[0]);
    store_batch_free(b);
}

static void test_flat_form_little_endian(void **state)
{
    (void)state;
    store_batch_t *b = store_batch_new();
    uint8_t v[258];
    memset(v, 7, sizeof(v));
    store_batch_put(b, "abc", 3, v, sizeof(v));
    store_batch_del(b, "xy", 2);
    size_t rl;
    const uint8_t *raw = store_batch_raw(b, &rl);
    assert_int_equal(rl, 9 + 3 + 258 + 9 + 2);
    const uint8_t head[9] = {STORE_RAW_PUT, 3, 0, 0, 0, 2, 1, 0, 0}; /* 3, 258 */
    assert_memory_equal(raw, head, 9);
    const uint8_t head2[9] = {STORE_RAW_DEL, 2, 0, 0, 0, 0, 0, 0, 0};
    assert_memory_equal(raw + 9 + 3 + 258, head2, 9);
    size_t off = 0;
    store_raw_op_t op;
    assert_int_equal(store_raw_next(raw, rl, &off, &op), 1);
    assert_int_equal(op.op, STORE_RAW_PUT);
    assert_int_equal(op.kl, 3);
    assert_int_equal(op.vl, 258);
    assert_int_equal(op.at, 0);
    assert_int_equal(store_raw_next(raw, rl, &off, &op), 1);
    assert_int_equal(op.op, STORE_RAW_DEL);
    assert_int_equal(op.at, 9 + 3 + 258);
    assert_int_equal(store_raw_next(raw, rl, &off, &op), 0);
    /* truncated, an unknown operation, a delete with a value, an empty prefix */
    off = 0;
    assert_int_equal(store_raw_next(raw, rl - 1, &off, &op), 1);
    assert_int_equal(store_raw_next(raw, rl - 1, &off, &op), STORE_EINVAL);
    uint8_t x[9 + 2] = {9, 2, 0, 0, 0, 0, 0, 0, 0, 'a', 'b'};
    off = 0;
    assert_int_equal(store_raw_next(x, sizeof(x), &off, &op), STORE_EINVAL);
    uint8_t d[9 + 2] = {STORE_RAW_DEL, 1, 0, 0, 0, 1, 0, 0, 0, 'a', 'b'};
    off = 0;
    assert_int_equal(store_raw_next(d, sizeof(d), &off, &op), STORE_EINVAL);
    uint8_t e[9] = {STORE_RAW_DEL_PREFIX, 0, 0, 0, 0, 0, 0, 0, 0};
    off = 0;
    assert_int_equal(store_raw_next(e, sizeof(e), &off, &op), STORE_EINVAL);
    store_batch_t *c = store_batch_new();
    assert_int_equal(store_batch_append_raw(c, x, sizeof(x)), STORE_EINVAL);
    assert_int_equal((int)store_batch_count(c), 0);
    store_batch_free(c);
    store_batch_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_share_key),
        cmocka_unit_test(test_pick_spreads_and_moves_little),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_flat_form_little_endian),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
