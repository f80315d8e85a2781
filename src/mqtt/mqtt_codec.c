/* mqtt_codec.c -- MQTT 3.1 / 3.1.1 / 5.0 wire codec: framer, decoders,
 * encoders.
 *
 * Framer: a byte-level state machine (fixed header byte, remaining-length
 * varint, body).  A body wholly inside the fed bytes is returned in place; a
 * body split across feeds is gathered in a malloc'd buffer of exactly its size
 * (allocated only once the first partial body byte arrives, after the length
 * was checked against max_packet), freed on the next call or by reset.
 * Decoders: walk the body with a bounds-checked cursor, validate every rule
 * of the spec before returning MQTT_OK, and point into the body (no copies);
 * each failure names its rule in a static string.  Encoders: write into
 * buffers the caller sizes with the *_size helpers.  No global mutable state.
 * MQTT 5.0 reuses the 3.1.1 decoders where the layouts agree (a version flag
 * adds the property blocks, read with mqtt_props_read from mqtt_props.c, and
 * swaps the few rules that changed); packets whose layout is new in 5.0
 * (acks with reason codes, DISCONNECT and AUTH with bodies, CONNACK and
 * SUBACK with properties) have their own decoders and encoders, so nothing
 * a 3.1.1 caller does can reach 5.0 code.
 */
#include "mqtt_codec.h"

#include <stdlib.h>
#include <string.h>

/* Framer error: report it and leave the parser idle (buf is NULL here). */
#define PS_FAIL(code, msg)                                                                         \
    do {                                                                                           \
        *used = i;                                                                                 \
        parser_idle(ps);                                                                           \
        FAIL(code, msg);                                                                           \
    } while (0)

#define FAIL(code, msg)                                                                            \
    do {                                                                                           \
        if (why)                                                                                   \
            *why = (msg);                                                                          \
        return (code);                                                                             \
    } while (0)

/* ---- framing --------------------------------------------------------- */

static void parser_idle(mqtt_parser_t *ps)
{
    ps->state = MQTT_PS_HDR;
    ps->remaining = 0;
    ps->have = 0;
    ps->mult = 1;
    ps->len_bytes = 0;
}

int mqtt_parser_next(mqtt_parser_t *ps, const uint8_t *data, size_t n, size_t *used,
                     uint32_t max_packet, mqtt_raw_t *pkt, const char **why)
{
    size_t i = 0;

    if (ps->buf_done) {
        free(ps->buf);
        ps->buf = NULL;
        ps->buf_done = 0;
    }
    while (i < n) {
        switch (ps->state) {
        case MQTT_PS_HDR: {
            uint8_t b = data[i++];
            if ((b >> 4) == 0)
                PS_FAIL(MQTT_ERR_MALFORMED, "[MQTT-2.2.1] reserved packet type 0");
            ps->hdr = b;
            ps->remaining = 0;
            ps->have = 0;
            ps->mult = 1;
            ps->len_bytes = 0;
            ps->state = MQTT_PS_LEN;
            break;
        }
        case MQTT_PS_LEN: {
            uint8_t b = data[i++];
            ps->remaining += (uint32_t)(b & 0x7f) * ps->mult;
            ps->len_bytes++;
            if (b & 0x80) {
                if (ps->len_bytes >= 4)
                    PS_FAIL(MQTT_ERR_MALFORMED, "[MQTT-2.2.3] remaining length over four bytes");
                ps->mult *= 128;
                break;
            }
            if (ps->remaining > max_packet)
                PS_FAIL(MQTT_ERR_TOO_LARGE, "remaining length exceeds the maximum packet size");
            if (ps->remaining == 0) {
                pkt->hdr = ps->hdr;
                pkt->len = 0;
                pkt->body = NULL;
                parser_idle(ps);
                *used = i;
                return 1;
            }
            ps->have = 0;
            ps->state = MQTT_PS_BODY;
            break;
        }
        default: { /* MQTT_PS_BODY */
            size_t avail = n - i;
            uint32_t need = ps->remaining - ps->have;
            if (ps->have == 0 && avail >= ps->remaining) {
                /* Whole body in this feed: zero copy. */
                pkt->hdr = ps->hdr;
                pkt->len = ps->remaining;
                pkt->body = data + i;
                i += ps->remaining;
                parser_idle(ps);
                *used = i;
                return 1;
            }
            if (ps->buf == NULL) {
                ps->buf = malloc(ps->remaining);
                if (ps->buf == NULL)
                    PS_FAIL(MQTT_ERR_TOO_LARGE, "out of memory for the packet body");
            }
            size_t take = avail < need ? avail : need;
            memcpy(ps->buf + ps->have, data + i, take);
            ps->have += (uint32_t)take;
            i += take;
            if (ps->have == ps->remaining) {
                pkt->hdr = ps->hdr;
                pkt->len = ps->remaining;
                pkt->body = ps->buf;
                ps->buf_done = 1;
                parser_idle(ps);
                *used = i;
                return 1;
            }
            break;
        }
        }
    }
    *used = n;
    return 0;
}

void mqtt_parser_reset(mqtt_parser_t *ps)
{
    free(ps->buf);
    ps->buf = NULL;
    ps->buf_done = 0;
    ps->hdr = 0;
    parser_idle(ps);
}

/* ---- validation helpers ---------------------------------------------- */

int mqtt_utf8_valid(const uint8_t *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = p[i];
        if (c < 0x80) {
            if (c == 0)
                return 0; /* U+0000 [MQTT-1.5.3-2] */
            i++;
            continue;
        }
        size_t need;
        uint8_t lo = 0x80, hi = 0xbf; /* bounds of the second byte */
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            if (c == 0xe0)
                lo = 0xa0; /* overlong */
            else if (c == 0xed)
                hi = 0x9f; /* surrogates U+D800..U+DFFF */
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            if (c == 0xf0)
                lo = 0x90; /* overlong */
            else if (c == 0xf4)
                hi = 0x8f; /* > U+10FFFF */
        } else {
            return 0; /* continuation, C0/C1 overlong, F5..FF */
        }
        if (len - i <= need)
            return 0;
        if (p[i + 1] < lo || p[i + 1] > hi)
            return 0;
        for (size_t k = 2; k <= need; k++)
            if ((p[i + k] & 0xc0) != 0x80)
                return 0;
        i += need + 1;
    }
    return 1;
}

int mqtt_topic_name_valid(const uint8_t *p, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (p[i] == '+' || p[i] == '#')
            return 0;
    return mqtt_utf8_valid(p, len);
}

/* 0 when the wildcards of a filter sit right, else the rule broken:
 * 2 for '#' [MQTT-4.7.1-2], 3 for '+' [MQTT-4.7.1-3]. */
static int filter_wildcards(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        int level_start = i == 0 || p[i - 1] == '/';
        if (p[i] == '#') {
            /* Alone in its level and the last character. */
            if (!level_start || i != len - 1)
                return 2;
        } else if (p[i] == '+') {
            /* Alone in its level. */
            if (!level_start || (i + 1 < len && p[i + 1] != '/'))
                return 3;
        }
    }
    return 0;
}

int mqtt_topic_filter_valid(const uint8_t *p, size_t len)
{
    return len > 0 && filter_wildcards(p, len) == 0 && mqtt_utf8_valid(p, len);
}

/* ---- decoding ---------------------------------------------------------- */

/* Bounds-checked cursor over a packet body. */
typedef struct {
    const uint8_t *p, *end;
} rd_t;

