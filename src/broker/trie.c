/* trie.c -- the topic trie (contract in trie.h).
 *
 * One node per filter level.  A node holds its parent (for pruning, and for
 * a depth-first match that climbs back without a stack or any allocation),
 * its '+' and '#' children, its named children (one inline pointer, else a
 * linear-probing table of 2^k pointers, load <= 0.7, halved when sparse,
 * keys hashed with SipHash-1-3 under a per-trie random key against
 * collision flooding) and its subscribers (one inline, else a dense array,
 * with a sid index above 16 so crowded filters stay O(1)).  Every non-root
 * node is non-empty: remove, and an insert failing for memory, prune back
 * up.  The root is always there (trie_nodes of an empty trie is 1).
 *
 * Exact filters (no '+' or '#') are not split into levels: each is ONE
 * compact node (xnode_t: its subscribers, the hash and the whole filter as
 * its key, 34 bytes and the key; no parent, children or wildcard slots,
 * which an exact filter never has) in a table of its own beside the root
 * (the same open-addressing code as a node's children).  Most device
 * subscriptions are exact (dev/{id}/in): one ~56-byte object from the
 * trie's slabs by size (slab.h) instead of a node per unique level, and a
 * publish finds them with one hash lookup of the whole topic before the
 * level walk, which then only meets wildcard filters.  Exact filters match '$' topics as any other (the '$' rule is
 * about wildcards).  trie_nodes counts them as nodes.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memrchr */
#endif
#include "trie.h"

#include <stdlib.h>
#include <string.h>

#include "slab.h"
#include "util.h"

typedef struct tnode_s tnode_t;

typedef struct {
    uint32_t cap;   /* items allocated */
    uint32_t ibits; /* log2 of the idx size; 0 = no idx (linear search) */
    uint32_t *idx;  /* sid -> item index + 1, linear probing; 0 = empty */
    sub_ref_t items[];
} subvec_t;

/* A filter's subscribers: one inline, else a dense array (the count is
 * kept beside it, in the node). */
typedef union {
    sub_ref_t one; /* nsubs <= 1 */
    subvec_t *vec; /* nsubs >= 2 */
} subu_t;

struct tnode_s {
    tnode_t *parent;
    tnode_t *plus, *hash;
    union {
        tnode_t *one; /* kbits == 0: at most one named child */
        void **tab;   /* kbits >= 2: 2^kbits slots of tnode_t * (slots_*) */
    } kids;
    subu_t subs;
    uint32_t nsubs;
    uint32_t nkids; /* named children */
    uint32_t khash; /* hash of key */
    uint16_t klen;
    uint8_t kbits;
    uint8_t key[]; /* this level's bytes (named nodes) */
};

/* An exact filter (no wildcard): its subscribers and the whole filter as
 * its key; never a child, a parent or a level (34 bytes and the key, where
 * a level node takes 72). */
typedef struct {
    subu_t subs;
    uint32_t nsubs;
    uint32_t khash; /* hash of the whole filter */
    uint16_t klen;
    uint8_t key[];
} xnode_t;

/* Exact filters' nodes (xnode_t and the filter, rounded to 8 bytes) come
 * from slabs by size, from 40 bytes in steps of 8: no malloc header, no
 * rounding to 16 (dev/<id>/in with an 8-byte id: 56 bytes where malloc
 * took 64).  Longer filters are malloc'd. */
#define XSLAB_CLASSES 16
#define XNODE_MIN 40u

struct trie_s {
    tnode_t *root;
    void **xtab; /* the exact filters: 2^xbits slots of xnode_t * (slots_*) */
    uint32_t xbits, nx;
    slab_t xslab[XSLAB_CLASSES]; /* xnode_t by size (x_alloc) */
    size_t count, nodes;
    uint64_t key[2];        /* SipHash key */
    trie_local_fn local_fn; /* trie_set_local_hook, or NULL */
    void *local_ud;
};

#define SUBS_INDEX_MIN 16 /* index a node's sids above this many */
#define SUBS_IDX_BITS0 5
#define KIDS_BITS0 2

/* ---- hashing ---- */

