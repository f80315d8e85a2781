/* auth_redis.c -- credentials and ACL rules in Redis; see auth_redis.h.
 *
 * Threads: pool_size connection threads (the pool of a jobq_t, see
 * src/core/jobq.h), each owning one synchronous hiredis context (connect
 * and command timeouts: auth.redis.timeout_ms), found by the thread's index
 * in the pool.  They take jobs from the one bounded queue, so a slow
 * command holds one connection while the others keep answering; workers
 * only copy the request and push it.  A CONNECT is one round trip: HGET of the password
 * hash and LRANGE of the rules, pipelined.
 *
 * Reconnection: a context that fails (connection refused, reset, timeout)
 * is dropped; the next job reconnects.  A failed connect sets a backoff
 * (100 ms doubling to 2 s) during which that thread answers errors at once
 * instead of waiting on a dead server.  A command that fails on a
 * connection that had been working is retried once on a fresh connection,
 * so a restarted Redis costs no client an error.
 *
 * The password check (PBKDF2) runs on the connection thread, never on a
 * worker: auth_passwd_verify() from the password-file backend.
 */
#include "auth_redis.h"

#include "auth_acl.h"
#include "auth_async.h"
#include "auth_passwd.h"
#include "auth_pwcache.h"

#include "../core/log.h"
#include "../core/util.h"

#include <hiredis/hiredis.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#define REDIS_BACKOFF_MIN_MS 100
#define REDIS_BACKOFF_MAX_MS 2000
#define REDIS_MAX_RULES_TEXT (256 * 1024)

typedef struct redis_backend redis_backend_t;

typedef struct {
    redis_backend_t *rb;
    redisContext *ctx;    /* this thread's connection, NULL while down */
    uint64_t retry_at_ms; /* no connect attempt before */
    uint32_t backoff_ms;
    auth_ratelog_t ratelog; /* failure lines of this thread */
} rconn_t;

struct redis_backend {
    auth_backend_t base;
    conf_auth_redis_t cf;
    jobq_t *q;
    rconn_t *conns;
    uint32_t nconns;
    atomic_uint_fast64_t lookups, allowed, denied, unknown, errors, queue_full, connects;
    /* a connection failed since the last success: the next success of any
     * connection of the pool logs "connected again" (once) */
    atomic_int down;
    auth_pwcache_t *pcache; /* auth.password_cache: persistent, else NULL */
};

#define COUNT(rb, c) atomic_fetch_add_explicit(&(rb)->c, 1, memory_order_relaxed)

/* ---- the connection ---- */

