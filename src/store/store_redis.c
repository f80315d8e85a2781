/* store_redis.c -- the Redis backend (hiredis, synchronous contexts): the
 * store's ordered binary keys and values kept in one Redis server, so a
 * node started again (here or on another machine) with the same Redis and
 * the same prefix finds every session, queue and retained message.
 *
 * Layout: three Redis keys per store, under store_opts.redis_prefix P:
 *   P "data"    a hash: store key -> value (binary safe)
 *   P "index"   a sorted set of every store key, all with score 0, so
 *               ZRANGEBYLEX walks them in bytewise (memcmp) order, as
 *               RocksDB's comparator: scans and prefix deletions use it.
 *   P "lock"    "host:pid:random" of the process that has the store open
 *               (":adopting" after it for a survivor adopting the store)
 *               (lock_take: one at a time, as RocksDB's LOCK file), with a
 *               TTL the writes and the committer's tick renew; the write
 *               script writes only for its holder (fencing).
 *   P "state"   how the last holder left: "stopped" (a clean close), or
 *               "adopted by <node>" (a cluster survivor took the sessions
 *               of this node while it was dead: docs/cluster.md); absent
 *               while a holder runs, or after a crash.  An open that takes
 *               the lock deletes it; store_redis_peek() reads it.
 * The prefix keeps nodes that share one Redis apart ("antenna:{node}:").
 *
 * A group of batches is ONE round trip: EVALSHA of WRITE_LUA with every
 * operation in ARGV ("P" key value, "D" key, "X" prefix).  A script runs
 * atomically in Redis and reaches the AOF as one MULTI/EXEC (which Redis
 * drops whole when a crash tore it), so after any crash a group is there
 * entirely or not at all, and groups survive in commit order.  Redis
 * answers a client only after the command went to the AOF (write(2)) and,
 * with appendfsync always, after its fsync: that answer is what done()
 * waits for.  Hence the sync policies (documented in store.h and
 * docs/persistence.md): always = acknowledged after Redis has it in its AOF
 * as Redis' own appendfsync promises (the open warns when that is not
 * "always" with appendonly yes); interval and none = the same writes, and
 * sync() does nothing (Redis fsyncs on its own schedule).  A script that
 * fails midway (Redis out of memory) may leave part of a group applied: its
 * batches fail, as for a failed fsync.
 *
 * Scans read pages of SCAN_PAGE keys with their values through SCAN_LUA
 * (one round trip each, each page consistent); between pages the scan
 * resumes after the last key it saw.  Scans are for start-up and tools,
 * when the broker is not writing the keys it reads.
 *
 * Connections and threads: write() and sync() run on the committer thread,
 * on the writer's own connection `w` (no lock); get() and scan() on any
 * thread, on the reader connection `r` under `rmu` (released while a scan
 * callback runs).  No worker talks to Redis.  A connection that fails is
 * dropped; the next call reconnects, at most every backoff (100 ms doubling
 * to 2 s), failing at once in between, so a dead Redis costs a group one
 * quick error.  A command that fails on a connection that had worked is
 * tried once more on a fresh one (a Redis restarted since the last group:
 * a group applied twice ends in the same state, its operations being
 * assignments).  Scripts are loaded at open; NOSCRIPT (a Redis restarted
 * without its script cache) falls back to EVAL with the body.
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "redis_url.h"
#include "store_int.h"
#include "util.h"

#define BACKOFF_MIN_MS 100u
#define BACKOFF_MAX_MS 2000u
#define SCAN_PAGE 512

/* ARGV: ops as above.  HSET answers 1 for a new field: only then is the key
 * added to the index; HDEL answers 1 when it removed one. */
static const char WRITE_LUA[] =
    "local h, z, l = KEYS[1], KEYS[2], KEYS[3]\n"
    "local holder = redis.call('GET', l)\n"
    "if holder == false then\n"
    "  redis.call('SET', l, ARGV[1], 'PX', ARGV[2])\n"
    "elseif holder ~= ARGV[1] then\n"
    "  return redis.error_reply('ANTENNALOCK the store is held by ' .. holder)\n"
    "else\n"
    "  redis.call('PEXPIRE', l, ARGV[2])\n"
    "end\n"
    "local function succ(p)\n"
    "  local n = #p\n"
    "  while n > 0 and string.byte(p, n) == 255 do n = n - 1 end\n"
    "  if n == 0 then return '+' end\n"
    "  return '(' .. string.sub(p, 1, n - 1) .. string.char(string.byte(p, n) + 1)\n"
    "end\n"
    "local i, n = 3, #ARGV\n"
    "while i <= n do\n"
    "  local op, k = ARGV[i], ARGV[i + 1]\n"
    "  if op == 'P' then\n"
    "    if redis.call('HSET', h, k, ARGV[i + 2]) == 1 then redis.call('ZADD', z, 0, k) end\n"
    "    i = i + 3\n"
    "  elseif op == 'D' then\n"
    "    if redis.call('HDEL', h, k) == 1 then redis.call('ZREM', z, k) end\n"
    "    i = i + 2\n"
    "  else\n"
    "    local lo, hi = '[' .. k, succ(k)\n"
    "    while true do\n"
    "      local ks = redis.call('ZRANGEBYLEX', z, lo, hi, 'LIMIT', 0, 512)\n"
    "      if #ks == 0 then break end\n"
    "      redis.call('HDEL', h, unpack(ks))\n"
    "      redis.call('ZREM', z, unpack(ks))\n"
    "    end\n"
    "    i = i + 2\n"
    "  end\n"
    "end\n"
    "return n\n";

