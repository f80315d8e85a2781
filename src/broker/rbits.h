/* rbits.h -- a plain bit filter of one node's exact routes, built by that
 * node (its owner) and shipped to the others.
 *
 * A node of a large cluster announces ~19,000 exact filters ("dev/42/in")
 * to each of ~52 peers.  Sent as strings, every receiver parses and hashes
 * each one and keeps it in its exact table (rtab.h, 16-24 B a route) or a
 * counting Bloom filter (rbloom.h, 4-8 B).  Instead the OWNER keeps a
 * counting filter of its own exact filters (rbcount_t: 4-bit counters, it
 * has only its own routes) and the receivers keep only its bits
 * (rbits_t: bit i set iff counter i is not zero, ~1.5 B a route): the
 * owner sends the whole bitmap when a link comes up or when it resizes,
 * then the positions that flipped (0->1 on an add, 1->0 when a counter
 * returns to 0).  A receiver never hashes a route; a publish hashes its
 * topic once (SipHash under the cluster-wide route key, router.c) and
 * tests one cache line per such peer.
 *
 * Layout: blocked, one 64-byte cache line (512 bits) a block.  A key's
 * block is the high half of its hash scaled to the block count; its
 * RBITS_K positions in the block are 9-bit fields of a multiplicative
 * remix of the hash (the same fields on owner and receiver).  Sized at
 * RBITS_BPR (12) bits a route when built: 0.44 % false positives with
 * k = 6; the owner rebuilds (a new size, the whole bitmap again) when its
 * routes pass RBITS_GROW_NUM/RBITS_GROW_DEN (6/5) of what it was sized
 * for (10 bits a route: 0.96 %), or fall under a quarter (the memory
 * bound, 48 bits a route).  The maths: docs/cluster.md "Routes";
 * tests/unit/test_rbits.c measures the rate.
 *
 * Counters: 4 bits, two a byte, 512 a block (256 bytes).  A counter at 15
 * sticks (never goes down: its bit stays set, a spurious forward, never a
 * loss); with a mean of k n / m = 0.5 it practically never gets there.
 *
 * Threads: an rbcount_t is the link thread's (cl_bits.c); an rbits_t is
 * the router's, under srv->trie_lock (the link thread writes under the
 * write lock, the workers test under the read lock), like rtab and rbloom.
 */
#ifndef ANTENNA_RBITS_H
#define ANTENNA_RBITS_H

#include <stddef.h>
#include <stdint.h>

#define RBITS_K 6                   /* positions per key */
#define RBITS_BPR 12                /* bits a route when built */
#define RBITS_GROW_NUM 6            /* rebuilt when routes > sized * 6 / 5 ... */
#define RBITS_GROW_DEN 5            /* ... (10 bits a route) */
#define RBITS_BLOCK 64              /* bytes of bits a block: 512, one cache line */
#define RBITS_BLOCK_BITS 512        /* positions a block */
#define RBITS_MIN_ROUTES 64         /* the smallest filter is sized for this many */
#define RBITS_MAX_BLOCKS (1u << 22) /* 256 MB of bits: a frame's bound */

/* Blocks for `routes` keys at RBITS_BPR bits each (at least one). */
uint32_t rbits_blocks_for(uint64_t routes);

/* The block of h among nblocks, and the remix its positions come from. */
static inline uint32_t rbits_block_of(uint64_t h, uint32_t nblocks)
{
    return (uint32_t)(((h >> 32) * nblocks) >> 32);
}
static inline uint64_t rbits_mix(uint64_t h)
{
    return (h ^ (h >> 31)) * 0xD6E8FEB86659FD93ull; /* odd: a bijection */
}
/* Position i (< RBITS_BLOCK_BITS) of a key in its block: 9-bit field i of
 * the remix, from the top. */
static inline unsigned rbits_pos(uint64_t z, int i)
{
    return (unsigned)(z >> (55 - 9 * i)) & 511u;
}

/* ---- the receiver's bits ---- */

typedef struct rbits_s {
    uint8_t *bits;    /* nblocks * RBITS_BLOCK bytes, 64-byte aligned; bit p
                       * of a block is byte p >> 3, bit p & 7 */
    uint32_t nblocks; /* >= 1 */
    uint64_t n;       /* the owner's routes, as it last said */
} rbits_t;

/* A filter of nblocks blocks (1..RBITS_MAX_BLOCKS), its bits a copy of
 * `bits` (nblocks * RBITS_BLOCK bytes; NULL: all clear). */
rbits_t *rbits_new(uint32_t nblocks, const uint8_t *bits);
void rbits_free(rbits_t *b);
static inline size_t rbits_bytes(const rbits_t *b)
{
    return (size_t)b->nblocks * RBITS_BLOCK;
}
/* Set (val 1) or clear (0) position pos (< nblocks * 512); -1 when pos is
 * out of range (nothing changed). */
static inline int rbits_put(rbits_t *b, uint32_t pos, int val)
{
    if (pos / RBITS_BLOCK_BITS >= b->nblocks)
        return -1;
    uint8_t m = (uint8_t)(1u << (pos & 7));
    if (val)
        b->bits[pos >> 3] |= m;
    else
        b->bits[pos >> 3] &= (uint8_t)~m;
    return 0;
}
/* May h be among the owner's routes?  0: certainly not.  Inline: the
 * publish path tests every such peer without a call. */
static inline int rbits_test(const rbits_t *b, uint64_t h)
{
    const uint8_t *blk = b->bits + (size_t)rbits_block_of(h, b->nblocks) * RBITS_BLOCK;
    uint64_t z = rbits_mix(h);
    for (int i = 0; i < RBITS_K; i++) {
        unsigned p = rbits_pos(z, i);
        if (!((blk[p >> 3] >> (p & 7)) & 1u))
            return 0;
    }
    return 1;
}

/* ---- the owner's counters ---- */

typedef struct rbcount_s {
    uint8_t *c;         /* nblocks * RBITS_BLOCK_BITS / 2 bytes */
    uint32_t nblocks;   /* >= 1 */
    uint32_t saturated; /* counters stuck at 15 */
    uint64_t n;         /* keys added minus keys deleted */
    uint64_t sized;     /* the routes it was sized for */
} rbcount_t;

/* A counting filter sized for `routes` keys (at least RBITS_MIN_ROUTES). */
rbcount_t *rbcount_new(uint64_t routes);
void rbcount_free(rbcount_t *c);
/* One more key h / one fewer (the caller deletes only what it added).
 * The global positions (block * 512 + p) whose bit flipped (0->1 on an
 * add, 1->0 on a delete) go to flips[] (room for RBITS_K); returns how
 * many. */
int rbcount_add(rbcount_t *c, uint64_t h, uint32_t *flips);
int rbcount_del(rbcount_t *c, uint64_t h, uint32_t *flips);
/* Is position pos's counter non-zero (its bit set)? */
int rbcount_bit(const rbcount_t *c, uint32_t pos);
/* The bits (counter != 0) into out: nblocks * RBITS_BLOCK bytes. */
void rbcount_bits(const rbcount_t *c, uint8_t *out);
/* Does a filter sized `sized` no longer fit n routes (grown past 6/5 or
 * under a quarter)? */
static inline int rbcount_misfit(uint64_t sized, uint64_t n)
{
    return n * RBITS_GROW_DEN > sized * RBITS_GROW_NUM ||
           (n * 4 < sized && sized > RBITS_MIN_ROUTES);
}

#endif
