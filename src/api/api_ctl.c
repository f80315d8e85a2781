/* api_ctl.c -- `antenna ctl`, the REST API's command-line client (api_ctl.h).
 *
 * One process, one thread, a handful of HTTP requests: libcurl's easy
 * interface, jansson for the bodies.  The output is either the API's JSON
 * (--json, indented, the order the server wrote) or human text: lists as
 * tables with aligned columns, single objects as aligned "key  value"
 * lines (nested objects flattened as a.b, arrays of objects as tables).
 * The columns are chosen from what the server sent, with a preferred order
 * per list, so a field the API adds later shows up without a change here.
 *
 * Errors: an API error ({"error", "code", "field"}) is printed with its
 * message and the HTTP status, exit 1 (with --json the error body is also
 * printed on stdout for scripts); an unreachable server exit 1; bad usage
 * exit 2 before any request.
 */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_ctl.h"
#include "api_ctl_int.h"
#include "api_keys.h"
#include "util.h"

#define CTL_DEFAULT_URL "http://127.0.0.1:18083"
#define CTL_MAX_USER_PROPS 32
#define CTL_MAX_ARGS 8

typedef struct api_ctl {
    const char *url;
    const char *key;
    const char *user;
    const char *password;
    int json;
    long timeout_s;
    const char *cacert; /* https: the CA (or self-signed certificate) to trust */
    int insecure;       /* https: no certificate check at all */
    /* options of the commands */
    const char *prefix;
    const char *username;
    const char *address;
    const char *connected;
    const char *client;
    const char *topic;
    long limit;
    long page;
    int qos;
    int retain;
    int base64;
    const char *content_type;
    const char *response_topic;
    long expiry;
    const char *keys_file;
    long rate;                    /* drain --rate */
    const char *server_reference; /* drain --server-reference */
    int stay;                     /* drain --stay */
    const char *user_props[CTL_MAX_USER_PROPS];
    int n_user_props;
    /* positional words: the command and its arguments */
    const char *args[CTL_MAX_ARGS];
    int nargs;
    CURL *curl;
} ctl_t;

/* ------------------------------------------------------------ strings */

typedef struct {
    char *s;
    size_t len, cap;
} ctl_str_t;

static void str_add(ctl_str_t *b, const char *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->s = an_realloc(b->s, cap);
        b->cap = cap;
    }
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void str_addf(ctl_str_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void str_addf(ctl_str_t *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(tmp)) {
        str_add(b, tmp, (size_t)n);
        return;
    }
    char *big = an_malloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    str_add(b, big, (size_t)n);
    free(big);
}

/* A URL-escaped copy of s appended to b (every byte but [A-Za-z0-9-._~]). */
static void str_add_escaped(ctl_t *c, ctl_str_t *b, const char *s)
{
    char *e = curl_easy_escape(c->curl, s, (int)strlen(s));
    if (!e) {
        fprintf(stderr, "antenna ctl: out of memory\n");
        abort();
    }
    str_add(b, e, strlen(e));
    curl_free(e);
}

static void query_add(ctl_t *c, ctl_str_t *b, const char *name, const char *value)
{
    if (!value)
        return;
    str_add(b, strchr(b->s ? b->s : "", '?') ? "&" : "?", 1);
    str_add(b, name, strlen(name));
    str_add(b, "=", 1);
    str_add_escaped(c, b, value);
}

static void query_add_long(ctl_t *c, ctl_str_t *b, const char *name, long value)
{
    char num[32];
    if (value <= 0)
        return;
    snprintf(num, sizeof(num), "%ld", value);
    query_add(c, b, name, num);
}

/* ------------------------------------------------------------ HTTP */

static size_t ctl_on_body(char *p, size_t size, size_t n, void *ud)
{
    str_add(ud, p, size * n);
    return size * n;
}

/* api_ctl.h: one request with a body of any type (NULL ctype: JSON) and
 * the answer's raw bytes. */
