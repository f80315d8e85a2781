/* rules_eval.c -- the evaluator and the function table (rules_eval.h).
 *
 * A stack machine over the postfix nodes of a plan: every node pops its
 * operands and pushes one value.  The stack lives on the C stack
 * (RULES_MAX_STACK values, the bound the parser checked).  Values never own
 * memory: strings point into the input, the plan or the scratch arena;
 * JSON values are borrowed from the input's parsed payload or from the
 * scratch's list (json_decode).  SQL's three-valued logic: an operation
 * with a null operand is null, AND/OR follow the usual truth tables, and a
 * WHERE passes only when it is exactly true.  Any thread, with its own
 * scratch.
 */
#include "rules_eval.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "b64.h"
#include "mqtt_codec.h"
#include "mqtt_props.h"
#include "util.h"

typedef rules_val_t val_t;

static int fail(rules_scratch_t *sc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(rules_scratch_t *sc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sc->err, sizeof(sc->err), fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- scratch ---- */

void rules_scratch_init(rules_scratch_t *sc, size_t cap)
{
    memset(sc, 0, sizeof(*sc));
    sc->buf = an_malloc(cap);
    sc->cap = cap;
}

void rules_scratch_reset(rules_scratch_t *sc)
{
    for (uint32_t i = 0; i < sc->nowned; i++)
        json_decref(sc->owned[i]);
    sc->nowned = 0;
    sc->used = 0;
    sc->err[0] = '\0';
}

void rules_scratch_free(rules_scratch_t *sc)
{
    rules_scratch_reset(sc);
    free(sc->buf);
    free(sc->owned);
    memset(sc, 0, sizeof(*sc));
}

static char *sc_alloc(rules_scratch_t *sc, size_t n)
{
    if (n > sc->cap - sc->used) {
        fail(sc, "evaluation needs more than %zu bytes of scratch", sc->cap);
        return NULL;
    }
    char *p = sc->buf + sc->used;
    sc->used += n;
    return p;
}

static json_t *sc_own(rules_scratch_t *sc, json_t *j)
{
    if (sc->nowned == sc->cap_owned) {
        sc->cap_owned = sc->cap_owned ? sc->cap_owned * 2 : 8;
        sc->owned = an_realloc(sc->owned, sc->cap_owned * sizeof(*sc->owned));
    }
    sc->owned[sc->nowned++] = j;
    return j;
}

void rules_input_done(rules_input_t *in)
{
    json_decref(in->json);
    in->json = NULL;
    in->json_done = 0;
}

/* ---- values ---- */

#define VNULL ((val_t){.type = RULES_V_NULL})
#define VBOOL(b) ((val_t){.type = RULES_V_BOOL, .u.i = !!(b)})
#define VINT(x) ((val_t){.type = RULES_V_INT, .u.i = (x)})
#define VDBL(x) ((val_t){.type = RULES_V_DOUBLE, .u.d = (x)})

static val_t vstr(const char *s, size_t n)
{
    if (s == NULL)
        return VNULL;
    return (val_t){.type = RULES_V_STR, .len = (uint32_t)n, .u.s = s};
}

static val_t vcstr(const char *s)
{
    return s ? vstr(s, strlen(s)) : VNULL;
}

static val_t from_json(json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_TRUE:
        return VBOOL(1);
    case JSON_FALSE:
        return VBOOL(0);
    case JSON_INTEGER:
        return VINT((int64_t)json_integer_value(j));
    case JSON_REAL:
        return VDBL(json_real_value(j));
    case JSON_STRING:
        return vstr(json_string_value(j), json_string_length(j));
    case JSON_OBJECT:
    case JSON_ARRAY:
        return (val_t){.type = RULES_V_JSON, .u.j = j};
    default:
        return VNULL;
    }
}

json_t *rules_val_json(const rules_val_t *v)
{
    switch (v->type) {
    case RULES_V_BOOL:
        return json_boolean(v->u.i);
    case RULES_V_INT:
        return json_integer((json_int_t)v->u.i);
    case RULES_V_DOUBLE:
        return isfinite(v->u.d) ? json_real(v->u.d) : json_null();
    case RULES_V_STR: {
        json_t *j = json_stringn(v->u.s, v->len);
        return j ? j : json_stringn_nocheck(v->u.s, v->len);
    }
    case RULES_V_JSON:
        return json_incref(v->u.j);
    default:
        return json_null();
    }
}

/* v as text in the scratch (strings as they are, numbers in decimal, JSON
 * encoded, null ""). */
static int to_text(rules_scratch_t *sc, const val_t *v, const char **s, size_t *n)
{
    char tmp[64];
    int k = 0;
    switch (v->type) {
    case RULES_V_STR:
        *s = v->u.s;
        *n = v->len;
        return 0;
    case RULES_V_NULL:
        *s = "";
        *n = 0;
        return 0;
    case RULES_V_BOOL:
        *s = v->u.i ? "true" : "false";
        *n = strlen(*s);
        return 0;
    case RULES_V_INT:
        k = snprintf(tmp, sizeof(tmp), "%" PRId64, v->u.i);
        break;
    case RULES_V_DOUBLE:
        k = snprintf(tmp, sizeof(tmp), "%.17g", v->u.d);
        /* the shortest form that reads back the same */
        for (int prec = 1; prec <= 17; prec++) {
            char t2[64];
            int k2 = snprintf(t2, sizeof(t2), "%.*g", prec, v->u.d);
            if (strtod(t2, NULL) == v->u.d) {
                memcpy(tmp, t2, (size_t)k2 + 1);
                k = k2;
                break;
            }
        }
        break;
    case RULES_V_JSON: {
        char *d = json_dumps(v->u.j, JSON_COMPACT | JSON_ENCODE_ANY);
        if (d == NULL)
            return fail(sc, "cannot encode a JSON value");
        size_t dl = strlen(d);
        char *p = sc_alloc(sc, dl);
        if (p)
            memcpy(p, d, dl);
        free(d);
        if (p == NULL)
            return -1;
        *s = p;
        *n = dl;
        return 0;
    }
    }
    char *p = sc_alloc(sc, (size_t)k);
    if (p == NULL)
        return -1;
    memcpy(p, tmp, (size_t)k);
    *s = p;
    *n = (size_t)k;
    return 0;
}

static int is_num(const val_t *v)
{
    return v->type == RULES_V_INT || v->type == RULES_V_DOUBLE;
}

static double num(const val_t *v)
{
    return v->type == RULES_V_INT ? (double)v->u.i : v->u.d;
}

static const char *type_name(uint8_t t)
{
    static const char *const names[] = {"null", "bool", "int", "double", "string", "JSON"};
    return t < 6 ? names[t] : "?";
}

/* -1, 0, 1; or 2 when a and b do not compare (different kinds). */
static int compare(const val_t *a, const val_t *b)
{
    if (is_num(a) && is_num(b)) {
        if (a->type == RULES_V_INT && b->type == RULES_V_INT)
            return (a->u.i > b->u.i) - (a->u.i < b->u.i);
        double x = num(a), y = num(b);
        return (x > y) - (x < y);
    }
    if (a->type != b->type)
        return 2;
    switch (a->type) {
    case RULES_V_BOOL:
        return (int)(a->u.i - b->u.i);
    case RULES_V_STR: {
        int c = memcmp(a->u.s, b->u.s, AN_MIN(a->len, b->len));
        if (c == 0)
            c = (a->len > b->len) - (a->len < b->len);
        return (c > 0) - (c < 0);
    }
    case RULES_V_JSON:
        return json_equal(a->u.j, b->u.j) ? 0 : 2;
    default:
        return 2;
    }
}

/* s LIKE p: % any run, _ one byte. */
static int like(const char *s, size_t sn, const char *p, size_t pn)
{
    size_t si = 0, pi = 0, star = SIZE_MAX, mark = 0;
    while (si < sn) {
        if (pi < pn && (p[pi] == '_' || p[pi] == s[si])) {
            si++;
            pi++;
        } else if (pi < pn && p[pi] == '%') {
            star = pi++;
            mark = si;
        } else if (star != SIZE_MAX) {
            pi = star + 1;
            si = ++mark;
        } else {
            return 0;
        }
    }
    while (pi < pn && p[pi] == '%')
        pi++;
    return pi == pn;
}

/* ---- fields ---- */

static void parse_payload(rules_input_t *in)
{
    if (in->json_done)
        return;
    in->json_done = 1;
    if (in->payload && in->payload_len)
        in->json = json_loadb(in->payload, in->payload_len, JSON_DECODE_ANY, NULL);
}

static val_t payload_path(rules_input_t *in, const char *path)
{
    parse_payload(in);
    json_t *j = in->json;
    for (const char *k = path; j && *k; k += strlen(k) + 1) {
        if (json_is_object(j)) {
            j = json_object_get(j, k);
        } else if (json_is_array(j) && isdigit((unsigned char)*k)) {
            j = json_array_get(j, strtoul(k, NULL, 10));
        } else {
            j = NULL;
        }
    }
    return j ? from_json(j) : VNULL;
}

static val_t user_prop(rules_input_t *in, const char *key)
{
    if (in->user_props)
        return from_json(json_object_get(in->user_props, key));
    if (in->props == NULL)
        return VNULL;
    mqtt_props_t pr;
    mqtt_props_init(&pr);
    pr.raw = in->props;
    pr.raw_len = in->props_len;
    uint32_t pos = 0;
    mqtt_str_t name, value;
    size_t kl = strlen(key);
    while (mqtt_props_user_next(&pr, &pos, &name, &value))
        if (name.len == kl && memcmp(name.p, key, kl) == 0)
            return vstr((const char *)value.p, value.len);
    return VNULL;
}

static val_t field(rules_input_t *in, const rules_node_t *n)
{
    switch (n->sub) {
    case RULES_F_CLIENTID:
        return vcstr(in->clientid);
    case RULES_F_USERNAME:
        return vcstr(in->username);
    case RULES_F_TOPIC:
        return vstr(in->topic, in->topic_len);
    case RULES_F_QOS:
        return in->topic ? VINT(in->qos) : VNULL;
    case RULES_F_RETAIN:
        return in->topic ? VBOOL(in->retain) : VNULL;
    case RULES_F_PAYLOAD:
        return in->payload ? vstr(in->payload, in->payload_len) : VNULL;
    case RULES_F_TIMESTAMP:
        return VINT(in->timestamp);
    case RULES_F_NODE:
        return VINT(in->node);
    case RULES_F_PEER:
        return vcstr(in->peer);
    case RULES_F_PROTOCOL:
        return vcstr(in->protocol);
    case RULES_F_EVENT:
        return vcstr(in->event);
    case RULES_F_REASON:
        return vcstr(in->reason);
    case RULES_F_PAYLOAD_PATH:
        return payload_path(in, n->str);
    case RULES_F_USER_PROP:
        return user_prop(in, n->str);
    default:
        return VNULL;
    }
}

/* ---- functions ---- */

typedef struct {
    rules_input_t *in;
    rules_scratch_t *sc;
} fctx_t;

typedef int (*fn_t)(fctx_t *f, val_t *a, int argc, val_t *out);

static int need_str(fctx_t *f, const val_t *v, const char *fn)
{
    if (v->type != RULES_V_STR)
        return fail(f->sc, "%s takes a string, got %s", fn, type_name(v->type));
    return 0;
}

static int fn_case(fctx_t *f, val_t *a, val_t *out, int up)
{
    if (need_str(f, &a[0], up ? "upper" : "lower") < 0)
        return -1;
    char *p = sc_alloc(f->sc, a[0].len);
    if (p == NULL)
        return -1;
    for (uint32_t i = 0; i < a[0].len; i++)
        p[i] =
            (char)(up ? toupper((unsigned char)a[0].u.s[i]) : tolower((unsigned char)a[0].u.s[i]));
    *out = vstr(p, a[0].len);
    return 0;
}

static int fn_lower(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)argc;
    return fn_case(f, a, out, 0);
}

