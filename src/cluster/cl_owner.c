/* cl_owner.c -- the client-id registry (cl_int.h; docs/cluster.md
 * "Client-id ownership").
 *
 * /antenna/<name>/clients/<client id> = the owning node's name, under the
 * owner's lease.  A CONNECT is parked by the connect gate (proto.h) on its
 * home worker while this node claims the id:
 *
 *   worker      own_gate: a claim (cl_claim_t) and one etcd txn "create if
 *               absent, else read" (cl_etcd_create: batched with the
 *               claims and releases of all workers queued meanwhile into
 *               one etcd txn, cl_etcd.h; the worker never waits);
 *   etcd thread on_claim: created, or already ours under our lease: go on.
 *               Held by a node that is not a member (or by an older lease
 *               of ours): put with a compare on its mod_revision, then go on
 *               (or start again when someone was faster).  Held by a member:
 *               ask it over the link (cl_post to the link thread);
 *   link thread send_take: CL_F_OWN_TAKE {req, client id} to the owner; the
 *               claim waits in pending (OWN_TAKE_MS at most);
 *   owner       the link thread posts WM_CL_OWNER to the client's home worker
 *               (own_take): the connection closes with 0x8E (Session taken
 *               over), a persistent session is encoded (enc_session: the
 *               store's records: subscriptions with options and ids, queued
 *               and in-flight messages, incoming QoS 2 ids, the expiry) and
 *               ends there, the claim is deleted with a compare on the
 *               owner's own name, then CL_F_OWN_GIVEN {req, session};
 *   link thread GIVEN: the claim starts again (create if absent), at most
 *               OWN_TRIES times; then 0x89 (Server busy).  Created: the
 *               session is installed on the home worker (restore_session,
 *               g->apply) before the CONNECT resumes: session present 1.
 * A resuming CONNECT (clean start 0): refused with 0x88 while a member's
 * sessions may be adopted (cl_adopt_pending); its id claimed by a recent
 * adoption (cl_recent.c): no claim, resumed at once on the adopter, the
 * take asked of the adopter at once elsewhere (recent_skip); its claim
 * finding no owner: it waits for a fresh read of the member list (see
 * "a resuming CONNECT whose claim found no owner" below).
 * The answer goes back to the worker with proto_gate_post.  An etcd error,
 * a member without a link, a take not answered: 0x88 (Server unavailable);
 * the client retries.
 *
 * Orderings etcd does not settle, kept per home worker (cl_own_wk_t): a
 * claim answered "ours" while a release of an id with the same hash is in
 * flight is sent again (the delete would land after it); a take that finds
 * no session leaves a tombstone, and a parked CONNECT of that id whose
 * claim was sent before it is refused (0x89) by own_apply.
 *
 * Releases: a session that ends here (a clean session's connection closed,
 * a session expired) deletes its claim with a compare on this node's name
 * (event handlers, on the worker).  Otherwise claims die with the lease.
 *
 * After a lease loss and a new lease (cl_member.c calls
 * cl_owner_lease_back), every worker claims its connected clients' ids
 * again; one claimed meanwhile by another node closes here with 0x8E and
 * its session ends (the other node has the client now).
 *
 * Threads: own_gate, own_take and the event handlers on workers; on_* on
 * the etcd thread; the pending list and the frames on the link thread.
 * Counters are relaxed atomics.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cl_etcd.h"
#include "cl_link_int.h"
#include "event.h"
#include "log.h"
#include "migrate.h"
#include "mqtt_props.h"
#include "persist.h"
#include "proto.h"
#include "sess.h"
#include "sess_acl.h"
#include "store_rec.h"
#include "util.h"

#define OWN_TRIES 4      /* claims after a take before giving up (0x89) */
#define OWN_TAKE_MS 5000 /* a take not answered within this: 0x88 */

typedef struct cl_claim_s {
    cl_t *cl;
    proto_gate_t *g;
    struct cl_claim_s *next; /* pending (link thread) */
    uint32_t req;
    int idx; /* the owner's node index */
    int tries;
    int given;        /* its owner handed the session over (GIVEN): it was alive */
    int keep;         /* ... and keeps what reaches it until asked (MOVE_KEEP, cl_move.c) */
    uint64_t sent_at; /* the worker's clock when the CONNECT was parked */
    uint32_t slot;    /* cl_own_wk_t.rel index */
    int64_t rev;      /* the owner's key's mod_revision */
    char owner[CL_NAME_MAX];
    tw_timer_t timer;
    uint8_t *blob; /* the session the owner handed over (GIVEN), or NULL */
    uint32_t blob_len;
    char key[];
} cl_claim_t;

/* A take from another node, for the client's home worker. */
typedef struct {
    cl_t *cl;
    int idx;
    uint32_t req;
    int kept;      /* a tombstone keeps what reaches the session (cl_move.c) */
    cl_buf_t blob; /* the session, encoded (empty: none) */
    char id[];
} cl_take_t;

#define OWN_REL_SLOTS 256 /* release-in-flight counters per worker, by id hash */

/* An id a take found no session for: a CONNECT of it whose claim was sent
 * before `at` may not go on (its claim answer was overtaken by the take). */
typedef struct {
    char *id;
    uint64_t at;
} cl_tomb_t;

/* Per worker (its own cache line; tombs: that worker only). */
typedef struct {
    _Atomic uint32_t rel[OWN_REL_SLOTS]; /* releases of ids with this hash in flight */
    cl_tomb_t *tombs;
    uint32_t ntombs, cap;
    char pad[64];
} cl_own_wk_t;

struct cl_owner_s {
    cl_t *cl;
    cl_own_wk_t *wk;               /* [nworkers] */
    inbox_vec_t *later;            /* [nworkers]: answers of this etcd batch (etcd thread) */
    char prefix[CL_NAME_MAX + 32]; /* /antenna/<name>/clients/ */
    /* link thread */
    cl_claim_t *pending;
    uint32_t next_req;
    /* any thread */
    _Atomic uint64_t claims, created, stolen, takes_sent, takes_served, refused, released;
    _Atomic uint64_t adopt_waits; /* resuming CONNECTs refused while an adoption was pending */
    _Atomic uint64_t adopt_kept;  /* ... whose id this node's adoption holds: its claim kept */
    _Atomic uint64_t adopted_here, adopted_take; /* claims skipped (cl_recent.c) */
    cl_recent_t *recent;                         /* the ids of recent adoptions (cl_recent.c) */
};

