/* sink_kafka.c -- the Kafka sink driver (sink.h) on librdkafka.
 *
 * Configuration (a sink with `type: kafka`, conf_load on the main thread):
 * bootstrap_servers, topic / key / payload templates (${column} of the
 * rule's output row; the key defaults to ${clientid}), headers (name:
 * template), acks, enable_idempotence, compression, linger, batch_size,
 * message_timeout, tls {ca_file, cert_file, key_file}, sasl {mechanism,
 * username, password} and a raw `properties` map handed to librdkafka
 * as is.  The whole librdkafka configuration is built once at load time,
 * so a key librdkafka refuses is an error naming file:line:key.
 *
 * Actions (action_init on the thread that builds the rule) may override
 * topic, key, payload and headers; their templates are compiled once into
 * segments.  render (the evaluating worker) writes them straight into the
 * framework's sink_out_t: no allocation per row (the row's JSON is written
 * by kf_json, not by jansson's dump, which allocates).  The record's key
 * part carries the destination topic in front of the Kafka key,
 * [u8 length][topic][key]: the topic is rendered per row, and the record
 * has no other place for it (an encoding private to this driver).
 *
 * The sink's thread owns the producer (kf_drv_t): send() produces each
 * record with rd_kafka_producev, the record as the message's opaque, its
 * value without a copy (the record lives until sink_done).  A full local
 * queue (RD_KAFKA_RESP_ERR__QUEUE_FULL) parks that record and every later
 * one, in order, in a ring that the next poll() produces first: no
 * spinning, and one key's records keep their order.  poll() serves
 * librdkafka's main queue; its delivery reports complete the records:
 * delivered -> SINK_OK, refused for good (message too large, invalid
 * record or topic, not authorised) -> SINK_FAIL, anything else (time-outs,
 * brokers down, purges) -> SINK_RETRY.  poll() sleeps in poll(2) on one
 * eventfd that librdkafka signals when its queue gets an event and that
 * wake() (any thread) writes to.  A fatal idempotent-producer error
 * replaces the producer (its records reported RETRY).  close() flushes for
 * at most KF_CLOSE_FLUSH_MS, then purges what is left (RETRY).
 *
 * Metrics: the producer's queue length (an atomic the sink's thread
 * updates, read by /metrics) and produce errors per error code.
 */
#include "sink.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "module.h"
#include "msg.h"
#include "util.h"

#define KF_TOPIC_MAX 249       /* Kafka's limit on a topic name */
#define KF_MAX_HEADERS 16      /* headers per action */
#define KF_HNAME 64            /* a header's name, with its NUL */
#define KF_HVALUE 1024         /* a rendered header value */
#define KF_TOPICS 32           /* topic handles kept by the producer */
#define KF_ERR_SLOTS 24        /* distinct error codes counted */
#define KF_CLOSE_FLUSH_MS 3000 /* close(): delivery reports awaited */
#define KF_PURGE_MS 2000       /* then the purged records' reports */

enum { KF_ACKS_ALL = 0, KF_ACKS_1, KF_ACKS_0 };
static const char *const kf_acks_names[] = {"all", "1", "0", NULL};
static const char *const kf_comp_names[] = {"none", "gzip", "snappy", "lz4", "zstd", NULL};
static const char *const kf_sasl_names[] = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", NULL};

/* One sink's configuration (sink_conf()). */
typedef struct {
    char bootstrap_servers[384];
    char topic[256];   /* template; "" = every action names its own */
    char key[128];     /* template, "${clientid}" */
    char payload[384]; /* template; "" = the row as JSON */
    char headers[512]; /* "name\0template\0" pairs */
    uint32_t headers_len;
    uint8_t nheaders;
    uint8_t acks;               /* KF_ACKS_* */
    uint8_t enable_idempotence; /* default on */
    uint8_t compression;        /* index into kf_comp_names */
    uint8_t tls;                /* a tls: section was given */
    uint8_t sasl;               /* a sasl: section was given */
    uint8_t sasl_mechanism;     /* index into kf_sasl_names */
    uint32_t linger_ms;
    uint32_t batch_size;
    uint32_t message_timeout_ms;
    char tls_ca_file[256], tls_cert_file[256], tls_key_file[256];
    char sasl_username[128], sasl_password[128];
    char properties[768]; /* "name\0value\0" pairs for librdkafka */
    uint32_t properties_len;
} kf_conf_t;
/* the framework keeps up to 4 KiB of a sink's driver configuration */
_Static_assert(sizeof(kf_conf_t) <= 3584, "kf_conf_t grew");

/* ---- templates ---- */

/* A compiled template: literal and column segments over a private copy of
 * its text (column names NUL-terminated in place). */
typedef struct {
    const char *p;
    uint32_t len;
    uint8_t col;
} kf_seg_t;

typedef struct {
    char *text;
    uint32_t n;
    kf_seg_t seg[];
} kf_tpl_t;

typedef int (*kf_put_fn)(void *ud, const char *p, size_t n);

static void kf_tpl_free(kf_tpl_t *t)
{
    if (t) {
        free(t->text);
        free(t);
    }
}

