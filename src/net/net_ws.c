/* net_ws.c -- MQTT over WebSocket: the HTTP/1.1 upgrade (our own strict
 * parser) and wslay's framing on in-memory buffers.  See net_ws.h for the
 * design.
 *
 * The upgrade parser accepts exactly (RFC 6455 4.2.1, MQTT 6.0):
 *   GET <ws_path>[?query] HTTP/1.1 CRLF, then header lines "Name: value"
 *   ending in CRLF, then an empty line, all within WS_MAX_HEADER bytes;
 *   Host present; Upgrade a token list holding "websocket" and Connection
 *   one holding "Upgrade" (both case-insensitive); Sec-WebSocket-Version
 *   13; Sec-WebSocket-Key 24 base64 characters (16 bytes); and
 *   Sec-WebSocket-Protocol (possibly repeated) listing "mqtt" or
 *   "mqttv3.1".  Bare LF, obsolete line folding, control characters,
 *   repeated single-valued headers: 400.  Another path: 404.
 *   With the listener's ws_allowed_origins set, an Origin header must be
 *   one of them (ASCII case-insensitive), else 403.  A request without
 *   Origin passes: browsers always send one, and what the check protects
 *   against is a page on another site using a visitor's browser; any
 *   other client can send whatever Origin it likes.
 */
#include "net_ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/sha.h>
#include <wslay/wslay.h>

#include "b64.h"
#include "util.h"

struct ws_s {
    transport_t tp; /* first: the layer's header (ws_transport_new) */
    wslay_event_context_ptr ctx;
    const uint8_t *rd; /* bytes being fed to wslay */
    size_t rdlen, rdoff;
    uint8_t *dec; /* MQTT bytes decoded by this ws_recv */
    size_t declen, deccap;
    uint8_t *out; /* wire bytes to write */
    size_t outoff, outlen, outcap;
    char *hbuf; /* upgrade request so far */
    size_t hlen;
    const char *why; /* reason of a protocol error */
    uint32_t max_frame;
    uint8_t upgraded, failed, close_queued;
    char path[128];
    const conf_listener_t *conf; /* ws_allowed_origins (read-only config) */
    char whybuf[200];            /* a refusal naming what the client sent */
};

/* Append n bytes (none: nothing to do; an empty WebSocket message has a
 * NULL payload and *p may still be NULL, and memcpy with either is
 * undefined even for 0 bytes). */
static void buf_append(uint8_t **p, size_t *len, size_t *cap, const void *data, size_t n)
{
    if (n == 0)
        return;
    if (*len + n > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < *len + n)
            c *= 2;
        *p = an_realloc(*p, c);
        *cap = c;
    }
    memcpy(*p + *len, data, n);
    *len += n;
}

static void out_append(ws_t *ws, const void *data, size_t n)
{
    if (ws->outoff && ws->outoff == ws->outlen)
        ws->outoff = ws->outlen = 0;
    buf_append(&ws->out, &ws->outlen, &ws->outcap, data, n);
}

/* ---- wslay callbacks: memory only ---- */

static ssize_t cb_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    (void)flags;
    ws_t *ws = user;
    size_t left = ws->rdlen - ws->rdoff;
    if (left == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = left < len ? left : len;
    memcpy(buf, ws->rd + ws->rdoff, n);
    ws->rdoff += n;
    return (ssize_t)n;
}

static ssize_t cb_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    (void)ctx;
    (void)flags;
    out_append(user, data, len);
    return (ssize_t)len;
}

