/* auth_http.c -- the webhook backend: POST JSON, answer from the status code
 * or the body, asynchronously, with a connection pool and a result cache.
 *
 * Request (format json):
 *   {"action": "connect"|"publish"|"subscribe", "clientid": "...",
 *    "username": "..."|null, "password": "..."|null, "cert_user": ...,
 *    "peer": "addr:port", "listener": "name", "topic": "..."|null,
 *    "qos": 0, "retain": false}
 * a password that is not UTF-8 is sent as "password_base64" instead.
 * Format opa wraps the same object: {"input": {...}} (OPA's data API).
 *
 * Answer: a 2xx status with an empty body allows; 401 and 403 deny; a 2xx
 * body must be a JSON object whose "result" is "allow", "deny", "ignore"
 * (json) or true / false (both formats); anything else (other statuses,
 * garbage, no "result", connection refused, timeout) is an error, answered
 * with auth.http.on_error: DENY (connect: 0x88 server unavailable, publish
 * and subscribe: 0x87) or PASS, with a log line and a counter.  A webhook
 * deny is 0x86 (bad username or password) on connect, 0x87 otherwise.
 * An allow may carry the client's ACL rules, one auth_acl.h rule line per
 * string: {"result": "allow", "acl": ["allow pub dev/%c/#", ...]}, or as a
 * policy document {"result": {"allow": true, "acl": [...]}} (the OPA way);
 * they come back as answer.acl and are cached with the answer.
 *
 * Without done() (the chain's publish/subscribe checks, which must not
 * wait) check() answers from the cache, or PASS while it asks the webhook
 * in the background to fill the cache for the next identical request.
 *
 * Several webhooks (auth.http.urls): requests go round robin; one that
 * cannot connect is sent to the next URL, within the same deadline.
 *
 * Threads: workers call check(): a cache lookup, then the request is copied
 * (auth_job_t), its JSON body built and submitted to the backend's HTTP
 * client (src/net/httpc.h: one I/O thread driving libcurl multi, a bounded
 * queue of auth.http.queue_size, pool_size keep-alive connections per
 * webhook).  The answer comes back on that I/O thread (on_answer), which
 * owns the job from then on: it parses the answer, fills the cache, fails
 * over to the next webhook, and calls done().  Deadlines: a job's deadline
 * is set when it is submitted (timeout_ms) and the client ends a request
 * past it even while it waits for a free pooled connection, so a hung
 * webhook costs every waiting client at most timeout_ms.
 */
#include "auth_http.h"

#include "auth_acl.h"
#include "auth_async.h"
#include "auth_cache.h"

#include "../core/b64.h"
#include "../core/log.h"
#include "../core/util.h"
#include "../net/httpc.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#define HTTP_MAX_BODY 65536 /* a larger answer is garbage */

typedef struct {
    auth_backend_t base; /* first: the chain's handle */
    conf_auth_http_t cf;
    const char *targets[CONF_AUTH_HTTP_MAX_URLS]; /* url, or the urls (in cf) */
    uint32_t ntargets;
    atomic_uint next_target; /* round robin */
    char (*listener_names)[32];
    uint32_t nlisteners;
    httpc_t *client;
    auth_cache_t *cache;
    auth_ratelog_t ratelog; /* I/O thread only */
    /* counters: the first group is written by the I/O thread only */
    an_counter_t allowed, denied, ignored, timeouts;
    atomic_uint_fast64_t errors, cache_hits, queue_full; /* any thread */
} http_backend_t;

/* One request in flight: the answer's context (httpc's arg). */
typedef struct {
    http_backend_t *h;
    auth_job_t *job;
    uint32_t target; /* index in targets[] */
} hreq_t;

/* ---- the answer ---- */

static auth_cause_t deny_cause(uint8_t action)
{
    return action == AUTH_ACT_CONNECT ? AUTH_BAD_CREDENTIALS : AUTH_NOT_AUTHORIZED;
}

