/* test_cl_wire.c -- src/cluster/cl_wire: the node links' frames.  Every
 * frame type round trips through its encoder and decoder; a stream of
 * frames splits at every byte boundary (0 = more bytes needed); invalid
 * lengths are refused (empty, over max); a body cut short or with bytes
 * left over is refused by each decoder; a message's payload is the rest
 * of its frame, empty included.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "cluster/cl_wire.h"

static void next(const cl_buf_t *b, size_t *off, uint8_t want_type, const uint8_t **body,
                 uint32_t *len)
{
    uint8_t type;
    long n = cl_frame_next(b->p + *off, b->len - *off, CL_FRAME_MAX, &type, body, len);
    assert_true(n > 0);
    assert_int_equal(type, want_type);
    *off += (size_t)n;
}

static void test_round_trips(void **state)
{
    (void)state;
    cl_buf_t b = {0};
    cl_hello_t h = {.version = CL_WIRE_VERSION,
                    .cluster = "antenna",
                    .cluster_len = 7,
                    .node = "node-b",
                    .node_len = 6,
                    .incarnation = 0x0102030405060708ull};
    for (int i = 0; i < CL_NONCE_LEN; i++)
        h.nonce[i] = (uint8_t)(i * 7);
    uint8_t mac[CL_MAC_LEN];
    memset(mac, 0xab, sizeof(mac));
    cl_enc_hello(&b, &h);
    cl_enc_auth(&b, mac);
    cl_enc_empty(&b, CL_F_PING);
    cl_enc_route(&b, CL_F_ROUTE_ADD, (const uint8_t *)"a/+/#", 5);
    cl_enc_ack(&b, 1234567890123ull);
    cl_msg_t m = {.seq = 42,
                  .published_at = 1700000000123ull,
                  .expiry_ms = 5000,
                  .src = 3,
                  .qos = 2,
                  .flags = CL_MSG_RETAIN,
                  .origin = "c",
                  .origin_len = 1,
                  .topic = (const uint8_t *)"t/x",
                  .topic_len = 3,
                  .props = (const uint8_t *)"\x03\x00\x01j",
                  .props_len = 4,
                  .payload = (const uint8_t *)"hello",
                  .payload_len = 5};
    cl_enc_msg(&b, CL_F_MSG, &m);
    cl_msg_t empty = {.topic = (const uint8_t *)"e", .topic_len = 1};
    cl_enc_msg(&b, CL_F_RETAINED, &empty);

    size_t off = 0;
    const uint8_t *body;
    uint32_t len;
    next(&b, &off, CL_F_HELLO, &body, &len);
    cl_hello_t h2;
    assert_int_equal(cl_dec_hello(body, len, &h2), 0);
    assert_int_equal(h2.version, CL_WIRE_VERSION);
    assert_int_equal(h2.cluster_len, 7);
    assert_memory_equal(h2.cluster, "antenna", 7);
    assert_memory_equal(h2.node, "node-b", 6);
    assert_memory_equal(h2.nonce, h.nonce, CL_NONCE_LEN);
    assert_true(h2.incarnation == h.incarnation);
    assert_int_equal(cl_dec_hello(body, len - 1, &h2), -1);

    next(&b, &off, CL_F_AUTH, &body, &len);
    const uint8_t *mac2;
    assert_int_equal(cl_dec_auth(body, len, &mac2), 0);
    assert_memory_equal(mac2, mac, CL_MAC_LEN);
    assert_int_equal(cl_dec_auth(body, len - 1, &mac2), -1);

    next(&b, &off, CL_F_PING, &body, &len);
    assert_int_equal(len, 0);

    next(&b, &off, CL_F_ROUTE_ADD, &body, &len);
    const uint8_t *f;
    uint16_t fl;
    assert_int_equal(cl_dec_route(body, len, &f, &fl), 0);
    assert_int_equal(fl, 5);
    assert_memory_equal(f, "a/+/#", 5);
    assert_int_equal(cl_dec_route(body, len - 1, &f, &fl), -1);

    next(&b, &off, CL_F_ACK, &body, &len);
    uint64_t seq;
    assert_int_equal(cl_dec_ack(body, len, &seq), 0);
    assert_true(seq == 1234567890123ull);
    assert_int_equal(cl_dec_ack(body, len - 1, &seq), -1);

    next(&b, &off, CL_F_MSG, &body, &len);
    cl_msg_t m2;
    assert_int_equal(cl_dec_msg(body, len, &m2), 0);
    assert_true(m2.seq == 42 && m2.published_at == m.published_at);
    assert_int_equal(m2.expiry_ms, 5000);
    assert_int_equal(m2.src, 3);
    assert_int_equal(m2.qos, 2);
    assert_int_equal(m2.flags, CL_MSG_RETAIN);
    assert_int_equal(m2.origin_len, 1);
    assert_memory_equal(m2.origin, "c", 1);
    assert_int_equal(m2.topic_len, 3);
    assert_memory_equal(m2.topic, "t/x", 3);
    assert_int_equal(m2.props_len, 4);
    assert_memory_equal(m2.props, "\x03\x00\x01j", 4);
    assert_int_equal(m2.payload_len, 5);
    assert_memory_equal(m2.payload, "hello", 5);
    /* cut inside the properties: refused */
    assert_int_equal(cl_dec_msg(body, 8 + 8 + 4 + 2 + 1 + 1 + 1 + 1 + 2 + 3 + 4 + 2, &m2), -1);

    next(&b, &off, CL_F_RETAINED, &body, &len);
    assert_int_equal(cl_dec_msg(body, len, &m2), 0);
    assert_int_equal(m2.payload_len, 0);
    assert_int_equal(m2.origin_len, 0);
    assert_int_equal(off, b.len);
    cl_buf_free(&b);
}

