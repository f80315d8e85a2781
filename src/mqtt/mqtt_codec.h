/* mqtt_codec.h -- MQTT 3.1 / 3.1.1 wire codec: framing, decoding, encoding.
 *
 * Pure code: bytes in, structs out, no I/O, no allocation except the framer's
 * private buffer for a packet split across reads.  The same code serves the
 * broker, antenna-bench and the fuzzers.
 *
 * Decoded structures never copy: strings and payloads point into the packet
 * body handed to the decoder, which must outlive them.  Every decoder checks
 * every rule of the specification that makes a packet malformed or a protocol
 * error and, on failure, returns a negative MQTT_ERR_* and sets *why to a
 * static string naming the rule (for example "[MQTT-3.1.2-3] CONNECT reserved
 * flag set").
 */
#ifndef ANTENNA_MQTT_CODEC_H
#define ANTENNA_MQTT_CODEC_H

#include <stddef.h>
#include <stdint.h>

#define MQTT_PROTO_V31  3 /* "MQIsdp" */
#define MQTT_PROTO_V311 4 /* "MQTT" level 4 */
#define MQTT_PROTO_V5   5 /* "MQTT" level 5 (not decoded yet: CONNACK 1) */

#define MQTT_MAX_REMAINING 268435455u /* 256 MiB - 1, four length bytes */

enum mqtt_type {
    MQTT_CONNECT = 1,
    MQTT_CONNACK = 2,
    MQTT_PUBLISH = 3,
    MQTT_PUBACK = 4,
    MQTT_PUBREC = 5,
    MQTT_PUBREL = 6,
    MQTT_PUBCOMP = 7,
    MQTT_SUBSCRIBE = 8,
    MQTT_SUBACK = 9,
    MQTT_UNSUBSCRIBE = 10,
    MQTT_UNSUBACK = 11,
    MQTT_PINGREQ = 12,
    MQTT_PINGRESP = 13,
    MQTT_DISCONNECT = 14,
    MQTT_AUTH = 15
};

/* Codec results.  One table (mqtt_err_connack) maps them to CONNACK codes. */
enum mqtt_err {
    MQTT_OK = 0,
    MQTT_ERR_MALFORMED = -1,        /* close the connection */
    MQTT_ERR_PROTOCOL = -2,         /* close the connection */
    MQTT_ERR_TOO_LARGE = -3,        /* remaining length > configured max */
    MQTT_ERR_PROTOCOL_VERSION = -4, /* CONNECT: send CONNACK 1, then close */
    MQTT_ERR_CLIENT_ID = -5         /* CONNECT: send CONNACK 2, then close */
};

/* CONNACK return codes of 3.1.1. */
enum mqtt_connack_rc {
    MQTT_CONNACK_ACCEPTED = 0,
    MQTT_CONNACK_BAD_VERSION = 1,
    MQTT_CONNACK_ID_REJECTED = 2,
    MQTT_CONNACK_UNAVAILABLE = 3,
    MQTT_CONNACK_BAD_CREDENTIALS = 4,
    MQTT_CONNACK_NOT_AUTHORIZED = 5
};

#define MQTT_SUBACK_FAILURE 0x80

/* A length-prefixed string inside a packet.  Not NUL terminated. */
typedef struct {
    const uint8_t *p;
    uint16_t len;
} mqtt_str_t;

/* ---- framing --------------------------------------------------------- */

/* A complete packet: first byte, and body of `len` bytes. */
typedef struct {
    uint8_t hdr; /* type << 4 | flags */
    uint32_t len;
    const uint8_t *body; /* NULL when len == 0 */
} mqtt_raw_t;

#define mqtt_raw_type(r) ((r)->hdr >> 4)
#define mqtt_raw_flags(r) ((r)->hdr & 0x0f)

/* Incremental framer: a state machine over fixed header, remaining length and
 * body that takes bytes in any split.  A packet that arrives whole inside the
 * fed bytes is returned in place (no copy).  A packet split across feeds is
 * gathered in a private buffer sized exactly to that packet (checked against
 * the maximum before allocating), freed on the next call.  An idle framer
 * holds no buffer.  Zero-initialise before use. */
typedef struct {
    uint8_t *buf;       /* partial body, or NULL */
    uint32_t remaining; /* body length of the current packet */
    uint32_t have;      /* body bytes gathered so far */
    uint32_t mult;      /* remaining-length decoding multiplier */
    uint8_t hdr;
    uint8_t state; /* MQTT_PS_* */
    uint8_t len_bytes;
    uint8_t buf_done; /* buf holds a returned packet: free on next call */
} mqtt_parser_t;

enum { MQTT_PS_HDR = 0, MQTT_PS_LEN, MQTT_PS_BODY };