int api_ctl_http(ctl_t *c, const char *method, const char *path, const char *ctype,
                 const char *body, size_t body_len, long *status, char **out, size_t *out_len)
{
    ctl_str_t url = {0}, resp = {0}, auth = {0};
    struct curl_slist *hdrs = NULL;
    int rc = 1;

    *out = NULL;
    *out_len = 0;
    *status = 0;
    size_t ulen = strlen(c->url);
    while (ulen > 0 && c->url[ulen - 1] == '/')
        ulen--;
    str_add(&url, c->url, ulen);
    str_add(&url, path, strlen(path));

    curl_easy_reset(c->curl);
    curl_easy_setopt(c->curl, CURLOPT_URL, url.s);
    curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c->curl, CURLOPT_TIMEOUT, c->timeout_s);
    curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT, c->timeout_s);
    curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, ctl_on_body);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &resp);
    curl_easy_setopt(c->curl, CURLOPT_USERAGENT, "antenna-ctl/" ANTENNA_VERSION);
    if (c->cacert)
        curl_easy_setopt(c->curl, CURLOPT_CAINFO, c->cacert);
    if (c->insecure) {
        curl_easy_setopt(c->curl, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(c->curl, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    hdrs = curl_slist_append(hdrs, "Accept: application/json");
    if (c->key) {
        str_addf(&auth, "Authorization: Bearer %s", c->key);
        hdrs = curl_slist_append(hdrs, auth.s);
    } else if (c->user) {
        curl_easy_setopt(c->curl, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c->curl, CURLOPT_USERNAME, c->user);
        curl_easy_setopt(c->curl, CURLOPT_PASSWORD, c->password ? c->password : "");
    }
    if (body) {
        ctl_str_t ct = {0};
        str_addf(&ct, "Content-Type: %s", ctype ? ctype : "application/json");
        hdrs = curl_slist_append(hdrs, ct.s);
        free(ct.s);
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE, 0L);
    }
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, hdrs);

    CURLcode cc = curl_easy_perform(c->curl);
    if (cc != CURLE_OK) {
        fprintf(stderr, "antenna ctl: %s %s: %s\n", method, url.s, curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, status);
    *out = resp.s;
    *out_len = resp.len;
    resp.s = NULL;
    rc = 0;
out:
    curl_slist_free_all(hdrs);
    free(url.s);
    free(resp.s);
    if (auth.s) {
        memset(auth.s, 0, auth.len); /* the key does not linger in freed memory */
        free(auth.s);
    }
    return rc;
}

/* Sends one request; on a completed exchange returns 0 with *status and
 * *body (parsed JSON or NULL when empty or not JSON).  Returns 1 after
 * printing why when the server cannot be reached. */
static int ctl_http(ctl_t *c, const char *method, const char *path, const char *body, long *status,
                    json_t **out)
{
    char *raw;
    size_t len;
    *out = NULL;
    if (api_ctl_http(c, method, path, NULL, body, body ? strlen(body) : 0, status, &raw, &len) != 0)
        return 1;
    if (len > 0) {
        json_error_t err;
        *out = json_loadb(raw, len, JSON_DECODE_ANY, &err);
    }
    free(raw);
    return 0;
}

int api_ctl_nargs(const ctl_t *c)
{
    return c->nargs;
}

const char *api_ctl_arg(const ctl_t *c, int i)
{
    return i < c->nargs ? c->args[i] : NULL;
}

int api_ctl_json(const ctl_t *c)
{
    return c->json;
}

/* A request whose HTTP error (>= 400) is an error of the command: prints
 * it and returns 1; 0 with *out (maybe NULL: 204) on success. */
static int ctl_call(ctl_t *c, const char *method, const char *path, const char *body, json_t **out)
{
    long status;
    json_t *resp;
    if (ctl_http(c, method, path, body, &status, &resp) != 0)
        return 1;
    if (status >= 200 && status < 300) {
        *out = resp;
        return 0;
    }
    const char *msg = json_string_value(json_object_get(resp, "error"));
    const char *code = json_string_value(json_object_get(resp, "code"));
    const char *field = json_string_value(json_object_get(resp, "field"));
    ctl_str_t line = {0};
    str_addf(&line, "antenna ctl: %s %s: HTTP %ld", method, path, status);
    if (msg)
        str_addf(&line, ": %s", msg);
    if (code || field)
        str_addf(&line, " (%s%s%s)", code ? code : "", field ? (code ? ", field " : "field ") : "",
                 field ? field : "");
    fprintf(stderr, "%s\n", line.s);
    free(line.s);
    if (c->json && resp) {
        json_dumpf(resp, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', stdout);
    }
    json_decref(resp);
    return 1;
}

/* ------------------------------------------------------------ output */

/* A printable copy of a JSON value: scalars as text, null as "-", arrays
 * of scalars comma-joined, anything else as compact JSON.  Control bytes
 * (a client id may hold anything) become '?'. */
static char *value_text(const json_t *v)
{
    ctl_str_t b = {0};
    str_add(&b, "", 0);
    switch (json_typeof(v)) {
    case JSON_STRING:
        str_add(&b, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        str_addf(&b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL:
        str_addf(&b, "%.6g", json_real_value(v));
        break;
    case JSON_TRUE:
        str_add(&b, "true", 4);
        break;
    case JSON_FALSE:
        str_add(&b, "false", 5);
        break;
    case JSON_NULL:
        str_add(&b, "-", 1);
        break;
    case JSON_ARRAY: {
        size_t i;
        json_t *e;
        int scalars = 1;
        json_array_foreach(v, i, e) if (json_is_object(e) || json_is_array(e)) scalars = 0;
        if (scalars) {
            json_array_foreach(v, i, e)
            {
                char *t = value_text(e);
                if (i)
                    str_add(&b, ", ", 2);
                str_add(&b, t, strlen(t));
                free(t);
            }
            if (json_array_size(v) == 0)
                str_add(&b, "-", 1);
            break;
        }
    }
        /* fall through */
    case JSON_OBJECT: {
        char *d = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (d) {
            str_add(&b, d, strlen(d));
            free(d);
        }
        break;
    }
    }
    for (size_t i = 0; i < b.len; i++)
        if ((unsigned char)b.s[i] < 0x20 || b.s[i] == 0x7f)
            b.s[i] = '?';
    return b.s;
}

/* The text of field `key`'s value for a human: a protocol version by its
 * MQTT name (4 -> 3.1.1), a `*_at` time (Unix seconds) in UTC; anything
 * else as value_text. */
static char *field_text(const char *key, const json_t *v)
{
    size_t klen = strlen(key);
    if (json_is_integer(v) && strcmp(key, "protocol_version") == 0) {
        json_int_t n = json_integer_value(v);
        if (n >= 3 && n <= 5)
            return an_strndup(n == 3 ? "3.1" : n == 4 ? "3.1.1" : "5.0", n == 4 ? 5 : 3);
    }
    if (json_is_integer(v) && json_integer_value(v) > 0 && klen > 3 &&
        strcmp(key + klen - 3, "_at") == 0) {
        time_t t = (time_t)json_integer_value(v);
        struct tm tm;
        char buf[64];
        if (gmtime_r(&t, &tm) && strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm))
            return an_strndup(buf, strlen(buf));
    }
    return value_text(v);
}

static int is_scalar(const json_t *v)
{
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) if (json_is_object(e) || json_is_array(e)) return 0;
        return 1;
    }
    return !json_is_object(v);
}

/* Prints the objects of `rows` as a table.  Columns: the keys of
 * `preferred` that any row has, in that order; when none is present, every
 * scalar key in the order of first appearance. */
static void print_table(const json_t *rows, const char *const *preferred)
{
    const char *cols[64];
    size_t ncols = 0;
    size_t i;
    json_t *row;

    for (const char *const *p = preferred; p && *p && ncols < 64; p++)
        json_array_foreach(rows, i, row) if (json_object_get(row, *p))
        {
            cols[ncols++] = *p;
            break;
        }
    if (ncols == 0) {
        json_array_foreach(rows, i, row)
        {
            const char *k;
            json_t *v;
            json_object_foreach((json_t *)row, k, v)
            {
                if (!is_scalar(v))
                    continue;
                size_t j = 0;
                while (j < ncols && strcmp(cols[j], k) != 0)
                    j++;
                if (j == ncols && ncols < 64)
                    cols[ncols++] = k;
            }
        }
    }
    if (ncols == 0) {
        printf("(%zu rows)\n", json_array_size(rows));
        return;
    }

    size_t nrows = json_array_size(rows);
    char **cells = an_calloc((nrows + 1) * ncols, sizeof(char *));
    size_t width[64];
    for (size_t j = 0; j < ncols; j++) {
        /* the header: the key upper-cased, '_' as ' ' */
        char *h = an_strndup(cols[j], strlen(cols[j]));
        for (char *q = h; *q; q++)
            *q = *q == '_' ? ' ' : (char)(*q >= 'a' && *q <= 'z' ? *q - 32 : *q);
        cells[j] = h;
        width[j] = strlen(h);
    }
    json_array_foreach(rows, i, row)
    {
        for (size_t j = 0; j < ncols; j++) {
            json_t *v = json_object_get(row, cols[j]);
            char *t = v ? field_text(cols[j], v) : an_strndup("-", 1);
            cells[(i + 1) * ncols + j] = t;
            if (strlen(t) > width[j])
                width[j] = strlen(t);
        }
    }
    for (size_t r = 0; r <= nrows; r++) {
        for (size_t j = 0; j < ncols; j++) {
            const char *t = cells[r * ncols + j];
            if (j + 1 == ncols)
                printf("%s\n", t);
            else
                printf("%-*s  ", (int)width[j], t);
        }
    }
    for (size_t k = 0; k < (nrows + 1) * ncols; k++)
        free(cells[k]);
    free(cells);
}

/* Collects the scalar leaves of obj as "prefix.key" -> text pairs. */
static void flatten(const json_t *obj, const char *prefix, json_t *pairs, json_t *tables)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        char name[256];
        snprintf(name, sizeof(name), "%s%s%s", prefix, *prefix ? "." : "", k);
        if (json_is_object(v) && json_object_size(v) > 0) {
            flatten(v, name, pairs, tables);
        } else if (json_is_array(v) && !is_scalar(v)) {
            json_object_set(tables, name, v);
        } else {
            char *t = field_text(k, v);
            json_array_append_new(pairs, json_pack("[s,s]", name, t));
            free(t);
        }
    }
}

