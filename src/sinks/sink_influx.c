/* sink_influx.c -- the InfluxDB sink driver: line protocol over HTTP
 * (sink.h, docs/sinks.md "InfluxDB"); the lines themselves (actions,
 * render on the workers) are sink_influx_lp.c.
 *
 * Send (the sink's thread; everything below runs there, except wake()).
 * send() takes a batch; the batches sent before the next poll() are joined
 * into requests of at most max_request_points lines (the framework's batch
 * is at most 256 records; InfluxDB prefers thousands of points a write).
 * A request's lines become one body, gzipped (zlib, a reused stream), in
 * one POST on a curl multi handle whose connections stay open between
 * requests (keep-alive); poll() starts the joined requests, drives the
 * multi handle (curl_multi_poll, interrupted by wake() through
 * curl_multi_wakeup) and completes the records of finished requests:
 *   204            every record OK;
 *   400            InfluxDB wrote the lines it could and names no line, so
 *                  the request is split in halves that are sent again (lines
 *                  already written are written again with the same series
 *                  and time: InfluxDB keeps one point), down to single
 *                  lines, which fail (SINK_FAIL, InfluxDB's message as the
 *                  reason); a bounded number of requests per request
 *                  (INFLUX_SPLIT_BUDGET + 16 log2 n),
 *                  past which a part still refused fails as a whole;
 *   413            split the same way (the body was too large); a single
 *                  line too large fails, a part past the bound is retried;
 *   401, 403, 404, 408, 429, 5xx, a timeout, a refused or broken
 *                  connection: every record RETRY (the framework backs off;
 *                  a database that does not exist yet or a bad token is not
 *                  the data's fault);
 *   other 4xx      every record FAIL.
 * Request slots (easy handle, body and gzip buffers) are kept on a free
 * list and reused, so a steady stream allocates nothing per batch.
 *
 * Metrics (drv counters, written by the sink's thread, read by /metrics on
 * another: relaxed atomics): requests, points written, bytes sent (on the
 * wire, after gzip) and errors by status class.
 */
#include "sink_influx.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "module.h"
#include "sink.h"
#include "util.h"

#define INFLUX_SPLIT_BUDGET 16 /* requests one batch may grow into by splitting, + 16 log2 n */
#define INFLUX_RESP_MAX 512    /* the start of an error answer, kept for the reason */

static const char *const prec_names[] = {"ns", "us", "ms", "s", NULL};

/* ---- configuration ---- */

static int ix_conf_load(conf_sec_t *s, void *conf)
{
    influx_conf_t *c = conf;
    memset(c, 0, sizeof(*c));
    c->version = 1;
    c->precision = INFLUX_PREC_NS;
    c->gzip = 1;
    c->timeout_ms = 10000;
    c->max_request_points = 5000;
    if (conf_sec_str(s, "url", c->url, sizeof(c->url), CONF_SEC_NONEMPTY) < 0 ||
        conf_sec_u32(s, "version", 1, 2, &c->version) < 0 ||
        conf_sec_str(s, "database", c->database, sizeof(c->database), CONF_SEC_NONEMPTY) < 0 ||
        conf_sec_str(s, "retention_policy", c->retention_policy, sizeof(c->retention_policy), 0) <
            0 ||
        conf_sec_str(s, "username", c->username, sizeof(c->username), 0) < 0 ||
        conf_sec_str(s, "password", c->password, sizeof(c->password), 0) < 0 ||
        conf_sec_str(s, "org", c->org, sizeof(c->org), CONF_SEC_NONEMPTY) < 0 ||
        conf_sec_str(s, "bucket", c->bucket, sizeof(c->bucket), CONF_SEC_NONEMPTY) < 0 ||
        conf_sec_str(s, "token", c->token, sizeof(c->token), 0) < 0 ||
        conf_sec_enum(s, "precision", prec_names, &c->precision) < 0 ||
        conf_sec_bool(s, "gzip", &c->gzip) < 0 ||
        conf_sec_ms(s, "timeout", 100, 600000, &c->timeout_ms) < 0 ||
        conf_sec_u32(s, "max_request_points", 1, 1000000, &c->max_request_points) < 0)
        return -1;
    if (!conf_sec_has(s, "url"))
        return conf_sec_fail(s, "url", "required (the server's base URL, http://host:8086)");
    if (strncmp(c->url, "http://", 7) != 0 && strncmp(c->url, "https://", 8) != 0)
        return conf_sec_fail(s, "url", "must start with http:// or https://");
    size_t ul = strlen(c->url);
    while (ul > 0 && c->url[ul - 1] == '/')
        c->url[--ul] = '\0';
    if (c->version == 1) {
        if (c->database[0] == '\0')
            return conf_sec_fail(s, "database", "required with version 1");
        if (c->org[0] || c->bucket[0] || c->token[0])
            return conf_sec_fail(s,
                                 c->org[0]      ? "org"
                                 : c->bucket[0] ? "bucket"
                                                : "token",
                                 "only with version 2");
    } else {
        if (c->org[0] == '\0')
            return conf_sec_fail(s, "org", "required with version 2");
        if (c->bucket[0] == '\0')
            return conf_sec_fail(s, "bucket", "required with version 2");
        if (c->database[0] || c->retention_policy[0] || c->username[0] || c->password[0])
            return conf_sec_fail(s,
                                 c->database[0]           ? "database"
                                 : c->retention_policy[0] ? "retention_policy"
                                 : c->username[0]         ? "username"
                                                          : "password",
                                 "only with version 1 (version 2 uses org, bucket and token)");
    }
    if (c->password[0] && !c->username[0])
        return conf_sec_fail(s, "username", "required with password");
    return 0;
}

