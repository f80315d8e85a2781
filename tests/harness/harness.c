/* harness.c -- the broker core in process (harness.h).
 *
 * Only the test's thread touches the harness and its worker; the store's
 * committer thread reaches the worker through its inbox, as in the broker.
 * The client side is plain blocking-free socket code and a byte builder of
 * its own, independent of the codec under test.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "mqtt_codec.h"
#include "persist.h"
#include "store.h"

/* ---- the server and its worker ---------------------------------------- */

static harness_t *harness_of(worker_t *w)
{
    return (harness_t *)((char *)w->srv - offsetof(harness_t, srv));
}

/* WM_COMMITTED, in the harness's place: kept, or passed on at once. */
static void on_committed(worker_t *w, inbox_item_t *it)
{
    harness_t *h = harness_of(w);
    int err = (int)(int64_t)it->sid;
    h->commits_seen++;
    if (!h->hold_commits && h->ncommits == 0) {
        persist_on_committed(w, err);
        return;
    }
    if (h->ncommits == HARNESS_MAX_COMMITS) {
        log_error("harness: more than %d commits held", HARNESS_MAX_COMMITS);
        abort();
    }
    h->commits[h->ncommits++] = err;
}

int harness_init(harness_t *h, void (*tweak)(conf_t *cf))
{
    memset(h, 0, sizeof(*h));
    conf_t cf;
    conf_defaults(&cf);
    cf.workers = 1;
    cf.listeners[0].port = 0; /* an ephemeral port on 127.0.0.1 */
    cf.sys_interval = 0;
    cf.api_enabled = 0;
    cf.persistence_enabled = 0; /* persist_open would open RocksDB: ours is memory */
    if (getenv("HARNESS_LOG") == NULL)
        cf.log_level = AN_LOG_ERROR;
    if (tweak)
        tweak(&cf);
    if (log_open(NULL, cf.log_level) < 0)
        return -1;
    if (server_init(&h->srv, &cf) < 0)
        return -1;
    h->w = &h->srv.workers[0];
    char err[256];
    store_opts_t o = {.backend = STORE_BACKEND_MEMORY, .sync = STORE_SYNC_ALWAYS};
    h->srv.store = store_open(&o, err, sizeof(err));
    if (h->srv.store == NULL) {
        log_error("harness: %s", err);
        return -1;
    }
    atomic_store(&h->srv.next_qseq, 1); /* as persist_load_sessions on an empty store */
    h->srv.inbox_kinds[WM_COMMITTED] = (worker_inbox_kind_t){.run = on_committed};
    event_freeze(&h->srv.events);
    h->hold_commits = 1;
    return 0;
}

void harness_free(harness_t *h)
{
    if (h->w) {
        inbox_vec_t v = {0};
        inbox_item_t it = {.kind = WM_STOP};
        inbox_vec_push(&v, &it);
        inbox_post(&h->w->inbox, &v);
        inbox_vec_free(&v);
        for (int i = 0; i < HARNESS_MAX_TURNS && worker_turn(h->w, HARNESS_TURN_MS) > 0; i++)
            ;
    }
    server_free(&h->srv);
    h->w = NULL;
}

int harness_turn(harness_t *h, int timeout_ms)
{
    return worker_turn(h->w, timeout_ms);
}

/* A wait is bounded by wall time (max_turns * HARNESS_TURN_MS), not by the
 * number of turns: turns that other events end early (timers, a client's
 * bytes) must not use the wait up while what is awaited comes from another
 * thread (the store's committer) that a busy machine runs late. */
int harness_turn_until(harness_t *h, int (*pred)(harness_t *h, void *ud), void *ud, int max_turns)
{
    uint64_t deadline = an_now_ms() + (uint64_t)max_turns * HARNESS_TURN_MS;
    while (!pred(h, ud)) {
        if (an_now_ms() >= deadline)
            return 0;
        if (harness_turn(h, HARNESS_TURN_MS) <= 0)
            return 0; /* stopped, or an error */
    }
    return 1;
}

static int commits_waiting(harness_t *h, void *ud)
{
    return h->ncommits >= *(size_t *)ud;
}

int harness_wait_commits(harness_t *h, size_t n)
{
    return harness_turn_until(h, commits_waiting, &n, HARNESS_MAX_TURNS);
}

static size_t release(harness_t *h, size_t n, int replace, int err)
{
    n = n < h->ncommits ? n : h->ncommits;
    for (size_t i = 0; i < n; i++)
        persist_on_committed(h->w, replace ? err : h->commits[i]);
    memmove(h->commits, h->commits + n, (h->ncommits - n) * sizeof(h->commits[0]));
    h->ncommits -= n;
    harness_turn(h, 0); /* the end of a turn: what was released is sent */
    return n;
}

