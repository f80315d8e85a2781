/* httpc.c -- the asynchronous HTTP client: copied requests, a bounded queue,
 * one I/O thread driving a CURLM handle; see httpc.h for the contract.
 *
 * A request (req_t) is one allocation: the struct, then the URL, the method,
 * the header lines and the body, so a submission costs one malloc and a
 * copy on the caller's thread; the curl handles and the header list are
 * made on the I/O thread when it starts the request.
 *
 * Owners: the submitting thread until the push; then the queue; then the
 * I/O thread, which owns the CURLM handle, every easy handle, the list of
 * requests in flight (doubly linked, sorted by deadline: inserted from the
 * tail, so requests with the same timeout cost O(1)) and the local list of
 * follow-ups submitted by callbacks.
 *
 * A loop turn: start what was queued, curl_multi_perform, hand finished
 * transfers to their callbacks, end the requests past their deadline, then
 * curl_multi_poll until the nearest of: libcurl's own timeout, the first
 * deadline, a wakeup (a submission or httpc_free), one second.
 */
#include "httpc.h"

#include "../core/jobq.h"
#include "../core/util.h"

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define HTTPC_MAX_RESPONSE_DEFAULT 65536
#define HTTPC_IDLE_WAIT_MS 1000
#define HTTPC_NO_DEADLINE UINT64_MAX

typedef struct req {
    jobq_link_t link;        /* in the queue, then in the local list */
    struct req *prev, *next; /* in flight, by deadline */
    httpc_done_fn done;
    void *arg;
    uint64_t deadline_ms;
    const char *url, *method; /* method NULL: by the body */
    const char *headers;      /* nheaders NUL-terminated lines */
    uint32_t nheaders;
    const char *body; /* NULL: none */
    size_t body_len;
    int counted; /* holds a slot of the queue's bound */
    int too_big;
    size_t max_response;
    CURL *easy;
    struct curl_slist *hdrs;
    char *resp;
    size_t resp_len;
} req_t;

struct httpc {
    httpc_opts_t o;
    char *ca_file; /* o.ca_file points here (or is NULL) */
    jobq_t *q;
    CURLM *multi;
    pthread_t thread;
    int started;
    atomic_int stop;
    /* I/O thread only */
    req_t *first, *last;             /* in flight */
    jobq_link_t *local, *local_tail; /* submitted by callbacks, to start */
    an_counter_t local_submitted, started_n, responses, failed, timeouts, cancelled;
};

/* ---- ending a request ---- */

static void inflight_unlink(httpc_t *c, req_t *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        c->first = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        c->last = r->prev;
    r->prev = r->next = NULL;
}

/* The request is over: out of libcurl and the in-flight list, its slot
 * released, done() called, freed.  I/O thread (or httpc_free, after it). */
static void finish(httpc_t *c, req_t *r, httpc_err_t err, const char *error)
{
    httpc_result_t res = {.err = err, .error = err == HTTPC_OK ? NULL : error};
    if (r->easy) {
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &res.status);
        inflight_unlink(c, r);
        curl_multi_remove_handle(c->multi, r->easy);
        curl_easy_cleanup(r->easy);
        r->easy = NULL;
    }
    curl_slist_free_all(r->hdrs);
    res.body = r->resp ? r->resp : "";
    res.body_len = r->resp_len;
    if (err == HTTPC_OK)
        STAT_ADD(c->responses, 1);
    else if (err == HTTPC_ECANCELLED)
        STAT_ADD(c->cancelled, 1);
    else
        STAT_ADD(c->failed, 1);
    if (err == HTTPC_ETIMEOUT)
        STAT_ADD(c->timeouts, 1);
    /* the slot is free before the answer is out: whoever gets the answer
     * may submit again at once */
    if (r->counted)
        jobq_release(c->q, 1);
    r->done(r->arg, &res);
    free(r->resp);
    free(r);
}

