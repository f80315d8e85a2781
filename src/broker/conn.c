/* conn.c -- a client connection's I/O: read, frame, write, close.
 *
 * Reads go into the worker's scratch buffer, one recv() per readiness event
 * (a bounded share of the loop turn per connection); every complete packet
 * in it is dispatched before the next read, and only a split packet is kept
 * (by the framer).  Output is appended to a buffer taken from the worker's
 * turn arena (server.h, oarena.h) and written once at the end of the loop
 * turn; what the socket does not take is copied to a buffer of the
 * connection's own there (conn_flush), and EV_WRITE is asked only while
 * the socket refuses bytes.  An idle connection holds neither buffer.
 *
 * Transports (transport.h): every read and write goes through the
 * connection's transport, plain TCP or the stack conn_new builds for the
 * listener (tls, ws, ws over tls; kept in conn_ext_t): one indirect call.
 * A transport's handshake (TLS) advances on each readiness event and is
 * bounded by the listener's handshake_timeout; what it still waits for
 * after that (a WebSocket upgrade) shares connect_timeout with the
 * CONNECT.  Bytes the transport holds itself (frames, an HTTP response)
 * are flushed with the MQTT output.  On a PROXY listener the header is
 * read first, before any transport (peeked, then consumed exactly, so
 * nothing after it is taken from the socket) and its source address
 * replaces the peer; it is bounded by handshake_timeout too.
 */
#include "conn.h"

#include "auth_chain.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ep_mqtt.h"
#include "log.h"
#include "mqtt_props.h"
#include "net_linger.h"
#include "net_proxy.h"
#include "net_tls.h"
#include "net_ws.h"
#include "persist.h"
#include "proto.h"
#include "router.h"
#include "sess.h"


void conn_link(worker_t *w, conn_t *c)
{
    c->w = w;
    c->prev = NULL;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
}

void conn_unlink(conn_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        c->w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
}

int conn_movable(const conn_t *c)
{
    if (c->state != CONN_ACTIVE || (c->flags & ~CONN_F_PROBLEM_INFO) || c->want_out || c->in_list ||
        c->obuf != NULL || c->ps.state != MQTT_PS_HDR || (c->ps.buf != NULL && !c->ps.buf_done))
        return 0;
    const conn_ext_t *x = c->x;
    if (x == NULL)
        return 1;
    if (x->held_acks || x->gate || x->pending || x->npending || tp_pending(conn_transport(c)))
        return 0;
    const auth_client_t *ac = x->auth;
    return ac == NULL ||
           (ac->wait == NULL && ac->held == NULL && ac->method == NULL && !ac->refusing);
}

void conn_move_out(conn_t *c)
{
    tw_del(&c->w->tw, &c->timer);
    conn_unwatch(c);
    conn_unlink(c);
    c->state = CONN_MOVING;
}

void conn_move_in(worker_t *w, conn_t *c)
{
    conn_link(w, c);
    c->state = CONN_ACTIVE;
    if (conn_watch(c) < 0) {
        conn_close(c, "cannot watch the socket after a move between workers", 1);
        return;
    }
    conn_arm_timer(c);
}

/* The socket is ready.  A connection closed or moved is out of the loop
 * (its watcher stopped): no event reaches it.  One held (CONN_AUTH,
 * proto_hold) may still be in it: its first event takes it out, and what
 * the socket has waits there until the hold ends. */
static void on_event(ev_loop_t *loop, ev_watcher_t *ev, uint32_t events)
{
    (void)loop;
    conn_t *c = container_of(ev, conn_t, ev);
    if (unlikely(c->state == CONN_AUTH)) {
        conn_unwatch(c);
        return;
    }
    if (events & (EV_READ | EV_HUP | EV_ERROR))
        conn_on_readable(c);
    if ((events & EV_WRITE) && (c->state == CONN_NEW || c->state == CONN_ACTIVE))
        conn_on_writable(c);
}

int conn_watch(conn_t *c)
{
    c->want_out = 0;
    if (ev_watch_active(&c->ev)) /* a hold that nothing woke (proto_hold) */
        return ev_watch_modify(&c->w->loop, &c->ev, EV_READ);
    return ev_watch_start(&c->w->loop, &c->ev, EV_READ);
}

void conn_unwatch(conn_t *c)
{
    ev_watch_stop(&c->w->loop, &c->ev);
    /* leaving this worker's loop (a hand-off may give it to another
     * thread before the end of the turn): no chunk of our arena with it */
    if (c->obuf)
        worker_buf_keep(c->w, &c->obuf, &c->olen, &c->ooff, &c->ocap);
}

/* The listener's transport stack: NULL for plain TCP (the shared tp_tcp()),
 * tls, ws over tcp, ws over tls.  *fail is set when the TLS state cannot
 * be allocated. */
static transport_t *transport_for(worker_t *w, int fd, uint8_t listener, int *fail)
{
    const conf_listener_t *l = &w->srv->conf.listeners[listener];
    transport_t *tp = NULL;
    *fail = 0;
    if (l->transport == CONF_TRANSPORT_TLS || l->transport == CONF_TRANSPORT_WSS) {
        struct ssl_st *ssl = server_tls_new(w->srv, listener, fd);
        if (ssl == NULL) {
            *fail = 1;
            return NULL;
        }
        tp = tls_transport_new(ssl);
    }
    if (l->transport == CONF_TRANSPORT_WS || l->transport == CONF_TRANSPORT_WSS)
        tp = ws_transport_new(l, tp ? tp : tp_tcp());
    return tp;
}

