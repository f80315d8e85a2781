/* cl_move.c -- a session moving between two live nodes loses nothing
 * published for it while it moves (cl_int.h; docs/cluster.md "Client-id
 * ownership", "A session that moves between live nodes").
 *
 * The take-over (cl_owner.c): client X's persistent session is on node A,
 * X reconnects to node B, B claims the id and asks A (CL_F_OWN_TAKE); A
 * closes X, encodes the session and sends it (CL_F_OWN_GIVEN); B installs
 * it.  Before this file A ended the session there, so its routes went at
 * once, and a message published for X between that and B's routes
 * reaching the publisher's node matched nothing.  Now the window is closed
 * the way an adopter closes a dead node's (cl_adopt.c, cl_hand.c):
 *
 *   A  own_take: the session's state goes into the hand-over as before,
 *      but the session stays on A as a "moved" tombstone (mv_out_t): offline,
 *      its subscriptions (so its routes) kept, emptied of what was handed
 *      over and no longer durable (its records leave A's store at once: A
 *      keeps nothing stored for a client it does not own); what reaches it
 *      from now on queues there.  CL_F_MOVE_KEEP {req} goes before the
 *      GIVEN: "I keep what arrives for it: ask me".
 *   B  the claim made after the GIVEN (cl_owner.c claimed): instead of
 *      resuming the CONNECT, the home worker installs the session offline
 *      (its stored messages keyed from a range reserved first, as an
 *      adopter's), the link thread waits until every member whose link is
 *      up has its routes (the route barrier a SUBACK waits for,
 *      MOVE_ROUTES_MS at most) and then asks A (CL_F_MOVE_ASK {req, id}).
 *   A  the home worker sends what its tombstone queued (CL_F_MOVE_KEPT {req,
 *      id, the copies as CL_F_MSG frames}) and empties it; the tombstone
 *      lingers MOVE_LINGER_MS more, still subscribed, for a publish that
 *      was routed to A before B's routes were known on its node but
 *      reaches A only now (a worker's turn, a commit held the route); then
 *      CL_F_MOVE_LATE {req, id, copies} with what came meanwhile, and the
 *      tombstone ends (its routes go).  Never asked within MOVE_KEEP_MS
 *      (B died, an older B): it ends, logged with what it held.
 *   B  the copies go into the session, still offline, ahead of what came
 *      the direct way (keys from the reserved range), each one unless the
 *      session holds it already; only then the CONNECT resumes (session
 *      present 1).  Late copies go to the session as a new publish would.
 *   B  a clean-start CONNECT instead (it wants nothing of A's): once its
 *      claim is made, CL_F_MOVE_DROP {req, id}; A ends the tombstone at
 *      once (its routes go) rather than after MOVE_KEEP_MS.
 *
 * The will (MQTT 5 Will Delay Interval): a connected client's will is
 * published by A when the take closes it (as a take-over on one node).  A
 * delayed will pending in an offline session is taken into the tombstone
 * (mv_out_t.will, no timer): B's ask means the session resumed on a new
 * connection made before the delay passed: cancelled [MQTT-3.1.3-9]; a
 * MOVE_DROP or a tombstone never asked means it ended: published then.
 * A draining node waits for its tombstones (cl_move_tombstones).
 *
 * Dedup (B, per moved-in session, MOVE_DEDUP_MS): while B's routes and A's
 * are both known on a node, a message goes both ways.  The session is
 * marked adopt_dedup, so sess_deliver asks srv->dedup_hook about every
 * direct copy: this file's hook (chained in front of the adopter's)
 * drops the direct twin of a copy merged, and remembers the others (at
 * most MOVE_SEEN_MAX), so a late copy that came the direct way too is not
 * queued twice.  "The same message" is the adopter's test (cl_adopt_same:
 * the same publish id when both copies have one, msg.h; else topic,
 * payload, properties, publish time when both know it).
 *
 * Threads: the etcd thread starts a move-in (cl_move_in_begin), the home
 * workers install, merge, keep tombstones and run the hook (mv_wk_t: each
 * worker's own), the link thread waits for the routes, sends and receives
 * the frames (pending: its own).  A move-in (mv_in_t) is owned by one of
 * them at a time, handed on by inbox items and cl_post.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_link_int.h"
#include "log.h"
#include "migrate.h"
#include "mqtt_props.h"
#include "persist.h"
#include "proto.h"
#include "router.h"
#include "sess.h"
#include "util.h"

#define MOVE_KEEP_MS 10000  /* A keeps a tombstone this long at most when not asked */
#define MOVE_LINGER_MS 500  /* ... and this long after its answer, for late copies */
#define MOVE_ROUTES_MS 2000 /* B waits for the route barrier this long at most */
#define MOVE_ASK_MS 2000    /* ... and for A's answer */
#define MOVE_POLL_MS 5      /* the barrier looked at this often (marks: every 20 ms at most) */
#define MOVE_DEDUP_MS 10000 /* B remembers a moved-in session's copies this long */
#define MOVE_SEEN_MAX 4096  /* ... at most this many */
#define MOVE_SEQ_RANGE (1ull << 32)

/* ---- state ---- */

/* A's tombstone of a session that moved away (its home worker's). */
typedef struct mv_out_s {
    tw_timer_t timer;
    cl_t *cl;
    worker_t *w;
    struct mv_out_s *next;
    uint64_t sid;
    int idx;      /* the node it moved to */
    int answered; /* its copies sent: lingering */
    uint32_t req;
    msg_t *will; /* its delayed will (MQTT 5), held until B says what became of the
                  * session: resumed (MOVE_ASK: cancelled) or ended (published) */
    char id[];
} mv_out_t;

/* B's memory of one moved-in session's copies (dedup_hook). */
typedef struct {
    msg_t *m;
    uint8_t kept; /* 1: merged from A (drops its direct twin); 0: came directly */
} mv_seen_t;

typedef struct {
    uint64_t sid, until;
    mv_seen_t *v;
    uint32_t n, cap;
    uint8_t late_done; /* A's late copies came: direct ones need no memory now */
} mv_dd_t;

