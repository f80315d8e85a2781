/* coapgw_down.c -- the CoAP downlink: a device observing its command
 * resource (GET /cmd?token=T&c=ID with Observe: 0) is a client with a
 * persistent session, as an MQTT client or an HTTP device's event stream
 * (src/gateways/http/httpin_down.c) is.
 *
 * What it owns: one coapgw_down_t (a "down") per such observation.  A down
 * is a session endpoint (endpoint.h) of its own kind, embedded in it,
 * attached on the device's home worker to the session with client id ID:
 * persistent (expiry coap.session_expiry) and subscribed to
 * coap.subscriptions ({id} replaced, each checked by the ACL for
 * subscribe), so that QoS 1/2 messages queue while the device does not
 * observe, and the commands module's messages (sent to the session itself)
 * reach it.
 *
 * Threads and lifetime.  The gateway thread authenticates the request
 * (coapgw_login, as for /ps), lists the down (g->down: its libcoap session,
 * token, Observe number) and posts it to the home worker (WM_COAP,
 * COAP_OP_ATTACH); the worker finds or creates the session, takes it over
 * from whatever endpoint held it (an older observation: it ends with a
 * 5.03; an MQTT connection; an HTTP request), subscribes, attaches and
 * emits client_connected.  A delivery (on the worker) appends the message
 * (a reference, its packet id and QoS) to the down's hand-over array under
 * g->down_mu; the first of a turn queues one ITEM_DOWN in the worker's
 * batch for the gateway (posted at the module's turn end).  The gateway
 * thread sends each message as a notification of the observation: CON for
 * QoS 1/2 (libcoap retransmits it), NON for QoS 0 unless coap.confirmable.
 * Each QoS 1/2 one is acknowledged to the session (COAP_OP_ACK to the home
 * worker: sess_on_puback; QoS 2: sess_on_pubrec, then sess_on_pubcomp at
 * the PUBREL the session hands back) when the device ACKs the CON.
 *
 * Delivery guarantee: libcoap 4.3 tells nothing when a CON is acknowledged
 * (an empty ACK is consumed inside coap_dispatch; only a RST or a give-up
 * reach the nack handler).  So over UDP the down keeps the message id of
 * each such CON (`wait`), and coapgw.c looks at each datagram libcoap is
 * about to read while one waits (MSG_PEEK): an empty ACK from the device's
 * address with that id acknowledges it (coapgw_down_acked).  Over DTLS the
 * ACK is inside a record: the message counts as received when libcoap took
 * the CON.  A message not acknowledged (the observation gone, a RST, a
 * give-up) stays in flight and goes out again, with dup, at the next
 * observation.
 *
 * An observation ends by a cancel (GET with Observe: 1 and its token), a
 * RST or a give-up on a CON notification, not being refreshed within
 * coap.observe_lifetime_s (a final 5.03), or its session letting go of it
 * (a takeover: a final 5.03; a kick).  The gateway unlists it and posts
 * COAP_OP_DETACH; the worker detaches and emits client_disconnected.
 * References: the list, the attachment to the session, and each inbox item
 * hold one; the last frees.  Nothing of this exists until a device
 * observes /cmd.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coapgw_int.h"
#include "endpoint.h"
#include "ep_claim.h"
#include "event.h"
#include "log.h"
#include "module.h"
#include "mqtt_codec.h"
#include "persist.h"
#include "sess.h"
#include "sess_acl.h"
#include "util.h"

/* QoS 0 messages waiting for the gateway beyond this are dropped (counted
 * by the session as a slow consumer's); QoS 1/2 wait in the session's
 * window (receive_max). */
#define DOWN_OUT_MAX 1024
#define DOWN_RECEIVE_MAX 32
#define DOWN_MAX_ID (MAX_ARG + 96)

typedef struct {
    msg_t *m;
    uint16_t pid;
    uint8_t qos;
} down_out_t;

/* A CON notification of a QoS 1/2 message waiting for the device's ACK. */
typedef struct {
    uint16_t mid, pid;
    uint8_t qos;
    uint64_t sent_us; /* when libcoap took the CON */
} down_wait_t;

