/* store_rocks.c -- the RocksDB backend, through its C API (rocksdb/c.h).
 *
 * One database in the store's directory, the default column family, the
 * bytewise comparator.  A group of batches is
 * one rocksdb_writebatch (atomic) written once, with WriteOptions.sync for
 * sync=always; sync() is FlushWAL(sync=true); a prefix deletion is one
 * DeleteRange [prefix, successor(prefix)).
 *
 * Write errors.  After a failed write RocksDB keeps a "background error" and
 * refuses every later write until DB::Resume(), which the C API lacks, so a
 * failed write marks the backend broken and the next write (or sync) first
 * closes and reopens the database: recovery replays the log and starts a new
 * one, and writes work again once the cause (a full disk) is gone.  Reopens
 * happen at most every REOPEN_BACKOFF_MS (a disk that stays full would
 * otherwise cost a recovery per group); meanwhile writes fail at once with
 * the last error, and reads return STORE_EIO if the last reopen failed.
 *
 * Recovery.  A process killed mid-write (kill -9, OOM) leaves at most a
 * torn last record in the write-ahead log: normal, tolerated silently
 * (kTolerateCorruptedTailRecords).  A record damaged before the end (a
 * flipped bit, a lost page) is corruption, and with paranoid checks the
 * open fails with RocksDB's "Corruption: ..." message: point-in-time
 * recovery would silently drop everything after it (a whole store of
 * retained messages and queues, with no log line).  The operator decides:
 * store_opts.recover (antenna --recover) copies the log files to
 * DIR/corrupt-wal-UNIXTIME/ and opens once with kSkipAnyCorruptedRecords,
 * which drops the damaged records and keeps every intact one after them
 * (more than point-in-time recovery would; the cost is that a later batch
 * may survive without an earlier one), with RocksDB's info log at WARN so
 * that what it dropped can be read back from DIR/LOG and logged; then it
 * closes and opens normally.
 *
 * The info LOG is limited to fatal messages: Debian's librocksdb is built
 * with assertions, and appending to a LOG file whose previous write failed
 * (disk full) aborts the process (WritableFileWriter::
 * AssertFalseAndGetStatusForPrevError), so a verbose LOG on the store's own
 * disk would turn ENOSPC into a crash.
 *
 * Threads: write() and sync() on the committer only; get(), scan() and
 * compact() on any thread under the read side of `lock`, which the
 * committer takes for writing only to swap the handle in a reopen.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <rocksdb/c.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "store_int.h"
#include "util.h"

#define REOPEN_BACKOFF_MS 250u
#define ROCKS_LOG_WARN 2  /* rocksdb::InfoLogLevel::WARN_LEVEL */
#define ROCKS_LOG_FATAL 4 /* rocksdb::InfoLogLevel::FATAL_LEVEL */
/* rocksdb::WALRecoveryMode */
#define ROCKS_TOLERATE_CORRUPTED_TAIL 0
#define ROCKS_SKIP_ANY_CORRUPTED 3
#define SALVAGE_LOG_LINES 20      /* RocksDB's lines about dropped records, logged at most */
#define WB_KEEP_BYTES (64u << 20) /* a write batch larger than this is not kept */
#define SCAN_READAHEAD (2u << 20) /* bytes read ahead by a scan's iterator */

typedef struct rocks {
    char *path;
    rocksdb_options_t *opts;
    rocksdb_writeoptions_t *wo_sync, *wo_nosync;
    pthread_rwlock_t lock;
    rocksdb_t *db; /* NULL only while a reopen failed */

    /* the committer's own */
    rocksdb_writebatch_t *wb;
    uint8_t *end; /* prefix successor scratch */
    size_t end_cap;
    int broken; /* the last write failed: reopen before the next */
    uint64_t next_reopen_ms;
    int last_rc;
    char last_msg[256];
} rocks_t;

int store__rocks_errno(const char *msg)
{
    if (strstr(msg, "No space left"))
        return STORE_ENOSPC;
    if (strstr(msg, "Corruption"))
        return STORE_ECORRUPT;
    if (strstr(msg, "While lock file") || strstr(msg, "lock hold by current process") ||
        strstr(msg, "/LOCK:"))
        return STORE_EBUSY;
    if (strstr(msg, "Permission denied"))
        return STORE_EACCES;
    return STORE_EIO;
}

static void rocks_free(rocks_t *r)
{
    if (r->db)
        rocksdb_close(r->db);
    if (r->wb)
        rocksdb_writebatch_destroy(r->wb);
    if (r->wo_sync)
        rocksdb_writeoptions_destroy(r->wo_sync);
    if (r->wo_nosync)
        rocksdb_writeoptions_destroy(r->wo_nosync);
    if (r->opts)
        rocksdb_options_destroy(r->opts);
    pthread_rwlock_destroy(&r->lock);
    free(r->end);
    free(r->path);
    free(r);
}

