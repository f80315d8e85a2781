/* fuzz_ws.c -- libFuzzer target for the WebSocket transport (src/net/net_ws.c):
 * the HTTP/1.1 upgrade parser, then wslay's framing on in-memory buffers.
 *
 * Input: byte 0 picks the split pattern (0: one byte at a time, k: chunks of
 * 1..k bytes, varying), byte 1 the listener (bit 0: ws_max_frame 64 instead
 * of 1 MiB; bit 1: ws_allowed_origins set), the rest is what a client sends:
 * the upgrade request and then frames.  The stream is fed twice, whole and
 * in the chosen splits, the way conn.c does (ws_handshake until it is done,
 * the bytes after the request to ws_recv); the MQTT bytes the binary
 * messages carried are echoed back with ws_send, and the output is taken
 * as a socket would.  Both runs must agree: upgraded or not, the MQTT byte
 * stream, whether it ended in an error.  Contract checks: a handshake never
 * claims more bytes than it got, an answer (101 or an error response) is
 * in the output when it is done or failed, an error always has a reason.
 * Any disagreement aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "net_ws.h"

#include "fuzz_check.h"

typedef struct {
    int upgraded, failed, closed;
    uint8_t *mqtt; /* MQTT bytes of the binary messages, concatenated */
    size_t nmqtt, capmqtt;
} run_t;

static void keep(run_t *r, const uint8_t *p, size_t n)
{
    if (n == 0)
        return;
    if (r->nmqtt + n > r->capmqtt) {
        size_t c = r->capmqtt ? r->capmqtt : 256;
        while (c < r->nmqtt + n)
            c *= 2;
        r->mqtt = realloc(r->mqtt, c);
        CHECK(r->mqtt != NULL);
        r->capmqtt = c;
    }
    memcpy(r->mqtt + r->nmqtt, p, n);
    r->nmqtt += n;
}

/* Take the output as the socket would, touching every byte. */
static void drain(ws_t *ws)
{
    volatile uint8_t sink = 0;
    while (ws_out_pending(ws)) {
        size_t n = ws_out_pending(ws);
        const uint8_t *p = ws_out(ws);
        size_t take = n > 1000 ? 1000 : n;
        for (size_t i = 0; i < take; i++)
            sink ^= p[i];
        ws_out_consumed(ws, take);
    }
    (void)sink;
}

static void feed(const conf_listener_t *l, const uint8_t *data, size_t size, int split, run_t *r)
{
    ws_t *ws = ws_new(l);
    size_t off = 0, step = 0;
    while (off < size && !r->failed && !r->closed) {
        size_t chunk = size - off;
        if (split >= 0) {
            size_t k = split == 0 ? 1 : 1 + (step++ * 7 + (size_t)split) % (size_t)split;
            chunk = chunk < k ? chunk : k;
        }
        const uint8_t *p = data + off;
        const char *why = NULL;
        if (!ws_upgraded(ws)) {
            size_t used = 0;
            int rc = ws_handshake(ws, p, chunk, &used, &why);
            CHECK(used <= chunk);
            if (rc == WS_HS_MORE) {
                CHECK(used == chunk);
                CHECK(!ws_upgraded(ws));
                off += chunk;
                continue;
            }
            CHECK(ws_out_pending(ws) > 0); /* 101, or the error response */
            drain(ws);
            if (rc == WS_HS_FAIL) {
                CHECK(why != NULL);
                CHECK(!ws_upgraded(ws));
                r->failed = 1;
                break;
            }
            CHECK(rc == WS_HS_DONE && ws_upgraded(ws));
            r->upgraded = 1;
            off += used;
            continue;
        }
        const uint8_t *plain = NULL;
        size_t nplain = 0;
        int rc = ws_recv(ws, p, chunk, &plain, &nplain, &why);
        off += chunk;
        CHECK(nplain == 0 || plain != NULL);
        keep(r, plain, nplain);
        if (nplain)
            (void)ws_send(ws, plain, nplain); /* the broker's answer */
        drain(ws);
        if (rc != 0) {
            CHECK(why != NULL);
            r->closed = 1;
        }
    }
    ws_close(ws, 1000);
    drain(ws);
    ws_free(ws);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int split = data[0];
    uint8_t opts = data[1];
    data += 2;
    size -= 2;
    conf_listener_t l;
    memset(&l, 0, sizeof(l));
    snprintf(l.ws_path, sizeof(l.ws_path), "/mqtt");
    l.ws_max_frame = (opts & 1) ? 64 : 1048576;
    if (opts & 2) {
        snprintf(l.ws_allowed_origins[0], sizeof(l.ws_allowed_origins[0]), "https://a.example");
        snprintf(l.ws_allowed_origins[1], sizeof(l.ws_allowed_origins[1]), "http://localhost:8080");
        l.nws_allowed_origins = 2;
    }
    run_t whole = {0}, parts = {0};
    feed(&l, data, size, -1, &whole);
    feed(&l, data, size, split, &parts);
    CHECK(whole.upgraded == parts.upgraded);
    CHECK(whole.failed == parts.failed);
    CHECK(whole.nmqtt == parts.nmqtt);
    CHECK(whole.nmqtt == 0 || memcmp(whole.mqtt, parts.mqtt, whole.nmqtt) == 0);
    free(whole.mqtt);
    free(parts.mqtt);
    return 0;
}
