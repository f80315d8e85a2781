/* coapgw_int.h -- what coapgw.c (the listener, publishing, observations of
 * /ps) and coapgw_down.c (the downlink: a device's observation of /cmd
 * attached to its session) share.
 *
 * coapgw_t is the module's state (one per broker, made by init).  Its
 * libcoap context, the observations and the downlink's list are the
 * gateway thread's only; the counters are atomics read by /metrics; the
 * downlink's per-observation hand-over (deliveries from the home worker)
 * is under `down_mu`.  Items of the gateway's inbox are ITEM_*; items the
 * gateway posts to a worker are WM_COAP with inbox_item_t.flags a COAP_OP_*.
 */
#ifndef ANTENNA_COAPGW_INT_H
#define ANTENNA_COAPGW_INT_H

#include <coap3/coap.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "auth_chain.h"
#include "coapgw.h"
#include "coapgw_psk.h"
#include "ev.h"
#include "inbox.h"
#include "msg.h"
#include "router.h"
#include "server.h"

#define MAX_TOPIC 1024
#define MAX_ARG 256

/* The gateway's inbox: what its items are. */
enum {
    ITEM_WAKE = 0,    /* nothing: the thread looks at `stopping` */
    ITEM_MSG = 1,     /* ptr: msg_t* (a reference) for the /ps observations */
    ITEM_DOWN = 2,    /* ptr: coapgw_down_t*: its deliveries wait in it */
    ITEM_END = 3,     /* ptr: coapgw_down_t*: its session let go of it */
    ITEM_RETAINED = 4 /* ptr: coapgw_retained_t*: a new observation's retained messages */
};

/* WM_COAP items (a worker's inbox): inbox_item_t.flags. */
enum {
    COAP_OP_PUB0 = 0,   /* ptr: msg_t*, a QoS 0 publish */
    COAP_OP_PUB1 = 1,   /* ptr: a QoS 1 publish job, waited for */
    COAP_OP_ATTACH = 2, /* ptr: coapgw_down_t*: attach it to its session */
    COAP_OP_DETACH = 3, /* ptr: coapgw_down_t*: the observation ended */
    COAP_OP_ACK = 4     /* ptr: coapgw_down_t*, sid: packet id, qos: 1 or 2 */
};

typedef struct coapgw_obs_s coapgw_obs_t;
typedef struct coapgw_down_s coapgw_down_t;

typedef struct {
    char *filter;
    uint32_t refs;
} coapgw_filter_t;

/* A worker's messages for the gateway, gathered during a turn. */
typedef struct {
    inbox_vec_t out;
} coapgw_wctx_t;

typedef struct {
    server_t *srv;
    module_inst_t *mi;
    const coapgw_conf_t *c;
    coap_context_t *ctx;
    coap_resource_t *res;
    coapgw_psk_t *psk;        /* DTLS keys, or NULL: no DTLS listener */
    coap_pdu_t *get_req;      /* a bare GET, the "request" of every block-wise
                               * notification (libcoap reads only its code and
                               * Block2 option): no copy per observation */
    coap_bin_const_t psk_out; /* the key handed to libcoap (it copies it) */
    router_consumer_t *consumer;
    inbox_t inbox;        /* workers -> the gateway thread */
    inbox_vec_t *pending; /* per worker: QoS 0 publishes, downlink
                           * acknowledgements and ends of this turn */
    int inbox_ok;
    ev_loop_t loop;
    ev_watcher_t coap_ev, inbox_ev;
    pthread_t thread;
    int thread_started;
    _Atomic int stopping;
    /* the gateway thread's own */
    coapgw_obs_t *obs;
    coapgw_filter_t *filters;
    uint32_t nfilters, capfilters;
    uint64_t last_sweep_us;
    coapgw_down_t *down;        /* observations of /cmd (coapgw_down.c) */
    struct coapgw_rate_s *rate; /* COAPGW_RATE_SLOTS buckets, or NULL (rate 0) */
    int udp_fd;                 /* libcoap's UDP endpoint socket (peeked), or -1 */
    uint32_t con_waiting;       /* /cmd CON notifications waiting for their ACK */
    pthread_mutex_t down_mu;
    _Atomic uint64_t requests, published, notified, refused, dropped, expired, limited;
    _Atomic uint64_t handshakes_failed; /* DTLS/TLS errors (coapgw_sec.c) */
    _Atomic uint64_t down_attached, down_delivered, down_takeovers;
    _Atomic uint32_t observers;
} coapgw_t;

