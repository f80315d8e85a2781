/* api_routes.c -- the handlers of the management API (docs/api.md).
 *
 * Runs on the API threads.  Counters are read atomically (api_totals);
 * whatever the workers own (clients, sessions, subscriptions; kick, drop,
 * publish) goes through a job (api_snap.h) with the configured timeout, so
 * a slow or stopping worker gives 503, never a stuck API thread holding a
 * lock.  The retained tree is read under its own mutex (retain_walk), which
 * the workers take only briefly too.  Lists are sorted here, then paginated.
 */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api_int.h"
#include "api_snap.h"
#include "b64.h"
#include "module.h"
#include "event_recent.h"
#include "mqtt_codec.h"
#include "mqtt_props.h"
#include "reload.h"
#include "retain.h"
#include "router.h"

#define PAGE_MAX_LIMIT 1000
#define PAGE_DEFAULT_LIMIT 100
#define PREVIEW_BYTES 64

/* ---- helpers ------------------------------------------------------------- */

static const char *arg(const api_req_t *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

/* A non-negative decimal query parameter in [min, max]; def when absent.
 * -1 when malformed (the caller answers 400 naming it). */
static int64_t arg_uint(const api_req_t *r, const char *name, int64_t def, int64_t min, int64_t max)
{
    const char *s = arg(r, name);
    if (s == NULL)
        return def;
    if (*s == '\0' || strlen(s) > 9)
        return -1;
    int64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    return v < min || v > max ? -1 : v;
}

static const char *str_of(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : "";
}

static int cmp_items(const void *a, const void *b, const char *k1, const char *k2)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    int c = strcmp(str_of(x, k1), str_of(y, k1));
    if (c == 0 && k2)
        c = strcmp(str_of(x, k2), str_of(y, k2));
    return c;
}
static int by_client(const void *a, const void *b)
{
    return cmp_items(a, b, "client_id", "topic");
}
static int by_topic(const void *a, const void *b)
{
    return cmp_items(a, b, "topic", "client_id");
}

/* Sort items with cmp and answer the page asked for. */
static enum MHD_Result send_page_of(api_req_t *r, json_t *items,
                                    int (*cmp)(const void *, const void *), int64_t page,
                                    int64_t limit, size_t matched)
{
    size_t total = json_array_size(items);
    json_t **v = an_malloc((total ? total : 1) * sizeof(*v));
    for (size_t i = 0; i < total; i++)
        v[i] = json_array_get(items, i);
    if (cmp)
        qsort(v, total, sizeof(*v), cmp);
    json_t *data = json_array();
    size_t first = (size_t)((page - 1) * limit);
    for (size_t i = first; i < total && i < first + (size_t)limit; i++)
        json_array_append(data, v[i]);
    free(v);
    json_t *out = json_object();
    json_object_set_new(out, "page", json_integer(page));
    json_object_set_new(out, "limit", json_integer(limit));
    json_object_set_new(out, "count", json_integer((json_int_t)json_array_size(data)));
    json_object_set_new(out, "total",
                        json_integer((json_int_t)(matched > total ? matched : total)));
    json_object_set_new(out, "data", data);
    json_decref(items);
    return api_send_json(r->conn, 200, out);
}

static enum MHD_Result send_page(api_req_t *r, json_t *items,
                                 int (*cmp)(const void *, const void *), int64_t page,
                                 int64_t limit)
{
    return send_page_of(r, items, cmp, page, limit, 0);
}

#define PAGING(r, page, limit)                                                                     \
    int64_t page = arg_uint(r, "page", 1, 1, 1000000000);                                          \
    if (page < 0)                                                                                  \
        return api_send_error(r->conn, 400, "bad_request", "page",                                 \
                              "page must be a positive integer");                                  \
    int64_t limit = arg_uint(r, "limit", PAGE_DEFAULT_LIMIT, 1, PAGE_MAX_LIMIT);                   \
    if (limit < 0)                                                                                 \
    return api_send_error(r->conn, 400, "bad_request", "limit",                                    \
                          "limit must be an integer from 1 to %d", PAGE_MAX_LIMIT)

static enum MHD_Result unavailable(api_req_t *r)
{
    return api_send_error(r->conn, 503, "unavailable", NULL,
                          "the workers did not answer within %u ms", r->srv->conf.api_timeout_ms);
}

/* Run a job on worker `to` (-1: all); NULL after answering 503. */
static api_job_t *run_job(api_req_t *r, api_job_t *job, int to)
{
    if (api_job_submit(r->srv, job, to, r->srv->conf.api_timeout_ms) < 0) {
        api_job_release(job);
        unavailable(r);
        return NULL;
    }
    return job;
}

static int home_of(const server_t *srv, const char *client_id)
{
    return (int)worker_home(srv, (const uint8_t *)client_id, strlen(client_id));
}

/* ---- broker ------------------------------------------------------------- */

static enum MHD_Result h_info(api_req_t *r, const char *tail)
{
    (void)tail;
    json_t *o = json_object();
    json_object_set_new(o, "version", json_string(ANTENNA_VERSION));
    json_object_set_new(o, "node", json_string(r->srv->node_name));
    uint64_t uptime = (an_now_ms() - r->srv->started_ms) / 1000u;
    json_object_set_new(o, "uptime_s", json_integer((json_int_t)uptime));
    json_object_set_new(o, "started_at", json_integer((json_int_t)r->srv->started_wall));
    json_object_set_new(o, "workers", json_integer(r->srv->nworkers));
    json_object_set_new(o, "listeners", json_integer(r->srv->nlisteners));
    return api_send_json(r->conn, 200, o);
}

