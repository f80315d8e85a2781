/* test_tw.c -- the timer wheel: exact-ms firing around every level boundary,
 * order, callbacks that re-arm / delete (themselves and others, into the
 * past too), tw_next_timeout as a lower bound, big jumps, count, and a
 * randomized run of 100k+ timers (1 ms .. 30 days) checked against a
 * reference model: each timer fires exactly once, in the first tw_advance
 * whose now reaches its expiry, at its exact ms.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tw.h"

#define container_of(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Roughly log-uniform in [1, max]. */
static uint64_t rng_log(uint64_t *s, uint64_t max)
{
    int bits = 64 - __builtin_clzll(max);
    int b = (int)(rng_next(s) % (uint64_t)bits);
    uint64_t v = ((uint64_t)1 << b) + (rng_next(s) & (((uint64_t)1 << b) - 1));
    return v > max ? max : v;
}

#define DAY_MS (24ull * 3600 * 1000)
#define HOUR_MS (3600ull * 1000)

/* ---- a simple recording timer ---- */

typedef struct {
    tw_timer_t t;
    tw_t *w;
    int fired;
    uint64_t fired_at; /* w->now in the callback */
    int seq;           /* global firing order */
    int *counter;
} rec_t;

static void rec_cb(tw_timer_t *t)
{
    rec_t *r = container_of(t, rec_t, t);
    r->fired++;
    r->fired_at = r->w->now;
    if (r->counter)
        r->seq = (*r->counter)++;
}

static void rec_init(rec_t *r, tw_t *w, int *counter)
{
    memset(r, 0, sizeof(*r));
    tw_timer_init(&r->t, rec_cb);
    r->w = w;
    r->counter = counter;
}

/* ---- exact expiry around level boundaries ---- */

static void test_exact_ms(void **state)
{
    (void)state;
    static const uint64_t starts[] = {0,
                                      1,
                                      63,
                                      64,
                                      4095,
                                      4096,
                                      262143,
                                      1000000,
                                      ((uint64_t)1 << 36) - 1,
                                      (uint64_t)1 << 36,
                                      1732579200000ull,
                                      ((uint64_t)5 << 36) - 3};
    static const uint64_t offs[] = {1,
                                    2,
                                    63,
                                    64,
                                    65,
                                    127,
                                    128,
                                    4095,
                                    4096,
                                    4097,
                                    262143,
                                    262144,
                                    262145,
                                    ((uint64_t)1 << 24) - 1,
                                    (uint64_t)1 << 24,
                                    ((uint64_t)1 << 24) + 1,
                                    ((uint64_t)1 << 30) - 1,
                                    ((uint64_t)1 << 30) + 1,
                                    ((uint64_t)1 << 36) - 1,
                                    (uint64_t)1 << 36,
                                    ((uint64_t)1 << 36) + 1,
                                    ((uint64_t)1 << 40) + 12345};
    for (size_t i = 0; i < sizeof(starts) / sizeof(starts[0]); i++) {
        for (size_t j = 0; j < sizeof(offs) / sizeof(offs[0]); j++) {
            for (int mode = 0; mode < 3; mode++) {
                tw_t w;
                rec_t r;
                uint64_t s = starts[i], exp = s + offs[j];
                tw_init(&w, s);
                rec_init(&r, &w, NULL);
                tw_add(&w, &r.t, exp);
                assert_int_equal(w.count, 1);
                if (mode == 0) {
                    tw_advance(&w, exp - 1); /* one jump to just before */
                } else if (mode == 1) {
                    /* a few uneven steps */
                    uint64_t now = s;
                    while (now < exp - 1) {
                        uint64_t step = (exp - 1 - now) / 3 + 1;
                        now += step;
                        tw_advance(&w, now);
                        assert_int_equal(r.fired, 0);
                    }
                } else {
                    /* follow tw_next_timeout: it must never overshoot */
                    int wakeups = 0;
                    for (;;) {
                        int64_t nt = tw_next_timeout(&w);
                        assert_true(nt >= 0);
                        assert_true(w.now + (uint64_t)nt <= exp);
                        if (w.now + (uint64_t)nt == exp)
                            break;
                        tw_advance(&w, w.now + (uint64_t)nt);
                        assert_int_equal(r.fired, 0);
                        wakeups++;
                        /* a few per level, plus one per 2^36 ms beyond range */
                        assert_true(wakeups <= 2 * TW_LEVELS + 2 + (int)(offs[j] >> 36));
                    }
                    tw_advance(&w, exp - 1);
                }
                assert_int_equal(r.fired, 0);
                assert_true(tw_pending(&r.t));
                int64_t nt = tw_next_timeout(&w);
                assert_true(nt >= 0 && w.now + (uint64_t)nt <= exp);
                tw_advance(&w, exp);
                assert_int_equal(r.fired, 1);
                assert_int_equal(r.fired_at, exp);
                assert_false(tw_pending(&r.t));
                assert_int_equal(w.count, 0);
                assert_int_equal(tw_next_timeout(&w), -1);
            }
        }
    }
}