/* rows as print_table prints them: an array of [key, value] pairs (MQTT 5
 * user properties) becomes rows {"key", "value"}; a new reference. */
static json_t *pairs_as_rows(json_t *rows)
{
    size_t i;
    json_t *e;
    json_array_foreach(rows, i, e) if (!json_is_array(e) || json_array_size(e) != 2 ||
                                       !is_scalar(e)) return json_incref(rows);
    json_t *out = json_array();
    json_array_foreach(rows, i, e) json_array_append_new(
        out, json_pack("{s:O,s:O}", "key", json_array_get(e, 0), "value", json_array_get(e, 1)));
    return out;
}

/* An object as aligned "key  value" lines, its arrays of objects (or of
 * [key, value] pairs) as tables below, each under its name. */
static void print_object(const json_t *obj)
{
    json_t *pairs = json_array(), *tables = json_object();
    size_t i, w = 0;
    json_t *p;
    flatten(obj, "", pairs, tables);
    json_array_foreach(pairs, i, p)
    {
        size_t l = strlen(json_string_value(json_array_get(p, 0)));
        if (l > w)
            w = l;
    }
    json_array_foreach(pairs, i, p)
        printf("%-*s  %s\n", (int)w, json_string_value(json_array_get(p, 0)),
               json_string_value(json_array_get(p, 1)));
    const char *k;
    json_t *t;
    json_object_foreach(tables, k, t)
    {
        printf("\n%s (%zu):\n", k, json_array_size(t));
        json_t *rows = pairs_as_rows(t);
        if (json_array_size(rows) > 0)
            print_table(rows, NULL);
        json_decref(rows);
    }
    json_decref(pairs);
    json_decref(tables);
}

static void print_json(const json_t *v)
{
    json_dumpf(v, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
}

/* A list response {"data": [...], "page", "limit", "count", "total"}. */
static void print_list(const json_t *resp, const char *const *preferred, const char *what)
{
    const json_t *data = json_is_array(resp) ? resp : json_object_get(resp, "data");
    if (!json_is_array(data)) {
        print_object(resp);
        return;
    }
    if (json_array_size(data) > 0)
        print_table(data, preferred);
    json_t *total = json_object_get(resp, "total");
    json_t *page = json_object_get(resp, "page");
    printf("%zu %s", json_array_size(data), what);
    if (json_is_integer(total))
        printf(" of %" JSON_INTEGER_FORMAT, json_integer_value(total));
    if (json_is_integer(page))
        printf(" (page %" JSON_INTEGER_FORMAT ")", json_integer_value(page));
    printf("\n");
}

/* ------------------------------------------------------------ commands */

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "antenna ctl: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(antenna ctl --help for the usage)\n");
    return 2;
}

/* GET path (or POST it body) and print the answer: a list (preferred
 * columns) or an object. */
static int cmd_get_body(ctl_t *c, const char *path, const char *body, const char *const *preferred,
                        const char *what)
{
    json_t *resp = NULL;
    if (ctl_call(c, body ? "POST" : "GET", path, body, &resp) != 0)
        return 1;
    if (c->json)
        print_json(resp ? resp : json_null());
    else if (what)
        print_list(resp, preferred, what);
    else if (resp)
        print_object(resp);
    json_decref(resp);
    return 0;
}

static int cmd_get(ctl_t *c, const char *path, const char *const *preferred, const char *what)
{
    return cmd_get_body(c, path, NULL, preferred, what);
}

/* DELETE path (or POST it body); 2xx prints `done`. */
static int cmd_delete_body(ctl_t *c, const char *path, const char *body, const char *done)
{
    json_t *resp = NULL;
    if (ctl_call(c, body ? "POST" : "DELETE", path, body, &resp) != 0)
        return 1;
    if (c->json) {
        json_t *o = resp ? json_incref(resp) : json_pack("{s:b}", "ok", 1);
        print_json(o);
        json_decref(o);
    } else {
        printf("%s\n", done);
    }
    json_decref(resp);
    return 0;
}

static int cmd_delete(ctl_t *c, const char *path, const char *done)
{
    return cmd_delete_body(c, path, NULL, done);
}

/* api_ctl_int.h: for the subcommands in their own files */
int ctl_nargs(const ctl_t *c)
{
    return c->nargs;
}
const char *ctl_arg(const ctl_t *c, int i)
{
    return i < c->nargs ? c->args[i] : NULL;
}
int ctl_get_body(ctl_t *c, const char *path, const char *body, const char *const *cols,
                 const char *what)
{
    return cmd_get_body(c, path, body, cols, what);
}
int ctl_delete(ctl_t *c, const char *path, const char *done)
{
    return cmd_delete(c, path, done);
}
int ctl_usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "antenna ctl: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(antenna ctl --help for the usage)\n");
    return 2;
}

/* A client id that is better sent in a body ({"client_id": ...} to the
 * POST forms of docs/api.md) than in a path: a long one (the API's URLs are
 * limited to a few KB), "." and ".." (dot segments), control characters. */