conn_t *conn_new(worker_t *w, int fd, const struct sockaddr *sa, uint8_t listener)
{
    const conf_listener_t *l = &w->srv->conf.listeners[listener];
    int fail;
    transport_t *tp = transport_for(w, fd, listener, &fail);
    if (fail)
        return NULL;
    conn_t *c = slab_alloc(&w->srv->conn_slab);
    c->w = w; /* first: conn_ext counts on it */
    if (tp) {
        conn_ext(c)->tp = tp;
        if (tp_handshaker(tp))
            c->flags |= CONN_F_HANDSHAKE;
        else if (tp_waiting(tp))
            c->flags |= CONN_F_UPGRADE;
    }
    if (l->proxy_protocol != CONF_PROXY_OFF) {
        conn_ext(c);
        c->flags |= CONN_F_PROXY;
    }
    ev_watcher_init(&c->ev, fd, on_event);
    c->listener = listener;
    c->state = CONN_NEW;
    conn_set_peer_family(c, (uint8_t)sa->sa_family);
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        memcpy(c->peer_addr, &in6->sin6_addr, 16);
        c->peer_port = ntohs(in6->sin6_port);
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
        memcpy(c->peer_addr, &in4->sin_addr, 4);
        c->peer_port = ntohs(in4->sin_port);
    }
    tw_timer_init(&c->timer, conn_on_timer);
    c->last_rx = (uint32_t)w->now;
    c->ep = (endpoint_t){.ops = &ep_mqtt_ops, .receive_max = 65535};
    c->flags |= CONN_F_PROBLEM_INFO;
    conn_link(w, c);
    return c;
}

static char *put_dec(char *p, unsigned v)
{
    char t[10];
    int n = 0;
    do
        t[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n > 0)
        *p++ = t[--n];
    return p;
}

const char *conn_peer(const conn_t *c, char *buf, size_t size)
{
    if (conn_peer_family(c) == AF_INET && size >= sizeof("255.255.255.255:65535")) {
        /* by hand: every connect and subscribe event formats it
         * (inet_ntop and snprintf were ~2 % of a worker's connects) */
        char *p = buf;
        for (int i = 0; i < 4; i++) {
            p = put_dec(p, c->peer_addr[i]);
            *p++ = i < 3 ? '.' : ':';
        }
        *put_dec(p, c->peer_port) = '\0';
        return buf;
    }
    char addr[INET6_ADDRSTRLEN] = "?";
    if (conn_peer_family(c) == AF_INET6 || conn_peer_family(c) == AF_INET)
        inet_ntop(conn_peer_family(c), c->peer_addr, addr, sizeof(addr));
    snprintf(buf, size, conn_peer_family(c) == AF_INET6 ? "[%s]:%u" : "%s:%u", addr,
             (unsigned)c->peer_port);
    return buf;
}

void conn_log_fields(const conn_t *c, log_fields_t *f, char *buf, size_t size)
{
    const conn_ext_t *x = c->x;
    const auth_client_t *ac = x ? x->auth : NULL;
    *f = (log_fields_t){
        .client_id = c->sess ? c->sess->client_id
                     : ac    ? ac->client_id
                             : NULL,
        .username = ac && ac->user ? ac->user
                    : x            ? x->cert_user
                                   : NULL,
        .peer = conn_peer(c, buf, size),
        .listener = c->w->srv->conf.listeners[c->listener].name,
    };
}

void conn_log(const conn_t *c, int level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char peer[INET6_ADDRSTRLEN + 8];
    log_fields_t f;
    conn_log_fields(c, &f, peer, sizeof(peer));
    va_list ap;
    va_start(ap, fmt);
    log_vev(level, &f, fmt, ap);
    va_end(ap);
}

void conn_log_ev(const conn_t *c, int level, const char *event, const char *reason, const char *fmt,
                 ...)
{
    if (!log_enabled(level))
        return;
    char peer[INET6_ADDRSTRLEN + 8];
    log_fields_t f;
    conn_log_fields(c, &f, peer, sizeof(peer));
    f.event = event;
    f.reason = reason;
    va_list ap;
    va_start(ap, fmt);
    log_vev(level, &f, fmt, ap);
    va_end(ap);
}

/* The event and reason of a closing connection's log line: the reason
 * code says what happened when there is one (docs/logging.md). */
static const char *close_event(const char *why, uint8_t rc, int by_client, char *reason,
                               size_t size)
{
    if (!by_client && rc == MQTT_RC_UNSPECIFIED_ERROR) {
        /* no code: the transport's or a timer's cause */
        snprintf(reason, size, "%s",
                 strstr(why, "closed by peer") ? "closed_by_peer"
                 : strncmp(why, "read error", 10) == 0 || strncmp(why, "write error", 11) == 0
                     ? "io_error"
                 : strstr(why, "_timeout") ? "timeout"
                                           : "unspecified_error");
        return strstr(why, "handshake") || strstr(why, "TLS") || strstr(why, "WebSocket")
                   ? "handshake_failed"
                   : "client_disconnected";
    }
    log_slug(by_client && rc == 0 ? "normal disconnection" : mqtt_reason_name(rc), reason, size);
    if (by_client)
        return "client_disconnected";
    switch (rc) {
    case MQTT_RC_PROTOCOL_ERROR:
    case MQTT_RC_MALFORMED_PACKET:
    case MQTT_RC_PACKET_TOO_LARGE:
        return "protocol_error";
    case MQTT_RC_KEEP_ALIVE_TIMEOUT:
        return "keepalive_timeout";
    case MQTT_RC_SESSION_TAKEN_OVER:
        return "takeover";
    default:
        return "client_disconnected";
    }
}

const char *conn_name(const conn_t *c, char *buf, size_t size)
{
    char addr[INET6_ADDRSTRLEN] = "?";
    unsigned port = c->peer_port;
    if (conn_peer_family(c) == AF_INET6 || conn_peer_family(c) == AF_INET)
        inet_ntop(conn_peer_family(c), c->peer_addr, addr, sizeof(addr));
    if (c->sess)
        snprintf(buf, size, "client '%s' (%s:%u)", c->sess->client_id, addr, port);
    else
        snprintf(buf, size, "%s:%u", addr, port);
    return buf;
}

static void close_conn(conn_t *c, const char *why, int publish_will, uint8_t rc, int by_client);

