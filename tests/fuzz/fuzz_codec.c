/* fuzz_codec.c -- libFuzzer target for the MQTT codec (src/mqtt/mqtt_codec.c).
 *
 * Input: byte 0 picks the split pattern and byte 1 the maximum packet size;
 * the rest is a byte stream from a client.  The stream is framed once whole
 * (the reference) and once in the chosen splits; both must yield the same
 * packets and the same final error.  Each packet goes through the decoder for
 * its type (PUBLISH and the header check with protocol 3 and 4); decoded
 * CONNECT, PUBLISH, SUBSCRIBE, UNSUBSCRIBE and acks are re-encoded, and the
 * new bytes must decode to the same fields, or the target aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt_codec.h"

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
            abort();                                                           \
        }                                                                      \
    } while (0)

static int str_same(mqtt_str_t a, mqtt_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* Frame exactly one packet from an encoder's output. */
static mqtt_raw_t frame_whole(const uint8_t *buf, size_t n)
{
    mqtt_parser_t ps = {0};
    mqtt_raw_t r;
    size_t used = 0;
    const char *why = NULL;
    CHECK(mqtt_parser_next(&ps, buf, n, &used, MQTT_MAX_REMAINING, &r, &why) == 1);
    CHECK(used == n);
    CHECK(ps.buf == NULL);
    mqtt_parser_reset(&ps);
    return r;
}

/* NUL-terminated copy (the CONNECT encoder takes C strings). */
static char *cstr(mqtt_str_t s)
{
    char *c = malloc((size_t)s.len + 1);
    CHECK(c != NULL);
    if (s.len)
        memcpy(c, s.p, s.len);
    c[s.len] = 0;
    return c;
}

static void recode_connect(const mqtt_connect_t *c)
{
    /* The encoder takes C strings: a password with a NUL can't go through. */
    if (c->has_password && memchr(c->password.p, 0, c->password.len))
        return;
    char *id = cstr(c->client_id);
    char *wt = c->will_flag ? cstr(c->will_topic) : NULL;
    char *user = c->has_username ? cstr(c->username) : NULL;
    char *pass = c->has_password ? cstr(c->password) : NULL;
    mqtt_connect_opts_t o = {
        .proto = c->proto, .clean_session = c->clean_session,
        .keepalive = c->keepalive, .client_id = id, .username = user,
        .password = pass, .will_topic = wt,
        .will_payload = c->will_payload.p,
        .will_payload_len = c->will_payload.len, .will_qos = c->will_qos,
        .will_retain = c->will_retain,
    };
    size_t size = mqtt_connect_size(&o);
    uint8_t *buf = malloc(size);
    CHECK(buf != NULL);
    size_t n = mqtt_encode_connect(buf, &o);
    CHECK(n == size);
    mqtt_raw_t r = frame_whole(buf, n);
    mqtt_connect_t d;
    const char *why = NULL;
    int rc = mqtt_decode_connect(&r, &d, &why);
    CHECK(rc == MQTT_OK || rc == MQTT_ERR_CLIENT_ID);
    CHECK(d.proto == c->proto && d.clean_session == c->clean_session);
    CHECK(d.will_flag == c->will_flag && d.will_qos == c->will_qos);
    CHECK(d.will_retain == c->will_retain && d.keepalive == c->keepalive);
    CHECK(d.has_username == c->has_username);
    CHECK(d.has_password == c->has_password);
    CHECK(str_same(d.client_id, c->client_id));
    CHECK(str_same(d.will_topic, c->will_topic));
    CHECK(str_same(d.will_payload, c->will_payload));
    CHECK(str_same(d.username, c->username));
    CHECK(str_same(d.password, c->password));
    free(buf);
    free(id);
    free(wt);
    free(user);
    free(pass);
}

static void recode_publish(const mqtt_raw_t *orig, const mqtt_publish_t *p)
{
    size_t size = mqtt_publish_size(p->topic.len, p->qos, p->payload_len);
    uint8_t *buf = malloc(size);
    CHECK(buf != NULL);
    size_t n = mqtt_encode_publish(buf, p->topic.p, p->topic.len, p->qos,
                                   p->retain, p->dup, p->packet_id, p->payload,
                                   p->payload_len);
    CHECK(n == size);
    mqtt_raw_t r = frame_whole(buf, n);
    /* Same header byte and body, byte for byte. */
    CHECK(r.hdr == orig->hdr && r.len == orig->len);
    CHECK(r.len == 0 || memcmp(r.body, orig->body, r.len) == 0);
    mqtt_publish_t d;
    const char *why = NULL;
    CHECK(mqtt_decode_publish(&r, MQTT_PROTO_V311, &d, &why) == MQTT_OK);
    CHECK(str_same(d.topic, p->topic));
    CHECK(d.qos == p->qos && d.retain == p->retain && d.dup == p->dup);
    CHECK(d.packet_id == p->packet_id && d.payload_len == p->payload_len);
    CHECK(d.payload_len == 0 || memcmp(d.payload, p->payload, d.payload_len) == 0);
    free(buf);
}

