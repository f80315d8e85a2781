/* auth_ban.c -- the per-address failure table (auth_ban.h). */
#include "auth_ban.h"

#include <string.h>

#include "util.h"

#define PROBE 8

void auth_ban_init(auth_ban_t *b, const conf_auth_ban_t *conf)
{
    memset(b, 0, sizeof(*b));
    b->conf = *conf;
    pthread_mutex_init(&b->mu, NULL);
    if (conf->max_failures) {
        b->n = conf->table_size ? conf->table_size : 4096;
        b->v = an_calloc(b->n, sizeof(*b->v));
    }
}

void auth_ban_destroy(auth_ban_t *b)
{
    free(b->v);
    b->v = NULL;
    pthread_mutex_destroy(&b->mu);
}

static uint32_t addr_hash(const uint8_t key[17])
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (int i = 0; i < 17; i++)
        h = (h ^ key[i]) * 16777619u;
    return h;
}

/* The entry of key: found, or (create) a free or least recently seen slot
 * of its probe, reset for key.  NULL when absent and !create. */
static auth_ban_entry_t *find(auth_ban_t *b, const uint8_t key[17], int create, uint64_t now)
{
    uint32_t h = addr_hash(key);
    auth_ban_entry_t *victim = NULL;
    for (uint32_t i = 0; i < PROBE; i++) {
        auth_ban_entry_t *e = &b->v[(h + i) % b->n];
        if (e->used && memcmp(e->addr, key, 17) == 0)
            return e;
        if (!e->used) {
            if (victim == NULL || victim->used)
                victim = e;
        } else if (victim == NULL || (victim->used && e->last < victim->last)) {
            victim = e;
        }
    }
    if (!create)
        return NULL;
    memset(victim, 0, sizeof(*victim));
    memcpy(victim->addr, key, 17);
    victim->used = 1;
    victim->last = now;
    victim->window_start = now;
    return victim;
}

static void make_key(uint8_t key[17], uint8_t family, const uint8_t addr[16])
{
    key[0] = family;
    memcpy(key + 1, addr, 16);
}

int auth_ban_blocked(auth_ban_t *b, uint8_t family, const uint8_t addr[16], uint64_t now)
{
    if (b->v == NULL)
        return 0;
    uint8_t key[17];
    make_key(key, family, addr);
    pthread_mutex_lock(&b->mu);
    auth_ban_entry_t *e = find(b, key, 0, now);
    int banned = e && e->banned_until > now;
    if (e)
        e->last = now;
    pthread_mutex_unlock(&b->mu);
    return banned;
}

int auth_ban_failure(auth_ban_t *b, uint8_t family, const uint8_t addr[16], uint64_t now)
{
    if (b->v == NULL)
        return 0;
    uint8_t key[17];
    make_key(key, family, addr);
    int banned = 0;
    pthread_mutex_lock(&b->mu);
    auth_ban_entry_t *e = find(b, key, 1, now);
    e->last = now;
    if (now - e->window_start >= (uint64_t)b->conf.window_s * 1000u) {
        e->window_start = now;
        e->failures = 0;
    }
    e->failures++;
    if (e->failures >= b->conf.max_failures && e->banned_until <= now) {
        e->banned_until = now + (uint64_t)b->conf.ban_s * 1000u;
        e->failures = 0;
        e->window_start = now;
        banned = 1;
    }
    pthread_mutex_unlock(&b->mu);
    return banned;
}

void auth_ban_success(auth_ban_t *b, uint8_t family, const uint8_t addr[16])
{
    if (b->v == NULL)
        return;
    uint8_t key[17];
    make_key(key, family, addr);
    pthread_mutex_lock(&b->mu);
    auth_ban_entry_t *e = find(b, key, 0, 0);
    if (e)
        e->failures = 0;
    pthread_mutex_unlock(&b->mu);
}
