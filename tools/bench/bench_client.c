/* bench_client.c -- one client connection: the MQTT client state machine.
 *
 * States: IDLE -> TCP (non-blocking connect) -> [TLS (--tls: handshake)] ->
 * [WS (--ws: upgrade request written, bench_ws.c)] -> CONNACK (CONNECT written) ->
 * [SUBACK (subscribers: SUBSCRIBE written)] -> READY; on a drop or a failure
 * either BACKOFF (with --reconnect) or DEAD; CLOSING at the end of the run
 * (DISCONNECT written, waiting for the broker to close).  Every state but
 * READY and BACKOFF is bounded by --conn-timeout through the client's one
 * timer; in READY the same timer is the keepalive (re-armed lazily from the
 * time of the last bytes queued, as the broker does), in BACKOFF it is the
 * reconnect time.
 *
 * I/O: level-triggered epoll.  A readable socket gets one recv() per loop
 * turn into the worker's shared buffer, and mqtt_parser_next frames every
 * packet in it in place (only a packet split across reads is copied, by the
 * parser).  Output is appended to a per-connection buffer and written by
 * client_flush once per turn, at the end; EPOLLOUT is armed only while the
 * socket refuses bytes.  Idle connections (conn mode) give their buffer back
 * once it drains, so holding 19,000 connections costs the generator 148
 * bytes each (client_t plus its slots in the dirty/active/heap arrays)
 * besides the kernel's socket.
 *
 * Publishing: a publisher's QoS 1/2 packet ids live in a ring of 2x the
 * window (power of two), indexed by id & mask; a new id skips slots still in
 * use, so acknowledgements out of order are fine and an ack for an id not in
 * flight is detected.  Reconnect backoff: first retry at once, then
 * --backoff-steps exponential steps from --backoff-base (full jitter:
 * uniform in [0, step]), then uniform in [--backoff-min, --backoff-max].
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "bench_worker.h"
#include "util.h"

#define OUT_CAP (1u << 20) /* publishers stop queueing beyond this */
#define MAX_ERR_LOG 5      /* failure reasons printed per process */

static int err_logged;

static void log_failure(const client_t *c, const char *why)
{
    if (err_logged >= MAX_ERR_LOG || W.phase >= PH_CLOSING)
        return;
    err_logged++;
    char cid[128];
    client_id_for(c->role, c->idx, cid, sizeof(cid));
    fprintf(stderr, "antenna-bench[%d]: %s: %s%s\n", (int)getpid(), cid, why,
            err_logged == MAX_ERR_LOG ? " (further failures not shown)" : "");
}

static int in_handshake(int s)
{
    return s == CS_TCP || s == CS_TLS || s == CS_WS || s == CS_CONNACK || s == CS_SUBACK;
}

static int is_connected(int s)
{
    return s == CS_SUBACK || s == CS_READY;
}

static void set_state(client_t *c, int ns)
{
    int os = c->state;
    if (in_handshake(os) && !in_handshake(ns))
        W.pending--;
    if (!in_handshake(os) && in_handshake(ns))
        W.pending++;
    if (os == CS_READY && ns != CS_READY)
        W.st.c[C_ready]--;
    if (os != CS_READY && ns == CS_READY)
        W.st.c[C_ready]++;
    if (is_connected(os) && !is_connected(ns))
        W.st.c[C_connected]--;
    if (!is_connected(os) && is_connected(ns))
        W.st.c[C_connected]++;
    c->state = (uint8_t)ns;
}

void client_init(client_t *c, int role, uint32_t idx, uint32_t g)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->role = (uint8_t)role;
    c->idx = idx;
    c->g = g;
    if (role == ROLE_PUB) {
        pub_t *p = an_calloc(1, sizeof(*p));
        char cid[128], buf[1024];
        client_id_for(role, idx, cid, sizeof(cid));
        int l = tmpl_expand(g_opt.topic.text, idx, cid, NULL, buf, sizeof(buf));
        p->topic = an_strndup(buf, l > 0 ? (size_t)l : 0);
        p->topic_len = (uint16_t)(l > 0 ? l : 0);
        p->next_pid = 1;
        if (g_opt.qos) {
            uint32_t size = 2;
            while (size < 2 * g_opt.inflight && size < 65536)
                size *= 2;
            p->mask = size - 1;
            p->ring = an_calloc(size, sizeof(*p->ring));
        }
        c->pub = p;
    } else if (role == ROLE_SUB) {
        c->pairs = an_calloc(1, sizeof(*c->pairs));
    }
    if (g_opt.ws)
        ws_client_init(c);
}