/* Step one ms at a time across a few expiries; each fires on its own ms. */
static void test_ms_steps(void **state)
{
    (void)state;
    tw_t w;
    rec_t r[300];
    tw_init(&w, 100);
    for (int i = 0; i < 300; i++) {
        rec_init(&r[i], &w, NULL);
        tw_add(&w, &r[i].t, 100 + 1 + (uint64_t)i * 17);
    }
    for (uint64_t now = 101; now <= 100 + 1 + 299 * 17; now++) {
        tw_advance(&w, now);
        for (int i = 0; i < 300; i++) {
            uint64_t exp = 100 + 1 + (uint64_t)i * 17;
            assert_int_equal(r[i].fired, exp <= now);
            if (r[i].fired)
                assert_int_equal(r[i].fired_at, exp);
        }
    }
    assert_int_equal(w.count, 0);
}

/* ---- order ---- */

static void test_order(void **state)
{
    (void)state;
    enum { N = 5000 };
    tw_t w;
    rec_t *r = calloc(N, sizeof(*r));
    uint64_t seed = 42;
    int counter = 0;
    assert_non_null(r);
    tw_init(&w, 777);
    for (int i = 0; i < N; i++) {
        rec_init(&r[i], &w, &counter);
        tw_add(&w, &r[i].t, 778 + rng_next(&seed) % (2 * HOUR_MS));
    }
    assert_int_equal(w.count, N);
    tw_advance(&w, 778 + 2 * HOUR_MS);
    assert_int_equal(counter, N);
    /* firing order sorted by expiry, each at its exact ms */
    uint64_t *by_seq = calloc(N, sizeof(*by_seq));
    assert_non_null(by_seq);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].fired, 1);
        assert_int_equal(r[i].fired_at, r[i].t.expires);
        by_seq[r[i].seq] = r[i].t.expires;
    }
    for (int i = 1; i < N; i++)
        assert_true(by_seq[i - 1] <= by_seq[i]);
    assert_int_equal(w.count, 0);
    free(by_seq);
    free(r);
}

/* ---- past expiries ---- */

static void test_past_fires_next_advance(void **state)
{
    (void)state;
    tw_t w;
    rec_t a, b, c;
    tw_init(&w, 5000);
    rec_init(&a, &w, NULL);
    rec_init(&b, &w, NULL);
    rec_init(&c, &w, NULL);
    tw_add(&w, &a.t, 10);   /* long past */
    tw_add(&w, &b.t, 5000); /* exactly now */
    tw_add(&w, &c.t, 5001);
    assert_int_equal(w.count, 3);
    assert_int_equal(tw_next_timeout(&w), 0);
    tw_advance(&w, 5000); /* time did not move: the due ones still fire */
    assert_int_equal(a.fired, 1);
    assert_int_equal(b.fired, 1);
    assert_int_equal(c.fired, 0);
    assert_int_equal(w.count, 1);
    assert_int_equal(tw_next_timeout(&w), 1);
    /* a clock going backwards fires nothing new and moves nothing */
    tw_advance(&w, 4000);
    assert_int_equal(c.fired, 0);
    assert_int_equal(w.now, 5000);
    tw_advance(&w, 5001);
    assert_int_equal(c.fired, 1);
    assert_int_equal(w.count, 0);
}

