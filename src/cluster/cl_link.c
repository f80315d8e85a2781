/* cl_link.c -- node links and forwarding (cl_int.h; docs/cluster.md
 * "Node links", "QoS across nodes").
 *
 * The link thread owns everything here but the per-worker queues: the
 * listener, every link socket (cl_conn_t), and per peer node a cl_peer_t
 * (its current link, the redial timer, the QoS 1/2 messages not yet
 * acknowledged, the sequence numbers, the routes it announced: cl_route.c).
 *
 * Links.  Between two members the node whose name sorts first dials; the
 * other accepts.  Both send HELLO at once; each answers the peer's HELLO
 * with AUTH = HMAC-SHA256(secret, peer nonce | own name) and checks the
 * peer's AUTH the same way; the link is up when both checks passed.  A
 * refused link is logged with the peer and the reason.  A dead link is
 * redialled (100 ms doubling to 5 s) while the peer is a member.  Every
 * second each side sends a PING when it sent nothing else; a link silent
 * for CL_DEAD_MS is closed.
 *
 * Forwarding.  The router calls cl_deliver (the ROUTE_OWNER_NODE row) on
 * the publisher's worker, once per message and node; a message that came
 * from another node (hops > 0) is never forwarded again.  The worker
 * appends (message reference, node, QoS) to its own batch (no lock) and
 * hands the whole batch to the link thread at the end of its turn
 * (module turn_end: one cl_post per turn).  Retained publishes (and
 * clears) go to every member through the same batch, marked "all".  The
 * link thread encodes each message into the peer's link output and writes
 * once per batch.  QoS 0 is dropped (counted) while the link is down or its
 * output is over CL_OUT_MAX; QoS 1/2 get the peer's next sequence number
 * and stay (a reference) until the peer acknowledges them cumulatively;
 * after a reconnect the unacknowledged ones are sent again, and the
 * receiver drops what it has seen (sequence numbers per peer process: the
 * HELLO's incarnation says when the sender restarted).
 *
 * TLS (cluster.tls; docs/cluster.md "TLS on links").  Every link, dialled
 * or accepted, is a tls transport (net_tls.h) over its socket, built from
 * one context (cl_links_t.tls_ctx, mutual: each side presents its
 * certificate and verifies the peer's against the CA).  An accepted link's
 * first byte must open a TLS handshake record (else: a plain peer, refused
 * by name); the handshake then runs on the link's watcher (WANT_READ /
 * WANT_WRITE), HELLO waiting in the output until it is over, and HELLO/AUTH
 * run inside TLS as before.  tls_verify_name is checked at HELLO, when the
 * peer has said which node it is.  Reads and writes go through the
 * transport's table (one indirect call per read or write of a batch, not
 * per message); a plain link keeps calling recv/send.  A TLS record read
 * only in part leaves plaintext in the SSL that the socket no longer
 * announces: conn_read and on_resume look at SSL_pending.
 *
 * A peer's process gone (docs/cluster.md "A dead node's process").  When
 * a link that was up goes down while its peer is a member, either side
 * probes the peer's link address every CL_PROBE_GAP_MS (CL_PROBE_TRIES at
 * most): a connect that sends nothing.  A live process answers it with its
 * HELLO: the probe ends.  Refused (ECONNREFUSED: the host answers, nothing
 * listens), or accepted and then reset or closed without a byte (a process
 * dying with connections in its listener's backlog): CL_PROBE_REFUSED in a
 * row say the process is gone, and with cluster.revoke_refused its lease
 * is revoked (cl_member_dead) instead of waiting lease_ttl for it to
 * expire.  Anything else (no answer by the next probe: a frozen process,
 * whose kernel still accepts; no route) proves nothing and starts the
 * count again: the lease expires as before.
 *
 * Buffers.  Every link is read into the link thread's one buffer
 * (cl_links_t.rbuf, CL_READ_LEN a read); what is left of a frame read in
 * part is kept in the link's own `in` (copied back in front of the next
 * read; a frame longer than a read grows there until it is whole), so an
 * idle link holds no input buffer.  An output buffer over CL_OUT_KEEP is
 * freed once drained, and any over CL_BUF_IDLE once the link has been
 * quiet for a tick (conn_on_timer): a route storm or a big message does
 * not leave its buffers behind on each of 50 links.  buffer_bytes and
 * buffer_peak in the API show them.
 *
 * Receiving.  A message read from a link becomes a msg_t (origin_node =
 * the peer, hops = 1) and an inbox item WM_CLUSTER for worker
 * (source worker % workers), so one worker's stream stays in order; that
 * worker routes it with router_publish(w, m, NULL) to its local
 * subscribers (no client accounting, no ACL of a publisher: the
 * publishing node applied them).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "cl_link_int.h"
#include "log.h"
#include "module.h"
#include "net_tls.h"
#include "transport.h"
#include "persist.h"
#include "retain.h"
#include "router.h"

/* ---- links: sockets ---- */

static void conn_io(ev_loop_t *loop, ev_watcher_t *ev, uint32_t events);
static void conn_on_timer(tw_timer_t *t);
static void probe_start(cl_t *cl, cl_peer_t *p);
static void probe_end(cl_t *cl, cl_peer_t *p);
static void peer_redial_later(cl_t *cl, cl_peer_t *p);
static int conn_flush(cl_t *cl, cl_conn_t *c);
static int conn_read(cl_t *cl, cl_conn_t *c);

static const char *peer_name(cl_t *cl, const cl_conn_t *c)
{
    return c->idx > 0 ? cl->nodes[c->idx].name : c->addr;
}

static cl_conn_t *conn_new(cl_t *cl, int fd, int dialer, const char *addr)
{
    cl_conn_t *c = an_calloc(1, sizeof(*c));
    c->cl = cl;
    c->fd = fd;
    c->dialer = (uint8_t)dialer;
    c->started = cl->now;
    c->last_rx = cl->now;
    c->last_tx = cl->now;
    snprintf(c->addr, sizeof(c->addr), "%s", addr);
    RAND_bytes(c->nonce, sizeof(c->nonce));
    if (cl->links->tls_ctx != NULL) {
        /* a failed SSL_new is refused by conn_tls_step */
        c->ssl = dialer ? tls_new_client(cl->links->tls_ctx, fd) : tls_new(cl->links->tls_ctx, fd);
        if (c->ssl != NULL)
            c->tp = tls_transport_new(c->ssl); /* owns the SSL from now on */
        c->tls_hs = dialer ? CL_TLS_SHAKE : CL_TLS_PEEK;
        c->hs_want = dialer ? EV_WRITE : EV_READ;
    }
    ev_watcher_init(&c->ev, fd, conn_io);
    tw_timer_init(&c->timer, conn_on_timer);
    tw_add(&cl->tw, &c->timer, cl->now + CL_TICK_MS);
    c->next = cl->links->conns;
    if (c->next)
        c->next->pprev = &c->next;
    c->pprev = &cl->links->conns;
    cl->links->conns = c;
    return c;
}