struct coapgw_down_s {
    endpoint_t ep; /* the session borrows it while attached */
    coapgw_t *g;
    _Atomic int refs;
    uint32_t home;     /* the worker of the session */
    auth_client_t *ac; /* the device: user, ACL (the home worker's once posted) */
    char id[DOWN_MAX_ID];
    char peer[64];
    /* the gateway thread's */
    coapgw_down_t *next;
    coap_session_t *session; /* a reference, while listed */
    coap_string_t *query;    /* the registration's (Block2 follow-ups) */
    uint8_t token[8], token_len, listed;
    uint32_t seq;
    uint64_t refreshed_us;
    down_wait_t *wait; /* CONs not yet ACKed (UDP) */
    size_t nwait, capwait;
    /* the home worker's */
    worker_t *w;
    sess_t *s; /* attached to, or NULL */
    uint16_t *rels;
    size_t nrels, caprels;
    /* under g->down_mu */
    down_out_t *out;
    size_t nout, capout;
    uint8_t posted; /* an ITEM_DOWN is on its way to the gateway */
    uint8_t ended;  /* the gateway no longer observes: attach nothing */
};

static void down_release(coapgw_down_t *d)
{
    if (atomic_fetch_sub(&d->refs, 1) != 1)
        return;
    for (size_t i = 0; i < d->nout; i++)
        msg_unref(&d->out[i].m);
    free(d->out);
    free(d->wait);
    free(d->rels);
    auth_client_free(d->ac);
    free(d);
}

static coapgw_down_t *down_of(const endpoint_t *ep)
{
    return container_of(ep, coapgw_down_t, ep);
}

/* ---- the endpoint (home worker) --------------------------------------------- */

static int down_deliver(endpoint_t *ep, const msg_t *m, uint8_t qos, uint8_t retain, uint8_t dup,
                        uint16_t pid, const uint32_t *subids, uint32_t nsubids)
{
    (void)dup;
    (void)subids;
    (void)nsubids;
    coapgw_down_t *d = down_of(ep);
    coapgw_t *g = d->g;
    pthread_mutex_lock(&g->down_mu);
    if (d->ended || (qos == 0 && !retain && d->nout >= DOWN_OUT_MAX)) {
        pthread_mutex_unlock(&g->down_mu);
        /* QoS 1/2 stay in flight for the next observation */
        return qos == 0 && !retain ? -1 : 0;
    }
    if (d->nout == d->capout) {
        d->capout = d->capout ? d->capout * 2 : 8;
        d->out = an_realloc(d->out, d->capout * sizeof(*d->out));
    }
    d->out[d->nout++] = (down_out_t){.m = msg_ref((msg_t *)m), .pid = pid, .qos = qos};
    int post = !d->posted;
    d->posted = 1;
    pthread_mutex_unlock(&g->down_mu);
    if (post) {
        atomic_fetch_add(&d->refs, 1); /* the item's */
        coapgw_wctx_t *x = module_worker_ctx(d->w, g->mi->index);
        inbox_item_t it = {.kind = ITEM_DOWN, .ptr = d};
        inbox_vec_push(&x->out, &it);
        module_turn_end_ask(d->w, g->mi);
    }
    return 0;
}

static void down_ack(endpoint_t *ep, uint8_t type, uint16_t pid, uint8_t reason, unsigned flags)
{
    (void)reason;
    (void)flags;
    coapgw_down_t *d = down_of(ep);
    if (type != EP_ACK_PUBREL)
        return; /* the device publishes with POST, not through here */
    if (d->nrels == d->caprels) {
        d->caprels = d->caprels ? d->caprels * 2 : 8;
        d->rels = an_realloc(d->rels, d->caprels * sizeof(*d->rels));
    }
    d->rels[d->nrels++] = pid; /* answered by down_rels, after the caller returns */
}

static size_t down_backlog(const endpoint_t *ep)
{
    coapgw_down_t *d = down_of(ep);
    pthread_mutex_lock(&d->g->down_mu);
    size_t n = 0;
    for (size_t i = 0; i < d->nout; i++)
        n += d->out[i].m->topic_len + d->out[i].m->payload_len;
    pthread_mutex_unlock(&d->g->down_mu);
    return n;
}

static void down_describe(const endpoint_t *ep, ep_info_t *out, char *peer, size_t size)
{
    const coapgw_down_t *d = down_of(ep);
    *out = (ep_info_t){.client = {.username = d->ac ? d->ac->user : NULL,
                                  .listener = "coap",
                                  .proto = EP_PROTO_COAP},
                       .auth = d->ac};
    if (peer && size) {
        snprintf(peer, size, "%s", d->peer);
        out->client.peer = peer;
    }
}

