/* auth_async.h -- what the asynchronous auth backends (http, redis, the
 * password file's PBKDF2 threads) share: a self-contained copy of a request
 * (a job), and failure log lines without a flood.
 *
 * A worker calls auth_job_new() inside check() (the request's strings live
 * only during check(), so the job copies them into one allocation) and
 * hands it on: to a jobq_t (src/core/jobq.h; redis, password file) through
 * the job's link, or as the argument of an HTTP request (src/net/httpc.h;
 * http).  The thread that answers calls job->done(job->token, answer)
 * exactly once, then frees the job.  Both queues are bounded, so a stalled
 * server cannot make the broker queue without limit: a full queue refuses
 * the job and check() answers at once.
 *
 * Thread safety: a job is touched by one thread at a time: its creator
 * until it is queued, then the consumer that took it.
 */
#ifndef ANTENNA_AUTH_ASYNC_H
#define ANTENNA_AUTH_ASYNC_H

#include "auth.h"
#include "../core/jobq.h"

#include <stddef.h>
#include <stdint.h>

typedef struct auth_job {
    jobq_link_t link; /* in a jobq_t (redis, password file) */
    auth_done_fn done;
    void *token;
    uint64_t deadline_ms; /* an_now_ms() after which the answer is an error */
    uint32_t attempts;    /* the consumer's: tries so far (http failover) */
    /* the copied request: strings NUL terminated in the same allocation */
    uint8_t action, qos, retain;
    uint32_t listener;
    char *client_id;   /* never NULL ("" when absent) */
    char *username;    /* NULL when absent */
    uint8_t *password; /* NULL when absent */
    size_t password_len;
    char *cert_user; /* NULL when absent */
    char *peer;      /* never NULL */
    char *topic;     /* NULL when absent */
} auth_job_t;

/* One allocation holding the job and copies of every field of r. */
auth_job_t *auth_job_new(const auth_request_t *r, auth_done_fn done, void *token,
                         uint64_t deadline_ms);
void auth_job_free(auth_job_t *j);

/* "connect", "publish", "subscribe" (or "unknown"). */
const char *auth_action_name(uint8_t action);

/* Failure log lines without a flood: at most AUTH_LOG_BURST lines per second
 * per limiter; the lines held back are counted and reported in one line
 * when the next second starts.  One thread per limiter (no lock). */
#define AUTH_LOG_BURST 10
typedef struct {
    uint64_t second_ms; /* start of the current second */
    uint32_t logged;    /* lines this second */
    uint64_t held;      /* lines held back this second */
} auth_ratelog_t;

/* 1 when a line may be written now; `who` names the backend in the summary
 * line ("auth http"). */
int auth_ratelog_ok(auth_ratelog_t *r, const char *who);

#endif
