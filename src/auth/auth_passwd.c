/* auth_passwd.c -- password file: verifiers, loading, the backend with its
 * verification threads and cache, the CLI.
 *
 * Verifiers are PBKDF2-HMAC-SHA512 (OpenSSL PKCS5_PBKDF2_HMAC) over a
 * random 16-byte salt (RAND_bytes), stored as RFC 5802's StoredKey and
 * ServerKey (auth_passwd.h); comparison is CRYPTO_memcmp.  The iteration
 * count is stored per line, so it can be raised without invalidating old
 * lines.  PBKDF2 makes each check cost what the iterations cost (see
 * docs/architecture.md, "Authentication", for the figures).
 *
 * The backend keeps the users in an array sorted by name (binary search),
 * replaced whole on reload: readers take the read lock, the main thread
 * swaps it under the write lock (SIGHUP) and clears the cache of
 * successful checks under that same lock, so no check made against the old
 * file can be cached after the swap (threads insert under the read lock).
 *
 * Threads: workers call check(): a cache lookup (an HMAC-SHA256 of user and
 * password under a per-process random key, so the cache holds no password
 * and no fast oracle for one), then a job on the bounded queue (a jobq_t,
 * src/core/jobq.h).  Its pool of auth.password_threads threads, at a lower
 * CPU priority than the workers (nice +10: a wrong-password flood slows
 * logins down, not other clients), runs the jobs: look the user up, run
 * PBKDF2 (a dummy verifier for an unknown user: same cost) and call done()
 * under done_mu; destroy() sets stopping under done_mu first, so done() is
 * never called after destroy() returns.
 */
#include "auth_passwd.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "auth_async.h"
#include "auth_cache.h"
#include "auth_pwcache.h"
#include "b64.h"
#include "log.h"
#include "util.h"

#define PREFIX_PBKDF2 "$pbkdf2-sha512$"
#define PREFIX_SCRAM "$scram-sha-512$"
#define PREFIX_MOSQ "$7$" /* mosquitto_passwd 2.x: PBKDF2-SHA512, the same fields */
#define MOSQ_SALT_LEN 12  /* what mosquitto_passwd draws */
#define MAX_ITERATIONS 10000000u
#define MAX_THREADS 64
#define DK AUTH_PASSWD_DK_LEN

/* ---- hash format ---- */

static void hmac512(const uint8_t *key, size_t klen, const void *msg, size_t mlen, uint8_t *out)
{
    unsigned int n = DK;
    HMAC(EVP_sha512(), key, (int)klen, msg, mlen, out, &n);
}

void auth_passwd_scram_keys(const uint8_t salted[DK], uint8_t stored[DK], uint8_t server[DK])
{
    uint8_t client_key[DK];
    hmac512(salted, DK, "Client Key", 10, client_key);
    SHA512(client_key, DK, stored);
    hmac512(salted, DK, "Server Key", 10, server);
    OPENSSL_cleanse(client_key, sizeof(client_key));
}

/* One "$"-terminated (or final) base64 field of exactly `want` bytes (or,
 * when want is 0, 8 to AUTH_PASSWD_SALT_MAX): its length, or -1. */
static long b64_field(const char **p, int last, uint8_t *out, size_t want)
{
    const char *s = *p, *end = last ? s + strlen(s) : strchr(s, '$');
    if (end == NULL)
        return -1;
    uint8_t buf[AUTH_PASSWD_SALT_MAX > DK ? AUTH_PASSWD_SALT_MAX : DK];
    long n = b64_decode(s, (size_t)(end - s), buf, sizeof(buf));
    if (want ? n != (long)want : (n < 8 || n > AUTH_PASSWD_SALT_MAX))
        return -1;
    memcpy(out, buf, (size_t)n);
    *p = last ? end : end + 1;
    return n;
}