static enum MHD_Result h_stats(api_req_t *r, const char *tail)
{
    (void)tail;
    api_totals_t t;
    api_totals(r->srv, &t);
    json_t *o = json_object();
    json_t *conn = json_object(), *refused = json_object();
    json_object_set_new(conn, "current", json_integer((json_int_t)t.connected));
    json_object_set_new(conn, "total", json_integer((json_int_t)t.connections_total));
    json_object_set_new(refused, "max_connections", json_integer((json_int_t)t.refused_limit));
    json_object_set_new(refused, "rate", json_integer((json_int_t)t.refused_rate));
    json_object_set_new(refused, "memory", json_integer((json_int_t)t.refused_memory));
    json_object_set_new(refused, "fd_limit", json_integer((json_int_t)t.refused_fd_limit));
    json_object_set_new(conn, "refused", refused);
    json_object_set_new(o, "connections", conn);
    json_object_set_new(o, "sessions", json_integer((json_int_t)t.sessions));
    json_object_set_new(o, "subscriptions", json_integer((json_int_t)t.subscriptions));
    json_object_set_new(o, "retained", json_integer((json_int_t)t.retained));
    json_object_set_new(o, "retained_sys",
                        json_integer((json_int_t)retain_count_dollar(r->srv->retain)));
    json_t *m = json_object();
    json_object_set_new(m, "received", json_integer((json_int_t)t.msgs_received));
    json_object_set_new(m, "sent", json_integer((json_int_t)t.msgs_sent));
    json_object_set_new(m, "dropped", json_integer((json_int_t)t.msgs_dropped));
    json_object_set_new(m, "dropped_queue_full", json_integer((json_int_t)t.dropped_queue_full));
    json_object_set_new(o, "messages", m);
    json_t *b = json_object();
    json_object_set_new(b, "received", json_integer((json_int_t)t.bytes_received));
    json_object_set_new(b, "sent", json_integer((json_int_t)t.bytes_sent));
    json_object_set_new(o, "bytes", b);
    json_object_set_new(o, "inflight", json_integer((json_int_t)t.inflight));
    json_object_set_new(o, "queued", json_integer((json_int_t)t.queued));
    json_t *pk = json_object(), *pin = json_object(), *pout = json_object();
    for (int i = 1; i < STAT_PKT_TYPES; i++) {
        json_object_set_new(pin, api_packet_name(i), json_integer((json_int_t)t.pkts_in[i]));
        json_object_set_new(pout, api_packet_name(i), json_integer((json_int_t)t.pkts_out[i]));
    }
    json_object_set_new(pk, "received", pin);
    json_object_set_new(pk, "sent", pout);
    json_object_set_new(o, "packets", pk);
    json_object_set_new(o, "slow_disconnects", json_integer((json_int_t)t.slow_disconnects));
    json_object_set_new(o, "throttled", json_integer((json_int_t)t.throttled));
    json_t *a = json_object();
    json_object_set_new(a, "success", json_integer((json_int_t)t.auth_success));
    json_object_set_new(a, "failure", json_integer((json_int_t)t.auth_failure));
    json_object_set_new(o, "auth", a);
    return api_send_json(r->conn, 200, o);
}

/* ---- clients and sessions ------------------------------------------------ */

static char *dup_arg(const api_req_t *r, const char *name)
{
    const char *s = arg(r, name);
    return s ? an_strndup(s, strlen(s)) : NULL;
}

static enum MHD_Result h_clients(api_req_t *r, const char *tail)
{
    (void)tail;
    PAGING(r, page, limit);
    const char *conn = arg(r, "connected");
    int connected = -1;
    if (conn) {
        if (strcmp(conn, "true") == 0)
            connected = 1;
        else if (strcmp(conn, "false") == 0)
            connected = 0;
        else
            return api_send_error(r->conn, 400, "bad_request", "connected",
                                  "connected must be true or false");
    }
    api_job_t *job = api_job_new(API_JOB_CLIENTS);
    job->connected = connected;
    job->client_id_prefix = dup_arg(r, "client_id_prefix");
    job->username = dup_arg(r, "username");
    job->address = dup_arg(r, "address");
    job->keep = (size_t)(page * limit);
    if ((job = run_job(r, job, -1)) == NULL)
        return MHD_YES;
    json_t *items = json_incref(job->data);
    size_t total = (size_t)job->total;
    api_job_release(job);
    return send_page_of(r, items, by_client, page, limit, total);
}

/* Show (del 0) or kick (del 1) the client `id`. */
static enum MHD_Result client_op(api_req_t *r, const char *id, int del)
{
    if (*id == '\0')
        return api_send_error(r->conn, 400, "bad_request", "client_id", "empty client id");
    api_job_t *job = api_job_new(del ? API_JOB_KICK : API_JOB_CLIENT);
    job->client_id = an_strndup(id, strlen(id));
    if ((job = run_job(r, job, home_of(r->srv, id))) == NULL)
        return MHD_YES;
    int found = job->found;
    json_t *item = found && !del ? json_incref(json_array_get(job->data, 0)) : NULL;
    api_job_release(job);
    if (!found)
        return api_send_error(r->conn, 404, "not_found", "client_id",
                              del ? "client '%s' is not connected" : "no client '%s'", id);
    if (del)
        return api_send_empty(r->conn, 204);
    return api_send_json(r->conn, 200, item);
}

/* The recent events of a client (event_recent.h), newest first:
 * {"client_id", "events": [{"event", "at", "at_ms", "detail", ...}]}.
 * 200 with an empty list for an id the broker has seen nothing of. */
static enum MHD_Result client_events(api_req_t *r, const char *id, size_t len)
{
    if (len == 0)
        return api_send_error(r->conn, 400, "bad_request", "client_id", "empty client id");
    event_recent_t *ev = an_malloc(EVENT_RECENT_MAX * sizeof(*ev));
    size_t n = event_recent_get(r->srv, id, len, ev, EVENT_RECENT_MAX);
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "event", json_string(event_name((event_kind_t)ev[i].kind)));
        json_object_set_new(o, "at", json_integer((json_int_t)(ev[i].at_ms / 1000u)));
        json_object_set_new(o, "at_ms", json_integer((json_int_t)ev[i].at_ms));
        /* a client's bytes (a filter, a topic): never invalid UTF-8 in JSON */
        json_t *d = json_string(ev[i].detail);
        json_object_set_new(o, "detail", d ? d : json_string("(not UTF-8)"));
        if (ev[i].kind == EVENT_CLIENT_DISCONNECTED || ev[i].kind == EVENT_AUTH_FAILED)
            json_object_set_new(o, "reason_code", json_integer(ev[i].code));
        if (ev[i].kind == EVENT_SUBSCRIBED || ev[i].kind == EVENT_MESSAGE_DROPPED)
            json_object_set_new(o, "qos", json_integer(ev[i].code));
        if (ev[i].kind == EVENT_MESSAGE_DROPPED) {
            json_object_set_new(o, "count", json_integer(ev[i].count));
            json_object_set_new(o, "last_at_ms", json_integer((json_int_t)ev[i].last_ms));
        }
        json_array_append_new(list, o);
    }
    free(ev);
    json_t *out = json_object();
    json_object_set_new(out, "client_id", json_stringn(id, len));
    json_object_set_new(out, "events", list);
    return api_send_json(r->conn, 200, out);
}