static int fn_upper(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)argc;
    return fn_case(f, a, out, 1);
}

static int fn_concat(fctx_t *f, val_t *a, int argc, val_t *out)
{
    const char *s[16];
    size_t n[16], total = 0;
    for (int i = 0; i < argc; i++) {
        if (to_text(f->sc, &a[i], &s[i], &n[i]) < 0)
            return -1;
        total += n[i];
    }
    char *p = sc_alloc(f->sc, total);
    if (p == NULL)
        return -1;
    size_t o = 0;
    for (int i = 0; i < argc; i++) {
        memcpy(p + o, s[i], n[i]);
        o += n[i];
    }
    *out = vstr(p, total);
    return 0;
}

static int fn_str(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)argc;
    const char *s = NULL;
    size_t n = 0;
    if (to_text(f->sc, &a[0], &s, &n) < 0)
        return -1;
    *out = vstr(s, n);
    return 0;
}

/* substr(s, start[, len]): start is 0-based, in bytes; out of range gives
 * what is left. */
static int fn_substr(fctx_t *f, val_t *a, int argc, val_t *out)
{
    if (need_str(f, &a[0], "substr") < 0)
        return -1;
    if (a[1].type != RULES_V_INT || (argc == 3 && a[2].type != RULES_V_INT))
        return fail(f->sc, "substr takes integer positions");
    int64_t st = a[1].u.i < 0 ? 0 : a[1].u.i;
    if (st > (int64_t)a[0].len)
        st = a[0].len;
    int64_t len = (int64_t)a[0].len - st;
    if (argc == 3 && a[2].u.i < len)
        len = a[2].u.i < 0 ? 0 : a[2].u.i;
    *out = vstr(a[0].u.s + st, (size_t)len);
    return 0;
}

