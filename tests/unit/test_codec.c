/* test_codec.c -- unit tests of the MQTT wire codec (src/mqtt/mqtt_codec.c).
 *
 * Round trips of every packet type (encode, frame, decode), the framer under
 * every kind of split and at the remaining-length boundaries, one test per
 * rule that makes a packet malformed or a protocol error (asserting the exact
 * error code and the rule id in the reason), and the validation helpers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt_codec.h"
#include "mqtt_bb.h"

/* ---- helpers ------------------------------------------------------------ */

#define CF_CLEAN 0x02
#define CF_WILL 0x04
#define CF_WQOS1 0x08
#define CF_WQOS2 0x10
#define CF_WRETAIN 0x20
#define CF_PASS 0x40
#define CF_USER 0x80

static void connect_vh(bb_t *b, const char *name, uint8_t level, uint8_t flags)
{
    bb_str(b, name);
    bb_u8(b, level);
    bb_u8(b, flags);
    bb_u16(b, 60);
}

static void expect_connect(const bb_t *b, int code, const char *rule)
{
    mqtt_raw_t r = raw_of(0x10, b);
    mqtt_connect_t c;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_connect(&r, &c, &why), code);
    if (code != MQTT_OK && rule)
        assert_why(why, rule);
}

static void expect_publish(uint8_t hdr, const bb_t *b, int code, const char *rule)
{
    mqtt_raw_t r = raw_of(hdr, b);
    mqtt_publish_t p;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_publish(&r, MQTT_PROTO_V311, &p, &why), code);
    if (code != MQTT_OK && rule)
        assert_why(why, rule);
}

static void expect_subscribe(uint8_t hdr, const bb_t *b, int code, const char *rule)
{
    mqtt_raw_t r = raw_of(hdr, b);
    mqtt_sub_iter_t it;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_subscribe(&r, &it, &why), code);
    if (code != MQTT_OK && rule)
        assert_why(why, rule);
}

static void expect_unsubscribe(uint8_t hdr, const bb_t *b, int code, const char *rule)
{
    mqtt_raw_t r = raw_of(hdr, b);
    mqtt_sub_iter_t it;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_unsubscribe(&r, &it, &why), code);
    if (code != MQTT_OK && rule)
        assert_why(why, rule);
}

static int utf8(const char *s)
{
    return mqtt_utf8_valid((const uint8_t *)s, strlen(s));
}

static int filter_ok(const char *s)
{
    return mqtt_topic_filter_valid((const uint8_t *)s, strlen(s));
}

static int name_ok(const char *s)
{
    return mqtt_topic_name_valid((const uint8_t *)s, strlen(s));
}

/* Fixed-seed xorshift32 for reproducible random splits. */
static uint32_t rng_next(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* ---- round trips ---------------------------------------------------------- */

static void mqtt_connect_v311_full_round_trip(void **state)
{
    (void)state;
    static const uint8_t will[] = {0x00, 0xff, 'w'};
    mqtt_connect_opts_t o = {
        .proto = MQTT_PROTO_V311,
        .clean_session = 1,
        .keepalive = 300,
        .client_id = "client-1",
        .username = "alice",
        .password = "s3cret",
        .will_topic = "status/client-1",
        .will_payload = will,
        .will_payload_len = sizeof will,
        .will_qos = 2,
        .will_retain = 1,
    };
    uint8_t buf[256];
    size_t n = mqtt_encode_connect(buf, &o);
    assert_int_equal(n, mqtt_connect_size(&o));
    assert_int_equal(buf[0], 0x10);
    assert_memory_equal(buf + 2, "\x00\x04MQTT\x04", 7);
    assert_int_equal(buf[9], CF_USER | CF_PASS | CF_WRETAIN | CF_WQOS2 | CF_WILL | CF_CLEAN);

    mqtt_raw_t r = frame_one(buf, n);
    mqtt_connect_t c;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_connect(&r, &c, &why), MQTT_OK);
    assert_int_equal(c.proto, MQTT_PROTO_V311);
    assert_int_equal(c.clean_session, 1);
    assert_int_equal(c.keepalive, 300);
    assert_int_equal(c.will_flag, 1);
    assert_int_equal(c.will_qos, 2);
    assert_int_equal(c.will_retain, 1);
    assert_int_equal(c.has_username, 1);
    assert_int_equal(c.has_password, 1);
    assert_true(str_eq(c.client_id, "client-1"));
    assert_true(str_eq(c.will_topic, "status/client-1"));
    assert_int_equal(c.will_payload.len, sizeof will);
    assert_memory_equal(c.will_payload.p, will, sizeof will);
    assert_true(str_eq(c.username, "alice"));
    assert_true(str_eq(c.password, "s3cret"));
}

static void mqtt_connect_v31_full_round_trip(void **state)
{
    (void)state;
    mqtt_connect_opts_t o = {
        .proto = MQTT_PROTO_V31,
        .clean_session = 0,
        .keepalive = 10,
        .client_id = "old-client",
        .username = "bob",
        .password = "pw",
        .will_topic = "lwt",
        .will_payload = (const uint8_t *)"gone",
        .will_payload_len = 4,
        .will_qos = 1,
        .will_retain = 0,
    };
    uint8_t buf[256];
    size_t n = mqtt_encode_connect(buf, &o);
    assert_int_equal(n, mqtt_connect_size(&o));
    assert_memory_equal(buf + 2, "\x00\x06MQIsdp\x03", 9);

    mqtt_raw_t r = frame_one(buf, n);
    mqtt_connect_t c;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_connect(&r, &c, &why), MQTT_OK);
    assert_int_equal(c.proto, MQTT_PROTO_V31);
    assert_int_equal(c.clean_session, 0);
    assert_int_equal(c.keepalive, 10);
    assert_int_equal(c.will_flag, 1);
    assert_int_equal(c.will_qos, 1);
    assert_int_equal(c.will_retain, 0);
    assert_true(str_eq(c.client_id, "old-client"));
    assert_true(str_eq(c.will_topic, "lwt"));
    assert_int_equal(c.will_payload.len, 4);
    assert_memory_equal(c.will_payload.p, "gone", 4);
    assert_true(str_eq(c.username, "bob"));
    assert_true(str_eq(c.password, "pw"));
}

static void mqtt_connect_minimal_round_trip(void **state)
{
    (void)state;
    mqtt_connect_opts_t o = {.proto = MQTT_PROTO_V311, .clean_session = 1, .client_id = ""};
    uint8_t buf[64];
    size_t n = mqtt_encode_connect(buf, &o);
    assert_int_equal(n, 14);
    assert_int_equal(n, mqtt_connect_size(&o));

    mqtt_raw_t r = frame_one(buf, n);
    mqtt_connect_t c;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_connect(&r, &c, &why), MQTT_OK);
    assert_int_equal(c.client_id.len, 0);
    assert_int_equal(c.will_flag, 0);
    assert_int_equal(c.has_username, 0);
    assert_int_equal(c.has_password, 0);
    assert_int_equal(c.keepalive, 0);
}

static void mqtt_connect_username_only_round_trip(void **state)
{
    (void)state;
    mqtt_connect_opts_t o = {
        .proto = MQTT_PROTO_V311, .clean_session = 1, .client_id = "c", .username = "u"};
    uint8_t buf[64];
    size_t n = mqtt_encode_connect(buf, &o);
    mqtt_raw_t r = frame_one(buf, n);
    mqtt_connect_t c;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_connect(&r, &c, &why), MQTT_OK);
    assert_int_equal(c.has_username, 1);
    assert_int_equal(c.has_password, 0);
    assert_true(str_eq(c.username, "u"));
}

static void mqtt_connect_encoded_level5_is_protocol_version(void **state)
{
    (void)state;
    mqtt_connect_opts_t o = {.proto = MQTT_PROTO_V5, .clean_session = 1, .client_id = "c5"};
    uint8_t buf[64];
    size_t n = mqtt_encode_connect(buf, &o);
    mqtt_raw_t r = frame_one(buf, n);
    mqtt_connect_t c;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_connect(&r, &c, &why), MQTT_ERR_PROTOCOL_VERSION);
    assert_why(why, "[MQTT-3.1.2-2]");
}

static void publish_round_trip(uint8_t qos, uint8_t retain, uint8_t dup, uint16_t id,
                               const char *topic, const uint8_t *payload, uint32_t plen)
{
    size_t size = mqtt_publish_size((uint16_t)strlen(topic), qos, plen);
    uint8_t *buf = malloc(size);
    assert_non_null(buf);
    size_t n = mqtt_encode_publish(buf, (const uint8_t *)topic, (uint16_t)strlen(topic), qos,
                                   retain, dup, id, payload, plen);
    assert_int_equal(n, size);
    assert_int_equal(buf[0], 0x30 | dup << 3 | qos << 1 | retain);

    mqtt_raw_t r = frame_one(buf, n);
    mqtt_publish_t p;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_publish(&r, MQTT_PROTO_V311, &p, &why), MQTT_OK);
    assert_true(str_eq(p.topic, topic));
    assert_int_equal(p.qos, qos);
    assert_int_equal(p.retain, retain);
    assert_int_equal(p.dup, dup);
    assert_int_equal(p.packet_id, qos ? id : 0);
    assert_int_equal(p.payload_len, plen);
    if (plen)
        assert_memory_equal(p.payload, payload, plen);
    /* Same bytes decode the same under 3.1. */
    assert_int_equal(mqtt_decode_publish(&r, MQTT_PROTO_V31, &p, &why), MQTT_OK);
    assert_int_equal(p.payload_len, plen);
    free(buf);
}

static void mqtt_publish_qos0_round_trip(void **state)
{
    (void)state;
    publish_round_trip(0, 0, 0, 0, "a/b/c", (const uint8_t *)"hello", 5);
}

static void mqtt_publish_qos1_round_trip(void **state)
{
    (void)state;
    publish_round_trip(1, 1, 0, 7, "sensors/temp", (const uint8_t *)"21.5", 4);
}

static void mqtt_publish_qos2_dup_round_trip(void **state)
{
    (void)state;
    publish_round_trip(2, 0, 1, 65535, "x", (const uint8_t *)"\x00\x01\x02", 3);
}

static void mqtt_publish_empty_payload_round_trip(void **state)
{
    (void)state;
    publish_round_trip(0, 1, 0, 0, "retained/clear", NULL, 0);
    publish_round_trip(1, 0, 0, 1, "t", NULL, 0);
}

static void mqtt_publish_large_payload_round_trip(void **state)
{
    (void)state;
    uint32_t plen = 100000;
    uint8_t *payload = malloc(plen);
    assert_non_null(payload);
    for (uint32_t i = 0; i < plen; i++)
        payload[i] = (uint8_t)(i * 31);
    publish_round_trip(1, 0, 0, 42, "big/\xc3\xa9t\xc3\xa9", payload, plen);
    free(payload);
}

static void mqtt_subscribe_round_trip(void **state)
{
    (void)state;
    const char *f = "sport/+/player1/#";
    uint8_t buf[64];
    size_t n = mqtt_encode_subscribe(buf, 10, (const uint8_t *)f, (uint16_t)strlen(f), 2);
    assert_int_equal(n, mqtt_subscribe_size((uint16_t)strlen(f)));
    assert_int_equal(buf[0], 0x82);

    mqtt_raw_t r = frame_one(buf, n);
    mqtt_sub_iter_t it;
    mqtt_str_t filter;
    uint8_t qos = 99;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_subscribe(&r, &it, &why), MQTT_OK);
    assert_int_equal(it.packet_id, 10);
    assert_int_equal(it.count, 1);
    assert_int_equal(mqtt_sub_next(&it, &filter, &qos), 1);
    assert_true(str_eq(filter, f));
    assert_int_equal(qos, 2);
    assert_int_equal(mqtt_sub_next(&it, &filter, &qos), 0);
}

