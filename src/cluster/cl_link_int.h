/* cl_link_int.h -- what cl_link.c (sockets, handshake), cl_fwd.c
 * (forwarding) and cl_route.c (routes, retained sync) share.  Everything
 * here is the link thread's, except cl_links_t.wq[i] (worker i's batch).
 */
#ifndef ANTENNA_CL_LINK_INT_H
#define ANTENNA_CL_LINK_INT_H

#include "cl_int.h"
#include "cl_wire.h"
#include "msg.h"

#define CL_TICK_MS 1000        /* ping period and timer granularity */
#define CL_DEAD_MS 6000        /* a link silent this long is closed */
#define CL_HANDSHAKE_MS 5000   /* connect + HELLO + AUTH */
#define CL_BACKOFF_MS 100      /* redial: first delay ... */
#define CL_BACKOFF_MAX_MS 5000 /* ... doubling to this */
#define CL_OUT_MAX (8u << 20)  /* a link's output over this: QoS 0 dropped, QoS 1/2 wait */
#define CL_OUT_KEEP (1u << 20) /* buffers above this are freed once empty */
#define CL_BUF_IDLE 4096       /* ... and above this once quiet for a tick */
#define CL_READ_LEN 65536      /* a read from a link, into cl_links_t.rbuf */
#define CL_PEND_MAX 1000000    /* QoS 1/2 messages kept per peer until acknowledged */
#define CL_PEND_HIGH 10000     /* more unacknowledged: the peer is busy, publishers ... */
#define CL_PEND_LOW 5000       /* ... pause (router.h back-pressure) until under this */
#define CL_INBOX_HIGH 65536    /* a worker's inbox over this: links stop reading ... */
#define CL_RESUME_MS 1         /* ... and look again this much later */
#define CL_INBOX_SLOW 256      /* a link paused for a slow subscriber: read again under this */
#define CL_SLOW_MS 100         /* after such a pause, ACKs wait until the inboxes are under it */
#define CL_MARK_GAP_MS 20      /* route changes written at most this often (cl_route_marks) */
#define CL_MARK_HOLD_MS 250    /* ... and while the last mark is unanswered, at most this late */
#define CL_PROBE_FIRST_MS 20   /* a link went down: its peer's address probed this much later, */
#define CL_PROBE_GAP_MS 100    /* ... then this often, */
#define CL_PROBE_REFUSED 2     /* ... refused this many times in a row: its process is gone */
#define CL_PROBE_TRIES 10      /* ... at most this many probes after one loss */
#define CL_TRIM_ROUTES 1024    /* route changes since the last trim that call for one ... */
#define CL_TRIM_MS 1000        /* ... once a tick saw under 1/16 of that (cl_route_work) */

typedef struct cl_conn_s cl_conn_t;
typedef struct cl_fset_s cl_fset_t;
struct transport_s;
struct ssl_st;
struct ssl_ctx_st;

/* cl_conn_t.tls_hs: where a TLS link's handshake is */
enum { CL_TLS_NONE = 0, CL_TLS_PEEK = 1, CL_TLS_SHAKE = 2 };

/* One TCP connection to a peer (in its handshake or up). */
struct cl_conn_s {
    cl_t *cl;
    cl_conn_t *next, **pprev; /* cl_links_t.conns */
    ev_watcher_t ev;
    int fd;
    int idx; /* the peer's node index; -1 (accepted) until its HELLO */
    uint8_t dialer, connecting, got_hello, up;
    uint8_t heard;  /* a byte was read from it (an accepted probe sends none) */
    uint8_t paused; /* not reading (cl_links_t.resume): 1 a worker's inbox is full,
                     * 2 a subscriber is behind (cl_links_t.slow) */
    uint8_t nonce[CL_NONCE_LEN], peer_nonce[CL_NONCE_LEN];
    uint64_t peer_inc;
    uint64_t started, last_rx, last_tx;
    uint64_t slow_until; /* ACKs wait for the workers (conn_read) until then */
    tw_timer_t timer;
    cl_buf_t in; /* a frame read in part (reads go to cl_links_t.rbuf) */
    cl_buf_t out;
    size_t out_off;
    /* cluster.tls: the tls transport (net_tls.h) over fd and its SSL; NULL:
     * plain TCP (recv/send directly, nothing added) */
    struct transport_s *tp;
    struct ssl_st *ssl;
    uint8_t tls_hs;         /* CL_TLS_*: the handshake is not over (HELLO waits in out) */
    uint32_t hs_want;       /* EV_READ / EV_WRITE: what the handshake waits for */
    uint8_t bits_ok;        /* the peer takes our exact routes as bits (ROUTE_BITS_WANT) */
    uint8_t ids_out;        /* the peer reads publish ids (CL_F_MSG_IDS): CL_MSG_ID */
    uint8_t route_wait;     /* our route sync waits for the peer's first frame (cl_bits.c) */
    uint64_t sync_seq;      /* our last sync's exact strings: the trie as of this change */
    char addr[CL_ADDR_MAX]; /* the other end's address */
};