static int fn_length(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)argc;
    if (a[0].type == RULES_V_JSON) {
        *out = VINT((int64_t)(json_is_array(a[0].u.j) ? json_array_size(a[0].u.j)
                                                      : json_object_size(a[0].u.j)));
        return 0;
    }
    if (need_str(f, &a[0], "length") < 0)
        return -1;
    *out = VINT(a[0].len);
    return 0;
}

static int fn_replace(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)argc;
    for (int i = 0; i < 3; i++)
        if (need_str(f, &a[i], "replace") < 0)
            return -1;
    if (a[1].len == 0) {
        *out = a[0];
        return 0;
    }
    size_t cnt = 0;
    for (size_t i = 0; i + a[1].len <= a[0].len;)
        if (memcmp(a[0].u.s + i, a[1].u.s, a[1].len) == 0) {
            cnt++;
            i += a[1].len;
        } else {
            i++;
        }
    size_t total = a[0].len + cnt * a[2].len - cnt * a[1].len;
    char *p = sc_alloc(f->sc, total);
    if (p == NULL)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < a[0].len;)
        if (i + a[1].len <= a[0].len && memcmp(a[0].u.s + i, a[1].u.s, a[1].len) == 0) {
            memcpy(p + o, a[2].u.s, a[2].len);
            o += a[2].len;
            i += a[1].len;
        } else {
            p[o++] = a[0].u.s[i++];
        }
    *out = vstr(p, total);
    return 0;
}

