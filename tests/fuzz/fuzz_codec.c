/* fuzz_codec.c -- libFuzzer target for the MQTT codec (src/mqtt/mqtt_codec.c
 * and src/mqtt/mqtt_props.c).
 *
 * Input: byte 0 picks the split pattern and byte 1 the maximum packet size;
 * the rest is a byte stream (from a client, or from a server: every decoder
 * gets every packet of its type).  The stream is framed once whole (the
 * reference) and once in the chosen splits; both must yield the same packets
 * and the same final error.  Each packet goes through the decoder for its
 * type: the 3.1 / 3.1.1 decoders (PUBLISH and the header check with protocol
 * 3 and 4), and the 5.0 ones (CONNECT with level 5 allowed, PUBLISH both
 * directions, SUBSCRIBE, UNSUBSCRIBE, acks, DISCONNECT both directions, AUTH,
 * CONNACK, SUBACK, UNSUBACK).  Decoded packets are re-encoded, and the new
 * bytes must decode to the same fields (for 5.0 CONNECT, PUBLISH, CONNACK and
 * SUBACK: to the very same bytes, properties passed through as their raw
 * block).  Every property block that validates is also walked with the
 * iterator and rebuilt with the writer, which must give back its bytes; and
 * each body is fed to the property validator directly.  Any disagreement
 * aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt_codec.h"

#include "fuzz_check.h"

static int str_same(mqtt_str_t a, mqtt_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* Frame exactly one packet from an encoder's output. */
static mqtt_raw_t frame_whole(const uint8_t *buf, size_t n)
{
    mqtt_parser_t ps = {0};
    mqtt_raw_t r;
    size_t used = 0;
    const char *why = NULL;
    CHECK(mqtt_parser_next(&ps, buf, n, &used, MQTT_MAX_REMAINING, &r, &why) == 1);
    CHECK(used == n);
    CHECK(ps.buf == NULL);
    mqtt_parser_reset(&ps);
    return r;
}

/* NUL-terminated copy (the CONNECT encoder takes C strings). */
static char *cstr(mqtt_str_t s)
{
    char *c = malloc((size_t)s.len + 1);
    CHECK(c != NULL);
    if (s.len)
        memcpy(c, s.p, s.len);
    c[s.len] = 0;
    return c;
}

static void recode_connect(const mqtt_connect_t *c)
{
    /* The encoder takes C strings: a password with a NUL can't go through. */
    if (c->has_password && memchr(c->password.p, 0, c->password.len))
        return;
    char *id = cstr(c->client_id);
    char *wt = c->will_flag ? cstr(c->will_topic) : NULL;
    char *user = c->has_username ? cstr(c->username) : NULL;
    char *pass = c->has_password ? cstr(c->password) : NULL;
    mqtt_connect_opts_t o = {
        .proto = c->proto,
        .clean_session = c->clean_session,
        .keepalive = c->keepalive,
        .client_id = id,
        .username = user,
        .password = pass,
        .will_topic = wt,
        .will_payload = c->will_payload.p,
        .will_payload_len = c->will_payload.len,
        .will_qos = c->will_qos,
        .will_retain = c->will_retain,
    };
    size_t size = mqtt_connect_size(&o);
    uint8_t *buf = malloc(size);
    CHECK(buf != NULL);
    size_t n = mqtt_encode_connect(buf, &o);
    CHECK(n == size);
    mqtt_raw_t r = frame_whole(buf, n);
    mqtt_connect_t d;
    const char *why = NULL;
    int rc = mqtt_decode_connect(&r, &d, &why);
    CHECK(rc == MQTT_OK || rc == MQTT_ERR_CLIENT_ID);
    CHECK(d.proto == c->proto && d.clean_session == c->clean_session);
    CHECK(d.will_flag == c->will_flag && d.will_qos == c->will_qos);
    CHECK(d.will_retain == c->will_retain && d.keepalive == c->keepalive);
    CHECK(d.has_username == c->has_username);
    CHECK(d.has_password == c->has_password);
    CHECK(str_same(d.client_id, c->client_id));
    CHECK(str_same(d.will_topic, c->will_topic));
    CHECK(str_same(d.will_payload, c->will_payload));
    CHECK(str_same(d.username, c->username));
    CHECK(str_same(d.password, c->password));
    free(buf);
    free(id);
    free(wt);
    free(user);
    free(pass);
}

