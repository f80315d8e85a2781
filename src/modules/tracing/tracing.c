/* tracing.c -- OpenTelemetry traces of a message's path, exported over
 * OTLP/HTTP (JSON), the module `tracing` (section `tracing:`).
 *
 * What is traced.  A client's message is traced when it carries a W3C
 * `traceparent` User Property (always: its context is continued), or when
 * the sampler picks it (tracing.sample_ratio).  A traced message gives:
 *   - one span "mqtt.publish" (kind SERVER) on the publisher's worker, from
 *     the receive hook (the PUBLISH was read, authorized) to the end of
 *     routing (the "message published" event, or "dropped" when refused),
 *     with the topic, QoS, publisher, number of receivers and whether it was
 *     stored in durable queues;
 *   - one span "mqtt.deliver" (kind PRODUCER) per subscriber it was sent
 *     to, on the subscriber's worker, a child of the publish span, from the
 *     PUBLISH sent to its acknowledgement (PUBACK, or PUBREC for QoS 2; at
 *     once for QoS 0), with the subscriber, QoS, packet id, ack reason.
 * The message itself is rewritten once in the receive hook: its
 * `traceparent` becomes "00-<trace id>-<publish span id>-<flags>" (the
 * publisher's own, if any, replaced), so MQTT 5 subscribers continue the
 * trace from the broker's span, and the message is flagged MSG_F_TRACED so
 * that delivery finds its context without looking at other messages.
 *
 * Cost.  Off (no endpoint): nothing registered, nothing per message (the
 * receive hook is NULL: one branch in proto.c).  On: a branch and a random
 * number per client message (plus a scan of its User Properties when it
 * has properties), the message, delivered and dropped events for every
 * message, and the work above for the traced ones; docs/benchmarks.md has
 * the measurement at 1 %.
 *
 * Export.  Each worker collects finished spans in its own buffer (no lock)
 * and, when tracing.batch_size spans are waiting or at its tick
 * (tracing.flush_interval), turns them into one OTLP JSON request handed to
 * an httpc client (its own I/O thread, a bounded queue: a full queue or a
 * failed export drops the batch, counted).  Deliveries waiting for their
 * acknowledgement sit in a bounded per-worker table (an entry older than
 * 60 s ends as unacknowledged).
 *
 * Threads: the configuration and the state's httpc client are set before
 * the workers run; the counters are atomics; a worker's context is its
 * own.
 */
#include "tracing.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "event.h"
#include "httpc.h"
#include "log.h"
#include "mqtt_codec.h"
#include "mqtt_props.h"
#include "msg.h"
#include "router.h"
#include "sess.h"
#include "util.h"

#define TR_TOPIC_MAX 128
#define TR_ID_MAX 64
#define TR_PENDING 1024    /* deliveries waiting for an ack, per worker */
#define TR_PENDING_PROBE 8 /* slots tried for one key */
#define TR_ACK_WAIT_NS (60ull * 1000000000ull)

static const char TRACEPARENT[] = "traceparent";

typedef struct {
    char endpoint[512];    /* OTLP/HTTP traces URL; "" = off */
    char sample_ratio[24]; /* as written */
    uint64_t threshold;    /* sampled when a 32-bit random number < it */
    char service_name[64];
    uint32_t batch_size; /* spans per export */
    uint32_t flush_ms;
    uint32_t timeout_ms;
    uint32_t max_exports; /* exports queued and in flight */
} tr_conf_t;

typedef struct {
    httpc_t *http;
    const tr_conf_t *conf;
    uint32_t index;            /* the module's (worker contexts) */
    _Atomic uint64_t traced;   /* messages traced */
    _Atomic uint64_t exported; /* spans accepted by the collector (2xx) */
    _Atomic uint64_t dropped;  /* spans dropped: queue full, export failed, table full */
    _Atomic uint64_t failed;   /* export requests that failed */
} tr_state_t;

enum { TR_PUBLISH = 0, TR_DELIVER = 1 };