/* Feed `n` bytes.  Returns 1 when a packet is complete (*pkt filled; *used =
 * bytes taken from data, <= n), 0 when all n bytes were taken and no packet
 * is complete yet (*used = n), or a negative MQTT_ERR_*: MQTT_ERR_MALFORMED
 * for a bad remaining length (more than four bytes), MQTT_ERR_TOO_LARGE when
 * the remaining length exceeds max_packet (whole packet size limit minus
 * header is fine to approximate as remaining length > max_packet), and
 * MQTT_ERR_MALFORMED for packet type 0 (MQTT_ERR_TOO_LARGE too if the buffer
 * for a split body cannot be allocated).  On an error *used counts the bytes
 * up to and including the offending one and the parser is left idle, but the
 * stream is unusable: close the connection.  The buffer is allocated only when
 * a body is actually split, so a header split from a whole body is still
 * returned in place.  pkt->body stays valid until the next call on this
 * parser or mqtt_parser_reset().  Fixed-header flags are not checked here. */
int mqtt_parser_next(mqtt_parser_t *ps, const uint8_t *data, size_t n,
                     size_t *used, uint32_t max_packet, mqtt_raw_t *pkt,
                     const char **why);

/* Free any buffer and return to the idle state. */
void mqtt_parser_reset(mqtt_parser_t *ps);

/* ---- decoding (server side: packets a client sends) ------------------- */

typedef struct {
    uint8_t proto; /* MQTT_PROTO_V31 or MQTT_PROTO_V311 */
    uint8_t clean_session;
    uint8_t will_flag;
    uint8_t will_qos;
    uint8_t will_retain;
    uint8_t has_username;
    uint8_t has_password;
    uint16_t keepalive;
    mqtt_str_t client_id;
    mqtt_str_t will_topic;
    mqtt_str_t will_payload; /* binary, len <= 65535 */
    mqtt_str_t username;
    mqtt_str_t password; /* binary */
} mqtt_connect_t;

/* CONNECT.  Protocol name must be "MQTT" (level 4) or "MQIsdp" (level 3);
 * another name is MQTT_ERR_PROTOCOL; a known name with an unsupported level
 * (including 5 for now) is MQTT_ERR_PROTOCOL_VERSION.  Reserved flag,
 * will flag/qos/retain consistency, password-without-username, UTF-8 of the
 * strings (well-formed, no U+0000, no surrogates), will topic without
 * wildcards, no trailing bytes.  Empty client id with clean_session 0, or (for
 * 3.1) a client id that is empty or longer than 23 bytes, is
 * MQTT_ERR_CLIENT_ID -- reported only for an otherwise well-formed CONNECT
 * (every other check comes first), and with *out filled. */
int mqtt_decode_connect(const mqtt_raw_t *r, mqtt_connect_t *out,
                        const char **why);

typedef struct {
    mqtt_str_t topic;
    uint16_t packet_id; /* 0 for QoS 0 */
    uint8_t qos;
    uint8_t retain;
    uint8_t dup;
    const uint8_t *payload;
    uint32_t payload_len;
} mqtt_publish_t;

/* PUBLISH.  QoS 3 is malformed; DUP with QoS 0 is malformed; packet id 0 with
 * QoS > 0 is malformed; topic must be non-empty valid UTF-8 without '+' or
 * '#'.  `proto` is the connection's protocol level. */
int mqtt_decode_publish(const mqtt_raw_t *r, uint8_t proto, mqtt_publish_t *out,
                        const char **why);

/* SUBSCRIBE / UNSUBSCRIBE: validated as a whole by the decoder, then walked
 * with mqtt_sub_next(), which cannot fail. */
typedef struct {
    uint16_t packet_id;
    uint16_t count; /* number of topic filters (>= 1) */
    const uint8_t *p, *end; /* iteration cursor */
    uint8_t with_options;   /* 1 for SUBSCRIBE, 0 for UNSUBSCRIBE */
} mqtt_sub_iter_t;

/* Fixed-header flags must be 0b0010; at least one filter; every filter
 * non-empty valid UTF-8 with '+' and '#' only as whole levels and '#' last;
 * SUBSCRIBE options byte: reserved bits 0 and QoS <= 2; packet id non-zero.
 * No filters is MQTT_ERR_PROTOCOL [MQTT-3.8.3-3, MQTT-3.10.3-2]; more than
 * 65535 filters (count would overflow) is MQTT_ERR_MALFORMED. */
int mqtt_decode_subscribe(const mqtt_raw_t *r, mqtt_sub_iter_t *it,
                          const char **why);
int mqtt_decode_unsubscribe(const mqtt_raw_t *r, mqtt_sub_iter_t *it,
                            const char **why);

/* Returns 1 and the next filter (and its requested QoS for SUBSCRIBE, 0 for
 * UNSUBSCRIBE), or 0 when done. */
int mqtt_sub_next(mqtt_sub_iter_t *it, mqtt_str_t *filter, uint8_t *qos);

/* PUBACK, PUBREC, PUBREL, PUBCOMP (and, client side, UNSUBACK): remaining
 * length exactly 2, flags 0 (PUBREL: 0b0010), packet id non-zero. */
int mqtt_decode_ack(const mqtt_raw_t *r, uint16_t *packet_id, const char **why);

