/* store_rec.c -- the store's keys and records (layout in store_rec.h).
 *
 * Decoding goes through a cursor whose every read checks the bytes left and
 * turns the cursor "bad" instead of reading past the end; a decoder checks
 * the flag once at the end, plus the ranges of its fields and that no byte
 * is left over.  Counts read from disk are checked against the bytes left
 * before anything is allocated for them.  Encoders validate with the same
 * rules, so decode(encode(x)) == x and encode(decode(b)) == b: the fuzzer
 * checks both.  Pure functions: any thread.
 */
#include "store_rec.h"

#include <string.h>

#include "store.h"
#include "util.h"

#define SUB_ID_MAX 268435455u
#define U16_MAX 65535u

/* ---- writing ---------------------------------------------------------- */

typedef struct {
    uint8_t *p;
} wr_t;

static void put_u8(wr_t *w, uint8_t v)
{
    *w->p++ = v;
}

static void put_u16(wr_t *w, uint16_t v)
{
    w->p[0] = (uint8_t)(v >> 8);
    w->p[1] = (uint8_t)v;
    w->p += 2;
}

static void put_u32(wr_t *w, uint32_t v)
{
    for (int i = 3; i >= 0; i--)
        *w->p++ = (uint8_t)(v >> (8 * i));
}

static void put_u64(wr_t *w, uint64_t v)
{
    for (int i = 7; i >= 0; i--)
        *w->p++ = (uint8_t)(v >> (8 * i));
}

static void put_bytes(wr_t *w, const void *b, size_t n)
{
    if (n)
        memcpy(w->p, b, n);
    w->p += n;
}

/* ---- reading ---------------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t left;
    int bad;
} rd_t;

static const uint8_t *take(rd_t *r, size_t n)
{
    if (r->bad || n > r->left) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

static uint64_t get_be(rd_t *r, size_t n)
{
    const uint8_t *p = take(r, n);
    uint64_t v = 0;
    if (p == NULL)
        return 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

static uint8_t get_u8(rd_t *r)
{
    return (uint8_t)get_be(r, 1);
}

static uint16_t get_u16(rd_t *r)
{
    return (uint16_t)get_be(r, 2);
}

static uint32_t get_u32(rd_t *r)
{
    return (uint32_t)get_be(r, 4);
}

static uint64_t get_u64(rd_t *r)
{
    return get_be(r, 8);
}

/* A field preceded by its length (lenbytes: 2 or 4). */
static const uint8_t *get_field(rd_t *r, size_t lenbytes, size_t *len)
{
    *len = (size_t)get_be(r, lenbytes);
    return take(r, *len);
}

/* Type and version (1 .. max_version, into *version when not NULL). */
static int get_header_v(rd_t *r, const void *buf, size_t len, uint8_t type, uint8_t max_version,
                        uint8_t *version)
{
    r->p = buf;
    r->left = len;
    r->bad = 0;
    if (len < 2 || r->p[0] != type)
        return STORE_ECORRUPT;
    if (r->p[1] < STORE_REC_VERSION || r->p[1] > max_version)
        return STORE_EVERSION;
    if (version)
        *version = r->p[1];
    take(r, 2);
    return 0;
}

static int get_header(rd_t *r, const void *buf, size_t len, uint8_t type)
{
    return get_header_v(r, buf, len, type, STORE_REC_VERSION, NULL);
}

/* The end of a decode: every read in bounds and nothing left over. */
static int finish(const rd_t *r)
{
    return r->bad || r->left != 0 ? STORE_ECORRUPT : 0;
}

/* ---- keys ------------------------------------------------------------- */

static size_t key_simple(uint8_t *out, size_t cap, char kind, const void *name, size_t len)
{
    size_t n = 2 + len;
    if (len > U16_MAX)
        return 0;
    if (n <= cap) {
        out[0] = (uint8_t)kind;
        out[1] = '/';
        if (len)
            memcpy(out + 2, name, len);
    }
    return n;
}