static void rd_init(rd_t *rd, const mqtt_raw_t *r)
{
    static const uint8_t none[1];
    if (r->len == 0 || r->body == NULL) {
        rd->p = rd->end = none; /* never NULL: pointer arithmetic stays defined */
    } else {
        rd->p = r->body;
        rd->end = r->body + r->len;
    }
}

static size_t rd_left(const rd_t *rd)
{
    return (size_t)(rd->end - rd->p);
}

static int rd_u8(rd_t *rd, uint8_t *v)
{
    if (rd_left(rd) < 1)
        return 0;
    *v = *rd->p++;
    return 1;
}

static int rd_u16(rd_t *rd, uint16_t *v)
{
    if (rd_left(rd) < 2)
        return 0;
    *v = (uint16_t)(rd->p[0] << 8 | rd->p[1]);
    rd->p += 2;
    return 1;
}

/* Two-byte length, then that many bytes. */
static int rd_str(rd_t *rd, mqtt_str_t *s)
{
    uint16_t len;
    if (rd_left(rd) < 2)
        return 0;
    len = (uint16_t)(rd->p[0] << 8 | rd->p[1]);
    if (rd_left(rd) - 2 < len)
        return 0;
    s->p = rd->p + 2;
    s->len = len;
    rd->p += 2 + (size_t)len;
    return 1;
}

/* Property Length and properties, for `where` sent by `from`. */
static int rd_props(rd_t *rd, uint8_t where, uint8_t from, mqtt_props_t *out, const char **why)
{
    size_t used = 0;
    int rc = mqtt_props_read(rd->p, rd_left(rd), where, from, out, &used, why);
    if (rc != MQTT_OK)
        return rc;
    rd->p += used;
    return MQTT_OK;
}

static const char *const flag_errors[16] = {
    NULL,
    "[MQTT-2.2.2-1] CONNECT fixed-header flags not 0",
    "[MQTT-2.2.2-1] CONNACK fixed-header flags not 0",
    NULL,
    "[MQTT-2.2.2-1] PUBACK fixed-header flags not 0",
    "[MQTT-2.2.2-1] PUBREC fixed-header flags not 0",
    "[MQTT-3.6.1-1] PUBREL fixed-header flags not 0b0010",
    "[MQTT-2.2.2-1] PUBCOMP fixed-header flags not 0",
    "[MQTT-3.8.1-1] SUBSCRIBE fixed-header flags not 0b0010",
    "[MQTT-2.2.2-1] SUBACK fixed-header flags not 0",
    "[MQTT-3.10.1-1] UNSUBSCRIBE fixed-header flags not 0b0010",
    "[MQTT-2.2.2-1] UNSUBACK fixed-header flags not 0",
    "[MQTT-2.2.2-1] PINGREQ fixed-header flags not 0",
    "[MQTT-2.2.2-1] PINGRESP fixed-header flags not 0",
    "[MQTT-3.14.1-1] DISCONNECT fixed-header flags not 0",
    "[MQTT-2.2.2-1] AUTH fixed-header flags not 0",
};

/* Required fixed-header flags of every type but PUBLISH. */
static uint8_t required_flags(uint8_t type)
{
    return (type == MQTT_PUBREL || type == MQTT_SUBSCRIBE || type == MQTT_UNSUBSCRIBE) ? 2 : 0;
}

/* Flags check for any type, whichever side sends it. */
static int check_flags(uint8_t hdr, const char **why)
{
    uint8_t type = hdr >> 4, flags = hdr & 0x0f;
    if (type == 0)
        FAIL(MQTT_ERR_MALFORMED, "[MQTT-2.2.1] reserved packet type 0");
    if (type == MQTT_PUBLISH) {
        uint8_t qos = (flags >> 1) & 3;
        if (qos == 3)
            FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.3.1-4] PUBLISH QoS 3");
        if (qos == 0 && (flags & 0x08))
            FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.3.1-2] PUBLISH DUP set with QoS 0");
        return MQTT_OK;
    }
    if (flags != required_flags(type))
        FAIL(MQTT_ERR_MALFORMED, flag_errors[type]);
    return MQTT_OK;
}

int mqtt_check_client_header(uint8_t hdr, uint8_t proto, const char **why)
{
    switch (hdr >> 4) {
    case MQTT_CONNACK:
        FAIL(MQTT_ERR_PROTOCOL, "[MQTT-2.2.1] CONNACK sent by a client");
    case MQTT_SUBACK:
        FAIL(MQTT_ERR_PROTOCOL, "[MQTT-2.2.1] SUBACK sent by a client");
    case MQTT_UNSUBACK:
        FAIL(MQTT_ERR_PROTOCOL, "[MQTT-2.2.1] UNSUBACK sent by a client");
    case MQTT_PINGRESP:
        FAIL(MQTT_ERR_PROTOCOL, "[MQTT-2.2.1] PINGRESP sent by a client");
    case MQTT_AUTH:
        if (proto < MQTT_PROTO_V5)
            FAIL(MQTT_ERR_PROTOCOL, "[MQTT-2.2.1] packet type 15 is reserved before MQTT 5");
        break;
    default:
        break;
    }
    return check_flags(hdr, why);
}

/* Check the header of a packet handed to a decoder for `type`. */
static int expect_client(const mqtt_raw_t *r, uint8_t type, uint8_t proto, const char **why)
{
    if (mqtt_raw_type(r) != type)
        FAIL(MQTT_ERR_MALFORMED, "packet handed to the wrong decoder");
    return mqtt_check_client_header(r->hdr, proto, why);
}

int mqtt_decode_connect(const mqtt_raw_t *r, mqtt_connect_t *out, const char **why)
{
    return mqtt_decode_connect_v5ok(r, out, 0, why);
}