/* A QoS 1/2 message for a peer, until it acknowledges it. */
typedef struct {
    msg_t *m; /* a reference */
    uint64_t seq;
    uint64_t ticket;              /* the publisher's worker waits for it (cl_ack.c); 0: nobody */
    uint32_t tags[CL_GROUPS_MAX]; /* shared groups picking the node (router_share_tag) */
    uint8_t qos, plain, ngroups;  /* plain: for its ordinary subscribers too */
    uint16_t src;
} cl_pend_t;

/* A peer node (indexed like cl->nodes). */
typedef struct {
    cl_t *cl;
    cl_conn_t *conn; /* its link (up or in its handshake), or NULL */
    tw_timer_t redial;
    uint32_t backoff_ms;
    /* its link went down: is its process gone? (cl_link.c, "the probe") */
    tw_timer_t probe;
    ev_watcher_t probe_ev;
    int probe_fd; /* a probe in flight, or -1 */
    uint8_t probe_refused, probe_tries;
    uint8_t probe_open; /* accepted: waiting for its HELLO (or a reset) */
    /* out: QoS 1/2 by sequence number; [head, len) wait for the ack,
     * [sent, len) are not written on the current link yet */
    cl_pend_t *pend;
    size_t head, sent, len, cap;
    uint64_t out_seq;
    /* in */
    uint64_t in_inc;  /* the peer process whose sequence in_seen counts */
    uint64_t in_seen; /* highest QoS 1/2 sequence received */
    uint64_t acked;   /* last ACK we sent */
    /* with a store: [2i] the last sequence posted to worker i, [2i+1] the
     * last one it reported committed (cl_lack.c); NULL until the first */
    uint64_t *lk;
    uint16_t lk_gen; /* bumped when the peer's process changes */
    /* it left and its sessions may be adopted: its window is kept for the
     * adopter (cl_hand.c); what an adopter-to-be receives from it */
    uint8_t orphan;
    uint8_t routes_kept; /* orphan: its routes stay until an adopter asks (cl_hand.c) */
    uint8_t hand_done;   /* an adopter stored its copies before it went out here */
    struct cl_hand_in_s *hand_in;
    /* orphan: the adopters (node indexes) that asked for its copies: one
     * routed before their routes were known here reaches them (cl_fwd.c) */
    uint64_t asked_by[CL_MAX_NODES / 64];
    uint64_t asked_at;     /* wall ms of the latest such ask */
    uint64_t own_asked_at; /* wall ms this node, adopting it, took its own copies */
    /* routes it announced (cl_route.c) */
    cl_fset_t *routes;    /* wildcard and shared filters, whole */
    uint64_t nexact;      /* exact filters it announced (kept by the router as
                                * hashes: rtab.h, or its Bloom filter, rbloom.h) */
    uint64_t bloom_sized; /* its Bloom filter was sized for this many; 0: none */
    /* during a sync, the exact filters it names (cl_route.c): their hashes
     * while at most cluster.route_bloom_above, and/or a new Bloom filter */
    uint64_t *sync_h;
    size_t sync_n, sync_cap, sync_kept; /* named; buffer; hashes in sync_h */
    struct rbloom_s *sync_bloom;
    uint8_t sync_over;         /* sync_h stopped: more than route_bloom_above named */
    uint8_t resync_asked;      /* a ROUTE_RESYNC went since the last SYNC_BEGIN */
    struct cl_share_s *shares; /* its "$share/g/f" routes by tag */
    uint32_t nshares, cap_shares;
    uint32_t sync_gen;
    uint8_t syncing;
    uint8_t bits;              /* its exact routes are its bit filter here (cl_bits.c) */
    struct rbits_s *sync_bits; /* a sync's ROUTE_BITS, swapped in at SYNC_END */
    uint64_t route_acked;      /* the highest of our ROUTE_MARKs it answered */
} cl_peer_t;

