/* router.h -- from a published message to the sessions that want it.
 *
 * router_publish() is the one entry point for every message that enters
 * the broker (client PUBLISH, wills, $SYS): hooks (authorization, rules)
 * will sit at its top.  It stores or clears the retained copy, matches the
 * topic in the trie under the read lock, picks one member for each shared
 * subscription group, drops a publisher's own message where it subscribed
 * with No Local, merges overlapping subscriptions of one session (highest
 * QoS wins) and hands each subscriber to its owner.
 *
 * Route owners.  A subscriber (sub_ref_t, trie.h) carries a tagged owner:
 * a kind (ROUTE_OWNER_*) and an index within it.  Every hand-off, at
 * publish time, after a store commit (held routes) or on shared-group
 * failover, goes through one function, which calls the kind's row of
 * srv->route_owners (one indirect call per delivery):
 *   - ROUTE_OWNER_LOCAL, an MQTT session: delivered at once when its home
 *     is this worker, else a WM_DELIVER item for its worker's inbox (sent
 *     in one batch at the end of the loop turn);
 *   - ROUTE_OWNER_CONSUMER, an internal consumer (below): its callback,
 *     on this worker;
 *   - ROUTE_OWNER_NODE, a remote node: registered by a cluster module with
 *     router_owner_register().  Its row receives (sid, node index, m, qos,
 *     flags) on the publisher's worker, after the merge, so a node that
 *     subscribed with overlapping filters (one sid per node: ROUTE_SID_NODE
 *     | index) is called ONCE per message at the highest granted QoS.  It
 *     forwards m to that node once, never twice (the node then routes it
 *     to its own subscribers and must not send it back: hops + 1 and the
 *     origin node travel with it), keeps the QoS it was given (a QoS 1/2
 *     message is not lost on the link: the link acknowledges or resends),
 *     takes its own reference (msg_ref) if it keeps m past the call, and
 *     never blocks (a queue per link, written at the end of the turn).
 *     Until a row is registered, matches of that kind are dropped.
 *
 * A message from another node (hops > 0) sets worker_t.publish_backlogged
 * like a client's: the cluster then reads that node's link more slowly.
 *
 * Internal consumers.  A module subscribes to topic filters without being
 * an MQTT session: router_consumer_new(), router_consumer_subscribe().
 * Its on_message runs on the worker that routed the publish (so a module
 * keeps per-worker state indexed by w->id), once per message whatever the
 * overlap of its filters, at min(published QoS, highest granted QoS), with
 * DLV_RETAIN when the message was published with retain (Retain As
 * Published).  The message's provenance is in m (msg.h).  The callback
 * must not block, may take a reference (msg_ref) to keep m, and must not
 * call router_publish() (it is not reentrant on one worker: it reuses the
 * worker's match vector); to publish, hand the message to a later point
 * (an inbox item, a timer).  With persistence, a message held until its
 * store commit reaches its consumers after the commit, in order with the
 * sessions.  A consumer gets no retained messages when it subscribes (it
 * sees the flow, not the state; retain_match() reads the state), is never
 * durable (nothing of it is stored), and cannot join a shared group.
 * Deliveries are counted per consumer and per worker.
 */
#ifndef ANTENNA_ROUTER_H
#define ANTENNA_ROUTER_H

#include "msg.h"
#include "server.h"

/* Delivery flags (inbox_item_t.flags, sess_deliver). */
#define DLV_RETAIN 1 /* send with the retain flag set */
#define DLV_SHARED 2 /* came through a shared subscription (failover) */
#define DLV_DURABLE                                                                                \
    4 /* the publisher stored it in the session's queue
                       * (key q/ client id, m->store_seq): persist.h */
/* A WM_DELIVER handed on by the worker a subscriber left (migrate.h's
 * fence); never reaches sess_deliver. */
#define DLV_HANDED 8
/* To the node row only, for a message held for a store commit: take its
 * ticket now (worker_t.fwd_ticket, the nodes noted for the publisher's
 * acknowledgement), send nothing; router_hand_held sends it with that
 * ticket after the commit. */
#define DLV_TICKET 16

/* Hand m to each target now (the other workers' ones through their
 * inboxes): the second half of a publish that waited for a commit. */
typedef struct route_target_s route_target_t;
void router_hand_targets(worker_t *w, msg_t *m, const route_target_t *t, size_t n);
/* The same for a message held for a store commit (persist.c): its
 * deliveries were counted for its publisher when it was held (migrate.h),
 * so the publish being routed now, if any, does not count them; its copies
 * for other nodes carry the ticket taken then (DLV_TICKET; 0: none). */
