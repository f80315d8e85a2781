/* httpin.h -- the device-facing HTTP ingest listener (section http_ingest).
 *
 * A module (module.h): devices that cannot speak MQTT POST messages to
 * /devices/{id}/messages on a listener of their own, separate from the
 * management API, and GET a long poll (/devices/{id}/messages) or an event
 * stream (/devices/{id}/events) of what their session receives
 * (httpin_down.c).  See httpin.c for the design and docs/http-ingest.md for
 * the contract.
 */
#ifndef ANTENNA_HTTPIN_H
#define ANTENNA_HTTPIN_H

#include <stdint.h>

#include "module.h"

#define HTTPIN_MAX_SUBS 8

typedef struct httpin_conf_s {
    uint8_t enabled;
    char bind[64];
    uint32_t port;
    uint32_t max_body;        /* bytes of one request's body (413 above) */
    uint32_t max_messages;    /* messages in one batch (413 above) */
    uint32_t rate;            /* messages per second per device (429), 0 = no limit */
    uint32_t max_connections; /* open HTTP connections */
    uint32_t timeout_ms;      /* wait for the worker that routes the messages */
    uint32_t idle_timeout_s;  /* an idle keep-alive connection is closed */
    /* the downlink (httpin_down.c) */
    uint32_t max_wait_ms;             /* a long poll's ?wait= is capped at this */
    uint32_t heartbeat_ms;            /* an event stream's comment line */
    uint32_t session_expiry;          /* seconds the device's session outlives a poll */
    uint32_t nsubs;                   /* the session's subscriptions */
    char subs[HTTPIN_MAX_SUBS][256];  /* "{id}": the device id */
    char tls_cert[256], tls_key[256]; /* PEM files: HTTPS when both are set */
} httpin_conf_t;

extern const module_t httpin_module;

#endif