static void error_answer(http_backend_t *h, uint8_t action, auth_answer_t *a)
{
    memset(a, 0, sizeof(*a));
    if (h->cf.on_error == CONF_AUTH_ON_ERROR_PASS) {
        a->verdict = AUTH_PASS;
    } else {
        a->verdict = AUTH_DENY;
        a->cause = action == AUTH_ACT_CONNECT ? AUTH_BACKEND_UNAVAILABLE : AUTH_NOT_AUTHORIZED;
    }
}

/* The "acl" array of an allow: its lines joined by '\n' into *text
 * (malloc'd).  0, or -1 with *why when it is not an array of one-line
 * strings. */
static int acl_lines(json_t *acl, char **text, const char **why)
{
    size_t i, total = 1;
    json_t *e;
    if (!json_is_array(acl)) {
        *why = "\"acl\" is not an array";
        return -1;
    }
    json_array_foreach(acl, i, e)
    {
        if (!json_is_string(e) || memchr(json_string_value(e), '\n', json_string_length(e)) ||
            strlen(json_string_value(e)) != json_string_length(e)) {
            *why = "\"acl\" holds something else than one-line strings";
            return -1;
        }
        total += json_string_length(e) + 1;
    }
    if (json_array_size(acl) == 0)
        return 0;
    char *t = an_malloc(total);
    size_t at = 0;
    json_array_foreach(acl, i, e)
    {
        memcpy(t + at, json_string_value(e), json_string_length(e));
        at += json_string_length(e);
        t[at++] = '\n';
    }
    t[at] = '\0';
    *text = t;
    return 0;
}

/* Decide from status and body: 0 with *v set (and *acl_text, the rules of
 * an allow, or NULL), or -1 with *why (an error).  "result" may also be an
 * object {"allow": bool, "acl": [...]} (a policy document, as OPA returns);
 * otherwise the rules are the body's own "acl". */
int auth_http_parse_answer(uint8_t format, long status, const char *body, size_t len,
                           auth_verdict_t *v, char **acl_text, const char **why)
{
    *acl_text = NULL;
    if (status == 401 || status == 403) {
        *v = AUTH_DENY;
        return 0;
    }
    if (status < 200 || status > 299) {
        *why = "unexpected status";
        return -1;
    }
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
        i++;
    if (i == len) {
        *v = AUTH_ALLOW;
        return 0;
    }
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    int rc = -1;
    if (root == NULL || !json_is_object(root)) {
        *why = "body is not a JSON object";
        goto out;
    }
    json_t *res = json_object_get(root, "result");
    json_t *acl = json_object_get(root, "acl");
    if (json_is_object(res)) {
        json_t *allow = json_object_get(res, "allow");
        acl = json_object_get(res, "acl");
        if (json_is_boolean(allow)) {
            *v = json_is_true(allow) ? AUTH_ALLOW : AUTH_DENY;
            rc = 0;
        } else {
            *why = "\"result\" object without a boolean \"allow\"";
        }
    } else if (json_is_boolean(res)) {
        *v = json_is_true(res) ? AUTH_ALLOW : AUTH_DENY;
        rc = 0;
    } else if (format == CONF_AUTH_FORMAT_JSON && json_is_string(res)) {
        const char *s = json_string_value(res);
        if (strcmp(s, "allow") == 0)
            *v = AUTH_ALLOW, rc = 0;
        else if (strcmp(s, "deny") == 0)
            *v = AUTH_DENY, rc = 0;
        else if (strcmp(s, "ignore") == 0)
            *v = AUTH_PASS, rc = 0;
        else
            *why = "unknown \"result\"";
    } else {
        *why = res ? "bad \"result\"" : "no \"result\" in the body";
    }
    if (rc == 0 && acl && *v == AUTH_ALLOW)
        rc = acl_lines(acl, acl_text, why);
out:
    json_decref(root);
    return rc;
}

/* The client released the request's slot before calling back: whoever
 * gets the answer may ask again at once. */
