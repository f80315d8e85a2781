/* event_recent.c -- the recent events of each client: a bounded ring per
 * worker, filled by a listener of the event registry (event.h), read by
 * the management API (GET /api/v1/clients/{id}/events, the dashboard's
 * client view).
 *
 * What is kept: connected, disconnected (with its reason), subscribed,
 * unsubscribed, auth_failed, taken over, session expired and messages
 * dropped, each with a short detail text.  Not the per-message events
 * (published, delivered, acknowledged), nor the drop of a PUBLISH nobody
 * subscribes to (event_listen_drops): the module never asks for them, so
 * they stay free.  A client's events are found by a keyed hash of its
 * whole id (SipHash, under a key drawn at start) and its length.
 *
 * Threads: each worker writes only its own ring (events are dispatched on
 * the worker where they happen), under the ring's mutex, which nobody else
 * takes but the API thread for the time of one scan: uncontended in
 * practice.  Drops come in bursts (a full queue drops every message):
 * one of the same client and reason within a second of the ring's newest
 * entry is coalesced into it, without the mutex (its count and last time
 * are atomics; only this worker writes the rest), so a burst costs a
 * compare and two relaxed stores per message, and cannot flush the ring.
 *
 * Configuration: the section recent_events (config.example.yaml):
 * `enabled` (default true; false: the module listens to nothing, so the
 * events it would take cost nothing, and the API answers an empty list),
 * `size`, the entries per worker.
 *
 * Bounds: `size` entries per worker (about 200 bytes each); the oldest are
 * overwritten.  A client's events live on the worker where they happened
 * (its home worker, or the accepting one for a refused CONNECT): a query
 * scans every ring and merges by time.
 */
#include "event_recent.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "endpoint.h"
#include "event.h"
#include "log.h"
#include "module.h"
#include "mqtt_codec.h"
#include "mqtt_props.h"
#include "util.h"

typedef struct {
    uint8_t enabled;
    uint32_t size; /* entries per worker */
} recent_conf_t;

typedef struct {
    uint64_t id_hash; /* 0: empty */
    uint64_t at_ms;
    uint64_t seq; /* the ring's count of entries when this one was written */
    _Atomic uint64_t last_ms;
    _Atomic uint32_t count;
    uint32_t id_len;
    uint8_t kind, code, reason; /* reason: a drop's event_drop_reason_t */
    char detail[EVENT_RECENT_TEXT];
} entry_t;

typedef struct {
    pthread_mutex_t mu;
    uint32_t next; /* slot of the next entry (the newest is next - 1) */
    uint64_t seq;  /* entries written */
    entry_t *e;    /* size entries */
} ring_t;

typedef struct {
    uint64_t key[2];
    uint32_t nrings, size;
    ring_t *rings;
} recent_t;

static recent_t *state_of(server_t *srv)
{
    for (uint32_t i = 0; i < srv->nmodules; i++)
        if (srv->modules[i].m == &event_recent_module && srv->modules[i].inited)
            return srv->modules[i].state;
    return NULL;
}

static uint64_t hash_id(const recent_t *r, const char *id, size_t len)
{
    uint64_t h = an_siphash(r->key, id, len);
    return h ? h : 1;
}

/* prefix, then a filter or topic (n bytes, not NUL terminated) cut to fit
 * on a UTF-8 character boundary (the API answers it as a JSON string). */
static void put_bytes(char *out, size_t size, const char *prefix, const uint8_t *p, size_t n)
{
    size_t room = size - 1 - AN_MIN(strlen(prefix), size - 1);
    if (n > room) {
        n = room;
        while (n > 0 && (p[n] & 0xC0) == 0x80) /* p[n] continues a character */
            n--;
    }
    snprintf(out, size, "%s%.*s", prefix, (int)n, (const char *)p);
}

