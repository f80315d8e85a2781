/* proto.c -- MQTT 3.1 / 3.1.1 / 5.0 server state machine (see proto.h).
 *
 * Every rule that makes a packet malformed is checked by the codec; this
 * file enforces the rules about order and state: the first packet must be
 * CONNECT [MQTT-3.1.0-1], a second CONNECT is a protocol error
 * [MQTT-3.1.0-2], the QoS 1/2 exchanges follow the session's state, and
 * the MQTT 5 limits this broker advertises in CONNACK (maximum QoS, retain,
 * topic aliases, receive maximum, subscription features) are enforced.
 * Each refusal closes the one connection with a log line naming the client
 * and the rule; an MQTT 5 client gets a DISCONNECT with the reason code
 * first.  Authentication of a CONNECT (the auth chain, bans, MQTT 5
 * enhanced authentication and AUTH packets) is in proto_auth.c; what the
 * two files share is in proto_int.h.
 */
#include "proto.h"
#include "proto_int.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth_chain.h"
#include "auth_method.h"
#include "ep_mqtt.h"
#include "log.h"
#include "migrate.h"
#include "mqtt_props.h"
#include "msg.h"
#include "persist.h"
#include "router.h"
#include "sess.h"
#include "sess_acl.h"

int proto_close_with(conn_t *c, uint8_t rc, const char *what, const char *why)
{
    char msg[256];
    snprintf(msg, sizeof(msg), "%s: %s", what, why ? why : "?");
    conn_close_reason(c, msg, 1, rc);
    return -1;
}

int proto_protocol_error(conn_t *c, const char *why)
{
    return proto_close_with(c, MQTT_RC_PROTOCOL_ERROR, "protocol error", why);
}

int proto_malformed(conn_t *c, int rc, const char *why)
{
    if (rc == MQTT_ERR_PROTOCOL)
        return proto_protocol_error(c, why);
    return proto_close_with(c, mqtt_err_reason(rc), "malformed packet", why);
}

/* CONNACK refusing the connection, in the client's protocol: the 3.1.1
 * return code, or the MQTT 5 reason code (with a Server Reference for
 * 0x9C/0x9D).  The log line's event (docs/logging.md) is `event`, its
 * reason `reason` (NULL: the reason code's name) and backend `backend`. */
int proto_refuse_as(conn_t *c, const mqtt_connect_t *ck, uint8_t rc3, uint8_t rc5, const char *why,
                    const char *event, const char *reason, const char *backend)
{
    if (c->proto == MQTT_PROTO_V5) {
        uint8_t props[300];
        mqtt_pw_t pw;
        mqtt_pw_init(&pw, props, sizeof(props));
        const char *ref = c->w->srv->conf.server_reference;
        if ((rc5 == MQTT_RC_SERVER_MOVED || rc5 == MQTT_RC_USE_ANOTHER_SERVER) && ref[0])
            mqtt_pw_str(&pw, MQTT_PROP_SERVER_REFERENCE, ref, strlen(ref));
        size_t len = mqtt_pw_len(&pw);
        mqtt_encode_connack_v5(conn_reserve(c, mqtt_connack_v5_size(len), 1), 0, rc5, props, len);
    } else {
        mqtt_encode_connack(conn_reserve(c, 4, 1), 0, rc3);
    }
    conn_count_out(c, MQTT_CONNACK);
    /* logged here rather than by conn_close: the client id is known from
     * the CONNECT even though no session exists (a JSON field too) */
    if (log_enabled(AN_LOG_INFO)) {
        char id[65] = "", user[65] = "", name[160], peer[64], slug[48];
        size_t idlen = ck ? AN_MIN(ck->client_id.len, 64u) : 0;
        if (idlen)
            memcpy(id, ck->client_id.p, idlen);
        id[idlen] = '\0';
        log_fields_t f;
        conn_log_fields(c, &f, peer, sizeof(peer));
        if (ck)
            f.client_id = id;
        if (f.username == NULL && ck && ck->has_username) {
            size_t ul = AN_MIN(ck->username.len, 64u);
            memcpy(user, ck->username.p, ul);
            user[ul] = '\0';
            f.username = user;
        }
        f.event = event;
        /* the MQTT 5 name whatever the client's version: one set of names */
        static const char *const v3[] = {"success",
                                         "unsupported_protocol_version",
                                         "client_identifier_not_valid",
                                         "server_unavailable",
                                         "bad_user_name_or_password",
                                         "not_authorized"};
        f.reason = reason ? reason
                   : rc5  ? log_slug(mqtt_reason_name(rc5), slug, sizeof(slug))
                          : v3[rc3 < 6 ? rc3 : 0];
        f.backend = backend;
        log_ev(AN_LOG_INFO, &f, "%s: disconnected: CONNECT refused (%s %u)%s%s%s: %s",
               conn_name(c, name, sizeof(name)),
               c->proto == MQTT_PROTO_V5 ? "reason code" : "return code",
               c->proto == MQTT_PROTO_V5 ? rc5 : rc3, ck ? " for client '" : "", id, ck ? "'" : "",
               why);
    }
    conn_close(c, NULL, 0);
    return -1;
}

static int refuse(conn_t *c, const mqtt_connect_t *ck, uint8_t rc3, uint8_t rc5, const char *why)
{
    return proto_refuse_as(c, ck, rc3, rc5, why, "connect_refused", NULL, NULL);
}

/* An MQTT 5 acknowledgement with a reason code (the short form for 0). */
static void send_ack5(conn_t *c, uint8_t type, uint16_t pid, uint8_t reason)
{
    if (c->proto != MQTT_PROTO_V5 || reason == 0) {
        conn_send_ack(c, type, pid);
        return;
    }
    mqtt_encode_ack_v5(conn_reserve(c, mqtt_ack_v5_size(reason, 0), 1), type, pid, reason, NULL, 0);
    conn_count_out(c, type);
}

/* The acknowledgement of a QoS 1/2 exchange: at once, or once this turn's
 * store batch is committed when the exchange wrote to it (persist.h), and
 * in any case behind acknowledgements of this connection still held (the
 * count comes down as ep_mqtt.c gets them back). */
static void send_ack_after(conn_t *c, uint8_t type, uint16_t pid, uint8_t reason, int wrote)
{
    worker_t *w = c->w;
    if (unlikely(w->fwd_ticket | w->fwd_held) && (w->fwd_ticket || (c->x && c->x->held_acks))) {
        /* forwarded to other nodes (or behind such an acknowledgement): the
         * cluster holds it until they have the message (router.h) */
        const route_owner_kind_t *k = &w->srv->route_owners[ROUTE_OWNER_NODE];
        conn_ext(c)->held_acks++;
        k->hold_ack(w, &c->ep, c->sess ? c->sess->sid : 0, type, pid,
                    c->proto == MQTT_PROTO_V5 ? reason : 0, wrote, k->user);
        return;
    }
    if (wrote || (c->x && c->x->held_acks)) {
        conn_ext(c)->held_acks++;
        persist_hold_ack(c->w, &c->ep, c->sess ? c->sess->sid : 0, type, pid,
                         c->proto == MQTT_PROTO_V5 ? reason : 0);
    } else {
        send_ack5(c, type, pid, reason);
    }
}

/* ---- events (event.h) ---- */

/* auth_failed.  The client id: the CONNECT's (ck), else the one the auth
 * state kept (an asynchronous answer, an enhanced authentication), else
 * the session's (re-authentication), else none. */
void proto_emit_auth_failed(conn_t *c, const mqtt_connect_t *ck, auth_cause_t cause, uint8_t rc5,
                            const char *why)
{
    worker_t *w = c->w;
    char peer[64], *id = NULL;
    event_auth_failed_t ev = {.cause = cause, .reason_code = rc5, .reason = why};
    conn_event_client(c, &ev.client, peer, sizeof(peer));
    if (ck && ck->client_id.len) {
        id = an_strndup((const char *)ck->client_id.p, ck->client_id.len);
        ev.client.client_id = id;
    } else if (!ev.client.client_id && c->x && c->x->auth) {
        ev.client.client_id = c->x->auth->client_id;
    }
    if (ck)
        ev.client.proto = ck->proto;
    event_emit(w, &w->srv->events, EVENT_AUTH_FAILED, &ev);
    free(id);
}