static void mqtt_subscribe_multiple_filters_iterated(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u16(&b, 0x1234);
    bb_str(&b, "a/b");
    bb_u8(&b, 0);
    bb_str(&b, "#");
    bb_u8(&b, 1);
    bb_str(&b, "+/x/+");
    bb_u8(&b, 2);
    mqtt_raw_t r = raw_of(0x82, &b);
    mqtt_sub_iter_t it;
    mqtt_str_t f;
    uint8_t qos;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_subscribe(&r, &it, &why), MQTT_OK);
    assert_int_equal(it.packet_id, 0x1234);
    assert_int_equal(it.count, 3);
    assert_int_equal(mqtt_sub_next(&it, &f, &qos), 1);
    assert_true(str_eq(f, "a/b"));
    assert_int_equal(qos, 0);
    assert_int_equal(mqtt_sub_next(&it, &f, &qos), 1);
    assert_true(str_eq(f, "#"));
    assert_int_equal(qos, 1);
    assert_int_equal(mqtt_sub_next(&it, &f, &qos), 1);
    assert_true(str_eq(f, "+/x/+"));
    assert_int_equal(qos, 2);
    assert_int_equal(mqtt_sub_next(&it, &f, &qos), 0);
    assert_int_equal(mqtt_sub_next(&it, &f, &qos), 0);
}

static void mqtt_unsubscribe_round_trip(void **state)
{
    (void)state;
    const char *f = "home/+/temp";
    uint8_t buf[64];
    size_t n = mqtt_encode_unsubscribe(buf, 99, (const uint8_t *)f, (uint16_t)strlen(f));
    assert_int_equal(n, mqtt_unsubscribe_size((uint16_t)strlen(f)));
    assert_int_equal(buf[0], 0xa2);

    mqtt_raw_t r = frame_one(buf, n);
    mqtt_sub_iter_t it;
    mqtt_str_t filter;
    uint8_t qos = 99;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_unsubscribe(&r, &it, &why), MQTT_OK);
    assert_int_equal(it.packet_id, 99);
    assert_int_equal(it.count, 1);
    assert_int_equal(mqtt_sub_next(&it, &filter, &qos), 1);
    assert_true(str_eq(filter, f));
    assert_int_equal(qos, 0);
    assert_int_equal(mqtt_sub_next(&it, &filter, &qos), 0);
}

static void mqtt_unsubscribe_multiple_filters_iterated(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u16(&b, 5);
    bb_str(&b, "a");
    bb_str(&b, "b/#");
    mqtt_raw_t r = raw_of(0xa2, &b);
    mqtt_sub_iter_t it;
    mqtt_str_t f;
    uint8_t qos;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_unsubscribe(&r, &it, &why), MQTT_OK);
    assert_int_equal(it.count, 2);
    assert_int_equal(mqtt_sub_next(&it, &f, &qos), 1);
    assert_true(str_eq(f, "a"));
    assert_int_equal(mqtt_sub_next(&it, &f, NULL), 1);
    assert_true(str_eq(f, "b/#"));
    assert_int_equal(mqtt_sub_next(&it, &f, &qos), 0);
}

static void mqtt_ack_round_trip_all_types(void **state)
{
    (void)state;
    static const uint8_t types[] = {MQTT_PUBACK, MQTT_PUBREC, MQTT_PUBREL, MQTT_PUBCOMP,
                                    MQTT_UNSUBACK};
    for (size_t i = 0; i < sizeof types; i++) {
        uint8_t buf[4];
        uint16_t id = 0;
        const char *why = NULL;
        assert_int_equal(mqtt_encode_ack(buf, types[i], (uint16_t)(1000 + i)), 4);
        assert_int_equal(buf[0], types[i] << 4 | (types[i] == MQTT_PUBREL ? 2 : 0));
        mqtt_raw_t r = frame_one(buf, 4);
        assert_int_equal(mqtt_decode_ack(&r, &id, &why), MQTT_OK);
        assert_int_equal(id, 1000 + i);
        if (types[i] != MQTT_UNSUBACK)
            assert_int_equal(mqtt_check_client_header(r.hdr, MQTT_PROTO_V311, &why), MQTT_OK);
    }
}

static void mqtt_connack_round_trip(void **state)
{
    (void)state;
    for (uint8_t rc = 0; rc <= MQTT_CONNACK_NOT_AUTHORIZED; rc++) {
        uint8_t buf[4], sp = 9, got = 9;
        const char *why = NULL;
        uint8_t present = rc == 0;
        assert_int_equal(mqtt_encode_connack(buf, present, rc), 4);
        mqtt_raw_t r = frame_one(buf, 4);
        assert_int_equal(mqtt_decode_connack(&r, &sp, &got, &why), MQTT_OK);
        assert_int_equal(sp, present);
        assert_int_equal(got, rc);
    }
}

static void mqtt_suback_round_trip(void **state)
{
    (void)state;
    const uint8_t codes[] = {0, 1, 2, MQTT_SUBACK_FAILURE};
    uint8_t buf[16], got[4];
    uint16_t id = 0;
    uint32_t n = 0;
    const char *why = NULL;
    size_t len = mqtt_encode_suback(buf, 77, codes, 4);
    assert_int_equal(len, mqtt_suback_size(4));
    assert_int_equal(len, 8);
    mqtt_raw_t r = frame_one(buf, len);
    assert_int_equal(mqtt_decode_suback(&r, &id, got, 4, &n, &why), MQTT_OK);
    assert_int_equal(id, 77);
    assert_int_equal(n, 4);
    assert_memory_equal(got, codes, 4);
}

static void mqtt_suback_more_codes_than_max_copies_max(void **state)
{
    (void)state;
    const uint8_t codes[] = {2, 1, 0};
    uint8_t buf[16], got[2] = {0xee, 0xee};
    uint16_t id = 0;
    uint32_t n = 0;
    const char *why = NULL;
    size_t len = mqtt_encode_suback(buf, 1, codes, 3);
    mqtt_raw_t r = frame_one(buf, len);
    assert_int_equal(mqtt_decode_suback(&r, &id, got, 2, &n, &why), MQTT_OK);
    assert_int_equal(n, 3);
    assert_int_equal(got[0], 2);
    assert_int_equal(got[1], 1);
}

static void mqtt_empty_packets_round_trip(void **state)
{
    (void)state;
    uint8_t buf[2];
    const char *why = NULL;
    mqtt_raw_t r;

    assert_int_equal(mqtt_encode_pingreq(buf), 2);
    assert_memory_equal(buf, "\xc0\x00", 2);
    r = frame_one(buf, 2);
    assert_int_equal(mqtt_decode_empty(&r, &why), MQTT_OK);
    assert_int_equal(mqtt_check_client_header(r.hdr, MQTT_PROTO_V311, &why), MQTT_OK);

    assert_int_equal(mqtt_encode_pingresp(buf), 2);
    assert_memory_equal(buf, "\xd0\x00", 2);
    r = frame_one(buf, 2);
    assert_int_equal(mqtt_decode_empty(&r, &why), MQTT_OK);

    assert_int_equal(mqtt_encode_disconnect(buf), 2);
    assert_memory_equal(buf, "\xe0\x00", 2);
    r = frame_one(buf, 2);
    assert_int_equal(mqtt_decode_empty(&r, &why), MQTT_OK);
    assert_int_equal(mqtt_check_client_header(r.hdr, MQTT_PROTO_V31, &why), MQTT_OK);
}

static void mqtt_varint_encode_boundaries(void **state)
{
    (void)state;
    static const struct {
        uint32_t v;
        size_t n;
        uint8_t bytes[4];
    } cases[] = {
        {0, 1, {0x00}},
        {127, 1, {0x7f}},
        {128, 2, {0x80, 0x01}},
        {16383, 2, {0xff, 0x7f}},
        {16384, 3, {0x80, 0x80, 0x01}},
        {2097151, 3, {0xff, 0xff, 0x7f}},
        {2097152, 4, {0x80, 0x80, 0x80, 0x01}},
        {MQTT_MAX_REMAINING, 4, {0xff, 0xff, 0xff, 0x7f}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t out[4];
        assert_int_equal(mqtt_varint_size(cases[i].v), cases[i].n);
        assert_int_equal(mqtt_encode_varint(out, cases[i].v), cases[i].n);
        assert_memory_equal(out, cases[i].bytes, cases[i].n);
    }
}

static void mqtt_type_name_known_and_unknown(void **state)
{
    (void)state;
    assert_string_equal(mqtt_type_name(MQTT_CONNECT), "CONNECT");
    assert_string_equal(mqtt_type_name(MQTT_PUBLISH), "PUBLISH");
    assert_string_equal(mqtt_type_name(MQTT_PUBREL), "PUBREL");
    assert_string_equal(mqtt_type_name(MQTT_UNSUBSCRIBE), "UNSUBSCRIBE");
    assert_string_equal(mqtt_type_name(MQTT_DISCONNECT), "DISCONNECT");
    assert_string_equal(mqtt_type_name(MQTT_AUTH), "AUTH");
    assert_string_equal(mqtt_type_name(0), "?");
    assert_string_equal(mqtt_type_name(16), "?");
    assert_string_equal(mqtt_type_name(255), "?");
}

static void mqtt_sub_next_zeroed_iterator_returns_0(void **state)
{
    (void)state;
    mqtt_sub_iter_t it = {0};
    mqtt_str_t f;
    uint8_t qos;
    assert_int_equal(mqtt_sub_next(&it, &f, &qos), 0);
}

/* ---- framer ------------------------------------------------------------- */

/* A stream of packets of every type, and where each packet starts. */
typedef struct {
    uint8_t *d;
    size_t n;
    size_t off[32]; /* start of each packet */
    size_t count;
} stream_t;

static void stream_add(stream_t *s, const uint8_t *p, size_t n)
{
    assert_true(s->count < 32);
    s->d = realloc(s->d, s->n + n);
    assert_non_null(s->d);
    memcpy(s->d + s->n, p, n);
    s->off[s->count++] = s->n;
    s->n += n;
}

static void stream_build(stream_t *s)
{
    uint8_t buf[1024];
    uint8_t big[600];
    size_t n;
    mqtt_connect_opts_t o = {.proto = MQTT_PROTO_V311,
                             .clean_session = 1,
                             .client_id = "cid",
                             .username = "u",
                             .password = "p",
                             .will_topic = "w/t",
                             .will_payload = (const uint8_t *)"bye",
                             .will_payload_len = 3,
                             .will_qos = 1};
    memset(s, 0, sizeof *s);
    n = mqtt_encode_connect(buf, &o);
    stream_add(s, buf, n);
    n = mqtt_encode_publish(buf, (const uint8_t *)"a/b", 3, 0, 0, 0, 0, (const uint8_t *)"x", 1);
    stream_add(s, buf, n);
    n = mqtt_encode_pingreq(buf);
    stream_add(s, buf, n);
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)i;
    n = mqtt_encode_publish(buf, (const uint8_t *)"big", 3, 1, 0, 0, 3, big, sizeof big);
    stream_add(s, buf, n);
    n = mqtt_encode_subscribe(buf, 4, (const uint8_t *)"s/#", 3, 1);
    stream_add(s, buf, n);
    n = mqtt_encode_ack(buf, MQTT_PUBREL, 5);
    stream_add(s, buf, n);
    n = mqtt_encode_unsubscribe(buf, 6, (const uint8_t *)"s/#", 3);
    stream_add(s, buf, n);
    n = mqtt_encode_publish(buf, (const uint8_t *)"q2", 2, 2, 1, 1, 7, NULL, 0);
    stream_add(s, buf, n);
    n = mqtt_encode_disconnect(buf);
    stream_add(s, buf, n);
}