/* ---- callbacks ---- */

typedef struct {
    tw_timer_t t;
    tw_t *w;
    int fired;
    int limit;
    uint64_t period;
    uint64_t last_now;
    int past;           /* re-arm into the past instead */
    tw_timer_t *victim; /* deleted by the callback */
    tw_timer_t *mover;  /* moved by the callback to now + 1000 */
} cbt_t;

static void cbt_cb(tw_timer_t *t)
{
    cbt_t *c = container_of(t, cbt_t, t);
    c->fired++;
    c->last_now = c->w->now;
    assert_true(t->expires <= c->w->now);
    if (c->victim)
        tw_del(c->w, c->victim);
    if (c->mover)
        tw_add(c->w, c->mover, c->w->now + 1000);
    tw_del(c->w, t); /* not pending: a no-op */
    if (c->fired < c->limit) {
        if (c->past)
            tw_add(c->w, t, c->w->now > 5 ? c->w->now - 5 : 0);
        else
            tw_add(c->w, t, t->expires + c->period);
    }
}

static void cbt_init(cbt_t *c, tw_t *w)
{
    memset(c, 0, sizeof(*c));
    tw_timer_init(&c->t, cbt_cb);
    c->w = w;
}

static void test_rearm_periodic(void **state)
{
    (void)state;
    tw_t w;
    cbt_t c;
    tw_init(&w, 1000);
    cbt_init(&c, &w);
    c.limit = 100;
    c.period = 10;
    tw_add(&w, &c.t, 1010);
    /* one advance covering all 100 periods fires all of them, in step */
    tw_advance(&w, 2000);
    assert_int_equal(c.fired, 100);
    assert_int_equal(c.last_now, 2000);
    assert_int_equal(w.count, 0);

    /* and stepping unevenly gives the same */
    tw_init(&w, 0);
    cbt_init(&c, &w);
    c.limit = 1000;
    c.period = 7;
    tw_add(&w, &c.t, 7);
    uint64_t now = 0, seed = 3;
    while (c.fired < 1000) {
        now += 1 + rng_next(&seed) % 40;
        tw_advance(&w, now);
        assert_int_equal(c.fired, (int)(now / 7 < 1000 ? now / 7 : 1000));
    }
}

static void test_rearm_past_in_callback(void **state)
{
    (void)state;
    tw_t w;
    cbt_t c;
    tw_init(&w, 100);
    cbt_init(&c, &w);
    c.limit = 4;
    c.past = 1;
    tw_add(&w, &c.t, 150);
    tw_advance(&w, 200);
    /* fired once; the re-arm into the past waits for the next advance */
    assert_int_equal(c.fired, 1);
    assert_int_equal(c.last_now, 150);
    assert_true(tw_pending(&c.t));
    assert_int_equal(w.count, 1);
    assert_int_equal(tw_next_timeout(&w), 0);
    tw_advance(&w, 200); /* same time: fires again, once */
    assert_int_equal(c.fired, 2);
    tw_advance(&w, 200);
    assert_int_equal(c.fired, 3);
    tw_advance(&w, 300);
    assert_int_equal(c.fired, 4);
    assert_false(tw_pending(&c.t));
    tw_advance(&w, 400);
    assert_int_equal(c.fired, 4);
    assert_int_equal(w.count, 0);
    assert_int_equal(tw_next_timeout(&w), -1);

    /* re-armed to the past while the advance still has ticks to go: it is
     * kept for the next call even though later timers fire in this one */
    rec_t later;
    tw_init(&w, 0);
    cbt_init(&c, &w);
    rec_init(&later, &w, NULL);
    c.limit = 2;
    c.past = 1;
    tw_add(&w, &c.t, 10);
    tw_add(&w, &later.t, 5000);
    tw_advance(&w, 10000);
    assert_int_equal(c.fired, 1);
    assert_int_equal(later.fired, 1);
    assert_true(tw_pending(&c.t));
    tw_advance(&w, 10000);
    assert_int_equal(c.fired, 2);
    assert_int_equal(w.count, 0);
}

