/* test_props.c -- unit tests of the MQTT 5.0 half of the codec
 * (src/mqtt/mqtt_props.c and the 5.0 entry points of src/mqtt/mqtt_codec.c).
 *
 * Properties: every identifier against every place it may or may not sit in
 * (checked against a copy of the table of section 2.2.2.2 kept here, not the
 * codec's), duplicates, value ranges, truncated values, Variable Byte
 * Integers (overflow, non-shortest forms), UTF-8, the Property Length; the
 * iterators (user property order) and the writer.  Packets: 5.0 decoding of
 * each type, one test per rule (exact error code and rule id), round trips
 * of every 5.0 encoder through the decoders, shared subscription filters,
 * reason codes.  The 3.1 / 3.1.1 behaviour is covered by test_codec.c, which
 * is unchanged; a few tests here check that the 5.0 additions left it alone.
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
#include "mqtt_props.h"
#include "mqtt_bb.h"

/* ---- helpers ------------------------------------------------------------ */

/* Properties, by type. */
static void p_byte(bb_t *b, uint8_t id, uint8_t v)
{
    bb_u8(b, id);
    bb_u8(b, v);
}

static void p_u16(bb_t *b, uint8_t id, uint16_t v)
{
    bb_u8(b, id);
    bb_u16(b, v);
}

static void p_u32(bb_t *b, uint8_t id, uint32_t v)
{
    bb_u8(b, id);
    bb_u32(b, v);
}

static void p_varint(bb_t *b, uint8_t id, uint32_t v)
{
    bb_u8(b, id);
    bb_varint(b, v);
}

static void p_str(bb_t *b, uint8_t id, const char *s)
{
    bb_u8(b, id);
    bb_str(b, s);
}

static void p_user(bb_t *b, const char *k, const char *v)
{
    bb_u8(b, MQTT_PROP_USER_PROPERTY);
    bb_str(b, k);
    bb_str(b, v);
}

/* Property Length and block. */
static void bb_props(bb_t *b, const bb_t *props)
{
    bb_varint(b, (uint32_t)props->n);
    bb_raw(b, props->d, props->n);
}

static int parse(uint8_t where, uint8_t from, const bb_t *blk, mqtt_props_t *pr, const char **why)
{
    return mqtt_props_parse(blk->n ? blk->d : NULL, blk->n, where, from, pr, why);
}

static void expect_props(uint8_t where, uint8_t from, const bb_t *blk, int code, const char *rule)
{
    mqtt_props_t pr;
    const char *why = NULL;
    int rc = parse(where, from, blk, &pr, &why);
    if (rc != code)
        fail_msg("where %u: got %d (%s), want %d", where, rc, why ? why : "-", code);
    if (code != MQTT_OK && rule)
        assert_why(why, rule);
}

/* ---- the table of section 2.2.2.2, kept apart from the codec's --------- */

#define P(t) (1u << (t))
#define PW P(MQTT_PROPS_WILL)
#define P_ACKS (P(MQTT_PUBACK) | P(MQTT_PUBREC) | P(MQTT_PUBREL) | P(MQTT_PUBCOMP))

static const struct {
    uint8_t id;
    uint8_t type;
    uint32_t where;
} spec[] = {
    {0x01, MQTT_PT_BYTE, P(MQTT_PUBLISH) | PW},
    {0x02, MQTT_PT_U32, P(MQTT_PUBLISH) | PW},
    {0x03, MQTT_PT_UTF8, P(MQTT_PUBLISH) | PW},
    {0x08, MQTT_PT_UTF8, P(MQTT_PUBLISH) | PW},
    {0x09, MQTT_PT_BINARY, P(MQTT_PUBLISH) | PW},
    {0x0B, MQTT_PT_VARINT, P(MQTT_PUBLISH) | P(MQTT_SUBSCRIBE)},
    {0x11, MQTT_PT_U32, P(MQTT_CONNECT) | P(MQTT_CONNACK) | P(MQTT_DISCONNECT)},
    {0x12, MQTT_PT_UTF8, P(MQTT_CONNACK)},
    {0x13, MQTT_PT_U16, P(MQTT_CONNACK)},
    {0x15, MQTT_PT_UTF8, P(MQTT_CONNECT) | P(MQTT_CONNACK) | P(MQTT_AUTH)},
    {0x16, MQTT_PT_BINARY, P(MQTT_CONNECT) | P(MQTT_CONNACK) | P(MQTT_AUTH)},
    {0x17, MQTT_PT_BYTE, P(MQTT_CONNECT)},
    {0x18, MQTT_PT_U32, PW},
    {0x19, MQTT_PT_BYTE, P(MQTT_CONNECT)},
    {0x1A, MQTT_PT_UTF8, P(MQTT_CONNACK)},
    {0x1C, MQTT_PT_UTF8, P(MQTT_CONNACK) | P(MQTT_DISCONNECT)},
    {0x1F, MQTT_PT_UTF8,
     P(MQTT_CONNACK) | P_ACKS | P(MQTT_SUBACK) | P(MQTT_UNSUBACK) | P(MQTT_DISCONNECT) |
         P(MQTT_AUTH)},
    {0x21, MQTT_PT_U16, P(MQTT_CONNECT) | P(MQTT_CONNACK)},
    {0x22, MQTT_PT_U16, P(MQTT_CONNECT) | P(MQTT_CONNACK)},
    {0x23, MQTT_PT_U16, P(MQTT_PUBLISH)},
    {0x24, MQTT_PT_BYTE, P(MQTT_CONNACK)},
    {0x25, MQTT_PT_BYTE, P(MQTT_CONNACK)},
    {0x26, MQTT_PT_PAIR,
     P(MQTT_CONNECT) | P(MQTT_CONNACK) | P(MQTT_PUBLISH) | PW | P_ACKS | P(MQTT_SUBSCRIBE) |
         P(MQTT_SUBACK) | P(MQTT_UNSUBSCRIBE) | P(MQTT_UNSUBACK) | P(MQTT_DISCONNECT) |
         P(MQTT_AUTH)},
    {0x27, MQTT_PT_U32, P(MQTT_CONNECT) | P(MQTT_CONNACK)},
    {0x28, MQTT_PT_BYTE, P(MQTT_CONNACK)},
    {0x29, MQTT_PT_BYTE, P(MQTT_CONNACK)},
    {0x2A, MQTT_PT_BYTE, P(MQTT_CONNACK)},
};
#define NSPEC (sizeof spec / sizeof spec[0])

/* A valid value of the property's type ("a/b" suits a Response Topic). */
static void put_valid(bb_t *b, uint8_t id, uint8_t type)
{
    switch (type) {
    case MQTT_PT_BYTE:
        p_byte(b, id, 1);
        break;
    case MQTT_PT_U16:
        p_u16(b, id, 7);
        break;
    case MQTT_PT_U32:
        p_u32(b, id, 7);
        break;
    case MQTT_PT_VARINT:
        p_varint(b, id, 7);
        break;
    case MQTT_PT_UTF8:
        p_str(b, id, "a/b");
        break;
    case MQTT_PT_BINARY:
        bb_u8(b, id);
        bb_strn(b, "\x00\xff", 2);
        break;
    default:
        p_user(b, "k", "v");
        break;
    }
}

/* Every identifier in `where`: valid iff the spec table says so. */
static void check_place(uint8_t where)
{
    for (size_t i = 0; i < NSPEC; i++) {
        bb_t b = {0};
        mqtt_props_t pr;
        const char *why = NULL;
        uint8_t id = spec[i].id;
        uint8_t from = where == MQTT_CONNACK || where == MQTT_SUBACK || where == MQTT_UNSUBACK ||
                               (where == MQTT_PUBLISH && id == MQTT_PROP_SUBSCRIPTION_ID)
                           ? MQTT_FROM_SERVER
                           : MQTT_FROM_CLIENT;
        if (id == MQTT_PROP_AUTH_DATA && where == MQTT_CONNECT)
            p_str(&b, MQTT_PROP_AUTH_METHOD, "m"); /* data needs a method */
        put_valid(&b, id, spec[i].type);
        int rc = parse(where, from, &b, &pr, &why);
        if (spec[i].where & P(where)) {
            if (rc != MQTT_OK)
                fail_msg("property 0x%02x in %u refused: %s", id, where, why);
            assert_true(mqtt_props_has(&pr, id));
            assert_int_equal(pr.raw_len, b.n);
            assert_ptr_equal(pr.raw, b.d);
        } else {
            if (rc != MQTT_ERR_MALFORMED)
                fail_msg("property 0x%02x in %u: got %d, want malformed", id, where, rc);
            assert_why(why, "[MQTT5 2.2.2.2]");
            assert_int_equal(pr.bad_id, id);
        }
    }
}

#define PLACE_TEST(name, where)                                                                    \
    static void props_identifiers_in_##name(void **state)                                          \
    {                                                                                              \
        (void)state;                                                                               \
        check_place(where);                                                                        \
    }

PLACE_TEST(connect, MQTT_CONNECT)
PLACE_TEST(connack, MQTT_CONNACK)
PLACE_TEST(publish, MQTT_PUBLISH)
PLACE_TEST(puback, MQTT_PUBACK)
PLACE_TEST(pubrec, MQTT_PUBREC)
PLACE_TEST(pubrel, MQTT_PUBREL)
PLACE_TEST(pubcomp, MQTT_PUBCOMP)
PLACE_TEST(subscribe, MQTT_SUBSCRIBE)
PLACE_TEST(suback, MQTT_SUBACK)
PLACE_TEST(unsubscribe, MQTT_UNSUBSCRIBE)
PLACE_TEST(unsuback, MQTT_UNSUBACK)
PLACE_TEST(pingreq, MQTT_PINGREQ)
PLACE_TEST(pingresp, MQTT_PINGRESP)
PLACE_TEST(disconnect, MQTT_DISCONNECT)
PLACE_TEST(auth, MQTT_AUTH)
PLACE_TEST(will, MQTT_PROPS_WILL)

static void props_type_and_name_table(void **state)
{
    (void)state;
    int known = 0;
    for (unsigned id = 0; id < 256; id++) {
        int want = MQTT_PT_NONE;
        for (size_t i = 0; i < NSPEC; i++)
            if (spec[i].id == id)
                want = spec[i].type;
        assert_int_equal(mqtt_prop_type((uint8_t)id), want);
        if (want != MQTT_PT_NONE) {
            known++;
            assert_string_not_equal(mqtt_prop_name((uint8_t)id), "?");
        } else {
            assert_string_equal(mqtt_prop_name((uint8_t)id), "?");
        }
    }
    assert_int_equal(known, 27);
    assert_string_equal(mqtt_prop_name(MQTT_PROP_TOPIC_ALIAS), "Topic Alias");
}

static void props_unknown_identifiers_malformed(void **state)
{
    (void)state;
    static const uint8_t unknown[] = {0x00, 0x04, 0x05, 0x06, 0x07, 0x0A, 0x0C, 0x10,
                                      0x14, 0x1B, 0x1D, 0x1E, 0x20, 0x2B, 0x7F};
    for (size_t i = 0; i < sizeof unknown; i++) {
        bb_t b = {0};
        p_byte(&b, unknown[i], 0);
        expect_props(MQTT_PUBLISH, MQTT_FROM_CLIENT, &b, MQTT_ERR_MALFORMED,
                     "[MQTT5 2.2.2.2] unknown");
    }
}

static void props_identifier_varint_forms(void **state)
{
    (void)state;
    bb_t b = {0};
    /* 0x81 0x00: 1 in two bytes, not the shortest form. */
    bb_u8(&b, 0x81);
    bb_u8(&b, 0x00);
    bb_u8(&b, 0x00);
    expect_props(MQTT_PUBLISH, MQTT_FROM_CLIENT, &b, MQTT_ERR_MALFORMED, "[MQTT5-1.5.5-1]");
    /* 0x80 0x01 = 128: a shortest form, but no such property. */
    b.n = 0;
    bb_u8(&b, 0x80);
    bb_u8(&b, 0x01);
    bb_u8(&b, 0x00);
    expect_props(MQTT_PUBLISH, MQTT_FROM_CLIENT, &b, MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.2] unknown");
    /* Identifier cut in the middle. */
    b.n = 0;
    bb_u8(&b, 0x80);
    expect_props(MQTT_PUBLISH, MQTT_FROM_CLIENT, &b, MQTT_ERR_MALFORMED,
                 "[MQTT5 2.2.2.2] property identifier truncated");
    /* Five bytes. */
    b.n = 0;
    bb_raw(&b, "\x80\x80\x80\x80\x01", 5);
    expect_props(MQTT_PUBLISH, MQTT_FROM_CLIENT, &b, MQTT_ERR_MALFORMED, "[MQTT5-1.5.5-1]");
}

/* A second occurrence of every property that may appear once. */
static void props_duplicates_protocol_error(void **state)
{
    (void)state;
    for (size_t i = 0; i < NSPEC; i++) {
        uint8_t id = spec[i].id;
        if (id == MQTT_PROP_USER_PROPERTY)
            continue;
        /* Pick a place where it is valid; PUBLISH from a client for the
         * Subscription Identifier would fail for another reason. */
        uint8_t where = 0;
        for (uint8_t w = 1; w <= MQTT_PROPS_WILL && !where; w++)
            if (spec[i].where & P(w))
                where = w;
        if (id == MQTT_PROP_SUBSCRIPTION_ID)
            where = MQTT_SUBSCRIBE;
        bb_t b = {0};
        if (id == MQTT_PROP_AUTH_DATA)
            p_str(&b, MQTT_PROP_AUTH_METHOD, "m");
        put_valid(&b, id, spec[i].type);
        put_valid(&b, id, spec[i].type);
        mqtt_props_t pr;
        const char *why = NULL;
        int rc = parse(where, MQTT_FROM_CLIENT, &b, &pr, &why);
        if (rc != MQTT_ERR_PROTOCOL)
            fail_msg("duplicate 0x%02x in %u: got %d", id, where, rc);
        assert_non_null(strstr(why, "more than once"));
        assert_non_null(strstr(why, mqtt_prop_name(id)));
        assert_int_equal(pr.bad_id, id);
    }
}

static void props_user_property_repeats_in_order(void **state)
{
    (void)state;
    bb_t b = {0};
    p_user(&b, "b", "2");
    p_str(&b, MQTT_PROP_CONTENT_TYPE, "text/plain");
    p_user(&b, "a", "1");
    p_user(&b, "b", "3"); /* same name again: allowed */
    p_user(&b, "", "");
    mqtt_props_t pr;
    const char *why = NULL;
    assert_int_equal(parse(MQTT_PUBLISH, MQTT_FROM_CLIENT, &b, &pr, &why), MQTT_OK);
    assert_int_equal(pr.user_count, 4);
    static const char *const want[][2] = {{"b", "2"}, {"a", "1"}, {"b", "3"}, {"", ""}};
    uint32_t pos = 0;
    mqtt_str_t k, v;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(mqtt_props_user_next(&pr, &pos, &k, &v), 1);
        assert_true(str_eq(k, want[i][0]));
        assert_true(str_eq(v, want[i][1]));
    }
    assert_int_equal(mqtt_props_user_next(&pr, &pos, &k, &v), 0);
    assert_true(str_eq(pr.content_type, "text/plain"));
}

static void props_subscription_identifier_rules(void **state)
{
    (void)state;
    bb_t b = {0};
    mqtt_props_t pr;
    const char *why = NULL;

    /* Several in a PUBLISH from the server, in order. */
    p_varint(&b, MQTT_PROP_SUBSCRIPTION_ID, 5);
    p_varint(&b, MQTT_PROP_SUBSCRIPTION_ID, 268435455);
    p_varint(&b, MQTT_PROP_SUBSCRIPTION_ID, 5);
    assert_int_equal(parse(MQTT_PUBLISH, MQTT_FROM_SERVER, &b, &pr, &why), MQTT_OK);
    assert_int_equal(pr.sub_id_count, 3);
    assert_int_equal(pr.sub_id, 5);
    uint32_t pos = 0, id = 0;
    assert_int_equal(mqtt_props_sub_id_next(&pr, &pos, &id), 1);
    assert_int_equal(id, 5);
    assert_int_equal(mqtt_props_sub_id_next(&pr, &pos, &id), 1);
    assert_int_equal(id, 268435455);
    assert_int_equal(mqtt_props_sub_id_next(&pr, &pos, &id), 1);
    assert_int_equal(id, 5);
    assert_int_equal(mqtt_props_sub_id_next(&pr, &pos, &id), 0);

    /* None in a PUBLISH from a client. */
    b.n = 0;
    p_varint(&b, MQTT_PROP_SUBSCRIPTION_ID, 5);
    expect_props(MQTT_PUBLISH, MQTT_FROM_CLIENT, &b, MQTT_ERR_PROTOCOL, "[MQTT5-3.3.4-6]");
    assert_int_equal(parse(MQTT_SUBSCRIBE, MQTT_FROM_CLIENT, &b, &pr, &why), MQTT_OK);
    assert_int_equal(pr.sub_id, 5);

    /* One in SUBSCRIBE. */
    p_varint(&b, MQTT_PROP_SUBSCRIPTION_ID, 6);
    expect_props(MQTT_SUBSCRIBE, MQTT_FROM_CLIENT, &b, MQTT_ERR_PROTOCOL,
                 "[MQTT5 3.8.2.1.2] Subscription Identifier included more than once");

    /* 0 is a protocol error, wherever. */
    b.n = 0;
    p_varint(&b, MQTT_PROP_SUBSCRIPTION_ID, 0);
    expect_props(MQTT_SUBSCRIBE, MQTT_FROM_CLIENT, &b, MQTT_ERR_PROTOCOL,
                 "[MQTT5 3.8.2.1.2] Subscription Identifier of 0");
    expect_props(MQTT_PUBLISH, MQTT_FROM_SERVER, &b, MQTT_ERR_PROTOCOL,
                 "[MQTT5 3.8.2.1.2] Subscription Identifier of 0");

    /* 268435455 is the largest; a fifth byte is malformed. */
    b.n = 0;
    bb_u8(&b, MQTT_PROP_SUBSCRIPTION_ID);
    bb_raw(&b, "\xff\xff\xff\x7f", 4);
    assert_int_equal(parse(MQTT_SUBSCRIBE, MQTT_FROM_CLIENT, &b, &pr, &why), MQTT_OK);
    assert_int_equal(pr.sub_id, 268435455);
    b.n = 0;
    bb_u8(&b, MQTT_PROP_SUBSCRIPTION_ID);
    bb_raw(&b, "\xff\xff\xff\xff\x01", 5);
    expect_props(MQTT_SUBSCRIBE, MQTT_FROM_CLIENT, &b, MQTT_ERR_MALFORMED, "[MQTT5-1.5.5-1]");
    /* Not the shortest form (5 as 0x85 0x00). */
    b.n = 0;
    bb_u8(&b, MQTT_PROP_SUBSCRIPTION_ID);
    bb_raw(&b, "\x85\x00", 2);
    expect_props(MQTT_SUBSCRIBE, MQTT_FROM_CLIENT, &b, MQTT_ERR_MALFORMED, "[MQTT5-1.5.5-1]");
    /* Cut. */
    b.n = 0;
    bb_u8(&b, MQTT_PROP_SUBSCRIPTION_ID);
    bb_raw(&b, "\xff\xff", 2);
    expect_props(MQTT_SUBSCRIBE, MQTT_FROM_CLIENT, &b, MQTT_ERR_MALFORMED,
                 "[MQTT5 2.2.2.2] property value truncated");
}

