/* event.h -- the registry of broker events.
 *
 * Connections, sessions and messages go through a few moments that other
 * modules want to see: a client connected, a message was delivered, a
 * message was dropped and why.  Each such moment is an event kind with one
 * data struct; a module registers a handler per kind, with a user pointer,
 * and the broker calls it where the event happens.
 *
 * Rules:
 * - Handlers are registered at start-up, before the workers run
 *   (event_listen before server_start, which calls event_freeze); the
 *   registry is read-only afterwards, so emitting takes no lock.
 * - An event is dispatched synchronously, on the worker thread where it
 *   happens (the home worker of the client's session, or the accepting
 *   worker for a refused CONNECT), to every handler of its kind in
 *   registration order.  A handler must not block and must not keep the
 *   pointers of the data struct past its return: they point into the
 *   broker's own state (client ids, topics, the message) and into the
 *   emitter's stack.  It may take a reference to the message (msg_ref).
 * - A kind nobody listens to costs one predictable branch where it would
 *   be emitted: the emit site tests event_wanted(srv, EVENT_X), a bit of
 *   srv->events.wanted, before it builds the data struct.
 *
 * Where each kind is emitted, and the choices made (which sends count as
 * delivered, when QoS 2 counts as acknowledged), is in docs/architecture.md
 * ("Events").  src/broker/event_log.c is the built-in listener (events.log).
 */
#ifndef ANTENNA_EVENT_H
#define ANTENNA_EVENT_H

#include <stdint.h>

#include "auth_cause.h"
#include "msg.h"

struct worker_s;

typedef enum {
    EVENT_CLIENT_CONNECTED = 0, /* event_connected_t */
    EVENT_CLIENT_DISCONNECTED,  /* event_disconnected_t */
    EVENT_AUTH_FAILED,          /* event_auth_failed_t */
    EVENT_SUBSCRIBED,           /* event_subscribed_t */
    EVENT_UNSUBSCRIBED,         /* event_unsubscribed_t */
    EVENT_MESSAGE_PUBLISHED,    /* event_published_t */
    EVENT_MESSAGE_DELIVERED,    /* event_delivered_t */
    EVENT_MESSAGE_ACKED,        /* event_acked_t */
    EVENT_MESSAGE_DROPPED,      /* event_dropped_t */
    EVENT_SESSION_CREATED,      /* event_session_created_t */
    EVENT_SESSION_EXPIRED,      /* event_session_expired_t */
    EVENT_SESSION_TAKEN_OVER,   /* event_taken_over_t */
    EVENT_COMMAND_STATUS,       /* event_command_status_t (src/commands) */
    EVENT_DEVICE_PRESENCE,      /* event_device_presence_t (src/devices) */
    EVENT_COUNT
} event_kind_t;

/* The client an event is about.  Pointers are NULL when unknown: the client
 * id before a CONNECT named one, the peer and listener of an offline
 * session, the username of a client without one. */
typedef struct {
    const char *client_id; /* NUL terminated */
    const char *username;  /* the user the ACL knows (%u) */
    const char *peer;      /* "address:port" or "[v6]:port" */
    const char *listener;  /* the listener's name */
    uint8_t proto;         /* MQTT_PROTO_V31/V311/V5, 0 when unknown */
} event_client_t;

typedef struct {
    event_client_t client;
    uint32_t session_expiry; /* seconds, UINT32_MAX never */
    uint16_t keepalive;      /* granted */
    uint8_t clean_start;
    uint8_t session_present;
} event_connected_t;

typedef struct {
    event_client_t client;
    const char *reason;  /* the log line's text: "connection closed by peer", ... */
    uint8_t reason_code; /* the DISCONNECT's reason code (sent by the client when
                          * by_client, else sent or due to an MQTT 5 client by the
                          * broker); 0x80 when the connection just ended */
    uint8_t by_client;   /* the client sent DISCONNECT */
} event_disconnected_t;

typedef struct {
    event_client_t client; /* client_id may be NULL (refused before it was read) */
    const char *reason;    /* the log line's text */
    auth_cause_t cause;    /* auth_cause.h: the same causes the backends give */
    uint8_t reason_code;   /* the MQTT 5 CONNACK/DISCONNECT reason code */
} event_auth_failed_t;

