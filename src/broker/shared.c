/* shared.c -- shared subscription groups (see shared.h).
 *
 * Groups sit in a chained hash table on the server (looked up when members
 * join or leave, and on failover), grown by doubling at load 1; each holds
 * its members as an array of sub_ref_t.  Round robin keeps an atomic cursor and sticky an
 * atomic member id, because pickers run on any worker under the read lock.
 * hash_clientid and hash_topic pick by SipHash under the set's key (a copy
 * in each group), so no publisher can choose ids or topics that all land
 * on one member.
 */
#include "shared.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "util.h"

struct shared_group_s {
    shared_group_t *next; /* in its bucket */
    uint64_t hash;
    sub_ref_t *members;
    uint32_t n, cap;
    uint32_t nlocal; /* members that are MQTT sessions (not nodes) */
    _Atomic uint32_t cursor;
    _Atomic uint64_t sticky;
    uint64_t key[2]; /* the set's SipHash key: hash_clientid, hash_topic */
    uint16_t name_len, filter_len;
    uint8_t data[]; /* name, then filter */
};

struct shared_set_s {
    shared_group_t **buckets;
    uint32_t nbuckets, count;
    uint64_t key[2]; /* SipHash: group names and filters come from clients */
};

static uint64_t group_hash(const shared_set_t *set, const uint8_t *name, size_t nl,
                           const uint8_t *filter, size_t fl)
{
    return an_hash64(an_siphash(set->key, name, nl) + nl) ^ an_siphash(set->key, filter, fl);
}

static shared_group_t *find(const shared_set_t *set, const uint8_t *name, size_t nl,
                            const uint8_t *filter, size_t fl)
{
    if (set == NULL || set->count == 0)
        return NULL;
    uint64_t h = group_hash(set, name, nl, filter, fl);
    for (shared_group_t *g = set->buckets[h & (set->nbuckets - 1)]; g; g = g->next)
        if (g->hash == h && g->name_len == nl && g->filter_len == fl &&
            memcmp(g->data, name, nl) == 0 && memcmp(g->data + nl, filter, fl) == 0)
            return g;
    return NULL;
}

static void set_insert(shared_set_t **setp, shared_group_t *g, const uint8_t *name, size_t nl,
                       const uint8_t *filter, size_t fl)
{
    shared_set_t *set = *setp;
    if (set == NULL) {
        set = *setp = an_calloc(1, sizeof(*set));
        an_random_key(set->key);
    }
    if (set->count + 1 > set->nbuckets) {
        uint32_t nb = set->nbuckets ? set->nbuckets * 2 : 16;
        shared_group_t **b = an_calloc(nb, sizeof(*b));
        for (uint32_t i = 0; i < set->nbuckets; i++)
            while (set->buckets[i]) {
                shared_group_t *e = set->buckets[i];
                set->buckets[i] = e->next;
                e->next = b[e->hash & (nb - 1)];
                b[e->hash & (nb - 1)] = e;
            }
        free(set->buckets);
        set->buckets = b;
        set->nbuckets = nb;
    }
    g->hash = group_hash(set, name, nl, filter, fl);
    shared_group_t **head = &set->buckets[g->hash & (set->nbuckets - 1)];
    g->next = *head;
    *head = g;
    set->count++;
}

static void set_remove(shared_set_t *set, shared_group_t *g)
{
    shared_group_t **pp = &set->buckets[g->hash & (set->nbuckets - 1)];
    while (*pp != g)
        pp = &(*pp)->next;
    *pp = g->next;
    set->count--;
}

/* The group's local-route transition (trie_local_notify): "$share/g/f". */
static void announce(trie_t *t, const shared_group_t *g, int up)
{
    size_t nl = g->name_len, fl = g->filter_len, len = 8 + nl + fl;
    uint8_t buf[512], *p = len <= sizeof(buf) ? buf : an_malloc(len);
    memcpy(p, "$share/", 7);
    memcpy(p + 7, g->data, nl);
    p[7 + nl] = '/';
    memcpy(p + 8 + nl, g->data + nl, fl);
    trie_local_notify(t, p, len, up);
    if (p != buf)
        free(p);
}

static sub_ref_t group_ref(shared_group_t *g)
{
    sub_ref_t r = {
        .sid = SHARED_TAG | (uint64_t)(uintptr_t)g, .owner = UINT16_MAX, .opts = SUB_SHARED | 2};
    return r;
}

void shared_join(trie_t *t, shared_set_t **groups, const uint8_t *name, size_t nl,
                 const uint8_t *filter, size_t fl, const sub_ref_t *sub)
{
    shared_group_t *g = find(*groups, name, nl, filter, fl);
    if (g == NULL) {
        g = an_calloc(1, sizeof(*g) + nl + fl);
        g->name_len = (uint16_t)nl;
        g->filter_len = (uint16_t)fl;
        memcpy(g->data, name, nl);
        memcpy(g->data + nl, filter, fl);
        sub_ref_t r = group_ref(g);
        if (trie_insert(t, filter, fl, &r) < 0)
            abort(); /* out of memory: an_* policy */
        set_insert(groups, g, name, nl, filter, fl);
        memcpy(g->key, (*groups)->key, sizeof(g->key));
    }
    for (uint32_t i = 0; i < g->n; i++)
        if (g->members[i].sid == sub->sid) {
            g->members[i] = *sub;
            return;
        }
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 4;
        g->members = an_realloc(g->members, g->cap * sizeof(*g->members));
    }
    g->members[g->n++] = *sub;
    if (sub->kind == ROUTE_OWNER_LOCAL && g->nlocal++ == 0)
        announce(t, g, 1);
}