#define OWN_INC(x) atomic_fetch_add_explicit(&(x), 1, memory_order_relaxed)

static uint32_t id_slot(const char *id, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)id[i]) * 16777619u;
    return h % OWN_REL_SLOTS;
}

static char *own_key(cl_owner_t *o, const char *id)
{
    size_t n = strlen(o->prefix) + strlen(id) + 1;
    char *k = an_malloc(n);
    snprintf(k, n, "%s%s", o->prefix, id);
    return k;
}

/* ---- the claim ---- */

static void answer(cl_claim_t *cm, uint8_t rc5)
{
    cl_owner_t *o = cm->cl->owner;
    if (rc5)
        OWN_INC(o->refused);
    cm->g->refuse_rc5 = rc5;
    proto_gate_post(cm->g); /* frees cm through g->release, now or later */
}

/* On the etcd thread, in a batch's done() calls: the answer waits for the
 * batch's end (cl_owner_batch_end), to reach its worker with the others. */
static void answer_later(cl_claim_t *cm, uint8_t rc5)
{
    cl_owner_t *o = cm->cl->owner;
    if (rc5)
        OWN_INC(o->refused);
    cm->g->refuse_rc5 = rc5;
    proto_gate_add(&o->later[cm->g->w->id], cm->g);
}

void cl_owner_batch_end(void *arg)
{
    cl_t *cl = arg;
    cl_owner_t *o = cl->owner;
    if (o == NULL)
        return;
    for (uint32_t i = 0; i < cl->srv->nworkers; i++)
        if (o->later[i].len > 0)
            inbox_post(&cl->srv->workers[i].inbox, &o->later[i]);
}

static void claim_release(proto_gate_t *g)
{
    cl_claim_t *cm = g->arg;
    if (cm)
        free(cm->blob);
    free(cm);
    g->arg = NULL;
}

/* ---- the session, handed over ----
 *
 * u32 len | session record (store_rec_encode_session) | u32 n | n x (u32
 * len | message record (store_rec_encode_outmsg; its expiry: ms left + 1,
 * 0 = none; queued ones with STORE_OUT_QUEUED, in flight with their
 * state; with their publish ids, version 2, only to a node that reads them:
 * CL_F_MSG_IDS)) | u32 n | n x u16 incoming QoS 2 packet id.  The records
 * are the store's, so their decoders check every field. */