static void finish(auth_job_t *j, const auth_answer_t *a)
{
    if (j->done) /* NULL: a prefetch that only fills the cache */
        j->done(j->token, a);
    else if (a->acl)
        auth_acl_free(a->acl);
    auth_job_free(j);
}

static void log_failure(http_backend_t *h, const auth_job_t *j, const char *what,
                        const auth_answer_t *a)
{
    if (!auth_ratelog_ok(&h->ratelog, "auth http"))
        return;
    log_fields_t f = {
        .event = "auth_backend_error",
        .client_id = j->client_id,
        .username = j->username,
        .peer = j->peer,
        .reason = auth_cause_name(a->cause != AUTH_OK ? a->cause : AUTH_BACKEND_UNAVAILABLE),
        .backend = "http"};
    log_ev(AN_LOG_WARN, &f, "auth http: %s of client '%s' (%s): %s: %s",
           auth_action_name(j->action), j->client_id, j->peer, what,
           a->verdict == AUTH_PASS ? "passed to the next backend" : "denied");
}

static void fail_job(http_backend_t *h, auth_job_t *j, const char *what, int timeout)
{
    auth_answer_t a;
    error_answer(h, j->action, &a);
    atomic_fetch_add_explicit(&h->errors, 1, memory_order_relaxed);
    if (timeout)
        STAT_ADD(h->timeouts, 1);
    log_failure(h, j, what, &a);
    finish(j, &a);
}

/* ---- the request ---- */

static json_t *str_or_null(const char *s)
{
    json_t *v = s ? json_string(s) : json_null();
    return v ? v : json_null(); /* not UTF-8: null rather than a broken body */
}

static char *build_body(const http_backend_t *h, const auth_job_t *j)
{
    json_t *o = json_object();
    json_t *root = o;
    char *out = NULL;

    json_object_set_new(o, "action", json_string(auth_action_name(j->action)));
    json_object_set_new(o, "clientid", str_or_null(j->client_id));
    json_object_set_new(o, "username", str_or_null(j->username));
    if (j->password == NULL) {
        json_object_set_new(o, "password", json_null());
    } else {
        json_t *pw = json_stringn((const char *)j->password, j->password_len);
        if (pw) {
            json_object_set_new(o, "password", pw);
        } else { /* binary: base64 */
            char *b64 = b64_encode_alloc(j->password, j->password_len);
            json_object_set_new(o, "password", json_null());
            json_object_set_new(o, "password_base64", json_string(b64));
            free(b64);
        }
    }
    json_object_set_new(o, "cert_user", str_or_null(j->cert_user));
    json_object_set_new(o, "peer", str_or_null(j->peer));
    if (j->listener < h->nlisteners)
        json_object_set_new(o, "listener", json_string(h->listener_names[j->listener]));
    else
        json_object_set_new(o, "listener", json_null());
    json_object_set_new(o, "topic", str_or_null(j->topic));
    json_object_set_new(o, "qos", json_integer(j->qos));
    json_object_set_new(o, "retain", json_boolean(j->retain));
    if (h->cf.format == CONF_AUTH_FORMAT_OPA) {
        root = json_object();
        json_object_set_new(root, "input", o);
    }
    out = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return out;
}

static const char *const json_headers[] = {"Content-Type: application/json", NULL};

static void on_answer(void *arg, const httpc_result_t *res);

enum { SEND_NO_BODY = 1 }; /* besides httpc_submit()'s results */

/* Submit j to targets[target]: HTTPC_QUEUED (on_answer() will own j), or a
 * refusal (j stays the caller's). */
static int send_job(http_backend_t *h, auth_job_t *j, uint32_t target)
{
    char *body = build_body(h, j);
    if (body == NULL)
        return SEND_NO_BODY;
    hreq_t *hr = an_malloc(sizeof(*hr));
    hr->h = h;
    hr->job = j;
    hr->target = target;
    httpc_req_t rq = {.url = h->targets[target],
                      .headers = json_headers,
                      .body = body,
                      .body_len = strlen(body),
                      .deadline_ms = j->deadline_ms,
                      .done = on_answer,
                      .arg = hr};
    int rc = httpc_submit(h->client, &rq);
    free(body);
    if (rc != HTTPC_QUEUED)
        free(hr);
    return rc;
}

