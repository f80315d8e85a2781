/* mqtt_props.c -- MQTT 5.0 properties: validator, iterators, writer; reason
 * code tables.
 *
 * One table drives everything: for each identifier its value type, the set
 * of places (packet types, plus MQTT_PROPS_WILL) where it is valid, and its
 * name.  The validator walks the block once with a bounds-checked reader:
 * identifier (a Variable Byte Integer), table look-up, value by type, then
 * the per-property rules (duplicates, ranges, Response Topic) and, at the
 * end, the rules between properties.  Each failure names its rule in a
 * static string, and the offending identifier is left in bad_id.  The
 * iterators re-walk the raw block with the same reader, so they share its
 * bounds checks.  The writer appends typed values after checking them
 * against the same table, and can measure (buf NULL) before writing.
 * Pure code: no I/O, no allocation, no mutable global state.
 */
#include "mqtt_props.h"

#include <string.h>

#define FAIL(code, msg)                                                                            \
    do {                                                                                           \
        if (why)                                                                                   \
            *why = (msg);                                                                          \
        return (code);                                                                             \
    } while (0)

/* ---- the table ----------------------------------------------------------- */

#define W(t) (1u << (t))
#define WILL W(MQTT_PROPS_WILL)
#define ACKS (W(MQTT_PUBACK) | W(MQTT_PUBREC) | W(MQTT_PUBREL) | W(MQTT_PUBCOMP))
#define ALL_WITH_PROPS                                                                             \
    (W(MQTT_CONNECT) | W(MQTT_CONNACK) | W(MQTT_PUBLISH) | WILL | ACKS | W(MQTT_SUBSCRIBE) |       \
     W(MQTT_SUBACK) | W(MQTT_UNSUBSCRIBE) | W(MQTT_UNSUBACK) | W(MQTT_DISCONNECT) | W(MQTT_AUTH))

typedef struct {
    uint8_t type;   /* MQTT_PT_*; MQTT_PT_NONE for an unused identifier */
    uint32_t where; /* W(packet type) | WILL */
    const char *name;
    const char *dup; /* reason string for a second occurrence */
} prop_def_t;

#define DUP(sec, name) "[MQTT5 " sec "] " name " included more than once"

