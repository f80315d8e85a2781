/* cl_etcd.h -- an asynchronous etcd v3 client over etcd's JSON gateway
 * (docs/cluster.md), for the cluster's membership and, later, the client-id
 * registry.
 *
 * One thread, "the etcd thread", drives a libcurl multi handle: many
 * requests in flight, keep-alive connections reused, each request with its
 * own timeout.  Any thread queues a request (cl_etcd_call, cl_etcd_stream);
 * every answer comes back by callback on the etcd thread, which must not
 * block.  A callback may queue more requests; they start at the next turn
 * of the loop.
 *
 * Endpoints: cluster.etcd, comma-separated.  Requests go to the current
 * one; a request that cannot reach it (connect error, reset, timeout) moves
 * the client to the next one and is sent again there, until every endpoint
 * was tried once; then it fails.
 *
 * Unary calls (cl_etcd_call): a POST of a JSON body to a gateway path
 * ("/v3/kv/range", ...); done() gets the parsed answer.  Streams
 * (cl_etcd_stream, for "/v3/watch"): each newline-terminated JSON message
 * goes to msg() as it arrives; done() is called once when the stream ends,
 * for whatever reason (etcd closed it, an error, cl_etcd_cancel).
 *
 * The tick: opts.tick(client, opts.tick_arg) runs on the etcd thread at least every
 * tick_ms, so that its user keeps its timers (keep-alives, retries) there
 * without a thread of its own.
 *
 * Batched txns (cl_etcd_create, cl_etcd_delete_if, cl_etcd_txn; the
 * client-id registry's): a txn queued from any thread waits on the batch
 * queue; at the start of each loop turn the etcd thread sends what waits
 * there as ONE etcd txn (at most CL_ETCD_BATCH_MAX txns in it, never two on
 * one key), while fewer than CL_ETCD_BATCHES_INFLIGHT batches are in
 * flight (fewer while etcd answers slowly, none while cl_etcd_hold says so:
 * the keep-alive first).  So a txn alone leaves at once, and under load the batches grow
 * by themselves (with the txns that wait for a free slot) instead of etcd
 * seeing one request per txn: etcd's request rate was the limit of the
 * CONNECT rate with the registry (docs/benchmarks.md).  Creates and
 * conditional deletes are "flat", the others nested.  The batch, one etcd
 * write:
 *   compare: each flat txn's compare (create_revision(k) = 0; value(k) =
 *            this node);
 *   success: each flat txn's op (put k under the lease; delete k), then
 *            each other txn as a nested txn (its own compares; atomic on
 *            its own);
 *   failure: the same nested txns.
 * Every flat compare holds (the common case: absent keys claimed, our own
 * keys released): all done by one write.  Else none is, and every flat txn
 * of the batch goes back to the head of the queue as a nested txn ("create
 * if absent, else range"; "delete if ours"), which no other key can make
 * fail: at most two batches per txn.  After such a failure the flat txns
 * go nested until a batch of them mostly (7 in 8) held, so that a run of
 * reconnects (keys that exist) costs one try each.  Flat creates have no
 * failure ranges: etcd's JSON gateway parses a third less (etcd's cost per
 * create was about 40 us flat, 55 with the ranges, 75 nested, on the
 * development machine).  etcd counts the batch's txns (plus one when some
 * are nested) against --max-txn-ops (default 128).
 *
 * Shutdown: cl_etcd_free() stops and joins the thread, then calls done()
 * with CL_ETCD_ECANCELLED for every request not answered yet (batched txns
 * too), on the calling thread; no callback runs after it returns.
 *
 * The request builders and answer readers below are pure functions (any
 * thread; unit-tested in tests/unit/test_cl_etcd.c).  etcd's JSON carries
 * keys and values in base64 and 64-bit integers as strings.
 */
#ifndef ANTENNA_CL_ETCD_H
#define ANTENNA_CL_ETCD_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef struct cl_etcd cl_etcd_t;

typedef enum {
    CL_ETCD_OK = 0,     /* HTTP 200 with a JSON object */
    CL_ETCD_ESTATUS,    /* another status (json: etcd's error object, if any) */
    CL_ETCD_ECONNECT,   /* no endpoint could be reached, or the connection broke */
    CL_ETCD_ETIMEOUT,   /* the request's timeout passed */
    CL_ETCD_EPARSE,     /* the answer is not JSON */
    CL_ETCD_ECANCELLED, /* cl_etcd_cancel or cl_etcd_free */
} cl_etcd_err_t;

