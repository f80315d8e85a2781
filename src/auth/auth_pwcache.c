/* auth_pwcache.c -- the persistent verification cache; see auth_pwcache.h.
 *
 * The in-memory part is an auth_cache_t whose clock is the wall clock
 * (an_wall_ms): an entry loaded from disk expires at verified_ms + ttl, as
 * it would have had the broker not restarted.  The MAC is computed on the
 * caller's thread (one HMAC-SHA256 on a worker for a lookup: microseconds),
 * K never leaves this struct.
 */
#include "auth_pwcache.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth_cache.h"
#include "auth_chain.h"
#include "auth_passwd.h"
#include "auth_redis.h"
#include "log.h"
#include "util.h"

#define STORE_KEY_LEN (AUTH_PWCACHE_PREFIX_LEN + 2 + AUTH_PWCACHE_MAC_LEN)

struct auth_pwcache {
    store_t *store;
    char tag;
    uint8_t k[AUTH_PWCACHE_KEY_LEN];
    auth_cache_t *mem; /* time base: wall clock, ms */
    uint64_t ttl_ms;
    size_t loaded;
    atomic_uint_fast64_t write_errors;
};

/* ---- pure parts ---- */

int auth_pwcache_mac(const uint8_t k[AUTH_PWCACHE_KEY_LEN], const char *user, const uint8_t *pw,
                     size_t pwlen, const char *verifier, uint8_t out[AUTH_PWCACHE_MAC_LEN])
{
    /* user | 0 | password | 0 | verifier: a user name holds no NUL, a
     * verifier (hash text) neither; a password may, but the verifier that
     * follows it has a fixed form ("$..."), so the split stays unambiguous
     * for any one user */
    size_t ulen = strlen(user), vlen = strlen(verifier), n = ulen + 1 + pwlen + 1 + vlen;
    uint8_t *msg = an_malloc(n);
    unsigned int got = AUTH_PWCACHE_MAC_LEN;
    memcpy(msg, user, ulen + 1);
    if (pwlen)
        memcpy(msg + ulen + 1, pw, pwlen);
    msg[ulen + 1 + pwlen] = 0;
    memcpy(msg + ulen + 2 + pwlen, verifier, vlen);
    int rc = HMAC(EVP_sha256(), k, AUTH_PWCACHE_KEY_LEN, msg, n, out, &got) != NULL &&
                     got == AUTH_PWCACHE_MAC_LEN
                 ? 0
                 : -1;
    OPENSSL_cleanse(msg, n);
    free(msg);
    return rc;
}

size_t auth_pwcache_store_key(char tag, const uint8_t mac[AUTH_PWCACHE_MAC_LEN], uint8_t *out)
{
    memcpy(out, AUTH_PWCACHE_PREFIX, AUTH_PWCACHE_PREFIX_LEN);
    out[AUTH_PWCACHE_PREFIX_LEN] = (uint8_t)tag;
    out[AUTH_PWCACHE_PREFIX_LEN + 1] = '/';
    memcpy(out + AUTH_PWCACHE_PREFIX_LEN + 2, mac, AUTH_PWCACHE_MAC_LEN);
    return STORE_KEY_LEN;
}

void auth_pwcache_encode(uint64_t verified_ms, uint8_t out[AUTH_PWCACHE_VALUE_LEN])
{
    out[0] = 'P';
    out[1] = 1;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(verified_ms >> (56 - 8 * i));
}

int auth_pwcache_decode(const void *v, size_t vl, uint64_t *verified_ms)
{
    const uint8_t *p = v;
    if (vl != AUTH_PWCACHE_VALUE_LEN || p[0] != 'P' || p[1] != 1)
        return -1;
    uint64_t t = 0;
    for (int i = 0; i < 8; i++)
        t = t << 8 | p[2 + i];
    *verified_ms = t;
    return 0;
}

