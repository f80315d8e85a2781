/* cl_etcd.c -- the etcd client: queued requests, one thread driving a CURLM
 * handle; see cl_etcd.h for the contract.
 *
 * Why not src/net/httpc: a watch is a response that never ends, read
 * message by message, and a failed request here moves to the next etcd
 * endpoint and is sent again; httpc has neither (it buffers a bounded body
 * and answers once), and both are this file's whole job.
 *
 * A request (req_t) owns its serialized body, its answer buffer and, while
 * it runs, an easy handle.  Owners: the submitting thread until it is on
 * the pending list (under mu); then the etcd thread, which owns the CURLM
 * handle, the list of requests in flight and the endpoint index.  Requests
 * in flight are few (membership keeps at most four, the batches at most
 * CL_ETCD_BATCHES_INFLIGHT), so the lists are plain and scanned.
 *
 * Batched txns (txop_t): the submitting thread serializes the txn (a
 * flat one: its compare, op and failure op apart) and puts it on txq (under mu);
 * the etcd thread takes the queue at the start of a turn and, while a batch
 * slot is free, fills a batch (batch_t) in queue order, leaving for the
 * next one a txn whose key (by 64-bit hash: a collision only delays a txn
 * by a batch) is already in it; what is left goes back to the head of the
 * queue, order kept.  A batch is an ordinary request whose done()
 * (batch_done) hands each txn its own part; the flat txns of a batch that
 * failed go back to the head of the queue as nested txns (cl_etcd.h).
 * How many batches may be in flight (window) follows etcd's answers: a
 * batch answered in CL_ETCD_SLOW_MS or more halves it (etcd's applies lag,
 * and it would answer a keep-alive 503), each quick one adds one back; and
 * none starts while the membership holds them (cl_etcd_hold: a keep-alive
 * failed and none was answered since).  Both are the etcd thread's.
 *
 * A loop turn: send batches, start what is pending, curl_multi_perform, finish what
 * libcurl completed (sending again on the next endpoint when the failure
 * was the connection's), end cancelled streams, run the tick when due,
 * then curl_multi_poll until libcurl's timeout, the next tick or a wakeup.
 */
#include "cl_etcd.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "b64.h"
#include "util.h"

#define CL_ETCD_MAX_ENDPOINTS 8
#define CL_ETCD_MAX_ANSWER (4u << 20) /* a unary answer, or one stream message */
#define CL_ETCD_CONNECT_MS 2000

typedef struct txop {
    struct txop *next;
    char *text; /* the txn, serialized; a flat one: "<compare><op><failure op>" */
    size_t len;
    size_t cmp_len, req_len; /* a flat txn's parts (else 0) */
    uint8_t was_flat;        /* a flat txn, sent as a nested one */
    uint64_t khash;
    cl_etcd_done_fn done;
    void *arg;
} txop_t;

typedef struct req {
    struct req *next, *prev;
    uint64_t id;
    char path[64];
    char *body;
    size_t body_len;
    uint32_t timeout_ms; /* 0: a stream, no timeout */
    cl_etcd_done_fn done;
    cl_etcd_msg_fn msg; /* NULL: a unary call */
    void *arg;
    uint32_t tries;
    int cancel;
    CURL *easy;
    struct curl_slist *hdrs;
    char *buf; /* the answer (unary) or the incomplete message (stream) */
    size_t len, cap;
    int too_big;
} req_t;

struct cl_etcd {
    cl_etcd_opts_t o;
    char endpoints[CL_ETCD_MAX_ENDPOINTS][256];
    uint32_t nendpoints;
    uint32_t cur; /* etcd thread */
    CURLM *multi;
    pthread_t thread;
    int started;
    atomic_int stop;
    pthread_mutex_t mu;
    req_t *pending, **pending_tail; /* under mu */
    uint64_t next_id;               /* under mu */
    txop_t *txq, **txq_tail;        /* batched txns waiting, under mu */
    req_t *inflight;                /* etcd thread */
    uint32_t batches_inflight;      /* etcd thread */
    uint32_t window;                /* etcd thread: batches allowed in flight (1..INFLIGHT) */
    uint64_t cut_at;                /* etcd thread: when a slow answer last halved it */
    uint64_t hold_until;            /* etcd thread: no batch starts before (cl_etcd_hold) */
    int nested_flat;                /* etcd thread: flat txns go nested (a flat batch failed) */
    uint64_t next_tick;
    an_counter_t requests, errors, failovers, batches, batched, retried, held, slow;
};

/* ---- requests ---- */

static void req_free(req_t *r)
{
    free(r->body);
    free(r->buf);
    free(r);
}