static enum MHD_Result h_client(api_req_t *r, const char *id)
{
    /* GET /api/v1/clients/{id}/events (an id that itself ends in
     * "/events": POST /api/v1/clients/events with the id in the body) */
    size_t len = strlen(id);
    if (strcmp(r->method, "DELETE") != 0 && len > 7 && strcmp(id + len - 7, "/events") == 0)
        return client_events(r, id, len - 7);
    return client_op(r, id, strcmp(r->method, "DELETE") == 0);
}

static char *body_client_id(api_req_t *r);

static enum MHD_Result h_client_events_body(api_req_t *r, const char *tail)
{
    (void)tail;
    char *id = body_client_id(r);
    if (id == NULL)
        return MHD_YES;
    enum MHD_Result rc = client_events(r, id, strlen(id));
    free(id);
    return rc;
}

static enum MHD_Result h_session(api_req_t *r, const char *id)
{
    if (*id == '\0')
        return api_send_error(r->conn, 400, "bad_request", "client_id", "empty client id");
    api_job_t *job = api_job_new(API_JOB_DROP);
    job->client_id = an_strndup(id, strlen(id));
    if ((job = run_job(r, job, home_of(r->srv, id))) == NULL)
        return MHD_YES;
    int found = job->found;
    api_job_release(job);
    if (!found)
        return api_send_error(r->conn, 404, "not_found", "client_id", "no session for '%s'", id);
    return api_send_empty(r->conn, 204);
}

/* The body forms, for any client id (one of 64 KB does not fit a URL):
 * {"client_id": "..."}.  The id is copied into *id (freed by the caller);
 * NULL after answering 400. */
static char *body_client_id(api_req_t *r)
{
    json_error_t jerr;
    json_t *body = r->body ? json_loadb(r->body, r->body_len, 0, &jerr) : NULL;
    char *id = NULL;
    const char *k;
    json_t *v;
    if (!json_is_object(body)) {
        api_send_error(r->conn, 400, "bad_request", "body",
                       "the body must be a JSON object {\"client_id\": \"...\"}");
        goto out;
    }
    json_object_foreach(body, k, v)
    {
        if (strcmp(k, "client_id") != 0) {
            api_send_error(r->conn, 400, "bad_request", k, "unknown field '%s'", k);
            goto out;
        }
    }
    v = json_object_get(body, "client_id");
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        api_send_error(r->conn, 400, "bad_request", "client_id",
                       "client_id is required (a non-empty string without NUL)");
        goto out;
    }
    id = an_strndup(json_string_value(v), json_string_length(v));
out:
    json_decref(body);
    return id;
}

static enum MHD_Result h_client_lookup(api_req_t *r, const char *tail)
{
    (void)tail;
    char *id = body_client_id(r);
    if (id == NULL)
        return MHD_YES;
    enum MHD_Result ret = client_op(r, id, 0);
    free(id);
    return ret;
}

static enum MHD_Result h_client_kick(api_req_t *r, const char *tail)
{
    (void)tail;
    char *id = body_client_id(r);
    if (id == NULL)
        return MHD_YES;
    enum MHD_Result ret = client_op(r, id, 1);
    free(id);
    return ret;
}

static enum MHD_Result h_session_drop(api_req_t *r, const char *tail)
{
    (void)tail;
    char *id = body_client_id(r);
    if (id == NULL)
        return MHD_YES;
    enum MHD_Result ret = h_session(r, id);
    free(id);
    return ret;
}

/* ---- subscriptions and topics --------------------------------------------- */

static json_t *subscriptions(api_req_t *r, const char *client_id, const char *topic, size_t keep,
                             size_t *total)
{
    api_job_t *job = api_job_new(API_JOB_SUBS);
    job->keep = keep;
    if (client_id)
        job->client_id = an_strndup(client_id, strlen(client_id));
    if (topic)
        job->topic = an_strndup(topic, strlen(topic));
    if ((job = run_job(r, job, client_id ? home_of(r->srv, client_id) : -1)) == NULL)
        return NULL;
    json_t *items = json_incref(job->data);
    if (total)
        *total = (size_t)job->total;
    api_job_release(job);
    return items;
}

static enum MHD_Result h_subscriptions(api_req_t *r, const char *tail)
{
    (void)tail;
    PAGING(r, page, limit);
    size_t total = 0;
    json_t *items =
        subscriptions(r, arg(r, "client_id"), arg(r, "topic"), (size_t)(page * limit), &total);
    if (items == NULL)
        return MHD_YES;
    return send_page_of(r, items, by_client, page, limit, total);
}

static enum MHD_Result h_topics(api_req_t *r, const char *tail)
{
    (void)tail;
    PAGING(r, page, limit);
    json_t *subs = subscriptions(r, NULL, NULL, 0, NULL);
    if (subs == NULL)
        return MHD_YES;
    json_t *counts = json_object();
    size_t i;
    json_t *s;
    json_array_foreach(subs, i, s)
    {
        const char *t = str_of(s, "topic");
        json_t *n = json_object_get(counts, t);
        json_object_set_new(counts, t, json_integer(n ? json_integer_value(n) + 1 : 1));
    }
    json_decref(subs);
    json_t *items = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(counts, k, v)
    {
        json_t *o = json_object();
        json_object_set_new(o, "topic", json_string(k));
        json_object_set_new(o, "subscribers", json_incref(v));
        json_array_append_new(items, o);
    }
    json_decref(counts);
    return send_page(r, items, by_topic, page, limit);
}

/* ---- retained ------------------------------------------------------------ */

typedef struct {
    json_t *items;
    int detail;
    uint64_t now;
} retained_ctx_t;