static void put32(cl_buf_t *b, uint32_t v)
{
    cl_buf_reserve(b, 4);
    uint8_t *p = b->p + b->len;
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    b->len += 4;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ids: the records carry the publish ids (the receiver reads them: CL_F_MSG_IDS) */
static void enc_ring(worker_t *w, cl_buf_t *b, sq_t *q, int ids)
{
    for (uint32_t i = 0; i < sq_len(q); i++) {
        sq_entry_t *e = sq_at(q, i);
        store_outmsg_t o = {.state = e->state,
                            .qos = e->qos,
                            .retain = e->retain != 0,
                            .dup = e->state == SQ_WAIT_PUBREC,
                            .pid = e->state != SQ_QUEUED ? e->pid : 0};
        if (e->m) {
            o.topic = msg_topic(e->m);
            o.topic_len = e->m->topic_len;
            o.props = msg_props(e->m);
            o.props_len = e->m->props_len;
            o.payload = msg_payload(e->m);
            o.payload_len = e->m->payload_len;
            o.expiry =
                e->m->expire_at ? (e->m->expire_at > w->now ? e->m->expire_at - w->now : 0) + 1 : 0;
            o.id_epoch = ids ? e->m->id_epoch : 0;
            o.id_seq = ids ? e->m->id_seq : 0;
        } else {
            o.topic = (const uint8_t *)"-"; /* only the PUBREL is left */
            o.topic_len = 1;
        }
        size_t n = store_rec_encode_outmsg(&o, NULL, 0);
        if (n == 0)
            continue;
        put32(b, (uint32_t)n);
        cl_buf_reserve(b, n);
        store_rec_encode_outmsg(&o, b->p + b->len, n);
        b->len += n;
    }
}

static void enc_session(worker_t *w, sess_t *s, cl_buf_t *b, int ids)
{
    store_sub_t *subs = s->nsubs ? an_calloc(s->nsubs, sizeof(*subs)) : NULL;
    for (uint32_t i = 0; i < s->nsubs; i++) {
        subs[i].filter = s->subs[i].filter;
        subs[i].filter_len = s->subs[i].len;
        subs[i].options = s->subs[i].opts & 0x3f;
        subs[i].sub_id = s->subs[i].subid;
    }
    const char *owner = sess_acl_owner(s);
    store_session_t rec = {.expiry_interval = s->expiry,
                           .next_pid = s->next_pid,
                           .nsubs = s->nsubs,
                           .subs = subs,
                           .owner_known = !s->owner_unknown,
                           .owner = (const uint8_t *)owner,
                           .owner_len = owner ? strlen(owner) : 0};
    size_t n = store_rec_encode_session(&rec, NULL, 0);
    put32(b, (uint32_t)n);
    cl_buf_reserve(b, n);
    if (n)
        store_rec_encode_session(&rec, b->p + b->len, n);
    b->len += n;
    free(subs);
    put32(b, sq_len(&s->inflight) + sq_len(&s->queue));
    size_t count_at = b->len - 4;
    enc_ring(w, b, &s->inflight, ids);
    enc_ring(w, b, &s->queue, ids);
    /* the count again: records that did not encode were left out */
    uint32_t cnt = 0;
    for (size_t off = count_at + 4; off + 4 <= b->len; cnt++)
        off += 4 + get32(b->p + off);
    b->p[count_at] = (uint8_t)(cnt >> 24), b->p[count_at + 1] = (uint8_t)(cnt >> 16);
    b->p[count_at + 2] = (uint8_t)(cnt >> 8), b->p[count_at + 3] = (uint8_t)cnt;
    uint32_t nq2 = sess_qos2_in_count(s);
    put32(b, nq2);
    cl_buf_reserve(b, 2u * nq2);
    for (uint32_t i = 0; i < nq2; i++) {
        b->p[b->len++] = (uint8_t)(sess_qos2_in_at(s, i) >> 8);
        b->p[b->len++] = (uint8_t)sess_qos2_in_at(s, i);
    }
}

/* A session in the hand-over format, installed on its home worker w as a
 * restore from the store would (offline; a CONNECT attaches it) and
 * written to this node's store when it is persistent.  0, 1 when a session
 * of that id is here already (it stays), -1 unreadable. */
int cl_owner_install(worker_t *w, const char *id, uint16_t id_len, const uint8_t *p, size_t len,
                     uint64_t *seq_next)
{
    const uint8_t *end = p + len;
    if (sess_table_find_id(&w->by_id, (const uint8_t *)id, id_len) != NULL)
        return 1;
    store_session_t rec;
    if (end - p < 4 || get32(p) > (size_t)(end - p - 4) ||
        store_rec_decode_session(p + 4, get32(p), &rec) != 0)
        return -1;
    p += 4 + get32(p);
    sess_t *s = sess_restore(w, (const uint8_t *)id, id_len, rec.expiry_interval,
                             w->now + (uint64_t)rec.expiry_interval * 1000u, rec.next_pid);
    sess_acl_set_owner(s, (const char *)rec.owner, rec.owner_len, rec.owner_known);
    for (uint32_t i = 0; i < rec.nsubs; i++)
        sess_subscribe(w, s, rec.subs[i].filter, (uint16_t)rec.subs[i].filter_len,
                       rec.subs[i].options, rec.subs[i].sub_id);
    store_rec_session_free(&rec);
    uint32_t n = end - p >= 4 ? get32(p) : 0;
    p += end - p >= 4 ? 4 : 0;
    for (uint32_t i = 0; i < n && end - p >= 4; i++) {
        uint32_t mlen = get32(p);
        store_outmsg_t o;
        if (mlen > (size_t)(end - p - 4) || store_rec_decode_outmsg(p + 4, mlen, &o) != 0)
            break;
        p += 4 + mlen;
        sq_entry_t e = {.qos = o.qos, .retain = o.retain, .state = o.state, .pid = o.pid};
        if (o.state != STORE_OUT_WAIT_PUBCOMP)
            e.m = msg_new_v5(o.topic, (uint16_t)o.topic_len, o.props, (uint32_t)o.props_len,
                             o.payload, (uint32_t)o.payload_len, o.qos, o.retain,
                             o.expiry ? w->now + o.expiry - 1 : 0);
        if (e.m != NULL) { /* its publish id, if the record has one */
            e.m->id_epoch = o.id_epoch;
            e.m->id_seq = o.id_seq;
        }
        if (rec.expiry_interval != 0) { /* durable here too */
            e.seq = seq_next ? (*seq_next)++ : persist_next_seq(w->srv);
            if (e.m)
                e.m->store_seq = e.seq;
            persist_queue_put(w, s->client_id, s->client_id_len, e.seq, e.m, e.qos, e.retain,
                              e.state, e.state != SQ_QUEUED ? e.pid : 0);
        }
        if (o.state == STORE_OUT_QUEUED) {
            sq_push(&s->queue, &e);
            sq_bytes_add(&s->queue, (uint64_t)o.topic_len + o.props_len + o.payload_len);
        } else {
            sq_push(&s->inflight, &e);
        }
    }
    n = end - p >= 4 ? get32(p) : 0;
    p += end - p >= 4 ? 4 : 0;
    for (uint32_t i = 0; i < n && end - p >= 2; i++, p += 2)
        sess_qos2_in_begin(s, (uint16_t)(p[0] << 8 | p[1]));
    persist_session_update(w, s);
    for (uint32_t i = 0; i < sess_qos2_in_count(s); i++)
        persist_incoming(w, s, sess_qos2_in_at(s, i), 1);
    return 0;
}

/* g->apply, on the client's home worker before its CONNECT resumes: the
 * session the old owner sent (cl_owner_install). */
static void restore_session(worker_t *w, proto_gate_t *g)
{
    cl_claim_t *cm = g->arg;
    if (g->clean_start || cm->blob == NULL)
        return;
    if (cl_owner_install(w, g->client_id, g->id_len, cm->blob, cm->blob_len, NULL) < 0)
        log_warn("cluster: the session of client '%s' handed over is unreadable: dropped",
                 g->client_id);
}

static void on_claim(void *arg, const cl_etcd_res_t *res);

static void claim_send(cl_claim_t *cm)
{
    cl_t *cl = cm->cl;
    cl_etcd_t *e = cl_member_etcd(cl);
    int64_t lease = cl_member_lease(cl);
    if (e == NULL || lease == 0) {
        answer(cm, MQTT_RC_SERVER_UNAVAILABLE);
        return;
    }
    OWN_INC(cl->owner->claims);
    if (cl_etcd_create(e, cm->key, cl->conf->node, lease, on_claim, cm) < 0)
        answer(cm, MQTT_RC_SERVER_UNAVAILABLE);
}

/* Is `name` a member now (the API's copy of the member table)?  Its index,
 * or -1. */
static int member_index(cl_t *cl, const char *name)
{
    int idx = -1;
    pthread_mutex_lock(&cl->snap_mu);
    for (int i = 1; i < CL_MAX_NODES; i++)
        if (cl->snap[i].used && cl->snap[i].member && strcmp(cl->snap[i].name, name) == 0) {
            idx = i;
            break;
        }
    pthread_mutex_unlock(&cl->snap_mu);
    return idx;
}

/* ---- a resuming CONNECT whose claim found no owner ----
 *
 * Its session, if it had one on a member that just died, is in that
 * member's store waiting for an adopter; the dead member's claims went with
 * its lease, in the same etcd revision as its member key.  The connect gate
 * (cl_adopt_pending) refuses such CONNECTs once this node saw the member go
 * out, but the claim's answer can come before the member watch's event: a
 * session would start afresh here, and the adopter's claim would then find
 * the id owned here and end the adopted one.  So such a claim waits for a
 * read of the member list sent after its answer (cl_member_fresh: what
 * went out by then is seen); a member gone out meanwhile (the gate closed):
 * the key is deleted again, then 0x88 (the client retries, and finds its
 * session once adopted). */

static void on_unclaimed(void *arg, const cl_etcd_res_t *res)
{
    (void)res; /* deleted, or not ours any more: either way not claimed here */
    answer_later(arg, MQTT_RC_SERVER_UNAVAILABLE);
}

static void unclaim_refuse(cl_claim_t *cm)
{
    cl_t *cl = cm->cl;
    cl_etcd_t *e = cl_member_etcd(cl);
    OWN_INC(cl->owner->adopt_waits);
    log_limited(5000, AN_LOG_INFO,
                "cluster: client '%s' claimed while a member went out: refused (0x88) until "
                "its sessions are adopted",
                cm->g->client_id);
    /* This node adopts that session (running, or just done): the key, with
     * this node's name, is the adoption's claim as well as ours (the two
     * claims look alike in etcd, whichever came first).  Deleting it left
     * the adopted session here unclaimed: a client that came back here
     * resumed it without a claim (cl_recent.c), and one that reconnected
     * later elsewhere found no owner and started afresh, the session lost
     * (test_104).  Kept. */
    if (cl_adopt_holds(cl, cm->g->client_id, cm->g->id_len) ||
        cl_recent_has(cl->owner->recent, cm->g->client_id, cm->g->id_len, an_now_ms(),
                      cl->conf->node)) {
        OWN_INC(cl->owner->adopt_kept);
        answer_later(cm, MQTT_RC_SERVER_UNAVAILABLE);
        return;
    }
    if (e == NULL || cl_etcd_delete_if(e, cm->key, cl->conf->node, on_unclaimed, cm) < 0)
        answer(cm, MQTT_RC_SERVER_UNAVAILABLE);
}

static void on_fresh(void *arg, int ok)
{
    cl_claim_t *cm = arg;
    if (ok && !cl_adopt_pending(cm->cl))
        answer(cm, 0); /* nobody went out: a new session */
    else
        unclaim_refuse(cm);
}

/* A claim found no owner (created, or taken from a node that left): go on,
 * unless a resuming CONNECT's session may wait for an adopter. */
static void claimed(cl_claim_t *cm, int taken_from_gone)
{
    cl_t *cl = cm->cl;
    if (cm->given && cm->keep && cm->blob != NULL && !cm->g->clean_start) {
        /* the old owner keeps what reaches the session: installed now, its
         * routes known everywhere, then what it kept is asked for and
         * merged before the CONNECT goes on (cl_move.c) */
        uint8_t *blob = cm->blob;
        cm->blob = NULL;
        cl_move_in_begin(cl, cm->g, cm->idx, cm->req, blob, cm->blob_len);
        return;
    }
    if (cm->given && cm->keep && cm->g->clean_start)
        /* the old owner keeps a tombstone for a session this CONNECT does
         * not want: it ends it at once (its routes go) */
        cl_move_drop_send(cl, cm->idx, cm->req, cm->g->client_id, cm->g->id_len);
    if (cm->g->clean_start || cl->adopt == NULL || cm->given) {
        answer_later(cm, 0);
    } else if (taken_from_gone) {
        /* its owner left: this node saw it (member_index), so the gate
         * says whether its sessions may still be adopted */
        if (cl_adopt_pending(cl))
            unclaim_refuse(cm);
        else
            answer_later(cm, 0);
    } else {
        cl_member_fresh(cl, on_fresh, cm);
    }
}

static void on_stolen(void *arg, const cl_etcd_res_t *res)
{
    cl_claim_t *cm = arg;
    if (res->err != CL_ETCD_OK) {
        answer_later(cm, MQTT_RC_SERVER_UNAVAILABLE);
        return;
    }
    if (cl_etcd_txn_ok(res->json)) {
        OWN_INC(cm->cl->owner->stolen);
        claimed(cm, 1);
        return;
    }
    if (++cm->tries > OWN_TRIES) { /* someone else was faster, again and again */
        answer_later(cm, MQTT_RC_SERVER_BUSY);
        return;
    }
    claim_send(cm);
}

static void take_timeout(tw_timer_t *t);

/* Link thread: ask the owner to let go. */
static void send_take(cl_t *cl, void *arg)
{
    cl_claim_t *cm = arg;
    cl_owner_t *o = cl->owner;
    int idx = cm->idx;
    cl_conn_t *c = cl->links->peers[idx].conn;
    if (atomic_load(&cl->stopping) || c == NULL || !c->up) {
        log_limited(5000, AN_LOG_WARN,
                    "cluster: client '%s' is owned by %s, which has no link up: refused (0x88)",
                    cm->g->client_id, cm->owner);
        answer(cm, MQTT_RC_SERVER_UNAVAILABLE);
        return;
    }
    cm->req = ++o->next_req;
    cm->keep = 0;
    cm->next = o->pending;
    o->pending = cm;
    tw_timer_init(&cm->timer, take_timeout);
    tw_add(&cl->tw, &cm->timer, cl->now + OWN_TAKE_MS);
    size_t idlen = cm->g->id_len;
    cl_buf_reserve(&c->out, 11 + idlen);
    uint8_t *p = c->out.p + c->out.len;
    uint32_t flen = (uint32_t)(1 + 4 + 2 + idlen);
    p[0] = (uint8_t)(flen >> 24), p[1] = (uint8_t)(flen >> 16), p[2] = (uint8_t)(flen >> 8);
    p[3] = (uint8_t)flen, p[4] = CL_F_OWN_TAKE;
    p[5] = (uint8_t)(cm->req >> 24), p[6] = (uint8_t)(cm->req >> 16),
    p[7] = (uint8_t)(cm->req >> 8);
    p[8] = (uint8_t)cm->req, p[9] = (uint8_t)(idlen >> 8), p[10] = (uint8_t)idlen;
    memcpy(p + 11, cm->g->client_id, idlen);
    c->out.len += 11 + idlen;
    OWN_INC(o->takes_sent);
    if (!(c->ev.events & EV_WRITE))
        cl_conn_flush(cl, c);
}

static void pending_unlink(cl_owner_t *o, cl_claim_t *cm)
{
    for (cl_claim_t **pp = &o->pending; *pp; pp = &(*pp)->next)
        if (*pp == cm) {
            *pp = cm->next;
            return;
        }
}

static void take_timeout(tw_timer_t *t)
{
    cl_claim_t *cm = container_of(t, cl_claim_t, timer);
    pending_unlink(cm->cl->owner, cm);
    log_limited(5000, AN_LOG_WARN, "cluster: %s did not hand client '%s' over in time: refused",
                cm->owner, cm->g->client_id);
    answer(cm, MQTT_RC_SERVER_UNAVAILABLE);
}

static void on_claim(void *arg, const cl_etcd_res_t *res)
{
    cl_claim_t *cm = arg;
    cl_t *cl = cm->cl;
    if (res->err != CL_ETCD_OK) {
        if (res->err != CL_ETCD_ECANCELLED)
            log_limited(5000, AN_LOG_WARN, "cluster: claiming client '%s' failed: %s",
                        cm->g->client_id, res->error);
        answer_later(cm, MQTT_RC_SERVER_UNAVAILABLE);
        return;
    }
    if (cl_etcd_txn_ok(res->json)) {
        OWN_INC(cl->owner->created);
        claimed(cm, 0);
        return;
    }
    const json_t *kv = cl_etcd_txn_kv(res->json);
    char val[CL_NAME_MAX];
    size_t kcap = strlen(cm->key) + 2;
    char *kbuf = an_malloc(kcap);
    int bad = kv == NULL || cl_etcd_kv(kv, kbuf, kcap, val, sizeof(val)) < 0;
    free(kbuf);
    if (bad) {
        if (++cm->tries > OWN_TRIES) {
            answer_later(cm, MQTT_RC_SERVER_BUSY);
            return;
        }
        claim_send(cm); /* gone meanwhile: again */
        return;
    }
    cm->rev = cl_etcd_int(kv, "mod_revision");
    int64_t lease = cl_member_lease(cl);
    if (strcmp(val, cl->conf->node) == 0 && cl_etcd_int(kv, "lease") == lease) {
        /* ours: a takeover on this node, as without a cluster; unless a
         * release of this id is still on its way to etcd (it would delete
         * the key after this answer): ask again once it went */
        if (atomic_load(&cl->owner->wk[cm->g->w->id].rel[cm->slot]) != 0 &&
            ++cm->tries <= OWN_TRIES) {
            claim_send(cm);
            return;
        }
        answer_later(cm, 0);
        return;
    }
    snprintf(cm->owner, sizeof(cm->owner), "%s", val);
    int idx = strcmp(val, cl->conf->node) == 0 ? -1 : member_index(cl, val);
    if (idx < 0) {
        /* a node that left (its lease outlives it by a little), or an older
         * lease of ours: take the key over if nobody changed it */
        cl_etcd_t *e = cl_member_etcd(cl);
        if (e == NULL || lease == 0 ||
            cl_etcd_txn(e, cm->key, cl_etcd_put_if_mod_req(cm->key, cl->conf->node, lease, cm->rev),
                        on_stolen, cm) < 0)
            answer(cm, MQTT_RC_SERVER_UNAVAILABLE);
        return;
    }
    cm->idx = idx;
    if (cl_post(cl, send_take, cm) < 0)
        answer(cm, MQTT_RC_SERVER_UNAVAILABLE);
}

/* Forget tombs older than twice the take timeout (no claim waits longer). */
static void tombs_prune(cl_own_wk_t *k, uint64_t now)
{
    for (uint32_t i = 0; i < k->ntombs;)
        if (k->tombs[i].at + 2u * OWN_TAKE_MS < now) {
            free(k->tombs[i].id);
            k->tombs[i] = k->tombs[--k->ntombs];
        } else {
            i++;
        }
}

static void tomb_add(cl_own_wk_t *k, const char *id, uint64_t now)
{
    tombs_prune(k, now);
    if (k->ntombs == k->cap) {
        k->cap = k->cap ? 2 * k->cap : 8;
        k->tombs = an_realloc(k->tombs, k->cap * sizeof(*k->tombs));
    }
    k->tombs[k->ntombs++] = (cl_tomb_t){.id = an_strndup(id, strlen(id)), .at = now};
}

/* g->apply: refuse a CONNECT whose claim a take overtook, else install the
 * session handed over, if any. */
static uint8_t own_apply(worker_t *w, proto_gate_t *g)
{
    cl_claim_t *cm = g->arg;
    cl_own_wk_t *k = &cm->cl->owner->wk[w->id];
    for (uint32_t i = 0; i < k->ntombs; i++)
        if (strcmp(k->tombs[i].id, g->client_id) == 0 && k->tombs[i].at >= cm->sent_at) {
            free(k->tombs[i].id);
            k->tombs[i] = k->tombs[--k->ntombs];
            log_limited(5000, AN_LOG_INFO,
                        "cluster: client '%s' was taken over by another node while its claim "
                        "was answered: refused (0x89)",
                        g->client_id);
            return MQTT_RC_SERVER_BUSY;
        }
    if (cl_move_out_here(w, cm->cl, g->client_id, g->id_len))
        /* it moved away and comes back during the tombstone's linger */
        return cl_move_out_reinstall(w, cm->cl, g, cm->blob != NULL,
                                     cm->blob ? restore_session : NULL);
    if (cm->blob)
        restore_session(w, g);
    return 0;
}

/* A resuming CONNECT of an id a recent adoption claimed (cl_recent.c): its
 * claim's answer is known.  Adopted here, under the lease this node still
 * has, the session still here (a take or a release would have taken the id
 * out): it resumes at once.  Adopted by another member: the take-over is
 * asked of it at once (it answers as to any take; the claim follows).
 * 1 when done so, 0: claim as usual. */
static int recent_skip(worker_t *w, cl_t *cl, cl_claim_t *cm)
{
    cl_owner_t *o = cl->owner;
    proto_gate_t *g = cm->g;
    char owner[CL_NAME_MAX];
    int64_t lease;
    if (!cl_recent_take(o->recent, g->client_id, g->id_len, an_now_ms(), owner, &lease))
        return 0;
    if (strcmp(owner, cl->conf->node) == 0) {
        if (lease == 0 || lease != cl_member_lease(cl) ||
            sess_table_find_id(&w->by_id, (const uint8_t *)g->client_id, g->id_len) == NULL)
            return 0;
        OWN_INC(o->adopted_here);
        answer(cm, 0);
        return 1;
    }
    int idx = member_index(cl, owner);
    if (idx < 0)
        return 0;
    snprintf(cm->owner, sizeof(cm->owner), "%s", owner);
    cm->idx = idx;
    OWN_INC(o->adopted_take);
    if (cl_post(cl, send_take, cm) < 0)
        answer(cm, MQTT_RC_SERVER_UNAVAILABLE);
    return 1;
}

void cl_owner_adopted(cl_t *cl, const char *owner, int64_t lease, const uint8_t *ids, size_t len)
{
    if (cl->owner != NULL)
        cl_recent_add(cl->owner->recent, owner, lease, ids, len, an_now_ms());
}

/* An id whose session leaves this node: not to be resumed here unclaimed. */
static void recent_forget(cl_t *cl, const char *id)
{
    char owner[CL_NAME_MAX];
    int64_t lease;
    cl_recent_take(cl->owner->recent, id, strlen(id), an_now_ms(), owner, &lease);
}

/* The connect gate, on the client's home worker. */
static int own_gate(worker_t *w, proto_gate_t *g, void *user)
{
    cl_t *cl = user;
    cl_owner_t *o = cl->owner;
    size_t n = strlen(o->prefix) + g->id_len + 1;
    cl_claim_t *cm = an_calloc(1, sizeof(*cm) + n);
    cm->cl = cl;
    cm->g = g;
    snprintf(cm->key, n, "%s%s", o->prefix, g->client_id);
    cm->sent_at = w->now;
    cm->slot = id_slot(g->client_id, g->id_len);
    g->arg = cm;
    g->release = claim_release;
    g->apply = own_apply;
    if (!g->clean_start && cl_adopt_pending(cl)) {
        /* a member went out and its sessions may be adopted: this one may
         * be among them (cl_adopt.c); the client retries */
        OWN_INC(o->adopt_waits);
        answer(cm, MQTT_RC_SERVER_UNAVAILABLE);
        return 1;
    }
    if (!g->clean_start && recent_skip(w, cl, cm))
        return 1;
    claim_send(cm);
    return 1;
}

/* ---- the owner's side ---- */

static void take_free(cl_take_t *tk)
{
    cl_buf_free(&tk->blob);
    free(tk);
}

static void send_given(cl_t *cl, void *arg)
{
    cl_take_t *tk = arg;
    cl_conn_t *c = cl->links->peers[tk->idx].conn;
    if (c != NULL && c->up && !atomic_load(&cl->stopping)) {
        if (tk->kept) { /* before the GIVEN: the claim it starts may need it */
            put32(&c->out, 5);
            cl_buf_reserve(&c->out, 5);
            c->out.p[c->out.len++] = CL_F_MOVE_KEEP;
            put32(&c->out, tk->req);
        }
        put32(&c->out, (uint32_t)(5 + tk->blob.len));
        cl_buf_reserve(&c->out, 1);
        c->out.p[c->out.len++] = CL_F_OWN_GIVEN;
        put32(&c->out, tk->req);
        if (tk->blob.len) {
            cl_buf_reserve(&c->out, tk->blob.len);
            memcpy(c->out.p + c->out.len, tk->blob.p, tk->blob.len);
            c->out.len += tk->blob.len;
        }
        if (!(c->ev.events & EV_WRITE))
            cl_conn_flush(cl, c);
    }
    take_free(tk);
}

static void on_released_for(void *arg, const cl_etcd_res_t *res)
{
    cl_take_t *tk = arg;
    (void)res; /* whatever the answer: the requester claims again and sees */
    if (cl_post(tk->cl, send_given, tk) < 0)
        take_free(tk);
}

/* WM_CL_OWNER on the client's home worker: close and end its session here,
 * release the claim, answer the requester. */
static void own_take(worker_t *w, inbox_item_t *it)
{
    cl_take_t *tk = it->ptr;
    cl_t *cl = tk->cl;
    size_t idlen = strlen(tk->id);
    recent_forget(cl, tk->id);
    sess_t *s = sess_table_find_id(&w->by_id, (const uint8_t *)tk->id, idlen);
    if (s != NULL && cl_move_out_here(w, cl, tk->id, idlen)) {
        /* a tombstone: its session was handed over already (the claim is
         * another node's: a stale take); nothing to hand, it stays */
    } else if (s != NULL) {
        if (s->ep)
            sess_take_over(s, "session taken over by another node");
        if (s->expiry != 0)
            enc_session(w, s, &tk->blob,
                        tk->idx > 0 && CL_STAT_GET(cl->lstats[tk->idx].msg_ids) != 0);
        /* a persistent one stays as a tombstone that keeps what reaches it
         * for the new owner (cl_move.c); else it ends here */
        tk->kept = s->expiry != 0 && cl_move_out_keep(w, cl, s, tk->idx, tk->req);
        if (!tk->kept)
            sess_destroy(w, s);
    } else {
        /* maybe its CONNECT is parked here, its claim answer not seen yet */
        tomb_add(&cl->owner->wk[w->id], tk->id, w->now);
    }
    OWN_INC(cl->owner->takes_served);
    cl_etcd_t *e = cl_member_etcd(cl);
    char *k = own_key(cl->owner, tk->id);
    if (e == NULL || cl_etcd_delete_if(e, k, cl->conf->node, on_released_for, tk) < 0) {
        if (cl_post(cl, send_given, tk) < 0)
            take_free(tk);
    }
    free(k);
}

static void on_released(void *arg, const cl_etcd_res_t *res);

/* ---- after a new lease: claim the connected clients' ids again ---- */

enum { OWN_IT_TAKE = 0, OWN_IT_RECLAIM, OWN_IT_KICK, OWN_IT_ADOPT, OWN_IT_MOVE };

static void post_item(cl_t *cl, uint32_t to, uint8_t what, cl_take_t *tk)
{
    inbox_vec_t v = {0};
    inbox_item_t it = {.kind = WM_CL_OWNER, .flags = what, .ptr = tk};
    inbox_vec_push(&v, &it);
    inbox_post(&cl->srv->workers[to].inbox, &v);
    inbox_vec_free(&v);
}

static cl_take_t *take_new(cl_t *cl, const char *id, size_t len)
{
    cl_take_t *tk = an_calloc(1, sizeof(*tk) + len + 1u);
    tk->cl = cl;
    tk->idx = -1;
    memcpy(tk->id, id, len);
    tk->id[len] = '\0';
    return tk;
}

static void on_reclaimed(void *arg, const cl_etcd_res_t *res)
{
    cl_take_t *tk = arg;
    cl_t *cl = tk->cl;
    const json_t *kv =
        res->err == CL_ETCD_OK && !cl_etcd_txn_ok(res->json) ? cl_etcd_txn_kv(res->json) : NULL;
    char val[CL_NAME_MAX];
    size_t kcap = strlen(cl->owner->prefix) + strlen(tk->id) + 2;
    char *kbuf = an_malloc(kcap);
    int held = kv != NULL && cl_etcd_kv(kv, kbuf, kcap, val, sizeof(val)) == 0;
    if (held && strcmp(val, cl->conf->node) == 0) {
        /* ours under the old lease, still there: move it to the new one */
        cl_etcd_t *e = cl_member_etcd(cl);
        int64_t lease = cl_member_lease(cl);
        if (e && lease)
            cl_etcd_txn(e, kbuf,
                        cl_etcd_put_if_mod_req(kbuf, cl->conf->node, lease,
                                               cl_etcd_int(kv, "mod_revision")),
                        on_released, NULL);
    } else if (held) {
        /* another node took it meanwhile: the local client goes */
        log_info("cluster: client '%s' was claimed by %s while this node's lease was lost: "
                 "closing it here (0x8E)",
                 tk->id, val);
        free(kbuf);
        post_item(cl, worker_home(cl->srv, (const uint8_t *)tk->id, strlen(tk->id)), OWN_IT_KICK,
                  tk);
        return;
    }
    free(kbuf);
    take_free(tk);
}

static void reclaim_all(worker_t *w, cl_t *cl)
{
    cl_etcd_t *e = cl_member_etcd(cl);
    int64_t lease = cl_member_lease(cl);
    if (e == NULL || lease == 0)
        return;
    for (size_t i = 0; i < w->by_sid.nbuckets; i++)
        for (sess_t *s = w->by_sid.buckets[i]; s; s = s->sid_next) {
            if (s->ep == NULL)
                continue;
            cl_take_t *tk = take_new(cl, s->client_id, s->client_id_len);
            char *k = own_key(cl->owner, tk->id);
            if (cl_etcd_create(e, k, cl->conf->node, lease, on_reclaimed, tk) < 0)
                take_free(tk);
            free(k);
        }
}

void cl_owner_lease_back(cl_t *cl)
{
    if (cl->owner == NULL)
        return;
    for (uint32_t i = 0; i < cl->srv->nworkers; i++)
        post_item(cl, i, OWN_IT_RECLAIM, take_new(cl, "", 0));
}

void cl_owner_kick(cl_t *cl, const char *id)
{
    post_item(cl, worker_home(cl->srv, (const uint8_t *)id, strlen(id)), OWN_IT_KICK,
              take_new(cl, id, strlen(id)));
}

void cl_owner_post_adopt(cl_t *cl, uint32_t to, void *ptr)
{
    inbox_vec_t v = {0};
    inbox_item_t it = {.kind = WM_CL_OWNER, .flags = OWN_IT_ADOPT, .ptr = ptr};
    inbox_vec_push(&v, &it);
    inbox_post(&cl->srv->workers[to].inbox, &v);
    inbox_vec_free(&v);
}

void cl_owner_post_move(cl_t *cl, uint32_t to, void *ptr)
{
    inbox_vec_t v = {0};
    inbox_item_t it = {.kind = WM_CL_OWNER, .flags = OWN_IT_MOVE, .ptr = ptr};
    inbox_vec_push(&v, &it);
    inbox_post(&cl->srv->workers[to].inbox, &v);
    inbox_vec_free(&v);
}

static void own_item(worker_t *w, inbox_item_t *it)
{
    cl_take_t *tk = it->ptr;
    if (it->flags == OWN_IT_ADOPT) {
        cl_adopt_item(w, it->ptr);
        return;
    }
    if (it->flags == OWN_IT_MOVE) {
        cl_move_item(w, it);
        return;
    }
    /* a take-over or kick for a session that moved to another worker after
     * the home was read follows it (migrate.h): else the take-over would
     * release the id while the session stays connected there */
    if ((it->flags == OWN_IT_TAKE || it->flags == OWN_IT_KICK) &&
        sess_table_find_id(&w->by_id, (const uint8_t *)tk->id, strlen(tk->id)) == NULL &&
        migrate_hand_on(w, tk->id, strlen(tk->id), it))
        return;
    if (it->flags == OWN_IT_TAKE) {
        own_take(w, it);
        return;
    }
    if (it->flags == OWN_IT_RECLAIM) {
        reclaim_all(w, tk->cl);
    } else { /* OWN_IT_KICK */
        sess_t *s = sess_table_find_id(&w->by_id, (const uint8_t *)tk->id, strlen(tk->id));
        if (s != NULL) {
            if (s->ep)
                sess_take_over(s, "session claimed by another node while the lease was lost");
            sess_destroy(w, s);
        }
    }
    take_free(tk);
}

static void drop_take(inbox_item_t *it)
{
    if (it->flags == OWN_IT_ADOPT)
        cl_adopt_item_drop(it->ptr);
    else if (it->flags == OWN_IT_MOVE)
        cl_move_item_drop(it->ptr);
    else
        take_free(it->ptr);
}

int cl_owner_recv(cl_t *cl, int idx, uint8_t type, const uint8_t *body, uint32_t len)
{
    cl_owner_t *o = cl->owner;
    if (o == NULL)
        return 0; /* no registry here (static members) */
    if (len < 4)
        return -1;
    uint32_t req =
        (uint32_t)body[0] << 24 | (uint32_t)body[1] << 16 | (uint32_t)body[2] << 8 | body[3];
    if (type == CL_F_MOVE_KEEP) { /* comes right before its GIVEN */
        for (cl_claim_t *cm = o->pending; cm; cm = cm->next)
            if (cm->req == req && cm->idx == idx)
                cm->keep = 1;
        return 0;
    }
    if (type == CL_F_OWN_GIVEN) {
        for (cl_claim_t *cm = o->pending; cm; cm = cm->next)
            if (cm->req == req && cm->idx == idx) {
                pending_unlink(o, cm);
                tw_del(&cl->tw, &cm->timer);
                free(cm->blob);
                cm->blob = NULL;
                cm->given = 1;
                if (len > 4) {
                    cm->blob = an_malloc(len - 4);
                    memcpy(cm->blob, body + 4, len - 4);
                    cm->blob_len = len - 4;
                }
                if (++cm->tries > OWN_TRIES)
                    answer(cm, MQTT_RC_SERVER_BUSY);
                else
                    claim_send(cm);
                break;
            }
        return 0;
    }
    if (len < 6)
        return -1;
    uint16_t idlen = (uint16_t)(body[4] << 8 | body[5]);
    if (len != 6u + idlen || memchr(body + 6, 0, idlen) != NULL)
        return -1;
    cl_take_t *tk = an_calloc(1, sizeof(*tk) + idlen + 1u);
    tk->cl = cl;
    tk->idx = idx;
    tk->req = req;
    memcpy(tk->id, body + 6, idlen);
    tk->id[idlen] = '\0';
    post_item(cl, worker_home(cl->srv, body + 6, idlen), OWN_IT_TAKE, tk);
    return 0;
}

/* ---- releases ---- */

static void on_released(void *arg, const cl_etcd_res_t *res)
{
    (void)res;
    if (arg)
        atomic_fetch_sub_explicit((_Atomic uint32_t *)arg, 1, memory_order_relaxed);
}

static void release(worker_t *w, cl_t *cl, const char *id)
{
    cl_etcd_t *e = cl_member_etcd(cl);
    if (e == NULL || id == NULL)
        return;
    recent_forget(cl, id);
    char *k = own_key(cl->owner, id);
    _Atomic uint32_t *inflight = &cl->owner->wk[w->id].rel[id_slot(id, strlen(id))];
    atomic_fetch_add_explicit(inflight, 1, memory_order_relaxed);
    if (cl_etcd_delete_if(e, k, cl->conf->node, on_released, (void *)inflight) < 0)
        atomic_fetch_sub_explicit(inflight, 1, memory_order_relaxed);
    free(k);
    OWN_INC(cl->owner->released);
}

static void on_event(worker_t *w, event_kind_t kind, const void *data, void *user)
{
    cl_t *cl = user;
    if (kind == EVENT_SESSION_EXPIRED) {
        release(w, cl, ((const event_session_expired_t *)data)->client.client_id);
        return;
    }
    const event_disconnected_t *d = data;
    const char *id = d->client.client_id;
    if (id == NULL || d->reason_code == MQTT_RC_SESSION_TAKEN_OVER)
        return; /* taken over here: the new connection keeps the claim */
    sess_t *s = sess_table_find_id(&w->by_id, (const uint8_t *)id, strlen(id));
    if (s == NULL || s->expiry == 0)
        release(w, cl, id);
}

/* ---- life ---- */

int cl_owner_init(cl_t *cl)
{
    if (cl->conf->etcd[0] == '\0')
        return 0;
    cl_owner_t *o = an_calloc(1, sizeof(*o));
    o->cl = cl;
    snprintf(o->prefix, sizeof(o->prefix), "/antenna/%s/clients/", cl->conf->name);
    o->wk = an_calloc(cl->srv->nworkers, sizeof(*o->wk));
    o->later = an_calloc(cl->srv->nworkers, sizeof(*o->later));
    o->recent = cl_recent_new();
    cl->owner = o;
    static const worker_inbox_kind_t kind = {.run = own_item, .drop = drop_take};
    worker_inbox_register(cl->srv, WM_CL_OWNER, &kind);
    proto_gate_register(cl->srv, own_gate, cl);
    if (event_listen(&cl->srv->events, EVENT_CLIENT_DISCONNECTED, on_event, cl) < 0 ||
        event_listen(&cl->srv->events, EVENT_SESSION_EXPIRED, on_event, cl) < 0) {
        log_error("cluster: cannot listen to session events");
        return -1;
    }
    return 0;
}

void cl_owner_stop(cl_t *cl)
{
    cl_owner_t *o = cl->owner;
    if (o == NULL)
        return;
    while (o->pending) {
        cl_claim_t *cm = o->pending;
        o->pending = cm->next;
        tw_del(&cl->tw, &cm->timer);
        answer(cm, MQTT_RC_SERVER_UNAVAILABLE);
    }
}

void cl_owner_free(cl_t *cl)
{
    cl_owner_t *o = cl->owner;
    if (o == NULL)
        return;
    for (uint32_t i = 0; i < cl->srv->nworkers; i++) {
        for (uint32_t j = 0; j < o->wk[i].ntombs; j++)
            free(o->wk[i].tombs[j].id);
        free(o->wk[i].tombs);
    }
    free(o->wk);
    for (uint32_t i = 0; i < cl->srv->nworkers; i++)
        inbox_vec_free(&o->later[i]);
    free(o->later);
    cl_recent_free(o->recent);
    free(o);
    cl->owner = NULL;
}

void cl_owner_metrics(cl_t *cl, module_metrics_t *mm)
{
    cl_owner_t *o = cl->owner;
    if (o == NULL)
        return;
    module_metrics_family(mm, "antenna_cluster_client_claims_total", "counter",
                          "Client-id claims by outcome (docs/cluster.md).");
#define OWN_LINE(what, x)                                                                          \
    module_metrics_printf(                                                                         \
        mm, "antenna_cluster_client_claims_total{outcome=\"" what "\"} %" PRIu64 "\n",             \
        atomic_load_explicit(&(x), memory_order_relaxed))
    OWN_LINE("sent", o->claims);
    OWN_LINE("created", o->created);
    OWN_LINE("taken_from_gone", o->stolen);
    OWN_LINE("asked_owner", o->takes_sent);
    OWN_LINE("handed_over", o->takes_served);
    OWN_LINE("refused", o->refused);
    OWN_LINE("released", o->released);
    OWN_LINE("adoption_pending", o->adopt_waits);
    OWN_LINE("adoption_pending_kept", o->adopt_kept);
    OWN_LINE("adopted_here", o->adopted_here);
    OWN_LINE("adopted_take", o->adopted_take);
#undef OWN_LINE
}