static void on_event(worker_t *w, event_kind_t kind, const void *data, void *user)
{
    recent_t *r = user;
    const event_client_t *cl = data; /* every struct starts with its client */
    if (cl->client_id == NULL || w->id >= r->nrings)
        return;
    ring_t *g = &r->rings[w->id];
    size_t len = strlen(cl->client_id);
    uint64_t h = hash_id(r, cl->client_id, len);
    uint64_t now = an_wall_ms();
    if (kind == EVENT_MESSAGE_DROPPED) {
        const event_dropped_t *d = data;
        if (d->reason == EVENT_DROP_NO_SUBSCRIBERS) /* another handler wanted it */
            return;
        entry_t *last = &g->e[(g->next + r->size - 1) % r->size];
        if (last->id_hash == h && last->id_len == len && last->kind == kind &&
            last->reason == (uint8_t)d->reason &&
            now < atomic_load_explicit(&last->last_ms, memory_order_relaxed) + 1000u) {
            STAT_ADD(last->count, 1);
            atomic_store_explicit(&last->last_ms, now, memory_order_relaxed);
            return;
        }
    }
    entry_t e = {.id_hash = h, .at_ms = now, .id_len = (uint32_t)len, .kind = (uint8_t)kind};
    switch (kind) {
    case EVENT_CLIENT_CONNECTED: {
        const event_connected_t *c = data;
        snprintf(
            e.detail, sizeof(e.detail), "from %s on %s, %s, clean start %u, session present %u",
            c->client.peer ? c->client.peer : "?", c->client.listener ? c->client.listener : "?",
            c->client.proto == MQTT_PROTO_V5    ? "MQTT 5.0"
            : c->client.proto == MQTT_PROTO_V31 ? "MQTT 3.1"
            : c->client.proto == EP_PROTO_HTTP  ? "HTTP"
            : c->client.proto == EP_PROTO_COAP  ? "CoAP"
                                                : "MQTT 3.1.1",
            c->clean_start, c->session_present);
        break;
    }
    case EVENT_CLIENT_DISCONNECTED: {
        const event_disconnected_t *d = data;
        e.code = d->reason_code;
        snprintf(e.detail, sizeof(e.detail), "%s%s", d->by_client ? "by the client: " : "",
                 d->reason && d->reason[0] ? d->reason
                                           : mqtt_reason_name_for(MQTT_DISCONNECT, d->reason_code));
        break;
    }
    case EVENT_AUTH_FAILED: {
        const event_auth_failed_t *a = data;
        e.code = a->reason_code;
        snprintf(e.detail, sizeof(e.detail), "%s: %s", auth_cause_name(a->cause),
                 a->reason ? a->reason : "?");
        break;
    }
    case EVENT_SUBSCRIBED: {
        const event_subscribed_t *s = data;
        e.code = s->qos;
        put_bytes(e.detail, sizeof(e.detail), "", s->filter, s->filter_len);
        break;
    }
    case EVENT_UNSUBSCRIBED: {
        const event_unsubscribed_t *u = data;
        put_bytes(e.detail, sizeof(e.detail), "", u->filter, u->filter_len);
        break;
    }
    case EVENT_SESSION_TAKEN_OVER: {
        const event_taken_over_t *t = data;
        snprintf(e.detail, sizeof(e.detail), "connection %s replaced by %s (session %s)",
                 t->old_peer ? t->old_peer : "?", t->client.peer ? t->client.peer : "?",
                 t->resumed ? "resumed" : "discarded");
        break;
    }
    case EVENT_MESSAGE_DROPPED: {
        const event_dropped_t *d = data;
        char prefix[48];
        e.reason = (uint8_t)d->reason;
        e.code = d->qos;
        snprintf(prefix, sizeof(prefix), "%s: ", event_drop_reason_name(d->reason));
        put_bytes(e.detail, sizeof(e.detail), prefix, d->topic, d->topic_len);
        break;
    }
    default:
        break;
    }
    pthread_mutex_lock(&g->mu);
    entry_t *slot = &g->e[g->next];
    slot->id_hash = e.id_hash;
    slot->at_ms = e.at_ms;
    slot->seq = ++g->seq;
    slot->id_len = e.id_len;
    slot->kind = e.kind;
    slot->code = e.code;
    slot->reason = e.reason;
    memcpy(slot->detail, e.detail, sizeof(e.detail));
    atomic_store_explicit(&slot->count, 1, memory_order_relaxed);
    atomic_store_explicit(&slot->last_ms, now, memory_order_relaxed);
    g->next = (g->next + 1) % r->size;
    pthread_mutex_unlock(&g->mu);
}

static const event_kind_t kinds[] = {
    EVENT_CLIENT_CONNECTED, EVENT_CLIENT_DISCONNECTED, EVENT_AUTH_FAILED,     EVENT_SUBSCRIBED,
    EVENT_UNSUBSCRIBED,     EVENT_SESSION_TAKEN_OVER,  EVENT_SESSION_EXPIRED,
};