/* SipHash-1-3 of one level (an_siphash), folded to 32 bits. */
static uint32_t level_hash(const trie_t *t, const uint8_t *p, size_t n)
{
    uint64_t m = an_siphash(t->key, p, n);
    return (uint32_t)(m ^ (m >> 32));
}

static inline uint32_t sid_hash(uint64_t sid)
{
    return (uint32_t)((sid * 0x9E3779B97F4A7C15ull) >> 32);
}

/* End of the level starting at pos (index of the '/' or len). */
static inline size_t level_end(const uint8_t *s, size_t pos, size_t len)
{
    const uint8_t *e = pos < len ? memchr(s + pos, '/', len - pos) : NULL;
    return e ? (size_t)(e - s) : len;
}

/* Start of the level that ends just before pos (pos >= 1). */
static inline size_t level_start_before(const uint8_t *s, size_t pos)
{
    const uint8_t *e = pos > 1 ? memrchr(s, '/', pos - 1) : NULL;
    return e ? (size_t)(e - s) + 1 : 0;
}

/* ---- named children ---- */

static inline int key_eq(const tnode_t *c, const uint8_t *key, size_t klen)
{
    return c->klen == klen && (klen == 0 || memcmp(c->key, key, klen) == 0);
}

static tnode_t *kid_find(const trie_t *t, const tnode_t *n, const uint8_t *key, size_t klen)
{
    if (!n->nkids)
        return NULL;
    if (!n->kbits)
        return key_eq(n->kids.one, key, klen) ? n->kids.one : NULL;
    uint32_t h = level_hash(t, key, klen);
    size_t mask = ((size_t)1 << n->kbits) - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        tnode_t *c = n->kids.tab[i];
        if (!c)
            return NULL;
        if (c->khash == h && key_eq(c, key, klen))
            return c;
    }
}

/* ---- open addressing over node pointers ----
 *
 * A node's named children and the exact filters are both tables of 2^bits
 * slots, linear probing from the node's khash, backward-shift deletion (no
 * tombstones).  The lookups stay typed (kid_find, x_find: the publish
 * path, one compare of the node's own fields per probe); adding, moving to
 * a new size and deleting are these, the node kind given by its hash. */

typedef uint32_t (*slot_hash_fn)(const void *node);

static uint32_t tnode_hash(const void *node)
{
    return ((const tnode_t *)node)->khash;
}

static void slot_put(void **tab, size_t mask, void *node, uint32_t h)
{
    size_t i = h & mask;
    while (tab[i])
        i = (i + 1) & mask;
    tab[i] = node;
}

/* A table of 2^bits slots holding old's nodes (2^obits slots; old is
 * freed), or NULL on out of memory (old untouched). */
static void **slots_new(unsigned bits, void **old, unsigned obits, slot_hash_fn hash)
{
    size_t mask = ((size_t)1 << bits) - 1;
    void **tab = calloc(mask + 1, sizeof(*tab));
    if (!tab)
        return NULL;
    if (old) {
        for (size_t i = 0, ocap = (size_t)1 << obits; i < ocap; i++)
            if (old[i])
                slot_put(tab, mask, old[i], hash(old[i]));
        free(old);
    }
    return tab;
}

static void slot_del(void **tab, size_t mask, const void *node, slot_hash_fn hash)
{
    size_t i = hash(node) & mask, j;
    while (tab[i] != node)
        i = (i + 1) & mask;
    tab[i] = NULL;
    for (j = (i + 1) & mask; tab[j]; j = (j + 1) & mask) {
        size_t home = hash(tab[j]) & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            tab[i] = tab[j];
            tab[j] = NULL;
            i = j;
        }
    }
}

/* Move n's named children into a new table of 2^bits slots. */
static int kids_resize(tnode_t *n, unsigned bits)
{
    void **tab = slots_new(bits, n->kbits ? n->kids.tab : NULL, n->kbits, tnode_hash);
    if (!tab)
        return -1;
    if (!n->kbits && n->kids.one)
        slot_put(tab, ((size_t)1 << bits) - 1, n->kids.one, n->kids.one->khash);
    n->kids.tab = tab;
    n->kbits = (uint8_t)bits;
    return 0;
}

