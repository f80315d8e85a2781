/* test_migrate.c -- the decision of migrate.h: when a publisher's session
 * is wanted on another worker.  migrate_decide (90 % of a window wholly to
 * one other worker, never to itself or a worker that does not exist), and
 * migrate_note + migrate_window on a worker and a session made by hand: a
 * fan-in publisher is wanted after one window, a spread or local one never,
 * a session with subscriptions never, a moved one only after MIGRATE_HOLD
 * windows, a message delivered to two other workers counts for none;
 * migrate_hand_on: an item for a session that moved after its sender read
 * the home goes on to the new home, one that is at its home (or a server
 * whose sessions never move) stays.  Consolidation: migrate_consol_decide
 * (votes below the threshold, hysteresis up to the upper one); a moved
 * subscriber's fence at the level of the items the workers exchange (the
 * old worker hands a straggler on marked DLV_HANDED, answers come after
 * what a worker matched before, DONE behind the stragglers; the new worker
 * holds a direct delivery, and a local match made before it took the
 * session ahead of it, lets a handed one through, and releases what it
 * held at DONE).  With three workers whose inboxes were never posted to
 * (no storage yet), every other worker gets one ASK of the same epoch.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inbox.h"
#include "migrate.h"
#include "msg.h"
#include "router.h"

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

/* An id whose hash home (home_key zero) is worker `want` of 2. */
static void id_homed(const server_t *srv, uint32_t want, char *buf, size_t cap)
{
    for (int i = 0; i < 1000; i++) {
        snprintf(buf, cap, "dev-%d", i);
        if (worker_home(srv, (const uint8_t *)buf, strlen(buf)) == want)
            return;
    }
    fail_msg("no id homed on worker %u", want);
}

static void test_hand_on(void **state)
{
    (void)state;
    server_t *srv = calloc(1, sizeof(*srv));
    worker_t *ws = calloc(2, sizeof(*ws));
    srv->nworkers = 2;
    srv->workers = ws;
    srv->conf.workers_migrate = 1;
    for (uint32_t i = 0; i < 2; i++) {
        ws[i].srv = srv;
        ws[i].id = i;
        assert_int_equal(inbox_init(&ws[i].inbox), 0);
    }
    inbox_item_t it = {.kind = WM_MIGRATE, .ptr = srv};
    char id[32];
    id_homed(srv, 0, id, sizeof(id));
    /* no table: sessions never move, the item stays */
    assert_int_equal(migrate_hand_on(&ws[1], id, strlen(id), &it), 0);
    assert_int_equal(migrate_init(srv), 0);
    assert_non_null(srv->homes);
    /* at its hash home: stays; elsewhere: handed to the hash home */
    assert_int_equal(migrate_hand_on(&ws[0], id, strlen(id), &it), 0);
    assert_int_equal(migrate_hand_on(&ws[1], id, strlen(id), &it), 1);
    inbox_vec_t got = {0};
    inbox_take(&ws[0].inbox, &got);
    assert_int_equal(got.len, 1);
    assert_int_equal(got.items[0].kind, WM_MIGRATE);
    assert_ptr_equal(got.items[0].ptr, srv);
    got.len = 0;
    /* the session moved to worker 1 (its home in the table): an item that
     * reached worker 0 follows it there */
    sess_t *s = calloc(1, sizeof(*s) + sizeof(id));
    s->w = &ws[1];
    s->client_id_len = (uint16_t)strlen(id);
    memcpy(s->client_id, id, strlen(id) + 1);
    migrate_home_claim(srv, s);
    assert_int_equal(worker_home(srv, (const uint8_t *)id, strlen(id)), 1);
    assert_int_equal(migrate_hand_on(&ws[1], id, strlen(id), &it), 0);
    assert_int_equal(migrate_hand_on(&ws[0], id, strlen(id), &it), 1);
    inbox_take(&ws[1].inbox, &got);
    assert_int_equal(got.len, 1);
    got.len = 0;
    inbox_take(&ws[0].inbox, &got);
    assert_int_equal(got.len, 0);
    /* it ended there: its id homes by hash again */
    migrate_home_drop(srv, s);
    assert_int_equal(migrate_hand_on(&ws[0], id, strlen(id), &it), 0);
    inbox_vec_free(&got);
    free(s);
    migrate_free(srv);
    for (uint32_t i = 0; i < 2; i++)
        inbox_destroy(&ws[i].inbox);
    free(ws);
    free(srv);
}