/* One forwarding entry of a worker's batch. */
typedef struct {
    msg_t *m;                     /* a reference */
    uint64_t ticket;              /* cl_pend_t.ticket */
    uint32_t tags[CL_GROUPS_MAX]; /* cl_pend_t.tags */
    uint16_t node;                /* 0: every member (a retained publish) */
    uint8_t qos, plain, ngroups;
} cl_fwd_t;

typedef struct {
    uint16_t src; /* the worker */
    uint32_t n, cap;
    cl_fwd_t v[];
} cl_batch_t;

typedef struct cl_acks_s cl_acks_t;
typedef struct cl_lack_s cl_lack_t;
typedef struct cl_tombs_s cl_tombs_t;

/* Worker i's forwarding state (worker i only). */
typedef struct {
    cl_batch_t *b;      /* this turn's, or NULL */
    cl_acks_t *acks;    /* held acknowledgements (cl_ack.c), from the first */
    cl_lack_t *lack;    /* link acknowledgements after the store (cl_lack.c) */
    uint64_t ticket_no; /* the last ticket given (one per QoS 1/2 message forwarded) */
    uint64_t nodes[CL_MAX_NODES / 64]; /* the nodes worker_t.fwd_ticket's message went to */
    char pad[64 - (3 * sizeof(void *) + 8 + CL_MAX_NODES / 8) % 64];
} cl_wq_t;

struct cl_links_s {
    cl_t *cl;
    int listen_fd;
    ev_watcher_t listen_ev;
    struct ssl_ctx_st *tls_ctx; /* cluster.tls: both roles (read-only once built) */
    cl_conn_t *conns;
    cl_buf_t rbuf; /* every link reads here (conn_read: one at a time) */
    uint64_t incarnation;
    uint32_t nworkers;
    cl_wq_t *wq;       /* [nworkers]: worker i's batch (worker i only) */
    inbox_vec_t *outv; /* [nworkers]: received messages for each worker */
    uint64_t *ackv;    /* [nworkers]: the highest ticket acknowledged, being gathered */
    cl_fset_t *local;  /* wildcard and shared filters this node announces
                        * (the exact ones: own_exact counts them, the trie
                        * has them: trie_walk_exact_local) */
    cl_tombs_t *tombs; /* retained topics cleared (cl_tomb.c) */
    tw_timer_t resume; /* paused links read again when the inboxes drained */
    /* set by a worker that routed a QoS 1/2 message of node i to a
     * subscriber over limits.publisher_backpressure: the link thread reads
     * that node's link a tick later (taken with an exchange) */
    _Atomic uint8_t slow[CL_MAX_NODES];
    /* the route barrier (cl_route.c): the trie's hook numbers this node's
     * route changes (route_posted, on any thread); route_applied is the
     * last one written to the links, mark_due asks for a ROUTE_MARK after
     * the tasks that wrote it (link thread); route_done: every peer whose
     * link is up answered a ROUTE_MARK this high (read by the workers) */
    _Atomic uint64_t route_posted, route_done;
    uint64_t route_applied;
    uint8_t mark_due;
    uint64_t mark_last;    /* when cl_route_marks last wrote (an_now_ms) */
    uint64_t mark_sent;    /* the ROUTE_MARK it wrote (route_applied then) */
    tw_timer_t mark_timer; /* the marks held back (CL_MARK_GAP_MS, CL_MARK_HOLD_MS) */
    /* route changes made or received (cl_route_work): a burst's end trims
     * malloc (trim_timer, every CL_TRIM_MS while they come) */
    uint64_t route_work, trim_work, trim_seen;
    tw_timer_t trim_timer;
    /* this node's exact routes as a bit filter (cl_bits.c) */
    uint8_t bits;              /* cluster.route_bits: ask for and ship bit filters */
    uint8_t own_full_due;      /* built or resized in this run: the whole bitmap goes */
    uint8_t own_strings_due;   /* dropped in this run: links that took bits get strings */
    uint8_t own_scratch_fresh; /* own_scratch holds the bits of now */
    uint64_t key_check;        /* ROUTE_BITS_WANT's check of the route key */
    struct rbcount_s *own;     /* NULL: the exact routes go as strings */
    uint64_t own_exact;        /* exact filters this node announces */
    uint64_t own_seq;          /* own was read from the trie as of this change */
    uint32_t *own_delta;       /* positions flipped in this run of tasks */
    size_t own_ndelta, own_capdelta;
    uint8_t *own_scratch; /* the bitmap being sent */
    uint32_t *in_scratch; /* a received delta's entries */
    size_t in_capscratch;
    cl_peer_t peers[CL_MAX_NODES];
};

