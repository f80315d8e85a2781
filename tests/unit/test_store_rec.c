/* test_store_rec.c -- the store's keys and records (store_rec.h): round
 * trips, every truncation rejected, every single-byte mutation either
 * rejected or canonical (re-encodes to the same bytes), field range checks,
 * and the key layout's prefix properties (client ids containing '/').
 * Out-of-bounds reads are caught by the sanitizer build.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "store_rec.h"

#define S(x) (const uint8_t *)(x), (sizeof(x) - 1)

/* Copies an encoding into an exact-size heap buffer, so that reading one
 * byte past its end is an ASan error. */
static uint8_t *exact(const uint8_t *p, size_t n)
{
    uint8_t *b = malloc(n ? n : 1);
    memcpy(b, p, n);
    return b;
}

static uint8_t *enc_retained(const store_retained_t *r, size_t *n)
{
    *n = store_rec_encode_retained(r, NULL, 0);
    assert_true(*n > 0);
    uint8_t *b = malloc(*n);
    assert_int_equal(store_rec_encode_retained(r, b, *n), *n);
    return b;
}

static uint8_t *enc_session(const store_session_t *s, size_t *n)
{
    *n = store_rec_encode_session(s, NULL, 0);
    assert_true(*n > 0);
    uint8_t *b = malloc(*n);
    assert_int_equal(store_rec_encode_session(s, b, *n), *n);
    return b;
}

static uint8_t *enc_outmsg(const store_outmsg_t *m, size_t *n)
{
    *n = store_rec_encode_outmsg(m, NULL, 0);
    assert_true(*n > 0);
    uint8_t *b = malloc(*n);
    assert_int_equal(store_rec_encode_outmsg(m, b, *n), *n);
    return b;
}

static const store_retained_t sample_retained = {
    .qos = 2,
    .flags = 0x5a,
    .expiry = 0x0102030405060708ull,
    .topic = (const uint8_t *)"a/b/c",
    .topic_len = 5,
    .props = (const uint8_t *)"\x01\x01",
    .props_len = 2,
    .payload = (const uint8_t *)"hello\0world",
    .payload_len = 11,
};

static store_sub_t sample_subs[] = {
    {.filter = (const uint8_t *)"a/+/c", .filter_len = 5, .options = 0x2e, .sub_id = 268435455},
    {.filter = (const uint8_t *)"#", .filter_len = 1, .options = 0x00, .sub_id = 0},
    {.filter = (const uint8_t *)"x/y", .filter_len = 3, .options = 0x11, .sub_id = 7},
};

static const store_session_t sample_session = {
    .flags = 0x81,
    .expiry_interval = 0xffffffffu,
    .expiry_deadline = 1700000000ull,
    .next_pid = 65535,
    .nsubs = 3,
    .subs = sample_subs,
};

static const store_outmsg_t sample_outmsg = {
    .state = STORE_OUT_WAIT_PUBCOMP,
    .qos = 2,
    .retain = true,
    .dup = true,
    .pid = 0xbeef,
    .expiry = 99,
    .topic = (const uint8_t *)"t",
    .topic_len = 1,
    .props = NULL,
    .props_len = 0,
    .payload = (const uint8_t *)"p",
    .payload_len = 1,
};

/* ---- round trips ------------------------------------------------------ */

static void rec_retained_round_trip(void **state)
{
    (void)state;
    size_t n;
    uint8_t *b = enc_retained(&sample_retained, &n);
    store_retained_t r;
    assert_int_equal(store_rec_decode_retained(b, n, &r), 0);
    assert_int_equal(r.qos, 2);
    assert_int_equal(r.flags, 0x5a);
    assert_true(r.expiry == 0x0102030405060708ull);
    assert_int_equal(r.topic_len, 5);
    assert_memory_equal(r.topic, "a/b/c", 5);
    assert_int_equal(r.props_len, 2);
    assert_memory_equal(r.props, "\x01\x01", 2);
    assert_int_equal(r.payload_len, 11);
    assert_memory_equal(r.payload, "hello\0world", 11);
    /* a small buffer is not written to */
    uint8_t small[4] = {9, 9, 9, 9};
    assert_int_equal(store_rec_encode_retained(&sample_retained, small, sizeof(small)), n);
    assert_int_equal(small[0], 9);
    free(b);
}