void conn_input(conn_t *c, const uint8_t *data, size_t n)
{
    size_t off = 0;
    uint32_t max = server_live(c->w->srv)->max_packet_size;
    while (off < n && (c->state == CONN_NEW || c->state == CONN_ACTIVE)) {
        if (c->state == CONN_NEW && c->ps.state == MQTT_PS_HDR &&
            (data[off] >> 4) != MQTT_CONNECT &&
            !((data[off] >> 4) == MQTT_AUTH && c->x && c->x->auth && c->x->auth->method)) {
            /* refuse at the first byte: no need to wait for a body that
             * may never come (an HTTP request, a port scanner) */
            close_conn(c, "protocol error: [MQTT-3.1.0-1] first packet is not CONNECT", 0,
                       MQTT_RC_PROTOCOL_ERROR, 0);
            return;
        }
        mqtt_raw_t pkt;
        size_t used = 0;
        const char *why = NULL;
        int rc = mqtt_parser_next(&c->ps, data + off, n - off, &used, max, &pkt, &why);
        off += used;
        if (rc == 0)
            break;
        if (rc > 0 && 1 + mqtt_varint_size(pkt.len) + (size_t)pkt.len > max) {
            /* the limit is on the whole packet [MQTT5-3.2.2-15], the
             * framer only knew the remaining length */
            rc = MQTT_ERR_TOO_LARGE;
            why = "packet larger than max_packet_size";
        }
        if (rc < 0) {
            char msg[256];
            snprintf(msg, sizeof(msg), "%s: %s",
                     rc == MQTT_ERR_TOO_LARGE ? "packet too large" : "malformed packet",
                     why ? why : "?");
            conn_close_reason(c, msg, 1, mqtt_err_reason(rc));
            return;
        }
        STAT_ADD(c->w->stats.pkts_in[pkt.hdr >> 4], 1);
        if (proto_handle(c, &pkt, data + off, n - off) != 0)
            return; /* closed, or moved with the rest of the bytes */
        if ((c->flags & (CONN_F_THROTTLED | CONN_F_PAUSED | CONN_F_ROUTE_WAIT)) && off < n) {
            /* over its rate, or paused (a subscriber of what it publishes
             * is behind): keep the rest for when reading resumes */
            conn_ext_t *x = conn_ext(c);
            x->pending = an_malloc(n - off);
            x->npending = (uint32_t)(n - off);
            memcpy(x->pending, data + off, n - off);
            return;
        }
    }
}

static void mark_flush(conn_t *c);
static int write_out(conn_t *c, unsigned flags);

/* The preamble (PROXY header, TLS handshake) is over: the CONNECT has
 * connect_timeout from now. */
static void preamble_done(conn_t *c)
{
    tw_add(&c->w->tw, &c->timer,
           c->w->now + (uint64_t)server_live(c->w->srv)->connect_timeout * 1000u);
}

static void read_proxy(conn_t *c)
{
    worker_t *w = c->w;
    conn_ext_t *x = c->x;
    char msg[256], name[160];
    ssize_t n = recv(c->ev.fd, w->scratch, w->scratch_size, MSG_PEEK);
    if (n == 0) {
        conn_close(c, "connection closed by peer before its PROXY header", 0);
        return;
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        snprintf(msg, sizeof(msg), "read error: %s", strerror(errno));
        conn_close(c, msg, 0);
        return;
    }
    uint8_t buf[PROXY_MAX_HEADER];
    size_t add = AN_MIN((size_t)n, sizeof(buf) - x->nproxy);
    if (x->nproxy)
        memcpy(buf, x->proxy_buf, x->nproxy);
    memcpy(buf + x->nproxy, w->scratch, add);
    size_t have = x->nproxy + add;
    proxy_result_t r;
    const char *why = NULL;
    int version = w->srv->conf.listeners[c->listener].proxy_protocol == CONF_PROXY_V1 ? 1 : 2;
    int rc = proxy_parse(buf, have, version, &r, &why);
    if (rc < 0) {
        snprintf(msg, sizeof(msg), "invalid PROXY protocol header: %s", why ? why : "?");
        conn_close(c, msg, 0);
        return;
    }
    /* consume exactly the header's bytes (all of them when incomplete) */
    size_t take = (rc > 0 ? (size_t)rc : have) - x->nproxy;
    if (recv(c->ev.fd, w->scratch, take, 0) != (ssize_t)take) {
        conn_close(c, "read error while consuming the PROXY header", 0);
        return;
    }
    if (rc == 0) {
        x->proxy_buf = an_realloc(x->proxy_buf, have);
        memcpy(x->proxy_buf + x->nproxy, w->scratch, take);
        x->nproxy = (uint32_t)have;
        return;
    }
    free(x->proxy_buf);
    x->proxy_buf = NULL;
    x->nproxy = 0;
    c->flags &= (uint8_t)~CONN_F_PROXY;
    conn_ext_trim(c); /* the header was all it held (x is not used below) */
    conn_name(c, name, sizeof(name));
    if (!r.local) {
        conn_set_peer_family(c, r.family);
        memcpy(c->peer_addr, r.src, sizeof(c->peer_addr));
        c->peer_port = r.src_port;
    }
    char client[160];
    conn_log_ev(c, AN_LOG_DEBUG, "proxy_header", NULL, "%s: PROXY v%u header: client %s (via %s)",
                conn_name(c, client, sizeof(client)), r.version,
                r.local ? "unknown, socket address kept" : client, name);
    if (!(c->flags & CONN_F_HANDSHAKE))
        preamble_done(c);
}

static void set_hs_want_out(conn_t *c, int on);

/* Advance the transport's handshake: 1 when it is over, 0 while it waits
 * (or failed: the connection is closed). */
static int transport_handshake(conn_t *c, transport_t *tp)
{
    transport_t *hs = tp_handshaker(tp);
    const char *step = tp_waiting(hs) ? tp_waiting(hs) : "transport handshake";
    char why[300], msg[360], name[160], desc[128];
    int rc = hs->ops->handshake(hs, c->ev.fd, why, sizeof(why));
    if (rc == TP_WANT_READ || rc == TP_WANT_WRITE) {
        set_hs_want_out(c, rc == TP_WANT_WRITE);
        return 0;
    }
    if (rc != TP_OK) {
        STAT_ADD(c->w->stats.handshake_failed[c->listener], 1);
        snprintf(msg, sizeof(msg), "%s failed: %s", step, why);
        conn_close(c, msg, 0);
        return 0;
    }
    c->flags &= (uint8_t)~CONN_F_HANDSHAKE;
    if (tp_waiting(tp))
        c->flags |= CONN_F_UPGRADE;
    set_hs_want_out(c, 0);
    conn_log_ev(c, AN_LOG_DEBUG, "handshake_done", NULL, "%s: %s done (%s)",
                conn_name(c, name, sizeof(name)), step, tp_describe(hs, desc, sizeof(desc)));
    preamble_done(c);
    return 1;
}

