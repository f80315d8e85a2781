/* devices_auth.c -- the `devices` backend of auth.chain: a device in the
 * registry authenticates with its own credential (docs/devices.md, "Auth").
 *
 * CONNECT: the device is the client id, else the user name.  Unknown: PASS
 * (the next backend decides), or DENY with devices.auth_unknown: deny.
 * Disabled: DENY, not authorized (MQTT 5 0x87, 3.1.1 return code 5).  A
 * password that is the device's token (SHA-256 compared in constant time)
 * ALLOWs at once, on the worker.  A password checked against the device's
 * password_hash is PBKDF2: never on a worker; it is queued to the
 * backend's verification thread (a jobq of one thread, nice 10) and the
 * CONNECT waits (AUTH_PENDING, the chain's asynchronous path).  A device
 * with no credential the client gave: DENY, bad credentials.  The answer's
 * user name is the device id.  PUBLISH and SUBSCRIBE: PASS.
 *
 * Threads: check() runs on the workers and reads the registry under its
 * rwlock (copies what it needs, then unlocks); the verification thread
 * touches only its job.  `st` is set by the main thread before the workers
 * run (bind) or by a reload's follow() before the new chain is published.
 */
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "auth_async.h"
#include "auth_passwd.h"
#include "devices_int.h"
#include "log.h"
#include "util.h"

typedef struct {
    auth_backend_t base;
    devices_state_t *_Atomic st;
    jobq_t *q;
    pthread_mutex_t done_mu; /* held around done(); stopping set under it */
    int stopping;
} dv_backend_t;

/* A PBKDF2 check: the job and the hash to check against. */
typedef struct {
    auth_job_t *job;
    char hash[AUTH_PASSWD_HASH_MAX];
    jobq_link_t link;
} dv_job_t;

static void dv_run(void *arg, jobq_link_t *link, jobq_slot_t *slot)
{
    dv_backend_t *b = arg;
    dv_job_t *j = container_of(link, dv_job_t, link);
    AN_UNUSED(slot);
    auth_answer_t a = {0};
    int ok = auth_passwd_verify(j->hash, j->job->password, j->job->password_len);
    if (ok == 1) {
        a.verdict = AUTH_ALLOW;
        a.username = an_strndup(j->job->client_id, strlen(j->job->client_id));
    } else {
        a.verdict = AUTH_DENY;
        a.cause = AUTH_BAD_CREDENTIALS;
    }
    OPENSSL_cleanse(j->job->password, j->job->password_len);
    pthread_mutex_lock(&b->done_mu);
    if (!b->stopping)
        j->job->done(j->job->token, &a);
    else
        free(a.username);
    pthread_mutex_unlock(&b->done_mu);
    auth_job_free(j->job);
    free(j);
}

static void dv_drop(void *arg, jobq_link_t *link)
{
    AN_UNUSED(arg);
    dv_job_t *j = container_of(link, dv_job_t, link);
    OPENSSL_cleanse(j->job->password, j->job->password_len);
    auth_job_free(j->job);
    free(j);
}

static int hexbyte(const char *h, uint8_t *out)
{
    unsigned v;
    if (sscanf(h, "%2x", &v) != 1)
        return -1;
    *out = (uint8_t)v;
    return 0;
}

