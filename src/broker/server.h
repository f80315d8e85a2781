/* server.h -- the server context and the worker threads.
 *
 * The server context (server_t) is the only process-wide state: the
 * configuration (read-only after start), the listening sockets, the router
 * (topic trie and retained messages, each behind its own lock) and the
 * workers.  Nothing else is global.
 *
 * Each worker is one thread with its own event loop (ev.h), timer wheel
 * and inbox.
 * A worker owns the connections it serves and the sessions whose home it is
 * (home = hash(client id) % workers, or the worker a moved session went
 * to: worker_home, migrate.h): only that thread touches them.  A
 * connection accepted by one worker moves to its session's home worker
 * right after its CONNECT is read, before CONNACK; from then on one worker
 * owns it, until its traffic moves it and its session to the worker its
 * deliveries go to (migrate.h).  Everything that crosses threads travels as
 * inbox items: deliveries (a message reference for a session id), adopted
 * connections, the stop request.  The worker does not know what an item
 * means: the module that owns a kind registers its handler
 * (worker_inbox_register), and the inbox dispatches through that table.
 */
#ifndef ANTENNA_SERVER_H
#define ANTENNA_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "auth_stats.h"
#include "conf.h"
#include "ev.h"
#include "event.h"
#include "inbox.h"
#include "net_linger.h"
#include "oarena.h"
#include "slab.h"
#include "trie.h"
#include "tw.h"
#include "util.h"

/* Session sizes (sess_t and its client id) kept in slabs, in steps of 8
 * bytes (sess.c); a longer client id is malloc'd. */
#define SESS_SLAB_CLASSES 16
/* A session's array of subscriptions and its copies of filters in slabs
 * too, by size in steps of 8 bytes from 16 (up to 136 bytes); larger ones
 * malloc'd. */
#define SUB_SLAB_CLASSES 16

typedef struct server_s server_t;
typedef struct worker_s worker_t;
typedef struct proto_gate_s proto_gate_t; /* proto.h: the connect gate */
typedef struct conn_s conn_t;
typedef struct sess_s sess_t;
typedef struct retain_s retain_t;
typedef struct msg_s msg_t;
struct ssl_ctx_st;
struct ssl_st;

/* Peers whose exact routes are in a filter of one kind (a counting Bloom
 * filter, rbloom.h, or a plain bit filter, rbits.h): the filter and the
 * peer's node index, at most one entry a node; under trie_lock (router.c
 * keeps them: router_node_exact_*, router_node_bits_*). */
typedef struct {
    void *f;
    uint16_t node;
} rpeer_t;
typedef struct {
    rpeer_t *v;
    uint32_t n, cap;
} rpeers_t;

/* Inbox item kinds: numbers only.  The module named after each registers
 * its handler (worker_inbox_register) before anything of that kind is
 * posted; a new module takes the next number. */
enum {
    WM_DELIVER = 1, /* router: ptr: msg_t* (a reference), sid, qos */
    WM_ADOPT,       /* proto: ptr: handoff_t*: a connection moving to its home */
    WM_STOP,        /* worker: stop the loop, close every connection */
    WM_COMMITTED,   /* persist: sid: (int64) result of this worker's oldest
                     * batch in the store (persist.h), from the committer thread */
    WM_AUTH,        /* proto: ptr: auth_wait_t*: an asynchronous backend's answer */
    WM_API,         /* api: ptr: api_job_t* (api_snap.h): a management API request */
    WM_CLUSTER,     /* cluster (src/cluster): a message or control item from a node link */
    WM_CONTROL,     /* reload: ptr: a control job (reload.h): listeners, drain */
    WM_GATE,        /* proto: ptr: proto_gate_t*: a connect gate's answer (proto.h) */
    WM_CL_OWNER,    /* cluster (cl_owner.c): hand a client's session over to another node */
    WM_RULES,       /* rules (src/rules): a new rule set, or a message to republish */
    WM_SINKS,       /* sinks (src/sinks): ptr: a dead-letter message to publish */
    WM_HTTPIN,      /* http_ingest (src/gateways/http): ptr: httpin_job_t*: messages to route */
    WM_COMMANDS,    /* commands (src/commands): ptr: module_inst_t*, sid: a command to send */
    WM_DEVICES,     /* devices (devices_shadow.c): ptr: msg_t* (a reference) to publish */
    WM_COAP,        /* coap (src/gateways/coap): ptr: msg_t* (flags 0) or a QoS 1 job to route */
    WM_LORA,        /* lora (src/gateways/lora): ptr: msg_t* (a reference) to publish */
    WM_MIGRATE,     /* migrate (migrate.h): ptr: conn_t*: a connection and its session
                     * moving to the worker its traffic goes to */
    WM_FENCE,       /* migrate (migrate.h): a moved subscriber's fence: qos: MIGRATE_FENCE_*,
                     * sid: the session, flags: the worker asking */
    WM_KINDS = 32   /* size of the handler table */
};