static void recode_publish(const mqtt_raw_t *orig, const mqtt_publish_t *p)
{
    size_t size = mqtt_publish_size(p->topic.len, p->qos, p->payload_len);
    uint8_t *buf = malloc(size);
    CHECK(buf != NULL);
    size_t n = mqtt_encode_publish(buf, p->topic.p, p->topic.len, p->qos, p->retain, p->dup,
                                   p->packet_id, p->payload, p->payload_len);
    CHECK(n == size);
    mqtt_raw_t r = frame_whole(buf, n);
    /* Same header byte and body, byte for byte. */
    CHECK(r.hdr == orig->hdr && r.len == orig->len);
    CHECK(r.len == 0 || memcmp(r.body, orig->body, r.len) == 0);
    mqtt_publish_t d;
    const char *why = NULL;
    CHECK(mqtt_decode_publish(&r, MQTT_PROTO_V311, &d, &why) == MQTT_OK);
    CHECK(str_same(d.topic, p->topic));
    CHECK(d.qos == p->qos && d.retain == p->retain && d.dup == p->dup);
    CHECK(d.packet_id == p->packet_id && d.payload_len == p->payload_len);
    CHECK(d.payload_len == 0 || memcmp(d.payload, p->payload, d.payload_len) == 0);
    free(buf);
}

/* Walk the filters; re-encode each in a one-filter packet and decode it. */
static void walk_sub(mqtt_sub_iter_t it, int subscribe)
{
    mqtt_str_t f;
    uint8_t qos = 0xff;
    uint32_t count = 0;
    while (mqtt_sub_next(&it, &f, &qos)) {
        count++;
        CHECK(f.len > 0 && mqtt_topic_filter_valid(f.p, f.len));
        CHECK(subscribe ? qos <= 2 : qos == 0);
        size_t size = subscribe ? mqtt_subscribe_size(f.len) : mqtt_unsubscribe_size(f.len);
        uint8_t *buf = malloc(size);
        CHECK(buf != NULL);
        size_t n = subscribe ? mqtt_encode_subscribe(buf, it.packet_id, f.p, f.len, qos)
                             : mqtt_encode_unsubscribe(buf, it.packet_id, f.p, f.len);
        CHECK(n == size);
        mqtt_raw_t r = frame_whole(buf, n);
        mqtt_sub_iter_t d;
        const char *why = NULL;
        int rc =
            subscribe ? mqtt_decode_subscribe(&r, &d, &why) : mqtt_decode_unsubscribe(&r, &d, &why);
        CHECK(rc == MQTT_OK);
        CHECK(d.packet_id == it.packet_id && d.count == 1);
        mqtt_str_t f2;
        uint8_t qos2 = 0xff;
        CHECK(mqtt_sub_next(&d, &f2, &qos2) == 1);
        CHECK(str_same(f, f2) && qos2 == qos);
        CHECK(mqtt_sub_next(&d, &f2, &qos2) == 0);
        free(buf);
    }
    CHECK(count == it.count && count >= 1);
}

/* ---- MQTT 5.0 ------------------------------------------------------------ */

/* A block that validated: the iterator covers it exactly, the counts agree,
 * the writer rebuilds it byte for byte (from the iterated values, and with
 * mqtt_pw_copy), and it validates again the same way. */