int auth_pwcache_key_file(const char *path, uint8_t k[AUTH_PWCACHE_KEY_LEN], int *created,
                          char *err, size_t errlen)
{
    struct stat st;
    ssize_t got;
    int rc = -1;
    *created = 0;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
            snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
            return -1;
        }
        if (RAND_bytes(k, AUTH_PWCACHE_KEY_LEN) != 1 ||
            write(fd, k, AUTH_PWCACHE_KEY_LEN) != AUTH_PWCACHE_KEY_LEN || fsync(fd) != 0) {
            snprintf(err, errlen, "%s: cannot write a new key: %s", path,
                     errno ? strerror(errno) : "no random bytes");
            close(fd);
            unlink(path);
            OPENSSL_cleanse(k, AUTH_PWCACHE_KEY_LEN);
            return -1;
        }
        close(fd);
        *created = 1;
        return 0;
    }
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        goto out;
    }
    if (st.st_mode & 077) {
        snprintf(err, errlen,
                 "%s: mode %04o: the key of the password cache must be readable by its owner "
                 "only (chmod 600 %s)",
                 path, (unsigned)(st.st_mode & 07777), path);
        goto out;
    }
    if (st.st_size != AUTH_PWCACHE_KEY_LEN) {
        snprintf(err, errlen,
                 "%s: %lld bytes, expected %d (delete it to start with a new key: the cached "
                 "verifications are then dropped)",
                 path, (long long)st.st_size, AUTH_PWCACHE_KEY_LEN);
        goto out;
    }
    got = read(fd, k, AUTH_PWCACHE_KEY_LEN);
    if (got != AUTH_PWCACHE_KEY_LEN) {
        snprintf(err, errlen, "%s: cannot read: %s", path,
                 got < 0 ? strerror(errno) : "short read");
        OPENSSL_cleanse(k, AUTH_PWCACHE_KEY_LEN);
        goto out;
    }
    rc = 0;
out:
    close(fd);
    return rc;
}

/* ---- loading ---- */

typedef struct {
    uint8_t mac[AUTH_PWCACHE_MAC_LEN];
    uint64_t verified_ms;
} loaded_t;

typedef struct {
    uint64_t now_ms, ttl_ms;
    loaded_t *v;
    size_t n, cap;
    store_batch_t *del; /* expired or malformed entries */
    size_t ndel;
} load_ctx_t;

static int load_one(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    load_ctx_t *lc = ud;
    uint64_t t;
    /* expired, from the future (a clock set back: not trusted), malformed */
    if (kl != STORE_KEY_LEN || auth_pwcache_decode(v, vl, &t) < 0 || t + lc->ttl_ms <= lc->now_ms ||
        t > lc->now_ms + 60000) {
        store_batch_del(lc->del, k, kl);
        lc->ndel++;
        return 0;
    }
    if (lc->n == lc->cap) {
        lc->cap = lc->cap ? 2 * lc->cap : 1024;
        lc->v = an_realloc(lc->v, lc->cap * sizeof(*lc->v));
    }
    memcpy(lc->v[lc->n].mac, (const uint8_t *)k + AUTH_PWCACHE_PREFIX_LEN + 2,
           AUTH_PWCACHE_MAC_LEN);
    lc->v[lc->n].verified_ms = t;
    lc->n++;
    return 0;
}

static int loaded_cmp(const void *a, const void *b)
{
    uint64_t x = ((const loaded_t *)a)->verified_ms, y = ((const loaded_t *)b)->verified_ms;
    return x < y ? -1 : x > y;
}

auth_pwcache_t *auth_pwcache_open(store_t *s, const char *dir, char tag, size_t size,
                                  uint32_t ttl_s, char *err, size_t errlen)
{
    char path[512];
    int created = 0, rc;
    uint8_t prefix[AUTH_PWCACHE_PREFIX_LEN + 2];
    memcpy(prefix, AUTH_PWCACHE_PREFIX, AUTH_PWCACHE_PREFIX_LEN);
    prefix[AUTH_PWCACHE_PREFIX_LEN] = (uint8_t)tag;
    prefix[AUTH_PWCACHE_PREFIX_LEN + 1] = '/';
    snprintf(path, sizeof(path), "%s/%s", dir, AUTH_PWCACHE_KEYFILE);
    auth_pwcache_t *pc = an_calloc(1, sizeof(*pc));
    pc->store = s;
    pc->tag = tag;
    pc->ttl_ms = (uint64_t)ttl_s * 1000u;
    if (auth_pwcache_key_file(path, pc->k, &created, err, errlen) < 0)
        goto fail;
    pc->mem = auth_cache_new(size ? size : 1, (uint32_t)AN_MIN(pc->ttl_ms, (uint64_t)UINT32_MAX));
    load_ctx_t lc = {.now_ms = an_wall_ms(), .ttl_ms = pc->ttl_ms, .del = store_batch_new()};
    if (created) {
        /* a new key: whatever the store holds was made under another one */
        store_batch_del_prefix(lc.del, prefix, sizeof(prefix));
        lc.ndel = 1;
    } else if ((rc = store_scan(s, prefix, sizeof(prefix), load_one, &lc)) < 0) {
        snprintf(err, errlen, "auth.password_cache: reading the store: %s", store_strerror(rc));
        store_batch_free(lc.del);
        free(lc.v);
        goto fail;
    }
    if (lc.ndel && (rc = store_submit_sync(s, lc.del)) < 0)
        log_warn("auth.password_cache: old entries not deleted from the store: %s",
                 store_strerror(rc));
    else if (lc.ndel == 0)
        store_batch_free(lc.del);
    if (lc.n)
        qsort(lc.v, lc.n, sizeof(*lc.v), loaded_cmp); /* oldest first: the newest stay */
    for (size_t i = 0; i < lc.n; i++)
        auth_cache_put(pc->mem, lc.v[i].mac, lc.v[i].verified_ms, AUTH_ALLOW, 0, NULL);
    pc->loaded = auth_cache_len(pc->mem);
    free(lc.v);
    log_info("auth.password_cache: persistent (%s): %zu verification(s) loaded, %zu expired "
             "dropped%s; key %s",
             tag == 'r' ? "redis" : "password_file", pc->loaded, created ? 0 : lc.ndel,
             created ? " (new key: the store's entries dropped)" : "", path);
    return pc;
fail:
    auth_pwcache_free(pc);
    return NULL;
}

