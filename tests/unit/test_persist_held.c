/* test_persist_held.c -- the release rule of held acknowledgements and
 * routes (src/broker/persist_held.c), driven as a worker drives it: items
 * held while a batch fills, the batch submitted, commits coming back one by
 * one.  Nothing held for batch k may leave before the (k+1)-th commit (the
 * kill -9 loss of issue 13, item 0, released it one commit early), and
 * everything leaves in arrival order once it may.  Also: a batch the store
 * refused to queue, empty batches, growth and wrap of the ring while items
 * are released, and forgotten connections.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "persist_held.h"

/* An item tagged with a number (in pid) so the order can be checked. */
static void hold_n(held_ring_t *h, uint16_t *tag, int n)
{
    for (int i = 0; i < n; i++)
        held_push(h)->pid = (*tag)++;
}

/* Pop everything releasable; returns the count, checks the tags continue
 * from *next in order and belong to batches below the commit count. */
static int drain(held_ring_t *h, uint16_t *next)
{
    held_item_t it;
    int n = 0;
    while (held_pop(h, &it)) {
        assert_int_equal(it.pid, *next);
        assert_true(it.batch < h->committed_no);
        (*next)++;
        n++;
    }
    return n;
}

static void release_by_own_commit_only(void **state)
{
    (void)state;
    held_ring_t h = {0};
    uint16_t tag = 0, next = 0;
    /* batches 0, 1, 2 with 3, 5 and 2 items, all submitted before any
     * commit comes back */
    hold_n(&h, &tag, 3);
    held_submitted(&h);
    hold_n(&h, &tag, 5);
    held_submitted(&h);
    hold_n(&h, &tag, 2);
    held_submitted(&h);
    assert_int_equal(h.batch_no, 3);
    assert_int_equal(drain(&h, &next), 0); /* nothing committed yet */

    assert_int_equal(held_committed(&h), 1); /* batch 0 */
    assert_int_equal(drain(&h, &next), 3);
    assert_int_equal(held_len(&h), 7);
    assert_int_equal(held_at(&h, 0)->batch, 1); /* batch 1 waits for commit 2 */

    assert_int_equal(held_committed(&h), 2); /* batch 1 */
    assert_int_equal(drain(&h, &next), 5);
    assert_int_equal(held_at(&h, 0)->batch, 2);

    assert_int_equal(held_committed(&h), 3); /* batch 2 */
    assert_int_equal(drain(&h, &next), 2);
    assert_int_equal(held_len(&h), 0);
    assert_int_equal(next, 10);
    held_free(&h);
}

static void batch_being_filled_never_leaves(void **state)
{
    (void)state;
    held_ring_t h = {0};
    uint16_t tag = 0, next = 0;
    hold_n(&h, &tag, 2); /* batch 0 */
    held_submitted(&h);
    hold_n(&h, &tag, 4); /* batch 1, still filling when batch 0 commits */
    held_committed(&h);
    assert_int_equal(drain(&h, &next), 2);
    assert_int_equal(held_len(&h), 4);
    hold_n(&h, &tag, 1); /* still batch 1 */
    held_submitted(&h);
    assert_int_equal(drain(&h, &next), 0);
    held_committed(&h);
    assert_int_equal(drain(&h, &next), 5);
    held_free(&h);
}

static void empty_batches_count(void **state)
{
    (void)state;
    held_ring_t h = {0};
    uint16_t tag = 0, next = 0;
    held_submitted(&h);  /* batch 0: records only, nothing held */
    held_submitted(&h);  /* batch 1 */
    hold_n(&h, &tag, 1); /* batch 2 */
    held_submitted(&h);
    held_committed(&h);
    assert_int_equal(drain(&h, &next), 0);
    held_committed(&h);
    assert_int_equal(drain(&h, &next), 0);
    held_committed(&h);
    assert_int_equal(drain(&h, &next), 1);
    held_free(&h);
}

