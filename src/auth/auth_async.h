/* auth_async.h -- what the asynchronous auth backends (http, redis) share:
 * a self-contained copy of a request (a job) and a bounded job queue.
 *
 * A worker calls auth_job_new() inside check() (the request's strings live
 * only during check(), so the job copies them into one allocation) and
 * pushes it; the backend's I/O thread pops it, asks its server and calls
 * job->done(job->token, answer) exactly once, then frees the job.  The
 * queue is bounded so a stalled server cannot make the broker queue without
 * limit: a full queue refuses the push and check() answers at once.
 *
 * Thread safety: the queue is a mutex-protected FIFO, many producers (the
 * workers) and one or more consumers (the backend's threads).  A job is
 * touched by one thread at a time: its creator until the push, then the
 * consumer that popped it.
 */
#ifndef ANTENNA_AUTH_ASYNC_H
#define ANTENNA_AUTH_ASYNC_H

#include "auth.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct auth_job {
    struct auth_job *next;
    auth_done_fn done;
    void *token;
    uint64_t deadline_ms;     /* an_now_ms() after which the answer is an error */
    uint32_t attempts;        /* the consumer's: tries so far (http failover) */
    /* the copied request: strings NUL terminated in the same allocation */
    uint8_t action, qos, retain;
    uint32_t listener;
    char *client_id;          /* never NULL ("" when absent) */
    char *username;           /* NULL when absent */
    uint8_t *password;        /* NULL when absent */
    size_t password_len;
    char *cert_user;          /* NULL when absent */
    char *peer;               /* never NULL */
    char *topic;              /* NULL when absent */
} auth_job_t;

/* One allocation holding the job and copies of every field of r. */
auth_job_t *auth_job_new(const auth_request_t *r, auth_done_fn done, void *token,
                         uint64_t deadline_ms);
void auth_job_free(auth_job_t *j);

/* "connect", "publish", "subscribe" (or "unknown"). */
const char *auth_action_name(uint8_t action);

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;      /* signalled on push and on close */
    auth_job_t *head, *tail;  /* queued, not yet taken by a consumer */
    size_t len;               /* accepted and not yet released: queued + in flight */
    size_t cap;
    int closed;
} auth_jobq_t;

int auth_jobq_init(auth_jobq_t *q, size_t cap);
/* Frees the jobs still queued without calling done(). */
void auth_jobq_destroy(auth_jobq_t *q);
/* 0, or -1 when the queue is full or closed (the job stays the caller's). */
int auth_jobq_push(auth_jobq_t *q, auth_job_t *j);
/* The whole queue as a list (NULL when empty); never blocks. */
auth_job_t *auth_jobq_take_all(auth_jobq_t *q);
/* The oldest job; blocks until there is one, or returns NULL once closed. */
auth_job_t *auth_jobq_pop_wait(auth_jobq_t *q);
/* Wake every waiter for good: pop_wait returns NULL from now on. */
void auth_jobq_close(auth_jobq_t *q);
/* A consumer answered n jobs: they no longer count against the bound,
 * which covers jobs queued and in flight alike. */
void auth_jobq_release(auth_jobq_t *q, size_t n);

/* Failure log lines without a flood: at most AUTH_LOG_BURST lines per second
 * per limiter; the lines held back are counted and reported in one line
 * when the next second starts.  One thread per limiter (no lock). */
#define AUTH_LOG_BURST 10
typedef struct {
    uint64_t second_ms;       /* start of the current second */
    uint32_t logged;          /* lines this second */
    uint64_t held;            /* lines held back this second */
} auth_ratelog_t;

/* 1 when a line may be written now; `who` names the backend in the summary
 * line ("auth http"). */
int auth_ratelog_ok(auth_ratelog_t *r, const char *who);

#endif