static void finish(cl_etcd_t *e, req_t *r, cl_etcd_err_t err, long status, const char *why)
{
    json_t *json = NULL;
    char error[160] = "";
    if (r->msg == NULL && r->buf != NULL && r->len > 0) {
        json = json_loadb(r->buf, r->len, 0, NULL);
        if (json != NULL && !json_is_object(json)) {
            json_decref(json);
            json = NULL;
        }
        if (err == CL_ETCD_OK && json == NULL) {
            err = CL_ETCD_EPARSE;
            why = "the answer is not a JSON object";
        }
    } else if (r->msg == NULL && err == CL_ETCD_OK) {
        err = CL_ETCD_EPARSE;
        why = "an empty answer";
    }
    if (err == CL_ETCD_ESTATUS) {
        const char *m = json ? json_string_value(json_object_get(json, "message")) : NULL;
        snprintf(error, sizeof(error), "HTTP %ld%s%s", status, m ? ": " : "", m ? m : "");
        why = error;
    }
    if (err != CL_ETCD_OK && err != CL_ETCD_ECANCELLED)
        STAT_ADD(e->errors, 1);
    cl_etcd_res_t res = {.err = err, .status = status, .json = json, .error = why ? why : ""};
    r->done(r->arg, &res);
    json_decref(json);
    req_free(r);
}

static void detach(cl_etcd_t *e, req_t *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        e->inflight = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->next = r->prev = NULL;
    curl_multi_remove_handle(e->multi, r->easy);
    curl_easy_cleanup(r->easy);
    r->easy = NULL;
    curl_slist_free_all(r->hdrs);
    r->hdrs = NULL;
}

static int buf_add(req_t *r, const char *p, size_t n)
{
    if (r->len + n + 1 > CL_ETCD_MAX_ANSWER)
        return -1;
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 1024;
        while (cap < r->len + n + 1)
            cap *= 2;
        r->buf = an_realloc(r->buf, cap);
        r->cap = cap;
    }
    memcpy(r->buf + r->len, p, n);
    r->len += n;
    r->buf[r->len] = '\0';
    return 0;
}

/* A stream's messages are one JSON object per line. */
static void stream_lines(req_t *r)
{
    size_t start = 0;
    for (size_t i = 0; i < r->len; i++) {
        if (r->buf[i] != '\n')
            continue;
        if (i > start && !r->cancel) {
            json_t *m = json_loadb(r->buf + start, i - start, 0, NULL);
            if (m != NULL) {
                r->msg(r->arg, m);
                json_decref(m);
            }
        }
        start = i + 1;
    }
    memmove(r->buf, r->buf + start, r->len - start);
    r->len -= start;
}

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
    req_t *r = ud;
    size_t bytes = size * n;
    if (buf_add(r, p, bytes) < 0) {
        r->too_big = 1;
        return 0;
    }
    if (r->msg != NULL)
        stream_lines(r);
    return bytes;
}

static int start_req(cl_etcd_t *e, req_t *r)
{
    char url[384];
    snprintf(url, sizeof(url), "%s%s", e->endpoints[e->cur], r->path);
    CURL *c = curl_easy_init();
    if (c == NULL)
        return -1;
    r->easy = c;
    r->len = 0;
    r->too_big = 0;
    r->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_PRIVATE, r);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)CL_ETCD_CONNECT_MS);
    /* a stream is idle for as long as nothing changes: TCP keep-alive
     * notices a peer that went away without closing */
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPIDLE, 5L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPINTVL, 2L);
    if (r->timeout_ms > 0)
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)r->timeout_ms);
    if (curl_multi_add_handle(e->multi, c) != CURLM_OK) {
        curl_easy_cleanup(c);
        curl_slist_free_all(r->hdrs);
        r->easy = NULL;
        r->hdrs = NULL;
        return -1;
    }
    r->tries++;
    r->prev = NULL;
    r->next = e->inflight;
    if (e->inflight)
        e->inflight->prev = r;
    e->inflight = r;
    STAT_ADD(e->requests, 1);
    return 0;
}

/* ---- batched txns ---- */

typedef struct {
    cl_etcd_t *e;
    uint64_t sent_at;    /* an_now_ms() */
    uint32_t n, ncreate; /* ops[0..ncreate) are creates, sent flat */
    txop_t *ops[CL_ETCD_BATCH_MAX];
} batch_t;

static void txop_done(txop_t *op, const cl_etcd_res_t *res)
{
    op->done(op->arg, res);
    free(op->text);
    free(op);
}

/* A flat txn as a nested one (after a flat batch failed: it cannot fail
 * with the others there). */
static void flat_nested(txop_t *op)
{
    size_t fail_len = op->len - op->cmp_len - op->req_len, len;
    const char *cmp = op->text, *req = cmp + op->cmp_len, *fail = req + op->req_len;
    char *t = an_malloc(op->len + 64);
    len = (size_t)sprintf(t, "{\"compare\":[%.*s],\"success\":[%.*s]", (int)op->cmp_len, cmp,
                          (int)op->req_len, req);
    if (fail_len > 0)
        len += (size_t)sprintf(t + len, ",\"failure\":[%.*s]", (int)fail_len, fail);
    t[len++] = '}';
    t[len] = '\0';
    free(op->text);
    op->text = t;
    op->len = len;
    op->cmp_len = op->req_len = 0;
    op->was_flat = 1;
}