void router_hand_held(worker_t *w, msg_t *m, const route_target_t *t, size_t n, uint64_t ticket);

/* router_publish's answer when limits.queue_full is refuse and a session
 * that should take a QoS 1/2 message has a full queue: nothing was done. */
#define ROUTER_REFUSED ((size_t)-1)

/* router_publish's answer when m asks to be retained on a new topic and
 * limits.max_retained messages are retained already: nothing was done (the
 * broker's own $SYS topics, published with from NULL, are never refused). */
#define ROUTER_NO_RETAIN ((size_t)-2)

/* "$SYS" or "$SYS/...": the broker's own topics (mqtt.allow_sys_publish). */
static inline int router_is_sys_topic(const uint8_t *topic, size_t len)
{
    return len >= 4 && topic[0] == '$' && topic[1] == 'S' && topic[2] == 'Y' && topic[3] == 'S' &&
           (len == 4 || topic[4] == '/');
}

/* Takes no ownership of m.  `from` is the publishing session, or NULL.
 * Returns the number of sessions the message went to, or ROUTER_REFUSED /
 * ROUTER_NO_RETAIN. */
size_t router_publish(worker_t *w, msg_t *m, const sess_t *from);

/* Deliver, to session s (owned by w), every retained message matching
 * filter, at min(message QoS, qos), with the retain flag set. */
void router_send_retained(worker_t *w, sess_t *s, const uint8_t *filter, uint16_t len, uint8_t qos);

/* Inbox item from another worker: deliver to a local session by id; -1
 * when w has no such session and did not hand it on (ended, or moving in:
 * see migrate.h). */
int router_deliver_local(worker_t *w, uint64_t sid, msg_t *m, uint8_t qos, uint8_t flags);
/* Register WM_DELIVER and the LOCAL and CONSUMER owner kinds (server
 * start-up). */
void router_register_inbox(server_t *srv);

/* The cluster's route barrier was passed up to `ticket` (sub_barrier):
 * the SUBACKs held for it on w go out. */
void router_barrier_passed(worker_t *w, uint64_t ticket);

/* Register the row of owner kind `kind` (ROUTE_OWNER_*, < ROUTE_OWNER_KINDS)
 * before server_start (the table is read without a lock).  The router
 * registers LOCAL and CONSUMER itself (router_register_inbox). */
void router_owner_register(server_t *srv, uint8_t kind, const route_owner_kind_t *k);

/* The receive hook: one module may see every message a client publishes,
 * on the publisher's worker, after its ACL check and before it is routed
 * (proto.c), and return the message to route: m itself, or another one in
 * its place (then it releases m and returns a new reference; the caller
 * routes what it gets).  It runs for every client message: it must be
 * cheap for the messages it does not change (the tracing module samples
 * there).  Register before server_start; NULL costs one branch. */
typedef msg_t *(*router_receive_fn)(worker_t *w, msg_t *m, const sess_t *from, void *user);
/* Returns 0, or -1 when another module holds the hook already. */
int router_receive_hook(server_t *srv, router_receive_fn fn, void *user);
/* Topic guards: a module judges what clients do under its topic prefix:
 * their PUBLISHes to topics under it, and (optional) every SUBSCRIBE filter
 * (the guard itself tells whether a filter could reach its topics: "+"
 * levels, "#").  The device shadow keeps $shadow/{id}/... to the device
 * `id`; the commands module keeps $cmd/{id}/... to it (commands.acl).
 * Each returns 1 allowed, 0 refused, handled as an ACL denial (PUBLISH:
 * MQTT 5 PUBACK/PUBREC 0x87, 3.1.1 acknowledged and dropped; SUBSCRIBE:
 * 0x87 / 0x80), after the broker's own checks and before the ACL.  `who`
 * is the client: its client id and authenticated user name (an MQTT
 * connection's, or a gateway's device: HTTP, CoAP).  Cost: with no guard,
 * nothing; with guards, a PUBLISH whose topic's first byte starts no
 * guard's prefix pays one bit test (router_guard_first), the others a
 * prefix comparison per guard and the guard's call; every SUBSCRIBE filter
 * one call per guard with a subscribe function.  Register before
 * server_start (main thread): -1 for an empty prefix, $SYS, one with a
 * wildcard, or one that covers or is covered by another guard's. */
