/* lora.c -- the Semtech UDP packet forwarder gateway (section lora).
 *
 * What it owns: one UDP socket (lora.bind, lora.port, bound in init before
 * any thread runs; port 0 takes a free
 * port, logged as "lora: listening on udp ADDR:PORT" and shown by GET
 * /api/v1/lora/gateways), the module's own thread reading it, a table of
 * the gateways seen (open addressing by EUI, at most lora.max_gateways,
 * never shrunk) and the module's counters.  Off (enabled: false, the
 * default) nothing is set up: no thread, no socket, no consumer, no cost.
 *
 * Why a thread of its own and not a worker's loop: one socket serves every
 * gateway, so its datagrams cannot be spread over the workers the way
 * connections are; the JSON work (parse, rewrite, dump) of a busy gateway
 * would otherwise sit in one worker's turns beside its MQTT clients; and
 * the presence timer belongs with the socket.  The thread never routes:
 * what a datagram gives is posted as msg_t references (WM_LORA) to one
 * worker chosen by the gateway's EUI, which calls router_publish, so a
 * gateway's messages keep their order.  PUSH_ACK / PULL_ACK are sent at
 * once, before the JSON is read.
 *
 * Threads.  The lora thread reads the socket, parses, answers, updates
 * the table and publishes (it is the only thread that changes a gateway's
 * presence, so status messages leave in order).  Downlinks come through an
 * internal consumer (router.h) of topic_down with {gateway} as '+': its
 * callback runs on the worker that routed the message, reads the gateway's
 * last PULL_DATA address and protocol version under `mu` and sends the
 * PULL_RESP itself (sendto on a UDP socket is atomic and never blocks
 * here: MSG_DONTWAIT, a full buffer counts the downlink as dropped).  The
 * table is under `mu`; counters are atomics (the API's metrics read them).
 * Cost: the consumer's callback runs only for messages on topic_down; the
 * MQTT hot path pays nothing.
 */
#include "lora.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "lora_pkt.h"
#include "mqtt_codec.h"
#include "msg.h"
#include "router.h"
#include "server.h"
#include "util.h"

#define LORA_DGRAM_MAX 65536

typedef struct {
    uint64_t eui;
    struct sockaddr_in pull; /* the last PULL_DATA's address */
    uint64_t last_seen;      /* monotonic ms */
    uint64_t last_seen_wall; /* ms since the epoch */
    uint8_t used, has_pull, version, online;
} lora_gw_t;

typedef struct {
    server_t *srv;
    const lora_conf_t *c;
    int fd, wake_fd;
    pthread_t th;
    int th_started;
    _Atomic int stopped;
    uint16_t bound_port;
    /* the gateways: under mu */
    pthread_mutex_t mu;
    lora_gw_t *gws;
    uint32_t cap, ngws; /* cap: a power of two, >= 2 x max_gateways */
    /* publishing (the lora thread) */
    const msg_origin_t *origin;
    inbox_vec_t *vecs; /* per worker, posted by flush */
    uint8_t *buf;      /* one datagram */
    /* downlinks (workers) */
    router_consumer_t *cons;
    size_t down_pre, down_suf; /* topic_down around "{gateway}" */
    uint64_t token_key[2];
    _Atomic uint64_t token_seq;
    /* counters */
    _Atomic uint64_t dgrams[LORA_NTYPES], malformed[LORA_E_JSON + 1], uplinks, stats, acks;
    _Atomic uint64_t tx_ack_errors, downlinks, down_unknown, down_bad, down_send;
    _Atomic uint32_t online;
} lora_t;

/* ---- publishing (WM_LORA: a message to route, on the gateway's worker) ---- */

static void run_item(worker_t *w, inbox_item_t *it)
{
    msg_t *m = it->ptr;
    size_t n = router_publish(w, m, NULL);
    if (n == ROUTER_NO_RETAIN || n == ROUTER_REFUSED)
        log_limited(1000, AN_LOG_WARN, "lora: the message on '%.*s' was refused (%s)",
                    (int)m->topic_len, (const char *)msg_topic(m),
                    n == ROUTER_NO_RETAIN ? "limits.max_retained" : "a full queue");
    msg_unref(&m);
}