/* Walk the filters; re-encode each in a one-filter packet and decode it. */
static void walk_sub(mqtt_sub_iter_t it, int subscribe)
{
    mqtt_str_t f;
    uint8_t qos = 0xff;
    uint32_t count = 0;
    while (mqtt_sub_next(&it, &f, &qos)) {
        count++;
        CHECK(f.len > 0 && mqtt_topic_filter_valid(f.p, f.len));
        CHECK(subscribe ? qos <= 2 : qos == 0);
        size_t size = subscribe ? mqtt_subscribe_size(f.len)
                                : mqtt_unsubscribe_size(f.len);
        uint8_t *buf = malloc(size);
        CHECK(buf != NULL);
        size_t n = subscribe
                       ? mqtt_encode_subscribe(buf, it.packet_id, f.p, f.len, qos)
                       : mqtt_encode_unsubscribe(buf, it.packet_id, f.p, f.len);
        CHECK(n == size);
        mqtt_raw_t r = frame_whole(buf, n);
        mqtt_sub_iter_t d;
        const char *why = NULL;
        int rc = subscribe ? mqtt_decode_subscribe(&r, &d, &why)
                           : mqtt_decode_unsubscribe(&r, &d, &why);
        CHECK(rc == MQTT_OK);
        CHECK(d.packet_id == it.packet_id && d.count == 1);
        mqtt_str_t f2;
        uint8_t qos2 = 0xff;
        CHECK(mqtt_sub_next(&d, &f2, &qos2) == 1);
        CHECK(str_same(f, f2) && qos2 == qos);
        CHECK(mqtt_sub_next(&d, &f2, &qos2) == 0);
        free(buf);
    }
    CHECK(count == it.count && count >= 1);
}

static void decode_one(const mqtt_raw_t *r)
{
    const char *why = NULL;
    uint8_t type = mqtt_raw_type(r);
    int hdr3 = mqtt_check_client_header(r->hdr, MQTT_PROTO_V31, &why);
    int hdr4 = mqtt_check_client_header(r->hdr, MQTT_PROTO_V311, &why);
    CHECK(hdr3 == hdr4 && hdr3 <= 0);

    switch (type) {
    case MQTT_CONNECT: {
        mqtt_connect_t c;
        int rc = mqtt_decode_connect(r, &c, &why);
        if (rc == MQTT_OK || rc == MQTT_ERR_CLIENT_ID) {
            CHECK(hdr4 == MQTT_OK);
            CHECK(c.proto == MQTT_PROTO_V31 || c.proto == MQTT_PROTO_V311);
            recode_connect(&c);
        }
        break;
    }
    case MQTT_PUBLISH:
        for (uint8_t proto = MQTT_PROTO_V31; proto <= MQTT_PROTO_V311; proto++) {
            mqtt_publish_t p;
            if (mqtt_decode_publish(r, proto, &p, &why) == MQTT_OK) {
                CHECK(hdr4 == MQTT_OK);
                CHECK(mqtt_topic_name_valid(p.topic.p, p.topic.len));
                CHECK((p.qos == 0) == (p.packet_id == 0));
                recode_publish(r, &p);
            }
        }
        break;
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE: {
        mqtt_sub_iter_t it;
        int sub = type == MQTT_SUBSCRIBE;
        int rc = sub ? mqtt_decode_subscribe(r, &it, &why)
                     : mqtt_decode_unsubscribe(r, &it, &why);
        if (rc == MQTT_OK) {
            CHECK(hdr4 == MQTT_OK && it.packet_id != 0);
            walk_sub(it, sub);
        }
        break;
    }
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
    case MQTT_UNSUBACK: {
        uint16_t id = 0;
        if (mqtt_decode_ack(r, &id, &why) == MQTT_OK) {
            uint8_t buf[4];
            CHECK(id != 0);
            CHECK(mqtt_encode_ack(buf, type, id) == 4);
            CHECK(buf[0] == r->hdr && memcmp(buf + 2, r->body, 2) == 0);
        }
        break;
    }
    case MQTT_PINGREQ:
    case MQTT_PINGRESP:
    case MQTT_DISCONNECT:
        if (mqtt_decode_empty(r, &why) == MQTT_OK) {
            uint8_t buf[2];
            CHECK(r->len == 0 && r->body == NULL);
            CHECK((type == MQTT_PINGREQ    ? mqtt_encode_pingreq(buf)
                   : type == MQTT_PINGRESP ? mqtt_encode_pingresp(buf)
                                           : mqtt_encode_disconnect(buf)) == 2);
            CHECK(buf[0] == r->hdr && buf[1] == 0);
        }
        break;
    case MQTT_CONNACK: {
        uint8_t sp = 0, rc = 0;
        if (mqtt_decode_connack(r, &sp, &rc, &why) == MQTT_OK) {
            uint8_t buf[4];
            mqtt_encode_connack(buf, sp, rc);
            CHECK(buf[0] == r->hdr && memcmp(buf + 2, r->body, 2) == 0);
        }
        break;
    }
    case MQTT_SUBACK: {
        uint16_t id = 0;
        uint8_t rcs[8];
        uint32_t n = 0;
        if (mqtt_decode_suback(r, &id, rcs, sizeof rcs, &n, &why) == MQTT_OK) {
            CHECK(n == r->len - 2 && id != 0);
            if (n <= sizeof rcs) {
                uint8_t buf[16];
                size_t len = mqtt_encode_suback(buf, id, rcs, n);
                CHECK(len == mqtt_suback_size(n));
                mqtt_raw_t e = frame_whole(buf, len);
                CHECK(e.hdr == r->hdr && e.len == r->len);
                CHECK(memcmp(e.body, r->body, r->len) == 0);
            }
        }
        break;
    }
    default:
        break;
    }
    /* The helpers must not crash on anything. */
    if (r->len) {
        (void)mqtt_utf8_valid(r->body, r->len);
        (void)mqtt_topic_filter_valid(r->body, r->len);
        (void)mqtt_topic_name_valid(r->body, r->len);
    }
    (void)mqtt_type_name(type);
}

