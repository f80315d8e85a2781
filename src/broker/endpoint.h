/* endpoint.h -- where a session's messages go: the session endpoint interface.
 *
 * A session (sess.h) is the state the broker keeps for a client id:
 * subscriptions, the inflight window, the queue, packet ids.  While its
 * client is there, the session is attached to an endpoint and writes
 * through it: deliveries (PUBLISH), acknowledgements (PUBREL to a
 * subscriber, and the PUBACK/PUBREC/PUBCOMP held for a store commit to a
 * publisher), a close.  sess.c, sess_acl.c and persist.c know nothing else
 * about the client's side: not MQTT, not TCP.  The MQTT connection is the
 * first endpoint (ep_mqtt.c: an endpoint_t embedded in conn_t); an HTTP
 * device's long poll or event stream (src/gateways/http/httpin_down.c), a
 * CoAP device observing its command resource
 * (src/gateways/coap/coapgw_down.c), a device attached to another cluster node or a test
 * recorder (tests/unit/test_endpoint.c) implement the same few operations.
 *
 *   sess_t.ep ───> endpoint_t {ops, max_packet, receive_max, flags}
 *                    embedded in its owner (conn_t.ep), found with container_of
 *
 * What the session reads without a call: the limits the peer set when it
 * attached (max_packet, receive_max) and what kind of peer it is (flags).
 * What it calls: `ops`, one indirect call per delivery and per
 * acknowledgement; nothing is allocated on the way (an endpoint encodes a
 * delivery into its own output, or takes a reference to the message).
 *
 * The contract:
 * - Thread.  Every operation is called on the session's home worker, and
 *   an endpoint lives there while attached (the MQTT connection moves to
 *   its home worker before CONNACK).  An endpoint whose peer is elsewhere
 *   (a CoAP socket on another worker, a cluster node) is a proxy on the
 *   home worker that forwards what it is given (an inbox item, a peer
 *   link) and takes a message reference (msg_ref) for the trip.
 * - Ownership.  The owner allocates and frees the endpoint; the session
 *   only borrows it, from sess_attach(s, ep) until sess_detach(w, s) (the
 *   endpoint goes: the owner calls it before freeing, and keeps its own
 *   pointer to the session, as conn_t.sess) or sess_release(s) (the
 *   session lets go: a takeover).  Messages passed to deliver are borrowed
 *   for the call: encode them, or msg_ref them.
 * - Delivery.  deliver() returns 0 when it took the message, -1 when it
 *   refused a QoS 0 one because its output is over its limit (the session
 *   counts the drop).  QoS 1/2 deliveries and any delivery with the retain
 *   flag are never refused: the session keeps QoS 1/2 in flight until
 *   acknowledged (sess_on_puback, sess_on_pubrec, sess_on_pubcomp, called
 *   by the endpoint when its peer answers) and sends them again with dup
 *   on the next attach, or every retry_interval with EP_F_RETRY.  An
 *   endpoint that cannot transmit now may let that resend carry it.
 * - Window.  The session keeps at most min(max_inflight, receive_max) QoS
 *   1/2 deliveries unacknowledged and queues the rest; backlog() is the
 *   output the endpoint holds and its peer has not taken (bytes), by which
 *   the session sheds QoS 0 when the broker's memory is short.  max_packet
 *   is the size of the largest delivery the peer takes, counted as an MQTT
 *   5 PUBLISH of the message (0: no limit); a larger one is skipped.
 * - Close.  close(ep, why, text) asks the endpoint to end (text: a log
 *   line's reason, and an MQTT 5 Reason String).  For EP_CLOSE_TAKEN_OVER
 *   and EP_CLOSE_SESSION_ENDED the session has already let go: the
 *   endpoint forgets it and must not call sess_detach.  For the others the
 *   endpoint ends as if its peer left: it calls sess_detach itself.
 *   Takeover: a new endpoint claims the session (a CONNECT with its client
 *   id): sess_release(s) returns the old one, which is closed with
 *   EP_CLOSE_TAKEN_OVER, then the new one is attached and gets the inflight
 *   window again with dup.
 * - Describe.  describe() fills the client as events, logs, the ACL and the
 *   management API see it (ep_info_t): user and auth state, peer address
 *   text (only when a buffer is given: the ACL's per-message check passes
 *   none), listener, protocol.
 *
 * A CoAP device observing /cmd (coapgw_down.c) maps deliver to a
 * notification of its observation (QoS 0: NON, QoS 1/2: CON, acknowledged
 * at the device's ACK), close to a final 5.03,
 * and sets EP_F_RETRY off (CoAP retransmits CONs itself).  A proxy for a client attached to another node
 * would forward each call to that node over the cluster link, and the
 * node's answers (acknowledgements, the link going down: sess_detach) come
 * back through the home worker's inbox.
 */
#ifndef ANTENNA_ENDPOINT_H
#define ANTENNA_ENDPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "msg.h"

struct auth_client;
typedef struct endpoint_s endpoint_t;

