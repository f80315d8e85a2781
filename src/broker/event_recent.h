/* event_recent.h -- the recent events of each client, for the dashboard's
 * client view and GET /api/v1/clients/{id}/events (event_recent.c). */
#ifndef ANTENNA_EVENT_RECENT_H
#define ANTENNA_EVENT_RECENT_H

#include <stddef.h>
#include <stdint.h>

#include "server.h"

#define EVENT_RECENT_TEXT 160 /* bytes of an event's detail, NUL included */
#define EVENT_RECENT_MAX 64   /* events answered for one client */

/* One event of one client, as answered. */
typedef struct {
    uint64_t at_ms;   /* wall clock, ms since the epoch (a coalesced drop: the first) */
    uint64_t last_ms; /* the last of `count` coalesced drops (else at_ms) */
    uint64_t seq;     /* order among the events of one worker (same ms) */
    uint32_t count;   /* 1, or the drops of one reason coalesced into this one */
    uint8_t kind;     /* event_kind_t */
    uint8_t code;     /* a reason code (disconnected, auth_failed), a QoS (subscribed) */
    char detail[EVENT_RECENT_TEXT]; /* "keepalive timeout", a filter, ... */
} event_recent_t;

/* The module (module.h): listens at init, before the workers start. */
extern const struct module_s event_recent_module;

/* Copy the recent events of client `id` (len bytes) into out[0..max),
 * newest first; returns how many.  Any thread (the API's): each worker's
 * ring is copied under its mutex, held for a scan of the ring.  0 when the
 * module is not running. */
size_t event_recent_get(server_t *srv, const char *id, size_t len, event_recent_t *out, size_t max);

#endif
