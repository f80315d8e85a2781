/* oarena.h -- a per-thread bump arena for output that lives one loop turn.
 *
 * Most of what a worker writes to its connections is written in the turn
 * it was produced: a broadcast to 18,000 devices puts a small buffer on
 * each of 18,000 connections, and the end of the turn writes and frees
 * them all.  From malloc those buffers land between the sessions' live
 * allocations made in the same turn (inflight rings, timers), and once
 * freed they stay in the heap as holes malloc cannot give back (issue 20:
 * ~430 B a device after one broadcast).  Here they come from one reserved
 * range of address space instead, handed out by a bump pointer: no header,
 * no free, nothing left among the live data.
 *
 *   base [chunk conn 7][chunk conn 9][chunk conn 7, grown]...used...touched...size
 *
 * oarena_reset (the end of the turn, once every chunk is written or copied
 * out by its owner) makes every chunk dead at once.  The pages a big turn
 * touched stay resident for the next turn; oarena_trim gives back those
 * above what recent turns used (madvise MADV_DONTNEED), so a burst's
 * memory returns to the system a moment later without a system call per
 * turn under steady load.
 *
 * Threads: one owner thread (a worker); no lock.  Under AddressSanitizer
 * every byte outside a live chunk is poisoned (a redzone after each chunk,
 * the whole arena after a reset): a chunk read or written after the turn
 * it belonged to is reported.
 */
#ifndef ANTENNA_OARENA_H
#define ANTENNA_OARENA_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t *base;     /* reserved range (MAP_NORESERVE), NULL when unavailable */
    size_t size;       /* bytes reserved */
    size_t used;       /* bump offset: bytes handed out since the last reset */
    size_t touched;    /* high-water mark since the last trim: resident at most */
    size_t peak;       /* highest `used` since the last trim */
    uint8_t *last;     /* the newest chunk: grows in place */
    size_t given_back; /* bytes given back by oarena_trim, in all (metrics, tests) */
} oarena_t;

/* Reserve `size` bytes of address space (nothing resident yet).  Returns
 * 0, or -1 (the arena then hands out nothing; callers fall back to malloc). */
int oarena_init(oarena_t *a, size_t size);
void oarena_destroy(oarena_t *a);

/* A chunk of at least n bytes, its size in *cap (n rounded up to 16), or
 * NULL when the arena has no room. */
void *oarena_alloc(oarena_t *a, size_t n, size_t *cap);
/* Grow chunk p (of *cap bytes) to at least n bytes in place: possible
 * only for the newest chunk with room after it.  Returns 1 (and the new
 * *cap), or 0 (nothing changed). */
int oarena_grow(oarena_t *a, void *p, size_t n, size_t *cap);

static inline int oarena_owns(const oarena_t *a, const void *p)
{
    return (const uint8_t *)p >= a->base && (const uint8_t *)p < a->base + a->size;
}

/* Every chunk is dead: the next turn starts at the bottom again. */
void oarena_reset(oarena_t *a);

/* Give back the pages above both `keep` bytes and the highest use since
 * the last trim, when that is less than half of what is resident.  Returns
 * the bytes given back (0: nothing to do).  Call at most every second or
 * so: the pages a steady load needs are touched again after a trim. */
size_t oarena_trim(oarena_t *a, size_t keep);

/* Bytes that may be resident (touched and not given back). */
static inline size_t oarena_resident(const oarena_t *a)
{
    return a->touched;
}

#endif