static int kid_add(tnode_t *n, tnode_t *c)
{
    if (!n->kbits) {
        if (!n->kids.one) {
            n->kids.one = c;
            n->nkids = 1;
            return 0;
        }
        if (kids_resize(n, KIDS_BITS0) < 0)
            return -1;
    } else if ((size_t)(n->nkids + 1) * 10 > ((size_t)7 << n->kbits)) {
        if (kids_resize(n, n->kbits + 1u) < 0)
            return -1;
    }
    slot_put(n->kids.tab, ((size_t)1 << n->kbits) - 1, c, c->khash);
    n->nkids++;
    return 0;
}

static void kid_remove(tnode_t *n, const tnode_t *c)
{
    if (!n->kbits) {
        n->kids.one = NULL;
        n->nkids = 0;
        return;
    }
    void **tab = n->kids.tab;
    size_t i;
    slot_del(tab, ((size_t)1 << n->kbits) - 1, c, tnode_hash);
    n->nkids--;
    if (n->nkids == 1) {
        for (i = 0; !tab[i]; i++)
            ;
        n->kids.one = tab[i];
        n->kbits = 0;
        free(tab);
    } else if (n->kbits > KIDS_BITS0 && (size_t)n->nkids * 10 < ((size_t)2 << n->kbits)) {
        (void)kids_resize(n, n->kbits - 1u); /* load < 0.2: halve; keep it on failure */
    }
}

/* ---- subscribers ---- */

static inline sub_ref_t *subs_items(subu_t *u, uint32_t n)
{
    return n <= 1 ? &u->one : u->vec->items;
}

static void idx_put(uint32_t *idx, size_t mask, uint64_t sid, uint32_t i)
{
    size_t j = sid_hash(sid) & mask;
    while (idx[j])
        j = (j + 1) & mask;
    idx[j] = i + 1;
}

static int idx_build(subvec_t *v, uint32_t n, unsigned bits)
{
    size_t mask = ((size_t)1 << bits) - 1;
    uint32_t *idx = calloc(mask + 1, sizeof(*idx));
    if (!idx)
        return -1;
    for (uint32_t i = 0; i < n; i++)
        idx_put(idx, mask, v->items[i].sid, i);
    free(v->idx);
    v->idx = idx;
    v->ibits = bits;
    return 0;
}

/* Index of sid among the n subscribers in u, or -1. */
static long subs_find(const subu_t *u, uint32_t n, uint64_t sid)
{
    if (n <= 1)
        return n && u->one.sid == sid ? 0 : -1;
    const subvec_t *v = u->vec;
    if (v->idx) {
        size_t mask = ((size_t)1 << v->ibits) - 1;
        for (size_t j = sid_hash(sid) & mask; v->idx[j]; j = (j + 1) & mask)
            if (v->items[v->idx[j] - 1].sid == sid)
                return (long)v->idx[j] - 1;
        return -1;
    }
    for (uint32_t i = 0; i < n; i++)
        if (v->items[i].sid == sid)
            return (long)i;
    return -1;
}

/* Append sub (its sid is not there yet).  On failure nothing changed. */
static int subs_add(subu_t *u, uint32_t *np, const sub_ref_t *sub)
{
    uint32_t k = *np;
    subvec_t *v;
    if (k == 0) {
        u->one = *sub;
        *np = 1;
        return 0;
    }
    if (k == 1) {
        v = malloc(sizeof(*v) + 4 * sizeof(sub_ref_t));
        if (!v)
            return -1;
        v->cap = 4;
        v->ibits = 0;
        v->idx = NULL;
        v->items[0] = u->one;
        v->items[1] = *sub;
        u->vec = v;
        *np = 2;
        return 0;
    }
    v = u->vec;
    if (k == v->cap) {
        if (v->cap >= UINT32_MAX / 4)
            return -1;
        subvec_t *nv = realloc(v, sizeof(*v) + (size_t)v->cap * 2 * sizeof(sub_ref_t));
        if (!nv)
            return -1;
        nv->cap *= 2;
        u->vec = v = nv;
    }
    if (v->idx || k + 1 > SUBS_INDEX_MIN) {
        unsigned bits = v->ibits ? v->ibits : SUBS_IDX_BITS0;
        while ((size_t)(k + 1) * 10 > ((size_t)7 << bits))
            bits++;
        if (bits != v->ibits && idx_build(v, k, bits) < 0)
            return -1;
        idx_put(v->idx, ((size_t)1 << v->ibits) - 1, sub->sid, k);
    }
    v->items[k] = *sub;
    *np = k + 1;
    return 0;
}