static json_t *props_json(const msg_t *m, uint64_t now)
{
    json_t *o = json_object();
    if (m->expire_at)
        json_object_set_new(
            o, "message_expiry_interval",
            json_integer(m->expire_at > now ? (json_int_t)((m->expire_at - now + 999) / 1000) : 0));
    if (m->props_len == 0)
        return o;
    mqtt_props_t pr;
    const char *why = NULL;
    if (mqtt_props_parse(msg_props(m), m->props_len, MQTT_PUBLISH, MQTT_FROM_CLIENT, &pr, &why) !=
        MQTT_OK)
        return o;
    if (mqtt_props_has(&pr, MQTT_PROP_PAYLOAD_FORMAT))
        json_object_set_new(o, "payload_format_indicator", json_integer(pr.payload_format));
    if (mqtt_props_has(&pr, MQTT_PROP_CONTENT_TYPE))
        json_object_set_new(o, "content_type",
                            json_stringn((const char *)pr.content_type.p, pr.content_type.len));
    if (mqtt_props_has(&pr, MQTT_PROP_RESPONSE_TOPIC))
        json_object_set_new(o, "response_topic",
                            json_stringn((const char *)pr.response_topic.p, pr.response_topic.len));
    if (mqtt_props_has(&pr, MQTT_PROP_CORRELATION_DATA)) {
        char *b = b64_encode_alloc(pr.correlation_data.p, pr.correlation_data.len);
        json_object_set_new(o, "correlation_data", json_string(b));
        free(b);
    }
    if (pr.user_count) {
        json_t *ups = json_array();
        uint32_t pos = 0;
        mqtt_str_t k, v;
        while (mqtt_props_user_next(&pr, &pos, &k, &v))
            json_array_append_new(ups, json_pack("[s#s#]", (const char *)k.p, (size_t)k.len,
                                                 (const char *)v.p, (size_t)v.len));
        json_object_set_new(o, "user_properties", ups);
    }
    return o;
}

static void on_retained(void *ud, msg_t *m)
{
    retained_ctx_t *ctx = ud;
    json_t *o = json_object();
    json_object_set_new(o, "topic", json_stringn((const char *)msg_topic(m), m->topic_len));
    json_object_set_new(o, "qos", json_integer(m->qos));
    json_object_set_new(o, "payload_size", json_integer(m->payload_len));
    int text = mqtt_utf8_valid(msg_payload(m), m->payload_len);
    if (ctx->detail) {
        json_object_set_new(o, "payload",
                            text ? json_stringn((const char *)msg_payload(m), m->payload_len)
                                 : json_null());
        char *b = b64_encode_alloc(msg_payload(m), m->payload_len);
        json_object_set_new(o, "payload_base64", json_string(b));
        free(b);
        json_object_set_new(o, "properties", props_json(m, ctx->now));
    } else {
        size_t n = AN_MIN(m->payload_len, PREVIEW_BYTES);
        /* cut at a character boundary */
        while (n > 0 && n < m->payload_len && (msg_payload(m)[n] & 0xC0) == 0x80)
            n--;
        json_object_set_new(o, "preview",
                            text ? json_stringn((const char *)msg_payload(m), n) : json_null());
    }
    json_array_append_new(ctx->items, o);
    msg_unref(&m);
}

static enum MHD_Result h_retained_list(api_req_t *r, const char *tail)
{
    (void)tail;
    PAGING(r, page, limit);
    const char *prefix = arg(r, "topic_prefix");
    retained_ctx_t ctx = {json_array(), 0, an_now_ms()};
    retain_walk(r->srv->retain, (const uint8_t *)(prefix ? prefix : ""),
                prefix ? strlen(prefix) : 0, on_retained, &ctx);
    return send_page(r, ctx.items, by_topic, page, limit);
}

static enum MHD_Result h_retained(api_req_t *r, const char *topic)
{
    size_t len = strlen(topic);
    if (len == 0 || len > 65535 || !mqtt_topic_name_valid((const uint8_t *)topic, len))
        return api_send_error(r->conn, 400, "bad_request", "topic",
                              "'%s' is not a valid topic name (no wildcards, not empty)", topic);
    retained_ctx_t ctx = {json_array(), 1, an_now_ms()};
    retain_match(r->srv->retain, (const uint8_t *)topic, len, on_retained, &ctx);
    if (json_array_size(ctx.items) == 0) {
        json_decref(ctx.items);
        return api_send_error(r->conn, 404, "not_found", "topic", "no retained message on '%s'",
                              topic);
    }
    if (strcmp(r->method, "DELETE") == 0) {
        json_decref(ctx.items);
        api_job_t *job = api_job_new(API_JOB_RETAIN_DEL);
        job->topic = an_strndup(topic, len);
        if ((job = run_job(r, job, 0)) == NULL)
            return MHD_YES;
        api_job_release(job);
        return api_send_empty(r->conn, 204);
    }
    json_t *item = json_incref(json_array_get(ctx.items, 0));
    json_decref(ctx.items);
    return api_send_json(r->conn, 200, item);
}

/* ---- publish ------------------------------------------------------------- */

#define BAD(field, ...)                                                                            \
    do {                                                                                           \
        ret = api_send_error(r->conn, 400, "bad_request", field, __VA_ARGS__);                     \
        goto out;                                                                                  \
    } while (0)

