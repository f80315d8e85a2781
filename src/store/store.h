/* store.h -- the persistence store: ordered binary keys and values, written
 * in batches by a group-committing thread, with three backends behind one
 * small interface (src/store/store_int.h: a struct of function pointers, as
 * Redis' ae backends): memory (tests, persistence.enabled: false), RocksDB
 * (its C API) and Redis (store_redis.c, hiredis: persistence.backend: redis).  The record formats and the key layout that the
 * broker stores through it are in store_rec.h.
 *
 * Threads.  Any thread may build a batch and store_submit() it: a worker
 * puts everything one loop turn wants persisted into one batch and submits
 * it at the end of the turn.  One committer thread per store takes *every*
 * batch waiting at that moment and commits them together: one backend write
 * (one RocksDB WriteBatch) and, with sync=always, one fsync for all of them
 * (group commit).  While that write and its fsync run, new batches queue up
 * and form the next group, so the fsync rate adapts to the load by itself.
 * Batches commit in submission order (one FIFO for all threads) and their
 * completion callbacks run on the committer thread in that order; the broker
 * forwards them to the submitting worker's inbox.  store_get(), store_scan(),
 * store_compact() and store_expire() are synchronous and see only committed
 * batches; they are for start-up (recovery), tools and tests, not for a
 * worker's loop.
 *
 * Durability (what done(ud, 0) promises, per sync policy):
 *
 *   STORE_SYNC_ALWAYS    done() runs only after the group's write *and* the
 *                        fsync (fdatasync of the RocksDB write-ahead log,
 *                        WriteOptions.sync = true) covering it returned.  An
 *                        acknowledged batch survives a process crash, a
 *                        kernel crash and a power loss (as far as the disk
 *                        honours flushes).  Cost: one fsync per group, shared
 *                        by every batch in the group.
 *   STORE_SYNC_INTERVAL  done() runs as soon as the write reached the kernel
 *                        (the log record was written with write(2)), before
 *                        any fsync.  The committer calls FlushWAL(sync) every
 *                        sync_interval_ms while there are unsynced writes.
 *                        An acknowledged batch survives a process crash
 *                        (SIGKILL, abort: the data is in the page cache); a
 *                        kernel crash or power loss can lose the batches of
 *                        the last sync_interval_ms (plus one fsync's duration).
 *                        A failed periodic sync cannot fail batches already
 *                        acknowledged: it is logged and counted in
 *                        write_errors, and the next write reopens the store.
 *   STORE_SYNC_NONE      like interval, but the store never fsyncs: the kernel
 *                        writes dirty pages back on its own schedule (Linux:
 *                        vm.dirty_expire_centisecs, 30 s by default), and
 *                        RocksDB syncs only what it must when it flushes a
 *                        memtable to a table file.  Survives a process crash;
 *                        a kernel crash or power loss can lose an unbounded
 *                        recent suffix.
 *
 *   With Redis (store_redis.c) done(ud, 0) means Redis answered the group's
 *   script, which it does after writing it to its append-only file and,
 *   with Redis' appendfsync always, after the fsync: the policies differ
 *   only in name (sync() does nothing), and what survives a crash of Redis'
 *   machine is what Redis' appendonly/appendfsync promise (store_open()
 *   warns when they fall short of always; docs/persistence.md).
 *
 *   In every policy a batch is atomic (all of it or none of it after a
 *   crash) and recovery replays the log up to a torn last record (RocksDB
 *   kTolerateCorruptedTailRecords), so what survives a crash is always a
 *   prefix of the commit order: never batch n+1 without batch n.  A log
 *   damaged anywhere else is corruption: the open fails (store_opts.recover
 *   salvages).  The memory
 *   backend ignores the policy: done() runs once the batch is applied and
 *   nothing survives the process.  store_close() commits what is pending and,
 *   with interval, syncs before it returns.
 *
 * Errors are negative errno values: STORE_ENOTFOUND (-ENOENT), STORE_EIO,
 * STORE_ENOSPC (disk full), STORE_ECORRUPT (-EBADMSG: malformed record or
 * corrupt store), STORE_EVERSION (-EPROTONOSUPPORT: unknown format or record
 * version), STORE_EBUSY (the store's LOCK is held), STORE_EACCES, STORE_EINVAL,
 * STORE_ESHUTDOWN.  A write error is reported to the done() callback of every
 * batch of the failed group, and the store keeps serving: the next group is
 * tried again (the RocksDB backend reopens the database first, since RocksDB
 * refuses every write after a failed one).  A failed batch must be treated as
 * not acknowledged (the broker refuses the QoS 1/2 PUBLISH with 0x97); it may
 * still be found after a restart if its bytes reached the disk before the
 * error was seen (e.g. the fsync failed after the write), as with any fsync
 * failure.
 */
