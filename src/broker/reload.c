/* reload.c -- live reload of the configuration, and drain mode (reload.h
 * says what is live and what is not).
 *
 * Threads: reload_run() and reload_drain_start() run on the main thread
 * (SIGHUP) or an API thread, one at a time under rs->lock; they never
 * touch a worker's state: what a worker must do (watch or stop watching a
 * listener, start draining) travels as a WM_CONTROL inbox item, and the
 * caller waits for every worker's answer (5 s at most; a job outlives a
 * caller that gave up, by reference count).  The drain's timer runs on
 * each worker and closes that worker's own connections.
 *
 * The diff: the file just read, the file as last applied (`cur`) and as at
 * start (`start`) are flattened by conf_walk into "path = value" pairs
 * (listeners keyed by name: "listeners[NAME].port").  A live key is
 * applied when it differs from `cur`; any other key is named as needing a
 * restart while it differs from `start`, so it stays named until then.
 */
#include "reload.h"

#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "auth_chain.h"
#include "conn.h"
#include "log.h"
#include "module.h"
#include "mqtt_codec.h"
#include "mqtt_props.h"
#include "net_tls.h"

#define CTL_WAIT_MS 5000
#define DRAIN_TICK_MS 100

typedef struct {
    tw_timer_t timer;
    worker_t *w;
    uint64_t logged_at;
} drain_worker_t;

struct reload_s {
    pthread_mutex_t lock;
    char *path; /* NULL: no file */
    conf_t *start, *cur;
    void **retired; /* old snapshots and auth chains, freed at exit */
    uint8_t *retired_auth;
    size_t nretired;
    _Atomic uint8_t removed[CONF_MAX_LISTENERS]; /* read by the API's threads */
    /* drain: set once by reload_drain_start before the workers learn it */
    _Atomic int draining;
    _Atomic int stop_sent;
    _Atomic uint64_t disconnected;
    uint32_t rate, stay;
    uint64_t started_ms;
    _Atomic int handover_gave_up; /* hook.wait_ms passed with sessions left (logged once) */
    _Atomic uint64_t empty_ms;    /* wall ms the last client left (hook.pending's wait) */
    char ref[256];
    drain_worker_t *dw;
    reload_drain_hook_t hook;
};

/* ---- the live keys ------------------------------------------------------- */

typedef struct {
    const char *path;
    size_t off, size;
} live_key_t;

#define LK(p, m)                                                                                   \
    {                                                                                              \
        p, offsetof(conf_t, m), sizeof(((conf_t *)0)->m)                                           \
    }
static const live_key_t live_keys[] = {
    LK("log.level", log_level),
    LK("mqtt.max_packet_size", max_packet_size),
    LK("mqtt.max_client_id_length", max_client_id_length),
    LK("mqtt.connect_timeout", connect_timeout),
    LK("mqtt.max_keepalive", max_keepalive),
    LK("mqtt.max_inflight", max_inflight),
    LK("mqtt.max_queued", max_queued),
    LK("mqtt.retry_interval", retry_interval),
    LK("limits.max_connections", max_connections),
    LK("limits.max_connection_rate", max_connection_rate),
    LK("limits.max_message_rate", max_message_rate),
    LK("limits.max_byte_rate", max_byte_rate),
    LK("limits.max_subscriptions", max_subscriptions),
    LK("limits.max_retained", max_retained),
    LK("limits.max_sessions", max_sessions),
    LK("limits.max_awaiting_rel", max_awaiting_rel),
    LK("limits.max_topic_levels", max_topic_levels),
    LK("limits.max_topic_length", max_topic_length),
    LK("limits.max_queued_bytes", max_queued_bytes),
    LK("limits.publisher_backpressure", publisher_backpressure),
    LK("limits.queue_full", queue_full_policy),
    LK("limits.slow_subscriber_timeout", slow_subscriber_timeout),
    LK("limits.max_output_buffer", max_output_buffer),
};
#define NLIVE (sizeof(live_keys) / sizeof(live_keys[0]))

static const live_key_t *live_key(const char *path)
{
    for (size_t i = 0; i < NLIVE; i++)
        if (strcmp(live_keys[i].path, path) == 0)
            return &live_keys[i];
    return NULL;
}

static const char *const tls_keys[] = {
    "cert_file", "key_file", "ca_file", "require_client_cert", "tls_min_version", "ciphers", NULL};