enum {
    EP_F_RETRY = 1, /* resend unacknowledged deliveries every retry_interval
                     * while attached (MQTT 3.1.1; MQTT 5 forbids it) */
    EP_F_SUBIDS = 2 /* give each delivery the identifiers of the session's
                     * matching subscriptions (MQTT 5) */
};

/* event_client_t.proto of a client that does not speak MQTT (MQTT's are
 * its protocol levels, 3 to 5). */
enum {
    EP_PROTO_HTTP = 0x80, /* the device HTTP downlink (src/gateways/http) */
    EP_PROTO_COAP = 0x81  /* a CoAP device observing /cmd (src/gateways/coap) */
};

/* Acknowledgements, numbered as the MQTT packet types they are. */
enum {
    EP_ACK_PUBACK = 4, /* a QoS 1 message from the peer was taken */
    EP_ACK_PUBREC = 5, /* a QoS 2 message from the peer was taken */
    EP_ACK_PUBREL = 6, /* the peer's PUBREC for our QoS 2 message is recorded */
    EP_ACK_PUBCOMP = 7 /* the peer's PUBREL is done */
};
/* ack() flags: the acknowledgement was held for a store commit
 * (persist_hold_ack): the endpoint counts one fewer held. */
enum { EP_ACK_HELD = 1 };

/* Why a session or the broker ends an endpoint. */
typedef enum {
    EP_CLOSE_TAKEN_OVER = 0, /* another endpoint took the session (MQTT: 0x8E,
                              * the will is published) */
    EP_CLOSE_SESSION_ENDED,  /* the session was destroyed under it */
    EP_CLOSE_KICKED,         /* an administrator ended it (management API;
                              * MQTT: 0x98, the will is published) */
    EP_CLOSE_DISCARDED       /* an administrator dropped its session too
                              * (MQTT: 0x98, no will) */
} ep_close_t;

/* The client behind an endpoint.  client.client_id is left NULL (the
 * session has it); client.peer points into the caller's buffer, or is NULL
 * when none was given; client.listener is NULL for an endpoint that did not
 * come through a listener. */
typedef struct {
    event_client_t client;    /* username, peer, listener, protocol */
    struct auth_client *auth; /* user, rules, ACL decision cache
                               * (auth_chain.h); NULL: no auth state */
    uint16_t keepalive;       /* seconds, 0: none */
} ep_info_t;

typedef struct {
    const char *name; /* "mqtt": logs */
    /* A message for the peer at qos (already the minimum of message and
     * subscription), retain as the session decided (Retain As Published, a
     * retained message on SUBSCRIBE), dup on a resend, pid for QoS 1/2,
     * the matching subscription identifiers (only with EP_F_SUBIDS).
     * Returns 0, or -1: a QoS 0 message refused (output over its limit). */
    int (*deliver)(endpoint_t *ep, const msg_t *m, uint8_t qos, uint8_t retain, uint8_t dup,
                   uint16_t pid, const uint32_t *subids, uint32_t nsubids);
    /* An acknowledgement (EP_ACK_*) of packet id pid with an MQTT 5 reason
     * code (0: success; >= 0x80: refused -- an endpoint whose protocol has
     * no negative acknowledgement ends the link, so that its peer sends
     * again).  flags: EP_ACK_HELD. */
    void (*ack)(endpoint_t *ep, uint8_t type, uint16_t pid, uint8_t reason, unsigned flags);
    /* End the endpoint (the contract above says who detaches). */
    void (*close)(endpoint_t *ep, ep_close_t why, const char *text);
    /* Bytes the endpoint holds that its peer has not taken yet. */
    size_t (*backlog)(const endpoint_t *ep);
    /* The client; the peer address text goes into peer[size] when peer is
     * not NULL. */
    void (*describe)(const endpoint_t *ep, ep_info_t *out, char *peer, size_t size);
} endpoint_ops_t;

/* Embedded in its owner; the owner sets ops and keeps the fields current
 * (they are read at each delivery). */
struct endpoint_s {
    const endpoint_ops_t *ops;
    uint32_t max_packet;  /* bytes, 0: no limit (see "Window") */
    uint16_t receive_max; /* QoS 1/2 deliveries unacknowledged at most */
    uint8_t flags;        /* EP_F_* */
};

static inline int ep_deliver(endpoint_t *ep, const msg_t *m, uint8_t qos, uint8_t retain,
                             uint8_t dup, uint16_t pid, const uint32_t *subids, uint32_t nsubids)
{
    return ep->ops->deliver(ep, m, qos, retain, dup, pid, subids, nsubids);
}

static inline void ep_ack(endpoint_t *ep, uint8_t type, uint16_t pid, uint8_t reason,
                          unsigned flags)
{
    ep->ops->ack(ep, type, pid, reason, flags);
}

static inline void ep_close(endpoint_t *ep, ep_close_t why, const char *text)
{
    ep->ops->close(ep, why, text);
}

static inline size_t ep_backlog(const endpoint_t *ep)
{
    return ep->ops->backlog(ep);
}

static inline void ep_describe(const endpoint_t *ep, ep_info_t *out, char *peer, size_t size)
{
    ep->ops->describe(ep, out, peer, size);
}

#endif
