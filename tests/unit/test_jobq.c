/* test_jobq.c -- the bounded job queue (src/core/jobq.h): the bound covers
 * queued and in-flight jobs, FIFO order (external consumer and a one-thread
 * pool), an early slot release, shutdown with jobs pending (cancel: queued
 * jobs dropped, the running one finishes; drain: every job runs), pushes
 * after close, and many producers against a pool (nothing lost, nothing
 * run twice, per-producer order kept by one consumer, the bound never
 * exceeded).  Every wait is bounded by a deadline.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jobq.h"
#include "util.h"

typedef struct {
    jobq_link_t link;
    uint32_t producer;
    uint32_t seq;
} job_t;

static job_t *job_of(jobq_link_t *l)
{
    return container_of(l, job_t, link);
}

/* What the callbacks saw, under a mutex; the gate holds run() back. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int gate_open;
    uint32_t running; /* run() calls waiting at the gate */
    uint32_t ran, dropped;
    uint32_t order[4096]; /* seq of each run, in run order */
    int release_early;
    jobq_t *q; /* for the bound check inside run() */
    int free_jobs;
} rec_t;

static void rec_init(rec_t *r)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cond, NULL);
    r->gate_open = 1;
}

static void rec_destroy(rec_t *r)
{
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->mu);
}

static void deadline_in(struct timespec *ts, unsigned ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void rec_run(void *arg, jobq_link_t *l, jobq_slot_t *slot)
{
    rec_t *r = arg;
    job_t *j = job_of(l);
    assert_true(jobq_slot_thread(slot) < 64);
    if (r->release_early)
        jobq_slot_release(slot);
    pthread_mutex_lock(&r->mu);
    r->running++;
    pthread_cond_broadcast(&r->cond);
    struct timespec ts;
    deadline_in(&ts, 10000);
    while (!r->gate_open && pthread_cond_timedwait(&r->cond, &r->mu, &ts) == 0)
        ;
    r->running--;
    if (r->ran < 4096)
        r->order[r->ran] = j->seq;
    r->ran++;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->mu);
    if (r->free_jobs)
        free(j);
}

static void rec_drop(void *arg, jobq_link_t *l)
{
    rec_t *r = arg;
    pthread_mutex_lock(&r->mu);
    r->dropped++;
    pthread_mutex_unlock(&r->mu);
    if (r->free_jobs)
        free(job_of(l));
}

/* Wait until *field >= n (under r->mu) or 10 s: the value seen. */
static uint32_t rec_wait(rec_t *r, const uint32_t *field, uint32_t n)
{
    struct timespec ts;
    deadline_in(&ts, 10000);
    pthread_mutex_lock(&r->mu);
    while (*field < n && pthread_cond_timedwait(&r->cond, &r->mu, &ts) == 0)
        ;
    uint32_t v = *field;
    pthread_mutex_unlock(&r->mu);
    return v;
}

static void gate(rec_t *r, int open)
{
    pthread_mutex_lock(&r->mu);
    r->gate_open = open;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->mu);
}

static void test_invalid_options(void **state)
{
    (void)state;
    jobq_opts_t o = {.cap = 0};
    assert_null(jobq_new(&o));
    o.cap = 1;
    o.threads = 2; /* a pool without run() */
    assert_null(jobq_new(&o));
}

/* External consumer: the bound counts jobs taken and not yet released. */
static void test_capacity(void **state)
{
    (void)state;
    jobq_opts_t o = {.cap = 3};
    jobq_t *q = jobq_new(&o);
    job_t j[5];
    assert_non_null(q);
    assert_int_equal(jobq_cap(q), 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(jobq_push(q, &j[i].link), JOBQ_OK);
    assert_int_equal(jobq_push(q, &j[3].link), JOBQ_FULL);

    assert_ptr_equal(jobq_pop_wait(q), &j[0].link);
    assert_int_equal(jobq_push(q, &j[3].link), JOBQ_FULL); /* in flight counts */
    jobq_release(q, 1);
    assert_int_equal(jobq_push(q, &j[3].link), JOBQ_OK);

    jobq_stats_t st;
    jobq_stats(q, &st);
    assert_int_equal(st.pushed, 4);
    assert_int_equal(st.full, 2);
    assert_int_equal(st.released, 1);
    assert_int_equal(st.queued, 3);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.high_water, 3);

    /* releasing more than was taken frees nothing queued */
    jobq_release(q, 10);
    assert_int_equal(jobq_push(q, &j[4].link), JOBQ_FULL);
    jobq_link_t *all = jobq_take_all(q);
    jobq_release(q, 3);
    assert_ptr_equal(all, &j[1].link);
    assert_int_equal(jobq_push(q, &j[4].link), JOBQ_OK);
    jobq_free(q); /* j[4] still queued: no drop() set, left alone */
}