static void rec_retained_empty_payload_and_props(void **state)
{
    (void)state;
    store_retained_t in = {.qos = 0, .topic = (const uint8_t *)"x", .topic_len = 1};
    size_t n;
    uint8_t *b = enc_retained(&in, &n);
    store_retained_t r;
    assert_int_equal(store_rec_decode_retained(b, n, &r), 0);
    assert_int_equal(r.payload_len, 0);
    assert_int_equal(r.props_len, 0);
    assert_true(r.expiry == 0);
    free(b);
}

static void rec_session_round_trip(void **state)
{
    (void)state;
    size_t n;
    uint8_t *b = enc_session(&sample_session, &n);
    store_session_t s;
    assert_int_equal(store_rec_decode_session(b, n, &s), 0);
    assert_int_equal(s.flags, 0x81);
    assert_true(s.expiry_interval == 0xffffffffu);
    assert_true(s.expiry_deadline == 1700000000ull);
    assert_int_equal(s.next_pid, 65535);
    assert_int_equal(s.nsubs, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(s.subs[i].filter_len, sample_subs[i].filter_len);
        assert_memory_equal(s.subs[i].filter, sample_subs[i].filter, sample_subs[i].filter_len);
        assert_int_equal(s.subs[i].options, sample_subs[i].options);
        assert_int_equal(s.subs[i].sub_id, sample_subs[i].sub_id);
    }
    store_rec_session_free(&s);
    assert_null(s.subs);
    free(b);
}

static void rec_session_without_subscriptions(void **state)
{
    (void)state;
    store_session_t in = {.next_pid = 1};
    size_t n;
    uint8_t *b = enc_session(&in, &n);
    store_session_t s;
    assert_int_equal(store_rec_decode_session(b, n, &s), 0);
    assert_int_equal(s.nsubs, 0);
    assert_null(s.subs);
    store_rec_session_free(&s);
    free(b);
}

static void rec_outmsg_round_trip_every_state(void **state)
{
    (void)state;
    static const struct {
        uint8_t st, qos;
        uint16_t pid;
    } cases[] = {
        {STORE_OUT_QUEUED, 0, 0},      {STORE_OUT_QUEUED, 1, 0},
        {STORE_OUT_QUEUED, 2, 17},     {STORE_OUT_WAIT_PUBACK, 1, 1},
        {STORE_OUT_WAIT_PUBREC, 2, 2}, {STORE_OUT_WAIT_PUBCOMP, 2, 65535},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        store_outmsg_t in = sample_outmsg;
        in.state = cases[i].st;
        in.qos = cases[i].qos;
        in.pid = cases[i].pid;
        in.dup = in.qos > 0;
        in.retain = (i & 1) != 0;
        size_t n;
        uint8_t *b = enc_outmsg(&in, &n);
        store_outmsg_t m;
        assert_int_equal(store_rec_decode_outmsg(b, n, &m), 0);
        assert_int_equal(m.state, in.state);
        assert_int_equal(m.qos, in.qos);
        assert_int_equal(m.pid, in.pid);
        assert_int_equal(m.dup, in.dup);
        assert_int_equal(m.retain, in.retain);
        assert_true(m.expiry == 99);
        assert_int_equal(m.topic_len, 1);
        assert_memory_equal(m.topic, "t", 1);
        assert_int_equal(m.payload_len, 1);
        free(b);
    }
}

static void rec_incoming_round_trip(void **state)
{
    (void)state;
    uint8_t b[2];
    assert_int_equal(store_rec_encode_incoming(b, sizeof(b)), 2);
    assert_int_equal(store_rec_decode_incoming(b, 2), 0);
    assert_int_equal(store_rec_decode_incoming(b, 1), STORE_ECORRUPT);
    uint8_t three[3] = {'I', 1, 0};
    assert_int_equal(store_rec_decode_incoming(three, 3), STORE_ECORRUPT);
    uint8_t v2[2] = {'I', 2};
    assert_int_equal(store_rec_decode_incoming(v2, 2), STORE_EVERSION);
}

/* ---- malformed records ------------------------------------------------ */

typedef int (*decode_fn)(const uint8_t *b, size_t n, uint8_t *canon, size_t cap, size_t *cn);

static int dec_retained(const uint8_t *b, size_t n, uint8_t *canon, size_t cap, size_t *cn)
{
    store_retained_t r;
    int rc = store_rec_decode_retained(b, n, &r);
    if (rc == 0)
        *cn = store_rec_encode_retained(&r, canon, cap);
    return rc;
}