static void idx_remove(subvec_t *v, uint64_t sid)
{
    uint32_t *idx = v->idx;
    size_t mask = ((size_t)1 << v->ibits) - 1, i = sid_hash(sid) & mask, j;
    while (v->items[idx[i] - 1].sid != sid)
        i = (i + 1) & mask;
    idx[i] = 0;
    for (j = (i + 1) & mask; idx[j]; j = (j + 1) & mask) {
        size_t home = sid_hash(v->items[idx[j] - 1].sid) & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            idx[i] = idx[j];
            idx[j] = 0;
            i = j;
        }
    }
}

/* Remove the subscriber at index i (swap with the last). */
static void subs_del(subu_t *u, uint32_t *np, uint32_t i)
{
    uint32_t last = *np - 1;
    if (last == 0) {
        *np = 0;
        return;
    }
    subvec_t *v = u->vec;
    if (v->idx) {
        idx_remove(v, v->items[i].sid);
        if (i != last) {
            size_t mask = ((size_t)1 << v->ibits) - 1, j = sid_hash(v->items[last].sid) & mask;
            while (v->idx[j] != last + 1)
                j = (j + 1) & mask;
            v->idx[j] = i + 1;
        }
    }
    v->items[i] = v->items[last];
    *np = last;
    if (last == 1) {
        u->one = v->items[0];
        free(v->idx);
        free(v);
        return;
    }
    if (v->idx) {
        if (last < SUBS_INDEX_MIN / 2) {
            free(v->idx);
            v->idx = NULL;
            v->ibits = 0;
        } else if (v->ibits > SUBS_IDX_BITS0 && (size_t)last * 10 < ((size_t)1 << v->ibits)) {
            (void)idx_build(v, last, v->ibits - 1); /* load < 0.1; keep on failure */
        }
    }
    if (v->cap > 4 && last < v->cap / 4) {
        subvec_t *nv = realloc(v, sizeof(*v) + (size_t)(v->cap / 2) * sizeof(sub_ref_t));
        if (nv) {
            nv->cap /= 2;
            u->vec = nv;
        }
    }
}

static void subs_release(subu_t *u, uint32_t n)
{
    if (n >= 2) {
        free(u->vec->idx);
        free(u->vec);
    }
}

/* ---- nodes ---- */

static tnode_t *node_new(trie_t *t, tnode_t *parent, const uint8_t *key, size_t klen, uint32_t h)
{
    size_t sz = offsetof(tnode_t, key) + klen;
    tnode_t *n = calloc(1, sz < sizeof(tnode_t) ? sizeof(tnode_t) : sz);
    if (!n)
        return NULL;
    n->parent = parent;
    n->khash = h;
    n->klen = (uint16_t)klen;
    if (klen)
        memcpy(n->key, key, klen);
    t->nodes++;
    return n;
}

static void node_release(tnode_t *n)
{
    subs_release(&n->subs, n->nsubs);
    if (n->kbits)
        free(n->kids.tab);
    free(n);
}

static inline int node_empty(const tnode_t *n)
{
    return !n->nsubs && !n->nkids && !n->plus && !n->hash;
}

/* Free n and its ancestors while they are empty (never the root). */
static void prune(trie_t *t, tnode_t *n)
{
    while (n != t->root && node_empty(n)) {
        tnode_t *p = n->parent;
        if (p->plus == n)
            p->plus = NULL;
        else if (p->hash == n)
            p->hash = NULL;
        else
            kid_remove(p, n);
        node_release(n);
        t->nodes--;
        n = p;
    }
}

