/* httpin_down.c -- the HTTP device downlink: a long poll
 * (GET /devices/{id}/messages?wait=S&max=N) and an event stream
 * (GET /devices/{id}/events, server-sent events) of what the device's
 * session receives.
 *
 * What it owns: one hd_t per such request.  An hd_t is a session endpoint
 * (endpoint.h) of its own kind, embedded in it, attached on the device's
 * home worker to the session with client id {id}: persistent (expiry
 * http_ingest.session_expiry) and subscribed to http_ingest.subscriptions
 * ({id} replaced, each checked by the ACL for subscribe), so QoS 1/2
 * messages queue while no request is open, exactly as for an MQTT client.
 *
 * Threads and lifetime.  The MHD thread authenticates the device (the auth
 * chain, as for POST), makes the hd_t and posts it to the home worker
 * (WM_HTTPIN, HI_OP_ATTACH); the worker finds or creates the session, takes
 * it over from whatever endpoint held it (an older poll or stream, or an
 * MQTT connection: that request ends, 409 or the stream's end), subscribes,
 * attaches, and emits client_connected.  Deliveries are encoded on the
 * worker into the hd_t (a JSON array for a poll, "event: message" blocks of
 * text for a stream); the first of a turn posts HI_OP_FLUSH to the worker
 * itself, which acknowledges them to the session (sess_on_puback; QoS 2:
 * sess_on_pubrec, then sess_on_pubcomp at the PUBREL the session hands
 * back) and hands the text over to MHD.  A poll then detaches: it answers
 * what it has (200, a JSON array), or 204 when its wait ran out (a timer on
 * the worker's wheel).  A stream stays, with a comment line every
 * http_ingest.heartbeat; its end (the client gone, seen by MHD when it
 * writes) is MHD's completion callback, which posts HI_OP_DETACH.
 *
 * The MHD side never waits: a poll suspends its connection
 * (MHD_suspend_connection) until the worker resumes it; a stream's reader
 * suspends when it has nothing to send.  What both sides touch (the text,
 * done, suspended) is under httpin_t.mu; the session side (s, the timer,
 * the items, the acknowledgements) is the home worker's only.  References:
 * the MHD request, the stream's response, the attachment to the session,
 * and each inbox item hold one; the last frees.
 *
 * Delivery guarantee: a message counts as received once the worker has
 * handed the response (or the stream's text) that carries it to MHD.  A
 * response lost after that (the connection breaks) loses its messages: QoS
 * 1/2 is at-least-once up to the HTTP response, not to the device.
 */
#include <jansson.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth_chain.h"
#include "b64.h"
#include "endpoint.h"
#include "ep_claim.h"
#include "event.h"
#include "httpin_int.h"
#include "log.h"
#include "mqtt_codec.h"
#include "mqtt_props.h"
#include "persist.h"
#include "router.h"
#include "sess.h"
#include "sess_acl.h"
#include "util.h"

#define HD_MAX_ID 128
/* A stream whose client reads slower than messages come: past this many
 * bytes not yet read, QoS 0 messages are dropped and QoS 1/2 ones are not
 * acknowledged, so the session's window fills and its queue (bounded by
 * limits) holds the rest. */
#define HD_OUT_MAX (1u << 20)

typedef struct {
    uint16_t pid;
    uint8_t qos;
} hd_ack_t;

struct hd_s {
    endpoint_t ep; /* the session borrows it while attached */
    httpin_t *h;
    _Atomic int refs;
    uint8_t sse;
    uint32_t home; /* the worker of the session */
    struct MHD_Connection *conn;
    auth_client_t *ac; /* the device: user, ACL (the home worker's once posted) */
    char id[HD_MAX_ID];
    char peer[80];
    uint32_t wait_ms, max;
    /* the home worker's */
    worker_t *w;
    sess_t *s; /* attached to, or NULL */
    tw_timer_t timer;
    json_t *items; /* a poll's messages */
    hd_ack_t *acks;
    uint16_t *rels;
    size_t nacks, capacks, nrels, caprels;
    uint8_t closing, flush_posted;
    /* under h->mu */
    char *out; /* a stream's text not yet read; a poll's answer */
    size_t outlen, outcap;
    unsigned status; /* a poll's answer: 200, 204, 409, 503 */
    uint8_t done;    /* answered (poll), ended (stream) */
    uint8_t suspended, mhd_gone, answered;
    hd_t *prev, *next; /* h->open */
};