int auth_passwd_decode(const char *hash, auth_passwd_rec_t *rec, const char **why)
{
    const char *w = "not a $scram-sha-512$, $pbkdf2-sha512$ or $7$ (mosquitto_passwd) hash";
    const char *p;
    memset(rec, 0, sizeof(*rec));
    if (strncmp(hash, PREFIX_SCRAM, strlen(PREFIX_SCRAM)) == 0) {
        rec->kind = AUTH_PASSWD_SCRAM;
        p = hash + strlen(PREFIX_SCRAM);
    } else if (strncmp(hash, PREFIX_PBKDF2, strlen(PREFIX_PBKDF2)) == 0) {
        rec->kind = AUTH_PASSWD_PBKDF2;
        p = hash + strlen(PREFIX_PBKDF2);
    } else if (strncmp(hash, PREFIX_MOSQ, strlen(PREFIX_MOSQ)) == 0) {
        rec->kind = AUTH_PASSWD_PBKDF2; /* $7$ITERATIONS$SALT$SaltedPassword */
        p = hash + strlen(PREFIX_MOSQ);
    } else {
        if (strncmp(hash, "$6$", 3) == 0)
            w = "a $6$ (mosquitto 1.x, one SHA-512 round) hash: too weak to accept; set the "
                "password again with antenna passwd or mosquitto_passwd 2.x";
        goto bad;
    }
    char *end;
    errno = 0;
    unsigned long it = strtoul(p, &end, 10);
    w = "bad iteration count";
    if (end == p || *end != '$' || errno || it < 1 || it > MAX_ITERATIONS || *p == '0')
        goto bad;
    rec->iterations = (uint32_t)it;
    p = end + 1;
    long sl = b64_field(&p, 0, rec->salt, 0);
    w = strchr(p - 1, '$') ? "bad salt (base64, 8 to 48 bytes)" : "missing hash";
    if (sl < 0)
        goto bad;
    rec->salt_len = (size_t)sl;
    if (rec->kind == AUTH_PASSWD_PBKDF2) {
        w = "bad hash (base64 of 64 bytes)";
        if (b64_field(&p, 1, rec->key, DK) < 0)
            goto bad;
        return 0;
    }
    w = "bad StoredKey (base64 of 64 bytes)";
    if (b64_field(&p, 0, rec->key, DK) < 0)
        goto bad;
    w = "bad ServerKey (base64 of 64 bytes)";
    if (b64_field(&p, 1, rec->server_key, DK) < 0)
        goto bad;
    return 0;
bad:
    memset(rec, 0, sizeof(*rec));
    if (why)
        *why = w;
    return -1;
}

int auth_passwd_hash(const uint8_t *pw, size_t len, uint32_t iterations, char *out, size_t outlen)
{
    uint8_t salt[AUTH_PASSWD_SALT_LEN], salted[DK], stored[DK], server[DK];
    char s64[B64_ENCODED_LEN(AUTH_PASSWD_SALT_LEN) + 1];
    char k64[B64_ENCODED_LEN(DK) + 1], v64[B64_ENCODED_LEN(DK) + 1];
    int rc = -1;
    if (iterations < 1 || iterations > MAX_ITERATIONS)
        return -1;
    if (RAND_bytes(salt, sizeof(salt)) != 1)
        return -1;
    if (PKCS5_PBKDF2_HMAC((const char *)pw, (int)len, salt, sizeof(salt), (int)iterations,
                          EVP_sha512(), sizeof(salted), salted) != 1)
        goto out;
    auth_passwd_scram_keys(salted, stored, server);
    b64_encode(salt, sizeof(salt), s64);
    b64_encode(stored, sizeof(stored), k64);
    b64_encode(server, sizeof(server), v64);
    int n = snprintf(out, outlen, PREFIX_SCRAM "%u$%s$%s$%s", iterations, s64, k64, v64);
    rc = n > 0 && (size_t)n < outlen ? 0 : -1;
out:
    OPENSSL_cleanse(salted, sizeof(salted));
    return rc;
}

int auth_passwd_hash_mosquitto(const uint8_t *pw, size_t len, uint32_t iterations, char *out,
                               size_t outlen)
{
    uint8_t salt[MOSQ_SALT_LEN], salted[DK];
    char s64[B64_ENCODED_LEN(MOSQ_SALT_LEN) + 1], k64[B64_ENCODED_LEN(DK) + 1];
    int rc = -1;
    if (iterations < 1 || iterations > MAX_ITERATIONS || RAND_bytes(salt, sizeof(salt)) != 1)
        return -1;
    if (PKCS5_PBKDF2_HMAC((const char *)pw, (int)len, salt, sizeof(salt), (int)iterations,
                          EVP_sha512(), sizeof(salted), salted) != 1)
        goto out;
    b64_encode(salt, sizeof(salt), s64);
    b64_encode(salted, sizeof(salted), k64);
    int n = snprintf(out, outlen, PREFIX_MOSQ "%u$%s$%s", iterations, s64, k64);
    rc = n > 0 && (size_t)n < outlen ? 0 : -1;
out:
    OPENSSL_cleanse(salted, sizeof(salted));
    return rc;
}