int mqtt_decode_connect_v5ok(const mqtt_raw_t *r, mqtt_connect_t *out, int allow_v5,
                             const char **why)
{
    rd_t rd;
    mqtt_str_t name;
    uint8_t level, flags;
    int rc, v5;

    memset(out, 0, sizeof *out);
    mqtt_props_init(&out->props);
    mqtt_props_init(&out->will_props);
    if ((rc = expect_client(r, MQTT_CONNECT, MQTT_PROTO_V311, why)) != MQTT_OK)
        return rc;
    rd_init(&rd, r);

    if (!rd_str(&rd, &name))
        FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.1.2-1] CONNECT protocol name truncated");
    if (!rd_u8(&rd, &level))
        FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.1.2] CONNECT protocol level missing");
    if (name.len == 4 && memcmp(name.p, "MQTT", 4) == 0) {
        if (level != MQTT_PROTO_V311 && !(allow_v5 && level == MQTT_PROTO_V5))
            FAIL(MQTT_ERR_PROTOCOL_VERSION, "[MQTT-3.1.2-2] CONNECT unsupported protocol level");
    } else if (name.len == 6 && memcmp(name.p, "MQIsdp", 6) == 0) {
        if (level != MQTT_PROTO_V31)
            FAIL(MQTT_ERR_PROTOCOL_VERSION, "[MQTT-3.1.2-2] CONNECT unsupported protocol level");
    } else {
        FAIL(MQTT_ERR_PROTOCOL, "[MQTT-3.1.2-1] CONNECT unknown protocol name");
    }
    out->proto = level;
    v5 = level == MQTT_PROTO_V5;

    if (!rd_u8(&rd, &flags))
        FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.1.2] CONNECT flags missing");
    if (!rd_u16(&rd, &out->keepalive))
        FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.1.2] CONNECT keep alive truncated");
    if (flags & 0x01)
        FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.1.2-3] CONNECT reserved flag set");
    out->clean_session = (flags >> 1) & 1;
    out->will_flag = (flags >> 2) & 1;
    out->will_qos = (flags >> 3) & 3;
    out->will_retain = (flags >> 5) & 1;
    out->has_password = (flags >> 6) & 1;
    out->has_username = (flags >> 7) & 1;
    if (!out->will_flag) {
        if (out->will_qos != 0)
            FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.1.2-13] CONNECT will QoS set without will flag");
        if (out->will_retain)
            FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.1.2-15] CONNECT will retain set without will flag");
    } else if (out->will_qos == 3) {
        FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.1.2-14] CONNECT will QoS 3");
    }
    /* 5.0 allows a password without a user name [MQTT5 3.1.2.9]. */
    if (out->has_password && !out->has_username && !v5)
        FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.1.2-22] CONNECT password flag without user name flag");
    if (v5 && (rc = rd_props(&rd, MQTT_CONNECT, MQTT_FROM_CLIENT, &out->props, why)) != MQTT_OK)
        return rc;

    /* Payload: client id, will topic, will message, user name, password. */
    if (!rd_str(&rd, &out->client_id))
        FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.1.3-3] CONNECT client id truncated");
    if (!mqtt_utf8_valid(out->client_id.p, out->client_id.len))
        FAIL(MQTT_ERR_MALFORMED, "[MQTT-1.5.3-1] CONNECT client id is not valid UTF-8");
    if (out->will_flag) {
        if (v5 && (rc = rd_props(&rd, MQTT_PROPS_WILL, MQTT_FROM_CLIENT, &out->will_props, why)) !=
                      MQTT_OK)
            return rc;
        if (!rd_str(&rd, &out->will_topic))
            FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.1.2-9] CONNECT will topic missing");
        if (out->will_topic.len == 0)
            FAIL(MQTT_ERR_MALFORMED, "[MQTT-4.7.3-1] CONNECT will topic empty");
        if (!mqtt_utf8_valid(out->will_topic.p, out->will_topic.len))
            FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.1.3-10] CONNECT will topic is not valid UTF-8");
        if (!mqtt_topic_name_valid(out->will_topic.p, out->will_topic.len))
            FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.3.2-2] CONNECT will topic contains a wildcard");
        if (!rd_str(&rd, &out->will_payload))
            FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.1.2-9] CONNECT will message missing");
    }
    if (out->has_username) {
        if (!rd_str(&rd, &out->username))
            FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.1.2-19] CONNECT user name missing");
        if (!mqtt_utf8_valid(out->username.p, out->username.len))
            FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.1.3-11] CONNECT user name is not valid UTF-8");
    }
    if (out->has_password) {
        if (!rd_str(&rd, &out->password))
            FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.1.2-21] CONNECT password missing");
    }
    if (rd_left(&rd) != 0)
        FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.1.3] CONNECT bytes after the payload");

    /* Only a well-formed CONNECT earns an "identifier rejected" CONNACK.  In
     * 5.0 an empty client id is always the server's to assign. */
    if (v5)
        return MQTT_OK;
    if (out->proto == MQTT_PROTO_V31) {
        if (out->client_id.len == 0 || out->client_id.len > 23)
            FAIL(MQTT_ERR_CLIENT_ID, "[MQTT-3.1] MQTT 3.1 client id must be 1 to 23 bytes");
    } else if (out->client_id.len == 0 && !out->clean_session) {
        FAIL(MQTT_ERR_CLIENT_ID, "[MQTT-3.1.3-8] CONNECT empty client id with clean session 0");
    }
    return MQTT_OK;
}

int mqtt_decode_publish(const mqtt_raw_t *r, uint8_t proto, mqtt_publish_t *out, const char **why)
{
    return mqtt_decode_publish_from(r, proto, MQTT_FROM_CLIENT, out, why);
}

int mqtt_decode_publish_from(const mqtt_raw_t *r, uint8_t proto, uint8_t from, mqtt_publish_t *out,
                             const char **why)
{
    rd_t rd;
    int rc;
    const int v5 = proto >= MQTT_PROTO_V5;

    memset(out, 0, sizeof *out);
    mqtt_props_init(&out->props);
    if ((rc = expect_client(r, MQTT_PUBLISH, proto, why)) != MQTT_OK)
        return rc;
    out->retain = r->hdr & 1;
    out->qos = (r->hdr >> 1) & 3;
    out->dup = (r->hdr >> 3) & 1;
    rd_init(&rd, r);
    if (!rd_str(&rd, &out->topic))
        FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.3.2-1] PUBLISH topic name truncated");
    if (out->topic.len == 0) {
        /* 5.0: empty with a Topic Alias (checked after the properties). */
        if (!v5)
            FAIL(MQTT_ERR_MALFORMED, "[MQTT-4.7.3-1] PUBLISH topic name empty");
    } else {
        if (!mqtt_utf8_valid(out->topic.p, out->topic.len))
            FAIL(MQTT_ERR_MALFORMED, "[MQTT-1.5.3-1] PUBLISH topic name is not valid UTF-8");
        if (!mqtt_topic_name_valid(out->topic.p, out->topic.len))
            FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.3.2-2] PUBLISH topic name contains a wildcard");
    }
    if (out->qos > 0) {
        if (!rd_u16(&rd, &out->packet_id))
            FAIL(MQTT_ERR_MALFORMED, "[MQTT-2.3.1-1] PUBLISH packet id truncated");
        if (out->packet_id == 0)
            FAIL(MQTT_ERR_MALFORMED, "[MQTT-2.3.1-1] PUBLISH packet id 0 with QoS > 0");
    }
    if (v5) {
        if ((rc = rd_props(&rd, MQTT_PUBLISH, from, &out->props, why)) != MQTT_OK)
            return rc;
        if (out->topic.len == 0 && !mqtt_props_has(&out->props, MQTT_PROP_TOPIC_ALIAS))
            FAIL(MQTT_ERR_PROTOCOL,
                 "[MQTT5 3.3.2.1] PUBLISH topic name empty without a Topic Alias");
    }
    out->payload_len = (uint32_t)rd_left(&rd);
    out->payload = out->payload_len ? rd.p : NULL;
    return MQTT_OK;
}

int mqtt_shared_filter_parse(const uint8_t *f, size_t len, const uint8_t **group, size_t *group_len,
                             const uint8_t **filter, size_t *filter_len)
{
    const uint8_t *g, *real;
    size_t rest, i = 0;

    if (len < 7 || memcmp(f, "$share/", 7) != 0)
        return 0;
    g = f + 7;
    rest = len - 7;
    while (i < rest && g[i] != '/') {
        if (g[i] == '+' || g[i] == '#')
            return -1; /* [MQTT5-4.8.2-2] */
        i++;
    }
    if (i == 0 || i == rest) /* empty share name, or no '/' after it */
        return -1;
    if (!mqtt_utf8_valid(g, i))
        return -1;
    real = g + i + 1;
    if (!mqtt_topic_filter_valid(real, rest - i - 1))
        return -1;
    if (group)
        *group = g;
    if (group_len)
        *group_len = i;
    if (filter)
        *filter = real;
    if (filter_len)
        *filter_len = rest - i - 1;
    return 1;
}