typedef struct {
    event_client_t client;
    const uint8_t *filter; /* as subscribed, "$share/g/f" included; not NUL terminated */
    uint16_t filter_len;
    uint8_t qos;              /* granted */
    uint8_t options;          /* the options byte (QoS bits are the granted QoS) */
    uint8_t is_new;           /* 0: replaced the options of an existing subscription */
    uint32_t subscription_id; /* MQTT 5, 0 = none */
} event_subscribed_t;

typedef struct {
    event_client_t client;
    const uint8_t *filter;
    uint16_t filter_len;
} event_unsubscribed_t;

typedef struct {
    event_client_t client; /* the publisher */
    const msg_t *msg;      /* topic, payload, QoS, retain */
    uint16_t packet_id;    /* 0 for QoS 0 */
    uint32_t receivers;    /* sessions it went to (0: no subscribers) */
} event_published_t;

typedef struct {
    event_client_t client; /* the subscriber */
    const msg_t *msg;
    uint16_t packet_id; /* 0 for QoS 0 */
    uint8_t qos;        /* as sent: min(message, subscription) */
    uint8_t retain;     /* sent with the retain flag */
} event_delivered_t;

typedef struct {
    event_client_t client; /* the subscriber */
    const msg_t *msg;
    uint16_t packet_id;
    uint8_t qos;
    uint8_t packet_type; /* MQTT_PUBACK (QoS 1) or MQTT_PUBREC (QoS 2) */
    uint8_t reason_code; /* MQTT 5: >= 0x80 the subscriber refused it */
} event_acked_t;

typedef enum {
    EVENT_DROP_QUEUE_FULL = 0,  /* the session's queue is full (limits.max_queued*) */
    EVENT_DROP_EXPIRED,         /* its Message Expiry Interval passed */
    EVENT_DROP_ACL_DENIED,      /* the subscriber may not read it (at delivery) */
    EVENT_DROP_NO_SUBSCRIBERS,  /* a client's PUBLISH that matched nobody */
    EVENT_DROP_QOS0_SLOW,       /* QoS 0 to a subscriber whose output is full
                                * (limits.max_output_buffer, memory high water) */
    EVENT_DROP_QOS0_OFFLINE,    /* QoS 0 to an offline session */
    EVENT_DROP_TOO_LARGE,       /* over the subscriber's Maximum Packet Size */
    EVENT_DROP_PUBLISH_DENIED,  /* a client's PUBLISH refused by the ACL, or to $SYS */
    EVENT_DROP_PUBLISH_REFUSED, /* a client's PUBLISH refused: a subscriber's queue
                                * is full (queue_full: refuse), limits.max_retained */
    EVENT_DROP_STORE_FAILED,    /* its store commit failed before it was routed */
    EVENT_DROP_REASONS
} event_drop_reason_t;

typedef struct {
    event_client_t client; /* the subscriber; the publisher for NO_SUBSCRIBERS,
                            * PUBLISH_DENIED, PUBLISH_REFUSED; nobody (all NULL)
                            * for STORE_FAILED */
    const msg_t *msg;      /* NULL for PUBLISH_DENIED (never built) */
    const uint8_t *topic;  /* the topic, also when msg is NULL */
    uint16_t topic_len;
    uint8_t qos; /* the QoS it would have had */
    event_drop_reason_t reason;
} event_dropped_t;

typedef struct {
    event_client_t client;
    uint32_t session_expiry; /* seconds, UINT32_MAX never, 0 with the connection */
} event_session_created_t;

typedef struct {
    event_client_t client; /* client_id only: the session is offline */
} event_session_expired_t;

typedef struct {
    event_client_t client; /* the new connection */
    const char *old_peer;  /* the connection it replaced */
    uint8_t resumed;       /* 1: the session lives on; 0: it is discarded */
} event_taken_over_t;

/* A downlink command changed status (src/commands): emitted on the
 * device's home worker, or on the worker that took the device's reply. */
typedef struct {
    event_client_t client;  /* the device: client_id only */
    const char *command_id; /* "c1f" */
    const char *name;       /* the command's name */
    const char *status;     /* "queued", "sent", ... "cancelled" (docs/commands.md) */
    const char *json;       /* the command as JSON text {"id", "name", "status", "result", ...} */
} event_command_status_t;

/* A device of the registry became connected (its first connection) or
 * disconnected (its last one ended): emitted by src/devices on the worker
 * of the connection, after the presence changed. */
