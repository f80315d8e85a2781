/* util.h -- small helpers shared by every module: clock, container_of,
 * allocation that aborts on exhaustion, single-writer counters.
 *
 * an_malloc/an_calloc/an_realloc are for the broker's own small structures:
 * running out of memory there is fatal (as in Redis' zmalloc).  Sizes chosen
 * by a peer are checked against configured maxima before they get here.
 */
#ifndef ANTENNA_UTIL_H
#define ANTENNA_UTIL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define AN_MIN(a, b) ((a) < (b) ? (a) : (b))
#define AN_MAX(a, b) ((a) > (b) ? (a) : (b))
#define AN_UNUSED(x) (void)(x)
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

static inline uint64_t an_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline uint64_t an_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The wall-clock time ms from now: a pthread_cond_timedwait deadline. */
static inline struct timespec an_wall_after(uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static inline uint64_t an_wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec;
}

void *an_malloc(size_t n);
void *an_calloc(size_t n, size_t size);
void *an_realloc(void *p, size_t n);
char *an_strndup(const char *s, size_t n);

/* A counter written by one thread and read by others: plain loads and
 * stores (no locked instruction), atomic so readers see whole values. */
typedef _Atomic uint64_t an_counter_t;
#define STAT_ADD(c, n)                                                                             \
    atomic_store_explicit(&(c), atomic_load_explicit(&(c), memory_order_relaxed) + (n),            \
                          memory_order_relaxed)
#define STAT_GET(c) atomic_load_explicit(&(c), memory_order_relaxed)

/* A latency histogram with one writer: fixed bucket bounds in microseconds
 * (an_hist_bounds_us, the last bucket is +Inf), per-bucket counts (not
 * cumulative), the sum and the count.  Adding is two relaxed stores. */
#define AN_HIST_N 14
extern const uint32_t an_hist_bounds_us[AN_HIST_N - 1];
typedef struct {
    an_counter_t bucket[AN_HIST_N];
    an_counter_t sum_us;
} an_hist_t;
static inline void an_hist_add(an_hist_t *h, uint64_t us)
{
    unsigned i = 0;
    while (i < AN_HIST_N - 1 && us > an_hist_bounds_us[i])
        i++;
    STAT_ADD(h->bucket[i], 1);
    STAT_ADD(h->sum_us, us);
}

static inline uint64_t an_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* An output buffer as (buf, len, off, cap): bytes [off, len) are pending.
 * Make room for n more bytes: move the pending bytes to the front, then
 * double the capacity until they fit.  buf must not be NULL. */
void buf_make_room(uint8_t **buf, uint32_t *len, uint32_t *off, uint32_t *cap, size_t n);

/* SipHash-1-3 of n bytes under a 128-bit key: for every hash table whose
 * keys a client or an API user chooses (client ids, topic levels, filters,
 * group names, user names, addresses), so that nobody can make entries
 * collide without knowing the key.  Each table draws its own key with
 * an_random_key().  (No unkeyed string hash is offered on purpose.) */
uint64_t an_siphash(const uint64_t key[2], const void *p, size_t n);
/* A random 128-bit key (getrandom; the clock and addresses if it fails). */
void an_random_key(uint64_t key[2]);

static inline uint64_t an_hash64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* "Did you mean ...?": the candidate closest to `key` as a typo would be
 * (Levenshtein distance at most 1 for keys under 6 characters, 2 from 6, 3
 * from 12), fed one candidate at a time; best stays NULL when none is
 * near.  The configuration's unknown keys use it. */
typedef struct {
    const char *key;
    const char *best;
    unsigned dist;
} an_near_t;
#define AN_NEAR(k) ((an_near_t){.key = (k), .best = NULL, .dist = 4})
void an_near_try(an_near_t *nr, const char *cand);

#endif