/* ARGV: the lower bound ("[prefix", "(last key" or "-"), the prefix (the
 * upper bound is its successor), the page size.  Answers k1 v1 k2 v2 ... */
static const char SCAN_LUA[] =
    "local h, z, p = KEYS[1], KEYS[2], ARGV[2]\n"
    "local hi = '+'\n"
    "local n = #p\n"
    "while n > 0 and string.byte(p, n) == 255 do n = n - 1 end\n"
    "if n > 0 then hi = '(' .. string.sub(p, 1, n - 1) .. string.char(string.byte(p, n) + 1) end\n"
    "local ks = redis.call('ZRANGEBYLEX', z, ARGV[1], hi, 'LIMIT', 0, tonumber(ARGV[3]))\n"
    "if #ks == 0 then return {} end\n"
    "local vs = redis.call('HMGET', h, unpack(ks))\n"
    "local out = {}\n"
    "for j = 1, #ks do out[2 * j - 1] = ks[j]; out[2 * j] = vs[j] or '' end\n"
    "return out\n";

/* The lock (KEYS[1]) taken at open: ARGV[1] our token, ARGV[2] the TTL,
 * ARGV[3] the holder we may replace ("" none: only a free lock). */
static const char LOCK_LUA[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if v == false or v == ARGV[1] or (ARGV[3] ~= '' and v == ARGV[3]) then\n"
    "  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "  return ''\n"
    "end\n"
    "return v\n";

/* Let the lock (KEYS[1]) go at close, if it is still ours (ARGV[1]), and
 * say how in the state (KEYS[2]): "stopped"; or, for an adoption
 * (ARGV[2] the mark "adopted by <node>"), the mark once no session is left
 * in the index (KEYS[3]), nothing otherwise (a survivor adopts again);
 * ARGV[2] "-": the state stays as it is (redis_keep_state). */
static const char UNLOCK_LUA[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end\n"
    "redis.call('DEL', KEYS[1])\n"
    "if ARGV[2] == '-' then return 1 end\n"
    "if ARGV[2] == '' then\n"
    "  redis.call('SET', KEYS[2], 'stopped')\n"
    "elseif #redis.call('ZRANGEBYLEX', KEYS[3], '[s/', '(s0', 'LIMIT', 0, 1) == 0 then\n"
    "  redis.call('SET', KEYS[2], ARGV[2])\n"
    "end\n"
    "return 1\n";

/* store_redis_peek: the lock, the state, whether a session is stored. */
static const char PEEK_LUA[] =
    "local l = redis.call('GET', KEYS[1]) or ''\n"
    "local st = redis.call('GET', KEYS[2]) or ''\n"
    "local n = #redis.call('ZRANGEBYLEX', KEYS[3], '[s/', '(s0', 'LIMIT', 0, 1)\n"
    "return {l, st, n}\n";

#define LOCK_TTL_MS 10000u
#define LOCK_TICK_MS 3000u

typedef struct {
    redisContext *c;      /* NULL while down */
    uint64_t retry_at_ms; /* no connect before */
    uint32_t backoff_ms;
    int fresh; /* connected for this command: no second try */
} rconn_t;

typedef struct {
    redis_url_t a;
    char url[320]; /* a.display: for messages, no credentials */
    uint32_t connect_ms, timeout_ms;
    char *hkey, *zkey, *lkey, *skey; /* P "data", P "index", P "lock", P "state" */
    size_t hlen, zlen, llen, slen;
    char mark[96];           /* an adoption's close mark ("adopted by <node>"), "" otherwise */
    int keep_state;          /* store_opts.redis_keep_state */
    char token[160];         /* "host:pid:random": this store's hold of P "lock" */
    int locked;              /* we took it at open (close lets it go) */
    char wsha[48], ssha[48]; /* the scripts' SHA1, "" if not loaded */
    rconn_t w;               /* the committer's */
    pthread_mutex_t rmu;
    rconn_t r; /* readers', under rmu */
    /* the committer's argument arrays, grown as needed */
    const char **argv;
    size_t *argl;
    size_t argcap;
    int down;              /* the writer failed since its last success (logging) */
    uint32_t min_replicas; /* WAIT for this many replicas after each group */
} rds_t;

/* ---- connections ------------------------------------------------------ */

static struct timeval tv_ms(uint32_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

static void conn_drop(rconn_t *c)
{
    if (c->c)
        redisFree(c->c);
    c->c = NULL;
}

/* A status command (AUTH, SELECT) on a new context: 0 or -1 with why. */
static int conn_setup_cmd(redisContext *c, int argc, const char **argv, char *err, size_t errlen)
{
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    int rc = 0;
    if (r == NULL) {
        snprintf(err, errlen, "%s: %s", argv[0], c->errstr[0] ? c->errstr : "no answer");
        return -1;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "%s: %.*s", argv[0], (int)AN_MIN(r->len, (size_t)200), r->str);
        rc = -1;
    }
    freeReplyObject(r);
    return rc;
}

/* redis-sentinel://: asks the Sentinels in turn for the master's address
 * (SENTINEL get-master-addr-by-name) into d->a.host and port: 0, or -1
 * with why.  Asked at every connect, so after a failover the next
 * connection goes to the new master. */
static int sentinel_master(rds_t *d, char *why, size_t wl)
{
    snprintf(why, wl, "no Sentinel answered");
    for (uint32_t i = 0; i < d->a.nsent; i++) {
        redisContext *s =
            redisConnectWithTimeout(d->a.sent[i].host, d->a.sent[i].port, tv_ms(d->connect_ms));
        if (s == NULL || s->err) {
            snprintf(why, wl, "Sentinel %.100s:%u: %.100s", d->a.sent[i].host, d->a.sent[i].port,
                     s ? s->errstr : "out of memory");
            if (s)
                redisFree(s);
            continue;
        }
        redisSetTimeout(s, tv_ms(d->timeout_ms));
        const char *av[3] = {"SENTINEL", "get-master-addr-by-name", d->a.master};
        redisReply *r = redisCommandArgv(s, 3, av, NULL);
        int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                 r->element[0]->type == REDIS_REPLY_STRING &&
                 r->element[1]->type == REDIS_REPLY_STRING &&
                 r->element[0]->len < sizeof(d->a.host);
        unsigned long port = ok ? strtoul(r->element[1]->str, NULL, 10) : 0;
        if (ok && port > 0 && port <= 65535) {
            memcpy(d->a.host, r->element[0]->str, r->element[0]->len);
            d->a.host[r->element[0]->len] = '\0';
            d->a.port = (uint16_t)port;
        } else {
            snprintf(why, wl, "Sentinel %.100s:%u does not know a master named %.100s",
                     d->a.sent[i].host, d->a.sent[i].port, d->a.master);
            ok = 0;
        }
        if (r)
            freeReplyObject(r);
        redisFree(s);
        if (ok && port > 0 && port <= 65535)
            return 0;
    }
    return -1;
}

/* ROLE says "master" (a Sentinel can name a master that was just demoted). */
static int is_master(const rds_t *d, redisContext *c, char *why, size_t wl)
{
    redisReply *r = redisCommand(c, "ROLE");
    int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
             r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "master") == 0;
    if (!ok)
        snprintf(why, wl,
                 "%.120s:%u, named master by the Sentinels, is not one (a failover in progress)",
                 d->a.host, d->a.port);
    if (r)
        freeReplyObject(r);
    return ok;
}

/* Connects c if it is down and its backoff is over: 0, or STORE_EIO with
 * the cause in err. */
static int conn_get(rds_t *d, rconn_t *c, char *err, size_t errlen)
{
    char why[256] = "";
    c->fresh = 0;
    if (c->c)
        return 0;
    uint64_t now = an_now_ms();
    if (now < c->retry_at_ms) {
        snprintf(err, errlen, "Redis at %s is unreachable (next try in %llu ms)", d->url,
                 (unsigned long long)(c->retry_at_ms - now));
        return STORE_EIO;
    }
    redisContext *rc = NULL;
    if (d->a.nsent && sentinel_master(d, why, sizeof(why)) < 0)
        goto fail;
    rc = d->a.unix_path[0] ? redisConnectUnixWithTimeout(d->a.unix_path, tv_ms(d->connect_ms))
                           : redisConnectWithTimeout(d->a.host, d->a.port, tv_ms(d->connect_ms));
    if (rc == NULL || rc->err) {
        snprintf(why, sizeof(why), "%s%s", d->a.nsent ? "the master: " : "",
                 rc ? rc->errstr : "out of memory");
        goto fail;
    }
    redisSetTimeout(rc, tv_ms(d->timeout_ms));
    if (!d->a.unix_path[0])
        redisEnableKeepAlive(rc);
    if (d->a.pass[0]) {
        const char *av[3] = {"AUTH", d->a.user[0] ? d->a.user : d->a.pass, d->a.pass};
        if (conn_setup_cmd(rc, d->a.user[0] ? 3 : 2, av, why, sizeof(why)) < 0)
            goto fail;
    }
    if (d->a.db) {
        char db[16];
        snprintf(db, sizeof(db), "%u", d->a.db);
        const char *av[2] = {"SELECT", db};
        if (conn_setup_cmd(rc, 2, av, why, sizeof(why)) < 0)
            goto fail;
    }
    if (d->a.nsent && !is_master(d, rc, why, sizeof(why)))
        goto fail; /* a demoted master the Sentinels still named: try again */
    c->c = rc;
    c->fresh = 1;
    c->backoff_ms = 0;
    return 0;
fail:
    if (rc)
        redisFree(rc);
    c->backoff_ms = c->backoff_ms ? AN_MIN(c->backoff_ms * 2, BACKOFF_MAX_MS) : BACKOFF_MIN_MS;
    c->retry_at_ms = now + c->backoff_ms;
    snprintf(err, errlen, "cannot connect to Redis at %s: %s", d->url, why);
    return STORE_EIO;
}

/* Runs one command on c (connecting first), once more on a fresh
 * connection if the first failed on an older one.  The reply (not an
 * error reply), or NULL with the cause in err. */
static redisReply *conn_cmd(rds_t *d, rconn_t *c, int argc, const char **argv, const size_t *argl,
                            char *err, size_t errlen)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (conn_get(d, c, err, errlen) != 0)
            return NULL;
        redisReply *r = redisCommandArgv(c->c, argc, argv, argl);
        if (r != NULL)
            return r;
        snprintf(err, errlen, "Redis at %.100s: %.120s", d->url,
                 c->c->errstr[0] ? c->c->errstr : "no answer");
        int fresh = c->fresh;
        conn_drop(c);
        if (fresh)
            break;
    }
    return NULL;
}