/* What a worker does with an inbox item of one kind: run it (on the worker
 * that took it), or drop it (the worker stopped with it still queued:
 * release what it carries; NULL when it carries nothing). */
typedef struct {
    void (*run)(worker_t *w, inbox_item_t *it);
    void (*drop)(inbox_item_t *it);
} worker_inbox_kind_t;

struct endpoint_s;
/* What the router does with a message for a subscriber of one owner kind
 * (sub_ref_t.kind, trie.h): router.h says what an implementation keeps. */
typedef struct {
    void (*deliver)(worker_t *w, uint64_t sid, uint16_t owner, msg_t *m, uint8_t qos, uint8_t flags,
                    void *user);
    void *user;
    /* ROUTE_OWNER_NODE only, optional: every retained publish (or clear)
     * stored on this worker that was published on this node (hops 0), not
     * $SYS; called after the store, before the match (router.h) */
    void (*retained)(worker_t *w, msg_t *m, void *user);
    /* ROUTE_OWNER_NODE only, optional: hold the publisher's acknowledgement
     * of the message just forwarded (worker_t.fwd_ticket), or one queued
     * behind such acknowledgements, until the nodes have it (and, wrote,
     * this turn's store batch is committed): then ep_ack(EP_ACK_HELD) */
    void (*hold_ack)(worker_t *w, struct endpoint_s *ep, uint64_t sid, uint8_t type, uint16_t pid,
                     uint8_t reason, int wrote, void *user);
    /* with hold_ack: endpoint ep is being freed (its held acks are not sent) */
    void (*forget_endpoint)(worker_t *w, struct endpoint_s *ep, void *user);
    /* ROUTE_OWNER_NODE only, optional: a SUBSCRIBE was just handled on w;
     * 0 when every node has this node's routes already, else a ticket: the
     * SUBACK is held until router_barrier_passed(w, t >= ticket), or for
     * *wait_ms at most */
    uint64_t (*sub_barrier)(worker_t *w, uint32_t *wait_ms, void *user);
} route_owner_kind_t;

/* Packet types counted in and out (index = MQTT packet type 0..15). */
#define STAT_PKT_TYPES 16