/* Check a framed packet against the stream's packet i. */
static void stream_check(const stream_t *s, size_t i, const mqtt_raw_t *r)
{
    const uint8_t *p = s->d + s->off[i];
    size_t end = i + 1 < s->count ? s->off[i + 1] : s->n;
    size_t total = end - s->off[i];
    assert_int_equal(r->hdr, p[0]);
    assert_int_equal(r->len + 1 + mqtt_varint_size(r->len), total);
    if (r->len)
        assert_memory_equal(r->body, p + total - r->len, r->len);
    else
        assert_null(r->body);
}

/* Feed the stream in chunks chosen by `next_chunk`; returns packets seen. */
static size_t stream_feed(const stream_t *s, uint32_t *seed, uint32_t max_chunk)
{
    mqtt_parser_t ps = {0};
    size_t pos = 0, seen = 0;
    while (pos < s->n) {
        size_t chunk = max_chunk ? 1 + rng_next(seed) % max_chunk : 1;
        if (chunk > s->n - pos)
            chunk = s->n - pos;
        const uint8_t *d = s->d + pos;
        size_t left = chunk;
        while (left > 0) {
            mqtt_raw_t r;
            size_t used = 0;
            const char *why = NULL;
            int rc = mqtt_parser_next(&ps, d, left, &used, 1 << 20, &r, &why);
            assert_true(rc == 0 || rc == 1);
            assert_true(used <= left);
            if (rc == 1) {
                stream_check(s, seen, &r);
                /* Either in place inside this chunk, or the private buffer. */
                if (r.len && r.body != ps.buf)
                    assert_true(r.body >= d && r.body + r.len <= d + used);
                seen++;
            } else {
                assert_int_equal(used, left);
            }
            d += used;
            left -= used;
        }
        pos += chunk;
    }
    assert_int_equal(ps.state, MQTT_PS_HDR);
    mqtt_parser_reset(&ps);
    assert_null(ps.buf);
    return seen;
}

static void mqtt_parser_one_byte_at_a_time(void **state)
{
    (void)state;
    stream_t s;
    uint32_t seed = 1;
    stream_build(&s);
    assert_int_equal(stream_feed(&s, &seed, 0), s.count);
    free(s.d);
}

static void mqtt_parser_random_splits(void **state)
{
    (void)state;
    static const uint32_t max_chunks[] = {2, 3, 7, 16, 64, 300, 1000};
    stream_t s;
    uint32_t seed = 0x5eed1234;
    stream_build(&s);
    for (int round = 0; round < 300; round++) {
        uint32_t mc = max_chunks[round % (sizeof max_chunks / sizeof max_chunks[0])];
        assert_int_equal(stream_feed(&s, &seed, mc), s.count);
    }
    free(s.d);
}

static void mqtt_parser_several_packets_one_buffer_zero_copy(void **state)
{
    (void)state;
    stream_t s;
    mqtt_parser_t ps = {0};
    size_t pos = 0, seen = 0;
    stream_build(&s);
    while (pos < s.n) {
        mqtt_raw_t r;
        size_t used = 0;
        const char *why = NULL;
        assert_int_equal(mqtt_parser_next(&ps, s.d + pos, s.n - pos, &used, 1 << 20, &r, &why), 1);
        stream_check(&s, seen, &r);
        if (r.len)
            assert_ptr_equal(r.body, s.d + pos + used - r.len);
        assert_null(ps.buf);
        pos += used;
        seen++;
    }
    assert_int_equal(seen, s.count);
    mqtt_parser_reset(&ps);
    free(s.d);
}

static void mqtt_parser_split_body_gathered_and_freed(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t n = mqtt_encode_publish(buf, (const uint8_t *)"topic", 5, 1, 0, 0, 9,
                                   (const uint8_t *)"payload", 7);
    mqtt_parser_t ps = {0};
    mqtt_raw_t r;
    size_t used = 0;
    const char *why = NULL;

    /* Header and half of the body, then the rest. */
    assert_int_equal(mqtt_parser_next(&ps, buf, 8, &used, 1000, &r, &why), 0);
    assert_int_equal(used, 8);
    assert_int_equal(ps.state, MQTT_PS_BODY);
    assert_non_null(ps.buf);
    assert_int_equal(mqtt_parser_next(&ps, buf + 8, n - 8, &used, 1000, &r, &why), 1);
    assert_int_equal(used, n - 8);
    assert_ptr_equal(r.body, ps.buf);
    assert_int_equal(r.len, n - 2);
    assert_memory_equal(r.body, buf + 2, r.len);
    mqtt_publish_t p;
    assert_int_equal(mqtt_decode_publish(&r, MQTT_PROTO_V311, &p, &why), MQTT_OK);
    assert_int_equal(p.packet_id, 9);
    assert_int_equal(p.payload_len, 7);
    /* The next call frees the buffer; an idle framer holds none. */
    assert_int_equal(mqtt_parser_next(&ps, buf, 0, &used, 1000, &r, &why), 0);
    assert_int_equal(used, 0);
    assert_null(ps.buf);
    assert_int_equal(ps.buf_done, 0);
    mqtt_parser_reset(&ps);
}

static void mqtt_parser_header_split_from_body_zero_copy(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t n =
        mqtt_encode_publish(buf, (const uint8_t *)"t", 1, 0, 0, 0, 0, (const uint8_t *)"abc", 3);
    mqtt_parser_t ps = {0};
    mqtt_raw_t r;
    size_t used = 0;
    const char *why = NULL;
    assert_int_equal(mqtt_parser_next(&ps, buf, 2, &used, 1000, &r, &why), 0);
    assert_null(ps.buf);
    assert_int_equal(mqtt_parser_next(&ps, buf + 2, n - 2, &used, 1000, &r, &why), 1);
    assert_ptr_equal(r.body, buf + 2);
    assert_null(ps.buf);
    mqtt_parser_reset(&ps);
}

static void mqtt_parser_remaining_length_boundaries(void **state)
{
    (void)state;
    static const uint32_t lens[] = {0, 127, 128, 16383, 16384, 2097151, 2097152};
    static const size_t vbytes[] = {1, 1, 2, 2, 3, 3, 4};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        uint32_t len = lens[k];
        uint8_t *pkt = malloc(5 + (size_t)len);
        assert_non_null(pkt);
        size_t h = 1;
        pkt[0] = 0x30;
        h += mqtt_encode_varint(pkt + 1, len);
        assert_int_equal(h - 1, vbytes[k]);
        if (len >= 3) { /* a valid PUBLISH: topic "t", payload fills the rest */
            pkt[h] = 0;
            pkt[h + 1] = 1;
            pkt[h + 2] = 't';
            for (uint32_t i = 3; i < len; i++)
                pkt[h + i] = (uint8_t)(i * 7);
        }
        size_t total = h + len;

        /* Whole: in place. */
        mqtt_raw_t r = frame_one(pkt, total);
        assert_int_equal(r.len, len);
        if (len >= 3) {
            mqtt_publish_t p;
            const char *why = NULL;
            assert_int_equal(mqtt_decode_publish(&r, MQTT_PROTO_V311, &p, &why), MQTT_OK);
            assert_int_equal(p.payload_len, len - 3);
        }

        /* Split in three: gathered in the private buffer. */
        mqtt_parser_t ps = {0};
        size_t used = 0, cut1 = h / 2 + 1, cut2 = h + len / 2;
        const char *why = NULL;
        if (len > 0) {
            assert_int_equal(mqtt_parser_next(&ps, pkt, cut1, &used, len, &r, &why), 0);
            assert_int_equal(mqtt_parser_next(&ps, pkt + cut1, cut2 - cut1, &used, len, &r, &why),
                             0);
            assert_int_equal(mqtt_parser_next(&ps, pkt + cut2, total - cut2, &used, len, &r, &why),
                             1);
            assert_int_equal(used, total - cut2);
            assert_int_equal(r.len, len);
            assert_memory_equal(r.body, pkt + h, len);
            if (len > 1)
                assert_ptr_equal(r.body, ps.buf);
        }
        mqtt_parser_reset(&ps);

        /* One below the length: too large. */
        if (len > 0) {
            assert_int_equal(mqtt_parser_next(&ps, pkt, total, &used, len - 1, &r, &why),
                             MQTT_ERR_TOO_LARGE);
            assert_int_equal(used, h);
            mqtt_parser_reset(&ps);
        }
        free(pkt);
    }
}

static void mqtt_parser_five_byte_length_rejected(void **state)
{
    (void)state;
    static const uint8_t bad[] = {0x30, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 0};
    mqtt_parser_t ps = {0};
    mqtt_raw_t r;
    size_t used = 0;
    const char *why = NULL;
    assert_int_equal(mqtt_parser_next(&ps, bad, sizeof bad, &used, MQTT_MAX_REMAINING, &r, &why),
                     MQTT_ERR_MALFORMED);
    assert_int_equal(used, 5);
    assert_why(why, "[MQTT-2.2.3]");
    assert_null(ps.buf);
    assert_int_equal(ps.state, MQTT_PS_HDR); /* left idle */
    mqtt_parser_reset(&ps);
}

static void mqtt_parser_five_byte_length_rejected_byte_by_byte(void **state)
{
    (void)state;
    static const uint8_t bad[] = {0x82, 0x80, 0x80, 0x80, 0x80, 0x01};
    mqtt_parser_t ps = {0};
    mqtt_raw_t r;
    size_t used = 0;
    const char *why = NULL;
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(mqtt_parser_next(&ps, bad + i, 1, &used, MQTT_MAX_REMAINING, &r, &why), 0);
    assert_int_equal(mqtt_parser_next(&ps, bad + 4, 1, &used, MQTT_MAX_REMAINING, &r, &why),
                     MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT-2.2.3]");
    mqtt_parser_reset(&ps);
}

static void mqtt_parser_too_large_rejected_before_allocation(void **state)
{
    (void)state;
    /* Remaining length 268435455, then nothing: refused at the last length
     * byte, without allocating. */
    static const uint8_t hdr[] = {0x30, 0xff, 0xff, 0xff, 0x7f};
    mqtt_parser_t ps = {0};
    mqtt_raw_t r;
    size_t used = 0;
    const char *why = NULL;
    assert_int_equal(mqtt_parser_next(&ps, hdr, 4, &used, 1 << 20, &r, &why), 0);
    assert_null(ps.buf);
    assert_int_equal(mqtt_parser_next(&ps, hdr + 4, 1, &used, 1 << 20, &r, &why),
                     MQTT_ERR_TOO_LARGE);
    assert_int_equal(used, 1);
    assert_non_null(why);
    assert_null(ps.buf);
    mqtt_parser_reset(&ps);

    /* 1001 > 1000, with part of the body present. */
    uint8_t pkt[8] = {0x30, 0xe9, 0x07, 1, 2, 3, 4, 5};
    assert_int_equal(mqtt_parser_next(&ps, pkt, sizeof pkt, &used, 1000, &r, &why),
                     MQTT_ERR_TOO_LARGE);
    assert_int_equal(used, 3);
    assert_null(ps.buf);
    mqtt_parser_reset(&ps);
}