/* cl_link.c */
void cl_link_up(cl_t *cl, cl_peer_t *p, cl_conn_t *c);
int cl_conn_flush(cl_t *cl, cl_conn_t *c); /* -1: closed */

/* cl_fwd.c */
void cl_fwd_register(cl_t *cl); /* the route owner row, the inbox kind */
void cl_fwd_free(cl_t *cl);
void cl_peer_pump(cl_t *cl, cl_peer_t *p); /* pending QoS 1/2 into the output */
void cl_peer_acked(cl_t *cl, cl_peer_t *p, uint64_t seq);
void cl_peer_drop_pending(cl_t *cl, cl_peer_t *p);
/* Peer p left the cluster: the copies in its window picked by shared
 * groups (tags) are posted to the workers (not flushed: the caller drops
 * p's shared routes first, then cl_recv_flush), where each group picks a
 * member again (router_reshare_named); their entries lose the groups. */
void cl_fwd_reshare(cl_t *cl, cl_peer_t *p);
int cl_recv_msg(cl_t *cl, cl_peer_t *p, const uint8_t *body, uint32_t len);
void cl_recv_flush(cl_t *cl); /* post what was received to the workers */
void cl_recv_ack(cl_t *cl, cl_peer_t *p, cl_conn_t *c);
/* Post m (a reference, given) to worker `to` as a WM_CLUSTER item. */
enum {
    CL_IT_PUBLISH = 1,
    CL_IT_RETAIN = 2,
    CL_IT_ACKED = 3,  /* sid: ticket, ptr: node */
    CL_IT_SHARED = 4, /* ptr: cl_shared_msg_t */
    CL_IT_ROUTES = 5, /* sid: route_done: held SUBACKs up to it may go */
    CL_IT_RESHARE = 6 /* ptr: cl_shared_msg_t: its groups pick again (cl_fwd_reshare) */
};
/* A message for shared groups (CL_F_MSG_SHARED), on its way to a worker. */
typedef struct {
    msg_t *m; /* a reference */
    uint8_t plain, n;
    uint16_t len[CL_GROUPS_MAX];
    uint8_t *f[CL_GROUPS_MAX]; /* into data */
    uint8_t data[];
} cl_shared_msg_t;
int cl_recv_msg_shared(cl_t *cl, cl_peer_t *p, const uint8_t *body, uint32_t len);
void cl_recv_post(cl_t *cl, uint32_t to, msg_t *m, uint8_t what);

/* cl_ack.c: acknowledgements held for nodes.  Workers: */
void cl_ack_hold(worker_t *w, struct endpoint_s *ep, uint64_t sid, uint8_t type, uint16_t pid,
                 uint8_t reason, int wrote, void *user);
void cl_ack_forget(worker_t *w, struct endpoint_s *ep, void *user);
void cl_ack_on_acked(cl_t *cl, worker_t *w, uint16_t node, uint64_t ticket); /* CL_IT_ACKED */
void cl_ack_free(cl_acks_t *a); /* the server's end: what is held is not sent */
/* Link thread: entry e (from worker src) is done with for its node:
 * gathered per worker, posted by cl_ack_post. */