/* ---- flattening (conf_walk) ---------------------------------------------- */

typedef struct {
    char path[RELOAD_NAME_LEN];
    char *val;
} kv_t;

typedef struct {
    kv_t *v;
    size_t n, cap;
    char stack[8][64];
    int depth;
    long list; /* entry accumulating a list's values, or -1 */
    int list_depth;
} flat_t;

static void flat_path(const flat_t *f, const char *key, char *out, size_t size)
{
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; i < f->depth; i++) {
        const char *c = f->stack[i];
        n += (size_t)snprintf(out + n, n < size ? size - n : 0, "%s%s", n && c[0] != '[' ? "." : "",
                              c);
    }
    if (key)
        snprintf(out + n, n < size ? size - n : 0, "%s%s", n ? "." : "", key);
}

static char *dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(an_malloc(n), s, n);
}

static kv_t *flat_add(flat_t *f, const char *key, const char *val)
{
    if (f->n == f->cap) {
        f->cap = f->cap ? 2 * f->cap : 256;
        f->v = an_realloc(f->v, f->cap * sizeof(*f->v));
    }
    kv_t *e = &f->v[f->n++];
    flat_path(f, key, e->path, sizeof(e->path));
    e->val = dupstr(val);
    return e;
}

static void push(flat_t *f, const char *c)
{
    if (f->depth < 8)
        snprintf(f->stack[f->depth], sizeof(f->stack[0]), "%s", c);
    f->depth++;
}

static void on_visit(void *ud, int kind, const char *key, const char *s, uint64_t u)
{
    flat_t *f = ud;
    char num[32];
    const char *val = s;
    switch (kind) {
    case CONF_V_SECTION:
        push(f, key);
        return;
    case CONF_V_LIST:
        if (!(f->depth == 0 && strcmp(key, "listeners") == 0)) {
            flat_add(f, key, "");
            f->list = (long)f->n - 1;
            f->list_depth = f->depth + 1;
        }
        push(f, key);
        return;
    case CONF_V_ITEM:
        push(f, "[?]");
        return;
    case CONF_V_END:
        if (f->list >= 0 && f->depth == f->list_depth)
            f->list = -1;
        if (f->depth > 0)
            f->depth--;
        return;
    case CONF_V_UINT:
        snprintf(num, sizeof(num), "%llu", (unsigned long long)u);
        val = num;
        break;
    case CONF_V_BOOL:
        val = u ? "true" : "false";
        break;
    default:
        break;
    }
    if (val == NULL)
        val = "";
    if (key == NULL && f->list >= 0) { /* a list's element */
        kv_t *e = &f->v[f->list];
        size_t a = strlen(e->val), b = strlen(val);
        e->val = an_realloc(e->val, a + b + 2);
        if (a)
            e->val[a++] = ',';
        memcpy(e->val + a, val, b + 1);
        return;
    }
    /* a listener's name comes first: it names the item */
    if (key && strcmp(key, "name") == 0 && f->depth >= 1 && f->depth <= 8 &&
        strcmp(f->stack[f->depth - 1], "[?]") == 0)
        snprintf(f->stack[f->depth - 1], sizeof(f->stack[0]), "[%s]", val);
    flat_add(f, key, val);
}

static void flatten(const conf_t *c, flat_t *f)
{
    memset(f, 0, sizeof(*f));
    f->list = -1;
    conf_walk(c, on_visit, f);
}

static void flat_free(flat_t *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->v[i].val);
    free(f->v);
}

static const char *flat_get(const flat_t *f, const char *path)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->v[i].path, path) == 0)
            return f->v[i].val;
    return NULL;
}

static int differs(const flat_t *a, const flat_t *b, const char *path)
{
    const char *x = flat_get(a, path), *y = flat_get(b, path);
    if (x == NULL || y == NULL)
        return x != y;
    return strcmp(x, y) != 0;
}

/* ---- results ------------------------------------------------------------- */

static void name_add(char (*list)[RELOAD_NAME_LEN], uint32_t *n, const char *name)
{
    for (uint32_t i = 0; i < *n; i++)
        if (strcmp(list[i], name) == 0)
            return;
    if (*n < RELOAD_MAX_NAMES)
        snprintf(list[(*n)++], RELOAD_NAME_LEN, "%s", name);
}

static void error_add(reload_result_t *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void error_add(reload_result_t *res, const char *fmt, ...)
{
    if (res->nerrors >= 4)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->errors[res->nerrors++], sizeof(res->errors[0]), fmt, ap);
    va_end(ap);
}