typedef struct {
    const char *client_id; /* NUL-terminated, id_len bytes */
    size_t id_len;
    const char *user; /* the authenticated user name, or NULL */
} router_who_t;
typedef struct {
    int (*publish)(const router_who_t *who, const uint8_t *topic, size_t len, void *ud);
    int (*subscribe)(const router_who_t *who, const uint8_t *filter, size_t len, void *ud);
    void *ud;
} router_guard_t;
int router_guard(server_t *srv, const char *prefix, const router_guard_t *g);
int router_guard_publish(const server_t *srv, const router_who_t *who, const uint8_t *topic,
                         size_t len);
int router_guard_subscribe(const server_t *srv, const router_who_t *who, const uint8_t *filter,
                           size_t len);
void router_guard_free(server_t *srv); /* server_free */
/* proto.c's fast path: may a topic starting with byte c be guarded? */
static inline int router_guard_first(const server_t *srv, uint8_t c)
{
    return (srv->guard_first[c >> 6] >> (c & 63)) & 1u;
}
/* Remote nodes (a cluster module): node idx subscribes to / leaves filter
 * (validated here), as the subscriber
 * {ROUTE_SID_NODE | idx, owner idx, kind ROUTE_OWNER_NODE, granted QoS 2,
 * Retain As Published}.  Any thread; takes the trie's write lock.
 * subscribe: 1 added, 0 already there, -1 invalid; unsubscribe: 1 removed,
 * 0 not there. */
int router_node_subscribe(server_t *srv, uint16_t idx, const uint8_t *filter, size_t len);
/* (A "$share/g/f" filter makes the node ONE member of group g on f, with
 * the sid ROUTE_SID_NODE | router_share_tag(filter) << 16 | idx: a message
 * for which the group picks it reaches the node row with that sid and
 * DLV_SHARED, and the node gives it to one of its own members of g.) */
static inline uint32_t router_share_tag(const uint8_t *filter, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a: the same on every node */
    for (size_t i = 0; i < len; i++)
        h = (h ^ filter[i]) * 16777619u;
    return h ? h : 1;
}
/* A message from a node picked for group "$share/g/f" here: hand it to one
 * MQTT session of the group on this node (not to another node).  Returns
 * 1, or 0 when the group has no local member (any more). */
int router_deliver_shared(worker_t *w, msg_t *m, const uint8_t *filter, size_t len);
/* A message this node forwarded to a node picked for group "$share/g/f"
 * that left before acknowledging it: the group picks again, among all its
 * members (this node's sessions or other nodes; the one that left is no
 * member any more), as at the publish.  1, or 0 when the group is gone. */
int router_reshare_named(worker_t *w, msg_t *m, const uint8_t *filter, size_t len);
int router_node_unsubscribe(server_t *srv, uint16_t idx, const uint8_t *filter, size_t len);
/* Exact remote routes: a filter without '+' or '#', not "$share/...", is
 * not put in the trie but kept as its 64-bit hash: in the exact table
 * (rtab.h: hash, node, count) or, for a node with many of them, in that
 * node's counting Bloom filter (rbloom.h; docs/cluster.md "Routes"); a
 * publish looks its topic's hash up in both (when there is any: a single
 * node pays nothing).  Returns 1 and the hash in *h for an exact filter, 0
 * for a wildcard or shared one (use router_node_subscribe), -1 for an
 * invalid one.  Any thread. */
int router_route_exact(const server_t *srv, const uint8_t *filter, size_t len, uint64_t *h);
enum {
    ROUTER_EXACT_ADD, /* one more filter of hash h: returns 1 */
    ROUTER_EXACT_DEL  /* one fewer: returns 1, or 0 when it was (certainly) absent */
};
/* Change node idx's exact routes (its Bloom filter when it has one, else
 * the exact table); takes the trie's write lock. */
uint32_t router_node_exact(server_t *srv, uint16_t idx, uint64_t h, int op);
/* Replace all of node idx's exact routes at once (one write lock: no
 * publish sees it without them): by the Bloom filter b (taken over), or,
 * when b is NULL, by the n hashes in the exact table (n = 0: none left). */
struct rbloom_s;
void router_node_exact_replace(server_t *srv, uint16_t idx, struct rbloom_s *b,
                               const uint64_t *hashes, size_t n);
/* Move node idx's exact routes from the exact table into a new Bloom
 * filter sized for `routes` (one write lock). */