/* ---- output ------------------------------------------------------------------ */

static uint8_t *reserve(client_t *c, size_t n)
{
    if (c->obuf == NULL) {
        size_t cap = c->role == ROLE_CONN ? 256 : 16384;
        while (cap < n)
            cap *= 2;
        c->obuf = an_malloc(cap);
        c->ocap = (uint32_t)cap;
        c->olen = c->ooff = 0;
    } else {
        buf_make_room(&c->obuf, &c->olen, &c->ooff, &c->ocap, n);
    }
    uint8_t *p = c->obuf + c->olen;
    c->olen += (uint32_t)n;
    c->t_last_tx = W.now;
    mark_dirty(c);
    if (c->ws && ws_open(c))
        ws_count_raw(c, n);
    return p;
}

uint8_t *client_reserve(client_t *c, size_t n)
{
    return reserve(c, n);
}

static void free_obuf(client_t *c)
{
    free(c->obuf);
    c->obuf = NULL;
    c->olen = c->ooff = c->ocap = 0;
}

static void epoll_events(client_t *c, uint32_t ev)
{
    struct epoll_event e = {.events = ev, .data.u64 = (uint64_t)(c - W.cl)};
    epoll_ctl(W.epfd, EPOLL_CTL_MOD, c->fd, &e);
}

static void client_lost(client_t *c, const char *why);

void client_flush(client_t *c)
{
    if (c->fd < 0 || c->state == CS_TCP || c->state == CS_TLS)
        return;
    if (c->ws)
        ws_seal(c); /* what this turn queued: one binary frame */
    uint32_t pending = c->olen - c->ooff;
    if (pending == 0)
        return;
    ssize_t n;
    if (c->ssl) {
        ERR_clear_error();
        int r =
            SSL_write(c->ssl, c->obuf + c->ooff, (int)(pending > (1u << 30) ? 1u << 30 : pending));
        if (r > 0) {
            n = r;
        } else {
            int err = SSL_get_error(c->ssl, r);
            if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
                n = 0; /* retried with the same bytes (moving buffer allowed) */
            } else {
                char msg[384];
                btls_reason(c->ssl, r, err, "TLS write", msg, sizeof(msg));
                if (c->state == CS_CLOSING) {
                    client_close_now(c);
                    return;
                }
                W.st.c[C_errors]++;
                client_lost(c, msg);
                return;
            }
        }
    } else {
        n = send(c->fd, c->obuf + c->ooff, pending, MSG_NOSIGNAL);
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            n = 0;
        else {
            char msg[128];
            snprintf(msg, sizeof(msg), "write: %s", strerror(errno));
            if (c->state == CS_CLOSING) {
                client_close_now(c);
                return;
            }
            W.st.c[C_errors]++;
            client_lost(c, msg);
            return;
        }
    }
    W.st.c[C_bytes_out] += (uint64_t)n;
    c->ooff += (uint32_t)n;
    if (c->ooff == c->olen) {
        c->ooff = c->olen = 0;
        if (c->role == ROLE_CONN)
            free_obuf(c);
        if (c->flags & F_WANT_OUT) {
            c->flags &= (uint8_t)~F_WANT_OUT;
            epoll_events(c, EPOLLIN | EPOLLRDHUP);
        }
    } else if (!(c->flags & F_WANT_OUT)) {
        c->flags |= F_WANT_OUT;
        epoll_events(c, EPOLLIN | EPOLLRDHUP | EPOLLOUT);
    }
}

/* ---- connecting ---------------------------------------------------------------- */

static uint64_t backoff_ns(uint32_t attempt)
{
    if (attempt <= 1)
        return 0;
    double s;
    if (attempt - 1 <= g_opt.backoff_steps) {
        double step = g_opt.backoff_base * (double)(1u << (attempt - 2 < 20 ? attempt - 2 : 20));
        s = g_opt.backoff_jitter ? step * (double)(rng_next() % 1000001) / 1e6 : step;
    } else {
        double span = g_opt.backoff_max - g_opt.backoff_min;
        s = g_opt.backoff_min + (span > 0 ? span * (double)(rng_next() % 1000001) / 1e6 : 0);
    }
    return (uint64_t)(s * 1e9);
}