/* Shared by SUBSCRIBE (with_options 1) and UNSUBSCRIBE (0), 3.1.1 and 5.0. */
static int decode_sub(const mqtt_raw_t *r, uint8_t type, int v5, mqtt_sub_iter_t *it,
                      const char **why)
{
    const int opts = type == MQTT_SUBSCRIBE;
    rd_t rd;
    uint32_t count = 0;
    int rc;

    memset(it, 0, sizeof *it);
    mqtt_props_init(&it->props);
    if ((rc = expect_client(r, type, v5 ? MQTT_PROTO_V5 : MQTT_PROTO_V311, why)) != MQTT_OK)
        return rc;
    rd_init(&rd, r);
    if (!rd_u16(&rd, &it->packet_id))
        FAIL(MQTT_ERR_MALFORMED, opts ? "[MQTT-2.3.1-1] SUBSCRIBE packet id truncated"
                                      : "[MQTT-2.3.1-1] UNSUBSCRIBE packet id truncated");
    if (it->packet_id == 0)
        FAIL(MQTT_ERR_MALFORMED, opts ? "[MQTT-2.3.1-1] SUBSCRIBE packet id 0"
                                      : "[MQTT-2.3.1-1] UNSUBSCRIBE packet id 0");
    if (v5) {
        it->proto = MQTT_PROTO_V5;
        if ((rc = rd_props(&rd, type, MQTT_FROM_CLIENT, &it->props, why)) != MQTT_OK)
            return rc;
    }
    if (rd_left(&rd) == 0)
        FAIL(MQTT_ERR_PROTOCOL, opts ? "[MQTT-3.8.3-3] SUBSCRIBE without topic filters"
                                     : "[MQTT-3.10.3-2] UNSUBSCRIBE without topic filters");
    it->p = rd.p;
    it->end = rd.end;
    it->with_options = (uint8_t)opts;
    while (rd_left(&rd) > 0) {
        mqtt_str_t f;
        if (!rd_str(&rd, &f))
            FAIL(MQTT_ERR_MALFORMED, opts ? "[MQTT-3.8.3-1] SUBSCRIBE topic filter truncated"
                                          : "[MQTT-3.10.3-1] UNSUBSCRIBE topic filter truncated");
        if (f.len == 0)
            FAIL(MQTT_ERR_MALFORMED, opts ? "[MQTT-4.7.3-1] SUBSCRIBE topic filter empty"
                                          : "[MQTT-4.7.3-1] UNSUBSCRIBE topic filter empty");
        if (!mqtt_utf8_valid(f.p, f.len))
            FAIL(MQTT_ERR_MALFORMED,
                 opts ? "[MQTT-1.5.3-1] SUBSCRIBE topic filter is not valid UTF-8"
                      : "[MQTT-1.5.3-1] UNSUBSCRIBE topic filter is not valid UTF-8");
        switch (filter_wildcards(f.p, f.len)) {
        case 2:
            FAIL(MQTT_ERR_MALFORMED, opts
                                         ? "[MQTT-4.7.1-2] SUBSCRIBE topic filter misplaces '#'"
                                         : "[MQTT-4.7.1-2] UNSUBSCRIBE topic filter misplaces '#'");
        case 3:
            FAIL(MQTT_ERR_MALFORMED, opts
                                         ? "[MQTT-4.7.1-3] SUBSCRIBE topic filter misplaces '+'"
                                         : "[MQTT-4.7.1-3] UNSUBSCRIBE topic filter misplaces '+'");
        default:
            break;
        }
        int shared = 0;
        if (v5 && (shared = mqtt_shared_filter_parse(f.p, f.len, NULL, NULL, NULL, NULL)) < 0)
            FAIL(MQTT_ERR_PROTOCOL,
                 opts ? "[MQTT5-4.8.2-2] SUBSCRIBE malformed shared subscription filter"
                      : "[MQTT5-4.8.2-2] UNSUBSCRIBE malformed shared subscription filter");
        if (opts && !v5) {
            uint8_t o;
            if (!rd_u8(&rd, &o))
                FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.8.3-1] SUBSCRIBE requested QoS missing");
            if (o & 0xfc)
                FAIL(MQTT_ERR_MALFORMED, "[MQTT-3-8.3-4] SUBSCRIBE options reserved bits set");
            if (o > 2)
                FAIL(MQTT_ERR_MALFORMED, "[MQTT-3-8.3-4] SUBSCRIBE requested QoS 3");
        } else if (opts) {
            uint8_t o;
            if (!rd_u8(&rd, &o))
                FAIL(MQTT_ERR_MALFORMED, "[MQTT5 3.8.3] SUBSCRIBE subscription options missing");
            if (o & 0xc0)
                FAIL(MQTT_ERR_MALFORMED, "[MQTT5-3.8.3-5] SUBSCRIBE options reserved bits set");
            if (MQTT_SUBOPT_QOS(o) == 3)
                FAIL(MQTT_ERR_PROTOCOL, "[MQTT5 3.8.3.1] SUBSCRIBE Maximum QoS 3");
            if (MQTT_SUBOPT_RETAIN_HANDLING(o) == 3)
                FAIL(MQTT_ERR_PROTOCOL, "[MQTT5 3.8.3.1] SUBSCRIBE Retain Handling 3");
            if (shared == 1 && (o & MQTT_SUBOPT_NO_LOCAL))
                FAIL(MQTT_ERR_PROTOCOL,
                     "[MQTT5-3.8.3-4] SUBSCRIBE No Local on a shared subscription");
        }
        if (++count > UINT16_MAX)
            FAIL(MQTT_ERR_MALFORMED, opts ? "SUBSCRIBE has more than 65535 topic filters"
                                          : "UNSUBSCRIBE has more than 65535 topic filters");
    }
    it->count = (uint16_t)count;
    return MQTT_OK;
}

int mqtt_decode_subscribe(const mqtt_raw_t *r, mqtt_sub_iter_t *it, const char **why)
{
    return decode_sub(r, MQTT_SUBSCRIBE, 0, it, why);
}

int mqtt_decode_unsubscribe(const mqtt_raw_t *r, mqtt_sub_iter_t *it, const char **why)
{
    return decode_sub(r, MQTT_UNSUBSCRIBE, 0, it, why);
}

int mqtt_decode_subscribe_v5(const mqtt_raw_t *r, mqtt_sub_iter_t *it, const char **why)
{
    return decode_sub(r, MQTT_SUBSCRIBE, 1, it, why);
}

int mqtt_decode_unsubscribe_v5(const mqtt_raw_t *r, mqtt_sub_iter_t *it, const char **why)
{
    return decode_sub(r, MQTT_UNSUBSCRIBE, 1, it, why);
}

int mqtt_sub_next_opts(mqtt_sub_iter_t *it, mqtt_str_t *filter, uint8_t *options)
{
    rd_t rd = {it->p, it->end};
    uint8_t o = 0;

    if (it->p == NULL || !rd_str(&rd, filter))
        return 0;
    if (it->with_options && !rd_u8(&rd, &o))
        return 0;
    if (options)
        *options = o;
    it->p = rd.p;
    return 1;
}

int mqtt_sub_next(mqtt_sub_iter_t *it, mqtt_str_t *filter, uint8_t *qos)
{
    uint8_t o = 0;

    if (!mqtt_sub_next_opts(it, filter, &o))
        return 0;
    if (qos)
        *qos = o & 3;
    return 1;
}

int mqtt_decode_ack(const mqtt_raw_t *r, uint16_t *packet_id, const char **why)
{
    uint8_t type = mqtt_raw_type(r);
    int rc;

    if (type != MQTT_PUBACK && type != MQTT_PUBREC && type != MQTT_PUBREL && type != MQTT_PUBCOMP &&
        type != MQTT_UNSUBACK)
        FAIL(MQTT_ERR_MALFORMED, "packet handed to the wrong decoder");
    if ((rc = check_flags(r->hdr, why)) != MQTT_OK)
        return rc;
    if (r->len != 2 || r->body == NULL)
        FAIL(MQTT_ERR_MALFORMED, "[MQTT-2.3.1] acknowledgement remaining length not 2");
    *packet_id = (uint16_t)(r->body[0] << 8 | r->body[1]);
    if (*packet_id == 0)
        FAIL(MQTT_ERR_MALFORMED, "[MQTT-2.3.1] acknowledgement packet id 0");
    return MQTT_OK;
}