/* NULL with err on an unclosed "${" or an empty or overlong name. */
static kf_tpl_t *kf_tpl_new(const char *src, char *err, size_t errlen)
{
    size_t nph = 0;
    for (const char *p = strstr(src, "${"); p; p = strstr(p + 2, "${"))
        nph++;
    kf_tpl_t *t = an_calloc(1, sizeof(*t) + (2 * nph + 1) * sizeof(kf_seg_t));
    t->text = an_strndup(src, strlen(src));
    char *p = t->text;
    while (*p) {
        char *ph = strstr(p, "${");
        size_t lit = ph ? (size_t)(ph - p) : strlen(p);
        if (lit)
            t->seg[t->n++] = (kf_seg_t){.p = p, .len = (uint32_t)lit};
        if (ph == NULL)
            break;
        char *end = strchr(ph + 2, '}');
        if (end == NULL || end == ph + 2 || end - ph - 2 >= 128) {
            snprintf(err, errlen, "%s \"${\" at byte %zu",
                     end == NULL ? "unclosed" : "an empty or overlong name after",
                     (size_t)(ph - t->text) + 1);
            kf_tpl_free(t);
            return NULL;
        }
        *end = '\0';
        t->seg[t->n++] = (kf_seg_t){.p = ph + 2, .len = (uint32_t)(end - ph - 2), .col = 1};
        p = end + 1;
    }
    return t;
}

static int kf_tpl_static(const kf_tpl_t *t)
{
    for (uint32_t i = 0; i < t->n; i++)
        if (t->seg[i].col)
            return 0;
    return 1;
}

static int kf_json(json_t *v, kf_put_fn put, void *ud, int depth);

/* A template's text: a column's string as it is, another value as JSON, a
 * missing or null one empty; clientid and topic, when the row has no such
 * column, come from the message. */
static int kf_tpl_render(const kf_tpl_t *t, json_t *row, const struct msg_s *m, kf_put_fn put,
                         void *ud)
{
    for (uint32_t i = 0; i < t->n; i++) {
        const kf_seg_t *sg = &t->seg[i];
        if (!sg->col) {
            if (put(ud, sg->p, sg->len) < 0)
                return -1;
            continue;
        }
        json_t *v = json_object_get(row, sg->p);
        if (json_is_string(v)) {
            if (put(ud, json_string_value(v), json_string_length(v)) < 0)
                return -1;
        } else if (v && !json_is_null(v)) {
            if (kf_json(v, put, ud, 0) < 0)
                return -1;
        } else if (v == NULL && m && strcmp(sg->p, "clientid") == 0) {
            const char *cid = m->origin ? m->origin->client_id : NULL;
            if (cid && put(ud, cid, strlen(cid)) < 0)
                return -1;
        } else if (v == NULL && m && strcmp(sg->p, "topic") == 0) {
            if (put(ud, (const char *)msg_topic(m), m->topic_len) < 0)
                return -1;
        }
    }
    return 0;
}

/* ---- JSON without allocation (jansson's dump allocates per call) ---- */

static int kf_json_str(const char *s, size_t n, kf_put_fn put, void *ud)
{
    static const char hex[] = "0123456789abcdef";
    if (put(ud, "\"", 1) < 0)
        return -1;
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        if (put(ud, s + run, i - run) < 0)
            return -1;
        char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        size_t el = 6;
        if (c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t') {
            e[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : (char)c;
            el = 2;
        }
        if (put(ud, e, el) < 0)
            return -1;
        run = i + 1;
    }
    if (put(ud, s + run, n - run) < 0 || put(ud, "\"", 1) < 0)
        return -1;
    return 0;
}

static int kf_json(json_t *v, kf_put_fn put, void *ud, int depth)
{
    char num[40];
    int n;
    if (depth > 64)
        return -1;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *x;
        int first = 1;
        if (put(ud, "{", 1) < 0)
            return -1;
        json_object_foreach(v, k, x)
        {
            if ((!first && put(ud, ",", 1) < 0) || kf_json_str(k, strlen(k), put, ud) < 0 ||
                put(ud, ":", 1) < 0 || kf_json(x, put, ud, depth + 1) < 0)
                return -1;
            first = 0;
        }
        return put(ud, "}", 1);
    }
    case JSON_ARRAY: {
        if (put(ud, "[", 1) < 0)
            return -1;
        for (size_t i = 0; i < json_array_size(v); i++)
            if ((i && put(ud, ",", 1) < 0) || kf_json(json_array_get(v, i), put, ud, depth + 1) < 0)
                return -1;
        return put(ud, "]", 1);
    }
    case JSON_STRING:
        return kf_json_str(json_string_value(v), json_string_length(v), put, ud);
    case JSON_INTEGER:
        n = snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return put(ud, num, (size_t)n);
    case JSON_REAL:
        n = snprintf(num, sizeof(num), "%.17g", json_real_value(v));
        if (n > 0 && (size_t)n < sizeof(num) - 2 && !strpbrk(num, ".eE")) {
            memcpy(num + n, ".0", 2);
            n += 2;
        }
        return put(ud, num, (size_t)n);
    case JSON_TRUE:
        return put(ud, "true", 4);
    case JSON_FALSE:
        return put(ud, "false", 5);
    default:
        return put(ud, "null", 4);
    }
}

/* Writers: a bounded buffer, and the record's key or value. */
typedef struct {
    char *p;
    size_t n, cap;
} kf_buf_t;