int shared_leave(trie_t *t, shared_set_t **groups, const uint8_t *name, size_t nl,
                 const uint8_t *filter, size_t fl, uint64_t sid)
{
    shared_group_t *g = find(*groups, name, nl, filter, fl);
    if (g == NULL)
        return 0;
    int found = 0;
    for (uint32_t i = 0; i < g->n; i++)
        if (g->members[i].sid == sid) {
            if (g->members[i].kind == ROUTE_OWNER_LOCAL && --g->nlocal == 0)
                announce(t, g, 0);
            g->members[i] = g->members[--g->n];
            found = 1;
            break;
        }
    if (atomic_load(&g->sticky) == sid)
        atomic_store(&g->sticky, 0);
    if (g->n == 0) {
        trie_remove(t, filter, fl, group_ref(g).sid);
        set_remove(*groups, g);
        free(g->members);
        free(g);
    }
    return found;
}

static uint64_t next_rand(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static int pick(shared_group_t *g, int strategy, const uint8_t *publisher, size_t pl,
                const uint8_t *topic, size_t tl, uint64_t exclude, uint64_t *rng, sub_ref_t *out)
{
    uint32_t n = g->n;
    if (n == 0 || (n == 1 && g->members[0].sid == exclude))
        return -1;
    uint32_t i;
    switch (strategy) {
    case CONF_SHARED_RANDOM:
        i = (uint32_t)(next_rand(rng) % n);
        break;
    case CONF_SHARED_HASH_CLIENTID:
        i = (uint32_t)(an_siphash(g->key, publisher, pl) % n);
        break;
    case CONF_SHARED_HASH_TOPIC:
        i = (uint32_t)(an_siphash(g->key, topic, tl) % n);
        break;
    case CONF_SHARED_STICKY: {
        uint64_t sid = atomic_load(&g->sticky);
        for (i = 0; i < n; i++)
            if (g->members[i].sid == sid && sid != exclude)
                goto found;
        i = (uint32_t)(next_rand(rng) % n);
        if (g->members[i].sid == exclude)
            i = (i + 1) % n;
        atomic_store(&g->sticky, g->members[i].sid);
        goto found;
    }
    default:
        i = atomic_fetch_add(&g->cursor, 1) % n;
        break;
    }
    if (g->members[i].sid == exclude)
        i = (i + 1) % n;
found:
    *out = g->members[i];
    return 0;
}

int shared_pick(const sub_ref_t *ref, int strategy, const uint8_t *publisher, size_t pl,
                const uint8_t *topic, size_t tl, uint64_t exclude, uint64_t *rng, sub_ref_t *out)
{
    shared_group_t *g = (shared_group_t *)(uintptr_t)(ref->sid & ~SHARED_TAG);
    return pick(g, strategy, publisher, pl, topic, tl, exclude, rng, out);
}

int shared_pick_named(shared_set_t *groups, const uint8_t *name, size_t nl, const uint8_t *filter,
                      size_t fl, int strategy, uint64_t exclude, uint64_t *rng, sub_ref_t *out)
{
    shared_group_t *g = find(groups, name, nl, filter, fl);
    if (g == NULL)
        return -1;
    /* failover: hashing strategies would pick the leaver again; rotate */
    if (strategy == CONF_SHARED_HASH_CLIENTID || strategy == CONF_SHARED_HASH_TOPIC)
        strategy = CONF_SHARED_ROUND_ROBIN;
    return pick(g, strategy, NULL, 0, NULL, 0, exclude, rng, out);
}

int shared_pick_local(shared_set_t *groups, const uint8_t *name, size_t nl, const uint8_t *filter,
                      size_t fl, uint64_t *rng, sub_ref_t *out)
{
    shared_group_t *g = find(groups, name, nl, filter, fl);
    if (g == NULL || g->nlocal == 0)
        return -1;
    uint32_t k = (uint32_t)(next_rand(rng) % g->nlocal);
    for (uint32_t i = 0; i < g->n; i++)
        if (g->members[i].kind == ROUTE_OWNER_LOCAL && k-- == 0) {
            *out = g->members[i];
            return 0;
        }
    return -1;
}

void shared_announce_all(trie_t *t, shared_set_t *groups)
{
    for (uint32_t i = 0; groups && i < groups->nbuckets; i++)
        for (shared_group_t *g = groups->buckets[i]; g; g = g->next)
            if (g->nlocal > 0)
                announce(t, g, 1);
}

void shared_free_all(shared_set_t **groups)
{
    shared_set_t *set = *groups;
    if (set == NULL)
        return;
    for (uint32_t i = 0; i < set->nbuckets; i++)
        while (set->buckets[i]) {
            shared_group_t *g = set->buckets[i];
            set->buckets[i] = g->next;
            free(g->members);
            free(g);
        }
    free(set->buckets);
    free(set);
    *groups = NULL;
}