static void test_consol_decide(void **state)
{
    (void)state;
    uint8_t votes = 0;
    /* spread: MIGRATE_CONSOL_VOTES looks in a row under `below` */
    assert_int_equal(migrate_consol_decide(0, 10, 35, 85, &votes), 0);
    assert_int_equal(migrate_consol_decide(0, 50, 35, 85, &votes), 0); /* resets */
    assert_int_equal(votes, 0);
    assert_int_equal(migrate_consol_decide(0, 34, 35, 85, &votes), 0);
    assert_int_equal(migrate_consol_decide(0, 0, 35, 85, &votes), 1);
    /* consolidated: stays up to `above`, spreads past it */
    assert_int_equal(migrate_consol_decide(1, 85, 35, 85, &votes), 1);
    assert_int_equal(migrate_consol_decide(1, 60, 35, 85, &votes), 1);
    assert_int_equal(migrate_consol_decide(1, 86, 35, 85, &votes), 0);
    assert_int_equal(votes, 0);
    /* below 0: never consolidates again */
    for (int i = 0; i < 10; i++)
        assert_int_equal(migrate_consol_decide(0, 0, 0, 1, &votes), 0);
}

/* The outbox of `w` toward `to`: taken (moved into got). */
static void take_outbox(worker_t *w, uint32_t to, inbox_vec_t *got)
{
    got->len = 0;
    for (size_t i = 0; i < w->outbox[to].len; i++)
        inbox_vec_push(got, &w->outbox[to].items[i]);
    w->outbox[to].len = 0;
}

/* n workers with inboxes and outboxes (none posted to yet), for the fence */
static server_t *fence_server(uint32_t n)
{
    server_t *srv = calloc(1, sizeof(*srv));
    worker_t *ws = calloc(n, sizeof(*ws));
    srv->nworkers = n;
    srv->workers = ws;
    for (uint32_t i = 0; i < n; i++) {
        ws[i].srv = srv;
        ws[i].id = i;
        ws[i].now = 1000;
        ws[i].outbox = calloc(n, sizeof(*ws[i].outbox));
        assert_int_equal(inbox_init(&ws[i].inbox), 0);
    }
    return srv;
}

static void fence_server_free(server_t *srv)
{
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        worker_t *w = &srv->workers[i];
        migrate_worker_free(w);
        for (uint32_t j = 0; j < srv->nworkers; j++)
            inbox_vec_free(&w->outbox[j]);
        free(w->outbox);
        inbox_destroy(&w->inbox);
    }
    free(srv->workers);
    free(srv);
}