static int kf_put_buf(void *ud, const char *p, size_t n)
{
    kf_buf_t *b = ud;
    if (n > b->cap - b->n)
        return -1;
    memcpy(b->p + b->n, p, n);
    b->n += n;
    return 0;
}

static int kf_put_key(void *ud, const char *p, size_t n)
{
    return n ? sink_out_key(ud, p, n) : 0;
}

static int kf_put_value(void *ud, const char *p, size_t n)
{
    return n ? sink_out_value(ud, p, n) : 0;
}

/* Kafka's legal topic names: [a-zA-Z0-9._-]{1,249}. */
static int kf_topic_ok(const char *t, size_t n)
{
    if (n == 0 || n > KF_TOPIC_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* ---- the librdkafka configuration ---- */

static int kf_set(rd_kafka_conf_t *rc, const char *name, const char *value, char *err,
                  size_t errlen)
{
    char e[256];
    if (rd_kafka_conf_set(rc, name, value, e, sizeof(e)) != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "librdkafka: %s", e);
        return -1;
    }
    return 0;
}

/* The producer's configuration from c; NULL with err and *bad, the key of
 * ours that librdkafka refused. */
static rd_kafka_conf_t *kf_rdconf(const kf_conf_t *c, const char **bad, char *err, size_t errlen)
{
    rd_kafka_conf_t *rc = rd_kafka_conf_new();
    char num[24];
    const char *proto =
        c->tls ? (c->sasl ? "sasl_ssl" : "ssl") : (c->sasl ? "sasl_plaintext" : "plaintext");
#define KF_SET(key, name, value)                                                                   \
    do {                                                                                           \
        if (kf_set(rc, (name), (value), err, errlen) < 0) {                                        \
            *bad = (key);                                                                          \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)
    KF_SET("bootstrap_servers", "bootstrap.servers", c->bootstrap_servers);
    KF_SET("acks", "acks", kf_acks_names[c->acks]);
    KF_SET("enable_idempotence", "enable.idempotence", c->enable_idempotence ? "true" : "false");
    KF_SET("compression", "compression.codec", kf_comp_names[c->compression]);
    snprintf(num, sizeof(num), "%u", c->linger_ms);
    KF_SET("linger", "linger.ms", num);
    snprintf(num, sizeof(num), "%u", c->batch_size);
    KF_SET("batch_size", "batch.size", num);
    snprintf(num, sizeof(num), "%u", c->message_timeout_ms);
    KF_SET("message_timeout", "message.timeout.ms", num);
    KF_SET(c->tls ? "tls" : "sasl", "security.protocol", proto);
    if (c->tls_ca_file[0])
        KF_SET("tls", "ssl.ca.location", c->tls_ca_file);
    if (c->tls_cert_file[0])
        KF_SET("tls", "ssl.certificate.location", c->tls_cert_file);
    if (c->tls_key_file[0])
        KF_SET("tls", "ssl.key.location", c->tls_key_file);
    if (c->sasl) {
        KF_SET("sasl", "sasl.mechanisms", kf_sasl_names[c->sasl_mechanism]);
        KF_SET("sasl", "sasl.username", c->sasl_username);
        KF_SET("sasl", "sasl.password", c->sasl_password);
    }
    KF_SET("properties", "log.connection.close", "false");
    KF_SET("properties", "client.id", "antenna");
    for (uint32_t o = 0; o < c->properties_len;) {
        const char *name = c->properties + o, *value = name + strlen(name) + 1;
        KF_SET("properties", name, value);
        o += (uint32_t)(strlen(name) + strlen(value) + 2);
    }
#undef KF_SET
    return rc;
fail:
    rd_kafka_conf_destroy(rc);
    return NULL;
}

/* ---- conf_load ---- */

static int kf_tpl_key(conf_sec_t *s, const char *key, char *out, size_t size, int flags)
{
    if (conf_sec_str(s, key, out, size, flags) < 0)
        return -1;
    char e[120];
    kf_tpl_t *t = kf_tpl_new(out, e, sizeof(e));
    if (t == NULL)
        return conf_sec_fail(s, key, "%s", e);
    kf_tpl_free(t);
    return 0;
}

/* Append "a\0b\0" to buf[cap] at *len. */
static int kf_pair_add(char *buf, size_t cap, uint32_t *len, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (*len + la + lb + 2 > cap)
        return -1;
    memcpy(buf + *len, a, la + 1);
    memcpy(buf + *len + la + 1, b, lb + 1);
    *len += (uint32_t)(la + lb + 2);
    return 0;
}

static int kf_header_pair(conf_sec_t *s, const char *name, const char *value, void *ud)
{
    kf_conf_t *c = ud;
    char e[120];
    kf_tpl_t *t;
    if (name[0] == '\0' || strlen(name) >= KF_HNAME)
        return conf_sec_fail(s, name, "a header name of 1..%d bytes", KF_HNAME - 1);
    if (c->nheaders >= KF_MAX_HEADERS)
        return conf_sec_fail(s, name, "more than %d headers", KF_MAX_HEADERS);
    if ((t = kf_tpl_new(value, e, sizeof(e))) == NULL)
        return conf_sec_fail(s, name, "%s", e);
    kf_tpl_free(t);
    if (kf_pair_add(c->headers, sizeof(c->headers), &c->headers_len, name, value) < 0)
        return conf_sec_fail(s, name, "the headers take more than %zu bytes", sizeof(c->headers));
    c->nheaders++;
    return 0;
}

static int kf_property_pair(conf_sec_t *s, const char *name, const char *value, void *ud)
{
    kf_conf_t *c = ud;
    char e[256];
    rd_kafka_conf_t *rc = rd_kafka_conf_new();
    int ok = rd_kafka_conf_set(rc, name, value, e, sizeof(e)) == RD_KAFKA_CONF_OK;
    rd_kafka_conf_destroy(rc);
    if (!ok)
        return conf_sec_fail(s, name, "librdkafka: %s", e);
    if (kf_pair_add(c->properties, sizeof(c->properties), &c->properties_len, name, value) < 0)
        return conf_sec_fail(s, name, "the properties take more than %zu bytes",
                             sizeof(c->properties));
    return 0;
}

static int kf_readable(conf_sec_t *s, const char *key, const char *path)
{
    if (path[0] && access(path, R_OK) != 0)
        return conf_sec_fail(s, key, "cannot read \"%s\": %s", path, strerror(errno));
    return 0;
}

static int kf_tls_load(conf_sec_t *s, void *ud)
{
    kf_conf_t *c = ud;
    c->tls = 1;
    if (conf_sec_str(s, "ca_file", c->tls_ca_file, sizeof(c->tls_ca_file), 0) < 0 ||
        conf_sec_str(s, "cert_file", c->tls_cert_file, sizeof(c->tls_cert_file), 0) < 0 ||
        conf_sec_str(s, "key_file", c->tls_key_file, sizeof(c->tls_key_file), 0) < 0)
        return -1;
    if (!c->tls_cert_file[0] != !c->tls_key_file[0])
        return conf_sec_fail(s, c->tls_cert_file[0] ? "key_file" : "cert_file",
                             "cert_file and key_file go together");
    if (kf_readable(s, "ca_file", c->tls_ca_file) < 0 ||
        kf_readable(s, "cert_file", c->tls_cert_file) < 0 ||
        kf_readable(s, "key_file", c->tls_key_file) < 0)
        return -1;
    return 0;
}

static int kf_sasl_load(conf_sec_t *s, void *ud)
{
    kf_conf_t *c = ud;
    c->sasl = 1;
    if (!conf_sec_has(s, "mechanism"))
        return conf_sec_fail(s, "mechanism", "required (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)");
    if (conf_sec_enum(s, "mechanism", kf_sasl_names, &c->sasl_mechanism) < 0 ||
        conf_sec_str(s, "username", c->sasl_username, sizeof(c->sasl_username), CONF_SEC_NONEMPTY) <
            0 ||
        conf_sec_str(s, "password", c->sasl_password, sizeof(c->sasl_password), 0) < 0)
        return -1;
    if (!c->sasl_username[0])
        return conf_sec_fail(s, "username", "required");
    return 0;
}

static int kf_conf_load(conf_sec_t *s, void *conf)
{
    kf_conf_t *c = conf;
    memset(c, 0, sizeof(*c));
    snprintf(c->key, sizeof(c->key), "${clientid}");
    c->acks = KF_ACKS_ALL;
    c->enable_idempotence = 1;
    c->linger_ms = 5;
    c->batch_size = 1000000;
    c->message_timeout_ms = 30000;
    if (conf_sec_str(s, "bootstrap_servers", c->bootstrap_servers, sizeof(c->bootstrap_servers),
                     CONF_SEC_NONEMPTY) < 0 ||
        kf_tpl_key(s, "topic", c->topic, sizeof(c->topic), 0) < 0 ||
        kf_tpl_key(s, "key", c->key, sizeof(c->key), 0) < 0 ||
        kf_tpl_key(s, "payload", c->payload, sizeof(c->payload), 0) < 0 ||
        conf_sec_pairs(s, "headers", kf_header_pair, c) < 0 ||
        conf_sec_enum(s, "acks", kf_acks_names, &c->acks) < 0 ||
        conf_sec_bool(s, "enable_idempotence", &c->enable_idempotence) < 0 ||
        conf_sec_enum(s, "compression", kf_comp_names, &c->compression) < 0 ||
        conf_sec_ms(s, "linger", 0, 900000, &c->linger_ms) < 0 ||
        conf_sec_u32(s, "batch_size", 1, 2147483647u, &c->batch_size) < 0 ||
        conf_sec_ms(s, "message_timeout", 100, 2147483647u, &c->message_timeout_ms) < 0 ||
        conf_sec_map(s, "tls", kf_tls_load, c) < 0 ||
        conf_sec_map(s, "sasl", kf_sasl_load, c) < 0 ||
        conf_sec_pairs(s, "properties", kf_property_pair, c) < 0)
        return -1;
    if (c->bootstrap_servers[0] == '\0')
        return conf_sec_fail(s, "bootstrap_servers", "required (host:port[,host:port...])");
    if (c->topic[0] && !strstr(c->topic, "${") && !kf_topic_ok(c->topic, strlen(c->topic)))
        return conf_sec_fail(s, "topic", "\"%s\" is not a Kafka topic name ([a-zA-Z0-9._-]{1,%d})",
                             c->topic, KF_TOPIC_MAX);
    if (c->enable_idempotence && c->acks != KF_ACKS_ALL)
        return conf_sec_fail(s, "acks", "enable_idempotence needs acks: all");
    const char *bad = NULL;
    char err[300];
    rd_kafka_conf_t *rc = kf_rdconf(c, &bad, err, sizeof(err));
    if (rc == NULL)
        return conf_sec_fail(s, bad, "%s", err);
    rd_kafka_conf_destroy(rc);
    return 0;
}

/* ---- actions and render (the evaluating worker) ---- */

typedef struct {
    kf_tpl_t *topic, *key, *payload; /* payload NULL: the row as JSON */
    uint32_t nh;
    struct {
        char name[KF_HNAME];
        kf_tpl_t *value;
    } h[KF_MAX_HEADERS];
} kf_action_t;

static void kf_action_free(void *state)
{
    kf_action_t *a = state;
    if (a == NULL)
        return;
    kf_tpl_free(a->topic);
    kf_tpl_free(a->key);
    kf_tpl_free(a->payload);
    for (uint32_t i = 0; i < a->nh; i++)
        kf_tpl_free(a->h[i].value);
    free(a);
}

static int kf_action_hdr(kf_action_t *a, const char *name, const char *tpl, char *err,
                         size_t errlen)
{
    char e[120];
    if (a->nh >= KF_MAX_HEADERS || name[0] == '\0' || strlen(name) >= KF_HNAME) {
        snprintf(err, errlen, "headers: at most %d, names of 1..%d bytes", KF_MAX_HEADERS,
                 KF_HNAME - 1);
        return -1;
    }
    if ((a->h[a->nh].value = kf_tpl_new(tpl, e, sizeof(e))) == NULL) {
        snprintf(err, errlen, "headers: %.60s: %s", name, e);
        return -1;
    }
    snprintf(a->h[a->nh++].name, KF_HNAME, "%s", name);
    return 0;
}

static int kf_action_init(sink_t *s, json_t *def, void **state, char *err, size_t errlen)
{
    const kf_conf_t *c = sink_conf(s);
    kf_action_t *a = an_calloc(1, sizeof(*a));
    const char *k;
    json_t *v;
    char e[120];
    json_object_foreach(def, k, v)
    {
        if (strcmp(k, "type") && strcmp(k, "sink") && strcmp(k, "ack") && strcmp(k, "topic") &&
            strcmp(k, "key") && strcmp(k, "payload") && strcmp(k, "headers")) {
            snprintf(err, errlen, "%.40s: unknown key (kafka: topic, key, payload, headers)", k);
            goto fail;
        }
    }
    static const char *const tkeys[] = {"topic", "key", "payload"};
    const char *deflt[] = {c->topic, c->key, c->payload};
    kf_tpl_t **slot[] = {&a->topic, &a->key, &a->payload};
    for (int i = 0; i < 3; i++) {
        json_t *t = json_object_get(def, tkeys[i]);
        if (t && !json_is_string(t)) {
            snprintf(err, errlen, "%s: a string template", tkeys[i]);
            goto fail;
        }
        const char *src = t ? json_string_value(t) : deflt[i];
        if (i == 2 && src[0] == '\0')
            continue; /* the row as JSON */
        if ((*slot[i] = kf_tpl_new(src, e, sizeof(e))) == NULL) {
            snprintf(err, errlen, "%s: %s", tkeys[i], e);
            goto fail;
        }
    }
    const char *tsrc = a->topic->text;
    if (a->topic->n == 0) {
        snprintf(err, errlen, "topic: required (the sink has no default topic)");
        goto fail;
    }
    if (kf_tpl_static(a->topic) && !kf_topic_ok(tsrc, strlen(tsrc))) {
        snprintf(err, errlen, "topic: \"%.60s\" is not a Kafka topic name ([a-zA-Z0-9._-]{1,%d})",
                 tsrc, KF_TOPIC_MAX);
        goto fail;
    }
    json_t *hs = json_object_get(def, "headers");
    if (hs) {
        if (!json_is_object(hs)) {
            snprintf(err, errlen, "headers: an object of name: template");
            goto fail;
        }
        json_object_foreach(hs, k, v)
        {
            if (!json_is_string(v)) {
                snprintf(err, errlen, "headers: %.60s: a string template", k);
                goto fail;
            }
            if (kf_action_hdr(a, k, json_string_value(v), err, errlen) < 0)
                goto fail;
        }
    } else {
        for (uint32_t o = 0; o < c->headers_len;) {
            const char *name = c->headers + o, *tpl = name + strlen(name) + 1;
            if (kf_action_hdr(a, name, tpl, err, errlen) < 0)
                goto fail;
            o += (uint32_t)(strlen(name) + strlen(tpl) + 2);
        }
    }
    *state = a;
    return 0;
fail:
    kf_action_free(a);
    return -1;
}

static int kf_render(sink_t *s, void *state, json_t *row, const struct msg_s *m, sink_out_t *out)
{
    (void)s;
    kf_action_t *a = state;
    char topic[KF_TOPIC_MAX + 1];
    kf_buf_t b = {topic, 0, KF_TOPIC_MAX};
    if (kf_tpl_render(a->topic, row, m, kf_put_buf, &b) < 0 || !kf_topic_ok(topic, b.n))
        return -1;
    char tl = (char)(uint8_t)b.n;
    if (sink_out_key(out, &tl, 1) < 0 || sink_out_key(out, topic, b.n) < 0 ||
        kf_tpl_render(a->key, row, m, kf_put_key, out) < 0)
        return -1;
    if (a->payload ? kf_tpl_render(a->payload, row, m, kf_put_value, out) < 0
                   : kf_json(row, kf_put_value, out, 0) < 0)
        return -1;
    for (uint32_t i = 0; i < a->nh; i++) {
        char hv[KF_HVALUE];
        kf_buf_t hb = {hv, 0, sizeof(hv)};
        if (kf_tpl_render(a->h[i].value, row, m, kf_put_buf, &hb) < 0 || memchr(hv, '\0', hb.n) ||
            sink_out_header(out, a->h[i].name, hv, hb.n) < 0)
            return -1;
    }
    return 0;
}

/* ---- the producer (the sink's thread) ---- */

typedef struct {
    _Atomic int32_t code; /* 0: free */
    _Atomic uint64_t n;
} kf_errslot_t;

typedef struct {
    sink_t *s;
    const kf_conf_t *conf;
    rd_kafka_t *rk;
    rd_kafka_queue_t *mainq;
    int efd; /* eventfd: librdkafka's queue events and wake() */
    struct {
        char name[KF_TOPIC_MAX + 1];
        rd_kafka_topic_t *rkt;
    } topics[KF_TOPICS];
    uint32_t ntopics, last;
    /* records parked by QUEUE_FULL and all those sent after them, in order */
    sink_rec_t **pend;
    size_t phead, pn, pcap; /* ring, pcap a power of two */
    uint64_t inflight;      /* produced, no delivery report yet */
    int fatal;              /* the producer raised a fatal error: replace it */
    _Atomic int64_t outq;   /* rd_kafka_outq_len after the last poll */
    kf_errslot_t errs[KF_ERR_SLOTS];
    _Atomic uint64_t errs_other;
} kf_drv_t;

static void kf_count_err(kf_drv_t *d, rd_kafka_resp_err_t e)
{
    for (int i = 0; i < KF_ERR_SLOTS; i++) {
        int32_t c = atomic_load_explicit(&d->errs[i].code, memory_order_acquire);
        if (c == 0) {
            int32_t zero = 0;
            if (!atomic_compare_exchange_strong(&d->errs[i].code, &zero, (int32_t)e) &&
                zero != (int32_t)e)
                continue;
            c = (int32_t)e;
        }
        if (c == (int32_t)e) {
            atomic_fetch_add_explicit(&d->errs[i].n, 1, memory_order_relaxed);
            return;
        }
    }
    atomic_fetch_add_explicit(&d->errs_other, 1, memory_order_relaxed);
}

/* SINK_FAIL for what sending again cannot fix, SINK_RETRY otherwise. */
static int kf_verdict(rd_kafka_resp_err_t e)
{
    switch (e) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT:
    case RD_KAFKA_RESP_ERR__BAD_MSG:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return SINK_FAIL;
    default:
        return SINK_RETRY;
    }
}

static void kf_dr(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    kf_drv_t *d = opaque;
    sink_rec_t *r = msg->_private;
    d->inflight--;
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        sink_done(d->s, r, SINK_OK, NULL);
        return;
    }
    kf_count_err(d, msg->err);
    sink_done(d->s, r, kf_verdict(msg->err), rd_kafka_err2str(msg->err));
}

