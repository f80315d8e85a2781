/* auth_stats.h -- the auth backends' answers to CONNECT, counted per
 * backend kind, and how long each took: per-worker counters (a member of
 * worker_stats_t) read by /metrics.
 *
 * Counted by backend kind (its name: "password_file", "jwt", ...), not by
 * position in the chain, so the series stay the same when a reload
 * rebuilds the chain.  A synchronous backend's answer is counted by the
 * chain on the worker that asked (auth_request_t.stats); an asynchronous
 * one (HTTP, Redis) when the worker takes the answer from its inbox, with
 * the time from the question to the backend's done() (auth_wait_t).  One
 * writer per worker: plain relaxed stores (util.h STAT_ADD), no lock.
 * Nothing is counted for PUBLISH/SUBSCRIBE checks (they never wait).
 */
#ifndef ANTENNA_AUTH_STATS_H
#define ANTENNA_AUTH_STATS_H

#include <string.h>

#include "auth.h"
#include "util.h"

enum {
    AUTH_KIND_PASSWORD_FILE = 0,
    AUTH_KIND_JWT,
    AUTH_KIND_HTTP,
    AUTH_KIND_REDIS,
    AUTH_KIND_CERT,
    AUTH_KIND_OTHER, /* a backend added later under another name */
    AUTH_KINDS
};

/* answers[kind][i]: i = 0 allow, 1 deny, 2 pass */
typedef struct auth_stats {
    an_counter_t answers[AUTH_KINDS][3];
    an_hist_t latency[AUTH_KINDS];
} auth_stats_t;

static inline const char *auth_kind_name(unsigned k)
{
    static const char *const names[AUTH_KINDS] = {"password_file", "jwt",  "http",
                                                  "redis",         "cert", "other"};
    return k < AUTH_KINDS ? names[k] : "other";
}

static inline unsigned auth_kind_of(const char *name)
{
    for (unsigned k = 0; k < AUTH_KIND_OTHER; k++)
        if (name && strcmp(name, auth_kind_name(k)) == 0)
            return k;
    return AUTH_KIND_OTHER;
}

/* Count one answer of backend `name` that took `us` microseconds. */
static inline void auth_stats_add(auth_stats_t *st, const char *name, auth_verdict_t v, uint64_t us)
{
    if (st == NULL)
        return;
    unsigned k = auth_kind_of(name);
    STAT_ADD(st->answers[k][v == AUTH_ALLOW ? 0 : v == AUTH_DENY ? 1 : 2], 1);
    an_hist_add(&st->latency[k], us);
}

#endif