static void retire(reload_t *rs, void *p, int is_auth)
{
    rs->retired = an_realloc(rs->retired, (rs->nretired + 1) * sizeof(*rs->retired));
    rs->retired_auth = an_realloc(rs->retired_auth, rs->nretired + 1);
    rs->retired[rs->nretired] = p;
    rs->retired_auth[rs->nretired++] = (uint8_t)is_auth;
}

/* ---- jobs run on every worker (WM_CONTROL) -------------------------------- */

enum { CTL_LISTEN_ON, CTL_LISTEN_OFF, CTL_DRAIN };

typedef struct {
    int op;
    uint32_t slot;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t pending, refs;
} ctl_job_t;

static void job_unref(ctl_job_t *j, int answered)
{
    pthread_mutex_lock(&j->mu);
    if (answered)
        j->pending--;
    int last = --j->refs == 0;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    if (last) {
        pthread_mutex_destroy(&j->mu);
        pthread_cond_destroy(&j->cv);
        free(j);
    }
}

static void drain_arm(worker_t *w);

static void run_ctl(worker_t *w, inbox_item_t *it)
{
    ctl_job_t *j = it->ptr;
    switch (j->op) {
    case CTL_LISTEN_ON:
        worker_listener_watch(w, j->slot, 1);
        break;
    case CTL_LISTEN_OFF:
        worker_listener_watch(w, j->slot, 0);
        break;
    case CTL_DRAIN:
        drain_arm(w);
        break;
    }
    job_unref(j, 1);
}

static void drop_ctl(inbox_item_t *it)
{
    job_unref(it->ptr, 1);
}

/* Run op on every worker; 0 when all did within CTL_WAIT_MS. */
static int each_worker(server_t *srv, int op, uint32_t slot)
{
    ctl_job_t *j = an_calloc(1, sizeof(*j));
    j->op = op;
    j->slot = slot;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->pending = srv->nworkers;
    j->refs = srv->nworkers + 1;
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        inbox_vec_t v = {0};
        inbox_item_t it = {.kind = WM_CONTROL, .ptr = j};
        inbox_vec_push(&v, &it);
        inbox_post(&srv->workers[i].inbox, &v);
        inbox_vec_free(&v);
    }
    struct timespec dl = an_wall_after(CTL_WAIT_MS);
    pthread_mutex_lock(&j->mu);
    while (j->pending > 0)
        if (pthread_cond_timedwait(&j->cv, &j->mu, &dl) == ETIMEDOUT)
            break;
    int rc = j->pending == 0 ? 0 : -1;
    pthread_mutex_unlock(&j->mu);
    job_unref(j, 0);
    return rc;
}

/* ---- listeners ----------------------------------------------------------- */

static int slot_open(server_t *srv, uint32_t i)
{
    return i < srv->nlisteners && !srv->reload->removed[i] && srv->listen_fds[i] >= 0;
}

static int slot_by_name(server_t *srv, const char *name)
{
    for (uint32_t i = 0; i < srv->nlisteners; i++)
        if (slot_open(srv, i) && strcmp(srv->conf.listeners[i].name, name) == 0)
            return (int)i;
    return -1;
}

static void listener_remove(server_t *srv, uint32_t i)
{
    reload_t *rs = srv->reload;
    if (each_worker(srv, CTL_LISTEN_OFF, i) < 0) {
        log_error("listener %s: a worker did not stop watching it: socket left open",
                  srv->conf.listeners[i].name);
        return;
    }
    int fd = srv->listen_fds[i];
    srv->listen_fds[i] = -1;
    rs->removed[i] = 1;
    close(fd);
    pthread_mutex_lock(&srv->tls_lock);
    struct ssl_ctx_st *old = srv->tls_ctx[i];
    srv->tls_ctx[i] = NULL;
    pthread_mutex_unlock(&srv->tls_lock);
    tls_ctx_free(old);
    log_info("listener %s: closed (%s:%u); its connections stay", srv->conf.listeners[i].name,
             srv->conf.listeners[i].address, (unsigned)srv->listen_ports[i]);
}