static void cb_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user)
{
    ws_t *ws = user;
    if (ws->failed)
        return;
    if (arg->opcode == WSLAY_BINARY_FRAME) {
        buf_append(&ws->dec, &ws->declen, &ws->deccap, arg->msg, arg->msg_length);
    } else if (arg->opcode == WSLAY_TEXT_FRAME) {
        /* [MQTT-6.0.0-1] MQTT travels in binary frames only */
        ws->failed = 1;
        ws->why = "WebSocket text frame (MQTT needs binary frames)";
        static const char reason[] = "binary frames only";
        wslay_event_queue_close(ctx, 1003, (const uint8_t *)reason, sizeof(reason) - 1);
        ws->close_queued = 1;
        wslay_event_shutdown_read(ctx);
    }
    /* ping (answered by wslay), pong: nothing to do; close: see ws_recv */
}

ws_t *ws_new(const conf_listener_t *l)
{
    ws_t *ws = an_calloc(1, sizeof(*ws));
    snprintf(ws->path, sizeof(ws->path), "%s", l->ws_path);
    ws->max_frame = l->ws_max_frame;
    ws->conf = l;
    return ws;
}

void ws_free(ws_t *ws)
{
    if (ws == NULL)
        return;
    if (ws->ctx)
        wslay_event_context_free(ws->ctx);
    free(ws->dec);
    free(ws->out);
    free(ws->hbuf);
    free(ws);
}

int ws_upgraded(const ws_t *ws)
{
    return ws->upgraded;
}

size_t ws_out_pending(const ws_t *ws)
{
    return ws->outlen - ws->outoff;
}

const uint8_t *ws_out(const ws_t *ws)
{
    return ws->out + ws->outoff;
}

void ws_out_consumed(ws_t *ws, size_t n)
{
    ws->outoff += n;
    if (ws->outoff == ws->outlen) {
        ws->outoff = ws->outlen = 0;
        if (ws->outcap > 64 * 1024) { /* a burst is over: give it back */
            free(ws->out);
            ws->out = NULL;
            ws->outcap = 0;
        }
    }
}

/* ---- the upgrade request ---- */

void ws_accept_key(const char *key, size_t keylen, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char md[SHA_DIGEST_LENGTH];
    char buf[128];
    if (keylen > sizeof(buf) - sizeof(guid))
        keylen = sizeof(buf) - sizeof(guid);
    memcpy(buf, key, keylen);
    memcpy(buf + keylen, guid, sizeof(guid) - 1);
    SHA1((const unsigned char *)buf, keylen + sizeof(guid) - 1, md);
    b64_encode(md, SHA_DIGEST_LENGTH, out);
}

static int tchar(int ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* Does the comma-separated list [v, v + n) hold `tok`? */
static int list_has(const char *v, size_t n, const char *tok, int icase)
{
    size_t tl = strlen(tok), i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && (icase ? strncasecmp(v + s, tok, tl) == 0 : memcmp(v + s, tok, tl) == 0))
            return 1;
    }
    return 0;
}

static int key_valid(const char *k, size_t n)
{
    if (n != 24 || k[22] != '=' || k[23] != '=')
        return 0;
    for (size_t i = 0; i < 22; i++)
        if (!((k[i] >= 'a' && k[i] <= 'z') || (k[i] >= 'A' && k[i] <= 'Z') ||
              (k[i] >= '0' && k[i] <= '9') || k[i] == '+' || k[i] == '/'))
            return 0;
    /* 16 bytes: the last character carries 2 bits, the low 4 are zero */
    return strchr("AQgw", k[21]) != NULL;
}

static const char resp_400[] =
    "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
static const char resp_400v[] = "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"
                                "Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n";
static const char resp_404[] =
    "HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
static const char resp_403[] =
    "HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

/* Is the Origin value [v, v + n) in the listener's ws_allowed_origins? */
static int origin_allowed(const conf_listener_t *l, const char *v, size_t n)
{
    for (uint32_t i = 0; i < l->nws_allowed_origins; i++)
        if (strlen(l->ws_allowed_origins[i]) == n &&
            strncasecmp(l->ws_allowed_origins[i], v, n) == 0)
            return 1;
    return 0;
}