/* Copy one file (a write-ahead log) byte for byte; 0 or -errno. */
static int copy_file(const char *from, const char *to)
{
    char buf[65536];
    int rc = 0;
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return -errno;
    int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0) {
        rc = -errno;
        goto out_in;
    }
    for (;;) {
        ssize_t n = read(in, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : 0;
            break;
        }
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                rc = -errno;
                goto out_out;
            }
            off += w;
        }
    }
    if (rc == 0 && fsync(out) != 0)
        rc = -errno;
out_out:
    close(out);
out_in:
    close(in);
    return rc;
}

/* The write-ahead logs (NNNNNN.log) of dir copied into a new directory
 * dir/corrupt-wal-UNIXTIME; its path in saved.  Returns the number of files
 * copied or -errno. */
static int save_logs(const char *dir, char *saved, size_t savedlen)
{
    int n = 0, rc = 0;
    if (snprintf(saved, savedlen, "%s/corrupt-wal-%lld", dir, (long long)time(NULL)) >=
        (int)savedlen)
        return -ENAMETOOLONG;
    if (mkdir(saved, 0700) != 0)
        return -errno;
    DIR *d = opendir(dir);
    if (d == NULL)
        return -errno;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".log") != 0)
            continue;
        char from[4096], to[4096];
        if (snprintf(from, sizeof(from), "%s/%s", dir, e->d_name) >= (int)sizeof(from) ||
            snprintf(to, sizeof(to), "%s/%s", saved, e->d_name) >= (int)sizeof(to)) {
            rc = -ENAMETOOLONG;
            break;
        }
        if ((rc = copy_file(from, to)) != 0)
            break;
        n++;
    }
    closedir(d);
    return rc ? rc : n;
}

/* After the salvaging open: RocksDB's own account (dir/LOG, WARN level) of
 * the records it dropped, into our log. */
static void log_dropped(const char *dir)
{
    char path[4096], line[1024];
    int shown = 0, more = 0;
    snprintf(path, sizeof(path), "%s/LOG", dir);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f)) {
        if (strstr(line, "dropping") == NULL && strstr(line, "Corruption") == NULL)
            continue;
        if (shown == SALVAGE_LOG_LINES) {
            more++;
            continue;
        }
        line[strcspn(line, "\n")] = '\0';
        const char *msg = strstr(line, "] ");
        log_warn("store: '%s': recovery: %s", dir, msg ? msg + 2 : line);
        shown++;
    }
    fclose(f);
    if (more)
        log_warn("store: '%s': recovery: %d more lines in %s", dir, more, path);
    if (shown == 0)
        log_warn("store: '%s': recovery: RocksDB reported no dropped record", dir);
}

/* --recover after the strict open failed with corruption (msg): save the
 * logs, open once skipping the damaged records, close.  0 or -errno with
 * the cause in err. */
static int salvage(rocks_t *r, const char *msg, char *err, size_t errlen)
{
    char saved[4096];
    char *e = NULL;
    log_error("store: '%s' is corrupt (%s): --recover: salvaging what can be read", r->path, msg);
    int n = save_logs(r->path, saved, sizeof(saved));
    if (n < 0) {
        snprintf(err, errlen, "store: cannot recover '%s': copying its logs to %s: %s", r->path,
                 saved, strerror(-n));
        return STORE_EIO;
    }
    log_warn("store: '%s': %d write-ahead log files copied to %s before the recovery", r->path, n,
             saved);
    rocksdb_options_set_wal_recovery_mode(r->opts, ROCKS_SKIP_ANY_CORRUPTED);
    rocksdb_options_set_info_log_level(r->opts, ROCKS_LOG_WARN);
    rocksdb_t *db = rocksdb_open(r->opts, r->path, &e);
    rocksdb_options_set_wal_recovery_mode(r->opts, ROCKS_TOLERATE_CORRUPTED_TAIL);
    rocksdb_options_set_info_log_level(r->opts, ROCKS_LOG_FATAL);
    if (e != NULL) {
        int rc = store__rocks_errno(e);
        snprintf(err, errlen, "store: cannot recover '%s': %s (%s)", r->path, store_strerror(rc),
                 e);
        free(e);
        return rc;
    }
    rocksdb_close(db);
    log_dropped(r->path);
    log_warn("store: '%s': recovered: the damaged log records were dropped, every intact one "
             "kept (the original logs are in %s)",
             r->path, saved);
    return 0;
}

