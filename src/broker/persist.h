/* persist.h -- what the broker keeps in its store (src/store/), and when.
 *
 * Kept: retained messages; persistent sessions (expiry != 0: client id,
 * expiry, subscriptions); the QoS 1/2 messages queued or in flight to them;
 * the QoS 2 packet ids they sent us and have not released.  $SYS topics are
 * not kept.  Each worker collects the writes of one loop turn in one store
 * batch (w->batch) and submits it at the end of the turn, before it posts
 * anything to other workers; the store's committer thread commits the
 * batches of every worker together (group commit), in submission order.
 *
 * Nothing is acknowledged before it is stored.  A QoS 1/2 PUBLISH whose
 * handling wrote to the batch (a queue entry for a durable subscriber, a
 * retained message, the QoS 2 id of a durable publisher) gets its PUBACK or
 * PUBREC only when the commit of that batch comes back (WM_COMMITTED, one
 * per submitted batch, in order); the PUBCOMP that releases a stored QoS 2
 * id likewise.  Acknowledgements of one connection leave in the order their
 * packets came.  A message stored for a durable subscriber is also routed
 * only after its commit, so no subscriber can see a message that a crash
 * could lose: after a crash the publisher resends it (no ack yet) and
 * nobody had it.  When a commit fails (disk full, I/O error) its held
 * acknowledgements become reason code 0x97 (MQTT 5; an MQTT 3.1.1 client is
 * disconnected instead, and resends) and its held messages are dropped: the
 * broker never acknowledges what it could not store, and QoS 0 keeps
 * flowing.
 *
 * Who writes which record.  The publisher's worker writes the queue entry
 * (q/ client id, seq) of every durable subscriber that matches, where seq =
 * m->store_seq is drawn once per message from srv->next_qseq; it reads the
 * subscriber's client id and `durable` flag through the trie reference,
 * under the trie lock.  The subscriber's home worker later updates the
 * entry (QoS 2 sent with its packet id, PUBREC received) and deletes it
 * (acknowledged, dropped, expired); since it sees the message only after
 * the publisher's batch was submitted, its writes always commit after the
 * entry's creation.  Session records are written by the home worker at
 * CONNECT, SUBSCRIBE, UNSUBSCRIBE and disconnect, and the whole session
 * (s/, q/, i/ of the client id) is removed when it ends.
 *
 * Start-up reads everything back onto the home workers: queue entries in
 * key order (seq), keeping their records; what is expired or belongs to no
 * session is removed.  A graceful shutdown rewrites every session from
 * memory, so its state is exact; after a crash a QoS 1 message that was in
 * flight is resent without DUP (its send is not recorded), and a QoS 2 one
 * with its recorded packet id and DUP.
 */
#ifndef ANTENNA_PERSIST_H
#define ANTENNA_PERSIST_H

#include "msg.h"
#include "server.h"

struct endpoint_s;

/* Open the store under conf.data_dir and load what it holds.  Returns 0
 * (also when persistence is off) or -1 with the reason logged (naming the
 * path). */
int persist_open(server_t *srv);
/* The Redis store's key prefix of cluster node `node` (persistence.redis.
 * prefix with "{node}" replaced; "" stands for "default"). */
void persist_redis_prefix(const conf_t *cf, const char *node, char *out, size_t len);
/* Worker 0, every PERSIST_SWEEP_MS: retained messages whose Message Expiry
 * Interval passed leave memory and the store (expired queued messages
 * leave when their session reaches them, and at start-up). */
#define PERSIST_SWEEP_MS 5000u
void persist_on_sweep_timer(tw_timer_t *t);
/* Record a retained change (m with an empty payload clears the topic). */
void persist_retained(worker_t *w, const msg_t *m);
/* End of a loop turn: submit what this worker collected (before anything is
 * posted to other workers). */
void persist_flush(worker_t *w);
/* WM_COMMITTED: the oldest submitted batch of w came back with err; send
 * its held acknowledgements and route its held messages. */
void persist_on_committed(worker_t *w, int err);
/* Register WM_COMMITTED (server start-up). */
void persist_register_inbox(server_t *srv);
/* Which commit releases what was held: persist_held.h (the release rule,
 * held_batch_is_committed). */
/* The worker's end, after its sessions were freed (their wills may have
 * written): commit the last batch synchronously (no WM_COMMITTED: nobody
 * reads the inbox any more, and the store may outlive the worker only
 * until persist_close) and free what is still held. */
void persist_worker_final(worker_t *w);
/* An endpoint with held acknowledgements is being freed: they are not
 * sent. */
void persist_forget_endpoint(worker_t *w, struct endpoint_s *ep);