/* ---- exact filters: one table of xnode_t keyed by the whole filter ---- */

static xnode_t *x_find(const trie_t *t, const uint8_t *key, size_t klen)
{
    if (!t->nx)
        return NULL;
    uint32_t h = level_hash(t, key, klen);
    size_t mask = ((size_t)1 << t->xbits) - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        xnode_t *x = t->xtab[i];
        if (!x)
            return NULL;
        if (x->khash == h && x->klen == klen && (klen == 0 || memcmp(x->key, key, klen) == 0))
            return x;
    }
}

static uint32_t xnode_hash(const void *node)
{
    return ((const xnode_t *)node)->khash;
}

/* Move the exact filters into a table of 2^bits slots. */
static int x_resize(trie_t *t, unsigned bits)
{
    void **tab = slots_new(bits, t->xtab, t->xbits, xnode_hash);
    if (!tab)
        return -1;
    t->xtab = tab;
    t->xbits = bits;
    return 0;
}

/* The slab class of an exact filter's node with a key of len bytes, or -1:
 * malloc'd. */
static int x_class(size_t len)
{
    size_t sz = (offsetof(xnode_t, key) + len + 7u) & ~(size_t)7u;
    size_t c = (sz < XNODE_MIN ? 0 : sz - XNODE_MIN) / 8u;
    return c < XSLAB_CLASSES ? (int)c : -1;
}

static xnode_t *x_alloc(trie_t *t, size_t len)
{
    int c = x_class(len);
    if (c >= 0)
        return slab_try_alloc(&t->xslab[c]);
    size_t sz = offsetof(xnode_t, key) + len;
    return calloc(1, sz);
}

static void x_free(trie_t *t, xnode_t *x)
{
    int c = x_class(x->klen);
    if (c >= 0)
        slab_free(&t->xslab[c], x);
    else
        free(x);
}

/* The node of an exact filter, made when absent (NULL: out of memory, or
 * a filter longer than a key holds). */
static xnode_t *x_node(trie_t *t, const uint8_t *filter, size_t len, int make)
{
    xnode_t *x = x_find(t, filter, len);
    if (x || !make)
        return x;
    if (len > UINT16_MAX)
        return NULL;
    if (!t->xtab || (size_t)(t->nx + 1) * 10 > ((size_t)7 << t->xbits))
        if (x_resize(t, t->xtab ? t->xbits + 1u : KIDS_BITS0) < 0)
            return NULL;
    if (!(x = x_alloc(t, len)))
        return NULL;
    x->khash = level_hash(t, filter, len);
    x->klen = (uint16_t)len;
    if (len)
        memcpy(x->key, filter, len);
    slot_put(t->xtab, ((size_t)1 << t->xbits) - 1, x, x->khash);
    t->nx++;
    t->nodes++;
    return x;
}

/* Free x when it has no subscriber left. */
static void x_prune(trie_t *t, xnode_t *x)
{
    if (x->nsubs)
        return;
    slot_del(t->xtab, ((size_t)1 << t->xbits) - 1, x, xnode_hash);
    x_free(t, x);
    t->nx--;
    t->nodes--;
    if (t->nx == 0) {
        free(t->xtab);
        t->xtab = NULL;
        t->xbits = 0;
    } else if (t->xbits > KIDS_BITS0 && (size_t)t->nx * 10 < ((size_t)2 << t->xbits)) {
        (void)x_resize(t, t->xbits - 1u); /* load < 0.2: halve; keep it on failure */
    }
}

/* ---- API ---- */

trie_t *trie_new(void)
{
    trie_t *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    an_random_key(t->key);
    if (!(t->root = node_new(t, NULL, NULL, 0, 0))) {
        free(t);
        return NULL;
    }
    for (size_t i = 0; i < XSLAB_CLASSES; i++)
        slab_init(&t->xslab[i], XNODE_MIN + i * 8u);
    return t;
}

/* Free n and everything under it (n has no parent, or its parent is freed
 * apart): post-order without a stack: detach one child at a time, climb
 * back up through parent; a table node's khash serves as its scan cursor. */
