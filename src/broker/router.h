/* router.h -- from a published message to the sessions that want it.
 *
 * router_publish() is the one entry point for every message that enters
 * the broker (client PUBLISH, wills, $SYS): hooks (authorization, rules)
 * will sit at its top.  It stores or clears the retained copy, matches the
 * topic in the trie under the read lock, picks one member for each shared
 * subscription group, drops a publisher's own message where it subscribed
 * with No Local, merges overlapping subscriptions of one session (highest
 * QoS wins) and hands each subscriber to its owner: delivered at once when
 * the owner is this worker, queued for another worker's inbox otherwise
 * (sent in one batch at the end of the loop turn).  An owner is a worker
 * index today; a remote cluster node later.
 */
#ifndef ANTENNA_ROUTER_H
#define ANTENNA_ROUTER_H

#include "msg.h"
#include "server.h"

/* Delivery flags (inbox_item_t.flags, sess_deliver). */
#define DLV_RETAIN 1 /* send with the retain flag set */
#define DLV_SHARED 2 /* came through a shared subscription (failover) */
#define DLV_DURABLE 4 /* the publisher stored it in the session's queue
                       * (key q/ client id, m->store_seq): persist.h */

/* Hand m to each target now (the other workers' ones through their
 * inboxes): the second half of a publish that waited for a commit. */
typedef struct route_target_s route_target_t;
void router_hand_targets(worker_t *w, msg_t *m, const route_target_t *t, size_t n);

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
    return len >= 4 && topic[0] == '$' && topic[1] == 'S' && topic[2] == 'Y' &&
           topic[3] == 'S' && (len == 4 || topic[4] == '/');
}

/* Takes no ownership of m.  `from` is the publishing session, or NULL.
 * Returns the number of sessions the message went to, or ROUTER_REFUSED /
 * ROUTER_NO_RETAIN. */
size_t router_publish(worker_t *w, msg_t *m, const sess_t *from);

/* Deliver, to session s (owned by w), every retained message matching
 * filter, at min(message QoS, qos), with the retain flag set. */
void router_send_retained(worker_t *w, sess_t *s, const uint8_t *filter,
                          uint16_t len, uint8_t qos);

/* Inbox item from another worker: deliver to a local session by id. */
void router_deliver_local(worker_t *w, uint64_t sid, msg_t *m, uint8_t qos, uint8_t flags);
/* Register WM_DELIVER (server start-up). */
void router_register_inbox(server_t *srv);

/* Failover: hand m, which session s got through a shared subscription and
 * did not acknowledge, to another member of a group of s whose filter
 * matches.  Returns 1 when another member took it. */
int router_reshare(worker_t *w, sess_t *s, msg_t *m, uint8_t qos);

#endif