static inline void cl_ack_note(cl_links_t *L, uint16_t src, uint64_t ticket)
{
    if (ticket != 0 && src < L->nworkers && ticket > L->ackv[src])
        L->ackv[src] = ticket;
}
/* One CL_IT_ACKED item per worker with news about node idx (not posted:
 * cl_recv_flush does). */
void cl_ack_post(cl_t *cl, int idx);

/* cl_lack.c: with a store, a forwarded QoS 1/2 message is acknowledged on
 * the link once the batch holding its queue entries committed.  Link
 * thread: cl_lack_post numbers a message posted to worker `to` (the item's
 * sid), cl_lack_value is what the peer may be acknowledged (cl_recv_ack),
 * cl_lack_reset forgets a peer's earlier process.  Workers: cl_lack_routed
 * after routing an item with a sid (wrote: the routing wrote to the store
 * batch), cl_lack_turn_end posts what is done. */
#define CL_LACK_PACK(gen, seq) (((uint64_t)(gen) << 48) | ((seq) & ((1ull << 48) - 1)))
#define CL_LACK_GEN(v) ((uint16_t)((v) >> 48))
#define CL_LACK_SEQ(v) ((v) & ((1ull << 48) - 1))
uint64_t cl_lack_post(cl_t *cl, cl_peer_t *p, uint32_t to, uint64_t seq);
uint64_t cl_lack_value(const cl_peer_t *p);
void cl_lack_reset(cl_peer_t *p);
void cl_lack_routed(cl_t *cl, worker_t *w, uint16_t peer, uint64_t v, int wrote);
void cl_lack_turn_end(cl_t *cl, worker_t *w);
void cl_lack_free(cl_lack_t *L);

/* cl_hand.c: a dead member's unacknowledged copies for its adopter.
 * keep: member p left, keep its window (1) or not (0); recv: the
 * CL_F_ADOPT_* frames; in_free: what p sent for an adoption, dropped. */
typedef struct cl_hand_in_s cl_hand_in_t;
int cl_hand_keep(cl_t *cl, cl_peer_t *p);
int cl_hand_recv(cl_t *cl, cl_peer_t *p, cl_conn_t *c, uint8_t type, const uint8_t *body,
                 uint32_t len);
void cl_hand_in_free(cl_peer_t *p);

/* cl_tomb.c (the link thread): tombstones of cleared retained topics.
 * note: a clear (publish time, origin node name) was made or received;
 * set: a retained message was set (removes an older tombstone); covers: 1
 * when a tombstone is newer than this copy (the copy must not be taken);
 * sync: every tombstone on a link that came up; recv: a peer's. */
void cl_tomb_init(cl_t *cl);
void cl_tomb_free(cl_t *cl);
void cl_tomb_note(cl_t *cl, const uint8_t *topic, size_t len, uint64_t published_at,
                  const char *origin);
void cl_tomb_set(cl_t *cl, const uint8_t *topic, size_t len, uint64_t published_at,
                 const char *origin);
int cl_tomb_covers(cl_t *cl, const uint8_t *topic, size_t len, uint64_t published_at,
                   const char *origin);
void cl_tomb_sync(cl_t *cl, cl_conn_t *c);
int cl_tomb_recv(cl_t *cl, cl_peer_t *p, const uint8_t *body, uint32_t len);

/* cl_bits.c: exact routes as a plain bit filter built by their owner.
 * init: the cluster-wide route key; local: an exact local filter came (up)
 * or went (change number seq, route_posted's); out: c takes our exact
 * routes as bits now; sync: the whole bitmap into c (inside
 * cl_route_sync); mark: what this run changed, into
 * c (cl_route_marks, before the ROUTE_MARK), marks_done after every link;
 * link_up: ROUTE_BITS_WANT and the route sync (now or after the peer's
 * first frame: first_frame); want: the peer's ROUTE_BITS_WANT; recv:
 * ROUTE_BITS / ROUTE_BITS_DELTA; sync_end: a sync's bits swapped in. */