/* ---- starting a request ---- */

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    req_t *r = userdata;
    size_t n = size * nmemb;
    if (r->resp_len + n > r->max_response) {
        r->too_big = 1;
        return 0; /* aborts the transfer */
    }
    r->resp = an_realloc(r->resp, r->resp_len + n + 1);
    memcpy(r->resp + r->resp_len, ptr, n);
    r->resp_len += n;
    r->resp[r->resp_len] = '\0';
    return n;
}

/* Into the in-flight list, by deadline (from the tail: usually last). */
static void inflight_insert(httpc_t *c, req_t *r)
{
    req_t *after = c->last;
    while (after && after->deadline_ms > r->deadline_ms)
        after = after->prev;
    r->prev = after;
    r->next = after ? after->next : c->first;
    if (r->next)
        r->next->prev = r;
    else
        c->last = r;
    if (after)
        after->next = r;
    else
        c->first = r;
}

static int set_method(CURL *e, const req_t *r)
{
    const char *m = r->method;
    if (r->body) {
        if (curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body) != CURLE_OK ||
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len) != CURLE_OK)
            return -1;
        if (m && strcmp(m, "POST") != 0)
            return curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m) == CURLE_OK ? 0 : -1;
        return 0;
    }
    if (m == NULL || strcmp(m, "GET") == 0)
        return 0;
    if (strcmp(m, "HEAD") == 0)
        return curl_easy_setopt(e, CURLOPT_NOBODY, 1L) == CURLE_OK ? 0 : -1;
    return curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m) == CURLE_OK ? 0 : -1;
}

/* Hand r to libcurl, or finish it with an error.  I/O thread. */
static void start(httpc_t *c, req_t *r, uint64_t now)
{
    if (r->deadline_ms <= now) {
        finish(c, r, HTTPC_ETIMEOUT, "timed out before it was sent");
        return;
    }
    const char *h = r->headers;
    for (uint32_t i = 0; i < r->nheaders; i++, h += strlen(h) + 1) {
        struct curl_slist *l = curl_slist_append(r->hdrs, h);
        if (l == NULL)
            goto build_failed;
        r->hdrs = l;
    }
    if (r->body) { /* no 100-continue round trip */
        struct curl_slist *l = curl_slist_append(r->hdrs, "Expect:");
        if (l == NULL)
            goto build_failed;
        r->hdrs = l;
    }
    CURL *e = curl_easy_init();
    if (e == NULL)
        goto build_failed;
    uint64_t left = r->deadline_ms - now;
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    if (r->deadline_ms != HTTPC_NO_DEADLINE) {
        /* a backstop only: the deadline sweep ends the request at `left`,
         * for every request at once, before libcurl would end them one by
         * one (and hand a freed connection to a request that expires too) */
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)AN_MIN(left + 1000, (uint64_t)LONG_MAX));
        uint64_t ct = c->o.connect_timeout_ms ? AN_MIN(c->o.connect_timeout_ms, left) : left;
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)AN_MIN(ct, (uint64_t)LONG_MAX));
    } else if (c->o.connect_timeout_ms) {
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->o.connect_timeout_ms);
    }
    if (c->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
    if (set_method(e, r) < 0) {
        curl_easy_cleanup(e);
        goto build_failed;
    }
    r->easy = e;
    inflight_insert(c, r);
    if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
        finish(c, r, HTTPC_EFAILED, "cannot start the request");
        return;
    }
    STAT_ADD(c->started_n, 1);
    return;
build_failed:
    finish(c, r, HTTPC_EFAILED, "cannot build the request");
}

/* libcurl is done with r: its answer or the transfer's error. */
static void transfer_done(httpc_t *c, req_t *r, CURLcode rc)
{
    if (rc == CURLE_OK)
        finish(c, r, HTTPC_OK, NULL);
    else if (r->too_big)
        finish(c, r, HTTPC_ETOOBIG, "response too large");
    else if (rc == CURLE_OPERATION_TIMEDOUT)
        finish(c, r, HTTPC_ETIMEOUT, curl_easy_strerror(rc));
    else if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST)
        finish(c, r, HTTPC_ECONNECT, curl_easy_strerror(rc));
    else
        finish(c, r, HTTPC_EFAILED, curl_easy_strerror(rc));
}