static int id_needs_body(const char *id)
{
    if (strlen(id) > 200 || strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
        return 1;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return 1;
    return 0;
}

/* {"client_id": id} (malloc'd), or NULL after saying why (not UTF-8). */
static char *id_body(const char *id)
{
    json_t *o = json_pack("{s:s}", "client_id", id);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (s == NULL)
        fprintf(stderr, "antenna ctl: the client id is not valid UTF-8\n");
    return s;
}

static int cmd_status(ctl_t *c)
{
    json_t *info = NULL, *stats = NULL, *ready = NULL;
    long ready_status = 0;
    int rc = 1;
    if (ctl_call(c, "GET", "/api/v1/info", NULL, &info) != 0)
        goto out;
    if (ctl_call(c, "GET", "/api/v1/stats", NULL, &stats) != 0)
        goto out;
    if (ctl_http(c, "GET", "/health/ready", NULL, &ready_status, &ready) != 0)
        goto out;
    if (c->json) {
        json_t *all = json_pack("{s:O,s:O,s:b}", "info", info ? info : json_null(), "stats",
                                stats ? stats : json_null(), "ready", ready_status == 200);
        print_json(all);
        json_decref(all);
    } else {
        printf("Node\n");
        if (info)
            print_object(info);
        printf("ready  %s (HTTP %ld)\n\nStats\n", ready_status == 200 ? "yes" : "no", ready_status);
        if (stats) {
            /* the packet counters by type in one line per direction, zeros left out */
            json_t *packets = json_incref(json_object_get(stats, "packets"));
            json_object_del(stats, "packets");
            print_object(stats);
            const char *dir;
            json_t *types;
            json_object_foreach(packets, dir, types)
            {
                const char *type;
                json_t *n;
                printf("packets %s:", dir);
                json_object_foreach(types, type, n) if (json_integer_value(n) != 0)
                    printf(" %s=%" JSON_INTEGER_FORMAT, type, json_integer_value(n));
                printf("\n");
            }
            json_decref(packets);
        }
    }
    rc = 0;
out:
    json_decref(info);
    json_decref(stats);
    json_decref(ready);
    return rc;
}

static const char *const CLIENT_COLS[] = {"client_id",        "username", "address",  "connected",
                                          "protocol_version", "protocol", "listener", "keepalive",
                                          "subscriptions",    "inflight", "queued",   NULL};
static const char *const SUB_COLS[] = {
    "client_id",           "topic",           "qos",   "no_local",
    "retain_as_published", "retain_handling", "share", NULL};
static const char *const TOPIC_COLS[] = {"topic", "subscribers", "count", NULL};
static const char *const RETAINED_COLS[] = {
    "topic", "qos", "payload_size", "size", "payload_text", "preview", NULL};
static const char *const LISTENER_COLS[] = {
    "name", "type", "transport", "bind", "address", "port", "connections", "max_connections", NULL};

static int cmd_clients(ctl_t *c)
{
    const char *sub = c->nargs > 1 ? c->args[1] : "list";
    ctl_str_t path = {0};
    int rc;
    if (strcmp(sub, "list") == 0) {
        if (c->nargs > 2)
            return usage_error("clients list takes no argument (options: --prefix, "
                               "--username, --address, --connected, --limit, --page)");
        str_add(&path, "/api/v1/clients", 15);
        query_add(c, &path, "client_id_prefix", c->prefix);
        query_add(c, &path, "username", c->username);
        query_add(c, &path, "address", c->address);
        query_add(c, &path, "connected", c->connected);
        query_add_long(c, &path, "limit", c->limit);
        query_add_long(c, &path, "page", c->page);
        rc = cmd_get(c, path.s, CLIENT_COLS, "clients");
    } else if (strcmp(sub, "show") == 0 || strcmp(sub, "kick") == 0) {
        if (c->nargs != 3)
            return usage_error("clients %s takes one CLIENT_ID", sub);
        const char *id = c->args[2];
        char *body = NULL;
        if (id_needs_body(id)) {
            if ((body = id_body(id)) == NULL)
                return 1;
            str_addf(&path, "/api/v1/clients/%s", sub[0] == 's' ? "lookup" : "kick");
        } else {
            str_add(&path, "/api/v1/clients/", 16);
            str_add_escaped(c, &path, id);
        }
        if (sub[0] == 's') {
            rc = cmd_get_body(c, path.s, body, NULL, NULL);
        } else {
            ctl_str_t done = {0};
            str_addf(&done, "kicked client '%.200s%s'", id, strlen(id) > 200 ? "..." : "");
            rc = cmd_delete_body(c, path.s, body, done.s);
            free(done.s);
        }
        free(body);
    } else {
        return usage_error("unknown clients command '%s' (list, show, kick)", sub);
    }
    free(path.s);
    return rc;
}

static int cmd_sessions(ctl_t *c)
{
    if (c->nargs < 2 || strcmp(c->args[1], "drop") != 0)
        return usage_error("sessions: the command is `sessions drop CLIENT_ID`");
    if (c->nargs != 3)
        return usage_error("sessions drop takes one CLIENT_ID");
    ctl_str_t path = {0}, done = {0};
    const char *id = c->args[2];
    char *body = NULL;
    if (id_needs_body(id)) {
        if ((body = id_body(id)) == NULL)
            return 1;
        str_addf(&path, "/api/v1/sessions/drop");
    } else {
        str_add(&path, "/api/v1/sessions/", 17);
        str_add_escaped(c, &path, id);
    }
    str_addf(&done, "dropped the session of '%.200s%s'", id, strlen(id) > 200 ? "..." : "");
    int rc = cmd_delete_body(c, path.s, body, done.s);
    free(path.s);
    free(done.s);
    free(body);
    return rc;
}

static int cmd_list(ctl_t *c, const char *base, const char *const *cols, const char *what)
{
    if (c->nargs > 1)
        return usage_error("%s takes no argument", c->args[0]);
    ctl_str_t path = {0};
    str_add(&path, base, strlen(base));
    if (strcmp(what, "subscriptions") == 0) {
        query_add(c, &path, "client_id", c->client);
        query_add(c, &path, "topic", c->topic);
    }
    query_add_long(c, &path, "limit", c->limit);
    query_add_long(c, &path, "page", c->page);
    int rc = cmd_get(c, path.s, cols, what);
    free(path.s);
    return rc;
}

static int cmd_retained(ctl_t *c)
{
    const char *sub = c->nargs > 1 ? c->args[1] : "list";
    ctl_str_t path = {0};
    int rc;
    if (strcmp(sub, "list") == 0) {
        if (c->nargs > 2)
            return usage_error("retained list takes no argument (options: --prefix, "
                               "--limit, --page)");
        str_add(&path, "/api/v1/retained", 16);
        query_add(c, &path, "topic_prefix", c->prefix);
        query_add_long(c, &path, "limit", c->limit);
        query_add_long(c, &path, "page", c->page);
        rc = cmd_get(c, path.s, RETAINED_COLS, "retained messages");
    } else if (strcmp(sub, "get") == 0 || strcmp(sub, "delete") == 0) {
        if (c->nargs != 3)
            return usage_error("retained %s takes one TOPIC", sub);
        str_add(&path, "/api/v1/retained/", 17);
        str_add_escaped(c, &path, c->args[2]);
        if (sub[0] == 'g') {
            rc = cmd_get(c, path.s, NULL, NULL);
        } else {
            ctl_str_t done = {0};
            str_addf(&done, "deleted the retained message of '%s'", c->args[2]);
            rc = cmd_delete(c, path.s, done.s);
            free(done.s);
        }
    } else {
        return usage_error("unknown retained command '%s' (list, get, delete)", sub);
    }
    free(path.s);
    return rc;
}

static int cmd_publish(ctl_t *c)
{
    if (c->nargs != 3)
        return usage_error("publish takes TOPIC PAYLOAD");
    json_t *req = json_pack("{s:s,s:s,s:s,s:i,s:b}", "topic", c->args[1], "payload", c->args[2],
                            "payload_encoding", c->base64 ? "base64" : "plain", "qos", c->qos,
                            "retain", c->retain);
    if (!req)
        return usage_error("TOPIC and PAYLOAD must be UTF-8 text (--base64 for binary)");
    json_t *props = json_object();
    if (c->content_type)
        json_object_set_new(props, "content_type", json_string(c->content_type));
    if (c->response_topic)
        json_object_set_new(props, "response_topic", json_string(c->response_topic));
    if (c->expiry >= 0)
        json_object_set_new(props, "message_expiry_interval", json_integer(c->expiry));
    if (c->n_user_props > 0) {
        json_t *ups = json_array();
        for (int i = 0; i < c->n_user_props; i++) {
            const char *kv = c->user_props[i];
            const char *eq = strchr(kv, '=');
            char *k = an_strndup(kv, (size_t)(eq - kv));
            json_array_append_new(ups, json_pack("[s,s]", k, eq + 1));
            free(k);
        }
        json_object_set_new(props, "user_properties", ups);
    }
    if (json_object_size(props) > 0)
        json_object_set(req, "properties", props);
    json_decref(props);

    char *body = json_dumps(req, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(req);
    json_t *resp = NULL;
    int rc = ctl_call(c, "POST", "/api/v1/publish", body, &resp);
    free(body);
    if (rc != 0)
        return rc;
    if (c->json) {
        print_json(resp ? resp : json_null());
    } else {
        json_t *d = json_object_get(resp, "delivered");
        printf("published to '%s'", c->args[1]);
        if (json_is_integer(d))
            printf(" (delivered to %" JSON_INTEGER_FORMAT " subscriber%s)", json_integer_value(d),
                   json_integer_value(d) == 1 ? "" : "s");
        printf("\n");
    }
    json_decref(resp);
    return 0;
}

static int cmd_reload(ctl_t *c)
{
    if (c->nargs > 1)
        return usage_error("reload takes no argument");
    json_t *resp = NULL;
    if (ctl_call(c, "POST", "/api/v1/reload", NULL, &resp) != 0)
        return 1;
    if (c->json) {
        print_json(resp ? resp : json_null());
    } else {
        printf("reloaded: logs reopened, certificates, keys and auth files re-read\n");
        static const char *const lists[][2] = {{"applied", "applied live"},
                                               {"restart_required", "need a restart"},
                                               {"errors", "errors"}};
        for (size_t l = 0; l < 3; l++) {
            json_t *a = json_object_get(resp, lists[l][0]), *e;
            size_t i;
            if (json_array_size(a) == 0)
                continue;
            printf("%s:\n", lists[l][1]);
            json_array_foreach(a, i, e) printf("  %s\n", json_string_value(e));
        }
    }
    json_decref(resp);
    return 0;
}

static void print_drain(const json_t *st)
{
    int draining = json_is_true(json_object_get(st, "draining"));
    const char *ref = json_string_value(json_object_get(st, "server_reference"));
    printf("draining: %s\n", draining ? "yes" : "no");
    if (draining) {
        printf("rate: %" JSON_INTEGER_FORMAT " clients/s\n",
               json_integer_value(json_object_get(st, "rate")));
        printf("server reference: %s\n", ref && ref[0] ? ref : "- (0x8B server shutting down)");
        printf("when empty: %s\n",
               json_is_true(json_object_get(st, "stay")) ? "stay up" : "stop (exit 0)");
        printf("disconnected: %" JSON_INTEGER_FORMAT "\n",
               json_integer_value(json_object_get(st, "disconnected")));
    }
    printf("clients left: %" JSON_INTEGER_FORMAT "\n",
           json_integer_value(json_object_get(st, "clients_left")));
}

/* `drain [status] [--rate N] [--server-reference HOST:PORT] [--stay]`. */
static int cmd_drain(ctl_t *c)
{
    int status = c->nargs > 1 && strcmp(c->args[1], "status") == 0;
    if (c->nargs > 2 || (c->nargs == 2 && !status))
        return usage_error("drain takes no argument but 'status'");
    json_t *resp = NULL;
    int rc;
    if (status) {
        rc = ctl_call(c, "GET", "/api/v1/drain", NULL, &resp);
    } else {
        json_t *body = json_pack("{s:I,s:s,s:b}", "rate", (json_int_t)(c->rate ? c->rate : 1000),
                                 "server_reference", c->server_reference ? c->server_reference : "",
                                 "stay", c->stay);
        char *text = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        rc = ctl_call(c, "POST", "/api/v1/drain", text, &resp);
        free(text);
    }
    if (rc != 0)
        return 1;
    if (c->json)
        print_json(resp ? resp : json_null());
    else
        print_drain(resp);
    json_decref(resp);
    return 0;
}

/* `keys create NAME --keys-file FILE`: local, no request (the broker reads
 * the file at start and on reload).  Prints the key once, on stdout. */
static int cmd_keys(ctl_t *c)
{
    char key[API_KEY_LEN + 1], err[256];
    if (c->nargs != 3 || strcmp(c->args[1], "create") != 0)
        return usage_error("keys: the command is `keys create NAME --keys-file FILE`");
    if (!c->keys_file)
        return usage_error("keys create needs --keys-file FILE");
    if (api_keys_create(c->keys_file, c->args[2], key, err, sizeof(err)) != 0) {
        fprintf(stderr, "antenna ctl: %s\n", err);
        return 1;
    }
    if (c->json) {
        json_t *o = json_pack("{s:s,s:s}", "name", c->args[2], "key", key);
        if (o)
            print_json(o);
        json_decref(o);
    } else
        printf("%s\n", key);
    memset(key, 0, sizeof(key));
    return 0;
}

static int cmd_health(ctl_t *c)
{
    long st_live = 0, st_ready = 0;
    json_t *live = NULL, *ready = NULL;
    if (c->nargs > 1)
        return usage_error("health takes no argument");
    if (ctl_http(c, "GET", "/health/live", NULL, &st_live, &live) != 0)
        return 1;
    if (ctl_http(c, "GET", "/health/ready", NULL, &st_ready, &ready) != 0) {
        json_decref(live);
        return 1;
    }
    if (c->json) {
        json_t *o = json_pack("{s:O,s:O}", "live", live ? live : json_null(), "ready",
                              ready ? ready : json_null());
        print_json(o);
        json_decref(o);
    } else {
        printf("live   %s (HTTP %ld)\nready  %s (HTTP %ld)\n", st_live == 200 ? "yes" : "no",
               st_live, st_ready == 200 ? "yes" : "no", st_ready);
    }
    json_decref(live);
    json_decref(ready);
    return st_live == 200 && st_ready == 200 ? 0 : 1;
}

/* ------------------------------------------------------------ options */

static void ctl_usage(FILE *out)
{
    fprintf(out,
            "Usage: antenna ctl [--url URL] [--key KEY | --user U --password P] [--json]\n"
            "                   COMMAND [args] [options]\n"
            "\n"
            "Talks to antenna's REST API (the `api:` listener, docs/api.md).\n"
            "\n"
            "Commands:\n"
            "  status                       node info, health and stats\n"
            "  health                       /health/live and /health/ready (exit 1 if not ready)\n"
            "  clients [list]               connected and offline clients\n"
            "          [--prefix P] [--username U] [--address A] [--connected true|false]\n"
            "  clients show CLIENT_ID       one client: connection, session, subscriptions\n"
            "  clients kick CLIENT_ID       disconnect it (MQTT 5: reason 0x98)\n"
            "  sessions drop CLIENT_ID      drop its session (and kick it)\n"
            "  subscriptions [--client ID] [--topic FILTER]\n"
            "  topics                       topic filters and their subscriber counts\n"
            "  retained [list] [--prefix P] | retained delete TOPIC\n"
            "  retained get TOPIC           one message: payload, properties, user properties\n"
            "  publish TOPIC PAYLOAD [--qos N] [--retain] [--base64] [--content-type T]\n"
            "          [--response-topic T] [--expiry S] [--user-property K=V]...\n"
            "  listeners                    the MQTT listeners and their connections\n"
            "  config                       the running configuration (secrets redacted)\n"
            "  reload                       what SIGHUP does: reopen logs, re-read files and the\n"
            "                               YAML; prints what was applied, what needs a restart\n"
            "  drain [--rate N] [--server-reference HOST:PORT] [--stay]\n"
            "                               stop accepting, disconnect every client (N/s), stop\n"
            "  drain status                 the drain's progress\n"
            "  rules [list] | show ID | delete ID | enable ID | disable ID\n"
            "  rules create JSON            a rule: {\"id\", \"sql\", \"enabled\", \"actions\"}\n"
            "  rules test SQL [MESSAGE]     a statement over a sample message (JSON: topic,\n"
            "                               payload, clientid, qos, user_properties, ...)\n"
            "  nodes                        the cluster: members, links, routes, lag\n"
            "  devices list|show ID|create ID [k=v..]|delete ID|disable ID|enable ID|\n"
            "          import FILE|export [csv|jsonl]|shadow ID [DESIRED_JSON]\n"
            "                                   the device registry (docs/devices.md)\n"
            "  commands send ID NAME [PARAMS] | show CMD | list ID | cancel CMD\n"
            "                               downlink commands to a device (docs/commands.md)\n"
            "  keys create NAME --keys-file FILE   a new API key (printed once, stored hashed)\n"
            "\n"
            "Options:\n"
            "  --url URL          API base URL (env ANTENNA_API_URL, default %s)\n"
            "  --key KEY          API key, sent as a bearer token (env ANTENNA_API_KEY)\n"
            "  --user U --password P   basic authentication instead of a key\n"
            "                     (env ANTENNA_API_USER, and ANTENNA_API_PASSWORD: the\n"
            "                     password out of the command line, where ps shows it)\n"
            "  --json             print the API's JSON instead of tables\n"
            "  --limit N --page N pagination of the lists\n"
            "  --timeout S        give up on a request after S seconds (default 10)\n"
            "  --cacert FILE      https: trust this CA or self-signed certificate\n"
            "                     (env ANTENNA_API_CACERT)\n"
            "  --insecure         https: do not check the certificate at all\n"
            "\n"
            "Exit status: 0 success, 1 an error (printed), 2 bad usage.\n",
            CTL_DEFAULT_URL);
}

enum {
    OPT_URL = 1000,
    OPT_KEY,
    OPT_USER,
    OPT_PASSWORD,
    OPT_JSON,
    OPT_TIMEOUT,
    OPT_PREFIX,
    OPT_USERNAME,
    OPT_ADDRESS,
    OPT_CONNECTED,
    OPT_CLIENT,
    OPT_TOPIC,
    OPT_LIMIT,
    OPT_PAGE,
    OPT_QOS,
    OPT_RETAIN,
    OPT_BASE64,
    OPT_CONTENT_TYPE,
    OPT_RESPONSE_TOPIC,
    OPT_EXPIRY,
    OPT_USER_PROPERTY,
    OPT_KEYS_FILE,
    OPT_CACERT,
    OPT_INSECURE,
    OPT_RATE,
    OPT_SERVER_REFERENCE,
    OPT_STAY,
    OPT_HELP
};

static const struct option CTL_OPTIONS[] = {
    {"url", required_argument, NULL, OPT_URL},
    {"key", required_argument, NULL, OPT_KEY},
    {"user", required_argument, NULL, OPT_USER},
    {"password", required_argument, NULL, OPT_PASSWORD},
    {"json", no_argument, NULL, OPT_JSON},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"prefix", required_argument, NULL, OPT_PREFIX},
    {"username", required_argument, NULL, OPT_USERNAME},
    {"address", required_argument, NULL, OPT_ADDRESS},
    {"connected", required_argument, NULL, OPT_CONNECTED},
    {"client", required_argument, NULL, OPT_CLIENT},
    {"topic", required_argument, NULL, OPT_TOPIC},
    {"limit", required_argument, NULL, OPT_LIMIT},
    {"page", required_argument, NULL, OPT_PAGE},
    {"qos", required_argument, NULL, OPT_QOS},
    {"retain", no_argument, NULL, OPT_RETAIN},
    {"base64", no_argument, NULL, OPT_BASE64},
    {"content-type", required_argument, NULL, OPT_CONTENT_TYPE},
    {"response-topic", required_argument, NULL, OPT_RESPONSE_TOPIC},
    {"expiry", required_argument, NULL, OPT_EXPIRY},
    {"user-property", required_argument, NULL, OPT_USER_PROPERTY},
    {"keys-file", required_argument, NULL, OPT_KEYS_FILE},
    {"cacert", required_argument, NULL, OPT_CACERT},
    {"insecure", no_argument, NULL, OPT_INSECURE},
    {"rate", required_argument, NULL, OPT_RATE},
    {"server-reference", required_argument, NULL, OPT_SERVER_REFERENCE},
    {"stay", no_argument, NULL, OPT_STAY},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

/* A whole decimal number in [min, max], or -1 (which no option allows). */
static long parse_number(const char *s, long min, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    return v;
}

/* 0 parsed, 2 bad usage (printed), 3 --help printed. */
static int ctl_parse(ctl_t *c, int argc, char **argv)
{
    int opt;
    optind = 0; /* glibc: rescan from argv[1], options anywhere */
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":h", CTL_OPTIONS, NULL)) != -1) {
        switch (opt) {
        case OPT_URL:
            c->url = optarg;
            break;
        case OPT_KEY:
            c->key = optarg;
            break;
        case OPT_USER:
            c->user = optarg;
            break;
        case OPT_PASSWORD:
            c->password = optarg;
            break;
        case OPT_JSON:
            c->json = 1;
            break;
        case OPT_PREFIX:
            c->prefix = optarg;
            break;
        case OPT_USERNAME:
            c->username = optarg;
            break;
        case OPT_ADDRESS:
            c->address = optarg;
            break;
        case OPT_CLIENT:
            c->client = optarg;
            break;
        case OPT_TOPIC:
            c->topic = optarg;
            break;
        case OPT_RETAIN:
            c->retain = 1;
            break;
        case OPT_BASE64:
            c->base64 = 1;
            break;
        case OPT_CONTENT_TYPE:
            c->content_type = optarg;
            break;
        case OPT_RESPONSE_TOPIC:
            c->response_topic = optarg;
            break;
        case OPT_KEYS_FILE:
            c->keys_file = optarg;
            break;
        case OPT_CACERT:
            c->cacert = optarg;
            break;
        case OPT_INSECURE:
            c->insecure = 1;
            break;
        case OPT_CONNECTED:
            if (strcmp(optarg, "true") != 0 && strcmp(optarg, "false") != 0)
                return usage_error("--connected must be true or false, not '%s'", optarg);
            c->connected = optarg;
            break;
        case OPT_TIMEOUT:
            if ((c->timeout_s = parse_number(optarg, 1, 3600)) < 0)
                return usage_error("--timeout must be 1..3600 seconds, not '%s'", optarg);
            break;
        case OPT_LIMIT:
            if ((c->limit = parse_number(optarg, 1, 100000)) < 0)
                return usage_error("--limit must be 1..100000, not '%s'", optarg);
            break;
        case OPT_PAGE:
            if ((c->page = parse_number(optarg, 1, 100000000)) < 0)
                return usage_error("--page must be a number from 1, not '%s'", optarg);
            break;
        case OPT_QOS:
            if ((c->qos = (int)parse_number(optarg, 0, 2)) < 0)
                return usage_error("--qos must be 0, 1 or 2, not '%s'", optarg);
            break;
        case OPT_RATE:
            if ((c->rate = parse_number(optarg, 1, 1000000)) < 0)
                return usage_error("--rate must be 1..1000000 clients per second, not '%s'",
                                   optarg);
            break;
        case OPT_SERVER_REFERENCE:
            c->server_reference = optarg;
            break;
        case OPT_STAY:
            c->stay = 1;
            break;
        case OPT_EXPIRY:
            if ((c->expiry = parse_number(optarg, 0, 4294967295L)) < 0)
                return usage_error("--expiry must be 0..4294967295 seconds, not '%s'", optarg);
            break;
        case OPT_USER_PROPERTY:
            if (!strchr(optarg, '='))
                return usage_error("--user-property takes KEY=VALUE, not '%s'", optarg);
            if (c->n_user_props == CTL_MAX_USER_PROPS)
                return usage_error("at most %d --user-property", CTL_MAX_USER_PROPS);
            c->user_props[c->n_user_props++] = optarg;
            break;
        case 'h':
        case OPT_HELP:
            ctl_usage(stdout);
            return 3;
        case ':':
            return usage_error("option %s needs a value", argv[optind - 1]);
        default:
            if (optopt && optopt < 1000)
                return usage_error("unknown option -%c", optopt);
            return usage_error("unknown option %s", argv[optind - 1]);
        }
    }
    for (int i = optind; i < argc; i++) {
        if (c->nargs == CTL_MAX_ARGS)
            return usage_error("too many arguments");
        c->args[c->nargs++] = argv[i];
    }
    if (c->key && c->user)
        return usage_error("--key and --user are exclusive");
    if (c->password && !c->user)
        return usage_error("--password needs --user");
    if (strncmp(c->url, "http://", 7) != 0 && strncmp(c->url, "https://", 8) != 0)
        return usage_error("--url must start with http:// or https://, not '%s'", c->url);
    return 0;
}