static int fn_trim(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)argc;
    if (need_str(f, &a[0], "trim") < 0)
        return -1;
    const char *s = a[0].u.s;
    size_t n = a[0].len;
    while (n && isspace((unsigned char)*s))
        s++, n--;
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    *out = vstr(s, n);
    return 0;
}

static int need_num(fctx_t *f, const val_t *v, const char *fn)
{
    if (!is_num(v))
        return fail(f->sc, "%s takes a number, got %s", fn, type_name(v->type));
    return 0;
}

static int fn_abs(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)argc;
    if (need_num(f, &a[0], "abs") < 0)
        return -1;
    *out = a[0].type == RULES_V_INT
               ? VINT(a[0].u.i < 0 ? (int64_t)(0 - (uint64_t)a[0].u.i) : a[0].u.i)
               : VDBL(fabs(a[0].u.d));
    return 0;
}

static int fn_rnd(fctx_t *f, val_t *a, val_t *out, double (*op)(double), const char *name)
{
    if (need_num(f, &a[0], name) < 0)
        return -1;
    if (a[0].type == RULES_V_INT) {
        *out = a[0];
        return 0;
    }
    double d = op(a[0].u.d);
    *out = (d >= -9.2e18 && d <= 9.2e18) ? VINT((int64_t)d) : VDBL(d);
    return 0;
}

static int fn_round(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)argc;
    return fn_rnd(f, a, out, round, "round");
}

static int fn_floor(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)argc;
    return fn_rnd(f, a, out, floor, "floor");
}

static int fn_ceil(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)argc;
    return fn_rnd(f, a, out, ceil, "ceil");
}

/* topic(n): level n (1-based) of the topic; null past the last. */
static int fn_topic(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)argc;
    if (a[0].type != RULES_V_INT)
        return fail(f->sc, "topic takes a level number");
    *out = VNULL;
    const char *t = f->in->topic;
    if (t == NULL || a[0].u.i < 1)
        return 0;
    size_t n = f->in->topic_len, s = 0;
    for (int64_t lvl = 1;; lvl++) {
        size_t e = s;
        while (e < n && t[e] != '/')
            e++;
        if (lvl == a[0].u.i) {
            *out = vstr(t + s, e - s);
            return 0;
        }
        if (e >= n)
            return 0;
        s = e + 1;
    }
}