/* 1 when the store is on (every function below is a no-op otherwise). */
static inline int persist_on(const worker_t *w)
{
    return w->srv->store != NULL;
}
/* Operations in this turn's batch so far (to see whether a step wrote). */
size_t persist_pending_ops(const worker_t *w);
/* A module's record in this turn's batch (a sink's buffered record): room
 * for a vl-byte value under key k, to be filled before the turn ends; an
 * acknowledgement of the turn's publish then waits for its commit. */
void *persist_put_reserve(worker_t *w, const void *k, size_t kl, size_t vl);
/* Acknowledgements after a sink (a rule action's "ack": "sink"): the
 * number of a record written on w whose confirmation the acknowledgements
 * held from now on wait for (after their commit), and the confirmation of
 * record n (w's thread, from the sink's WM_SINKS item; a record that failed
 * for good or was dropped confirms too: nothing waits forever). */
uint64_t persist_sink_ack_emitted(worker_t *w);
void persist_sink_ack_done(worker_t *w, uint64_t n);
/* Hold an acknowledgement (EP_ACK_PUBACK, _PUBREC, _PUBCOMP with an MQTT 5
 * reason) to endpoint ep, whose session is sid, until this turn's batch is
 * committed; then ep_ack() with EP_ACK_HELD, and a reason of its own when
 * the commit failed.  The endpoint counts what it has held (a later
 * acknowledgement of it must wait behind them: MQTT keeps them in order). */
void persist_hold_ack(worker_t *w, struct endpoint_s *ep, uint64_t sid, uint8_t type, uint16_t pid,
                      uint8_t reason);
/* The same, behind everything held, released with the commit of batch
 * `batch` (a number persist_held_batch gave; 0: no commit of its own to
 * wait for): the second stage of an acknowledgement the cluster held. */
void persist_hold_ack_batch(worker_t *w, struct endpoint_s *ep, uint64_t sid, uint8_t type,
                            uint16_t pid, uint8_t reason, uint64_t batch);
/* The number of the store batch being filled (what a hold now waits for);
 * whether something is held, or (commit) batch's commit is still to come. */
uint64_t persist_held_batch(worker_t *w);
int persist_must_wait(const worker_t *w, int commit, uint64_t batch);

/* Routing of one message: targets computed at publish time. */
struct route_target_s {
    uint64_t sid;
    uint16_t owner;
    uint8_t qos;
    uint8_t flags; /* DLV_* */
    uint8_t kind;  /* ROUTE_OWNER_* (trie.h) */
};
typedef struct route_target_s route_target_t;
/* Hold the sending of session sid's QoS 2 packet pid (PUBLISH or PUBREL)
 * until the record of its new state is committed (sess_send_held). */
void persist_hold_send(worker_t *w, uint64_t sid, uint16_t pid);
/* 1 while messages wait for a commit on w (later ones queue behind). */
int persist_holding_routes(const worker_t *w);
/* Hold the routing of m (a new reference is taken) to targets until this
 * turn's batch is committed; ticket: the node row's, taken for its copies
 * to other nodes (router_hand_held), or 0. */
void persist_hold_route(worker_t *w, msg_t *m, const route_target_t *t, size_t n, uint64_t ticket);
/* A new key for a stored message. */
uint64_t persist_next_seq(server_t *srv);
/* n consecutive keys, the first returned: every key persist_next_seq gives
 * later is above them (a merge that must sort before later messages). */
uint64_t persist_reserve_seq(server_t *srv, uint64_t n);

/* Queue entries of session client id `cid`: m NULL means "only the PUBREL
 * is left" (state WAIT_PUBCOMP). */
void persist_queue_put(worker_t *w, const char *cid, uint16_t cid_len, uint64_t seq, const msg_t *m,
                       uint8_t qos, uint8_t retain, uint8_t state, uint16_t pid);
void persist_queue_del(worker_t *w, const char *cid, uint16_t cid_len, uint64_t seq);
/* The session record (expiry, subscriptions, the deadline when offline):
 * written when s is durable, the whole session removed when it no longer
 * is.  Updates s->durable and s->stored. */
void persist_session_update(worker_t *w, sess_t *s);
/* The session ends: remove s/, q/, i/ of its client id. */
void persist_session_drop(worker_t *w, sess_t *s);
/* Incoming QoS 2 ids of a durable session. */
void persist_incoming(worker_t *w, const sess_t *s, uint16_t pid, int put);
/* Graceful shutdown: every durable session is rewritten from memory
 * (persist_save_sessions, per worker, after its loop stopped; it also waits
 * for the worker's earlier batches).  Start-up: persist_load_sessions. */
int persist_save_sessions(worker_t *w);
int persist_load_sessions(server_t *srv);
/* After the workers were freed (each flushed its batch): commit what is
 * pending and close. */
void persist_close(server_t *srv);

#endif