/* An error reply: its text in err; returns 1 for NOSCRIPT. */
static int reply_error(rds_t *d, redisReply *r, char *err, size_t errlen)
{
    snprintf(err, errlen, "Redis at %s: %.*s", d->url, (int)AN_MIN(r->len, (size_t)300), r->str);
    return r->len >= 8 && memcmp(r->str, "NOSCRIPT", 8) == 0;
}

/* EVALSHA sha (argv[1] = sha), or EVAL body after NOSCRIPT.  The reply, or
 * NULL with err. */
static redisReply *eval(rds_t *d, rconn_t *c, const char *body, const char *sha, int argc,
                        const char **argv, size_t *argl, char *err, size_t errlen)
{
    argv[0] = "EVALSHA";
    argl[0] = 7;
    argv[1] = sha;
    argl[1] = strlen(sha);
    for (int attempt = 0; attempt < 2; attempt++) {
        redisReply *r = conn_cmd(d, c, argc, argv, argl, err, errlen);
        if (r == NULL)
            return NULL;
        if (r->type != REDIS_REPLY_ERROR)
            return r;
        int noscript = reply_error(d, r, err, errlen);
        freeReplyObject(r);
        if (!noscript || attempt > 0)
            return NULL;
        argv[0] = "EVAL";
        argl[0] = 4;
        argv[1] = body;
        argl[1] = strlen(body);
    }
    return NULL;
}

