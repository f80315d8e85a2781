/* auth_chain.c -- the chain of backends, asynchronous answers, the ACL with
 * its per-connection cache (see auth_chain.h).
 *
 * Threads: check() runs on the worker of the connection; an asynchronous
 * backend's done() runs on its own thread and only touches the wait's
 * answer and the chain's outstanding list (under `mu`), then posts the wait
 * to the worker's inbox.  The ACL file pointer is swapped by the main
 * thread under `acl_lock` (SIGHUP); `gen` tells connections their cached
 * decisions are stale.
 */
#include "auth_chain.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth_jwt.h"
#include "auth_method.h"
#include "auth_passwd.h"
#include "auth_stats.h"
#include "log.h"
#include "server.h"
#include "util.h"
#if defined(__has_include)
#if __has_include("auth_http.h")
#include "auth_http.h"
#define HAVE_AUTH_HTTP 1
#endif
#if __has_include("devices/devices_int.h")
#include "devices/devices_int.h"
#define HAVE_AUTH_DEVICES 1
#endif
#if __has_include("auth_redis.h")
#include "auth_redis.h"
#define HAVE_AUTH_REDIS 1
#endif
#endif

struct auth_chain {
    auth_backend_t *b[CONF_AUTH_MAX_CHAIN];
    uint32_t n;
    uint8_t default_allow[CONF_MAX_LISTENERS]; /* per listener (auth.default auto) */
    uint8_t acl_default;                       /* CONF_POLICY_* (AUTO resolved per client) */
    uint8_t acl_async; /* a backend may answer ACL questions synchronously */
    uint32_t cache_size;
    char acl_path[256];
    pthread_rwlock_t acl_lock;
    auth_acl_t *acl; /* the ACL file, or NULL */
    _Atomic uint32_t gen;
    uint64_t cache_key[2]; /* SipHash key of the decision caches' slots */
    pthread_mutex_t mu;
    auth_wait_t *waits; /* outstanding asynchronous CONNECTs */
    auth_ban_t ban;
};

struct acl_cache_entry {
    uint32_t hash, gen;
    uint8_t kind;  /* action | is_filter << 4; 0 = empty */
    uint8_t allow; /* AUTH_ACL_* */
    uint16_t len;
    char *topic;
};

/* ---- the cert backend: a verified client certificate is enough ---- */

static auth_verdict_t cert_check(auth_backend_t *b, const auth_request_t *r, auth_answer_t *out,
                                 auth_done_fn done, void *token)
{
    (void)b;
    (void)done;
    (void)token;
    if (r->action != AUTH_ACT_CONNECT || r->cert_user == NULL)
        return out->verdict = AUTH_PASS;
    out->username = an_strndup(r->cert_user, strlen(r->cert_user));
    return out->verdict = AUTH_ALLOW;
}

static int cert_reload(auth_backend_t *b)
{
    (void)b;
    return 0;
}

static void cert_destroy(auth_backend_t *b)
{
    free(b);
}

static auth_backend_t *cert_new(const conf_t *c, char *err, size_t errlen)
{
    int any = 0;
    for (uint32_t i = 0; i < c->nlisteners; i++)
        any |= c->listeners[i].cert_username != CONF_CERT_USER_NONE;
    if (!any) {
        snprintf(err, errlen, "auth.chain: cert: no listener has cert_username (cn or san)");
        return NULL;
    }
    auth_backend_t *b = an_calloc(1, sizeof(*b));
    b->name = "cert";
    b->check = cert_check;
    b->reload = cert_reload;
    b->destroy = cert_destroy;
    return b;
}

/* ---- construction ---- */

typedef auth_backend_t *(*backend_ctor)(const conf_t *c, char *err, size_t errlen);

