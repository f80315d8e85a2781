/* ep_claim.c -- a gateway's endpoint claims a device's session on its home
 * worker (ep_claim.h).  Home worker only; nothing here is shared. */
#include "ep_claim.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "auth_chain.h"
#include "event.h"
#include "log.h"
#include "mqtt_codec.h"
#include "persist.h"
#include "router.h"
#include "sess_acl.h"
#include "util.h"

/* The client as events see it: ep's description, the session's id. */
static event_client_t client_of(endpoint_t *ep, const sess_t *s, char *peer, size_t size)
{
    ep_info_t info;
    ep_describe(ep, &info, peer, size);
    event_client_t c = info.client;
    c.client_id = s->client_id;
    return c;
}

/* Another endpoint holds s: client_disconnected and session_taken_over
 * for it, then it ends (its close). */
static void take_over(worker_t *w, endpoint_t *ep, sess_t *s)
{
    endpoint_t *old = s->ep;
    char why[96];
    snprintf(why, sizeof(why), "session of '%.48s%s' taken over", s->client_id,
             s->client_id_len > 48 ? "..." : "");
    if (event_wanted(w->srv, EVENT_CLIENT_DISCONNECTED)) {
        char peer[80];
        event_disconnected_t ev = {.reason = why, .reason_code = 0x8E};
        ev.client = client_of(old, s, peer, sizeof(peer));
        event_emit(w, &w->srv->events, EVENT_CLIENT_DISCONNECTED, &ev);
    }
    if (event_wanted(w->srv, EVENT_SESSION_TAKEN_OVER)) {
        char peer[80], old_peer[80];
        event_client_t was = client_of(old, s, old_peer, sizeof(old_peer));
        event_taken_over_t ev = {.old_peer = was.peer, .resumed = s->expiry != 0};
        ev.client = client_of(ep, s, peer, sizeof(peer));
        event_emit(w, &w->srv->events, EVENT_SESSION_TAKEN_OVER, &ev);
    }
    sess_take_over(s, why);
}

/* Template t with "{id}" replaced by id, into f (cut to its size). */
static size_t expand(const char *t, const char *id, char *f, size_t size)
{
    size_t len = 0;
    while (*t && len + 1 < size) {
        if (strncmp(t, "{id}", 4) == 0) {
            int k = snprintf(f + len, size - len, "%s", id);
            len = AN_MIN(len + (size_t)(k > 0 ? k : 0), size - 1);
            t += 4;
        } else {
            f[len++] = *t++;
        }
    }
    f[len] = '\0';
    return len;
}

int ep_claim_template_ok(const char *t)
{
    char f[EP_CLAIM_FILTER_LEN];
    size_t len = expand(t, "x", f, sizeof(f));
    return len < sizeof(f) - 1 && mqtt_topic_filter_valid((const uint8_t *)f, len) &&
           strncmp(f, "$share/", 7) != 0;
}

static void subscribe(worker_t *w, endpoint_t *ep, const ep_claim_t *o, ep_claimed_t *out)
{
    sess_t *s = out->s;
    uint8_t opts = server_live(w->srv)->max_qos; /* the message's QoS, up to the broker's */
    for (uint32_t i = 0; i < o->nfilters && i < EP_CLAIM_MAX_FILTERS; i++) {
        char *f = out->added[out->nadded];
        size_t len = expand(o->filters[i], o->id, f, EP_CLAIM_FILTER_LEN);
        if (!mqtt_topic_filter_valid((const uint8_t *)f, len) ||
            sess_has_sub(s, (const uint8_t *)f, (uint16_t)len))
            continue;
        uint32_t gen = auth_chain_gen(w->srv->auth);
        int verdict =
            auth_chain_acl(w->srv->auth, o->ac, AUTH_ACT_SUBSCRIBE, (const uint8_t *)f, len, 1);
        if (verdict == AUTH_ACL_DENY) {
            STAT_ADD(w->stats.acl_denied, 1);
            STAT_ADD(w->stats.acl_denied_by[STAT_ACL_SUBSCRIBE], 1);
            log_ev(
                AN_LOG_INFO,
                &(log_fields_t){.event = "acl_denied", .client_id = o->id, .reason = "subscribe"},
                "%s device '%s': subscription to '%s' denied by the ACL", o->kind, o->id, f);
            continue;
        }
        sess_subscribe(w, s, (const uint8_t *)f, (uint16_t)len, opts, 0);
        sess_acl_subscribed(s, (const uint8_t *)f, (uint16_t)len, verdict, gen);
        if (event_wanted(w->srv, EVENT_SUBSCRIBED)) {
            char peer[80];
            event_subscribed_t ev = {.filter = (const uint8_t *)f,
                                     .filter_len = (uint16_t)len,
                                     .qos = opts,
                                     .options = opts,
                                     .is_new = 1};
            ev.client = client_of(ep, s, peer, sizeof(peer));
            event_emit(w, &w->srv->events, EVENT_SUBSCRIBED, &ev);
        }
        out->nadded++;
    }
    if (out->nadded)
        sess_subscriptions_saved(w, s);
}