static int script_load(rds_t *d, const char *body, char *sha, size_t shalen, char *err,
                       size_t errlen)
{
    const char *av[3] = {"SCRIPT", "LOAD", body};
    redisReply *r = conn_cmd(d, &d->w, 3, av, NULL, err, errlen);
    int rc = 0;
    if (r == NULL)
        return STORE_EIO;
    if (r->type == REDIS_REPLY_STRING && r->len < shalen) {
        memcpy(sha, r->str, r->len);
        sha[r->len] = '\0';
    } else {
        if (r->type == REDIS_REPLY_ERROR)
            reply_error(d, r, err, errlen);
        else
            snprintf(err, errlen, "Redis at %s: SCRIPT LOAD: unexpected answer", d->url);
        rc = STORE_EIO;
    }
    freeReplyObject(r);
    return rc;
}

/* CONFIG GET name into out ("" when refused: CONFIG may be renamed). */
static void config_get(rds_t *d, const char *name, char *out, size_t len)
{
    const char *av[3] = {"CONFIG", "GET", name};
    char err[256];
    redisReply *r = conn_cmd(d, &d->w, 3, av, NULL, err, sizeof(err));
    out[0] = '\0';
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_STRING)
        snprintf(out, len, "%s", r->element[1]->str);
    if (r)
        freeReplyObject(r);
}

/* ---- the backend ------------------------------------------------------ */

static void rds_free(rds_t *d)
{
    conn_drop(&d->w);
    conn_drop(&d->r);
    pthread_mutex_destroy(&d->rmu);
    free(d->hkey);
    free(d->zkey);
    free(d->lkey);
    free(d->skey);
    free(d->argv);
    free(d->argl);
    free(d);
}

static char *key_join(const char *prefix, const char *name, size_t *len)
{
    size_t pl = strlen(prefix), nl = strlen(name);
    char *k = an_malloc(pl + nl + 1);
    memcpy(k, prefix, pl);
    memcpy(k + pl, name, nl + 1);
    *len = pl + nl;
    return k;
}

/* One EVAL of a lock script on the writer's connection: the string it
 * answered into out, 0; or a negative error with err. */
static int lock_eval(rds_t *d, const char *body, const char *replace, char *out, size_t outlen,
                     char *err, size_t errlen)
{
    char ttl[16];
    snprintf(ttl, sizeof(ttl), "%u", LOCK_TTL_MS);
    const char *av[7] = {"EVAL", body, "1", d->lkey, d->token, ttl, replace ? replace : ""};
    size_t al[7] = {4, strlen(body), 1, d->llen, strlen(d->token), strlen(ttl), 0};
    al[6] = strlen(av[6]);
    redisReply *r = conn_cmd(d, &d->w, 7, av, al, err, errlen);
    if (r == NULL)
        return STORE_EIO;
    int rc = 0;
    if (r->type == REDIS_REPLY_ERROR) {
        reply_error(d, r, err, errlen);
        rc = STORE_EIO;
    } else if (out) {
        snprintf(out, outlen, "%.*s", r->type == REDIS_REPLY_STRING ? (int)AN_MIN(r->len, 200u) : 0,
                 r->type == REDIS_REPLY_STRING ? r->str : "");
    }
    freeReplyObject(r);
    return rc;
}