/* The batch's answer, split: each txn gets its own part (a flat create:
 * {"succeeded":true}), or the error.  Flat creates of a batch that failed
 * go back to the head of the queue, nested, and the next creates go nested
 * too until a batch of them mostly created (7 in 8). */
static void batch_done(void *arg, const cl_etcd_res_t *res)
{
    batch_t *b = arg;
    cl_etcd_t *e = b->e;
    e->batches_inflight--;
    /* the window: halved by a slow answer (etcd's applies lag: a
     * keep-alive would wait as long), once for the batches sent before the
     * cut; back up by one per answer in under half of that */
    uint64_t now = an_now_ms(), rtt = now - b->sent_at;
    if (res->err != CL_ETCD_ECANCELLED && rtt >= CL_ETCD_SLOW_MS) {
        if (e->window > 1 && b->sent_at >= e->cut_at) {
            STAT_ADD(e->slow, 1);
            e->window /= 2;
            e->cut_at = now;
        }
    } else if (rtt < CL_ETCD_SLOW_MS / 2 && e->window < CL_ETCD_BATCHES_INFLIGHT) {
        e->window++;
    }
    int ok = res->err == CL_ETCD_OK && cl_etcd_txn_ok(res->json);
    uint32_t nested_flat = 0, held = 0;
    json_t *yes = ok && b->ncreate ? json_pack("{s:b}", "succeeded", 1) : NULL;
    txop_t *again = NULL, **again_tail = &again;
    for (uint32_t i = 0; i < b->n; i++) {
        txop_t *op = b->ops[i];
        cl_etcd_res_t r = *res;
        if (res->err == CL_ETCD_OK && i < b->ncreate) {
            if (!ok) { /* some compare failed: which, the nested txns will say */
                flat_nested(op);
                *again_tail = op;
                again_tail = &op->next;
                continue;
            }
            r.json = yes;
        } else if (res->err == CL_ETCD_OK) {
            /* a failed batch answers for its nested txns only */
            r.json = (json_t *)cl_etcd_batch_txn(res->json, ok ? i : i - b->ncreate);
            if (r.json == NULL) {
                r.err = CL_ETCD_EPARSE;
                r.error = "the batch's answer lacks this txn's part";
            } else if (op->was_flat) {
                nested_flat++;
                held += cl_etcd_txn_ok(r.json) != 0;
            }
        }
        txop_done(op, &r);
    }
    json_decref(yes);
    if (again != NULL) {
        STAT_ADD(e->retried, 1);
        e->nested_flat = 1;
        pthread_mutex_lock(&e->mu);
        *again_tail = e->txq;
        if (e->txq == NULL)
            e->txq_tail = again_tail;
        e->txq = again;
        pthread_mutex_unlock(&e->mu);
    } else if (nested_flat > 0 && held * 8 >= nested_flat * 7) {
        e->nested_flat = 0;
    }
    free(b);
    if (e->o.batch_end != NULL)
        e->o.batch_end(e->o.batch_end_arg);
}

static req_t *req_new_text(const char *path, char *text, size_t len);

static void batch_start(cl_etcd_t *e, batch_t *b)
{
    cl_etcd_part_t parts[CL_ETCD_BATCH_MAX];
    for (uint32_t i = 0; i < b->n; i++) {
        txop_t *op = b->ops[i];
        parts[i] = (cl_etcd_part_t){
            .text = op->text, .len = op->len, .cmp_len = op->cmp_len, .req_len = op->req_len};
    }
    size_t len;
    char *body = cl_etcd_batch_body(parts, b->ncreate, b->n, &len);
    req_t *r = req_new_text("/v3/kv/txn", body, len);
    r->timeout_ms = e->o.timeout_ms;
    r->done = batch_done;
    r->arg = b;
    b->sent_at = an_now_ms();
    e->batches_inflight++;
    STAT_ADD(e->batches, 1);
    STAT_ADD(e->batched, b->n);
    if (start_req(e, r) < 0)
        finish(e, r, CL_ETCD_ECONNECT, 0, "libcurl could not start the request");
}

/* Etcd thread: batches from the queue while a slot of the window is free
 * and no keep-alive holds them (cl_etcd_hold). */
static int batch_slot(const cl_etcd_t *e)
{
    return e->batches_inflight < e->window && (e->hold_until == 0 || an_now_ms() >= e->hold_until);
}