static int refuse(ws_t *ws, const char *resp, const char *why, const char **whyp)
{
    out_append(ws, resp, strlen(resp));
    *whyp = why;
    ws->failed = 1;
    return WS_HS_FAIL;
}

/* Parse the complete request hbuf[0, len) (ends with CRLF CRLF). */
static int parse_request(ws_t *ws, size_t len, const char **why)
{
    const char *p = ws->hbuf, *end = ws->hbuf + len;
    for (const char *q = p; q < end; q++) {
        unsigned char ch = (unsigned char)*q;
        if ((ch < 0x20 && ch != '\r' && ch != '\n' && ch != '\t') || ch == 0x7f)
            return refuse(ws, resp_400, "WebSocket upgrade: control character in request", why);
        if (ch == '\n' && (q == p || q[-1] != '\r'))
            return refuse(ws, resp_400, "WebSocket upgrade: bare LF in request", why);
        if (ch == '\r' && (q + 1 >= end || q[1] != '\n'))
            return refuse(ws, resp_400, "WebSocket upgrade: bare CR in request", why);
    }
    /* request line */
    const char *eol = strstr(p, "\r\n");
    if (strncmp(p, "GET ", 4) != 0)
        return refuse(ws, resp_400, "WebSocket upgrade: not a GET request", why);
    const char *target = p + 4;
    const char *sp = memchr(target, ' ', (size_t)(eol - target));
    if (sp == NULL || sp == target || (size_t)(eol - sp - 1) != 8 ||
        memcmp(sp + 1, "HTTP/1.1", 8) != 0)
        return refuse(ws, resp_400, "WebSocket upgrade: bad request line (HTTP/1.1 needed)", why);
    size_t tlen = (size_t)(sp - target);
    const char *qm = memchr(target, '?', tlen);
    size_t plen = qm ? (size_t)(qm - target) : tlen;
    if (memchr(target, ' ', tlen) || target[0] != '/')
        return refuse(ws, resp_400, "WebSocket upgrade: bad request target", why);
    int path_ok = plen == strlen(ws->path) && memcmp(target, ws->path, plen) == 0;
    /* headers */
    int host = 0, upgrade = 0, connection = 0, version = 0, key = 0, proto = 0;
    int nversion = 0, norigin = 0;
    const char *keyp = NULL, *chosen = NULL, *origin = NULL;
    size_t keyn = 0, originn = 0;
    int has_mqtt = 0, has_v31 = 0;
    for (const char *l = eol + 2; l < end;) {
        const char *le = strstr(l, "\r\n");
        if (le == l)
            break; /* the empty line */
        if (*l == ' ' || *l == '\t')
            return refuse(ws, resp_400, "WebSocket upgrade: obsolete header folding", why);
        const char *colon = l;
        while (colon < le && tchar((unsigned char)*colon))
            colon++;
        if (colon == l || colon >= le || *colon != ':')
            return refuse(ws, resp_400, "WebSocket upgrade: malformed header line", why);
        size_t nlen = (size_t)(colon - l);
        const char *v = colon + 1, *ve = le;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        size_t vlen = (size_t)(ve - v);
#define IS(name) (nlen == sizeof(name) - 1 && strncasecmp(l, name, nlen) == 0)
        if (IS("Host")) {
            if (host++ || vlen == 0)
                return refuse(ws, resp_400, "WebSocket upgrade: bad or repeated Host", why);
        } else if (IS("Upgrade")) {
            upgrade |= list_has(v, vlen, "websocket", 1);
        } else if (IS("Connection")) {
            connection |= list_has(v, vlen, "upgrade", 1);
        } else if (IS("Sec-WebSocket-Version")) {
            nversion++;
            version = vlen == 2 && memcmp(v, "13", 2) == 0;
        } else if (IS("Sec-WebSocket-Key")) {
            if (key++)
                return refuse(ws, resp_400, "WebSocket upgrade: repeated Sec-WebSocket-Key", why);
            keyp = v;
            keyn = vlen;
        } else if (IS("Sec-WebSocket-Protocol")) {
            proto = 1;
            has_mqtt |= list_has(v, vlen, "mqtt", 0);
            has_v31 |= list_has(v, vlen, "mqttv3.1", 0);
        } else if (IS("Origin")) {
            norigin++;
            origin = v;
            originn = vlen;
        }
#undef IS
        l = le + 2;
    }
    if (!path_ok)
        return refuse(ws, resp_404, "WebSocket upgrade: unknown path", why);
    if (!host)
        return refuse(ws, resp_400, "WebSocket upgrade: no Host header", why);
    if (!upgrade)
        return refuse(ws, resp_400, "WebSocket upgrade: no \"Upgrade: websocket\"", why);
    if (!connection)
        return refuse(ws, resp_400, "WebSocket upgrade: no \"Connection: Upgrade\"", why);
    if (nversion != 1 || !version)
        return refuse(ws, resp_400v, "WebSocket upgrade: Sec-WebSocket-Version is not 13", why);
    if (!key || !key_valid(keyp, keyn))
        return refuse(ws, resp_400, "WebSocket upgrade: bad or missing Sec-WebSocket-Key", why);
    chosen = has_mqtt ? "mqtt" : has_v31 ? "mqttv3.1" : NULL;
    if (!proto || chosen == NULL)
        return refuse(ws, resp_400, "WebSocket upgrade: Sec-WebSocket-Protocol does not offer mqtt",
                      why);
    if (ws->conf && ws->conf->nws_allowed_origins && norigin) {
        if (norigin > 1)
            return refuse(ws, resp_400, "WebSocket upgrade: repeated Origin", why);
        if (!origin_allowed(ws->conf, origin, originn)) {
            snprintf(ws->whybuf, sizeof(ws->whybuf),
                     "WebSocket upgrade: origin \"%.*s\" not allowed (ws_allowed_origins)",
                     (int)AN_MIN(originn, 120), origin);
            return refuse(ws, resp_403, ws->whybuf, why);
        }
    }
    char accept[29], resp[256];
    ws_accept_key(keyp, keyn, accept);
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                     "Sec-WebSocket-Protocol: %s\r\n\r\n",
                     accept, chosen);
    out_append(ws, resp, (size_t)n);
    return WS_HS_DONE;
}

