/* auth.h -- authentication and authorization: an ordered chain of backends.
 *
 * A request (CONNECT, PUBLISH, SUBSCRIBE, and the delivery of a retained
 * message) goes through the backends of `auth.chain` in order; each one
 * answers ALLOW, DENY or PASS (not mine: ask the next one).  The first ALLOW
 * or DENY decides; when every backend passes, the configured default
 * decides.  A backend that must ask another server (HTTP, Redis) answers
 * PENDING at once and calls done() exactly once later, from any thread; the
 * chain forwards that answer to the worker that asked (through its inbox),
 * and the connection waits meanwhile (no worker thread ever blocks on I/O).
 *
 * Ownership: the request and everything it points to live only during
 * check(); an asynchronous backend copies what it needs.  An answer's acl
 * and username, when set, are owned by the receiver of the answer.
 */
#ifndef ANTENNA_AUTH_H
#define ANTENNA_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "auth_cause.h"

struct auth_stats;

typedef enum {
    AUTH_PASS = 0, /* no opinion: ask the next backend */
    AUTH_ALLOW,
    AUTH_DENY,
    AUTH_PENDING /* done() will be called later */
} auth_verdict_t;

enum { AUTH_ACT_CONNECT = 1, AUTH_ACT_PUBLISH = 2, AUTH_ACT_SUBSCRIBE = 4 };

typedef struct auth_request {
    uint8_t action;          /* AUTH_ACT_* */
    const char *client_id;   /* NUL terminated */
    const char *username;    /* NULL when the client sent none */
    const uint8_t *password; /* NULL when none */
    size_t password_len;
    const char *cert_user; /* from a verified client certificate, or NULL */
    const char *peer;      /* "address:port" ("[v6]:port") */
    uint32_t listener;     /* index in the configuration's listeners */
    const char *topic;     /* publish: topic name; subscribe: filter; else NULL */
    uint8_t qos, retain;
    struct auth_stats *stats; /* CONNECT: the asking worker's counters (auth_stats.h), or NULL */
} auth_request_t;

struct auth_acl; /* rules attached to one client (auth_acl.h) */

typedef struct auth_answer {
    auth_verdict_t verdict; /* ALLOW, DENY or PASS (never PENDING) */
    auth_cause_t cause;     /* why a DENY (auth_cause.h); AUTH_OK: the chain picks */
    struct auth_acl *acl;   /* optional: rules for this client (JWT claims, Redis, HTTP) */
    char *username;         /* optional: the user as the backend names it (malloc'd) */
    const char *backend;    /* set by the chain: the name of the backend that answered
                             * (static); NULL when the chain's default decided */
} auth_answer_t;

typedef void (*auth_done_fn)(void *token, const auth_answer_t *a);

typedef struct auth_backend auth_backend_t;
struct auth_backend {
    const char *name; /* "password_file", "jwt", "http", "redis"... */
    /* Decide now (fill *out, return its verdict) or return AUTH_PENDING and
     * call done(token, answer) exactly once later, from any thread. */
    auth_verdict_t (*check)(auth_backend_t *b, const auth_request_t *r, auth_answer_t *out,
                            auth_done_fn done, void *token);
    /* SIGHUP: reload files; returns 0 or -1 (logged, old data kept). */
    int (*reload)(auth_backend_t *b);
    /* Stop threads, cancel what is pending (done() is not called after
     * destroy returns), free. */
    void (*destroy)(auth_backend_t *b);
    /* Optional: b replaces prev (a backend of the same name in the chain a
     * reload replaces): take over what was bound to prev after the chain
     * was built (the devices backend's registry).  Main thread. */
    void (*follow)(auth_backend_t *b, auth_backend_t *prev);
};

#endif