typedef struct {
    mv_dd_t *dd; /* sorted by sid */
    size_t ndd, cap;
    mv_out_t *outs;
    char pad[64];
} mv_wk_t;

/* A copy from A, for one session. */
typedef struct {
    msg_t *m;
    uint8_t qos, retain;
} mv_msg_t;

/* One move into this node (B). */
typedef struct mv_in_s {
    cl_t *cl;
    proto_gate_t *g;
    int idx; /* A */
    uint32_t req;
    uint8_t *blob;
    uint32_t blob_len;
    uint64_t seq_next, seq_end; /* keys reserved on the home worker */
    uint64_t t0;                /* monotonic ms, the claim answered */
    uint64_t target, deadline;  /* link thread: route_done to reach; by when */
    tw_timer_t timer;
    struct mv_in_s *next; /* pending (link thread): waiting for the routes, then asked */
    int asked;
    mv_msg_t *v;
    uint32_t n;
    uint16_t id_len;
    char id[];
} mv_in_t;

struct cl_move_s {
    cl_t *cl;
    mv_wk_t *wk; /* [nworkers] */
    mv_in_t *pending;
    int (*next_hook)(worker_t *w, sess_t *s, const msg_t *m, void *user);
    void *next_user;
    _Atomic uint64_t ins, outs, kept, merged, late, skipped, twins, timeouts, lost, wait_ms;
    _Atomic uint64_t discarded;                        /* tombstones ended by a MOVE_DROP */
    _Atomic uint64_t tombs;                            /* tombstones alive (a drain waits) */
    _Atomic uint64_t wills_cancelled, wills_published; /* tombstones' delayed wills */
};

#define MV_INC(x, n) atomic_fetch_add_explicit(&(x), (n), memory_order_relaxed)

/* Worker items (WM_CL_OWNER, cl_move_item). */
enum { MV_IT_INSTALL = 1, MV_IT_MERGE, MV_IT_ASK, MV_IT_LATE, MV_IT_DROP };

typedef struct {
    int kind;
    cl_t *cl;
    mv_in_t *mi; /* INSTALL, MERGE */
    int idx;     /* ASK, LATE, DROP: the peer */
    uint32_t req;
    mv_msg_t *v; /* LATE */
    uint32_t n;
    int final; /* LATE: A's last frame for it (else a MOVE_KEPT after the timeout) */
    uint16_t id_len;
    char id[];
} mv_item_t;

static void put32(cl_buf_t *b, uint32_t v)
{
    cl_buf_reserve(b, 4);
    uint8_t *p = b->p + b->len;
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    b->len += 4;
}

/* What a queued message counts against limits.max_queued_bytes (sess.h:
 * the queue ring keeps the sum). */
static uint64_t queued_bytes(const msg_t *m)
{
    return m ? (uint64_t)m->topic_len + m->props_len + m->payload_len : 0;
}

static void msgs_free(mv_msg_t *v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        msg_unref(&v[i].m);
    free(v);
}

static void mi_free(mv_in_t *mi)
{
    free(mi->blob);
    msgs_free(mi->v, mi->n);
    free(mi);
}

static mv_item_t *item_new(cl_t *cl, int kind, const char *id, size_t len)
{
    mv_item_t *it = an_calloc(1, sizeof(*it) + len + 1u);
    it->kind = kind;
    it->cl = cl;
    it->id_len = (uint16_t)len;
    memcpy(it->id, id, len);
    return it;
}

static void item_free(mv_item_t *it)
{
    if (it->mi != NULL)
        mi_free(it->mi);
    msgs_free(it->v, it->n);
    free(it);
}

/* ---- B's memory of a moved-in session's copies ---- */