/* PINGREQ, PINGRESP, DISCONNECT: flags 0 and no body. */
int mqtt_decode_empty(const mqtt_raw_t *r, const char **why);

/* Fixed-header check for any packet a client may send to a server: flags as
 * the spec requires for the type; types a server sends (CONNACK, SUBACK,
 * UNSUBACK, PINGRESP) and AUTH (3.1.1) are MQTT_ERR_PROTOCOL; type 0 is
 * MQTT_ERR_MALFORMED.  The decoders above call it too. */
int mqtt_check_client_header(uint8_t hdr, uint8_t proto, const char **why);

/* Client side (bench, tests): CONNACK and SUBACK.  CONNACK: length 2, flags
 * 0, reserved acknowledge flags 0, return code <= 5, session present 0 when
 * the return code is not 0 [MQTT-3.2.2-4]. */
int mqtt_decode_connack(const mqtt_raw_t *r, uint8_t *session_present,
                        uint8_t *rc, const char **why);
/* Copies up to max return codes into rcs; *n = number of codes in the packet
 * (may exceed max). */
int mqtt_decode_suback(const mqtt_raw_t *r, uint16_t *packet_id, uint8_t *rcs,
                       uint32_t max, uint32_t *n, const char **why);

/* ---- validation helpers --------------------------------------------- */

/* Well-formed UTF-8 per RFC 3629, no U+0000, no surrogates [MQTT-1.5.3]. */
int mqtt_utf8_valid(const uint8_t *p, size_t len);
/* Non-empty, valid UTF-8, no '+' or '#' [MQTT-3.3.2-2, MQTT-4.7.3-1]. */
int mqtt_topic_name_valid(const uint8_t *p, size_t len);
/* Non-empty, valid UTF-8, '+' and '#' only as whole levels, '#' last. */
int mqtt_topic_filter_valid(const uint8_t *p, size_t len);

/* ---- encoding --------------------------------------------------------- */
/* Encoders write into `out`, which the caller sizes (the *_size helpers or
 * the fixed sizes given), and return the number of bytes written. */

/* Remaining-length varint: 1..4 bytes; value must be <= MQTT_MAX_REMAINING. */
size_t mqtt_encode_varint(uint8_t *out, uint32_t v);
size_t mqtt_varint_size(uint32_t v);

size_t mqtt_encode_connack(uint8_t *out, uint8_t session_present, uint8_t rc); /* 4 */
/* PUBACK, PUBREC, PUBREL (flags 0b0010 added), PUBCOMP, UNSUBACK: 4 bytes. */
size_t mqtt_encode_ack(uint8_t *out, uint8_t type, uint16_t packet_id);
size_t mqtt_suback_size(uint32_t n);
size_t mqtt_encode_suback(uint8_t *out, uint16_t packet_id, const uint8_t *rcs,
                          uint32_t n);
size_t mqtt_encode_pingresp(uint8_t *out); /* 2 */
size_t mqtt_encode_pingreq(uint8_t *out);  /* 2 */
size_t mqtt_encode_disconnect(uint8_t *out); /* 2 */

/* PUBLISH: fixed header, topic, packet id (when qos > 0), payload. */
size_t mqtt_publish_size(uint16_t topic_len, uint8_t qos, uint32_t payload_len);
size_t mqtt_encode_publish(uint8_t *out, const uint8_t *topic, uint16_t topic_len,
                           uint8_t qos, uint8_t retain, uint8_t dup,
                           uint16_t packet_id, const uint8_t *payload,
                           uint32_t payload_len);

/* Client side (bench, tests). */
typedef struct {
    uint8_t proto; /* MQTT_PROTO_V31 or MQTT_PROTO_V311 */
    uint8_t clean_session;
    uint16_t keepalive;
    const char *client_id; /* NUL-terminated; may be "" */
    const char *username;  /* NULL = absent */
    const char *password;  /* NULL = absent */
    const char *will_topic; /* NULL = no will */
    const uint8_t *will_payload;
    uint16_t will_payload_len;
    uint8_t will_qos;
    uint8_t will_retain;
} mqtt_connect_opts_t;

/* Proto 3 writes "MQIsdp" level 3; any other proto writes "MQTT" with that
 * level (4, or e.g. 5 to test a server's refusal).  Strings <= 65535 bytes. */
size_t mqtt_connect_size(const mqtt_connect_opts_t *o);
size_t mqtt_encode_connect(uint8_t *out, const mqtt_connect_opts_t *o);
/* One filter per packet; qos is the requested QoS. */
size_t mqtt_subscribe_size(uint16_t filter_len);
size_t mqtt_encode_subscribe(uint8_t *out, uint16_t packet_id,
                             const uint8_t *filter, uint16_t filter_len,
                             uint8_t qos);
size_t mqtt_unsubscribe_size(uint16_t filter_len);
size_t mqtt_encode_unsubscribe(uint8_t *out, uint16_t packet_id,
                               const uint8_t *filter, uint16_t filter_len);

/* Name of a packet type for logs ("PUBLISH"), "?" when out of range. */
const char *mqtt_type_name(uint8_t type);

#endif