static int fn_json_encode(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)argc;
    json_t *j = rules_val_json(&a[0]);
    char *d = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    if (d == NULL)
        return fail(f->sc, "json_encode: cannot encode");
    size_t n = strlen(d);
    char *p = sc_alloc(f->sc, n);
    if (p)
        memcpy(p, d, n);
    free(d);
    if (p == NULL)
        return -1;
    *out = vstr(p, n);
    return 0;
}

static int fn_json_decode(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)argc;
    if (need_str(f, &a[0], "json_decode") < 0)
        return -1;
    json_error_t je;
    json_t *j = json_loadb(a[0].u.s, a[0].len, JSON_DECODE_ANY, &je);
    if (j == NULL)
        return fail(f->sc, "json_decode: %s", je.text);
    *out = from_json(sc_own(f->sc, j));
    return 0;
}

static int fn_now_ms(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)f, (void)a, (void)argc;
    *out = VINT((int64_t)an_wall_ms());
    return 0;
}

static int fn_format_time(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)argc;
    if (a[0].type != RULES_V_INT || need_str(f, &a[1], "format_time") < 0)
        return fail(f->sc, "format_time takes (ms, 'format')");
    char fmt[128];
    if (a[1].len >= sizeof(fmt))
        return fail(f->sc, "format_time: the format is longer than %zu bytes", sizeof(fmt) - 1);
    memcpy(fmt, a[1].u.s, a[1].len);
    fmt[a[1].len] = '\0';
    time_t secs = (time_t)(a[0].u.i / 1000);
    struct tm tm;
    if (gmtime_r(&secs, &tm) == NULL)
        return fail(f->sc, "format_time: time out of range");
    char *p = sc_alloc(f->sc, 256);
    if (p == NULL)
        return -1;
    size_t n = strftime(p, 256, fmt, &tm);
    *out = vstr(p, n);
    return 0;
}

static int hex_of(fctx_t *f, const uint8_t *b, size_t n, val_t *out)
{
    static const char hx[] = "0123456789abcdef";
    char *p = sc_alloc(f->sc, n * 2);
    if (p == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        p[2 * i] = hx[b[i] >> 4];
        p[2 * i + 1] = hx[b[i] & 15];
    }
    *out = vstr(p, n * 2);
    return 0;
}

static int digest(fctx_t *f, val_t *a, val_t *out, const EVP_MD *md, const char *name)
{
    const char *s = NULL;
    size_t n = 0;
    if (a[0].type == RULES_V_NULL) {
        *out = VNULL;
        return 0;
    }
    if (to_text(f->sc, &a[0], &s, &n) < 0)
        return -1;
    uint8_t h[EVP_MAX_MD_SIZE];
    unsigned hl = 0;
    if (EVP_Digest(s, n, h, &hl, md, NULL) != 1)
        return fail(f->sc, "%s failed", name);
    return hex_of(f, h, hl, out);
}

static int fn_md5(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)argc;
    return digest(f, a, out, EVP_md5(), "md5");
}

static int fn_sha256(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)argc;
    return digest(f, a, out, EVP_sha256(), "sha256");
}

static int fn_hex_encode(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)argc;
    const char *s = NULL;
    size_t n = 0;
    if (to_text(f->sc, &a[0], &s, &n) < 0)
        return -1;
    return hex_of(f, (const uint8_t *)s, n, out);
}

static int fn_b64_encode(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)argc;
    const char *s = NULL;
    size_t n = 0;
    if (to_text(f->sc, &a[0], &s, &n) < 0)
        return -1;
    char *p = sc_alloc(f->sc, B64_ENCODED_LEN(n) + 1);
    if (p == NULL)
        return -1;
    *out = vstr(p, b64_encode((const uint8_t *)s, n, p));
    return 0;
}

static int fn_b64_decode(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)argc;
    if (need_str(f, &a[0], "base64_decode") < 0)
        return -1;
    size_t cap = B64_DECODED_MAX(a[0].len) + 1;
    char *p = sc_alloc(f->sc, cap);
    if (p == NULL)
        return -1;
    long n = b64_decode(a[0].u.s, a[0].len, (uint8_t *)p, cap);
    if (n < 0)
        return fail(f->sc, "base64_decode: not base64");
    *out = vstr(p, (size_t)n);
    return 0;
}

