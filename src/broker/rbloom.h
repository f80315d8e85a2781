/* rbloom.h -- a counting Bloom filter of one other node's exact routes.
 *
 * A node of a large cluster learns ~19,000 exact filters ("dev/42/in")
 * from each of ~52 peers.  Kept exactly (rtab.h) that is 16-24 B a route;
 * here a peer with many of them gets one counting Bloom filter of their
 * 64-bit hashes (router_route_exact: SipHash under the server's route
 * key) at 8 B a route or less: the publish path asks each such filter
 * whether the topic's hash may be in it, and a "maybe" forwards the
 * message to that node, which matches its own subscribers and drops what
 * has none (a spurious forward, counted there; never a lost message).
 *
 * Layout: blocked.  The counters (4 bits, two a byte) are in 64-byte
 * blocks of 128; a key's block is the high half of its hash scaled to the
 * block count, its RBLOOM_K counters in that block come from 7-bit fields
 * of a multiplicative remix of the hash (independent fields rather than
 * double hashing: double hashing from 14 bits gives only 8,192 patterns
 * per block, which alone would add ~0.1 % false positives).  A test is one
 * cache line.  Sized at RBLOOM_CPR counters (8 B) per route when built;
 * the owner (cl_route.c) rebuilds it from a full sync once the routes
 * double (4 B a route, ~2.9 % false positives: docs/cluster.md "Routes").
 *
 * Counting: an add increments the key's counters, a delete decrements
 * them; a counter that reaches 15 sticks there (saturated: it never goes
 * down again, so a deleted route may still look present -- a spurious
 * forward, never a loss).  A key is deleted only after a test says it
 * may be present (rbloom_del), so a delete of an absent key whose counters
 * happen to be zero changes nothing.  The caller must never delete a key
 * it did not add while the test passes by chance (the cluster's route
 * deltas never do: ROUTE_DEL follows the ROUTE_ADD of the same filter).
 *
 * Not thread-safe: the router keeps the filters under srv->trie_lock (the
 * link thread writes under the write lock, the workers test under the
 * read lock), like rtab.
 */
#ifndef ANTENNA_RBLOOM_H
#define ANTENNA_RBLOOM_H

#include <stddef.h>
#include <stdint.h>

#define RBLOOM_K 6           /* counters per key */
#define RBLOOM_CPR 16        /* counters per route when built (8 B) */
#define RBLOOM_BLOCK 64      /* bytes a block: 128 counters, one cache line */
#define RBLOOM_MIN_ROUTES 64 /* the smallest filter is sized for this many */

typedef struct rbloom_s {
    uint8_t *c;         /* nblocks * RBLOOM_BLOCK bytes, 64-byte aligned */
    uint32_t nblocks;   /* >= 1 */
    uint32_t saturated; /* counters stuck at 15 */
    uint64_t n;         /* keys added minus keys deleted */
    uint64_t sized;     /* the routes it was sized for */
} rbloom_t;

/* A filter sized for `routes` keys (at least RBLOOM_MIN_ROUTES). */
rbloom_t *rbloom_new(uint64_t routes);
void rbloom_free(rbloom_t *b);
void rbloom_add(rbloom_t *b, uint64_t h);
/* One key h fewer: 1 when its counters were all non-zero (decremented,
 * saturated ones kept), 0 when h was certainly absent (nothing changed). */
int rbloom_del(rbloom_t *b, uint64_t h);
/* Bytes held by the counters. */
static inline size_t rbloom_bytes(const rbloom_t *b)
{
    return (size_t)b->nblocks * RBLOOM_BLOCK;
}

/* The block of h and the remix its positions come from. */
static inline const uint8_t *rbloom_block(const rbloom_t *b, uint64_t h)
{
    return b->c + (size_t)(((h >> 32) * b->nblocks) >> 32) * RBLOOM_BLOCK;
}
static inline uint64_t rbloom_mix(uint64_t h)
{
    return (h ^ (h >> 29)) * 0x9E3779B97F4A7C15ull; /* odd: a bijection */
}
/* Counter i of key h lives at (7-bit field i of the remix, from the top). */
static inline unsigned rbloom_pos(uint64_t z, int i)
{
    return (unsigned)(z >> (57 - 7 * i)) & 127u;
}

/* May h be in the filter?  0: certainly not.  Inline: the publish path
 * tests every such peer's filter without a call. */
static inline int rbloom_test(const rbloom_t *b, uint64_t h)
{
    const uint8_t *blk = rbloom_block(b, h);
    uint64_t z = rbloom_mix(h);
    for (int i = 0; i < RBLOOM_K; i++) {
        unsigned p = rbloom_pos(z, i);
        if (((blk[p >> 1] >> ((p & 1) * 4)) & 15u) == 0)
            return 0;
    }
    return 1;
}

#endif