static struct timeval tv_of(uint32_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

static void drop_conn(rconn_t *c)
{
    if (c->ctx)
        redisFree(c->ctx);
    c->ctx = NULL;
}

/* Run one command expecting a status reply (AUTH, SELECT): 0 or -1 (why). */
static int simple_command(redisContext *ctx, int argc, const char **argv, const size_t *lens,
                          char *why, size_t whylen)
{
    redisReply *r = redisCommandArgv(ctx, argc, argv, lens);
    int rc = -1;
    if (r == NULL)
        snprintf(why, whylen, "%s: %s", argv[0], ctx->errstr);
    else if (r->type == REDIS_REPLY_ERROR)
        snprintf(why, whylen, "%s: %s", argv[0], r->str);
    else
        rc = 0;
    if (r)
        freeReplyObject(r);
    return rc;
}

/* Make sure c has a working context: 0, or -1 with why (backoff set). */
static int ensure_conn(rconn_t *c, char *why, size_t whylen)
{
    const conf_auth_redis_t *cf = &c->rb->cf;
    uint64_t now = an_now_ms();

    if (c->ctx)
        return 0;
    /* backing off, unless another connection of the pool got through since
     * this one failed: Redis is back, no CONNECT waits out a stale backoff */
    if (now < c->retry_at_ms && atomic_load(&c->rb->down)) {
        snprintf(why, whylen, "Redis unavailable (next attempt in %llu ms)",
                 (unsigned long long)(c->retry_at_ms - now));
        return -1;
    }
    c->ctx = redisConnectWithTimeout(cf->host, cf->port, tv_of(cf->timeout_ms));
    if (c->ctx == NULL) {
        snprintf(why, whylen, "connect to %.160s:%u: out of memory", cf->host, cf->port);
        goto fail;
    }
    if (c->ctx->err) {
        snprintf(why, whylen, "connect to %.160s:%u: %.40s", cf->host, cf->port, c->ctx->errstr);
        goto fail;
    }
    if (redisSetTimeout(c->ctx, tv_of(cf->timeout_ms)) != REDIS_OK) {
        snprintf(why, whylen, "set timeout: %s", c->ctx->errstr);
        goto fail;
    }
    if (cf->password[0]) {
        const char *argv[] = {"AUTH", cf->password};
        size_t lens[] = {4, strlen(cf->password)};
        if (simple_command(c->ctx, 2, argv, lens, why, whylen) < 0)
            goto fail;
    }
    if (cf->db) {
        char db[16];
        snprintf(db, sizeof(db), "%u", cf->db);
        const char *argv[] = {"SELECT", db};
        size_t lens[] = {6, strlen(db)};
        if (simple_command(c->ctx, 2, argv, lens, why, whylen) < 0)
            goto fail;
    }
    COUNT(c->rb, connects);
    c->backoff_ms = 0;
    if (atomic_exchange(&c->rb->down, 0))
        log_info("auth redis: connected to %s:%u again", cf->host, cf->port);
    return 0;
fail:
    drop_conn(c);
    c->backoff_ms =
        c->backoff_ms ? AN_MIN(c->backoff_ms * 2, REDIS_BACKOFF_MAX_MS) : REDIS_BACKOFF_MIN_MS;
    c->retry_at_ms = an_now_ms() + c->backoff_ms;
    atomic_store(&c->rb->down, 1);
    return -1;
}

/* ---- one CONNECT ---- */

enum { LOOK_OK = 0, LOOK_IO = -1, LOOK_DATA = -2 };

/* The rule lines of reply r (array of strings) joined by '\n' into a
 * rule set; *acl stays NULL for an empty array.  LOOK_OK or LOOK_DATA. */
static int rules_from_reply(const redisReply *r, const char *user, auth_acl_t **acl, char *why,
                            size_t whylen)
{
    size_t total = 1;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_STRING || memchr(e->str, '\n', e->len) ||
            strlen(e->str) != e->len) {
            snprintf(why, whylen, "acl of '%s': entry %zu is not a one-line string", user, i);
            return LOOK_DATA;
        }
        total += e->len + 1;
    }
    if (r->elements == 0)
        return LOOK_OK;
    if (total > REDIS_MAX_RULES_TEXT) {
        snprintf(why, whylen, "acl of '%s': too many rules", user);
        return LOOK_DATA;
    }
    char *text = an_malloc(total);
    size_t at = 0;
    for (size_t i = 0; i < r->elements; i++) {
        memcpy(text + at, r->element[i]->str, r->element[i]->len);
        at += r->element[i]->len;
        text[at++] = '\n';
    }
    text[at] = '\0';
    char who[96], err[200];
    snprintf(who, sizeof(who), "redis acl of '%.60s'", user);
    *acl = auth_acl_from_lines(text, who, err, sizeof(err));
    free(text);
    if (*acl == NULL) {
        snprintf(why, whylen, "%s", err);
        return LOOK_DATA;
    }
    return LOOK_OK;
}