static void kf_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    kf_drv_t *d = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[256];
        rd_kafka_fatal_error(rk, why, sizeof(why));
        log_error("sink %s: kafka: fatal error, the producer is replaced: %s", sink_name(d->s),
                  why);
        d->fatal = 1;
        return;
    }
    log_limited(5000, AN_LOG_WARN, "sink %s: kafka: %s: %s", sink_name(d->s),
                rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static void kf_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    kf_drv_t *d = rd_kafka_opaque(rk);
    /* librdkafka's errors are mostly a broker out of reach for a while:
     * warnings here; what fails for good reaches sink_done and the error
     * callback */
    int l = level <= 4 ? AN_LOG_WARN : level <= 6 ? AN_LOG_INFO : AN_LOG_DEBUG;
    if (l >= AN_LOG_INFO) {
        if (log_enabled(l))
            log_msg(l, "sink %s: kafka: %s: %s", d ? sink_name(d->s) : "?", fac, buf);
        return;
    }
    log_limited(5000, l, "sink %s: kafka: %s: %s", d ? sink_name(d->s) : "?", fac, buf);
}

static int kf_rk_new(kf_drv_t *d, char *err, size_t errlen)
{
    const char *bad = NULL;
    rd_kafka_conf_t *rc = kf_rdconf(d->conf, &bad, err, errlen);
    if (rc == NULL)
        return -1;
    rd_kafka_conf_set_opaque(rc, d);
    rd_kafka_conf_set_dr_msg_cb(rc, kf_dr);
    rd_kafka_conf_set_error_cb(rc, kf_error_cb);
    rd_kafka_conf_set_log_cb(rc, kf_log_cb);
    char e[256];
    d->rk = rd_kafka_new(RD_KAFKA_PRODUCER, rc, e, sizeof(e));
    if (d->rk == NULL) {
        rd_kafka_conf_destroy(rc);
        snprintf(err, errlen, "kafka: %s", e);
        return -1;
    }
    static const uint64_t one = 1;
    d->mainq = rd_kafka_queue_get_main(d->rk);
    rd_kafka_queue_io_event_enable(d->mainq, d->efd, &one, sizeof(one));
    d->fatal = 0;
    return 0;
}

