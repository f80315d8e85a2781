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
 * Shutdown: cl_etcd_free() stops and joins the thread, then calls done()
 * with CL_ETCD_ECANCELLED for every request not answered yet, on the
 * calling thread; no callback runs after it returns.
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
} cl_etcd_opts_t;

typedef struct {
    uint64_t requests; /* sent (each try) */
    uint64_t errors;   /* ended with an error other than CL_ETCD_ECANCELLED */
    uint64_t failovers;
} cl_etcd_stats_t;

/* A client with its thread running, or NULL with err set. */
cl_etcd_t *cl_etcd_new(const cl_etcd_opts_t *o, char *err, size_t errlen);
void cl_etcd_free(cl_etcd_t *e);

/* POST body (the reference is taken, also on failure) to path; done() is
 * called once (timeout_ms 0: the client's default).  Any thread.  Returns
 * 0, or -1 when the client is stopping (done() is not called). */
int cl_etcd_call(cl_etcd_t *e, const char *path, json_t *body, uint32_t timeout_ms,
                 cl_etcd_done_fn done, void *arg);
/* A stream: msg() per message, then done() once.  Returns an id (> 0) for
 * cl_etcd_cancel, or 0 when the client is stopping. */
uint64_t cl_etcd_stream(cl_etcd_t *e, const char *path, json_t *body, cl_etcd_msg_fn msg,
                        cl_etcd_done_fn done, void *arg);
/* End stream id (etcd thread only): done(CL_ETCD_ECANCELLED) follows at the
 * next turn of the loop.  An id already ended is ignored. */
void cl_etcd_cancel(cl_etcd_t *e, uint64_t id);

void cl_etcd_stats(cl_etcd_t *e, cl_etcd_stats_t *out);

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
