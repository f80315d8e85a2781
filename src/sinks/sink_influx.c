/* sink_influx.c -- the InfluxDB sink driver: line protocol over HTTP
 * (sink.h, docs/sinks.md "InfluxDB").
 *
 * Render (the evaluating worker).  An action names a measurement, tags and
 * fields (each a ${col} template, compiled once in action_init into
 * literal and column segments) and optionally a timestamp.  render() writes
 * ONE line of line protocol per row, escaping as it goes (influx_escape)
 * through a stack buffer that it flushes into the framework's record with
 * sink_out_value: no allocation per call.  A field whose template is one
 * column keeps that column's JSON type (an integer gets the `i` suffix, a
 * real stays a float, true/false stay booleans, anything else is a quoted
 * string) unless the action forces a type; a missing or null column leaves
 * the tag or field out; a line with no field fails.  Tags are written
 * sorted by key, as InfluxDB prefers.  Without a timestamp template the
 * line carries the message's publish time in the sink's precision.
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
 *   413            split the same way (the body was too large), RETRY for a
 *                  single line;
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
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "log.h"
#include "module.h"
#include "msg.h"
#include "sink.h"
#include "util.h"

#define INFLUX_SPLIT_BUDGET 16 /* requests one batch may grow into by splitting, + 16 log2 n */
#define INFLUX_RESP_MAX 512    /* the start of an error answer, kept for the reason */
#define INFLUX_TPL_MAX 4096    /* a template's bytes */
#define INFLUX_KEY_MAX 512     /* a tag or field key's bytes, escaped (fits the line writer) */

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

/* ---- line-protocol text ---- */

static int esc_special(char c, int kind)
{
    if (kind == INFLUX_ESC_MEAS)
        return c == ',' || c == ' ';
    return c == ',' || c == ' ' || c == '=';
}

size_t influx_escape(char *out, size_t cap, const char *p, size_t n, int kind)
{
    size_t o = 0;
#define PUT(ch)                                                                                    \
    do {                                                                                           \
        if (o < cap)                                                                               \
            out[o] = (ch);                                                                         \
        o++;                                                                                       \
    } while (0)
    if (kind == INFLUX_ESC_STR) {
        for (size_t i = 0; i < n; i++) {
            if (p[i] == '"' || p[i] == '\\')
                PUT('\\');
            PUT(p[i]);
        }
        return o;
    }
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\') {
            /* a run of backslashes: doubled when it would escape what
             * follows (a special character or the end), else as it is */
            size_t j = i;
            while (j < n && p[j] == '\\')
                j++;
            int dbl = j == n || esc_special(p[j], kind);
            for (size_t k = i; k < j; k++) {
                PUT('\\');
                if (dbl)
                    PUT('\\');
            }
            i = j - 1;
            continue;
        }
        if (c == '\n' || c == '\r')
            c = ' ';
        if (esc_special(c, kind))
            PUT('\\');
        PUT(c);
    }
#undef PUT
    return o;
}

size_t influx_fmt_float(char *out, size_t cap, double v)
{
    int n = snprintf(out, cap, "%.15g", v);
    if (strtod(out, NULL) != v)
        n = snprintf(out, cap, "%.17g", v);
    return n < 0 ? 0 : AN_MIN((size_t)n, cap - 1);
}

/* ---- templates ---- */

typedef struct {
    uint32_t off, len; /* in text; a column's name is NUL-terminated there */
    uint8_t col;       /* 1: a column of the row, 0: literal text */
} tseg_t;

typedef struct {
    char *text;
    tseg_t *seg;
    uint32_t nseg;
} tpl_t;

static void tpl_free(tpl_t *t)
{
    if (t == NULL)
        return;
    free(t->text);
    free(t->seg);
    free(t);
}

