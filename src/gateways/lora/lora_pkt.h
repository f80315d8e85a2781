/* lora_pkt.h -- the Semtech UDP packet forwarder protocol (versions 1 and
 * 2): datagrams in and out, with no state, no thread and no socket, so the
 * unit tests (tests/unit/test_lora_pkt.c) and the fuzz target
 * (tests/fuzz/fuzz_lora.c) drive it alone.
 *
 * A datagram: [version 1|2][token 2 bytes][type] then, by type:
 *   PUSH_DATA 0x00  gateway EUI (8 bytes) + JSON {"rxpk":[...], "stat":{...}}
 *   PUSH_ACK  0x01  nothing (to the gateway)
 *   PULL_DATA 0x02  gateway EUI
 *   PULL_RESP 0x03  JSON {"txpk":{...}} (to the gateway; v1: token 0)
 *   PULL_ACK  0x04  nothing (to the gateway)
 *   TX_ACK    0x05  gateway EUI + optional JSON {"txpk_ack":{"error":...}}
 * lora.c owns the socket and what is published; this file only reads and
 * writes bytes and JSON text.
 */
#ifndef ANTENNA_LORA_PKT_H
#define ANTENNA_LORA_PKT_H

#include <stddef.h>
#include <stdint.h>

enum {
    LORA_PUSH_DATA = 0x00,
    LORA_PUSH_ACK = 0x01,
    LORA_PULL_DATA = 0x02,
    LORA_PULL_RESP = 0x03,
    LORA_PULL_ACK = 0x04,
    LORA_TX_ACK = 0x05,
    LORA_NTYPES = 6
};

/* Why a datagram was refused (lora_hdr_parse), 0: none. */
enum {
    LORA_OK = 0,
    LORA_E_SHORT,   /* shorter than its type's header */
    LORA_E_VERSION, /* not version 1 or 2 */
    LORA_E_TYPE,    /* a type a gateway does not send (or unknown) */
    LORA_E_JSON     /* the JSON part is not what the type needs */
};

typedef struct {
    uint8_t version;
    uint16_t token; /* as the two bytes read, big-endian */
    uint8_t type;
    uint64_t eui;        /* the gateway's EUI (PUSH_DATA, PULL_DATA, TX_ACK) */
    const uint8_t *json; /* what follows the header (may be empty) */
    size_t json_len;
} lora_hdr_t;

/* A datagram from a gateway: LORA_OK with *h, or LORA_E_*. */
int lora_hdr_parse(const uint8_t *buf, size_t len, lora_hdr_t *h);
/* "push_data", ... for a type < LORA_NTYPES, else "unknown". */
const char *lora_type_name(uint8_t type);
/* The error's name for the log: "short", "version", "type", "json". */
const char *lora_err_name(int err);

/* The 4-byte answer (PUSH_ACK, PULL_ACK) into out[4]. */
void lora_ack_encode(uint8_t out[4], uint8_t version, uint16_t token, uint8_t type);
/* A PULL_RESP with json (json_len bytes) into out[cap]: its length, or 0
 * when it does not fit. */
size_t lora_resp_encode(uint8_t *out, size_t cap, uint8_t version, uint16_t token, const char *json,
                        size_t json_len);

/* The 16 lowercase hex digits of eui, NUL-terminated, into out[17]. */
void lora_eui_hex(uint64_t eui, char out[17]);
/* "0123456789abcdef" (case-insensitive, 16 digits) -> 0 and *eui, else -1. */
int lora_eui_parse(const char *s, size_t len, uint64_t *eui);

/* The DevAddr of a LoRaWAN data uplink whose PHYPayload is b64 (the
 * rxpk's base64 "data"): MType unconfirmed (MHDR 0x40) or confirmed (0x80)
 * data up, DevAddr the 4 bytes after MHDR, little-endian.  0 and *addr, or
 * -1 (not base64, too short, another MType). */
int lora_devaddr(const char *b64, size_t len, uint32_t *addr);

/* One message to publish, from a PUSH_DATA's JSON. */
enum { LORA_OUT_UP = 0, LORA_OUT_STAT };
typedef void (*lora_out_fn)(int kind, int has_devaddr, uint32_t devaddr, const char *payload,
                            size_t len, void *ud);
/* The JSON of a PUSH_DATA: for each rxpk object, the object with
 * "gateway" (eui hex) and "received_ms" added (kind LORA_OUT_UP, with its
 * DevAddr when the data gives one); for "stat", the object with "gateway"
 * added (LORA_OUT_STAT).  Returns the number of messages given to fn, or
 * -1 when the text is not a JSON object (nothing given).  An rxpk item
 * that is not an object is skipped (counted in *skipped). */
int lora_push_parse(const uint8_t *json, size_t len, uint64_t eui, uint64_t received_ms,
                    lora_out_fn fn, void *ud, uint32_t *skipped);

/* The JSON published for a TX_ACK: {"gateway", "token", "error",
 * "received_ms"} ("error": the txpk_ack's error, "NONE" when absent); a
 * malloc'd text, or NULL when json is present but not a JSON object.
 * *is_error: the error was not "NONE". */
char *lora_txack_json(const uint8_t *json, size_t len, uint64_t eui, uint16_t token,
                      uint64_t received_ms, int *is_error);

/* A downlink message's payload (a txpk object, or {"txpk":{...}}) as the
 * PULL_RESP's JSON {"txpk":{...}}: a malloc'd text, or NULL. */
char *lora_down_json(const uint8_t *payload, size_t len);

/* A topic template with "{gateway}" (the EUI hex) and "{devaddr}" (8
 * lowercase hex digits; devaddr < 0: none) replaced, into out[cap]: its
 * length, or 0 when it does not fit. */
size_t lora_topic(const char *tpl, const char *eui_hex, int64_t devaddr, char *out, size_t cap);

#endif
