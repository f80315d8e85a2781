/* sink_webhook.c -- the webhook sink driver (sink.h, docs/sinks.md): each
 * record is one HTTP request (POST or PUT) to the sink's URL, its body the
 * record's value, rendered on the worker from the action's body template
 * (${column} placeholders, rules_template_render) or, without one, the
 * output row as JSON.
 *
 * Requests go through an httpc client (src/net/httpc.h: its own I/O
 * thread, libcurl multi, keep-alive pool of pool_size connections, a
 * deadline per request).  Its answers arrive on the httpc thread: done()
 * classifies them (2xx SINK_OK; 5xx, 408, 429, a timeout or a connection
 * error SINK_RETRY; any other status SINK_FAIL) into the driver's list of
 * completions under its mutex and signals; poll(), on the sink's thread,
 * waits on that condition (or wake()) and calls sink_done() for each.  The
 * per-request context comes from a free list that only grows to the
 * largest number in flight: no allocation per record once warm.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "httpc.h"
#include "rules/rules_action.h"
#include "sink.h"
#include "util.h"

#define WH_MAX_HEADERS 6
#define WH_HEADER_MAX 384

typedef struct {
    char url[512];
    uint8_t method; /* 0 POST, 1 PUT */
    char headers[WH_MAX_HEADERS][WH_HEADER_MAX];
    uint32_t nheaders;
    char body[512]; /* the default body template; "" = the row as JSON */
    uint32_t timeout_ms;
    uint32_t connect_timeout_ms;
    uint32_t pool_size;
    char ca_file[256];
} wh_conf_t;

typedef struct wh_req_s {
    struct wh_req_s *next; /* free list, or the completions */
    struct wh_s *wh;
    sink_rec_t *rec;
    int result;
    char why[64];
} wh_req_t;

typedef struct wh_s {
    sink_t *s;
    const wh_conf_t *c;
    httpc_t *hc;
    const char *hdrs[WH_MAX_HEADERS + 2];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    wh_req_t *done_head, *done_tail; /* under mu */
    int woken;                       /* under mu */
    wh_req_t *free_list;             /* the sink's thread */
} wh_t;

static const char *const methods[] = {"POST", "PUT", NULL};

static int wh_conf_load(conf_sec_t *s, void *conf)
{
    wh_conf_t *c = conf;
    c->timeout_ms = 5000;
    c->connect_timeout_ms = 2000;
    c->pool_size = 8;
    if (!conf_sec_has(s, "url"))
        return conf_sec_fail(s, "url", "a webhook sink needs a url (http:// or https://)");
    if (conf_sec_str(s, "url", c->url, sizeof(c->url), CONF_SEC_NONEMPTY) < 0 ||
        conf_sec_enum(s, "method", methods, &c->method) < 0 ||
        conf_sec_names(s, "headers", c->headers[0], WH_HEADER_MAX, WH_MAX_HEADERS, &c->nheaders) <
            0 ||
        conf_sec_str(s, "body", c->body, sizeof(c->body), 0) < 0 ||
        conf_sec_ms(s, "timeout", 1, 600000, &c->timeout_ms) < 0 ||
        conf_sec_ms(s, "connect_timeout", 1, 600000, &c->connect_timeout_ms) < 0 ||
        conf_sec_u32(s, "pool_size", 1, 1024, &c->pool_size) < 0 ||
        conf_sec_str(s, "ca_file", c->ca_file, sizeof(c->ca_file), 0) < 0)
        return -1;
    if (strncmp(c->url, "http://", 7) != 0 && strncmp(c->url, "https://", 8) != 0)
        return conf_sec_fail(s, "url", "\"%s\" is not an http:// or https:// URL", c->url);
    for (uint32_t i = 0; i < c->nheaders; i++) {
        const char *h = c->headers[i], *colon = strchr(h, ':');
        if (colon == NULL || colon == h || strpbrk(h, "\r\n"))
            return conf_sec_fail(s, "headers", "\"%s\" is not a \"Name: value\" header", h);
    }
    char err[120];
    if (rules_template_check(c->body, err, sizeof(err)) < 0)
        return conf_sec_fail(s, "body", "%s", err);
    return 0;
}