/* CL_MSG_ID: the publish id between the properties and the payload; a
 * message without the flag has none; the flag with number 0 is refused. */
static void test_msg_id(void **state)
{
    (void)state;
    cl_buf_t b = {0};
    cl_msg_t m = {.seq = 9,
                  .qos = 1,
                  .flags = CL_MSG_ID,
                  .topic = (const uint8_t *)"t/x",
                  .topic_len = 3,
                  .props = (const uint8_t *)"\x03\x00\x01j",
                  .props_len = 4,
                  .payload = (const uint8_t *)"hello",
                  .payload_len = 5,
                  .id_epoch = 0xfedcba9876543210ull,
                  .id_seq = 77};
    cl_enc_msg(&b, CL_F_MSG, &m);
    m.flags = 0;
    cl_enc_msg(&b, CL_F_ADOPT_MSG, &m);
    size_t off = 0;
    const uint8_t *body;
    uint32_t len, len0;
    next(&b, &off, CL_F_MSG, &body, &len);
    cl_msg_t m2;
    assert_int_equal(cl_dec_msg(body, len, &m2), 0);
    assert_int_equal(m2.flags, CL_MSG_ID);
    assert_true(m2.id_epoch == 0xfedcba9876543210ull);
    assert_int_equal(m2.id_seq, 77);
    assert_int_equal(m2.props_len, 4);
    assert_int_equal(m2.payload_len, 5);
    assert_memory_equal(m2.payload, "hello", 5);
    const uint8_t *with = body;
    next(&b, &off, CL_F_ADOPT_MSG, &body, &len0);
    assert_int_equal(len0 + 12, len);
    assert_int_equal(cl_dec_msg(body, len0, &m2), 0);
    assert_int_equal(m2.id_seq, 0);
    assert_true(m2.id_epoch == 0);
    assert_int_equal(m2.payload_len, 5);
    /* the flag with the number 0, or cut inside the id: refused */
    uint8_t *z = malloc(len);
    memcpy(z, with, len);
    memset(z + len - 5 - 4, 0, 4);
    assert_int_equal(cl_dec_msg(z, len, &m2), -1);
    assert_int_equal(cl_dec_msg(with, len - 5 - 5, &m2), -1);
    free(z);
    cl_buf_free(&b);
}

