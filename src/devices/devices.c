/* devices.c -- the device registry: the `devices:` module, its in-memory
 * table, its records in the store and its REST API (docs/devices.md).
 *
 * A device is one JSON record (the canonical form, also what the store
 * keeps under "\0dev/" ID):
 *   {"id", "password_hash"?, "token_hash"?, "cert_fingerprint"?,
 *    "tags": {k: v}, "attributes": {...}, "disabled", "created_ms",
 *    "updated_ms"}
 * password_hash is in the password file's format (auth_passwd.h: a plain
 * password given to the API is hashed with auth_passwd_hash), token_hash
 * the SHA-256 of the token in hex, cert_fingerprint the certificate's
 * SHA-256 in lower-case hex.
 *
 * The table: chained buckets, SipHash of the id under a per-process key,
 * grown by doubling; all of it under st->lock (a rwlock: the API's
 * readers share it, a change takes it for writing).  Changes run on the
 * API's threads: the store first (store_submit_sync, so a 2xx answer
 * survives a restart when persistence is on), then the table.  Loaded from
 * the store at init (main thread, before the workers run).
 *
 * Off (devices.enabled: false, the default): no state, no routes answer
 * but 409, nothing is loaded; nothing costs anything.
 */
#include "devices.h"
#include "devices_int.h"

#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api_snap.h"
#include "auth_chain.h"
#include "auth_passwd.h"
#include "log.h"
#include "store.h"
#include "util.h"

#define DEV_KEY_PREFIX "\0dev/"
#define DEV_KEY_PREFIX_LEN 5u
#define DEV_ID_MAX 65535u

/* ---- the table (callers hold st->lock, or st->wmu to read) ---- */

static const char *ent_id(const dev_ent_t *e)
{
    return json_string_value(json_object_get(e->rec, "id"));
}

dev_ent_t *devices_find(devices_state_t *st, const char *id, uint64_t *hash_out)
{
    uint64_t h = an_siphash(st->key, id, strlen(id));
    if (hash_out)
        *hash_out = h;
    for (dev_ent_t *e = st->b[h & (st->nb - 1)]; e; e = e->next)
        if (e->hash == h && strcmp(ent_id(e), id) == 0)
            return e;
    return NULL;
}

