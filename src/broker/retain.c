/* retain.c -- retained messages in a topic-level tree (see retain.h).
 *
 *   root ─┬─ "sensors" ─┬─ "t1"  [msg]
 *         │             └─ "t2"  [msg]
 *         └─ "$SYS" ─ "broker" ─ ...
 *
 * Children hang in a chained hash table per node, grown at load 1, hashed
 * with SipHash under the tree's random key (levels are chosen by
 * publishers: nobody can make them share a chain on purpose).  Nodes
 * left with neither message nor children are pruned when a topic is
 * cleared.  Matches are collected (with references) under the mutex and
 * handed to the callback after it is released, so delivery never runs
 * under the lock.
 */
#include "retain.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef struct rnode_s rnode_t;
struct rnode_s {
    rnode_t *parent;
    rnode_t *chain; /* next in the parent's bucket */
    rnode_t **kids; /* buckets */
    msg_t *msg;
    uint32_t nkids, nbuckets;
    uint32_t hash; /* of name: computed once, reused on growth and unlink */
    uint16_t name_len;
    uint8_t name[];
};

struct retain_s {
    pthread_mutex_t mu;
    rnode_t *root;
    size_t count;
    size_t dollar;   /* of count, topics starting with '$' ($SYS...): retain_count_dollar */
    size_t expiring; /* messages with an expiry: retain_expire() has work */
    uint64_t key[2]; /* SipHash key of the level names */
};

typedef struct {
    msg_t **v;
    size_t n, cap;
} mvec_t;

static rnode_t *node_new(rnode_t *parent, const uint8_t *name, uint16_t len, uint32_t hash)
{
    rnode_t *n = an_calloc(1, sizeof(*n) + len);
    n->parent = parent;
    n->hash = hash;
    n->name_len = len;
    if (len)
        memcpy(n->name, name, len);
    return n;
}

static uint32_t name_hash(const uint64_t key[2], const uint8_t *name, uint16_t len)
{
    return (uint32_t)an_siphash(key, name, len);
}

/* The child of n named (name, len), whose name_hash is h. */
static rnode_t *kid_find(const rnode_t *n, const uint8_t *name, uint16_t len, uint32_t h)
{
    if (n->nbuckets == 0)
        return NULL;
    rnode_t *k = n->kids[h & (n->nbuckets - 1)];
    for (; k; k = k->chain)
        if (k->hash == h && k->name_len == len && memcmp(k->name, name, len) == 0)
            return k;
    return NULL;
}

static void kid_insert_raw(rnode_t **buckets, uint32_t nb, rnode_t *k)
{
    rnode_t **b = &buckets[k->hash & (nb - 1)];
    k->chain = *b;
    *b = k;
}

static rnode_t *kid_add(rnode_t *n, const uint8_t *name, uint16_t len, uint32_t h)
{
    if (n->nkids + 1 > n->nbuckets) {
        uint32_t nb = n->nbuckets ? n->nbuckets * 2 : 4;
        rnode_t **nk = an_calloc(nb, sizeof(*nk));
        for (uint32_t i = 0; i < n->nbuckets; i++) {
            rnode_t *k = n->kids[i];
            while (k) {
                rnode_t *next = k->chain;
                kid_insert_raw(nk, nb, k);
                k = next;
            }
        }
        free(n->kids);
        n->kids = nk;
        n->nbuckets = nb;
    }
    rnode_t *k = node_new(n, name, len, h);
    kid_insert_raw(n->kids, n->nbuckets, k);
    n->nkids++;
    return k;
}

static void kid_unlink(rnode_t *n, rnode_t *k)
{
    rnode_t **pp = &n->kids[k->hash & (n->nbuckets - 1)];
    while (*pp != k)
        pp = &(*pp)->chain;
    *pp = k->chain;
    n->nkids--;
}

static void node_free(rnode_t *n)
{
    for (uint32_t i = 0; i < n->nbuckets; i++) {
        rnode_t *k = n->kids[i];
        while (k) {
            rnode_t *next = k->chain;
            node_free(k);
            k = next;
        }
    }
    msg_unref(&n->msg);
    free(n->kids);
    free(n);
}