/* ---- actions (any thread; render on the workers) ---- */

static int wh_action_init(sink_t *s, json_t *def, void **state, char *err, size_t errlen)
{
    const wh_conf_t *c = sink_conf(s);
    const char *k;
    json_t *v;
    json_object_foreach(def, k, v)
    {
        if (strcmp(k, "body") != 0) {
            snprintf(err, errlen, "webhook: unknown key \"%.40s\" (body)", k);
            return -1;
        }
    }
    json_t *body = json_object_get(def, "body");
    if (body && !json_is_string(body)) {
        snprintf(err, errlen, "body: a template string");
        return -1;
    }
    const char *tpl = body ? json_string_value(body) : c->body;
    char e[120];
    if (rules_template_check(tpl, e, sizeof(e)) < 0) {
        snprintf(err, errlen, "body: %s", e);
        return -1;
    }
    *state = tpl[0] ? an_strndup(tpl, strlen(tpl)) : NULL;
    return 0;
}

static void wh_action_free(void *state)
{
    free(state);
}

static int dump_cb(const char *buf, size_t size, void *data)
{
    return sink_out_value(data, buf, size);
}

static int wh_render(sink_t *s, void *state, json_t *row, const struct msg_s *m, sink_out_t *out)
{
    (void)s, (void)m;
    const char *tpl = state;
    if (tpl == NULL)
        return json_dump_callback(row, dump_cb, out, JSON_COMPACT) < 0 ? -1 : 0;
    char small[4096];
    long n = rules_template_render(tpl, row, small, sizeof(small));
    if (n >= 0)
        return sink_out_value(out, small, (size_t)n);
    /* a large body: rare, so a heap buffer for this one */
    size_t cap = sizeof(small) * 4;
    for (; cap <= (64u << 20); cap *= 4) {
        char *big = an_malloc(cap);
        n = rules_template_render(tpl, row, big, cap);
        int rc = n >= 0 ? sink_out_value(out, big, (size_t)n) : 0;
        free(big);
        if (n >= 0)
            return rc;
    }
    return -1;
}

/* ---- the sink's thread ---- */

static void complete(wh_t *wh, wh_req_t *q)
{
    pthread_mutex_lock(&wh->mu);
    q->next = NULL;
    if (wh->done_tail)
        wh->done_tail->next = q;
    else
        wh->done_head = q;
    wh->done_tail = q;
    pthread_cond_signal(&wh->cv);
    pthread_mutex_unlock(&wh->mu);
}

static void on_answer(void *arg, const httpc_result_t *res)
{
    wh_req_t *q = arg;
    if (res->err == HTTPC_OK) {
        long st = res->status;
        q->result = st >= 200 && st < 300                 ? SINK_OK
                    : st >= 500 || st == 408 || st == 429 ? SINK_RETRY
                                                          : SINK_FAIL;
        snprintf(q->why, sizeof(q->why), "HTTP %ld", st);
    } else {
        q->result = SINK_RETRY;
        snprintf(q->why, sizeof(q->why), "%s",
                 res->err == HTTPC_ETIMEOUT   ? "timeout"
                 : res->err == HTTPC_ECONNECT ? "cannot connect"
                 : res->error                 ? res->error
                                              : "request failed");
    }
    complete(q->wh, q);
}

static int wh_open(sink_t *s, const void *conf, void **drv, char *err, size_t errlen)
{
    const wh_conf_t *c = conf;
    wh_t *wh = an_calloc(1, sizeof(*wh));
    wh->s = s;
    wh->c = c;
    size_t n = 0;
    int have_ct = 0;
    for (uint32_t i = 0; i < c->nheaders; i++) {
        wh->hdrs[n++] = c->headers[i];
        have_ct |= strncasecmp(c->headers[i], "content-type:", 13) == 0;
    }
    if (!have_ct)
        wh->hdrs[n++] = "Content-Type: application/json";
    wh->hdrs[n] = NULL;
    httpc_opts_t o = {.queue_cap = 1u << 20,
                      .max_host_conns = c->pool_size,
                      .max_conns = c->pool_size,
                      .timeout_ms = c->timeout_ms,
                      .connect_timeout_ms = c->connect_timeout_ms,
                      .ca_file = c->ca_file};
    wh->hc = httpc_new(&o, err, errlen);
    if (wh->hc == NULL) {
        free(wh);
        return -1;
    }
    pthread_mutex_init(&wh->mu, NULL);
    pthread_cond_init(&wh->cv, NULL);
    *drv = wh;
    return 0;
}

