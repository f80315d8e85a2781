/* net_tls.h -- TLS transport for a listener (OpenSSL 3).
 *
 * Design:
 * - One SSL_CTX per TLS listener, created by server_init() before any worker
 *   starts (tls_ctx_new); a certificate, key or CA file that cannot be
 *   loaded is an error naming the listener and the file, and the broker
 *   exits 1.  The contexts are read-only afterwards and shared by the
 *   workers (OpenSSL contexts are thread-safe for SSL_new).
 * - Secure defaults: TLS 1.2 or 1.3 minimum (never SSLv3, TLS 1.0/1.1), a
 *   forward-secret AEAD cipher list for TLS 1.2, no renegotiation, session
 *   tickets on (resumption) with a session id context so resumption works
 *   with client certificates too.
 * - One SSL per connection, kept in the lazily allocated conn_ext_t (conn_t
 *   does not grow), bound to the non-blocking socket with SSL_set_fd.  The
 *   handshake runs inside the worker loop: each readiness event advances
 *   it (tls_handshake), WANT_READ/WANT_WRITE just wait for the next event.
 *   Reads decrypt into the worker's scratch buffer, so conn_input() sees
 *   plaintext; conn_reserve() output stays plaintext and is encrypted by
 *   tls_write() when the connection is flushed.  read_ahead stays off, so
 *   bytes not yet needed remain in the socket: a connection moving to its
 *   home worker after CONNECT loses nothing and its watcher still fires.
 * - The handshake is bounded by the listener's handshake_timeout on the
 *   connection's connect timer (armed at accept).
 * - Reload (SIGHUP, main thread): a new context is built from the same
 *   files (tls_ctx_new); the old one's session ticket keys are copied into
 *   it (tls_ctx_copy_ticket_keys) so tickets issued before the reload still
 *   resume; server.c swaps the listener's pointer and drops its reference
 *   to the old context.  OpenSSL reference-counts contexts (SSL_new takes a
 *   reference, SSL_free drops it), so live connections keep theirs.
 * - As a transport (transport.h, tls_transport_new): the handshake op
 *   runs tls_handshake, read decrypts into the caller's buffer until it is
 *   full or OpenSSL wants more, write encrypts, shutdown sends
 *   close_notify, free frees the SSL.  It is a bottom layer: OpenSSL does
 *   the socket I/O on the fd given to tls_new.
 * - Certificate usernames (listener cert_username: cn | san): the verified
 *   peer certificate's CN, or its first DNS or email SAN (tls_peer_username).
 * - Node links (cluster.tls, src/cluster/cl_link.c): one context for both
 *   roles (tls_link_ctx_new: TLS 1.2+, a certificate presented and the
 *   peer's verified against the CA file both ways, no tickets), SSLs from
 *   tls_new (acceptor) or tls_new_client (dialler) wrapped in the same
 *   transport; the link thread drives them like a worker drives its own.
 * Thread: an SSL is used only by the thread owning its connection (a
 * worker, or the cluster's link thread).
 */
#ifndef ANTENNA_NET_TLS_H
#define ANTENNA_NET_TLS_H

#include <stddef.h>
#include <sys/types.h>

#include "conf.h"
#include "transport.h"

struct ssl_ctx_st;
struct ssl_st;

/* A context for listener `l`, or NULL with err set ("listener NAME: FILE:
 * reason"). */
struct ssl_ctx_st *tls_ctx_new(const conf_listener_t *l, char *err, size_t errlen);
void tls_ctx_free(struct ssl_ctx_st *ctx);
/* Copy the session ticket keys of `from` into `to` (resumption across a
 * reload).  Returns 0, or -1 when OpenSSL refused (tickets issued before
 * then no longer resume: a full handshake, nothing worse). */
int tls_ctx_copy_ticket_keys(struct ssl_ctx_st *to, struct ssl_ctx_st *from);

/* The context of the cluster's node links: cert_file and key_file presented,
 * the peer's certificate verified against ca_file (required in both
 * directions), TLS 1.2 or newer.  NULL with err set and *bad naming the
 * config key at fault ("tls_cert_file", "tls_key_file", "tls_ca_file"). */
struct ssl_ctx_st *tls_link_ctx_new(const char *cert_file, const char *key_file,
                                    const char *ca_file, const char **bad, char *err,
                                    size_t errlen);
/* 1 when the peer's certificate was verified and names `name` (a DNS
 * subjectAltName, or the CN when it has none: X509_check_host). */
int tls_peer_has_name(struct ssl_st *ssl, const char *name);

/* The username carried by the peer's certificate, only when it was verified
 * (X509_V_OK): `kind` CONF_CERT_USER_CN (subject CN) or CONF_CERT_USER_SAN
 * (first DNS or email subjectAltName).  Returns its length (copied into
 * buf, NUL-terminated; cut to size - 1), or -1 (no certificate, not
 * verified, no such name, or a name with a NUL or a control character). */
int tls_peer_username(struct ssl_st *ssl, int kind, char *buf, size_t size);

/* A server-side SSL on socket fd (NULL on allocation failure). */
struct ssl_st *tls_new(struct ssl_ctx_st *ctx, int fd);
/* The same on the dialling side (connect state). */
struct ssl_st *tls_new_client(struct ssl_ctx_st *ctx, int fd);
void tls_free(struct ssl_st *ssl);

enum { TLS_OK = 0, TLS_WANT_READ = 1, TLS_WANT_WRITE = 2, TLS_CLOSED = 3, TLS_ERROR = -1 };

/* The tls transport (transport.h) over ssl, which it owns from now on (freed
 * with it). */
transport_t *tls_transport_new(struct ssl_st *ssl);

/* Advance the handshake: TLS_OK (done), TLS_WANT_READ, TLS_WANT_WRITE, or
 * TLS_CLOSED/TLS_ERROR with `why` set to OpenSSL's reason. */
int tls_handshake(struct ssl_st *ssl, char *why, size_t whylen);
/* Read up to n plaintext bytes: > 0 bytes, or -TLS_WANT_READ,
 * -TLS_WANT_WRITE, or 0 with `why` set (peer closed or error). */
ssize_t tls_read(struct ssl_st *ssl, void *buf, size_t n, char *why, size_t whylen);
/* Write up to n plaintext bytes: > 0 taken, -TLS_WANT_READ/-TLS_WANT_WRITE
 * (try later), or -TLS_CLOSED (error, `why` set). */
ssize_t tls_write(struct ssl_st *ssl, const void *buf, size_t n, char *why, size_t whylen);
/* Send close_notify, best effort (never blocks). */
void tls_shutdown(struct ssl_st *ssl);
/* "TLSv1.3 TLS_AES_256_GCM_SHA384" for logs. */
/* The reason of the last OpenSSL failure for a call that returned `ret`
 * with SSL_get_error() `err`: the first queued OpenSSL error, errno, or the
 * certificate verification result (named `peer_cert`).  Clears the queue.
 * Shared by the broker and antenna-bench. */
void tls_error_text(struct ssl_st *ssl, int ret, int err, const char *peer_cert, char *out,
                    size_t size);
const char *tls_describe(struct ssl_st *ssl, char *buf, size_t size);

#endif
