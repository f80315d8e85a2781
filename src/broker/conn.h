/* conn.h -- one client connection: socket, framer, output, keepalive.
 *
 * Owned by one worker (see server.h).  An idle connection holds no I/O
 * buffer: input is read into the worker's scratch buffer and parsed in
 * place; only a packet split across reads is kept (by the framer, sized to
 * that packet).  Output is appended to a buffer taken when there is
 * something to send (a chunk of the worker's turn arena) and given back
 * once the socket took it all; writes are batched: one write per
 * connection per loop turn, and only what the socket refused outlives the
 * turn (copied to a buffer of the connection's own).
 *
 * The socket is a watcher (ev.h) in its worker's loop: conn_watch puts it
 * there (accept, hand-off, the end of an authentication hold), conn.c asks
 * for EV_WRITE while the socket refuses output, conn_unwatch takes it out.
 *
 * Bytes travel through the connection's transport (transport.h): plain
 * TCP, or a stack (tls, ws, ws over tls) kept in conn_ext_t.  conn.c calls
 * the table only; it never asks which layers are below.
 *
 * Closing is two-step: conn_close() stops the watcher, shuts the socket and
 * marks the struct dead; the worker frees it at the end of the loop turn
 * (the turn's flush list may still hold it).  The socket itself closes
 * gracefully (net_linger.h): the last bytes, a FIN, then the client's input
 * is drained for a bounded time, so a reason code is not destroyed by a
 * reset.
 */
#ifndef ANTENNA_CONN_H
#define ANTENNA_CONN_H

#include <netinet/in.h>
#include <stdint.h>

#include "endpoint.h"
#include "mqtt_codec.h"
#include "server.h"
#include "transport.h"
#include "tw.h"

enum {
    CONN_NEW = 0, /* waiting for CONNECT */
    CONN_ACTIVE,  /* CONNACK sent, session attached */
    CONN_DEAD,    /* closed, freed at the end of the loop turn */
    CONN_MOVING,  /* handed to its home worker (at CONNECT, or with its session:
                    * migrate.h), in no worker's loop until adopted */
    CONN_AUTH     /* CONNECT read, authentication holds it: not polled, the
                    * CONNECT bytes kept in x->auth (auth_chain.h) */
};

/* Field order packs the struct (184 bytes, see the _Static_assert in
 * conn.c): the watcher, the small fields (state, list marks and the
 * peer's family in one byte), then the pointers.  What only
 * some connections use (a will, TLS or WebSocket, rate limits, topic
 * aliases, authentication) is in conn_ext_t. */
struct conn_s {
    ev_watcher_t ev;         /* the socket (ev.fd, -1 once closed) in w's loop */
    uint8_t state : 3;       /* CONN_* */
    uint8_t in_list : 1;     /* on the worker's flush list or dead list */
    uint8_t want_out : 1;    /* EV_WRITE asked */
    uint8_t peer_family : 2; /* CONN_PEER_*: conn_peer_family() */
    uint8_t proto;           /* MQTT_PROTO_*, 0 before CONNECT */
    uint8_t listener;
    uint8_t flags;         /* CONN_F_* */
    uint16_t keepalive;    /* seconds, 0 = none */
    uint16_t peer_port;    /* host order */
    uint8_t peer_addr[16]; /* network order; IPv4 in the first 4 bytes: the
                            * peer in 19 bytes and 2 bits where a
                            * sockaddr_in6 takes 28 */
    uint32_t olen, ooff, ocap;
    uint32_t last_rx; /* ms, the low 32 bits of w->now: compared by
                       * difference, never older than 1.5 x 65535 s */
    worker_t *w;
    sess_t *sess;
    conn_t *next, *prev;  /* worker's list of connections */
    conn_t *turn_next;    /* flush list, or dead list once closed */
    struct conn_ext_s *x; /* rarely needed state, allocated on demand */
    uint8_t *obuf;
    endpoint_t ep; /* what its session writes to (ep_mqtt.c): the
                           * client's Maximum Packet Size and Receive Maximum */
    mqtt_parser_t ps;
    tw_timer_t timer; /* CONNECT timeout, then keepalive */
};

enum {
    CONN_F_PROBLEM_INFO = 1, /* MQTT 5 Request Problem Information (default 1) */
    CONN_F_THROTTLED = 2,    /* reads paused by a rate limit */
    CONN_F_OUT_FULL = 4,     /* output over its limit since x->out_full_since */
    CONN_F_HANDSHAKE = 8,    /* the transport's handshake in progress (TLS) */
    CONN_F_PROXY = 16,       /* waiting for the PROXY protocol header */
    CONN_F_PAUSED = 32,      /* reads paused: another worker's inbox is full */
    CONN_F_UPGRADE = 64,     /* the transport is not up yet (a WebSocket upgrade) */
    CONN_F_ROUTE_WAIT = 128  /* a SUBACK waits for the cluster's routes: no reads,
                              * output held (conn_route_hold) */
};

