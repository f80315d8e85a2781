/* jobq.h -- a bounded queue of opaque jobs, consumed by a pool of threads
 * it owns or by one thread of the caller's (an I/O loop).
 *
 * Jobs are intrusive: the caller embeds a jobq_link_t in its own struct and
 * gets it back with container_of(), so a push never allocates and never
 * fails for want of memory.  The queue only orders and bounds them; what a
 * job is and how it is freed is the caller's.
 *
 * The bound covers every job accepted and not yet released, queued and in
 * flight alike: with capacity 1 and one job being run, the next push is
 * refused.  A full (or closed) queue refuses the push at once and the job
 * stays the caller's, so a stalled consumer can never make a producer wait
 * or memory grow without limit.  A job is released:
 *   - pool mode (threads > 0): when run() returns, or earlier when run()
 *     calls jobq_slot_release() (before it hands an answer on, so whoever
 *     receives the answer may push again at once);
 *   - external mode (threads == 0): when the consumer calls jobq_release().
 *
 * Shutdown: jobq_close(JOBQ_DRAIN) refuses new jobs and lets the consumers
 * finish every queued one; jobq_close(JOBQ_CANCEL) refuses new jobs and
 * hands the queued ones to opts.drop() at once (on the closing thread), so
 * only the jobs already running finish.  jobq_free() cancels if the queue
 * is still open, then joins the pool threads.
 *
 * Threads: any number of producers and consumers (a mutex and a condition
 * variable; the critical sections are a few pointer moves).  A job is
 * touched by one thread at a time: its producer until the push, then the
 * consumer that took it.  Counters are kept under the same mutex.
 */
#ifndef ANTENNA_JOBQ_H
#define ANTENNA_JOBQ_H

#include <stddef.h>
#include <stdint.h>

typedef struct jobq_link {
    struct jobq_link *next;
} jobq_link_t;

typedef struct jobq jobq_t;

/* What a pool thread is running: handed to run(). */
typedef struct jobq_slot jobq_slot_t;

/* Run one job on a pool thread; the job is run()'s from now on (free it). */
typedef void (*jobq_run_fn)(void *arg, jobq_link_t *job, jobq_slot_t *slot);
/* A job that will never run (cancelled): free it.  NULL: jobs are left
 * alone (the caller owns them elsewhere). */
typedef void (*jobq_drop_fn)(void *arg, jobq_link_t *job);

typedef struct {
    size_t cap;       /* >= 1: jobs accepted and not yet released */
    uint32_t threads; /* pool threads; 0: an external consumer */
    jobq_run_fn run;  /* required with threads */
    jobq_drop_fn drop;
    void *arg; /* given to run() and drop() */
    int nice;  /* pool threads' nice value (setpriority); 0: unchanged */
} jobq_opts_t;

enum {
    JOBQ_OK = 0,
    JOBQ_FULL = -1,   /* cap jobs accepted and not yet released */
    JOBQ_CLOSED = -2, /* jobq_close() was called */
};

enum jobq_close_mode {
    JOBQ_DRAIN,  /* queued jobs still run */
    JOBQ_CANCEL, /* queued jobs go to drop() */
};

typedef struct {
    uint64_t pushed;    /* accepted */
    uint64_t full;      /* refused: at capacity */
    uint64_t closed;    /* refused: closed */
    uint64_t released;  /* finished (run, or released by the consumer) */
    uint64_t cancelled; /* given to drop() */
    size_t queued;      /* now: waiting for a consumer */
    size_t in_flight;   /* now: taken and not yet released */
    size_t high_water;  /* most jobs accepted and not yet released at once */
} jobq_stats_t;

/* The queue, with its pool started; NULL when opts are invalid (cap 0, a
 * pool without run) or a thread cannot start (none is left running). */
jobq_t *jobq_new(const jobq_opts_t *opts);
/* Close (JOBQ_CANCEL) unless closed, join the pool threads, free. */
void jobq_free(jobq_t *q);

/* JOBQ_OK, JOBQ_FULL or JOBQ_CLOSED; on refusal the job stays the caller's. */
int jobq_push(jobq_t *q, jobq_link_t *job);
/* Refuse pushes from now on; wake every waiting consumer.  Idempotent. */
void jobq_close(jobq_t *q, enum jobq_close_mode mode);

/* External consumers.  Every queued job, oldest first (linked through
 * next, NULL when none); never blocks. */
jobq_link_t *jobq_take_all(jobq_t *q);
/* The oldest job; blocks until there is one, NULL once the queue is closed
 * and (JOBQ_DRAIN) empty. */
jobq_link_t *jobq_pop_wait(jobq_t *q);
/* n taken jobs are finished: they no longer count against the bound. */
void jobq_release(jobq_t *q, size_t n);

/* Pool threads: the current job no longer counts against the bound (once;
 * later calls and the release when run() returns do nothing). */
void jobq_slot_release(jobq_slot_t *slot);
/* The pool thread running the job, 0 .. threads-1 (per-thread state). */
uint32_t jobq_slot_thread(const jobq_slot_t *slot);

size_t jobq_cap(const jobq_t *q);
void jobq_stats(jobq_t *q, jobq_stats_t *out);

#endif