/* A message of a client's PUBLISH dropped (no subscribers, denied,
 * refused); m is NULL when it was never built. */
static void emit_publish_dropped(conn_t *c, const msg_t *m, const mqtt_publish_t *pb,
                                 event_drop_reason_t reason)
{
    worker_t *w = c->w;
    char peer[64];
    event_dropped_t ev = {.msg = m,
                          .topic = pb->topic.p,
                          .topic_len = pb->topic.len,
                          .qos = pb->qos,
                          .reason = reason};
    conn_event_client(c, &ev.client, peer, sizeof(peer));
    event_emit(w, &w->srv->events, EVENT_MESSAGE_DROPPED, &ev);
}

/* A client id for a client that sent none, chosen so that its home is this
 * worker: no hand-off needed. */
static uint16_t assign_client_id(worker_t *w, char *buf, size_t size)
{
    for (;;) {
        int n = snprintf(buf, size, "auto-%08x-%llx", w->id, (unsigned long long)++w->next_auto_id);
        if (worker_home(w->srv, (const uint8_t *)buf, (size_t)n) == w->id)
            return (uint16_t)n;
    }
}

static int hand_off(conn_t *c, uint32_t home, const mqtt_raw_t *pkt, const uint8_t *rest,
                    size_t rest_len)
{
    worker_t *w = c->w;
    handoff_t *h = an_malloc(sizeof(*h) + pkt->len + rest_len);
    h->c = c;
    h->hdr = pkt->hdr;
    h->connect_len = pkt->len;
    h->rest_len = (uint32_t)rest_len;
    if (pkt->len)
        memcpy(h->data, pkt->body, pkt->len);
    if (rest_len)
        memcpy(h->data + pkt->len, rest, rest_len);
    mqtt_parser_reset(&c->ps);
    tw_del(&w->tw, &c->timer);
    conn_unwatch(c);
    conn_unlink(c);
    c->state = CONN_MOVING;
    inbox_item_t it = {.kind = WM_ADOPT, .ptr = h};
    worker_post(w, home, &it);
    return 1;
}

/* What CONNECT negotiated beyond mqtt_connect_t. */
typedef struct {
    uint32_t expiry;    /* session expiry, seconds (SESS_NEVER) */
    uint16_t keepalive; /* granted */
    uint8_t keepalive_capped;
    uint8_t assigned; /* the client id was assigned by us */
} connect_terms_t;

static size_t connack_props(conn_t *c, const connect_terms_t *t, const uint8_t *id, uint16_t id_len,
                            uint8_t *buf, size_t cap)
{
    const conf_t *cf = server_live(c->w->srv);
    mqtt_pw_t pw;
    mqtt_pw_init(&pw, buf, cap);
    if (cf->receive_maximum != 65535)
        mqtt_pw_int(&pw, MQTT_PROP_RECEIVE_MAXIMUM, cf->receive_maximum);
    if (cf->max_qos < 2)
        mqtt_pw_int(&pw, MQTT_PROP_MAXIMUM_QOS, cf->max_qos);
    if (!cf->retain_available)
        mqtt_pw_int(&pw, MQTT_PROP_RETAIN_AVAILABLE, 0);
    mqtt_pw_int(&pw, MQTT_PROP_MAXIMUM_PACKET_SIZE, cf->max_packet_size);
    if (cf->topic_alias_max)
        mqtt_pw_int(&pw, MQTT_PROP_TOPIC_ALIAS_MAXIMUM, cf->topic_alias_max);
    if (!cf->wildcard_subscriptions)
        mqtt_pw_int(&pw, MQTT_PROP_WILDCARD_SUB_AVAILABLE, 0);
    if (!cf->subscription_identifiers)
        mqtt_pw_int(&pw, MQTT_PROP_SUB_ID_AVAILABLE, 0);
    if (!cf->shared_subscriptions)
        mqtt_pw_int(&pw, MQTT_PROP_SHARED_SUB_AVAILABLE, 0);
    if (t->keepalive_capped)
        mqtt_pw_int(&pw, MQTT_PROP_SERVER_KEEP_ALIVE, t->keepalive);
    if (t->assigned)
        mqtt_pw_str(&pw, MQTT_PROP_ASSIGNED_CLIENT_ID, id, id_len);
    auth_client_t *ac = c->x ? c->x->auth : NULL;
    if (ac && ac->mops) { /* enhanced authentication: the method's last word */
        mqtt_pw_str(&pw, MQTT_PROP_AUTH_METHOD, ac->mops->name, strlen(ac->mops->name));
        if (ac->method_out)
            mqtt_pw_str(&pw, MQTT_PROP_AUTH_DATA, ac->method_out, ac->method_out_len);
        free(ac->method_out);
        ac->method_out = NULL;
    }
    return mqtt_pw_error(&pw) ? 0 : mqtt_pw_len(&pw);
}

/* The provenance of c's messages (msg.h): made at its will or its first
 * PUBLISH (a subscriber that never publishes pays nothing), then shared by
 * every message of the connection; conn_free releases it. */
static const msg_origin_t *conn_origin(conn_t *c, const uint8_t *id, size_t id_len)
{
    conn_ext_t *x = conn_ext(c);
    if (x->origin == NULL) {
        uint8_t proto = c->proto == MQTT_PROTO_V5    ? MSG_PROTO_MQTT5
                        : c->proto == MQTT_PROTO_V31 ? MSG_PROTO_MQTT31
                                                     : MSG_PROTO_MQTT311;
        x->origin =
            msg_origin_new(proto, (const char *)id, id_len, x->auth ? x->auth->user : x->cert_user,
                           c->w->srv->conf.listeners[c->listener].name);
    }
    return x->origin;
}