/* Byte properties that are 0 or 1, and where to test them. */
static const struct {
    uint8_t id, where;
    const char *rule;
} bools[] = {
    {MQTT_PROP_PAYLOAD_FORMAT, MQTT_PUBLISH, "[MQTT5 3.3.2.3.2]"},
    {MQTT_PROP_PAYLOAD_FORMAT, MQTT_PROPS_WILL, "[MQTT5 3.3.2.3.2]"},
    {MQTT_PROP_REQUEST_PROBLEM_INFO, MQTT_CONNECT, "[MQTT5 3.1.2.11.7]"},
    {MQTT_PROP_REQUEST_RESPONSE_INFO, MQTT_CONNECT, "[MQTT5 3.1.2.11.6]"},
    {MQTT_PROP_MAXIMUM_QOS, MQTT_CONNACK, "[MQTT5 3.2.2.3.4]"},
    {MQTT_PROP_RETAIN_AVAILABLE, MQTT_CONNACK, "[MQTT5 3.2.2.3.5]"},
    {MQTT_PROP_WILDCARD_SUB_AVAILABLE, MQTT_CONNACK, "[MQTT5 3.2.2.3.11]"},
    {MQTT_PROP_SUB_ID_AVAILABLE, MQTT_CONNACK, "[MQTT5 3.2.2.3.12]"},
    {MQTT_PROP_SHARED_SUB_AVAILABLE, MQTT_CONNACK, "[MQTT5 3.2.2.3.13]"},
};

static void props_zero_or_one_bytes(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bools / sizeof bools[0]; i++) {
        for (unsigned v = 0; v < 256; v++) {
            bb_t b = {0};
            p_byte(&b, bools[i].id, (uint8_t)v);
            if (v <= 1) {
                mqtt_props_t pr;
                const char *why = NULL;
                assert_int_equal(parse(bools[i].where, MQTT_FROM_CLIENT, &b, &pr, &why), MQTT_OK);
            } else {
                expect_props(bools[i].where, MQTT_FROM_CLIENT, &b, MQTT_ERR_PROTOCOL,
                             bools[i].rule);
            }
        }
    }
}

static void props_zero_values_protocol_error(void **state)
{
    (void)state;
    bb_t b = {0};
    p_u16(&b, MQTT_PROP_RECEIVE_MAXIMUM, 0);
    expect_props(MQTT_CONNECT, MQTT_FROM_CLIENT, &b, MQTT_ERR_PROTOCOL,
                 "[MQTT5 3.1.2.11.3] Receive Maximum of 0");
    expect_props(MQTT_CONNACK, MQTT_FROM_SERVER, &b, MQTT_ERR_PROTOCOL,
                 "[MQTT5 3.1.2.11.3] Receive Maximum of 0");
    b.n = 0;
    p_u32(&b, MQTT_PROP_MAXIMUM_PACKET_SIZE, 0);
    expect_props(MQTT_CONNECT, MQTT_FROM_CLIENT, &b, MQTT_ERR_PROTOCOL,
                 "[MQTT5 3.1.2.11.4] Maximum Packet Size of 0");
    b.n = 0;
    p_u16(&b, MQTT_PROP_TOPIC_ALIAS, 0);
    expect_props(MQTT_PUBLISH, MQTT_FROM_CLIENT, &b, MQTT_ERR_PROTOCOL,
                 "[MQTT5-3.3.2-8] Topic Alias of 0");
    /* And the smallest and largest allowed values. */
    mqtt_props_t pr;
    const char *why = NULL;
    b.n = 0;
    p_u16(&b, MQTT_PROP_RECEIVE_MAXIMUM, 1);
    p_u32(&b, MQTT_PROP_MAXIMUM_PACKET_SIZE, 0xffffffffu);
    p_u16(&b, MQTT_PROP_TOPIC_ALIAS_MAXIMUM, 0); /* 0 means none: fine */
    assert_int_equal(parse(MQTT_CONNECT, MQTT_FROM_CLIENT, &b, &pr, &why), MQTT_OK);
    assert_int_equal(pr.receive_max, 1);
    assert_int_equal(pr.max_packet_size, 0xffffffffu);
    assert_int_equal(pr.topic_alias_max, 0);
    b.n = 0;
    p_u16(&b, MQTT_PROP_TOPIC_ALIAS, 65535);
    assert_int_equal(parse(MQTT_PUBLISH, MQTT_FROM_CLIENT, &b, &pr, &why), MQTT_OK);
    assert_int_equal(pr.topic_alias, 65535);
}

static void props_response_topic_must_be_topic_name(void **state)
{
    (void)state;
    static const char *const bad[] = {"a/+", "#", "a/#", "+", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bb_t b = {0};
        p_str(&b, MQTT_PROP_RESPONSE_TOPIC, bad[i]);
        expect_props(MQTT_PUBLISH, MQTT_FROM_CLIENT, &b, MQTT_ERR_PROTOCOL, "[MQTT5-3.3.2-14]");
        expect_props(MQTT_PROPS_WILL, MQTT_FROM_CLIENT, &b, MQTT_ERR_PROTOCOL, "[MQTT5-3.3.2-14]");
    }
    bb_t b = {0};
    mqtt_props_t pr;
    const char *why = NULL;
    p_str(&b, MQTT_PROP_RESPONSE_TOPIC, "reply/to/me");
    assert_int_equal(parse(MQTT_PUBLISH, MQTT_FROM_CLIENT, &b, &pr, &why), MQTT_OK);
    assert_true(str_eq(pr.response_topic, "reply/to/me"));
}

static void props_truncated_values_malformed(void **state)
{
    (void)state;
    static const struct {
        const char *bytes;
        size_t n;
        uint8_t where;
    } cases[] = {
        {"\x01", 1, MQTT_PUBLISH},             /* Byte, no value */
        {"\x23\x00", 2, MQTT_PUBLISH},         /* Two Byte, one byte */
        {"\x02\x00\x00\x01", 4, MQTT_PUBLISH}, /* Four Byte, three */
        {"\x0b", 1, MQTT_SUBSCRIBE},           /* VBI, none */
        {"\x0b\x80", 2, MQTT_SUBSCRIBE},       /* VBI, continued */
        {"\x03\x00", 2, MQTT_PUBLISH},         /* string length cut */
        {"\x03\x00\x05"
         "abcd",
         7, MQTT_PUBLISH}, /* string past the end */
        {"\x09\x00\x02"
         "a",
         4, MQTT_PUBLISH}, /* binary past the end */
        {"\x26\x00\x01"
         "k",
         4, MQTT_PUBLISH}, /* pair without value */
        {"\x26\x00\x01"
         "k\x00\x02"
         "v",
         7, MQTT_PUBLISH}, /* pair value cut */
        {"\x26\x00\x05"
         "k",
         4, MQTT_PUBLISH}, /* pair name cut */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bb_t b = {0};
        bb_raw(&b, cases[i].bytes, cases[i].n);
        expect_props(cases[i].where, MQTT_FROM_SERVER, &b, MQTT_ERR_MALFORMED,
                     "[MQTT5 2.2.2.2] property value truncated");
    }
}

static void props_utf8_checked_binary_not(void **state)
{
    (void)state;
    static const char bad[] = "a\xc0\x80"; /* overlong NUL */
    bb_t b = {0};
    bb_u8(&b, MQTT_PROP_CONTENT_TYPE);
    bb_strn(&b, bad, 3);
    expect_props(MQTT_PUBLISH, MQTT_FROM_CLIENT, &b, MQTT_ERR_MALFORMED, "[MQTT5-1.5.4-1]");
    b.n = 0;
    bb_u8(&b, MQTT_PROP_REASON_STRING);
    bb_strn(&b, "x\x00y", 3); /* U+0000 */
    expect_props(MQTT_PUBACK, MQTT_FROM_CLIENT, &b, MQTT_ERR_MALFORMED, "[MQTT5-1.5.4-1]");
    b.n = 0;
    bb_u8(&b, MQTT_PROP_USER_PROPERTY);
    bb_strn(&b, bad, 3);
    bb_str(&b, "v");
    expect_props(MQTT_PUBLISH, MQTT_FROM_CLIENT, &b, MQTT_ERR_MALFORMED, "[MQTT5-1.5.7-1]");
    b.n = 0;
    bb_u8(&b, MQTT_PROP_USER_PROPERTY);
    bb_str(&b, "k");
    bb_strn(&b, "\xed\xa0\x80", 3); /* surrogate */
    expect_props(MQTT_PUBLISH, MQTT_FROM_CLIENT, &b, MQTT_ERR_MALFORMED, "[MQTT5-1.5.7-1]");
    /* Binary data is not UTF-8. */
    mqtt_props_t pr;
    const char *why = NULL;
    b.n = 0;
    bb_u8(&b, MQTT_PROP_CORRELATION_DATA);
    bb_strn(&b, bad, 3);
    assert_int_equal(parse(MQTT_PUBLISH, MQTT_FROM_CLIENT, &b, &pr, &why), MQTT_OK);
    assert_int_equal(pr.correlation_data.len, 3);
}

static void props_read_property_length(void **state)
{
    (void)state;
    mqtt_props_t pr;
    size_t used = 0;
    const char *why = NULL;
    uint8_t buf[300];

    /* Empty block. */
    buf[0] = 0;
    assert_int_equal(mqtt_props_read(buf, 1, MQTT_PUBLISH, MQTT_FROM_CLIENT, &pr, &used, &why),
                     MQTT_OK);
    assert_int_equal(used, 1);
    assert_null(pr.raw);
    assert_int_equal(pr.present, 0);
    /* Missing. */
    assert_int_equal(mqtt_props_read(buf, 0, MQTT_PUBLISH, MQTT_FROM_CLIENT, &pr, &used, &why),
                     MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT5 2.2.2.1] Property Length missing");
    /* Past the end. */
    memcpy(buf, "\x05\x23\x00\x01", 4);
    assert_int_equal(mqtt_props_read(buf, 4, MQTT_PUBLISH, MQTT_FROM_CLIENT, &pr, &used, &why),
                     MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT5 2.2.2.1] Property Length runs past");
    /* Exactly fitting, with bytes after it (the payload) left alone. */
    memcpy(buf, "\x03\x23\x00\x01pay", 7);
    assert_int_equal(mqtt_props_read(buf, 7, MQTT_PUBLISH, MQTT_FROM_CLIENT, &pr, &used, &why),
                     MQTT_OK);
    assert_int_equal(used, 4);
    assert_int_equal(pr.topic_alias, 1);
    /* Not the shortest form, five bytes, cut. */
    memcpy(buf, "\x80\x00", 2);
    assert_int_equal(mqtt_props_read(buf, 2, MQTT_PUBLISH, MQTT_FROM_CLIENT, &pr, &used, &why),
                     MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT5-1.5.5-1]");
    memcpy(buf, "\xff\xff\xff\xff\x01", 5);
    assert_int_equal(mqtt_props_read(buf, 5, MQTT_PUBLISH, MQTT_FROM_CLIENT, &pr, &used, &why),
                     MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT5-1.5.5-1]");
    memcpy(buf, "\xff\xff", 2);
    assert_int_equal(mqtt_props_read(buf, 2, MQTT_PUBLISH, MQTT_FROM_CLIENT, &pr, &used, &why),
                     MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT5 2.2.2.1] Property Length missing or truncated");
    /* A two-byte length: 128 bytes of user properties. */
    buf[0] = 0x80;
    buf[1] = 0x01;
    for (int i = 0; i < 128; i += 8)
        memcpy(buf + 2 + i, "\x26\x00\x02kk\x00\x01v", 8);
    assert_int_equal(mqtt_props_read(buf, 130, MQTT_PUBLISH, MQTT_FROM_CLIENT, &pr, &used, &why),
                     MQTT_OK);
    assert_int_equal(used, 130);
    assert_int_equal(pr.user_count, 16);
}

static void props_auth_data_needs_method_in_connect(void **state)
{
    (void)state;
    bb_t b = {0};
    mqtt_props_t pr;
    const char *why = NULL;
    bb_u8(&b, MQTT_PROP_AUTH_DATA);
    bb_strn(&b, "\x01\x02", 2);
    expect_props(MQTT_CONNECT, MQTT_FROM_CLIENT, &b, MQTT_ERR_PROTOCOL, "[MQTT5 3.1.2.11.10]");
    assert_int_equal(parse(MQTT_CONNECT, MQTT_FROM_CLIENT, &b, &pr, &why), MQTT_ERR_PROTOCOL);
    assert_int_equal(pr.bad_id, MQTT_PROP_AUTH_DATA);
    /* Method after the data is fine: order carries no meaning. */
    p_str(&b, MQTT_PROP_AUTH_METHOD, "SCRAM-SHA-1");
    assert_int_equal(parse(MQTT_CONNECT, MQTT_FROM_CLIENT, &b, &pr, &why), MQTT_OK);
    assert_true(str_eq(pr.auth_method, "SCRAM-SHA-1"));
    assert_int_equal(pr.auth_data.len, 2);
}

static void props_session_expiry_in_disconnect_by_sender(void **state)
{
    (void)state;
    bb_t b = {0};
    mqtt_props_t pr;
    const char *why = NULL;
    p_u32(&b, MQTT_PROP_SESSION_EXPIRY, 30);
    assert_int_equal(parse(MQTT_DISCONNECT, MQTT_FROM_CLIENT, &b, &pr, &why), MQTT_OK);
    assert_int_equal(pr.session_expiry, 30);
    expect_props(MQTT_DISCONNECT, MQTT_FROM_SERVER, &b, MQTT_ERR_PROTOCOL, "[MQTT5-3.14.2-2]");
}

static void props_defaults_and_fields(void **state)
{
    (void)state;
    mqtt_props_t pr;
    const char *why = NULL;
    assert_int_equal(mqtt_props_parse(NULL, 0, MQTT_CONNACK, MQTT_FROM_SERVER, &pr, &why), MQTT_OK);
    assert_int_equal(pr.present, 0);
    assert_int_equal(pr.receive_max, 65535);
    assert_int_equal(pr.max_qos, 2);
    assert_int_equal(pr.request_problem_info, 1);
    assert_int_equal(pr.request_response_info, 0);
    assert_int_equal(pr.retain_available, 1);
    assert_int_equal(pr.wildcard_sub_available, 1);
    assert_int_equal(pr.sub_id_available, 1);
    assert_int_equal(pr.shared_sub_available, 1);
    assert_int_equal(pr.max_packet_size, 0);
    assert_int_equal(pr.topic_alias_max, 0);

    /* Every CONNACK property into its field. */
    bb_t b = {0};
    p_u32(&b, MQTT_PROP_SESSION_EXPIRY, 3600);
    p_u16(&b, MQTT_PROP_RECEIVE_MAXIMUM, 20);
    p_byte(&b, MQTT_PROP_MAXIMUM_QOS, 1);
    p_byte(&b, MQTT_PROP_RETAIN_AVAILABLE, 0);
    p_u32(&b, MQTT_PROP_MAXIMUM_PACKET_SIZE, 1024);
    p_str(&b, MQTT_PROP_ASSIGNED_CLIENT_ID, "auto-1");
    p_u16(&b, MQTT_PROP_TOPIC_ALIAS_MAXIMUM, 10);
    p_str(&b, MQTT_PROP_REASON_STRING, "ok");
    p_user(&b, "k", "v");
    p_byte(&b, MQTT_PROP_WILDCARD_SUB_AVAILABLE, 0);
    p_byte(&b, MQTT_PROP_SUB_ID_AVAILABLE, 0);
    p_byte(&b, MQTT_PROP_SHARED_SUB_AVAILABLE, 0);
    p_u16(&b, MQTT_PROP_SERVER_KEEP_ALIVE, 30);
    p_str(&b, MQTT_PROP_RESPONSE_INFO, "resp/");
    p_str(&b, MQTT_PROP_SERVER_REFERENCE, "other:1883");
    p_str(&b, MQTT_PROP_AUTH_METHOD, "m");
    bb_u8(&b, MQTT_PROP_AUTH_DATA);
    bb_strn(&b, "\x00", 1);
    assert_int_equal(parse(MQTT_CONNACK, MQTT_FROM_SERVER, &b, &pr, &why), MQTT_OK);
    assert_int_equal(pr.session_expiry, 3600);
    assert_int_equal(pr.receive_max, 20);
    assert_int_equal(pr.max_qos, 1);
    assert_int_equal(pr.retain_available, 0);
    assert_int_equal(pr.max_packet_size, 1024);
    assert_true(str_eq(pr.assigned_client_id, "auto-1"));
    assert_int_equal(pr.topic_alias_max, 10);
    assert_true(str_eq(pr.reason_string, "ok"));
    assert_int_equal(pr.user_count, 1);
    assert_int_equal(pr.wildcard_sub_available, 0);
    assert_int_equal(pr.sub_id_available, 0);
    assert_int_equal(pr.shared_sub_available, 0);
    assert_int_equal(pr.server_keep_alive, 30);
    assert_true(str_eq(pr.response_info, "resp/"));
    assert_true(str_eq(pr.server_reference, "other:1883"));
    assert_true(str_eq(pr.auth_method, "m"));
    assert_int_equal(pr.auth_data.len, 1);

    /* Every Will property. */
    b.n = 0;
    p_u32(&b, MQTT_PROP_WILL_DELAY, 9);
    p_byte(&b, MQTT_PROP_PAYLOAD_FORMAT, 1);
    p_u32(&b, MQTT_PROP_MESSAGE_EXPIRY, 60);
    p_str(&b, MQTT_PROP_CONTENT_TYPE, "application/json");
    p_str(&b, MQTT_PROP_RESPONSE_TOPIC, "r");
    bb_u8(&b, MQTT_PROP_CORRELATION_DATA);
    bb_strn(&b, "id", 2);
    assert_int_equal(parse(MQTT_PROPS_WILL, MQTT_FROM_CLIENT, &b, &pr, &why), MQTT_OK);
    assert_int_equal(pr.will_delay, 9);
    assert_int_equal(pr.payload_format, 1);
    assert_int_equal(pr.message_expiry, 60);
    assert_true(str_eq(pr.content_type, "application/json"));
    assert_true(str_eq(pr.response_topic, "r"));
    assert_true(str_eq(pr.correlation_data, "id"));

    /* CONNECT's own. */
    b.n = 0;
    p_byte(&b, MQTT_PROP_REQUEST_PROBLEM_INFO, 0);
    p_byte(&b, MQTT_PROP_REQUEST_RESPONSE_INFO, 1);
    assert_int_equal(parse(MQTT_CONNECT, MQTT_FROM_CLIENT, &b, &pr, &why), MQTT_OK);
    assert_int_equal(pr.request_problem_info, 0);
    assert_int_equal(pr.request_response_info, 1);
    assert_int_equal(pr.bad_id, 0);
}

