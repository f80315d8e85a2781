/* lora_pkt.c -- the packet forwarder's datagrams read and written (see
 * lora_pkt.h).  Pure functions: any thread, no state; the JSON through
 * jansson, reals written with 15 significant digits so that 868.1 stays
 * 868.1 (a round trip of what the gateway sent, not its exact text). */
#include "lora_pkt.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "b64.h"

#define LORA_JSON_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15))

static const char *const type_names[LORA_NTYPES] = {"push_data", "push_ack", "pull_data",
                                                    "pull_resp", "pull_ack", "tx_ack"};

const char *lora_type_name(uint8_t type)
{
    return type < LORA_NTYPES ? type_names[type] : "unknown";
}

const char *lora_err_name(int err)
{
    switch (err) {
    case LORA_OK:
        return "none";
    case LORA_E_SHORT:
        return "short";
    case LORA_E_VERSION:
        return "version";
    case LORA_E_TYPE:
        return "type";
    default:
        return "json";
    }
}

int lora_hdr_parse(const uint8_t *buf, size_t len, lora_hdr_t *h)
{
    memset(h, 0, sizeof(*h));
    if (len < 4)
        return LORA_E_SHORT;
    h->version = buf[0];
    h->token = (uint16_t)((buf[1] << 8) | buf[2]);
    h->type = buf[3];
    if (h->version != 1 && h->version != 2)
        return LORA_E_VERSION;
    switch (h->type) {
    case LORA_PUSH_DATA:
    case LORA_PULL_DATA:
    case LORA_TX_ACK:
        break;
    default: /* what the server sends, or unknown */
        return LORA_E_TYPE;
    }
    if (len < 12)
        return LORA_E_SHORT;
    uint64_t e = 0;
    for (int i = 0; i < 8; i++)
        e = (e << 8) | buf[4 + i];
    h->eui = e;
    h->json = buf + 12;
    h->json_len = len - 12;
    return LORA_OK;
}

void lora_ack_encode(uint8_t out[4], uint8_t version, uint16_t token, uint8_t type)
{
    out[0] = version;
    out[1] = (uint8_t)(token >> 8);
    out[2] = (uint8_t)token;
    out[3] = type;
}

size_t lora_resp_encode(uint8_t *out, size_t cap, uint8_t version, uint16_t token, const char *json,
                        size_t json_len)
{
    if (cap < 4 || json_len > cap - 4)
        return 0;
    lora_ack_encode(out, version, version == 1 ? 0 : token, LORA_PULL_RESP);
    memcpy(out + 4, json, json_len);
    return 4 + json_len;
}

void lora_eui_hex(uint64_t eui, char out[17])
{
    static const char hx[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--) {
        out[i] = hx[eui & 15];
        eui >>= 4;
    }
    out[16] = '\0';
}

int lora_eui_parse(const char *s, size_t len, uint64_t *eui)
{
    if (len != 16)
        return -1;
    uint64_t e = 0;
    for (size_t i = 0; i < 16; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        e = (e << 4) | (uint64_t)d;
    }
    *eui = e;
    return 0;
}

int lora_devaddr(const char *b64, size_t len, uint32_t *addr)
{
    /* the text is bounded by the datagram (64 KiB at most) */
    if (len < 8)
        return -1;
    size_t cap = B64_DECODED_MAX(len) + 1;
    uint8_t *b = malloc(cap);
    long n = b ? b64_decode(b64, len, b, cap) : -1;
    int rc = -1;
    if (n >= 5 && ((b[0] & 0xE0) == 0x40 || (b[0] & 0xE0) == 0x80)) {
        *addr = (uint32_t)b[1] | (uint32_t)b[2] << 8 | (uint32_t)b[3] << 16 | (uint32_t)b[4] << 24;
        rc = 0;
    }
    free(b);
    return rc;
}

static void emit(json_t *o, int kind, int has_da, uint32_t da, lora_out_fn fn, void *ud)
{
    char *text = json_dumps(o, LORA_JSON_FLAGS);
    if (text) {
        fn(kind, has_da, da, text, strlen(text), ud);
        free(text);
    }
}