/* CONNECT on the home worker: session, takeover, CONNACK, redelivery. */
static int connect_home(conn_t *c, const mqtt_connect_t *ck, const connect_terms_t *t,
                        const uint8_t *id, uint16_t id_len)
{
    worker_t *w = c->w;
    sess_t *s = sess_table_find_id(&w->by_id, id, id_len);
    /* limits.max_sessions: only a session that would add to the persistent
     * ones (workers check at once, so the count may pass it by a few) */
    uint32_t max_sessions = server_live(w->srv)->max_sessions;
    if (t->expiry && max_sessions && !(s && s->expiry) &&
        atomic_load_explicit(&w->srv->persistent_sessions, memory_order_relaxed) >= max_sessions)
        return refuse(c, ck, MQTT_CONNACK_UNAVAILABLE, MQTT_RC_QUOTA_EXCEEDED,
                      "limits.max_sessions persistent sessions exist");
    if (s)
        sess_acl_claim(w, s, &c->ep,
                       s->ep ? (ck->clean_session || s->expiry == 0
                                    ? "its connection closed, the session discarded"
                                    : "its connection closed, the session resumed")
                             : (ck->clean_session || s->expiry == 0 ? "the session discarded"
                                                                    : "the session resumed"));
    if (s && s->ep) {
        /* takeover: the older endpoint goes (a connection's will is
         * published) */
        endpoint_t *old = s->ep;
        /* one line for it, with the client id the detached connection no
         * longer has (a takeover storm writes one line per CONNECT) */
        char why[96];
        snprintf(why, sizeof(why), "session of '%.48s%s' taken over", s->client_id,
                 s->client_id_len > 48 ? "..." : "");
        if (event_wanted(w->srv, EVENT_CLIENT_DISCONNECTED)) {
            /* here, not in conn_close: the old connection loses its session
             * (and so its client id) before it closes */
            char peer[64];
            ep_info_t info;
            event_disconnected_t ev = {.reason = why, .reason_code = MQTT_RC_SESSION_TAKEN_OVER};
            ep_describe(old, &info, peer, sizeof(peer));
            ev.client = info.client;
            ev.client.client_id = s->client_id;
            event_emit(w, &w->srv->events, EVENT_CLIENT_DISCONNECTED, &ev);
        }
        if (event_wanted(w->srv, EVENT_SESSION_TAKEN_OVER)) {
            char peer[64], old_peer[64];
            ep_info_t info;
            ep_describe(old, &info, old_peer, sizeof(old_peer));
            event_taken_over_t ev = {.old_peer = info.client.peer,
                                     .resumed = !ck->clean_session && s->expiry != 0};
            conn_event_client(c, &ev.client, peer, sizeof(peer));
            ev.client.client_id = s->client_id;
            event_emit(w, &w->srv->events, EVENT_SESSION_TAKEN_OVER, &ev);
        }
        sess_take_over(s, why); /* closes old: EP_CLOSE_TAKEN_OVER */
    }
    if (s && s->expiry == 0) {
        /* a session without expiry lives as long as its connection */
        sess_destroy(w, s);
        s = NULL;
    }
    uint8_t present = 0;
    if (ck->clean_session) {
        if (s)
            sess_destroy(w, s);
        s = sess_new(w, id, id_len, t->expiry);
    } else if (s) {
        sess_set_expiry(s, t->expiry);
        present = 1;
    } else {
        s = sess_new(w, id, id_len, t->expiry);
    }
    if (ck->will_flag) {
        const mqtt_props_t *wp = &ck->will_props;
        uint8_t buf[1024], *props = buf;
        uint32_t plen = 0;
        uint64_t expire_at = 0;
        if (ck->proto == MQTT_PROTO_V5) {
            /* the will's properties travel with it [MQTT5 3.1.3.2] */
            uint64_t skip =
                MQTT_PROP_BIT(MQTT_PROP_WILL_DELAY) | MQTT_PROP_BIT(MQTT_PROP_MESSAGE_EXPIRY);
            mqtt_pw_t pw;
            mqtt_pw_init(&pw, NULL, 0);
            mqtt_pw_copy(&pw, wp, skip);
            plen = (uint32_t)mqtt_pw_len(&pw);
            if (plen > sizeof(buf))
                props = an_malloc(plen);
            mqtt_pw_init(&pw, props, plen);
            mqtt_pw_copy(&pw, wp, skip);
            if (wp->present & MQTT_PROP_BIT(MQTT_PROP_MESSAGE_EXPIRY))
                expire_at = UINT64_MAX; /* set when published: see below */
            if (wp->present & MQTT_PROP_BIT(MQTT_PROP_WILL_DELAY))
                conn_ext(c)->will_delay = wp->will_delay;
        }
        /* a will's expiry counts from its publication, which is later:
         * keep it simple and let it live as long as the interval from now */
        if (expire_at)
            expire_at = w->now + (uint64_t)wp->message_expiry * 1000u +
                        (c->x ? (uint64_t)c->x->will_delay * 1000u : 0);
        msg_t *will =
            msg_new_v5(ck->will_topic.p, ck->will_topic.len, props, plen, ck->will_payload.p,
                       ck->will_payload.len, ck->will_qos, ck->will_retain, expire_at);
        conn_ext(c)->will = will;
        if (atomic_load_explicit(&c->w->srv->origins_wanted, memory_order_relaxed))
            msg_set_origin(will, conn_origin(c, id, id_len));
        if (props != buf)
            free(props);
    }
    c->keepalive = t->keepalive;
    c->state = CONN_ACTIVE;
    if (c->proto == MQTT_PROTO_V5) {
        uint8_t props[512];
        size_t len = connack_props(c, t, id, id_len, props, sizeof(props));
        mqtt_encode_connack_v5(conn_reserve(c, mqtt_connack_v5_size(len), 1), present,
                               MQTT_RC_SUCCESS, props, len);
    } else {
        mqtt_encode_connack(conn_reserve(c, 4, 1), present, MQTT_CONNACK_ACCEPTED);
    }
    conn_count_out(c, MQTT_CONNACK);
    STAT_ADD(w->stats.clients_connected, 1);
    STAT_ADD(w->stats.connections_total, 1);
    conn_arm_timer(c);
    if (!present && event_wanted(w->srv, EVENT_SESSION_CREATED)) {
        char peer[64];
        event_session_created_t ev = {.session_expiry = s->expiry};
        conn_event_client(c, &ev.client, peer, sizeof(peer));
        ev.client.client_id = s->client_id;
        event_emit(w, &w->srv->events, EVENT_SESSION_CREATED, &ev);
    }
    sess_acl_attach(w, s, &c->ep, present);
    /* what the session needs to know of MQTT (endpoint.h) */
    c->ep.flags = c->proto == MQTT_PROTO_V5 ? EP_F_SUBIDS : EP_F_RETRY;
    c->sess = s;
    sess_attach(s, &c->ep);
    persist_session_update(w, s);
    if (event_wanted(w->srv, EVENT_CLIENT_CONNECTED)) {
        char peer[64];
        event_connected_t ev = {.session_expiry = s->expiry,
                                .keepalive = c->keepalive,
                                .clean_start = ck->clean_session,
                                .session_present = present};
        conn_event_client(c, &ev.client, peer, sizeof(peer));
        event_emit(w, &w->srv->events, EVENT_CLIENT_CONNECTED, &ev);
    }
    char name[160];
    const char *user = c->x && c->x->auth ? c->x->auth->user : c->x ? c->x->cert_user : NULL;
    conn_log_ev(c, AN_LOG_INFO, "client_connected", NULL,
                "%s: connected (MQTT %s, clean %u, keepalive %u, session present %u%s%s%s)",
                conn_name(c, name, sizeof(name)),
                c->proto == MQTT_PROTO_V5    ? "5.0"
                : c->proto == MQTT_PROTO_V31 ? "3.1"
                                             : "3.1.1",
                ck->clean_session, c->keepalive, present, user ? ", user '" : "", user ? user : "",
                user ? "'" : "");
    return 0;
}

/* ---- the connect gate (proto.h) ---- */

#define GATE_PASSED 2 /* on_connect's `adopted` on a gated replay: home, authenticated, gated */

void proto_gate_register(server_t *srv, int (*fn)(worker_t *w, proto_gate_t *g, void *user),
                         void *user)
{
    srv->connect_gate = fn;
    srv->connect_gate_user = user;
}

void proto_gate_free(proto_gate_t *g)
{
    if (g == NULL)
        return;
    if (g->release)
        g->release(g);
    free(g->client_id);
    free(g->held);
    free(g);
}

int proto_gate_post(proto_gate_t *g)
{
    inbox_vec_t v = {0};
    inbox_item_t it = {.kind = WM_GATE, .ptr = g};
    inbox_vec_push(&v, &it);
    inbox_post(&g->w->inbox, &v);
    inbox_vec_free(&v);
    return 0;
}

void proto_gate_add(inbox_vec_t *v, proto_gate_t *g)
{
    inbox_item_t it = {.kind = WM_GATE, .ptr = g};
    inbox_vec_push(v, &it);
}

/* Ask the gate about this CONNECT: 0 go on, 1 parked (the CONNECT and the
 * bytes after it kept until the answer). */
static int gate(conn_t *c, const mqtt_connect_t *ck, const connect_terms_t *t,
                const mqtt_raw_t *pkt, const uint8_t *rest, size_t rest_len, const uint8_t *id,
                uint16_t id_len)
{
    worker_t *w = c->w;
    proto_gate_t *g = an_calloc(1, sizeof(*g));
    g->owner = c;
    g->w = w;
    g->client_id = an_strndup((const char *)id, id_len);
    g->id_len = id_len;
    g->proto = ck->proto;
    g->clean_start = ck->clean_session;
    g->expiry = t->expiry;
    g->held = an_malloc(pkt->len + rest_len + 1);
    if (pkt->len)
        memcpy(g->held, pkt->body, pkt->len);
    if (rest_len)
        memcpy(g->held + pkt->len, rest, rest_len);
    g->hdr = pkt->hdr;
    g->connect_len = (uint32_t)pkt->len;
    g->held_len = (uint32_t)(pkt->len + rest_len);
    if (w->srv->connect_gate(w, g, w->srv->connect_gate_user) == 0) {
        proto_gate_free(g);
        return 0;
    }
    conn_ext(c)->gate = g;
    mqtt_parser_reset(&c->ps);
    proto_hold(c);
    if (!tw_pending(&c->timer)) /* adopted from another worker: no timer yet */
        tw_add(&w->tw, &c->timer, w->now + (uint64_t)server_live(w->srv)->connect_timeout * 1000u);
    return 1;
}

