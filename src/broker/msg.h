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
    uint16_t topic_len;
    uint8_t qos;    /* QoS it was published with */
    uint8_t retain; /* retain flag it was published with */
    uint8_t data[]; /* topic bytes, then payload bytes */
} msg_t;

#define msg_topic(m) ((m)->data)
#define msg_payload(m) ((m)->data + (m)->topic_len)

/* Returns a message with one reference. */
msg_t *msg_new(const uint8_t *topic, uint16_t topic_len, const uint8_t *payload,
               uint32_t payload_len, uint8_t qos, uint8_t retain);

static inline msg_t *msg_ref(msg_t *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

/* Drops the caller's reference and NULLs its pointer. */
void msg_unref(msg_t **mp);

#endif