static void mqtt_parser_max_packet_exact_accepted(void **state)
{
    (void)state;
    uint8_t pkt[3 + 1000];
    memset(pkt, 0xab, sizeof pkt);
    pkt[0] = 0x30;
    pkt[1] = 0xe8; /* 1000 */
    pkt[2] = 0x07;
    mqtt_parser_t ps = {0};
    mqtt_raw_t r;
    size_t used = 0;
    const char *why = NULL;
    assert_int_equal(mqtt_parser_next(&ps, pkt, sizeof pkt, &used, 1000, &r, &why), 1);
    assert_int_equal(r.len, 1000);
    assert_int_equal(used, sizeof pkt);
    mqtt_parser_reset(&ps);
}

static void mqtt_parser_type0_rejected(void **state)
{
    (void)state;
    static const uint8_t bad[] = {0x00, 0x00};
    static const uint8_t bad_flags[] = {0x0f, 0x02, 1, 2};
    mqtt_parser_t ps = {0};
    mqtt_raw_t r;
    size_t used = 0;
    const char *why = NULL;
    assert_int_equal(mqtt_parser_next(&ps, bad, sizeof bad, &used, 100, &r, &why),
                     MQTT_ERR_MALFORMED);
    assert_int_equal(used, 1);
    assert_non_null(why);
    mqtt_parser_reset(&ps);
    assert_int_equal(mqtt_parser_next(&ps, bad_flags, sizeof bad_flags, &used, 100, &r, &why),
                     MQTT_ERR_MALFORMED);
    mqtt_parser_reset(&ps);
}

static void mqtt_parser_type0_after_valid_packet_rejected(void **state)
{
    (void)state;
    static const uint8_t data[] = {0xc0, 0x00, 0x00, 0x00};
    mqtt_parser_t ps = {0};
    mqtt_raw_t r;
    size_t used = 0;
    const char *why = NULL;
    assert_int_equal(mqtt_parser_next(&ps, data, sizeof data, &used, 100, &r, &why), 1);
    assert_int_equal(used, 2);
    assert_int_equal(r.hdr, 0xc0);
    assert_int_equal(mqtt_parser_next(&ps, data + 2, 2, &used, 100, &r, &why), MQTT_ERR_MALFORMED);
    mqtt_parser_reset(&ps);
}

static void mqtt_parser_empty_body_is_null(void **state)
{
    (void)state;
    static const uint8_t data[] = {0xc0, 0x00};
    mqtt_parser_t ps = {0};
    mqtt_raw_t r;
    size_t used = 0;
    const char *why = NULL;
    assert_int_equal(mqtt_parser_next(&ps, data, 1, &used, 100, &r, &why), 0);
    assert_int_equal(mqtt_parser_next(&ps, data + 1, 1, &used, 100, &r, &why), 1);
    assert_int_equal(r.hdr, 0xc0);
    assert_int_equal(r.len, 0);
    assert_null(r.body);
    /* Even with max_packet 0. */
    assert_int_equal(mqtt_parser_next(&ps, data, 2, &used, 0, &r, &why), 1);
    assert_null(r.body);
    mqtt_parser_reset(&ps);
}

static void mqtt_parser_non_minimal_length_accepted(void **state)
{
    (void)state;
    /* 3.1.1 does not require the shortest encoding: 0x82 0x00 is 2. */
    static const uint8_t data[] = {0xb0, 0x82, 0x00, 0x00, 0x05};
    mqtt_parser_t ps = {0};
    mqtt_raw_t r;
    size_t used = 0;
    uint16_t id = 0;
    const char *why = NULL;
    assert_int_equal(mqtt_parser_next(&ps, data, sizeof data, &used, 100, &r, &why), 1);
    assert_int_equal(r.len, 2);
    assert_int_equal(mqtt_decode_ack(&r, &id, &why), MQTT_OK);
    assert_int_equal(id, 5);
    mqtt_parser_reset(&ps);
}

static void mqtt_parser_reset_frees_partial_packet(void **state)
{
    (void)state;
    static const uint8_t data[] = {0x30, 0x0a, 0x00, 0x01, 't'};
    mqtt_parser_t ps = {0};
    mqtt_raw_t r;
    size_t used = 0;
    const char *why = NULL;
    assert_int_equal(mqtt_parser_next(&ps, data, sizeof data, &used, 100, &r, &why), 0);
    assert_non_null(ps.buf);
    mqtt_parser_reset(&ps);
    assert_null(ps.buf);
    assert_int_equal(ps.state, MQTT_PS_HDR);
    /* Usable again after the reset. */
    static const uint8_t ping[] = {0xc0, 0x00};
    assert_int_equal(mqtt_parser_next(&ps, ping, 2, &used, 100, &r, &why), 1);
    assert_int_equal(r.hdr, 0xc0);
    mqtt_parser_reset(&ps);
}

/* ---- fixed-header checks -------------------------------------------------- */

static void mqtt_check_client_header_flags_per_type(void **state)
{
    (void)state;
    static const uint8_t client_types[] = {MQTT_CONNECT,     MQTT_PUBACK,  MQTT_PUBREC,
                                           MQTT_PUBREL,      MQTT_PUBCOMP, MQTT_SUBSCRIBE,
                                           MQTT_UNSUBSCRIBE, MQTT_PINGREQ, MQTT_DISCONNECT};
    for (size_t i = 0; i < sizeof client_types; i++) {
        uint8_t t = client_types[i];
        uint8_t want = (t == MQTT_PUBREL || t == MQTT_SUBSCRIBE || t == MQTT_UNSUBSCRIBE) ? 2 : 0;
        for (uint8_t f = 0; f < 16; f++) {
            const char *why = NULL;
            int rc = mqtt_check_client_header((uint8_t)(t << 4 | f), MQTT_PROTO_V311, &why);
            assert_int_equal(rc, f == want ? MQTT_OK : MQTT_ERR_MALFORMED);
            if (rc != MQTT_OK)
                assert_non_null(why);
        }
    }
}

static void mqtt_check_client_header_connect_flags_rejected(void **state)
{
    (void)state;
    const char *why = NULL;
    assert_int_equal(mqtt_check_client_header(0x11, MQTT_PROTO_V311, &why), MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT-2.2.2-1]");
}

static void mqtt_check_client_header_pubrel_flags_rejected(void **state)
{
    (void)state;
    const char *why = NULL;
    assert_int_equal(mqtt_check_client_header(0x60, MQTT_PROTO_V311, &why), MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT-3.6.1-1]");
    assert_int_equal(mqtt_check_client_header(0x62, MQTT_PROTO_V311, &why), MQTT_OK);
}

static void mqtt_check_client_header_publish_flags(void **state)
{
    (void)state;
    for (uint8_t f = 0; f < 16; f++) {
        const char *why = NULL;
        uint8_t qos = (f >> 1) & 3, dup = f >> 3;
        int want = qos == 3 || (dup && qos == 0) ? MQTT_ERR_MALFORMED : MQTT_OK;
        assert_int_equal(mqtt_check_client_header((uint8_t)(0x30 | f), MQTT_PROTO_V311, &why),
                         want);
    }
}

static void mqtt_check_client_header_server_types_rejected(void **state)
{
    (void)state;
    static const uint8_t server_types[] = {MQTT_CONNACK, MQTT_SUBACK, MQTT_UNSUBACK, MQTT_PINGRESP};
    for (size_t i = 0; i < sizeof server_types; i++) {
        const char *why = NULL;
        assert_int_equal(
            mqtt_check_client_header((uint8_t)(server_types[i] << 4), MQTT_PROTO_V311, &why),
            MQTT_ERR_PROTOCOL);
        assert_non_null(why);
        assert_int_equal(
            mqtt_check_client_header((uint8_t)(server_types[i] << 4), MQTT_PROTO_V31, &why),
            MQTT_ERR_PROTOCOL);
    }
}

static void mqtt_check_client_header_auth_rejected_before_v5(void **state)
{
    (void)state;
    const char *why = NULL;
    assert_int_equal(mqtt_check_client_header(0xf0, MQTT_PROTO_V311, &why), MQTT_ERR_PROTOCOL);
    assert_non_null(why);
    assert_int_equal(mqtt_check_client_header(0xf0, MQTT_PROTO_V31, &why), MQTT_ERR_PROTOCOL);
    assert_int_equal(mqtt_check_client_header(0xf0, MQTT_PROTO_V5, &why), MQTT_OK);
    assert_int_equal(mqtt_check_client_header(0xf1, MQTT_PROTO_V5, &why), MQTT_ERR_MALFORMED);
}

static void mqtt_check_client_header_type0_rejected(void **state)
{
    (void)state;
    const char *why = NULL;
    assert_int_equal(mqtt_check_client_header(0x00, MQTT_PROTO_V311, &why), MQTT_ERR_MALFORMED);
    assert_non_null(why);
}

/* ---- CONNECT ------------------------------------------------------------ */

static void mqtt_decode_connect_unknown_protocol_name_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQTX", 4, CF_CLEAN);
    bb_str(&b, "c");
    expect_connect(&b, MQTT_ERR_PROTOCOL, "[MQTT-3.1.2-1]");
}

static void mqtt_decode_connect_protocol_name_case_sensitive(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "mqtt", 4, CF_CLEAN);
    bb_str(&b, "c");
    expect_connect(&b, MQTT_ERR_PROTOCOL, "[MQTT-3.1.2-1]");
}

static void mqtt_decode_connect_mqtt_level5_protocol_version(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQTT", 5, CF_CLEAN);
    bb_u8(&b, 0); /* v5 properties length: never read */
    bb_str(&b, "c");
    expect_connect(&b, MQTT_ERR_PROTOCOL_VERSION, "[MQTT-3.1.2-2]");
}

static void mqtt_decode_connect_mqtt_level3_protocol_version(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQTT", 3, CF_CLEAN);
    bb_str(&b, "c");
    expect_connect(&b, MQTT_ERR_PROTOCOL_VERSION, "[MQTT-3.1.2-2]");
}

static void mqtt_decode_connect_mqisdp_level4_protocol_version(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQIsdp", 4, CF_CLEAN);
    bb_str(&b, "c");
    expect_connect(&b, MQTT_ERR_PROTOCOL_VERSION, "[MQTT-3.1.2-2]");
}

static void mqtt_decode_connect_reserved_flag_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQTT", 4, CF_CLEAN | 0x01);
    bb_str(&b, "c");
    expect_connect(&b, MQTT_ERR_MALFORMED, "[MQTT-3.1.2-3]");
}

static void mqtt_decode_connect_v31_reserved_flag_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQIsdp", 3, CF_CLEAN | 0x01);
    bb_str(&b, "c");
    expect_connect(&b, MQTT_ERR_MALFORMED, "[MQTT-3.1.2-3]");
}

static void mqtt_decode_connect_will_qos_without_will_flag_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQTT", 4, CF_CLEAN | CF_WQOS1);
    bb_str(&b, "c");
    expect_connect(&b, MQTT_ERR_MALFORMED, "[MQTT-3.1.2-13]");
}

static void mqtt_decode_connect_will_retain_without_will_flag_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQTT", 4, CF_CLEAN | CF_WRETAIN);
    bb_str(&b, "c");
    expect_connect(&b, MQTT_ERR_MALFORMED, "[MQTT-3.1.2-15]");
}

static void mqtt_decode_connect_will_qos3_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQTT", 4, CF_CLEAN | CF_WILL | CF_WQOS1 | CF_WQOS2);
    bb_str(&b, "c");
    bb_str(&b, "will/topic");
    bb_str(&b, "msg");
    expect_connect(&b, MQTT_ERR_MALFORMED, "[MQTT-3.1.2-14]");
}

