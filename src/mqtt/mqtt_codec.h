/* mqtt_codec.h -- MQTT 3.1 / 3.1.1 / 5.0 wire codec: framing, decoding,
 * encoding.
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
 *
 * MQTT 5.0 was added without changing anything a 3.1 / 3.1.1 caller sees:
 * the structs only grew at their end (properties, for 5.0), the existing
 * functions behave as before for protocol levels 3 and 4, and 5.0 has its
 * own entry points (the *_v5 functions, mqtt_decode_connect_v5ok,
 * mqtt_decode_publish_from) next to the old ones.  mqtt_decode_connect still
 * refuses level 5 with MQTT_ERR_PROTOCOL_VERSION, so a broker that does not
 * speak 5.0 yet keeps answering CONNACK 1.  Properties, their validation and
 * the reason code tables live in mqtt_props.h / mqtt_props.c; the error
 * classes of 5.0 (malformed vs protocol error) are described there.
 */
#ifndef ANTENNA_MQTT_CODEC_H
#define ANTENNA_MQTT_CODEC_H

#include <stddef.h>
#include <stdint.h>

#define MQTT_PROTO_V31 3  /* "MQIsdp" */
#define MQTT_PROTO_V311 4 /* "MQTT" level 4 */
#define MQTT_PROTO_V5 5   /* "MQTT" level 5: see mqtt_decode_connect_v5ok */

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

/* MQTT 5.0 properties (mqtt_props_t) and reason codes: they need the types
 * above, and the packet structs below embed them. */
#include "mqtt_props.h"

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
int mqtt_parser_next(mqtt_parser_t *ps, const uint8_t *data, size_t n, size_t *used,
                     uint32_t max_packet, mqtt_raw_t *pkt, const char **why);

/* Free any buffer and return to the idle state. */
void mqtt_parser_reset(mqtt_parser_t *ps);

/* ---- decoding (server side: packets a client sends) ------------------- */

typedef struct {
    uint8_t proto;         /* MQTT_PROTO_V31, MQTT_PROTO_V311 (or, _v5ok, MQTT_PROTO_V5) */
    uint8_t clean_session; /* Clean Start in 5.0 */
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
    /* MQTT 5.0 only; empty (present == 0, defaults) for 3.1 / 3.1.1. */
    mqtt_props_t props;      /* CONNECT properties */
    mqtt_props_t will_props; /* Will Properties, when will_flag */
} mqtt_connect_t;

/* CONNECT.  Protocol name must be "MQTT" (level 4) or "MQIsdp" (level 3);
 * another name is MQTT_ERR_PROTOCOL; a known name with an unsupported level
 * (including 5: see mqtt_decode_connect_v5ok) is MQTT_ERR_PROTOCOL_VERSION.  Reserved flag,
 * will flag/qos/retain consistency, password-without-username, UTF-8 of the
 * strings (well-formed, no U+0000, no surrogates), will topic without
 * wildcards, no trailing bytes.  Empty client id with clean_session 0, or (for
 * 3.1) a client id that is empty or longer than 23 bytes, is
 * MQTT_ERR_CLIENT_ID -- reported only for an otherwise well-formed CONNECT
 * (every other check comes first), and with *out filled. */
int mqtt_decode_connect(const mqtt_raw_t *r, mqtt_connect_t *out, const char **why);

/* The same with allow_v5 = 0 (mqtt_decode_connect is exactly that).  With
 * allow_v5 != 0, "MQTT" level 5 decodes too: proto = 5, CONNECT properties
 * after the keep alive and Will Properties before the will topic, validated
 * as in mqtt_props.h (out->props, out->will_props); a password without a
 * user name is allowed [MQTT5 3.1.2.9], and an empty client id is accepted
 * whatever Clean Start says (the server assigns one [MQTT5-3.1.3-6]), so
 * level 5 never yields MQTT_ERR_CLIENT_ID.  Levels 3 and 4 decode exactly as
 * mqtt_decode_connect does. */
int mqtt_decode_connect_v5ok(const mqtt_raw_t *r, mqtt_connect_t *out, int allow_v5,
                             const char **why);

typedef struct {
    mqtt_str_t topic;
    uint16_t packet_id; /* 0 for QoS 0 */
    uint8_t qos;
    uint8_t retain;
    uint8_t dup;
    const uint8_t *payload;
    uint32_t payload_len;
    mqtt_props_t props; /* MQTT 5.0 only; empty for 3.1 / 3.1.1 */
} mqtt_publish_t;