static int fn_int(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)argc;
    switch (a[0].type) {
    case RULES_V_NULL:
    case RULES_V_INT:
        *out = a[0];
        return 0;
    case RULES_V_BOOL:
        *out = VINT(a[0].u.i);
        return 0;
    case RULES_V_DOUBLE:
        if (!(a[0].u.d >= -9.2e18 && a[0].u.d <= 9.2e18))
            return fail(f->sc, "int: out of range");
        *out = VINT((int64_t)a[0].u.d);
        return 0;
    case RULES_V_STR: {
        char buf[32];
        char *end;
        if (a[0].len == 0 || a[0].len >= sizeof(buf))
            return fail(f->sc, "int: not a number");
        memcpy(buf, a[0].u.s, a[0].len);
        buf[a[0].len] = '\0';
        long long v = strtoll(buf, &end, 10);
        if (*end != '\0') {
            double d = strtod(buf, &end);
            if (*end != '\0' || !(d >= -9.2e18 && d <= 9.2e18))
                return fail(f->sc, "int: \"%s\" is not a number", buf);
            v = (long long)d;
        }
        *out = VINT(v);
        return 0;
    }
    default:
        return fail(f->sc, "int: cannot convert %s", type_name(a[0].type));
    }
}

static int fn_float(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)argc;
    if (is_num(&a[0]) || a[0].type == RULES_V_NULL) {
        *out = a[0].type == RULES_V_NULL ? a[0] : VDBL(num(&a[0]));
        return 0;
    }
    if (a[0].type == RULES_V_STR && a[0].len && a[0].len < 64) {
        char buf[64], *end;
        memcpy(buf, a[0].u.s, a[0].len);
        buf[a[0].len] = '\0';
        double d = strtod(buf, &end);
        if (*end == '\0') {
            *out = VDBL(d);
            return 0;
        }
    }
    return fail(f->sc, "float: cannot convert %s", type_name(a[0].type));
}

static int fn_coalesce(fctx_t *f, val_t *a, int argc, val_t *out)
{
    (void)f;
    *out = VNULL;
    for (int i = 0; i < argc; i++)
        if (a[i].type != RULES_V_NULL) {
            *out = a[i];
            break;
        }
    return 0;
}

static const struct {
    const char *name;
    uint8_t min, max;
    uint8_t null_in; /* 1: any null argument gives null without a call */
    fn_t fn;
} fns[] = {
    {"lower", 1, 1, 1, fn_lower},
    {"upper", 1, 1, 1, fn_upper},
    {"concat", 1, 16, 0, fn_concat},
    {"substr", 2, 3, 1, fn_substr},
    {"length", 1, 1, 1, fn_length},
    {"replace", 3, 3, 1, fn_replace},
    {"trim", 1, 1, 1, fn_trim},
    {"abs", 1, 1, 1, fn_abs},
    {"round", 1, 1, 1, fn_round},
    {"floor", 1, 1, 1, fn_floor},
    {"ceil", 1, 1, 1, fn_ceil},
    {"topic", 1, 1, 1, fn_topic},
    {"json_encode", 1, 1, 0, fn_json_encode},
    {"json_decode", 1, 1, 1, fn_json_decode},
    {"now_ms", 0, 0, 0, fn_now_ms},
    {"format_time", 2, 2, 1, fn_format_time},
    {"md5", 1, 1, 1, fn_md5},
    {"sha256", 1, 1, 1, fn_sha256},
    {"base64_encode", 1, 1, 1, fn_b64_encode},
    {"base64_decode", 1, 1, 1, fn_b64_decode},
    {"hex_encode", 1, 1, 1, fn_hex_encode},
    {"int", 1, 1, 0, fn_int},
    {"float", 1, 1, 0, fn_float},
    {"str", 1, 1, 0, fn_str},
    {"coalesce", 1, 16, 0, fn_coalesce},
};

int rules_fn_find(const char *name, size_t len, uint8_t *min_args, uint8_t *max_args)
{
    for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++)
        if (strlen(fns[i].name) == len && strncasecmp(fns[i].name, name, len) == 0) {
            *min_args = fns[i].min;
            *max_args = fns[i].max;
            return (int)i;
        }
    return -1;
}

/* ---- operators ---- */