/* 1 when pw matches rec, 0 when not, -1 when PBKDF2 fails. */
static int rec_verify(const auth_passwd_rec_t *rec, const uint8_t *pw, size_t len)
{
    uint8_t salted[DK], stored[DK], server[DK];
    if (PKCS5_PBKDF2_HMAC((const char *)pw, (int)len, rec->salt, (int)rec->salt_len,
                          (int)rec->iterations, EVP_sha512(), sizeof(salted), salted) != 1)
        return -1;
    int ok;
    if (rec->kind == AUTH_PASSWD_SCRAM) {
        auth_passwd_scram_keys(salted, stored, server);
        ok = CRYPTO_memcmp(stored, rec->key, DK) == 0;
    } else {
        ok = CRYPTO_memcmp(salted, rec->key, DK) == 0;
    }
    OPENSSL_cleanse(salted, sizeof(salted));
    return ok;
}

int auth_passwd_verify(const char *hash, const uint8_t *pw, size_t len)
{
    auth_passwd_rec_t rec;
    if (auth_passwd_decode(hash, &rec, NULL) < 0)
        return -1;
    int ok = rec_verify(&rec, pw, len);
    OPENSSL_cleanse(&rec, sizeof(rec));
    return ok;
}

/* ---- the file ---- */

typedef struct {
    char *user;
    char *hash;
} pw_entry_t;

typedef struct {
    pw_entry_t *v;
    size_t n;
} pw_table_t;

static void table_free(pw_table_t *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->v[i].user);
        free(t->v[i].hash);
    }
    free(t->v);
    t->v = NULL;
    t->n = 0;
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const pw_entry_t *)a)->user, ((const pw_entry_t *)b)->user);
}

static int user_valid(const char *u, size_t len)
{
    if (len == 0 || len > 65535)
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)u[i] < 0x20 || u[i] == ':' || u[i] == 0x7f)
            return 0;
    return 1;
}

/* Load `path`: 0, or -1 with err "PATH:LINE: problem" (t untouched). */
static int table_load(const char *path, pw_table_t *t, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    pw_table_t nt = {0};
    size_t cap = 0, lineno = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t got;
    int rc = -1;
    while ((got = getline(&line, &lcap, f)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0 || line[0] == '#')
            continue;
        if (strlen(line) != len) {
            snprintf(err, errlen, "%s:%zu: contains a NUL character", path, lineno);
            goto out;
        }
        char *colon = strchr(line, ':');
        if (colon == NULL) {
            snprintf(err, errlen, "%s:%zu: expected user:hash", path, lineno);
            goto out;
        }
        if (!user_valid(line, (size_t)(colon - line))) {
            snprintf(err, errlen, "%s:%zu: bad user name", path, lineno);
            goto out;
        }
        const char *why = NULL;
        auth_passwd_rec_t rec;
        if (auth_passwd_decode(colon + 1, &rec, &why) < 0) {
            snprintf(err, errlen, "%s:%zu: %s", path, lineno, why);
            goto out;
        }
        if (nt.n == cap) {
            cap = cap ? 2 * cap : 64;
            nt.v = an_realloc(nt.v, cap * sizeof(*nt.v));
        }
        nt.v[nt.n].user = an_strndup(line, (size_t)(colon - line));
        nt.v[nt.n].hash = an_strndup(colon + 1, strlen(colon + 1));
        nt.n++;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        goto out;
    }
    if (nt.n)
        qsort(nt.v, nt.n, sizeof(*nt.v), entry_cmp);
    for (size_t i = 1; i < nt.n; i++)
        if (strcmp(nt.v[i - 1].user, nt.v[i].user) == 0) {
            snprintf(err, errlen, "%s: user '%s' is listed twice", path, nt.v[i].user);
            goto out;
        }
    *t = nt;
    nt.v = NULL;
    nt.n = 0;
    rc = 0;
out:
    table_free(&nt);
    free(line);
    fclose(f);
    return rc;
}

/* ---- the backend ---- */

typedef struct {
    auth_backend_t b;
    char path[256];
    pthread_rwlock_t lock; /* t, dummy, iterations, gen */
    pw_table_t t;
    uint32_t iterations;     /* the file's usual count: dummy and fake SCRAM records */
    auth_passwd_rec_t dummy; /* verified against for unknown users */
    uint64_t gen;            /* bumped by each reload */
    uint8_t secret[32];      /* per process: cache keys, fake SCRAM salts */
    auth_cache_t *cache;     /* successful checks; NULL when off */
    auth_pwcache_t *pcache;  /* auth.password_cache: persistent (then cache is NULL) */
    jobq_t *q;               /* NULL without threads */
    uint32_t nthreads;
    pthread_mutex_t done_mu; /* held around done(); stopping set under it */
    int stopping;
    _Atomic uint64_t legacy_warned_ms; /* last "old format" line (SCRAM) */
    atomic_uint_fast64_t verified, cache_hits, queue_full;
} pw_backend_t;