static const prop_def_t defs[MQTT_PROP_MAX_ID + 1] = {
    [MQTT_PROP_PAYLOAD_FORMAT] = {MQTT_PT_BYTE, W(MQTT_PUBLISH) | WILL, "Payload Format Indicator",
                                  DUP("3.3.2.3.2", "Payload Format Indicator")},
    [MQTT_PROP_MESSAGE_EXPIRY] = {MQTT_PT_U32, W(MQTT_PUBLISH) | WILL, "Message Expiry Interval",
                                  DUP("3.3.2.3.3", "Message Expiry Interval")},
    [MQTT_PROP_CONTENT_TYPE] = {MQTT_PT_UTF8, W(MQTT_PUBLISH) | WILL, "Content Type",
                                DUP("3.3.2.3.9", "Content Type")},
    [MQTT_PROP_RESPONSE_TOPIC] = {MQTT_PT_UTF8, W(MQTT_PUBLISH) | WILL, "Response Topic",
                                  DUP("3.3.2.3.5", "Response Topic")},
    [MQTT_PROP_CORRELATION_DATA] = {MQTT_PT_BINARY, W(MQTT_PUBLISH) | WILL, "Correlation Data",
                                    DUP("3.3.2.3.6", "Correlation Data")},
    [MQTT_PROP_SUBSCRIPTION_ID] = {MQTT_PT_VARINT, W(MQTT_PUBLISH) | W(MQTT_SUBSCRIBE),
                                   "Subscription Identifier",
                                   DUP("3.8.2.1.2", "Subscription Identifier")},
    [MQTT_PROP_SESSION_EXPIRY] = {MQTT_PT_U32,
                                  W(MQTT_CONNECT) | W(MQTT_CONNACK) | W(MQTT_DISCONNECT),
                                  "Session Expiry Interval",
                                  DUP("3.1.2.11.2", "Session Expiry Interval")},
    [MQTT_PROP_ASSIGNED_CLIENT_ID] = {MQTT_PT_UTF8, W(MQTT_CONNACK), "Assigned Client Identifier",
                                      DUP("3.2.2.3.7", "Assigned Client Identifier")},
    [MQTT_PROP_SERVER_KEEP_ALIVE] = {MQTT_PT_U16, W(MQTT_CONNACK), "Server Keep Alive",
                                     DUP("3.2.2.3.14", "Server Keep Alive")},
    [MQTT_PROP_AUTH_METHOD] = {MQTT_PT_UTF8, W(MQTT_CONNECT) | W(MQTT_CONNACK) | W(MQTT_AUTH),
                               "Authentication Method", DUP("3.1.2.11.9", "Authentication Method")},
    [MQTT_PROP_AUTH_DATA] = {MQTT_PT_BINARY, W(MQTT_CONNECT) | W(MQTT_CONNACK) | W(MQTT_AUTH),
                             "Authentication Data", DUP("3.1.2.11.10", "Authentication Data")},
    [MQTT_PROP_REQUEST_PROBLEM_INFO] = {MQTT_PT_BYTE, W(MQTT_CONNECT),
                                        "Request Problem Information",
                                        DUP("3.1.2.11.7", "Request Problem Information")},
    [MQTT_PROP_WILL_DELAY] = {MQTT_PT_U32, WILL, "Will Delay Interval",
                              DUP("3.1.3.2.2", "Will Delay Interval")},
    [MQTT_PROP_REQUEST_RESPONSE_INFO] = {MQTT_PT_BYTE, W(MQTT_CONNECT),
                                         "Request Response Information",
                                         DUP("3.1.2.11.6", "Request Response Information")},
    [MQTT_PROP_RESPONSE_INFO] = {MQTT_PT_UTF8, W(MQTT_CONNACK), "Response Information",
                                 DUP("3.2.2.3.15", "Response Information")},
    [MQTT_PROP_SERVER_REFERENCE] = {MQTT_PT_UTF8, W(MQTT_CONNACK) | W(MQTT_DISCONNECT),
                                    "Server Reference", DUP("3.2.2.3.16", "Server Reference")},
    [MQTT_PROP_REASON_STRING] = {MQTT_PT_UTF8,
                                 W(MQTT_CONNACK) | ACKS | W(MQTT_SUBACK) | W(MQTT_UNSUBACK) |
                                     W(MQTT_DISCONNECT) | W(MQTT_AUTH),
                                 "Reason String", DUP("3.2.2.3.9", "Reason String")},
    [MQTT_PROP_RECEIVE_MAXIMUM] = {MQTT_PT_U16, W(MQTT_CONNECT) | W(MQTT_CONNACK),
                                   "Receive Maximum", DUP("3.1.2.11.3", "Receive Maximum")},
    [MQTT_PROP_TOPIC_ALIAS_MAXIMUM] = {MQTT_PT_U16, W(MQTT_CONNECT) | W(MQTT_CONNACK),
                                       "Topic Alias Maximum",
                                       DUP("3.1.2.11.5", "Topic Alias Maximum")},
    [MQTT_PROP_TOPIC_ALIAS] = {MQTT_PT_U16, W(MQTT_PUBLISH), "Topic Alias",
                               DUP("3.3.2.3.4", "Topic Alias")},
    [MQTT_PROP_MAXIMUM_QOS] = {MQTT_PT_BYTE, W(MQTT_CONNACK), "Maximum QoS",
                               DUP("3.2.2.3.4", "Maximum QoS")},
    [MQTT_PROP_RETAIN_AVAILABLE] = {MQTT_PT_BYTE, W(MQTT_CONNACK), "Retain Available",
                                    DUP("3.2.2.3.5", "Retain Available")},
    [MQTT_PROP_USER_PROPERTY] = {MQTT_PT_PAIR, ALL_WITH_PROPS, "User Property", NULL},
    [MQTT_PROP_MAXIMUM_PACKET_SIZE] = {MQTT_PT_U32, W(MQTT_CONNECT) | W(MQTT_CONNACK),
                                       "Maximum Packet Size",
                                       DUP("3.1.2.11.4", "Maximum Packet Size")},
    [MQTT_PROP_WILDCARD_SUB_AVAILABLE] = {MQTT_PT_BYTE, W(MQTT_CONNACK),
                                          "Wildcard Subscription Available",
                                          DUP("3.2.2.3.11", "Wildcard Subscription Available")},
    [MQTT_PROP_SUB_ID_AVAILABLE] = {MQTT_PT_BYTE, W(MQTT_CONNACK),
                                    "Subscription Identifier Available",
                                    DUP("3.2.2.3.12", "Subscription Identifier Available")},
    [MQTT_PROP_SHARED_SUB_AVAILABLE] = {MQTT_PT_BYTE, W(MQTT_CONNACK),
                                        "Shared Subscription Available",
                                        DUP("3.2.2.3.13", "Shared Subscription Available")},
};