int ws_handshake(ws_t *ws, const uint8_t *data, size_t n, size_t *used, const char **why)
{
    *used = 0;
    if (ws->failed)
        return WS_HS_FAIL;
    if (ws->hbuf == NULL)
        ws->hbuf = an_malloc(WS_MAX_HEADER + 1);
    size_t old = ws->hlen;
    size_t take = n < WS_MAX_HEADER - old ? n : WS_MAX_HEADER - old;
    memcpy(ws->hbuf + old, data, take);
    ws->hlen += take;
    ws->hbuf[ws->hlen] = '\0';
    /* look for the end from a little before the new bytes */
    size_t from = old > 3 ? old - 3 : 0;
    char *e = NULL;
    for (size_t i = from; i + 4 <= ws->hlen; i++)
        if (memcmp(ws->hbuf + i, "\r\n\r\n", 4) == 0) {
            e = ws->hbuf + i;
            break;
        }
    for (size_t i = old; i < ws->hlen && (e == NULL || ws->hbuf + i < e); i++)
        if (ws->hbuf[i] == '\n' && (i == 0 || ws->hbuf[i - 1] != '\r'))
            return refuse(ws, resp_400, "WebSocket upgrade: bare LF in request", why);
    if (e == NULL) {
        if (memchr(ws->hbuf + old, '\0', take))
            return refuse(ws, resp_400, "WebSocket upgrade: NUL byte in request", why);
        if (ws->hlen >= WS_MAX_HEADER)
            return refuse(ws, resp_400, "WebSocket upgrade: request headers over 8 KiB", why);
        *used = take;
        return WS_HS_MORE;
    }
    size_t reqlen = (size_t)(e - ws->hbuf) + 4;
    if (memchr(ws->hbuf, '\0', reqlen))
        return refuse(ws, resp_400, "WebSocket upgrade: NUL byte in request", why);
    ws->hbuf[reqlen] = '\0';
    int rc = parse_request(ws, reqlen, why);
    if (rc != WS_HS_DONE)
        return rc;
    *used = reqlen - old;
    free(ws->hbuf);
    ws->hbuf = NULL;
    ws->hlen = 0;
    struct wslay_event_callbacks cbs = {
        .recv_callback = cb_recv, .send_callback = cb_send, .on_msg_recv_callback = cb_msg};
    if (wslay_event_context_server_init(&ws->ctx, &cbs, ws) != 0) {
        ws->ctx = NULL;
        ws->failed = 1;
        *why = "WebSocket: out of memory";
        return WS_HS_FAIL;
    }
    wslay_event_config_set_max_recv_msg_length(ws->ctx, ws->max_frame);
    ws->upgraded = 1;
    return WS_HS_DONE;
}