#ifndef ANTENNA_STORE_H
#define ANTENNA_STORE_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define STORE_ENOTFOUND (-ENOENT)
#define STORE_EIO (-EIO)
#define STORE_ENOSPC (-ENOSPC)
#define STORE_ECORRUPT (-EBADMSG)
#define STORE_EVERSION (-EPROTONOSUPPORT)
#define STORE_EBUSY (-EBUSY)
#define STORE_EACCES (-EACCES)
#define STORE_EINVAL (-EINVAL)
#define STORE_ESHUTDOWN (-ESHUTDOWN)

/* The on-disk format this build writes and reads.  Kept under the key
 * STORE_KEY_VERSION (store_rec.h) as a 4-byte big-endian integer, written
 * when a store is created; store_open() refuses any other value. */
#define STORE_FORMAT_VERSION 1u

typedef enum {
    STORE_BACKEND_MEMORY = 0,
    STORE_BACKEND_ROCKSDB = 1,
    STORE_BACKEND_REDIS = 2
} store_backend_kind_t;
typedef enum { STORE_SYNC_ALWAYS = 0, STORE_SYNC_INTERVAL = 1, STORE_SYNC_NONE = 2 } store_sync_t;

typedef struct store_opts {
    store_backend_kind_t backend;
    const char *path; /* rocksdb: the store's directory, created if missing */
    store_sync_t sync;
    uint32_t sync_interval_ms; /* interval: > 0 */
    /* rocksdb: a write-ahead log damaged before its end (not a torn last
     * record: a crash mid-write is normal and tolerated) refuses the open
     * with a STORE_ECORRUPT message; with recover the open salvages
     * instead (store_rocks.c: the damaged records are skipped, the log
     * files copied aside first, what was dropped is logged). */
    int recover;
    /* redis (store_redis.c): the server, "redis://[user:password@]host
     * [:port][/db]" or "unix:/path"; the prefix of the store's two Redis keys
     * (default "antenna:default:"); timeouts in ms (0: 2000 and 5000).
     * path is then only the store's name in messages. */
    const char *redis_url;
    const char *redis_prefix;
    uint32_t redis_connect_timeout_ms, redis_timeout_ms;
    /* WAIT for this many replicas after each group (0: none); with a
     * redis-sentinel:// url, 1 keeps acknowledged writes across a failover */
    uint32_t redis_min_replicas;
    /* redis: an adoption (docs/cluster.md "A dead node's sessions"): the
     * store of a dead node opened by the survivor named here.  Its close
     * leaves "adopted by <name>" as the store's state once no session is
     * left in it (otherwise no state: another survivor adopts again),
     * instead of "stopped"; the open leaves the state as it is. */
    const char *redis_adopted_by;
    /* redis: neither the open nor the close touch the state (`antenna
     * store`: a tool looking at a dead node's store must not make it look
     * stopped cleanly, which would keep survivors from adopting it). */
    int redis_keep_state;
} store_opts_t;


typedef struct store store_t;
typedef struct store_batch store_batch_t;

/* Completion of a submitted batch: err 0 (committed, durable as the sync
 * policy promises) or a negative error.  Runs on the committer thread; it may
 * store_submit() again but must not block for long (it delays every later
 * batch) nor call store_close(). */
typedef void (*store_done_fn)(void *ud, int err);

/* A scan callback: return 0 to go on, anything else stops the scan and
 * becomes store_scan()'s return value.  k and v are valid during the call
 * only.  It must not write to the store synchronously (store_submit_sync). */
typedef int (*store_scan_fn)(void *ud, const void *k, size_t kl, const void *v, size_t vl);

