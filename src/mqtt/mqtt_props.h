/* mqtt_props.h -- MQTT 5.0 properties and reason codes: the parsed view of a
 * property block, its validator, iterators, a writer, and the reason code
 * tables.
 *
 * Design.  A property block is validated once, as a whole, for the packet
 * (or the Will Properties) it sits in and for the side that sent it.  The
 * result is a view, mqtt_props_t, that points into the packet (nothing is
 * copied or allocated): a presence bitmask, each single-valued property
 * decoded into its field, strings and binary data as pointer + length, and
 * the raw block itself.  Properties that may repeat -- User Property, and
 * Subscription Identifier in a PUBLISH sent by a server -- are not collected:
 * iterators walk the raw block in wire order, so user properties keep their
 * order [MQTT5-3.3.2-18], and the block can be passed on byte for byte, or
 * property by property with some left out (mqtt_pw_copy: a forwarded PUBLISH
 * drops the publisher's Topic Alias and gets its own Subscription
 * Identifiers).  The iterators trust the block (the validator ran first) but
 * still never read past it.
 *
 * Error classes, one rule applied everywhere (the broker answers
 * MQTT_ERR_MALFORMED with reason code 0x81 and MQTT_ERR_PROTOCOL with 0x82):
 *  - MQTT_ERR_MALFORMED: the block cannot be parsed -- a length or a value
 *    running past the block, a Variable Byte Integer longer than four bytes
 *    or not in its shortest form [MQTT5-1.5.5-1], ill-formed UTF-8
 *    [MQTT5-1.5.4-1, MQTT5-1.5.4-2], an unknown identifier, or an identifier
 *    not valid for the packet type (section 2.2.2.2 says so in as many words).
 *  - MQTT_ERR_PROTOCOL: the block parses but holds data the protocol does
 *    not allow -- a property included more than once, a value out of its
 *    range (Receive Maximum 0, Maximum Packet Size 0, Topic Alias 0,
 *    Subscription Identifier 0, a 0-or-1 byte holding something else), a
 *    Response Topic that is not a valid Topic Name [MQTT5-3.3.2-14], a
 *    Subscription Identifier in a PUBLISH sent by a client [MQTT5-3.3.4-6],
 *    a Session Expiry Interval in a DISCONNECT sent by a server
 *    [MQTT5-3.14.2-2], Authentication Data without an Authentication Method
 *    in CONNECT [MQTT5 3.1.2.11.10].
 * Checks that need connection state (a Topic Alias above the negotiated
 * maximum, a DISCONNECT Session Expiry Interval after a CONNECT with 0, an
 * Authentication Method differing from CONNECT's) are the broker's.
 *
 * Rules of MQTT 5.0 are cited in the reason strings as [MQTT5-x.y.z-n] (a
 * numbered normative statement of the OASIS standard) or [MQTT5 x.y.z] (a
 * section); rules that 3.1.1 already had keep their 3.1.1 ids.
 *
 * Include mqtt_codec.h (which includes this header); the include below,
 * outside the guard, makes this header work on its own as well.
 */
#include "mqtt_codec.h"

#ifndef ANTENNA_MQTT_PROPS_H
#define ANTENNA_MQTT_PROPS_H

#include <stddef.h>
#include <stdint.h>

