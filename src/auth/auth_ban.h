/* auth_ban.h -- brute-force protection: failed logins counted per source
 * address and per user name in one bounded table.
 *
 * After max_failures failures within window_s seconds, an address is
 * banned for ban_s seconds: its CONNECTs are refused (after delay_ms, a
 * timer in proto.c, so a client retrying in a loop is slowed down).  The
 * same count per user name locks that user name for ban_s, whatever the
 * address (an attack spread over many addresses on one account).  A
 * success forgets the failures of its own user name only: neither the
 * address's count (an attacker's own valid login between guesses) nor
 * another account's is reset.
 *
 * Listeners in `exempt` (by default those bound to a loopback address,
 * auth.ban.loopback) neither count nor block.  The table holds table_size
 * keys (addresses, and user names by a SHA-256 prefix) in open addressing
 * with a short probe; when a probe finds no room the least recently seen
 * entry of it is replaced, so memory stays bounded whatever the number of
 * attackers.  Slots are picked by SipHash under a random key: nobody can
 * choose addresses or names that share a probe (to evict an entry, their
 * own or another's).  Any worker calls it: one mutex, held for a few
 * memory accesses.
 */
#ifndef ANTENNA_AUTH_BAN_H
#define ANTENNA_AUTH_BAN_H

#include <pthread.h>
#include <stdint.h>

#include "conf.h"

#define AUTH_BAN_KEY_LEN 17

typedef struct {
    uint8_t addr[AUTH_BAN_KEY_LEN]; /* family byte and 16 address bytes, or
                                     * 0xff and 16 bytes of SHA-256(user) */
    uint8_t used;
    uint32_t failures;     /* within the window that started at window_start */
    uint64_t window_start; /* ms */
    uint64_t banned_until; /* ms, 0 = not banned */
    uint64_t last;         /* ms, for eviction */
} auth_ban_entry_t;

typedef struct {
    conf_auth_ban_t conf;
    uint32_t exempt; /* bit i: listener i is exempt */
    pthread_mutex_t mu;
    auth_ban_entry_t *v;
    uint32_t n;
    uint64_t key[2]; /* SipHash key of the slots */
} auth_ban_t;

/* What auth_ban_failure() did. */
enum { AUTH_BAN_ADDRESS = 1, AUTH_BAN_USER = 2 };

void auth_ban_init(auth_ban_t *b, const conf_auth_ban_t *conf, uint32_t exempt);
void auth_ban_destroy(auth_ban_t *b);
/* 1 when the address is banned or the user name (may be NULL) locked at
 * `now` (ms). */
int auth_ban_blocked(auth_ban_t *b, uint32_t listener, uint8_t family, const uint8_t addr[16],
                     const char *user, uint64_t now);
/* Count a failure of `user` (NULL: none given) from the address:
 * AUTH_BAN_ADDRESS and/or AUTH_BAN_USER when it bans either, else 0. */
int auth_ban_failure(auth_ban_t *b, uint32_t listener, uint8_t family, const uint8_t addr[16],
                     const char *user, uint64_t now);
/* A success of `user` forgets that user name's failures (not a ban in
 * force, and not the address's). */
void auth_ban_success(auth_ban_t *b, uint32_t listener, const char *user);
/* Bans in force at `now` (ms): *addresses banned, *users locked.  Scans
 * the table under the mutex (a metrics scrape, not a hot path). */
void auth_ban_active(auth_ban_t *b, uint64_t now, uint32_t *addresses, uint32_t *users);

#endif
