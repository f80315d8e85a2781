/* mqtt_bb.h -- test helpers shared by the codec and property unit tests:
 * a byte builder (bb_t) that writes MQTT wire fields by hand, independently
 * of the codec under test, and checks on what the codec returns.  Include
 * after <cmocka.h> and mqtt_codec.h.  Everything is static inline, so a
 * test that uses only some of it compiles without unused warnings.
 */
#ifndef ANTENNA_TEST_MQTT_BB_H
#define ANTENNA_TEST_MQTT_BB_H

#include <stdint.h>
#include <string.h>

typedef struct {
    uint8_t d[4096];
    size_t n;
} bb_t;

static inline void bb_u8(bb_t *b, uint8_t v)
{
    assert_true(b->n < sizeof b->d);
    b->d[b->n++] = v;
}

static inline void bb_u16(bb_t *b, uint16_t v)
{
    bb_u8(b, (uint8_t)(v >> 8));
    bb_u8(b, (uint8_t)v);
}

static inline void bb_u32(bb_t *b, uint32_t v)
{
    bb_u16(b, (uint16_t)(v >> 16));
    bb_u16(b, (uint16_t)v);
}

static inline void bb_raw(bb_t *b, const void *p, size_t n)
{
    assert_true(b->n + n <= sizeof b->d);
    if (n)
        memcpy(b->d + b->n, p, n);
    b->n += n;
}

static inline void bb_strn(bb_t *b, const void *p, size_t n)
{
    bb_u16(b, (uint16_t)n);
    bb_raw(b, p, n);
}

static inline void bb_str(bb_t *b, const char *s)
{
    bb_strn(b, s, strlen(s));
}

/* Variable Byte Integer, shortest form (written here, not by the codec). */
static inline void bb_varint(bb_t *b, uint32_t v)
{
    do {
        uint8_t c = v & 0x7f;
        v >>= 7;
        if (v)
            c |= 0x80;
        bb_u8(b, c);
    } while (v);
}

/* The built bytes as the body of a packet with fixed header byte hdr. */
static inline mqtt_raw_t raw_of(uint8_t hdr, const bb_t *b)
{
    mqtt_raw_t r;
    r.hdr = hdr;
    r.len = (uint32_t)b->n;
    r.body = b->n ? b->d : NULL;
    return r;
}

/* A refusal names the rule it broke: why starts with prefix. */
static inline void assert_why(const char *why, const char *prefix)
{
    assert_non_null(why);
    if (strncmp(why, prefix, strlen(prefix)) != 0)
        fail_msg("reason \"%s\" does not start with \"%s\"", why, prefix);
}

/* Frame one whole encoded packet: it must come back in place. */
static inline mqtt_raw_t frame_one(const uint8_t *buf, size_t n)
{
    mqtt_parser_t ps = {0};
    mqtt_raw_t r;
    size_t used = 0;
    const char *why = NULL;

    assert_int_equal(mqtt_parser_next(&ps, buf, n, &used, MQTT_MAX_REMAINING, &r, &why), 1);
    assert_int_equal(used, n);
    assert_null(ps.buf);
    if (r.len)
        assert_ptr_equal(r.body, buf + (n - r.len));
    else
        assert_null(r.body);
    mqtt_parser_reset(&ps);
    return r;
}

static inline int str_eq(mqtt_str_t s, const char *c)
{
    return s.len == strlen(c) && (s.len == 0 || memcmp(s.p, c, s.len) == 0);
}

#endif