static void check_props(const mqtt_props_t *pr, uint8_t where, uint8_t from)
{
    uint32_t pos = 0, wire = 0, users = 0, subs = 0;
    uint64_t seen = 0;
    mqtt_prop_t p;
    mqtt_pw_t w;
    uint8_t *buf = malloc(pr->raw_len ? pr->raw_len : 1);
    CHECK(buf != NULL);
    CHECK((pr->raw == NULL) == (pr->raw_len == 0));
    mqtt_pw_init(&w, buf, pr->raw_len);
    while (mqtt_props_next(pr, &pos, &p)) {
        CHECK(p.wire == pr->raw + wire);
        wire += p.wire_len;
        CHECK(pos == wire);
        CHECK(p.type == mqtt_prop_type(p.id) && p.type != MQTT_PT_NONE);
        seen |= MQTT_PROP_BIT(p.id);
        users += p.id == MQTT_PROP_USER_PROPERTY;
        subs += p.id == MQTT_PROP_SUBSCRIPTION_ID;
        switch (p.type) {
        case MQTT_PT_UTF8:
        case MQTT_PT_BINARY:
            CHECK(mqtt_pw_str(&w, p.id, p.str.p, p.str.len) == 0);
            break;
        case MQTT_PT_PAIR:
            CHECK(mqtt_pw_user(&w, p.str.p, p.str.len, p.val.p, p.val.len) == 0);
            break;
        default:
            CHECK(mqtt_pw_int(&w, p.id, p.value) == 0);
            break;
        }
        (void)mqtt_prop_name(p.id);
    }
    CHECK(wire == pr->raw_len && seen == pr->present);
    CHECK(users == pr->user_count && subs == pr->sub_id_count);
    CHECK(mqtt_pw_error(&w) == 0 && mqtt_pw_len(&w) == pr->raw_len);
    CHECK(pr->raw_len == 0 || memcmp(buf, pr->raw, pr->raw_len) == 0);
    mqtt_pw_init(&w, buf, pr->raw_len);
    CHECK(mqtt_pw_copy(&w, pr, 0) == 0 && mqtt_pw_len(&w) == pr->raw_len);
    CHECK(pr->raw_len == 0 || memcmp(buf, pr->raw, pr->raw_len) == 0);
    /* The user properties in order, as the dedicated iterator gives them. */
    pos = 0;
    mqtt_str_t k, v;
    uint32_t n = 0;
    while (mqtt_props_user_next(pr, &pos, &k, &v))
        n++;
    CHECK(n == pr->user_count);
    mqtt_props_t again;
    const char *why = NULL;
    CHECK(mqtt_props_parse(pr->raw, pr->raw_len, where, from, &again, &why) == MQTT_OK);
    CHECK(again.present == pr->present && again.raw == pr->raw);
    if (mqtt_props_has(pr, MQTT_PROP_TOPIC_ALIAS))
        CHECK(pr->topic_alias != 0);
    if (mqtt_props_has(pr, MQTT_PROP_SUBSCRIPTION_ID))
        CHECK(pr->sub_id != 0);
    if (mqtt_props_has(pr, MQTT_PROP_RESPONSE_TOPIC))
        CHECK(mqtt_topic_name_valid(pr->response_topic.p, pr->response_topic.len));
    free(buf);
}

static int same_props(const mqtt_props_t *a, const mqtt_props_t *b)
{
    return a->present == b->present && a->raw_len == b->raw_len &&
           (a->raw_len == 0 || memcmp(a->raw, b->raw, a->raw_len) == 0);
}

/* Re-encode a level 5 CONNECT: the very same bytes come out. */
static void recode_connect_v5(const mqtt_raw_t *orig, const mqtt_connect_t *c)
{
    if (c->has_password && memchr(c->password.p, 0, c->password.len))
        return;
    check_props(&c->props, MQTT_CONNECT, MQTT_FROM_CLIENT);
    if (c->will_flag)
        check_props(&c->will_props, MQTT_PROPS_WILL, MQTT_FROM_CLIENT);
    else
        CHECK(c->will_props.present == 0);
    char *id = cstr(c->client_id);
    char *wt = c->will_flag ? cstr(c->will_topic) : NULL;
    char *user = c->has_username ? cstr(c->username) : NULL;
    char *pass = c->has_password ? cstr(c->password) : NULL;
    mqtt_connect_opts_t o = {
        .proto = MQTT_PROTO_V5,
        .clean_session = c->clean_session,
        .keepalive = c->keepalive,
        .client_id = id,
        .username = user,
        .password = pass,
        .will_topic = wt,
        .will_payload = c->will_payload.p,
        .will_payload_len = c->will_payload.len,
        .will_qos = c->will_qos,
        .will_retain = c->will_retain,
        .props = c->props.raw,
        .props_len = c->props.raw_len,
        .will_props = c->will_props.raw,
        .will_props_len = c->will_props.raw_len,
    };
    size_t size = mqtt_connect_size(&o);
    uint8_t *buf = malloc(size);
    CHECK(buf != NULL);
    CHECK(mqtt_encode_connect(buf, &o) == size);
    mqtt_raw_t r = frame_whole(buf, size);
    CHECK(r.hdr == orig->hdr && r.len == orig->len);
    CHECK(memcmp(r.body, orig->body, r.len) == 0);
    mqtt_connect_t d;
    const char *why = NULL;
    CHECK(mqtt_decode_connect_v5ok(&r, &d, 1, &why) == MQTT_OK);
    CHECK(mqtt_decode_connect(&r, &d, &why) == MQTT_ERR_PROTOCOL_VERSION);
    CHECK(mqtt_decode_connect_v5ok(&r, &d, 1, &why) == MQTT_OK);
    CHECK(d.proto == MQTT_PROTO_V5 && d.clean_session == c->clean_session);
    CHECK(d.will_flag == c->will_flag && d.will_qos == c->will_qos);
    CHECK(d.will_retain == c->will_retain && d.keepalive == c->keepalive);
    CHECK(str_same(d.client_id, c->client_id) && str_same(d.username, c->username));
    CHECK(str_same(d.password, c->password) && str_same(d.will_topic, c->will_topic));
    CHECK(str_same(d.will_payload, c->will_payload));
    CHECK(same_props(&d.props, &c->props) && same_props(&d.will_props, &c->will_props));
    free(buf);
    free(id);
    free(wt);
    free(user);
    free(pass);
}

