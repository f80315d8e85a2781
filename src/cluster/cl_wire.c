/* cl_wire.c -- the node links' frame codec (cl_wire.h). */
#include "cl_wire.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

void cl_buf_reserve(cl_buf_t *b, size_t n)
{
    if (b->len + n <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n)
        cap *= 2;
    b->p = an_realloc(b->p, cap);
    b->cap = cap;
}

void cl_buf_free(cl_buf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static inline void put8(uint8_t **p, uint8_t v)
{
    *(*p)++ = v;
}
static inline void put16(uint8_t **p, uint16_t v)
{
    (*p)[0] = (uint8_t)(v >> 8);
    (*p)[1] = (uint8_t)v;
    *p += 2;
}
static inline void put32(uint8_t **p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        (*p)[i] = (uint8_t)(v >> (24 - 8 * i));
    *p += 4;
}
static inline void put64(uint8_t **p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        (*p)[i] = (uint8_t)(v >> (56 - 8 * i));
    *p += 8;
}
static inline void putn(uint8_t **p, const void *s, size_t n)
{
    if (n)
        memcpy(*p, s, n);
    *p += n;
}

/* Start a frame of body size n: returns where the body goes. */
static uint8_t *frame(cl_buf_t *b, uint8_t type, size_t n)
{
    cl_buf_reserve(b, 5 + n);
    uint8_t *p = b->p + b->len;
    put32(&p, (uint32_t)(n + 1));
    put8(&p, type);
    b->len += 5 + n;
    return p;
}

long cl_frame_next(const uint8_t *buf, size_t len, uint32_t max, uint8_t *type,
                   const uint8_t **body, uint32_t *body_len)
{
    if (len < 4)
        return 0;
    uint32_t n = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | buf[3];
    if (n == 0 || n > max)
        return -1;
    if (len - 4 < n)
        return 0;
    *type = buf[4];
    *body = buf + 5;
    *body_len = n - 1;
    return (long)n + 4;
}

void cl_enc_hello(cl_buf_t *b, const cl_hello_t *h)
{
    uint8_t *p = frame(b, CL_F_HELLO, 2 + 1 + h->cluster_len + 1 + h->node_len + CL_NONCE_LEN + 8);
    put16(&p, h->version);
    put8(&p, h->cluster_len);
    putn(&p, h->cluster, h->cluster_len);
    put8(&p, h->node_len);
    putn(&p, h->node, h->node_len);
    putn(&p, h->nonce, CL_NONCE_LEN);
    put64(&p, h->incarnation);
}

void cl_enc_auth(cl_buf_t *b, const uint8_t mac[CL_MAC_LEN])
{
    uint8_t *p = frame(b, CL_F_AUTH, CL_MAC_LEN);
    putn(&p, mac, CL_MAC_LEN);
}

void cl_enc_empty(cl_buf_t *b, uint8_t type)
{
    frame(b, type, 0);
}

void cl_enc_route(cl_buf_t *b, uint8_t type, const uint8_t *filter, uint16_t len)
{
    uint8_t *p = frame(b, type, 2 + (size_t)len);
    put16(&p, len);
    putn(&p, filter, len);
}

void cl_enc_ack(cl_buf_t *b, uint64_t seq)
{
    cl_enc_u64(b, CL_F_ACK, seq);
}

void cl_enc_u64(cl_buf_t *b, uint8_t type, uint64_t v)
{
    uint8_t *p = frame(b, type, 8);
    put64(&p, v);
}

#define MSG_FIXED (8 + 8 + 4 + 2 + 1 + 1 + 1 + 2 + 4)
#define MSG_ID_LEN (8 + 4) /* CL_MSG_ID: epoch | number, after the properties */

/* The message's size in a frame. */
static size_t msg_len(const cl_msg_t *m)
{
    return MSG_FIXED + (size_t)m->origin_len + m->topic_len + m->props_len + m->payload_len +
           ((m->flags & CL_MSG_ID) ? MSG_ID_LEN : 0);
}

static void put_msg(uint8_t *p, const cl_msg_t *m);

void cl_enc_msg(cl_buf_t *b, uint8_t type, const cl_msg_t *m)
{
    put_msg(frame(b, type, msg_len(m)), m);
}

void cl_enc_msg_shared(cl_buf_t *b, const cl_groups_t *g, const cl_msg_t *m)
{
    size_t n = msg_len(m), gn = 2;
    for (uint8_t i = 0; i < g->n; i++)
        gn += 2 + (size_t)g->len[i];
    uint8_t *p = frame(b, CL_F_MSG_SHARED, gn + n);
    put8(&p, g->plain);
    put8(&p, g->n);
    for (uint8_t i = 0; i < g->n; i++) {
        put16(&p, g->len[i]);
        putn(&p, g->f[i], g->len[i]);
    }
    put_msg(p, m);
}

static void put_msg(uint8_t *p0, const cl_msg_t *m)
{
    uint8_t *p = p0;
    put64(&p, m->seq);
    put64(&p, m->published_at);
    put32(&p, m->expiry_ms);
    put16(&p, m->src);
    put8(&p, m->qos);
    put8(&p, m->flags);
    put8(&p, m->origin_len);
    putn(&p, m->origin, m->origin_len);
    put16(&p, m->topic_len);
    putn(&p, m->topic, m->topic_len);
    put32(&p, m->props_len);
    putn(&p, m->props, m->props_len);
    if (m->flags & CL_MSG_ID) {
        put64(&p, m->id_epoch);
        put32(&p, m->id_seq);
    }
    putn(&p, m->payload, m->payload_len);
}

/* ---- decoding: a cursor that refuses to pass the end ---- */

typedef struct {
    const uint8_t *p;
    uint32_t left;
    int bad;
} cur_t;

static uint64_t get(cur_t *c, int bytes)
{
    if (c->bad || c->left < (uint32_t)bytes) {
        c->bad = 1;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | c->p[i];
    c->p += bytes;
    c->left -= (uint32_t)bytes;
    return v;
}

static const uint8_t *getn(cur_t *c, uint32_t n)
{
    if (c->bad || c->left < n) {
        c->bad = 1;
        return NULL;
    }
    const uint8_t *s = c->p;
    c->p += n;
    c->left -= n;
    return s;
}

int cl_dec_hello(const uint8_t *body, uint32_t len, cl_hello_t *h)
{
    cur_t c = {body, len, 0};
    h->version = (uint16_t)get(&c, 2);
    h->cluster_len = (uint8_t)get(&c, 1);
    h->cluster = (const char *)getn(&c, h->cluster_len);
    h->node_len = (uint8_t)get(&c, 1);
    h->node = (const char *)getn(&c, h->node_len);
    const uint8_t *nonce = getn(&c, CL_NONCE_LEN);
    h->incarnation = get(&c, 8);
    if (c.bad || c.left != 0)
        return -1;
    memcpy(h->nonce, nonce, CL_NONCE_LEN);
    return 0;
}

int cl_dec_auth(const uint8_t *body, uint32_t len, const uint8_t **mac)
{
    if (len != CL_MAC_LEN)
        return -1;
    *mac = body;
    return 0;
}

int cl_dec_route(const uint8_t *body, uint32_t len, const uint8_t **filter, uint16_t *flen)
{
    cur_t c = {body, len, 0};
    *flen = (uint16_t)get(&c, 2);
    *filter = getn(&c, *flen);
    return c.bad || c.left != 0 ? -1 : 0;
}

int cl_dec_ack(const uint8_t *body, uint32_t len, uint64_t *seq)
{
    cur_t c = {body, len, 0};
    *seq = get(&c, 8);
    return c.bad || c.left != 0 ? -1 : 0;
}

int cl_dec_msg_shared(const uint8_t *body, uint32_t len, cl_groups_t *g, cl_msg_t *m)
{
    cur_t c = {body, len, 0};
    g->plain = (uint8_t)get(&c, 1);
    g->n = (uint8_t)get(&c, 1);
    if (c.bad || g->plain > 1 || g->n > CL_GROUPS_MAX)
        return -1;
    for (uint8_t i = 0; i < g->n; i++) {
        g->len[i] = (uint16_t)get(&c, 2);
        g->f[i] = getn(&c, g->len[i]);
    }
    if (c.bad)
        return -1;
    return cl_dec_msg(c.p, c.left, m);
}

int cl_dec_msg(const uint8_t *body, uint32_t len, cl_msg_t *m)
{
    cur_t c = {body, len, 0};
    m->seq = get(&c, 8);
    m->published_at = get(&c, 8);
    m->expiry_ms = (uint32_t)get(&c, 4);
    m->src = (uint16_t)get(&c, 2);
    m->qos = (uint8_t)get(&c, 1);
    m->flags = (uint8_t)get(&c, 1);
    m->origin_len = (uint8_t)get(&c, 1);
    m->origin = (const char *)getn(&c, m->origin_len);
    m->topic_len = (uint16_t)get(&c, 2);
    m->topic = getn(&c, m->topic_len);
    m->props_len = (uint32_t)get(&c, 4);
    m->props = getn(&c, m->props_len);
    m->id_epoch = 0;
    m->id_seq = 0;
    if (m->flags & CL_MSG_ID) {
        m->id_epoch = get(&c, 8);
        m->id_seq = (uint32_t)get(&c, 4);
    }
    if (c.bad || m->qos > 2 || ((m->flags & CL_MSG_ID) && m->id_seq == 0))
        return -1;
    m->payload_len = c.left;
    m->payload = c.p;
    return 0;
}

void cl_enc_repl_head(cl_buf_t *b, uint64_t seq, uint8_t flags)
{
    uint8_t *p = frame(b, CL_F_REPL_DATA, 9);
    put64(&p, seq);
    put8(&p, flags);
}

void cl_enc_patch_len(cl_buf_t *b, size_t start)
{
    uint8_t *p = b->p + start;
    put32(&p, (uint32_t)(b->len - start - 4));
}

void cl_enc_repl_ack(cl_buf_t *b, uint64_t seq, uint8_t ok)
{
    uint8_t *p = frame(b, CL_F_REPL_ACK, 9);
    put64(&p, seq);
    put8(&p, ok);
}

int cl_dec_repl_data(const uint8_t *body, uint32_t len, uint64_t *seq, uint8_t *flags,
                     const uint8_t **ops, uint32_t *ops_len)
{
    cur_t c = {body, len, 0};
    *seq = get(&c, 8);
    *flags = (uint8_t)get(&c, 1);
    if (c.bad)
        return -1;
    *ops = c.p;
    *ops_len = c.left;
    return 0;
}

int cl_dec_repl_ack(const uint8_t *body, uint32_t len, uint64_t *seq, uint8_t *ok)
{
    cur_t c = {body, len, 0};
    *seq = get(&c, 8);
    *ok = (uint8_t)get(&c, 1);
    return c.bad || c.left != 0 ? -1 : 0;
}

void cl_enc_bits(cl_buf_t *b, uint32_t blocks, uint64_t routes, const uint8_t *bits)
{
    uint8_t *p = frame(b, CL_F_ROUTE_BITS, CL_BITS_HEAD + (size_t)blocks * 64);
    put32(&p, blocks);
    put64(&p, routes);
    putn(&p, bits, (size_t)blocks * 64);
}

void cl_enc_bits_delta(cl_buf_t *b, uint32_t blocks, uint64_t routes, const uint32_t *ent,
                       size_t count)
{
    uint8_t *p = frame(b, CL_F_ROUTE_BITS_DELTA, CL_BITS_HEAD + 4 * count);
    put32(&p, blocks);
    put64(&p, routes);
    for (size_t i = 0; i < count; i++)
        put32(&p, ent[i]);
}

int cl_dec_bits(const uint8_t *body, uint32_t len, uint32_t *blocks, uint64_t *routes,
                const uint8_t **bits)
{
    cur_t c = {body, len, 0};
    *blocks = (uint32_t)get(&c, 4);
    *routes = get(&c, 8);
    if (c.bad || *blocks == 0 || *blocks > CL_BITS_MAX_BLOCKS || c.left != *blocks * 64u)
        return -1;
    *bits = c.p;
    return 0;
}

int cl_dec_bits_delta(const uint8_t *body, uint32_t len, uint32_t *blocks, uint64_t *routes,
                      const uint8_t **ents, size_t *count)
{
    cur_t c = {body, len, 0};
    *blocks = (uint32_t)get(&c, 4);
    *routes = get(&c, 8);
    if (c.bad || *blocks == 0 || *blocks > CL_BITS_MAX_BLOCKS || c.left % 4 != 0)
        return -1;
    *ents = c.p;
    *count = c.left / 4;
    return 0;
}