/* Per-worker counters: written by the worker only, summed by readers. */
typedef struct {
    an_counter_t msgs_received; /* PUBLISH packets from clients */
    an_counter_t msgs_sent;     /* PUBLISH packets to clients */
    an_counter_t msgs_dropped;  /* queue full, output full, offline QoS 0 */
    an_counter_t bytes_received;
    an_counter_t bytes_sent;
    an_counter_t clients_connected; /* current; maintained as +1/-1 */
    an_counter_t conn_exts;         /* connections holding a conn_ext_t now; +1/-1 (a
                                     * connection that moves takes its count along: the
                                     * sum over the workers is right) */
    an_counter_t connections_total;
    an_counter_t refused_limit;                /* connections refused: max_connections */
    an_counter_t refused_rate;                 /* connections refused: max_connection_rate */
    an_counter_t refused_memory;               /* connections refused: memory_high_water */
    an_counter_t refused_door;                 /* connections refused: the door is closed */
    an_counter_t refused_fd_limit;             /* connections refused: out of file descriptors */
    an_counter_t throttled;                    /* clients paused by a rate limit */
    an_counter_t backpressure_pauses;          /* publishers paused a tick: a subscriber's queue
                                       * over limits.publisher_backpressure */
    an_counter_t slow_disconnects;             /* subscribers closed by slow_subscriber_timeout */
    an_counter_t route_holds;                  /* SUBACKs held for the route barrier (cluster) */
    an_counter_t route_hold_timeouts;          /* ... let go by its bound, not by the answers */
    an_counter_t dropped_queue_full;           /* messages dropped: session queue full */
    an_counter_t refused_queue_full;           /* QoS 1/2 PUBLISH refused: a queue was full */
    an_counter_t congested;                    /* turns that found another inbox over its bound */
    an_counter_t auth_success;                 /* CONNECTs allowed by the auth chain */
    an_counter_t auth_failure;                 /* CONNECTs refused by it (credentials) */
    an_counter_t auth_banned;                  /* CONNECTs refused: address banned */
    an_counter_t acl_denied;                   /* PUBLISH/SUBSCRIBE/retained refused by the ACL,
                                     * messages not delivered (sess_acl.h) */
    an_counter_t takeovers_other_user;         /* CONNECTs that claimed another user's
                                     * session (sess_acl.h) */
    an_counter_t accepted[CONF_MAX_LISTENERS]; /* connections accepted, by listener */
    an_counter_t handshake_failed[CONF_MAX_LISTENERS]; /* transport handshakes (TLS, the
                                     * WebSocket upgrade) failed or timed out, by listener */
    an_counter_t pkts_in[STAT_PKT_TYPES];              /* packets read, by MQTT type */
    an_counter_t pkts_out[STAT_PKT_TYPES];             /* packets queued for sending, by type */
    an_counter_t msgs_in_qos[3];                       /* PUBLISH from clients by QoS */
    an_counter_t msgs_out_qos[3];                      /* PUBLISH to clients by QoS */
    /* gauges refreshed by the worker every second (worker_gauges) */
    an_counter_t sessions; /* sessions whose home is this worker */
    an_counter_t inflight; /* their inflight messages */
    an_counter_t queued;   /* their queued messages */
    an_hist_t loop_turn;   /* duration of a loop turn (events to end of turn) */
    /* acl_denied by action: STAT_ACL_PUBLISH, _SUBSCRIBE, _READ (delivery) */
    an_counter_t acl_denied_by[3];
    /* bans started (auth.ban): an address banned, a user name locked */
    an_counter_t bans;
    /* connections moved from this worker to the one their traffic goes to
     * (migrate.h) */
    an_counter_t migrations;
    /* items about a client id handed on to the worker its session moved to
     * after they were posted (migrate_hand_on) */
    an_counter_t migrate_handed;
    /* consolidation (migrate.h): changes of mode (worker 0), deliveries a
     * moved subscriber's new worker held for its fence, and stragglers the
     * old worker handed on */
    an_counter_t consol_changes;
    an_counter_t fence_held;
    an_counter_t fence_handed;
    /* auth backends' answers to CONNECT and their latency (auth_stats.h) */
    auth_stats_t auth;
} worker_stats_t;

enum { STAT_ACL_PUBLISH = 0, STAT_ACL_SUBSCRIBE, STAT_ACL_READ };

/* A chained hash table of sessions, keyed by client id (SESS_BY_ID) or by
 * session id (SESS_BY_SID); the chain links live in sess_t.  Client ids
 * are chosen by clients: they are hashed with SipHash under a random key
 * drawn when the table gets its first bucket array, so nobody can pick ids
 * that share a chain. */
enum { SESS_BY_ID = 0, SESS_BY_SID = 1 };
typedef struct {
    sess_t **buckets;
    size_t nbuckets, count;
    int kind;
    uint64_t key[2]; /* SipHash key (SESS_BY_ID) */
} sess_table_t;

