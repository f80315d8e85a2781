/* test_lora_pkt.c -- src/gateways/lora/lora_pkt.c: the packet forwarder's
 * datagrams read (header, versions, types, what is refused and why), the
 * answers written (PUSH_ACK, PULL_ACK, PULL_RESP with the v1 zero token),
 * the PUSH_DATA JSON turned into messages (rxpk with gateway and
 * received_ms, the DevAddr of data uplinks only, stat), TX_ACK's error,
 * a downlink's txpk in both forms, EUIs and topic templates.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "gateways/lora/lora_pkt.h"

static const uint8_t EUI[8] = {0xaa, 0x55, 0x5a, 0x00, 0x00, 0x00, 0x01, 0x01};

static size_t dgram(uint8_t *out, uint8_t ver, uint16_t tok, uint8_t type, const char *json)
{
    out[0] = ver;
    out[1] = (uint8_t)(tok >> 8);
    out[2] = (uint8_t)tok;
    out[3] = type;
    memcpy(out + 4, EUI, 8);
    size_t jl = json ? strlen(json) : 0;
    if (jl)
        memcpy(out + 12, json, jl);
    return 12 + jl;
}

static void test_header(void **state)
{
    (void)state;
    uint8_t b[256];
    lora_hdr_t h;
    size_t n = dgram(b, 2, 0xbeef, LORA_PUSH_DATA, "{}");
    assert_int_equal(lora_hdr_parse(b, n, &h), LORA_OK);
    assert_int_equal(h.version, 2);
    assert_int_equal(h.token, 0xbeef);
    assert_int_equal(h.type, LORA_PUSH_DATA);
    assert_true(h.eui == 0xaa555a0000000101ull);
    assert_int_equal(h.json_len, 2);
    assert_memory_equal(h.json, "{}", 2);
    n = dgram(b, 1, 1, LORA_PULL_DATA, NULL);
    assert_int_equal(lora_hdr_parse(b, n, &h), LORA_OK);
    assert_int_equal(h.json_len, 0);
    n = dgram(b, 2, 1, LORA_TX_ACK, NULL);
    assert_int_equal(lora_hdr_parse(b, n, &h), LORA_OK);
    /* refused */
    assert_int_equal(lora_hdr_parse(b, 0, &h), LORA_E_SHORT);
    assert_int_equal(lora_hdr_parse(b, 3, &h), LORA_E_SHORT);
    assert_int_equal(lora_hdr_parse(b, 11, &h), LORA_E_SHORT);
    n = dgram(b, 3, 1, LORA_PULL_DATA, NULL);
    assert_int_equal(lora_hdr_parse(b, n, &h), LORA_E_VERSION);
    n = dgram(b, 0, 1, LORA_PULL_DATA, NULL);
    assert_int_equal(lora_hdr_parse(b, n, &h), LORA_E_VERSION);
    for (uint8_t t = 0; t < 255; t++) {
        n = dgram(b, 2, 1, t, NULL);
        int want =
            t == LORA_PUSH_DATA || t == LORA_PULL_DATA || t == LORA_TX_ACK ? LORA_OK : LORA_E_TYPE;
        assert_int_equal(lora_hdr_parse(b, n, &h), want);
    }
    assert_string_equal(lora_type_name(LORA_TX_ACK), "tx_ack");
    assert_string_equal(lora_type_name(9), "unknown");
    assert_string_equal(lora_err_name(LORA_E_JSON), "json");
}

static void test_encode(void **state)
{
    (void)state;
    uint8_t a[4];
    lora_ack_encode(a, 2, 0x1234, LORA_PUSH_ACK);
    assert_memory_equal(a, "\x02\x12\x34\x01", 4);
    uint8_t r[64];
    size_t n = lora_resp_encode(r, sizeof(r), 2, 0xabcd, "{\"txpk\":{}}", 11);
    assert_int_equal(n, 15);
    assert_memory_equal(r, "\x02\xab\xcd\x03{\"txpk\":{}}", 15);
    n = lora_resp_encode(r, sizeof(r), 1, 0xabcd, "{}", 2);
    assert_memory_equal(r, "\x01\x00\x00\x03{}", 6); /* v1: token 0 */
    assert_int_equal(lora_resp_encode(r, 5, 2, 1, "{}", 2), 0);
    assert_int_equal(lora_resp_encode(r, 6, 2, 1, "{}", 2), 6);
}

static void test_eui_and_topic(void **state)
{
    (void)state;
    char hex[17], t[64];
    lora_eui_hex(0xaa555a0000000101ull, hex);
    assert_string_equal(hex, "aa555a0000000101");
    uint64_t e = 0;
    assert_int_equal(lora_eui_parse("AA555A0000000101", 16, &e), 0);
    assert_true(e == 0xaa555a0000000101ull);
    assert_int_equal(lora_eui_parse("aa555a000000010", 15, &e), -1);
    assert_int_equal(lora_eui_parse("aa555a000000010g", 16, &e), -1);
    assert_int_equal(lora_topic("lora/{gateway}/up", hex, -1, t, sizeof(t)), 24);
    assert_string_equal(t, "lora/aa555a0000000101/up");
    lora_topic("g/{gateway}/d/{devaddr}", hex, 0x26011bda, t, sizeof(t));
    assert_string_equal(t, "g/aa555a0000000101/d/26011bda");
    assert_int_equal(lora_topic("lora/{gateway}/up", hex, -1, t, 20), 0); /* too small */
}

