/* msg.c -- reference-counted application messages and their origins
 * (see msg.h). */
#include "msg.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

const msg_origin_t msg_origin_api = {.proto = MSG_PROTO_API};
const msg_origin_t msg_origin_sys = {.proto = MSG_PROTO_SYS};


msg_origin_t *msg_origin_new(uint8_t proto, const char *client_id, size_t cid_len,
                             const char *username, const char *listener)
{
    size_t ul = username ? strlen(username) + 1 : 0, ll = listener ? strlen(listener) + 1 : 0;
    size_t cl = client_id ? cid_len + 1 : 0;
    msg_origin_t *o = an_malloc(sizeof(*o) + cl + ul + ll);
    atomic_init(&o->refs, 1);
    o->proto = proto;
    char *p = o->data;
    o->client_id = o->username = o->listener = NULL;
    if (client_id) {
        memcpy(p, client_id, cid_len);
        p[cid_len] = '\0';
        o->client_id = p;
        p += cl;
    }
    if (username) {
        memcpy(p, username, ul);
        o->username = p;
        p += ul;
    }
    if (listener) {
        memcpy(p, listener, ll);
        o->listener = p;
    }
    return o;
}

const msg_origin_t *msg_origin_ref(const msg_origin_t *o)
{
    if (o->refs) /* static ones stay at 0 and are never written */
        atomic_fetch_add_explicit(&((msg_origin_t *)o)->refs, 1, memory_order_relaxed);
    return o;
}

void msg_origin_unref(const msg_origin_t **op)
{
    msg_origin_t *o = (msg_origin_t *)*op;
    *op = NULL;
    if (o == NULL || atomic_load_explicit(&o->refs, memory_order_relaxed) == 0)
        return;
    if (atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) == 1)
        free(o);
}

const char *msg_proto_name(uint8_t proto)
{
    static const char *const names[] = {"unknown", "mqtt3.1", "mqtt3.1.1", "mqtt5",
                                        "api",     "sys",     "node"};
    return proto < sizeof(names) / sizeof(names[0]) ? names[proto] : "unknown";
}

msg_t *msg_new_v5(const uint8_t *topic, uint16_t topic_len, const uint8_t *props,
                  uint32_t props_len, const uint8_t *payload, uint32_t payload_len, uint8_t qos,
                  uint8_t retain, uint64_t expire_at)
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
    m->published_at = 0; /* stamped by router_publish (the worker's turn clock) */
    m->origin = NULL;
    m->origin_node = 0;
    m->hops = 0;
    m->flags = 0;
    m->id_seq = 0;
    m->id_epoch = 0;
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
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1) {
        msg_origin_unref(&m->origin);
        free(m);
    }
}

void msg_id_next(uint64_t *epoch, uint32_t *seq)
{
    if (*epoch == 0 || ++*seq == 0) {
        uint64_t k[2];
        do {
            an_random_key(k); /* getrandom */
        } while (k[0] == 0);
        *epoch = k[0];
        *seq = 1;
    }
}