static void free_tree(tnode_t *n)
{
    tnode_t *top = n->parent;
    while (n != top) {
        tnode_t *c = NULL;
        if (n->plus) {
            c = n->plus;
            n->plus = NULL;
        } else if (n->hash) {
            c = n->hash;
            n->hash = NULL;
        } else if (n->nkids) {
            if (!n->kbits) {
                c = n->kids.one;
                n->kids.one = NULL;
            } else {
                size_t mask = ((size_t)1 << n->kbits) - 1, i = n->khash & mask;
                while (!n->kids.tab[i])
                    i = (i + 1) & mask;
                c = n->kids.tab[i];
                n->kids.tab[i] = NULL;
                n->khash = (uint32_t)i;
            }
            n->nkids--;
        }
        if (c) {
            n = c;
            continue;
        }
        c = n->parent;
        node_release(n);
        n = c;
    }
}

void trie_free(trie_t *t)
{
    if (!t)
        return;
    free_tree(t->root);
    for (size_t i = 0; t->xtab && i < ((size_t)1 << t->xbits); i++)
        if (t->xtab[i]) {
            xnode_t *x = t->xtab[i];
            subs_release(&x->subs, x->nsubs);
            x_free(t, x);
        }
    free(t->xtab);
    for (size_t i = 0; i < XSLAB_CLASSES; i++)
        slab_destroy(&t->xslab[i]);
    free(t);
}

/* A filter without wildcards: one node under the exact hub. */
static inline int is_exact(const uint8_t *filter, size_t len)
{
    return !memchr(filter, '+', len) && !memchr(filter, '#', len);
}

/* Does n have a subscriber of kind LOCAL other than item `skip`?  Stops
 * at the first one: bounded by the non-local ones before it. */
/* A local route: an MQTT session's subscription (a shared group's entry is
 * not one: the group announces "$share/g/f" itself, shared.c). */
static inline int is_local(const sub_ref_t *s)
{
    return s->kind == ROUTE_OWNER_LOCAL && !(s->opts & SUB_SHARED);
}

static int has_local(subu_t *u, uint32_t n, uint32_t skip)
{
    sub_ref_t *v = subs_items(u, n);
    for (uint32_t i = 0; i < n; i++)
        if (i != skip && is_local(&v[i]))
            return 1;
    return 0;
}

/* trie_set_local_hook's first pass: every filter with a local subscriber,
 * depth first; buf holds the filter of n's parent levels. */
static void walk_local(trie_t *t, tnode_t *n, uint8_t **buf, size_t *cap, size_t len)
{
    if (n != t->root) {
        const uint8_t *key = n->key;
        size_t kl = n->klen;
        if (n->parent && n == n->parent->plus)
            key = (const uint8_t *)"+", kl = 1;
        else if (n->parent && n == n->parent->hash)
            key = (const uint8_t *)"#", kl = 1;
        if (len + kl + 2 > *cap) {
            *cap = AN_MAX(2 * *cap, len + kl + 2);
            *buf = an_realloc(*buf, *cap);
        }
        if (n->parent != t->root)
            (*buf)[len++] = '/';
        memcpy(*buf + len, key, kl);
        len += kl;
        if (has_local(&n->subs, n->nsubs, UINT32_MAX))
            t->local_fn(t->local_ud, *buf, len, 1);
    }
    if (n->plus)
        walk_local(t, n->plus, buf, cap, len);
    if (n->hash)
        walk_local(t, n->hash, buf, cap, len);
    if (n->kbits == 0) {
        if (n->nkids)
            walk_local(t, n->kids.one, buf, cap, len);
    } else {
        for (size_t i = 0; i < ((size_t)1 << n->kbits); i++)
            if (n->kids.tab[i])
                walk_local(t, n->kids.tab[i], buf, cap, len);
    }
}

void trie_local_notify(trie_t *t, const uint8_t *filter, size_t len, int up)
{
    if (t->local_fn)
        t->local_fn(t->local_ud, filter, len, up);
}

