/* store_int.h -- inside the store module: the backend interface and the
 * layout of a batch.  Not for other modules (the `store__` prefix).
 *
 * A backend is a handful of functions, as Redis' ae_epoll.c / ae_kqueue.c
 * behind ae.c: store.c owns the queue, the committer thread, the sync timer,
 * the version check and fault injection; a backend only applies a group of
 * batches, syncs, reads and compacts.  write() and sync() are called by the
 * committer thread only; get(), scan() and compact() by any thread at any
 * time, concurrently with write() (the backend protects itself).
 *
 * A batch is one growable buffer of operations, each
 *   [u8 op][u32 key length][u32 value length][key][value]   (little-endian)
 * so building one costs one amortised memcpy per operation, and it carries
 * its queue link and completion so submitting allocates nothing.  The
 * lengths are little-endian on every host (le32_put, le32_get: one plain
 * load or store on x86 and arm64), since the same bytes are the
 * replication stream's operations (store_batch_raw) between nodes.
 */
#ifndef ANTENNA_STORE_INT_H
#define ANTENNA_STORE_INT_H

#include <stdint.h>

#include "store.h"

enum {
    STORE_OP_PUT = STORE_RAW_PUT,
    STORE_OP_DEL = STORE_RAW_DEL,
    STORE_OP_DEL_PREFIX = STORE_RAW_DEL_PREFIX
};

static inline void le32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t le32_get(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#define STORE__OP_HDR 9u

struct store_batch {
    uint8_t *buf;
    size_t len, cap;
    size_t nops;
    size_t bytes; /* keys + values */
    int invalid;  /* a key or value over 4 GiB - 1 was added */
    int err;      /* set by the committer: fails without being applied */
    store_done_fn done;
    void *ud;
    struct store_batch *next;
};

typedef struct store_op {
    int op;
    const uint8_t *k, *v;
    size_t kl, vl;
} store_op_t;

/* Iterates b's operations: *off starts at 0; returns 0 at the end. */
int store__batch_next(const store_batch_t *b, size_t *off, store_op_t *op);

/* The smallest key greater than every key starting with prefix: copies the
 * prefix into out (len bytes), drops trailing 0xff and increments the last
 * byte.  Returns its length, 0 if there is none (empty or all 0xff). */
size_t store__prefix_end(const void *prefix, size_t len, uint8_t *out);

/* Maps a RocksDB error text to a negative errno (store_rocks.c). */
int store__rocks_errno(const char *msg);

typedef struct store_backend {
    const char *name;
    int durable; /* has a disk to sync: counts syncs, runs the interval timer */
    /* Opens; on error returns a negative error with a message naming the
     * path in err. */
    int (*open)(const store_opts_t *o, void **be, char *err, size_t errlen);
    void (*close)(void *be);
    /* Applies every batch of the list first..NULL whose err is 0, in order,
     * atomically; sync: durable before returning.  Returns 0 or a negative
     * error (nothing applied, as far as the backend knows) with its text in
     * err. */
    int (*write)(void *be, store_batch_t *first, int sync, char *err, size_t errlen);
    /* Makes every earlier write durable; 0 or a negative error (text in err). */
    int (*sync)(void *be, char *err, size_t errlen);
    int (*get)(void *be, const void *k, size_t kl, void **val, size_t *vl);
    int (*scan)(void *be, const void *prefix, size_t len, store_scan_fn cb, void *ud);
    int (*compact)(void *be, const void *prefix, size_t len);
    /* Optional: called by the committer thread at least every tick_ms,
     * also while idle (the Redis backend renews its lock). */
    void (*tick)(void *be);
    uint32_t tick_ms;
} store_backend_t;

extern const store_backend_t store__memory_backend;
extern const store_backend_t store__rocksdb_backend;
extern const store_backend_t store__redis_backend;

#endif
