/* proto.h -- the server side of MQTT 3.1 / 3.1.1: one handler per packet.
 *
 * Called by conn.c for every complete packet of a connection, on the
 * connection's worker.  CONNECT decides the connection's home worker (the
 * one that owns its session) and, when that is another worker, hands the
 * connection over with the bytes that followed the CONNECT.
 */
#ifndef ANTENNA_PROTO_H
#define ANTENNA_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "conn.h"

/* Returns 0 to go on with the next packet, -1 when the connection was
 * closed, 1 when it is moving to another worker (rest..rest+rest_len, the
 * bytes after this packet, travel with it). */
int proto_handle(conn_t *c, const mqtt_raw_t *pkt, const uint8_t *rest, size_t rest_len);

/* Home worker side of a hand-off: take the connection, finish its CONNECT,
 * then feed the bytes that followed.  Frees h. */
void proto_adopt(worker_t *w, handoff_t *h);

/* An asynchronous authentication answer (WM_AUTH): resume the CONNECT it
 * was for, if its connection is still there.  Frees the wait. */
struct auth_wait;
void proto_auth_answer(worker_t *w, struct auth_wait *wait);
/* Register WM_ADOPT and WM_AUTH (server start-up). */
void proto_register_inbox(server_t *srv);
/* The connection timer fired while authentication holds the connection
 * (CONN_AUTH): the delayed refusal of a banned address, or an answer
 * that did not come within connect_timeout. */
void proto_auth_timer(conn_t *c);

#endif