static enum MHD_Result h_publish(api_req_t *r, const char *tail)
{
    (void)tail;
    enum MHD_Result ret = MHD_YES;
    uint8_t *payload = NULL, *props = NULL, *corr = NULL;
    json_error_t jerr;
    json_t *body = r->body ? json_loadb(r->body, r->body_len, 0, &jerr) : NULL;
    if (body == NULL)
        BAD("body", "the body must be a JSON object%s%s", r->body ? ": " : "",
            r->body ? jerr.text : "");
    if (!json_is_object(body))
        BAD("body", "the body must be a JSON object");
    static const char *const known[] = {
        "topic", "payload", "payload_encoding", "qos", "retain", "properties", NULL};
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        int ok = 0;
        for (int i = 0; known[i]; i++)
            ok |= strcmp(k, known[i]) == 0;
        if (!ok)
            BAD(k, "unknown field '%s'", k);
    }
    json_t *jt = json_object_get(body, "topic");
    if (!json_is_string(jt))
        BAD("topic", "topic is required (a string)");
    const char *topic = json_string_value(jt);
    size_t tlen = json_string_length(jt);
    if (tlen == 0 || tlen > 65535 || !mqtt_topic_name_valid((const uint8_t *)topic, tlen))
        BAD("topic", "topic must be a valid topic name (not empty, no wildcards)");
    json_t *jenc = json_object_get(body, "payload_encoding");
    int b64 = 0;
    if (jenc) {
        if (!json_is_string(jenc))
            BAD("payload_encoding", "payload_encoding must be \"plain\" or \"base64\"");
        if (strcmp(json_string_value(jenc), "base64") == 0)
            b64 = 1;
        else if (strcmp(json_string_value(jenc), "plain") != 0)
            BAD("payload_encoding", "payload_encoding must be \"plain\" or \"base64\"");
    }
    json_t *jp = json_object_get(body, "payload");
    if (jp && !json_is_string(jp))
        BAD("payload", "payload must be a string");
    const char *ptext = jp ? json_string_value(jp) : "";
    size_t plen = jp ? json_string_length(jp) : 0;
    int n = (int)plen;
    payload = an_malloc(plen + 4);
    if (b64) {
        n = (int)b64_decode(ptext, plen, payload, plen);
        if (n < 0)
            BAD("payload", "payload is not valid base64");
    } else {
        memcpy(payload, ptext, plen);
    }
    if ((uint64_t)n + tlen + 64 > r->srv->conf.max_packet_size)
        BAD("payload", "the message is larger than max_packet_size (%u bytes)",
            r->srv->conf.max_packet_size);
    json_t *jq = json_object_get(body, "qos");
    json_int_t qos = 0;
    if (jq) {
        if (!json_is_integer(jq) || json_integer_value(jq) < 0 || json_integer_value(jq) > 2)
            BAD("qos", "qos must be 0, 1 or 2");
        qos = json_integer_value(jq);
    }
    json_t *jr = json_object_get(body, "retain");
    if (jr && !json_is_boolean(jr))
        BAD("retain", "retain must be true or false");
    int retain = jr && json_is_true(jr);

    /* properties: measured, then written (mqtt_pw) */
    json_t *jprops = json_object_get(body, "properties");
    uint64_t expiry_ms = 0;
    size_t props_len = 0;
    if (jprops) {
        if (!json_is_object(jprops))
            BAD("properties", "properties must be an object");
        json_object_foreach(jprops, k, v)
        {
            if (strcmp(k, "content_type") && strcmp(k, "response_topic") &&
                strcmp(k, "correlation_data") && strcmp(k, "message_expiry_interval") &&
                strcmp(k, "payload_format_indicator") && strcmp(k, "user_properties"))
                BAD("properties", "unknown property '%s'", k);
        }
        json_t *ct = json_object_get(jprops, "content_type");
        json_t *rt = json_object_get(jprops, "response_topic");
        json_t *cd = json_object_get(jprops, "correlation_data");
        json_t *me = json_object_get(jprops, "message_expiry_interval");
        json_t *pf = json_object_get(jprops, "payload_format_indicator");
        json_t *up = json_object_get(jprops, "user_properties");
        if (ct && !json_is_string(ct))
            BAD("properties.content_type", "content_type must be a string");
        if (rt && (!json_is_string(rt) || json_string_length(rt) == 0 ||
                   !mqtt_topic_name_valid((const uint8_t *)json_string_value(rt),
                                          json_string_length(rt))))
            BAD("properties.response_topic", "response_topic must be a valid topic name");
        int clen = 0;
        if (cd) {
            if (!json_is_string(cd))
                BAD("properties.correlation_data", "correlation_data must be base64 text");
            corr = an_malloc(json_string_length(cd) + 4);
            clen = (int)b64_decode(json_string_value(cd), json_string_length(cd), corr,
                                   json_string_length(cd));
            if (clen < 0 || clen > 65535)
                BAD("properties.correlation_data",
                    "correlation_data must be base64 (at most 65535 bytes)");
        }
        if (me) {
            if (!json_is_integer(me) || json_integer_value(me) < 0 ||
                json_integer_value(me) > (json_int_t)UINT32_MAX)
                BAD("properties.message_expiry_interval",
                    "message_expiry_interval must be an integer of seconds (0 .. 4294967295)");
            if (json_integer_value(me) > 0)
                expiry_ms = (uint64_t)json_integer_value(me) * 1000u;
        }
        if (pf &&
            (!json_is_integer(pf) || json_integer_value(pf) < 0 || json_integer_value(pf) > 1))
            BAD("properties.payload_format_indicator", "payload_format_indicator must be 0 or 1");
        if (pf && json_integer_value(pf) == 1 && !mqtt_utf8_valid(payload, (size_t)n))
            BAD("payload", "payload_format_indicator 1 needs a UTF-8 payload");
        if (up) {
            size_t i;
            json_t *pair;
            if (!json_is_array(up))
                BAD("properties.user_properties",
                    "user_properties must be a list of [name, value]");
            json_array_foreach(up, i, pair)
            {
                if (!json_is_array(pair) || json_array_size(pair) != 2 ||
                    !json_is_string(json_array_get(pair, 0)) ||
                    !json_is_string(json_array_get(pair, 1)))
                    BAD("properties.user_properties",
                        "user_properties[%zu] must be [name, value] (strings)", i);
            }
        }
        for (int pass = 0; pass < 2; pass++) {
            mqtt_pw_t pw;
            mqtt_pw_init(&pw, props, pass ? props_len : 0);
            if (pf)
                mqtt_pw_int(&pw, MQTT_PROP_PAYLOAD_FORMAT, (uint32_t)json_integer_value(pf));
            if (ct)
                mqtt_pw_str(&pw, MQTT_PROP_CONTENT_TYPE, json_string_value(ct),
                            json_string_length(ct));
            if (rt)
                mqtt_pw_str(&pw, MQTT_PROP_RESPONSE_TOPIC, json_string_value(rt),
                            json_string_length(rt));
            if (cd)
                mqtt_pw_str(&pw, MQTT_PROP_CORRELATION_DATA, corr, (size_t)clen);
            if (up) {
                size_t i;
                json_t *pair;
                json_array_foreach(up, i, pair)
                {
                    json_t *a = json_array_get(pair, 0), *b = json_array_get(pair, 1);
                    mqtt_pw_user(&pw, json_string_value(a), json_string_length(a),
                                 json_string_value(b), json_string_length(b));
                }
            }
            if (mqtt_pw_error(&pw))
                BAD("properties", "a property is too long (65535 bytes at most)");
            if (pass == 0) {
                props_len = mqtt_pw_len(&pw);
                props = an_malloc(props_len ? props_len : 1);
            }
        }
    }
    msg_t *m = msg_new_v5((const uint8_t *)topic, (uint16_t)tlen, props, (uint32_t)props_len,
                          payload, (uint32_t)n, (uint8_t)qos, (uint8_t)retain,
                          expiry_ms ? an_now_ms() + expiry_ms : 0);
    msg_set_origin(m, &msg_origin_api);
    api_job_t *job = api_job_new(API_JOB_PUBLISH);
    job->msg = m;
    if ((job = run_job(r, job, 0)) == NULL)
        goto out;
    if (job->delivered == ROUTER_REFUSED) {
        /* limits.queue_full: refuse, and a subscriber's queue is full */
        api_job_release(job);
        ret = api_send_error(r->conn, 429, "quota_exceeded", NULL,
                             "not published: a subscriber's queue is full (limits.queue_full)");
        goto out;
    }
    json_t *o = json_object();
    json_object_set_new(o, "delivered", json_integer((json_int_t)job->delivered));
    api_job_release(job);
    ret = api_send_json(r->conn, 200, o);
