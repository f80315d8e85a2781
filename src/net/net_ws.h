/* net_ws.h -- MQTT over WebSocket (transport: ws, wss), MQTT spec section 6.
 *
 * Design:
 * - A connection on a ws/wss listener starts with an HTTP/1.1 upgrade
 *   request, parsed by our own small, strict parser (ws_handshake): the
 *   whole header block must arrive within WS_MAX_HEADER bytes and the
 *   listener's connect timer; anything unexpected is refused with a 400
 *   (404 for another path) and the connection is closed.  The response
 *   echoes the chosen subprotocol ("mqtt", else "mqttv3.1").
 * - After the upgrade, wslay (libwslay) does the framing, on in-memory
 *   buffers only: the worker reads the socket (or TLS) into its scratch
 *   buffer as for TCP and hands the bytes to ws_recv(), which runs wslay's
 *   parser over them and returns the payloads of the binary messages,
 *   concatenated: an MQTT stream again, for conn_input() (an MQTT packet
 *   may span messages, a message may hold several packets).  Output goes
 *   the other way: the MQTT bytes conn_reserve() produced become one binary
 *   message per flush (ws_send), and wslay's frames land in an output
 *   buffer that the connection writes to its socket like plain output.
 * - Text frames are refused (close 1003), messages above ws_max_frame too
 *   (1009, wslay's max_recv_msg_length); pings are answered (wslay), a
 *   close frame is answered and the connection then closed.
 * - All of it lives in a ws_t kept in the lazily allocated conn_ext_t:
 *   conn_t does not grow, and the state moves with a connection handed to
 *   its home worker (nothing in ws_t refers to a worker).
 * - As a transport (transport.h, ws_transport_new) it is the layer "ws"
 *   over tcp or tls: read takes the lower layer's bytes, runs the upgrade
 *   then the frames, and hands up the MQTT bytes; write frames the bytes
 *   it is given once its own output is written (so what waits beyond the
 *   socket is counted by the connection's output limit), pending() is the
 *   HTTP response and frames not written yet, shutdown queues a close
 *   frame (1000) and shuts the lower layer down.
 * Thread: a ws_t is used only by the worker owning its connection.
 */
#ifndef ANTENNA_NET_WS_H
#define ANTENNA_NET_WS_H

#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "transport.h"

#define WS_MAX_HEADER 8192 /* request line and headers, bytes */

typedef struct ws_s ws_t;

ws_t *ws_new(const conf_listener_t *l);
void ws_free(ws_t *ws);
/* The ws transport for listener l over `lower` (tcp or tls), which it owns
 * from now on. */
transport_t *ws_transport_new(const conf_listener_t *l, transport_t *lower);

enum { WS_HS_MORE = 0, WS_HS_DONE = 1, WS_HS_FAIL = -1 };

/* Feed bytes of the upgrade request.  WS_HS_MORE: all taken, the request
 * is not complete yet.  WS_HS_DONE: the 101 response is in the output
 * (ws_out), *used bytes were the request's (the rest are WebSocket
 * frames).  WS_HS_FAIL: an error response is in the output, *why says
 * what was wrong; write it and close. */
int ws_handshake(ws_t *ws, const uint8_t *data, size_t n, size_t *used, const char **why);
/* The upgrade is done. */
int ws_upgraded(const ws_t *ws);

/* Feed WebSocket bytes; *plain and *nplain get the MQTT bytes they carried
 * (valid until the next call).  Returns 0, or 1 when the connection must
 * be closed once those bytes are handled (*why says why; a close frame
 * is in the output), or -1 on a fatal error. */
int ws_recv(ws_t *ws, const uint8_t *data, size_t n, const uint8_t **plain, size_t *nplain,
            const char **why);
/* Queue n MQTT bytes as one binary message and frame it into the output. */
int ws_send(ws_t *ws, const uint8_t *data, size_t n);
/* Queue a close frame (once; no-op before the upgrade). */
void ws_close(ws_t *ws, uint16_t code);

/* Output not written yet: the HTTP response, then frames. */
size_t ws_out_pending(const ws_t *ws);
const uint8_t *ws_out(const ws_t *ws);
void ws_out_consumed(ws_t *ws, size_t n);

/* Pure helpers (unit-testable): the Sec-WebSocket-Accept value for a key
 * (out: 29 bytes with the NUL). */
void ws_accept_key(const char *key, size_t keylen, char out[29]);

#endif