static void close_socket(client_t *c)
{
    timer_cancel(c);
    if (c->ssl) {
        SSL_free(c->ssl); /* no close_notify: MQTT's DISCONNECT ends the session */
        c->ssl = NULL;
    }
    if (c->fd >= 0)
        close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    mqtt_parser_reset(&c->ps);
    ws_reset(c);
    free_obuf(c);
    c->flags &= (uint8_t) ~(F_WANT_OUT | F_PING_OUT);
    if (c->pub) {
        W.st.c[C_pub_inflight] -= c->pub->inflight;
        c->pub->inflight = 0;
        if (c->pub->ring)
            memset(c->pub->ring, 0, ((size_t)c->pub->mask + 1) * sizeof(*c->pub->ring));
    }
}

/* A connection failed or dropped: count it, then reconnect later or give up. */
static void client_lost(client_t *c, const char *why)
{
    int established = is_connected(c->state);
    if (c->state == CS_CLOSING || c->state == CS_DEAD) {
        client_close_now(c);
        return;
    }
    close_socket(c);
    if (established) {
        W.st.c[C_drops]++;
        if (!(c->flags & F_DOWN)) {
            c->flags |= F_DOWN;
            c->t_drop = W.now;
            W.down++;
            if (!W.st.t[T_first_drop])
                W.st.t[T_first_drop] = W.now;
        }
        if (!g_opt.reconnect)
            log_failure(c, why);
    } else {
        W.st.c[C_conn_fail]++;
        if (!g_opt.reconnect || W.phase == PH_SETUP)
            log_failure(c, why);
    }
    if (g_opt.reconnect && W.phase < PH_DRAIN) {
        if (c->attempts < 255)
            c->attempts++;
        set_state(c, CS_BACKOFF);
        timer_set(c, W.now + backoff_ns(c->attempts));
    } else {
        set_state(c, CS_DEAD);
        if (!(c->flags & F_SETTLED))
            on_client_settled_failed(c);
    }
}

static void send_connect(client_t *c)
{
    char cid[128], user[160];
    client_id_for(c->role, c->idx, cid, sizeof(cid));
    mqtt_connect_opts_t o = {
        .proto = g_opt.version,
        .clean_session = g_opt.clean,
        .keepalive = g_opt.keepalive,
        .client_id = cid,
        .username = g_opt.username,
        .password = g_opt.password,
    };
    if (g_opt.user_prefix) {
        snprintf(user, sizeof(user), "%s%u", g_opt.user_prefix, c->idx);
        o.username = user;
    }
    if (g_opt.npasswords)
        o.password = g_opt.passwords[c->idx % g_opt.npasswords];
    uint8_t *p = reserve(c, mqtt_connect_size(&o));
    mqtt_encode_connect(p, &o);
    set_state(c, CS_CONNACK);
}

/* The transport is up (TCP, or TLS): upgrade to WebSocket, or write CONNECT. */
static void transport_up(client_t *c)
{
    if (c->ws) {
        ws_start(c);
        set_state(c, CS_WS);
        return;
    }
    send_connect(c);
}

int client_ws_open(client_t *c)
{
    int fd = c->fd;
    send_connect(c);
    return c->fd == fd && c->fd >= 0 ? 0 : -1;
}

/* --tls: drive the handshake (SSL_connect on the non-blocking socket); on
 * success write CONNECT. */