/* ---- references, hand-over ------------------------------------------------ */

static void hd_release(hd_t *d)
{
    if (atomic_fetch_sub(&d->refs, 1) != 1)
        return;
    auth_client_free(d->ac);
    json_decref(d->items);
    free(d->out);
    free(d->acks);
    free(d->rels);
    free(d);
}

static void hd_release_cb(void *cls)
{
    hd_release(cls);
}

/* Append text for MHD; h->mu held. */
static void out_append(hd_t *d, const char *p, size_t n)
{
    if (d->outlen + n > d->outcap) {
        d->outcap = (d->outlen + n) * 2;
        d->out = an_realloc(d->out, d->outcap);
    }
    memcpy(d->out + d->outlen, p, n);
    d->outlen += n;
}

/* Let MHD go on with the request; h->mu held. */
static void wake_locked(hd_t *d)
{
    if (d->suspended && !d->h->stopped && !d->mhd_gone) {
        d->suspended = 0;
        MHD_resume_connection(d->conn);
    }
}

static void post_self(hd_t *d, uint8_t op)
{
    atomic_fetch_add(&d->refs, 1);
    inbox_item_t it = {.kind = WM_HTTPIN, .flags = op, .ptr = d};
    worker_post(d->w, d->w->id, &it);
}

/* ---- the message as JSON -------------------------------------------------- */

static json_t *bin_json(const uint8_t *p, size_t n, json_t *o, const char *key, const char *enc)
{
    if (mqtt_utf8_valid(p, n)) {
        json_object_set_new(o, key, json_stringn((const char *)p, n));
    } else {
        char *b = an_malloc(B64_ENCODED_LEN(n) + 1);
        size_t l = b64_encode(p, n, b);
        json_object_set_new(o, key, json_stringn(b, l));
        json_object_set_new(o, enc, json_string("base64"));
        free(b);
    }
    return o;
}