static int u32_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* The most frequent iteration count of the table (the larger on a tie), or
 * the default for an empty file: what an unknown user's check costs. */
static uint32_t usual_iterations(const pw_table_t *t)
{
    uint32_t best = AUTH_PASSWD_ITERATIONS;
    size_t best_n = 0, n = 0;
    uint32_t *v = an_malloc((t->n ? t->n : 1) * sizeof(*v));
    for (size_t i = 0; i < t->n; i++) {
        auth_passwd_rec_t r;
        if (auth_passwd_decode(t->v[i].hash, &r, NULL) == 0)
            v[n++] = r.iterations;
    }
    qsort(v, n, sizeof(*v), u32_cmp);
    for (size_t i = 0, run = 1; i < n; i++, run++) {
        if (i + 1 < n && v[i + 1] == v[i])
            continue;
        if (run >= best_n) { /* sorted: a tie goes to the larger count */
            best = v[i];
            best_n = run;
        }
        run = 0;
    }
    free(v);
    return best;
}

/* A verifier of a random password with `iterations`. */
static void make_dummy(auth_passwd_rec_t *d, uint32_t iterations)
{
    uint8_t pw[32];
    char hash[AUTH_PASSWD_HASH_MAX];
    RAND_bytes(pw, sizeof(pw));
    memset(d, 0, sizeof(*d));
    if (auth_passwd_hash(pw, sizeof(pw), iterations, hash, sizeof(hash)) == 0)
        auth_passwd_decode(hash, d, NULL);
    if (d->kind == 0) { /* cannot fail short of OpenSSL failing: keep the cost */
        d->kind = AUTH_PASSWD_SCRAM;
        d->iterations = iterations;
        d->salt_len = AUTH_PASSWD_SALT_LEN;
    }
    OPENSSL_cleanse(pw, sizeof(pw));
}

static pw_entry_t *table_find(pw_table_t *t, const char *user)
{
    pw_entry_t key = {.user = (char *)user};
    return t->n ? bsearch(&key, t->v, t->n, sizeof(key), entry_cmp) : NULL;
}

int auth_passwd_lookup(auth_backend_t *b, const char *user, char *out, size_t outlen)
{
    pw_backend_t *pb = (pw_backend_t *)b;
    int rc = -1;
    pthread_rwlock_rdlock(&pb->lock);
    pw_entry_t *e = table_find(&pb->t, user);
    if (e && strlen(e->hash) < outlen) {
        memcpy(out, e->hash, strlen(e->hash) + 1);
        rc = 0;
    }
    pthread_rwlock_unlock(&pb->lock);
    return rc;
}

int auth_passwd_scram_record(auth_backend_t *b, const char *user, auth_passwd_rec_t *rec)
{
    pw_backend_t *pb = (pw_backend_t *)b;
    int real = 0, legacy = 0;
    pthread_rwlock_rdlock(&pb->lock);
    pw_entry_t *e = table_find(&pb->t, user);
    if (e && auth_passwd_decode(e->hash, rec, NULL) == 0) {
        real = rec->kind == AUTH_PASSWD_SCRAM;
        legacy = !real;
    }
    uint32_t iterations = pb->iterations;
    pthread_rwlock_unlock(&pb->lock);
    if (real)
        return 1;
    if (legacy) {
        uint64_t now = an_now_ms(), last = atomic_load(&pb->legacy_warned_ms);
        if ((last == 0 || now - last >= 60000) &&
            atomic_compare_exchange_strong(&pb->legacy_warned_ms, &last, now))
            log_warn("SCRAM-SHA-512 refused for user '%s': its line in %s is in the older "
                     "$pbkdf2-sha512$ or mosquitto's $7$ format, which SCRAM cannot use "
                     "safely; run `antenna passwd` for it again (plain password logins still "
                     "work)",
                     user, pb->path);
    }
    /* fake, but the same for this user every time */
    uint8_t mac[DK];
    size_t ulen = strlen(user);
    uint8_t *msg = an_malloc(ulen + 5);
    memcpy(msg, "salt", 4);
    memcpy(msg + 4, user, ulen + 1);
    hmac512(pb->secret, sizeof(pb->secret), msg, ulen + 5, mac);
    free(msg);
    memset(rec, 0, sizeof(*rec));
    rec->kind = AUTH_PASSWD_SCRAM;
    rec->iterations = iterations;
    rec->salt_len = AUTH_PASSWD_SALT_LEN;
    memcpy(rec->salt, mac, AUTH_PASSWD_SALT_LEN);
    RAND_bytes(rec->key, DK);
    RAND_bytes(rec->server_key, DK);
    return 0;
}

