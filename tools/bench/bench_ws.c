/* bench_ws.c -- antenna-bench --ws: MQTT over WebSocket (RFC 6455), client side.
 *
 * After TCP connect (and the TLS handshake with --tls: wss) the client writes
 * an HTTP/1.1 upgrade request (GET --ws-path, Host, Upgrade: websocket,
 * Connection: Upgrade, a random 16-byte Sec-WebSocket-Key, version 13,
 * Sec-WebSocket-Protocol: mqtt) and waits in CS_WS for the response, which
 * must be "HTTP/1.1 101", carry Upgrade: websocket, Connection: Upgrade,
 * Sec-WebSocket-Accept = base64(SHA-1(key + GUID)) and select the "mqtt"
 * subprotocol.  Anything else fails the attempt with the reason (status and
 * reason phrase for a refusal).  Then CONNECT is written as usual.
 *
 * Output: MQTT packets are still appended to the connection's buffer by
 * reserve(); the bytes appended since the last frame (ws->raw, always the
 * tail of the buffer) become one masked binary frame when the buffer is
 * flushed (once per loop turn) or before a control frame is queued.  Mask
 * keys come from a per-connection xorshift32.
 *
 * Input: the broker's frames are parsed in place from the worker's read
 * buffer; binary and continuation payloads go straight to the MQTT framing
 * (client_mqtt_in), ping is answered with a pong carrying the same payload,
 * pong is ignored, close ends the connection (a close frame is echoed first,
 * best effort).  Masked, text, reserved-opcode, RSV-flagged, fragmented
 * control and oversized control frames are protocol errors.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "bench_worker.h"
#include "util.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_HTTP_MAX 4096 /* upgrade response header, bytes */

struct bench_ws {
    uint64_t left;    /* payload bytes left of the current frame */
    uint32_t raw;     /* unframed MQTT bytes at the tail of obuf */
    uint32_t mask;    /* xorshift32 state for mask keys */
    uint8_t open;     /* 101 accepted: MQTT bytes are framed */
    uint8_t in_frame; /* header complete, payload being read */
    uint8_t hlen;     /* header bytes collected */
    uint8_t op;       /* opcode of the current frame */
    uint8_t clen;     /* control payload bytes collected */
    uint8_t hdr[14];
    uint8_t ctrl[125];
    char key[25]; /* base64 of the 16-byte nonce */
    char *http;   /* upgrade response collected (CS_WS only) */
    uint32_t http_len;
};

void ws_client_init(client_t *c)
{
    c->ws = an_calloc(1, sizeof(*c->ws));
}

void ws_reset(client_t *c)
{
    bench_ws_t *ws = c->ws;
    if (!ws)
        return;
    free(ws->http);
    ws->http = NULL;
    ws->http_len = 0;
    ws->open = ws->in_frame = ws->hlen = ws->clen = 0;
    ws->raw = 0;
    ws->left = 0;
}

int ws_open(const client_t *c)
{
    return c->ws && c->ws->open;
}

void ws_count_raw(client_t *c, size_t n)
{
    c->ws->raw += (uint32_t)n;
}

static uint32_t mask_next(bench_ws_t *ws)
{
    uint32_t x = ws->mask;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    ws->mask = x;
    return x;
}

static size_t hdr_size(uint64_t len)
{
    return (len < 126 ? 2 : len < 65536 ? 4 : 10) + 4;
}

/* Header for a FIN frame of opcode op and payload length len, masked with
 * key; returns its length. */
static size_t hdr_write(uint8_t *h, uint8_t op, uint64_t len, uint32_t key)
{
    size_t i = 0;
    h[i++] = (uint8_t)(0x80 | op);
    if (len < 126) {
        h[i++] = (uint8_t)(0x80 | len);
    } else if (len < 65536) {
        h[i++] = 0x80 | 126;
        h[i++] = (uint8_t)(len >> 8);
        h[i++] = (uint8_t)len;
    } else {
        h[i++] = 0x80 | 127;
        for (int s = 56; s >= 0; s -= 8)
            h[i++] = (uint8_t)(len >> s);
    }
    memcpy(h + i, &key, 4);
    return i + 4;
}