struct worker_s {
    server_t *srv;
    uint32_t id;
    pthread_t thread;
    ev_loop_t loop;
    int stopping;
    uint64_t now;               /* ms, refreshed once per loop turn */
    uint64_t turn_start;        /* us, when this turn's wait returned */
    uint8_t publish_backlogged; /* router_publish: a subscriber of the last publish
                                 * is over limits.publisher_backpressure (proto.c
                                 * pauses the publisher) */
    uint32_t fwd_held;          /* acknowledgements held by the node row (hold_ack) */
    /* migrate.h: the deliveries of the publish being routed (router.c
     * deliver_session counts, proto.c clears and reads), and the sessions
     * wanted on another worker, moved at the end of the turn */
    uint32_t dlv_local, dlv_cross;
    uint16_t dlv_to;   /* the first other worker delivered to */
    uint8_t dlv_mixed; /* deliveries went to more than one other worker */
    uint8_t mig_on;    /* workers_migrate and 2 workers or more */
    struct migrate_want_s *migs;
    uint32_t nmigs, migs_cap;
    /* migrate.h, consolidation: this worker's busy time (us, written by it,
     * read by worker 0), the sweep's timer and cursor, the subscribers that
     * moved away and still get stragglers (fence), the deliveries held for
     * a subscriber that moved in until its fence is done */
    _Atomic uint64_t busy_us;
    tw_timer_t consol_timer;
    size_t consol_cursor;
    struct migrate_fence_s *fences;
    uint32_t nfences, fences_cap;
    uint32_t fence_epoch;  /* the last epoch asked of the other workers */
    uint32_t fence_moved;  /* subscribers moved out this turn (an epoch to ask) */
    uint32_t *fence_acked; /* per worker: the last epoch it acknowledged */
    inbox_vec_t fence_held;
    uint64_t fwd_ticket; /* the node row forwarded the last publish at QoS 1/2:
                                 * its ticket (router_publish clears it, hold_ack
                                 * takes it) */
    uint64_t wall_ms;    /* wall clock (CLOCK_REALTIME_COARSE) of this turn, ms:
                          * messages' publish time (router_publish) */
    uint64_t id_epoch;   /* the publish ids this worker gives (msg.h, msg_id_next) */
    uint32_t id_seq;
    tw_t tw;
    tw_timer_t mem_timer;   /* worker 0 only: memory high-water check */
    tw_timer_t sweep_timer; /* worker 0 only: expired retained messages */
    tw_timer_t gauge_timer; /* every worker: refresh the session gauges (1 s) */
    inbox_t inbox;
    ev_watcher_t inbox_ev;                      /* the inbox's eventfd */
    ev_watcher_t listen_ev[CONF_MAX_LISTENERS]; /* srv->listen_fds[i], shared */
    inbox_vec_t taken;                          /* items being processed this turn */
    inbox_vec_t *outbox;                        /* one outgoing batch per worker */
    sess_table_t by_id;                         /* client id -> session */
    sess_table_t by_sid;                        /* session id -> session */
    conn_t *conns;                              /* every connection of this worker */
    conn_t *flush_head;                         /* connections with output this turn */
    conn_t *dead_head;                          /* closed this turn, freed at its end */
    conn_t **route_held; /* holding a SUBACK for the cluster's routes (conn.c) */
    uint32_t nroute_held, route_held_cap;
    linger_list_t lingers; /* sockets closing gracefully (net_linger.h) */
    uint8_t *scratch;      /* read buffer shared by the worker's connections */
    size_t scratch_size;
    struct sess_ext_s *ext_spare; /* sess_ext_t given back when idle (sess.c) */
    uint32_t ext_spares;          /* how many */
    oarena_t obufs;               /* this turn's output buffers (worker_buf_get) */
    tw_timer_t obufs_timer;       /* gives back what a burst of output touched */
    uint64_t trim_acks;           /* PUBACKs + PUBCOMPs read at the last malloc_trim */
    uint64_t gauge_acks;          /* ... at the last gauge tick (worker.c) */
    sub_ref_t *matches;           /* router scratch: subscribers of one publish */
    size_t nmatches, matches_cap;
    struct route_target_s *targets; /* router scratch: where a stored message goes */
    size_t targets_cap;
    uint64_t next_auto_id;
    uint64_t rng;                 /* xorshift state: random shared-subscription picks */
    uint64_t qfull_logged_at;     /* ms: rate limit of the queue-full log line */
    uint64_t acl_logged_at;       /* ms: rate limit of the ACL-denied publish line */
    uint64_t takeover_logged_at;  /* ms: of the line on another user's takeover */
    uint64_t judged_logged_at;    /* ms: of the line on a subscription a reload restricted */
    uint64_t store_err_logged_at; /* ms: rate limit of the failed-commit line */
    uint64_t store_errors;        /* failed commits since that line */
    uint64_t congested_until;     /* ms: another worker's inbox is over INBOX_HIGH */
    int reserve_fd;               /* /dev/null, given up to refuse a connection at EMFILE */
    uint8_t accept_paused;        /* listeners out of the loop until accept_timer (EMFILE) */
    tw_timer_t accept_timer;
    /* wake-up coalescing (worker.c, conf workers_coalesce_us), and the
     * deferred doorbells of other workers' inboxes (inbox_post_defer) */
    uint32_t coalesce_us;
    uint32_t rings_owed;         /* entries of ring_at[] set */
    uint64_t wait_start;         /* us: when the last wait began */
    uint64_t last_sleep_us;      /* how long it lasted */
    uint64_t *ring_at;           /* per worker, us: ring it by then if still needed (0: none) */
    uint64_t ring_next;          /* us: the earliest of ring_at[] while rings_owed */
    struct store_batch *batch;   /* store writes of this turn (persist.h), or NULL */
    struct persist_held_s *held; /* acks and routes waiting for a commit, and the
                                  * batch numbering (persist_held.h) */
    worker_stats_t stats;
    struct module_slot_s *modules;       /* per module: its context, its tick (module.h) */
    struct module_slot_s *turn_end_head; /* modules asking for turn_end (module.h) */
};

