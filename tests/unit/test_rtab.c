/* test_rtab.c -- the compact table of other nodes' exact routes (rtab.h):
 * add/del/set/count semantics, one hash on many nodes (also past a run's
 * wrap-around), colliding home slots, growth to 200,000 pairs (by half:
 * at most 24 B a pair) and shrinking back, and a randomized run against a naive reference (every lookup
 * agrees after each step, through backward-shift deletions and retired
 * nodes); a storm of nodes retired one by one (test_retire).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "rtab.h"
#include "util.h"

static int has(const uint16_t *v, size_t n, uint16_t node)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == node)
            return 1;
    return 0;
}

static void test_counts(void **state)
{
    (void)state;
    rtab_t *t = rtab_new();
    uint64_t h = 0x0123456789abcdefull;
    assert_int_equal(rtab_count(t, h, 3), 0);
    assert_int_equal(rtab_add(t, h, 3), 1);
    assert_int_equal(rtab_add(t, h, 3), 2); /* a second filter with this hash */
    assert_int_equal(t->n, 1);
    assert_int_equal(rtab_del(t, h, 3, 0), 1);
    assert_int_equal(rtab_count(t, h, 3), 1); /* kept while one lives */
    assert_int_equal(rtab_del(t, h, 3, 0), 1);
    assert_int_equal(rtab_count(t, h, 3), 0);
    assert_int_equal(t->n, 0);
    assert_int_equal(rtab_del(t, h, 3, 0), 0); /* absent */
    assert_int_equal(rtab_set(t, h, 3, 5), 0);
    assert_int_equal(rtab_set(t, h, 3, 1), 5); /* a sync names it once */
    assert_int_equal(rtab_count(t, h, 3), 1);
    assert_int_equal(rtab_add(t, h, 3), 2);
    assert_int_equal(rtab_del(t, h, 3, 1), 2); /* dropped whole */
    assert_int_equal(t->n, 0);
    assert_int_equal(rtab_set(t, h, 3, 0), 0);
    /* the same low 32 bits, another high half: distinct */
    rtab_add(t, h, 1);
    rtab_add(t, h ^ (1ull << 40), 1);
    assert_int_equal(t->n, 2);
    uint16_t out[4];
    assert_int_equal(rtab_lookup(t, h, out, 4), 1);
    assert_int_equal(rtab_lookup(t, h ^ (1ull << 40), out, 4), 1);
    assert_int_equal(rtab_lookup(t, h ^ 1, out, 4), 0);
    rtab_free(t);
}

static void test_many_nodes(void **state)
{
    (void)state;
    rtab_t *t = rtab_new();
    /* a broadcast topic on 255 nodes, its home the last slot: the run wraps */
    uint64_t h = 0xffffffff0000ffffull;
    for (uint16_t node = 1; node < 256; node++)
        assert_int_equal(rtab_add(t, h, node), 1);
    /* other hashes with the same home, interleaved in the run */
    for (uint64_t k = 1; k <= 50; k++)
        rtab_add(t, h + (k << 20), 7);
    uint16_t out[300];
    assert_int_equal(rtab_lookup(t, h, out, 300), 255);
    for (uint16_t node = 1; node < 256; node++)
        assert_true(has(out, 255, node));
    assert_int_equal(rtab_lookup(t, h, out, 10), 255); /* the total, 10 written */
    /* remove every odd node: the rest is still found */
    for (uint16_t node = 1; node < 256; node += 2)
        assert_int_equal(rtab_del(t, h, node, 0), 1);
    assert_int_equal(rtab_lookup(t, h, out, 300), 127);
    for (uint16_t node = 2; node < 256; node += 2)
        assert_true(has(out, 127, node));
    for (uint64_t k = 1; k <= 50; k++) {
        assert_int_equal(rtab_lookup(t, h + (k << 20), out, 300), 1);
        assert_int_equal(out[0], 7);
    }
    rtab_free(t);
}