static void test_split_and_limits(void **state)
{
    (void)state;
    cl_buf_t b = {0};
    cl_enc_route(&b, CL_F_ROUTE_DEL, (const uint8_t *)"x/y", 3);
    uint8_t type;
    const uint8_t *body;
    uint32_t len;
    for (size_t cut = 0; cut < b.len; cut++)
        assert_int_equal(cl_frame_next(b.p, cut, CL_FRAME_MAX, &type, &body, &len), 0);
    assert_int_equal(cl_frame_next(b.p, b.len, CL_FRAME_MAX, &type, &body, &len), (long)b.len);
    /* over the caller's maximum, and an empty frame */
    assert_int_equal(cl_frame_next(b.p, b.len, 3, &type, &body, &len), -1);
    const uint8_t zero[5] = {0, 0, 0, 0, 1};
    assert_int_equal(cl_frame_next(zero, sizeof(zero), CL_FRAME_MAX, &type, &body, &len), -1);
    const uint8_t huge[5] = {0xff, 0xff, 0xff, 0xff, 1};
    assert_int_equal(cl_frame_next(huge, sizeof(huge), CL_FRAME_MAX, &type, &body, &len), -1);
    /* a QoS over 2 is refused */
    cl_msg_t m = {.qos = 3, .topic = (const uint8_t *)"t", .topic_len = 1};
    cl_buf_t c = {0};
    cl_enc_msg(&c, CL_F_MSG, &m);
    assert_true(cl_frame_next(c.p, c.len, CL_FRAME_MAX, &type, &body, &len) > 0);
    assert_int_equal(cl_dec_msg(body, len, &m), -1);
    cl_buf_free(&b);
    cl_buf_free(&c);
}

/* CL_F_MSG_SHARED: the groups, then a message; bounds checked. */
/* REPL_DATA: a header, the operations appended, the length patched;
 * REPL_ACK exact. */
static void test_repl(void **state)
{
    (void)state;
    cl_buf_t b = {0};
    cl_enc_empty(&b, CL_F_PING);
    size_t start = b.len;
    cl_enc_repl_head(&b, 77, CL_REPL_RESET | CL_REPL_COMPLETE);
    cl_buf_reserve(&b, 5);
    memcpy(b.p + b.len, "abcde", 5);
    b.len += 5;
    cl_enc_patch_len(&b, start);
    cl_enc_repl_ack(&b, 77, 1);
    size_t off = 0;
    const uint8_t *body, *ops;
    uint32_t len, olen;
    uint64_t seq;
    uint8_t flags, ok;
    next(&b, &off, CL_F_PING, &body, &len);
    next(&b, &off, CL_F_REPL_DATA, &body, &len);
    assert_int_equal(cl_dec_repl_data(body, len, &seq, &flags, &ops, &olen), 0);
    assert_true(seq == 77);
    assert_int_equal(flags, CL_REPL_RESET | CL_REPL_COMPLETE);
    assert_int_equal(olen, 5);
    assert_memory_equal(ops, "abcde", 5);
    assert_int_equal(cl_dec_repl_data(body, 8, &seq, &flags, &ops, &olen), -1);
    next(&b, &off, CL_F_REPL_ACK, &body, &len);
    assert_int_equal(cl_dec_repl_ack(body, len, &seq, &ok), 0);
    assert_true(seq == 77 && ok == 1);
    assert_int_equal(cl_dec_repl_ack(body, len - 1, &seq, &ok), -1);
    assert_int_equal(off, b.len);
    cl_buf_free(&b);
}

/* ROUTE_BITS: blocks, routes, the bits (exactly blocks * 64 bytes);
 * ROUTE_BITS_DELTA: blocks, routes, whole u32 entries; both refuse 0 or
 * too many blocks and a body of the wrong size. */