static void tab_grow(devices_state_t *st)
{
    size_t nb = st->nb * 2;
    dev_ent_t **b = an_calloc(nb, sizeof(*b));
    for (size_t i = 0; i < st->nb; i++)
        for (dev_ent_t *e = st->b[i], *nx; e; e = nx) {
            nx = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    free(st->b);
    st->b = b;
    st->nb = nb;
}

/* Put rec (its reference taken) in place of the device of the same id. */
static void tab_put(devices_state_t *st, json_t *rec)
{
    uint64_t h;
    dev_ent_t *e = devices_find(st, json_string_value(json_object_get(rec, "id")), &h);
    if (e) {
        json_decref(e->rec);
        e->rec = rec;
        return;
    }
    if (st->n >= st->nb)
        tab_grow(st);
    e = an_calloc(1, sizeof(*e));
    e->hash = h;
    e->rec = rec;
    e->next = st->b[h & (st->nb - 1)];
    st->b[h & (st->nb - 1)] = e;
    st->n++;
}

static int tab_del(devices_state_t *st, const char *id)
{
    uint64_t h = an_siphash(st->key, id, strlen(id));
    for (dev_ent_t **pp = &st->b[h & (st->nb - 1)]; *pp; pp = &(*pp)->next) {
        dev_ent_t *e = *pp;
        if (e->hash == h && strcmp(ent_id(e), id) == 0) {
            *pp = e->next;
            json_decref(e->rec);
            free(e);
            st->n--;
            return 1;
        }
    }
    return 0;
}

/* ---- the store ---- */

static void store_key(devices_buf_t *k, const char *id)
{
    k->len = 0;
    devices_buf_add(k, DEV_KEY_PREFIX, DEV_KEY_PREFIX_LEN);
    devices_buf_add(k, id, strlen(id));
}

static void batch_put(store_batch_t *b, const json_t *rec, devices_buf_t *k)
{
    store_key(k, json_string_value(json_object_get(rec, "id")));
    char *v = json_dumps(rec, JSON_COMPACT);
    store_batch_put(b, k->p, k->len, v, strlen(v));
    free(v);
}

static int store_commit(devices_state_t *st, store_batch_t *b)
{
    if (st->srv->store == NULL) {
        store_batch_free(b);
        return 0;
    }
    return store_submit_sync(st->srv->store, b);
}

static int load_one(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    devices_state_t *st = ud;
    json_error_t je;
    json_t *rec = json_loadb(v, vl, 0, &je);
    if (rec == NULL || !json_is_string(json_object_get(rec, "id"))) {
        log_warn("devices: a malformed record in the store (%.*s): skipped",
                 (int)(kl > 80 ? 80 : kl - DEV_KEY_PREFIX_LEN),
                 (const char *)k + DEV_KEY_PREFIX_LEN);
        json_decref(rec);
        return 0;
    }
    tab_put(st, rec);
    return 0;
}

/* ---- records from the API's input ---- */

static int hexval(int c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

static void sha256_hex(const char *s, size_t n, char out[65])
{
    uint8_t d[SHA256_DIGEST_LENGTH];
    SHA256((const uint8_t *)s, n, d);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

#define FAIL(field, ...)                                                                           \
    do {                                                                                           \
        int o_ = line ? snprintf(err, errlen, "line %u: field %s: ", line, field)                  \
                      : snprintf(err, errlen, "%s: ", field);                                      \
        snprintf(err + o_, errlen - (size_t)o_, __VA_ARGS__);                                      \
        *bad_field = field;                                                                        \
        goto fail;                                                                                 \
    } while (0)

/* Apply the fields of `in` to rec (a new record or a copy of the old one):
 * 0, or -1 with err (prefixed "line N: field F: " when line) and
 * *bad_field.  *plain counts plain passwords hashed. */
static int rec_apply(json_t *rec, json_t *in, uint32_t line, int allow_plain, uint32_t *plain,
                     char *err, size_t errlen, const char **bad_field)
{
    const char *k;
    json_t *v;
    json_object_foreach(in, k, v)
    {
        if (strcmp(k, "id") == 0) {
            const char *id = json_string_value(v);
            size_t n = json_string_length(v);
            if (id == NULL || n == 0 || n > DEV_ID_MAX || strlen(id) != n)
                FAIL("id", "a non-empty string of at most %u bytes", DEV_ID_MAX);
            json_object_set(rec, "id", v);
        } else if (strcmp(k, "password") == 0) {
            const char *pw = json_string_value(v);
            if (pw == NULL || *pw == '\0')
                FAIL("password", "a non-empty string");
            if (!allow_plain)
                FAIL("password", "more plain passwords than devices.import_plain_max: give "
                                 "password_hash (`antenna passwd` format) in a bulk import");
            char h[AUTH_PASSWD_HASH_MAX];
            if (auth_passwd_hash((const uint8_t *)pw, json_string_length(v), AUTH_PASSWD_ITERATIONS,
                                 h, sizeof(h)) < 0)
                FAIL("password", "cannot hash it");
            (*plain)++;
            json_object_set_new(rec, "password_hash", json_string(h));
        } else if (strcmp(k, "password_hash") == 0) {
            const char *why = "";
            auth_passwd_rec_t pr;
            if (!json_is_string(v) || auth_passwd_decode(json_string_value(v), &pr, &why) < 0)
                FAIL("password_hash", "not a password file hash (%s)", why);
            json_object_set(rec, "password_hash", v);
        } else if (strcmp(k, "token") == 0) {
            if (!json_is_string(v) || json_string_length(v) == 0)
                FAIL("token", "a non-empty string");
            char h[65];
            sha256_hex(json_string_value(v), json_string_length(v), h);
            json_object_set_new(rec, "token_hash", json_string(h));
        } else if (strcmp(k, "token_hash") == 0 || strcmp(k, "cert_fingerprint") == 0) {
            const char *s = json_string_value(v);
            char h[65];
            size_t o = 0;
            for (; s && *s && o < 64; s++) {
                if (*s == ':')
                    continue;
                if (hexval(*s) < 0)
                    break;
                h[o++] = (char)(*s >= 'A' && *s <= 'F' ? *s - 'A' + 'a' : *s);
            }
            if (s == NULL || *s || o != 64)
                FAIL(k, "a SHA-256 in hex (64 digits, colons allowed)");
            h[64] = '\0';
            json_object_set_new(rec, k, json_string(h));
        } else if (strcmp(k, "tags") == 0) {
            if (!json_is_object(v))
                FAIL("tags", "an object of strings");
            const char *tk;
            json_t *tv;
            json_object_foreach(v, tk, tv)
            {
                if (!json_is_string(tv) || *tk == '\0' || strpbrk(tk, "=;,") ||
                    strpbrk(json_string_value(tv), ";,"))
                    FAIL("tags",
                         "\"%.40s\": a string value; keys without = ; , and values "
                         "without ; ,",
                         tk);
            }
            json_object_set(rec, "tags", v);
        } else if (strcmp(k, "attributes") == 0) {
            if (!json_is_object(v))
                FAIL("attributes", "a JSON object");
            json_object_set(rec, "attributes", v);
        } else if (strcmp(k, "disabled") == 0) {
            if (!json_is_boolean(v))
                FAIL("disabled", "true or false");
            json_object_set(rec, "disabled", v);
        } else if (strcmp(k, "created_ms") == 0 || strcmp(k, "updated_ms") == 0 ||
                   strcmp(k, "credentials") == 0) {
            /* as exported or shown: ignored */
        } else {
            FAIL(k, "an unknown field");
        }
    }
    return 0;
fail:
    return -1;
}
#undef FAIL

static json_t *rec_new(uint64_t now)
{
    return json_pack("{s:o,s:o,s:b,s:I,s:I}", "tags", json_object(), "attributes", json_object(),
                     "disabled", 0, "created_ms", (json_int_t)now, "updated_ms", (json_int_t)now);
}

/* What GET shows: the record without its secrets, the kinds of credentials. */
static json_t *rec_show(const json_t *rec)
{
    json_t *o = json_deep_copy(rec);
    json_t *c = json_array();
    if (json_object_get(o, "password_hash"))
        json_array_append_new(c, json_string("password"));
    if (json_object_get(o, "token_hash"))
        json_array_append_new(c, json_string("token"));
    if (json_object_get(o, "cert_fingerprint"))
        json_array_append_new(c, json_string("certificate"));
    json_object_del(o, "password_hash");
    json_object_del(o, "token_hash");
    json_object_set_new(o, "credentials", c);
    return o;
}

/* rec_show with the entry's presence (st->lock held). */
static json_t *ent_show(devices_state_t *st, dev_ent_t *e)
{
    json_t *o = rec_show(e->rec);
    json_object_set_new(o, "presence", devices_presence_json(st, e));
    return o;
}

/* ---- the API ---- */

/* A device that was just disabled or deleted loses its connection: the
 * management API's kick (API_JOB_KICK on the home worker of the client id
 * that is the device id; MQTT 5 DISCONNECT 0x98, 3.1.1 the connection
 * closed).  API thread, no lock held.  The client_disconnected event then
 * marks the presence disconnected. */
static void kick(devices_state_t *st, const char *id, const char *why)
{
    api_job_t *job = api_job_new(API_JOB_KICK);
    job->client_id = an_strndup(id, strlen(id));
    int home = (int)worker_home(st->srv, (const uint8_t *)id, strlen(id));
    int rc = api_job_submit(st->srv, job, home, st->srv->conf.api_timeout_ms);
    int found = rc == 0 && job->found;
    api_job_release(job);
    if (found)
        log_info("devices: device '%.200s' %s: its connection is closed", id, why);
    else if (rc < 0)
        log_warn("devices: device '%.200s' %s: its worker did not answer in time, a connection "
                 "may remain",
                 id, why);
}

static int off(json_t **out)
{
    return module_api_error(out, 409, "devices_disabled",
                            "the device registry is off "
                            "(devices.enabled)");
}

static json_t *body_json(const module_api_req_t *req, json_t **out, int *status)
{
    json_error_t je;
    json_t *j = req->body ? json_loadb(req->body, req->body_len, 0, &je) : NULL;
    if (j == NULL || !json_is_object(j)) {
        *status = module_api_error(out, 400, "bad_request", "the body is not a JSON object%s%s",
                                   j || !req->body ? "" : ": ", j || !req->body ? "" : je.text);
        json_decref(j);
        return NULL;
    }
    return j;
}

static int bad_device(json_t **out, const char *err, const char *field)
{
    *out = json_pack("{s:s,s:s,s:s}", "error", err, "code", "bad_device", "field", field);
    return 400;
}

static int cmp_ids(const void *a, const void *b)
{
    return strcmp(ent_id(*(dev_ent_t *const *)a), ent_id(*(dev_ent_t *const *)b));
}

/* The tag filter k=v[,k=v...]: 1 well formed (or absent), else 0. */
static int tag_filter_ok(const char *tag)
{
    for (const char *p = tag; p && *p;) {
        size_t len = strcspn(p, ",");
        const char *eq = memchr(p, '=', len);
        if (eq == NULL || eq == p)
            return 0;
        p += len;
        if (*p == ',')
            p++;
    }
    return 1;
}

/* The entries (sorted by id) that pass the list's filters; st->lock held. */
static dev_ent_t **select_devices(devices_state_t *st, const module_api_req_t *req, size_t *n)
{
    const char *prefix = module_api_query(req, "prefix");
    const char *tag = module_api_query(req, "tag");
    const char *conn = module_api_query(req, "connected");
    int want_conn = conn == NULL ? -1 : strcmp(conn, "true") == 0 ? 1 : 0;
    size_t pl = prefix ? strlen(prefix) : 0;
    dev_ent_t **v = an_malloc((st->n ? st->n : 1) * sizeof(*v));
    size_t m = 0;
    for (size_t i = 0; i < st->nb; i++)
        for (dev_ent_t *e = st->b[i]; e; e = e->next) {
            if (pl && strncmp(ent_id(e), prefix, pl) != 0)
                continue;
            if (want_conn >= 0 && devices_presence_connected(e) != want_conn)
                continue;
            if (tag) { /* k=v[,k=v...]: all of them */
                json_t *tags = json_object_get(e->rec, "tags");
                const char *p = tag;
                int ok = 1;
                while (ok && *p) {
                    size_t len = strcspn(p, ",");
                    const char *eq = memchr(p, '=', len);
                    if (eq == NULL) {
                        ok = 0;
                        break;
                    }
                    char *key = an_strndup(p, (size_t)(eq - p));
                    const char *val = json_string_value(json_object_get(tags, key));
                    free(key);
                    size_t vl = len - (size_t)(eq - p) - 1;
                    ok = val && strlen(val) == vl && memcmp(val, eq + 1, vl) == 0;
                    p += len;
                    if (*p == ',')
                        p++;
                }
                if (!ok)
                    continue;
            }
            v[m++] = e;
        }
    qsort(v, m, sizeof(*v), cmp_ids);
    *n = m;
    return v;
}

static int uint_arg(const module_api_req_t *req, const char *key, long dflt, long max, long *out)
{
    const char *s = module_api_query(req, key);
    if (s == NULL) {
        *out = dflt;
        return 0;
    }
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end || v < 1 || v > max)
        return -1;
    *out = v;
    return 0;
}

static int api_list(module_inst_t *mi, const module_api_req_t *req, json_t **out)
{
    devices_state_t *st = mi->state;
    if (st == NULL)
        return off(out);
    if (strcmp(req->method, "GET") == 0) {
        long page, limit;
        if (uint_arg(req, "page", 1, 1000000000L, &page) < 0 ||
            uint_arg(req, "limit", 100, 1000, &limit) < 0)
            return module_api_error(out, 400, "bad_request", "page and limit: 1.. (limit <= 1000)");
        const char *conn = module_api_query(req, "connected");
        if (conn && strcmp(conn, "true") != 0 && strcmp(conn, "false") != 0)
            return module_api_error(out, 400, "bad_request", "connected: true or false");
        if (!tag_filter_ok(module_api_query(req, "tag")))
            return module_api_error(out, 400, "bad_request", "tag: KEY=VALUE[,KEY=VALUE...]");
        pthread_rwlock_rdlock(&st->lock);
        size_t n;
        dev_ent_t **v = select_devices(st, req, &n);
        json_t *data = json_array();
        size_t first = (size_t)(page - 1) * (size_t)limit;
        for (size_t i = first; i < n && i < first + (size_t)limit; i++)
            json_array_append_new(data, ent_show(st, v[i]));
        pthread_rwlock_unlock(&st->lock);
        free(v);
        *out = json_pack("{s:i,s:i,s:i,s:I,s:o}", "page", (int)page, "limit", (int)limit, "count",
                         (int)json_array_size(data), "total", (json_int_t)n, "data", data);
        return 200;
    }
    /* POST: create */
    int status = 0;
    json_t *in = body_json(req, out, &status);
    if (in == NULL)
        return status;
    char err[256];
    const char *field = "-";
    uint32_t plain = 0;
    json_t *rec = rec_new(an_wall_ms());
    if (rec_apply(rec, in, 0, 1, &plain, err, sizeof(err), &field) < 0) {
        status = bad_device(out, err, field);
        goto done;
    }
    const char *id = json_string_value(json_object_get(rec, "id"));
    if (id == NULL) {
        status = bad_device(out, "id: required", "id");
        goto done;
    }
    pthread_mutex_lock(&st->wmu);
    if (devices_find(st, id, NULL)) {
        pthread_mutex_unlock(&st->wmu);
        status = module_api_error(out, 409, "exists", "device %.200s exists (PUT changes it)", id);
        goto done;
    }
    devices_buf_t k = {0};
    store_batch_t *b = store_batch_new();
    batch_put(b, rec, &k);
    free(k.p);
    int rc = store_commit(st, b);
    if (rc < 0) {
        pthread_mutex_unlock(&st->wmu);
        status = module_api_error(out, 503, "store", "cannot store: %s", store_strerror(rc));
        goto done;
    }
    pthread_rwlock_wrlock(&st->lock);
    tab_put(st, json_incref(rec));
    pthread_rwlock_unlock(&st->lock);
    pthread_mutex_unlock(&st->wmu);
    *out = rec_show(rec);
    status = 201;
done:
    json_decref(rec);
    json_decref(in);
    return status;
}

static int api_device(module_inst_t *mi, const module_api_req_t *req, json_t **out)
{
    devices_state_t *st = mi->state;
    if (st == NULL)
        return off(out);
    char *id = an_strndup(req->tail, strlen(req->tail));
    const char *verb = NULL;
    char *slash = strchr(id, '/');
    if (slash) {
        *slash = '\0';
        verb = slash + 1;
    }
    int status = 0;
    json_t *in = NULL, *rec = NULL;
    int write = strcmp(req->method, "GET") != 0;
    if (verb && strncmp(verb, "shadow", 6) == 0 && (verb[6] == '\0' || verb[6] == '/')) {
        status = devices_shadow_api(st, id, verb, req, out);
        goto done;
    }
    if (verb && (strcmp(req->method, "POST") != 0 ||
                 (strcmp(verb, "enable") != 0 && strcmp(verb, "disable") != 0))) {
        status = module_api_error(out, 404, "not_found", "no endpoint devices/%.200s", req->tail);
        goto done;
    }
    if (!verb && strcmp(req->method, "POST") == 0) {
        status = module_api_error(out, 405, "method_not_allowed", "GET, PUT or DELETE");
        goto done;
    }
    int put = strcmp(req->method, "PUT") == 0 || strcmp(req->method, "PATCH") == 0;
    if (put && (in = body_json(req, out, &status)) == NULL)
        goto done;
    if (write)
        pthread_mutex_lock(&st->wmu);
    else
        pthread_rwlock_rdlock(&st->lock);
    dev_ent_t *e = devices_find(st, id, NULL);
    if (e == NULL) {
        if (write)
            pthread_mutex_unlock(&st->wmu);
        else
            pthread_rwlock_unlock(&st->lock);
        status = module_api_error(out, 404, "not_found", "no device %.200s", id);
        goto done;
    }
    if (!write) {
        *out = ent_show(st, e);
        pthread_rwlock_unlock(&st->lock);
        status = 200;
        goto done;
    }
    int was_disabled = json_is_true(json_object_get(e->rec, "disabled"));
    store_batch_t *b = store_batch_new();
    devices_buf_t k = {0};
    if (strcmp(req->method, "DELETE") == 0) {
        store_key(&k, id);
        store_batch_del(b, k.p, k.len);
    } else {
        rec = json_deep_copy(e->rec);
        if (verb) {
            json_object_set_new(rec, "disabled", json_boolean(strcmp(verb, "disable") == 0));
        } else {
            char err[256];
            const char *field = "-";
            uint32_t plain = 0;
            json_t *nid = json_object_get(in, "id");
            if ((nid && (!json_is_string(nid) || strcmp(json_string_value(nid), id) != 0)) ||
                rec_apply(rec, in, 0, 1, &plain, err, sizeof(err), &field) < 0) {
                pthread_mutex_unlock(&st->wmu);
                store_batch_free(b);
                status = nid && field[0] == '-' ? bad_device(out, "id: does not change", "id")
                                                : bad_device(out, err, field);
                goto done;
            }
        }
        json_object_set_new(rec, "updated_ms", json_integer((json_int_t)an_wall_ms()));
        batch_put(b, rec, &k);
    }
    free(k.p);
    int rc = store_commit(st, b);
    if (rc < 0) {
        pthread_mutex_unlock(&st->wmu);
        status = module_api_error(out, 503, "store", "cannot store: %s", store_strerror(rc));
        goto done;
    }
    pthread_rwlock_wrlock(&st->lock);
    if (rec)
        tab_put(st, json_incref(rec));
    else
        tab_del(st, id);
    pthread_rwlock_unlock(&st->lock);
    pthread_mutex_unlock(&st->wmu);
    /* always asked (not only when the presence says connected): a client
     * that connected before its device was created has no presence */
    if (rec == NULL) {
        devices_shadow_forget(st, id);
        kick(st, id, "deleted");
    } else if (!was_disabled && json_is_true(json_object_get(rec, "disabled")))
        kick(st, id, "disabled");
    if (rec) {
        *out = rec_show(rec);
        status = 200;
    } else {
        status = 204;
    }
done:
    json_decref(rec);
    json_decref(in);
    free(id);
    return status;
}

typedef struct {
    json_t *recs; /* the prepared records, in order */
    json_t *seen; /* id -> line */
    uint32_t plain, plain_max;
    uint64_t now;
    const char *field;
} import_t;

static int import_rec(void *ud, uint32_t line, json_t *in, char *err, size_t errlen)
{
    import_t *im = ud;
    json_t *rec = rec_new(im->now);
    im->field = "-";
    if (rec_apply(rec, in, line, im->plain < im->plain_max, &im->plain, err, errlen, &im->field) <
        0)
        goto fail;
    const char *id = json_string_value(json_object_get(rec, "id"));
    if (id == NULL) {
        snprintf(err, errlen, "line %u: field id: required", line);
        im->field = "id";
        goto fail;
    }
    json_t *prev = json_object_get(im->seen, id);
    if (prev) {
        snprintf(err, errlen, "line %u: field id: %.100s is also on line %" JSON_INTEGER_FORMAT,
                 line, id, json_integer_value(prev));
        im->field = "id";
        goto fail;
    }
    json_object_set_new(im->seen, id, json_integer(line));
    json_array_append_new(im->recs, rec);
    return 0;
fail:
    json_decref(rec);
    return -1;
}

static int api_import(module_inst_t *mi, const module_api_req_t *req, json_t **out)
{
    devices_state_t *st = mi->state;
    const devices_conf_t *c = mi->conf;
    if (st == NULL)
        return off(out);
    const char *f = module_api_query(req, "format");
    const char *body = req->body ? req->body : "";
    const char *ct = req->content_type ? req->content_type : "";
    if (f == NULL && strncasecmp(ct, "text/csv", 8) == 0)
        f = "csv";
    else if (f == NULL && (strncasecmp(ct, "application/x-ndjson", 20) == 0 ||
                           strncasecmp(ct, "application/jsonl", 17) == 0))
        f = "jsonl";
    int fmt = f == NULL                 ? devices_sniff(body, req->body_len)
              : strcmp(f, "jsonl") == 0 ? DEVICES_FMT_JSONL
              : strcmp(f, "csv") == 0   ? DEVICES_FMT_CSV
                                        : 0;
    if (fmt == 0)
        return module_api_error(out, 400, "bad_request", "format: jsonl or csv");
    json_t *kicks = NULL; /* connected devices the import disables */
    import_t im = {.recs = json_array(),
                   .seen = json_object(),
                   .plain_max = c->import_plain_max,
                   .now = an_wall_ms()};
    char err[256];
    int status;
    if (devices_parse(body, req->body_len, fmt, import_rec, &im, err, sizeof(err)) < 0) {
        unsigned line = 0;
        char field[64] = "-";
        sscanf(err, "line %u: field %63[^:]", &line, field); /* the parser's form */
        *out = json_pack("{s:s,s:s,s:i,s:s}", "error", err, "code", "bad_import", "line", (int)line,
                         "field", field);
        status = 400;
        goto done;
    }
    size_t n = json_array_size(im.recs), created = 0;
    store_batch_t *b = store_batch_new();
    devices_buf_t k = {0};
    kicks = json_array();
    pthread_mutex_lock(&st->wmu);
    for (size_t i = 0; i < n; i++) {
        json_t *rec = json_array_get(im.recs, i);
        dev_ent_t *e = devices_find(st, json_string_value(json_object_get(rec, "id")), NULL);
        if (e) { /* a replaced device keeps its creation time */
            json_object_set(rec, "created_ms", json_object_get(e->rec, "created_ms"));
            if (json_is_true(json_object_get(rec, "disabled")) &&
                !json_is_true(json_object_get(e->rec, "disabled")) && devices_presence_connected(e))
                json_array_append(kicks, json_object_get(rec, "id"));
        } else {
            created++;
        }
        batch_put(b, rec, &k);
    }
    free(k.p);
    int rc = store_commit(st, b);
    if (rc < 0) {
        pthread_mutex_unlock(&st->wmu);
        status = module_api_error(out, 503, "store", "cannot store: %s", store_strerror(rc));
        goto done;
    }
    pthread_rwlock_wrlock(&st->lock);
    for (size_t i = 0; i < n; i++)
        tab_put(st, json_incref(json_array_get(im.recs, i)));
    size_t total = st->n;
    pthread_rwlock_unlock(&st->lock);
    pthread_mutex_unlock(&st->wmu);
    size_t ki;
    json_t *kid;
    json_array_foreach(kicks, ki, kid)
    {
        kick(st, json_string_value(kid), "disabled by an import");
    }
    *out = json_pack("{s:I,s:I,s:I,s:I}", "imported", (json_int_t)n, "created", (json_int_t)created,
                     "replaced", (json_int_t)(n - created), "total", (json_int_t)total);
    status = 200;
done:
    json_decref(kicks);
    json_decref(im.recs);
    json_decref(im.seen);
    return status;
}

static int api_export(module_inst_t *mi, const module_api_req_t *req, json_t **out)
{
    devices_state_t *st = mi->state;
    if (st == NULL)
        return off(out);
    const char *f = module_api_query(req, "format");
    int csv = f && strcmp(f, "csv") == 0;
    if (f && !csv && strcmp(f, "jsonl") != 0)
        return module_api_error(out, 400, "bad_request", "format: jsonl or csv");
    if (!tag_filter_ok(module_api_query(req, "tag")))
        return module_api_error(out, 400, "bad_request", "tag: KEY=VALUE[,KEY=VALUE...]");
    devices_buf_t t = {0};
    if (csv)
        devices_csv_header(&t);
    pthread_rwlock_rdlock(&st->lock);
    size_t n;
    dev_ent_t **v = select_devices(st, req, &n);
    for (size_t i = 0; i < n; i++) {
        if (csv) {
            devices_csv_line(&t, v[i]->rec);
            continue;
        }
        char *s = json_dumps(v[i]->rec, JSON_COMPACT);
        devices_buf_add(&t, s, strlen(s));
        devices_buf_add(&t, "\n", 1);
        free(s);
    }
    pthread_rwlock_unlock(&st->lock);
    free(v);
    *out = module_api_text(csv ? "text/csv" : "application/x-ndjson", t.p ? t.p : "", t.len);
    free(t.p);
    return 200;
}

static const module_api_route_t devices_routes[] = {
    {"devices", 0, MODULE_API_GET | MODULE_API_POST, api_list},
    {"devices/import", 0, MODULE_API_POST, api_import},
    {"devices/export", 0, MODULE_API_GET, api_export},
    {"devices/", 1,
     MODULE_API_GET | MODULE_API_PUT | MODULE_API_PATCH | MODULE_API_DELETE | MODULE_API_POST,
     api_device},
    {NULL, 0, 0, NULL},
};

/* ---- the module ---- */

static void dv_defaults(void *conf)
{
    devices_conf_t *c = conf;
    c->enabled = 0;
    c->auth_unknown = DEVICES_UNKNOWN_PASS;
    c->import_plain_max = 1000;
    c->shadow_enabled = 1;
    c->shadow_max_bytes = 16384;
    snprintf(c->shadow_prefix, sizeof(c->shadow_prefix), "$shadow");
}

static int load_shadow(conf_sec_t *s, void *conf)
{
    devices_conf_t *c = conf;
    if (conf_sec_bool(s, "enabled", &c->shadow_enabled) < 0 ||
        conf_sec_u32(s, "max_bytes", 2, 16777216, &c->shadow_max_bytes) < 0 ||
        conf_sec_str(s, "topic_prefix", c->shadow_prefix, sizeof(c->shadow_prefix),
                     CONF_SEC_NONEMPTY) < 0)
        return -1;
    if (c->shadow_prefix[0] != '$' || strpbrk(c->shadow_prefix, "+#") ||
        c->shadow_prefix[strlen(c->shadow_prefix) - 1] == '/')
        return conf_sec_fail(s, "topic_prefix",
                             "\"%s\": a topic that starts with '$' (out of reach of "
                             "wildcards, guarded), without '+', '#' or a trailing '/'",
                             c->shadow_prefix);
    return 0;
}

static int dv_load(conf_sec_t *s, void *conf)
{
    devices_conf_t *c = conf;
    if (conf_sec_bool(s, "enabled", &c->enabled) < 0 ||
        conf_sec_u32(s, "import_plain_max", 0, 1000000, &c->import_plain_max) < 0 ||
        conf_sec_map(s, "shadow", load_shadow, c) < 0)
        return -1;
    char unknown[8] = "";
    if (conf_sec_str(s, "auth_unknown", unknown, sizeof(unknown), 0) < 0)
        return -1;
    if (unknown[0] && strcmp(unknown, "pass") != 0 && strcmp(unknown, "deny") != 0)
        return conf_sec_fail(s, "auth_unknown", "\"%s\": pass or deny", unknown);
    if (unknown[0])
        c->auth_unknown =
            strcmp(unknown, "deny") == 0 ? DEVICES_UNKNOWN_DENY : DEVICES_UNKNOWN_PASS;
    return 0;
}

static void dv_walk(const void *conf, conf_visit_fn fn, void *ud)
{
    const devices_conf_t *c = conf;
    fn(ud, CONF_V_BOOL, "enabled", NULL, c->enabled);
    fn(ud, CONF_V_STR, "auth_unknown", c->auth_unknown ? "deny" : "pass", 0);
    fn(ud, CONF_V_UINT, "import_plain_max", NULL, c->import_plain_max);
    fn(ud, CONF_V_SECTION, "shadow", NULL, 0);
    fn(ud, CONF_V_BOOL, "enabled", NULL, c->shadow_enabled);
    fn(ud, CONF_V_UINT, "max_bytes", NULL, c->shadow_max_bytes);
    fn(ud, CONF_V_STR, "topic_prefix", c->shadow_prefix, 0);
    fn(ud, CONF_V_END, NULL, NULL, 0);
}

static void dv_free(module_inst_t *mi)
{
    devices_state_t *st = mi->state;
    if (st == NULL)
        return;
    devices_shadow_free(st);
    for (size_t i = 0; i < st->nb; i++)
        for (dev_ent_t *e = st->b[i], *nx; e; e = nx) {
            nx = e->next;
            json_decref(e->rec);
            free(e);
        }
    free(st->b);
    pthread_rwlock_destroy(&st->lock);
    pthread_mutex_destroy(&st->wmu);
    free(st);
    mi->state = NULL;
}

static int dv_init(module_inst_t *mi)
{
    const devices_conf_t *c = mi->conf;
    auth_backend_t *ab = mi->srv->auth ? auth_chain_backend(mi->srv->auth, "devices") : NULL;
    if (!c->enabled) {
        if (ab) {
            log_error("auth.chain names devices but the device registry is off "
                      "(devices.enabled: false)");
            return -1;
        }
        return 0;
    }
    devices_state_t *st = an_calloc(1, sizeof(*st));
    pthread_rwlock_init(&st->lock, NULL);
    pthread_mutex_init(&st->wmu, NULL);
    st->nb = 1024;
    st->b = an_calloc(st->nb, sizeof(*st->b));
    st->srv = mi->srv;
    st->conf = c;
    an_random_key(st->key);
    mi->state = st;
    if (mi->srv->store) {
        int rc = store_scan(mi->srv->store, DEV_KEY_PREFIX, DEV_KEY_PREFIX_LEN, load_one, st);
        if (rc < 0) {
            log_error("devices: cannot read the registry from the store: %s", store_strerror(rc));
            return -1;
        }
    }
    if (devices_shadow_init(st) < 0)
        return -1;
    if (devices_presence_init(st) < 0) {
        log_error("devices: cannot listen to the connection events");
        return -1;
    }
    if (ab)
        devices_auth_bind(ab, st);
    log_info("devices: %zu devices in the registry%s", st->n,
             ab ? "; auth.chain has the devices backend" : "");
    return 0;
}

const module_t devices_module = {
    .name = "devices",
    .section = "devices",
    .conf_size = sizeof(devices_conf_t),
    .conf_defaults = dv_defaults,
    .conf_load = dv_load,
    .conf_walk = dv_walk,
    .init = dv_init,
    .free = dv_free,
    .api_routes = devices_routes,
};

/* devices.h: a tag selector over the registry (the commands module's group
 * commands). */
long devices_each_tagged(server_t *srv, json_t *tags, devices_id_fn cb, void *ud)
{
    devices_state_t *st = NULL;
    for (uint32_t i = 0; i < srv->nmodules && st == NULL; i++)
        if (srv->modules[i].m == &devices_module)
            st = srv->modules[i].state;
    if (st == NULL)
        return -1;
    long n = 0;
    pthread_rwlock_rdlock(&st->lock);
    for (size_t i = 0; i < st->nb; i++)
        for (dev_ent_t *e = st->b[i]; e; e = e->next) {
            json_t *have = json_object_get(e->rec, "tags"), *v;
            const char *k;
            int ok = 1;
            json_object_foreach(tags, k, v)
            {
                const char *hv = json_string_value(json_object_get(have, k));
                if (hv == NULL || !json_is_string(v) || strcmp(hv, json_string_value(v)) != 0) {
                    ok = 0;
                    break;
                }
            }
            if (ok) {
                cb(ud, ent_id(e));
                n++;
            }
        }
    pthread_rwlock_unlock(&st->lock);
    return n;
}