out:
    json_decref(body);
    free(payload);
    free(props);
    free(corr);
    return ret;
}

/* ---- listeners, config, health, metrics ----------------------------------- */

static enum MHD_Result h_listeners(api_req_t *r, const char *tail)
{
    (void)tail;
    static const char *const transports[] = {"tcp", "tls", "ws", "wss"};
    json_t *data = json_array();
    reload_lock(r->srv); /* a reload may add listeners */
    for (uint32_t i = 0; i < r->srv->nlisteners; i++) {
        if (reload_listener_removed(r->srv, i))
            continue;
        const conf_listener_t *l = &r->srv->conf.listeners[i];
        json_t *o = json_object();
        json_object_set_new(o, "name", json_string(l->name));
        json_object_set_new(o, "type", json_string("mqtt"));
        json_object_set_new(o, "transport", json_string(transports[l->transport & 3]));
        json_object_set_new(o, "bind", json_string(l->address));
        json_object_set_new(o, "port", json_integer(r->srv->listen_ports[i]));
        json_object_set_new(o, "connections", json_integer(atomic_load(&r->srv->listen_conns[i])));
        json_object_set_new(o, "max_connections", json_integer(l->max_connections));
        json_array_append_new(data, o);
    }
    reload_unlock(r->srv);
    json_t *out = json_object();
    json_object_set_new(out, "data", data);
    return api_send_json(r->conn, 200, out);
}

typedef struct {
    json_t *stack[8];
    int depth;
    const char *keys[8];
} conf_ctx_t;

static void put(conf_ctx_t *x, const char *key, json_t *v)
{
    json_t *top = x->stack[x->depth];
    if (json_is_array(top))
        json_array_append_new(top, v);
    else
        json_object_set_new(top, key, v);
}

/* s as a JSON string, the password of a "scheme://user:password@host..."
 * replaced by <redacted>. */
static json_t *url_redacted(const char *s)
{
    const char *p = s ? strstr(s, "://") : NULL;
    if (p == NULL)
        return json_string(s);
    p += 3;
    size_t auth = strcspn(p, "/?#");
    const char *at = memchr(p, '@', auth);
    const char *colon = at ? memchr(p, ':', (size_t)(at - p)) : NULL;
    if (colon == NULL)
        return json_string(s);
    char buf[1024];
    snprintf(buf, sizeof(buf), "%.*s<redacted>%s", (int)(colon + 1 - s), s, at);
    return json_string(buf);
}

static void on_conf(void *ud, int kind, const char *key, const char *s, uint64_t u)
{
    conf_ctx_t *x = ud;
    switch (kind) {
    case CONF_V_SECTION:
    case CONF_V_ITEM:
    case CONF_V_LIST: {
        json_t *n = kind == CONF_V_LIST ? json_array() : json_object();
        put(x, key, n);
        if (x->depth < 7)
            x->stack[++x->depth] = n;
        break;
    }
    case CONF_V_END:
        if (x->depth > 0)
            x->depth--;
        break;
    case CONF_V_STR:
        /* secrets held in the configuration itself (auth.jwt.secret,
         * auth.redis.password, the password of a url such as
         * persistence.redis.url) are redacted; files are shown by path */
        if (key && s && s[0] && (strcmp(key, "secret") == 0 || strcmp(key, "password") == 0))
            put(x, key, json_string("<redacted>"));
        else
            put(x, key, url_redacted(s));
        break;
    case CONF_V_UINT:
        put(x, key, json_integer((json_int_t)u));
        break;
    case CONF_V_BOOL:
        put(x, key, json_boolean(u));
        break;
    }
}

static enum MHD_Result h_config(api_req_t *r, const char *tail)
{
    (void)tail;
    conf_ctx_t x = {.depth = 0};
    x.stack[0] = json_object();
    reload_lock(r->srv);
    conf_walk(server_live(r->srv), on_conf, &x);
    reload_unlock(r->srv);
    return api_send_json(r->conn, 200, x.stack[0]);
}

static enum MHD_Result h_live(api_req_t *r, const char *tail)
{
    (void)tail;
    return api_send_json(r->conn, 200, json_pack("{s:s}", "status", "ok"));
}

static enum MHD_Result h_ready(api_req_t *r, const char *tail)
{
    (void)tail;
    if (reload_draining(r->srv))
        return api_send_json(r->conn, 503,
                             json_pack("{s:s,s:s,s:s}", "status", "draining", "code", "draining",
                                       "error", "the broker is draining (POST /api/v1/drain)"));
    for (uint32_t i = 0; i < r->srv->nlisteners; i++)
        if (r->srv->listen_fds[i] < 0 && !reload_listener_removed(r->srv, i))
            return api_send_json(r->conn, 503,
                                 json_pack("{s:s,s:s,s:s}", "status", "unavailable", "code",
                                           "unavailable", "error", "a listener is not open"));
    api_job_t *job = api_job_new(API_JOB_PING);
    if (api_job_submit(r->srv, job, -1, r->srv->conf.api_timeout_ms) < 0) {
        api_job_release(job);
        return api_send_json(r->conn, 503,
                             json_pack("{s:s,s:s,s:s}", "status", "unavailable", "code",
                                       "unavailable", "error",
                                       "a worker did not answer within timeout_ms"));
    }
    api_job_release(job);
    for (uint32_t i = 0; i < r->srv->nmodules; i++) {
        module_inst_t *mi = &r->srv->modules[i];
        const char *why = mi->inited && mi->m->unready ? mi->m->unready(mi) : NULL;
        if (why != NULL)
            return api_send_json(r->conn, 503,
                                 json_pack("{s:s,s:s,s:s,s:s}", "status", "unavailable", "code",
                                           "unavailable", "module", mi->m->name, "error", why));
    }
    return api_send_json(r->conn, 200,
                         json_pack("{s:s,s:i,s:i}", "status", "ready", "workers",
                                   (int)r->srv->nworkers, "listeners", (int)r->srv->nlisteners));
}