static int listener_add(server_t *srv, const conf_listener_t *l, reload_result_t *res)
{
    reload_t *rs = srv->reload;
    uint32_t i = srv->nlisteners;
    if (i >= CONF_MAX_LISTENERS) /* reuse a removed slot whose connections are gone */
        for (i = 0; i < CONF_MAX_LISTENERS; i++)
            if (rs->removed[i] && atomic_load(&srv->listen_conns[i]) == 0)
                break;
    if (i >= CONF_MAX_LISTENERS) {
        error_add(res,
                  "listeners[%s]: no free listener slot (%d at most, removed ones count "
                  "while they have connections)",
                  l->name, CONF_MAX_LISTENERS);
        return -1;
    }
    struct ssl_ctx_st *ctx = NULL;
    if (l->transport == CONF_TRANSPORT_TLS || l->transport == CONF_TRANSPORT_WSS) {
        char err[512];
        if ((ctx = tls_ctx_new(l, err, sizeof(err))) == NULL) {
            error_add(res, "%s", err);
            return -1;
        }
    }
    srv->conf.listeners[i] = *l; /* no worker reads slot i yet */
    if (server_listener_open(srv, i) < 0) {
        tls_ctx_free(ctx);
        error_add(res, "listeners[%s]: cannot listen on %s port %u (see the log)", l->name,
                  l->address, (unsigned)l->port);
        return -1;
    }
    pthread_mutex_lock(&srv->tls_lock);
    srv->tls_ctx[i] = ctx;
    pthread_mutex_unlock(&srv->tls_lock);
    rs->removed[i] = 0;
    if (i >= srv->nlisteners)
        srv->nlisteners = i + 1;
    if (each_worker(srv, CTL_LISTEN_ON, i) < 0)
        log_warn("listener %s: a worker did not answer; it watches it when it does", l->name);
    log_info("listener %s: listening on %s:%u", l->name, l->address,
             (unsigned)srv->listen_ports[i]);
    return 0;
}

/* The TLS keys of `from` into `to` (the keys a reload changes live). */
static void tls_merge(conf_listener_t *to, const conf_listener_t *from)
{
    memcpy(to->cert_file, from->cert_file, sizeof(to->cert_file));
    memcpy(to->key_file, from->key_file, sizeof(to->key_file));
    memcpy(to->ca_file, from->ca_file, sizeof(to->ca_file));
    memcpy(to->ciphers, from->ciphers, sizeof(to->ciphers));
    to->require_client_cert = from->require_client_cert;
    to->tls_min_version = from->tls_min_version;
}

/* Before anything changes: the TLS files of every listener of `cand` that
 * is new or whose TLS keys differ load.  0, or -1 with the errors set. */
static int listeners_check(server_t *srv, const conf_t *cand, reload_result_t *res)
{
    int rc = 0;
    for (uint32_t j = 0; j < cand->nlisteners; j++) {
        conf_listener_t l = cand->listeners[j];
        int slot = slot_by_name(srv, l.name);
        if (slot >= 0) {
            l = srv->conf.listeners[slot];
            tls_merge(&l, &cand->listeners[j]);
            if (memcmp(&l, &srv->conf.listeners[slot], sizeof(l)) == 0)
                continue;
        }
        if (l.transport != CONF_TRANSPORT_TLS && l.transport != CONF_TRANSPORT_WSS)
            continue;
        char err[512];
        struct ssl_ctx_st *ctx = tls_ctx_new(&l, err, sizeof(err));
        if (ctx == NULL) {
            error_add(res, "%s", err);
            rc = -1;
        }
        tls_ctx_free(ctx);
    }
    return rc;
}

/* A listener's TLS keys changed: a new context from them, swapped in. */
static int listener_tls(server_t *srv, uint32_t i, const conf_listener_t *nl, reload_result_t *res)
{
    conf_listener_t l = srv->conf.listeners[i];
    tls_merge(&l, nl);
    if (l.transport != CONF_TRANSPORT_TLS && l.transport != CONF_TRANSPORT_WSS) {
        tls_merge(&srv->conf.listeners[i], nl); /* not used by a plain listener */
        return 0;
    }
    char err[512];
    struct ssl_ctx_st *ctx = tls_ctx_new(&l, err, sizeof(err));
    if (ctx == NULL) {
        error_add(res, "%s", err);
        return -1;
    }
    (void)tls_ctx_copy_ticket_keys(ctx, srv->tls_ctx[i]);
    pthread_mutex_lock(&srv->tls_lock);
    struct ssl_ctx_st *old = srv->tls_ctx[i];
    srv->tls_ctx[i] = ctx;
    pthread_mutex_unlock(&srv->tls_lock);
    tls_ctx_free(old);
    /* the workers never read these fields (only the context), and only
     * these are written; the API's display reads them under rs->lock */
    tls_merge(&srv->conf.listeners[i], nl);
    return 0;
}