static void mask_bytes(uint8_t *p, size_t n, uint32_t key)
{
    uint64_t k8 = (uint64_t)key | ((uint64_t)key << 32);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        v ^= k8;
        memcpy(p + i, &v, 8);
    }
    const uint8_t *kb = (const uint8_t *)&key;
    for (; i < n; i++)
        p[i] ^= kb[i & 3];
}

/* Turn the unframed tail of obuf into one masked binary frame. */
void ws_seal(client_t *c)
{
    bench_ws_t *ws = c->ws;
    uint32_t n = ws->raw;
    if (!n)
        return;
    ws->raw = 0;
    size_t hl = hdr_size(n);
    buf_make_room(&c->obuf, &c->olen, &c->ooff, &c->ocap, hl);
    uint8_t *start = c->obuf + c->olen - n;
    memmove(start + hl, start, n);
    uint32_t key = mask_next(ws);
    hdr_write(start, 2, n, key);
    mask_bytes(start + hl, n, key);
    c->olen += (uint32_t)hl;
}

/* A control frame (pong, close), after sealing what is pending. */
static void ws_control(client_t *c, uint8_t op, const uint8_t *p, size_t n)
{
    bench_ws_t *ws = c->ws;
    ws_seal(c);
    uint32_t key = mask_next(ws);
    uint8_t *o = client_reserve(c, hdr_size(n) + n);
    ws->raw = 0; /* reserve counted these bytes as MQTT: they are framed already */
    size_t hl = hdr_write(o, op, n, key);
    memcpy(o + hl, p, n);
    mask_bytes(o + hl, n, key);
}

/* ---- the upgrade ---------------------------------------------------------------- */

void ws_start(client_t *c)
{
    bench_ws_t *ws = c->ws;
    ws_reset(c);
    uint8_t nonce[16];
    uint64_t a = rng_next(), b = rng_next();
    memcpy(nonce, &a, 8);
    memcpy(nonce + 8, &b, 8);
    EVP_EncodeBlock((unsigned char *)ws->key, nonce, 16);
    ws->mask = (uint32_t)(rng_next() >> 32) | 1;

    const bench_addr_t *h = &g_opt.hosts[c->g % g_opt.nhosts];
    uint16_t port = g_opt.ports[c->g % g_opt.nports];
    char ip[INET6_ADDRSTRLEN] = "localhost", host[INET6_ADDRSTRLEN + 16];
    if (h->ss.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&h->ss)->sin6_addr, ip, sizeof(ip));
        snprintf(host, sizeof(host), "[%s]:%u", ip, port);
    } else {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)&h->ss)->sin_addr, ip, sizeof(ip));
        snprintf(host, sizeof(host), "%s:%u", ip, port);
    }
    char req[1536];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
                     g_opt.ws_path, host, ws->key);
    memcpy(client_reserve(c, (size_t)n), req, (size_t)n);
}

/* Does the comma-separated list v (vlen bytes) hold token (case-insensitive)? */
static int list_has(const char *v, size_t vlen, const char *token)
{
    size_t tl = strlen(token), i = 0;
    while (i < vlen) {
        while (i < vlen && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < vlen && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, token, tl) == 0)
            return 1;
    }
    return 0;
}

