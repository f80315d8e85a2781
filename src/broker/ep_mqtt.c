/* ep_mqtt.c -- the MQTT connection as a session endpoint (ep_mqtt.h).
 *
 * Each operation finds its conn_t with container_of and calls conn.c: a
 * delivery is conn_send_publish (the encoding into the connection's output,
 * topic aliases, message expiry), an acknowledgement a 4-byte packet or its
 * MQTT 5 form with a reason code.  What is MQTT's own is decided here: a
 * refused acknowledgement to an MQTT 3.1.1 client (which has no negative
 * one) closes the connection so that the client resends, and the close
 * reasons become DISCONNECT reason codes.  Home worker only.
 */
#include "ep_mqtt.h"

#include "auth_chain.h"
#include "conn.h"
#include "mqtt_codec.h"
#include "mqtt_props.h"
#include "util.h"

_Static_assert((int)EP_ACK_PUBACK == (int)MQTT_PUBACK && (int)EP_ACK_PUBREC == (int)MQTT_PUBREC &&
                   (int)EP_ACK_PUBREL == (int)MQTT_PUBREL &&
                   (int)EP_ACK_PUBCOMP == (int)MQTT_PUBCOMP,
               "EP_ACK_* are the MQTT packet types");

static conn_t *conn_of(endpoint_t *ep)
{
    return container_of(ep, conn_t, ep);
}

static const conn_t *const_conn_of(const endpoint_t *ep)
{
    return container_of(ep, const conn_t, ep);
}

static int mqtt_deliver(endpoint_t *ep, const msg_t *m, uint8_t qos, uint8_t retain, uint8_t dup,
                        uint16_t pid, const uint32_t *subids, uint32_t nsubids)
{
    return conn_send_publish(conn_of(ep), m, qos, retain, dup, pid, subids, nsubids);
}

static void mqtt_ack(endpoint_t *ep, uint8_t type, uint16_t pid, uint8_t reason, unsigned flags)
{
    conn_t *c = conn_of(ep);
    if (flags & EP_ACK_HELD)
        c->x->held_acks--; /* counted by proto.c when it held it */
    if (c->state != CONN_ACTIVE)
        return;
    if (reason == 0) {
        conn_send_ack(c, type, pid);
    } else if (c->proto == MQTT_PROTO_V5) {
        mqtt_encode_ack_v5(conn_reserve(c, mqtt_ack_v5_size(reason, 0), 1), type, pid, reason, NULL,
                           0);
        conn_count_out(c, type);
    } else if (reason >= 0x80) {
        /* no negative acknowledgement in 3.1.1: close, the client resends
         * (the one refusal that comes here: a store commit failed) */
        conn_close(c, "a message could not be stored: not acknowledged", 1);
    } else {
        conn_send_ack(c, type, pid);
    }
}

static void mqtt_close(endpoint_t *ep, ep_close_t why, const char *text)
{
    conn_t *c = conn_of(ep);
    switch (why) {
    case EP_CLOSE_TAKEN_OVER:
        /* a will with a delay waits in the session, which goes on: the
         * new connection resumes it before the delay passed (no will) or
         * starts clean and ends it (the will goes then) [MQTT5 3.1.4,
         * "Session taken over"]; one without a delay, or of a session that
         * ends with its connection, goes now (conn_close_reason) */
        conn_will_to_session(c);
        /* fall through */
    case EP_CLOSE_SESSION_ENDED:
        /* the session let go: closing must not detach it */
        if (c->sess) {
            c->sess = NULL;
            STAT_ADD(c->w->stats.clients_connected, (uint64_t)-1);
        }
        conn_close_reason(c, text, 1,
                          why == EP_CLOSE_TAKEN_OVER ? MQTT_RC_SESSION_TAKEN_OVER
                                                     : MQTT_RC_ADMINISTRATIVE_ACTION);
        break;
    case EP_CLOSE_KICKED:
    case EP_CLOSE_DISCARDED:
        conn_close_reason(c, text, why == EP_CLOSE_KICKED, MQTT_RC_ADMINISTRATIVE_ACTION);
        break;
    }
}

static size_t mqtt_backlog(const endpoint_t *ep)
{
    return conn_out_pending(const_conn_of(ep));
}

static void mqtt_describe(const endpoint_t *ep, ep_info_t *out, char *peer, size_t size)
{
    const conn_t *c = const_conn_of(ep);
    const conn_ext_t *x = c->x;
    *out = (ep_info_t){
        .client = {.username = x && x->auth ? x->auth->user
                               : x          ? x->cert_user
                                            : NULL,
                   .peer = peer ? conn_peer(c, peer, size) : NULL,
                   .listener = c->w->srv->conf.listeners[c->listener].name,
                   .proto = c->proto},
        .auth = x ? x->auth : NULL,
        .keepalive = c->keepalive,
    };
}

const endpoint_ops_t ep_mqtt_ops = {
    .name = "mqtt",
    .deliver = mqtt_deliver,
    .ack = mqtt_ack,
    .close = mqtt_close,
    .backlog = mqtt_backlog,
    .describe = mqtt_describe,
};