static void test_order(void **state)
{
    (void)state;
    enum { N = 200 };
    job_t *j = calloc(N, sizeof(*j));
    jobq_opts_t o = {.cap = N};
    jobq_t *q = jobq_new(&o);
    for (uint32_t i = 0; i < N; i++) {
        j[i].seq = i;
        assert_int_equal(jobq_push(q, &j[i].link), JOBQ_OK);
    }
    /* pop_wait, then take_all: oldest first either way */
    for (uint32_t i = 0; i < 10; i++)
        assert_int_equal(job_of(jobq_pop_wait(q))->seq, i);
    uint32_t n = 10;
    for (jobq_link_t *l = jobq_take_all(q); l; l = l->next)
        assert_int_equal(job_of(l)->seq, n++);
    assert_int_equal(n, N);
    assert_null(jobq_take_all(q));
    jobq_free(q);

    /* a one-thread pool runs them in push order */
    rec_t r;
    rec_init(&r);
    gate(&r, 0);
    jobq_opts_t po = {.cap = N, .threads = 1, .run = rec_run, .drop = rec_drop, .arg = &r};
    q = jobq_new(&po);
    for (uint32_t i = 0; i < N; i++)
        assert_int_equal(jobq_push(q, &j[i].link), JOBQ_OK);
    gate(&r, 1);
    assert_int_equal(rec_wait(&r, &r.ran, N), N);
    for (uint32_t i = 0; i < N; i++)
        assert_int_equal(r.order[i], i);
    jobq_free(q);
    rec_destroy(&r);
    free(j);
}

/* run() may free its slot before it is done (before handing an answer on). */
static void test_slot_release_early(void **state)
{
    (void)state;
    rec_t r;
    rec_init(&r);
    r.release_early = 1;
    gate(&r, 0);
    jobq_opts_t o = {.cap = 1, .threads = 1, .run = rec_run, .drop = rec_drop, .arg = &r};
    jobq_t *q = jobq_new(&o);
    job_t a = {.seq = 1}, b = {.seq = 2}, c = {.seq = 3};
    assert_int_equal(jobq_push(q, &a.link), JOBQ_OK);
    assert_int_equal(rec_wait(&r, &r.running, 1), 1);
    /* a still runs, but released its slot */
    assert_int_equal(jobq_push(q, &b.link), JOBQ_OK);
    assert_int_equal(jobq_push(q, &c.link), JOBQ_FULL);
    gate(&r, 1);
    assert_int_equal(rec_wait(&r, &r.ran, 2), 2);
    jobq_free(q);
    rec_destroy(&r);

    /* without the early release the running job holds its slot */
    rec_init(&r);
    gate(&r, 0);
    o.arg = &r;
    q = jobq_new(&o);
    assert_int_equal(jobq_push(q, &a.link), JOBQ_OK);
    assert_int_equal(rec_wait(&r, &r.running, 1), 1);
    assert_int_equal(jobq_push(q, &b.link), JOBQ_FULL);
    gate(&r, 1);
    assert_int_equal(rec_wait(&r, &r.ran, 1), 1);
    /* released when run() returned: room again (bounded wait for it) */
    int rc = JOBQ_FULL;
    for (int i = 0; i < 10000 && rc == JOBQ_FULL; i++) {
        rc = jobq_push(q, &b.link);
        if (rc == JOBQ_FULL)
            sched_yield();
    }
    assert_int_equal(rc, JOBQ_OK);
    assert_int_equal(rec_wait(&r, &r.ran, 2), 2);
    jobq_free(q);
    rec_destroy(&r);
}

/* Cancel: the running job finishes, the queued ones go to drop() on the
 * closing thread, pushes are refused from then on. */
