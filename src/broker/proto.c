/* proto.c -- MQTT 3.1 / 3.1.1 server state machine (see proto.h).
 *
 * Every rule that makes a packet malformed is checked by the codec; this
 * file enforces the rules about order and state: the first packet must be
 * CONNECT [MQTT-3.1.0-1], a second CONNECT is a protocol error
 * [MQTT-3.1.0-2], and the QoS 1/2 exchanges follow the session's state.
 * Each refusal closes the one connection with a log line naming the client
 * and the rule.
 */
#include "proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "log.h"
#include "msg.h"
#include "router.h"
#include "sess.h"

static int protocol_error(conn_t *c, const char *why)
{
    char msg[256];
    snprintf(msg, sizeof(msg), "protocol error: %s", why);
    conn_close(c, msg, 1);
    return -1;
}

static int malformed(conn_t *c, int rc, const char *why)
{
    if (rc == MQTT_ERR_PROTOCOL)
        return protocol_error(c, why ? why : "?");
    char msg[256];
    snprintf(msg, sizeof(msg), "malformed packet: %s", why ? why : "?");
    conn_close(c, msg, 1);
    return -1;
}

static int refuse(conn_t *c, uint8_t rc, const char *why)
{
    uint8_t *p = conn_reserve(c, 4, 1);
    mqtt_encode_connack(p, 0, rc);
    char msg[160];
    snprintf(msg, sizeof(msg), "CONNECT refused (return code %u): %s", rc, why);
    conn_close(c, msg, 0);
    return -1;
}

/* A client id for a client that sent none, chosen so that its home is this
 * worker: no hand-off needed. */
static uint16_t assign_client_id(worker_t *w, char *buf, size_t size)
{
    for (;;) {
        int n = snprintf(buf, size, "auto-%08x-%llx", w->id,
                         (unsigned long long)++w->next_auto_id);
        if (worker_home(w->srv, (const uint8_t *)buf, (size_t)n) == w->id)
            return (uint16_t)n;
    }
}

static int hand_off(conn_t *c, uint32_t home, const mqtt_raw_t *pkt,
                    const uint8_t *rest, size_t rest_len)
{
    worker_t *w = c->w;
    handoff_t *h = an_malloc(sizeof(*h) + pkt->len + rest_len);
    h->c = c;
    h->hdr = pkt->hdr;
    h->connect_len = pkt->len;
    h->rest_len = (uint32_t)rest_len;
    if (pkt->len)
        memcpy(h->data, pkt->body, pkt->len);
    if (rest_len)
        memcpy(h->data + pkt->len, rest, rest_len);
    mqtt_parser_reset(&c->ps);
    tw_del(&w->tw, &c->timer);
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
    c->state = CONN_MOVING;
    inbox_item_t it = {.kind = WM_ADOPT, .ptr = h};
    worker_post(w, home, &it);
    return 1;
}

/* CONNECT on the home worker: session, takeover, CONNACK, redelivery. */
static int connect_home(conn_t *c, const mqtt_connect_t *ck, const uint8_t *id, uint16_t id_len)
{
    worker_t *w = c->w;
    sess_t *s = sess_table_find_id(&w->by_id, id, id_len);
    if (s && s->conn) {
        /* takeover: the older connection goes, its will is published */
        conn_t *old = s->conn;
        char name[160];
        log_info("%s: session taken over by a new connection", conn_name(old, name, sizeof(name)));
        old->sess = NULL;
        s->conn = NULL;
        STAT_ADD(w->stats.clients_connected, (uint64_t)-1);
        conn_close(old, "session taken over", 1);
    }
    if (s && s->clean && s->conn == NULL) {
        /* a clean session lives as long as its connection: gone with it */
        sess_destroy(w, s);
        s = NULL;
    }
    uint8_t present = 0;
    if (ck->clean_session) {
        if (s)
            sess_destroy(w, s);
        s = sess_new(w, id, id_len, 1);
    } else if (s) {
        s->clean = 0;
        present = 1;
    } else {
        s = sess_new(w, id, id_len, 0);
    }
    if (ck->will_flag)
        c->will = msg_new(ck->will_topic.p, ck->will_topic.len, ck->will_payload.p,
                          ck->will_payload.len, ck->will_qos, ck->will_retain);
    c->proto = ck->proto;
    c->keepalive = ck->keepalive;
    c->state = CONN_ACTIVE;
    uint8_t *p = conn_reserve(c, 4, 1);
    mqtt_encode_connack(p, present, MQTT_CONNACK_ACCEPTED);
    STAT_ADD(w->stats.clients_connected, 1);
    STAT_ADD(w->stats.connections_total, 1);
    tw_del(&w->tw, &c->timer);
    if (c->keepalive)
        tw_add(&w->tw, &c->timer, c->last_rx + (uint64_t)c->keepalive * 1500u);
    sess_attach(s, c);
    char name[160];
    log_info("%s: connected (MQTT %s, clean session %u, keepalive %u, session present %u)",
             conn_name(c, name, sizeof(name)), c->proto == MQTT_PROTO_V31 ? "3.1" : "3.1.1",
             ck->clean_session, c->keepalive, present);
    return 0;
}