static void gate_answer(worker_t *w, proto_gate_t *g)
{
    conn_t *c = g->owner;
    if (c == NULL || c->state != CONN_AUTH) {
        proto_gate_free(g); /* the connection went meanwhile */
        return;
    }
    c->x->gate = NULL;
    if (g->refuse_rc5 == 0 && g->apply)
        g->refuse_rc5 = g->apply(w, g);
    if (g->refuse_rc5) {
        char why[96];
        snprintf(why, sizeof(why), "client id refused by the cluster (reason 0x%02x)",
                 g->refuse_rc5);
        c->state = CONN_NEW;
        refuse(c, NULL, MQTT_CONNACK_UNAVAILABLE, g->refuse_rc5, why);
        proto_gate_free(g);
        return;
    }
    c->state = CONN_NEW;
    if (conn_watch(c) < 0) {
        proto_gate_free(g);
        conn_close(c, "cannot watch the socket after the connect gate", 0);
        return;
    }
    mqtt_raw_t pkt = {
        .hdr = g->hdr, .len = g->connect_len, .body = g->connect_len ? g->held : NULL};
    int rc = proto_on_connect(c, &pkt, NULL, 0, GATE_PASSED);
    if (rc == 0 && g->held_len > g->connect_len)
        conn_input(c, g->held + g->connect_len, g->held_len - g->connect_len);
    proto_gate_free(g);
    if (c->state == CONN_ACTIVE)
        conn_ext_trim(c); /* the gate's pointer was all it held, mostly */
}

int proto_on_connect(conn_t *c, const mqtt_raw_t *pkt, const uint8_t *rest, size_t rest_len,
                     int adopted)
{
    worker_t *w = c->w;
    const conf_t *cf = server_live(w->srv);
    mqtt_connect_t ck;
    const char *why = NULL;
    int rc = mqtt_decode_connect_v5ok(pkt, &ck, 1, &why);
    if (rc == MQTT_ERR_PROTOCOL_VERSION)
        return refuse(c, NULL, MQTT_CONNACK_BAD_VERSION, MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION,
                      why ? why : "protocol version");
    if (rc == MQTT_ERR_CLIENT_ID)
        return refuse(c, NULL, MQTT_CONNACK_ID_REJECTED, MQTT_RC_CLIENT_ID_NOT_VALID,
                      why ? why : "client identifier");
    if (rc < 0)
        return proto_malformed(c, rc, why);
    c->proto = ck.proto;
    if (ck.client_id.len > cf->max_client_id_length) {
        /* not passed as &ck: refuse() would log the id whole and raw */
        char preview[4 * ID_PREVIEW + 1], text[4 * ID_PREVIEW + 160];
        proto_id_preview(ck.client_id.p, ck.client_id.len, preview, sizeof(preview));
        snprintf(text, sizeof(text),
                 "client identifier of %u bytes over mqtt.max_client_id_length (%u): '%s%s'",
                 (unsigned)ck.client_id.len, cf->max_client_id_length, preview,
                 ck.client_id.len > ID_PREVIEW ? "..." : "");
        return refuse(c, NULL, MQTT_CONNACK_ID_REJECTED, MQTT_RC_CLIENT_ID_NOT_VALID, text);
    }
    connect_terms_t t = {.keepalive = ck.keepalive};
    if (ck.proto == MQTT_PROTO_V5) {
        const mqtt_props_t *pr = &ck.props;
        if ((pr->present & MQTT_PROP_BIT(MQTT_PROP_AUTH_METHOD)) && !adopted &&
            !(c->x && c->x->auth && c->x->auth->authed))
            return proto_enhanced_start(c, &ck, pkt);
        if (pr->present & MQTT_PROP_BIT(MQTT_PROP_RECEIVE_MAXIMUM))
            c->ep.receive_max = pr->receive_max;
        if (pr->present & MQTT_PROP_BIT(MQTT_PROP_MAXIMUM_PACKET_SIZE))
            c->ep.max_packet = pr->max_packet_size;
        if ((pr->present & MQTT_PROP_BIT(MQTT_PROP_TOPIC_ALIAS_MAXIMUM)) && pr->topic_alias_max)
            conn_ext(c)->alias_out_max = AN_MIN(pr->topic_alias_max, 64);
        if ((pr->present & MQTT_PROP_BIT(MQTT_PROP_REQUEST_PROBLEM_INFO)) &&
            !pr->request_problem_info)
            c->flags &= (uint8_t)~CONN_F_PROBLEM_INFO;
        t.expiry = pr->session_expiry; /* absent: 0 */
    } else {
        t.expiry = ck.clean_session ? 0 : (cf->session_expiry ? cf->session_expiry : SESS_NEVER);
    }
    if (ck.will_flag && ck.will_qos > cf->max_qos)
        return refuse(c, &ck, MQTT_CONNACK_NOT_AUTHORIZED, MQTT_RC_QOS_NOT_SUPPORTED,
                      "[MQTT5-3.2.2-12] will QoS above max_qos");
    if (ck.will_flag && ck.will_retain && !cf->retain_available)
        return refuse(c, &ck, MQTT_CONNACK_NOT_AUTHORIZED, MQTT_RC_RETAIN_NOT_SUPPORTED,
                      "[MQTT5-3.2.2-13] will retain without retain available");
    if (cf->server_reference[0])
        return refuse(c, &ck, MQTT_CONNACK_UNAVAILABLE, MQTT_RC_SERVER_MOVED,
                      "server moved (server_reference)");
    /* cert_username: the verified client certificate names the user */
    const conf_listener_t *lst = &cf->listeners[c->listener];
    if (lst->cert_username != CONF_CERT_USER_NONE && c->x && c->x->tp && c->x->cert_user == NULL) {
        char user[256];
        int n = tp_peer_cert_name(c->x->tp, lst->cert_username, user, sizeof(user));
        if (n > 0)
            c->x->cert_user = an_strndup(user, (size_t)n);
    }
    int cert_user = c->x && c->x->cert_user;
    int anonymous = !ck.has_username && !ck.has_password && !cert_user &&
                    !(c->x && c->x->auth && c->x->auth->authed); /* enhanced auth */
    uint8_t anon_ok =
        lst->allow_anonymous == CONF_ANON_INHERIT ? cf->allow_anonymous : lst->allow_anonymous;
    if (anonymous && !anon_ok) {
        STAT_ADD(w->stats.auth_failure, 1);
        return proto_refuse_auth(c, &ck, AUTH_ANONYMOUS, "anonymous clients are not allowed");
    }
    if (ck.keepalive > cf->max_keepalive) {
        if (ck.proto != MQTT_PROTO_V5 && cf->keepalive_over_max == CONF_KEEPALIVE_REFUSE)
            return refuse(c, &ck, MQTT_CONNACK_ID_REJECTED, 0, "keepalive above max_keepalive");
        t.keepalive = cf->max_keepalive; /* MQTT 5: told as Server Keep Alive */
        t.keepalive_capped = ck.proto == MQTT_PROTO_V5;
    }

    char auto_id[48];
    const uint8_t *id = ck.client_id.p;
    uint16_t id_len = ck.client_id.len;
    if (id_len == 0) { /* 3.1.1: clean session is guaranteed by the codec */
        id_len = assign_client_id(w, auto_id, sizeof(auto_id));
        id = (const uint8_t *)auto_id;
        t.assigned = 1;
    }
    if (!adopted) {
        int arc = proto_authenticate(c, &ck, pkt, rest, rest_len, id, id_len, anonymous);
        if (arc != 0)
            return arc; /* refused (-1) or waiting for an answer (1) */
        auth_client_t *ac = c->x ? c->x->auth : NULL;
        if (ac) {
            free(ac->client_id);
            ac->client_id = an_strndup((const char *)id, id_len);
        }
        /* the user the ACL knows; without auth state, the CONNECT's */
        const char *user = ac ? ac->user : cert_user ? c->x->cert_user : NULL;
        char *named = NULL;
        if (!ac && !cert_user && ck.has_username)
            user = named = an_strndup((const char *)ck.username.p, ck.username.len);
        int bound = proto_client_id_bound(cf, user, id, id_len, t.assigned);
        free(named);
        if (!bound)
            return proto_refuse_auth(c, &ck, AUTH_CLIENT_ID_REFUSED,
                                     "client id not bound to the user (auth.client_id_binding)");
        if (ck.will_flag && !auth_chain_acl(w->srv->auth, ac, AUTH_ACT_PUBLISH, ck.will_topic.p,
                                            ck.will_topic.len, 0)) {
            STAT_ADD(w->stats.acl_denied, 1);
            STAT_ADD(w->stats.acl_denied_by[STAT_ACL_PUBLISH], 1);
            return refuse(c, &ck, MQTT_CONNACK_NOT_AUTHORIZED, MQTT_RC_NOT_AUTHORIZED,
                          "will topic not authorized by the ACL");
        }
        if (ck.will_flag && !cf->allow_sys_publish &&
            router_is_sys_topic(ck.will_topic.p, ck.will_topic.len)) {
            STAT_ADD(w->stats.acl_denied, 1);
            STAT_ADD(w->stats.acl_denied_by[STAT_ACL_PUBLISH], 1);
            return refuse(c, &ck, MQTT_CONNACK_NOT_AUTHORIZED, MQTT_RC_NOT_AUTHORIZED,
                          "will topic in $SYS (mqtt.allow_sys_publish is false)");
        }
    }
    /* adopted too: the session may have moved since it was handed here
     * (migrate.h); the home table converges, so this ends */
    uint32_t home = worker_home(w->srv, id, id_len);
    if (home != w->id)
        return hand_off(c, home, pkt, rest, rest_len);
    if (w->srv->connect_gate && adopted != GATE_PASSED && !t.assigned) {
        int grc = gate(c, &ck, &t, pkt, rest, rest_len, id, id_len);
        if (grc != 0)
            return grc; /* parked (1) */
    }
    return connect_home(c, &ck, &t, id, id_len);
}