static tpl_t *tpl_compile(const char *src, char *err, size_t errlen)
{
    size_t n = strlen(src);
    tpl_t *t = calloc(1, sizeof(*t));
    if (t == NULL || n > INFLUX_TPL_MAX) {
        snprintf(err, errlen, t ? "longer than %d bytes" : "out of memory", INFLUX_TPL_MAX);
        goto fail;
    }
    t->text = malloc(n + 1);
    t->seg = calloc(n + 1, sizeof(*t->seg)); /* at most one segment per byte */
    if (t->text == NULL || t->seg == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    memcpy(t->text, src, n + 1);
    for (size_t i = 0; i < n;) {
        char *ph = strstr(t->text + i, "${");
        size_t lit = ph ? (size_t)(ph - (t->text + i)) : n - i;
        if (lit > 0)
            t->seg[t->nseg++] = (tseg_t){(uint32_t)i, (uint32_t)lit, 0};
        if (ph == NULL)
            break;
        char *end = strchr(ph + 2, '}');
        if (end == NULL) {
            snprintf(err, errlen, "unclosed \"${\" at byte %zu", (size_t)(ph - t->text) + 1);
            goto fail;
        }
        if (end == ph + 2) {
            snprintf(err, errlen, "empty \"${}\" at byte %zu", (size_t)(ph - t->text) + 1);
            goto fail;
        }
        *end = '\0';
        t->seg[t->nseg++] = (tseg_t){(uint32_t)(ph + 2 - t->text), (uint32_t)(end - ph - 2), 1};
        i = (size_t)(end - t->text) + 1;
    }
    return t;
fail:
    tpl_free(t);
    return NULL;
}

/* The one column a template is made of, or NULL when it has literal text
 * or several parts. */
static const char *tpl_single_col(const tpl_t *t)
{
    return t->nseg == 1 && t->seg[0].col ? t->text + t->seg[0].off : NULL;
}

/* 1 when the template renders nothing for this row. */
static int tpl_empty(const tpl_t *t, json_t *row)
{
    for (uint32_t i = 0; i < t->nseg; i++) {
        if (!t->seg[i].col)
            return 0;
        json_t *v = json_object_get(row, t->text + t->seg[i].off);
        if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
            return 0;
    }
    return 1;
}

/* ---- the line writer: a stack buffer flushed into the record ---- */

typedef struct {
    sink_out_t *out;
    size_t n;
    int err;
    char buf[2048];
} lw_t;

static void lw_flush(lw_t *w)
{
    if (w->n > 0 && !w->err && sink_out_value(w->out, w->buf, w->n) < 0)
        w->err = 1;
    w->n = 0;
}

static void lw_raw(lw_t *w, const char *p, size_t n)
{
    while (n > 0 && !w->err) {
        if (w->n == sizeof(w->buf))
            lw_flush(w);
        size_t k = AN_MIN(n, sizeof(w->buf) - w->n);
        memcpy(w->buf + w->n, p, k);
        w->n += k;
        p += k;
        n -= k;
    }
}

static void lw_esc(lw_t *w, const char *p, size_t n, int kind)
{
    /* in slices, so that one escaped slice always fits the buffer */
    while (n > 0 && !w->err) {
        size_t k = AN_MIN(n, (sizeof(w->buf) / 2) - 1);
        if (kind != INFLUX_ESC_STR)
            while (k < n && k > 1 && p[k - 1] == '\\') /* keep a run of backslashes whole */
                k--;
        if (sizeof(w->buf) - w->n < 2 * k + 2)
            lw_flush(w);
        w->n += influx_escape(w->buf + w->n, sizeof(w->buf) - w->n, p, k, kind);
        p += k;
        n -= k;
    }
}

typedef struct {
    lw_t *w;
    int kind;
} dump_ctx_t;

static int dump_cb(const char *buffer, size_t size, void *data)
{
    dump_ctx_t *d = data;
    lw_esc(d->w, buffer, size, d->kind);
    return d->w->err ? -1 : 0;
}

/* One JSON value as text (strings as they are, others as JSON), escaped. */
static void lw_value_text(lw_t *w, json_t *v, int kind)
{
    char num[48];
    size_t n;
    switch (json_typeof(v)) {
    case JSON_STRING:
        lw_esc(w, json_string_value(v), json_string_length(v), kind);
        return;
    case JSON_INTEGER:
        n = (size_t)snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        lw_raw(w, num, n);
        return;
    case JSON_REAL:
        n = influx_fmt_float(num, sizeof(num), json_real_value(v));
        lw_raw(w, num, n);
        return;
    case JSON_TRUE:
        lw_raw(w, "true", 4);
        return;
    case JSON_FALSE:
        lw_raw(w, "false", 5);
        return;
    case JSON_NULL:
        return;
    default: {
        dump_ctx_t d = {w, kind};
        if (json_dump_callback(v, dump_cb, &d, JSON_COMPACT | JSON_ENCODE_ANY) < 0)
            w->err = 1;
        return;
    }
    }
}

static void lw_tpl(lw_t *w, const tpl_t *t, json_t *row, int kind)
{
    for (uint32_t i = 0; i < t->nseg && !w->err; i++) {
        const tseg_t *sg = &t->seg[i];
        if (!sg->col) {
            lw_esc(w, t->text + sg->off, sg->len, kind);
            continue;
        }
        json_t *v = json_object_get(row, t->text + sg->off);
        if (v)
            lw_value_text(w, v, kind);
    }
}

/* ---- actions ---- */

enum { FT_AUTO = 0, FT_FLOAT, FT_INTEGER, FT_STRING, FT_BOOLEAN };
static const char *const ftype_names[] = {"auto", "float", "integer", "string", "boolean", NULL};

typedef struct {
    char *key; /* escaped */
    size_t klen;
    tpl_t *tpl;
    const char *col; /* tpl's single column, or NULL */
    uint8_t type;    /* FT_* (fields) */
} ikv_t;

typedef struct {
    tpl_t *meas;
    ikv_t *tags, *fields;
    uint32_t ntags, nfields;
    tpl_t *ts; /* NULL: the publish time */
    uint8_t precision;
} iaction_t;

static void ix_action_free(void *state)
{
    iaction_t *a = state;
    if (a == NULL)
        return;
    tpl_free(a->meas);
    tpl_free(a->ts);
    for (uint32_t i = 0; i < a->ntags; i++) {
        free(a->tags[i].key);
        tpl_free(a->tags[i].tpl);
    }
    for (uint32_t i = 0; i < a->nfields; i++) {
        free(a->fields[i].key);
        tpl_free(a->fields[i].tpl);
    }
    free(a->tags);
    free(a->fields);
    free(a);
}

static int ikv_cmp(const void *x, const void *y)
{
    const ikv_t *a = x, *b = y;
    int c = memcmp(a->key, b->key, AN_MIN(a->klen, b->klen));
    return c ? c : (a->klen > b->klen) - (a->klen < b->klen);
}

/* The map under `what` ("tags" or "fields") into kv[]. */
static int ix_kv_load(json_t *map, const char *what, int fields, ikv_t **out, uint32_t *count,
                      char *err, size_t errlen)
{
    size_t n = json_object_size(map);
    ikv_t *kv = calloc(n ? n : 1, sizeof(*kv));
    if (kv == NULL) {
        snprintf(err, errlen, "%s: out of memory", what);
        return -1;
    }
    *out = kv;
    *count = 0;
    const char *name;
    json_t *v;
    json_object_foreach(map, name, v)
    {
        ikv_t *e = &kv[(*count)++];
        size_t nl = strlen(name);
        if (nl == 0) {
            snprintf(err, errlen, "%s: an empty key", what);
            return -1;
        }
        if (name[0] == '_' && !fields) {
            snprintf(err, errlen, "%s.%s: keys starting with _ are InfluxDB's own", what, name);
            return -1;
        }
        e->klen = influx_escape(NULL, 0, name, nl, INFLUX_ESC_KEY);
        if (e->klen > INFLUX_KEY_MAX) {
            snprintf(err, errlen, "%s.%.40s...: a key longer than %d bytes", what, name,
                     INFLUX_KEY_MAX);
            return -1;
        }
        e->key = malloc(e->klen + 1);
        if (e->key == NULL) {
            snprintf(err, errlen, "%s: out of memory", what);
            return -1;
        }
        influx_escape(e->key, e->klen, name, nl, INFLUX_ESC_KEY);
        e->key[e->klen] = '\0';
        json_t *tv = v;
        if (fields && json_is_object(v)) {
            tv = json_object_get(v, "value");
            json_t *ty = json_object_get(v, "type");
            const char *k2;
            json_t *v2;
            json_object_foreach(v, k2, v2)
            {
                if (strcmp(k2, "value") != 0 && strcmp(k2, "type") != 0) {
                    snprintf(err, errlen, "%s.%s.%s: unknown key (value, type)", what, name, k2);
                    return -1;
                }
            }
            if (ty) {
                int found = 0;
                for (uint8_t t = 0; ftype_names[t]; t++)
                    if (json_is_string(ty) && strcmp(json_string_value(ty), ftype_names[t]) == 0) {
                        e->type = t;
                        found = 1;
                    }
                if (!found) {
                    snprintf(err, errlen,
                             "%s.%s.type: one of auto, float, integer, string, boolean", what,
                             name);
                    return -1;
                }
            }
        }
        if (!json_is_string(tv)) {
            snprintf(err, errlen,
                     fields ? "%s.%s: a template string, or {\"value\": template, \"type\": ...}"
                            : "%s.%s: a template string",
                     what, name);
            return -1;
        }
        char terr[128];
        e->tpl = tpl_compile(json_string_value(tv), terr, sizeof(terr));
        if (e->tpl == NULL) {
            snprintf(err, errlen, "%s.%s: %s", what, name, terr);
            return -1;
        }
        if (e->tpl->nseg == 0 && !fields) {
            snprintf(err, errlen, "%s.%s: empty (InfluxDB refuses an empty tag value)", what, name);
            return -1;
        }
        e->col = tpl_single_col(e->tpl);
    }
    if (!fields)
        qsort(kv, *count, sizeof(*kv), ikv_cmp);
    return 0;
}

/* The flat form a configuration file's action can carry (scalars only):
 * "tags.NAME": template, "fields.NAME": template and "fields.NAME.type":
 * type, folded into def's tags and fields objects (created as needed). */
static int ix_fold(json_t *def, char *err, size_t errlen)
{
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(def, tmp, k, v)
    {
        int tag = strncmp(k, "tags.", 5) == 0, field = strncmp(k, "fields.", 7) == 0;
        if (!tag && !field)
            continue;
        const char *name = k + (tag ? 5 : 7);
        size_t nl = strlen(name);
        int type = field && nl > 5 && strcmp(name + nl - 5, ".type") == 0;
        if (type)
            nl -= 5;
        char nm[256];
        if (nl == 0 || nl >= sizeof(nm) || !json_is_string(v)) {
            snprintf(err, errlen, "%s: a name after the dot and a string value", k);
            return -1;
        }
        memcpy(nm, name, nl);
        nm[nl] = '\0';
        const char *grp = tag ? "tags" : "fields";
        json_t *g = json_object_get(def, grp);
        if (g == NULL) {
            g = json_object();
            json_object_set_new(def, grp, g);
        }
        if (!json_is_object(g)) {
            snprintf(err, errlen, "%s: %s is not an object", k, grp);
            return -1;
        }
        json_t *cur = json_object_get(g, nm);
        if (!type && cur == NULL) {
            json_object_set(g, nm, v);
        } else if (!type && json_is_object(cur) && !json_object_get(cur, "value")) {
            json_object_set(cur, "value", v);
        } else if (type && (cur == NULL || json_is_string(cur))) {
            json_t *o = json_pack("{s:O}", "type", v);
            if (cur)
                json_object_set(o, "value", cur);
            json_object_set_new(g, nm, o);
        } else {
            snprintf(err, errlen, "%s: %s.%s is given twice", k, grp, nm);
            return -1;
        }
        json_object_del(def, k);
    }
    return 0;
}

static int ix_action_init(sink_t *s, json_t *def_in, void **state, char *err, size_t errlen)
{
    const influx_conf_t *c = sink_conf(s);
    iaction_t *a = calloc(1, sizeof(*a));
    json_t *def = json_deep_copy(def_in);
    if (a == NULL || def == NULL) {
        free(a);
        json_decref(def);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (ix_fold(def, err, errlen) < 0)
        goto fail;
    a->precision = c ? c->precision : INFLUX_PREC_NS;
    const char *k;
    json_t *v;
    json_object_foreach(def, k, v)
    {
        if (strcmp(k, "type") && strcmp(k, "sink") && strcmp(k, "ack") &&
            strcmp(k, "measurement") && strcmp(k, "tags") && strcmp(k, "fields") &&
            strcmp(k, "timestamp")) {
            snprintf(err, errlen, "%s: unknown key (measurement, tags, fields, timestamp)", k);
            goto fail;
        }
    }
    json_t *m = json_object_get(def, "measurement");
    if (!json_is_string(m) || json_string_length(m) == 0) {
        snprintf(err, errlen, "measurement: required, a template string");
        goto fail;
    }
    char terr[128];
    if ((a->meas = tpl_compile(json_string_value(m), terr, sizeof(terr))) == NULL) {
        snprintf(err, errlen, "measurement: %s", terr);
        goto fail;
    }
    json_t *tags = json_object_get(def, "tags");
    if (tags && !json_is_object(tags)) {
        snprintf(err, errlen, "tags: an object of name: template");
        goto fail;
    }
    if (ix_kv_load(tags, "tags", 0, &a->tags, &a->ntags, err, errlen) < 0)
        goto fail;
    json_t *fields = json_object_get(def, "fields");
    if (!json_is_object(fields) || json_object_size(fields) == 0) {
        snprintf(err, errlen, "fields: required, an object of name: template (at least one)");
        goto fail;
    }
    if (ix_kv_load(fields, "fields", 1, &a->fields, &a->nfields, err, errlen) < 0)
        goto fail;
    json_t *ts = json_object_get(def, "timestamp");
    if (ts) {
        if (!json_is_string(ts) ||
            (a->ts = tpl_compile(json_string_value(ts), terr, sizeof(terr))) == NULL) {
            snprintf(err, errlen, "timestamp: %s", json_is_string(ts) ? terr : "a template string");
            goto fail;
        }
    }
    *state = a;
    json_decref(def);
    return 0;
fail:
    ix_action_free(a);
    json_decref(def);
    return -1;
}

/* A string column as a number for a forced type: 0, or -1. */
static int str_num(json_t *v, double *d, long long *ll, int *isint)
{
    const char *p = json_string_value(v);
    char *end;
    errno = 0;
    *ll = strtoll(p, &end, 10);
    if (*p && *end == '\0' && errno == 0) {
        *isint = 1;
        *d = (double)*ll;
        return 0;
    }
    *d = strtod(p, &end);
    if (*p == '\0' || *end != '\0' || !isfinite(*d))
        return -1;
    *isint = 0;
    return 0;
}

/* A field's value; 0, 1 when it is left out (missing column), -1 when it
 * cannot be the forced type. */
static int lw_field(lw_t *w, const ikv_t *f, json_t *row)
{
    char num[48];
    size_t n;
    if (f->col == NULL || f->type == FT_STRING) {
        if (tpl_empty(f->tpl, row))
            return 1;
        if (f->type != FT_AUTO && f->type != FT_STRING)
            goto typed_text;
        lw_raw(w, "\"", 1);
        lw_tpl(w, f->tpl, row, INFLUX_ESC_STR);
        lw_raw(w, "\"", 1);
        return 0;
    }
    json_t *v = json_object_get(row, f->col);
    if (v == NULL || json_is_null(v))
        return 1;
    double d = 0;
    long long ll = 0;
    int isint = 0, isbool = 0;
    switch (json_typeof(v)) {
    case JSON_INTEGER:
        ll = json_integer_value(v);
        d = (double)ll;
        isint = 1;
        break;
    case JSON_REAL:
        d = json_real_value(v);
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        isbool = 1;
        ll = json_is_true(v);
        d = (double)ll;
        break;
    case JSON_STRING:
        if (f->type == FT_AUTO) {
            lw_raw(w, "\"", 1);
            lw_esc(w, json_string_value(v), json_string_length(v), INFLUX_ESC_STR);
            lw_raw(w, "\"", 1);
            return 0;
        }
        if (f->type == FT_BOOLEAN) {
            const char *sv = json_string_value(v);
            if (strcmp(sv, "true") && strcmp(sv, "false"))
                return -1;
            lw_raw(w, sv, strlen(sv));
            return 0;
        }
        if (str_num(v, &d, &ll, &isint) < 0)
            return -1;
        break;
    default:
        if (f->type != FT_AUTO)
            return -1;
        lw_raw(w, "\"", 1);
        lw_value_text(w, v, INFLUX_ESC_STR);
        lw_raw(w, "\"", 1);
        return 0;
    }
    switch (f->type) {
    case FT_AUTO:
        if (isbool) {
            lw_raw(w, ll ? "true" : "false", ll ? 4 : 5);
            return 0;
        }
        if (isint) {
            n = (size_t)snprintf(num, sizeof(num), "%lldi", ll);
            lw_raw(w, num, n);
            return 0;
        }
        n = influx_fmt_float(num, sizeof(num), d);
        lw_raw(w, num, n);
        return 0;
    case FT_FLOAT:
        n = influx_fmt_float(num, sizeof(num), d);
        lw_raw(w, num, n);
        return 0;
    case FT_INTEGER:
        if (!isint) {
            if (d != floor(d) || fabs(d) >= 9.2e18)
                return -1;
            ll = (long long)d;
        }
        n = (size_t)snprintf(num, sizeof(num), "%lldi", ll);
        lw_raw(w, num, n);
        return 0;
    case FT_BOOLEAN:
        lw_raw(w, d != 0 ? "true" : "false", d != 0 ? 4 : 5);
        return 0;
    }
    return -1;
typed_text:
    /* a forced non-string type from a template with text around: render
     * it into a scratch and read it as that type */
    {
        char scratch[128];
        size_t o = 0;
        for (uint32_t i = 0; i < f->tpl->nseg; i++) {
            const tseg_t *sg = &f->tpl->seg[i];
            const char *p = f->tpl->text + sg->off;
            size_t l = sg->len;
            char nb[48];
            if (sg->col) {
                json_t *cv = json_object_get(row, p);
                if (json_is_string(cv)) {
                    p = json_string_value(cv);
                    l = json_string_length(cv);
                } else if (json_is_integer(cv)) {
                    l = (size_t)snprintf(nb, sizeof(nb), "%" JSON_INTEGER_FORMAT,
                                         json_integer_value(cv));
                    p = nb;
                } else if (json_is_real(cv)) {
                    l = influx_fmt_float(nb, sizeof(nb), json_real_value(cv));
                    p = nb;
                } else if (cv == NULL || json_is_null(cv)) {
                    l = 0;
                } else {
                    return -1;
                }
            }
            if (o + l >= sizeof(scratch))
                return -1;
            memcpy(scratch + o, p, l);
            o += l;
        }
        scratch[o] = '\0';
        char *end;
        if (f->type == FT_BOOLEAN) {
            if (strcmp(scratch, "true") && strcmp(scratch, "false"))
                return -1;
            lw_raw(w, scratch, o);
            return 0;
        }
        errno = 0;
        ll = strtoll(scratch, &end, 10);
        if (o && *end == '\0' && errno == 0) {
            n = (size_t)(f->type == FT_INTEGER ? snprintf(num, sizeof(num), "%lldi", ll)
                                               : snprintf(num, sizeof(num), "%lld", ll));
            lw_raw(w, num, n);
            return 0;
        }
        d = strtod(scratch, &end);
        if (o == 0 || *end != '\0' || !isfinite(d) || f->type == FT_INTEGER)
            return -1;
        n = influx_fmt_float(num, sizeof(num), d);
        lw_raw(w, num, n);
        return 0;
    }
}

static int ix_render(sink_t *s, void *state, json_t *row, const struct msg_s *m, sink_out_t *out)
{
    (void)s;
    const iaction_t *a = state;
    lw_t w;
    w.out = out;
    w.n = 0;
    w.err = 0;
    if (tpl_empty(a->meas, row))
        return -1;
    lw_tpl(&w, a->meas, row, INFLUX_ESC_MEAS);
    for (uint32_t i = 0; i < a->ntags; i++) {
        const ikv_t *t = &a->tags[i];
        if (tpl_empty(t->tpl, row))
            continue;
        lw_raw(&w, ",", 1);
        lw_raw(&w, t->key, t->klen);
        lw_raw(&w, "=", 1);
        lw_tpl(&w, t->tpl, row, INFLUX_ESC_KEY);
    }
    int nf = 0;
    for (uint32_t i = 0; i < a->nfields; i++) {
        const ikv_t *f = &a->fields[i];
        /* the separator first: a field left out takes it back (it is in
         * the buffer still: at most a key and two bytes since) */
        size_t mark = w.n;
        if (w.n + f->klen + 2 > sizeof(w.buf)) {
            lw_flush(&w);
            mark = 0;
        }
        lw_raw(&w, nf ? "," : " ", 1);
        lw_raw(&w, f->key, f->klen);
        lw_raw(&w, "=", 1);
        int r = lw_field(&w, f, row);
        if (r < 0)
            return -1;
        if (r == 1) {
            w.n = mark;
            continue;
        }
        nf++;
    }
    if (nf == 0)
        return -1;
    char num[32];
    if (a->ts) {
        char tsb[32];
        long tl = 0;
        for (uint32_t i = 0; i < a->ts->nseg; i++) {
            const tseg_t *sg = &a->ts->seg[i];
            const char *p = a->ts->text + sg->off;
            size_t l = sg->len;
            if (sg->col) {
                json_t *cv = json_object_get(row, p);
                if (json_is_integer(cv)) {
                    l = (size_t)snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
                                         json_integer_value(cv));
                    p = num;
                } else if (json_is_string(cv)) {
                    p = json_string_value(cv);
                    l = json_string_length(cv);
                } else {
                    return -1;
                }
            }
            if ((size_t)tl + l >= sizeof(tsb))
                return -1;
            memcpy(tsb + tl, p, l);
            tl += (long)l;
        }
        for (long i = 0; i < tl; i++)
            if (!((tsb[i] >= '0' && tsb[i] <= '9') || (i == 0 && tsb[i] == '-' && tl > 1)))
                return -1;
        if (tl == 0)
            return -1;
        lw_raw(&w, " ", 1);
        lw_raw(&w, tsb, (size_t)tl);
    } else {
        uint64_t ms = m ? m->published_at : an_wall_ms();
        int n;
        switch (a->precision) {
        case INFLUX_PREC_NS:
            n = snprintf(num, sizeof(num), " %" PRIu64 "000000", ms);
            break;
        case INFLUX_PREC_US:
            n = snprintf(num, sizeof(num), " %" PRIu64 "000", ms);
            break;
        case INFLUX_PREC_MS:
            n = snprintf(num, sizeof(num), " %" PRIu64, ms);
            break;
        default:
            n = snprintf(num, sizeof(num), " %" PRIu64, ms / 1000);
            break;
        }
        lw_raw(&w, num, (size_t)n);
    }
    lw_flush(&w);
    return w.err ? -1 : 0;
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

static void ix_metrics(sink_t *s, void *drv, void *out)
{
    idrv_t *d = drv;
    module_metrics_t *mm = out;
    const char *name = sink_name(s);
#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)
    module_metrics_printf(mm, "antenna_sink_influx_requests_total{sink=\"%s\"} %" PRIu64 "\n", name,
                          LD(d->requests));
    module_metrics_printf(mm, "antenna_sink_influx_points_total{sink=\"%s\"} %" PRIu64 "\n", name,
                          LD(d->points));
    module_metrics_printf(mm, "antenna_sink_influx_bytes_total{sink=\"%s\"} %" PRIu64 "\n", name,
                          LD(d->bytes));
    module_metrics_printf(mm, "antenna_sink_influx_splits_total{sink=\"%s\"} %" PRIu64 "\n", name,
                          LD(d->splits));
    for (int i = 0; i < ERR_CLASSES; i++)
        module_metrics_printf(
            mm, "antenna_sink_influx_errors_total{sink=\"%s\",status=\"%s\"} %" PRIu64 "\n", name,
            err_names[i], LD(d->errors[i]));
#undef LD
}

const sink_driver_t sink_influx_driver = {
    .type = "influxdb",
    .conf_size = sizeof(influx_conf_t),
    .conf_load = ix_conf_load,
    .action_init = ix_action_init,
    .action_free = ix_action_free,
    .render = ix_render,
    .open = ix_open,
    .send = ix_send,
    .poll = ix_poll,
    .wake = ix_wake,
    .close = ix_close,
    .metrics = ix_metrics,
};