struct server_s {
    conf_t conf;
    uint32_t nworkers;
    uint64_t home_key[2]; /* SipHash key of worker_home (client ids) */
    /* client ids homed elsewhere than their hash says (migrate.h), and how
     * many: worker_home looks only when not 0 */
    struct migrate_homes_s *homes;
    _Atomic uint32_t nhomes;
    /* migrate.h, consolidation: 1 while the load is light enough for worker
     * 0 alone (every session moves there), 0 while it is spread by hash;
     * written by worker 0's decision, read by every worker's sweep */
    _Atomic uint8_t consolidated;
    uint64_t consol_last_busy; /* worker 0 only: the sum of busy_us at the last decision */
    uint64_t consol_since;     /* worker 0 only: ms of the last change of mode */
    uint8_t consol_votes;      /* worker 0 only: periods in a row below the threshold */
    worker_t *workers;
    /* listeners: opened and closed at runtime by a reload (reload.h), hence atomic */
    _Atomic int listen_fds[CONF_MAX_LISTENERS];
    _Atomic uint16_t listen_ports[CONF_MAX_LISTENERS]; /* actual ports (0 resolved) */
    /* TCP_NODELAY set on the listening socket: what it accepts has it
     * already (Linux copies it), no setsockopt(2) a connection */
    _Atomic uint8_t listen_nodelay[CONF_MAX_LISTENERS];
    _Atomic uint32_t listen_conns[CONF_MAX_LISTENERS];
    /* transport: tls/wss (net_tls.h).  Replaced on SIGHUP by the main
     * thread (server_tls_reload); read by the workers at accept: both
     * under tls_lock, so a worker's SSL_new (which takes its own reference
     * to the context) never races with the release of the old one. */
    struct ssl_ctx_st *tls_ctx[CONF_MAX_LISTENERS];
    pthread_mutex_t tls_lock;
    _Atomic uint32_t nlisteners; /* slots in use so far (a reload may add) */
    /* router: the subscription trie under a read-write lock */
    pthread_rwlock_t trie_lock;
    trie_t *trie;
    struct shared_set_s *groups; /* shared subscriptions, under trie_lock */
    struct rtab_s *rtab;         /* other nodes' exact routes (rtab.h), under trie_lock;
                                  * NULL until the first one */
    rpeers_t rblooms;            /* peers whose exact routes are a counting Bloom filter instead
                       * (rbloom_t), under trie_lock */
    rpeers_t rbits;              /* peers that ship their exact routes as a plain bit filter
                       * (rbits_t), under trie_lock */
    uint64_t
        route_key[2]; /* SipHash key of rtab's, rblooms' and rbits' hashes (router_route_exact):
                            * random; the cluster sets one key for all its nodes (cl_bits.c) */
    retain_t *retain;
    struct store *store;             /* persistence (persist.h), or NULL */
    _Atomic uint64_t next_qseq;      /* keys of stored session messages */
    struct auth_chain *_Atomic auth; /* authentication and ACL (auth_chain.h); swapped
                                      * by a reload (reload.h), old chains kept */
    _Atomic uint64_t next_sid;
    _Atomic uint64_t persistent_sessions; /* expiry != 0 (limits.max_sessions) */
    _Atomic uint32_t total_conns;         /* every connection, all listeners */
    _Atomic uint64_t rate_second;         /* max_connection_rate window */
    _Atomic uint32_t rate_count;
    _Atomic int over_high_water;               /* RSS above memory_high_water */
    _Atomic uint32_t door_closed;              /* SRV_DOOR_* bits: new connections refused */
    worker_inbox_kind_t inbox_kinds[WM_KINDS]; /* by inbox item kind; written
                           * before the first item of a kind is posted, read-only after */
    struct api_s *api;                         /* management API (api.h), or NULL */
    uint64_t started_wall;                     /* seconds since the epoch */
    uint64_t started_ms;                       /* monotonic */
    char node_name[160];           /* "antenna@HOST", or cluster.node: the cluster's init
                          * sets it (before the workers run; read-only then) */
    event_bus_t events;            /* event handlers (event.h): set before server_start */
    struct module_inst_s *modules; /* the modules of module_list (module.h) */
    uint32_t nmodules;
    route_owner_kind_t route_owners[ROUTE_OWNER_KINDS]; /* router.h: by sub_ref_t.kind;
                           * set before server_start, read-only after */
    struct router_consumer_s *consumers; /* router.h: every consumer, under trie_lock */
    _Atomic uint8_t origins_wanted;      /* router_want_origins: client messages carry a
                                     * msg_origin_t (else NULL: no allocation, no
                                     * shared counter per message) */
    /* router_receive_hook (router.h): set before server_start */
    msg_t *(*receive_hook)(worker_t *w, msg_t *m, const sess_t *from, void *user);
    void *receive_user;
    /* router_guard (router.h): set before server_start, read-only after */
    struct router_guard_s *guards; /* nguards of them */
    uint32_t nguards, nguards_sub; /* nguards_sub: with a subscribe function */
    uint64_t guard_first[4];       /* bit per first byte of a guard's prefix */
    /* sess_deliver asks it for a session marked adopt_dedup (sess.h; the
     * cluster's adopter, cl_adopt.c): 1 drops m as a copy the session has
     * already.  Home worker; set before server_start; NULL: none */
    int (*dedup_hook)(worker_t *w, sess_t *s, const msg_t *m, void *user);
    void *dedup_user;
    /* router_publish gives each message published here a publish id
     * (msg.h): the cluster sets it before server_start */
    uint8_t msg_ids;
    /* the store's queue records carry those ids ('Q' version 2): the
     * cluster's link thread, while every member reads them (cl_link.c) */
    _Atomic uint8_t msg_ids_store;
    /* proto_gate_register (proto.h): set before server_start; NULL: none */
    int (*connect_gate)(worker_t *w, proto_gate_t *g, void *user);
    void *connect_gate_user;
    /* connections and sessions without malloc headers (slab.h): any thread */
    slab_t conn_slab;                    /* conn_t (conn.c) */
    slab_t sess_slab[SESS_SLAB_CLASSES]; /* sess_t with its client id, by size (sess.c) */
    slab_t sub_slab[SUB_SLAB_CLASSES];   /* subscription arrays, filter copies (sess.c) */
    struct reload_s *reload;             /* reload.h: live reload and drain, or NULL */
    const conf_t *_Atomic live;          /* reload.h: the keys a reload changes live
                                     * (limits...), read through server_live(); NULL:
                                     * srv->conf */
};