size_t harness_commit_release(harness_t *h, size_t n)
{
    return release(h, n, 0, 0);
}

size_t harness_commit_release_err(harness_t *h, size_t n, int err)
{
    return release(h, n, 1, err);
}

int harness_settle(harness_t *h)
{
    uint64_t deadline = an_now_ms() + (uint64_t)HARNESS_MAX_TURNS * HARNESS_TURN_MS;
    for (;;) {
        if (h->ncommits)
            release(h, h->ncommits, 0, 0); /* may submit more (a QoS 2 send) */
        store_stats_t st;
        store_stats(h->srv.store, &st);
        if (h->ncommits == 0 && h->commits_seen == st.batches_submitted)
            return 1;
        if (an_now_ms() >= deadline || harness_turn(h, HARNESS_TURN_MS) <= 0)
            return 0; /* bounded by wall time, as harness_turn_until */
    }
}

/* ---- clients ---------------------------------------------------------- */

typedef struct {
    uint8_t d[4096];
    size_t n;
} hbuf_t;

static void put(hbuf_t *b, const void *p, size_t n)
{
    if (b->n + n > sizeof(b->d))
        abort(); /* a test's packet: never this large */
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

static void put_u8(hbuf_t *b, uint8_t v)
{
    put(b, &v, 1);
}

static void put_u16(hbuf_t *b, uint16_t v)
{
    put_u8(b, (uint8_t)(v >> 8));
    put_u8(b, (uint8_t)v);
}

static void put_str(hbuf_t *b, const char *s)
{
    put_u16(b, (uint16_t)strlen(s));
    put(b, s, strlen(s));
}

/* Fixed header hdr, the remaining length, then the body. */
static void send_packet(hclient_t *c, uint8_t hdr, const hbuf_t *body)
{
    hbuf_t p = {.n = 0};
    put_u8(&p, hdr);
    size_t len = body->n;
    do {
        uint8_t byte = len & 0x7f;
        len >>= 7;
        put_u8(&p, (uint8_t)(byte | (len ? 0x80 : 0)));
    } while (len);
    put(&p, body->d, body->n);
    hc_send(c, p.d, p.n);
}

hclient_t *hc_open(harness_t *h, uint8_t proto)
{
    hclient_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        abort();
    c->h = h;
    c->proto = proto;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(h->srv.listen_ports[0])};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* loopback: completes in the kernel's backlog, before the worker accepts */
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        log_error("harness: connect: %s", strerror(errno));
        abort();
    }
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    return c;
}

void hc_close(hclient_t *c)
{
    if (c == NULL)
        return;
    close(c->fd);
    free(c);
}

void hc_send(hclient_t *c, const void *p, size_t n)
{
    ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);
    if (r != (ssize_t)n) {
        log_error("harness: send: %s", r < 0 ? strerror(errno) : "short write");
        abort();
    }
}

int hc_connect(hclient_t *c, const char *client_id, int clean, uint32_t expiry, int *present)
{
    hbuf_t b = {.n = 0};
    int v5 = c->proto == MQTT_PROTO_V5;
    put_str(&b, "MQTT");
    put_u8(&b, v5 ? 5 : 4);
    put_u8(&b, clean ? 0x02 : 0);
    put_u16(&b, 60); /* keepalive */
    if (v5) {
        if (expiry) {
            put_u8(&b, 5);
            put_u8(&b, 0x11); /* Session Expiry Interval */
            put_u8(&b, (uint8_t)(expiry >> 24));
            put_u8(&b, (uint8_t)(expiry >> 16));
            put_u16(&b, (uint16_t)expiry);
        } else {
            put_u8(&b, 0);
        }
    }
    put_str(&b, client_id);
    send_packet(c, 0x10, &b);
    hpkt_t p;
    if (!hc_expect(c, &p) || p.type != MQTT_CONNACK || p.len < 2)
        return -1;
    if (present)
        *present = p.body[0] & 1;
    return p.body[1];
}

int hc_subscribe(hclient_t *c, uint16_t pid, const char *filter, uint8_t qos)
{
    hbuf_t b = {.n = 0};
    put_u16(&b, pid);
    if (c->proto == MQTT_PROTO_V5)
        put_u8(&b, 0);
    put_str(&b, filter);
    put_u8(&b, qos);
    send_packet(c, 0x82, &b);
    hpkt_t p;
    if (!hc_expect(c, &p) || p.type != MQTT_SUBACK || p.len < 3)
        return -1;
    size_t off = 2;
    if (c->proto == MQTT_PROTO_V5)
        off += 1u + p.body[2]; /* properties: a short length in a test */
    return off < p.len ? p.body[off] : -1;
}

