/* sess_acl.h -- authorization at delivery: what a session's client may read.
 *
 * SUBSCRIBE judges a filter for the client (auth_chain_acl): ALLOW (every
 * topic it can match may be read), PARTIAL (some may) or DENY (refused).
 * The verdict stays with the subscription (sess_sub_t.acl), and the session
 * keeps the ACL generation its verdicts were taken under (sess_t.acl_gen,
 * one for all its subscriptions) and whether any is not ALLOW (acl_check).
 * A message for a connected session is then:
 *   - sent without a check when the generation is current and acl_check is
 *     clear: one comparison, the steady state;
 *   - when the generation moved (SIGHUP reloaded the ACL): every
 *     subscription is judged again for the connected client, once, and the
 *     queued messages it may no longer read are dropped;
 *   - when acl_check is set: its topic is checked as a read (with the
 *     per-connection decision cache of auth_chain.c) and dropped if denied.
 * A subscription judged DENY stays (a later reload may allow it again) but
 * delivers nothing: none of its topics passes the check.  Dropped messages
 * count in acl_denied.
 *
 * The topic guards (router.h: the $cmd and $shadow prefixes) take part the
 * same way: a subscription a guard refuses (restored from the store, or
 * taken before the guard's module was enabled) is judged PARTIAL, and each
 * message is then also asked of the guards; SUBSCRIBE refuses such filters
 * outright (proto.c), so only old subscriptions take this path.
 *
 * Offline sessions queue without a check.  A client that resumes a session
 * (sess_acl_attach) has its subscriptions judged for it, and the queued and
 * inflight messages it may not read are dropped before anything is sent.
 *
 * Owner: the session records the user of the client that created or last
 * resumed it (persisted with the session).  A CONNECT by another user with
 * the same client id, which takes over or discards the session, is logged
 * and counted (takeovers_other_user); auth.client_id_binding can refuse it
 * instead (proto.c).
 *
 * Home worker only, like the session.  The rules themselves are swapped by
 * the main thread on SIGHUP and read under the chain's lock (auth_chain.c).
 */
#ifndef ANTENNA_SESS_ACL_H
#define ANTENNA_SESS_ACL_H

#include "auth_chain.h"
#include "sess.h"

/* The slow path of sess_acl_may_read. */
int sess_acl_check(worker_t *w, sess_t *s, const msg_t *m);

/* 1 when the session's connected client may read m; 0: drop it (counted). */
static inline int sess_acl_may_read(worker_t *w, sess_t *s, const msg_t *m)
{
    if (!s->acl_check && s->acl_gen == auth_chain_gen(w->srv->auth))
        return 1;
    return sess_acl_check(w, s, m);
}

/* SUBSCRIBE granted filter (as subscribed, "$share/..." included) with
 * `verdict` (AUTH_ACL_ALLOW or _PARTIAL) taken under generation gen. */
void sess_acl_subscribed(sess_t *s, const uint8_t *filter, uint16_t len, int verdict, uint32_t gen);

/* Endpoint ep claims the existing session s (an MQTT CONNECT with its
 * client id, before a takeover or a clean start discards anything): when
 * ep's user (its describe()) is not the session's owner, log and count it.
 * Returns 1 in that case. */
int sess_acl_claim(worker_t *w, sess_t *s, const endpoint_t *ep, const char *outcome);

/* ep is about to be attached to s (before sess_attach sends anything): its
 * user becomes the owner; a resumed session has its subscriptions judged
 * for it and the queued and inflight messages it may not read dropped. */
void sess_acl_attach(worker_t *w, sess_t *s, const endpoint_t *ep, int resumed);

/* The owner as restored from the store (persist.c): known 0 for a record
 * written before owners were stored. */
void sess_acl_set_owner(sess_t *s, const char *owner, size_t len, int known);
/* The owner, or NULL. */
const char *sess_acl_owner(const sess_t *s);

#endif