static int arith(rules_scratch_t *sc, uint8_t op, const val_t *a, const val_t *b, val_t *out)
{
    static const char *const sym[] = {"+", "-", "*", "/", "%"};
    const char *s = sym[op - RULES_OP_ADD];
    if (a->type == RULES_V_NULL || b->type == RULES_V_NULL) {
        *out = VNULL;
        return 0;
    }
    if (!is_num(a) || !is_num(b))
        return fail(sc, "%s on %s and %s%s", s, type_name(a->type), type_name(b->type),
                    op == RULES_OP_ADD ? " (concat() joins strings)" : "");
    if (a->type == RULES_V_INT && b->type == RULES_V_INT) {
        uint64_t x = (uint64_t)a->u.i, y = (uint64_t)b->u.i;
        switch (op) {
        case RULES_OP_ADD:
            *out = VINT((int64_t)(x + y));
            return 0;
        case RULES_OP_SUB:
            *out = VINT((int64_t)(x - y));
            return 0;
        case RULES_OP_MUL:
            *out = VINT((int64_t)(x * y));
            return 0;
        default:
            if (b->u.i == 0)
                return fail(sc, "division by zero");
            if (b->u.i == -1) { /* INT64_MIN / -1 traps */
                *out = op == RULES_OP_DIV ? VINT((int64_t)(0 - x)) : VINT(0);
                return 0;
            }
            *out = op == RULES_OP_DIV ? VINT(a->u.i / b->u.i) : VINT(a->u.i % b->u.i);
            return 0;
        }
    }
    double x = num(a), y = num(b);
    switch (op) {
    case RULES_OP_ADD:
        *out = VDBL(x + y);
        return 0;
    case RULES_OP_SUB:
        *out = VDBL(x - y);
        return 0;
    case RULES_OP_MUL:
        *out = VDBL(x * y);
        return 0;
    case RULES_OP_DIV:
        if (y == 0)
            return fail(sc, "division by zero");
        *out = VDBL(x / y);
        return 0;
    default:
        if (y == 0)
            return fail(sc, "division by zero");
        *out = VDBL(fmod(x, y));
        return 0;
    }
}

/* bool or null, else an error. */
static int logic_arg(rules_scratch_t *sc, const val_t *v, const char *op)
{
    if (v->type != RULES_V_BOOL && v->type != RULES_V_NULL)
        return fail(sc, "%s takes booleans, got %s", op, type_name(v->type));
    return 0;
}