static void drop_item(inbox_item_t *it)
{
    msg_t *m = it->ptr;
    msg_unref(&m);
}

/* Queue topic(tpl) with payload for the gateway's worker (the lora
 * thread; posted by flush, once per batch of datagrams: one wake-up of a
 * worker for many messages). */
static void post(lora_t *h, const char *tpl, uint64_t eui, int64_t devaddr, const char *payload,
                 size_t len, int retain)
{
    char hex[17], topic[LORA_TOPIC_MAX + 32];
    lora_eui_hex(eui, hex);
    size_t tl = lora_topic(tpl, hex, devaddr, topic, sizeof(topic));
    if (tl == 0 || len > UINT32_MAX)
        return;
    msg_t *m = msg_new((const uint8_t *)topic, (uint16_t)tl, (const uint8_t *)payload,
                       (uint32_t)len, (uint8_t)h->c->qos, (uint8_t)retain);
    msg_set_origin(m, h->origin);
    uint32_t to = (uint32_t)(an_hash64(eui) % h->srv->nworkers);
    inbox_item_t it = {.kind = WM_LORA, .ptr = m};
    inbox_vec_push(&h->vecs[to], &it);
}

static void flush(lora_t *h)
{
    for (uint32_t i = 0; i < h->srv->nworkers; i++)
        if (h->vecs[i].len)
            inbox_post(&h->srv->workers[i].inbox, &h->vecs[i]);
}

/* ---- the gateways ----------------------------------------------------------- */

/* The gateway's slot, added when absent (NULL: the table is full); mu. */
static lora_gw_t *gw_find(lora_t *h, uint64_t eui, int add)
{
    uint32_t mask = h->cap - 1;
    for (uint32_t i = (uint32_t)an_hash64(eui) & mask, k = 0; k < h->cap; i = (i + 1) & mask, k++) {
        lora_gw_t *g = &h->gws[i];
        if (g->used && g->eui == eui)
            return g;
        if (!g->used) {
            if (!add || h->ngws >= h->c->max_gateways)
                return NULL;
            g->used = 1;
            g->eui = eui;
            h->ngws++;
            return g;
        }
    }
    return NULL;
}

static void addr_text(const struct sockaddr_in *a, char *out, size_t size)
{
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
    snprintf(out, size, "%s:%u", ip, ntohs(a->sin_port));
}

/* The retained presence of g (mu held; the lora thread). */
static void post_status(lora_t *h, const lora_gw_t *g)
{
    char hex[17], addr[64];
    lora_eui_hex(g->eui, hex);
    json_t *o = json_pack("{s:s, s:b, s:I}", "gateway", hex, "online", (int)g->online,
                          "last_seen_ms", (json_int_t)g->last_seen_wall);
    if (g->has_pull) {
        addr_text(&g->pull, addr, sizeof(addr));
        json_object_set_new(o, "address", json_string(addr));
    } else {
        json_object_set_new(o, "address", json_null());
    }
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (text)
        post(h, h->c->topic_status, g->eui, -1, text, strlen(text), 1);
    free(text);
}

/* A datagram from the gateway (the lora thread): its presence, and its
 * address when pull. */
static void gw_seen(lora_t *h, const lora_hdr_t *hd, const struct sockaddr_in *from, int pull)
{
    pthread_mutex_lock(&h->mu);
    lora_gw_t *g = gw_find(h, hd->eui, 1);
    if (g == NULL) {
        pthread_mutex_unlock(&h->mu);
        log_limited(5000, AN_LOG_WARN,
                    "lora: more than lora.max_gateways (%u) gateways: not tracked",
                    h->c->max_gateways);
        return;
    }
    int changed = !g->online;
    g->last_seen = an_now_ms();
    g->last_seen_wall = an_wall_ms();
    g->version = hd->version;
    if (pull) {
        changed |= !g->has_pull || g->pull.sin_addr.s_addr != from->sin_addr.s_addr ||
                   g->pull.sin_port != from->sin_port;
        g->pull = *from;
        g->has_pull = 1;
    }
    if (!g->online) {
        g->online = 1;
        atomic_fetch_add(&h->online, 1);
        char hex[17], addr[64];
        lora_eui_hex(g->eui, hex);
        addr_text(from, addr, sizeof(addr));
        log_info("lora: gateway %s is online (protocol v%u, from %s)", hex, g->version, addr);
    }
    if (changed)
        post_status(h, g);
    pthread_mutex_unlock(&h->mu);
}