static const struct {
    const char *name;
    backend_ctor ctor;
} ctors[] = {
    {"password_file", auth_passwd_new},
    {"jwt", auth_jwt_new},
    {"cert", cert_new},
#ifdef HAVE_AUTH_HTTP
    {"http", auth_http_new},
#endif
#ifdef HAVE_AUTH_REDIS
    {"redis", auth_redis_new},
#endif
#ifdef HAVE_AUTH_DEVICES
    {"devices", devices_auth_new}, /* the device registry (src/devices) */
#endif
};

auth_chain_t *auth_chain_new(const conf_t *conf, char *err, size_t errlen)
{
    const conf_auth_t *a = &conf->auth;
    auth_chain_t *ch = an_calloc(1, sizeof(*ch));
    pthread_rwlock_init(&ch->acl_lock, NULL);
    pthread_mutex_init(&ch->mu, NULL);
    uint32_t exempt = 0; /* ban-free listeners: loopback ones, unless auth.ban.loopback */
    for (uint32_t i = 0; i < conf->nlisteners && i < 32; i++)
        if (!a->ban.loopback && conf_listener_loopback(&conf->listeners[i]))
            exempt |= 1u << i;
    auth_ban_init(&ch->ban, &a->ban, exempt);
    atomic_init(&ch->gen, 1);
    an_random_key(ch->cache_key);
    char names[CONF_AUTH_MAX_CHAIN][32];
    uint32_t nnames = 0;
    if (a->nchain) {
        memcpy(names, a->chain, sizeof(names));
        nnames = a->nchain;
    } else {
        /* no chain given: what is configured, in a fixed order */
        if (a->password_file[0])
            snprintf(names[nnames++], sizeof(names[0]), "password_file");
        if (a->jwt.secret[0] || a->jwt.public_key_file[0] || a->jwt.jwks_file[0])
            snprintf(names[nnames++], sizeof(names[0]), "jwt");
    }
    for (uint32_t i = 0; i < nnames; i++) {
        size_t k = 0;
        while (k < sizeof(ctors) / sizeof(ctors[0]) && strcmp(ctors[k].name, names[i]) != 0)
            k++;
        if (k == sizeof(ctors) / sizeof(ctors[0])) {
            snprintf(err, errlen,
                     "auth.chain: unknown backend \"%s\" (password_file, jwt, cert, http, "
                     "redis, devices)",
                     names[i]);
            goto fail;
        }
        ch->b[ch->n] = ctors[k].ctor(conf, err, errlen);
        if (ch->b[ch->n] == NULL)
            goto fail;
        ch->n++;
        if (strcmp(names[i], "http") == 0 || strcmp(names[i], "redis") == 0)
            ch->acl_async = 1;
    }
    /* auto: allow when nothing is configured to decide, on loopback
     * listeners only; a public listener then refuses every credential */
    for (uint32_t i = 0; i < CONF_MAX_LISTENERS; i++) {
        const conf_listener_t *l = i < conf->nlisteners ? &conf->listeners[i] : NULL;
        ch->default_allow[i] = a->default_policy == CONF_POLICY_AUTO
                                   ? ch->n == 0 && l && conf_listener_loopback(l)
                                   : a->default_policy == CONF_POLICY_ALLOW;
        if (l && a->default_policy == CONF_POLICY_AUTO && ch->n == 0 && !conf_listener_loopback(l))
            log_warn("listener '%s' (%s port %u) is not loopback and no authentication backend "
                     "is configured: clients with a user name or password are REFUSED there "
                     "(auth.default: auto); configure auth.password_file or auth.chain, or set "
                     "auth.default: allow to accept any credentials",
                     l->name, l->address, l->port);
    }
    ch->acl_default = a->acl_default;
    ch->cache_size = a->acl_cache_size;
    if (a->acl_file[0]) {
        snprintf(ch->acl_path, sizeof(ch->acl_path), "%s", a->acl_file);
        ch->acl = auth_acl_load(a->acl_file, err, errlen);
        if (ch->acl == NULL)
            goto fail;
        log_info("ACL file %s: %zu rules", a->acl_file, auth_acl_count(ch->acl));
    }
    if (ch->n)
        log_info("authentication chain: %u backend(s), default %s", ch->n,
                 ch->default_allow[0] ? "allow" : "deny");
    return ch;
fail:
    auth_chain_free(ch);
    return NULL;
}