/* kind "/" u16 len cid, then tail_len bytes of a big-endian tail. */
static size_t key_cid(uint8_t *out, size_t cap, char kind, const void *cid, size_t len,
                      uint64_t tail, size_t tail_len)
{
    size_t n = 4 + len + tail_len;
    if (len > U16_MAX)
        return 0;
    if (n <= cap) {
        wr_t w = {out};
        put_u8(&w, (uint8_t)kind);
        put_u8(&w, '/');
        put_u16(&w, (uint16_t)len);
        put_bytes(&w, cid, len);
        for (size_t i = tail_len; i > 0; i--)
            put_u8(&w, (uint8_t)(tail >> (8 * (i - 1))));
    }
    return n;
}

size_t store_key_retained(uint8_t *out, size_t cap, const void *topic, size_t len)
{
    return len == 0 ? 0 : key_simple(out, cap, 'r', topic, len);
}

size_t store_key_session(uint8_t *out, size_t cap, const void *cid, size_t len)
{
    return key_simple(out, cap, 's', cid, len);
}

size_t store_key_queue(uint8_t *out, size_t cap, const void *cid, size_t len, uint64_t seq)
{
    return key_cid(out, cap, 'q', cid, len, seq, 8);
}

size_t store_key_queue_prefix(uint8_t *out, size_t cap, const void *cid, size_t len)
{
    return key_cid(out, cap, 'q', cid, len, 0, 0);
}

size_t store_key_incoming(uint8_t *out, size_t cap, const void *cid, size_t len, uint16_t pid)
{
    return key_cid(out, cap, 'i', cid, len, pid, 2);
}

size_t store_key_incoming_prefix(uint8_t *out, size_t cap, const void *cid, size_t len)
{
    return key_cid(out, cap, 'i', cid, len, 0, 0);
}

int store_key_parse(const void *k, size_t kl, store_key_info_t *out)
{
    const uint8_t *p = k;
    rd_t r = {p, kl, 0};

    memset(out, 0, sizeof(*out));
    if (kl >= 1 && p[0] == 0) {
        out->kind = STORE_KEY_META;
        out->name = p + 1;
        out->name_len = kl - 1;
        return 0;
    }
    if (kl < 2 || p[1] != '/')
        return STORE_ECORRUPT;
    out->kind = p[0];
    take(&r, 2);
    switch (p[0]) {
    case 'r':
    case 's':
        out->name_len = r.left;
        out->name = take(&r, r.left);
        if (out->name_len > U16_MAX || (p[0] == 'r' && out->name_len == 0))
            return STORE_ECORRUPT;
        return 0;
    case 'q':
        out->name = get_field(&r, 2, &out->name_len);
        out->seq = get_u64(&r);
        return finish(&r);
    case 'i':
        out->name = get_field(&r, 2, &out->name_len);
        out->pid = get_u16(&r);
        return finish(&r);
    default:
        return STORE_ECORRUPT;
    }
}

/* ---- retained --------------------------------------------------------- */

static int retained_ok(const store_retained_t *r)
{
    return r->qos <= 2 && r->topic_len >= 1 && r->topic_len <= U16_MAX &&
           r->props_len <= UINT32_MAX && r->payload_len <= UINT32_MAX;
}

size_t store_rec_encode_retained(const store_retained_t *r, void *out, size_t cap)
{
    if (!retained_ok(r))
        return 0;
    size_t n = 2 + 1 + 1 + 8 + 2 + r->topic_len + 4 + r->props_len + 4 + r->payload_len;
    if (n <= cap) {
        wr_t w = {out};
        put_u8(&w, 'R');
        put_u8(&w, STORE_REC_VERSION);
        put_u8(&w, r->qos);
        put_u8(&w, r->flags);
        put_u64(&w, r->expiry);
        put_u16(&w, (uint16_t)r->topic_len);
        put_bytes(&w, r->topic, r->topic_len);
        put_u32(&w, (uint32_t)r->props_len);
        put_bytes(&w, r->props, r->props_len);
        put_u32(&w, (uint32_t)r->payload_len);
        put_bytes(&w, r->payload, r->payload_len);
    }
    return n;
}

int store_rec_decode_retained(const void *buf, size_t len, store_retained_t *out)
{
    rd_t r;
    int rc = get_header(&r, buf, len, 'R');
    if (rc)
        return rc;
    out->qos = get_u8(&r);
    out->flags = get_u8(&r);
    out->expiry = get_u64(&r);
    out->topic = get_field(&r, 2, &out->topic_len);
    out->props = get_field(&r, 4, &out->props_len);
    out->payload = get_field(&r, 4, &out->payload_len);
    if ((rc = finish(&r)) != 0)
        return rc;
    return retained_ok(out) ? 0 : STORE_ECORRUPT;
}