/* What a read produced: the bytes to the MQTT parser, then what the
 * transport queued itself (an upgrade response, a pong, a close reply) is
 * flushed, and a read that ended the stream closes the connection. */
static inline void read_done(conn_t *c, transport_t *tp, int rc, const tp_read_t *in)
{
    worker_t *w = c->w;
    if (in->wire) {
        STAT_ADD(w->stats.bytes_received, (uint64_t)in->wire);
        c->last_rx = (uint32_t)w->now;
    }
    if (in->len) {
        conn_input(c, in->data, in->len);
        if (c->state != CONN_NEW && c->state != CONN_ACTIVE)
            return; /* closed, or moved with the rest of the bytes */
    }
    if (tp_pending(tp))
        mark_flush(c);
    if (rc != TP_OK)
        conn_close(c, in->why, 1); /* writes an error response first */
}

/* Readable (or writable) while the transport is not up yet: its
 * handshake, then a read that may finish its upgrade.  Out of the hot
 * path: plain reads are conn_on_readable's. */
static __attribute__((noinline, cold)) void transport_preamble(conn_t *c)
{
    transport_t *tp = conn_transport(c);
    if ((c->flags & CONN_F_HANDSHAKE) && !transport_handshake(c, tp))
        return;
    const char *upgrading = (c->flags & CONN_F_UPGRADE) ? tp_waiting(tp) : NULL;
    tp_read_t in;
    in.buf = c->w->scratch;
    in.cap = c->w->scratch_size;
    int rc = tp->ops->read(tp, c->ev.fd, &in);
    if (upgrading && !tp_waiting(tp)) {
        char name[160];
        c->flags &= (uint8_t)~CONN_F_UPGRADE;
        conn_log_ev(c, AN_LOG_DEBUG, "handshake_done", NULL, "%s: %s done",
                    conn_name(c, name, sizeof(name)), upgrading);
    }
    read_done(c, tp, rc, &in);
}

static void update_events(conn_t *c);
static void route_unhold(conn_t *c);

void conn_pause(conn_t *c, uint64_t until)
{
    if (c->flags & CONN_F_PAUSED)
        return;
    c->flags |= CONN_F_PAUSED;
    conn_ext(c)->paused_until = until;
    update_events(c);
    conn_arm_timer(c);
}

void conn_hold_reads(conn_t *c, uint64_t until)
{
    if (c->flags & CONN_F_PAUSED)
        return;
    c->flags |= CONN_F_PAUSED;
    conn_ext(c)->paused_until = until;
    conn_arm_timer(c);
}

void conn_on_readable(conn_t *c)
{
    worker_t *w = c->w;
    if (unlikely(c->flags & (CONN_F_PAUSED | CONN_F_ROUTE_WAIT))) {
        /* held (conn_hold_reads) and readable: now drop the interest */
        update_events(c);
        return;
    }
    if (c->state == CONN_ACTIVE && w->srv->nworkers > 1 && worker_congested(w)) {
        /* another worker's inbox is over its bound: stop taking in
         * messages for a moment rather than queue them without limit */
        conn_pause(c, w->congested_until);
        return;
    }
    if (c->flags & CONN_F_PROXY) {
        read_proxy(c);
        return;
    }
    if (c->flags & (CONN_F_HANDSHAKE | CONN_F_UPGRADE)) {
        transport_preamble(c);
        return;
    }
    /* one read through the transport: a bounded share of the turn */
    transport_t *tp = conn_transport(c);
    tp_read_t in;
    in.buf = w->scratch;
    in.cap = w->scratch_size;
    int rc = tp->ops->read(tp, c->ev.fd, &in);
    read_done(c, tp, rc, &in);
}

/* A connection is on at most one of the worker's two turn lists, through
 * one link: the flush list while it has output, the dead list once closed.
 * A connection closed while on the flush list stays there and is freed by
 * the flush pass. */
static void mark_flush(conn_t *c)
{
    if (!c->in_list) {
        c->in_list = 1;
        c->turn_next = c->w->flush_head;
        c->w->flush_head = c;
    }
}

uint8_t *conn_reserve(conn_t *c, size_t n, int force)
{
    uint32_t pending = conn_out_pending(c);
    /* limits.max_output_buffer: a subscriber that does not keep up cannot
     * make the broker grow without bound */
    if (!force && pending > server_live(c->w->srv)->max_output_buffer)
        return NULL;
    if (c->obuf == NULL) {
        size_t cap;
        c->obuf = worker_buf_get(c->w, n, &cap);
        c->ocap = (uint32_t)cap;
        c->olen = c->ooff = 0;
    } else {
        worker_buf_room(c->w, &c->obuf, &c->olen, &c->ooff, &c->ocap, n);
    }
    uint8_t *p = c->obuf + c->olen;
    c->olen += (uint32_t)n;
    mark_flush(c);
    return p;
}

/* Broker -> client Topic Alias [MQTT5 3.3.2.3.4]: the first PUBLISH on a
 * topic carries the topic and a new alias, later ones the alias and an
 * empty topic.  Aliases are handed out until the client's maximum, then
 * topics go in full.  Returns the alias (0 = none) and sets *known when the
 * client already has it. */
static uint16_t alias_for(conn_t *c, const msg_t *m, int *known)
{
    conn_ext_t *x = c->x;
    *known = 0;
    if (x == NULL || x->alias_out_max == 0)
        return 0;
    for (uint16_t i = 0; i < x->nalias_out; i++)
        if (x->alias_out[i].len == m->topic_len &&
            memcmp(x->alias_out[i].p, msg_topic(m), m->topic_len) == 0) {
            *known = 1;
            return (uint16_t)(i + 1);
        }
    if (x->nalias_out >= x->alias_out_max)
        return 0;
    if (x->nalias_out == 0)
        x->alias_out = an_calloc(x->alias_out_max, sizeof(*x->alias_out));
    uint8_t *copy = an_malloc(m->topic_len ? m->topic_len : 1);
    memcpy(copy, msg_topic(m), m->topic_len);
    x->alias_out[x->nalias_out].p = copy;
    x->alias_out[x->nalias_out].len = m->topic_len;
    return ++x->nalias_out;
}