static void test_delete_in_callback(void **state)
{
    (void)state;
    tw_t w;
    cbt_t a, b;
    rec_t c, d;
    tw_init(&w, 0);
    cbt_init(&a, &w);
    cbt_init(&b, &w);
    rec_init(&c, &w, NULL);
    rec_init(&d, &w, NULL);
    /* a and b share a slot; each would delete the other: one fires */
    a.victim = &b.t;
    b.victim = &a.t;
    tw_add(&w, &a.t, 70);
    tw_add(&w, &b.t, 70);
    /* the first to fire also moves d (due in this advance) away */
    a.mover = &d.t;
    b.mover = &d.t;
    tw_add(&w, &c.t, 90);
    tw_add(&w, &d.t, 80);
    assert_int_equal(w.count, 4);
    tw_advance(&w, 60);
    assert_int_equal(a.fired + b.fired, 0);
    tw_advance(&w, 100);
    assert_int_equal(a.fired + b.fired, 1);
    assert_int_equal(d.fired, 0);
    assert_true(tw_pending(&d.t));
    assert_int_equal(d.t.expires, 1070);
    assert_int_equal(c.fired, 1);
    assert_int_equal(w.count, 1);
    tw_advance(&w, 1070);
    assert_int_equal(d.fired, 1);
    assert_int_equal(w.count, 0);

    /* delete a later timer due in the same advance */
    tw_init(&w, 0);
    cbt_init(&a, &w);
    rec_init(&c, &w, NULL);
    a.victim = &c.t;
    tw_add(&w, &a.t, 5);
    tw_add(&w, &c.t, 100000);
    tw_advance(&w, 200000);
    assert_int_equal(a.fired, 1);
    assert_int_equal(c.fired, 0);
    assert_int_equal(w.count, 0);
}

/* ---- tw_add moves, tw_del, count ---- */

static void test_count_move_del(void **state)
{
    (void)state;
    tw_t w;
    rec_t r[10];
    tw_init(&w, 0);
    assert_int_equal(tw_next_timeout(&w), -1);
    for (int i = 0; i < 10; i++) {
        rec_init(&r[i], &w, NULL);
        assert_false(tw_pending(&r[i].t));
        tw_add(&w, &r[i].t, 1000 + (uint64_t)i);
    }
    assert_int_equal(w.count, 10);
    int64_t nt0 = tw_next_timeout(&w);
    assert_true(nt0 >= 1 && nt0 <= 1000);
    for (int i = 0; i < 10; i++)
        tw_add(&w, &r[i].t, 5000000 + (uint64_t)i); /* move: count stays */
    assert_int_equal(w.count, 10);
    tw_del(&w, &r[0].t);
    tw_del(&w, &r[1].t);
    tw_del(&w, &r[1].t); /* no-op */
    assert_int_equal(w.count, 8);
    assert_false(tw_pending(&r[1].t));
    tw_advance(&w, 2000); /* the old expiries no longer fire */
    for (int i = 0; i < 10; i++)
        assert_int_equal(r[i].fired, 0);
    int64_t nt = tw_next_timeout(&w);
    assert_true(nt >= 0 && 2000 + (uint64_t)nt <= 5000002);
    tw_add(&w, &r[5].t, 3000); /* move earlier */
    tw_advance(&w, 3000);
    assert_int_equal(r[5].fired, 1);
    assert_int_equal(w.count, 7);
    tw_advance(&w, 5000005); /* r2..r4 */
    assert_int_equal(w.count, 4);
    tw_advance(&w, 5000009);
    assert_int_equal(w.count, 0);
    for (int i = 2; i < 10; i++)
        assert_int_equal(r[i].fired, 1);
    assert_int_equal(r[0].fired + r[1].fired, 0);
}

/* ---- big jumps ---- */

