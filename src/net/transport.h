/* transport.h -- how a connection's bytes travel: tcp, tls, ws (and ws over
 * tls) behind one table of operations (prefix tp_).
 *
 * A transport is a layer: a struct that starts with a transport_t (its ops
 * and the layer it runs over, `lower`).  The protocol above (the MQTT
 * connection, src/broker/conn.c) holds the top of the stack and calls
 * through the table only: it never knows which layers are below.
 *   tcp   the socket itself: recv/send on the fd.  It has no state, so
 *         every plain TCP connection shares one const instance (tp_tcp())
 *         and costs no allocation; the table is reached through a pointer
 *         the connection already has (conn_ext_t) or this constant.
 *   tls   an SSL on the socket (net_tls.h): a handshake, then decryption
 *         into the caller's buffer and encryption on write.  OpenSSL does
 *         the socket I/O, so tls is a bottom layer too (lower = NULL).
 *   ws    WebSocket framing (net_ws.h) over tcp or tls (lower): the upgrade
 *         request, then binary frames whose payloads are the protocol's
 *         bytes; output becomes one binary message per write.  It holds
 *         output of its own (frames the socket did not take): pending().
 * Stacking: a layer calls its lower's ops with the same fd; each free()
 * frees its lower.  wss is ws(tls); a PROXY header (net_proxy.h) is read
 * by the connection before any layer starts.
 *
 * The hot path costs one indirect call per read or write; tcp reads into
 * the caller's buffer (the worker's scratch) and hands it back (no copy).
 * The fd argument is the socket of the connection's watcher; a layer that
 * has no use for it (tls, a datagram peer below) ignores it.
 *
 * A datagram transport (CoAP, MQTT-SN, DTLS over UDP) fits without
 * touching these: the table assumes neither an MQTT framer nor a socket
 * per client.  Its module owns one ev watcher (ev.h) on its UDP socket and
 * a table of peers keyed by address.  On readable it recvfrom()s each
 * datagram, finds or creates the peer, and either hands the datagram to
 * its own protocol code (CoAP has no MQTT connection: it reaches sessions
 * through a session endpoint) or, for a byte-stream protocol over
 * datagrams, queues it in the peer's transport: a transport_t whose read()
 * returns the queued datagram (r->data pointing into its own buffer, one
 * datagram per call), whose write() sendto()s the peer's address on the
 * shared socket (ignoring fd), whose shutdown() forgets the peer and whose
 * pending() holds what the socket refused.  Nothing in tcp, tls or ws
 * changes, and a ws or tls layer could even stack on it.
 *
 * Thread: a transport belongs to its connection's worker; it moves with the
 * connection (nothing in it refers to a worker).
 */
#ifndef ANTENNA_TRANSPORT_H
#define ANTENNA_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct transport_s transport_t;
typedef struct transport_ops_s transport_ops_t;

/* Results. */
enum {
    TP_OK = 0,         /* handshake done; read: see tp_read_t */
    TP_WANT_READ = 1,  /* handshake: call again when the socket is readable */
    TP_WANT_WRITE = 2, /* handshake: call again when it is writable */
    TP_CLOSED = -1,    /* read: the peer ended the stream (why set) */
    TP_ERROR = -2      /* failed (why set; write: errno) */
};

/* write() flags. */
#define TP_WRITE_LAST                                                                              \
    1u /* the last bytes before shutdown: take them all now,
                          * even when output of the layer's own waits */

/* One read: where to read (set by the caller), what it produced (set by
 * the layers).  Nothing in it needs initialising but buf and cap. */
typedef struct {
    uint8_t *buf; /* in: the bottom layer reads into buf, at most cap */
    size_t cap;
    const uint8_t *data; /* out: bytes for the layer above, in buf or the
                          * transport's own buffer, valid until the next call */
    size_t len;
    size_t wire;   /* out: bytes taken from below (counters, keepalive) */
    char why[256]; /* out, after TP_CLOSED or TP_ERROR: the reason */
} tp_read_t;

struct transport_ops_s {
    const char *name; /* "tcp", "tls", "ws" */
    /* Advance a handshake driven by socket readiness (TLS).  NULL: none.
     * TP_OK, TP_WANT_READ, TP_WANT_WRITE, or TP_ERROR with why. */
    int (*handshake)(transport_t *t, int fd, char *why, size_t whylen);
    /* Read what is there (a bounded amount: at most r->cap bytes from the
     * socket, into r->buf).  TP_OK with data, len and wire set (len may be
     * 0: nothing now, or bytes of an upgrade); TP_CLOSED or TP_ERROR with
     * why, after which data and len may still hold bytes to handle before
     * closing. */
    int (*read)(transport_t *t, int fd, tp_read_t *r);
    /* Write the layer's own pending output first, then take up to n bytes
     * of data (n may be 0: just flush).  Returns the bytes of data taken
     * (0: none now), or TP_ERROR (errno set). */
    ssize_t (*write)(transport_t *t, int fd, const uint8_t *data, size_t n, unsigned flags);
    /* Output the layer holds and has not written (NULL: never any). */
    size_t (*pending)(const transport_t *t);
    /* What the layer still waits for before it carries the protocol's
     * bytes ("TLS handshake", "WebSocket upgrade"), or NULL: it is up. */
    const char *(*waiting)(const transport_t *t);
    /* End the stream, best effort, never blocking: a WebSocket close
     * frame, a TLS close_notify.  The socket is closed by its owner. */
    void (*shutdown)(transport_t *t, int fd);
    /* Free the layer and those below it (NULL: nothing to free). */
    void (*free)(transport_t *t);
    /* A line for logs ("TLSv1.3 TLS_AES_256_GCM_SHA384"). */
    const char *(*describe)(const transport_t *t, char *buf, size_t size);
    /* The username the peer's verified certificate carries (kind:
     * CONF_CERT_USER_*): its length, or -1.  NULL: no certificates. */
    int (*peer_cert_name)(const transport_t *t, int kind, char *buf, size_t size);
};

struct transport_s {
    const transport_ops_t *ops;
    transport_t *lower; /* the layer this one runs over; NULL at the bottom */
};

/* Plain TCP: the shared, stateless bottom layer (net_tcp.c).  Constant:
 * its ops never write through the pointer. */
extern const transport_t tp_tcp_instance;
static inline transport_t *tp_tcp(void)
{
    return (transport_t *)&tp_tcp_instance;
}

static inline size_t tp_pending(const transport_t *t)
{
    return t->ops->pending ? t->ops->pending(t) : 0;
}

static inline const char *tp_waiting(const transport_t *t)
{
    return t->ops->waiting ? t->ops->waiting(t) : NULL;
}

static inline void tp_free(transport_t *t)
{
    if (t && t->ops->free)
        t->ops->free(t);
}

/* The layer whose handshake runs on socket readiness (tls, also under ws):
 * the first one down the stack with a handshake op, or NULL. */
transport_t *tp_handshaker(transport_t *t);
/* The first layer down the stack that knows certificates answers. */
int tp_peer_cert_name(const transport_t *t, int kind, char *buf, size_t size);
/* describe() of t, or its name. */
const char *tp_describe(const transport_t *t, char *buf, size_t size);

#endif