static auth_verdict_t dv_check(auth_backend_t *base, const auth_request_t *r, auth_answer_t *out,
                               auth_done_fn done, void *token)
{
    dv_backend_t *b = (dv_backend_t *)base;
    devices_state_t *st = atomic_load_explicit(&b->st, memory_order_acquire);
    if (r->action != AUTH_ACT_CONNECT || st == NULL)
        return out->verdict = AUTH_PASS;
    char hash[AUTH_PASSWD_HASH_MAX] = "", token_hash[65] = "";
    char id_used[2] = "c"; /* c: the client id, u: the user name */
    int found = 0, disabled = 0;
    pthread_rwlock_rdlock(&st->lock);
    dev_ent_t *e = r->client_id && *r->client_id ? devices_find(st, r->client_id, NULL) : NULL;
    if (e == NULL && r->username && *r->username) {
        e = devices_find(st, r->username, NULL);
        id_used[0] = 'u';
    }
    if (e) {
        found = 1;
        disabled = json_is_true(json_object_get(e->rec, "disabled"));
        const char *h = json_string_value(json_object_get(e->rec, "password_hash"));
        if (h && strlen(h) < sizeof(hash))
            memcpy(hash, h, strlen(h) + 1);
        const char *t = json_string_value(json_object_get(e->rec, "token_hash"));
        if (t && strlen(t) == 64)
            memcpy(token_hash, t, 65);
    }
    pthread_rwlock_unlock(&st->lock);
    const char *id = id_used[0] == 'c' ? r->client_id : r->username;
    if (!found) {
        if (st->conf->auth_unknown == DEVICES_UNKNOWN_PASS)
            return out->verdict = AUTH_PASS;
        out->cause = AUTH_NOT_AUTHORIZED;
        return out->verdict = AUTH_DENY;
    }
    if (disabled) {
        out->cause = AUTH_NOT_AUTHORIZED;
        return out->verdict = AUTH_DENY;
    }
    if (r->password == NULL || (!hash[0] && !token_hash[0])) {
        out->cause = AUTH_BAD_CREDENTIALS;
        return out->verdict = AUTH_DENY;
    }
    if (token_hash[0]) {
        uint8_t want[32], got[32];
        int ok = 1;
        for (int i = 0; i < 32; i++)
            ok &= hexbyte(token_hash + 2 * i, &want[i]) == 0;
        SHA256(r->password, r->password_len, got);
        if (ok && CRYPTO_memcmp(want, got, 32) == 0) {
            out->username = an_strndup(id, strlen(id));
            return out->verdict = AUTH_ALLOW;
        }
    }
    if (!hash[0]) {
        out->cause = AUTH_BAD_CREDENTIALS;
        return out->verdict = AUTH_DENY;
    }
    if (done == NULL) { /* a caller that cannot wait: the caller's thread */
        if (auth_passwd_verify(hash, r->password, r->password_len) == 1) {
            out->username = an_strndup(id, strlen(id));
            return out->verdict = AUTH_ALLOW;
        }
        out->cause = AUTH_BAD_CREDENTIALS;
        return out->verdict = AUTH_DENY;
    }
    dv_job_t *j = an_calloc(1, sizeof(*j));
    auth_request_t r2 = *r;
    r2.client_id = id; /* the device's id becomes the answer's user */
    j->job = auth_job_new(&r2, done, token, 0);
    memcpy(j->hash, hash, sizeof(hash));
    if (jobq_push(b->q, &j->link) != JOBQ_OK) {
        dv_drop(b, &j->link);
        out->cause = AUTH_BUSY;
        return out->verdict = AUTH_DENY;
    }
    return AUTH_PENDING;
}

static int dv_reload(auth_backend_t *b)
{
    AN_UNUSED(b);
    return 0; /* the registry changes through the API, not on SIGHUP */
}

static void dv_follow(auth_backend_t *b, auth_backend_t *prev)
{
    dv_backend_t *p = (dv_backend_t *)prev;
    atomic_store_explicit(&((dv_backend_t *)b)->st, atomic_load(&p->st), memory_order_release);
}

static void dv_destroy(auth_backend_t *base)
{
    dv_backend_t *b = (dv_backend_t *)base;
    pthread_mutex_lock(&b->done_mu);
    b->stopping = 1;
    pthread_mutex_unlock(&b->done_mu);
    jobq_free(b->q);
    pthread_mutex_destroy(&b->done_mu);
    free(b);
}

auth_backend_t *devices_auth_new(const conf_t *conf, char *err, size_t errlen)
{
    AN_UNUSED(conf);
    dv_backend_t *b = an_calloc(1, sizeof(*b));
    b->base.name = "devices";
    b->base.check = dv_check;
    b->base.reload = dv_reload;
    b->base.destroy = dv_destroy;
    b->base.follow = dv_follow;
    pthread_mutex_init(&b->done_mu, NULL);
    jobq_opts_t qo = {
        .cap = 10000, .threads = 1, .run = dv_run, .drop = dv_drop, .arg = b, .nice = 10};
    b->q = jobq_new(&qo);
    if (b->q == NULL) {
        snprintf(err, errlen, "auth.chain: devices: cannot start the verification thread");
        pthread_mutex_destroy(&b->done_mu);
        free(b);
        return NULL;
    }
    return &b->base;
}

void devices_auth_bind(auth_backend_t *b, devices_state_t *st)
{
    atomic_store_explicit(&((dv_backend_t *)b)->st, st, memory_order_release);
}