/* Re-encode a 5.0 PUBLISH: the very same bytes come out. */
static void recode_publish_v5(const mqtt_raw_t *orig, const mqtt_publish_t *p, uint8_t from)
{
    check_props(&p->props, MQTT_PUBLISH, from);
    CHECK(p->topic.len > 0 || mqtt_props_has(&p->props, MQTT_PROP_TOPIC_ALIAS));
    if (from == MQTT_FROM_CLIENT)
        CHECK(p->props.sub_id_count == 0);
    size_t size = mqtt_publish_v5_size(p->topic.len, p->qos, p->props.raw_len, p->payload_len);
    uint8_t *buf = malloc(size);
    CHECK(buf != NULL);
    CHECK(mqtt_encode_publish_v5(buf, p->topic.p, p->topic.len, p->qos, p->retain, p->dup,
                                 p->packet_id, p->props.raw, p->props.raw_len, p->payload,
                                 p->payload_len) == size);
    mqtt_raw_t r = frame_whole(buf, size);
    CHECK(r.hdr == orig->hdr && r.len == orig->len);
    CHECK(r.len == 0 || memcmp(r.body, orig->body, r.len) == 0);
    mqtt_publish_t d;
    const char *why = NULL;
    CHECK(mqtt_decode_publish_from(&r, MQTT_PROTO_V5, from, &d, &why) == MQTT_OK);
    CHECK(str_same(d.topic, p->topic) && d.packet_id == p->packet_id);
    CHECK(d.qos == p->qos && d.retain == p->retain && d.dup == p->dup);
    CHECK(d.payload_len == p->payload_len && same_props(&d.props, &p->props));
    free(buf);
}

/* Walk a 5.0 SUBSCRIBE / UNSUBSCRIBE; re-encode each filter alone. */
static void walk_sub_v5(mqtt_sub_iter_t it, int subscribe)
{
    mqtt_str_t f;
    uint8_t o = 0xff;
    uint32_t count = 0;
    check_props(&it.props, subscribe ? MQTT_SUBSCRIBE : MQTT_UNSUBSCRIBE, MQTT_FROM_CLIENT);
    CHECK(it.props.sub_id_count <= 1 && it.proto == MQTT_PROTO_V5);
    while (mqtt_sub_next_opts(&it, &f, &o)) {
        count++;
        CHECK(mqtt_topic_filter_valid(f.p, f.len));
        const uint8_t *g = NULL, *rf = NULL;
        size_t gl = 0, rl = 0;
        int shared = mqtt_shared_filter_parse(f.p, f.len, &g, &gl, &rf, &rl);
        CHECK(shared >= 0);
        if (shared) {
            CHECK(gl > 0 && !memchr(g, '/', gl) && !memchr(g, '+', gl) && !memchr(g, '#', gl));
            CHECK(mqtt_topic_filter_valid(rf, rl) && rf + rl == f.p + f.len);
        }
        if (subscribe) {
            CHECK((o & 0xc0) == 0 && MQTT_SUBOPT_QOS(o) != 3 &&
                  MQTT_SUBOPT_RETAIN_HANDLING(o) != 3);
            CHECK(!(shared && (o & MQTT_SUBOPT_NO_LOCAL)));
        } else {
            CHECK(o == 0);
        }
        size_t size = subscribe ? mqtt_subscribe_v5_size(f.len, 0, it.props.raw_len)
                                : mqtt_unsubscribe_v5_size(f.len, it.props.raw_len);
        uint8_t *buf = malloc(size);
        CHECK(buf != NULL);
        size_t n = subscribe ? mqtt_encode_subscribe_v5(buf, it.packet_id, f.p, f.len, o, 0,
                                                        it.props.raw, it.props.raw_len)
                             : mqtt_encode_unsubscribe_v5(buf, it.packet_id, f.p, f.len,
                                                          it.props.raw, it.props.raw_len);
        CHECK(n == size);
        mqtt_raw_t r = frame_whole(buf, n);
        mqtt_sub_iter_t d;
        const char *why = NULL;
        int rc = subscribe ? mqtt_decode_subscribe_v5(&r, &d, &why)
                           : mqtt_decode_unsubscribe_v5(&r, &d, &why);
        CHECK(rc == MQTT_OK);
        CHECK(d.packet_id == it.packet_id && d.count == 1);
        CHECK(same_props(&d.props, &it.props));
        mqtt_str_t f2;
        uint8_t o2 = 0xff;
        CHECK(mqtt_sub_next_opts(&d, &f2, &o2) == 1);
        CHECK(str_same(f, f2) && o2 == o);
        CHECK(mqtt_sub_next_opts(&d, &f2, &o2) == 0);
        free(buf);
    }
    CHECK(count == it.count && count >= 1);
}

