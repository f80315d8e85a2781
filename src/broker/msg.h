/* msg.h -- an application message, shared by reference.
 *
 * One allocation holds the header, the topic and the payload.  A message
 * published to many subscribers is never copied: every queue, inflight slot,
 * retained entry and cross-worker hand-off holds a reference.  The count is
 * atomic because references cross worker threads; the contents are
 * immutable after msg_new().
 */
#ifndef ANTENNA_MSG_H
#define ANTENNA_MSG_H

#include <stdatomic.h>
#include <stdint.h>

typedef struct msg_s {
    _Atomic uint32_t refs;
    uint32_t payload_len;
    uint32_t props_len; /* MQTT 5 properties passed through to subscribers */
    uint16_t topic_len;
    uint8_t qos;        /* QoS it was published with */
    uint8_t retain;     /* retain flag it was published with */
    uint64_t expire_at; /* monotonic ms (Message Expiry Interval); 0 = never */
    uint64_t store_seq; /* its key in durable session queues (persist.h), 0 =
                         * not stored; set before the message is shared */
    uint8_t data[];     /* topic bytes, property bytes, payload bytes */
} msg_t;

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
                  uint32_t props_len, const uint8_t *payload, uint32_t payload_len,
                  uint8_t qos, uint8_t retain, uint64_t expire_at);

/* Drops the caller's reference and NULLs its pointer. */
void msg_unref(msg_t **mp);

#endif