/* Gateways silent for 3 x keepalive go offline (the lora thread). */
static void presence_check(lora_t *h)
{
    uint64_t now = an_now_ms(), limit = 3ull * h->c->keepalive_ms;
    pthread_mutex_lock(&h->mu);
    for (uint32_t i = 0; i < h->cap; i++) {
        lora_gw_t *g = &h->gws[i];
        if (g->used && g->online && now - g->last_seen > limit) {
            g->online = 0;
            atomic_fetch_sub(&h->online, 1);
            char hex[17];
            lora_eui_hex(g->eui, hex);
            log_info("lora: gateway %s is offline (silent for %llu ms)", hex,
                     (unsigned long long)(now - g->last_seen));
            post_status(h, g);
        }
    }
    pthread_mutex_unlock(&h->mu);
    flush(h);
}

/* ---- the datagrams (the lora thread) ---------------------------------------- */

static void on_out(int kind, int has_devaddr, uint32_t devaddr, const char *payload, size_t len,
                   void *ud)
{
    void **a = ud;
    lora_t *h = a[0];
    uint64_t eui = *(const uint64_t *)a[1];
    if (kind == LORA_OUT_STAT) {
        atomic_fetch_add(&h->stats, 1);
        post(h, h->c->topic_stats, eui, -1, payload, len, 0);
        return;
    }
    atomic_fetch_add(&h->uplinks, 1);
    post(h, h->c->topic_up, eui, -1, payload, len, 0);
    if (has_devaddr && h->c->topic_devaddr[0])
        post(h, h->c->topic_devaddr, eui, (int64_t)devaddr, payload, len, 0);
}

static void malformed(lora_t *h, const struct sockaddr_in *from, int err, size_t len)
{
    atomic_fetch_add(&h->malformed[err], 1);
    char peer[64];
    addr_text(from, peer, sizeof(peer));
    log_limited_peer(1000, AN_LOG_WARN, peer, "lora: a malformed datagram (%s, %zu bytes) from %s",
                     lora_err_name(err), len, peer);
}

static void reply(lora_t *h, const lora_hdr_t *hd, uint8_t type, const struct sockaddr_in *to)
{
    uint8_t ack[4];
    lora_ack_encode(ack, hd->version, hd->token, type);
    if (sendto(h->fd, ack, sizeof(ack), MSG_DONTWAIT, (const struct sockaddr *)to, sizeof(*to)) < 0)
        log_limited(1000, AN_LOG_WARN, "lora: cannot answer a %s: %s", lora_type_name(hd->type),
                    strerror(errno));
}

static void on_datagram(lora_t *h, const uint8_t *b, size_t n, const struct sockaddr_in *from)
{
    lora_hdr_t hd;
    int e = lora_hdr_parse(b, n, &hd);
    if (e != LORA_OK) {
        malformed(h, from, e, n);
        return;
    }
    atomic_fetch_add(&h->dgrams[hd.type], 1);
    uint64_t wall = an_wall_ms();
    switch (hd.type) {
    case LORA_PUSH_DATA: {
        reply(h, &hd, LORA_PUSH_ACK, from);
        gw_seen(h, &hd, from, 0);
        void *a[2] = {h, &hd.eui};
        uint32_t skipped = 0;
        if (lora_push_parse(hd.json, hd.json_len, hd.eui, wall, on_out, a, &skipped) < 0 || skipped)
            malformed(h, from, LORA_E_JSON, n);
        break;
    }
    case LORA_PULL_DATA:
        reply(h, &hd, LORA_PULL_ACK, from);
        gw_seen(h, &hd, from, 1);
        break;
    case LORA_TX_ACK: {
        gw_seen(h, &hd, from, 0);
        int is_err = 0;
        char *j = lora_txack_json(hd.json, hd.json_len, hd.eui, hd.token, wall, &is_err);
        if (j == NULL) {
            malformed(h, from, LORA_E_JSON, n);
            break;
        }
        if (is_err)
            atomic_fetch_add(&h->tx_ack_errors, 1);
        atomic_fetch_add(&h->acks, 1);
        post(h, h->c->topic_down_ack, hd.eui, -1, j, strlen(j), 0);
        free(j);
        break;
    }
    }
}