static void mqtt_decode_connect_password_without_username_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQTT", 4, CF_CLEAN | CF_PASS);
    bb_str(&b, "c");
    bb_str(&b, "pw");
    expect_connect(&b, MQTT_ERR_MALFORMED, "[MQTT-3.1.2-22]");
}

static void mqtt_decode_connect_v31_password_without_username_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQIsdp", 3, CF_CLEAN | CF_PASS);
    bb_str(&b, "c");
    bb_str(&b, "pw");
    expect_connect(&b, MQTT_ERR_MALFORMED, "[MQTT-3.1.2-22]");
}

static void mqtt_decode_connect_client_id_invalid_utf8_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQTT", 4, CF_CLEAN);
    bb_str(&b, "ab\xc0\xafz"); /* overlong '/' */
    expect_connect(&b, MQTT_ERR_MALFORMED, "[MQTT-1.5.3-1]");
}

static void mqtt_decode_connect_client_id_nul_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQTT", 4, CF_CLEAN);
    bb_strn(&b, "a\0b", 3);
    expect_connect(&b, MQTT_ERR_MALFORMED, "[MQTT-1.5.3-1]");
}

static void mqtt_decode_connect_client_id_surrogate_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQTT", 4, CF_CLEAN);
    bb_str(&b, "a\xed\xa0\x80");
    expect_connect(&b, MQTT_ERR_MALFORMED, "[MQTT-1.5.3-1]");
}

static void mqtt_decode_connect_will_topic_invalid_utf8_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQTT", 4, CF_CLEAN | CF_WILL);
    bb_str(&b, "c");
    bb_str(&b, "w/\xff");
    bb_str(&b, "m");
    expect_connect(&b, MQTT_ERR_MALFORMED, "[MQTT-3.1.3-10]");
}

static void mqtt_decode_connect_will_topic_wildcard_rejected(void **state)
{
    (void)state;
    const char *topics[] = {"w/+", "#", "a/#", "+"};
    for (size_t i = 0; i < 4; i++) {
        bb_t b = {0};
        connect_vh(&b, "MQTT", 4, CF_CLEAN | CF_WILL);
        bb_str(&b, "c");
        bb_str(&b, topics[i]);
        bb_str(&b, "m");
        expect_connect(&b, MQTT_ERR_MALFORMED, "[MQTT-3.3.2-2]");
    }
}

static void mqtt_decode_connect_will_topic_empty_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQTT", 4, CF_CLEAN | CF_WILL);
    bb_str(&b, "c");
    bb_str(&b, "");
    bb_str(&b, "m");
    expect_connect(&b, MQTT_ERR_MALFORMED, "[MQTT-4.7.3-1]");
}

static void mqtt_decode_connect_username_invalid_utf8_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQTT", 4, CF_CLEAN | CF_USER);
    bb_str(&b, "c");
    bb_str(&b, "us\xf4\x90\x80\x80"); /* U+110000 */
    expect_connect(&b, MQTT_ERR_MALFORMED, "[MQTT-3.1.3-11]");
}

static void mqtt_decode_connect_binary_password_and_will_payload_accepted(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQTT", 4, CF_CLEAN | CF_WILL | CF_USER | CF_PASS);
    bb_str(&b, "c");
    bb_str(&b, "w");
    bb_strn(&b, "\x00\xff\xc0", 3);
    bb_str(&b, "u");
    bb_strn(&b, "\xff\x00", 2);
    mqtt_raw_t r = raw_of(0x10, &b);
    mqtt_connect_t c;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_connect(&r, &c, &why), MQTT_OK);
    assert_int_equal(c.will_payload.len, 3);
    assert_memory_equal(c.will_payload.p, "\x00\xff\xc0", 3);
    assert_int_equal(c.password.len, 2);
    assert_memory_equal(c.password.p, "\xff\x00", 2);
}

static void mqtt_decode_connect_empty_client_id_clean0_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQTT", 4, 0);
    bb_str(&b, "");
    expect_connect(&b, MQTT_ERR_CLIENT_ID, "[MQTT-3.1.3-8]");
}

static void mqtt_decode_connect_empty_client_id_clean1_accepted(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQTT", 4, CF_CLEAN);
    bb_str(&b, "");
    expect_connect(&b, MQTT_OK, NULL);
}

static void mqtt_decode_connect_v31_empty_client_id_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQIsdp", 3, CF_CLEAN);
    bb_str(&b, "");
    expect_connect(&b, MQTT_ERR_CLIENT_ID, "[MQTT-3.1]");
}

static void mqtt_decode_connect_v31_client_id_24_bytes_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQIsdp", 3, CF_CLEAN);
    bb_str(&b, "abcdefghijklmnopqrstuvwx");
    expect_connect(&b, MQTT_ERR_CLIENT_ID, "[MQTT-3.1]");
}

static void mqtt_decode_connect_v31_client_id_23_bytes_accepted(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQIsdp", 3, 0);
    bb_str(&b, "abcdefghijklmnopqrstuvw");
    expect_connect(&b, MQTT_OK, NULL);
}

static void mqtt_decode_connect_v311_long_client_id_accepted(void **state)
{
    (void)state;
    bb_t b = {0};
    char id[200];
    memset(id, 'k', sizeof id - 1);
    id[sizeof id - 1] = 0;
    connect_vh(&b, "MQTT", 4, 0);
    bb_str(&b, id);
    expect_connect(&b, MQTT_OK, NULL);
}

static void mqtt_decode_connect_trailing_bytes_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQTT", 4, CF_CLEAN | CF_USER);
    bb_str(&b, "c");
    bb_str(&b, "u");
    bb_u8(&b, 0); /* a password without its flag */
    expect_connect(&b, MQTT_ERR_MALFORMED, "[MQTT-3.1.3]");
}

static void mqtt_decode_connect_malformed_wins_over_client_id(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQTT", 4, 0);
    bb_str(&b, "");
    bb_u8(&b, 0x42);
    expect_connect(&b, MQTT_ERR_MALFORMED, "[MQTT-3.1.3]");
}

static void mqtt_decode_connect_every_truncation_rejected(void **state)
{
    (void)state;
    mqtt_connect_opts_t o = {.proto = MQTT_PROTO_V311,
                             .clean_session = 1,
                             .keepalive = 5,
                             .client_id = "cid",
                             .username = "user",
                             .password = "pass",
                             .will_topic = "w/t",
                             .will_payload = (const uint8_t *)"wp",
                             .will_payload_len = 2,
                             .will_qos = 1};
    for (int v = 0; v < 2; v++) {
        uint8_t buf[128];
        o.proto = v ? MQTT_PROTO_V31 : MQTT_PROTO_V311;
        size_t n = mqtt_encode_connect(buf, &o);
        mqtt_raw_t whole = frame_one(buf, n);
        mqtt_connect_t c;
        const char *why = NULL;
        assert_int_equal(mqtt_decode_connect(&whole, &c, &why), MQTT_OK);
        for (uint32_t cut = 0; cut < whole.len; cut++) {
            mqtt_raw_t r = whole;
            r.len = cut;
            if (cut == 0)
                r.body = NULL;
            why = NULL;
            assert_int_equal(mqtt_decode_connect(&r, &c, &why), MQTT_ERR_MALFORMED);
            assert_non_null(why);
        }
    }
}

static void mqtt_decode_connect_truncated_password_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQTT", 4, CF_CLEAN | CF_USER | CF_PASS);
    bb_str(&b, "c");
    bb_str(&b, "u");
    bb_u16(&b, 5);
    bb_raw(&b, "pw", 2);
    expect_connect(&b, MQTT_ERR_MALFORMED, "[MQTT-3.1.2-21]");
}

static void mqtt_decode_connect_missing_will_message_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQTT", 4, CF_CLEAN | CF_WILL);
    bb_str(&b, "c");
    bb_str(&b, "w");
    expect_connect(&b, MQTT_ERR_MALFORMED, "[MQTT-3.1.2-9]");
    bb_t t = {0};
    connect_vh(&t, "MQTT", 4, CF_CLEAN | CF_WILL);
    bb_str(&t, "c");
    expect_connect(&t, MQTT_ERR_MALFORMED, "[MQTT-3.1.2-9]");
}

static void mqtt_decode_connect_wrong_type_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    connect_vh(&b, "MQTT", 4, CF_CLEAN);
    bb_str(&b, "c");
    mqtt_raw_t r = raw_of(0x30, &b);
    mqtt_connect_t c;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_connect(&r, &c, &why), MQTT_ERR_MALFORMED);
    r = raw_of(0x12, &b);
    assert_int_equal(mqtt_decode_connect(&r, &c, &why), MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT-2.2.2-1]");
}

/* ---- PUBLISH ------------------------------------------------------------- */

static void mqtt_decode_publish_qos3_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_str(&b, "t");
    bb_u16(&b, 1);
    expect_publish(0x36, &b, MQTT_ERR_MALFORMED, "[MQTT-3.3.1-4]");
}

static void mqtt_decode_publish_dup_qos0_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_str(&b, "t");
    expect_publish(0x38, &b, MQTT_ERR_MALFORMED, "[MQTT-3.3.1-2]");
}

static void mqtt_decode_publish_empty_topic_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_str(&b, "");
    bb_raw(&b, "payload", 7);
    expect_publish(0x30, &b, MQTT_ERR_MALFORMED, "[MQTT-4.7.3-1]");
}

static void mqtt_decode_publish_plus_wildcard_topic_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_str(&b, "a/+/c");
    expect_publish(0x30, &b, MQTT_ERR_MALFORMED, "[MQTT-3.3.2-2]");
}

static void mqtt_decode_publish_hash_wildcard_topic_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_str(&b, "a/#");
    bb_u16(&b, 3);
    expect_publish(0x32, &b, MQTT_ERR_MALFORMED, "[MQTT-3.3.2-2]");
}

static void mqtt_decode_publish_topic_invalid_utf8_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_str(&b, "a/\xe0\x80\xaf"); /* overlong */
    expect_publish(0x30, &b, MQTT_ERR_MALFORMED, "[MQTT-1.5.3-1]");
}

static void mqtt_decode_publish_topic_nul_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_strn(&b, "a\0", 2);
    expect_publish(0x30, &b, MQTT_ERR_MALFORMED, "[MQTT-1.5.3-1]");
}

static void mqtt_decode_publish_packet_id_0_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_str(&b, "t");
    bb_u16(&b, 0);
    expect_publish(0x32, &b, MQTT_ERR_MALFORMED, "[MQTT-2.3.1-1]");
    expect_publish(0x34, &b, MQTT_ERR_MALFORMED, "[MQTT-2.3.1-1]");
}

static void mqtt_decode_publish_truncated_topic_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u16(&b, 10);
    bb_raw(&b, "short", 5);
    expect_publish(0x30, &b, MQTT_ERR_MALFORMED, "[MQTT-3.3.2-1]");
    bb_t one = {0};
    bb_u8(&one, 0);
    expect_publish(0x30, &one, MQTT_ERR_MALFORMED, "[MQTT-3.3.2-1]");
    bb_t none = {0};
    expect_publish(0x30, &none, MQTT_ERR_MALFORMED, "[MQTT-3.3.2-1]");
}

static void mqtt_decode_publish_missing_packet_id_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_str(&b, "t");
    bb_u8(&b, 1);
    expect_publish(0x32, &b, MQTT_ERR_MALFORMED, "[MQTT-2.3.1-1]");
}

