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
 * Threads: workers call check() (cache lookup, job push, curl_multi_wakeup:
 * all thread-safe); the backend's one I/O thread owns the CURLM handle,
 * every easy handle and every job taken from the queue.  Deadlines: a job's
 * deadline is set when it is queued (timeout_ms), and the thread removes a
 * transfer past it even while libcurl still queues it for a free pooled
 * connection, so a hung webhook costs every waiting client at most
 * timeout_ms.
 */
#include "auth_http.h"

#include "auth_acl.h"
#include "auth_async.h"
#include "auth_cache.h"

#include "../core/b64.h"
#include "../core/log.h"
#include "../core/util.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#define HTTP_MAX_BODY 65536 /* a larger answer is garbage */
#define HTTP_IDLE_WAIT_MS 1000

typedef struct xfer {
    struct xfer *prev, *next; /* in flight, in deadline order */
    auth_job_t *job;
    CURL *easy;
    char *body;               /* the POST body (json_dumps) */
    char *resp;
    size_t resp_len;
    int too_big;
    uint32_t target;          /* index in targets[] */
} xfer_t;

typedef struct {
    auth_backend_t base;      /* first: the chain's handle */
    conf_auth_http_t cf;
    const char *targets[CONF_AUTH_HTTP_MAX_URLS]; /* url, or the urls (in cf) */
    uint32_t ntargets;
    uint32_t next_target;     /* I/O thread only: round robin */
    char (*listener_names)[32];
    uint32_t nlisteners;
    CURLM *multi;
    struct curl_slist *headers;
    auth_cache_t *cache;
    auth_jobq_t q;
    pthread_t thread;
    int thread_started;
    atomic_int stop;
    xfer_t *first, *last;     /* I/O thread only */
    auth_ratelog_t ratelog;   /* I/O thread only */
    /* counters: the first group is written by the I/O thread only */
    an_counter_t requests, allowed, denied, ignored, errors, timeouts;
    atomic_uint_fast64_t cache_hits, queue_full; /* any worker */
} http_backend_t;

/* ---- the answer ---- */

static uint8_t deny_reason(uint8_t action)
{
    return action == AUTH_ACT_CONNECT ? 0x86 : 0x87;
}

