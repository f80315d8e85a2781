/* msg.h -- an application message, shared by reference.
 *
 * One allocation holds the header, the topic and the payload.  A message
 * published to many subscribers is never copied: every queue, inflight slot,
 * retained entry and cross-worker hand-off holds a reference.  The count is
 * atomic because references cross worker threads; the contents are
 * immutable once the message is shared (msg_new() and the publish path
 * that sets its provenance, before router_publish()).
 *
 * Provenance: where a message came from.  Per message: the publish time
 * (wall clock), the origin node (0 = this broker) and the hop count (0 =
 * published here); a cluster that forwards a message sets both.  Per
 * publisher: a msg_origin_t, immutable and reference-counted, shared by
 * every message of one connection (made at its first PUBLISH or its will,
 * released when the connection is freed and its last message goes), so
 * provenance costs no allocation per message, only a reference.  Who sets
 * what:
 *   - a client's PUBLISH and its will: the connection's origin (client id,
 *     username, protocol version, listener);
 *   - the management API: msg_origin_api (protocol api, no client);
 *   - $SYS: msg_origin_sys (protocol sys);
 *   - messages restored from the store (retained, queued for a durable
 *     session): NULL (nothing of the origin is stored); their publish time
 *     is the time they were loaded.
 * A reader treats NULL as "unknown".
 *
 * The publish id (id_epoch, id_seq; docs/cluster.md "A dead node's
 * sessions"): in a cluster (server_t.msg_ids) router_publish gives every
 * message published on this node (hops 0) a number of its publishing
 * worker, id_seq 1, 2, ... under that worker's epoch, a random 64-bit
 * value drawn at start and again each time the 32-bit number wraps (after
 * 4 billion publishes: msg_id_next).  The pair names one publish across
 * the cluster and its restarts: two epochs meet only with probability
 * about k^2 / 2^65 for k epochs ever drawn (k = 10^6: 3e-8 over a cluster's
 * whole life), and the numbers under one epoch never repeat.  The id goes
 * with every copy of the message (node links, kept copies, store records,
 * hand-overs), so the adopter of a dead node's sessions tells a copy that
 * came two ways from two publishes of the same bytes.  id_seq 0: no id
 * (a single node, a message restored from an older record or received from
 * an older node): such copies are compared by content.  The 4 bytes of
 * id_seq sat in msg_t's padding; id_epoch costs 8 bytes a message.
 */
#ifndef ANTENNA_MSG_H
#define ANTENNA_MSG_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* msg_origin_t.proto */
enum {
    MSG_PROTO_UNKNOWN = 0,
    MSG_PROTO_MQTT31,  /* MQTT 3.1 client */
    MSG_PROTO_MQTT311, /* MQTT 3.1.1 client */
    MSG_PROTO_MQTT5,   /* MQTT 5.0 client */
    MSG_PROTO_API,     /* the management API */
    MSG_PROTO_SYS,     /* the broker's own $SYS topics */
    MSG_PROTO_NODE     /* another node of a cluster */
};

/* Who published: one per connection, shared by its messages.  Strings are
 * NUL-terminated copies in the same allocation (NULL when absent). */
typedef struct msg_origin_s {
    _Atomic uint32_t refs; /* 0: a static origin (msg_origin_api/sys), never freed */
    uint8_t proto;         /* MSG_PROTO_* */
    const char *client_id;
    const char *username;
    const char *listener; /* the listener's name */
    char data[];
} msg_origin_t;

extern const msg_origin_t msg_origin_api, msg_origin_sys;

/* A new origin with one reference (copies the strings). */
msg_origin_t *msg_origin_new(uint8_t proto, const char *client_id, size_t client_id_len,
                             const char *username, const char *listener);
const msg_origin_t *msg_origin_ref(const msg_origin_t *o);
/* Drops a reference (NULL and static origins are ignored), NULLs *op. */
void msg_origin_unref(const msg_origin_t **op);
/* "mqtt3.1", "mqtt3.1.1", "mqtt5", "api", "sys", "node", "unknown". */
const char *msg_proto_name(uint8_t proto);

