/* auth_wait.h -- the auth chain run from a thread that may wait.
 *
 * A worker never waits: it hands check() a completion and goes on
 * (proto_auth.c).  A gateway's own thread (the HTTP ingest's MHD threads,
 * the CoAP gateway's thread) answers its request only once it knows, so it
 * runs the chain's backends in order and waits for an asynchronous
 * backend's answer (the password file's PBKDF2 threads, http, redis) on a
 * condition variable, timeout_ms at most for the whole chain (then:
 * denied).
 *
 * The wait is reference-counted (the caller and the backend's completion):
 * a backend that answers after the caller gave up frees nothing the caller
 * still reads.
 */
#ifndef ANTENNA_AUTH_WAIT_H
#define ANTENNA_AUTH_WAIT_H

#include <stdint.h>

#include "auth_chain.h"

/* AUTH_ALLOW with *acl (the deciding backend's rules for the client, or
 * NULL: the caller owns them), AUTH_DENY, or AUTH_PASS when no backend
 * decided (the caller applies auth.default_policy). */
auth_verdict_t auth_wait_chain(auth_chain_t *ch, const auth_request_t *r, uint32_t timeout_ms,
                               auth_acl_t **acl);

#endif