static size_t dd_lower(const mv_wk_t *k, uint64_t sid)
{
    size_t lo = 0, hi = k->ndd;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (k->dd[mid].sid < sid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void dd_clear(mv_dd_t *d)
{
    for (uint32_t i = 0; i < d->n; i++)
        msg_unref(&d->v[i].m);
    free(d->v);
    d->v = NULL;
    d->n = d->cap = 0;
}

/* The memory of session sid on this worker (live), or NULL; an expired one
 * goes. */
static mv_dd_t *dd_find(mv_wk_t *k, uint64_t sid, uint64_t now)
{
    size_t i = dd_lower(k, sid);
    if (i == k->ndd || k->dd[i].sid != sid)
        return NULL;
    if (k->dd[i].until > now)
        return &k->dd[i];
    dd_clear(&k->dd[i]);
    memmove(&k->dd[i], &k->dd[i + 1], (k->ndd - i - 1) * sizeof(*k->dd));
    k->ndd--;
    return NULL;
}

static mv_dd_t *dd_open(mv_wk_t *k, uint64_t sid, uint64_t now)
{
    /* the expired ones go first (one move in a while: a short list) */
    for (size_t i = 0; i < k->ndd;)
        if (k->dd[i].until <= now) {
            dd_clear(&k->dd[i]);
            memmove(&k->dd[i], &k->dd[i + 1], (k->ndd - i - 1) * sizeof(*k->dd));
            k->ndd--;
        } else {
            i++;
        }
    size_t i = dd_lower(k, sid);
    if (i < k->ndd && k->dd[i].sid == sid) {
        k->dd[i].until = now + MOVE_DEDUP_MS;
        return &k->dd[i];
    }
    if (k->ndd == k->cap) {
        k->cap = k->cap ? 2 * k->cap : 8;
        k->dd = an_realloc(k->dd, k->cap * sizeof(*k->dd));
    }
    memmove(&k->dd[i + 1], &k->dd[i], (k->ndd - i) * sizeof(*k->dd));
    k->ndd++;
    k->dd[i] = (mv_dd_t){.sid = sid, .until = now + MOVE_DEDUP_MS};
    return &k->dd[i];
}

static void dd_note(mv_dd_t *d, msg_t *m, int kept)
{
    if (d->n >= MOVE_SEEN_MAX)
        return;
    if (d->n == d->cap) {
        d->cap = d->cap ? 2 * d->cap : 16;
        d->v = an_realloc(d->v, d->cap * sizeof(*d->v));
    }
    d->v[d->n++] = (mv_seen_t){.m = msg_ref(m), .kept = (uint8_t)kept};
}

/* The entry of a copy like m that came the way `kept` says, or NULL. */
static mv_seen_t *dd_holds(mv_dd_t *d, const msg_t *m, int kept)
{
    for (uint32_t i = 0; i < d->n; i++)
        if (d->v[i].m != NULL && d->v[i].kept == kept && cl_adopt_same(d->v[i].m, m))
            return &d->v[i];
    return NULL;
}

/* srv->dedup_hook, in front of the adopter's (next_hook): for a session
 * marked adopt_dedup, on its home worker: 1 drops m (the direct twin of a
 * copy merged from A); else m is remembered as come directly. */
static int dedup_hook(worker_t *w, sess_t *s, const msg_t *m, void *user)
{
    cl_move_t *mv = user;
    if (mv->next_hook && mv->next_hook(w, s, m, mv->next_user))
        return 1;
    mv_dd_t *d = dd_find(&mv->wk[w->id], s->sid, w->now);
    if (d == NULL) {
        if (mv->next_hook == NULL)
            s->adopt_dedup = 0;
        return 0;
    }
    s->adopt_dedup = 1; /* the adopter's hook clears it when it has nothing */
    mv_seen_t *e = dd_holds(d, m, 1);
    if (e != NULL) {
        msg_unref(&e->m);
        MV_INC(mv->twins, 1);
        return 1;
    }
    if (!d->late_done)
        dd_note(d, (msg_t *)m, 0);
    return 0;
}

/* ---- the copies on the wire: CL_F_MSG frames, one a copy ---- */

/* Frames of the queued messages of s (the granted QoS and retain flag of
 * each entry, and its publish id when peer idx reads them) into b; the
 * count. */
static uint32_t enc_queue(worker_t *w, cl_t *cl, int idx, sess_t *s, cl_buf_t *b)
{
    int ids = idx > 0 && CL_STAT_GET(cl->lstats[idx].msg_ids) != 0;
    uint32_t n = 0;
    for (uint32_t i = 0; i < sq_len(&s->queue); i++) {
        const sq_entry_t *e = sq_at(&s->queue, i);
        if (e->m == NULL || msg_expired(e->m, w->now))
            continue;
        cl_msg_t x = cl_msg_of(e->m, w->now);
        x.qos = e->qos;
        x.flags = e->retain ? CL_MSG_RETAIN : 0;
        if (ids && e->m->id_seq != 0) {
            x.flags |= CL_MSG_ID;
            x.id_epoch = e->m->id_epoch;
            x.id_seq = e->m->id_seq;
        }
        cl_enc_msg(b, CL_F_MSG, &x);
        n++;
    }
    return n;
}

/* The copies in frames p..p+len: -1 malformed. */
static int dec_copies(const uint8_t *p, uint32_t len, mv_msg_t **out, uint32_t *count)
{
    mv_msg_t *v = NULL;
    uint32_t n = 0, cap = 0;
    uint64_t now = an_now_ms();
    while (len > 0) {
        uint8_t type;
        const uint8_t *body;
        uint32_t blen;
        long k = cl_frame_next(p, len, len, &type, &body, &blen);
        cl_msg_t x;
        if (k <= 0 || type != CL_F_MSG || cl_dec_msg(body, blen, &x) < 0 || x.topic_len == 0) {
            msgs_free(v, n);
            return -1;
        }
        msg_t *m =
            msg_new_v5(x.topic, x.topic_len, x.props, x.props_len, x.payload, x.payload_len, x.qos,
                       (x.flags & CL_MSG_RETAIN) != 0, x.expiry_ms ? now + x.expiry_ms : 0);
        m->published_at = x.published_at;
        m->id_epoch = x.id_epoch; /* its publish id (id_seq 0: none came) */
        m->id_seq = x.id_seq;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            v = an_realloc(v, cap * sizeof(*v));
        }
        v[n++] = (mv_msg_t){.m = m, .qos = x.qos, .retain = (x.flags & CL_MSG_RETAIN) != 0};
        p += k;
        len -= (uint32_t)k;
    }
    *out = v;
    *count = n;
    return 0;
}

/* ---- link thread: frames out ---- */

typedef struct {
    int idx;
    uint8_t type;
    cl_buf_t body;
} mv_send_t;

static void send_task(cl_t *cl, void *arg)
{
    mv_send_t *sd = arg;
    cl_conn_t *c = cl->links ? cl->links->peers[sd->idx].conn : NULL;
    if (c != NULL && c->up && !atomic_load(&cl->stopping)) {
        put32(&c->out, (uint32_t)(1 + sd->body.len));
        cl_buf_reserve(&c->out, 1 + sd->body.len);
        c->out.p[c->out.len++] = sd->type;
        if (sd->body.len)
            memcpy(c->out.p + c->out.len, sd->body.p, sd->body.len);
        c->out.len += sd->body.len;
        if (!(c->ev.events & EV_WRITE))
            cl_conn_flush(cl, c);
    }
    cl_buf_free(&sd->body);
    free(sd);
}

/* {u32 req | u16 id len | id} then the rest. */
static mv_send_t *send_new(int idx, uint8_t type, uint32_t req, const char *id, size_t len)
{
    mv_send_t *sd = an_calloc(1, sizeof(*sd));
    sd->idx = idx;
    sd->type = type;
    put32(&sd->body, req);
    cl_buf_reserve(&sd->body, 2 + len);
    sd->body.p[sd->body.len++] = (uint8_t)(len >> 8);
    sd->body.p[sd->body.len++] = (uint8_t)len;
    memcpy(sd->body.p + sd->body.len, id, len);
    sd->body.len += len;
    return sd;
}

static void send_post(cl_t *cl, mv_send_t *sd)
{
    if (cl_post(cl, send_task, sd) < 0) {
        cl_buf_free(&sd->body);
        free(sd);
    }
}

static void post_item(cl_t *cl, uint32_t to, mv_item_t *it)
{
    cl_owner_post_move(cl, to, it);
}

/* ---- A: the tombstone ---- */

static mv_out_t **out_find(mv_wk_t *k, const char *id, size_t len)
{
    for (mv_out_t **pp = &k->outs; *pp; pp = &(*pp)->next)
        if (strlen((*pp)->id) == len && memcmp((*pp)->id, id, len) == 0)
            return pp;
    return NULL;
}

/* What becomes of a tombstone's delayed will when it ends. */
enum { WILL_CANCEL, WILL_PUBLISH };

/* The tombstone's delayed will, settled: cancelled (the session resumed
 * on a new connection before the Will Delay Interval passed [MQTT-3.1.3-9])
 * or published now (the session ended: a clean start elsewhere, or nobody
 * resumed it [MQTT5 3.1.2.5]). */
static void out_will(mv_out_t *o, int fate)
{
    if (o->will == NULL)
        return;
    cl_move_t *mv = o->cl->move;
    msg_t *will = o->will;
    o->will = NULL;
    if (fate == WILL_PUBLISH) {
        MV_INC(mv->wills_published, 1);
        router_publish(o->w, will, NULL);
    } else {
        MV_INC(mv->wills_cancelled, 1);
        log_limited(5000, AN_LOG_INFO,
                    "cluster: client '%s' resumed its session on another node before its "
                    "will delay passed: will cancelled",
                    o->id);
    }
    msg_unref(&will);
}

/* The tombstone o ends: its session goes (with its routes), its will as
 * `will` says; what it still queued goes into *v (new references; NULL:
 * dropped). */
static void out_end(mv_wk_t *k, mv_out_t *o, mv_msg_t **v, uint32_t *n, int will)
{
    worker_t *w = o->w;
    atomic_fetch_sub_explicit(&o->cl->move->tombs, 1, memory_order_relaxed);
    for (mv_out_t **pp = &k->outs; *pp; pp = &(*pp)->next)
        if (*pp == o) {
            *pp = o->next;
            break;
        }
    tw_del(&w->tw, &o->timer);
    sess_t *s = sess_table_find_id(&w->by_id, (const uint8_t *)o->id, strlen(o->id));
    if (s != NULL && s->sid == o->sid) {
        if (v != NULL) {
            *v = sq_len(&s->queue) ? an_malloc(sq_len(&s->queue) * sizeof(**v)) : NULL;
            *n = 0;
            for (uint32_t i = 0; i < sq_len(&s->queue); i++) {
                const sq_entry_t *e = sq_at(&s->queue, i);
                if (e->m != NULL)
                    (*v)[(*n)++] =
                        (mv_msg_t){.m = msg_ref(e->m), .qos = e->qos, .retain = e->retain};
            }
        }
        sess_destroy(w, s);
    }
    out_will(o, will); /* after its routes went, as sess_destroy publishes one */
    free(o);
}

static void out_timer(tw_timer_t *t)
{
    mv_out_t *o = container_of(t, mv_out_t, timer);
    cl_t *cl = o->cl;
    worker_t *w = o->w;
    cl_move_t *mv = cl->move;
    sess_t *s = sess_table_find_id(&w->by_id, (const uint8_t *)o->id, strlen(o->id));
    if (s != NULL && s->sid == o->sid && o->answered) {
        /* the linger is over: what came since the answer goes to B */
        mv_send_t *sd = send_new(o->idx, CL_F_MOVE_LATE, o->req, o->id, strlen(o->id));
        uint32_t n = enc_queue(w, cl, o->idx, s, &sd->body);
        MV_INC(mv->late, n);
        if (n > 0)
            log_limited(5000, AN_LOG_INFO,
                        "cluster: %u messages for client '%s' came here after its session "
                        "moved: sent on",
                        n, o->id);
        send_post(cl, sd); /* also empty: B stops remembering the direct copies */
    } else if (s != NULL && s->sid == o->sid && sq_len(&s->queue) > 0) {
        MV_INC(mv->lost, sq_len(&s->queue));
        log_warn("cluster: client '%s' moved to another node, which did not ask within %u ms "
                 "for the %u messages kept for it here: dropped",
                 o->id, MOVE_KEEP_MS, sq_len(&s->queue));
    }
    out_end(&mv->wk[w->id], o, NULL, NULL, WILL_PUBLISH);
}

int cl_move_out_keep(worker_t *w, cl_t *cl, sess_t *s, int idx, uint32_t req)
{
    cl_move_t *mv = cl->move;
    if (mv == NULL || idx <= 0)
        return 0;
    mv_wk_t *k = &mv->wk[w->id];
    mv_out_t **old = out_find(k, s->client_id, s->client_id_len);
    if (old != NULL) /* cannot be: a tombstone is never resumed; keep one */
        out_end(k, *old, NULL, NULL, WILL_PUBLISH);
    /* handed over: what it had goes; not durable here any more */
    sq_clear(&s->inflight);
    sq_clear(&s->queue);
    sess_set_expiry(s, 0);
    persist_session_update(w, s);
    mv_out_t *o = an_calloc(1, sizeof(*o) + s->client_id_len + 1u);
    o->cl = cl;
    o->w = w;
    o->sid = s->sid;
    o->idx = idx;
    o->req = req;
    /* a new connection to the session was made on B before its will delay
     * passed (else the session's timer published it): whether it resumes
     * the session (the will is cancelled) or starts clean (the session
     * ends: the will goes) only B knows; held, without its timer, until B
     * says (MOVE_ASK, MOVE_DROP) or the tombstone ends unasked */
    o->will = sess_will_take(s);
    memcpy(o->id, s->client_id, s->client_id_len);
    o->next = k->outs;
    k->outs = o;
    tw_timer_init(&o->timer, out_timer);
    tw_add(&w->tw, &o->timer, w->now + MOVE_KEEP_MS);
    MV_INC(mv->outs, 1);
    MV_INC(mv->tombs, 1);
    return 1;
}

static int out_take(worker_t *w, cl_t *cl, const char *id, size_t len, mv_msg_t **v, uint32_t *n,
                    int will)
{
    cl_move_t *mv = cl->move;
    *v = NULL;
    *n = 0;
    if (mv == NULL)
        return 0;
    mv_wk_t *k = &mv->wk[w->id];
    mv_out_t **pp = out_find(k, id, len);
    if (pp == NULL)
        return 0;
    out_end(k, *pp, v, n, will);
    return 1;
}

uint64_t cl_move_tombstones(cl_t *cl)
{
    return cl->move ? atomic_load_explicit(&cl->move->tombs, memory_order_relaxed) : 0;
}

int cl_move_out_here(worker_t *w, cl_t *cl, const char *id, size_t len)
{
    return cl->move != NULL && out_find(&cl->move->wk[w->id], id, len) != NULL;
}

/* B asks (on the home worker): the copies kept so far go, the tombstone
 * lingers for late ones. */
static void out_ask(worker_t *w, mv_item_t *it)
{
    cl_move_t *mv = it->cl->move;
    mv_send_t *sd = send_new(it->idx, CL_F_MOVE_KEPT, it->req, it->id, it->id_len);
    mv_out_t **pp = out_find(&mv->wk[w->id], it->id, it->id_len);
    sess_t *s = pp ? sess_table_find_id(&w->by_id, (const uint8_t *)it->id, it->id_len) : NULL;
    if (s != NULL && s->sid == (*pp)->sid && (*pp)->idx == it->idx) {
        mv_out_t *o = *pp;
        MV_INC(mv->kept, enc_queue(w, it->cl, it->idx, s, &sd->body));
        sq_clear(&s->queue);
        out_will(o, WILL_CANCEL); /* B resumed the session */
        o->answered = 1;
        o->req = it->req;
        tw_add(&w->tw, &o->timer, w->now + MOVE_LINGER_MS);
    }
    /* else: nothing kept (ended, or never): an empty answer */
    send_post(it->cl, sd);
}

/* B claimed the id with a clean start (MOVE_DROP, on the home worker): it
 * needs nothing the tombstone holds; the session ends here at once, its
 * routes with it, its delayed will published (a clean start ends a
 * session on one node the same way), instead of waiting MOVE_KEEP_MS. */
static void out_drop(worker_t *w, mv_item_t *it)
{
    cl_move_t *mv = it->cl->move;
    mv_wk_t *k = &mv->wk[w->id];
    mv_out_t **pp = out_find(k, it->id, it->id_len);
    if (pp == NULL || (*pp)->idx != it->idx || (*pp)->req != it->req || (*pp)->answered)
        return; /* ended already, or another move's */
    mv_out_t *o = *pp;
    sess_t *s = sess_table_find_id(&w->by_id, (const uint8_t *)it->id, it->id_len);
    uint32_t queued = s != NULL && s->sid == o->sid ? sq_len(&s->queue) : 0;
    MV_INC(mv->discarded, 1);
    log_limited(5000, AN_LOG_INFO,
                "cluster: client '%s' started a clean session on another node: its old "
                "session ends here (%u messages kept for it dropped)",
                o->id, queued);
    out_end(k, o, NULL, NULL, WILL_PUBLISH);
}

void cl_move_drop_send(cl_t *cl, int idx, uint32_t req, const char *id, size_t len)
{
    if (cl->move == NULL || idx <= 0)
        return;
    send_post(cl, send_new(idx, CL_F_MOVE_DROP, req, id, len));
}

/* ---- B: the move in ---- */

/* The copies v go into s (offline, on its home worker) ahead of what came
 * the direct way (entries keyed at or above end, or not stored), each one
 * unless s holds it already or it came the direct way (d); each merged
 * drops its direct twin later (d).  Returns how many were queued. */
static uint32_t merge(worker_t *w, sess_t *s, mv_dd_t *d, mv_msg_t *v, uint32_t n,
                      uint64_t *seq_next, uint64_t end)
{
    uint32_t k = sq_len(&s->queue);
    while (k > 0 && (sq_at(&s->queue, k - 1)->seq == 0 || sq_at(&s->queue, k - 1)->seq >= end))
        k--;
    uint32_t nd = sq_len(&s->queue) - k, merged = 0;
    sq_entry_t *tail = nd ? an_malloc(nd * sizeof(*tail)) : NULL;
    for (uint32_t i = nd; i-- > 0;) {
        tail[i] = *sq_at(&s->queue, k + i);
        sq_bytes_sub(&s->queue, queued_bytes(tail[i].m));
        sq_remove(&s->queue, k + i);
    }
    int durable = s->expiry != 0;
    for (uint32_t i = 0; i < n; i++) {
        msg_t *m = v[i].m;
        if (msg_expired(m, w->now) || cl_adopt_sess_holds(s, m) || (d && dd_holds(d, m, 0)))
            continue;
        int dup = 0;
        for (uint32_t t = 0; t < nd && !dup; t++)
            dup = tail[t].m != NULL && cl_adopt_same(tail[t].m, m);
        if (dup)
            continue;
        sq_entry_t e = {
            .m = msg_ref(m), .qos = v[i].qos, .retain = v[i].retain, .state = SQ_QUEUED};
        if (durable && *seq_next < end) {
            e.seq = (*seq_next)++;
            persist_queue_put(w, s->client_id, s->client_id_len, e.seq, m, e.qos, e.retain,
                              SQ_QUEUED, 0);
        }
        sq_push(&s->queue, &e);
        sq_bytes_add(&s->queue, queued_bytes(m));
        if (d)
            dd_note(d, m, 1);
        merged++;
    }
    for (uint32_t t = 0; t < nd; t++) {
        sq_push(&s->queue, &tail[t]);
        sq_bytes_add(&s->queue, queued_bytes(tail[t].m));
    }
    free(tail);
    return merged;
}

uint8_t cl_move_out_reinstall(worker_t *w, cl_t *cl, proto_gate_t *g, int handed,
                              void (*install)(worker_t *w, proto_gate_t *g))
{
    if (!handed && !g->clean_start) /* its session is another node's now */
        return MQTT_RC_SERVER_BUSY;
    mv_msg_t *left = NULL;
    uint32_t nleft = 0;
    /* a clean start ends the session (its will goes, as on one node);
     * else the client resumed it here */
    out_take(w, cl, g->client_id, g->id_len, &left, &nleft,
             g->clean_start ? WILL_PUBLISH : WILL_CANCEL);
    if (install != NULL)
        install(w, g);
    sess_t *s = sess_table_find_id(&w->by_id, (const uint8_t *)g->client_id, g->id_len);
    if (s != NULL && nleft > 0 && !g->clean_start) {
        uint64_t seq = persist_reserve_seq(w->srv, nleft);
        MV_INC(cl->move->merged, merge(w, s, NULL, left, nleft, &seq, seq + nleft));
    }
    msgs_free(left, nleft);
    return 0;
}

static void answer_gate(mv_in_t *mi, uint8_t rc5)
{
    proto_gate_t *g = mi->g;
    mi->g = NULL;
    if (g != NULL) {
        g->refuse_rc5 = rc5;
        proto_gate_post(g);
    }
}

static void wait_tick(tw_timer_t *t);
static void ask_timeout(tw_timer_t *t);
static void pending_unlink(cl_move_t *mv, mv_in_t *mi);

/* Link thread: the routes are known everywhere (or MOVE_ROUTES_MS
 * passed): ask A. */
static void ask(cl_t *cl, mv_in_t *mi)
{
    cl_move_t *mv = cl->move;
    cl_conn_t *c = cl->links ? cl->links->peers[mi->idx].conn : NULL;
    if (c == NULL || !c->up || atomic_load(&cl->stopping)) {
        log_limited(5000, AN_LOG_WARN,
                    "cluster: client '%s' moved here from %s, whose link is down: resumed "
                    "without what it kept",
                    mi->id, cl->nodes[mi->idx].name);
        MV_INC(mv->timeouts, 1);
        pending_unlink(mv, mi);
        mv_item_t *it = item_new(cl, MV_IT_MERGE, mi->id, mi->id_len);
        it->mi = mi;
        post_item(cl, mi->g->w->id, it);
        return;
    }
    mv_send_t *sd = send_new(mi->idx, CL_F_MOVE_ASK, mi->req, mi->id, mi->id_len);
    mi->asked = 1;
    tw_timer_init(&mi->timer, ask_timeout);
    tw_add(&cl->tw, &mi->timer, cl->now + MOVE_ASK_MS);
    send_task(cl, sd);
}

static void wait_check(cl_t *cl, mv_in_t *mi)
{
    uint64_t posted, done;
    cl_route_progress(cl, &posted, &done);
    uint64_t now = an_now_ms();
    if (done >= mi->target || now >= mi->deadline) {
        if (done < mi->target)
            log_limited(5000, AN_LOG_WARN,
                        "cluster: client '%s' moving here: not every member acknowledged its "
                        "routes within %u ms: asking %s anyway",
                        mi->id, MOVE_ROUTES_MS, cl->nodes[mi->idx].name);
        ask(cl, mi);
        return;
    }
    tw_timer_init(&mi->timer, wait_tick);
    tw_add(&cl->tw, &mi->timer, now + MOVE_POLL_MS);
}

static void wait_tick(tw_timer_t *t)
{
    mv_in_t *mi = container_of(t, mv_in_t, timer);
    wait_check(mi->cl, mi);
}

/* Posted by the home worker once the session is installed (its route
 * changes were posted before this). */
static void wait_task(cl_t *cl, void *arg)
{
    mv_in_t *mi = arg;
    uint64_t done;
    if (atomic_load(&cl->stopping) || cl->links == NULL) {
        answer_gate(mi, MQTT_RC_SERVER_UNAVAILABLE);
        mi_free(mi);
        return;
    }
    mi->next = cl->move->pending;
    cl->move->pending = mi;
    cl_route_progress(cl, &mi->target, &done);
    mi->deadline = an_now_ms() + MOVE_ROUTES_MS;
    wait_check(cl, mi);
}

static void pending_unlink(cl_move_t *mv, mv_in_t *mi)
{
    for (mv_in_t **pp = &mv->pending; *pp; pp = &(*pp)->next)
        if (*pp == mi) {
            *pp = mi->next;
            return;
        }
}

static void ask_timeout(tw_timer_t *t)
{
    mv_in_t *mi = container_of(t, mv_in_t, timer);
    cl_t *cl = mi->cl;
    pending_unlink(cl->move, mi);
    MV_INC(cl->move->timeouts, 1);
    log_limited(5000, AN_LOG_WARN,
                "cluster: client '%s' moving here: %s did not send what it kept in %u ms: "
                "resumed without it",
                mi->id, cl->nodes[mi->idx].name, MOVE_ASK_MS);
    mv_item_t *it = item_new(cl, MV_IT_MERGE, mi->id, mi->id_len);
    it->mi = mi;
    post_item(cl, mi->g->w->id, it);
}

void cl_move_in_begin(cl_t *cl, proto_gate_t *g, int idx, uint32_t req, uint8_t *blob,
                      uint32_t blob_len)
{
    mv_in_t *mi = an_calloc(1, sizeof(*mi) + g->id_len + 1u);
    mi->cl = cl;
    mi->g = g;
    mi->idx = idx;
    mi->req = req;
    mi->blob = blob;
    mi->blob_len = blob_len;
    mi->t0 = an_now_ms();
    mi->id_len = g->id_len;
    memcpy(mi->id, g->client_id, g->id_len);
    mv_item_t *it = item_new(cl, MV_IT_INSTALL, mi->id, mi->id_len);
    it->mi = mi;
    MV_INC(cl->move->ins, 1);
    post_item(cl, g->w->id, it);
}

/* Home worker: install the session offline, remember it for the dedup,
 * then the link thread waits for its routes. */
static void in_install(worker_t *w, mv_item_t *it)
{
    cl_t *cl = it->cl;
    cl_move_t *mv = cl->move;
    mv_in_t *mi = it->mi;
    /* a tombstone of this id here (it moved away and comes back before the
     * linger ended): its leftovers go into the session installed */
    mv_msg_t *left = NULL;
    uint32_t nleft = 0;
    out_take(w, cl, mi->id, mi->id_len, &left, &nleft, WILL_CANCEL); /* resumed (B, then here) */
    mi->seq_next = persist_reserve_seq(w->srv, MOVE_SEQ_RANGE);
    mi->seq_end = mi->seq_next + MOVE_SEQ_RANGE;
    int rc = cl_owner_install(w, mi->id, mi->id_len, mi->blob, mi->blob_len, &mi->seq_next);
    free(mi->blob);
    mi->blob = NULL;
    sess_t *s = rc == 0 ? sess_table_find_id(&w->by_id, (const uint8_t *)mi->id, mi->id_len) : NULL;
    if (rc < 0)
        log_warn("cluster: the session of client '%s' handed over is unreadable: dropped", mi->id);
    if (s == NULL) {
        msgs_free(left, nleft);
        answer_gate(mi, 0); /* as without a move: the CONNECT goes on */
        it->mi = NULL;
        mi_free(mi);
        return;
    }
    mv_dd_t *d = dd_open(&mv->wk[w->id], s->sid, w->now);
    s->adopt_dedup = 1;
    if (nleft)
        MV_INC(mv->merged, merge(w, s, d, left, nleft, &mi->seq_next, mi->seq_end));
    msgs_free(left, nleft);
    it->mi = NULL;
    if (cl_post(cl, wait_task, mi) < 0) {
        answer_gate(mi, MQTT_RC_SERVER_UNAVAILABLE);
        mi_free(mi);
    }
}

/* Home worker: A's copies into the session, then the CONNECT goes on. */
static void in_merge(worker_t *w, mv_item_t *it)
{
    cl_move_t *mv = it->cl->move;
    mv_in_t *mi = it->mi;
    sess_t *s = sess_table_find_id(&w->by_id, (const uint8_t *)mi->id, mi->id_len);
    if (s != NULL && mi->n > 0) {
        mv_dd_t *d = dd_open(&mv->wk[w->id], s->sid, w->now);
        s->adopt_dedup = 1;
        uint32_t k = merge(w, s, d, mi->v, mi->n, &mi->seq_next, mi->seq_end);
        MV_INC(mv->merged, k);
        MV_INC(mv->skipped, mi->n - k);
    }
    MV_INC(mv->wait_ms, an_now_ms() - mi->t0);
    persist_flush(w);
    answer_gate(mi, 0);
}

/* Home worker: late copies from A, into the session (online or not) as a
 * new publish would go, unless it has them. */
static void in_late(worker_t *w, mv_item_t *it)
{
    cl_move_t *mv = it->cl->move;
    sess_t *s = sess_table_find_id(&w->by_id, (const uint8_t *)it->id, it->id_len);
    mv_dd_t *d = s ? dd_find(&mv->wk[w->id], s->sid, w->now) : NULL;
    if (d == NULL) {
        if (it->n)
            log_limited(5000, AN_LOG_WARN,
                        "cluster: %u late messages for client '%s' came after its session moved "
                        "on or ended here: dropped",
                        it->n, it->id);
        MV_INC(mv->lost, it->n);
        return;
    }
    uint32_t k = 0;
    for (uint32_t i = 0; i < it->n; i++) {
        msg_t *m = it->v[i].m;
        if (msg_expired(m, w->now) || dd_holds(d, m, 0) || dd_holds(d, m, 1) ||
            cl_adopt_sess_holds(s, m))
            continue;
        uint8_t flags = it->v[i].retain ? DLV_RETAIN : 0;
        if (s->expiry != 0 && persist_on(w)) {
            m->store_seq = persist_next_seq(w->srv);
            persist_queue_put(w, s->client_id, s->client_id_len, m->store_seq, m, it->v[i].qos,
                              it->v[i].retain, SQ_QUEUED, 0);
            flags |= DLV_DURABLE;
        }
        dd_note(d, m, 1);
        s->adopt_dedup = 0; /* not its own twin */
        sess_deliver(w, s, m, it->v[i].qos, flags);
        s->adopt_dedup = 1;
        k++;
    }
    MV_INC(mv->merged, k);
    MV_INC(mv->skipped, it->n - k);
    if (!it->final)
        return;
    /* nothing comes from A any more: only the merged copies are kept (their
     * direct twins may still come) */
    d->late_done = 1;
    uint32_t j = 0;
    for (uint32_t i = 0; i < d->n; i++)
        if (d->v[i].kept && d->v[i].m != NULL)
            d->v[j++] = d->v[i];
        else
            msg_unref(&d->v[i].m);
    d->n = j;
}

void cl_move_item(worker_t *w, inbox_item_t *item)
{
    mv_item_t *it = item->ptr;
    /* a session homed on another worker meanwhile (migrate.h): follow it */
    if ((it->kind == MV_IT_ASK || it->kind == MV_IT_LATE || it->kind == MV_IT_DROP) &&
        sess_table_find_id(&w->by_id, (const uint8_t *)it->id, it->id_len) == NULL &&
        migrate_hand_on(w, it->id, it->id_len, item))
        return;
    switch (it->kind) {
    case MV_IT_INSTALL:
        in_install(w, it);
        break;
    case MV_IT_MERGE:
        in_merge(w, it);
        break;
    case MV_IT_ASK:
        out_ask(w, it);
        break;
    case MV_IT_LATE:
        in_late(w, it);
        break;
    case MV_IT_DROP:
        out_drop(w, it);
        break;
    }
    item_free(it);
}

void cl_move_item_drop(void *ptr)
{
    mv_item_t *it = ptr;
    if (it->mi != NULL)
        answer_gate(it->mi, MQTT_RC_SERVER_UNAVAILABLE);
    item_free(it);
}

/* ---- link thread: frames in ---- */

int cl_move_recv(cl_t *cl, int idx, uint8_t type, const uint8_t *body, uint32_t len)
{
    cl_move_t *mv = cl->move;
    if (mv == NULL)
        return 0;
    if (len < 6)
        return -1;
    uint32_t req =
        (uint32_t)body[0] << 24 | (uint32_t)body[1] << 16 | (uint32_t)body[2] << 8 | body[3];
    uint16_t idlen = (uint16_t)(body[4] << 8 | body[5]);
    if (6u + idlen > len || idlen == 0 || memchr(body + 6, 0, idlen) != NULL)
        return -1;
    const char *id = (const char *)body + 6;
    const uint8_t *rest = body + 6 + idlen;
    uint32_t rlen = len - 6 - idlen;
    if (type == CL_F_MOVE_ASK || type == CL_F_MOVE_DROP) {
        mv_item_t *it = item_new(cl, type == CL_F_MOVE_ASK ? MV_IT_ASK : MV_IT_DROP, id, idlen);
        it->idx = idx;
        it->req = req;
        post_item(cl, worker_home(cl->srv, (const uint8_t *)id, idlen), it);
        return 0;
    }
    mv_msg_t *v = NULL;
    uint32_t n = 0;
    if (dec_copies(rest, rlen, &v, &n) < 0)
        return -1;
    if (type == CL_F_MOVE_LATE) {
        mv_item_t *it = item_new(cl, MV_IT_LATE, id, idlen);
        it->idx = idx;
        it->final = 1;
        it->v = v;
        it->n = n;
        post_item(cl, worker_home(cl->srv, (const uint8_t *)id, idlen), it);
        return 0;
    }
    /* CL_F_MOVE_KEPT */
    for (mv_in_t *mi = mv->pending; mi; mi = mi->next)
        if (mi->asked && mi->req == req && mi->idx == idx && mi->id_len == idlen &&
            memcmp(mi->id, id, idlen) == 0) {
            pending_unlink(mv, mi);
            tw_del(&cl->tw, &mi->timer);
            mi->v = v;
            mi->n = n;
            mv_item_t *it = item_new(cl, MV_IT_MERGE, mi->id, mi->id_len);
            it->mi = mi;
            post_item(cl, mi->g->w->id, it);
            return 0;
        }
    /* answered after the CONNECT went on without it: as late copies */
    mv_item_t *it = item_new(cl, MV_IT_LATE, id, idlen);
    it->idx = idx;
    it->v = v;
    it->n = n;
    post_item(cl, worker_home(cl->srv, (const uint8_t *)id, idlen), it);
    return 0;
}

/* ---- life ---- */

int cl_move_init(cl_t *cl)
{
    if (cl->owner == NULL)
        return 0; /* no registry (static members): no take-over */
    cl_move_t *mv = an_calloc(1, sizeof(*mv));
    mv->cl = cl;
    mv->wk = an_calloc(cl->srv->nworkers, sizeof(*mv->wk));
    mv->next_hook = cl->srv->dedup_hook; /* the adopter's, when it is on */
    mv->next_user = cl->srv->dedup_user;
    cl->srv->dedup_hook = dedup_hook;
    cl->srv->dedup_user = mv;
    cl->move = mv;
    return 0;
}

void cl_move_stop(cl_t *cl)
{
    cl_move_t *mv = cl->move;
    if (mv == NULL)
        return;
    while (mv->pending) {
        mv_in_t *mi = mv->pending;
        mv->pending = mi->next;
        tw_del(&cl->tw, &mi->timer);
        answer_gate(mi, MQTT_RC_SERVER_UNAVAILABLE);
        mi_free(mi);
    }
}

void cl_move_free(cl_t *cl)
{
    cl_move_t *mv = cl->move;
    if (mv == NULL)
        return;
    for (uint32_t i = 0; i < cl->srv->nworkers; i++) {
        mv_wk_t *k = &mv->wk[i];
        for (size_t j = 0; j < k->ndd; j++)
            dd_clear(&k->dd[j]);
        free(k->dd);
        while (k->outs) { /* the sessions go with their workers */
            mv_out_t *o = k->outs;
            k->outs = o->next;
            msg_unref(&o->will);
            free(o);
        }
    }
    free(mv->wk);
    if (cl->srv->dedup_user == mv) {
        cl->srv->dedup_hook = mv->next_hook;
        cl->srv->dedup_user = mv->next_user;
    }
    free(mv);
    cl->move = NULL;
}

void cl_move_metrics(cl_t *cl, module_metrics_t *mm)
{
    cl_move_t *mv = cl->move;
    if (mv == NULL)
        return;
#define MV_LINE(name, help, x)                                                                     \
    do {                                                                                           \
        module_metrics_family(mm, name, "counter", help);                                          \
        module_metrics_printf(mm, name " %" PRIu64 "\n",                                           \
                              atomic_load_explicit(&(x), memory_order_relaxed));                   \
    } while (0)
    MV_LINE("antenna_cluster_moves_in_total",
            "Sessions moved here from a live node, with what it kept for them.", mv->ins);
    MV_LINE("antenna_cluster_moves_out_total",
            "Sessions moved from here to a live node (a tombstone kept their routes).", mv->outs);
    MV_LINE("antenna_cluster_move_kept_total",
            "Messages that reached a moved session here and were sent to its new node.", mv->kept);
    MV_LINE("antenna_cluster_move_late_total",
            "Messages sent on after the answer (the tombstone's linger).", mv->late);
    MV_LINE("antenna_cluster_move_merged_total",
            "Messages from the old node queued to a session moved here.", mv->merged);
    MV_LINE("antenna_cluster_move_skipped_total",
            "Messages from the old node the moved session had already.", mv->skipped);
    MV_LINE("antenna_cluster_move_twins_dropped_total",
            "Direct copies dropped: the old node's copy was merged.", mv->twins);
    MV_LINE("antenna_cluster_move_timeouts_total",
            "Moves resumed without the old node's answer (link down, no answer in time).",
            mv->timeouts);
    MV_LINE("antenna_cluster_move_lost_total",
            "Messages kept for a moved session that nobody asked for (dropped).", mv->lost);
    MV_LINE("antenna_cluster_move_discarded_total",
            "Tombstones ended at once: the client started a clean session on its new node.",
            mv->discarded);
    MV_LINE("antenna_cluster_move_wills_cancelled_total",
            "Delayed wills of moved sessions cancelled: the session resumed on the new node.",
            mv->wills_cancelled);
    MV_LINE("antenna_cluster_move_wills_published_total",
            "Delayed wills of moved sessions published: the session ended instead.",
            mv->wills_published);
    MV_LINE("antenna_cluster_move_wait_ms_total",
            "Milliseconds CONNECTs of moved sessions waited for routes and the old node's copies.",
            mv->wait_ms);
#undef MV_LINE
}