void auth_chain_free(auth_chain_t *ch)
{
    if (ch == NULL)
        return;
    for (uint32_t i = 0; i < ch->n; i++)
        ch->b[i]->destroy(ch->b[i]);
    /* destroy() returned: no done() any more; what never came back goes */
    while (ch->waits) {
        auth_wait_t *w = ch->waits;
        ch->waits = w->next_wait;
        auth_wait_free(w);
    }
    auth_acl_free(ch->acl);
    auth_ban_destroy(&ch->ban);
    pthread_rwlock_destroy(&ch->acl_lock);
    pthread_mutex_destroy(&ch->mu);
    free(ch);
}

int auth_chain_reload(auth_chain_t *ch)
{
    int failed = 0;
    for (uint32_t i = 0; i < ch->n; i++)
        if (ch->b[i]->reload && ch->b[i]->reload(ch->b[i]) < 0)
            failed++;
    if (ch->acl_path[0]) {
        char err[512];
        auth_acl_t *acl = auth_acl_load(ch->acl_path, err, sizeof(err));
        if (acl == NULL) {
            log_error("ACL file not reloaded, the previous rules stay: %s", err);
            failed++;
        } else {
            pthread_rwlock_wrlock(&ch->acl_lock);
            auth_acl_t *old = ch->acl;
            ch->acl = acl;
            pthread_rwlock_unlock(&ch->acl_lock);
            auth_acl_free(old);
            log_info("ACL file %s reloaded: %zu rules", ch->acl_path, auth_acl_count(acl));
        }
    }
    atomic_fetch_add(&ch->gen, 1);
    return failed;
}

/* Whether there is an ACL file: fixed at start (acl_path), so workers may
 * ask without the lock while SIGHUP swaps the rules (ch->acl). */
static int has_acl_file(const auth_chain_t *ch)
{
    return ch->acl_path[0] != '\0';
}

int auth_chain_acl_open(const auth_chain_t *ch)
{
    return ch->n == 0 && !has_acl_file(ch) && !ch->acl_async && ch->acl_default != CONF_POLICY_DENY;
}

int auth_chain_trivial(const auth_chain_t *ch, uint32_t listener)
{
    return auth_chain_acl_open(ch) && auth_chain_default(ch, listener) == AUTH_ALLOW;
}

uint32_t auth_chain_size(const auth_chain_t *ch)
{
    return ch->n;
}

void auth_chain_gen_follow(auth_chain_t *ch, auth_chain_t *prev)
{
    atomic_store(&ch->gen, auth_chain_gen(prev) + 1);
    for (uint32_t i = 0; prev && i < ch->n; i++) {
        auth_backend_t *old = ch->b[i]->follow ? auth_chain_backend(prev, ch->b[i]->name) : NULL;
        if (old)
            ch->b[i]->follow(ch->b[i], old);
    }
}

uint32_t auth_chain_gen(auth_chain_t *ch)
{
    return ch ? atomic_load_explicit(&ch->gen, memory_order_acquire) : 1;
}

auth_backend_t *auth_chain_backend(auth_chain_t *ch, const char *name)
{
    for (uint32_t i = 0; i < ch->n; i++)
        if (strcmp(ch->b[i]->name, name) == 0)
            return ch->b[i];
    return NULL;
}

auth_backend_t *auth_chain_at(auth_chain_t *ch, uint32_t i)
{
    return i < ch->n ? ch->b[i] : NULL;
}

auth_ban_t *auth_chain_ban(auth_chain_t *ch)
{
    return &ch->ban;
}

auth_verdict_t auth_chain_default(const auth_chain_t *ch, uint32_t listener)
{
    return listener < CONF_MAX_LISTENERS && ch->default_allow[listener] ? AUTH_ALLOW : AUTH_DENY;
}