/* Property identifiers [MQTT5 2.2.2.2]. */
enum mqtt_prop_id {
    MQTT_PROP_PAYLOAD_FORMAT = 0x01,         /* Byte 0/1: PUBLISH, Will */
    MQTT_PROP_MESSAGE_EXPIRY = 0x02,         /* Four Byte: PUBLISH, Will */
    MQTT_PROP_CONTENT_TYPE = 0x03,           /* UTF-8: PUBLISH, Will */
    MQTT_PROP_RESPONSE_TOPIC = 0x08,         /* UTF-8: PUBLISH, Will */
    MQTT_PROP_CORRELATION_DATA = 0x09,       /* Binary: PUBLISH, Will */
    MQTT_PROP_SUBSCRIPTION_ID = 0x0B,        /* VBI: PUBLISH, SUBSCRIBE */
    MQTT_PROP_SESSION_EXPIRY = 0x11,         /* Four Byte: CONNECT, CONNACK, DISCONNECT */
    MQTT_PROP_ASSIGNED_CLIENT_ID = 0x12,     /* UTF-8: CONNACK */
    MQTT_PROP_SERVER_KEEP_ALIVE = 0x13,      /* Two Byte: CONNACK */
    MQTT_PROP_AUTH_METHOD = 0x15,            /* UTF-8: CONNECT, CONNACK, AUTH */
    MQTT_PROP_AUTH_DATA = 0x16,              /* Binary: CONNECT, CONNACK, AUTH */
    MQTT_PROP_REQUEST_PROBLEM_INFO = 0x17,   /* Byte 0/1: CONNECT */
    MQTT_PROP_WILL_DELAY = 0x18,             /* Four Byte: Will */
    MQTT_PROP_REQUEST_RESPONSE_INFO = 0x19,  /* Byte 0/1: CONNECT */
    MQTT_PROP_RESPONSE_INFO = 0x1A,          /* UTF-8: CONNACK */
    MQTT_PROP_SERVER_REFERENCE = 0x1C,       /* UTF-8: CONNACK, DISCONNECT */
    MQTT_PROP_REASON_STRING = 0x1F,          /* UTF-8: acks, DISCONNECT, AUTH */
    MQTT_PROP_RECEIVE_MAXIMUM = 0x21,        /* Two Byte > 0: CONNECT, CONNACK */
    MQTT_PROP_TOPIC_ALIAS_MAXIMUM = 0x22,    /* Two Byte: CONNECT, CONNACK */
    MQTT_PROP_TOPIC_ALIAS = 0x23,            /* Two Byte > 0: PUBLISH */
    MQTT_PROP_MAXIMUM_QOS = 0x24,            /* Byte 0/1: CONNACK */
    MQTT_PROP_RETAIN_AVAILABLE = 0x25,       /* Byte 0/1: CONNACK */
    MQTT_PROP_USER_PROPERTY = 0x26,          /* UTF-8 pair: every packet with properties */
    MQTT_PROP_MAXIMUM_PACKET_SIZE = 0x27,    /* Four Byte > 0: CONNECT, CONNACK */
    MQTT_PROP_WILDCARD_SUB_AVAILABLE = 0x28, /* Byte 0/1: CONNACK */
    MQTT_PROP_SUB_ID_AVAILABLE = 0x29,       /* Byte 0/1: CONNACK */
    MQTT_PROP_SHARED_SUB_AVAILABLE = 0x2A    /* Byte 0/1: CONNACK */
};
#define MQTT_PROP_MAX_ID 0x2A

/* Value types of properties [MQTT5 1.5]. */
enum mqtt_prop_type {
    MQTT_PT_NONE = 0, /* not a property identifier */
    MQTT_PT_BYTE,
    MQTT_PT_U16,
    MQTT_PT_U32,
    MQTT_PT_VARINT,
    MQTT_PT_UTF8,
    MQTT_PT_BINARY,
    MQTT_PT_PAIR
};

/* Where a property block sits: a packet type (MQTT_CONNECT ... MQTT_AUTH), or
 * the Will Properties of a CONNECT. */
#define MQTT_PROPS_WILL 16

/* Who sent the packet; a few rules depend on it. */
enum mqtt_sender { MQTT_FROM_CLIENT = 0, MQTT_FROM_SERVER = 1 };

#define MQTT_PROP_BIT(id) ((uint64_t)1 << (id))
#define mqtt_props_has(pr, id) ((int)(((pr)->present >> (id)) & 1u))

/* A validated property block.  Absent properties read as their specified
 * default: Receive Maximum 65535, Maximum QoS 2, Request Problem Information
 * 1, Retain / Wildcard Subscription / Subscription Identifier / Shared
 * Subscription Available 1; every other field 0 or empty (Maximum Packet
 * Size 0 = no limit).  Test presence with mqtt_props_has(). */
typedef struct {
    uint64_t present;   /* MQTT_PROP_BIT(id) for each identifier seen */
    const uint8_t *raw; /* the block, after its Property Length; NULL if empty */
    uint32_t raw_len;
    uint32_t user_count;   /* number of User Properties */
    uint32_t sub_id_count; /* number of Subscription Identifiers */
    uint32_t sub_id;       /* the first Subscription Identifier */
    uint32_t message_expiry;
    uint32_t session_expiry;
    uint32_t will_delay;
    uint32_t max_packet_size;
    uint16_t receive_max;
    uint16_t topic_alias_max;
    uint16_t topic_alias;
    uint16_t server_keep_alive;
    uint8_t payload_format;
    uint8_t request_problem_info;
    uint8_t request_response_info;
    uint8_t max_qos;
    uint8_t retain_available;
    uint8_t wildcard_sub_available;
    uint8_t sub_id_available;
    uint8_t shared_sub_available;
    uint8_t bad_id; /* after a failure: the offending identifier (0 if none) */
    mqtt_str_t content_type;
    mqtt_str_t response_topic;
    mqtt_str_t correlation_data; /* binary */
    mqtt_str_t assigned_client_id;
    mqtt_str_t auth_method;
    mqtt_str_t auth_data; /* binary */
    mqtt_str_t response_info;
    mqtt_str_t server_reference;
    mqtt_str_t reason_string;
} mqtt_props_t;