static int send_publish_v5(conn_t *c, const msg_t *m, uint8_t qos, uint8_t retain, uint8_t dup,
                           uint16_t pid, const uint32_t *subids, uint32_t nsubids)
{
    int known;
    uint16_t alias = alias_for(c, m, &known);
    uint8_t extra[96]; /* expiry, subscription ids, alias */
    mqtt_pw_t pw;
    mqtt_pw_init(&pw, extra, sizeof(extra));
    if (m->expire_at) {
        /* [MQTT5-3.3.2-6] the interval left, not the one published */
        uint64_t left = m->expire_at > c->w->now ? (m->expire_at - c->w->now + 999) / 1000 : 0;
        mqtt_pw_int(&pw, MQTT_PROP_MESSAGE_EXPIRY, (uint32_t)left);
    }
    for (uint32_t i = 0; i < nsubids; i++)
        mqtt_pw_int(&pw, MQTT_PROP_SUBSCRIPTION_ID, subids[i]);
    if (alias)
        mqtt_pw_int(&pw, MQTT_PROP_TOPIC_ALIAS, alias);
    size_t elen = mqtt_pw_len(&pw), plen = m->props_len + elen;
    uint16_t tlen = known ? 0 : m->topic_len;
    size_t size = mqtt_publish_v5_size(tlen, qos, plen, m->payload_len);
    uint8_t *p = conn_reserve(c, size, qos > 0 || retain);
    if (p == NULL)
        return -1;
    const uint8_t *props = msg_props(m);
    uint8_t small[512], *tmp = NULL;
    if (elen) { /* one contiguous block: stored properties, then ours; on
                 * the stack unless the stored ones are large */
        tmp = plen <= sizeof(small) ? small : an_malloc(plen);
        memcpy(tmp, msg_props(m), m->props_len);
        memcpy(tmp + m->props_len, extra, elen);
        props = tmp;
    }
    mqtt_encode_publish_v5(p, msg_topic(m), tlen, qos, retain, dup, pid, props, plen,
                           msg_payload(m), m->payload_len);
    if (tmp != small)
        free(tmp);
    STAT_ADD(c->w->stats.msgs_sent, 1);
    STAT_ADD(c->w->stats.msgs_out_qos[qos > 2 ? 2 : qos], 1);
    conn_count_out(c, MQTT_PUBLISH);
    return 0;
}

int conn_send_publish(conn_t *c, const msg_t *m, uint8_t qos, uint8_t retain, uint8_t dup,
                      uint16_t pid, const uint32_t *subids, uint32_t nsubids)
{
    if (c->proto == MQTT_PROTO_V5)
        return send_publish_v5(c, m, qos, retain, dup, pid, subids, nsubids);
    size_t size = mqtt_publish_size(m->topic_len, qos, m->payload_len);
    uint8_t *p = conn_reserve(c, size, qos > 0 || retain);
    if (p == NULL)
        return -1;
    mqtt_encode_publish(p, msg_topic(m), m->topic_len, qos, retain, dup, pid, msg_payload(m),
                        m->payload_len);
    STAT_ADD(c->w->stats.msgs_sent, 1);
    STAT_ADD(c->w->stats.msgs_out_qos[qos > 2 ? 2 : qos], 1);
    conn_count_out(c, MQTT_PUBLISH);
    return 0;
}

void conn_send_ack(conn_t *c, uint8_t type, uint16_t pid)
{
    uint8_t *p = conn_reserve(c, 4, 1);
    mqtt_encode_ack(p, type, pid);
    conn_count_out(c, type);
}

/* The interest that follows from the flags (a stopped watcher keeps none:
 * it is out of the loop until conn_watch). */
static void update_events(conn_t *c)
{
    uint32_t events =
        (c->flags & (CONN_F_THROTTLED | CONN_F_PAUSED | CONN_F_ROUTE_WAIT)) ? 0 : EV_READ;
    if (c->want_out)
        events |= EV_WRITE;
    (void)ev_watch_modify(&c->w->loop, &c->ev, events);
}

/* EV_WRITE for the transport's handshake: no slow-subscriber tracking. */
static void set_hs_want_out(conn_t *c, int on)
{
    if (c->want_out != on) {
        c->want_out = on != 0;
        update_events(c);
    }
}

static void set_want_out(conn_t *c, int on)
{
    if (c->want_out == on)
        return;
    c->want_out = on != 0;
    update_events(c);
    /* slow subscriber tracking: since when the socket refuses our bytes */
    if (on && server_live(c->w->srv)->slow_subscriber_timeout) {
        conn_ext(c)->out_full_since = c->w->now;
        c->flags |= CONN_F_OUT_FULL;
        conn_arm_timer(c);
    } else if (!on) {
        c->flags &= (uint8_t)~CONN_F_OUT_FULL;
    }
}

static void release_obuf(conn_t *c)
{
    if (c->obuf) {
        worker_buf_put(c->w, c->obuf, c->ocap);
        c->obuf = NULL;
        c->olen = c->ooff = c->ocap = 0;
    }
}

/* Everything waiting to be written: MQTT output and the transport's own
 * (WebSocket frames, an HTTP response). */
static size_t out_pending_all(const conn_t *c)
{
    return conn_out_pending(c) + tp_pending(conn_transport(c));
}

/* Write through the transport (flags: TP_WRITE_LAST) until everything is
 * written or the socket takes no more.  Returns 0, or -1 on a write error
 * (errno; the caller closes). */
static int write_out(conn_t *c, unsigned flags)
{
    transport_t *tp = conn_transport(c);
    for (;;) {
        uint32_t n = conn_out_pending(c);
        if (n == 0 && !tp_pending(tp))
            break;
        ssize_t r = tp->ops->write(tp, c->ev.fd, n ? c->obuf + c->ooff : NULL, n, flags);
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        c->ooff += (uint32_t)r;
        STAT_ADD(c->w->stats.bytes_sent, (uint64_t)r);
    }
    if (conn_out_pending(c) == 0)
        release_obuf(c);
    return 0;
}