typedef struct {
    uint8_t trace_id[16], span_id[8], parent_id[8];
    uint8_t has_parent;
    uint8_t kind; /* TR_* */
    uint8_t qos;
    uint8_t flags;   /* trace flags (sampled) */
    uint8_t stored;  /* publish: in durable queues */
    uint8_t acked;   /* deliver: the ack came (else unacknowledged) */
    uint8_t ack_rc;  /* deliver: its reason code */
    uint8_t dropped; /* publish: refused */
    uint16_t packet_id;
    uint32_t receivers;
    uint64_t start_ns, end_ns;
    char client_id[TR_ID_MAX + 1];
    char topic[TR_TOPIC_MAX + 1];
} tr_span_t;

typedef struct {
    uint64_t key; /* 0 = free */
    tr_span_t span;
} tr_pending_t;

typedef struct {
    tr_span_t *spans; /* finished, waiting for export */
    uint32_t nspans;
    uint64_t rng;
    /* the publish span between the receive hook and the end of routing */
    const msg_t *cur_msg;
    tr_span_t cur;
    tr_pending_t *pending; /* [TR_PENDING] */
    uint32_t npending;
} tr_worker_t;

/* ---- W3C traceparent ---- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int unhex(const char *s, uint8_t *out, size_t n)
{
    int nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
        nonzero |= out[i];
    }
    return nonzero ? 0 : -1;
}

int tracing_parse_traceparent(const char *s, size_t len, uint8_t trace_id[16], uint8_t parent_id[8],
                              uint8_t *flags)
{
    if (len != 55 || s[0] != '0' || s[1] != '0' || s[2] != '-' || s[35] != '-' || s[52] != '-')
        return 0;
    uint8_t f;
    if (unhex(s + 3, trace_id, 16) < 0 || unhex(s + 36, parent_id, 8) < 0)
        return 0;
    int hi = hexval(s[53]), lo = hexval(s[54]);
    if (hi < 0 || lo < 0)
        return 0;
    f = (uint8_t)(hi << 4 | lo);
    *flags = f;
    return 1;
}

static void tohex(char *out, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

void tracing_format_traceparent(char out[56], const uint8_t trace_id[16], const uint8_t span_id[8],
                                uint8_t flags)
{
    out[0] = '0';
    out[1] = '0';
    out[2] = '-';
    tohex(out + 3, trace_id, 16);
    out[35] = '-';
    tohex(out + 36, span_id, 8);
    out[52] = '-';
    tohex(out + 53, &flags, 1);
}

/* ---- helpers ---- */

static uint64_t tr_rand(tr_worker_t *tw)
{
    /* xorshift64*: ids need to be unique, not secret */
    uint64_t x = tw->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    tw->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static void tr_rand_bytes(tr_worker_t *tw, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t r = tr_rand(tw);
        size_t k = n - i < 8 ? n - i : 8;
        memcpy(out + i, &r, k);
    }
    if (out[0] == 0) /* an id is never all zero */
        out[0] = 1;
}

static uint64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void copy_str(char *out, size_t cap, const void *p, size_t len)
{
    if (p == NULL)
        len = 0;
    if (len >= cap)
        len = cap - 1;
    if (len)
        memcpy(out, p, len);
    out[len] = '\0';
}

/* The traceparent User Property of a validated property block, or 0. */
static int find_traceparent(const uint8_t *props, uint32_t len, uint8_t from, uint8_t trace_id[16],
                            uint8_t parent_id[8], uint8_t *flags)
{
    if (len == 0)
        return 0;
    mqtt_props_t pr;
    const char *why;
    if (mqtt_props_parse(props, len, MQTT_PUBLISH, from, &pr, &why) != MQTT_OK ||
        pr.user_count == 0)
        return 0;
    uint32_t pos = 0;
    mqtt_str_t name, value;
    while (mqtt_props_user_next(&pr, &pos, &name, &value))
        if (name.len == sizeof(TRACEPARENT) - 1 &&
            memcmp(name.p, TRACEPARENT, sizeof(TRACEPARENT) - 1) == 0)
            return tracing_parse_traceparent((const char *)value.p, value.len, trace_id, parent_id,
                                             flags);
    return 0;
}

