/* test_queue.c -- the queues: a worker's inbox (many producers, one consumer,
 * eventfd wake-up) and a session's ring of queued / inflight entries. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "inbox.h"
#include "msg.h"
#include "sess.h"

static int readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

static void inbox_post_wakes_once_and_take_clears(void **state)
{
    (void)state;
    inbox_t ib;
    assert_int_equal(inbox_init(&ib), 0);
    assert_false(readable(ib.evfd));
    inbox_vec_t batch = {0};
    for (int i = 0; i < 3; i++) {
        inbox_item_t it = {.kind = 1, .sid = (uint64_t)i};
        inbox_vec_push(&batch, &it);
    }
    inbox_post(&ib, &batch);
    assert_int_equal(batch.len, 0);
    assert_true(readable(ib.evfd));
    inbox_item_t it = {.kind = 1, .sid = 3};
    inbox_vec_push(&batch, &it);
    inbox_post(&ib, &batch);
    inbox_vec_t out = {0};
    inbox_take(&ib, &out);
    assert_false(readable(ib.evfd));
    assert_int_equal(out.len, 4);
    for (size_t i = 0; i < out.len; i++)
        assert_int_equal(out.items[i].sid, i);
    /* empty post does not wake */
    inbox_post(&ib, &batch);
    assert_false(readable(ib.evfd));
    inbox_vec_free(&out);
    inbox_vec_free(&batch);
    inbox_destroy(&ib);
}

#define PRODUCERS 4
#define PER_PRODUCER 50000

typedef struct {
    inbox_t *ib;
    uint32_t id;
} prod_arg_t;

static void *producer(void *arg)
{
    prod_arg_t *a = arg;
    inbox_vec_t batch = {0};
    for (uint32_t i = 0; i < PER_PRODUCER; i++) {
        inbox_item_t it = {.kind = (uint8_t)a->id, .sid = i};
        inbox_vec_push(&batch, &it);
        if (batch.len == 37 || i + 1 == PER_PRODUCER)
            inbox_post(a->ib, &batch);
    }
    inbox_vec_free(&batch);
    return NULL;
}

static void inbox_many_producers_keep_per_producer_order(void **state)
{
    (void)state;
    inbox_t ib;
    assert_int_equal(inbox_init(&ib), 0);
    pthread_t th[PRODUCERS];
    prod_arg_t args[PRODUCERS];
    for (uint32_t i = 0; i < PRODUCERS; i++) {
        args[i] = (prod_arg_t){&ib, i};
        pthread_create(&th[i], NULL, producer, &args[i]);
    }
    uint64_t next[PRODUCERS] = {0};
    size_t total = 0;
    inbox_vec_t out = {0};
    while (total < (size_t)PRODUCERS * PER_PRODUCER) {
        struct pollfd p = {.fd = ib.evfd, .events = POLLIN};
        assert_true(poll(&p, 1, 5000) == 1); /* a wake-up is never lost */
        inbox_take(&ib, &out);
        for (size_t i = 0; i < out.len; i++) {
            uint8_t id = out.items[i].kind;
            assert_true(id < PRODUCERS);
            assert_int_equal(out.items[i].sid, next[id]);
            next[id]++;
        }
        total += out.len;
        out.len = 0;
    }
    for (uint32_t i = 0; i < PRODUCERS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(next[i], PER_PRODUCER);
    }
    inbox_vec_free(&out);
    inbox_destroy(&ib);
}

static void sq_fifo_across_growth_and_wrap(void **state)
{
    (void)state;
    sq_t q = {0};
    uint16_t in = 0, outn = 0;
    /* interleave pushes and pops so the ring wraps while it grows */
    for (int round = 0; round < 100; round++) {
        for (int i = 0; i < 7; i++) {
            sq_entry_t e = {.pid = ++in, .qos = 1};
            sq_push(&q, &e);
        }
        for (int i = 0; i < 5; i++) {
            sq_entry_t e;
            assert_true(sq_pop(&q, &e));
            assert_int_equal(e.pid, ++outn);
        }
    }
    assert_int_equal(sq_len(&q), 200);
    for (uint32_t i = 0; i < sq_len(&q); i++)
        assert_int_equal(sq_at(&q, i)->pid, outn + 1 + i);
    sq_entry_t e;
    while (sq_pop(&q, &e))
        assert_int_equal(e.pid, ++outn);
    assert_int_equal(outn, in);
    assert_null(q.r); /* storage returned once empty */
}

static void sq_remove_keeps_order(void **state)
{
    (void)state;
    sq_t q = {0};
    for (uint16_t i = 1; i <= 10; i++) {
        sq_entry_t e = {.pid = i};
        sq_push(&q, &e);
    }
    sq_remove(&q, 0);
    sq_remove(&q, 4); /* pid 6 */
    sq_remove(&q, sq_len(&q) - 1);
    uint16_t expect[] = {2, 3, 4, 5, 7, 8, 9};
    assert_int_equal(sq_len(&q), 7);
    for (uint32_t i = 0; i < sq_len(&q); i++)
        assert_int_equal(sq_at(&q, i)->pid, expect[i]);
    while (sq_len(&q))
        sq_remove(&q, 0);
    assert_null(q.r);
}

static void sq_clear_drops_message_references(void **state)
{
    (void)state;
    msg_t *m = msg_new((const uint8_t *)"a/b", 3, (const uint8_t *)"x", 1, 1, 0);
    sq_t q = {0};
    for (int i = 0; i < 5; i++) {
        sq_entry_t e = {.m = msg_ref(m)};
        sq_push(&q, &e);
    }
    assert_int_equal(atomic_load(&m->refs), 6);
    sq_clear(&q);
    assert_int_equal(atomic_load(&m->refs), 1);
    assert_int_equal(sq_len(&q), 0);
    msg_unref(&m);
    assert_null(m);
}

static void msg_new_holds_topic_and_payload(void **state)
{
    (void)state;
    msg_t *m = msg_new((const uint8_t *)"t/1", 3, (const uint8_t *)"hello", 5, 2, 1);
    assert_int_equal(m->topic_len, 3);
    assert_int_equal(m->payload_len, 5);
    assert_memory_equal(msg_topic(m), "t/1", 3);
    assert_memory_equal(msg_payload(m), "hello", 5);
    assert_int_equal(m->qos, 2);
    assert_int_equal(m->retain, 1);
    msg_unref(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(inbox_post_wakes_once_and_take_clears),
        cmocka_unit_test(inbox_many_producers_keep_per_producer_order),
        cmocka_unit_test(sq_fifo_across_growth_and_wrap),
        cmocka_unit_test(sq_remove_keeps_order),
        cmocka_unit_test(sq_clear_drops_message_references),
        cmocka_unit_test(msg_new_holds_topic_and_payload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