static void btls_step(client_t *c)
{
    ERR_clear_error();
    int r = SSL_connect(c->ssl);
    if (r == 1) {
        btls_handshake_done(c->ssl);
        if (c->flags & F_WANT_OUT) {
            c->flags &= (uint8_t)~F_WANT_OUT;
            epoll_events(c, EPOLLIN | EPOLLRDHUP);
        }
        transport_up(c);
        return;
    }
    int err = SSL_get_error(c->ssl, r);
    if (err == SSL_ERROR_WANT_READ) {
        if (c->flags & F_WANT_OUT) {
            c->flags &= (uint8_t)~F_WANT_OUT;
            epoll_events(c, EPOLLIN | EPOLLRDHUP);
        }
        return;
    }
    if (err == SSL_ERROR_WANT_WRITE) {
        if (!(c->flags & F_WANT_OUT)) {
            c->flags |= F_WANT_OUT;
            epoll_events(c, EPOLLIN | EPOLLRDHUP | EPOLLOUT);
        }
        return;
    }
    char msg[384];
    btls_reason(c->ssl, r, err, "TLS handshake", msg, sizeof(msg));
    W.st.c[C_tls_fail]++;
    client_lost(c, msg);
}

/* TCP connected: start TLS or write CONNECT. */
static void tcp_connected(client_t *c)
{
    if (!g_opt.tls) {
        transport_up(c);
        return;
    }
    c->ssl = btls_new(c->fd);
    if (!c->ssl) {
        char msg[384];
        btls_reason(NULL, 0, SSL_ERROR_SSL, "SSL_new", msg, sizeof(msg));
        W.st.c[C_tls_fail]++;
        client_lost(c, msg);
        return;
    }
    set_state(c, CS_TLS);
    btls_step(c);
}

void client_start(client_t *c)
{
    const bench_addr_t *h = &g_opt.hosts[c->g % g_opt.nhosts];
    uint16_t port = g_opt.ports[c->g % g_opt.nports];
    struct sockaddr_storage dst = h->ss;
    if (dst.ss_family == AF_INET)
        ((struct sockaddr_in *)&dst)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)&dst)->sin6_port = htons(port);

    W.st.c[C_conn_started]++;
    if (!W.st.t[T_first_conn])
        W.st.t[T_first_conn] = W.now;
    c->t_conn = W.now;
    set_state(c, CS_TCP);
    timer_set(c, W.now + (uint64_t)(g_opt.conn_timeout * 1e9));

    int fd = socket(dst.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        char msg[128];
        snprintf(msg, sizeof(msg), "socket: %s", strerror(errno));
        client_lost(c, msg);
        return;
    }
    c->fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (g_opt.nifaddrs) {
        const bench_addr_t *src = &g_opt.ifaddrs[c->g % g_opt.nifaddrs];
#ifdef IP_BIND_ADDRESS_NO_PORT
        /* let connect() pick the port per destination: > 64k connections
         * from one source address to different ports/hosts, and no bind-time
         * port exhaustion */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
#endif
        if (bind(fd, (const struct sockaddr *)&src->ss, src->len) < 0) {
            char msg[128];
            snprintf(msg, sizeof(msg), "bind source address: %s", strerror(errno));
            client_lost(c, msg);
            return;
        }
    }
    struct epoll_event e = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP,
                            .data.u64 = (uint64_t)(c - W.cl)};
    if (epoll_ctl(W.epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
        char msg[128];
        snprintf(msg, sizeof(msg), "epoll_ctl: %s", strerror(errno));
        client_lost(c, msg);
        return;
    }
    c->flags |= F_WANT_OUT;
    if (connect(fd, (const struct sockaddr *)&dst, h->len) == 0) {
        tcp_connected(c);
        return;
    }
    if (errno != EINPROGRESS) {
        char msg[128];
        snprintf(msg, sizeof(msg), "connect: %s", strerror(errno));
        client_lost(c, msg);
    }
}

/* ---- incoming packets ------------------------------------------------------------- */

static void proto_error(client_t *c, const char *what, const char *why)
{
    char msg[256];
    snprintf(msg, sizeof(msg), "%s%s%s", what, why ? ": " : "", why ? why : "");
    W.st.c[C_errors]++;
    client_lost(c, msg);
}

/* --extra-sub: one SUBSCRIBE (packet id 1) of the client's filter and the
 * extra one, both at --sub-qos. */