/* The holder "host:pid:..." is a process of this host that is gone (a
 * broker killed before it could let the lock go). */
static int holder_dead_here(const char *holder)
{
    char host[128], me[128];
    long pid = 0;
    if (sscanf(holder, "%127[^:]:%ld:", host, &pid) != 2 || pid <= 0)
        return 0;
    if (gethostname(me, sizeof(me)) != 0)
        return 0;
    me[sizeof(me) - 1] = '\0';
    return strcmp(host, me) == 0 && pid != (long)getpid() && kill((pid_t)pid, 0) != 0 &&
           errno == ESRCH;
}

/* Like RocksDB's LOCK file: one process at a time writes a store.  P "lock"
 * holds "host:pid:random" for LOCK_TTL_MS, renewed by every write and by
 * the committer's tick; the write script refuses to write for anyone else
 * (a process that lost the lock, e.g. paused past the TTL while another
 * took it, is fenced off).  A holder on this host whose process is gone is
 * replaced at once; one elsewhere frees the lock LOCK_TTL_MS after it
 * stopped. */
static int lock_take(rds_t *d, const char *prefix, char *err, size_t errlen)
{
    char host[128] = "", holder[256] = "", why[512];
    uint64_t rnd[2];
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "unknown");
    host[sizeof(host) - 1] = '\0';
    host[strcspn(host, ":")] = '\0';
    an_random_key(rnd);
    /* an adopter says so (store_redis_peek: the survivors wait for it) */
    snprintf(d->token, sizeof(d->token), "%.100s:%ld:%016llx%s", host, (long)getpid(),
             (unsigned long long)rnd[0], d->mark[0] ? ":adopting" : "");
    int rc = lock_eval(d, LOCK_LUA, NULL, holder, sizeof(holder), why, sizeof(why));
    if (rc == 0 && holder[0] && holder_dead_here(holder)) {
        log_warn("store: Redis at %s, prefix %s: taking the lock of %s (that process is gone)",
                 d->url, prefix, holder);
        char replaced[256];
        snprintf(replaced, sizeof(replaced), "%s", holder);
        rc = lock_eval(d, LOCK_LUA, replaced, holder, sizeof(holder), why, sizeof(why));
    }
    if (rc != 0) {
        snprintf(err, errlen, "store: %s", why);
        return rc;
    }
    if (holder[0]) {
        snprintf(err, errlen,
                 "store: Redis at %s, prefix %s: in use by %s (another broker with this node "
                 "name?); the lock frees itself %u s after that process stops",
                 d->url, prefix, holder, LOCK_TTL_MS / 1000);
        return STORE_EBUSY;
    }
    d->locked = 1;
    return 0;
}

/* A normal open, the lock taken: the state goes (a holder runs); say so
 * when survivors adopted this node's sessions while it was down. */
static void state_clear(rds_t *d, const char *prefix)
{
    const char *av[4] = {"EVAL",
                         "local v = redis.call('GET', KEYS[1]); redis.call('DEL', KEYS[1]); "
                         "return v",
                         "1", d->skey};
    char err[512];
    redisReply *r = conn_cmd(d, &d->w, 4, av, NULL, err, sizeof(err));
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        log_warn("store: Redis at %s, prefix %s: cannot clear the store's state: %s", d->url,
                 prefix, r ? r->str : err);
    if (r && r->type == REDIS_REPLY_STRING && r->len > 8 && memcmp(r->str, "adopted ", 8) == 0)
        log_warn("store: Redis at %s, prefix %s: the sessions of this node were %.*s while it "
                 "was down (docs/cluster.md): they are not resumed here",
                 d->url, prefix, (int)AN_MIN(r->len, (size_t)120), r->str);
    if (r)
        freeReplyObject(r);
}

