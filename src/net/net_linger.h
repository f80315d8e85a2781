/* net_linger.h -- lingering close: the last bytes reach the client.
 *
 * Closing a socket with unread input makes Linux send RST instead of FIN,
 * and an RST arriving at the client discards what it has not read yet:
 * the DISCONNECT with its reason code, a refusing CONNACK, a WebSocket
 * close frame, an HTTP error response.  A client still writing when the
 * broker closes (a PUBREL after the DISCONNECT) causes exactly that.  So,
 * as nginx's lingering_close does, a connection the broker closes is not
 * closed at once: after its last bytes are written (and a TLS close_notify)
 * the sending side is shut down (FIN after the data), then input is read
 * and discarded until the client closes too, LINGER_MS have passed or
 * LINGER_MAX_BYTES were read; then the socket is closed.
 *
 * Cost: a lingering socket keeps a file descriptor and a small struct with
 * a timer on its worker, and one read per readiness event; its conn_t is
 * freed as usual and its connection slot (max_connections) released at
 * once.  A client that already closed costs one extra recv().  Out of file
 * descriptors, the worker closes its lingering sockets first; a stopping
 * worker closes them all.
 *
 * The socket is a watcher in the worker's loop (ev.h), stopped when it
 * closes.  Structs are freed at the end of the loop turn (linger_reap),
 * like connections.  A worker keeps its lingering sockets in a
 * linger_list_t (its loop, its timer wheel, its scratch buffer for the
 * discarded input, and the two lists): this module knows nothing of the
 * broker, only src/core.
 * Thread: the owning worker only.
 */
#ifndef ANTENNA_NET_LINGER_H
#define ANTENNA_NET_LINGER_H

#include <stddef.h>
#include <stdint.h>

#include "ev.h"
#include "tw.h"

#define LINGER_MS 2000
#define LINGER_MAX_BYTES (1024 * 1024)

typedef struct linger_s linger_t;

/* One worker's lingering sockets. */
typedef struct {
    ev_loop_t *loop; /* the worker's loop and timer wheel */
    tw_t *tw;
    uint8_t *scratch; /* discarded input is read here */
    size_t scratch_size;
    linger_t *open; /* sockets lingering */
    linger_t *dead; /* closed this turn, freed by linger_reap */
} linger_list_t;

/* Set up an empty list on a worker's loop, timer wheel and read buffer. */
void linger_init(linger_list_t *ll, ev_loop_t *loop, tw_t *tw, uint8_t *scratch,
                 size_t scratch_size);
/* Take over fd, already out of the loop: close it now when the peer is
 * gone, else linger until now + LINGER_MS (now: the loop's clock, ms). */
void linger_start(linger_list_t *ll, uint64_t now, int fd);
/* Close every lingering socket now (out of descriptors; stopping). */
void linger_close_all(linger_list_t *ll);
/* End of the loop turn: free the structs closed during it. */
void linger_reap(linger_list_t *ll);

#endif