static int on_connect(conn_t *c, const mqtt_raw_t *pkt, const uint8_t *rest, size_t rest_len,
                      int adopted)
{
    worker_t *w = c->w;
    mqtt_connect_t ck;
    const char *why = NULL;
    int rc = mqtt_decode_connect(pkt, &ck, &why);
    if (rc == MQTT_ERR_PROTOCOL_VERSION)
        return refuse(c, MQTT_CONNACK_BAD_VERSION, why ? why : "protocol version");
    if (rc == MQTT_ERR_CLIENT_ID)
        return refuse(c, MQTT_CONNACK_ID_REJECTED, why ? why : "client identifier");
    if (rc < 0)
        return malformed(c, rc, why);
    if (!w->srv->conf.allow_anonymous && !ck.has_username)
        return refuse(c, MQTT_CONNACK_NOT_AUTHORIZED, "anonymous clients are not allowed");
    if (ck.keepalive > w->srv->conf.max_keepalive) {
        if (w->srv->conf.keepalive_over_max == CONF_KEEPALIVE_REFUSE)
            return refuse(c, MQTT_CONNACK_ID_REJECTED, "keepalive above max_keepalive");
        ck.keepalive = w->srv->conf.max_keepalive;
    }

    char auto_id[48];
    const uint8_t *id = ck.client_id.p;
    uint16_t id_len = ck.client_id.len;
    if (id_len == 0) { /* clean session is guaranteed by the codec */
        id_len = assign_client_id(w, auto_id, sizeof(auto_id));
        id = (const uint8_t *)auto_id;
    }
    uint32_t home = worker_home(w->srv, id, id_len);
    if (home != w->id && !adopted)
        return hand_off(c, home, pkt, rest, rest_len);
    return connect_home(c, &ck, id, id_len);
}

/* limits.max_topic_length and limits.max_topic_levels. */
static int topic_within_limits(const conf_t *cf, const uint8_t *p, size_t len)
{
    if (len > cf->max_topic_length)
        return 0;
    size_t levels = 1;
    for (size_t i = 0; i < len; i++)
        if (p[i] == '/' && ++levels > cf->max_topic_levels)
            return 0;
    return 1;
}

static int on_publish(conn_t *c, const mqtt_raw_t *pkt)
{
    worker_t *w = c->w;
    mqtt_publish_t pb;
    const char *why = NULL;
    int rc = mqtt_decode_publish(pkt, c->proto, &pb, &why);
    if (rc < 0)
        return malformed(c, rc, why);
    STAT_ADD(w->stats.msgs_received, 1);
    conn_count_publish(c, pkt->len);
    if (!topic_within_limits(&w->srv->conf, pb.topic.p, pb.topic.len))
        return protocol_error(c, "topic exceeds max_topic_length or max_topic_levels");
    if (pb.qos == 2 && !sess_qos2_in_begin(c->sess, pb.packet_id)) {
        /* a resent PUBLISH we already routed: acknowledge, do not deliver */
        conn_send_ack(c, MQTT_PUBREC, pb.packet_id);
        return 0;
    }
    msg_t *m = msg_new(pb.topic.p, pb.topic.len, pb.payload, pb.payload_len, pb.qos, pb.retain);
    router_publish(w, m);
    msg_unref(&m);
    if (pb.qos == 1)
        conn_send_ack(c, MQTT_PUBACK, pb.packet_id);
    else if (pb.qos == 2)
        conn_send_ack(c, MQTT_PUBREC, pb.packet_id);
    return 0;
}