static void error_answer(http_backend_t *h, uint8_t action, auth_answer_t *a)
{
    memset(a, 0, sizeof(*a));
    if (h->cf.on_error == CONF_AUTH_ON_ERROR_PASS) {
        a->verdict = AUTH_PASS;
    } else {
        a->verdict = AUTH_DENY;
        a->reason = action == AUTH_ACT_CONNECT ? 0x88 : 0x87;
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
    json_array_foreach(acl, i, e) {
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
    json_array_foreach(acl, i, e) {
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

static void finish(http_backend_t *h, auth_job_t *j, const auth_answer_t *a)
{
    /* the slot is free before the answer is out: whoever got the answer
     * may ask again at once */
    auth_jobq_release(&h->q, 1);
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
    log_warn("auth http: %s of client '%s' (%s): %s: %s", auth_action_name(j->action),
             j->client_id, j->peer, what,
             a->verdict == AUTH_PASS ? "passed to the next backend" : "denied");
}

static void fail_job(http_backend_t *h, auth_job_t *j, const char *what, int timeout)
{
    auth_answer_t a;
    error_answer(h, j->action, &a);
    STAT_ADD(h->errors, 1);
    if (timeout)
        STAT_ADD(h->timeouts, 1);
    log_failure(h, j, what, &a);
    finish(h, j, &a);
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

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    xfer_t *x = userdata;
    size_t n = size * nmemb;
    if (x->resp_len + n > HTTP_MAX_BODY) {
        x->too_big = 1;
        return 0; /* aborts the transfer */
    }
    x->resp = an_realloc(x->resp, x->resp_len + n + 1);
    memcpy(x->resp + x->resp_len, ptr, n);
    x->resp_len += n;
    x->resp[x->resp_len] = '\0';
    return n;
}

static void xfer_unlink(http_backend_t *h, xfer_t *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        h->first = x->next;
    if (x->next)
        x->next->prev = x->prev;
    else
        h->last = x->prev;
}

/* Remove from the multi handle and free; the job is the caller's. */
static auth_job_t *xfer_end(http_backend_t *h, xfer_t *x)
{
    auth_job_t *j = x->job;
    xfer_unlink(h, x);
    curl_multi_remove_handle(h->multi, x->easy);
    curl_easy_cleanup(x->easy);
    free(x->body);
    free(x->resp);
    free(x);
    return j;
}

/* Send j to targets[target]. */
static void start_job(http_backend_t *h, auth_job_t *j, uint64_t now, uint32_t target)
{
    if (j->deadline_ms <= now) {
        fail_job(h, j, "timed out before it was sent", 1);
        return;
    }
    xfer_t *x = an_calloc(1, sizeof(*x));
    x->job = j;
    x->target = target;
    x->body = build_body(h, j);
    x->easy = curl_easy_init();
    if (x->body == NULL || x->easy == NULL) {
        if (x->easy)
            curl_easy_cleanup(x->easy);
        free(x->body);
        free(x);
        fail_job(h, j, "cannot build the request", 0);
        return;
    }
    CURL *e = x->easy;
    long left = (long)(j->deadline_ms - now);
    curl_easy_setopt(e, CURLOPT_URL, h->targets[target]);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(x->body));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    /* a backstop only: the thread's deadline sweep ends the request at
     * `left`, for every request at once, before libcurl would end them one
     * by one (and hand a freed connection to a request that expires too) */
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, left + 1000);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)AN_MIN((uint64_t)h->cf.connect_timeout_ms, (uint64_t)left));
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    if (h->cf.ca_file[0])
        curl_easy_setopt(e, CURLOPT_CAINFO, h->cf.ca_file);
    x->prev = h->last;
    x->next = NULL;
    if (h->last)
        h->last->next = x;
    else
        h->first = x;
    h->last = x;
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK) {
        xfer_unlink(h, x);
        curl_easy_cleanup(e);
        free(x->body);
        free(x);
        fail_job(h, j, "cannot start the request", 0);
        return;
    }
    STAT_ADD(h->requests, 1);
}