static int dec_session(const uint8_t *b, size_t n, uint8_t *canon, size_t cap, size_t *cn)
{
    store_session_t s;
    int rc = store_rec_decode_session(b, n, &s);
    if (rc == 0) {
        *cn = store_rec_encode_session(&s, canon, cap);
        store_rec_session_free(&s);
    }
    return rc;
}

static int dec_outmsg(const uint8_t *b, size_t n, uint8_t *canon, size_t cap, size_t *cn)
{
    store_outmsg_t m;
    int rc = store_rec_decode_outmsg(b, n, &m);
    if (rc == 0)
        *cn = store_rec_encode_outmsg(&m, canon, cap);
    return rc;
}

/* Every strict prefix and one trailing byte are rejected; the full record
 * decodes. */
static void check_truncations(const uint8_t *rec, size_t n, decode_fn dec)
{
    uint8_t canon[512];
    size_t cn = 0;
    for (size_t len = 0; len < n; len++) {
        uint8_t *b = exact(rec, len);
        assert_int_equal(dec(b, len, canon, sizeof(canon), &cn), STORE_ECORRUPT);
        free(b);
    }
    uint8_t *b = exact(rec, n);
    assert_int_equal(dec(b, n, canon, sizeof(canon), &cn), 0);
    free(b);
    uint8_t *longer = malloc(n + 1);
    memcpy(longer, rec, n);
    longer[n] = 0;
    assert_int_equal(dec(longer, n + 1, canon, sizeof(canon), &cn), STORE_ECORRUPT);
    free(longer);
}

/* Every byte set to each of a few values: the decoder either rejects the
 * record or accepts one that re-encodes to exactly those bytes. */
static void check_mutations(const uint8_t *rec, size_t n, decode_fn dec)
{
    static const uint8_t vals[] = {0x00, 0x01, 0x02, 0x03, 0x7f, 0x80, 0xfe, 0xff};
    uint8_t canon[512];
    for (size_t i = 0; i < n; i++) {
        for (size_t v = 0; v < sizeof(vals); v++) {
            uint8_t *b = exact(rec, n);
            b[i] = vals[v];
            size_t cn = 0;
            int rc = dec(b, n, canon, sizeof(canon), &cn);
            if (rc == 0) {
                assert_int_equal(cn, n);
                assert_memory_equal(canon, b, n);
            } else {
                assert_true(rc == STORE_ECORRUPT || rc == STORE_EVERSION);
            }
            free(b);
        }
    }
}

static void rec_truncated_and_mutated_records_rejected(void **state)
{
    (void)state;
    size_t n;
    uint8_t *b = enc_retained(&sample_retained, &n);
    check_truncations(b, n, dec_retained);
    check_mutations(b, n, dec_retained);
    free(b);
    b = enc_session(&sample_session, &n);
    check_truncations(b, n, dec_session);
    check_mutations(b, n, dec_session);
    free(b);
    b = enc_outmsg(&sample_outmsg, &n);
    check_truncations(b, n, dec_outmsg);
    check_mutations(b, n, dec_outmsg);
    free(b);
}

/* Version 2 keeps the owner; version 1 (before owners) still decodes, and
 * a session whose owner is unknown is written as version 1. */
static void rec_session_owner_versions(void **state)
{
    (void)state;
    size_t n1, n2, n3;
    uint8_t *v1 = enc_session(&sample_session, &n1);
    assert_int_equal(v1[1], 1);
    store_session_t in = sample_session;
    in.owner_known = true;
    in.owner = (const uint8_t *)"alice";
    in.owner_len = 5;
    uint8_t *v2 = enc_session(&in, &n2);
    assert_int_equal(v2[1], 2);
    assert_int_equal(n2, n1 + 1 + 2 + 5);
    assert_memory_equal(v1 + 2, v2 + 2, n1 - 2); /* the same fields before */
    store_session_t s;
    assert_int_equal(store_rec_decode_session(v2, n2, &s), 0);
    assert_true(s.owner_known);
    assert_int_equal(s.owner_len, 5);
    assert_memory_equal(s.owner, "alice", 5);
    assert_int_equal(s.nsubs, 3);
    store_rec_session_free(&s);
    assert_int_equal(store_rec_decode_session(v1, n1, &s), 0);
    assert_false(s.owner_known);
    assert_null(s.owner);
    store_rec_session_free(&s);
    /* known, anonymous */
    in.owner = NULL;
    in.owner_len = 0;
    uint8_t *v3 = enc_session(&in, &n3);
    assert_int_equal(n3, n1 + 1);
    assert_int_equal(store_rec_decode_session(v3, n3, &s), 0);
    assert_true(s.owner_known);
    assert_null(s.owner);
    store_rec_session_free(&s);
    /* presence byte other than 0/1, an owner without owner_known, truncation */
    v3[n3 - 1] = 2;
    assert_int_equal(store_rec_decode_session(v3, n3, &s), STORE_ECORRUPT);
    in.owner_known = false;
    in.owner = (const uint8_t *)"x";
    in.owner_len = 1;
    assert_int_equal(store_rec_encode_session(&in, NULL, 0), 0);
    check_truncations(v2, n2, dec_session);
    check_mutations(v2, n2, dec_session);
    v2[1] = 3;
    assert_int_equal(store_rec_decode_session(v2, n2, &s), STORE_EVERSION);
    free(v1);
    free(v2);
    free(v3);
}

