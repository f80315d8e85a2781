/* cl_int.h -- what the parts of the cluster module share (cluster.h).
 *
 * Threads.  Three kinds of thread touch the cluster:
 *   - the link thread (cluster.c runs it): its ev loop and timer wheel own
 *     every link socket and the member table (cl_node_t); membership
 *     changes reach it through cl_post();
 *   - the etcd thread (cl_member.c): the lease, the member list, the
 *     client-id registry; it reports members with cl_member_seen() /
 *     cl_member_gone(), which post to the link thread;
 *   - the workers: they reach a node through the route owner row and the
 *     inbox kind WM_CLUSTER that cl_link.c registers, by node index only.
 * The configuration is read-only once the workers run.  The few values
 * read across threads (lease state, member count) are atomics.
 *
 * Node indexes.  A node is known by its name; its index (1..CL_MAX_NODES-1,
 * 0 is this node) is given the first time the name is seen and kept for the
 * life of the process, also across leaving and rejoining, so a route owner
 * index or a msg_t.origin_node never points at another node.
 */
#ifndef ANTENNA_CL_INT_H
#define ANTENNA_CL_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "ev.h"
#include "module.h"
#include "server.h"
#include "tw.h"

#define CL_MAX_NODES 256
#define CL_NAME_MAX 64  /* node and cluster names, with the NUL */
#define CL_ADDR_MAX 128 /* "host:port", with the NUL */
#define CL_STATIC_MAX 16

typedef struct {
    char node[CL_NAME_MAX]; /* this node's name; "" = the cluster is off */
    char name[CL_NAME_MAX]; /* the cluster's name (etcd prefix) */
    char etcd[512];         /* endpoints, comma-separated; "" = static members only */
    uint32_t lease_ttl_ms;
    uint32_t drain_handover_wait_ms; /* a drain waits this long for sessions to be taken */
    uint8_t adopt;                   /* a dead member's Redis store adopted (cl_adopt.c) */
    uint32_t adopt_wait_ms;          /* at most this long after a member went out */
    uint32_t route_bloom_above;      /* more exact routes: shipped as bits (cl_bits.c), a peer's
                                      * kept in a Bloom filter; 0: never */
    uint8_t route_bits;              /* ask for and ship exact routes as bit filters (cl_bits.c) */
    uint8_t revoke_refused;          /* a member whose link went down and whose link address refuses
                             * connections is gone: revoke its lease (cl_link.c's probe) */
    /* persistence.session_store: replicated (cl_repl.c): cluster.replication */
    uint8_t repl_required;       /* no replica in sync: refuse stored changes (else ack locally) */
    uint32_t repl_timeout_ms;    /* the replica acknowledges a group within this */
    char listen[CL_ADDR_MAX];    /* node links: host:port, port 0 = any */
    char advertise[CL_ADDR_MAX]; /* "" = the bound listen address */
    char secret[256];            /* the shared secret (or read from secret_file) */
    char secret_file[256];
    char static_members[CL_STATIC_MAX][CL_NAME_MAX + CL_ADDR_MAX]; /* "name@host:port" */
    uint32_t nstatic;
    /* TLS on the node links (docs/cluster.md "TLS on links"): mutual */
    uint8_t tls;
    char tls_cert_file[256];
    char tls_key_file[256];
    char tls_ca_file[256];
    char tls_verify_name[CL_NAME_MAX]; /* "": the CA only; "node": the peer's
                                        * node name; else this fixed name */
} cl_conf_t;

typedef struct cl_s cl_t;
typedef struct cl_links_s cl_links_t;   /* cl_link.c's state */
typedef struct cl_member_s cl_member_t; /* cl_member.c's state */
typedef struct cl_owner_s cl_owner_t;   /* cl_owner.c's state */
typedef struct cl_adopt_s cl_adopt_t;   /* cl_adopt.c's state */
typedef struct cl_repl_s cl_repl_t;     /* cl_repl.c's state */
typedef struct cl_conn_s cl_conn_t;
typedef struct cl_recent_s cl_recent_t; /* cl_recent.c: ids of recent adoptions */
typedef struct cl_move_s cl_move_t;     /* cl_move.c's state */

/* One known node (the link thread's). */
typedef struct {
    char name[CL_NAME_MAX];
    char link_addr[CL_ADDR_MAX]; /* where its links listen */
    uint8_t used;                /* the index is given */
    uint8_t member;              /* a member now (etcd key present, or static) */
    uint64_t since_ms;           /* member since / out since (monotonic) */
} cl_node_t;