/* The slabs of server_t (server_init does it; a test that builds a
 * server_t by hand calls it), and their release (server_free). */
void server_slabs_init(server_t *srv);
void server_slabs_free(server_t *srv);

/* The configuration for the keys a reload changes live (reload.h names
 * them): an immutable snapshot, published by the reloading thread; read it
 * at the point of use, never keep it past the loop turn. */
static inline const conf_t *server_live(const server_t *srv)
{
    const conf_t *c = atomic_load_explicit(&((server_t *)srv)->live, memory_order_acquire);
    return c ? c : &srv->conf;
}

/* Open listeners, create workers (not started).  Returns 0 or -1 (logged). */
int server_init(server_t *srv, const conf_t *conf);
int server_start(server_t *srv);
/* Ask every worker to stop, join them. */
void server_stop(server_t *srv);
void server_free(server_t *srv);
/* Main thread (SIGHUP): rebuild each TLS/WSS listener's context from its
 * files and swap it in; existing connections keep their old context.  A
 * listener whose files cannot be loaded keeps its context (logged, naming
 * the file).  Returns the number of listeners that failed. */
int server_tls_reload(server_t *srv);
/* Worker, at accept: a new server-side SSL on fd from listener i's current
 * context (NULL on failure). */
struct ssl_st *server_tls_new(server_t *srv, uint32_t listener, int fd);

