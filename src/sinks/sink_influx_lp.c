/* sink_influx_lp.c -- the InfluxDB sink's line protocol: its actions and
 * render() (sink_influx.h; the HTTP side is sink_influx.c).
 *
 * Render (the evaluating worker).  An action names a measurement, tags and
 * fields (each a ${col} template, compiled once in action_init into
 * literal and column segments; keys escaped once, tags sorted by key, as
 * InfluxDB prefers) and optionally a timestamp.  render() writes ONE line
 * of line protocol per row, escaping as it goes (influx_escape) through a
 * stack buffer that it flushes into the framework's record with
 * sink_out_value: no allocation per call.  A field whose template is one
 * column keeps that column's JSON type (an integer gets the `i` suffix, a
 * real stays a float, true/false stay booleans, anything else is a quoted
 * string) unless the action forces a type; a missing or null column leaves
 * the tag or field out; a line with no field fails.  Without a timestamp
 * template the line carries the message's publish time in the sink's
 * precision.  An action's state is immutable after action_init: the
 * workers render with it concurrently.
 */
#include "sink_influx.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msg.h"
#include "sink.h"
#include "util.h"

#define INFLUX_TPL_MAX 4096 /* a template's bytes */
#define INFLUX_KEY_MAX 512  /* a tag or field key's bytes, escaped (fits the line writer) */

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

void influx_action_free(void *state)
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

int influx_action_init(sink_t *s, json_t *def_in, void **state, char *err, size_t errlen)
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
    influx_action_free(a);
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
/* A forced non-string type from a template with text around its
 * columns: rendered into a scratch and read as that type; 0, or -1. */
static int lw_field_typed_text(lw_t *w, const ikv_t *f, json_t *row)
{
    char num[48];
    size_t n;
    long long ll;
    double d;
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

static int lw_field(lw_t *w, const ikv_t *f, json_t *row)
{
    char num[48];
    size_t n;
    if (f->col == NULL || f->type == FT_STRING) {
        if (tpl_empty(f->tpl, row))
            return 1;
        if (f->type != FT_AUTO && f->type != FT_STRING)
            return lw_field_typed_text(w, f, row);
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
}

int influx_render(sink_t *s, void *state, json_t *row, const struct msg_s *m, sink_out_t *out)
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