void cl_bits_init(cl_t *cl);
void cl_bits_free(cl_t *cl);
void cl_bits_local(cl_t *cl, int up, uint64_t h, uint64_t seq);
int cl_bits_out(const cl_t *cl, const cl_conn_t *c);
void cl_bits_sync(cl_t *cl, cl_conn_t *c);
void cl_bits_mark(cl_t *cl, cl_conn_t *c);
void cl_bits_marks_done(cl_t *cl);
void cl_bits_link_up(cl_t *cl, cl_conn_t *c);
void cl_bits_first_frame(cl_t *cl, cl_conn_t *c, uint8_t type, const uint8_t *body, uint32_t len);
int cl_bits_want(cl_t *cl, cl_conn_t *c, const uint8_t *body, uint32_t len);
int cl_bits_recv(cl_t *cl, cl_peer_t *p, uint8_t type, const uint8_t *body, uint32_t len);
void cl_bits_sync_end(cl_t *cl, cl_peer_t *p, int idx);

/* cl_route.c */
/* Add every exact filter this node announces to c (cl_bits.c's build),
 * read from the trie: returns the last change it shows (route_posted). */
struct rbcount_s;
uint64_t cl_route_local_exact(cl_t *cl, struct rbcount_s *c);
/* The filters peer p announced (its "routes" in the API). */
uint64_t cl_route_count(const cl_peer_t *p);
/* The name of the node a retained message was published on. */
const char *cl_retained_origin(cl_t *cl, const msg_t *m);
void cl_route_init(cl_t *cl);
void cl_route_free(cl_t *cl);
void cl_route_sync(cl_t *cl, cl_conn_t *c);
int cl_route_recv(cl_t *cl, cl_peer_t *p, uint8_t type, const uint8_t *body, uint32_t len);
void cl_route_drop_peer(cl_t *cl, cl_peer_t *p);
void cl_route_drop_peer_shares(cl_t *cl, cl_peer_t *p); /* its $share routes only */
/* The route barrier: SUBACKs wait until every node up has this node's
 * routes (docs/cluster.md "Routes"), CL_ROUTE_WAIT_MS at most (a peer
 * too slow to answer). */
#define CL_ROUTE_WAIT_MS 2000
void cl_route_recompute(cl_t *cl);
void cl_route_marks_timer(tw_timer_t *t); /* L->mark_timer: the marks held back */
/* n route changes made or received: after a burst of them, malloc_trim */
void cl_route_work(cl_t *cl, uint64_t n);
void cl_route_trim_timer(tw_timer_t *t);                 /* L->trim_timer */
void cl_route_acked(cl_t *cl, cl_peer_t *p, uint64_t v); /* its ROUTE_ACKED */
/* ROUTE_OWNER_NODE's sub_barrier: 0, or the number route_done must reach */
uint64_t cl_route_barrier(worker_t *w, uint32_t *wait_ms, void *user);
void cl_retained_sync(cl_t *cl, cl_conn_t *c);
/* The "$share/g/f" route of peer p with this tag, or NULL (then *len 0). */
const uint8_t *cl_route_share(cl_peer_t *p, uint32_t tag, uint16_t *len);
int cl_retained_recv(cl_t *cl, cl_peer_t *p, const uint8_t *body, uint32_t len);

/* A message as the link carries it: its time, the expiry left at now (0:
 * none), QoS, the retain flag and its bytes (pointing into m); the caller
 * sets what else its frame needs (seq, src, origin). */
static inline cl_msg_t cl_msg_of(const msg_t *m, uint64_t now)
{
    cl_msg_t x = {.published_at = m->published_at,
                  .expiry_ms = m->expire_at && m->expire_at > now
                                   ? (uint32_t)AN_MIN(m->expire_at - now, UINT32_MAX)
                                   : 0,
                  .qos = m->qos,
                  .flags = m->retain ? CL_MSG_RETAIN : 0,
                  .topic = msg_topic(m),
                  .topic_len = m->topic_len,
                  .props = msg_props(m),
                  .props_len = m->props_len,
                  .payload = msg_payload(m),
                  .payload_len = m->payload_len};
    return x;
}

/* m's publish id into x, when it has one and c's peer reads them. */
static inline void cl_msg_set_id(cl_msg_t *x, const msg_t *m, const cl_conn_t *c)
{
    if (m->id_seq != 0 && c->ids_out) {
        x->flags |= CL_MSG_ID;
        x->id_epoch = m->id_epoch;
        x->id_seq = m->id_seq;
    }
}

#endif