int rules_eval_expr(const rules_plan_t *p, uint32_t start, uint32_t end, rules_input_t *in,
                    rules_scratch_t *sc, rules_val_t *out)
{
    val_t st[RULES_MAX_STACK + 1];
    uint32_t sp = 0;
    fctx_t fc = {.in = in, .sc = sc};
    for (uint32_t i = start; i < end; i++) {
        const rules_node_t *n = &p->nodes[i];
        switch (n->op) {
        case RULES_OP_CONST: {
            const rules_const_t *c = &p->consts[n->arg];
            st[sp++] = (val_t){.type = c->type, .len = c->len, .u.i = c->u.i};
            if (c->type == RULES_V_DOUBLE)
                st[sp - 1].u.d = c->u.d;
            else if (c->type == RULES_V_STR)
                st[sp - 1].u.s = c->u.s;
            break;
        }
        case RULES_OP_FIELD:
            st[sp++] = field(in, n);
            break;
        case RULES_OP_CALL: {
            uint32_t argc = n->sub;
            val_t *a = &st[sp - argc];
            val_t r = VNULL;
            int any_null = 0;
            for (uint32_t k = 0; k < argc; k++)
                any_null |= a[k].type == RULES_V_NULL;
            if (!(any_null && fns[n->arg].null_in) && fns[n->arg].fn(&fc, a, (int)argc, &r) < 0)
                return -1;
            sp -= argc;
            st[sp++] = r;
            break;
        }
        case RULES_OP_NEG: {
            val_t *a = &st[sp - 1];
            if (a->type == RULES_V_INT)
                a->u.i = (int64_t)(0 - (uint64_t)a->u.i);
            else if (a->type == RULES_V_DOUBLE)
                a->u.d = -a->u.d;
            else if (a->type != RULES_V_NULL)
                return fail(sc, "- on %s", type_name(a->type));
            break;
        }
        case RULES_OP_NOT: {
            val_t *a = &st[sp - 1];
            if (logic_arg(sc, a, "NOT") < 0)
                return -1;
            if (a->type == RULES_V_BOOL)
                a->u.i = !a->u.i;
            break;
        }
        case RULES_OP_ADD:
        case RULES_OP_SUB:
        case RULES_OP_MUL:
        case RULES_OP_DIV:
        case RULES_OP_MOD: {
            val_t r;
            if (arith(sc, n->op, &st[sp - 2], &st[sp - 1], &r) < 0)
                return -1;
            st[sp - 2] = r;
            sp--;
            break;
        }
        case RULES_OP_EQ:
        case RULES_OP_NE:
        case RULES_OP_LT:
        case RULES_OP_LE:
        case RULES_OP_GT:
        case RULES_OP_GE: {
            val_t *a = &st[sp - 2], *b = &st[sp - 1];
            val_t r;
            if (a->type == RULES_V_NULL || b->type == RULES_V_NULL) {
                r = VNULL;
            } else {
                int c = compare(a, b);
                switch (n->op) {
                case RULES_OP_EQ:
                    r = VBOOL(c == 0);
                    break;
                case RULES_OP_NE:
                    r = VBOOL(c != 0);
                    break;
                case RULES_OP_LT:
                    r = VBOOL(c == -1);
                    break;
                case RULES_OP_LE:
                    r = VBOOL(c == -1 || c == 0);
                    break;
                case RULES_OP_GT:
                    r = VBOOL(c == 1);
                    break;
                default:
                    r = VBOOL(c == 1 || c == 0);
                    break;
                }
            }
            *a = r;
            sp--;
            break;
        }
        case RULES_OP_AND:
        case RULES_OP_OR: {
            val_t *a = &st[sp - 2], *b = &st[sp - 1];
            const char *name = n->op == RULES_OP_AND ? "AND" : "OR";
            if (logic_arg(sc, a, name) < 0 || logic_arg(sc, b, name) < 0)
                return -1;
            int dom = n->op == RULES_OP_OR; /* the value that decides */
            if ((a->type == RULES_V_BOOL && a->u.i == dom) ||
                (b->type == RULES_V_BOOL && b->u.i == dom))
                *a = VBOOL(dom);
            else if (a->type == RULES_V_NULL || b->type == RULES_V_NULL)
                *a = VNULL;
            else
                *a = VBOOL(!dom);
            sp--;
            break;
        }
        case RULES_OP_IN: {
            uint32_t k = n->sub;
            val_t *x = &st[sp - k - 1];
            val_t r = VBOOL(0);
            if (x->type == RULES_V_NULL) {
                r = VNULL;
            } else {
                for (uint32_t j = 0; j < k; j++)
                    if (x[1 + j].type != RULES_V_NULL && compare(x, &x[1 + j]) == 0)
                        r = VBOOL(1);
            }
            sp -= k;
            *x = r;
            break;
        }
        case RULES_OP_LIKE: {
            val_t *a = &st[sp - 2], *b = &st[sp - 1];
            if (a->type == RULES_V_NULL || b->type == RULES_V_NULL)
                *a = VNULL;
            else if (a->type != RULES_V_STR || b->type != RULES_V_STR)
                return fail(sc, "LIKE takes strings, got %s and %s", type_name(a->type),
                            type_name(b->type));
            else
                *a = VBOOL(like(a->u.s, a->len, b->u.s, b->len));
            sp--;
            break;
        }
        case RULES_OP_ISNULL:
            st[sp - 1] = VBOOL(st[sp - 1].type == RULES_V_NULL);
            break;
        default:
            return fail(sc, "internal error: bad node %u", n->op);
        }
    }
    if (sp != 1)
        return fail(sc, "internal error: stack %u", sp);
    *out = st[0];
    return 0;
}

int rules_eval_where(const rules_plan_t *p, rules_input_t *in, rules_scratch_t *sc)
{
    if (p->where_end == p->where_start)
        return 1;
    val_t v;
    if (rules_eval_expr(p, p->where_start, p->where_end, in, sc, &v) < 0)
        return -1;
    return v.type == RULES_V_BOOL && v.u.i;
}

static void add_star(json_t *row, rules_input_t *in)
{
    for (uint8_t f = 0; f < RULES_F_COUNT; f++) {
        rules_node_t n = {.op = RULES_OP_FIELD, .sub = f};
        val_t v = field(in, &n);
        if (v.type != RULES_V_NULL)
            json_object_set_new(row, rules_field_names[f], rules_val_json(&v));
    }
}

json_t *rules_eval_row(const rules_plan_t *p, rules_input_t *in, rules_scratch_t *sc)
{
    json_t *row = json_object();
    for (uint32_t i = 0; i < p->ncols; i++) {
        const rules_col_t *c = &p->cols[i];
        if (c->star) {
            add_star(row, in);
            continue;
        }
        val_t v;
        if (rules_eval_expr(p, c->start, c->end, in, sc, &v) < 0) {
            json_decref(row);
            return NULL;
        }
        json_object_set_new(row, c->name, rules_val_json(&v));
    }
    return row;
}
