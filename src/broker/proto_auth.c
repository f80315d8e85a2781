/* proto_auth.c -- the authentication half of the MQTT state machine
 * (proto.c has the rest): the CONNECT's credentials through the auth chain
 * (auth_chain.h), synchronous or asynchronous (the CONNECT and the bytes
 * after it are kept and replayed when the answer comes back through the
 * worker's inbox), bans (auth_ban.h), and MQTT 5 enhanced authentication
 * (AUTH packets, auth_method.h), at CONNECT and for re-authentication.
 *
 * Everything here runs on the connection's worker.  A refusal goes
 * through proto_refuse_as() (the CONNACK code, the auth_failed event, the
 * log line); a decision to go on returns 0 to proto_on_connect(), which
 * continues the CONNECT.  proto_int.h lists what the two files share.
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
#include "mqtt_props.h"
#include "msg.h"
#include "persist.h"
#include "router.h"
#include "sess.h"
#include "sess_acl.h"

/* ---- authentication (auth_chain.h) ---- */

static void peer_text(const conn_t *c, char *buf, size_t size)
{
    char addr[INET6_ADDRSTRLEN] = "?";
    if (conn_peer_family(c) == AF_INET || conn_peer_family(c) == AF_INET6)
        inet_ntop(conn_peer_family(c), c->peer_addr, addr, sizeof(addr));
    snprintf(buf, size, conn_peer_family(c) == AF_INET6 ? "[%s]:%u" : "%s:%u", addr, c->peer_port);
}

/* Take the connection out of the loop while authentication (or the
 * connect gate) holds it.  Lazily when it waits for input only: a client
 * sends nothing more before its CONNACK, as a rule, so its watcher stays in
 * the loop and comes out only if the socket wakes it meanwhile (conn.c's
 * on_event); conn_watch then finds it in.  That saves two epoll_ctl(2) a
 * held CONNECT (a cluster node holds every CONNECT while it claims the
 * client id, cl_owner.c): ~10 % of a node's worker time while devices
 * connect (docs/benchmarks.md). */
void proto_hold(conn_t *c)
{
    c->state = CONN_AUTH;
    if (c->ev.events == (EV_READ | EV__ACTIVE)) {
        if (c->obuf) /* what conn_unwatch would keep: not the turn arena's */
            worker_buf_keep(c->w, &c->obuf, &c->olen, &c->ooff, &c->ocap);
        return;
    }
    conn_unwatch(c);
}

/* An authentication refusal for cause (auth_cause.h: the one map to the
 * CONNACK codes), with its auth_failed event; backend: the one that
 * refused (NULL: the broker's own check or the chain's default). */
static int refuse_auth_by(conn_t *c, const mqtt_connect_t *ck, auth_cause_t cause, const char *why,
                          const char *backend)
{
    uint8_t rc5 = auth_cause_reason_v5(cause);
    if (event_wanted(c->w->srv, EVENT_AUTH_FAILED))
        proto_emit_auth_failed(c, ck, cause, rc5, why);
    return proto_refuse_as(c, ck, auth_cause_connack_v3(cause), rc5, why,
                           cause == AUTH_BANNED ? "banned" : "auth_failed", auth_cause_name(cause),
                           backend);
}

int proto_refuse_auth(conn_t *c, const mqtt_connect_t *ck, auth_cause_t cause, const char *why)
{
    return refuse_auth_by(c, ck, cause, why, NULL);
}

/* A banned address: the refusal leaves after auth.ban.delay_ms (the
 * connection timer), so a client retrying in a loop is slowed down. */
static int refuse_later(conn_t *c, const mqtt_connect_t *ck)
{
    worker_t *w = c->w;
    uint8_t rc3 = auth_cause_connack_v3(AUTH_BANNED), rc5 = auth_cause_reason_v5(AUTH_BANNED);
    if (event_wanted(w->srv, EVENT_AUTH_FAILED))
        proto_emit_auth_failed(c, ck, AUTH_BANNED, rc5, "address banned (brute-force protection)");
    conn_ext_t *x = conn_ext(c);
    if (x->auth == NULL)
        x->auth = an_calloc(1, sizeof(*x->auth));
    auth_client_t *ac = x->auth;
    uint32_t delay = w->srv->conf.auth.ban.delay_ms;
    if (delay == 0)
        return proto_refuse_as(c, NULL, rc3, rc5, "address banned (brute-force protection)",
                               "banned", auth_cause_name(AUTH_BANNED), NULL);
    ac->refusing = 1;
    ac->rc3 = rc3;
    ac->rc5 = rc5;
    proto_hold(c);
    tw_del(&w->tw, &c->timer);
    tw_add(&w->tw, &c->timer, w->now + delay);
    return 1;
}