/* One peer's link, as the API and metrics see it: written by the link
 * thread only (relaxed atomics), read by any thread. */
enum { CL_LINK_DOWN = 0, CL_LINK_HANDSHAKE, CL_LINK_UP };
typedef struct {
    _Atomic uint32_t state;    /* CL_LINK_* */
    _Atomic uint32_t ups;      /* times the link came up */
    _Atomic uint64_t bytes_in; /* link bytes read / written */
    _Atomic uint64_t bytes_out;
    _Atomic uint64_t sends;       /* send(2) calls on the link (a write that moved bytes or
                                   * found the socket full) */
    _Atomic uint64_t recvs;       /* recv(2) calls (the last of a read usually finds none) */
    _Atomic uint64_t received;    /* messages received from the peer */
    _Atomic uint64_t fwd[3];      /* messages forwarded to it, by QoS */
    _Atomic uint64_t dropped;     /* QoS 0 dropped (link down or output full), QoS 1/2
                                  * over the bound of unacknowledged ones */
    _Atomic uint64_t queued;      /* QoS 1/2 not acknowledged yet */
    _Atomic uint64_t oldest;      /* the oldest of them: its publish time (wall ms), 0: none
                                 * or unknown (the API's lag_ms) */
    _Atomic uint64_t out_bytes;   /* bytes waiting in the link's output */
    _Atomic uint64_t buf_bytes;   /* the link's input and output buffers (capacity) */
    _Atomic uint64_t buf_peak;    /* their highest since the link came up */
    _Atomic uint64_t routes;      /* filters the peer announced */
    _Atomic uint64_t unmatched;   /* messages from the peer no subscriber here matched
                                 * (a Bloom filter's false positive, a collision, a
                                 * subscriber gone meanwhile): written by workers */
    _Atomic uint64_t bloom_bytes; /* its exact routes' Bloom filter (rbloom.h), 0: none */
    _Atomic uint64_t resyncs;     /* ROUTE_RESYNCs we sent it (its filter rebuilt) */
    _Atomic uint32_t bits_in;     /* its exact routes are its bit filter here (cl_bits.c) */
    _Atomic uint64_t refused;     /* handshakes refused */
    _Atomic uint32_t busy;        /* too many QoS 1/2 unacknowledged: the workers
                                 * pause QoS 1/2 publishers of messages for it */
    _Atomic uint32_t tls;         /* the link (last up) runs over TLS */
    _Atomic uint32_t msg_ids;     /* the peer reads publish ids (CL_F_MSG_IDS) on the link up */
    char cipher[64];              /* its "TLSv1.3 TLS_AES_256_GCM_SHA384" (under snap_mu) */
} cl_link_stats_t;

/* A closure for the link thread. */
typedef struct cl_task_s {
    struct cl_task_s *next;
    void (*fn)(cl_t *cl, void *arg);
    void *arg;
} cl_task_t;

struct cl_s {
    server_t *srv;
    const cl_conf_t *conf;
    uint32_t mod_index; /* the module's index (module_worker_ctx) */

    /* the link thread */
    pthread_t thread;
    int thread_started;
    _Atomic int stopping;
    ev_loop_t loop;
    tw_t tw;
    uint64_t now;      /* monotonic ms of this turn */
    ev_watcher_t wake; /* eventfd: cl_post */
    pthread_mutex_t mu;
    cl_task_t *tasks, **tasks_tail;

    /* the member table (link thread) */
    cl_node_t nodes[CL_MAX_NODES];

    /* read by any thread (API, health, metrics) */
    _Atomic uint32_t members;    /* current members, this node included */
    _Atomic int lease_ok;        /* 1: registered and alive (always 1 without etcd) */
    an_counter_t route_marks;    /* ROUTE_MARK rounds written (cl_route_marks) */
    an_counter_t route_trims;    /* malloc_trim calls after route storms (cl_route_work) */
    char link_addr[CL_ADDR_MAX]; /* the advertised link address; set in init */
    /* a copy of the member table for the API's threads (cl_nodes_json) */
    pthread_mutex_t snap_mu;
    cl_node_t snap[CL_MAX_NODES];

    cl_link_stats_t lstats[CL_MAX_NODES]; /* by node index (cl_link.c) */
    _Atomic uint64_t local_routes;        /* filters this node announces */
    _Atomic uint64_t refused_unnamed;     /* links refused before the peer named
                                           * itself (an accepted TLS handshake) */

