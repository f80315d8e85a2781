/* auth_ban.c -- the failure table of addresses and user names
 * (auth_ban.h). */
#include "auth_ban.h"

#include <openssl/sha.h>
#include <string.h>

#include "util.h"

#define PROBE 8
#define USER_TAG 0xff

void auth_ban_init(auth_ban_t *b, const conf_auth_ban_t *conf, uint32_t exempt)
{
    memset(b, 0, sizeof(*b));
    b->conf = *conf;
    b->exempt = exempt;
    pthread_mutex_init(&b->mu, NULL);
    if (conf->max_failures) {
        b->n = conf->table_size ? conf->table_size : 4096;
        b->v = an_calloc(b->n, sizeof(*b->v));
    }
    an_random_key(b->key);
}

void auth_ban_destroy(auth_ban_t *b)
{
    free(b->v);
    b->v = NULL;
    pthread_mutex_destroy(&b->mu);
}

static uint32_t key_hash(const auth_ban_t *b, const uint8_t key[AUTH_BAN_KEY_LEN])
{
    return (uint32_t)an_siphash(b->key, key, AUTH_BAN_KEY_LEN);
}

/* The entry of key: found, or (create) a free or least recently seen slot
 * of its probe, reset for key.  NULL when absent and !create. */
static auth_ban_entry_t *find(auth_ban_t *b, const uint8_t key[AUTH_BAN_KEY_LEN], int create,
                              uint64_t now)
{
    uint32_t h = key_hash(b, key);
    auth_ban_entry_t *victim = NULL;
    for (uint32_t i = 0; i < PROBE; i++) {
        auth_ban_entry_t *e = &b->v[(h + i) % b->n];
        if (e->used && memcmp(e->addr, key, AUTH_BAN_KEY_LEN) == 0)
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
    memcpy(victim->addr, key, AUTH_BAN_KEY_LEN);
    victim->used = 1;
    victim->last = now;
    victim->window_start = now;
    return victim;
}

static void addr_key(uint8_t key[AUTH_BAN_KEY_LEN], uint8_t family, const uint8_t addr[16])
{
    key[0] = family;
    memcpy(key + 1, addr, 16);
}

/* A digest, not the name: fixed size, and no crafted name can collide
 * with another user's to lock it out. */
static void user_key(uint8_t key[AUTH_BAN_KEY_LEN], const char *user)
{
    uint8_t d[SHA256_DIGEST_LENGTH];
    SHA256((const uint8_t *)user, strlen(user), d);
    key[0] = USER_TAG;
    memcpy(key + 1, d, AUTH_BAN_KEY_LEN - 1);
}

static int active(const auth_ban_t *b, uint32_t listener)
{
    return b->v != NULL && !(listener < 32 && (b->exempt >> listener) & 1u);
}

static int is_banned(auth_ban_t *b, const uint8_t key[AUTH_BAN_KEY_LEN], uint64_t now)
{
    auth_ban_entry_t *e = find(b, key, 0, now);
    if (e)
        e->last = now;
    return e && e->banned_until > now;
}

/* The table keys of an address and (when given) a user name. */
static void make_keys(uint8_t ak[AUTH_BAN_KEY_LEN], uint8_t uk[AUTH_BAN_KEY_LEN], uint8_t family,
                      const uint8_t addr[16], const char *user)
{
    addr_key(ak, family, addr);
    if (user)
        user_key(uk, user);
}

int auth_ban_blocked(auth_ban_t *b, uint32_t listener, uint8_t family, const uint8_t addr[16],
                     const char *user, uint64_t now)
{
    if (!active(b, listener))
        return 0;
    uint8_t ak[AUTH_BAN_KEY_LEN], uk[AUTH_BAN_KEY_LEN];
    make_keys(ak, uk, family, addr, user);
    pthread_mutex_lock(&b->mu);
    int banned = is_banned(b, ak, now) || (user && is_banned(b, uk, now));
    pthread_mutex_unlock(&b->mu);
    return banned;
}

/* One more failure on key: 1 when it starts a ban. */
static int count_failure(auth_ban_t *b, const uint8_t key[AUTH_BAN_KEY_LEN], uint64_t now)
{
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
        return 1;
    }
    return 0;
}

int auth_ban_failure(auth_ban_t *b, uint32_t listener, uint8_t family, const uint8_t addr[16],
                     const char *user, uint64_t now)
{
    if (!active(b, listener))
        return 0;
    uint8_t ak[AUTH_BAN_KEY_LEN], uk[AUTH_BAN_KEY_LEN];
    make_keys(ak, uk, family, addr, user);
    pthread_mutex_lock(&b->mu);
    int what = count_failure(b, ak, now) ? AUTH_BAN_ADDRESS : 0;
    if (user && count_failure(b, uk, now))
        what |= AUTH_BAN_USER;
    pthread_mutex_unlock(&b->mu);
    return what;
}

void auth_ban_success(auth_ban_t *b, uint32_t listener, const char *user)
{
    if (!active(b, listener) || user == NULL)
        return;
    uint8_t uk[AUTH_BAN_KEY_LEN];
    user_key(uk, user);
    pthread_mutex_lock(&b->mu);
    auth_ban_entry_t *e = find(b, uk, 0, 0);
    if (e)
        e->failures = 0;
    pthread_mutex_unlock(&b->mu);
}

void auth_ban_active(auth_ban_t *b, uint64_t now, uint32_t *addresses, uint32_t *users)
{
    *addresses = *users = 0;
    if (b->v == NULL)
        return;
    pthread_mutex_lock(&b->mu);
    for (uint32_t i = 0; i < b->n; i++) {
        const auth_ban_entry_t *e = &b->v[i];
        if (e->used && e->banned_until > now)
            (*(e->addr[0] == USER_TAG ? users : addresses))++;
    }
    pthread_mutex_unlock(&b->mu);
}