/* ---- reload -------------------------------------------------------------- */

int reload_init(server_t *srv, const char *path, const conf_t *loaded)
{
    reload_t *rs = an_calloc(1, sizeof(*rs));
    pthread_mutex_init(&rs->lock, NULL);
    if (path) {
        rs->path = dupstr(path);
        rs->start = an_malloc(sizeof(conf_t));
        rs->cur = an_malloc(sizeof(conf_t));
        *rs->start = *loaded;
        *rs->cur = *loaded;
    }
    rs->dw = an_calloc(srv->nworkers, sizeof(*rs->dw));
    srv->reload = rs;
    static const worker_inbox_kind_t k = {.run = run_ctl, .drop = drop_ctl};
    worker_inbox_register(srv, WM_CONTROL, &k);
    return 0;
}

void reload_free(server_t *srv)
{
    reload_t *rs = srv->reload;
    if (rs == NULL)
        return;
    for (size_t i = 0; i < rs->nretired; i++) {
        if (rs->retired_auth[i])
            auth_chain_free(rs->retired[i]);
        else
            free(rs->retired[i]);
    }
    conf_t *live = (conf_t *)atomic_load(&srv->live);
    atomic_store(&srv->live, NULL);
    free(live);
    free(rs->retired);
    free(rs->retired_auth);
    free(rs->path);
    free(rs->start);
    free(rs->cur);
    free(rs->dw);
    pthread_mutex_destroy(&rs->lock);
    free(rs);
    srv->reload = NULL;
}

void reload_lock(server_t *srv)
{
    if (srv->reload)
        pthread_mutex_lock(&srv->reload->lock);
}

void reload_unlock(server_t *srv)
{
    if (srv->reload)
        pthread_mutex_unlock(&srv->reload->lock);
}

int reload_listener_removed(server_t *srv, uint32_t i)
{
    return srv->reload && i < CONF_MAX_LISTENERS && srv->reload->removed[i];
}

static int is_tls_key(const char *k)
{
    for (int i = 0; tls_keys[i]; i++)
        if (strcmp(tls_keys[i], k) == 0)
            return 1;
    return 0;
}

/* The listeners of `c` against the open slots: removed, added, TLS
 * changes applied; other changes named.  `cur` is what the file said last. */
static void listeners_apply(server_t *srv, conf_t *cand, const flat_t *fc, const flat_t *fcur,
                            reload_result_t *res)
{
    char path[RELOAD_NAME_LEN];
    if (reload_draining(srv)) { /* every listener stays closed */
        error_add(res, "listeners: not changed while the broker drains");
        return;
    }
    /* removed first: a port may move to a new listener */
    for (uint32_t i = 0; i < srv->nlisteners; i++) {
        if (!slot_open(srv, i))
            continue;
        int found = 0;
        for (uint32_t j = 0; j < cand->nlisteners && !found; j++)
            found = strcmp(cand->listeners[j].name, srv->conf.listeners[i].name) == 0;
        if (!found) {
            snprintf(path, sizeof(path), "listeners[%s]", srv->conf.listeners[i].name);
            listener_remove(srv, i);
            name_add(res->applied, &res->napplied, path);
        }
    }
    for (uint32_t j = 0; j < cand->nlisteners; j++) {
        conf_listener_t *l = &cand->listeners[j];
        int slot = slot_by_name(srv, l->name);
        snprintf(path, sizeof(path), "listeners[%s]", l->name);
        if (slot < 0) {
            if (listener_add(srv, l, res) == 0)
                name_add(res->applied, &res->napplied, path);
            continue;
        }
        int tls = 0;
        for (size_t k = 0; k < fc->n; k++) {
            const char *p = fc->v[k].path;
            size_t pl = strlen(path);
            if (strncmp(p, path, pl) != 0 || p[pl] != '.' || !differs(fc, fcur, p))
                continue;
            if (is_tls_key(p + pl + 1))
                tls = 1;
            else
                name_add(res->restart_required, &res->nrestart, p);
        }
        if (tls && listener_tls(srv, (uint32_t)slot, l, res) == 0) {
            snprintf(path, sizeof(path), "listeners[%s].tls", l->name);
            name_add(res->applied, &res->napplied, path);
        }
    }
}