/* The link's buffers for the API (buffer_bytes, buffer_peak). */
static void conn_buf_stat(cl_t *cl, const cl_conn_t *c)
{
    if (c->idx <= 0 || !c->up)
        return;
    cl_link_stats_t *st = &cl->lstats[c->idx];
    uint64_t b = c->in.cap + c->out.cap;
    CL_STAT_SET(st->buf_bytes, b);
    if (b > CL_STAT_GET(st->buf_peak))
        CL_STAT_SET(st->buf_peak, b);
}

/* Close c (logged when it was some peer's link), free it. */
static void conn_close(cl_t *cl, cl_conn_t *c, const char *why)
{
    cl_links_t *L = cl->links;
    if (ev_watch_active(&c->ev))
        ev_watch_stop(&cl->loop, &c->ev);
    if (c->tp != NULL) {
        if (c->tls_hs == CL_TLS_NONE)
            c->tp->ops->shutdown(c->tp, c->fd); /* close_notify, best effort */
        tp_free(c->tp);
    }
    close(c->fd);
    tw_del(&cl->tw, &c->timer);
    *c->pprev = c->next;
    if (c->next)
        c->next->pprev = c->pprev;
    if (c->idx > 0 && L->peers[c->idx].conn == c) {
        cl_peer_t *p = &L->peers[c->idx];
        p->conn = NULL;
        CL_STAT_SET(cl->lstats[c->idx].state, CL_LINK_DOWN);
        CL_STAT_SET(cl->lstats[c->idx].out_bytes, 0);
        CL_STAT_SET(cl->lstats[c->idx].buf_bytes, 0);
        if (c->up && atomic_load(&cl->stopping))
            log_info("cluster: link to %s closed: this node stops", cl->nodes[c->idx].name);
        else if (c->up)
            log_warn("cluster: link to %s down: %s", cl->nodes[c->idx].name, why ? why : "closed");
        else if (why != NULL) /* redialled with backoff: not a line per attempt */
            log_limited(30000, AN_LOG_INFO, "cluster: link to %s not made: %s",
                        cl->nodes[c->idx].name, why);
        if (c->dialer)
            peer_redial_later(cl, p);
        if (c->up) {
            cl_route_recompute(cl); /* nobody waits for a node that is gone */
            cl_repl_link(cl, c->idx, 0);
            probe_start(cl, p);
        }
    } else if (why != NULL && c->idx <= 0 && c->heard) { /* a probe says nothing */
        log_info("cluster: link from %s closed: %s", c->addr, why);
    }
    cl_buf_free(&c->in);
    cl_buf_free(&c->out);
    free(c);
}

/* Write what c has; EV_WRITE while some is left.  -1: c was closed. */
static int conn_flush(cl_t *cl, cl_conn_t *c)
{
    while (c->out_off < c->out.len && c->tls_hs == CL_TLS_NONE) {
        ssize_t n;
        if (c->tp != NULL) { /* TLS: 0 while OpenSSL waits for the socket */
            n = c->tp->ops->write(c->tp, c->fd, c->out.p + c->out_off, c->out.len - c->out_off, 0);
            if (n == 0)
                break;
        } else {
            n = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
            if (c->idx > 0)
                CL_STAT_ADD(cl->lstats[c->idx].sends, 1);
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0) {
            conn_close(cl, c, n < 0 ? strerror(errno) : "closed");
            return -1;
        }
        c->out_off += (size_t)n;
        c->last_tx = cl->now;
        if (c->idx > 0)
            CL_STAT_ADD(cl->lstats[c->idx].bytes_out, (uint64_t)n);
    }
    if (c->out_off == c->out.len) {
        c->out.len = c->out_off = 0;
        if (c->out.cap > CL_OUT_KEEP) /* a burst is over: give it back */
            cl_buf_free(&c->out);
    } else if (c->out_off > c->out.cap / 2) {
        memmove(c->out.p, c->out.p + c->out_off, c->out.len - c->out_off);
        c->out.len -= c->out_off;
        c->out_off = 0;
    }
    uint32_t want = (c->paused ? 0 : EV_READ) | (c->out_off < c->out.len ? EV_WRITE : 0);
    if (c->connecting)
        want = EV_WRITE;
    else if (c->tls_hs != CL_TLS_NONE)
        want = c->hs_want;
    if (!ev_watch_active(&c->ev))
        ev_watch_start(&cl->loop, &c->ev, want);
    else if ((c->ev.events & (EV_READ | EV_WRITE)) != want)
        ev_watch_modify(&cl->loop, &c->ev, want);
    if (c->idx > 0 && c->up)
        CL_STAT_SET(cl->lstats[c->idx].out_bytes, c->out.len - c->out_off);
    conn_buf_stat(cl, c);
    return 0;
}

static size_t conn_pending(const cl_conn_t *c)
{
    return c->out.len - c->out_off;
}