/* ---- export ---- */

static void on_exported(void *arg, const httpc_result_t *res)
{
    /* arg: the state; the span count rides in the request's slot */
    uintptr_t *box = arg;
    tr_state_t *st = (tr_state_t *)box[0];
    uint64_t n = box[1];
    free(box);
    if (res->err == HTTPC_OK && res->status >= 200 && res->status < 300) {
        atomic_fetch_add(&st->exported, n);
        return;
    }
    atomic_fetch_add(&st->failed, 1);
    atomic_fetch_add(&st->dropped, n);
    log_limited(10000, AN_LOG_WARN, "tracing: %" PRIu64 " spans not exported: %s (status %ld)", n,
                res->err == HTTPC_OK ? "refused by the collector" : res->error, res->status);
}

/* The export body is written by hand into one growing buffer: jansson's
 * object per attribute cost ~15 us per span, this ~1 us. */
typedef struct {
    char *p;
    size_t len, cap;
} tr_buf_t;

static void buf_need(tr_buf_t *b, size_t n)
{
    if (b->len + n <= b->cap)
        return;
    while (b->len + n > b->cap)
        b->cap = b->cap ? b->cap * 2 : 4096;
    b->p = an_realloc(b->p, b->cap);
}

static void buf_raw(tr_buf_t *b, const char *s, size_t n)
{
    buf_need(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

#define buf_lit(b, s) buf_raw((b), (s), sizeof(s) - 1)

/* A JSON string: quotes, backslashes and control characters escaped (the
 * topic and client id are UTF-8, checked by the codec). */
static void buf_str(tr_buf_t *b, const char *s)
{
    buf_need(b, 2 + 6 * strlen(s));
    b->p[b->len++] = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            b->p[b->len++] = '\\';
            b->p[b->len++] = (char)c;
        } else if (c < 0x20) {
            b->len += (size_t)snprintf(b->p + b->len, 7, "\\u%04x", c);
        } else {
            b->p[b->len++] = (char)c;
        }
    }
    b->p[b->len++] = '"';
}

static void attr_str(tr_buf_t *b, int *first, const char *key, const char *v)
{
    if (!*first)
        buf_lit(b, ",");
    *first = 0;
    buf_lit(b, "{\"key\":");
    buf_str(b, key);
    buf_lit(b, ",\"value\":{\"stringValue\":");
    buf_str(b, v);
    buf_lit(b, "}}");
}

static void attr_int(tr_buf_t *b, int *first, const char *key, uint64_t v)
{
    char num[24]; /* OTLP JSON: int64 as a string */
    snprintf(num, sizeof(num), "%" PRIu64, v);
    if (!*first)
        buf_lit(b, ",");
    *first = 0;
    buf_lit(b, "{\"key\":");
    buf_str(b, key);
    buf_lit(b, ",\"value\":{\"intValue\":\"");
    buf_raw(b, num, strlen(num));
    buf_lit(b, "\"}}");
}