/* PUBLISH.  QoS 3 is malformed; DUP with QoS 0 is malformed; packet id 0 with
 * QoS > 0 is malformed; topic must be non-empty valid UTF-8 without '+' or
 * '#'.  `proto` is the connection's protocol level.  With proto 5 the
 * properties follow the packet id (out->props, validated for a PUBLISH sent
 * by a client: no Subscription Identifier [MQTT5-3.3.4-6]), and the topic
 * may be empty when a Topic Alias is present (the broker resolves it);
 * empty without one is MQTT_ERR_PROTOCOL [MQTT5 3.3.2.1]. */
int mqtt_decode_publish(const mqtt_raw_t *r, uint8_t proto, mqtt_publish_t *out, const char **why);
/* The same for either direction: `from` is MQTT_FROM_CLIENT (what
 * mqtt_decode_publish does) or MQTT_FROM_SERVER (a client decoding a
 * server's PUBLISH: Subscription Identifiers allowed, and repeatable).  The
 * direction only matters for proto 5. */
int mqtt_decode_publish_from(const mqtt_raw_t *r, uint8_t proto, uint8_t from, mqtt_publish_t *out,
                             const char **why);

/* SUBSCRIBE / UNSUBSCRIBE: validated as a whole by the decoder, then walked
 * with mqtt_sub_next(), which cannot fail. */
typedef struct {
    uint16_t packet_id;
    uint16_t count;         /* number of topic filters (>= 1) */
    const uint8_t *p, *end; /* iteration cursor */
    uint8_t with_options;   /* 1 for SUBSCRIBE, 0 for UNSUBSCRIBE */
    uint8_t proto;          /* MQTT_PROTO_V5 from the _v5 decoders, else 0 */
    mqtt_props_t props;     /* MQTT 5.0 only; empty otherwise */
} mqtt_sub_iter_t;

/* Fixed-header flags must be 0b0010; at least one filter; every filter
 * non-empty valid UTF-8 with '+' and '#' only as whole levels and '#' last;
 * SUBSCRIBE options byte: reserved bits 0 and QoS <= 2; packet id non-zero.
 * No filters is MQTT_ERR_PROTOCOL [MQTT-3.8.3-3, MQTT-3.10.3-2]; more than
 * 65535 filters (count would overflow) is MQTT_ERR_MALFORMED. */
int mqtt_decode_subscribe(const mqtt_raw_t *r, mqtt_sub_iter_t *it, const char **why);
int mqtt_decode_unsubscribe(const mqtt_raw_t *r, mqtt_sub_iter_t *it, const char **why);

/* Returns 1 and the next filter (and its requested QoS for SUBSCRIBE, 0 for
 * UNSUBSCRIBE), or 0 when done. */
int mqtt_sub_next(mqtt_sub_iter_t *it, mqtt_str_t *filter, uint8_t *qos);

/* MQTT 5.0 SUBSCRIBE / UNSUBSCRIBE: packet id, properties (SUBSCRIBE: at most
 * one Subscription Identifier, not 0; User Properties; UNSUBSCRIBE: User
 * Properties), then the filters as above.  Each SUBSCRIBE filter is followed
 * by the Subscription Options byte: bits 6-7 set is MQTT_ERR_MALFORMED
 * [MQTT5-3.8.3-5]; Maximum QoS 3 and Retain Handling 3 are
 * MQTT_ERR_PROTOCOL (section 3.8.3.1 calls both a Protocol Error).  A filter
 * starting "$share/" must be a well-formed shared subscription
 * (mqtt_shared_filter_parse; MQTT_ERR_PROTOCOL otherwise [MQTT5-4.8.2-1,
 * MQTT5-4.8.2-2]), and No Local on it is MQTT_ERR_PROTOCOL [MQTT5-3.8.3-4].
 * Walk with mqtt_sub_next, or mqtt_sub_next_opts for the whole options byte;
 * the properties are in it->props. */
int mqtt_decode_subscribe_v5(const mqtt_raw_t *r, mqtt_sub_iter_t *it, const char **why);
int mqtt_decode_unsubscribe_v5(const mqtt_raw_t *r, mqtt_sub_iter_t *it, const char **why);