static json_t *props_json(const msg_t *m)
{
    mqtt_props_t pr;
    const char *why = NULL;
    if (m->props_len == 0 || mqtt_props_parse(msg_props(m), m->props_len, MQTT_PUBLISH,
                                              MQTT_FROM_SERVER, &pr, &why) != MQTT_OK)
        return NULL;
    json_t *o = json_object();
    if (mqtt_props_has(&pr, MQTT_PROP_CONTENT_TYPE))
        json_object_set_new(o, "content_type",
                            json_stringn((const char *)pr.content_type.p, pr.content_type.len));
    if (mqtt_props_has(&pr, MQTT_PROP_RESPONSE_TOPIC))
        json_object_set_new(o, "response_topic",
                            json_stringn((const char *)pr.response_topic.p, pr.response_topic.len));
    if (mqtt_props_has(&pr, MQTT_PROP_CORRELATION_DATA))
        bin_json(pr.correlation_data.p, pr.correlation_data.len, o, "correlation_data",
                 "correlation_data_encoding");
    if (mqtt_props_has(&pr, MQTT_PROP_PAYLOAD_FORMAT))
        json_object_set_new(o, "payload_format", json_integer(pr.payload_format));
    if (pr.user_count) {
        json_t *u = json_array();
        uint32_t pos = 0;
        mqtt_str_t k, v;
        while (mqtt_props_user_next(&pr, &pos, &k, &v))
            json_array_append_new(u, json_pack("[s%s%]", (const char *)k.p, (size_t)k.len,
                                               (const char *)v.p, (size_t)v.len));
        json_object_set_new(o, "user_properties", u);
    }
    if (json_object_size(o) == 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *msg_json(const msg_t *m, uint8_t qos, uint8_t retain)
{
    json_t *o = json_object();
    json_object_set_new(o, "topic", json_stringn((const char *)msg_topic(m), m->topic_len));
    bin_json(msg_payload(m), m->payload_len, o, "payload", "encoding");
    json_object_set_new(o, "qos", json_integer(qos));
    json_object_set_new(o, "retain", json_boolean(retain));
    json_t *p = props_json(m);
    if (p)
        json_object_set_new(o, "properties", p);
    return o;
}

/* ---- the endpoint (home worker) ------------------------------------------- */

static hd_t *hd_of(const endpoint_t *ep)
{
    return container_of(ep, hd_t, ep);
}

static void want_flush(hd_t *d)
{
    if (!d->flush_posted) {
        d->flush_posted = 1;
        post_self(d, HI_OP_FLUSH);
    }
}

static size_t hd_backlog(const endpoint_t *ep)
{
    hd_t *d = hd_of(ep);
    pthread_mutex_lock(&d->h->mu);
    size_t n = d->outlen;
    pthread_mutex_unlock(&d->h->mu);
    return n;
}

static int hd_deliver(endpoint_t *ep, const msg_t *m, uint8_t qos, uint8_t retain, uint8_t dup,
                      uint16_t pid, const uint32_t *subids, uint32_t nsubids)
{
    (void)dup;
    (void)subids;
    (void)nsubids;
    hd_t *d = hd_of(ep);
    if (d->closing || (!d->sse && json_array_size(d->items) >= d->max))
        /* the answer is made: QoS 1/2 stay in flight for the next request */
        return qos == 0 && !retain ? -1 : 0;
    if (d->sse && qos == 0 && !retain && hd_backlog(ep) > HD_OUT_MAX)
        return -1; /* counted by the session as a slow consumer's drop */
    json_t *o = msg_json(m, qos, retain);
    if (d->sse) {
        char *t = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        pthread_mutex_lock(&d->h->mu);
        out_append(d, "event: message\ndata: ", 21);
        out_append(d, t, strlen(t));
        out_append(d, "\n\n", 2);
        pthread_mutex_unlock(&d->h->mu);
        free(t);
    } else {
        json_array_append_new(d->items, o);
    }
    atomic_fetch_add_explicit(&d->h->delivered, 1, memory_order_relaxed);
    if (qos) {
        if (d->nacks == d->capacks) {
            d->capacks = d->capacks ? d->capacks * 2 : 16;
            d->acks = an_realloc(d->acks, d->capacks * sizeof(*d->acks));
        }
        d->acks[d->nacks++] = (hd_ack_t){.pid = pid, .qos = qos};
    }
    want_flush(d);
    return 0;
}

static void hd_ack(endpoint_t *ep, uint8_t type, uint16_t pid, uint8_t reason, unsigned flags)
{
    (void)reason;
    (void)flags;
    hd_t *d = hd_of(ep);
    if (type != EP_ACK_PUBREL)
        return; /* the device publishes with POST, not through here */
    if (d->nrels == d->caprels) {
        d->caprels = d->caprels ? d->caprels * 2 : 16;
        d->rels = an_realloc(d->rels, d->caprels * sizeof(*d->rels));
    }
    d->rels[d->nrels++] = pid;
    want_flush(d);
}

static void hd_describe(const endpoint_t *ep, ep_info_t *out, char *peer, size_t size)
{
    const hd_t *d = hd_of(ep);
    *out = (ep_info_t){.client = {.username = d->ac ? d->ac->user : NULL,
                                  .listener = "http_ingest",
                                  .proto = EP_PROTO_HTTP},
                       .auth = d->ac};
    if (peer && size) {
        snprintf(peer, size, "%s", d->peer);
        out->client.peer = peer;
    }
}

static void emit_disconnected(hd_t *d, const char *why, uint8_t rc, uint8_t by_client)
{
    worker_t *w = d->w;
    if (!event_wanted(w->srv, EVENT_CLIENT_DISCONNECTED))
        return;
    char peer[80];
    ep_info_t info;
    event_disconnected_t ev = {.reason = why, .reason_code = rc, .by_client = by_client};
    ep_describe(&d->ep, &info, peer, sizeof(peer));
    ev.client = info.client;
    ev.client.client_id = d->s->client_id;
    event_emit(w, &w->srv->events, EVENT_CLIENT_DISCONNECTED, &ev);
}

/* The request ends (worker): a poll answers status with `body`, a stream
 * sends an "event: close" with it and ends. */
static void hd_end(hd_t *d, unsigned status, json_t *body)
{
    tw_del(&d->w->tw, &d->timer);
    char *t = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    pthread_mutex_lock(&d->h->mu);
    if (d->sse) {
        if (t) {
            out_append(d, "event: close\ndata: ", 19);
            out_append(d, t, strlen(t));
            out_append(d, "\n\n", 2);
        }
    } else {
        d->outlen = 0;
        if (t)
            out_append(d, t, strlen(t));
        d->status = status;
    }
    d->done = 1;
    wake_locked(d);
    pthread_mutex_unlock(&d->h->mu);
    free(t);
}

/* The session lets go of d (worker): detached (and client_disconnected)
 * unless the session already let go; the caller drops the attachment's
 * reference. */
static void hd_let_go(hd_t *d, const char *why, uint8_t rc, uint8_t by_client, int detach)
{
    sess_t *s = d->s;
    if (s == NULL)
        return;
    if (detach)
        emit_disconnected(d, why, rc, by_client);
    d->s = NULL;
    tw_del(&d->w->tw, &d->timer);
    STAT_ADD(d->w->stats.clients_connected, (uint64_t)-1);
    if (detach)
        sess_detach(d->w, s);
}

static json_t *err_body(const char *code, const char *text)
{
    return json_pack("{s:s, s:s}", "error", text, "code", code);
}

static void hd_close(endpoint_t *ep, ep_close_t why, const char *text)
{
    hd_t *d = hd_of(ep);
    int detach = why == EP_CLOSE_KICKED || why == EP_CLOSE_DISCARDED;
    const char *code = why == EP_CLOSE_TAKEN_OVER ? "taken_over"
                       : detach                   ? "kicked"
                                                  : "session_ended";
    if (d->s == NULL)
        return;
    hd_let_go(d, text ? text : code, 0x98, 0, detach);
    hd_end(d, why == EP_CLOSE_TAKEN_OVER ? 409 : 503, err_body(code, text ? text : code));
    hd_release(d); /* the attachment's */
}

static const endpoint_ops_t hd_ops = {.name = "http",
                                      .deliver = hd_deliver,
                                      .ack = hd_ack,
                                      .close = hd_close,
                                      .backlog = hd_backlog,
                                      .describe = hd_describe};

/* ---- acknowledgements and answers (home worker) ----------------------------- */

/* Everything handed over counts as received (see the header). */
static void hd_acks(hd_t *d)
{
    for (int round = 0; round < 64 && d->s && (d->nacks || d->nrels); round++) {
        hd_ack_t *acks = d->acks;
        uint16_t *rels = d->rels;
        size_t na = d->nacks, nr = d->nrels;
        d->acks = NULL;
        d->rels = NULL;
        d->nacks = d->capacks = d->nrels = d->caprels = 0;
        for (size_t i = 0; i < na && d->s; i++)
            if (acks[i].qos == 1)
                sess_on_puback(d->s, acks[i].pid, 0);
            else
                sess_on_pubrec(d->s, acks[i].pid, 0); /* the PUBREL comes to hd_ack */
        for (size_t i = 0; i < nr && d->s; i++)
            sess_on_pubcomp(d->s, rels[i]);
        free(acks);
        free(rels);
    }
}

/* A poll answers what it collected (worker, attached). */
static void hd_finish(hd_t *d)
{
    d->closing = 1;
    hd_acks(d);
    json_t *items = d->items;
    d->items = NULL;
    size_t n = json_array_size(items);
    hd_let_go(d, n ? "poll answered" : "poll timed out", 0, 0, 1);
    hd_end(d, n ? 200 : 204, n ? items : NULL);
    if (!n)
        json_decref(items);
    hd_release(d); /* the attachment's */
}

static void hd_flush(hd_t *d);

static void hd_on_timer(tw_timer_t *t)
{
    hd_t *d = container_of(t, hd_t, timer);
    if (d->s == NULL)
        return;
    if (!d->sse) {
        hd_finish(d); /* the wait ran out */
        return;
    }
    pthread_mutex_lock(&d->h->mu);
    out_append(d, ": heartbeat\n\n", 13);
    pthread_mutex_unlock(&d->h->mu);
    tw_add(&d->w->tw, &d->timer, d->w->now + d->h->c->heartbeat_ms);
    hd_flush(d); /* and what a slow reader held back */
}

static void hd_flush(hd_t *d)
{
    d->flush_posted = 0;
    if (d->s == NULL)
        return;
    if (!d->sse) {
        if (json_array_size(d->items))
            hd_finish(d);
        else
            hd_acks(d); /* a PUBREL resent at the attach */
        return;
    }
    pthread_mutex_lock(&d->h->mu);
    size_t unread = d->outlen;
    wake_locked(d);
    pthread_mutex_unlock(&d->h->mu);
    if (unread <= HD_OUT_MAX)
        hd_acks(d);
}

static void hd_attach(worker_t *w, hd_t *d)
{
    d->w = w;
    pthread_mutex_lock(&d->h->mu);
    int gone = d->mhd_gone || d->h->stopped;
    pthread_mutex_unlock(&d->h->mu);
    if (gone)
        return; /* the client left before it was attached */
    const httpin_conf_t *c = d->h->c;
    const char *filters[HTTPIN_MAX_SUBS];
    for (uint32_t i = 0; i < c->nsubs; i++)
        filters[i] = c->subs[i];
    ep_claim_t o = {.id = d->id,
                    .expiry = c->session_expiry,
                    .filters = filters,
                    .nfilters = c->nsubs,
                    .ac = d->ac,
                    .kind = "http"};
    ep_claimed_t *cl = an_malloc(sizeof(*cl)); /* 4 KB of filters: not on the stack */
    if (ep_claim(w, &d->ep, &o, cl) < 0) {
        free(cl);
        hd_end(d, 503, err_body("quota_exceeded", "limits.max_sessions persistent sessions exist"));
        return;
    }
    if (cl->took_over)
        atomic_fetch_add_explicit(&d->h->takeovers, 1, memory_order_relaxed);
    int present = cl->present;
    atomic_fetch_add(&d->refs, 1); /* the attachment */
    d->s = cl->s;
    ep_claim_attach(w, &d->ep, cl, &d->s);
    free(cl);
    if (d->s == NULL)
        return;
    if (d->sse) {
        log_ev(AN_LOG_INFO,
               &(log_fields_t){.event = "client_connected",
                               .client_id = d->id,
                               .username = d->ac ? d->ac->user : NULL,
                               .peer = d->peer,
                               .listener = "http_ingest"},
               "http device '%s': event stream attached (session present %d)", d->id, present);
        pthread_mutex_lock(&d->h->mu);
        out_append(d, ": attached\n\n", 12);
        pthread_mutex_unlock(&d->h->mu);
        tw_add(&w->tw, &d->timer, w->now + d->h->c->heartbeat_ms);
        hd_flush(d);
    } else if (json_array_size(d->items) || d->wait_ms == 0) {
        hd_finish(d); /* what was queued, at once */
    } else {
        hd_acks(d);
        tw_add(&w->tw, &d->timer, w->now + d->wait_ms);
    }
}

void httpin_down_run(worker_t *w, inbox_item_t *it)
{
    hd_t *d = it->ptr;
    switch (it->flags) {
    case HI_OP_ATTACH:
        hd_attach(w, d);
        break;
    case HI_OP_FLUSH:
        hd_flush(d);
        break;
    case HI_OP_DETACH:
        if (d->s) {
            if (d->sse)
                log_ev(AN_LOG_INFO,
                       &(log_fields_t){.event = "client_disconnected",
                                       .client_id = d->id,
                                       .peer = d->peer,
                                       .listener = "http_ingest"},
                       "http device '%s': event stream closed", d->id);
            hd_let_go(d, "connection closed by peer", 0, 1, 1);
            hd_release(d); /* the attachment's */
        }
        break;
    }
    hd_release(d); /* the item's */
}

void httpin_down_drop(inbox_item_t *it)
{
    hd_release(it->ptr); /* a stopped worker: sessions were freed with it */
}

/* ---- the MHD side ------------------------------------------------------------- */

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    hd_t *d = cls;
    httpin_t *h = d->h;
    pthread_mutex_lock(&h->mu);
    if (d->outlen) {
        size_t n = AN_MIN(d->outlen, max);
        memcpy(buf, d->out, n);
        memmove(d->out, d->out + n, d->outlen - n);
        d->outlen -= n;
        pthread_mutex_unlock(&h->mu);
        return (ssize_t)n;
    }
    if (d->done || h->stopped) {
        pthread_mutex_unlock(&h->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    d->suspended = 1;
    MHD_suspend_connection(d->conn);
    pthread_mutex_unlock(&h->mu);
    return 0;
}

static enum MHD_Result answer_poll(hd_t *d, struct MHD_Connection *conn)
{
    httpin_t *h = d->h;
    pthread_mutex_lock(&h->mu);
    if (d->answered) {
        pthread_mutex_unlock(&h->mu);
        return MHD_YES;
    }
    if (!d->done && !h->stopped) {
        d->suspended = 1;
        MHD_suspend_connection(conn);
        pthread_mutex_unlock(&h->mu);
        return MHD_YES;
    }
    d->answered = 1;
    unsigned status = d->done ? d->status : 503;
    char *body = d->done ? d->out : NULL;
    size_t len = d->done ? d->outlen : 0;
    if (body) {
        d->out = NULL;
        d->outlen = d->outcap = 0;
    }
    pthread_mutex_unlock(&h->mu);
    if (status == 503 && body == NULL)
        return httpin_send_error(conn, 503, "stopping", NULL, "the broker is stopping");
    if (status == 204)
        len = 0;
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, body && len ? body : (char *)"",
        body && len ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!(body && len))
        free(body);
    if (len)
        MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    enum MHD_Result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static int query_u32(struct MHD_Connection *conn, const char *key, uint32_t max, uint32_t *out)
{
    const char *v = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, key);
    if (v == NULL)
        return 0;
    char *end = NULL;
    unsigned long n = strtoul(v, &end, 10);
    if (*v == '\0' || *end != '\0' || *v == '-' || n > max)
        return -1;
    *out = (uint32_t)n;
    return 0;
}

enum MHD_Result httpin_down_get(httpin_t *h, struct MHD_Connection *conn, const char *id, int sse,
                                httpin_req_t *rq)
{
    if (rq->hd) /* resumed: the answer is there, or MHD stops */
        return answer_poll(rq->hd, conn);
    const httpin_conf_t *c = h->c;
    uint32_t wait_s = c->max_wait_ms / 1000u, max = c->max_messages;
    if (!sse) {
        if (query_u32(conn, "wait", c->max_wait_ms / 1000u, &wait_s) < 0)
            return httpin_send_error(conn, 400, "bad_request", "wait",
                                     "wait: seconds, at most http_ingest.max_wait");
        if (query_u32(conn, "max", c->max_messages, &max) < 0 || max == 0)
            return httpin_send_error(conn, 400, "bad_request", "max",
                                     "max: 1 to http_ingest.max_messages");
    }
    auth_client_t *ac = NULL;
    enum MHD_Result ret = MHD_NO;
    if (httpin_device_auth(h, conn, id, &ac, &ret) < 0)
        return ret;
    hd_t *d = an_calloc(1, sizeof(*d));
    d->ep = (endpoint_t){.ops = &hd_ops,
                         .max_packet = 0,
                         .receive_max = (uint16_t)(sse ? 65535 : AN_MIN(max, 65535u)),
                         .flags = 0};
    d->h = h;
    d->refs = 1; /* the request's */
    d->sse = (uint8_t)sse;
    d->conn = conn;
    d->ac = ac;
    snprintf(d->id, sizeof(d->id), "%s", id);
    httpin_peer(conn, d->peer, sizeof(d->peer));
    d->wait_ms = wait_s * 1000u;
    d->max = max;
    d->items = json_array();
    tw_timer_init(&d->timer, hd_on_timer);
    d->home = worker_home(h->srv, (const uint8_t *)id, strlen(id));
    pthread_mutex_lock(&h->mu);
    int stopped = h->stopped;
    if (!stopped) {
        d->next = h->open;
        if (h->open)
            h->open->prev = d;
        h->open = d;
    }
    pthread_mutex_unlock(&h->mu);
    if (stopped) {
        hd_release(d);
        return httpin_send_error(conn, 503, "stopping", NULL, "the broker is stopping");
    }
    rq->hd = d;
    atomic_fetch_add(sse ? &h->streams : &h->polls, 1);
    atomic_fetch_add(&d->refs, 1); /* the item's */
    inbox_vec_t v = {0};
    inbox_item_t it = {.kind = WM_HTTPIN, .flags = HI_OP_ATTACH, .ptr = d};
    inbox_vec_push(&v, &it);
    inbox_post(&h->srv->workers[d->home].inbox, &v);
    inbox_vec_free(&v);
    if (!sse)
        return answer_poll(d, conn);
    atomic_fetch_add(&d->refs, 1); /* the response's: released by MHD */
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_read, d, hd_release_cb);
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    ret = MHD_queue_response(conn, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

void httpin_down_completed(httpin_t *h, httpin_req_t *rq)
{
    hd_t *d = rq->hd;
    rq->hd = NULL;
    pthread_mutex_lock(&h->mu);
    d->mhd_gone = 1;
    d->suspended = 0;
    if (d->prev)
        d->prev->next = d->next;
    else if (h->open == d)
        h->open = d->next;
    if (d->next)
        d->next->prev = d->prev;
    d->prev = d->next = NULL;
    pthread_mutex_unlock(&h->mu);
    /* the home worker lets go of the session, if it still holds it */
    atomic_fetch_add(&d->refs, 1);
    inbox_vec_t v = {0};
    inbox_item_t it = {.kind = WM_HTTPIN, .flags = HI_OP_DETACH, .ptr = d};
    inbox_vec_push(&v, &it);
    inbox_post(&h->srv->workers[d->home].inbox, &v);
    inbox_vec_free(&v);
    hd_release(d); /* the request's */
}

void httpin_down_stop(httpin_t *h)
{
    pthread_mutex_lock(&h->mu);
    for (hd_t *d = h->open; d; d = d->next)
        if (d->suspended) {
            d->suspended = 0;
            MHD_resume_connection(d->conn);
        }
    h->stopped = 1;
    pthread_mutex_unlock(&h->mu);
}
