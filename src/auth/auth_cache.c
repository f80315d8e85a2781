/* auth_cache.c -- bounded TTL cache of auth answers; see auth_cache.h.
 *
 * A chained hash table (power-of-two buckets, at most 2^20) plus a doubly
 * linked list in insertion order: the list head is the oldest entry, the
 * one evicted when the cache is full, and expired entries are dropped when
 * a lookup meets them or when they reach the head during an insert.  The
 * bucket of a key is a SipHash of it under a random key per cache: a key
 * is a plain SHA-256 of what the client sent, which anyone can compute, so
 * its own bits would let a client fill one bucket on purpose.
 */
#include "auth_cache.h"

#include "../core/util.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <string.h>

struct entry {
    uint8_t key[AUTH_CACHE_KEY_LEN];
    uint8_t verdict, cause;
    uint64_t expires_ms;
    char *acl_text;              /* NULL when the answer has no rules */
    struct entry *hnext;         /* bucket chain */
    struct entry *older, *newer; /* insertion order */
};

struct auth_cache {
    pthread_mutex_t mu;
    struct entry **buckets;
    size_t mask;
    size_t len, size;
    uint32_t ttl_ms;
    struct entry *oldest, *newest;
    uint64_t hkey[2]; /* SipHash key of the buckets */
};

auth_cache_t *auth_cache_new(size_t size, uint32_t ttl_ms)
{
    if (size == 0 || ttl_ms == 0)
        return NULL;
    auth_cache_t *c = an_calloc(1, sizeof(*c));
    size_t nb = 16;
    while (nb < size && nb < ((size_t)1 << 20))
        nb <<= 1;
    c->buckets = an_calloc(nb, sizeof(*c->buckets));
    c->mask = nb - 1;
    c->size = size;
    c->ttl_ms = ttl_ms;
    an_random_key(c->hkey);
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

void auth_cache_free(auth_cache_t *c)
{
    if (c == NULL)
        return;
    struct entry *e = c->oldest;
    while (e) {
        struct entry *n = e->newer;
        free(e->acl_text);
        free(e);
        e = n;
    }
    free(c->buckets);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void digest_field(EVP_MD_CTX *ctx, const void *p, size_t n, int present)
{
    uint8_t hdr[5] = {(uint8_t)present, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8),
                      (uint8_t)n};
    EVP_DigestUpdate(ctx, hdr, sizeof(hdr));
    if (present && n)
        EVP_DigestUpdate(ctx, p, n);
}

int auth_cache_key(uint8_t action, const char *client_id, const char *username,
                   const uint8_t *password, size_t password_len, const char *cert_user,
                   const char *topic, uint8_t out[AUTH_CACHE_KEY_LEN])
{
    int rc = -1;
    unsigned int len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        goto out;
    EVP_DigestUpdate(ctx, &action, 1);
    digest_field(ctx, client_id, client_id ? strlen(client_id) : 0, client_id != NULL);
    digest_field(ctx, username, username ? strlen(username) : 0, username != NULL);
    digest_field(ctx, password, password_len, password != NULL);
    digest_field(ctx, cert_user, cert_user ? strlen(cert_user) : 0, cert_user != NULL);
    digest_field(ctx, topic, topic ? strlen(topic) : 0, topic != NULL);
    if (EVP_DigestFinal_ex(ctx, out, &len) != 1 || len != AUTH_CACHE_KEY_LEN)
        goto out;
    rc = 0;
out:
    EVP_MD_CTX_free(ctx);
    return rc;
}

static size_t bucket_of(const auth_cache_t *c, const uint8_t *key)
{
    return (size_t)an_siphash(c->hkey, key, AUTH_CACHE_KEY_LEN) & c->mask;
}

static struct entry **find_slot(auth_cache_t *c, const uint8_t *key)
{
    struct entry **pp = &c->buckets[bucket_of(c, key)];
    while (*pp && memcmp((*pp)->key, key, AUTH_CACHE_KEY_LEN) != 0)
        pp = &(*pp)->hnext;
    return pp;
}

/* Unlink e (found at *slot in its bucket) from both structures and free it. */
static void drop(auth_cache_t *c, struct entry **slot, struct entry *e)
{
    *slot = e->hnext;
    if (e->older)
        e->older->newer = e->newer;
    else
        c->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        c->newest = e->older;
    c->len--;
    free(e->acl_text);
    free(e);
}

int auth_cache_get(auth_cache_t *c, const uint8_t key[AUTH_CACHE_KEY_LEN], uint64_t now_ms,
                   auth_verdict_t *verdict, auth_cause_t *cause, char **acl_text)
{
    if (acl_text)
        *acl_text = NULL;
    int hit = 0;
    if (c == NULL)
        return 0;
    pthread_mutex_lock(&c->mu);
    struct entry **slot = find_slot(c, key);
    struct entry *e = *slot;
    if (e && e->expires_ms <= now_ms) {
        drop(c, slot, e);
    } else if (e) {
        *verdict = (auth_verdict_t)e->verdict;
        *cause = (auth_cause_t)e->cause;
        if (acl_text && e->acl_text)
            *acl_text = an_strndup(e->acl_text, strlen(e->acl_text));
        hit = 1;
    }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

void auth_cache_put(auth_cache_t *c, const uint8_t key[AUTH_CACHE_KEY_LEN], uint64_t now_ms,
                    auth_verdict_t verdict, auth_cause_t cause, const char *acl_text)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->mu);
    struct entry **slot = find_slot(c, key);
    if (*slot)
        drop(c, slot, *slot);
    /* make room: expired entries at the head first, then the oldest */
    while (c->oldest && (c->len >= c->size || c->oldest->expires_ms <= now_ms)) {
        struct entry *old = c->oldest;
        drop(c, find_slot(c, old->key), old);
    }
    struct entry *e = an_malloc(sizeof(*e));
    memcpy(e->key, key, AUTH_CACHE_KEY_LEN);
    e->verdict = (uint8_t)verdict;
    e->cause = (uint8_t)cause;
    e->acl_text = acl_text ? an_strndup(acl_text, strlen(acl_text)) : NULL;
    e->expires_ms = now_ms + c->ttl_ms;
    slot = &c->buckets[bucket_of(c, key)];
    e->hnext = *slot;
    *slot = e;
    e->newer = NULL;
    e->older = c->newest;
    if (c->newest)
        c->newest->newer = e;
    else
        c->oldest = e;
    c->newest = e;
    c->len++;
    pthread_mutex_unlock(&c->mu);
}

size_t auth_cache_len(auth_cache_t *c)
{
    if (c == NULL)
        return 0;
    pthread_mutex_lock(&c->mu);
    size_t n = c->len;
    pthread_mutex_unlock(&c->mu);
    return n;
}

void auth_cache_clear(auth_cache_t *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->mu);
    while (c->oldest)
        drop(c, find_slot(c, c->oldest->key), c->oldest);
    pthread_mutex_unlock(&c->mu);
}
