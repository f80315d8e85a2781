/* cl_tomb.c -- tombstones of retained messages cleared, so that a clear
 * made while a link was down wins over the copy that survived on the other
 * side (docs/cluster.md "Retained messages").
 *
 * Without them the retained sync of a link that comes up sends the peer's
 * copy of a topic cleared here meanwhile, and the copy comes back.  With
 * them: every clear this node makes or receives (a retained publish with
 * an empty payload) leaves a tombstone (topic, publish time, origin node);
 * a link that comes up gets the tombstones after the retained set
 * (CL_F_RETAINED_CLEAR); a peer's copy older than a tombstone is not
 * taken, and a tombstone newer than the receiver's own copy clears it
 * (and is kept there too, so it travels on).  "Older" is the order the
 * retained sync uses: publish time, then the origin node's name.  A
 * retained message set again after the clear removes the tombstone.
 *
 * Bounds: at most CL_TOMB_MAX tombstones, each kept CL_TOMB_TTL_MS; the
 * oldest go first (a link down for longer than that can bring a cleared
 * copy back, as without tombstones).
 *
 * Threads: the link thread only (fwd_apply, the frames' handlers, the
 * sync); the table is cl_links_t.tombs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_link_int.h"
#include "retain.h"

#define CL_TOMB_MAX 100000
#define CL_TOMB_TTL_MS (24ull * 3600 * 1000)

typedef struct cl_tomb_s {
    struct cl_tomb_s *next;             /* bucket chain */
    struct cl_tomb_s *older, *newer;    /* age list */
    uint64_t hash, published_at, added; /* added: an_now_ms() */
    uint16_t len;
    char origin[CL_NAME_MAX];
    uint8_t topic[];
} cl_tomb_t;

struct cl_tombs_s {
    uint64_t key[2];
    cl_tomb_t **b;
    size_t nb, n;
    cl_tomb_t *oldest, *newest;
};

void cl_tomb_init(cl_t *cl)
{
    cl_tombs_t *t = an_calloc(1, sizeof(*t));
    an_random_key(t->key);
    t->nb = 256;
    t->b = an_calloc(t->nb, sizeof(*t->b));
    cl->links->tombs = t;
}

void cl_tomb_free(cl_t *cl)
{
    cl_tombs_t *t = cl->links->tombs;
    if (t == NULL)
        return;
    for (cl_tomb_t *e = t->oldest, *n; e; e = n) {
        n = e->newer;
        free(e);
    }
    free(t->b);
    free(t);
    cl->links->tombs = NULL;
}

static cl_tomb_t **slot(cl_tombs_t *t, const uint8_t *topic, size_t len, uint64_t h)
{
    cl_tomb_t **pp = &t->b[h & (t->nb - 1)];
    while (*pp && !((*pp)->hash == h && (*pp)->len == len && memcmp((*pp)->topic, topic, len) == 0))
        pp = &(*pp)->next;
    return pp;
}

static void unlink_age(cl_tombs_t *t, cl_tomb_t *e)
{
    if (e->older)
        e->older->newer = e->newer;
    else
        t->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        t->newest = e->older;
}

static void remove_entry(cl_tombs_t *t, cl_tomb_t *e)
{
    cl_tomb_t **pp = slot(t, e->topic, e->len, e->hash);
    *pp = e->next;
    unlink_age(t, e);
    t->n--;
    free(e);
}

/* The oldest out while over the bound or past their time. */
static void expire(cl_tombs_t *t, uint64_t now)
{
    while (t->oldest && (t->n > CL_TOMB_MAX || t->oldest->added + CL_TOMB_TTL_MS < now))
        remove_entry(t, t->oldest);
}

