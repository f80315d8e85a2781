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

/* The connect gate: one module (the cluster's client-id registry) may park
 * a CONNECT after authentication passed and before the session is
 * attached, on the client's home worker.  gate(w, g, user) is called there
 * with g describing the CONNECT; it returns 0 to go on at once (g is freed
 * by proto), or 1 to keep g: the connection then waits (reads paused, state
 * CONN_AUTH, connect_timeout still runs) until the module posts g back to
 * g->w as a WM_GATE item (proto_gate_post) with g->refuse_rc5 = 0 to go on
 * or an MQTT 5 reason code to refuse with.  A connection closed meanwhile
 * sets g->owner to NULL; the answer is then dropped.  Before the CONNECT
 * resumes, g->apply(w, g) (if set) runs on the worker (a session handed
 * over from another node is installed there); it may still refuse (a
 * reason code instead of 0).  Ids the broker assigned are
 * not gated.  Without a gate (NULL) this costs one test per CONNECT. */
/* proto_gate_t: server.h */
struct proto_gate_s {
    conn_t *owner; /* NULL: the connection went */
    worker_t *w;   /* the connection's (home) worker */
    uint64_t conn_id;
    char *client_id; /* NUL-terminated copy */
    uint16_t id_len;
    uint8_t proto;       /* MQTT_PROTO_* */
    uint8_t clean_start; /* clean start / clean session */
    uint32_t expiry;     /* the session expiry it asks for (seconds) */
    uint8_t refuse_rc5;  /* the answer: 0 go on, else refuse with this code */
    uint8_t (*apply)(worker_t *w, proto_gate_t *g); /* the module's, or NULL: 0 or a
                                                     * reason code to refuse with */
    void (*release)(proto_gate_t *g);               /* frees module state, or NULL */
    void *arg;                                      /* the module's */
    /* proto's: the CONNECT and the bytes after it */
    uint8_t *held;
    uint32_t connect_len, held_len;
    uint8_t hdr;
};
/* Set the gate (before server_start). */
void proto_gate_register(server_t *srv, int (*gate)(worker_t *w, proto_gate_t *g, void *user),
                         void *user);
/* Any thread: send the answer to g->w.  Returns 0, or -1 (g freed) when the
 * worker has stopped. */
int proto_gate_post(proto_gate_t *g);
/* The same for many answers: g's WM_GATE item appended to v, a batch for
 * g->w that the caller posts (inbox_post) once for all of them. */
void proto_gate_add(inbox_vec_t *v, proto_gate_t *g);
void proto_gate_free(proto_gate_t *g);

#endif