/* limits.max_topic_length and limits.max_topic_levels. */
static int topic_within_limits(const conf_t *cf, const uint8_t *p, size_t len)
{
    if (len > cf->max_topic_length)
        return 0;
    size_t levels = 1;
    for (size_t i = 0; i < len; i++)
        if (p[i] == '/' && ++levels > cf->max_topic_levels)
            return 0;
    return 1;
}

/* MQTT 5 Topic Alias from a client [MQTT5 3.3.2.3.4]: learn or resolve.
 * Returns 0, or -1 after closing the connection. */
static int resolve_alias(conn_t *c, mqtt_publish_t *pb)
{
    uint16_t max = server_live(c->w->srv)->topic_alias_max, alias = pb->props.topic_alias;
    if (alias == 0 || alias > max)
        return proto_close_with(c, MQTT_RC_TOPIC_ALIAS_INVALID, "protocol error",
                                "[MQTT5-3.3.2-8] topic alias out of range");
    conn_ext_t *x = conn_ext(c);
    if (x->alias_in == NULL) {
        x->alias_in = an_calloc(max, sizeof(*x->alias_in));
        x->nalias_in = max;
    }
    mqtt_str_t *slot = &x->alias_in[alias - 1];
    if (pb->topic.len) {
        uint8_t *copy = an_malloc(pb->topic.len);
        memcpy(copy, pb->topic.p, pb->topic.len);
        free((void *)slot->p);
        slot->p = copy;
        slot->len = pb->topic.len;
    } else if (slot->p == NULL) {
        return proto_protocol_error(c, "[MQTT5 3.3.4] topic alias not set on this connection");
    } else {
        pb->topic = *slot;
    }
    return 0;
}

/* A client PUBLISH to $SYS or $SYS/... (mqtt.allow_sys_publish false):
 * forged broker figures or invented retained topics; or to a '$' topic the
 * module's topic guard refused (router_guard: why).  Handled as an ACL
 * denial: MQTT 5 PUBACK/PUBREC 0x87, MQTT 3.1.1 acknowledged and dropped,
 * QoS 0 dropped; one log line per worker per second at most. */
static int refuse_sys_publish(conn_t *c, const mqtt_publish_t *pb, const char *why)
{
    worker_t *w = c->w;
    STAT_ADD(w->stats.acl_denied, 1);
    STAT_ADD(w->stats.acl_denied_by[STAT_ACL_PUBLISH], 1);
    if (w->now >= w->acl_logged_at + 1000u) {
        char name[160];
        w->acl_logged_at = w->now;
        conn_log_ev(c, AN_LOG_INFO, "acl_denied", "publish",
                    "%s: PUBLISH to '%.*s' refused: %s, dropped", conn_name(c, name, sizeof(name)),
                    (int)AN_MIN(pb->topic.len, 200), (const char *)pb->topic.p, why);
    }
    if (event_wanted(w->srv, EVENT_MESSAGE_DROPPED))
        emit_publish_dropped(c, NULL, pb, EVENT_DROP_PUBLISH_DENIED);
    if (pb->qos == 1)
        send_ack_after(c, MQTT_PUBACK, pb->packet_id, MQTT_RC_NOT_AUTHORIZED, 0);
    else if (pb->qos == 2)
        send_ack_after(c, MQTT_PUBREC, pb->packet_id, MQTT_RC_NOT_AUTHORIZED, 0);
    return 0;
}