/* ---- session ---------------------------------------------------------- */

#define SUB_MIN_SIZE 8u /* filter length, one filter byte, options, sub id */

static int sub_ok(const store_sub_t *s)
{
    uint8_t o = s->options;
    return s->filter_len >= 1 && s->filter_len <= U16_MAX && (o & 0xc0) == 0 && (o & 3) <= 2 &&
           ((o >> 4) & 3) <= 2 && s->sub_id <= SUB_ID_MAX;
}

#define SESSION_OWNER_VERSION 2u

static int session_ok(const store_session_t *s)
{
    if (s->next_pid == 0 || (s->nsubs > 0 && s->subs == NULL) || s->owner_len > U16_MAX ||
        (!s->owner_known && s->owner) || (s->owner == NULL && s->owner_len))
        return 0;
    for (uint32_t i = 0; i < s->nsubs; i++)
        if (!sub_ok(&s->subs[i]))
            return 0;
    return 1;
}

size_t store_rec_encode_session(const store_session_t *s, void *out, size_t cap)
{
    if (!session_ok(s))
        return 0;
    size_t n = 2 + 1 + 4 + 8 + 2 + 4;
    for (uint32_t i = 0; i < s->nsubs; i++)
        n += 2 + s->subs[i].filter_len + 1 + 4;
    if (s->owner_known)
        n += 1 + (s->owner ? 2 + s->owner_len : 0);
    if (n <= cap) {
        wr_t w = {out};
        put_u8(&w, 'S');
        put_u8(&w, s->owner_known ? SESSION_OWNER_VERSION : STORE_REC_VERSION);
        put_u8(&w, s->flags);
        put_u32(&w, s->expiry_interval);
        put_u64(&w, s->expiry_deadline);
        put_u16(&w, s->next_pid);
        put_u32(&w, s->nsubs);
        for (uint32_t i = 0; i < s->nsubs; i++) {
            const store_sub_t *sub = &s->subs[i];
            put_u16(&w, (uint16_t)sub->filter_len);
            put_bytes(&w, sub->filter, sub->filter_len);
            put_u8(&w, sub->options);
            put_u32(&w, sub->sub_id);
        }
        if (s->owner_known) {
            put_u8(&w, s->owner ? 1 : 0);
            if (s->owner) {
                put_u16(&w, (uint16_t)s->owner_len);
                put_bytes(&w, s->owner, s->owner_len);
            }
        }
    }
    return n;
}

int store_rec_decode_session(const void *buf, size_t len, store_session_t *out)
{
    rd_t r;
    uint8_t version = 0;
    int rc = get_header_v(&r, buf, len, 'S', SESSION_OWNER_VERSION, &version);

    out->subs = NULL;
    out->nsubs = 0;
    out->owner_known = false;
    out->owner = NULL;
    out->owner_len = 0;
    if (rc)
        return rc;
    out->flags = get_u8(&r);
    out->expiry_interval = get_u32(&r);
    out->expiry_deadline = get_u64(&r);
    out->next_pid = get_u16(&r);
    uint32_t nsubs = get_u32(&r);
    /* Never allocate for more subscriptions than the bytes left can hold. */
    if (r.bad || nsubs > r.left / SUB_MIN_SIZE)
        return STORE_ECORRUPT;
    if (nsubs > 0)
        out->subs = an_malloc(nsubs * sizeof(*out->subs));
    out->nsubs = nsubs;
    for (uint32_t i = 0; i < nsubs; i++) {
        store_sub_t *sub = &out->subs[i];
        sub->filter = get_field(&r, 2, &sub->filter_len);
        sub->options = get_u8(&r);
        sub->sub_id = get_u32(&r);
    }
    if (version >= SESSION_OWNER_VERSION) {
        out->owner_known = true;
        uint8_t has_owner = get_u8(&r);
        if (has_owner > 1)
            r.bad = 1;
        else if (has_owner)
            out->owner = get_field(&r, 2, &out->owner_len);
    }
    if ((rc = finish(&r)) == 0 && !session_ok(out))
        rc = STORE_ECORRUPT;
    if (rc)
        store_rec_session_free(out);
    return rc;
}

