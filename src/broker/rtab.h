/* rtab.h -- the compact table of other nodes' exact routes.
 *
 * A cluster node learns every other node's subscription filters.  Exact
 * ones (no '+' or '#', not "$share/...": "dev/42/in") are by far the most
 * numerous, and a trie node with its subscriber vector costs some 265 B
 * each; here one costs a 12-byte slot: the 64-bit hash of the filter
 * (SipHash under the server's random route key, router_route_hash), the
 * node's index and a count (how many of that node's filters have this
 * hash: normally 1, 2 only after a 64-bit collision).  No filter bytes are
 * kept: a publish looks its topic's hash up and gets the nodes to forward
 * to.  A collision between two nodes' filters, or between a node's filter
 * and another topic, sends a message to a node that has no subscriber for
 * it (the node matches its own subscribers and drops it); it never loses
 * one (docs/cluster.md "Routes").
 *
 * Open addressing with linear probing, keyed by (hash, node): the slots of
 * one hash start at the same place, so rtab_lookup() scans one run and
 * finds every node of a hash.  Deletion shifts the run back (no
 * tombstones).  The capacity is any number of slots (the home slot is the
 * high half of the hash scaled to it, rtab_home): the table grows by half
 * past 3/4 full, so it is always between 1/2 and 3/4 full while it grows
 * (12 / 0.5 = 24 B a pair at worst), and halves below 1/8 (never under 64
 * slots).  No allocation per entry.  A peer with more than
 * cluster.route_bloom_above exact routes has them in a counting Bloom
 * filter (rbloom.h, at 8 B a route or less) or its own bits (rbits.h)
 * instead: rtab_drop_node takes them out.
 *
 * Dropping a node is lazy (rtab_drop_node without a callback): the node is
 * RETIRED at once (a lookup skips its slots, rtab_count says 0, rtab_size
 * leaves them out) and its slots stay until a SWEEP rebuilds the table
 * without them: when the retired slots reach as many as the live ones, at
 * the next resize, or before any write for a retired node.  Why: a drop
 * that empties the slots at once scans the whole table, and while a big
 * cluster's devices connect each of ~52 peers passes route_bloom_above
 * within seconds, each with ~1,000 pairs in a table of ~52,000: 52 scans
 * of it a node under the write lock (~10 % of a link thread's CPU in
 * session 33's perf) became a handful of rebuilds (21 against 2 ms for
 * those 52 drops, bench/rtab_drops.c).  The retired slots take no more
 * room than the table had before the drop (a sweep comes before any
 * growth), so lookups walk runs no longer than then.  The table counts
 * each node's pairs (a small array by node index) so
 * that retiring one is exact without a scan.
 *
 * Not thread-safe: the router keeps it under srv->trie_lock (the link
 * thread writes under the write lock, the workers read under the read
 * lock), like the trie's node subscribers.
 */
#ifndef ANTENNA_RTAB_H
#define ANTENNA_RTAB_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t hlo, hhi; /* the hash, as two halves: 12-byte slots */
    uint16_t node;
    uint16_t count; /* 0: an empty slot */
} rtab_slot_t;

typedef struct {
    uint32_t pairs;  /* the node's occupied slots (retired or not) */
    uint8_t retired; /* dropped: its slots wait for the next sweep */
} rtab_node_t;

typedef struct rtab_s {
    rtab_slot_t *slots;
    size_t cap;         /* slots (any number >= RTAB_MIN) */
    size_t n;           /* live (hash, node) pairs: retired nodes' left out */
    size_t nretired;    /* slots of retired nodes, until the next sweep */
    rtab_node_t *nodes; /* [nnodes], by node index */
    uint32_t nnodes;
} rtab_t;

#define RTAB_MIN 64

/* The home slot of hash h among cap (< 2^32): its high half, scaled. */
static inline size_t rtab_home(uint64_t h, size_t cap)
{
    return (size_t)(((h >> 32) * (uint64_t)cap) >> 32);
}
static inline size_t rtab_next(size_t i, size_t cap)
{
    return i + 1 == cap ? 0 : i + 1;
}
/* How far slot j lies after slot k, cyclically. */
static inline size_t rtab_dist(size_t k, size_t j, size_t cap)
{
    return j >= k ? j - k : j + cap - k;
}
/* Time to grow before adding to n occupied slots of cap? */
static inline int rtab_full(size_t n, size_t cap)
{
    return (n + 1) * 4 > cap * 3;
}
/* Is node retired (its slots not yet swept)? */
static inline int rtab_retired(const rtab_t *t, uint16_t node)
{
    return t->nretired != 0 && node < t->nnodes && t->nodes[node].retired;
}

rtab_t *rtab_new(void);
void rtab_free(rtab_t *t);
/* One more filter of node with hash h; returns the new count (1: the pair
 * is new).  The count saturates at 65535. */
uint32_t rtab_add(rtab_t *t, uint64_t h, uint16_t node);
/* One filter fewer (all: every one); returns how many were removed (0:
 * the pair was absent).  At 0 the pair is gone. */
uint32_t rtab_del(rtab_t *t, uint64_t h, uint16_t node, int all);
/* Set the count of (h, node) (0 removes it); returns the previous one. */
uint32_t rtab_set(rtab_t *t, uint64_t h, uint16_t node, uint32_t count);
uint32_t rtab_count(const rtab_t *t, uint64_t h, uint16_t node);
/* The next node with a filter of hash h, from slot *i on (start at
 * rtab_home(h, t->cap)); -1 at the end of the run.  Inline: the publish
 * path walks the run without a buffer or a call. */
static inline int rtab_next_node(const rtab_t *t, uint64_t h, size_t *i)
{
    uint32_t lo = (uint32_t)h, hi = (uint32_t)(h >> 32);
    while (t->slots[*i].count != 0) { /* never full: the run ends */
        const rtab_slot_t *s = &t->slots[*i];
        *i = rtab_next(*i, t->cap);
        if (s->hlo == lo && s->hhi == hi && !rtab_retired(t, s->node))
            return s->node;
    }
    return -1;
}
/* The nodes with a filter of hash h: up to cap of them into out; returns
 * how many there are. */
size_t rtab_lookup(const rtab_t *t, uint64_t h, uint16_t *out, size_t cap);
/* Remove every pair of node; returns how many pairs went.  With fn, at
 * once (one pass over the table, a sweep with it), calling fn with each
 * hash and count first; without, the node is retired (see above): gone
 * for every lookup now, its slots swept later. */
size_t rtab_drop_node(rtab_t *t, uint16_t node, void (*fn)(void *ud, uint64_t h, uint32_t count),
                      void *ud);
/* Live (hash, node) pairs; 0 for NULL (no table yet). */
static inline size_t rtab_size(const rtab_t *t)
{
    return t ? t->n : 0;
}
/* Bytes held (the slots and the per-node counts). */
static inline size_t rtab_bytes(const rtab_t *t)
{
    return t->cap * sizeof(rtab_slot_t) + t->nnodes * sizeof(rtab_node_t);
}

#endif