void trie_set_local_hook(trie_t *t, trie_local_fn fn, void *ud)
{
    t->local_fn = fn;
    t->local_ud = ud;
    if (fn == NULL)
        return;
    size_t cap = 256;
    uint8_t *buf = an_malloc(cap);
    walk_local(t, t->root, &buf, &cap, 0);
    free(buf);
    trie_walk_exact_local(t, fn, ud); /* keyed by the whole filter */
}

void trie_walk_exact_local(const trie_t *t, trie_local_fn fn, void *ud)
{
    for (size_t i = 0; t->xtab && i < ((size_t)1 << t->xbits); i++) {
        xnode_t *x = t->xtab[i];
        if (x && has_local(&x->subs, x->nsubs, UINT32_MAX))
            fn(ud, x->key, x->klen, 1);
    }
}

/* Add sub to the subscribers in u (of *np): 1 added, 0 replaced, -1 out
 * of memory (nothing changed). */
static int subs_put(trie_t *t, subu_t *u, uint32_t *np, const uint8_t *filter, size_t len,
                    const sub_ref_t *sub)
{
    long i = subs_find(u, *np, sub->sid);
    if (i >= 0) {
        subs_items(u, *np)[i] = *sub;
        return 0;
    }
    int first = t->local_fn && is_local(sub) && !has_local(u, *np, UINT32_MAX);
    if (subs_add(u, np, sub) < 0)
        return -1;
    t->count++;
    if (first)
        t->local_fn(t->local_ud, filter, len, 1);
    return 1;
}

/* Remove sid from the subscribers in u (of *np): 1 removed, 0 not there. */
static int subs_take(trie_t *t, subu_t *u, uint32_t *np, const uint8_t *filter, size_t len,
                     uint64_t sid)
{
    long i = subs_find(u, *np, sid);
    if (i < 0)
        return 0;
    int local = t->local_fn && is_local(&subs_items(u, *np)[i]);
    if (local && has_local(u, *np, (uint32_t)i))
        local = 0; /* not the last one */
    subs_del(u, np, (uint32_t)i);
    t->count--;
    if (local)
        t->local_fn(t->local_ud, filter, len, 0);
    return 1;
}

int trie_insert(trie_t *t, const uint8_t *filter, size_t len, const sub_ref_t *sub)
{
    tnode_t *n = t->root, *c;
    size_t pos = 0;
    if (is_exact(filter, len)) {
        xnode_t *x = x_node(t, filter, len, 1);
        if (!x)
            return -1;
        int rc = subs_put(t, &x->subs, &x->nsubs, filter, len, sub);
        if (rc < 0)
            x_prune(t, x); /* made for this filter */
        return rc;
    }
    for (;;) {
        size_t end = level_end(filter, pos, len), ll = end - pos;
        const uint8_t *lv = filter + pos;
        if (ll == 1 && (lv[0] == '+' || lv[0] == '#')) {
            tnode_t **slot = lv[0] == '+' ? &n->plus : &n->hash;
            if (!*slot && !(*slot = node_new(t, n, NULL, 0, 0)))
                goto fail;
            c = *slot;
        } else if (!(c = kid_find(t, n, lv, ll))) {
            if (ll > UINT16_MAX)
                goto fail; /* no valid filter has such a level */
            if (!(c = node_new(t, n, lv, ll, level_hash(t, lv, ll))))
                goto fail;
            if (kid_add(n, c) < 0) {
                node_release(c);
                t->nodes--;
                goto fail;
            }
        }
        n = c;
        if (end == len)
            break;
        pos = end + 1;
    }
    int rc = subs_put(t, &n->subs, &n->nsubs, filter, len, sub);
    if (rc >= 0)
        return rc;
fail:
    prune(t, n); /* the nodes made for this filter, if any */
    return -1;
}

const uint8_t *trie_exact_key(const trie_t *t, const uint8_t *filter, size_t len)
{
    if (!is_exact(filter, len))
        return NULL;
    const xnode_t *x = x_find(t, filter, len);
    return x && x->nsubs ? x->key : NULL;
}

