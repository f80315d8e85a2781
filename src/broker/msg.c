/* msg.c -- reference-counted application messages (see msg.h). */
#include "msg.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

msg_t *msg_new_v5(const uint8_t *topic, uint16_t topic_len, const uint8_t *props,
                  uint32_t props_len, const uint8_t *payload, uint32_t payload_len,
                  uint8_t qos, uint8_t retain, uint64_t expire_at)
{
    msg_t *m = an_malloc(sizeof(*m) + topic_len + (size_t)props_len + payload_len);
    atomic_init(&m->refs, 1);
    m->payload_len = payload_len;
    m->props_len = props_len;
    m->topic_len = topic_len;
    m->qos = qos;
    m->retain = retain;
    m->expire_at = expire_at;
    m->store_seq = 0;
    memcpy(m->data, topic, topic_len);
    if (props_len)
        memcpy(m->data + topic_len, props, props_len);
    if (payload_len)
        memcpy(m->data + topic_len + props_len, payload, payload_len);
    return m;
}

msg_t *msg_new(const uint8_t *topic, uint16_t topic_len, const uint8_t *payload,
               uint32_t payload_len, uint8_t qos, uint8_t retain)
{
    return msg_new_v5(topic, topic_len, NULL, 0, payload, payload_len, qos, retain, 0);
}

void msg_unref(msg_t **mp)
{
    msg_t *m = *mp;
    *mp = NULL;
    if (m == NULL)
        return;
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
        free(m);
}