/* Everything produced is reported (within the bounds: what is left is
 * purged, reported RETRY) and the producer destroyed. */
static void kf_rk_destroy(kf_drv_t *d, int flush_ms)
{
    if (d->rk == NULL)
        return;
    if (flush_ms > 0 && d->inflight)
        rd_kafka_flush(d->rk, flush_ms);
    if (d->inflight) {
        rd_kafka_purge(d->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        uint64_t until = an_wall_ms() + KF_PURGE_MS;
        while (d->inflight && an_wall_ms() < until)
            rd_kafka_poll(d->rk, 50);
        if (d->inflight)
            log_error("sink %s: kafka: %llu records without a delivery report at close",
                      sink_name(d->s), (unsigned long long)d->inflight);
    }
    for (uint32_t i = 0; i < d->ntopics; i++)
        rd_kafka_topic_destroy(d->topics[i].rkt);
    d->ntopics = d->last = 0;
    rd_kafka_queue_destroy(d->mainq);
    rd_kafka_destroy(d->rk);
    d->rk = NULL;
    d->mainq = NULL;
}

static int kf_open(sink_t *s, const void *conf, void **drv, char *err, size_t errlen)
{
    kf_drv_t *d = an_calloc(1, sizeof(*d));
    d->s = s;
    d->conf = conf;
    d->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (d->efd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        free(d);
        return -1;
    }
    if (kf_rk_new(d, err, errlen) < 0) {
        close(d->efd);
        free(d);
        return -1;
    }
    *drv = d;
    return 0;
}

/* The producer's handle of topic t (kept: producev with a name looks the
 * topic up under a lock each time). */
static rd_kafka_topic_t *kf_topic(kf_drv_t *d, const char *t)
{
    if (d->ntopics && strcmp(d->topics[d->last].name, t) == 0)
        return d->topics[d->last].rkt;
    for (uint32_t i = 0; i < d->ntopics; i++)
        if (strcmp(d->topics[i].name, t) == 0) {
            d->last = i;
            return d->topics[i].rkt;
        }
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(d->rk, t, NULL);
    if (rkt == NULL)
        return NULL;
    uint32_t i;
    if (d->ntopics < KF_TOPICS) {
        i = d->ntopics++;
    } else {
        i = (d->last + 1) % KF_TOPICS; /* replaced in turn */
        rd_kafka_topic_destroy(d->topics[i].rkt);
    }
    snprintf(d->topics[i].name, sizeof(d->topics[i].name), "%s", t);
    d->topics[i].rkt = rkt;
    d->last = i;
    return rkt;
}

/* Produce r: 0 when it was handed to librdkafka or completed, 1 when the
 * local queue is full (r is not consumed). */
static int kf_produce(kf_drv_t *d, sink_rec_t *r)
{
    const char *k = sink_rec_key(r);
    size_t tl = r->klen ? (uint8_t)k[0] : 0;
    if (r->klen == 0 || tl + 1 > r->klen || tl == 0) {
        sink_done(d->s, r, SINK_FAIL, "kafka: a record without a topic");
        return 0;
    }
    char topic[KF_TOPIC_MAX + 1];
    memcpy(topic, k + 1, tl);
    topic[tl] = '\0';
    rd_kafka_topic_t *rkt = kf_topic(d, topic);
    if (rkt == NULL) {
        sink_done(d->s, r, SINK_FAIL, "kafka: invalid topic");
        return 0;
    }
    size_t kl = r->klen - 1 - tl;
    rd_kafka_headers_t *hs = NULL;
    if (r->hlen) {
        const char *h = sink_rec_headers(r), *end = h + r->hlen;
        hs = rd_kafka_headers_new(4);
        while (h < end) {
            const char *val = h + strlen(h) + 1;
            size_t vl = strlen(val);
            rd_kafka_header_add(hs, h, -1, val, (ssize_t)vl);
            h = val + vl + 1;
        }
    }
    rd_kafka_resp_err_t e =
        rd_kafka_producev(d->rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_KEY(kl ? k + 1 + tl : NULL, kl),
                          RD_KAFKA_V_VALUE((void *)sink_rec_value(r), r->vlen),
                          RD_KAFKA_V_MSGFLAGS(0), RD_KAFKA_V_TIMESTAMP((int64_t)r->ts_ms),
                          RD_KAFKA_V_HEADERS(hs), RD_KAFKA_V_OPAQUE(r), RD_KAFKA_V_END);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
        d->inflight++;
        return 0;
    }
    if (hs)
        rd_kafka_headers_destroy(hs);
    if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        return 1;
    kf_count_err(d, e);
    if (e == RD_KAFKA_RESP_ERR__FATAL)
        d->fatal = 1;
    sink_done(d->s, r, kf_verdict(e), rd_kafka_err2str(e));
    return 0;
}

