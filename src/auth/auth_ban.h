/* auth_ban.h -- brute-force protection: failed logins counted per source
 * address in a bounded table.
 *
 * After max_failures failures within window_s seconds, an address is
 * banned for ban_s seconds: its CONNECTs are refused (after delay_ms, a
 * timer in proto.c, so a client retrying in a loop is slowed down).  The
 * table holds table_size addresses in open addressing with a short probe;
 * when a probe finds no room the least recently seen entry of it is
 * replaced, so memory stays bounded whatever the number of attackers.
 * Any worker calls it: one mutex, held for a few memory accesses.
 */
#ifndef ANTENNA_AUTH_BAN_H
#define ANTENNA_AUTH_BAN_H

#include <pthread.h>
#include <stdint.h>

#include "conf.h"

typedef struct {
    uint8_t addr[17];      /* family byte, then 16 address bytes */
    uint8_t used;
    uint32_t failures;     /* within the window that started at window_start */
    uint64_t window_start; /* ms */
    uint64_t banned_until; /* ms, 0 = not banned */
    uint64_t last;         /* ms, for eviction */
} auth_ban_entry_t;

typedef struct {
    conf_auth_ban_t conf;
    pthread_mutex_t mu;
    auth_ban_entry_t *v;
    uint32_t n;
} auth_ban_t;

void auth_ban_init(auth_ban_t *b, const conf_auth_ban_t *conf);
void auth_ban_destroy(auth_ban_t *b);
/* 1 when the address is banned at `now` (ms). */
int auth_ban_blocked(auth_ban_t *b, uint8_t family, const uint8_t addr[16], uint64_t now);
/* Count a failure: 1 when this failure bans the address. */
int auth_ban_failure(auth_ban_t *b, uint8_t family, const uint8_t addr[16], uint64_t now);
/* A success forgets the address's failures (not a ban in force). */
void auth_ban_success(auth_ban_t *b, uint8_t family, const uint8_t addr[16]);

#endif