/* The cache key of (user, password): HMAC-SHA256 under the process's
 * secret.  0, or -1 (OpenSSL failed: do not use the cache). */
static int cache_key(const pw_backend_t *pb, const char *user, const uint8_t *pw, size_t len,
                     uint8_t key[AUTH_CACHE_KEY_LEN])
{
    size_t ulen = strlen(user);
    uint8_t *msg = an_malloc(ulen + 1 + len);
    unsigned int n = AUTH_CACHE_KEY_LEN;
    memcpy(msg, user, ulen + 1); /* the NUL separates user and password */
    if (len)
        memcpy(msg + ulen + 1, pw, len);
    int rc =
        HMAC(EVP_sha256(), pb->secret, sizeof(pb->secret), msg, ulen + 1 + len, key, &n) != NULL &&
                n == AUTH_CACHE_KEY_LEN
            ? 0
            : -1;
    OPENSSL_cleanse(msg, ulen + 1 + len);
    free(msg);
    return rc;
}

/* The check itself (any thread): ALLOW, DENY 0x86 or PASS (unknown user,
 * after a dummy PBKDF2 of the same cost). */
static auth_verdict_t verify_now(pw_backend_t *pb, const char *user, const uint8_t *pw, size_t len,
                                 auth_answer_t *out)
{
    auth_passwd_rec_t rec;
    char verifier[AUTH_PASSWD_HASH_MAX] = "";
    pthread_rwlock_rdlock(&pb->lock);
    pw_entry_t *e = table_find(&pb->t, user);
    int known = e && auth_passwd_decode(e->hash, &rec, NULL) == 0;
    if (!known)
        rec = pb->dummy;
    else if (pb->pcache && strlen(e->hash) < sizeof(verifier))
        memcpy(verifier, e->hash, strlen(e->hash) + 1);
    uint64_t gen = pb->gen;
    pthread_rwlock_unlock(&pb->lock);
    int ok = rec_verify(&rec, pw, len) == 1 && known;
    OPENSSL_cleanse(&rec, sizeof(rec));
    atomic_fetch_add_explicit(&pb->verified, 1, memory_order_relaxed);
    memset(out, 0, sizeof(*out));
    if (ok && pb->pcache) { /* the verifier is in its MAC: no generation to check */
        if (verifier[0])
            auth_pwcache_record(pb->pcache, user, pw, len, verifier);
        return out->verdict = AUTH_ALLOW;
    }
    if (ok) {
        uint8_t key[AUTH_CACHE_KEY_LEN];
        /* under the read lock: a reload clears the cache under the write
         * lock, so a check against the old file is never cached after it */
        pthread_rwlock_rdlock(&pb->lock);
        if (pb->cache && gen == pb->gen && cache_key(pb, user, pw, len, key) == 0)
            auth_cache_put(pb->cache, key, an_now_ms(), AUTH_ALLOW, 0, NULL);
        pthread_rwlock_unlock(&pb->lock);
        return out->verdict = AUTH_ALLOW;
    }
    if (!known)
        return out->verdict = AUTH_PASS; /* not ours: maybe the next backend's */
    out->cause = AUTH_BAD_CREDENTIALS;
    return out->verdict = AUTH_DENY;
}

/* A verification thread (the queue's pool): one check. */
static void pw_run(void *arg, jobq_link_t *link, jobq_slot_t *slot)
{
    pw_backend_t *pb = arg;
    auth_job_t *j = container_of(link, auth_job_t, link);
    auth_answer_t a;
    AN_UNUSED(slot); /* the slot is released when this returns */
    verify_now(pb, j->username, j->password, j->password_len, &a);
    OPENSSL_cleanse(j->password, j->password_len);
    pthread_mutex_lock(&pb->done_mu);
    if (!pb->stopping)
        j->done(j->token, &a);
    pthread_mutex_unlock(&pb->done_mu);
    auth_job_free(j);
}

/* Queued and never run (destroy): freed, never answered. */
static void pw_drop(void *arg, jobq_link_t *link)
{
    auth_job_t *j = container_of(link, auth_job_t, link);
    AN_UNUSED(arg);
    OPENSSL_cleanse(j->password, j->password_len);
    auth_job_free(j);
}

/* auth.password_cache: persistent: 1 when this user's password passed a
 * PBKDF2 check against its current line less than the TTL ago. */
