/* devices_io.c -- the devices' bulk formats: JSON lines and CSV, read
 * (POST /api/v1/devices/import) and written (GET .../export).
 *
 * A pure parser with no state of its own, called on an API thread (and by
 * the unit tests and the fuzz target): every line becomes one JSON object
 * with the fields of a device as the REST API takes them, handed to a
 * callback that validates it.  The first problem stops the parse with
 * "line N: field F: problem" (N counts from 1, the CSV header included),
 * so an import is all or nothing.
 *
 * JSON lines: one object per line; blank lines are skipped.
 * CSV (RFC 4180): a header line naming the columns (id, password,
 * password_hash, token, token_hash, cert_fingerprint, tags, attributes,
 * disabled; any order, id required), fields quoted with '"' when they hold
 * a comma, a quote ("" inside) or a line break.  tags is "k=v;k2=v2",
 * attributes a JSON object, disabled true/false/1/0; an empty field is
 * absent.
 */
#include "devices.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static const char *const csv_cols[] = {"id",    "password",   "password_hash",
                                       "token", "token_hash", "cert_fingerprint",
                                       "tags",  "attributes", "disabled"};
#define NCOLS (sizeof(csv_cols) / sizeof(csv_cols[0]))

int devices_sniff(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\r' || buf[i] == '\n')
            continue;
        return buf[i] == '{' ? DEVICES_FMT_JSONL : DEVICES_FMT_CSV;
    }
    return DEVICES_FMT_JSONL;
}