static void props_iterator_walks_all_in_order(void **state)
{
    (void)state;
    bb_t b = {0};
    p_byte(&b, MQTT_PROP_PAYLOAD_FORMAT, 1);
    p_user(&b, "a", "1");
    p_u16(&b, MQTT_PROP_TOPIC_ALIAS, 3);
    p_u32(&b, MQTT_PROP_MESSAGE_EXPIRY, 70000);
    p_varint(&b, MQTT_PROP_SUBSCRIPTION_ID, 300);
    p_str(&b, MQTT_PROP_CONTENT_TYPE, "ct");
    mqtt_props_t pr;
    const char *why = NULL;
    assert_int_equal(parse(MQTT_PUBLISH, MQTT_FROM_SERVER, &b, &pr, &why), MQTT_OK);
    static const uint8_t ids[] = {0x01, 0x26, 0x23, 0x02, 0x0B, 0x03};
    static const uint32_t vals[] = {1, 0, 3, 70000, 300, 0};
    uint32_t pos = 0, wire = 0;
    mqtt_prop_t p;
    for (size_t i = 0; i < sizeof ids; i++) {
        assert_int_equal(mqtt_props_next(&pr, &pos, &p), 1);
        assert_int_equal(p.id, ids[i]);
        assert_int_equal(p.value, vals[i]);
        assert_ptr_equal(p.wire, b.d + wire);
        wire += p.wire_len;
    }
    assert_int_equal(wire, b.n);
    assert_int_equal(mqtt_props_next(&pr, &pos, &p), 0);
    /* An empty view iterates nothing. */
    mqtt_props_t empty;
    mqtt_props_init(&empty);
    pos = 0;
    assert_int_equal(mqtt_props_next(&empty, &pos, &p), 0);
}

static void props_pingreq_and_unknown_places_take_nothing(void **state)
{
    (void)state;
    bb_t b = {0};
    p_user(&b, "k", "v");
    expect_props(MQTT_PINGREQ, MQTT_FROM_CLIENT, &b, MQTT_ERR_MALFORMED,
                 "[MQTT5 2.2.2.2] PINGREQ has no properties");
    expect_props(0, MQTT_FROM_CLIENT, &b, MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.2]");
    expect_props(200, MQTT_FROM_CLIENT, &b, MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.2]");
    b.n = 0;
    expect_props(MQTT_PINGREQ, MQTT_FROM_CLIENT, &b, MQTT_OK, NULL);
}

static void varint_decode_cases(void **state)
{
    (void)state;
    static const struct {
        const char *b;
        size_t n;
        int rc;
        uint32_t v;
    } cases[] = {
        {"\x00", 1, 1, 0},
        {"\x7f", 1, 1, 127},
        {"\x80\x01", 2, 2, 128},
        {"\xff\x7f", 2, 2, 16383},
        {"\x80\x80\x01", 3, 3, 16384},
        {"\xff\xff\x7f", 3, 3, 2097151},
        {"\x80\x80\x80\x01", 4, 4, 2097152},
        {"\xff\xff\xff\x7f", 4, 4, 268435455},
        {"\x80\x00", 2, MQTT_ERR_MALFORMED, 0},
        {"\xff\x80\x00", 3, MQTT_ERR_MALFORMED, 0},
        {"\xff\xff\xff\x80\x00", 5, MQTT_ERR_MALFORMED, 0},
        {"\xff\xff\xff\xff\x7f", 5, MQTT_ERR_MALFORMED, 0},
        {"\x80", 1, 0, 0},
        {"\xff\xff\xff", 3, 0, 0},
        {"", 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint32_t v = 0xdeadbeef;
        int rc = mqtt_decode_varint((const uint8_t *)cases[i].b, cases[i].n, &v);
        if (rc != cases[i].rc)
            fail_msg("case %zu: got %d want %d", i, rc, cases[i].rc);
        if (rc > 0) {
            assert_int_equal(v, cases[i].v);
            uint8_t enc[4];
            assert_int_equal(mqtt_encode_varint(enc, v), (size_t)rc);
            assert_memory_equal(enc, cases[i].b, (size_t)rc);
        }
    }
}

/* ---- writer ------------------------------------------------------------ */

/* Write the same properties into w. */
static void write_sample(mqtt_pw_t *w)
{
    assert_int_equal(mqtt_pw_int(w, MQTT_PROP_PAYLOAD_FORMAT, 1), 0);
    assert_int_equal(mqtt_pw_int(w, MQTT_PROP_MESSAGE_EXPIRY, 0x01020304), 0);
    assert_int_equal(mqtt_pw_int(w, MQTT_PROP_TOPIC_ALIAS, 0x0506), 0);
    assert_int_equal(mqtt_pw_int(w, MQTT_PROP_SUBSCRIPTION_ID, 16384), 0);
    assert_int_equal(mqtt_pw_str(w, MQTT_PROP_CONTENT_TYPE, "ct", 2), 0);
    assert_int_equal(mqtt_pw_str(w, MQTT_PROP_CORRELATION_DATA, "\x00\x01", 2), 0);
    assert_int_equal(mqtt_pw_user(w, "k", 1, "v", 1), 0);
}

static void writer_measure_then_write(void **state)
{
    (void)state;
    mqtt_pw_t w;
    mqtt_pw_init(&w, NULL, 0);
    write_sample(&w);
    assert_int_equal(mqtt_pw_error(&w), 0);
    size_t n = mqtt_pw_len(&w);
    static const uint8_t want[] = {0x01, 0x01,                   /* payload format 1 */
                                   0x02, 0x01, 0x02, 0x03, 0x04, /* message expiry */
                                   0x23, 0x05, 0x06,             /* topic alias */
                                   0x0b, 0x80, 0x80, 0x01,       /* subscription id 16384 */
                                   0x03, 0x00, 0x02, 'c',  't',  /* content type */
                                   0x09, 0x00, 0x02, 0x00, 0x01, /* correlation data */
                                   0x26, 0x00, 0x01, 'k',  0x00, 0x01, 'v'};
    assert_int_equal(n, sizeof want);
    uint8_t buf[64];
    mqtt_pw_init(&w, buf, n);
    write_sample(&w);
    assert_int_equal(mqtt_pw_error(&w), 0);
    assert_int_equal(mqtt_pw_len(&w), n);
    assert_memory_equal(buf, want, n);
    /* It parses back (as a PUBLISH from the server: it has a sub id). */
    mqtt_props_t pr;
    const char *why = NULL;
    assert_int_equal(mqtt_props_parse(buf, n, MQTT_PUBLISH, MQTT_FROM_SERVER, &pr, &why), MQTT_OK);
    assert_int_equal(pr.message_expiry, 0x01020304);
    assert_int_equal(pr.topic_alias, 0x0506);
    assert_int_equal(pr.sub_id, 16384);
}

static void writer_rejects_bad_calls(void **state)
{
    (void)state;
    mqtt_pw_t w;
    uint8_t buf[16];
    static char big[70000];

    mqtt_pw_init(&w, NULL, 0);
    assert_int_equal(mqtt_pw_int(&w, MQTT_PROP_CONTENT_TYPE, 1), -1); /* a string */
    assert_int_equal(mqtt_pw_error(&w), -1);
    assert_int_equal(mqtt_pw_len(&w), 0);
    mqtt_pw_init(&w, NULL, 0);
    assert_int_equal(mqtt_pw_int(&w, 0x04, 1), -1); /* unknown */
    mqtt_pw_init(&w, NULL, 0);
    assert_int_equal(mqtt_pw_int(&w, MQTT_PROP_USER_PROPERTY, 1), -1);
    mqtt_pw_init(&w, NULL, 0);
    assert_int_equal(mqtt_pw_int(&w, MQTT_PROP_PAYLOAD_FORMAT, 256), -1);
    mqtt_pw_init(&w, NULL, 0);
    assert_int_equal(mqtt_pw_int(&w, MQTT_PROP_TOPIC_ALIAS, 65536), -1);
    mqtt_pw_init(&w, NULL, 0);
    assert_int_equal(mqtt_pw_int(&w, MQTT_PROP_SUBSCRIPTION_ID, 268435456), -1);
    mqtt_pw_init(&w, NULL, 0);
    assert_int_equal(mqtt_pw_str(&w, MQTT_PROP_TOPIC_ALIAS, "x", 1), -1);
    mqtt_pw_init(&w, NULL, 0);
    assert_int_equal(mqtt_pw_str(&w, MQTT_PROP_CONTENT_TYPE, big, 65536), -1);
    mqtt_pw_init(&w, NULL, 0);
    assert_int_equal(mqtt_pw_str(&w, MQTT_PROP_CONTENT_TYPE, big, 65535), 0);
    assert_int_equal(mqtt_pw_len(&w), 65538);
    mqtt_pw_init(&w, NULL, 0);
    assert_int_equal(mqtt_pw_user(&w, big, 65536, "v", 1), -1);
    /* Capacity: a failed call writes nothing, and the error sticks. */
    mqtt_pw_init(&w, buf, 5);
    assert_int_equal(mqtt_pw_int(&w, MQTT_PROP_MESSAGE_EXPIRY, 1), 0);
    assert_int_equal(mqtt_pw_int(&w, MQTT_PROP_PAYLOAD_FORMAT, 1), -1);
    assert_int_equal(mqtt_pw_len(&w), 5);
    assert_int_equal(mqtt_pw_error(&w), -1);
    mqtt_pw_init(&w, buf, 16);
    mqtt_pw_int(&w, 0x04, 1);
    assert_int_equal(mqtt_pw_int(&w, MQTT_PROP_PAYLOAD_FORMAT, 1), -1);
    assert_int_equal(mqtt_pw_len(&w), 0);
}

static void writer_copy_filters_and_keeps_order(void **state)
{
    (void)state;
    bb_t b = {0};
    p_user(&b, "first", "1");
    p_u16(&b, MQTT_PROP_TOPIC_ALIAS, 4);
    p_byte(&b, MQTT_PROP_PAYLOAD_FORMAT, 1);
    p_user(&b, "second", "2");
    p_u32(&b, MQTT_PROP_MESSAGE_EXPIRY, 100);
    p_user(&b, "third", "3");
    mqtt_props_t in;
    const char *why = NULL;
    assert_int_equal(parse(MQTT_PUBLISH, MQTT_FROM_CLIENT, &b, &in, &why), MQTT_OK);

    /* All of it: the same bytes. */
    uint8_t buf[128];
    mqtt_pw_t w;
    mqtt_pw_init(&w, buf, sizeof buf);
    assert_int_equal(mqtt_pw_copy(&w, &in, 0), 0);
    assert_int_equal(mqtt_pw_len(&w), b.n);
    assert_memory_equal(buf, b.d, b.n);

    /* Forwarding: no Topic Alias, an adjusted expiry, our sub id. */
    uint64_t skip = MQTT_PROP_BIT(MQTT_PROP_TOPIC_ALIAS) | MQTT_PROP_BIT(MQTT_PROP_MESSAGE_EXPIRY);
    mqtt_pw_init(&w, NULL, 0);
    mqtt_pw_copy(&w, &in, skip);
    mqtt_pw_int(&w, MQTT_PROP_MESSAGE_EXPIRY, 40);
    mqtt_pw_int(&w, MQTT_PROP_SUBSCRIPTION_ID, 9);
    size_t n = mqtt_pw_len(&w);
    mqtt_pw_init(&w, buf, n);
    assert_int_equal(mqtt_pw_copy(&w, &in, skip), 0);
    mqtt_pw_int(&w, MQTT_PROP_MESSAGE_EXPIRY, 40);
    mqtt_pw_int(&w, MQTT_PROP_SUBSCRIPTION_ID, 9);
    assert_int_equal(mqtt_pw_error(&w), 0);
    assert_int_equal(mqtt_pw_len(&w), n);
    mqtt_props_t out;
    assert_int_equal(mqtt_props_parse(buf, n, MQTT_PUBLISH, MQTT_FROM_SERVER, &out, &why), MQTT_OK);
    assert_false(mqtt_props_has(&out, MQTT_PROP_TOPIC_ALIAS));
    assert_int_equal(out.message_expiry, 40);
    assert_int_equal(out.sub_id, 9);
    assert_int_equal(out.payload_format, 1);
    uint32_t pos = 0;
    mqtt_str_t k, v;
    static const char *const names[] = {"first", "second", "third"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(mqtt_props_user_next(&out, &pos, &k, &v), 1);
        assert_true(str_eq(k, names[i]));
    }
    assert_int_equal(mqtt_props_user_next(&out, &pos, &k, &v), 0);

    /* No room. */
    mqtt_pw_init(&w, buf, 3);
    assert_int_equal(mqtt_pw_copy(&w, &in, 0), -1);
    assert_int_equal(mqtt_pw_error(&w), -1);
}

/* ---- reason codes ------------------------------------------------------ */

static int count_valid(uint8_t type, uint8_t from)
{
    int n = 0;
    for (unsigned rc = 0; rc < 256; rc++) {
        if (mqtt_reason_valid(type, from, (uint8_t)rc)) {
            n++;
            assert_string_not_equal(mqtt_reason_name((uint8_t)rc), "?");
        }
    }
    return n;
}

static void reason_code_tables(void **state)
{
    (void)state;
    assert_int_equal(count_valid(MQTT_CONNACK, MQTT_FROM_SERVER), 22);
    assert_int_equal(count_valid(MQTT_PUBACK, MQTT_FROM_CLIENT), 9);
    assert_int_equal(count_valid(MQTT_PUBREC, MQTT_FROM_SERVER), 9);
    assert_int_equal(count_valid(MQTT_PUBREL, MQTT_FROM_CLIENT), 2);
    assert_int_equal(count_valid(MQTT_PUBCOMP, MQTT_FROM_CLIENT), 2);
    assert_int_equal(count_valid(MQTT_SUBACK, MQTT_FROM_SERVER), 12);
    assert_int_equal(count_valid(MQTT_UNSUBACK, MQTT_FROM_SERVER), 7);
    assert_int_equal(count_valid(MQTT_DISCONNECT, MQTT_FROM_CLIENT), 14);
    assert_int_equal(count_valid(MQTT_DISCONNECT, MQTT_FROM_SERVER), 28);
    assert_int_equal(count_valid(MQTT_AUTH, MQTT_FROM_CLIENT), 3);
    assert_int_equal(count_valid(MQTT_PUBLISH, MQTT_FROM_CLIENT), 0);
    /* Spot checks. */
    assert_true(mqtt_reason_valid(MQTT_PUBACK, 0, MQTT_RC_NO_MATCHING_SUBSCRIBERS));
    assert_false(mqtt_reason_valid(MQTT_PUBACK, 0, MQTT_RC_PACKET_ID_NOT_FOUND));
    assert_true(mqtt_reason_valid(MQTT_PUBREL, 0, MQTT_RC_PACKET_ID_NOT_FOUND));
    assert_false(mqtt_reason_valid(MQTT_PUBREL, 0, MQTT_RC_NO_MATCHING_SUBSCRIBERS));
    assert_true(mqtt_reason_valid(MQTT_UNSUBACK, 1, MQTT_RC_NO_SUBSCRIPTION_EXISTED));
    assert_false(mqtt_reason_valid(MQTT_SUBACK, 1, MQTT_RC_NO_SUBSCRIPTION_EXISTED));
    assert_true(mqtt_reason_valid(MQTT_SUBACK, 1, MQTT_RC_GRANTED_QOS_2));
    assert_false(mqtt_reason_valid(MQTT_SUBACK, 1, 0x03));
    assert_true(mqtt_reason_valid(MQTT_DISCONNECT, MQTT_FROM_CLIENT, MQTT_RC_DISCONNECT_WITH_WILL));
    assert_false(
        mqtt_reason_valid(MQTT_DISCONNECT, MQTT_FROM_SERVER, MQTT_RC_DISCONNECT_WITH_WILL));
    assert_true(mqtt_reason_valid(MQTT_DISCONNECT, MQTT_FROM_SERVER, MQTT_RC_SESSION_TAKEN_OVER));
    assert_false(mqtt_reason_valid(MQTT_DISCONNECT, MQTT_FROM_CLIENT, MQTT_RC_SESSION_TAKEN_OVER));
    assert_false(mqtt_reason_valid(MQTT_CONNACK, 1, MQTT_RC_BAD_AUTHENTICATION_METHOD + 1));
    assert_true(mqtt_reason_valid(MQTT_CONNACK, 1, MQTT_RC_BAD_AUTHENTICATION_METHOD));
}

static void reason_code_names(void **state)
{
    (void)state;
    assert_string_equal(mqtt_reason_name(0x00), "Success");
    assert_string_equal(mqtt_reason_name(0x97), "Quota exceeded");
    assert_string_equal(mqtt_reason_name(0x81), "Malformed Packet");
    assert_string_equal(mqtt_reason_name(0xA2), "Wildcard Subscriptions not supported");
    assert_string_equal(mqtt_reason_name(0x03), "?");
    assert_string_equal(mqtt_reason_name(0xA3), "?");
    assert_string_equal(mqtt_reason_name(0xff), "?");
    assert_string_equal(mqtt_reason_name_for(MQTT_DISCONNECT, 0), "Normal disconnection");
    assert_string_equal(mqtt_reason_name_for(MQTT_SUBACK, 0), "Granted QoS 0");
    assert_string_equal(mqtt_reason_name_for(MQTT_PUBACK, 0), "Success");
    assert_string_equal(mqtt_reason_name_for(MQTT_SUBACK, 0x80), "Unspecified error");
    int named = 0;
    for (unsigned rc = 0; rc < 256; rc++)
        named += strcmp(mqtt_reason_name((uint8_t)rc), "?") != 0;
    assert_int_equal(named, 43);
}

static void err_reason_mapping(void **state)
{
    (void)state;
    assert_int_equal(mqtt_err_reason(MQTT_ERR_MALFORMED), 0x81);
    assert_int_equal(mqtt_err_reason(MQTT_ERR_PROTOCOL), 0x82);
    assert_int_equal(mqtt_err_reason(MQTT_ERR_TOO_LARGE), 0x95);
    assert_int_equal(mqtt_err_reason(MQTT_ERR_PROTOCOL_VERSION), 0x84);
    assert_int_equal(mqtt_err_reason(MQTT_ERR_CLIENT_ID), 0x85);
    assert_int_equal(mqtt_err_reason(-99), 0x80);
}

/* ---- CONNECT 5.0 ----------------------------------------------------------- */

#define CF_CLEAN 0x02
#define CF_WILL 0x04
#define CF_WQOS1 0x08
#define CF_WQOS2 0x10
#define CF_WRETAIN 0x20
#define CF_PASS 0x40
#define CF_USER 0x80

/* Variable header of a CONNECT up to its properties (level 5 adds them). */
static void connect_vh(bb_t *b, const char *name, uint8_t level, uint8_t flags, const bb_t *props)
{
    bb_str(b, name);
    bb_u8(b, level);
    bb_u8(b, flags);
    bb_u16(b, 60);
    if (props)
        bb_props(b, props);
}

static int decode_connect5(const bb_t *b, mqtt_connect_t *c, const char **why)
{
    mqtt_raw_t r = raw_of(0x10, b);
    return mqtt_decode_connect_v5ok(&r, c, 1, why);
}

static void expect_connect5(const bb_t *b, int code, const char *rule)
{
    mqtt_connect_t c;
    const char *why = NULL;
    int rc = decode_connect5(b, &c, &why);
    if (rc != code)
        fail_msg("got %d (%s), want %d", rc, why ? why : "-", code);
    if (code != MQTT_OK && rule)
        assert_why(why, rule);
}

/* A full 5.0 CONNECT. */
static void full_connect5(bb_t *b)
{
    bb_t props = {0}, will = {0};
    p_u32(&props, MQTT_PROP_SESSION_EXPIRY, 120);
    p_u16(&props, MQTT_PROP_RECEIVE_MAXIMUM, 10);
    p_u32(&props, MQTT_PROP_MAXIMUM_PACKET_SIZE, 4096);
    p_u16(&props, MQTT_PROP_TOPIC_ALIAS_MAXIMUM, 5);
    p_byte(&props, MQTT_PROP_REQUEST_RESPONSE_INFO, 1);
    p_byte(&props, MQTT_PROP_REQUEST_PROBLEM_INFO, 0);
    p_user(&props, "a", "b");
    p_str(&props, MQTT_PROP_AUTH_METHOD, "m");
    p_str(&props, MQTT_PROP_AUTH_DATA, "d");
    p_u32(&will, MQTT_PROP_WILL_DELAY, 5);
    p_byte(&will, MQTT_PROP_PAYLOAD_FORMAT, 1);
    p_user(&will, "w", "x");
    connect_vh(b, "MQTT", 5, CF_CLEAN | CF_WILL | CF_WQOS1 | CF_WRETAIN | CF_USER | CF_PASS,
               &props);
    bb_str(b, "c1");
    bb_props(b, &will);
    bb_str(b, "w/t");
    bb_str(b, "bye");
    bb_str(b, "u");
    bb_str(b, "p");
}

static void connect_v5_refused_without_opt_in(void **state)
{
    (void)state;
    bb_t b = {0};
    full_connect5(&b);
    mqtt_raw_t r = raw_of(0x10, &b);
    mqtt_connect_t c;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_connect(&r, &c, &why), MQTT_ERR_PROTOCOL_VERSION);
    assert_why(why, "[MQTT-3.1.2-2]");
    why = NULL;
    assert_int_equal(mqtt_decode_connect_v5ok(&r, &c, 0, &why), MQTT_ERR_PROTOCOL_VERSION);
    assert_why(why, "[MQTT-3.1.2-2]");
    assert_int_equal(mqtt_decode_connect_v5ok(&r, &c, 1, &why), MQTT_OK);
}