/* The webhook's answer, or the client's error: on the client's I/O thread. */
static void on_answer(void *arg, const httpc_result_t *res)
{
    hreq_t *hr = arg;
    http_backend_t *h = hr->h;
    auth_job_t *j = hr->job;
    uint32_t target = hr->target;
    free(hr);

    if (res->err == HTTPC_ECANCELLED) { /* destroy(): done() is not called */
        auth_job_free(j);
        return;
    }
    if (res->err != HTTPC_OK) {
        const char *problem = res->err == HTTPC_ETOOBIG ? "answer too large" : res->error;
        if (res->err == HTTPC_ECONNECT && h->ntargets > 1 && ++j->attempts < h->ntargets) {
            /* failover: the same request to the next webhook, same deadline */
            if (auth_ratelog_ok(&h->ratelog, "auth http"))
                log_warn("auth http: webhook %u of %u: %s: trying the next one", target + 1,
                         h->ntargets, problem);
            int rc = send_job(h, j, (target + 1) % h->ntargets);
            if (rc != HTTPC_QUEUED)
                fail_job(h, j,
                         rc == SEND_NO_BODY ? "cannot build the request"
                                            : "cannot start the request",
                         0);
            return;
        }
        fail_job(h, j, problem, res->err == HTTPC_ETIMEOUT);
        return;
    }

    long status = res->status;
    char why[240];
    auth_verdict_t v = AUTH_DENY;
    const char *problem = NULL;
    char *acl_text = NULL;
    auth_acl_t *acl = NULL;
    if (auth_http_parse_answer(h->cf.format, status, res->body, res->body_len, &v, &acl_text,
                               &problem) < 0) {
        snprintf(why, sizeof(why), "HTTP %ld: %s", status, problem);
        problem = why;
    } else if (acl_text) {
        char err[200];
        acl = auth_acl_from_lines(acl_text, "webhook acl", err, sizeof(err));
        if (acl == NULL) {
            snprintf(why, sizeof(why), "HTTP %ld: %s", status, err);
            problem = why;
        }
    }
    if (problem) {
        free(acl_text);
        fail_job(h, j, problem, 0);
        return;
    }
    auth_answer_t a;
    memset(&a, 0, sizeof(a));
    a.verdict = v;
    a.acl = acl;
    if (v == AUTH_DENY)
        a.cause = deny_cause(j->action);
    an_counter_t *counter = v == AUTH_ALLOW  ? &h->allowed
                            : v == AUTH_DENY ? &h->denied
                                             : &h->ignored;
    STAT_ADD(*counter, 1);
    uint8_t key[AUTH_CACHE_KEY_LEN];
    if (h->cache && auth_cache_key(j->action, j->client_id, j->username, j->password,
                                   j->password_len, j->cert_user, j->topic, key) == 0)
        auth_cache_put(h->cache, key, an_now_ms(), v, a.cause, acl_text);
    free(acl_text);
    log_debug("auth http: %s of client '%s': %s", auth_action_name(j->action), j->client_id,
              v == AUTH_ALLOW  ? "allow"
              : v == AUTH_DENY ? "deny"
                               : "ignore");
    finish(j, &a);
}

/* ---- the backend interface ---- */

