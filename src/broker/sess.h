/* sess.h -- MQTT sessions: subscriptions, QoS state, queued messages.
 *
 * A session lives on its home worker (server.h) and is touched by that
 * thread only.  It outlives its connection when the client asked for a
 * persistent session (clean session 0): subscriptions stay in the trie and
 * QoS 1/2 messages are queued until the client returns or the session
 * expires.  In memory here; a later store makes it durable.
 *
 * Outgoing QoS 1/2 messages go through an inflight window (at most
 * max_inflight unacknowledged, kept in send order for redelivery) with a
 * FIFO queue behind it (at most max_queued).  While the queue is not empty,
 * QoS 0 messages queue too, so a subscriber sees one topic's messages in
 * the order they were published.  Incoming QoS 2 packet ids are remembered
 * from PUBLISH to PUBREL so a resent PUBLISH is not delivered twice.
 *
 *   inflight: [pid 7 WAIT_ACK][pid 8 WAIT_COMP]...   <= max_inflight
 *   queue:    ring of {msg, qos, retain}           <= max_queued
 *
 * While its client is there the session is attached to an endpoint
 * (endpoint.h) and writes only through it: the MQTT connection (ep_mqtt.c)
 * or any other kind, which the session cannot tell apart.
 */
#ifndef ANTENNA_SESS_H
#define ANTENNA_SESS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "endpoint.h"
#include "msg.h"
#include "server.h"
#include "tw.h"

enum { SQ_QUEUED = 0, SQ_WAIT_PUBACK, SQ_WAIT_PUBREC, SQ_WAIT_PUBCOMP };

typedef struct {
    msg_t *m; /* NULL once PUBREC arrived (only the PUBREL is left) */
    uint64_t sent_ms;
    uint64_t seq; /* its record in the store (q/ client id, seq), 0 = none */
    uint16_t pid;
    uint8_t qos;
    uint8_t state;  /* SQ_* */
    uint8_t retain; /* retain flag to send with */
    uint8_t shared; /* came through a shared subscription */
} sq_entry_t;

/* Ring buffer of entries.  One pointer in the session; the ring (its
 * indexes and entries in one allocation) exists only while not empty, so an
 * idle session pays 8 bytes per ring.  `bytes` counts what its messages
 * weigh (topic, properties, payload) for the session's queue limit
 * (limits.max_queued_bytes): kept by the session, 0 with a new ring, so an
 * empty queue costs no counter in sess_t. */
typedef struct {
    uint32_t head, len, cap;
    uint64_t bytes;
    sq_entry_t e[];
} sq_ring_t;

typedef struct {
    sq_ring_t *r;
} sq_t;

static inline uint32_t sq_len(const sq_t *q)
{
    return q->r ? q->r->len : 0;
}

/* The ring's byte count (see sq_ring_t); add and subtract only while the
 * ring holds the entry counted (after sq_push, before sq_pop/sq_remove). */
static inline uint64_t sq_bytes(const sq_t *q)
{
    return q->r ? q->r->bytes : 0;
}
static inline void sq_bytes_add(sq_t *q, uint64_t n)
{
    q->r->bytes += n;
}
static inline void sq_bytes_sub(sq_t *q, uint64_t n)
{
    q->r->bytes -= n;
}

/* Incoming QoS 2 packet ids awaiting their PUBREL: the count in the same
 * allocation, which exists only while one is awaited (sess_qos2_in_*). */
typedef struct {
    uint32_t n;
    uint16_t id[];
} sess_qos2_t;

/* A subscription, held by value in the session's array (16 bytes: no
 * allocation of its own).  Its filter is kept once: an exact filter (no
 * wildcard, not shared) is the key of its node in the topic trie, which
 * lives as long as the filter has a subscriber (trie_exact_key), so the
 * subscription points at those bytes (`by_ref`); another filter is a copy
 * of the session's own (srv->sub_slab by size).  The trie's node goes with
 * the subscription's route: read the filter before unrouting, never after.
 * A pointer to a subscription is good until the session's next subscribe
 * or unsubscribe (the array moves). */
typedef struct {
    const uint8_t *filter; /* as subscribed, "$share/g/f" included; not NUL
                            * terminated */
    uint32_t subid;        /* MQTT 5 subscription identifier, 0 = none */
    uint16_t len;
    uint8_t opts;       /* the options byte (granted QoS in bits 0-1) */
    uint8_t acl : 2;    /* AUTH_ACL_ALLOW/_PARTIAL/_DENY for the session's user,
                         * as of sess_t.acl_gen (sess_acl.h) */
    uint8_t by_ref : 1; /* filter is the trie's copy, not the session's */
} sess_sub_t;