static void kf_park(kf_drv_t *d, sink_rec_t *r)
{
    if (d->pn == d->pcap) {
        size_t ncap = d->pcap ? d->pcap * 2 : 256;
        sink_rec_t **np = an_malloc(ncap * sizeof(*np));
        for (size_t i = 0; i < d->pn; i++)
            np[i] = d->pend[(d->phead + i) & (d->pcap - 1)];
        free(d->pend);
        d->pend = np;
        d->phead = 0;
        d->pcap = ncap;
    }
    d->pend[(d->phead + d->pn++) & (d->pcap - 1)] = r;
}

/* Produce the parked records, in order, until the queue is full again. */
static void kf_drain(kf_drv_t *d)
{
    while (d->pn && !d->fatal) {
        if (kf_produce(d, d->pend[d->phead]) == 1)
            return;
        d->phead = (d->phead + 1) & (d->pcap - 1);
        d->pn--;
    }
}

static void kf_send(sink_t *s, void *drv, sink_rec_t **recs, size_t n)
{
    (void)s;
    kf_drv_t *d = drv;
    for (size_t i = 0; i < n; i++)
        if (d->pn || d->fatal || kf_produce(d, recs[i]) == 1)
            kf_park(d, recs[i]);
}

static void kf_poll(sink_t *s, void *drv, int timeout_ms)
{
    (void)s;
    kf_drv_t *d = drv;
    if (d->fatal) {
        char err[256];
        kf_rk_destroy(d, 0);
        if (kf_rk_new(d, err, sizeof(err)) < 0) {
            log_limited(5000, AN_LOG_ERROR, "sink %s: kafka: %s", sink_name(d->s), err);
            struct pollfd p = {.fd = d->efd, .events = POLLIN};
            (void)poll(&p, 1, timeout_ms); /* wait for a wake-up, then try again */
            d->fatal = 1;
            return;
        }
    }
    kf_drain(d);
    if (rd_kafka_poll(d->rk, 0) == 0 && timeout_ms > 0) {
        struct pollfd p = {.fd = d->efd, .events = POLLIN};
        (void)poll(&p, 1, timeout_ms);
        uint64_t v;
        if (read(d->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
            log_limited(5000, AN_LOG_WARN, "sink %s: kafka: eventfd: %s", sink_name(d->s),
                        strerror(errno));
        rd_kafka_poll(d->rk, 0);
    }
    kf_drain(d);
    atomic_store_explicit(&d->outq, rd_kafka_outq_len(d->rk), memory_order_relaxed);
}

static void kf_wake(sink_t *s, void *drv)
{
    (void)s;
    kf_drv_t *d = drv;
    uint64_t one = 1;
    if (write(d->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        log_limited(5000, AN_LOG_WARN, "kafka: eventfd write: %s", strerror(errno));
}

static void kf_close(sink_t *s, void *drv)
{
    kf_drv_t *d = drv;
    if (d == NULL)
        return;
    kf_rk_destroy(d, KF_CLOSE_FLUSH_MS);
    for (; d->pn; d->pn--, d->phead = (d->phead + 1) & (d->pcap - 1))
        sink_done(s, d->pend[d->phead], SINK_RETRY, "kafka: sink closed");
    free(d->pend);
    close(d->efd);
    free(d);
}

static const sink_metric_family_t kf_families[] = {
    {"antenna_sink_kafka_queue_length", "gauge",
     "Messages in the Kafka producer's queue, not yet delivered"},
    {"antenna_sink_kafka_produce_errors_total", "counter",
     "Delivery reports with an error, by librdkafka's error name"},
    {NULL, NULL, NULL}};

static void kf_metrics(sink_t *s, void *drv, const char *family, void *out)
{
    kf_drv_t *d = drv;
    module_metrics_t *mm = out;
    const char *name = sink_name(s);
    if (strcmp(family, kf_families[0].name) == 0) {
        module_metrics_printf(mm, "antenna_sink_kafka_queue_length{sink=\"%s\"} %lld\n", name,
                              (long long)atomic_load_explicit(&d->outq, memory_order_relaxed));
        return;
    }
    for (int i = 0; i < KF_ERR_SLOTS; i++) {
        int32_t c = atomic_load_explicit(&d->errs[i].code, memory_order_acquire);
        if (c == 0)
            break;
        module_metrics_printf(
            mm, "antenna_sink_kafka_produce_errors_total{sink=\"%s\",code=\"%s\"} %llu\n", name,
            rd_kafka_err2name((rd_kafka_resp_err_t)c),
            (unsigned long long)atomic_load_explicit(&d->errs[i].n, memory_order_relaxed));
    }
    uint64_t other = atomic_load_explicit(&d->errs_other, memory_order_relaxed);
    if (other)
        module_metrics_printf(
            mm, "antenna_sink_kafka_produce_errors_total{sink=\"%s\",code=\"other\"} %llu\n", name,
            (unsigned long long)other);
}

const sink_driver_t sink_kafka_driver = {
    .type = "kafka",
    .metric_families = kf_families,
    .conf_size = sizeof(kf_conf_t),
    .conf_load = kf_conf_load,
    .action_init = kf_action_init,
    .action_free = kf_action_free,
    .render = kf_render,
    .open = kf_open,
    .send = kf_send,
    .poll = kf_poll,
    .wake = kf_wake,
    .close = kf_close,
    .metrics = kf_metrics,
};