static json_t *names_json(const char (*names)[RELOAD_NAME_LEN], uint32_t n)
{
    json_t *a = json_array();
    for (uint32_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(names[i]));
    return a;
}

/* What SIGHUP does (reload.h), on this thread: reopen the log, reload the
 * files and the YAML; the answer says what was applied, what needs a
 * restart, and the errors (a bad file: 400, nothing changed). */
static enum MHD_Result h_reload(api_req_t *r, const char *tail)
{
    (void)tail;
    reload_result_t *res = an_malloc(sizeof(*res));
    int errors = reload_run(r->srv, res);
    json_t *err = json_array();
    for (uint32_t i = 0; i < res->nerrors; i++)
        json_array_append_new(err, json_string(res->errors[i]));
    json_t *out = json_pack("{s:b,s:o,s:o,s:o}", "reloaded", errors == 0, "applied",
                            names_json(res->applied, res->napplied), "restart_required",
                            names_json(res->restart_required, res->nrestart), "errors", err);
    free(res);
    return api_send_json(r->conn, errors ? 400 : 200, out);
}

static json_t *drain_json(server_t *srv)
{
    reload_drain_status_t st;
    reload_drain_status(srv, &st);
    return json_pack("{s:b,s:I,s:i,s:b,s:s,s:I,s:I,s:I}", "draining", st.draining, "started_ms",
                     (json_int_t)st.started_ms, "rate", (int)st.rate, "stay", st.stay,
                     "server_reference", st.server_reference, "disconnected",
                     (json_int_t)st.disconnected, "clients_left", (json_int_t)st.clients_left,
                     "sessions_to_hand_over", (json_int_t)st.sessions_to_hand_over);
}

/* POST {"rate": N, "server_reference": "host:port", "stay": bool}: start
 * draining (reload.h); GET: its progress. */
static enum MHD_Result h_drain(api_req_t *r, const char *tail)
{
    (void)tail;
    if (strcmp(r->method, "POST") != 0)
        return api_send_json(r->conn, 200, drain_json(r->srv));
    json_error_t jerr;
    json_t *body =
        r->body && r->body_len ? json_loadb(r->body, r->body_len, 0, &jerr) : json_object();
    enum MHD_Result ret;
    const char *k, *ref = "";
    json_t *v;
    json_int_t rate = 1000;
    int stay = 0;
    if (!json_is_object(body)) {
        ret = api_send_error(r->conn, 400, "bad_request", "body",
                             "the body must be a JSON object {\"rate\": N, "
                             "\"server_reference\": \"HOST:PORT\", \"stay\": false}");
        goto out;
    }
    json_object_foreach(body, k, v)
    {
        if (strcmp(k, "rate") == 0 && json_is_integer(v) && json_integer_value(v) >= 1 &&
            json_integer_value(v) <= 1000000)
            rate = json_integer_value(v);
        else if (strcmp(k, "server_reference") == 0 && json_is_string(v) &&
                 json_string_length(v) < 256)
            ref = json_string_value(v);
        else if (strcmp(k, "stay") == 0 && json_is_boolean(v))
            stay = json_is_true(v);
        else {
            ret = api_send_error(r->conn, 400, "bad_request", k,
                                 "bad field '%s' (rate: 1..1000000, server_reference: a "
                                 "string, stay: a boolean)",
                                 k);
            goto out;
        }
    }
    char err[128];
    if (reload_drain_start(r->srv, (uint32_t)rate, ref, stay, err, sizeof(err)) < 0) {
        ret = api_send_error(r->conn, 409, "conflict", NULL, "%s", err);
        goto out;
    }
    ret = api_send_json(r->conn, 202, drain_json(r->srv));
out:
    json_decref(body);
    return ret;
}