static int rocks_open(const store_opts_t *o, void **be, char *err, size_t errlen)
{
    rocks_t *r = an_calloc(1, sizeof(*r));
    char *e = NULL;
    int rc;

    pthread_rwlock_init(&r->lock, NULL);
    r->path = an_strndup(o->path, strlen(o->path));
    r->opts = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(r->opts, 1);
    rocksdb_options_set_info_log_level(r->opts, ROCKS_LOG_FATAL);
    rocksdb_options_set_keep_log_file_num(r->opts, 2);
    rocksdb_options_set_paranoid_checks(r->opts, 1);
    rocksdb_options_set_wal_recovery_mode(r->opts, ROCKS_TOLERATE_CORRUPTED_TAIL);
    r->wo_sync = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(r->wo_sync, 1);
    r->wo_nosync = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(r->wo_nosync, 0);
    r->wb = rocksdb_writebatch_create();

    r->db = rocksdb_open(r->opts, r->path, &e);
    if (e != NULL && o->recover && store__rocks_errno(e) == STORE_ECORRUPT) {
        rc = salvage(r, e, err, errlen);
        free(e);
        e = NULL;
        if (rc != 0)
            goto fail;
        r->db = rocksdb_open(r->opts, r->path, &e);
    }
    if (e != NULL) {
        rc = store__rocks_errno(e);
        snprintf(err, errlen, "store: cannot open '%s': %s (%s)", o->path, store_strerror(rc), e);
        free(e);
        r->db = NULL;
        goto fail;
    }
    *be = r;
    return 0;

fail:
    rocks_free(r);
    return rc;
}

static void rocks_close(void *be)
{
    rocks_free(be);
}

/* The committer only.  Closes and reopens the database after a failed
 * write; readers wait on the write lock meanwhile. */
static int reopen(rocks_t *r, char *err, size_t errlen)
{
    uint64_t now = an_now_ms();
    char *e = NULL;

    if (now < r->next_reopen_ms) {
        snprintf(err, errlen, "%s", r->last_msg);
        return r->last_rc;
    }
    r->next_reopen_ms = now + REOPEN_BACKOFF_MS;
    pthread_rwlock_wrlock(&r->lock);
    if (r->db)
        rocksdb_close(r->db);
    r->db = rocksdb_open(r->opts, r->path, &e);
    if (e != NULL)
        r->db = NULL;
    pthread_rwlock_unlock(&r->lock);
    if (e != NULL) {
        r->last_rc = store__rocks_errno(e);
        snprintf(r->last_msg, sizeof(r->last_msg), "reopening after a write error: %s", e);
        snprintf(err, errlen, "%s", r->last_msg);
        free(e);
        return r->last_rc;
    }
    r->broken = 0;
    return 0;
}

static int failed(rocks_t *r, char *e, char *err, size_t errlen)
{
    r->broken = 1;
    r->last_rc = store__rocks_errno(e);
    snprintf(r->last_msg, sizeof(r->last_msg), "%s", e);
    snprintf(err, errlen, "%s", e);
    free(e);
    return r->last_rc;
}

static void add_op(rocks_t *r, const store_op_t *op)
{
    switch (op->op) {
    case STORE_OP_PUT:
        rocksdb_writebatch_put(r->wb, (const char *)op->k, op->kl, (const char *)op->v, op->vl);
        break;
    case STORE_OP_DEL:
        rocksdb_writebatch_delete(r->wb, (const char *)op->k, op->kl);
        break;
    default: {
        if (r->end_cap < op->kl) {
            r->end = an_realloc(r->end, op->kl);
            r->end_cap = op->kl;
        }
        /* store_batch_del_prefix() refused prefixes without a successor. */
        size_t n = store__prefix_end(op->k, op->kl, r->end);
        rocksdb_writebatch_delete_range(r->wb, (const char *)op->k, op->kl, (const char *)r->end,
                                        n);
        break;
    }
    }
}

static int rocks_write(void *be, store_batch_t *first, int sync, char *err, size_t errlen)
{
    rocks_t *r = be;
    char *e = NULL;
    size_t size = 0;
    int rc;

    if (r->broken && (rc = reopen(r, err, errlen)) != 0)
        return rc;
    for (store_batch_t *b = first; b; b = b->next) {
        store_op_t op;
        size_t off = 0;
        if (b->err)
            continue;
        while (store__batch_next(b, &off, &op))
            add_op(r, &op);
    }
    rocksdb_write(r->db, sync ? r->wo_sync : r->wo_nosync, r->wb, &e);
    rocksdb_writebatch_data(r->wb, &size);
    if (size > WB_KEEP_BYTES) {
        rocksdb_writebatch_destroy(r->wb);
        r->wb = rocksdb_writebatch_create();
    } else {
        rocksdb_writebatch_clear(r->wb);
    }
    return e ? failed(r, e, err, errlen) : 0;
}