static const prop_def_t *def_of(uint32_t id)
{
    if (id > MQTT_PROP_MAX_ID || defs[id].type == MQTT_PT_NONE)
        return NULL;
    return &defs[id];
}

int mqtt_prop_type(uint8_t id)
{
    const prop_def_t *d = def_of(id);
    return d ? d->type : MQTT_PT_NONE;
}

const char *mqtt_prop_name(uint8_t id)
{
    const prop_def_t *d = def_of(id);
    return d ? d->name : "?";
}

/* "not valid in this packet" [MQTT5 2.2.2.2], one string per place. */
static const char *const not_valid[MQTT_PROPS_WILL + 1] = {
    "[MQTT5 2.2.2.2] property not valid here",
    "[MQTT5 2.2.2.2] property not valid in CONNECT",
    "[MQTT5 2.2.2.2] property not valid in CONNACK",
    "[MQTT5 2.2.2.2] property not valid in PUBLISH",
    "[MQTT5 2.2.2.2] property not valid in PUBACK",
    "[MQTT5 2.2.2.2] property not valid in PUBREC",
    "[MQTT5 2.2.2.2] property not valid in PUBREL",
    "[MQTT5 2.2.2.2] property not valid in PUBCOMP",
    "[MQTT5 2.2.2.2] property not valid in SUBSCRIBE",
    "[MQTT5 2.2.2.2] property not valid in SUBACK",
    "[MQTT5 2.2.2.2] property not valid in UNSUBSCRIBE",
    "[MQTT5 2.2.2.2] property not valid in UNSUBACK",
    "[MQTT5 2.2.2.2] PINGREQ has no properties",
    "[MQTT5 2.2.2.2] PINGRESP has no properties",
    "[MQTT5 2.2.2.2] property not valid in DISCONNECT",
    "[MQTT5 2.2.2.2] property not valid in AUTH",
    "[MQTT5 2.2.2.2] property not valid in Will Properties",
};

/* ---- reading ------------------------------------------------------------- */

int mqtt_decode_varint(const uint8_t *p, size_t avail, uint32_t *v)
{
    uint32_t val = 0;
    for (size_t i = 0; i < 4; i++) {
        if (i >= avail)
            return 0;
        val |= (uint32_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            if (i > 0 && p[i] == 0)
                return MQTT_ERR_MALFORMED; /* not the shortest form */
            *v = val;
            return (int)i + 1;
        }
    }
    return MQTT_ERR_MALFORMED; /* a fifth byte */
}

/* One property read from a block: identifier, and value by type.  Returns 1,
 * 0 at the end of the block, or a negative error (malformed) with *why. */
typedef struct {
    const uint8_t *p, *end;
} prd_t;