static void *lora_thread(void *arg)
{
    lora_t *h = arg;
    uint32_t tick = h->c->keepalive_ms / 4;
    tick = tick < 50 ? 50 : tick > 1000 ? 1000 : tick;
    uint64_t next = an_now_ms() + tick;
    struct pollfd pf[2] = {{.fd = h->fd, .events = POLLIN}, {.fd = h->wake_fd, .events = POLLIN}};
    while (!atomic_load(&h->stopped)) {
        uint64_t now = an_now_ms();
        int wait = now >= next ? 0 : (int)(next - now);
        int r = poll(pf, 2, wait);
        if (r < 0 && errno != EINTR) {
            log_error("lora: poll: %s", strerror(errno));
            break;
        }
        if (r > 0 && (pf[0].revents & POLLIN)) {
            /* a bounded batch, then the timer gets its turn */
            for (int i = 0; i < 256; i++) {
                struct sockaddr_in from;
                socklen_t fl = sizeof(from);
                ssize_t got = recvfrom(h->fd, h->buf, LORA_DGRAM_MAX, MSG_DONTWAIT,
                                       (struct sockaddr *)&from, &fl);
                if (got < 0)
                    break;
                if (from.sin_family == AF_INET)
                    on_datagram(h, h->buf, (size_t)got, &from);
            }
            flush(h);
        }
        if (an_now_ms() >= next) {
            presence_check(h);
            next = an_now_ms() + tick;
        }
    }
    return NULL;
}

/* ---- downlinks (the consumer, on a worker) ------------------------------------ */

static void on_down(worker_t *w, router_consumer_t *c, msg_t *m, uint8_t qos, uint8_t flags,
                    void *user)
{
    (void)w;
    (void)c;
    (void)qos;
    (void)flags;
    lora_t *h = user;
    if (atomic_load(&h->stopped))
        return;
    /* the EUI where the template has {gateway} */
    uint64_t eui;
    const char *t = (const char *)msg_topic(m);
    size_t tl = m->topic_len;
    if (tl < h->down_pre + h->down_suf ||
        lora_eui_parse(t + h->down_pre, tl - h->down_pre - h->down_suf, &eui) < 0) {
        atomic_fetch_add(&h->down_bad, 1);
        log_limited(1000, AN_LOG_WARN,
                    "lora: a downlink on '%.*s': not a gateway EUI (16 hex digits)", (int)tl, t);
        return;
    }
    pthread_mutex_lock(&h->mu);
    lora_gw_t *g = gw_find(h, eui, 0);
    struct sockaddr_in to;
    uint8_t ver = 0;
    if (g && g->has_pull) {
        to = g->pull;
        ver = g->version;
    }
    pthread_mutex_unlock(&h->mu);
    if (ver == 0) {
        atomic_fetch_add(&h->down_unknown, 1);
        log_limited(1000, AN_LOG_WARN,
                    "lora: a downlink for gateway %.*s, which has sent no PULL_DATA: dropped",
                    (int)(tl - h->down_pre - h->down_suf), t + h->down_pre);
        return;
    }
    char *j = lora_down_json(msg_payload(m), m->payload_len);
    if (j == NULL) {
        atomic_fetch_add(&h->down_bad, 1);
        log_limited(1000, AN_LOG_WARN,
                    "lora: a downlink on '%.*s' is not a txpk object or {\"txpk\":{...}}: dropped",
                    (int)tl, t);
        return;
    }
    size_t jl = strlen(j);
    uint8_t *out = an_malloc(jl + 4);
    uint16_t token =
        (uint16_t)an_siphash(h->token_key, &(uint64_t){atomic_fetch_add(&h->token_seq, 1)}, 8);
    size_t n = lora_resp_encode(out, jl + 4, ver, token, j, jl);
    if (sendto(h->fd, out, n, MSG_DONTWAIT, (const struct sockaddr *)&to, sizeof(to)) < 0) {
        atomic_fetch_add(&h->down_send, 1);
        log_limited(1000, AN_LOG_WARN, "lora: cannot send a PULL_RESP: %s", strerror(errno));
    } else {
        atomic_fetch_add(&h->downlinks, 1);
    }
    free(out);
    free(j);
}