/* 'Q' 2 carries the publish id after the payload; version 1 (written
 * before ids, and still for a message without one) decodes with id_seq 0,
 * so an older store's queues load and are compared by content. */
static void rec_outmsg_id_versions(void **state)
{
    (void)state;
    size_t n1, n2;
    store_outmsg_t in = sample_outmsg;
    uint8_t *v1 = enc_outmsg(&in, &n1);
    assert_int_equal(v1[1], 1);
    in.id_epoch = 0x0123456789abcdefull;
    in.id_seq = 0xfffffffeu;
    uint8_t *v2 = enc_outmsg(&in, &n2);
    assert_int_equal(v2[1], 2);
    assert_int_equal(n2, n1 + 8 + 4);
    assert_memory_equal(v1 + 2, v2 + 2, n1 - 2); /* the same fields before */
    store_outmsg_t m;
    assert_int_equal(store_rec_decode_outmsg(v2, n2, &m), 0);
    assert_true(m.id_epoch == 0x0123456789abcdefull);
    assert_int_equal(m.id_seq, 0xfffffffeu);
    assert_int_equal(m.pid, 0xbeef);
    assert_int_equal(m.payload_len, 1);
    assert_memory_equal(m.payload, "p", 1);
    /* an old record: no id */
    m.id_epoch = 7;
    m.id_seq = 7;
    assert_int_equal(store_rec_decode_outmsg(v1, n1, &m), 0);
    assert_int_equal(m.id_seq, 0);
    assert_true(m.id_epoch == 0);
    assert_int_equal(m.state, STORE_OUT_WAIT_PUBCOMP);
    /* version 1 with an id's bytes after it, version 2 without them or with
     * the number 0: refused */
    v1[1] = 1;
    v2[1] = 1;
    assert_int_equal(store_rec_decode_outmsg(v2, n2, &m), STORE_ECORRUPT);
    v2[1] = 2;
    assert_int_equal(store_rec_decode_outmsg(v2, n1, &m), STORE_ECORRUPT);
    memset(v2 + n2 - 4, 0, 4);
    assert_int_equal(store_rec_decode_outmsg(v2, n2, &m), STORE_ECORRUPT);
    in.id_seq = 1;
    free(v2);
    v2 = enc_outmsg(&in, &n2);
    check_truncations(v2, n2, dec_outmsg);
    check_mutations(v2, n2, dec_outmsg);
    v2[1] = 3;
    assert_int_equal(store_rec_decode_outmsg(v2, n2, &m), STORE_EVERSION);
    free(v1);
    free(v2);
}

static void rec_unknown_version_and_type_rejected(void **state)
{
    (void)state;
    size_t n;
    store_retained_t r;
    store_session_t s;
    store_outmsg_t m;
    uint8_t *b = enc_retained(&sample_retained, &n);
    b[1] = 2;
    assert_int_equal(store_rec_decode_retained(b, n, &r), STORE_EVERSION);
    b[1] = 0;
    assert_int_equal(store_rec_decode_retained(b, n, &r), STORE_EVERSION);
    b[1] = 1;
    /* a retained record is not a session nor a message */
    assert_int_equal(store_rec_decode_session(b, n, &s), STORE_ECORRUPT);
    assert_int_equal(store_rec_decode_outmsg(b, n, &m), STORE_ECORRUPT);
    assert_int_equal(store_rec_decode_incoming(b, n), STORE_ECORRUPT);
    free(b);
}