/* ---- frames ---- */

static void pump_out(ws_t *ws)
{
    if (wslay_event_want_write(ws->ctx))
        (void)wslay_event_send(ws->ctx);
}

int ws_recv(ws_t *ws, const uint8_t *data, size_t n, const uint8_t **plain, size_t *nplain,
            const char **why)
{
    ws->declen = 0;
    *plain = NULL;
    *nplain = 0;
    if (ws->ctx == NULL)
        return -1;
    ws->rd = data;
    ws->rdlen = n;
    ws->rdoff = 0;
    int rc = wslay_event_get_read_enabled(ws->ctx) ? wslay_event_recv(ws->ctx) : 0;
    ws->rd = NULL;
    ws->rdlen = ws->rdoff = 0;
    pump_out(ws); /* pongs, close replies */
    if (ws->deccap > 64 * 1024 && ws->declen == 0) {
        free(ws->dec);
        ws->dec = NULL;
        ws->deccap = 0;
    }
    *plain = ws->dec;
    *nplain = ws->declen;
    if (rc != 0) {
        *why = "WebSocket: framing error";
        return -1;
    }
    if (ws->failed) {
        *why = ws->why;
        return 1;
    }
    if (wslay_event_get_close_received(ws->ctx)) {
        *why = "WebSocket close received";
        return 1;
    }
    if (!wslay_event_get_read_enabled(ws->ctx)) {
        uint16_t code = wslay_event_get_status_code_sent(ws->ctx);
        *why = code == WSLAY_CODE_MESSAGE_TOO_BIG
                   ? "WebSocket message larger than ws_max_frame (closed with 1009)"
               : code == WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA ? "WebSocket: invalid frame payload"
                                                               : "WebSocket protocol error";
        return 1;
    }
    return 0;
}

int ws_send(ws_t *ws, const uint8_t *data, size_t n)
{
    if (ws->ctx == NULL || !wslay_event_get_write_enabled(ws->ctx) || ws->close_queued)
        return -1;
    struct wslay_event_msg m = {.opcode = WSLAY_BINARY_FRAME, .msg = data, .msg_length = n};
    if (wslay_event_queue_msg(ws->ctx, &m) != 0)
        return -1;
    pump_out(ws);
    return 0;
}

void ws_close(ws_t *ws, uint16_t code)
{
    if (ws->ctx == NULL || ws->close_queued || wslay_event_get_close_sent(ws->ctx))
        return;
    ws->close_queued = 1;
    (void)wslay_event_queue_close(ws->ctx, code, NULL, 0);
    pump_out(ws);
}

/* ---- the ws transport (transport.h) ---- */