static enum MHD_Result h_metrics(api_req_t *r, const char *tail)
{
    (void)tail;
    size_t len;
    char *text = api_metrics_text(r->srv, &len);
    return api_send_text(r->conn, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

/* ---- modules' routes (module.h) ----------------------------------------- */

const char *module_api_query(const module_api_req_t *req, const char *key)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

int module_api_error(json_t **out, int status, const char *code, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    *out = json_pack("{s:s,s:s}", "error", text, "code", code);
    return status;
}

/* A text answer travels as an object with the two marker keys below
 * (module_call sends the text itself, not the JSON). */
#define MODULE_TEXT_KEY "\001text"
#define MODULE_TYPE_KEY "\001type"

json_t *module_api_text(const char *type, const char *text, size_t len)
{
    return json_pack("{s:s%,s:s}", MODULE_TEXT_KEY, text, len, MODULE_TYPE_KEY, type);
}

/* Does route rt match rest (the path after /api/v1/)?  A '*' in its path
 * matches one path segment (not empty, no '/'); a prefix route matches
 * what starts so.  *tail: for a prefix route, what follows the path; for a
 * route with '*', what follows the part before its first '*' (so the
 * handler sees the segments it matched); else "". */
static int route_match(const module_api_route_t *rt, const char *rest, const char **tail)
{
    const char *p = rt->path, *r = rest, *star = strchr(rt->path, '*');
    while (*p) {
        if (*p == '*') {
            size_t seg = strcspn(r, "/");
            if (seg == 0)
                return 0;
            r += seg;
            p++;
        } else if (*p++ != *r++) {
            return 0;
        }
    }
    if (!rt->prefix && *r != '\0')
        return 0;
    *tail = star ? rest + (star - rt->path) : rt->prefix ? r : "";
    return 1;
}

/* A module's route for r->url under /api/v1/ (NULL when none); *refused is
 * set when the path is a module's but not the method.  Exact routes and
 * routes with '*' are tried before plain prefix routes, across modules, so
 * that the commands module's devices-star-commands route wins over the
 * devices module's "devices/" prefix. */
static const module_api_route_t *module_route(api_req_t *r, unsigned m, module_inst_t **mi_out,
                                              const char **tail, int *refused)
{
    static const char base[] = "/api/v1/";
    if (strncmp(r->url, base, sizeof(base) - 1) != 0)
        return NULL;
    const char *rest = r->url + sizeof(base) - 1;
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t i = 0; i < r->srv->nmodules; i++) {
            module_inst_t *mi = &r->srv->modules[i];
            if (!mi->inited || mi->m->api_routes == NULL)
                continue;
            for (const module_api_route_t *rt = mi->m->api_routes; rt->path; rt++) {
                int plain_prefix = rt->prefix && strchr(rt->path, '*') == NULL;
                if (plain_prefix != pass || !route_match(rt, rest, tail))
                    continue;
                if (!(rt->methods & m)) {
                    *refused = 1;
                    continue;
                }
                *mi_out = mi;
                return rt;
            }
        }
    return NULL;
}

static enum MHD_Result module_call(api_req_t *r, module_inst_t *mi, const module_api_route_t *rt,
                                   const char *tail)
{
    module_api_req_t req = {
        .method = strcmp(r->method, "HEAD") == 0 ? "GET" : r->method,
        .tail = tail,
        .body = r->body,
        .body_len = r->body_len,
        .conn = r->conn,
        .content_type = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Type")};
    json_t *out = NULL;
    int status = rt->fn(mi, &req, &out);
    if (status < 100 || status > 599) {
        json_decref(out);
        return api_send_error(r->conn, 500, "internal", NULL, "module %s answered %d", mi->m->name,
                              status);
    }
    if (out == NULL)
        return api_send_empty(r->conn, (unsigned)status);
    json_t *text = json_object_get(out, MODULE_TEXT_KEY);
    if (text != NULL) {
        size_t len = json_string_length(text);
        char *copy = an_malloc(len + 1);
        memcpy(copy, json_string_value(text), len + 1);
        char type[128];
        snprintf(type, sizeof(type), "%s",
                 json_string_value(json_object_get(out, MODULE_TYPE_KEY)));
        json_decref(out);
        return api_send_text(r->conn, (unsigned)status, type, copy, len);
    }
    return api_send_json(r->conn, (unsigned)status, out);
}

/* ---- the table ----------------------------------------------------------- */

enum { M_GET = 1, M_POST = 2, M_DELETE = 4, M_PUT = 8, M_PATCH = 16 };
_Static_assert((int)M_GET == (int)MODULE_API_GET && (int)M_POST == (int)MODULE_API_POST &&
                   (int)M_DELETE == (int)MODULE_API_DELETE && (int)M_PUT == (int)MODULE_API_PUT &&
                   (int)M_PATCH == (int)MODULE_API_PATCH,
               "module routes use the same method bits");

typedef struct {
    const char *path;
    int prefix;  /* path is a prefix; the rest is the parameter */
    int methods; /* M_* */
    const char *allow;
    enum MHD_Result (*fn)(api_req_t *r, const char *tail);
} route_t;

static const route_t routes[] = {
    {"/api/v1/info", 0, M_GET, "GET", h_info},
    {"/api/v1/stats", 0, M_GET, "GET", h_stats},
    {"/api/v1/clients", 0, M_GET, "GET", h_clients},
    /* before the prefixes; GET /api/v1/clients/kick is the client "kick" */
    {"/api/v1/clients/lookup", 0, M_POST, "POST", h_client_lookup},
    {"/api/v1/clients/kick", 0, M_POST, "POST", h_client_kick},
    {"/api/v1/clients/events", 0, M_POST, "POST", h_client_events_body},
    {"/api/v1/sessions/drop", 0, M_POST, "POST", h_session_drop},
    {"/api/v1/clients/", 1, M_GET | M_DELETE, "GET, DELETE", h_client},
    {"/api/v1/sessions/", 1, M_DELETE, "DELETE", h_session},
    {"/api/v1/subscriptions", 0, M_GET, "GET", h_subscriptions},
    {"/api/v1/topics", 0, M_GET, "GET", h_topics},
    {"/api/v1/retained", 0, M_GET, "GET", h_retained_list},
    {"/api/v1/retained/", 1, M_GET | M_DELETE, "GET, DELETE", h_retained},
    {"/api/v1/publish", 0, M_POST, "POST", h_publish},
    {"/api/v1/listeners", 0, M_GET, "GET", h_listeners},
    {"/api/v1/config", 0, M_GET, "GET", h_config},
    {"/api/v1/reload", 0, M_POST, "POST", h_reload},
    {"/api/v1/drain", 0, M_GET | M_POST, "GET, POST", h_drain},
    {"/health/live", 0, M_GET, "GET", h_live},
    {"/health/ready", 0, M_GET, "GET", h_ready},
    {"/metrics", 0, M_GET, "GET", h_metrics},
};

enum MHD_Result api_route(api_req_t *r)
{
    int m = strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0 ? M_GET
            : strcmp(r->method, "POST") == 0                                ? M_POST
            : strcmp(r->method, "DELETE") == 0                              ? M_DELETE
            : strcmp(r->method, "PUT") == 0                                 ? M_PUT
            : strcmp(r->method, "PATCH") == 0                               ? M_PATCH
                                                                            : 0;
    const route_t *refused = NULL; /* the first route of the path, wrong method */
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const route_t *rt = &routes[i];
        size_t n = strlen(rt->path);
        if (rt->prefix ? strncmp(r->url, rt->path, n) != 0 : strcmp(r->url, rt->path) != 0)
            continue;
        if (rt->methods & m)
            return rt->fn(r, r->url + n);
        if (refused == NULL)
            refused = rt;
    }
    module_inst_t *mi = NULL;
    const char *tail = NULL;
    int mod_refused = 0;
    const module_api_route_t *mrt = module_route(r, (unsigned)m, &mi, &tail, &mod_refused);
    if (mrt != NULL)
        return module_call(r, mi, mrt, tail);
    if (refused == NULL && mod_refused)
        return api_send_error(r->conn, 405, "method_not_allowed", NULL, "%s is not allowed on %s",
                              r->method, r->url);
    if (refused)
        return api_send_error(r->conn, 405, "method_not_allowed", refused->allow,
                              "%s is not allowed on %s (allowed: %s)", r->method, r->url,
                              refused->allow);
    return api_send_error(r->conn, 404, "not_found", NULL, "no endpoint %s", r->url);
}