typedef struct msg_s {
    _Atomic uint32_t refs;
    uint32_t payload_len;
    uint32_t props_len; /* MQTT 5 properties passed through to subscribers */
    uint16_t topic_len;
    uint8_t qos;                /* QoS it was published with */
    uint8_t retain;             /* retain flag it was published with */
    uint64_t expire_at;         /* monotonic ms (Message Expiry Interval); 0 = never */
    uint64_t store_seq;         /* its key in durable session queues (persist.h), 0 =
                         * not stored; set before the message is shared */
    uint64_t published_at;      /* wall clock, ms since the epoch (a coarse clock) */
    const msg_origin_t *origin; /* who published it (a reference), or NULL */
    uint16_t origin_node;       /* the node it was published on, 0 = this one */
    uint8_t hops;               /* nodes it crossed to get here, 0 = published here */
    uint8_t flags;              /* MSG_F_* */
    uint32_t id_seq;            /* the publish id's number, 0 = no id (above) */
    uint64_t id_epoch;          /* the publish id's epoch (its worker's, random) */
    uint8_t data[];             /* topic bytes, property bytes, payload bytes */
} msg_t;

enum {
    MSG_F_TRACED = 1 /* sampled for tracing: its properties carry a W3C
                      * traceparent the tracing module wrote (src/modules/tracing) */
    ,
    MSG_F_RULES = 2 /* published by a rule's republish action: rules ignore it, so
                     * a rule never loops on its own output (src/rules) */
    ,
    MSG_F_COMMAND = 4 /* a downlink command (src/commands): its acknowledgement is
                       * a message_acked event the commands module asked for */
};

_Static_assert(sizeof(msg_t) == 64, "msg_t grew: every message pays for it");

/* The properties kept are those a subscriber receives unchanged (payload
 * format, content type, response topic, correlation data, user properties,
 * in their order); Topic Alias and Subscription Identifiers are per
 * connection and the Message Expiry Interval is rewritten at each delivery,
 * so those are not stored. */
#define msg_topic(m) ((m)->data)
#define msg_props(m) ((m)->data + (m)->topic_len)
#define msg_payload(m) ((m)->data + (m)->topic_len + (m)->props_len)
#define msg_expired(m, now) ((m)->expire_at && (now) >= (m)->expire_at)

/* Returns a message with one reference. */
msg_t *msg_new(const uint8_t *topic, uint16_t topic_len, const uint8_t *payload,
               uint32_t payload_len, uint8_t qos, uint8_t retain);

static inline msg_t *msg_ref(msg_t *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

/* The same with MQTT 5 properties (a block without its length) and an
 * expiry deadline. */
msg_t *msg_new_v5(const uint8_t *topic, uint16_t topic_len, const uint8_t *props,
                  uint32_t props_len, const uint8_t *payload, uint32_t payload_len, uint8_t qos,
                  uint8_t retain, uint64_t expire_at);

/* Give m (not shared yet) its publisher's origin: a reference is taken. */
static inline void msg_set_origin(msg_t *m, const msg_origin_t *o)
{
    m->origin = o ? msg_origin_ref(o) : NULL;
}

/* The same publish: both have an id and they are equal.  (Copies without
 * one are compared by content where it matters: cl_adopt_merge.c.) */
static inline int msg_same_id(const msg_t *x, const msg_t *y)
{
    return x->id_seq != 0 && x->id_seq == y->id_seq && x->id_epoch == y->id_epoch;
}

/* The next publish id of a publisher with *epoch and *seq (one worker's):
 * the number counts up; at its wrap, and at the first call (*epoch 0), a
 * new random epoch. */
void msg_id_next(uint64_t *epoch, uint32_t *seq);

/* Drops the caller's reference and NULLs its pointer. */
void msg_unref(msg_t **mp);

#endif