int mqtt_decode_empty(const mqtt_raw_t *r, const char **why)
{
    uint8_t type = mqtt_raw_type(r);
    int rc;

    if (type != MQTT_PINGREQ && type != MQTT_PINGRESP && type != MQTT_DISCONNECT)
        FAIL(MQTT_ERR_MALFORMED, "packet handed to the wrong decoder");
    if ((rc = check_flags(r->hdr, why)) != MQTT_OK)
        return rc;
    if (r->len != 0) {
        if (type == MQTT_PINGREQ)
            FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.12.1] PINGREQ with a body");
        if (type == MQTT_PINGRESP)
            FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.13.1] PINGRESP with a body");
        FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.14.1] DISCONNECT with a body");
    }
    return MQTT_OK;
}

int mqtt_decode_connack(const mqtt_raw_t *r, uint8_t *session_present, uint8_t *rc,
                        const char **why)
{
    int e;

    if (mqtt_raw_type(r) != MQTT_CONNACK)
        FAIL(MQTT_ERR_MALFORMED, "packet handed to the wrong decoder");
    if ((e = check_flags(r->hdr, why)) != MQTT_OK)
        return e;
    if (r->len != 2 || r->body == NULL)
        FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.2.1] CONNACK remaining length not 2");
    if (r->body[0] & 0xfe)
        FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.2.2.2] CONNACK reserved acknowledge flags set");
    if (r->body[1] > MQTT_CONNACK_NOT_AUTHORIZED)
        FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.2.2.3] CONNACK reserved return code");
    if (r->body[1] != 0 && (r->body[0] & 1))
        FAIL(MQTT_ERR_PROTOCOL,
             "[MQTT-3.2.2-4] CONNACK session present with a non-zero return code");
    *session_present = r->body[0] & 1;
    *rc = r->body[1];
    return MQTT_OK;
}

int mqtt_decode_suback(const mqtt_raw_t *r, uint16_t *packet_id, uint8_t *rcs, uint32_t max,
                       uint32_t *n, const char **why)
{
    int e;

    if (mqtt_raw_type(r) != MQTT_SUBACK)
        FAIL(MQTT_ERR_MALFORMED, "packet handed to the wrong decoder");
    if ((e = check_flags(r->hdr, why)) != MQTT_OK)
        return e;
    if (r->len < 2 || r->body == NULL)
        FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.9.2] SUBACK packet id truncated");
    if (r->len < 3)
        FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.9.3] SUBACK without return codes");
    uint16_t id = (uint16_t)(r->body[0] << 8 | r->body[1]);
    if (id == 0)
        FAIL(MQTT_ERR_MALFORMED, "[MQTT-2.3.1] SUBACK packet id 0");
    for (uint32_t i = 2; i < r->len; i++) {
        uint8_t c = r->body[i];
        if (c > 2 && c != MQTT_SUBACK_FAILURE)
            FAIL(MQTT_ERR_MALFORMED, "[MQTT-3.9.3-2] SUBACK reserved return code");
    }
    *packet_id = id;
    *n = r->len - 2;
    for (uint32_t i = 0; i < *n && i < max; i++)
        rcs[i] = r->body[2 + i];
    return MQTT_OK;
}

/* ---- decoding MQTT 5.0 ---------------------------------------------------- */

/* Properties from body[off..len) that must fill the packet exactly. */
static int props_to_end(const mqtt_raw_t *r, uint32_t off, uint8_t where, uint8_t from,
                        mqtt_props_t *out, const char *trailing, const char **why)
{
    size_t used = 0;
    int rc = mqtt_props_read(r->body + off, r->len - off, where, from, out, &used, why);
    if (rc != MQTT_OK)
        return rc;
    if (used != r->len - off)
        FAIL(MQTT_ERR_MALFORMED, trailing);
    return MQTT_OK;
}

int mqtt_decode_ack_v5(const mqtt_raw_t *r, mqtt_ack_t *out, const char **why)
{
    static const char *const bad_reason[] = {
        "[MQTT5-3.4.2-1] PUBACK reason code not allowed",
        "[MQTT5-3.5.2-1] PUBREC reason code not allowed",
        "[MQTT5-3.6.2-1] PUBREL reason code not allowed",
        "[MQTT5-3.7.2-1] PUBCOMP reason code not allowed",
    };
    uint8_t type = mqtt_raw_type(r);
    int rc;

    memset(out, 0, sizeof *out);
    mqtt_props_init(&out->props);
    if (type != MQTT_PUBACK && type != MQTT_PUBREC && type != MQTT_PUBREL && type != MQTT_PUBCOMP)
        FAIL(MQTT_ERR_MALFORMED, "packet handed to the wrong decoder");
    if ((rc = check_flags(r->hdr, why)) != MQTT_OK)
        return rc;
    if (r->len < 2 || r->body == NULL)
        FAIL(MQTT_ERR_MALFORMED, "[MQTT5 3.4.2] acknowledgement packet id truncated");
    out->packet_id = (uint16_t)(r->body[0] << 8 | r->body[1]);
    if (out->packet_id == 0)
        FAIL(MQTT_ERR_MALFORMED, "[MQTT-2.3.1] acknowledgement packet id 0");
    if (r->len >= 3)
        out->reason = r->body[2];
    if (r->len >= 4 &&
        (rc = props_to_end(r, 3, type, MQTT_FROM_CLIENT, &out->props,
                           "[MQTT5 3.4.2] bytes after the acknowledgement properties", why)) !=
            MQTT_OK)
        return rc;
    if (!mqtt_reason_valid(type, MQTT_FROM_CLIENT, out->reason))
        FAIL(MQTT_ERR_PROTOCOL, bad_reason[type - MQTT_PUBACK]);
    return MQTT_OK;
}

int mqtt_decode_disconnect_v5(const mqtt_raw_t *r, uint8_t from, mqtt_disconnect_t *out,
                              const char **why)
{
    int rc;

    memset(out, 0, sizeof *out);
    mqtt_props_init(&out->props);
    if (mqtt_raw_type(r) != MQTT_DISCONNECT)
        FAIL(MQTT_ERR_MALFORMED, "packet handed to the wrong decoder");
    if ((rc = check_flags(r->hdr, why)) != MQTT_OK)
        return rc;
    if (r->len == 0 || r->body == NULL)
        return MQTT_OK; /* 0x00 Normal disconnection [MQTT5 3.14.2.1] */
    out->reason = r->body[0];
    if (r->len >= 2 &&
        (rc = props_to_end(r, 1, MQTT_DISCONNECT, from, &out->props,
                           "[MQTT5 3.14.2] bytes after the DISCONNECT properties", why)) != MQTT_OK)
        return rc;
    if (!mqtt_reason_valid(MQTT_DISCONNECT, from, out->reason))
        FAIL(MQTT_ERR_PROTOCOL,
             from == MQTT_FROM_SERVER
                 ? "[MQTT5-3.14.2-1] DISCONNECT reason code not allowed from a server"
                 : "[MQTT5-3.14.2-1] DISCONNECT reason code not allowed from a client");
    return MQTT_OK;
}