static void test_big_jumps(void **state)
{
    (void)state;
    tw_t w;
    rec_t a, b, c;
    int counter = 0;
    tw_init(&w, 1732579200000ull);
    uint64_t t0 = w.now;
    /* empty wheel: jumps of 10 hours and of 10 years are one step */
    tw_advance(&w, t0 + 10 * HOUR_MS);
    tw_advance(&w, t0 + 3650 * DAY_MS);
    assert_int_equal(w.now, t0 + 3650 * DAY_MS);
    t0 = w.now;
    rec_init(&a, &w, &counter);
    rec_init(&b, &w, &counter);
    rec_init(&c, &w, &counter);
    tw_add(&w, &a.t, t0 + 10 * HOUR_MS);
    tw_add(&w, &b.t, t0 + 900 * DAY_MS); /* beyond the 2^36 ms range */
    tw_add(&w, &c.t, t0 + 10 * HOUR_MS + 1);
    tw_advance(&w, t0 + 10 * HOUR_MS);
    assert_int_equal(a.fired, 1);
    assert_int_equal(a.fired_at, t0 + 10 * HOUR_MS);
    assert_int_equal(c.fired, 0);
    tw_advance(&w, t0 + 899 * DAY_MS);
    assert_int_equal(c.fired, 1);
    assert_int_equal(c.fired_at, t0 + 10 * HOUR_MS + 1);
    assert_int_equal(b.fired, 0);
    tw_advance(&w, t0 + 900 * DAY_MS - 1);
    assert_int_equal(b.fired, 0);
    tw_advance(&w, t0 + 5000 * DAY_MS);
    assert_int_equal(b.fired, 1);
    assert_int_equal(b.fired_at, t0 + 900 * DAY_MS);

    /* 10k timers over 10 hours, one advance, in order */
    enum { N = 10000 };
    rec_t *r = calloc(N, sizeof(*r));
    uint64_t seed = 7;
    assert_non_null(r);
    counter = 0;
    t0 = w.now;
    for (int i = 0; i < N; i++) {
        rec_init(&r[i], &w, &counter);
        tw_add(&w, &r[i].t, t0 + 1 + rng_next(&seed) % (10 * HOUR_MS));
    }
    tw_advance(&w, t0 + 10 * HOUR_MS);
    assert_int_equal(counter, N);
    assert_int_equal(w.count, 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(r[i].fired_at, r[i].t.expires);
    free(r);

    /* a timer far out: tw_next_timeout reaches it in a handful of wakeups */
    rec_init(&a, &w, NULL);
    t0 = w.now;
    tw_add(&w, &a.t, t0 + 29 * DAY_MS + 12345);
    int wakeups = 0;
    while (!a.fired) {
        int64_t nt = tw_next_timeout(&w);
        assert_true(nt >= 0);
        assert_true(w.now + (uint64_t)nt <= a.t.expires);
        tw_advance(&w, w.now + (uint64_t)nt);
        wakeups++;
    }
    assert_true(wakeups <= TW_LEVELS + 1);
    assert_int_equal(a.fired_at, t0 + 29 * DAY_MS + 12345);
}

/* ---- randomized run against a reference model ---- */

typedef struct rctx_s rctx_t;

typedef struct {
    tw_timer_t t;
    rctx_t *ctx;
    uint64_t exp;       /* reference expiry */
    uint64_t armed_seq; /* advances started when armed */
    uint32_t gen;
    uint8_t pending;
    uint8_t exact; /* armed for after the wheel's now: fires at exp */
    uint32_t fired;
} rtimer_t;

typedef struct {
    uint64_t exp;
    uint32_t idx, gen;
} hent_t;

struct rctx_s {
    tw_t w;
    rtimer_t *tm;
    size_t n, npending;
    uint64_t seq; /* tw_advance calls started */
    uint64_t target, prev_target;
    uint64_t seed;
    hent_t *heap;
    size_t hn, hcap;
    size_t fired_total, cb_ops;
};

static void heap_push(rctx_t *c, uint64_t exp, uint32_t idx, uint32_t gen)
{
    if (c->hn == c->hcap) {
        c->hcap = c->hcap ? c->hcap * 2 : 1024;
        c->heap = realloc(c->heap, c->hcap * sizeof(*c->heap));
        assert_non_null(c->heap);
    }
    size_t i = c->hn++;
    hent_t e = {exp, idx, gen};
    while (i > 0 && c->heap[(i - 1) / 2].exp > exp) {
        c->heap[i] = c->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    c->heap[i] = e;
}

static void heap_pop(rctx_t *c)
{
    hent_t e = c->heap[--c->hn];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l >= c->hn)
            break;
        m = (l + 1 < c->hn && c->heap[l + 1].exp < c->heap[l].exp) ? l + 1 : l;
        if (c->heap[m].exp >= e.exp)
            break;
        c->heap[i] = c->heap[m];
        i = m;
    }
    if (c->hn)
        c->heap[i] = e;
}