static void mqtt_decode_publish_qos0_payload_follows_topic(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_str(&b, "t");
    bb_raw(&b, "\x00\x00xy", 4);
    mqtt_raw_t r = raw_of(0x31, &b);
    mqtt_publish_t p;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_publish(&r, MQTT_PROTO_V311, &p, &why), MQTT_OK);
    assert_int_equal(p.packet_id, 0);
    assert_int_equal(p.retain, 1);
    assert_int_equal(p.payload_len, 4);
    assert_memory_equal(p.payload, "\x00\x00xy", 4);
}

static void mqtt_decode_publish_empty_payload_accepted(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_str(&b, "t");
    bb_u16(&b, 9);
    mqtt_raw_t r = raw_of(0x34, &b);
    mqtt_publish_t p;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_publish(&r, MQTT_PROTO_V311, &p, &why), MQTT_OK);
    assert_int_equal(p.qos, 2);
    assert_int_equal(p.packet_id, 9);
    assert_int_equal(p.payload_len, 0);
}

/* ---- SUBSCRIBE / UNSUBSCRIBE ------------------------------------------------- */

static void mqtt_decode_subscribe_flags_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u16(&b, 1);
    bb_str(&b, "a");
    bb_u8(&b, 0);
    expect_subscribe(0x80, &b, MQTT_ERR_MALFORMED, "[MQTT-3.8.1-1]");
    expect_subscribe(0x83, &b, MQTT_ERR_MALFORMED, "[MQTT-3.8.1-1]");
    expect_subscribe(0x82, &b, MQTT_OK, NULL);
}

static void mqtt_decode_subscribe_packet_id_0_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u16(&b, 0);
    bb_str(&b, "a");
    bb_u8(&b, 0);
    expect_subscribe(0x82, &b, MQTT_ERR_MALFORMED, "[MQTT-2.3.1-1]");
}

static void mqtt_decode_subscribe_truncated_packet_id_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u8(&b, 1);
    expect_subscribe(0x82, &b, MQTT_ERR_MALFORMED, "[MQTT-2.3.1-1]");
    bb_t none = {0};
    expect_subscribe(0x82, &none, MQTT_ERR_MALFORMED, "[MQTT-2.3.1-1]");
}

static void mqtt_decode_subscribe_no_filters_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u16(&b, 1);
    expect_subscribe(0x82, &b, MQTT_ERR_PROTOCOL, "[MQTT-3.8.3-3]");
}

static void mqtt_decode_subscribe_options_reserved_bits_rejected(void **state)
{
    (void)state;
    for (int bit = 2; bit < 8; bit++) {
        bb_t b = {0};
        bb_u16(&b, 1);
        bb_str(&b, "a");
        bb_u8(&b, (uint8_t)(1u << bit));
        expect_subscribe(0x82, &b, MQTT_ERR_MALFORMED, "[MQTT-3-8.3-4]");
    }
}

static void mqtt_decode_subscribe_qos3_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u16(&b, 1);
    bb_str(&b, "a");
    bb_u8(&b, 3);
    expect_subscribe(0x82, &b, MQTT_ERR_MALFORMED, "[MQTT-3-8.3-4]");
}

static void mqtt_decode_subscribe_misplaced_hash_rejected(void **state)
{
    (void)state;
    static const char *bad[] = {"a#", "a/#/b", "#/", "a/b#", "##", "#+"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bb_t b = {0};
        bb_u16(&b, 1);
        bb_str(&b, bad[i]);
        bb_u8(&b, 0);
        expect_subscribe(0x82, &b, MQTT_ERR_MALFORMED, "[MQTT-4.7.1-2]");
    }
}

static void mqtt_decode_subscribe_misplaced_plus_rejected(void **state)
{
    (void)state;
    static const char *bad[] = {"a+", "+a", "a/+b/c", "a/b+", "++", "+#"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bb_t b = {0};
        bb_u16(&b, 1);
        bb_str(&b, bad[i]);
        bb_u8(&b, 0);
        expect_subscribe(0x82, &b, MQTT_ERR_MALFORMED, "[MQTT-4.7.1-3]");
    }
}

static void mqtt_decode_subscribe_empty_filter_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u16(&b, 1);
    bb_str(&b, "");
    bb_u8(&b, 0);
    expect_subscribe(0x82, &b, MQTT_ERR_MALFORMED, "[MQTT-4.7.3-1]");
}

static void mqtt_decode_subscribe_filter_invalid_utf8_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u16(&b, 1);
    bb_str(&b, "a/\xc3");
    bb_u8(&b, 0);
    expect_subscribe(0x82, &b, MQTT_ERR_MALFORMED, "[MQTT-1.5.3-1]");
}

static void mqtt_decode_subscribe_truncated_filter_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u16(&b, 1);
    bb_u16(&b, 8);
    bb_raw(&b, "abc", 3);
    expect_subscribe(0x82, &b, MQTT_ERR_MALFORMED, "[MQTT-3.8.3-1]");
    bb_t one = {0};
    bb_u16(&one, 1);
    bb_u8(&one, 0);
    expect_subscribe(0x82, &one, MQTT_ERR_MALFORMED, "[MQTT-3.8.3-1]");
}

static void mqtt_decode_subscribe_missing_options_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u16(&b, 1);
    bb_str(&b, "a");
    expect_subscribe(0x82, &b, MQTT_ERR_MALFORMED, "[MQTT-3.8.3-1]");
}

static void mqtt_decode_subscribe_bad_second_filter_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u16(&b, 1);
    bb_str(&b, "good/#");
    bb_u8(&b, 1);
    bb_str(&b, "bad/#/x");
    bb_u8(&b, 1);
    expect_subscribe(0x82, &b, MQTT_ERR_MALFORMED, "[MQTT-4.7.1-2]");
}

/* count is 16 bits: 65535 filters are fine, one more is refused. */
static void mqtt_decode_subscribe_too_many_filters_rejected(void **state)
{
    (void)state;
    for (uint32_t filters = 65535; filters <= 65536; filters++) {
        uint32_t len = 2 + 4 * filters;
        uint8_t *body = malloc(len);
        assert_non_null(body);
        body[0] = 0;
        body[1] = 1;
        for (uint32_t i = 0; i < filters; i++)
            memcpy(body + 2 + 4 * i,
                   "\x00\x01"
                   "a"
                   "\x01",
                   4);
        mqtt_raw_t r = {.hdr = 0x82, .len = len, .body = body};
        mqtt_sub_iter_t it;
        const char *why = NULL;
        if (filters == 65535) {
            assert_int_equal(mqtt_decode_subscribe(&r, &it, &why), MQTT_OK);
            assert_int_equal(it.count, 65535);
        } else {
            assert_int_equal(mqtt_decode_subscribe(&r, &it, &why), MQTT_ERR_MALFORMED);
            assert_non_null(why);
        }
        free(body);
    }
}

static void mqtt_decode_unsubscribe_flags_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u16(&b, 1);
    bb_str(&b, "a");
    expect_unsubscribe(0xa0, &b, MQTT_ERR_MALFORMED, "[MQTT-3.10.1-1]");
    expect_unsubscribe(0xaa, &b, MQTT_ERR_MALFORMED, "[MQTT-3.10.1-1]");
    expect_unsubscribe(0xa2, &b, MQTT_OK, NULL);
}

static void mqtt_decode_unsubscribe_no_filters_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u16(&b, 1);
    expect_unsubscribe(0xa2, &b, MQTT_ERR_PROTOCOL, "[MQTT-3.10.3-2]");
}

static void mqtt_decode_unsubscribe_packet_id_0_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u16(&b, 0);
    bb_str(&b, "a");
    expect_unsubscribe(0xa2, &b, MQTT_ERR_MALFORMED, "[MQTT-2.3.1-1]");
}

static void mqtt_decode_unsubscribe_invalid_filter_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u16(&b, 1);
    bb_str(&b, "a/b");
    bb_str(&b, "x#");
    expect_unsubscribe(0xa2, &b, MQTT_ERR_MALFORMED, "[MQTT-4.7.1-2]");
    bb_t e = {0};
    bb_u16(&e, 1);
    bb_str(&e, "");
    expect_unsubscribe(0xa2, &e, MQTT_ERR_MALFORMED, "[MQTT-4.7.3-1]");
    bb_t u = {0};
    bb_u16(&u, 1);
    bb_str(&u, "\xed\xbf\xbf");
    expect_unsubscribe(0xa2, &u, MQTT_ERR_MALFORMED, "[MQTT-1.5.3-1]");
}

static void mqtt_decode_unsubscribe_truncated_filter_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u16(&b, 1);
    bb_str(&b, "a");
    bb_u16(&b, 4);
    bb_raw(&b, "b", 1);
    expect_unsubscribe(0xa2, &b, MQTT_ERR_MALFORMED, "[MQTT-3.10.3-1]");
}

static void mqtt_decode_unsubscribe_options_byte_is_malformed(void **state)
{
    (void)state;
    /* A SUBSCRIBE-shaped body: the QoS byte reads as a truncated filter. */
    bb_t b = {0};
    bb_u16(&b, 1);
    bb_str(&b, "a");
    bb_u8(&b, 0);
    expect_unsubscribe(0xa2, &b, MQTT_ERR_MALFORMED, "[MQTT-3.10.3-1]");
}

/* ---- acks and empty packets ------------------------------------------------ */

static void mqtt_decode_ack_length_not_2_rejected(void **state)
{
    (void)state;
    bb_t three = {0};
    bb_u16(&three, 1);
    bb_u8(&three, 0);
    bb_t one = {0};
    bb_u8(&one, 1);
    bb_t none = {0};
    const bb_t *bodies[] = {&three, &one, &none};
    for (size_t i = 0; i < 3; i++) {
        mqtt_raw_t r = raw_of(0x40, bodies[i]);
        uint16_t id;
        const char *why = NULL;
        assert_int_equal(mqtt_decode_ack(&r, &id, &why), MQTT_ERR_MALFORMED);
        assert_why(why, "[MQTT-2.3.1]");
    }
}

static void mqtt_decode_ack_flags_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u16(&b, 1);
    uint16_t id;
    const char *why = NULL;
    mqtt_raw_t r = raw_of(0x41, &b);
    assert_int_equal(mqtt_decode_ack(&r, &id, &why), MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT-2.2.2-1]");
    r = raw_of(0x52, &b);
    assert_int_equal(mqtt_decode_ack(&r, &id, &why), MQTT_ERR_MALFORMED);
    r = raw_of(0x60, &b);
    assert_int_equal(mqtt_decode_ack(&r, &id, &why), MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT-3.6.1-1]");
    r = raw_of(0x78, &b);
    assert_int_equal(mqtt_decode_ack(&r, &id, &why), MQTT_ERR_MALFORMED);
    r = raw_of(0xb2, &b);
    assert_int_equal(mqtt_decode_ack(&r, &id, &why), MQTT_ERR_MALFORMED);
}

static void mqtt_decode_ack_packet_id_0_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u16(&b, 0);
    uint16_t id;
    const char *why = NULL;
    mqtt_raw_t r = raw_of(0x62, &b);
    assert_int_equal(mqtt_decode_ack(&r, &id, &why), MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT-2.3.1]");
}

static void mqtt_decode_ack_wrong_type_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u16(&b, 1);
    uint16_t id;
    const char *why = NULL;
    mqtt_raw_t r = raw_of(0x20, &b);
    assert_int_equal(mqtt_decode_ack(&r, &id, &why), MQTT_ERR_MALFORMED);
    r = raw_of(0x90, &b);
    assert_int_equal(mqtt_decode_ack(&r, &id, &why), MQTT_ERR_MALFORMED);
}