int mqtt_decode_auth(const mqtt_raw_t *r, mqtt_auth_t *out, const char **why)
{
    int rc;

    memset(out, 0, sizeof *out);
    mqtt_props_init(&out->props);
    if (mqtt_raw_type(r) != MQTT_AUTH)
        FAIL(MQTT_ERR_MALFORMED, "packet handed to the wrong decoder");
    if ((rc = check_flags(r->hdr, why)) != MQTT_OK)
        return rc;
    if (r->len == 0 || r->body == NULL)
        return MQTT_OK; /* 0x00 Success, no properties [MQTT5 3.15.2.1] */
    out->reason = r->body[0];
    if (r->len >= 2 &&
        (rc = props_to_end(r, 1, MQTT_AUTH, MQTT_FROM_CLIENT, &out->props,
                           "[MQTT5 3.15.2] bytes after the AUTH properties", why)) != MQTT_OK)
        return rc;
    if (!mqtt_reason_valid(MQTT_AUTH, MQTT_FROM_CLIENT, out->reason))
        FAIL(MQTT_ERR_PROTOCOL, "[MQTT5-3.15.2-1] AUTH reason code not 0x00, 0x18 or 0x19");
    if (!mqtt_props_has(&out->props, MQTT_PROP_AUTH_METHOD) &&
        !(out->reason == MQTT_RC_SUCCESS && out->props.raw_len == 0))
        FAIL(MQTT_ERR_PROTOCOL, "[MQTT5 3.15.2.2.2] AUTH without Authentication Method");
    return MQTT_OK;
}

int mqtt_decode_connack_v5(const mqtt_raw_t *r, mqtt_connack_t *out, const char **why)
{
    int rc;

    memset(out, 0, sizeof *out);
    mqtt_props_init(&out->props);
    if (mqtt_raw_type(r) != MQTT_CONNACK)
        FAIL(MQTT_ERR_MALFORMED, "packet handed to the wrong decoder");
    if ((rc = check_flags(r->hdr, why)) != MQTT_OK)
        return rc;
    if (r->len < 3 || r->body == NULL)
        FAIL(MQTT_ERR_MALFORMED, "[MQTT5 3.2.2] CONNACK variable header truncated");
    if (r->body[0] & 0xfe)
        FAIL(MQTT_ERR_MALFORMED, "[MQTT5-3.2.2-1] CONNACK reserved acknowledge flags set");
    out->session_present = r->body[0] & 1;
    out->reason = r->body[1];
    if ((rc = props_to_end(r, 2, MQTT_CONNACK, MQTT_FROM_SERVER, &out->props,
                           "[MQTT5 3.2.3] CONNACK has a payload", why)) != MQTT_OK)
        return rc;
    if (!mqtt_reason_valid(MQTT_CONNACK, MQTT_FROM_SERVER, out->reason))
        FAIL(MQTT_ERR_PROTOCOL, "[MQTT5-3.2.2-8] CONNACK reason code not allowed");
    if (out->reason != 0 && out->session_present)
        FAIL(MQTT_ERR_PROTOCOL,
             "[MQTT5-3.2.2-6] CONNACK session present with a non-zero reason code");
    return MQTT_OK;
}

int mqtt_decode_suback_v5(const mqtt_raw_t *r, mqtt_suback_t *out, const char **why)
{
    uint8_t type = mqtt_raw_type(r);
    const int sub = type == MQTT_SUBACK;
    rd_t rd;
    int rc;

    memset(out, 0, sizeof *out);
    mqtt_props_init(&out->props);
    if (type != MQTT_SUBACK && type != MQTT_UNSUBACK)
        FAIL(MQTT_ERR_MALFORMED, "packet handed to the wrong decoder");
    if ((rc = check_flags(r->hdr, why)) != MQTT_OK)
        return rc;
    rd_init(&rd, r);
    if (!rd_u16(&rd, &out->packet_id))
        FAIL(MQTT_ERR_MALFORMED, sub ? "[MQTT5 3.9.2] SUBACK packet id truncated"
                                     : "[MQTT5 3.11.2] UNSUBACK packet id truncated");
    if (out->packet_id == 0)
        FAIL(MQTT_ERR_MALFORMED,
             sub ? "[MQTT-2.3.1] SUBACK packet id 0" : "[MQTT-2.3.1] UNSUBACK packet id 0");
    if ((rc = rd_props(&rd, type, MQTT_FROM_SERVER, &out->props, why)) != MQTT_OK)
        return rc;
    if (rd_left(&rd) == 0)
        FAIL(MQTT_ERR_MALFORMED, sub ? "[MQTT5 3.9.3] SUBACK without reason codes"
                                     : "[MQTT5 3.11.3] UNSUBACK without reason codes");
    out->reasons = rd.p;
    out->count = (uint32_t)rd_left(&rd);
    for (uint32_t i = 0; i < out->count; i++)
        if (!mqtt_reason_valid(type, MQTT_FROM_SERVER, out->reasons[i]))
            FAIL(MQTT_ERR_PROTOCOL, sub ? "[MQTT5-3.9.3-2] SUBACK reason code not allowed"
                                        : "[MQTT5-3.11.3-2] UNSUBACK reason code not allowed");
    return MQTT_OK;
}

uint8_t mqtt_err_reason(int err)
{
    switch (err) {
    case MQTT_ERR_MALFORMED:
        return MQTT_RC_MALFORMED_PACKET;
    case MQTT_ERR_PROTOCOL:
        return MQTT_RC_PROTOCOL_ERROR;
    case MQTT_ERR_TOO_LARGE:
        return MQTT_RC_PACKET_TOO_LARGE;
    case MQTT_ERR_PROTOCOL_VERSION:
        return MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION;
    case MQTT_ERR_CLIENT_ID:
        return MQTT_RC_CLIENT_ID_NOT_VALID;
    default:
        return MQTT_RC_UNSPECIFIED_ERROR;
    }
}

/* ---- encoding ---------------------------------------------------------- */

size_t mqtt_varint_size(uint32_t v)
{
    return v < 128u ? 1 : v < 16384u ? 2 : v < 2097152u ? 3 : 4;
}

size_t mqtt_encode_varint(uint8_t *out, uint32_t v)
{
    size_t n = 0;
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        if (v && n < 3)
            b |= 0x80;
        out[n++] = b;
    } while (v && n < 4);
    return n;
}

static uint8_t *put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return p + 2;
}

static uint8_t *put_bytes(uint8_t *p, const void *src, size_t len)
{
    if (len)
        memcpy(p, src, len);
    return p + len;
}

/* Two-byte length then the bytes (callers keep len <= 65535). */
static uint8_t *put_str(uint8_t *p, const void *src, size_t len)
{
    p = put_u16(p, (uint16_t)len);
    return put_bytes(p, src, len);
}

size_t mqtt_encode_connack(uint8_t *out, uint8_t session_present, uint8_t rc)
{
    out[0] = MQTT_CONNACK << 4;
    out[1] = 2;
    out[2] = session_present ? 1 : 0;
    out[3] = rc;
    return 4;
}

size_t mqtt_encode_ack(uint8_t *out, uint8_t type, uint16_t packet_id)
{
    out[0] = (uint8_t)(type << 4 | (type == MQTT_PUBREL ? 2 : 0));
    out[1] = 2;
    put_u16(out + 2, packet_id);
    return 4;
}

size_t mqtt_suback_size(uint32_t n)
{
    return 1 + mqtt_varint_size(2 + n) + 2 + (size_t)n;
}

size_t mqtt_encode_suback(uint8_t *out, uint16_t packet_id, const uint8_t *rcs, uint32_t n)
{
    uint8_t *p = out;
    *p++ = MQTT_SUBACK << 4;
    p += mqtt_encode_varint(p, 2 + n);
    p = put_u16(p, packet_id);
    p = put_bytes(p, rcs, n);
    return (size_t)(p - out);
}