/* Subscription Options byte [MQTT5 3.8.3.1]. */
#define MQTT_SUBOPT_QOS(o) ((uint8_t)((o)&3))
#define MQTT_SUBOPT_NO_LOCAL 0x04
#define MQTT_SUBOPT_RETAIN_AS_PUBLISHED 0x08
#define MQTT_SUBOPT_RETAIN_HANDLING(o) ((uint8_t)(((o) >> 4) & 3))
#define MQTT_SUBOPT_MAKE(qos, no_local, rap, rh)                                                   \
    ((uint8_t)(((qos)&3) | ((no_local) ? 4 : 0) | ((rap) ? 8 : 0) | ((rh)&3) << 4))

/* Like mqtt_sub_next, with the whole options byte (0 for UNSUBSCRIBE). */
int mqtt_sub_next_opts(mqtt_sub_iter_t *it, mqtt_str_t *filter, uint8_t *options);

/* Shared subscription filter "$share/{ShareName}/{filter}" [MQTT5 4.8.2]:
 * returns 1 and the share name and the real filter (pointers into f; any
 * output may be NULL), 0 for a filter that does not start with "$share/"
 * (outputs untouched), or -1 for a malformed one: empty share name, a share
 * name with '+' or '#' or not valid UTF-8, no '/' after it, or a real filter
 * that is empty or not a valid topic filter. */
int mqtt_shared_filter_parse(const uint8_t *f, size_t len, const uint8_t **group, size_t *group_len,
                             const uint8_t **filter, size_t *filter_len);

/* PUBACK, PUBREC, PUBREL, PUBCOMP (and, client side, UNSUBACK): remaining
 * length exactly 2, flags 0 (PUBREL: 0b0010), packet id non-zero. */
int mqtt_decode_ack(const mqtt_raw_t *r, uint16_t *packet_id, const char **why);

/* PINGREQ, PINGRESP, DISCONNECT: flags 0 and no body. */
int mqtt_decode_empty(const mqtt_raw_t *r, const char **why);

/* ---- decoding MQTT 5.0 acknowledgements and the packets of both sides ---- */

/* PUBACK, PUBREC, PUBREL, PUBCOMP of 5.0: flags as in 3.1.1, packet id
 * non-zero (MQTT_ERR_MALFORMED), then by remaining length: 2 = reason 0x00
 * and no properties, 3 = a reason code, >= 4 = reason code and properties
 * (filling the packet exactly).  A reason code not in the packet's table is
 * MQTT_ERR_PROTOCOL [MQTT5-3.4.2-1, 3.5.2-1, 3.6.2-1, 3.7.2-1]. */
typedef struct {
    uint16_t packet_id;
    uint8_t reason;
    mqtt_props_t props;
} mqtt_ack_t;
int mqtt_decode_ack_v5(const mqtt_raw_t *r, mqtt_ack_t *out, const char **why);

/* DISCONNECT of 5.0: remaining length 0 = reason 0x00, 1 = a reason code,
 * >= 2 = reason code and properties.  The reason code must be one that
 * `from` may send [MQTT5-3.14.2-1] (0x04 only from a client, most others
 * only from a server), else MQTT_ERR_PROTOCOL. */
typedef struct {
    uint8_t reason;
    mqtt_props_t props;
} mqtt_disconnect_t;
int mqtt_decode_disconnect_v5(const mqtt_raw_t *r, uint8_t from, mqtt_disconnect_t *out,
                              const char **why);

/* AUTH (5.0 only): remaining length 0 = reason 0x00 and no properties, 1 = a
 * reason code, >= 2 = reason code and properties.  Reason code 0x00, 0x18 or
 * 0x19 [MQTT5-3.15.2-1], else MQTT_ERR_PROTOCOL; an Authentication Method is
 * required [MQTT5 3.15.2.2.2] (MQTT_ERR_PROTOCOL) except in the short form
 * (reason 0x00 without properties), which the spec allows. */
typedef struct {
    uint8_t reason;
    mqtt_props_t props;
} mqtt_auth_t;
int mqtt_decode_auth(const mqtt_raw_t *r, mqtt_auth_t *out, const char **why);

/* Fixed-header check for any packet a client may send to a server: flags as
 * the spec requires for the type; types a server sends (CONNACK, SUBACK,
 * UNSUBACK, PINGRESP) and AUTH before 5.0 are MQTT_ERR_PROTOCOL (with proto
 * 5, AUTH passes with flags 0); type 0 is
 * MQTT_ERR_MALFORMED.  The decoders above call it too. */
int mqtt_check_client_header(uint8_t hdr, uint8_t proto, const char **why);

/* Client side (bench, tests): CONNACK and SUBACK.  CONNACK: length 2, flags
 * 0, reserved acknowledge flags 0, return code <= 5, session present 0 when
 * the return code is not 0 [MQTT-3.2.2-4]. */
