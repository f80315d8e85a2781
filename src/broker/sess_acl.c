/* sess_acl.c -- authorization at delivery (see sess_acl.h).
 *
 * Judging a session's subscriptions costs one filter decision each (cached
 * per connection); it happens when a client attaches to a session and once
 * per ACL generation for a connected session, never per message.  Dropping
 * the messages a client may not read compacts the ring in one pass.
 */
#include "sess_acl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mqtt_codec.h"
#include "persist.h"
#include "router.h"
#include "util.h"

/* The endpoint's auth state (user, rules, decision cache), or NULL. */
static auth_client_t *client_auth(const endpoint_t *ep)
{
    if (ep == NULL)
        return NULL;
    ep_info_t info;
    ep_describe(ep, &info, NULL, 0);
    return info.auth;
}

static const char *client_user(const endpoint_t *ep)
{
    const auth_client_t *ac = client_auth(ep);
    return ac ? ac->user : NULL;
}

static int same_user(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

const char *sess_acl_owner(const sess_t *s)
{
    return s->x ? s->x->owner : NULL;
}

void sess_acl_set_owner(sess_t *s, const char *owner, size_t len, int known)
{
    if (s->x) {
        free(s->x->owner);
        s->x->owner = NULL;
    }
    if (owner)
        sess_ext(s)->owner = an_strndup(owner, len);
    s->owner_unknown = !known;
}

/* The topic guards' word (router.h: $cmd/{id}/, $shadow/{id}/) on what the
 * session's client may read: a filter at SUBSCRIBE, and, for a session
 * whose subscriptions were taken before a guard existed (restored from the
 * store, or a guard enabled since), each message's topic at delivery. */
static int guard_reads(const server_t *srv, const sess_t *s, const auth_client_t *ac,
                       const uint8_t *t, size_t tl)
{
    if (srv->nguards_sub == 0)
        return 1;
    router_who_t who = {s->client_id, s->client_id_len, ac ? ac->user : NULL};
    return router_guard_subscribe(srv, &who, t, tl);
}

/* The client ac may read m: the ACL and the guards. */
static int may_read(const worker_t *w, const sess_t *s, auth_client_t *ac, const msg_t *m)
{
    return auth_chain_acl(w->srv->auth, ac, AUTH_ACT_SUBSCRIBE, msg_topic(m), m->topic_len, 0) &&
           guard_reads(w->srv, s, ac, msg_topic(m), m->topic_len);
}

static const char *user_text(const char *user, char *buf, size_t size)
{
    if (user == NULL)
        return "no user name";
    snprintf(buf, size, "user '%.100s'", user);
    return buf;
}

static const char *verdict_text(int v)
{
    return v == AUTH_ACL_DENY ? "denied" : v == AUTH_ACL_PARTIAL ? "partly denied" : "allowed";
}

/* Judge every subscription of s for the client ac under generation gen.
 * `reload`: log (at most a line a second per worker) the ones that lost
 * some access. */
static void judge(worker_t *w, sess_t *s, auth_client_t *ac, uint32_t gen, int reload)
{
    auth_chain_t *ch = w->srv->auth;
    int check = 0;
    for (uint32_t i = 0; i < s->nsubs; i++) {
        sess_sub_t *sub = &s->subs[i];
        const uint8_t *f = sess_sub_filter(sub), *real;
        size_t fl = sub->len, rl;
        if (mqtt_shared_filter_parse(f, fl, NULL, NULL, &real, &rl) == 1) {
            f = real;
            fl = rl;
        }
        int v = auth_chain_acl(ch, ac, AUTH_ACT_SUBSCRIBE, f, fl, 1);
        if (v != AUTH_ACL_DENY && !guard_reads(w->srv, s, ac, f, fl))
            v = AUTH_ACL_PARTIAL; /* a guard's topics under it: judged per message */
        if (reload && v != AUTH_ACL_ALLOW && v != sub->acl &&
            w->now >= w->judged_logged_at + 1000u) {
            w->judged_logged_at = w->now;
            log_fields_t lf = {.event = "acl_changed", .client_id = s->client_id};
            log_ev(AN_LOG_INFO, &lf,
                   "client '%s': subscription '%.*s' is now %s by the ACL (reloaded)", s->client_id,
                   (int)AN_MIN(sub->len, 200u), (const char *)sess_sub_filter(sub),
                   verdict_text(v));
        }
        sub->acl = (uint8_t)v;
        check |= v != AUTH_ACL_ALLOW;
    }
    s->acl_gen = gen;
    s->acl_check = check ? 1 : 0;
}

/* Drop from q the messages the client ac may not read (in their store
 * records too); `queued`: q is the queue (its byte count follows).
 * Entries that wait only for PUBCOMP carry no message and stay. */
static void purge(worker_t *w, sess_t *s, auth_client_t *ac, sq_t *q, int queued)
{
    uint32_t n = sq_len(q), kept = 0;
    for (uint32_t i = 0; i < n; i++) {
        sq_entry_t *e = sq_at(q, i);
        if (e->m == NULL || may_read(w, s, ac, e->m)) {
            if (kept != i)
                *sq_at(q, kept) = *e;
            kept++;
            continue;
        }
        if (event_wanted(w->srv, EVENT_MESSAGE_DROPPED))
            sess_event_dropped(s, e->m, e->qos, EVENT_DROP_ACL_DENIED);
        if (queued)
            sq_bytes_sub(q, (uint64_t)e->m->topic_len + e->m->props_len + e->m->payload_len);
        if (e->seq)
            persist_queue_del(w, s->client_id, s->client_id_len, e->seq);
        msg_unref(&e->m);
    }
    if (kept == n)
        return;
    STAT_ADD(w->stats.acl_denied, n - kept);
    STAT_ADD(w->stats.acl_denied_by[STAT_ACL_READ], n - kept);
    q->r->len = kept;
    if (kept == 0) {
        free(q->r);
        q->r = NULL;
    }
}

int sess_acl_check(worker_t *w, sess_t *s, const msg_t *m)
{
    auth_chain_t *ch = w->srv->auth;
    auth_client_t *ac = client_auth(s->ep);
    uint32_t gen = auth_chain_gen(ch);
    if (s->acl_gen != gen) {
        /* the rules changed since the verdicts were taken */
        judge(w, s, ac, gen, s->acl_gen != 0);
        if (!auth_chain_acl_open(ch) || w->srv->nguards_sub)
            purge(w, s, ac, &s->queue, 1);
    }
    if (!s->acl_check || may_read(w, s, ac, m))
        return 1;
    STAT_ADD(w->stats.acl_denied, 1);
    STAT_ADD(w->stats.acl_denied_by[STAT_ACL_READ], 1);
    return 0;
}

void sess_acl_subscribed(sess_t *s, const uint8_t *filter, uint16_t len, int verdict, uint32_t gen)
{
    sess_sub_t *sub = sess_sub_find(s, filter, len);
    if (sub)
        sub->acl = (uint8_t)verdict;
    if (gen != s->acl_gen)
        s->acl_gen = 0; /* judged under other rules: all again at the next delivery */
    else if (verdict != AUTH_ACL_ALLOW)
        s->acl_check = 1;
}

int sess_acl_claim(worker_t *w, sess_t *s, const endpoint_t *ep, const char *outcome)
{
    const char *owner = sess_acl_owner(s), *user = client_user(ep);
    if (s->owner_unknown || same_user(owner, user))
        return 0;
    STAT_ADD(w->stats.takeovers_other_user, 1);
    /* a takeover storm must not flood the log: the counter has them all */
    if (w->now >= w->takeover_logged_at + 1000u) {
        char a[128], b[128], name[160];
        ep_info_t info;
        w->takeover_logged_at = w->now;
        ep_describe(ep, &info, name, sizeof(name));
        log_fields_t f = {.event = "takeover_other_user",
                          .client_id = s->client_id,
                          .username = user,
                          .peer = info.client.peer,
                          .listener = info.client.listener,
                          .reason = outcome};
        log_ev(AN_LOG_WARN, &f, "client '%s': CONNECT by %s (%s) for the session of %s: %s",
               s->client_id, user_text(user, a, sizeof(a)), name, user_text(owner, b, sizeof(b)),
               outcome);
    }
    return 1;
}

void sess_acl_attach(worker_t *w, sess_t *s, const endpoint_t *ep, int resumed)
{
    auth_chain_t *ch = w->srv->auth;
    auth_client_t *ac = client_auth(ep);
    const char *user = ac ? ac->user : NULL;
    if (!same_user(sess_acl_owner(s), user) || s->owner_unknown)
        sess_acl_set_owner(s, user, user ? strlen(user) : 0, 1);
    judge(w, s, ac, auth_chain_gen(ch), 0);
    if (resumed && (!auth_chain_acl_open(ch) || w->srv->nguards_sub)) {
        /* what was queued for the session, perhaps for another user or
         * under other rules, is checked for this client */
        purge(w, s, ac, &s->inflight, 0);
        purge(w, s, ac, &s->queue, 1);
    }
}