static void transfer_done(http_backend_t *h, xfer_t *x, CURLcode res)
{
    long status = 0;
    char why[240];
    int timeout = res == CURLE_OPERATION_TIMEDOUT;
    auth_verdict_t v = AUTH_DENY;
    const char *problem = NULL;
    char *acl_text = NULL;
    auth_acl_t *acl = NULL;

    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    if (res != CURLE_OK) {
        snprintf(why, sizeof(why), "%s", x->too_big ? "answer too large" : curl_easy_strerror(res));
        problem = why;
    } else if (auth_http_parse_answer(h->cf.format, status, x->resp ? x->resp : "",
                                      x->resp_len, &v, &acl_text, &problem) < 0) {
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
    uint32_t target = x->target;
    auth_job_t *j = xfer_end(h, x);
    if (problem && h->ntargets > 1 && ++j->attempts < h->ntargets &&
        (res == CURLE_COULDNT_CONNECT || res == CURLE_COULDNT_RESOLVE_HOST)) {
        /* failover: the same request to the next webhook, same deadline */
        if (auth_ratelog_ok(&h->ratelog, "auth http"))
            log_warn("auth http: webhook %u of %u: %s: trying the next one", target + 1,
                     h->ntargets, problem);
        start_job(h, j, an_now_ms(), (target + 1) % h->ntargets);
        return;
    }
    if (problem) {
        free(acl_text);
        fail_job(h, j, problem, timeout);
        return;
    }
    auth_answer_t a;
    memset(&a, 0, sizeof(a));
    a.verdict = v;
    a.acl = acl;
    if (v == AUTH_DENY)
        a.reason = deny_reason(j->action);
    an_counter_t *counter = v == AUTH_ALLOW ? &h->allowed : v == AUTH_DENY ? &h->denied
                                                                            : &h->ignored;
    STAT_ADD(*counter, 1);
    uint8_t key[AUTH_CACHE_KEY_LEN];
    if (h->cache && auth_cache_key(j->action, j->client_id, j->username, j->password,
                                   j->password_len, j->cert_user, j->topic, key) == 0)
        auth_cache_put(h->cache, key, an_now_ms(), v, a.reason, acl_text);
    free(acl_text);
    log_debug("auth http: %s of client '%s': %s", auth_action_name(j->action), j->client_id,
              v == AUTH_ALLOW ? "allow" : v == AUTH_DENY ? "deny" : "ignore");
    finish(h, j, &a);
}

/* ---- the I/O thread ---- */

static void *http_main(void *arg)
{
    http_backend_t *h = arg;

    while (!atomic_load(&h->stop)) {
        uint64_t now = an_now_ms();
        auth_job_t *j = auth_jobq_take_all(&h->q);
        while (j) {
            auth_job_t *next = j->next;
            start_job(h, j, now, h->next_target++ % h->ntargets);
            j = next;
        }
        int running = 0;
        curl_multi_perform(h->multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(h->multi, &left)) != NULL) {
            if (m->msg != CURLMSG_DONE)
                continue;
            xfer_t *x = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            transfer_done(h, x, m->data.result);
        }
        /* deadlines, in queueing order: waiting for a pooled connection
         * counts too */
        now = an_now_ms();
        while (h->first && h->first->job->deadline_ms <= now)
            fail_job(h, xfer_end(h, h->first), "timed out", 1);

        long wait = HTTP_IDLE_WAIT_MS, ct = -1;
        curl_multi_timeout(h->multi, &ct);
        if (ct >= 0 && ct < wait)
            wait = ct;
        if (h->first) {
            long dl = (long)(h->first->job->deadline_ms - now);
            if (dl < wait)
                wait = dl;
        }
        if (wait > 0)
            curl_multi_poll(h->multi, NULL, 0, (int)wait, NULL);
    }
    return NULL;
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
        uint8_t reason;
        char *acl_text = NULL;
        if (auth_cache_get(h->cache, key, now, &v, &reason, &acl_text)) {
            atomic_fetch_add_explicit(&h->cache_hits, 1, memory_order_relaxed);
            memset(out, 0, sizeof(*out));
            out->verdict = v;
            out->reason = reason;
            if (acl_text && done) { /* rules checked when cached: they parse */
                char err[160];
                out->acl = auth_acl_from_lines(acl_text, "webhook acl", err, sizeof(err));
            }
            free(acl_text);
            return v;
        }
    }
    auth_job_t *j = auth_job_new(r, done, token, now + h->cf.timeout_ms);
    if (done == NULL) {
        /* The chain wants an answer now (publish/subscribe on the hot
         * path): pass, and ask the webhook in the background so the next
         * identical request is answered from the cache. */
        if (h->cache == NULL || auth_jobq_push(&h->q, j) < 0)
            auth_job_free(j);
        else
            curl_multi_wakeup(h->multi);
        memset(out, 0, sizeof(*out));
        out->verdict = AUTH_PASS;
        return AUTH_PASS;
    }
    if (auth_jobq_push(&h->q, j) < 0) {
        auth_job_free(j);
        uint64_t n = atomic_fetch_add_explicit(&h->queue_full, 1, memory_order_relaxed);
        if (n % 1000 == 0) /* the first refusal, then one line per thousand */
            log_warn("auth http: %s of client '%s' (%s): %u requests waiting: %s "
                     "(%llu refused so far)", auth_action_name(r->action),
                     r->client_id ? r->client_id : "", r->peer ? r->peer : "",
                     h->cf.queue_size,
                     h->cf.on_error == CONF_AUTH_ON_ERROR_PASS ? "passed" : "denied (0x97)",
                     (unsigned long long)n + 1);
        memset(out, 0, sizeof(*out));
        if (h->cf.on_error == CONF_AUTH_ON_ERROR_PASS) {
            out->verdict = AUTH_PASS;
        } else {
            out->verdict = AUTH_DENY;
            out->reason = 0x97; /* quota exceeded */
        }
        return out->verdict;
    }
    curl_multi_wakeup(h->multi);
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
    if (h->thread_started) {
        atomic_store(&h->stop, 1);
        curl_multi_wakeup(h->multi);
        pthread_join(h->thread, NULL);
    }
    while (h->first) /* dropped: done() is not called after destroy */
        auth_job_free(xfer_end(h, h->first));
    auth_jobq_close(&h->q);
    auth_jobq_destroy(&h->q);
    if (h->multi)
        curl_multi_cleanup(h->multi);
    curl_slist_free_all(h->headers);
    auth_cache_free(h->cache);
    free(h->listener_names);
    free(h);
    curl_global_cleanup();
}