static const consumer_ops_t down_ops = {.on_message = on_down};

/* ---- configuration ------------------------------------------------------------ */

static void lo_defaults(void *conf)
{
    lora_conf_t *c = conf;
    memset(c, 0, sizeof(*c));
    snprintf(c->bind, sizeof(c->bind), "%s", "0.0.0.0");
    c->port = 1700;
    c->keepalive_ms = 10000;
    c->qos = 0;
    c->max_gateways = 1024;
    snprintf(c->topic_up, sizeof(c->topic_up), "%s", "lora/{gateway}/up");
    snprintf(c->topic_devaddr, sizeof(c->topic_devaddr), "%s", "lora/{gateway}/devaddr/{devaddr}");
    snprintf(c->topic_stats, sizeof(c->topic_stats), "%s", "lora/{gateway}/stats");
    snprintf(c->topic_status, sizeof(c->topic_status), "%s", "lora/{gateway}/status");
    snprintf(c->topic_down, sizeof(c->topic_down), "%s", "lora/{gateway}/down");
    snprintf(c->topic_down_ack, sizeof(c->topic_down_ack), "%s", "lora/{gateway}/down/ack");
}

/* A template: {gateway} once as a whole level (and {devaddr} likewise when
 * devaddr), the rest a topic name; as a filter ({gateway} -> '+') when
 * filter. */
static int check_tpl(conf_sec_t *s, const char *key, const char *tpl, int devaddr, int filter)
{
    const char *g = strstr(tpl, "{gateway}");
    const char *d = strstr(tpl, "{devaddr}");
    if (g == NULL || strstr(g + 1, "{gateway}"))
        return conf_sec_fail(s, key, "\"%.80s\": {gateway} once, as a whole topic level", tpl);
    if (devaddr && (d == NULL || strstr(d + 1, "{devaddr}")))
        return conf_sec_fail(s, key, "\"%.80s\": {devaddr} once, as a whole topic level", tpl);
    if (!devaddr && d)
        return conf_sec_fail(s, key, "\"%.80s\": {devaddr} is only for topic_devaddr", tpl);
    char t[LORA_TOPIC_MAX * 2];
    size_t n = 0;
    for (const char *q = tpl; *q && n + 2 < sizeof(t);) {
        int ph = strncmp(q, "{gateway}", 9) == 0 || strncmp(q, "{devaddr}", 9) == 0;
        if (ph) {
            /* a whole level */
            if ((q != tpl && q[-1] != '/') || (q[9] && q[9] != '/'))
                return conf_sec_fail(s, key, "\"%.80s\": a placeholder must be a whole topic level",
                                     tpl);
            t[n++] = filter ? '+' : 'x';
            q += 9;
        } else {
            t[n++] = *q++;
        }
    }
    int ok = filter ? mqtt_topic_filter_valid((const uint8_t *)t, n) && strncmp(t, "$share/", 7)
                    : mqtt_topic_name_valid((const uint8_t *)t, n);
    if (!ok)
        return conf_sec_fail(s, key, "\"%.80s\": not a valid topic (no wildcards)", tpl);
    if (filter && strchr(tpl, '#'))
        return conf_sec_fail(s, key, "\"%.80s\": no wildcards", tpl);
    return 0;
}