void router_node_exact_to_bloom(server_t *srv, uint16_t idx, uint64_t routes);
/* Node idx ships its exact routes as a plain bit filter (rbits.h): b
 * (taken over) replaces whatever the router kept of them (its pairs of the
 * exact table when had_pairs -- a scan of the whole table, so not for a
 * node known to have none --, its Bloom filter, its previous bits; NULL:
 * none left), under one write lock. */
struct rbits_s;
void router_node_bits_set(server_t *srv, uint16_t idx, struct rbits_s *b, int had_pairs);
/* Positions that flipped in node idx's bit filter: each entry is a
 * position (RBITS_POS_MASK) with RBITS_POS_SET when it is set now, clear
 * when not; n is the owner's route count.  -1 (nothing more applied) when
 * the node has no bit filter of nblocks blocks or a position is out of
 * range: the caller asks for the whole filter again. */
#define RBITS_POS_SET 0x80000000u
#define RBITS_POS_MASK 0x7fffffffu
int router_node_bits_apply(server_t *srv, uint16_t idx, uint32_t nblocks, uint64_t n,
                           const uint32_t *ent, size_t count);
/* Does node idx have a Bloom filter (1) or a bit filter (2)?  Its bytes
 * and the routes a Bloom filter was sized for (0 and 0 if none).  Takes the
 * read lock. */
int router_node_exact_info(server_t *srv, uint16_t idx, size_t *bytes, uint64_t *sized);
/* Exact remote routes kept (pairs of the exact table, keys of the Bloom
 * filters: metrics count them as subscriptions).  Under trie_lock. */
size_t router_node_exact_count(const server_t *srv);
/* trie_set_local_hook (trie.h) under the trie's write lock: the filters
 * this node has MQTT subscribers for, as 0<->1 transitions. */
void router_set_local_hook(server_t *srv, trie_local_fn fn, void *ud);
/* trie_walk_exact_local under the read lock, after *at = *counter read
 * under the same lock: a counter that the hook bumps (under the write
 * lock) numbers the changes the walk shows, those up to *at. */
void router_walk_exact_local(server_t *srv, trie_local_fn fn, void *ud,
                             const _Atomic uint64_t *counter, uint64_t *at);

typedef struct router_consumer_s router_consumer_t;
typedef struct {
    /* A message for c (see above for when, where and what it may do). */
    void (*on_message)(worker_t *w, router_consumer_t *c, msg_t *m, uint8_t qos, uint8_t flags,
                       void *user);
    /* The server frees c (server_free, the workers stopped): release user
     * (c is still readable: its name and count).  May be NULL. */
    void (*free)(router_consumer_t *c, void *user);
} consumer_ops_t;

/* From now on, messages of MQTT clients carry their origin (msg_t.origin:
 * client id, username, protocol, listener).  Until something asks (a
 * consumer, which asks by being created, or a module's init), origin is
 * NULL: the per-message reference on a connection's shared origin costs an
 * atomic increment on the publisher's worker and a decrement wherever the
 * message is freed, a cache line crossing cores at millions of messages a
 * second.  Any thread; never undone. */
void router_want_origins(server_t *srv);

/* A consumer named `name` (logs, stats), with no filter yet.  Any thread,
 * at start-up or at runtime.  It lives as long as the server (freed by
 * router_consumers_free); a module that is done with it unsubscribes. */
router_consumer_t *router_consumer_new(server_t *srv, const char *name, const consumer_ops_t *ops,
                                       void *user);
/* Subscribe c to filter (NUL-terminated, a valid topic filter, not
 * "$share/..."), granted QoS qos (0..2); a filter already subscribed gets
 * the new QoS.  Any thread, also from a consumer's callback (the router
 * holds no lock then): takes the trie's write lock briefly.  Returns 0, or
 * -1 for an invalid filter or QoS. */
int router_consumer_subscribe(router_consumer_t *c, const char *filter, uint8_t qos);
/* Returns 1 when removed, 0 when c was not subscribed to filter.  A
 * message already matched may still arrive after it returns. */
int router_consumer_unsubscribe(router_consumer_t *c, const char *filter);
const char *router_consumer_name(const router_consumer_t *c);
/* Messages delivered to c, summed over the workers (any thread). */
uint64_t router_consumer_delivered(const router_consumer_t *c);
/* server_free, after the workers stopped: every consumer and its user. */
void router_consumers_free(server_t *srv);

/* Failover: hand m, which session s got through a shared subscription and
 * did not acknowledge, to another member of a group of s whose filter
 * matches.  Returns 1 when another member took it. */
int router_reshare(worker_t *w, sess_t *s, msg_t *m, uint8_t qos);

#endif