/* Earliest pending reference expiry, or UINT64_MAX. */
static uint64_t ref_min(rctx_t *c)
{
    while (c->hn) {
        hent_t *e = &c->heap[0];
        rtimer_t *r = &c->tm[e->idx];
        if (r->pending && r->gen == e->gen)
            return e->exp;
        heap_pop(c);
    }
    return UINT64_MAX;
}

static void ref_arm(rctx_t *c, rtimer_t *r, uint64_t exp)
{
    if (!r->pending)
        c->npending++;
    r->pending = 1;
    r->gen++;
    r->exp = exp;
    r->armed_seq = c->seq;
    r->exact = exp > c->w.now;
    heap_push(c, exp, (uint32_t)(r - c->tm), r->gen);
    tw_add(&c->w, &r->t, exp);
}

static void ref_del(rctx_t *c, rtimer_t *r)
{
    if (r->pending)
        c->npending--;
    r->pending = 0;
    r->gen++;
    tw_del(&c->w, &r->t);
}

static void rt_cb(tw_timer_t *t)
{
    rtimer_t *r = container_of(t, rtimer_t, t);
    rctx_t *c = r->ctx;
    assert_true(r->pending);
    assert_int_equal(t->expires, r->exp);
    assert_true(r->exp <= c->target);
    assert_true(r->exp <= c->w.now); /* never early */
    if (r->exact)
        assert_int_equal(c->w.now, r->exp); /* at its exact ms */
    if (r->armed_seq + 1 < c->seq)
        assert_true(r->exp > c->prev_target); /* not late */
    if (r->armed_seq == c->seq)
        assert_true(r->exact); /* armed into the past by a callback: not now */
    assert_false(tw_pending(t));
    r->pending = 0;
    r->gen++;
    r->fired++;
    c->npending--;
    c->fired_total++;

    /* sometimes act on the wheel from inside the callback */
    uint64_t x = rng_next(&c->seed) % 16;
    if (x == 0) {
        /* re-arm self for after this advance's target */
        ref_arm(c, r, c->target + rng_log(&c->seed, 30 * DAY_MS));
        c->cb_ops++;
    } else if (x == 1) {
        /* delete another timer, possibly one due in this same advance */
        rtimer_t *o = &c->tm[rng_next(&c->seed) % c->n];
        ref_del(c, o);
        c->cb_ops++;
    } else if (x == 3) {
        /* re-arm self into the past: fires in the next advance only */
        ref_arm(c, r, c->w.now - rng_next(&c->seed) % 50);
        c->cb_ops++;
    } else if (x == 4) {
        /* re-arm self a little later, maybe still within this advance */
        ref_arm(c, r, c->w.now + 1 + rng_next(&c->seed) % 100);
        c->cb_ops++;
    } else if (x == 2) {
        /* move another timer to after this advance's target */
        rtimer_t *o = &c->tm[rng_next(&c->seed) % c->n];
        if (o != r) {
            ref_arm(c, o, c->target + rng_log(&c->seed, 10 * DAY_MS));
            c->cb_ops++;
        }
    }
}