/* ---- the HTTP side (the sink's thread) ---- */

enum {
    ERR_400 = 0,
    ERR_401,
    ERR_403,
    ERR_404,
    ERR_413,
    ERR_429,
    ERR_4XX,
    ERR_5XX,
    ERR_TIMEOUT,
    ERR_CONNECT,
    ERR_OTHER,
    ERR_CLASSES
};
static const char *const err_names[ERR_CLASSES] = {
    "400", "401", "403", "404", "413", "429", "4xx", "5xx", "timeout", "connect", "other"};

typedef struct {
    int budget; /* requests the batch may still grow into */
    int refs;   /* requests of the batch in flight */
} isplit_t;

typedef struct ireq_s {
    struct ireq_s *next; /* the free list, or the list of requests in flight */
    CURL *easy;
    sink_rec_t **recs;
    size_t n, cap;
    char *body;
    size_t blen, bcap;
    unsigned char *gz;
    size_t gzcap;
    char resp[INFLUX_RESP_MAX];
    size_t rlen;
    isplit_t *split; /* NULL until the batch is split */
} ireq_t;

typedef struct {
    sink_t *s;
    const influx_conf_t *c;
    CURLM *multi;
    struct curl_slist *hdrs;
    char *url;
    z_stream z;
    int zok;
    ireq_t *free_reqs, *active;
    sink_rec_t **pend; /* sent, not in a request yet (ix_flush) */
    size_t npend, pcap;
    _Atomic uint64_t requests, points, bytes, splits, errors[ERR_CLASSES];
} idrv_t;

#define CNT_ADD(x, v) atomic_fetch_add_explicit(&(x), (v), memory_order_relaxed)

static size_t ix_resp_cb(char *p, size_t size, size_t nmemb, void *ud)
{
    ireq_t *r = ud;
    size_t n = size * nmemb;
    size_t k = AN_MIN(n, sizeof(r->resp) - 1 - r->rlen);
    memcpy(r->resp + r->rlen, p, k);
    r->rlen += k;
    r->resp[r->rlen] = '\0';
    return n;
}

static int grow(void **p, size_t *cap, size_t need, size_t each)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 16;
    while (nc < need)
        nc *= 2;
    void *np = realloc(*p, nc * each);
    if (np == NULL)
        return -1;
    *p = np;
    *cap = nc;
    return 0;
}

static void ix_complete(idrv_t *d, sink_rec_t **recs, size_t n, int result, const char *why)
{
    for (size_t i = 0; i < n; i++)
        sink_done(d->s, recs[i], result, why);
}

static ireq_t *ix_req_get(idrv_t *d)
{
    ireq_t *r = d->free_reqs;
    if (r) {
        d->free_reqs = r->next;
        r->next = NULL;
        return r;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL || (r->easy = curl_easy_init()) == NULL) {
        free(r);
        return NULL;
    }
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, d->url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, d->hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, ix_resp_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)d->c->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)AN_MIN(d->c->timeout_ms, 5000u));
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    if (d->c->username[0]) {
        curl_easy_setopt(e, CURLOPT_USERNAME, d->c->username);
        curl_easy_setopt(e, CURLOPT_PASSWORD, d->c->password);
    }
    return r;
}

static void ix_req_put(idrv_t *d, ireq_t *r)
{
    if (r->split && --r->split->refs == 0)
        free(r->split);
    r->split = NULL;
    r->n = 0;
    r->rlen = 0;
    r->resp[0] = '\0';
    r->next = d->free_reqs;
    d->free_reqs = r;
}