typedef struct {
    cl_etcd_err_t err;
    long status;       /* HTTP status, 0 when none */
    json_t *json;      /* the answer (borrowed: valid during the callback), or NULL */
    const char *error; /* why, for a log line; "" with CL_ETCD_OK */
} cl_etcd_res_t;

typedef void (*cl_etcd_done_fn)(void *arg, const cl_etcd_res_t *res);
typedef void (*cl_etcd_msg_fn)(void *arg, json_t *msg);

typedef struct {
    const char *endpoints;                 /* "http://h:p,http://h2:p2" */
    uint32_t timeout_ms;                   /* a unary call's default timeout */
    uint32_t tick_ms;                      /* 0: no tick */
    void (*tick)(cl_etcd_t *e, void *arg); /* e: the client, also before cl_etcd_new returns */
    void *tick_arg;
    /* after the done() calls of one batch (cl_etcd_txn, cl_etcd_create),
     * on the etcd thread (or cl_etcd_free's): their users flush what they
     * gathered meanwhile (the registry posts its answers to each worker
     * at once).  NULL: none. */
    void (*batch_end)(void *arg);
    void *batch_end_arg;
} cl_etcd_opts_t;

/* Batched txns (cl_etcd_txn): at most this many in one request, and this
 * many such requests in flight, halved when etcd answers a batch in
 * CL_ETCD_SLOW_MS or more (back up by one per answer in under half of
 * that): etcd renews a lease only once it applied what it committed before
 * (waiting 1 s at most, else HTTP 503), so a queue of writes in etcd that
 * long costs the members their keep-alives. */
#define CL_ETCD_BATCH_MAX 120
#define CL_ETCD_BATCHES_INFLIGHT 4
#define CL_ETCD_SLOW_MS 1000

typedef struct {
    uint64_t requests; /* sent (each try) */
    uint64_t errors;   /* ended with an error other than CL_ETCD_ECANCELLED */
    uint64_t failovers;
    uint64_t batches; /* batch requests (cl_etcd_txn) started */
    uint64_t batched; /* txns sent in them */
    uint64_t retried; /* batches whose creates failed (sent again, nested) */
    uint64_t held;    /* times the batches were held for a keep-alive (cl_etcd_hold) */
    uint64_t slow;    /* times a slow answer cut the window to one batch in flight */
} cl_etcd_stats_t;

/* A client with its thread running, or NULL with err set. */
cl_etcd_t *cl_etcd_new(const cl_etcd_opts_t *o, char *err, size_t errlen);
void cl_etcd_free(cl_etcd_t *e);

/* POST body (the reference is taken, also on failure) to path; done() is
 * called once (timeout_ms 0: the client's default).  Any thread.  Returns
 * 0, or -1 when the client is stopping (done() is not called). */
int cl_etcd_call(cl_etcd_t *e, const char *path, json_t *body, uint32_t timeout_ms,
                 cl_etcd_done_fn done, void *arg);
/* A txn (one of the builders' below: compare, success, failure) on key,
 * sent in a batch (see the top); the reference to body is taken, also on
 * failure.  done() is called once, on the etcd thread, with this txn's own
 * answer (a nested txn's answer has a txn answer's shape: cl_etcd_txn_ok,
 * cl_etcd_txn_kv) or the batch's error.  Two txns on one key never share a
 * batch: the later one waits for the next.  Any thread.  Returns 0, or -1
 * when the client is stopping (done() is not called). */
int cl_etcd_txn(cl_etcd_t *e, const char *key, json_t *body, cl_etcd_done_fn done, void *arg);
/* The same for a create: put key = value under lease if the key does not
 * exist, else read it (cl_etcd_create_req's txn), flat in a batch (see the
 * top).  done()'s answer: {"succeeded":true}, or, from the nested
 * txn, a txn answer (failed: the key's range, cl_etcd_txn_kv). */
int cl_etcd_create(cl_etcd_t *e, const char *key, const char *value, int64_t lease,
                   cl_etcd_done_fn done, void *arg);
/* The same for "delete key if its value is `value`" (cl_etcd_del_if_value_req's
 * txn), flat in a batch like a create: {"succeeded":true} when deleted. */
int cl_etcd_delete_if(cl_etcd_t *e, const char *key, const char *value, cl_etcd_done_fn done,
                      void *arg);
/* A stream: msg() per message, then done() once.  Returns an id (> 0) for
 * cl_etcd_cancel, or 0 when the client is stopping. */
uint64_t cl_etcd_stream(cl_etcd_t *e, const char *path, json_t *body, cl_etcd_msg_fn msg,
                        cl_etcd_done_fn done, void *arg);