static void span_json(tr_buf_t *b, const tr_span_t *sp)
{
    char trace[33], span[17], parent[17], head[256];
    tohex(trace, sp->trace_id, 16);
    tohex(span, sp->span_id, 8);
    tohex(parent, sp->parent_id, 8);
    int n = snprintf(head, sizeof(head),
                     "{\"traceId\":\"%s\",\"spanId\":\"%s\",%s%s%s\"name\":\"%s\",\"kind\":%d,"
                     "\"startTimeUnixNano\":\"%" PRIu64 "\",\"endTimeUnixNano\":\"%" PRIu64
                     "\",\"attributes\":[",
                     trace, span, sp->has_parent ? "\"parentSpanId\":\"" : "",
                     sp->has_parent ? parent : "", sp->has_parent ? "\"," : "",
                     sp->kind == TR_PUBLISH ? "mqtt.publish" : "mqtt.deliver",
                     sp->kind == TR_PUBLISH ? 2 : 4, sp->start_ns, sp->end_ns);
    buf_raw(b, head, (size_t)n);
    int first = 1;
    attr_str(b, &first, "messaging.system", "mqtt");
    attr_str(b, &first, "messaging.destination.name", sp->topic);
    attr_str(b, &first, "messaging.client.id", sp->client_id);
    attr_int(b, &first, "mqtt.qos", sp->qos);
    const char *error = NULL;
    if (sp->kind == TR_PUBLISH) {
        attr_str(b, &first, "messaging.operation.type", "receive");
        attr_int(b, &first, "mqtt.receivers", sp->receivers);
        attr_int(b, &first, "mqtt.stored", sp->stored);
        if (sp->dropped)
            error = "refused";
    } else {
        attr_str(b, &first, "messaging.operation.type", "send");
        attr_int(b, &first, "mqtt.packet_id", sp->packet_id);
        attr_int(b, &first, "mqtt.acknowledged", sp->acked);
        if (sp->qos > 0 && sp->acked)
            attr_int(b, &first, "mqtt.ack_reason_code", sp->ack_rc);
        if (sp->qos > 0 && !sp->acked)
            error = "not acknowledged";
        else if (sp->ack_rc >= 0x80)
            error = "refused by the subscriber";
    }
    buf_lit(b, "]");
    if (error) {
        buf_lit(b, ",\"status\":{\"code\":2,\"message\":");
        buf_str(b, error);
        buf_lit(b, "}");
    }
    buf_lit(b, "}");
}