static void test_devaddr(void **state)
{
    (void)state;
    uint32_t a = 0;
    /* 40 da 1b 01 26 00 01 00: unconfirmed data up */
    assert_int_equal(lora_devaddr("QNobASYAAQA=", 12, &a), 0);
    assert_true(a == 0x26011bda);
    /* 80 ..: confirmed data up */
    assert_int_equal(lora_devaddr("gNobASYAAQA=", 12, &a), 0);
    /* 00: a join request; e0: proprietary; 60: data down */
    assert_int_equal(lora_devaddr("ANobASYAAQA=", 12, &a), -1);
    assert_int_equal(lora_devaddr("4NobASYAAQA=", 12, &a), -1);
    assert_int_equal(lora_devaddr("YNobASYAAQA=", 12, &a), -1);
    /* too short, not base64 */
    assert_int_equal(lora_devaddr("QNob", 4, &a), -1);
    assert_int_equal(lora_devaddr("QNobASYA!QA=", 12, &a), -1);
    /* exactly 5 bytes (padded) */
    assert_int_equal(lora_devaddr("QNobASY=", 8, &a), 0);
}

typedef struct {
    int n, kinds[8], has[8];
    uint32_t da[8];
    char *text[8];
} outs_t;

static void collect(int kind, int has, uint32_t da, const char *p, size_t len, void *ud)
{
    outs_t *o = ud;
    assert_true(o->n < 8);
    o->kinds[o->n] = kind;
    o->has[o->n] = has;
    o->da[o->n] = da;
    o->text[o->n] = strndup(p, len);
    o->n++;
}

static void outs_free(outs_t *o)
{
    for (int i = 0; i < o->n; i++)
        free(o->text[i]);
}

static void test_push(void **state)
{
    (void)state;
    const char *js =
        "{\"rxpk\":[{\"tmst\":1,\"freq\":868.1,\"lsnr\":5.1,\"data\":\"QNobASYAAQA=\"},"
        "{\"tmst\":2,\"data\":\"4AEC\"}, 7],\"stat\":{\"rxnb\":2}}";
    outs_t o = {0};
    uint32_t skipped = 0;
    int n = lora_push_parse((const uint8_t *)js, strlen(js), 0xaa555a0000000101ull, 1234, collect,
                            &o, &skipped);
    assert_int_equal(n, 3);
    assert_int_equal(skipped, 1); /* the 7 */
    assert_int_equal(o.kinds[0], LORA_OUT_UP);
    assert_true(o.has[0] && o.da[0] == 0x26011bda);
    assert_string_equal(o.text[0], "{\"tmst\":1,\"freq\":868.1,\"lsnr\":5.1,\"data\":"
                                   "\"QNobASYAAQA=\",\"gateway\":\"aa555a0000000101\","
                                   "\"received_ms\":1234}");
    assert_false(o.has[1]);
    assert_int_equal(o.kinds[2], LORA_OUT_STAT);
    assert_string_equal(o.text[2],
                        "{\"rxnb\":2,\"gateway\":\"aa555a0000000101\",\"received_ms\":1234}");
    outs_free(&o);
    /* refused: not an object, rxpk not an array; nothing given */
    static const char *bad[] = {"", "[]", "{", "{\"rxpk\":{}}", "nul", "{\"a\":1,\"a\":2}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        outs_t z = {0};
        assert_int_equal(
            lora_push_parse((const uint8_t *)bad[i], strlen(bad[i]), 1, 1, collect, &z, &skipped),
            -1);
        assert_int_equal(z.n, 0);
    }
    /* an object with neither: nothing, not an error */
    outs_t z = {0};
    assert_int_equal(lora_push_parse((const uint8_t *)"{}", 2, 1, 1, collect, &z, &skipped), 0);
}

static void test_txack(void **state)
{
    (void)state;
    int err = -1;
    char *t = lora_txack_json(NULL, 0, 1, 7, 99, &err);
    assert_non_null(t);
    assert_int_equal(err, 0);
    assert_string_equal(t, "{\"gateway\":\"0000000000000001\",\"token\":7,\"error\":\"NONE\","
                           "\"received_ms\":99}");
    free(t);
    const char *js = "{\"txpk_ack\":{\"error\":\"COLLISION_PACKET\"}}";
    t = lora_txack_json((const uint8_t *)js, strlen(js), 1, 7, 99, &err);
    assert_int_equal(err, 1);
    assert_non_null(strstr(t, "\"error\":\"COLLISION_PACKET\""));
    free(t);
    js = "{\"txpk_ack\":{\"error\":\"NONE\"}}\0";
    t = lora_txack_json((const uint8_t *)js, strlen(js) + 1, 1, 7, 99, &err);
    assert_int_equal(err, 0);
    free(t);
    assert_null(lora_txack_json((const uint8_t *)"[1]", 3, 1, 7, 99, &err));
    assert_null(lora_txack_json((const uint8_t *)"{x", 2, 1, 7, 99, &err));
}

static void test_down(void **state)
{
    (void)state;
    const char *bare = "{\"imme\":true,\"freq\":869.525,\"data\":\"AQI=\"}";
    char *t = lora_down_json((const uint8_t *)bare, strlen(bare));
    assert_string_equal(t, "{\"txpk\":{\"imme\":true,\"freq\":869.525,\"data\":\"AQI=\"}}");
    free(t);
    const char *wrapped = "{\"txpk\":{\"imme\":true}}";
    t = lora_down_json((const uint8_t *)wrapped, strlen(wrapped));
    assert_string_equal(t, wrapped);
    free(t);
    static const char *bad[] = {"", "[1]", "{\"txpk\":3}", "{\"txpk\":{},\"x\":1}", "\"s\""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_null(lora_down_json((const uint8_t *)bad[i], strlen(bad[i])));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header),        cmocka_unit_test(test_encode),
        cmocka_unit_test(test_eui_and_topic), cmocka_unit_test(test_devaddr),
        cmocka_unit_test(test_push),          cmocka_unit_test(test_txack),
        cmocka_unit_test(test_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