int trie_remove(trie_t *t, const uint8_t *filter, size_t len, uint64_t sid)
{
    tnode_t *n = t->root;
    size_t pos = 0;
    if (is_exact(filter, len)) {
        xnode_t *x = x_node(t, filter, len, 0);
        if (!x || !subs_take(t, &x->subs, &x->nsubs, filter, len, sid))
            return 0;
        x_prune(t, x);
        return 1;
    }
    for (;;) {
        size_t end = level_end(filter, pos, len), ll = end - pos;
        const uint8_t *lv = filter + pos;
        if (ll == 1 && lv[0] == '+')
            n = n->plus;
        else if (ll == 1 && lv[0] == '#')
            n = n->hash;
        else
            n = kid_find(t, n, lv, ll);
        if (!n)
            return 0;
        if (end == len)
            break;
        pos = end + 1;
    }
    if (!subs_take(t, &n->subs, &n->nsubs, filter, len, sid))
        return 0;
    prune(t, n);
    return 1;
}

static inline void report(subu_t *u, uint32_t n, trie_match_cb cb, void *ud)
{
    sub_ref_t *s = subs_items(u, n);
    for (uint32_t i = 0; i < n; i++)
        cb(ud, &s[i]);
}

void trie_match(const trie_t *t, const uint8_t *topic, size_t len, trie_match_cb cb, void *ud)
{
    /* Depth-first: at each node the named child, then '+'; a '#' child
     * matches whatever is left.  pos is where the level n consumes next
     * starts; pos == len + 1 means the topic is used up.  Climbing back uses
     * the parent pointers and finds the parent's pos again by a backward
     * scan, so deep topics need no memory. */
    tnode_t *root = t->root, *n = root, *c;
    int dollar = len > 0 && topic[0] == '$'; /* [MQTT-4.7.2-1] */
    size_t pos = 0, next = 0;
    xnode_t *x;
    if (t->nx && (x = x_find(t, topic, len)))
        report(&x->subs, x->nsubs, cb, ud); /* the exact filters: the whole topic, one lookup */

enter:
    if (n->hash && !(dollar && n == root))
        report(&n->hash->subs, n->hash->nsubs, cb, ud);
    if (pos > len) {
        report(&n->subs, n->nsubs, cb, ud);
        goto up;
    }
    {
        size_t end = level_end(topic, pos, len);
        next = end + 1;
        if ((c = kid_find(t, n, topic + pos, end - pos))) {
            n = c;
            pos = next;
            goto enter;
        }
    }
plus:
    if (n->plus && !(dollar && n == root)) {
        n = n->plus;
        pos = next;
        goto enter;
    }
up:
    while (n != root) {
        tnode_t *p = n->parent;
        size_t ppos = level_start_before(topic, pos);
        if (n != p->plus) { /* came from the named child: '+' is next */
            next = pos;
            n = p;
            pos = ppos;
            goto plus;
        }
        n = p;
        pos = ppos;
    }
}

size_t trie_count(const trie_t *t)
{
    return t->count;
}

size_t trie_nodes(const trie_t *t)
{
    return t->nodes;
}

int topic_matches(const uint8_t *filter, size_t flen, const uint8_t *topic, size_t tlen)
{
    size_t fp = 0, tp = 0;
    if (tlen > 0 && topic[0] == '$' && flen > 0 && (filter[0] == '+' || filter[0] == '#') &&
        (flen == 1 || filter[1] == '/'))
        return 0; /* [MQTT-4.7.2-1] */
    for (;;) {
        if (fp > flen)
            return tp > tlen;
        size_t fe = level_end(filter, fp, flen), fl = fe - fp;
        if (fl == 1 && filter[fp] == '#')
            return fe == flen; /* the rest, zero levels included; '#' must be last */
        if (tp > tlen)
            return 0;
        size_t te = level_end(topic, tp, tlen), tl = te - tp;
        if (!(fl == 1 && filter[fp] == '+') &&
            (fl != tl || (fl && memcmp(filter + fp, topic + tp, fl) != 0)))
            return 0;
        fp = fe + 1;
        tp = te + 1;
    }
}
