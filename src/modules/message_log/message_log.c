/* message_log.c -- the example internal consumer: examples.message_log.
 *
 * A small, complete user of two seams: a module (module.h: its section
 * `examples`, read with conf_sec_names, and an init hook) and an internal
 * consumer (router.h's consumers).  At start-up it creates
 * one consumer, "message_log", subscribed at QoS 2 to the filters of
 * examples.message_log, and writes one log line per message it receives,
 * at level info: "message {JSON}" with the topic, QoS, retain flag,
 * payload length and the message's provenance (msg.h: client id, username,
 * protocol, listener, origin node, hops, publish time), the worker that
 * routed it and the consumer's delivery count so far.  Overlapping filters
 * still give one line per message (the router merges them).  At shutdown
 * it logs the total.
 *
 * on_message runs on the worker that routed the message; it keeps no
 * state of its own (the count is the router's, per worker), builds the
 * line on the stack and never blocks beyond log.c's one write(2).  The
 * payload is not written (binary, and large).  Meant for debugging and
 * low traffic, like events.log's message events.
 */
#include "message_log.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "mqtt_codec.h"
#include "router.h"

#define ML_MAX 1000 /* bytes of JSON per line (log.c's message holds 1024) */
#define ML_STR 200  /* bytes of one string value */

typedef struct {
    char p[ML_MAX + 1];
    size_t len;
} ml_t;

static void ml_printf(ml_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void ml_printf(ml_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, sizeof(b->p) - b->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        b->len = AN_MIN(b->len + (size_t)n, sizeof(b->p) - 1);
}

/* ,"key":"value", escaped and cut at ML_STR bytes on a character boundary;
 * nothing for NULL. */
static void ml_str(ml_t *b, const char *key, const void *val, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (val == NULL)
        return;
    const uint8_t *s = val;
    if (n > ML_STR) {
        n = ML_STR;
        while (n > 0 && (s[n] & 0xC0) == 0x80)
            n--;
    }
    ml_printf(b, ",\"%s\":\"", key);
    for (size_t i = 0; i < n && b->len + 8 < ML_MAX; i++) {
        uint8_t ch = s[i];
        if (ch == '"' || ch == '\\') {
            b->p[b->len++] = '\\';
            b->p[b->len++] = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            memcpy(b->p + b->len, "\\u00", 4);
            b->p[b->len + 4] = hex[ch >> 4];
            b->p[b->len + 5] = hex[ch & 15];
            b->len += 6;
        } else {
            b->p[b->len++] = (char)ch;
        }
    }
    b->p[b->len] = '\0';
    ml_printf(b, "\"");
}

static void on_message(worker_t *w, router_consumer_t *c, msg_t *m, uint8_t qos, uint8_t flags,
                       void *user)
{
    (void)user;
    ml_t b = {.len = 0};
    ml_printf(&b, "{\"consumer\":\"%s\"", router_consumer_name(c));
    ml_str(&b, "topic", msg_topic(m), m->topic_len);
    ml_printf(&b, ",\"qos\":%u,\"retain\":%s,\"payload_len\":%" PRIu32, qos,
              (flags & DLV_RETAIN) ? "true" : "false", m->payload_len);
    const msg_origin_t *o = m->origin;
    if (o) {
        ml_str(&b, "client_id", o->client_id, o->client_id ? strlen(o->client_id) : 0);
        ml_str(&b, "username", o->username, o->username ? strlen(o->username) : 0);
        ml_str(&b, "listener", o->listener, o->listener ? strlen(o->listener) : 0);
    }
    ml_printf(&b,
              ",\"proto\":\"%s\",\"node\":%u,\"hops\":%u,\"published_at\":%" PRIu64
              ",\"worker\":%u,\"count\":%" PRIu64 "}",
              msg_proto_name(o ? o->proto : MSG_PROTO_UNKNOWN), m->origin_node, m->hops,
              m->published_at, w->id, router_consumer_delivered(c));
    log_info("message %s", b.p);
}

static void on_free(router_consumer_t *c, void *user)
{
    (void)user;
    log_info("examples.message_log: %" PRIu64 " message(s) consumed", router_consumer_delivered(c));
}

static const consumer_ops_t msg_log_ops = {.on_message = on_message, .free = on_free};

#define ML_FILTERS 8 /* examples.message_log: at most this many filters */

typedef struct {
    char filters[ML_FILTERS][256];
    uint32_t n; /* 0: no consumer */
} ml_conf_t;

static void ml_defaults(void *conf)
{
    memset(conf, 0, sizeof(ml_conf_t));
}

/* Each item a topic filter ('+' and '#' whole levels, '#' last), and not
 * "$share/...": a consumer joins no group. */
static const conf_key_t ml_keys[] = {
    CONF_KEY_NAMES(ml_conf_t, filters, n, "message_log", ML_FILTERS),
};

static int ml_load(conf_sec_t *s, void *conf)
{
    ml_conf_t *c = conf;
    if (conf_sec_keys(s, CONF_KEYS(ml_keys), c) < 0)
        return -1;
    for (uint32_t i = 0; i < c->n; i++) {
        const char *f = c->filters[i];
        if (strncmp(f, "$share/", 7) == 0 ||
            !mqtt_topic_filter_valid((const uint8_t *)f, strlen(f)))
            return conf_sec_fail(s, "message_log",
                                 "\"%.60s\" is not a topic filter ('+' and '#' whole levels, "
                                 "'#' last, no $share/)",
                                 f);
    }
    return 0;
}

static void ml_walk(const void *conf, conf_visit_fn fn, void *ud)
{
    conf_keys_walk(CONF_KEYS(ml_keys), conf, fn, ud);
}

static int ml_init(module_inst_t *mi)
{
    const ml_conf_t *c = mi->conf;
    if (c->n == 0)
        return 0;
    router_consumer_t *rc = router_consumer_new(mi->srv, "message_log", &msg_log_ops, NULL);
    for (uint32_t i = 0; i < c->n; i++)
        if (router_consumer_subscribe(rc, c->filters[i], 2) < 0) {
            log_error("examples.message_log: \"%s\" is not a topic filter", c->filters[i]);
            return -1;
        }
    log_info("examples.message_log: consumer subscribed to %u filter(s)", c->n);
    return 0;
}

const module_t message_log_module = {
    .name = "message_log",
    .section = "examples",
    .conf_size = sizeof(ml_conf_t),
    .conf_defaults = ml_defaults,
    .conf_load = ml_load,
    .conf_walk = ml_walk,
    .init = ml_init,
};