typedef struct store_stats {
    uint64_t batches_submitted;
    uint64_t batches_committed; /* done(ud, 0) */
    uint64_t batches_failed;    /* done(ud, err < 0) */
    uint64_t commits;           /* backend writes: one per group */
    uint64_t max_group;         /* most batches in one group */
    uint64_t bytes_written;     /* keys + values of committed batches */
    uint64_t syncs;             /* fsyncs: sync writes and WAL flush+sync */
    uint64_t last_sync_us;      /* duration of the last one (always: write + sync) */
    uint64_t write_errors;      /* failed groups and failed interval syncs */
    uint64_t pending_batches;   /* submitted, not yet taken by the committer */
    uint64_t pending_bytes;
    /* latency histograms: per-bucket counts over an_hist_bounds_us (util.h) */
    uint64_t sync_hist[AN_HIST_N]; /* fsyncs */
    uint64_t sync_sum_us;
    uint64_t write_hist[AN_HIST_N]; /* backend writes (one per group) */
    uint64_t write_sum_us;
} store_stats_t;

/* Opens (creating if missing) and starts the committer thread.  On failure
 * returns NULL and writes into err a message that names the path and the
 * cause: cannot create or read the directory, the LOCK held by another
 * process (or another store_open() of the same path), corrupt files, a
 * format version this build does not know, not an antenna store, disk full. */
store_t *store_open(const store_opts_t *o, char *err, size_t errlen);

/* Commits every pending batch (their callbacks run), syncs (interval), joins
 * the committer and closes the backend.  No store_submit() may race it. */
void store_close(store_t *s);

/* Batches: a list of operations applied atomically, in order.  Keys and
 * values are copied; the batch never fails to grow (allocation aborts, as
 * an_malloc).  Sizes are limited to 4 GiB - 1 per key or value. */
store_batch_t *store_batch_new(void);
void store_batch_put(store_batch_t *b, const void *k, size_t kl, const void *v, size_t vl);
/* Reserves vl bytes for the value of a put and returns where to write them
 * (e.g. store_rec_encode_*): no intermediate copy.  Valid until the next
 * operation on the batch.  NULL if kl or vl is over the limit (the batch is
 * then refused by store_submit()). */
void *store_batch_put_reserve(store_batch_t *b, const void *k, size_t kl, size_t vl);
void store_batch_del(store_batch_t *b, const void *k, size_t kl);
/* Deletes every key starting with prefix (a RocksDB range deletion: O(1) in
 * the write, whatever the number of keys).  The prefix must have a successor:
 * not empty and not all 0xff bytes; otherwise STORE_EINVAL and the batch is
 * unchanged. */
int store_batch_del_prefix(store_batch_t *b, const void *prefix, size_t len);
size_t store_batch_count(const store_batch_t *b); /* operations */
size_t store_batch_bytes(const store_batch_t *b); /* keys + values */
void store_batch_free(store_batch_t *b);

/* Queues b for the committer; takes ownership of b in every case.  Returns
 * 0 and done(ud, err) will be called exactly once (done may be NULL), or a
 * negative error and done is never called (STORE_EINVAL: a key or value too
 * large was added; STORE_ESHUTDOWN: the store is closing).  An empty batch is
 * a barrier: it completes once every batch submitted before it has. */
int store_submit(store_t *s, store_batch_t *b, store_done_fn done, void *ud);

/* store_submit() and wait for the result (start-up, tools, tests).  Never
 * from a done() callback or a scan callback. */
int store_submit_sync(store_t *s, store_batch_t *b);

/* Synchronous read of a committed value: 0 and *val (malloc'd, the caller
 * free()s it; NUL-terminated one byte past *vl for convenience), or
 * STORE_ENOTFOUND, or another negative error. */
int store_get(store_t *s, const void *k, size_t kl, void **val, size_t *vl);

/* Calls cb for every committed key starting with prefix (len 0: all keys),
 * in bytewise key order, over a consistent snapshot.  Returns 0, the first
 * non-zero value cb returned, or a negative error. */
int store_scan(store_t *s, const void *prefix, size_t len, store_scan_fn cb, void *ud);

/* Asks the backend to compact the keys starting with prefix (len 0: all),
 * so the space of deleted and overwritten entries goes back to the disk.
 * Synchronous, can take long: not from a worker.  A no-op in memory. */
int store_compact(store_t *s, const void *prefix, size_t len);

/* Removes what has expired at now_s (unix seconds): retained messages and
 * queued (not inflight) outgoing messages whose expiry is <= now_s, and
 * sessions whose expiry deadline is <= now_s together with their queues and
 * incoming QoS 2 ids.  Malformed records are counted, not deleted.  For
 * start-up (before recovery) and tools: it scans, then commits one batch
 * with store_submit_sync().  Counts go to *out (may be NULL). */
typedef struct store_expire_counts {
    uint64_t retained, sessions, messages, malformed;
} store_expire_counts_t;
int store_expire(store_t *s, uint64_t now_s, store_expire_counts_t *out);

