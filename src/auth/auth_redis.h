/* auth_redis.h -- the Redis backend ("redis"): credentials and ACL rules
 * looked up in Redis (hiredis), for fleets too large for a file.
 *
 * Keys (PREFIX is auth.redis.prefix, "antenna:" by default):
 *   PREFIXuser:NAME  a hash; field "password" holds the password-file hash
 *                    ($pbkdf2-sha512$ITER$SALT$HASH, `antenna passwd` makes it)
 *   PREFIXacl:NAME   a list (or a set, when order does not matter) of rule
 *                    lines "[allow|deny] pub|sub|all FILTER" (auth_acl.h)
 *
 * CONNECT with a username: unknown user -> PASS (the next backend may know
 * it), wrong or missing password -> DENY 0x86, right one -> ALLOW with the
 * user's rules as answer.acl.  PUBLISH/SUBSCRIBE -> PASS at once: the rules
 * fetched at CONNECT decide them on the connection.  Redis unreachable,
 * a timeout or bad data -> auth.redis.on_error (DENY 0x88 / PASS), a log
 * line and a counter.
 *
 * check() queues a copy of the request (bounded by auth.redis.queue_size)
 * and returns AUTH_PENDING; pool_size threads, each owning one synchronous
 * connection, answer the queue (see auth_redis.c).
 */
#ifndef ANTENNA_AUTH_REDIS_H
#define ANTENNA_AUTH_REDIS_H

#include "auth.h"
#include "../core/conf.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t lookups; /* CONNECTs looked up */
    uint64_t allowed, denied, unknown;
    uint64_t errors; /* Redis down, timeout, bad data */
    uint64_t queue_full;
    uint64_t connects; /* successful (re)connections */
} auth_redis_stats_t;

/* Start the backend and its threads from c->auth_redis (no connection is
 * made yet: the first request connects, so the broker starts while Redis
 * is down).  NULL with err set on failure. */
auth_backend_t *auth_redis_new(const conf_t *c, char *err, size_t errlen);

void auth_redis_stats(auth_backend_t *b, auth_redis_stats_t *out);
struct auth_pwcache;
/* auth.password_cache: persistent (before the workers start): a password
 * that passed PBKDF2 against the same hash less than the TTL ago, even
 * before a restart, is not hashed again (auth_pwcache.h); the backend owns
 * pc from now on. */
void auth_redis_use_pwcache(auth_backend_t *b, struct auth_pwcache *pc);

#endif