/* The PUBRELs the session handed back: their PUBCOMP. */
static void down_rels(coapgw_down_t *d)
{
    for (int round = 0; round < 64 && d->s && d->nrels; round++) {
        uint16_t *rels = d->rels;
        size_t n = d->nrels;
        d->rels = NULL;
        d->nrels = d->caprels = 0;
        for (size_t i = 0; i < n && d->s; i++)
            sess_on_pubcomp(d->s, rels[i]);
        free(rels);
    }
}

static void emit_disconnected(coapgw_down_t *d, const char *why, uint8_t rc, uint8_t by_client)
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

/* The session lets go of d (worker): detached (and client_disconnected)
 * unless the session already let go; the caller drops the attachment's
 * reference. */
static void down_let_go(coapgw_down_t *d, const char *why, uint8_t rc, uint8_t by_client,
                        int detach)
{
    sess_t *s = d->s;
    if (s == NULL)
        return;
    if (detach) {
        emit_disconnected(d, why, rc, by_client);
        log_ev(AN_LOG_INFO,
               &(log_fields_t){.event = "client_disconnected",
                               .client_id = d->id,
                               .peer = d->peer,
                               .listener = "coap"},
               "coap device '%s': %s", d->id, why);
    }
    d->s = NULL;
    STAT_ADD(d->w->stats.clients_connected, (uint64_t)-1);
    if (detach)
        sess_detach(d->w, s);
}

/* The gateway is told that the session let go (ITEM_END): it ends the
 * observation with a 5.03. */
static void post_end(coapgw_down_t *d)
{
    atomic_fetch_add(&d->refs, 1); /* the item's */
    inbox_vec_t v = {0};
    inbox_item_t it = {.kind = ITEM_END, .ptr = d};
    inbox_vec_push(&v, &it);
    inbox_post(&d->g->inbox, &v);
    inbox_vec_free(&v);
}

static void down_close(endpoint_t *ep, ep_close_t why, const char *text)
{
    coapgw_down_t *d = down_of(ep);
    int detach = why == EP_CLOSE_KICKED || why == EP_CLOSE_DISCARDED;
    if (d->s == NULL)
        return;
    down_let_go(d, text ? text : "kicked", 0x98, 0, detach);
    post_end(d);
    down_release(d); /* the attachment's */
}

static const endpoint_ops_t down_ops = {.name = "coap",
                                        .deliver = down_deliver,
                                        .ack = down_ack,
                                        .close = down_close,
                                        .backlog = down_backlog,
                                        .describe = down_describe};

/* ---- attach, acknowledge, detach (home worker) --------------------------------- */

static void down_attach(worker_t *w, coapgw_down_t *d)
{
    d->w = w;
    pthread_mutex_lock(&d->g->down_mu);
    int gone = d->ended;
    pthread_mutex_unlock(&d->g->down_mu);
    if (gone)
        return; /* the observation ended before it was attached */
    const coapgw_conf_t *c = d->g->c;
    const char *filters[COAPGW_MAX_SUBS];
    for (uint32_t i = 0; i < c->nsubs; i++)
        filters[i] = c->subs[i];
    ep_claim_t o = {.id = d->id,
                    .expiry = c->session_expiry,
                    .filters = filters,
                    .nfilters = c->nsubs,
                    .ac = d->ac,
                    .kind = "coap"};
    ep_claimed_t *cl = an_malloc(sizeof(*cl)); /* 4 KB of filters: not on the stack */
    if (ep_claim(w, &d->ep, &o, cl) < 0) {
        free(cl);
        post_end(d);
        return;
    }
    if (cl->took_over)
        atomic_fetch_add_explicit(&d->g->down_takeovers, 1, memory_order_relaxed);
    int present = cl->present;
    atomic_fetch_add(&d->refs, 1); /* the attachment */
    d->s = cl->s;
    atomic_fetch_add_explicit(&d->g->down_attached, 1, memory_order_relaxed);
    ep_claim_attach(w, &d->ep, cl, &d->s);
    free(cl);
    if (d->s == NULL)
        return;
    log_ev(AN_LOG_INFO,
           &(log_fields_t){.event = "client_connected",
                           .client_id = d->id,
                           .username = d->ac ? d->ac->user : NULL,
                           .peer = d->peer,
                           .listener = "coap"},
           "coap device '%s': observing /cmd (session present %d)", d->id, present);
    down_rels(d); /* PUBRELs resent at the attach */
}