static const char *const RULE_COLS[] = {"id", "enabled", "sql", NULL};

/* rules [list] | show ID | create JSON | delete ID | enable ID | disable ID
 * | test SQL [MESSAGE_JSON]: the rule engine (docs/rules.md). */
static int cmd_rules(ctl_t *c)
{
    const char *sub = c->nargs > 1 ? c->args[1] : "list";
    char path[256];
    if (strcmp(sub, "list") == 0)
        return c->nargs > 2 ? usage_error("rules list takes no argument")
                            : cmd_get(c, "/api/v1/rules", RULE_COLS, "rules");
    if (strcmp(sub, "test") == 0) {
        if (c->nargs < 3 || c->nargs > 4)
            return usage_error("rules test SQL [MESSAGE_JSON]");
        json_t *msg = c->nargs == 4 ? json_loads(c->args[3], 0, NULL) : json_object();
        if (msg == NULL)
            return usage_error("rules test: the message is not JSON");
        json_t *b = json_pack("{s:s,s:o}", "sql", c->args[2], "message", msg);
        char *body = json_dumps(b, JSON_COMPACT);
        json_decref(b);
        int rc = cmd_get_body(c, "/api/v1/rules/test", body, NULL, NULL);
        free(body);
        return rc;
    }
    if (c->nargs != 3)
        return usage_error("rules %s takes one argument", sub);
    if (strcmp(sub, "create") == 0)
        return cmd_get_body(c, "/api/v1/rules", c->args[2], NULL, NULL);
    if (strpbrk(c->args[2], "/?#% ") || strlen(c->args[2]) > 64)
        return usage_error("rules: \"%s\" is not a rule id", c->args[2]);
    snprintf(path, sizeof(path), "/api/v1/rules/%s", c->args[2]);
    if (strcmp(sub, "show") == 0)
        return cmd_get(c, path, NULL, NULL);
    if (strcmp(sub, "delete") == 0)
        return cmd_delete(c, path, "deleted");
    if (strcmp(sub, "enable") == 0 || strcmp(sub, "disable") == 0) {
        snprintf(path, sizeof(path), "/api/v1/rules/%s/%s", c->args[2], sub);
        return cmd_get_body(c, path, "{}", NULL, NULL);
    }
    return usage_error("unknown rules command '%s'", sub);
}