static void encode_subscribe2(client_t *c, const char *f1, uint16_t l1)
{
    uint16_t l2 = (uint16_t)strlen(g_opt.extra_sub);
    uint32_t rem = 2u + 2u + l1 + 1u + 2u + l2 + 1u;
    uint8_t *p = reserve(c, 1 + mqtt_varint_size(rem) + rem);
    *p++ = MQTT_SUBSCRIBE << 4 | 2;
    p += mqtt_encode_varint(p, rem);
    *p++ = 0;
    *p++ = 1;
    *p++ = (uint8_t)(l1 >> 8);
    *p++ = (uint8_t)l1;
    memcpy(p, f1, l1);
    p += l1;
    *p++ = g_opt.sub_qos;
    *p++ = (uint8_t)(l2 >> 8);
    *p++ = (uint8_t)l2;
    memcpy(p, g_opt.extra_sub, l2);
    p += l2;
    *p = g_opt.sub_qos;
}

static void on_connack(client_t *c, const mqtt_raw_t *r)
{
    uint8_t sp, rc;
    const char *why = NULL;
    if (c->state != CS_CONNACK) {
        proto_error(c, "unexpected CONNACK", NULL);
        return;
    }
    if (mqtt_decode_connack(r, &sp, &rc, &why) != MQTT_OK) {
        proto_error(c, "bad CONNACK", why);
        return;
    }
    if (rc != MQTT_CONNACK_ACCEPTED) {
        char msg[64];
        snprintf(msg, sizeof(msg), "CONNACK refused, return code %u", rc);
        W.st.c[C_conn_refused]++;
        client_lost(c, msg);
        return;
    }
    W.st.c[C_conn_ok]++;
    if (!(c->flags & F_EVER_UP)) {
        c->flags |= F_EVER_UP;
        hist_record(&W.conn, W.now - c->t_conn);
    }
    if (c->flags & F_DOWN) {
        c->flags &= (uint8_t)~F_DOWN;
        W.down--;
        W.st.c[C_reconnects]++;
        hist_record(&W.recon, W.now - c->t_drop);
        if (W.down == 0)
            W.st.t[T_all_back] = W.now;
    }
    c->attempts = 0;
    if (c->role == ROLE_SUB) {
        char cid[128], filter[1024];
        client_id_for(c->role, c->idx, cid, sizeof(cid));
        int l = tmpl_expand(g_opt.sub_topic.text, c->idx, cid, NULL, filter, sizeof(filter));
        if (g_opt.extra_sub)
            encode_subscribe2(c, filter, (uint16_t)l);
        else
            mqtt_encode_subscribe(reserve(c, mqtt_subscribe_size((uint16_t)l)), 1,
                                  (const uint8_t *)filter, (uint16_t)l, g_opt.sub_qos);
        if (!W.st.t[T_sub_sent])
            W.st.t[T_sub_sent] = W.now;
        set_state(c, CS_SUBACK);
        return;
    }
    timer_cancel(c);
    set_state(c, CS_READY);
    on_client_ready(c, 1);
}

static void on_suback(client_t *c, const mqtt_raw_t *r)
{
    uint16_t id;
    uint8_t rcs[4];
    uint32_t n;
    const char *why = NULL;
    if (c->state != CS_SUBACK) {
        proto_error(c, "unexpected SUBACK", NULL);
        return;
    }
    if (mqtt_decode_suback(r, &id, rcs, 4, &n, &why) != MQTT_OK) {
        proto_error(c, "bad SUBACK", why);
        return;
    }
    if (n < 1 || rcs[0] == MQTT_SUBACK_FAILURE ||
        (g_opt.extra_sub && (n < 2 || rcs[1] == MQTT_SUBACK_FAILURE))) {
        W.st.c[C_sub_fail]++;
        proto_error(c, "SUBACK: subscription refused", NULL);
        return;
    }
    W.st.c[C_sub_ok]++;
    timer_cancel(c);
    set_state(c, CS_READY);
    on_client_ready(c, 1);
}

