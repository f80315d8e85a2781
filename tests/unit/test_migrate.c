/* test_migrate.c -- the decision of migrate.h: when a publisher's session
 * is wanted on another worker.  migrate_decide (90 % of a window wholly to
 * one other worker, never to itself or a worker that does not exist), and
 * migrate_note + migrate_window on a worker and a session made by hand: a
 * fan-in publisher is wanted after one window, a spread or local one never,
 * a session with subscriptions never, a moved one only after MIGRATE_HOLD
 * windows, a message delivered to two other workers counts for none.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "migrate.h"

static void test_decide(void **state)
{
    (void)state;
    assert_int_equal(migrate_decide(256, 256, 1, 0, 2), 1);
    assert_int_equal(migrate_decide(256, 231, 1, 0, 2), 1); /* 90.2 % */
    assert_int_equal(migrate_decide(256, 230, 1, 0, 2), 0); /* 89.8 % */
    assert_int_equal(migrate_decide(256, 256, 0, 0, 2), 0); /* already there */
    assert_int_equal(migrate_decide(256, 256, 2, 0, 2), 0); /* no such worker */
    assert_int_equal(migrate_decide(256, 0, 1, 0, 2), 0);
    assert_int_equal(migrate_decide(0, 0, 1, 0, 2), 0);
    assert_int_equal(migrate_decide(65535, 65535, 3, 1, 4), 1);
}

typedef struct {
    server_t srv;
    worker_t w;
    sess_t s;
} fake_t;

static fake_t *fake(uint32_t nworkers, uint32_t id)
{
    fake_t *f = calloc(1, sizeof(*f) + 8);
    f->srv.nworkers = nworkers;
    f->w.srv = &f->srv;
    f->w.id = id;
    f->w.mig_on = 1;
    f->s.w = &f->w;
    f->s.sid = 42;
    return f;
}

static void fake_free(fake_t *f)
{
    free(f->w.migs);
    free(f);
}

/* One publish of s: `local` deliveries here, then one to each of to[]. */
static void publish(fake_t *f, uint32_t local, const uint16_t *to, size_t nto)
{
    worker_t *w = &f->w;
    w->dlv_local = w->dlv_cross = 0;
    w->dlv_mixed = 0;
    w->dlv_local = local;
    for (size_t i = 0; i < nto; i++) { /* as router.c deliver_session counts */
        if (w->dlv_cross++ == 0)
            w->dlv_to = to[i];
        else if (to[i] != w->dlv_to)
            w->dlv_mixed = 1;
    }
    migrate_note(w, &f->s);
}

static void test_fanin_wanted(void **state)
{
    (void)state;
    fake_t *f = fake(2, 0);
    const uint16_t one = 1;
    for (int i = 0; i < MIGRATE_WINDOW - 1; i++)
        publish(f, 0, &one, 1);
    assert_int_equal(f->w.nmigs, 0);
    publish(f, 0, &one, 1);
    assert_int_equal(f->w.nmigs, 1);
    assert_int_equal(f->w.migs_cap >= 1, 1);
    assert_int_equal(f->s.mig_n, 0); /* a new window */
    /* messages without deliveries do not count */
    f->w.nmigs = 0;
    for (int i = 0; i < 3 * MIGRATE_WINDOW; i++)
        publish(f, 0, NULL, 0);
    assert_int_equal(f->s.mig_n, 0);
    assert_int_equal(f->w.nmigs, 0);
    fake_free(f);
}

static void test_spread_or_local_stays(void **state)
{
    (void)state;
    fake_t *f = fake(3, 0);
    const uint16_t one = 1, two = 2, both[2] = {1, 2};
    /* half to 1, half to 2: neither has 90 % */
    for (int i = 0; i < 4 * MIGRATE_WINDOW; i++)
        publish(f, 0, i % 2 ? &one : &two, 1);
    assert_int_equal(f->w.nmigs, 0);
    /* each message to both others: wholly to none */
    for (int i = 0; i < 4 * MIGRATE_WINDOW; i++)
        publish(f, 0, both, 2);
    assert_int_equal(f->w.nmigs, 0);
    /* a local delivery beside the remote one: not wholly there */
    for (int i = 0; i < 4 * MIGRATE_WINDOW; i++)
        publish(f, 1, &one, 1);
    assert_int_equal(f->w.nmigs, 0);
    /* 20 local of 256: 92 % -> wanted */
    for (int i = 0; i < MIGRATE_WINDOW; i++)
        publish(f, i < 20, i < 20 ? NULL : &two, i < 20 ? 0 : 1);
    assert_int_equal(f->w.nmigs, 1);
    assert_int_equal(f->w.migs_cap >= 1, 1);
    fake_free(f);
}

static void test_subscriber_and_hold(void **state)
{
    (void)state;
    fake_t *f = fake(2, 1);
    const uint16_t zero = 0;
    f->s.nsubs = 1; /* a subscriber never moves: its partner follows it */
    for (int i = 0; i < 4 * MIGRATE_WINDOW; i++)
        publish(f, 0, &zero, 1);
    assert_int_equal(f->w.nmigs, 0);
    f->s.nsubs = 0;
    f->s.mig_hold = MIGRATE_HOLD; /* just moved */
    for (int i = 0; i < MIGRATE_HOLD * MIGRATE_WINDOW; i++)
        publish(f, 0, &zero, 1);
    assert_int_equal(f->w.nmigs, 0);
    assert_int_equal(f->s.mig_hold, 0);
    for (int i = 0; i < MIGRATE_WINDOW; i++)
        publish(f, 0, &zero, 1);
    assert_int_equal(f->w.nmigs, 1);
    /* off: counted, never wanted */
    f->w.nmigs = 0;
    f->w.mig_on = 0;
    for (int i = 0; i < 2 * MIGRATE_WINDOW; i++)
        publish(f, 0, &zero, 1);
    assert_int_equal(f->w.nmigs, 0);
    fake_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decide),
        cmocka_unit_test(test_fanin_wanted),
        cmocka_unit_test(test_spread_or_local_stays),
        cmocka_unit_test(test_subscriber_and_hold),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