static void ix_req_free(ireq_t *r)
{
    curl_easy_cleanup(r->easy);
    free(r->recs);
    free(r->body);
    free(r->gz);
    free(r);
}

/* One POST of recs[0..n); split: the budget it shares, or NULL. */
static void ix_start(idrv_t *d, sink_rec_t **recs, size_t n, isplit_t *split)
{
    const char *why = "out of memory";
    ireq_t *r = ix_req_get(d);
    if (r == NULL)
        goto fail;
    size_t blen = 0;
    for (size_t i = 0; i < n; i++)
        blen += recs[i]->vlen + 1;
    if (grow((void **)&r->recs, &r->cap, n, sizeof(*r->recs)) < 0 ||
        grow((void **)&r->body, &r->bcap, blen, 1) < 0)
        goto fail;
    memcpy(r->recs, recs, n * sizeof(*recs));
    r->n = n;
    char *o = r->body;
    for (size_t i = 0; i < n; i++) {
        memcpy(o, sink_rec_value(recs[i]), recs[i]->vlen);
        o += recs[i]->vlen;
        *o++ = '\n';
    }
    r->blen = blen;
    const void *wire = r->body;
    size_t wlen = blen;
    if (d->zok) {
        size_t bound = deflateBound(&d->z, (uLong)blen) + 32;
        if (grow((void **)&r->gz, &r->gzcap, bound, 1) < 0 || deflateReset(&d->z) != Z_OK)
            goto fail;
        d->z.next_in = (Bytef *)r->body;
        d->z.avail_in = (uInt)blen;
        d->z.next_out = r->gz;
        d->z.avail_out = (uInt)r->gzcap;
        if (deflate(&d->z, Z_FINISH) != Z_STREAM_END) {
            why = "gzip failed";
            goto fail;
        }
        wire = r->gz;
        wlen = r->gzcap - d->z.avail_out;
    }
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, wire);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)wlen);
    r->split = split;
    if (split)
        split->refs++;
    if (curl_multi_add_handle(d->multi, r->easy) != CURLM_OK) {
        why = "curl_multi_add_handle failed";
        goto fail;
    }
    r->next = d->active;
    d->active = r;
    CNT_ADD(d->requests, 1);
    CNT_ADD(d->bytes, wlen);
    return;
fail:
    ix_complete(d, recs, n, SINK_RETRY, why);
    if (r)
        ix_req_put(d, r);
}

/* The batches sent since the last poll, joined into requests of at most
 * max_request_points lines; all of them, or (full) only the full ones. */
static void ix_flush(idrv_t *d, int full)
{
    size_t max = d->c->max_request_points, i = 0;
    while (i < d->npend && (!full || d->npend - i >= max)) {
        size_t k = AN_MIN(max, d->npend - i);
        ix_start(d, d->pend + i, k, NULL);
        i += k;
    }
    memmove(d->pend, d->pend + i, (d->npend - i) * sizeof(*d->pend));
    d->npend -= i;
}

static void ix_send(sink_t *s, void *drv, sink_rec_t **recs, size_t n)
{
    (void)s;
    idrv_t *d = drv;
    if (grow((void **)&d->pend, &d->pcap, d->npend + n, sizeof(*d->pend)) < 0) {
        ix_complete(d, recs, n, SINK_RETRY, "out of memory");
        return;
    }
    memcpy(d->pend + d->npend, recs, n * sizeof(*recs));
    d->npend += n;
    if (d->npend >= d->c->max_request_points)
        ix_flush(d, 1);
}

/* InfluxDB's {"error":"..."} answer as a reason, in r->resp. */
static const char *ix_reason(ireq_t *r, long status)
{
    char tmp[INFLUX_RESP_MAX - 32];
    const char *p = strstr(r->resp, "\"error\":\"");
    p = p ? p + 9 : r->resp;
    size_t k = 0;
    for (; *p && k + 1 < sizeof(tmp); p++) {
        if (*p == '"' && (p == r->resp || p[-1] != '\\'))
            break;
        tmp[k++] = (*p == '\n' || *p == '\r') ? ' ' : *p;
    }
    tmp[k] = '\0';
    snprintf(r->resp, sizeof(r->resp), "influxdb %ld: %.*s", status % 1000, (int)k, tmp);
    return r->resp;
}

