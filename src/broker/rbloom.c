/* rbloom.c -- a counting Bloom filter of one other node's exact routes
 * (rbloom.h).
 *
 * Blocks of 128 four-bit counters (64 bytes, cache-line aligned); a key's
 * RBLOOM_K counters are in one block.  Two fields of one key may name the
 * same counter: it is then counted twice on add and on delete, and tested
 * twice, which keeps add/delete symmetric.
 */
#include "rbloom.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

rbloom_t *rbloom_new(uint64_t routes)
{
    if (routes < RBLOOM_MIN_ROUTES)
        routes = RBLOOM_MIN_ROUTES;
    uint64_t blocks = (routes * RBLOOM_CPR + 127) / 128;
    if (blocks > UINT32_MAX)
        blocks = UINT32_MAX;
    rbloom_t *b = an_calloc(1, sizeof(*b));
    size_t bytes = (size_t)blocks * RBLOOM_BLOCK;
    b->c = aligned_alloc(RBLOOM_BLOCK, bytes);
    if (b->c == NULL)
        abort(); /* the an_* policy: out of memory ends the process */
    memset(b->c, 0, bytes);
    b->nblocks = (uint32_t)blocks;
    b->sized = routes;
    return b;
}

void rbloom_free(rbloom_t *b)
{
    if (b == NULL)
        return;
    free(b->c);
    free(b);
}

void rbloom_add(rbloom_t *b, uint64_t h)
{
    uint8_t *blk = (uint8_t *)rbloom_block(b, h);
    uint64_t z = rbloom_mix(h);
    for (int i = 0; i < RBLOOM_K; i++) {
        unsigned p = rbloom_pos(z, i), sh = (p & 1) * 4;
        unsigned v = (blk[p >> 1] >> sh) & 15u;
        if (v == 15)
            continue; /* saturated: sticks */
        v++;
        if (v == 15)
            b->saturated++;
        blk[p >> 1] = (uint8_t)((blk[p >> 1] & ~(15u << sh)) | (v << sh));
    }
    b->n++;
}

int rbloom_del(rbloom_t *b, uint64_t h)
{
    if (!rbloom_test(b, h))
        return 0;
    uint8_t *blk = (uint8_t *)rbloom_block(b, h);
    uint64_t z = rbloom_mix(h);
    for (int i = 0; i < RBLOOM_K; i++) {
        unsigned p = rbloom_pos(z, i), sh = (p & 1) * 4;
        unsigned v = (blk[p >> 1] >> sh) & 15u;
        if (v == 15 || v == 0) /* saturated: never goes down; 0: a field named it twice */
            continue;
        blk[p >> 1] = (uint8_t)((blk[p >> 1] & ~(15u << sh)) | ((v - 1) << sh));
    }
    if (b->n > 0)
        b->n--;
    return 1;
}
