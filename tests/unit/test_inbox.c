/* test_inbox.c -- the worker's mailbox (src/core/inbox.h): the doorbell is
 * rung once per take and only for a sleeping consumer, a running consumer
 * is not rung and finds the items before it waits (inbox_sleep), a
 * deferred doorbell (inbox_post_defer, inbox_ring_due) is rung when its
 * producer comes back and not when the consumer took the items or runs,
 * and the race: producer threads posting (plain and deferred) against a
 * consumer that sleeps in poll() between batches, checked for a missed
 * wake-up (a sleep that outlasts a deadline while items wait), lost or
 * reordered items.  Every wait is bounded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "inbox.h"
#include "util.h"

/* The eventfd is readable (a doorbell waits). */
static int rung(inbox_t *ib)
{
    struct pollfd p = {.fd = ib->evfd, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

static void push(inbox_vec_t *v, uint8_t kind, uint64_t sid)
{
    inbox_item_t it = {.kind = kind, .sid = sid};
    inbox_vec_push(v, &it);
}

static void test_sleeping_consumer_rung_once(void **state)
{
    (void)state;
    inbox_t ib;
    inbox_vec_t b = {0}, out = {0};
    assert_int_equal(inbox_init(&ib), 0);
    /* a consumer that never said it runs (the CoAP gateway's) is asleep */
    push(&b, 1, 1);
    assert_int_equal(inbox_post(&ib, &b), 1);
    assert_true(rung(&ib));
    push(&b, 1, 2);
    push(&b, 1, 3);
    assert_int_equal(inbox_post(&ib, &b), 3);
    assert_int_equal(b.len, 0);
    assert_int_equal(atomic_load(&ib.rings), 1); /* once per take */
    inbox_take(&ib, &out);
    assert_false(rung(&ib));
    assert_int_equal(out.len, 3);
    for (size_t i = 0; i < out.len; i++)
        assert_int_equal(out.items[i].sid, i + 1);
    assert_int_equal(inbox_waiting(&ib), 0);
    out.len = 0;
    push(&b, 1, 4); /* after a take: rung again */
    inbox_post(&ib, &b);
    assert_true(rung(&ib));
    assert_int_equal(atomic_load(&ib.rings), 2);
    inbox_take(&ib, &out);
    assert_false(rung(&ib));
    inbox_vec_free(&b);
    inbox_vec_free(&out);
    inbox_destroy(&ib);
}

static void test_running_consumer_not_rung(void **state)
{
    (void)state;
    inbox_t ib;
    inbox_vec_t b = {0}, out = {0};
    assert_int_equal(inbox_init(&ib), 0);
    inbox_wake(&ib, 1000); /* the consumer runs its turn */
    push(&b, 1, 1);
    inbox_post(&ib, &b);
    assert_false(rung(&ib));
    assert_int_equal(atomic_load(&ib.skipped), 1);
    /* before it waits, it finds them: no blocking */
    assert_int_equal(inbox_sleep(&ib), 0);
    inbox_wake(&ib, 1010);
    inbox_take(&ib, &out);
    assert_int_equal(out.len, 1);
    out.len = 0;
    assert_int_equal(inbox_sleep(&ib), 1); /* nothing left: it may block */
    push(&b, 1, 2);                        /* now it sleeps: rung */
    inbox_post(&ib, &b);
    assert_true(rung(&ib));
    inbox_wake(&ib, 1020);
    inbox_take(&ib, &out);
    assert_false(rung(&ib));
    inbox_vec_free(&b);
    inbox_vec_free(&out);
    inbox_destroy(&ib);
}

static void test_deferred_doorbell(void **state)
{
    (void)state;
    inbox_t ib;
    inbox_vec_t b = {0}, out = {0};
    int owed = 0;
    assert_int_equal(inbox_init(&ib), 0);
    inbox_wake(&ib, 1000);
    assert_int_equal(inbox_sleep(&ib), 1);
    /* woke 50 us ago, 100 allowed: deferred */
    push(&b, 1, 1);
    inbox_post_defer(&ib, &b, 1050, 100, &owed);
    assert_int_equal(owed, 1);
    assert_false(rung(&ib));
    assert_int_equal(inbox_ring_due(&ib, 0), 1); /* still needed */
    assert_false(rung(&ib));
    assert_int_equal(inbox_ring_due(&ib, 1), 0); /* rung now */
    assert_true(rung(&ib));
    inbox_wake(&ib, 1200);
    inbox_take(&ib, &out);
    out.len = 0;
    assert_int_equal(inbox_sleep(&ib), 1);

    /* woke 150 us ago: rung at once */
    owed = 0;
    push(&b, 1, 2);
    inbox_post_defer(&ib, &b, 1350, 100, &owed);
    assert_int_equal(owed, 0);
    assert_true(rung(&ib));
    inbox_wake(&ib, 1360);
    inbox_take(&ib, &out);
    out.len = 0;
    assert_int_equal(inbox_sleep(&ib), 1);

    /* deferred, then the consumer took them by itself: nothing to ring */
    owed = 0;
    push(&b, 1, 3);
    inbox_post_defer(&ib, &b, 1400, 100, &owed);
    assert_int_equal(owed, 1);
    inbox_wake(&ib, 1410);
    inbox_take(&ib, &out);
    out.len = 0;
    assert_int_equal(inbox_ring_due(&ib, 1), 0);
    assert_false(rung(&ib));

    /* deferred, then the consumer woke (still running): it takes them
     * before it waits, so nothing to ring either */
    assert_int_equal(inbox_sleep(&ib), 1);
    owed = 0;
    push(&b, 1, 4);
    inbox_post_defer(&ib, &b, 1420, 100, &owed);
    assert_int_equal(owed, 1);
    inbox_wake(&ib, 1430);
    assert_int_equal(inbox_ring_due(&ib, 1), 0);
    assert_false(rung(&ib));
    assert_int_equal(inbox_sleep(&ib), 0); /* and it does not block */
    inbox_wake(&ib, 1440);
    inbox_take(&ib, &out);
    assert_int_equal(out.len, 1);

    /* a woken-at later than the producer's clock (read before it): deferred */
    out.len = 0;
    assert_int_equal(inbox_sleep(&ib), 1);
    owed = 0;
    inbox_wake(&ib, 2000);
    assert_int_equal(inbox_sleep(&ib), 1);
    push(&b, 1, 5);
    inbox_post_defer(&ib, &b, 1990, 100, &owed);
    assert_int_equal(owed, 1);
    assert_int_equal(inbox_ring_due(&ib, 1), 0);
    assert_true(rung(&ib));
    inbox_take(&ib, &out);
    inbox_vec_free(&b);
    inbox_vec_free(&out);
    inbox_destroy(&ib);
}

/* The race.  Each producer posts NITEMS items numbered in order, in small
 * batches, and every few batches waits (bounded) until the consumer has
 * caught up so that the consumer goes to sleep often, right when the next
 * batch comes.  A deferring producer rings what it owes after a short
 * delay, as a worker does at the end of its turn or when its timer fires.
 * The consumer: inbox_sleep, poll() up to STALL_MS when allowed, inbox_wake,
 * take.  A poll that times out while items wait that were posted before
 * it began is a lost wake-up. */
#define NPROD 2
#define NITEMS 100000
#define STALL_MS 2000

typedef struct {
    inbox_t *ib;
    uint32_t id;
    uint32_t defer_us;
    _Atomic uint64_t *consumed;
} prod_t;

static void *producer_main(void *arg)
{
    prod_t *p = arg;
    inbox_vec_t b = {0};
    uint64_t rng = an_hash64(p->id + 7) | 1;
    uint32_t seq = 0;
    while (seq < NITEMS) {
        uint32_t n = 1 + (uint32_t)(rng % 8);
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        for (uint32_t i = 0; i < n && seq < NITEMS; i++)
            push(&b, (uint8_t)p->id, seq++);
        int owed = 0;
        uint64_t now = an_now_us();
        inbox_post_defer(p->ib, &b, now, p->defer_us, &owed);
        if (owed) { /* come back later, at most 2 s of tries */
            uint64_t due = now + p->defer_us;
            for (int k = 0; k < 200000; k++) {
                uint64_t t = an_now_us();
                if (!inbox_ring_due(p->ib, t >= due))
                    break;
                sched_yield();
            }
        }
        if (rng % 4 == 0) {
            /* let the consumer drain and fall asleep; longer than its
             * STALL_MS, so that a lost wake-up is not covered by our next
             * batch's doorbell (a failed run stops the wait early) */
            uint64_t until = an_now_ms() + STALL_MS + 1000;
            while (inbox_waiting(p->ib) > 0 &&
                   atomic_load(p->consumed) < (uint64_t)NPROD * NITEMS && an_now_ms() < until)
                sched_yield();
        }
    }
    inbox_vec_free(&b);
    return NULL;
}

typedef struct {
    inbox_t *ib;
    _Atomic uint64_t *consumed;
    uint32_t next[NPROD + 1];
    uint32_t stalls, misordered, sleeps;
} cons_t;

static void *consumer_main(void *arg)
{
    cons_t *c = arg;
    inbox_vec_t out = {0};
    uint64_t deadline = an_now_ms() + 60000;
    while (atomic_load(c->consumed) < (uint64_t)NPROD * NITEMS && an_now_ms() < deadline) {
        if (inbox_sleep(c->ib)) {
            struct pollfd pf = {.fd = c->ib->evfd, .events = POLLIN};
            c->sleeps++;
            int r = poll(&pf, 1, STALL_MS);
            if (r == 0 && inbox_waiting(c->ib) > 0) {
                c->stalls++; /* items waited the whole time: no doorbell came */
                atomic_store(c->consumed, UINT64_MAX / 2); /* the producers stop waiting */
                break;
            }
        }
        inbox_wake(c->ib, an_now_us());
        inbox_take(c->ib, &out);
        for (size_t i = 0; i < out.len; i++) {
            uint32_t who = out.items[i].kind;
            if (who > NPROD || out.items[i].sid != c->next[who])
                c->misordered++;
            else
                c->next[who]++;
        }
        atomic_fetch_add(c->consumed, out.len);
        out.len = 0;
    }
    inbox_vec_free(&out);
    return NULL;
}

static void run_race(uint32_t defer_us)
{
    inbox_t ib;
    assert_int_equal(inbox_init(&ib), 0);
    _Atomic uint64_t consumed = 0;
    cons_t c = {.ib = &ib, .consumed = &consumed};
    prod_t p[NPROD];
    pthread_t tc, tp[NPROD];
    assert_int_equal(pthread_create(&tc, NULL, consumer_main, &c), 0);
    for (uint32_t i = 0; i < NPROD; i++) {
        p[i] = (prod_t){
            .ib = &ib, .id = i + 1, .defer_us = i == 0 ? 0 : defer_us, .consumed = &consumed};
        assert_int_equal(pthread_create(&tp[i], NULL, producer_main, &p[i]), 0);
    }
    for (uint32_t i = 0; i < NPROD; i++)
        pthread_join(tp[i], NULL);
    pthread_join(tc, NULL);
    print_message("defer %u us: %u sleeps, %llu doorbells, %llu skipped\n", defer_us, c.sleeps,
                  (unsigned long long)atomic_load(&ib.rings),
                  (unsigned long long)atomic_load(&ib.skipped));
    assert_int_equal(c.stalls, 0);
    inbox_vec_t left = {0}; /* what a failed run left */
    inbox_take(&ib, &left);
    inbox_vec_free(&left);
    assert_int_equal(c.misordered, 0);
    assert_int_equal(atomic_load(&consumed), (uint64_t)NPROD * NITEMS);
    for (uint32_t i = 1; i <= NPROD; i++)
        assert_int_equal(c.next[i], NITEMS);
    assert_true(c.sleeps > 0); /* the race was run, not only a busy consumer */
    inbox_destroy(&ib);
}

static void test_race_plain(void **state)
{
    (void)state;
    run_race(0);
}

static void test_race_deferred(void **state)
{
    (void)state;
    run_race(50);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sleeping_consumer_rung_once),
        cmocka_unit_test(test_running_consumer_not_rung),
        cmocka_unit_test(test_deferred_doorbell),
        cmocka_unit_test(test_race_plain),
        cmocka_unit_test(test_race_deferred),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