static void test_bits(void **state)
{
    (void)state;
    cl_buf_t b = {0};
    uint8_t bits[128];
    for (int i = 0; i < 128; i++)
        bits[i] = (uint8_t)(i * 13);
    uint32_t ent[3] = {5, 0x80000000u | 1023, 77};
    cl_enc_u64(&b, CL_F_ROUTE_BITS_WANT, 0xfeedull);
    cl_enc_bits(&b, 2, 19000, bits);
    cl_enc_bits_delta(&b, 2, 19001, ent, 3);
    cl_enc_bits_delta(&b, 2, 19001, NULL, 0);
    size_t off = 0;
    const uint8_t *body, *p;
    uint32_t len, blocks;
    uint64_t v, routes;
    size_t n;
    next(&b, &off, CL_F_ROUTE_BITS_WANT, &body, &len);
    assert_int_equal(cl_dec_ack(body, len, &v), 0);
    assert_true(v == 0xfeedull);
    next(&b, &off, CL_F_ROUTE_BITS, &body, &len);
    assert_int_equal(cl_dec_bits(body, len, &blocks, &routes, &p), 0);
    assert_int_equal(blocks, 2);
    assert_true(routes == 19000);
    assert_memory_equal(p, bits, 128);
    assert_int_equal(cl_dec_bits(body, len - 1, &blocks, &routes, &p), -1);
    assert_int_equal(cl_dec_bits(body, CL_BITS_HEAD - 1, &blocks, &routes, &p), -1);
    uint8_t bad[CL_BITS_HEAD] = {0}; /* 0 blocks */
    assert_int_equal(cl_dec_bits(bad, sizeof(bad), &blocks, &routes, &p), -1);
    bad[0] = 0xff; /* too many */
    assert_int_equal(cl_dec_bits_delta(bad, sizeof(bad), &blocks, &routes, &p, &n), -1);
    next(&b, &off, CL_F_ROUTE_BITS_DELTA, &body, &len);
    assert_int_equal(cl_dec_bits_delta(body, len, &blocks, &routes, &p, &n), 0);
    assert_int_equal(blocks, 2);
    assert_true(routes == 19001);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(cl_bits_ent(p, i), ent[i]);
    assert_int_equal(cl_dec_bits_delta(body, len - 1, &blocks, &routes, &p, &n), -1);
    next(&b, &off, CL_F_ROUTE_BITS_DELTA, &body, &len);
    assert_int_equal(cl_dec_bits_delta(body, len, &blocks, &routes, &p, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(off, b.len);
    cl_buf_free(&b);
}

static void test_msg_shared(void **state)
{
    (void)state;
    cl_buf_t b = {0};
    cl_groups_t g = {.plain = 1, .n = 2};
    g.f[0] = (const uint8_t *)"$share/g/a/#";
    g.len[0] = 12;
    g.f[1] = (const uint8_t *)"$share/h/+/b";
    g.len[1] = 12;
    cl_msg_t m = {.seq = 7,
                  .qos = 1,
                  .src = 1,
                  .topic = (const uint8_t *)"a/b",
                  .topic_len = 3,
                  .payload = (const uint8_t *)"xyz",
                  .payload_len = 3};
    cl_enc_msg_shared(&b, &g, &m);
    size_t off = 0;
    const uint8_t *body;
    uint32_t len;
    next(&b, &off, CL_F_MSG_SHARED, &body, &len);
    cl_groups_t g2;
    cl_msg_t m2;
    assert_int_equal(cl_dec_msg_shared(body, len, &g2, &m2), 0);
    assert_int_equal(g2.plain, 1);
    assert_int_equal(g2.n, 2);
    assert_int_equal(g2.len[1], 12);
    assert_memory_equal(g2.f[1], "$share/h/+/b", 12);
    assert_true(m2.seq == 7);
    assert_int_equal(m2.payload_len, 3);
    assert_memory_equal(m2.payload, "xyz", 3);
    /* cut inside a group's name, too many groups, plain not 0/1: refused */
    assert_int_equal(cl_dec_msg_shared(body, 2 + 2 + 5, &g2, &m2), -1);
    uint8_t bad[64];
    memcpy(bad, body, len < sizeof(bad) ? len : sizeof(bad));
    bad[1] = CL_GROUPS_MAX + 1;
    assert_int_equal(cl_dec_msg_shared(bad, len < sizeof(bad) ? len : sizeof(bad), &g2, &m2), -1);
    bad[1] = 2;
    bad[0] = 2;
    assert_int_equal(cl_dec_msg_shared(bad, len < sizeof(bad) ? len : sizeof(bad), &g2, &m2), -1);
    cl_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips), cmocka_unit_test(test_msg_shared),
        cmocka_unit_test(test_repl),        cmocka_unit_test(test_bits),
        cmocka_unit_test(test_msg_id),      cmocka_unit_test(test_split_and_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