void auth_http_stats(auth_backend_t *b, auth_http_stats_t *out)
{
    http_backend_t *h = (http_backend_t *)b;
    out->requests = STAT_GET(h->requests);
    out->allowed = STAT_GET(h->allowed);
    out->denied = STAT_GET(h->denied);
    out->ignored = STAT_GET(h->ignored);
    out->errors = STAT_GET(h->errors);
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
    /* thread-safe since libcurl 7.84; reference counted */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "auth.http: libcurl cannot start");
        return NULL;
    }
    if (cf->ca_file[0] && access(cf->ca_file, R_OK) != 0) {
        snprintf(err, errlen, "auth.http.ca_file: %s: %s", cf->ca_file, strerror(errno));
        curl_global_cleanup();
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
    if (auth_jobq_init(&h->q, cf->queue_size) < 0) {
        snprintf(err, errlen, "auth.http: cannot create the queue");
        free(h->listener_names);
        auth_cache_free(h->cache);
        free(h);
        return NULL;
    }
    h->headers = curl_slist_append(NULL, "Content-Type: application/json");
    h->headers = curl_slist_append(h->headers, "Expect:"); /* no 100-continue round trip */
    h->multi = curl_multi_init();
    if (h->headers == NULL || h->multi == NULL) {
        snprintf(err, errlen, "auth.http: libcurl cannot start");
        goto fail;
    }
    curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)cf->pool_size);
    curl_multi_setopt(h->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                      (long)(cf->pool_size * ntargets));
    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, (long)(cf->pool_size * ntargets));
    if (pthread_create(&h->thread, NULL, http_main, h) != 0) {
        snprintf(err, errlen, "auth.http: cannot start the I/O thread");
        goto fail;
    }
    h->thread_started = 1;
    for (uint32_t i = 0; i < ntargets; i++) {
        /* never log credentials in the URL (https://user:secret@host/...) */
        const char *url = h->targets[i];
        const char *auth_part = strstr(url, "://") + 3;
        const char *at = strchr(auth_part, '@'), *slash = strchr(auth_part, '/');
        int has_userinfo = at && (slash == NULL || at < slash);
        log_info("auth http: webhook %u of %u: %.*s%s%s", i + 1, ntargets,
                 (int)(auth_part - url), url, has_userinfo ? "***@" : "",
                 has_userinfo ? at + 1 : auth_part);
    }
    log_info("auth http: format %s, timeout %u ms, pool %u per webhook, cache %u entries for "
             "%u ms", cf->format == CONF_AUTH_FORMAT_OPA ? "opa" : "json", cf->timeout_ms,
             cf->pool_size, cf->cache_ttl_ms ? cf->cache_size : 0, cf->cache_ttl_ms);
    return &h->base;
fail:
    http_destroy(&h->base);
    return NULL;
}