/* Every 5.0 decoder that takes this packet type, plus the bare property
 * validator on the body. */
static void decode_one_v5(const mqtt_raw_t *r)
{
    const char *why = NULL;
    uint8_t type = mqtt_raw_type(r);
    uint8_t buf[64];

    switch (type) {
    case MQTT_PUBLISH:
        for (uint8_t from = MQTT_FROM_CLIENT; from <= MQTT_FROM_SERVER; from++) {
            mqtt_publish_t p;
            if (mqtt_decode_publish_from(r, MQTT_PROTO_V5, from, &p, &why) == MQTT_OK)
                recode_publish_v5(r, &p, from);
        }
        {
            /* A client's PUBLISH that passes passes from a server too. */
            mqtt_publish_t a, b;
            int ra = mqtt_decode_publish(r, MQTT_PROTO_V5, &a, &why);
            int rb = mqtt_decode_publish_from(r, MQTT_PROTO_V5, MQTT_FROM_SERVER, &b, &why);
            if (ra == MQTT_OK)
                CHECK(rb == MQTT_OK);
        }
        break;
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE: {
        mqtt_sub_iter_t it;
        int sub = type == MQTT_SUBSCRIBE;
        int rc =
            sub ? mqtt_decode_subscribe_v5(r, &it, &why) : mqtt_decode_unsubscribe_v5(r, &it, &why);
        if (rc == MQTT_OK)
            walk_sub_v5(it, sub);
        break;
    }
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP: {
        mqtt_ack_t a, d;
        if (mqtt_decode_ack_v5(r, &a, &why) != MQTT_OK)
            break;
        CHECK(a.packet_id != 0 && mqtt_reason_valid(type, 0, a.reason));
        CHECK(strcmp(mqtt_reason_name(a.reason), "?") != 0);
        check_props(&a.props, type, MQTT_FROM_CLIENT);
        size_t size = mqtt_ack_v5_size(a.reason, a.props.raw_len);
        uint8_t *out = malloc(size);
        CHECK(out != NULL);
        CHECK(mqtt_encode_ack_v5(out, type, a.packet_id, a.reason, a.props.raw, a.props.raw_len) ==
              size);
        mqtt_raw_t e = frame_whole(out, size);
        CHECK(e.hdr == r->hdr && e.len <= r->len);
        CHECK(mqtt_decode_ack_v5(&e, &d, &why) == MQTT_OK);
        CHECK(d.packet_id == a.packet_id && d.reason == a.reason);
        CHECK(same_props(&d.props, &a.props));
        free(out);
        break;
    }
    case MQTT_DISCONNECT:
    case MQTT_AUTH:
        for (uint8_t from = MQTT_FROM_CLIENT; from <= MQTT_FROM_SERVER; from++) {
            mqtt_disconnect_t a, d;
            mqtt_auth_t x, y;
            int dis = type == MQTT_DISCONNECT;
            if (!dis && from == MQTT_FROM_SERVER)
                break;
            if ((dis ? mqtt_decode_disconnect_v5(r, from, &a, &why)
                     : mqtt_decode_auth(r, &x, &why)) != MQTT_OK)
                continue;
            const mqtt_props_t *pr = dis ? &a.props : &x.props;
            uint8_t reason = dis ? a.reason : x.reason;
            CHECK(mqtt_reason_valid(type, from, reason));
            if (!dis)
                CHECK(mqtt_props_has(pr, MQTT_PROP_AUTH_METHOD) ||
                      (reason == 0 && pr->raw_len == 0));
            check_props(pr, type, from);
            size_t size = dis ? mqtt_disconnect_v5_size(reason, pr->raw_len)
                              : mqtt_auth_size(reason, pr->raw_len);
            uint8_t *out = malloc(size);
            CHECK(out != NULL);
            CHECK((dis ? mqtt_encode_disconnect_v5(out, reason, pr->raw, pr->raw_len)
                       : mqtt_encode_auth(out, reason, pr->raw, pr->raw_len)) == size);
            mqtt_raw_t e = frame_whole(out, size);
            CHECK(e.hdr == r->hdr && e.len <= r->len);
            if (dis) {
                CHECK(mqtt_decode_disconnect_v5(&e, from, &d, &why) == MQTT_OK);
                CHECK(d.reason == a.reason && same_props(&d.props, &a.props));
            } else {
                CHECK(mqtt_decode_auth(&e, &y, &why) == MQTT_OK);
                CHECK(y.reason == x.reason && same_props(&y.props, &x.props));
            }
            free(out);
        }
        break;
    case MQTT_CONNACK: {
        mqtt_connack_t a, d;
        if (mqtt_decode_connack_v5(r, &a, &why) != MQTT_OK)
            break;
        check_props(&a.props, MQTT_CONNACK, MQTT_FROM_SERVER);
        size_t size = mqtt_connack_v5_size(a.props.raw_len);
        uint8_t *out = malloc(size);
        CHECK(out != NULL);
        CHECK(mqtt_encode_connack_v5(out, a.session_present, a.reason, a.props.raw,
                                     a.props.raw_len) == size);
        mqtt_raw_t e = frame_whole(out, size);
        CHECK(e.hdr == r->hdr && e.len == r->len && memcmp(e.body, r->body, r->len) == 0);
        CHECK(mqtt_decode_connack_v5(&e, &d, &why) == MQTT_OK);
        free(out);
        break;
    }
    case MQTT_SUBACK:
    case MQTT_UNSUBACK: {
        mqtt_suback_t a, d;
        if (mqtt_decode_suback_v5(r, &a, &why) != MQTT_OK)
            break;
        check_props(&a.props, type, MQTT_FROM_SERVER);
        CHECK(a.count >= 1);
        size_t size = mqtt_suback_v5_size(a.props.raw_len, a.count);
        uint8_t *out = malloc(size);
        CHECK(out != NULL);
        CHECK((type == MQTT_SUBACK
                   ? mqtt_encode_suback_v5(out, a.packet_id, a.props.raw, a.props.raw_len,
                                           a.reasons, a.count)
                   : mqtt_encode_unsuback_v5(out, a.packet_id, a.props.raw, a.props.raw_len,
                                             a.reasons, a.count)) == size);
        mqtt_raw_t e = frame_whole(out, size);
        CHECK(e.hdr == r->hdr && e.len == r->len && memcmp(e.body, r->body, r->len) == 0);
        CHECK(mqtt_decode_suback_v5(&e, &d, &why) == MQTT_OK && d.count == a.count);
        free(out);
        break;
    }
    default:
        break;
    }

    /* The body as a bare property block, for this type and for a Will. */
    if (r->len) {
        const uint8_t places[2] = {type, MQTT_PROPS_WILL};
        for (int i = 0; i < 2; i++) {
            for (uint8_t from = MQTT_FROM_CLIENT; from <= MQTT_FROM_SERVER; from++) {
                mqtt_props_t pr;
                size_t used = 0;
                if (mqtt_props_parse(r->body, r->len, places[i], from, &pr, &why) == MQTT_OK)
                    check_props(&pr, places[i], from);
                else
                    CHECK(why != NULL);
                if (mqtt_props_read(r->body, r->len, places[i], from, &pr, &used, &why) ==
                    MQTT_OK) {
                    CHECK(used >= 1 && used <= r->len);
                    check_props(&pr, places[i], from);
                }
            }
        }
        uint32_t v;
        int n = mqtt_decode_varint(r->body, r->len, &v);
        if (n > 0) {
            CHECK(mqtt_encode_varint(buf, v) == (size_t)n);
            CHECK(memcmp(buf, r->body, (size_t)n) == 0);
        }
    }
    (void)mqtt_reason_name_for(type, r->len ? r->body[0] : 0);
}

