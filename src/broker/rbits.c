/* rbits.c -- a node's exact routes as a plain bit filter (rbits.h): the
 * receiver's bits and the owner's counters.
 *
 * Two fields of one key may name the same position: its counter is then
 * counted twice on add and on delete, which keeps add/delete symmetric;
 * the position is reported as flipped once (the first increment from 0,
 * the last decrement to 0).
 */
#include "rbits.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

uint32_t rbits_blocks_for(uint64_t routes)
{
    uint64_t blocks = (routes * RBITS_BPR + RBITS_BLOCK_BITS - 1) / RBITS_BLOCK_BITS;
    if (blocks == 0)
        blocks = 1;
    if (blocks > RBITS_MAX_BLOCKS)
        blocks = RBITS_MAX_BLOCKS;
    return (uint32_t)blocks;
}

static void *aligned_zero(size_t bytes)
{
    void *p = aligned_alloc(RBITS_BLOCK, bytes);
    if (p == NULL)
        abort(); /* the an_* policy: out of memory ends the process */
    memset(p, 0, bytes);
    return p;
}

rbits_t *rbits_new(uint32_t nblocks, const uint8_t *bits)
{
    rbits_t *b = an_calloc(1, sizeof(*b));
    b->nblocks = nblocks ? nblocks : 1;
    b->bits = aligned_zero(rbits_bytes(b));
    if (bits != NULL)
        memcpy(b->bits, bits, (size_t)nblocks * RBITS_BLOCK);
    return b;
}

void rbits_free(rbits_t *b)
{
    if (b == NULL)
        return;
    free(b->bits);
    free(b);
}

rbcount_t *rbcount_new(uint64_t routes)
{
    if (routes < RBITS_MIN_ROUTES)
        routes = RBITS_MIN_ROUTES;
    rbcount_t *c = an_calloc(1, sizeof(*c));
    c->nblocks = rbits_blocks_for(routes);
    c->c = aligned_zero((size_t)c->nblocks * (RBITS_BLOCK_BITS / 2));
    c->sized = routes;
    return c;
}

void rbcount_free(rbcount_t *c)
{
    if (c == NULL)
        return;
    free(c->c);
    free(c);
}

static inline unsigned get4(const uint8_t *blk, unsigned p)
{
    return (blk[p >> 1] >> ((p & 1) * 4)) & 15u;
}

static inline void set4(uint8_t *blk, unsigned p, unsigned v)
{
    unsigned sh = (p & 1) * 4;
    blk[p >> 1] = (uint8_t)((blk[p >> 1] & ~(15u << sh)) | (v << sh));
}

int rbcount_add(rbcount_t *c, uint64_t h, uint32_t *flips)
{
    uint32_t blkno = rbits_block_of(h, c->nblocks);
    uint8_t *blk = c->c + (size_t)blkno * (RBITS_BLOCK_BITS / 2);
    uint64_t z = rbits_mix(h);
    int nf = 0;
    for (int i = 0; i < RBITS_K; i++) {
        unsigned p = rbits_pos(z, i), v = get4(blk, p);
        if (v == 15)
            continue; /* saturated: sticks */
        if (v == 0)
            flips[nf++] = blkno * RBITS_BLOCK_BITS + p;
        if (++v == 15)
            c->saturated++;
        set4(blk, p, v);
    }
    c->n++;
    return nf;
}

int rbcount_del(rbcount_t *c, uint64_t h, uint32_t *flips)
{
    uint32_t blkno = rbits_block_of(h, c->nblocks);
    uint8_t *blk = c->c + (size_t)blkno * (RBITS_BLOCK_BITS / 2);
    uint64_t z = rbits_mix(h);
    int nf = 0;
    for (int i = 0; i < RBITS_K; i++) {
        unsigned p = rbits_pos(z, i), v = get4(blk, p);
        if (v == 15 || v == 0) /* saturated: never goes down; 0: a field named it twice */
            continue;
        if (--v == 0)
            flips[nf++] = blkno * RBITS_BLOCK_BITS + p;
        set4(blk, p, v);
    }
    if (c->n > 0)
        c->n--;
    return nf;
}

int rbcount_bit(const rbcount_t *c, uint32_t pos)
{
    uint32_t blkno = pos / RBITS_BLOCK_BITS;
    if (blkno >= c->nblocks)
        return 0;
    return get4(c->c + (size_t)blkno * (RBITS_BLOCK_BITS / 2), pos % RBITS_BLOCK_BITS) != 0;
}

void rbcount_bits(const rbcount_t *c, uint8_t *out)
{
    size_t nbytes = (size_t)c->nblocks * RBITS_BLOCK;
    for (size_t i = 0; i < nbytes; i++) {
        /* byte i of the bits: positions 8i..8i+7, counters in bytes 4i..4i+3 */
        const uint8_t *q = c->c + 4 * i;
        uint8_t v = 0;
        for (int j = 0; j < 4; j++) {
            if (q[j] & 0x0f)
                v |= (uint8_t)(1u << (2 * j));
            if (q[j] & 0xf0)
                v |= (uint8_t)(1u << (2 * j + 1));
        }
        out[i] = v;
    }
}