    cl_links_t *links;   /* cl_link.c */
    cl_member_t *member; /* cl_member.c */
    cl_owner_t *owner;   /* cl_owner.c */
    cl_adopt_t *adopt;   /* cl_adopt.c; NULL: adoption off */
    cl_repl_t *repl;     /* cl_repl.c; NULL: session_store is not replicated */
    cl_move_t *move;     /* cl_move.c; NULL: no client-id registry */
};

/* ---- cluster.c ---- */

/* Run fn(cl, arg) on the link thread, in order of posting.  Any thread.
 * Returns 0, or -1 when the link thread has stopped (fn is not called). */
int cl_post(cl_t *cl, void (*fn)(cl_t *cl, void *arg), void *arg);
/* The index of node `name`, given on first sight; -1 when the table is full.
 * Link thread (or init, before it runs). */
int cl_node_index(cl_t *cl, const char *name);
/* Rendezvous hashing: node's weight for name (FNV-1a of both, then an
 * avalanche); the highest weight first.  Pure: any thread. */
uint64_t cl_rdv(const char *node, const char *name);
/* Membership, from any thread (posted to the link thread): `name` is a
 * member whose links listen at link_addr / is no longer a member.  This
 * node's own name is ignored. */
void cl_member_seen(cl_t *cl, const char *name, const char *link_addr);
void cl_member_gone(cl_t *cl, const char *name);
/* Any thread: member `name`'s process is gone (its link went down and its
 * link address refuses connections: cl_link.c's probe): its lease is
 * revoked at the etcd thread's next tick, if etcd still shows it under the
 * lease it had (cl_member.c). */
void cl_member_dead(cl_t *cl, const char *name);
/* GET /api/v1/nodes: {"node","cluster","link","members":[...]} from the
 * copy of the member table (API threads). */
struct json_t *cl_nodes_json(cl_t *cl);

/* ---- cl_link.c, cl_fwd.c, cl_route.c: node links, routes, forwarding
 * (their own shared state: cl_link_int.h) ---- */

#define CL_STAT_ADD(x, n)                                                                          \
    atomic_store_explicit(&(x), atomic_load_explicit(&(x), memory_order_relaxed) + (n),            \
                          memory_order_relaxed) /* one writer: no locked add */
#define CL_STAT_SET(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)
#define CL_STAT_GET(x) atomic_load_explicit(&(x), memory_order_relaxed)

/* Module init (main thread, before the workers run): bind the link
 * listener (fills cl->link_addr), register the route owner row and the
 * inbox kind.  Returns 0 or -1 (logged). */
int cl_links_init(cl_t *cl);
/* On the link thread, once, before any other call below. */
int cl_links_start(cl_t *cl);
/* On the link thread: node idx became a member or left (cl->nodes[idx]). */
void cl_links_member_changed(cl_t *cl, int idx);
/* Worker w's turn ends and it asked for it: hand the messages it queued
 * for other nodes to the link thread, in one batch. */
void cl_links_turn_end(cl_t *cl, worker_t *w);
/* On the link thread, after a run of posted tasks: a ROUTE_MARK on every
 * link up when the tasks changed local routes (cl_route.c). */
void cl_route_marks(cl_t *cl);
/* Any thread: the route barrier's state: this node's route changes made so
 * far (posted) and how far every peer whose link is up has them (done). */
void cl_route_progress(cl_t *cl, uint64_t *posted, uint64_t *done);
/* On the link thread, when it is stopping: close every link. */
void cl_links_stop(cl_t *cl);
/* After the link thread and the workers stopped. */
void cl_links_free(cl_t *cl);

/* ---- cl_member.c: membership through etcd ---- */

/* Module start (the link thread runs): with cluster.etcd set, start the
 * etcd thread (lease, registration, watch).  Returns 0 or -1 (logged). */
int cl_member_start(cl_t *cl);
/* Module stop: revoke the lease (a clean leave), end the etcd thread. */
void cl_member_stop(cl_t *cl);
void cl_member_free(cl_t *cl);
/* /metrics lines of the etcd client and the lease (any thread). */
void cl_member_metrics(cl_t *cl, module_metrics_t *mm);
/* The etcd client (NULL: none, or stopping) and the current lease (0:
 * none), for the client-id registry (any thread). */
struct cl_etcd *cl_member_etcd(cl_t *cl);
int64_t cl_member_lease(cl_t *cl);
/* Etcd thread: fn(arg, ok) once this node's view of the members is at
 * least as new as etcd's at this call (a full read of the member list sent
 * after it, applied: a departure it finds reaches cl_member_gone first); ok
 * 0 when the read failed or the node stops.  Reads are shared by the
 * callers that wait meanwhile. */