static void tr_flush(tr_state_t *st, tr_worker_t *tw, uint32_t worker)
{
    (void)worker;
    if (tw->nspans == 0)
        return;
    tr_buf_t b = {0};
    buf_lit(&b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
    int first = 1;
    attr_str(&b, &first, "service.name", st->conf->service_name);
    attr_str(&b, &first, "service.version", ANTENNA_VERSION);
    buf_lit(&b, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"antenna\",\"version\":\"" ANTENNA_VERSION
                "\"},\"spans\":[");
    for (uint32_t i = 0; i < tw->nspans; i++) {
        if (i)
            buf_lit(&b, ",");
        span_json(&b, &tw->spans[i]);
    }
    buf_lit(&b, "]}]}]}");
    uint64_t n = tw->nspans;
    tw->nspans = 0;
    uintptr_t *box = an_malloc(2 * sizeof(uintptr_t));
    box[0] = (uintptr_t)st;
    box[1] = (uintptr_t)n;
    static const char *const headers[] = {"Content-Type: application/json", NULL};
    httpc_req_t req = {.method = "POST",
                       .url = st->conf->endpoint,
                       .headers = headers,
                       .body = b.p,
                       .body_len = b.len,
                       .done = on_exported,
                       .arg = box};
    if (httpc_submit(st->http, &req) != HTTPC_QUEUED) {
        free(box);
        atomic_fetch_add(&st->dropped, n);
    }
    free(b.p);
}

static void tr_push(tr_state_t *st, tr_worker_t *tw, worker_t *w, const tr_span_t *sp)
{
    tw->spans[tw->nspans++] = *sp;
    if (tw->nspans >= st->conf->batch_size)
        tr_flush(st, tw, w->id);
}

/* ---- the receive hook: sampling and the publish span ---- */

static void finish_cur(tr_state_t *st, tr_worker_t *tw, worker_t *w)
{
    if (tw->cur_msg == NULL)
        return;
    tw->cur.end_ns = wall_ns();
    tr_push(st, tw, w, &tw->cur);
    tw->cur_msg = NULL;
}

static msg_t *tr_receive(worker_t *w, msg_t *m, const sess_t *from, void *user)
{
    module_inst_t *mi = user;
    tr_state_t *st = mi->state;
    tr_worker_t *tw = module_worker_ctx(w, mi->index);
    uint8_t trace_id[16], parent[8], flags = 1;
    int continued =
        find_traceparent(msg_props(m), m->props_len, MQTT_FROM_CLIENT, trace_id, parent, &flags);
    if (!continued && (tr_rand(tw) >> 32) >= st->conf->threshold)
        return m;
    finish_cur(st, tw, w); /* a publish span whose routing never ended */
    tr_span_t *sp = &tw->cur;
    memset(sp, 0, sizeof(*sp));
    sp->start_ns = wall_ns();
    sp->kind = TR_PUBLISH;
    if (continued) {
        memcpy(sp->trace_id, trace_id, 16);
        memcpy(sp->parent_id, parent, 8);
        sp->has_parent = 1;
    } else {
        tr_rand_bytes(tw, sp->trace_id, 16);
    }
    sp->flags = flags | 1; /* sampled: the broker records it */
    tr_rand_bytes(tw, sp->span_id, 8);
    sp->qos = m->qos;
    copy_str(sp->client_id, sizeof(sp->client_id), from ? from->client_id : "",
             from ? from->client_id_len : 0);
    copy_str(sp->topic, sizeof(sp->topic), msg_topic(m), m->topic_len);

    /* the message again, with our traceparent in place of the publisher's */
    char tp[56];
    tracing_format_traceparent(tp, sp->trace_id, sp->span_id, sp->flags);
    mqtt_props_t pr;
    const char *why;
    int has = m->props_len && mqtt_props_parse(msg_props(m), m->props_len, MQTT_PUBLISH,
                                               MQTT_FROM_CLIENT, &pr, &why) == MQTT_OK;
    mqtt_pw_t pw;
    uint8_t *buf = NULL;
    for (int pass = 0; pass < 2; pass++) {
        size_t cap = pass ? mqtt_pw_len(&pw) : 0;
        if (pass)
            buf = an_malloc(cap ? cap : 1);
        mqtt_pw_init(&pw, buf, cap);
        if (has) {
            uint32_t pos = 0;
            mqtt_prop_t p;
            while (mqtt_props_next(&pr, &pos, &p)) {
                if (p.id == MQTT_PROP_USER_PROPERTY && p.str.len == sizeof(TRACEPARENT) - 1 &&
                    memcmp(p.str.p, TRACEPARENT, sizeof(TRACEPARENT) - 1) == 0)
                    continue;
                if (p.id == MQTT_PROP_USER_PROPERTY)
                    mqtt_pw_user(&pw, p.str.p, p.str.len, p.val.p, p.val.len);
                else if (p.type == MQTT_PT_UTF8 || p.type == MQTT_PT_BINARY)
                    mqtt_pw_str(&pw, p.id, p.str.p, p.str.len);
                else
                    mqtt_pw_int(&pw, p.id, p.value);
            }
        }
        mqtt_pw_user(&pw, TRACEPARENT, sizeof(TRACEPARENT) - 1, tp, 55);
    }
    msg_t *t = NULL;
    if (mqtt_pw_error(&pw) == 0)
        t = msg_new_v5(msg_topic(m), m->topic_len, buf, (uint32_t)mqtt_pw_len(&pw), msg_payload(m),
                       m->payload_len, m->qos, m->retain, m->expire_at);
    free(buf);
    if (t == NULL) { /* the properties would not fit: trace without rewriting */
        tw->cur_msg = m;
        atomic_fetch_add(&st->traced, 1);
        return m;
    }
    t->flags = MSG_F_TRACED;
    t->origin_node = m->origin_node;
    t->hops = m->hops;
    if (m->origin)
        msg_set_origin(t, m->origin);
    msg_unref(&m);
    tw->cur_msg = t;
    atomic_fetch_add(&st->traced, 1);
    return t;
}

static void on_published(worker_t *w, event_kind_t kind, const void *data, void *user)
{
    (void)kind;
    module_inst_t *mi = user;
    tr_worker_t *tw = module_worker_ctx(w, mi->index);
    const event_published_t *ev = data;
    if (tw->cur_msg == NULL || ev->msg != tw->cur_msg)
        return;
    tw->cur.receivers = ev->receivers;
    tw->cur.stored = ev->msg->store_seq != 0;
    finish_cur(mi->state, tw, w);
}

/* ---- deliveries ---- */

static uint64_t pending_key(const char *client_id, uint16_t packet_id)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = client_id ? client_id : ""; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    h = an_hash64(h ^ ((uint64_t)packet_id << 48));
    return h ? h : 1;
}

