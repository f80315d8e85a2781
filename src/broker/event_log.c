/* event_log.c -- the built-in listener of broker events: events.log, the
 * module "event_log" (module.h).
 *
 * For each kind named in events.log (config.example.yaml) it registers a
 * handler that writes one log line, at level info, "event {JSON}": the
 * event's name and the fields of its struct (event.h), for an audit trail
 * or a log pipeline, and so that the tests can see every event from
 * outside.  Runs on the worker where the event happens (event.h); a line
 * is built on the stack and written with one write(2) by log.c.
 *
 * The JSON object holds at most JL_MAX bytes (log.c's message size): each
 * string is cut at JL_STR bytes, on a UTF-8 character boundary, and a
 * field that would not fit is left out, so the line stays one valid JSON
 * object.  Payloads are not written (binary, and large); their length is.
 *
 * The module's one hook is init (handlers registered before the workers
 * start).  Its key stays events.log in the events section of conf.c: the
 * event names are the event registry's (conf_event_names), shared with
 * event.c.
 */
#include "event_log.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "module.h"
#include "mqtt_codec.h"

#define JL_MAX 1000 /* bytes of JSON per line */
#define JL_STR 256  /* bytes of one string value */

typedef struct {
    char p[JL_MAX + 1];
    size_t len;
} jl_t;

/* Append raw text when it fits (whole), with room kept for the closing brace. */
static int jl_raw(jl_t *b, const char *s, size_t n)
{
    if (b->len + n + 2 > JL_MAX)
        return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

/* ,"key":"value" (escaped, cut at JL_STR bytes on a character boundary);
 * nothing for a NULL value or when it does not fit. */
static void jl_str(jl_t *b, const char *key, const void *val, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (val == NULL)
        return;
    const uint8_t *s = val;
    if (n > JL_STR) {
        n = JL_STR;
        while (n > 0 && (s[n] & 0xC0) == 0x80) /* s[n] continues a character */
            n--;
    }
    char out[JL_STR * 6 + 80];
    size_t o = (size_t)snprintf(out, 64, ",\"%s\":\"", key);
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = s[i];
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            memcpy(out + o, "\\u00", 4);
            out[o + 4] = hex[ch >> 4];
            out[o + 5] = hex[ch & 15];
            o += 6;
        } else {
            out[o++] = (char)ch;
        }
    }
    out[o++] = '"';
    (void)jl_raw(b, out, o);
}

static void jl_strz(jl_t *b, const char *key, const char *val)
{
    jl_str(b, key, val, val ? strlen(val) : 0);
}

static void jl_num(jl_t *b, const char *key, uint64_t v)
{
    char out[80];
    int n = snprintf(out, sizeof(out), ",\"%s\":%" PRIu64, key, v);
    (void)jl_raw(b, out, (size_t)n);
}

static void jl_bool(jl_t *b, const char *key, int v)
{
    char out[80];
    int n = snprintf(out, sizeof(out), ",\"%s\":%s", key, v ? "true" : "false");
    (void)jl_raw(b, out, (size_t)n);
}

static const char *proto_name(uint8_t proto)
{
    switch (proto) {
    case MQTT_PROTO_V31:
        return "3.1";
    case MQTT_PROTO_V311:
        return "3.1.1";
    case MQTT_PROTO_V5:
        return "5.0";
    default:
        return NULL;
    }
}

static void jl_client(jl_t *b, const event_client_t *c)
{
    jl_strz(b, "client_id", c->client_id);
    jl_strz(b, "username", c->username);
    jl_strz(b, "peer", c->peer);
    jl_strz(b, "listener", c->listener);
    jl_strz(b, "proto", proto_name(c->proto));
}

static void jl_msg(jl_t *b, const msg_t *m)
{
    if (m == NULL)
        return;
    jl_str(b, "topic", msg_topic(m), m->topic_len);
    jl_num(b, "payload_len", m->payload_len);
    jl_bool(b, "retain_published", m->retain);
}