static void on_publish(client_t *c, const mqtt_raw_t *r)
{
    mqtt_publish_t m;
    const char *why = NULL;
    if (mqtt_decode_publish(r, g_opt.version, &m, &why) != MQTT_OK) {
        proto_error(c, "bad PUBLISH", why);
        return;
    }
    uint64_t now = W.now;
    W.st.c[C_recv]++;
    W.last_recv = now;
    if (now >= W.t_meas && now < W.t_end && W.t_meas)
        W.st.c[C_recv_meas]++;
    if (!W.st.t[T_first_recv])
        W.st.t[T_first_recv] = now;
    W.st.t[T_last_recv] = now;
    if (m.qos == 1)
        mqtt_encode_ack(reserve(c, 4), MQTT_PUBACK, m.packet_id);
    else if (m.qos == 2)
        mqtt_encode_ack(reserve(c, 4), MQTT_PUBREC, m.packet_id);
    if (m.payload_len >= 16 && c->pairs) {
        uint64_t ts;
        uint32_t pub, seq;
        memcpy(&ts, m.payload, 8);
        memcpy(&pub, m.payload + 8, 4);
        memcpy(&seq, m.payload + 12, 4);
        if (ts <= now && W.t_meas && ts >= W.t_meas && ts < W.t_end)
            hist_record(&W.lat, now - ts);
        track_record(c->pairs, pub, seq, &W.st);
    }
    if (g_opt.expect && W.st.c[C_recv] == g_opt.expect) {
        W.st.t[T_expect_at] = now;
        if (W.sp->nsub == g_opt.sub_count)
            W.stop_requested = 1; /* every subscriber is here: stop now */
    }
}

static void pub_check_done(client_t *c)
{
    pub_t *p = c->pub;
    if (g_opt.limit && !p->done && p->sent >= g_opt.limit && p->inflight == 0) {
        p->done = 1;
        W.pubs_done++;
        if (W.pubs_done == W.npubs)
            W.st.t[T_pubs_done] = W.now;
    }
}

static void on_pub_ack(client_t *c, const mqtt_raw_t *r)
{
    uint16_t id;
    const char *why = NULL;
    uint8_t type = mqtt_raw_type(r);
    if (mqtt_decode_ack(r, &id, &why) != MQTT_OK) {
        proto_error(c, "bad acknowledgement", why);
        return;
    }
    if (type == MQTT_PUBREL) { /* we are the receiver of a QoS 2 message */
        mqtt_encode_ack(reserve(c, 4), MQTT_PUBCOMP, id);
        return;
    }
    pub_t *p = c->pub;
    pid_slot_t *s = p && p->ring ? &p->ring[id & p->mask] : NULL;
    if (!s || s->id != id || s->st == 0 || (type == MQTT_PUBACK && g_opt.qos != 1) ||
        (type != MQTT_PUBACK && g_opt.qos != 2)) {
        W.st.c[C_errors]++; /* an ack for nothing we sent: count, keep going */
        return;
    }
    if (type == MQTT_PUBREC) {
        s->st = 2;
        mqtt_encode_ack(reserve(c, 4), MQTT_PUBREL, id);
        return;
    }
    if ((type == MQTT_PUBCOMP && s->st != 2) || (type == MQTT_PUBACK && s->st != 1)) {
        W.st.c[C_errors]++;
        return;
    }
    s->id = 0;
    s->st = 0;
    p->inflight--;
    W.st.c[C_pub_inflight]--;
    W.st.c[C_pub_acked]++;
    pub_check_done(c);
    if (g_opt.rate <= 0 && !g_opt.e2e_window && W.phase == PH_RUN && !(c->flags & F_WANT_OUT) &&
        client_can_publish(c))
        set_active(c);
}

static void on_packet(client_t *c, const mqtt_raw_t *r)
{
    const char *why = NULL;
    switch (mqtt_raw_type(r)) {
    case MQTT_PUBLISH:
        on_publish(c, r);
        break;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        on_pub_ack(c, r);
        break;
    case MQTT_CONNACK:
        on_connack(c, r);
        break;
    case MQTT_SUBACK:
        on_suback(c, r);
        break;
    case MQTT_PINGRESP:
        if (mqtt_decode_empty(r, &why) != MQTT_OK)
            proto_error(c, "bad PINGRESP", why);
        else
            c->flags &= (uint8_t)~F_PING_OUT;
        break;
    default: {
        char msg[64];
        snprintf(msg, sizeof(msg), "unexpected %s from the broker",
                 mqtt_type_name(mqtt_raw_type(r)));
        proto_error(c, msg, NULL);
        break;
    }
    }
}