static void send_batches(cl_etcd_t *e)
{
    if (!batch_slot(e))
        return;
    pthread_mutex_lock(&e->mu);
    txop_t *q = e->txq;
    e->txq = NULL;
    e->txq_tail = &e->txq;
    pthread_mutex_unlock(&e->mu);
    while (q != NULL && e->batches_inflight < e->window) {
        batch_t *b = an_calloc(1, sizeof(*b));
        b->e = e;
        txop_t *nested[CL_ETCD_BATCH_MAX];
        uint32_t nn = 0;
        txop_t *rest = NULL, **rest_tail = &rest;
        while (q != NULL) {
            if (b->n + nn == CL_ETCD_BATCH_MAX) { /* full: the others wait */
                *rest_tail = q;
                q = NULL;
                break;
            }
            txop_t *op = q;
            q = op->next;
            op->next = NULL;
            int dup = 0;
            for (uint32_t i = 0; i < b->n && !dup; i++)
                dup = b->ops[i]->khash == op->khash;
            for (uint32_t i = 0; i < nn && !dup; i++)
                dup = nested[i]->khash == op->khash;
            if (dup) {
                *rest_tail = op;
                rest_tail = &op->next;
            } else if (op->cmp_len && !e->nested_flat) {
                b->ops[b->n++] = op;
            } else {
                if (op->cmp_len)
                    flat_nested(op);
                nested[nn++] = op;
            }
        }
        b->ncreate = b->n;
        for (uint32_t i = 0; i < nn; i++)
            b->ops[b->n++] = nested[i];
        q = rest;
        batch_start(e, b);
    }
    if (q != NULL) { /* back to the head of the queue, before newer ones */
        txop_t *last = q;
        while (last->next)
            last = last->next;
        pthread_mutex_lock(&e->mu);
        last->next = e->txq;
        if (e->txq == NULL)
            e->txq_tail = &last->next;
        e->txq = q;
        pthread_mutex_unlock(&e->mu);
    }
}

static void start_pending(cl_etcd_t *e)
{
    send_batches(e);
    pthread_mutex_lock(&e->mu);
    req_t *r = e->pending;
    e->pending = NULL;
    e->pending_tail = &e->pending;
    pthread_mutex_unlock(&e->mu);
    while (r != NULL) {
        req_t *next = r->next;
        r->next = NULL;
        if (r->cancel)
            finish(e, r, CL_ETCD_ECANCELLED, 0, "cancelled");
        else if (start_req(e, r) < 0)
            finish(e, r, CL_ETCD_ECONNECT, 0, "libcurl could not start the request");
        r = next;
    }
}

static int conn_failure(CURLcode rc)
{
    return rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
           rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR ||
           rc == CURLE_GOT_NOTHING || rc == CURLE_PARTIAL_FILE;
}

static void on_done(cl_etcd_t *e, req_t *r, CURLcode rc)
{
    long status = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    char why[CURL_ERROR_SIZE + 32];
    snprintf(why, sizeof(why), "%s: %s", e->endpoints[e->cur], curl_easy_strerror(rc));
    detach(e, r);
    if (r->cancel) {
        finish(e, r, CL_ETCD_ECANCELLED, status, "cancelled");
        return;
    }
    if (rc == CURLE_OK) {
        if (r->msg != NULL) /* a stream that etcd ended */
            finish(e, r, status == 200 ? CL_ETCD_ECONNECT : CL_ETCD_ESTATUS, status,
                   "the stream ended");
        else
            finish(e, r, status == 200 ? CL_ETCD_OK : CL_ETCD_ESTATUS, status, NULL);
        return;
    }
    if (r->too_big) {
        finish(e, r, CL_ETCD_EPARSE, status, "the answer is too large");
        return;
    }
    /* the connection's fault (not a stream that ran for a while): the next
     * endpoint, until each was tried once */
    if (conn_failure(rc) && status == 0 && r->tries < e->nendpoints) {
        e->cur = (e->cur + 1) % e->nendpoints;
        STAT_ADD(e->failovers, 1);
        if (start_req(e, r) == 0)
            return;
    } else if (conn_failure(rc) && e->nendpoints > 1) {
        e->cur = (e->cur + 1) % e->nendpoints; /* the next request tries another */
        STAT_ADD(e->failovers, 1);
    }
    finish(e, r, rc == CURLE_OPERATION_TIMEDOUT ? CL_ETCD_ETIMEOUT : CL_ETCD_ECONNECT, status, why);
}

static void end_cancelled(cl_etcd_t *e)
{
    req_t *r = e->inflight;
    while (r != NULL) {
        req_t *next = r->next;
        if (r->cancel) {
            detach(e, r);
            finish(e, r, CL_ETCD_ECANCELLED, 0, "cancelled");
        }
        r = next;
    }
}