static void test_shutdown_cancel(void **state)
{
    (void)state;
    rec_t r;
    rec_init(&r);
    r.free_jobs = 1;
    gate(&r, 0);
    jobq_opts_t o = {.cap = 100, .threads = 1, .run = rec_run, .drop = rec_drop, .arg = &r};
    jobq_t *q = jobq_new(&o);
    for (uint32_t i = 0; i < 6; i++) {
        job_t *j = calloc(1, sizeof(*j));
        j->seq = i;
        assert_int_equal(jobq_push(q, &j->link), JOBQ_OK);
    }
    assert_int_equal(rec_wait(&r, &r.running, 1), 1);
    jobq_close(q, JOBQ_CANCEL);
    assert_int_equal(r.dropped, 5); /* on this thread, before close returned */
    job_t late = {.seq = 99};
    assert_int_equal(jobq_push(q, &late.link), JOBQ_CLOSED);
    gate(&r, 1);
    jobq_stats_t st;
    jobq_free(q);
    assert_int_equal(r.ran, 1);
    assert_int_equal(r.order[0], 0);
    assert_int_equal(r.dropped, 5);
    rec_destroy(&r);

    /* jobq_free on an open queue cancels too */
    rec_init(&r);
    r.free_jobs = 1;
    gate(&r, 0);
    o.arg = &r;
    q = jobq_new(&o);
    for (uint32_t i = 0; i < 4; i++) {
        job_t *j = calloc(1, sizeof(*j));
        assert_int_equal(jobq_push(q, &j->link), JOBQ_OK);
    }
    assert_int_equal(rec_wait(&r, &r.running, 1), 1);
    jobq_stats(q, &st);
    assert_int_equal(st.queued, 3);
    assert_int_equal(st.in_flight, 1);
    gate(&r, 1); /* the running one may finish before or after the close */
    jobq_free(q);
    assert_int_equal(r.ran + r.dropped, 4);
    assert_true(r.ran >= 1);
    rec_destroy(&r);
}

/* Drain: every queued job still runs, on the pool, before jobq_free()
 * returns; an external consumer gets them from pop_wait, then NULL. */
static void test_shutdown_drain(void **state)
{
    (void)state;
    rec_t r;
    rec_init(&r);
    r.free_jobs = 1;
    gate(&r, 0);
    jobq_opts_t o = {.cap = 100, .threads = 2, .run = rec_run, .drop = rec_drop, .arg = &r};
    jobq_t *q = jobq_new(&o);
    for (uint32_t i = 0; i < 10; i++) {
        job_t *j = calloc(1, sizeof(*j));
        assert_int_equal(jobq_push(q, &j->link), JOBQ_OK);
    }
    assert_int_equal(rec_wait(&r, &r.running, 2), 2);
    jobq_close(q, JOBQ_DRAIN);
    job_t late = {.seq = 99};
    assert_int_equal(jobq_push(q, &late.link), JOBQ_CLOSED);
    gate(&r, 1);
    jobq_free(q);
    assert_int_equal(r.ran, 10);
    assert_int_equal(r.dropped, 0);
    rec_destroy(&r);

    job_t j[3];
    jobq_opts_t eo = {.cap = 3};
    q = jobq_new(&eo);
    for (int i = 0; i < 3; i++)
        assert_int_equal(jobq_push(q, &j[i].link), JOBQ_OK);
    jobq_close(q, JOBQ_DRAIN);
    for (int i = 0; i < 3; i++)
        assert_ptr_equal(jobq_pop_wait(q), &j[i].link);
    assert_null(jobq_pop_wait(q)); /* closed and empty: does not block */
    jobq_free(q);
}

/* A consumer blocked in pop_wait is woken by close. */
static void *pop_thread(void *arg)
{
    return jobq_pop_wait(arg);
}

static void test_close_wakes_consumer(void **state)
{
    (void)state;
    jobq_opts_t o = {.cap = 1};
    jobq_t *q = jobq_new(&o);
    pthread_t t;
    void *got = (void *)1;
    assert_int_equal(pthread_create(&t, NULL, pop_thread, q), 0);
    struct timespec d = {.tv_sec = 0, .tv_nsec = 20 * 1000000L};
    nanosleep(&d, NULL); /* likely blocked by now; correct either way */
    jobq_close(q, JOBQ_CANCEL);
    pthread_join(t, &got);
    assert_null(got);
    jobq_free(q);
}

/* Many producers, a pool: every job runs exactly once, the bound holds.
 * With one consumer, each producer's jobs run in its push order. */
enum { PRODUCERS = 8, PER_PRODUCER = 5000 };

typedef struct {
    jobq_t *q;
    uint32_t id;
    job_t *jobs;
    uint32_t refused;
    int failed;
} producer_t;

typedef struct {
    pthread_mutex_t mu;
    uint32_t next[PRODUCERS]; /* next seq expected per producer (one consumer) */
    uint8_t *seen;            /* [producer * PER_PRODUCER + seq] */
    int out_of_order, twice;
    atomic_uint total;
    jobq_t *q;
    size_t cap;
} sink_t;

static void sink_run(void *arg, jobq_link_t *l, jobq_slot_t *slot)
{
    sink_t *s = arg;
    job_t *j = job_of(l);
    (void)slot;
    pthread_mutex_lock(&s->mu);
    size_t at = (size_t)j->producer * PER_PRODUCER + j->seq;
    if (s->seen[at])
        s->twice = 1;
    s->seen[at] = 1;
    if (j->seq != s->next[j->producer])
        s->out_of_order = 1;
    s->next[j->producer] = j->seq + 1;
    pthread_mutex_unlock(&s->mu);
    atomic_fetch_add(&s->total, 1);
}