static int pcache_hit(pw_backend_t *pb, const auth_request_t *r)
{
    char verifier[AUTH_PASSWD_HASH_MAX] = "";
    pthread_rwlock_rdlock(&pb->lock);
    pw_entry_t *e = table_find(&pb->t, r->username);
    if (e && strlen(e->hash) < sizeof(verifier))
        memcpy(verifier, e->hash, strlen(e->hash) + 1);
    pthread_rwlock_unlock(&pb->lock);
    return verifier[0] &&
           auth_pwcache_lookup(pb->pcache, r->username, r->password, r->password_len, verifier);
}

static auth_verdict_t pw_check(auth_backend_t *b, const auth_request_t *r, auth_answer_t *out,
                               auth_done_fn done, void *token)
{
    pw_backend_t *pb = (pw_backend_t *)b;
    memset(out, 0, sizeof(*out));
    if (r->action != AUTH_ACT_CONNECT || r->username == NULL)
        return out->verdict = AUTH_PASS;
    if (r->password == NULL) { /* nothing to hash: known or not, no cost */
        pthread_rwlock_rdlock(&pb->lock);
        int known = table_find(&pb->t, r->username) != NULL;
        pthread_rwlock_unlock(&pb->lock);
        if (!known)
            return out->verdict = AUTH_PASS;
        out->cause = AUTH_BAD_CREDENTIALS;
        return out->verdict = AUTH_DENY;
    }
    if (pb->pcache && pcache_hit(pb, r)) {
        atomic_fetch_add_explicit(&pb->cache_hits, 1, memory_order_relaxed);
        return out->verdict = AUTH_ALLOW;
    }
    if (pb->cache) {
        uint8_t key[AUTH_CACHE_KEY_LEN];
        auth_cause_t cause;
        auth_verdict_t v;
        if (cache_key(pb, r->username, r->password, r->password_len, key) == 0 &&
            auth_cache_get(pb->cache, key, an_now_ms(), &v, &cause, NULL) && v == AUTH_ALLOW) {
            atomic_fetch_add_explicit(&pb->cache_hits, 1, memory_order_relaxed);
            return out->verdict = AUTH_ALLOW;
        }
    }
    if (done == NULL || pb->nthreads == 0) /* a caller that cannot wait */
        return verify_now(pb, r->username, r->password, r->password_len, out);
    auth_job_t *j = auth_job_new(r, done, token, 0);
    if (jobq_push(pb->q, &j->link) != JOBQ_OK) {
        OPENSSL_cleanse(j->password, j->password_len);
        auth_job_free(j);
        uint64_t n = atomic_fetch_add_explicit(&pb->queue_full, 1, memory_order_relaxed);
        if (n % 1000 == 0) { /* the first refusal, then one line per thousand */
            log_fields_t f = {.event = "auth_backend_error",
                              .client_id = r->client_id,
                              .username = r->username,
                              .peer = r->peer,
                              .reason = auth_cause_name(AUTH_BUSY),
                              .backend = "password_file"};
            log_ev(AN_LOG_WARN, &f,
                   "password file: %u checks waiting, client '%s' (%s) refused (0x97) "
                   "(%llu so far)",
                   (unsigned)jobq_cap(pb->q), r->client_id ? r->client_id : "",
                   r->peer ? r->peer : "", (unsigned long long)n + 1);
        }
        out->cause = AUTH_BUSY;
        return out->verdict = AUTH_DENY;
    }
    return AUTH_PENDING;
}

static int pw_reload(auth_backend_t *b)
{
    pw_backend_t *pb = (pw_backend_t *)b;
    pw_table_t nt, old;
    char err[512];
    if (table_load(pb->path, &nt, err, sizeof(err)) < 0) {
        log_error("password file not reloaded, the previous users stay: %s", err);
        return -1;
    }
    uint32_t it = usual_iterations(&nt);
    auth_passwd_rec_t dummy = pb->dummy;
    if (it != pb->iterations)
        make_dummy(&dummy, it);
    pthread_rwlock_wrlock(&pb->lock);
    old = pb->t;
    pb->t = nt;
    pb->iterations = it;
    pb->dummy = dummy;
    pb->gen++;
    auth_cache_clear(pb->cache);
    pthread_rwlock_unlock(&pb->lock);
    log_info("password file %s reloaded: %zu users", pb->path, nt.n);
    table_free(&old);
    return 0;
}