static void connect_v5_full_decodes(void **state)
{
    (void)state;
    bb_t b = {0};
    full_connect5(&b);
    mqtt_connect_t c;
    const char *why = NULL;
    assert_int_equal(decode_connect5(&b, &c, &why), MQTT_OK);
    assert_int_equal(c.proto, MQTT_PROTO_V5);
    assert_int_equal(c.clean_session, 1);
    assert_int_equal(c.keepalive, 60);
    assert_int_equal(c.will_flag, 1);
    assert_int_equal(c.will_qos, 1);
    assert_int_equal(c.will_retain, 1);
    assert_true(str_eq(c.client_id, "c1"));
    assert_true(str_eq(c.will_topic, "w/t"));
    assert_true(str_eq(c.will_payload, "bye"));
    assert_true(str_eq(c.username, "u"));
    assert_true(str_eq(c.password, "p"));
    assert_int_equal(c.props.session_expiry, 120);
    assert_int_equal(c.props.receive_max, 10);
    assert_int_equal(c.props.max_packet_size, 4096);
    assert_int_equal(c.props.topic_alias_max, 5);
    assert_int_equal(c.props.request_response_info, 1);
    assert_int_equal(c.props.request_problem_info, 0);
    assert_int_equal(c.props.user_count, 1);
    assert_true(str_eq(c.props.auth_method, "m"));
    assert_true(str_eq(c.props.auth_data, "d"));
    assert_int_equal(c.will_props.will_delay, 5);
    assert_int_equal(c.will_props.payload_format, 1);
    assert_int_equal(c.will_props.user_count, 1);
    uint32_t pos = 0;
    mqtt_str_t k, v;
    assert_int_equal(mqtt_props_user_next(&c.will_props, &pos, &k, &v), 1);
    assert_true(str_eq(k, "w") && str_eq(v, "x"));
}

static void connect_v5_empty_client_id_any_clean_start(void **state)
{
    (void)state;
    bb_t none = {0};
    for (int clean = 0; clean <= 1; clean++) {
        bb_t b = {0};
        connect_vh(&b, "MQTT", 5, clean ? CF_CLEAN : 0, &none);
        bb_str(&b, "");
        mqtt_connect_t c;
        const char *why = NULL;
        assert_int_equal(decode_connect5(&b, &c, &why), MQTT_OK);
        assert_int_equal(c.client_id.len, 0);
        assert_int_equal(c.clean_session, clean);
    }
    /* 3.1.1 keeps its rule, through either entry point. */
    bb_t b = {0};
    connect_vh(&b, "MQTT", 4, 0, NULL);
    bb_str(&b, "");
    expect_connect5(&b, MQTT_ERR_CLIENT_ID, "[MQTT-3.1.3-8]");
}

static void connect_v5_password_without_user_name(void **state)
{
    (void)state;
    bb_t none = {0}, b = {0};
    connect_vh(&b, "MQTT", 5, CF_CLEAN | CF_PASS, &none);
    bb_str(&b, "c");
    bb_str(&b, "secret");
    mqtt_connect_t c;
    const char *why = NULL;
    assert_int_equal(decode_connect5(&b, &c, &why), MQTT_OK);
    assert_int_equal(c.has_username, 0);
    assert_int_equal(c.has_password, 1);
    assert_true(str_eq(c.password, "secret"));
    b.n = 0;
    connect_vh(&b, "MQTT", 4, CF_CLEAN | CF_PASS, NULL);
    bb_str(&b, "c");
    bb_str(&b, "secret");
    expect_connect5(&b, MQTT_ERR_MALFORMED, "[MQTT-3.1.2-22]");
}

static void connect_v5_property_errors(void **state)
{
    (void)state;
    bb_t props = {0}, b = {0};
    p_u16(&props, MQTT_PROP_TOPIC_ALIAS, 1);
    connect_vh(&b, "MQTT", 5, CF_CLEAN, &props);
    bb_str(&b, "c");
    expect_connect5(&b, MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.2] property not valid in CONNECT");

    props.n = b.n = 0;
    p_u32(&props, MQTT_PROP_WILL_DELAY, 1);
    connect_vh(&b, "MQTT", 5, CF_CLEAN, &props);
    bb_str(&b, "c");
    expect_connect5(&b, MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.2] property not valid in CONNECT");

    props.n = b.n = 0;
    p_u16(&props, MQTT_PROP_RECEIVE_MAXIMUM, 0);
    connect_vh(&b, "MQTT", 5, CF_CLEAN, &props);
    bb_str(&b, "c");
    expect_connect5(&b, MQTT_ERR_PROTOCOL, "[MQTT5 3.1.2.11.3]");

    /* Session Expiry belongs to CONNECT, not to the Will. */
    bb_t none = {0}, will = {0};
    b.n = 0;
    p_u32(&will, MQTT_PROP_SESSION_EXPIRY, 1);
    connect_vh(&b, "MQTT", 5, CF_CLEAN | CF_WILL, &none);
    bb_str(&b, "c");
    bb_props(&b, &will);
    bb_str(&b, "w");
    bb_str(&b, "m");
    expect_connect5(&b, MQTT_ERR_MALFORMED,
                    "[MQTT5 2.2.2.2] property not valid in Will Properties");

    /* No Property Length at all. */
    b.n = 0;
    connect_vh(&b, "MQTT", 5, CF_CLEAN, NULL);
    expect_connect5(&b, MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.1]");

    /* Property Length past the end. */
    b.n = 0;
    connect_vh(&b, "MQTT", 5, CF_CLEAN, NULL);
    bb_u8(&b, 20);
    bb_str(&b, "c");
    expect_connect5(&b, MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.1]");

    /* Will Properties cut short. */
    b.n = 0;
    connect_vh(&b, "MQTT", 5, CF_CLEAN | CF_WILL, &none);
    bb_str(&b, "c");
    bb_u8(&b, 9);
    bb_u8(&b, MQTT_PROP_WILL_DELAY);
    expect_connect5(&b, MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.1]");

    /* Response Topic in the Will with a wildcard. */
    will.n = b.n = 0;
    p_str(&will, MQTT_PROP_RESPONSE_TOPIC, "r/#");
    connect_vh(&b, "MQTT", 5, CF_CLEAN | CF_WILL, &none);
    bb_str(&b, "c");
    bb_props(&b, &will);
    bb_str(&b, "w");
    bb_str(&b, "m");
    expect_connect5(&b, MQTT_ERR_PROTOCOL, "[MQTT5-3.3.2-14]");
}

static void connect_v5_level_and_flag_rules(void **state)
{
    (void)state;
    bb_t none = {0}, b = {0};
    connect_vh(&b, "MQTT", 6, CF_CLEAN, &none);
    bb_str(&b, "c");
    expect_connect5(&b, MQTT_ERR_PROTOCOL_VERSION, "[MQTT-3.1.2-2]");

    b.n = 0;
    connect_vh(&b, "MQIsdp", 5, CF_CLEAN, &none);
    bb_str(&b, "c");
    expect_connect5(&b, MQTT_ERR_PROTOCOL_VERSION, "[MQTT-3.1.2-2]");

    b.n = 0;
    connect_vh(&b, "MQTT", 5, CF_CLEAN | 0x01, &none);
    bb_str(&b, "c");
    expect_connect5(&b, MQTT_ERR_MALFORMED, "[MQTT-3.1.2-3]");

    b.n = 0;
    connect_vh(&b, "MQTT", 5, CF_CLEAN | CF_WILL | CF_WQOS1 | CF_WQOS2, &none);
    bb_str(&b, "c");
    bb_props(&b, &none);
    bb_str(&b, "w");
    bb_str(&b, "m");
    expect_connect5(&b, MQTT_ERR_MALFORMED, "[MQTT-3.1.2-14]");

    b.n = 0;
    connect_vh(&b, "MQTT", 5, CF_CLEAN | CF_WRETAIN, &none);
    bb_str(&b, "c");
    expect_connect5(&b, MQTT_ERR_MALFORMED, "[MQTT-3.1.2-15]");

    b.n = 0;
    connect_vh(&b, "MQTT", 5, CF_CLEAN | CF_WILL, &none);
    bb_str(&b, "c");
    bb_props(&b, &none);
    bb_str(&b, "w/+");
    bb_str(&b, "m");
    expect_connect5(&b, MQTT_ERR_MALFORMED, "[MQTT-3.3.2-2]");

    b.n = 0;
    connect_vh(&b, "MQTT", 5, CF_CLEAN, &none);
    bb_str(&b, "c");
    bb_u8(&b, 0);
    expect_connect5(&b, MQTT_ERR_MALFORMED, "[MQTT-3.1.3]");

    b.n = 0;
    connect_vh(&b, "MQTT", 5, CF_CLEAN, &none);
    bb_strn(&b, "\xff", 1);
    expect_connect5(&b, MQTT_ERR_MALFORMED, "[MQTT-1.5.3-1]");
}

/* Levels 3 and 4 decode identically through both entry points. */
static void connect_v5ok_levels_3_and_4_unchanged(void **state)
{
    (void)state;
    bb_t cases[4] = {{{0}, 0}};
    connect_vh(&cases[0], "MQTT", 4, CF_CLEAN | CF_WILL | CF_USER | CF_PASS, NULL);
    bb_str(&cases[0], "id");
    bb_str(&cases[0], "w");
    bb_str(&cases[0], "m");
    bb_str(&cases[0], "u");
    bb_str(&cases[0], "p");
    connect_vh(&cases[1], "MQIsdp", 3, 0, NULL);
    bb_str(&cases[1], "old");
    connect_vh(&cases[2], "MQIsdp", 3, CF_CLEAN, NULL);
    bb_str(&cases[2], "");
    connect_vh(&cases[3], "MQTT", 4, CF_CLEAN | CF_PASS, NULL);
    bb_str(&cases[3], "x");
    bb_str(&cases[3], "p");
    for (int i = 0; i < 4; i++) {
        mqtt_raw_t r = raw_of(0x10, &cases[i]);
        mqtt_connect_t a, c;
        const char *wa = NULL, *wc = NULL;
        int ra = mqtt_decode_connect(&r, &a, &wa);
        int rc = mqtt_decode_connect_v5ok(&r, &c, 1, &wc);
        assert_int_equal(ra, rc);
        if (ra != MQTT_OK)
            assert_string_equal(wa, wc);
        assert_memory_equal(&a, &c, sizeof a);
        assert_int_equal(c.props.present, 0);
        assert_int_equal(c.will_props.present, 0);
    }
}

/* ---- PUBLISH 5.0 ----------------------------------------------------------- */

static int decode_publish5(uint8_t hdr, const bb_t *b, uint8_t from, mqtt_publish_t *p,
                           const char **why)
{
    mqtt_raw_t r = raw_of(hdr, b);
    return mqtt_decode_publish_from(&r, MQTT_PROTO_V5, from, p, why);
}

static void expect_publish5(uint8_t hdr, const bb_t *b, uint8_t from, int code, const char *rule)
{
    mqtt_publish_t p;
    const char *why = NULL;
    int rc = decode_publish5(hdr, b, from, &p, &why);
    if (rc != code)
        fail_msg("got %d (%s), want %d", rc, why ? why : "-", code);
    if (code != MQTT_OK && rule)
        assert_why(why, rule);
}

static void publish_v5_properties_then_payload(void **state)
{
    (void)state;
    bb_t props = {0}, b = {0};
    p_byte(&props, MQTT_PROP_PAYLOAD_FORMAT, 1);
    p_u32(&props, MQTT_PROP_MESSAGE_EXPIRY, 10);
    p_str(&props, MQTT_PROP_CONTENT_TYPE, "text/plain");
    p_str(&props, MQTT_PROP_RESPONSE_TOPIC, "resp");
    p_str(&props, MQTT_PROP_CORRELATION_DATA, "42");
    p_user(&props, "k", "v");
    bb_str(&b, "a/b");
    bb_u16(&b, 7);
    bb_props(&b, &props);
    bb_raw(&b, "hi", 2);
    mqtt_publish_t p;
    const char *why = NULL;
    mqtt_raw_t r = raw_of(0x32, &b);
    assert_int_equal(mqtt_decode_publish(&r, MQTT_PROTO_V5, &p, &why), MQTT_OK);
    assert_true(str_eq(p.topic, "a/b"));
    assert_int_equal(p.qos, 1);
    assert_int_equal(p.packet_id, 7);
    assert_int_equal(p.payload_len, 2);
    assert_memory_equal(p.payload, "hi", 2);
    assert_int_equal(p.props.payload_format, 1);
    assert_int_equal(p.props.message_expiry, 10);
    assert_true(str_eq(p.props.content_type, "text/plain"));
    assert_true(str_eq(p.props.response_topic, "resp"));
    assert_true(str_eq(p.props.correlation_data, "42"));
    assert_int_equal(p.props.user_count, 1);
    assert_int_equal(p.props.raw_len, props.n);

    /* QoS 0, no properties, no payload. */
    b.n = 0;
    bb_str(&b, "t");
    bb_u8(&b, 0);
    assert_int_equal(decode_publish5(0x30, &b, MQTT_FROM_CLIENT, &p, &why), MQTT_OK);
    assert_int_equal(p.payload_len, 0);
    assert_null(p.payload);
    assert_null(p.props.raw);
}

static void publish_v5_topic_alias_and_empty_topic(void **state)
{
    (void)state;
    bb_t props = {0}, b = {0};
    p_u16(&props, MQTT_PROP_TOPIC_ALIAS, 3);
    bb_str(&b, "");
    bb_props(&b, &props);
    bb_raw(&b, "x", 1);
    mqtt_publish_t p;
    const char *why = NULL;
    assert_int_equal(decode_publish5(0x30, &b, MQTT_FROM_CLIENT, &p, &why), MQTT_OK);
    assert_int_equal(p.topic.len, 0);
    assert_int_equal(p.props.topic_alias, 3);

    b.n = 0;
    bb_str(&b, "");
    bb_u8(&b, 0);
    expect_publish5(0x30, &b, MQTT_FROM_CLIENT, MQTT_ERR_PROTOCOL, "[MQTT5 3.3.2.1]");

    props.n = b.n = 0;
    p_u16(&props, MQTT_PROP_TOPIC_ALIAS, 0);
    bb_str(&b, "t");
    bb_props(&b, &props);
    expect_publish5(0x30, &b, MQTT_FROM_CLIENT, MQTT_ERR_PROTOCOL, "[MQTT5-3.3.2-8]");

    /* A topic and an alias (setting the mapping) is fine. */
    props.n = b.n = 0;
    p_u16(&props, MQTT_PROP_TOPIC_ALIAS, 1);
    bb_str(&b, "t");
    bb_props(&b, &props);
    expect_publish5(0x30, &b, MQTT_FROM_CLIENT, MQTT_OK, NULL);
}