void conn_flush(conn_t *c)
{
    c->in_list = 0;
    /* not written now (waiting for routes, moving, held by authentication:
     * conn_routes_done and the rest flush it later) */
    if ((c->state == CONN_ACTIVE || c->state == CONN_NEW) &&
        likely(!(c->flags & CONN_F_ROUTE_WAIT))) {
        if (write_out(c, 0) < 0) {
            char msg[128];
            snprintf(msg, sizeof(msg), "write error: %s", strerror(errno));
            conn_close(c, msg, 1); /* freed this turn, its buffer with it */
            return;
        }
        set_want_out(c, out_pending_all(c) > 0);
    }
    /* what the socket did not take outlives the turn's arena (server.h);
     * a moving connection may be another worker's already (conn_unwatch
     * kept its output before it left) */
    if (c->obuf && c->state != CONN_MOVING)
        worker_buf_keep(c->w, &c->obuf, &c->olen, &c->ooff, &c->ocap);
}

void conn_on_writable(conn_t *c)
{
    if (c->flags & CONN_F_HANDSHAKE) {
        transport_preamble(c); /* the handshake wanted to write */
        return;
    }
    mark_flush(c); /* written at the end of the turn with the rest */
}

void conn_event_client(const conn_t *c, event_client_t *out, char *peer, size_t size)
{
    const conn_ext_t *x = c->x;
    *out = (event_client_t){
        .client_id = c->sess ? c->sess->client_id : NULL,
        .username = x && x->auth ? x->auth->user
                    : x          ? x->cert_user
                                 : NULL,
        .peer = conn_peer(c, peer, size),
        .listener = c->w->srv->conf.listeners[c->listener].name,
        .proto = c->proto,
    };
}

/* conn_close, with the reason code of the client_disconnected event. */
static void close_conn(conn_t *c, const char *why, int publish_will, uint8_t rc, int by_client)
{
    worker_t *w = c->w;
    if (c->state == CONN_DEAD || c->state == CONN_MOVING)
        return;
    if (why && log_enabled(AN_LOG_INFO)) {
        char name[160], reason[48];
        const char *event = close_event(why, rc, by_client, reason, sizeof(reason));
        conn_log_ev(c, AN_LOG_INFO, event, reason, "%s: disconnected: %s",
                    conn_name(c, name, sizeof(name)), why);
    }
    /* a connection that was connected (a taken-over one has lost its
     * session: connect_home emitted its event) */
    if (c->state == CONN_ACTIVE && c->sess && event_wanted(w->srv, EVENT_CLIENT_DISCONNECTED)) {
        char peer[64];
        event_disconnected_t ev = {
            .reason = why ? why : "", .reason_code = rc, .by_client = (uint8_t)by_client};
        conn_event_client(c, &ev.client, peer, sizeof(peer));
        event_emit(w, &w->srv->events, EVENT_CLIENT_DISCONNECTED, &ev);
    }
    /* last chance for a CONNACK carrying a refusal (or a DISCONNECT, an
     * HTTP error) to leave, then the transport's end of stream: a
     * WebSocket close frame, a TLS close_notify */
    transport_t *tp = conn_transport(c);
    if (out_pending_all(c))
        (void)write_out(c, TP_WRITE_LAST);
    if (tp->ops->shutdown)
        tp->ops->shutdown(tp, c->ev.fd);
    c->state = CONN_DEAD;
    conn_ext_t *x = c->x;
    if (x && x->will && publish_will) {
        if (x->will_delay && c->sess && c->sess->expiry) {
            /* [MQTT5 3.1.3.2.2] later, unless the client is back first */
            sess_delay_will(c->sess, x->will, x->will_delay);
            x->will = NULL;
        } else {
            router_publish(w, x->will, NULL);
        }
    }
    if (x)
        msg_unref(&x->will);
    if (c->sess) {
        sess_t *s = c->sess;
        c->sess = NULL;
        STAT_ADD(w->stats.clients_connected, (uint64_t)-1);
        sess_detach(w, s);
    }
    tw_del(&w->tw, &c->timer);
    ev_watch_stop(&w->loop, &c->ev);
    linger_start(&w->lingers, w->now, c->ev.fd); /* closes when the client has read it all */
    c->ev.fd = -1;
    atomic_fetch_sub(&w->srv->listen_conns[c->listener], 1);
    atomic_fetch_sub(&w->srv->total_conns, 1);
    conn_unlink(c); /* freed at the end of the turn */
    if (!c->in_list) {
        c->in_list = 1;
        c->turn_next = w->dead_head;
        w->dead_head = c;
    }
}

void conn_will_to_session(conn_t *c)
{
    conn_ext_t *x = c->x;
    if (c->sess && c->sess->expiry && x && x->will && x->will_delay) {
        sess_delay_will(c->sess, x->will, x->will_delay);
        x->will = NULL;
    }
}

conn_ext_t *conn_ext(conn_t *c)
{
    if (c->x == NULL) {
        c->x = an_calloc(1, sizeof(*c->x));
        STAT_ADD(c->w->stats.conn_exts, 1);
    }
    return c->x;
}

/* The flags whose state is in conn_ext_t. */
#define CONN_F_EXT (CONN_F_THROTTLED | CONN_F_OUT_FULL | CONN_F_PAUSED | CONN_F_ROUTE_WAIT)

/* A field added to conn_ext_t must be added to conn_ext_trim's test too. */
_Static_assert(sizeof(conn_ext_t) == 168, "conn_ext_t changed: update conn_ext_trim");