/* A failed login of `user` (NULL: none given): counted, and logged when it
 * starts a ban of the address or a lock of the user name (auth_ban.h). */
static void ban_failure(conn_t *c, const char *user, const char *peer)
{
    worker_t *w = c->w;
    const conf_auth_ban_t *bc = &w->srv->conf.auth.ban;
    int what = auth_ban_failure(auth_chain_ban(w->srv->auth), c->listener, conn_peer_family(c),
                                c->peer_addr, user, w->now);
    if (what == 0)
        return;
    log_fields_t f = {.event = "ban_started",
                      .username = user,
                      .peer = peer,
                      .listener = w->srv->conf.listeners[c->listener].name};
    if (what & AUTH_BAN_ADDRESS) {
        STAT_ADD(w->stats.bans, 1);
        f.reason = "address";
        log_ev(AN_LOG_WARN, &f, "%s: banned for %u s after %u failed logins (auth.ban)", peer,
               bc->ban_s, bc->max_failures);
    }
    if (what & AUTH_BAN_USER) {
        STAT_ADD(w->stats.bans, 1);
        f.reason = "user";
        /* the user name is the client's: log.c escapes its control bytes */
        log_ev(AN_LOG_WARN, &f,
               "%s: user '%.64s' locked for %u s after %u failed logins (auth.ban)", peer, user,
               bc->ban_s, bc->max_failures);
    }
}

/* The chain decided: record it, refuse or go on (0).  user: the CONNECT's
 * user name (NULL when none), for the failure counts. */
static int auth_decided(conn_t *c, auth_verdict_t v, auth_answer_t *ans, int credentials,
                        const char *user)
{
    worker_t *w = c->w;
    auth_client_t *ac = c->x->auth;
    char peer[64];
    peer_text(c, peer, sizeof(peer));
    if (v != AUTH_ALLOW) {
        STAT_ADD(w->stats.auth_failure, 1);
        /* a DENY without a cause: the credentials were wrong, or there
         * were none and the default refuses */
        auth_cause_t cause = ans->cause != AUTH_OK ? ans->cause
                             : credentials         ? AUTH_BAD_CREDENTIALS
                                                   : AUTH_NOT_AUTHORIZED;
        const char *backend = ans->backend;
        auth_answer_clear(ans);
        ban_failure(c, user, peer);
        return refuse_auth_by(c, NULL, cause, "authentication failed", backend);
    }
    STAT_ADD(w->stats.auth_success, 1);
    auth_ban_success(auth_chain_ban(w->srv->auth), c->listener, user);
    ac->authed = 1;
    if (ans->username) {
        free(ac->user);
        ac->user = ans->username;
        ans->username = NULL;
    }
    if (ans->acl) {
        auth_acl_free(ac->acl);
        ac->acl = ans->acl;
        ans->acl = NULL;
    }
    return 0;
}

/* Run the chain for this CONNECT (from ac->resume).  0: allowed, go on;
 * -1: refused (closed); 1: waiting (the CONNECT and the bytes after it are
 * kept and replayed when the answer comes). */