static void *etcd_main(void *arg)
{
    cl_etcd_t *e = arg;
    pthread_setname_np(pthread_self(), "an-etcd");
    e->next_tick = an_now_ms();
    while (!atomic_load(&e->stop)) {
        start_pending(e);
        int running;
        curl_multi_perform(e->multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(e->multi, &left)) != NULL) {
            if (m->msg != CURLMSG_DONE)
                continue;
            req_t *r = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            on_done(e, r, m->data.result);
        }
        end_cancelled(e);
        uint64_t now = an_now_ms();
        if (e->o.tick != NULL && now >= e->next_tick) {
            e->next_tick = now + e->o.tick_ms;
            e->o.tick(e, e->o.tick_arg);
        }
        long wait = 1000;
        curl_multi_timeout(e->multi, &wait);
        if (wait < 0 || wait > 1000)
            wait = 1000;
        if (e->o.tick != NULL) {
            now = an_now_ms();
            long to_tick = e->next_tick > now ? (long)(e->next_tick - now) : 0;
            if (to_tick < wait)
                wait = to_tick;
        }
        if (e->hold_until > now && e->batches_inflight < e->window) {
            long to_hold = (long)(e->hold_until - now); /* the batches go on then */
            if (to_hold < wait)
                wait = to_hold;
        }
        pthread_mutex_lock(&e->mu);
        int have = e->pending != NULL || (e->txq != NULL && batch_slot(e));
        pthread_mutex_unlock(&e->mu);
        if (!have && wait > 0)
            curl_multi_poll(e->multi, NULL, 0, (int)wait, NULL);
    }
    return NULL;
}

/* ---- the interface ---- */

static req_t *req_new_text(const char *path, char *text, size_t len)
{
    req_t *r = an_calloc(1, sizeof(*r));
    snprintf(r->path, sizeof(r->path), "%s", path);
    r->body = text;
    r->body_len = len;
    return r;
}

static req_t *req_new(const char *path, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (text == NULL)
        return NULL;
    return req_new_text(path, text, strlen(text));
}

static uint64_t submit(cl_etcd_t *e, req_t *r)
{
    pthread_mutex_lock(&e->mu);
    if (atomic_load(&e->stop)) {
        pthread_mutex_unlock(&e->mu);
        req_free(r);
        return 0;
    }
    r->id = ++e->next_id;
    uint64_t id = r->id;
    *e->pending_tail = r;
    e->pending_tail = &r->next;
    pthread_mutex_unlock(&e->mu);
    curl_multi_wakeup(e->multi);
    return id;
}

int cl_etcd_call(cl_etcd_t *e, const char *path, json_t *body, uint32_t timeout_ms,
                 cl_etcd_done_fn done, void *arg)
{
    req_t *r = req_new(path, body);
    if (r == NULL)
        return -1;
    r->timeout_ms = timeout_ms ? timeout_ms : e->o.timeout_ms;
    r->done = done;
    r->arg = arg;
    return submit(e, r) ? 0 : -1;
}


static uint64_t key_hash(const char *k)
{
    uint64_t h = 14695981039346656037ull;
    for (; *k; k++)
        h = (h ^ (uint8_t)*k) * 1099511628211ull;
    return h;
}

static int txop_queue(cl_etcd_t *e, txop_t *op)
{
    pthread_mutex_lock(&e->mu);
    if (atomic_load(&e->stop)) {
        pthread_mutex_unlock(&e->mu);
        free(op->text);
        free(op);
        return -1;
    }
    int wake = e->txq == NULL; /* else the thread was woken for the first */
    *e->txq_tail = op;
    e->txq_tail = &op->next;
    pthread_mutex_unlock(&e->mu);
    if (wake)
        curl_multi_wakeup(e->multi);
    return 0;
}

static txop_t *txop_new(const char *key, cl_etcd_done_fn done, void *arg)
{
    txop_t *op = an_calloc(1, sizeof(*op));
    op->khash = key_hash(key);
    op->done = done;
    op->arg = arg;
    return op;
}

int cl_etcd_txn(cl_etcd_t *e, const char *key, json_t *body, cl_etcd_done_fn done, void *arg)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (text == NULL)
        return -1;
    txop_t *op = txop_new(key, done, arg);
    op->text = text;
    op->len = strlen(text);
    return txop_queue(e, op);
}

/* A flat txn (cl_etcd_create_part, cl_etcd_delete_if_part). */
static int flat_queue(cl_etcd_t *e, const char *key, cl_etcd_part_t part, cl_etcd_done_fn done,
                      void *arg)
{
    txop_t *op = txop_new(key, done, arg);
    op->text = (char *)part.text;
    op->len = part.len;
    op->cmp_len = part.cmp_len;
    op->req_len = part.req_len;
    return txop_queue(e, op);
}

int cl_etcd_create(cl_etcd_t *e, const char *key, const char *value, int64_t lease,
                   cl_etcd_done_fn done, void *arg)
{
    return flat_queue(e, key, cl_etcd_create_part(key, value, lease), done, arg);
}

int cl_etcd_delete_if(cl_etcd_t *e, const char *key, const char *value, cl_etcd_done_fn done,
                      void *arg)
{
    return flat_queue(e, key, cl_etcd_delete_if_part(key, value), done, arg);
}

uint64_t cl_etcd_stream(cl_etcd_t *e, const char *path, json_t *body, cl_etcd_msg_fn msg,
                        cl_etcd_done_fn done, void *arg)
{
    req_t *r = req_new(path, body);
    if (r == NULL)
        return 0;
    r->msg = msg;
    r->done = done;
    r->arg = arg;
    return submit(e, r);
}