int reload_run(server_t *srv, reload_result_t *res)
{
    reload_t *rs = srv->reload;
    memset(res, 0, sizeof(*res));
    if (rs == NULL) { /* a server without reload_init (tests) */
        error_add(res, "reload is not available");
        return 1;
    }
    pthread_mutex_lock(&rs->lock);
    /* what SIGHUP always did */
    if (log_reopen() < 0)
        log_error("cannot reopen log file: %s", strerror(errno));
    else
        log_info("log reopened (reload)");
    server_tls_reload(srv);
    if (auth_chain_reload(srv->auth) == 0)
        log_info("authentication files reloaded");
    api_reload(srv);
    if (rs->path == NULL) {
        log_info("reload: no configuration file: files reloaded only");
        pthread_mutex_unlock(&rs->lock);
        return 0;
    }

    conf_t *cand = an_malloc(sizeof(conf_t));
    char err[512];
    conf_defaults(cand);
    module_conf_defaults(cand);
    if (conf_load(cand, rs->path, err, sizeof(err)) < 0) {
        error_add(res, "%s", err);
        log_error("reload: %s: nothing changed", err);
        free(cand);
        pthread_mutex_unlock(&rs->lock);
        return 1;
    }
    flat_t fc, fcur, fstart;
    flatten(cand, &fc);
    flatten(rs->cur, &fcur);
    flatten(rs->start, &fstart);

    int live_changed = 0, auth_changed = 0;
    uint8_t *mod_changed = an_calloc(srv->nmodules ? srv->nmodules : 1, 1);
    for (size_t i = 0; i < fc.n + fstart.n; i++) {
        const char *p = i < fc.n ? fc.v[i].path : fstart.v[i - fc.n].path;
        const module_inst_t *mi;
        if (strncmp(p, "listeners", 9) == 0)
            continue;
        if ((mi = module_live_key(srv, p)) != NULL) {
            if (differs(&fc, &fcur, p)) {
                mod_changed[mi->index] = 1;
                name_add(res->applied, &res->napplied, p);
            }
        } else if (strncmp(p, "auth.", 5) == 0) {
            if (differs(&fc, &fcur, p)) {
                auth_changed = 1;
                name_add(res->applied, &res->napplied, p);
            }
        } else if (live_key(p)) {
            if (differs(&fc, &fcur, p)) {
                live_changed = 1;
                name_add(res->applied, &res->napplied, p);
            }
        } else if (differs(&fc, &fstart, p)) {
            name_add(res->restart_required, &res->nrestart, p);
        }
    }
    /* prepare what can fail before changing anything */
    auth_chain_t *chain = NULL;
    if (!reload_draining(srv) && listeners_check(srv, cand, res) < 0) {
        log_error("reload: %s: nothing changed", res->errors[0]);
        res->napplied = 0;
        goto out;
    }
    if (auth_changed && (chain = auth_chain_new(cand, err, sizeof(err))) == NULL) {
        error_add(res, "auth: %s", err);
        log_error("reload: auth: %s: nothing changed", err);
        res->napplied = 0;
        goto out;
    }
    /* modules: each applies its own section, or refuses it whole */
    for (uint32_t j = 0; j < srv->nmodules; j++) {
        module_inst_t *mi = &srv->modules[j];
        if (!mod_changed[j])
            continue;
        if (mi->m->reload(mi, conf_section_values(cand, mi->m->section), err, sizeof(err)) < 0) {
            error_add(res, "%s: %s", mi->m->section, err);
            log_error("reload: %s: %s: not applied", mi->m->section, err);
            res->napplied = 0;
            if (chain)
                auth_chain_free(chain);
            goto out;
        }
        log_info("reload: %s applied", mi->m->section);
    }
    if (live_changed || auth_changed) {
        conf_t *snap = an_malloc(sizeof(conf_t));
        *snap = *server_live(srv);
        for (size_t i = 0; i < NLIVE; i++)
            memcpy((char *)snap + live_keys[i].off, (const char *)cand + live_keys[i].off,
                   live_keys[i].size);
        if (cand->max_connections == 0) /* derived from the open-file limit at start */
            snap->max_connections = srv->conf.max_connections;
        snap->auth = cand->auth;
        snap->auth_http = cand->auth_http;
        snap->auth_redis = cand->auth_redis;
        const conf_t *old = atomic_load(&srv->live);
        atomic_store_explicit(&srv->live, snap, memory_order_release);
        if (old)
            retire(rs, (void *)old, 0);
        log_set_level(snap->log_level);
    }
    if (chain) {
        auth_chain_t *old = srv->auth;
        auth_chain_gen_follow(chain, old);
        atomic_store(&srv->auth, chain);
        retire(rs, old, 1);
        log_info("reload: authentication chain rebuilt (%u backend(s))", auth_chain_size(chain));
    }
    listeners_apply(srv, cand, &fc, &fcur, res);
    /* a listener's keys that need a restart stay as the file said at the
     * previous reload, so they are named again next time */
    for (uint32_t j = 0; j < cand->nlisteners; j++)
        for (uint32_t k = 0; k < rs->cur->nlisteners; k++)
            if (strcmp(cand->listeners[j].name, rs->cur->listeners[k].name) == 0) {
                conf_listener_t keep = rs->cur->listeners[k];
                tls_merge(&keep, &cand->listeners[j]);
                cand->listeners[j] = keep;
            }
    *rs->cur = *cand;
out:
    for (uint32_t i = 0; i < res->napplied; i++) {
        const char *v = strchr(res->applied[i], '[') ? NULL : flat_get(&fc, res->applied[i]);
        log_info("reload: applied %s%s%s", res->applied[i], v ? " = " : "", v ? v : "");
    }
    for (uint32_t i = 0; i < res->nrestart; i++)
        log_warn("reload: %s changed: not applied, needs a restart", res->restart_required[i]);
    log_info("reload of %s: %u applied, %u need a restart, %u error(s)", rs->path, res->napplied,
             res->nrestart, res->nerrors);
    flat_free(&fc);
    flat_free(&fcur);
    flat_free(&fstart);
    free(mod_changed);
    free(cand);
    pthread_mutex_unlock(&rs->lock);
    return (int)res->nerrors;
}