static void pw_destroy(auth_backend_t *b)
{
    pw_backend_t *pb = (pw_backend_t *)b;
    pthread_mutex_lock(&pb->done_mu);
    pb->stopping = 1;
    pthread_mutex_unlock(&pb->done_mu);
    jobq_free(pb->q); /* what was still queued: freed, never answered */
    auth_cache_free(pb->cache);
    auth_pwcache_free(pb->pcache);
    table_free(&pb->t);
    pthread_rwlock_destroy(&pb->lock);
    pthread_mutex_destroy(&pb->done_mu);
    OPENSSL_cleanse(pb->secret, sizeof(pb->secret));
    free(pb);
}

void auth_passwd_stats(auth_backend_t *b, auth_passwd_stats_t *out)
{
    pw_backend_t *pb = (pw_backend_t *)b;
    out->verified = atomic_load_explicit(&pb->verified, memory_order_relaxed);
    out->cache_hits = atomic_load_explicit(&pb->cache_hits, memory_order_relaxed);
    out->queue_full = atomic_load_explicit(&pb->queue_full, memory_order_relaxed);
    out->persistent_loaded = auth_pwcache_loaded(pb->pcache);
}

void auth_passwd_use_pwcache(auth_backend_t *b, auth_pwcache_t *pc)
{
    pw_backend_t *pb = (pw_backend_t *)b;
    auth_cache_free(pb->cache); /* the persistent cache replaces it */
    pb->cache = NULL;
    pb->pcache = pc;
}

auth_backend_t *auth_passwd_new(const conf_t *conf, char *err, size_t errlen)
{
    const conf_auth_t *a = &conf->auth;
    const char *path = a->password_file;
    if (path[0] == '\0') {
        snprintf(err, errlen, "auth.password_file: required by the password_file backend");
        return NULL;
    }
    pw_table_t t;
    if (table_load(path, &t, err, errlen) < 0)
        return NULL;
    pw_backend_t *pb = an_calloc(1, sizeof(*pb));
    pb->b.name = "password_file";
    pb->b.check = pw_check;
    pb->b.reload = pw_reload;
    pb->b.destroy = pw_destroy;
    snprintf(pb->path, sizeof(pb->path), "%s", path);
    pthread_rwlock_init(&pb->lock, NULL);
    pthread_mutex_init(&pb->done_mu, NULL);
    pb->t = t;
    pb->iterations = usual_iterations(&t);
    make_dummy(&pb->dummy, pb->iterations);
    if (RAND_bytes(pb->secret, sizeof(pb->secret)) != 1) {
        snprintf(err, errlen, "auth.password_file: no random bytes for the cache key");
        goto fail;
    }
    if (a->password_cache_ttl_s)
        pb->cache = auth_cache_new(a->password_cache_size ? a->password_cache_size : 1,
                                   a->password_cache_ttl_s * 1000u);
    uint32_t want = AN_MIN(a->password_threads, MAX_THREADS);
    if (want) {
        /* below the workers: hashing yields the CPU to the clients' traffic */
        jobq_opts_t qo = {.cap = a->password_queue ? a->password_queue : 10000,
                          .threads = want,
                          .run = pw_run,
                          .drop = pw_drop,
                          .arg = pb,
                          .nice = 10};
        pb->q = jobq_new(&qo);
        if (pb->q == NULL) {
            snprintf(err, errlen, "auth.password_file: cannot start the verification threads");
            goto fail;
        }
        pb->nthreads = want;
    }
    log_info("password file %s: %zu users; %u verification thread(s), cache %s", path, t.n,
             pb->nthreads, pb->cache ? "on" : "off");
    return &pb->b;
fail:
    pw_destroy(&pb->b);
    return NULL;
}

/* ---- antenna passwd ---- */

static void cli_usage(FILE *out)
{
    fprintf(out,
            "Usage: antenna passwd [-i ITERATIONS] FILE USER      (password from the terminal "
            "or stdin)\n"
            "       antenna passwd -b [-i ITERATIONS] FILE USER PASSWORD\n"
            "       antenna passwd -D FILE USER\n"
            "\n"
            "Adds or replaces USER in FILE with a salted PBKDF2-SHA512 verifier (SCRAM's\n"
            "StoredKey and ServerKey: usable for plain passwords and SCRAM-SHA-512; the\n"
            "file is created, mode 0600, when missing); -D deletes USER.  Default\n"
            "iterations: %u.\n"
            "  -M   write mosquitto_passwd's $7$ format instead (mosquitto 2.x and antenna's\n"
            "       api.users_file read it; plain passwords only, no SCRAM)\n",
            AUTH_PASSWD_ITERATIONS);
}