typedef struct {
    event_client_t client; /* the connection's (client_id, username, peer, ...) */
    const char *device;    /* the device id */
    const char *node;      /* this node's name (cluster.node, else antenna@host) */
    const char *json;      /* {"device","connected","peer","protocol","listener","node","at_ms"} */
    uint64_t at_ms;        /* wall clock */
    uint8_t connected;
} event_device_presence_t;

/* A handler: `data` points to the struct of `kind` (above). */
typedef void (*event_fn)(struct worker_s *w, event_kind_t kind, const void *data, void *user);

#define EVENT_MAX_HANDLERS 8 /* per kind */

typedef struct {
    event_fn fn;
    void *user;
} event_handler_t;

typedef struct event_bus {
    uint32_t wanted;                /* bit per kind: it has handlers (read at every emit site) */
    uint32_t all_msgs;              /* bit per kind: a handler wants every message (event_listen) */
    uint8_t msg_flags[EVENT_COUNT]; /* kinds whose handlers all came through
                                     * event_listen_msgs: the msg_t.flags they want */
    uint32_t drops; /* bit per event_drop_reason_t some message_dropped handler wants */
    uint8_t frozen; /* the workers run: no more registration */
    uint8_t n[EVENT_COUNT];
    event_handler_t h[EVENT_COUNT][EVENT_MAX_HANDLERS];
} event_bus_t;

_Static_assert(EVENT_COUNT <= 32, "event_bus_t.wanted has a bit per kind");
_Static_assert(EVENT_DROP_REASONS <= 32, "event_bus_t.drops has a bit per reason");

/* Register fn for kind.  Returns 0, or -1 when the bus is frozen, the kind
 * unknown or EVENT_MAX_HANDLERS are registered (a start-up error). */
int event_listen(event_bus_t *b, event_kind_t kind, event_fn fn, void *user);
/* The same for the message events (published, delivered, acked) when fn
 * wants only messages flagged with a bit of msg_flags (msg_t.flags,
 * MSG_F_*): their emit sites test event_wanted_msg(), so the other messages
 * cost one more test and no event.  fn may still see other messages when
 * another handler of the kind wants them all: it checks the flags itself. */
int event_listen_msgs(event_bus_t *b, event_kind_t kind, uint8_t msg_flags, event_fn fn,
                      void *user);
/* Register fn for message_dropped of the reasons in `reasons` only (bit
 * per event_drop_reason_t): an emit site on a hot path (no_subscribers: a
 * PUBLISH nobody subscribes to) tests event_drop_wanted and skips a reason
 * nobody asked for.  fn may still see other reasons (filter them);
 * event_listen for message_dropped wants them all. */
int event_listen_drops(event_bus_t *b, uint32_t reasons, event_fn fn, void *user);
/* No more registration (server_start, before the workers start). */
void event_freeze(event_bus_t *b);

/* 1 when somebody listens to kind: the one test an emit site makes before
 * it builds the data struct. */
static inline int event_listened(const event_bus_t *b, event_kind_t kind)
{
    return __builtin_expect((b->wanted >> kind) & 1u, 0);
}
#define event_wanted(srv, kind) event_listened(&(srv)->events, (kind))
/* event_wanted for an event about message m (event_listen_msgs). */
static inline int event_listened_msg(const event_bus_t *b, event_kind_t kind, const msg_t *m)
{
    if (__builtin_expect(!((b->wanted >> kind) & 1u), 1))
        return 0;
    return ((b->all_msgs >> kind) & 1u) || (m && (m->flags & b->msg_flags[kind]));
}
#define event_wanted_msg(srv, kind, m) event_listened_msg(&(srv)->events, (kind), (m))
/* 1 when a message_dropped handler wants drops of reason r. */
#define event_drop_wanted(srv, r)                                                                  \
    (event_wanted((srv), EVENT_MESSAGE_DROPPED) && (((srv)->events.drops >> (r)) & 1u))

/* Call every handler of kind with data, in registration order. */
void event_emit(struct worker_s *w, const event_bus_t *b, event_kind_t kind, const void *data);

/* "client_connected", ... (the names of events.log and of the JSON lines);
 * NULL for an unknown kind.  Parse: the kind, or -1. */
const char *event_name(event_kind_t kind);
int event_parse(const char *name);
const char *event_drop_reason_name(event_drop_reason_t r);
/* (an auth_failed cause has its name from auth_cause_name, auth_cause.h) */

#endif