void conn_ext_trim(conn_t *c)
{
    const conn_ext_t *x = c->x;
    if (x == NULL || (c->flags & CONN_F_EXT))
        return;
    /* paused_until, route_ticket, route_until and out_full_since are read
     * only under their flags; the rate-limit counters only in their second */
    if (x->rl_window == c->w->now / 1000u && (x->rl_msgs || x->rl_bytes))
        return;
    if (x->pending || x->npending || x->alias_in || x->nalias_in || x->nalias_out ||
        x->alias_out_max || x->alias_out || x->will || x->will_delay || x->tp || x->proxy_buf ||
        x->nproxy || x->cert_user || x->held_acks || x->auth || x->origin || x->gate)
        return;
    free(c->x);
    c->x = NULL;
    STAT_ADD(c->w->stats.conn_exts, (uint64_t)-1);
}

static void ext_free(conn_ext_t *x)
{
    if (x == NULL)
        return;
    msg_unref(&x->will);
    if (x->alias_in) {
        for (uint16_t i = 0; i < x->nalias_in; i++)
            free((void *)x->alias_in[i].p);
        free(x->alias_in);
    }
    if (x->alias_out) {
        for (uint16_t i = 0; i < x->nalias_out; i++)
            free((void *)x->alias_out[i].p);
        free(x->alias_out);
    }
    free(x->pending);
    free(x->proxy_buf);
    tp_free(x->tp);
    free(x->cert_user);
    auth_client_free(x->auth);
    if (x->gate)
        x->gate->owner = NULL;    /* the gate's answer will find nobody */
    msg_origin_unref(&x->origin); /* messages still queued hold their own */
    free(x);
}

void conn_close_reason(conn_t *c, const char *why, int publish_will, uint8_t rc)
{
    if (c->proto == MQTT_PROTO_V5 && c->state == CONN_ACTIVE) {
        /* the reason code, and the log line as Reason String (a DISCONNECT
         * may carry one whatever Request Problem Information said) */
        uint8_t props[200];
        mqtt_pw_t pw;
        mqtt_pw_init(&pw, props, sizeof(props));
        if (why)
            mqtt_pw_str(&pw, MQTT_PROP_REASON_STRING, why, AN_MIN(strlen(why), 190));
        size_t len = mqtt_pw_error(&pw) ? 0 : mqtt_pw_len(&pw);
        mqtt_encode_disconnect_v5(conn_reserve(c, mqtt_disconnect_v5_size(rc, len), 1), rc, props,
                                  len);
        conn_count_out(c, MQTT_DISCONNECT);
    }
    close_conn(c, why, publish_will, rc, 0);
}

void conn_close(conn_t *c, const char *why, int publish_will)
{
    close_conn(c, why, publish_will, MQTT_RC_UNSPECIFIED_ERROR, 0);
}

void conn_close_by_client(conn_t *c, const char *why, int publish_will, uint8_t rc)
{
    close_conn(c, why, publish_will, rc, 1);
}

void conn_free(conn_t *c)
{
    if (c->flags & CONN_F_ROUTE_WAIT)
        route_unhold(c);
    if (c->x && c->x->held_acks)
        persist_forget_endpoint(c->w, &c->ep);
    if (c->x && c->x->held_acks && c->w->fwd_held) {
        const route_owner_kind_t *k = &c->w->srv->route_owners[ROUTE_OWNER_NODE];
        k->forget_endpoint(c->w, &c->ep, k->user);
    }
    if (c->x)
        STAT_ADD(c->w->stats.conn_exts, (uint64_t)-1);
    ext_free(c->x);
    mqtt_parser_reset(&c->ps);
    release_obuf(c);
    slab_free(&c->w->srv->conn_slab, c);
}

void conn_count_publish(conn_t *c, size_t bytes)
{
    const conf_t *cf = server_live(c->w->srv);
    if (cf->max_message_rate == 0 && cf->max_byte_rate == 0)
        return;
    conn_ext_t *x = conn_ext(c);
    uint64_t sec = c->w->now / 1000u;
    if (x->rl_window != sec) {
        x->rl_window = sec;
        x->rl_msgs = 0;
        x->rl_bytes = 0;
    }
    x->rl_msgs++;
    x->rl_bytes += (uint32_t)AN_MIN(bytes, UINT32_MAX - x->rl_bytes);
    if ((cf->max_message_rate && x->rl_msgs >= cf->max_message_rate) ||
        (cf->max_byte_rate && x->rl_bytes >= cf->max_byte_rate)) {
        if (!(c->flags & CONN_F_THROTTLED)) {
            /* push back: stop reading this client until the next second;
             * nothing is dropped, TCP flow control does the rest */
            c->flags |= CONN_F_THROTTLED;
            update_events(c);
            STAT_ADD(c->w->stats.throttled, 1);
            char name[160];
            conn_log_ev(c, AN_LOG_INFO, "throttled", "rate_limit",
                        "%s: over its message or byte rate, reads paused until the next second",
                        conn_name(c, name, sizeof(name)));
            conn_arm_timer(c);
        }
    }
}

/* Reading again (a pause, a throttle or a route wait is over): the input
 * kept while it was not is handled now. */
static void resume_input(conn_t *c)
{
    if ((c->flags & (CONN_F_THROTTLED | CONN_F_PAUSED | CONN_F_ROUTE_WAIT)) || !c->x ||
        !c->x->pending)
        return;
    uint8_t *held = c->x->pending;
    uint32_t nheld = c->x->npending;
    c->x->pending = NULL;
    c->x->npending = 0;
    conn_input(c, held, nheld); /* may pause or throttle again and keep a rest */
    free(held);
}

/* ---- the route barrier ---- */

/* Out of the worker's list of held connections, output flushed this turn. */
static void route_unhold(conn_t *c)
{
    worker_t *w = c->w;
    for (uint32_t i = 0; i < w->nroute_held; i++)
        if (w->route_held[i] == c) {
            w->route_held[i] = w->route_held[--w->nroute_held];
            break;
        }
    c->flags &= (uint8_t)~CONN_F_ROUTE_WAIT;
    if (c->state == CONN_ACTIVE) {
        update_events(c);
        mark_flush(c);
    }
}