static void publish_v5_subscription_ids_by_direction(void **state)
{
    (void)state;
    bb_t props = {0}, b = {0};
    p_varint(&props, MQTT_PROP_SUBSCRIPTION_ID, 1);
    p_varint(&props, MQTT_PROP_SUBSCRIPTION_ID, 200);
    bb_str(&b, "t");
    bb_props(&b, &props);
    mqtt_raw_t r = raw_of(0x30, &b);
    mqtt_publish_t p;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_publish(&r, MQTT_PROTO_V5, &p, &why), MQTT_ERR_PROTOCOL);
    assert_why(why, "[MQTT5-3.3.4-6]");
    expect_publish5(0x30, &b, MQTT_FROM_CLIENT, MQTT_ERR_PROTOCOL, "[MQTT5-3.3.4-6]");
    assert_int_equal(decode_publish5(0x30, &b, MQTT_FROM_SERVER, &p, &why), MQTT_OK);
    assert_int_equal(p.props.sub_id_count, 2);
}

static void publish_v5_property_errors(void **state)
{
    (void)state;
    bb_t props = {0}, b = {0};
    p_u32(&props, MQTT_PROP_SESSION_EXPIRY, 1);
    bb_str(&b, "t");
    bb_props(&b, &props);
    expect_publish5(0x30, &b, MQTT_FROM_CLIENT, MQTT_ERR_MALFORMED,
                    "[MQTT5 2.2.2.2] property not valid in PUBLISH");
    /* No Property Length. */
    b.n = 0;
    bb_str(&b, "t");
    expect_publish5(0x30, &b, MQTT_FROM_CLIENT, MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.1]");
    b.n = 0;
    bb_str(&b, "t");
    bb_u16(&b, 1);
    expect_publish5(0x32, &b, MQTT_FROM_CLIENT, MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.1]");
    /* Past the end. */
    b.n = 0;
    bb_str(&b, "t");
    bb_u8(&b, 4);
    bb_u8(&b, MQTT_PROP_PAYLOAD_FORMAT);
    expect_publish5(0x30, &b, MQTT_FROM_CLIENT, MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.1]");
    /* The 3.1.1 rules still apply. */
    b.n = 0;
    bb_str(&b, "t/#");
    bb_u8(&b, 0);
    expect_publish5(0x30, &b, MQTT_FROM_CLIENT, MQTT_ERR_MALFORMED, "[MQTT-3.3.2-2]");
    b.n = 0;
    bb_str(&b, "t");
    bb_u16(&b, 0);
    bb_u8(&b, 0);
    expect_publish5(0x32, &b, MQTT_FROM_CLIENT, MQTT_ERR_MALFORMED, "[MQTT-2.3.1-1]");
    expect_publish5(0x36, &b, MQTT_FROM_CLIENT, MQTT_ERR_MALFORMED, "[MQTT-3.3.1-4]");
    b.n = 0;
    bb_strn(&b, "\xc3", 1);
    bb_u8(&b, 0);
    expect_publish5(0x30, &b, MQTT_FROM_CLIENT, MQTT_ERR_MALFORMED, "[MQTT-1.5.3-1]");
}

static void publish_proto4_ignores_properties(void **state)
{
    (void)state;
    bb_t props = {0}, b = {0};
    p_u16(&props, MQTT_PROP_TOPIC_ALIAS, 2);
    bb_str(&b, "t");
    bb_props(&b, &props);
    bb_raw(&b, "pl", 2);
    mqtt_raw_t r = raw_of(0x30, &b);
    mqtt_publish_t p;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_publish(&r, MQTT_PROTO_V311, &p, &why), MQTT_OK);
    assert_int_equal(p.payload_len, 1 + props.n + 2); /* all payload */
    assert_int_equal(p.props.present, 0);
    assert_int_equal(mqtt_decode_publish_from(&r, MQTT_PROTO_V311, MQTT_FROM_SERVER, &p, &why),
                     MQTT_OK);
    assert_int_equal(p.payload_len, 1 + props.n + 2);
    /* And an empty topic stays malformed for 3.1.1. */
    b.n = 0;
    bb_str(&b, "");
    bb_props(&b, &props);
    r = raw_of(0x30, &b);
    assert_int_equal(mqtt_decode_publish(&r, MQTT_PROTO_V311, &p, &why), MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT-4.7.3-1]");
}

/* ---- PUBACK, PUBREC, PUBREL, PUBCOMP 5.0 -------------------------------------- */

static int decode_ack5(uint8_t hdr, const bb_t *b, mqtt_ack_t *a, const char **why)
{
    mqtt_raw_t r = raw_of(hdr, b);
    return mqtt_decode_ack_v5(&r, a, why);
}

static void expect_ack5(uint8_t hdr, const bb_t *b, int code, const char *rule)
{
    mqtt_ack_t a;
    const char *why = NULL;
    int rc = decode_ack5(hdr, b, &a, &why);
    if (rc != code)
        fail_msg("got %d (%s), want %d", rc, why ? why : "-", code);
    if (code != MQTT_OK && rule)
        assert_why(why, rule);
}

static void ack_v5_remaining_length_forms(void **state)
{
    (void)state;
    bb_t b = {0};
    mqtt_ack_t a;
    const char *why = NULL;
    bb_u16(&b, 9);
    assert_int_equal(decode_ack5(0x40, &b, &a, &why), MQTT_OK);
    assert_int_equal(a.packet_id, 9);
    assert_int_equal(a.reason, 0);
    assert_int_equal(a.props.present, 0);

    bb_u8(&b, MQTT_RC_NO_MATCHING_SUBSCRIBERS);
    assert_int_equal(decode_ack5(0x40, &b, &a, &why), MQTT_OK);
    assert_int_equal(a.reason, 0x10);

    bb_u8(&b, 0);
    assert_int_equal(decode_ack5(0x40, &b, &a, &why), MQTT_OK);
    assert_int_equal(a.reason, 0x10);

    bb_t props = {0};
    p_str(&props, MQTT_PROP_REASON_STRING, "quota");
    p_user(&props, "k", "v");
    b.n = 0;
    bb_u16(&b, 9);
    bb_u8(&b, MQTT_RC_QUOTA_EXCEEDED);
    bb_props(&b, &props);
    assert_int_equal(decode_ack5(0x50, &b, &a, &why), MQTT_OK);
    assert_int_equal(a.reason, 0x97);
    assert_true(str_eq(a.props.reason_string, "quota"));
    assert_int_equal(a.props.user_count, 1);

    /* PUBREL keeps its flags; PUBCOMP has none. */
    b.n = 0;
    bb_u16(&b, 1);
    bb_u8(&b, MQTT_RC_PACKET_ID_NOT_FOUND);
    expect_ack5(0x62, &b, MQTT_OK, NULL);
    expect_ack5(0x60, &b, MQTT_ERR_MALFORMED, "[MQTT-3.6.1-1]");
    expect_ack5(0x70, &b, MQTT_OK, NULL);
    expect_ack5(0x72, &b, MQTT_ERR_MALFORMED, "[MQTT-2.2.2-1]");
}

static void ack_v5_reason_codes_per_type(void **state)
{
    (void)state;
    static const uint8_t puback[] = {0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99};
    static const uint8_t pubrel[] = {0x00, 0x92};
    static const struct {
        uint8_t hdr;
        const uint8_t *ok;
        size_t n;
        const char *rule;
    } types[] = {
        {0x40, puback, sizeof puback, "[MQTT5-3.4.2-1]"},
        {0x50, puback, sizeof puback, "[MQTT5-3.5.2-1]"},
        {0x62, pubrel, sizeof pubrel, "[MQTT5-3.6.2-1]"},
        {0x70, pubrel, sizeof pubrel, "[MQTT5-3.7.2-1]"},
    };
    for (size_t t = 0; t < 4; t++) {
        for (unsigned rc = 0; rc < 256; rc++) {
            bb_t b = {0};
            bb_u16(&b, 1);
            bb_u8(&b, (uint8_t)rc);
            int ok = memchr(types[t].ok, (int)rc, types[t].n) != NULL;
            expect_ack5(types[t].hdr, &b, ok ? MQTT_OK : MQTT_ERR_PROTOCOL, types[t].rule);
        }
    }
}

static void ack_v5_errors(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u8(&b, 1);
    expect_ack5(0x40, &b, MQTT_ERR_MALFORMED, "[MQTT5 3.4.2]");
    b.n = 0;
    expect_ack5(0x40, &b, MQTT_ERR_MALFORMED, "[MQTT5 3.4.2]");
    bb_u16(&b, 0);
    expect_ack5(0x40, &b, MQTT_ERR_MALFORMED, "[MQTT-2.3.1]");
    /* Bytes after the properties. */
    b.n = 0;
    bb_u16(&b, 1);
    bb_u8(&b, 0);
    bb_u8(&b, 0);
    bb_u8(&b, 0);
    expect_ack5(0x40, &b, MQTT_ERR_MALFORMED, "[MQTT5 3.4.2]");
    /* Property Length past the end. */
    b.n = 0;
    bb_u16(&b, 1);
    bb_u8(&b, 0);
    bb_u8(&b, 3);
    expect_ack5(0x40, &b, MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.1]");
    /* A PUBLISH property. */
    bb_t props = {0};
    p_u16(&props, MQTT_PROP_TOPIC_ALIAS, 1);
    b.n = 0;
    bb_u16(&b, 1);
    bb_u8(&b, 0);
    bb_props(&b, &props);
    expect_ack5(0x40, &b, MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.2] property not valid in PUBACK");
    /* Reason String twice. */
    props.n = b.n = 0;
    p_str(&props, MQTT_PROP_REASON_STRING, "a");
    p_str(&props, MQTT_PROP_REASON_STRING, "b");
    bb_u16(&b, 1);
    bb_u8(&b, 0);
    bb_props(&b, &props);
    expect_ack5(0x70, &b, MQTT_ERR_PROTOCOL, "[MQTT5 3.2.2.3.9] Reason String included");
    /* Not an ack. */
    b.n = 0;
    bb_u16(&b, 1);
    expect_ack5(0xB0, &b, MQTT_ERR_MALFORMED, "packet handed to the wrong decoder");
}

/* ---- SUBSCRIBE / UNSUBSCRIBE 5.0 -------------------------------------------- */

static void expect_sub5(uint8_t hdr, const bb_t *b, int code, const char *rule)
{
    mqtt_raw_t r = raw_of(hdr, b);
    mqtt_sub_iter_t it;
    const char *why = NULL;
    int rc = (hdr >> 4) == MQTT_SUBSCRIBE ? mqtt_decode_subscribe_v5(&r, &it, &why)
                                          : mqtt_decode_unsubscribe_v5(&r, &it, &why);
    if (rc != code)
        fail_msg("got %d (%s), want %d", rc, why ? why : "-", code);
    if (code != MQTT_OK && rule)
        assert_why(why, rule);
}

/* SUBSCRIBE with no properties and one filter. */
static void sub5_one(bb_t *b, const char *filter, uint8_t options)
{
    b->n = 0;
    bb_u16(b, 1);
    bb_u8(b, 0);
    bb_str(b, filter);
    bb_u8(b, options);
}

static void subscribe_v5_decodes(void **state)
{
    (void)state;
    bb_t props = {0}, b = {0};
    p_varint(&props, MQTT_PROP_SUBSCRIPTION_ID, 42);
    p_user(&props, "k", "v");
    bb_u16(&b, 5);
    bb_props(&b, &props);
    bb_str(&b, "a/b");
    bb_u8(&b, MQTT_SUBOPT_MAKE(1, 1, 1, 2));
    bb_str(&b, "$share/g/x/#");
    bb_u8(&b, 0x02);
    mqtt_raw_t r = raw_of(0x82, &b);
    mqtt_sub_iter_t it;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_subscribe_v5(&r, &it, &why), MQTT_OK);
    assert_int_equal(it.packet_id, 5);
    assert_int_equal(it.count, 2);
    assert_int_equal(it.proto, MQTT_PROTO_V5);
    assert_int_equal(it.props.sub_id, 42);
    assert_int_equal(it.props.user_count, 1);
    mqtt_sub_iter_t again = it;
    mqtt_str_t f;
    uint8_t o = 0xff;
    assert_int_equal(mqtt_sub_next_opts(&it, &f, &o), 1);
    assert_true(str_eq(f, "a/b"));
    assert_int_equal(o, 0x2d);
    assert_int_equal(MQTT_SUBOPT_QOS(o), 1);
    assert_true(o & MQTT_SUBOPT_NO_LOCAL);
    assert_true(o & MQTT_SUBOPT_RETAIN_AS_PUBLISHED);
    assert_int_equal(MQTT_SUBOPT_RETAIN_HANDLING(o), 2);
    assert_int_equal(mqtt_sub_next_opts(&it, &f, &o), 1);
    assert_true(str_eq(f, "$share/g/x/#"));
    assert_int_equal(o, 2);
    assert_int_equal(mqtt_sub_next_opts(&it, &f, &o), 0);
    /* The 3.1.1 walker gives the QoS bits. */
    uint8_t q = 0xff;
    assert_int_equal(mqtt_sub_next(&again, &f, &q), 1);
    assert_int_equal(q, 1);
    assert_int_equal(mqtt_sub_next(&again, &f, &q), 1);
    assert_int_equal(q, 2);
    assert_int_equal(mqtt_sub_next(&again, &f, &q), 0);
}

static void subscribe_v5_options_rules(void **state)
{
    (void)state;
    bb_t b = {0};
    for (unsigned o = 0; o < 256; o++) {
        sub5_one(&b, "a/b", (uint8_t)o);
        if (o & 0xc0)
            expect_sub5(0x82, &b, MQTT_ERR_MALFORMED, "[MQTT5-3.8.3-5]");
        else if ((o & 3) == 3)
            expect_sub5(0x82, &b, MQTT_ERR_PROTOCOL, "[MQTT5 3.8.3.1] SUBSCRIBE Maximum QoS 3");
        else if (((o >> 4) & 3) == 3)
            expect_sub5(0x82, &b, MQTT_ERR_PROTOCOL, "[MQTT5 3.8.3.1] SUBSCRIBE Retain Handling 3");
        else
            expect_sub5(0x82, &b, MQTT_OK, NULL);
    }
    /* No Local on a shared subscription. */
    sub5_one(&b, "$share/g/a", MQTT_SUBOPT_NO_LOCAL);
    expect_sub5(0x82, &b, MQTT_ERR_PROTOCOL, "[MQTT5-3.8.3-4]");
    sub5_one(&b, "$share/g/a", MQTT_SUBOPT_RETAIN_AS_PUBLISHED | 1);
    expect_sub5(0x82, &b, MQTT_OK, NULL);
    /* Options byte missing. */
    b.n = 0;
    bb_u16(&b, 1);
    bb_u8(&b, 0);
    bb_str(&b, "a");
    expect_sub5(0x82, &b, MQTT_ERR_MALFORMED, "[MQTT5 3.8.3]");
}

static void subscribe_v5_shared_filters(void **state)
{
    (void)state;
    static const char *const bad[] = {"$share//x", "$share/g", "$share/+/x", "$share/g/",
                                      "$share/"};
    bb_t b = {0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sub5_one(&b, bad[i], 0);
        expect_sub5(0x82, &b, MQTT_ERR_PROTOCOL, "[MQTT5-4.8.2-2]");
        b.n = 0;
        bb_u16(&b, 1);
        bb_u8(&b, 0);
        bb_str(&b, bad[i]);
        expect_sub5(0xA2, &b, MQTT_ERR_PROTOCOL, "[MQTT5-4.8.2-2]");
    }
    /* '#' inside the share name fails the filter rules first. */
    sub5_one(&b, "$share/#/x", 0);
    expect_sub5(0x82, &b, MQTT_ERR_MALFORMED, "[MQTT-4.7.1-2]");
    /* 3.1.1 knows nothing of shares. */
    b.n = 0;
    bb_u16(&b, 1);
    bb_str(&b, "$share//x");
    bb_u8(&b, 0);
    mqtt_raw_t r = raw_of(0x82, &b);
    mqtt_sub_iter_t it;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_subscribe(&r, &it, &why), MQTT_OK);
    assert_int_equal(it.proto, 0);
}

static void subscribe_v5_property_rules(void **state)
{
    (void)state;
    bb_t props = {0}, b = {0};
    p_varint(&props, MQTT_PROP_SUBSCRIPTION_ID, 1);
    p_varint(&props, MQTT_PROP_SUBSCRIPTION_ID, 2);
    bb_u16(&b, 1);
    bb_props(&b, &props);
    bb_str(&b, "a");
    bb_u8(&b, 0);
    expect_sub5(0x82, &b, MQTT_ERR_PROTOCOL, "[MQTT5 3.8.2.1.2]");

    props.n = b.n = 0;
    p_varint(&props, MQTT_PROP_SUBSCRIPTION_ID, 0);
    bb_u16(&b, 1);
    bb_props(&b, &props);
    bb_str(&b, "a");
    bb_u8(&b, 0);
    expect_sub5(0x82, &b, MQTT_ERR_PROTOCOL, "[MQTT5 3.8.2.1.2]");

    props.n = b.n = 0;
    p_u16(&props, MQTT_PROP_TOPIC_ALIAS, 1);
    bb_u16(&b, 1);
    bb_props(&b, &props);
    bb_str(&b, "a");
    bb_u8(&b, 0);
    expect_sub5(0x82, &b, MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.2] property not valid in SUBSCRIBE");

    /* Packet id only: no Property Length. */
    b.n = 0;
    bb_u16(&b, 1);
    expect_sub5(0x82, &b, MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.1]");
    /* Properties, no filter. */
    bb_u8(&b, 0);
    expect_sub5(0x82, &b, MQTT_ERR_PROTOCOL, "[MQTT-3.8.3-3]");
    /* Packet id 0, flags. */
    sub5_one(&b, "a", 0);
    b.d[1] = 0;
    expect_sub5(0x82, &b, MQTT_ERR_MALFORMED, "[MQTT-2.3.1-1]");
    sub5_one(&b, "a", 0);
    expect_sub5(0x80, &b, MQTT_ERR_MALFORMED, "[MQTT-3.8.1-1]");
    sub5_one(&b, "a/#/b", 0);
    expect_sub5(0x82, &b, MQTT_ERR_MALFORMED, "[MQTT-4.7.1-2]");
}

