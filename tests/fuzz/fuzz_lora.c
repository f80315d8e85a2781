/* fuzz_lora.c -- libFuzzer target for the packet forwarder's datagrams
 * (src/gateways/lora/lora_pkt.c).
 *
 * Input: one datagram as a gateway would send it, also read as a
 * downlink's payload and as a base64 PHYPayload.  Contract checks (a
 * violation aborts): a datagram accepted has version 1 or 2, a type a
 * gateway sends and its EUI; every message a PUSH_DATA gives is a JSON
 * object naming the gateway, with received_ms for an rxpk; a TX_ACK's
 * answer is a JSON object with an error string; a downlink accepted is
 * {"txpk": object}, and its PULL_RESP carries it after a 4-byte header
 * with token 0 for version 1.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateways/lora/lora_pkt.h"

static void check_out(int kind, int has, uint32_t da, const char *p, size_t len, void *ud)
{
    (void)has;
    (void)da;
    const char *hex = ud;
    json_t *o = json_loadb(p, len, 0, NULL);
    if (!json_is_object(o))
        abort();
    json_t *g = json_object_get(o, "gateway");
    if (!json_is_string(g) || strcmp(json_string_value(g), hex) != 0)
        abort();
    if (kind == LORA_OUT_UP && !json_is_integer(json_object_get(o, "received_ms")))
        abort();
    json_decref(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lora_hdr_t h;
    int e = lora_hdr_parse(data, size, &h);
    if (e == LORA_OK) {
        if ((h.version != 1 && h.version != 2) || size < 12 || h.json_len != size - 12)
            abort();
        char hex[17];
        lora_eui_hex(h.eui, hex);
        uint64_t back = 0;
        if (lora_eui_parse(hex, 16, &back) != 0 || back != h.eui)
            abort();
        if (h.type == LORA_PUSH_DATA) {
            uint32_t skipped;
            lora_push_parse(h.json, h.json_len, h.eui, 1, check_out, hex, &skipped);
        } else if (h.type == LORA_TX_ACK) {
            int err;
            char *t = lora_txack_json(h.json, h.json_len, h.eui, h.token, 1, &err);
            if (t) {
                json_t *o = json_loads(t, 0, NULL);
                if (!json_is_string(json_object_get(o, "error")))
                    abort();
                json_decref(o);
                free(t);
            }
        } else if (h.type != LORA_PULL_DATA) {
            abort();
        }
    } else if (e < LORA_E_SHORT || e > LORA_E_TYPE) {
        abort();
    }
    char *d = lora_down_json(data, size);
    if (d) {
        json_t *o = json_loads(d, 0, NULL);
        if (!json_is_object(json_object_get(o, "txpk")) || json_object_size(o) != 1)
            abort();
        json_decref(o);
        size_t dl = strlen(d);
        uint8_t *r = malloc(dl + 4);
        if (lora_resp_encode(r, dl + 4, 1, 0xffff, d, dl) != dl + 4 || r[1] || r[2] ||
            r[3] != LORA_PULL_RESP || memcmp(r + 4, d, dl) != 0)
            abort();
        free(r);
        free(d);
    }
    uint32_t a;
    lora_devaddr((const char *)data, size, &a);
    return 0;
}