static void test_growth(void **state)
{
    (void)state;
    rtab_t *t = rtab_new();
    size_t n = 200000;
    for (size_t i = 0; i < n; i++)
        assert_int_equal(rtab_add(t, an_hash64(i), (uint16_t)(i % 53 + 1)), 1);
    assert_int_equal(t->n, n);
    assert_true(t->cap * 3 >= t->n * 4);
    /* 12-byte slots at least 1/2 full: <= 24 bytes a route */
    assert_true(rtab_bytes(t) <= n * 24);
    uint16_t out[4];
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(rtab_lookup(t, an_hash64(i), out, 4), 1);
        assert_int_equal(out[0], i % 53 + 1);
    }
    for (size_t i = 0; i < n; i++)
        if (i % 100 != 0)
            assert_int_equal(rtab_del(t, an_hash64(i), (uint16_t)(i % 53 + 1), 0), 1);
    assert_int_equal(t->n, n / 100);
    assert_true(t->cap <= 16 * (n / 100)); /* shrank */
    for (size_t i = 0; i < n; i++)
        assert_int_equal(rtab_count(t, an_hash64(i), (uint16_t)(i % 53 + 1)), i % 100 == 0);
    rtab_free(t);
}

/* Random operations on few hashes with few distinct home slots (long,
 * wrapping runs), against a count matrix. */
static void test_random(void **state)
{
    (void)state;
    enum { NH = 40, NN = 6 };
    static uint32_t ref[NH][NN];
    memset(ref, 0, sizeof(ref));
    uint64_t hs[NH];
    for (int i = 0; i < NH; i++)
        /* 5 homes at the end of the table: wrapping runs */
        hs[i] =
            ((uint64_t)(0xffffffffu - (uint32_t)(i % 5) * 0x2000000u) << 32) | (uint32_t)(i + 1);
    rtab_t *t = rtab_new();
    srand(7);
    for (int step = 0; step < 20000; step++) {
        int i = rand() % NH, j = rand() % NN, op = rand() % 4;
        uint64_t h = hs[i];
        if (op == 0 || op == 1) {
            assert_int_equal(rtab_add(t, h, (uint16_t)j), ref[i][j] + 1);
            ref[i][j]++;
        } else if (op == 2) {
            assert_int_equal(rtab_del(t, h, (uint16_t)j, 0), ref[i][j] ? 1 : 0);
            if (ref[i][j])
                ref[i][j]--;
        } else if (rand() % 16 != 0) {
            assert_int_equal(rtab_del(t, h, (uint16_t)j, 1), ref[i][j]);
            ref[i][j] = 0;
        } else { /* the whole node, retired: its slots swept later */
            size_t had = 0;
            for (int a = 0; a < NH; a++) {
                had += ref[a][j] != 0;
                ref[a][j] = 0;
            }
            assert_int_equal(rtab_drop_node(t, (uint16_t)j, NULL, NULL), had);
            assert_int_equal(rtab_drop_node(t, (uint16_t)j, NULL, NULL), 0);
        }
        /* the retired slots: fewer than the live ones */
        assert_true(t->nretired == 0 || t->nretired < t->n);
        size_t pairs = 0;
        for (int a = 0; a < NH; a++) {
            uint16_t out[NN + 1];
            size_t want = 0;
            for (int b = 0; b < NN; b++)
                want += ref[a][b] != 0;
            pairs += want;
            size_t got = rtab_lookup(t, hs[a], out, NN + 1);
            assert_int_equal(got, want);
            for (int b = 0; b < NN; b++)
                assert_int_equal(has(out, got, (uint16_t)b), ref[a][b] != 0);
        }
        assert_int_equal(t->n, pairs);
    }
    rtab_free(t);
}

static void sum_dropped(void *ud, uint64_t h, uint32_t count)
{
    (void)h;
    *(uint64_t *)ud += count;
}

/* rtab_drop_node: every pair of one node goes (through wrap-arounds and
 * backward shifts), the others stay, the callback sees each with its count. */