/* "host:port" -> a socket address (numeric or resolved). */
static int addr_resolve(const char *addr, int passive, struct sockaddr_storage *ss, socklen_t *sl)
{
    char host[CL_ADDR_MAX];
    snprintf(host, sizeof(host), "%s", addr);
    char *colon = strrchr(host, ':');
    if (colon == NULL)
        return -1;
    *colon = '\0';
    const char *port = colon + 1;
    char *h = host;
    if (h[0] == '[') {
        h++;
        char *e = strchr(h, ']');
        if (e)
            *e = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    if (passive)
        hints.ai_flags = AI_PASSIVE;
    struct addrinfo *res = NULL;
    if (getaddrinfo(h[0] ? h : NULL, port, &hints, &res) != 0 || res == NULL)
        return -1;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sl = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static void sock_tune(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int sz = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
}

static void send_hello(cl_t *cl, cl_conn_t *c)
{
    cl_hello_t h = {.version = CL_WIRE_VERSION,
                    .cluster = cl->conf->name,
                    .cluster_len = (uint8_t)strlen(cl->conf->name),
                    .node = cl->conf->node,
                    .node_len = (uint8_t)strlen(cl->conf->node),
                    .incarnation = cl->links->incarnation};
    memcpy(h.nonce, c->nonce, CL_NONCE_LEN);
    cl_enc_hello(&c->out, &h);
}

/* Dial peer p (we sort first). */
static void peer_dial(cl_t *cl, cl_peer_t *p)
{
    int idx = (int)(p - cl->links->peers);
    cl_node_t *n = &cl->nodes[idx];
    struct sockaddr_storage ss;
    socklen_t sl;
    if (addr_resolve(n->link_addr, 0, &ss, &sl) < 0) {
        log_limited(10000, AN_LOG_WARN, "cluster: cannot resolve %s's link address %s", n->name,
                    n->link_addr);
        peer_redial_later(cl, p);
        return;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        peer_redial_later(cl, p);
        return;
    }
    sock_tune(fd);
    int rc = connect(fd, (struct sockaddr *)&ss, sl);
    if (rc < 0 && errno != EINPROGRESS) {
        close(fd);
        peer_redial_later(cl, p);
        return;
    }
    cl_conn_t *c = conn_new(cl, fd, 1, n->link_addr);
    c->idx = idx;
    c->connecting = rc < 0;
    p->conn = c;
    CL_STAT_SET(cl->lstats[idx].state, CL_LINK_HANDSHAKE);
    send_hello(cl, c);
    conn_flush(cl, c);
}

static void on_redial(tw_timer_t *t)
{
    cl_peer_t *p = container_of(t, cl_peer_t, redial);
    cl_t *cl = p->cl;
    int idx = (int)(p - cl->links->peers);
    if (cl->nodes[idx].member && p->conn == NULL)
        peer_dial(cl, p);
}

static void peer_redial_later(cl_t *cl, cl_peer_t *p)
{
    int idx = (int)(p - cl->links->peers);
    if (!cl->nodes[idx].member || atomic_load(&cl->stopping) || tw_pending(&p->redial))
        return;
    p->backoff_ms = p->backoff_ms ? AN_MIN(p->backoff_ms * 2, CL_BACKOFF_MAX_MS) : CL_BACKOFF_MS;
    tw_add(&cl->tw, &p->redial, cl->now + p->backoff_ms);
}

/* ---- the probe: is a peer's process gone? ---- */

static void probe_close(cl_t *cl, cl_peer_t *p)
{
    if (p->probe_fd < 0)
        return;
    if (ev_watch_active(&p->probe_ev))
        ev_watch_stop(&cl->loop, &p->probe_ev);
    close(p->probe_fd);
    p->probe_fd = -1;
    p->probe_open = 0;
}

static void probe_end(cl_t *cl, cl_peer_t *p)
{
    probe_close(cl, p);
    tw_del(&cl->tw, &p->probe);
}

/* A probe's outcome: err 0 the peer's HELLO came, ECONNREFUSED nothing
 * listens, else it proves nothing. */
static void probe_result(cl_t *cl, cl_peer_t *p, int err)
{
    int idx = (int)(p - cl->links->peers);
    probe_close(cl, p);
    if (err == 0) { /* something listens there: not gone */
        tw_del(&cl->tw, &p->probe);
        return;
    }
    if (err != ECONNREFUSED) {
        p->probe_refused = 0;
        return;
    }
    if (++p->probe_refused < CL_PROBE_REFUSED)
        return;
    tw_del(&cl->tw, &p->probe);
    log_warn("cluster: %s's link address %s refused %u connections in a row after its link went "
             "down: its process is gone",
             cl->nodes[idx].name, cl->nodes[idx].link_addr, (unsigned)p->probe_refused);
    cl_member_dead(cl, cl->nodes[idx].name);
}

static void on_probe_io(ev_loop_t *loop, ev_watcher_t *ev, uint32_t events)
{
    (void)loop;
    (void)events;
    cl_peer_t *p = container_of(ev, cl_peer_t, probe_ev);
    cl_t *cl = p->cl;
    if (p->probe_open) { /* accepted: its HELLO, or a reset */
        uint8_t b[64];
        ssize_t n = recv(p->probe_fd, b, sizeof(b), 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        probe_result(cl, p, n > 0 ? 0 : ECONNREFUSED);
        return;
    }
    int err = 0;
    socklen_t el = sizeof(err);
    if (getsockopt(p->probe_fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        err = errno;
    if (err != 0) {
        probe_result(cl, p, err);
        return;
    }
    p->probe_open = 1;
    ev_watch_modify(&cl->loop, &p->probe_ev, EV_READ);
}

static void on_probe(tw_timer_t *t)
{
    cl_peer_t *p = container_of(t, cl_peer_t, probe);
    cl_t *cl = p->cl;
    int idx = (int)(p - cl->links->peers);
    cl_node_t *n = &cl->nodes[idx];
    if (p->probe_fd >= 0) { /* the last one is still unanswered: proves nothing */
        probe_close(cl, p);
        p->probe_refused = 0;
    }
    if (!n->member || (p->conn != NULL && p->conn->up) || atomic_load(&cl->stopping))
        return;
    if (++p->probe_tries < CL_PROBE_TRIES)
        tw_add(&cl->tw, &p->probe, cl->now + CL_PROBE_GAP_MS);
    struct sockaddr_storage ss;
    socklen_t sl;
    if (addr_resolve(n->link_addr, 0, &ss, &sl) < 0)
        return;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    p->probe_fd = fd;
    int rc = connect(fd, (struct sockaddr *)&ss, sl);
    if (rc < 0 && errno != EINPROGRESS) {
        probe_result(cl, p, errno);
        return;
    }
    p->probe_open = rc == 0;
    ev_watcher_init(&p->probe_ev, fd, on_probe_io);
    if (ev_watch_start(&cl->loop, &p->probe_ev, rc == 0 ? EV_READ : EV_WRITE) < 0)
        probe_close(cl, p);
}

/* p's link (up until now) went down while p is a member. */
static void probe_start(cl_t *cl, cl_peer_t *p)
{
    int idx = (int)(p - cl->links->peers);
    if (!cl->conf->revoke_refused || cl->conf->etcd[0] == '\0' || !cl->nodes[idx].member ||
        atomic_load(&cl->stopping))
        return;
    probe_end(cl, p);
    p->probe_refused = p->probe_tries = 0;
    tw_add(&cl->tw, &p->probe, cl->now + CL_PROBE_FIRST_MS);
}

static int we_dial(cl_t *cl, int idx)
{
    return strcmp(cl->conf->node, cl->nodes[idx].name) < 0;
}

static void on_accept(ev_loop_t *loop, ev_watcher_t *ev, uint32_t events)
{
    (void)loop;
    (void)events;
    cl_links_t *L = container_of(ev, cl_links_t, listen_ev);
    cl_t *cl = L->cl;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(ev->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        char host[INET6_ADDRSTRLEN] = "?", addr[CL_ADDR_MAX];
        uint16_t port = 0;
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
            port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
            port = ntohs(a->sin6_port);
        }
        snprintf(addr, sizeof(addr), "%s:%u", host, port);
        sock_tune(fd);
        cl_conn_t *c = conn_new(cl, fd, 0, addr);
        c->idx = -1;
        send_hello(cl, c);
        conn_flush(cl, c);
    }
}

/* ---- the handshake ---- */

static void mac_of(cl_t *cl, const uint8_t nonce[CL_NONCE_LEN], const char *name, size_t nl,
                   uint8_t out[CL_MAC_LEN])
{
    uint8_t data[CL_NONCE_LEN + CL_NAME_MAX];
    memcpy(data, nonce, CL_NONCE_LEN);
    memcpy(data + CL_NONCE_LEN, name, nl);
    unsigned int ml = CL_MAC_LEN;
    const char *key = cl->conf->secret;
    HMAC(EVP_sha256(), key, (int)strlen(key), data, CL_NONCE_LEN + nl, out, &ml);
}

/* Refuse c: logged (rate-limited) with the peer and the reason. */
static int refuse(cl_t *cl, cl_conn_t *c, const char *who, const char *why)
{
    log_limited(5000, AN_LOG_WARN, "cluster: link %s %s refused: %s", c->dialer ? "to" : "from",
                who, why);
    if (c->idx > 0)
        CL_STAT_ADD(cl->lstats[c->idx].refused, 1);
    else
        CL_STAT_ADD(cl->refused_unnamed, 1);
    /* what this side still owes the peer (its own AUTH, answered in the
     * same read), best effort: the peer then sees the wrong secret too
     * and says so in its log, instead of a link merely closed (over TLS
     * only once the handshake is over: never plaintext on a TLS link) */
    if (!c->connecting && c->out_off < c->out.len && c->tp == NULL)
        (void)send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off,
                   MSG_NOSIGNAL | MSG_DONTWAIT);
    else if (!c->connecting && c->out_off < c->out.len && c->tls_hs == CL_TLS_NONE)
        (void)c->tp->ops->write(c->tp, c->fd, c->out.p + c->out_off, c->out.len - c->out_off,
                                TP_WRITE_LAST);
    conn_close(cl, c, NULL);
    return -1;
}

/* The index of a known node named (s, n), or -1. */
static int node_find(cl_t *cl, const char *s, size_t n)
{
    for (int i = 1; i < CL_MAX_NODES; i++)
        if (cl->nodes[i].used && strlen(cl->nodes[i].name) == n &&
            memcmp(cl->nodes[i].name, s, n) == 0)
            return i;
    return -1;
}

static int on_hello(cl_t *cl, cl_conn_t *c, const uint8_t *body, uint32_t len)
{
    cl_hello_t h;
    char who[CL_NAME_MAX + CL_ADDR_MAX + 8];
    if (c->got_hello || cl_dec_hello(body, len, &h) < 0)
        return refuse(cl, c, peer_name(cl, c), "malformed HELLO");
    snprintf(who, sizeof(who), "%.*s (%s)", (int)h.node_len, h.node, c->addr);
    if (h.version != CL_WIRE_VERSION) {
        char why[96];
        snprintf(why, sizeof(why), "protocol version %u, this node speaks %u", h.version,
                 CL_WIRE_VERSION);
        return refuse(cl, c, who, why);
    }
    if (h.cluster_len != strlen(cl->conf->name) ||
        memcmp(h.cluster, cl->conf->name, h.cluster_len) != 0)
        return refuse(cl, c, who, "another cluster name");
    int idx = node_find(cl, h.node, h.node_len);
    if (idx < 0 || !cl->nodes[idx].member)
        return refuse(cl, c, who, "not a member");
    if (c->dialer && idx != c->idx)
        return refuse(cl, c, who, "another node answered at that address");
    if (!c->dialer) {
        if (we_dial(cl, idx))
            return refuse(cl, c, who, "this node dials that one, not the reverse");
        c->idx = idx;
    }
    const char *vn = cl->conf->tls_verify_name;
    if (c->ssl != NULL && vn[0] != '\0') {
        const char *want = strcmp(vn, "node") == 0 ? cl->nodes[idx].name : vn;
        if (!tls_peer_has_name(c->ssl, want)) {
            char why[CL_NAME_MAX + 64];
            snprintf(why, sizeof(why), "TLS: the peer's certificate does not name \"%s\"", want);
            return refuse(cl, c, who, why);
        }
    }
    c->got_hello = 1;
    c->peer_inc = h.incarnation;
    memcpy(c->peer_nonce, h.nonce, CL_NONCE_LEN);
    uint8_t mac[CL_MAC_LEN];
    mac_of(cl, c->peer_nonce, cl->conf->node, strlen(cl->conf->node), mac);
    cl_enc_auth(&c->out, mac);
    return 0;
}

static int on_auth(cl_t *cl, cl_conn_t *c, const uint8_t *body, uint32_t len)
{
    const uint8_t *mac;
    if (!c->got_hello || c->up || cl_dec_auth(body, len, &mac) < 0)
        return refuse(cl, c, peer_name(cl, c), "AUTH out of order or malformed");
    uint8_t want[CL_MAC_LEN];
    const char *name = cl->nodes[c->idx].name;
    mac_of(cl, c->nonce, name, strlen(name), want);
    if (CRYPTO_memcmp(want, mac, CL_MAC_LEN) != 0) {
        char who[CL_NAME_MAX + CL_ADDR_MAX + 8];
        snprintf(who, sizeof(who), "%s (%s)", name, c->addr);
        return refuse(cl, c, who, "wrong secret (AUTH does not match)");
    }
    cl_peer_t *p = &cl->links->peers[c->idx];
    if (p->conn != NULL && p->conn != c)
        conn_close(cl, p->conn, "replaced by a new link");
    p->conn = c;
    c->up = 1;
    CL_STAT_SET(cl->lstats[c->idx].buf_peak, 0);
    p->backoff_ms = 0;
    probe_end(cl, p); /* back: its process is there */
    cl_link_up(cl, p, c);
    return 0;
}

/* Advance c's TLS handshake (CL_TLS_PEEK: an accepted link's first byte
 * must open a TLS handshake record; CL_TLS_SHAKE: OpenSSL's).  -1: c was
 * closed (refused and logged). */
static int conn_tls_step(cl_t *cl, cl_conn_t *c)
{
    if (c->tp == NULL)
        return refuse(cl, c, peer_name(cl, c), "TLS: cannot create a session");
    if (c->tls_hs == CL_TLS_PEEK) {
        uint8_t b;
        ssize_t n = recv(c->fd, &b, 1, MSG_PEEK);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            c->hs_want = EV_READ;
            return conn_flush(cl, c);
        }
        if (n <= 0) {
            conn_close(cl, c, n < 0 ? strerror(errno) : "closed by the peer");
            return -1;
        }
        if (b != 0x16) /* a TLS record of type handshake */
            return refuse(cl, c, c->addr,
                          "the peer does not speak TLS (cluster.tls is true on this node)");
        c->tls_hs = CL_TLS_SHAKE;
    }
    char why[256] = "";
    int rc = c->tp->ops->handshake(c->tp, c->fd, why, sizeof(why));
    if (rc == TP_WANT_READ || rc == TP_WANT_WRITE) {
        c->hs_want = rc == TP_WANT_READ ? EV_READ : EV_WRITE;
        return conn_flush(cl, c);
    }
    if (rc != TP_OK) {
        char r[400];
        const char *hint = strstr(why, "alert") ? " (the peer refused this node's certificate)"
                           : strstr(why, "wrong version number")
                               ? " (the peer does not speak TLS: is cluster.tls false there?)"
                               : "";
        snprintf(r, sizeof(r), "TLS handshake: %s%s", why, hint);
        return refuse(cl, c, peer_name(cl, c), r);
    }
    c->tls_hs = CL_TLS_NONE; /* HELLO goes now; what the peer sent is read next */
    return 0;
}

/* ---- frames ---- */

/* The store's queue records carry publish ids (server_t.msg_ids_store)
 * while every member reads them: each one's process said so on its link
 * (CL_F_MSG_IDS, kept for that process), so an older member adopting this
 * node's store or keeping its replica never meets a record it cannot
 * read.  Link thread: on a member change, a new process of a peer, its
 * CL_F_MSG_IDS. */
static void ids_gate(cl_t *cl)
{
    int all = 1;
    for (int i = 1; i < CL_MAX_NODES && all; i++)
        all = !cl->nodes[i].member || CL_STAT_GET(cl->lstats[i].msg_ids) != 0;
    atomic_store_explicit(&cl->srv->msg_ids_store, (uint8_t)all, memory_order_relaxed);
}

static int on_frame(cl_t *cl, cl_conn_t *c, uint8_t type, const uint8_t *body, uint32_t len)
{
    if (type == CL_F_HELLO)
        return on_hello(cl, c, body, len);
    if (type == CL_F_AUTH)
        return on_auth(cl, c, body, len);
    if (!c->up)
        return refuse(cl, c, peer_name(cl, c), "a frame before the handshake");
    cl_peer_t *p = &cl->links->peers[c->idx];
    int rc = 0;
    if (c->route_wait) /* our route sync waited for this: bits or strings? */
        cl_bits_first_frame(cl, c, type, body, len);
    switch (type) {
    case CL_F_PING:
        break;
    case CL_F_MSG:
        rc = cl_recv_msg(cl, p, body, len);
        break;
    case CL_F_MSG_SHARED:
        rc = cl_recv_msg_shared(cl, p, body, len);
        break;
    case CL_F_ACK: {
        uint64_t seq;
        rc = cl_dec_ack(body, len, &seq);
        if (rc == 0)
            cl_peer_acked(cl, p, seq);
        break;
    }
    case CL_F_ROUTE_ADD:
    case CL_F_ROUTE_DEL:
    case CL_F_SYNC_BEGIN:
    case CL_F_SYNC_END:
        rc = cl_route_recv(cl, p, type, body, len);
        break;
    case CL_F_RETAINED:
        rc = cl_retained_recv(cl, p, body, len);
        break;
    case CL_F_RETAINED_CLEAR:
        rc = cl_tomb_recv(cl, p, body, len);
        break;
    case CL_F_ROUTE_MARK: {
        /* the routes before it are in the trie already (cl_route_recv
         * applies each as it comes): answer on this link (flushed by
         * conn_io after the read) */
        uint64_t v;
        rc = cl_dec_ack(body, len, &v);
        if (rc == 0)
            cl_enc_u64(&c->out, CL_F_ROUTE_ACKED, v);
        break;
    }
    case CL_F_ROUTE_ACKED: {
        uint64_t v;
        rc = cl_dec_ack(body, len, &v);
        if (rc == 0)
            cl_route_acked(cl, p, v);
        break;
    }
    case CL_F_ROUTE_RESYNC: /* the peer rebuilds its filter of our exact routes */
        cl_route_sync(cl, c);
        break;
    case CL_F_ROUTE_BITS_WANT: /* optional (cl_bits.c): off, as a node without them */
        if (cl->links->bits)
            rc = cl_bits_want(cl, c, body, len);
        break;
    case CL_F_MSG_IDS: /* optional: what we forward to it carries publish ids from now */
        c->ids_out = 1;
        CL_STAT_SET(cl->lstats[c->idx].msg_ids, 1);
        ids_gate(cl);
        break;
    case CL_F_ROUTE_BITS:
    case CL_F_ROUTE_BITS_DELTA:
        if (cl->links->bits)
            rc = cl_bits_recv(cl, p, type, body, len);
        break;
    case CL_F_ADOPT_ASK:
    case CL_F_ADOPT_MSG:
    case CL_F_ADOPT_END:
    case CL_F_ADOPT_DONE:
    case CL_F_ADOPT_OVER:
    case CL_F_ADOPT_IDS:
        rc = cl_hand_recv(cl, p, c, type, body, len);
        break;
    case CL_F_OWN_TAKE:
    case CL_F_OWN_GIVEN:
    case CL_F_MOVE_KEEP:
        rc = cl_owner_recv(cl, c->idx, type, body, len);
        break;
    case CL_F_MOVE_ASK:
    case CL_F_MOVE_KEPT:
    case CL_F_MOVE_LATE:
    case CL_F_MOVE_DROP:
        rc = cl_move_recv(cl, c->idx, type, body, len);
        break;
    case CL_F_REPL_DATA:
    case CL_F_REPL_ACK:
    case CL_F_REPL_DROP:
        rc = cl_repl_recv(cl, c, type, body, len);
        break;
    default:
        break; /* a newer peer's frame: ignored */
    }
    if (rc < 0) {
        conn_close(cl, c, "malformed frame");
        return -1;
    }
    return 0;
}

/* Back-pressure from the workers: is an inbox over `high`? */
static int inboxes_over(cl_t *cl, size_t high)
{
    for (uint32_t i = 0; i < cl->srv->nworkers; i++)
        if (inbox_waiting(&cl->srv->workers[i].inbox) > high)
            return 1;
    return 0;
}

static int inboxes_full(cl_t *cl)
{
    return inboxes_over(cl, CL_INBOX_HIGH);
}

/* A worker found a subscriber behind with a message of c's peer (slow[]). */
static int peer_slow(cl_t *cl, cl_conn_t *c)
{
    _Atomic uint8_t *f = &cl->links->slow[c->idx];
    return atomic_load_explicit(f, memory_order_relaxed) && atomic_exchange(f, 0);
}

static void on_resume(tw_timer_t *t)
{
    cl_links_t *L = container_of(t, cl_links_t, resume);
    cl_t *cl = L->cl;
    if (inboxes_full(cl)) {
        tw_add(&cl->tw, &L->resume, cl->now + CL_RESUME_MS);
        return;
    }
    /* a link paused for a slow subscriber waits until what it brought is
     * nearly all routed (what is in the inboxes was acknowledged already) */
    int low = !inboxes_over(cl, CL_INBOX_SLOW);
    cl_conn_t *c = L->conns;
    while (c != NULL) {
        cl_conn_t *next = c->next;
        cl_peer_t *p = c->up ? &L->peers[c->idx] : NULL;
        if (p && low && cl_lack_value(p) > p->acked) { /* deferred by conn_read */
            cl_recv_ack(cl, p, c);
            if (!(c->ev.events & EV_WRITE) && cl_conn_flush(cl, c) < 0) {
                c = next;
                continue;
            }
        } else if (p && cl_lack_value(p) > p->acked && !tw_pending(&L->resume)) {
            tw_add(&cl->tw, &L->resume, cl->now + CL_RESUME_MS);
        }
        if (c->paused == 2 && !low) {
            if (!tw_pending(&L->resume))
                tw_add(&cl->tw, &L->resume, cl->now + CL_RESUME_MS);
        } else if (c->paused) {
            c->paused = 0; /* reading again: the data waiting wakes the loop */
            if (conn_flush(cl, c) < 0 ||
                (c->ssl != NULL && SSL_pending(c->ssl) > 0 && conn_read(cl, c) < 0)) {
                c = next; /* ... but not what a TLS record left in the SSL */
                continue;
            }
        }
        c = next;
    }
}

/* After a read into b (the thread's rbuf, or c->in for a long frame) and
 * its first `off` bytes handled: the rest, a frame read in part, is kept
 * at the start of c->in. */
static void keep_rest(cl_conn_t *c, cl_buf_t *b, size_t off)
{
    size_t rest = b->len - off;
    if (b == &c->in) {
        if (off > 0 && rest > 0)
            memmove(c->in.p, c->in.p + off, rest);
        c->in.len = rest;
        return;
    }
    b->len = 0;
    if (rest == 0)
        return;
    cl_buf_reserve(&c->in, rest);
    memcpy(c->in.p, b->p + off, rest);
    c->in.len = rest;
}

/* Read and handle what arrived; -1 when c was closed. */
static int conn_read(cl_t *cl, cl_conn_t *c)
{
    int slow = c->up && peer_slow(cl, c);
    if (c->up && (slow || inboxes_full(cl))) {
        /* the workers are behind, or a subscriber here: the peer's messages
         * wait in TCP, unacknowledged, so its output bound and its
         * publishers (their PUBACKs wait, cl_ack.c) feel it */
        c->paused = slow ? 2 : 1;
        if (slow)
            c->slow_until = cl->now + CL_SLOW_MS;
        if (!tw_pending(&cl->links->resume))
            tw_add(&cl->tw, &cl->links->resume, cl->now + CL_RESUME_MS);
        return 0;
    }
    int tls_end = 0; /* TLS: the peer closed or failed after what was read */
    tp_read_t tr;
    size_t full = CL_READ_LEN; /* a read this long: more may wait */
    cl_buf_t *rb = &cl->links->rbuf;
    for (int rounds = 0; rounds < 16; rounds++) {
        /* read into the thread's one buffer (rbuf), after what c kept of a
         * frame read in part; only a frame longer than a read keeps
         * growing in c->in */
        cl_buf_t *b = rb;
        if (c->in.len > CL_READ_LEN) {
            b = &c->in;
        } else {
            rb->len = 0;
            if (c->in.len > 0) {
                cl_buf_reserve(rb, c->in.len + CL_READ_LEN);
                memcpy(rb->p, c->in.p, c->in.len);
                rb->len = c->in.len;
                c->in.len = 0;
            }
        }
        cl_buf_reserve(b, CL_READ_LEN);
        ssize_t n;
        if (c->tp != NULL) {
            tr.buf = b->p + b->len;
            tr.cap = full = b->cap - b->len;
            tls_end = c->tp->ops->read(c->tp, c->fd, &tr) != TP_OK;
            n = (ssize_t)tr.len;
            if (n == 0 && !tls_end) {
                keep_rest(c, b, 0);
                break;
            }
        } else {
            n = recv(c->fd, b->p + b->len, b->cap - b->len, 0);
            if (c->idx > 0)
                CL_STAT_ADD(cl->lstats[c->idx].recvs, 1);
            if (n < 0 && errno == EINTR) {
                keep_rest(c, b, 0);
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                keep_rest(c, b, 0);
                break;
            }
        }
        if (n <= 0) {
            cl_recv_flush(cl);
            if (tls_end && !c->up) {
                char why[300];
                snprintf(why, sizeof(why), "TLS: %s", tr.why);
                return refuse(cl, c, peer_name(cl, c), why);
            }
            conn_close(cl, c, tls_end ? tr.why : n < 0 ? strerror(errno) : "closed by the peer");
            return -1;
        }
        b->len += (size_t)n;
        c->heard = 1;
        c->last_rx = cl->now;
        if (c->idx > 0)
            CL_STAT_ADD(cl->lstats[c->idx].bytes_in, (uint64_t)n);
        if (c->tp == NULL && !c->got_hello && b->p[0] == 0x16) { /* frames start 0x00 */
            cl_recv_flush(cl);
            return refuse(cl, c, peer_name(cl, c),
                          "the peer speaks TLS (cluster.tls is false on this node)");
        }
        size_t off = 0;
        for (;;) {
            uint8_t type;
            const uint8_t *body;
            uint32_t blen;
            long fl = cl_frame_next(b->p + off, b->len - off, c->up ? CL_FRAME_MAX : 4096, &type,
                                    &body, &blen);
            if (fl == 0)
                break;
            if (fl < 0) {
                cl_recv_flush(cl);
                conn_close(cl, c, "invalid frame length");
                return -1;
            }
            if (on_frame(cl, c, type, body, blen) < 0) {
                cl_recv_flush(cl);
                return -1; /* closed */
            }
            off += (size_t)fl;
        }
        keep_rest(c, b, off);
        if (tls_end) {
            cl_recv_flush(cl);
            conn_close(cl, c, tr.why);
            return -1;
        }
        if ((size_t)n < full)
            break;
    }
    if (c->ssl != NULL && SSL_pending(c->ssl) > 0) {
        /* plaintext left in the SSL: the socket will not say so */
        c->paused = 1;
        if (!tw_pending(&cl->links->resume))
            tw_add(&cl->tw, &cl->links->resume, cl->now + CL_RESUME_MS);
    }
    if (c->in.len == 0 && c->in.cap > CL_BUF_IDLE) /* a long frame is over */
        cl_buf_free(&c->in);
    conn_buf_stat(cl, c);
    cl_recv_flush(cl);
    if (c->up) {
        if (cl->now < c->slow_until && inboxes_over(cl, CL_INBOX_SLOW)) {
            /* a subscriber here is behind: what was read is acknowledged
             * once the workers routed nearly all of it (on_resume), so the
             * publishers' windows bound what waits here */
            if (!tw_pending(&cl->links->resume))
                tw_add(&cl->tw, &cl->links->resume, cl->now + CL_RESUME_MS);
        } else {
            cl_recv_ack(cl, &cl->links->peers[c->idx], c);
        }
    }
    return 0;
}

static void conn_io(ev_loop_t *loop, ev_watcher_t *ev, uint32_t events)
{
    (void)loop;
    cl_conn_t *c = container_of(ev, cl_conn_t, ev);
    cl_t *cl = c->cl;
    if (c->connecting) {
        int err = 0;
        socklen_t el = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err != 0) {
            conn_close(cl, c, strerror(err));
            return;
        }
        c->connecting = 0;
        if (c->tls_hs == CL_TLS_NONE && conn_flush(cl, c) < 0)
            return;
    }
    if (c->tls_hs != CL_TLS_NONE) {
        if (conn_tls_step(cl, c) < 0 || c->tls_hs != CL_TLS_NONE)
            return;                /* closed, or waiting for the socket */
        if (conn_flush(cl, c) < 0) /* HELLO */
            return;
        events |= EV_READ; /* the peer's HELLO may be there already */
    }
    if ((events & (EV_READ | EV_ERROR | EV_HUP | EV_RDHUP)) && conn_read(cl, c) < 0)
        return; /* closed */
    if (conn_flush(cl, c) < 0)
        return;
    /* room in the output: the QoS 1/2 messages that waited for it */
    cl_peer_t *p = c->up ? &cl->links->peers[c->idx] : NULL;
    if (p && p->sent < p->len && conn_pending(c) < CL_OUT_MAX) {
        cl_peer_pump(cl, p);
        conn_flush(cl, c);
    }
}

static void conn_on_timer(tw_timer_t *t)
{
    cl_conn_t *c = container_of(t, cl_conn_t, timer);
    cl_t *cl = c->cl;
    if (!c->up && cl->now - c->started > CL_HANDSHAKE_MS) {
        conn_close(cl, c, c->connecting ? "connect timed out" : "handshake timed out");
        return;
    }
    if (c->up && cl->now - c->last_rx > CL_DEAD_MS) {
        conn_close(cl, c, "silent for too long");
        return;
    }
    tw_add(&cl->tw, &c->timer, cl->now + CL_TICK_MS);
    if (c->up && cl->now - c->last_tx >= CL_TICK_MS && conn_pending(c) == 0) {
        /* quiet for a tick: what a burst grew goes back (a PING needs little) */
        if (c->out.len == 0 && c->out.cap > CL_BUF_IDLE)
            cl_buf_free(&c->out);
        cl_enc_empty(&c->out, CL_F_PING);
        if (conn_flush(cl, c) < 0)
            return;
    }
    if (c->in.len == 0 && c->in.cap > 0 && cl->now - c->last_rx >= CL_TICK_MS)
        cl_buf_free(&c->in);
    conn_buf_stat(cl, c);
}

/* ---- the module's interface (cl_int.h) ---- */

static int listen_open(cl_t *cl)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    if (addr_resolve(cl->conf->listen, 1, &ss, &sl) < 0) {
        log_error("cluster: cannot resolve cluster.listen %s", cl->conf->listen);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 128) < 0) {
        log_error("cluster: cannot listen on %s for node links: %s", cl->conf->listen,
                  strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    uint16_t port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                             : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (cl->conf->advertise[0]) {
        snprintf(cl->link_addr, sizeof(cl->link_addr), "%s", cl->conf->advertise);
    } else {
        char host[CL_ADDR_MAX];
        snprintf(host, sizeof(host), "%s", cl->conf->listen);
        *strrchr(host, ':') = '\0';
        snprintf(cl->link_addr, sizeof(cl->link_addr), "%.100s:%u", host[0] ? host : "127.0.0.1",
                 port);
    }
    cl->links->listen_fd = fd;
    ev_watcher_init(&cl->links->listen_ev, fd, on_accept);
    return 0;
}

int cl_links_init(cl_t *cl)
{
    cl_links_t *L = an_calloc(1, sizeof(*L));
    cl->links = L;
    L->cl = cl;
    L->listen_fd = -1;
    L->nworkers = cl->srv->nworkers;
    L->wq = an_calloc(L->nworkers ? L->nworkers : 1, sizeof(*L->wq));
    L->outv = an_calloc(L->nworkers ? L->nworkers : 1, sizeof(*L->outv));
    L->ackv = an_calloc(L->nworkers ? L->nworkers : 1, sizeof(*L->ackv));
    RAND_bytes((uint8_t *)&L->incarnation, sizeof(L->incarnation));
    for (int i = 0; i < CL_MAX_NODES; i++) {
        L->peers[i].cl = cl;
        L->peers[i].probe_fd = -1;
        tw_timer_init(&L->peers[i].redial, on_redial);
        tw_timer_init(&L->peers[i].probe, on_probe);
    }
    tw_timer_init(&L->resume, on_resume);
    tw_timer_init(&L->mark_timer, cl_route_marks_timer);
    tw_timer_init(&L->trim_timer, cl_route_trim_timer);
    if (cl->conf->tls) {
        char err[512];
        const char *bad;
        L->tls_ctx = tls_link_ctx_new(cl->conf->tls_cert_file, cl->conf->tls_key_file,
                                      cl->conf->tls_ca_file, &bad, err, sizeof(err));
        if (L->tls_ctx == NULL) {
            log_error("%s", err);
            return -1;
        }
    }
    if (listen_open(cl) < 0)
        return -1;
    if (cl->conf->secret[0] == '\0')
        log_warn("cluster: no cluster.secret: any process that knows the cluster's name may "
                 "link to this node");
    cl_fwd_register(cl);
    cl_route_init(cl); /* the local routes: from now on, posted to the link thread */
    cl_tomb_init(cl);
    return 0;
}

int cl_links_start(cl_t *cl)
{
    cl_links_t *L = cl->links;
    if (ev_watch_start(&cl->loop, &L->listen_ev, EV_READ) < 0) {
        log_error("cluster: cannot watch the link listener: %s", strerror(errno));
        return -1;
    }
    return 0;
}

void cl_links_member_changed(cl_t *cl, int idx)
{
    cl_links_t *L = cl->links;
    if (L == NULL)
        return; /* cl_free runs what was posted after the thread ended */
    ids_gate(cl);
    cl_peer_t *p = &L->peers[idx];
    if (cl->nodes[idx].member) {
        /* back: what was kept for its adopter goes to it again; its new
         * process's route sync replaces the routes kept */
        p->orphan = p->routes_kept = 0;
        if (!we_dial(cl, idx) || (p->conn != NULL && p->conn->up))
            return; /* the peer dials, or the link works: kept */
        /* joined, or its address changed: a dial in progress (maybe to the
         * old address) or waiting for its backoff starts again now */
        if (p->conn != NULL)
            conn_close(cl, p->conn, NULL);
        tw_del(&cl->tw, &p->redial);
        p->backoff_ms = 0;
        peer_dial(cl, p);
        return;
    }
    tw_del(&cl->tw, &p->redial);
    probe_end(cl, p);
    if (p->conn)
        conn_close(cl, p->conn, "the node left the cluster");
    cl_hand_in_free(p);
    cl_fwd_reshare(cl, p);      /* picked again once its shared routes are gone */
    if (!cl_hand_keep(cl, p)) { /* its adopter may want its routes' copies (cl_hand.c) */
        cl_route_drop_peer(cl, p);
        cl_peer_drop_pending(cl, p);
    }
    if (!atomic_load(&cl->stopping))
        cl_recv_flush(cl);
}

void cl_links_stop(cl_t *cl)
{
    cl_links_t *L = cl->links;
    if (L == NULL)
        return;
    while (L->conns)
        conn_close(cl, L->conns, NULL);
    for (int i = 0; i < CL_MAX_NODES; i++) {
        tw_del(&cl->tw, &L->peers[i].redial);
        probe_end(cl, &L->peers[i]);
    }
    tw_del(&cl->tw, &L->resume);
    tw_del(&cl->tw, &L->mark_timer);
    tw_del(&cl->tw, &L->trim_timer);
    if (L->listen_fd >= 0 && ev_watch_active(&L->listen_ev))
        ev_watch_stop(&cl->loop, &L->listen_ev);
}

void cl_links_free(cl_t *cl)
{
    cl_links_t *L = cl->links;
    if (L == NULL)
        return;
    atomic_store(&cl->stopping, 1); /* nothing is posted to the workers any more */
    cl_route_free(cl);
    cl_tomb_free(cl);
    while (L->conns) { /* the thread never ran */
        cl_conn_t *c = L->conns;
        L->conns = c->next;
        tp_free(c->tp);
        close(c->fd);
        cl_buf_free(&c->in);
        cl_buf_free(&c->out);
        free(c);
    }
    for (int i = 0; i < CL_MAX_NODES; i++) {
        cl_peer_drop_pending(cl, &L->peers[i]);
        cl_hand_in_free(&L->peers[i]);
        free(L->peers[i].lk);
    }
    cl_fwd_free(cl);
    cl_buf_free(&L->rbuf);
    if (L->listen_fd >= 0)
        close(L->listen_fd);
    tls_ctx_free(L->tls_ctx);
    free(L->wq);
    free(L->ackv);
    for (uint32_t i = 0; i < L->nworkers; i++)
        inbox_vec_free(&L->outv[i]);
    free(L->outv);
    free(L);
    cl->links = NULL;
}

/* Called by the parts once a link is up: what each side sends first. */
void cl_link_up(cl_t *cl, cl_peer_t *p, cl_conn_t *c)
{
    int idx = c->idx;
    CL_STAT_SET(cl->lstats[idx].state, CL_LINK_UP);
    p->hand_done = 0; /* alive: what it had not acknowledged goes to it again */
    CL_STAT_ADD(cl->lstats[idx].ups, 1);
    /* ROUTE_BITS_WANT first (the peer's first frame tells it whether we
     * take bits), and our route sync (now or after the peer's first frame) */
    cl_bits_link_up(cl, c);
    /* then: we read publish ids (an older peer ignores the frame) */
    cl_enc_empty(&c->out, CL_F_MSG_IDS);
    if (p->in_inc != c->peer_inc) { /* a new process: its sequence starts again */
        p->in_inc = c->peer_inc;
        p->in_seen = 0;
        cl_lack_reset(p);
        CL_STAT_SET(cl->lstats[idx].msg_ids, 0); /* its version: its CL_F_MSG_IDS says */
        ids_gate(cl);
    }
    /* what arrived before the break (and, with a store, is stored): not to
     * be sent again */
    p->acked = cl_lack_value(p);
    if (p->acked)
        cl_enc_ack(&c->out, p->acked);
    CL_STAT_SET(cl->lstats[idx].tls, c->ssl != NULL);
    if (c->ssl != NULL) {
        char d[sizeof(cl->lstats[idx].cipher)];
        tls_describe(c->ssl, d, sizeof(d));
        pthread_mutex_lock(&cl->snap_mu); /* read under it by the API */
        memcpy(cl->lstats[idx].cipher, d, sizeof(d));
        pthread_mutex_unlock(&cl->snap_mu);
        log_info("cluster: link to %s up (%s, %s)", cl->nodes[idx].name, c->addr, d);
    } else {
        log_info("cluster: link to %s up (%s)", cl->nodes[idx].name, c->addr);
    }
    cl_retained_sync(cl, c);
    cl_tomb_sync(cl, c);
    p->sent = p->head; /* the unacknowledged ones again */
    cl_peer_pump(cl, p);
    conn_flush(cl, c);
    cl_repl_link(cl, idx, 1);
}

int cl_conn_flush(cl_t *cl, cl_conn_t *c)
{
    return conn_flush(cl, c);
}