static void test_fence(void **state)
{
    (void)state;
    server_t *srv = fence_server(2);
    worker_t *ws = srv->workers;
    migrate_register_inbox(srv);
    const worker_inbox_kind_t *fk = &srv->inbox_kinds[WM_FENCE];
    worker_t *old = &ws[1], *neu = &ws[0];
    msg_t *before = msg_new((const uint8_t *)"t", 1, (const uint8_t *)"1", 1, 1, 0);
    msg_t *after = msg_new((const uint8_t *)"t", 1, (const uint8_t *)"2", 1, 1, 0);
    sess_t *s = calloc(1, sizeof(*s) + 8);
    s->sid = 42;
    s->w = neu;
    s->fenced = 1;

    /* the old worker: the fence, then one ASK posted to the new worker */
    migrate_fence_open(old, 42, 0);
    migrate_fence_ask(old);
    inbox_vec_t got = {0};
    inbox_take(&neu->inbox, &got);
    assert_int_equal(got.len, 1);
    inbox_item_t ask = got.items[0];
    assert_int_equal(ask.kind, WM_FENCE);
    assert_int_equal(ask.qos, MIGRATE_FENCE_ASK);
    assert_int_equal(ask.flags, 1);

    /* a delivery matched before the move reaches the old worker: handed on */
    migrate_hand_stray(old, 42, before, 1, DLV_RETAIN);
    migrate_hand_stray(old, 7, before, 1, 0); /* another sid: not ours */
    /* the new worker: a local match before it took the session waits
     * first (migrate_hold_early), then a direct one; a handed one goes now */
    migrate_hold_early(neu, 42, before, 1, 0);
    assert_int_equal(migrate_fence_hold(neu, s, after, 1, 0), 1);
    assert_int_equal(migrate_fence_hold(neu, s, before, 1, DLV_HANDED), 0);
    assert_int_equal(neu->fence_held.len, 2);
    assert_ptr_equal(neu->fence_held.items[0].ptr, before);
    assert_ptr_equal(neu->fence_held.items[1].ptr, after);

    /* the new worker answers the ASK behind what it matched before */
    inbox_item_t earlier = {.kind = WM_DELIVER, .sid = 42, .ptr = msg_ref(before)};
    worker_post(neu, 1, &earlier);
    fk->run(neu, &ask);
    take_outbox(neu, 1, &got);
    assert_int_equal(got.len, 2);
    assert_int_equal(got.items[0].kind, WM_DELIVER);
    assert_int_equal(got.items[1].kind, WM_FENCE);
    assert_int_equal(got.items[1].qos, MIGRATE_FENCE_ACK);
    msg_t *m = got.items[0].ptr;
    /* the old worker takes both in that order: the straggler is handed
     * on, then DONE follows it */
    migrate_hand_stray(old, 42, m, 1, 0);
    msg_unref(&m);
    inbox_item_t ack = got.items[1];
    fk->run(old, &ack);
    take_outbox(old, 0, &got);
    assert_int_equal(got.len, 3);
    assert_int_equal(got.items[0].kind, WM_DELIVER);
    assert_int_equal(got.items[0].flags, DLV_RETAIN | DLV_HANDED);
    assert_int_equal(got.items[1].kind, WM_DELIVER);
    assert_int_equal(got.items[1].flags, DLV_HANDED);
    assert_int_equal(got.items[2].kind, WM_FENCE);
    assert_int_equal(got.items[2].qos, MIGRATE_FENCE_DONE);
    assert_int_equal(got.items[2].sid, 42);
    for (int i = 0; i < 2; i++) {
        m = got.items[i].ptr;
        msg_unref(&m);
    }
    /* a second ACK of the same epoch changes nothing: DONE once */
    fk->run(old, &ack);
    assert_int_equal(old->outbox[0].len, 0);
    /* DONE on the new worker (the session is not in its tables here: what
     * waited is released, not delivered) */
    inbox_item_t done = got.items[2];
    fk->run(neu, &done);
    assert_int_equal(neu->fence_held.len, 0);
    /* the fence outlives DONE by MIGRATE_FENCE_GRACE_MS for late stragglers */
    assert_int_equal(old->nfences, 1);

    inbox_vec_free(&got);
    msg_unref(&before);
    msg_unref(&after);
    free(s);
    fence_server_free(srv);
}

/* Three workers, inboxes never posted to: inbox_post swaps the batch's
 * storage for the inbox's (none), so the ASK must be pushed again for each
 * worker (it was reused by length once: a NULL read with 3 workers). */
static void test_fence_ask_three(void **state)
{
    (void)state;
    server_t *srv = fence_server(3);
    worker_t *ws = srv->workers;
    migrate_fence_open(&ws[2], 42, 0);
    migrate_fence_ask(&ws[2]);
    for (uint32_t i = 0; i < 3; i++) {
        inbox_vec_t got = {0};
        inbox_take(&ws[i].inbox, &got);
        if (i == 2) {
            assert_int_equal(got.len, 0); /* not to itself */
        } else {
            assert_int_equal(got.len, 1);
            assert_int_equal(got.items[0].kind, WM_FENCE);
            assert_int_equal(got.items[0].qos, MIGRATE_FENCE_ASK);
            assert_int_equal(got.items[0].flags, 2);
            assert_int_equal(got.items[0].sid, 1); /* the first epoch */
        }
        inbox_vec_free(&got);
    }
    fence_server_free(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decide),
        cmocka_unit_test(test_fanin_wanted),
        cmocka_unit_test(test_spread_or_local_stays),
        cmocka_unit_test(test_subscriber_and_hold),
        cmocka_unit_test(test_hand_on),
        cmocka_unit_test(test_consol_decide),
        cmocka_unit_test(test_fence),
        cmocka_unit_test(test_fence_ask_three),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