static void test_drop_node(void **state)
{
    (void)state;
    rtab_t *t = rtab_new();
    enum { NK = 5000 };
    uint64_t x = 0x1234;
    static uint64_t hs[NK];
    for (int i = 0; i < NK; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        hs[i] = x;
        rtab_add(t, hs[i], (uint16_t)(i % 3));
        if (i % 7 == 0)
            rtab_add(t, hs[i], (uint16_t)(i % 3)); /* a count of 2 */
    }
    uint64_t total = 0;
    size_t want = 0;
    uint64_t want_total = 0;
    for (int i = 0; i < NK; i++)
        if (i % 3 == 1) {
            want++;
            want_total += i % 7 == 0 ? 2 : 1;
        }
    assert_int_equal(rtab_drop_node(t, 1, sum_dropped, &total), want);
    assert_int_equal(total, want_total);
    assert_int_equal(t->n, NK - want);
    for (int i = 0; i < NK; i++) {
        assert_int_equal(rtab_count(t, hs[i], 1), 0);
        if (i % 3 != 1)
            assert_int_equal(rtab_count(t, hs[i], (uint16_t)(i % 3)), i % 7 == 0 ? 2 : 1);
    }
    assert_int_equal(rtab_drop_node(t, 0, NULL, NULL) + rtab_drop_node(t, 2, NULL, NULL),
                     NK - want);
    assert_int_equal(t->n, 0);
    assert_int_equal(t->cap, RTAB_MIN); /* shrunk back */
    rtab_free(t);
}

/* A connect storm's drops: 52 nodes of 1,000 pairs each (and one hash on
 * every node), each node dropped in turn without a callback: every lookup
 * right after each drop, the retired slots swept by a few rebuilds (never
 * more than the live ones), writes for a retired node see none of
 * its old pairs, the table back to its smallest at the end. */
static void test_retire(void **state)
{
    (void)state;
    enum { NODES = 52, PER = 1000 };
    rtab_t *t = rtab_new();
    uint64_t bcast = an_hash64(999999);
    for (uint16_t k = 1; k <= NODES; k++) {
        for (uint64_t i = 0; i < PER; i++)
            rtab_add(t, an_hash64(k * 100000ull + i), k);
        rtab_add(t, bcast, k);
    }
    assert_int_equal(t->n, NODES * (PER + 1));
    size_t big = t->cap, rebuilt = 0;
    uint16_t out[NODES + 1];
    for (uint16_t k = 1; k <= NODES; k++) {
        rtab_slot_t *before = t->slots;
        assert_int_equal(rtab_drop_node(t, k, NULL, NULL), PER + 1);
        rebuilt += t->slots != before;
        assert_int_equal(t->n, (size_t)(NODES - k) * (PER + 1));
        assert_true(t->nretired == 0 || t->nretired < t->n);
        assert_int_equal(rtab_lookup(t, bcast, out, NODES + 1), NODES - k);
        for (uint16_t j = 1; j <= NODES; j += 7) {
            uint64_t h = an_hash64(j * 100000ull + (uint64_t)(k % PER));
            assert_int_equal(rtab_count(t, h, j), j > k);
            assert_int_equal(rtab_lookup(t, h, out, NODES + 1), j > k);
        }
        if (k == 3) { /* a retired node's routes again: only the new ones */
            assert_int_equal(rtab_add(t, an_hash64(3 * 100000ull + 5), 3), 1);
            assert_int_equal(rtab_count(t, an_hash64(3 * 100000ull + 6), 3), 0);
            assert_int_equal(rtab_del(t, an_hash64(3 * 100000ull + 5), 3, 1), 1);
            assert_int_equal(t->nretired, 0); /* swept first */
        }
    }
    /* the scan of a whole table a drop, 52 times before: a few now */
    assert_true(rebuilt <= 16);
    assert_true(big > RTAB_MIN);
    assert_int_equal(t->n, 0);
    assert_int_equal(t->cap, RTAB_MIN);
    /* with a callback: at once, and the retired ones swept with it */
    uint64_t total = 0;
    rtab_add(t, 1, 1);
    rtab_add(t, 2, 2);
    rtab_add(t, 2, 2);
    assert_int_equal(rtab_drop_node(t, 1, NULL, NULL), 1);
    assert_int_equal(rtab_drop_node(t, 2, sum_dropped, &total), 1);
    assert_int_equal(total, 2);
    assert_int_equal(t->n + t->nretired, 0);
    rtab_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts),    cmocka_unit_test(test_many_nodes),
        cmocka_unit_test(test_growth),    cmocka_unit_test(test_random),
        cmocka_unit_test(test_drop_node), cmocka_unit_test(test_retire),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