void conn_route_hold(conn_t *c, uint64_t ticket, uint32_t wait_ms)
{
    worker_t *w = c->w;
    conn_ext_t *x = conn_ext(c);
    x->route_ticket = ticket;
    x->route_until = w->now + wait_ms;
    if (!(c->flags & CONN_F_ROUTE_WAIT)) {
        if (w->nroute_held == w->route_held_cap) {
            w->route_held_cap = w->route_held_cap ? 2 * w->route_held_cap : 16;
            w->route_held = an_realloc(w->route_held, w->route_held_cap * sizeof(*w->route_held));
        }
        w->route_held[w->nroute_held++] = c;
        STAT_ADD(w->stats.route_holds, 1);
        c->flags |= CONN_F_ROUTE_WAIT; /* reads: dropped when readable (conn_on_readable) */
    }
    conn_arm_timer(c);
}

void conn_routes_done(worker_t *w, uint64_t done)
{
    /* the ready ones first, then each released: releasing runs the input
     * it kept, which may hold it (or another) again */
    uint32_t n = 0;
    for (uint32_t i = 0; i < w->nroute_held; i++)
        n += w->route_held[i]->x->route_ticket <= done;
    if (n == 0)
        return;
    conn_t **ready = an_malloc(n * sizeof(*ready));
    n = 0;
    for (uint32_t i = 0; i < w->nroute_held; i++)
        if (w->route_held[i]->x->route_ticket <= done)
            ready[n++] = w->route_held[i];
    for (uint32_t i = 0; i < n; i++) {
        conn_t *c = ready[i];
        if (!(c->flags & CONN_F_ROUTE_WAIT) || c->x->route_ticket > done)
            continue; /* released or held again on the way */
        route_unhold(c);
        if (c->state == CONN_ACTIVE)
            resume_input(c);
        if (c->state == CONN_ACTIVE) {
            conn_arm_timer(c);
            conn_ext_trim(c); /* the barrier's fields were all it held, mostly */
        }
    }
    free(ready);
}

void conn_arm_timer(conn_t *c)
{
    worker_t *w = c->w;
    uint64_t at = UINT64_MAX;
    if (c->keepalive)
        at = w->now - (uint32_t)((uint32_t)w->now - c->last_rx) + (uint64_t)c->keepalive * 1500u;
    if (c->flags & CONN_F_THROTTLED)
        at = AN_MIN(at, (c->x->rl_window + 1) * 1000u);
    if (c->flags & CONN_F_PAUSED)
        at = AN_MIN(at, c->x->paused_until);
    if (c->flags & CONN_F_ROUTE_WAIT)
        at = AN_MIN(at, c->x->route_until);
    if ((c->flags & CONN_F_OUT_FULL) && server_live(w->srv)->slow_subscriber_timeout)
        at = AN_MIN(at, c->x->out_full_since +
                            (uint64_t)server_live(w->srv)->slow_subscriber_timeout * 1000u);
    if (at == UINT64_MAX)
        tw_del(&w->tw, &c->timer);
    else if (!tw_pending(&c->timer) || c->timer.expires > at)
        tw_add(&w->tw, &c->timer, at);
}

void conn_on_timer(tw_timer_t *t)
{
    conn_t *c = container_of(t, conn_t, timer);
    worker_t *w = c->w;
    const conf_t *cf = server_live(w->srv);
    if (c->state == CONN_NEW) {
        if (c->flags & CONN_F_PROXY)
            conn_close(c, "no PROXY header within handshake_timeout", 0);
        else if (c->flags & (CONN_F_HANDSHAKE | CONN_F_UPGRADE)) {
            const char *step = tp_waiting(conn_transport(c));
            char msg[160];
            STAT_ADD(w->stats.handshake_failed[c->listener], 1);
            snprintf(msg, sizeof(msg), "%s not completed within %s",
                     step ? step : "transport handshake",
                     (c->flags & CONN_F_HANDSHAKE) ? "handshake_timeout" : "connect_timeout");
            conn_close(c, msg, 0);
        } else
            conn_close(c, "no CONNECT within connect_timeout", 0);
        return;
    }
    if (c->state == CONN_AUTH) {
        proto_auth_timer(c);
        return;
    }
    if (c->state != CONN_ACTIVE)
        return;
    /* [MQTT-3.1.2-24] silent for 1.5 x keepalive: gone.  The deadline is
     * re-armed lazily here rather than on every packet. */
    if (c->keepalive &&
        (uint32_t)((uint32_t)w->now - c->last_rx) >= (uint32_t)c->keepalive * 1500u) {
        conn_close_reason(c, "keepalive timeout", 1, MQTT_RC_KEEP_ALIVE_TIMEOUT);
        return;
    }
    if ((c->flags & CONN_F_OUT_FULL) && cf->slow_subscriber_timeout &&
        w->now >= c->x->out_full_since + (uint64_t)cf->slow_subscriber_timeout * 1000u) {
        STAT_ADD(w->stats.slow_disconnects, 1);
        conn_close(c, "slow subscriber: output stayed full past slow_subscriber_timeout", 1);
        return;
    }
    int resume = 0;
    if ((c->flags & CONN_F_ROUTE_WAIT) && w->now >= c->x->route_until) {
        STAT_ADD(w->stats.route_hold_timeouts, 1);
        route_unhold(c); /* a node too slow to answer: the SUBACK goes */
        resume = 1;
    }
    if ((c->flags & CONN_F_PAUSED) && w->now >= c->x->paused_until) {
        c->flags &= (uint8_t)~CONN_F_PAUSED;
        update_events(c);
        resume = 1;
    }
    if ((c->flags & CONN_F_THROTTLED) && w->now / 1000u > c->x->rl_window) {
        c->flags &= (uint8_t)~CONN_F_THROTTLED;
        update_events(c);
        resume = 1;
    }
    if (resume) {
        resume_input(c);
        if (c->state != CONN_ACTIVE)
            return;
    }
    conn_arm_timer(c);
    if (resume)
        conn_ext_trim(c);
}

/* The memory goal's tripwire (tests/unit/test_retain.c checks it too): an
 * idle client is one conn_t and one sess_t.  200, not 192, since the
 * session endpoint (8 bytes net): glibc serves 193 to 200 bytes from the
 * same 208-byte chunk as 192 (malloc_usable_size(192) is 200), so RSS per
 * client did not move; 201 would cost 16 bytes more. */
_Static_assert(sizeof(conn_t) <= 184, "conn_t grew: every idle client pays for it");