/* The complete response header (len bytes, ending with CRLF CRLF). */
static int check_response(bench_ws_t *ws, char *r, size_t len, char *why, size_t wsize)
{
    char *eol = strstr(r, "\r\n");
    *eol = 0;
    if (strncmp(r, "HTTP/1.1 ", 9) != 0 || len < 12) {
        snprintf(why, wsize, "WebSocket upgrade: bad response line '%.80s'", r);
        return -1;
    }
    int status = atoi(r + 9);
    if (status != 101) {
        snprintf(why, wsize, "WebSocket upgrade refused: HTTP %.80s", r + 9);
        return -1;
    }
    int up = 0, conn = 0, acc = 0, proto = 0;
    char *line = eol + 2;
    while (*line && !(line[0] == '\r' && line[1] == '\n')) {
        char *end = strstr(line, "\r\n");
        *end = 0;
        char *colon = strchr(line, ':');
        if (!colon) {
            snprintf(why, wsize, "WebSocket upgrade: bad header line '%.80s'", line);
            return -1;
        }
        *colon = 0;
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t vl = strlen(v);
        while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            v[--vl] = 0;
        if (!strcasecmp(line, "Upgrade")) {
            up = !strcasecmp(v, "websocket");
        } else if (!strcasecmp(line, "Connection")) {
            conn = list_has(v, vl, "upgrade");
        } else if (!strcasecmp(line, "Sec-WebSocket-Accept")) {
            char in[64], want[32];
            unsigned char dig[SHA_DIGEST_LENGTH];
            int l = snprintf(in, sizeof(in), "%s%s", ws->key, WS_GUID);
            SHA1((const unsigned char *)in, (size_t)l, dig);
            EVP_EncodeBlock((unsigned char *)want, dig, SHA_DIGEST_LENGTH);
            if (strcmp(v, want) != 0) {
                snprintf(why, wsize,
                         "WebSocket upgrade: wrong Sec-WebSocket-Accept '%.40s' "
                         "(expected %s)",
                         v, want);
                return -1;
            }
            acc = 1;
        } else if (!strcasecmp(line, "Sec-WebSocket-Protocol")) {
            if (strcmp(v, "mqtt") != 0) {
                snprintf(why, wsize,
                         "WebSocket upgrade: broker chose subprotocol '%.40s', "
                         "not mqtt",
                         v);
                return -1;
            }
            proto = 1;
        }
        line = end + 2;
    }
    const char *miss = !up      ? "Upgrade: websocket"
                       : !conn  ? "Connection: Upgrade"
                       : !acc   ? "Sec-WebSocket-Accept"
                       : !proto ? "Sec-WebSocket-Protocol: mqtt"
                                : NULL;
    if (miss) {
        snprintf(why, wsize, "WebSocket upgrade: 101 response without %s", miss);
        return -1;
    }
    return 0;
}

/* ---- input ------------------------------------------------------------------------ */

static int frame_done(client_t *c, char *why, size_t wsize)
{
    bench_ws_t *ws = c->ws;
    ws->in_frame = 0;
    ws->hlen = 0;
    switch (ws->op) {
    case 0x9: /* ping */
        ws_control(c, 0xA, ws->ctrl, ws->clen);
        return WS_OK;
    case 0x8: { /* close */
        unsigned code = ws->clen >= 2 ? (unsigned)ws->ctrl[0] << 8 | ws->ctrl[1] : 1005;
        snprintf(why, wsize, "WebSocket close from the broker (code %u%s%.*s)", code,
                 ws->clen > 2 ? ": " : "", ws->clen > 2 ? (int)ws->clen - 2 : 0,
                 (const char *)ws->ctrl + 2);
        ws_control(c, 0x8, ws->ctrl, ws->clen >= 2 ? 2 : 0);
        client_flush(c); /* best effort: the connection ends now */
        return WS_CLOSED;
    }
    default:
        return WS_OK;
    }
}