static int parse_jsonl(const char *buf, size_t len, devices_rec_fn cb, void *ud, char *err,
                       size_t errlen)
{
    uint32_t line = 0;
    size_t pos = 0;
    while (pos < len) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - buf) : len;
        line++;
        size_t a = pos, b = end;
        while (a < b && (buf[a] == ' ' || buf[a] == '\t' || buf[a] == '\r'))
            a++;
        while (b > a && (buf[b - 1] == ' ' || buf[b - 1] == '\t' || buf[b - 1] == '\r'))
            b--;
        pos = end + 1;
        if (a == b)
            continue;
        json_error_t je;
        json_t *j = json_loadb(buf + a, b - a, JSON_REJECT_DUPLICATES, &je);
        if (j == NULL || !json_is_object(j)) {
            snprintf(err, errlen, "line %u: field -: not a JSON object%s%s", line, j ? "" : ": ",
                     j ? "" : je.text);
            json_decref(j);
            return -1;
        }
        int rc = cb(ud, line, j, err, errlen);
        json_decref(j);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* One CSV field from *pos: unquoted or quoted.  Writes the unescaped text
 * into out (cap bytes at least the field's length + 1).  *eol is set when
 * the field ends its record.  -1 on a malformed field. */
static int csv_field(const char *buf, size_t len, size_t *pos, char *out, size_t *olen, int *eol,
                     uint32_t *line)
{
    size_t p = *pos, o = 0;
    *eol = 0;
    if (p < len && buf[p] == '"') {
        p++;
        for (;;) {
            if (p >= len)
                return -1; /* no closing quote */
            if (buf[p] == '"') {
                if (p + 1 < len && buf[p + 1] == '"') {
                    out[o++] = '"';
                    p += 2;
                    continue;
                }
                p++;
                break;
            }
            if (buf[p] == '\n')
                (*line)++;
            out[o++] = buf[p++];
        }
        if (p < len && buf[p] == '\r')
            p++;
        if (p < len && buf[p] != ',' && buf[p] != '\n')
            return -1; /* text after the closing quote */
    } else {
        while (p < len && buf[p] != ',' && buf[p] != '\n') {
            if (buf[p] == '"')
                return -1;
            out[o++] = buf[p++];
        }
        if (o > 0 && out[o - 1] == '\r')
            o--;
    }
    if (p >= len || buf[p] == '\n')
        *eol = 1;
    *pos = p < len ? p + 1 : len;
    out[o] = '\0';
    *olen = o;
    return 0;
}

static int csv_value(json_t *rec, const char *col, const char *v, size_t vl, uint32_t line,
                     char *err, size_t errlen)
{
    if (vl == 0)
        return 0;
    if (strcmp(col, "tags") == 0) {
        json_t *t = json_object();
        json_object_set_new(rec, "tags", t);
        const char *p = v;
        while (*p) {
            const char *semi = strchr(p, ';');
            size_t n = semi ? (size_t)(semi - p) : strlen(p);
            const char *eq = memchr(p, '=', n);
            if (eq == NULL || eq == p) {
                snprintf(err, errlen, "line %u: field tags: \"%.*s\" is not key=value", line,
                         (int)(n > 60 ? 60 : n), p);
                return -1;
            }
            char *k = an_strndup(p, (size_t)(eq - p));
            json_object_set_new(t, k, json_stringn(eq + 1, n - (size_t)(eq - p) - 1));
            free(k);
            p += n;
            if (*p == ';')
                p++;
        }
        return 0;
    }
    if (strcmp(col, "attributes") == 0) {
        json_error_t je;
        json_t *a = json_loadb(v, vl, 0, &je);
        if (a == NULL || !json_is_object(a)) {
            snprintf(err, errlen, "line %u: field attributes: not a JSON object%s%s", line,
                     a ? "" : ": ", a ? "" : je.text);
            json_decref(a);
            return -1;
        }
        json_object_set_new(rec, "attributes", a);
        return 0;
    }
    if (strcmp(col, "disabled") == 0) {
        if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
            json_object_set_new(rec, "disabled", json_true());
        else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
            json_object_set_new(rec, "disabled", json_false());
        else {
            snprintf(err, errlen, "line %u: field disabled: \"%.20s\" is not true or false", line,
                     v);
            return -1;
        }
        return 0;
    }
    json_object_set_new(rec, col, json_stringn(v, vl));
    return 0;
}

static int parse_csv(const char *buf, size_t len, devices_rec_fn cb, void *ud, char *err,
                     size_t errlen)
{
    int rc = -1;
    char *field = an_malloc(len + 1);
    int cols[32];
    uint32_t ncols = 0, line = 1;
    size_t pos = 0, fl = 0;
    int eol = 0, have_id = 0;
    json_t *rec = NULL;
    /* the header */
    while (pos < len && !eol) {
        if (csv_field(buf, len, &pos, field, &fl, &eol, &line) < 0 || ncols == 32) {
            snprintf(err, errlen, "line 1: field -: a malformed header");
            goto cleanup;
        }
        int c = -1;
        for (size_t i = 0; i < NCOLS; i++)
            if (strcmp(field, csv_cols[i]) == 0)
                c = (int)i;
        if (c < 0) {
            snprintf(err, errlen, "line 1: field %.40s: an unknown column", field);
            goto cleanup;
        }
        have_id |= c == 0;
        cols[ncols++] = c;
    }
    if (!have_id) {
        snprintf(err, errlen, "line 1: field id: the header has no id column");
        goto cleanup;
    }
    while (pos < len) {
        line++;
        uint32_t first = line;
        if (buf[pos] == '\n' || (buf[pos] == '\r' && pos + 1 < len && buf[pos + 1] == '\n')) {
            pos += buf[pos] == '\r' ? 2 : 1; /* a blank line */
            continue;
        }
        rec = json_object();
        uint32_t i = 0;
        eol = 0;
        while (!eol) {
            if (csv_field(buf, len, &pos, field, &fl, &eol, &line) < 0) {
                snprintf(err, errlen, "line %u: field %s: a malformed CSV field", first,
                         i < ncols ? csv_cols[cols[i]] : "-");
                goto cleanup;
            }
            if (i >= ncols) {
                snprintf(err, errlen, "line %u: field -: more fields than the header's %u", first,
                         ncols);
                goto cleanup;
            }
            if (csv_value(rec, csv_cols[cols[i]], field, fl, first, err, errlen) < 0)
                goto cleanup;
            i++;
        }
        if (i != ncols) {
            snprintf(err, errlen, "line %u: field %s: missing (%u fields of %u)", first,
                     csv_cols[cols[i]], i, ncols);
            goto cleanup;
        }
        if (cb(ud, first, rec, err, errlen) < 0)
            goto cleanup;
        json_decref(rec);
        rec = NULL;
    }
    rc = 0;
cleanup:
    json_decref(rec);
    free(field);
    return rc;
}

int devices_parse(const char *buf, size_t len, int fmt, devices_rec_fn cb, void *ud, char *err,
                  size_t errlen)
{
    if (fmt == DEVICES_FMT_CSV)
        return parse_csv(buf, len, cb, ud, err, errlen);
    return parse_jsonl(buf, len, cb, ud, err, errlen);
}

/* ---- writing ---- */

void devices_buf_add(devices_buf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap)
            cap *= 2;
        b->p = an_realloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void csv_add(devices_buf_t *b, const char *s)
{
    if (s == NULL)
        return;
    if (strpbrk(s, ",\"\r\n") == NULL) {
        devices_buf_add(b, s, strlen(s));
        return;
    }
    devices_buf_add(b, "\"", 1);
    for (const char *p = s; *p; p++) {
        devices_buf_add(b, p, 1);
        if (*p == '"')
            devices_buf_add(b, "\"", 1); /* doubled inside quotes */
    }
    devices_buf_add(b, "\"", 1);
}

void devices_csv_header(devices_buf_t *b)
{
    static const char h[] =
        "id,password_hash,token_hash,cert_fingerprint,tags,attributes,disabled\n";
    devices_buf_add(b, h, sizeof(h) - 1);
}

void devices_csv_line(devices_buf_t *b, const json_t *d)
{
    csv_add(b, json_string_value(json_object_get(d, "id")));
    static const char *const f[] = {"password_hash", "token_hash", "cert_fingerprint"};
    for (size_t i = 0; i < 3; i++) {
        devices_buf_add(b, ",", 1);
        csv_add(b, json_string_value(json_object_get(d, f[i])));
    }
    devices_buf_add(b, ",", 1);
    json_t *tags = json_object_get(d, "tags");
    if (json_object_size(tags)) {
        devices_buf_t t = {0};
        const char *k;
        json_t *v;
        int first = 1;
        json_object_foreach(tags, k, v)
        {
            if (!first)
                devices_buf_add(&t, ";", 1);
            first = 0;
            devices_buf_add(&t, k, strlen(k));
            devices_buf_add(&t, "=", 1);
            const char *s = json_string_value(v);
            devices_buf_add(&t, s ? s : "", s ? strlen(s) : 0);
        }
        csv_add(b, t.p);
        free(t.p);
    }
    devices_buf_add(b, ",", 1);
    json_t *attrs = json_object_get(d, "attributes");
    if (json_object_size(attrs)) {
        char *s = json_dumps(attrs, JSON_COMPACT | JSON_SORT_KEYS);
        csv_add(b, s);
        free(s);
    }
    devices_buf_add(b, ",", 1);
    devices_buf_add(b, json_is_true(json_object_get(d, "disabled")) ? "true\n" : "false\n",
                    json_is_true(json_object_get(d, "disabled")) ? 5 : 6);
}