typedef struct {
    uint8_t hdr;
    uint32_t len;
    const uint8_t *body;
} ref_pkt_t;

static const uint32_t max_sizes[] = {0, 2, 16, 127, 128, 1024, 16384, 1u << 20};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t split = data[0];
    uint32_t max_packet = max_sizes[data[1] & 7];
    const uint8_t *in = data + 2;
    size_t n = size - 2;

    /* Reference: the whole stream in one feed.  Everything it returns is in
     * place, so the bodies point into the input. */
    ref_pkt_t *ref = malloc((n / 2 + 1) * sizeof *ref);
    CHECK(ref != NULL);
    size_t nref = 0, pos = 0;
    int ref_err = 0;
    mqtt_parser_t ps = {0};
    while (pos < n) {
        mqtt_raw_t r;
        size_t used = 0;
        const char *why = NULL;
        int rc = mqtt_parser_next(&ps, in + pos, n - pos, &used, max_packet, &r, &why);
        CHECK(used <= n - pos);
        pos += used;
        if (rc < 0) {
            CHECK(why != NULL);
            ref_err = rc;
            break;
        }
        if (rc == 0) {
            CHECK(pos == n);
            break;
        }
        CHECK(r.len <= max_packet);
        CHECK(r.len == 0 ? r.body == NULL : (r.body >= in && r.body + r.len <= in + n));
        CHECK(mqtt_raw_type(&r) != 0);
        ref[nref].hdr = r.hdr;
        ref[nref].len = r.len;
        ref[nref].body = r.body;
        nref++;
    }
    mqtt_parser_reset(&ps);

    /* The same stream in splits: 0 = one byte at a time; 1..255 = chunks of
     * 1..split bytes from a PRNG seeded by the split byte. */
    uint32_t seed = 0x9e3779b9u ^ split;
    size_t seen = 0;
    int err = 0;
    pos = 0;
    while (pos < n && !err) {
        size_t chunk = 1;
        if (split) {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            chunk = 1 + seed % split;
        }
        if (chunk > n - pos)
            chunk = n - pos;
        const uint8_t *d = in + pos;
        size_t left = chunk;
        while (left > 0) {
            mqtt_raw_t r;
            size_t used = 0;
            const char *why = NULL;
            int rc = mqtt_parser_next(&ps, d, left, &used, max_packet, &r, &why);
            CHECK(used <= left);
            if (rc < 0) {
                err = rc;
                break;
            }
            if (rc == 0) {
                CHECK(used == left);
            } else {
                CHECK(seen < nref);
                CHECK(r.hdr == ref[seen].hdr && r.len == ref[seen].len);
                CHECK(r.len == 0 ? r.body == NULL
                                 : memcmp(r.body, ref[seen].body, r.len) == 0);
                CHECK(r.len == 0 || r.body == ps.buf ||
                      (r.body >= d && r.body + r.len <= d + used));
                seen++;
                decode_one(&r);
            }
            d += used;
            left -= used;
        }
        pos += chunk;
    }
    CHECK(seen == nref && err == ref_err);
    mqtt_parser_reset(&ps);
    CHECK(ps.buf == NULL);
    free(ref);
    return 0;
}
