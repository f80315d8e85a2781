/* bench_hist.c -- log-linear latency histogram (HDR-like).
 *
 * Design: values are nanoseconds.  Values below 2 * HIST_SUB (256) have one
 * bucket each.  Above, every power of two [2^e, 2^(e+1)) is cut into
 * HIST_SUB (128) equal buckets, so a bucket is at most 1/128 of its values
 * wide and the reported midpoint is within ~0.4 % of any value in it -- the
 * "~1 % precision" asked for, from 1 us up to 2^37 ns (137 s), in 3,968
 * counters (31 KiB).  Recording is a count-leading-zeros, a shift and an
 * increment: no floating point, no allocation.  Two histograms merge by
 * adding counters, which is how worker processes are combined.
 */
#include <string.h>

#include "bench.h"

void hist_init(bench_hist_t *h)
{
    memset(h, 0, sizeof(*h));
}

static uint32_t hist_index(uint64_t v)
{
    if (v < 2 * HIST_SUB)
        return (uint32_t)v;
    uint32_t e = 63u - (uint32_t)__builtin_clzll(v); /* 2^e <= v */
    if (e >= HIST_MAX_EXP)
        return HIST_BUCKETS - 1;
    uint32_t shift = e - HIST_SUB_BITS;
    uint32_t sub = (uint32_t)(v >> shift); /* HIST_SUB .. 2*HIST_SUB-1 */
    return 2 * HIST_SUB + (e - HIST_SUB_BITS - 1) * HIST_SUB + (sub - HIST_SUB);
}

/* Midpoint of bucket i. */
static uint64_t hist_value(uint32_t i)
{
    if (i < 2 * HIST_SUB)
        return i;
    uint32_t k = i - 2 * HIST_SUB;
    uint32_t e = HIST_SUB_BITS + 1 + k / HIST_SUB;
    uint64_t sub = HIST_SUB + k % HIST_SUB;
    uint32_t shift = e - HIST_SUB_BITS;
    uint64_t lo = sub << shift;
    return lo + ((1ull << shift) >> 1);
}

void hist_record(bench_hist_t *h, uint64_t v)
{
    h->counts[hist_index(v)]++;
    if (h->n == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->n++;
    h->sum += (double)v;
}

void hist_merge(bench_hist_t *dst, const bench_hist_t *src)
{
    if (src->n == 0)
        return;
    for (uint32_t i = 0; i < HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    if (dst->n == 0 || src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
    dst->n += src->n;
    dst->sum += src->sum;
}

uint64_t hist_pct(const bench_hist_t *h, double p)
{
    if (h->n == 0)
        return 0;
    if (p >= 100.0)
        return h->max;
    /* the smallest value with at least p % of the samples at or below it */
    uint64_t rank = (uint64_t)((p / 100.0) * (double)h->n + 0.999999);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            if (v > h->max)
                v = h->max;
            if (v < h->min)
                v = h->min;
            return v;
        }
    }
    return h->max;
}

double hist_mean(const bench_hist_t *h)
{
    return h->n ? h->sum / (double)h->n : 0.0;
}