static void on_dropped(worker_t *w, event_kind_t kind, const void *data, void *user)
{
    (void)kind;
    module_inst_t *mi = user;
    tr_worker_t *tw = module_worker_ctx(w, mi->index);
    const event_dropped_t *ev = data;
    if (tw->cur_msg != NULL && ev->msg == tw->cur_msg &&
        (ev->reason == EVENT_DROP_PUBLISH_REFUSED || ev->reason == EVENT_DROP_PUBLISH_DENIED)) {
        tw->cur.dropped = 1;
        finish_cur(mi->state, tw, w);
    }
}

static void on_delivered(worker_t *w, event_kind_t kind, const void *data, void *user)
{
    (void)kind;
    module_inst_t *mi = user;
    tr_state_t *st = mi->state;
    tr_worker_t *tw = module_worker_ctx(w, mi->index);
    const event_delivered_t *ev = data;
    const msg_t *m = ev->msg;
    if (m == NULL || !(m->flags & MSG_F_TRACED))
        return;
    tr_span_t sp;
    memset(&sp, 0, sizeof(sp));
    if (!find_traceparent(msg_props(m), m->props_len, MQTT_FROM_SERVER, sp.trace_id, sp.parent_id,
                          &sp.flags))
        return;
    sp.has_parent = 1;
    sp.kind = TR_DELIVER;
    tr_rand_bytes(tw, sp.span_id, 8);
    sp.qos = ev->qos;
    sp.packet_id = ev->packet_id;
    sp.start_ns = wall_ns();
    copy_str(sp.client_id, sizeof(sp.client_id), ev->client.client_id,
             ev->client.client_id ? strlen(ev->client.client_id) : 0);
    copy_str(sp.topic, sizeof(sp.topic), msg_topic(m), m->topic_len);
    if (ev->qos == 0) {
        sp.end_ns = sp.start_ns;
        tr_push(st, tw, w, &sp);
        return;
    }
    uint64_t key = pending_key(ev->client.client_id, ev->packet_id);
    for (uint32_t i = 0; i < TR_PENDING_PROBE; i++) {
        tr_pending_t *p = &tw->pending[(key + i) & (TR_PENDING - 1)];
        if (p->key == 0 || p->key == key) {
            if (p->key == key) { /* a resend: the first send's span ends here */
                p->span.end_ns = sp.start_ns;
                tr_push(st, tw, w, &p->span);
            } else {
                tw->npending++;
            }
            p->key = key;
            p->span = sp;
            return;
        }
    }
    atomic_fetch_add(&st->dropped, 1); /* the table is full around this key */
}

static void on_acked(worker_t *w, event_kind_t kind, const void *data, void *user)
{
    (void)kind;
    module_inst_t *mi = user;
    tr_worker_t *tw = module_worker_ctx(w, mi->index);
    const event_acked_t *ev = data;
    if (ev->msg == NULL || !(ev->msg->flags & MSG_F_TRACED) || tw->npending == 0)
        return;
    uint64_t key = pending_key(ev->client.client_id, ev->packet_id);
    for (uint32_t i = 0; i < TR_PENDING_PROBE; i++) {
        tr_pending_t *p = &tw->pending[(key + i) & (TR_PENDING - 1)];
        if (p->key != key)
            continue;
        p->span.end_ns = wall_ns();
        p->span.acked = 1;
        p->span.ack_rc = ev->reason_code;
        tr_push(mi->state, tw, w, &p->span);
        p->key = 0;
        tw->npending--;
        return;
    }
}

/* ---- configuration ---- */