void coapgw_down_run(worker_t *w, inbox_item_t *it)
{
    coapgw_down_t *d = it->ptr;
    switch (it->flags) {
    case COAP_OP_ATTACH:
        down_attach(w, d);
        break;
    case COAP_OP_ACK:
        if (d->s == NULL)
            break; /* detached since: the session resends it at the next attach */
        if (it->qos == 1)
            sess_on_puback(d->s, (uint16_t)it->sid, 0);
        else
            sess_on_pubrec(d->s, (uint16_t)it->sid, 0); /* the PUBREL comes to down_ack */
        down_rels(d);
        break;
    case COAP_OP_DETACH:
        if (d->s) {
            down_let_go(d, "observation ended", 0, 1, 1);
            down_release(d); /* the attachment's */
        }
        break;
    }
    down_release(d); /* the item's */
}

void coapgw_down_drop(inbox_item_t *it)
{
    down_release(it->ptr); /* a stopped worker: sessions were freed with it */
}

/* ---- the gateway thread ---------------------------------------------------------- */

static void post_worker(coapgw_t *g, coapgw_down_t *d, uint8_t op, uint16_t pid, uint8_t qos)
{
    atomic_fetch_add(&d->refs, 1); /* the item's */
    inbox_item_t it = {.kind = WM_COAP, .flags = op, .qos = qos, .sid = pid, .ptr = d};
    inbox_vec_push(&g->pending[d->home], &it); /* posted at the end of the turn */
}

/* d leaves the list (gateway): the libcoap session and the list's
 * reference go; the worker is told to detach (tell). */
static void unlist(coapgw_t *g, coapgw_down_t **pp, int tell)
{
    coapgw_down_t *d = *pp;
    *pp = d->next;
    d->next = NULL;
    d->listed = 0;
    pthread_mutex_lock(&g->down_mu);
    d->ended = 1;
    pthread_mutex_unlock(&g->down_mu);
    if (tell)
        post_worker(g, d, COAP_OP_DETACH, 0, 0);
    g->con_waiting -= (uint32_t)d->nwait; /* never ACKed: they stay in flight */
    d->nwait = 0;
    coap_delete_string(d->query);
    d->query = NULL;
    coap_session_release(d->session);
    d->session = NULL;
    atomic_fetch_sub(&g->observers, 1);
    down_release(d); /* the list's */
}

static coapgw_down_t **down_find(coapgw_t *g, coap_session_t *s, coap_bin_const_t tok)
{
    for (coapgw_down_t **pp = &g->down; *pp; pp = &(*pp)->next)
        if ((*pp)->session == s && (*pp)->token_len == tok.length &&
            memcmp((*pp)->token, tok.s, tok.length) == 0)
            return pp;
    return NULL;
}