void cl_member_fresh(cl_t *cl, void (*fn)(void *arg, int ok), void *arg);

/* ---- cl_owner.c: the client-id registry (docs/cluster.md "Client-id
 * ownership") ---- */

/* Module init (with cluster.etcd): the connect gate, the event handlers,
 * the inbox kind.  Returns 0 or -1. */
int cl_owner_init(cl_t *cl);
/* Link thread: a TAKE or GIVEN frame from peer idx.  -1: malformed. */
int cl_owner_recv(cl_t *cl, int idx, uint8_t type, const uint8_t *body, uint32_t len);
/* etcd thread: a new lease after a lost one: claim the ids of the
 * connected clients again (posted to every worker). */
void cl_owner_lease_back(cl_t *cl);
/* The etcd client's batch_end (arg: the cl_t): the claims' answers gathered
 * during the batch, posted to each worker at once. */
void cl_owner_batch_end(void *arg);
/* Link thread, when it stops: answer the claims waiting for a peer. */
void cl_owner_stop(cl_t *cl);
void cl_owner_free(cl_t *cl);
void cl_owner_metrics(cl_t *cl, module_metrics_t *mm);
/* A session in the hand-over format (cl_owner.c's "the session, handed
 * over") installed on its home worker w: 0, 1 when one of that id is there
 * already (it stays), -1 unreadable.  Its stored messages take their keys
 * from *seq_next (counting up; a range the caller reserved) or, NULL, from
 * persist_next_seq.  Worker w only. */
int cl_owner_install(worker_t *w, const char *id, uint16_t id_len, const uint8_t *blob, size_t len,
                     uint64_t *seq_next);
/* Any thread: end the session of client id on its home worker (a claim
 * found it owned by another node). */
void cl_owner_kick(cl_t *cl, const char *id);
/* Any thread: the client ids an adoption claimed (u16 len | id, each) are
 * owned by node `owner` (this node: under `lease`): resuming CONNECTs of
 * them skip their claim for a while (cl_recent.c). */
void cl_owner_adopted(cl_t *cl, const char *owner, int64_t lease, const uint8_t *ids, size_t len);
/* Any thread: hand ptr to cl_adopt_item on worker `to` (WM_CL_OWNER). */
void cl_owner_post_adopt(cl_t *cl, uint32_t to, void *ptr);
/* Any thread: hand ptr to cl_move_item on worker `to` (WM_CL_OWNER). */
void cl_owner_post_move(cl_t *cl, uint32_t to, void *ptr);

/* ---- cl_move.c: a session moving between live nodes (docs/cluster.md
 * "Client-id ownership") ---- */

/* Module init (after cl_owner_init and cl_adopt_init: its dedup hook goes
 * in front of the adopter's); link thread stop (the moves waiting answered
 * 0x88); free; metrics. */
int cl_move_init(cl_t *cl);
void cl_move_stop(cl_t *cl);
void cl_move_free(cl_t *cl);
void cl_move_metrics(cl_t *cl, module_metrics_t *mm);
/* The old owner, home worker, in a take from peer idx (request req), after
 * the session was encoded: 1 when s stays as a tombstone (offline, its
 * routes kept, emptied, not durable) that keeps what reaches it for the new
 * owner (the caller then sends CL_F_MOVE_KEEP before the GIVEN), 0 when
 * the caller ends it. */
int cl_move_out_keep(worker_t *w, cl_t *cl, sess_t *s, int idx, uint32_t req);
/* Any thread: the tombstones alive on this node (a drain waits for them
 * to be asked and answered: cluster.c cl_drain_pending). */
uint64_t cl_move_tombstones(cl_t *cl);
/* Home worker: a tombstone of this id is here. */
int cl_move_out_here(worker_t *w, cl_t *cl, const char *id, size_t len);
/* Home worker, a CONNECT of an id with a tombstone here going on (the
 * gate's apply): without a session handed over (handed 0) and without a
 * clean start: 0x89 (the session is another node's); else the tombstone
 * ends, install(w, g) runs (NULL: none) and what the tombstone still held
 * goes into the session installed.  0 or the reason code. */
uint8_t cl_move_out_reinstall(worker_t *w, cl_t *cl, proto_gate_t *g, int handed,
                              void (*install)(worker_t *w, proto_gate_t *g));