void hc_publish(hclient_t *c, const char *topic, const char *payload, uint8_t qos, uint16_t pid)
{
    hbuf_t b = {.n = 0};
    put_str(&b, topic);
    if (qos)
        put_u16(&b, pid);
    if (c->proto == MQTT_PROTO_V5)
        put_u8(&b, 0);
    put(&b, payload, strlen(payload));
    send_packet(c, (uint8_t)(0x30 | qos << 1), &b);
}

void hc_ack(hclient_t *c, uint8_t type, uint16_t pid)
{
    hbuf_t b = {.n = 0};
    put_u16(&b, pid);
    send_packet(c, (uint8_t)(type << 4 | (type == MQTT_PUBREL ? 2 : 0)), &b);
}

/* Reads everything the socket holds now (sets eof when it is closed). */
static void fill(hclient_t *c)
{
    while (!c->eof && c->in_len < sizeof(c->in)) {
        ssize_t r = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, MSG_DONTWAIT);
        if (r > 0)
            c->in_len += (size_t)r;
        else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            c->eof = 1; /* closed (or reset: the same to a test) */
        else if (errno != EINTR)
            break;
    }
}

/* What the socket holds now, then one whole packet if there is. */
int hc_poll(hclient_t *c, hpkt_t *out)
{
    fill(c);
    size_t off = 1, len = 0;
    for (int shift = 0;; shift += 7) {
        if (off >= c->in_len || shift > 21)
            return 0;
        uint8_t byte = c->in[off++];
        len |= (size_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80))
            break;
    }
    if (c->in_len - off < len || len > sizeof(out->body))
        return 0;
    out->type = c->in[0] >> 4;
    out->flags = c->in[0] & 0x0f;
    out->len = (uint32_t)len;
    memcpy(out->body, c->in + off, len);
    c->in_len -= off + len;
    memmove(c->in, c->in + off + len, c->in_len);
    return 1;
}

/* Both waits are bounded by wall time, as harness_turn_until. */
int hc_expect(hclient_t *c, hpkt_t *out)
{
    uint64_t deadline = an_now_ms() + (uint64_t)HARNESS_MAX_TURNS * HARNESS_TURN_MS;
    for (;;) {
        if (hc_poll(c, out))
            return 1;
        if (c->eof || an_now_ms() >= deadline || harness_turn(c->h, HARNESS_TURN_MS) <= 0)
            return hc_poll(c, out);
    }
}

int hc_wait_eof(hclient_t *c)
{
    uint64_t deadline = an_now_ms() + (uint64_t)HARNESS_MAX_TURNS * HARNESS_TURN_MS;
    for (;;) {
        fill(c);
        if (c->eof || an_now_ms() >= deadline || harness_turn(c->h, HARNESS_TURN_MS) <= 0)
            break;
    }
    fill(c);
    return c->eof;
}

int hc_quiet(hclient_t *c, int turns, hpkt_t *out)
{
    for (int i = 0; i < turns; i++)
        harness_turn(c->h, 0);
    return hc_poll(c, out);
}

/* ---- what the broker sent ---------------------------------------------- */

int hpkt_publish(const hclient_t *c, const hpkt_t *p, hpub_t *out)
{
    if (p->type != MQTT_PUBLISH || p->len < 2)
        return -1;
    memset(out, 0, sizeof(*out));
    out->qos = (p->flags >> 1) & 3;
    out->dup = (p->flags >> 3) & 1;
    out->retain = p->flags & 1;
    size_t off = 0;
    out->topic_len = (uint16_t)(p->body[0] << 8 | p->body[1]);
    off = 2u + out->topic_len;
    out->topic = p->body + 2;
    if (out->qos) {
        if (off + 2 > p->len)
            return -1;
        out->pid = (uint16_t)(p->body[off] << 8 | p->body[off + 1]);
        off += 2;
    }
    if (c->proto == MQTT_PROTO_V5) {
        size_t plen = 0;
        for (int shift = 0;; shift += 7) {
            if (off >= p->len || shift > 21)
                return -1;
            uint8_t byte = p->body[off++];
            plen |= (size_t)(byte & 0x7f) << shift;
            if (!(byte & 0x80))
                break;
        }
        off += plen;
    }
    if (off > p->len)
        return -1;
    out->payload = p->body + off;
    out->payload_len = (uint32_t)(p->len - off);
    return 0;
}

int hpkt_ack(const hpkt_t *p, uint8_t type, uint16_t *pid, uint8_t *reason)
{
    if (p->type != type || p->len < 2)
        return -1;
    *pid = (uint16_t)(p->body[0] << 8 | p->body[1]);
    *reason = p->len > 2 ? p->body[2] : 0;
    return 0;
}

int hpkt_disconnect(const hpkt_t *p, uint8_t *reason)
{
    if (p->type != MQTT_DISCONNECT)
        return -1;
    *reason = p->len > 0 ? p->body[0] : 0;
    return 0;
}