static void tr_defaults(void *conf)
{
    tr_conf_t *c = conf;
    memset(c, 0, sizeof(*c));
    snprintf(c->sample_ratio, sizeof(c->sample_ratio), "%s", "0");
    snprintf(c->service_name, sizeof(c->service_name), "%s", "antenna");
    c->batch_size = 512;
    c->flush_ms = 1000;
    c->timeout_ms = 5000;
    c->max_exports = 16;
}

static const conf_key_t tr_keys[] = {
    CONF_KEY_STR(tr_conf_t, endpoint, "endpoint", 0),
    CONF_KEY_STR(tr_conf_t, sample_ratio, "sample_ratio", CONF_SEC_NONEMPTY),
    CONF_KEY_STR(tr_conf_t, service_name, "service_name", CONF_SEC_NONEMPTY),
    CONF_KEY_U32(tr_conf_t, batch_size, "batch_size", 1, 10000),
    CONF_KEY_MS(tr_conf_t, flush_ms, "flush_interval", 10, 60000),
    CONF_KEY_MS(tr_conf_t, timeout_ms, "timeout", 100, 60000),
    CONF_KEY_U32(tr_conf_t, max_exports, "max_exports", 1, 1024),
};

static int tr_load(conf_sec_t *s, void *conf)
{
    tr_conf_t *c = conf;
    if (conf_sec_keys(s, CONF_KEYS(tr_keys), c) < 0)
        return -1;
    if (c->endpoint[0] != '\0' && strncmp(c->endpoint, "http://", 7) != 0 &&
        strncmp(c->endpoint, "https://", 8) != 0)
        return conf_sec_fail(s, "endpoint", "\"%.100s\": an http:// or https:// URL", c->endpoint);
    char *end;
    double r = strtod(c->sample_ratio, &end);
    if (end == c->sample_ratio || *end != '\0' || !(r >= 0.0 && r <= 1.0))
        return conf_sec_fail(s, "sample_ratio", "\"%s\": a number from 0 to 1 (0.01 = 1 %%)",
                             c->sample_ratio);
    c->threshold = (uint64_t)(r * 4294967296.0);
    return 0;
}

static void tr_walk(const void *conf, conf_visit_fn fn, void *ud)
{
    conf_keys_walk(CONF_KEYS(tr_keys), conf, fn, ud);
}

/* ---- life cycle ---- */

static int tr_init(module_inst_t *mi)
{
    const tr_conf_t *c = mi->conf;
    if (c->endpoint[0] == '\0')
        return 0;
    tr_state_t *st = an_calloc(1, sizeof(*st));
    st->conf = c;
    st->index = mi->index;
    mi->state = st;
    httpc_opts_t o = {.queue_cap = c->max_exports,
                      .max_host_conns = 2,
                      .max_conns = 2,
                      .timeout_ms = c->timeout_ms,
                      .connect_timeout_ms = c->timeout_ms};
    char err[256];
    st->http = httpc_new(&o, err, sizeof(err));
    if (st->http == NULL) {
        log_error("tracing: cannot start the exporter: %s", err);
        return -1;
    }
    server_t *srv = mi->srv;
    if (router_receive_hook(srv, tr_receive, mi) < 0) {
        log_error("tracing: another module holds the receive hook");
        return -1;
    }
    /* only the traced messages reach these (and the emit sites skip the
     * others); a refused publish is rare: every drop is seen */
    if (event_listen_msgs(&srv->events, EVENT_MESSAGE_PUBLISHED, MSG_F_TRACED, on_published, mi) <
            0 ||
        event_listen(&srv->events, EVENT_MESSAGE_DROPPED, on_dropped, mi) < 0 ||
        event_listen_msgs(&srv->events, EVENT_MESSAGE_DELIVERED, MSG_F_TRACED, on_delivered, mi) <
            0 ||
        event_listen_msgs(&srv->events, EVENT_MESSAGE_ACKED, MSG_F_TRACED, on_acked, mi) < 0) {
        log_error("tracing: too many listeners of message events");
        return -1;
    }
    return 0;
}