static size_t encode_empty(uint8_t *out, uint8_t type)
{
    out[0] = (uint8_t)(type << 4);
    out[1] = 0;
    return 2;
}

size_t mqtt_encode_pingresp(uint8_t *out)
{
    return encode_empty(out, MQTT_PINGRESP);
}

size_t mqtt_encode_pingreq(uint8_t *out)
{
    return encode_empty(out, MQTT_PINGREQ);
}

size_t mqtt_encode_disconnect(uint8_t *out)
{
    return encode_empty(out, MQTT_DISCONNECT);
}

static size_t publish_remaining(uint16_t topic_len, uint8_t qos, uint32_t payload_len)
{
    return 2 + (size_t)topic_len + (qos ? 2 : 0) + (size_t)payload_len;
}

size_t mqtt_publish_size(uint16_t topic_len, uint8_t qos, uint32_t payload_len)
{
    size_t rem = publish_remaining(topic_len, qos, payload_len);
    return 1 + mqtt_varint_size((uint32_t)rem) + rem;
}

size_t mqtt_encode_publish(uint8_t *out, const uint8_t *topic, uint16_t topic_len, uint8_t qos,
                           uint8_t retain, uint8_t dup, uint16_t packet_id, const uint8_t *payload,
                           uint32_t payload_len)
{
    uint8_t *p = out;
    *p++ = (uint8_t)(MQTT_PUBLISH << 4 | (dup ? 8 : 0) | (qos & 3) << 1 | (retain ? 1 : 0));
    p += mqtt_encode_varint(p, (uint32_t)publish_remaining(topic_len, qos, payload_len));
    p = put_str(p, topic, topic_len);
    if (qos)
        p = put_u16(p, packet_id);
    p = put_bytes(p, payload, payload_len);
    return (size_t)(p - out);
}

/* Property Length and block. */
static size_t props_size(size_t len)
{
    return mqtt_varint_size((uint32_t)len) + len;
}

static uint8_t *put_props(uint8_t *p, const uint8_t *props, size_t len)
{
    p += mqtt_encode_varint(p, (uint32_t)len);
    return put_bytes(p, props, len);
}

/* Fixed header + remaining length + body of `rem` bytes. */
static size_t whole_size(size_t rem)
{
    return 1 + mqtt_varint_size((uint32_t)rem) + rem;
}

static size_t connect_remaining(const mqtt_connect_opts_t *o)
{
    const int v5 = o->proto == MQTT_PROTO_V5;
    size_t rem = (o->proto == MQTT_PROTO_V31 ? 2 + 6 : 2 + 4) + 1 + 1 + 2;
    if (v5)
        rem += props_size(o->props_len);
    rem += 2 + strlen(o->client_id);
    if (o->will_topic && v5)
        rem += props_size(o->will_props_len);
    if (o->will_topic)
        rem += 2 + strlen(o->will_topic) + 2 + (size_t)o->will_payload_len;
    if (o->username)
        rem += 2 + strlen(o->username);
    if (o->password)
        rem += 2 + strlen(o->password);
    return rem;
}

size_t mqtt_connect_size(const mqtt_connect_opts_t *o)
{
    size_t rem = connect_remaining(o);
    return 1 + mqtt_varint_size((uint32_t)rem) + rem;
}

size_t mqtt_encode_connect(uint8_t *out, const mqtt_connect_opts_t *o)
{
    uint8_t *p = out;
    uint8_t flags = 0;

    *p++ = MQTT_CONNECT << 4;
    p += mqtt_encode_varint(p, (uint32_t)connect_remaining(o));
    if (o->proto == MQTT_PROTO_V31) {
        p = put_str(p, "MQIsdp", 6);
        *p++ = MQTT_PROTO_V31;
    } else {
        p = put_str(p, "MQTT", 4);
        *p++ = o->proto; /* 4 or 5; other levels only to test servers */
    }
    if (o->clean_session)
        flags |= 0x02;
    if (o->will_topic)
        flags |= (uint8_t)(0x04 | (o->will_qos & 3) << 3 | (o->will_retain ? 0x20 : 0));
    if (o->password)
        flags |= 0x40;
    if (o->username)
        flags |= 0x80;
    *p++ = flags;
    p = put_u16(p, o->keepalive);
    if (o->proto == MQTT_PROTO_V5)
        p = put_props(p, o->props, o->props_len);
    p = put_str(p, o->client_id, strlen(o->client_id));
    if (o->will_topic) {
        if (o->proto == MQTT_PROTO_V5)
            p = put_props(p, o->will_props, o->will_props_len);
        p = put_str(p, o->will_topic, strlen(o->will_topic));
        p = put_str(p, o->will_payload, o->will_payload_len);
    }
    if (o->username)
        p = put_str(p, o->username, strlen(o->username));
    if (o->password)
        p = put_str(p, o->password, strlen(o->password));
    return (size_t)(p - out);
}

size_t mqtt_subscribe_size(uint16_t filter_len)
{
    size_t rem = 2 + 2 + (size_t)filter_len + 1;
    return 1 + mqtt_varint_size((uint32_t)rem) + rem;
}

size_t mqtt_encode_subscribe(uint8_t *out, uint16_t packet_id, const uint8_t *filter,
                             uint16_t filter_len, uint8_t qos)
{
    uint8_t *p = out;
    *p++ = MQTT_SUBSCRIBE << 4 | 2;
    p += mqtt_encode_varint(p, 2 + 2 + (uint32_t)filter_len + 1);
    p = put_u16(p, packet_id);
    p = put_str(p, filter, filter_len);
    *p++ = qos;
    return (size_t)(p - out);
}

size_t mqtt_unsubscribe_size(uint16_t filter_len)
{
    size_t rem = 2 + 2 + (size_t)filter_len;
    return 1 + mqtt_varint_size((uint32_t)rem) + rem;
}

size_t mqtt_encode_unsubscribe(uint8_t *out, uint16_t packet_id, const uint8_t *filter,
                               uint16_t filter_len)
{
    uint8_t *p = out;
    *p++ = MQTT_UNSUBSCRIBE << 4 | 2;
    p += mqtt_encode_varint(p, 2 + 2 + (uint32_t)filter_len);
    p = put_u16(p, packet_id);
    p = put_str(p, filter, filter_len);
    return (size_t)(p - out);
}

/* ---- encoding MQTT 5.0 ----------------------------------------------------- */

size_t mqtt_connack_v5_size(size_t props_len)
{
    return whole_size(2 + props_size(props_len));
}

size_t mqtt_encode_connack_v5(uint8_t *out, uint8_t session_present, uint8_t reason,
                              const uint8_t *props, size_t props_len)
{
    uint8_t *p = out;
    *p++ = MQTT_CONNACK << 4;
    p += mqtt_encode_varint(p, (uint32_t)(2 + props_size(props_len)));
    *p++ = session_present ? 1 : 0;
    *p++ = reason;
    p = put_props(p, props, props_len);
    return (size_t)(p - out);
}

static size_t publish_v5_remaining(uint16_t topic_len, uint8_t qos, size_t props_len,
                                   uint32_t payload_len)
{
    return 2 + (size_t)topic_len + (qos ? 2 : 0) + props_size(props_len) + (size_t)payload_len;
}

size_t mqtt_publish_v5_size(uint16_t topic_len, uint8_t qos, size_t props_len, uint32_t payload_len)
{
    return whole_size(publish_v5_remaining(topic_len, qos, props_len, payload_len));
}