/* ---- the I/O thread ---- */

static void start_list(httpc_t *c, jobq_link_t *l, uint64_t now)
{
    while (l) {
        jobq_link_t *next = l->next;
        start(c, container_of(l, req_t, link), now);
        l = next;
    }
}

static void *httpc_main(void *arg)
{
    httpc_t *c = arg;

    while (!atomic_load(&c->stop)) {
        uint64_t now = an_now_ms();
        jobq_link_t *mine = c->local; /* follow-ups first: they are older */
        c->local = c->local_tail = NULL;
        start_list(c, mine, now);
        start_list(c, jobq_take_all(c->q), now);

        int running = 0;
        curl_multi_perform(c->multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(c->multi, &left)) != NULL) {
            if (m->msg != CURLMSG_DONE)
                continue;
            req_t *r = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            transfer_done(c, r, m->data.result);
        }
        /* deadlines, nearest first: waiting for a pooled connection counts */
        now = an_now_ms();
        while (c->first && c->first->deadline_ms <= now)
            finish(c, c->first, HTTPC_ETIMEOUT, "timed out");

        long wait = HTTPC_IDLE_WAIT_MS, ct = -1;
        curl_multi_timeout(c->multi, &ct);
        if (ct >= 0 && ct < wait)
            wait = ct;
        if (c->first && c->first->deadline_ms - now < (uint64_t)wait)
            wait = (long)(c->first->deadline_ms - now);
        if (c->local)
            wait = 0;
        if (wait > 0)
            curl_multi_poll(c->multi, NULL, 0, (int)wait, NULL);
    }
    return NULL;
}

/* ---- the interface ---- */

int httpc_submit(httpc_t *c, const httpc_req_t *in)
{
    if (in->url == NULL || in->done == NULL)
        return HTTPC_BAD_REQUEST;
    size_t url_len = strlen(in->url) + 1, method_len = in->method ? strlen(in->method) + 1 : 0;
    size_t hdr_len = 0;
    uint32_t nheaders = 0;
    for (const char *const *h = in->headers; h && *h; h++, nheaders++)
        hdr_len += strlen(*h) + 1;
    size_t body_len = in->body ? in->body_len + 1 : 0;
    req_t *r = an_malloc(sizeof(*r) + url_len + method_len + hdr_len + body_len);
    char *at = (char *)(r + 1);

    memset(r, 0, sizeof(*r));
    r->done = in->done;
    r->arg = in->arg;
    r->max_response = c->o.max_response;
    if (in->deadline_ms)
        r->deadline_ms = in->deadline_ms;
    else
        r->deadline_ms = c->o.timeout_ms ? an_now_ms() + c->o.timeout_ms : HTTPC_NO_DEADLINE;
    memcpy(at, in->url, url_len);
    r->url = at;
    at += url_len;
    if (in->method) {
        memcpy(at, in->method, method_len);
        r->method = at;
        at += method_len;
    }
    r->headers = at;
    r->nheaders = nheaders;
    for (const char *const *h = in->headers; h && *h; h++) {
        size_t n = strlen(*h) + 1;
        memcpy(at, *h, n);
        at += n;
    }
    if (in->body) {
        if (in->body_len)
            memcpy(at, in->body, in->body_len);
        at[in->body_len] = '\0';
        r->body = at;
        r->body_len = in->body_len;
    }

    if (c->started && pthread_equal(pthread_self(), c->thread)) {
        /* a follow-up from a callback: started at the next turn */
        r->link.next = NULL;
        if (c->local_tail)
            c->local_tail->next = &r->link;
        else
            c->local = &r->link;
        c->local_tail = &r->link;
        STAT_ADD(c->local_submitted, 1);
        return HTTPC_QUEUED;
    }
    r->counted = 1;
    int rc = jobq_push(c->q, &r->link);
    if (rc != JOBQ_OK) {
        free(r);
        return rc == JOBQ_FULL ? HTTPC_QUEUE_FULL : HTTPC_CLOSED;
    }
    curl_multi_wakeup(c->multi);
    return HTTPC_QUEUED;
}

