/* api_snap.h -- management API requests that run on the workers.
 *
 * The API threads never touch a worker's connections or sessions.  What
 * needs them (client and subscription lists, one client, kick, drop a
 * session, publish, clear a retained message, a readiness ping) becomes a
 * job: the API thread posts it as a WM_API inbox item to the workers
 * concerned and waits, with a timeout, on the job's condition variable.
 * Each worker runs the job for its own sessions on its own thread
 * (api_job_run), appends what it found to the job under the job's mutex and
 * signals.  No lock is held across a request; a worker never waits for the
 * API.
 *
 * Lifetime: the job is reference-counted (the waiting API thread plus one
 * per worker it was posted to), so an API thread that gives up after its
 * timeout leaves the job to the last worker, which frees it.
 */
#ifndef ANTENNA_API_SNAP_H
#define ANTENNA_API_SNAP_H

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>

#include "server.h"

typedef enum {
    API_JOB_PING = 1,  /* readiness: every worker answers */
    API_JOB_CLIENTS,   /* data: client objects matching the filters */
    API_JOB_CLIENT,    /* data: one client with its subscriptions (home worker) */
    API_JOB_SUBS,      /* data: subscription objects matching the filters */
    API_JOB_KICK,      /* found: the client was connected and is kicked */
    API_JOB_DROP,      /* found: the session existed and is gone */
    API_JOB_PUBLISH,   /* delivered: sessions reached (worker 0) */
    API_JOB_RETAIN_DEL /* clear the retained message of `topic` (worker 0) */
} api_job_kind_t;

typedef struct api_job {
    api_job_kind_t kind;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;    /* under mu: the API thread + workers not done yet */
    int pending; /* under mu: workers that have not answered */
    int one;     /* posted to one worker (the home of client_id): written
                  * before the post; then it follows a moved session */
    /* input (read-only once posted) */
    char *client_id;        /* exact client id (CLIENT, KICK, DROP, SUBS filter) */
    char *client_id_prefix; /* CLIENTS filter */
    char *username;         /* CLIENTS filter */
    char *address;          /* CLIENTS filter: prefix of "addr:port" */
    int connected;          /* CLIENTS filter: -1 any, 0, 1 */
    char *topic;            /* SUBS filter (exact), RETAIN_DEL topic */
    msg_t *msg;             /* PUBLISH: one reference, dropped by the worker */
    size_t keep;            /* CLIENTS, SUBS: each worker sends only its first
                             * `keep` matches by client id (page * limit), 0 = all */
    /* output (under mu) */
    json_t *data; /* array */
    int found;
    uint64_t delivered; /* PUBLISH: sessions reached */
    uint64_t total;     /* CLIENTS, SUBS: matches, including those not sent */
} api_job_t;

/* API thread: a job of `kind` with empty filters (connected = -1). */
api_job_t *api_job_new(api_job_kind_t kind);
/* API thread: post to worker `to` (or every worker when to < 0) and wait up
 * to timeout_ms for the answers.  Returns 0 when every worker answered, -1
 * on timeout.  Either way the caller then calls api_job_release. */
int api_job_submit(server_t *srv, api_job_t *job, int to, uint32_t timeout_ms);
void api_job_release(api_job_t *job);

/* Worker side (WM_API): run the job for this worker, answer. */
void api_job_run(worker_t *w, api_job_t *job);
/* A job left in a stopped worker's inbox: answer with nothing. */
void api_job_cancel(api_job_t *job);
/* Register WM_API (api_start, before the first job is posted). */
void api_snap_register_inbox(server_t *srv);

#endif