static auth_verdict_t http_check(auth_backend_t *b, const auth_request_t *r, auth_answer_t *out,
                                 auth_done_fn done, void *token)
{
    http_backend_t *h = (http_backend_t *)b;
    uint8_t key[AUTH_CACHE_KEY_LEN];
    uint64_t now = an_now_ms();

    if (h->cache && auth_cache_key(r->action, r->client_id, r->username, r->password,
                                   r->password_len, r->cert_user, r->topic, key) == 0) {
        auth_verdict_t v;
        auth_cause_t cause;
        char *acl_text = NULL;
        if (auth_cache_get(h->cache, key, now, &v, &cause, &acl_text)) {
            atomic_fetch_add_explicit(&h->cache_hits, 1, memory_order_relaxed);
            memset(out, 0, sizeof(*out));
            out->verdict = v;
            out->cause = cause;
            if (acl_text && done) { /* rules checked when cached: they parse */
                char err[160];
                out->acl = auth_acl_from_lines(acl_text, "webhook acl", err, sizeof(err));
            }
            free(acl_text);
            return v;
        }
    }
    uint32_t target =
        atomic_fetch_add_explicit(&h->next_target, 1, memory_order_relaxed) % h->ntargets;
    if (done == NULL) {
        /* The chain wants an answer now (publish/subscribe on the hot
         * path): pass, and ask the webhook in the background so the next
         * identical request is answered from the cache. */
        if (h->cache) {
            auth_job_t *j = auth_job_new(r, NULL, NULL, now + h->cf.timeout_ms);
            if (send_job(h, j, target) != HTTPC_QUEUED)
                auth_job_free(j);
        }
        memset(out, 0, sizeof(*out));
        out->verdict = AUTH_PASS;
        return AUTH_PASS;
    }
    auth_job_t *j = auth_job_new(r, done, token, now + h->cf.timeout_ms);
    int rc = send_job(h, j, target);
    if (rc == SEND_NO_BODY) { /* out of memory in jansson */
        auth_job_free(j);
        atomic_fetch_add_explicit(&h->errors, 1, memory_order_relaxed);
        error_answer(h, r->action, out);
        log_warn("auth http: %s of client '%s' (%s): cannot build the request: %s",
                 auth_action_name(r->action), r->client_id ? r->client_id : "",
                 r->peer ? r->peer : "",
                 out->verdict == AUTH_PASS ? "passed to the next backend" : "denied");
        return out->verdict;
    }
    if (rc != HTTPC_QUEUED) {
        auth_job_free(j);
        uint64_t n = atomic_fetch_add_explicit(&h->queue_full, 1, memory_order_relaxed);
        if (n % 1000 == 0) /* the first refusal, then one line per thousand */
            log_warn("auth http: %s of client '%s' (%s): %u requests waiting: %s "
                     "(%llu refused so far)",
                     auth_action_name(r->action), r->client_id ? r->client_id : "",
                     r->peer ? r->peer : "", h->cf.queue_size,
                     h->cf.on_error == CONF_AUTH_ON_ERROR_PASS ? "passed" : "denied (0x97)",
                     (unsigned long long)n + 1);
        memset(out, 0, sizeof(*out));
        if (h->cf.on_error == CONF_AUTH_ON_ERROR_PASS) {
            out->verdict = AUTH_PASS;
        } else {
            out->verdict = AUTH_DENY;
            out->cause = AUTH_BUSY;
        }
        return out->verdict;
    }
    return AUTH_PENDING;
}

static int http_reload(auth_backend_t *b)
{
    AN_UNUSED(b);
    return 0; /* nothing read from files */
}

static void http_destroy(auth_backend_t *b)
{
    http_backend_t *h = (http_backend_t *)b;
    if (h == NULL)
        return;
    /* the requests left are cancelled: on_answer() frees their jobs without
     * calling done() */
    httpc_free(h->client);
    auth_cache_free(h->cache);
    free(h->listener_names);
    free(h);
}

void auth_http_stats(auth_backend_t *b, auth_http_stats_t *out)
{
    http_backend_t *h = (http_backend_t *)b;
    httpc_stats_t hs;
    httpc_stats(h->client, &hs);
    out->requests = hs.started;
    out->allowed = STAT_GET(h->allowed);
    out->denied = STAT_GET(h->denied);
    out->ignored = STAT_GET(h->ignored);
    out->errors = atomic_load_explicit(&h->errors, memory_order_relaxed);
    out->timeouts = STAT_GET(h->timeouts);
    out->cache_hits = atomic_load_explicit(&h->cache_hits, memory_order_relaxed);
    out->queue_full = atomic_load_explicit(&h->queue_full, memory_order_relaxed);
}