/* ---- CONNECT ---- */

void auth_answer_clear(auth_answer_t *a)
{
    auth_acl_free(a->acl);
    free(a->username);
    a->acl = NULL;
    a->username = NULL;
}

void auth_wait_free(auth_wait_t *w)
{
    if (w == NULL)
        return;
    auth_answer_clear(&w->ans);
    free(w);
}

/* Takes w off the chain's list of outstanding CONNECTs (under ch->mu). */
static void wait_unlink(auth_chain_t *ch, auth_wait_t *w)
{
    pthread_mutex_lock(&ch->mu);
    if (w->prev)
        w->prev->next_wait = w->next_wait;
    else
        ch->waits = w->next_wait;
    if (w->next_wait)
        w->next_wait->prev = w->prev;
    pthread_mutex_unlock(&ch->mu);
}

/* done() of an asynchronous backend: any thread. */
static void on_done(void *token, const auth_answer_t *a)
{
    auth_wait_t *w = token;
    wait_unlink(w->ch, w);
    w->ans = *a;
    w->ans.backend = w->ch->b[w->next - 1]->name;
    w->done_us = an_now_us();
    if (w->ans.verdict == AUTH_PENDING) /* a backend bug: treat as a failure */
        w->ans.verdict = AUTH_DENY;
    inbox_vec_t v = {0};
    inbox_item_t it = {.kind = WM_AUTH, .ptr = w};
    inbox_vec_push(&v, &it);
    inbox_post(w->inbox, &v);
    inbox_vec_free(&v);
}

auth_verdict_t auth_chain_connect(auth_chain_t *ch, const auth_request_t *r, uint32_t start,
                                  inbox_t *inbox, auth_answer_t *out, auth_wait_t **wait)
{
    *wait = NULL;
    memset(out, 0, sizeof(*out));
    for (uint32_t i = start; i < ch->n; i++) {
        auth_wait_t *w = an_calloc(1, sizeof(*w));
        w->ch = ch;
        w->inbox = inbox;
        w->next = i + 1;
        /* listed before check(): done() may come before check() returns */
        pthread_mutex_lock(&ch->mu);
        w->next_wait = ch->waits;
        if (ch->waits)
            ch->waits->prev = w;
        ch->waits = w;
        pthread_mutex_unlock(&ch->mu);
        auth_answer_t a = {0};
        uint64_t t0 = w->start_us = an_now_us();
        auth_verdict_t v = ch->b[i]->check(ch->b[i], r, &a, on_done, w);
        if (v == AUTH_PENDING) {
            *wait = w;
            return AUTH_PENDING;
        }
        wait_unlink(ch, w);
        free(w);
        auth_stats_add(r->stats, ch->b[i]->name, v, an_now_us() - t0);
        if (v == AUTH_ALLOW || v == AUTH_DENY) {
            *out = a;
            out->verdict = v;
            out->backend = ch->b[i]->name;
            return v;
        }
        auth_answer_clear(&a);
    }
    out->verdict = auth_chain_default(ch, r->listener);
    return out->verdict;
}

/* ---- ACL ---- */

/* A topic's slot in a decision cache: keyed SipHash (the client picks the
 * topics; with the key unknown it cannot aim them at one slot). */
static uint32_t topic_hash(const auth_chain_t *ch, uint8_t kind, const uint8_t *p, size_t len)
{
    return (uint32_t)(an_siphash(ch->cache_key, p, len) >> 8) ^ kind;
}

/* The decision without the cache.  A SUBSCRIBE filter gets AUTH_ACL_ALLOW,
 * _DENY or _PARTIAL: the rules that only overlap it, in every rule set
 * asked before the one that decides, make a whole verdict partial
 * (auth_acl.h). */