static int rds_open(const store_opts_t *o, void **be, char *err, size_t errlen)
{
    rds_t *d = an_calloc(1, sizeof(*d));
    char why[512] = "";
    int rc;

    pthread_mutex_init(&d->rmu, NULL);
    if (o->redis_url == NULL || redis_url_parse(o->redis_url, &d->a, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "store: redis url %s", o->redis_url ? why : "missing");
        rc = STORE_EINVAL;
        goto fail;
    }
    snprintf(d->url, sizeof(d->url), "%s", d->a.display);
    d->connect_ms = o->redis_connect_timeout_ms ? o->redis_connect_timeout_ms : 2000;
    d->timeout_ms = o->redis_timeout_ms ? o->redis_timeout_ms : 5000;
    const char *prefix = o->redis_prefix ? o->redis_prefix : "antenna:default:";
    d->hkey = key_join(prefix, "data", &d->hlen);
    d->zkey = key_join(prefix, "index", &d->zlen);
    d->lkey = key_join(prefix, "lock", &d->llen);
    d->skey = key_join(prefix, "state", &d->slen);
    if (o->redis_adopted_by)
        snprintf(d->mark, sizeof(d->mark), "adopted by %s", o->redis_adopted_by);
    d->keep_state = o->redis_keep_state;
    d->min_replicas = o->redis_min_replicas;

    if ((rc = script_load(d, WRITE_LUA, d->wsha, sizeof(d->wsha), why, sizeof(why))) != 0 ||
        (rc = script_load(d, SCAN_LUA, d->ssha, sizeof(d->ssha), why, sizeof(why))) != 0) {
        snprintf(err, errlen, "store: %s", why);
        goto fail;
    }

    if ((rc = lock_take(d, prefix, err, errlen)) != 0)
        goto fail;
    if (!d->mark[0] && !d->keep_state)
        state_clear(d, prefix);

    char aof[32], fsync[32];
    config_get(d, "appendonly", aof, sizeof(aof));
    config_get(d, "appendfsync", fsync, sizeof(fsync));
    if (aof[0] == '\0')
        log_warn("store %s: CONFIG GET refused: cannot check that Redis keeps an fsynced "
                 "append-only file; acknowledged messages are as durable as Redis makes them",
                 d->url);
    else if (strcmp(aof, "yes") != 0)
        log_warn("store %s: Redis runs with appendonly %s: a Redis restart or crash loses "
                 "what the store acknowledged since its last snapshot (set appendonly yes, "
                 "appendfsync always for persistence.sync: always)",
                 d->url, aof);
    else if (o->sync == STORE_SYNC_ALWAYS && strcmp(fsync, "always") != 0)
        log_warn("store %s: persistence.sync is always but Redis runs with appendfsync %s: "
                 "Redis acknowledges before its fsync, so a crash of Redis' machine can lose "
                 "the last acknowledged writes (set appendfsync always in Redis)",
                 d->url, fsync);
    log_info("store: Redis at %s, keys %sdata and %sindex (appendonly %s, appendfsync %s)", d->url,
             prefix, prefix, aof[0] ? aof : "?", fsync[0] ? fsync : "?");
    *be = d;
    return 0;
fail:
    rds_free(d);
    return rc;
}

static int rds_write_ops(rds_t *d, store_batch_t *first, char *err, size_t errlen);

static void rds_close(void *be)
{
    rds_t *d = be;
    char err[512];
    if (d->locked) {
        const char *av[8] = {"EVAL", UNLOCK_LUA, "3", d->lkey, d->skey, d->zkey, d->token, d->mark};
        redisReply *r = conn_cmd(d, &d->w, 8, av, NULL, err, sizeof(err));
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            if (r)
                reply_error(d, r, err, sizeof(err));
            log_warn("store: %s (the lock frees itself in %u s)", err, LOCK_TTL_MS / 1000);
        }
        if (r)
            freeReplyObject(r);
    }
    rds_free(d);
}

/* The committer's tick: an empty write renews the lock (and finds out
 * that it was lost). */
static void rds_tick(void *be)
{
    rds_t *d = be;
    char err[512];
    int rc = rds_write_ops(d, NULL, err, sizeof(err));
    if (rc != 0 && !d->down)
        log_warn("store: cannot renew the store's lock: %s", err);
}

static void args_reserve(rds_t *d, size_t n)
{
    if (n <= d->argcap)
        return;
    size_t cap = AN_MAX(n, d->argcap * 2);
    d->argv = an_realloc(d->argv, cap * sizeof(*d->argv));
    d->argl = an_realloc(d->argl, cap * sizeof(*d->argl));
    d->argcap = cap;
}

static void arg(rds_t *d, size_t *n, const void *p, size_t len)
{
    d->argv[*n] = p;
    d->argl[*n] = len;
    (*n)++;
}

/* persistence.redis.min_replicas: WAIT until that many replicas have the
 * group (a failover to one of them then keeps it), at most timeout_ms.
 * Fewer: the group fails, as for a failed fsync (it stays applied on the
 * master; a retry rewrites the same values). */
static int wait_replicas(rds_t *d, char *err, size_t errlen)
{
    char n[16], ms[16];
    snprintf(n, sizeof(n), "%u", d->min_replicas);
    snprintf(ms, sizeof(ms), "%u", d->timeout_ms);
    const char *av[3] = {"WAIT", n, ms};
    redisReply *r = conn_cmd(d, &d->w, 3, av, NULL, err, errlen);
    if (r == NULL)
        return -1;
    long long got = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    if (got >= (long long)d->min_replicas)
        return 0;
    snprintf(err, errlen, "Redis at %s: %lld of %u replicas acknowledged within %u ms", d->url,
             got < 0 ? 0 : got, d->min_replicas, d->timeout_ms);
    return -1;
}

/* The group first..NULL (NULL: none, the lock renewed only) in one
 * EVALSHA of WRITE_LUA. */