/* Fetch the rules when the acl key is a set rather than a list. */
static int rules_from_set(rconn_t *c, const char *key, size_t keylen, const char *user,
                          auth_acl_t **acl, char *why, size_t whylen)
{
    const char *argv[] = {"SMEMBERS", key};
    size_t lens[] = {8, keylen};
    redisReply *r = redisCommandArgv(c->ctx, 2, argv, lens);
    int rc;
    if (r == NULL) {
        snprintf(why, whylen, "SMEMBERS: %s", c->ctx->errstr);
        return LOOK_IO;
    }
    if (r->type == REDIS_REPLY_ARRAY) {
        rc = rules_from_reply(r, user, acl, why, whylen);
    } else {
        snprintf(why, whylen, "acl of '%s': %s", user,
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        rc = LOOK_DATA;
    }
    freeReplyObject(r);
    return rc;
}

/* Look the user up: LOOK_OK with *a filled, or LOOK_IO (connection lost) /
 * LOOK_DATA (bad data) with why. */
static int lookup_connect(rconn_t *c, const auth_job_t *j, auth_answer_t *a, char *why,
                          size_t whylen)
{
    const conf_auth_redis_t *cf = &c->rb->cf;
    redisReply *hash = NULL, *rules = NULL;
    int rc = LOOK_IO;
    size_t plen = strlen(cf->prefix), ulen = strlen(j->username);
    char *ukey = an_malloc(plen + 5 + ulen + 1), *akey = an_malloc(plen + 4 + ulen + 1);
    size_t uklen = (size_t)sprintf(ukey, "%suser:%s", cf->prefix, j->username);
    size_t aklen = (size_t)sprintf(akey, "%sacl:%s", cf->prefix, j->username);

    const char *hget[] = {"HGET", ukey, "password"};
    size_t hget_len[] = {4, uklen, 8};
    const char *lrange[] = {"LRANGE", akey, "0", "-1"};
    size_t lrange_len[] = {6, aklen, 1, 2};
    if (redisAppendCommandArgv(c->ctx, 3, hget, hget_len) != REDIS_OK ||
        redisAppendCommandArgv(c->ctx, 4, lrange, lrange_len) != REDIS_OK ||
        redisGetReply(c->ctx, (void **)&hash) != REDIS_OK ||
        redisGetReply(c->ctx, (void **)&rules) != REDIS_OK) {
        snprintf(why, whylen, "%s", c->ctx->errstr[0] ? c->ctx->errstr : "I/O error");
        goto out;
    }
    rc = LOOK_DATA;
    memset(a, 0, sizeof(*a));
    if (hash->type == REDIS_REPLY_NIL) {
        a->verdict = AUTH_PASS; /* unknown here: the next backend may know it */
        rc = LOOK_OK;
        goto out;
    }
    if (hash->type != REDIS_REPLY_STRING) {
        snprintf(why, whylen, "%s: %s", ukey,
                 hash->type == REDIS_REPLY_ERROR ? hash->str : "password is not a string");
        goto out;
    }
    /* the persistent cache spares the PBKDF2, not the lookup: the hash
     * read now is inside the entry's MAC, so a changed hash misses */
    auth_pwcache_t *pc = c->rb->pcache;
    int ok = j->password && pc &&
             auth_pwcache_lookup(pc, j->username, j->password, j->password_len, hash->str);
    if (!ok && j->password) {
        ok = auth_passwd_verify(hash->str, j->password, j->password_len);
        if (ok == 1 && pc)
            auth_pwcache_record(pc, j->username, j->password, j->password_len, hash->str);
    }
    if (ok < 0) {
        snprintf(why, whylen, "%s: malformed password hash", ukey);
        goto out;
    }
    if (ok == 0) {
        a->verdict = AUTH_DENY;
        a->cause = AUTH_BAD_CREDENTIALS;
        rc = LOOK_OK;
        goto out;
    }
    auth_acl_t *acl = NULL;
    if (rules->type == REDIS_REPLY_ARRAY)
        rc = rules_from_reply(rules, j->username, &acl, why, whylen);
    else if (rules->type == REDIS_REPLY_ERROR && strncmp(rules->str, "WRONGTYPE", 9) == 0)
        rc = rules_from_set(c, akey, aklen, j->username, &acl, why, whylen);
    else
        snprintf(why, whylen, "%s: %s", akey,
                 rules->type == REDIS_REPLY_ERROR ? rules->str : "unexpected reply");
    if (rc == LOOK_OK) {
        a->verdict = AUTH_ALLOW;
        a->acl = acl;
    }
out:
    if (hash)
        freeReplyObject(hash);
    if (rules)
        freeReplyObject(rules);
    free(ukey);
    free(akey);
    return rc;
}

static void answer_job(rconn_t *c, auth_job_t *j, jobq_slot_t *slot)
{
    redis_backend_t *rb = c->rb;
    auth_answer_t a;
    char why[256] = "";
    int rc = LOOK_IO;

    COUNT(rb, lookups);
    if (an_now_ms() >= j->deadline_ms) {
        snprintf(why, sizeof(why), "timed out in the queue");
        goto failed;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        int fresh = c->ctx == NULL;
        if (ensure_conn(c, why, sizeof(why)) < 0)
            break;
        rc = lookup_connect(c, j, &a, why, sizeof(why));
        if (rc != LOOK_IO)
            break;
        drop_conn(c); /* broken: reconnect */
        atomic_store(&c->rb->down, 1);
        if (fresh)
            break; /* a new connection failed too: Redis is down */
    }
    if (rc == LOOK_OK) {
        if (a.verdict == AUTH_ALLOW)
            COUNT(rb, allowed);
        else if (a.verdict == AUTH_DENY)
            COUNT(rb, denied);
        else
            COUNT(rb, unknown);
        log_debug("auth redis: user '%s' (client '%s'): %s", j->username, j->client_id,
                  a.verdict == AUTH_ALLOW  ? "allow"
                  : a.verdict == AUTH_DENY ? "deny"
                                           : "unknown");
        goto answer;
    }
failed:
    COUNT(rb, errors);
    memset(&a, 0, sizeof(a));
    if (rb->cf.on_error == CONF_AUTH_ON_ERROR_PASS) {
        a.verdict = AUTH_PASS;
    } else {
        a.verdict = AUTH_DENY;
        a.cause = AUTH_BACKEND_UNAVAILABLE;
    }
    if (auth_ratelog_ok(&c->ratelog, "auth redis")) {
        log_fields_t f = {
            .event = "auth_backend_error",
            .client_id = j->client_id,
            .username = j->username,
            .peer = j->peer,
            .reason = auth_cause_name(a.cause != AUTH_OK ? a.cause : AUTH_BACKEND_UNAVAILABLE),
            .backend = "redis"};
        log_ev(AN_LOG_WARN, &f, "auth redis: connect of client '%s' (%s, user '%s'): %s: %s",
               j->client_id, j->peer, j->username ? j->username : "", why,
               a.verdict == AUTH_PASS ? "passed to the next backend" : "denied");
    }
answer:
    /* the slot is free before the answer is out: whoever got the answer
     * may ask again at once */
    jobq_slot_release(slot);
    j->done(j->token, &a);
    auth_job_free(j);
}

/* A pool thread: the job, on this thread's connection. */
static void redis_run(void *arg, jobq_link_t *link, jobq_slot_t *slot)
{
    redis_backend_t *rb = arg;
    answer_job(&rb->conns[jobq_slot_thread(slot)], container_of(link, auth_job_t, link), slot);
}

/* Queued and never run (shutdown): done() is not called. */
static void redis_drop(void *arg, jobq_link_t *link)
{
    AN_UNUSED(arg);
    auth_job_free(container_of(link, auth_job_t, link));
}

/* ---- the backend interface ---- */

static auth_verdict_t redis_check(auth_backend_t *b, const auth_request_t *r, auth_answer_t *out,
                                  auth_done_fn done, void *token)
{
    redis_backend_t *rb = (redis_backend_t *)b;
    memset(out, 0, sizeof(*out));
    /* publish/subscribe: decided by the rules returned at CONNECT; a client
     * without username is not Redis' to judge */
    if (r->action != AUTH_ACT_CONNECT || r->username == NULL || done == NULL) {
        out->verdict = AUTH_PASS;
        return AUTH_PASS;
    }
    auth_job_t *j = auth_job_new(r, done, token, an_now_ms() + rb->cf.timeout_ms);
    if (jobq_push(rb->q, &j->link) == JOBQ_OK)
        return AUTH_PENDING;
    auth_job_free(j);
    uint64_t n = COUNT(rb, queue_full);
    if (n % 1000 == 0) /* the first refusal, then one line per thousand */
        log_warn("auth redis: connect of client '%s' (%s): %u requests waiting: %s "
                 "(%llu refused so far)",
                 r->client_id ? r->client_id : "", r->peer ? r->peer : "", rb->cf.queue_size,
                 rb->cf.on_error == CONF_AUTH_ON_ERROR_PASS ? "passed" : "denied (0x97)",
                 (unsigned long long)n + 1);
    if (rb->cf.on_error == CONF_AUTH_ON_ERROR_PASS) {
        out->verdict = AUTH_PASS;
    } else {
        out->verdict = AUTH_DENY;
        out->cause = AUTH_BUSY;
    }
    return out->verdict;
}

static int redis_reload(auth_backend_t *b)
{
    AN_UNUSED(b);
    return 0; /* every lookup reads Redis: nothing to reload */
}

static void redis_destroy(auth_backend_t *b)
{
    redis_backend_t *rb = (redis_backend_t *)b;
    if (rb == NULL)
        return;
    /* queued jobs are dropped (done() is not called); the jobs in flight
     * finish; the threads are joined */
    jobq_free(rb->q);
    for (uint32_t i = 0; i < rb->nconns; i++)
        drop_conn(&rb->conns[i]);
    free(rb->conns);
    auth_pwcache_free(rb->pcache);
    free(rb);
}

void auth_redis_use_pwcache(auth_backend_t *b, auth_pwcache_t *pc)
{
    ((redis_backend_t *)b)->pcache = pc;
}

void auth_redis_stats(auth_backend_t *b, auth_redis_stats_t *out)
{
    redis_backend_t *rb = (redis_backend_t *)b;
    out->lookups = atomic_load(&rb->lookups);
    out->allowed = atomic_load(&rb->allowed);
    out->denied = atomic_load(&rb->denied);
    out->unknown = atomic_load(&rb->unknown);
    out->errors = atomic_load(&rb->errors);
    out->queue_full = atomic_load(&rb->queue_full);
    out->connects = atomic_load(&rb->connects);
}

auth_backend_t *auth_redis_new(const conf_t *c, char *err, size_t errlen)
{
    const conf_auth_redis_t *cf = &c->auth_redis;
    redis_backend_t *rb = an_calloc(1, sizeof(*rb));

    rb->base.name = "redis";
    rb->base.check = redis_check;
    rb->base.reload = redis_reload;
    rb->base.destroy = redis_destroy;
    rb->cf = *cf;
    rb->conns = an_calloc(cf->pool_size, sizeof(*rb->conns));
    rb->nconns = cf->pool_size;
    for (uint32_t i = 0; i < rb->nconns; i++)
        rb->conns[i].rb = rb;
    jobq_opts_t qo = {.cap = cf->queue_size,
                      .threads = rb->nconns,
                      .run = redis_run,
                      .drop = redis_drop,
                      .arg = rb};
    rb->q = jobq_new(&qo);
    if (rb->q == NULL) {
        snprintf(err, errlen, "auth.redis: cannot start the connection threads");
        free(rb->conns);
        free(rb);
        return NULL;
    }
    log_info("auth redis: %s:%u db %u prefix \"%s\" (%u connections, timeout %u ms)", cf->host,
             cf->port, cf->db, cf->prefix, cf->pool_size, cf->timeout_ms);
    return &rb->base;
}