/* Any thread (the etcd thread: the claim after a GIVEN that came with a
 * MOVE_KEEP): install the session (blob, taken) on g's worker, wait for
 * its routes, ask peer idx for what it kept, merge it, then answer g. */
void cl_move_in_begin(cl_t *cl, proto_gate_t *g, int idx, uint32_t req, uint8_t *blob,
                      uint32_t blob_len);
/* Any thread (the etcd thread: a clean-start claim after a GIVEN that
 * came with a MOVE_KEEP): tell peer idx to end its tombstone of id now
 * (CL_F_MOVE_DROP {req, id}). */
void cl_move_drop_send(cl_t *cl, int idx, uint32_t req, const char *id, size_t len);
/* Link thread: a MOVE_ASK, MOVE_KEPT, MOVE_LATE or MOVE_DROP frame from
 * peer idx. */
int cl_move_recv(cl_t *cl, int idx, uint8_t type, const uint8_t *body, uint32_t len);
/* The worker's part (WM_CL_OWNER), and its drop when the worker stopped. */
void cl_move_item(worker_t *w, inbox_item_t *it);
void cl_move_item_drop(void *ptr);

/* ---- cl_recent.c: the ids of recent adoptions, by owner (any thread) ---- */
cl_recent_t *cl_recent_new(void);
void cl_recent_free(cl_recent_t *r);
/* Keep ids (u16 len | id, each; copied) as owned by `owner` (under lease). */
void cl_recent_add(cl_recent_t *r, const char *owner, int64_t lease, const uint8_t *ids, size_t len,
                   uint64_t now);
/* 1 and the owner (and lease) when id is kept, taken out; else 0. */
int cl_recent_take(cl_recent_t *r, const char *id, size_t len, uint64_t now,
                   char owner[CL_NAME_MAX], int64_t *lease);
/* 1 when id is kept with `owner` as its owner (left in); else 0. */
int cl_recent_has(cl_recent_t *r, const char *id, size_t len, uint64_t now, const char *owner);

/* ---- cl_adopt.c: a dead member's sessions adopted from its Redis store
 * (docs/cluster.md "A dead node's sessions") ---- */

/* Module init: the state when cluster.adopt is on, the store is Redis and
 * etcd is used (otherwise nothing, and every call below is a no-op).
 * Start: the adopter thread; stop: it ends (an adoption midway is
 * abandoned, which loses nothing); free. */
int cl_adopt_init(cl_t *cl);
int cl_adopt_start(cl_t *cl);
void cl_adopt_stop(cl_t *cl);
void cl_adopt_free(cl_t *cl);
/* Link thread: member `name` came (present) or went out; rank: this
 * node's place among the live members by rendezvous hash of the name. */
void cl_adopt_member(cl_t *cl, const char *name, int present, int rank);
/* Any thread: 1 while a member that went out may still have sessions to
 * adopt (the connect gate refuses resuming CONNECTs meanwhile: 0x88). */
int cl_adopt_pending(cl_t *cl);
/* Any thread: 1 when the adoption running here has a session with this
 * client id (its claim of the id is this node's, made or to come). */
int cl_adopt_holds(cl_t *cl, const char *id, size_t len);
/* Any thread: +1 when the etcd thread sees a member go out (cl_member_gone),
 * -1 once the link thread applied it (its watch started): between the two
 * cl_adopt_pending is 1 too, so the gate closes as soon as etcd's answer
 * is seen, not one thread hop later. */
void cl_adopt_early(cl_t *cl, int delta);
/* Any thread (cluster.c): a store of node `name` found in Redis at start;
 * on the link thread, unless it is a member, it is watched as if it had
 * just gone out (cl_adopt_member). */
void cl_adopt_unseen(cl_t *cl, const char *name);
/* The copies other nodes kept for a dead node (cl_hand.c), while this node
 * adopts it: expect (link thread) how many nodes were asked; collected:
 * copies for it (new references, given; the array stays the caller's),
 * from_peer 1 for a node's complete answer. */
void cl_adopt_expect(cl_t *cl, const char *name, uint32_t asked);
void cl_adopt_collected(cl_t *cl, const char *name, msg_t **v, uint32_t n, int from_peer);
/* Link thread: m, published here for node `name` up to this node's own ask
 * for its copies and applied after it (a worker's turn, a route held for a
 * commit), goes to the sessions this node adopted from it (a merge on their
 * home workers, as the kept copies) while the adoption's sessions are
 * known here (ADOPT_LATE_MS after it). */
