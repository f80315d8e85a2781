/* httpc.h -- an asynchronous HTTP client for the broker's outgoing calls
 * (auth webhooks today; sinks, webhooks and commands later): one I/O thread
 * per client drives libcurl's multi interface, so no caller ever waits on a
 * remote server.
 *
 * Requests: any thread calls httpc_submit(); the request (method, URL,
 * header lines, body) is copied into one allocation and queued on a bounded
 * queue (src/core/jobq.h, external consumer), and the I/O thread is woken
 * (curl_multi_wakeup).  The bound (queue_cap) covers requests queued and in
 * flight alike; a full queue refuses the request at once (HTTPC_QUEUE_FULL)
 * and nothing is called back.
 *
 * Answers: done(arg, result) is called exactly once per accepted request,
 * on the I/O thread, with the status and the body (valid only during the
 * call) or an error.  The request's slot in the bound is free before done()
 * runs, so whoever receives the answer may submit again at once.  done()
 * runs on the one I/O thread: it must not block.  A done() may submit a
 * follow-up (a retry, the next URL): from the I/O thread a submission is not
 * bounded (it takes the place of the request that just ended) and starts at
 * the next turn of the loop, never inside httpc_submit().
 *
 * Deadlines: each request has one (absolute, an_now_ms() clock), set when
 * it is submitted; waiting in the queue and waiting for a free pooled
 * connection count.  The thread keeps the requests in flight in deadline
 * order and ends every one past its deadline itself (HTTPC_ETIMEOUT), even
 * while libcurl still queues it for a connection, so a hung server costs a
 * request at most its deadline.
 *
 * Connections: at most max_host_conns keep-alive connections per host and
 * max_conns in all (libcurl's connection cache), reused across requests,
 * never one per request.  Only http and https; TLS verifies against the
 * system's CA store or ca_file.
 *
 * Shutdown: httpc_free() stops and joins the thread, then calls done() with
 * HTTPC_ECANCELLED for every request not answered yet, on the calling
 * thread: no callback runs after it returns.
 *
 * This module depends on src/core and libcurl only.
 */
#ifndef ANTENNA_HTTPC_H
#define ANTENNA_HTTPC_H

#include <stddef.h>
#include <stdint.h>

typedef struct httpc httpc_t;

typedef enum {
    HTTPC_OK = 0,     /* a response: see status (any status, 404 too) */
    HTTPC_ETIMEOUT,   /* the deadline passed: queued, connecting or transferring */
    HTTPC_ECONNECT,   /* the host cannot be resolved or connected to */
    HTTPC_ETOOBIG,    /* the response body is larger than max_response */
    HTTPC_EFAILED,    /* anything else (TLS, reset, protocol): see error */
    HTTPC_ECANCELLED, /* httpc_free() ended it: there will be no answer */
} httpc_err_t;

typedef struct {
    httpc_err_t err;
    long status;      /* the HTTP status; 0 when none was received */
    const char *body; /* NUL terminated, "" when none; valid during done() */
    size_t body_len;
    const char *error; /* NULL with HTTPC_OK, else why (valid during done()) */
} httpc_result_t;

typedef void (*httpc_done_fn)(void *arg, const httpc_result_t *res);

typedef struct {
    const char *method;         /* NULL: POST with a body, GET without */
    const char *url;            /* http:// or https:// */
    const char *const *headers; /* "Name: value" lines, NULL terminated; NULL: none */
    const void *body;           /* NULL: no body */
    size_t body_len;
    uint64_t deadline_ms; /* an_now_ms() time; 0: now + timeout_ms of the options */
    httpc_done_fn done;   /* required */
    void *arg;
} httpc_req_t;

typedef struct {
    size_t queue_cap;            /* >= 1: requests queued and in flight */
    uint32_t max_host_conns;     /* keep-alive connections per host; 0: no limit */
    uint32_t max_conns;          /* connections in all; 0: no limit */
    uint32_t timeout_ms;         /* deadline of a request without one; 0: none */
    uint32_t connect_timeout_ms; /* 0: the deadline only */
    size_t max_response;         /* body bytes; 0: 64 KiB */
    const char *ca_file;         /* PEM CA bundle for https; NULL or "": the system's */
} httpc_opts_t;

/* httpc_submit() results. */
enum {
    HTTPC_QUEUED = 0,
    HTTPC_QUEUE_FULL = -1,  /* queue_cap requests queued and in flight */
    HTTPC_CLOSED = -2,      /* the client is being freed */
    HTTPC_BAD_REQUEST = -3, /* no url or no done */
};

typedef struct {
    uint64_t submitted; /* accepted */
    uint64_t refused;   /* refused: queue full or closed */
    uint64_t started;   /* handed to libcurl (sent or being sent) */
    uint64_t responses; /* answered with HTTPC_OK */
    uint64_t failed;    /* answered with an error, timeouts included */
    uint64_t timeouts;  /* of which HTTPC_ETIMEOUT */
    uint64_t cancelled; /* HTTPC_ECANCELLED at httpc_free() */
} httpc_stats_t;

/* A client with its I/O thread running; NULL with err set (an unreadable
 * ca_file, queue_cap 0, libcurl or the thread cannot start). */
httpc_t *httpc_new(const httpc_opts_t *opts, char *err, size_t errlen);
/* Stop the thread; every request left gets done(HTTPC_ECANCELLED) here. */
void httpc_free(httpc_t *c);

/* Copy r and queue it: HTTPC_QUEUED (done() will be called once) or a
 * refusal (done() will not be called).  Any thread. */
int httpc_submit(httpc_t *c, const httpc_req_t *r);

/* Counters, read without stopping traffic (approximate while it flows). */
void httpc_stats(httpc_t *c, httpc_stats_t *out);

#endif