/* A queued request the thread never took (httpc_free). */
static void drop_queued(void *arg, jobq_link_t *l)
{
    req_t *r = container_of(l, req_t, link);
    r->counted = 0; /* the cancelling close gave its slot back */
    finish(arg, r, HTTPC_ECANCELLED, "cancelled");
}

void httpc_stats(httpc_t *c, httpc_stats_t *out)
{
    jobq_stats_t qs;
    jobq_stats(c->q, &qs);
    memset(out, 0, sizeof(*out));
    out->submitted = qs.pushed + STAT_GET(c->local_submitted);
    out->refused = qs.full + qs.closed;
    out->started = STAT_GET(c->started_n);
    out->responses = STAT_GET(c->responses);
    out->failed = STAT_GET(c->failed);
    out->timeouts = STAT_GET(c->timeouts);
    out->cancelled = STAT_GET(c->cancelled);
}

void httpc_free(httpc_t *c)
{
    if (c == NULL)
        return;
    if (c->started) {
        atomic_store(&c->stop, 1);
        curl_multi_wakeup(c->multi);
        pthread_join(c->thread, NULL);
        c->started = 0; /* from here on this thread is the owner */
    }
    while (c->first)
        finish(c, c->first, HTTPC_ECANCELLED, "cancelled");
    while (c->local) {
        jobq_link_t *l = c->local;
        c->local = l->next;
        finish(c, container_of(l, req_t, link), HTTPC_ECANCELLED, "cancelled");
    }
    c->local_tail = NULL;
    jobq_free(c->q); /* the queued ones: drop_queued() */
    if (c->multi)
        curl_multi_cleanup(c->multi);
    free(c->ca_file);
    free(c);
    curl_global_cleanup();
}

httpc_t *httpc_new(const httpc_opts_t *o, char *err, size_t errlen)
{
    httpc_t *c = NULL;

    if (o->queue_cap == 0) {
        snprintf(err, errlen, "queue_cap must be at least 1");
        return NULL;
    }
    if (o->ca_file && o->ca_file[0] && access(o->ca_file, R_OK) != 0) {
        snprintf(err, errlen, "ca_file: %s: %s", o->ca_file, strerror(errno));
        return NULL;
    }
    /* thread-safe since libcurl 7.84; reference counted */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "libcurl cannot start");
        return NULL;
    }
    c = an_calloc(1, sizeof(*c));
    c->o = *o;
    if (c->o.max_response == 0)
        c->o.max_response = HTTPC_MAX_RESPONSE_DEFAULT;
    if (o->ca_file && o->ca_file[0])
        c->ca_file = an_strndup(o->ca_file, strlen(o->ca_file));
    c->o.ca_file = c->ca_file;
    jobq_opts_t qo = {.cap = o->queue_cap, .drop = drop_queued, .arg = c};
    c->q = jobq_new(&qo);
    c->multi = curl_multi_init();
    if (c->q == NULL || c->multi == NULL) {
        snprintf(err, errlen, "libcurl cannot start");
        goto fail;
    }
    if (o->max_host_conns)
        curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)o->max_host_conns);
    if (o->max_conns) {
        curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)o->max_conns);
        curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)o->max_conns);
    }
    if (pthread_create(&c->thread, NULL, httpc_main, c) != 0) {
        snprintf(err, errlen, "cannot start the I/O thread");
        goto fail;
    }
    c->started = 1;
    return c;
fail:
    httpc_free(c);
    return NULL;
}