/* ---- drain --------------------------------------------------------------- */

int reload_draining(const server_t *srv)
{
    return srv->reload && atomic_load(&srv->reload->draining);
}

void reload_drain_hook_set(server_t *srv, const reload_drain_hook_t *h)
{
    srv->reload->hook = *h;
}

/* Close one client the drain's way (reload.h). */
static void drain_close(worker_t *w, conn_t *c, reload_t *rs)
{
    if (c->state == CONN_ACTIVE && rs->hook.handover && rs->hook.handover(w, c, rs->hook.user))
        return;
    const char *why = rs->ref[0] ? "drain: use another server" : "drain: server shutting down";
    if (c->proto == MQTT_PROTO_V5 && c->state == CONN_ACTIVE) {
        uint8_t rc = rs->ref[0] ? MQTT_RC_USE_ANOTHER_SERVER : MQTT_RC_SERVER_SHUTTING_DOWN;
        uint8_t props[300];
        mqtt_pw_t pw;
        mqtt_pw_init(&pw, props, sizeof(props));
        if (rs->ref[0])
            mqtt_pw_str(&pw, MQTT_PROP_SERVER_REFERENCE, rs->ref, strlen(rs->ref));
        size_t len = mqtt_pw_error(&pw) ? 0 : mqtt_pw_len(&pw);
        mqtt_encode_disconnect_v5(conn_reserve(c, mqtt_disconnect_v5_size(rc, len), 1), rc, props,
                                  len);
        conn_count_out(c, MQTT_DISCONNECT);
    }
    conn_close(c, why, 0);
    atomic_fetch_add(&rs->disconnected, 1);
}