static const conf_key_t lo_keys[] = {
    CONF_KEY_BOOL(lora_conf_t, enabled, "enabled"),
    CONF_KEY_STR(lora_conf_t, bind, "bind", CONF_SEC_NONEMPTY),
    CONF_KEY_U32(lora_conf_t, port, "port", 0, 65535),
    CONF_KEY_MS(lora_conf_t, keepalive_ms, "keepalive", 100, 3600000),
    CONF_KEY_U32(lora_conf_t, qos, "qos", 0, 2),
    CONF_KEY_U32(lora_conf_t, max_gateways, "max_gateways", 1, 100000),
    CONF_KEY_STR(lora_conf_t, topic_up, "topic_up", CONF_SEC_NONEMPTY),
    CONF_KEY_STR(lora_conf_t, topic_devaddr, "topic_devaddr", 0),
    CONF_KEY_STR(lora_conf_t, topic_stats, "topic_stats", CONF_SEC_NONEMPTY),
    CONF_KEY_STR(lora_conf_t, topic_status, "topic_status", CONF_SEC_NONEMPTY),
    CONF_KEY_STR(lora_conf_t, topic_down, "topic_down", CONF_SEC_NONEMPTY),
    CONF_KEY_STR(lora_conf_t, topic_down_ack, "topic_down_ack", CONF_SEC_NONEMPTY),
};

static int lo_load(conf_sec_t *s, void *conf)
{
    lora_conf_t *c = conf;
    if (conf_sec_keys(s, CONF_KEYS(lo_keys), c) < 0)
        return -1;
    struct in_addr a;
    if (inet_pton(AF_INET, c->bind, &a) != 1)
        return conf_sec_fail(s, "bind", "\"%.60s\": an IPv4 address", c->bind);
    if (check_tpl(s, "topic_up", c->topic_up, 0, 0) < 0 ||
        (c->topic_devaddr[0] && check_tpl(s, "topic_devaddr", c->topic_devaddr, 1, 0) < 0) ||
        check_tpl(s, "topic_stats", c->topic_stats, 0, 0) < 0 ||
        check_tpl(s, "topic_status", c->topic_status, 0, 0) < 0 ||
        check_tpl(s, "topic_down", c->topic_down, 0, 1) < 0 ||
        check_tpl(s, "topic_down_ack", c->topic_down_ack, 0, 0) < 0)
        return -1;
    if (strcmp(c->topic_down, c->topic_up) == 0 || strcmp(c->topic_down, c->topic_stats) == 0 ||
        strcmp(c->topic_down, c->topic_status) == 0 ||
        strcmp(c->topic_down, c->topic_down_ack) == 0)
        return conf_sec_fail(s, "topic_down",
                             "\"%.80s\": the same as a topic the gateway publishes", c->topic_down);
    return 0;
}

static void lo_walk(const void *conf, conf_visit_fn fn, void *ud)
{
    conf_keys_walk(CONF_KEYS(lo_keys), conf, fn, ud);
}

/* ---- life cycle --------------------------------------------------------------- */

/* The socket, bound in init (before any thread runs: the workers'
 * consumer and the API read fd and bound_port without a lock). */