void cl_etcd_cancel(cl_etcd_t *e, uint64_t id)
{
    for (req_t *r = e->inflight; r != NULL; r = r->next)
        if (r->id == id)
            r->cancel = 1;
    pthread_mutex_lock(&e->mu);
    for (req_t *r = e->pending; r != NULL; r = r->next)
        if (r->id == id)
            r->cancel = 1;
    pthread_mutex_unlock(&e->mu);
}

void cl_etcd_stats(cl_etcd_t *e, cl_etcd_stats_t *out)
{
    out->requests = atomic_load(&e->requests);
    out->errors = atomic_load(&e->errors);
    out->failovers = atomic_load(&e->failovers);
    out->batches = atomic_load(&e->batches);
    out->batched = atomic_load(&e->batched);
    out->retried = atomic_load(&e->retried);
    out->held = atomic_load(&e->held);
    out->slow = atomic_load(&e->slow);
}

void cl_etcd_hold(cl_etcd_t *e, uint32_t ms)
{
    if (ms == 0) {
        e->hold_until = 0;
        return;
    }
    uint64_t now = an_now_ms();
    if (now >= e->hold_until) /* not held now: a new hold */
        STAT_ADD(e->held, 1);
    e->hold_until = now + ms;
}

cl_etcd_t *cl_etcd_new(const cl_etcd_opts_t *o, char *err, size_t errlen)
{
    cl_etcd_t *e = an_calloc(1, sizeof(*e));
    e->o = *o;
    e->pending_tail = &e->pending;
    e->txq_tail = &e->txq;
    e->window = CL_ETCD_BATCHES_INFLIGHT;
    pthread_mutex_init(&e->mu, NULL);
    const char *p = o->endpoints;
    while (*p) {
        size_t n = strcspn(p, ",");
        while (n > 0 && (*p == ' ')) {
            p++;
            n--;
        }
        size_t m = n;
        while (m > 0 && p[m - 1] == ' ')
            m--;
        if (m > 0) {
            if (e->nendpoints == CL_ETCD_MAX_ENDPOINTS || m >= sizeof(e->endpoints[0])) {
                snprintf(err, errlen, "too many or too long etcd endpoints");
                goto fail;
            }
            memcpy(e->endpoints[e->nendpoints], p, m);
            e->endpoints[e->nendpoints][m] = '\0';
            if (m > 0 && e->endpoints[e->nendpoints][m - 1] == '/')
                e->endpoints[e->nendpoints][m - 1] = '\0';
            e->nendpoints++;
        }
        p += n;
        if (*p == ',')
            p++;
    }
    if (e->nendpoints == 0) {
        snprintf(err, errlen, "no etcd endpoint");
        goto fail;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK ||
        (e->multi = curl_multi_init()) == NULL) {
        snprintf(err, errlen, "libcurl cannot start");
        goto fail;
    }
    int rc = pthread_create(&e->thread, NULL, etcd_main, e);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the etcd thread: %s", strerror(rc));
        goto fail;
    }
    e->started = 1;
    return e;
fail:
    if (e->multi)
        curl_multi_cleanup(e->multi);
    pthread_mutex_destroy(&e->mu);
    free(e);
    return NULL;
}

