/* auth_pwcache.h -- the persistent verification cache of the password
 * backends (auth.password_cache: persistent): successful PBKDF2 checks
 * kept in the store, so that a broker restart does not cost every device
 * a PBKDF2 again.
 *
 * An entry is MAC = HMAC-SHA256(K, user | 0 | password | 0 | verifier),
 * where verifier is the user's hash text as the backend holds it (the
 * password file's line after the ':', or Redis' field), and K a random
 * 32-byte key kept in a file beside the store (<persistence.dir>/
 * auth-cache.key, mode 0600, made on first use).  The store holds
 *   key   "\0auth/pwcache/" TAG "/" MAC       (TAG: f password file, r Redis)
 *   value 'P' 1 u64 BE verified-at (unix ms)
 * under the meta prefix ("\0"), which `antenna store export/import/inspect`
 * skip: the entries are derived data, rebuilt by the next logins.  An entry
 * says nothing without K (the MAC is keyed) and nothing without the
 * password file (the verifier is inside the MAC); a changed password or a
 * changed hash in the file stops matching by itself, so a reload does not
 * need to forget anything.  With K, the store and the password file, an
 * attacker can test guesses at HMAC speed for users who logged in: the
 * trade-off that docs/security.md describes.
 *
 * At open the entries younger than the TTL are loaded into an in-memory
 * auth_cache_t (its time base is the wall clock, since the timestamps come
 * from disk), oldest first, so the newest survive the size bound; older
 * ones are deleted from the store.  A key file made anew (first use, or
 * deleted) drops every stored entry of the tag.
 *
 * Threads: lookups from workers (auth_cache_t's mutex), records from the
 * backends' verification threads (the memory insert, then one store batch
 * submitted without waiting: the store's committer writes it).  Open and
 * free on the main thread, before the workers start and after they stop.
 */
#ifndef ANTENNA_AUTH_PWCACHE_H
#define ANTENNA_AUTH_PWCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "auth_chain.h"
#include "conf.h"
#include "store.h"

#define AUTH_PWCACHE_MAC_LEN 32
#define AUTH_PWCACHE_KEY_LEN 32
#define AUTH_PWCACHE_VALUE_LEN 10
#define AUTH_PWCACHE_KEYFILE "auth-cache.key"
#define AUTH_PWCACHE_PREFIX "\0auth/pwcache/"
#define AUTH_PWCACHE_PREFIX_LEN 14u

typedef struct auth_pwcache auth_pwcache_t;

/* ---- pure parts (unit-tested) ---- */

/* The MAC of an entry: 0, or -1 (OpenSSL failed: do not use the cache). */
int auth_pwcache_mac(const uint8_t k[AUTH_PWCACHE_KEY_LEN], const char *user, const uint8_t *pw,
                     size_t pwlen, const char *verifier, uint8_t out[AUTH_PWCACHE_MAC_LEN]);
/* The store key of an entry ("\0auth/pwcache/" tag "/" MAC) into out,
 * which holds AUTH_PWCACHE_PREFIX_LEN + 2 + AUTH_PWCACHE_MAC_LEN bytes: its
 * length. */
size_t auth_pwcache_store_key(char tag, const uint8_t mac[AUTH_PWCACHE_MAC_LEN], uint8_t *out);
/* The value: 'P', version 1, verified_ms (u64 BE). */
void auth_pwcache_encode(uint64_t verified_ms, uint8_t out[AUTH_PWCACHE_VALUE_LEN]);
/* 0 and *verified_ms, or -1 (not exactly such a record). */
int auth_pwcache_decode(const void *v, size_t vl, uint64_t *verified_ms);

/* Reads K from path, or makes it (mode 0600, O_EXCL) when the file does not
 * exist (*created = 1).  -1 with err naming the file when it is not a
 * regular file, is readable or writable by group or others, or does not
 * hold exactly 32 bytes. */
int auth_pwcache_key_file(const char *path, uint8_t k[AUTH_PWCACHE_KEY_LEN], int *created,
                          char *err, size_t errlen);

/* ---- the cache ---- */

/* Opens the cache of backend `tag` ('f' or 'r') in store s, K from
 * <dir>/auth-cache.key; at most `size` entries, each valid ttl_s seconds
 * after the PBKDF2 check that made it.  NULL with err set. */
auth_pwcache_t *auth_pwcache_open(store_t *s, const char *dir, char tag, size_t size,
                                  uint32_t ttl_s, char *err, size_t errlen);
void auth_pwcache_free(auth_pwcache_t *pc);
/* 1 when (user, pw, verifier) passed a PBKDF2 check less than the TTL ago. */
int auth_pwcache_lookup(auth_pwcache_t *pc, const char *user, const uint8_t *pw, size_t pwlen,
                        const char *verifier);
/* A successful check: remembered in memory and written to the store (a
 * batch submitted, not waited for).  Only ever after a PBKDF2 that matched. */
void auth_pwcache_record(auth_pwcache_t *pc, const char *user, const uint8_t *pw, size_t pwlen,
                         const char *verifier);
/* auth.password_cache: persistent: gives the chain's password_file and
 * redis backends their caches (tags 'f' and 'r').  0 (also when the mode is
 * memory or neither backend is in the chain), or -1 with err set (the key
 * file refused, the store unreadable): the broker does not start. */
int auth_pwcache_setup(auth_chain_t *ch, store_t *s, const conf_t *conf, char *err, size_t errlen);
/* Entries loaded from the store at open. */
size_t auth_pwcache_loaded(const auth_pwcache_t *pc);

#endif