int mqtt_decode_connack(const mqtt_raw_t *r, uint8_t *session_present, uint8_t *rc,
                        const char **why);
/* Copies up to max return codes into rcs; *n = number of codes in the packet
 * (may exceed max). */
int mqtt_decode_suback(const mqtt_raw_t *r, uint16_t *packet_id, uint8_t *rcs, uint32_t max,
                       uint32_t *n, const char **why);

/* Client side, 5.0.  CONNACK: flags 0, acknowledge flags bits 1-7 zero
 * [MQTT5-3.2.2-1] (MQTT_ERR_MALFORMED), a CONNACK reason code
 * [MQTT5-3.2.2-8], session present 0 with a non-zero reason
 * [MQTT5-3.2.2-6] (both MQTT_ERR_PROTOCOL), properties (mandatory, even if
 * empty [MQTT5-2.2.2-1]) filling the packet. */
typedef struct {
    uint8_t session_present;
    uint8_t reason;
    mqtt_props_t props;
} mqtt_connack_t;
int mqtt_decode_connack_v5(const mqtt_raw_t *r, mqtt_connack_t *out, const char **why);

/* SUBACK or UNSUBACK of 5.0 (by the packet's type): packet id non-zero,
 * properties, then at least one reason code (MQTT_ERR_MALFORMED without),
 * each in the packet's table [MQTT5-3.9.3-2, MQTT5-3.11.3-2] (else
 * MQTT_ERR_PROTOCOL).  reasons points into the packet. */
typedef struct {
    uint16_t packet_id;
    mqtt_props_t props;
    const uint8_t *reasons;
    uint32_t count;
} mqtt_suback_t;
int mqtt_decode_suback_v5(const mqtt_raw_t *r, mqtt_suback_t *out, const char **why);

/* Reason code (CONNACK / DISCONNECT) of 5.0 for a codec error: 0x81 for
 * MQTT_ERR_MALFORMED, 0x82 protocol error, 0x95 too large, 0x84 protocol
 * version, 0x85 client id; 0x80 for anything else. */
uint8_t mqtt_err_reason(int err);

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
size_t mqtt_encode_suback(uint8_t *out, uint16_t packet_id, const uint8_t *rcs, uint32_t n);
size_t mqtt_encode_pingresp(uint8_t *out);   /* 2 */
size_t mqtt_encode_pingreq(uint8_t *out);    /* 2 */
size_t mqtt_encode_disconnect(uint8_t *out); /* 2 */

/* PUBLISH: fixed header, topic, packet id (when qos > 0), payload. */
size_t mqtt_publish_size(uint16_t topic_len, uint8_t qos, uint32_t payload_len);
size_t mqtt_encode_publish(uint8_t *out, const uint8_t *topic, uint16_t topic_len, uint8_t qos,
                           uint8_t retain, uint8_t dup, uint16_t packet_id, const uint8_t *payload,
                           uint32_t payload_len);

/* Client side (bench, tests). */
typedef struct {
    uint8_t proto; /* MQTT_PROTO_V31, MQTT_PROTO_V311 or MQTT_PROTO_V5 */
    uint8_t clean_session;
    uint16_t keepalive;
    const char *client_id;  /* NUL-terminated; may be "" */
    const char *username;   /* NULL = absent */
    const char *password;   /* NULL = absent */
    const char *will_topic; /* NULL = no will */
    const uint8_t *will_payload;
    uint16_t will_payload_len;
    uint8_t will_qos;
    uint8_t will_retain;
    /* MQTT 5.0 (proto 5) only: property blocks, as written by mqtt_pw_*
     * (without their Property Length); NULL / 0 for none.  Leave them zero
     * (designated initialisers do) for other levels: they are not read. */
    const uint8_t *props;
    uint32_t props_len;
    const uint8_t *will_props;
    uint32_t will_props_len;
} mqtt_connect_opts_t;

/* Proto 3 writes "MQIsdp" level 3; any other proto writes "MQTT" with that
 * level.  Proto 5 writes the 5.0 layout: CONNECT properties after the keep
 * alive, Will Properties before the will topic (a Property Length of 0 when
 * absent), and a password without a user name is allowed.  Other levels
 * (e.g. 6, to test a server's refusal) use the 3.1.1 layout.  Strings <=
 * 65535 bytes. */