static int acl_decide(auth_chain_t *ch, auth_client_t *ac, uint8_t action, const char *topic,
                      size_t len, int is_filter)
{
    const char *user = ac ? ac->user : NULL, *cid = ac ? ac->client_id : NULL;
    unsigned seen = 0;
    int d = -1;
    if (ac && ac->acl)
        d = is_filter ? auth_acl_check_filter(ac->acl, user, cid, action, topic, len, &seen)
                      : auth_acl_check(ac->acl, user, cid, action, topic, len, 0);
    if (d < 0 && has_acl_file(ch)) {
        pthread_rwlock_rdlock(&ch->acl_lock);
        d = is_filter ? auth_acl_check_filter(ch->acl, user, cid, action, topic, len, &seen)
                      : auth_acl_check(ch->acl, user, cid, action, topic, len, 0);
        pthread_rwlock_unlock(&ch->acl_lock);
    }
    if (d < 0 && ch->acl_async) {
        auth_request_t r = {
            .action = action, .client_id = cid ? cid : "", .username = user, .topic = topic};
        for (uint32_t i = 0; i < ch->n && d < 0; i++) {
            auth_answer_t a = {0};
            auth_verdict_t v = ch->b[i]->check(ch->b[i], &r, &a, NULL, NULL);
            auth_answer_clear(&a);
            if (v == AUTH_ALLOW || v == AUTH_DENY)
                d = v == AUTH_ALLOW;
        }
    }
    if (d < 0) {
        if (ch->acl_default == CONF_POLICY_AUTO)
            d = !(has_acl_file(ch) || (ac && ac->acl));
        else
            d = ch->acl_default == CONF_POLICY_ALLOW;
    }
    return is_filter ? auth_acl_combine(d, seen) : d;
}

int auth_chain_acl(auth_chain_t *ch, auth_client_t *ac, uint8_t action, const uint8_t *topic,
                   size_t len, int is_filter)
{
    if (ch == NULL)
        return 1;
    if (!has_acl_file(ch) && !ch->acl_async && !(ac && ac->acl) &&
        ch->acl_default != CONF_POLICY_DENY)
        return 1; /* nothing to decide with: the hot path costs nothing */
    char buf[512], *heap = NULL;
    char *t = buf;
    if (len + 1 > sizeof(buf))
        t = heap = an_malloc(len + 1);
    memcpy(t, topic, len);
    t[len] = '\0';
    uint8_t kind = (uint8_t)(action | (is_filter ? 0x10 : 0));
    struct acl_cache_entry *e = NULL;
    uint32_t gen = atomic_load(&ch->gen), h = 0;
    if (ac && ch->cache_size && len <= 1024) {
        if (ac->cache == NULL || ac->gen != gen) {
            for (uint32_t i = 0; i < ac->ncache; i++)
                free(ac->cache[i].topic);
            free(ac->cache);
            ac->cache = an_calloc(ch->cache_size, sizeof(*ac->cache));
            ac->ncache = ch->cache_size;
            ac->gen = gen;
        }
        h = topic_hash(ch, kind, topic, len);
        e = &ac->cache[h % ch->cache_size];
        if (e->kind == kind && e->hash == h && e->len == len && memcmp(e->topic, t, len) == 0) {
            free(heap);
            return e->allow;
        }
    }
    int allow = acl_decide(ch, ac, action, t, len, is_filter);
    if (e) {
        free(e->topic);
        e->topic = an_strndup(t, len);
        e->hash = h;
        e->kind = kind;
        e->len = (uint16_t)len;
        e->allow = (uint8_t)allow;
    }
    free(heap);
    return allow;
}

void auth_client_free(auth_client_t *ac)
{
    if (ac == NULL)
        return;
    if (ac->wait)
        ac->wait->owner = NULL; /* the answer will find nobody */
    for (uint32_t i = 0; i < ac->ncache; i++)
        free(ac->cache[i].topic);
    free(ac->cache);
    if (ac->mops && ac->method)
        ac->mops->free(ac->method);
    free(ac->method_out);
    free(ac->user);
    free(ac->client_id);
    auth_acl_free(ac->acl);
    free(ac->held);
    free(ac);
}
