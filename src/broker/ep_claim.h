/* ep_claim.h -- a gateway's endpoint claims a device's session on its home
 * worker: what proto.c's connect_home does for an MQTT CONNECT, for the
 * endpoints that are not MQTT connections (the HTTP downlink's request,
 * the CoAP gateway's /cmd observation; endpoint.h).
 *
 * Two steps, both on the session's home worker:
 *   ep_claim()         the session of the client id: found (its ACL
 *                      re-judged for the new client: sess_acl_claim),
 *                      taken over from the endpoint that holds it
 *                      (client_disconnected and session_taken_over for it,
 *                      then its close with EP_CLOSE_TAKEN_OVER), an MQTT
 *                      clean session dropped, or created
 *                      (session_created); limits.max_sessions is kept.
 *                      Then the configured filters ("{id}": the client
 *                      id), each judged by the ACL for subscribe, are
 *                      subscribed (subscribed events).
 *   ep_claim_attach()  the endpoint attached (sess_attach: the in-flight
 *                      window again with dup, the queue), the session
 *                      stored, the retained messages of the new filters
 *                      sent, client_connected.
 * Between the two the owner binds the session to its endpoint (the pointer
 * its close() clears), so that deliveries made by sess_attach find it.
 */
#ifndef ANTENNA_EP_CLAIM_H
#define ANTENNA_EP_CLAIM_H

#include <stdint.h>

#include "endpoint.h"
#include "server.h"
#include "sess.h"

struct auth_client;

#define EP_CLAIM_MAX_FILTERS 8
#define EP_CLAIM_FILTER_LEN 512

typedef struct {
    const char *id;             /* the client id, NUL-terminated */
    uint32_t expiry;            /* the session's expiry, seconds */
    const char *const *filters; /* templates: "{id}" is the client id */
    uint32_t nfilters;          /* at most EP_CLAIM_MAX_FILTERS */
    struct auth_client *ac;     /* the client the subscribe ACL judges */
    const char *kind;           /* "http", "coap": log lines, takeover text */
} ep_claim_t;

typedef struct {
    sess_t *s;       /* the session claimed */
    int present;     /* it existed before */
    int took_over;   /* another endpoint held it (now closed) */
    uint32_t nadded; /* filters subscribed now, in added[] */
    char added[EP_CLAIM_MAX_FILTERS][EP_CLAIM_FILTER_LEN];
} ep_claimed_t;

/* A filter template of a gateway's configuration: a topic filter once
 * "{id}" is a device id (and not a shared subscription)? 1 or 0. */
int ep_claim_template_ok(const char *t);
/* 0 with *out filled, or -1: limits.max_sessions persistent sessions
 * exist (logged). */
int ep_claim(worker_t *w, endpoint_t *ep, const ep_claim_t *o, ep_claimed_t *out);
/* ep attached to out->s; `mine` is the owner's pointer to the session,
 * which its close() clears: once NULL (the endpoint ended while the
 * retained messages went out) nothing more is done.  Returns 1 while
 * still attached, 0 when it ended. */
int ep_claim_attach(worker_t *w, endpoint_t *ep, const ep_claimed_t *out, sess_t *const *mine);

#endif