static void recent_defaults(void *conf)
{
    recent_conf_t *c = conf;
    c->enabled = 1;
    c->size = 256;
}

static const conf_key_t recent_keys[] = {
    CONF_KEY_BOOL(recent_conf_t, enabled, "enabled"),
    CONF_KEY_U32(recent_conf_t, size, "size", 16, 65536),
};

static int recent_load(conf_sec_t *s, void *conf)
{
    return conf_sec_keys(s, CONF_KEYS(recent_keys), conf);
}

static void recent_walk(const void *conf, conf_visit_fn fn, void *ud)
{
    conf_keys_walk(CONF_KEYS(recent_keys), conf, fn, ud);
}

static int recent_init(module_inst_t *mi)
{
    server_t *srv = mi->srv;
    const recent_conf_t *c = mi->conf;
    if (!c->enabled)
        return 0; /* no state: event_recent_get answers nothing */
    recent_t *r = an_calloc(1, sizeof(*r));
    an_random_key(r->key);
    r->nrings = srv->nworkers;
    r->size = c->size;
    r->rings = an_calloc(r->nrings ? r->nrings : 1, sizeof(*r->rings));
    for (uint32_t i = 0; i < r->nrings; i++) {
        pthread_mutex_init(&r->rings[i].mu, NULL);
        r->rings[i].e = an_calloc(r->size, sizeof(entry_t));
    }
    mi->state = r;
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
        if (event_listen(&srv->events, kinds[k], on_event, r) < 0) {
            log_error("recent client events: cannot listen to %s", event_name(kinds[k]));
            return -1;
        }
    /* not a PUBLISH that nobody subscribes to: the publisher's, on its
     * hot path, and no loss to anyone */
    if (event_listen_drops(&srv->events, UINT32_MAX & ~(1u << EVENT_DROP_NO_SUBSCRIBERS), on_event,
                           r) < 0) {
        log_error("recent client events: cannot listen to message_dropped");
        return -1;
    }
    return 0;
}

static void recent_free(module_inst_t *mi)
{
    recent_t *r = mi->state;
    if (r == NULL)
        return;
    for (uint32_t i = 0; i < r->nrings; i++) {
        pthread_mutex_destroy(&r->rings[i].mu);
        free(r->rings[i].e);
    }
    free(r->rings);
    free(r);
    mi->state = NULL;
}

const module_t event_recent_module = {
    .name = "event_recent",
    .section = "recent_events",
    .conf_size = sizeof(recent_conf_t),
    .conf_defaults = recent_defaults,
    .conf_load = recent_load,
    .conf_walk = recent_walk,
    .init = recent_init,
    .free = recent_free,
};

static int newer_first(const void *a, const void *b)
{
    const event_recent_t *x = a, *y = b;
    if (x->at_ms != y->at_ms)
        return x->at_ms < y->at_ms ? 1 : -1;
    return x->seq < y->seq ? 1 : x->seq > y->seq ? -1 : 0;
}

size_t event_recent_get(server_t *srv, const char *id, size_t len, event_recent_t *out, size_t max)
{
    recent_t *r = state_of(srv);
    if (r == NULL || r->nrings == 0 || max == 0)
        return 0;
    uint64_t h = hash_id(r, id, len);
    /* every match of every ring (at most size per worker), then the newest */
    size_t cap = (size_t)r->size * r->nrings, n = 0;
    event_recent_t *all = an_malloc(cap * sizeof(*all));
    for (uint32_t i = 0; i < r->nrings; i++) {
        ring_t *g = &r->rings[i];
        pthread_mutex_lock(&g->mu);
        for (uint32_t k = 0; k < r->size; k++) {
            const entry_t *e = &g->e[k];
            if (e->id_hash != h || e->id_len != len)
                continue;
            event_recent_t *o = &all[n++];
            o->at_ms = e->at_ms;
            o->seq = e->seq;
            o->last_ms = atomic_load_explicit(&e->last_ms, memory_order_relaxed);
            o->count = atomic_load_explicit(&e->count, memory_order_relaxed);
            o->kind = e->kind;
            o->code = e->code;
            memcpy(o->detail, e->detail, sizeof(o->detail));
        }
        pthread_mutex_unlock(&g->mu);
    }
    qsort(all, n, sizeof(*all), newer_first);
    n = AN_MIN(n, max);
    memcpy(out, all, n * sizeof(*out));
    free(all);
    return n;
}
