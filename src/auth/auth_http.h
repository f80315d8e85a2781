/* auth_http.h -- the webhook backend ("http"): each decision is a POST of
 * the request as JSON to auth.http.url, answered asynchronously.
 *
 * check() answers at once from the result cache when it can; otherwise it
 * copies the request into a job and submits its POST to the backend's HTTP
 * client (src/net/httpc.h, bounded by auth.http.queue_size) and returns
 * AUTH_PENDING.  The client's one I/O thread drives libcurl's multi
 * interface: it owns every transfer and the connection cache (at most
 * pool_size keep-alive connections to the webhook, never one per request)
 * and the backend's callback calls done() once per job there.  See
 * auth_http.c for the wire format.
 */
#ifndef ANTENNA_AUTH_HTTP_H
#define ANTENNA_AUTH_HTTP_H

#include "auth.h"
#include "../core/conf.h"

#include <stddef.h>
#include <stdint.h>

/* Counters, each read without locks (approximate while traffic flows). */
typedef struct {
    uint64_t requests;                 /* POSTs sent */
    uint64_t cache_hits;               /* answered from the cache */
    uint64_t allowed, denied, ignored; /* answers from the webhook */
    uint64_t errors;                   /* webhook down, bad status, garbage body, timeout */
    uint64_t timeouts;                 /* of which timeouts */
    uint64_t queue_full;               /* refused at once: too many requests waiting */
} auth_http_stats_t;

/* Start the backend and its thread from c->auth_http (listener names are
 * taken from c->listeners).  NULL with err set when the URL is missing or
 * not http(s), or libcurl cannot start. */
auth_backend_t *auth_http_new(const conf_t *c, char *err, size_t errlen);

/* The webhook's answer (see auth_http.c for the rules): 0 with *v (ALLOW,
 * DENY or PASS) and *acl_text (the rule lines of an allow, malloc'd, or
 * NULL), or -1 with *why (static text).  Pure: the fuzz target calls it. */
int auth_http_parse_answer(uint8_t format, long status, const char *body, size_t len,
                           auth_verdict_t *v, char **acl_text, const char **why);

/* b must be a backend made by auth_http_new(). */
void auth_http_stats(auth_backend_t *b, auth_http_stats_t *out);

#endif