size_t mqtt_connect_size(const mqtt_connect_opts_t *o);
size_t mqtt_encode_connect(uint8_t *out, const mqtt_connect_opts_t *o);
/* One filter per packet; qos is the requested QoS. */
size_t mqtt_subscribe_size(uint16_t filter_len);
size_t mqtt_encode_subscribe(uint8_t *out, uint16_t packet_id, const uint8_t *filter,
                             uint16_t filter_len, uint8_t qos);
size_t mqtt_unsubscribe_size(uint16_t filter_len);
size_t mqtt_encode_unsubscribe(uint8_t *out, uint16_t packet_id, const uint8_t *filter,
                               uint16_t filter_len);

/* ---- encoding MQTT 5.0 ----------------------------------------------------
 * Property blocks (props, props_len) are what mqtt_pw_* wrote: the encoders
 * add the Property Length.  NULL / 0 is an empty block.  Every *_size gives
 * the exact number of bytes its encoder writes; the caller keeps the
 * remaining length within MQTT_MAX_REMAINING. */

/* CONNACK: acknowledge flags (session present), reason code, properties. */
size_t mqtt_connack_v5_size(size_t props_len);
size_t mqtt_encode_connack_v5(uint8_t *out, uint8_t session_present, uint8_t reason,
                              const uint8_t *props, size_t props_len);

/* PUBLISH: topic (may be empty with a Topic Alias), packet id when qos > 0,
 * properties, payload. */
size_t mqtt_publish_v5_size(uint16_t topic_len, uint8_t qos, size_t props_len,
                            uint32_t payload_len);
size_t mqtt_encode_publish_v5(uint8_t *out, const uint8_t *topic, uint16_t topic_len, uint8_t qos,
                              uint8_t retain, uint8_t dup, uint16_t packet_id, const uint8_t *props,
                              size_t props_len, const uint8_t *payload, uint32_t payload_len);

/* PUBACK, PUBREC, PUBREL (flags 0b0010 added), PUBCOMP: the short form (4
 * bytes) for reason 0x00 without properties, the reason code alone (5 bytes)
 * without properties, else reason code and properties. */
size_t mqtt_ack_v5_size(uint8_t reason, size_t props_len);
size_t mqtt_encode_ack_v5(uint8_t *out, uint8_t type, uint16_t packet_id, uint8_t reason,
                          const uint8_t *props, size_t props_len);

/* SUBACK and UNSUBACK (same layout and size): packet id, properties, n reason
 * codes. */
size_t mqtt_suback_v5_size(size_t props_len, uint32_t n);
size_t mqtt_encode_suback_v5(uint8_t *out, uint16_t packet_id, const uint8_t *props,
                             size_t props_len, const uint8_t *reasons, uint32_t n);
size_t mqtt_encode_unsuback_v5(uint8_t *out, uint16_t packet_id, const uint8_t *props,
                               size_t props_len, const uint8_t *reasons, uint32_t n);

/* DISCONNECT and AUTH: remaining length 0 for reason 0x00 without
 * properties, the reason code alone without properties, else reason code
 * and properties. */
size_t mqtt_disconnect_v5_size(uint8_t reason, size_t props_len);
size_t mqtt_encode_disconnect_v5(uint8_t *out, uint8_t reason, const uint8_t *props,
                                 size_t props_len);
size_t mqtt_auth_size(uint8_t reason, size_t props_len);
size_t mqtt_encode_auth(uint8_t *out, uint8_t reason, const uint8_t *props, size_t props_len);

/* Client side.  CONNECT v5: mqtt_encode_connect with proto 5 (above).
 * SUBSCRIBE: one filter with its options byte (MQTT_SUBOPT_MAKE); sub_id
 * (1..268435455, 0 = none) is written as the first property, then the
 * caller's block (User Properties). */
size_t mqtt_subscribe_v5_size(uint16_t filter_len, uint32_t sub_id, size_t props_len);
size_t mqtt_encode_subscribe_v5(uint8_t *out, uint16_t packet_id, const uint8_t *filter,
                                uint16_t filter_len, uint8_t options, uint32_t sub_id,
                                const uint8_t *props, size_t props_len);
/* UNSUBSCRIBE: one filter. */
size_t mqtt_unsubscribe_v5_size(uint16_t filter_len, size_t props_len);
size_t mqtt_encode_unsubscribe_v5(uint8_t *out, uint16_t packet_id, const uint8_t *filter,
                                  uint16_t filter_len, const uint8_t *props, size_t props_len);

/* Name of a packet type for logs ("PUBLISH"), "?" when out of range. */
const char *mqtt_type_name(uint8_t type);

#endif