int ep_claim(worker_t *w, endpoint_t *ep, const ep_claim_t *o, ep_claimed_t *out)
{
    const uint8_t *id = (const uint8_t *)o->id;
    uint16_t len = (uint16_t)strlen(o->id);
    memset(out, 0, offsetof(ep_claimed_t, added));
    sess_t *s = sess_table_find_id(&w->by_id, id, len);
    uint32_t max_sessions = server_live(w->srv)->max_sessions;
    if (o->expiry && max_sessions && !(s && s->expiry) &&
        atomic_load_explicit(&w->srv->persistent_sessions, memory_order_relaxed) >= max_sessions) {
        log_warn("%s device '%s': limits.max_sessions persistent sessions exist: not attached",
                 o->kind, o->id);
        return -1;
    }
    if (s) {
        char outcome[64];
        snprintf(outcome, sizeof(outcome), "%s by a %s device", s->ep ? "taken over" : "resumed",
                 o->kind);
        sess_acl_claim(w, s, ep, outcome);
    }
    if (s && s->ep) {
        take_over(w, ep, s);
        out->took_over = 1;
    }
    if (s && s->expiry == 0) { /* an MQTT clean session: not ours to keep */
        sess_destroy(w, s);
        s = NULL;
    }
    out->present = s != NULL;
    if (s) {
        sess_set_expiry(s, o->expiry);
    } else {
        s = sess_new(w, id, len, o->expiry);
        if (event_wanted(w->srv, EVENT_SESSION_CREATED)) {
            char peer[80];
            event_session_created_t ev = {.session_expiry = s->expiry};
            ev.client = client_of(ep, s, peer, sizeof(peer));
            event_emit(w, &w->srv->events, EVENT_SESSION_CREATED, &ev);
        }
    }
    out->s = s;
    sess_acl_attach(w, s, ep, out->present);
    subscribe(w, ep, o, out);
    return 0;
}

int ep_claim_attach(worker_t *w, endpoint_t *ep, const ep_claimed_t *out, sess_t *const *mine)
{
    sess_t *s = out->s;
    STAT_ADD(w->stats.clients_connected, 1);
    STAT_ADD(w->stats.connections_total, 1);
    sess_attach(s, ep);
    persist_session_update(w, s);
    for (uint32_t i = 0; i < out->nadded && *mine; i++)
        router_send_retained(w, s, (const uint8_t *)out->added[i], (uint16_t)strlen(out->added[i]),
                             server_live(w->srv)->max_qos);
    if (*mine == NULL)
        return 0;
    if (event_wanted(w->srv, EVENT_CLIENT_CONNECTED)) {
        char peer[80];
        event_connected_t ev = {.session_expiry = s->expiry,
                                .session_present = (uint8_t)out->present};
        ev.client = client_of(ep, s, peer, sizeof(peer));
        event_emit(w, &w->srv->events, EVENT_CLIENT_CONNECTED, &ev);
    }
    return 1;
}