void store_rec_session_free(store_session_t *s)
{
    free(s->subs);
    s->subs = NULL;
    s->nsubs = 0;
}

/* ---- outgoing message ------------------------------------------------- */

#define OUT_F_RETAIN 0x01u
#define OUT_F_DUP 0x02u
#define OUTMSG_ID_VERSION 2u /* 'Q' 2: the publish id after the payload */

static int outmsg_ok(const store_outmsg_t *m)
{
    if (m->qos > 2 || (m->dup && m->qos == 0) || m->topic_len < 1 || m->topic_len > U16_MAX ||
        m->props_len > UINT32_MAX || m->payload_len > UINT32_MAX)
        return 0;
    switch (m->state) {
    case STORE_OUT_QUEUED:
        return 1;
    case STORE_OUT_WAIT_PUBACK:
        return m->qos == 1 && m->pid != 0;
    case STORE_OUT_WAIT_PUBREC:
    case STORE_OUT_WAIT_PUBCOMP:
        return m->qos == 2 && m->pid != 0;
    default:
        return 0;
    }
}

size_t store_rec_encode_outmsg(const store_outmsg_t *m, void *out, size_t cap)
{
    if (!outmsg_ok(m))
        return 0;
    size_t n = 2 + 1 + 1 + 1 + 2 + 8 + 2 + m->topic_len + 4 + m->props_len + 4 + m->payload_len;
    if (m->id_seq)
        n += 8 + 4;
    if (n <= cap) {
        wr_t w = {out};
        put_u8(&w, 'Q');
        put_u8(&w, m->id_seq ? OUTMSG_ID_VERSION : STORE_REC_VERSION);
        put_u8(&w, m->state);
        put_u8(&w, m->qos);
        put_u8(&w, (uint8_t)((m->retain ? OUT_F_RETAIN : 0) | (m->dup ? OUT_F_DUP : 0)));
        put_u16(&w, m->pid);
        put_u64(&w, m->expiry);
        put_u16(&w, (uint16_t)m->topic_len);
        put_bytes(&w, m->topic, m->topic_len);
        put_u32(&w, (uint32_t)m->props_len);
        put_bytes(&w, m->props, m->props_len);
        put_u32(&w, (uint32_t)m->payload_len);
        put_bytes(&w, m->payload, m->payload_len);
        if (m->id_seq) {
            put_u64(&w, m->id_epoch);
            put_u32(&w, m->id_seq);
        }
    }
    return n;
}

int store_rec_decode_outmsg(const void *buf, size_t len, store_outmsg_t *out)
{
    rd_t r;
    uint8_t version = 0;
    int rc = get_header_v(&r, buf, len, 'Q', OUTMSG_ID_VERSION, &version);
    out->id_epoch = 0;
    out->id_seq = 0;
    if (rc)
        return rc;
    out->state = get_u8(&r);
    out->qos = get_u8(&r);
    uint8_t flags = get_u8(&r);
    out->retain = (flags & OUT_F_RETAIN) != 0;
    out->dup = (flags & OUT_F_DUP) != 0;
    out->pid = get_u16(&r);
    out->expiry = get_u64(&r);
    out->topic = get_field(&r, 2, &out->topic_len);
    out->props = get_field(&r, 4, &out->props_len);
    out->payload = get_field(&r, 4, &out->payload_len);
    if (version >= OUTMSG_ID_VERSION) {
        out->id_epoch = get_u64(&r);
        out->id_seq = get_u32(&r);
        if (out->id_seq == 0) /* version 2 is written only with an id */
            r.bad = 1;
    }
    if ((rc = finish(&r)) != 0)
        return rc;
    if ((flags & ~(OUT_F_RETAIN | OUT_F_DUP)) != 0 || !outmsg_ok(out))
        return STORE_ECORRUPT;
    return 0;
}

/* ---- incoming QoS 2 id ------------------------------------------------ */

size_t store_rec_encode_incoming(void *out, size_t cap)
{
    if (cap >= 2) {
        wr_t w = {out};
        put_u8(&w, 'I');
        put_u8(&w, STORE_REC_VERSION);
    }
    return 2;
}

int store_rec_decode_incoming(const void *buf, size_t len)
{
    rd_t r;
    int rc = get_header(&r, buf, len, 'I');
    return rc ? rc : finish(&r);
}