static void mqtt_decode_empty_pingreq_body_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u8(&b, 0);
    mqtt_raw_t r = raw_of(0xc0, &b);
    const char *why = NULL;
    assert_int_equal(mqtt_decode_empty(&r, &why), MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT-3.12.1]");
}

static void mqtt_decode_empty_pingreq_flags_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    mqtt_raw_t r = raw_of(0xc2, &b);
    const char *why = NULL;
    assert_int_equal(mqtt_decode_empty(&r, &why), MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT-2.2.2-1]");
}

static void mqtt_decode_empty_disconnect_flags_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    mqtt_raw_t r = raw_of(0xe4, &b);
    const char *why = NULL;
    assert_int_equal(mqtt_decode_empty(&r, &why), MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT-3.14.1-1]");
}

static void mqtt_decode_empty_disconnect_body_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u8(&b, 0);
    mqtt_raw_t r = raw_of(0xe0, &b);
    const char *why = NULL;
    assert_int_equal(mqtt_decode_empty(&r, &why), MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT-3.14.1]");
}

static void mqtt_decode_empty_wrong_type_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    mqtt_raw_t r = raw_of(0x10, &b);
    const char *why = NULL;
    assert_int_equal(mqtt_decode_empty(&r, &why), MQTT_ERR_MALFORMED);
}

/* ---- client side: CONNACK, SUBACK ----------------------------------------- */

static int connack(const uint8_t *body, uint32_t len, uint8_t hdr, const char **why)
{
    mqtt_raw_t r = {.hdr = hdr, .len = len, .body = len ? body : NULL};
    uint8_t sp, rc;
    return mqtt_decode_connack(&r, &sp, &rc, why);
}

static void mqtt_decode_connack_length_not_2_rejected(void **state)
{
    (void)state;
    const char *why = NULL;
    assert_int_equal(connack((const uint8_t *)"\x00\x00\x00", 3, 0x20, &why), MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT-3.2.1]");
    assert_int_equal(connack((const uint8_t *)"\x00", 1, 0x20, &why), MQTT_ERR_MALFORMED);
    assert_int_equal(connack(NULL, 0, 0x20, &why), MQTT_ERR_MALFORMED);
}

static void mqtt_decode_connack_flags_rejected(void **state)
{
    (void)state;
    const char *why = NULL;
    assert_int_equal(connack((const uint8_t *)"\x00\x00", 2, 0x21, &why), MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT-2.2.2-1]");
}

static void mqtt_decode_connack_reserved_ack_flags_rejected(void **state)
{
    (void)state;
    const char *why = NULL;
    assert_int_equal(connack((const uint8_t *)"\x02\x00", 2, 0x20, &why), MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT-3.2.2.2]");
}

static void mqtt_decode_connack_reserved_return_code_rejected(void **state)
{
    (void)state;
    const char *why = NULL;
    assert_int_equal(connack((const uint8_t *)"\x00\x06", 2, 0x20, &why), MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT-3.2.2.3]");
    assert_int_equal(connack((const uint8_t *)"\x00\xff", 2, 0x20, &why), MQTT_ERR_MALFORMED);
}

static void mqtt_decode_connack_session_present_with_error_rejected(void **state)
{
    (void)state;
    const char *why = NULL;
    assert_int_equal(connack((const uint8_t *)"\x01\x05", 2, 0x20, &why), MQTT_ERR_PROTOCOL);
    assert_why(why, "[MQTT-3.2.2-4]");
}

static int suback(const bb_t *b, uint8_t hdr, const char **why)
{
    mqtt_raw_t r = raw_of(hdr, b);
    uint16_t id;
    uint8_t rcs[8];
    uint32_t n;
    return mqtt_decode_suback(&r, &id, rcs, 8, &n, why);
}

static void mqtt_decode_suback_reserved_code_rejected(void **state)
{
    (void)state;
    static const uint8_t bad[] = {3, 0x7f, 0x81, 0xff};
    for (size_t i = 0; i < sizeof bad; i++) {
        bb_t b = {0};
        const char *why = NULL;
        bb_u16(&b, 1);
        bb_u8(&b, 0);
        bb_u8(&b, bad[i]);
        assert_int_equal(suback(&b, 0x90, &why), MQTT_ERR_MALFORMED);
        assert_why(why, "[MQTT-3.9.3-2]");
    }
}

static void mqtt_decode_suback_no_codes_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    const char *why = NULL;
    bb_u16(&b, 1);
    assert_int_equal(suback(&b, 0x90, &why), MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT-3.9.3]");
    bb_t none = {0};
    assert_int_equal(suback(&none, 0x90, &why), MQTT_ERR_MALFORMED);
}

static void mqtt_decode_suback_packet_id_0_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    const char *why = NULL;
    bb_u16(&b, 0);
    bb_u8(&b, 1);
    assert_int_equal(suback(&b, 0x90, &why), MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT-2.3.1]");
}

static void mqtt_decode_suback_flags_rejected(void **state)
{
    (void)state;
    bb_t b = {0};
    const char *why = NULL;
    bb_u16(&b, 1);
    bb_u8(&b, 1);
    assert_int_equal(suback(&b, 0x92, &why), MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT-2.2.2-1]");
}

/* ---- validation helpers ------------------------------------------------------ */

static void mqtt_utf8_valid_accepts_well_formed(void **state)
{
    (void)state;
    assert_true(mqtt_utf8_valid(NULL, 0));
    assert_true(utf8("plain ascii/topic"));
    assert_true(utf8("\xc2\x80"));         /* U+0080 */
    assert_true(utf8("\xdf\xbf"));         /* U+07FF */
    assert_true(utf8("\xe0\xa0\x80"));     /* U+0800 */
    assert_true(utf8("\xed\x9f\xbf"));     /* U+D7FF */
    assert_true(utf8("\xee\x80\x80"));     /* U+E000 */
    assert_true(utf8("\xef\xbb\xbf"));     /* U+FEFF, kept [MQTT-1.5.3-3] */
    assert_true(utf8("\xef\xbf\xbf"));     /* U+FFFF */
    assert_true(utf8("\xf0\x90\x80\x80")); /* U+10000 */
    assert_true(utf8("\xf4\x8f\xbf\xbf")); /* U+10FFFF */
    assert_true(utf8("\x01\x1f\x7f"));     /* controls: SHOULD NOT, allowed */
}

static void mqtt_utf8_valid_rejects_overlong(void **state)
{
    (void)state;
    assert_false(utf8("\xc0\x80"));
    assert_false(utf8("\xc1\xbf"));
    assert_false(utf8("\xe0\x80\x80"));
    assert_false(utf8("\xe0\x9f\xbf"));
    assert_false(utf8("\xf0\x80\x80\x80"));
    assert_false(utf8("\xf0\x8f\xbf\xbf"));
}

static void mqtt_utf8_valid_rejects_above_10ffff(void **state)
{
    (void)state;
    assert_false(utf8("\xf4\x90\x80\x80"));
    assert_false(utf8("\xf5\x80\x80\x80"));
    assert_false(utf8("\xf8\x88\x80\x80\x80"));
    assert_false(utf8("\xfe"));
    assert_false(utf8("\xff"));
}

static void mqtt_utf8_valid_rejects_surrogates(void **state)
{
    (void)state;
    assert_false(utf8("\xed\xa0\x80")); /* U+D800 */
    assert_false(utf8("\xed\xaf\xbf")); /* U+DBFF */
    assert_false(utf8("\xed\xb0\x80")); /* U+DC00 */
    assert_false(utf8("\xed\xbf\xbf")); /* U+DFFF */
}

static void mqtt_utf8_valid_rejects_nul(void **state)
{
    (void)state;
    assert_false(mqtt_utf8_valid((const uint8_t *)"\0", 1));
    assert_false(mqtt_utf8_valid((const uint8_t *)"ab\0cd", 5));
}

static void mqtt_utf8_valid_rejects_truncated_and_stray_continuation(void **state)
{
    (void)state;
    assert_false(utf8("\x80"));
    assert_false(utf8("a\xbf"));
    assert_false(utf8("\xc3"));
    assert_false(utf8("\xe2\x82"));
    assert_false(utf8("\xf0\x9f\x98"));
    assert_false(utf8("\xe2\x28\xa1"));
    assert_false(utf8("\xc3\x28"));
    assert_false(utf8("\xf0\x9f\x28\x80"));
}

/* Every code point, encoded by hand, is valid exactly when it is not U+0000
 * and not a surrogate. */
static void mqtt_utf8_valid_every_code_point(void **state)
{
    (void)state;
    for (uint32_t cp = 0; cp <= 0x10ffff; cp++) {
        uint8_t b[4];
        size_t n;
        if (cp < 0x80) {
            b[0] = (uint8_t)cp;
            n = 1;
        } else if (cp < 0x800) {
            b[0] = (uint8_t)(0xc0 | cp >> 6);
            b[1] = (uint8_t)(0x80 | (cp & 0x3f));
            n = 2;
        } else if (cp < 0x10000) {
            b[0] = (uint8_t)(0xe0 | cp >> 12);
            b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
            b[2] = (uint8_t)(0x80 | (cp & 0x3f));
            n = 3;
        } else {
            b[0] = (uint8_t)(0xf0 | cp >> 18);
            b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
            b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
            b[3] = (uint8_t)(0x80 | (cp & 0x3f));
            n = 4;
        }
        int want = cp != 0 && !(cp >= 0xd800 && cp <= 0xdfff);
        if (mqtt_utf8_valid(b, n) != want)
            fail_msg("U+%04X: got %d", (unsigned)cp, !want);
    }
}

static void mqtt_topic_filter_valid_accepts(void **state)
{
    (void)state;
    static const char *good[] = {
        "#",   "+",    "/",  "a",  "a/b/c",  "a/+/c",          "a/#",       "+/+", "/#",
        "+/#", "a//b", "/+", "+/", "$SYS/#", "sport/tennis/+", "\xc3\xa9/+"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!filter_ok(good[i]))
            fail_msg("filter \"%s\" rejected", good[i]);
}