static inline const uint8_t *sess_sub_filter(const sess_sub_t *sub)
{
    return sub->filter;
}

/* The slab class (srv->sub_slab: 16 bytes and up in steps of 8) of a
 * session's copy of a filter of len bytes, or of its array of subscriptions
 * (len: its bytes), or -1: malloc'd. */
static inline int sess_sub_slab_class(size_t len)
{
    size_t c = len <= 16u ? 0u : (len - 16u + 7u) / 8u;
    return c < SUB_SLAB_CLASSES ? (int)c : -1;
}
static inline size_t sess_sub_slab_size(size_t cls)
{
    return 16u + cls * 8u;
}

/* What few sessions need, allocated when first needed: a will waiting for
 * its Will Delay Interval after the connection ended, the user the session
 * belongs to (sess_acl.h), the index of its subscriptions once it has
 * more than SUBIDX_MIN (subidx.h), incoming QoS 2 ids awaiting PUBREL.  Given back once it holds nothing
 * (sess.c: the last message in flight acknowledged), through a short list
 * of spares on the worker: a QoS 1 broadcast leaves none behind. */
typedef struct sess_ext_s {
    struct subidx_s *subs_idx; /* filter -> subs[] position; NULL while few */
    sess_qos2_t *qos2_in;      /* incoming QoS 2 ids awaiting PUBREL, or NULL
                                * (a QoS 2 publisher's, for a round trip) */
    msg_t *will;               /* pending delayed will, or NULL */
    uint64_t will_at;          /* ms */
    char *owner;               /* user of the client that created or last resumed
                       * it; NULL: none (anonymous, or no auth state) */
    /* The session's timer: resends while connected (MQTT 3.1.1 with
     * messages in flight), its expiry and a delayed will while offline.
     * Here, not in sess_t, because an idle connected session never needs
     * it (32 bytes of every idle connection, issue 15). */
    tw_timer_t timer;
    struct sess_s *s;   /* back from the timer */
    uint64_t expire_at; /* ms, while offline with an expiry */
    uint8_t timer_kind; /* SESS_TIMER_* */
} sess_ext_t;

#define SESS_NEVER UINT32_MAX /* session expiry "never" */

/* Field order packs the struct (100 bytes before the client id, see the
 * _Static_assert in sess.c): pointers, then 32-bit, 16-bit and 8-bit
 * fields.  The queue's byte count lives in its ring (sq_ring_t), the
 * incoming QoS 2 ids in sess_ext_t (sess_qos2_t). */
struct sess_s {
    uint64_t sid;
    sess_t *id_next, *sid_next; /* hash chains */
    endpoint_t *ep;             /* where it delivers; NULL while offline */
    worker_t *w;                /* home worker */
    sq_t inflight;              /* outgoing QoS 1/2, in send order */
    sq_t queue;                 /* behind the window, or while offline; its
                                 * ring counts the bytes queued (sq_bytes) */
    sess_sub_t *subs;           /* dense, in no particular order; capacity
                                 * implied by nsubs (sess.c) */
    sess_ext_t *x;              /* timer, delayed will, owner; or NULL */
    uint32_t nsubs;
    uint32_t acl_gen;      /* ACL generation the subscriptions' verdicts
                            * were taken under, 0 = never (sess_acl.h) */
    uint16_t mig_n, mig_k; /* migrate.h: messages counted this window, and
                            * those delivered wholly on worker mig_to */
    uint32_t expiry;       /* seconds after disconnect; 0 = with the
                            * connection, SESS_NEVER = never */
    uint32_t connected_at; /* wall seconds of the last attach (API) */
    uint16_t next_pid;
    uint16_t client_id_len;
    uint8_t has_subids : 1;       /* a subscription carries an identifier */
    uint8_t stored : 1;           /* records of it may be in the store */
    uint8_t counted : 1;          /* in srv->persistent_sessions (expiry != 0) */
    uint8_t acl_check : 1;        /* a subscription is not ALLOW: every
                                * delivery checks its topic (sess_acl.h) */
    uint8_t owner_unknown : 1;    /* restored from a record that has no owner */
    uint8_t moved : 1;            /* homed away from its hash (migrate.h's table) */
    uint8_t adopt_dedup : 1;      /* adopted with copies that may also come the direct
                                   * way: sess_deliver asks srv->dedup_hook */
    uint8_t fenced : 1;           /* moved in with its subscriptions: deliveries that did
                                   * not come through the old worker wait (migrate.h) */
    uint8_t mig_to;               /* migrate.h: the window's candidate worker */
    _Atomic uint8_t shared_flags; /* SESS_F_*: written by the home worker,
                                   * read by publishers on any worker */
    uint8_t mig_hold;             /* migrate.h: windows to wait after a move */
    char client_id[];             /* NUL terminated */
};