static void wh_send(sink_t *s, void *drv, sink_rec_t **recs, size_t n)
{
    (void)s;
    wh_t *wh = drv;
    for (size_t i = 0; i < n; i++) {
        wh_req_t *q = wh->free_list;
        if (q)
            wh->free_list = q->next;
        else
            q = an_malloc(sizeof(*q));
        memset(q, 0, sizeof(*q));
        q->wh = wh;
        q->rec = recs[i];
        httpc_req_t r = {.method = methods[wh->c->method],
                         .url = wh->c->url,
                         .headers = wh->hdrs,
                         .body = sink_rec_value(recs[i]),
                         .body_len = recs[i]->vlen,
                         .done = on_answer,
                         .arg = q};
        if (httpc_submit(wh->hc, &r) != HTTPC_QUEUED) {
            q->result = SINK_RETRY;
            snprintf(q->why, sizeof(q->why), "the HTTP client's queue is full");
            complete(wh, q);
        }
    }
}

static void drain(wh_t *wh, wh_req_t *list)
{
    while (list) {
        wh_req_t *q = list;
        list = q->next;
        sink_done(wh->s, q->rec, q->result, q->result == SINK_OK ? NULL : q->why);
        q->next = wh->free_list;
        wh->free_list = q;
    }
}

static void wh_poll(sink_t *s, void *drv, int timeout_ms)
{
    (void)s;
    wh_t *wh = drv;
    pthread_mutex_lock(&wh->mu);
    if (wh->done_head == NULL && !wh->woken && timeout_ms > 0) {
        struct timespec ts = an_wall_after((uint64_t)timeout_ms);
        while (wh->done_head == NULL && !wh->woken &&
               pthread_cond_timedwait(&wh->cv, &wh->mu, &ts) != ETIMEDOUT)
            ;
    }
    wh->woken = 0;
    wh_req_t *list = wh->done_head;
    wh->done_head = wh->done_tail = NULL;
    pthread_mutex_unlock(&wh->mu);
    drain(wh, list);
}

static void wh_wake(sink_t *s, void *drv)
{
    (void)s;
    wh_t *wh = drv;
    pthread_mutex_lock(&wh->mu);
    wh->woken = 1;
    pthread_cond_signal(&wh->cv);
    pthread_mutex_unlock(&wh->mu);
}

static void wh_close(sink_t *s, void *drv)
{
    (void)s;
    wh_t *wh = drv;
    httpc_free(wh->hc); /* what is left is answered HTTPC_ECANCELLED: RETRY */
    pthread_mutex_lock(&wh->mu);
    wh_req_t *list = wh->done_head;
    wh->done_head = wh->done_tail = NULL;
    pthread_mutex_unlock(&wh->mu);
    drain(wh, list);
    while (wh->free_list) {
        wh_req_t *q = wh->free_list;
        wh->free_list = q->next;
        free(q);
    }
    pthread_mutex_destroy(&wh->mu);
    pthread_cond_destroy(&wh->cv);
    free(wh);
}

const sink_driver_t sink_webhook_driver = {
    .type = "webhook",
    .conf_size = sizeof(wh_conf_t),
    .conf_load = wh_conf_load,
    .action_init = wh_action_init,
    .action_free = wh_action_free,
    .render = wh_render,
    .open = wh_open,
    .send = wh_send,
    .poll = wh_poll,
    .wake = wh_wake,
    .close = wh_close,
    .metrics = NULL,
};