static int rds_write_ops(rds_t *d, store_batch_t *first, char *err, size_t errlen)
{
    size_t nops = 0, n = 0;
    char ttl[16];
    snprintf(ttl, sizeof(ttl), "%u", LOCK_TTL_MS);

    for (store_batch_t *b = first; b; b = b->next)
        if (b->err == 0)
            nops += b->nops;
    args_reserve(d, 8 + 3 * nops);
    n = 2; /* EVALSHA sha: set by eval() */
    arg(d, &n, "3", 1);
    arg(d, &n, d->hkey, d->hlen);
    arg(d, &n, d->zkey, d->zlen);
    arg(d, &n, d->lkey, d->llen);
    arg(d, &n, d->token, strlen(d->token));
    arg(d, &n, ttl, strlen(ttl));
    for (store_batch_t *b = first; b; b = b->next) {
        store_op_t op;
        size_t off = 0;
        if (b->err)
            continue;
        while (store__batch_next(b, &off, &op)) {
            arg(d, &n, op.op == STORE_OP_PUT ? "P" : op.op == STORE_OP_DEL ? "D" : "X", 1);
            arg(d, &n, op.kl ? (const char *)op.k : "", op.kl);
            if (op.op == STORE_OP_PUT)
                arg(d, &n, op.vl ? (const char *)op.v : "", op.vl);
        }
    }
    redisReply *r = eval(d, &d->w, WRITE_LUA, d->wsha, (int)n, d->argv, d->argl, err, errlen);
    if (r == NULL) {
        if (strstr(err, "ANTENNALOCK") != NULL) {
            log_limited(10000, AN_LOG_ERROR,
                        "store: Redis at %s: this broker lost the store's lock to another "
                        "process: nothing is written (%s)",
                        d->url, err);
            return STORE_EBUSY;
        }
        d->down = 1;
        return STORE_EIO;
    }
    freeReplyObject(r);
    if (d->min_replicas && first && wait_replicas(d, err, errlen) != 0) {
        d->down = 1;
        return STORE_EIO;
    }
    if (d->down)
        log_info("store: Redis at %s answers again", d->url);
    d->down = 0;
    return 0;
}

static int rds_write(void *be, store_batch_t *first, int sync, char *err, size_t errlen)
{
    (void)sync; /* Redis' appendfsync decides; see the header comment */
    return rds_write_ops(be, first, err, errlen);
}

static int rds_sync(void *be, char *err, size_t errlen)
{
    (void)be, (void)err, (void)errlen;
    return 0; /* Redis fsyncs its AOF on its own schedule (appendfsync) */
}

static int rds_get(void *be, const void *k, size_t kl, void **val, size_t *vl)
{
    rds_t *d = be;
    char err[512];
    const char *av[3] = {"HGET", d->hkey, kl ? k : ""};
    size_t al[3] = {4, d->hlen, kl};
    int rc;

    pthread_mutex_lock(&d->rmu);
    redisReply *r = conn_cmd(d, &d->r, 3, av, al, err, sizeof(err));
    pthread_mutex_unlock(&d->rmu);
    if (r == NULL) {
        log_error("store: %s", err);
        return STORE_EIO;
    }
    if (r->type == REDIS_REPLY_NIL) {
        rc = STORE_ENOTFOUND;
    } else if (r->type == REDIS_REPLY_STRING) {
        uint8_t *v = an_malloc(r->len + 1);
        memcpy(v, r->str, r->len);
        v[r->len] = '\0';
        *val = v;
        *vl = r->len;
        rc = 0;
    } else {
        if (r->type == REDIS_REPLY_ERROR)
            reply_error(d, r, err, sizeof(err));
        else
            snprintf(err, sizeof(err), "Redis at %s: HGET: unexpected answer", d->url);
        log_error("store: %s", err);
        rc = STORE_EIO;
    }
    freeReplyObject(r);
    return rc;
}

static int rds_scan(void *be, const void *prefix, size_t len, store_scan_fn cb, void *ud)
{
    rds_t *d = be;
    char err[512], page[16];
    uint8_t *lo = an_malloc(len + 1); /* "[prefix", then "(last key" */
    size_t lol = len + 1;
    int rc = 0;

    lo[0] = '[';
    if (len)
        memcpy(lo + 1, prefix, len);
    snprintf(page, sizeof(page), "%d", SCAN_PAGE);
    for (;;) {
        const char *av[8] = {NULL, NULL, "2", d->hkey, d->zkey, (const char *)lo, len ? prefix : "",
                             page};
        size_t al[8] = {0, 0, 1, d->hlen, d->zlen, lol, len, strlen(page)};
        if (len == 0 && lo[0] == '[') { /* everything: from the first key */
            av[5] = "-";
            al[5] = 1;
        }
        pthread_mutex_lock(&d->rmu);
        redisReply *r = eval(d, &d->r, SCAN_LUA, d->ssha, 8, av, al, err, sizeof(err));
        pthread_mutex_unlock(&d->rmu);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
            if (r)
                snprintf(err, sizeof(err), "Redis at %s: scan: unexpected answer", d->url);
            log_error("store: %s", err);
            if (r)
                freeReplyObject(r);
            rc = STORE_EIO;
            break;
        }
        size_t nel = r->elements;
        for (size_t i = 0; rc == 0 && i + 1 < nel; i += 2)
            rc = cb(ud, r->element[i]->str, r->element[i]->len, r->element[i + 1]->str,
                    r->element[i + 1]->len);
        if (rc == 0 && nel == 2 * SCAN_PAGE) {
            const redisReply *last = r->element[nel - 2];
            lo = an_realloc(lo, last->len + 1);
            lo[0] = '(';
            memcpy(lo + 1, last->str, last->len);
            lol = last->len + 1;
        }
        freeReplyObject(r);
        if (rc != 0 || nel < 2 * SCAN_PAGE)
            break;
    }
    free(lo);
    return rc;
}