static void drain_tick(tw_timer_t *t)
{
    drain_worker_t *dw = container_of(t, drain_worker_t, timer);
    worker_t *w = dw->w;
    server_t *srv = w->srv;
    reload_t *rs = srv->reload;
    uint32_t quota = rs->rate / (uint32_t)(1000 / DRAIN_TICK_MS) / srv->nworkers;
    if (quota == 0)
        quota = 1;
    conn_t *next;
    for (conn_t *c = w->conns; c && quota; c = next) {
        next = c->next;
        if (c->state == CONN_DEAD || c->state == CONN_MOVING)
            continue;
        drain_close(w, c, rs);
        quota--;
    }
    uint32_t left = atomic_load(&srv->total_conns);
    /* no client left: the sessions their clients take on other nodes go
     * first (a cluster), for hook.wait_ms at most */
    uint64_t handing = 0;
    if (left == 0 && rs->hook.pending) {
        uint64_t none = 0, now = an_wall_ms();
        atomic_compare_exchange_strong(&rs->empty_ms, &none, now); /* the first to see it */
        handing = rs->hook.pending(srv, rs->hook.user);
        if (handing && now >= atomic_load(&rs->empty_ms) + rs->hook.wait_ms &&
            !atomic_exchange(&rs->handover_gave_up, 1))
            log_warn("drain: %llu session(s) not handed over %u ms after the last client "
                     "left: they stay in this node's store",
                     (unsigned long long)handing, rs->hook.wait_ms);
        if (atomic_load(&rs->handover_gave_up))
            handing = 0;
    }
    if (w->id == 0 && w->now >= dw->logged_at + 1000u) {
        dw->logged_at = w->now;
        if (handing)
            log_info("drain: no client left, %llu session(s) to hand over",
                     (unsigned long long)handing);
        else
            log_info("drain: %u client(s) left, %llu disconnected", left,
                     (unsigned long long)atomic_load(&rs->disconnected));
    }
    if (left == 0 && handing == 0 && !atomic_exchange(&rs->stop_sent, 1)) {
        log_info("drain: finished after %llu ms, %llu client(s) disconnected: %s",
                 (unsigned long long)(an_wall_ms() - rs->started_ms),
                 (unsigned long long)atomic_load(&rs->disconnected),
                 rs->stay ? "no client left (the broker stays up)" : "stopping");
        if (!rs->stay)
            kill(getpid(), SIGTERM); /* the main thread's signalfd: the normal shutdown */
    }
    if (left > 0 || w->conns || handing) /* every worker ticks until the broker is empty */
        tw_add(&w->tw, &dw->timer, w->now + DRAIN_TICK_MS);
}

static void drain_arm(worker_t *w)
{
    drain_worker_t *dw = &w->srv->reload->dw[w->id];
    dw->w = w;
    tw_timer_init(&dw->timer, drain_tick);
    tw_add(&w->tw, &dw->timer, w->now + DRAIN_TICK_MS);
}

int reload_drain_start(server_t *srv, uint32_t rate, const char *server_reference, int stay,
                       char *err, size_t errlen)
{
    reload_t *rs = srv->reload;
    if (rs == NULL) {
        snprintf(err, errlen, "drain is not available");
        return -1;
    }
    pthread_mutex_lock(&rs->lock);
    if (atomic_load(&rs->draining)) {
        snprintf(err, errlen, "already draining");
        pthread_mutex_unlock(&rs->lock);
        return -1;
    }
    rs->rate = rate ? rate : 1000;
    rs->stay = stay != 0;
    snprintf(rs->ref, sizeof(rs->ref), "%s", server_reference ? server_reference : "");
    rs->started_ms = an_wall_ms();
    atomic_store(&rs->draining, 1);
    server_door_close(srv, SRV_DOOR_DRAIN); /* also what the listeners still queue */
    log_info("drain: started: %u client(s), %u per second, %s%s%s", atomic_load(&srv->total_conns),
             rs->rate, rs->ref[0] ? "server reference " : "no server reference", rs->ref,
             rs->stay ? ", the broker stays up when empty" : "");
    for (uint32_t i = 0; i < srv->nlisteners; i++)
        if (slot_open(srv, i))
            listener_remove(srv, i);
    if (rs->hook.started)
        rs->hook.started(srv, rs->hook.user);
    pthread_mutex_unlock(&rs->lock);
    each_worker(srv, CTL_DRAIN, 0);
    return 0;
}

void reload_drain_status(server_t *srv, reload_drain_status_t *st)
{
    reload_t *rs = srv->reload;
    memset(st, 0, sizeof(*st));
    st->clients_left = atomic_load(&srv->total_conns);
    if (rs == NULL || !atomic_load(&rs->draining))
        return;
    pthread_mutex_lock(&rs->lock);
    st->draining = 1;
    st->started_ms = rs->started_ms;
    if (rs->hook.pending && atomic_load(&rs->draining))
        st->sessions_to_hand_over = rs->hook.pending(srv, rs->hook.user);
    st->rate = rs->rate;
    st->stay = rs->stay;
    memcpy(st->server_reference, rs->ref, sizeof(st->server_reference));
    st->disconnected = atomic_load(&rs->disconnected);
    pthread_mutex_unlock(&rs->lock);
}
