/* api.h -- the management HTTP API (docs/api.md): REST under /api/v1,
 * /health, /metrics, the dashboard's files.
 *
 * libmicrohttpd runs it on its own threads (a pool of two with epoll);
 * started after the workers by server_start and stopped first by
 * server_stop.  It reads counters atomically and gets everything owned by
 * the workers through jobs posted to their inboxes (api_snap.h), so an API
 * request never holds a lock the workers need and never blocks them.
 */
#ifndef ANTENNA_API_H
#define ANTENNA_API_H

#include "server.h"

typedef struct api_s api_t;

/* Start the API listener when api.enabled (srv->api stays NULL when not).
 * Returns 0, or -1 (logged: bind failure, bad TLS files, bad keys file). */
int api_start(server_t *srv);
/* Stop the listener and wait for requests in progress; idempotent. */
void api_stop(server_t *srv);
/* SIGHUP (main thread): re-read the keys and users files.  0 or -1 (logged,
 * the old credentials stay). */
int api_reload(server_t *srv);
/* The port the API listens on (0 when not running). */
uint16_t api_port(const server_t *srv);

/* Prometheus text exposition of the broker's figures (api_metrics.c):
 * a malloc'd string, *len its length. */
char *api_metrics_text(server_t *srv, size_t *len);

#endif