int proto_authenticate(conn_t *c, const mqtt_connect_t *ck, const mqtt_raw_t *pkt,
                       const uint8_t *rest, size_t rest_len, const uint8_t *id, uint16_t id_len,
                       int anonymous)
{
    worker_t *w = c->w;
    auth_chain_t *ch = w->srv->auth;
    if (c->x && c->x->auth && c->x->auth->authed)
        return 0;
    char *user =
        ck->has_username ? an_strndup((const char *)ck->username.p, ck->username.len) : NULL;
    int banned = auth_ban_blocked(auth_chain_ban(ch), c->listener, conn_peer_family(c),
                                  c->peer_addr, user, w->now);
    free(user);
    if (banned) {
        STAT_ADD(w->stats.auth_banned, 1);
        return refuse_later(c, ck);
    }
    /* nothing configured to decide: keep idle clients small (no state) */
    if (auth_chain_trivial(ch, c->listener)) {
        STAT_ADD(w->stats.auth_success, 1);
        return 0;
    }
    conn_ext_t *x = conn_ext(c);
    if (x->auth == NULL)
        x->auth = an_calloc(1, sizeof(*x->auth));
    auth_client_t *ac = x->auth;
    /* the user the ACL knows (%u), unless a backend names another */
    free(ac->user);
    ac->user = NULL;
    if (x->cert_user)
        ac->user = an_strndup(x->cert_user, strlen(x->cert_user));
    else if (ck->has_username)
        ac->user = an_strndup((const char *)ck->username.p, ck->username.len);
    if (anonymous) { /* allowed on this listener (checked before) */
        STAT_ADD(w->stats.auth_success, 1);
        ac->authed = 1;
        return 0;
    }
    char *cid = an_strndup((const char *)id, id_len);
    user = ck->has_username ? an_strndup((const char *)ck->username.p, ck->username.len) : NULL;
    char peer[64];
    peer_text(c, peer, sizeof(peer));
    auth_request_t r = {
        .action = AUTH_ACT_CONNECT,
        .client_id = cid,
        .username = user,
        .password = ck->has_password ? ck->password.p : NULL,
        .password_len = ck->has_password ? ck->password.len : 0,
        .cert_user = x->cert_user,
        .peer = peer,
        .listener = c->listener,
        .stats = &w->stats.auth,
    };
    auth_answer_t ans;
    auth_wait_t *wait = NULL;
    auth_verdict_t v = auth_chain_connect(ch, &r, ac->resume, &w->inbox, &ans, &wait);
    free(ac->client_id); /* kept: an auth_failed event names it, also after a wait */
    ac->client_id = cid;
    if (v == AUTH_PENDING) {
        free(user);
        /* keep the CONNECT and what followed it; stop reading */
        free(ac->held);
        ac->held = an_malloc(pkt->len + rest_len + 1);
        if (pkt->len)
            memcpy(ac->held, pkt->body, pkt->len);
        if (rest_len)
            memcpy(ac->held + pkt->len, rest, rest_len);
        ac->hdr = pkt->hdr;
        ac->connect_len = pkt->len;
        ac->held_len = (uint32_t)(pkt->len + rest_len);
        ac->wait = wait;
        wait->owner = c;
        mqtt_parser_reset(&c->ps);
        proto_hold(c);
        return 1;
    }
    int rc = auth_decided(c, v, &ans, ck->has_username || ck->has_password || x->cert_user, user);
    free(user);
    return rc;
}

/* ---- MQTT 5 enhanced authentication (auth_method.h) ---- */

static void send_auth(conn_t *c, uint8_t reason, const auth_method_t *m, const uint8_t *data,
                      size_t len)
{
    size_t cap = 16 + strlen(m->name) + len;
    uint8_t *props = an_malloc(cap);
    mqtt_pw_t pw;
    mqtt_pw_init(&pw, props, cap);
    mqtt_pw_str(&pw, MQTT_PROP_AUTH_METHOD, m->name, strlen(m->name));
    if (data)
        mqtt_pw_str(&pw, MQTT_PROP_AUTH_DATA, data, len);
    size_t plen = mqtt_pw_len(&pw);
    mqtt_encode_auth(conn_reserve(c, mqtt_auth_size(reason, plen), 1), reason, props, plen);
    free(props);
}

/* What a method said: go on, finish (the CONNECT resumes, or the
 * re-authentication is acknowledged) or refuse.  Returns as proto_handle. */