static void ix_finish(idrv_t *d, ireq_t *r, CURLcode cc)
{
    long status = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(d->multi, r->easy);
    if (cc != CURLE_OK) {
        int cls = cc == CURLE_OPERATION_TIMEDOUT                                      ? ERR_TIMEOUT
                  : (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST) ? ERR_CONNECT
                                                                                      : ERR_OTHER;
        CNT_ADD(d->errors[cls], 1);
        ix_complete(d, r->recs, r->n, SINK_RETRY, curl_easy_strerror(cc));
    } else if (status >= 200 && status < 300) {
        CNT_ADD(d->points, r->n);
        ix_complete(d, r->recs, r->n, SINK_OK, NULL);
    } else if (status == 400 || status == 413) {
        CNT_ADD(d->errors[status == 400 ? ERR_400 : ERR_413], 1);
        isplit_t *sp = r->split;
        if (r->n > 1 && sp == NULL) {
            sp = calloc(1, sizeof(*sp));
            if (sp) {
                /* room for about eight bad lines: each costs two requests
                 * per halving */
                int lg = 1;
                while (((size_t)1 << lg) < r->n)
                    lg++;
                sp->budget = INFLUX_SPLIT_BUDGET + 16 * lg;
            }
        }
        if (r->n > 1 && sp && sp->budget >= 2) {
            /* the halves, each sent again; r's budget reference is kept
             * until both are started */
            sp->budget -= 2;
            sp->refs++;
            size_t h = r->n / 2;
            CNT_ADD(d->splits, 1);
            ix_start(d, r->recs, h, sp);
            ix_start(d, r->recs + h, r->n - h, sp);
            if (--sp->refs == 0)
                free(sp);
        } else {
            if (sp && sp != r->split && sp->refs == 0)
                free(sp);
            ix_complete(d, r->recs, r->n, status == 400 || r->n == 1 ? SINK_FAIL : SINK_RETRY,
                        ix_reason(r, status));
        }
    } else {
        int retry = status == 401 || status == 403 || status == 404 || status == 408 ||
                    status == 429 || status >= 500;
        int cls = status == 401   ? ERR_401
                  : status == 403 ? ERR_403
                  : status == 404 ? ERR_404
                  : status == 429 ? ERR_429
                  : status >= 500 ? ERR_5XX
                                  : ERR_4XX;
        CNT_ADD(d->errors[cls], 1);
        ix_complete(d, r->recs, r->n, retry ? SINK_RETRY : SINK_FAIL, ix_reason(r, status));
    }
    ix_req_put(d, r);
}