static int rds_compact(void *be, const void *prefix, size_t len)
{
    (void)be, (void)prefix, (void)len;
    return 0; /* Redis frees memory itself */
}

const store_backend_t store__redis_backend = {
    .name = "redis",
    .durable = 1,
    .open = rds_open,
    .close = rds_close,
    .write = rds_write,
    .sync = rds_sync,
    .get = rds_get,
    .scan = rds_scan,
    .compact = rds_compact,
    .tick = rds_tick,
    .tick_ms = LOCK_TICK_MS,
};

/* ---- store_redis_peek (store.h) ---------------------------------------- */

/* A handle for one look at a Redis, outside any open store (the adopter's
 * peeks and scans): NULL with *rc and err set when the url is bad. */
static rds_t *oneshot_new(const char *url, uint32_t timeout_ms, int *rc, char *err, size_t errlen)
{
    rds_t *d = an_calloc(1, sizeof(*d));
    char why[512] = "";
    pthread_mutex_init(&d->rmu, NULL);
    if (redis_url_parse(url, &d->a, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "redis url %s", why);
        *rc = STORE_EINVAL;
        rds_free(d);
        return NULL;
    }
    snprintf(d->url, sizeof(d->url), "%s", d->a.display);
    d->connect_ms = d->timeout_ms = timeout_ms ? timeout_ms : 2000;
    return d;
}

int store_redis_scan_keys(const char *url, const char *pattern, uint32_t timeout_ms,
                          uint32_t max_pages, void (*fn)(void *arg, const char *key, size_t len),
                          void *arg, char *err, size_t errlen)
{
    char why[512] = "", cursor[32] = "0";
    int rc = STORE_EIO;
    rds_t *d = oneshot_new(url, timeout_ms, &rc, err, errlen);
    if (d == NULL)
        return rc;
    for (uint32_t page = 0; page < max_pages; page++) {
        const char *av[6] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"};
        redisReply *r = conn_cmd(d, &d->w, 6, av, NULL, why, sizeof(why));
        if (r == NULL) {
            snprintf(err, errlen, "%s", why);
            goto done;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len >= sizeof(cursor) ||
            r->element[1]->type != REDIS_REPLY_ARRAY) {
            if (r->type == REDIS_REPLY_ERROR)
                reply_error(d, r, err, errlen);
            else
                snprintf(err, errlen, "Redis at %s: scan: unexpected answer", d->url);
            freeReplyObject(r);
            goto done;
        }
        memcpy(cursor, r->element[0]->str, r->element[0]->len);
        cursor[r->element[0]->len] = '\0';
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            const redisReply *k = r->element[1]->element[i];
            if (k->type == REDIS_REPLY_STRING)
                fn(arg, k->str, k->len);
        }
        freeReplyObject(r);
        if (strcmp(cursor, "0") == 0) {
            rc = 0;
            break;
        }
    }
    if (rc != 0)
        snprintf(err, errlen, "Redis at %s: scan: more than %u pages", d->url, max_pages);
done:
    rds_free(d);
    return rc;
}

int store_redis_peek(const char *url, const char *prefix, uint32_t timeout_ms,
                     store_redis_peek_t *out, char *err, size_t errlen)
{
    char why[512] = "";
    int rc = STORE_EIO;

    memset(out, 0, sizeof(*out));
    rds_t *d = oneshot_new(url, timeout_ms, &rc, err, errlen);
    if (d == NULL)
        return rc;
    d->lkey = key_join(prefix, "lock", &d->llen);
    d->skey = key_join(prefix, "state", &d->slen);
    d->zkey = key_join(prefix, "index", &d->zlen);
    const char *av[6] = {"EVAL", PEEK_LUA, "3", d->lkey, d->skey, d->zkey};
    redisReply *r = conn_cmd(d, &d->w, 6, av, NULL, why, sizeof(why));
    if (r == NULL) {
        snprintf(err, errlen, "%s", why);
        goto done;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
        r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING &&
        r->element[2]->type == REDIS_REPLY_INTEGER) {
        snprintf(out->holder, sizeof(out->holder), "%.*s",
                 (int)AN_MIN(r->element[0]->len, sizeof(out->holder) - 1), r->element[0]->str);
        snprintf(out->state, sizeof(out->state), "%.*s",
                 (int)AN_MIN(r->element[1]->len, sizeof(out->state) - 1), r->element[1]->str);
        out->has_sessions = r->element[2]->integer > 0;
        out->holder_gone = out->holder[0] && holder_dead_here(out->holder);
        out->adopting = strstr(out->holder, ":adopting") != NULL;
        rc = 0;
    } else {
        if (r->type == REDIS_REPLY_ERROR)
            reply_error(d, r, err, errlen);
        else
            snprintf(err, errlen, "Redis at %s: peek: unexpected answer", d->url);
    }
    freeReplyObject(r);
done:
    rds_free(d);
    return rc;
}