void auth_pwcache_free(auth_pwcache_t *pc)
{
    if (pc == NULL)
        return;
    /* a barrier: every record's write_done has run once it returns */
    if (pc->mem)
        store_submit_sync(pc->store, store_batch_new());
    auth_cache_free(pc->mem);
    OPENSSL_cleanse(pc->k, sizeof(pc->k));
    free(pc);
}

int auth_pwcache_lookup(auth_pwcache_t *pc, const char *user, const uint8_t *pw, size_t pwlen,
                        const char *verifier)
{
    uint8_t mac[AUTH_PWCACHE_MAC_LEN];
    auth_verdict_t v;
    auth_cause_t cause;
    if (auth_pwcache_mac(pc->k, user, pw, pwlen, verifier, mac) < 0)
        return 0;
    return auth_cache_get(pc->mem, mac, an_wall_ms(), &v, &cause, NULL) && v == AUTH_ALLOW;
}

static void write_done(void *ud, int err)
{
    auth_pwcache_t *pc = ud;
    if (err < 0 && atomic_fetch_add_explicit(&pc->write_errors, 1, memory_order_relaxed) % 1000 ==
                       0) /* the first, then one line per thousand */
        log_warn("auth.password_cache: an entry was not stored: %s (the check stands; the next "
                 "restart costs this client a PBKDF2)",
                 store_strerror(err));
}

void auth_pwcache_record(auth_pwcache_t *pc, const char *user, const uint8_t *pw, size_t pwlen,
                         const char *verifier)
{
    uint8_t mac[AUTH_PWCACHE_MAC_LEN], key[STORE_KEY_LEN], val[AUTH_PWCACHE_VALUE_LEN];
    uint64_t now = an_wall_ms();
    if (auth_pwcache_mac(pc->k, user, pw, pwlen, verifier, mac) < 0)
        return;
    auth_cache_put(pc->mem, mac, now, AUTH_ALLOW, 0, NULL);
    auth_pwcache_store_key(pc->tag, mac, key);
    auth_pwcache_encode(now, val);
    store_batch_t *b = store_batch_new();
    store_batch_put(b, key, sizeof(key), val, sizeof(val));
    /* write_done runs on the committer; auth_pwcache_free waits for it */
    if (store_submit(pc->store, b, write_done, pc) < 0)
        atomic_fetch_add_explicit(&pc->write_errors, 1, memory_order_relaxed);
}

int auth_pwcache_setup(auth_chain_t *ch, store_t *s, const conf_t *conf, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        char tag;
        void (*use)(auth_backend_t *, auth_pwcache_t *);
    } users[] = {{"password_file", 'f', auth_passwd_use_pwcache},
                 {"redis", 'r', auth_redis_use_pwcache}};
    const conf_auth_t *a = &conf->auth;
    if (a->password_cache != CONF_PWCACHE_PERSISTENT || ch == NULL)
        return 0;
    if (s == NULL) { /* conf_load refuses it; a caller without a store */
        snprintf(err, errlen, "auth.password_cache: persistent needs persistence.enabled: true");
        return -1;
    }
    for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++) {
        auth_backend_t *b = auth_chain_backend(ch, users[i].name);
        if (b == NULL)
            continue;
        auth_pwcache_t *pc =
            auth_pwcache_open(s, conf->data_dir, users[i].tag, a->password_cache_size,
                              a->password_cache_persistent_ttl_s, err, errlen);
        if (pc == NULL)
            return -1;
        users[i].use(b, pc);
    }
    return 0;
}

size_t auth_pwcache_loaded(const auth_pwcache_t *pc)
{
    return pc ? pc->loaded : 0;
}