static int on_publish(conn_t *c, const mqtt_raw_t *pkt)
{
    worker_t *w = c->w;
    const conf_t *cf = server_live(w->srv);
    mqtt_publish_t pb;
    const char *why = NULL;
    int rc = mqtt_decode_publish(pkt, c->proto, &pb, &why);
    if (rc < 0)
        return proto_malformed(c, rc, why);
    STAT_ADD(w->stats.msgs_received, 1);
    STAT_ADD(w->stats.msgs_in_qos[pb.qos > 2 ? 2 : pb.qos], 1);
    conn_count_publish(c, pkt->len);
    int v5 = c->proto == MQTT_PROTO_V5;
    if (v5 && (pb.props.present & MQTT_PROP_BIT(MQTT_PROP_TOPIC_ALIAS)) &&
        resolve_alias(c, &pb) < 0)
        return -1;
    if (!topic_within_limits(cf, pb.topic.p, pb.topic.len))
        return proto_close_with(c, MQTT_RC_TOPIC_NAME_INVALID, "protocol error",
                                "topic exceeds max_topic_length or max_topic_levels");
    if (pb.qos > cf->max_qos)
        return proto_close_with(c, MQTT_RC_QOS_NOT_SUPPORTED, "protocol error",
                                "[MQTT5-3.2.2-11] QoS above max_qos");
    if (pb.retain && !cf->retain_available)
        return proto_close_with(c, MQTT_RC_RETAIN_NOT_SUPPORTED, "protocol error",
                                "[MQTT5-3.2.2-14] retain not available");
    if (!cf->allow_sys_publish && router_is_sys_topic(pb.topic.p, pb.topic.len))
        return refuse_sys_publish(c, &pb, "$SYS topics are the broker's (mqtt.allow_sys_publish)");
    if (unlikely(w->srv->nguards != 0) && pb.topic.len &&
        router_guard_first(w->srv, pb.topic.p[0])) {
        router_who_t who = {c->sess->client_id, c->sess->client_id_len,
                            c->x && c->x->auth ? c->x->auth->user : NULL};
        if (!router_guard_publish(w->srv, &who, pb.topic.p, pb.topic.len))
            return refuse_sys_publish(c, &pb, "not this client's topic (a module's topic guard)");
    }
    if (!auth_chain_acl(w->srv->auth, c->x ? c->x->auth : NULL, AUTH_ACT_PUBLISH, pb.topic.p,
                        pb.topic.len, 0)) {
        /* MQTT 5: 0x87 in the acknowledgement; MQTT 3.1.1 has no negative
         * acknowledgement: acknowledged (QoS 1/2) and dropped */
        char name[160];
        STAT_ADD(w->stats.acl_denied, 1);
        STAT_ADD(w->stats.acl_denied_by[STAT_ACL_PUBLISH], 1);
        /* a client that keeps publishing there must not log every message:
         * one line per worker per second at most (the counter has them all) */
        if (w->now >= w->acl_logged_at + 1000u) {
            w->acl_logged_at = w->now;
            conn_log_ev(c, AN_LOG_INFO, "acl_denied", "publish",
                        "%s: PUBLISH to '%.*s' denied by the ACL, dropped",
                        conn_name(c, name, sizeof(name)), (int)AN_MIN(pb.topic.len, 200),
                        (const char *)pb.topic.p);
        }
        if (event_wanted(w->srv, EVENT_MESSAGE_DROPPED))
            emit_publish_dropped(c, NULL, &pb, EVENT_DROP_PUBLISH_DENIED);
        if (pb.qos == 1)
            send_ack_after(c, MQTT_PUBACK, pb.packet_id, MQTT_RC_NOT_AUTHORIZED, 0);
        else if (pb.qos == 2)
            send_ack_after(c, MQTT_PUBREC, pb.packet_id, MQTT_RC_NOT_AUTHORIZED, 0);
        return 0;
    }
    if (v5 && pb.props.payload_format == 1 && !mqtt_utf8_valid(pb.payload, pb.payload_len)) {
        /* [MQTT5-3.3.2-4] payload said to be UTF-8 and it is not */
        if (pb.qos == 0)
            return proto_close_with(c, MQTT_RC_PAYLOAD_FORMAT_INVALID, "protocol error",
                                    "payload is not the UTF-8 its format indicator says");
        send_ack_after(c, pb.qos == 1 ? MQTT_PUBACK : MQTT_PUBREC, pb.packet_id,
                       MQTT_RC_PAYLOAD_FORMAT_INVALID, 0);
        return 0;
    }
    if (pb.qos == 2) {
        /* MQTT 3.1.1 has no Receive Maximum: its QoS 2 ids awaiting PUBREL
         * are held to limits.max_awaiting_rel (bounded state and lookups) */
        if (sess_qos2_in_count(c->sess) >= (v5 ? cf->receive_maximum : cf->max_awaiting_rel) &&
            !sess_qos2_in_known(c->sess, pb.packet_id))
            return proto_close_with(c, MQTT_RC_RECEIVE_MAXIMUM_EXCEEDED, "protocol error",
                                    v5 ? "[MQTT5-3.3.4-9] receive maximum exceeded"
                                       : "more QoS 2 messages awaiting PUBREL than "
                                         "limits.max_awaiting_rel");
        if (!sess_qos2_in_begin(c->sess, pb.packet_id)) {
            /* a resent PUBLISH we already routed: acknowledge, do not deliver */
            send_ack_after(c, MQTT_PUBREC, pb.packet_id, 0, 0);
            return 0;
        }
    }
    size_t ops = persist_pending_ops(w);
    if (pb.qos == 2)
        persist_incoming(w, c->sess, pb.packet_id, 1);
    msg_t *m;
    if (v5 && pb.props.raw_len) {
        /* keep what subscribers receive unchanged; alias, ids and expiry
         * are per delivery */
        uint64_t skip = MQTT_PROP_BIT(MQTT_PROP_TOPIC_ALIAS) |
                        MQTT_PROP_BIT(MQTT_PROP_SUBSCRIPTION_ID) |
                        MQTT_PROP_BIT(MQTT_PROP_MESSAGE_EXPIRY);
        uint8_t buf[512], *props = buf;
        mqtt_pw_t pw;
        mqtt_pw_init(&pw, NULL, 0);
        mqtt_pw_copy(&pw, &pb.props, skip);
        size_t plen = mqtt_pw_len(&pw);
        if (plen > sizeof(buf))
            props = an_malloc(plen);
        mqtt_pw_init(&pw, props, plen);
        mqtt_pw_copy(&pw, &pb.props, skip);
        uint64_t expire_at = 0;
        if (pb.props.present & MQTT_PROP_BIT(MQTT_PROP_MESSAGE_EXPIRY))
            expire_at = w->now + (uint64_t)pb.props.message_expiry * 1000u;
        m = msg_new_v5(pb.topic.p, pb.topic.len, props, (uint32_t)plen, pb.payload, pb.payload_len,
                       pb.qos, pb.retain, expire_at);
        if (props != buf)
            free(props);
    } else {
        m = msg_new(pb.topic.p, pb.topic.len, pb.payload, pb.payload_len, pb.qos, pb.retain);
    }
    if (atomic_load_explicit(&w->srv->origins_wanted, memory_order_relaxed))
        msg_set_origin(
            m, likely(c->x && c->x->origin)
                   ? c->x->origin
                   : conn_origin(c, (const uint8_t *)c->sess->client_id, c->sess->client_id_len));
    if (unlikely(w->srv->receive_hook != NULL))
        m = w->srv->receive_hook(w, m, c->sess, w->srv->receive_user);
    w->publish_backlogged = 0;
    w->dlv_local = w->dlv_cross = 0;
    w->dlv_mixed = 0;
    size_t n = router_publish(w, m, c->sess);
    if (w->mig_on) /* where its deliveries went: move it there? */
        migrate_note(w, c->sess);
    if (unlikely(w->publish_backlogged)) {
        /* a subscriber is behind: read no more from this publisher for a
         * tick, so that it feels the subscriber's pace (this message is
         * acknowledged as usual; its window stops the rest) */
        STAT_ADD(w->stats.backpressure_pauses, 1);
        conn_hold_reads(c, w->now + 1);
    }
    if (n == ROUTER_REFUSED || n == ROUTER_NO_RETAIN) {
        if (event_wanted(w->srv, EVENT_MESSAGE_DROPPED))
            emit_publish_dropped(c, m, &pb, EVENT_DROP_PUBLISH_REFUSED);
    } else {
        if (event_wanted_msg(w->srv, EVENT_MESSAGE_PUBLISHED, m)) {
            char peer[64];
            event_published_t ev = {.msg = m, .packet_id = pb.packet_id, .receivers = (uint32_t)n};
            conn_event_client(c, &ev.client, peer, sizeof(peer));
            event_emit(w, &w->srv->events, EVENT_MESSAGE_PUBLISHED, &ev);
        }
        if (n == 0 && event_drop_wanted(w->srv, EVENT_DROP_NO_SUBSCRIBERS))
            emit_publish_dropped(c, m, &pb, EVENT_DROP_NO_SUBSCRIBERS);
    }
    msg_unref(&m);
    if (n == ROUTER_REFUSED || n == ROUTER_NO_RETAIN) {
        /* a subscriber's queue is full (limits.queue_full: refuse), or a new
         * retained topic beyond limits.max_retained */
        if (w->now >= w->qfull_logged_at + 1000u) {
            char name[160];
            w->qfull_logged_at = w->now;
            conn_log_ev(c, AN_LOG_INFO, "publish_refused", NULL,
                        "%s: PUBLISH to '%.*s' refused: %s", conn_name(c, name, sizeof(name)),
                        (int)AN_MIN(pb.topic.len, 200u), (const char *)pb.topic.p,
                        n == ROUTER_REFUSED ? "a subscriber's queue is full"
                                            : "limits.max_retained messages are retained");
        }
        if (pb.qos == 2) {
            sess_qos2_in_end(c->sess, pb.packet_id); /* a resend is a new try */
            persist_incoming(w, c->sess, pb.packet_id, 0);
        }
        int wrote = persist_pending_ops(w) != ops;
        if (pb.qos > 0) /* QoS 0: dropped, nothing to say */
            send_ack_after(c, pb.qos == 1 ? MQTT_PUBACK : MQTT_PUBREC, pb.packet_id,
                           MQTT_RC_QUOTA_EXCEEDED, wrote);
        return 0;
    }
    /* [MQTT5 3.4.2.1] 0x10: accepted, but nobody subscribes to it */
    uint8_t reason = n ? MQTT_RC_SUCCESS : MQTT_RC_NO_MATCHING_SUBSCRIBERS;
    int wrote = persist_pending_ops(w) != ops;
    if (pb.qos == 1)
        send_ack_after(c, MQTT_PUBACK, pb.packet_id, reason, wrote);
    else if (pb.qos == 2)
        send_ack_after(c, MQTT_PUBREC, pb.packet_id, reason, wrote);
    return 0;
}