static void mqtt_topic_filter_valid_rejects_misplaced_hash(void **state)
{
    (void)state;
    static const char *bad[] = {"a#", "#a", "a/#/b", "#/", "#/a", "a/b#", "##", "a/#/#"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (filter_ok(bad[i]))
            fail_msg("filter \"%s\" accepted", bad[i]);
}

static void mqtt_topic_filter_valid_rejects_misplaced_plus(void **state)
{
    (void)state;
    static const char *bad[] = {"a+", "+a", "a/+b", "a/b+/c", "++", "+/a+"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (filter_ok(bad[i]))
            fail_msg("filter \"%s\" accepted", bad[i]);
}

static void mqtt_topic_filter_valid_rejects_empty_and_bad_utf8(void **state)
{
    (void)state;
    assert_false(mqtt_topic_filter_valid((const uint8_t *)"", 0));
    assert_false(filter_ok("a/\xff"));
    assert_false(mqtt_topic_filter_valid((const uint8_t *)"a\0b", 3));
}

static void mqtt_topic_name_valid_cases(void **state)
{
    (void)state;
    assert_true(name_ok("a/b"));
    assert_true(name_ok("/"));
    assert_true(name_ok("$SYS/x"));
    assert_true(name_ok("caf\xc3\xa9"));
    assert_false(name_ok(""));
    assert_false(name_ok("a/+"));
    assert_false(name_ok("#"));
    assert_false(name_ok("a+b"));
    assert_false(name_ok("\xc0\x80"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* round trips */
        cmocka_unit_test(mqtt_connect_v311_full_round_trip),
        cmocka_unit_test(mqtt_connect_v31_full_round_trip),
        cmocka_unit_test(mqtt_connect_minimal_round_trip),
        cmocka_unit_test(mqtt_connect_username_only_round_trip),
        cmocka_unit_test(mqtt_connect_encoded_level5_is_protocol_version),
        cmocka_unit_test(mqtt_publish_qos0_round_trip),
        cmocka_unit_test(mqtt_publish_qos1_round_trip),
        cmocka_unit_test(mqtt_publish_qos2_dup_round_trip),
        cmocka_unit_test(mqtt_publish_empty_payload_round_trip),
        cmocka_unit_test(mqtt_publish_large_payload_round_trip),
        cmocka_unit_test(mqtt_subscribe_round_trip),
        cmocka_unit_test(mqtt_subscribe_multiple_filters_iterated),
        cmocka_unit_test(mqtt_unsubscribe_round_trip),
        cmocka_unit_test(mqtt_unsubscribe_multiple_filters_iterated),
        cmocka_unit_test(mqtt_ack_round_trip_all_types),
        cmocka_unit_test(mqtt_connack_round_trip),
        cmocka_unit_test(mqtt_suback_round_trip),
        cmocka_unit_test(mqtt_suback_more_codes_than_max_copies_max),
        cmocka_unit_test(mqtt_empty_packets_round_trip),
        cmocka_unit_test(mqtt_varint_encode_boundaries),
        cmocka_unit_test(mqtt_type_name_known_and_unknown),
        cmocka_unit_test(mqtt_sub_next_zeroed_iterator_returns_0),
        /* framer */
        cmocka_unit_test(mqtt_parser_one_byte_at_a_time),
        cmocka_unit_test(mqtt_parser_random_splits),
        cmocka_unit_test(mqtt_parser_several_packets_one_buffer_zero_copy),
        cmocka_unit_test(mqtt_parser_split_body_gathered_and_freed),
        cmocka_unit_test(mqtt_parser_header_split_from_body_zero_copy),
        cmocka_unit_test(mqtt_parser_remaining_length_boundaries),
        cmocka_unit_test(mqtt_parser_five_byte_length_rejected),
        cmocka_unit_test(mqtt_parser_five_byte_length_rejected_byte_by_byte),
        cmocka_unit_test(mqtt_parser_too_large_rejected_before_allocation),
        cmocka_unit_test(mqtt_parser_max_packet_exact_accepted),
        cmocka_unit_test(mqtt_parser_type0_rejected),
        cmocka_unit_test(mqtt_parser_type0_after_valid_packet_rejected),
        cmocka_unit_test(mqtt_parser_empty_body_is_null),
        cmocka_unit_test(mqtt_parser_non_minimal_length_accepted),
        cmocka_unit_test(mqtt_parser_reset_frees_partial_packet),
        /* fixed header */
        cmocka_unit_test(mqtt_check_client_header_flags_per_type),
        cmocka_unit_test(mqtt_check_client_header_connect_flags_rejected),
        cmocka_unit_test(mqtt_check_client_header_pubrel_flags_rejected),
        cmocka_unit_test(mqtt_check_client_header_publish_flags),
        cmocka_unit_test(mqtt_check_client_header_server_types_rejected),
        cmocka_unit_test(mqtt_check_client_header_auth_rejected_before_v5),
        cmocka_unit_test(mqtt_check_client_header_type0_rejected),
        /* CONNECT */
        cmocka_unit_test(mqtt_decode_connect_unknown_protocol_name_rejected),
        cmocka_unit_test(mqtt_decode_connect_protocol_name_case_sensitive),
        cmocka_unit_test(mqtt_decode_connect_mqtt_level5_protocol_version),
        cmocka_unit_test(mqtt_decode_connect_mqtt_level3_protocol_version),
        cmocka_unit_test(mqtt_decode_connect_mqisdp_level4_protocol_version),
        cmocka_unit_test(mqtt_decode_connect_reserved_flag_rejected),
        cmocka_unit_test(mqtt_decode_connect_v31_reserved_flag_rejected),
        cmocka_unit_test(mqtt_decode_connect_will_qos_without_will_flag_rejected),
        cmocka_unit_test(mqtt_decode_connect_will_retain_without_will_flag_rejected),
        cmocka_unit_test(mqtt_decode_connect_will_qos3_rejected),
        cmocka_unit_test(mqtt_decode_connect_password_without_username_rejected),
        cmocka_unit_test(mqtt_decode_connect_v31_password_without_username_rejected),
        cmocka_unit_test(mqtt_decode_connect_client_id_invalid_utf8_rejected),
        cmocka_unit_test(mqtt_decode_connect_client_id_nul_rejected),
        cmocka_unit_test(mqtt_decode_connect_client_id_surrogate_rejected),
        cmocka_unit_test(mqtt_decode_connect_will_topic_invalid_utf8_rejected),
        cmocka_unit_test(mqtt_decode_connect_will_topic_wildcard_rejected),
        cmocka_unit_test(mqtt_decode_connect_will_topic_empty_rejected),
        cmocka_unit_test(mqtt_decode_connect_username_invalid_utf8_rejected),
        cmocka_unit_test(mqtt_decode_connect_binary_password_and_will_payload_accepted),
        cmocka_unit_test(mqtt_decode_connect_empty_client_id_clean0_rejected),
        cmocka_unit_test(mqtt_decode_connect_empty_client_id_clean1_accepted),
        cmocka_unit_test(mqtt_decode_connect_v31_empty_client_id_rejected),
        cmocka_unit_test(mqtt_decode_connect_v31_client_id_24_bytes_rejected),
        cmocka_unit_test(mqtt_decode_connect_v31_client_id_23_bytes_accepted),
        cmocka_unit_test(mqtt_decode_connect_v311_long_client_id_accepted),
        cmocka_unit_test(mqtt_decode_connect_trailing_bytes_rejected),
        cmocka_unit_test(mqtt_decode_connect_malformed_wins_over_client_id),
        cmocka_unit_test(mqtt_decode_connect_every_truncation_rejected),
        cmocka_unit_test(mqtt_decode_connect_truncated_password_rejected),
        cmocka_unit_test(mqtt_decode_connect_missing_will_message_rejected),
        cmocka_unit_test(mqtt_decode_connect_wrong_type_rejected),
        /* PUBLISH */
        cmocka_unit_test(mqtt_decode_publish_qos3_rejected),
        cmocka_unit_test(mqtt_decode_publish_dup_qos0_rejected),
        cmocka_unit_test(mqtt_decode_publish_empty_topic_rejected),
        cmocka_unit_test(mqtt_decode_publish_plus_wildcard_topic_rejected),
        cmocka_unit_test(mqtt_decode_publish_hash_wildcard_topic_rejected),
        cmocka_unit_test(mqtt_decode_publish_topic_invalid_utf8_rejected),
        cmocka_unit_test(mqtt_decode_publish_topic_nul_rejected),
        cmocka_unit_test(mqtt_decode_publish_packet_id_0_rejected),
        cmocka_unit_test(mqtt_decode_publish_truncated_topic_rejected),
        cmocka_unit_test(mqtt_decode_publish_missing_packet_id_rejected),
        cmocka_unit_test(mqtt_decode_publish_qos0_payload_follows_topic),
        cmocka_unit_test(mqtt_decode_publish_empty_payload_accepted),
        /* SUBSCRIBE / UNSUBSCRIBE */
        cmocka_unit_test(mqtt_decode_subscribe_flags_rejected),
        cmocka_unit_test(mqtt_decode_subscribe_packet_id_0_rejected),
        cmocka_unit_test(mqtt_decode_subscribe_truncated_packet_id_rejected),
        cmocka_unit_test(mqtt_decode_subscribe_no_filters_rejected),
        cmocka_unit_test(mqtt_decode_subscribe_options_reserved_bits_rejected),
        cmocka_unit_test(mqtt_decode_subscribe_qos3_rejected),
        cmocka_unit_test(mqtt_decode_subscribe_misplaced_hash_rejected),
        cmocka_unit_test(mqtt_decode_subscribe_misplaced_plus_rejected),
        cmocka_unit_test(mqtt_decode_subscribe_empty_filter_rejected),
        cmocka_unit_test(mqtt_decode_subscribe_filter_invalid_utf8_rejected),
        cmocka_unit_test(mqtt_decode_subscribe_truncated_filter_rejected),
        cmocka_unit_test(mqtt_decode_subscribe_missing_options_rejected),
        cmocka_unit_test(mqtt_decode_subscribe_bad_second_filter_rejected),
        cmocka_unit_test(mqtt_decode_subscribe_too_many_filters_rejected),
        cmocka_unit_test(mqtt_decode_unsubscribe_flags_rejected),
        cmocka_unit_test(mqtt_decode_unsubscribe_no_filters_rejected),
        cmocka_unit_test(mqtt_decode_unsubscribe_packet_id_0_rejected),
        cmocka_unit_test(mqtt_decode_unsubscribe_invalid_filter_rejected),
        cmocka_unit_test(mqtt_decode_unsubscribe_truncated_filter_rejected),
        cmocka_unit_test(mqtt_decode_unsubscribe_options_byte_is_malformed),
        /* acks and empty packets */
        cmocka_unit_test(mqtt_decode_ack_length_not_2_rejected),
        cmocka_unit_test(mqtt_decode_ack_flags_rejected),
        cmocka_unit_test(mqtt_decode_ack_packet_id_0_rejected),
        cmocka_unit_test(mqtt_decode_ack_wrong_type_rejected),
        cmocka_unit_test(mqtt_decode_empty_pingreq_body_rejected),
        cmocka_unit_test(mqtt_decode_empty_pingreq_flags_rejected),
        cmocka_unit_test(mqtt_decode_empty_disconnect_flags_rejected),
        cmocka_unit_test(mqtt_decode_empty_disconnect_body_rejected),
        cmocka_unit_test(mqtt_decode_empty_wrong_type_rejected),
        /* client side */
        cmocka_unit_test(mqtt_decode_connack_length_not_2_rejected),
        cmocka_unit_test(mqtt_decode_connack_flags_rejected),
        cmocka_unit_test(mqtt_decode_connack_reserved_ack_flags_rejected),
        cmocka_unit_test(mqtt_decode_connack_reserved_return_code_rejected),
        cmocka_unit_test(mqtt_decode_connack_session_present_with_error_rejected),
        cmocka_unit_test(mqtt_decode_suback_reserved_code_rejected),
        cmocka_unit_test(mqtt_decode_suback_no_codes_rejected),
        cmocka_unit_test(mqtt_decode_suback_packet_id_0_rejected),
        cmocka_unit_test(mqtt_decode_suback_flags_rejected),
        /* helpers */
        cmocka_unit_test(mqtt_utf8_valid_accepts_well_formed),
        cmocka_unit_test(mqtt_utf8_valid_rejects_overlong),
        cmocka_unit_test(mqtt_utf8_valid_rejects_above_10ffff),
        cmocka_unit_test(mqtt_utf8_valid_rejects_surrogates),
        cmocka_unit_test(mqtt_utf8_valid_rejects_nul),
        cmocka_unit_test(mqtt_utf8_valid_rejects_truncated_and_stray_continuation),
        cmocka_unit_test(mqtt_utf8_valid_every_code_point),
        cmocka_unit_test(mqtt_topic_filter_valid_accepts),
        cmocka_unit_test(mqtt_topic_filter_valid_rejects_misplaced_hash),
        cmocka_unit_test(mqtt_topic_filter_valid_rejects_misplaced_plus),
        cmocka_unit_test(mqtt_topic_filter_valid_rejects_empty_and_bad_utf8),
        cmocka_unit_test(mqtt_topic_name_valid_cases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