static int lo_bind(lora_t *h)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)h->c->port)};
    inet_pton(AF_INET, h->c->bind, &sa.sin_addr);
    h->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (h->fd < 0 || bind(h->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        log_error("lora: cannot listen on udp %s:%u: %s", h->c->bind, h->c->port, strerror(errno));
        return -1;
    }
    int rcv = 8 << 20; /* bursts while the thread waits for a core; capped by
                        * net.core.rmem_max */
    setsockopt(h->fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
    socklen_t sl = sizeof(sa);
    getsockname(h->fd, (struct sockaddr *)&sa, &sl);
    h->bound_port = ntohs(sa.sin_port);
    h->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (h->wake_fd < 0) {
        log_error("lora: eventfd: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static int lo_init(module_inst_t *mi)
{
    const lora_conf_t *c = mi->conf;
    if (!c->enabled)
        return 0;
    lora_t *h = an_calloc(1, sizeof(*h));
    h->srv = mi->srv;
    h->c = c;
    h->fd = h->wake_fd = -1;
    pthread_mutex_init(&h->mu, NULL);
    h->cap = 16;
    while (h->cap < 2 * c->max_gateways)
        h->cap *= 2;
    h->gws = an_calloc(h->cap, sizeof(*h->gws));
    h->buf = an_malloc(LORA_DGRAM_MAX);
    h->vecs = an_calloc(mi->srv->nworkers, sizeof(*h->vecs));
    h->origin = msg_origin_new(MSG_PROTO_API, "lora", 4, NULL, "lora");
    an_random_key(h->token_key);
    mi->state = h;
    if (lo_bind(h) < 0)
        return -1;
    static const worker_inbox_kind_t kind = {.run = run_item, .drop = drop_item};
    worker_inbox_register(mi->srv, WM_LORA, &kind);
    /* the downlink: topic_down with {gateway} as '+' */
    const char *g = strstr(c->topic_down, "{gateway}");
    h->down_pre = (size_t)(g - c->topic_down);
    h->down_suf = strlen(g + 9);
    char f[LORA_TOPIC_MAX];
    snprintf(f, sizeof(f), "%.*s+%s", (int)h->down_pre, c->topic_down, g + 9);
    h->cons = router_consumer_new(mi->srv, "lora", &down_ops, h);
    if (router_consumer_subscribe(h->cons, f, 1) < 0) {
        log_error("lora: cannot subscribe to %s", f);
        return -1;
    }
    return 0;
}

static int lo_start(module_inst_t *mi)
{
    lora_t *h = mi->state;
    if (h == NULL)
        return 0;
    if (pthread_create(&h->th, NULL, lora_thread, h) != 0) {
        log_error("lora: cannot start its thread");
        return -1;
    }
    h->th_started = 1;
    log_info("lora: listening on udp %s:%u", h->c->bind, h->bound_port);
    return 0;
}

static void lo_stop(module_inst_t *mi)
{
    lora_t *h = mi->state;
    if (h == NULL || !h->th_started)
        return;
    atomic_store(&h->stopped, 1);
    uint64_t one = 1;
    if (write(h->wake_fd, &one, sizeof(one)) < 0)
        log_warn("lora: cannot wake its thread: %s", strerror(errno));
    pthread_join(h->th, NULL);
    h->th_started = 0;
}

static void lo_free(module_inst_t *mi)
{
    lora_t *h = mi->state;
    if (h == NULL)
        return;
    lo_stop(mi);
    if (h->fd >= 0)
        close(h->fd);
    if (h->wake_fd >= 0)
        close(h->wake_fd);
    /* messages queued for a worker that never took them */
    for (uint32_t w = 0; h->vecs && w < h->srv->nworkers; w++) {
        for (size_t i = 0; i < h->vecs[w].len; i++) {
            msg_t *m = h->vecs[w].items[i].ptr;
            msg_unref(&m);
        }
        inbox_vec_free(&h->vecs[w]);
    }
    free(h->vecs);
    msg_origin_unref(&h->origin);
    pthread_mutex_destroy(&h->mu);
    free(h->gws);
    free(h->buf);
    free(h);
    mi->state = NULL;
}

/* ---- the API and metrics ------------------------------------------------------- */

static int api_gateways(module_inst_t *mi, const module_api_req_t *req, json_t **out)
{
    (void)req;
    lora_t *h = mi->state;
    if (h == NULL)
        return module_api_error(out, 409, "lora_disabled", "lora.enabled is false");
    json_t *arr = json_array();
    pthread_mutex_lock(&h->mu);
    for (uint32_t i = 0; i < h->cap; i++) {
        const lora_gw_t *g = &h->gws[i];
        if (!g->used)
            continue;
        char hex[17], addr[64];
        lora_eui_hex(g->eui, hex);
        json_t *o =
            json_pack("{s:s, s:b, s:i, s:I}", "gateway", hex, "online", (int)g->online, "version",
                      (int)g->version, "last_seen_ms", (json_int_t)g->last_seen_wall);
        if (g->has_pull) {
            addr_text(&g->pull, addr, sizeof(addr));
            json_object_set_new(o, "address", json_string(addr));
        } else {
            json_object_set_new(o, "address", json_null());
        }
        json_array_append_new(arr, o);
    }
    pthread_mutex_unlock(&h->mu);
    *out = json_pack("{s:i, s:o}", "port", (int)h->bound_port, "gateways", arr);
    return 200;
}

static const module_api_route_t lo_routes[] = {
    {"lora/gateways", 0, MODULE_API_GET, api_gateways},
    {NULL, 0, 0, NULL},
};

static void lo_metrics(module_inst_t *mi, module_metrics_t *mm)
{
    lora_t *h = mi->state;
    if (h == NULL)
        return;
    module_metrics_family(mm, "antenna_lora_datagrams_total", "counter",
                          "datagrams from LoRa gateways, by type");
    static const uint8_t in_types[] = {LORA_PUSH_DATA, LORA_PULL_DATA, LORA_TX_ACK};
    for (size_t i = 0; i < sizeof(in_types); i++)
        module_metrics_printf(mm, "antenna_lora_datagrams_total{type=\"%s\"} %llu\n",
                              lora_type_name(in_types[i]),
                              (unsigned long long)atomic_load(&h->dgrams[in_types[i]]));
    module_metrics_family(mm, "antenna_lora_malformed_total", "counter",
                          "malformed datagrams, by what was wrong");
    for (int e = LORA_E_SHORT; e <= LORA_E_JSON; e++)
        module_metrics_printf(mm, "antenna_lora_malformed_total{reason=\"%s\"} %llu\n",
                              lora_err_name(e), (unsigned long long)atomic_load(&h->malformed[e]));
    static const module_counter_t ctr[] = {
        {"antenna_lora_uplinks_total", "rxpk published", offsetof(lora_t, uplinks)},
        {"antenna_lora_stats_total", "gateway stat objects published", offsetof(lora_t, stats)},
        {"antenna_lora_tx_acks_total", "TX_ACKs published", offsetof(lora_t, acks)},
        {"antenna_lora_tx_ack_errors_total", "TX_ACKs with an error other than NONE",
         offsetof(lora_t, tx_ack_errors)},
        {"antenna_lora_downlinks_total", "PULL_RESP sent", offsetof(lora_t, downlinks)},
    };
    module_metrics_counters(mm, h, ctr, sizeof(ctr) / sizeof(ctr[0]));
    module_metrics_family(mm, "antenna_lora_downlinks_dropped_total", "counter",
                          "downlinks not sent, by why");
    module_metrics_printf(mm,
                          "antenna_lora_downlinks_dropped_total{reason=\"unknown_gateway\"} %llu\n",
                          (unsigned long long)atomic_load(&h->down_unknown));
    module_metrics_printf(mm, "antenna_lora_downlinks_dropped_total{reason=\"invalid\"} %llu\n",
                          (unsigned long long)atomic_load(&h->down_bad));
    module_metrics_printf(mm, "antenna_lora_downlinks_dropped_total{reason=\"send\"} %llu\n",
                          (unsigned long long)atomic_load(&h->down_send));
    module_metrics_family(mm, "antenna_lora_gateways_online", "gauge",
                          "gateways heard within 3 x lora.keepalive");
    module_metrics_printf(mm, "antenna_lora_gateways_online %u\n",
                          (unsigned)atomic_load(&h->online));
}

const module_t lora_module = {
    .name = "lora",
    .section = "lora",
    .conf_size = sizeof(lora_conf_t),
    .conf_defaults = lo_defaults,
    .conf_load = lo_load,
    .conf_walk = lo_walk,
    .init = lo_init,
    .start = lo_start,
    .stop = lo_stop,
    .free = lo_free,
    .api_routes = lo_routes,
    .metrics = lo_metrics,
};