/* State few connections need, allocated on first use and freed with the
 * connection: a will, rate-limit windows, slow-subscriber tracking, MQTT 5
 * topic aliases.  State every connection of a cluster node needs for a
 * moment (the connect gate's parked CONNECT, the route barrier's held
 * SUBACK) gives it back when that moment is over and it holds nothing else
 * (conn_ext_trim): 176 bytes a device otherwise. */
typedef struct conn_ext_s {
    uint64_t rl_window;      /* second (ms / 1000) the counters below cover */
    uint32_t rl_msgs;        /* PUBLISH read in that second */
    uint32_t rl_bytes;       /* bytes read in that second */
    uint64_t out_full_since; /* ms; output refused by the socket since */
    uint8_t *pending;        /* bytes read but not handled while throttled */
    uint32_t npending;
    mqtt_str_t *alias_in;   /* client -> broker aliases, [topic_alias_max] */
    uint16_t nalias_in;     /* slots allocated in alias_in */
    uint16_t nalias_out;    /* broker -> client aliases assigned so far */
    uint16_t alias_out_max; /* the client's Topic Alias Maximum */
    mqtt_str_t *alias_out;  /* topic of alias i + 1 (owned copies) */
    msg_t *will;            /* its will, from CONNECT until it is published,
                              * handed to the session or dropped */
    uint32_t will_delay;    /* seconds (MQTT 5 Will Delay Interval) */
    uint64_t paused_until;  /* ms, with CONN_F_PAUSED */
    uint64_t route_ticket;  /* with CONN_F_ROUTE_WAIT: the barrier to pass */
    uint64_t route_until;   /* with CONN_F_ROUTE_WAIT: ms, released anyway then */
    transport_t *tp;        /* the transport stack (tls, ws, ws over tls), for
                              * life; NULL: plain TCP (tp_tcp()) */
    uint8_t *proxy_buf;     /* PROXY header bytes consumed so far */
    uint32_t nproxy;
    char *cert_user;                   /* username from the client certificate (listener
                              * cert_username), set at CONNECT */
    uint32_t held_acks;                /* acknowledgements waiting for a store commit */
    struct auth_client *auth;          /* user, rules, ACL cache, a pending answer */
    const struct msg_origin_s *origin; /* provenance of its messages (msg.h), made
                              * at its will or first PUBLISH (proto.c) */
    struct proto_gate_s *gate;         /* a connect gate parks its CONNECT (proto.h) */
} conn_ext_t;

conn_ext_t *conn_ext(conn_t *c);
/* Free c's conn_ext_t when it holds nothing: no flag that reads it, every
 * pointer NULL, no count, the rate-limit window of an earlier second.  The
 * end of a PROXY header, the connect gate's answer and the route barrier's
 * release call it (on c's worker, with no conn_ext_t pointer held across). */
void conn_ext_trim(conn_t *c);

/* Arm the connection timer for its earliest deadline: keepalive, the end of
 * a read throttle, the slow-subscriber limit. */
void conn_arm_timer(conn_t *c);
/* Stop reading the connection until `until` (ms): back-pressure. */
void conn_pause(conn_t *c, uint64_t until);
/* The same without a system call: the poller's interest is dropped only if
 * the socket becomes readable before `until` (back-pressure on publishers,
 * most of which have nothing more to send by then). */
void conn_hold_reads(conn_t *c, uint64_t until);
/* The route barrier (a cluster: route_owner_kind_t.sub_barrier): hold
 * c's output (its SUBACK) and its reads until conn_routes_done(w, t) with
 * t >= ticket, or for wait_ms at most.  Other output queues behind it. */
void conn_route_hold(conn_t *c, uint64_t ticket, uint32_t wait_ms);
void conn_routes_done(worker_t *w, uint64_t done);
/* Count a PUBLISH of `bytes` against the client's rate limits; pauses reads
 * until the next second when over. */
void conn_count_publish(conn_t *c, size_t bytes);

/* A connection moving to its home worker with the bytes read so far:
 * the CONNECT packet, then whatever followed it. */
typedef struct {
    conn_t *c;
    uint8_t hdr;
    uint32_t connect_len;
    uint32_t rest_len;
    uint8_t data[];
} handoff_t;

/* Moving an active connection to another worker (migrate.h): can it leave
 * now (between packets, nothing held, nothing unsent)?  Out of its worker
 * (timer, loop, list; state CONN_MOVING), then into w's (active again,
 * watched, its keepalive armed; closed if the socket cannot be watched). */
int conn_movable(const conn_t *c);
void conn_move_out(conn_t *c);
void conn_move_in(worker_t *w, conn_t *c);

/* The worker's list of connections (for shutdown): add c as owned by w,
 * remove c from its worker's list. */
void conn_link(worker_t *w, conn_t *c);
void conn_unlink(conn_t *c);
/* Create a connection for an accepted socket (non-blocking already).  On a
 * TLS or PROXY listener the connection starts with its preamble (the PROXY
 * header, then the TLS handshake); returns NULL when the TLS state cannot
 * be allocated (nothing to free but the socket). */
conn_t *conn_new(worker_t *w, int fd, const struct sockaddr *sa, uint8_t listener);
/* Put c's socket in its worker's loop, reads wanted.  Returns 0, or -1
 * (errno). */