retain_t *retain_new(void)
{
    retain_t *r = an_calloc(1, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
    r->root = node_new(NULL, NULL, 0, 0);
    an_random_key(r->key);
    return r;
}

void retain_free(retain_t *r)
{
    if (r == NULL)
        return;
    node_free(r->root);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* Next level of a topic: [*p, end of level); returns its length and moves
 * *p past the separator.  *more is 0 after the last level. */
static uint16_t next_level(const uint8_t **p, const uint8_t *end, int *more)
{
    const uint8_t *s = *p;
    const uint8_t *slash = memchr(s, '/', (size_t)(end - s));
    if (slash == NULL) {
        *p = end;
        *more = 0;
        return (uint16_t)(end - s);
    }
    *p = slash + 1;
    *more = 1;
    return (uint16_t)(slash - s);
}

int retain_set_max(retain_t *r, msg_t *m, size_t max)
{
    const uint8_t *p = msg_topic(m), *end = p + m->topic_len;
    int clear = m->payload_len == 0, more = 1, rc = 0;
    int dollar = m->topic_len > 0 && p[0] == '$';
    pthread_mutex_lock(&r->mu);
    /* checked under the mutex, before a node is made: the count never
     * passes max, whichever workers store at once */
    int full = max && r->count >= max;
    rnode_t *n = r->root;
    while (more) {
        const uint8_t *lvl = p;
        uint16_t len = next_level(&p, end, &more);
        uint32_t h = name_hash(r->key, lvl, len);
        rnode_t *k = kid_find(n, lvl, len, h);
        if (k == NULL) {
            if (clear)
                goto out; /* nothing retained there */
            if (full) {
                rc = -1; /* a new topic */
                goto out;
            }
            k = kid_add(n, lvl, len, h);
        }
        n = k;
    }
    if (!clear && full && n->msg == NULL) {
        rc = -1;
        goto out;
    }
    if (clear) {
        if (n->msg) {
            r->expiring -= n->msg->expire_at != 0;
            msg_unref(&n->msg);
            r->count--;
            r->dollar -= dollar;
        }
        /* prune nodes left empty */
        while (n->parent && n->msg == NULL && n->nkids == 0) {
            rnode_t *parent = n->parent;
            kid_unlink(parent, n);
            free(n->kids);
            free(n);
            n = parent;
        }
    } else {
        if (n->msg) {
            r->expiring -= n->msg->expire_at != 0;
            msg_unref(&n->msg);
        } else {
            r->count++;
            r->dollar += dollar;
        }
        r->expiring += m->expire_at != 0;
        n->msg = msg_ref(m);
    }
out:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void retain_set(retain_t *r, msg_t *m)
{
    (void)retain_set_max(r, m, 0);
}

static void mvec_push(mvec_t *v, msg_t *m)
{
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 16;
        v->v = an_realloc(v->v, v->cap * sizeof(*v->v));
    }
    v->v[v->n++] = msg_ref(m);
}

static void collect_all(const rnode_t *n, mvec_t *v, int skip_dollar)
{
    if (n->msg)
        mvec_push(v, n->msg);
    for (uint32_t i = 0; i < n->nbuckets; i++)
        for (const rnode_t *k = n->kids[i]; k; k = k->chain) {
            if (skip_dollar && k->name_len > 0 && k->name[0] == '$')
                continue;
            collect_all(k, v, 0);
        }
}

/* Match the filter levels starting at p against the children of n. */
static void match(const uint64_t key[2], const rnode_t *n, const uint8_t *p, const uint8_t *end,
                  int root, mvec_t *v)
{
    int more;
    const uint8_t *lvl = p;
    uint16_t len = next_level(&p, end, &more);
    if (len == 1 && lvl[0] == '#') {
        /* "a/#" matches "a" itself and everything below it */
        if (!root && n->msg)
            mvec_push(v, n->msg);
        for (uint32_t i = 0; i < n->nbuckets; i++)
            for (const rnode_t *k = n->kids[i]; k; k = k->chain) {
                if (root && k->name_len > 0 && k->name[0] == '$')
                    continue;
                collect_all(k, v, 0);
            }
        return;
    }
    if (len == 1 && lvl[0] == '+') {
        for (uint32_t i = 0; i < n->nbuckets; i++)
            for (const rnode_t *k = n->kids[i]; k; k = k->chain) {
                if (root && k->name_len > 0 && k->name[0] == '$')
                    continue;
                if (more)
                    match(key, k, p, end, 0, v);
                else if (k->msg)
                    mvec_push(v, k->msg);
            }
        return;
    }
    const rnode_t *k = kid_find(n, lvl, len, name_hash(key, lvl, len));
    if (k == NULL)
        return;
    if (more)
        match(key, k, p, end, 0, v);
    else if (k->msg)
        mvec_push(v, k->msg);
}

void retain_match(retain_t *r, const uint8_t *filter, size_t len, retain_cb cb, void *ud)
{
    mvec_t v = {0};
    pthread_mutex_lock(&r->mu);
    if (r->count)
        match(r->key, r->root, filter, filter + len, 1, &v);
    pthread_mutex_unlock(&r->mu);
    for (size_t i = 0; i < v.n; i++)
        cb(ud, v.v[i]);
    free(v.v);
}

/* Depth first: expired messages leave (to v), then nodes left empty. */
static void expire_walk(retain_t *r, rnode_t *n, uint64_t now, mvec_t *v)
{
    for (uint32_t i = 0; i < n->nbuckets; i++) {
        rnode_t *k = n->kids[i];
        while (k) {
            rnode_t *next = k->chain;
            expire_walk(r, k, now, v);
            if (k->msg == NULL && k->nkids == 0) {
                kid_unlink(n, k);
                free(k->kids);
                free(k);
            }
            k = next;
        }
    }
    if (n->msg && msg_expired(n->msg, now)) {
        mvec_push(v, n->msg);
        r->dollar -= n->msg->topic_len > 0 && msg_topic(n->msg)[0] == '$';
        msg_unref(&n->msg);
        r->count--;
        r->expiring--;
    }
}

size_t retain_expire(retain_t *r, uint64_t now, retain_cb cb, void *ud)
{
    mvec_t v = {0};
    pthread_mutex_lock(&r->mu);
    if (r->expiring)
        expire_walk(r, r->root, now, &v);
    pthread_mutex_unlock(&r->mu);
    for (size_t i = 0; i < v.n; i++)
        cb(ud, v.v[i]);
    free(v.v);
    return v.n;
}

void retain_walk(retain_t *r, const uint8_t *prefix, size_t len, retain_cb cb, void *ud)
{
    mvec_t v = {0};
    pthread_mutex_lock(&r->mu);
    if (r->count)
        collect_all(r->root, &v, 0);
    pthread_mutex_unlock(&r->mu);
    for (size_t i = 0; i < v.n; i++) {
        if (v.v[i]->topic_len >= len && memcmp(msg_topic(v.v[i]), prefix, len) == 0)
            cb(ud, v.v[i]);
        else
            msg_unref(&v.v[i]);
    }
    free(v.v);
}

size_t retain_count(retain_t *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->count;
    pthread_mutex_unlock(&r->mu);
    return n;
}

size_t retain_count_dollar(retain_t *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->dollar;
    pthread_mutex_unlock(&r->mu);
    return n;
}