int client_mqtt_in(client_t *c, const uint8_t *buf, size_t n)
{
    size_t off = 0;
    while (off < n) {
        mqtt_raw_t pkt;
        size_t used = 0;
        const char *why = NULL;
        int rc =
            mqtt_parser_next(&c->ps, buf + off, n - off, &used, MQTT_MAX_REMAINING, &pkt, &why);
        off += used;
        if (rc == 0)
            break;
        if (rc < 0) {
            proto_error(c, "cannot frame the broker's stream", why);
            return -1;
        }
        int fd = c->fd;
        on_packet(c, &pkt);
        if (c->fd != fd || c->fd < 0)
            return -1; /* dropped while handling */
    }
    return 0;
}

/* n bytes of the broker's stream in W.rbuf: frame and handle them (through
 * the WebSocket framing with --ws).  Returns -1 when the connection was
 * dropped meanwhile. */
static int feed(client_t *c, size_t n)
{
    W.now = bench_now();
    W.st.c[C_bytes_in] += (uint64_t)n;
    if (c->state == CS_CLOSING)
        return 0; /* discard whatever still arrives */
    if (!c->ws)
        return client_mqtt_in(c, W.rbuf, n);
    char why[256];
    int fd = c->fd;
    int rc = ws_input(c, W.rbuf, n, why, sizeof(why));
    if (rc == WS_OK)
        return 0;
    if (rc == WS_GONE || c->fd != fd || c->fd < 0)
        return -1;
    if (rc == WS_PROTO)
        proto_error(c, why, NULL);
    else if (c->state == CS_CLOSING)
        client_close_now(c);
    else
        client_lost(c, why);
    return -1;
}

/* --tls: SSL_read until it wants more from the socket (a bounded number of
 * records per turn; level-triggered epoll brings the rest, and nothing is
 * left decrypted inside OpenSSL when we stop). */
static void client_read_tls(client_t *c)
{
    for (int i = 0; i < 16 || SSL_pending(c->ssl) > 0; i++) {
        ERR_clear_error();
        int n = SSL_read(c->ssl, W.rbuf, (int)W.rbuf_size);
        if (n > 0) {
            if (feed(c, (size_t)n) < 0)
                return;
            continue;
        }
        int err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
            return;
        if (c->state == CS_CLOSING) {
            client_close_now(c);
            return;
        }
        char msg[384];
        btls_reason(c->ssl, n, err, "TLS read", msg, sizeof(msg));
        client_lost(c, msg);
        return;
    }
}

static void client_read(client_t *c)
{
    if (c->ssl) {
        client_read_tls(c);
        return;
    }
    ssize_t n = recv(c->fd, W.rbuf, W.rbuf_size, 0);
    if (n > 0) {
        feed(c, (size_t)n);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (c->state == CS_CLOSING) {
        client_close_now(c);
        return;
    }
    char msg[128];
    if (n == 0 && c->state == CS_WS)
        snprintf(msg, sizeof(msg),
                 "connection closed by the broker during the WebSocket "
                 "upgrade (not a ws listener?)");
    else if (n == 0)
        snprintf(msg, sizeof(msg), "connection closed by the broker");
    else
        snprintf(msg, sizeof(msg), "read: %s", strerror(errno));
    client_lost(c, msg);
}

void client_on_event(client_t *c, uint32_t ev)
{
    if (c->fd < 0)
        return;
    if (c->state == CS_TCP) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            char msg[128];
            snprintf(msg, sizeof(msg), "connect: %s", strerror(err));
            client_lost(c, msg);
            return;
        }
        if (!(ev & (EPOLLOUT | EPOLLIN)))
            return;
        c->flags &= (uint8_t)~F_WANT_OUT;
        epoll_events(c, EPOLLIN | EPOLLRDHUP);
        tcp_connected(c);
        return;
    }
    if (c->state == CS_TLS) {
        btls_step(c);
        return;
    }
    if (ev & EPOLLOUT) {
        client_flush(c);
        if (c->fd < 0)
            return;
        if (!(c->flags & F_WANT_OUT) && g_opt.rate <= 0 && !g_opt.e2e_window && W.phase == PH_RUN &&
            c->pub && client_can_publish(c))
            set_active(c);
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))
        client_read(c);
}