int lora_push_parse(const uint8_t *json, size_t len, uint64_t eui, uint64_t received_ms,
                    lora_out_fn fn, void *ud, uint32_t *skipped)
{
    *skipped = 0;
    json_t *root = json_loadb((const char *)json, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        return -1;
    }
    char hex[17];
    lora_eui_hex(eui, hex);
    int n = 0;
    json_t *rx = json_object_get(root, "rxpk");
    if (rx && !json_is_array(rx)) {
        json_decref(root);
        return -1;
    }
    size_t i;
    json_t *p;
    json_array_foreach(rx, i, p)
    {
        if (!json_is_object(p)) {
            (*skipped)++;
            continue;
        }
        json_object_set_new(p, "gateway", json_string(hex));
        json_object_set_new(p, "received_ms", json_integer((json_int_t)received_ms));
        json_t *d = json_object_get(p, "data");
        uint32_t da = 0;
        int has = json_is_string(d) &&
                  lora_devaddr(json_string_value(d), json_string_length(d), &da) == 0;
        emit(p, LORA_OUT_UP, has, da, fn, ud);
        n++;
    }
    json_t *st = json_object_get(root, "stat");
    if (json_is_object(st)) {
        json_object_set_new(st, "gateway", json_string(hex));
        json_object_set_new(st, "received_ms", json_integer((json_int_t)received_ms));
        emit(st, LORA_OUT_STAT, 0, 0, fn, ud);
        n++;
    } else if (st) {
        (*skipped)++;
    }
    json_decref(root);
    return n;
}

char *lora_txack_json(const uint8_t *json, size_t len, uint64_t eui, uint16_t token,
                      uint64_t received_ms, int *is_error)
{
    *is_error = 0;
    const char *err = "NONE";
    json_t *root = NULL;
    /* v2 gateways send no JSON, or a NUL, when all went well */
    while (len > 0 && (json[len - 1] == '\0' || json[len - 1] == ' ' || json[len - 1] == '\n'))
        len--;
    if (len > 0) {
        root = json_loadb((const char *)json, len, 0, NULL);
        if (!json_is_object(root)) {
            json_decref(root);
            return NULL;
        }
        json_t *a = json_object_get(root, "txpk_ack");
        json_t *e = json_is_object(a) ? json_object_get(a, "error") : NULL;
        if (json_is_string(e))
            err = json_string_value(e);
    }
    *is_error = strcmp(err, "NONE") != 0;
    char hex[17];
    lora_eui_hex(eui, hex);
    json_t *o = json_pack("{s:s, s:i, s:s, s:I}", "gateway", hex, "token", (int)token, "error", err,
                          "received_ms", (json_int_t)received_ms);
    char *text = o ? json_dumps(o, LORA_JSON_FLAGS) : NULL;
    json_decref(o);
    json_decref(root);
    return text;
}

char *lora_down_json(const uint8_t *payload, size_t len)
{
    json_t *root = json_loadb((const char *)payload, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        return NULL;
    }
    json_t *tx = json_object_get(root, "txpk");
    json_t *out;
    if (tx) {
        if (!json_is_object(tx) || json_object_size(root) != 1) {
            json_decref(root);
            return NULL;
        }
        out = json_incref(root);
    } else {
        out = json_pack("{s:O}", "txpk", root);
    }
    char *text = out ? json_dumps(out, LORA_JSON_FLAGS) : NULL;
    json_decref(out);
    json_decref(root);
    return text;
}

size_t lora_topic(const char *tpl, const char *eui_hex, int64_t devaddr, char *out, size_t cap)
{
    size_t n = 0;
    char da[9];
    if (devaddr >= 0)
        snprintf(da, sizeof(da), "%08x", (unsigned)devaddr);
    for (const char *q = tpl; *q;) {
        const char *rep = NULL;
        size_t skip = 1;
        if (strncmp(q, "{gateway}", 9) == 0) {
            rep = eui_hex;
            skip = 9;
        } else if (devaddr >= 0 && strncmp(q, "{devaddr}", 9) == 0) {
            rep = da;
            skip = 9;
        }
        size_t rl = rep ? strlen(rep) : 1;
        if (n + rl + 1 > cap)
            return 0;
        memcpy(out + n, rep ? rep : q, rl);
        n += rl;
        q += skip;
    }
    if (n == 0 || n + 1 > cap)
        return 0;
    out[n] = '\0';
    return n;
}
