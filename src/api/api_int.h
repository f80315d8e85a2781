/* api_int.h -- inside the management API: one request as the handlers see
 * it, the response helpers (api_http.c) and the router (api_routes.c).
 * API threads only.
 */
#ifndef ANTENNA_API_INT_H
#define ANTENNA_API_INT_H

#include <jansson.h>
#include <microhttpd.h>
#include <stddef.h>

#include "api.h"

typedef struct {
    api_t *api;
    server_t *srv;
    struct MHD_Connection *conn;
    const char *method;
    const char *url;  /* path, percent-decoded by MHD */
    const char *body; /* NUL terminated, or NULL */
    size_t body_len;
} api_req_t;

enum MHD_Result api_route(api_req_t *r);

/* The broker's figures: sums of the per-worker counters (read atomically,
 * each has one writer), the trie's and the retained tree's counts. */
typedef struct {
    uint64_t connected, conn_exts, connections_total, refused_limit, refused_rate, refused_memory;
    uint64_t refused_fd_limit, refused_door;
    uint64_t msgs_received, msgs_sent, msgs_dropped, dropped_queue_full;
    uint64_t msgs_in_qos[3], msgs_out_qos[3];
    uint64_t bytes_received, bytes_sent;
    uint64_t pkts_in[STAT_PKT_TYPES], pkts_out[STAT_PKT_TYPES];
    uint64_t sessions, inflight, queued, subscriptions, retained;
    uint64_t throttled, slow_disconnects, congested, backpressure_pauses, migrations,
        migrate_handed, consol_changes, fence_held, fence_handed, route_holds, route_hold_timeouts;
    uint64_t auth_success, auth_failure, auth_banned;
    uint64_t acl_denied, takeovers_other_user;
} api_totals_t;
void api_totals(server_t *srv, api_totals_t *t);
/* "connect", "publish"... for an MQTT packet type 1..15. */
const char *api_packet_name(int type);

/* Responses: the JSON is consumed (decref'd); text is malloc'd and freed by
 * MHD.  An error is {"error": text, "code": code, "field": field?}; for 405
 * `field` is the Allow header's value instead. */
enum MHD_Result api_send_json(struct MHD_Connection *c, unsigned status, json_t *j);
enum MHD_Result api_send_text(struct MHD_Connection *c, unsigned status, const char *type,
                              char *text, size_t len);
enum MHD_Result api_send_empty(struct MHD_Connection *c, unsigned status);
enum MHD_Result api_send_error(struct MHD_Connection *c, unsigned status, const char *code,
                               const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#endif