void client_on_timer(client_t *c)
{
    switch (c->state) {
    case CS_TCP:
    case CS_TLS:
    case CS_WS:
    case CS_CONNACK:
    case CS_SUBACK:
        W.st.c[C_conn_timeout]++;
        if (c->state == CS_TLS)
            W.st.c[C_tls_fail]++;
        client_lost(c, c->state == CS_TCP       ? "TCP connect timed out"
                       : c->state == CS_TLS     ? "TLS handshake timed out"
                       : c->state == CS_WS      ? "no WebSocket upgrade response in time"
                       : c->state == CS_CONNACK ? "no CONNACK in time"
                                                : "no SUBACK in time");
        break;
    case CS_READY: {
        uint64_t ka = (uint64_t)g_opt.keepalive * NS_PER_S;
        if (!ka)
            break;
        if (c->flags & F_PING_OUT) {
            client_lost(c, "no PINGRESP within the keepalive");
            break;
        }
        if (W.now - c->t_last_tx >= ka) {
            mqtt_encode_pingreq(reserve(c, 2));
            c->flags |= F_PING_OUT;
            W.st.c[C_pings]++;
            timer_set(c, W.now + ka);
        } else {
            timer_set(c, c->t_last_tx + ka);
        }
        break;
    }
    case CS_BACKOFF:
        client_start(c);
        break;
    case CS_CLOSING:
        client_close_now(c);
        break;
    default:
        break;
    }
}

/* ---- publishing ----------------------------------------------------------------- */

int client_can_publish(const client_t *c)
{
    const pub_t *p = c->pub;
    if (!p || c->state != CS_READY || p->done)
        return 0;
    if (g_opt.limit && p->sent >= g_opt.limit)
        return 0;
    if (g_opt.qos && p->inflight >= g_opt.inflight)
        return 0;
    return c->olen - c->ooff < OUT_CAP;
}

static uint16_t pid_alloc(pub_t *p)
{
    for (;;) {
        uint16_t id = p->next_pid++;
        if (p->next_pid == 0)
            p->next_pid = 1;
        if (id == 0)
            continue;
        pid_slot_t *s = &p->ring[id & p->mask];
        if (s->st == 0) {
            s->id = id;
            s->st = 1;
            return id;
        }
    }
}

void client_publish(client_t *c)
{
    pub_t *p = c->pub;
    const char *topic = p->topic;
    uint16_t tlen = p->topic_len;
    char tbuf[1024];
    if (g_opt.topic.has_n) {
        char cid[128];
        uint64_t n = p->sent;
        client_id_for(c->role, c->idx, cid, sizeof(cid));
        int l = tmpl_expand(g_opt.topic.text, c->idx, cid, &n, tbuf, sizeof(tbuf));
        topic = tbuf;
        tlen = (uint16_t)(l > 0 ? l : 0);
    }
    uint8_t qos = g_opt.qos;
    uint16_t id = qos ? pid_alloc(p) : 0;
    uint8_t *out = reserve(c, mqtt_publish_size(tlen, qos, g_opt.size));
    if (g_opt.size >= 16) {
        uint64_t ts = W.now;
        uint32_t idx = c->idx;
        memcpy(W.payload, &ts, 8);
        memcpy(W.payload + 8, &idx, 4);
        memcpy(W.payload + 12, &p->seq, 4);
    }
    mqtt_encode_publish(out, (const uint8_t *)topic, tlen, qos, g_opt.retain, 0, id, W.payload,
                        g_opt.size);
    p->seq++;
    p->sent++;
    W.st.c[C_pub_sent]++;
    if (W.now >= W.t_meas && W.now < W.t_end)
        W.st.c[C_pub_sent_meas]++;
    if (qos) {
        p->inflight++;
        W.st.c[C_pub_inflight]++;
    }
    W.exp_deliv += p->fan;
    pub_check_done(c);
}

/* ---- the end ---------------------------------------------------------------------- */

void client_begin_close(client_t *c)
{
    if (c->state == CS_READY || c->state == CS_SUBACK) {
        mqtt_encode_disconnect(reserve(c, 2));
        set_state(c, CS_CLOSING);
        timer_cancel(c);
        return;
    }
    if (c->state != CS_CLOSING && c->state != CS_DEAD)
        client_close_now(c);
}

void client_close_now(client_t *c)
{
    close_socket(c);
    set_state(c, CS_DEAD);
}