static void decode_one(const mqtt_raw_t *r)
{
    const char *why = NULL;
    uint8_t type = mqtt_raw_type(r);
    int hdr3 = mqtt_check_client_header(r->hdr, MQTT_PROTO_V31, &why);
    int hdr4 = mqtt_check_client_header(r->hdr, MQTT_PROTO_V311, &why);
    int hdr5 = mqtt_check_client_header(r->hdr, MQTT_PROTO_V5, &why);
    CHECK(hdr3 == hdr4 && hdr3 <= 0);
    CHECK(type == MQTT_AUTH ? (hdr5 == MQTT_OK) == (r->hdr == 0xf0) : hdr5 == hdr4);

    switch (type) {
    case MQTT_CONNECT: {
        mqtt_connect_t c;
        int rc = mqtt_decode_connect(r, &c, &why);
        if (rc == MQTT_OK || rc == MQTT_ERR_CLIENT_ID) {
            CHECK(hdr4 == MQTT_OK);
            CHECK(c.proto == MQTT_PROTO_V31 || c.proto == MQTT_PROTO_V311);
            CHECK(c.props.present == 0 && c.will_props.present == 0);
            recode_connect(&c);
        }
        /* Opting in to 5.0 changes nothing for other levels. */
        mqtt_connect_t c5;
        int rc0 = mqtt_decode_connect_v5ok(r, &c5, 0, &why);
        int rc5 = mqtt_decode_connect_v5ok(r, &c5, 1, &why);
        CHECK(rc0 == rc);
        if (rc != MQTT_ERR_PROTOCOL_VERSION)
            CHECK(rc5 == rc);
        if (rc5 == MQTT_OK && c5.proto == MQTT_PROTO_V5) {
            CHECK(rc == MQTT_ERR_PROTOCOL_VERSION);
            recode_connect_v5(r, &c5);
        }
        CHECK(!(rc5 == MQTT_ERR_CLIENT_ID && c5.proto == MQTT_PROTO_V5));
        break;
    }
    case MQTT_PUBLISH:
        for (uint8_t proto = MQTT_PROTO_V31; proto <= MQTT_PROTO_V311; proto++) {
            mqtt_publish_t p;
            if (mqtt_decode_publish(r, proto, &p, &why) == MQTT_OK) {
                CHECK(hdr4 == MQTT_OK);
                CHECK(mqtt_topic_name_valid(p.topic.p, p.topic.len));
                CHECK((p.qos == 0) == (p.packet_id == 0));
                recode_publish(r, &p);
            }
        }
        break;
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE: {
        mqtt_sub_iter_t it;
        int sub = type == MQTT_SUBSCRIBE;
        int rc = sub ? mqtt_decode_subscribe(r, &it, &why) : mqtt_decode_unsubscribe(r, &it, &why);
        if (rc == MQTT_OK) {
            CHECK(hdr4 == MQTT_OK && it.packet_id != 0);
            walk_sub(it, sub);
        }
        break;
    }
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
    case MQTT_UNSUBACK: {
        uint16_t id = 0;
        if (mqtt_decode_ack(r, &id, &why) == MQTT_OK) {
            uint8_t buf[4];
            CHECK(id != 0);
            CHECK(mqtt_encode_ack(buf, type, id) == 4);
            CHECK(buf[0] == r->hdr && memcmp(buf + 2, r->body, 2) == 0);
        }
        break;
    }
    case MQTT_PINGREQ:
    case MQTT_PINGRESP:
    case MQTT_DISCONNECT:
        if (mqtt_decode_empty(r, &why) == MQTT_OK) {
            uint8_t buf[2];
            CHECK(r->len == 0 && r->body == NULL);
            CHECK((type == MQTT_PINGREQ    ? mqtt_encode_pingreq(buf)
                   : type == MQTT_PINGRESP ? mqtt_encode_pingresp(buf)
                                           : mqtt_encode_disconnect(buf)) == 2);
            CHECK(buf[0] == r->hdr && buf[1] == 0);
        }
        break;
    case MQTT_CONNACK: {
        uint8_t sp = 0, rc = 0;
        if (mqtt_decode_connack(r, &sp, &rc, &why) == MQTT_OK) {
            uint8_t buf[4];
            mqtt_encode_connack(buf, sp, rc);
            CHECK(buf[0] == r->hdr && memcmp(buf + 2, r->body, 2) == 0);
        }
        break;
    }
    case MQTT_SUBACK: {
        uint16_t id = 0;
        uint8_t rcs[8];
        uint32_t n = 0;
        if (mqtt_decode_suback(r, &id, rcs, sizeof rcs, &n, &why) == MQTT_OK) {
            CHECK(n == r->len - 2 && id != 0);
            if (n <= sizeof rcs) {
                uint8_t buf[16];
                size_t len = mqtt_encode_suback(buf, id, rcs, n);
                CHECK(len == mqtt_suback_size(n));
                mqtt_raw_t e = frame_whole(buf, len);
                CHECK(e.hdr == r->hdr && e.len == r->len);
                CHECK(memcmp(e.body, r->body, r->len) == 0);
            }
        }
        break;
    }
    default:
        break;
    }
    /* The helpers must not crash on anything. */
    if (r->len) {
        (void)mqtt_utf8_valid(r->body, r->len);
        (void)mqtt_topic_filter_valid(r->body, r->len);
        (void)mqtt_topic_name_valid(r->body, r->len);
    }
    (void)mqtt_type_name(type);
    decode_one_v5(r);
}