/* The requests that finished; how many. */
static int ix_reap(idrv_t *d)
{
    int done = 0, left;
    CURLMsg *msg;
    while ((msg = curl_multi_info_read(d->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        ireq_t *r = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        CURLcode cc = msg->data.result;
        for (ireq_t **pp = &d->active; *pp; pp = &(*pp)->next)
            if (*pp == r) {
                *pp = r->next;
                break;
            }
        r->next = NULL;
        ix_finish(d, r, cc);
        done++;
    }
    return done;
}

static void ix_poll(sink_t *s, void *drv, int timeout_ms)
{
    (void)s;
    idrv_t *d = drv;
    int running = 0;
    if (d->npend)
        ix_flush(d, 0);
    curl_multi_perform(d->multi, &running);
    if (ix_reap(d) > 0 || timeout_ms <= 0)
        return;
    curl_multi_poll(d->multi, NULL, 0, timeout_ms, NULL);
    curl_multi_perform(d->multi, &running);
    ix_reap(d);
}

static void ix_wake(sink_t *s, void *drv)
{
    (void)s;
    idrv_t *d = drv;
    curl_multi_wakeup(d->multi);
}

static void ix_close(sink_t *s, void *drv)
{
    (void)s;
    idrv_t *d = drv;
    if (d == NULL)
        return;
    ix_complete(d, d->pend, d->npend, SINK_RETRY, "sink closing");
    free(d->pend);
    while (d->active) {
        ireq_t *r = d->active;
        d->active = r->next;
        curl_multi_remove_handle(d->multi, r->easy);
        ix_complete(d, r->recs, r->n, SINK_RETRY, "sink closing");
        ix_req_put(d, r);
    }
    while (d->free_reqs) {
        ireq_t *r = d->free_reqs;
        d->free_reqs = r->next;
        ix_req_free(r);
    }
    if (d->multi)
        curl_multi_cleanup(d->multi);
    curl_slist_free_all(d->hdrs);
    if (d->zok)
        deflateEnd(&d->z);
    free(d->url);
    free(d);
    curl_global_cleanup();
}

/* The write URL: base + path + the query. */
static char *ix_url(const influx_conf_t *c)
{
    static const char *const v1prec[] = {"n", "u", "ms", "s"};
    static const char *const v2prec[] = {"ns", "us", "ms", "s"};
    char *e1 = NULL, *e2 = NULL, *url = NULL;
    size_t cap = strlen(c->url) +
                 3 * (sizeof(c->database) + sizeof(c->retention_policy) + sizeof(c->org) +
                      sizeof(c->bucket)) +
                 64;
    if ((url = malloc(cap)) == NULL)
        goto done;
    if (c->version == 1) {
        e1 = curl_easy_escape(NULL, c->database, 0);
        e2 = curl_easy_escape(NULL, c->retention_policy, 0);
        if (e1 == NULL || e2 == NULL)
            goto fail;
        snprintf(url, cap, "%s/write?db=%s&precision=%s%s%s", c->url, e1, v1prec[c->precision],
                 c->retention_policy[0] ? "&rp=" : "", c->retention_policy[0] ? e2 : "");
    } else {
        e1 = curl_easy_escape(NULL, c->org, 0);
        e2 = curl_easy_escape(NULL, c->bucket, 0);
        if (e1 == NULL || e2 == NULL)
            goto fail;
        snprintf(url, cap, "%s/api/v2/write?org=%s&bucket=%s&precision=%s", c->url, e1, e2,
                 v2prec[c->precision]);
    }
    goto done;
fail:
    free(url);
    url = NULL;
done:
    curl_free(e1);
    curl_free(e2);
    return url;
}

static int ix_open(sink_t *s, const void *conf, void **drv, char *err, size_t errlen)
{
    const influx_conf_t *c = conf;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "libcurl cannot start");
        return -1;
    }
    idrv_t *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        curl_global_cleanup();
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    d->s = s;
    d->c = c;
    d->multi = curl_multi_init();
    d->url = ix_url(c);
    d->hdrs = curl_slist_append(NULL, "Content-Type: text/plain; charset=utf-8");
    if (d->hdrs && c->gzip)
        d->hdrs = curl_slist_append(d->hdrs, "Content-Encoding: gzip");
    if (d->hdrs && c->version == 2 && c->token[0]) {
        char auth[sizeof(c->token) + 32];
        snprintf(auth, sizeof(auth), "Authorization: Token %s", c->token);
        struct curl_slist *h = curl_slist_append(d->hdrs, auth);
        if (h == NULL)
            curl_slist_free_all(d->hdrs);
        d->hdrs = h;
    }
    if (d->hdrs)
        d->hdrs = curl_slist_append(d->hdrs, "Expect:"); /* no 100-continue round trip */
    if (c->gzip) {
        if (deflateInit2(&d->z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            goto fail;
        d->zok = 1;
    }
    if (d->multi == NULL || d->url == NULL || d->hdrs == NULL)
        goto fail;
    *drv = d;
    return 0;
fail:
    snprintf(err, errlen, "cannot set up the HTTP client (out of memory)");
    ix_close(s, d);
    return -1;
}

static const sink_metric_family_t ix_families[] = {
    {"antenna_sink_influx_requests_total", "counter", "Write requests sent to InfluxDB"},
    {"antenna_sink_influx_points_total", "counter", "Points InfluxDB accepted"},
    {"antenna_sink_influx_bytes_total", "counter", "Bytes of request bodies sent (after gzip)"},
    {"antenna_sink_influx_splits_total", "counter",
     "Requests split in halves to find the lines InfluxDB refused"},
    {"antenna_sink_influx_errors_total", "counter", "Failed write requests, by status class"},
    {NULL, NULL, NULL}};

static void ix_metrics(sink_t *s, void *drv, const char *family, void *out)
{
    idrv_t *d = drv;
    module_metrics_t *mm = out;
    const char *name = sink_name(s);
#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)
    const _Atomic uint64_t *one[] = {&d->requests, &d->points, &d->bytes, &d->splits};
    for (int f = 0; f < 4; f++)
        if (strcmp(family, ix_families[f].name) == 0) {
            module_metrics_printf(mm, "%s{sink=\"%s\"} %" PRIu64 "\n", family, name, LD(*one[f]));
            return;
        }
    for (int i = 0; i < ERR_CLASSES; i++)
        module_metrics_printf(
            mm, "antenna_sink_influx_errors_total{sink=\"%s\",status=\"%s\"} %" PRIu64 "\n", name,
            err_names[i], LD(d->errors[i]));
#undef LD
}

const sink_driver_t sink_influx_driver = {
    .type = "influxdb",
    .metric_families = ix_families,
    .conf_size = sizeof(influx_conf_t),
    .conf_load = ix_conf_load,
    .action_init = influx_action_init,
    .action_free = influx_action_free,
    .render = influx_render,
    .open = ix_open,
    .send = ix_send,
    .poll = ix_poll,
    .wake = ix_wake,
    .close = ix_close,
    .metrics = ix_metrics,
};