/* Empty view with the defaults above. */
void mqtt_props_init(mqtt_props_t *pr);

/* Validate the block p[0..len) (the bytes after the Property Length) for
 * `where` (a packet type or MQTT_PROPS_WILL) sent by `from`, and fill *out
 * (always initialised first).  MQTT_OK, or MQTT_ERR_MALFORMED /
 * MQTT_ERR_PROTOCOL as described at the top, with *why naming the rule and
 * out->bad_id the property.  PINGREQ, PINGRESP and unknown `where` values
 * accept no property at all. */
int mqtt_props_parse(const uint8_t *p, size_t len, uint8_t where, uint8_t from, mqtt_props_t *out,
                     const char **why);

/* The same, starting at the Property Length: reads the Variable Byte Integer
 * length from p[0..avail), checks that the block fits in avail, and parses
 * it.  *used = length bytes + block on success. */
int mqtt_props_read(const uint8_t *p, size_t avail, uint8_t where, uint8_t from, mqtt_props_t *out,
                    size_t *used, const char **why);

/* One property, as the iterator returns it. */
typedef struct {
    uint8_t id;
    uint8_t type;        /* MQTT_PT_* */
    uint32_t value;      /* Byte, Two Byte, Four Byte and Variable Byte Integers */
    mqtt_str_t str;      /* UTF-8 string or binary data; a pair's name */
    mqtt_str_t val;      /* a pair's value */
    const uint8_t *wire; /* the property's bytes, identifier included */
    uint32_t wire_len;
} mqtt_prop_t;

/* Walk every property of a validated block in wire order.  *pos starts at 0;
 * returns 1 and the next property, or 0 at the end. */
int mqtt_props_next(const mqtt_props_t *pr, uint32_t *pos, mqtt_prop_t *out);
/* Only the User Properties, in order. */
int mqtt_props_user_next(const mqtt_props_t *pr, uint32_t *pos, mqtt_str_t *name,
                         mqtt_str_t *value);
/* Only the Subscription Identifiers, in order. */
int mqtt_props_sub_id_next(const mqtt_props_t *pr, uint32_t *pos, uint32_t *sub_id);

/* Type of an identifier (MQTT_PT_NONE when unknown) and its name for logs
 * ("Topic Alias"; "?" when unknown). */
int mqtt_prop_type(uint8_t id);
const char *mqtt_prop_name(uint8_t id);

/* Variable Byte Integer reader [MQTT5 1.5.5]: returns the number of bytes
 * used (1..4), 0 when p[0..avail) ends inside the integer, or
 * MQTT_ERR_MALFORMED for more than four bytes or a non-shortest encoding. */
int mqtt_decode_varint(const uint8_t *p, size_t avail, uint32_t *v);

/* ---- property writer ------------------------------------------------------
 * Appends properties to a caller buffer, in the order of the calls.  Run the
 * same calls twice: first with buf == NULL to measure (mqtt_pw_len gives the
 * block size), then into a buffer of that size.  The writer checks each call
 * against the identifier's type (mqtt_pw_int for the integer types,
 * mqtt_pw_str for UTF-8 strings and binary data, mqtt_pw_user for pairs),
 * string lengths (<= 65535), integer ranges (a Byte <= 255, a Variable Byte
 * Integer <= 268435455) and the capacity; a failed call writes nothing and
 * makes the error sticky (mqtt_pw_error).  Which properties a packet may
 * carry is the caller's business: the decoders check that on the way in.
 * The finished block goes to an encoder as (buf, mqtt_pw_len). */
typedef struct {
    uint8_t *buf; /* NULL: measure only */
    size_t cap;
    size_t len;
    int err;
} mqtt_pw_t;

void mqtt_pw_init(mqtt_pw_t *w, uint8_t *buf, size_t cap);
int mqtt_pw_int(mqtt_pw_t *w, uint8_t id, uint32_t v);
int mqtt_pw_str(mqtt_pw_t *w, uint8_t id, const void *p, size_t len);
int mqtt_pw_user(mqtt_pw_t *w, const void *name, size_t name_len, const void *value,
                 size_t value_len);
/* Copy the properties of a validated block, in order and byte for byte,
 * except those whose bit is set in `skip` (MQTT_PROP_BIT(id) | ...). */