static int method_result(conn_t *c, auth_method_rc_t rc, auth_method_out_t *out, int reauth)
{
    worker_t *w = c->w;
    auth_client_t *ac = c->x->auth;
    const auth_method_t *m = ac->mops;
    char name[160];
    if (rc == AUTH_METHOD_CONTINUE) {
        send_auth(c, MQTT_RC_CONTINUE_AUTHENTICATION, m, out->data, out->len);
        free(out->data);
        return 0;
    }
    if (ac->method) {
        m->free(ac->method);
        ac->method = NULL;
    }
    if (rc == AUTH_METHOD_SUCCESS && !reauth &&
        auth_ban_blocked(auth_chain_ban(w->srv->auth), c->listener, conn_peer_family(c),
                         c->peer_addr, out->user, w->now)) {
        free(out->data);
        free(out->user);
        STAT_ADD(w->stats.auth_banned, 1);
        return refuse_later(c, NULL);
    }
    if (rc == AUTH_METHOD_FAIL) {
        free(out->data);
        STAT_ADD(w->stats.auth_failure, 1);
        char peer[64];
        peer_text(c, peer, sizeof(peer));
        ban_failure(c, out->user, peer);
        free(out->user);
        char why[160];
        snprintf(why, sizeof(why), "%s authentication failed: %s", m->name,
                 out->why ? out->why : "?");
        if (!reauth)
            return proto_refuse_auth(c, NULL, AUTH_METHOD_FAILED, why);
        /* after CONNACK: a DISCONNECT, not authorized any more */
        if (event_wanted(w->srv, EVENT_AUTH_FAILED))
            proto_emit_auth_failed(c, NULL, AUTH_METHOD_FAILED, MQTT_RC_NOT_AUTHORIZED, why);
        return proto_close_with(c, MQTT_RC_NOT_AUTHORIZED, "re-authentication", why);
    }
    STAT_ADD(w->stats.auth_success, 1);
    auth_ban_success(auth_chain_ban(w->srv->auth), c->listener, out->user);
    int same = ac->user && out->user ? strcmp(ac->user, out->user) == 0 : ac->user == out->user;
    free(ac->user);
    ac->user = out->user;
    if (reauth && !same) {
        /* another user now: decisions cached and verdicts taken are the
         * previous one's */
        ac->gen = 0;
        if (c->sess)
            sess_acl_attach(w, c->sess, &c->ep, 1);
    }
    if (reauth) {
        send_auth(c, MQTT_RC_SUCCESS, m, out->data, out->len);
        free(out->data);
        conn_log_ev(c, AN_LOG_INFO, "reauthenticated", NULL, "%s: re-authenticated (%s, user '%s')",
                    conn_name(c, name, sizeof(name)), m->name, ac->user ? ac->user : "");
        return 0;
    }
    ac->authed = 1;
    free(ac->method_out);
    ac->method_out = out->data;
    ac->method_out_len = (uint32_t)out->len;
    /* replay the CONNECT, now authenticated */
    uint8_t *held = ac->held;
    mqtt_raw_t pkt = {
        .hdr = ac->hdr, .len = ac->connect_len, .body = ac->connect_len ? held : NULL};
    ac->held = NULL;
    int r = proto_on_connect(c, &pkt, NULL, 0, 0);
    free(held);
    return r;
}

/* CONNECT with an Authentication Method. */
int proto_enhanced_start(conn_t *c, const mqtt_connect_t *ck, const mqtt_raw_t *pkt)
{
    worker_t *w = c->w;
    const mqtt_props_t *pr = &ck->props;
    const auth_method_t *m = auth_method_find(w->srv->auth, pr->auth_method.p, pr->auth_method.len);
    if (m == NULL)
        return proto_refuse_auth(c, ck, AUTH_BAD_METHOD, "authentication method not supported");
    conn_ext_t *x = conn_ext(c);
    if (x->auth == NULL)
        x->auth = an_calloc(1, sizeof(*x->auth));
    auth_client_t *ac = x->auth;
    if (auth_ban_blocked(auth_chain_ban(w->srv->auth), c->listener, conn_peer_family(c),
                         c->peer_addr, NULL, w->now)) {
        STAT_ADD(w->stats.auth_banned, 1);
        return refuse_later(c, ck);
    }
    free(ac->client_id); /* for an auth_failed event before the replay */
    ac->client_id = an_strndup((const char *)ck->client_id.p, ck->client_id.len);
    free(ac->held);
    ac->held = an_malloc(pkt->len + 1);
    if (pkt->len)
        memcpy(ac->held, pkt->body, pkt->len);
    ac->hdr = pkt->hdr;
    ac->connect_len = ac->held_len = pkt->len;
    ac->mops = m;
    auth_method_out_t out = {0};
    int has_data = (pr->present & MQTT_PROP_BIT(MQTT_PROP_AUTH_DATA)) != 0;
    auth_method_rc_t rc = m->start(w->srv->auth, &ac->method, has_data ? pr->auth_data.p : NULL,
                                   has_data ? pr->auth_data.len : 0, &out);
    return method_result(c, rc, &out, 0);
}

/* AUTH from the client: the next step of an exchange, or (after CONNACK)
 * a re-authentication with the CONNECT's method [MQTT5 4.12.1]. */
