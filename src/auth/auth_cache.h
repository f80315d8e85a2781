/* auth_cache.h -- a bounded result cache with a time to live, for the
 * backends that ask another server (http).
 *
 * Entries are keyed by a SHA-256 digest of the request fields that decide
 * the answer (action, client id, username, password, certificate user,
 * topic), so no password is kept in memory and every key has the same
 * size.  An entry lives ttl_ms; when the cache holds `size` entries the
 * oldest inserted one is dropped first (FIFO: an answer refreshed by a new
 * request moves to the back).  Only definitive answers are put here (allow,
 * deny, ignore); errors never are.  An allow may carry the text of the
 * client's ACL rules (the webhook's "acl"), kept as text and parsed again
 * on a hit: a rule set is owned by the connection that receives it.
 *
 * Thread safety: one mutex around every call; workers look up, the
 * backend's I/O thread inserts.  The critical sections are a hash probe.
 */
#ifndef ANTENNA_AUTH_CACHE_H
#define ANTENNA_AUTH_CACHE_H

#include "auth.h"

#include <stddef.h>
#include <stdint.h>

#define AUTH_CACHE_KEY_LEN 32

typedef struct auth_cache auth_cache_t;

/* NULL when size or ttl_ms is 0 (no cache): every call below accepts NULL. */
auth_cache_t *auth_cache_new(size_t size, uint32_t ttl_ms);
void auth_cache_free(auth_cache_t *c);

/* The digest of the fields that decide an answer; 0 or -1 (OpenSSL). */
int auth_cache_key(uint8_t action, const char *client_id, const char *username,
                   const uint8_t *password, size_t password_len, const char *cert_user,
                   const char *topic, uint8_t out[AUTH_CACHE_KEY_LEN]);

/* 1 and the cached answer when a fresh entry exists, else 0 (an expired
 * entry found on the way is dropped).  acl_text, when not NULL, gets a
 * malloc'd copy of the entry's rule text, or NULL when it has none. */
int auth_cache_get(auth_cache_t *c, const uint8_t key[AUTH_CACHE_KEY_LEN], uint64_t now_ms,
                   auth_verdict_t *verdict, auth_cause_t *cause, char **acl_text);
/* acl_text may be NULL; it is copied. */
void auth_cache_put(auth_cache_t *c, const uint8_t key[AUTH_CACHE_KEY_LEN], uint64_t now_ms,
                    auth_verdict_t verdict, auth_cause_t cause, const char *acl_text);
size_t auth_cache_len(auth_cache_t *c);
/* Forget every entry (a reloaded password file). */
void auth_cache_clear(auth_cache_t *c);

#endif