void coapgw_down_request(coapgw_t *g, coap_session_t *s, const coap_pdu_t *req,
                         const coapgw_req_t *q, coap_pdu_t *resp)
{
    auth_client_t *ac = NULL;
    coap_opt_iterator_t oi;
    coap_opt_t *ob = coap_check_option(req, COAP_OPTION_OBSERVE, &oi);
    int action = ob ? (int)coap_decode_var_bytes(coap_opt_value(ob), coap_opt_length(ob)) : -1;
    coap_bin_const_t tok = coap_pdu_get_token(req);
    if (action == COAP_OBSERVE_CANCEL) {
        coapgw_down_t **pp = down_find(g, s, tok);
        if (pp)
            unlist(g, pp, 1);
        coapgw_answer(resp, 205, NULL);
        goto out;
    }
    if (action != COAP_OBSERVE_ESTABLISH) {
        coapgw_answer(resp, 205, NULL); /* a plain GET: nothing to read */
        goto out;
    }
    coapgw_down_t **pp = down_find(g, s, tok);
    if (pp) { /* a re-registration: the observation lives on */
        (*pp)->refreshed_us = an_now_us();
        coapgw_answer(resp, 205, NULL);
        coapgw_add_observe(resp, (*pp)->seq);
        goto out;
    }
    if (tok.length > 8) {
        coapgw_answer(resp, 400, "a token is at most 8 bytes");
        goto out;
    }
    char who[256];
    if (!q->has_c && !q->has_u && coapgw_secure_user(g, s, who, sizeof(who)) <= 0) {
        coapgw_answer(resp, 400, "/cmd needs the device: ?c=ID (or ?u=USER)");
        goto out;
    }
    char client_id[DOWN_MAX_ID];
    ac = coapgw_login(g, s, q, client_id, sizeof(client_id));
    if (ac == NULL) {
        coapgw_answer(resp, 401, "not authorized");
        goto out;
    }
    if (client_id[0] == 0 || strlen(client_id) > 65535 ||
        !mqtt_utf8_valid((const uint8_t *)client_id, strlen(client_id))) {
        coapgw_answer(resp, 400, "the device id is not a valid client id");
        goto out;
    }
    if (atomic_load(&g->observers) >= g->c->max_observers) {
        coapgw_answer(resp, 503, "too many observations (coap.max_observers)");
        goto out;
    }
    coapgw_down_t *d = an_calloc(1, sizeof(*d));
    d->ep = (endpoint_t){
        .ops = &down_ops, .max_packet = 0, .receive_max = DOWN_RECEIVE_MAX, .flags = 0};
    d->g = g;
    d->refs = 1; /* the list's */
    d->ac = ac;
    ac = NULL;
    snprintf(d->id, sizeof(d->id), "%s", client_id);
    coapgw_peer_text(s, d->peer, sizeof(d->peer));
    d->home = worker_home(g->srv, (const uint8_t *)d->id, strlen(d->id));
    d->session = coap_session_reference(s);
    d->query = coap_get_query(req);
    memcpy(d->token, tok.s, tok.length);
    d->token_len = (uint8_t)tok.length;
    d->seq = 1;
    d->refreshed_us = an_now_us();
    d->listed = 1;
    d->next = g->down;
    g->down = d;
    atomic_fetch_add(&g->observers, 1);
    post_worker(g, d, COAP_OP_ATTACH, 0, 0);
    coapgw_answer(resp, 205, NULL);
    coapgw_add_observe(resp, d->seq);
out:
    auth_client_free(ac);
}

int coapgw_down_nack(coapgw_t *g, coap_session_t *s, coap_bin_const_t tok)
{
    coapgw_down_t **pp = down_find(g, s, tok);
    if (pp == NULL)
        return 0;
    unlist(g, pp, 1);
    return 1;
}

/* The deliveries the home worker handed over: notifications, and the
 * acknowledgements of the QoS 1/2 ones libcoap took. */
static void send_out(coapgw_t *g, coapgw_down_t *d)
{
    pthread_mutex_lock(&g->down_mu);
    down_out_t *out = d->out;
    size_t n = d->nout;
    d->out = NULL;
    d->nout = d->capout = 0;
    d->posted = 0;
    pthread_mutex_unlock(&g->down_mu);
    for (size_t i = 0; i < n; i++) {
        down_out_t *o = &out[i];
        if (d->listed) {
            d->seq = (d->seq + 1) & 0xFFFFFF;
            int con = o->qos > 0 || g->c->confirmable;
            coap_mid_t mid = coapgw_notify_one(g, d->session, d->token, d->token_len, d->query,
                                               d->seq, con, o->m);
            if (mid != COAP_INVALID_MID) {
                atomic_fetch_add_explicit(&g->down_delivered, 1, memory_order_relaxed);
                if (o->qos && g->udp_fd >= 0 &&
                    coap_session_get_proto(d->session) == COAP_PROTO_UDP) {
                    /* acknowledged at the device's ACK (coapgw_down_acked) */
                    if (d->nwait == d->capwait) {
                        d->capwait = d->capwait ? d->capwait * 2 : 8;
                        d->wait = an_realloc(d->wait, d->capwait * sizeof(*d->wait));
                    }
                    d->wait[d->nwait++] = (down_wait_t){
                        .mid = (uint16_t)mid, .pid = o->pid, .qos = o->qos, .sent_us = an_now_us()};
                    g->con_waiting++;
                } else if (o->qos) {
                    post_worker(g, d, COAP_OP_ACK, o->pid, o->qos); /* DTLS: at the hand-off */
                }
            }
        }
        msg_unref(&o->m);
    }
    free(out);
}