int ws_input(client_t *c, uint8_t *buf, size_t n, char *why, size_t wsize)
{
    bench_ws_t *ws = c->ws;
    size_t off = 0;
    if (!ws->open) {
        if (!ws->http)
            ws->http = an_malloc(WS_HTTP_MAX + 1);
        size_t room = WS_HTTP_MAX - ws->http_len;
        size_t take = n < room ? n : room;
        memcpy(ws->http + ws->http_len, buf, take);
        size_t old = ws->http_len;
        ws->http_len += (uint32_t)take;
        ws->http[ws->http_len] = 0;
        /* the end of the header may straddle reads: search from 3 bytes back */
        char *end = strstr(ws->http + (old > 3 ? old - 3 : 0), "\r\n\r\n");
        if (!end) {
            if (ws->http_len >= WS_HTTP_MAX) {
                snprintf(why, wsize, "WebSocket upgrade: response header over %d bytes",
                         WS_HTTP_MAX);
                return WS_FAIL;
            }
            return WS_OK;
        }
        size_t hlen = (size_t)(end - ws->http) + 4;
        end[2] = 0; /* keep the last header line's CRLF, cut the blank line */
        end[3] = 0;
        int rc = check_response(ws, ws->http, hlen, why, wsize);
        free(ws->http);
        ws->http = NULL;
        ws->http_len = 0;
        if (rc < 0)
            return WS_FAIL;
        ws->open = 1;
        off = hlen - old; /* bytes of buf after the header: frames */
        if (client_ws_open(c) < 0)
            return WS_GONE;
    }
    while (off < n) {
        if (!ws->in_frame) {
            size_t need = 2;
            if (ws->hlen >= 2) {
                uint8_t l7 = ws->hdr[1] & 0x7f;
                need += l7 == 126 ? 2 : l7 == 127 ? 8 : 0;
            }
            while (ws->hlen < need && off < n)
                ws->hdr[ws->hlen++] = buf[off++];
            if (ws->hlen < need)
                return WS_OK;
            if (need == 2) {
                uint8_t b0 = ws->hdr[0], b1 = ws->hdr[1];
                uint8_t op = b0 & 0x0f;
                if (b0 & 0x70) {
                    snprintf(why, wsize, "WebSocket frame with RSV bits set (0x%02x)", b0);
                    return WS_PROTO;
                }
                if (b1 & 0x80) {
                    snprintf(why, wsize, "%s", "masked WebSocket frame from the broker");
                    return WS_PROTO;
                }
                if (op == 0x1) {
                    snprintf(why, wsize, "%s", "WebSocket text frame (MQTT needs binary)");
                    return WS_PROTO;
                }
                if (op != 0x0 && op != 0x2 && op != 0x8 && op != 0x9 && op != 0xA) {
                    snprintf(why, wsize, "WebSocket frame with reserved opcode 0x%x", op);
                    return WS_PROTO;
                }
                if (op & 0x8 && (!(b0 & 0x80) || (b1 & 0x7f) > 125)) {
                    snprintf(why, wsize, "%s", "fragmented or oversized WebSocket control frame");
                    return WS_PROTO;
                }
                if ((b1 & 0x7f) >= 126)
                    continue; /* extended length follows */
            }
            uint8_t l7 = ws->hdr[1] & 0x7f;
            uint64_t len = l7;
            if (l7 == 126) {
                len = (uint64_t)ws->hdr[2] << 8 | ws->hdr[3];
            } else if (l7 == 127) {
                len = 0;
                for (int i = 2; i < 10; i++)
                    len = len << 8 | ws->hdr[i];
                if (len >> 63) {
                    snprintf(why, wsize, "%s", "WebSocket frame length with the top bit set");
                    return WS_PROTO;
                }
            }
            ws->op = ws->hdr[0] & 0x0f;
            ws->left = len;
            ws->clen = 0;
            ws->in_frame = 1;
            if (len == 0) {
                int rc = frame_done(c, why, wsize);
                if (rc != WS_OK)
                    return rc;
            }
            continue;
        }
        size_t take = n - off;
        if (ws->left < take)
            take = (size_t)ws->left;
        if (ws->op & 0x8) {
            memcpy(ws->ctrl + ws->clen, buf + off, take);
            ws->clen = (uint8_t)(ws->clen + take);
        } else if (client_mqtt_in(c, buf + off, take) < 0) {
            return WS_GONE;
        }
        off += take;
        ws->left -= take;
        if (ws->left == 0) {
            int rc = frame_done(c, why, wsize);
            if (rc != WS_OK)
                return rc;
        }
    }
    return WS_OK;
}