/* Write the frames (and the HTTP response) waiting: 0, or -1 (errno). */
static int flush_out(ws_t *ws, int fd)
{
    transport_t *lo = ws->tp.lower;
    while (ws_out_pending(ws)) {
        ssize_t r = lo->ops->write(lo, fd, ws_out(ws), ws_out_pending(ws), 0);
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        ws_out_consumed(ws, (size_t)r);
    }
    return 0;
}

static int ws_tp_read(transport_t *t, int fd, tp_read_t *r)
{
    ws_t *ws = (ws_t *)t;
    int rc = t->lower->ops->read(t->lower, fd, r); /* r->wire stays the lower's */
    const uint8_t *data = r->data;
    size_t n = r->len;
    r->data = NULL;
    r->len = 0;
    const char *w = NULL;
    if (n && !ws->upgraded) {
        size_t used = 0;
        int hs = ws_handshake(ws, data, n, &used, &w);
        if (hs == WS_HS_MORE)
            return rc;
        if (hs == WS_HS_FAIL) { /* the error response is in the output */
            snprintf(r->why, sizeof(r->why), "%s", w ? w : "WebSocket upgrade failed");
            return TP_ERROR;
        }
        data += used;
        n -= used;
    }
    if (n) {
        int fr = ws_recv(ws, data, n, &r->data, &r->len, &w);
        if (fr != 0) {
            snprintf(r->why, sizeof(r->why), "%s", w ? w : "WebSocket error");
            return fr < 0 ? TP_ERROR : TP_CLOSED;
        }
    }
    return rc;
}

static ssize_t ws_tp_write(transport_t *t, int fd, const uint8_t *data, size_t n, unsigned flags)
{
    ws_t *ws = (ws_t *)t;
    if (flush_out(ws, fd) < 0)
        return TP_ERROR;
    if (n == 0 || !ws->upgraded)
        return 0;
    if (ws_out_pending(ws) && !(flags & TP_WRITE_LAST))
        return 0;               /* the bytes wait above, under the output limit */
    (void)ws_send(ws, data, n); /* refused once closing: dropped */
    if (flush_out(ws, fd) < 0)
        return TP_ERROR;
    return (ssize_t)n;
}

static size_t ws_tp_pending(const transport_t *t)
{
    return ws_out_pending((const ws_t *)t) + tp_pending(t->lower);
}

static const char *ws_tp_waiting(const transport_t *t)
{
    const char *below = tp_waiting(t->lower);
    if (below)
        return below;
    return ((const ws_t *)t)->upgraded ? NULL : "WebSocket upgrade";
}

static void ws_tp_shutdown(transport_t *t, int fd)
{
    ws_t *ws = (ws_t *)t;
    ws_close(ws, 1000);
    (void)flush_out(ws, fd);
    if (t->lower->ops->shutdown)
        t->lower->ops->shutdown(t->lower, fd);
}

static void ws_tp_free(transport_t *t)
{
    transport_t *lower = t->lower;
    ws_free((ws_t *)t);
    tp_free(lower);
}

static const char *ws_tp_describe(const transport_t *t, char *buf, size_t size)
{
    char below[128];
    if (t->lower->ops->describe)
        snprintf(buf, size, "WebSocket, %s", tp_describe(t->lower, below, sizeof(below)));
    else
        snprintf(buf, size, "WebSocket");
    return buf;
}

static const transport_ops_t ws_ops = {
    .name = "ws",
    .read = ws_tp_read,
    .write = ws_tp_write,
    .pending = ws_tp_pending,
    .waiting = ws_tp_waiting,
    .shutdown = ws_tp_shutdown,
    .free = ws_tp_free,
    .describe = ws_tp_describe,
};

transport_t *ws_transport_new(const conf_listener_t *l, transport_t *lower)
{
    ws_t *ws = ws_new(l);
    ws->tp.ops = &ws_ops;
    ws->tp.lower = lower;
    return &ws->tp;
}