static void check_after_advance(rctx_t *c)
{
    hent_t *keep = NULL;
    size_t nkeep = 0, kcap = 0;
    uint64_t m, due = UINT64_MAX;
    assert_int_equal(c->w.count, c->npending);
    assert_int_equal(c->w.now, c->target);
    /* everything due has fired, except what callbacks armed into the past */
    while ((m = ref_min(c)) <= c->target) {
        rtimer_t *r = &c->tm[c->heap[0].idx];
        assert_true(r->armed_seq == c->seq && !r->exact);
        if (nkeep == kcap) {
            kcap = kcap ? 2 * kcap : 64;
            keep = realloc(keep, kcap * sizeof(*keep));
            assert_non_null(keep);
        }
        keep[nkeep++] = c->heap[0];
        due = 0;
        heap_pop(c);
    }
    for (size_t i = 0; i < nkeep; i++)
        heap_push(c, keep[i].exp, keep[i].idx, keep[i].gen);
    free(keep);
    if (due == 0)
        m = 0;
    int64_t nt = tw_next_timeout(&c->w);
    if (m == UINT64_MAX) {
        assert_int_equal(nt, -1);
    } else {
        assert_true(nt >= 0);
        if (m == 0)
            assert_int_equal(nt, 0);
        else
            assert_true(c->w.now + (uint64_t)nt <= m); /* never later */
    }
}

static void do_advance(rctx_t *c, uint64_t now)
{
    c->prev_target = c->target;
    c->target = now;
    c->seq++;
    tw_advance(&c->w, now);
    check_after_advance(c);
}

static void random_run(uint64_t seed)
{
    enum { N = 100000 };
    rctx_t *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->seed = seed;
    c->n = N + 20000;
    c->tm = calloc(c->n, sizeof(*c->tm));
    assert_non_null(c->tm);
    uint64_t start = 1732579200123ull + rng_next(&c->seed) % DAY_MS;
    tw_init(&c->w, start);
    c->target = start;
    for (size_t i = 0; i < c->n; i++) {
        tw_timer_init(&c->tm[i].t, rt_cb);
        c->tm[i].ctx = c;
    }
    /* 100k timers from 1 ms to 30 days */
    for (size_t i = 0; i < N; i++)
        ref_arm(c, &c->tm[i], start + rng_log(&c->seed, 30 * DAY_MS));
    assert_int_equal(c->w.count, N);

    size_t steps = 0;
    uint64_t now = start;
    while (now < start + 31 * DAY_MS) {
        /* a few operations between advances */
        int ops = (int)(rng_next(&c->seed) % 24);
        for (int k = 0; k < ops; k++) {
            rtimer_t *r = &c->tm[rng_next(&c->seed) % c->n];
            uint64_t x = rng_next(&c->seed) % 10;
            if (x < 6)
                ref_arm(c, r, now + rng_log(&c->seed, 30 * DAY_MS));
            else if (x < 7)
                ref_arm(c, r, now - rng_next(&c->seed) % 100); /* past or now */
            else if (x < 8)
                ref_arm(c, r, now + 1 + rng_next(&c->seed) % 200); /* near */
            else
                ref_del(c, r);
        }
        /* steps grow with the elapsed time: fine at first, coarse later */
        uint64_t elapsed = now - start;
        now += rng_log(&c->seed, elapsed / 16 + 64);
        do_advance(c, now);
        steps++;
        /* sometimes advance again without time passing */
        if (rng_next(&c->seed) % 16 == 0)
            do_advance(c, now);
    }
    /* drain */
    while (c->npending) {
        now += 10 * DAY_MS;
        do_advance(c, now);
        steps++;
    }
    assert_int_equal(c->w.count, 0);
    assert_int_equal(tw_next_timeout(&c->w), -1);
    size_t fired = 0;
    for (size_t i = 0; i < c->n; i++)
        fired += c->tm[i].fired;
    assert_int_equal(fired, c->fired_total);
    assert_true(c->fired_total >= N / 2);
    assert_true(c->cb_ops > 100);
    print_message("random: %zu steps, %zu firings, %zu callback ops\n", steps, c->fired_total,
                  c->cb_ops);
    free(c->heap);
    free(c->tm);
    free(c);
}

static void test_random_vs_reference(void **state)
{
    (void)state;
    random_run(0x5eed);
    random_run(2);
    random_run(0xdeadbeef);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_ms),
        cmocka_unit_test(test_ms_steps),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_past_fires_next_advance),
        cmocka_unit_test(test_rearm_periodic),
        cmocka_unit_test(test_rearm_past_in_callback),
        cmocka_unit_test(test_delete_in_callback),
        cmocka_unit_test(test_count_move_del),
        cmocka_unit_test(test_big_jumps),
        cmocka_unit_test(test_random_vs_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