static int on_subscribe(conn_t *c, const mqtt_raw_t *pkt)
{
    worker_t *w = c->w;
    sess_t *s = c->sess;
    mqtt_sub_iter_t it;
    const char *why = NULL;
    int rc = mqtt_decode_subscribe(pkt, &it, &why);
    if (rc < 0)
        return malformed(c, rc, why);
    mqtt_sub_iter_t again = it;
    uint8_t *codes = an_malloc(it.count);
    mqtt_str_t f;
    uint8_t qos;
    uint32_t i = 0;
    const conf_t *cf = &w->srv->conf;
    while (mqtt_sub_next(&it, &f, &qos) && i < it.count) {
        if (!topic_within_limits(cf, f.p, f.len) ||
            (cf->max_subscriptions && s->nsubs >= cf->max_subscriptions &&
             !sess_has_sub(s, f.p, f.len))) {
            codes[i++] = MQTT_SUBACK_FAILURE;
            continue;
        }
        sess_subscribe(w, s, f.p, f.len, qos);
        codes[i++] = qos;
    }
    mqtt_encode_suback(conn_reserve(c, mqtt_suback_size(i), 1), it.packet_id, codes, i);
    /* [MQTT-3.8.4-3] retained messages for every filter, after the SUBACK */
    for (i = 0; mqtt_sub_next(&again, &f, &qos); i++)
        if (codes[i] != MQTT_SUBACK_FAILURE)
            router_send_retained(w, s, f.p, f.len, qos);
    free(codes);
    return 0;
}

static int on_unsubscribe(conn_t *c, const mqtt_raw_t *pkt)
{
    mqtt_sub_iter_t it;
    const char *why = NULL;
    int rc = mqtt_decode_unsubscribe(pkt, &it, &why);
    if (rc < 0)
        return malformed(c, rc, why);
    mqtt_str_t f;
    uint8_t qos;
    while (mqtt_sub_next(&it, &f, &qos))
        sess_unsubscribe(c->w, c->sess, f.p, f.len);
    conn_send_ack(c, MQTT_UNSUBACK, it.packet_id);
    return 0;
}

static int on_ack(conn_t *c, const mqtt_raw_t *pkt)
{
    uint16_t pid;
    const char *why = NULL;
    int rc = mqtt_decode_ack(pkt, &pid, &why);
    if (rc < 0)
        return malformed(c, rc, why);
    switch (mqtt_raw_type(pkt)) {
    case MQTT_PUBACK:
        sess_on_puback(c->sess, pid);
        break;
    case MQTT_PUBREC:
        sess_on_pubrec(c->sess, pid);
        break;
    case MQTT_PUBCOMP:
        sess_on_pubcomp(c->sess, pid);
        break;
    case MQTT_PUBREL:
        sess_qos2_in_end(c->sess, pid);
        conn_send_ack(c, MQTT_PUBCOMP, pid);
        break;
    }
    return 0;
}

int proto_handle(conn_t *c, const mqtt_raw_t *pkt, const uint8_t *rest, size_t rest_len)
{
    uint8_t type = mqtt_raw_type(pkt);
    const char *why = NULL;
    if (c->state == CONN_NEW) {
        if (type != MQTT_CONNECT)
            return protocol_error(c, "[MQTT-3.1.0-1] first packet is not CONNECT");
        return on_connect(c, pkt, rest, rest_len, 0);
    }
    int rc = mqtt_check_client_header(pkt->hdr, c->proto, &why);
    if (rc < 0)
        return malformed(c, rc, why);
    switch (type) {
    case MQTT_CONNECT:
        return protocol_error(c, "[MQTT-3.1.0-2] second CONNECT");
    case MQTT_PUBLISH:
        return on_publish(c, pkt);
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        return on_ack(c, pkt);
    case MQTT_SUBSCRIBE:
        return on_subscribe(c, pkt);
    case MQTT_UNSUBSCRIBE:
        return on_unsubscribe(c, pkt);
    case MQTT_PINGREQ:
        if ((rc = mqtt_decode_empty(pkt, &why)) < 0)
            return malformed(c, rc, why);
        mqtt_encode_pingresp(conn_reserve(c, 2, 1));
        return 0;
    case MQTT_DISCONNECT:
        if ((rc = mqtt_decode_empty(pkt, &why)) < 0)
            return malformed(c, rc, why);
        msg_unref(&c->will); /* [MQTT-3.14.4-3] no will after DISCONNECT */
        conn_close(c, "DISCONNECT", 0);
        return -1;
    default:
        return protocol_error(c, "unexpected packet type");
    }
}

void proto_adopt(worker_t *w, handoff_t *h)
{
    conn_t *c = h->c;
    c->w = w;
    c->state = CONN_NEW;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    c->want_out = 0;
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
        conn_close(c, "epoll_ctl failed on hand-off", 0);
        free(h);
        return;
    }
    mqtt_raw_t pkt = {.hdr = h->hdr, .len = h->connect_len,
                      .body = h->connect_len ? h->data : NULL};
    if (on_connect(c, &pkt, NULL, 0, 1) == 0 && h->rest_len)
        conn_input(c, h->data + h->connect_len, h->rest_len);
    free(h);
}
