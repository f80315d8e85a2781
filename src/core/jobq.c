/* jobq.c -- the bounded job queue and its thread pool; see jobq.h.
 *
 * One mutex guards the list, the counts and the counters; one condition
 * variable wakes consumers (signalled on push, broadcast on close).  `len`
 * is what the bound applies to: jobs accepted and not yet released, so it
 * is decremented by the release, never by the pop.  drop() and run() are
 * always called without the mutex held: they may push again.
 */
#include "jobq.h"

#include "util.h"

#include <pthread.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

struct jobq_slot {
    jobq_t *q;
    uint32_t thread;
    int released; /* the current job's slot is free already */
    int started;
    pthread_t tid;
};

struct jobq {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    jobq_link_t *head, *tail;
    size_t queued; /* in the list */
    size_t len;    /* accepted and not yet released */
    int closed;
    int drain; /* closed with JOBQ_DRAIN */
    jobq_opts_t o;
    jobq_slot_t *slots;
    jobq_stats_t st; /* queued, in_flight filled by jobq_stats() */
};

static void *pool_main(void *arg)
{
    jobq_slot_t *s = arg;
    jobq_t *q = s->q;
    jobq_link_t *j;

    if (q->o.nice)
        setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), q->o.nice);
    while ((j = jobq_pop_wait(q)) != NULL) {
        s->released = 0;
        q->o.run(q->o.arg, j, s);
        jobq_slot_release(s);
    }
    return NULL;
}

jobq_t *jobq_new(const jobq_opts_t *opts)
{
    if (opts->cap == 0 || (opts->threads && opts->run == NULL))
        return NULL;
    jobq_t *q = an_calloc(1, sizeof(*q));
    q->o = *opts;
    if (pthread_mutex_init(&q->mu, NULL) != 0)
        goto fail_mutex;
    if (pthread_cond_init(&q->cond, NULL) != 0)
        goto fail_cond;
    if (opts->threads)
        q->slots = an_calloc(opts->threads, sizeof(*q->slots));
    for (uint32_t i = 0; i < opts->threads; i++) {
        jobq_slot_t *s = &q->slots[i];
        s->q = q;
        s->thread = i;
        if (pthread_create(&s->tid, NULL, pool_main, s) != 0) {
            jobq_free(q); /* joins the threads already started */
            return NULL;
        }
        s->started = 1;
    }
    return q;
fail_cond:
    pthread_mutex_destroy(&q->mu);
fail_mutex:
    free(q);
    return NULL;
}

void jobq_free(jobq_t *q)
{
    if (q == NULL)
        return;
    jobq_close(q, JOBQ_CANCEL); /* does nothing when closed already */
    for (uint32_t i = 0; i < q->o.threads; i++)
        if (q->slots[i].started)
            pthread_join(q->slots[i].tid, NULL);
    /* a JOBQ_DRAIN close with no pool: what the consumer left */
    jobq_link_t *j = q->head;
    q->head = q->tail = NULL;
    while (j) {
        jobq_link_t *next = j->next;
        if (q->o.drop)
            q->o.drop(q->o.arg, j);
        j = next;
    }
    pthread_cond_destroy(&q->cond);
    pthread_mutex_destroy(&q->mu);
    free(q->slots);
    free(q);
}

int jobq_push(jobq_t *q, jobq_link_t *job)
{
    int rc;
    pthread_mutex_lock(&q->mu);
    if (q->closed) {
        q->st.closed++;
        rc = JOBQ_CLOSED;
    } else if (q->len >= q->o.cap) {
        q->st.full++;
        rc = JOBQ_FULL;
    } else {
        job->next = NULL;
        if (q->tail)
            q->tail->next = job;
        else
            q->head = job;
        q->tail = job;
        q->queued++;
        q->len++;
        q->st.pushed++;
        if (q->len > q->st.high_water)
            q->st.high_water = q->len;
        pthread_cond_signal(&q->cond);
        rc = JOBQ_OK;
    }
    pthread_mutex_unlock(&q->mu);
    return rc;
}

void jobq_close(jobq_t *q, enum jobq_close_mode mode)
{
    jobq_link_t *cancel = NULL;
    pthread_mutex_lock(&q->mu);
    if (!q->closed) {
        q->closed = 1;
        q->drain = mode == JOBQ_DRAIN;
        if (!q->drain) {
            cancel = q->head;
            q->head = q->tail = NULL;
            q->len -= q->queued;
            q->st.cancelled += q->queued;
            q->queued = 0;
        }
        pthread_cond_broadcast(&q->cond);
    }
    pthread_mutex_unlock(&q->mu);
    while (cancel) {
        jobq_link_t *next = cancel->next;
        if (q->o.drop)
            q->o.drop(q->o.arg, cancel);
        cancel = next;
    }
}

jobq_link_t *jobq_take_all(jobq_t *q)
{
    pthread_mutex_lock(&q->mu);
    jobq_link_t *list = q->head;
    q->head = q->tail = NULL;
    q->queued = 0;
    pthread_mutex_unlock(&q->mu);
    return list;
}

jobq_link_t *jobq_pop_wait(jobq_t *q)
{
    jobq_link_t *j = NULL;
    pthread_mutex_lock(&q->mu);
    while (!q->closed && q->head == NULL)
        pthread_cond_wait(&q->cond, &q->mu);
    if (q->head && (!q->closed || q->drain)) {
        j = q->head;
        q->head = j->next;
        if (q->head == NULL)
            q->tail = NULL;
        q->queued--;
        j->next = NULL;
    }
    pthread_mutex_unlock(&q->mu);
    return j;
}

void jobq_release(jobq_t *q, size_t n)
{
    pthread_mutex_lock(&q->mu);
    size_t taken = q->len - q->queued; /* never release queued jobs */
    if (n > taken)
        n = taken;
    q->len -= n;
    q->st.released += n;
    pthread_mutex_unlock(&q->mu);
}

void jobq_slot_release(jobq_slot_t *slot)
{
    if (slot->released)
        return;
    slot->released = 1;
    jobq_release(slot->q, 1);
}

uint32_t jobq_slot_thread(const jobq_slot_t *slot)
{
    return slot->thread;
}

size_t jobq_cap(const jobq_t *q)
{
    return q->o.cap;
}

void jobq_stats(jobq_t *q, jobq_stats_t *out)
{
    pthread_mutex_lock(&q->mu);
    *out = q->st;
    out->queued = q->queued;
    out->in_flight = q->len - q->queued;
    pthread_mutex_unlock(&q->mu);
}
