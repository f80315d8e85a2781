/* httpin_int.h -- what httpin.c (the listener, the publish side) and
 * httpin_down.c (the downlink: long-poll and server-sent events) share.
 *
 * httpin_t is the module's state (one per broker, made by init); the MHD
 * threads read it, the list of open downlink requests (hd_t) and the
 * stopped flag are under `mu`.  httpin_req_t is one HTTP request, owned by
 * its MHD connection (freed by the completion callback).
 */
#ifndef ANTENNA_HTTPIN_INT_H
#define ANTENNA_HTTPIN_INT_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "auth_chain.h"
#include "httpin.h"
#include "server.h"

typedef struct hd_s hd_t;

typedef struct {
    server_t *srv;
    const httpin_conf_t *c;
    struct MHD_Daemon *d;
    pthread_mutex_t rate_mu;
    struct hi_rate_slot_s *rate;
    _Atomic uint64_t requests, messages, refused;
    char *tls_cert, *tls_key; /* PEM text for MHD (HTTPS), or NULL */
    /* the downlink (httpin_down.c) */
    pthread_mutex_t mu; /* the fields below, and every hd_t's shared part */
    hd_t *open;         /* requests that may be suspended */
    int stopped;        /* MHD is stopping: resume nothing any more */
    _Atomic uint64_t polls, streams, delivered, takeovers;
} httpin_t;

/* One request being received. */
typedef struct {
    char *body;
    size_t len, cap;
    int too_big;
    hd_t *hd; /* a downlink request (GET .../messages, .../events) */
} httpin_req_t;

/* WM_HTTPIN items: inbox_item_t.flags says which (0: a publish job). */
enum { HI_OP_JOB = 0, HI_OP_ATTACH, HI_OP_FLUSH, HI_OP_DETACH };

/* httpin.c */
enum MHD_Result httpin_send_error(struct MHD_Connection *conn, unsigned status, const char *code,
                                  const char *field, const char *text);
void httpin_peer(struct MHD_Connection *conn, char *peer, size_t size);
int httpin_device_auth(httpin_t *h, struct MHD_Connection *conn, const char *id,
                       auth_client_t **acp, enum MHD_Result *ret);

/* httpin_down.c (MHD threads) */
enum MHD_Result httpin_down_get(httpin_t *h, struct MHD_Connection *conn, const char *id, int sse,
                                httpin_req_t *rq);
void httpin_down_completed(httpin_t *h, httpin_req_t *rq);
void httpin_down_stop(httpin_t *h); /* before MHD_stop_daemon */
/* httpin_down.c (the home worker) */
void httpin_down_run(worker_t *w, inbox_item_t *it);
void httpin_down_drop(inbox_item_t *it);

#endif