static void *producer_main(void *arg)
{
    producer_t *p = arg;
    uint64_t give_up = an_now_ms() + 60000;
    for (uint32_t i = 0; i < PER_PRODUCER; i++) {
        p->jobs[i].producer = p->id;
        p->jobs[i].seq = i;
        int rc;
        while ((rc = jobq_push(p->q, &p->jobs[i].link)) == JOBQ_FULL) {
            p->refused++;
            if (an_now_ms() > give_up) {
                p->failed = 1;
                return NULL;
            }
            sched_yield();
        }
        if (rc != JOBQ_OK) {
            p->failed = 1;
            return NULL;
        }
    }
    return NULL;
}

static void many_producers(uint32_t consumers, size_t cap)
{
    sink_t s;
    memset(&s, 0, sizeof(s));
    pthread_mutex_init(&s.mu, NULL);
    s.seen = calloc(PRODUCERS * PER_PRODUCER, 1);
    jobq_opts_t o = {.cap = cap, .threads = consumers, .run = sink_run, .arg = &s};
    jobq_t *q = jobq_new(&o);
    assert_non_null(q);
    producer_t p[PRODUCERS];
    pthread_t t[PRODUCERS];
    for (uint32_t i = 0; i < PRODUCERS; i++) {
        p[i] = (producer_t){.q = q, .id = i, .jobs = calloc(PER_PRODUCER, sizeof(job_t))};
        assert_int_equal(pthread_create(&t[i], NULL, producer_main, &p[i]), 0);
    }
    for (uint32_t i = 0; i < PRODUCERS; i++) {
        pthread_join(t[i], NULL);
        assert_false(p[i].failed);
    }
    jobq_close(q, JOBQ_DRAIN);
    jobq_free(q); /* drains: every job has run when it returns */
    assert_int_equal(atomic_load(&s.total), PRODUCERS * PER_PRODUCER);
    assert_false(s.twice);
    if (consumers == 1)
        assert_false(s.out_of_order);
    for (uint32_t i = 0; i < PRODUCERS; i++)
        free(p[i].jobs);
    free(s.seen);
    pthread_mutex_destroy(&s.mu);
}

static void test_many_producers_one_consumer(void **state)
{
    (void)state;
    many_producers(1, 64);
}

static void test_many_producers_pool(void **state)
{
    (void)state;
    many_producers(4, 16);
}

/* The high-water mark never passes the bound, however hard it is pushed. */
static void test_bound_under_pressure(void **state)
{
    (void)state;
    sink_t s;
    memset(&s, 0, sizeof(s));
    pthread_mutex_init(&s.mu, NULL);
    s.seen = calloc(PRODUCERS * PER_PRODUCER, 1);
    jobq_opts_t o = {.cap = 5, .threads = 3, .run = sink_run, .arg = &s};
    jobq_t *q = jobq_new(&o);
    producer_t p[PRODUCERS];
    pthread_t t[PRODUCERS];
    for (uint32_t i = 0; i < PRODUCERS; i++) {
        p[i] = (producer_t){.q = q, .id = i, .jobs = calloc(PER_PRODUCER, sizeof(job_t))};
        assert_int_equal(pthread_create(&t[i], NULL, producer_main, &p[i]), 0);
    }
    uint64_t refused = 0;
    for (uint32_t i = 0; i < PRODUCERS; i++) {
        pthread_join(t[i], NULL);
        refused += p[i].refused;
    }
    jobq_stats_t st;
    jobq_stats(q, &st);
    assert_true(st.high_water <= 5);
    assert_int_equal(st.full, refused);
    assert_int_equal(st.pushed, PRODUCERS * PER_PRODUCER);
    /* up to 5 jobs may still be queued: run them (jobq_free alone would
     * cancel them) */
    jobq_close(q, JOBQ_DRAIN);
    jobq_free(q);
    assert_int_equal(atomic_load(&s.total), PRODUCERS * PER_PRODUCER);
    for (uint32_t i = 0; i < PRODUCERS; i++)
        free(p[i].jobs);
    free(s.seen);
    pthread_mutex_destroy(&s.mu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid_options),
        cmocka_unit_test(test_capacity),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_slot_release_early),
        cmocka_unit_test(test_shutdown_cancel),
        cmocka_unit_test(test_shutdown_drain),
        cmocka_unit_test(test_close_wakes_consumer),
        cmocka_unit_test(test_many_producers_one_consumer),
        cmocka_unit_test(test_many_producers_pool),
        cmocka_unit_test(test_bound_under_pressure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