/* Incoming QoS 2 ids awaiting PUBREL: how many, and the i-th. */
static inline uint32_t sess_qos2_in_count(const sess_t *s)
{
    return s->x && s->x->qos2_in ? s->x->qos2_in->n : 0;
}
static inline uint16_t sess_qos2_in_at(const sess_t *s, uint32_t i)
{
    return s->x->qos2_in->id[i];
}

/* Bytes of the messages in the session's queue (limits.max_queued_bytes). */
static inline uint64_t sess_queued_bytes(const sess_t *s)
{
    return sq_bytes(&s->queue);
}

enum { SESS_TIMER_NONE = 0, SESS_TIMER_RETRY, SESS_TIMER_EXPIRY };

/* When an offline session with an expiry ends (monotonic ms), 0 = none. */
static inline uint64_t sess_expire_at(const sess_t *s)
{
    return s->x ? s->x->expire_at : 0;
}

/* The bytes of a session with a client id of len bytes (and its NUL),
 * rounded to 8, and the slab class that holds that size (srv->sess_slab),
 * or -1: malloc'd. */
static inline size_t sess_alloc_size(size_t len)
{
    return (offsetof(sess_t, client_id) + len + 1u + 7u) & ~(size_t)7u;
}
static inline int sess_slab_class(size_t len)
{
    size_t c = (sess_alloc_size(len) - sess_alloc_size(0)) / 8u;
    return c < SESS_SLAB_CLASSES ? (int)c : -1;
}
static inline size_t sess_slab_size(size_t cls)
{
    return sess_alloc_size(0) + cls * 8u;
}

enum {
    SESS_F_DURABLE = 1, /* persistence on and expiry != 0: publishers store
                         * its QoS 1/2 messages (persist.h) */
    SESS_F_FULL = 2,    /* its queue is full: publishers may refuse
                         * (limits.queue_full: refuse) */
    SESS_F_BACKLOG = 4  /* connected, and its queue holds more than
                         * limits.publisher_backpressure messages: publishers
                         * sending to it pause (router.c, proto.c) until it is
                         * back under half of that */
};

static inline int sess_flag(const sess_t *s, uint8_t f)
{
    return (atomic_load_explicit(&((sess_t *)s)->shared_flags, memory_order_relaxed) & f) != 0;
}

static inline void sess_set_flag(sess_t *s, uint8_t f, int on)
{
    if (on)
        atomic_fetch_or_explicit(&s->shared_flags, f, memory_order_relaxed);
    else
        atomic_fetch_and_explicit(&s->shared_flags, (uint8_t)~f, memory_order_relaxed);
}

void sq_push(sq_t *q, const sq_entry_t *e);
sq_entry_t *sq_at(sq_t *q, uint32_t i);
int sq_pop(sq_t *q, sq_entry_t *out);
void sq_remove(sq_t *q, uint32_t i); /* keeps order */
void sq_clear(sq_t *q);              /* drops message references */

sess_t *sess_new(worker_t *w, const uint8_t *client_id, uint16_t len, uint32_t expiry);
/* A persistent session read back from the store at start-up: offline,
 * expiring at expire_at (ms, monotonic; ignored when expiry is SESS_NEVER). */
sess_t *sess_restore(worker_t *w, const uint8_t *client_id, uint16_t len, uint32_t expiry,
                     uint64_t expire_at, uint16_t next_pid);
/* Change the session expiry (seconds, SESS_NEVER), keeping the count of
 * persistent sessions (limits.max_sessions) right. */
void sess_set_expiry(sess_t *s, uint32_t expiry);
/* Remove from tables and trie, drop queues, publish a pending will, free. */
void sess_destroy(worker_t *w, sess_t *s);
/* Free a session in no table, no timer wheel and not in the trie (one
 * that was moving between workers when its new worker stopped), without
 * touching the store. */
void sess_free_detached(sess_t *s);
/* The connection ended abnormally with a will delayed by `delay` seconds:
 * keep it (takes the reference) until then, or until the session ends. */