static const char *const NODE_COLS[] = {
    "node", "self",   "member",    "state",    "link",    "tls", "routes",  "queued",
    "lag",  "output", "forwarded", "received", "dropped", "ups", "refused", NULL};

/* One row of the nodes table: the node's fields and its link's, flat, each
 * value one word (lag: "120ms"; forwarded: "q0/q1/q2"). */
static json_t *node_row(const json_t *n)
{
    json_t *row = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)n, k, v) if (is_scalar(v) && strcmp(k, "member_for_ms") != 0 &&
                                               strcmp(k, "out_for_ms") != 0)
        json_object_set(row, k, v);
    const json_t *ls = json_object_get(n, "link_state");
    if (json_is_true(json_object_get(n, "self"))) {
        json_object_set_new(row, "state", json_string("(self)"));
        return row;
    }
    static const char *const keep[] = {"state",   "routes", "queued",  "received",
                                       "dropped", "ups",    "refused", NULL};
    for (int i = 0; keep[i]; i++)
        if ((v = json_object_get(ls, keep[i])) != NULL)
            json_object_set(row, keep[i], v);
    if ((v = json_object_get(ls, "output_bytes")) != NULL)
        json_object_set(row, "output", v);
    char t[96];
    if (json_is_integer(v = json_object_get(ls, "lag_ms"))) {
        snprintf(t, sizeof(t), "%" JSON_INTEGER_FORMAT "ms", json_integer_value(v));
        json_object_set_new(row, "lag", json_string(t));
    }
    if (json_is_true(json_object_get(ls, "tls")) &&
        json_is_string(v = json_object_get(ls, "cipher"))) {
        snprintf(t, sizeof(t), "%s", json_string_value(v)); /* one word: "TLSv1.3/TLS_AES..." */
        for (char *sp = strchr(t, ' '); sp; sp = strchr(sp, ' '))
            *sp = '/';
        json_object_set_new(row, "tls", json_string(t));
    } else if (ls != NULL) {
        json_object_set_new(row, "tls", json_string("no"));
    }
    const json_t *fwd = json_object_get(ls, "forwarded");
    if (json_array_size(fwd) == 3) {
        snprintf(
            t, sizeof(t), "%" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT,
            json_integer_value(json_array_get(fwd, 0)), json_integer_value(json_array_get(fwd, 1)),
            json_integer_value(json_array_get(fwd, 2)));
        json_object_set_new(row, "forwarded", json_string(t));
    }
    return row;
}