static void grow(cl_tombs_t *t)
{
    size_t nb = t->nb * 2;
    cl_tomb_t **b = an_calloc(nb, sizeof(*b));
    for (size_t i = 0; i < t->nb; i++)
        for (cl_tomb_t *e = t->b[i], *n; e; e = n) {
            n = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    free(t->b);
    t->b = b;
    t->nb = nb;
}

/* 1 when (pa, oa) is newer than (pb, ob): the retained sync's order. */
static int newer(uint64_t pa, const char *oa, uint64_t pb, const char *ob)
{
    return pa > pb || (pa == pb && strcmp(oa, ob) > 0);
}

static cl_tomb_t *find(cl_tombs_t *t, const uint8_t *topic, size_t len)
{
    return *slot(t, topic, len, an_siphash(t->key, topic, len));
}

void cl_tomb_note(cl_t *cl, const uint8_t *topic, size_t len, uint64_t published_at,
                  const char *origin)
{
    cl_tombs_t *t = cl->links->tombs;
    if (t == NULL || len == 0 || len > UINT16_MAX)
        return;
    uint64_t now = an_now_ms(), h = an_siphash(t->key, topic, len);
    cl_tomb_t **pp = slot(t, topic, len, h), *e = *pp;
    if (e != NULL) {
        if (!newer(published_at, origin, e->published_at, e->origin))
            return;
        unlink_age(t, e);
    } else {
        e = an_calloc(1, sizeof(*e) + len);
        e->hash = h;
        e->len = (uint16_t)len;
        memcpy(e->topic, topic, len);
        *pp = e;
        if (++t->n > t->nb)
            grow(t);
    }
    e->published_at = published_at;
    snprintf(e->origin, sizeof(e->origin), "%s", origin);
    e->added = now;
    e->older = t->newest;
    e->newer = NULL;
    if (t->newest)
        t->newest->newer = e;
    else
        t->oldest = e;
    t->newest = e;
    expire(t, now);
}

void cl_tomb_set(cl_t *cl, const uint8_t *topic, size_t len, uint64_t published_at,
                 const char *origin)
{
    cl_tombs_t *t = cl->links->tombs;
    cl_tomb_t *e = t ? find(t, topic, len) : NULL;
    if (e != NULL && newer(published_at, origin, e->published_at, e->origin))
        remove_entry(t, e);
}

int cl_tomb_covers(cl_t *cl, const uint8_t *topic, size_t len, uint64_t published_at,
                   const char *origin)
{
    cl_tombs_t *t = cl->links->tombs;
    cl_tomb_t *e = t ? find(t, topic, len) : NULL;
    return e != NULL && !newer(published_at, origin, e->published_at, e->origin);
}

void cl_tomb_sync(cl_t *cl, cl_conn_t *c)
{
    cl_tombs_t *t = cl->links->tombs;
    if (t == NULL)
        return;
    expire(t, an_now_ms());
    for (cl_tomb_t *e = t->oldest; e; e = e->newer) {
        cl_msg_t w = {.published_at = e->published_at,
                      .flags = CL_MSG_RETAIN,
                      .origin = e->origin,
                      .origin_len = (uint8_t)strlen(e->origin),
                      .topic = e->topic,
                      .topic_len = e->len};
        cl_enc_msg(&c->out, CL_F_RETAINED_CLEAR, &w);
    }
}

static void keep_first(void *ud, msg_t *m)
{
    msg_t **out = ud;
    if (*out == NULL)
        *out = m;
    else
        msg_unref(&m);
}

int cl_tomb_recv(cl_t *cl, cl_peer_t *p, const uint8_t *body, uint32_t len)
{
    cl_msg_t x;
    if (cl_dec_msg(body, len, &x) < 0 || x.topic_len == 0 || x.payload_len != 0 ||
        x.origin_len == 0 || memchr(x.topic, '+', x.topic_len) || memchr(x.topic, '#', x.topic_len))
        return -1;
    char oname[CL_NAME_MAX];
    snprintf(oname, sizeof(oname), "%.*s", (int)x.origin_len, x.origin);
    cl_tomb_note(cl, x.topic, x.topic_len, x.published_at, oname);
    msg_t *mine = NULL;
    retain_match(cl->srv->retain, x.topic, x.topic_len, keep_first, &mine);
    if (mine == NULL)
        return 0;
    int clear = newer(x.published_at, oname, mine->published_at, cl_retained_origin(cl, mine));
    msg_unref(&mine);
    if (!clear)
        return 0;
    /* the clear, as a retained message with no payload, stored by a worker */
    msg_t *m = msg_new_v5(x.topic, x.topic_len, NULL, 0, NULL, 0, 0, 1, 0);
    m->published_at = x.published_at;
    m->origin_node = (uint16_t)(p - cl->links->peers);
    m->hops = 1;
    cl_recv_post(cl, 0, m, CL_IT_RETAIN);
    return 0;
}
