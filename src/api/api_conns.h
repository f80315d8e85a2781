/* api_conns.h -- the management API's open connections: request deadlines
 * and eviction, against clients that hold connections open (slowloris).
 *
 * libmicrohttpd closes a connection after an idle timeout, but a client
 * that sends one byte of its header every few seconds is never idle, and
 * once the connection limit is reached nobody else gets in, not even a
 * health probe.  So every connection has a deadline: a whole request
 * (headers and body) must arrive within request_timeout_s of the accept or
 * of the previous answer.  A reaper thread closes the connections past it
 * (shutdown(2): libmicrohttpd sees the end of the stream and cleans up),
 * and a connection accepted beyond max_connections closes the oldest one
 * still waiting for its request, so a new client always gets a slot.
 *
 * The table is fed by MHD's connection notifications (its threads) and by
 * the request handlers; one mutex guards it.  A slot is freed by MHD's
 * "closed" notification, which comes before MHD closes the socket, so a
 * descriptor in the table is always open; the peer address is checked
 * again before a shutdown all the same.
 */
#ifndef ANTENNA_API_CONNS_H
#define ANTENNA_API_CONNS_H

#include <microhttpd.h>
#include <stdint.h>

typedef struct api_conns api_conns_t;

/* A table for max connections (eviction beyond it) and up to cap tracked
 * (MHD's own hard limit), with a per-request deadline of timeout_s. */
api_conns_t *api_conns_new(uint32_t max, uint32_t cap, uint32_t timeout_s);
/* Start the reaper thread: 0, or -1 (errno). */
int api_conns_start(api_conns_t *t);
/* Stop the reaper (before MHD_stop_daemon), then free after MHD stopped. */
void api_conns_stop(api_conns_t *t);
void api_conns_free(api_conns_t *t);

/* MHD_OPTION_NOTIFY_CONNECTION's callback (cls = the table). */
void api_conns_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                      enum MHD_ConnectionNotificationCode code);
/* A request is complete and being answered: no deadline until answered. */
void api_conns_answering(api_conns_t *t, struct MHD_Connection *c, uint32_t answer_ms);
/* Its answer went out: the next request is due within the timeout. */
void api_conns_waiting(api_conns_t *t, struct MHD_Connection *c);

#endif
