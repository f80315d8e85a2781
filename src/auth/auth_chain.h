/* auth_chain.h -- the authentication chain and the per-connection auth
 * state, as the broker sees them.
 *
 * Built once at start from conf->auth (server_t.auth), read by every
 * worker.  CONNECT runs the backends of auth.chain in order (auth.h);
 * an asynchronous backend makes the connection wait: the chain hands the
 * worker an auth_wait_t, and the answer comes back to that worker's inbox
 * as a WM_AUTH item carrying the same auth_wait_t.  The connection keeps a
 * pointer to its wait and the wait a pointer back (owner); a connection
 * that closes first clears the wait's owner (on its worker), so a late
 * answer finds no connection and is just freed: never a dangling conn_t*.
 *
 * PUBLISH, SUBSCRIBE and delivery (sess_acl.h: where a subscription's
 * verdict is not a whole ALLOW, after a reload, for a resumed session):
 * auth_chain_acl() checks, in order,
 * the rules a backend gave this client at CONNECT (answer.acl: JWT claim,
 * HTTP, Redis), the ACL file, then the backends synchronously (check()
 * with done == NULL: they answer from what they know or pass), then
 * auth.acl_default.  Asynchronous backends thus give their ACL at CONNECT
 * as a rule set; PUBLISH/SUBSCRIBE never wait.  Decisions are cached per
 * connection (a small direct-mapped table, auth.acl_cache_size entries),
 * invalidated by a generation number bumped on SIGHUP.
 */
#ifndef ANTENNA_AUTH_CHAIN_H
#define ANTENNA_AUTH_CHAIN_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "auth_acl.h"
#include "auth_ban.h"
#include "conf.h"
#include "inbox.h"

typedef struct auth_chain auth_chain_t;

/* One CONNECT waiting for an asynchronous backend. */
typedef struct auth_wait {
    auth_chain_t *ch;
    inbox_t *inbox;                     /* the worker that waits */
    void *owner;                        /* conn_t*; NULL once it is gone (its worker only) */
    uint32_t next;                      /* backend to continue with when the answer is PASS */
    auth_answer_t ans;                  /* filled by done() */
    uint64_t start_us, done_us;         /* asked, answered (an_now_us): auth_stats.h */
    struct auth_wait *prev, *next_wait; /* outstanding list, under the chain's lock */
} auth_wait_t;

struct acl_cache_entry;
struct auth_method_state;

/* Per-connection auth state (conn_ext_t.auth), owned by the connection's
 * worker. */
typedef struct auth_client {
    char *user;        /* %u: backend's name, else certificate, else CONNECT */
    char *client_id;   /* %c */
    auth_acl_t *acl;   /* rules from the backend that allowed the CONNECT */
    uint8_t authed;    /* the CONNECT was allowed */
    uint8_t refusing;  /* a refusal waits for the ban delay */
    uint8_t rc3, rc5;  /* that refusal's codes */
    uint32_t resume;   /* next backend after an asynchronous PASS */
    auth_wait_t *wait; /* an answer is awaited */
    uint8_t *held;     /* CONNECT body and the bytes after it, while waiting */
    uint32_t connect_len, held_len;
    uint8_t hdr;
    uint32_t gen;    /* chain generation the cache was filled under */
    uint32_t ncache; /* entries in cache */
    struct acl_cache_entry *cache;
    /* MQTT 5 enhanced authentication (auth_method.h) */
    const struct auth_method *mops;   /* the CONNECT's method, kept for re-auth */
    struct auth_method_state *method; /* an exchange in progress */
    uint8_t *method_out;              /* Authentication Data for the CONNACK */
    uint32_t method_out_len;
} auth_client_t;

/* NULL with err set when a backend or a file cannot be set up. */
auth_chain_t *auth_chain_new(const conf_t *conf, char *err, size_t errlen);
/* After the workers stopped: destroys the backends, frees waits never
 * answered. */
void auth_chain_free(auth_chain_t *ch);
/* SIGHUP (main thread): reload every backend and the ACL file (bad files
 * keep the old data, logged).  Returns the number of failures. */
int auth_chain_reload(auth_chain_t *ch);
/* 1 when nothing can refuse or restrict a client of this listener (no
 * backend, no ACL file, acl_default not deny, the default allows there):
 * the broker then keeps no auth state per client. */
int auth_chain_trivial(const auth_chain_t *ch, uint32_t listener);
/* 1 when nothing can restrict what a client reads or writes (no backend
 * that could give client rules, no ACL file, acl_default not deny),
 * whatever authenticates it. */
int auth_chain_acl_open(const auth_chain_t *ch);
/* The ACL generation: bumped by every reload (after the new rules are in
 * place), so a decision taken under generation g is stale once this is not
 * g any more.  Read it before deciding.  1 for a NULL chain. */
uint32_t auth_chain_gen(auth_chain_t *ch);
/* A chain built to replace `prev` (a reload, reload.h): its generation
 * follows prev's, so decisions cached under prev are stale under it; its
 * backends with follow() take over what their namesakes in prev had. */
void auth_chain_gen_follow(auth_chain_t *ch, auth_chain_t *prev);
/* Number of backends in the chain. */
uint32_t auth_chain_size(const auth_chain_t *ch);
/* A backend by name (e.g. "password_file" for SCRAM), or NULL. */
auth_backend_t *auth_chain_backend(auth_chain_t *ch, const char *name);
/* The i-th backend of the chain (0 .. auth_chain_size - 1), or NULL: for a
 * caller that runs the backends itself (http_ingest, on its own thread). */
auth_backend_t *auth_chain_at(auth_chain_t *ch, uint32_t i);

/* Run the CONNECT through backends [start, n).  ALLOW/DENY: *out is the
 * answer (its acl/username now the caller's).  PENDING: *wait is set, the
 * answer will arrive as WM_AUTH in `inbox`; the caller sets wait->owner. */
auth_verdict_t auth_chain_connect(auth_chain_t *ch, const auth_request_t *r, uint32_t start,
                                  inbox_t *inbox, auth_answer_t *out, auth_wait_t **wait);
/* The verdict when every backend passed, on this listener (auth.default
 * auto with an empty chain: allow on loopback listeners, deny elsewhere). */
auth_verdict_t auth_chain_default(const auth_chain_t *ch, uint32_t listener);
/* Free a wait and what its answer owns. */
void auth_wait_free(auth_wait_t *w);
void auth_answer_clear(auth_answer_t *a);

/* 1 allowed, 0 denied.  action AUTH_ACT_PUBLISH (topic name) or
 * AUTH_ACT_SUBSCRIBE (is_filter: a SUBSCRIBE filter; else the topic of a
 * message to be read, e.g. retained).  ac may be NULL (no auth state).  A
 * SUBSCRIBE filter may also get AUTH_ACL_PARTIAL (2, auth_acl.h): granted,
 * each message's topic to be checked at delivery. */
int auth_chain_acl(auth_chain_t *ch, auth_client_t *ac, uint8_t action, const uint8_t *topic,
                   size_t len, int is_filter);

/* Brute force: the chain's ban table. */
auth_ban_t *auth_chain_ban(auth_chain_t *ch);

void auth_client_free(auth_client_t *ac);

#endif