static void on_event(struct worker_s *w, event_kind_t kind, const void *data, void *user)
{
    (void)user;
    jl_t b = {.len = 0};
    b.len = (size_t)snprintf(b.p, sizeof(b.p), "{\"event\":\"%s\"", event_name(kind));
    jl_num(&b, "worker", w ? w->id : 0);
    switch (kind) {
    case EVENT_CLIENT_CONNECTED: {
        const event_connected_t *e = data;
        jl_client(&b, &e->client);
        jl_num(&b, "keepalive", e->keepalive);
        jl_bool(&b, "clean_start", e->clean_start);
        jl_bool(&b, "session_present", e->session_present);
        jl_num(&b, "session_expiry", e->session_expiry);
        break;
    }
    case EVENT_CLIENT_DISCONNECTED: {
        const event_disconnected_t *e = data;
        jl_client(&b, &e->client);
        jl_num(&b, "reason_code", e->reason_code);
        jl_bool(&b, "by_client", e->by_client);
        jl_strz(&b, "reason", e->reason);
        break;
    }
    case EVENT_AUTH_FAILED: {
        const event_auth_failed_t *e = data;
        jl_client(&b, &e->client);
        jl_strz(&b, "cause", auth_cause_name(e->cause));
        jl_num(&b, "reason_code", e->reason_code);
        jl_strz(&b, "reason", e->reason);
        break;
    }
    case EVENT_SUBSCRIBED: {
        const event_subscribed_t *e = data;
        jl_client(&b, &e->client);
        jl_str(&b, "filter", e->filter, e->filter_len);
        jl_num(&b, "qos", e->qos);
        jl_num(&b, "options", e->options);
        jl_bool(&b, "new", e->is_new);
        if (e->subscription_id)
            jl_num(&b, "subscription_id", e->subscription_id);
        break;
    }
    case EVENT_UNSUBSCRIBED: {
        const event_unsubscribed_t *e = data;
        jl_client(&b, &e->client);
        jl_str(&b, "filter", e->filter, e->filter_len);
        break;
    }
    case EVENT_MESSAGE_PUBLISHED: {
        const event_published_t *e = data;
        jl_client(&b, &e->client);
        jl_msg(&b, e->msg);
        jl_num(&b, "qos", e->msg->qos);
        jl_num(&b, "packet_id", e->packet_id);
        jl_num(&b, "receivers", e->receivers);
        break;
    }
    case EVENT_MESSAGE_DELIVERED: {
        const event_delivered_t *e = data;
        jl_client(&b, &e->client);
        jl_msg(&b, e->msg);
        jl_num(&b, "qos", e->qos);
        jl_bool(&b, "retain", e->retain);
        jl_num(&b, "packet_id", e->packet_id);
        break;
    }
    case EVENT_MESSAGE_ACKED: {
        const event_acked_t *e = data;
        jl_client(&b, &e->client);
        jl_msg(&b, e->msg);
        jl_num(&b, "qos", e->qos);
        jl_num(&b, "packet_id", e->packet_id);
        jl_strz(&b, "packet", e->packet_type == MQTT_PUBREC ? "pubrec" : "puback");
        jl_num(&b, "reason_code", e->reason_code);
        break;
    }
    case EVENT_MESSAGE_DROPPED: {
        const event_dropped_t *e = data;
        jl_client(&b, &e->client);
        jl_strz(&b, "reason", event_drop_reason_name(e->reason));
        if (e->msg)
            jl_msg(&b, e->msg);
        else
            jl_str(&b, "topic", e->topic, e->topic_len);
        jl_num(&b, "qos", e->qos);
        break;
    }
    case EVENT_SESSION_CREATED: {
        const event_session_created_t *e = data;
        jl_client(&b, &e->client);
        jl_num(&b, "session_expiry", e->session_expiry);
        break;
    }
    case EVENT_SESSION_EXPIRED: {
        const event_session_expired_t *e = data;
        jl_client(&b, &e->client);
        break;
    }
    case EVENT_SESSION_TAKEN_OVER: {
        const event_taken_over_t *e = data;
        jl_client(&b, &e->client);
        jl_strz(&b, "old_peer", e->old_peer);
        jl_bool(&b, "resumed", e->resumed);
        break;
    }
    case EVENT_COMMAND_STATUS: {
        const event_command_status_t *e = data;
        jl_client(&b, &e->client);
        jl_strz(&b, "command_id", e->command_id);
        jl_strz(&b, "name", e->name);
        jl_strz(&b, "status", e->status);
        break;
    }
    case EVENT_DEVICE_PRESENCE: {
        const event_device_presence_t *e = data;
        jl_client(&b, &e->client);
        jl_strz(&b, "device", e->device);
        jl_bool(&b, "connected", e->connected);
        jl_strz(&b, "node", e->node);
        break;
    }
    default:
        break;
    }
    b.p[b.len++] = '}';
    b.p[b.len] = '\0';
    log_info("event %s", b.p);
}

static int event_log_init(module_inst_t *mi)
{
    server_t *srv = mi->srv;
    uint32_t want = srv->conf.events_log;
    for (uint32_t k = 0; k < EVENT_COUNT; k++)
        if ((want & (1u << k)) && event_listen(&srv->events, (event_kind_t)k, on_event, NULL) < 0) {
            log_error("events.log: cannot listen to %s", event_name((event_kind_t)k));
            return -1;
        }
    return 0;
}

const module_t event_log_module = {
    .name = "event_log",
    .init = event_log_init,
};