static int has_wildcard(const uint8_t *f, size_t len)
{
    return memchr(f, '+', len) != NULL || memchr(f, '#', len) != NULL;
}

/* The SUBACK code for one filter, subscribing when it is granted. */
static uint8_t subscribe_one(conn_t *c, const mqtt_str_t *f, uint8_t opts, uint32_t subid,
                             uint8_t *send_retained)
{
    worker_t *w = c->w;
    sess_t *s = c->sess;
    const conf_t *cf = server_live(w->srv);
    int v5 = c->proto == MQTT_PROTO_V5;
    const uint8_t *real = f->p;
    size_t rl = f->len;
    *send_retained = 0;
    int shared = mqtt_shared_filter_parse(f->p, f->len, NULL, NULL, &real, &rl);
    if (shared < 0)
        return v5 ? MQTT_RC_TOPIC_FILTER_INVALID : MQTT_SUBACK_FAILURE;
    if (shared && !cf->shared_subscriptions)
        return v5 ? MQTT_RC_SHARED_SUBS_NOT_SUPPORTED : MQTT_SUBACK_FAILURE;
    if (has_wildcard(real, rl) && !cf->wildcard_subscriptions)
        return v5 ? MQTT_RC_WILDCARD_SUBS_NOT_SUPPORTED : MQTT_SUBACK_FAILURE;
    if (!topic_within_limits(cf, f->p, f->len))
        return v5 ? MQTT_RC_TOPIC_FILTER_INVALID : MQTT_SUBACK_FAILURE;
    /* the generation first: a reload after it makes the verdict stale */
    uint32_t gen = auth_chain_gen(w->srv->auth);
    int verdict =
        auth_chain_acl(w->srv->auth, c->x ? c->x->auth : NULL, AUTH_ACT_SUBSCRIBE, real, rl, 1);
    if (unlikely(w->srv->nguards_sub != 0) && verdict != AUTH_ACL_DENY) {
        router_who_t who = {s->client_id, s->client_id_len,
                            c->x && c->x->auth ? c->x->auth->user : NULL};
        if (!router_guard_subscribe(w->srv, &who, real, rl))
            verdict = AUTH_ACL_DENY; /* a module's topics: another device's commands */
    }
    if (verdict == AUTH_ACL_DENY) {
        char name[160];
        STAT_ADD(w->stats.acl_denied, 1);
        STAT_ADD(w->stats.acl_denied_by[STAT_ACL_SUBSCRIBE], 1);
        conn_log_ev(c, AN_LOG_INFO, "acl_denied", "subscribe",
                    "%s: SUBSCRIBE to '%.*s' denied by the ACL", conn_name(c, name, sizeof(name)),
                    (int)AN_MIN(f->len, 200), (const char *)f->p);
        return v5 ? MQTT_RC_NOT_AUTHORIZED : MQTT_SUBACK_FAILURE;
    }
    if (cf->max_subscriptions && s->nsubs >= cf->max_subscriptions &&
        !sess_has_sub(s, f->p, f->len))
        return v5 ? MQTT_RC_QUOTA_EXCEEDED : MQTT_SUBACK_FAILURE;
    uint8_t granted = AN_MIN(MQTT_SUBOPT_QOS(opts), cf->max_qos);
    opts = (uint8_t)((opts & ~3) | granted);
    int added = sess_subscribe(w, s, f->p, f->len, opts, subid);
    /* PARTIAL: granted, the topics the ACL denies are not delivered */
    sess_acl_subscribed(s, f->p, f->len, verdict, gen);
    if (event_wanted(w->srv, EVENT_SUBSCRIBED)) {
        char peer[64];
        event_subscribed_t ev = {.filter = f->p,
                                 .filter_len = f->len,
                                 .qos = granted,
                                 .options = opts,
                                 .is_new = added == 1,
                                 .subscription_id = subid};
        conn_event_client(c, &ev.client, peer, sizeof(peer));
        event_emit(w, &w->srv->events, EVENT_SUBSCRIBED, &ev);
    }
    /* [MQTT5 3.3.1.3] retain handling; never on a shared subscription */
    uint8_t rh = MQTT_SUBOPT_RETAIN_HANDLING(opts);
    *send_retained = !shared && (rh == 0 || (rh == 1 && added));
    return granted;
}

static int on_subscribe(conn_t *c, const mqtt_raw_t *pkt)
{
    worker_t *w = c->w;
    int v5 = c->proto == MQTT_PROTO_V5;
    mqtt_sub_iter_t it;
    const char *why = NULL;
    int rc = v5 ? mqtt_decode_subscribe_v5(pkt, &it, &why) : mqtt_decode_subscribe(pkt, &it, &why);
    if (rc < 0)
        return proto_malformed(c, rc, why);
    uint32_t subid = 0;
    if (v5 && (it.props.present & MQTT_PROP_BIT(MQTT_PROP_SUBSCRIPTION_ID))) {
        if (!w->srv->conf.subscription_identifiers)
            return proto_close_with(c, MQTT_RC_SUB_IDS_NOT_SUPPORTED, "protocol error",
                                    "subscription identifiers are not available");
        subid = it.props.sub_id;
    }
    mqtt_sub_iter_t again = it;
    uint8_t *codes = an_malloc(it.count), *retained = an_malloc(it.count);
    mqtt_str_t f;
    uint8_t opts;
    uint32_t i = 0, granted = 0;
    while (i < it.count && mqtt_sub_next_opts(&it, &f, &opts)) {
        codes[i] = subscribe_one(c, &f, opts, subid, &retained[i]);
        granted += codes[i] < 0x80;
        i++;
    }
    if (granted) /* one record for the packet, not one per filter */
        sess_subscriptions_saved(w, c->sess);
    if (v5)
        mqtt_encode_suback_v5(conn_reserve(c, mqtt_suback_v5_size(0, i), 1), it.packet_id, NULL, 0,
                              codes, i);
    else
        mqtt_encode_suback(conn_reserve(c, mqtt_suback_size(i), 1), it.packet_id, codes, i);
    conn_count_out(c, MQTT_SUBACK);
    /* [MQTT-3.8.4-3] retained messages for every filter, after the SUBACK */
    for (uint32_t j = 0; j < i && mqtt_sub_next_opts(&again, &f, &opts); j++)
        if (retained[j])
            router_send_retained(w, c->sess, f.p, f.len, codes[j]);
    free(codes);
    free(retained);
    /* a cluster: the SUBACK leaves once every node has the routes, so a
     * message published anywhere after it reaches this subscriber */
    const route_owner_kind_t *k = &w->srv->route_owners[ROUTE_OWNER_NODE];
    if (granted && k->sub_barrier) {
        uint32_t wait_ms = 0;
        uint64_t ticket = k->sub_barrier(w, &wait_ms, k->user);
        if (ticket)
            conn_route_hold(c, ticket, wait_ms);
    }
    return 0;
}