static void unsubscribe_v5_decodes(void **state)
{
    (void)state;
    bb_t props = {0}, b = {0};
    p_user(&props, "why", "done");
    bb_u16(&b, 3);
    bb_props(&b, &props);
    bb_str(&b, "a/+");
    bb_str(&b, "$share/g/b");
    mqtt_raw_t r = raw_of(0xA2, &b);
    mqtt_sub_iter_t it;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_unsubscribe_v5(&r, &it, &why), MQTT_OK);
    assert_int_equal(it.count, 2);
    assert_int_equal(it.props.user_count, 1);
    mqtt_str_t f;
    uint8_t o = 0xff;
    assert_int_equal(mqtt_sub_next_opts(&it, &f, &o), 1);
    assert_true(str_eq(f, "a/+"));
    assert_int_equal(o, 0);
    assert_int_equal(mqtt_sub_next_opts(&it, &f, &o), 1);
    assert_true(str_eq(f, "$share/g/b"));
    assert_int_equal(mqtt_sub_next_opts(&it, &f, &o), 0);

    props.n = b.n = 0;
    p_varint(&props, MQTT_PROP_SUBSCRIPTION_ID, 1);
    bb_u16(&b, 3);
    bb_props(&b, &props);
    bb_str(&b, "a");
    expect_sub5(0xA2, &b, MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.2] property not valid in UNSUBSCRIBE");
    b.n = 0;
    bb_u16(&b, 3);
    bb_u8(&b, 0);
    expect_sub5(0xA2, &b, MQTT_ERR_PROTOCOL, "[MQTT-3.10.3-2]");
    bb_strn(&b, "", 0);
    expect_sub5(0xA2, &b, MQTT_ERR_MALFORMED, "[MQTT-4.7.3-1]");
}

/* ---- DISCONNECT and AUTH 5.0 ------------------------------------------------- */

static void expect_disconnect5(const bb_t *b, uint8_t from, int code, const char *rule)
{
    mqtt_raw_t r = raw_of(0xE0, b);
    mqtt_disconnect_t d;
    const char *why = NULL;
    int rc = mqtt_decode_disconnect_v5(&r, from, &d, &why);
    if (rc != code)
        fail_msg("got %d (%s), want %d", rc, why ? why : "-", code);
    if (code != MQTT_OK && rule)
        assert_why(why, rule);
}

static void disconnect_v5_forms(void **state)
{
    (void)state;
    bb_t b = {0};
    mqtt_disconnect_t d;
    const char *why = NULL;
    mqtt_raw_t r = raw_of(0xE0, &b);
    assert_int_equal(mqtt_decode_disconnect_v5(&r, MQTT_FROM_CLIENT, &d, &why), MQTT_OK);
    assert_int_equal(d.reason, 0);

    bb_u8(&b, MQTT_RC_DISCONNECT_WITH_WILL);
    r = raw_of(0xE0, &b);
    assert_int_equal(mqtt_decode_disconnect_v5(&r, MQTT_FROM_CLIENT, &d, &why), MQTT_OK);
    assert_int_equal(d.reason, 4);
    expect_disconnect5(&b, MQTT_FROM_SERVER, MQTT_ERR_PROTOCOL,
                       "[MQTT5-3.14.2-1] DISCONNECT reason code not allowed from a server");

    b.n = 0;
    bb_u8(&b, MQTT_RC_SESSION_TAKEN_OVER);
    expect_disconnect5(&b, MQTT_FROM_SERVER, MQTT_OK, NULL);
    expect_disconnect5(&b, MQTT_FROM_CLIENT, MQTT_ERR_PROTOCOL,
                       "[MQTT5-3.14.2-1] DISCONNECT reason code not allowed from a client");

    bb_t props = {0};
    p_u32(&props, MQTT_PROP_SESSION_EXPIRY, 0);
    p_str(&props, MQTT_PROP_REASON_STRING, "bye");
    p_user(&props, "k", "v");
    p_str(&props, MQTT_PROP_SERVER_REFERENCE, "elsewhere");
    b.n = 0;
    bb_u8(&b, 0);
    bb_props(&b, &props);
    r = raw_of(0xE0, &b);
    assert_int_equal(mqtt_decode_disconnect_v5(&r, MQTT_FROM_CLIENT, &d, &why), MQTT_OK);
    assert_true(mqtt_props_has(&d.props, MQTT_PROP_SESSION_EXPIRY));
    assert_true(str_eq(d.props.reason_string, "bye"));
    assert_true(str_eq(d.props.server_reference, "elsewhere"));
    expect_disconnect5(&b, MQTT_FROM_SERVER, MQTT_ERR_PROTOCOL, "[MQTT5-3.14.2-2]");

    /* Reason code followed by a zero Property Length. */
    b.n = 0;
    bb_u8(&b, 0x98);
    bb_u8(&b, 0);
    expect_disconnect5(&b, MQTT_FROM_CLIENT, MQTT_OK, NULL);
    bb_u8(&b, 0);
    expect_disconnect5(&b, MQTT_FROM_CLIENT, MQTT_ERR_MALFORMED, "[MQTT5 3.14.2]");

    props.n = b.n = 0;
    p_u16(&props, MQTT_PROP_TOPIC_ALIAS, 1);
    bb_u8(&b, 0);
    bb_props(&b, &props);
    expect_disconnect5(&b, MQTT_FROM_CLIENT, MQTT_ERR_MALFORMED,
                       "[MQTT5 2.2.2.2] property not valid in DISCONNECT");

    b.n = 0;
    r = raw_of(0xE1, &b);
    assert_int_equal(mqtt_decode_disconnect_v5(&r, MQTT_FROM_CLIENT, &d, &why), MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT-3.14.1-1]");
}

static void disconnect_v5_reason_codes_by_sender(void **state)
{
    (void)state;
    static const uint8_t client[] = {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x90,
                                     0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99};
    static const uint8_t server[] = {0x00, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E,
                                     0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A,
                                     0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2};
    for (unsigned rc = 0; rc < 256; rc++) {
        bb_t b = {0};
        bb_u8(&b, (uint8_t)rc);
        expect_disconnect5(&b, MQTT_FROM_CLIENT,
                           memchr(client, (int)rc, sizeof client) ? MQTT_OK : MQTT_ERR_PROTOCOL,
                           "[MQTT5-3.14.2-1]");
        expect_disconnect5(&b, MQTT_FROM_SERVER,
                           memchr(server, (int)rc, sizeof server) ? MQTT_OK : MQTT_ERR_PROTOCOL,
                           "[MQTT5-3.14.2-1]");
    }
}

static void expect_auth(uint8_t hdr, const bb_t *b, int code, const char *rule)
{
    mqtt_raw_t r = raw_of(hdr, b);
    mqtt_auth_t a;
    const char *why = NULL;
    int rc = mqtt_decode_auth(&r, &a, &why);
    if (rc != code)
        fail_msg("got %d (%s), want %d", rc, why ? why : "-", code);
    if (code != MQTT_OK && rule)
        assert_why(why, rule);
}

static void auth_forms_and_rules(void **state)
{
    (void)state;
    bb_t b = {0}, props = {0};
    mqtt_auth_t a;
    const char *why = NULL;
    mqtt_raw_t r = raw_of(0xF0, &b);
    assert_int_equal(mqtt_decode_auth(&r, &a, &why), MQTT_OK);
    assert_int_equal(a.reason, 0);

    p_str(&props, MQTT_PROP_AUTH_METHOD, "SCRAM-SHA-1");
    p_str(&props, MQTT_PROP_AUTH_DATA, "c=biws");
    p_str(&props, MQTT_PROP_REASON_STRING, "more");
    p_user(&props, "k", "v");
    bb_u8(&b, MQTT_RC_CONTINUE_AUTHENTICATION);
    bb_props(&b, &props);
    r = raw_of(0xF0, &b);
    assert_int_equal(mqtt_decode_auth(&r, &a, &why), MQTT_OK);
    assert_int_equal(a.reason, 0x18);
    assert_true(str_eq(a.props.auth_method, "SCRAM-SHA-1"));
    assert_true(str_eq(a.props.auth_data, "c=biws"));
    b.d[0] = MQTT_RC_REAUTHENTICATE;
    expect_auth(0xF0, &b, MQTT_OK, NULL);
    b.d[0] = MQTT_RC_SUCCESS;
    expect_auth(0xF0, &b, MQTT_OK, NULL);
    b.d[0] = 0x01;
    expect_auth(0xF0, &b, MQTT_ERR_PROTOCOL, "[MQTT5-3.15.2-1]");
    b.d[0] = 0x80;
    expect_auth(0xF0, &b, MQTT_ERR_PROTOCOL, "[MQTT5-3.15.2-1]");
    expect_auth(0xF1, &b, MQTT_ERR_MALFORMED, "[MQTT-2.2.2-1]");

    /* Authentication Method required. */
    b.n = 0;
    bb_u8(&b, MQTT_RC_CONTINUE_AUTHENTICATION);
    expect_auth(0xF0, &b, MQTT_ERR_PROTOCOL, "[MQTT5 3.15.2.2.2]");
    b.n = 0;
    props.n = 0;
    p_str(&props, MQTT_PROP_REASON_STRING, "r");
    bb_u8(&b, MQTT_RC_SUCCESS);
    bb_props(&b, &props);
    expect_auth(0xF0, &b, MQTT_ERR_PROTOCOL, "[MQTT5 3.15.2.2.2]");
    b.n = 0;
    bb_u8(&b, MQTT_RC_SUCCESS);
    expect_auth(0xF0, &b, MQTT_OK, NULL); /* 0x00 without properties */
    bb_u8(&b, 0);
    expect_auth(0xF0, &b, MQTT_OK, NULL);

    /* Property rules. */
    props.n = b.n = 0;
    p_str(&props, MQTT_PROP_AUTH_METHOD, "a");
    p_str(&props, MQTT_PROP_AUTH_METHOD, "b");
    bb_u8(&b, MQTT_RC_CONTINUE_AUTHENTICATION);
    bb_props(&b, &props);
    expect_auth(0xF0, &b, MQTT_ERR_PROTOCOL, "[MQTT5 3.1.2.11.9] Authentication Method");
    props.n = b.n = 0;
    p_str(&props, MQTT_PROP_AUTH_METHOD, "a");
    p_u32(&props, MQTT_PROP_SESSION_EXPIRY, 1);
    bb_u8(&b, MQTT_RC_CONTINUE_AUTHENTICATION);
    bb_props(&b, &props);
    expect_auth(0xF0, &b, MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.2] property not valid in AUTH");

    /* The header check lets AUTH through at level 5 only. */
    assert_int_equal(mqtt_check_client_header(0xF0, MQTT_PROTO_V5, &why), MQTT_OK);
    assert_int_equal(mqtt_check_client_header(0xF0, MQTT_PROTO_V311, &why), MQTT_ERR_PROTOCOL);
    /* Not AUTH. */
    b.n = 0;
    expect_auth(0xE0, &b, MQTT_ERR_MALFORMED, "packet handed to the wrong decoder");
}

/* ---- CONNACK, SUBACK, UNSUBACK 5.0 (client side) ----------------------------- */

static void expect_connack5(const bb_t *b, int code, const char *rule)
{
    mqtt_raw_t r = raw_of(0x20, b);
    mqtt_connack_t c;
    const char *why = NULL;
    int rc = mqtt_decode_connack_v5(&r, &c, &why);
    if (rc != code)
        fail_msg("got %d (%s), want %d", rc, why ? why : "-", code);
    if (code != MQTT_OK && rule)
        assert_why(why, rule);
}

static void connack_v5_decodes_and_rules(void **state)
{
    (void)state;
    bb_t props = {0}, b = {0};
    p_str(&props, MQTT_PROP_ASSIGNED_CLIENT_ID, "auto-7");
    p_u16(&props, MQTT_PROP_TOPIC_ALIAS_MAXIMUM, 8);
    bb_u8(&b, 1);
    bb_u8(&b, 0);
    bb_props(&b, &props);
    mqtt_raw_t r = raw_of(0x20, &b);
    mqtt_connack_t c;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_connack_v5(&r, &c, &why), MQTT_OK);
    assert_int_equal(c.session_present, 1);
    assert_int_equal(c.reason, 0);
    assert_true(str_eq(c.props.assigned_client_id, "auto-7"));
    assert_int_equal(c.props.topic_alias_max, 8);

    b.n = 0;
    bb_u8(&b, 0);
    bb_u8(&b, 0);
    expect_connack5(&b, MQTT_ERR_MALFORMED, "[MQTT5 3.2.2]");
    bb_u8(&b, 0);
    expect_connack5(&b, MQTT_OK, NULL);
    bb_u8(&b, 0);
    expect_connack5(&b, MQTT_ERR_MALFORMED, "[MQTT5 3.2.3]");
    b.n = 0;
    bb_raw(&b, "\x02\x00\x00", 3);
    expect_connack5(&b, MQTT_ERR_MALFORMED, "[MQTT5-3.2.2-1]");
    b.n = 0;
    bb_raw(&b, "\x01\x87\x00", 3);
    expect_connack5(&b, MQTT_ERR_PROTOCOL, "[MQTT5-3.2.2-6]");
    b.n = 0;
    bb_raw(&b, "\x00\x87\x00", 3);
    expect_connack5(&b, MQTT_OK, NULL);
    for (unsigned rc = 1; rc < 0x80; rc++) {
        b.d[1] = (uint8_t)rc;
        expect_connack5(&b, MQTT_ERR_PROTOCOL, "[MQTT5-3.2.2-8]");
    }
    props.n = b.n = 0;
    p_u16(&props, MQTT_PROP_TOPIC_ALIAS, 1);
    bb_u8(&b, 0);
    bb_u8(&b, 0);
    bb_props(&b, &props);
    expect_connack5(&b, MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.2] property not valid in CONNACK");
    b.n = 0;
    bb_raw(&b, "\x00\x00\x00", 3);
    r = raw_of(0x21, &b);
    assert_int_equal(mqtt_decode_connack_v5(&r, &c, &why), MQTT_ERR_MALFORMED);
}

static void expect_suback5(uint8_t hdr, const bb_t *b, int code, const char *rule)
{
    mqtt_raw_t r = raw_of(hdr, b);
    mqtt_suback_t s;
    const char *why = NULL;
    int rc = mqtt_decode_suback_v5(&r, &s, &why);
    if (rc != code)
        fail_msg("got %d (%s), want %d", rc, why ? why : "-", code);
    if (code != MQTT_OK && rule)
        assert_why(why, rule);
}

static void suback_unsuback_v5_decode(void **state)
{
    (void)state;
    bb_t props = {0}, b = {0};
    p_str(&props, MQTT_PROP_REASON_STRING, "partly");
    bb_u16(&b, 4);
    bb_props(&b, &props);
    bb_raw(&b, "\x00\x02\x9e", 3);
    mqtt_raw_t r = raw_of(0x90, &b);
    mqtt_suback_t s;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_suback_v5(&r, &s, &why), MQTT_OK);
    assert_int_equal(s.packet_id, 4);
    assert_int_equal(s.count, 3);
    assert_memory_equal(s.reasons, "\x00\x02\x9e", 3);
    assert_true(str_eq(s.props.reason_string, "partly"));

    b.n = 0;
    bb_u16(&b, 4);
    bb_u8(&b, 0);
    expect_suback5(0x90, &b, MQTT_ERR_MALFORMED, "[MQTT5 3.9.3]");
    expect_suback5(0xB0, &b, MQTT_ERR_MALFORMED, "[MQTT5 3.11.3]");
    bb_u8(&b, MQTT_RC_NO_SUBSCRIPTION_EXISTED);
    expect_suback5(0x90, &b, MQTT_ERR_PROTOCOL, "[MQTT5-3.9.3-2]");
    expect_suback5(0xB0, &b, MQTT_OK, NULL);
    b.d[b.n - 1] = MQTT_RC_GRANTED_QOS_1;
    expect_suback5(0x90, &b, MQTT_OK, NULL);
    expect_suback5(0xB0, &b, MQTT_ERR_PROTOCOL, "[MQTT5-3.11.3-2]");
    b.d[1] = 0;
    expect_suback5(0x90, &b, MQTT_ERR_MALFORMED, "[MQTT-2.3.1]");
    b.n = 1;
    expect_suback5(0x90, &b, MQTT_ERR_MALFORMED, "[MQTT5 3.9.2]");

    props.n = b.n = 0;
    p_varint(&props, MQTT_PROP_SUBSCRIPTION_ID, 1);
    bb_u16(&b, 4);
    bb_props(&b, &props);
    bb_u8(&b, 0);
    expect_suback5(0x90, &b, MQTT_ERR_MALFORMED, "[MQTT5 2.2.2.2] property not valid in SUBACK");
    expect_suback5(0x92, &b, MQTT_ERR_MALFORMED, "[MQTT-2.2.2-1]");
}

/* ---- round trips: 5.0 encoders through the decoders ------------------------ */

/* Run the writer twice (measure, write) over `fill`. */
typedef void (*fill_fn)(mqtt_pw_t *w);

static size_t build_props(fill_fn fill, uint8_t *buf, size_t cap)
{
    mqtt_pw_t w;
    mqtt_pw_init(&w, NULL, 0);
    fill(&w);
    assert_int_equal(mqtt_pw_error(&w), 0);
    size_t n = mqtt_pw_len(&w);
    assert_true(n <= cap);
    mqtt_pw_init(&w, buf, cap);
    fill(&w);
    assert_int_equal(mqtt_pw_error(&w), 0);
    assert_int_equal(mqtt_pw_len(&w), n);
    return n;
}

static void fill_connect(mqtt_pw_t *w)
{
    mqtt_pw_int(w, MQTT_PROP_SESSION_EXPIRY, 0xffffffffu);
    mqtt_pw_int(w, MQTT_PROP_RECEIVE_MAXIMUM, 100);
    mqtt_pw_int(w, MQTT_PROP_MAXIMUM_PACKET_SIZE, 65536);
    mqtt_pw_int(w, MQTT_PROP_TOPIC_ALIAS_MAXIMUM, 16);
    mqtt_pw_int(w, MQTT_PROP_REQUEST_PROBLEM_INFO, 0);
    mqtt_pw_user(w, "client", 6, "bench", 5);
    mqtt_pw_str(w, MQTT_PROP_AUTH_METHOD, "PLAIN", 5);
    mqtt_pw_str(w, MQTT_PROP_AUTH_DATA, "\x00u\x00p", 4);
}