static void rec_lengths_past_the_end_rejected(void **state)
{
    (void)state;
    size_t n;
    store_retained_t r;
    uint8_t *b = enc_retained(&sample_retained, &n);
    /* payload length (last u32 before the 11 payload bytes) = 0xffffffff */
    memset(b + n - 11 - 4, 0xff, 4);
    assert_int_equal(store_rec_decode_retained(b, n, &r), STORE_ECORRUPT);
    free(b);

    /* a session claiming 4 billion subscriptions in a few bytes: rejected
     * before anything is allocated for them */
    store_session_t in = {.next_pid = 1};
    uint8_t *s = enc_session(&in, &n);
    uint8_t *big = malloc(n + 8);
    memcpy(big, s, n);
    memset(big + n - 4, 0xff, 4);
    memset(big + n, 'x', 8);
    store_session_t out;
    assert_int_equal(store_rec_decode_session(big, n + 8, &out), STORE_ECORRUPT);
    assert_null(out.subs);
    free(big);
    free(s);
}

static void rec_fields_out_of_range_rejected(void **state)
{
    (void)state;
    store_retained_t r = sample_retained;
    r.qos = 3;
    assert_int_equal(store_rec_encode_retained(&r, NULL, 0), 0);
    r = sample_retained;
    r.topic_len = 0;
    assert_int_equal(store_rec_encode_retained(&r, NULL, 0), 0);
    r.topic_len = 65536;
    assert_int_equal(store_rec_encode_retained(&r, NULL, 0), 0);

    store_outmsg_t m = sample_outmsg;
    m.qos = 0;
    m.dup = true; /* DUP with QoS 0 */
    m.state = STORE_OUT_QUEUED;
    assert_int_equal(store_rec_encode_outmsg(&m, NULL, 0), 0);
    m = sample_outmsg;
    m.state = STORE_OUT_WAIT_PUBACK; /* needs QoS 1 */
    assert_int_equal(store_rec_encode_outmsg(&m, NULL, 0), 0);
    m = sample_outmsg;
    m.pid = 0; /* inflight without a packet id */
    assert_int_equal(store_rec_encode_outmsg(&m, NULL, 0), 0);
    m = sample_outmsg;
    m.state = 4;
    assert_int_equal(store_rec_encode_outmsg(&m, NULL, 0), 0);

    store_session_t s = sample_session;
    s.next_pid = 0;
    assert_int_equal(store_rec_encode_session(&s, NULL, 0), 0);
    store_sub_t bad[1] = {{.filter = (const uint8_t *)"a", .filter_len = 1}};
    s = sample_session;
    s.subs = bad;
    s.nsubs = 1;
    bad[0].options = 0x40; /* reserved bit */
    assert_int_equal(store_rec_encode_session(&s, NULL, 0), 0);
    bad[0].options = 0x03; /* QoS 3 */
    assert_int_equal(store_rec_encode_session(&s, NULL, 0), 0);
    bad[0].options = 0x30; /* retain handling 3 */
    assert_int_equal(store_rec_encode_session(&s, NULL, 0), 0);
    bad[0].options = 0;
    bad[0].sub_id = 268435456;
    assert_int_equal(store_rec_encode_session(&s, NULL, 0), 0);
    bad[0].sub_id = 1;
    bad[0].filter_len = 0;
    assert_int_equal(store_rec_encode_session(&s, NULL, 0), 0);

    /* the same rules on the decoding side: flip the QoS byte of a record */
    size_t n;
    uint8_t *b = enc_retained(&sample_retained, &n);
    b[2] = 3;
    assert_int_equal(store_rec_decode_retained(b, n, &r), STORE_ECORRUPT);
    free(b);
    b = enc_outmsg(&sample_outmsg, &n);
    b[4] |= 0x04; /* unknown flag bit */
    assert_int_equal(store_rec_decode_outmsg(b, n, &m), STORE_ECORRUPT);
    free(b);
}

/* ---- keys ------------------------------------------------------------- */

static int has_prefix(const uint8_t *k, size_t kl, const uint8_t *p, size_t pl)
{
    return kl >= pl && memcmp(k, p, pl) == 0;
}