auth_backend_t *auth_http_new(const conf_t *c, char *err, size_t errlen)
{
    const conf_auth_http_t *cf = &c->auth_http;
    http_backend_t *h = NULL;

    const char *targets[CONF_AUTH_HTTP_MAX_URLS];
    uint32_t ntargets = cf->nurls ? cf->nurls : 1;
    if (cf->nurls && cf->url[0]) {
        snprintf(err, errlen, "auth.http: set url or urls, not both");
        return NULL;
    }
    for (uint32_t i = 0; i < ntargets; i++) {
        targets[i] = cf->nurls ? cf->urls[i] : cf->url;
        if (strncmp(targets[i], "http://", 7) != 0 && strncmp(targets[i], "https://", 8) != 0) {
            snprintf(err, errlen, "auth.http.%s: %s", cf->nurls ? "urls" : "url",
                     targets[i][0] ? "expected an http:// or https:// URL"
                                   : "required when the chain has http");
            return NULL;
        }
    }
    if (cf->ca_file[0] && access(cf->ca_file, R_OK) != 0) {
        snprintf(err, errlen, "auth.http.ca_file: %s: %s", cf->ca_file, strerror(errno));
        return NULL;
    }
    h = an_calloc(1, sizeof(*h));
    h->base.name = "http";
    h->base.check = http_check;
    h->base.reload = http_reload;
    h->base.destroy = http_destroy;
    h->cf = *cf;
    h->ntargets = ntargets;
    for (uint32_t i = 0; i < ntargets; i++) /* pointers into h->cf, not *cf */
        h->targets[i] = cf->nurls ? h->cf.urls[i] : h->cf.url;
    h->nlisteners = c->nlisteners;
    h->listener_names = an_calloc(c->nlisteners ? c->nlisteners : 1, 32);
    for (uint32_t i = 0; i < c->nlisteners; i++)
        snprintf(h->listener_names[i], 32, "%s", c->listeners[i].name);
    h->cache = auth_cache_new(cf->cache_size, cf->cache_ttl_ms);
    httpc_opts_t ho = {.queue_cap = cf->queue_size,
                       .max_host_conns = cf->pool_size,
                       .max_conns = cf->pool_size * ntargets,
                       .connect_timeout_ms = cf->connect_timeout_ms,
                       .max_response = HTTP_MAX_BODY,
                       .ca_file = h->cf.ca_file};
    char herr[200];
    h->client = httpc_new(&ho, herr, sizeof(herr));
    if (h->client == NULL) {
        snprintf(err, errlen, "auth.http: %s", herr);
        goto fail;
    }
    for (uint32_t i = 0; i < ntargets; i++) {
        /* never log credentials in the URL (https://user:secret@host/...) */
        const char *url = h->targets[i];
        const char *auth_part = strstr(url, "://") + 3;
        const char *at = strchr(auth_part, '@'), *slash = strchr(auth_part, '/');
        int has_userinfo = at && (slash == NULL || at < slash);
        log_info("auth http: webhook %u of %u: %.*s%s%s", i + 1, ntargets, (int)(auth_part - url),
                 url, has_userinfo ? "***@" : "", has_userinfo ? at + 1 : auth_part);
    }
    log_info("auth http: format %s, timeout %u ms, pool %u per webhook, cache %u entries for "
             "%u ms",
             cf->format == CONF_AUTH_FORMAT_OPA ? "opa" : "json", cf->timeout_ms, cf->pool_size,
             cf->cache_ttl_ms ? cf->cache_size : 0, cf->cache_ttl_ms);
    return &h->base;
fail:
    http_destroy(&h->base);
    return NULL;
}