static void fill_will(mqtt_pw_t *w)
{
    mqtt_pw_int(w, MQTT_PROP_WILL_DELAY, 30);
    mqtt_pw_int(w, MQTT_PROP_MESSAGE_EXPIRY, 3600);
    mqtt_pw_str(w, MQTT_PROP_CONTENT_TYPE, "text/plain", 10);
    mqtt_pw_str(w, MQTT_PROP_RESPONSE_TOPIC, "status/ack", 10);
    mqtt_pw_str(w, MQTT_PROP_CORRELATION_DATA, "\x01\x02", 2);
    mqtt_pw_user(w, "a", 1, "1", 1);
    mqtt_pw_user(w, "a", 1, "2", 1);
}

static void round_trip_connect_v5_full(void **state)
{
    (void)state;
    uint8_t props[128], will[128];
    size_t np = build_props(fill_connect, props, sizeof props);
    size_t nw = build_props(fill_will, will, sizeof will);
    static const uint8_t wp[] = {0, 1, 2, 0xff};
    mqtt_connect_opts_t o = {
        .proto = MQTT_PROTO_V5,
        .clean_session = 0,
        .keepalive = 30,
        .client_id = "",
        .username = "user",
        .password = "pw",
        .will_topic = "status/dev",
        .will_payload = wp,
        .will_payload_len = 4,
        .will_qos = 2,
        .will_retain = 1,
        .props = props,
        .props_len = (uint32_t)np,
        .will_props = will,
        .will_props_len = (uint32_t)nw,
    };
    size_t size = mqtt_connect_size(&o);
    uint8_t *buf = malloc(size);
    assert_non_null(buf);
    assert_int_equal(mqtt_encode_connect(buf, &o), size);
    mqtt_raw_t r = frame_one(buf, size);
    mqtt_connect_t c;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_connect(&r, &c, &why), MQTT_ERR_PROTOCOL_VERSION);
    assert_int_equal(mqtt_decode_connect_v5ok(&r, &c, 1, &why), MQTT_OK);
    assert_int_equal(c.proto, 5);
    assert_int_equal(c.clean_session, 0);
    assert_int_equal(c.keepalive, 30);
    assert_int_equal(c.client_id.len, 0);
    assert_true(str_eq(c.username, "user"));
    assert_true(str_eq(c.password, "pw"));
    assert_true(str_eq(c.will_topic, "status/dev"));
    assert_int_equal(c.will_payload.len, 4);
    assert_memory_equal(c.will_payload.p, wp, 4);
    assert_int_equal(c.will_qos, 2);
    assert_int_equal(c.will_retain, 1);
    assert_int_equal(c.props.raw_len, np);
    assert_memory_equal(c.props.raw, props, np);
    assert_int_equal(c.props.session_expiry, 0xffffffffu);
    assert_int_equal(c.props.receive_max, 100);
    assert_int_equal(c.props.request_problem_info, 0);
    assert_true(str_eq(c.props.auth_method, "PLAIN"));
    assert_int_equal(c.will_props.raw_len, nw);
    assert_memory_equal(c.will_props.raw, will, nw);
    assert_int_equal(c.will_props.will_delay, 30);
    assert_true(str_eq(c.will_props.response_topic, "status/ack"));
    assert_int_equal(c.will_props.user_count, 2);
    free(buf);
}

static void round_trip_connect_v5_minimal_bytes(void **state)
{
    (void)state;
    mqtt_connect_opts_t o = {
        .proto = MQTT_PROTO_V5, .clean_session = 1, .keepalive = 60, .client_id = "c"};
    static const uint8_t want[] = {0x10, 0x0e, 0x00, 0x04, 'M',  'Q',  'T',  'T',
                                   0x05, 0x02, 0x00, 0x3c, 0x00, 0x00, 0x01, 'c'};
    uint8_t buf[32];
    assert_int_equal(mqtt_connect_size(&o), sizeof want);
    assert_int_equal(mqtt_encode_connect(buf, &o), sizeof want);
    assert_memory_equal(buf, want, sizeof want);
    /* A will without Will Properties still gets a Property Length of 0. */
    o.will_topic = "w";
    o.will_payload = (const uint8_t *)"m";
    o.will_payload_len = 1;
    size_t n = mqtt_connect_size(&o);
    assert_int_equal(n, sizeof want + 1 + 3 + 3);
    assert_int_equal(mqtt_encode_connect(buf, &o), n);
    mqtt_raw_t r = frame_one(buf, n);
    mqtt_connect_t c;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_connect_v5ok(&r, &c, 1, &why), MQTT_OK);
    assert_int_equal(c.will_props.present, 0);
    assert_true(str_eq(c.will_topic, "w"));
}

static void round_trip_connect_v311_ignores_v5_fields(void **state)
{
    (void)state;
    static const uint8_t junk[] = {0x26, 0, 1, 'k', 0, 1, 'v'};
    mqtt_connect_opts_t plain = {.proto = MQTT_PROTO_V311,
                                 .clean_session = 1,
                                 .keepalive = 60,
                                 .client_id = "c",
                                 .username = "u",
                                 .will_topic = "w",
                                 .will_payload = junk,
                                 .will_payload_len = 2};
    mqtt_connect_opts_t with = plain;
    with.props = junk;
    with.props_len = sizeof junk;
    with.will_props = junk;
    with.will_props_len = sizeof junk;
    uint8_t a[64], b[64];
    assert_int_equal(mqtt_connect_size(&plain), mqtt_connect_size(&with));
    size_t n = mqtt_encode_connect(a, &plain);
    assert_int_equal(mqtt_encode_connect(b, &with), n);
    assert_memory_equal(a, b, n);
    static const uint8_t want[] = {0x10, 0x17, 0x00, 0x04, 'M',  'Q',  'T',  'T',  0x04,
                                   0x86, 0x00, 0x3c, 0x00, 0x01, 'c',  0x00, 0x01, 'w',
                                   0x00, 0x02, 0x26, 0x00, 0x00, 0x01, 'u'};
    assert_int_equal(n, sizeof want);
    assert_memory_equal(a, want, n);
}

static void fill_publish_in(mqtt_pw_t *w)
{
    mqtt_pw_user(w, "z", 1, "last?", 5);
    mqtt_pw_int(w, MQTT_PROP_TOPIC_ALIAS, 2);
    mqtt_pw_int(w, MQTT_PROP_PAYLOAD_FORMAT, 1);
    mqtt_pw_str(w, MQTT_PROP_CONTENT_TYPE, "a/b", 3);
    mqtt_pw_user(w, "a", 1, "first?", 6);
    mqtt_pw_int(w, MQTT_PROP_MESSAGE_EXPIRY, 100);
}

static void round_trip_publish_v5(void **state)
{
    (void)state;
    uint8_t props[128];
    size_t np = build_props(fill_publish_in, props, sizeof props);
    static const uint8_t payload[] = "payload bytes";
    for (uint8_t qos = 0; qos <= 2; qos++) {
        for (int with_props = 0; with_props <= 1; with_props++) {
            size_t pl = with_props ? np : 0;
            size_t size = mqtt_publish_v5_size(5, qos, pl, sizeof payload);
            uint8_t *buf = malloc(size);
            assert_non_null(buf);
            assert_int_equal(mqtt_encode_publish_v5(buf, (const uint8_t *)"a/b/c", 5, qos, 1,
                                                    qos ? 1 : 0, qos ? 77 : 0,
                                                    with_props ? props : NULL, pl, payload,
                                                    sizeof payload),
                             size);
            mqtt_raw_t r = frame_one(buf, size);
            mqtt_publish_t p;
            const char *why = NULL;
            assert_int_equal(mqtt_decode_publish(&r, MQTT_PROTO_V5, &p, &why), MQTT_OK);
            assert_true(str_eq(p.topic, "a/b/c"));
            assert_int_equal(p.qos, qos);
            assert_int_equal(p.retain, 1);
            assert_int_equal(p.dup, qos ? 1 : 0);
            assert_int_equal(p.packet_id, qos ? 77 : 0);
            assert_int_equal(p.payload_len, sizeof payload);
            assert_memory_equal(p.payload, payload, sizeof payload);
            assert_int_equal(p.props.raw_len, pl);
            if (pl)
                assert_memory_equal(p.props.raw, props, pl);
            free(buf);
        }
    }
    /* Alias only, empty topic and payload. */
    uint8_t buf[32];
    static const uint8_t alias[] = {MQTT_PROP_TOPIC_ALIAS, 0, 9};
    size_t size = mqtt_publish_v5_size(0, 0, sizeof alias, 0);
    assert_int_equal(size, 1 + 1 + 2 + 1 + 3);
    assert_int_equal(mqtt_encode_publish_v5(buf, NULL, 0, 0, 0, 0, 0, alias, sizeof alias, NULL, 0),
                     size);
    mqtt_raw_t r = frame_one(buf, size);
    mqtt_publish_t p;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_publish(&r, MQTT_PROTO_V5, &p, &why), MQTT_OK);
    assert_int_equal(p.topic.len, 0);
    assert_int_equal(p.props.topic_alias, 9);
    assert_int_equal(p.payload_len, 0);
}

/* The broker's forwarding path: a client's PUBLISH in, the subscriber's
 * PUBLISH out with the publisher's properties minus its Topic Alias, plus
 * the matching subscriptions' identifiers. */
static void round_trip_publish_pass_through(void **state)
{
    (void)state;
    uint8_t in_props[128];
    size_t nin = build_props(fill_publish_in, in_props, sizeof in_props);
    size_t size = mqtt_publish_v5_size(3, 1, nin, 2);
    uint8_t in[256], out[256], fwd[128];
    assert_int_equal(mqtt_encode_publish_v5(in, (const uint8_t *)"t/1", 3, 1, 0, 0, 5, in_props,
                                            nin, (const uint8_t *)"hi", 2),
                     size);
    mqtt_raw_t r = frame_one(in, size);
    mqtt_publish_t p;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_publish(&r, MQTT_PROTO_V5, &p, &why), MQTT_OK);

    uint64_t skip = MQTT_PROP_BIT(MQTT_PROP_TOPIC_ALIAS);
    mqtt_pw_t w;
    mqtt_pw_init(&w, fwd, sizeof fwd);
    assert_int_equal(mqtt_pw_copy(&w, &p.props, skip), 0);
    mqtt_pw_int(&w, MQTT_PROP_SUBSCRIPTION_ID, 7);
    mqtt_pw_int(&w, MQTT_PROP_SUBSCRIPTION_ID, 300000);
    assert_int_equal(mqtt_pw_error(&w), 0);
    size_t nf = mqtt_pw_len(&w);
    size_t osize = mqtt_publish_v5_size(p.topic.len, 1, nf, p.payload_len);
    assert_int_equal(mqtt_encode_publish_v5(out, p.topic.p, p.topic.len, 1, 0, 0, 900, fwd, nf,
                                            p.payload, p.payload_len),
                     osize);
    mqtt_raw_t r2 = frame_one(out, osize);
    mqtt_publish_t q;
    assert_int_equal(mqtt_decode_publish_from(&r2, MQTT_PROTO_V5, MQTT_FROM_SERVER, &q, &why),
                     MQTT_OK);
    assert_int_equal(mqtt_decode_publish(&r2, MQTT_PROTO_V5, &p, &why), MQTT_ERR_PROTOCOL);
    assert_int_equal(q.packet_id, 900);
    assert_false(mqtt_props_has(&q.props, MQTT_PROP_TOPIC_ALIAS));
    assert_int_equal(q.props.payload_format, 1);
    assert_int_equal(q.props.message_expiry, 100);
    assert_true(str_eq(q.props.content_type, "a/b"));
    assert_int_equal(q.props.sub_id_count, 2);
    uint32_t pos = 0, id;
    assert_int_equal(mqtt_props_sub_id_next(&q.props, &pos, &id), 1);
    assert_int_equal(id, 7);
    assert_int_equal(mqtt_props_sub_id_next(&q.props, &pos, &id), 1);
    assert_int_equal(id, 300000);
    /* User properties in the publisher's order. */
    pos = 0;
    mqtt_str_t k, v;
    assert_int_equal(mqtt_props_user_next(&q.props, &pos, &k, &v), 1);
    assert_true(str_eq(k, "z") && str_eq(v, "last?"));
    assert_int_equal(mqtt_props_user_next(&q.props, &pos, &k, &v), 1);
    assert_true(str_eq(k, "a") && str_eq(v, "first?"));
    assert_int_equal(mqtt_props_user_next(&q.props, &pos, &k, &v), 0);
    assert_int_equal(q.payload_len, 2);
}

static void fill_reason(mqtt_pw_t *w)
{
    mqtt_pw_str(w, MQTT_PROP_REASON_STRING, "because", 7);
    mqtt_pw_user(w, "k", 1, "v", 1);
}

static void round_trip_acks_v5(void **state)
{
    (void)state;
    uint8_t props[64];
    size_t np = build_props(fill_reason, props, sizeof props);
    static const uint8_t types[] = {MQTT_PUBACK, MQTT_PUBREC, MQTT_PUBREL, MQTT_PUBCOMP};
    for (size_t t = 0; t < 4; t++) {
        uint8_t type = types[t];
        uint8_t err = type == MQTT_PUBREL || type == MQTT_PUBCOMP ? MQTT_RC_PACKET_ID_NOT_FOUND
                                                                  : MQTT_RC_NOT_AUTHORIZED;
        const struct {
            uint8_t reason;
            size_t props_len;
            size_t size;
        } forms[] = {{0, 0, 4}, {err, 0, 5}, {0, np, 6 + np}, {err, np, 6 + np}};
        for (size_t f = 0; f < 4; f++) {
            uint8_t buf[128];
            size_t size = mqtt_ack_v5_size(forms[f].reason, forms[f].props_len);
            assert_int_equal(size, forms[f].size);
            assert_int_equal(mqtt_encode_ack_v5(buf, type, 0x1234, forms[f].reason,
                                                forms[f].props_len ? props : NULL,
                                                forms[f].props_len),
                             size);
            if (f == 0) { /* the 3.1.1 bytes */
                uint8_t old[4];
                mqtt_encode_ack(old, type, 0x1234);
                assert_memory_equal(buf, old, 4);
            }
            mqtt_raw_t r = frame_one(buf, size);
            mqtt_ack_t a;
            const char *why = NULL;
            assert_int_equal(mqtt_decode_ack_v5(&r, &a, &why), MQTT_OK);
            assert_int_equal(a.packet_id, 0x1234);
            assert_int_equal(a.reason, forms[f].reason);
            assert_int_equal(a.props.raw_len, forms[f].props_len);
            if (forms[f].props_len)
                assert_true(str_eq(a.props.reason_string, "because"));
        }
    }
}

static void round_trip_suback_unsuback_v5(void **state)
{
    (void)state;
    uint8_t props[64], buf[128];
    size_t np = build_props(fill_reason, props, sizeof props);
    static const uint8_t sub_rcs[] = {0x00, 0x01, 0x02, 0x80, 0x9e, 0xa2};
    static const uint8_t unsub_rcs[] = {0x00, 0x11, 0x87};
    for (int with = 0; with <= 1; with++) {
        size_t pl = with ? np : 0;
        size_t size = mqtt_suback_v5_size(pl, sizeof sub_rcs);
        assert_int_equal(
            mqtt_encode_suback_v5(buf, 12, with ? props : NULL, pl, sub_rcs, sizeof sub_rcs), size);
        mqtt_raw_t r = frame_one(buf, size);
        assert_int_equal(r.hdr, 0x90);
        mqtt_suback_t s;
        const char *why = NULL;
        assert_int_equal(mqtt_decode_suback_v5(&r, &s, &why), MQTT_OK);
        assert_int_equal(s.packet_id, 12);
        assert_int_equal(s.count, sizeof sub_rcs);
        assert_memory_equal(s.reasons, sub_rcs, sizeof sub_rcs);
        assert_int_equal(s.props.raw_len, pl);

        size = mqtt_suback_v5_size(pl, sizeof unsub_rcs);
        assert_int_equal(
            mqtt_encode_unsuback_v5(buf, 13, with ? props : NULL, pl, unsub_rcs, sizeof unsub_rcs),
            size);
        r = frame_one(buf, size);
        assert_int_equal(r.hdr, 0xB0);
        assert_int_equal(mqtt_decode_suback_v5(&r, &s, &why), MQTT_OK);
        assert_int_equal(s.packet_id, 13);
        assert_int_equal(s.count, sizeof unsub_rcs);
        assert_memory_equal(s.reasons, unsub_rcs, sizeof unsub_rcs);
        if (with)
            assert_true(str_eq(s.props.reason_string, "because"));
    }
}

static void fill_server_disconnect(mqtt_pw_t *w)
{
    mqtt_pw_str(w, MQTT_PROP_REASON_STRING, "moving", 6);
    mqtt_pw_str(w, MQTT_PROP_SERVER_REFERENCE, "b.example:1883", 14);
}