void cl_adopt_late(cl_t *cl, const char *name, msg_t *m);
/* cl_hand.c, any thread (posted to the link thread): ask the members for
 * their copies kept for `name` (-1: the link thread stopped); tell them
 * the adoption is stored (they release theirs); this node's watch of
 * `name` ended (what it kept is released). */
int cl_hand_ask(cl_t *cl, const char *name);
void cl_hand_done(cl_t *cl, const char *name);
void cl_hand_watch_end(cl_t *cl, const char *name);
/* cl_hand.c, adopter thread: every client id of `name` is claimed here: the
 * members' (and this node's) connect gates for it open (CL_F_ADOPT_OVER),
 * after the ids claimed (ids: u16 len | id each, under lease; malloc'd,
 * taken) went to them (CL_F_ADOPT_IDS) and to this node's registry
 * (cl_owner_adopted). */
void cl_hand_over(cl_t *cl, const char *name, int64_t lease, uint8_t *ids, size_t len);
/* Any thread: `name`'s adopter (node index from, 0: this node) made its
 * claims: this node's watch of it holds CONNECTs back no longer (it still
 * ends when the store says so); with replicated sessions, once every
 * replica etcd names for it has (each adopts its share). */
void cl_adopt_over(cl_t *cl, const char *name, int from);
/* Any thread: x and y are the same message (the adopter's dedup:
 * topic, payload, properties, the publish time when both know it). */
int cl_adopt_same(const msg_t *x, const msg_t *y);
/* 1 when s has a message cl_adopt_same as m in flight or queued. */
int cl_adopt_sess_holds(sess_t *s, const msg_t *m);
/* The home worker's part of an adoption (WM_CL_OWNER), and its drop when
 * the worker stopped. */
void cl_adopt_item(worker_t *w, void *ptr);
void cl_adopt_item_drop(void *ptr);
void cl_adopt_metrics(cl_t *cl, module_metrics_t *mm);

/* ---- cl_repl.c: persistence.session_store: replicated (docs/cluster.md
 * "Replicated sessions") ---- */

/* Module init: with session_store replicated, the state and the store's
 * replicate hook (-1: no etcd); start (link thread): its timer; stop: the
 * hook removed, "stopped" recorded in etcd (a clean stop); free. */
int cl_repl_init(cl_t *cl);
void cl_repl_start(cl_t *cl);
void cl_repl_stop(cl_t *cl);
void cl_repl_free(cl_t *cl);
int cl_repl_on(const cl_t *cl);
/* Link thread: the link to node idx came up / went down. */
void cl_repl_link(cl_t *cl, int idx, int up);
/* Link thread: a REPL_DATA, REPL_ACK or REPL_DROP frame.  -1: malformed. */
int cl_repl_recv(cl_t *cl, cl_conn_t *c, uint8_t type, const uint8_t *body, uint32_t len);
/* Any thread (posted): tell the members that hold no share of this node
 * to drop their copies of it. */
void cl_repl_drop_others(cl_t *cl);
/* Adopter thread: etcd's replica/<node>, node's state ("live", "stopped",
 * "adopted:<R>"; "" absent; -1 etcd failed); the replicas it names
 * (replica/<node>/<R>: their count, -1 etcd failed); this node's share of
 * node adopted (adopted 1: the state "adopted:<this node>") or none to
 * adopt: this node no longer named among its replicas (0 or -1). */
int cl_repl_etcd_get(cl_t *cl, const char *node, char *val, size_t cap);
int cl_repl_etcd_replicas(cl_t *cl, const char *node, char (*names)[CL_NAME_MAX], int max);
int cl_repl_etcd_adopted(cl_t *cl, const char *node, int adopted);
/* Adopter thread: the copy of node `name` kept here (NULL: none) and
 * whether it is complete; loose: opened from its directory (not followed
 * by the link thread).  Drop: closed and its directory removed. */
struct store *cl_repl_copy_open(cl_t *cl, const char *name, int *complete, int *loose);
void cl_repl_copy_drop(cl_t *cl, const char *name, struct store *st);
/* Adopter thread: a stale copy of `name` (etcd names another node, or it
 * was adopted elsewhere): closed and removed, if there is one. */
void cl_repl_copy_forget(cl_t *cl, const char *name);
void cl_repl_metrics(cl_t *cl, module_metrics_t *mm);
/* GET /api/v1/nodes' "replication" object (NULL: not replicated). */
struct json_t *cl_repl_json(cl_t *cl);

#endif