void store_stats(store_t *s, store_stats_t *out);

/* The last write or sync error of the backend as text ("" if none). */
void store_last_error(store_t *s, char *buf, size_t len);

/* Test hook (fault injection, both backends): each of the next n batches
 * the committer takes fails with err (a negative error, e.g. STORE_ENOSPC)
 * as if its write had failed, and is not applied; the other batches of the
 * same group commit normally. */
void store_inject_write_failures(store_t *s, unsigned n, int err);

const char *store_strerror(int err);

/* ---- replication (persistence.session_store: replicated; the seam the
 * cluster's cl_repl.c uses: store.c knows nothing of nodes or links) ----
 *
 * A replicate callback runs on the committer thread twice per group (also
 * a group of empty batches: a barrier): STORE_REPL_SEND before the local
 * write (the group may go to the replica meanwhile; the return value is
 * ignored), then STORE_REPL_WAIT once the local write succeeded, before
 * the group's done() callbacks: they wait for it; it returns 0
 * (replicated, or not required: the completions go) or a negative error
 * (every batch of the group fails with it: applied locally but not
 * acknowledged, as after a failed fsync); or STORE_REPL_ABORT when the
 * local write failed (what was sent is not in the store here).  WAIT may
 * block (with a deadline: every later batch waits) and may store_scan()
 * this store (it is the only writer then: a consistent snapshot that
 * includes the group).  Set and cleared from any thread;
 * store_set_replicate returns once the committer is not inside the
 * previous callback. */
enum { STORE_REPL_SEND = 0, STORE_REPL_WAIT = 1, STORE_REPL_ABORT = 2 };
typedef int (*store_replicate_fn)(void *ud, store_t *s, const store_batch_t *group, int phase);
void store_set_replicate(store_t *s, store_replicate_fn fn, void *ud);
/* A group's next batch (NULL at the end); 1 when the batch was failed
 * before the write (not applied: not to be replicated). */
const store_batch_t *store_group_next(const store_batch_t *b);
int store_batch_failed(const store_batch_t *b);
/* A batch's operations in their flat form ([u8 op][u32 kl][u32 vl][key]
 * [value]..., the lengths little-endian on every host): the replica's wire
 * format; and appended back into a batch: 0, or STORE_EINVAL when buf is
 * not a sequence of whole operations (the batch is then unchanged). */
const void *store_batch_raw(const store_batch_t *b, size_t *len);
int store_batch_append_raw(store_batch_t *b, const void *buf, size_t len);
/* One operation of a flat form: STORE_RAW_* (a prefix delete's key is the
 * prefix), its bytes [at, at + size) in the buffer. */
enum { STORE_RAW_PUT = 1, STORE_RAW_DEL = 2, STORE_RAW_DEL_PREFIX = 3 };
typedef struct store_raw_op {
    int op;
    const uint8_t *k, *v;
    size_t kl, vl;
    size_t at, size;
} store_raw_op_t;
/* The operation at *off (which it advances): 1, 0 at the end, or
 * STORE_EINVAL when the bytes there are not a whole valid operation. */
int store_raw_next(const void *buf, size_t len, size_t *off, store_raw_op_t *op);

/* What a Redis store holds, read without opening it (store_redis.c: one
 * short connection; for a cluster survivor deciding whether to adopt a dead
 * node's store): the lock's holder ("" free) and whether that holder is a
 * process of this host that is gone, or a survivor adopting the store
 * (opened with redis_adopted_by); the state ("" while a holder runs or
 * after a crash, "stopped" after a clean close, "adopted by <node>"); 1 when
 * a session is stored.  0, or a negative error with the cause in err. */
typedef struct store_redis_peek {
    char holder[160];
    int holder_gone;
    int adopting;
    char state[128];
    int has_sessions;
} store_redis_peek_t;
int store_redis_peek(const char *url, const char *prefix, uint32_t timeout_ms,
                     store_redis_peek_t *out, char *err, size_t errlen);
/* The keys matching a glob pattern (SCAN ... MATCH, one short connection,
 * at most max_pages pages of about 1,000 keys), each to fn (a key may come
 * twice, as SCAN promises).  0, or a negative error with the cause in err. */
int store_redis_scan_keys(const char *url, const char *pattern, uint32_t timeout_ms,
                          uint32_t max_pages, void (*fn)(void *arg, const char *key, size_t len),
                          void *arg, char *err, size_t errlen);

#endif