static int tr_worker_init(module_inst_t *mi, worker_t *w, void **ctx)
{
    tr_state_t *st = mi->state;
    if (st == NULL)
        return 0;
    tr_worker_t *tw = an_calloc(1, sizeof(*tw));
    tw->spans = an_calloc(st->conf->batch_size, sizeof(*tw->spans));
    tw->pending = an_calloc(TR_PENDING, sizeof(*tw->pending));
    uint64_t seed[2];
    an_random_key(seed);
    tw->rng = (seed[0] ^ seed[1]) | 1u;
    *ctx = tw;
    module_tick_arm(w, mi, st->conf->flush_ms);
    return 0;
}

static uint64_t tr_tick(module_inst_t *mi, worker_t *w, void *ctx)
{
    tr_state_t *st = mi->state;
    tr_worker_t *tw = ctx;
    if (tw->npending) { /* deliveries never acknowledged: end them */
        uint64_t now = wall_ns();
        for (uint32_t i = 0; i < TR_PENDING; i++) {
            tr_pending_t *p = &tw->pending[i];
            if (p->key && now - p->span.start_ns > TR_ACK_WAIT_NS) {
                p->span.end_ns = now;
                tr_push(st, tw, w, &p->span);
                p->key = 0;
                tw->npending--;
            }
        }
    }
    tr_flush(st, tw, w->id);
    return st->conf->flush_ms;
}

static int tr_start(module_inst_t *mi)
{
    const tr_conf_t *c = mi->conf;
    if (mi->state)
        log_info("tracing: spans to %s, sample ratio %s, and every message with a traceparent",
                 c->endpoint, c->sample_ratio);
    return 0;
}

static void tr_worker_free(module_inst_t *mi, worker_t *w, void *ctx)
{
    (void)w;
    tr_state_t *st = mi->state;
    tr_worker_t *tw = ctx;
    if (tw == NULL)
        return;
    atomic_fetch_add(&st->dropped, tw->nspans + tw->npending); /* never exported */
    free(tw->spans);
    free(tw->pending);
    free(tw);
}

static void tr_free(module_inst_t *mi)
{
    tr_state_t *st = mi->state;
    if (st == NULL)
        return;
    if (st->http)
        httpc_free(st->http); /* answers what is left, on this thread */
    log_info("tracing: %" PRIu64 " messages traced, %" PRIu64 " spans exported, %" PRIu64
             " dropped",
             atomic_load(&st->traced), atomic_load(&st->exported), atomic_load(&st->dropped));
    free(st);
    mi->state = NULL;
}

static void tr_metrics(module_inst_t *mi, module_metrics_t *mm)
{
    tr_state_t *st = mi->state;
    if (st == NULL)
        return;
    module_metrics_family(mm, "antenna_tracing_messages_traced_total", "counter",
                          "Messages traced (sampled, or carrying a traceparent).");
    module_metrics_printf(mm, "antenna_tracing_messages_traced_total %" PRIu64 "\n",
                          atomic_load(&st->traced));
    module_metrics_family(mm, "antenna_tracing_spans_exported_total", "counter",
                          "Spans the OTLP collector accepted.");
    module_metrics_printf(mm, "antenna_tracing_spans_exported_total %" PRIu64 "\n",
                          atomic_load(&st->exported));
    module_metrics_family(mm, "antenna_tracing_spans_dropped_total", "counter",
                          "Spans dropped: export queue full, export failed, ack table full.");
    module_metrics_printf(mm, "antenna_tracing_spans_dropped_total %" PRIu64 "\n",
                          atomic_load(&st->dropped));
}

const module_t tracing_module = {
    .name = "tracing",
    .section = "tracing",
    .conf_size = sizeof(tr_conf_t),
    .conf_defaults = tr_defaults,
    .conf_load = tr_load,
    .conf_walk = tr_walk,
    .init = tr_init,
    .start = tr_start,
    .free = tr_free,
    .worker_init = tr_worker_init,
    .worker_free = tr_worker_free,
    .tick = tr_tick,
    .metrics = tr_metrics,
};
