/* proto_int.h -- what proto.c (the state machine) and proto_auth.c (its
 * authentication half) share; nothing outside these two files includes
 * it.  All of it runs on the connection's worker. */
#ifndef ANTENNA_PROTO_INT_H
#define ANTENNA_PROTO_INT_H

#include "auth_cause.h"
#include "conn.h"
#include "mqtt_codec.h"

/* proto.c */

/* Close c for a protocol violation: an MQTT 5 client gets DISCONNECT rc
 * first; one log line "what: why".  Returns -1 (the caller stops). */
int proto_close_with(conn_t *c, uint8_t rc, const char *what, const char *why);
int proto_protocol_error(conn_t *c, const char *why);
/* A codec error rc (MQTT_ERR_*) as the matching close. */
int proto_malformed(conn_t *c, int rc, const char *why);
/* Refuse a CONNECT: CONNACK rc3 (3.1.1) or rc5 (5.0), the log line with
 * its event name and reason, then close.  ck: the CONNECT when parsed
 * (names the client), or NULL.  Returns -1. */
int proto_refuse_as(conn_t *c, const mqtt_connect_t *ck, uint8_t rc3, uint8_t rc5, const char *why,
                    const char *event, const char *reason, const char *backend);
/* The auth_failed event for a refusal (event.h). */
void proto_emit_auth_failed(conn_t *c, const mqtt_connect_t *ck, auth_cause_t cause, uint8_t rc5,
                            const char *why);
/* CONNECT, also replayed after an asynchronous authentication (the
 * packet and the bytes that followed it) and on the home worker after a
 * hand-off (adopted).  0, or -1 when c was closed. */
int proto_on_connect(conn_t *c, const mqtt_raw_t *pkt, const uint8_t *rest, size_t rest_len,
                     int adopted);

/* proto_auth.c */

/* Take c out of the loop while authentication holds it. */
void proto_hold(conn_t *c);
/* Refuse for an authentication cause (auth_cause.h maps it to the codes). */
int proto_refuse_auth(conn_t *c, const mqtt_connect_t *ck, auth_cause_t cause, const char *why);
/* Run the auth chain for this CONNECT: 0 allowed (go on), -1 refused
 * (closed), 1 waiting (kept and replayed when the answer comes). */
int proto_authenticate(conn_t *c, const mqtt_connect_t *ck, const mqtt_raw_t *pkt,
                       const uint8_t *rest, size_t rest_len, const uint8_t *id, uint16_t id_len,
                       int anonymous);
/* MQTT 5 enhanced authentication at CONNECT (an Authentication Method):
 * 0 done (go on), 1 waiting for the client's AUTH, -1 refused. */
int proto_enhanced_start(conn_t *c, const mqtt_connect_t *ck, const mqtt_raw_t *pkt);
/* An AUTH packet (continue, or re-authenticate). */
int proto_on_auth(conn_t *c, const mqtt_raw_t *pkt);
#define ID_PREVIEW 32 /* bytes of a refused client id shown in the log */
/* The first ID_PREVIEW bytes of a client id for a log line, control bytes
 * escaped (out holds 4 * ID_PREVIEW + 1). */
void proto_id_preview(const uint8_t *id, size_t len, char *out, size_t size);
/* auth.client_id_binding: may user use this client id?  1 yes, 0 no. */
int proto_client_id_bound(const conf_t *cf, const char *user, const uint8_t *id, uint16_t len,
                          int assigned);

#endif