static uint32_t be16(const uint8_t *p)
{
    return (uint32_t)p[0] << 8 | p[1];
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Two-byte length and bytes. */
static int prd_str(prd_t *r, mqtt_str_t *s)
{
    size_t left = (size_t)(r->end - r->p);
    if (left < 2)
        return 0;
    uint32_t n = be16(r->p);
    if (left - 2 < n)
        return 0;
    s->p = r->p + 2;
    s->len = (uint16_t)n;
    r->p += 2 + (size_t)n;
    return 1;
}

static int prd_next(prd_t *r, mqtt_prop_t *out, const char **why)
{
    const uint8_t *start = r->p;
    size_t left = (size_t)(r->end - r->p);
    uint32_t id;
    int n;

    if (left == 0)
        return 0;
    memset(out, 0, sizeof *out);
    n = mqtt_decode_varint(r->p, left, &id);
    if (n == 0)
        FAIL(MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.2] property identifier truncated");
    if (n < 0)
        FAIL(MQTT_ERR_MALFORMED,
             "[MQTT5-1.5.5-1] property identifier is not a shortest Variable Byte Integer");
    const prop_def_t *d = def_of(id);
    out->id = id <= 0xff ? (uint8_t)id : 0;
    if (d == NULL)
        FAIL(MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.2] unknown property identifier");
    r->p += n;
    left -= (size_t)n;
    out->type = d->type;
    switch (d->type) {
    case MQTT_PT_BYTE:
        if (left < 1)
            FAIL(MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.2] property value truncated");
        out->value = r->p[0];
        r->p += 1;
        break;
    case MQTT_PT_U16:
        if (left < 2)
            FAIL(MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.2] property value truncated");
        out->value = be16(r->p);
        r->p += 2;
        break;
    case MQTT_PT_U32:
        if (left < 4)
            FAIL(MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.2] property value truncated");
        out->value = be32(r->p);
        r->p += 4;
        break;
    case MQTT_PT_VARINT:
        n = mqtt_decode_varint(r->p, left, &out->value);
        if (n == 0)
            FAIL(MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.2] property value truncated");
        if (n < 0)
            FAIL(MQTT_ERR_MALFORMED,
                 "[MQTT5-1.5.5-1] property value is not a shortest Variable Byte Integer");
        r->p += n;
        break;
    case MQTT_PT_UTF8:
    case MQTT_PT_BINARY:
        if (!prd_str(r, &out->str))
            FAIL(MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.2] property value truncated");
        if (d->type == MQTT_PT_UTF8 && !mqtt_utf8_valid(out->str.p, out->str.len))
            FAIL(MQTT_ERR_MALFORMED, "[MQTT5-1.5.4-1] property string is not valid UTF-8");
        break;
    default: /* MQTT_PT_PAIR */
        if (!prd_str(r, &out->str) || !prd_str(r, &out->val))
            FAIL(MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.2] property value truncated");
        if (!mqtt_utf8_valid(out->str.p, out->str.len) ||
            !mqtt_utf8_valid(out->val.p, out->val.len))
            FAIL(MQTT_ERR_MALFORMED, "[MQTT5-1.5.7-1] User Property is not valid UTF-8");
        break;
    }
    out->wire = start;
    out->wire_len = (uint32_t)(r->p - start);
    return 1;
}

void mqtt_props_init(mqtt_props_t *pr)
{
    memset(pr, 0, sizeof *pr);
    pr->receive_max = 65535;
    pr->max_qos = 2;
    pr->request_problem_info = 1;
    pr->retain_available = 1;
    pr->wildcard_sub_available = 1;
    pr->sub_id_available = 1;
    pr->shared_sub_available = 1;
}

/* A Byte property that may only be 0 or 1. */
static int is_bool_prop(uint8_t id)
{
    return id == MQTT_PROP_PAYLOAD_FORMAT || id == MQTT_PROP_REQUEST_PROBLEM_INFO ||
           id == MQTT_PROP_REQUEST_RESPONSE_INFO || id == MQTT_PROP_MAXIMUM_QOS ||
           id == MQTT_PROP_RETAIN_AVAILABLE || id == MQTT_PROP_WILDCARD_SUB_AVAILABLE ||
           id == MQTT_PROP_SUB_ID_AVAILABLE || id == MQTT_PROP_SHARED_SUB_AVAILABLE;
}

static const char *bool_error(uint8_t id)
{
    switch (id) {
    case MQTT_PROP_PAYLOAD_FORMAT:
        return "[MQTT5 3.3.2.3.2] Payload Format Indicator other than 0 or 1";
    case MQTT_PROP_REQUEST_PROBLEM_INFO:
        return "[MQTT5 3.1.2.11.7] Request Problem Information other than 0 or 1";
    case MQTT_PROP_REQUEST_RESPONSE_INFO:
        return "[MQTT5 3.1.2.11.6] Request Response Information other than 0 or 1";
    case MQTT_PROP_MAXIMUM_QOS:
        return "[MQTT5 3.2.2.3.4] Maximum QoS other than 0 or 1";
    case MQTT_PROP_RETAIN_AVAILABLE:
        return "[MQTT5 3.2.2.3.5] Retain Available other than 0 or 1";
    case MQTT_PROP_WILDCARD_SUB_AVAILABLE:
        return "[MQTT5 3.2.2.3.11] Wildcard Subscription Available other than 0 or 1";
    case MQTT_PROP_SUB_ID_AVAILABLE:
        return "[MQTT5 3.2.2.3.12] Subscription Identifier Available other than 0 or 1";
    default:
        return "[MQTT5 3.2.2.3.13] Shared Subscription Available other than 0 or 1";
    }
}

int mqtt_props_parse(const uint8_t *p, size_t len, uint8_t where, uint8_t from, mqtt_props_t *out,
                     const char **why)
{
    prd_t r;
    mqtt_prop_t pr;
    int rc;
    uint32_t where_bit = where <= MQTT_PROPS_WILL ? W(where) : 0;
    const char *not_valid_here = not_valid[where <= MQTT_PROPS_WILL ? where : 0];

    mqtt_props_init(out);
    if (len == 0)
        return MQTT_OK;
    if (len > MQTT_MAX_REMAINING)
        FAIL(MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.1] property block too long");
    out->raw = p;
    out->raw_len = (uint32_t)len;
    r.p = p;
    r.end = p + len;
    while ((rc = prd_next(&r, &pr, why)) == 1) {
        uint8_t id = pr.id;
        const prop_def_t *d = &defs[id];
        out->bad_id = id;
        if (!(d->where & where_bit))
            FAIL(MQTT_ERR_MALFORMED, not_valid_here);
        if (id == MQTT_PROP_USER_PROPERTY) {
            out->user_count++;
            out->present |= MQTT_PROP_BIT(id);
            out->bad_id = 0;
            continue;
        }
        if (mqtt_props_has(out, id) &&
            !(id == MQTT_PROP_SUBSCRIPTION_ID && where == MQTT_PUBLISH && from == MQTT_FROM_SERVER))
            FAIL(MQTT_ERR_PROTOCOL, d->dup);
        out->present |= MQTT_PROP_BIT(id);
        if (is_bool_prop(id) && pr.value > 1)
            FAIL(MQTT_ERR_PROTOCOL, bool_error(id));
        switch (id) {
        case MQTT_PROP_PAYLOAD_FORMAT:
            out->payload_format = (uint8_t)pr.value;
            break;
        case MQTT_PROP_MESSAGE_EXPIRY:
            out->message_expiry = pr.value;
            break;
        case MQTT_PROP_CONTENT_TYPE:
            out->content_type = pr.str;
            break;
        case MQTT_PROP_RESPONSE_TOPIC:
            if (!mqtt_topic_name_valid(pr.str.p, pr.str.len))
                FAIL(MQTT_ERR_PROTOCOL,
                     "[MQTT5-3.3.2-14] Response Topic is empty or contains a wildcard");
            out->response_topic = pr.str;
            break;
        case MQTT_PROP_CORRELATION_DATA:
            out->correlation_data = pr.str;
            break;
        case MQTT_PROP_SUBSCRIPTION_ID:
            if (pr.value == 0)
                FAIL(MQTT_ERR_PROTOCOL, "[MQTT5 3.8.2.1.2] Subscription Identifier of 0");
            if (where == MQTT_PUBLISH && from == MQTT_FROM_CLIENT)
                FAIL(MQTT_ERR_PROTOCOL,
                     "[MQTT5-3.3.4-6] PUBLISH from a client carries a Subscription Identifier");
            if (out->sub_id_count++ == 0)
                out->sub_id = pr.value;
            break;
        case MQTT_PROP_SESSION_EXPIRY:
            if (where == MQTT_DISCONNECT && from == MQTT_FROM_SERVER)
                FAIL(MQTT_ERR_PROTOCOL, "[MQTT5-3.14.2-2] DISCONNECT from the server carries a "
                                        "Session Expiry Interval");
            out->session_expiry = pr.value;
            break;
        case MQTT_PROP_ASSIGNED_CLIENT_ID:
            out->assigned_client_id = pr.str;
            break;
        case MQTT_PROP_SERVER_KEEP_ALIVE:
            out->server_keep_alive = (uint16_t)pr.value;
            break;
        case MQTT_PROP_AUTH_METHOD:
            out->auth_method = pr.str;
            break;
        case MQTT_PROP_AUTH_DATA:
            out->auth_data = pr.str;
            break;
        case MQTT_PROP_REQUEST_PROBLEM_INFO:
            out->request_problem_info = (uint8_t)pr.value;
            break;
        case MQTT_PROP_WILL_DELAY:
            out->will_delay = pr.value;
            break;
        case MQTT_PROP_REQUEST_RESPONSE_INFO:
            out->request_response_info = (uint8_t)pr.value;
            break;
        case MQTT_PROP_RESPONSE_INFO:
            out->response_info = pr.str;
            break;
        case MQTT_PROP_SERVER_REFERENCE:
            out->server_reference = pr.str;
            break;
        case MQTT_PROP_REASON_STRING:
            out->reason_string = pr.str;
            break;
        case MQTT_PROP_RECEIVE_MAXIMUM:
            if (pr.value == 0)
                FAIL(MQTT_ERR_PROTOCOL, "[MQTT5 3.1.2.11.3] Receive Maximum of 0");
            out->receive_max = (uint16_t)pr.value;
            break;
        case MQTT_PROP_TOPIC_ALIAS_MAXIMUM:
            out->topic_alias_max = (uint16_t)pr.value;
            break;
        case MQTT_PROP_TOPIC_ALIAS:
            if (pr.value == 0)
                FAIL(MQTT_ERR_PROTOCOL, "[MQTT5-3.3.2-8] Topic Alias of 0");
            out->topic_alias = (uint16_t)pr.value;
            break;
        case MQTT_PROP_MAXIMUM_QOS:
            out->max_qos = (uint8_t)pr.value;
            break;
        case MQTT_PROP_RETAIN_AVAILABLE:
            out->retain_available = (uint8_t)pr.value;
            break;
        case MQTT_PROP_MAXIMUM_PACKET_SIZE:
            if (pr.value == 0)
                FAIL(MQTT_ERR_PROTOCOL, "[MQTT5 3.1.2.11.4] Maximum Packet Size of 0");
            out->max_packet_size = pr.value;
            break;
        case MQTT_PROP_WILDCARD_SUB_AVAILABLE:
            out->wildcard_sub_available = (uint8_t)pr.value;
            break;
        case MQTT_PROP_SUB_ID_AVAILABLE:
            out->sub_id_available = (uint8_t)pr.value;
            break;
        default: /* MQTT_PROP_SHARED_SUB_AVAILABLE */
            out->shared_sub_available = (uint8_t)pr.value;
            break;
        }
        out->bad_id = 0;
    }
    if (rc < 0) {
        out->bad_id = pr.id;
        return rc;
    }
    if (where == MQTT_CONNECT && mqtt_props_has(out, MQTT_PROP_AUTH_DATA) &&
        !mqtt_props_has(out, MQTT_PROP_AUTH_METHOD)) {
        out->bad_id = MQTT_PROP_AUTH_DATA;
        FAIL(MQTT_ERR_PROTOCOL,
             "[MQTT5 3.1.2.11.10] Authentication Data without Authentication Method");
    }
    return MQTT_OK;
}

int mqtt_props_read(const uint8_t *p, size_t avail, uint8_t where, uint8_t from, mqtt_props_t *out,
                    size_t *used, const char **why)
{
    uint32_t len;
    int n;

    mqtt_props_init(out);
    n = mqtt_decode_varint(p, avail, &len);
    if (n == 0)
        FAIL(MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.1] Property Length missing or truncated");
    if (n < 0)
        FAIL(MQTT_ERR_MALFORMED,
             "[MQTT5-1.5.5-1] Property Length is not a shortest Variable Byte Integer");
    if (avail - (size_t)n < len)
        FAIL(MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.1] Property Length runs past the end of the packet");
    int rc = mqtt_props_parse(p + n, len, where, from, out, why);
    if (rc != MQTT_OK)
        return rc;
    *used = (size_t)n + len;
    return MQTT_OK;
}

/* ---- iterators ----------------------------------------------------------- */

int mqtt_props_next(const mqtt_props_t *pr, uint32_t *pos, mqtt_prop_t *out)
{
    prd_t r;
    if (pr->raw == NULL || *pos >= pr->raw_len)
        return 0;
    r.p = pr->raw + *pos;
    r.end = pr->raw + pr->raw_len;
    if (prd_next(&r, out, NULL) != 1)
        return 0;
    *pos = (uint32_t)(r.p - pr->raw);
    return 1;
}

int mqtt_props_user_next(const mqtt_props_t *pr, uint32_t *pos, mqtt_str_t *name, mqtt_str_t *value)
{
    mqtt_prop_t p;
    while (mqtt_props_next(pr, pos, &p)) {
        if (p.id == MQTT_PROP_USER_PROPERTY) {
            *name = p.str;
            *value = p.val;
            return 1;
        }
    }
    return 0;
}

int mqtt_props_sub_id_next(const mqtt_props_t *pr, uint32_t *pos, uint32_t *sub_id)
{
    mqtt_prop_t p;
    while (mqtt_props_next(pr, pos, &p)) {
        if (p.id == MQTT_PROP_SUBSCRIPTION_ID) {
            *sub_id = p.value;
            return 1;
        }
    }
    return 0;
}

/* ---- writer ---------------------------------------------------------------- */

void mqtt_pw_init(mqtt_pw_t *w, uint8_t *buf, size_t cap)
{
    w->buf = buf;
    w->cap = buf ? cap : 0;
    w->len = 0;
    w->err = 0;
}

size_t mqtt_pw_len(const mqtt_pw_t *w)
{
    return w->len;
}

int mqtt_pw_error(const mqtt_pw_t *w)
{
    return w->err ? -1 : 0;
}

/* Room for n more bytes (always, when measuring). */
static int pw_room(mqtt_pw_t *w, size_t n)
{
    if (w->err || n > MQTT_MAX_REMAINING - w->len || (w->buf && n > w->cap - w->len)) {
        w->err = 1;
        return 0;
    }
    return 1;
}

static void pw_put(mqtt_pw_t *w, const void *p, size_t n)
{
    if (w->buf && n)
        memcpy(w->buf + w->len, p, n);
    w->len += n;
}

static void pw_u16(mqtt_pw_t *w, uint32_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    pw_put(w, b, 2);
}

static void pw_varint(mqtt_pw_t *w, uint32_t v)
{
    uint8_t b[4];
    pw_put(w, b, mqtt_encode_varint(b, v));
}

int mqtt_pw_int(mqtt_pw_t *w, uint8_t id, uint32_t v)
{
    const prop_def_t *d = def_of(id);
    size_t n;
    if (d == NULL) {
        w->err = 1;
        return -1;
    }
    switch (d->type) {
    case MQTT_PT_BYTE:
        n = v <= 0xff ? 1 : 0;
        break;
    case MQTT_PT_U16:
        n = v <= 0xffff ? 2 : 0;
        break;
    case MQTT_PT_U32:
        n = 4;
        break;
    case MQTT_PT_VARINT:
        n = v <= MQTT_MAX_REMAINING ? mqtt_varint_size(v) : 0;
        break;
    default:
        n = 0; /* not an integer property */
        break;
    }
    if (n == 0 || !pw_room(w, 1 + n)) {
        w->err = 1;
        return -1;
    }
    pw_put(w, &id, 1);
    switch (d->type) {
    case MQTT_PT_BYTE: {
        uint8_t b = (uint8_t)v;
        pw_put(w, &b, 1);
        break;
    }
    case MQTT_PT_U16:
        pw_u16(w, v);
        break;
    case MQTT_PT_U32: {
        uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
        pw_put(w, b, 4);
        break;
    }
    default:
        pw_varint(w, v);
        break;
    }
    return 0;
}

int mqtt_pw_str(mqtt_pw_t *w, uint8_t id, const void *p, size_t len)
{
    const prop_def_t *d = def_of(id);
    if (d == NULL || (d->type != MQTT_PT_UTF8 && d->type != MQTT_PT_BINARY) || len > 0xffff ||
        !pw_room(w, 3 + len)) {
        w->err = 1;
        return -1;
    }
    pw_put(w, &id, 1);
    pw_u16(w, (uint32_t)len);
    pw_put(w, p, len);
    return 0;
}

int mqtt_pw_user(mqtt_pw_t *w, const void *name, size_t name_len, const void *value,
                 size_t value_len)
{
    uint8_t id = MQTT_PROP_USER_PROPERTY;
    if (name_len > 0xffff || value_len > 0xffff || !pw_room(w, 5 + name_len + value_len)) {
        w->err = 1;
        return -1;
    }
    pw_put(w, &id, 1);
    pw_u16(w, (uint32_t)name_len);
    pw_put(w, name, name_len);
    pw_u16(w, (uint32_t)value_len);
    pw_put(w, value, value_len);
    return 0;
}

int mqtt_pw_copy(mqtt_pw_t *w, const mqtt_props_t *pr, uint64_t skip)
{
    uint32_t pos = 0;
    mqtt_prop_t p;
    if (w->err)
        return -1;
    while (mqtt_props_next(pr, &pos, &p)) {
        if (skip & MQTT_PROP_BIT(p.id))
            continue;
        if (!pw_room(w, p.wire_len))
            return -1;
        pw_put(w, p.wire, p.wire_len);
    }
    return 0;
}

/* ---- reason codes ------------------------------------------------------------ */

const char *mqtt_reason_name(uint8_t rc)
{
    switch (rc) {
    case 0x00:
        return "Success";
    case 0x01:
        return "Granted QoS 1";
    case 0x02:
        return "Granted QoS 2";
    case 0x04:
        return "Disconnect with Will Message";
    case 0x10:
        return "No matching subscribers";
    case 0x11:
        return "No subscription existed";
    case 0x18:
        return "Continue authentication";
    case 0x19:
        return "Re-authenticate";
    case 0x80:
        return "Unspecified error";
    case 0x81:
        return "Malformed Packet";
    case 0x82:
        return "Protocol Error";
    case 0x83:
        return "Implementation specific error";
    case 0x84:
        return "Unsupported Protocol Version";
    case 0x85:
        return "Client Identifier not valid";
    case 0x86:
        return "Bad User Name or Password";
    case 0x87:
        return "Not authorized";
    case 0x88:
        return "Server unavailable";
    case 0x89:
        return "Server busy";
    case 0x8A:
        return "Banned";
    case 0x8B:
        return "Server shutting down";
    case 0x8C:
        return "Bad authentication method";
    case 0x8D:
        return "Keep Alive timeout";
    case 0x8E:
        return "Session taken over";
    case 0x8F:
        return "Topic Filter invalid";
    case 0x90:
        return "Topic Name invalid";
    case 0x91:
        return "Packet Identifier in use";
    case 0x92:
        return "Packet Identifier not found";
    case 0x93:
        return "Receive Maximum exceeded";
    case 0x94:
        return "Topic Alias invalid";
    case 0x95:
        return "Packet too large";
    case 0x96:
        return "Message rate too high";
    case 0x97:
        return "Quota exceeded";
    case 0x98:
        return "Administrative action";
    case 0x99:
        return "Payload format invalid";
    case 0x9A:
        return "Retain not supported";
    case 0x9B:
        return "QoS not supported";
    case 0x9C:
        return "Use another server";
    case 0x9D:
        return "Server moved";
    case 0x9E:
        return "Shared Subscriptions not supported";
    case 0x9F:
        return "Connection rate exceeded";
    case 0xA0:
        return "Maximum connect time";
    case 0xA1:
        return "Subscription Identifiers not supported";
    case 0xA2:
        return "Wildcard Subscriptions not supported";
    default:
        return "?";
    }
}

const char *mqtt_reason_name_for(uint8_t type, uint8_t rc)
{
    if (rc == 0x00 && type == MQTT_DISCONNECT)
        return "Normal disconnection";
    if (rc == 0x00 && type == MQTT_SUBACK)
        return "Granted QoS 0";
    return mqtt_reason_name(rc);
}

/* Reason code sets of each packet, as lists (Tables 3-1, 3-4 .. 3-11). */
static const uint8_t rc_connack[] = {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86,
                                     0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
                                     0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F};
static const uint8_t rc_puback[] = {/* PUBACK and PUBREC */
                                    0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99};
static const uint8_t rc_pubrel[] = {0x00, 0x92}; /* PUBREL and PUBCOMP */
static const uint8_t rc_suback[] = {0x00, 0x01, 0x02, 0x80, 0x83, 0x87,
                                    0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2};
static const uint8_t rc_unsuback[] = {0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91};
static const uint8_t rc_disconnect_client[] = {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x90,
                                               0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99};
static const uint8_t rc_disconnect_server[] = {
    0x00, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94,
    0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2};
static const uint8_t rc_auth[] = {0x00, 0x18, 0x19};

static int in_set(const uint8_t *set, size_t n, uint8_t rc)
{
    for (size_t i = 0; i < n; i++)
        if (set[i] == rc)
            return 1;
    return 0;
}

#define IN(set, rc) in_set((set), sizeof(set), (rc))

int mqtt_reason_valid(uint8_t type, uint8_t from, uint8_t rc)
{
    switch (type) {
    case MQTT_CONNACK:
        return IN(rc_connack, rc);
    case MQTT_PUBACK:
    case MQTT_PUBREC:
        return IN(rc_puback, rc);
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        return IN(rc_pubrel, rc);
    case MQTT_SUBACK:
        return IN(rc_suback, rc);
    case MQTT_UNSUBACK:
        return IN(rc_unsuback, rc);
    case MQTT_DISCONNECT:
        return from == MQTT_FROM_SERVER ? IN(rc_disconnect_server, rc)
                                        : IN(rc_disconnect_client, rc);
    case MQTT_AUTH:
        return IN(rc_auth, rc);
    default:
        return 0;
    }
}