/* nodes: the cluster as this node sees it (GET /api/v1/nodes; docs/cluster.md
 * "Operations"): one line about the cluster, then a table of the nodes with
 * their links (state, routes the peer announced, QoS 1/2 messages waiting
 * for its acknowledgement and the age of the oldest, output bytes waiting,
 * messages forwarded by QoS 0/1/2 and received). */
static int cmd_nodes(ctl_t *c)
{
    if (c->nargs > 1)
        return usage_error("nodes takes no argument");
    json_t *resp = NULL;
    if (ctl_call(c, "GET", "/api/v1/nodes", NULL, &resp) != 0)
        return 1;
    if (c->json) {
        print_json(resp ? resp : json_null());
    } else if (!json_is_true(json_object_get(resp, "clustered"))) {
        printf("not clustered (cluster.node is not set)\n");
    } else {
        printf("node %s, cluster %s, links on %s, %" JSON_INTEGER_FORMAT " members, lease %s\n",
               json_string_value(json_object_get(resp, "node")),
               json_string_value(json_object_get(resp, "cluster")),
               json_string_value(json_object_get(resp, "link")),
               json_integer_value(json_object_get(resp, "members")),
               json_is_true(json_object_get(resp, "lease_ok")) ? "ok" : "LOST");
        json_t *rows = json_array();
        size_t i;
        json_t *n;
        json_array_foreach(json_object_get(resp, "nodes"), i, n)
            json_array_append_new(rows, node_row(n));
        print_table(rows, NODE_COLS);
        json_decref(rows);
    }
    json_decref(resp);
    return 0;
}