static void round_trip_disconnect_and_auth_v5(void **state)
{
    (void)state;
    uint8_t buf[128], props[64];
    mqtt_raw_t r;
    mqtt_disconnect_t d;
    mqtt_auth_t a;
    const char *why = NULL;

    assert_int_equal(mqtt_disconnect_v5_size(0, 0), 2);
    assert_int_equal(mqtt_encode_disconnect_v5(buf, 0, NULL, 0), 2);
    assert_memory_equal(buf, "\xe0\x00", 2);
    assert_int_equal(mqtt_disconnect_v5_size(MQTT_RC_DISCONNECT_WITH_WILL, 0), 3);
    assert_int_equal(mqtt_encode_disconnect_v5(buf, MQTT_RC_DISCONNECT_WITH_WILL, NULL, 0), 3);
    assert_memory_equal(buf, "\xe0\x01\x04", 3);
    r = frame_one(buf, 3);
    assert_int_equal(mqtt_decode_disconnect_v5(&r, MQTT_FROM_CLIENT, &d, &why), MQTT_OK);
    assert_int_equal(d.reason, 4);

    size_t np = build_props(fill_server_disconnect, props, sizeof props);
    size_t size = mqtt_disconnect_v5_size(MQTT_RC_SERVER_MOVED, np);
    assert_int_equal(mqtt_encode_disconnect_v5(buf, MQTT_RC_SERVER_MOVED, props, np), size);
    r = frame_one(buf, size);
    assert_int_equal(mqtt_decode_disconnect_v5(&r, MQTT_FROM_SERVER, &d, &why), MQTT_OK);
    assert_int_equal(d.reason, MQTT_RC_SERVER_MOVED);
    assert_true(str_eq(d.props.server_reference, "b.example:1883"));
    /* Normal disconnection with properties keeps its reason byte. */
    size = mqtt_disconnect_v5_size(0, np);
    assert_int_equal(size, 2 + 1 + 1 + np);
    assert_int_equal(mqtt_encode_disconnect_v5(buf, 0, props, np), size);
    r = frame_one(buf, size);
    assert_int_equal(mqtt_decode_disconnect_v5(&r, MQTT_FROM_SERVER, &d, &why), MQTT_OK);
    assert_int_equal(d.reason, 0);

    assert_int_equal(mqtt_auth_size(0, 0), 2);
    assert_int_equal(mqtt_encode_auth(buf, 0, NULL, 0), 2);
    assert_memory_equal(buf, "\xf0\x00", 2);
    r = frame_one(buf, 2);
    assert_int_equal(mqtt_decode_auth(&r, &a, &why), MQTT_OK);
    mqtt_pw_t w;
    mqtt_pw_init(&w, props, sizeof props);
    mqtt_pw_str(&w, MQTT_PROP_AUTH_METHOD, "SCRAM-SHA-256", 13);
    mqtt_pw_str(&w, MQTT_PROP_AUTH_DATA, "r=abc", 5);
    np = mqtt_pw_len(&w);
    size = mqtt_auth_size(MQTT_RC_CONTINUE_AUTHENTICATION, np);
    assert_int_equal(mqtt_encode_auth(buf, MQTT_RC_CONTINUE_AUTHENTICATION, props, np), size);
    r = frame_one(buf, size);
    assert_int_equal(mqtt_check_client_header(r.hdr, MQTT_PROTO_V5, &why), MQTT_OK);
    assert_int_equal(mqtt_decode_auth(&r, &a, &why), MQTT_OK);
    assert_int_equal(a.reason, 0x18);
    assert_true(str_eq(a.props.auth_method, "SCRAM-SHA-256"));
    assert_true(str_eq(a.props.auth_data, "r=abc"));
}

static void fill_connack(mqtt_pw_t *w)
{
    mqtt_pw_int(w, MQTT_PROP_SESSION_EXPIRY, 60);
    mqtt_pw_int(w, MQTT_PROP_RECEIVE_MAXIMUM, 32);
    mqtt_pw_int(w, MQTT_PROP_MAXIMUM_QOS, 1);
    mqtt_pw_int(w, MQTT_PROP_RETAIN_AVAILABLE, 0);
    mqtt_pw_int(w, MQTT_PROP_MAXIMUM_PACKET_SIZE, 1 << 20);
    mqtt_pw_str(w, MQTT_PROP_ASSIGNED_CLIENT_ID, "auto-0-1", 8);
    mqtt_pw_int(w, MQTT_PROP_TOPIC_ALIAS_MAXIMUM, 10);
    mqtt_pw_int(w, MQTT_PROP_WILDCARD_SUB_AVAILABLE, 1);
    mqtt_pw_int(w, MQTT_PROP_SUB_ID_AVAILABLE, 1);
    mqtt_pw_int(w, MQTT_PROP_SHARED_SUB_AVAILABLE, 0);
    mqtt_pw_int(w, MQTT_PROP_SERVER_KEEP_ALIVE, 45);
    mqtt_pw_user(w, "node", 4, "a1", 2);
}

static void round_trip_connack_v5(void **state)
{
    (void)state;
    uint8_t props[128], buf[160];
    size_t np = build_props(fill_connack, props, sizeof props);
    size_t size = mqtt_connack_v5_size(np);
    assert_int_equal(mqtt_encode_connack_v5(buf, 1, 0, props, np), size);
    mqtt_raw_t r = frame_one(buf, size);
    mqtt_connack_t c;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_connack_v5(&r, &c, &why), MQTT_OK);
    assert_int_equal(c.session_present, 1);
    assert_int_equal(c.reason, 0);
    assert_int_equal(c.props.max_qos, 1);
    assert_int_equal(c.props.retain_available, 0);
    assert_int_equal(c.props.max_packet_size, 1 << 20);
    assert_true(str_eq(c.props.assigned_client_id, "auto-0-1"));
    assert_int_equal(c.props.shared_sub_available, 0);
    assert_int_equal(c.props.server_keep_alive, 45);
    /* Refusal without properties: 5 bytes. */
    assert_int_equal(mqtt_connack_v5_size(0), 5);
    assert_int_equal(mqtt_encode_connack_v5(buf, 0, MQTT_RC_BANNED, NULL, 0), 5);
    assert_memory_equal(buf, "\x20\x03\x00\x8a\x00", 5);
    r = frame_one(buf, 5);
    assert_int_equal(mqtt_decode_connack_v5(&r, &c, &why), MQTT_OK);
    assert_int_equal(c.reason, MQTT_RC_BANNED);
}

static void round_trip_subscribe_unsubscribe_v5(void **state)
{
    (void)state;
    uint8_t user[32], buf[128];
    mqtt_pw_t w;
    mqtt_pw_init(&w, user, sizeof user);
    mqtt_pw_user(&w, "tag", 3, "x", 1);
    size_t nu = mqtt_pw_len(&w);
    static const char filter[] = "s/+/x/#";
    const uint16_t fl = (uint16_t)strlen(filter);
    static const uint32_t ids[] = {0, 1, 127, 128, 268435455};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        for (int with = 0; with <= 1; with++) {
            const uint8_t o = MQTT_SUBOPT_MAKE(2, 1, 0, 1);
            size_t pl = with ? nu : 0;
            size_t size = mqtt_subscribe_v5_size(fl, ids[i], pl);
            assert_int_equal(mqtt_encode_subscribe_v5(buf, 21, (const uint8_t *)filter, fl, o,
                                                      ids[i], with ? user : NULL, pl),
                             size);
            mqtt_raw_t r = frame_one(buf, size);
            assert_int_equal(r.hdr, 0x82);
            mqtt_sub_iter_t it;
            const char *why = NULL;
            assert_int_equal(mqtt_decode_subscribe_v5(&r, &it, &why), MQTT_OK);
            assert_int_equal(it.packet_id, 21);
            assert_int_equal(it.count, 1);
            assert_int_equal(mqtt_props_has(&it.props, MQTT_PROP_SUBSCRIPTION_ID), ids[i] != 0);
            assert_int_equal(it.props.sub_id, ids[i]);
            assert_int_equal(it.props.user_count, with ? 1 : 0);
            mqtt_str_t f;
            uint8_t got = 0;
            assert_int_equal(mqtt_sub_next_opts(&it, &f, &got), 1);
            assert_true(str_eq(f, filter));
            assert_int_equal(got, o);
            assert_int_equal(mqtt_sub_next_opts(&it, &f, &got), 0);
        }
    }
    /* UNSUBSCRIBE, with and without properties. */
    for (int with = 0; with <= 1; with++) {
        size_t pl = with ? nu : 0;
        size_t size = mqtt_unsubscribe_v5_size(fl, pl);
        assert_int_equal(mqtt_encode_unsubscribe_v5(buf, 22, (const uint8_t *)filter, fl,
                                                    with ? user : NULL, pl),
                         size);
        mqtt_raw_t r = frame_one(buf, size);
        assert_int_equal(r.hdr, 0xA2);
        mqtt_sub_iter_t it;
        const char *why = NULL;
        assert_int_equal(mqtt_decode_unsubscribe_v5(&r, &it, &why), MQTT_OK);
        assert_int_equal(it.packet_id, 22);
        assert_int_equal(it.props.user_count, with ? 1 : 0);
        mqtt_str_t f;
        assert_int_equal(mqtt_sub_next(&it, &f, NULL), 1);
        assert_true(str_eq(f, filter));
    }
    /* A shared subscription survives the trip. */
    static const char shared[] = "$share/workers/jobs/+";
    size_t size = mqtt_subscribe_v5_size(sizeof shared - 1, 0, 0);
    mqtt_encode_subscribe_v5(buf, 23, (const uint8_t *)shared, sizeof shared - 1, 1, 0, NULL, 0);
    mqtt_raw_t r = frame_one(buf, size);
    mqtt_sub_iter_t it;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_subscribe_v5(&r, &it, &why), MQTT_OK);
}

/* ---- shared subscriptions ----------------------------------------------------- */

static void shared_filter_parse_cases(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int rc;
        const char *group, *filter;
    } cases[] = {
        {"$share/g/a/b", 1, "g", "a/b"},
        {"$share/g/#", 1, "g", "#"},
        {"$share/group-1/+/x", 1, "group-1", "+/x"},
        {"$share/\xc3\xa9t\xc3\xa9/a", 1, "\xc3\xa9t\xc3\xa9", "a"},
        {"$share/g//", 1, "g", "/"},
        {"a/b", 0, NULL, NULL},
        {"$share", 0, NULL, NULL},
        {"$sharex/g/a", 0, NULL, NULL},
        {"$SHARE/g/a", 0, NULL, NULL},
        {"$shar", 0, NULL, NULL},
        {"", 0, NULL, NULL},
        {"$share/", -1, NULL, NULL},
        {"$share//a", -1, NULL, NULL},
        {"$share/g", -1, NULL, NULL},
        {"$share/g/", -1, NULL, NULL},
        {"$share/g+/a", -1, NULL, NULL},
        {"$share/+/a", -1, NULL, NULL},
        {"$share/#/a", -1, NULL, NULL},
        {"$share/g#/a", -1, NULL, NULL},
        {"$share/g/a#", -1, NULL, NULL},
        {"$share/g/a/#/b", -1, NULL, NULL},
        {"$share/g/a+", -1, NULL, NULL},
        {"$share/\xff/a", -1, NULL, NULL},
        {"$share/g/\xff", -1, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const uint8_t *f = (const uint8_t *)cases[i].in;
        size_t len = strlen(cases[i].in);
        const uint8_t *g = (const uint8_t *)"untouched", *rf = g;
        size_t gl = 99, rl = 99;
        int rc = mqtt_shared_filter_parse(f, len, &g, &gl, &rf, &rl);
        if (rc != cases[i].rc)
            fail_msg("\"%s\": got %d want %d", cases[i].in, rc, cases[i].rc);
        if (rc == 1) {
            assert_int_equal(gl, strlen(cases[i].group));
            assert_memory_equal(g, cases[i].group, gl);
            assert_int_equal(rl, strlen(cases[i].filter));
            assert_memory_equal(rf, cases[i].filter, rl);
            assert_true(g > f && rf > g && rf + rl == f + len);
        } else {
            assert_int_equal(gl, 99);
            assert_int_equal(rl, 99);
        }
        /* Outputs are optional. */
        assert_int_equal(mqtt_shared_filter_parse(f, len, NULL, NULL, NULL, NULL), rc);
    }
    assert_int_equal(mqtt_shared_filter_parse(NULL, 0, NULL, NULL, NULL, NULL), 0);
}

/* ---- the 3.1.1 side is untouched ---------------------------------------------- */

static void v311_subscribe_walkers_unchanged(void **state)
{
    (void)state;
    bb_t b = {0};
    bb_u16(&b, 8);
    bb_str(&b, "a");
    bb_u8(&b, 2);
    bb_str(&b, "b");
    bb_u8(&b, 0);
    mqtt_raw_t r = raw_of(0x82, &b);
    mqtt_sub_iter_t it;
    const char *why = NULL;
    assert_int_equal(mqtt_decode_subscribe(&r, &it, &why), MQTT_OK);
    assert_int_equal(it.proto, 0);
    assert_int_equal(it.props.present, 0);
    mqtt_sub_iter_t again = it;
    mqtt_str_t f;
    uint8_t o = 0xff;
    assert_int_equal(mqtt_sub_next_opts(&it, &f, &o), 1);
    assert_int_equal(o, 2);
    assert_int_equal(mqtt_sub_next(&again, &f, &o), 1);
    assert_int_equal(o, 2);
    /* A 5.0 options byte is still refused by the 3.1.1 decoder. */
    b.d[5] = MQTT_SUBOPT_MAKE(1, 1, 0, 0);
    r = raw_of(0x82, &b);
    assert_int_equal(mqtt_decode_subscribe(&r, &it, &why), MQTT_ERR_MALFORMED);
    assert_why(why, "[MQTT-3-8.3-4]");
    /* 3.1.1 DISCONNECT with a body is still malformed; 5.0 reads it. */
    bb_t d = {0};
    bb_u8(&d, 0x04);
    r = raw_of(0xE0, &d);
    assert_int_equal(mqtt_decode_empty(&r, &why), MQTT_ERR_MALFORMED);
    mqtt_disconnect_t dc;
    assert_int_equal(mqtt_decode_disconnect_v5(&r, MQTT_FROM_CLIENT, &dc, &why), MQTT_OK);
    /* And a 3.1.1 ack with a reason byte. */
    bb_t a = {0};
    bb_u16(&a, 1);
    bb_u8(&a, 0x10);
    r = raw_of(0x40, &a);
    uint16_t id;
    assert_int_equal(mqtt_decode_ack(&r, &id, &why), MQTT_ERR_MALFORMED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* properties: placement, table */
        cmocka_unit_test(props_identifiers_in_connect),
        cmocka_unit_test(props_identifiers_in_connack),
        cmocka_unit_test(props_identifiers_in_publish),
        cmocka_unit_test(props_identifiers_in_puback),
        cmocka_unit_test(props_identifiers_in_pubrec),
        cmocka_unit_test(props_identifiers_in_pubrel),
        cmocka_unit_test(props_identifiers_in_pubcomp),
        cmocka_unit_test(props_identifiers_in_subscribe),
        cmocka_unit_test(props_identifiers_in_suback),
        cmocka_unit_test(props_identifiers_in_unsubscribe),
        cmocka_unit_test(props_identifiers_in_unsuback),
        cmocka_unit_test(props_identifiers_in_pingreq),
        cmocka_unit_test(props_identifiers_in_pingresp),
        cmocka_unit_test(props_identifiers_in_disconnect),
        cmocka_unit_test(props_identifiers_in_auth),
        cmocka_unit_test(props_identifiers_in_will),
        cmocka_unit_test(props_type_and_name_table),
        cmocka_unit_test(props_unknown_identifiers_malformed),
        cmocka_unit_test(props_identifier_varint_forms),
        cmocka_unit_test(props_pingreq_and_unknown_places_take_nothing),
        /* properties: values */
        cmocka_unit_test(props_duplicates_protocol_error),
        cmocka_unit_test(props_user_property_repeats_in_order),
        cmocka_unit_test(props_subscription_identifier_rules),
        cmocka_unit_test(props_zero_or_one_bytes),
        cmocka_unit_test(props_zero_values_protocol_error),
        cmocka_unit_test(props_response_topic_must_be_topic_name),
        cmocka_unit_test(props_truncated_values_malformed),
        cmocka_unit_test(props_utf8_checked_binary_not),
        cmocka_unit_test(props_read_property_length),
        cmocka_unit_test(props_auth_data_needs_method_in_connect),
        cmocka_unit_test(props_session_expiry_in_disconnect_by_sender),
        cmocka_unit_test(props_defaults_and_fields),
        cmocka_unit_test(props_iterator_walks_all_in_order),
        cmocka_unit_test(varint_decode_cases),
        /* writer */
        cmocka_unit_test(writer_measure_then_write),
        cmocka_unit_test(writer_rejects_bad_calls),
        cmocka_unit_test(writer_copy_filters_and_keeps_order),
        /* reason codes */
        cmocka_unit_test(reason_code_tables),
        cmocka_unit_test(reason_code_names),
        cmocka_unit_test(err_reason_mapping),
        /* CONNECT */
        cmocka_unit_test(connect_v5_refused_without_opt_in),
        cmocka_unit_test(connect_v5_full_decodes),
        cmocka_unit_test(connect_v5_empty_client_id_any_clean_start),
        cmocka_unit_test(connect_v5_password_without_user_name),
        cmocka_unit_test(connect_v5_property_errors),
        cmocka_unit_test(connect_v5_level_and_flag_rules),
        cmocka_unit_test(connect_v5ok_levels_3_and_4_unchanged),
        /* PUBLISH */
        cmocka_unit_test(publish_v5_properties_then_payload),
        cmocka_unit_test(publish_v5_topic_alias_and_empty_topic),
        cmocka_unit_test(publish_v5_subscription_ids_by_direction),
        cmocka_unit_test(publish_v5_property_errors),
        cmocka_unit_test(publish_proto4_ignores_properties),
        /* acks */
        cmocka_unit_test(ack_v5_remaining_length_forms),
        cmocka_unit_test(ack_v5_reason_codes_per_type),
        cmocka_unit_test(ack_v5_errors),
        /* SUBSCRIBE, UNSUBSCRIBE */
        cmocka_unit_test(subscribe_v5_decodes),
        cmocka_unit_test(subscribe_v5_options_rules),
        cmocka_unit_test(subscribe_v5_shared_filters),
        cmocka_unit_test(subscribe_v5_property_rules),
        cmocka_unit_test(unsubscribe_v5_decodes),
        /* DISCONNECT, AUTH */
        cmocka_unit_test(disconnect_v5_forms),
        cmocka_unit_test(disconnect_v5_reason_codes_by_sender),
        cmocka_unit_test(auth_forms_and_rules),
        /* client side */
        cmocka_unit_test(connack_v5_decodes_and_rules),
        cmocka_unit_test(suback_unsuback_v5_decode),
        /* round trips */
        cmocka_unit_test(round_trip_connect_v5_full),
        cmocka_unit_test(round_trip_connect_v5_minimal_bytes),
        cmocka_unit_test(round_trip_connect_v311_ignores_v5_fields),
        cmocka_unit_test(round_trip_publish_v5),
        cmocka_unit_test(round_trip_publish_pass_through),
        cmocka_unit_test(round_trip_acks_v5),
        cmocka_unit_test(round_trip_suback_unsuback_v5),
        cmocka_unit_test(round_trip_disconnect_and_auth_v5),
        cmocka_unit_test(round_trip_connack_v5),
        cmocka_unit_test(round_trip_subscribe_unsubscribe_v5),
        /* shared subscriptions, 3.1.1 regression */
        cmocka_unit_test(shared_filter_parse_cases),
        cmocka_unit_test(v311_subscribe_walkers_unchanged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