void coapgw_down_acked(coapgw_t *g, const struct sockaddr_in *from, uint16_t mid)
{
    for (coapgw_down_t *d = g->down; d; d = d->next) {
        if (d->nwait == 0)
            continue;
        const coap_address_t *a = coap_session_get_addr_remote(d->session);
        if (a == NULL || a->addr.sa.sa_family != AF_INET ||
            a->addr.sin.sin_port != from->sin_port ||
            a->addr.sin.sin_addr.s_addr != from->sin_addr.s_addr)
            continue;
        for (size_t i = 0; i < d->nwait; i++)
            if (d->wait[i].mid == mid) {
                post_worker(g, d, COAP_OP_ACK, d->wait[i].pid, d->wait[i].qos);
                d->wait[i] = d->wait[--d->nwait];
                g->con_waiting--;
                return;
            }
    }
}

void coapgw_down_item(coapgw_t *g, inbox_item_t *it)
{
    coapgw_down_t *d = it->ptr;
    if (it->kind == ITEM_DOWN) {
        send_out(g, d);
    } else if (d->listed) { /* ITEM_END: taken over, kicked, session ended */
        coapgw_send_final(d->session, d->token, d->token_len, 503);
        for (coapgw_down_t **pp = &g->down; *pp; pp = &(*pp)->next)
            if (*pp == d) {
                unlist(g, pp, 0);
                break;
            }
    }
    down_release(d); /* the item's */
}

void coapgw_down_item_drop(inbox_item_t *it)
{
    down_release(it->ptr);
}

/* RFC 7252's MAX_TRANSMIT_WAIT for session s, in us: ACK_TIMEOUT x
 * (2^(MAX_RETRANSMIT + 1) - 1) x ACK_RANDOM_FACTOR (93 s by default), plus
 * a second: by then libcoap has either had the CON's ACK or given up. */
static uint64_t max_transmit_wait_us(coap_session_t *s)
{
    coap_fixed_point_t t = coap_session_get_ack_timeout(s);
    coap_fixed_point_t f = coap_session_get_ack_random_factor(s);
    uint16_t r = coap_session_get_max_retransmit(s);
    uint64_t ms = (uint64_t)t.integer_part * 1000 + t.fractional_part;
    uint64_t factor = (uint64_t)f.integer_part * 1000 + f.fractional_part;
    uint64_t tries = ((uint64_t)1 << (r < 20 ? r + 1 : 21)) - 1;
    return ms * tries * factor + 1000000;
}

/* A CON whose ACK the peek did not see: the ACK arrived between the peek
 * and libcoap's read (io_once cannot close that window: libcoap reads in
 * its own epoll turn).  libcoap calls the nack handler when it gives up,
 * which ends the observation; an observation still here past
 * MAX_TRANSMIT_WAIT therefore had its CON acknowledged. */
static void wait_sweep(coapgw_t *g, coapgw_down_t *d, uint64_t now)
{
    if (d->nwait == 0)
        return;
    uint64_t limit = max_transmit_wait_us(d->session);
    for (size_t i = 0; i < d->nwait;) {
        if (now - d->wait[i].sent_us < limit) {
            i++;
            continue;
        }
        post_worker(g, d, COAP_OP_ACK, d->wait[i].pid, d->wait[i].qos);
        d->wait[i] = d->wait[--d->nwait];
        g->con_waiting--;
    }
}

void coapgw_down_sweep(coapgw_t *g, uint64_t now)
{
    uint64_t life = (uint64_t)g->c->observe_lifetime_s * 1000000;
    coapgw_down_t **pp = &g->down;
    while (*pp) {
        coapgw_down_t *d = *pp;
        if (now - d->refreshed_us < life) {
            wait_sweep(g, d, now);
            pp = &d->next;
            continue;
        }
        coapgw_send_final(d->session, d->token, d->token_len, 503);
        atomic_fetch_add(&g->expired, 1);
        unlist(g, pp, 1);
    }
}

void coapgw_down_free(coapgw_t *g)
{
    while (g->down)
        unlist(g, &g->down, 0);
}