int mqtt_pw_copy(mqtt_pw_t *w, const mqtt_props_t *pr, uint64_t skip);
size_t mqtt_pw_len(const mqtt_pw_t *w);
int mqtt_pw_error(const mqtt_pw_t *w); /* 0, or -1 after a failed call */

/* ---- reason codes ----------------------------------------------------- */

/* Reason codes of MQTT 5.0 [MQTT5 2.4].  0x00 is Success, Normal
 * disconnection or Granted QoS 0 depending on the packet. */
enum mqtt_reason_code {
    MQTT_RC_SUCCESS = 0x00,
    MQTT_RC_NORMAL_DISCONNECTION = 0x00,
    MQTT_RC_GRANTED_QOS_0 = 0x00,
    MQTT_RC_GRANTED_QOS_1 = 0x01,
    MQTT_RC_GRANTED_QOS_2 = 0x02,
    MQTT_RC_DISCONNECT_WITH_WILL = 0x04,
    MQTT_RC_NO_MATCHING_SUBSCRIBERS = 0x10,
    MQTT_RC_NO_SUBSCRIPTION_EXISTED = 0x11,
    MQTT_RC_CONTINUE_AUTHENTICATION = 0x18,
    MQTT_RC_REAUTHENTICATE = 0x19,
    MQTT_RC_UNSPECIFIED_ERROR = 0x80,
    MQTT_RC_MALFORMED_PACKET = 0x81,
    MQTT_RC_PROTOCOL_ERROR = 0x82,
    MQTT_RC_IMPLEMENTATION_SPECIFIC = 0x83,
    MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION = 0x84,
    MQTT_RC_CLIENT_ID_NOT_VALID = 0x85,
    MQTT_RC_BAD_USERNAME_OR_PASSWORD = 0x86,
    MQTT_RC_NOT_AUTHORIZED = 0x87,
    MQTT_RC_SERVER_UNAVAILABLE = 0x88,
    MQTT_RC_SERVER_BUSY = 0x89,
    MQTT_RC_BANNED = 0x8A,
    MQTT_RC_SERVER_SHUTTING_DOWN = 0x8B,
    MQTT_RC_BAD_AUTHENTICATION_METHOD = 0x8C,
    MQTT_RC_KEEP_ALIVE_TIMEOUT = 0x8D,
    MQTT_RC_SESSION_TAKEN_OVER = 0x8E,
    MQTT_RC_TOPIC_FILTER_INVALID = 0x8F,
    MQTT_RC_TOPIC_NAME_INVALID = 0x90,
    MQTT_RC_PACKET_ID_IN_USE = 0x91,
    MQTT_RC_PACKET_ID_NOT_FOUND = 0x92,
    MQTT_RC_RECEIVE_MAXIMUM_EXCEEDED = 0x93,
    MQTT_RC_TOPIC_ALIAS_INVALID = 0x94,
    MQTT_RC_PACKET_TOO_LARGE = 0x95,
    MQTT_RC_MESSAGE_RATE_TOO_HIGH = 0x96,
    MQTT_RC_QUOTA_EXCEEDED = 0x97,
    MQTT_RC_ADMINISTRATIVE_ACTION = 0x98,
    MQTT_RC_PAYLOAD_FORMAT_INVALID = 0x99,
    MQTT_RC_RETAIN_NOT_SUPPORTED = 0x9A,
    MQTT_RC_QOS_NOT_SUPPORTED = 0x9B,
    MQTT_RC_USE_ANOTHER_SERVER = 0x9C,
    MQTT_RC_SERVER_MOVED = 0x9D,
    MQTT_RC_SHARED_SUBS_NOT_SUPPORTED = 0x9E,
    MQTT_RC_CONNECTION_RATE_EXCEEDED = 0x9F,
    MQTT_RC_MAXIMUM_CONNECT_TIME = 0xA0,
    MQTT_RC_SUB_IDS_NOT_SUPPORTED = 0xA1,
    MQTT_RC_WILDCARD_SUBS_NOT_SUPPORTED = 0xA2
};

/* Name of a reason code for logs ("Quota exceeded"; 0x00 is "Success"),
 * "?" for a value that is no reason code. */
const char *mqtt_reason_name(uint8_t rc);
/* The same, worded for the packet type: 0x00 is "Normal disconnection" in
 * DISCONNECT and "Granted QoS 0" in SUBACK. */
const char *mqtt_reason_name_for(uint8_t type, uint8_t rc);
/* 1 when `rc` is one of the reason codes of packet `type` (CONNACK, PUBACK,
 * PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH) that `from`
 * may send (the sender matters for DISCONNECT only), else 0. */
int mqtt_reason_valid(uint8_t type, uint8_t from, uint8_t rc);

#endif