typedef struct {
    char topic[MAX_TOPIC];
    size_t tlen;
    char qos[MAX_ARG], retain[MAX_ARG], token[MAX_ARG], u[MAX_ARG], p[MAX_ARG], c[MAX_ARG];
    uint8_t has_qos, has_retain, has_token, has_u, has_p, has_c;
    uint8_t cmd; /* the path is /cmd (the downlink) */
} coapgw_req_t;

/* coapgw.c (the gateway thread) */
void coapgw_answer(coap_pdu_t *resp, int code, const char *text);
void coapgw_peer_text(coap_session_t *s, char *out, size_t size);
void coapgw_add_observe(coap_pdu_t *pdu, uint32_t seq);
/* The client behind a request, authenticated (client_id filled), or NULL
 * (refused, counted). */
auth_client_t *coapgw_login(coapgw_t *g, coap_session_t *s, const coapgw_req_t *q, char *client_id,
                            size_t idsize);
/* A notification of m on an observation (its session, token, query),
 * number seq, CON or NON; block-wise when larger than a datagram.  Its
 * message id, or COAP_INVALID_MID: not sent (counted as dropped). */
coap_mid_t coapgw_notify_one(coapgw_t *g, coap_session_t *s, const uint8_t *token,
                             uint8_t token_len, const coap_string_t *query, uint32_t seq, int con,
                             const msg_t *m);
/* The end of an observation: a NON with `code` (5.03) and its token. */
void coapgw_send_final(coap_session_t *s, const uint8_t *token, uint8_t token_len, int code);

/* coapgw_sec.c: the endpoints (gw_start, main thread), the identity a
 * (D)TLS handshake proved (gateway thread), the section's file keys */
int coapgw_listen(coapgw_t *g);
/* The user a secured session's handshake proved, copied into buf: its
 * length; 0 none (not (D)TLS, or PKI without a client certificate: the
 * request's query authenticates), -1 unusable (too long, a NUL). */
int coapgw_secure_user(coapgw_t *g, coap_session_t *s, char *buf, size_t size);
int coapgw_sec_check(conf_sec_t *s, const coapgw_conf_t *c);

/* coapgw_down.c, on the gateway thread */
void coapgw_down_request(coapgw_t *g, coap_session_t *s, const coap_pdu_t *req,
                         const coapgw_req_t *q, coap_pdu_t *resp);
int coapgw_down_nack(coapgw_t *g, coap_session_t *s, coap_bin_const_t tok); /* 1: one of ours */
/* An empty ACK with message id mid from `from` is about to be read by
 * libcoap (coapgw.c peeked at it): the CON notification it answers is
 * acknowledged to its session. */
void coapgw_down_acked(coapgw_t *g, const struct sockaddr_in *from, uint16_t mid);
void coapgw_down_item(coapgw_t *g, inbox_item_t *it); /* ITEM_DOWN, ITEM_END */
void coapgw_down_sweep(coapgw_t *g, uint64_t now);
void coapgw_down_free(coapgw_t *g);           /* gw_free, the thread stopped */
void coapgw_down_item_drop(inbox_item_t *it); /* an ITEM_DOWN/ITEM_END not handled */
/* coapgw_down.c, on the device's home worker (WM_COAP, COAP_OP_ATTACH..ACK) */
void coapgw_down_run(worker_t *w, inbox_item_t *it);
void coapgw_down_drop(inbox_item_t *it);

#endif