/* End stream id (etcd thread only): done(CL_ETCD_ECANCELLED) follows at the
 * next turn of the loop.  An id already ended is ignored. */
void cl_etcd_cancel(cl_etcd_t *e, uint64_t id);

void cl_etcd_stats(cl_etcd_t *e, cl_etcd_stats_t *out);

/* Etcd thread only (a done() or the tick): no batch starts for the next ms
 * milliseconds (0: they go on now); requests of cl_etcd_call are not held.
 * The membership holds the registry's batches while its keep-alive fails,
 * so that etcd's queue drains and the lease is renewed before more claims
 * are written (docs/cluster.md "Membership"). */
void cl_etcd_hold(cl_etcd_t *e, uint32_t ms);

/* ---- building requests, reading answers (pure) ---- */

/* The end of the range of every key starting with prefix (the prefix with
 * its last byte plus one), into out; -1 when it does not fit. */
int cl_etcd_prefix_end(const char *prefix, char *out, size_t cap);
/* {"key":..,"range_end":..}; range_end NULL: the key alone. */
json_t *cl_etcd_range_req(const char *key, const char *range_end);
/* {"key":..,"value":..,"lease":..}; lease 0: none. */
json_t *cl_etcd_put_req(const char *key, const char *value, int64_t lease);
/* Put if absent: a txn that puts key = value under lease when the key does
 * not exist, else reads it (cl_etcd_txn_ok, cl_etcd_txn_kv). */
json_t *cl_etcd_create_req(const char *key, const char *value, int64_t lease);
/* Put if the key is held by lease `held_by` (a compare on its lease). */
json_t *cl_etcd_put_if_lease_req(const char *key, const char *value, int64_t lease,
                                 int64_t held_by);
/* Put if the key's mod_revision is still mod_rev (else read it). */
json_t *cl_etcd_put_if_mod_req(const char *key, const char *value, int64_t lease, int64_t mod_rev);
/* Delete the key if its value is `value`. */
json_t *cl_etcd_del_if_value_req(const char *key, const char *value);
/* {"create_request":{"key","range_end","start_revision"}} for /v3/watch. */
json_t *cl_etcd_watch_req(const char *key, const char *range_end, int64_t start_revision);
/* {"ID":id} (lease keepalive and revoke), {"TTL":ttl_s} (grant). */
json_t *cl_etcd_lease_req(int64_t id);
json_t *cl_etcd_grant_req(uint32_t ttl_s);

/* A batch's txn, serialized: a nested txn (cmp_len 0: text is the whole
 * txn), or a flat one ("<compare><op><failure op>", the first two's
 * lengths; the ops are RequestOp objects: {"request_put":..}). */
typedef struct {
    const char *text;
    size_t len, cmp_len, req_len;
} cl_etcd_part_t;
/* A flat create's part (cl_etcd_create: compare create_revision = 0, put
 * key = value under lease, failure: range key) and a flat delete-if's
 * (cl_etcd_delete_if: compare value = value, delete key, no failure op),
 * written without jansson (one per CONNECT, on the worker): malloc'd, NUL
 * terminated, the same JSON as the builders above give. */
cl_etcd_part_t cl_etcd_create_part(const char *key, const char *value, int64_t lease);
cl_etcd_part_t cl_etcd_delete_if_part(const char *key, const char *value);
/* The body of a batch (the top): parts[0..ncreate) flat, the rest nested
 * txns; malloc'd, NUL terminated, its length in *len. */
char *cl_etcd_batch_body(const cl_etcd_part_t *parts, uint32_t ncreate, uint32_t n, size_t *len);
/* The batch answer's i-th response if it is a nested txn's answer
 * (response_txn), else NULL. */
const json_t *cl_etcd_batch_txn(const json_t *answer, uint32_t i);

/* A 64-bit integer member of obj (etcd writes them as strings; missing: 0). */
int64_t cl_etcd_int(const json_t *obj, const char *name);
/* The header's revision of an answer (or a watch message's "result"). */
int64_t cl_etcd_revision(const json_t *answer);
/* A txn answer: 1 when its compares held. */
int cl_etcd_txn_ok(const json_t *answer);
/* The first kv of a txn's failure branch range, or NULL. */
const json_t *cl_etcd_txn_kv(const json_t *answer);
/* A kv object ({"key","value","lease"}): the key and the value decoded from
 * base64 and NUL terminated.  Returns 0, or -1 when either is missing (a
 * DELETE event has no value: pass val NULL), not base64, or too long. */
int cl_etcd_kv(const json_t *kv, char *key, size_t keycap, char *val, size_t valcap);

#endif
