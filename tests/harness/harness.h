/* harness.h -- the broker core in process, for deterministic unit tests.
 *
 * A harness is a real server_t (server_init, the embedded defaults) with
 * ONE worker whose loop the test turns by hand (worker_turn), one
 * listener on 127.0.0.1 (an ephemeral port) and persistence on, on the
 * memory store (store_mem.c): every durable write goes through the real
 * persist.c, store batch and committer thread.  Clients are real TCP
 * sockets whose other end the worker accepts on a turn: the test writes
 * MQTT packets and reads what the broker sent, so a test sees only public
 * behaviour (packets in, packets out) and survives refactors of the code
 * between them.
 *
 * Commits by hand.  The store's answers (WM_COMMITTED, one per batch, in
 * order) are taken off the worker by the harness's own handler of that
 * inbox kind.  With h->hold_commits set (the default) they wait in the
 * harness until harness_commit_release(); with it cleared they are passed
 * on to persist.c at once, in the turn they arrive, as in the broker.  The
 * store itself commits freely, so the only thing held is what the broker
 * may do once a batch is durable: acknowledge, route, send a QoS 2 packet.
 * A failed commit: store_inject_write_failures(h->srv.store, n, err) (the
 * store's own fault injection) before the batch is submitted, or an error
 * passed to harness_commit_release_err().
 *
 * Determinism: nothing sleeps.  A turn waits at most its timeout for an
 * event (a client's bytes, the committer's inbox post); harness_turn_until
 * stops as soon as its predicate holds and fails after a bounded number of
 * turns.  Everything runs on the test's thread except the store's
 * committer, whose results are consumed only through the inbox.
 */
#ifndef ANTENNA_TEST_HARNESS_H
#define ANTENNA_TEST_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "server.h"

#define HARNESS_MAX_COMMITS 256
#define HARNESS_TURN_MS 200  /* a turn's longest wait for an event */
#define HARNESS_MAX_TURNS 50 /* x HARNESS_TURN_MS: how long a wait lasts (10 s) */

typedef struct harness {
    server_t srv;
    worker_t *w;                      /* the one worker */
    int hold_commits;                 /* 1: commit results wait for harness_commit_release */
    int commits[HARNESS_MAX_COMMITS]; /* results not yet passed on, oldest first */
    size_t ncommits;
    uint64_t commits_seen; /* WM_COMMITTED items taken so far */
} harness_t;

/* A test's client: one TCP connection to the harness's listener. */
typedef struct hclient {
    harness_t *h;
    int fd;
    uint8_t proto;     /* MQTT_PROTO_V311 or MQTT_PROTO_V5 */
    int eof;           /* the broker closed the connection */
    uint8_t in[65536]; /* received, not yet taken as packets */
    size_t in_len;
} hclient_t;

/* A packet the broker sent: fixed header and body (copied). */
typedef struct hpkt {
    uint8_t type;  /* MQTT packet type (1..15) */
    uint8_t flags; /* low 4 bits of the fixed header */
    uint32_t len;
    uint8_t body[16384];
} hpkt_t;

/* A decoded PUBLISH (pointers into the hpkt_t). */
typedef struct hpub {
    const uint8_t *topic, *payload;
    uint16_t topic_len, pid;
    uint32_t payload_len;
    uint8_t qos, dup, retain;
} hpub_t;

/* tweak (may be NULL) adjusts the configuration before server_init.
 * Returns 0, or -1 (logged). */
int harness_init(harness_t *h, void (*tweak)(conf_t *cf));
/* Stops the worker (WM_STOP, as server_stop), frees everything. */
void harness_free(harness_t *h);

/* One loop turn waiting at most timeout_ms: worker_turn's result. */
int harness_turn(harness_t *h, int timeout_ms);
/* Turns until pred(h, ud) holds (checked before each turn): 1, or 0 after
 * max_turns * HARNESS_TURN_MS ms of wall time (turns that other events end
 * early do not use the wait up). */
int harness_turn_until(harness_t *h, int (*pred)(harness_t *h, void *ud), void *ud, int max_turns);
/* Turns until n commit results wait in the harness (hold_commits): 1/0. */
int harness_wait_commits(harness_t *h, size_t n);
/* Turns until every batch submitted so far has come back, passing every
 * result on (also those held): the state before a step under test. */
int harness_settle(harness_t *h);
/* Passes the oldest n waiting results on to persist.c, in order (as their
 * WM_COMMITTED items would have been run), then ends a turn so what they
 * released is sent.  Returns how many were released. */
size_t harness_commit_release(harness_t *h, size_t n);
/* The same, each result replaced by err (0: success, < 0: a failed batch). */
size_t harness_commit_release_err(harness_t *h, size_t n, int err);

/* Clients.  hc_open connects (the worker accepts it on its next turn). */
hclient_t *hc_open(harness_t *h, uint8_t proto);
void hc_close(hclient_t *c);
void hc_send(hclient_t *c, const void *p, size_t n);
/* CONNECT (clean start, session expiry interval in seconds: MQTT 5 only;
 * 3.1.1: expiry != 0 means clean session 0) and wait for its CONNACK:
 * returns the CONNACK's return/reason code and sets *present. */
int hc_connect(hclient_t *c, const char *client_id, int clean, uint32_t expiry, int *present);
/* SUBSCRIBE to one filter and wait for the SUBACK: returns its code. */
int hc_subscribe(hclient_t *c, uint16_t pid, const char *filter, uint8_t qos);
/* PUBLISH (pid ignored at QoS 0). */
void hc_publish(hclient_t *c, const char *topic, const char *payload, uint8_t qos, uint16_t pid);
/* PUBACK, PUBREC, PUBREL, PUBCOMP (type: MQTT packet type). */
void hc_ack(hclient_t *c, uint8_t type, uint16_t pid);

/* A packet already received, without turning: 1 and *out, or 0. */
int hc_poll(hclient_t *c, hpkt_t *out);
/* Turns until a packet arrives: 1 and *out, or 0 (none within the bound,
 * or the connection closed: c->eof). */
int hc_expect(hclient_t *c, hpkt_t *out);
/* Turns until the broker closed the connection; 1 when it did.  Packets
 * sent before the close are kept (hc_poll). */
int hc_wait_eof(hclient_t *c);
/* Runs `turns` turns without waiting and reports whether a packet arrived
 * (1: *out set).  For "nothing is sent before X": the broker has done
 * everything it can do without X by then. */
int hc_quiet(hclient_t *c, int turns, hpkt_t *out);

/* Decoders of what the broker sends (c->proto says whether properties
 * follow).  Return 0, or -1 when the packet is not of that type. */
int hpkt_publish(const hclient_t *c, const hpkt_t *p, hpub_t *out);
/* PUBACK/PUBREC/PUBREL/PUBCOMP: packet id and reason (0 when absent). */
int hpkt_ack(const hpkt_t *p, uint8_t type, uint16_t *pid, uint8_t *reason);
/* DISCONNECT's reason code (0 when absent). */
int hpkt_disconnect(const hpkt_t *p, uint8_t *reason);

#endif