static void key_layout_and_parse(void **state)
{
    (void)state;
    uint8_t k[STORE_KEY_MAX];
    store_key_info_t ki;
    size_t n;

    n = store_key_retained(k, sizeof(k), S("a/b"));
    assert_int_equal(n, 5);
    assert_memory_equal(k, "r/a/b", 5);
    assert_int_equal(store_key_parse(k, n, &ki), 0);
    assert_int_equal(ki.kind, STORE_KEY_RETAINED);
    assert_int_equal(ki.name_len, 3);
    assert_memory_equal(ki.name, "a/b", 3);

    n = store_key_session(k, sizeof(k), S("client"));
    assert_memory_equal(k, "s/client", n);
    assert_int_equal(store_key_parse(k, n, &ki), 0);
    assert_int_equal(ki.kind, STORE_KEY_SESSION);

    n = store_key_queue(k, sizeof(k), S("c1"), 0x0102030405060708ull);
    assert_int_equal(n, 2 + 2 + 2 + 8);
    assert_memory_equal(k, "q/\0\2c1\1\2\3\4\5\6\7\10", n);
    assert_int_equal(store_key_parse(k, n, &ki), 0);
    assert_int_equal(ki.kind, STORE_KEY_QUEUE);
    assert_true(ki.seq == 0x0102030405060708ull);
    assert_memory_equal(ki.name, "c1", 2);

    n = store_key_incoming(k, sizeof(k), S("c1"), 0xabcd);
    assert_int_equal(store_key_parse(k, n, &ki), 0);
    assert_int_equal(ki.kind, STORE_KEY_INCOMING);
    assert_int_equal(ki.pid, 0xabcd);

    assert_int_equal(store_key_parse(STORE_KEY_VERSION, STORE_KEY_VERSION_LEN, &ki), 0);
    assert_int_equal(ki.kind, STORE_KEY_META);

    /* malformed keys */
    assert_int_equal(store_key_parse(k, n - 1, &ki), STORE_ECORRUPT);
    assert_int_equal(store_key_parse("q/\0\5ab", 6, &ki), STORE_ECORRUPT);
    assert_int_equal(store_key_parse("x/abc", 5, &ki), STORE_ECORRUPT);
    assert_int_equal(store_key_parse("r/", 2, &ki), STORE_ECORRUPT);
    assert_int_equal(store_key_parse("r", 1, &ki), STORE_ECORRUPT);
    assert_int_equal(store_key_parse("", 0, &ki), STORE_ECORRUPT);

    /* limits */
    assert_int_equal(store_key_retained(k, sizeof(k), "", 0), 0);
    assert_int_equal(store_key_session(NULL, 0, "x", 65536), 0);
    assert_int_equal(store_key_queue(NULL, 0, "x", 65536, 1), 0);
    assert_int_equal(store_key_queue(NULL, 0, "x", 65535, 1), STORE_KEY_MAX);
}

/* Client "a"'s queue prefix must not cover client "a/b" or "ab": the reason
 * for the length prefix. */
static void key_queue_prefix_is_exact_per_client(void **state)
{
    (void)state;
    uint8_t p[STORE_KEY_MAX], k[STORE_KEY_MAX];
    size_t pl = store_key_queue_prefix(p, sizeof(p), S("a"));
    size_t kl = store_key_queue(k, sizeof(k), S("a"), 5);
    assert_true(has_prefix(k, kl, p, pl));
    kl = store_key_queue(k, sizeof(k), S("a/b"), 5);
    assert_false(has_prefix(k, kl, p, pl));
    kl = store_key_queue(k, sizeof(k), S("ab"), 5);
    assert_false(has_prefix(k, kl, p, pl));
    /* sequence numbers sort numerically */
    uint8_t k1[STORE_KEY_MAX], k2[STORE_KEY_MAX];
    size_t n1 = store_key_queue(k1, sizeof(k1), S("a"), 255);
    size_t n2 = store_key_queue(k2, sizeof(k2), S("a"), 256);
    assert_int_equal(n1, n2);
    assert_true(memcmp(k1, k2, n1) < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rec_retained_round_trip),
        cmocka_unit_test(rec_retained_empty_payload_and_props),
        cmocka_unit_test(rec_session_round_trip),
        cmocka_unit_test(rec_session_without_subscriptions),
        cmocka_unit_test(rec_session_owner_versions),
        cmocka_unit_test(rec_outmsg_round_trip_every_state),
        cmocka_unit_test(rec_outmsg_id_versions),
        cmocka_unit_test(rec_incoming_round_trip),
        cmocka_unit_test(rec_truncated_and_mutated_records_rejected),
        cmocka_unit_test(rec_unknown_version_and_type_rejected),
        cmocka_unit_test(rec_lengths_past_the_end_rejected),
        cmocka_unit_test(rec_fields_out_of_range_rejected),
        cmocka_unit_test(key_layout_and_parse),
        cmocka_unit_test(key_queue_prefix_is_exact_per_client),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