int api_ctl_main(int argc, char **argv)
{
    ctl_t c = {0};
    int rc;

    c.url = getenv("ANTENNA_API_URL");
    if (!c.url || !*c.url)
        c.url = CTL_DEFAULT_URL;
    c.cacert = getenv("ANTENNA_API_CACERT");
    if (c.cacert && !*c.cacert)
        c.cacert = NULL;
    c.timeout_s = 10;
    c.expiry = -1;
    rc = ctl_parse(&c, argc, argv);
    if (rc == 3)
        return 0;
    if (rc != 0)
        return rc;
    if (!c.key && !c.user) { /* --key or --user win over the environment */
        c.key = getenv("ANTENNA_API_KEY");
        if (c.key && !*c.key)
            c.key = NULL;
        c.user = c.key ? NULL : getenv("ANTENNA_API_USER");
        if (c.user && !*c.user)
            c.user = NULL;
    }
    if (c.user && !c.password) /* not on the command line, where `ps` shows it */
        c.password = getenv("ANTENNA_API_PASSWORD");
    if (c.nargs == 0) {
        ctl_usage(stderr);
        return 2;
    }
    if (strcmp(c.args[0], "keys") == 0)
        return cmd_keys(&c); /* local: no HTTP */

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "antenna ctl: libcurl failed to initialise\n");
        return 1;
    }
    c.curl = curl_easy_init();
    if (!c.curl) {
        fprintf(stderr, "antenna ctl: libcurl failed to initialise\n");
        rc = 1;
        goto out;
    }

    const char *cmd = c.args[0];
    if (strcmp(cmd, "status") == 0)
        rc = c.nargs > 1 ? usage_error("status takes no argument") : cmd_status(&c);
    else if (strcmp(cmd, "health") == 0)
        rc = cmd_health(&c);
    else if (strcmp(cmd, "clients") == 0)
        rc = cmd_clients(&c);
    else if (strcmp(cmd, "sessions") == 0)
        rc = cmd_sessions(&c);
    else if (strcmp(cmd, "subscriptions") == 0)
        rc = cmd_list(&c, "/api/v1/subscriptions", SUB_COLS, "subscriptions");
    else if (strcmp(cmd, "topics") == 0)
        rc = cmd_list(&c, "/api/v1/topics", TOPIC_COLS, "topics");
    else if (strcmp(cmd, "listeners") == 0)
        rc = cmd_list(&c, "/api/v1/listeners", LISTENER_COLS, "listeners");
    else if (strcmp(cmd, "retained") == 0)
        rc = cmd_retained(&c);
    else if (strcmp(cmd, "publish") == 0)
        rc = cmd_publish(&c);
    else if (strcmp(cmd, "config") == 0)
        rc = c.nargs > 1 ? usage_error("config takes no argument")
                         : cmd_get(&c, "/api/v1/config", NULL, NULL);
    else if (strcmp(cmd, "reload") == 0)
        rc = cmd_reload(&c);
    else if (strcmp(cmd, "drain") == 0)
        rc = cmd_drain(&c);
    else if (strcmp(cmd, "rules") == 0)
        rc = cmd_rules(&c);
    else if (strcmp(cmd, "nodes") == 0)
        rc = cmd_nodes(&c);
    else if (strcmp(cmd, "devices") == 0)
        rc = api_ctl_devices(&c); /* api_ctl_devices.c */
    else if (strcmp(cmd, "commands") == 0)
        rc = api_ctl_commands(&c);
    else
        rc = usage_error("unknown command '%s'", cmd);

out:
    if (c.curl)
        curl_easy_cleanup(c.curl);
    curl_global_cleanup();
    return rc;
}