static int rocks_sync(void *be, char *err, size_t errlen)
{
    rocks_t *r = be;
    char *e = NULL;
    int rc;

    /* Never FlushWAL on a broken database: syncing a log writer that saw
     * an error trips the assertion described at the top. */
    if (r->broken && (rc = reopen(r, err, errlen)) != 0)
        return rc;
    rocksdb_flush_wal(r->db, 1, &e);
    return e ? failed(r, e, err, errlen) : 0;
}

static int rocks_get(void *be, const void *k, size_t kl, void **val, size_t *vl)
{
    rocks_t *r = be;
    char *e = NULL;
    int rc = STORE_EIO;

    pthread_rwlock_rdlock(&r->lock);
    if (r->db == NULL)
        goto out;
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_pinnableslice_t *ps = rocksdb_get_pinned(r->db, ro, k, kl, &e);
    rocksdb_readoptions_destroy(ro);
    if (e != NULL) {
        rc = store__rocks_errno(e);
        free(e);
        goto out;
    }
    if (ps == NULL) {
        rc = STORE_ENOTFOUND;
        goto out;
    }
    size_t n = 0;
    const char *p = rocksdb_pinnableslice_value(ps, &n);
    uint8_t *v = an_malloc(n + 1);
    if (n)
        memcpy(v, p, n);
    v[n] = '\0';
    rocksdb_pinnableslice_destroy(ps);
    *val = v;
    *vl = n;
    rc = 0;
out:
    pthread_rwlock_unlock(&r->lock);
    return rc;
}

static int rocks_scan(void *be, const void *prefix, size_t len, store_scan_fn cb, void *ud)
{
    rocks_t *r = be;
    uint8_t *end = len ? an_malloc(len) : NULL;
    size_t endl = store__prefix_end(prefix, len, end);
    rocksdb_readoptions_t *ro = NULL;
    rocksdb_iterator_t *it = NULL;
    char *e = NULL;
    int rc = STORE_EIO;

    pthread_rwlock_rdlock(&r->lock);
    if (r->db == NULL)
        goto out;
    ro = rocksdb_readoptions_create();
    /* A scan reads each block once, from start to end (recovery, tools):
     * keep its blocks out of the block cache, where they would only evict
     * hot ones and cost an LRU insert and removal per block, and read
     * ahead in large sequential reads. */
    rocksdb_readoptions_set_fill_cache(ro, 0);
    rocksdb_readoptions_set_readahead_size(ro, SCAN_READAHEAD);
    if (endl > 0) /* the iterator stops by itself at the prefix's end */
        rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)end, endl);
    it = rocksdb_create_iterator(r->db, ro);
    rc = 0;
    for (rocksdb_iter_seek(it, prefix, len); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        if (kl < len || (len && memcmp(k, prefix, len) != 0))
            break;
        if ((rc = cb(ud, k, kl, v, vl)) != 0)
            break;
    }
    if (rc == 0) {
        rocksdb_iter_get_error(it, &e);
        if (e != NULL) {
            rc = store__rocks_errno(e);
            free(e);
        }
    }
out:
    if (it)
        rocksdb_iter_destroy(it);
    if (ro)
        rocksdb_readoptions_destroy(ro);
    pthread_rwlock_unlock(&r->lock);
    free(end);
    return rc;
}

static int rocks_compact(void *be, const void *prefix, size_t len)
{
    rocks_t *r = be;
    uint8_t *end = len ? an_malloc(len) : NULL;
    size_t endl = store__prefix_end(prefix, len, end);
    int rc = STORE_EIO;

    pthread_rwlock_rdlock(&r->lock);
    if (r->db != NULL) {
        /* No start for the empty prefix, no limit when it has no successor. */
        rocksdb_compact_range(r->db, len ? prefix : NULL, len, endl ? (const char *)end : NULL,
                              endl);
        rc = 0;
    }
    pthread_rwlock_unlock(&r->lock);
    free(end);
    return rc;
}

const store_backend_t store__rocksdb_backend = {
    .name = "rocksdb",
    .durable = 1,
    .open = rocks_open,
    .close = rocks_close,
    .write = rocks_write,
    .sync = rocks_sync,
    .get = rocks_get,
    .scan = rocks_scan,
    .compact = rocks_compact,
};