/* A password from the terminal (twice, no echo) or one line of stdin. */
static int read_password(char *buf, size_t size)
{
    int tty = isatty(STDIN_FILENO);
    struct termios old, quiet;
    for (int round = 0; round < (tty ? 2 : 1); round++) {
        char *dst = round ? buf + size / 2 : buf;
        if (tty) {
            fprintf(stderr, round ? "Again: " : "Password: ");
            tcgetattr(STDIN_FILENO, &old);
            quiet = old;
            quiet.c_lflag &= (tcflag_t)~ECHO;
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        }
        char *ok = fgets(dst, (int)(size / 2), stdin);
        if (tty) {
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
            fprintf(stderr, "\n");
        }
        if (ok == NULL)
            return -1;
        dst[strcspn(dst, "\r\n")] = '\0';
    }
    if (tty && strcmp(buf, buf + size / 2) != 0) {
        fprintf(stderr, "antenna passwd: the passwords differ\n");
        return -1;
    }
    return 0;
}

int auth_passwd_cli(int argc, char **argv)
{
    int batch = 0, del = 0, mosq = 0, rc = 1;
    unsigned long iterations = AUTH_PASSWD_ITERATIONS;
    char pwbuf[2048], hash[AUTH_PASSWD_HASH_MAX], tmp[4096];
    const char *pw = NULL;
    FILE *in = NULL, *out = NULL;
    char *line = NULL;
    size_t lcap = 0;
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt(argc, argv, "+bDMi:h")) != -1) {
        switch (o) {
        case 'b':
            batch = 1;
            break;
        case 'M':
            mosq = 1;
            break;
        case 'D':
            del = 1;
            break;
        case 'i': {
            char *end;
            iterations = strtoul(optarg, &end, 10);
            if (*optarg == '\0' || *end || iterations < 1000 || iterations > MAX_ITERATIONS) {
                fprintf(stderr, "antenna passwd: -i: iterations from 1000 to %u\n", MAX_ITERATIONS);
                return 2;
            }
            break;
        }
        case 'h':
            cli_usage(stdout);
            return 0;
        default:
            cli_usage(stderr);
            return 2;
        }
    }
    int want = del ? 2 : batch ? 3 : 2;
    if (argc - optind != want || (del && batch)) {
        cli_usage(stderr);
        return 2;
    }
    const char *path = argv[optind], *user = argv[optind + 1];
    if (!user_valid(user, strlen(user))) {
        fprintf(stderr, "antenna passwd: bad user name (no ':' or control characters)\n");
        return 2;
    }
    if (!del) {
        if (batch) {
            pw = argv[optind + 2];
        } else {
            if (read_password(pwbuf, sizeof(pwbuf)) < 0) {
                fprintf(stderr, "antenna passwd: no password read\n");
                return 1;
            }
            pw = pwbuf;
        }
        if ((mosq ? auth_passwd_hash_mosquitto : auth_passwd_hash)(
                (const uint8_t *)pw, strlen(pw), (uint32_t)iterations, hash, sizeof(hash)) < 0) {
            fprintf(stderr, "antenna passwd: hashing failed\n");
            goto out;
        }
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    in = fopen(path, "r");
    if (in == NULL && (errno != ENOENT || del)) {
        fprintf(stderr, "antenna passwd: %s: %s\n", path, strerror(errno));
        goto out;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || (out = fdopen(fd, "w")) == NULL) {
        fprintf(stderr, "antenna passwd: %s: %s\n", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        goto out;
    }
    int found = 0;
    size_t ulen = strlen(user);
    ssize_t got;
    while (in && (got = getline(&line, &lcap, in)) >= 0) {
        if ((size_t)got > ulen && strncmp(line, user, ulen) == 0 && line[ulen] == ':') {
            found = 1;
            if (!del)
                fprintf(out, "%s:%s\n", user, hash);
            continue;
        }
        fputs(line, out);
        if (got > 0 && line[got - 1] != '\n')
            fputc('\n', out);
    }
    if (!found && !del)
        fprintf(out, "%s:%s\n", user, hash);
    if (fflush(out) != 0 || fsync(fileno(out)) != 0) {
        fprintf(stderr, "antenna passwd: %s: %s\n", tmp, strerror(errno));
        goto out;
    }
    if (del && !found) {
        fprintf(stderr, "antenna passwd: %s: no user '%s'\n", path, user);
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, path) != 0) {
        fprintf(stderr, "antenna passwd: %s: %s\n", path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    rc = 0;
out:
    OPENSSL_cleanse(pwbuf, sizeof(pwbuf));
    free(line);
    if (in)
        fclose(in);
    if (out)
        fclose(out);
    return rc;
}