size_t mqtt_encode_publish_v5(uint8_t *out, const uint8_t *topic, uint16_t topic_len, uint8_t qos,
                              uint8_t retain, uint8_t dup, uint16_t packet_id, const uint8_t *props,
                              size_t props_len, const uint8_t *payload, uint32_t payload_len)
{
    uint8_t *p = out;
    *p++ = (uint8_t)(MQTT_PUBLISH << 4 | (dup ? 8 : 0) | (qos & 3) << 1 | (retain ? 1 : 0));
    p += mqtt_encode_varint(p,
                            (uint32_t)publish_v5_remaining(topic_len, qos, props_len, payload_len));
    p = put_str(p, topic, topic_len);
    if (qos)
        p = put_u16(p, packet_id);
    p = put_props(p, props, props_len);
    p = put_bytes(p, payload, payload_len);
    return (size_t)(p - out);
}

/* Reason code and properties after `fixed` bytes, with the short forms:
 * nothing for reason 0 without properties, the reason alone without
 * properties. */
static size_t reason_remaining(size_t fixed, uint8_t reason, size_t props_len)
{
    if (props_len == 0)
        return fixed + (reason ? 1 : 0);
    return fixed + 1 + props_size(props_len);
}

static uint8_t *put_reason(uint8_t *p, uint8_t reason, const uint8_t *props, size_t props_len)
{
    if (props_len == 0 && reason == 0)
        return p;
    *p++ = reason;
    if (props_len)
        p = put_props(p, props, props_len);
    return p;
}

size_t mqtt_ack_v5_size(uint8_t reason, size_t props_len)
{
    return whole_size(reason_remaining(2, reason, props_len));
}

size_t mqtt_encode_ack_v5(uint8_t *out, uint8_t type, uint16_t packet_id, uint8_t reason,
                          const uint8_t *props, size_t props_len)
{
    uint8_t *p = out;
    *p++ = (uint8_t)(type << 4 | (type == MQTT_PUBREL ? 2 : 0));
    p += mqtt_encode_varint(p, (uint32_t)reason_remaining(2, reason, props_len));
    p = put_u16(p, packet_id);
    p = put_reason(p, reason, props, props_len);
    return (size_t)(p - out);
}

size_t mqtt_suback_v5_size(size_t props_len, uint32_t n)
{
    return whole_size(2 + props_size(props_len) + (size_t)n);
}

static size_t encode_suback_v5(uint8_t *out, uint8_t type, uint16_t packet_id, const uint8_t *props,
                               size_t props_len, const uint8_t *reasons, uint32_t n)
{
    uint8_t *p = out;
    *p++ = (uint8_t)(type << 4);
    p += mqtt_encode_varint(p, (uint32_t)(2 + props_size(props_len) + n));
    p = put_u16(p, packet_id);
    p = put_props(p, props, props_len);
    p = put_bytes(p, reasons, n);
    return (size_t)(p - out);
}

size_t mqtt_encode_suback_v5(uint8_t *out, uint16_t packet_id, const uint8_t *props,
                             size_t props_len, const uint8_t *reasons, uint32_t n)
{
    return encode_suback_v5(out, MQTT_SUBACK, packet_id, props, props_len, reasons, n);
}

size_t mqtt_encode_unsuback_v5(uint8_t *out, uint16_t packet_id, const uint8_t *props,
                               size_t props_len, const uint8_t *reasons, uint32_t n)
{
    return encode_suback_v5(out, MQTT_UNSUBACK, packet_id, props, props_len, reasons, n);
}

static size_t encode_reason_only(uint8_t *out, uint8_t type, uint8_t reason, const uint8_t *props,
                                 size_t props_len)
{
    uint8_t *p = out;
    *p++ = (uint8_t)(type << 4);
    p += mqtt_encode_varint(p, (uint32_t)reason_remaining(0, reason, props_len));
    p = put_reason(p, reason, props, props_len);
    return (size_t)(p - out);
}

size_t mqtt_disconnect_v5_size(uint8_t reason, size_t props_len)
{
    return whole_size(reason_remaining(0, reason, props_len));
}

size_t mqtt_encode_disconnect_v5(uint8_t *out, uint8_t reason, const uint8_t *props,
                                 size_t props_len)
{
    return encode_reason_only(out, MQTT_DISCONNECT, reason, props, props_len);
}

size_t mqtt_auth_size(uint8_t reason, size_t props_len)
{
    return whole_size(reason_remaining(0, reason, props_len));
}

size_t mqtt_encode_auth(uint8_t *out, uint8_t reason, const uint8_t *props, size_t props_len)
{
    return encode_reason_only(out, MQTT_AUTH, reason, props, props_len);
}

/* Subscription Identifier property: identifier byte + varint. */
static size_t sub_id_prop_size(uint32_t sub_id)
{
    return sub_id ? 1 + mqtt_varint_size(sub_id) : 0;
}

static size_t subscribe_v5_remaining(uint16_t filter_len, uint32_t sub_id, size_t props_len)
{
    return 2 + props_size(sub_id_prop_size(sub_id) + props_len) + 2 + (size_t)filter_len + 1;
}

size_t mqtt_subscribe_v5_size(uint16_t filter_len, uint32_t sub_id, size_t props_len)
{
    return whole_size(subscribe_v5_remaining(filter_len, sub_id, props_len));
}

size_t mqtt_encode_subscribe_v5(uint8_t *out, uint16_t packet_id, const uint8_t *filter,
                                uint16_t filter_len, uint8_t options, uint32_t sub_id,
                                const uint8_t *props, size_t props_len)
{
    uint8_t *p = out;
    *p++ = MQTT_SUBSCRIBE << 4 | 2;
    p += mqtt_encode_varint(p, (uint32_t)subscribe_v5_remaining(filter_len, sub_id, props_len));
    p = put_u16(p, packet_id);
    p += mqtt_encode_varint(p, (uint32_t)(sub_id_prop_size(sub_id) + props_len));
    if (sub_id) {
        *p++ = MQTT_PROP_SUBSCRIPTION_ID;
        p += mqtt_encode_varint(p, sub_id);
    }
    p = put_bytes(p, props, props_len);
    p = put_str(p, filter, filter_len);
    *p++ = options;
    return (size_t)(p - out);
}

static size_t unsubscribe_v5_remaining(uint16_t filter_len, size_t props_len)
{
    return 2 + props_size(props_len) + 2 + (size_t)filter_len;
}

size_t mqtt_unsubscribe_v5_size(uint16_t filter_len, size_t props_len)
{
    return whole_size(unsubscribe_v5_remaining(filter_len, props_len));
}

size_t mqtt_encode_unsubscribe_v5(uint8_t *out, uint16_t packet_id, const uint8_t *filter,
                                  uint16_t filter_len, const uint8_t *props, size_t props_len)
{
    uint8_t *p = out;
    *p++ = MQTT_UNSUBSCRIBE << 4 | 2;
    p += mqtt_encode_varint(p, (uint32_t)unsubscribe_v5_remaining(filter_len, props_len));
    p = put_u16(p, packet_id);
    p = put_props(p, props, props_len);
    p = put_str(p, filter, filter_len);
    return (size_t)(p - out);
}

const char *mqtt_type_name(uint8_t type)
{
    static const char *const names[16] = {
        "?",       "CONNECT",  "CONNACK",    "PUBLISH", "PUBACK",      "PUBREC",
        "PUBREL",  "PUBCOMP",  "SUBSCRIBE",  "SUBACK",  "UNSUBSCRIBE", "UNSUBACK",
        "PINGREQ", "PINGRESP", "DISCONNECT", "AUTH",
    };
    return type < 16 ? names[type] : "?";
}