int proto_on_auth(conn_t *c, const mqtt_raw_t *pkt)
{
    mqtt_auth_t a;
    const char *why = NULL;
    int rc = mqtt_decode_auth(pkt, &a, &why);
    if (rc < 0)
        return proto_malformed(c, rc, why);
    auth_client_t *ac = c->x ? c->x->auth : NULL;
    if (ac == NULL || ac->mops == NULL)
        return proto_protocol_error(c, "AUTH without an authentication method in CONNECT");
    const mqtt_str_t *name = &a.props.auth_method;
    if (!(a.props.present & MQTT_PROP_BIT(MQTT_PROP_AUTH_METHOD)) ||
        name->len != strlen(ac->mops->name) || memcmp(name->p, ac->mops->name, name->len) != 0)
        return proto_protocol_error(c, "[MQTT5-4.12.0-5] AUTH with another authentication method");
    int has_data = (a.props.present & MQTT_PROP_BIT(MQTT_PROP_AUTH_DATA)) != 0;
    const uint8_t *data = has_data ? a.props.auth_data.p : NULL;
    size_t len = has_data ? a.props.auth_data.len : 0;
    auth_method_out_t out = {0};
    int reauth = c->state == CONN_ACTIVE;
    if (reauth && a.reason == MQTT_RC_REAUTHENTICATE && ac->method == NULL)
        return method_result(c, ac->mops->start(c->w->srv->auth, &ac->method, data, len, &out),
                             &out, 1);
    if (a.reason == MQTT_RC_CONTINUE_AUTHENTICATION && ac->method)
        return method_result(c, ac->mops->step(ac->method, data, len, &out), &out, reauth);
    return proto_protocol_error(c, "AUTH out of sequence");
}

void proto_auth_answer(worker_t *w, struct auth_wait *wait)
{
    /* the answer came to c's worker: c->w; counted also when c is gone */
    auth_stats_add(&w->stats.auth, wait->ans.backend, wait->ans.verdict,
                   wait->done_us - wait->start_us);
    conn_t *c = wait->owner;
    if (c == NULL || c->state != CONN_AUTH) {
        auth_wait_free(wait); /* the connection went meanwhile */
        return;
    }
    auth_client_t *ac = c->x->auth;
    ac->wait = NULL;
    c->state = CONN_NEW;
    if (conn_watch(c) < 0) {
        auth_wait_free(wait);
        conn_close(c, "cannot watch the socket after authentication", 0);
        return;
    }
    uint8_t *held = ac->held;
    uint32_t connect_len = ac->connect_len, held_len = ac->held_len;
    ac->held = NULL;
    mqtt_raw_t pkt = {.hdr = ac->hdr, .len = connect_len, .body = connect_len ? held : NULL};
    int rc;
    if (wait->ans.verdict == AUTH_PASS) {
        /* nobody decided yet: the rest of the chain, then the default */
        ac->resume = wait->next;
        rc = proto_on_connect(c, &pkt, held + connect_len, held_len - connect_len, 0);
    } else {
        rc = auth_decided(c, wait->ans.verdict, &wait->ans, 1, ac->user);
        if (rc == 0)
            rc = proto_on_connect(c, &pkt, held + connect_len, held_len - connect_len, 0);
    }
    if (rc == 0 && held_len > connect_len)
        conn_input(c, held + connect_len, held_len - connect_len);
    auth_wait_free(wait);
    free(held);
}

void proto_auth_timer(conn_t *c)
{
    if (c->x && c->x->gate) {
        conn_close(c, "client id claim not answered within connect_timeout", 0);
        return;
    }
    auth_client_t *ac = c->x ? c->x->auth : NULL;
    if (ac && ac->refusing) {
        ac->refusing = 0;
        proto_refuse_as(c, NULL, ac->rc3, ac->rc5, "address banned (brute-force protection)",
                        "banned", auth_cause_name(AUTH_BANNED), NULL);
        return;
    }
    conn_close(c, "authentication not answered within connect_timeout", 0);
}


/* The first ID_PREVIEW bytes of a client id for a log line, with control
 * characters, quotes, backslashes and bytes over 0x7e as \xNN (out holds
 * 4 * ID_PREVIEW + 1). */
void proto_id_preview(const uint8_t *id, size_t len, char *out, size_t size)
{
    static const char hexd[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < len && i < ID_PREVIEW && o + 5 <= size; i++) {
        uint8_t ch = id[i];
        if (ch < 0x20 || ch > 0x7e || ch == '\'' || ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hexd[ch >> 4];
            out[o++] = hexd[ch & 15];
        } else {
            out[o++] = (char)ch;
        }
    }
    out[o] = '\0';
}

/* auth.client_id_binding: 1 when `user` may use this client id.  An id
 * the broker assigned is anyone's; a client without user name has none
 * of its own. */
int proto_client_id_bound(const conf_t *cf, const char *user, const uint8_t *id, uint16_t len,
                          int assigned)
{
    uint8_t bind = cf->auth.client_id_binding;
    if (bind == CONF_CID_BIND_NONE || assigned)
        return 1;
    size_t ul = user ? strlen(user) : 0;
    if (user == NULL || len < ul || memcmp(id, user, ul) != 0)
        return 0;
    return len == ul || (bind == CONF_CID_BIND_PREFIX && id[ul] != '\0' &&
                         strchr(CONF_CID_BIND_SEPARATORS, id[ul]) != NULL);
}