static void failed_submit_goes_with_the_next_batch(void **state)
{
    (void)state;
    held_ring_t h = {0};
    uint16_t tag = 0, next = 0;
    hold_n(&h, &tag, 2); /* batch 0, submitted */
    held_submitted(&h);
    hold_n(&h, &tag, 3); /* batch 1: the store refuses it */
    held_submit_failed(&h);
    assert_int_equal(h.batch_no, 1); /* the next batch takes its number */
    hold_n(&h, &tag, 2);
    held_submitted(&h);

    held_committed(&h); /* batch 0 */
    held_item_t it;
    for (int i = 0; i < 2; i++) {
        assert_true(held_pop(&h, &it));
        assert_int_equal(it.pid, next++);
        assert_false(it.failed);
    }
    assert_false(held_pop(&h, &it));
    held_committed(&h); /* the second batch 1 */
    for (int i = 0; i < 5; i++) {
        assert_true(held_pop(&h, &it));
        assert_int_equal(it.pid, next++);
        assert_int_equal(it.failed, i < 3); /* refused: their batch never reached the store */
    }
    assert_false(held_pop(&h, &it));
    held_free(&h);
}

/* Many short batches with commits lagging behind, across ring growth and
 * wrap, and items held while others are released (a released route may
 * hold a QoS 2 send): each item leaves exactly at its batch's commit. */
static void interleaved_against_a_model(void **state)
{
    (void)state;
    held_ring_t h = {0};
    uint64_t rng = 42;
    uint16_t tag = 0, next = 0;
    uint64_t batch_of_tag[60000];
    for (int round = 0; round < 5000 && tag < 59000; round++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        int n = (int)((rng >> 33) % 8);
        for (int i = 0; i < n; i++) {
            held_item_t *e = held_push(&h);
            e->pid = tag;
            batch_of_tag[tag++] = e->batch;
        }
        held_submitted(&h);
        /* the commits lag behind by 0..3 batches */
        uint64_t lag = (rng >> 40) % 4;
        while (h.committed_no + lag < h.batch_no) {
            held_committed(&h);
            held_item_t it;
            while (held_pop(&h, &it)) {
                assert_int_equal(it.pid, next);
                assert_true(batch_of_tag[it.pid] < h.committed_no);
                next++;
                if (((rng >> 20) & 7) == 0) { /* a release holds something new */
                    held_item_t *e = held_push(&h);
                    e->pid = tag;
                    batch_of_tag[tag++] = e->batch;
                }
            }
            /* what is left is not committed */
            if (held_len(&h))
                assert_true(held_at(&h, 0)->batch >= h.committed_no);
        }
    }
    held_submitted(&h);
    while (h.committed_no < h.batch_no) {
        held_committed(&h);
        held_item_t it;
        while (held_pop(&h, &it))
            assert_int_equal(it.pid, next++);
    }
    assert_int_equal(next, tag);
    assert_int_equal(held_len(&h), 0);
    held_free(&h);
}

static void forgotten_connection(void **state)
{
    (void)state;
    held_ring_t h = {0};
    struct endpoint_s *a = (struct endpoint_s *)(uintptr_t)0x1000,
                      *b = (struct endpoint_s *)(uintptr_t)0x2000;
    held_push(&h)->ep = a;
    held_push(&h)->ep = b;
    held_push(&h)->ep = a;
    held_forget_endpoint(&h, a);
    held_submitted(&h);
    held_committed(&h);
    held_item_t it;
    assert_true(held_pop(&h, &it));
    assert_null(it.ep);
    assert_true(held_pop(&h, &it));
    assert_ptr_equal(it.ep, b);
    assert_true(held_pop(&h, &it));
    assert_null(it.ep);
    held_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(release_by_own_commit_only),
        cmocka_unit_test(batch_being_filled_never_leaves),
        cmocka_unit_test(empty_batches_count),
        cmocka_unit_test(failed_submit_goes_with_the_next_batch),
        cmocka_unit_test(interleaved_against_a_model),
        cmocka_unit_test(forgotten_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