void sess_delay_will(sess_t *s, msg_t *will, uint32_t delay);
/* The pending delayed will, taken out of the session (the caller holds
 * the reference and decides its fate), or NULL: a session moving to
 * another node (cl_move.c). */
msg_t *sess_will_take(sess_t *s);

/* Attach an endpoint (for MQTT: CONNACK sent; the owner keeps its own
 * pointer to s): resend inflight with DUP, then pump the queue. */
void sess_attach(sess_t *s, endpoint_t *ep);
/* The endpoint went away: a session with expiry 0 is destroyed, others
 * keep their state and arm their expiry; unacknowledged messages that came
 * through a shared subscription go to another member of the group. */
void sess_detach(worker_t *w, sess_t *s);
/* Takeover: the session lets go of its endpoint without ending and closes
 * it with EP_CLOSE_TAKEN_OVER and `why` (endpoint.h); the next
 * sess_attach resends the window to the new one. */
void sess_take_over(sess_t *s, const char *why);

/* Deliver a message to the session at `qos` (already min of message and
 * subscription).  flags: DLV_RETAIN (send with retain 1), DLV_SHARED. */
void sess_deliver(worker_t *w, sess_t *s, msg_t *m, uint8_t qos, uint8_t flags);

/* Acknowledgements from the client.  Return 0, or -1 when the id is
 * unknown (ignored by the caller). */
int sess_on_puback(sess_t *s, uint16_t pid, uint8_t reason);
int sess_on_pubrec(sess_t *s, uint16_t pid, uint8_t reason);
int sess_on_pubcomp(sess_t *s, uint16_t pid);

/* A QoS 2 packet held until its state was stored (persist.h): send it now
 * if it is still in flight and the client connected. */
void sess_send_held(sess_t *s, uint16_t pid);

/* Events (event.h) about s: its client (the endpoint's fields when it has
 * one), and message_dropped.  Call only when event_wanted(). */
void sess_event_client(const sess_t *s, event_client_t *out, char *peer, size_t size);
void sess_event_dropped(sess_t *s, const msg_t *m, uint8_t qos, event_drop_reason_t reason);

/* Incoming QoS 2: returns 1 when pid is new (deliver, then remember), 0
 * when it is already awaiting PUBREL (do not deliver again). */
int sess_qos2_in_begin(sess_t *s, uint16_t pid);
/* 1 when pid is awaiting PUBREL. */
int sess_qos2_in_known(const sess_t *s, uint16_t pid);
/* Returns 1 when pid was awaiting PUBREL. */
int sess_qos2_in_end(sess_t *s, uint16_t pid);

/* Subscriptions: add (or replace the options of) a filter, remove one.
 * Both update the trie (or the shared group) and find the filter in
 * constant time (subidx.h).  sess_subscribe returns 1 for a new
 * subscription, 0 for a replaced one.  Neither writes the session record to
 * the store: the caller does it once per packet (sess_subscriptions_saved),
 * since the record holds every subscription and rewriting it per filter
 * would write O(n^2) bytes for a SUBSCRIBE with n filters. */
int sess_subscribe(worker_t *w, sess_t *s, const uint8_t *filter, uint16_t len, uint8_t opts,
                   uint32_t subid);
int sess_has_sub(const sess_t *s, const uint8_t *filter, uint16_t len);
/* The subscription to exactly this filter, or NULL. */
sess_sub_t *sess_sub_find(const sess_t *s, const uint8_t *filter, uint16_t len);
int sess_unsubscribe(worker_t *w, sess_t *s, const uint8_t *filter, uint16_t len);
/* After a SUBSCRIBE or UNSUBSCRIBE changed subscriptions: the session record
 * of a stored session is rewritten, once. */
void sess_subscriptions_saved(worker_t *w, sess_t *s);

/* The session's sess_ext_t, allocated on first use. */
sess_ext_t *sess_ext(sess_t *s);
/* Free the worker's spare sess_ext_t (worker_free). */
void sess_ext_spares_free(worker_t *w);

/* Timer callback (retry or expiry). */
void sess_on_timer(tw_timer_t *t);

/* A connected session moving to another worker (migrate.h) with messages
 * in flight: its retry timer leaves the old worker's wheel (move_out, on
 * the old worker, s->w still the old one) and is armed again on the new
 * one (move_in, after s->w changed).  The kind stays RETRY meanwhile. */
void sess_timer_move_out(sess_t *s);
void sess_timer_move_in(sess_t *s);

#endif