int conn_watch(conn_t *c);
/* Take it out (hand-off, authentication hold); no event reaches c after. */
void conn_unwatch(conn_t *c);
/* Socket readable: read once (bounded), parse and dispatch every packet. */
void conn_on_readable(conn_t *c);
/* Socket writable: continue the pending write. */
void conn_on_writable(conn_t *c);
/* Feed bytes already read (a handoff's rest) through the parser. */
void conn_input(conn_t *c, const uint8_t *data, size_t n);
/* Append bytes to the output; returns a pointer to `n` reserved bytes to
 * fill, or NULL when the output is over its limit and the bytes are
 * dropped (the caller counts the drop). `force` ignores the limit. */
uint8_t *conn_reserve(conn_t *c, size_t n, int force);
/* Encode and queue a PUBLISH.  Returns 0, or -1 when a QoS 0 message was
 * dropped because the output is over its limit (QoS 1/2 are never dropped
 * here: the inflight window bounds them; nor are messages sent with the
 * retain flag: the retained set a subscription asks for arrives whole). */
int conn_send_publish(conn_t *c, const msg_t *m, uint8_t qos, uint8_t retain, uint8_t dup,
                      uint16_t pid, const uint32_t *subids, uint32_t nsubids);
/* Queue a 4-byte acknowledgement (PUBACK, PUBREC, PUBREL, PUBCOMP,
 * UNSUBACK). */
void conn_send_ack(conn_t *c, uint8_t type, uint16_t pid);
/* Write what is pending (end of the loop turn). */
void conn_flush(conn_t *c);
/* Close: log `why` (NULL = silent), publish the will when asked, detach the
 * session, mark dead.  Idempotent. */
void conn_close(conn_t *c, const char *why, int publish_will);
/* The same, after sending an MQTT 5 client a DISCONNECT with reason code
 * rc (MQTT 3.1.1 has no server DISCONNECT: it is just closed). */
void conn_close_reason(conn_t *c, const char *why, int publish_will, uint8_t rc);
/* A take-over, before the close: the connection's will with a Will Delay
 * Interval goes into its session (a persistent one), as a will delayed
 * there; the session's next connection cancels it (sess_attach), its end
 * publishes it (a clean start, or the old node's tombstone: cl_move.c). */
void conn_will_to_session(conn_t *c);
/* The same for a client's DISCONNECT with reason code rc (0 for MQTT 3.1.1):
 * the client_disconnected event says the client ended it. */
void conn_close_by_client(conn_t *c, const char *why, int publish_will, uint8_t rc);
/* Fill an event's client (event.h) from c; peer is written to buf. */
void conn_event_client(const conn_t *c, event_client_t *out, char *buf, size_t size);
/* Free a dead connection (worker, end of turn). */
void conn_free(conn_t *c);
/* "address:port" ("[v6]:port"). */
const char *conn_peer(const conn_t *c, char *buf, size_t size);
/* A log line about c: its client id and peer become JSON fields. */
void conn_log(const conn_t *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The log fields of c (log.h): client id (the session's, else the one its
 * CONNECT named, kept by auth), username, peer (written to buf), listener. */
struct log_fields;
void conn_log_fields(const conn_t *c, struct log_fields *f, char *buf, size_t size);
/* A line about c with its fields, event and reason (docs/logging.md). */
void conn_log_ev(const conn_t *c, int level, const char *event, const char *reason, const char *fmt,
                 ...) __attribute__((format(printf, 5, 6)));
/* "client-id@address:port", or "address:port" before CONNECT. */
const char *conn_name(const conn_t *c, char *buf, size_t size);

/* Keepalive / connect-timeout timer callback. */
void conn_on_timer(tw_timer_t *t);

/* Count a packet of MQTT type `type` queued for sending (metrics). */
#define conn_count_out(c, type) STAT_ADD((c)->w->stats.pkts_out[(type)&15], 1)

/* The peer's address family as conn_t keeps it in two bits. */
enum { CONN_PEER_NONE = 0, CONN_PEER_V4, CONN_PEER_V6 };

/* The peer's address family: AF_INET, AF_INET6, or AF_UNSPEC (another
 * kind of socket: no address). */
static inline uint8_t conn_peer_family(const conn_t *c)
{
    return c->peer_family == CONN_PEER_V4   ? AF_INET
           : c->peer_family == CONN_PEER_V6 ? AF_INET6
                                            : AF_UNSPEC;
}

static inline void conn_set_peer_family(conn_t *c, int family)
{
    c->peer_family = family == AF_INET    ? CONN_PEER_V4
                     : family == AF_INET6 ? CONN_PEER_V6
                                          : CONN_PEER_NONE;
}

/* Pending output bytes. */
static inline uint32_t conn_out_pending(const conn_t *c)
{
    return c->olen - c->ooff;
}

/* The connection's transport: its stack, or the shared plain TCP one. */
static inline transport_t *conn_transport(const conn_t *c)
{
    return c->x && c->x->tp ? c->x->tp : tp_tcp();
}

#endif