typedef struct {
    uint8_t hdr;
    uint32_t len;
    const uint8_t *body;
} ref_pkt_t;

static const uint32_t max_sizes[] = {0, 2, 16, 127, 128, 1024, 16384, 1u << 20};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t split = data[0];
    uint32_t max_packet = max_sizes[data[1] & 7];
    const uint8_t *in = data + 2;
    size_t n = size - 2;

    /* Reference: the whole stream in one feed.  Everything it returns is in
     * place, so the bodies point into the input. */
    ref_pkt_t *ref = malloc((n / 2 + 1) * sizeof *ref);
    CHECK(ref != NULL);
    size_t nref = 0, pos = 0;
    int ref_err = 0;
    mqtt_parser_t ps = {0};
    while (pos < n) {
        mqtt_raw_t r;
        size_t used = 0;
        const char *why = NULL;
        int rc = mqtt_parser_next(&ps, in + pos, n - pos, &used, max_packet, &r, &why);
        CHECK(used <= n - pos);
        pos += used;
        if (rc < 0) {
            CHECK(why != NULL);
            ref_err = rc;
            break;
        }
        if (rc == 0) {
            CHECK(pos == n);
            break;
        }
        CHECK(r.len <= max_packet);
        CHECK(r.len == 0 ? r.body == NULL : (r.body >= in && r.body + r.len <= in + n));
        CHECK(mqtt_raw_type(&r) != 0);
        ref[nref].hdr = r.hdr;
        ref[nref].len = r.len;
        ref[nref].body = r.body;
        nref++;
    }
    mqtt_parser_reset(&ps);

    /* The same stream in splits: 0 = one byte at a time; 1..255 = chunks of
     * 1..split bytes from a PRNG seeded by the split byte. */
    uint32_t seed = 0x9e3779b9u ^ split;
    size_t seen = 0;
    int err = 0;
    pos = 0;
    while (pos < n && !err) {
        size_t chunk = 1;
        if (split) {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            chunk = 1 + seed % split;
        }
        if (chunk > n - pos)
            chunk = n - pos;
        const uint8_t *d = in + pos;
        size_t left = chunk;
        while (left > 0) {
            mqtt_raw_t r;
            size_t used = 0;
            const char *why = NULL;
            int rc = mqtt_parser_next(&ps, d, left, &used, max_packet, &r, &why);
            CHECK(used <= left);
            if (rc < 0) {
                err = rc;
                break;
            }
            if (rc == 0) {
                CHECK(used == left);
            } else {
                CHECK(seen < nref);
                CHECK(r.hdr == ref[seen].hdr && r.len == ref[seen].len);
                CHECK(r.len == 0 ? r.body == NULL : memcmp(r.body, ref[seen].body, r.len) == 0);
                CHECK(r.len == 0 || r.body == ps.buf ||
                      (r.body >= d && r.body + r.len <= d + used));
                seen++;
                decode_one(&r);
            }
            d += used;
            left -= used;
        }
        pos += chunk;
    }
    CHECK(seen == nref && err == ref_err);
    mqtt_parser_reset(&ps);
    CHECK(ps.buf == NULL);
    free(ref);
    return 0;
}