/* The door: while any reason is set, every worker refuses new connections
 * at accept (closed at once, counted, a rate-limited log line); the clients
 * already connected are not touched.  Any thread. */
enum {
    SRV_DOOR_DRAIN = 1u << 0,   /* the node drains (antenna ctl drain) */
    SRV_DOOR_CLUSTER = 1u << 1, /* the cluster lease is lost (docs/cluster.md) */
};
void server_door_close(server_t *srv, uint32_t why);
void server_door_open(server_t *srv, uint32_t why);
/* Main or API thread (reload.h): open listener slot i from
 * srv->conf.listeners[i] (its socket; no worker watches it yet). */
int server_listener_open(server_t *srv, uint32_t i);

/* Worker side (worker.c). */
int worker_init(worker_t *w, server_t *srv, uint32_t id);
void *worker_main(void *arg);
/* One loop turn by hand (tests): 1 running, 0 stopped (WM_STOP), -1 error. */
int worker_turn(worker_t *w, int timeout_ms);
void worker_free(worker_t *w);
/* Register the handler of inbox item kind `kind` (1..WM_KINDS-1, once),
 * before any item of that kind is posted. */
void worker_inbox_register(server_t *srv, uint8_t kind, const worker_inbox_kind_t *k);
/* On the worker: start (on) or stop watching listener slot i (reload.h). */
void worker_listener_watch(worker_t *w, uint32_t i, int on);
/* Register the worker's own kinds (WM_STOP). */
void worker_register_inbox(server_t *srv);
/* Queue an item for another worker; sent at the end of this loop turn. */
void worker_post(worker_t *w, uint32_t to, const inbox_item_t *it);
sess_t *worker_find_sid(worker_t *w, uint64_t sid);
/* 1 while another worker's inbox is over its bound: readers should pause. */
int worker_congested(worker_t *w);
/* Refresh this worker's session gauges (worker_stats_t) now. */
void worker_gauges_now(worker_t *w);
/* The worker a client id's session lives on: its keyed hash, unless the
 * session moved (migrate.h's table, looked at only while not empty).  Any
 * thread. */
uint32_t worker_home(const server_t *srv, const uint8_t *client_id, size_t len);

/* Output buffers (conn.c).  A connection's output starts in the worker's
 * turn arena (oarena.h): written at the end of the turn, or copied out to
 * a buffer of its own by worker_buf_keep when the socket did not take it
 * all; above BUF_ARENA_MAX bytes it moves to its own buffer at once
 * (malloc, BUF_SMALL and doubling).  worker_buf_room makes room for n more
 * bytes (compacting, growing in place, or moving); worker_buf_put gives a
 * buffer back (an arena chunk: nothing to do). */
#define BUF_SMALL 256
#define BUF_ARENA_MAX (64u * 1024u)
void *worker_buf_get(worker_t *w, size_t size, size_t *cap);
void worker_buf_room(worker_t *w, uint8_t **buf, uint32_t *len, uint32_t *off, uint32_t *cap,
                     size_t n);
void worker_buf_put(worker_t *w, void *buf, size_t cap);
/* At the end of the turn: output still pending in the arena moves to a
 * buffer of its own (the arena is reset after the flush). */
void worker_buf_keep(worker_t *w, uint8_t **buf, uint32_t *len, uint32_t *off, uint32_t *cap);

/* Session tables (sess.c). */
void sess_table_add(sess_table_t *t, sess_t *s);
void sess_table_del(sess_table_t *t, sess_t *s);
sess_t *sess_table_find_id(const sess_table_t *t, const uint8_t *id, size_t len);
sess_t *sess_table_find_sid(const sess_table_t *t, uint64_t sid);
void sess_table_free(sess_table_t *t);

#endif