void cl_etcd_free(cl_etcd_t *e)
{
    if (e == NULL)
        return;
    pthread_mutex_lock(&e->mu);
    atomic_store(&e->stop, 1);
    pthread_mutex_unlock(&e->mu);
    if (e->started) {
        curl_multi_wakeup(e->multi);
        pthread_join(e->thread, NULL);
    }
    while (e->inflight != NULL) {
        req_t *r = e->inflight;
        detach(e, r);
        finish(e, r, CL_ETCD_ECANCELLED, 0, "the client stopped");
    }
    while (e->pending != NULL) {
        req_t *r = e->pending;
        e->pending = r->next;
        finish(e, r, CL_ETCD_ECANCELLED, 0, "the client stopped");
    }
    while (e->txq != NULL) {
        txop_t *op = e->txq;
        e->txq = op->next;
        cl_etcd_res_t res = {.err = CL_ETCD_ECANCELLED, .error = "the client stopped"};
        txop_done(op, &res);
    }
    if (e->o.batch_end != NULL)
        e->o.batch_end(e->o.batch_end_arg);
    curl_multi_cleanup(e->multi);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

/* ---- building requests, reading answers ---- */

int cl_etcd_prefix_end(const char *prefix, char *out, size_t cap)
{
    size_t n = strlen(prefix);
    if (n == 0 || n + 1 > cap)
        return -1;
    memcpy(out, prefix, n + 1);
    while (n > 0 && (unsigned char)out[n - 1] == 0xff)
        out[--n] = '\0';
    if (n == 0)
        return -1; /* every key: etcd's "\0", not needed here */
    out[n - 1] = (char)((unsigned char)out[n - 1] + 1);
    return 0;
}

static json_t *b64s(const char *s)
{
    char *t = b64_encode_alloc((const uint8_t *)s, strlen(s));
    json_t *j = json_string(t);
    free(t);
    return j;
}

static json_t *i64s(int64_t v)
{
    char t[24];
    snprintf(t, sizeof(t), "%lld", (long long)v);
    return json_string(t);
}

json_t *cl_etcd_range_req(const char *key, const char *range_end)
{
    json_t *j = json_object();
    json_object_set_new(j, "key", b64s(key));
    if (range_end != NULL)
        json_object_set_new(j, "range_end", b64s(range_end));
    return j;
}

json_t *cl_etcd_put_req(const char *key, const char *value, int64_t lease)
{
    json_t *j = json_object();
    json_object_set_new(j, "key", b64s(key));
    json_object_set_new(j, "value", b64s(value));
    if (lease != 0)
        json_object_set_new(j, "lease", i64s(lease));
    return j;
}

static json_t *txn(json_t *compare, const char *key, const char *value, int64_t lease)
{
    return json_pack("{s:[o],s:[{s:o}],s:[{s:o}]}", "compare", compare, "success", "request_put",
                     cl_etcd_put_req(key, value, lease), "failure", "request_range",
                     cl_etcd_range_req(key, NULL));
}

json_t *cl_etcd_create_req(const char *key, const char *value, int64_t lease)
{
    json_t *cmp = json_pack("{s:o,s:s,s:s,s:s}", "key", b64s(key), "target", "CREATE", "result",
                            "EQUAL", "create_revision", "0");
    return txn(cmp, key, value, lease);
}

json_t *cl_etcd_put_if_lease_req(const char *key, const char *value, int64_t lease, int64_t held_by)
{
    json_t *cmp = json_pack("{s:o,s:s,s:s,s:o}", "key", b64s(key), "target", "LEASE", "result",
                            "EQUAL", "lease", i64s(held_by));
    return txn(cmp, key, value, lease);
}

json_t *cl_etcd_put_if_mod_req(const char *key, const char *value, int64_t lease, int64_t mod_rev)
{
    json_t *cmp = json_pack("{s:o,s:s,s:s,s:o}", "key", b64s(key), "target", "MOD", "result",
                            "EQUAL", "mod_revision", i64s(mod_rev));
    return txn(cmp, key, value, lease);
}

json_t *cl_etcd_del_if_value_req(const char *key, const char *value)
{
    json_t *cmp = json_pack("{s:o,s:s,s:s,s:o}", "key", b64s(key), "target", "VALUE", "result",
                            "EQUAL", "value", b64s(value));
    return json_pack("{s:[o],s:[{s:{s:o}}]}", "compare", cmp, "success", "request_delete_range",
                     "key", b64s(key));
}

json_t *cl_etcd_watch_req(const char *key, const char *range_end, int64_t start_revision)
{
    json_t *c = cl_etcd_range_req(key, range_end);
    if (start_revision > 0)
        json_object_set_new(c, "start_revision", i64s(start_revision));
    return json_pack("{s:o}", "create_request", c);
}

json_t *cl_etcd_lease_req(int64_t id)
{
    return json_pack("{s:o}", "ID", i64s(id));
}

json_t *cl_etcd_grant_req(uint32_t ttl_s)
{
    return json_pack("{s:o}", "TTL", i64s(ttl_s));
}

static void cat(char **p, const char *s, size_t n)
{
    memcpy(*p, s, n);
    *p += n;
}

#define CAT(p, lit) cat(&(p), lit, sizeof(lit) - 1)

/* s in base64 at p (B64_ENCODED_LEN(strlen(s)) characters, no NUL kept). */
static char *b64_at(char *p, const char *s)
{
    return p + b64_encode((const uint8_t *)s, strlen(s), p);
}

cl_etcd_part_t cl_etcd_create_part(const char *key, const char *value, int64_t lease)
{
    size_t kl = B64_ENCODED_LEN(strlen(key)), vl = B64_ENCODED_LEN(strlen(value));
    char *t = an_malloc(3 * kl + vl + 192), *p = t;
    cl_etcd_part_t part = {.text = t};
    CAT(p, "{\"key\":\"");
    p = b64_at(p, key);
    CAT(p, "\",\"target\":\"CREATE\",\"result\":\"EQUAL\",\"create_revision\":\"0\"}");
    part.cmp_len = (size_t)(p - t);
    CAT(p, "{\"request_put\":{\"key\":\"");
    p = b64_at(p, key);
    CAT(p, "\",\"value\":\"");
    p = b64_at(p, value);
    CAT(p, "\"");
    if (lease != 0)
        p += sprintf(p, ",\"lease\":\"%lld\"", (long long)lease);
    CAT(p, "}}");
    part.req_len = (size_t)(p - t) - part.cmp_len;
    CAT(p, "{\"request_range\":{\"key\":\"");
    p = b64_at(p, key);
    CAT(p, "\"}}");
    *p = '\0';
    part.len = (size_t)(p - t);
    return part;
}

cl_etcd_part_t cl_etcd_delete_if_part(const char *key, const char *value)
{
    size_t kl = B64_ENCODED_LEN(strlen(key)), vl = B64_ENCODED_LEN(strlen(value));
    char *t = an_malloc(2 * kl + vl + 160), *p = t;
    cl_etcd_part_t part = {.text = t};
    CAT(p, "{\"key\":\"");
    p = b64_at(p, key);
    CAT(p, "\",\"target\":\"VALUE\",\"result\":\"EQUAL\",\"value\":\"");
    p = b64_at(p, value);
    CAT(p, "\"}");
    part.cmp_len = (size_t)(p - t);
    CAT(p, "{\"request_delete_range\":{\"key\":\"");
    p = b64_at(p, key);
    CAT(p, "\"}}");
    *p = '\0';
    part.len = (size_t)(p - t);
    part.req_len = part.len - part.cmp_len;
    return part;
}

char *cl_etcd_batch_body(const cl_etcd_part_t *parts, uint32_t ncreate, uint32_t n, size_t *len)
{
    size_t total = 64;
    for (uint32_t i = 0; i < n; i++)
        total += 2 * parts[i].len + 64; /* a nested txn is in both branches */
    char *out = an_malloc(total), *p = out;
    CAT(p, "{");
    if (ncreate > 0) {
        CAT(p, "\"compare\":[");
        for (uint32_t i = 0; i < ncreate; i++) {
            if (i > 0)
                CAT(p, ",");
            cat(&p, parts[i].text, parts[i].cmp_len);
        }
        CAT(p, "],");
    }
    CAT(p, "\"success\":[");
    for (uint32_t i = 0; i < n; i++) {
        const cl_etcd_part_t *t = &parts[i];
        if (i > 0)
            CAT(p, ",");
        if (i < ncreate) {
            cat(&p, t->text + t->cmp_len, t->req_len);
        } else {
            CAT(p, "{\"request_txn\":");
            cat(&p, t->text, t->len);
            CAT(p, "}");
        }
    }
    CAT(p, "]");
    if (ncreate > 0 && n > ncreate) { /* the nested txns run either way */
        CAT(p, ",\"failure\":[");
        for (uint32_t i = ncreate; i < n; i++) {
            if (i > ncreate)
                CAT(p, ",");
            CAT(p, "{\"request_txn\":");
            cat(&p, parts[i].text, parts[i].len);
            CAT(p, "}");
        }
        CAT(p, "]");
    }
    CAT(p, "}");
    *p = '\0';
    *len = (size_t)(p - out);
    return out;
}

static const json_t *batch_resp(const json_t *answer, uint32_t i, const char *what)
{
    const json_t *r = json_array_get(json_object_get(answer, "responses"), i);
    const json_t *t = json_object_get(r, what);
    return json_is_object(t) ? t : NULL;
}

const json_t *cl_etcd_batch_txn(const json_t *answer, uint32_t i)
{
    return batch_resp(answer, i, "response_txn");
}

int64_t cl_etcd_int(const json_t *obj, const char *name)
{
    const json_t *v = json_object_get(obj, name);
    if (json_is_integer(v))
        return (int64_t)json_integer_value(v);
    if (json_is_string(v))
        return strtoll(json_string_value(v), NULL, 10);
    return 0;
}

int64_t cl_etcd_revision(const json_t *answer)
{
    return cl_etcd_int(json_object_get(answer, "header"), "revision");
}

int cl_etcd_txn_ok(const json_t *answer)
{
    return json_is_true(json_object_get(answer, "succeeded"));
}

const json_t *cl_etcd_txn_kv(const json_t *answer)
{
    const json_t *r = json_array_get(json_object_get(answer, "responses"), 0);
    const json_t *kvs = json_object_get(json_object_get(r, "response_range"), "kvs");
    return json_array_get(kvs, 0);
}

static int unb64(const json_t *kv, const char *name, char *out, size_t cap)
{
    const char *s = json_string_value(json_object_get(kv, name));
    if (s == NULL || cap == 0)
        return -1;
    long n = b64_decode(s, strlen(s), (uint8_t *)out, cap - 1);
    if (n < 0)
        return -1;
    out[n] = '\0';
    return 0;
}

int cl_etcd_kv(const json_t *kv, char *key, size_t keycap, char *val, size_t valcap)
{
    if (unb64(kv, "key", key, keycap) < 0)
        return -1;
    if (val == NULL)
        return 0;
    if (json_object_get(kv, "value") == NULL) { /* an empty value is left out */
        if (valcap == 0)
            return -1;
        val[0] = '\0';
        return 0;
    }
    return unb64(kv, "value", val, valcap);
}