static int on_unsubscribe(conn_t *c, const mqtt_raw_t *pkt)
{
    int v5 = c->proto == MQTT_PROTO_V5;
    mqtt_sub_iter_t it;
    const char *why = NULL;
    int rc =
        v5 ? mqtt_decode_unsubscribe_v5(pkt, &it, &why) : mqtt_decode_unsubscribe(pkt, &it, &why);
    if (rc < 0)
        return proto_malformed(c, rc, why);
    uint8_t *codes = an_malloc(it.count);
    mqtt_str_t f;
    uint8_t qos;
    uint32_t i = 0, removed = 0;
    while (i < it.count && mqtt_sub_next(&it, &f, &qos)) {
        int gone = sess_unsubscribe(c->w, c->sess, f.p, f.len);
        removed += gone != 0;
        if (gone && event_wanted(c->w->srv, EVENT_UNSUBSCRIBED)) {
            char peer[64];
            event_unsubscribed_t ev = {.filter = f.p, .filter_len = f.len};
            conn_event_client(c, &ev.client, peer, sizeof(peer));
            event_emit(c->w, &c->w->srv->events, EVENT_UNSUBSCRIBED, &ev);
        }
        codes[i++] = gone ? MQTT_RC_SUCCESS : MQTT_RC_NO_SUBSCRIPTION_EXISTED;
    }
    if (removed) /* one record for the packet, not one per filter */
        sess_subscriptions_saved(c->w, c->sess);
    if (v5) {
        mqtt_encode_unsuback_v5(conn_reserve(c, mqtt_suback_v5_size(0, i), 1), it.packet_id, NULL,
                                0, codes, i);
        conn_count_out(c, MQTT_UNSUBACK);
    } else {
        conn_send_ack(c, MQTT_UNSUBACK, it.packet_id);
    }
    free(codes);
    return 0;
}

static int on_ack(conn_t *c, const mqtt_raw_t *pkt)
{
    mqtt_ack_t ack = {0};
    const char *why = NULL;
    int rc = c->proto == MQTT_PROTO_V5 ? mqtt_decode_ack_v5(pkt, &ack, &why)
                                       : mqtt_decode_ack(pkt, &ack.packet_id, &why);
    if (rc < 0)
        return proto_malformed(c, rc, why);
    uint16_t pid = ack.packet_id;
    switch (mqtt_raw_type(pkt)) {
    case MQTT_PUBACK:
        sess_on_puback(c->sess, pid, ack.reason);
        break;
    case MQTT_PUBREC:
        if (sess_on_pubrec(c->sess, pid, ack.reason) < 0 && ack.reason < 0x80)
            send_ack5(c, MQTT_PUBREL, pid, MQTT_RC_PACKET_ID_NOT_FOUND);
        break;
    case MQTT_PUBCOMP:
        sess_on_pubcomp(c->sess, pid);
        break;
    case MQTT_PUBREL: {
        int known = sess_qos2_in_end(c->sess, pid);
        size_t ops = persist_pending_ops(c->w);
        if (known)
            persist_incoming(c->w, c->sess, pid, 0);
        send_ack_after(c, MQTT_PUBCOMP, pid, known ? MQTT_RC_SUCCESS : MQTT_RC_PACKET_ID_NOT_FOUND,
                       persist_pending_ops(c->w) != ops);
        break;
    }
    }
    return 0;
}

static int on_disconnect(conn_t *c, const mqtt_raw_t *pkt)
{
    const char *why = NULL;
    int rc;
    if (c->proto != MQTT_PROTO_V5) {
        if ((rc = mqtt_decode_empty(pkt, &why)) < 0)
            return proto_malformed(c, rc, why);
        if (c->x) /* [MQTT-3.14.4-3] no will after DISCONNECT */
            msg_unref(&c->x->will);
        conn_close_by_client(c, "DISCONNECT", 0, MQTT_RC_SUCCESS);
        return -1;
    }
    mqtt_disconnect_t d;
    if ((rc = mqtt_decode_disconnect_v5(pkt, MQTT_FROM_CLIENT, &d, &why)) < 0)
        return proto_malformed(c, rc, why);
    if (d.props.present & MQTT_PROP_BIT(MQTT_PROP_SESSION_EXPIRY)) {
        if (c->sess->expiry == 0 && d.props.session_expiry != 0)
            return proto_protocol_error(c, "[MQTT5-3.14.2-2] session expiry set on DISCONNECT "
                                           "after CONNECT had none");
        sess_set_expiry(c->sess, d.props.session_expiry);
    }
    int with_will = d.reason == MQTT_RC_DISCONNECT_WITH_WILL;
    if (!with_will && c->x)
        msg_unref(&c->x->will);
    char msg[80];
    snprintf(msg, sizeof(msg), "DISCONNECT (reason 0x%02x)", d.reason);
    conn_close_by_client(c, msg, with_will, d.reason);
    return -1;
}

int proto_handle(conn_t *c, const mqtt_raw_t *pkt, const uint8_t *rest, size_t rest_len)
{
    uint8_t type = mqtt_raw_type(pkt);
    const char *why = NULL;
    if (c->state == CONN_NEW) {
        if (type == MQTT_AUTH && c->proto == MQTT_PROTO_V5 && c->x && c->x->auth &&
            c->x->auth->method)
            return proto_on_auth(c, pkt);
        if (type != MQTT_CONNECT)
            return proto_protocol_error(c, "[MQTT-3.1.0-1] first packet is not CONNECT");
        return proto_on_connect(c, pkt, rest, rest_len, 0);
    }
    int rc = mqtt_check_client_header(pkt->hdr, c->proto, &why);
    if (rc < 0)
        return proto_malformed(c, rc, why);
    switch (type) {
    case MQTT_CONNECT:
        return proto_protocol_error(c, "[MQTT-3.1.0-2] second CONNECT");
    case MQTT_PUBLISH:
        return on_publish(c, pkt);
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        return on_ack(c, pkt);
    case MQTT_SUBSCRIBE:
        return on_subscribe(c, pkt);
    case MQTT_UNSUBSCRIBE:
        return on_unsubscribe(c, pkt);
    case MQTT_PINGREQ:
        if ((rc = mqtt_decode_empty(pkt, &why)) < 0)
            return proto_malformed(c, rc, why);
        mqtt_encode_pingresp(conn_reserve(c, 2, 1));
        conn_count_out(c, MQTT_PINGRESP);
        return 0;
    case MQTT_DISCONNECT:
        return on_disconnect(c, pkt);
    case MQTT_AUTH:
        /* re-authentication, or an exchange in progress (auth_method.h) */
        return proto_on_auth(c, pkt);
    default:
        return proto_protocol_error(c, "unexpected packet type");
    }
}

void proto_adopt(worker_t *w, handoff_t *h)
{
    conn_t *c = h->c;
    conn_link(w, c);
    c->state = CONN_NEW;
    if (conn_watch(c) < 0) {
        conn_close(c, "cannot watch the socket on hand-off", 0);
        free(h);
        return;
    }
    mqtt_raw_t pkt = {
        .hdr = h->hdr, .len = h->connect_len, .body = h->connect_len ? h->data : NULL};
    if (proto_on_connect(c, &pkt, h->data + h->connect_len, h->rest_len, 1) == 0 && h->rest_len)
        conn_input(c, h->data + h->connect_len, h->rest_len);
    free(h);
}

static void run_adopt(worker_t *w, inbox_item_t *it)
{
    proto_adopt(w, it->ptr);
}

/* A hand-off left in a stopped worker's inbox: nobody serves it. */
static void drop_adopt(inbox_item_t *it)
{
    handoff_t *h = it->ptr;
    close(h->c->ev.fd);
    conn_free(h->c);
    free(h);
}

static void run_auth(worker_t *w, inbox_item_t *it)
{
    proto_auth_answer(w, it->ptr);
}

static void drop_auth(inbox_item_t *it)
{
    auth_wait_free(it->ptr);
}

static void run_gate(worker_t *w, inbox_item_t *it)
{
    gate_answer(w, it->ptr);
}

static void drop_gate(inbox_item_t *it)
{
    proto_gate_t *g = it->ptr;
    if (g->owner)
        g->owner->x->gate = NULL;
    proto_gate_free(g);
}

void proto_register_inbox(server_t *srv)
{
    static const worker_inbox_kind_t adopt = {.run = run_adopt, .drop = drop_adopt};
    static const worker_inbox_kind_t auth = {.run = run_auth, .drop = drop_auth};
    worker_inbox_register(srv, WM_ADOPT, &adopt);
    worker_inbox_register(srv, WM_AUTH, &auth);
    static const worker_inbox_kind_t gate_kind = {.run = run_gate, .drop = drop_gate};
    worker_inbox_register(srv, WM_GATE, &gate_kind);
}
